/* The stream engine (stream.c) as the layers above it see it: the async
 * pipeline (stream_async.c: threads and queues) and the stream group
 * (stream_group.c: a batch scheduler). sd_stream stays opaque here: stream.c
 * alone writes it, and every frame, whoever drives it, goes through the same
 * steps:
 *
 *   frame in   sd_stream_frame_in: bytes, activations or latent noise ->
 *              prompt refresh (after a LoRA change) -> similarity filter ->
 *              upload
 *   step       sd_stream_frame_step (sync, async) or the group's batched UNet
 *              call between sd_stream_batch_pre / sd_stream_batch_post
 *   frame out  sd_stream_frame_out: the image bytes, or the activations for
 *              the async output thread
 *   stats      sd_stream_note: the one updater of sd_stream_stats
 *
 * Modes. A stream is driven one way at a time: its mode (idle / sync / async
 * / grouped) changes only in stream.c, under the engine lock, by
 * sd_stream_enter (the synchronous calls), sd_stream_attach and
 * sd_stream_detach (a layer); the rules of which mode allows what are one
 * table there. A layer that attaches registers a detach hook, which
 * sd_stream_free calls (the layer then detaches itself), so stream.c calls no
 * layer by name. */
#ifndef SD_PIPE_STREAM_LAYER_H
#define SD_PIPE_STREAM_LAYER_H

#include "pipe/model.h"

typedef enum sd_stream_mode {
    SD_STREAM_IDLE = 0, /* no frame yet, no layer */
    SD_STREAM_SYNC,     /* sd_stream_img2img / sd_stream_txt2img ran */
    SD_STREAM_ASYNC,    /* the async layer owns the frames (push / pull): the sync calls are refused */
    SD_STREAM_GROUPED,  /* a stream group's member: the group's ticks, and its own sync calls */
} sd_stream_mode;

/* What a layer needs to know of a stream; fixed at sd_stream_create. */
typedef struct sd_stream_desc {
    sd_model *m;
    int W, H;               /* frame size */
    int64_t C, h, w;        /* latent shape */
    int n, fbs, UB;         /* denoising steps, frames per step, UNet rows per step */
    int S;                  /* prompt tokens */
    bool denoising_batch, use_graphs, drop_old_frames;
    int queue_size;
    sd_dtype act;           /* dtype of the frame activations (img_in / img_out) */
    int n_controls;         /* ControlNets (their residuals come from sd_stream_batch_pre) */
} sd_stream_desc;
void sd_stream_describe(const sd_stream *s, sd_stream_desc *d);

/* ---------------------------------------------------------------- modes */

typedef void (*sd_stream_detach_fn)(void *owner, sd_stream *s);
/* Hands the stream to a layer (mode SD_STREAM_ASYNC or SD_STREAM_GROUPED, owner its object). Refused
 * with a message naming the conflict (fn: the public call) when the current mode forbids it. `detach` is
 * called by sd_stream_free while attached; it must end with sd_stream_detach. */
sd_status sd_stream_attach(sd_stream *s, sd_stream_mode mode, void *owner, sd_stream_detach_fn detach,
                           const char *fn);
/* The layer `owner` lets go of the stream (back to idle). No-op when owner is not attached. */
void sd_stream_detach(sd_stream *s, const void *owner);
/* The attached layer object of `mode`, or NULL (lock-free read). */
void *sd_stream_owner(const sd_stream *s, sd_stream_mode mode);
/* Takes the engine lock for frames driven as `mode`: SD_STREAM_SYNC (the synchronous calls; idle
 * becomes sync), SD_STREAM_ASYNC or SD_STREAM_GROUPED (the attached layer `owner`). Refused, unlocked,
 * when the mode forbids it. Every sd_stream_frame_* call below is made between enter and leave. */
sd_status sd_stream_enter(sd_stream *s, sd_stream_mode mode, const void *owner, const char *fn);
void sd_stream_leave(sd_stream *s);

/* ---------------------------------------------------------------- frames */

typedef enum sd_stream_in_kind {
    SD_IN_BYTES,  /* an RGB image at any size (fitted through `scratch`); the filter runs here */
    SD_IN_ACT,    /* [1,3,H,W] in [-1,1] in the activation dtype, already through sd_stream_similarity_skip
                   * (the async input thread); act NULL: the frame already in the engine again (padding) */
    SD_IN_LATENT, /* txt2img: latent noise drawn from the stream's generator */
} sd_stream_in_kind;

typedef struct sd_stream_in {
    sd_stream_in_kind kind;
    const sd_image *image; /* BYTES; must stay valid until the step ran */
    sd_image *scratch;     /* BYTES: where a frame of another size is fitted (reused) */
    const void *act;       /* ACT */
    bool queued;           /* ACT: a queued copy (page-locked source; sd_stream_frame_out synchronizes) */
} sd_stream_in;

typedef struct sd_stream_out {
    sd_image *image; /* the output image (allocated when it has another size); counted as a frame out */
    void *act;       /* or: img_out's activations into this buffer (the async layer counts at pull) */
    bool queued;     /* act: a queued copy; the backend is synchronized before return */
    double t_in;     /* image: when the frame came in (sd_time_now), for the latency; 0: not known */
} sd_stream_out;

/* Frame in: the kinds above -> prompt refresh -> similarity filter (*skipped: counted, nothing else
 * to do; the previous output stays) -> upload. Counts the frame in (BYTES). */
sd_status sd_stream_frame_in(sd_stream *s, const sd_stream_in *in, bool *skipped);
/* One stream step on what sd_stream_frame_in uploaded. */
sd_status sd_stream_frame_step(sd_stream *s);
/* Frame out (after a step, or a skipped frame: the previous output). */
sd_status sd_stream_frame_out(sd_stream *s, const sd_stream_out *out);
/* in -> step (unless skipped) -> out, the step's time recorded: one whole frame (sync and async). */
sd_status sd_stream_run_frame(sd_stream *s, const sd_stream_in *in, const sd_stream_out *out, bool *skipped);
/* The similarity filter on a frame as [-1,1] CHW floats (3*H*W): true = skip it (counted). The async
 * input thread calls it outside the engine lock: while a stream runs asynchronously the filter's state
 * belongs to that thread. */
bool sd_stream_similarity_skip(sd_stream *s, const float *chw, size_t n);

/* The stream batch step split around its one UNet call, for the stream group
 * (many streams' UNet rows in one call). pre: encodes the frame in (a dry run
 * on a planning ctx: an image frame), shifts the stock noise and returns the
 * stream batch X, the UNet input rows *Xin ([UB,C,h,w]) and their timesteps
 * *t (F32 [UB]); the stream's K/V cache (sd_stream_kv) holds their
 * conditioning (batch 1 or UB), *add the rows' SDXL added conditions
 * (text_embeds [UB,P], time_ids [UB,6]; empty tensors for other models), and
 * *res a stream with ControlNets gets their residuals for those rows (on ctx;
 * res->n_down 0 without nets). post: from the UNet output eps for those
 * rows, finishes the step exactly as a whole step would. Denoising-batch
 * streams only. Errors go to ctx. Between enter and leave. */
sd_tensor sd_stream_batch_pre(sd_stream *s, sd_ctx *ctx, sd_tensor *Xin, sd_tensor *t, sd_unet_added *add,
                              sd_unet_residuals *res);
void sd_stream_batch_post(sd_stream *s, sd_ctx *ctx, sd_tensor X, sd_tensor eps);
/* The stream's prompt K/V cache and its version (bumped whenever it is recomputed). Between enter and
 * leave. */
const sd_unet_kv *sd_stream_kv(const sd_stream *s, uint64_t *version);

/* ---------------------------------------------------------------- stats */

typedef enum sd_stream_event {
    SD_EV_IN,   /* a frame came in */
    SD_EV_SKIP, /* the similarity filter skipped one */
    SD_EV_DROP, /* a queue dropped one (live input) or it could not be delivered */
    SD_EV_OUT,  /* an output was delivered; t: when its frame came in (latency), 0 unknown */
    SD_EV_STEP, /* a stream step ran; t: when it started */
} sd_stream_event;
/* The one updater of the stream's sd_stream_stats (any thread; its own lock). */
void sd_stream_note(sd_stream *s, sd_stream_event e, double t);

#endif
