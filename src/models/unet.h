/* UNet2DConditionModel (diffusers) on the backend op interface.
 *
 * Supported architecture: the SD1.x / SD2.x / SD-turbo / LCM family, i.e.
 * down blocks CrossAttnDownBlock2D / DownBlock2D, up blocks CrossAttnUpBlock2D /
 * UpBlock2D, mid block UNetMidBlock2DCrossAttn (or none), "positional" time
 * embedding with optional cond_proj (LCM guidance embedding), classic
 * Transformer2DModel (conv or linear projection, GEGLU feed-forward).
 * SDXL's "text_time" added conditioning (pooled text embedding + 6 time ids,
 * sd_unet_forward_added) and per-level transformer depth are supported too.
 * Anything else in config.json (other add-embeddings, class embeddings,
 * scale_shift resnets, ...) is refused with SD_ERR_UNSUPPORTED naming the key.
 *
 * Numerics follow diffusers 0.26 exactly (float32 reference):
 *   resnets: GroupNorm(norm_eps) -> SiLU -> conv3x3 -> + time_emb_proj(SiLU(emb))
 *            -> GroupNorm -> SiLU -> conv3x3, + (1x1 shortcut of) input, / output_scale_factor
 *   Transformer2DModel: GroupNorm(eps 1e-6) -> proj_in -> BasicTransformerBlock x N
 *            [LN -> self-attn, LN -> cross-attn, LN -> GEGLU FF, each residual] -> proj_out -> + input
 *   attention scale = head_dim^-0.5
 *
 * All activations live in the sd_ctx arena; plan once (sd_ctx_init_plan), then
 * allocate the planned peak. The cross-attention K/V cache (sd_unet_kv) lets a
 * stream engine project the prompt once and reuse it every frame.
 */
#ifndef SD_UNET_H
#define SD_UNET_H

#include "backend/ops.h"
#include "io/config.h"
#include "models/blocks.h"
#include "models/weights.h"

#define SD_UNET_MAX_BLOCKS 8
#define SD_UNET_MAX_LAYERS_PER_BLOCK 64 /* resnets per down block (the config rule) */
/* skip connections at most: conv_in, every down resnet, every downsampler (the forward's fixed stack) */
#define SD_UNET_MAX_SKIPS (1 + SD_UNET_MAX_BLOCKS * (SD_UNET_MAX_LAYERS_PER_BLOCK + 1))

typedef struct sd_unet_config {
    int64_t sample_size;            /* informational (latent size the model was trained at) */
    int64_t in_channels, out_channels;
    int n_blocks;                   /* len(block_out_channels) = len(down_block_types) = len(up_block_types) */
    int64_t block_out_channels[SD_UNET_MAX_BLOCKS];
    /* per DOWN block i (up block j uses entry n_blocks-1-j, as diffusers reverses them) */
    int64_t layers_per_block[SD_UNET_MAX_BLOCKS];
    int64_t num_heads[SD_UNET_MAX_BLOCKS];          /* resolved heads (see the naming trap below) */
    int64_t transformer_layers[SD_UNET_MAX_BLOCKS]; /* transformer_layers_per_block */
    int64_t cross_attention_dim[SD_UNET_MAX_BLOCKS];
    bool only_cross_attention[SD_UNET_MAX_BLOCKS];
    bool down_cross[SD_UNET_MAX_BLOCKS]; /* CrossAttnDownBlock2D (else DownBlock2D) */
    bool up_cross[SD_UNET_MAX_BLOCKS];   /* CrossAttnUpBlock2D (else UpBlock2D); index = up block */
    bool has_mid_block;                  /* mid_block_type UNetMidBlock2DCrossAttn (false: null) */
    /* Naming trap: diffusers uses num_attention_heads when given, otherwise
     * attention_head_dim IS the number of heads. Both raw values are kept. */
    int64_t attention_head_dim_raw[SD_UNET_MAX_BLOCKS];
    bool num_attention_heads_given;
    bool use_linear_projection;
    bool upcast_attention;               /* no-op in float32 (backends with F16 activations attend in F32) */
    int64_t norm_num_groups;
    double norm_eps;
    bool flip_sin_to_cos;
    double freq_shift;
    int64_t time_embed_dim;              /* time_embedding_dim or 4 * block_out_channels[0] */
    int64_t time_cond_proj_dim;          /* 0 = none */
    int64_t downsample_padding;
    double mid_block_scale_factor;
    int64_t conv_in_kernel, conv_out_kernel;
    bool center_input_sample;
    /* SDXL added conditioning (addition_embed_type "text_time"): emb += add_embedding(cat(text_embeds,
     * add_time_proj(time_ids))) with add_time_proj = sinusoids of addition_time_embed_dim per time id */
    bool add_text_time;
    int64_t addition_time_embed_dim;               /* D (256 for SDXL) */
    int64_t projection_class_embeddings_input_dim; /* P + n_time_ids * D (2816 for SDXL) */
    /* Asymmetric transformer depth (distilled SDXL UNets such as SSD-1B): transformer_layers_per_block with
     * per-layer lists and/or reverse_transformer_layers_per_block for the up path. When per_layer_depth is
     * set these give the depth of attention j of down block i / up block i and of the mid block (else
     * transformer_layers[] applies: up block i uses level n_blocks-1-i, the mid block the last level). */
    bool per_layer_depth;
    int64_t down_depth[SD_UNET_MAX_BLOCKS][SD_UNET_MAX_LAYERS_PER_BLOCK + 1];
    int64_t up_depth[SD_UNET_MAX_BLOCKS][SD_UNET_MAX_LAYERS_PER_BLOCK + 1];
    int64_t mid_depth;
} sd_unet_config;

/* The number of SDXL micro-conditioning time ids: (original_h, original_w, crop_top, crop_left, target_h,
 * target_w). */
#define SD_UNET_TIME_IDS 6

/* Reads a diffusers UNet2DConditionModel config.json. Absent keys take
 * diffusers' defaults. Unsupported features -> SD_ERR_UNSUPPORTED naming the key. */
sd_status sd_unet_config_load(const char *config_json_path, sd_unet_config *cfg);
sd_status sd_unet_config_from(const sd_config *c, sd_unet_config *cfg);
/* The UNet keys of a ControlNetModel config (src/models/controlnet.c): the same rules and defaults without
 * the _class_name check and up_block_types (up_cross mirrors down_cross); the mid block is required. */
sd_status sd_unet_config_from_encoder(const sd_config *c, sd_unet_config *cfg);
/* The shape of down block i (0 <= i < n_blocks) for sd_down_block_load / sd_mid_block_load. */
void sd_unet_level(const sd_unet_config *c, int i, sd_level *lv);

typedef struct sd_unet sd_unet;

/* Loads every tensor with its expected shape from an indexed, finalized
 * sd_weights (names = diffusers state-dict keys). Missing -> SD_ERR_NOT_FOUND,
 * wrong shape -> SD_ERR_SHAPE; both messages name the tensor and shapes.
 * `w` must outlive the UNet. */
sd_status sd_unet_load(sd_weights *w, const sd_unet_config *cfg, sd_unet **out);
void sd_unet_free(sd_unet *u);
const sd_unet_config *sd_unet_get_config(const sd_unet *u);

/* Visits every loaded weight handle of the UNet by its state-dict name, in
 * load order (for LoRA fusing: see sd_weight_visit_fn in weights.h). */
sd_status sd_unet_for_each_weight(sd_unet *u, sd_weight_visit_fn fn, void *user);

/* Every tensor the config needs (name, shape) in load order: for tools/tests. */
typedef void (*sd_unet_tensor_fn)(void *user, const char *name, const int64_t *shape, int ndim);
sd_status sd_unet_list_tensors(const sd_unet_config *cfg, sd_unet_tensor_fn fn, void *user);

/* Cross-attention K/V cache: K and V of every cross-attention (attn2, and
 * attn1 of only_cross_attention blocks) for a context of batch Bc. */
typedef struct sd_unet_kv sd_unet_kv;
size_t sd_unet_kv_bytes(const sd_unet *u, int64_t batch, int64_t seq_len, sd_dtype dt);
/* `memory`: caller-owned persistent backend memory of sd_unet_kv_bytes() bytes
 * (so a prompt change recomputes in place). dt must be the backend's act dtype. */
sd_status sd_unet_kv_init(sd_unet_kv **kv, const sd_unet *u, void *memory, int64_t batch, int64_t seq_len,
                          sd_dtype dt);
/* Runs the to_k/to_v projections of context [Bc,S,D] into the cache. Errors go to ctx. */
void sd_unet_kv_compute(sd_ctx *ctx, const sd_unet *u, sd_tensor context, sd_unet_kv *kv);
void sd_unet_kv_free(sd_unet_kv *kv);
/* Fills `dst` (a cache initialised for at least sum(rows_per_src) rows) with
 * the rows of n source caches in order: source j gives rows_per_src[j] rows,
 * copied when its batch equals that, broadcast when its batch is 1. dst's
 * batch becomes the total (so sd_unet_forward takes it for that many rows);
 * later gathers may use any total up to the rows it was initialised with.
 * For batching several streams' UNet calls (per-row prompts). Errors go to ctx. */
void sd_unet_kv_gather(sd_ctx *ctx, sd_unet_kv *dst, const sd_unet_kv *const *srcs, const int64_t *rows_per_src,
                       int n);
/* Views the first `batch` rows (1..the rows it was initialised with) of a gathered cache, whatever
 * they hold: padding rows for a UNet call of a fixed batch (the group pads to captured sizes). */
sd_status sd_unet_kv_set_batch(sd_unet_kv *kv, int64_t batch);

/* x [B,in_channels,h,w] (h, w divisible by 2^(n_blocks-1)); timesteps F32 [B]
 * (one per batch row); context [B,S,D] (or [1,S,D]: the same prompt for every
 * row); timestep_cond [B,time_cond_proj_dim] or NULL. With kv non-NULL the
 * cached K/V are used and context is ignored (may be an empty tensor); kv batch
 * must be B or 1. Returns [B,out_channels,h,w] from ctx's arena (kept at the
 * arena top; everything else the forward allocated is released). Errors go to
 * ctx (sticky) and an empty tensor is returned. Named activations are passed
 * to ctx->hook (diffusers module paths, e.g. "down_blocks.0.attentions.0"). */
sd_tensor sd_unet_forward(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                          const sd_tensor *timestep_cond, const sd_unet_kv *kv);

/* SDXL added conditioning (added_cond_kwargs of diffusers): text_embeds [B,P] (act dtype; the pooled,
 * projected embedding of text encoder 2) and time_ids F32 [B,6] (SD_UNET_TIME_IDS, diffusers' order), with
 * P + 6 * addition_time_embed_dim = projection_class_embeddings_input_dim. */
typedef struct sd_unet_added {
    sd_tensor text_embeds;
    sd_tensor time_ids;
} sd_unet_added;

/* sd_unet_forward with the added conditioning: `added` is required by a "text_time" UNet (an error naming
 * what is missing otherwise) and refused by every other UNet. sd_unet_forward = this with added NULL. */
sd_tensor sd_unet_forward_added(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                                const sd_tensor *timestep_cond, const sd_unet_kv *kv, const sd_unet_added *added);

/* ControlNet residuals (diffusers down_block_additional_residuals / mid_block_additional_residual): down[j]
 * has the shape of skip connection j (conv_in, every down resnet, every downsampler, in order; n_down =
 * sd_unet_num_skips), mid that of the mid block output; act dtype. After the down path and the mid block,
 * skip j += down[j] and the mid output += mid. */
typedef struct sd_unet_residuals {
    const sd_tensor *down;
    int n_down;
    sd_tensor mid;
} sd_unet_residuals;

int sd_unet_num_skips(const sd_unet *u);

/* sd_unet_forward_added with ControlNet residuals (res may be NULL: then bit-identical to it). The UNet
 * must have a mid block; shapes that differ from the skips are SD_ERR_SHAPE naming the residual. */
sd_tensor sd_unet_forward_ex(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                             const sd_tensor *timestep_cond, const sd_unet_kv *kv, const sd_unet_added *added,
                             const sd_unet_residuals *res);

#endif
