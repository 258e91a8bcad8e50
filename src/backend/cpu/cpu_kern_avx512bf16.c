/* bf16 kernels on AVX512-BF16 (VDPBF16PS: AMD Zen 4/5, Intel Cooper Lake and later): the same packed
 * tiles as the AMX kernels (cpu_kern_bf16_impl.h), the 32x32 micro block computed in 8-row groups of
 * 16 accumulators. This file alone is compiled with -mavx512bf16 (CMakeLists.txt); it only runs
 * after sd_cpu_bf16_kern_select() (cpu_backend.c) found AVX512-BF16 in CPUID. */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX512BF16__)

#include <immintrin.h>
#include <string.h>

#define BK_NAME "avx512bf16"
#define BK_FN(n) kbf16_##n
#define BK_GETTER sd_cpu_bf16_kern_avx512bf16

static void bk_begin(void) {}
static void bk_end(void) {}

/* rows [r0, r0+8) of the 32x32 block: A tile a (16 rows), its rows from ro */
static inline void ukr8(const uint16_t *a, int ro, const uint16_t *B, const uint16_t *B1, int64_t nkb, float *c,
                        int64_t ldc, int accumulate)
{
    __m512 acc[8][2];
    for (int i = 0; i < 8; i++) {
        acc[i][0] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int64_t kb = 0; kb < nkb; kb++) {
        const uint16_t *at = a + kb * 512 + ro * 32;
        const uint16_t *b0 = B + kb * 512, *b1 = B1 + kb * 512;
        for (int p = 0; p < 16; p++) {
            __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + p * 32), v1 = (__m512bh)_mm512_loadu_si512(b1 + p * 32);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                int pair;
                memcpy(&pair, at + i * 32 + 2 * p, sizeof pair);
                __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, v0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, v1);
            }
        }
    }
    for (int i = 0; i < 8; i++) {
        _mm512_storeu_ps(c + i * ldc, acc[i][0]);
        _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
    }
}

static void bk_ukr(const uint16_t *A, const uint16_t *A1, const uint16_t *B, const uint16_t *B1, int64_t nkb,
                   float *c, int64_t ldc, int acc)
{
    ukr8(A, 0, B, B1, nkb, c, ldc, acc);
    ukr8(A, 8, B, B1, nkb, c + 8 * ldc, ldc, acc);
    ukr8(A1, 0, B, B1, nkb, c + 16 * ldc, ldc, acc);
    ukr8(A1, 8, B, B1, nkb, c + 24 * ldc, ldc, acc);
}

/* the register-only peak: 16 independent VDPBF16PS per round (16 lanes x 2 multiply-adds each) */
static double bk_peak(int64_t iters)
{
    __m512 acc[16];
    for (int i = 0; i < 16; i++)
        acc[i] = _mm512_setzero_ps();
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3c003c00); /* 1.0 and 2^-7: no denormals */
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    float s = 0;
    for (int i = 0; i < 16; i++)
        s += _mm512_reduce_add_ps(acc[i]);
    __asm__ volatile("" ::"x"(s));
    return (double)iters * 16 * 16 * 2;
}

#include "backend/cpu/cpu_kern_bf16_impl.h"

#else

const sd_cpu_bf16_kern *sd_cpu_bf16_kern_avx512bf16(void) { return NULL; }

#endif
