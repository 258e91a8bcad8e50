/* CPU backend: its kernel levels (amx > avx512bf16 > avx512vnni > avx512 > avx2 > blas), creating a backend
 * at one of them, and the precision switches (bf16, int8, auto's rule). The ops are in cpu_backend.c and
 * cpu_elementwise.c. */
#include "backend/cpu/cpu_backend_impl.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- kernel levels
 * amx > avx512bf16 > avx512vnni > avx512 > avx2 > blas: each level is the fp32 kernel set plus, for
 * the top three, int8 kernels and, for the top two, a bf16 kernel set (cpu_isa.c checks the CPU).
 * SD_CPU_ISA (or the isa argument) picks a level the CPU has. */

static const char *const k_levels[] = {"blas", "avx2", "avx512", "avx512vnni", "avx512bf16", "amx"};
enum { N_LEVELS = 6 };

static int level_index(const char *isa)
{
    for (int i = 0; i < N_LEVELS; i++)
        if (!strcmp(isa, k_levels[i]))
            return i;
    return -1;
}

/* the kernels of level i when this CPU has them (false: it lacks that level) */
static bool level_kernels(int i, const sd_cpu_kern **k, const sd_cpu_bf16_kern **bk, const sd_cpu_int8_kern **ik)
{
    *k = i >= 2 ? sd_cpu_kern_avx512() : i == 1 ? sd_cpu_kern_avx2() : NULL;
    *bk = i >= 4 ? sd_cpu_bf16_kern_select(k_levels[i]) : NULL;
    *ik = i >= 3 ? sd_cpu_int8_kern_select(k_levels[i]) : NULL;
    return i == 0 || (*k && (i < 3 || (i == 3 ? *ik != NULL : *bk != NULL)));
}

sd_status sd_backend_cpu_create_isa(int n_threads, const char *isa, sd_backend **out)
{
    *out = NULL;
    const sd_cpu_kern *k = NULL;
    const sd_cpu_bf16_kern *bk = NULL;
    const sd_cpu_int8_kern *ik = NULL;
    if (isa && strcmp(isa, "auto")) {
        int li = level_index(isa);
        if (li < 0)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "cpu backend: unknown kernel set '%s' (use amx, avx512bf16, avx512vnni, avx512, avx2 or blas)", isa);
        if (!level_kernels(li, &k, &bk, &ik))
            return sd_fail(SD_ERR_UNSUPPORTED, "cpu backend: this CPU does not support the %s kernels", isa);
    } else {
        int best = N_LEVELS - 1;
        while (best > 0 && !level_kernels(best, &k, &bk, &ik))
            best--;
        /* SD_CPU_ISA may lower the choice (benchmarks, tests); it never raises it past the CPU */
        const char *env = getenv("SD_CPU_ISA");
        if (env && *env && strcmp(env, "auto")) {
            int e = level_index(env);
            if (e < 0)
                fprintf(stderr, "streamdiff: warning: SD_CPU_ISA=%s is not amx, avx512bf16, avx512vnni, avx512, avx2, "
                                "blas or auto; ignored\n", env);
            else if (e < best)
                for (best = e; best > 0 && !level_kernels(best, &k, &bk, &ik);)
                    best--;
        }
        level_kernels(best, &k, &bk, &ik);
    }
    sd_backend *be = sd_calloc(1, sizeof *be);
    cpu_impl *im = sd_calloc(1, sizeof *im);
    if (!be || !im) {
        free(be);
        free(im);
        return SD_ERR_OUT_OF_MEMORY;
    }
    be->ops = &sd_cpu_ops;
    be->act_dtype = SD_F32;
    be->host_memory = true;
    be->n_threads = n_threads > 0 ? n_threads : omp_get_max_threads();
    be->impl = im;
    pthread_mutex_init(&im->ws_lock, NULL);
    im->k = k;
    im->bk = bk;
    im->ik = ik;
    if (k) {
        im->ws_floats = k->gemm_ws(be->n_threads);
        if (bk && bk->gemm_ws(be->n_threads) > im->ws_floats)
            im->ws_floats = bk->gemm_ws(be->n_threads);
        if (ik && (ik->ws(be->n_threads) + 3) / 4 > im->ws_floats)
            im->ws_floats = (ik->ws(be->n_threads) + 3) / 4;
        im->ws = sd_aligned_alloc(im->ws_floats * sizeof(float));
        if (!im->ws) {
            sd_cpu_destroy(be);
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate the %zu KiB GEMM workspace",
                           im->ws_floats * sizeof(float) >> 10);
        }
    }
    *out = be;
    return SD_OK;
}

sd_status sd_backend_cpu_create(int n_threads, sd_backend **out) { return sd_backend_cpu_create_isa(n_threads, NULL, out); }

const char *sd_backend_cpu_isa(const sd_backend *be)
{
    const sd_cpu_kern *k = be && be->ops == &sd_cpu_ops ? kern(be) : NULL;
    return k ? k->name : "blas";
}

const char *sd_backend_cpu_bf16_isa(const sd_backend *be)
{
    const cpu_impl *im = be && be->ops == &sd_cpu_ops ? be->impl : NULL;
    return im && im->bk ? im->bk->name : NULL;
}

void sd_backend_cpu_set_bf16(sd_backend *be, bool on)
{
    if (be && be->ops == &sd_cpu_ops) {
        ((cpu_impl *)be->impl)->bf16 = on;
        be->bf16 = on;
    }
}

/* FLOPs per ms of one kernel table's peak function, best of 3 short runs */
static double peak_rate(double (*peak)(int64_t))
{
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = sd_time_now(), macs = peak(20000), dt = sd_time_now() - t0;
        if (dt > 0 && macs / dt > best)
            best = macs / dt;
    }
    return best;
}

static bool g_vdp_pays;
static pthread_once_t g_vdp_once = PTHREAD_ONCE_INIT;

static void vdp_measure(void)
{
    const sd_cpu_bf16_kern *b = sd_cpu_bf16_kern_select("avx512bf16");
    const sd_cpu_kern *f = sd_cpu_kern_avx512();
    if (!b || !f)
        return;
    peak_rate(f->peak); /* warm-up: the core's AVX-512 clock */
    double bf = peak_rate(b->peak), fp = peak_rate(f->peak);
    g_vdp_pays = bf >= fp;
}

bool sd_backend_cpu_auto_bf16(const sd_backend *be)
{
    const char *bk = sd_backend_cpu_bf16_isa(be);
    if (!bk)
        return false;
    if (strcmp(bk, "avx512bf16"))
        return true; /* AMX */
    pthread_once(&g_vdp_once, vdp_measure);
    return g_vdp_pays;
}

const char *sd_backend_cpu_int8_isa(const sd_backend *be)
{
    const cpu_impl *im = be && be->ops == &sd_cpu_ops ? be->impl : NULL;
    return im && im->ik ? im->ik->name : NULL;
}

void sd_backend_cpu_set_int8(sd_backend *be, bool on)
{
    if (!be || be->ops != &sd_cpu_ops)
        return;
    cpu_impl *im = be->impl;
    sd_backend_cpu_set_bf16(be, on);
    be->int8 = on;
    im->int8 = on && im->ik;
}
