/* AVX2 + FMA (+ F16C, present on every AVX2 CPU) kernels: cpu_kern_impl.h with
 * 8-float vectors. Compiled with a target pragma; sd_cpu_kern_avx2() returns
 * NULL on CPUs without AVX2/FMA. */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define KERN_NAME "avx2"
#define KERN_FN(n) k256_##n
#define VL 8
#define NVMAX 2 /* GEMM panel: 2 vectors = 16 columns (6x16 micro-kernel, 12 accumulators) */

typedef __m256 V;

static const int32_t k_mask_tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline V vzero(void) { return _mm256_setzero_ps(); }
static inline V vset1(float x) { return _mm256_set1_ps(x); }
static inline V vld(const float *p) { return _mm256_loadu_ps(p); }
static inline void vst(float *p, V v) { _mm256_storeu_ps(p, v); }
static inline __m256i vmask(int64_t n) { return _mm256_loadu_si256((const __m256i *)(k_mask_tbl + 8 - n)); }
static inline V vldn(const float *p, int64_t n) { return _mm256_maskload_ps(p, vmask(n)); }
static inline void vstn(float *p, V v, int64_t n) { _mm256_maskstore_ps(p, vmask(n), v); }
static inline V vldr(const float *p, int64_t a, int64_t b)
{
    return _mm256_maskload_ps(p, _mm256_andnot_si256(vmask(a), vmask(b)));
}
static inline V vtail(V fill, V v, int64_t n) { return _mm256_blendv_ps(fill, v, _mm256_castsi256_ps(vmask(n))); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
static inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vfnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
static inline float vhsum(V v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(V v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline V vabs(V x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
static inline V vcopysign(V mag, V sgn)
{
    const V sm = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sm, mag), _mm256_and_ps(sm, sgn));
}
static inline V vld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline V vld_bf16(const uint16_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
typedef struct {
    __m256d lo, hi;
} VD;
static inline VD vd_zero(void)
{
    VD d = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    return d;
}
static inline VD vd_add(VD d, V v)
{
    d.lo = _mm256_add_pd(d.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    d.hi = _mm256_add_pd(d.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return d;
}
static inline VD vd_addsq(VD d, V v)
{
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    d.lo = _mm256_fmadd_pd(a, a, d.lo);
    d.hi = _mm256_fmadd_pd(b, b, d.hi);
    return d;
}
static inline double vd_sum(VD d)
{
    __m256d s = _mm256_add_pd(d.lo, d.hi);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    t = _mm_add_sd(t, _mm_unpackhi_pd(t, t));
    return _mm_cvtsd_f64(t);
}

/* exp(x), about 1 ulp (Cephes polynomial). 2^n is applied as 2^(n/2) * 2^(n - n/2) so that both
 * factors stay normal over the whole range (denormal results come out right); x above the
 * largest finite result gives inf, NaN stays NaN. */
static inline V vexp(V x)
{
    const float hi = 88.72283935546875f;
    V xc = vmin(vset1(hi), vmax(vset1(-120.0f), x));
    V n = _mm256_round_ps(vmul(xc, vset1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = vfnma(n, vset1(0.693359375f), xc);
    r = vfnma(n, vset1(-2.12194440e-4f), r);
    V p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    V s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    V s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    V res = vmul(vmul(p, s1), s2);
    return _mm256_blendv_ps(res, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, vset1(hi), _CMP_GT_OQ));
}

#include "backend/cpu/cpu_kern_avx_common.h"

static bool kern_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define KERN_GETTER sd_cpu_kern_avx2
#include "backend/cpu/cpu_kern_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not x86-64 */

const sd_cpu_kern *sd_cpu_kern_avx2(void) { return NULL; }

#endif
