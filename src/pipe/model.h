/* sd_model internals: the loaded components of one Stable Diffusion model. */
#ifndef SD_PIPE_MODEL_H
#define SD_PIPE_MODEL_H

#include "backend/ops.h"
#include "models/clip.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"
#include "sched/scheduler.h"

struct sd_model {
    sd_backend *be;
    char *source;         /* resolved folder or file */
    const char *arch;     /* "sd1" / "sd2" */
    sd_tok_clean tok_mode;
    sd_tokenizer *tok;
    /* weights: w_unet owns a single-file checkpoint that the others alias, so it is freed last */
    sd_weights w_text, w_vae, w_taesd, w_unet;
    sd_clip_config clip_cfg;
    sd_clip *clip;
    sd_unet_config unet_cfg;
    sd_unet *unet;
    sd_vae_config vae_cfg;
    sd_vae *vae;          /* NULL when the model has no VAE */
    sd_taesd_config taesd_cfg;
    sd_taesd *taesd;      /* NULL unless a TAESD was given */
    sd_sched_config sched_cfg;
    char sched_class[64];
    sd_model_params params;
    struct sd_lora_state *lora; /* the fused LoRA set (src/models/lora.h); NULL = none */
    uint64_t weights_version;   /* incremented whenever weights change (LoRA apply): caches keyed on it go stale */
    /* SDXL (arch "sdxl", src/pipe/sdxl.c): clip/tok above are text encoder 1 (CLIP ViT-L), these encoder 2
     * (OpenCLIP ViT-bigG with projection) */
    bool sdxl;
    sd_tokenizer *tok2;
    sd_weights w_text2;
    sd_clip_config clip2_cfg;
    sd_clip *clip2;
    bool force_zeros_for_empty_prompt; /* model_index.json: no negative prompt -> zero negative embeddings */
};

/* Loads a components folder: tokenizer/, text_encoder/, unet/, vae/ (optional), scheduler/.
 * A vae/ that is an AutoencoderTiny (SDXS ships one) loads as the model's TAESD, unless params.taesd names one.
 * `unet_dir` (may be NULL) overrides the UNet folder (e.g. an LCM-distilled UNet). */
sd_status sd_model_load_folder(const char *dir, const char *unet_dir, const sd_model_params *p, sd_model **out);
sd_status sd_model_load_single_file(const char *path, const sd_model_params *p, sd_model **out);
/* Loads a stand-alone TAESD (AutoencoderTiny) folder into the model. */
sd_status sd_model_load_taesd(sd_model *m, const char *dir);
/* Whether images go through the TAESD: when asked for, or when the model has no AutoencoderKL but a TAESD
 * (a folder whose vae/ is an AutoencoderTiny, e.g. SDXS). */
bool sd_model_use_taesd(const sd_model *m, bool requested);
/* SDXL folders (src/pipe/sdxl.c). sd_sdxl_check_folder: whether `dir` holds an SDXL pipeline (model_index.json
 * names StableDiffusionXLPipeline, or the UNet in `unet_dir` has "text_time" added conditioning); an SDXL refiner
 * (StableDiffusionXLImg2ImgPipeline with only text_encoder_2 / requires_aesthetics_score) or an SDXL
 * pipeline class this build does not run is SD_ERR_UNSUPPORTED naming it. sd_sdxl_load_folder: loads
 * tokenizer_2/ and text_encoder_2/ (a missing folder is SD_ERR_NOT_FOUND naming it) and checks that the
 * encoders, UNet and VAE fit together (SD_ERR_FORMAT naming the mismatch). */
sd_status sd_sdxl_check_folder(const char *dir, const char *unet_dir, bool *is_sdxl);
sd_status sd_sdxl_load_folder(sd_model *m, const char *dir);
/* Components that must fit together in any model: VAE latent channels = UNet in_channels, text width =
 * UNet cross_attention_dim. SD_ERR_FORMAT naming both sides. */
sd_status sd_model_check_fit(const sd_model *m);
void sd_sdxl_free(sd_model *m); /* the SDXL-only components */
/* Weights of a diffusers/transformers component folder (`base`: "model" or "diffusion_pytorch_model") in the
 * model's weight dtype and variant, finalized. */
sd_status sd_model_load_component(sd_model *m, sd_weights *w, const char *dir, const char *what, const char *base);
/* The prompt encoder (the one place a prompt becomes CLIP hidden states; txt2img/img2img and the stream
 * engine use it). Tokens per prompt: the tokenizer's max length within CLIP's positions. */
int sd_model_prompt_tokens(const sd_model *m);
/* The prompt's S token ids (tok: the model's tokenizer, or NULL for m->tok; the model's clean-up mode;
 * padded). warn: say on stderr when CLIP sees only part of the prompt (txt2img/img2img; the stream engine,
 * which re-encodes on every prompt change, does not). */
sd_status sd_model_tokenize(const sd_model *m, sd_tokenizer *tok, const char *prompt, int32_t *ids, int S,
                            bool warn);
/* CLIP (clip_skip) on S token ids into out [S*D] host floats, on ctx (reset here; a planning ctx sizes
 * the arena and computes nothing). Errors go to ctx. */
void sd_model_text_forward(const sd_model *m, sd_ctx *ctx, const int32_t *ids, int S, int clip_skip, float *out);

/* The float dtype weights are kept in for this backend and params. */
sd_dtype sd_model_weight_dtype(const sd_backend *be, const sd_model_params *p);

#endif
