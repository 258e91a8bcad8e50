/* The CPU backend's kernel sets (AVX-512, AVX2, OpenBLAS+scalar) against double
 * references, on shapes large enough to cross the GEMM blocking (several KC
 * depth blocks, NC column blocks, partial panels and row tails), the flash
 * attention's key blocks, F16/BF16 weights converted while packing, and
 * vectorised exp/erf over their whole range. Sets the CPU lacks are skipped.
 * Error: max |y - ref| / max |ref|, limit 1e-5 (as tests/test_ops.c). */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "test.h"
#include "test_util.h"

#define TOL 1e-5

static const char *g_isa;
static sd_backend *g_be;
static sd_ctx g_ctx;
static unsigned long long g_seed = 0x1234567;

static float frnd(void)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_seed >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rnd(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frnd() * scale;
    return p;
}

static float quant(float v, sd_dtype dt)
{
    if (dt == SD_F16)
        return sd_f16_to_f32(sd_f32_to_f16(v));
    if (dt == SD_BF16)
        return sd_bf16_to_f32(sd_f32_to_bf16(v));
    return v;
}

static sd_tensor up(sd_dtype dt, int nd, const int64_t *ne, const float *host) { return test_upload(&g_ctx, dt, nd, ne, host); }

/* max |y - ref| / max |ref|; 1 if the op failed (tests/test_util.h) */
static double err_of(sd_tensor t, const double *ref, size_t n) { return test_rel_err(&g_ctx, t, ref, n); }

#define EXPECT_ERR(what, t, ref, n, ...)                                                                     \
    do {                                                                                                     \
        double e_ = err_of((t), (ref), (size_t)(n));                                                         \
        if (!(e_ <= TOL)) {                                                                                  \
            fprintf(stderr, "  %s:%d: [%s] %s rel err %.3g: ", __FILE__, __LINE__, g_isa, what, e_);       \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            t_cur_failed = 1;                                                                                \
        }                                                                                                    \
    } while (0)

TEST(linear_blocks)
{
    /* M, K, N: K > KC (512) and N > NC (512) cross the blocking; odd sizes leave tails */
    const int64_t cases[][3] = {{77, 768, 320}, {130, 600, 1700}, {6, 1280, 97}, {5, 3, 2}, {300, 40, 64}, {200, 1100, 530}};
    const sd_dtype dts[] = {SD_F32, SD_F16, SD_BF16};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (size_t di = 0; di < SD_ARRAY_LEN(dts); di++) {
            sd_ctx_reset(&g_ctx);
            int64_t M = cases[ci][0], K = cases[ci][1], N = cases[ci][2];
            float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.5f), *b = rnd((size_t)N, 1);
            for (int64_t i = 0; i < N * K; i++)
                w[i] = quant(w[i], dts[di]);
            int64_t xe[2] = {M, K}, we[2] = {N, K};
            sd_tensor tb = up(SD_F32, 1, &N, b);
            sd_tensor y = sd_linear(&g_ctx, up(SD_F32, 2, xe, x), up(dts[di], 2, we, w), ci % 2 ? &tb : NULL);
            double *ref = malloc((size_t)(M * N) * sizeof(double));
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double acc = ci % 2 ? b[n] : 0.0;
                    for (int64_t k = 0; k < K; k++)
                        acc += (double)x[m * K + k] * w[n * K + k];
                    ref[m * N + n] = acc;
                }
            EXPECT_ERR("linear", y, ref, M * N, "M %lld K %lld N %lld %s", (long long)M, (long long)K, (long long)N,
                       sd_dtype_name(dts[di]));
            free(x);
            free(w);
            free(b);
            free(ref);
        }
}

TEST(conv_implicit)
{
    struct {
        int64_t N, C, H, W, O, K;
        int stride, pads[4];
        sd_dtype wdt;
    } cases[] = {
        {1, 70, 20, 70, 70, 3, 1, {1, 1, 1, 1}, SD_F32},  /* rows wider than a panel, K 630 > KC, N 1400 > NC */
        {2, 9, 8, 8, 130, 3, 1, {1, 1, 1, 1}, SD_F16},    /* 8x8: panels span rows */
        {1, 64, 8, 8, 200, 3, 1, {1, 1, 1, 1}, SD_F16},   /* F16 A converted in two depth blocks */
        {1, 33, 17, 13, 20, 3, 2, {1, 1, 1, 1}, SD_F32},  /* stride 2, odd sizes */
        {1, 16, 9, 10, 12, 3, 2, {0, 0, 1, 1}, SD_BF16},  /* VAE-style asymmetric pad */
        {1, 600, 6, 7, 65, 1, 1, {0, 0, 0, 0}, SD_F32},   /* pointwise, K > KC */
        {1, 5, 4, 3, 7, 3, 1, {2, 0, 1, 3}, SD_F32},      /* all-different pads */
        {1, 4, 1, 1, 5, 1, 2, {0, 0, 0, 0}, SD_F32},      /* 1x1 stride 2 on a 1x1 input */
        {1, 3, 40, 40, 8, 5, 1, {2, 2, 2, 2}, SD_F16},    /* 5x5 kernel */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        sd_ctx_reset(&g_ctx);
        int64_t N = cases[ci].N, C = cases[ci].C, H = cases[ci].H, W = cases[ci].W, O = cases[ci].O, K = cases[ci].K;
        int s = cases[ci].stride;
        const int *pd = cases[ci].pads;
        int64_t HO = (H + pd[0] + pd[2] - K) / s + 1, WO = (W + pd[1] + pd[3] - K) / s + 1;
        int64_t xe[4] = {N, C, H, W}, we[4] = {O, C, K, K};
        float *x = rnd((size_t)(N * C * H * W), 1), *w = rnd((size_t)(O * C * K * K), 0.3f), *b = rnd((size_t)O, 1);
        for (int64_t i = 0; i < O * C * K * K; i++)
            w[i] = quant(w[i], cases[ci].wdt);
        sd_tensor tb = up(SD_F32, 1, &O, b);
        sd_tensor y = sd_conv2d_pads(&g_ctx, up(SD_F32, 4, xe, x), up(cases[ci].wdt, 4, we, w), &tb, s, pd);
        size_t ny = (size_t)(N * O * HO * WO);
        double *ref = malloc(ny * sizeof(double));
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < O; o++)
                for (int64_t oh = 0; oh < HO; oh++)
                    for (int64_t ow = 0; ow < WO; ow++) {
                        double acc = b[o];
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t kh = 0; kh < K; kh++)
                                for (int64_t kw = 0; kw < K; kw++) {
                                    int64_t ih = oh * s - pd[0] + kh, iw = ow * s - pd[1] + kw;
                                    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                        acc += (double)x[((n * C + c) * H + ih) * W + iw] *
                                               w[((o * C + c) * K + kh) * K + kw];
                                }
                        ref[((n * O + o) * HO + oh) * WO + ow] = acc;
                    }
        EXPECT_ERR("conv2d", y, ref, ny, "case %zu", ci);
        free(x);
        free(w);
        free(b);
        free(ref);
    }
}

TEST(attention_blocks)
{
    struct {
        int64_t B, Nq, Nk;
        int heads, d;
        bool causal;
    } cases[] = {
        {1, 300, 600, 2, 40, false}, /* several key blocks of 256, d not a multiple of 16 */
        {1, 520, 520, 1, 16, true},  /* causal across key blocks */
        {2, 100, 77, 3, 64, false},  /* cross-attention-like */
        {1, 70, 300, 2, 160, false}, /* wide heads: d split into panels, key blocks of 128 */
        {1, 49, 49, 4, 80, true},
        {1, 3, 1, 1, 1, false},
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        sd_ctx_reset(&g_ctx);
        int64_t B = cases[ci].B, Nq = cases[ci].Nq, Nk = cases[ci].Nk, d = cases[ci].d, H = cases[ci].heads;
        int64_t HD = H * d;
        float scale = 1.0f / sqrtf((float)d);
        /* large logits: the online max must rescale correctly */
        float *q = rnd((size_t)(B * Nq * HD), 3), *k = rnd((size_t)(B * Nk * HD), 3), *v = rnd((size_t)(B * Nk * HD), 1);
        int64_t qe[3] = {B, Nq, HD}, ke[3] = {B, Nk, HD};
        sd_tensor y = sd_attention(&g_ctx, up(SD_F32, 3, qe, q), up(SD_F32, 3, ke, k), up(SD_F32, 3, ke, v), (int)H,
                                   scale, cases[ci].causal);
        double *ref = malloc((size_t)(B * Nq * HD) * sizeof(double)), *s = malloc((size_t)Nk * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < Nq; i++) {
                    int64_t lim = cases[ci].causal ? (i + 1 < Nk ? i + 1 : Nk) : Nk;
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < lim; j++) {
                        double acc = 0;
                        for (int64_t e = 0; e < d; e++)
                            acc += (double)q[(b * Nq + i) * HD + h * d + e] * k[(b * Nk + j) * HD + h * d + e];
                        s[j] = acc * scale;
                        mx = fmax(mx, s[j]);
                    }
                    for (int64_t j = 0; j < lim; j++)
                        sum += s[j] = exp(s[j] - mx);
                    for (int64_t e = 0; e < d; e++) {
                        double acc = 0;
                        for (int64_t j = 0; j < lim; j++)
                            acc += s[j] * v[(b * Nk + j) * HD + h * d + e];
                        ref[(b * Nq + i) * HD + h * d + e] = acc / sum;
                    }
                }
        EXPECT_ERR("attention", y, ref, B * Nq * HD, "case %zu", ci);
        free(q);
        free(k);
        free(v);
        free(ref);
        free(s);
    }
}

static double gelu_d(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }

/* every float in [-lim, lim] on a fine grid plus the special values, each element compared
 * relative to its own reference (not the tensor maximum) */
TEST(elementwise_range)
{
    const int64_t n = 200003;
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = -100.0f + 200.0f * (float)i / (float)(n - 1);
    x[0] = -INFINITY;
    x[1] = INFINITY;
    x[2] = 0.0f;
    x[3] = -0.0f;
    x[4] = 1e-30f;
    x[5] = -87.5f; /* exp near the denormal boundary */
    x[6] = 88.7f;
    x[7] = 89.0f;
    x[8] = -103.0f;
    const sd_unary_op ops[] = {SD_UNARY_EXP, SD_UNARY_SILU, SD_UNARY_GELU, SD_UNARY_SIGMOID, SD_UNARY_QUICK_GELU,
                               SD_UNARY_RELU};
    const char *names[] = {"exp", "silu", "gelu", "sigmoid", "quick_gelu", "relu"};
    for (size_t oi = 0; oi < SD_ARRAY_LEN(ops); oi++) {
        sd_ctx_reset(&g_ctx);
        sd_tensor y = sd_unary(&g_ctx, up(SD_F32, 1, &n, x), ops[oi]);
        float *h = malloc((size_t)n * sizeof(float));
        sd_tensor_to_f32(&g_ctx, &y, h);
        double worst = 0;
        int64_t wi = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = x[i], r;
            switch (ops[oi]) {
            case SD_UNARY_EXP: r = exp(v); break;
            case SD_UNARY_SILU: r = v / (1.0 + exp(-v)); break;
            case SD_UNARY_GELU: r = gelu_d(v); break;
            case SD_UNARY_SIGMOID: r = 1.0 / (1.0 + exp(-v)); break;
            case SD_UNARY_QUICK_GELU: r = v / (1.0 + exp(-1.702 * v)); break;
            default: r = v > 0 ? v : 0; break;
            }
            if (isnan(r))
                continue; /* -inf / inf forms (silu(-inf)): NaN in the scalar path too, not compared */
            double rf = (double)(float)r; /* the float the result should round to */
            double e;
            if (isinf(rf) || isinf(h[i]))
                e = (isinf(rf) && h[i] == rf) ? 0 : 1;
            else if (ops[oi] == SD_UNARY_GELU || ops[oi] == SD_UNARY_QUICK_GELU || ops[oi] == SD_UNARY_SILU)
                e = fabs(h[i] - r) / fmax(fabs(r), 1.0); /* erf/sigmoid tails: absolute near 0 */
            else if (ops[oi] == SD_UNARY_SIGMOID)
                e = fabs(h[i] - r) / fmax(fabs(r), 1e-30); /* 1 / (1 + exp(88.8)): denormals may flush */
            else
                e = fabs(h[i] - r) / fmax(fabs(r), 1.1754944e-38); /* exp: relative down to FLT_MIN */
            if (isnan(e) || e > worst) {
                worst = isnan(e) ? INFINITY : e;
                wi = i;
            }
        }
        CHECK_MSG(worst <= 2e-6, "[%s] %s worst error %.3g at x = %.9g (got %.9g)", g_isa, names[oi], worst,
                  (double)x[wi], (double)h[wi]);
        free(h);
    }
    /* NaN stays NaN */
    sd_ctx_reset(&g_ctx);
    float nanv[3] = {NAN, 1.0f, NAN};
    int64_t three = 3;
    sd_tensor y = sd_unary(&g_ctx, up(SD_F32, 1, &three, nanv), SD_UNARY_EXP);
    float out[3];
    sd_tensor_to_f32(&g_ctx, &y, out);
    CHECK(isnan(out[0]) && fabsf(out[1] - 2.7182817f) < 1e-6f && isnan(out[2]));
    free(x);
}

TEST(norms_geglu)
{
    /* group norm with SiLU over an SD-like group (10 channels x 37x41), large mean */
    sd_ctx_reset(&g_ctx);
    int64_t xe[4] = {1, 40, 37, 41}, C = 40, S = 37 * 41, G = 4, cpg = 10;
    size_t n = (size_t)(C * S);
    float *x = rnd(n, 2), *g = rnd((size_t)C, 1), *bb = rnd((size_t)C, 1);
    for (size_t i = 0; i < n; i++)
        x[i] += 30.0f;
    sd_tensor y = sd_group_norm(&g_ctx, up(SD_F32, 4, xe, x), up(SD_F32, 1, &C, g), up(SD_F32, 1, &C, bb), (int)G,
                                1e-6f, true);
    double *ref = malloc(n * sizeof(double));
    for (int64_t gi = 0; gi < G; gi++) {
        double sum = 0, sq = 0;
        const float *xs = x + gi * cpg * S;
        for (int64_t i = 0; i < cpg * S; i++)
            sum += xs[i];
        double mean = sum / (double)(cpg * S);
        for (int64_t i = 0; i < cpg * S; i++)
            sq += (xs[i] - mean) * (xs[i] - mean);
        double rstd = 1.0 / sqrt(sq / (double)(cpg * S) + 1e-6);
        for (int64_t c = 0; c < cpg; c++)
            for (int64_t i = 0; i < S; i++) {
                int64_t ch = gi * cpg + c;
                double v = (xs[c * S + i] - mean) * rstd * g[ch] + bb[ch];
                ref[ch * S + i] = v / (1.0 + exp(-v));
            }
    }
    EXPECT_ERR("group_norm+silu", y, ref, n, "[1,40,37,41] groups 4");
    /* layer norm rows of 1283 */
    sd_ctx_reset(&g_ctx);
    int64_t le[2] = {7, 1283}, D = 1283;
    float *lx = rnd(7 * 1283, 3), *lg = rnd(1283, 1), *lb = rnd(1283, 1);
    sd_tensor ly = sd_layer_norm(&g_ctx, up(SD_F32, 2, le, lx), up(SD_F32, 1, &D, lg), up(SD_F32, 1, &D, lb), 1e-5f);
    double *lref = malloc(7 * 1283 * sizeof(double));
    for (int r = 0; r < 7; r++) {
        double sum = 0, sq = 0;
        for (int i = 0; i < D; i++)
            sum += lx[r * D + i];
        double mean = sum / D;
        for (int i = 0; i < D; i++)
            sq += (lx[r * D + i] - mean) * (lx[r * D + i] - mean);
        double rstd = 1.0 / sqrt(sq / D + 1e-5);
        for (int i = 0; i < D; i++)
            lref[r * D + i] = (lx[r * D + i] - mean) * rstd * lg[i] + lb[i];
    }
    EXPECT_ERR("layer_norm", ly, lref, 7 * 1283, "[7,1283]");
    /* GEGLU rows of 2 x 1283 */
    sd_ctx_reset(&g_ctx);
    int64_t ge[2] = {5, 2 * 1283};
    float *gx = rnd(5 * 2 * 1283, 4);
    sd_tensor gy = sd_geglu(&g_ctx, up(SD_F32, 2, ge, gx));
    double *gref = malloc(5 * 1283 * sizeof(double));
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < 1283; i++)
            gref[r * 1283 + i] = gx[r * 2566 + i] * gelu_d(gx[r * 2566 + 1283 + i]);
    EXPECT_ERR("geglu", gy, gref, 5 * 1283, "[5,2566]");
    /* softmax of a long row with a negative scale */
    sd_ctx_reset(&g_ctx);
    int64_t se[2] = {3, 4099};
    float *sx = rnd(3 * 4099, 10);
    sd_tensor sy = sd_softmax(&g_ctx, up(SD_F32, 2, se, sx), -0.7f);
    double *sref = malloc(3 * 4099 * sizeof(double));
    for (int r = 0; r < 3; r++) {
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < 4099; i++)
            mx = fmax(mx, -0.7 * sx[r * 4099 + i]);
        for (int i = 0; i < 4099; i++)
            sum += sref[r * 4099 + i] = exp(-0.7 * sx[r * 4099 + i] - mx);
        for (int i = 0; i < 4099; i++)
            sref[r * 4099 + i] /= sum;
    }
    EXPECT_ERR("softmax", sy, sref, 3 * 4099, "[3,4099]");
    free(x);
    free(g);
    free(bb);
    free(ref);
    free(lx);
    free(lg);
    free(lb);
    free(lref);
    free(gx);
    free(gref);
    free(sx);
    free(sref);
}

/* the backend's move (sd_keep) and large concat/slice run on several threads: overlapping moves in both
 * directions at several distances must equal memmove */
TEST(parallel_copies)
{
    const size_t n = (size_t)6 << 20;
    const size_t dists[] = {(size_t)3 << 20, ((size_t)1 << 20) + 4, 4096, 64, (size_t)6 << 20};
    uint8_t *buf = malloc(2 * n), *ref = malloc(2 * n);
    for (size_t di = 0; di < SD_ARRAY_LEN(dists); di++)
        for (int dir = 0; dir < 2; dir++) {
            for (size_t i = 0; i < 2 * n; i++)
                buf[i] = ref[i] = (uint8_t)(i * 2654435761u >> 13);
            size_t d = dists[di], bytes = n;
            uint8_t *dst = dir ? buf + d : buf, *src = dir ? buf : buf + d;
            g_be->ops->move(g_be, dst, src, bytes);
            memmove(dir ? ref + d : ref, dir ? ref : ref + d, bytes);
            CHECK_MSG(!memcmp(buf, ref, 2 * n), "[%s] move of %zu bytes, distance %zu, %s", g_isa, bytes, d,
                      dir ? "up" : "down");
        }
    free(buf);
    free(ref);
    /* concat along channels (outer 1) and along the last axis (outer > 1), then slice back */
    sd_ctx_reset(&g_ctx);
    int64_t ae[4] = {1, 300, 32, 40}, be[4] = {1, 200, 32, 40}, ce[3] = {700, 300, 3}, de[3] = {700, 300, 2};
    size_t na = 300 * 32 * 40, nb = 200 * 32 * 40, nc = 700 * 300 * 3, nd = 700 * 300 * 2;
    float *a = rnd(na, 1), *b = rnd(nb, 1), *c = rnd(nc, 1), *dd = rnd(nd, 1);
    sd_tensor ta = up(SD_F32, 4, ae, a), tb = up(SD_F32, 4, be, b);
    sd_tensor cat = sd_concat(&g_ctx, ta, tb, 1), sl = sd_slice(&g_ctx, cat, 1, 300, 200);
    sd_tensor tc = up(SD_F32, 3, ce, c), td = up(SD_F32, 3, de, dd);
    sd_tensor cat2 = sd_concat(&g_ctx, tc, td, 2), sl2 = sd_slice(&g_ctx, cat2, 2, 1, 3);
    CHECK(sd_ok(&g_ctx));
    if (sd_ok(&g_ctx)) {
        const float *y = cat.data, *y2 = cat2.data, *s1 = sl.data, *s2 = sl2.data;
        CHECK(!memcmp(y, a, na * 4) && !memcmp(y + na, b, nb * 4) && !memcmp(s1, b, nb * 4));
        bool ok = true;
        for (size_t r = 0; r < 700 * 300; r++)
            ok = ok && y2[r * 5] == c[r * 3] && y2[r * 5 + 2] == c[r * 3 + 2] && y2[r * 5 + 3] == dd[r * 2] &&
                 y2[r * 5 + 4] == dd[r * 2 + 1] && s2[r * 3] == c[r * 3 + 1] && s2[r * 3 + 2] == dd[r * 2];
        CHECK_MSG(ok, "[%s] concat/slice along the last axis", g_isa);
    }
    free(a);
    free(b);
    free(c);
    free(dd);
}

TEST(isa_selection)
{
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create_isa(1, "no-such-set", &be), SD_ERR_INVALID_ARGUMENT);
    CHECK(be == NULL);
    CHECK_STATUS(sd_backend_cpu_create_isa(1, "blas", &be), SD_OK);
    CHECK(be && !strcmp(sd_backend_cpu_isa(be), "blas"));
    sd_backend_destroy(be);
    CHECK_STATUS(sd_backend_cpu_create(0, &be), SD_OK);
    printf("  default kernel set: %s\n", be ? sd_backend_cpu_isa(be) : "?");
    sd_backend_destroy(be);
}

int main(void)
{
    const char *sets[] = {"avx512", "avx2", "blas"};
    RUN(isa_selection);
    for (size_t si = 0; si < SD_ARRAY_LEN(sets); si++) {
        g_isa = sets[si];
        sd_status st = sd_backend_cpu_create_isa(2, g_isa, &g_be);
        if (st == SD_ERR_UNSUPPORTED) { /* this CPU lacks the instruction set: the sets it has are tested */
            printf("[ N/A  ] kernel set %s: %s\n", g_isa, sd_last_error());
            continue;
        }
        if (st != SD_OK) {
            fprintf(stderr, "kernel set %s: %s\n", g_isa, sd_last_error());
            return 1;
        }
        if (sd_ctx_init(&g_ctx, g_be, (size_t)64 << 20) != SD_OK) {
            fprintf(stderr, "cannot allocate the arena: %s\n", sd_last_error());
            return 1;
        }
        printf("kernel set %s\n", g_isa);
        RUN(linear_blocks);
        RUN(conv_implicit);
        RUN(attention_blocks);
        RUN(norms_geglu);
        RUN(parallel_copies);
        if (strcmp(g_isa, "blas")) /* the scalar path uses libm; this checks the vector code */
            RUN(elementwise_range);
        sd_ctx_free(&g_ctx);
        sd_backend_destroy(g_be);
    }
    return test_summary();
}
