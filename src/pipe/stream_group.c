/* Stream groups: many streams on one model, their UNet calls batched.
 *
 * One tick takes at most one pending frame per member stream (at most
 * max_batch_frames frames, round robin start), runs each stream's first half
 * of the stream-batch step (sd_stream_batch_pre: encode, stock shift, UNet
 * input rows), concatenates every stream's UNet rows and timesteps, gathers
 * the members' prompt K/V caches into the group's per-row K/V cache
 * (sd_unet_kv_gather: batch-1 caches broadcast), runs ONE sd_unet_forward,
 * and hands each stream its output rows for the second half
 * (sd_stream_batch_post: guidance, consistency, RCFG stock, buffer, decode).
 * Everything per stream (noise, t_index_list, cfg, stock, buffer, similarity
 * filter, generators) stays in the stream, so a member's outputs equal what it
 * gives on its own.
 *
 * The group is a batch scheduler above the stream engine (pipe/stream_layer.h):
 * it attaches to each member (mode grouped; sd_stream_free calls its
 * teardown hook, which removes the stream), and each member's frame goes
 * through the engine's frame path (sd_stream_frame_in / frame_out, the
 * engine's stats) with the group's batched UNet call as its step.
 *
 * Memory: the group owns one arena for a tick and one K/V cache, planned with
 * a dry run for the worst tick (the max_batch_frames members with the most
 * UNet rows) whenever a member joins; a tick whose selection was not planned
 * yet is dry-run first (cheap: no compute) and grows the arena if needed. */
#include "pipe/stream_layer.h"

#include "core/memlimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_GROUP_MAX_STREAMS 256
#define SD_GROUP_GRAPHS 8 /* captured UNet row counts kept, least recently used replaced */

/* A captured UNet call (backends with graphs) for a fixed number of rows: the batched UNet is the same
 * graph whichever streams fill its rows, so a few row counts (powers of two) cover every batch make-up. */
typedef struct unet_graph {
    void *exec;
    int64_t rows;
    uint64_t weights_version;
    sd_tensor eps; /* its output in the UNet arena */
    uint64_t used; /* LRU stamp */
} unet_graph;

struct sd_stream_group {
    sd_model *m;
    int max_streams, max_batch;
    pthread_mutex_t mu; /* membership, stats and group calls */
    sd_stream **s;      /* members [max_streams] */
    sd_stream_desc *md; /* their descriptions, by member index */
    sd_stream_group_stats *mstats;
    int count;
    int rr; /* round-robin start of the next call */
    sd_stream_group_stats stats;
    /* one tick: ctx for the streams' own steps (encode, guidance, consistency, decode), uctx for the
     * batched UNet call (its input rows at the bottom, then its temporaries) */
    sd_ctx ctx;
    sd_ctx uctx;
    void *kv_mem;
    sd_unet_kv *kv;
    int64_t kv_rows;
    /* what the K/V cache holds now (skip the gather when unchanged) */
    sd_stream **kv_src;
    uint64_t *kv_ver;
    int kv_n;
    /* the last selection whose arena need was checked */
    sd_stream **plan_sel;
    int plan_n;
    /* scratch [max_batch] */
    sd_stream **sel;
    const sd_stream_desc **seld; /* their descriptions */
    int *sel_idx;
    int64_t *rows;
    const sd_unet_kv **srcs;
    sd_tensor *X;
    sd_tensor *Xin;
    sd_tensor *t;
    sd_unet_added *add; /* SDXL: the streams' added conditions */
    sd_unet_residuals *res; /* their ControlNet residuals (n_down 0: none) */
    /* a tick of streams with ControlNets: the residuals of all its UNet rows (uctx), each stream's copied in */
    sd_tensor res_down[SD_UNET_MAX_SKIPS];
    sd_unet_residuals gres;
    /* scratch [max_streams], by member index */
    bool *pending;
    bool *has;            /* the member has a frame in this call */
    const sd_image **fin; /* its input (NULL: txt2img) */
    sd_image **fout;      /* its output */
    /* captured UNet calls (CUDA graphs) by row count; invalid once uctx or the K/V cache move */
    unet_graph graphs[SD_GROUP_GRAPHS];
    uint64_t graph_clock;
    bool graphs_off; /* a capture failed once: eager from then on */
    bool pad;        /* pad the UNet rows without graphs too (SD_GROUP_PAD_ROWS=1: tests of the padding on the CPU) */
};

/* Graphs are used on a backend that has them, unless a capture failed. */
static bool use_graphs(const sd_stream_group *g) { return g->m->be->ops->capture_begin && !g->graphs_off; }

/* The UNet rows of a tick of `total` rows: with graphs the next power of two (a few captured sizes
 * serve every make-up; the extra rows compute nothing anyone reads), else exactly total. */
static int64_t padded_rows(const sd_stream_group *g, int64_t total)
{
    if (!use_graphs(g) && !g->pad)
        return total;
    int64_t r = 1;
    while (r < total)
        r *= 2;
    return r;
}

static double ema(double old, double v, uint64_t n) { return n <= 1 ? v : 0.9 * old + 0.1 * v; }

sd_status sd_stream_group_create(sd_model *m, int max_streams, int max_batch_frames, sd_stream_group **out)
{
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_create: NULL output");
    *out = NULL;
    if (!m)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_create: NULL model");
    if (max_streams < 1 || max_streams > SD_GROUP_MAX_STREAMS)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_create: max_streams %d out of range (1..%d)",
                       max_streams, SD_GROUP_MAX_STREAMS);
    if (max_batch_frames < 1 || max_batch_frames > max_streams)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "sd_stream_group_create: max_batch_frames %d out of range (1..max_streams = %d)",
                       max_batch_frames, max_streams);
    sd_stream_group *g = sd_calloc(1, sizeof *g);
    if (!g)
        return SD_ERR_OUT_OF_MEMORY;
    pthread_mutex_init(&g->mu, NULL);
    g->m = m;
    const char *pad = getenv("SD_GROUP_PAD_ROWS");
    g->pad = pad && !strcmp(pad, "1");
    g->max_streams = max_streams;
    g->max_batch = max_batch_frames;
    size_t ms = (size_t)max_streams, mb = (size_t)max_batch_frames;
    g->s = sd_calloc(ms, sizeof *g->s);
    g->md = sd_calloc(ms, sizeof *g->md);
    g->mstats = sd_calloc(ms, sizeof *g->mstats);
    g->pending = sd_calloc(ms, sizeof *g->pending);
    g->has = sd_calloc(ms, sizeof *g->has);
    g->fin = sd_calloc(ms, sizeof *g->fin);
    g->fout = sd_calloc(ms, sizeof *g->fout);
    g->seld = sd_calloc(mb, sizeof *g->seld);
    g->kv_src = sd_calloc(mb, sizeof *g->kv_src);
    g->kv_ver = sd_calloc(mb, sizeof *g->kv_ver);
    g->plan_sel = sd_calloc(mb, sizeof *g->plan_sel);
    g->sel = sd_calloc(mb, sizeof *g->sel);
    g->sel_idx = sd_calloc(mb, sizeof *g->sel_idx);
    g->rows = sd_calloc(mb, sizeof *g->rows);
    g->srcs = sd_calloc(mb, sizeof *g->srcs);
    g->X = sd_calloc(mb, sizeof *g->X);
    g->Xin = sd_calloc(mb, sizeof *g->Xin);
    g->t = sd_calloc(mb, sizeof *g->t);
    g->add = sd_calloc(mb, sizeof *g->add);
    g->res = sd_calloc(mb, sizeof *g->res);
    if (!g->res || !g->s || !g->mstats || !g->pending || !g->has || !g->fin || !g->fout || !g->md || !g->seld || !g->kv_src || !g->kv_ver || !g->plan_sel || !g->sel || !g->sel_idx ||
        !g->rows || !g->srcs || !g->X || !g->Xin || !g->t || !g->add) {
        sd_stream_group_free(g);
        return SD_ERR_OUT_OF_MEMORY;
    }
    *out = g;
    return SD_OK;
}

/* Drops every captured UNet call (the UNet arena or the K/V cache moved). */
static void graphs_clear(sd_stream_group *g)
{
    for (int i = 0; i < SD_GROUP_GRAPHS; i++)
        if (g->graphs[i].exec) {
            g->m->be->ops->graph_free(g->m->be, g->graphs[i].exec);
            g->graphs[i].exec = NULL;
        }
}

void sd_stream_group_free(sd_stream_group *g)
{
    if (!g)
        return;
    graphs_clear(g);
    for (int i = 0; i < g->count; i++)
        sd_stream_detach(g->s[i], g);
    sd_unet_kv_free(g->kv);
    if (g->kv_mem)
        g->m->be->ops->free(g->m->be, g->kv_mem);
    sd_ctx_free(&g->ctx);
    sd_ctx_free(&g->uctx);
    free(g->s);
    free(g->md);
    free(g->mstats);
    free(g->pending);
    free(g->has);
    free(g->fin);
    free(g->fout);
    free(g->seld);
    free(g->kv_src);
    free(g->kv_ver);
    free(g->plan_sel);
    free(g->sel);
    free(g->sel_idx);
    free(g->rows);
    free(g->srcs);
    free(g->X);
    free(g->Xin);
    free(g->t);
    free(g->add);
    free(g->res);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

int sd_stream_group_count(const sd_stream_group *g)
{
    if (!g)
        return 0;
    sd_stream_group *w = (sd_stream_group *)g;
    pthread_mutex_lock(&w->mu);
    int n = w->count;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* ---------------------------------------------------------------- one tick */

/* The residuals of a tick's `rows` UNet rows on uctx (g->gres), each stream's rows copied from its own
 * (sd_stream_batch_pre); rows past the streams' (padding) stay as they are: their outputs are not read. */
static void group_residuals(sd_stream_group *g, sd_ctx *ctx, sd_ctx *uctx, int k, int64_t rows)
{
    const sd_unet_residuals *r0 = &g->res[0];
    for (int i = 1; i < k && !r0->n_down; i++)
        r0 = &g->res[i];
    for (int j = 0; j <= r0->n_down; j++) {
        sd_tensor src = j < r0->n_down ? r0->down[j] : r0->mid;
        sd_tensor dst = sd_new4(uctx, rows, src.ne[1], src.ne[2], src.ne[3]);
        if (j < r0->n_down)
            g->res_down[j] = dst;
        else
            g->gres.mid = dst;
        int64_t r = 0;
        for (int i = 0; i < k; i++) {
            const sd_unet_residuals *ri = &g->res[i];
            if (ri->n_down) /* (a dry run may mix streams without nets: their rows stay as they are) */
                sd_copy_into(ctx, sd_view_rows(ctx, dst, r, g->rows[i]), j < ri->n_down ? ri->down[j] : ri->mid);
            r += g->rows[i];
        }
    }
    g->gres.down = g->res_down;
    g->gres.n_down = r0->n_down;
    if (!sd_ok(uctx))
        sd_ctx_fail(ctx, uctx->status, "stream group: %s", sd_last_error());
}

/* First half of a tick of the k streams in g->sel on ctx / uctx (both planning or both real): each
 * stream's first half (encode or, for a txt2img frame, the stream's latent; stock shift), then the UNet input at the bottom of uctx, rows rows
 * (>= the streams' total; the rest is padding), the streams' rows, timesteps and (SDXL) added conditions
 * copied in (*add: empty tensors for other models), and the K/V cache filled (gather: from the members'
 * caches) and set to rows rows. Returns the total. */
static int64_t tick_pre(sd_stream_group *g, sd_ctx *ctx, sd_ctx *uctx, int k, bool gather,
                        int64_t rows, sd_tensor *xin, sd_tensor *tt, sd_unet_added *add)
{
    int64_t total = 0;
    for (int i = 0; i < k && sd_ok(ctx); i++) {
        sd_stream *s = g->sel[i];
        uint64_t ver;
        g->X[i] = sd_stream_batch_pre(s, ctx, &g->Xin[i], &g->t[i], &g->add[i], &g->res[i]);
        g->rows[i] = g->Xin[i].ne[0];
        g->srcs[i] = sd_stream_kv(s, &ver);
        total += g->rows[i];
    }
    if (!sd_ok(ctx))
        return 0;
    rows = SD_MAX(rows, total);
    const sd_stream_desc *d0 = g->seld[0];
    if (!uctx->plan)
        sd_ctx_reset(uctx);
    *xin = sd_new4(uctx, rows, d0->C, d0->h, d0->w);
    *tt = sd_new(uctx, SD_F32, 1, &rows);
    *add = (sd_unet_added){0};
    if (g->add[0].text_embeds.ndim) {
        add->text_embeds = sd_new4(uctx, rows, g->add[0].text_embeds.ne[1], 0, 0);
        add->time_ids = sd_new(uctx, SD_F32, 2, (int64_t[]){rows, SD_UNET_TIME_IDS});
    }
    if (!sd_ok(uctx)) {
        sd_ctx_fail(ctx, uctx->status, "stream group: %s", sd_last_error());
        return 0;
    }
    int64_t r = 0;
    for (int i = 0; i < k; i++) {
        sd_copy_into(ctx, sd_view_rows(ctx, *xin, r, g->rows[i]), g->Xin[i]);
        sd_copy_into(ctx, sd_view_rows(ctx, *tt, r, g->rows[i]), g->t[i]);
        if (add->text_embeds.ndim) {
            sd_copy_into(ctx, sd_view_rows(ctx, add->text_embeds, r, g->rows[i]), g->add[i].text_embeds);
            sd_copy_into(ctx, sd_view_rows(ctx, add->time_ids, r, g->rows[i]), g->add[i].time_ids);
        }
        r += g->rows[i];
    }
    g->gres = (sd_unet_residuals){0};
    bool nets = false;
    for (int i = 0; i < k; i++)
        nets |= g->res[i].n_down > 0;
    if (nets) /* ControlNet streams (a tick holds only such, or none): their residuals, row by row */
        group_residuals(g, ctx, uctx, k, rows);
    if (gather)
        sd_unet_kv_gather(ctx, g->kv, g->srcs, g->rows, k);
    if (sd_ok(ctx) && sd_unet_kv_set_batch(g->kv, rows) != SD_OK)
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "stream group: %s", sd_last_error());
    return total;
}

/* Second half: each stream finishes its step from its rows of the UNet output. */
static void tick_post(sd_stream_group *g, sd_ctx *ctx, int k, sd_tensor eps)
{
    int64_t r = 0;
    for (int i = 0; i < k && sd_ok(ctx); i++) {
        sd_stream_batch_post(g->sel[i], ctx, g->X[i], sd_view_rows(ctx, eps, r, g->rows[i]));
        r += g->rows[i];
    }
}

/* The batched UNet call on xin/tt (already filled) as a replayed graph of that many rows, captured on
 * first use; *eps: its output. SD_ERR_UNSUPPORTED (graphs_off set): the capture failed, run it eagerly.
 * uctx holds just the input (tick_pre), so the capture sees the arena exactly as every later replay. */
typedef struct unet_rec {
    sd_stream_group *g;
    sd_tensor xin, tt, out;
    const sd_unet_added *add;
} unet_rec;

/* The batched UNet call (SDXL: with the rows' added conditions; a ControlNet tick: with g->gres). */
static sd_tensor group_unet(sd_stream_group *g, sd_ctx *uctx, sd_tensor xin, sd_tensor tt, const sd_unet_added *add)
{
    return sd_unet_forward_ex(uctx, g->m->unet, xin, tt, (sd_tensor){0}, NULL, g->kv,
                              add->text_embeds.ndim ? add : NULL, g->gres.n_down ? &g->gres : NULL);
}

static void record_unet(sd_ctx *uctx, void *user)
{
    unet_rec *r = user;
    r->out = group_unet(r->g, uctx, r->xin, r->tt, r->add);
}

static sd_status unet_graph_run(sd_stream_group *g, sd_tensor xin, sd_tensor tt, const sd_unet_added *add,
                                sd_tensor *eps)
{
    sd_backend *be = g->m->be;
    int64_t rows = xin.ne[0];
    unet_graph *e = NULL, *lru = &g->graphs[0];
    for (int i = 0; i < SD_GROUP_GRAPHS && !e; i++) {
        unet_graph *c = &g->graphs[i];
        if (c->exec && c->rows == rows && c->weights_version == g->m->weights_version)
            e = c;
        else if (!c->exec || (lru->exec && c->used < lru->used))
            lru = c;
    }
    if (!e) {
        e = lru;
        if (e->exec) {
            be->ops->graph_free(be, e->exec);
            e->exec = NULL;
        }
        unet_rec r = {g, xin, tt, {0}, add};
        void *exec;
        if (sd_ctx_capture(&g->uctx, record_unet, &r, &exec) != SD_OK) {
            fprintf(stderr, "streamdiff: stream group UNet graph not used (%s); running the ops one by one\n",
                    sd_last_error());
            g->graphs_off = true;
            return SD_ERR_UNSUPPORTED;
        }
        *e = (unet_graph){exec, rows, g->m->weights_version, r.out, 0};
    }
    e->used = ++g->graph_clock;
    *eps = e->eps;
    return be->ops->graph_launch(be, e->exec);
}

/* A whole tick (or a dry run on planning contexts); graph: the UNet call as a replayed graph (eager
 * when its capture fails). */
static void run_tick(sd_stream_group *g, sd_ctx *ctx, sd_ctx *uctx, int k, bool gather,
                     int64_t rows, bool graph)
{
    sd_tensor xin, tt, eps = {0};
    sd_unet_added add;
    tick_pre(g, ctx, uctx, k, gather, rows, &xin, &tt, &add);
    if (!sd_ok(ctx))
        return;
    sd_status st = graph && !g->gres.n_down ? unet_graph_run(g, xin, tt, &add, &eps) : SD_ERR_UNSUPPORTED;
    if (st == SD_ERR_UNSUPPORTED) {
        eps = group_unet(g, uctx, xin, tt, &add);
        st = uctx->status;
    }
    if (st != SD_OK) {
        sd_ctx_fail(ctx, st, "stream group: %s", sd_last_error());
        return;
    }
    tick_post(g, ctx, k, eps);
}

/* Makes the K/V cache hold `rows` rows at least (its content is lost). */
static sd_status ensure_kv(sd_stream_group *g, int64_t rows)
{
    if (rows <= g->kv_rows)
        return SD_OK;
    sd_backend *be = g->m->be;
    int64_t S = g->md[0].S;
    size_t bytes = sd_unet_kv_bytes(g->m->unet, rows, S, be->act_dtype);
    void *mem = be->ops->alloc(be, bytes ? bytes : 64);
    if (!mem)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "stream group: cannot allocate the %zu MiB K/V cache for %lld UNet rows",
                       bytes >> 20, (long long)rows);
    sd_unet_kv *kv;
    sd_status st = sd_unet_kv_init(&kv, g->m->unet, mem, rows, S, be->act_dtype);
    if (st != SD_OK) {
        be->ops->free(be, mem);
        return st;
    }
    /* padding rows are read (and their results discarded): give them defined values */
    void *zero = calloc(1, bytes ? bytes : 64);
    sd_status zs = zero ? be->ops->upload(be, mem, zero, bytes ? bytes : 64) : SD_ERR_OUT_OF_MEMORY;
    free(zero);
    if (zs != SD_OK) {
        sd_unet_kv_free(kv);
        be->ops->free(be, mem);
        return zs;
    }
    graphs_clear(g); /* they point into the old cache */
    sd_unet_kv_free(g->kv);
    if (g->kv_mem)
        be->ops->free(be, g->kv_mem);
    g->kv = kv;
    g->kv_mem = mem;
    g->kv_rows = rows;
    g->kv_n = 0;
    return SD_OK;
}

/* Dry-runs a tick of the k streams in g->sel and grows the arena and the
 * K/V cache to fit it. */
static sd_status plan_tick(sd_stream_group *g, int k)
{
    int64_t total = 0;
    for (int i = 0; i < k; i++)
        total += g->seld[i]->UB;
    int64_t rows = padded_rows(g, total);
    SD_TRY(ensure_kv(g, rows));
    sd_ctx plan, uplan;
    sd_ctx_init_plan(&plan, g->m->be);
    sd_ctx_init_plan(&uplan, g->m->be);
    run_tick(g, &plan, &uplan, k, true, rows, false);
    g->kv_n = 0; /* the dry run re-shaped the cache without filling it */
    SD_TRY(plan.status);
    if (plan.peak > g->ctx.cap || uplan.peak > g->uctx.cap) {
        size_t kvb = sd_unet_kv_bytes(g->m->unet, g->kv_rows, g->md[0].S, g->m->be->act_dtype);
        char what[160];
        snprintf(what, sizeof what, "a stream group tick (%d frames, %lld UNet rows at %dx%d)", k, (long long)rows,
                 g->md[0].W, g->md[0].H);
        SD_TRY(sd_mem_check(g->m->be->host_memory, SD_MAX(plan.peak, g->ctx.cap) + SD_MAX(uplan.peak, g->uctx.cap) + kvb,
                            what,
                            "use a smaller max_batch_frames or fewer t_index_list entries "
                            "(SD_MAX_ARENA_BYTES sets the limit)"));
    }
    sd_status st = SD_OK;
    if (plan.peak > g->ctx.cap) {
        sd_ctx_free(&g->ctx);
        st = sd_ctx_init(&g->ctx, g->m->be, plan.peak);
    }
    if (st == SD_OK && uplan.peak > g->uctx.cap) {
        graphs_clear(g); /* they point into the old UNet arena */
        sd_ctx_free(&g->uctx);
        st = sd_ctx_init(&g->uctx, g->m->be, uplan.peak);
    }
    if (st != SD_OK) {
        g->plan_n = 0;
        return st;
    }
    memcpy(g->plan_sel, g->sel, sizeof *g->sel * (size_t)k);
    g->plan_n = k;
    return SD_OK;
}

static bool same_selection(sd_stream *const *a, int na, sd_stream *const *b, int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* Plans the worst tick of the current members: the max_batch members with the most UNet rows. */
static sd_status plan_worst(sd_stream_group *g)
{
    int k = SD_MIN(g->count, g->max_batch);
    bool *taken = g->pending;
    memset(taken, 0, sizeof *taken * (size_t)g->count);
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int j = 0; j < g->count; j++)
            if (!taken[j] && (best < 0 || g->md[j].UB > g->md[best].UB))
                best = j;
        taken[best] = true;
        g->sel[i] = g->s[best];
        g->seld[i] = &g->md[best];
    }
    return k ? plan_tick(g, k) : SD_OK;
}

/* ---------------------------------------------------------------- members */

static int sd_stream_group_index_locked(const sd_stream_group *g, const sd_stream *s)
{
    int i = g->count - 1;
    while (i >= 0 && g->s[i] != s)
        i--;
    return i;
}

/* The teardown hook registered with each member (sd_stream_free calls it). */
static void group_detach(void *owner, sd_stream *s) { sd_stream_group_remove(owner, s); }

sd_status sd_stream_group_add(sd_stream_group *g, sd_stream *s)
{
    if (!g || !s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_add: NULL argument");
    sd_stream_desc d;
    sd_stream_describe(s, &d);
    if (d.m != g->m)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_add: the stream uses another model than the group; "
                                                "streams of different models cannot share a UNet call (use one group "
                                                "per model)");
    if (!d.denoising_batch || d.fbs != 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_add: group members need use_denoising_batch and "
                                                "frame_buffer_size 1 (this stream: %s, %d)",
                       d.denoising_batch ? "true" : "false", d.fbs);
    pthread_mutex_lock(&g->mu);
    sd_status st = SD_OK;
    if (g->count >= g->max_streams && sd_stream_group_index_locked(g, s) < 0)
        st = sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_add: the group is full (max_streams %d)",
                     g->max_streams);
    else if (g->count && (d.W != g->md[0].W || d.H != g->md[0].H))
        st = sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_add: the stream is %dx%d, the group's streams are "
                                              "%dx%d; streams of different sizes cannot share a UNet call (use one "
                                              "group per size)",
                     d.W, d.H, g->md[0].W, g->md[0].H);
    else /* the engine's mode rule: refused when async, or in a group already */
        st = sd_stream_attach(s, SD_STREAM_GROUPED, g, group_detach, "sd_stream_group_add");
    if (st == SD_OK) {
        g->s[g->count] = s;
        g->md[g->count] = d;
        memset(&g->mstats[g->count], 0, sizeof g->mstats[0]);
        g->count++;
        st = plan_worst(g);
        if (st != SD_OK) {
            g->count--;
            sd_stream_detach(s, g);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

sd_status sd_stream_group_remove(sd_stream_group *g, sd_stream *s)
{
    if (!g || !s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_remove: NULL argument");
    pthread_mutex_lock(&g->mu);
    int i = 0;
    while (i < g->count && g->s[i] != s)
        i++;
    if (i == g->count) {
        pthread_mutex_unlock(&g->mu);
        return sd_fail(SD_ERR_NOT_FOUND, "sd_stream_group_remove: the stream is not in this group");
    }
    memmove(&g->s[i], &g->s[i + 1], sizeof *g->s * (size_t)(g->count - i - 1));
    memmove(&g->md[i], &g->md[i + 1], sizeof *g->md * (size_t)(g->count - i - 1));
    memmove(&g->mstats[i], &g->mstats[i + 1], sizeof *g->mstats * (size_t)(g->count - i - 1));
    g->count--;
    sd_stream_detach(s, g);
    g->kv_n = 0; /* a later stream may get the same address */
    g->plan_n = 0;
    if (g->rr >= g->count)
        g->rr = 0;
    pthread_mutex_unlock(&g->mu);
    return SD_OK;
}

sd_status sd_stream_group_get_stats(const sd_stream_group *g, int index, sd_stream_group_stats *st)
{
    if (!g || !st)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_get_stats: NULL argument");
    sd_stream_group *w = (sd_stream_group *)g;
    pthread_mutex_lock(&w->mu);
    sd_status r = SD_OK;
    if (index == -1)
        *st = w->stats;
    else if (index >= 0 && index < w->count)
        *st = w->mstats[index];
    else
        r = sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_get_stats: index %d out of range (-1..%d)", index,
                    w->count - 1);
    pthread_mutex_unlock(&w->mu);
    return r;
}

/* ---------------------------------------------------------------- frames */

/* One tick over the k streams in g->sel (their members' indices in g->sel_idx). */
static uint64_t kv_version(const sd_stream *s)
{
    uint64_t v;
    sd_stream_kv(s, &v);
    return v;
}

static sd_status tick(sd_stream_group *g, int k, double t_call)
{
    double t0 = sd_time_now();
    if (!same_selection(g->sel, k, g->plan_sel, g->plan_n))
        SD_TRY(plan_tick(g, k));
    bool gather = false;
    if (k != g->kv_n)
        gather = true;
    for (int i = 0; i < k && !gather; i++)
        gather = g->kv_src[i] != g->sel[i] || g->kv_ver[i] != kv_version(g->sel[i]);
    int64_t total = 0;
    for (int i = 0; i < k; i++)
        total += g->seld[i]->UB;
    bool graph = use_graphs(g);
    for (int i = 0; i < k && graph; i++) /* ControlNet streams run eagerly (their inputs are host-made) */
        graph = g->seld[i]->use_graphs && !g->seld[i]->n_controls;
    int64_t padded = graph || g->pad ? padded_rows(g, total) : total;
    sd_ctx_reset(&g->ctx);
    g->kv_n = 0;
    run_tick(g, &g->ctx, &g->uctx, k, gather, padded, graph);
    SD_TRY(g->ctx.status);
    for (int i = 0; i < k; i++) {
        g->kv_src[i] = g->sel[i];
        g->kv_ver[i] = kv_version(g->sel[i]);
    }
    g->kv_n = k;

    double now = sd_time_now();
    int64_t rows = 0;
    for (int i = 0; i < k; i++)
        rows += g->rows[i];
    sd_stream_group_stats *gs = &g->stats;
    gs->ticks++;
    gs->frames += (uint64_t)k;
    gs->batch_frames = ema(gs->batch_frames, k, gs->ticks);
    gs->unet_rows = ema(gs->unet_rows, (double)rows, gs->ticks);
    gs->unet_rows_padded = ema(gs->unet_rows_padded, (double)padded, gs->ticks);
    gs->tick_ms = ema(gs->tick_ms, (now - t0) * 1e3, gs->ticks);
    for (int i = 0; i < k; i++) {
        sd_stream_group_stats *ms = &g->mstats[g->sel_idx[i]];
        ms->ticks++;
        ms->frames++;
        ms->batch_frames = ema(ms->batch_frames, k, ms->ticks);
        ms->unet_rows = ema(ms->unet_rows, (double)rows, ms->ticks);
        ms->unet_rows_padded = ema(ms->unet_rows_padded, (double)padded, ms->ticks);
        ms->tick_ms = ema(ms->tick_ms, (now - t0) * 1e3, ms->ticks);
        ms->latency_ms = ema(ms->latency_ms, (now - t_call) * 1e3, ms->ticks);
        sd_stream_note(g->sel[i], SD_EV_STEP, t0);
    }
    return SD_OK;
}

/* The frames of the members marked in g->has (inputs g->fin, outputs
 * g->fout). Holds g->mu. */
static sd_status run_frames(sd_stream_group *g, const char *fn)
{
    sd_status st = SD_OK;
    double t_call = sd_time_now();
    int n = g->count, locked = 0;
    for (; locked < n; locked++) { /* members in index order: the same order in every call */
        if (g->has[locked] && (st = sd_stream_enter(g->s[locked], SD_STREAM_GROUPED, g, fn)) != SD_OK) {
            st = sd_fail_context(st, "%s: stream %d", fn, locked);
            break;
        }
    }
    /* each frame through the engine's frame-in path: bytes (the similarity filter decides per stream) or
     * the stream's latent noise (txt2img) */
    int npend = 0, nframes = 0;
    for (int i = 0; i < n && st == SD_OK; i++) {
        g->pending[i] = false;
        if (!g->has[i])
            continue;
        bool skipped = false;
        nframes++;
        st = sd_stream_frame_in(g->s[i],
                                g->fin[i] ? &(sd_stream_in){.kind = SD_IN_BYTES, .image = g->fin[i], .scratch = g->fout[i]}
                                          : &(sd_stream_in){.kind = SD_IN_LATENT},
                                &skipped);
        if (st != SD_OK)
            st = sd_fail_context(st, "%s: stream %d", fn, i);
        g->pending[i] = st == SD_OK && !skipped;
        npend += g->pending[i];
        if (skipped)
            g->mstats[i].frames_skipped++;
    }
    if (st == SD_OK)
        g->stats.frames_skipped += (uint64_t)(nframes - npend);
    /* ticks: at most one frame per stream and max_batch frames each, round robin from g->rr */
    int start = g->rr % n;
    g->rr = (g->rr + 1) % g->count;
    int cur = start;
    while (st == SD_OK && npend > 0) {
        int k = 0;
        for (int step = 0; step < n && k < g->max_batch; step++) {
            int i = (cur + step) % n;
            /* one tick holds streams with ControlNets (their residuals join the UNet call) or streams without */
            if (g->pending[i] && (k == 0 || !g->md[i].n_controls == !g->seld[0]->n_controls)) {
                g->sel[k] = g->s[i];
                g->seld[k] = &g->md[i];
                g->sel_idx[k++] = i;
            }
        }
        for (int j = 0; j < k; j++)
            g->pending[g->sel_idx[j]] = false;
        cur = (g->sel_idx[k - 1] + 1) % n;
        npend -= k;
        st = tick(g, k, t_call);
    }
    for (int i = 0; i < n && st == SD_OK; i++) {
        if (!g->has[i])
            continue;
        st = sd_stream_frame_out(g->s[i], &(sd_stream_out){.image = g->fout[i], .t_in = t_call});
    }
    while (locked > 0)
        if (g->has[--locked])
            sd_stream_leave(g->s[locked]);
    return st;
}

static bool frame_ok(const sd_image *in) { return in->data && in->width > 0 && in->height > 0; }

/* Frame f of n for member streams[f] (in[f] NULL: txt2img). Holds g->mu. */
static sd_status run_members(sd_stream_group *g, sd_stream *const *streams, const sd_image *const *in,
                             sd_image *const *out, int n, const char *fn)
{
    if (n < 1 || n > g->count)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %d frames for a group of %d streams (give 1..count, at most one "
                                                "per member)",
                       fn, n, g->count);
    for (int i = 0; i < g->count; i++)
        g->has[i] = false;
    for (int f = 0; f < n; f++) {
        int i = 0;
        while (i < g->count && g->s[i] != streams[f])
            i++;
        if (i == g->count)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: stream %d is not a member of this group", fn, f);
        if (g->has[i])
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: stream %d appears twice (one frame per stream and call)", fn,
                           f);
        if (!out[f] || (in[f] && !frame_ok(in[f])))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: frame %d is empty or has no output", fn, f);
        g->has[i] = true;
        g->fin[i] = in[f];
        g->fout[i] = out[f];
    }
    return run_frames(g, fn);
}

sd_status sd_stream_group_img2img(sd_stream_group *g, const sd_image *const *in, sd_image *const *out, int n)
{
    if (!g || !in || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_img2img: NULL argument");
    pthread_mutex_lock(&g->mu);
    sd_status st = SD_OK;
    for (int i = 0; i < n && i < g->count && st == SD_OK; i++)
        if (!in[i]) /* NULL would mean txt2img to run_members */
            st = sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_img2img: frame %d is empty or has no output", i);
    if (st == SD_OK) /* frame i goes to member i */
        st = run_members(g, g->s, in, out, n, "sd_stream_group_img2img");
    pthread_mutex_unlock(&g->mu);
    return st;
}

sd_status sd_stream_group_run(sd_stream_group *g, sd_stream *const *streams, const sd_image *const *in,
                              sd_image *const *out, int n)
{
    if (!g || !streams || !in || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_group_run: NULL argument");
    pthread_mutex_lock(&g->mu);
    sd_status st = run_members(g, streams, in, out, n, "sd_stream_group_run");
    pthread_mutex_unlock(&g->mu);
    return st;
}

int sd_stream_group_index(const sd_stream_group *g, const sd_stream *s)
{
    if (!g || !s)
        return -1;
    sd_stream_group *w = (sd_stream_group *)g;
    pthread_mutex_lock(&w->mu);
    int i = sd_stream_group_index_locked(w, s);
    pthread_mutex_unlock(&w->mu);
    return i;
}
