/* Single-file ("original", LDM/CompVis/SGM layout) Stable Diffusion checkpoints.
 *
 * A .safetensors file such as v1-5-pruned-emaonly.safetensors or
 * v2-1_768-ema-pruned.safetensors holds the UNet (model.diffusion_model.*),
 * the VAE (first_stage_model.*) and the text encoder (SD1:
 * cond_stage_model.transformer.* = a transformers CLIPTextModel; SD2:
 * cond_stage_model.model.* = OpenCLIP ViT-H/14 text tower). This module maps
 * those tensors onto the diffusers / transformers state-dict names that the
 * model code loads (src/models/weights.h aliases: no data is copied), and
 * builds the config.json objects that a single file lacks, deriving from
 * the tensor shapes everything that can be derived.
 *
 * The mapping mirrors diffusers' loaders/single_file_utils.py
 * (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
 * convert_ldm_clip_checkpoint, convert_open_clip_checkpoint):
 *   UNet   time_embed.{0,2} -> time_embedding.linear_{1,2}; input_blocks.0.0 -> conv_in;
 *          out.{0,2} -> conv_norm_out / conv_out;
 *          input_blocks.i (i >= 1): b = (i-1)/(L+1), l = (i-1)%(L+1) (L = layers_per_block):
 *            .0.<resnet> -> down_blocks.b.resnets.l.<resnet'>, .0.op -> down_blocks.b.downsamplers.0.conv,
 *            .1.* -> down_blocks.b.attentions.l.*;
 *          middle_block.{0,1,2} -> mid_block.resnets.0 / attentions.0 / resnets.1;
 *          output_blocks.i: b = i/(L+1), l = i%(L+1): .0 -> up_blocks.b.resnets.l,
 *            .1.* -> up_blocks.b.attentions.l.*, .1.conv / .2.conv -> up_blocks.b.upsamplers.0.conv;
 *          resnet' renames in_layers.0/2 -> norm1/conv1, out_layers.0/3 -> norm2/conv2,
 *            emb_layers.1 -> time_emb_proj, skip_connection -> conv_shortcut.
 *   VAE    {en,de}coder.conv_in/conv_out, norm_out -> conv_norm_out;
 *          encoder.down.i.block.j -> encoder.down_blocks.i.resnets.j, .downsample.conv -> .downsamplers.0.conv;
 *          decoder.up.k.block.j -> decoder.up_blocks.(n-1-k).resnets.j, .upsample.conv -> .upsamplers.0.conv;
 *          mid.block_{1,2} -> mid_block.resnets.{0,1}; nin_shortcut -> conv_shortcut;
 *          mid.attn_1.{norm,q,k,v,proj_out} -> mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}
 *            (the LDM tensors are 1x1 convs [C,C,1,1]; sd_weights_get accepts them for [C,C]);
 *          quant_conv, post_quant_conv unchanged.
 *   SD1 text  cond_stage_model.transformer.X -> X (X starts with text_model.; a legacy file
 *          without the text_model. level gets it added). embeddings.position_ids is ignored.
 *   SD2 text  cond_stage_model.model.: positional_embedding -> text_model.embeddings.position_embedding.weight,
 *          token_embedding.weight -> text_model.embeddings.token_embedding.weight,
 *          ln_final -> text_model.final_layer_norm,
 *          transformer.resblocks.i.{ln_1,ln_2,mlp.c_fc,mlp.c_proj,attn.out_proj} ->
 *            text_model.encoder.layers.i.{layer_norm1,layer_norm2,mlp.fc1,mlp.fc2,self_attn.out_proj},
 *          attn.in_proj_weight [3D,D] / in_proj_bias [3D] -> self_attn.{q,k,v}_proj rows [0,D), [D,2D), [2D,3D)
 *            (row-range aliases, no copy).
 *          SD2 pipelines use the penultimate OpenCLIP layer: like diffusers (which ignores
 *          resblocks.23.* and text_projection, and whose stabilityai/stable-diffusion-2* text_encoder
 *          config has 23 layers), a 24-block tower has its last block dropped, so CLIPTextModel's
 *          last_hidden_state = ln_final(output of block 22) exactly as in LDM's FrozenOpenCLIPEmbedder.
 *          A tower with any other block count (tiny test models converted from a diffusers folder)
 *          keeps all blocks, as diffusers would. text_projection ([D,P] in OpenCLIP, transposed
 *          w.r.t. CLIPTextModelWithProjection's [P,D]) and logit_scale are not used by SD2 pipelines
 *          and are ignored, as in diffusers.
 *   SDXL (the SGM layout of sd_xl_base_1.0.safetensors): conditioner.embedders.0.transformer.X -> text encoder
 *          1 as SD1's CLIP; conditioner.embedders.1.model.* -> text encoder 2 as SD2's OpenCLIP with every block
 *          kept (SDXL reads hidden_states[-2] of the whole tower) and text_projection [D,P] -> text_projection.weight
 *          [P,D] (a transposed host copy, sd_weights_add_transposed); UNet label_emb.0.{0,2} ->
 *          add_embedding.linear_{1,2}; transformer depths are read per attention (distilled SSD-1B / Vega-style
 *          UNets: nested transformer_layers_per_block + reverse_transformer_layers_per_block). A refiner (only
 *          embedders.1, or a 2560-wide label_emb) is refused by name.
 * Keys of EMA copies (model_ema.*) and top-level schedule buffers (betas, alphas_cumprod, ...)
 * are ignored. Keys under the three component prefixes that fit none of the rules are reported
 * (sd_ckpt_info.unknown), never silently dropped.
 */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include "io/safetensors.h"
#include "models/weights.h"
#include <cjson/cJSON.h>

typedef enum sd_arch {
    SD_ARCH_UNKNOWN = 0,
    SD_ARCH_SD1,  /* CLIP ViT-L text encoder, context 768 (SD1.x, LCM/turbo fine-tunes of it) */
    SD_ARCH_SD2,  /* OpenCLIP ViT-H text encoder, context 1024; v-prediction or epsilon: see
                     sd_ckpt_prediction_type() */
    SD_ARCH_SDXL  /* CLIP ViT-L (conditioner.embedders.0.transformer.*) + OpenCLIP ViT-bigG with projection
                     (conditioner.embedders.1.model.*), text_time UNet (label_emb); refiners are refused */
} sd_arch;

const char *sd_arch_name(sd_arch a); /* "SD1", "SD2", "SDXL", "unknown" */

/* Detects the architecture from key names and shapes:
 *   conditioner.embedders.* (or a 2048/1280-wide context, or label_emb with SDXL's context)  -> SDXL
 *   cond_stage_model.model.* (OpenCLIP)                                                         -> SD2
 *   cond_stage_model.transformer.* (transformers CLIP)                                          -> SD1
 *   no text encoder: the UNet cross-attention context width 768 -> SD1, 1024 -> SD2.
 * SD_OK with *arch set (SDXL included); SD_ERR_FORMAT with *arch = SD_ARCH_UNKNOWN and a message
 * when the file is not a Stable Diffusion single-file checkpoint. */
sd_status sd_ckpt_detect(const sd_safetensors *st, sd_arch *arch);

typedef struct sd_ckpt_info {
    sd_arch arch;
    size_t n_unet, n_vae, n_text, n_text2; /* aliases added per component */
    size_t n_ignored;             /* keys deliberately not mapped (EMA, SD2 last block, ...) */
    int text_blocks_in_file;      /* text encoder layers present in the file */
    int text_layers;              /* layers exposed (SD2 ViT-H: 24 in the file -> 23) */
    char **unknown;               /* full key names under a component prefix that no rule maps */
    size_t n_unknown;
} sd_ckpt_info;

void sd_ckpt_info_free(sd_ckpt_info *info);

/* Adds aliases for the components whose sd_weights is non-NULL (each already
 * sd_weights_init'ed; sd_weights_finalize is left to the caller). The aliases
 * point into `st`, which must outlive the weights: this call does not take
 * ownership (see sd_ckpt_load for the owning variant). `arch` may be
 * SD_ARCH_UNKNOWN to detect. An SDXL refiner and unknown -> SD_ERR_UNSUPPORTED /
 * SD_ERR_FORMAT. SDXL's second text encoder: sd_ckpt_map_all. A requested
 * component absent from the file -> SD_ERR_NOT_FOUND.
 * `info` (may be NULL) receives counts and the unknown keys of the requested
 * components; free it with sd_ckpt_info_free. */
sd_status sd_ckpt_map(const sd_safetensors *st, sd_arch arch, sd_weights *unet, sd_weights *vae, sd_weights *text,
                      sd_ckpt_info *info);

/* Opens `path` once per requested component, so that each sd_weights owns
 * its own read-only mapping (sd_weights_adopt_file) and the three can be freed
 * in any order; the OS shares the pages. Maps as sd_ckpt_map and finalizes
 * each weights object. On failure the weights hold whatever was adopted and
 * must still be freed by the caller (as always after sd_weights_init). */
sd_status sd_ckpt_load(const char *path, sd_weights *unet, sd_weights *vae, sd_weights *text, sd_ckpt_info *info);

/* The same for every component: w[] = {unet, vae, text encoder, second text encoder (SDXL)}, NULL entries
 * skipped (a second text encoder asked of an SD1/SD2 file: SD_ERR_INVALID_ARGUMENT). */
#define SD_CKPT_COMPONENTS 4
sd_status sd_ckpt_map_all(const sd_safetensors *st, sd_arch arch, sd_weights *const w[SD_CKPT_COMPONENTS],
                          sd_ckpt_info *info);
sd_status sd_ckpt_load_all(const char *path, sd_weights *const w[SD_CKPT_COMPONENTS], sd_ckpt_info *info);

/* An SDXL file that is a refiner (the OpenCLIP encoder without the CLIP one, or a UNet whose added conditioning
 * is 2560 wide: the aesthetic score) -> SD_ERR_UNSUPPORTED naming it; else SD_OK. */
sd_status sd_ckpt_sdxl_check(const sd_safetensors *st);

/* Keys under the UNet/VAE/text prefixes that the mapping does not cover,
 * for all three components (`*names` owned by the caller: free each and the
 * array; count in *n). */
sd_status sd_ckpt_unknown_keys(const sd_safetensors *st, sd_arch arch, char ***names, size_t *n);

/* diffusers/transformers config.json content for each component (cJSON owned
 * by the caller; NULL on error with the error recorded). Values derived from
 * tensor shapes: UNet in/out channels, block_out_channels, layers_per_block,
 * down/up block types (which levels have attention), transformer_layers_per_block,
 * cross_attention_dim, use_linear_projection, time_embedding_dim; VAE channels,
 * latent_channels, layers_per_block; text hidden/intermediate sizes, vocabulary,
 * positions, layer count. Standard SD1.5 / SD2.1 values for the rest:
 * UNet attention_head_dim 8 (SD1) or per level channels/64 (SD2: [5,10,20,20]),
 * upcast_attention (SD2), sample_size 64 (SD1) / 96 (SD2) or from
 * modelspec.resolution metadata; norm_num_groups 32; VAE scaling_factor 0.18215;
 * text hidden_act quick_gelu (SD1) / gelu (SD2), heads = hidden/64.
 * Head counts are not visible in the weights: a model whose head size is not
 * 64 (tiny test models) needs its real config to override them. */
cJSON *sd_ckpt_unet_config(const sd_safetensors *st, sd_arch arch);
cJSON *sd_ckpt_vae_config(const sd_safetensors *st, sd_arch arch);
cJSON *sd_ckpt_text_config(const sd_safetensors *st, sd_arch arch);
/* SDXL's second text encoder (CLIPTextModelWithProjection: gelu, projection_dim from text_projection). SDXL
 * defaults: UNet attention_head_dim channels/64 per level, text_time added conditioning
 * (addition_time_embed_dim from label_emb), sample_size 128 (1024 px); VAE scaling_factor 0.13025;
 * scheduler EulerDiscreteScheduler of stable-diffusion-xl-base-1.0. */
cJSON *sd_ckpt_text2_config(const sd_safetensors *st, sd_arch arch);
/* SD1: PNDMScheduler of stable-diffusion-v1-5 (epsilon). SD2: DDIMScheduler
 * of stable-diffusion-2-1 with sd_ckpt_prediction_type(). */
cJSON *sd_ckpt_scheduler_config(const sd_safetensors *st, sd_arch arch);

/* "epsilon" or "v_prediction". Keys cannot tell SD2-768-v from SD2-base /
 * sd-turbo; the hints used are the ModelSpec metadata
 * (modelspec.prediction_type "v"/"epsilon", modelspec.architecture
 * "stable-diffusion-v2-768-v"/"-512"). Without a hint: SD1 epsilon, SD2
 * v_prediction (diffusers' default for SD2 single files) and *known = false
 * (known may be NULL). */
const char *sd_ckpt_prediction_type(const sd_safetensors *st, sd_arch arch, bool *known);

/* A kohya LoRA module name of the LDM / SGM UNet without its "lora_unet_" prefix
 * ("input_blocks_4_1_transformer_blocks_0_attn1_to_q", as kohya's SDXL LoRAs name them) -> the diffusers
 * module ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") through the UNet table above, for a
 * UNet of `layers_per_block` resnets per level. False when it names no UNet weight. */
bool sd_ckpt_unet_ldm_module(const char *name, int layers_per_block, char *out, size_t cap);

/* ---- single-file ControlNets (checkpoint_controlnet.c): the lllyasviel ControlNet v1.0 / v1.1 layout,
 * keys control_model.* or the same keys without that prefix (diffusers' convert_controlnet_checkpoint):
 *   input_hint_block.0 -> controlnet_cond_embedding.conv_in, input_hint_block.2k (k >= 1, not the last) ->
 *   controlnet_cond_embedding.blocks.(k-1), the last input_hint_block conv -> controlnet_cond_embedding.conv_out,
 *   zero_convs.j.0 -> controlnet_down_blocks.j, middle_block_out.0 -> controlnet_mid_block,
 *   label_emb.0.{0,2} -> add_embedding.linear_{1,2} (SDXL), time_embed / input_blocks / middle_block as the
 *   UNet's (above). */
bool sd_ckpt_is_controlnet(const sd_safetensors *st);

/* What a single-file ControlNet's tensors tell about its config. */
typedef struct sd_ckpt_cnet_layout {
    int n_cond;                  /* levels of the conditioning embedding */
    int64_t cond_channels[8];    /* conditioning_embedding_out_channels */
    int64_t conditioning_channels;
    int n_zero;                  /* zero_convs: one per UNet skip */
    int64_t ctx_dim;             /* attn2.to_k input width (0: no cross-attention) */
    int64_t model_ch, in_ch;     /* input_blocks.0.0: block_out_channels[0], in_channels */
    bool sdxl;                   /* label_emb (SDXL text_time) */
} sd_ckpt_cnet_layout;
sd_status sd_ckpt_controlnet_layout(const sd_safetensors *st, sd_ckpt_cnet_layout *L);
/* Adds the aliases to w (the file `st` must outlive it: adopt it); `layers_per_block` of the UNet it is for.
 * *unknown (may be NULL): the first key that no rule maps (malloc'd) or NULL. */
sd_status sd_ckpt_map_controlnet(const sd_safetensors *st, int layers_per_block, sd_weights *w, char **unknown);

#endif
