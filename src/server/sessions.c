/* `streamdiff serve`: the clients' text queues, promotion from the waiting queue, the gauges of
 * /health and /metrics, and the LoRA broadcast (the worker fuses the scales asked for last and
 * every client learns them). */
#include "internal.h"

/* ---------------------------------------------------------------- queues (hold mu) */

/* Copies `s` (NUL-terminated, may be NULL) into the client's text queue. */
void srv_txt_push(server *S, client *c, const char *s)
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

void srv_txt_push_owned(server *S, client *c, char *s)
{
    srv_txt_push(S, c, s);
    free(s);
}

void srv_push_error(server *S, client *c, const srv_error *e)
{
    S->met.bad_messages += strcmp(e->code, "engine") != 0;
    S->met.engine_errors += strcmp(e->code, "engine") == 0;
    srv_txt_push_owned(S, c, srv_error_json(e));
}

void srv_client_free(client *c)
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

void srv_unlink_client(server *S, client *c)
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


char *srv_queued_json(server *S, client *c)
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
void srv_promote_queued(server *S)
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

void srv_gauges_fill(server *S, srv_gauges *g)
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

/* Fuses the LoRA scales asked for last. Worker only, between frames: no stream
 * step runs meanwhile (the worker runs them all), and streams re-encode their
 * prompt on their next frame (the model's weights_version changed). Holds mu
 * on entry and exit, not while the weights are rewritten. */
void srv_apply_loras(server *S)
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
        sd_model_info mi;
        at_base = sd_model_get_info(S->m, &mi) == SD_OK && mi.active_loras == 0;
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

/* A control update (srv_options.control) on one config: false (and *err) when its stream would refuse it. */
static bool control_config(const srv_control *u, int max_steps, const srv_config *cur, srv_config *out,
                           srv_error *err)
{
    *out = *cur;
    if ((u->set & SRV_CTL_T_INDEX) && u->n_t_index > max_steps) {
        srv_error_set(err, "bad_value", "field 't_index_list': %d entries, this server allows at most %d (--max-steps)",
                      u->n_t_index, max_steps);
        return false;
    }
    if (u->set & SRV_CTL_PROMPT)
        memcpy(out->prompt, u->prompt, sizeof out->prompt);
    if (u->set & SRV_CTL_NEGATIVE)
        memcpy(out->negative_prompt, u->negative_prompt, sizeof out->negative_prompt);
    if (u->set & SRV_CTL_GUIDANCE)
        out->guidance_scale = u->guidance_scale;
    if (u->set & SRV_CTL_DELTA)
        out->delta = u->delta;
    if (u->set & SRV_CTL_SEED)
        out->seed = u->seed;
    if (u->set & SRV_CTL_T_INDEX) {
        memcpy(out->t_index_list, u->t_index_list, sizeof out->t_index_list);
        out->n_t_index = u->n_t_index;
    }
    if (u->set & SRV_CTL_SIMILARITY) {
        out->similarity_threshold = u->similarity_threshold;
        if (u->max_skip_frames >= 0)
            out->max_skip_frames = u->max_skip_frames;
    }
    return srv_blend_control(u, out, err) && srv_check_stream_params(out, err);
}

/* Applies a control update to every client and to the defaults of later ones (hold mu). */
void srv_apply_control(server *S, const srv_control *u)
{
    srv_error err;
    if (u->set & ~(unsigned)SRV_CTL_LORA) {
        srv_config next;
        if (control_config(u, S->o.limits.max_steps, &S->o.defaults, &next, &err)) {
            S->o.defaults = next;
            fprintf(stderr, "streamdiff serve: control: settings applied to every client\n");
        } else {
            fprintf(stderr, "streamdiff serve: control: refused: %s\n", err.message);
        }
        for (client *c = S->clients; c; c = c->next) {
            if (c->closed)
                continue;
            if (control_config(u, S->o.limits.max_steps, &c->cfg, &next, &err)) {
                c->cfg = next;
                c->cfg_gen++; /* the worker applies it and sends the client its "config" */
            } else { /* not the client's message: no bad_messages count */
                srv_txt_push_owned(S, c, srv_error_json(&err));
            }
        }
    }
    if ((u->set & SRV_CTL_LORA) && S->lora_req.n) {
        bool ok = true;
        for (int i = 0; i < S->lora_req.n; i++)
            if ((u->lora_set & (1u << i)) && fabsf(u->lora_scale[i]) > SRV_LORA_SCALE_MAX)
                ok = false;
        if (!ok) {
            fprintf(stderr, "streamdiff serve: control: LoRA scales refused: each must be within -%g..%g\n",
                    SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX);
        } else {
            for (int i = 0; i < S->lora_req.n; i++)
                if (u->lora_set & (1u << i))
                    S->lora_req.scale[i] = u->lora_scale[i];
            S->lora_by = 0; /* no client asked: a failure goes to the log */
            S->lora_gen++;
        }
    }
    pthread_cond_broadcast(&S->cv);
}
