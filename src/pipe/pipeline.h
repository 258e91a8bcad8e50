/* The generation pipeline core shared by sd_txt2img / sd_img2img and the
 * conformance runner: diffusers StableDiffusionPipeline /
 * StableDiffusionImg2ImgPipeline semantics (LCM guidance embedding when the
 * UNet has time_cond_proj_dim), with every random draw supplied by a noise
 * callback so recorded reference noise can be replayed. */
#ifndef SD_PIPE_PIPELINE_H
#define SD_PIPE_PIPELINE_H

#include "models/controlnet.h"
#include "pipe/model.h"

/* Draws n standard-normal values; `who` says which reference call draws them:
 * "vae.sample", "prepare_latents" or "scheduler.step" (diffusers 0.26 Euler
 * draws one unused tensor per step; later versions draw none). */
typedef void (*sd_noise_fn)(void *user, const char *who, float *out, size_t n);
typedef void (*sd_step_fn)(void *user, int i, double t, const float *latents, const float *denoised, size_t n);

/* The raw UNet call of step i (after scale_model_input and the CFG duplication; before guidance): rows
 * of `sample` / `out` are the UNet batch, `n` values each. */
typedef void (*sd_unet_call_fn)(void *user, int i, double t, const float *sample, const float *out, size_t n);
/* Intermediate tensors by name: "init_latents" (img2img: encoded and scaled), "noisy_latents" (img2img: the
 * start latents after add_noise); with ControlNets "controlnet_cond.NNN" (what net NNN receives: the control
 * image, one row per UNet row) and per step i "step.III.down_block_additional_residuals.JJJ" /
 * "step.III.mid_block_additional_residual" (the summed residuals fed to the UNet). */
typedef void (*sd_latents_fn)(void *user, const char *what, const float *latents, size_t n);

/* SDXL micro-conditioning (diffusers call arguments; 0 = default: original_size = target_size = (height,
 * width), crops (0, 0), negative ones as the pipeline derives them) */
typedef struct sd_sdxl_micro {
    int original_size[2], crops_top_left[2], target_size[2]; /* (height, width), (top, left) */
    int negative_original_size[2], negative_crops_top_left[2], negative_target_size[2];
} sd_sdxl_micro;

/* One ControlNet of a generation (diffusers StableDiffusionControlNetPipeline; several = MultiControlNetModel:
 * the residuals of all nets are summed). Every net runs on the same UNet input rows, timestep and prompt
 * embeddings, with its own control image. At step i of the N steps run, the net's scale is
 * scale * keep, keep = 0 when i/N < start or (i+1)/N > end (control_guidance_start / _end), else 1; a net
 * whose scale is 0 is not run (its residuals would be exactly 0). */
typedef struct sd_pipe_control {
    const sd_cnet *net;
    const float *image; /* [1,C,H,W] NCHW in [0,1] (RGB), C = the net's conditioning_channels, H x W = the
                           generation's height x width; the same for every batch row */
    float scale;        /* controlnet_conditioning_scale */
    float start, end;   /* control_guidance_start / _end, 0 <= start < end <= 1 */
} sd_pipe_control;

#define SD_PIPE_MAX_CONTROLS 8

typedef struct sd_pipe_args {
    const char *prompt, *negative_prompt;
    int batch, width, height, steps, clip_skip;
    float guidance_scale, strength, eta;
    sd_scheduler *sched;       /* configured, set_timesteps not yet called */
    const float *latents;      /* txt2img x_T before init_noise_sigma [B,C,h,w]; NULL: drawn from `noise` */
    const float *image;        /* img2img input [B,3,H,W] in [-1,1]; NULL for txt2img */
    bool use_taesd;
    sd_noise_fn noise;
    void *noise_user;
    sd_step_fn on_step;        /* after every scheduler step (may be NULL) */
    void *step_user;
    sd_progress_fn progress;
    void *progress_user;
    sd_sdxl_micro micro;       /* SDXL only */
    const char *prompt_2, *negative_prompt_2; /* SDXL: text encoder 2's prompts; NULL or "" = prompt / negative */
    sd_unet_call_fn on_unet;   /* may be NULL */
    sd_latents_fn on_latents;  /* may be NULL; user: step_user */
    const sd_pipe_control *controls; /* ControlNets (n_controls, at most SD_PIPE_MAX_CONTROLS), may be NULL */
    int n_controls;
} sd_pipe_args;

typedef struct sd_pipe_out {
    float *prompt_embeds;          /* [1,S,D] (malloc'd) */
    float *negative_prompt_embeds; /* [1,S,D] when CFG ran, else NULL */
    size_t embeds_n;
    float *latents;                /* final latents [B,C,h,w] */
    size_t latents_n;
    float *image;                  /* decoded [B,3,H,W] in about [-1,1] */
    size_t image_n;
    int n_timesteps;          /* the scheduler's whole schedule (img2img runs its tail) */
    double timesteps[1024];
    /* SDXL: the pooled embeddings [1,P] and the added conditioning as fed to the UNet, one row per UNet
     * batch row (unet_rows = 2B with CFG, else B) */
    float *pooled_prompt_embeds, *negative_pooled_prompt_embeds;
    size_t pooled_n;
    float *add_text_embeds;   /* [unet_rows, P] */
    float *add_time_ids;      /* [unet_rows, 6] */
    int unet_rows;
} sd_pipe_out;

sd_status sd_pipe_run(sd_model *m, const sd_pipe_args *a, sd_pipe_out *out);
void sd_pipe_out_free(sd_pipe_out *o);

/* Encodes one prompt to [S,D] host floats (S = tokenizer max length). */
sd_status sd_pipe_encode_prompt(sd_model *m, const char *prompt, int clip_skip, float **embeds, int *seq_len, int *dim);

/* Runs `fn` once in a planning context to size the arena (refusing what cannot fit, named by `what`),
 * then for real in a fresh context freed afterwards. */
typedef void (*sd_stage_fn)(sd_ctx *ctx, void *user);
sd_status sd_pipe_stage(sd_backend *be, sd_stage_fn fn, void *user, const char *what);

/* SDXL (src/pipe/sdxl.c): both text encoders -> embeds [S, D1+D2] and pooled [P] host floats (malloc'd);
 * text encoder 2 reads prompt_2 (NULL or "": prompt). */
sd_status sd_sdxl_encode_prompt(sd_model *m, const char *prompt, const char *prompt_2, int clip_skip, float **embeds,
                                float **pooled, int *seq_len, int *dim, int *pooled_dim);
/* Both text encoders on S token ids each (ids1: tokenizer/, ids2: tokenizer_2/) on ctx (reset here; a planning
 * ctx sizes the arena and computes nothing): embeds [S, D1+D2] and pooled [P] host floats.
 * Errors go to ctx. The one SDXL prompt forward (sd_sdxl_encode_prompt and the stream engine). */
void sd_sdxl_text_forward(const sd_model *m, sd_ctx *ctx, const int32_t *ids1, const int32_t *ids2, int S, int clip_skip,
                          float *embeds, float *pooled);
/* The positive and negative time ids of a generation (diffusers' _get_add_time_ids, txt2img or img2img
 * rules by a->image). */
void sd_sdxl_time_ids(const sd_pipe_args *a, float pos[SD_UNET_TIME_IDS], float neg[SD_UNET_TIME_IDS]);

#endif
