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
/* The float dtype weights are kept in for this backend and params. */
sd_dtype sd_model_weight_dtype(const sd_backend *be, const sd_model_params *p);

#endif
