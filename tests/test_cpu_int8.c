/* The CPU backend's int8 kernels (precision int8, W8A8) against double references.
 *
 * Every int8 level this CPU can run ("amx": AMX-INT8, "avx512vnni" and "avx512bf16": AVX512-VNNI;
 * SD_CPU_ISA-style names) computes linears and convolutions through the op wrappers with
 * sd_backend_cpu_set_int8. The reference quantises exactly as documented (cpu_kern.h): each weight
 * row (output channel) by max |w| / 127, each linear activation row by its max |a| / 127, each conv
 * output pixel by the max |x| over its receptive field / 127, rounding x * (127 / max) in float to
 * nearest even; the integer products are summed exactly in double and scaled by both scales. What is
 * left is the fp32 epilogue (int32 to float, two scale products, the bias): bound 1e-5 of max |ref|.
 * A second bound checks the method itself against the unquantised double result: 3e-2 of max |ref|
 * on these random operands (the fixture and full-size UNet figures are in docs/precision.md).
 * Weights prepared as the model loader prepares them (the int8 tiles) run on the int8 kernels; row-major
 * ones take the bf16 path (checked against the unquantised result only).
 * Shapes cross the blocks (more rows of A or columns of B than one block of quantised tiles holds:
 * 1024, or fewer for deep K; several depth tiles) and leave every
 * tail: M, N, K not multiples of 16, 32 or 64, K = 1; rows of zeros, tiny (1e-20) and big (1e20)
 * rows. The fallback level ("avx512": int8 asked, no int8 kernels: bf16 weights, fp32 compute) is
 * checked against the bf16-rounded weights. Levels the CPU lacks are skipped and said so; no int8
 * level at all: exit 77. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "test.h"
#include "test_util.h"

static bool g_int8; /* the level has int8 kernels */
static const char *g_isa;
static sd_backend *g_be;
static sd_ctx g_ctx;
static unsigned long long g_seed = 0x2545f4914f6cdd1dULL;

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

/* q = round(v * 127 / amax) in [-127, 127] as the kernels compute it; *scale = amax / 127 */
static double qz(float v, float amax)
{
    if (!(amax > 0.0f))
        return 0.0;
    float r = nearbyintf(v * (127.0f / amax));
    return r > 127.0f ? 127.0 : r < -127.0f ? -127.0 : r;
}

static sd_tensor up(sd_dtype dt, int nd, const int64_t *ne, const float *host) { return test_upload(&g_ctx, dt, nd, ne, host); }

/* w prepared as at load where the level does, else w (tests/test_util.h) */
static sd_tensor prepared(sd_tensor w, sd_weight_use use) { return test_prepared(&g_ctx, g_be, w, use); }

/* max |y - ref| / max |ref|; 1 if the op failed (tests/test_util.h) */
static double err_of(sd_tensor t, const double *ref, size_t n) { return test_rel_err(&g_ctx, t, ref, n); }

#define EXPECT_ERR(what, tol, t, ref, n, ...)                                                                \
    do {                                                                                                     \
        double e_ = err_of((t), (ref), (size_t)(n));                                                         \
        if (!(e_ <= (tol))) {                                                                                \
            fprintf(stderr, "  %s:%d: [%s] %s rel err %.3g > %.3g: ", __FILE__, __LINE__, g_isa, what, e_,   \
                    (double)(tol));                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            t_cur_failed = 1;                                                                                \
        }                                                                                                    \
    } while (0)

static float row_amax(const float *v, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(v[i]));
    return m;
}

TEST(linear_int8)
{
    /* M, K, N */
    const int64_t cases[][3] = {{1, 1, 1},    {3, 31, 17},    {77, 768, 320}, {130, 1031, 300}, {33, 33, 47},
                                {200, 65, 97}, {16, 64, 16},  {5, 40, 1100},  {64, 130, 64},    {65, 1, 33},
                                {300, 100, 40}, {1100, 64, 40}, /* two row blocks (of at most 1024) */
                                {200, 9000, 20}}; /* deep: row blocks of 96 (1 MiB of tiles) */
    const sd_dtype dts[] = {SD_BF16, SD_F32, SD_F16};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (size_t di = 0; di < SD_ARRAY_LEN(dts); di++) {
            sd_ctx_reset(&g_ctx);
            int64_t M = cases[ci][0], K = cases[ci][1], N = cases[ci][2];
            float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.5f), *b = rnd((size_t)N, 1);
            for (int64_t m = 0; m < M; m++) /* a zero row, a tiny row, a big row */
                for (int64_t k = 0; k < K; k++)
                    x[m * K + k] *= m % 7 == 3 ? 0.0f : m % 7 == 5 ? 1e-20f : m % 7 == 6 && di == 1 ? 1e20f : 1.0f;
            for (int64_t i = 0; i < N * K; i++) /* the weight as the backend stores it (bf16 under int8) */
                w[i] = bf(dts[di] == SD_F16 ? sd_f16_to_f32(sd_f32_to_f16(w[i])) : w[i]);
            int64_t xe[2] = {M, K}, we[2] = {N, K};
            sd_tensor tb = up(SD_F32, 1, &N, b), tx = up(SD_F32, 2, xe, x), tw = up(dts[di], 2, we, w);
            sd_tensor twp = prepared(tw, SD_WEIGHT_LINEAR); /* as at load: the int8 tiles (or row-major) */
            sd_tensor y = sd_linear(&g_ctx, tx, tw, ci % 2 ? &tb : NULL);
            sd_tensor yp = sd_linear(&g_ctx, tx, twp, ci % 2 ? &tb : NULL);
            double *ref = malloc((size_t)(M * N) * sizeof(double)), *exact = malloc((size_t)(M * N) * sizeof(double));
            for (int64_t m = 0; m < M; m++) {
                float am = row_amax(x + m * K, K);
                for (int64_t n = 0; n < N; n++) {
                    float wm = row_amax(w + n * K, K);
                    double acc = 0, ex = ci % 2 ? b[n] : 0.0;
                    for (int64_t k = 0; k < K; k++) {
                        acc += qz(x[m * K + k], am) * qz(w[n * K + k], wm);
                        ex += (double)x[m * K + k] * w[n * K + k];
                    }
                    ref[m * N + n] = (ci % 2 ? b[n] : 0.0) + acc * (am / 127.0f) * (wm / 127.0f);
                    exact[m * N + n] = ex;
                }
            }
            /* per row, as the big and tiny rows set the scale of max |ref| */
            for (int pi = 0; pi < 2; pi++)
                for (int64_t m = 0; m < M && sd_ok(&g_ctx); m++) {
                    sd_tensor yr = sd_tensor_make((float *)(pi ? yp : y).data + m * N, SD_F32, 1, &N);
                    const char *how = pi ? (twp.layout ? "prepared" : "row-major (not prepared)") : "row-major";
                    if (g_int8 && pi) /* row-major weights take the bf16 path */
                        EXPECT_ERR("linear", 1e-5, yr, ref + m * N, N, "M %lld K %lld N %lld w %s %s row %lld",
                                   (long long)M, (long long)K, (long long)N, sd_dtype_name(dts[di]), how, (long long)m);
                    EXPECT_ERR("linear vs unquantised", g_int8 ? 3e-2 : 1e-5, yr, exact + m * N, N,
                               "M %lld K %lld N %lld w %s %s row %lld", (long long)M, (long long)K, (long long)N,
                               sd_dtype_name(dts[di]), how, (long long)m);
                }
            if (g_int8 && dts[di] == SD_BF16 && K <= SD_I8_KMAX)
                CHECK(twp.layout == SD_LAYOUT_CPU_I8_LINEAR); /* int8 kernels: every linear weight prepared */
            free(x);
            free(w);
            free(b);
            free(ref);
            free(exact);
        }
}

/* the quantised references of a convolution: per output pixel (the max |x| over its receptive field: the
 * GEMM path of pointwise and row-major weights) or per image (the direct convolution of prepared k x k
 * weights: u8 with one scale (hi - lo) / 255 and zero point over the image's finite values, lo = min(0, min
 * x), hi = max(0, max x); NaN as 0, +-Inf saturated), and the unquantised double result */
typedef struct {
    int64_t N, C, H, W, O, K;
    int stride, pads[4];
} conv_case;

static void conv_refs(const conv_case *cc, const float *x, const float *w, const float *b, double *ref_px,
                      double *ref_img, double *exact)
{
    int64_t N = cc->N, C = cc->C, H = cc->H, W = cc->W, O = cc->O, K = cc->K, CK = C * K * K;
    int s = cc->stride;
    const int *pd = cc->pads;
    int64_t HO = (H + pd[0] + pd[2] - K) / s + 1, WO = (W + pd[1] + pd[3] - K) / s + 1;
    for (int64_t n = 0; n < N; n++) {
        float lo = 0.0f, hi = 0.0f; /* the image's range, its scale and zero point */
        for (int64_t i = 0; i < C * H * W; i++)
            if (isfinite(x[n * C * H * W + i])) {
                lo = fminf(lo, x[n * C * H * W + i]);
                hi = fmaxf(hi, x[n * C * H * W + i]);
            }
        float xs = hi > lo ? (hi - lo) / 255.0f : 0.0f, fi = xs > 0.0f ? 255.0f / (hi - lo) : 0.0f;
        float zp = nearbyintf(-lo * fi);
        for (int64_t oh = 0; oh < HO; oh++)
            for (int64_t ow = 0; ow < WO; ow++) {
                float am = 0.0f; /* the pixel's scale: max |x| over its receptive field */
                for (int64_t c = 0; c < C; c++)
                    for (int64_t kh = 0; kh < K; kh++)
                        for (int64_t kw = 0; kw < K; kw++) {
                            int64_t ih = oh * s - pd[0] + kh, iw = ow * s - pd[1] + kw;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                am = fmaxf(am, fabsf(x[((n * C + c) * H + ih) * W + iw]));
                        }
                for (int64_t o = 0; o < O; o++) {
                    float wm = row_amax(w + o * CK, CK);
                    double acc = 0, acci = 0, ex = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < K; kh++)
                            for (int64_t kw = 0; kw < K; kw++) {
                                int64_t ih = oh * s - pd[0] + kh, iw = ow * s - pd[1] + kw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                float xv = x[((n * C + c) * H + ih) * W + iw], wv = w[o * CK + (c * K + kh) * K + kw];
                                /* u8 q - zp, rounded after the clamp to [-zp, 255 - zp]; NaN as 0 */
                                double xq = isnan(xv) ? 0.0 : nearbyintf(fmaxf(fminf(xv * fi, 255.0f - zp), -zp));
                                acc += qz(xv, am) * qz(wv, wm);
                                acci += xq * qz(wv, wm);
                                ex += (double)xv * wv;
                            }
                    size_t at = (size_t)(((n * O + o) * HO + oh) * WO + ow);
                    ref_px[at] = (b ? b[o] : 0.0) + acc * (am / 127.0f) * (wm / 127.0f);
                    ref_img[at] = (b ? b[o] : 0.0) + acci * xs * (wm / 127.0f);
                    exact[at] = ex;
                }
            }
    }
}

TEST(conv_int8)
{
    const conv_case cases[] = {
        {1, 70, 20, 70, 70, 3, 1, {1, 1, 1, 1}},  /* K 630, N 1400 */
        {2, 9, 8, 8, 130, 3, 1, {1, 1, 1, 1}},    /* K 81, M 130, two images */
        {1, 33, 17, 13, 20, 3, 2, {1, 1, 1, 1}},  /* stride 2, odd sizes */
        {1, 16, 9, 10, 12, 3, 2, {0, 0, 1, 1}},   /* asymmetric pad */
        {1, 600, 6, 7, 65, 1, 1, {0, 0, 0, 0}},   /* pointwise, K 600 */
        {1, 5, 4, 3, 7, 3, 1, {2, 0, 1, 3}},      /* all-different pads */
        {1, 4, 1, 1, 5, 1, 2, {0, 0, 0, 0}},      /* 1x1 stride 2 on a 1x1 input */
        {1, 3, 40, 40, 8, 5, 1, {2, 2, 2, 2}},    /* 5x5, K 75 */
        {1, 4, 16, 16, 320, 3, 1, {1, 1, 1, 1}},  /* conv_in-like: K 36 */
        {1, 64, 32, 32, 3, 3, 1, {1, 1, 1, 1}},   /* TAESD output conv: M 3 */
        {1, 1, 5, 5, 1, 1, 1, {0, 0, 0, 0}},      /* K 1 */
        {1, 1100, 12, 12, 8, 3, 1, {1, 1, 1, 1}}, /* K 9900: column blocks of 96 (1 MiB of tiles) */
        {3, 130, 5, 9, 33, 3, 2, {0, 1, 1, 0}},   /* direct: 3 images, C past two channel blocks, stride 2 */
        {2, 65, 3, 70, 47, 3, 1, {1, 1, 1, 1}},   /* direct: wide and short, output rows across pixel blocks */
        {1, 7, 11, 10, 9, 3, 3, {1, 1, 1, 1}},    /* stride 3: a prepared weight takes the reference loop */
        {1, 20, 12, 12, 18, 2, 2, {0, 0, 0, 0}},  /* 2x2 stride 2 */
        {1, 6, 9, 9, 5, 3, 1, {1, 1, 1, 1}},      /* non-finite pixels (below) */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++) {
        sd_ctx_reset(&g_ctx);
        const conv_case *cc = &cases[ci];
        int64_t N = cc->N, C = cc->C, H = cc->H, W = cc->W, O = cc->O, K = cc->K;
        int s = cc->stride;
        const int *pd = cc->pads;
        int64_t HO = (H + pd[0] + pd[2] - K) / s + 1, WO = (W + pd[1] + pd[3] - K) / s + 1, CK = C * K * K;
        int64_t xe[4] = {N, C, H, W}, we[4] = {O, C, K, K};
        float *x = rnd((size_t)(N * C * H * W), 1), *w = rnd((size_t)(O * CK), 0.3f), *b = rnd((size_t)O, 1);
        for (int64_t i = 0; i < N * C * H * W; i++) /* a dark corner: zero pixels, and a bright one */
            x[i] *= i % W < W / 4 && (i / W) % H < H / 4 ? 0.0f : i % W > W / 2 && (i / W) % H > H / 2 ? 30.0f : 1.0f;
        bool nonfinite = ci + 1 == SD_ARRAY_LEN(cases);
        if (nonfinite) {
            x[3] = NAN;
            x[40] = INFINITY;
            x[100] = -INFINITY;
        }
        for (int64_t i = 0; i < O * CK; i++)
            w[i] = bf(w[i]);
        sd_tensor tb = up(SD_F32, 1, &O, b), tx = up(SD_F32, 4, xe, x), tw = up(SD_BF16, 4, we, w);
        sd_tensor y = sd_conv2d_pads(&g_ctx, tx, tw, ci % 3 ? &tb : NULL, s, pd);
        /* the weight prepared as at load: kxk ones become the direct convolution's (the reference loop at
         * strides it does not take) */
        sd_tensor twp = prepared(tw, SD_WEIGHT_CONV);
        bool direct = twp.layout == SD_LAYOUT_CPU_I8_CONV;
        CHECK(direct == (g_int8 && K > 1));
        sd_tensor yp = sd_conv2d_pads(&g_ctx, tx, twp, ci % 3 ? &tb : NULL, s, pd);
        size_t ny = (size_t)(N * O * HO * WO);
        double *ref = malloc(ny * sizeof(double)), *refi = malloc(ny * sizeof(double));
        double *exact = malloc(ny * sizeof(double));
        conv_refs(cc, x, w, ci % 3 ? b : NULL, ref, refi, exact);
        if (!nonfinite) /* a row-major weight: the bf16 path (bf16 kernels, else fp32 on bf16 weights) */
            EXPECT_ERR("conv2d (row-major) vs unquantised", g_int8 ? 3e-2 : 1e-5, y, exact, ny, "case %zu", ci);
        if (direct && s <= 2) { /* per image, as the kernel quantises */
            for (int64_t n = 0; n < N && sd_ok(&g_ctx); n++) {
                int64_t per = O * HO * WO;
                sd_tensor yn = sd_tensor_make((float *)yp.data + n * per, SD_F32, 1, &per);
                EXPECT_ERR("conv2d direct", 1e-5, yn, refi + n * per, per, "case %zu image %lld", ci, (long long)n);
                if (!nonfinite)
                    EXPECT_ERR("conv2d direct vs unquantised", 3e-2, yn, exact + n * per, per, "case %zu image %lld",
                               ci, (long long)n);
            }
        } else if (direct) { /* the reference loop: dequantised weights, bf16 image */
            EXPECT_ERR("conv2d (prepared, reference loop) vs unquantised", 3e-2, yp, exact, ny, "case %zu", ci);
        } else if (!nonfinite) { /* pointwise (prepared as int8 tiles: the int8 GEMM) or not prepared (fp32) */
            EXPECT_ERR("conv2d (prepared pointwise or row-major)", 1e-5, yp, g_int8 ? ref : exact, ny, "case %zu", ci);
        }
        if (g_int8 && K == 1)
            CHECK(twp.layout == SD_LAYOUT_CPU_I8_PW); /* int8 kernels: pointwise weights prepared */
        free(x);
        free(w);
        free(b);
        free(ref);
        free(refi);
        free(exact);
    }
}

/* sd_conv2d_ex at int8: the k x k direct convolution's fused epilogue (residual, ReLU in the write-back; other
 * activations after it) against conv + add + activation, bit for bit; strides 1 and 2, two images, odd sizes */
TEST(conv_int8_fused)
{
    const int64_t cases[][6] = {{2, 37, 9, 40, 45, 1}, {1, 64, 33, 17, 64, 1}, {2, 20, 18, 22, 33, 2}}; /* N C H W O s */
    const int acts[] = {SD_UNARY_RELU, -1, SD_UNARY_SILU};
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (size_t ai = 0; ai < SD_ARRAY_LEN(acts); ai++) {
            sd_ctx_reset(&g_ctx);
            int64_t N = cases[ci][0], C = cases[ci][1], H = cases[ci][2], W = cases[ci][3], O = cases[ci][4];
            int s = (int)cases[ci][5];
            int64_t HO = (H + 2 - 3) / s + 1, WO = (W + 2 - 3) / s + 1, xe[4] = {N, C, H, W}, ye[4] = {N, O, HO, WO};
            int64_t we[4] = {O, C, 3, 3};
            size_t ny = (size_t)(N * O * HO * WO);
            float *x = rnd((size_t)(N * C * H * W), 1), *r = rnd(ny, 1), *b = rnd((size_t)O, 1);
            float *w = rnd((size_t)(O * C * 9), 0.3f);
            sd_tensor tx = up(SD_F32, 4, xe, x), tr = up(SD_F32, 4, ye, r), tb = up(SD_F32, 1, &O, b);
            sd_tensor tw = prepared(up(SD_BF16, 4, we, w), SD_WEIGHT_CONV);
            CHECK(tw.layout == (g_int8 ? SD_LAYOUT_CPU_I8_CONV : SD_LAYOUT_ROWMAJOR));
            sd_tensor yf = sd_conv2d_ex(&g_ctx, NULL, tx, tw, &tb, s, 1, &tr, acts[ai], SD_LAYOUT_ROWMAJOR);
            sd_tensor yu = sd_add_inplace(&g_ctx, sd_conv2d(&g_ctx, tx, tw, &tb, s, 1), tr);
            if (acts[ai] >= 0)
                yu = sd_unary_inplace(&g_ctx, yu, (sd_unary_op)acts[ai]);
            bool ok = sd_ok(&g_ctx);
            float *hf = ok ? test_download(&g_ctx, yf) : NULL, *hu = ok ? test_download(&g_ctx, yu) : NULL;
            CHECK_MSG(ok && !memcmp(hf, hu, ny * sizeof(float)),
                      "[%s] case %zu act %d: fused conv differs from conv + add + activation", g_isa, ci, acts[ai]);
            free(x);
            free(r);
            free(b);
            free(w);
            free(hf);
            free(hu);
        }
}

TEST(levels_int8)
{
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create_isa(1, "no-such-set", &be), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("avx512vnni");
    /* an int8 level the CPU has: its kernels (amx: AMX-INT8, else VNNI); one it lacks: named */
    const char *lv[] = {"amx", "avx512bf16", "avx512vnni"};
    for (size_t i = 0; i < SD_ARRAY_LEN(lv); i++) {
        sd_status s = sd_backend_cpu_create_isa(1, lv[i], &be);
        if (s == SD_OK) {
            const char *ik = sd_backend_cpu_int8_isa(be);
            CHECK(ik && (!strcmp(ik, lv[i]) || !strcmp(ik, "avx512vnni")));
            sd_backend_destroy(be);
        } else {
            CHECK(s == SD_ERR_UNSUPPORTED);
            CHECK_ERR_CONTAINS(lv[i]);
        }
    }
    CHECK_STATUS(sd_backend_cpu_create_isa(1, "avx512", &be), SD_OK);
    CHECK(be && sd_backend_cpu_int8_isa(be) == NULL); /* below avx512vnni: no int8 kernels */
    sd_backend_destroy(be);
}

int main(void)
{
    const struct {
        const char *isa;
        bool int8_level;
    } sets[] = {{"amx", true}, {"avx512bf16", true}, {"avx512vnni", true}, {"avx512", false}};
    int int8_levels = 0;
    RUN(levels_int8);
    for (size_t si = 0; si < SD_ARRAY_LEN(sets); si++) {
        g_isa = sets[si].isa;
        sd_status st = sd_backend_cpu_create_isa(2, g_isa, &g_be);
        if (st == SD_ERR_UNSUPPORTED) {
            printf("[ N/A  ] level %s: %s\n", g_isa, sd_last_error());
            continue;
        }
        if (st != SD_OK) {
            fprintf(stderr, "level %s: %s\n", g_isa, sd_last_error());
            return 1;
        }
        sd_backend_cpu_set_int8(g_be, true);
        g_int8 = sd_backend_cpu_int8_isa(g_be) != NULL;
        if (g_int8 != sets[si].int8_level) {
            fprintf(stderr, "level %s: int8 kernels %s, expected %s\n", g_isa, g_int8 ? "present" : "absent",
                    sets[si].int8_level ? "some" : "none");
            return 1;
        }
        int8_levels += g_int8;
        if (sd_ctx_init(&g_ctx, g_be, (size_t)64 << 20) != SD_OK) {
            fprintf(stderr, "cannot allocate the arena: %s\n", sd_last_error());
            return 1;
        }
        printf("level %s (int8 kernels: %s)\n", g_isa, g_int8 ? sd_backend_cpu_int8_isa(g_be) : "none, bf16 path");
        RUN(linear_int8);
        RUN(conv_int8);
        RUN(conv_int8_fused);
        sd_ctx_free(&g_ctx);
        sd_backend_destroy(g_be);
    }
    int rc = test_summary();
    if (rc == 0 && int8_levels == 0) {
        printf("SKIP: this CPU has no int8 kernel level (amx, avx512bf16, avx512vnni)\n");
        return 77;
    }
    return rc;
}
