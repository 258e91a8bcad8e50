/* A batch row's result must not depend on the other rows (cross-session batching in `streamdiff serve`
 * runs several clients' UNet rows in one call and promises each client the frames it would get alone).
 *
 * At every CPU level this machine has, at precision fp32 ("avx512", "avx2"), bf16 ("amx", "avx512bf16") and int8
 * (the int8 levels), linears, convolutions and attention are computed once for a batch of rows / images
 * and once per row / image alone, and the results must be bit-identical. Shapes make the kernels take
 * every branch a batch size could switch: linears with K > 512 (a second depth block accumulates into
 * C) and a bias, M crossing the 32-row micro blocks and the 128-row A blocks and the threads' row split
 * (2 threads); convolutions whose batch has >= 1024 output pixels but one image has fewer (a choice of
 * algorithm by the batch's size), with F32, BF16 and prepared weights. Levels the CPU lacks are skipped
 * and said so; none of the levels at all: exit 77. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "test.h"
#include "test_util.h"

static const char *g_isa;
static sd_backend *g_be;
static sd_ctx g_ctx;
static unsigned long long g_seed = 0x2545f4914f6cdd1dULL;

static float *rnd(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = ((float)((g_seed >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f) * scale;
    }
    return p;
}

static sd_tensor up(sd_dtype dt, int nd, const int64_t *ne, const float *host) { return test_upload(&g_ctx, dt, nd, ne, host); }

/* t's values into host (n floats); false (and a message) when the op failed */
static bool down(sd_tensor t, float *host, size_t n)
{
    if (!sd_ok(&g_ctx) || (size_t)sd_numel(&t) != n) {
        fprintf(stderr, "  [%s] op failed: %s\n", g_isa, sd_last_error());
        return false;
    }
    sd_tensor_to_f32(&g_ctx, &t, host);
    return true;
}

/* the batch's row r (n floats from all) against the row computed alone (one); a difference ends the case's
 * loop over rows (its `ok`) */
#define EXPECT_SAME_ROW(what, all, one, n, r, ...)                                                          \
    do {                                                                                                     \
        if (memcmp((all), (one), (n) * sizeof(float))) {                                                    \
            size_t i_ = 0;                                                                                   \
            while (i_ < (n) && !memcmp((all) + i_, (one) + i_, sizeof(float)))                               \
                i_++;                                                                                        \
            fprintf(stderr, "  %s:%d: [%s] %s: row %lld of the batch differs from it alone (value %zu: %.9g "  \
                            "vs %.9g): ", __FILE__, __LINE__, g_isa, what, (long long)(r), i_, (double)(all)[i_], \
                    (double)(one)[i_]);                                                                      \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            t_cur_failed = 1;                                                                                \
            ok = false; /* the first differing row of a case is enough */                                   \
        }                                                                                                    \
    } while (0)

/* w prepared as at load where the level does, else w (tests/test_util.h) */
static sd_tensor prepared(sd_tensor w, sd_weight_use use) { return test_prepared(&g_ctx, g_be, w, use); }

TEST(linear_rows)
{
    const int64_t Ms[] = {2, 7, 33, 45, 70, 130}, K = 600, N = 70;
    for (int wi = 0; wi < 3; wi++) /* weight F32, BF16, BF16 prepared */
        for (int bias = 0; bias < 2; bias++)
            for (size_t mi = 0; mi < SD_ARRAY_LEN(Ms); mi++) {
                sd_ctx_reset(&g_ctx);
                int64_t M = Ms[mi], xe[2] = {M, K}, we[2] = {N, K};
                float *x = rnd((size_t)(M * K), 1), *w = rnd((size_t)(N * K), 0.3f), *b = rnd((size_t)N, 1);
                float *all = malloc((size_t)(M * N) * sizeof(float)), one[70];
                sd_tensor tb = up(SD_F32, 1, &N, b), tw = up(wi ? SD_BF16 : SD_F32, 2, we, w);
                if (wi == 2)
                    tw = prepared(tw, SD_WEIGHT_LINEAR);
                bool ok = down(sd_linear(&g_ctx, up(SD_F32, 2, xe, x), tw, bias ? &tb : NULL), all, (size_t)(M * N));
                CHECK(ok);
                for (int64_t r = 0; ok && r < M; r++) {
                    int64_t xe1[2] = {1, K};
                    ok = down(sd_linear(&g_ctx, up(SD_F32, 2, xe1, x + r * K), tw, bias ? &tb : NULL), one, (size_t)N);
                    CHECK(ok);
                    if (ok)
                        EXPECT_SAME_ROW("linear", all + r * N, one, (size_t)N, r, "M %lld K %lld N %lld weight %s%s",
                                        (long long)M, (long long)K, (long long)N, wi == 0 ? "F32" : wi == 1 ? "BF16" : "prepared",
                                        bias ? ", bias" : "");
                }
                free(x);
                free(w);
                free(b);
                free(all);
            }
}

TEST(conv_images)
{
    struct {
        int64_t N, C, H, W, O, K;
        int stride, pad;
    } cases[] = {
        {20, 40, 8, 8, 48, 3, 1, 1},   /* one image 64 output pixels, the batch 1280 */
        {6, 33, 16, 16, 40, 3, 1, 1},  /* one image 256, the batch 1536 */
        {5, 24, 30, 30, 20, 3, 2, 1},  /* stride 2: one image 225, the batch 1125 */
        {3, 600, 6, 7, 40, 1, 1, 0},   /* pointwise, K > 512 */
    };
    for (size_t ci = 0; ci < SD_ARRAY_LEN(cases); ci++)
        for (int wi = 0; wi < 3; wi++) { /* weight F32, BF16, BF16 prepared */
            sd_ctx_reset(&g_ctx);
            int64_t N = cases[ci].N, C = cases[ci].C, H = cases[ci].H, W = cases[ci].W, O = cases[ci].O, K = cases[ci].K;
            int s = cases[ci].stride, p = cases[ci].pad, pd[4] = {p, p, p, p};
            int64_t HO = (H + 2 * p - K) / s + 1, WO = (W + 2 * p - K) / s + 1, per = O * HO * WO;
            int64_t xe[4] = {N, C, H, W}, xe1[4] = {1, C, H, W}, we[4] = {O, C, K, K};
            float *x = rnd((size_t)(N * C * H * W), 1), *w = rnd((size_t)(O * C * K * K), 0.2f), *b = rnd((size_t)O, 1);
            float *all = malloc((size_t)(N * per) * sizeof(float)), *one = malloc((size_t)per * sizeof(float));
            sd_tensor tb = up(SD_F32, 1, &O, b), tw = up(wi ? SD_BF16 : SD_F32, 4, we, w);
            if (wi == 2)
                tw = prepared(tw, SD_WEIGHT_CONV);
            bool ok = down(sd_conv2d_pads(&g_ctx, up(SD_F32, 4, xe, x), tw, &tb, s, pd), all, (size_t)(N * per));
            CHECK(ok);
            for (int64_t n = 0; ok && n < N; n++) {
                ok = down(sd_conv2d_pads(&g_ctx, up(SD_F32, 4, xe1, x + n * C * H * W), tw, &tb, s, pd), one, (size_t)per);
                CHECK(ok);
                if (ok)
                    EXPECT_SAME_ROW("conv2d", all + n * per, one, (size_t)per, n, "case %zu (N %lld, %lldx%lld, O %lld), weight %s",
                                    ci, (long long)N, (long long)H, (long long)W, (long long)O,
                                    wi == 0 ? "F32" : wi == 1 ? "BF16" : "prepared");
            }
            free(x);
            free(w);
            free(b);
            free(all);
            free(one);
        }
}

TEST(attention_rows)
{
    const int64_t B = 5, Nq = 70, Nk = 77, d = 40;
    const int H = 2;
    for (int causal = 0; causal < 2; causal++) {
        sd_ctx_reset(&g_ctx);
        int64_t HD = H * d, qe[3] = {B, Nq, HD}, ke[3] = {B, Nk, HD}, qe1[3] = {1, Nq, HD}, ke1[3] = {1, Nk, HD};
        float *q = rnd((size_t)(B * Nq * HD), 2), *k = rnd((size_t)(B * Nk * HD), 2), *v = rnd((size_t)(B * Nk * HD), 1);
        float *all = malloc((size_t)(B * Nq * HD) * sizeof(float)), *one = malloc((size_t)(Nq * HD) * sizeof(float));
        float scale = 0.158f;
        bool ok = down(sd_attention(&g_ctx, up(SD_F32, 3, qe, q), up(SD_F32, 3, ke, k), up(SD_F32, 3, ke, v), H, scale,
                                    causal),
                       all, (size_t)(B * Nq * HD));
        CHECK(ok);
        for (int64_t r = 0; ok && r < B; r++) {
            ok = down(sd_attention(&g_ctx, up(SD_F32, 3, qe1, q + r * Nq * HD), up(SD_F32, 3, ke1, k + r * Nk * HD),
                                   up(SD_F32, 3, ke1, v + r * Nk * HD), H, scale, causal),
                      one, (size_t)(Nq * HD));
            CHECK(ok);
            if (ok)
                EXPECT_SAME_ROW("attention", all + r * Nq * HD, one, (size_t)(Nq * HD), r, "B %lld%s", (long long)B,
                                causal ? ", causal" : "");
        }
        free(q);
        free(k);
        free(v);
        free(all);
        free(one);
    }
}

int main(void)
{
    const struct {
        const char *isa;
        int precision; /* 0 fp32, 1 bf16, 2 int8 */
    } sets[] = {{"avx512", 0},     {"amx", 1},        {"avx512bf16", 1},
                {"amx", 2},        {"avx512bf16", 2}, {"avx512vnni", 2}, {"avx2", 0}};
    int ran = 0;
    for (size_t si = 0; si < SD_ARRAY_LEN(sets); si++) {
        g_isa = sets[si].isa;
        const char *prec = sets[si].precision == 0 ? "fp32" : sets[si].precision == 1 ? "bf16" : "int8";
        sd_status st = sd_backend_cpu_create_isa(2, g_isa, &g_be);
        if (st == SD_ERR_UNSUPPORTED) { /* this CPU lacks the level: the levels it has are tested */
            printf("[ N/A  ] level %s (%s): %s\n", g_isa, prec, sd_last_error());
            continue;
        }
        if (st != SD_OK) {
            fprintf(stderr, "level %s: %s\n", g_isa, sd_last_error());
            return 1;
        }
        if (sets[si].precision == 1)
            sd_backend_cpu_set_bf16(g_be, true);
        if (sets[si].precision == 2)
            sd_backend_cpu_set_int8(g_be, true);
        bool has = sets[si].precision == 0 ? true
                   : sets[si].precision == 1 ? sd_backend_cpu_bf16_isa(g_be) != NULL
                                             : sd_backend_cpu_int8_isa(g_be) != NULL;
        if (!has) {
            printf("[ N/A  ] level %s (%s): no such kernels on this CPU\n", g_isa, prec);
            sd_backend_destroy(g_be);
            continue;
        }
        if (sd_ctx_init(&g_ctx, g_be, (size_t)64 << 20) != SD_OK) {
            fprintf(stderr, "cannot allocate the arena: %s\n", sd_last_error());
            return 1;
        }
        ran++;
        printf("level %s, precision %s\n", g_isa, prec);
        RUN(linear_rows);
        RUN(conv_images);
        RUN(attention_rows);
        sd_ctx_free(&g_ctx);
        sd_backend_destroy(g_be);
    }
    int rc = test_summary();
    if (rc == 0 && ran == 0) {
        printf("SKIP: this CPU has none of the levels (avx512, amx, avx512bf16, avx512vnni, avx2)\n");
        return 77;
    }
    return rc;
}
