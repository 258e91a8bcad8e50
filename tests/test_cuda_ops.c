/* CUDA backend vs CPU backend, op by op.
 *
 * Skips (exit 77) when built without CUDA or when no GPU/driver is present.
 * Otherwise every op runs on random inputs on both backends through the op
 * wrappers (sd_ctx with the planning pattern: plan, then init with the peak),
 * with the whole arena poisoned with 0xFF bytes (NaN in F16 and F32) first, so
 * an unwritten output element shows as NaN, and NaN never passes. Inputs are
 * rounded to what the CUDA side stores (fp16 activations, the weight dtype),
 * so both backends see identical values; the error reported is
 * max |cuda - cpu| / max |cpu| (fp16 outputs: tolerance 1e-2), printed per case.
 * SD_CUDA_TEST_FILTER=substring restricts the op cases (see run_cases). */
#include "backend/ops.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef SD_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static sd_backend *g_cpu, *g_cuda;
static char g_why[600];

#define NEED_GPU()                                  \
    do {                                            \
        if (!g_cuda)                                \
            SKIP("no CUDA GPU (%s)", g_why);        \
    } while (0)

/* runs only without a GPU: one SKIP line with the reason */
TEST(cuda_backend) { NEED_GPU(); }

/* ------------------------------------------------------------------ cases */

#define MAX_IN 5

typedef enum { IN_ACT, IN_W, IN_PARAM, IN_F32, IN_I32 } in_kind;

typedef struct in_spec {
    in_kind kind;
    int ndim;
    int64_t ne[4];
    float amp, off;    /* values off + amp * U(-1, 1) (amp 0 means 1) */
    sd_dtype dt;       /* IN_W: dtype on both backends; IN_PARAM: dtype on CUDA (the CPU takes F32) */
    const float *vals; /* explicit values instead of random ones */
} in_spec;

typedef struct tcase tcase;
typedef sd_tensor (*build_fn)(sd_ctx *ctx, const sd_tensor *in, const tcase *tc);
typedef void (*host_ref_fn)(const tcase *tc, float *const *in, float *out, int64_t n);

struct tcase {
    const char *name;
    build_fn build;
    int n_in;
    in_spec in[MAX_IN];
    int ia, ib, ic;     /* op parameters */
    int iv[4];          /* pads / permutation */
    float fa, fb;
    bool ba;
    double tol;         /* 0: 1e-2 */
    host_ref_fn host_ref; /* reference on the host instead of the CPU backend */
};

#define ACT(...) {.kind = IN_ACT, .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define ACTA(a, o, ...) {.kind = IN_ACT, .amp = (a), .off = (o), .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define WGT(t, ...) {.kind = IN_W, .dt = (t), .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define PRM(t, ...) {.kind = IN_PARAM, .dt = (t), .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define F32IN(a, ...) {.kind = IN_F32, .amp = (a), .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define F32V(n, v) {.kind = IN_F32, .ndim = 1, .ne = {n}, .vals = (v)}
#define I32IN(...) {.kind = IN_I32, .ndim = SD_NARG(__VA_ARGS__), .ne = {__VA_ARGS__}}
#define I32V(n, v) {.kind = IN_I32, .ndim = 1, .ne = {n}, .vals = (v)}
#define SD_NARG(...) SD_NARG_(__VA_ARGS__, 4, 3, 2, 1, 0)
#define SD_NARG_(a, b, c, d, n, ...) n

static float round_to(float v, sd_dtype t)
{
    if (t == SD_F16)
        return sd_f16_to_f32(sd_f32_to_f16(v));
    if (t == SD_BF16)
        return sd_bf16_to_f32(sd_f32_to_bf16(v));
    return v;
}

static sd_dtype in_dtype(const in_spec *s, const sd_backend *be)
{
    bool cuda = !be->host_memory;
    switch (s->kind) {
    case IN_ACT: return be->act_dtype;
    case IN_W: return s->dt;
    case IN_PARAM: return cuda ? s->dt : SD_F32;
    case IN_F32: return SD_F32;
    case IN_I32: return SD_I32;
    }
    return SD_F32;
}

static int64_t spec_numel(const in_spec *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->ne[i];
    return n;
}

static float *make_input(const in_spec *s, unsigned long long *seed)
{
    int64_t n = spec_numel(s);
    float *h = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!h)
        return NULL;
    float amp = s->amp != 0.0f ? s->amp : 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = s->vals ? s->vals[i] : s->off + amp * test_rand(seed);
        switch (s->kind) {
        case IN_ACT: v = round_to(v, SD_F16); break; /* the CUDA activation dtype */
        case IN_W:
        case IN_PARAM: v = round_to(v, s->dt); break;
        case IN_F32: break;
        case IN_I32: v = s->vals ? v : floorf(v * 1000.0f); break;
        }
        h[i] = v;
    }
    return h;
}

static bool poison(sd_backend *be, void *p, size_t n)
{
    if (!p || !n)
        return true;
    if (be->host_memory) {
        memset(p, 0xFF, n);
        return true;
    }
#ifdef SD_HAVE_CUDA
    return cudaMemset(p, 0xFF, n) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess;
#else
    return false;
#endif
}

/* Runs one case on a backend; *out (malloc'd) receives the result as float. */
static bool run_on(sd_backend *be, const tcase *tc, float *const *hin, float **out, sd_tensor *yshape)
{
    const char *bn = be->ops->name;
    sd_ctx plan;
    sd_ctx_init_plan(&plan, be);
    sd_tensor in[MAX_IN];
    for (int i = 0; i < tc->n_in; i++)
        in[i] = sd_new(&plan, in_dtype(&tc->in[i], be), tc->in[i].ndim, tc->in[i].ne);
    sd_tensor y = tc->build(&plan, in, tc);
    if (!sd_ok(&plan)) {
        fprintf(stderr, "  %s [%s]: planning failed: %s\n", tc->name, bn, sd_last_error());
        return false;
    }
    sd_ctx ctx;
    if (sd_ctx_init(&ctx, be, plan.peak) != SD_OK) {
        fprintf(stderr, "  %s [%s]: arena of %zu bytes: %s\n", tc->name, bn, plan.peak, sd_last_error());
        return false;
    }
    bool ok = poison(be, ctx.base, ctx.cap);
    if (!ok)
        fprintf(stderr, "  %s [%s]: cannot poison the arena\n", tc->name, bn);
    for (int i = 0; ok && i < tc->n_in; i++) {
        in[i] = sd_new(&ctx, in_dtype(&tc->in[i], be), tc->in[i].ndim, tc->in[i].ne);
        if (sd_tensor_from_f32(&ctx, &in[i], hin[i]) != SD_OK) {
            fprintf(stderr, "  %s [%s]: upload of input %d: %s\n", tc->name, bn, i, sd_last_error());
            ok = false;
        }
    }
    if (ok) {
        y = tc->build(&ctx, in, tc);
        int64_t n = sd_ok(&ctx) ? sd_numel(&y) : 0;
        *out = malloc((size_t)(n ? n : 1) * sizeof(float));
        sd_status s = *out ? sd_tensor_to_f32(&ctx, &y, *out) : SD_ERR_OUT_OF_MEMORY;
        if (s == SD_OK)
            s = be->ops->synchronize(be);
        if (s != SD_OK) {
            fprintf(stderr, "  %s [%s]: run failed: %s: %s\n", tc->name, bn, sd_status_name(s), sd_last_error());
            ok = false;
        }
        *yshape = y;
    }
    sd_ctx_free(&ctx);
    return ok;
}

static void run_case(const tcase *tc, unsigned long long seed)
{
    float *hin[MAX_IN] = {0};
    float *ref = NULL, *got = NULL;
    bool ok = true;
    for (int i = 0; i < tc->n_in; i++)
        ok = ok && (hin[i] = make_input(&tc->in[i], &seed)) != NULL;
    sd_tensor yr = {0}, yg = {0};
    ok = ok && run_on(g_cuda, tc, hin, &got, &yg);
    if (ok && tc->host_ref) {
        int64_t n = sd_numel(&yg);
        ref = malloc((size_t)(n ? n : 1) * sizeof(float));
        ok = ref != NULL;
        if (ok)
            tc->host_ref(tc, hin, ref, n);
        yr = yg;
    } else if (ok) {
        ok = run_on(g_cpu, tc, hin, &ref, &yr);
    }
    CHECK_MSG(ok, "%s: did not run", tc->name);
    if (ok) {
        char sa[96], sb[96];
        sd_shape_str(&yr, sa, sizeof sa);
        sd_shape_str(&yg, sb, sizeof sb);
        CHECK_MSG(sd_same_shape(&yr, &yg), "%s: shapes %s (cpu) vs %s (cuda)", tc->name, sa, sb);
        int64_t n = sd_numel(&yr), bad = 0, worst = -1;
        double maxref = 0, maxerr = 0;
        for (int64_t i = 0; i < n; i++)
            if (isfinite(ref[i]) && fabs(ref[i]) > maxref)
                maxref = fabs(ref[i]);
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(ref[i]) || !isfinite(got[i])) { /* inf must match exactly; NaN never passes */
                if (!(ref[i] == got[i])) {
                    bad++;
                    if (worst < 0)
                        worst = i;
                }
                continue;
            }
            double e = fabs((double)got[i] - (double)ref[i]);
            if (e > maxerr) {
                maxerr = e;
                if (!bad)
                    worst = i;
            }
        }
        double rel = maxerr / (maxref > 0 ? maxref : 1.0);
        double tol = tc->tol > 0 ? tc->tol : 1e-2;
        printf("  %-34s %-16s max|ref| %-10.4g rel.err %-10.3g %s\n", tc->name, sa, maxref, rel,
               bad ? "NON-FINITE MISMATCH" : rel <= tol ? "ok" : "FAIL");
        CHECK_MSG(!bad && rel <= tol,
                  "%s: rel.err %.3g (tol %.3g), %lld non-finite mismatches; first bad/worst at %lld: cuda %g cpu %g",
                  tc->name, rel, tol, (long long)bad, (long long)worst, worst >= 0 ? got[worst] : 0.0,
                  worst >= 0 ? ref[worst] : 0.0);
    }
    for (int i = 0; i < tc->n_in; i++)
        free(hin[i]);
    free(ref);
    free(got);
}

/* SD_CUDA_TEST_FILTER=substring runs only the cases whose name contains it
 * (e.g. "attn" under compute-sanitizer) */
static void run_cases(const tcase *cases, size_t n)
{
    const char *filter = getenv("SD_CUDA_TEST_FILTER");
    for (size_t i = 0; i < n; i++)
        if (!filter || !*filter || strstr(cases[i].name, filter))
            run_case(&cases[i], 0x5eed0000ULL + i * 7919ULL);
}

/* ------------------------------------------------------------------ builders */

static const sd_tensor *opt(const sd_tensor *in, const tcase *tc, int i) { return tc->n_in > i ? &in[i] : NULL; }

static sd_tensor b_cast(sd_ctx *c, const sd_tensor *in, const tcase *tc) { return sd_cast(c, in[0], (sd_dtype)tc->ia); }
static sd_tensor b_linear(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_linear(c, in[0], in[1], opt(in, tc, 2));
}
static sd_tensor b_matmul(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_matmul(c, in[0], in[1], tc->ia & 1, (tc->ia & 2) != 0, tc->fa);
}
static sd_tensor b_conv(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_conv2d_pads(c, in[0], in[1], opt(in, tc, 2), tc->ia, tc->iv);
}
static sd_tensor b_group_norm(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_group_norm(c, in[0], in[1], in[2], tc->ia, tc->fa, tc->ba);
}
static sd_tensor b_layer_norm(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_layer_norm(c, in[0], in[1], in[2], tc->fa);
}
static sd_tensor b_softmax(sd_ctx *c, const sd_tensor *in, const tcase *tc) { return sd_softmax(c, in[0], tc->fa); }
static sd_tensor b_attention(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_attention(c, in[0], in[1], in[2], tc->ia, tc->fa, tc->ba);
}
static sd_tensor b_unary(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_unary(c, in[0], (sd_unary_op)tc->ia);
}
static sd_tensor b_binary(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return tc->ia == 0 ? sd_add(c, in[0], in[1]) : tc->ia == 1 ? sd_sub(c, in[0], in[1]) : sd_mul(c, in[0], in[1]);
}
static sd_tensor b_affine(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_affine(c, in[0], tc->fa, tc->fb);
}
static sd_tensor b_clamp(sd_ctx *c, const sd_tensor *in, const tcase *tc) { return sd_clamp(c, in[0], tc->fa, tc->fb); }
static sd_tensor b_geglu(sd_ctx *c, const sd_tensor *in, const tcase *tc) { return sd_geglu(c, in[0]); }
static sd_tensor b_upsample(sd_ctx *c, const sd_tensor *in, const tcase *tc) { return sd_upsample2x(c, in[0]); }
static sd_tensor b_concat(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_concat(c, in[0], in[1], tc->ia);
}
static sd_tensor b_slice(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_slice(c, in[0], tc->ia, tc->ib, tc->ic);
}
static sd_tensor b_permute(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_permute(c, in[0], tc->iv[0], tc->iv[1], tc->iv[2], tc->iv[3]);
}
static sd_tensor b_tsemb(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_timestep_embedding(c, in[0], tc->ia, tc->ba, tc->fa);
}
static sd_tensor b_embedding(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    return sd_embedding(c, in[0], in[1]);
}
/* sd_keep of a result that overlaps its destination: a temporary of in[1]'s
 * size sits between the mark and the result, so move() runs with dst < src and
 * |dst - src| = that temporary's (aligned) size */
static sd_tensor b_keep(sd_ctx *c, const sd_tensor *in, const tcase *tc)
{
    size_t m = sd_mark(c);
    sd_tensor tmp = sd_affine(c, in[1], 2.0f, 1.0f);
    (void)tmp;
    sd_tensor big = sd_unary(c, in[0], SD_UNARY_SILU);
    return sd_keep(c, m, big);
}

/* BF16 -> F16 cast (the CPU backend has no such cast) */
static void ref_cast(const tcase *tc, float *const *in, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = round_to(in[0][i], (sd_dtype)tc->ia);
}

/* ------------------------------------------------------------------ tests */

TEST(cuda_create_errors)
{
    NEED_GPU();
    sd_backend *b = NULL;
    CHECK_STATUS(sd_backend_cuda_create(9999, &b), SD_ERR_BACKEND);
    CHECK(b == NULL);
    CHECK_ERR_CONTAINS("does not exist");
    CHECK(g_cuda->act_dtype == SD_F16);
    CHECK(!g_cuda->host_memory);
    CHECK(g_cuda->ops->accepts_weight_dtype(g_cuda, SD_F16));
    CHECK(!g_cuda->ops->accepts_weight_dtype(g_cuda, SD_F32));
}

TEST(cuda_memory_and_move)
{
    NEED_GPU();
    sd_backend *be = g_cuda;
    const size_t N = (size_t)1 << 20;
    uint8_t *mirror = malloc(N), *back = malloc(N);
    uint8_t *dev = be->ops->alloc(be, N);
    CHECK(mirror && back && dev);
    if (!mirror || !back || !dev) {
        free(mirror);
        free(back);
        if (dev)
            be->ops->free(be, dev);
        return;
    }
    for (size_t i = 0; i < N; i++)
        mirror[i] = (uint8_t)((i * 7 + (i >> 9)) % 251);
    CHECK_STATUS(be->ops->upload(be, dev, mirror, N), SD_OK);
    CHECK_STATUS(be->ops->download(be, back, dev, N), SD_OK);
    CHECK(memcmp(back, mirror, N) == 0);
    /* dst, src, bytes: disjoint, forward/backward in a few chunks, and
     * small distances (bounce buffer), unaligned offsets */
    static const size_t mv[][3] = {
        {0, 600000, 100000},  {0, 100000, 300000}, {300000, 100000, 500000}, {0, 64, 500000},
        {1000, 0, 300000},    {3, 5, 777777},      {12345, 12340, 900000},   {5, 5, 100},
        {700001, 200003, 333333},
    };
    for (size_t t = 0; t < SD_ARRAY_LEN(mv); t++) {
        be->ops->move(be, dev + mv[t][0], dev + mv[t][1], mv[t][2]);
        memmove(mirror + mv[t][0], mirror + mv[t][1], mv[t][2]);
        CHECK_STATUS(be->ops->synchronize(be), SD_OK);
        CHECK_STATUS(be->ops->download(be, back, dev, N), SD_OK);
        CHECK_MSG(memcmp(back, mirror, N) == 0, "move %zu <- %zu (%zu bytes) differs from memmove", mv[t][0],
                  mv[t][1], mv[t][2]);
    }
    be->ops->free(be, dev);
    free(mirror);
    free(back);
}

TEST(cuda_cast)
{
    NEED_GPU();
    static const tcase cases[] = {
        {.name = "cast act->F32", .build = b_cast, .n_in = 1, .in = {ACTA(3, 0, 3, 5, 7)}, .ia = SD_F32, .tol = 1e-9},
        {.name = "cast F32->F16 (RNE)", .build = b_cast, .n_in = 1, .in = {F32IN(100, 4099)}, .ia = SD_F16,
         .tol = 1e-9},
        {.name = "cast F32->BF16 (RNE)", .build = b_cast, .n_in = 1, .in = {F32IN(100, 1001)}, .ia = SD_BF16,
         .tol = 1e-9},
        {.name = "cast F32->F16 overflow", .build = b_cast, .n_in = 1, .in = {F32IN(1e5f, 257)}, .ia = SD_F16,
         .tol = 1e-9},
        {.name = "cast F16 weight->F32", .build = b_cast, .n_in = 1, .in = {WGT(SD_F16, 33, 17)}, .ia = SD_F32,
         .tol = 1e-9},
        {.name = "cast BF16->F16 (host ref)", .build = b_cast, .n_in = 1, .in = {WGT(SD_BF16, 1000)}, .ia = SD_F16,
         .tol = 1e-9, .host_ref = ref_cast},
    };
    run_cases(cases, SD_ARRAY_LEN(cases));
}

TEST(cuda_gemm)
{
    NEED_GPU();
    static const tcase cases[] = {
        {.name = "linear odd, F16 w, F32 b", .build = b_linear, .n_in = 3,
         .in = {ACT(3, 7, 33), WGT(SD_F16, 17, 33), PRM(SD_F32, 17)}},
        {.name = "linear F32 w, no bias", .build = b_linear, .n_in = 2, .in = {ACT(5, 19), WGT(SD_F32, 23, 19)}},
        {.name = "linear BF16 w, F16 b", .build = b_linear, .n_in = 3,
         .in = {ACT(2, 77, 768), WGT(SD_BF16, 320, 768), PRM(SD_F16, 320)}},
        {.name = "linear K=2560", .build = b_linear, .n_in = 3,
         .in = {ACT(64, 2560), WGT(SD_F16, 1280, 2560), PRM(SD_F32, 1280)}},
        {.name = "linear SD ff 1280->5120", .build = b_linear, .n_in = 3,
         .in = {ACT(1, 256, 1280), WGT(SD_F16, 5120, 1280), PRM(SD_F16, 5120)}},
        {.name = "matmul NN", .build = b_matmul, .n_in = 2, .in = {ACT(3, 17, 29), ACT(3, 29, 13)}, .ia = 0,
         .fa = 0.37f},
        {.name = "matmul TN", .build = b_matmul, .n_in = 2, .in = {ACT(3, 29, 17), ACT(3, 29, 13)}, .ia = 1,
         .fa = 0.37f},
        {.name = "matmul NT", .build = b_matmul, .n_in = 2, .in = {ACT(3, 17, 29), ACT(3, 13, 29)}, .ia = 2,
         .fa = 0.37f},
        {.name = "matmul TT", .build = b_matmul, .n_in = 2, .in = {ACT(3, 29, 17), ACT(3, 13, 29)}, .ia = 3,
         .fa = 0.37f},
        {.name = "matmul scores 16x256x40 NT", .build = b_matmul, .n_in = 2, .in = {ACT(16, 256, 40), ACT(16, 256, 40)},
         .ia = 2, .fa = 0.158113883f},
        {.name = "matmul B=1 K=2560", .build = b_matmul, .n_in = 2, .in = {ACT(1, 64, 2560), ACT(1, 2560, 48)},
         .ia = 0, .fa = 1.0f},
    };
    run_cases(cases, SD_ARRAY_LEN(cases));
}

TEST(cuda_conv2d)
{
    NEED_GPU();
    static const tcase cases[] = {
        {.name = "conv 3x3 odd, bias", .build = b_conv, .n_in = 3,
         .in = {ACT(1, 3, 9, 11), WGT(SD_F16, 5, 3, 3, 3), PRM(SD_F32, 5)}, .ia = 1, .iv = {1, 1, 1, 1}},
        {.name = "conv 3x3 s2 pads 0,0,1,1 F32 w", .build = b_conv, .n_in = 2,
         .in = {ACT(2, 8, 9, 10), WGT(SD_F32, 6, 8, 3, 3)}, .ia = 2, .iv = {0, 0, 1, 1}},
        {.name = "conv 5x3 pads 2,1,2,1 BF16 w", .build = b_conv, .n_in = 3,
         .in = {ACT(3, 4, 7, 6), WGT(SD_BF16, 3, 4, 5, 3), PRM(SD_F16, 3)}, .ia = 1, .iv = {2, 1, 2, 1}},
        {.name = "conv 1x1 pointwise", .build = b_conv, .n_in = 3,
         .in = {ACT(2, 32, 16, 16), WGT(SD_F16, 64, 32, 1, 1), PRM(SD_F16, 64)}, .ia = 1, .iv = {0, 0, 0, 0}},
        {.name = "conv 1x1 stride 2", .build = b_conv, .n_in = 2,
         .in = {ACT(1, 8, 9, 9), WGT(SD_F16, 4, 8, 1, 1)}, .ia = 2, .iv = {0, 0, 0, 0}},
        {.name = "conv SD 320->320 3x3", .build = b_conv, .n_in = 3,
         .in = {ACT(2, 320, 32, 32), WGT(SD_F16, 320, 320, 3, 3), PRM(SD_F32, 320)}, .ia = 1, .iv = {1, 1, 1, 1}},
        {.name = "conv row-chunked 64->32 256^2", .build = b_conv, .n_in = 3,
         .in = {ACT(1, 64, 256, 256), WGT(SD_F16, 32, 64, 3, 3), PRM(SD_F32, 32)}, .ia = 1, .iv = {1, 1, 1, 1}},
        {.name = "conv TAESD 64->64 128^2 x2, F16 bias", .build = b_conv, .n_in = 3,
         .in = {ACT(2, 64, 128, 128), WGT(SD_F16, 64, 64, 3, 3), PRM(SD_F16, 64)}, .ia = 1, .iv = {1, 1, 1, 1}},
        {.name = "conv 130 out channels (3 tiles) s2", .build = b_conv, .n_in = 3,
         .in = {ACT(1, 16, 33, 31), WGT(SD_F16, 130, 16, 3, 3), PRM(SD_F32, 130)}, .ia = 2, .iv = {1, 1, 1, 1}},
    };
    run_cases(cases, SD_ARRAY_LEN(cases)); /* default: implicit GEMM up to 128 output channels, im2col above */
    static const char *const modes[] = {"igemm", "im2col"};
    for (int i = 0; i < 2; i++) { /* every case on both paths */
        setenv("SD_CUDA_CONV", modes[i], 1);
        printf("  (again with SD_CUDA_CONV=%s)\n", modes[i]);
        run_cases(cases, SD_ARRAY_LEN(cases));
    }
    unsetenv("SD_CUDA_CONV");
}

TEST(cuda_norms)
{
    NEED_GPU();
    static const tcase cases[] = {
        {.name = "group_norm 32g silu", .build = b_group_norm, .n_in = 3,
         .in = {ACT(2, 64, 9, 7), PRM(SD_F32, 64), PRM(SD_F32, 64)}, .ia = 32, .fa = 1e-5f, .ba = true},
        {.name = "group_norm 3-D F16 params", .build = b_group_norm, .n_in = 3,
         .in = {ACTA(1, 3, 2, 6, 5), PRM(SD_F16, 6), PRM(SD_F16, 6)}, .ia = 3, .fa = 1e-5f},
        {.name = "group_norm SD 320ch 64^2 off 3", .build = b_group_norm, .n_in = 3,
         .in = {ACTA(1, 3, 1, 320, 64, 64), PRM(SD_F32, 320), PRM(SD_F32, 320)}, .ia = 32, .fa = 1e-6f,
         .ba = true},
        /* few large groups: split over several blocks (sdk_group_norm), uneven last chunk, offset 5 */
        {.name = "group_norm split, uneven chunks", .build = b_group_norm, .n_in = 3,
         .in = {ACTA(2, 5, 1, 32, 10003), PRM(SD_F32, 32), PRM(SD_F32, 32)}, .ia = 32, .fa = 1e-5f, .ba = true},
        {.name = "group_norm split, 2 rows, VAE 128ch 96^2", .build = b_group_norm, .n_in = 3,
         .in = {ACT(2, 128, 96, 96), PRM(SD_F16, 128), PRM(SD_F16, 128)}, .ia = 32, .fa = 1e-6f},
        {.name = "layer_norm odd", .build = b_layer_norm, .n_in = 3,
         .in = {ACT(3, 5, 7), PRM(SD_F32, 7), PRM(SD_F32, 7)}, .fa = 1e-5f},
        {.name = "layer_norm CLIP 768 off 1", .build = b_layer_norm, .n_in = 3,
         .in = {ACTA(2, 1, 2, 77, 768), PRM(SD_F16, 768), PRM(SD_F32, 768)}, .fa = 1e-5f},
        {.name = "layer_norm 4096x320", .build = b_layer_norm, .n_in = 3,
         .in = {ACT(1, 4096, 320), PRM(SD_F32, 320), PRM(SD_F32, 320)}, .fa = 1e-5f},
        {.name = "softmax odd", .build = b_softmax, .n_in = 1, .in = {ACTA(3, 0, 3, 7, 33)}, .fa = 0.7f},
        {.name = "softmax rows of 4096", .build = b_softmax, .n_in = 1, .in = {ACTA(5, 0, 2, 8, 4096)}, .fa = 0.125f},
        {.name = "softmax rows of 1", .build = b_softmax, .n_in = 1, .in = {ACT(5, 1)}, .fa = 1.0f},
    };
    run_cases(cases, SD_ARRAY_LEN(cases));
}

TEST(cuda_attention)
{
    NEED_GPU();
    /* q, k scaled up (amp 2) so the softmax is far from uniform */
    static const tcase cases[] = {
        {.name = "attn d40 self 77", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 2, 77, 320), ACTA(2, 0, 2, 77, 320), ACT(2, 77, 320)}, .ia = 8, .fa = 0.158113883f},
        {.name = "attn d64 cross 256x77", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 2, 256, 320), ACTA(2, 0, 2, 77, 320), ACT(2, 77, 320)}, .ia = 5, .fa = 0.125f},
        {.name = "attn d80 300", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 300, 640), ACTA(2, 0, 1, 300, 640), ACT(1, 300, 640)}, .ia = 8, .fa = 0.111803399f},
        {.name = "attn d160 cross 64x77", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 64, 1280), ACTA(2, 0, 1, 77, 1280), ACT(1, 77, 1280)}, .ia = 8, .fa = 0.0790569415f},
        {.name = "attn d13 odd", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 2, 33, 39), ACTA(2, 0, 2, 33, 39), ACT(2, 33, 39)}, .ia = 3, .fa = 0.277350098f},
        {.name = "attn d1", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 5, 2), ACTA(2, 0, 1, 5, 2), ACT(1, 5, 2)}, .ia = 2, .fa = 1.0f},
        {.name = "attn causal CLIP d64", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 2, 77, 768), ACTA(2, 0, 2, 77, 768), ACT(2, 77, 768)}, .ia = 12, .fa = 0.125f,
         .ba = true},
        {.name = "attn causal Nq<Nk", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 20, 64), ACTA(2, 0, 1, 50, 64), ACT(1, 50, 64)}, .ia = 2, .fa = 0.176776695f,
         .ba = true},
        {.name = "attn d200", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 50, 400), ACTA(2, 0, 1, 50, 400), ACT(1, 50, 400)}, .ia = 2, .fa = 0.0707106781f},
        {.name = "attn VAE d512 1 head", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 256, 512), ACTA(2, 0, 1, 256, 512), ACT(1, 256, 512)}, .ia = 1, .fa = 0.0441941738f},
        {.name = "attn SD 4096 d40", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 4096, 320), ACTA(2, 0, 1, 4096, 320), ACT(1, 4096, 320)}, .ia = 8,
         .fa = 0.158113883f},
        {.name = "attn SD-turbo 4096 d64 batch 2", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 2, 4096, 320), ACTA(2, 0, 2, 4096, 320), ACT(2, 4096, 320)}, .ia = 5, .fa = 0.125f},
        {.name = "attn causal 200 d48 (3 query tiles)", .build = b_attention, .n_in = 3,
         .in = {ACTA(2, 0, 1, 200, 96), ACTA(2, 0, 1, 200, 96), ACT(1, 200, 96)}, .ia = 2, .fa = 0.144337567f,
         .ba = true},
    };
    run_cases(cases, SD_ARRAY_LEN(cases)); /* head dims <= 160: the tensor-core kernel */
    setenv("SD_CUDA_ATTENTION", "simt", 1);  /* and the same cases on the fp32 SIMT kernel */
    printf("  (again with SD_CUDA_ATTENTION=simt)\n");
    run_cases(cases, SD_ARRAY_LEN(cases));
    unsetenv("SD_CUDA_ATTENTION");
}

TEST(cuda_elementwise)
{
    NEED_GPU();
#define UN(op) {.name = "unary " #op, .build = b_unary, .n_in = 1, .in = {ACTA(4, 0, 3, 5, 7, 11)}, .ia = op}
    static const tcase cases[] = {
        UN(SD_UNARY_SILU), UN(SD_UNARY_GELU), UN(SD_UNARY_GELU_TANH), UN(SD_UNARY_QUICK_GELU),
        UN(SD_UNARY_TANH), UN(SD_UNARY_RELU), UN(SD_UNARY_SIGMOID), UN(SD_UNARY_EXP),
        {.name = "add same shape", .build = b_binary, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(2, 3, 4, 5)}, .ia = 0},
        {.name = "sub b[3,1,1]", .build = b_binary, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(3, 1, 1)}, .ia = 1},
        {.name = "mul b[5]", .build = b_binary, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(5)}, .ia = 2},
        {.name = "add b[N,C,1,1]", .build = b_binary, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(2, 3, 1, 1)}, .ia = 0},
        {.name = "mul 3-D by b[1]", .build = b_binary, .n_in = 2, .in = {ACT(4, 6, 7), ACT(1)}, .ia = 2},
        {.name = "add 2-D b[1,9]", .build = b_binary, .n_in = 2, .in = {ACT(7, 9), ACT(1, 9)}, .ia = 0},
        {.name = "sub b[1,C,1,W]", .build = b_binary, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(1, 3, 1, 5)}, .ia = 1},
        {.name = "affine", .build = b_affine, .n_in = 1, .in = {ACT(3, 5, 7)}, .fa = 1.7f, .fb = -0.3f},
        {.name = "clamp", .build = b_clamp, .n_in = 1, .in = {ACTA(3, 0, 1000)}, .fa = -1.0f, .fb = 0.5f},
        {.name = "geglu odd", .build = b_geglu, .n_in = 1, .in = {ACTA(3, 0, 3, 5, 34)}},
        {.name = "geglu SD 2x77x(2*640)", .build = b_geglu, .n_in = 1, .in = {ACTA(3, 0, 2, 77, 1280)}},
    };
#undef UN
    run_cases(cases, SD_ARRAY_LEN(cases));
}

TEST(cuda_layout)
{
    NEED_GPU();
    static const tcase cases[] = {
        {.name = "upsample2x odd", .build = b_upsample, .n_in = 1, .in = {ACT(2, 3, 5, 7)}},
        {.name = "upsample2x 4x32x32", .build = b_upsample, .n_in = 1, .in = {ACT(1, 4, 32, 32)}},
        {.name = "concat axis 0", .build = b_concat, .n_in = 2, .in = {ACT(1, 3, 4, 5), ACT(2, 3, 4, 5)}, .ia = 0},
        {.name = "concat axis 1", .build = b_concat, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(2, 2, 4, 5)}, .ia = 1},
        {.name = "concat axis 2", .build = b_concat, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(2, 3, 3, 5)}, .ia = 2},
        {.name = "concat axis 3", .build = b_concat, .n_in = 2, .in = {ACT(2, 3, 4, 5), ACT(2, 3, 4, 1)}, .ia = 3},
        {.name = "concat 3-D axis 2", .build = b_concat, .n_in = 2, .in = {ACT(2, 77, 320), ACT(2, 77, 64)}, .ia = 2},
        {.name = "concat F32 axis 1", .build = b_concat, .n_in = 2, .in = {F32IN(9, 3, 5), F32IN(9, 3, 2)}, .ia = 1},
        {.name = "concat I32 axis 0", .build = b_concat, .n_in = 2, .in = {I32IN(4, 6), I32IN(3, 6)}, .ia = 0},
        {.name = "slice axis 0", .build = b_slice, .n_in = 1, .in = {ACT(3, 4, 5, 6)}, .ia = 0, .ib = 1, .ic = 2},
        {.name = "slice axis 1", .build = b_slice, .n_in = 1, .in = {ACT(3, 4, 5, 6)}, .ia = 1, .ib = 1, .ic = 2},
        {.name = "slice axis 2", .build = b_slice, .n_in = 1, .in = {ACT(3, 4, 5, 6)}, .ia = 2, .ib = 3, .ic = 2},
        {.name = "slice axis 3", .build = b_slice, .n_in = 1, .in = {ACT(3, 4, 5, 6)}, .ia = 3, .ib = 0, .ic = 5},
        {.name = "slice geglu halves", .build = b_slice, .n_in = 1, .in = {ACT(2, 77, 1280)}, .ia = 2, .ib = 640,
         .ic = 640},
        {.name = "slice F32", .build = b_slice, .n_in = 1, .in = {F32IN(9, 7, 8)}, .ia = 1, .ib = 3, .ic = 3},
        {.name = "permute 0,2,3,1", .build = b_permute, .n_in = 1, .in = {ACT(2, 3, 4, 5)}, .iv = {0, 2, 3, 1}},
        {.name = "permute 0,3,1,2", .build = b_permute, .n_in = 1, .in = {ACT(2, 3, 4, 5)}, .iv = {0, 3, 1, 2}},
        {.name = "permute 0,2,1,3", .build = b_permute, .n_in = 1, .in = {ACT(2, 77, 8, 40)}, .iv = {0, 2, 1, 3}},
        {.name = "permute 3,2,1,0", .build = b_permute, .n_in = 1, .in = {ACT(2, 3, 4, 5)}, .iv = {3, 2, 1, 0}},
        {.name = "permute 1,0,2,3", .build = b_permute, .n_in = 1, .in = {ACT(2, 3, 4, 5)}, .iv = {1, 0, 2, 3}},
        {.name = "keep: overlap, 4 chunks", .build = b_keep, .n_in = 2, .in = {ACT(4, 64, 64), ACT(4, 16, 64)}},
        {.name = "keep: overlap, bounce", .build = b_keep, .n_in = 2, .in = {ACT(8, 64, 64), ACT(32)}},
    };
    run_cases(cases, SD_ARRAY_LEN(cases));
}

TEST(cuda_embeddings)
{
    NEED_GPU();
    static const float ts[4] = {0.0f, 1.0f, 250.5f, 999.0f};
    static const float ids[7] = {0, 5, 99, -1, 100, 42, 7};
    static const tcase cases[] = {
        {.name = "timestep_embedding 320 flip", .build = b_tsemb, .n_in = 1, .in = {F32V(4, ts)}, .ia = 320,
         .ba = true, .fa = 0.0f},
        {.name = "timestep_embedding 7 shift 1", .build = b_tsemb, .n_in = 1, .in = {F32V(4, ts)}, .ia = 7,
         .ba = false, .fa = 1.0f},
        {.name = "embedding F32 table, bad ids", .build = b_embedding, .n_in = 2,
         .in = {PRM(SD_F32, 100, 77), I32V(7, ids)}},
        {.name = "embedding F16 table", .build = b_embedding, .n_in = 2, .in = {PRM(SD_F16, 100, 77), I32V(7, ids)}},
    };
    run_cases(cases, SD_ARRAY_LEN(cases));
}

/* an unsupported op configuration must surface as SD_ERR_BACKEND, not garbage
 * (own backend instance: the error is sticky) */
TEST(cuda_unsupported_head_dim)
{
    NEED_GPU();
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cuda_create(0, &be), SD_OK);
    if (!be)
        return;
    sd_ctx plan, ctx;
    int64_t ne[3] = {1, 4, 600};
    sd_ctx_init_plan(&plan, be);
    sd_tensor q = sd_new(&plan, SD_F16, 3, ne);
    sd_attention(&plan, q, q, q, 1, 0.04f, false);
    CHECK(sd_ok(&plan));
    CHECK_STATUS(sd_ctx_init(&ctx, be, plan.peak), SD_OK);
    q = sd_new(&ctx, SD_F16, 3, ne);
    float h[2400];
    for (int i = 0; i < 2400; i++)
        h[i] = 0.001f * (float)(i % 97);
    CHECK_STATUS(sd_tensor_from_f32(&ctx, &q, h), SD_OK);
    sd_tensor y = sd_attention(&ctx, q, q, q, 1, 0.04f, false);
    CHECK_STATUS(sd_tensor_to_f32(&ctx, &y, h), SD_ERR_BACKEND);
    CHECK_ERR_CONTAINS("head dimension");
    sd_ctx_free(&ctx);
    sd_backend_destroy(be);
}

/* The image conversions: bytes -> [-1, 1] and back, identical to the CPU (the same fp32 expressions;
 * fp16 storage of the activations on the GPU, so the CPU side gets the fp16-rounded values too). */
TEST(cuda_rgb8_images)
{
    NEED_GPU();
    enum { N = 2, H = 9, W = 13, HW = H * W };
    uint8_t bytes[N * HW * 3];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)((i * 37 + 11) % 256);
    sd_ctx cc, gc;
    CHECK_STATUS(sd_ctx_init(&cc, g_cpu, 1 << 20), SD_OK);
    CHECK_STATUS(sd_ctx_init(&gc, g_cuda, 1 << 20), SD_OK);
    sd_tensor c8 = sd_new(&cc, SD_U8, 4, (int64_t[]){N, H, W, 3});
    sd_tensor g8 = sd_new(&gc, SD_U8, 4, (int64_t[]){N, H, W, 3});
    CHECK_STATUS(g_cpu->ops->upload(g_cpu, c8.data, bytes, sizeof bytes), SD_OK);
    CHECK_STATUS(g_cuda->ops->upload(g_cuda, g8.data, bytes, sizeof bytes), SD_OK);
    sd_tensor cf = sd_rgb8_to_chw(&cc, c8), gf = sd_rgb8_to_chw(&gc, g8);
    static float a[N * 3 * HW], b[N * 3 * HW];
    CHECK_STATUS(sd_tensor_to_f32(&cc, &cf, a), SD_OK);
    CHECK_STATUS(sd_tensor_to_f32(&gc, &gf, b), SD_OK);
    int bad = 0;
    for (int i = 0; i < N * 3 * HW; i++)
        bad += sd_f16_to_f32(sd_f32_to_f16(a[i])) != b[i];
    CHECK_MSG(bad == 0, "rgb8_to_chw: %d values differ from the CPU's (rounded to fp16)", bad);
    /* back, from the same fp16 values on both (plus NaN and out-of-range values) */
    for (int i = 0; i < N * 3 * HW; i++)
        a[i] = sd_f16_to_f32(sd_f32_to_f16(1.3f * sinf(0.37f * (float)i)));
    a[0] = NAN;
    sd_tensor cx = sd_new(&cc, SD_F32, 4, (int64_t[]){N, 3, H, W}), gx = sd_new(&gc, SD_F16, 4, (int64_t[]){N, 3, H, W});
    a[1] = INFINITY;
    CHECK_STATUS(sd_tensor_from_f32(&cc, &cx, a), SD_OK);
    CHECK_STATUS(sd_tensor_from_f32(&gc, &gx, a), SD_OK);
    sd_tensor cy = sd_chw_to_rgb8(&cc, cx), gy = sd_chw_to_rgb8(&gc, gx);
    uint8_t ya[N * HW * 3], yb[N * HW * 3];
    memset(yb, 0x5A, sizeof yb);
    CHECK(sd_ok(&cc) && sd_ok(&gc));
    CHECK_STATUS(g_cpu->ops->download(g_cpu, ya, cy.data, sizeof ya), SD_OK);
    CHECK_STATUS(g_cuda->ops->download(g_cuda, yb, gy.data, sizeof yb), SD_OK);
    CHECK_MSG(!memcmp(ya, yb, sizeof ya), "chw_to_rgb8 differs from the CPU");
    sd_ctx_free(&cc);
    sd_ctx_free(&gc);
}

int main(void)
{
#ifdef SD_HAVE_CUDA
    if (sd_backend_cuda_create(0, &g_cuda) != SD_OK) {
        /* "no CUDA GPU found (cudaGetDeviceCount: ...); ..." -> keep the part in parentheses */
        const char *e = sd_last_error(), *p = strchr(e, '('), *q = strrchr(e, ')');
        if (strncmp(e, "no CUDA GPU found (", 19) == 0 && p && q && q > p)
            snprintf(g_why, sizeof g_why, "%.*s", (int)(q - p - 1), p + 1);
        else
            snprintf(g_why, sizeof g_why, "%s", e);
        g_cuda = NULL;
    }
#else
    snprintf(g_why, sizeof g_why, "built without CUDA: SD_HAVE_CUDA is not defined");
#endif
    if (g_cuda && sd_backend_cpu_create(0, &g_cpu) != SD_OK) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", sd_last_error());
        return 1;
    }
    if (!g_cuda) {
        RUN(cuda_backend);
        return test_summary();
    }
    RUN(cuda_create_errors);
    RUN(cuda_memory_and_move);
    RUN(cuda_cast);
    RUN(cuda_gemm);
    RUN(cuda_conv2d);
    RUN(cuda_norms);
    RUN(cuda_attention);
    RUN(cuda_elementwise);
    RUN(cuda_layout);
    RUN(cuda_embeddings);
    RUN(cuda_rgb8_images);
    RUN(cuda_unsupported_head_dim);
    sd_backend_destroy(g_cuda);
    sd_backend_destroy(g_cpu);
    return test_summary();
}
