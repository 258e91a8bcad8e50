/* StreamDiffusion engine internals (shared by the sync/async API and the
 * conformance runner). Semantics follow StreamDiffusion's pipeline.py:
 * Stream Batch over t_index_list on a 50-step LCM schedule, residual CFG
 * (none / full / self / initialize), fixed per-slot noise, TAESD. */
#ifndef SD_PIPE_STREAM_H
#define SD_PIPE_STREAM_H

#include "pipe/model.h"
#include "sched/rng.h"

#include <pthread.h>

typedef struct sd_stream_async sd_stream_async;
/* sd_stream_group: include/streamdiff.h (stream_group.c) */

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
    char *prompt, *negative_prompt;/* the active prompts (re-encoded after a LoRA change) */
    uint64_t weights_version;      /* m->weights_version the prompt K/V were computed with */
    double inference_ema_ms;
    sd_stream_stats stats;
    sd_stream_async *async;        /* async pipeline (stream_async.c); set once under `engine`, read
                                    * with __atomic_load_n; while set, the sync frame calls are refused */
    uint64_t kv_version;           /* bumped whenever the prompt K/V cache is recomputed */
    sd_stream_group *group;        /* the stream group it belongs to (stream_group.c), or NULL */
    uint64_t serial;               /* unique per stream in this process (graph cache keys) */
    /* the frame to run as RGB bytes (sd_stream_take_frame: the caller's image or the fitted copy, valid
     * until sd_stream_prepare_frame uploads it into img_in8); NULL: the frame is in host_in as floats */
    const uint8_t *frame8;
    bool in_u8;                    /* the step reads img_in8 (bytes, converted on the device), not img_in */
    sd_tensor img_in8, img_out8;   /* U8 [fbs,H,W,3]: the frame in, the output image out (made by the step) */
    /* captured per-frame steps ([0] img2img from img_in, [1] img2img from img_in8, [2] txt2img) on a
     * backend with graphs, and what they baked in */
    struct sd_stream_graph {
        void *exec;
        float guidance, delta;
        uint64_t weights_version;
    } graph[3];
    bool graphs_off;               /* a capture failed once: eager from then on */
};


/* One stream step on the frame(s) in s->img_in (img2img) or on the latent in
 * s->x_in (txt2img: use_latent = true). The result image is left in
 * s->img_out. `hook` (may be NULL) receives the named intermediate tensors
 * of StreamDiffusion's replay semantics (x_t_latent_new, unet_x_t_latent,
 * stock_noise_before, unet_call_sample, unet_call_out, model_pred,
 * x_0_pred_batch, stock_noise_after, x_0_pred_out, x_t_latent_buffer_after,
 * output). Caller holds s->engine. */
sd_status sd_stream_step(sd_stream *s, bool use_latent, void (*hook)(void *, const char *, sd_tensor), void *user);
/* Replaces init_noise (host floats [B,C,h,w]), like StreamDiffusion's update_noise(noise). */
sd_status sd_stream_set_init_noise(sd_stream *s, const float *host);
/* SSF decision for the frame in host_in: true = skip it. */
bool sd_stream_similarity_skip(sd_stream *s, const float *chw, size_t n);
/* Stops and joins the async threads and frees their slots (sd_stream_free calls it). */
void sd_stream_async_stop(sd_stream *s);
/* Test hook: how many frame-slot buffers the async pipeline has (re)allocated
 * so far (constant once the slots have the pushed frames' size). */
uint64_t sd_stream_async_slot_allocs(const sd_stream *s);
/* Runs one img2img step on the frame already converted to [-1,1] CHW in
 * s->host_in (SSF first: *skipped = true leaves the previous output).
 * Caller holds s->engine. */
sd_status sd_stream_run_prepared(sd_stream *s, bool *skipped);
/* Downloads the last output (first frame) into `out` (allocated when it has
 * another size, else reused). Caller holds s->engine. */
sd_status sd_stream_output_image(sd_stream *s, sd_image *out);

/* The stream batch step split around its one UNet call, for the stream group
 * (stream_group.c), which runs many streams' UNet rows in one call. pre:
 * encodes the frame in img_in (use_latent: takes x_in), shifts the stock noise
 * and returns the stream batch X, the UNet input rows *Xin ([UB,C,h,w]) and
 * their timesteps *t (F32 [UB]); the stream's K/V cache (s->kv) holds their
 * conditioning (batch 1 or UB). post: from the UNet output eps for those rows,
 * finishes the step exactly as sd_stream_step (guidance, consistency, RCFG
 * stock, buffer, decode into img_out). use_denoising_batch streams only.
 * sd_stream_step = pre -> sd_unet_forward -> post. Errors go to ctx. Caller
 * holds s->engine. */
sd_tensor sd_stream_batch_pre(sd_stream *s, sd_ctx *ctx, bool use_latent, sd_tensor *Xin, sd_tensor *t);
void sd_stream_batch_post(sd_stream *s, sd_ctx *ctx, sd_tensor X, sd_tensor eps);
/* The first half of sd_stream_run_prepared: prompt refresh (after a LoRA
 * change), similarity filter (*skipped: counted, nothing else to do) and the
 * upload of the frame: s->frame8's bytes into img_in8 (in_u8), or else the
 * floats of host_in into img_in. Caller holds s->engine. */
sd_status sd_stream_prepare_frame(sd_stream *s, bool *skipped);
/* The first half of sd_stream_txt2img: draws the frame's latent noise from
 * the stream's generator into x_in (after a prompt refresh). Caller holds
 * s->engine. */
sd_status sd_stream_prepare_latent(sd_stream *s);
/* Folds one step's time (since t0, sd_time_now) into stats.inference_ms. */
void sd_stream_record_inference(sd_stream *s, double t0);
/* Takes an RGB frame for the next sd_stream_prepare_frame: at the stream's
 * size (fitted through `scratch`, reused when it has the size, when its size
 * differs) as bytes (s->frame8), which go to the device as they are and are
 * converted there; host_in gets the [-1,1] floats only when the similarity
 * filter needs them. `in` and `scratch` must stay valid until then. Caller
 * holds s->engine or owns the stream exclusively. */
sd_status sd_stream_take_frame(sd_stream *s, const sd_image *in, sd_image *scratch);

#endif
