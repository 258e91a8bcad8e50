#include "models/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KL_EPS 1e-6f /* resnet / attention / conv_norm_out GroupNorm eps in the diffusers VAE */

/* ================================================================ shared helpers */

static sd_status get_int(const sd_config *j, const char *key, int64_t def, int64_t lo, int64_t hi, int *out)
{
    int64_t v;
    SD_TRY(sd_config_int(j, key, def, &v));
    if (v < lo || v > hi)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' = %lld is out of range [%lld, %lld]", j->path, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = (int)v;
    return SD_OK;
}

static sd_status get_float(const sd_config *j, const char *key, double def, float *out)
{
    double v;
    SD_TRY(sd_config_float(j, key, def, &v));
    if (!isfinite(v))
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be a finite number", j->path, key);
    *out = (float)v;
    return SD_OK;
}

/* A channel list with positive entries; `def` used when the key is absent. */
static sd_status get_channels(const sd_config *j, const char *key, int def_n, const int *def, int *out, int *n)
{
    if (!sd_config_has(j, key)) {
        for (int i = 0; i < def_n; i++)
            out[i] = def[i];
        *n = def_n;
        return SD_OK;
    }
    int64_t v[SD_VAE_MAX_BLOCKS];
    SD_TRY(sd_config_int_list(j, key, v, SD_VAE_MAX_BLOCKS, 0, n));
    if (*n < 1)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must not be empty", j->path, key);
    for (int i = 0; i < *n; i++) {
        if (v[i] < 1 || v[i] > 65536)
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' entry %d = %lld is out of range [1, 65536]", j->path, key, i,
                           (long long)v[i]);
        out[i] = (int)v[i];
    }
    return SD_OK;
}

static sd_status check_class(const sd_config *j, const char *want)
{
    const char *cls;
    SD_TRY(sd_config_str(j, "_class_name", NULL, &cls));
    if (cls && strcmp(cls, want))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: _class_name is '%s', expected '%s'", j->path, cls, want);
    return SD_OK;
}

static sd_status check_block_types(const sd_config *j, const char *key, const char *want, int n)
{
    if (!sd_config_has(j, key))
        return SD_OK;
    const char *t[SD_VAE_MAX_BLOCKS];
    int cnt;
    SD_TRY(sd_config_str_list(j, key, t, SD_VAE_MAX_BLOCKS, &cnt));
    if (cnt != n)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' has %d entries but block_out_channels has %d", j->path, key, cnt, n);
    for (int i = 0; i < cnt; i++)
        if (strcmp(t[i], want))
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: %s[%d] = '%s' is not supported (only %s)", j->path, key, i, t[i],
                           want);
    return SD_OK;
}

/* Opens a diffusers model folder's weights into a new sd_weights (caller owns). */
static sd_status open_dir_weights(sd_backend *be, const char *dir, const char *what, sd_weights **out)
{
    static const char *const names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"};
    return sd_weights_open_dir(be, dir, names, SD_ARRAY_LEN(names),
                               "diffusion_pytorch_model.safetensors (or .fp16.safetensors)", what, out);
}

static bool check_image(sd_ctx *ctx, const char *who, sd_tensor x, int channels, int multiple, const char *what)
{
    if (!sd_ok(ctx))
        return false;
    if (x.ndim != 4 || x.ne[1] != channels || x.ne[0] < 1 || x.ne[2] < 1 || x.ne[3] < 1) {
        char sh[96];
        sd_shape_str(&x, sh, sizeof sh);
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "%s: %s must be [B, %d, H, W], got %s", who, what, channels, sh);
        return false;
    }
    if (x.dtype != ctx->be->act_dtype) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "%s: %s has dtype %s, expected the activation dtype %s", who, what,
                    sd_dtype_name(x.dtype), sd_dtype_name(ctx->be->act_dtype));
        return false;
    }
    if (x.ne[2] % multiple || x.ne[3] % multiple) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT,
                    "%s: %s size %lldx%lld (HxW) is not a multiple of %d; resize or crop the image to a multiple of %d",
                    who, what, (long long)x.ne[2], (long long)x.ne[3], multiple, multiple);
        return false;
    }
    return true;
}

/* ================================================================ AutoencoderKL: config + load */

sd_status sd_vae_config_from(const sd_config *j, sd_vae_config *c)
{
    memset(c, 0, sizeof *c);
    SD_TRY(check_class(j, "AutoencoderKL"));
    SD_TRY(get_int(j, "in_channels", 3, 1, 4096, &c->in_channels));
    SD_TRY(get_int(j, "out_channels", 3, 1, 4096, &c->out_channels));
    SD_TRY(get_int(j, "latent_channels", 4, 1, 4096, &c->latent_channels));
    static const int def_ch[1] = {64};
    SD_TRY(get_channels(j, "block_out_channels", 1, def_ch, c->block_out_channels, &c->n_blocks));
    SD_TRY(check_block_types(j, "down_block_types", "DownEncoderBlock2D", c->n_blocks));
    SD_TRY(check_block_types(j, "up_block_types", "UpDecoderBlock2D", c->n_blocks));
    SD_TRY(get_int(j, "layers_per_block", 1, 1, 64, &c->layers_per_block));
    SD_TRY(get_int(j, "norm_num_groups", 32, 1, 65536, &c->norm_num_groups));
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] % c->norm_num_groups)
            return sd_fail(SD_ERR_FORMAT, "%s: block_out_channels[%d] = %d is not divisible by norm_num_groups %d",
                           j->path, i, c->block_out_channels[i], c->norm_num_groups);
    const char *act;
    SD_TRY(sd_config_str(j, "act_fn", "silu", &act));
    if (strcmp(act, "silu") && strcmp(act, "swish"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: act_fn '%s' is not supported by the AutoencoderKL (only silu)",
                       j->path, act);
    SD_TRY(get_float(j, "scaling_factor", 0.18215, &c->scaling_factor));
    if (!(c->scaling_factor > 0)) /* latents are divided by it */
        return sd_fail(SD_ERR_FORMAT, "%s: 'scaling_factor' = %g must be positive (SD uses 0.18215)", j->path,
                       c->scaling_factor);
    c->has_shift_factor = sd_config_has(j, "shift_factor");
    SD_TRY(get_float(j, "shift_factor", 0.0, &c->shift_factor));
    SD_TRY(sd_config_bool(j, "mid_block_add_attention", true, &c->mid_block_add_attention));
    SD_TRY(sd_config_bool(j, "use_quant_conv", true, &c->use_quant_conv));
    SD_TRY(sd_config_bool(j, "use_post_quant_conv", true, &c->use_post_quant_conv));
    return SD_OK;
}

sd_status sd_vae_config_load(const char *config_json, sd_vae_config *c)
{
    sd_config j;
    SD_TRY(sd_config_load(config_json, &j));
    sd_status s = sd_vae_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

int sd_vae_downscale(const sd_vae_config *c) { return 1 << (c->n_blocks - 1); }

static sd_status load_conv(sd_weights *w, sd_tensor *wt, sd_tensor *b, int64_t o, int64_t i, int64_t k,
                           const char *prefix)
{
    SD_TRY(sd_weights_get(w, wt, SD_SHAPE(o, i, k, k), "%s.weight", prefix));
    if (b)
        SD_TRY(sd_weights_get(w, b, SD_SHAPE(o), "%s.bias", prefix));
    return SD_OK;
}

static sd_status load_norm(sd_weights *w, sd_tensor *g, sd_tensor *b, int64_t c, const char *prefix)
{
    SD_TRY(sd_weights_get(w, g, SD_SHAPE(c), "%s.weight", prefix));
    SD_TRY(sd_weights_get(w, b, SD_SHAPE(c), "%s.bias", prefix));
    return SD_OK;
}

static sd_status load_resnet(sd_weights *w, sd_vae_resnet *r, int cin, int cout, const char *prefix)
{
    char p[256];
    r->cin = cin;
    r->cout = cout;
    snprintf(p, sizeof p, "%s.norm1", prefix);
    SD_TRY(load_norm(w, &r->n1_w, &r->n1_b, cin, p));
    snprintf(p, sizeof p, "%s.conv1", prefix);
    SD_TRY(load_conv(w, &r->c1_w, &r->c1_b, cout, cin, 3, p));
    snprintf(p, sizeof p, "%s.norm2", prefix);
    SD_TRY(load_norm(w, &r->n2_w, &r->n2_b, cout, p));
    snprintf(p, sizeof p, "%s.conv2", prefix);
    SD_TRY(load_conv(w, &r->c2_w, &r->c2_b, cout, cout, 3, p));
    r->has_shortcut = cin != cout;
    if (r->has_shortcut) {
        snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
        SD_TRY(load_conv(w, &r->sc_w, &r->sc_b, cout, cin, 1, p));
    }
    return SD_OK;
}

static sd_status load_linear(sd_weights *w, sd_tensor *wt, sd_tensor *b, int64_t o, int64_t i, const char *prefix,
                             const char *name)
{
    SD_TRY(sd_weights_get(w, wt, SD_SHAPE(o, i), "%s.%s.weight", prefix, name));
    SD_TRY(sd_weights_get(w, b, SD_SHAPE(o), "%s.%s.bias", prefix, name));
    return SD_OK;
}

static sd_status load_mid(sd_weights *w, const sd_vae_config *c, sd_vae_mid *m, const char *prefix)
{
    int C = c->block_out_channels[c->n_blocks - 1];
    char p[256];
    snprintf(p, sizeof p, "%s.resnets.0", prefix);
    SD_TRY(load_resnet(w, &m->r0, C, C, p));
    snprintf(p, sizeof p, "%s.resnets.1", prefix);
    SD_TRY(load_resnet(w, &m->r1, C, C, p));
    m->has_attn = c->mid_block_add_attention;
    if (!m->has_attn)
        return SD_OK;
    snprintf(p, sizeof p, "%s.attentions.0", prefix);
    char gn[300];
    snprintf(gn, sizeof gn, "%s.group_norm", p);
    SD_TRY(load_norm(w, &m->attn.gn_w, &m->attn.gn_b, C, gn));
    /* current diffusers names, or the pre-0.14 ones */
    bool old = !sd_weights_has(w, "%s.to_q.weight", p) && sd_weights_has(w, "%s.query.weight", p);
    SD_TRY(load_linear(w, &m->attn.q_w, &m->attn.q_b, C, C, p, old ? "query" : "to_q"));
    SD_TRY(load_linear(w, &m->attn.k_w, &m->attn.k_b, C, C, p, old ? "key" : "to_k"));
    SD_TRY(load_linear(w, &m->attn.v_w, &m->attn.v_b, C, C, p, old ? "value" : "to_v"));
    SD_TRY(load_linear(w, &m->attn.o_w, &m->attn.o_b, C, C, p, old ? "proj_attn" : "to_out.0"));
    return SD_OK;
}

void sd_vae_free(sd_vae *m)
{
    if (!m)
        return;
    for (int i = 0; i < SD_VAE_MAX_BLOCKS; i++) {
        free(m->enc[i].res);
        free(m->dec[i].res);
    }
    if (m->owned_weights) {
        sd_weights_free(m->owned_weights);
        free(m->owned_weights);
    }
    free(m);
}

static sd_status vae_load(sd_weights *w, sd_vae *m)
{
    const sd_vae_config *c = &m->cfg;
    const int *ch = c->block_out_channels;
    int n = c->n_blocks, L = c->latent_channels, top = ch[n - 1];
    char p[256];
    /* encoder */
    SD_TRY(load_conv(w, &m->enc_in_w, &m->enc_in_b, ch[0], c->in_channels, 3, "encoder.conv_in"));
    int cin = ch[0];
    for (int i = 0; i < n; i++) {
        sd_vae_level *lv = &m->enc[i];
        lv->n_res = c->layers_per_block;
        lv->res = sd_calloc((size_t)lv->n_res, sizeof *lv->res);
        if (!lv->res)
            return SD_ERR_OUT_OF_MEMORY;
        for (int r = 0; r < lv->n_res; r++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, r);
            SD_TRY(load_resnet(w, &lv->res[r], r ? ch[i] : cin, ch[i], p));
        }
        lv->has_sample = i != n - 1;
        if (lv->has_sample) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            SD_TRY(load_conv(w, &lv->s_w, &lv->s_b, ch[i], ch[i], 3, p));
        }
        cin = ch[i];
    }
    SD_TRY(load_mid(w, c, &m->enc_mid, "encoder.mid_block"));
    SD_TRY(load_norm(w, &m->enc_norm_w, &m->enc_norm_b, top, "encoder.conv_norm_out"));
    SD_TRY(load_conv(w, &m->enc_out_w, &m->enc_out_b, 2 * L, top, 3, "encoder.conv_out"));
    if (c->use_quant_conv)
        SD_TRY(load_conv(w, &m->quant_w, &m->quant_b, 2 * L, 2 * L, 1, "quant_conv"));
    if (c->use_post_quant_conv)
        SD_TRY(load_conv(w, &m->post_quant_w, &m->post_quant_b, L, L, 1, "post_quant_conv"));
    /* decoder */
    SD_TRY(load_conv(w, &m->dec_in_w, &m->dec_in_b, top, L, 3, "decoder.conv_in"));
    SD_TRY(load_mid(w, c, &m->dec_mid, "decoder.mid_block"));
    int prev = top;
    for (int i = 0; i < n; i++) {
        int out = ch[n - 1 - i];
        sd_vae_level *lv = &m->dec[i];
        lv->n_res = c->layers_per_block + 1;
        lv->res = sd_calloc((size_t)lv->n_res, sizeof *lv->res);
        if (!lv->res)
            return SD_ERR_OUT_OF_MEMORY;
        for (int r = 0; r < lv->n_res; r++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, r);
            SD_TRY(load_resnet(w, &lv->res[r], r ? out : prev, out, p));
        }
        lv->has_sample = i != n - 1;
        if (lv->has_sample) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            SD_TRY(load_conv(w, &lv->s_w, &lv->s_b, out, out, 3, p));
        }
        prev = out;
    }
    SD_TRY(load_norm(w, &m->dec_norm_w, &m->dec_norm_b, ch[0], "decoder.conv_norm_out"));
    SD_TRY(load_conv(w, &m->dec_out_w, &m->dec_out_b, c->out_channels, ch[0], 3, "decoder.conv_out"));
    return SD_OK;
}

sd_status sd_vae_load(sd_weights *w, const sd_vae_config *c, sd_vae **out)
{
    *out = NULL;
    sd_vae *m = sd_calloc(1, sizeof *m);
    if (!m)
        return SD_ERR_OUT_OF_MEMORY;
    m->cfg = *c;
    sd_status s = vae_load(w, m);
    if (s != SD_OK) {
        sd_vae_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

/* ================================================================ AutoencoderKL: forward */

/* ResnetBlock2D without time embedding: x [B,Cin,H,W] -> shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))))))
 * [B,Cout,H,W] */
static sd_tensor resnet(sd_ctx *ctx, const sd_vae_config *c, const sd_vae_resnet *r, sd_tensor x)
{
    int g = c->norm_num_groups;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor h = sd_group_norm(ctx, x, r->n1_w, r->n1_b, g, KL_EPS, true);
    h = sd_step(&s, sd_conv2d(ctx, h, r->c1_w, &r->c1_b, 1, 1)); /* [B,Cout,H,W] */
    sd_tensor h2 = sd_group_norm(ctx, h, r->n2_w, r->n2_b, g, KL_EPS, true);
    h = sd_step(&s, sd_conv2d(ctx, h2, r->c2_w, &r->c2_b, 1, 1));
    sd_tensor sc = r->has_shortcut ? sd_conv2d(ctx, x, r->sc_w, &r->sc_b, 1, 0) : x; /* 1x1: [B,Cout,H,W] */
    return sd_scope_end(&s, sd_add_inplace(ctx, h, sc)); /* h is the scope's first tensor: no copy */
}

/* Single-head spatial self-attention with GroupNorm first and a residual: x [B,C,H,W] -> tokens
 * [B,H*W,C] -> attention -> [B,C,H,W] + x */
static sd_tensor mid_attention(sd_ctx *ctx, const sd_vae_config *c, const sd_vae_attn *a, sd_tensor x)
{
    int64_t B = x.ne[0], C = x.ne[1], H = x.ne[2], W = x.ne[3];
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor h = sd_group_norm(ctx, x, a->gn_w, a->gn_b, c->norm_num_groups, KL_EPS, false);
    h = sd_step(&s, sd_permute(ctx, h, 0, 2, 3, 1)); /* [B,H,W,C] */
    h = sd_reshape3(ctx, h, B, H * W, C);           /* [B,H*W,C] */
    sd_tensor q = sd_linear(ctx, h, a->q_w, &a->q_b);
    sd_tensor k = sd_linear(ctx, h, a->k_w, &a->k_b);
    sd_tensor v = sd_linear(ctx, h, a->v_w, &a->v_b);
    sd_tensor o = sd_attention(ctx, q, k, v, 1, 1.0f / sqrtf((float)C), false); /* [B,H*W,C] */
    o = sd_linear(ctx, o, a->o_w, &a->o_b);
    o = sd_permute(ctx, sd_reshape4(ctx, o, B, H, W, C), 0, 3, 1, 2); /* [B,C,H,W] */
    return sd_scope_end(&s, sd_add(ctx, o, x));
}

/* UNetMidBlock2D: x [B,C,H,W] -> resnet, attention, resnet -> [B,C,H,W] */
static sd_tensor mid_block(sd_ctx *ctx, const sd_vae_config *c, const sd_vae_mid *m, sd_tensor in)
{
    sd_scope s = sd_scope_begin(ctx); /* the input stays below, owned by the caller */
    sd_tensor x = resnet(ctx, c, &m->r0, in);
    if (m->has_attn)
        x = sd_step(&s, mid_attention(ctx, c, &m->attn, x));
    return sd_scope_end(&s, resnet(ctx, c, &m->r1, x));
}

/* Encoder: img [B,3,H,W] -> conv_in [B,C0,H,W] -> down blocks (resnets; downsample stride 2 but the
 * last: [B,Cn,H/f,W/f]) -> mid block -> GN + SiLU -> conv_out [B,2*latent,H/f,W/f] (mean, logvar) */
static sd_tensor encoder(sd_ctx *ctx, const sd_vae *m, sd_tensor img)
{
    const sd_vae_config *c = &m->cfg;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = sd_conv2d(ctx, img, m->enc_in_w, &m->enc_in_b, 1, 1);
    sd_hook(ctx, "encoder.conv_in", x);
    static const int pads[4] = {0, 0, 1, 1}; /* Downsample2D: F.pad(x, (0,1,0,1)) */
    for (int i = 0; i < c->n_blocks; i++) {
        const sd_vae_level *lv = &m->enc[i];
        for (int r = 0; r < lv->n_res; r++)
            x = sd_step(&s, resnet(ctx, c, &lv->res[r], x));
        if (lv->has_sample) /* [B,C,h,w] -> [B,C,h/2,w/2] */
            x = sd_step(&s, sd_conv2d_pads(ctx, x, lv->s_w, &lv->s_b, 2, pads));
        sd_hookf(ctx, x, "encoder.down_blocks.%d", i);
    }
    x = sd_step(&s, mid_block(ctx, c, &m->enc_mid, x));
    sd_hook(ctx, "encoder.mid_block", x);
    x = sd_step(&s, sd_group_norm(ctx, x, m->enc_norm_w, m->enc_norm_b, c->norm_num_groups, KL_EPS, true));
    x = sd_scope_end(&s, sd_conv2d(ctx, x, m->enc_out_w, &m->enc_out_b, 1, 1));
    sd_hook(ctx, "encoder", x);
    return x;
}

/* Decoder: z [B,latent,h,w] -> conv_in [B,Cn,h,w] -> mid block -> up blocks (resnets; nearest 2x +
 * conv but the last: [B,C0,h*f,w*f]) -> GN + SiLU -> conv_out [B,3,h*f,w*f] */
static sd_tensor decoder(sd_ctx *ctx, const sd_vae *m, sd_tensor z)
{
    const sd_vae_config *c = &m->cfg;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = sd_conv2d(ctx, z, m->dec_in_w, &m->dec_in_b, 1, 1);
    sd_hook(ctx, "decoder.conv_in", x);
    x = sd_step(&s, mid_block(ctx, c, &m->dec_mid, x));
    sd_hook(ctx, "decoder.mid_block", x);
    for (int i = 0; i < c->n_blocks; i++) {
        const sd_vae_level *lv = &m->dec[i];
        for (int r = 0; r < lv->n_res; r++)
            x = sd_step(&s, resnet(ctx, c, &lv->res[r], x));
        if (lv->has_sample) { /* [B,C,h,w] -> [B,C,2h,2w] */
            x = sd_step(&s, sd_upsample2x(ctx, x));
            x = sd_step(&s, sd_conv2d(ctx, x, lv->s_w, &lv->s_b, 1, 1));
        }
        sd_hookf(ctx, x, "decoder.up_blocks.%d", i);
    }
    x = sd_step(&s, sd_group_norm(ctx, x, m->dec_norm_w, m->dec_norm_b, c->norm_num_groups, KL_EPS, true));
    x = sd_scope_end(&s, sd_conv2d(ctx, x, m->dec_out_w, &m->dec_out_b, 1, 1));
    sd_hook(ctx, "decoder", x);
    return x;
}

sd_tensor sd_vae_encode(sd_ctx *ctx, const sd_vae *m, sd_tensor img, sd_tensor *logvar)
{
    sd_tensor empty = {0};
    if (logvar)
        *logvar = empty;
    const sd_vae_config *c = &m->cfg;
    if (!check_image(ctx, "vae encode", img, c->in_channels, sd_vae_downscale(c), "image"))
        return empty;
    int64_t L = c->latent_channels, f = sd_vae_downscale(c);
    int64_t B = img.ne[0], h = img.ne[2] / f, w = img.ne[3] / f;
    sd_tensor mean = sd_new4(ctx, B, L, h, w); /* the outputs first: [B,latent,H/f,W/f] each */
    sd_tensor lv = logvar ? sd_new4(ctx, B, L, h, w) : empty;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = encoder(ctx, m, img); /* [B,2*latent,H/f,W/f] */
    if (c->use_quant_conv) {
        x = sd_step(&s, sd_conv2d(ctx, x, m->quant_w, &m->quant_b, 1, 0));
        sd_hook(ctx, "quant_conv", x);
    }
    sd_copy_into(ctx, mean, sd_slice(ctx, x, 1, 0, L)); /* channels [0,L) */
    if (logvar)
        sd_copy_into(ctx, lv, sd_clamp(ctx, sd_slice(ctx, x, 1, L, L), -30.0f, 20.0f)); /* [L,2L) */
    sd_scope_drop(&s);
    if (!sd_ok(ctx))
        return empty;
    if (logvar)
        *logvar = lv;
    return mean;
}

sd_tensor sd_vae_decode(sd_ctx *ctx, const sd_vae *m, sd_tensor z)
{
    sd_tensor empty = {0};
    const sd_vae_config *c = &m->cfg;
    if (!check_image(ctx, "vae decode", z, c->latent_channels, 1, "latent"))
        return empty;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = z; /* [B,latent,h,w] */
    if (c->use_post_quant_conv) {
        x = sd_conv2d(ctx, z, m->post_quant_w, &m->post_quant_b, 1, 0);
        sd_hook(ctx, "post_quant_conv", x);
    }
    x = sd_scope_end(&s, decoder(ctx, m, x)); /* [B,3,h*f,w*f] */
    return sd_ok(ctx) ? x : empty;
}

sd_tensor sd_vae_sample(sd_ctx *ctx, sd_tensor mean, sd_tensor logvar, sd_tensor noise)
{
    sd_tensor empty = {0};
    if (!sd_ok(ctx))
        return empty;
    if (!sd_same_shape(&mean, &logvar) || !sd_same_shape(&mean, &noise))
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "vae sample: mean, logvar and noise must have the same shape");
    sd_tensor out = sd_new(ctx, ctx->be->act_dtype, mean.ndim, mean.ne);
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor std = sd_unary(ctx, sd_affine(ctx, logvar, 0.5f, 0.0f), SD_UNARY_EXP); /* exp(logvar / 2) */
    sd_copy_into(ctx, out, sd_add(ctx, mean, sd_mul(ctx, std, noise)));
    sd_scope_drop(&s);
    return sd_ok(ctx) ? out : empty;
}

/* ================================================================ AutoencoderTiny */

static sd_status get_list(const sd_config *j, const char *key, const int *def, int def_n, int *out, int *n,
                          int lo)
{
    if (!sd_config_has(j, key)) {
        memcpy(out, def, (size_t)def_n * sizeof *out);
        *n = def_n;
        return SD_OK;
    }
    int64_t v[SD_VAE_MAX_BLOCKS];
    SD_TRY(sd_config_int_list(j, key, v, SD_VAE_MAX_BLOCKS, 0, n));
    if (*n < 1)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must not be empty", j->path, key);
    for (int i = 0; i < *n; i++) {
        if (v[i] < lo || v[i] > 65536)
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' entry %d = %lld is out of range [%d, 65536]", j->path, key, i,
                           (long long)v[i], lo);
        out[i] = (int)v[i];
    }
    return SD_OK;
}

sd_status sd_taesd_config_from(const sd_config *j, sd_taesd_config *c)
{
    memset(c, 0, sizeof *c);
    SD_TRY(check_class(j, "AutoencoderTiny"));
    SD_TRY(get_int(j, "in_channels", 3, 1, 4096, &c->in_channels));
    SD_TRY(get_int(j, "out_channels", 3, 1, 4096, &c->out_channels));
    SD_TRY(get_int(j, "latent_channels", 4, 1, 4096, &c->latent_channels));
    static const int ch64[4] = {64, 64, 64, 64}, enc_nb[4] = {1, 3, 3, 3}, dec_nb[4] = {3, 3, 3, 1};
    int n1, n2;
    SD_TRY(get_list(j, "encoder_block_out_channels", ch64, 4, c->enc_channels, &c->n_enc, 1));
    SD_TRY(get_list(j, "num_encoder_blocks", enc_nb, 4, c->enc_blocks, &n1, 0));
    SD_TRY(get_list(j, "decoder_block_out_channels", ch64, 4, c->dec_channels, &c->n_dec, 1));
    SD_TRY(get_list(j, "num_decoder_blocks", dec_nb, 4, c->dec_blocks, &n2, 0));
    if (n1 != c->n_enc || n2 != c->n_dec)
        return sd_fail(SD_ERR_FORMAT,
                       "%s: num_encoder_blocks / num_decoder_blocks must have as many entries as the matching "
                       "*_block_out_channels (%d/%d vs %d/%d)",
                       j->path, n1, n2, c->n_enc, c->n_dec);
    SD_TRY(get_int(j, "upsampling_scaling_factor", 2, 1, 64, &c->upsampling_scaling_factor));
    if (c->upsampling_scaling_factor != 2)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: upsampling_scaling_factor %d is not supported (only 2)", j->path,
                       c->upsampling_scaling_factor);
    const char *act;
    SD_TRY(sd_config_str(j, "act_fn", "relu", &act));
    if (!strcmp(act, "relu"))
        c->act = SD_UNARY_RELU;
    else if (!strcmp(act, "silu") || !strcmp(act, "swish"))
        c->act = SD_UNARY_SILU;
    else if (!strcmp(act, "gelu"))
        c->act = SD_UNARY_GELU;
    else
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: act_fn '%s' is not supported (use relu, silu or gelu)", j->path, act);
    SD_TRY(get_float(j, "latent_magnitude", 3.0, &c->latent_magnitude));
    SD_TRY(get_float(j, "latent_shift", 0.5, &c->latent_shift));
    SD_TRY(get_float(j, "scaling_factor", 1.0, &c->scaling_factor));
    if (c->latent_magnitude == 0)
        return sd_fail(SD_ERR_FORMAT, "%s: latent_magnitude must not be 0", j->path);
    return SD_OK;
}

sd_status sd_taesd_config_load(const char *config_json, sd_taesd_config *c)
{
    sd_config j;
    SD_TRY(sd_config_load(config_json, &j));
    sd_status s = sd_taesd_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

int sd_taesd_downscale(const sd_taesd_config *c) { return 1 << (c->n_enc - 1); }

void sd_taesd_free(sd_taesd *m)
{
    if (!m)
        return;
    free(m->enc);
    free(m->dec);
    if (m->owned_weights) {
        sd_weights_free(m->owned_weights);
        free(m->owned_weights);
    }
    free(m);
}

static sd_status tl_conv(sd_weights *w, sd_taesd_layer *l, const char *pfx, int idx, int64_t o, int64_t i, int stride,
                         bool bias)
{
    char p[128];
    snprintf(p, sizeof p, "%s.layers.%d", pfx, idx);
    l->kind = SD_TAESD_CONV;
    l->stride = stride;
    return load_conv(w, &l->w, bias ? &l->b : NULL, o, i, 3, p);
}

static sd_status tl_block(sd_weights *w, sd_taesd_layer *l, const char *pfx, int idx, int64_t cin, int64_t cout)
{
    char p[160];
    l->kind = SD_TAESD_BLOCK;
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s.layers.%d.conv.%d", pfx, idx, 2 * k);
        SD_TRY(load_conv(w, &l->cw[k], &l->cb[k], cout, k ? cout : cin, 3, p));
    }
    l->has_skip = cin != cout;
    if (l->has_skip) {
        snprintf(p, sizeof p, "%s.layers.%d.skip", pfx, idx);
        SD_TRY(load_conv(w, &l->skip_w, NULL, cout, cin, 1, p));
    }
    return SD_OK;
}

static sd_status taesd_load(sd_weights *w, sd_taesd *m)
{
    const sd_taesd_config *c = &m->cfg;
    int ne = 1, nd = 2;
    for (int i = 0; i < c->n_enc; i++)
        ne += 1 + c->enc_blocks[i];
    for (int i = 0; i < c->n_dec; i++)
        nd += c->dec_blocks[i] + (i != c->n_dec - 1) + 1;
    m->enc = sd_calloc((size_t)ne, sizeof *m->enc);
    m->dec = sd_calloc((size_t)nd, sizeof *m->dec);
    if (!m->enc || !m->dec)
        return SD_ERR_OUT_OF_MEMORY;
    m->n_enc_layers = ne;
    m->n_dec_layers = nd;
    /* EncoderTiny */
    int k = 0;
    for (int i = 0; i < c->n_enc; i++) {
        int ch = c->enc_channels[i];
        if (i == 0)
            SD_TRY(tl_conv(w, &m->enc[k], "encoder", k, ch, c->in_channels, 1, true));
        else
            SD_TRY(tl_conv(w, &m->enc[k], "encoder", k, ch, ch, 2, false));
        k++;
        for (int b = 0; b < c->enc_blocks[i]; b++, k++)
            SD_TRY(tl_block(w, &m->enc[k], "encoder", k, ch, ch));
    }
    SD_TRY(tl_conv(w, &m->enc[k], "encoder", k, c->latent_channels, c->enc_channels[c->n_enc - 1], 1, true));
    /* DecoderTiny */
    k = 0;
    SD_TRY(tl_conv(w, &m->dec[k], "decoder", k, c->dec_channels[0], c->latent_channels, 1, true));
    k++;
    m->dec[k++].kind = SD_TAESD_ACT;
    for (int i = 0; i < c->n_dec; i++) {
        bool final = i == c->n_dec - 1;
        int ch = c->dec_channels[i];
        for (int b = 0; b < c->dec_blocks[i]; b++, k++)
            SD_TRY(tl_block(w, &m->dec[k], "decoder", k, ch, ch));
        if (!final)
            m->dec[k++].kind = SD_TAESD_UPSAMPLE;
        SD_TRY(tl_conv(w, &m->dec[k], "decoder", k, final ? c->out_channels : ch, ch, 1, final));
        k++;
    }
    return SD_OK;
}

sd_status sd_taesd_load(sd_weights *w, const sd_taesd_config *c, sd_taesd **out)
{
    *out = NULL;
    sd_taesd *m = sd_calloc(1, sizeof *m);
    if (!m)
        return SD_ERR_OUT_OF_MEMORY;
    m->cfg = *c;
    w->convs_bf16 = true; /* precision int8: its bf16 conv chain (image layout, fused epilogues) is the faster */
    sd_status s = taesd_load(w, m);
    if (s != SD_OK) {
        sd_taesd_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

/* Loads an AutoencoderKL (kl != NULL) or AutoencoderTiny (tiny != NULL) folder:
 * config.json and the weights, which the model then owns. */
static sd_status load_dir(sd_backend *be, const char *dir, sd_vae **kl, sd_taesd **tiny)
{
    sd_vae_config kc;
    sd_taesd_config tc;
    char *cpath = sd_path_join(dir, "config.json");
    if (!cpath)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = kl ? sd_vae_config_load(cpath, &kc) : sd_taesd_config_load(cpath, &tc);
    free(cpath);
    if (s != SD_OK)
        return s;
    sd_weights *w;
    SD_TRY(open_dir_weights(be, dir, kl ? "vae" : "taesd", &w));
    s = kl ? sd_vae_load(w, &kc, kl) : sd_taesd_load(w, &tc, tiny);
    if (s != SD_OK) {
        sd_weights_free(w);
        free(w);
        return s;
    }
    if (kl)
        (*kl)->owned_weights = w;
    else
        (*tiny)->owned_weights = w;
    return SD_OK;
}

sd_status sd_vae_load_dir(sd_backend *be, const char *dir, sd_vae **out)
{
    *out = NULL;
    return load_dir(be, dir, out, NULL);
}

sd_status sd_taesd_load_dir(sd_backend *be, const char *dir, sd_taesd **out)
{
    *out = NULL;
    return load_dir(be, dir, NULL, out);
}

/* One layer of TAESD's Sequential: conv3x3 (stride 1 or 2), activation, nearest 2x, or Block:
 * x [B,C,H,W] -> ReLU(conv(act(conv(act(conv(x))))) + skip(x)) [B,C',H,W]. The convolutions fuse their
 * activation and the residual (sd_conv2d_ex) and keep their outputs in L, the layout of the chain (the
 * backend's, sd_conv_layout; row-major: the same values as the unfused ops); `last` goes out row-major. */
static sd_tensor taesd_layer(sd_ctx *ctx, const sd_taesd *m, const sd_taesd_layer *l, sd_tensor x, sd_layout L,
                             bool last)
{
    int act = (int)m->cfg.act;
    switch (l->kind) {
    case SD_TAESD_CONV:
        return sd_conv2d_ex(ctx, NULL, x, l->w, l->b.ndim ? &l->b : NULL, l->stride, 1, NULL, -1,
                            last ? SD_LAYOUT_ROWMAJOR : L);
    case SD_TAESD_ACT: /* x is the previous layer's output, owned by taesd_run's scope: in place */
        return sd_unary_inplace(ctx, x, m->cfg.act);
    case SD_TAESD_UPSAMPLE:
        return sd_upsample2x(ctx, x);
    case SD_TAESD_BLOCK: {
        /* the last conv into the first one's (dead) tensor at the scope's start, or in the image layout
         * straight over its residual x: the block's result needs no copy */
        sd_scope s = sd_scope_begin(ctx);
        sd_tensor h = sd_conv2d_ex(ctx, NULL, x, l->cw[0], &l->cb[0], 1, 1, NULL, act, L);
        sd_tensor h1 = sd_conv2d_ex(ctx, NULL, h, l->cw[1], &l->cb[1], 1, 1, NULL, act, L);
        sd_tensor sk = l->has_skip ? sd_conv2d_ex(ctx, NULL, x, l->skip_w, NULL, 1, 0, NULL, -1, L) : x; /* 1x1 */
        sd_layout lo = last ? SD_LAYOUT_ROWMAJOR : L;
        bool over_x = !l->has_skip && lo == SD_LAYOUT_BF16_IMAGE && x.layout == lo;
        /* + skip, then fuse = nn.ReLU() */
        h = sd_conv2d_ex(ctx, over_x ? &x : lo == L ? &h : NULL, h1, l->cw[2], &l->cb[2], 1, 1, &sk, SD_UNARY_RELU, lo);
        if (over_x) {
            sd_scope_drop(&s);
            return h;
        }
        return sd_scope_end(&s, h);
    }
    }
    return sd_ctx_fail(ctx, SD_ERR_INTERNAL, "taesd: bad layer kind");
}

/* The layers in order; each output replaces everything in scope s (which holds x). */
static sd_tensor taesd_run(sd_ctx *ctx, sd_scope *s, const sd_taesd *m, const sd_taesd_layer *ls, int n,
                           const char *name, sd_tensor x)
{
    /* the chain's layout: asked for a 3x3 stride-1 conv with the activation (Blocks' first conv) */
    sd_layout L = SD_LAYOUT_ROWMAJOR;
    for (int k = 0; k < n; k++)
        if (ls[k].kind == SD_TAESD_BLOCK) {
            L = sd_conv_layout(ctx, ls[k].cw[0], 1, (int)m->cfg.act);
            break;
        }
    for (int k = 0; k < n; k++) {
        x = taesd_layer(ctx, m, &ls[k], x, L, k == n - 1);
        if (ls[k].kind != SD_TAESD_UPSAMPLE || k == n - 1) /* the conv after an upsample steps over both */
            x = sd_step(s, x);
        sd_hookf(ctx, x, "%s.layers.%d", name, k);
    }
    return x;
}

sd_tensor sd_taesd_encode(sd_ctx *ctx, const sd_taesd *m, sd_tensor img)
{
    sd_tensor empty = {0};
    if (!check_image(ctx, "taesd encode", img, m->cfg.in_channels, sd_taesd_downscale(&m->cfg), "image"))
        return empty;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = sd_affine(ctx, img, 0.5f, 0.5f); /* (x + 1) / 2: [B,3,H,W] */
    x = taesd_run(ctx, &s, m, m->enc, m->n_enc_layers, "encoder", x); /* [B,latent,H/8,W/8] */
    return sd_ok(ctx) ? x : empty;
}

sd_tensor sd_taesd_decode(sd_ctx *ctx, const sd_taesd *m, sd_tensor z)
{
    sd_tensor empty = {0};
    if (!check_image(ctx, "taesd decode", z, m->cfg.latent_channels, 1, "latent"))
        return empty;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = sd_unary(ctx, sd_affine(ctx, z, 1.0f / 3.0f, 0.0f), SD_UNARY_TANH);
    x = sd_step(&s, sd_affine(ctx, x, 3.0f, 0.0f)); /* 3 tanh(z / 3): [B,latent,h,w] */
    x = taesd_run(ctx, &s, m, m->dec, m->n_dec_layers, "decoder", x); /* [B,3,8h,8w] in [0,1] */
    x = sd_step(&s, sd_affine(ctx, x, 2.0f, -1.0f));                  /* to [-1,1] */
    return sd_ok(ctx) ? x : empty;
}

sd_tensor sd_taesd_scale_latents(sd_ctx *ctx, const sd_taesd *m, sd_tensor latents)
{
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor x = sd_affine(ctx, latents, 1.0f / (2.0f * m->cfg.latent_magnitude), m->cfg.latent_shift);
    return sd_scope_end(&s, sd_clamp(ctx, x, 0.0f, 1.0f)); /* [B,latent,h,w] in [0,1] */
}
