/* `streamdiff serve`: the engine worker. Each tick takes up to max_batch clients with work (least
 * recently served first), applies their settings (new stream when needed), decodes their frames,
 * runs streams of one size in one stream-group call and encodes the outputs. */
#include "internal.h"

/* ---------------------------------------------------------------- engine worker */

/* Guidance, delta and the similarity filter change live (validated by the protocol layer). */
static void set_live(sd_stream *s, const srv_config *c)
{
    sd_stream_set_guidance(s, c->guidance_scale, c->delta);
    sd_stream_set_similarity_filter(s, c->similarity_threshold, c->max_skip_frames);
}

/* ---------------------------------------------------------------- ControlNets */

/* The server's nets a stream of config c has: every one in img2img; in txt2img those with a fixed image (the
 * others need frames). map[j] = the server's index of the stream's net j. */
static int stream_nets(const server *S, const srv_config *c, int *map)
{
    int n = 0;
    for (int k = 0; k < S->o.n_controls && k < c->n_cnet; k++)
        if (c->mode == SRV_MODE_IMG2IMG || S->o.controls[k].image)
            map[n++] = k;
    return n;
}

/* Whether a mode change changes the stream's nets (a new stream then). */
static bool nets_follow_mode(const server *S)
{
    for (int k = 0; k < S->o.n_controls; k++)
        if (!S->o.controls[k].image)
            return true;
    return false;
}

/* The client's ControlNet settings on its stream (live: sd_stream_set_control). */
static sd_status set_nets(server *S, sd_stream *s, const srv_config *c)
{
    int map[SRV_MAX_CONTROLS];
    int n = stream_nets(S, c, map);
    for (int j = 0; j < n; j++) {
        sd_stream_control sc;
        srv_cnet_to_stream(&c->cnet[map[j]], &sc);
        sd_status st = sd_stream_set_control(s, j, &sc);
        if (st != SD_OK)
            return st;
    }
    return SD_OK;
}

static sd_status make_stream(server *S, const srv_config *c, sd_stream **out)
{
    sd_stream_params p;
    srv_config_stream_params(c, &p);
    p.use_taesd = S->info.has_taesd;
    sd_control ctl[SRV_MAX_CONTROLS];
    int map[SRV_MAX_CONTROLS];
    p.n_controls = stream_nets(S, c, map);
    for (int j = 0; j < p.n_controls; j++) {
        const srv_cnet *n = &c->cnet[map[j]];
        ctl[j] = S->o.controls[map[j]];
        ctl[j].scale = n->scale;
        ctl[j].guidance_start = n->guidance_start;
        ctl[j].guidance_end = n->guidance_end;
    }
    p.controls = p.n_controls ? ctl : NULL;
    if (p.n_controls)
        p.control_preprocess = c->cnet[map[0]].pp;
    sd_status st = sd_stream_create(S->m, &p, out);
    if (st == SD_OK)
        st = set_nets(S, *out, c); /* each net's own preprocessor */
    if (st != SD_OK && *out) {
        sd_stream_free(*out);
        *out = NULL;
    }
    return st;
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
        bool recreate = !c->stream || (diff & SRV_CHANGE_STREAM) ||
                        (want->mode != c->scfg.mode && nets_follow_mode(S)); /* the stream's nets change */
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
        if (recreate || (diff & SRV_CHANGE_PROMPT)) { /* the prompt, or the blended prompts (blend.c) */
            if (srv_blend_set_prompts(c->stream, want) != SD_OK)
                res_error(r, "engine", "the prompt could not be applied: %s", sd_last_error());
        }
        if ((recreate && want->blend.n_seeds) || (!recreate && (diff & SRV_CHANGE_SEEDS))) {
            if (srv_blend_set_seeds(c->stream, want) != SD_OK)
                res_error(r, "engine", "the seeds could not be applied: %s", sd_last_error());
        }
        if (!recreate && (diff & SRV_CHANGE_LIVE))
            set_live(c->stream, want);
        if (!recreate && (diff & SRV_CHANGE_CONTROL) && set_nets(S, c->stream, want) != SD_OK)
            res_error(r, "engine", "the ControlNet settings could not be applied: %s", sd_last_error());
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
    sd_status st = sd_image_decode(j->in, j->in_len, &c->img);
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
    sd_status st = sd_image_encode_jpeg(&c->outimg, r->applied.jpeg_quality, &jpg, &n);
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

void *srv_worker_main(void *arg)
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
        if (S->o.control) { /* live control from outside the protocol (OSC), between ticks */
            pthread_mutex_unlock(&S->mu);
            bool got = S->o.control(S->o.control_user, &S->ctl);
            pthread_mutex_lock(&S->mu);
            if (got) {
                srv_apply_control(S, &S->ctl);
                lws_cancel_service(S->ctx); /* the event loop sends what it queued */
            }
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
            if (S->o.control && (wake == 0 || wake > now + 0.1)) /* poll the control at least every 100 ms */
                wake = now + 0.1;
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
