/* The StreamDiffusion engine: the struct and its state (creation, prompts, ControlNet images, modes,
 * stats, frames in and out, live settings); the step itself is stream_step.c. See stream.h and
 * ARCHITECTURE.md for the data flow of one frame. */
#include "pipe/stream.h"
#include "pipe/control.h"
#include "pipe/pipeline.h"

#include "core/memlimit.h"
#include "io/image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parameters with the model: sd_stream_params_validate, then what needs the model (an autoencoder,
 * the size's multiple). */
static sd_status validate(const sd_model *m, const sd_stream_params *p, bool *taesd)
{
    SD_TRY(sd_stream_params_validate(p, NULL));
    *taesd = sd_model_use_taesd(m, p->use_taesd);
    if (!*taesd && !m->vae)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "the model has neither a VAE nor a TAESD to encode and decode frames");
    int sc = *taesd ? sd_taesd_downscale(&m->taesd_cfg) : sd_vae_downscale(&m->vae_cfg);
    int64_t div = (int64_t)sc << (m->unet_cfg.n_blocks - 1);
    if (p->width % div || p->height % div)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "stream size %dx%d: width and height must be multiples of %lld for this model (its autoencoder "
                       "and UNet downsample by that much)",
                       p->width, p->height, (long long)div);
    for (int k = 0; k < p->n_controls; k++) { /* the nets fit this model and its image scale */
        const sd_controlnet *c = p->controls[k].net;
        char what[32];
        snprintf(what, sizeof what, "%d", k + 1);
        if (c->m != m)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "controls[%d]: the ControlNet %s was loaded for another model", k,
                           c->name);
        SD_TRY(sd_cnet_check_fit(&c->cfg, &m->unet_cfg, what));
        if (c->cfg.conditioning_channels != 3 || sd_cnet_cond_factor(&c->cfg) != sc)
            return sd_fail(SD_ERR_UNSUPPORTED, "controls[%d]: ControlNet %s takes %lld-channel control images %d x the "
                           "latent size; this stream's images are RGB, %d x it", k, c->name,
                           (long long)c->cfg.conditioning_channels, sd_cnet_cond_factor(&c->cfg), sc);
    }
    return SD_OK;
}

/* The LCM scheduler built from the model's scheduler config, like
 * LCMScheduler.from_config(pipe.scheduler.config). */
static sd_status lcm_coeffs(sd_stream *s)
{
    sd_sched_config c;
    sd_sched_config_from_model(&s->m->sched_cfg, SD_SCHED_LCM, &c);
    sd_scheduler *sch;
    SD_TRY(sd_scheduler_create(&c, &sch));
    sd_status st = sd_scheduler_set_timesteps(sch, s->p.num_inference_steps, 1.0, NULL, 0);
    if (st == SD_OK)
        st = sd_lcm_stream_coeffs(sch, s->p.t_index_list, s->n, s->t_sub, s->alpha, s->beta, s->c_skip, s->c_out);
    sd_scheduler_free(sch);
    return st;
}

/* Every persistent tensor, allocated from s->state (planned, then real). */
static void alloc_state(sd_stream *s, sd_ctx *st)
{
    const int B = s->B, fbs = s->fbs;
    s->init_noise = sd_new4(st, B, s->C, s->h, s->w);
    s->init_noise_rolled = sd_new4(st, B, s->C, s->h, s->w);
    s->stock = sd_new4(st, B, s->C, s->h, s->w);
    s->buffer = B > fbs ? sd_new4(st, B - fbs, s->C, s->h, s->w) : (sd_tensor){0};
    s->k_alpha = sd_new4(st, B, 1, 1, 1);
    s->k_beta = sd_new4(st, B, 1, 1, 1);
    s->k_inv_alpha = sd_new4(st, B, 1, 1, 1);
    s->k_c_skip = sd_new4(st, B, 1, 1, 1);
    s->k_c_out = sd_new4(st, B, 1, 1, 1);
    s->k_next = sd_new4(st, B, 1, 1, 1);
    if (B > fbs) {
        s->k_alpha_buf = sd_new4(st, B - fbs, 1, 1, 1);
        s->k_beta_buf = sd_new4(st, B - fbs, 1, 1, 1);
    }
    int64_t tn = (int64_t)s->n * s->UB;
    s->t_unet = sd_new(st, SD_F32, 1, &tn);
    s->img_in = sd_new4(st, fbs, 3, s->H, s->W);
    s->x_in = sd_new4(st, fbs, s->C, s->h, s->w);
    s->img_out = sd_new4(st, fbs, 3, s->H, s->W);
    s->img_in8 = sd_new(st, SD_U8, 4, (int64_t[]){fbs, s->H, s->W, 3});
    s->img_out8 = sd_new(st, SD_U8, 4, (int64_t[]){fbs, s->H, s->W, 3});
    int64_t kvb = s->p.cfg_type == SD_CFG_FULL ? 2 * B : s->p.cfg_type == SD_CFG_INITIALIZE ? fbs + B : 1;
    s->embeds = sd_new4(st, kvb, s->S, s->D, 0);
    if (s->P) {
        s->add_te = sd_new4(st, s->UB, s->P, 0, 0);
        s->add_ids = sd_new(st, SD_F32, 2, (int64_t[]){s->UB, SD_UNET_TIME_IDS});
    }
    for (int k = 0; k < s->n_ctl; k++) {
        s->ctl[k].cond_new = sd_new4(st, fbs, 3, s->H, s->W);
        s->ctl[k].cond_rows = sd_new4(st, B, 3, s->H, s->W);
        s->ctl[k].k_scale = sd_new4(st, (int64_t)s->n * s->UB, 1, 1, 1);
    }
}

static sd_status upload_f32(sd_stream *s, sd_tensor *t, const float *host) { return sd_tensor_from_f32(&s->state, t, host); }

/* Per-row constants: row r of the stream batch is step r / fbs. */
static sd_status upload_constants(sd_stream *s)
{
    const int B = s->B, fbs = s->fbs, n = s->n;
    float *v = sd_malloc(sizeof(float) * (size_t)(6 * B + 2 * n * s->UB + 8));
    if (!v)
        return SD_ERR_OUT_OF_MEMORY;
    float *a = v, *b = a + B, *ia = b + B, *cs = ia + B, *co = cs + B, *nx = co + B, *tt = nx + B;
    for (int r = 0; r < B; r++) {
        int k = s->p.use_denoising_batch ? r / fbs : 0;
        a[r] = s->alpha[k];
        b[r] = s->beta[k];
        ia[r] = 1.0f / s->alpha[k];
        cs[r] = s->c_skip[k];
        co[r] = s->c_out[k];
        float an = k + 1 < n ? s->alpha[k + 1] : 1.0f, bn = k + 1 < n ? s->beta[k + 1] : 1.0f;
        nx[r] = an / bn;
    }
    /* timesteps of the UNet rows: one list per step index (the non-batch path
     * uses row list `idx`; the batch path uses list 0). */
    for (int idx = 0; idx < n; idx++) {
        float *row = tt + (size_t)idx * s->UB;
        int u = 0;
        int64_t tl[SD_STREAM_MAX_STEPS * 16];
        for (int r = 0; r < B; r++)
            tl[r] = s->p.use_denoising_batch ? s->t_sub[r / fbs] : s->t_sub[idx];
        if (s->p.cfg_type == SD_CFG_INITIALIZE)
            for (int r = 0; r < fbs; r++)
                row[u++] = (float)tl[r];
        if (s->p.cfg_type == SD_CFG_FULL)
            for (int r = 0; r < B; r++)
                row[u++] = (float)tl[r];
        for (int r = 0; r < B; r++)
            row[u++] = (float)tl[r];
    }
    sd_status st = SD_OK;
    sd_tensor *ks[] = {&s->k_alpha, &s->k_beta, &s->k_inv_alpha, &s->k_c_skip, &s->k_c_out, &s->k_next};
    for (int i = 0; i < 6 && st == SD_OK; i++)
        st = upload_f32(s, ks[i], v + (size_t)i * B);
    if (st == SD_OK && B > fbs) {
        st = upload_f32(s, &s->k_alpha_buf, a + fbs);
        if (st == SD_OK)
            st = upload_f32(s, &s->k_beta_buf, b + fbs);
    }
    if (st == SD_OK)
        st = s->state.be->ops->upload(s->state.be, s->t_unet.data, tt, sizeof(float) * (size_t)n * s->UB);
    for (int c = 0; c < s->n_ctl && st == SD_OK; c++) /* ControlNet scales of the UNet rows (stream_control.c) */
        st = sd_stream_control_scales(s, c, tt);
    free(v);
    return st;
}

sd_status sd_stream_set_init_noise(sd_stream *s, const float *host)
{
    size_t per = (size_t)(s->C * s->h * s->w), n = per * (size_t)s->B;
    float *rolled = sd_malloc(n * sizeof(float));
    if (!rolled)
        return SD_ERR_OUT_OF_MEMORY;
    /* roll by one step (fbs rows): cat([init_noise[fbs:], init_noise[:fbs]]) */
    size_t shift = per * (size_t)s->fbs;
    memcpy(rolled, host + shift, (n - shift) * sizeof(float));
    memcpy(rolled + (n - shift), host, shift * sizeof(float));
    sd_status st = upload_f32(s, &s->init_noise, host);
    if (st == SD_OK)
        st = upload_f32(s, &s->init_noise_rolled, rolled);
    free(rolled);
    /* stock noise and the latent buffer start at zero */
    float *zero = st == SD_OK ? sd_calloc(n, sizeof(float)) : NULL;
    if (st == SD_OK && !zero)
        st = SD_ERR_OUT_OF_MEMORY;
    if (st == SD_OK)
        st = upload_f32(s, &s->stock, zero);
    if (st == SD_OK && s->B > s->fbs)
        st = upload_f32(s, &s->buffer, zero);
    free(zero);
    return st;
}

/* ---------------------------------------------------------------- create */

static sd_status plan_contexts(sd_stream *s)
{
    sd_ctx plan;
    size_t peak = 0;
    /* frame step, both input kinds */
    for (int latent = 0; latent < 2; latent++) {
        sd_ctx_init_plan(&s->ctx, s->m->be);
        SD_TRY(sd_stream_step(s, latent, NULL, NULL));
        peak = SD_MAX(peak, s->ctx.peak);
    }
    sd_ctx_init_plan(&plan, s->m->be);
    sd_unet_kv_compute(&plan, s->m->unet, s->embeds, s->kv);
    SD_TRY(plan.status);
    peak = SD_MAX(peak, plan.peak);
    /* text encoder */
    sd_ctx_init_plan(&plan, s->m->be);
    if (s->P)
        sd_sdxl_text_forward(s->m, &plan, s->ids, s->ids2, s->S, 0, s->host_embeds, s->host_pooled);
    else
        sd_model_text_forward(s->m, &plan, s->ids, s->S, 0, s->host_embeds);
    SD_TRY(plan.status);
    /* refuse up front what cannot fit (src/core/memlimit.h): everything the stream holds */
    size_t kvb = sd_unet_kv_bytes(s->m->unet, s->embeds.ne[0], s->S, s->m->be->act_dtype);
    char what[160];
    snprintf(what, sizeof what, "a %dx%d stream (%d steps x %d frames, UNet batch %d)", s->W, s->H, s->n, s->fbs,
             s->UB);
    SD_TRY(sd_mem_check(s->m->be->host_memory, s->state.cap + kvb + peak + plan.peak, what,
                        "use a smaller size, fewer t_index_list entries or frame_buffer_size 1 "
                        "(SD_MAX_ARENA_BYTES sets the limit)"));
    SD_TRY(sd_ctx_init(&s->ctx, s->m->be, peak));
    return sd_ctx_init(&s->text_ctx, s->m->be, plan.peak);
}

sd_status sd_stream_create(sd_model *m, const sd_stream_params *params, sd_stream **out)
{
    *out = NULL;
    if (!m)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL model");
    sd_stream_params p;
    if (params)
        p = *params;
    else
        sd_stream_default_params(&p);
    bool taesd = false;
    SD_TRY(validate(m, &p, &taesd));
    sd_stream *s = sd_calloc(1, sizeof *s);
    if (!s)
        return SD_ERR_OUT_OF_MEMORY;
    pthread_mutex_init(&s->engine, NULL);
    pthread_mutex_init(&s->stats_mu, NULL);
    s->m = m;
    static uint64_t serials;
    s->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
    s->p = p;
    s->n = p.n_t_index;
    s->fbs = p.frame_buffer_size;
    s->B = p.use_denoising_batch ? s->n * s->fbs : s->fbs;
    s->UB = p.cfg_type == SD_CFG_FULL ? 2 * s->B : p.cfg_type == SD_CFG_INITIALIZE ? s->B + s->fbs : s->B;
    s->taesd = taesd;
    int sc = taesd ? sd_taesd_downscale(&m->taesd_cfg) : sd_vae_downscale(&m->vae_cfg);
    s->vae_scale = taesd ? 1.0f : (float)m->vae_cfg.scaling_factor;
    s->H = p.height;
    s->W = p.width;
    s->C = m->unet_cfg.in_channels;
    s->h = p.height / sc;
    s->w = p.width / sc;
    s->guidance = p.cfg_type == SD_CFG_NONE ? 1.0f : p.guidance_scale;
    s->S = sd_model_prompt_tokens(m);
    s->D = m->clip_cfg.hidden_size + (m->sdxl ? m->clip2_cfg.hidden_size : 0);
    s->P = m->sdxl ? m->clip2_cfg.projection_dim : 0;
    s->n_ctl = p.n_controls;
    for (int k = 0; k < s->n_ctl; k++) {
        const sd_control *c = &p.controls[k];
        s->ctl[k] = (struct sd_stream_ctl){.net = c->net->net, .from_frame = !c->image, .scale = c->scale,
                                           .start = c->guidance_start, .end = c->guidance_end,
                                           .pp = p.control_preprocess};
    }
    s->p.controls = NULL; /* not kept: the caller's array */
    s->p.n_controls = 0;
    if (s->n_ctl) {
        s->graphs_off = true; /* the nets' host-side inputs (frame control images) are not graph-friendly yet */
        s->n_res = sd_cnet_num_residuals(s->ctl[0].net);
    }
    size_t img_n = (size_t)s->fbs * 3 * s->H * s->W, lat_n = (size_t)s->B * s->C * s->h * s->w;
    sd_blend_cache_init(&s->text_cache, (size_t)s->S * s->D + (size_t)s->P); /* SDXL: + the pooled embedding */
    sd_blend_cache_init(&s->noise_cache, lat_n);
    s->ids = sd_calloc((size_t)s->S, sizeof *s->ids);
    s->host_embeds = sd_malloc(2 * (size_t)s->S * s->D * sizeof(float));
    s->host_in = sd_malloc(SD_MAX(img_n, lat_n) * sizeof(float));
    s->host_noise = sd_malloc(SD_MAX(img_n, lat_n) * sizeof(float));
    s->ssf_prev = sd_malloc(img_n * sizeof(float));
    s->ids2 = sd_calloc((size_t)s->S, sizeof *s->ids2);
    s->host_pooled = sd_malloc((2 * (size_t)s->P + 1) * sizeof(float));
    sd_status st = (s->ids && s->host_embeds && s->host_in && s->host_noise && s->ssf_prev && s->ids2 && s->host_pooled)
                       ? SD_OK
                       : SD_ERR_OUT_OF_MEMORY;
    if (st == SD_OK && s->n_ctl) {
        s->res_down = sd_calloc((size_t)s->n_res, sizeof *s->res_down);
        s->ctl_bytes = sd_malloc(img_n);
        s->ctl_host = sd_malloc(img_n * sizeof(float));
        s->ctl_scales = sd_malloc((size_t)s->n * s->UB * sizeof(float));
        st = s->res_down && s->ctl_bytes && s->ctl_host && s->ctl_scales ? SD_OK : SD_ERR_OUT_OF_MEMORY;
        bool from_frame = false;
        for (int k = 0; k < s->n_ctl; k++)
            from_frame |= s->ctl[k].from_frame;
        if (st == SD_OK && from_frame) { /* the preprocessor's rules now, its buffers once */
            st = sd_preprocess_check(&p.control_preprocess);
            if (st == SD_OK)
                st = sd_preprocess_work_init(&s->ctl_work, s->W, s->H);
            if (st == SD_OK)
                st = sd_rgb_alloc(&s->ctl_img, s->W, s->H);
        }
    }
    if (st == SD_OK)
        st = lcm_coeffs(s);
    if (st == SD_OK) {
        sd_ctx_init_plan(&s->state, m->be);
        alloc_state(s, &s->state);
        size_t need = s->state.peak;
        st = s->state.status;
        if (st == SD_OK)
            st = sd_ctx_init(&s->state, m->be, need);
        if (st == SD_OK)
            alloc_state(s, &s->state);
        if (st == SD_OK)
            st = s->state.status;
    }
    if (st == SD_OK) {
        size_t kvb = sd_unet_kv_bytes(m->unet, s->embeds.ne[0], s->S, m->be->act_dtype);
        s->kv_mem = m->be->ops->alloc(m->be, kvb ? kvb : 64);
        st = s->kv_mem ? sd_unet_kv_init(&s->kv, m->unet, s->kv_mem, s->embeds.ne[0], s->S, m->be->act_dtype)
                       : SD_ERR_OUT_OF_MEMORY;
    }
    if (st == SD_OK)
        st = upload_constants(s);
    if (st == SD_OK) /* init_noise ~ N(0, I) from the seeded generator (and the SSF coin's) */
        st = sd_stream_set_seed(s, p.seed);
    for (int k = 0; k < s->n_ctl && st == SD_OK; k++) /* fixed control images, and zeros for the frames' */
        st = sd_stream_control_image(s, k, p.n_controls ? params->controls[k].image : NULL);
    if (st == SD_OK)
        st = plan_contexts(s);
    if (st == SD_OK)
        st = sd_stream_set_prompt(s, "", "");
    if (st != SD_OK) {
        sd_stream_free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

void sd_stream_free(sd_stream *s)
{
    if (!s)
        return;
    /* the layer driving it (async pipeline, stream group) lets go first: its own teardown hook, which
     * ends with sd_stream_detach (called without the engine lock: an async step may still take it) */
    pthread_mutex_lock(&s->engine);
    sd_stream_detach_fn detach = s->detach;
    void *owner = s->owner;
    pthread_mutex_unlock(&s->engine);
    if (detach)
        detach(owner, s);
    sd_stream_detach(s, owner);
    sd_stream_graphs_free(s);
    sd_unet_kv_free(s->kv);
    if (s->kv_mem)
        s->m->be->ops->free(s->m->be, s->kv_mem);
    sd_ctx_free(&s->ctx);
    sd_ctx_free(&s->text_ctx);
    sd_ctx_free(&s->state);
    free(s->ids);
    free(s->ids2);
    free(s->host_pooled);
    free(s->host_embeds);
    free(s->host_in);
    free(s->host_noise);
    free(s->ssf_prev);
    sd_stream_prompts_free(s);
    free(s->res_down);
    free(s->ctl_bytes);
    free(s->ctl_host);
    free(s->ctl_scales);
    sd_preprocess_work_free(&s->ctl_work);
    sd_rgb_free(&s->ctl_img);
    pthread_mutex_destroy(&s->stats_mu);
    pthread_mutex_destroy(&s->engine);
    free(s);
}

/* ---------------------------------------------------------------- modes */

void sd_stream_describe(const sd_stream *s, sd_stream_desc *d)
{
    *d = (sd_stream_desc){.m = s->m, .W = s->W, .H = s->H, .C = s->C, .h = s->h, .w = s->w, .n = s->n,
                          .fbs = s->fbs, .UB = s->UB, .S = s->S, .denoising_batch = s->p.use_denoising_batch,
                          .use_graphs = s->p.use_graphs, .drop_old_frames = s->p.drop_old_frames,
                          .queue_size = s->p.queue_size, .act = s->img_in.dtype, .n_controls = s->n_ctl};
}

/* The one rule of which mode allows what: may frames be driven as `want` by `owner` while the stream is
 * in mode `cur` with owner `cur_owner` (attach: a layer takes the stream)? NULL: yes, else why not. */
static const char *mode_refusal(sd_stream_mode cur, const void *cur_owner, sd_stream_mode want, const void *owner,
                                bool attach)
{
    if (attach) { /* a layer takes an idle or synchronous stream */
        if (cur == SD_STREAM_IDLE || cur == SD_STREAM_SYNC)
            return NULL;
        if (cur == want && cur_owner == owner)
            return want == SD_STREAM_GROUPED ? "the stream already is in this group" : NULL;
        if (cur == SD_STREAM_GROUPED && want == SD_STREAM_GROUPED)
            return "the stream already is in another group (remove it there first)";
        if (cur == SD_STREAM_ASYNC)
            return "the stream runs asynchronously (frames were pushed); groups take synchronous streams";
        return "the stream is a member of a stream group (its frames go through the group); remove it from the "
               "group first, or use another stream";
    }
    switch (want) {
    case SD_STREAM_SYNC: /* a group member stays usable on its own */
        return cur == SD_STREAM_ASYNC ? "this stream is running asynchronously (frames were pushed); use "
                                        "sd_stream_push_frame/pull_frame, or another stream"
                                      : NULL;
    case SD_STREAM_ASYNC:
    case SD_STREAM_GROUPED:
        return cur == want && cur_owner == owner ? NULL : "the stream is no longer attached here";
    default:
        return "no frames are driven in mode idle";
    }
}

sd_status sd_stream_attach(sd_stream *s, sd_stream_mode mode, void *owner, sd_stream_detach_fn detach, const char *fn)
{
    if (!s || !owner || (mode != SD_STREAM_ASYNC && mode != SD_STREAM_GROUPED))
        return sd_fail(SD_ERR_INTERNAL, "%s: bad stream attach", fn);
    pthread_mutex_lock(&s->engine);
    const char *why = mode_refusal(s->mode, s->owner, mode, owner, true);
    if (!why && s->owner != owner) {
        s->detach = detach;
        __atomic_store_n(&s->owner, owner, __ATOMIC_RELEASE);
        __atomic_store_n(&s->mode, mode, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->engine);
    return why ? sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %s", fn, why) : SD_OK;
}

void sd_stream_detach(sd_stream *s, const void *owner)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->engine);
    if (owner && s->owner == owner) {
        s->detach = NULL;
        __atomic_store_n(&s->mode, SD_STREAM_IDLE, __ATOMIC_RELEASE);
        __atomic_store_n(&s->owner, NULL, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->engine);
}

void *sd_stream_owner(const sd_stream *s, sd_stream_mode mode)
{
    sd_stream *w = (sd_stream *)s;
    void *o = __atomic_load_n(&w->owner, __ATOMIC_ACQUIRE);
    return o && __atomic_load_n(&w->mode, __ATOMIC_ACQUIRE) == mode ? o : NULL;
}

sd_status sd_stream_enter(sd_stream *s, sd_stream_mode mode, const void *owner, const char *fn)
{
    pthread_mutex_lock(&s->engine);
    const char *why = mode_refusal(s->mode, s->owner, mode, owner, false);
    if (why) {
        pthread_mutex_unlock(&s->engine);
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %s", fn, why);
    }
    if (s->mode == SD_STREAM_IDLE)
        __atomic_store_n(&s->mode, SD_STREAM_SYNC, __ATOMIC_RELEASE);
    return SD_OK;
}

void sd_stream_leave(sd_stream *s) { pthread_mutex_unlock(&s->engine); }

/* ---------------------------------------------------------------- stats */

void sd_stream_note(sd_stream *s, sd_stream_event e, double t)
{
    double now = sd_time_now();
    pthread_mutex_lock(&s->stats_mu);
    sd_stream_stats *st = &s->stats;
    switch (e) {
    case SD_EV_IN:
        st->frames_in++;
        break;
    case SD_EV_SKIP:
        st->frames_skipped++;
        break;
    case SD_EV_DROP:
        st->frames_dropped++;
        break;
    case SD_EV_OUT:
        st->frames_out++;
        if (t > 0) {
            double lat = (now - t) * 1e3;
            st->latency_ms = st->latency_ms > 0 ? 0.9 * st->latency_ms + 0.1 * lat : lat;
        }
        if (s->last_out > 0) {
            double dt = now - s->last_out;
            s->fps_dt_ema = s->fps_dt_ema > 0 ? 0.9 * s->fps_dt_ema + 0.1 * dt : dt;
            st->fps = s->fps_dt_ema > 0 ? 1.0 / s->fps_dt_ema : 0.0;
        }
        s->last_out = now;
        break;
    case SD_EV_STEP: {
        double ms = (now - t) * 1e3;
        st->inference_ms = st->inference_ms > 0 ? 0.9 * st->inference_ms + 0.1 * ms : ms;
        break;
    }
    }
    pthread_mutex_unlock(&s->stats_mu);
}

sd_status sd_stream_get_stats(const sd_stream *s, sd_stream_stats *st)
{
    if (!s || !st)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_get_stats: NULL argument");
    sd_stream *w = (sd_stream *)s;
    pthread_mutex_lock(&w->stats_mu);
    *st = w->stats;
    pthread_mutex_unlock(&w->stats_mu);
    return SD_OK;
}

/* ---------------------------------------------------------------- frames */

/* The similarity filter (StreamDiffusion's SimilarImageFilter) on [-1,1] floats. */
static bool ssf_skip(sd_stream *s, const float *x, size_t n)
{
    /* atomic reads: the async input thread decides without s->engine while
     * sd_stream_set_similarity_filter may change the values */
    float thr;
    int max_skip;
    __atomic_load(&s->p.similarity_threshold, &thr, __ATOMIC_RELAXED);
    __atomic_load(&s->p.max_skip_frames, &max_skip, __ATOMIC_RELAXED);
    if (thr <= 0.0f) /* filter off */
        return false;
    if (!s->first_frame_done) {
        memcpy(s->ssf_prev, x, n * sizeof(float));
        s->first_frame_done = true;
        return false;
    }
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        dot += (double)x[i] * s->ssf_prev[i];
        na += (double)x[i] * x[i];
        nb += (double)s->ssf_prev[i] * s->ssf_prev[i];
    }
    /* torch cosine_similarity: dot / max(|a| |b|, eps) */
    double cos = dot / fmax(sqrt(na) * sqrt(nb), 1e-8);
    double skip_prob = thr >= 1.0f ? 0.0 : fmax(0.0, 1.0 - (1.0 - cos) / (1.0 - thr));
    float u;
    sd_rng_uniform(&s->ssf_rng, &u, 1);
    if (skip_prob < u || s->ssf_skips >= max_skip) {
        memcpy(s->ssf_prev, x, n * sizeof(float));
        s->ssf_skips = 0;
        return false;
    }
    s->ssf_skips++;
    sd_stream_note(s, SD_EV_SKIP, 0);
    return true;
}

bool sd_stream_similarity_skip(sd_stream *s, const float *x, size_t n) { return ssf_skip(s, x, n); }

/* An RGB frame at the stream's size (fitted through `scratch` when its size differs) as bytes
 * (s->frame8), which go to the device as they are and are converted there. */
static sd_status take_frame(sd_stream *s, const sd_image *in, sd_image *scratch)
{
    if (!in || !in->data || in->width <= 0 || in->height <= 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "empty input frame");
    if (in->width == s->W && in->height == s->H) {
        s->frame8 = in->data;
        return SD_OK;
    }
    if (!scratch->data || scratch->width != s->W || scratch->height != s->H) {
        sd_rgb_free(scratch);
        SD_TRY(sd_rgb_alloc(scratch, s->W, s->H));
    }
    sd_rgb_fit_into(in, scratch);
    s->frame8 = scratch->data;
    return SD_OK;
}

sd_status sd_stream_frame_in(sd_stream *s, const sd_stream_in *in, bool *skipped)
{
    sd_backend *be = s->m->be;
    *skipped = false;
    s->in_latent = in->kind == SD_IN_LATENT;
    if (in->kind == SD_IN_LATENT) { /* the frame's latent noise, from the stream's generator */
        for (int k = 0; k < s->n_ctl; k++)
            if (s->ctl[k].from_frame)
                return sd_fail(SD_ERR_INVALID_ARGUMENT, "ControlNet %d makes its control image from the input frame, "
                               "which a txt2img frame does not have: give it a fixed control image", k + 1);
        sd_rng_randn(&s->rng, s->host_noise, (size_t)sd_numel(&s->x_in));
        SD_TRY(sd_stream_refresh_prompt(s));
        return sd_tensor_from_f32(&s->state, &s->x_in, s->host_noise);
    }
    if (in->kind == SD_IN_ACT) { /* filtered by the async input thread already */
        SD_TRY(sd_stream_refresh_prompt(s));
        s->in_u8 = false;
        if (!in->act) /* padding: the frame already in img_in again */
            return SD_OK;
        if (s->n_ctl) { /* the control images from the frames' activations ([-1,1] -> bytes) */
            size_t n = (size_t)sd_numel(&s->img_in), hw = (size_t)s->H * s->W;
            for (size_t i = 0; i < n; i++) {
                float v = s->img_in.dtype == SD_F16 ? sd_f16_to_f32(((const uint16_t *)in->act)[i])
                                                   : ((const float *)in->act)[i];
                size_t f = i / (3 * hw), ch = i / hw % 3, px = i % hw;
                float b = (v + 1.0f) * 127.5f;
                s->ctl_bytes[(f * hw + px) * 3 + ch] = (uint8_t)(b <= 0 ? 0 : b >= 255 ? 255 : b + 0.5f);
            }
            SD_TRY(sd_stream_control_frames(s, s->ctl_bytes));
        }
        size_t bytes = (size_t)sd_numel(&s->img_in) * sd_dtype_size(s->img_in.dtype);
        return in->queued ? be->ops->upload_async(be, s->img_in.data, in->act, bytes)
                          : be->ops->upload(be, s->img_in.data, in->act, bytes);
    }
    sd_stream_note(s, SD_EV_IN, 0);
    SD_TRY(take_frame(s, in->image, in->scratch));
    SD_TRY(sd_stream_refresh_prompt(s));
    size_t n = (size_t)3 * s->H * s->W;
    float thr;
    __atomic_load(&s->p.similarity_threshold, &thr, __ATOMIC_RELAXED);
    if (thr > 0.0f) { /* the filter compares [-1, 1] floats, as StreamDiffusion */
        sd_rgb_to_chw(&(sd_rgb){.width = s->W, .height = s->H, .data = (uint8_t *)s->frame8}, s->host_in);
        if ((*skipped = ssf_skip(s, s->host_in, n)))
            return SD_OK;
    }
    if (s->n_ctl)
        SD_TRY(sd_stream_control_frames(s, s->frame8));
    s->in_u8 = true; /* the bytes as they are: the step converts them on the device */
    return be->ops->upload(be, s->img_in8.data, s->frame8, n);
}

sd_status sd_stream_frame_step(sd_stream *s) { return sd_stream_step(s, s->in_latent, NULL, NULL); }

sd_status sd_stream_frame_out(sd_stream *s, const sd_stream_out *out)
{
    sd_backend *be = s->m->be;
    sd_status st = SD_OK;
    if (out->image) {
        sd_image *img = out->image;
        if (!img->data || img->width != s->W || img->height != s->H) {
            sd_rgb_free(img);
            SD_TRY(sd_rgb_alloc(img, s->W, s->H));
        }
        /* the step made the bytes (img_out8: exactly sd_chw_to_rgb of img_out) */
        st = be->ops->download(be, img->data, s->img_out8.data, (size_t)3 * s->W * s->H);
        if (st == SD_OK)
            sd_stream_note(s, SD_EV_OUT, out->t_in);
        return st;
    }
    if (out->act) {
        size_t bytes = (size_t)sd_numel(&s->img_out) * sd_dtype_size(s->img_out.dtype);
        st = out->queued ? be->ops->download_async(be, out->act, s->img_out.data, bytes)
                         : be->ops->download(be, out->act, s->img_out.data, bytes);
    }
    if (out->queued) { /* the queued upload, the step and the download: one wait for all */
        sd_status ss = be->ops->synchronize(be);
        st = st == SD_OK ? ss : st;
    }
    return st;
}

sd_status sd_stream_run_frame(sd_stream *s, const sd_stream_in *in, const sd_stream_out *out, bool *skipped)
{
    double t0 = sd_time_now();
    sd_status st = sd_stream_frame_in(s, in, skipped);
    bool stepped = st == SD_OK && !*skipped;
    if (stepped)
        st = sd_stream_frame_step(s);
    if (st == SD_OK || out->queued) { /* a queued copy is waited for whatever happened */
        sd_status so = sd_stream_frame_out(s, out);
        st = st == SD_OK ? so : st;
    }
    if (stepped)
        sd_stream_note(s, SD_EV_STEP, t0);
    return st;
}

sd_status sd_stream_img2img(sd_stream *s, const sd_image *in, sd_image *out)
{
    if (!s || !in || !out || !in->data || in->width <= 0 || in->height <= 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_img2img: empty input frame");
    if (s->fbs != 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_img2img takes one frame; this stream has frame_buffer_size %d",
                       s->fbs);
    double t0 = sd_time_now();
    SD_TRY(sd_stream_enter(s, SD_STREAM_SYNC, NULL, "sd_stream_img2img"));
    /* the frame's bytes (resized into the output image's memory when needed: no allocation once it has the
     * size; uploaded before the output overwrites it) */
    bool skipped;
    sd_status st = sd_stream_run_frame(s, &(sd_stream_in){.kind = SD_IN_BYTES, .image = in, .scratch = out},
                                       &(sd_stream_out){.image = out, .t_in = t0}, &skipped);
    sd_stream_leave(s);
    return st;
}

sd_status sd_stream_txt2img(sd_stream *s, sd_image *out)
{
    if (!s || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_txt2img: NULL argument");
    double t0 = sd_time_now();
    SD_TRY(sd_stream_enter(s, SD_STREAM_SYNC, NULL, "sd_stream_txt2img"));
    bool skipped;
    sd_status st = sd_stream_run_frame(s, &(sd_stream_in){.kind = SD_IN_LATENT},
                                       &(sd_stream_out){.image = out, .t_in = t0}, &skipped);
    sd_stream_leave(s);
    return st;
}

/* ---------------------------------------------------------------- live settings */

sd_status sd_stream_set_guidance(sd_stream *s, float guidance_scale, float delta)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL stream");
    SD_TRY(sd_stream_check_guidance(guidance_scale, delta, NULL));
    pthread_mutex_lock(&s->engine);
    s->p.guidance_scale = guidance_scale;
    s->guidance = s->p.cfg_type == SD_CFG_NONE ? 1.0f : guidance_scale;
    s->p.delta = delta;
    pthread_mutex_unlock(&s->engine);
    return SD_OK;
}

sd_status sd_stream_set_t_index(sd_stream *s, const int *t_index_list, int n)
{
    if (!s || !t_index_list)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL stream or t_index_list");
    if (n != s->n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "t_index_list: a live change keeps the number of steps (%d), got %d entries; create a new "
                       "stream for another count", s->n, n);
    sd_stream_params p = s->p;
    memcpy(p.t_index_list, t_index_list, sizeof(int) * (size_t)n);
    SD_TRY(sd_stream_params_validate(&p, NULL));
    pthread_mutex_lock(&s->engine);
    int old[SD_STREAM_MAX_STEPS];
    memcpy(old, s->p.t_index_list, sizeof old);
    memcpy(s->p.t_index_list, t_index_list, sizeof(int) * (size_t)n);
    sd_status st = lcm_coeffs(s);
    if (st == SD_OK)
        st = upload_constants(s);
    if (st != SD_OK) { /* back to the old schedule */
        memcpy(s->p.t_index_list, old, sizeof old);
        if (lcm_coeffs(s) == SD_OK)
            upload_constants(s);
    }
    sd_stream_graphs_free(s); /* captured steps bake the first step's noise coefficient in */
    pthread_mutex_unlock(&s->engine);
    return st;
}

sd_status sd_stream_set_similarity_filter(sd_stream *s, float threshold, int max_skip_frames)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL stream");
    SD_TRY(sd_stream_check_filter(threshold, max_skip_frames, NULL));
    pthread_mutex_lock(&s->engine);
    __atomic_store(&s->p.similarity_threshold, &threshold, __ATOMIC_RELAXED); /* read by the async input thread */
    __atomic_store(&s->p.max_skip_frames, &max_skip_frames, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->engine);
    return SD_OK;
}
