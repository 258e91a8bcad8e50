/* Internals shared by the files of `streamdiff serve` (src/server/): the structs of a
 * client, a connection and the server, and the functions one file calls in another.
 *
 * `streamdiff serve`: HTTP (page, /health, /metrics) and the WebSocket
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
#ifndef SD_SERVER_INTERNAL_H
#define SD_SERVER_INTERNAL_H

#include "metrics.h"
#include "server.h"

#include <libwebsockets.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
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
    srv_control ctl; /* worker only: the control update being applied */
} server;

static inline double now_s(void) { return srv_now(); }

/* sessions.c: text queues, waiting queue, gauges, LoRA broadcast (hold mu unless said) */
void srv_txt_push(server *S, client *c, const char *s);
void srv_txt_push_owned(server *S, client *c, char *s);
void srv_push_error(server *S, client *c, const srv_error *e);
void srv_client_free(client *c);
void srv_unlink_client(server *S, client *c);
char *srv_queued_json(server *S, client *c);
void srv_promote_queued(server *S);
void srv_gauges_fill(server *S, srv_gauges *g);
void srv_apply_loras(server *S);
void srv_apply_control(server *S, const srv_control *u);

/* messages.c: JSON built from the server state */
void srv_add_lora_scales(server *S, cJSON *o);
void srv_add_controlnets(server *S, cJSON *o);
char *srv_stats_json(server *S, client *c, double now);
char *srv_hello_json(server *S, client *c);

/* worker.c: the engine worker thread */
void *srv_worker_main(void *arg);

/* http.c: the page, /health, /metrics */
int srv_http_request(server *S, struct lws *wsi, pss *p, const char *uri);
int srv_http_write(struct lws *wsi, pss *p);
bool srv_token_ok(server *S, struct lws *wsi);

/* ws.c: the WebSocket side (event loop) */
int srv_ws_filter(server *S, struct lws *wsi);
int srv_ws_open(server *S, struct lws *wsi, pss *p);
void srv_ws_closed(server *S, pss *p);
int srv_ws_receive(server *S, struct lws *wsi, pss *p, const void *in, size_t len);
int srv_ws_writable(server *S, struct lws *wsi, pss *p);
void srv_on_wake(server *S);

#endif
