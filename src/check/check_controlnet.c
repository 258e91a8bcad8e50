/* ControlNetModel cases: down, mid = ControlNet(sample, timestep, encoder_hidden_states, controlnet_cond,
 * conditioning_scale) compared with down_block_res_samples.NNN / mid_block_res_sample and the act.*
 * activations of the ControlNet; then the UNet of unet_dir with those residuals (unet_out_sample) and
 * without (unet_out_sample_without_control). SDXL cases add text_embeds / time_ids (to both). */
#include "backend/ops.h"
#include "check/check.h"
#include "models/controlnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cn_inputs {
    float *x, *t, *c, *cond, *te, *ti;
    int64_t xs[4], cs[3], conds[4], tes[2], tis[2];
    float scale;
    bool has_added; /* SDXL text_embeds + time_ids */
} cn_inputs;

typedef struct cn_job {
    sd_case *c;
    const sd_cnet *cn;
    const sd_unet *u;
    const cn_inputs *in;
    sd_tensor *down; /* n residual descriptors */
    sd_tensor mid, y, y0;
} cn_job;

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

/* ControlNet (with the act.* hooks) -> residuals; UNet with and without them */
static void run(sd_ctx *ctx, cn_job *j)
{
    const cn_inputs *in = j->in;
    sd_dtype act = ctx->be->act_dtype;
    int64_t B = in->xs[0];
    sd_tensor x = upload(ctx, act, in->x, 4, in->xs);
    sd_tensor t = upload(ctx, SD_F32, in->t, 1, &B);
    sd_tensor cx = upload(ctx, act, in->c, 3, in->cs);
    sd_tensor cond = upload(ctx, act, in->cond, 4, in->conds);
    sd_unet_added add = {0};
    if (in->has_added) {
        add.text_embeds = upload(ctx, act, in->te, 2, in->tes);
        add.time_ids = upload(ctx, SD_F32, in->ti, 2, in->tis);
    }
    const sd_unet_added *ap = in->has_added ? &add : NULL;
    sd_cnet_residuals_new(ctx, j->cn, B, in->xs[2], in->xs[3], j->down, &j->mid);
    sd_unet_residuals res = {j->down, sd_cnet_num_residuals(j->cn), j->mid};
    ctx->hook = sd_case_hook; /* the ControlNet's activations only (the UNet has the same module names) */
    ctx->hook_user = j->c;
    sd_cnet_forward(ctx, j->cn, x, t, cx, cond, in->scale, ap, &res, false);
    ctx->hook = NULL;
    j->y = sd_unet_forward_ex(ctx, j->u, x, t, cx, NULL, NULL, ap, &res);
    j->y0 = sd_unet_forward_added(ctx, j->u, x, t, cx, NULL, NULL, ap);
}

static sd_status load_weights(sd_case *c, sd_weights *w, const char *dir, const char *what)
{
    char *p = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
    if (!p)
        return SD_ERR_OUT_OF_MEMORY;
    sd_weights_init(w, c->be, what, SD_F32);
    sd_status s = sd_weights_add_file(w, p, NULL, false);
    if (s == SD_OK)
        s = sd_weights_finalize(w);
    free(p);
    return s;
}

sd_status sd_check_controlnet(sd_case *c)
{
    char *dir = sd_case_path(c, "model_dir");
    char *udir = dir ? sd_case_path(c, "unet_dir") : NULL;
    char *ccfg = dir ? sd_path_join(dir, "config.json") : NULL;
    char *ucfg = udir ? sd_path_join(udir, "config.json") : NULL;
    sd_cnet_config cfg;
    sd_unet_config ucf;
    cn_inputs in = {0};
    sd_weights w = {0}, wu = {0};
    bool w_init = false, wu_init = false;
    sd_cnet *cn = NULL;
    sd_unet *u = NULL;
    sd_tensor *down = NULL;
    sd_ctx ctx = {0};
    bool ctx_init = false;
    sd_status s = ccfg && ucfg ? SD_OK : SD_ERR_FORMAT;
    if (s == SD_OK)
        s = sd_cnet_config_load(ccfg, &cfg);
    if (s == SD_OK)
        s = sd_unet_config_load(ucfg, &ucf);
    if (s == SD_OK)
        s = sd_cnet_check_fit(&cfg, &ucf, dir);
    if (s == SD_OK)
        s = sd_case_input_nd(c, "sample", 4, &in.x, in.xs);
    if (s == SD_OK) {
        int64_t tb = 0;
        s = sd_case_input_nd(c, "timestep", 1, &in.t, &tb);
        if (s == SD_OK && tb != in.xs[0])
            s = sd_fail(SD_ERR_FORMAT, "%s: 'timestep' has %lld entries for a batch of %lld", c->name, (long long)tb,
                        (long long)in.xs[0]);
    }
    if (s == SD_OK)
        s = sd_case_input_nd(c, "encoder_hidden_states", 3, &in.c, in.cs);
    if (s == SD_OK)
        s = sd_case_input_nd(c, "controlnet_cond", 4, &in.cond, in.conds);
    if (s == SD_OK && c->inputs && sd_st_find(c->inputs, "text_embeds")) { /* SDXL added_cond_kwargs */
        in.has_added = true;
        s = sd_case_input_nd(c, "text_embeds", 2, &in.te, in.tes);
        if (s == SD_OK)
            s = sd_case_input_nd(c, "time_ids", 2, &in.ti, in.tis);
    }
    if (s == SD_OK) {
        double scale = 1.0;
        float *sc = NULL;
        size_t n = 0;
        if (c->inputs && sd_st_find(c->inputs, "conditioning_scale")) {
            sc = sd_case_input_f32(c, "conditioning_scale", &n);
            if (sc && n == 1)
                scale = sc[0];
        } else {
            sd_config_float(&c->manifest, "conditioning_scale", 1.0, &scale);
        }
        free(sc);
        in.scale = (float)scale;
    }
    if (s == SD_OK) {
        w_init = true;
        s = load_weights(c, &w, dir, "controlnet");
    }
    if (s == SD_OK)
        s = sd_cnet_load(&w, &cfg, &cn);
    if (s == SD_OK) {
        wu_init = true;
        s = load_weights(c, &wu, udir, "unet");
    }
    if (s == SD_OK)
        s = sd_unet_load(&wu, &ucf, &u);
    if (s == SD_OK) {
        const char *unused[4];
        size_t nu = sd_weights_unused(&w, unused, 4);
        if (nu) {
            char msg[300];
            snprintf(msg, sizeof msg, "%zu tensors of the ControlNet file are not used (first: %s)", nu, unused[0]);
            sd_case_fail(c, msg);
        }
    }
    int nr = cn ? sd_cnet_num_residuals(cn) : 0;
    if (s == SD_OK && nr != sd_unet_num_skips(u))
        s = sd_fail(SD_ERR_FORMAT, "%s: the ControlNet gives %d residuals, the UNet has %d skips", c->name, nr,
                    sd_unet_num_skips(u));
    if (s == SD_OK && !(down = sd_calloc((size_t)nr, sizeof *down)))
        s = SD_ERR_OUT_OF_MEMORY;
    cn_job j = {c, cn, u, &in, down, {0}, {0}, {0}};
    size_t planned = 0;
    if (s == SD_OK) {
        sd_ctx_init_plan(&ctx, c->be);
        run(&ctx, &j);
        s = ctx.status;
        planned = ctx.peak;
        if (s == SD_OK && (s = sd_ctx_init(&ctx, c->be, planned)) == SD_OK)
            ctx_init = true;
    }
    if (s == SD_OK) {
        run(&ctx, &j);
        s = ctx.status;
    }
    if (s == SD_OK) {
        printf("  arena peak %zu bytes (%.2f MiB)\n", ctx.peak, ctx.peak / 1048576.0);
        sd_case_check_peak(c, ctx.peak, planned);
        char key[64];
        for (int k = 0; k < nr; k++) {
            snprintf(key, sizeof key, "down_block_res_samples.%03d", k);
            sd_case_compare_tensor(c, key, down[k]);
        }
        sd_case_compare_tensor(c, "mid_block_res_sample", j.mid);
        sd_case_compare_tensor(c, "unet_out_sample", j.y);
        if (c->expected && sd_st_find(c->expected, "unet_out_sample_without_control"))
            sd_case_compare_tensor(c, "unet_out_sample_without_control", j.y0);
    }
    if (ctx_init)
        sd_ctx_free(&ctx);
    free(down);
    sd_unet_free(u);
    sd_cnet_free(cn);
    if (wu_init)
        sd_weights_free(&wu);
    if (w_init)
        sd_weights_free(&w);
    free(in.x);
    free(in.t);
    free(in.c);
    free(in.cond);
    free(in.te);
    free(in.ti);
    free(ccfg);
    free(ucfg);
    free(udir);
    free(dir);
    return s;
}
