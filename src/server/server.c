/* `streamdiff serve`: HTTP (page, /health, /metrics) and the WebSocket
 * endpoint /ws on libwebsockets, with one engine worker thread.
 *
 * Ownership: a client struct lives from the WebSocket handshake until the
 * connection closed AND the worker no longer uses it (busy). The event loop
 * owns the socket side (wsi, receive buffer), the worker owns the stream and
 * its images while busy; everything else is guarded by server.mu. The worker
 * never calls libwebsockets except lws_cancel_service() (thread-safe), which
 * wakes the loop to ask for writable callbacks.
 *
 * Memory per client is bounded: one input slot, one output slot (each
 * replaced by a newer frame: newest wins), at most TXT_Q queued text
 * messages, and one message being received (up to the configured limits). */
#include "server/server.h"

#include "io/image.h"
#include "models/lora.h" /* sd_lora_state_count: what a failed LoRA apply left fused */
#include "pipe/model.h"
#include "pipe/stream.h" /* live guidance / delta / similarity filter (see set_live) */
#include "server/assets.h"
#include "server/metrics.h"

#include <libwebsockets.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TXT_Q 16          /* queued text messages per client (oldest dropped beyond) */
#define STATS_PERIOD 1.0  /* seconds between stats messages of a client */
#define RX_CHUNK 65536    /* libwebsockets receive buffer */
#define HTTP_CHUNK 16384
#define SRV_MAX_GROUPS 8  /* stream groups (sizes batched at the same time) */

typedef struct client client;
struct client {
    client *next;
    struct lws *wsi; /* NULL once the connection closed (event loop only) */
    uint64_t id;
    bool closed, busy, active;
    bool reap; /* closed and idle with a stream: the worker frees it */
    uint64_t queue_seq;  /* arrival order (queue position) */
    uint64_t served_seq; /* least recently served goes first */
    double next_run_t;   /* frame-rate cap */
    srv_config cfg;      /* wanted settings */
    unsigned cfg_gen;    /* bumped by every accepted "config" */
    /* input slot */
    uint8_t *in;
    size_t in_len;
    double in_t;
    /* output slot (LWS_PRE bytes before the JPEG) */
    uint8_t *out;
    size_t out_len;
    double out_t0, out_ready;
    /* text messages (each LWS_PRE bytes before the text) */
    char *txt[TXT_Q];
    size_t txt_len[TXT_Q];
    int txt_head, txt_n;
    /* worker-owned while busy (or the event loop once closed and idle) */
    sd_stream *stream;
    bool stream_live; /* stream != NULL, as last seen under mu (for /metrics) */
    srv_config scfg;  /* the stream's settings */
    bool have_scfg;
    unsigned applied_gen;
    sd_image img, outimg;
    /* stats */
    uint64_t frames_in, frames_out, skipped, dropped;
    double lat_ema_ms, infer_ema_ms, stats_t;
    double batch_ema; /* frames in the engine calls that ran this client's frames (EMA) */
    uint64_t stats_frames;
    /* message being received (event loop) */
    uint8_t *rx;
    size_t rx_len, rx_cap, rx_total;
    bool rx_in_msg, rx_binary, rx_discard;
};

typedef struct pss {
    client *c;
    /* HTTP response being written */
    const unsigned char *body;
    size_t len, off;
    char *owned;
} pss;

typedef struct server {
    srv_options o;
    sd_model *m;
    sd_model_info info;
    struct lws_context *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop;
    client *clients;
    int n_clients, n_active;
    uint64_t next_id, queue_seq, served_seq;
    srv_metrics met;
    double start_t;
    /* LoRAs (model-wide): lora_on = the scales fused now (written by the worker only, under mu);
     * lora_req = the scales asked for last; a "lora" message bumps lora_gen, the worker applies
     * between frames until lora_done == lora_gen */
    srv_loras lora_on, lora_req;
    unsigned lora_gen, lora_done;
    uint64_t lora_by; /* the client that asked last: it gets the error when applying fails */
    /* stream groups (worker only): one per stream size, members are the clients' streams */
    struct {
        sd_stream_group *g;
        int w, h;
    } grp[SRV_MAX_GROUPS];
    int n_grp;
} server;

static volatile sig_atomic_t g_signal;
static struct lws_context *volatile g_ctx;

static double now_s(void) { return sd_time_now(); }

void srv_options_default(srv_options *o)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    srv_limits_default(&o->limits);
    o->max_sessions = 4;
    o->max_clients = 16;
    srv_config_default(&o->defaults, 512, 512);
}

/* ---------------------------------------------------------------- queues (hold mu) */

/* Copies `s` (NUL-terminated, may be NULL) into the client's text queue. */
static void srv_txt_push(server *S, client *c, const char *s)
{
    if (!s || c->closed)
        return;
    size_t n = strlen(s);
    char *b = malloc(LWS_PRE + n + 1);
    if (!b)
        return;
    memcpy(b + LWS_PRE, s, n + 1);
    if (c->txt_n == TXT_Q) { /* a client that does not read: drop the oldest */
        free(c->txt[c->txt_head]);
        c->txt_head = (c->txt_head + 1) % TXT_Q;
        c->txt_n--;
    }
    int k = (c->txt_head + c->txt_n) % TXT_Q;
    c->txt[k] = b;
    c->txt_len[k] = n;
    c->txt_n++;
    (void)S;
}

static void srv_txt_push_owned(server *S, client *c, char *s)
{
    srv_txt_push(S, c, s);
    free(s);
}

static void srv_push_error(server *S, client *c, const srv_error *e)
{
    S->met.bad_messages += strcmp(e->code, "engine") != 0;
    S->met.engine_errors += strcmp(e->code, "engine") == 0;
    srv_txt_push_owned(S, c, srv_error_json(e));
}

static void srv_client_free(client *c)
{
    if (!c)
        return;
    sd_stream_free(c->stream);
    sd_image_free(&c->img);
    sd_image_free(&c->outimg);
    free(c->in);
    free(c->out);
    for (int i = 0; i < c->txt_n; i++)
        free(c->txt[(c->txt_head + i) % TXT_Q]);
    free(c->rx);
    free(c);
}

static void srv_unlink_client(server *S, client *c)
{
    for (client **pp = &S->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            return;
        }
}

static int queue_position(server *S, const client *c)
{
    int pos = 1;
    for (client *o = S->clients; o; o = o->next)
        if (!o->closed && !o->active && o->queue_seq < c->queue_seq)
            pos++;
    return pos;
}

static char *srv_queued_json(server *S, client *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int pos = queue_position(S, c);
    char msg[160];
    snprintf(msg, sizeof msg, "The server is busy (%d clients are being served). You are number %d in the queue.",
             S->o.max_sessions, pos);
    cJSON_AddStringToObject(o, "type", "queued");
    cJSON_AddNumberToObject(o, "position", pos);
    cJSON_AddStringToObject(o, "message", msg);
    return srv_json_print(o);
}

/* A served client left: the longest-waiting queued client takes its place,
 * the others learn their new position. Event loop, holds mu. */
static void srv_promote_queued(server *S)
{
    if (atomic_load(&S->stop)) /* shutting down: nobody is promoted */
        return;
    while (S->n_active < S->o.max_sessions) {
        client *best = NULL;
        for (client *c = S->clients; c; c = c->next)
            if (!c->closed && !c->active && (!best || c->queue_seq < best->queue_seq))
                best = c;
        if (!best)
            break;
        best->active = true;
        S->n_active++;
        srv_txt_push(S, best, "{\"type\":\"active\",\"message\":\"Your turn: the server now processes your frames.\"}");
        if (best->wsi)
            lws_callback_on_writable(best->wsi);
        for (client *c = S->clients; c; c = c->next)
            if (!c->closed && !c->active) {
                srv_txt_push_owned(S, c, srv_queued_json(S, c));
                if (c->wsi)
                    lws_callback_on_writable(c->wsi);
            }
    }
    pthread_cond_signal(&S->cv);
}

static void srv_gauges_fill(server *S, srv_gauges *g)
{
    memset(g, 0, sizeof *g);
    for (client *c = S->clients; c; c = c->next) {
        if (!c->closed) {
            g->clients_active += c->active;
            g->clients_queued += !c->active;
        }
        g->input_queue += c->in != NULL;
        g->output_queue += c->out != NULL;
        g->text_queue += c->txt_n;
        g->streams += c->stream_live;
    }
    g->rss_bytes = srv_rss_bytes();
    g->uptime_s = now_s() - S->start_t;
}

/* ---------------------------------------------------------------- engine worker */

/* Guidance, delta and the similarity filter change live (validated by the protocol layer). */
static void set_live(sd_stream *s, const srv_config *c)
{
    sd_stream_set_guidance(s, c->guidance_scale, c->delta);
    sd_stream_set_similarity_filter(s, c->similarity_threshold, c->max_skip_frames);
}

static sd_status make_stream(server *S, const srv_config *c, sd_stream **out)
{
    sd_stream_params p;
    srv_config_stream_params(c, &p);
    p.use_taesd = S->info.has_taesd;
    return sd_stream_create(S->m, &p, out);
}

static void copy_stream_fields(srv_config *dst, const srv_config *src)
{
    memcpy(dst->t_index_list, src->t_index_list, sizeof dst->t_index_list);
    dst->n_t_index = src->n_t_index;
    dst->width = src->width;
    dst->height = src->height;
    dst->cfg_type = src->cfg_type;
    dst->seed = src->seed;
}

typedef struct job {
    srv_config cfg;
    unsigned gen;
    uint8_t *in;
    size_t in_len;
    double in_t, t0;
} job;

typedef struct result {
    char *msgs[4];
    int nmsg;
    srv_error errs[2];
    int nerr;
    uint8_t *out;
    size_t out_len;
    bool cfg_applied, reverted, created, skipped, dropped_input, frame;
    bool decode;       /* an img2img frame to decode (prepare -> decode) */
    bool run, txt;     /* a frame to run (prepare/decode -> run), txt2img */
    int batch;         /* frames in the engine call that ran it (1: alone) */
    sd_status st;      /* of the stream step */
    uint64_t skipped0; /* img2img: the stream's frames_skipped before the step */
    srv_config applied;
    double t_decode, t_infer, t_encode;
} result;

static void res_error(result *r, const char *code, const char *fmt, const char *detail)
{
    if (r->nerr < 2)
        srv_error_set(&r->errs[r->nerr++], code, fmt, detail);
}

/* "lora_scales": [..] (the scales in force) when the server has LoRAs. */
static void srv_add_lora_scales(server *S, cJSON *o)
{
    if (S->lora_on.n <= 0)
        return;
    cJSON *a = cJSON_AddArrayToObject(o, "lora_scales");
    for (int i = 0; a && i < S->lora_on.n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(round((double)S->lora_on.scale[i] * 1e4) / 1e4));
}

/* Applies the job's settings (new stream when needed) and gets its frame
 * ready: decoded into c->img (img2img) or nothing to prepare (txt2img).
 * Sets r->run when there is a frame to run. Runs without mu; touches only
 * the worker-owned part of the client. */
static void prepare(server *S, client *c, job *j, result *r)
{
    srv_config *want = &r->applied;
    *want = j->cfg;
    if (!c->stream || j->gen != c->applied_gen) {
        double t = now_s();
        unsigned diff = c->stream ? srv_config_diff(&c->scfg, want) : ~0u;
        bool recreate = !c->stream || (diff & SRV_CHANGE_STREAM);
        sd_status st = SD_OK;
        if (recreate) {
            sd_stream_free(c->stream); /* leaves its stream group */
            c->stream = NULL;
            st = make_stream(S, want, &c->stream);
            if (st != SD_OK) {
                res_error(r, "engine", "these stream settings do not work with this model (%s); the previous ones stay",
                          sd_last_error());
                copy_stream_fields(want, c->have_scfg ? &c->scfg : &S->o.defaults);
                r->reverted = true;
                st = make_stream(S, want, &c->stream);
            }
            if (st != SD_OK) { /* not even the previous settings work (out of memory?): wait for new ones */
                res_error(r, "engine", "no stream could be created: %s", sd_last_error());
                c->applied_gen = j->gen;
                free(j->in);
                j->in = NULL;
                return;
            }
            r->created = true;
        }
        if (recreate || (diff & SRV_CHANGE_PROMPT)) {
            if (sd_stream_set_prompt(c->stream, want->prompt, want->negative_prompt) != SD_OK)
                res_error(r, "engine", "the prompt could not be applied: %s", sd_last_error());
        }
        if (!recreate && (diff & SRV_CHANGE_LIVE))
            set_live(c->stream, want);
        c->scfg = *want;
        c->have_scfg = true;
        c->applied_gen = j->gen;
        r->cfg_applied = true;
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "type", "config");
            cJSON_AddItemToObject(o, "config", srv_config_json(want));
            cJSON_AddBoolToObject(o, "recreated", recreate);
            cJSON_AddBoolToObject(o, "reverted", r->reverted);
            cJSON_AddNumberToObject(o, "apply_ms", round((now_s() - t) * 1e4) / 10);
            srv_add_lora_scales(S, o); /* the worker is the only writer of lora_on: no lock needed here */
            r->msgs[r->nmsg++] = srv_json_print(o);
        }
    }
    if (j->in && want->mode == SRV_MODE_IMG2IMG) {
        r->decode = true; /* decode(): on its own, so that the slots' frames decode in parallel */
    } else if (want->mode == SRV_MODE_TXT2IMG) {
        if (j->in) { /* a frame that arrived before the switch to txt2img */
            free(j->in);
            j->in = NULL;
            r->dropped_input = true;
        }
        r->run = r->txt = true;
    }
}

/* The JPEG/PNG decode of a prepared img2img frame into c->img. Touches only this slot's client and
 * result: the worker runs the slots' decodes in parallel. */
static void decode(client *c, job *j, result *r)
{
    if (!r->decode)
        return;
    double t = now_s();
    sd_image_free(&c->img);
    sd_status st = sd_rgb_decode(j->in, j->in_len, "frame", &c->img);
    free(j->in);
    j->in = NULL;
    r->t_decode = now_s() - t;
    if (st != SD_OK) {
        res_error(r, "bad_frame", "the frame could not be decoded: %s", sd_last_error());
        return;
    }
    sd_stream_stats a;
    sd_stream_get_stats(c->stream, &a);
    r->skipped0 = a.frames_skipped;
    r->run = true;
}

static void step_done(result *r, sd_status st, double t_infer, int batch)
{
    r->st = st;
    r->t_infer = t_infer;
    r->batch = batch;
    if (st != SD_OK)
        res_error(r, "engine", "the stream step failed: %s", sd_last_error());
}

/* Runs the prepared frame on the client's stream alone. */
static void run_alone(client *c, result *r)
{
    double t = now_s();
    sd_status st = r->txt ? sd_stream_txt2img(c->stream, &c->outimg) : sd_stream_img2img(c->stream, &c->img, &c->outimg);
    step_done(r, st, now_s() - t, 1);
}

/* After the step: the error, or the output encoded as JPEG. */
static void finish(client *c, result *r)
{
    if (!r->run || r->st != SD_OK)
        return;
    sd_stream_stats b;
    sd_stream_get_stats(c->stream, &b);
    r->skipped = !r->txt && b.frames_skipped > r->skipped0;
    double t = now_s();
    uint8_t *jpg = NULL;
    size_t n = 0;
    sd_status st = sd_rgb_encode_jpeg(&c->outimg, r->applied.jpeg_quality, &jpg, &n);
    if (st == SD_OK) {
        r->out = malloc(LWS_PRE + n);
        if (r->out) {
            memcpy(r->out + LWS_PRE, jpg, n);
            r->out_len = n;
        }
    }
    free(jpg);
    r->t_encode = now_s() - t;
    if (!r->out)
        res_error(r, "engine", "the output could not be encoded: %s", st != SD_OK ? sd_last_error() : "out of memory");
    else
        r->frame = true;
}

static char *srv_stats_json(server *S, client *c, double now)
{
    double dt = now - c->stats_t;
    double fps = dt > 0 ? (double)(c->frames_out - c->stats_frames) / dt : 0;
    c->stats_t = now;
    c->stats_frames = c->frames_out;
    int active = 0, queued = 0;
    for (client *o = S->clients; o; o = o->next)
        if (!o->closed) {
            active += o->active;
            queued += !o->active;
        }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "type", "stats");
    cJSON_AddNumberToObject(o, "fps", round(fps * 100) / 100);
    cJSON_AddNumberToObject(o, "latency_ms", round(c->lat_ema_ms * 10) / 10);
    cJSON_AddNumberToObject(o, "inference_ms", round(c->infer_ema_ms * 10) / 10);
    cJSON_AddNumberToObject(o, "batch_frames", round(c->batch_ema * 100) / 100);
    cJSON_AddNumberToObject(o, "frames_in", (double)c->frames_in);
    cJSON_AddNumberToObject(o, "frames_out", (double)c->frames_out);
    cJSON_AddNumberToObject(o, "skipped", (double)c->skipped);
    cJSON_AddNumberToObject(o, "dropped", (double)c->dropped);
    cJSON_AddNumberToObject(o, "clients_active", active);
    cJSON_AddNumberToObject(o, "clients_queued", queued);
    cJSON_AddNumberToObject(o, "width", c->scfg.width);
    cJSON_AddNumberToObject(o, "height", c->scfg.height);
    cJSON_AddStringToObject(o, "mode", srv_mode_name(c->scfg.mode));
    srv_add_lora_scales(S, o);
    return srv_json_print(o);
}

/* Hands the worker's result to the client. Holds mu. */
static void deliver(server *S, client *c, job *j, result *r)
{
    double now = now_s();
    for (int i = 0; i < r->nmsg; i++)
        srv_txt_push(S, c, r->msgs[i]);
    for (int i = 0; i < r->nerr; i++)
        srv_push_error(S, c, &r->errs[i]);
    if (r->reverted && c->cfg_gen == j->gen) /* no newer settings: the client's view follows the stream */
        copy_stream_fields(&c->cfg, &r->applied);
    S->met.streams_created += r->created;
    if (r->dropped_input) {
        c->dropped++;
        S->met.frames_dropped++;
    }
    if (r->frame) {
        if (r->t_decode > 0)
            srv_hist_observe(&S->met.stage[SRV_STAGE_DECODE], r->t_decode);
        srv_hist_observe(&S->met.stage[SRV_STAGE_INFER], r->t_infer);
        srv_hist_observe(&S->met.stage[SRV_STAGE_ENCODE], r->t_encode);
        double ms = r->t_infer * 1e3;
        c->infer_ema_ms = c->infer_ema_ms > 0 ? 0.9 * c->infer_ema_ms + 0.1 * ms : ms;
        c->batch_ema = c->batch_ema > 0 ? 0.9 * c->batch_ema + 0.1 * r->batch : r->batch;
        if (r->skipped) {
            c->skipped++;
            S->met.frames_skipped++;
        }
        if (c->out) { /* the client has not taken the previous output: newest wins */
            free(c->out);
            c->dropped++;
            S->met.frames_dropped++;
        }
        c->out = r->out;
        c->out_len = r->out_len;
        c->out_t0 = j->in_t > 0 ? j->in_t : j->t0;
        c->out_ready = now;
        r->out = NULL;
        if (now - c->stats_t >= STATS_PERIOD)
            srv_txt_push_owned(S, c, srv_stats_json(S, c, now));
    }
}

/* Fuses the LoRA scales asked for last. Worker only, between frames: no stream
 * step runs meanwhile (the worker runs them all), and streams re-encode their
 * prompt on their next frame (the model's weights_version changed). Holds mu
 * on entry and exit, not while the weights are rewritten. */
static void srv_apply_loras(server *S)
{
    unsigned gen = S->lora_gen;
    uint64_t by = S->lora_by;
    int n = S->lora_req.n;
    sd_lora_spec spec[SRV_MAX_LORAS];
    for (int i = 0; i < n; i++)
        spec[i] = (sd_lora_spec){S->o.loras[i].path, S->lora_req.scale[i]};
    pthread_mutex_unlock(&S->mu);
    double t = now_s();
    sd_lora_options lo = {.allow_unmatched = S->o.lora_allow_unmatched};
    sd_status st = sd_model_apply_loras_ex(S->m, spec, n, &lo);
    srv_error e = {0};
    bool at_base = false;
    if (st != SD_OK) {
        srv_error_set(&e, "engine", "the LoRA scales could not be applied: %s", sd_last_error());
        /* an input error (a file changed on disk) keeps the previous set; a failure while
         * writing weights leaves the base weights (src/models/lora.h) */
        at_base = sd_lora_state_count(S->m->lora) == 0;
    }
    double ms = (now_s() - t) * 1e3;
    pthread_mutex_lock(&S->mu);
    S->lora_done = gen;
    for (int i = 0; i < n; i++)
        if (st == SD_OK || at_base)
            S->lora_on.scale[i] = st == SD_OK ? spec[i].scale : 0.0f;
    if (st != SD_OK && S->lora_gen == gen) /* nothing newer asked for: later partial updates start from what holds */
        memcpy(S->lora_req.scale, S->lora_on.scale, sizeof S->lora_req.scale);
    if (S->o.verbose)
        fprintf(stderr, "streamdiff serve: LoRA scales %s in %.1f ms\n", st == SD_OK ? "applied" : "failed", ms);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "type", "lora");
        cJSON_AddItemToObject(o, "loras", srv_loras_json(&S->lora_on));
        cJSON_AddBoolToObject(o, "ok", st == SD_OK);
        cJSON_AddNumberToObject(o, "apply_ms", round(ms * 10) / 10);
    }
    char *js = srv_json_print(o);
    for (client *c = S->clients; c; c = c->next) { /* the weights are shared: everyone learns the scales */
        if (c->closed)
            continue;
        if (st != SD_OK && c->id == by)
            srv_push_error(S, c, &e);
        srv_txt_push(S, c, js);
    }
    free(js);
}

/* ---------------------------------------------------------------- batching */

/* The stream group for streams of w x h (created on first use; groups that
 * lost all members are freed to make room). NULL: run alone. Worker only. */
static sd_stream_group *group_for(server *S, int w, int h)
{
    for (int i = 0; i < S->n_grp; i++)
        if (S->grp[i].w == w && S->grp[i].h == h)
            return S->grp[i].g;
    for (int i = 0; i < S->n_grp;) /* members leave when their stream is freed */
        if (sd_stream_group_count(S->grp[i].g) == 0) {
            sd_stream_group_free(S->grp[i].g);
            S->grp[i] = S->grp[--S->n_grp];
        } else {
            i++;
        }
    if (S->n_grp == SRV_MAX_GROUPS)
        return NULL;
    sd_stream_group *g = NULL;
    /* members: the active sessions' streams, plus streams of closed sessions until the worker frees them */
    int max_streams = SD_MIN(2 * S->o.max_sessions, 256);
    if (sd_stream_group_create(S->m, max_streams, S->o.max_batch, &g) != SD_OK) {
        if (S->o.verbose)
            fprintf(stderr, "streamdiff serve: no stream group for %dx%d (%s): streams run alone\n", w, h,
                    sd_last_error());
        return NULL;
    }
    S->grp[S->n_grp].g = g;
    S->grp[S->n_grp].w = w;
    S->grp[S->n_grp].h = h;
    S->n_grp++;
    return g;
}

typedef struct slot {
    client *c;
    job j;
    result r;
    sd_stream_group *g; /* the group it runs in, NULL: alone */
} slot;

/* Runs the prepared frames of the n slots: streams of one size share one
 * batched UNet call (their stream group), the others run alone. Returns the
 * number of engine calls. Worker only, without mu. */
static uint64_t run_slots(server *S, slot *sl, int n, sd_stream **fs, const sd_image **fin, sd_image **fout)
{
    for (int i = 0; i < n; i++) {
        sd_stream *s = sl[i].c->stream;
        sl[i].g = NULL;
        if (!sl[i].r.run || S->o.max_batch <= 1)
            continue;
        sd_stream_group *g = group_for(S, sl[i].r.applied.width, sl[i].r.applied.height);
        if (g && sd_stream_group_index(g, s) < 0 && sd_stream_group_add(g, s) != SD_OK) {
            if (S->o.verbose)
                fprintf(stderr, "streamdiff serve: client %llu runs alone: %s\n", (unsigned long long)sl[i].c->id,
                        sd_last_error());
            g = NULL;
        }
        sl[i].g = g;
    }
    uint64_t calls = 0;
    for (int i = 0; i < n; i++) {
        if (!sl[i].r.run || sl[i].r.batch)
            continue;
        sd_stream_group *g = sl[i].g;
        int k = 0;
        for (int q = i; q < n && g; q++)
            if (sl[q].r.run && sl[q].g == g) {
                fs[k] = sl[q].c->stream;
                fin[k] = sl[q].r.txt ? NULL : &sl[q].c->img;
                fout[k++] = &sl[q].c->outimg;
            }
        calls++;
        if (k <= 1) { /* alone, or the only frame of its group this time */
            run_alone(sl[i].c, &sl[i].r);
            continue;
        }
        double t = now_s();
        sd_status st = sd_stream_group_run(g, fs, fin, fout, k);
        t = now_s() - t;
        for (int q = i; q < n; q++)
            if (sl[q].r.run && sl[q].g == g)
                step_done(&sl[q].r, st, t, k);
    }
    return calls;
}

static void *srv_worker_main(void *arg)
{
    server *S = arg;
    int nb = S->o.max_batch > 1 ? S->o.max_batch : 1;
    slot *sl = calloc((size_t)nb, sizeof *sl);
    sd_stream **fs = calloc((size_t)nb, sizeof *fs);
    const sd_image **fin = calloc((size_t)nb, sizeof *fin);
    sd_image **fout = calloc((size_t)nb, sizeof *fout);
    if (!sl || !fs || !fin || !fout) {
        fprintf(stderr, "streamdiff serve: out of memory starting the engine worker\n");
        atomic_store(&S->stop, true);
        lws_cancel_service(S->ctx);
        free(sl);
        free(fs);
        free(fin);
        free(fout);
        return NULL;
    }
    pthread_mutex_lock(&S->mu);
    while (!atomic_load(&S->stop)) {
        double now = now_s(), wake = 0;
        if (S->o.max_runtime_s > 0 && now - S->start_t >= S->o.max_runtime_s) {
            atomic_store(&S->stop, true);
            lws_cancel_service(S->ctx);
            break;
        }
        if (S->lora_gen != S->lora_done) {
            srv_apply_loras(S);
            lws_cancel_service(S->ctx); /* the event loop sends the "lora" messages */
            continue;
        }
        client *reap = NULL;
        for (client *o = S->clients; o && !reap; o = o->next)
            if (o->reap && !o->busy)
                reap = o;
        if (reap) { /* a closed client's stream (srv_ws_closed left it to the worker) */
            srv_unlink_client(S, reap);
            pthread_mutex_unlock(&S->mu);
            srv_client_free(reap);
            pthread_mutex_lock(&S->mu);
            continue;
        }
        /* this tick: up to max_batch clients with work, the least recently served first */
        int n = 0;
        for (;;) {
            client *c = NULL;
            for (client *o = S->clients; o; o = o->next) {
                if (o->closed || o->busy || !o->active)
                    continue;
                bool cfg = o->cfg_gen != o->applied_gen;
                bool work = cfg || (o->stream && !o->out && (o->cfg.mode == SRV_MODE_TXT2IMG || o->in));
                if (!work)
                    continue;
                if (!cfg && now < o->next_run_t) {
                    if (wake == 0 || o->next_run_t < wake)
                        wake = o->next_run_t;
                    continue;
                }
                if (!c || o->served_seq < c->served_seq)
                    c = o;
            }
            if (!c || n == nb)
                break;
            slot *q = &sl[n++];
            c->busy = true;
            c->served_seq = ++S->served_seq;
            q->c = c;
            q->j.cfg = c->cfg;
            q->j.gen = c->cfg_gen;
            q->j.in = c->in;
            q->j.in_len = c->in_len;
            q->j.in_t = c->in ? c->in_t : 0;
            q->j.t0 = now;
            c->in = NULL;
            if (q->j.in)
                srv_hist_observe(&S->met.stage[SRV_STAGE_QUEUE], now - q->j.in_t);
            double cap = S->o.limits.max_fps; /* the lower of the server's and the client's cap */
            if (c->cfg.max_fps > 0 && (cap <= 0 || c->cfg.max_fps < cap))
                cap = c->cfg.max_fps;
            if (cap > 0)
                c->next_run_t = now + 1.0 / cap;
        }
        if (n == 0) {
            if (S->o.max_runtime_s > 0) {
                double end = S->start_t + S->o.max_runtime_s;
                wake = wake == 0 || end < wake ? end : wake;
            }
            if (wake > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                double d = wake - now;
                d = d < 0 ? 0 : d > 3600 ? 3600 : d;
                long long ns = ts.tv_nsec + (long long)(d * 1e9);
                ts.tv_sec += (time_t)(ns / 1000000000);
                ts.tv_nsec = (long)(ns % 1000000000);
                pthread_cond_timedwait(&S->cv, &S->mu, &ts);
            } else {
                pthread_cond_wait(&S->cv, &S->mu);
            }
            continue;
        }
        pthread_mutex_unlock(&S->mu);

        for (int i = 0; i < n; i++) {
            memset(&sl[i].r, 0, sizeof sl[i].r);
            prepare(S, sl[i].c, &sl[i].j, &sl[i].r);
        }
        /* JPEG decode and encode of the tick's frames use the cores in parallel (a GPU tick of 8
         * streams would otherwise wait for 8 decodes and 8 encodes one after another) */
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
        for (int i = 0; i < n; i++)
            decode(sl[i].c, &sl[i].j, &sl[i].r);
        uint64_t calls = run_slots(S, sl, n, fs, fin, fout), frames = 0;
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
        for (int i = 0; i < n; i++)
            finish(sl[i].c, &sl[i].r);
        for (int i = 0; i < n; i++)
            frames += sl[i].r.run;

        pthread_mutex_lock(&S->mu);
        S->met.engine_calls += calls;
        S->met.engine_frames += frames;
        for (int i = 0; i < n; i++) {
            client *c = sl[i].c;
            result *r = &sl[i].r;
            c->busy = false;
            c->stream_live = c->stream != NULL;
            if (c->closed) {
                srv_unlink_client(S, c);
                pthread_mutex_unlock(&S->mu);
                srv_client_free(c);
                pthread_mutex_lock(&S->mu);
            } else {
                deliver(S, c, &sl[i].j, r);
            }
            for (int m = 0; m < r->nmsg; m++)
                free(r->msgs[m]);
            free(r->out);
            free(sl[i].j.in);
        }
        lws_cancel_service(S->ctx); /* the event loop asks for writable callbacks */
    }
    pthread_mutex_unlock(&S->mu);
    free(sl);
    free(fs);
    free(fin);
    free(fout);
    return NULL;
}

/* ---------------------------------------------------------------- HTTP */

static const char *mime_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const struct {
        const char *ext, *mime;
    } k[] = {{".html", "text/html; charset=utf-8"},      {".js", "text/javascript; charset=utf-8"},
             {".css", "text/css; charset=utf-8"},        {".json", "application/json"},
             {".png", "image/png"},                      {".svg", "image/svg+xml"},
             {".ico", "image/x-icon"},                   {".txt", "text/plain; charset=utf-8"},
             {".md", "text/plain; charset=utf-8"}};
    for (size_t i = 0; dot && i < SD_ARRAY_LEN(k); i++)
        if (!strcmp(dot, k[i].ext))
            return k[i].mime;
    return "application/octet-stream";
}

static int http_respond(struct lws *wsi, pss *p, unsigned status, const char *mime, const void *body, size_t len,
                        char *owned)
{
    unsigned char buf[LWS_PRE + 1536], *start = buf + LWS_PRE, *q = start, *end = buf + sizeof buf - 1;
    free(p->owned);
    p->owned = owned;
    p->body = body;
    p->len = len;
    p->off = 0;
    static const char *const hdrs[][2] = {
        {"x-content-type-options:", "nosniff"},
        {"cache-control:", "no-store"},
        {"referrer-policy:", "no-referrer"},
        {"x-frame-options:", "DENY"},
        {"content-security-policy:",
         "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
         "connect-src 'self' ws: wss:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"},
    };
    if (lws_add_http_common_headers(wsi, status, mime, len, &q, end))
        return 1;
    for (size_t i = 0; i < SD_ARRAY_LEN(hdrs); i++)
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)hdrs[i][0], (const unsigned char *)hdrs[i][1],
                                        (int)strlen(hdrs[i][1]), &q, end))
            return 1;
    if (lws_finalize_write_http_header(wsi, start, &q, end))
        return 1;
    if (len == 0) {
        free(p->owned);
        p->owned = NULL;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_text(struct lws *wsi, pss *p, unsigned status, const char *text)
{
    return http_respond(wsi, p, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

static int srv_http_write(struct lws *wsi, pss *p)
{
    if (!p->body)
        return 0;
    unsigned char buf[LWS_PRE + HTTP_CHUNK];
    size_t n = SD_MIN((size_t)HTTP_CHUNK, p->len - p->off);
    memcpy(buf + LWS_PRE, p->body + p->off, n);
    bool final = p->off + n == p->len;
    if (lws_write(wsi, buf + LWS_PRE, n, final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return 1;
    p->off += n;
    if (!final) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    free(p->owned);
    p->owned = NULL;
    p->body = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static bool token_equal(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < na; i++)
        d |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return d == 0;
}

/* ?token= on the URL, or "Authorization: Bearer <token>". */
static bool srv_token_ok(server *S, struct lws *wsi)
{
    if (!S->o.token || !*S->o.token)
        return true;
    char buf[512];
    const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof buf);
    if (v && token_equal(v, S->o.token))
        return true;
    char auth[512];
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 7 && !strncmp(auth, "Bearer ", 7) &&
        token_equal(auth + 7, S->o.token))
        return true;
    return false;
}

static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static int srv_http_request(server *S, struct lws *wsi, pss *p, const char *uri)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return http_text(wsi, p, 405, "405 method not allowed: use GET\n");
    if (!uri)
        uri = "/";
    if (!strcmp(uri, "/health")) {
        pthread_mutex_lock(&S->mu);
        srv_gauges g;
        srv_gauges_fill(S, &g);
        pthread_mutex_unlock(&S->mu);
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "status", "ok");
            cJSON_AddStringToObject(o, "version", sd_version());
            cJSON_AddStringToObject(o, "model", S->o.model_name ? S->o.model_name : "");
            cJSON_AddBoolToObject(o, "tiny_model", S->o.tiny_model);
            cJSON_AddNumberToObject(o, "clients_active", g.clients_active);
            cJSON_AddNumberToObject(o, "clients_queued", g.clients_queued);
            cJSON_AddNumberToObject(o, "uptime_s", round(g.uptime_s * 10) / 10);
        }
        char *s = srv_json_print(o);
        if (!s)
            return http_text(wsi, p, 500, "500 out of memory\n");
        return http_respond(wsi, p, 200, "application/json", s, strlen(s), s);
    }
    if (!strcmp(uri, "/metrics")) {
        if (!srv_token_ok(S, wsi))
            return http_text(wsi, p, 401, "401 unauthorized: pass ?token= or an Authorization: Bearer header\n");
        pthread_mutex_lock(&S->mu);
        srv_gauges g;
        srv_gauges_fill(S, &g);
        srv_metrics m = S->met;
        pthread_mutex_unlock(&S->mu);
        char *s = srv_metrics_render(&m, &g);
        if (!s)
            return http_text(wsi, p, 500, "500 out of memory\n");
        return http_respond(wsi, p, 200, "text/plain; version=0.0.4; charset=utf-8", s, strlen(s), s);
    }
    if (!strcmp(uri, "/ws"))
        return http_text(wsi, p, 400, "400 this is the WebSocket endpoint: connect with a WebSocket client\n");
    const char *name = uri[0] == '/' ? uri + 1 : uri;
    if (!*name)
        name = "index.html";
    if (!plain_name(name))
        return http_text(wsi, p, 404, "404 not found\n");
    if (S->o.web_dir) {
        char *path = sd_path_join(S->o.web_dir, name), *data = NULL;
        size_t len = 0;
        sd_status st = path && sd_file_exists(path) ? sd_read_file(path, (size_t)8 << 20, &data, &len) : SD_ERR_NOT_FOUND;
        free(path);
        if (st != SD_OK)
            return http_text(wsi, p, 404, "404 not found\n");
        return http_respond(wsi, p, 200, mime_of(name), data, len, data);
    }
    for (size_t i = 0; i < srv_n_assets; i++)
        if (!strcmp(srv_assets[i].name, name))
            return http_respond(wsi, p, 200, mime_of(name), srv_assets[i].data, srv_assets[i].len, NULL);
    return http_text(wsi, p, 404, "404 not found\n");
}

/* ---------------------------------------------------------------- WebSocket */

/* Origin must name the Host the page came from (no cross-site pages driving
 * the local engine), unless --any-origin. Clients without Origin (non-browser)
 * pass. */
static bool origin_ok(server *S, struct lws *wsi)
{
    if (S->o.any_origin)
        return true;
    char origin[256], host[256];
    int no = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (no <= 0)
        return lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0;
    if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0)
        return false;
    const char *o = strstr(origin, "://");
    if (!o)
        return false;
    o += 3;
    size_t n = strcspn(o, "/");
    return strlen(host) == n && !strncmp(o, host, n);
}

static int srv_ws_filter(server *S, struct lws *wsi)
{
    char uri[64];
    int n = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    bool ok = n > 0 && !strcmp(uri, "/ws") && srv_token_ok(S, wsi) && origin_ok(S, wsi);
    pthread_mutex_lock(&S->mu);
    if (ok && S->n_clients >= S->o.max_clients)
        ok = false;
    if (!ok)
        S->met.rejected++;
    pthread_mutex_unlock(&S->mu);
    if (!ok && S->o.verbose)
        fprintf(stderr, "streamdiff serve: refused a WebSocket connection (path, token, origin or client limit)\n");
    return ok ? 0 : -1;
}

static char *srv_hello_json(server *S, client *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "type", "hello");
    cJSON_AddStringToObject(o, "server", "streamdiff");
    cJSON_AddStringToObject(o, "version", sd_version());
    cJSON_AddNumberToObject(o, "client_id", (double)c->id);
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    if (m) {
        cJSON_AddStringToObject(m, "name", S->o.model_name ? S->o.model_name : "");
        cJSON_AddStringToObject(m, "arch", S->info.arch ? S->info.arch : "");
        cJSON_AddNumberToObject(m, "native_size", S->info.native_size);
        cJSON_AddBoolToObject(m, "taesd", S->info.has_taesd);
        cJSON_AddBoolToObject(m, "tiny", S->o.tiny_model);
    }
    if (S->o.tiny_model)
        cJSON_AddStringToObject(
            o, "notice",
            "This server runs on the bundled tiny test model (random weights): the output is noise, not pictures. "
            "For real images download weights once, e.g. `huggingface-cli download stabilityai/sd-turbo` and "
            "`huggingface-cli download madebyollin/taesd`, then start `make run` again (or set STREAMDIFF_MODEL to a "
            "diffusers folder or .safetensors file).");
    cJSON_AddItemToObject(o, "limits", srv_limits_json(&S->o.limits));
    cJSON_AddItemToObject(o, "config", srv_config_json(&c->cfg));
    cJSON_AddItemToObject(o, "loras", srv_loras_json(&S->lora_on));
    cJSON_AddStringToObject(o, "state", c->active ? "active" : "queued");
    cJSON_AddNumberToObject(o, "max_sessions", S->o.max_sessions);
    cJSON_AddNumberToObject(o, "max_batch", S->o.max_batch);
    return srv_json_print(o);
}

static int srv_ws_open(server *S, struct lws *wsi, pss *p)
{
    client *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->wsi = wsi;
    c->cfg = S->o.defaults;
    c->cfg_gen = 1;
    double now = now_s();
    c->stats_t = now;
    pthread_mutex_lock(&S->mu);
    c->id = ++S->next_id;
    c->queue_seq = ++S->queue_seq;
    c->active = S->n_active < S->o.max_sessions;
    S->n_active += c->active;
    S->n_clients++;
    S->met.connections++;
    client **pp = &S->clients; /* append: list order = arrival order */
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    p->c = c;
    srv_txt_push_owned(S, c, srv_hello_json(S, c));
    if (!c->active)
        srv_txt_push_owned(S, c, srv_queued_json(S, c));
    pthread_cond_signal(&S->cv);
    pthread_mutex_unlock(&S->mu);
    if (S->o.verbose)
        fprintf(stderr, "streamdiff serve: client %llu connected (%s)\n", (unsigned long long)c->id,
                c->active ? "active" : "queued");
    lws_callback_on_writable(wsi);
    return 0;
}

static void srv_ws_closed(server *S, pss *p)
{
    client *c = p->c, *to_free = NULL;
    if (!c)
        return;
    p->c = NULL;
    pthread_mutex_lock(&S->mu);
    c->closed = true;
    c->wsi = NULL;
    free(c->rx);
    c->rx = NULL;
    S->n_clients--;
    if (c->active) {
        c->active = false;
        S->n_active--;
    }
    if (!c->busy && !c->stream) {
        srv_unlink_client(S, c);
        to_free = c;
    } else if (!c->busy) {
        /* the worker frees it: freeing a stream takes it out of its stream group, which waits for the group's
         * running tick, and the event loop must never wait for the engine */
        c->reap = true;
        pthread_cond_signal(&S->cv);
    }
    srv_promote_queued(S);
    pthread_mutex_unlock(&S->mu);
    if (S->o.verbose)
        fprintf(stderr, "streamdiff serve: client %llu left\n", (unsigned long long)c->id);
    srv_client_free(to_free);
}

static void on_text(server *S, client *c, const char *text, size_t len)
{
    srv_msg msg;
    srv_error err;
    pthread_mutex_lock(&S->mu);
    srv_config *next = malloc(sizeof *next);
    if (!next) {
        pthread_mutex_unlock(&S->mu);
        return;
    }
    if (!srv_parse_message_ex(text, len, &S->o.limits, &S->lora_req, &c->cfg, &msg, next, &err)) {
        srv_push_error(S, c, &err);
    } else if (msg.type == SRV_MSG_LORA) {
        if (!c->active) {
            srv_error_set(&err, "busy", "LoRA scales apply to every client: they can be changed once you are served");
            srv_push_error(S, c, &err);
        } else { /* the worker applies the newest scales between frames */
            memcpy(S->lora_req.scale, msg.lora_scale, sizeof(float) * (size_t)msg.n_lora);
            S->lora_gen++;
            S->lora_by = c->id;
            pthread_cond_signal(&S->cv);
        }
    } else if (msg.type == SRV_MSG_PING) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "type", "pong");
            if (msg.has_ping_id)
                cJSON_AddNumberToObject(o, "id", msg.ping_id);
            cJSON_AddNumberToObject(o, "server_time", now_s());
        }
        srv_txt_push_owned(S, c, srv_json_print(o));
    } else {
        c->cfg = *next;
        c->cfg_gen++;
        if (c->cfg.mode == SRV_MODE_TXT2IMG && c->in) {
            free(c->in);
            c->in = NULL;
            c->dropped++;
            S->met.frames_dropped++;
        }
        pthread_cond_signal(&S->cv);
    }
    free(next);
    pthread_mutex_unlock(&S->mu);
}

static void on_binary(server *S, client *c, uint8_t *data, size_t len)
{
    srv_error err;
    int w, h;
    pthread_mutex_lock(&S->mu);
    if (!c->active || c->cfg.mode == SRV_MODE_TXT2IMG) { /* queued, or no input wanted: ignore */
        pthread_mutex_unlock(&S->mu);
        free(data);
        return;
    }
    if (!srv_check_frame(data, len, &S->o.limits, &w, &h, &err)) {
        srv_push_error(S, c, &err);
        pthread_mutex_unlock(&S->mu);
        free(data);
        return;
    }
    if (c->in) { /* the engine has not taken the previous frame: newest wins */
        free(c->in);
        c->dropped++;
        S->met.frames_dropped++;
    }
    c->in = data;
    c->in_len = len;
    c->in_t = now_s();
    c->frames_in++;
    S->met.frames_in++;
    pthread_cond_signal(&S->cv);
    pthread_mutex_unlock(&S->mu);
}

static int srv_ws_receive(server *S, struct lws *wsi, pss *p, const void *in, size_t len)
{
    client *c = p->c;
    if (!c)
        return -1;
    if (!c->rx_in_msg) {
        c->rx_in_msg = true;
        c->rx_binary = lws_frame_is_binary(wsi) != 0;
        c->rx_len = c->rx_total = 0;
        c->rx_discard = false;
    }
    size_t limit = c->rx_binary ? SD_MIN(S->o.limits.max_frame_bytes, SRV_FRAME_MAX)
                                : SD_MIN(S->o.limits.max_text_bytes, SRV_TEXT_MAX);
    c->rx_total += len;
    if (!c->rx_discard && c->rx_total > limit) { /* drop the rest of this message */
        c->rx_discard = true;
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = c->rx_len = 0;
    }
    if (!c->rx_discard && len) {
        if (c->rx_len + len + 1 > c->rx_cap) {
            size_t cap = SD_MAX(c->rx_len + len + 1, SD_MIN(c->rx_cap * 2, limit + 1));
            uint8_t *nb = realloc(c->rx, cap);
            if (!nb)
                return -1;
            c->rx = nb;
            c->rx_cap = cap;
        }
        memcpy(c->rx + c->rx_len, in, len);
        c->rx_len += len;
    }
    if (!lws_is_final_fragment(wsi))
        return 0;
    c->rx_in_msg = false;
    if (c->rx_discard) {
        srv_error err;
        srv_error_set(&err, "too_large", "a %s message had %zu bytes or more; the limit is %zu (see --max-%s-bytes)",
                      c->rx_binary ? "binary" : "text", c->rx_total, limit, c->rx_binary ? "frame" : "text");
        pthread_mutex_lock(&S->mu);
        srv_push_error(S, c, &err);
        pthread_mutex_unlock(&S->mu);
    } else if (c->rx_binary) {
        uint8_t *data = c->rx; /* hand the buffer over: no copy */
        size_t n = c->rx_len;
        c->rx = NULL;
        c->rx_cap = c->rx_len = 0;
        on_binary(S, c, data, n);
    } else {
        on_text(S, c, (const char *)c->rx, c->rx_len);
        if (c->rx_cap > 65536) { /* keep small buffers for the next message */
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
        c->rx_len = 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int srv_ws_writable(server *S, struct lws *wsi, pss *p)
{
    client *c = p->c;
    if (!c)
        return -1;
    char *t = NULL;
    size_t tlen = 0;
    uint8_t *o = NULL;
    size_t olen = 0;
    double t0 = 0, ready = 0;
    pthread_mutex_lock(&S->mu);
    if (c->txt_n) {
        t = c->txt[c->txt_head];
        tlen = c->txt_len[c->txt_head];
        c->txt_head = (c->txt_head + 1) % TXT_Q;
        c->txt_n--;
    } else if (c->out) {
        o = c->out;
        olen = c->out_len;
        t0 = c->out_t0;
        ready = c->out_ready;
        c->out = NULL;
    }
    pthread_mutex_unlock(&S->mu);
    int rc = 0;
    if (t) {
        rc = lws_write(wsi, (unsigned char *)t + LWS_PRE, tlen, LWS_WRITE_TEXT) < (int)tlen ? -1 : 0;
        free(t);
    } else if (o) {
        rc = lws_write(wsi, o + LWS_PRE, olen, LWS_WRITE_BINARY) < (int)olen ? -1 : 0;
        free(o);
        double now = now_s();
        pthread_mutex_lock(&S->mu);
        srv_hist_observe(&S->met.stage[SRV_STAGE_SEND], now - ready);
        srv_hist_observe(&S->met.stage[SRV_STAGE_TOTAL], now - t0);
        double ms = (now - t0) * 1e3;
        c->lat_ema_ms = c->lat_ema_ms > 0 ? 0.8 * c->lat_ema_ms + 0.2 * ms : ms;
        c->frames_out++;
        S->met.frames_out++;
        pthread_cond_signal(&S->cv); /* the output slot is free again */
        pthread_mutex_unlock(&S->mu);
    }
    if (rc)
        return -1;
    pthread_mutex_lock(&S->mu);
    bool more = c->txt_n || c->out;
    pthread_mutex_unlock(&S->mu);
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

/* The worker produced something (or the server stops): ask for writable
 * callbacks where output waits. */
static void srv_on_wake(server *S)
{
    pthread_mutex_lock(&S->mu);
    for (client *c = S->clients; c; c = c->next)
        if (c->wsi && !c->closed && (c->txt_n || c->out))
            lws_callback_on_writable(c->wsi);
    pthread_mutex_unlock(&S->mu);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    server *S = ctx ? lws_context_user(ctx) : NULL;
    pss *p = user;
    if (!S)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return p ? srv_http_request(S, wsi, p, in) : -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return p ? srv_http_write(wsi, p) : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (p && !p->c) {
            free(p->owned);
            p->owned = NULL;
            p->body = NULL;
        }
        break;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return srv_ws_filter(S, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        if (!p)
            return -1;
        memset(p, 0, sizeof *p);
        return srv_ws_open(S, wsi, p);
    case LWS_CALLBACK_RECEIVE:
        return p ? srv_ws_receive(S, wsi, p, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return p ? srv_ws_writable(S, wsi, p) : -1;
    case LWS_CALLBACK_CLOSED:
        if (p)
            srv_ws_closed(S, p);
        break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        srv_on_wake(S);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---------------------------------------------------------------- run */

static void on_signal(int sig)
{
    (void)sig;
    g_signal = 1;
    if (g_ctx)
        lws_cancel_service(g_ctx);
}

static bool is_loopback(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

int srv_run(sd_model *m, const srv_options *o)
{
    server *S = calloc(1, sizeof *S);
    if (!S) {
        fprintf(stderr, "streamdiff serve: out of memory\n");
        return 1;
    }
    S->o = *o;
    S->m = m;
    if (S->o.max_sessions < 1)
        S->o.max_sessions = 1;
    if (S->o.max_batch <= 0 || S->o.max_batch > S->o.max_sessions)
        S->o.max_batch = S->o.max_sessions;
    if (!S->o.host || !*S->o.host || !strcmp(S->o.host, "localhost"))
        S->o.host = "127.0.0.1";
    if (sd_model_get_info(m, &S->info) != SD_OK) {
        fprintf(stderr, "streamdiff serve: %s\n", sd_last_error());
        free(S);
        return 1;
    }
    for (int i = 0; i < S->o.n_loras; i++)
        if (!S->o.loras || !srv_loras_add(&S->lora_on, S->o.loras[i].path, S->o.loras[i].scale)) {
            fprintf(stderr, "streamdiff serve: LoRA %d: at most %d LoRAs with scales in -%g..%g and a file name\n",
                    i + 1, SRV_MAX_LORAS, SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX);
            free(S);
            return 1;
        }
    S->lora_req = S->lora_on;
    pthread_mutex_init(&S->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S->cv, &ca);
    pthread_condattr_destroy(&ca);
    S->start_t = now_s();

    static const struct lws_protocols protocols[] = {
        {"streamdiff", callback, sizeof(pss), RX_CHUNK, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = S->o.port;
    info.iface = S->o.host;
    info.protocols = protocols;
    info.user = S;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.max_http_header_data = 4096;
    info.timeout_secs = 10;
    info.server_string = "streamdiff";
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(S->o.host, ':'))
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_DISABLE_IPV6;
    lws_set_log_level(S->o.verbose > 1 ? LLL_ERR | LLL_WARN | LLL_NOTICE : LLL_ERR, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    S->ctx = lws_create_context(&info);
    if (!S->ctx) {
        fprintf(stderr, "streamdiff serve: cannot listen on %s port %d (in use, or not an address of this machine?)\n",
                S->o.host, S->o.port);
        pthread_cond_destroy(&S->cv);
        pthread_mutex_destroy(&S->mu);
        free(S);
        return 1;
    }
    g_ctx = S->ctx;
    struct lws_vhost *vh = lws_get_vhost_by_name(S->ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : S->o.port;

    /* the worker gets no SIGINT/SIGTERM: the event loop handles them */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t worker;
    int perr = pthread_create(&worker, NULL, srv_worker_main, S);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (perr) {
        fprintf(stderr, "streamdiff serve: cannot start the engine thread: %s\n", strerror(perr));
        g_ctx = NULL;
        lws_context_destroy(S->ctx);
        free(S);
        return 1;
    }

    if (!is_loopback(S->o.host) && (!S->o.token || !*S->o.token))
        fprintf(stderr,
                "streamdiff serve: WARNING: listening on %s without --token: anyone who can reach this address can "
                "use the server and its compute. Pass --token SECRET (then open the page with ?token=SECRET) or bind "
                "127.0.0.1.\n",
                S->o.host);
    const char *shown = !strcmp(S->o.host, "0.0.0.0") ? "127.0.0.1" : S->o.host;
    printf("streamdiff serve: model %s (%s%s), streams %dx%d, up to %d clients served at once, %s\n",
           S->o.model_name ? S->o.model_name : "?", S->info.arch ? S->info.arch : "?",
           S->o.tiny_model ? ", tiny test model: output is noise" : "", S->o.defaults.width, S->o.defaults.height,
           S->o.max_sessions, S->o.max_batch > 1 ? "their frames batched" : "each frame alone");
    printf("streamdiff serve: open http://%s%s%s:%d/%s%s in a browser (Ctrl-C stops)\n",
           strchr(shown, ':') ? "[" : "", shown, strchr(shown, ':') ? "]" : "", port,
           S->o.token && *S->o.token ? "?token=" : "", S->o.token && *S->o.token ? S->o.token : "");
    fflush(stdout);

    while (!g_signal && !atomic_load(&S->stop))
        if (lws_service(S->ctx, 0) < 0)
            break;

    pthread_mutex_lock(&S->mu);
    atomic_store(&S->stop, true);
    pthread_cond_broadcast(&S->cv);
    pthread_mutex_unlock(&S->mu);
    pthread_join(worker, NULL);
    g_ctx = NULL;
    lws_context_destroy(S->ctx); /* closes the connections (LWS_CALLBACK_CLOSED frees their clients) */
    while (S->clients) {
        client *c = S->clients;
        S->clients = c->next;
        srv_client_free(c);
    }
    for (int i = 0; i < S->n_grp; i++)
        sd_stream_group_free(S->grp[i].g);
    printf("streamdiff serve: stopped (%llu frames in, %llu out, %llu dropped, %llu skipped)\n",
           (unsigned long long)S->met.frames_in, (unsigned long long)S->met.frames_out,
           (unsigned long long)S->met.frames_dropped, (unsigned long long)S->met.frames_skipped);
    fflush(stdout);
    pthread_cond_destroy(&S->cv);
    pthread_mutex_destroy(&S->mu);
    free(S);
    return 0;
}
