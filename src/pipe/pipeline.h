/* The generation pipeline core shared by sd_txt2img / sd_img2img and the
 * conformance runner: diffusers StableDiffusionPipeline /
 * StableDiffusionImg2ImgPipeline semantics (LCM guidance embedding when the
 * UNet has time_cond_proj_dim), with every random draw supplied by a noise
 * callback so recorded reference noise can be replayed. */
#ifndef SD_PIPE_PIPELINE_H
#define SD_PIPE_PIPELINE_H

#include "pipe/model.h"

/* Draws n standard-normal values; `who` says which reference call draws them:
 * "vae.sample", "prepare_latents" or "scheduler.step" (diffusers 0.26 Euler
 * draws one unused tensor per step; later versions draw none). */
typedef void (*sd_noise_fn)(void *user, const char *who, float *out, size_t n);
typedef void (*sd_step_fn)(void *user, int i, double t, const float *latents, const float *denoised, size_t n);

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
} sd_pipe_out;

sd_status sd_pipe_run(sd_model *m, const sd_pipe_args *a, sd_pipe_out *out);
void sd_pipe_out_free(sd_pipe_out *o);

/* Encodes one prompt to [S,D] host floats (S = tokenizer max length). */
sd_status sd_pipe_encode_prompt(sd_model *m, const char *prompt, int clip_skip, float **embeds, int *seq_len, int *dim);

#endif
