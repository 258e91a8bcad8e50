/* `streamdiff serve`: WebSocket: the handshake filter (path, token, origin, client limit),
 * connect / close, receiving messages, writing the queued output. */
#include "internal.h"

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

int srv_ws_filter(server *S, struct lws *wsi)
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

int srv_ws_open(server *S, struct lws *wsi, pss *p)
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

void srv_ws_closed(server *S, pss *p)
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

int srv_ws_receive(server *S, struct lws *wsi, pss *p, const void *in, size_t len)
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

int srv_ws_writable(server *S, struct lws *wsi, pss *p)
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
void srv_on_wake(server *S)
{
    pthread_mutex_lock(&S->mu);
    for (client *c = S->clients; c; c = c->next)
        if (c->wsi && !c->closed && (c->txt_n || c->out))
            lws_callback_on_writable(c->wsi);
    pthread_mutex_unlock(&S->mu);
}
