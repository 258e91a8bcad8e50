/* Image autoencoders: diffusers AutoencoderKL and AutoencoderTiny (TAESD).
 *
 * Both work on NCHW activations. Weights are the diffusers state-dict keys
 * (AutoencoderKL mid-block attention also under the old names
 * query/key/value/proj_attn). Neither applies a scaling factor inside:
 * pipelines multiply encoded latents by cfg.scaling_factor (and subtract
 * shift_factor first where the config has one) and undo it before decoding.
 *
 * Hooked activations (sd_hookf, diffusers module paths):
 *   AutoencoderKL encode: "encoder.conv_in", "encoder.down_blocks.<i>",
 *     "encoder.mid_block", "encoder" (encoder output), "quant_conv"
 *   AutoencoderKL decode: "post_quant_conv", "decoder.conv_in",
 *     "decoder.mid_block", "decoder.up_blocks.<i>", "decoder"
 *   AutoencoderTiny: "encoder.layers.<k>" / "decoder.layers.<k>" (outputs of
 *     the nn.Sequential entries, indices as in diffusers)
 */
#ifndef SD_MODELS_VAE_H
#define SD_MODELS_VAE_H

#include "backend/ops.h"
#include "io/config.h"
#include "models/weights.h"

#define SD_VAE_MAX_BLOCKS 8

/* ---------------------------------------------------------------- AutoencoderKL */

typedef struct sd_vae_config {
    int in_channels, out_channels, latent_channels;
    int n_blocks;
    int block_out_channels[SD_VAE_MAX_BLOCKS];
    int layers_per_block;
    int norm_num_groups;
    float scaling_factor; /* 0.18215 for SD1.x */
    bool has_shift_factor;
    float shift_factor;   /* 0 unless has_shift_factor */
    bool mid_block_add_attention, use_quant_conv, use_post_quant_conv;
} sd_vae_config;

typedef struct sd_vae_resnet {
    int cin, cout;
    sd_tensor n1_w, n1_b, c1_w, c1_b, n2_w, n2_b, c2_w, c2_b;
    bool has_shortcut;
    sd_tensor sc_w, sc_b;
} sd_vae_resnet;

typedef struct sd_vae_attn {
    sd_tensor gn_w, gn_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
} sd_vae_attn;

typedef struct sd_vae_mid {
    sd_vae_resnet r0, r1;
    bool has_attn;
    sd_vae_attn attn;
} sd_vae_mid;

typedef struct sd_vae_level {
    sd_vae_resnet *res;
    int n_res;
    bool has_sample; /* downsampler (encoder) or upsampler (decoder) */
    sd_tensor s_w, s_b;
} sd_vae_level;

typedef struct sd_vae {
    sd_vae_config cfg;
    sd_tensor enc_in_w, enc_in_b, enc_norm_w, enc_norm_b, enc_out_w, enc_out_b;
    sd_vae_level enc[SD_VAE_MAX_BLOCKS];
    sd_vae_mid enc_mid;
    sd_tensor quant_w, quant_b, post_quant_w, post_quant_b;
    sd_tensor dec_in_w, dec_in_b, dec_norm_w, dec_norm_b, dec_out_w, dec_out_b;
    sd_vae_level dec[SD_VAE_MAX_BLOCKS]; /* in execution order (up_blocks.<i>) */
    sd_vae_mid dec_mid;
    sd_weights *owned_weights;
} sd_vae;

sd_status sd_vae_config_load(const char *config_json, sd_vae_config *c);
sd_status sd_vae_config_from(const sd_config *json, sd_vae_config *c);
/* `w` must outlive the model. Missing tensor -> SD_ERR_NOT_FOUND, wrong shape -> SD_ERR_SHAPE. */
sd_status sd_vae_load(sd_weights *w, const sd_vae_config *c, sd_vae **out);
/* A diffusers vae folder: config.json + diffusion_pytorch_model[.fp16].safetensors. */
sd_status sd_vae_load_dir(sd_backend *be, const char *dir, sd_vae **out);
void sd_vae_free(sd_vae *m);
/* Spatial factor between image and latent: 2^(n_blocks-1). */
int sd_vae_downscale(const sd_vae_config *c);

/* img [B, in_channels, H, W] in [-1,1], H and W multiples of sd_vae_downscale
 * -> latent_dist mean [B, latent_channels, H/f, W/f]; *logvar (optional) =
 * logvar clamped to [-30, 20]. Outputs sit at the bottom of what the call
 * allocated (mean, then logvar). Errors go to ctx->status. */
sd_tensor sd_vae_encode(sd_ctx *ctx, const sd_vae *m, sd_tensor img, sd_tensor *logvar);
/* z [B, latent_channels, h, w] (unscaled) -> image [B, out_channels, h*f, w*f]. */
sd_tensor sd_vae_decode(sd_ctx *ctx, const sd_vae *m, sd_tensor z);
/* DiagonalGaussianDistribution.sample: mean + exp(0.5*logvar) * noise. The one latent sampler (img2img,
 * the stream engine with the full VAE, the VAE checker). */
sd_tensor sd_vae_sample(sd_ctx *ctx, sd_tensor mean, sd_tensor logvar, sd_tensor noise);

/* ---------------------------------------------------------------- AutoencoderTiny */

typedef struct sd_taesd_config {
    int in_channels, out_channels, latent_channels;
    int n_enc, enc_channels[SD_VAE_MAX_BLOCKS], enc_blocks[SD_VAE_MAX_BLOCKS];
    int n_dec, dec_channels[SD_VAE_MAX_BLOCKS], dec_blocks[SD_VAE_MAX_BLOCKS];
    int upsampling_scaling_factor; /* 2 */
    sd_unary_op act;               /* relu (also silu/swish, gelu) */
    float latent_magnitude, latent_shift;
    float scaling_factor;          /* 1.0: TAESD latents are already scaled */
} sd_taesd_config;

typedef enum sd_taesd_kind { SD_TAESD_CONV, SD_TAESD_BLOCK, SD_TAESD_ACT, SD_TAESD_UPSAMPLE } sd_taesd_kind;

typedef struct sd_taesd_layer {
    sd_taesd_kind kind;
    int stride;         /* CONV */
    sd_tensor w, b;     /* CONV (b.data NULL when bias-free) */
    sd_tensor cw[3], cb[3]; /* BLOCK: conv.0, conv.2, conv.4 */
    bool has_skip;
    sd_tensor skip_w;   /* BLOCK 1x1, bias-free, when channels change */
} sd_taesd_layer;

typedef struct sd_taesd {
    sd_taesd_config cfg;
    sd_taesd_layer *enc, *dec;
    int n_enc_layers, n_dec_layers;
    sd_weights *owned_weights;
} sd_taesd;

sd_status sd_taesd_config_load(const char *config_json, sd_taesd_config *c);
sd_status sd_taesd_config_from(const sd_config *json, sd_taesd_config *c);
sd_status sd_taesd_load(sd_weights *w, const sd_taesd_config *c, sd_taesd **out);
/* A diffusers AutoencoderTiny folder (e.g. madebyollin/taesd): config.json +
 * diffusion_pytorch_model[.fp16].safetensors. F16 weights are upcast to the
 * backend's activation dtype on load. */
sd_status sd_taesd_load_dir(sd_backend *be, const char *dir, sd_taesd **out);
void sd_taesd_free(sd_taesd *m);
int sd_taesd_downscale(const sd_taesd_config *c); /* 2^(n_enc-1) */

/* img [B, in_channels, H, W] in [-1,1] -> latents (already in scaled SD latent units). */
sd_tensor sd_taesd_encode(sd_ctx *ctx, const sd_taesd *m, sd_tensor img);
/* latents -> image in [-1,1] (tanh(x/3)*3 first, *2-1 at the end). */
sd_tensor sd_taesd_decode(sd_ctx *ctx, const sd_taesd *m, sd_tensor latents);
/* Preview helper: (x / (2*latent_magnitude) + latent_shift).clamp(0,1). */
sd_tensor sd_taesd_scale_latents(sd_ctx *ctx, const sd_taesd *m, sd_tensor latents);

#endif
