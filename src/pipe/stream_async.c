/* The asynchronous StreamDiffusion pipeline: sd_stream_push_frame /
 * pull_frame / flush. A thread-and-queue layer above the stream engine
 * (pipe/stream_layer.h): it attaches to the stream on the first call (mode
 * async; sd_stream_free calls its teardown hook), and its inference thread
 * runs each frame through the engine's one frame path (sd_stream_run_frame:
 * prompt refresh, upload, step, download); the stats are the engine's.
 *
 *   push ──Q0──> input thread ──Q1──> inference thread ──Q2──> output thread ──Q3──> pull
 *   (copy)       fit + [-1,1] CHW     one stream step per       device bytes ->
 *                + SSF decision       frame (engine locked)     uint8 RGB
 *
 * Every queue is bounded (queue_size waiting items) and built from slots
 * allocated once: Q1..Q3 slots when the pipeline starts (their size is the
 * stream's), Q0 slots grow to the size of the pushed frames (so there is no
 * allocation per frame once they have it). A slot is either free, being
 * filled by its producer, waiting in the queue, or being read by its
 * consumer; producers and consumers work on their slot outside the lock.
 *
 * Queue policy: with drop_old_frames (live input) a full Q0, Q1 or Q3 drops
 * its oldest waiting item (counted in frames_dropped), so push never blocks
 * and a slow consumer only sees the newest frames; without it (file input)
 * the producer waits, so nothing is lost. Q2 always waits (its consumer never
 * blocks in live mode).
 *
 * Frame ids. The inference thread keeps the frames in flight in a pending
 * list P (in input order). With the stream batch (use_denoising_batch, n =
 * len(t_index_list)) the step that takes frame j outputs the frame that
 * entered n-1 steps earlier: after appending, when P holds more than
 * D = n-1 frames that went through the UNet, the front one gets this step's
 * image (D = 0 for the sequential path). An SSF-skipped frame does not run a
 * step; it joins P and is emitted, with the previous output image, right
 * after the frame before it, so ids always come out in input order. Warm-up
 * outputs (nothing in front of them) are never emitted. sd_stream_flush()
 * records a target (every frame pushed so far); once the frames before it
 * have reached the inference thread, padding steps re-run the last frame
 * still in the engine's input tensor until none of them is left
 * in P (a skipped frame waits behind the frame in front of it, so the
 * padding also releases it). Padding outputs are never emitted. P is bounded: if skipped frames
 * would overflow it (a huge max_skip_frames on a static scene), a padding
 * step pushes the pipeline forward instead.
 *
 * Locking: one mutex `mu` (plus one condition variable) guards queues and
 * counters; the engine lock is taken only by the inference thread around one
 * frame (sd_stream_enter .. leave: upload, step, download), never while
 * waiting on a queue and never together with `mu`, so sd_stream_set_prompt
 * (which takes the engine lock) can be
 * called from any thread at any time without deadlock and takes effect on
 * the next step. The SSF state belongs to the input thread while the
 * pipeline runs (the synchronous frame calls are refused then). */
#include "pipe/stream_layer.h"

#include "io/image.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { K_REAL, K_SKIP, K_PAD };          /* pending entries / Q1 items */
enum { O_IMAGE, O_REPEAT };              /* Q2 items: new image or the previous one */

#define PCAP 1024                        /* pending-list capacity (frames) */
#define FLUSH_CAP 16

typedef struct slot {
    void *buf;
    size_t cap;
    int w, h;        /* Q0: size of the pushed frame */
    int64_t id;
    double t_push;
    int kind;
} slot;

typedef struct queue {
    slot *slots;
    int n;           /* depth + 2 slots */
    int depth;       /* waiting items at most */
    int *freel, nfree;
    int *ring, head, count; /* waiting slot indices, oldest at head */
    int filling;     /* reserved by producers, not committed yet */
    sd_backend *pinned; /* the slots are this backend's page-locked memory (fixed size), else NULL */
} queue;

typedef struct pending {
    int64_t id;
    double t_push;
    int kind;
} pending;

typedef struct sd_stream_async {
    sd_stream *s;
    sd_stream_desc d;           /* the stream's size, dtype, queue settings */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th_in, th_inf, th_out;
    bool started[3];
    bool stop;
    sd_status failed;
    char errmsg[512];
    bool live;
    queue q0, q1, q2, q3;
    size_t in_bytes, out_bytes; /* one frame in the activation dtype (Q1 / Q2 slots) */
    size_t rgb_bytes;           /* W*H*3 */
    int64_t next_id;            /* id of the next pushed frame */
    int64_t input_cur;          /* id the input thread works on, -1 when idle */
    int64_t flush_t[FLUSH_CAP]; /* flush targets: every id < t must come out */
    int nflush;
    int64_t last_flush;
    bool flushed;               /* flush called after the last push */
    int64_t outstanding;        /* pushed - pulled - dropped */
    size_t q0_bytes;            /* largest frame pushed so far */
    uint64_t slot_allocs;
    /* thread-private scratch */
    sd_rgb fit;                 /* input thread: W x H fitted frame */
    float *chw;                 /* input thread: [3,H,W] */
    float *outf;                /* output thread: F16 -> F32 scratch */
    sd_rgb last;                /* output thread: last image (for skipped frames) */
    void *inf;                  /* inference thread state */
} sd_stream_async;

/* ---------------------------------------------------------------- queues */

/* be: allocate the slots as page-locked memory when the backend has it (the slots the inference thread
 * copies to and from the device), NULL: plain memory */
static sd_status queue_init(queue *q, int depth, size_t bytes, uint64_t *allocs, sd_backend *be)
{
    memset(q, 0, sizeof *q);
    q->pinned = be && be->ops->host_alloc ? be : NULL;
    q->depth = depth;
    q->n = depth + 2;
    q->slots = sd_calloc((size_t)q->n, sizeof *q->slots);
    q->freel = sd_calloc((size_t)q->n, sizeof *q->freel);
    q->ring = sd_calloc((size_t)q->n, sizeof *q->ring);
    if (!q->slots || !q->freel || !q->ring)
        return SD_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < q->n; i++) {
        q->freel[q->nfree++] = q->n - 1 - i;
        if (bytes) {
            q->slots[i].buf = q->pinned ? q->pinned->ops->host_alloc(q->pinned, bytes) : sd_aligned_alloc(bytes);
            if (!q->slots[i].buf)
                return SD_ERR_OUT_OF_MEMORY;
            q->slots[i].cap = bytes;
            ++*allocs;
        }
    }
    return SD_OK;
}

static void queue_free(queue *q)
{
    for (int i = 0; q->slots && i < q->n; i++) {
        if (q->pinned && q->slots[i].buf)
            q->pinned->ops->host_free(q->pinned, q->slots[i].buf);
        else
            sd_aligned_free(q->slots[i].buf);
    }
    free(q->slots);
    free(q->freel);
    free(q->ring);
    memset(q, 0, sizeof *q);
}

static bool q_can_reserve(const queue *q) { return q->nfree > 0 && q->count + q->filling < q->depth; }

static int q_reserve(queue *q)
{
    q->filling++;
    return q->freel[--q->nfree];
}

static void q_commit(queue *q, int i)
{
    q->filling--;
    q->ring[(q->head + q->count) % q->n] = i;
    q->count++;
}

static void q_unreserve(queue *q, int i)
{
    q->filling--;
    q->freel[q->nfree++] = i;
}

static slot *q_front(queue *q) { return q->count ? &q->slots[q->ring[q->head]] : NULL; }

static int q_pop(queue *q)
{
    int i = q->ring[q->head];
    q->head = (q->head + 1) % q->n;
    q->count--;
    return i;
}

static void q_release(queue *q, int i) { q->freel[q->nfree++] = i; }

/* ---------------------------------------------------------------- helpers */

static sd_stream_async *get_async(const sd_stream *s) { return sd_stream_owner(s, SD_STREAM_ASYNC); }

/* Records the first failure of a worker thread (caller holds mu). */
static void set_failed(sd_stream_async *a, sd_status st, const char *what)
{
    if (a->failed != SD_OK)
        return;
    a->failed = st == SD_OK ? SD_ERR_INTERNAL : st;
    snprintf(a->errmsg, sizeof a->errmsg, "%s: %s", what, sd_last_error());
    pthread_cond_broadcast(&a->cv);
}

static sd_status report_failed(const sd_stream_async *a)
{
    return sd_fail(a->failed, "stream pipeline stopped after an error (%s); free the stream", a->errmsg);
}

/* Drops the oldest waiting item of q (live policy; caller holds mu). */
static void drop_oldest(sd_stream_async *a, queue *q)
{
    q_release(q, q_pop(q));
    sd_stream_note(a->s, SD_EV_DROP, 0);
    a->outstanding--;
}

/* Waits for a free slot of q (or drops the oldest waiting item when `drop`).
 * Returns the slot index, or -1 when stopping / failed. Caller holds mu. */
static int reserve_slot(sd_stream_async *a, queue *q, bool drop)
{
    for (;;) {
        if (a->stop || a->failed != SD_OK)
            return -1;
        if (q_can_reserve(q))
            return q_reserve(q);
        if (drop && q->count > 0) {
            drop_oldest(a, q);
            pthread_cond_broadcast(&a->cv);
            continue;
        }
        pthread_cond_wait(&a->cv, &a->mu);
    }
}

static void rgb_to_act(sd_dtype act, const float *chw, void *dst, size_t n)
{
    if (act == SD_F16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++)
            h[i] = sd_f32_to_f16(chw[i]);
    } else if (act == SD_BF16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++)
            h[i] = sd_f32_to_bf16(chw[i]);
    } else if (dst != chw) {
        memcpy(dst, chw, n * sizeof(float));
    }
}

/* ---------------------------------------------------------------- input thread */

static void *input_main(void *arg)
{
    sd_stream_async *a = arg;
    sd_stream *s = a->s;
    const sd_stream_desc *d = &a->d;
    const size_t n = (size_t)3 * d->H * d->W;
    const bool f32 = d->act == SD_F32;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && (a->q0.count == 0 || a->failed != SD_OK))
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        int i0 = q_pop(&a->q0);
        slot *in = &a->q0.slots[i0];
        a->input_cur = in->id;
        pthread_cond_broadcast(&a->cv); /* Q0 has room */
        int i1 = reserve_slot(a, &a->q1, a->live);
        if (i1 < 0) {
            q_release(&a->q0, i0);
            a->input_cur = -1;
            continue;
        }
        slot *o = &a->q1.slots[i1];
        pthread_mutex_unlock(&a->mu);

        sd_rgb frame = {in->w, in->h, in->buf};
        if (in->w != d->W || in->h != d->H) {
            sd_rgb_fit_into(&frame, &a->fit);
            frame = a->fit;
        }
        float *chw = f32 ? (float *)o->buf : a->chw;
        sd_rgb_to_chw(&frame, chw);
        bool skip = sd_stream_similarity_skip(s, chw, n);
        if (!skip)
            rgb_to_act(d->act, chw, o->buf, n);
        o->id = in->id;
        o->t_push = in->t_push;
        o->kind = skip ? K_SKIP : K_REAL;

        pthread_mutex_lock(&a->mu);
        q_release(&a->q0, i0);
        a->input_cur = -1;
        q_commit(&a->q1, i1);
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---------------------------------------------------------------- inference thread */

typedef struct infer {
    sd_stream_async *a;
    sd_stream *s;
    pending p[PCAP];
    int head, count; /* ring */
    int n_unet;      /* entries in P that went through the UNet (REAL + PAD) */
    int delay;       /* D */
    bool have_input; /* the engine holds a frame (padding possible) */
} infer;

static pending *p_at(infer *f, int k) { return &f->p[(f->head + k) % PCAP]; }

static void p_push(infer *f, pending e)
{
    *p_at(f, f->count) = e;
    f->count++;
    if (e.kind != K_SKIP)
        f->n_unet++;
}

static pending p_pop(infer *f)
{
    pending e = f->p[f->head];
    f->head = (f->head + 1) % PCAP;
    f->count--;
    if (e.kind != K_SKIP)
        f->n_unet--;
    return e;
}

/* Puts one output into Q2: O_IMAGE with the bytes already in slot `i2`
 * (reserved earlier), or O_REPEAT (reserves its own slot). Caller holds mu.
 * Returns false when stopping. */
static bool emit(infer *f, int i2, const pending *e, int kind)
{
    sd_stream_async *a = f->a;
    if (i2 < 0) {
        i2 = reserve_slot(a, &a->q2, false);
        if (i2 < 0)
            return false;
    }
    slot *o = &a->q2.slots[i2];
    o->id = e->id;
    o->t_push = e->t_push;
    o->kind = kind;
    q_commit(&a->q2, i2);
    pthread_cond_broadcast(&a->cv);
    return true;
}

/* Emits the skipped frames at the front of P (caller holds mu). */
static bool emit_skips(infer *f)
{
    while (f->count > 0 && p_at(f, 0)->kind == K_SKIP) {
        pending e = p_pop(f);
        if (!emit(f, -1, &e, O_REPEAT))
            return false;
    }
    return true;
}

/* One UNet step on the frame in Q1 slot `i1` (or, i1 < 0, a padding step on
 * the frame already in the engine), then the emissions it makes possible.
 * Caller holds mu; returns false when stopping or failed. */
static bool run_step(infer *f, int i1, const pending *e)
{
    sd_stream_async *a = f->a;
    sd_stream *s = f->s;
    p_push(f, *e);
    bool out_ready = f->n_unet > f->delay;          /* the front gets this step's image */
    bool want_image = out_ready && p_at(f, 0)->kind == K_REAL;
    int i2 = -1;
    if (want_image) {
        i2 = reserve_slot(a, &a->q2, false);          /* before the engine: never wait while holding it */
        if (i2 < 0)
            return false;
    }
    const void *src = i1 >= 0 ? a->q1.slots[i1].buf : NULL;
    void *dst = i2 >= 0 ? a->q2.slots[i2].buf : NULL;
    pthread_mutex_unlock(&a->mu);

    /* the engine's frame path: prompt refresh, upload, step, download; with pinned slots the upload, the
     * step and the download queue up in order, and one synchronize waits for all three (the slots are
     * released only after it) */
    sd_backend *be = a->d.m->be;
    bool queued = be->ops->upload_async && be->ops->download_async && a->q1.pinned && a->q2.pinned, skipped;
    sd_status st = sd_stream_enter(s, SD_STREAM_ASYNC, a, "stream step");
    if (st == SD_OK) {
        st = sd_stream_run_frame(s, &(sd_stream_in){.kind = SD_IN_ACT, .act = src, .queued = queued && src},
                                 &(sd_stream_out){.act = dst, .queued = queued}, &skipped);
        sd_stream_leave(s);
    }

    pthread_mutex_lock(&a->mu);
    if (st != SD_OK) {
        if (i2 >= 0)
            q_unreserve(&a->q2, i2);
        set_failed(a, st, "stream step");
        return false;
    }
    f->have_input = true;
    if (out_ready) {
        pending front = p_pop(f);
        if (front.kind == K_REAL) {
            if (!emit(f, i2, &front, O_IMAGE))
                return false;
        }
    }
    return emit_skips(f);
}

/* Whether every frame pushed before flush target t has reached P (caller holds mu). */
static bool flush_ready(sd_stream_async *a, int64_t t)
{
    slot *f1 = q_front(&a->q1), *f0 = q_front(&a->q0);
    return (!f1 || f1->id >= t) && (!f0 || f0->id >= t) && !(a->input_cur >= 0 && a->input_cur < t);
}

/* Whether P still holds a pushed frame (processed or skipped) from before flush target t. */
static bool has_frame_before(infer *f, int64_t t)
{
    for (int k = 0; k < f->count; k++)
        if (p_at(f, k)->kind != K_PAD && p_at(f, k)->id < t)
            return true;
    return false;
}

static void *infer_main(void *arg)
{
    infer *f = arg;
    sd_stream_async *a = f->a;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        if (a->failed != SD_OK) {
            pthread_cond_wait(&a->cv, &a->mu);
            continue;
        }
        if (a->nflush > 0 && flush_ready(a, a->flush_t[0])) {
            int64_t t = a->flush_t[0];
            a->nflush--;
            memmove(a->flush_t, a->flush_t + 1, sizeof(int64_t) * (size_t)a->nflush);
            bool ok = true;
            while (ok && f->have_input && has_frame_before(f, t)) {
                pending pad = {-1, 0, K_PAD};
                ok = run_step(f, -1, &pad);
            }
            continue;
        }
        if (a->q1.count > 0) {
            int i1 = q_pop(&a->q1);
            slot *it = &a->q1.slots[i1];
            pending e = {it->id, it->t_push, it->kind};
            pthread_cond_broadcast(&a->cv); /* Q1 has room */
            if (e.kind == K_SKIP) {
                if (f->count >= PCAP - 2) { /* P full of skipped frames: push the batch forward */
                    pending pad = {-1, 0, K_PAD};
                    run_step(f, -1, &pad);
                }
                if (f->count < PCAP - 1) {
                    p_push(f, e);
                    emit_skips(f);
                } else { /* only when stopping or failed */
                    sd_stream_note(a->s, SD_EV_DROP, 0);
                    a->outstanding--;
                }
            } else {
                run_step(f, i1, &e);
            }
            q_release(&a->q1, i1);
            pthread_cond_broadcast(&a->cv);
            continue;
        }
        pthread_cond_wait(&a->cv, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---------------------------------------------------------------- output thread */

static void *output_main(void *arg)
{
    sd_stream_async *a = arg;
    const sd_stream_desc *d = &a->d;
    const size_t n = (size_t)3 * d->H * d->W;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->q2.count == 0)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        int i2 = q_pop(&a->q2);
        slot *in = &a->q2.slots[i2];
        pthread_cond_broadcast(&a->cv);
        int i3 = reserve_slot(a, &a->q3, a->live);
        if (i3 < 0) {
            q_release(&a->q2, i2);
            continue;
        }
        slot *o = &a->q3.slots[i3];
        pthread_mutex_unlock(&a->mu);

        sd_rgb img = {d->W, d->H, o->buf};
        if (in->kind == O_IMAGE) {
            const float *chw = in->buf;
            if (d->act != SD_F32) {
                const uint16_t *h = in->buf;
                for (size_t k = 0; k < n; k++)
                    a->outf[k] = d->act == SD_F16 ? sd_f16_to_f32(h[k]) : sd_bf16_to_f32(h[k]);
                chw = a->outf;
            }
            sd_chw_to_rgb(chw, &img);
            memcpy(a->last.data, img.data, a->rgb_bytes);
        } else {
            memcpy(img.data, a->last.data, a->rgb_bytes);
        }
        o->id = in->id;
        o->t_push = in->t_push;

        pthread_mutex_lock(&a->mu);
        q_release(&a->q2, i2);
        q_commit(&a->q3, i3);
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---------------------------------------------------------------- start / stop */

static void async_destroy(sd_stream_async *a)
{
    if (!a)
        return;
    queue_free(&a->q0);
    queue_free(&a->q1);
    queue_free(&a->q2);
    queue_free(&a->q3);
    sd_rgb_free(&a->fit);
    sd_rgb_free(&a->last);
    free(a->chw);
    free(a->outf);
    free(a->inf);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* Stops and joins the threads that run (caller holds no lock). */
static void stop_threads(sd_stream_async *a)
{
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->started[0])
        pthread_join(a->th_in, NULL);
    if (a->started[1])
        pthread_join(a->th_inf, NULL);
    if (a->started[2])
        pthread_join(a->th_out, NULL);
}

/* The teardown hook registered with the engine (sd_stream_free calls it): threads stopped, the stream
 * let go, the pipeline freed. */
static void async_detach(void *owner, sd_stream *s)
{
    sd_stream_async *a = owner;
    stop_threads(a);
    sd_stream_detach(s, a);
    async_destroy(a);
}

/* Serializes the start of pipelines (two threads pushing the first frame of one stream get one). */
static pthread_mutex_t g_start = PTHREAD_MUTEX_INITIALIZER;

/* Creates the pipeline, attaches it to the stream (mode async: refused for a stream group's member) and
 * starts its threads (once). */
static sd_status ensure_async(sd_stream *s, sd_stream_async **out, const char *fn)
{
    sd_stream_async *a = get_async(s);
    if (a) {
        *out = a;
        return SD_OK;
    }
    sd_stream_desc d;
    sd_stream_describe(s, &d);
    if (d.fbs != 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "the async stream API takes one frame at a time; this stream has frame_buffer_size %d", d.fbs);
    pthread_mutex_lock(&g_start);
    a = get_async(s);
    if (a) {
        pthread_mutex_unlock(&g_start);
        *out = a;
        return SD_OK;
    }
    sd_status st = SD_OK;
    a = sd_calloc(1, sizeof *a);
    infer *f = a ? sd_calloc(1, sizeof *f) : NULL;
    if (!a || !f) {
        free(a);
        pthread_mutex_unlock(&g_start);
        return SD_ERR_OUT_OF_MEMORY;
    }
    a->s = s;
    a->d = d;
    a->inf = f;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    a->live = d.drop_old_frames;
    a->input_cur = -1;
    a->last_flush = -1;
    size_t n = (size_t)3 * d.H * d.W;
    a->in_bytes = n * sd_dtype_size(d.act);
    a->out_bytes = n * sd_dtype_size(d.act);
    a->rgb_bytes = n;
    int depth = d.queue_size;
    st = queue_init(&a->q0, depth, 0, &a->slot_allocs, NULL);
    if (st == SD_OK)
        st = queue_init(&a->q1, depth, a->in_bytes, &a->slot_allocs, d.m->be);
    if (st == SD_OK)
        st = queue_init(&a->q2, depth, a->out_bytes, &a->slot_allocs, d.m->be);
    if (st == SD_OK)
        st = queue_init(&a->q3, depth, a->rgb_bytes, &a->slot_allocs, NULL);
    if (st == SD_OK)
        st = sd_rgb_alloc(&a->fit, d.W, d.H);
    if (st == SD_OK)
        st = sd_rgb_alloc(&a->last, d.W, d.H);
    if (st == SD_OK) {
        memset(a->last.data, 0, a->rgb_bytes);
        a->chw = sd_malloc(n * sizeof(float));
        a->outf = sd_malloc(n * sizeof(float));
        if (!a->chw || !a->outf)
            st = SD_ERR_OUT_OF_MEMORY;
    }
    f->a = a;
    f->s = s;
    f->delay = d.denoising_batch ? d.n - 1 : 0;
    /* the threads first (they wait for frames), then the stream handed over (published to other callers) */
    if (st == SD_OK && pthread_create(&a->th_in, NULL, input_main, a) == 0)
        a->started[0] = true;
    if (st == SD_OK && a->started[0] && pthread_create(&a->th_inf, NULL, infer_main, f) == 0)
        a->started[1] = true;
    if (st == SD_OK && a->started[1] && pthread_create(&a->th_out, NULL, output_main, a) == 0)
        a->started[2] = true;
    if (st == SD_OK && !a->started[2])
        st = sd_fail(SD_ERR_INTERNAL, "could not start the stream threads: %s", strerror(errno));
    if (st == SD_OK) /* the engine's mode rule: refused for a stream group's member */
        st = sd_stream_attach(s, SD_STREAM_ASYNC, a, async_detach, fn);
    if (st != SD_OK) {
        stop_threads(a);
        async_destroy(a);
        pthread_mutex_unlock(&g_start);
        return st;
    }
    pthread_mutex_unlock(&g_start);
    *out = a;
    return SD_OK;
}

uint64_t sd_stream_async_slot_allocs(const sd_stream *s)
{
    sd_stream_async *a = get_async(s);
    if (!a)
        return 0;
    pthread_mutex_lock(&a->mu);
    uint64_t v = a->slot_allocs;
    pthread_mutex_unlock(&a->mu);
    return v;
}

/* ---------------------------------------------------------------- public API */

sd_status sd_stream_push_frame(sd_stream *s, const sd_image *in)
{
    if (!s || !in || !in->data || in->width <= 0 || in->height <= 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_push_frame: empty input frame");
    if (in->width > SD_IMAGE_MAX_SIDE || in->height > SD_IMAGE_MAX_SIDE ||
        (size_t)in->width * (size_t)in->height > SD_IMAGE_MAX_PIXELS)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_push_frame: frame %dx%d is larger than %d pixels a side",
                       in->width, in->height, SD_IMAGE_MAX_SIDE);
    sd_stream_async *a;
    SD_TRY(ensure_async(s, &a, __func__));
    size_t bytes = (size_t)in->width * in->height * 3;
    pthread_mutex_lock(&a->mu);
    if (bytes > a->q0_bytes) { /* a larger frame: grow every free input slot now (rare) */
        a->q0_bytes = bytes;
        for (int k = 0; k < a->q0.nfree; k++) {
            slot *f = &a->q0.slots[a->q0.freel[k]];
            if (f->cap >= bytes)
                continue;
            sd_aligned_free(f->buf);
            f->buf = sd_aligned_alloc(bytes);
            f->cap = f->buf ? bytes : 0;
            a->slot_allocs++;
        }
    }
    size_t grow_to = a->q0_bytes;
    int i = reserve_slot(a, &a->q0, a->live);
    if (i < 0) {
        sd_status st = a->failed != SD_OK ? report_failed(a)
                                          : sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_push_frame: the stream is stopping");
        pthread_mutex_unlock(&a->mu);
        return st;
    }
    slot *sl = &a->q0.slots[i];
    pthread_mutex_unlock(&a->mu);
    sd_status st = SD_OK;
    bool grew = false;
    if (sl->cap < grow_to) { /* grows to the largest frame size seen: once per slot with a steady input */
        grew = true;
        sd_aligned_free(sl->buf);
        sl->buf = sd_aligned_alloc(grow_to);
        sl->cap = sl->buf ? grow_to : 0;
        if (!sl->buf)
            st = SD_ERR_OUT_OF_MEMORY;
    }
    if (st == SD_OK)
        memcpy(sl->buf, in->data, bytes);
    sl->w = in->width;
    sl->h = in->height;
    double now = sd_time_now();
    pthread_mutex_lock(&a->mu);
    if (st != SD_OK) {
        q_unreserve(&a->q0, i);
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        return st;
    }
    a->slot_allocs += grew;
    sl->id = a->next_id++;
    sl->t_push = now;
    sl->kind = K_REAL;
    q_commit(&a->q0, i);
    sd_stream_note(s, SD_EV_IN, 0);
    a->outstanding++;
    a->flushed = false;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return SD_OK;
}

sd_status sd_stream_flush(sd_stream *s)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_flush: NULL stream");
    sd_stream_async *a;
    SD_TRY(ensure_async(s, &a, __func__));
    pthread_mutex_lock(&a->mu);
    sd_status st = SD_OK;
    if (a->failed != SD_OK) {
        st = report_failed(a);
    } else if (a->next_id > a->last_flush) {
        if (a->nflush == FLUSH_CAP)
            a->nflush--; /* coalesce with the newest target */
        a->flush_t[a->nflush++] = a->next_id;
        a->last_flush = a->next_id;
    }
    a->flushed = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return st;
}

sd_status sd_stream_pull_frame(sd_stream *s, sd_image *out, int64_t *frame_id, int timeout_ms)
{
    if (!s || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_pull_frame: NULL argument");
    sd_stream_async *a;
    SD_TRY(ensure_async(s, &a, __func__));
    struct timespec dl;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&a->mu);
    sd_status st = SD_OK;
    for (;;) {
        if (a->q3.count > 0)
            break;
        if (a->failed != SD_OK) {
            st = report_failed(a);
            break;
        }
        if (a->stop) {
            st = sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_pull_frame: the stream is stopping");
            break;
        }
        if (a->flushed && a->outstanding == 0) {
            st = sd_fail(SD_ERR_NOT_FOUND, "sd_stream_pull_frame: the stream is flushed and every pushed frame has "
                                           "been returned (or dropped); push more frames");
            break;
        }
        if (timeout_ms == 0) {
            st = sd_fail(SD_ERR_NOT_FOUND, "sd_stream_pull_frame: no output frame ready");
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&a->cv, &a->mu);
        } else if (pthread_cond_timedwait(&a->cv, &a->mu, &dl) == ETIMEDOUT && a->q3.count == 0) {
            st = sd_fail(SD_ERR_NOT_FOUND, "sd_stream_pull_frame: no output frame within %d ms", timeout_ms);
            break;
        }
    }
    if (st != SD_OK) {
        pthread_mutex_unlock(&a->mu);
        return st;
    }
    int i = q_pop(&a->q3);
    slot *sl = &a->q3.slots[i];
    pthread_mutex_unlock(&a->mu);
    if (!out->data || out->width != a->d.W || out->height != a->d.H) {
        sd_rgb_free(out);
        st = sd_rgb_alloc(out, a->d.W, a->d.H);
    }
    if (st == SD_OK)
        memcpy(out->data, sl->buf, a->rgb_bytes);
    pthread_mutex_lock(&a->mu);
    if (frame_id)
        *frame_id = sl->id;
    double t_push = sl->t_push;
    q_release(&a->q3, i);
    a->outstanding--;
    sd_stream_note(s, st == SD_OK ? SD_EV_OUT : SD_EV_DROP, t_push); /* a drop: it could not be delivered */
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return st;
}
