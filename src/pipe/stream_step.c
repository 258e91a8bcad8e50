/* The StreamDiffusion engine's step: the math of one stream batch step (encode, the batched UNet with
 * RCFG, the consistency step, the buffer update, decode) and its CUDA graph capture/replay. The engine
 * itself (struct, creation, prompts, modes, frames) is stream.c; both see struct sd_stream (stream.h). */
#include "pipe/stream.h"
#include "pipe/control.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- step */

#define HOOK(name, t) sd_hook(ctx, (name), (t))

static sd_tensor rows(sd_ctx *ctx, sd_tensor t, int64_t r0, int64_t n) { return sd_view_rows(ctx, t, r0, n); }

/* The UNet input rows for the stream batch X (uncond rows first for
 * initialize / full) and their timesteps (step-index list `idx`). */
static sd_tensor guided_in(sd_stream *s, sd_ctx *ctx, sd_tensor X, int idx, sd_tensor *t)
{
    const int fbs = s->fbs;
    sd_cfg_type cfg = s->p.cfg_type;
    sd_tensor Xin = X;
    if (cfg == SD_CFG_INITIALIZE)
        Xin = sd_concat(ctx, rows(ctx, X, 0, fbs), X, 0);
    else if (cfg == SD_CFG_FULL)
        Xin = sd_concat(ctx, X, X, 0);
    HOOK("unet_call_sample", Xin);
    *t = rows(ctx, s->t_unet, (int64_t)idx * s->UB, Xin.ne[0]);
    HOOK("unet_call_timestep", *t);
    return Xin;
}

/* Guidance on the UNet output eps of guided_in's rows; returns model_pred [B,...]. */
static sd_tensor guided_out(sd_stream *s, sd_ctx *ctx, int B, sd_tensor eps)
{
    const int fbs = s->fbs;
    sd_cfg_type cfg = s->p.cfg_type;
    HOOK("unet_call_out", eps);
    sd_tensor text = eps;
    if (cfg == SD_CFG_INITIALIZE) {
        text = rows(ctx, eps, fbs, B);
        sd_copy_into(ctx, rows(ctx, s->stock, 0, fbs), rows(ctx, eps, 0, fbs));
    } else if (cfg == SD_CFG_FULL) {
        text = rows(ctx, eps, B, B);
    }
    if (s->guidance > 1.0f && cfg != SD_CFG_NONE) {
        sd_tensor uncond = cfg == SD_CFG_FULL ? rows(ctx, eps, 0, B) : sd_affine(ctx, rows(ctx, s->stock, 0, B), s->p.delta, 0);
        return sd_add(ctx, uncond, sd_affine(ctx, sd_sub(ctx, text, uncond), s->guidance, 0));
    }
    return text;
}

/* The ControlNets' residuals for the UNet input rows Xin (step-index list idx) into *res (allocated on ctx,
 * descriptors in s->res_down): their control images per UNet row are the batch's rows (denoising batch:
 * cond_rows, shifted with the latents; sequential: the new frame's), duplicated as guided_in duplicates the
 * latents; ap: SDXL's added conditions of the rows (NULL for other models). */
static void control_residuals(sd_stream *s, sd_ctx *ctx, sd_tensor Xin, sd_tensor t, int idx, const sd_unet_added *ap,
                              sd_unet_residuals *res)
{
    const int fbs = s->fbs;
    *res = (sd_unet_residuals){s->res_down, s->n_res, {0}};
    sd_cnet_residuals_new(ctx, s->ctl[0].net, Xin.ne[0], s->h, s->w, s->res_down, &res->mid);
    for (int k = 0; k < s->n_ctl; k++) {
        size_t mark = sd_mark(ctx);
        sd_tensor base = s->p.use_denoising_batch ? s->ctl[k].cond_rows : s->ctl[k].cond_new; /* [B,3,H,W] */
        sd_tensor cond = base;
        if (s->p.cfg_type == SD_CFG_INITIALIZE)
            cond = sd_concat(ctx, rows(ctx, base, 0, fbs), base, 0);
        else if (s->p.cfg_type == SD_CFG_FULL)
            cond = sd_concat(ctx, base, base, 0);
        sd_tensor ks = rows(ctx, s->ctl[k].k_scale, (int64_t)idx * s->UB, Xin.ne[0]); /* [UB,1,1,1] */
        sd_cnet_forward_rows(ctx, s->ctl[k].net, Xin, t, s->embeds, cond, ks, ap, res, k > 0);
        sd_release(ctx, mark);
    }
}

/* The UNet on its input rows Xin (step-index list idx), with the ControlNets' residuals when the stream has
 * nets. */
static sd_tensor unet_call(sd_stream *s, sd_ctx *ctx, sd_tensor Xin, sd_tensor t, int idx)
{
    sd_unet_added add = {s->add_te, s->add_ids}; /* SDXL: the rows' added conditions (Xin has UB rows) */
    const sd_unet_added *ap = s->P ? &add : NULL;
    if (!s->n_ctl)
        return sd_unet_forward_added(ctx, s->m->unet, Xin, t, (sd_tensor){0}, NULL, s->kv, ap);
    sd_unet_residuals res;
    control_residuals(s, ctx, Xin, t, idx, ap, &res);
    return sd_unet_forward_ex(ctx, s->m->unet, Xin, t, (sd_tensor){0}, NULL, s->kv, ap, &res);
}

static sd_tensor unet_guided(sd_stream *s, sd_ctx *ctx, sd_tensor X, int idx)
{
    sd_tensor t;
    sd_tensor Xin = guided_in(s, ctx, X, idx, &t);
    sd_tensor eps = unet_call(s, ctx, Xin, t, idx);
    return guided_out(s, ctx, (int)X.ne[0], eps);
}

/* F = (x - beta*eps)/alpha; c_out*F + c_skip*x, with per-row coefficient tensors. */
static sd_tensor consistency(sd_ctx *ctx, sd_tensor x, sd_tensor eps, sd_tensor k_beta, sd_tensor k_inv_alpha,
                             sd_tensor k_c_out, sd_tensor k_c_skip)
{
    sd_tensor F = sd_mul(ctx, sd_sub(ctx, x, sd_mul(ctx, eps, k_beta)), k_inv_alpha);
    return sd_add(ctx, sd_mul(ctx, F, k_c_out), sd_mul(ctx, x, k_c_skip));
}

/* The image -> x_t of the first step. */
static sd_tensor encode_frame(sd_stream *s, sd_ctx *ctx)
{
    sd_tensor z, img = s->img_in;
    if (ctx->plan || s->in_u8) { /* bytes -> [-1, 1] on the device (plans count it either way) */
        sd_tensor f = sd_rgb8_to_chw(ctx, s->img_in8);
        if (s->in_u8)
            img = f;
    }
    if (s->taesd) {
        z = sd_taesd_encode(ctx, s->m->taesd, img);
    } else { /* latent_dist.sample() (sd_vae_sample), its noise drawn per frame */
        sd_tensor logvar;
        sd_tensor mean = sd_vae_encode(ctx, s->m->vae, img, &logvar);
        sd_tensor nz = sd_new4(ctx, mean.ne[0], mean.ne[1], mean.ne[2], mean.ne[3]);
        if (!ctx->plan && sd_ok(ctx)) {
            sd_rng_randn(&s->rng, s->host_noise, (size_t)sd_numel(&nz));
            sd_tensor_from_f32(ctx, &nz, s->host_noise);
        }
        z = sd_vae_sample(ctx, mean, logvar, nz);
    }
    z = sd_affine(ctx, z, s->vae_scale, 0);
    sd_tensor x = sd_add(ctx, sd_affine(ctx, z, s->alpha[0], 0),
                         sd_affine(ctx, rows(ctx, s->init_noise, 0, s->fbs), s->beta[0], 0));
    HOOK("x_t_latent_new", x);
    return x;
}

static void decode_out(sd_stream *s, sd_ctx *ctx, sd_tensor x0)
{
    sd_tensor z = sd_affine(ctx, x0, 1.0f / s->vae_scale, 0);
    sd_tensor img = s->taesd ? sd_taesd_decode(ctx, s->m->taesd, z) : sd_vae_decode(ctx, s->m->vae, z);
    HOOK("output", img);
    sd_copy_into(ctx, s->img_out, img);
    sd_copy_into(ctx, s->img_out8, sd_chw_to_rgb8(ctx, img)); /* the output image's bytes, made on the device */
}

/* Stream batch, first half: X = cat(x_new, buffer), the stock noise shift
 * and the UNet input rows. */
static sd_tensor batch_pre(sd_stream *s, sd_ctx *ctx, sd_tensor xn, sd_tensor *Xin, sd_tensor *t)
{
    const int B = s->B, fbs = s->fbs;
    sd_tensor X = xn;
    if (B > fbs) {
        X = sd_concat(ctx, xn, s->buffer, 0);
        sd_tensor st = sd_concat(ctx, rows(ctx, s->init_noise, 0, fbs), rows(ctx, s->stock, 0, B - fbs), 0);
        sd_copy_into(ctx, s->stock, st);
    }
    HOOK("unet_x_t_latent", X);
    HOOK("stock_noise_before", s->stock);
    for (int k = 0; k < s->n_ctl; k++) { /* the control images move with their latents: the new frame's first */
        sd_tensor c = s->ctl[k].cond_rows;
        if (B > fbs)
            sd_copy_into(ctx, c, sd_concat(ctx, s->ctl[k].cond_new, rows(ctx, c, 0, B - fbs), 0));
        else
            sd_copy_into(ctx, c, s->ctl[k].cond_new);
    }
    *Xin = guided_in(s, ctx, X, 0, t);
    return X;
}

/* Stream batch, second half: guidance, consistency, RCFG stock update,
 * buffer update and decode, from the UNet output eps of batch_pre's rows. */
static void batch_post(sd_stream *s, sd_ctx *ctx, sd_tensor X, sd_tensor eps)
{
    const int B = s->B, fbs = s->fbs;
    bool rcfg = s->p.cfg_type == SD_CFG_SELF || s->p.cfg_type == SD_CFG_INITIALIZE;
    sd_tensor mp = guided_out(s, ctx, B, eps);
    HOOK("model_pred", mp);
    sd_tensor x0 = consistency(ctx, X, mp, s->k_beta, s->k_inv_alpha, s->k_c_out, s->k_c_skip);
    HOOK("x_0_pred_batch", x0);
    if (rcfg) {
        sd_tensor sn = sd_mul(ctx, s->stock, s->k_beta);
        sd_tensor dx = consistency(ctx, sn, mp, s->k_beta, s->k_inv_alpha, s->k_c_out, s->k_c_skip);
        /* consistency() computed c_out*((sn - beta*mp)/alpha) + c_skip*sn */
        dx = sd_mul(ctx, dx, s->k_next);
        sd_copy_into(ctx, s->stock, sd_add(ctx, s->init_noise_rolled, dx));
    }
    HOOK("stock_noise_after", s->stock);
    sd_tensor out = B > fbs ? rows(ctx, x0, B - fbs, fbs) : x0;
    HOOK("x_0_pred_out", out);
    if (B > fbs) {
        sd_tensor buf = sd_mul(ctx, rows(ctx, x0, 0, B - fbs), s->k_alpha_buf);
        if (s->p.do_add_noise)
            buf = sd_add(ctx, buf, sd_mul(ctx, rows(ctx, s->init_noise, fbs, B - fbs), s->k_beta_buf));
        sd_copy_into(ctx, s->buffer, buf);
        HOOK("x_t_latent_buffer_after", s->buffer);
    }
    decode_out(s, ctx, out);
}

static void step_batch(sd_stream *s, sd_ctx *ctx, sd_tensor xn)
{
    sd_tensor Xin, t;
    sd_tensor X = batch_pre(s, ctx, xn, &Xin, &t);
    sd_tensor eps = unet_call(s, ctx, Xin, t, 0);
    batch_post(s, ctx, X, eps);
}

/* use_denoising_batch = false: the steps run one after another (reference:
 * init_noise is replaced by the incoming x_t and fresh noise re-noises
 * between steps). */
static void step_sequential(sd_stream *s, sd_ctx *ctx, sd_tensor xn)
{
    sd_copy_into(ctx, s->init_noise, xn);
    sd_tensor x = xn, x0 = xn;
    for (int idx = 0; idx < s->n; idx++) {
        HOOK("unet_x_t_latent", x);
        sd_tensor mp = unet_guided(s, ctx, x, idx);
        HOOK("model_pred", mp);
        sd_tensor F = sd_affine(ctx, sd_sub(ctx, x, sd_affine(ctx, mp, s->beta[idx], 0)), 1.0f / s->alpha[idx], 0);
        x0 = sd_add(ctx, sd_affine(ctx, F, s->c_out[idx], 0), sd_affine(ctx, x, s->c_skip[idx], 0));
        HOOK("x_0_pred_batch", x0);
        if (idx + 1 < s->n) {
            sd_tensor nz = sd_new4(ctx, x0.ne[0], x0.ne[1], x0.ne[2], x0.ne[3]);
            if (!ctx->plan && sd_ok(ctx)) {
                sd_rng_randn(&s->rng, s->host_noise, (size_t)sd_numel(&nz));
                sd_tensor_from_f32(ctx, &nz, s->host_noise);
            }
            x = sd_affine(ctx, x0, s->alpha[idx + 1], 0);
            if (s->p.do_add_noise)
                x = sd_add(ctx, x, sd_affine(ctx, nz, s->beta[idx + 1], 0));
        }
    }
    HOOK("x_0_pred_out", x0);
    decode_out(s, ctx, x0);
}

/* ---------------------------------------------------------------- graphs */

static bool graph_matches(const sd_stream *s, const struct sd_stream_graph *g)
{
    return g->exec && g->guidance == s->guidance && g->delta == s->p.delta &&
           g->weights_version == s->m->weights_version;
}

void sd_stream_graphs_free(sd_stream *s)
{
    for (int i = 0; i < 3; i++)
        if (s->graph[i].exec) {
            s->m->be->ops->graph_free(s->m->be, s->graph[i].exec);
            s->graph[i].exec = NULL;
        }
}

typedef struct step_rec {
    sd_stream *s;
    bool use_latent;
} step_rec;

static void record_step(sd_ctx *ctx, void *user)
{
    step_rec *r = user;
    step_batch(r->s, ctx, r->use_latent ? r->s->x_in : encode_frame(r->s, ctx));
}

/* The step as a replayed graph: captured on first use (and again when guidance, delta or the weights
 * changed; the prompt K/V are updated in place, so a prompt change needs no capture). Only for the
 * stream batch with TAESD or a latent input: those steps have no host work between their ops. Returns
 * SD_ERR_UNSUPPORTED (graphs_off set) when the capture failed: the caller runs the step eagerly. */
static sd_status step_graph(sd_stream *s, bool use_latent)
{
    sd_backend *be = s->m->be;
    struct sd_stream_graph *g = &s->graph[use_latent ? 2 : s->in_u8 ? 1 : 0];
    if (g->exec && !graph_matches(s, g)) {
        be->ops->graph_free(be, g->exec);
        g->exec = NULL;
    }
    if (!g->exec) {
        sd_ctx_reset(&s->ctx);
        void *exec;
        if (sd_ctx_capture(&s->ctx, record_step, &(step_rec){s, use_latent}, &exec) != SD_OK) {
            fprintf(stderr, "streamdiff: stream step graph not used (%s); running the ops one by one\n",
                    sd_last_error());
            s->graphs_off = true;
            return SD_ERR_UNSUPPORTED;
        }
        *g = (struct sd_stream_graph){exec, s->guidance, s->p.delta, s->m->weights_version};
    }
    return be->ops->graph_launch(be, g->exec);
}

sd_status sd_stream_step(sd_stream *s, bool use_latent, void (*hook)(void *, const char *, sd_tensor), void *user)
{
    sd_ctx *ctx = &s->ctx;
    if (!ctx->plan && !hook && s->p.use_graphs && !s->graphs_off && s->m->be->ops->capture_begin &&
        s->p.use_denoising_batch && (use_latent || s->taesd)) {
        sd_status st = step_graph(s, use_latent);
        if (st != SD_ERR_UNSUPPORTED) {
            s->calls += st == SD_OK;
            return st;
        }
    }
    if (!ctx->plan)
        sd_ctx_reset(ctx);
    ctx->hook = hook;
    ctx->hook_user = user;
    sd_tensor xn = use_latent ? s->x_in : encode_frame(s, ctx);
    if (s->p.use_denoising_batch)
        step_batch(s, ctx, xn);
    else
        step_sequential(s, ctx, xn);
    ctx->hook = NULL;
    s->calls += !ctx->plan;
    return ctx->status;
}

/* The stream batch split around its UNet call, for the stream group
 * (stream_group.c: many streams' rows in one UNet call). */
sd_tensor sd_stream_batch_pre(sd_stream *s, sd_ctx *ctx, sd_tensor *Xin, sd_tensor *t, sd_unet_added *add,
                              sd_unet_residuals *res)
{
    *add = (sd_unet_added){s->add_te, s->add_ids};
    sd_tensor xn = !ctx->plan && s->in_latent ? s->x_in : encode_frame(s, ctx);
    sd_tensor X = batch_pre(s, ctx, xn, Xin, t);
    *res = (sd_unet_residuals){0};
    if (s->n_ctl)
        control_residuals(s, ctx, *Xin, *t, 0, s->P ? add : NULL, res);
    return X;
}

void sd_stream_batch_post(sd_stream *s, sd_ctx *ctx, sd_tensor X, sd_tensor eps)
{
    batch_post(s, ctx, X, eps);
    s->calls += !ctx->plan;
}

const sd_unet_kv *sd_stream_kv(const sd_stream *s, uint64_t *version)
{
    *version = s->kv_version;
    return s->kv;
}
