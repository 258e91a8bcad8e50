/* The CPU backend's bf16 kernels (precision bf16) against double references.
 *
 * Every bf16 level this CPU can run ("amx", "avx512bf16"; SD_CPU_ISA-style names) computes linears,
 * convolutions (implicit GEMM) and attention through the op wrappers with sd_backend_cpu_set_bf16.
 * The references use the same bf16-rounded inputs (activations and weights rounded to nearest even,
 * as the kernels round them when packing) summed in double, so the only error left is the fp32
 * accumulation: bound 2e-5 of max |ref| (1e-5 for fp32 in test_cpu_kernels.c; the bf16 kernels sum
 * 32-deep tiles in a different order). Shapes cross the packing blocks (K > 512, N > 256, M > 128)
 * and leave every tail: M, N, K not multiples of 16 or 32, K odd (half a bf16 pair), M = N = K = 1.
 * The fallback level (bf16 weights, fp32 compute: "avx512" and "avx2" with bf16 on) is checked the
 * same way against unrounded activations. Levels the CPU lacks are skipped and said so; no bf16 level
 * at all: exit 77. auto_rule: precision auto's choice per level against the instruction peaks timed here. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "test.h"
#include "test_util.h"

static double g_tol;
static bool g_round_act; /* the level rounds activations to bf16 */
static const char *g_isa;
static sd_backend *g_be;
static sd_ctx g_ctx;
static unsigned long long g_seed = 0x9e3779b97f4a7c15ULL;

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

static float bf(float v) { return sd_bf16_to_f32(sd_f32_to_bf16(v)); }
static double act(float v) { return g_round_act ? bf(v) : v; } /* an activation as the kernel sees it */

static sd_tensor up(sd_dtype dt, int nd, const int64_t *ne, const float *host) { return test_upload(&g_ctx, dt, nd, ne, host); }

/* max |y - ref| / max |ref|; 1 if the op failed (tests/test_util.h) */
static double err_of(sd_tensor t, const double *ref, size_t n) { return test_rel_err(&g_ctx, t, ref, n); }

#define EXPECT_ERR(what, t, ref, n, ...)                                                                     \
    do {                                                                                                     \
        double e_ = err_of((t), (ref), (size_t)(n));                                                         \
        if (!(e_ <= g_tol)) {                                                                                \
            fprintf(stderr, "  %s:%d: [%s] %s rel err %.3g: ", __FILE__, __LINE__, g_isa, what, e_);       \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            t_cur_failed = 1;                                                                                \
        }                                                                                                    \
    } while (0)

/* w prepared as at load where the level does, else w (tests/test_util.h) */
static sd_tensor prepared(sd_tensor w, sd_weight_use use) { return test_prepared(&g_ctx, g_be, w, use); }

TEST(linear_bf16)
{
    /* M, K, N */
    const int64_t cases[][3] = {{1, 1, 1},     {3, 31, 17},   {77, 768, 320}, {130, 1031, 300},
                                {33, 33, 47},  {200, 65, 513}, {16, 32, 16},  {4096 / 16, 320, 64},
                                {5, 40, 1100}, {40, 1030, 2100}, /* N > 1024: two weight blocks */
                                {3, SD_BK_KFULL + 9, 40}};          /* deeper than one pass: depth blocks */
    const sd_dtype dts[] = {SD_BF16, SD_F32, SD_F16};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (size_t di = 0; di < SD_ARRAY_LEN(dts); di++) {
            sd_ctx_reset(&g_ctx);
            int64_t M = cases[ci][0], K = cases[ci][1], N = cases[ci][2];
            float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.5f), *b = rnd((size_t)N, 1);
            for (int64_t i = 0; i < N * K; i++) /* the weight as the backend stores it */
                w[i] = dts[di] == SD_F16 ? sd_f16_to_f32(sd_f32_to_f16(w[i])) : bf(w[i]);
            int64_t xe[2] = {M, K}, we[2] = {N, K};
            sd_tensor tb = up(SD_F32, 1, &N, b), tx = up(SD_F32, 2, xe, x), tw = up(dts[di], 2, we, w);
            sd_tensor y = sd_linear(&g_ctx, tx, tw, ci % 2 ? &tb : NULL);
            sd_tensor twp = prepared(tw, SD_WEIGHT_LINEAR); /* a BF16 weight prepared as at load */
            sd_tensor yp = twp.layout != SD_LAYOUT_ROWMAJOR ? sd_linear(&g_ctx, tx, twp, ci % 2 ? &tb : NULL) : y;
            double *ref = malloc((size_t)(M * N) * sizeof(double));
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double acc = ci % 2 ? b[n] : 0.0;
                    for (int64_t k = 0; k < K; k++)
                        acc += act(x[m * K + k]) * (g_round_act ? bf(w[n * K + k]) : w[n * K + k]);
                    ref[m * N + n] = acc;
                }
            EXPECT_ERR("linear", y, ref, M * N, "M %lld K %lld N %lld w %s", (long long)M, (long long)K, (long long)N,
                       sd_dtype_name(dts[di]));
            EXPECT_ERR("linear (prepared weight)", yp, ref, M * N, "M %lld K %lld N %lld", (long long)M, (long long)K,
                       (long long)N);
            free(x);
            free(w);
            free(b);
            free(ref);
        }
}

/* A row's result does not depend on the other rows (M, where the 32-row blocks end): a stream group's
 * batched UNet must give each stream exactly its output alone. With a bias (the GEMM accumulates onto it),
 * rows 37..69 of a 70-row product equal the same rows as a 33-row product, and rows 0..6 a 7-row one. */
TEST(linear_rows_independent)
{
    sd_ctx_reset(&g_ctx);
    int64_t M = 70, K = 300, N = 50, xe[2] = {M, K}, we[2] = {N, K};
    float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.5f), *b = rnd((size_t)N, 1);
    sd_tensor tx = up(SD_F32, 2, xe, x), tw = up(SD_BF16, 2, we, w), tb = up(SD_F32, 1, &N, b);
    sd_tensor twp = prepared(tw, SD_WEIGHT_LINEAR);
    for (int pw = 0; pw < 2; pw++) {
        sd_tensor wt = pw ? twp : tw;
        sd_tensor all = sd_linear(&g_ctx, tx, wt, &tb);
        sd_tensor tail = sd_linear(&g_ctx, sd_view_rows(&g_ctx, tx, 37, M - 37), wt, &tb);
        sd_tensor head = sd_linear(&g_ctx, sd_view_rows(&g_ctx, tx, 0, 7), wt, &tb);
        CHECK(sd_ok(&g_ctx));
        if (!sd_ok(&g_ctx))
            break;
        const float *ya = all.data, *yt = tail.data, *yh = head.data;
        CHECK_MSG(!memcmp(ya + 37 * N, yt, (size_t)((M - 37) * N) * sizeof(float)),
                  "[%s] rows 37..69 differ from the same rows computed alone (%s weight)", g_isa,
                  pw ? "prepared" : "row-major");
        CHECK_MSG(!memcmp(ya, yh, (size_t)(7 * N) * sizeof(float)), "[%s] rows 0..6 differ from a 7-row product",
                  g_isa);
    }
    free(x);
    free(w);
    free(b);
}

/* the double reference of a convolution: x [N,C,H,W] (as the level sees it: act), w [O,C,K,K] (bf16 values),
 * bias b (NULL: none); malloc'd [N,O,HO,WO] */
static double *conv_ref(const float *x, const int64_t xe[4], const float *w, int64_t O, int64_t K, int s,
                        const int pd[4], const float *b)
{
    int64_t N = xe[0], C = xe[1], H = xe[2], W = xe[3];
    int64_t HO = (H + pd[0] + pd[2] - K) / s + 1, WO = (W + pd[1] + pd[3] - K) / s + 1;
    double *ref = malloc((size_t)(N * O * HO * WO) * sizeof(double));
    test_conv_ref(ref, x, w, b, N, C, H, W, O, K, K, s, pd, HO, WO, act);
    return ref;
}

/* The fused linears (sd_linear_add_inplace, sd_linear_geglu) give exactly the values of the linear followed
 * by the add / geglu, and the bf16 levels do run them fused (one op) for depths up to SD_BK_KFULL; deeper
 * ones and the fp32 levels are decomposed. Odd M, K and residual widths; GEGLU widths multiples of 32
 * (fused) and not (decomposed); with and without bias; row-major and prepared weights. */
TEST(linear_fused)
{
    /* M, K, N (GEGLU: the weight's N) */
    const int64_t cases[][3] = {{1, 1, 32}, {37, 300, 64}, {70, 65, 96}, {130, 1030, 1056}, {5, 40, 34},
                                {33, SD_BK_KFULL + 1, 64}};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (int pw = 0; pw < 2; pw++) {
            sd_ctx_reset(&g_ctx);
            int64_t M = cases[ci][0], K = cases[ci][1], N = cases[ci][2], H = N / 2;
            float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.5f), *b = rnd((size_t)N, 1);
            float *r = rnd((size_t)(M * N), 2);
            int64_t xe[2] = {M, K}, we[2] = {N, K}, we2[2] = {H, K};
            sd_tensor tx = up(SD_F32, 2, xe, x), tb = up(SD_F32, 1, &N, b), tbh = up(SD_F32, 1, &H, b);
            sd_tensor tw = up(SD_BF16, 2, we, w), tw2 = up(SD_BF16, 2, we2, w);
            if (pw) {
                tw = prepared(tw, SD_WEIGHT_LINEAR);
                tw2 = prepared(tw2, SD_WEIGHT_LINEAR);
            }
            const sd_tensor *bias = ci % 2 ? &tb : NULL, *biash = ci % 2 ? &tbh : NULL;
            /* geglu */
            sd_tensor gu = sd_geglu(&g_ctx, sd_linear(&g_ctx, tx, tw, bias));
            sd_tensor gf = sd_linear_geglu(&g_ctx, tx, tw, bias);
            /* residual: r + linear, into a copy of r */
            sd_tensor ru = up(SD_F32, 2, (int64_t[]){M, H}, r), rf = up(SD_F32, 2, (int64_t[]){M, H}, r);
            ru = sd_add_inplace(&g_ctx, ru, sd_linear(&g_ctx, tx, tw2, biash));
            sd_tensor rf2 = sd_linear_add_inplace(&g_ctx, rf, tx, tw2, biash);
            CHECK(sd_ok(&g_ctx));
            if (!sd_ok(&g_ctx))
                break;
            CHECK(rf2.data == rf.data);
            /* a BF16 GEGLU output holds the unfused values rounded, and a linear reading it gives exactly
             * what it gives on the unfused F32 values */
            float *gfv = malloc((size_t)(M * H) * sizeof(float)), *guv = malloc((size_t)(M * H) * sizeof(float));
            sd_tensor_to_f32(&g_ctx, &gf, gfv);
            sd_tensor_to_f32(&g_ctx, &gu, guv);
            for (int64_t i = 0; gf.dtype == SD_BF16 && i < M * H; i++)
                guv[i] = bf(guv[i]);
            CHECK_MSG(!memcmp(guv, gfv, (size_t)(M * H) * sizeof(float)),
                      "[%s] linear + geglu fused differs from the two ops (M %lld K %lld N %lld, %s weight)", g_isa,
                      (long long)M, (long long)K, (long long)N, pw ? "prepared" : "row-major");
            float *w3v = rnd((size_t)(5 * H), 0.5f);
            sd_tensor w3 = up(SD_BF16, 2, (int64_t[]){5, H}, w3v);
            free(w3v);
            sd_tensor lu = sd_linear(&g_ctx, gu, w3, NULL), lf = sd_linear(&g_ctx, gf, w3, NULL);
            CHECK(sd_ok(&g_ctx) && !memcmp(lu.data, lf.data, (size_t)(M * 5) * sizeof(float)));
            CHECK(gf.dtype == (g_round_act && K <= SD_BK_KFULL && N % 32 == 0 ? SD_BF16 : SD_F32));
            free(gfv);
            free(guv);
            CHECK_MSG(!memcmp(ru.data, rf.data, (size_t)(M * H) * sizeof(float)),
                      "[%s] linear + add fused differs from the two ops (M %lld K %lld N %lld, %s weight)", g_isa,
                      (long long)M, (long long)K, (long long)H, pw ? "prepared" : "row-major");
            /* the bf16 kernels fuse what they can; the fp32 levels never do */
            const sd_backend_ops *o = g_be->ops;
            bool fg = o->linear_fuses && o->linear_fuses(g_be, &tx, &tw, bias, SD_EPI_GEGLU) &&
                      o->linear_fuses(g_be, &tx, &tw, bias, SD_EPI_GEGLU_BF16);
            bool fa = o->linear_fuses && o->linear_fuses(g_be, &tx, &tw2, biash, SD_EPI_ADD);
            CHECK_MSG(fg == (g_round_act && K <= SD_BK_KFULL && N % 32 == 0), "[%s] GEGLU fused: %d (K %lld N %lld)",
                      g_isa, fg, (long long)K, (long long)N);
            CHECK_MSG(fa == (g_round_act && K <= SD_BK_KFULL), "[%s] add fused: %d (K %lld)", g_isa, fa, (long long)K);
            free(x);
            free(w);
            free(b);
            free(r);
        }
    /* bad input: a residual of another shape, a residual overlapping x, an odd GEGLU weight */
    sd_ctx_reset(&g_ctx);
    float *v = rnd(64 * 64, 1);
    sd_tensor x = up(SD_F32, 2, (int64_t[]){4, 16}, v), w = up(SD_BF16, 2, (int64_t[]){16, 16}, v);
    sd_linear_add_inplace(&g_ctx, up(SD_F32, 2, (int64_t[]){4, 8}, v), x, w, NULL);
    CHECK(g_ctx.status == SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS("linear + add");
    sd_ctx_reset(&g_ctx);
    x = up(SD_F32, 2, (int64_t[]){4, 16}, v);
    w = up(SD_BF16, 2, (int64_t[]){16, 16}, v);
    sd_linear_add_inplace(&g_ctx, x, x, w, NULL);
    CHECK(g_ctx.status == SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS("overlap");
    sd_ctx_reset(&g_ctx);
    x = up(SD_F32, 2, (int64_t[]){4, 16}, v);
    sd_linear_geglu(&g_ctx, x, up(SD_BF16, 2, (int64_t[]){15, 16}, v), NULL);
    CHECK(g_ctx.status == SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS("even");
    sd_ctx_reset(&g_ctx);
    free(v);
}

TEST(conv_bf16)
{
    struct {
        int64_t N, C, H, W, O, K;
        int stride, pads[4];
    } cases[] = {
        {1, 70, 20, 70, 70, 3, 1, {1, 1, 1, 1}},  /* K 630 > 512, N 1400 > 256 */
        {2, 9, 8, 8, 130, 3, 1, {1, 1, 1, 1}},    /* K 81 odd, M 130 > 128 */
        {1, 33, 17, 13, 20, 3, 2, {1, 1, 1, 1}},  /* stride 2, odd sizes */
        {1, 16, 9, 10, 12, 3, 2, {0, 0, 1, 1}},   /* asymmetric pad */
        {1, 600, 6, 7, 65, 1, 1, {0, 0, 0, 0}},   /* pointwise (row-major B), K > 512 */
        {1, 5, 4, 3, 7, 3, 1, {2, 0, 1, 3}},      /* all-different pads */
        {1, 4, 1, 1, 5, 1, 2, {0, 0, 0, 0}},      /* 1x1 stride 2 on a 1x1 input */
        {1, 3, 40, 40, 8, 5, 1, {2, 2, 2, 2}},    /* 5x5, K 75 */
        {1, 4, 16, 16, 320, 3, 1, {1, 1, 1, 1}},  /* conv_in-like: K 36 */
        {1, 64, 32, 32, 3, 3, 1, {1, 1, 1, 1}},   /* TAESD output conv: M 3 */
        /* >= 1024 output pixels: the direct convolution (channels-last image, weight in B tiles) */
        {2, 37, 100, 11, 45, 3, 1, {1, 1, 1, 1}}, /* W < 16, C and O odd, two images */
        {1, 19, 67, 71, 33, 3, 2, {0, 0, 1, 1}},  /* stride 2, asymmetric pad, odd sizes */
        {1, 33, 70, 70, 20, 3, 2, {1, 1, 1, 1}},  /* stride 2 */
        {1, 70, 33, 35, 17, 1, 1, {0, 0, 0, 0}},  /* pointwise, C 70 */
        {1, 5, 31, 40, 7, 3, 1, {2, 0, 1, 3}},    /* all-different pads */
        {1, 6, 70, 66, 40, 5, 2, {2, 2, 2, 2}},   /* 5x5 stride 2 */
        {1, 3, 40, 40, 64, 3, 1, {1, 1, 1, 1}},   /* C 3 (channels padded to 32) */
        {1, 64, 64, 64, 3, 3, 1, {1, 1, 1, 1}},   /* TAESD output conv */
        {1, 130, 33, 32, 70, 3, 1, {1, 1, 1, 1}}, /* C > 128, O 70 */
        {1, 7, 11, 10, 9, 3, 3, {1, 1, 1, 1}},    /* stride 3 (a prepared weight: the reference loop) */
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
            w[i] = bf(w[i]);
        sd_tensor tb = up(SD_F32, 1, &O, b), tx = up(SD_F32, 4, xe, x), tw = up(SD_BF16, 4, we, w);
        sd_tensor y = sd_conv2d_pads(&g_ctx, tx, tw, ci % 3 ? &tb : NULL, s, pd);
        /* the weight prepared as at load, where the level does */
        sd_tensor twp = prepared(tw, SD_WEIGHT_CONV), yp = {0};
        sd_layout lay = (sd_layout)twp.layout;
        if (lay != SD_LAYOUT_ROWMAJOR)
            yp = sd_conv2d_pads(&g_ctx, tx, twp, ci % 3 ? &tb : NULL, s, pd);
        size_t ny = (size_t)(N * O * HO * WO);
        double *ref = conv_ref(x, xe, w, O, K, s, pd, ci % 3 ? b : NULL);
        EXPECT_ERR("conv2d", y, ref, ny, "case %zu", ci);
        if (lay != SD_LAYOUT_ROWMAJOR)
            EXPECT_ERR("conv2d (prepared weight)", yp, ref, ny, "case %zu", ci);
        free(x);
        free(w);
        free(b);
        free(ref);
    }
}

TEST(attention_bf16)
{
    struct {
        int64_t B, Nq, Nk;
        int heads;
        int64_t d;
        bool causal;
    } cases[] = {
        {1, 300, 300, 2, 64, false}, /* several key and query blocks, tails */
        {2, 77, 77, 3, 40, true},    /* CLIP-like causal, d 40 (not a multiple of 32) */
        {1, 100, 77, 2, 80, false},  /* cross-attention, d 80 */
        {1, 1, 1, 1, 1, false},      /* d 1 */
        {1, 33, 515, 1, 160, false}, /* long keys, d 160 */
        {1, 17, 9, 2, 33, true},     /* odd d, Nk < Nq causal */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        sd_ctx_reset(&g_ctx);
        int64_t B = cases[ci].B, Nq = cases[ci].Nq, Nk = cases[ci].Nk, d = cases[ci].d;
        int H = cases[ci].heads;
        bool causal = cases[ci].causal;
        int64_t HD = H * d;
        float scale = (float)(1.0 / sqrt((double)d));
        float *q = rnd((size_t)(B * Nq * HD), 2), *k = rnd((size_t)(B * Nk * HD), 2), *v = rnd((size_t)(B * Nk * HD), 1);
        int64_t qe[3] = {B, Nq, HD}, ke[3] = {B, Nk, HD};
        sd_tensor y = sd_attention(&g_ctx, up(SD_F32, 3, qe, q), up(SD_F32, 3, ke, k), up(SD_F32, 3, ke, v), H, scale,
                                   causal);
        /* reference: scores from bf16 q (pre-scaled, as the kernel scales before rounding) and k; the
         * probabilities in double, rounded to bf16 for the PV product, normalised by the double sum of the
         * unrounded probabilities (the kernel's fp32 running sum) */
        double *ref = malloc((size_t)(B * Nq * HD) * sizeof(double)), *p = malloc((size_t)Nk * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int64_t i = 0; i < Nq; i++) {
                    int64_t lim = causal ? (i + 1 < Nk ? i + 1 : Nk) : Nk;
                    double mx = -INFINITY, sum = 0;
                    for (int64_t j = 0; j < lim; j++) {
                        double s = 0;
                        for (int64_t c = 0; c < d; c++)
                            s += act(q[(b * Nq + i) * HD + h * d + c] * scale) * act(k[(b * Nk + j) * HD + h * d + c]);
                        p[j] = s;
                        mx = s > mx ? s : mx;
                    }
                    for (int64_t j = 0; j < lim; j++) {
                        p[j] = exp(p[j] - mx);
                        sum += p[j];
                    }
                    for (int64_t c = 0; c < d; c++) {
                        double o = 0;
                        for (int64_t j = 0; j < lim; j++)
                            o += act((float)p[j]) * act(v[(b * Nk + j) * HD + h * d + c]);
                        ref[(b * Nq + i) * HD + h * d + c] = o / sum;
                    }
                }
        /* the probabilities are rounded against the running maximum of their key block, not the row's
         * final maximum, so a probability can differ by one bf16 rounding: 2^-8 relative, averaged down */
        double tol = g_tol;
        if (g_round_act)
            g_tol = 4e-3;
        EXPECT_ERR("attention", y, ref, B * Nq * HD, "case %zu", ci);
        g_tol = tol;
        free(q);
        free(k);
        free(v);
        free(ref);
        free(p);
    }
}

/* A weight [O,C,K,K] of bf16 values (w: host copy), prepared as at load where the level does */
static sd_tensor chain_weight(int64_t O, int64_t C, int64_t K, float **w)
{
    int64_t we[4] = {O, C, K, K};
    *w = rnd((size_t)(O * C * K * K), 0.3f);
    for (int64_t i = 0; i < O * C * K * K; i++)
        (*w)[i] = bf((*w)[i]);
    return prepared(up(SD_BF16, 4, we, *w), SD_WEIGHT_CONV);
}

/* t's values on the host ([N,C,H,W] row-major, whatever its layout) */
static float *host_of(sd_tensor t)
{
    float *h = malloc((size_t)sd_numel(&t) * sizeof(float));
    if (sd_ok(&g_ctx))
        sd_tensor_to_f32(&g_ctx, &t, h);
    return h;
}

/* ref = relu?(ref + res) over n values */
static void epilogue_ref(double *ref, const float *res, bool relu, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v = ref[i] + (res ? res[i] : 0.0);
        ref[i] = relu && !(v > 0) ? 0.0 : v;
    }
}

/* sd_conv2d_ex: the fused epilogue against the unfused ops (bit for bit, row-major), then a TAESD-like chain
 * in the backend's image layout (sd_conv_layout) against double references of each step's actual inputs:
 * fused ReLU, a residual replaced in place, upsample, stride 2 and 1x1 from the layout, the last conv out
 * row-major. Odd channel counts, W < 16, two images. The layout's outputs are bf16: bound 2^-8. */
TEST(conv_chain_bf16)
{
    const int64_t cases[][5] = {{2, 37, 9, 40, 45}, {1, 64, 33, 17, 64}, {1, 3, 20, 22, 32}}; /* N, C, H, W, O */
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        sd_ctx_reset(&g_ctx);
        int64_t N = cases[ci][0], C = cases[ci][1], H = cases[ci][2], W = cases[ci][3], O = cases[ci][4];
        int64_t xe[4] = {N, C, H, W}, ye[4] = {N, O, H, W};
        size_t ny = (size_t)(N * O * H * W);
        float *x = rnd((size_t)(N * C * H * W), 1), *r = rnd(ny, 1), *b = rnd((size_t)O, 1), *w0, *w1, *w2, *w3, *w4;
        sd_tensor tx = up(SD_F32, 4, xe, x), tr = up(SD_F32, 4, ye, r), tb = up(SD_F32, 1, &O, b);
        sd_tensor tw0 = chain_weight(O, C, 3, &w0), tw1 = chain_weight(O, O, 3, &w1), tw2 = chain_weight(40, O, 3, &w2);
        sd_tensor tw3 = chain_weight(33, 40, 1, &w3), tw4 = chain_weight(3, 33, 3, &w4);
        /* fused == unfused, row-major */
        sd_tensor yf = sd_conv2d_ex(&g_ctx, NULL, tx, tw0, &tb, 1, 1, &tr, SD_UNARY_RELU, SD_LAYOUT_ROWMAJOR);
        sd_tensor yu = sd_unary_inplace(&g_ctx, sd_add_inplace(&g_ctx, sd_conv2d(&g_ctx, tx, tw0, &tb, 1, 1), tr),
                                        SD_UNARY_RELU);
        float *hf = host_of(yf), *hu = host_of(yu);
        CHECK_MSG(sd_ok(&g_ctx) && !memcmp(hf, hu, ny * sizeof(float)), "[%s] case %zu: fused conv differs from conv + add + relu",
                  g_isa, ci);
        free(hf);
        free(hu);
        sd_layout L = sd_conv_layout(&g_ctx, tw0, 1, SD_UNARY_RELU);
        CHECK_MSG(L == SD_LAYOUT_ROWMAJOR || (g_round_act && L == SD_LAYOUT_BF16_IMAGE), "[%s] layout %d", g_isa, (int)L);
        double tol = g_tol;
        if (L == SD_LAYOUT_BF16_IMAGE)
            g_tol = 1.0 / 256;
        const int p1[4] = {1, 1, 1, 1}, p0[4] = {0, 0, 0, 0};
        /* a = relu(conv(x)) from row-major into L */
        sd_tensor a = sd_conv2d_ex(&g_ctx, NULL, tx, tw0, &tb, 1, 1, NULL, SD_UNARY_RELU, L);
        double *ref = conv_ref(x, xe, w0, O, 3, 1, p1, b);
        epilogue_ref(ref, NULL, true, ny);
        EXPECT_ERR("conv (into the layout)", a, ref, ny, "case %zu", ci);
        free(ref);
        /* h = conv(a); a = relu(conv(h) + a) in place over the residual */
        float *ha = host_of(a);
        sd_tensor h = sd_conv2d_ex(&g_ctx, NULL, a, tw1, &tb, 1, 1, NULL, -1, L);
        float *hh = host_of(h);
        ref = conv_ref(ha, ye, w1, O, 3, 1, p1, b);
        EXPECT_ERR("conv (in the layout)", h, ref, ny, "case %zu", ci);
        free(ref);
        a = sd_conv2d_ex(&g_ctx, L == SD_LAYOUT_BF16_IMAGE ? &a : NULL, h, tw1, &tb, 1, 1, &a, SD_UNARY_RELU, L);
        ref = conv_ref(hh, ye, w1, O, 3, 1, p1, b);
        epilogue_ref(ref, ha, true, ny);
        EXPECT_ERR("conv + residual (over it)", a, ref, ny, "case %zu", ci);
        free(ref);
        free(ha);
        free(hh);
        /* nearest 2x, a stride-2 conv and a 1x1 conv from the layout, the last conv out row-major */
        ha = host_of(a);
        sd_tensor u = sd_upsample2x(&g_ctx, a);
        int64_t ue[4] = {N, O, 2 * H, 2 * W}, nu = N * O * 4 * H * W;
        ref = malloc((size_t)nu * sizeof(double));
        for (int64_t i = 0; i < nu; i++) {
            int64_t wv = i % (2 * W), hv = i / (2 * W) % (2 * H), nc = i / (4 * H * W);
            ref[i] = ha[(nc * H + hv / 2) * W + wv / 2];
        }
        EXPECT_ERR("upsample2x", u, ref, (size_t)nu, "case %zu", ci);
        free(ref);
        free(ha);
        float *hu2 = host_of(u);
        sd_tensor d = sd_conv2d_ex(&g_ctx, NULL, u, tw2, NULL, 2, 1, NULL, -1, L);
        ref = conv_ref(hu2, ue, w2, 40, 3, 2, p1, NULL);
        int64_t de[4] = {N, 40, H, W};
        EXPECT_ERR("conv stride 2 (from the layout)", d, ref, (size_t)(N * 40 * H * W), "case %zu", ci);
        free(ref);
        free(hu2);
        float *hd = host_of(d);
        sd_tensor e = sd_conv2d_ex(&g_ctx, NULL, d, tw3, NULL, 1, 0, NULL, -1, L);
        ref = conv_ref(hd, de, w3, 33, 1, 1, p0, NULL);
        int64_t ee[4] = {N, 33, H, W};
        EXPECT_ERR("conv 1x1 (from the layout)", e, ref, (size_t)(N * 33 * H * W), "case %zu", ci);
        free(ref);
        free(hd);
        float *he = host_of(e);
        g_tol = tol;
        int64_t three = 3;
        sd_tensor tb3 = up(SD_F32, 1, &three, b);
        sd_tensor f = sd_conv2d_ex(&g_ctx, NULL, e, tw4, &tb3, 1, 1, NULL, -1, SD_LAYOUT_ROWMAJOR);
        ref = conv_ref(he, ee, w4, 3, 3, 1, p1, b);
        EXPECT_ERR("conv (from the layout, row-major out)", f, ref, (size_t)(N * 3 * H * W), "case %zu", ci);
        free(ref);
        free(he);
        if (L == SD_LAYOUT_BF16_IMAGE) { /* other ops refuse the layout, with a message */
            sd_tensor bad = sd_add(&g_ctx, d, d);
            CHECK(!sd_ok(&g_ctx) && !bad.data);
            CHECK_ERR_CONTAINS("image layout");
        }
        free(x), free(r), free(b), free(w0), free(w1), free(w2), free(w3), free(w4);
    }
}

TEST(levels)
{
    /* SD_CPU_ISA lowers the automatic choice: avx512 means no bf16 kernels, amx never exceeds the CPU */
    const char *old = getenv("SD_CPU_ISA");
    char *saved = old ? sd_strdup(old) : NULL;
    sd_backend *lb = NULL;
    setenv("SD_CPU_ISA", "avx512", 1);
    if (sd_backend_cpu_create(1, &lb) == SD_OK) {
        CHECK(sd_backend_cpu_bf16_isa(lb) == NULL);
        sd_backend_destroy(lb);
    }
    setenv("SD_CPU_ISA", "avx512bf16", 1);
    if (sd_backend_cpu_create(1, &lb) == SD_OK) {
        const char *b = sd_backend_cpu_bf16_isa(lb);
        CHECK(b == NULL || !strcmp(b, "avx512bf16"));
        sd_backend_destroy(lb);
    }
    if (saved) {
        setenv("SD_CPU_ISA", saved, 1);
        free(saved);
    } else {
        unsetenv("SD_CPU_ISA");
    }
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create_isa(1, "no-such-set", &be), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("amx, avx512bf16, avx512vnni, avx512, avx2 or blas");
    CHECK_STATUS(sd_backend_cpu_create(0, &be), SD_OK);
    printf("  default: fp32 kernels %s, bf16 kernels %s\n", be ? sd_backend_cpu_isa(be) : "?",
           be && sd_backend_cpu_bf16_isa(be) ? sd_backend_cpu_bf16_isa(be) : "none");
    sd_backend_destroy(be);
    /* a bf16 level the CPU has: its kernels; one it lacks: SD_ERR_UNSUPPORTED naming it */
    const char *lv[] = {"amx", "avx512bf16"};
    for (size_t i = 0; i < SD_ARRAY_LEN(lv); i++) {
        sd_status s = sd_backend_cpu_create_isa(1, lv[i], &be);
        if (s == SD_OK) {
            CHECK(be && sd_backend_cpu_bf16_isa(be) && !strcmp(sd_backend_cpu_bf16_isa(be), lv[i]));
            CHECK(be && !strcmp(sd_backend_cpu_isa(be), "avx512"));
            sd_backend_destroy(be);
        } else {
            CHECK(s == SD_ERR_UNSUPPORTED);
            CHECK_ERR_CONTAINS(lv[i]);
        }
    }
}

/* the best of 5 timed runs of a kernel table's peak function: multiply-adds per second */
static double peak_rate(double (*peak)(int64_t))
{
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = sd_time_now(), macs = peak(200000), dt = sd_time_now() - t0;
        best = dt > 0 && macs / dt > best ? macs / dt : best;
    }
    return best;
}

TEST(auto_rule)
{
    /* precision auto: bf16 with AMX, never without bf16 kernels, and with AVX512-BF16 only where its
     * instruction outpaces the fp32 FMA, here timed again independently (10x longer runs than the rule's) */
    const char *lv[] = {"amx", "avx512bf16", "avx512"};
    for (size_t i = 0; i < SD_ARRAY_LEN(lv); i++) {
        sd_backend *be = NULL;
        if (sd_backend_cpu_create_isa(1, lv[i], &be) != SD_OK)
            continue;
        bool got = sd_backend_cpu_auto_bf16(be), want = i == 0;
        if (i == 1) {
            double bf = peak_rate(sd_cpu_bf16_kern_select("avx512bf16")->peak), fp = peak_rate(sd_cpu_kern_avx512()->peak);
            printf("  avx512bf16: VDPBF16PS %.0f vs fp32 FMA %.0f GFLOP/s per core: auto = %s\n", 2e-9 * bf,
                   2e-9 * fp, got ? "bf16" : "fp32");
            want = bf >= fp;
            if (fabs(bf / fp - 1) < 0.25) /* too close to call twice alike on a busy host */
                want = got;
        }
        CHECK_MSG(got == want, "level %s: auto = %s", lv[i], got ? "bf16" : "fp32");
        sd_backend_destroy(be);
    }
}

int main(void)
{
    const struct {
        const char *isa;
        bool bf16_level;
    } sets[] = {{"amx", true}, {"avx512bf16", true}, {"avx512", false}, {"avx2", false}};
    int bf16_levels = 0;
    RUN(levels);
    RUN(auto_rule);
    for (size_t si = 0; si < SD_ARRAY_LEN(sets); si++) {
        g_isa = sets[si].isa;
        sd_status st = sd_backend_cpu_create_isa(2, g_isa, &g_be);
        if (st == SD_ERR_UNSUPPORTED) { /* this CPU lacks the level: the levels it has are tested */
            printf("[ N/A  ] level %s: %s\n", g_isa, sd_last_error());
            continue;
        }
        if (st != SD_OK) {
            fprintf(stderr, "level %s: %s\n", g_isa, sd_last_error());
            return 1;
        }
        bf16_levels += sets[si].bf16_level;
        g_round_act = sets[si].bf16_level;
        g_tol = g_round_act ? 2e-5 : 1e-5;
        sd_backend_cpu_set_bf16(g_be, true);
        if (sd_ctx_init(&g_ctx, g_be, (size_t)64 << 20) != SD_OK) {
            fprintf(stderr, "cannot allocate the arena: %s\n", sd_last_error());
            return 1;
        }
        printf("level %s (bf16 kernels: %s)\n", g_isa, sd_backend_cpu_bf16_isa(g_be) ? sd_backend_cpu_bf16_isa(g_be) : "none, fp32 compute");
        RUN(linear_bf16);
        RUN(linear_rows_independent);
        RUN(linear_fused);
        RUN(conv_bf16);
        RUN(conv_chain_bf16);
        RUN(attention_bf16);
        sd_ctx_free(&g_ctx);
        sd_backend_destroy(g_be);
    }
    int rc = test_summary();
    if (rc == 0 && bf16_levels == 0) {
        printf("SKIP: this CPU has no bf16 kernel level (amx, avx512bf16)\n");
        return 77;
    }
    return rc;
}
