/* LoRA / LoCon adapters: parsing (kohya/A1111, diffusers, PEFT) and fusing
 * into loaded model weights, with a bit-exact way back to the base weights.
 *
 * Key mapping. Every LoRA tensor is mapped to the diffusers/transformers
 * weight it modifies by looking it up in tables built from the model's own
 * loaded weight names (never by guessing): for each weight "<module>.weight"
 * of a component (ndim >= 2, embeddings excluded)
 *   kohya name:     <kohya_prefix><module with '.' replaced by '_'>
 *                   ("lora_unet_down_blocks_0_attentions_0_proj_in"; lora_te1_ = lora_te_), or for a UNet
 *                   with ldm_layers_per_block its LDM / SGM name as kohya's SDXL LoRAs write it
 *                   ("lora_unet_input_blocks_4_1_proj_in": sd_ckpt_unet_ldm_module, checkpoint.h)
 *   diffusers name: [base_model.model.][<component>.]<module>, where
 *                   ".processor" segments are dropped and the attention-processor
 *                   spellings to_q/to_k/to_v/to_out (of "to_q_lora.down.weight")
 *                   map to to_q/.../to_out.0 (UNet) or q_proj/.../out_proj (CLIP);
 *                   without a component prefix the component that has the
 *                   module is used (PEFT adapters of a UNet or a text model).
 * Tensor suffixes: .lora_down.weight / .lora_up.weight, .lora_A.weight /
 * .lora_B.weight, .lora.down.weight / .lora.up.weight,
 * .lora_linear_layer.down.weight / .up.weight, _lora.down.weight /
 * _lora.up.weight, and .alpha (a scalar).
 *
 * Scale of a layer: scale * alpha / rank (alpha / sqrt(rank) with PEFT's
 * use_rslora). alpha comes from the layer's .alpha tensor (kohya / A1111: 0
 * means rank), else from the PEFT config (adapter_config.json next to a PEFT
 * adapter, or the safetensors metadata "lora_adapter_metadata" diffusers
 * writes: "<component>.lora_alpha" / ".alpha_pattern"), else alpha = rank.
 *
 * SDXL models have three components: unet, text_encoder (lora_te1_ / lora_te_), text_encoder_2 (lora_te2_).
 */
#ifndef SD_LORA_H
#define SD_LORA_H

#include "models/weights.h"

#define SD_LORA_MAX_FILES 64

/* A model component that LoRAs can modify. */
typedef struct sd_lora_component {
    const char *name;         /* diffusers prefix: "unet", "text_encoder" */
    const char *kohya_prefix; /* "lora_unet_", "lora_te_" */
    const char *alt_root;     /* LoRA module names may lack this leading path (NULL = none): "text_model."
                                 for CLIP, whose transformers >= 5 module names have no text_model level */
    sd_weights *w;            /* the weights its handles were loaded from */
    sd_status (*for_each)(void *model, sd_weight_visit_fn fn, void *user);
    void *model;
    int ldm_layers_per_block; /* a UNet: its resnets per level (LDM kohya names); 0 = none */
    const char *family;       /* the model family for messages ("sd1", "sd2", "sdxl"); NULL = not told */
} sd_lora_component;

/* The model family a LoRA file is for, from its tensors (NULL = cannot tell): "sdxl" when it has SDXL's second
 * text encoder (lora_te2_, text_encoder_2.) or added embedding (add_embedding, label_emb), else by the width of
 * a cross-attention key/value down matrix (768 "sd1", 1024 "sd2", 2048 "sdxl"). `why` (cap bytes) says what
 * told it. A LoRA of another family than the model's is refused by name (with the count of tensors that
 * match no layer), even with allow_unmatched. */
const char *sd_lora_family(const sd_safetensors *st, char *why, size_t cap);

typedef struct sd_lora_state sd_lora_state;

/* Makes the components' weights base + the given set (see
 * sd_model_apply_loras in streamdiff.h). *state holds what is fused now (NULL
 * = nothing) and is replaced. The components must be the same in every call
 * for one state. Input errors leave the weights and *state as they were; a
 * failure while writing weights (out of memory, backend) restores the base
 * weights and leaves *state empty. */
sd_status sd_lora_apply(sd_lora_state **state, const sd_lora_component *comps, int n_comps,
                        const sd_lora_spec *loras, int n, const sd_lora_options *opt);
/* Frees the record (the weights are not touched). */
void sd_lora_state_free(sd_lora_state *s);
/* Number of weight tensors currently fused. */
size_t sd_lora_state_count(const sd_lora_state *s);
/* Number of LoRAs in the set that is fused now (0: nothing fused, the base weights). */
int sd_lora_state_loras(const sd_lora_state *s);

#endif
