/* txt2img / img2img: the diffusers pipelines, step by step. */
#include "pipe/pipeline.h"

#include "core/memlimit.h"
#include "io/image.h"
#include "sched/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_pipe_out_free(sd_pipe_out *o)
{
    free(o->prompt_embeds);
    free(o->negative_prompt_embeds);
    free(o->latents);
    free(o->image);
    free(o->pooled_prompt_embeds);
    free(o->negative_pooled_prompt_embeds);
    free(o->add_text_embeds);
    free(o->add_time_ids);
    memset(o, 0, sizeof *o);
}

/* Runs `fn` once in a planning context to size the arena, then for real. */
typedef void (*stage_fn)(sd_ctx *ctx, void *user);

static sd_status run_stage(sd_backend *be, stage_fn fn, void *user, sd_ctx *keep, const char *what)
{
    sd_ctx plan;
    sd_ctx_init_plan(&plan, be);
    fn(&plan, user);
    if (plan.status != SD_OK)
        return plan.status;
    /* refuse up front what cannot fit (src/core/memlimit.h) */
    SD_TRY(sd_mem_check(be->host_memory, plan.peak, what,
                        "use a smaller size or batch (SD_MAX_ARENA_BYTES sets the limit)"));
    sd_ctx ctx;
    SD_TRY(sd_ctx_init(&ctx, be, plan.peak));
    fn(&ctx, user);
    sd_status s = ctx.status;
    if (keep && s == SD_OK)
        *keep = ctx;
    else
        sd_ctx_free(&ctx);
    return s;
}

sd_status sd_pipe_stage(sd_backend *be, sd_stage_fn fn, void *user, const char *what)
{
    return run_stage(be, fn, user, NULL, what);
}

/* ---------------------------------------------------------------- text */

typedef struct {
    sd_model *m;
    const int32_t *ids;
    int seq, clip_skip;
    float *out;
} text_job;

static void text_stage(sd_ctx *ctx, void *user)
{
    text_job *j = user;
    sd_model_text_forward(j->m, ctx, j->ids, j->seq, j->clip_skip, j->out);
}

sd_status sd_pipe_encode_prompt(sd_model *m, const char *prompt, int clip_skip, float **embeds, int *seq_len, int *dim)
{
    int seq = sd_model_prompt_tokens(m);
    int32_t *ids = sd_calloc((size_t)seq, sizeof *ids);
    if (!ids)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = sd_model_tokenize(m, NULL, prompt, ids, seq, true);
    int D = m->clip_cfg.hidden_size;
    float *out = s == SD_OK ? sd_malloc((size_t)seq * D * sizeof(float)) : NULL;
    if (s == SD_OK && !out)
        s = SD_ERR_OUT_OF_MEMORY;
    if (s == SD_OK) {
        text_job j = {m, ids, seq, clip_skip, out};
        s = run_stage(m->be, text_stage, &j, NULL, "the text encoder");
    }
    free(ids);
    if (s != SD_OK) {
        free(out);
        return s;
    }
    *embeds = out;
    *seq_len = seq;
    *dim = D;
    return SD_OK;
}

/* ---------------------------------------------------------------- unet */

typedef struct {
    sd_model *m;
    int B;             /* UNet batch */
    int64_t C, h, w;
    const float *x;    /* [B,C,h,w] */
    const float *t;    /* [B] */
    const float *ctx;  /* [B,S,D] */
    int S, D;
    const float *tcond;/* [B,P] or NULL */
    float *out;
    const float *te, *ti; /* SDXL added conditioning [B,P2], [B,6]; NULL otherwise */
    int P2;
    /* ControlNets: control images [B,C,H,W] per net, this step's scales (0: the net does not run; the
     * planning pass runs every net), residual descriptors (n_res), and where to download the summed
     * residuals (res_host[0..n_res) down, [n_res] mid; NULL: not wanted) */
    int n_ctl;
    const sd_pipe_control *ctl;
    float *const *cond;
    const float *scales;
    int64_t ch, cw; /* control image size */
    sd_tensor *res_down;
    int n_res;
    float **res_host;
} unet_job;

static void unet_stage(sd_ctx *ctx, void *user)
{
    unet_job *j = user;
    sd_tensor x = sd_new4(ctx, j->B, j->C, j->h, j->w);
    int64_t tb = j->B;
    sd_tensor t = sd_new(ctx, SD_F32, 1, &tb);
    sd_tensor c = sd_new4(ctx, j->B, j->S, j->D, 0);
    sd_tensor tc = {0};
    if (j->tcond)
        tc = sd_new4(ctx, j->B, j->m->unet_cfg.time_cond_proj_dim, 0, 0);
    sd_tensor_from_f32(ctx, &x, j->x);
    if (!ctx->plan && sd_ok(ctx))
        ctx->be->ops->upload(ctx->be, t.data, j->t, (size_t)j->B * sizeof(float));
    sd_tensor_from_f32(ctx, &c, j->ctx);
    if (j->tcond)
        sd_tensor_from_f32(ctx, &tc, j->tcond);
    sd_unet_added add = {0};
    if (j->te) {
        add.text_embeds = sd_new4(ctx, j->B, j->P2, 0, 0);
        int64_t ne[2] = {j->B, SD_UNET_TIME_IDS};
        add.time_ids = sd_new(ctx, SD_F32, 2, ne);
        sd_tensor_from_f32(ctx, &add.text_embeds, j->te);
        if (!ctx->plan && sd_ok(ctx))
            ctx->be->ops->upload(ctx->be, add.time_ids.data, j->ti, (size_t)j->B * SD_UNET_TIME_IDS * sizeof(float));
    }
    sd_unet_residuals res = {0}, *resp = NULL;
    if (j->n_ctl) { /* ControlNets: their residuals summed in net order, into tensors below the UNet's */
        res.down = j->res_down;
        res.n_down = j->n_res;
        sd_cnet_residuals_new(ctx, j->ctl[0].net, j->B, j->h, j->w, j->res_down, &res.mid);
        for (int k = 0; k < j->n_ctl; k++) {
            if (!ctx->plan && j->scales[k] == 0.0f)
                continue;
            size_t mark = sd_mark(ctx);
            sd_tensor cond = sd_new4(ctx, j->B, sd_cnet_get_config(j->ctl[k].net)->conditioning_channels, j->ch, j->cw);
            sd_tensor_from_f32(ctx, &cond, j->cond[k]);
            sd_cnet_forward(ctx, j->ctl[k].net, x, t, c, cond, j->scales[k], j->te ? &add : NULL, &res, resp != NULL);
            sd_release(ctx, mark);
            resp = &res;
        }
    }
    sd_tensor y = sd_unet_forward_ex(ctx, j->m->unet, x, t, c, j->tcond ? &tc : NULL, NULL, j->te ? &add : NULL, resp);
    sd_tensor_to_f32(ctx, &y, j->out);
    if (j->res_host && !ctx->plan && sd_ok(ctx)) { /* the residuals the UNet got (exact zeros when no net ran) */
        for (int k = 0; k <= j->n_res; k++) {
            sd_tensor r = k < j->n_res ? res.down[k] : res.mid;
            if (resp)
                sd_tensor_to_f32(ctx, &r, j->res_host[k]);
            else
                memset(j->res_host[k], 0, (size_t)sd_numel(&r) * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------- vae */

typedef struct {
    sd_model *m;
    bool taesd, encode;
    int B;
    int64_t C, h, w;  /* input dims */
    const float *in;
    float *out;
    const float *noise; /* encode with the VAE: latent_dist.sample() with this noise (sd_vae_sample) */
} vae_job;

static void vae_stage(sd_ctx *ctx, void *user)
{
    vae_job *j = user;
    sd_tensor x = sd_new4(ctx, j->B, j->C, j->h, j->w);
    sd_tensor_from_f32(ctx, &x, j->in);
    sd_tensor y, lv = {0};
    if (j->taesd) {
        y = j->encode ? sd_taesd_encode(ctx, j->m->taesd, x) : sd_taesd_decode(ctx, j->m->taesd, x);
    } else if (j->encode) {
        y = sd_vae_encode(ctx, j->m->vae, x, &lv);
        if (j->noise) {
            sd_tensor nz = sd_new(ctx, y.dtype, y.ndim, y.ne);
            sd_tensor_from_f32(ctx, &nz, j->noise);
            y = sd_vae_sample(ctx, y, lv, nz);
        }
    } else {
        y = sd_vae_decode(ctx, j->m->vae, x);
    }
    sd_tensor_to_f32(ctx, &y, j->out);
}

static int vae_scale(const sd_model *m, bool taesd)
{
    return taesd ? sd_taesd_downscale(&m->taesd_cfg) : sd_vae_downscale(&m->vae_cfg);
}

/* ---------------------------------------------------------------- run */

static sd_status check_args(sd_model *m, const sd_pipe_args *a)
{
    if (a->use_taesd && !m->taesd)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "use_taesd is set but the model has no TAESD (load one: sd_model_params.taesd)");
    if (!a->use_taesd && !m->vae)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "this model has no VAE; load a TAESD (sd_model_params.taesd) and set use_taesd");
    int sc = vae_scale(m, a->use_taesd); /* (after the checks: the config of a missing VAE is empty) */
    if (a->batch < 1 || a->batch > 64)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "batch size %d out of range (1..64)", a->batch);
    if (a->width < sc || a->height < sc || a->width % 8 || a->height % 8 || a->width > 4096 || a->height > 4096)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "size %dx%d is not supported: width and height must be multiples of 8 between 8 and 4096",
                       a->width, a->height);
    int64_t lat = a->width / sc, div = (int64_t)1 << (m->unet_cfg.n_blocks - 1);
    if ((a->width / sc) % div || (a->height / sc) % div)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "size %dx%d: the latent (%lldx%d) must be divisible by %lld for this UNet",
                       a->width, a->height, (long long)lat, a->height / sc, (long long)div);
    if (a->steps < 1 || a->steps > 1000)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "steps %d out of range (1..1000)", a->steps);
    if (!(a->guidance_scale >= 0 && a->guidance_scale <= 100))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "guidance scale %g out of range (0..100)", a->guidance_scale);
    if (a->image && !(a->strength > 0 && a->strength <= 1))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "strength %g out of range (0 < strength <= 1)", a->strength);
    if (a->n_controls < 0 || a->n_controls > SD_PIPE_MAX_CONTROLS || (a->n_controls && !a->controls))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%d ControlNets: at most %d at once", a->n_controls,
                       SD_PIPE_MAX_CONTROLS);
    for (int k = 0; k < a->n_controls; k++) {
        const sd_pipe_control *ct = &a->controls[k];
        if (!ct->net || !ct->image)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "ControlNet %d: no %s given", k + 1, ct->net ? "control image" : "net");
        if (!(ct->scale >= 0 && ct->scale <= 10))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "ControlNet %d: conditioning scale %g out of range (0..10)", k + 1,
                           ct->scale);
        if (!(ct->start >= 0 && ct->start < ct->end && ct->end <= 1))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "ControlNet %d: guidance start %g / end %g must satisfy 0 <= "
                           "start < end <= 1", k + 1, ct->start, ct->end);
        const sd_cnet_config *cc = sd_cnet_get_config(ct->net);
        char what[32];
        snprintf(what, sizeof what, "%d", k + 1);
        SD_TRY(sd_cnet_check_fit(cc, &m->unet_cfg, what));
        int f = sd_cnet_cond_factor(cc);
        if ((a->width / sc) * f != a->width || (a->height / sc) * f != a->height)
            return sd_fail(SD_ERR_UNSUPPORTED, "ControlNet %d takes control images %d x the latent size, the model's "
                           "image is %d x it (VAE): they do not fit together", k + 1, f, sc);
    }
    if (m->sdxl) {
        const sd_sdxl_micro *mc = &a->micro;
        const int *v[6] = {mc->original_size, mc->crops_top_left, mc->target_size, mc->negative_original_size,
                           mc->negative_crops_top_left, mc->negative_target_size};
        static const char *const what[6] = {"original size", "crop top-left", "target size", "negative original size",
                                            "negative crop top-left", "negative target size"};
        for (int k = 0; k < 6; k++)
            if (v[k][0] < 0 || v[k][1] < 0 || v[k][0] > 65536 || v[k][1] > 65536)
                return sd_fail(SD_ERR_INVALID_ARGUMENT, "SDXL %s %d,%d out of range (0..65536; 0 = default)",
                               what[k], v[k][0], v[k][1]);
    }
    return SD_OK;
}

/* diffusers: keep = 1 - float(i / N < start or (i + 1) / N > end). start / end arrive as floats (0.7f is
 * below the decimal 0.7): compared with a margin far below 1/N, so i/N equal to the decimal value counts as
 * equal, as it does for diffusers' Python floats. */
static float control_scale(const sd_pipe_control *ct, int i, int n)
{
    const double eps = 1e-6;
    bool off = (double)i / n < (double)ct->start - eps || (double)(i + 1) / n > (double)ct->end + eps;
    return off ? 0.0f : ct->scale;
}

sd_status sd_pipe_run(sd_model *m, const sd_pipe_args *a, sd_pipe_out *out)
{
    memset(out, 0, sizeof *out);
    SD_TRY(check_args(m, a));
    const int B = a->batch, sc = vae_scale(m, a->use_taesd);
    const int64_t C = m->unet_cfg.in_channels, h = a->height / sc, w = a->width / sc;
    const size_t n = (size_t)B * C * h * w;
    const bool lcm_embed = m->unet_cfg.time_cond_proj_dim > 0;
    const bool cfg = a->guidance_scale > 1.0f && !lcm_embed;
    sd_status s;
    float *cond = NULL, *uncond = NULL, *ctxbuf = NULL, *tcond = NULL, *x = NULL, *xin = NULL, *eps = NULL,
          *prev = NULL, *den = NULL, *noise = NULL, *tt = NULL;
    float *pooled = NULL, *npooled = NULL, *ate = NULL, *ati = NULL; /* SDXL */
    float *cimg[SD_PIPE_MAX_CONTROLS] = {0}, **res_host = NULL;        /* ControlNets */
    float scales[SD_PIPE_MAX_CONTROLS] = {0};
    sd_tensor *res_down = NULL;
    int n_res = a->n_controls ? sd_cnet_num_residuals(a->controls[0].net) : 0;
    int S = 0, D = 0, P2 = 0;
    double t0 = sd_time_now();
    char what[128];

    /* 1. prompts */
    if (m->sdxl) { /* StableDiffusionXLPipeline.encode_prompt */
        if ((s = sd_sdxl_encode_prompt(m, a->prompt, a->prompt_2, a->clip_skip, &cond, &pooled, &S, &D, &P2)) != SD_OK)
            goto done;
        bool no_negative = !a->negative_prompt || !*a->negative_prompt;
        if (cfg && no_negative && m->force_zeros_for_empty_prompt) { /* zeros; the encoders do not run */
            uncond = sd_calloc((size_t)S * D, sizeof(float));
            npooled = sd_calloc((size_t)P2, sizeof(float));
            if (!uncond || !npooled) {
                s = SD_ERR_OUT_OF_MEMORY;
                goto done;
            }
        } else if (cfg && (s = sd_sdxl_encode_prompt(m, a->negative_prompt ? a->negative_prompt : "",
                                                     a->negative_prompt_2, a->clip_skip, &uncond, &npooled, &S, &D,
                                                     &P2)) != SD_OK) {
            goto done;
        }
    } else {
        if ((s = sd_pipe_encode_prompt(m, a->prompt, a->clip_skip, &cond, &S, &D)) != SD_OK)
            goto done;
        if (cfg && (s = sd_pipe_encode_prompt(m, a->negative_prompt ? a->negative_prompt : "", a->clip_skip, &uncond,
                                              &S, &D)) != SD_OK)
            goto done;
    }
    const int UB = cfg ? 2 * B : B;
    const size_t SD_ = (size_t)S * D;
    ctxbuf = sd_malloc((size_t)UB * SD_ * sizeof(float));
    x = sd_malloc(n * sizeof(float));
    xin = sd_malloc((size_t)UB * C * h * w * sizeof(float));
    eps = sd_malloc((size_t)UB * C * h * w * sizeof(float));
    prev = sd_malloc(n * sizeof(float));
    den = sd_malloc(n * sizeof(float));
    noise = sd_malloc(n * sizeof(float));
    tt = sd_malloc((size_t)UB * sizeof(float));
    if (!ctxbuf || !x || !xin || !eps || !prev || !den || !noise || !tt) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int b = 0; b < UB; b++) /* diffusers order: [uncond x B, cond x B] */
        memcpy(ctxbuf + (size_t)b * SD_, (cfg && b < B) ? uncond : cond, SD_ * sizeof(float));
    if (m->sdxl) { /* added conditioning, one row per UNet row */
        ate = sd_malloc((size_t)UB * P2 * sizeof(float));
        ati = sd_malloc((size_t)UB * SD_UNET_TIME_IDS * sizeof(float));
        if (!ate || !ati) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        float pos_ids[SD_UNET_TIME_IDS], neg_ids[SD_UNET_TIME_IDS];
        sd_sdxl_time_ids(a, pos_ids, neg_ids);
        for (int b = 0; b < UB; b++) {
            memcpy(ate + (size_t)b * P2, (cfg && b < B) ? npooled : pooled, (size_t)P2 * sizeof(float));
            /* diffusers: add_time_ids = cat([neg, pos]).repeat(batch, 1): with CFG the rows alternate neg, pos
             * while the embedding rows are [neg x B, pos x B] (kept as diffusers does it) */
            memcpy(ati + (size_t)b * SD_UNET_TIME_IDS, (cfg && b % 2 == 0) ? neg_ids : pos_ids, sizeof pos_ids);
        }
    }
    for (int k = 0; k < a->n_controls; k++) { /* control images: one row per UNet row */
        size_t one = (size_t)sd_cnet_get_config(a->controls[k].net)->conditioning_channels * a->height * a->width;
        if (!(cimg[k] = sd_malloc((size_t)UB * one * sizeof(float)))) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        for (int b = 0; b < UB; b++)
            memcpy(cimg[k] + (size_t)b * one, a->controls[k].image, one * sizeof(float));
        if (a->on_latents) {
            snprintf(what, sizeof what, "controlnet_cond.%03d", k);
            a->on_latents(a->step_user, what, cimg[k], (size_t)UB * one);
        }
    }
    if (a->n_controls) {
        res_down = sd_calloc((size_t)n_res, sizeof *res_down);
        if (!res_down) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
    }
    if (a->n_controls && a->on_latents) { /* the residuals of every step, for the caller */
        if (!(res_host = sd_calloc((size_t)n_res + 1, sizeof *res_host))) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        for (int k = 0; k <= n_res; k++) {
            int64_t ne[4];
            sd_cnet_residual_shape(a->controls[0].net, UB, h, w, k, ne);
            if (!(res_host[k] = sd_malloc((size_t)(ne[0] * ne[1] * ne[2] * ne[3]) * sizeof(float)))) {
                s = SD_ERR_OUT_OF_MEMORY;
                goto done;
            }
        }
    }
    if (lcm_embed) {
        int P = (int)m->unet_cfg.time_cond_proj_dim;
        tcond = sd_malloc((size_t)B * P * sizeof(float));
        if (!tcond) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        sd_lcm_guidance_embedding(a->guidance_scale - 1.0f, P, tcond);
        for (int b = 1; b < B; b++)
            memcpy(tcond + (size_t)b * P, tcond, (size_t)P * sizeof(float));
    }

    /* 2. timesteps */
    if ((s = sd_scheduler_set_timesteps(a->sched, a->steps, 1.0f, NULL, 0)) != SD_OK)
        goto done;
    int nt = sd_scheduler_num_timesteps(a->sched), first = 0;
    for (int i = 0; i < nt && i < (int)SD_ARRAY_LEN(out->timesteps); i++)
        out->timesteps[out->n_timesteps++] = sd_scheduler_timestep(a->sched, i);
    if (a->image) { /* StableDiffusionImg2ImgPipeline.get_timesteps */
        int init_t = (int)(a->steps * a->strength);
        if (init_t > a->steps)
            init_t = a->steps;
        first = a->steps - init_t < 0 ? 0 : a->steps - init_t;
        if (first >= nt) {
            s = sd_fail(SD_ERR_INVALID_ARGUMENT, "strength %g with %d steps leaves no step to run; raise strength or steps",
                        a->strength, a->steps);
            goto done;
        }
    }

    /* 3. initial latents */
    if (a->image) {
        vae_job vj = {m, a->use_taesd, true, B, 3, a->height, a->width, a->image, x, NULL};
        if (!a->use_taesd) { /* latent_dist.sample(generator) (sd_vae_sample) * scaling_factor */
            a->noise(a->noise_user, "vae.sample", noise, n);
            vj.noise = noise;
        }
        snprintf(what, sizeof what, "the image encoder at %dx%d (batch %d)", a->width, a->height, B);
        s = run_stage(m->be, vae_stage, &vj, NULL, what);
        if (s != SD_OK)
            goto done;
        if (!a->use_taesd)
            for (size_t i = 0; i < n; i++)
                x[i] *= (float)m->vae_cfg.scaling_factor;
        if (a->on_latents)
            a->on_latents(a->step_user, "init_latents", x, n);
        a->noise(a->noise_user, "prepare_latents", noise, n);
        sd_scheduler_add_noise(a->sched, x, noise, sd_scheduler_timestep(a->sched, first), x, n);
        if (a->on_latents)
            a->on_latents(a->step_user, "noisy_latents", x, n);
    } else {
        if (a->latents)
            memcpy(x, a->latents, n * sizeof(float));
        else
            a->noise(a->noise_user, "prepare_latents", x, n);
        float sigma = (float)sd_scheduler_init_noise_sigma(a->sched);
        for (size_t i = 0; i < n; i++)
            x[i] *= sigma;
    }

    /* 4. denoising loop: the UNet arena is planned once and reused every step */
    sd_ctx uctx = {0};
    bool have_ctx = false;
    for (int i = first; i < nt; i++) {
        double t = sd_scheduler_timestep(a->sched, i);
        sd_scheduler_scale_model_input(a->sched, i, x, xin, n);
        if (cfg)
            memcpy(xin + n, xin, n * sizeof(float));
        for (int b = 0; b < UB; b++)
            tt[b] = (float)t;
        for (int k = 0; k < a->n_controls; k++)
            scales[k] = control_scale(&a->controls[k], i - first, nt - first);
        unet_job uj = {m, UB, C, h, w, xin, tt, ctxbuf, S, D, tcond, eps, ate, ati, P2,
                       a->n_controls, a->controls, cimg, scales, a->height, a->width, res_down, n_res, res_host};
        if (!have_ctx) {
            snprintf(what, sizeof what, "the UNet at %dx%d (batch %d%s)", a->width, a->height, B,
                     cfg ? ", x2 for guidance" : "");
            if ((s = run_stage(m->be, unet_stage, &uj, &uctx, what)) != SD_OK)
                goto done;
            have_ctx = true;
        } else {
            sd_ctx_reset(&uctx);
            unet_stage(&uctx, &uj);
            if ((s = uctx.status) != SD_OK)
                break;
        }
        if (a->on_unet)
            a->on_unet(a->step_user, i - first, t, xin, eps, (size_t)UB * C * h * w);
        for (int k = 0; res_host && k <= n_res; k++) {
            int64_t ne[4];
            sd_cnet_residual_shape(a->controls[0].net, UB, h, w, k, ne);
            if (k < n_res)
                snprintf(what, sizeof what, "step.%03d.down_block_additional_residuals.%03d", i - first, k);
            else
                snprintf(what, sizeof what, "step.%03d.mid_block_additional_residual", i - first);
            a->on_latents(a->step_user, what, res_host[k], (size_t)(ne[0] * ne[1] * ne[2] * ne[3]));
        }
        if (cfg) {
            float g = a->guidance_scale;
            for (size_t k = 0; k < n; k++)
                eps[k] = eps[k] + g * (eps[n + k] - eps[k]);
        }
        const float *nz = NULL;
        if (sd_scheduler_step_needs_noise(a->sched, i)) {
            a->noise(a->noise_user, "scheduler.step", noise, n);
            nz = noise;
        }
        if ((s = sd_scheduler_step(a->sched, i, eps, x, nz, prev, den, n)) != SD_OK)
            break;
        memcpy(x, prev, n * sizeof(float));
        if (a->on_step)
            a->on_step(a->step_user, i - first, t, x, den, n);
        if (a->progress)
            a->progress(a->progress_user, i - first + 1, nt - first, sd_time_now() - t0);
    }
    if (have_ctx)
        sd_ctx_free(&uctx);
    if (s != SD_OK)
        goto done;

    /* 5. decode */
    out->image_n = (size_t)B * 3 * a->height * a->width;
    out->image = sd_malloc(out->image_n * sizeof(float));
    if (!out->image) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    float inv = a->use_taesd ? 1.0f : 1.0f / (float)m->vae_cfg.scaling_factor;
    for (size_t i = 0; i < n; i++)
        prev[i] = x[i] * inv;
    vae_job dj = {m, a->use_taesd, false, B, C, h, w, prev, out->image, NULL};
    snprintf(what, sizeof what, "the image decoder at %dx%d (batch %d)", a->width, a->height, B);
    s = run_stage(m->be, vae_stage, &dj, NULL, what);
    if (s == SD_OK) {
        out->latents = x;
        out->latents_n = n;
        x = NULL;
        out->prompt_embeds = cond;
        out->negative_prompt_embeds = uncond;
        out->embeds_n = SD_;
        cond = uncond = NULL;
        out->pooled_prompt_embeds = pooled;
        out->negative_pooled_prompt_embeds = npooled;
        out->pooled_n = (size_t)P2;
        out->add_text_embeds = ate;
        out->add_time_ids = ati;
        out->unet_rows = UB;
        pooled = npooled = ate = ati = NULL;
    }
done:
    free(cond);
    free(uncond);
    free(ctxbuf);
    free(tcond);
    free(x);
    free(xin);
    free(eps);
    free(prev);
    free(den);
    free(noise);
    free(tt);
    free(pooled);
    free(npooled);
    free(ate);
    free(ati);
    for (int k = 0; k < SD_PIPE_MAX_CONTROLS; k++)
        free(cimg[k]);
    for (int k = 0; res_host && k <= n_res; k++)
        free(res_host[k]);
    free(res_host);
    free(res_down);
    if (s != SD_OK)
        sd_pipe_out_free(out);
    return s;
}
