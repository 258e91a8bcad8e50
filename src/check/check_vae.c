/* VAE cases (vae_kl, vae_tiny): AutoencoderKL and AutoencoderTiny.
 *
 * AutoencoderKL: image -> encode -> latent_dist.{mean,logvar,std,sample}
 * (sample = mean + std * sample_noise), latent -> decode -> decoded,
 * forward_mode_roundtrip = decode(mean) (forward with sample_posterior=False).
 * AutoencoderTiny: image -> latents, latent -> decoded, roundtrip_decoded =
 * decode(encode(image)), scale_latents(latents).
 * enc.act.<name> / dec.act.<name> are compared through the model hooks
 * during the encode / decode of the given inputs. Every expected tensor must
 * be produced: one the runner does not know counts as a failure. */
#include "check/check.h"
#include "backend/ops.h"
#include "models/vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DONE 64

typedef struct vae_run {
    sd_case *c;
    const char *prefix; /* "enc." / "dec." while hooking */
    const char *done[MAX_DONE];
    int n_done;
} vae_run;

static bool has_expected(sd_case *c, const char *name) { return c->expected && sd_st_find(c->expected, name); }

static void compare_tensor(vae_run *r, const char *name, sd_tensor t)
{
    sd_case_compare_tensor(r->c, name, t);
    const sd_st_tensor *e = r->c->expected ? sd_st_find(r->c->expected, name) : NULL;
    bool seen = false;
    for (int i = 0; i < r->n_done && !seen; i++)
        seen = !strcmp(r->done[i], name);
    if (e && !seen && r->n_done < MAX_DONE)
        r->done[r->n_done++] = e->name;
}

static void vae_hook(void *user, const char *name, sd_tensor t)
{
    vae_run *r = user;
    if (!r->prefix)
        return;
    char key[300];
    snprintf(key, sizeof key, "%sact.%s", r->prefix, name);
    if (has_expected(r->c, key))
        compare_tensor(r, key, t);
}

/* Uploads a case input into a new arena tensor (shape from the file). */
static sd_tensor input_tensor(sd_ctx *ctx, sd_case *c, const char *name)
{
    const sd_st_tensor *st = sd_case_input(c, name);
    if (!st)
        return sd_ctx_fail(ctx, SD_ERR_NOT_FOUND, "%s", sd_last_error());
    if (st->ndim < 1 || st->ndim > SD_MAX_DIMS)
        return sd_ctx_fail(ctx, SD_ERR_FORMAT, "%s: input '%s' has rank %d", c->name, name, st->ndim);
    sd_tensor t = sd_new(ctx, ctx->be->act_dtype, st->ndim, st->shape);
    if (!sd_ok(ctx) || ctx->plan)
        return t;
    float *host = sd_malloc(st->numel * sizeof(float) + 1);
    if (!host)
        return sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "out of memory");
    sd_st_to_f32(st, host);
    sd_status s = sd_tensor_from_f32(ctx, &t, host);
    free(host);
    if (s != SD_OK)
        return sd_ctx_fail(ctx, s, "%s", sd_last_error());
    return t;
}

static void kl_pass(vae_run *r, sd_ctx *ctx, const sd_vae *m)
{
    sd_case *c = r->c;
    bool real = !ctx->plan;
    size_t m0 = sd_mark(ctx);
    /* encode */
    sd_tensor img = input_tensor(ctx, c, "image");
    sd_tensor logvar;
    r->prefix = "enc.";
    sd_tensor mean = sd_vae_encode(ctx, m, img, &logvar);
    r->prefix = NULL;
    if (real && sd_ok(ctx)) {
        compare_tensor(r, "latent_dist.mean", mean);
        compare_tensor(r, "latent_dist.logvar", logvar);
    }
    size_t m1 = sd_mark(ctx);
    if (has_expected(c, "latent_dist.std")) {
        sd_tensor std = sd_unary(ctx, sd_affine(ctx, logvar, 0.5f, 0.0f), SD_UNARY_EXP);
        if (real && sd_ok(ctx))
            compare_tensor(r, "latent_dist.std", std);
        sd_release(ctx, m1);
    }
    if (has_expected(c, "latent_dist.sample")) {
        sd_tensor noise = input_tensor(ctx, c, "sample_noise");
        sd_tensor smp = sd_vae_sample(ctx, mean, logvar, noise);
        if (real && sd_ok(ctx))
            compare_tensor(r, "latent_dist.sample", smp);
        sd_release(ctx, m1);
    }
    if (has_expected(c, "forward_mode_roundtrip")) {
        sd_tensor rt = sd_vae_decode(ctx, m, mean);
        if (real && sd_ok(ctx))
            compare_tensor(r, "forward_mode_roundtrip", rt);
        sd_release(ctx, m1);
    }
    sd_release(ctx, m0);
    /* decode */
    if (has_expected(c, "decoded")) {
        sd_tensor z = input_tensor(ctx, c, "latent");
        r->prefix = "dec.";
        sd_tensor dec = sd_vae_decode(ctx, m, z);
        r->prefix = NULL;
        if (real && sd_ok(ctx))
            compare_tensor(r, "decoded", dec);
        sd_release(ctx, m0);
    }
}

static void tiny_pass(vae_run *r, sd_ctx *ctx, const sd_taesd *m)
{
    sd_case *c = r->c;
    bool real = !ctx->plan;
    size_t m0 = sd_mark(ctx);
    sd_tensor img = input_tensor(ctx, c, "image");
    r->prefix = "enc.";
    sd_tensor lat = sd_taesd_encode(ctx, m, img);
    r->prefix = NULL;
    if (real && sd_ok(ctx))
        compare_tensor(r, "latents", lat);
    size_t m1 = sd_mark(ctx);
    if (has_expected(c, "scale_latents")) {
        sd_tensor sl = sd_taesd_scale_latents(ctx, m, lat);
        if (real && sd_ok(ctx))
            compare_tensor(r, "scale_latents", sl);
        sd_release(ctx, m1);
    }
    if (has_expected(c, "roundtrip_decoded")) {
        sd_tensor rt = sd_taesd_decode(ctx, m, lat);
        if (real && sd_ok(ctx))
            compare_tensor(r, "roundtrip_decoded", rt);
        sd_release(ctx, m1);
    }
    sd_release(ctx, m0);
    if (has_expected(c, "decoded")) {
        sd_tensor z = input_tensor(ctx, c, "latent");
        r->prefix = "dec.";
        sd_tensor dec = sd_taesd_decode(ctx, m, z);
        r->prefix = NULL;
        if (real && sd_ok(ctx))
            compare_tensor(r, "decoded", dec);
        sd_release(ctx, m0);
    }
}

sd_status sd_check_vae(sd_case *c)
{
    char *dir = sd_case_path(c, "model_dir");
    if (!dir)
        return SD_ERR_NOT_FOUND;
    char *cfg = sd_path_join(dir, "config.json");
    sd_config j = {0};
    sd_status s = cfg ? sd_config_load(cfg, &j) : SD_ERR_OUT_OF_MEMORY;
    free(cfg);
    const char *cls = NULL;
    if (s == SD_OK)
        s = sd_config_str(&j, "_class_name", "", &cls);
    bool tiny = s == SD_OK && !strcmp(cls, "AutoencoderTiny");
    sd_config_free(&j);
    sd_vae *kl = NULL;
    sd_taesd *ts = NULL;
    if (s == SD_OK)
        s = tiny ? sd_taesd_load_dir(c->be, dir, &ts) : sd_vae_load_dir(c->be, dir, &kl);
    free(dir);
    if (s != SD_OK)
        return s;

    vae_run r = {.c = c};
    sd_ctx plan;
    sd_ctx_init_plan(&plan, c->be);
    if (tiny)
        tiny_pass(&r, &plan, ts);
    else
        kl_pass(&r, &plan, kl);
    s = plan.status;
    sd_ctx ctx = {0};
    if (s == SD_OK)
        s = sd_ctx_init(&ctx, c->be, plan.peak);
    if (s == SD_OK) {
        ctx.hook = vae_hook;
        ctx.hook_user = &r;
        if (tiny)
            tiny_pass(&r, &ctx, ts);
        else
            kl_pass(&r, &ctx, kl);
        s = ctx.status;
        if (s == SD_OK)
            sd_case_check_peak(c, ctx.peak, plan.peak);
        sd_ctx_free(&ctx);
    }
    if (s == SD_OK)
        sd_case_check_produced(c, r.done, r.n_done, "VAE");
    sd_vae_free(kl);
    sd_taesd_free(ts);
    return s;
}
