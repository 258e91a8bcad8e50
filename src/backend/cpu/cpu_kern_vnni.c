/* int8 kernels on AVX512-VNNI (VPDPBUSD, u8 x s8 -> s32: Intel Cascade Lake and later, AMD Zen 4/5):
 * the same tiles as the AMX-INT8 kernels (cpu_kern_int8_impl.h), A stored as u8 (q + 128) and the
 * epilogue subtracting 128 * the column sums of B; the 32x32 block in 8-row groups of 16 int32
 * accumulators. This file alone is compiled with -mavx512vnni (CMakeLists.txt); it only runs after
 * sd_cpu_int8_kern_select() (cpu_isa.c) found AVX512-VNNI in CPUID. */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)

#include <immintrin.h>
#include <string.h>

#define IK_NAME "avx512vnni"
#define IK_FN(n) kvnni_##n
#define IK_GETTER sd_cpu_int8_kern_vnni
#define IK_SHIFT 1

static void ik_begin(void) {}
static void ik_end(void) {}

/* rows 0-7 of A (row i at a + i * lda; depth block (t, cb) at toff[t] + cb * astep) against the two B tile
 * columns into c (row stride 32) */
static inline void ukr8(const int8_t *a, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb, int64_t astep,
                        const int8_t *B, const int8_t *B1, int32_t *c)
{
    __m512i acc[8][2];
    for (int i = 0; i < 8; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    for (int64_t t = 0; t < ntap; t++)
        for (int64_t cb = 0; cb < ncb; cb++, B += 1024, B1 += 1024) {
            const int8_t *at = a + toff[t] + cb * astep;
            for (int p = 0; p < 16; p++) {
                __m512i v0 = _mm512_loadu_si512(B + p * 64), v1 = _mm512_loadu_si512(B1 + p * 64);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    int quad;
                    memcpy(&quad, at + i * lda + 4 * p, sizeof quad);
                    __m512i av = _mm512_set1_epi32(quad);
                    acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, v0);
                    acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, v1);
                }
            }
        }
    for (int i = 0; i < 8; i++) {
        _mm512_storeu_si512(c + i * 32, acc[i][0]);
        _mm512_storeu_si512(c + i * 32 + 16, acc[i][1]);
    }
}

/* see cpu_kern_int8_impl.h */
static void ik_ukr_x(const int8_t *A, const int8_t *A1, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb,
                     int64_t astep, const int8_t *B, const int8_t *B1, int32_t *c)
{
    ukr8(A, lda, toff, ntap, ncb, astep, B, B1, c);
    ukr8(A + 8 * lda, lda, toff, ntap, ncb, astep, B, B1, c + 8 * 32);
    ukr8(A1, lda, toff, ntap, ncb, astep, B, B1, c + 16 * 32);
    ukr8(A1 + 8 * lda, lda, toff, ntap, ncb, astep, B, B1, c + 24 * 32);
}

/* A as u8 (the direct convolution's image): what VPDPBUSD reads anyway */
static void ik_ukr_xu(const uint8_t *A, const uint8_t *A1, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb,
                      int64_t astep, const int8_t *B, const int8_t *B1, int32_t *c)
{
    ik_ukr_x((const int8_t *)A, (const int8_t *)A1, lda, toff, ntap, ncb, astep, B, B1, c);
}

/* the register-only peak: 16 independent VPDPBUSD per round (16 lanes x 4 multiply-adds each) */
static double ik_peak(int64_t iters)
{
    __m512i acc[16];
    for (int i = 0; i < 16; i++)
        acc[i] = _mm512_setzero_si512();
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    int s = 0;
    for (int i = 0; i < 16; i++)
        s += _mm512_reduce_add_epi32(acc[i]);
    __asm__ volatile("" ::"r"(s));
    return (double)iters * 16 * 16 * 4;
}

#include "backend/cpu/cpu_kern_int8_impl.h"

#else

const sd_cpu_int8_kern *sd_cpu_int8_kern_vnni(void) { return NULL; }

#endif
