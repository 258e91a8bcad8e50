/* AutoencoderKL and AutoencoderTiny: fixture cases (when SD_FIXTURES is
 * set), project cases under $SD_TEST_DATA/cases (names containing vae_), and fixture-
 * independent tests on tiny random models written with the safetensors
 * writer: numerics against a naive double-precision reference (batch 2,
 * non-square images), old attention names, logvar clamping, optional
 * quant convs / mid attention, F16 weights, config and weight errors, image
 * size checks and planning. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "check/check.h"
#include "models/vae.h"
#include "test.h"
#include "test_util.h"

#include <dirent.h>
#include <stdarg.h>
#include <unistd.h>

static sd_backend *g_be;
static char g_dir[256];

static const char *tmp_path(const char *name) { return test_tmp_path(g_dir, name); }

/* ------------------------------------------------------------ fixture cases */

TEST(fixture_cases)
{
    static const char *const cases[] = {"vae_kl", "vae_tiny"};
    test_fixture_cases(g_be, cases, SD_ARRAY_LEN(cases), "vae_*");
}

TEST(project_cases)
{
    static const char *const needles[] = {"vae_", "taesd_", NULL}; /* vae_*, own_vae_*, taesd_* */
    test_project_cases(g_be, needles, "*vae_*");
}

/* ------------------------------------------------------------ random weight sets */

#define MAXW 256
typedef struct wentry {
    char name[160];
    int nd;
    int64_t sh[4];
    float *d;
    int n;
} wentry;
static wentry g_w[MAXW];
static int g_nw;
static unsigned long long g_seed = 99;

static void scopy(char *d, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(d, s, n);
    d[n] = 0;
}

static void wclear(void)
{
    for (int i = 0; i < g_nw; i++)
        free(g_w[i].d);
    g_nw = 0;
}

/* a parameter: norm weights around 1, biases small, conv/linear weights ~ 1/sqrt(fan_in) */
static void wadd(const char *name, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    wentry *e = &g_w[g_nw++];
    scopy(e->name, sizeof e->name, name);
    e->nd = nd;
    e->sh[0] = a, e->sh[1] = b, e->sh[2] = c, e->sh[3] = d;
    e->n = 1;
    for (int i = 0; i < nd; i++)
        e->n *= (int)e->sh[i];
    e->d = malloc((size_t)e->n * sizeof(float));
    bool norm = strstr(name, "norm") && strstr(name, ".weight");
    float fan = nd > 1 ? (float)(e->n / a) : 1.0f;
    float sc = nd > 1 ? 1.0f / sqrtf(fan) : 0.1f;
    for (int i = 0; i < e->n; i++)
        e->d[i] = (norm ? 1.0f : 0.0f) + sc * test_rand(&g_seed);
}

static wentry *wfind(const char *name)
{
    for (int i = 0; i < g_nw; i++)
        if (!strcmp(g_w[i].name, name))
            return &g_w[i];
    fprintf(stderr, "test bug: no weight %s\n", name);
    exit(1);
}

static const float *W(const char *fmt, ...) SD_PRINTF(1, 2);
static const float *W(const char *fmt, ...)
{
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return wfind(name)->d;
}

/* Writes the set; `skip` leaves a tensor out, `bad` shrinks one's first dim,
 * `rename_from`/`rename_to` substitute a substring in names, f16 stores F16. */
static const char *wsave(const char *file, const char *skip, const char *bad, const char *rename_from,
                         const char *rename_to, bool f16)
{
    sd_st_writer *w = sd_st_writer_new();
    for (int i = 0; i < g_nw; i++) {
        wentry *e = &g_w[i];
        if (skip && !strcmp(skip, e->name))
            continue;
        char name[160];
        scopy(name, sizeof name, e->name);
        const char *p = rename_from ? strstr(e->name, rename_from) : NULL;
        if (p)
            snprintf(name, sizeof name, "%.*s%s%s", (int)(p - e->name), e->name, rename_to, p + strlen(rename_from));
        int64_t sh[4];
        memcpy(sh, e->sh, sizeof sh);
        if (bad && !strcmp(bad, e->name))
            sh[0] -= 1;
        if (f16) {
            uint16_t *h = malloc((size_t)e->n * 2);
            for (int k = 0; k < e->n; k++)
                h[k] = sd_f32_to_f16(e->d[k]);
            CHECK_STATUS(sd_st_writer_add(w, name, SD_F16, e->nd, sh, h), SD_OK);
            free(h);
        } else {
            CHECK_STATUS(sd_st_writer_add(w, name, SD_F32, e->nd, sh, e->d), SD_OK);
        }
    }
    const char *path = tmp_path(file);
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    return path;
}

static void wround_f16(void)
{
    for (int i = 0; i < g_nw; i++)
        for (int k = 0; k < g_w[i].n; k++)
            g_w[i].d[k] = sd_f16_to_f32(sd_f32_to_f16(g_w[i].d[k]));
}

/* ------------------------------------------------------------ naive reference ops (double, one image) */

typedef struct img {
    int c, h, w;
    double *d;
} img;

static img inew(int c, int h, int w)
{
    img r = {c, h, w, calloc((size_t)c * h * w, sizeof(double))};
    return r;
}
static double *at(img *x, int c, int y, int xx) { return &x->d[((size_t)c * x->h + y) * x->w + xx]; }

/* conv k x k, pads {top,left,bottom,right}; consumes x */
static img rconv(img x, const float *w, const float *b, int o, int k, int stride, int pt, int pl, int pb, int pr)
{
    int ho = (x.h + pt + pb - k) / stride + 1, wo = (x.w + pl + pr - k) / stride + 1;
    img y = inew(o, ho, wo);
    for (int oc = 0; oc < o; oc++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                double s = b ? b[oc] : 0;
                for (int c = 0; c < x.c; c++)
                    for (int u = 0; u < k; u++)
                        for (int v = 0; v < k; v++) {
                            int yy = i * stride - pt + u, xx = j * stride - pl + v;
                            if (yy >= 0 && yy < x.h && xx >= 0 && xx < x.w)
                                s += w[((oc * x.c + c) * k + u) * k + v] * *at(&x, c, yy, xx);
                        }
                *at(&y, oc, i, j) = s;
            }
    free(x.d);
    return y;
}
static img rconv3(img x, const float *w, const float *b, int o) { return rconv(x, w, b, o, 3, 1, 1, 1, 1, 1); }
static img rcopy(img x)
{
    img y = inew(x.c, x.h, x.w);
    memcpy(y.d, x.d, sizeof(double) * (size_t)x.c * x.h * x.w);
    return y;
}
static void rgn(img *x, const float *g, const float *b, int groups, double eps, bool silu)
{
    int cpg = x->c / groups, S = x->h * x->w;
    for (int gi = 0; gi < groups; gi++) {
        double m = 0, v = 0;
        for (int i = 0; i < cpg * S; i++)
            m += x->d[(size_t)gi * cpg * S + i];
        m /= cpg * S;
        for (int i = 0; i < cpg * S; i++) {
            double d = x->d[(size_t)gi * cpg * S + i] - m;
            v += d * d;
        }
        v /= cpg * S;
        for (int c = gi * cpg; c < (gi + 1) * cpg; c++)
            for (int i = 0; i < S; i++) {
                double *p = &x->d[(size_t)c * S + i];
                *p = (*p - m) / sqrt(v + eps) * g[c] + b[c];
                if (silu)
                    *p = *p / (1 + exp(-*p));
            }
    }
}
static img rup(img x)
{
    img y = inew(x.c, 2 * x.h, 2 * x.w);
    for (int c = 0; c < x.c; c++)
        for (int i = 0; i < y.h; i++)
            for (int j = 0; j < y.w; j++)
                *at(&y, c, i, j) = *at(&x, c, i / 2, j / 2);
    free(x.d);
    return y;
}
static void radd(img *y, const img *x)
{
    for (size_t i = 0; i < (size_t)y->c * y->h * y->w; i++)
        y->d[i] += x->d[i];
}

/* ------------------------------------------------------------ tiny AutoencoderKL */

enum { KC0 = 4, KC1 = 8, KG = 2, KL = 2, KIN = 3, KOUT = 3, KB = 2, KH = 6, KW = 4 };

static void kl_resnet_w(const char *p, int cin, int cout)
{
    char n[160];
    snprintf(n, sizeof n, "%s.norm1.weight", p), wadd(n, 1, cin, 0, 0, 0);
    snprintf(n, sizeof n, "%s.norm1.bias", p), wadd(n, 1, cin, 0, 0, 0);
    snprintf(n, sizeof n, "%s.conv1.weight", p), wadd(n, 4, cout, cin, 3, 3);
    snprintf(n, sizeof n, "%s.conv1.bias", p), wadd(n, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.norm2.weight", p), wadd(n, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.norm2.bias", p), wadd(n, 1, cout, 0, 0, 0);
    snprintf(n, sizeof n, "%s.conv2.weight", p), wadd(n, 4, cout, cout, 3, 3);
    snprintf(n, sizeof n, "%s.conv2.bias", p), wadd(n, 1, cout, 0, 0, 0);
    if (cin != cout) {
        snprintf(n, sizeof n, "%s.conv_shortcut.weight", p), wadd(n, 4, cout, cin, 1, 1);
        snprintf(n, sizeof n, "%s.conv_shortcut.bias", p), wadd(n, 1, cout, 0, 0, 0);
    }
}

static void kl_mid_w(const char *p, bool attn)
{
    char n[160];
    snprintf(n, sizeof n, "%s.resnets.0", p), kl_resnet_w(n, KC1, KC1);
    if (attn) {
        const char *lin[4] = {"to_q", "to_k", "to_v", "to_out.0"};
        snprintf(n, sizeof n, "%s.attentions.0.group_norm.weight", p), wadd(n, 1, KC1, 0, 0, 0);
        snprintf(n, sizeof n, "%s.attentions.0.group_norm.bias", p), wadd(n, 1, KC1, 0, 0, 0);
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "%s.attentions.0.%s.weight", p, lin[i]), wadd(n, 2, KC1, KC1, 0, 0);
            snprintf(n, sizeof n, "%s.attentions.0.%s.bias", p, lin[i]), wadd(n, 1, KC1, 0, 0, 0);
        }
    }
    snprintf(n, sizeof n, "%s.resnets.1", p), kl_resnet_w(n, KC1, KC1);
}

static void kl_weights(bool attn, bool quant)
{
    wclear();
    wadd("encoder.conv_in.weight", 4, KC0, KIN, 3, 3);
    wadd("encoder.conv_in.bias", 1, KC0, 0, 0, 0);
    kl_resnet_w("encoder.down_blocks.0.resnets.0", KC0, KC0);
    wadd("encoder.down_blocks.0.downsamplers.0.conv.weight", 4, KC0, KC0, 3, 3);
    wadd("encoder.down_blocks.0.downsamplers.0.conv.bias", 1, KC0, 0, 0, 0);
    kl_resnet_w("encoder.down_blocks.1.resnets.0", KC0, KC1);
    kl_mid_w("encoder.mid_block", attn);
    wadd("encoder.conv_norm_out.weight", 1, KC1, 0, 0, 0);
    wadd("encoder.conv_norm_out.bias", 1, KC1, 0, 0, 0);
    wadd("encoder.conv_out.weight", 4, 2 * KL, KC1, 3, 3);
    wadd("encoder.conv_out.bias", 1, 2 * KL, 0, 0, 0);
    if (quant) {
        wadd("quant_conv.weight", 4, 2 * KL, 2 * KL, 1, 1);
        wadd("quant_conv.bias", 1, 2 * KL, 0, 0, 0);
        wadd("post_quant_conv.weight", 4, KL, KL, 1, 1);
        wadd("post_quant_conv.bias", 1, KL, 0, 0, 0);
    }
    wadd("decoder.conv_in.weight", 4, KC1, KL, 3, 3);
    wadd("decoder.conv_in.bias", 1, KC1, 0, 0, 0);
    kl_mid_w("decoder.mid_block", attn);
    kl_resnet_w("decoder.up_blocks.0.resnets.0", KC1, KC1);
    kl_resnet_w("decoder.up_blocks.0.resnets.1", KC1, KC1);
    wadd("decoder.up_blocks.0.upsamplers.0.conv.weight", 4, KC1, KC1, 3, 3);
    wadd("decoder.up_blocks.0.upsamplers.0.conv.bias", 1, KC1, 0, 0, 0);
    kl_resnet_w("decoder.up_blocks.1.resnets.0", KC1, KC0);
    kl_resnet_w("decoder.up_blocks.1.resnets.1", KC0, KC0);
    wadd("decoder.conv_norm_out.weight", 1, KC0, 0, 0, 0);
    wadd("decoder.conv_norm_out.bias", 1, KC0, 0, 0, 0);
    wadd("decoder.conv_out.weight", 4, KOUT, KC0, 3, 3);
    wadd("decoder.conv_out.bias", 1, KOUT, 0, 0, 0);
}

static sd_vae_config kl_cfg(bool attn, bool quant)
{
    sd_vae_config c = {.in_channels = KIN,
                       .out_channels = KOUT,
                       .latent_channels = KL,
                       .n_blocks = 2,
                       .block_out_channels = {KC0, KC1},
                       .layers_per_block = 1,
                       .norm_num_groups = KG,
                       .scaling_factor = 0.18215f,
                       .mid_block_add_attention = attn,
                       .use_quant_conv = quant,
                       .use_post_quant_conv = quant};
    return c;
}

static img ref_resnet(img x, const char *p, int cout)
{
    img h = rcopy(x);
    rgn(&h, W("%s.norm1.weight", p), W("%s.norm1.bias", p), KG, 1e-6, true);
    h = rconv3(h, W("%s.conv1.weight", p), W("%s.conv1.bias", p), cout);
    rgn(&h, W("%s.norm2.weight", p), W("%s.norm2.bias", p), KG, 1e-6, true);
    h = rconv3(h, W("%s.conv2.weight", p), W("%s.conv2.bias", p), cout);
    if (x.c != cout)
        x = rconv(x, W("%s.conv_shortcut.weight", p), W("%s.conv_shortcut.bias", p), cout, 1, 1, 0, 0, 0, 0);
    radd(&h, &x);
    free(x.d);
    return h;
}

static img ref_attn(img x, const char *p)
{
    int C = x.c, N = x.h * x.w;
    img h = rcopy(x);
    rgn(&h, W("%s.group_norm.weight", p), W("%s.group_norm.bias", p), KG, 1e-6, false);
    double *q = calloc((size_t)N * C, sizeof(double)), *k = calloc((size_t)N * C, sizeof(double)),
           *v = calloc((size_t)N * C, sizeof(double)), *a = calloc((size_t)N * C, sizeof(double));
    const float *wq = W("%s.to_q.weight", p), *wk = W("%s.to_k.weight", p), *wv = W("%s.to_v.weight", p);
    const float *bq = W("%s.to_q.bias", p), *bk = W("%s.to_k.bias", p), *bv = W("%s.to_v.bias", p);
    for (int t = 0; t < N; t++)
        for (int o = 0; o < C; o++) {
            double sq = bq[o], sk = bk[o], sv = bv[o];
            for (int c = 0; c < C; c++) {
                double hv = h.d[(size_t)c * N + t];
                sq += wq[o * C + c] * hv, sk += wk[o * C + c] * hv, sv += wv[o * C + c] * hv;
            }
            q[t * C + o] = sq, k[t * C + o] = sk, v[t * C + o] = sv;
        }
    for (int t = 0; t < N; t++) {
        double sc[64], mx = -1e300, sum = 0;
        for (int j = 0; j < N; j++) {
            sc[j] = 0;
            for (int c = 0; c < C; c++)
                sc[j] += q[t * C + c] * k[j * C + c];
            sc[j] /= sqrt((double)C);
            mx = fmax(mx, sc[j]);
        }
        for (int j = 0; j < N; j++)
            sum += sc[j] = exp(sc[j] - mx);
        for (int c = 0; c < C; c++) {
            double o = 0;
            for (int j = 0; j < N; j++)
                o += sc[j] / sum * v[j * C + c];
            a[t * C + c] = o;
        }
    }
    const float *wo = W("%s.to_out.0.weight", p), *bo = W("%s.to_out.0.bias", p);
    for (int t = 0; t < N; t++)
        for (int o = 0; o < C; o++) {
            double s = bo[o];
            for (int c = 0; c < C; c++)
                s += wo[o * C + c] * a[t * C + c];
            x.d[(size_t)o * N + t] += s;
        }
    free(q), free(k), free(v), free(a), free(h.d);
    return x;
}

static img ref_mid(img x, const char *p, bool attn)
{
    char n[160];
    snprintf(n, sizeof n, "%s.resnets.0", p), x = ref_resnet(x, n, KC1);
    if (attn)
        snprintf(n, sizeof n, "%s.attentions.0", p), x = ref_attn(x, n);
    snprintf(n, sizeof n, "%s.resnets.1", p), x = ref_resnet(x, n, KC1);
    return x;
}

/* moments [2L, h, w] (logvar not clamped) */
static img ref_encode(img x, bool attn, bool quant)
{
    x = rconv3(x, W("encoder.conv_in.weight"), W("encoder.conv_in.bias"), KC0);
    x = ref_resnet(x, "encoder.down_blocks.0.resnets.0", KC0);
    x = rconv(x, W("encoder.down_blocks.0.downsamplers.0.conv.weight"),
              W("encoder.down_blocks.0.downsamplers.0.conv.bias"), KC0, 3, 2, 0, 0, 1, 1);
    x = ref_resnet(x, "encoder.down_blocks.1.resnets.0", KC1);
    x = ref_mid(x, "encoder.mid_block", attn);
    rgn(&x, W("encoder.conv_norm_out.weight"), W("encoder.conv_norm_out.bias"), KG, 1e-6, true);
    x = rconv3(x, W("encoder.conv_out.weight"), W("encoder.conv_out.bias"), 2 * KL);
    if (quant)
        x = rconv(x, W("quant_conv.weight"), W("quant_conv.bias"), 2 * KL, 1, 1, 0, 0, 0, 0);
    return x;
}

static img ref_decode(img z, bool attn, bool quant)
{
    if (quant)
        z = rconv(z, W("post_quant_conv.weight"), W("post_quant_conv.bias"), KL, 1, 1, 0, 0, 0, 0);
    img x = rconv3(z, W("decoder.conv_in.weight"), W("decoder.conv_in.bias"), KC1);
    x = ref_mid(x, "decoder.mid_block", attn);
    x = ref_resnet(x, "decoder.up_blocks.0.resnets.0", KC1);
    x = ref_resnet(x, "decoder.up_blocks.0.resnets.1", KC1);
    x = rup(x);
    x = rconv3(x, W("decoder.up_blocks.0.upsamplers.0.conv.weight"), W("decoder.up_blocks.0.upsamplers.0.conv.bias"),
               KC1);
    x = ref_resnet(x, "decoder.up_blocks.1.resnets.0", KC0);
    x = ref_resnet(x, "decoder.up_blocks.1.resnets.1", KC0);
    rgn(&x, W("decoder.conv_norm_out.weight"), W("decoder.conv_norm_out.bias"), KG, 1e-6, true);
    return rconv3(x, W("decoder.conv_out.weight"), W("decoder.conv_out.bias"), KOUT);
}

static sd_vae *kl_open(const char *path, sd_vae_config cfg, sd_weights *w)
{
    test_weights_open(w, g_be, "tiny vae", path);
    sd_vae *m = NULL;
    CHECK_STATUS(sd_vae_load(w, &cfg, &m), SD_OK);
    return m;
}

static sd_tensor upload(sd_ctx *ctx, const float *host, int64_t a, int64_t b, int64_t c, int64_t d)
{
    sd_tensor t = sd_new4(ctx, a, b, c, d);
    sd_tensor_from_f32(ctx, &t, host);
    return t;
}

/* max |got - ref| over batch element b of an [B, C, H, W] download */
static double diff_img(const float *got, int b, img r)
{
    size_t n = (size_t)r.c * r.h * r.w;
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(got[b * n + i] - r.d[i]));
    return m;
}

/* Encodes + decodes a batch of 2 with the model, compares with the reference.
 * Outputs the real arena peak == planned peak check too. */
static void kl_compare(sd_vae *m, bool attn, bool quant, const char *label)
{
    static float image[KB * KIN * KH * KW], lat[KB * KL * (KH / 2) * (KW / 2)];
    unsigned long long s = 7;
    for (size_t i = 0; i < SD_ARRAY_LEN(image); i++)
        image[i] = test_rand(&s);
    for (size_t i = 0; i < SD_ARRAY_LEN(lat); i++)
        lat[i] = 1.5f * test_rand(&s);
    size_t peak = 0;
    for (int pass = 0; pass < 2; pass++) {
        sd_ctx ctx;
        if (pass == 0)
            sd_ctx_init_plan(&ctx, g_be);
        else
            CHECK_STATUS(sd_ctx_init(&ctx, g_be, peak), SD_OK);
        sd_tensor x = upload(&ctx, image, KB, KIN, KH, KW);
        sd_tensor lv;
        sd_tensor mean = sd_vae_encode(&ctx, m, x, &lv);
        CHECK_STATUS(ctx.status, SD_OK);
        CHECK(mean.ndim == 4 && mean.ne[0] == KB && mean.ne[1] == KL && mean.ne[2] == KH / 2 && mean.ne[3] == KW / 2);
        CHECK(sd_same_shape(&mean, &lv));
        if (pass == 1 && sd_ok(&ctx)) {
            float *gm = test_download(&ctx, mean), *gl = test_download(&ctx, lv);
            for (int b = 0; b < KB; b++) {
                img in = inew(KIN, KH, KW);
                for (int i = 0; i < KIN * KH * KW; i++)
                    in.d[i] = image[b * KIN * KH * KW + i];
                img mo = ref_encode(in, attn, quant);
                img rm = {KL, mo.h, mo.w, mo.d}, rl = {KL, mo.h, mo.w, mo.d + KL * mo.h * mo.w};
                CHECK_MSG(diff_img(gm, b, rm) < 1e-4, "%s: mean[%d] off by %g", label, b, diff_img(gm, b, rm));
                CHECK_MSG(diff_img(gl, b, rl) < 1e-4, "%s: logvar[%d] off by %g", label, b, diff_img(gl, b, rl));
                free(mo.d);
            }
            free(gm), free(gl);
        }
        sd_release(&ctx, 0);
        sd_tensor z = upload(&ctx, lat, KB, KL, KH / 2, KW / 2);
        sd_tensor y = sd_vae_decode(&ctx, m, z);
        CHECK_STATUS(ctx.status, SD_OK);
        CHECK(y.ndim == 4 && y.ne[0] == KB && y.ne[1] == KOUT && y.ne[2] == KH && y.ne[3] == KW);
        if (pass == 1 && sd_ok(&ctx)) {
            float *gy = test_download(&ctx, y);
            for (int b = 0; b < KB; b++) {
                img zi = inew(KL, KH / 2, KW / 2);
                for (int i = 0; i < KL * (KH / 2) * (KW / 2); i++)
                    zi.d[i] = lat[b * KL * (KH / 2) * (KW / 2) + i];
                img ry = ref_decode(zi, attn, quant);
                CHECK_MSG(diff_img(gy, b, ry) < 1e-4, "%s: decoded[%d] off by %g", label, b, diff_img(gy, b, ry));
                free(ry.d);
            }
            free(gy);
        }
        if (pass == 0)
            peak = ctx.peak;
        else
            CHECK_MSG(ctx.peak == peak, "%s: planned peak %zu, real %zu", label, peak, ctx.peak);
        sd_ctx_free(&ctx);
    }
}

TEST(kl_numerics)
{
    kl_weights(true, true);
    const char *path = wsave("kl.safetensors", NULL, NULL, NULL, NULL, false);
    sd_weights w;
    sd_vae *m = kl_open(path, kl_cfg(true, true), &w);
    if (m)
        kl_compare(m, true, true, "kl");
    sd_vae_free(m);
    sd_weights_free(&w);

    /* the same weights under the pre-0.14 attention names */
    const char *renames[4][2] = {{"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
    sd_st_writer *wr = sd_st_writer_new();
    for (int i = 0; i < g_nw; i++) {
        char name[160];
        scopy(name, sizeof name, g_w[i].name);
        for (int r = 0; r < 4; r++) {
            char *p = strstr(g_w[i].name, renames[r][0]);
            if (p && strstr(g_w[i].name, "attentions"))
                snprintf(name, sizeof name, "%.*s%s%s", (int)(p - g_w[i].name), g_w[i].name, renames[r][1],
                         p + strlen(renames[r][0]));
        }
        CHECK_STATUS(sd_st_writer_add(wr, name, SD_F32, g_w[i].nd, g_w[i].sh, g_w[i].d), SD_OK);
    }
    path = tmp_path("kl_old.safetensors");
    CHECK_STATUS(sd_st_writer_save(wr, path), SD_OK);
    sd_st_writer_free(wr);
    m = kl_open(path, kl_cfg(true, true), &w);
    if (m)
        kl_compare(m, true, true, "kl old names");
    sd_vae_free(m);
    sd_weights_free(&w);
}

TEST(kl_variants)
{
    /* no mid attention, no quant convs */
    kl_weights(false, false);
    const char *path = wsave("kl_plain.safetensors", NULL, NULL, NULL, NULL, false);
    sd_weights w;
    sd_vae *m = kl_open(path, kl_cfg(false, false), &w);
    if (m)
        kl_compare(m, false, false, "kl no attention/quant");
    sd_vae_free(m);
    sd_weights_free(&w);
}

TEST(kl_logvar_clamp_and_sample)
{
    kl_weights(true, true);
    float *qw = wfind("quant_conv.weight")->d, *qb = wfind("quant_conv.bias")->d;
    for (int o = KL; o < 2 * KL; o++) {
        for (int i = 0; i < 2 * KL; i++)
            qw[o * 2 * KL + i] = 0;
        qb[o] = o == KL ? 100.0f : -100.0f;
    }
    const char *path = wsave("kl_clamp.safetensors", NULL, NULL, NULL, NULL, false);
    sd_weights w;
    sd_vae *m = kl_open(path, kl_cfg(true, true), &w);
    if (!m) {
        sd_weights_free(&w);
        return;
    }
    static float image[KIN * KH * KW], noise[KL * (KH / 2) * (KW / 2)];
    unsigned long long s = 3;
    for (size_t i = 0; i < SD_ARRAY_LEN(image); i++)
        image[i] = test_rand(&s);
    for (size_t i = 0; i < SD_ARRAY_LEN(noise); i++)
        noise[i] = test_rand(&s);
    sd_ctx ctx;
    CHECK_STATUS(sd_ctx_init(&ctx, g_be, 1 << 20), SD_OK);
    sd_tensor x = upload(&ctx, image, 1, KIN, KH, KW);
    sd_tensor lv;
    sd_tensor mean = sd_vae_encode(&ctx, m, x, &lv);
    sd_tensor nz = upload(&ctx, noise, 1, KL, KH / 2, KW / 2);
    sd_tensor smp = sd_vae_sample(&ctx, mean, lv, nz);
    CHECK_STATUS(ctx.status, SD_OK);
    if (sd_ok(&ctx)) {
        float *gl = test_download(&ctx, lv), *gm = test_download(&ctx, mean), *gs = test_download(&ctx, smp);
        int hw = (KH / 2) * (KW / 2);
        for (int i = 0; i < hw; i++) {
            CHECK(gl[i] == 20.0f);
            CHECK(gl[hw + i] == -30.0f);
        }
        for (int i = 0; i < KL * hw; i++) {
            double want = gm[i] + exp(0.5 * gl[i]) * noise[i];
            CHECK_MSG(fabs(gs[i] - want) <= 1e-5 * fmax(1, fabs(want)), "sample %d: %g vs %g", i, gs[i], want);
        }
        free(gl), free(gm), free(gs);
    }
    sd_tensor bad = sd_new4(&ctx, 1, KL, 2, 2);
    sd_vae_sample(&ctx, mean, lv, bad);
    CHECK(ctx.status == SD_ERR_SHAPE);
    sd_ctx_free(&ctx);
    sd_vae_free(m);
    sd_weights_free(&w);
}

TEST(kl_bad_inputs)
{
    kl_weights(true, true);
    const char *path = wsave("kl2.safetensors", NULL, NULL, NULL, NULL, false);
    sd_weights w;
    sd_vae *m = kl_open(path, kl_cfg(true, true), &w);
    if (!m) {
        sd_weights_free(&w);
        return;
    }
    CHECK(sd_vae_downscale(&m->cfg) == 2);
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, g_be);
    sd_tensor odd = sd_new4(&ctx, 1, KIN, 5, 4);
    sd_vae_encode(&ctx, m, odd, NULL);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("multiple of 2");
    CHECK_ERR_CONTAINS("5x4");
    sd_ctx_reset(&ctx);
    sd_tensor ch = sd_new4(&ctx, 1, 4, 8, 8);
    sd_vae_encode(&ctx, m, ch, NULL);
    CHECK(ctx.status == SD_ERR_SHAPE);
    sd_ctx_reset(&ctx);
    sd_tensor z3 = sd_new4(&ctx, 1, 8, 3, 0);
    sd_vae_decode(&ctx, m, z3);
    CHECK(ctx.status == SD_ERR_SHAPE);
    sd_ctx_reset(&ctx);
    sd_tensor zodd = sd_new4(&ctx, 1, KL, 3, 5); /* any latent size decodes */
    sd_tensor y = sd_vae_decode(&ctx, m, zodd);
    CHECK_STATUS(ctx.status, SD_OK);
    CHECK(y.ne[2] == 6 && y.ne[3] == 10);
    /* a sticky earlier error makes the calls no-ops */
    sd_ctx_fail(&ctx, SD_ERR_INTERNAL, "earlier");
    y = sd_vae_decode(&ctx, m, zodd);
    CHECK(y.ndim == 0 && ctx.status == SD_ERR_INTERNAL);
    sd_vae_free(m);
    sd_weights_free(&w);
}

TEST(kl_weight_errors)
{
    kl_weights(true, true);
    const char *missing = "decoder.mid_block.attentions.0.to_v.bias";
    const char *path = wsave("kl_missing.safetensors", missing, NULL, NULL, NULL, false);
    sd_weights w;
    test_weights_open(&w, g_be, "tiny vae", path);
    sd_vae_config cfg = kl_cfg(true, true);
    sd_vae *m = (sd_vae *)1;
    CHECK_STATUS(sd_vae_load(&w, &cfg, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS(missing);
    CHECK(m == NULL);
    sd_weights_free(&w);

    const char *bad = "encoder.down_blocks.1.resnets.0.conv_shortcut.weight";
    path = wsave("kl_bad.safetensors", NULL, bad, NULL, NULL, false);
    test_weights_open(&w, g_be, "tiny vae", path);
    CHECK_STATUS(sd_vae_load(&w, &cfg, &m), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(bad);
    sd_weights_free(&w);

    /* a config that disagrees with the weights (3 levels) */
    path = wsave("kl_ok.safetensors", NULL, NULL, NULL, NULL, false);
    test_weights_open(&w, g_be, "tiny vae", path);
    cfg.n_blocks = 3;
    cfg.block_out_channels[2] = 8;
    CHECK(sd_vae_load(&w, &cfg, &m) != SD_OK);
    sd_weights_free(&w);
}

static sd_status kl_cfg_from(const char *json, sd_vae_config *c)
{
    sd_config j;
    sd_status s = sd_config_parse(json, strlen(json), "vae.json", &j);
    if (s == SD_OK)
        s = sd_vae_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

static sd_status tiny_cfg_from(const char *json, sd_taesd_config *c)
{
    sd_config j;
    sd_status s = sd_config_parse(json, strlen(json), "taesd.json", &j);
    if (s == SD_OK)
        s = sd_taesd_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

TEST(config)
{
    sd_vae_config c;
    CHECK_STATUS(kl_cfg_from("{}", &c), SD_OK); /* diffusers defaults */
    CHECK(c.n_blocks == 1 && c.block_out_channels[0] == 64 && c.layers_per_block == 1 && c.latent_channels == 4);
    CHECK(c.mid_block_add_attention && c.use_quant_conv && c.use_post_quant_conv && !c.has_shift_factor);
    CHECK(fabsf(c.scaling_factor - 0.18215f) < 1e-7f);
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": [128, 256, 512, 512], \"scaling_factor\": 0.13025, "
                             "\"shift_factor\": 0.0609, \"latent_channels\": 16, \"use_quant_conv\": false}",
                             &c),
                 SD_OK);
    CHECK(c.n_blocks == 4 && sd_vae_downscale(&c) == 8 && c.has_shift_factor && !c.use_quant_conv);
    CHECK(fabsf(c.shift_factor - 0.0609f) < 1e-7f);
    CHECK_STATUS(kl_cfg_from("{\"shift_factor\": null}", &c), SD_OK);
    CHECK(!c.has_shift_factor);
    CHECK_STATUS(kl_cfg_from("{\"act_fn\": \"gelu\"}", &c), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("gelu");
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownEncoderBlock2D\", "
                             "\"AttnDownEncoderBlock2D\"]}",
                             &c),
                 SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("AttnDownEncoderBlock2D");
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": [32, 64], \"up_block_types\": [\"UpDecoderBlock2D\"]}", &c),
                 SD_ERR_FORMAT);
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": [48], \"norm_num_groups\": 32}", &c), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("norm_num_groups");
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": []}", &c), SD_ERR_FORMAT);
    CHECK_STATUS(kl_cfg_from("{\"block_out_channels\": [1,2,3,4,5,6,7,8,9]}", &c), SD_ERR_FORMAT);
    CHECK_STATUS(kl_cfg_from("{\"layers_per_block\": 0}", &c), SD_ERR_FORMAT);
    CHECK_STATUS(kl_cfg_from("{\"_class_name\": \"AutoencoderTiny\"}", &c), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("AutoencoderTiny");

    sd_taesd_config t;
    CHECK_STATUS(tiny_cfg_from("{}", &t), SD_OK); /* default = real TAESD */
    CHECK(t.n_enc == 4 && t.n_dec == 4 && t.enc_blocks[0] == 1 && t.dec_blocks[3] == 1 && t.act == SD_UNARY_RELU);
    CHECK(sd_taesd_downscale(&t) == 8 && t.scaling_factor == 1.0f && t.latent_magnitude == 3.0f);
    CHECK_STATUS(tiny_cfg_from("{\"upsampling_scaling_factor\": 3}", &t), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("upsampling_scaling_factor");
    CHECK_STATUS(tiny_cfg_from("{\"act_fn\": \"mish\"}", &t), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("mish");
    CHECK_STATUS(tiny_cfg_from("{\"num_encoder_blocks\": [1, 3, 3]}", &t), SD_ERR_FORMAT);
    CHECK_STATUS(tiny_cfg_from("{\"latent_magnitude\": 0}", &t), SD_ERR_FORMAT);
    CHECK_STATUS(tiny_cfg_from("{\"_class_name\": \"AutoencoderKL\"}", &t), SD_ERR_UNSUPPORTED);
}

/* ------------------------------------------------------------ tiny AutoencoderTiny */

enum { TC = 4, TL = 2, TH = 8, TW = 4 };

static void taesd_weights(void)
{
    wclear();
    char n[160];
    /* encoder: conv(3->C) block | conv s2 (no bias) block | conv(C->L) */
    wadd("encoder.layers.0.weight", 4, TC, 3, 3, 3);
    wadd("encoder.layers.0.bias", 1, TC, 0, 0, 0);
    for (int k = 1; k <= 3; k += 2)
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "encoder.layers.%d.conv.%d.weight", k, 2 * j), wadd(n, 4, TC, TC, 3, 3);
            snprintf(n, sizeof n, "encoder.layers.%d.conv.%d.bias", k, 2 * j), wadd(n, 1, TC, 0, 0, 0);
        }
    wadd("encoder.layers.2.weight", 4, TC, TC, 3, 3);
    wadd("encoder.layers.4.weight", 4, TL, TC, 3, 3);
    wadd("encoder.layers.4.bias", 1, TL, 0, 0, 0);
    /* decoder: 0 conv(L->C), 1 relu, 2 block, 3 up, 4 conv (no bias), 5 block, 6 conv(C->3) */
    wadd("decoder.layers.0.weight", 4, TC, TL, 3, 3);
    wadd("decoder.layers.0.bias", 1, TC, 0, 0, 0);
    for (int k = 2; k <= 5; k += 3)
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "decoder.layers.%d.conv.%d.weight", k, 2 * j), wadd(n, 4, TC, TC, 3, 3);
            snprintf(n, sizeof n, "decoder.layers.%d.conv.%d.bias", k, 2 * j), wadd(n, 1, TC, 0, 0, 0);
        }
    wadd("decoder.layers.4.weight", 4, TC, TC, 3, 3);
    wadd("decoder.layers.6.weight", 4, 3, TC, 3, 3);
    wadd("decoder.layers.6.bias", 1, 3, 0, 0, 0);
}

static sd_taesd_config taesd_cfg(void)
{
    sd_taesd_config c = {.in_channels = 3,
                         .out_channels = 3,
                         .latent_channels = TL,
                         .n_enc = 2,
                         .enc_channels = {TC, TC},
                         .enc_blocks = {1, 1},
                         .n_dec = 2,
                         .dec_channels = {TC, TC},
                         .dec_blocks = {1, 1},
                         .upsampling_scaling_factor = 2,
                         .act = SD_UNARY_RELU,
                         .latent_magnitude = 3,
                         .latent_shift = 0.5f,
                         .scaling_factor = 1};
    return c;
}

static void rrelu(img *x)
{
    for (size_t i = 0; i < (size_t)x->c * x->h * x->w; i++)
        x->d[i] = x->d[i] > 0 ? x->d[i] : 0;
}

static img ref_tblock(img x, const char *p, int k)
{
    img h = rcopy(x);
    h = rconv3(h, W("%s.layers.%d.conv.0.weight", p, k), W("%s.layers.%d.conv.0.bias", p, k), TC);
    rrelu(&h);
    h = rconv3(h, W("%s.layers.%d.conv.2.weight", p, k), W("%s.layers.%d.conv.2.bias", p, k), TC);
    rrelu(&h);
    h = rconv3(h, W("%s.layers.%d.conv.4.weight", p, k), W("%s.layers.%d.conv.4.bias", p, k), TC);
    radd(&h, &x);
    rrelu(&h);
    free(x.d);
    return h;
}

static img ref_tenc(img x)
{
    for (size_t i = 0; i < (size_t)x.c * x.h * x.w; i++)
        x.d[i] = (x.d[i] + 1) / 2;
    x = rconv3(x, W("encoder.layers.0.weight"), W("encoder.layers.0.bias"), TC);
    x = ref_tblock(x, "encoder", 1);
    x = rconv(x, W("encoder.layers.2.weight"), NULL, TC, 3, 2, 1, 1, 1, 1);
    x = ref_tblock(x, "encoder", 3);
    return rconv3(x, W("encoder.layers.4.weight"), W("encoder.layers.4.bias"), TL);
}

static img ref_tdec(img x)
{
    for (size_t i = 0; i < (size_t)x.c * x.h * x.w; i++)
        x.d[i] = tanh(x.d[i] / 3) * 3;
    x = rconv3(x, W("decoder.layers.0.weight"), W("decoder.layers.0.bias"), TC);
    rrelu(&x);
    x = ref_tblock(x, "decoder", 2);
    x = rup(x);
    x = rconv3(x, W("decoder.layers.4.weight"), NULL, TC);
    x = ref_tblock(x, "decoder", 5);
    x = rconv3(x, W("decoder.layers.6.weight"), W("decoder.layers.6.bias"), 3);
    for (size_t i = 0; i < (size_t)x.c * x.h * x.w; i++)
        x.d[i] = x.d[i] * 2 - 1;
    return x;
}

static sd_taesd *taesd_open(const char *path, sd_weights *w)
{
    test_weights_open(w, g_be, "tiny taesd", path);
    sd_taesd_config cfg = taesd_cfg();
    sd_taesd *m = NULL;
    CHECK_STATUS(sd_taesd_load(w, &cfg, &m), SD_OK);
    return m;
}

/* encode + decode + scale_latents of a batch of 2; returns downloads through out[3] */
static void taesd_run(sd_taesd *m, const float *image, const float *lat, float *out[3])
{
    size_t peak = 0;
    for (int pass = 0; pass < 2; pass++) {
        sd_ctx ctx;
        if (pass == 0)
            sd_ctx_init_plan(&ctx, g_be);
        else
            CHECK_STATUS(sd_ctx_init(&ctx, g_be, peak), SD_OK);
        sd_tensor x = upload(&ctx, image, 2, 3, TH, TW);
        sd_tensor l = sd_taesd_encode(&ctx, m, x);
        CHECK(l.ndim == 4 && l.ne[1] == TL && l.ne[2] == TH / 2 && l.ne[3] == TW / 2);
        if (pass)
            out[0] = test_download(&ctx, l);
        sd_tensor sl = sd_taesd_scale_latents(&ctx, m, l);
        if (pass)
            out[2] = test_download(&ctx, sl);
        sd_release(&ctx, 0);
        sd_tensor z = upload(&ctx, lat, 2, TL, TH / 2, TW / 2);
        sd_tensor y = sd_taesd_decode(&ctx, m, z);
        CHECK(y.ndim == 4 && y.ne[1] == 3 && y.ne[2] == TH && y.ne[3] == TW);
        if (pass)
            out[1] = test_download(&ctx, y);
        CHECK_STATUS(ctx.status, SD_OK);
        if (pass == 0)
            peak = ctx.peak;
        else
            CHECK_MSG(ctx.peak == peak, "planned peak %zu, real %zu", peak, ctx.peak);
        sd_ctx_free(&ctx);
    }
}

TEST(taesd_numerics_and_f16)
{
    taesd_weights();
    wround_f16(); /* so the F16 and F32 files hold the same values */
    const char *p32 = wsave("taesd32.safetensors", NULL, NULL, NULL, NULL, false);
    const char *p16 = wsave("taesd16.safetensors", NULL, NULL, NULL, NULL, true);
    static float image[2 * 3 * TH * TW], lat[2 * TL * (TH / 2) * (TW / 2)];
    unsigned long long s = 11;
    for (size_t i = 0; i < SD_ARRAY_LEN(image); i++)
        image[i] = test_rand(&s);
    for (size_t i = 0; i < SD_ARRAY_LEN(lat); i++)
        lat[i] = 4 * test_rand(&s);
    float *o32[3] = {0}, *o16[3] = {0};
    sd_weights w32, w16;
    sd_taesd *m32 = taesd_open(p32, &w32), *m16 = taesd_open(p16, &w16);
    if (m32 && m16) {
        taesd_run(m32, image, lat, o32);
        taesd_run(m16, image, lat, o16);
    }
    if (o32[0] && o16[0] && o32[1] && o16[1] && o32[2]) {
        CHECK(!memcmp(o32[0], o16[0], sizeof(float) * 2 * TL * (TH / 2) * (TW / 2)));
        CHECK(!memcmp(o32[1], o16[1], sizeof(float) * 2 * 3 * TH * TW));
        for (int b = 0; b < 2; b++) {
            img in = inew(3, TH, TW);
            for (int i = 0; i < 3 * TH * TW; i++)
                in.d[i] = image[b * 3 * TH * TW + i];
            img rl = ref_tenc(in);
            CHECK_MSG(diff_img(o32[0], b, rl) < 1e-4, "latents[%d] off by %g", b, diff_img(o32[0], b, rl));
            size_t n = (size_t)TL * rl.h * rl.w;
            for (size_t i = 0; i < n; i++) {
                double want = fmin(1, fmax(0, rl.d[i] / 6 + 0.5));
                CHECK(fabs(o32[2][b * n + i] - want) < 1e-5);
            }
            free(rl.d);
            img zi = inew(TL, TH / 2, TW / 2);
            for (int i = 0; i < TL * (TH / 2) * (TW / 2); i++)
                zi.d[i] = lat[b * TL * (TH / 2) * (TW / 2) + i];
            img ry = ref_tdec(zi);
            CHECK_MSG(diff_img(o32[1], b, ry) < 1e-4, "decoded[%d] off by %g", b, diff_img(o32[1], b, ry));
            free(ry.d);
        }
    } else {
        CHECK(!"taesd runs produced no output");
    }
    for (int i = 0; i < 3; i++)
        free(o32[i]), free(o16[i]);
    sd_taesd_free(m32);
    sd_taesd_free(m16);
    sd_weights_free(&w32);
    sd_weights_free(&w16);
}

TEST(taesd_errors)
{
    taesd_weights();
    const char *missing = "decoder.layers.5.conv.4.bias";
    const char *path = wsave("t_missing.safetensors", missing, NULL, NULL, NULL, false);
    sd_weights w;
    test_weights_open(&w, g_be, "tiny taesd", path);
    sd_taesd_config cfg = taesd_cfg();
    sd_taesd *m = NULL;
    CHECK_STATUS(sd_taesd_load(&w, &cfg, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS(missing);
    sd_weights_free(&w);

    const char *bad = "encoder.layers.2.weight";
    path = wsave("t_bad.safetensors", NULL, bad, NULL, NULL, true);
    test_weights_open(&w, g_be, "tiny taesd", path);
    CHECK_STATUS(sd_taesd_load(&w, &cfg, &m), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(bad);
    sd_weights_free(&w);

    path = wsave("t_ok.safetensors", NULL, NULL, NULL, NULL, false);
    m = taesd_open(path, &w);
    if (m) {
        sd_ctx ctx;
        sd_ctx_init_plan(&ctx, g_be);
        sd_tensor odd = sd_new4(&ctx, 1, 3, 8, 7);
        sd_taesd_encode(&ctx, m, odd);
        CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("multiple of 2");
        sd_ctx_reset(&ctx);
        sd_tensor z = sd_new4(&ctx, 1, 3, 4, 4);
        sd_taesd_decode(&ctx, m, z);
        CHECK(ctx.status == SD_ERR_SHAPE);
        sd_ctx_reset(&ctx);
        sd_tensor f16 = sd_new(&ctx, SD_F16, 4, (const int64_t[]){1, 3, 8, 8});
        sd_taesd_encode(&ctx, m, f16);
        CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    }
    sd_taesd_free(m);
    sd_weights_free(&w);

    /* load_dir: config + weights in a folder; missing weights file */
    const char *cfgp = tmp_path("config.json");
    const char *js = "{\"_class_name\": \"AutoencoderTiny\", \"encoder_block_out_channels\": [4, 4], "
                     "\"decoder_block_out_channels\": [4, 4], \"num_encoder_blocks\": [1, 1], "
                     "\"num_decoder_blocks\": [1, 1], \"latent_channels\": 2}";
    CHECK_STATUS(sd_write_file(cfgp, js, strlen(js)), SD_OK);
    CHECK_STATUS(sd_taesd_load_dir(g_be, g_dir, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("diffusion_pytorch_model.safetensors");
    wsave("diffusion_pytorch_model.fp16.safetensors", NULL, NULL, NULL, NULL, true);
    CHECK_STATUS(sd_taesd_load_dir(g_be, g_dir, &m), SD_OK);
    CHECK(m && m->n_enc_layers == 5 && m->n_dec_layers == 7);
    sd_taesd_free(m);
    sd_vae *kl = NULL;
    CHECK_STATUS(sd_vae_load_dir(g_be, g_dir, &kl), SD_ERR_UNSUPPORTED); /* it is a TAESD folder */
    CHECK(kl == NULL);
}

/* precision int8: TAESD's convolutions stay bf16 where the CPU's bf16 direct convolution is the fast path
 * (precision auto's rule; its conv chain keeps activations in the bf16 image layout and outruns int8
 * convolutions: sd_weights.convs_bf16 set by sd_taesd_load), and are int8 elsewhere (int8 kernels only, or
 * a VDPBF16PS slower than the fp32 FMA); a UNet-like weights index without
 * the flag gets int8 either way. Levels the CPU lacks are not applicable. */
TEST(taesd_int8_convs)
{
    char path[512];
    snprintf(path, sizeof path, "%s/taesd32.safetensors", g_dir);
    static const char *const levels[] = {"amx", "avx512bf16", "avx512vnni"};
    for (size_t i = 0; i < SD_ARRAY_LEN(levels); i++) {
        sd_backend *be = NULL;
        if (sd_backend_cpu_create_isa(2, levels[i], &be) != SD_OK) {
            printf("  [ N/A ] %s: this CPU lacks it\n", levels[i]);
            continue;
        }
        sd_backend_cpu_set_int8(be, true);
        bool bf = sd_backend_cpu_auto_bf16(be), i8 = sd_backend_cpu_int8_isa(be) != NULL; /* bf16 the fast path */
        sd_weights w, u;
        sd_weights_init(&w, be, "taesd int8", SD_BF16);
        CHECK_STATUS(sd_weights_add_file(&w, path, NULL, false), SD_OK);
        CHECK_STATUS(sd_weights_finalize(&w), SD_OK);
        sd_taesd_config cfg = taesd_cfg();
        sd_taesd *m = NULL;
        CHECK_STATUS(sd_taesd_load(&w, &cfg, &m), SD_OK);
        sd_weights_init(&u, be, "not taesd", SD_BF16);
        CHECK_STATUS(sd_weights_add_file(&u, path, NULL, false), SD_OK);
        CHECK_STATUS(sd_weights_finalize(&u), SD_OK);
        sd_tensor t = {0}, v = {0};
        const int64_t shape[4] = {3, TC, 3, 3};
        CHECK_STATUS(sd_weights_get(&w, &t, shape, 4, "decoder.layers.6.weight"), SD_OK);
        CHECK_STATUS(sd_weights_get(&u, &v, shape, 4, "decoder.layers.6.weight"), SD_OK);
        int want = bf ? SD_LAYOUT_CPU_BF16_CONV : i8 ? SD_LAYOUT_CPU_I8_CONV : SD_LAYOUT_ROWMAJOR;
        CHECK_MSG(t.layout == want, "[%s] TAESD conv weight at int8: layout %d, expected %d", levels[i], t.layout, want);
        CHECK_MSG(v.layout == (i8 ? SD_LAYOUT_CPU_I8_CONV : SD_LAYOUT_ROWMAJOR),
                  "[%s] a conv weight of another model at int8: layout %d", levels[i], v.layout);
        sd_taesd_free(m);
        sd_weights_free(&w);
        sd_weights_free(&u);
        sd_backend_destroy(be);
    }
}

int main(void)
{
    if (sd_backend_cpu_create(2, &g_be) != SD_OK) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", sd_last_error());
        return 1;
    }
    if (!test_make_tmpdir(g_dir, sizeof g_dir, "sd-test-vae")) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    RUN(config);
    RUN(kl_numerics);
    RUN(kl_variants);
    RUN(kl_logvar_clamp_and_sample);
    RUN(kl_bad_inputs);
    RUN(kl_weight_errors);
    RUN(taesd_numerics_and_f16);
    RUN(taesd_int8_convs);
    RUN(taesd_errors);
    RUN(fixture_cases);
    RUN(project_cases);
    wclear();
    sd_backend_destroy(g_be);
    test_rm_tree(g_dir);
    return test_summary();
}
