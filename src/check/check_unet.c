/* UNet2DConditionModel cases: forward(sample, timestep, encoder_hidden_states
 * [, timestep_cond] [, added_cond_kwargs text_embeds + time_ids (SDXL)]) compared
 * with out_sample and every act.* activation.
 * The forward runs twice: projecting the context directly, and through the
 * cross-attention K/V cache (outputs must agree). F16 weight files are run
 * once converted to F32 at load and once kept F16 in memory. */
#include "backend/ops.h"
#include "check/check.h"
#include "models/unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct unet_inputs {
    float *x, *t, *c, *tc, *te, *ti;
    int64_t xs[4], cs[3], tcs[2], tes[2], tis[2];
    bool has_tc, has_added; /* has_added: SDXL text_embeds + time_ids */
} unet_inputs;

static void free_inputs(unet_inputs *in)
{
    free(in->x);
    free(in->t);
    free(in->c);
    free(in->tc);
    free(in->te);
    free(in->ti);
}

static sd_tensor upload(sd_ctx *ctx, sd_dtype dt, const float *host, int ndim, const int64_t *ne)
{
    sd_tensor t = sd_new(ctx, dt, ndim, ne);
    if (sd_ok(ctx)) {
        sd_status s = sd_tensor_from_f32(ctx, &t, host);
        if (s != SD_OK)
            sd_ctx_fail(ctx, s, "uploading an input: %s", sd_last_error());
    }
    return t;
}

/* One forward from the inputs; with kv, the cache is filled first and the
 * forward gets no context at all. */
static sd_tensor run(sd_ctx *ctx, const sd_unet *u, const unet_inputs *in, sd_unet_kv *kv)
{
    sd_dtype act = ctx->be->act_dtype;
    sd_tensor x = upload(ctx, act, in->x, 4, in->xs);
    int64_t B = in->xs[0];
    sd_tensor t = upload(ctx, SD_F32, in->t, 1, &B);
    sd_tensor tc = in->has_tc ? upload(ctx, act, in->tc, 2, in->tcs) : (sd_tensor){0};
    sd_tensor ctxt = {0};
    size_t m = sd_mark(ctx);
    sd_tensor cx = upload(ctx, act, in->c, 3, in->cs);
    if (kv) {
        sd_unet_kv_compute(ctx, u, cx, kv);
        sd_release(ctx, m); /* the prompt is no longer needed */
    } else {
        ctxt = cx;
    }
    sd_unet_added add = {0};
    if (in->has_added) {
        add.text_embeds = upload(ctx, act, in->te, 2, in->tes);
        add.time_ids = upload(ctx, SD_F32, in->ti, 2, in->tis);
    }
    return sd_unet_forward_added(ctx, u, x, t, ctxt, in->has_tc ? &tc : NULL, kv, in->has_added ? &add : NULL);
}

static sd_status download(sd_ctx *ctx, sd_tensor t, float **out)
{
    size_t n = (size_t)sd_numel(&t);
    *out = sd_malloc(n * sizeof(float) + 1);
    if (!*out)
        return SD_ERR_OUT_OF_MEMORY;
    return sd_tensor_to_f32(ctx, &t, *out);
}

/* plan + run one forward; returns the output on the host */
static sd_status forward(sd_case *c, const sd_unet *u, const unet_inputs *in, sd_unet_kv *kv, bool hooks,
                         float **out, size_t *peak)
{
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, c->be);
    if (hooks) { /* the hook-only extras must be planned too */
        ctx.hook = sd_case_hook;
        ctx.hook_user = c;
    }
    run(&ctx, u, in, kv);
    if (!sd_ok(&ctx))
        return sd_fail_context(ctx.status, "%s: planning the UNet forward", c->name);
    *peak = ctx.peak;
    SD_TRY(sd_ctx_init(&ctx, c->be, ctx.peak));
    if (hooks) {
        ctx.hook = sd_case_hook;
        ctx.hook_user = c;
    }
    sd_tensor y = run(&ctx, u, in, kv);
    sd_status s = ctx.status;
    if (s == SD_OK)
        s = download(&ctx, y, out);
    if (s == SD_OK && ctx.peak != *peak)
        s = sd_fail(SD_ERR_INTERNAL, "%s: arena peak %zu differs from the plan %zu", c->name, ctx.peak, *peak);
    sd_ctx_free(&ctx);
    return s;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) /* NaN counts */
            d = isnan(e) ? INFINITY : e;
    }
    return d;
}

/* One weights mode: load, direct forward (with act.* hooks), K/V-cache forward. */
static sd_status run_mode(sd_case *c, const char *wpath, const sd_unet_config *cfg, const unet_inputs *in,
                          sd_dtype wdt, bool hooks, float **ref_out)
{
    sd_weights w;
    sd_weights_init(&w, c->be, "unet", wdt);
    sd_unet *u = NULL;
    sd_unet_kv *kv = NULL;
    void *kvmem = NULL;
    float *y = NULL, *ykv = NULL;
    sd_status s = sd_weights_add_file(&w, wpath, NULL, false);
    if (s == SD_OK)
        s = sd_weights_finalize(&w);
    if (s == SD_OK)
        s = sd_unet_load(&w, cfg, &u);
    if (s == SD_OK) {
        const char *unused[4];
        size_t nu = sd_weights_unused(&w, unused, 4);
        if (nu)
            printf("  note: %zu tensors of the file are not used by the model (first: %s)\n", nu, unused[0]);
    }
    size_t n = (size_t)(in->xs[0] * cfg->out_channels * in->xs[2] * in->xs[3]);
    size_t peak = 0, peak_kv = 0;
    if (s == SD_OK)
        s = forward(c, u, in, NULL, hooks, &y, &peak);
    if (s == SD_OK) {
        printf("  weights %s: arena peak %zu bytes (%.2f MiB), weights %.2f MiB\n", sd_dtype_name(wdt), peak,
               peak / 1048576.0, (w.bytes_device + w.bytes_mapped) / 1048576.0);
        sd_case_compare(c, "out_sample", y, n);
        if (ref_out && *ref_out) {
            double d = max_diff(y, *ref_out, n);
            printf("  weights kept %s vs converted to F32: max |diff| %.3e\n", sd_dtype_name(wdt), d);
            if (d > 0) {
                c->n_checked++;
                c->n_failed++;
                printf("  %-44s FAIL  F16-kept weights must give the same result as F32-converted ones\n",
                       "out_sample");
            }
        }
    }
    /* the K/V cache path */
    if (s == SD_OK) {
        int64_t Bc = in->cs[0], S = in->cs[1];
        size_t bytes = sd_unet_kv_bytes(u, Bc, S, c->be->act_dtype);
        kvmem = c->be->ops->alloc(c->be, bytes ? bytes : 64);
        s = kvmem ? SD_OK : SD_ERR_OUT_OF_MEMORY;
        if (s == SD_OK)
            s = sd_unet_kv_init(&kv, u, kvmem, Bc, S, c->be->act_dtype);
        if (s == SD_OK)
            s = forward(c, u, in, kv, false, &ykv, &peak_kv);
        if (s == SD_OK) {
            double d = max_diff(y, ykv, n);
            printf("  K/V-cache path: max |diff| vs direct %.3e, arena peak %zu bytes, cache %zu bytes\n", d,
                   peak_kv, bytes);
            sd_case_compare(c, "out_sample", ykv, n);
            if (d > 0) {
                c->n_checked++;
                c->n_failed++;
                printf("  %-44s FAIL  the K/V-cache path differs from the direct path\n", "out_sample");
            }
        }
    }
    if (s == SD_OK && ref_out && !*ref_out) {
        *ref_out = y;
        y = NULL;
    }
    free(y);
    free(ykv);
    sd_unet_kv_free(kv);
    if (kvmem)
        c->be->ops->free(c->be, kvmem);
    sd_unet_free(u);
    sd_weights_free(&w);
    return s;
}

sd_status sd_check_unet(sd_case *c)
{
    char *dir = sd_case_path(c, "model_dir");
    if (!dir)
        return SD_ERR_FORMAT;
    /* weights_file: "diffusion_pytorch_model.fp16.safetensors (F16); ..." -> first word */
    const char *wf = NULL;
    char fname[256] = "diffusion_pytorch_model.safetensors";
    sd_config_str(&c->manifest, "weights_file", NULL, &wf);
    if (wf && *wf) {
        size_t k = strcspn(wf, " ;(");
        if (k > 0 && k < sizeof fname) {
            memcpy(fname, wf, k);
            fname[k] = 0;
        }
    }
    char *cpath = sd_path_join(dir, "config.json");
    char *wpath = sd_path_join(dir, fname);
    free(dir);
    unet_inputs in = {0};
    sd_unet_config cfg;
    sd_status s = cpath && wpath ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (s == SD_OK)
        s = sd_unet_config_load(cpath, &cfg);
    if (s == SD_OK)
        s = sd_case_input_nd(c, "sample", 4, &in.x, in.xs);
    if (s == SD_OK) {
        int64_t tb = 0;
        s = sd_case_input_nd(c, "timestep", 1, &in.t, &tb);
        if (s == SD_OK && tb != in.xs[0])
            s = sd_fail(SD_ERR_FORMAT, "%s: 'timestep' has %lld entries for a batch of %lld", c->name,
                        (long long)tb, (long long)in.xs[0]);
    }
    if (s == SD_OK)
        s = sd_case_input_nd(c, "encoder_hidden_states", 3, &in.c, in.cs);
    if (s == SD_OK && c->inputs && sd_st_find(c->inputs, "timestep_cond")) {
        in.has_tc = true;
        s = sd_case_input_nd(c, "timestep_cond", 2, &in.tc, in.tcs);
    }
    if (s == SD_OK && c->inputs && sd_st_find(c->inputs, "text_embeds")) { /* SDXL added_cond_kwargs */
        in.has_added = true;
        s = sd_case_input_nd(c, "text_embeds", 2, &in.te, in.tes);
        if (s == SD_OK)
            s = sd_case_input_nd(c, "time_ids", 2, &in.ti, in.tis);
    }
    bool f16_file = false;
    if (s == SD_OK) {
        sd_safetensors *st;
        s = sd_safetensors_open(wpath, &st);
        if (s == SD_OK) {
            for (size_t i = 0; i < st->n_tensors; i++)
                f16_file |= st->tensors[i].dtype == SD_F16;
            sd_safetensors_close(st);
        }
    }
    float *ref = NULL;
    if (s == SD_OK)
        s = run_mode(c, wpath, &cfg, &in, SD_F32, true, f16_file ? &ref : NULL);
    if (s == SD_OK && f16_file) /* keep F16 in memory: the op wrappers convert on the fly */
        s = run_mode(c, wpath, &cfg, &in, SD_F16, false, &ref);
    free(ref);
    free_inputs(&in);
    free(cpath);
    free(wpath);
    return s;
}
