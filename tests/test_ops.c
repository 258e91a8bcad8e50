/* Every op wrapper of src/backend/ops.h on the CPU backend against naive
 * double-precision references, plus the execution context: memory planning,
 * sd_mark/sd_keep, sticky errors and arena exhaustion.
 *
 * Error measure: max |y - ref| / max |ref| over the output, limit 1e-5. */
#include "backend/ops.h"
#include "backend/optime.h"
#include "io/image.h"
#include "test.h"
#include "test_util.h"

#define TOL 1e-5

static sd_backend *g_be;
static sd_ctx g_ctx;
static unsigned long long g_seed = 0x5eed;

static struct {
    const char *op;
    double worst;
    int cases;
} g_stats[32];
static int g_nstats;

static void record(const char *op, double err)
{
    int i = 0;
    while (i < g_nstats && strcmp(g_stats[i].op, op))
        i++;
    if (i == g_nstats) {
        if (g_nstats == (int)SD_ARRAY_LEN(g_stats))
            return;
        g_stats[g_nstats++].op = op;
    }
    g_stats[i].cases++;
    if (err > g_stats[i].worst || isnan(err))
        g_stats[i].worst = err;
}

/* ------------------------------------------------------------ helpers */

static float *rnd(size_t n, float scale, float offset)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = test_rand(&g_seed) * scale + offset;
    return p;
}

static double *dalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static int64_t numel(int nd, const int64_t *ne)
{
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= ne[i];
    return n;
}

/* A tensor in the context's arena holding `host` (converted to dt). */
static sd_tensor up(sd_dtype dt, int nd, const int64_t *ne, const float *host)
{
    sd_tensor t = sd_new(&g_ctx, dt, nd, ne);
    sd_tensor_from_f32(&g_ctx, &t, host);
    return t;
}

/* Values as the backend sees them after storing in dtype dt. */
static float quant(float v, sd_dtype dt)
{
    if (dt == SD_F16)
        return sd_f16_to_f32(sd_f32_to_f16(v));
    if (dt == SD_BF16)
        return sd_bf16_to_f32(sd_f32_to_bf16(v));
    return v;
}

static float *down(sd_tensor t)
{
    size_t n = (size_t)(t.ndim ? sd_numel(&t) : 0);
    float *p = calloc(n ? n : 1, sizeof(float));
    sd_tensor_to_f32(&g_ctx, &t, p);
    return p;
}

static double rel_err(const float *y, const double *ref, size_t n)
{
    double mx = 0, mref = 1e-30;
    for (size_t i = 0; i < n; i++)
        mref = fmax(mref, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)y[i] - ref[i]);
        if (isnan(e))
            return NAN;
        mx = fmax(mx, e);
    }
    return mx / mref;
}

static bool shape_is(sd_tensor t, int nd, const int64_t *ne)
{
    if (t.ndim != nd)
        return false;
    for (int i = 0; i < nd; i++)
        if (t.ne[i] != ne[i])
            return false;
    return true;
}

/* Compares a result tensor with a reference; frees nothing. */
#define EXPECT_CLOSE(op, t, ref, n, ...)                                                                     \
    do {                                                                                                     \
        if (!sd_ok(&g_ctx)) {                                                                                \
            CHECK_MSG(0, "%s: context error %s: %s", op, sd_status_name(g_ctx.status), sd_last_error());     \
            break;                                                                                           \
        }                                                                                                    \
        float *y_ = down(t);                                                                                 \
        double e_ = rel_err(y_, ref, (size_t)(n));                                                           \
        record(op, e_);                                                                                      \
        if (!(e_ <= TOL)) {                                                                                  \
            fprintf(stderr, "  %s:%d: %s rel err %.3g > %.0e: ", __FILE__, __LINE__, op, e_, TOL);           \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            t_cur_failed = 1;                                                                                \
        }                                                                                                    \
        free(y_);                                                                                            \
    } while (0)

static void begin(void) { sd_ctx_reset(&g_ctx); }

/* ------------------------------------------------------------ references */


static double gelu_d(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }

/* ------------------------------------------------------------ conv2d */

typedef struct {
    int64_t N, C, H, W, O, K;
    int stride, pads[4];
    sd_dtype wdt;
    bool bias;
} conv_case;

TEST(conv2d)
{
    const conv_case cases[] = {
        {1, 1, 5, 5, 1, 1, 1, {0, 0, 0, 0}, SD_F32, true},
        {2, 3, 7, 6, 7, 3, 1, {1, 1, 1, 1}, SD_F32, true},
        {1, 13, 9, 11, 5, 3, 2, {1, 1, 1, 1}, SD_F32, false},
        {1, 7, 8, 8, 3, 3, 2, {0, 0, 1, 1}, SD_F32, true}, /* VAE downsample: pad right/bottom only */
        {2, 13, 7, 9, 65, 3, 2, {0, 0, 1, 1}, SD_F32, false},
        {1, 65, 6, 5, 13, 1, 1, {0, 0, 0, 0}, SD_F32, true}, /* pointwise */
        {3, 7, 5, 3, 1, 1, 1, {0, 0, 0, 0}, SD_F32, false},
        {1, 3, 7, 7, 4, 1, 2, {0, 0, 0, 0}, SD_F32, true},  /* 1x1 stride 2 */
        {1, 3, 1, 1, 5, 1, 2, {0, 0, 0, 0}, SD_F32, true},  /* 1x1 stride 2 on a 1x1 input */
        {1, 3, 2, 2, 4, 1, 2, {1, 1, 1, 1}, SD_F32, true},  /* 1x1 padded, output size == input size */
        {1, 4, 3, 3, 2, 3, 1, {0, 0, 0, 0}, SD_F32, true},  /* 1x1 output */
        {1, 3, 4, 4, 2, 3, 1, {2, 0, 1, 3}, SD_F32, true},  /* all-different pads */
        {1, 13, 10, 9, 7, 3, 1, {1, 1, 1, 1}, SD_F16, true},
        {2, 7, 9, 9, 5, 3, 2, {1, 1, 1, 1}, SD_BF16, true},
        {1, 65, 4, 4, 3, 1, 1, {0, 0, 0, 0}, SD_F16, false},
        {1, 64, 128, 128, 8, 3, 1, {1, 1, 1, 1}, SD_F32, true}, /* im2col in several row chunks */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        const conv_case *c = &cases[ci];
        begin();
        int64_t HO = (c->H + c->pads[0] + c->pads[2] - c->K) / c->stride + 1;
        int64_t WO = (c->W + c->pads[1] + c->pads[3] - c->K) / c->stride + 1;
        int64_t xe[4] = {c->N, c->C, c->H, c->W}, we[4] = {c->O, c->C, c->K, c->K}, be[1] = {c->O};
        size_t nx = (size_t)numel(4, xe), nw = (size_t)numel(4, we), ny = (size_t)(c->N * c->O * HO * WO);
        float *x = rnd(nx, 1, 0), *w = rnd(nw, 0.5f, 0), *b = rnd((size_t)c->O, 1, 0);
        for (size_t i = 0; i < nw; i++)
            w[i] = quant(w[i], c->wdt);
        for (int64_t i = 0; i < c->O; i++)
            b[i] = quant(b[i], c->wdt);
        sd_tensor tx = up(SD_F32, 4, xe, x), tw = up(c->wdt, 4, we, w), tb = up(c->wdt, 1, be, b);
        sd_tensor ty = sd_conv2d_pads(&g_ctx, tx, tw, c->bias ? &tb : NULL, c->stride, c->pads);
        int64_t ye[4] = {c->N, c->O, HO, WO};
        CHECK_MSG(!sd_ok(&g_ctx) || shape_is(ty, 4, ye), "case %zu: output shape", ci);
        double *ref = dalloc(ny);
        test_conv_ref(ref, x, w, c->bias ? b : NULL, c->N, c->C, c->H, c->W, c->O, c->K, c->K, c->stride, c->pads, HO,
                      WO, NULL);
        EXPECT_CLOSE("conv2d", ty, ref, ny, "case %zu (C=%lld O=%lld k=%lld s=%d %s)", ci, (long long)c->C,
                     (long long)c->O, (long long)c->K, c->stride, sd_dtype_name(c->wdt));
        /* the symmetric-pad entry point gives the same result */
        if (c->pads[0] == c->pads[1] && c->pads[1] == c->pads[2] && c->pads[2] == c->pads[3]) {
            sd_tensor t2 = sd_conv2d(&g_ctx, tx, tw, c->bias ? &tb : NULL, c->stride, c->pads[0]);
            EXPECT_CLOSE("conv2d", t2, ref, ny, "case %zu via sd_conv2d", ci);
        }
        free(x);
        free(w);
        free(b);
        free(ref);
    }
}

/* ------------------------------------------------------------ linear / matmul */

TEST(linear)
{
    struct {
        int nd;
        int64_t xe[3];
        int64_t N;
        bool bias;
        sd_dtype wdt;
    } cases[] = {
        {2, {1, 1}, 1, true, SD_F32},     {2, {7, 13}, 3, true, SD_F32},    {3, {2, 5, 65}, 7, false, SD_F32},
        {1, {13}, 65, true, SD_F32},      {2, {3, 7}, 13, true, SD_F16},    {3, {2, 3, 65}, 7, false, SD_F16},
        {2, {65, 13}, 3, true, SD_BF16},  {2, {129, 64}, 96, true, SD_F32},
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        begin();
        int nd = cases[ci].nd;
        int64_t K = cases[ci].xe[nd - 1], N = cases[ci].N, M = numel(nd, cases[ci].xe) / K;
        sd_dtype dt = cases[ci].wdt;
        float *x = rnd((size_t)(M * K), 1, 0), *w = rnd((size_t)(N * K), 1, 0), *b = rnd((size_t)N, 1, 0);
        for (int64_t i = 0; i < N * K; i++)
            w[i] = quant(w[i], dt);
        for (int64_t i = 0; i < N; i++)
            b[i] = quant(b[i], dt);
        int64_t we[2] = {N, K};
        sd_tensor tx = up(SD_F32, nd, cases[ci].xe, x), tw = up(dt, 2, we, w), tb = up(dt, 1, &N, b);
        sd_tensor ty = sd_linear(&g_ctx, tx, tw, cases[ci].bias ? &tb : NULL);
        int64_t ye[3];
        memcpy(ye, cases[ci].xe, sizeof ye);
        ye[nd - 1] = N;
        CHECK_MSG(!sd_ok(&g_ctx) || shape_is(ty, nd, ye), "case %zu: output shape", ci);
        double *ref = dalloc((size_t)(M * N));
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = cases[ci].bias ? b[n] : 0.0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)x[m * K + k] * w[n * K + k];
                ref[m * N + n] = acc;
            }
        EXPECT_CLOSE("linear", ty, ref, M * N, "case %zu (%s, bias %d)", ci, sd_dtype_name(dt), cases[ci].bias);
        free(x);
        free(w);
        free(b);
        free(ref);
    }
}

TEST(matmul)
{
    const int64_t dims[][4] = {{2, 7, 13, 5}, {1, 1, 1, 1}, {3, 65, 3, 17}, {1, 130, 40, 77}};
    for (size_t di = 0; di < SD_ARRAY_LEN(dims); di++)
        for (int tr = 0; tr < 4; tr++) {
            begin();
            bool ta = tr & 1, tb = tr & 2;
            int64_t B = dims[di][0], M = dims[di][1], K = dims[di][2], N = dims[di][3];
            float alpha = tr == 3 ? 1.0f : 0.37f;
            int64_t ae[3] = {B, ta ? K : M, ta ? M : K}, be[3] = {B, tb ? N : K, tb ? K : N};
            float *a = rnd((size_t)(B * M * K), 1, 0), *b = rnd((size_t)(B * K * N), 1, 0);
            sd_tensor t = sd_matmul(&g_ctx, up(SD_F32, 3, ae, a), up(SD_F32, 3, be, b), ta, tb, alpha);
            int64_t ye[3] = {B, M, N};
            CHECK(!sd_ok(&g_ctx) || shape_is(t, 3, ye));
            double *ref = dalloc((size_t)(B * M * N));
            for (int64_t bb = 0; bb < B; bb++)
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        double acc = 0;
                        for (int64_t k = 0; k < K; k++) {
                            float av = ta ? a[(bb * K + k) * M + m] : a[(bb * M + m) * K + k];
                            float bv = tb ? b[(bb * N + n) * K + k] : b[(bb * K + k) * N + n];
                            acc += (double)av * bv;
                        }
                        ref[(bb * M + m) * N + n] = alpha * acc;
                    }
            EXPECT_CLOSE("matmul", t, ref, B * M * N, "dims %zu trans_a %d trans_b %d", di, ta, tb);
            free(a);
            free(b);
            free(ref);
        }
}

/* ------------------------------------------------------------ norms / softmax */

TEST(group_norm)
{
    struct {
        int nd;
        int64_t xe[4];
        int groups;
        float eps;
        float amp, offset;
        sd_dtype pdt; /* gamma/beta dtype */
    } cases[] = {
        {4, {2, 6, 5, 7}, 3, 1e-5f, 3, 5, SD_F16},
        {4, {1, 12, 4, 3}, 4, 1e-5f, 1, 0, SD_BF16},
        {4, {1, 65, 3, 3}, 13, 1e-6f, 3, 5, SD_F32},
        {4, {2, 13, 3, 5}, 13, 1e-5f, 1, 0, SD_F32},
        {3, {2, 8, 13}, 4, 1e-5f, 3, -5, SD_F32},
        {4, {1, 64, 8, 8}, 32, 1e-6f, 3, 5, SD_F32},
        {2, {3, 12}, 4, 1e-5f, 1, 0, SD_F32},
        {4, {1, 7, 1, 1}, 7, 1e-5f, 3, 5, SD_F32},      /* one element per group: output is beta */
        {4, {1, 32, 9, 9}, 8, 1e-6f, 0.01f, 5, SD_F32}, /* |mean| >> std */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (int silu = 0; silu < 2; silu++) {
            begin();
            int nd = cases[ci].nd, G = cases[ci].groups;
            int64_t N = cases[ci].xe[0], C = cases[ci].xe[1], n = numel(nd, cases[ci].xe), S = n / (N * C);
            float *x = rnd((size_t)n, cases[ci].amp, cases[ci].offset), *g = rnd((size_t)C, 1, 1), *b = rnd((size_t)C, 1, 0);
            sd_dtype pdt = cases[ci].pdt;
            for (int64_t i = 0; i < C; i++) {
                g[i] = quant(g[i], pdt);
                b[i] = quant(b[i], pdt);
            }
            sd_tensor t = sd_group_norm(&g_ctx, up(SD_F32, nd, cases[ci].xe, x), up(pdt, 1, &C, g), up(pdt, 1, &C, b),
                                        G, cases[ci].eps, silu);
            CHECK(!sd_ok(&g_ctx) || shape_is(t, nd, cases[ci].xe));
            double *ref = dalloc((size_t)n);
            int64_t cpg = C / G;
            for (int64_t i = 0; i < N; i++)
                for (int gi = 0; gi < G; gi++) {
                    const float *xs = x + (i * C + gi * cpg) * S;
                    double mean = 0, var = 0;
                    for (int64_t j = 0; j < cpg * S; j++)
                        mean += xs[j];
                    mean /= (double)(cpg * S);
                    for (int64_t j = 0; j < cpg * S; j++)
                        var += (xs[j] - mean) * (xs[j] - mean);
                    var /= (double)(cpg * S);
                    for (int64_t c = 0; c < cpg; c++)
                        for (int64_t s = 0; s < S; s++) {
                            int64_t ch = gi * cpg + c;
                            double v = (xs[c * S + s] - mean) / sqrt(var + cases[ci].eps) * g[ch] + b[ch];
                            ref[(i * C + ch) * S + s] = silu ? v / (1 + exp(-v)) : v;
                        }
                }
            EXPECT_CLOSE("group_norm", t, ref, n, "case %zu silu %d gamma/beta %s", ci, silu, sd_dtype_name(pdt));
            free(x);
            free(g);
            free(b);
            free(ref);
        }
}

TEST(layer_norm)
{
    struct {
        int nd;
        int64_t xe[3];
        float amp, offset;
        sd_dtype pdt; /* gamma/beta dtype */
    } cases[] = {{3, {3, 7, 65}, 2, -3, SD_F32}, {1, {13}, 2, -3, SD_F32},        {2, {5, 1}, 2, -3, SD_F32},
                 {2, {77, 320}, 2, -3, SD_F32},  {3, {2, 1, 3}, 2, -3, SD_F32},    {2, {4, 768}, 0.01f, 7, SD_F32},
                 {3, {2, 3, 65}, 2, -3, SD_BF16}, {2, {7, 13}, 1, 0, SD_F16}};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        begin();
        int nd = cases[ci].nd;
        int64_t D = cases[ci].xe[nd - 1], n = numel(nd, cases[ci].xe), R = n / D;
        float *x = rnd((size_t)n, cases[ci].amp, cases[ci].offset), *g = rnd((size_t)D, 1, 1),
              *b = rnd((size_t)D, 1, 0);
        sd_dtype pdt = cases[ci].pdt;
        for (int64_t i = 0; i < D; i++) {
            g[i] = quant(g[i], pdt);
            b[i] = quant(b[i], pdt);
        }
        sd_tensor t = sd_layer_norm(&g_ctx, up(SD_F32, nd, cases[ci].xe, x), up(pdt, 1, &D, g), up(pdt, 1, &D, b),
                                    1e-5f);
        double *ref = dalloc((size_t)n);
        for (int64_t r = 0; r < R; r++) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < D; i++)
                mean += x[r * D + i];
            mean /= (double)D;
            for (int64_t i = 0; i < D; i++)
                var += (x[r * D + i] - mean) * (x[r * D + i] - mean);
            var /= (double)D;
            for (int64_t i = 0; i < D; i++)
                ref[r * D + i] = (x[r * D + i] - mean) / sqrt(var + 1e-5) * g[i] + b[i];
        }
        EXPECT_CLOSE("layer_norm", t, ref, n, "case %zu gamma/beta %s", ci, sd_dtype_name(pdt));
        free(x);
        free(g);
        free(b);
        free(ref);
    }
}

TEST(softmax)
{
    struct {
        int nd;
        int64_t xe[3];
        float scale, amp;
    } cases[] = {{2, {3, 77}, 0.125f, 4}, {1, {1}, 1.0f, 1}, {3, {2, 3, 65}, 1.0f, 1}, {2, {4, 13}, 1.0f, 30},
                 {2, {2, 7}, -2.5f, 3}};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        begin();
        int nd = cases[ci].nd;
        int64_t D = cases[ci].xe[nd - 1], n = numel(nd, cases[ci].xe), R = n / D;
        float *x = rnd((size_t)n, cases[ci].amp, 0);
        sd_tensor t = sd_softmax(&g_ctx, up(SD_F32, nd, cases[ci].xe, x), cases[ci].scale);
        double *ref = dalloc((size_t)n);
        for (int64_t r = 0; r < R; r++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t i = 0; i < D; i++)
                mx = fmax(mx, (double)cases[ci].scale * x[r * D + i]);
            for (int64_t i = 0; i < D; i++)
                sum += ref[r * D + i] = exp((double)cases[ci].scale * x[r * D + i] - mx);
            for (int64_t i = 0; i < D; i++)
                ref[r * D + i] /= sum;
        }
        EXPECT_CLOSE("softmax", t, ref, n, "case %zu", ci);
        free(x);
        free(ref);
    }
}

/* ------------------------------------------------------------ attention */

TEST(attention)
{
    struct {
        int64_t B, Nq, Nk;
        int heads, d;
        bool causal;
        float scale; /* 0: 1/sqrt(d) */
    } cases[] = {
        {1, 9, 11, 2, 4, false, 0},   {2, 150, 77, 5, 8, false, 0}, {1, 77, 77, 3, 13, true, 0},
        {1, 130, 130, 1, 7, true, 0}, {2, 65, 33, 8, 3, true, 0},   {1, 1, 1, 1, 1, false, 0},
        {1, 64, 200, 2, 40, false, 0.3f}, {1, 257, 5, 4, 16, false, 0}, {1, 40, 90, 2, 5, true, 0},
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        begin();
        int64_t B = cases[ci].B, Nq = cases[ci].Nq, Nk = cases[ci].Nk;
        int H = cases[ci].heads, d = cases[ci].d;
        int64_t HD = (int64_t)H * d;
        float scale = cases[ci].scale ? cases[ci].scale : 1.0f / sqrtf((float)d);
        float *q = rnd((size_t)(B * Nq * HD), 1.5f, 0), *k = rnd((size_t)(B * Nk * HD), 1.5f, 0),
              *v = rnd((size_t)(B * Nk * HD), 1, 0);
        int64_t qe[3] = {B, Nq, HD}, ke[3] = {B, Nk, HD};
        sd_tensor t = sd_attention(&g_ctx, up(SD_F32, 3, qe, q), up(SD_F32, 3, ke, k), up(SD_F32, 3, ke, v), H,
                                   scale, cases[ci].causal);
        CHECK(!sd_ok(&g_ctx) || shape_is(t, 3, qe));
        double *ref = dalloc((size_t)(B * Nq * HD)), *s = dalloc((size_t)Nk);
        for (int64_t b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int64_t i = 0; i < Nq; i++) {
                    double mx = -INFINITY, sum = 0;
                    int64_t lim = cases[ci].causal ? (i + 1 < Nk ? i + 1 : Nk) : Nk;
                    for (int64_t j = 0; j < lim; j++) {
                        double acc = 0;
                        for (int e = 0; e < d; e++)
                            acc += (double)q[(b * Nq + i) * HD + h * d + e] * k[(b * Nk + j) * HD + h * d + e];
                        s[j] = acc * scale;
                        mx = fmax(mx, s[j]);
                    }
                    for (int64_t j = 0; j < lim; j++)
                        sum += s[j] = exp(s[j] - mx);
                    for (int e = 0; e < d; e++) {
                        double acc = 0;
                        for (int64_t j = 0; j < lim; j++)
                            acc += s[j] * v[(b * Nk + j) * HD + h * d + e];
                        ref[(b * Nq + i) * HD + h * d + e] = acc / sum;
                    }
                }
        EXPECT_CLOSE("attention", t, ref, B * Nq * HD, "case %zu (Nq %lld Nk %lld heads %d d %d causal %d)", ci,
                     (long long)Nq, (long long)Nk, H, d, cases[ci].causal);
        free(q);
        free(k);
        free(v);
        free(ref);
        free(s);
    }
}

/* ------------------------------------------------------------ elementwise */

TEST(unary_ops)
{
    const char *names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu", "tanh", "relu", "sigmoid", "exp"};
    int64_t ne[3] = {3, 7, 65};
    size_t n = 3 * 7 * 65;
    for (int op = SD_UNARY_SILU; op <= SD_UNARY_EXP; op++) {
        begin();
        float *x = rnd(n, 6, 0);
        x[0] = 0;
        if (op != SD_UNARY_EXP) { /* saturation regions (exp(20) would dominate the error scale) */
            x[1] = -20;
            x[2] = 20;
        }
        sd_tensor t = op == SD_UNARY_SILU ? sd_silu(&g_ctx, up(SD_F32, 3, ne, x))
                                          : sd_unary(&g_ctx, up(SD_F32, 3, ne, x), (sd_unary_op)op);
        CHECK(!sd_ok(&g_ctx) || shape_is(t, 3, ne));
        double *ref = dalloc(n);
        for (size_t i = 0; i < n; i++) {
            double v = x[i];
            switch ((sd_unary_op)op) {
            case SD_UNARY_SILU: ref[i] = v / (1 + exp(-v)); break;
            case SD_UNARY_GELU: ref[i] = gelu_d(v); break;
            case SD_UNARY_GELU_TANH: ref[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); break;
            case SD_UNARY_QUICK_GELU: ref[i] = v / (1 + exp(-1.702 * v)); break;
            case SD_UNARY_TANH: ref[i] = tanh(v); break;
            case SD_UNARY_RELU: ref[i] = v > 0 ? v : 0; break;
            case SD_UNARY_SIGMOID: ref[i] = 1 / (1 + exp(-v)); break;
            case SD_UNARY_EXP: ref[i] = exp(v); break;
            }
        }
        EXPECT_CLOSE("unary", t, ref, n, "op %s", names[op]);
        free(x);
        free(ref);
    }
}

TEST(binary_broadcast)
{
    struct {
        int na;
        int64_t ae[4];
        int nb;
        int64_t be[4];
    } cases[] = {
        {4, {2, 3, 4, 5}, 4, {2, 3, 4, 5}}, /* same shape */
        {4, {2, 3, 4, 5}, 4, {2, 3, 1, 1}}, /* [B,C,1,1] */
        {4, {2, 13, 7, 3}, 3, {13, 1, 1}},  /* [C,1,1] */
        {4, {2, 3, 4, 5}, 1, {5}},          /* [W] */
        {4, {2, 3, 4, 5}, 4, {1, 3, 1, 5}},
        {4, {2, 3, 4, 5}, 1, {1}},          /* scalar */
        {4, {1, 65, 3, 7}, 4, {1, 65, 3, 1}},
        {3, {3, 4, 5}, 2, {4, 1}},
        {3, {2, 77, 13}, 3, {1, 77, 13}},
        {2, {7, 13}, 2, {7, 13}},
        {1, {65}, 1, {65}},
    };
    const char *names[] = {"add", "sub", "mul"};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (int op = 0; op < 3; op++) {
            begin();
            int na = cases[ci].na, nb = cases[ci].nb;
            int64_t n = numel(na, cases[ci].ae), nbel = numel(nb, cases[ci].be);
            float *a = rnd((size_t)n, 1, 0), *b = rnd((size_t)nbel, 1, 0.5f);
            sd_tensor ta = up(SD_F32, na, cases[ci].ae, a), tb = up(SD_F32, nb, cases[ci].be, b);
            sd_tensor t = op == 0 ? sd_add(&g_ctx, ta, tb) : op == 1 ? sd_sub(&g_ctx, ta, tb) : sd_mul(&g_ctx, ta, tb);
            CHECK(!sd_ok(&g_ctx) || shape_is(t, na, cases[ci].ae));
            /* right-aligned broadcast reference */
            int64_t A[4] = {1, 1, 1, 1}, Bd[4] = {1, 1, 1, 1};
            for (int i = 0; i < na; i++)
                A[4 - na + i] = cases[ci].ae[i];
            for (int i = 0; i < nb; i++)
                Bd[4 - nb + i] = cases[ci].be[i];
            double *ref = dalloc((size_t)n);
            for (int64_t i0 = 0; i0 < A[0]; i0++)
                for (int64_t i1 = 0; i1 < A[1]; i1++)
                    for (int64_t i2 = 0; i2 < A[2]; i2++)
                        for (int64_t i3 = 0; i3 < A[3]; i3++) {
                            int64_t ia = ((i0 * A[1] + i1) * A[2] + i2) * A[3] + i3;
                            int64_t j0 = Bd[0] == 1 ? 0 : i0, j1 = Bd[1] == 1 ? 0 : i1, j2 = Bd[2] == 1 ? 0 : i2,
                                    j3 = Bd[3] == 1 ? 0 : i3;
                            double bv = b[((j0 * Bd[1] + j1) * Bd[2] + j2) * Bd[3] + j3], av = a[ia];
                            ref[ia] = op == 0 ? av + bv : op == 1 ? av - bv : av * bv;
                        }
            EXPECT_CLOSE("binary", t, ref, n, "case %zu op %s", ci, names[op]);
            free(a);
            free(b);
            free(ref);
        }
}

TEST(affine_clamp_geglu)
{
    begin();
    int64_t ne[3] = {3, 5, 26};
    size_t n = 3 * 5 * 26;
    float *x = rnd(n, 4, 0);
    sd_tensor tx = up(SD_F32, 3, ne, x);
    double *ref = dalloc(n);
    for (size_t i = 0; i < n; i++)
        ref[i] = 0.18215 * x[i] - 1.5;
    EXPECT_CLOSE("affine", sd_affine(&g_ctx, tx, 0.18215f, -1.5f), ref, n, "affine");
    for (size_t i = 0; i < n; i++)
        ref[i] = fmin(fmax(x[i], -1.0), 2.5);
    EXPECT_CLOSE("clamp", sd_clamp(&g_ctx, tx, -1.0f, 2.5f), ref, n, "clamp");
    sd_tensor g = sd_geglu(&g_ctx, tx);
    int64_t ge[3] = {3, 5, 13};
    CHECK(!sd_ok(&g_ctx) || shape_is(g, 3, ge));
    for (int64_t r = 0; r < 15; r++)
        for (int64_t i = 0; i < 13; i++)
            ref[r * 13 + i] = x[r * 26 + i] * gelu_d(x[r * 26 + 13 + i]);
    EXPECT_CLOSE("geglu", g, ref, 15 * 13, "geglu [3,5,26]");
    /* geglu with the last dim 2 */
    int64_t ne2[2] = {7, 2};
    sd_tensor g2 = sd_geglu(&g_ctx, up(SD_F32, 2, ne2, x));
    for (int64_t r = 0; r < 7; r++)
        ref[r] = x[2 * r] * gelu_d(x[2 * r + 1]);
    EXPECT_CLOSE("geglu", g2, ref, 7, "geglu [7,2]");
    free(x);
    free(ref);
}

TEST(upsample2x)
{
    begin();
    int64_t ne[4] = {2, 3, 5, 7};
    size_t n = 2 * 3 * 5 * 7;
    float *x = rnd(n, 1, 0);
    sd_tensor t = sd_upsample2x(&g_ctx, up(SD_F32, 4, ne, x));
    int64_t ye[4] = {2, 3, 10, 14};
    CHECK(!sd_ok(&g_ctx) || shape_is(t, 4, ye));
    double *ref = dalloc(n * 4);
    for (int64_t p = 0; p < 6; p++)
        for (int64_t h = 0; h < 10; h++)
            for (int64_t w = 0; w < 14; w++)
                ref[(p * 10 + h) * 14 + w] = x[(p * 5 + h / 2) * 7 + w / 2];
    EXPECT_CLOSE("upsample2x", t, ref, n * 4, "[2,3,5,7]");
    free(x);
    free(ref);
}

/* ------------------------------------------------------------ layout ops */

static int64_t idx4(const int64_t *ne, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    return ((i0 * ne[1] + i1) * ne[2] + i2) * ne[3] + i3;
}

/* Device image conversions: exactly the host functions sd_rgb_to_chw / sd_chw_to_rgb (io/image.c), NaN,
 * clamping and ties included; bad shapes refused. */
TEST(rgb8_images)
{
    begin();
    enum { N = 2, H = 5, W = 7, HW = H * W };
    uint8_t bytes[N * HW * 3];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i % 7 == 0 ? 0 : i % 11 == 0 ? 255 : (i * 37 + 11) % 256);
    sd_tensor x8 = sd_new(&g_ctx, SD_U8, 4, (int64_t[]){N, H, W, 3});
    CHECK_STATUS(g_be->ops->upload(g_be, x8.data, bytes, sizeof bytes), SD_OK);
    sd_tensor chw = sd_rgb8_to_chw(&g_ctx, x8);
    CHECK(sd_ok(&g_ctx) && shape_is(chw, 4, (int64_t[]){N, 3, H, W}));
    float got[N * 3 * HW], ref[N * 3 * HW];
    CHECK_STATUS(sd_tensor_to_f32(&g_ctx, &chw, got), SD_OK);
    for (int n = 0; n < N; n++) {
        sd_rgb img = {.width = W, .height = H, .data = bytes + n * HW * 3};
        sd_rgb_to_chw(&img, ref + n * 3 * HW);
    }
    CHECK_MSG(!memcmp(got, ref, sizeof got), "rgb8_to_chw differs from sd_rgb_to_chw");
    /* back: random values in [-1.2, 1.2], NaN, +-Inf, values at and around the rounding ties */
    float in[N * 3 * HW];
    for (int i = 0; i < N * 3 * HW; i++)
        in[i] = test_rand(&g_seed) * 1.2f;
    in[0] = NAN;
    in[1] = INFINITY;
    in[2] = -INFINITY;
    in[3] = 2.5f / 127.5f - 1.0f;
    in[4] = 3.5f / 127.5f - 1.0f;
    in[5] = -1.0f;
    in[6] = 1.0f;
    sd_tensor xf = up(SD_F32, 4, (int64_t[]){N, 3, H, W}, in);
    CHECK_STATUS(sd_tensor_to_f32(&g_ctx, &xf, in), SD_OK); /* as the backend stores them */
    sd_tensor y8 = sd_chw_to_rgb8(&g_ctx, xf);
    CHECK(sd_ok(&g_ctx) && y8.dtype == SD_U8 && shape_is(y8, 4, (int64_t[]){N, H, W, 3}));
    uint8_t back[N * HW * 3], want[N * HW * 3];
    CHECK_STATUS(g_be->ops->download(g_be, back, y8.data, sizeof back), SD_OK);
    for (int n = 0; n < N; n++) {
        sd_rgb img = {.width = W, .height = H, .data = want + n * HW * 3};
        sd_chw_to_rgb(in + n * 3 * HW, &img);
    }
    CHECK_MSG(!memcmp(back, want, sizeof back), "chw_to_rgb8 differs from sd_chw_to_rgb");
    sd_rgb8_to_chw(&g_ctx, xf); /* not U8 [N,H,W,3] */
    CHECK_STATUS(g_ctx.status, SD_ERR_SHAPE);
    begin();
    sd_chw_to_rgb8(&g_ctx, x8); /* not [N,3,H,W] activations */
    CHECK_STATUS(g_ctx.status, SD_ERR_SHAPE);
}

TEST(concat_slice)
{
    const int64_t ae[4] = {2, 3, 4, 5};
    for (int axis = 0; axis < 4; axis++) {
        begin();
        int64_t be[4], ye[4];
        memcpy(be, ae, sizeof be);
        be[axis] = axis + 1;
        memcpy(ye, ae, sizeof ye);
        ye[axis] += be[axis];
        size_t na = (size_t)numel(4, ae), nb = (size_t)numel(4, be), ny = na + nb;
        float *a = rnd(na, 1, 0), *b = rnd(nb, 1, 0);
        sd_tensor ta = up(SD_F32, 4, ae, a), tb = up(SD_F32, 4, be, b);
        sd_tensor t = sd_concat(&g_ctx, ta, tb, axis);
        CHECK(!sd_ok(&g_ctx) || shape_is(t, 4, ye));
        double *ref = dalloc(ny);
        for (int64_t i0 = 0; i0 < ye[0]; i0++)
            for (int64_t i1 = 0; i1 < ye[1]; i1++)
                for (int64_t i2 = 0; i2 < ye[2]; i2++)
                    for (int64_t i3 = 0; i3 < ye[3]; i3++) {
                        int64_t id[4] = {i0, i1, i2, i3};
                        bool in_a = id[axis] < ae[axis];
                        if (!in_a)
                            id[axis] -= ae[axis];
                        ref[idx4(ye, i0, i1, i2, i3)] = in_a ? a[idx4(ae, id[0], id[1], id[2], id[3])]
                                                             : b[idx4(be, id[0], id[1], id[2], id[3])];
                    }
        EXPECT_CLOSE("concat", t, ref, ny, "axis %d", axis);
        /* slicing the concatenation gives b back, and a part of a */
        sd_tensor sb = sd_slice(&g_ctx, t, axis, ae[axis], be[axis]);
        CHECK(!sd_ok(&g_ctx) || shape_is(sb, 4, be));
        double *rb = dalloc(nb);
        for (size_t i = 0; i < nb; i++)
            rb[i] = b[i];
        EXPECT_CLOSE("slice", sb, rb, nb, "axis %d (b back)", axis);
        int64_t se[4];
        memcpy(se, ae, sizeof se);
        se[axis] = ae[axis] - 1;
        sd_tensor sa = sd_slice(&g_ctx, ta, axis, 1, se[axis]);
        CHECK(!sd_ok(&g_ctx) || shape_is(sa, 4, se));
        double *ra = dalloc((size_t)numel(4, se));
        for (int64_t i0 = 0; i0 < se[0]; i0++)
            for (int64_t i1 = 0; i1 < se[1]; i1++)
                for (int64_t i2 = 0; i2 < se[2]; i2++)
                    for (int64_t i3 = 0; i3 < se[3]; i3++) {
                        int64_t id[4] = {i0, i1, i2, i3};
                        id[axis] += 1;
                        ra[idx4(se, i0, i1, i2, i3)] = a[idx4(ae, id[0], id[1], id[2], id[3])];
                    }
        EXPECT_CLOSE("slice", sa, ra, numel(4, se), "axis %d (offset 1)", axis);
        free(a);
        free(b);
        free(ref);
        free(rb);
        free(ra);
    }
    /* 2-D concat of an I32 tensor keeps its dtype; 3-D along the middle */
    begin();
    int64_t e2[2] = {3, 2};
    float v[6] = {1, 2, 3, 4, 5, 6};
    sd_tensor i1 = up(SD_I32, 2, e2, v), i2 = up(SD_I32, 2, e2, v);
    sd_tensor ic = sd_concat(&g_ctx, i1, i2, 1);
    CHECK(ic.dtype == SD_I32 && ic.ne[0] == 3 && ic.ne[1] == 4);
    double r2[12] = {1, 2, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6};
    EXPECT_CLOSE("concat", ic, r2, 12, "I32 2-D");
    int64_t e3a[3] = {2, 77, 3}, e3b[3] = {2, 1, 3};
    float *a3 = rnd(2 * 77 * 3, 1, 0), *b3 = rnd(6, 1, 0);
    sd_tensor c3 = sd_concat(&g_ctx, up(SD_F32, 3, e3b, b3), up(SD_F32, 3, e3a, a3), 1);
    double *r3 = dalloc(2 * 78 * 3);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 78; j++)
            for (int64_t k = 0; k < 3; k++)
                r3[(i * 78 + j) * 3 + k] = j == 0 ? b3[i * 3 + k] : a3[(i * 77 + j - 1) * 3 + k];
    EXPECT_CLOSE("concat", c3, r3, 2 * 78 * 3, "3-D axis 1");
    free(a3);
    free(b3);
    free(r3);
}

TEST(permute)
{
    const int perms[][4] = {{0, 1, 2, 3}, {0, 2, 1, 3}, {0, 2, 3, 1}, {0, 3, 1, 2}, {3, 2, 1, 0}, {1, 0, 3, 2},
                            {2, 0, 3, 1}};
    /* then NCHW <-> NHWC again on a shape across the CPU's 32 x 32 transpose blocks (C 37, H*W 77) */
    for (size_t pi = 0; pi < SD_ARRAY_LEN(perms) + 2; pi++) {
        begin();
        bool big = pi >= SD_ARRAY_LEN(perms);
        const int *p = big ? perms[2 + pi - SD_ARRAY_LEN(perms)] : perms[pi];
        const int64_t xe[4] = {2, big ? 37 : 3, big ? 7 : 5, big ? 11 : 7};
        size_t n = (size_t)(xe[0] * xe[1] * xe[2] * xe[3]);
        float *x = rnd(n, 1, 0);
        sd_tensor t = sd_permute(&g_ctx, up(SD_F32, 4, xe, x), p[0], p[1], p[2], p[3]);
        int64_t ye[4] = {xe[p[0]], xe[p[1]], xe[p[2]], xe[p[3]]};
        CHECK(!sd_ok(&g_ctx) || shape_is(t, 4, ye));
        double *ref = dalloc(n);
        for (int64_t i0 = 0; i0 < ye[0]; i0++)
            for (int64_t i1 = 0; i1 < ye[1]; i1++)
                for (int64_t i2 = 0; i2 < ye[2]; i2++)
                    for (int64_t i3 = 0; i3 < ye[3]; i3++) {
                        int64_t xi[4];
                        xi[p[0]] = i0;
                        xi[p[1]] = i1;
                        xi[p[2]] = i2;
                        xi[p[3]] = i3;
                        ref[idx4(ye, i0, i1, i2, i3)] = x[idx4(xe, xi[0], xi[1], xi[2], xi[3])];
                    }
        EXPECT_CLOSE("permute", t, ref, n, "perm %d%d%d%d", p[0], p[1], p[2], p[3]);
        free(x);
        free(ref);
    }
}

/* ------------------------------------------------------------ embeddings */

TEST(timestep_embedding)
{
    const float ts[] = {0.0f, 1.0f, 999.0f, 500.5f, 37.0f, 261.0f};
    int64_t B = (int64_t)SD_ARRAY_LEN(ts);
    struct {
        int dim;
        bool flip;
        float shift;
    } cases[] = {{320, true, 0}, {320, false, 1}, {7, false, 1}, {33, true, 1}, {8, false, 0}, {1, true, 0},
                 {1280, true, 0}};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        begin();
        int dim = cases[ci].dim, half = dim / 2;
        sd_tensor t = sd_timestep_embedding(&g_ctx, up(SD_F32, 1, &B, ts), dim, cases[ci].flip, cases[ci].shift);
        int64_t ye[2] = {B, dim};
        CHECK(!sd_ok(&g_ctx) || shape_is(t, 2, ye));
        /* diffusers get_timestep_embedding, whose frequencies and arguments are float32 tensors:
         *   exponent = -log(max_period) * arange(half) / (half - shift);  emb = t * exp(exponent)
         *   [sin, cos] (flipped to [cos, sin]), zero-padded when dim is odd.
         * The float32 rounding of exponent/emb/argument is reproduced; sin/cos are taken in double. */
        double *ref = dalloc((size_t)(B * dim));
        for (int64_t b = 0; b < B; b++) {
            for (int i = 0; i < half; i++) {
                float ex = ((float)(-log(10000.0)) * (float)i) / (float)((double)half - cases[ci].shift);
                float fr = (float)exp((double)ex);
                float arg = ts[b] * fr;
                double s = sin((double)arg), c = cos((double)arg);
                ref[b * dim + i] = cases[ci].flip ? c : s;
                ref[b * dim + half + i] = cases[ci].flip ? s : c;
            }
            if (dim % 2)
                ref[b * dim + dim - 1] = 0;
        }
        EXPECT_CLOSE("timestep_embedding", t, ref, B * dim, "dim %d flip %d shift %g", dim, cases[ci].flip,
                     (double)cases[ci].shift);
        free(ref);
    }
}

TEST(embedding)
{
    begin();
    const int64_t V = 11, D = 7;
    int64_t te[2] = {V, D};
    float *tab = rnd((size_t)(V * D), 1, 0);
    const float ids[] = {0, 10, 3, -1, 11, 100, 5, 3, -2147483648.0f};
    int64_t N = (int64_t)SD_ARRAY_LEN(ids);
    sd_tensor t = sd_embedding(&g_ctx, up(SD_F32, 2, te, tab), up(SD_I32, 1, &N, ids));
    int64_t ye[2] = {N, D};
    CHECK(!sd_ok(&g_ctx) || shape_is(t, 2, ye));
    double *ref = dalloc((size_t)(N * D));
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < D; j++)
            ref[i * D + j] = (ids[i] >= 0 && ids[i] < V) ? tab[(int64_t)ids[i] * D + j] : 0.0;
    EXPECT_CLOSE("embedding", t, ref, N * D, "out-of-range ids give zeros");
    /* out-of-range rows are exactly zero */
    float *y = down(t);
    for (int64_t j = 0; j < D; j++)
        CHECK(y[3 * D + j] == 0.0f && y[4 * D + j] == 0.0f && y[5 * D + j] == 0.0f && y[8 * D + j] == 0.0f);
    free(y);
    /* a table in F16 is converted */
    sd_tensor t16 = sd_embedding(&g_ctx, up(SD_F16, 2, te, tab), up(SD_I32, 1, &N, ids));
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < D; j++)
            ref[i * D + j] = (ids[i] >= 0 && ids[i] < V) ? quant(tab[(int64_t)ids[i] * D + j], SD_F16) : 0.0;
    EXPECT_CLOSE("embedding", t16, ref, N * D, "F16 table");
    free(tab);
    free(ref);
}

TEST(cast_and_views)
{
    begin();
    int64_t ne[2] = {5, 13};
    size_t n = 65;
    float *x = rnd(n, 100, 0);
    sd_tensor tx = up(SD_F32, 2, ne, x);
    double *ref = dalloc(n);
    for (int k = 0; k < 2; k++) {
        sd_dtype dt = k ? SD_BF16 : SD_F16;
        sd_tensor h = sd_cast(&g_ctx, tx, dt);
        CHECK(h.dtype == dt && shape_is(h, 2, ne));
        sd_tensor back = sd_cast(&g_ctx, h, SD_F32);
        for (size_t i = 0; i < n; i++)
            ref[i] = quant(x[i], dt);
        CHECK(back.dtype == SD_F32);
        if (sd_ok(&g_ctx)) { /* exact */
            float *y = down(back);
            for (size_t i = 0; i < n; i++)
                CHECK_MSG((double)y[i] == ref[i], "%s cast %zu: %g vs %g", sd_dtype_name(dt), i, (double)y[i], ref[i]);
            free(y);
        }
    }
    /* reshape / view_rows share memory */
    sd_tensor r = sd_reshape3(&g_ctx, tx, 13, 1, 5);
    CHECK(r.data == tx.data && r.ndim == 3 && r.ne[0] == 13);
    sd_tensor v = sd_view_rows(&g_ctx, tx, 2, 3);
    CHECK(v.data == (float *)tx.data + 2 * 13 && v.ne[0] == 3 && v.ne[1] == 13);
    for (size_t i = 0; i < 39; i++)
        ref[i] = x[26 + i];
    EXPECT_CLOSE("views", v, ref, 39, "view_rows");
    /* copy_into */
    sd_tensor dst = sd_new(&g_ctx, SD_F32, 2, ne);
    sd_copy_into(&g_ctx, dst, tx);
    for (size_t i = 0; i < n; i++)
        ref[i] = x[i];
    EXPECT_CLOSE("views", dst, ref, n, "copy_into");
    CHECK(sd_ok(&g_ctx));
    free(x);
    free(ref);
}

/* ------------------------------------------------------------ context */

typedef struct {
    float *x, *gn_g, *gn_b, *conv_w, *conv_b, *wq, *wk, *wv;
    sd_tensor t_gn_g, t_gn_b, t_conv_w, t_conv_b, t_wq, t_wk, t_wv; /* host-memory weights (CPU backend) */
} block_weights;

/* A small resnet + attention block like the UNet's, with scopes. Weights live
 * outside the arena (zero-copy views on a host-memory backend); the F16 conv
 * weight is converted into arena scratch by the wrapper. */
static sd_tensor run_block(sd_ctx *ctx, const block_weights *bw)
{
    sd_tensor x = sd_new4(ctx, 1, 8, 12, 12);
    sd_tensor_from_f32(ctx, &x, bw->x);
    size_t m = sd_mark(ctx);
    sd_tensor h = sd_group_norm(ctx, x, bw->t_gn_g, bw->t_gn_b, 4, 1e-5f, true);
    h = sd_conv2d(ctx, h, bw->t_conv_w, &bw->t_conv_b, 1, 1);
    h = sd_add(ctx, h, x);
    h = sd_keep(ctx, m, h);
    m = sd_mark(ctx);
    sd_tensor t = sd_reshape3(ctx, sd_permute(ctx, h, 0, 2, 3, 1), 1, 144, 8);
    sd_tensor q = sd_linear(ctx, t, bw->t_wq, NULL), k = sd_linear(ctx, t, bw->t_wk, NULL),
              v = sd_linear(ctx, t, bw->t_wv, NULL);
    sd_tensor a = sd_attention(ctx, q, k, v, 2, 0.5f, false);
    a = sd_permute(ctx, sd_reshape4(ctx, a, 1, 12, 12, 8), 0, 3, 1, 2);
    h = sd_keep(ctx, m, sd_add(ctx, h, a));
    return sd_upsample2x(ctx, sd_conv2d_pads(ctx, h, bw->t_conv_w, NULL, 2, (const int[4]){0, 0, 1, 1}));
}

static void make_block_weights(block_weights *bw, sd_ctx *wctx)
{
    bw->x = rnd(8 * 144, 1, 0);
    bw->gn_g = rnd(8, 0.5f, 1);
    bw->gn_b = rnd(8, 0.5f, 0);
    bw->conv_w = rnd(8 * 8 * 9, 0.3f, 0);
    bw->conv_b = rnd(8, 0.5f, 0);
    bw->wq = rnd(64, 0.5f, 0);
    bw->wk = rnd(64, 0.5f, 0);
    bw->wv = rnd(64, 0.5f, 0);
    int64_t c8 = 8, cw[4] = {8, 8, 3, 3}, lw[2] = {8, 8};
    bw->t_gn_g = sd_tensor_make(bw->gn_g, SD_F32, 1, &c8);
    bw->t_gn_b = sd_tensor_make(bw->gn_b, SD_F32, 1, &c8);
    bw->t_conv_b = sd_tensor_make(bw->conv_b, SD_F32, 1, &c8);
    bw->t_wq = sd_tensor_make(bw->wq, SD_F32, 2, lw);
    bw->t_wk = sd_tensor_make(bw->wk, SD_F32, 2, lw);
    bw->t_wv = sd_tensor_make(bw->wv, SD_F32, 2, lw);
    bw->t_conv_w = sd_new(wctx, SD_F16, 4, cw); /* F16 weight in its own context */
    sd_tensor_from_f32(wctx, &bw->t_conv_w, bw->conv_w);
}

static void free_block_weights(block_weights *bw)
{
    free(bw->x);
    free(bw->gn_g);
    free(bw->gn_b);
    free(bw->conv_w);
    free(bw->conv_b);
    free(bw->wq);
    free(bw->wk);
    free(bw->wv);
}

TEST(planning_context)
{
    sd_ctx wctx;
    CHECK_STATUS(sd_ctx_init(&wctx, g_be, 1 << 16), SD_OK);
    block_weights bw;
    make_block_weights(&bw, &wctx);

    sd_ctx plan;
    sd_ctx_init_plan(&plan, g_be);
    sd_tensor py = run_block(&plan, &bw);
    CHECK(sd_ok(&plan));
    CHECK(plan.peak > 0 && plan.base == NULL);
    CHECK(py.data == NULL && py.ndim == 4 && py.ne[1] == 8 && py.ne[2] == 12 && py.ne[3] == 12);
    printf("  planned peak: %zu bytes (final top %zu)\n", plan.peak, plan.off);

    /* a context of exactly the planned size runs the same sequence */
    sd_ctx real;
    CHECK_STATUS(sd_ctx_init(&real, g_be, plan.peak), SD_OK);
    sd_tensor y = run_block(&real, &bw);
    CHECK_MSG(sd_ok(&real), "exact-size run failed: %s", sd_last_error());
    CHECK(real.peak == plan.peak);
    CHECK(real.off == plan.off);
    /* same values as a run in the big arena */
    begin();
    sd_tensor yb = run_block(&g_ctx, &bw);
    CHECK(sd_ok(&g_ctx));
    if (sd_ok(&real) && sd_ok(&g_ctx)) {
        size_t n = (size_t)sd_numel(&y);
        CHECK(n == (size_t)sd_numel(&yb));
        CHECK(!memcmp(y.data, yb.data, n * sizeof(float)));
    }
    /* running again after a reset gives the same peak and result */
    sd_ctx_reset(&real);
    sd_tensor y2 = run_block(&real, &bw);
    CHECK(sd_ok(&real) && real.peak == plan.peak && y2.data == y.data);
    sd_ctx_free(&real);

    /* one alignment unit less is not enough */
    CHECK_STATUS(sd_ctx_init(&real, g_be, plan.peak - 64), SD_OK);
    run_block(&real, &bw);
    CHECK(real.status == SD_ERR_OUT_OF_MEMORY);
    CHECK_ERR_CONTAINS("arena exhausted");
    sd_ctx_free(&real);
    sd_ctx_free(&wctx);
    free_block_weights(&bw);
}

TEST(mark_keep_release)
{
    begin();
    sd_ctx *c = &g_ctx;
    int64_t n = 100;
    float *x = rnd((size_t)n, 1, 0);
    sd_tensor a = up(SD_F32, 1, &n, x);
    size_t m = sd_mark(c);
    CHECK(m == 448); /* 400 bytes rounded up to the 64-byte arena alignment */
    sd_tensor t1 = sd_affine(c, a, 2.0f, 0.0f);
    sd_tensor t2 = sd_affine(c, t1, 1.0f, 1.0f);
    CHECK((uint8_t *)t2.data > c->base + m);
    sd_tensor k = sd_keep(c, m, t2);
    CHECK((uint8_t *)k.data == c->base + m);
    CHECK(c->off == m + 448);
    double *ref = dalloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        ref[i] = 2.0 * x[i] + 1.0;
    EXPECT_CLOSE("keep", k, ref, n, "kept values");
    /* keeping a tensor that is already below the mark leaves it in place and frees above */
    size_t m2 = sd_mark(c);
    sd_affine(c, a, 3.0f, 0.0f);
    sd_tensor k2 = sd_keep(c, m2, a);
    CHECK(k2.data == a.data && c->off == m2);
    /* keep of the tensor right at the mark: nothing moves */
    size_t m3 = sd_mark(c);
    sd_tensor t3 = sd_affine(c, a, 1.0f, 0.0f);
    sd_tensor k3 = sd_keep(c, m3, t3);
    CHECK(k3.data == t3.data && c->off == m3 + 448);
    /* release */
    sd_release(c, m);
    CHECK(c->off == m);
    sd_release(c, m + 4096); /* above the top: no-op */
    CHECK(c->off == m);
    /* keep in a planning context accounts the kept size at the mark */
    sd_ctx plan;
    sd_ctx_init_plan(&plan, g_be);
    sd_tensor pa = sd_new4(&plan, 100, 0, 0, 0);
    size_t pm = sd_mark(&plan);
    sd_tensor pt = sd_affine(&plan, sd_affine(&plan, pa, 2, 0), 1, 1);
    sd_tensor pk = sd_keep(&plan, pm, pt);
    CHECK(pk.data == NULL && plan.off == pm + 448 && plan.peak == pm + 2 * 448 && sd_ok(&plan));
    free(x);
    free(ref);
}

/* Scopes (what model code uses): a step keeps one tensor at the scope's start, the end hands the
 * result to the caller, drop frees everything, and the inputs below the scope are never touched. */
TEST(scopes)
{
    begin();
    sd_ctx *c = &g_ctx;
    int64_t n = 100;
    float *x = rnd((size_t)n, 1, 7);
    sd_tensor a = up(SD_F32, 1, &n, x); /* the input, below the scope */
    sd_scope s = sd_scope_begin(c);
    CHECK(s.mark == 448 && s.ctx == c);
    sd_tensor h = sd_affine(c, a, 2.0f, 0.0f);
    sd_tensor t = sd_affine(c, h, 1.0f, 1.0f);
    h = sd_step(&s, t); /* 2x + 1: moved down, the first affine freed */
    CHECK((uint8_t *)h.data == c->base + s.mark && c->off == s.mark + 448);
    sd_tensor t2 = sd_affine(c, h, 1.0f, -1.0f);
    h = sd_step(&s, sd_affine(c, sd_add(c, t2, a), 0.5f, 0.0f)); /* (2x + x) / 2 */
    CHECK((uint8_t *)h.data == c->base + s.mark && c->off == s.mark + 448);
    /* a nested scope (a block inside a block) gives its result to the outer one */
    sd_scope inner = sd_scope_begin(c);
    CHECK(inner.mark == s.mark + 448);
    sd_tensor r = sd_scope_end(&inner, sd_affine(c, sd_affine(c, h, 1.0f, 0.0f), 2.0f, 0.0f)); /* 3x */
    CHECK((uint8_t *)r.data == c->base + inner.mark && c->off == inner.mark + 448);
    h = sd_scope_end(&s, r);
    CHECK((uint8_t *)h.data == c->base + s.mark && c->off == s.mark + 448);
    double *ref = dalloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        ref[i] = 3.0 * x[i];
    EXPECT_CLOSE("scope", h, ref, n, "scope result");
    float back[100];
    CHECK_STATUS(sd_tensor_to_f32(c, &a, back), SD_OK);
    CHECK(!memcmp(back, x, sizeof back)); /* the input is untouched */
    /* drop: nothing survives */
    sd_scope d = sd_scope_begin(c);
    sd_affine(c, a, 5.0f, 0.0f);
    sd_scope_drop(&d);
    CHECK(c->off == d.mark);
    /* planning: a scope's peak is what its steps held at once, its end keeps only the result */
    sd_ctx plan;
    sd_ctx_init_plan(&plan, g_be);
    sd_tensor pa = sd_new4(&plan, 100, 0, 0, 0);
    sd_scope ps = sd_scope_begin(&plan);
    sd_tensor ph = sd_step(&ps, sd_affine(&plan, sd_affine(&plan, pa, 2, 0), 1, 1));
    sd_tensor pr = sd_scope_end(&ps, sd_affine(&plan, ph, 1, 0));
    CHECK(pr.data == NULL && plan.off == ps.mark + 448 && plan.peak == ps.mark + 2 * 448 && sd_ok(&plan));
    free(x);
    free(ref);
}

TEST(sticky_errors)
{
    begin();
    sd_ctx *c = &g_ctx;
    int64_t ae[4] = {2, 3, 4, 5}, be[1] = {7}, we[4] = {4, 3, 3, 3};
    sd_tensor a = sd_new(c, SD_F32, 4, ae), b = sd_new(c, SD_F32, 1, be), w = sd_new(c, SD_F32, 4, we);
    size_t off = c->off;
    sd_tensor y = sd_add(c, a, b);
    CHECK(c->status == SD_ERR_SHAPE && !sd_ok(c));
    CHECK(y.data == NULL && y.ndim == 0);
    CHECK_ERR_CONTAINS("binary op");
    CHECK_ERR_CONTAINS("[2,3,4,5]");
    CHECK_ERR_CONTAINS("[7]");
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", sd_last_error());
    /* later ops are no-ops: empty results, no allocation, the first error stays */
    sd_tensor y2 = sd_conv2d(c, a, w, NULL, 1, 1);
    sd_tensor y3 = sd_new4(c, 10, 10, 0, 0);
    sd_tensor y4 = sd_matmul(c, a, a, false, false, 1.0f);
    sd_tensor y5 = sd_unary(c, a, SD_UNARY_EXP);
    sd_tensor y6 = sd_sub(c, a, a); /* would be valid */
    CHECK(y2.data == NULL && y2.ndim == 0 && y3.data == NULL && y4.data == NULL && y5.data == NULL &&
          y6.data == NULL);
    CHECK(c->off == off);
    CHECK(c->status == SD_ERR_SHAPE);
    CHECK(!strcmp(saved, sd_last_error()));
    float host[120];
    CHECK_STATUS(sd_tensor_from_f32(c, &a, host), SD_ERR_SHAPE);
    CHECK_STATUS(sd_tensor_to_f32(c, &a, host), SD_ERR_SHAPE);
    sd_ctx_reset(c);
    CHECK(sd_ok(c) && c->off == 0);
}

/* Each invalid call fails with SD_ERR_SHAPE and a message naming the op. */
TEST(shape_errors)
{
    sd_ctx *c = &g_ctx;
#define EXPECT_SHAPE_ERR(expr, opname)                                                                 \
    do {                                                                                               \
        begin();                                                                                       \
        int64_t e4_[4] = {1, 3, 2, 2}, e3_[3] = {2, 5, 6}, e2_[2] = {4, 6}, e1_[1] = {5};              \
        sd_tensor x4 = sd_new(c, SD_F32, 4, e4_), x3 = sd_new(c, SD_F32, 3, e3_),                      \
                  x2 = sd_new(c, SD_F32, 2, e2_), x1 = sd_new(c, SD_F32, 1, e1_);                      \
        (void)x4, (void)x3, (void)x2, (void)x1;                                                        \
        sd_tensor r_ = (expr);                                                                         \
        CHECK_MSG(c->status == SD_ERR_SHAPE, "%s gave %s", #expr, sd_status_name(c->status));          \
        CHECK_MSG(r_.data == NULL, "%s returned data", #expr);                                         \
        CHECK_ERR_CONTAINS(opname);                                                                    \
    } while (0)
    int64_t w33[4] = {4, 3, 3, 3}, w5[4] = {4, 5, 3, 3}, g3[1] = {3}, l7[2] = {7, 7};
    sd_tensor tw33 = sd_tensor_make(NULL, SD_F32, 4, w33), tw5 = sd_tensor_make(NULL, SD_F32, 4, w5);
    sd_tensor tg3 = sd_tensor_make(NULL, SD_F32, 1, g3), tl7 = sd_tensor_make(NULL, SD_F32, 2, l7);
    EXPECT_SHAPE_ERR(sd_conv2d(c, x4, tw5, NULL, 1, 1), "conv2d");              /* channels differ */
    EXPECT_SHAPE_ERR(sd_conv2d(c, x4, tw33, NULL, 1, 0), "conv2d");             /* 2x2 input, 3x3 kernel */
    EXPECT_SHAPE_ERR(sd_conv2d(c, x4, tw33, NULL, 2, 0), "conv2d");             /* same with stride 2 */
    EXPECT_SHAPE_ERR(sd_conv2d(c, x4, tw33, NULL, 0, 1), "conv2d");             /* stride 0 */
    EXPECT_SHAPE_ERR(sd_conv2d(c, x4, tw33, &tl7, 1, 1), "conv2d");             /* bias shape */
    EXPECT_SHAPE_ERR(sd_conv2d(c, x3, tw33, NULL, 1, 1), "conv2d");             /* not 4-D */
    EXPECT_SHAPE_ERR(sd_linear(c, x3, tl7, NULL), "linear");                    /* K 6 vs 7 */
    EXPECT_SHAPE_ERR(sd_linear(c, x2, sd_tensor_make(NULL, SD_F32, 2, (int64_t[]){3, 6}), &tl7), "linear");
    EXPECT_SHAPE_ERR(sd_matmul(c, x3, x3, false, false, 1), "matmul");          /* 6 vs 5 */
    EXPECT_SHAPE_ERR(sd_matmul(c, x3, x2, false, true, 1), "matmul");           /* not 3-D */
    EXPECT_SHAPE_ERR(sd_attention(c, x3, x3, x3, 4, 1, false), "attention");    /* 6 % 4 != 0 */
    EXPECT_SHAPE_ERR(sd_attention(c, x3, x2, x2, 2, 1, false), "attention");
    EXPECT_SHAPE_ERR(sd_group_norm(c, x4, tg3, tg3, 2, 1e-5f, false), "group_norm"); /* 3 % 2 */
    EXPECT_SHAPE_ERR(sd_group_norm(c, x4, x1, x1, 3, 1e-5f, false), "group_norm");   /* gamma [5] */
    EXPECT_SHAPE_ERR(sd_layer_norm(c, x3, x1, x1, 1e-5f), "layer_norm");
    EXPECT_SHAPE_ERR(sd_add(c, x3, x2), "binary op");
    EXPECT_SHAPE_ERR(sd_mul(c, x1, x2), "binary op"); /* b has more dims */
    EXPECT_SHAPE_ERR(sd_concat(c, x3, x2, 0), "concat");
    EXPECT_SHAPE_ERR(sd_concat(c, x3, x3, 3), "concat");
    EXPECT_SHAPE_ERR(sd_slice(c, x3, 1, 3, 3), "slice");
    EXPECT_SHAPE_ERR(sd_slice(c, x3, 3, 0, 1), "slice");
    EXPECT_SHAPE_ERR(sd_permute(c, x4, 0, 1, 1, 3), "permute");
    EXPECT_SHAPE_ERR(sd_permute(c, x3, 0, 1, 2, 3), "permute");
    EXPECT_SHAPE_ERR(sd_geglu(c, x1), "geglu");
    EXPECT_SHAPE_ERR(sd_upsample2x(c, x3), "upsample2x");
    EXPECT_SHAPE_ERR(sd_reshape2(c, x3, 7, 9), "reshape");
    EXPECT_SHAPE_ERR(sd_reshape(c, x3, 5, (int64_t[]){1, 1, 2, 5, 6}), "reshape"); /* rank 5 */
    EXPECT_SHAPE_ERR(sd_view_rows(c, x3, 1, 2), "view_rows");
    EXPECT_SHAPE_ERR(sd_timestep_embedding(c, x2, 8, true, 0), "timestep_embedding");
    EXPECT_SHAPE_ERR(sd_embedding(c, x2, x1), "embedding"); /* ids must be I32 */
#undef EXPECT_SHAPE_ERR
    sd_ctx_reset(c);
}

TEST(arena_exhaustion)
{
    sd_ctx small;
    CHECK_STATUS(sd_ctx_init(&small, g_be, 1024), SD_OK);
    sd_tensor a = sd_new4(&small, 100, 0, 0, 0); /* 448 of 1024 */
    CHECK(sd_ok(&small) && a.data != NULL);
    sd_tensor b = sd_new4(&small, 1000, 0, 0, 0);
    CHECK(small.status == SD_ERR_OUT_OF_MEMORY);
    CHECK(b.data == NULL && b.ndim == 0);
    CHECK_ERR_CONTAINS("arena exhausted");
    /* sticky: later ops do nothing */
    sd_tensor c2 = sd_affine(&small, a, 1, 0);
    CHECK(c2.data == NULL && small.status == SD_ERR_OUT_OF_MEMORY);
    /* an op whose scratch does not fit */
    sd_ctx_reset(&small);
    /* (attention: the SIMD CPU path's convolutions need no scratch, attention always does) */
    int64_t qe[3] = {1, 4, 4};
    sd_tensor x = sd_new(&small, SD_F32, 3, qe); /* 64 */
    sd_new4(&small, 200, 0, 0, 0);               /* 800: 864 of 1024 used */
    sd_tensor y = sd_attention(&small, x, x, x, 1, 0.5f, false); /* y 64 fits, the scratch (KiB) does not */
    CHECK(small.status == SD_ERR_OUT_OF_MEMORY);
    CHECK_ERR_CONTAINS("arena exhausted");
    (void)y;
    /* a size that overflows */
    sd_ctx_reset(&small);
    sd_new4(&small, (int64_t)1 << 40, (int64_t)1 << 40, 0, 0);
    CHECK(small.status == SD_ERR_OUT_OF_MEMORY);
    sd_ctx_free(&small);
}

/* sd_conv2d_into: the same values as sd_conv2d, in the given tensor; a wrong shape or an overlap with the
 * input is a named error */
TEST(conv2d_into)
{
    begin();
    int64_t xe[4] = {2, 3, 9, 7}, we[4] = {5, 3, 3, 3}, be[1] = {5};
    float *x = rnd(2 * 3 * 9 * 7, 1, 0), *w = rnd(5 * 27, 1, 0), *b = rnd(5, 1, 0);
    sd_tensor tx = up(SD_F32, 4, xe, x), tw = up(SD_F32, 4, we, w), tb = up(SD_F32, 1, be, b);
    sd_tensor ref = sd_conv2d(&g_ctx, tx, tw, &tb, 1, 1);
    sd_tensor dst = sd_new4(&g_ctx, 2, 5, 9, 7);
    sd_tensor y = sd_conv2d_into(&g_ctx, dst, tx, tw, &tb, 1, 1);
    CHECK(sd_ok(&g_ctx) && y.data == dst.data);
    CHECK(sd_ok(&g_ctx) && !memcmp(y.data, ref.data, sd_nbytes(&ref)));
    sd_tensor small = sd_new4(&g_ctx, 2, 5, 9, 6);
    sd_conv2d_into(&g_ctx, small, tx, tw, &tb, 1, 1);
    CHECK(g_ctx.status == SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS("the destination must be the output's shape");
    begin();
    int64_t ye[4] = {2, 3, 9, 7}, w3e[4] = {3, 3, 3, 3};
    sd_tensor tx2 = up(SD_F32, 4, ye, x), tw3 = up(SD_F32, 4, w3e, w);
    sd_conv2d_into(&g_ctx, tx2, tx2, tw3, NULL, 1, 1);
    CHECK(g_ctx.status == SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS("overlaps the input");
    begin();
    free(x);
    free(w);
    free(b);
}

/* SD_OP_TIMES: the timed calls land in their kinds (with GFLOP/s for GEMM-like ones); off, nothing is counted */
TEST(op_timers)
{
    begin();
    bool was = sd_optime_on;
    int64_t xe[2] = {64, 32}, we[2] = {48, 32}, ge[1] = {32};
    float *x = rnd(64 * 32, 1, 0), *w = rnd(48 * 32, 1, 0), *g = rnd(32, 1, 1);
    sd_tensor tx = up(SD_F32, 2, xe, x), tw = up(SD_F32, 2, we, w), tg = up(SD_F32, 1, ge, g);
    sd_optime_reset();
    sd_optime_on = false;
    sd_linear(&g_ctx, tx, tw, NULL); /* off: not counted */
    sd_optime_on = true;
    sd_linear(&g_ctx, tx, tw, NULL);
    sd_linear(&g_ctx, tx, tw, NULL);
    sd_layer_norm(&g_ctx, tx, tg, tg, 1e-5f);
    sd_add(&g_ctx, tx, tx);
    sd_optime_on = was;
    char buf[4096] = "";
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (f) {
        sd_optime_on = true;
        sd_optime_print(f, 2);
        sd_optime_on = was;
        rewind(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    long long calls = -1;
    const char *l = strstr(buf, "  linear ");
    CHECK_MSG(l && sscanf(l, "  linear %lld", &calls) == 1 && calls == 2, "linear calls: %lld in\n%s", calls, buf);
    l = strstr(buf, "  layer norm ");
    CHECK_MSG(l && sscanf(l, "  layer norm %lld", &calls) == 1 && calls == 1, "layer norm calls in\n%s", buf);
    CHECK_MSG(strstr(buf, "  add ") && !strstr(buf, "  conv 3x3"), "kinds in\n%s", buf);
    CHECK_MSG(strstr(buf, "ms/run") != NULL, "per-run column in\n%s", buf);
    sd_optime_reset();
    f = tmpfile();
    if (f) { /* nothing counted since the reset: no table */
        sd_optime_on = true;
        sd_optime_print(f, 1);
        sd_optime_on = was;
        CHECK(ftell(f) == 0);
        fclose(f);
    }
    free(x);
    free(w);
    free(g);
}

int main(void)
{
    if (sd_backend_cpu_create(0, &g_be) != SD_OK || sd_ctx_init(&g_ctx, g_be, (size_t)96 << 20) != SD_OK) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", sd_last_error());
        return 1;
    }
    RUN(conv2d);
    RUN(linear);
    RUN(matmul);
    RUN(group_norm);
    RUN(layer_norm);
    RUN(softmax);
    RUN(attention);
    RUN(unary_ops);
    RUN(binary_broadcast);
    RUN(affine_clamp_geglu);
    RUN(upsample2x);
    RUN(rgb8_images);
    RUN(concat_slice);
    RUN(permute);
    RUN(timestep_embedding);
    RUN(embedding);
    RUN(cast_and_views);
    RUN(planning_context);
    RUN(mark_keep_release);
    RUN(scopes);
    RUN(sticky_errors);
    RUN(shape_errors);
    RUN(arena_exhaustion);
    RUN(op_timers);
    RUN(conv2d_into);
    printf("worst relative error per op (limit %.0e):\n", TOL);
    for (int i = 0; i < g_nstats; i++)
        printf("  %-20s %3d cases  %.2e\n", g_stats[i].op, g_stats[i].cases, g_stats[i].worst);
    sd_ctx_free(&g_ctx);
    sd_backend_destroy(g_be);
    return test_summary();
}
