/* AVX-512 (F, BW, VL, DQ) kernels: cpu_kern_impl.h with 16-float vectors.
 * Compiled with a target pragma, so the rest of the library needs no -mavx512*;
 * sd_cpu_kern_avx512() returns NULL on CPUs without these extensions. */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#define KERN_NAME "avx512"
#define KERN_FN(n) k512_##n
#define VL 16
#define NVMAX 4 /* GEMM panel: 4 vectors = 64 columns */

typedef __m512 V;

static inline V vzero(void) { return _mm512_setzero_ps(); }
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vld(const float *p) { return _mm512_loadu_ps(p); }
static inline void vst(float *p, V v) { _mm512_storeu_ps(p, v); }
static inline __mmask16 vmask(int64_t n) { return (__mmask16)((1u << n) - 1u); } /* n in [0, 16] */
static inline V vldn(const float *p, int64_t n) { return _mm512_maskz_loadu_ps(vmask(n), p); }
static inline void vstn(float *p, V v, int64_t n) { _mm512_mask_storeu_ps(p, vmask(n), v); }
/* lanes [a, b) of p, zero elsewhere (0 <= a <= b <= 16); the other lanes are not read */
static inline V vldr(const float *p, int64_t a, int64_t b)
{
    return _mm512_maskz_loadu_ps((__mmask16)(vmask(b) & ~vmask(a)), p);
}
/* lanes < n from v, the others from fill */
static inline V vtail(V fill, V v, int64_t n) { return _mm512_mask_blend_ps(vmask(n), fill, v); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
/* max/min return the second operand when either is NaN: vmax(c, x) keeps a NaN x */
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }   /* a*b + c */
static inline V vfnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
static inline float vhsum(V v) { return _mm512_reduce_add_ps(v); }
static inline float vhmax(V v) { return _mm512_reduce_max_ps(v); }
static inline V vabs(V x) { return _mm512_abs_ps(x); }
/* |mag| with the sign of sgn */
static inline V vcopysign(V mag, V sgn)
{
    const V sm = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    return _mm512_or_ps(_mm512_andnot_ps(sm, mag), _mm512_and_ps(sm, sgn));
}
/* VL F16 / BF16 values as floats */
static inline V vld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline V vld_bf16(const uint16_t *p)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
/* double-precision accumulation of the VL floats of v into two accumulators */
typedef struct {
    __m512d lo, hi;
} VD;
static inline VD vd_zero(void)
{
    VD d = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return d;
}
static inline VD vd_add(VD d, V v)
{
    d.lo = _mm512_add_pd(d.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    d.hi = _mm512_add_pd(d.hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    return d;
}
static inline VD vd_addsq(VD d, V v)
{
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    d.lo = _mm512_fmadd_pd(a, a, d.lo);
    d.hi = _mm512_fmadd_pd(b, b, d.hi);
    return d;
}
static inline double vd_sum(VD d) { return _mm512_reduce_add_pd(_mm512_add_pd(d.lo, d.hi)); }

#include "backend/cpu/cpu_kern_vexp512.h"

#include "backend/cpu/cpu_kern_avx_common.h"

static bool kern_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define KERN_GETTER sd_cpu_kern_avx512
#include "backend/cpu/cpu_kern_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not x86-64 */

const sd_cpu_kern *sd_cpu_kern_avx512(void) { return NULL; }

#endif
