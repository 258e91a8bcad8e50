/* StreamDiffusion engine internals: the struct, owned and written by
 * stream.c alone; the conformance runner (src/check) and the tests read it.
 * The layers above the engine (stream_async.c, stream_group.c) include
 * pipe/stream_layer.h only. Semantics follow StreamDiffusion's pipeline.py:
 * Stream Batch over t_index_list on a 50-step LCM schedule, residual CFG
 * (none / full / self / initialize), fixed per-slot noise, TAESD. */
#ifndef SD_PIPE_STREAM_H
#define SD_PIPE_STREAM_H

#include "io/image.h"
#include "pipe/blend.h"
#include "pipe/stream_layer.h"
#include "sched/rng.h"

#include <pthread.h>

#define SD_STREAM_MAX_CONTROLS 8

struct sd_stream {
    sd_model *m;
    sd_stream_params p;
    int n, fbs;          /* denoising steps, frames per call */
    int B;               /* latent rows per stream step: n*fbs (denoising batch) or fbs */
    int UB;              /* UNet batch: B, B+fbs (initialize) or 2B (full) */
    int64_t C, h, w;     /* latent shape */
    int H, W;            /* image shape */
    bool taesd;          /* encode/decode with TAESD */
    float vae_scale;     /* scaling_factor of the autoencoder in use */
    float guidance;      /* effective guidance (1 for cfg none) */
    /* per-step constants (host) */
    int64_t t_sub[SD_STREAM_MAX_STEPS];
    float alpha[SD_STREAM_MAX_STEPS], beta[SD_STREAM_MAX_STEPS], c_skip[SD_STREAM_MAX_STEPS],
        c_out[SD_STREAM_MAX_STEPS];
    /* persistent device state (one allocation) */
    sd_ctx state;
    sd_tensor init_noise, init_noise_rolled, stock, buffer; /* [B,C,h,w], buffer [B-fbs,...] */
    sd_tensor k_alpha, k_beta, k_inv_alpha, k_c_skip, k_c_out, k_next; /* [B,1,1,1] per row */
    sd_tensor k_alpha_buf, k_beta_buf;                                  /* [B-fbs,1,1,1] rows fbs.. */
    sd_tensor t_unet;                                                   /* F32 [UB] */
    sd_tensor img_in, x_in;        /* [fbs,3,H,W] frame input, [fbs,C,h,w] latent input (txt2img / replay) */
    sd_tensor img_out;             /* [fbs,3,H,W] last output */
    sd_tensor embeds;              /* [UB or 1, S, D] prompt embeddings */
    /* SDXL (P > 0): the UNet's added conditions per UNet row, rows as the UNet input (uncond rows first):
     * text_embeds = the pooled embedding of text encoder 2 (negative prompt's on uncond rows), time_ids =
     * (H, W, 0, 0, H, W) (original size = target size = the stream's, no crop); written on prompt changes */
    int P;
    sd_tensor add_te;              /* [UB, P] act dtype */
    sd_tensor add_ids;             /* F32 [UB, 6] */
    int32_t *ids2;                 /* tokenizer_2 ids scratch [S] */
    float *host_pooled;            /* [2, P] scratch (cond, uncond) */
    void *kv_mem;
    sd_unet_kv *kv;
    /* per-frame compute arena, planned at creation */
    sd_ctx ctx;
    sd_ctx text_ctx;               /* CLIP arena for prompt changes */
    int S, D;
    int32_t *ids;                  /* token ids scratch [S] */
    float *host_embeds;            /* [2, S, D] scratch (cond, uncond) */
    float *host_in;                /* [fbs,3,H,W] / latent scratch */
    float *host_noise;             /* [fbs,C,h,w] */
    sd_rng rng;
    sd_rng ssf_rng;                /* SSF coin flips: its own generator (like StreamDiffusion's python
                                    * `random`), so the SSF decision (made by the async input thread)
                                    * never races with or shifts the engine's noise draws */
    bool first_frame_done;         /* SSF has a previous input */
    float *ssf_prev;               /* [fbs*3*H*W] previous processed input */
    int ssf_skips;
    uint64_t calls;
    pthread_mutex_t engine;        /* one stream step or prompt change at a time */
    /* who drives the frames (stream_layer.h): changed only under `engine` (sd_stream_enter / attach /
     * detach); mode and owner are also read lock-free (__atomic_load_n) */
    sd_stream_mode mode;
    void *owner;                   /* the attached layer's object (async pipeline, stream group) */
    sd_stream_detach_fn detach;    /* its teardown hook, called by sd_stream_free */
    /* prompts and seeds (stream_prompts.c): the active prompt list (re-encoded after a LoRA change), the
     * encodings of recent texts [S,D] and noises of recent seeds [B,C,h,w] with the generator after each draw */
    struct sd_stream_prompts {
        int n;
        char *text[SD_STREAM_MAX_BLEND];
        float weight[SD_STREAM_MAX_BLEND];
        char *negative;
        sd_blend_mode mode;
        bool normalize;
    } prompts;
    sd_blend_cache text_cache, noise_cache;
    uint64_t text_cache_version;   /* m->weights_version of the cached encodings */
    sd_rng noise_rng[SD_BLEND_CACHE_SLOTS];
    uint64_t weights_version;      /* m->weights_version the prompt K/V were computed with */
    pthread_mutex_t stats_mu;      /* guards stats (sd_stream_note, sd_stream_get_stats) */
    sd_stream_stats stats;
    double fps_dt_ema, last_out;   /* output intervals behind stats.fps */
    uint64_t kv_version;           /* bumped whenever the prompt K/V cache is recomputed */
    uint64_t serial;               /* unique per stream in this process (graph cache keys) */
    /* the frame to run as RGB bytes (sd_stream_frame_in: the caller's image or the fitted copy, uploaded
     * into img_in8 there) */
    const uint8_t *frame8;
    bool in_u8;                    /* the step reads img_in8 (bytes, converted on the device), not img_in */
    bool in_latent;                /* the step reads x_in (txt2img) */
    sd_tensor img_in8, img_out8;   /* U8 [fbs,H,W,3]: the frame in, the output image out (made by the step) */
    /* captured per-frame steps ([0] img2img from img_in, [1] img2img from img_in8, [2] txt2img) on a
     * backend with graphs, and what they baked in */
    struct sd_stream_graph {
        void *exec;
        float guidance, delta;
        uint64_t weights_version;
    } graph[3];
    bool graphs_off;               /* a capture failed once: eager from then on */
    /* ControlNets (sd_stream_params.controls): per net the control images of the stream batch's rows (row
     * block k = the frame that entered k steps ago), the new frame's, and one scale per UNet row (per
     * step-index list, as t_unet: the guidance window of the row's step) */
    int n_ctl;
    struct sd_stream_ctl {
        const struct sd_cnet *net;
        bool from_frame;           /* made from each input frame; else the fixed image, uploaded once */
        sd_tensor cond_new;        /* [fbs,3,H,W] */
        sd_tensor cond_rows;       /* [B,3,H,W] */
        sd_tensor k_scale;         /* [n*UB,1,1,1] */
        float scale, start, end;   /* live (sd_stream_set_control) */
        sd_preprocess_params pp;   /* from_frame: how the frame becomes its control image (live) */
    } ctl[SD_STREAM_MAX_CONTROLS];
    sd_tensor *res_down;           /* residual descriptors (n_res) */
    int n_res;
    uint8_t *ctl_bytes;            /* [fbs*H*W*3] scratch: a frame as bytes (activation input) */
    float *ctl_host;               /* [fbs*3*H*W] scratch: the frame's control image */
    float *ctl_scales;             /* [n*UB] scratch: one net's row scales (sd_stream_control_scales) */
    sd_preprocess_work ctl_work;   /* preprocessing buffers and output ([H,W,3]): no allocation per frame */
    sd_image ctl_img;
};


/* One stream step on the frame(s) in s->img_in (img2img) or on the latent in
 * s->x_in (txt2img: use_latent = true). The result image is left in
 * s->img_out. `hook` (may be NULL) receives the named intermediate tensors
 * of StreamDiffusion's replay semantics (x_t_latent_new, unet_x_t_latent,
 * stock_noise_before, unet_call_sample, unet_call_out, model_pred,
 * x_0_pred_batch, stock_noise_after, x_0_pred_out, x_t_latent_buffer_after,
 * output). Caller holds s->engine. */
sd_status sd_stream_step(sd_stream *s, bool use_latent, void (*hook)(void *, const char *, sd_tensor), void *user);
/* The rules for the live settings (stream_params.c; sd_stream_params_validate uses them too): the
 * parameter's name into *param (may be NULL) when refused. */
sd_status sd_stream_check_guidance(float guidance_scale, float delta, const char **param);
sd_status sd_stream_check_filter(float threshold, int max_skip_frames, const char **param);
/* A ControlNet's conditioning scale (0..10) and guidance window (0 <= start < end <= 1); k >= 0 names it. */
sd_status sd_control_check(float scale, float guidance_start, float guidance_end, int k, const char **param);
/* Frees the captured CUDA graphs of the stream step (stream_step.c): the next step captures again. Caller
 * holds s->engine (or owns the stream alone). */
void sd_stream_graphs_free(sd_stream *s);
/* Prompts (stream_prompts.c): re-encodes the active prompts when a LoRA changed the weights since (caller
 * holds s->engine); frees the lists and caches. */
sd_status sd_stream_refresh_prompt(sd_stream *s);
void sd_stream_prompts_free(sd_stream *s);
/* ControlNets of the stream (stream_control.c). Caller holds s->engine (or owns the stream alone).
 * frames: RGB bytes of fbs frames ([fbs,H,W,3]) -> each frame-made net's control image (through its own
 * preprocessor) in cond_new. image: net k's rows at creation: a fixed image (resized to the stream size) in
 * every row, or zeros until frames come. scales: net k's scale per UNet row, in t_unet's layout, uploaded
 * (host: n*UB floats of scratch). */
sd_status sd_stream_control_frames(sd_stream *s, const uint8_t *frames);
sd_status sd_stream_control_image(sd_stream *s, int k, const sd_image *fixed);
sd_status sd_stream_control_scales(sd_stream *s, int k, float *host);
/* Replaces init_noise (host floats [B,C,h,w]), like StreamDiffusion's update_noise(noise). */
sd_status sd_stream_set_init_noise(sd_stream *s, const float *host);
/* Test hook (stream_async.c): how many frame-slot buffers the async pipeline
 * has (re)allocated so far (constant once the slots have the pushed frames'
 * size). */
uint64_t sd_stream_async_slot_allocs(const sd_stream *s);

#endif
