/* bf16 kernels on AVX512-BF16 (VDPBF16PS: AMD Zen 4/5, Intel Cooper Lake and later): the same packed
 * tiles as the AMX kernels (cpu_kern_bf16_impl.h), the 32x32 micro block computed in 8-row groups of
 * 16 accumulators. Measured on registers (bench_cpu --part bf16peak), an Intel core issues VDPBF16PS
 * about once per 2 cycles on its FMA ports: half the fp32 FMA's FLOPs, so this level is a proxy there
 * (docs/precision.md) and precision auto keeps fp32 (sd_backend_cpu_auto_bf16); ukr8 below runs at
 * that rate (~95 % of it in a large 3x3 conv). This file alone is compiled with -mavx512bf16
 * (CMakeLists.txt); it only runs after sd_cpu_bf16_kern_select() (cpu_backend.c) found AVX512-BF16. */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX512BF16__)

#include <immintrin.h>
#include <string.h>

#define BK_NAME "avx512bf16"
#define BK_FN(n) kbf16_##n
#define BK_GETTER sd_cpu_bf16_kern_avx512bf16

static void bk_begin(void) {}
static void bk_end(void) {}

/* 8 rows of a block: c[i][0..32) (+)= row i of A times the 32 B columns, over ntap x ncb depth blocks of 32;
 * row i of depth block (t, cb) at r[i] + toff[t] + cb * astep (each row its own address: a broadcast per
 * pair, no tile shape to keep) */
static inline void ukr8(const uint16_t *const r[8], const int64_t *toff, int64_t ntap, int64_t ncb, int64_t astep,
                        const uint16_t *B, const uint16_t *B1, float *c, int64_t ldc, int accumulate)
{
    __m512 acc[8][2];
    for (int i = 0; i < 8; i++) {
        acc[i][0] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int64_t t = 0; t < ntap; t++)
        for (int64_t cb = 0; cb < ncb; cb++, B += 512, B1 += 512) {
            int64_t o = toff[t] + cb * astep;
            const uint16_t *at[8];
            for (int i = 0; i < 8; i++)
                at[i] = r[i] + o;
            for (int p = 0; p < 16; p++) {
                __m512bh v0 = (__m512bh)_mm512_loadu_si512(B + p * 32), v1 = (__m512bh)_mm512_loadu_si512(B1 + p * 32);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    int pair;
                    memcpy(&pair, at[i] + 2 * p, sizeof pair);
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

/* see cpu_kern_bf16_impl.h: A rows lda bf16 apart, depth block (t, cb) of A at toff[t] + cb * astep */
static void bk_ukr_x(const uint16_t *A, const uint16_t *A1, int64_t lda, const int64_t *toff, int64_t ntap,
                     int64_t ncb, int64_t astep, const uint16_t *B, const uint16_t *B1, float *c, int64_t ldc, int acc)
{
    for (int g = 0; g < 4; g++) {
        const uint16_t *r[8];
        for (int i = 0; i < 8; i++)
            r[i] = (g < 2 ? A : A1) + ((g % 2) * 8 + i) * lda;
        ukr8(r, toff, ntap, ncb, astep, B, B1, c + g * 8 * ldc, ldc, acc);
    }
}

/* BK_ROW_PTRS (cpu_kern_bf16_dconv.h): rows [0, nr) of the 32x32 block c = A B, row i of A at rows[i] (32
 * entries, those past nr repeat a valid row), in groups of 8: the groups past nr are not computed */
#define BK_ROW_PTRS 1
static void bk_ukr_rows(const uint16_t *const rows[32], int64_t nr, const int64_t *toff, int64_t ntap, int64_t ncb,
                        int64_t astep, const uint16_t *B, const uint16_t *B1, float *c, int64_t ldc)
{
    for (int64_t g = 0; g * 8 < nr; g++)
        ukr8(rows + g * 8, toff, ntap, ncb, astep, B, B1, c + g * 8 * ldc, ldc, 0);
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
