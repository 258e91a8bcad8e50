/* ControlNetModel (diffusers) on the backend op interface.
 *
 * A ControlNet is the down path and mid block of the UNet it was trained for (the same blocks,
 * src/models/blocks.c, with its own weights and its own time embedding), fed
 *   h = conv_in(sample) + cond_embedding(control image)
 * where cond_embedding (ControlNetConditioningEmbedding) is
 *   conv_in 3x3 pad 1 -> SiLU -> per level [3x3 conv pad 1 -> SiLU -> 3x3 conv STRIDE 2 pad 1 -> SiLU]
 *   -> conv_out 3x3 pad 1
 * on the control image (RGB in [0,1], not normalised; 2^(levels-1) times the latent size). Every skip
 * tensor the down path produces (h itself, every resnet/attention output, every downsampler output: the
 * UNet's skip list) goes through its own 1x1 conv (controlnet_down_blocks.j) and the mid block output
 * through controlnet_mid_block; each is multiplied by the conditioning scale. The UNet adds them to its
 * skips and mid output (sd_unet_forward_ex, sd_unet_residuals).
 *
 * Config: the UNet keys of config.json (sd_unet_config_from_encoder: same rules, no up blocks) plus
 * conditioning_channels (3), conditioning_embedding_out_channels ([16, 32, 96, 256]),
 * controlnet_conditioning_channel_order ("rgb" or "bgr": channels flipped first) and
 * global_pool_conditions (true is refused: SD_ERR_UNSUPPORTED). SDXL ControlNets ("text_time") take the
 * pooled text embedding and time ids as the SDXL UNet does.
 */
#ifndef SD_CONTROLNET_H
#define SD_CONTROLNET_H

#include "backend/ops.h"
#include "io/config.h"
#include "models/unet.h"
#include "models/weights.h"

#define SD_CNET_MAX_COND 8

typedef struct sd_cnet_config {
    sd_unet_config unet;           /* down/mid blocks, time embedding, in_channels, cross_attention_dim */
    int64_t conditioning_channels; /* 3 */
    int n_cond;                    /* len(conditioning_embedding_out_channels) */
    int64_t cond_channels[SD_CNET_MAX_COND];
    bool bgr;                      /* controlnet_conditioning_channel_order "bgr" */
} sd_cnet_config;

/* Reads a diffusers ControlNetModel config.json (_class_name ControlNetModel, or absent). Unsupported
 * features -> SD_ERR_UNSUPPORTED naming the key; out-of-range values SD_ERR_FORMAT. */
sd_status sd_cnet_config_from(const sd_config *c, sd_cnet_config *cfg);
sd_status sd_cnet_config_load(const char *config_json_path, sd_cnet_config *cfg);
/* The control image is this many times the latent size: 2^(n_cond - 1). */
int sd_cnet_cond_factor(const sd_cnet_config *c);

/* Whether a ControlNet fits a UNet: the same in_channels, levels, channels, resnets per level and
 * cross_attention_dim (its residuals must match the UNet's skips), and "text_time" on both or neither.
 * SD_ERR_FORMAT naming the first difference with both values; `what` names the ControlNet. */
sd_status sd_cnet_check_fit(const sd_cnet_config *cn, const sd_unet_config *u, const char *what);

typedef struct sd_cnet sd_cnet;

/* Loads every tensor with its expected shape (diffusers state-dict names), as sd_unet_load. `w` must
 * outlive the ControlNet. */
sd_status sd_cnet_load(sd_weights *w, const sd_cnet_config *cfg, sd_cnet **out);
void sd_cnet_free(sd_cnet *cn);
const sd_cnet_config *sd_cnet_get_config(const sd_cnet *cn);
/* Every tensor the config needs (name, shape) in load order. */
sd_status sd_cnet_list_tensors(const sd_cnet_config *cfg, sd_unet_tensor_fn fn, void *user);
/* Down residuals it produces (= the skip count of a UNet it fits). */
int sd_cnet_num_residuals(const sd_cnet *cn);

/* The shape of residual k for a sample [B,in_channels,h,w]: k < n = down residual k, k == n the mid one. */
void sd_cnet_residual_shape(const sd_cnet *cn, int64_t B, int64_t h, int64_t w, int k, int64_t ne[4]);
/* Allocates (uninitialised) residual tensors for a sample [B,in_channels,h,w] on ctx's arena: down[0..n)
 * (n = sd_cnet_num_residuals; the caller's array) and *mid. */
void sd_cnet_residuals_new(sd_ctx *ctx, const sd_cnet *cn, int64_t B, int64_t h, int64_t w, sd_tensor *down,
                           sd_tensor *mid);

/* x [B,in_channels,h,w]; timesteps F32 [B]; context [B or 1,S,D]; cond [B,conditioning_channels,h*f,w*f]
 * (f = sd_cnet_cond_factor), act dtype; added: SDXL ControlNets only (as sd_unet_forward_added).
 * out->down[j] = controlnet_down_blocks[j](skip_j) * scale, out->mid = controlnet_mid_block(mid) * scale,
 * written into the caller's tensors (sd_cnet_residuals_new), or added to them with `accumulate` (the
 * MultiControlNet sum, in net order). Leaves the arena as it found it. Errors go to ctx. Hooks (diffusers
 * module paths): time_proj, time_embedding, conv_in, controlnet_cond_embedding, down_blocks.i(.res_samples.k,
 * .resnets.j, .attentions.j), mid_block. */
void sd_cnet_forward(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                     sd_tensor cond, float scale, const sd_unet_added *added, const sd_unet_residuals *out,
                     bool accumulate);
/* The same with one scale per batch row: row_scale [B,1,1,1] (act dtype) multiplies every residual (a stream
 * batch whose rows are at different steps of their guidance windows). */
void sd_cnet_forward_rows(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                          sd_tensor cond, sd_tensor row_scale, const sd_unet_added *added, const sd_unet_residuals *out,
                          bool accumulate);

#endif
