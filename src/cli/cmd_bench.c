/* `streamdiff bench <what>`: performance measurements.
 *
 *   bench ops   the OpenBLAS sgemm peak of this machine, then GFLOP/s of the
 *               conv / linear / attention shapes of the SD 1.5 UNet at 512x512
 *               (latent 64x64, batch 1) through the op wrappers on the CPU
 *               backend, as a table and optionally JSON.
 *
 * FLOP convention: a matrix product [M,K] x [K,N] is 2*M*N*K; a convolution is
 * the product its im2col GEMM performs (2 * O * HO*WO * C*kh*kw per image);
 * attention is its two products (QK^T and PV: 4 * heads * Nq * Nk * d); bias,
 * softmax and normalisation arithmetic are not counted. Memory-bound ops
 * (group norm, GEGLU) report effective bandwidth instead: bytes of the input
 * read once plus the output written once. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "cli/cli.h"
#include "models/weights.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ cases */

typedef enum { B_CONV, B_LINEAR, B_ATTN, B_GROUPNORM, B_GEGLU } bench_kind;

typedef struct {
    const char *name;
    bench_kind kind;
    /* conv: C O H W k stride pad(0: none, 1: symmetric 1, 2: VAE-style {0,0,1,1})
     * linear: M K N;  attention: Nq Nk heads d;  group norm: C H W groups silu;  geglu: M N(out) */
    int64_t p[7];
} bench_case;

static const bench_case k_cases[] = {
    {"conv_in 3x3 4->320 @64x64", B_CONV, {4, 320, 64, 64, 3, 1, 1}},
    {"conv3x3 320->320 @64x64", B_CONV, {320, 320, 64, 64, 3, 1, 1}},
    {"conv3x3 320->640 @32x32", B_CONV, {320, 640, 32, 32, 3, 1, 1}},
    {"conv3x3 640->640 @32x32", B_CONV, {640, 640, 32, 32, 3, 1, 1}},
    {"conv3x3 1280->1280 @16x16", B_CONV, {1280, 1280, 16, 16, 3, 1, 1}},
    {"conv3x3 1280->1280 @8x8", B_CONV, {1280, 1280, 8, 8, 3, 1, 1}},
    {"conv3x3 2560->1280 @8x8 (up block)", B_CONV, {2560, 1280, 8, 8, 3, 1, 1}},
    {"downsample 3x3/2 320 @64->32", B_CONV, {320, 320, 64, 64, 3, 2, 1}},
    {"downsample 3x3/2 640 @32->16", B_CONV, {640, 640, 32, 32, 3, 2, 1}},
    {"downsample 3x3/2 1280 @16->8", B_CONV, {1280, 1280, 16, 16, 3, 2, 1}},
    {"conv1x1 proj 320->320 @64x64", B_CONV, {320, 320, 64, 64, 1, 1, 0}},
    {"conv1x1 proj 640->640 @32x32", B_CONV, {640, 640, 32, 32, 1, 1, 0}},
    {"conv1x1 proj 1280->1280 @16x16", B_CONV, {1280, 1280, 16, 16, 1, 1, 0}},
    {"conv1x1 shortcut 320->640 @32x32", B_CONV, {320, 640, 32, 32, 1, 1, 0}},
    {"linear 320->320 x4096 (q/k/v/out)", B_LINEAR, {4096, 320, 320}},
    {"linear 768->320 x77 (cross k/v)", B_LINEAR, {77, 768, 320}},
    {"GEGLU proj 320->2560 x4096", B_LINEAR, {4096, 320, 2560}},
    {"ff out 1280->320 x4096", B_LINEAR, {4096, 1280, 320}},
    {"linear 640->640 x1024", B_LINEAR, {1024, 640, 640}},
    {"linear 1280->1280 x256", B_LINEAR, {256, 1280, 1280}},
    {"GEGLU proj 1280->10240 x256", B_LINEAR, {256, 1280, 10240}},
    {"self-attn 4096x4096 8x40", B_ATTN, {4096, 4096, 8, 40}},
    {"cross-attn 4096x77 8x40", B_ATTN, {4096, 77, 8, 40}},
    {"self-attn 1024x1024 8x80", B_ATTN, {1024, 1024, 8, 80}},
    {"self-attn 256x256 8x160", B_ATTN, {256, 256, 8, 160}},
    {"self-attn 64x64 8x160 (mid)", B_ATTN, {64, 64, 8, 160}},
    {"group norm 32g 320 @64x64 +SiLU", B_GROUPNORM, {320, 64, 64, 32, 1}},
    {"group norm 32g 1280 @16x16", B_GROUPNORM, {1280, 16, 16, 32, 0}},
    {"GEGLU act 2560->1280 x4096", B_GEGLU, {4096, 1280}},
};

typedef struct {
    sd_tensor t[4];
} bench_io;

static unsigned long long g_rng = 0x9e3779b97f4a7c15ULL;

static float frand(void)
{
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* New tensor in ctx, filled with random values unless planning. */
static sd_tensor rand_tensor(sd_ctx *ctx, int nd, const int64_t *ne, float scale)
{
    sd_tensor t = sd_new(ctx, ctx->be->act_dtype, nd, ne);
    if (!sd_ok(ctx) || ctx->plan)
        return t;
    size_t n = (size_t)sd_numel(&t);
    float *h = malloc(n * sizeof(float));
    if (!h) {
        sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "bench: out of memory");
        return t;
    }
    for (size_t i = 0; i < n; i++)
        h[i] = frand() * scale;
    sd_tensor_from_f32(ctx, &t, h);
    free(h);
    return t;
}

static void conv_pads(const bench_case *c, int pads[4])
{
    int p = (int)c->p[6];
    pads[0] = pads[1] = p == 1 ? 1 : 0;
    pads[2] = pads[3] = p ? 1 : 0;
}

static void setup(sd_ctx *ctx, const bench_case *c, bench_io *io)
{
    const int64_t *p = c->p;
    switch (c->kind) {
    case B_CONV:
        io->t[0] = rand_tensor(ctx, 4, (int64_t[]){1, p[0], p[2], p[3]}, 1.0f);
        io->t[1] = sd_prepare_weight(ctx, rand_tensor(ctx, 4, (int64_t[]){p[1], p[0], p[4], p[4]}, 0.05f),
                                     SD_WEIGHT_CONV); /* as the loader would (int8: the kernels' tiles) */
        io->t[2] = rand_tensor(ctx, 1, (int64_t[]){p[1]}, 0.1f);
        break;
    case B_LINEAR:
        io->t[0] = rand_tensor(ctx, 2, (int64_t[]){p[0], p[1]}, 1.0f);
        io->t[1] = sd_prepare_weight(ctx, rand_tensor(ctx, 2, (int64_t[]){p[2], p[1]}, 0.05f), SD_WEIGHT_LINEAR);
        io->t[2] = rand_tensor(ctx, 1, (int64_t[]){p[2]}, 0.1f);
        break;
    case B_ATTN:
        io->t[0] = rand_tensor(ctx, 3, (int64_t[]){1, p[0], p[2] * p[3]}, 1.0f);
        io->t[1] = rand_tensor(ctx, 3, (int64_t[]){1, p[1], p[2] * p[3]}, 1.0f);
        io->t[2] = rand_tensor(ctx, 3, (int64_t[]){1, p[1], p[2] * p[3]}, 1.0f);
        break;
    case B_GROUPNORM:
        io->t[0] = rand_tensor(ctx, 4, (int64_t[]){1, p[0], p[1], p[2]}, 1.0f);
        io->t[1] = rand_tensor(ctx, 1, (int64_t[]){p[0]}, 1.0f);
        io->t[2] = rand_tensor(ctx, 1, (int64_t[]){p[0]}, 1.0f);
        break;
    case B_GEGLU:
        io->t[0] = rand_tensor(ctx, 2, (int64_t[]){p[0], 2 * p[1]}, 1.0f);
        break;
    }
}

static sd_tensor run(sd_ctx *ctx, const bench_case *c, const bench_io *io)
{
    const int64_t *p = c->p;
    switch (c->kind) {
    case B_CONV: {
        int pads[4];
        conv_pads(c, pads);
        return sd_conv2d_pads(ctx, io->t[0], io->t[1], &io->t[2], (int)p[5], pads);
    }
    case B_LINEAR: return sd_linear(ctx, io->t[0], io->t[1], &io->t[2]);
    case B_ATTN: return sd_attention(ctx, io->t[0], io->t[1], io->t[2], (int)p[2], 1.0f / sqrtf((float)p[3]), false);
    case B_GROUPNORM: return sd_group_norm(ctx, io->t[0], io->t[1], io->t[2], (int)p[3], 1e-5f, p[4] != 0);
    case B_GEGLU: return sd_geglu(ctx, io->t[0]);
    }
    sd_tensor z = {0};
    return z;
}

static const char *kind_name(bench_kind k)
{
    static const char *n[] = {"conv2d", "linear", "attention", "group_norm", "geglu"};
    return n[k];
}

/* FLOPs (2*M*N*K convention) and effective bytes of one run. */
static void work(const bench_case *c, double *flop, double *bytes, char *shape, size_t ns)
{
    const int64_t *p = c->p;
    *flop = 0;
    *bytes = 0;
    switch (c->kind) {
    case B_CONV: {
        int pads[4];
        conv_pads(c, pads);
        int64_t ho = (p[2] + pads[0] + pads[2] - p[4]) / p[5] + 1, wo = (p[3] + pads[1] + pads[3] - p[4]) / p[5] + 1;
        *flop = 2.0 * (double)p[1] * (double)(ho * wo) * (double)(p[0] * p[4] * p[4]);
        snprintf(shape, ns, "x[1,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] s%lld -> [1,%lld,%lld,%lld]",
                 (long long)p[0], (long long)p[2], (long long)p[3], (long long)p[1], (long long)p[0], (long long)p[4],
                 (long long)p[4], (long long)p[5], (long long)p[1], (long long)ho, (long long)wo);
        break;
    }
    case B_LINEAR:
        *flop = 2.0 * (double)p[0] * (double)p[1] * (double)p[2];
        snprintf(shape, ns, "x[%lld,%lld] w[%lld,%lld]", (long long)p[0], (long long)p[1], (long long)p[2],
                 (long long)p[1]);
        break;
    case B_ATTN:
        *flop = 4.0 * (double)p[2] * (double)p[0] * (double)p[1] * (double)p[3];
        snprintf(shape, ns, "q[1,%lld,%lld] kv[1,%lld,%lld] heads %lld", (long long)p[0], (long long)(p[2] * p[3]),
                 (long long)p[1], (long long)(p[2] * p[3]), (long long)p[2]);
        break;
    case B_GROUPNORM:
        *bytes = 2.0 * 4.0 * (double)(p[0] * p[1] * p[2]);
        snprintf(shape, ns, "x[1,%lld,%lld,%lld] groups %lld%s", (long long)p[0], (long long)p[1], (long long)p[2],
                 (long long)p[3], p[4] ? " silu" : "");
        break;
    case B_GEGLU:
        *bytes = 4.0 * (double)(p[0] * 3 * p[1]);
        snprintf(shape, ns, "x[%lld,%lld] -> [%lld,%lld]", (long long)p[0], (long long)(2 * p[1]), (long long)p[0],
                 (long long)p[1]);
        break;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ sgemm peak */

static double sgemm_peak(int n, int reps, double *best_ms)
{
    size_t nn = (size_t)n * (size_t)n;
    float *a = sd_aligned_alloc(nn * sizeof(float)), *b = sd_aligned_alloc(nn * sizeof(float)),
          *c = sd_aligned_alloc(nn * sizeof(float));
    if (!a || !b || !c) {
        sd_aligned_free(a);
        sd_aligned_free(b);
        sd_aligned_free(c);
        return 0;
    }
    for (size_t i = 0; i < nn; i++) {
        a[i] = frand();
        b[i] = frand();
    }
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) { /* the first run warms up threads and caches */
        double t0 = sd_time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = sd_time_now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    sd_aligned_free(a);
    sd_aligned_free(b);
    sd_aligned_free(c);
    *best_ms = best * 1e3;
    return 2.0 * n * (double)n * n / best * 1e-9;
}

/* ------------------------------------------------------------ machine */

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                snprintf(buf, n, "%s", v);
                buf[strcspn(buf, "\n")] = 0;
            }
            break;
        }
    }
    fclose(f);
}

static void loadavg(char *buf, size_t n)
{
    snprintf(buf, n, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    double a = 0, b = 0, c = 0;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(buf, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

/* ------------------------------------------------------------ bench ops */

static void ops_usage(FILE *f)
{
    fprintf(f, "usage: streamdiff bench ops [--json FILE] [--threads N] [--reps N] [--filter TEXT] [--peak-n N]\n"
               "                            [--precision fp32|bf16|int8|auto]\n\n"
               "Measures the OpenBLAS sgemm peak (N x N x N, default 2048, best of the reps), then\n"
               "runs the conv / linear / attention / group-norm shapes of the SD 1.5 UNet at 512x512\n"
               "(latent 64x64, batch 1) through the CPU backend and prints GFLOP, time (best of the\n"
               "reps after one warm-up run), GFLOP/s and the percentage of the sgemm peak.\n\n"
               "  --json FILE    also write the results as JSON\n"
               "  --threads N    threads for OpenMP and OpenBLAS (default: OMP_NUM_THREADS or all cores)\n"
               "  --reps N       timed repetitions per op (default 3)\n"
               "  --filter TEXT  only ops whose name contains TEXT\n"
               "  --peak-n N     sgemm size for the peak (default 2048)\n"
               "  --precision P  fp32 (default), bf16 (AMX / AVX512-BF16 kernels), int8 (experimental: W8A8\n"
               "                 linears/convs on AMX-INT8 / AVX512-VNNI; weights prepared as at load) or auto\n\n"
               "FLOPs count 2*M*N*K per matrix product (a conv counts its im2col GEMM, attention its\n"
               "QK^T and PV products); memory-bound ops report GB/s of input read + output written.\n");
}

static int bench_ops(int argc, char **argv)
{
    const char *json_path = NULL, *filter = NULL;
    int threads = omp_get_max_threads(), reps = 3, peak_n = 2048;
    sd_precision precision = SD_PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ops_usage(stdout);
            return 0;
        }
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--json") && has_val) {
            json_path = argv[++i];
        } else if (!strcmp(a, "--filter") && has_val) {
            filter = argv[++i];
        } else if (!strcmp(a, "--threads") && has_val) {
            if (!cli_parse_int(argv[++i], 1, 1024, &threads)) {
                fprintf(stderr, "bench ops: --threads needs an integer from 1 to 1024, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--reps") && has_val) {
            if (!cli_parse_int(argv[++i], 1, 1000, &reps)) {
                fprintf(stderr, "bench ops: --reps needs an integer from 1 to 1000, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--precision") && has_val) {
            if (!sd_precision_from_name(argv[++i], &precision)) {
                fprintf(stderr, "bench ops: --precision needs fp32, bf16, int8 or auto, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--peak-n") && has_val) {
            if (!cli_parse_int(argv[++i], 64, 16384, &peak_n)) {
                fprintf(stderr, "bench ops: --peak-n needs an integer from 64 to 16384, got '%s'\n", argv[i]);
                return 2;
            }
        } else {
            bool known = !strcmp(a, "--json") || !strcmp(a, "--filter") || !strcmp(a, "--threads") ||
                         !strcmp(a, "--reps") || !strcmp(a, "--peak-n") || !strcmp(a, "--precision");
            fprintf(stderr, "bench ops: %s '%s'\n\n", known ? "missing value for" : "unknown option", a);
            ops_usage(stderr);
            return 2;
        }
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);

    sd_backend *be = NULL;
    if (sd_backend_cpu_create(threads, &be) != SD_OK) {
        fprintf(stderr, "bench ops: %s\n", sd_last_error());
        return 1;
    }
    if (precision == SD_PRECISION_INT8) {
        sd_backend_cpu_set_int8(be, true); /* conv / linear W8A8, attention bf16 */
        printf("precision int8: %s kernels (the %% column stays relative to the fp32 sgemm peak)\n",
               sd_backend_cpu_int8_isa(be) ? sd_backend_cpu_int8_isa(be) : "no int8 kernels on this CPU: bf16");
    } else if (precision == SD_PRECISION_BF16 || (precision == SD_PRECISION_AUTO && sd_backend_cpu_auto_bf16(be))) {
        sd_backend_cpu_set_bf16(be, true); /* conv / linear / attention through the bf16 kernels */
        printf("precision bf16: %s kernels (the %% column stays relative to the fp32 sgemm peak)\n",
               sd_backend_cpu_bf16_isa(be) ? sd_backend_cpu_bf16_isa(be) : "no bf16 kernels on this CPU: fp32");
    }
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    const char *blas_cfg = openblas_get_config(), *blas_core = openblas_get_corename();
    printf("streamdiff bench ops: CPU backend, %d thread(s), %d rep(s) per op (best after one warm-up)\n", threads,
           reps);
    printf("cpu: %s, %ld online cores; OpenBLAS: %s (core %s); OPENBLAS_CORETYPE=%s\n", cpu,
           (long)omp_get_num_procs(), blas_cfg ? blas_cfg : "?", blas_core ? blas_core : "?",
           env_or("OPENBLAS_CORETYPE", "(unset)"));
    fflush(stdout);

    char load0[64], load1[64];
    loadavg(load0, sizeof load0);
    /* The peak is measured before and after the ops (the higher one is used), so that a
     * disturbance during one of the two measurements does not skew the percentages. */
    double peak_ms0 = 0, peak_ms1 = 0;
    int peak_reps = reps < 3 ? 3 : reps;
    double peak0 = sgemm_peak(peak_n, peak_reps, &peak_ms0);
    if (peak0 <= 0) {
        fprintf(stderr, "bench ops: out of memory for the %dx%d sgemm\n", peak_n, peak_n);
        sd_backend_destroy(be);
        return 1;
    }
    printf("sgemm %dx%dx%d before the ops: best %.1f ms of %d -> %.1f GFLOP/s\n", peak_n, peak_n, peak_n, peak_ms0,
           peak_reps, peak0);
    fflush(stdout);

    struct result {
        const bench_case *c;
        double flop, bytes, best, median;
        size_t arena;
        char shape[160];
    } *res = calloc(SD_ARRAY_LEN(k_cases), sizeof *res);
    size_t nres = 0;
    int rc = 0;
    for (size_t ci = 0; res && ci < SD_ARRAY_LEN(k_cases); ci++) {
        const bench_case *c = &k_cases[ci];
        if (filter && !strstr(c->name, filter))
            continue;
        /* size the arena by planning the same setup + op */
        bench_io io;
        sd_ctx ctx;
        sd_ctx_init_plan(&ctx, be);
        setup(&ctx, c, &io);
        run(&ctx, c, &io);
        size_t need = ctx.peak;
        if (!sd_ok(&ctx) || sd_ctx_init(&ctx, be, need) != SD_OK) {
            fprintf(stderr, "bench ops: %s: %s\n", c->name, sd_last_error());
            rc = 1;
            continue;
        }
        setup(&ctx, c, &io);
        size_t mark = sd_mark(&ctx);
        double *times = malloc(sizeof(double) * (size_t)reps);
        for (int r = 0; r < reps + 1 && sd_ok(&ctx); r++) {
            double t0 = sd_time_now();
            run(&ctx, c, &io);
            double dt = sd_time_now() - t0;
            if (r > 0)
                times[r - 1] = dt;
            sd_release(&ctx, mark);
        }
        if (!sd_ok(&ctx)) {
            fprintf(stderr, "bench ops: %s: %s\n", c->name, sd_last_error());
            free(times);
            sd_ctx_free(&ctx);
            rc = 1;
            continue;
        }
        qsort(times, (size_t)reps, sizeof *times, cmp_double);
        struct result *r = &res[nres++];
        r->c = c;
        r->best = times[0];
        r->median = times[reps / 2];
        r->arena = need;
        work(c, &r->flop, &r->bytes, r->shape, sizeof r->shape);
        free(times);
        sd_ctx_free(&ctx);
        fprintf(stderr, ".");
    }
    fprintf(stderr, "\n");
    double peak1 = sgemm_peak(peak_n, peak_reps, &peak_ms1);
    double peak = peak1 > peak0 ? peak1 : peak0, peak_ms = peak1 > peak0 ? peak_ms1 : peak_ms0;
    loadavg(load1, sizeof load1);
    printf("sgemm %dx%dx%d after the ops:  best %.1f ms of %d -> %.1f GFLOP/s\n", peak_n, peak_n, peak_n, peak_ms1,
           peak_reps, peak1);
    printf("sgemm peak used for %%peak: %.1f GFLOP/s; load average before %s, after %s\n\n", peak, load0, load1);
    printf("%-36s %-52s %8s %9s %9s %6s\n", "op", "shape", "GFLOP", "ms", "GFLOP/s", "%peak");

    cJSON *root = cJSON_CreateObject(), *jops = cJSON_CreateArray();
    double total_ms = 0, total_flop = 0;
    for (size_t i = 0; i < nres; i++) {
        const struct result *r = &res[i];
        double gflops = r->flop / r->best * 1e-9, pct = 100.0 * gflops / peak, gbps = r->bytes / r->best * 1e-9;
        total_ms += r->best * 1e3;
        total_flop += r->flop;
        if (r->flop > 0)
            printf("%-36s %-52s %8.3f %9.2f %9.1f %5.1f%%\n", r->c->name, r->shape, r->flop * 1e-9, r->best * 1e3,
                   gflops, pct);
        else
            printf("%-36s %-52s %8s %9.2f %6.1f GB/s\n", r->c->name, r->shape, "-", r->best * 1e3, gbps);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->c->name);
        cJSON_AddStringToObject(o, "kind", kind_name(r->c->kind));
        cJSON_AddStringToObject(o, "shape", r->shape);
        cJSON_AddNumberToObject(o, "gflop", r->flop * 1e-9);
        cJSON_AddNumberToObject(o, "ms_best", r->best * 1e3);
        cJSON_AddNumberToObject(o, "ms_median", r->median * 1e3);
        if (r->flop > 0) {
            cJSON_AddNumberToObject(o, "gflops", gflops);
            cJSON_AddNumberToObject(o, "pct_of_sgemm_peak", pct);
        } else {
            cJSON_AddNumberToObject(o, "gbytes_per_s", gbps);
        }
        cJSON_AddNumberToObject(o, "arena_bytes", (double)r->arena);
        cJSON_AddItemToArray(jops, o);
    }
    free(res);
    printf("\nsum of the rows above: %.1f GFLOP in %.1f ms\n", total_flop * 1e-9, total_ms);

    cJSON_AddStringToObject(root, "benchmark", "ops");
    cJSON_AddStringToObject(root, "streamdiff_version", sd_version());
    cJSON_AddStringToObject(root, "backend", "cpu");
    cJSON_AddNumberToObject(root, "threads", threads);
    cJSON_AddNumberToObject(root, "reps", reps);
    cJSON_AddStringToObject(root, "timing", "best (and median) of reps after one warm-up run");
    cJSON_AddStringToObject(root, "flop_convention", "2*M*N*K per matrix product; conv = its im2col GEMM; "
                                                      "attention = QK^T + PV; bias/softmax/norm not counted");
    cJSON *m = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(m, "cpu", cpu);
    cJSON_AddNumberToObject(m, "online_cores", omp_get_num_procs());
    cJSON_AddStringToObject(m, "openblas_config", blas_cfg ? blas_cfg : "");
    cJSON_AddStringToObject(m, "openblas_corename", blas_core ? blas_core : "");
    cJSON_AddStringToObject(m, "OPENBLAS_CORETYPE", env_or("OPENBLAS_CORETYPE", ""));
    cJSON_AddStringToObject(m, "OMP_NUM_THREADS", env_or("OMP_NUM_THREADS", ""));
    cJSON_AddStringToObject(m, "OPENBLAS_L2_SIZE", env_or("OPENBLAS_L2_SIZE", ""));
    cJSON_AddStringToObject(m, "loadavg_before", load0);
    cJSON_AddStringToObject(m, "loadavg_after", load1);
    cJSON *pk = cJSON_AddObjectToObject(root, "sgemm_peak");
    cJSON_AddNumberToObject(pk, "n", peak_n);
    cJSON_AddNumberToObject(pk, "gflop", 2.0 * peak_n * (double)peak_n * peak_n * 1e-9);
    cJSON_AddNumberToObject(pk, "ms_best", peak_ms);
    cJSON_AddNumberToObject(pk, "gflops", peak);
    cJSON_AddNumberToObject(pk, "gflops_before_ops", peak0);
    cJSON_AddNumberToObject(pk, "gflops_after_ops", peak1);
    cJSON_AddItemToObject(root, "ops", jops);
    if (json_path) {
        char *js = cJSON_Print(root);
        sd_status s = js ? sd_write_file(json_path, js, strlen(js)) : sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        free(js);
        if (s != SD_OK) {
            fprintf(stderr, "bench ops: %s\n", sd_last_error());
            rc = 1;
        } else {
            printf("wrote %s\n", json_path);
        }
    }
    cJSON_Delete(root);
    sd_backend_destroy(be);
    return rc;
}

/* ------------------------------------------------------------ dispatch */

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: streamdiff bench <what> [options]\n\n"
               "  ops     op throughput (GFLOP/s, %% of the sgemm peak) for the SD 1.5 UNet shapes\n"
               "  stream  StreamDiffusion fps and latency: img2img, async pipeline, txt2img, and many streams\n"
               "          batched into one UNet call (--modes streams --streams 1,2,4,8)\n\n"
               "Run 'streamdiff bench <what> --help' for its options.\n");
}

int cli_bench(int argc, char **argv)
{
    if (argc < 2) {
        bench_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        bench_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "ops"))
        return bench_ops(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stream"))
        return cli_bench_stream(argc - 1, argv + 1);
    fprintf(stderr, "streamdiff bench: unknown benchmark '%s' (available: ops, stream)\n\n", argv[1]);
    bench_usage(stderr);
    return 2;
}
