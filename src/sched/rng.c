/* Random generators: torch-compatible MT19937 paths and a fast Philox path.
 * See rng.h for the exact algorithms. Bit-exactness notes:
 *   - This file must be compiled without floating-point contraction (the
 *     project builds with -std=c17, where GCC's default is -ffp-contract=off);
 *     every fused multiply-add torch performs is spelled out with fmaf().
 *   - The AVX2 kernel of torch uses Cephes-style polynomials (avx_mathfun.h,
 *     derived from Julien Pommier's sse_mathfun). They are re-expressed here in
 *     scalar form with the multiply-adds GCC fuses in torch's build (verified bit
 *     for bit against torch 2.x with ATEN_CPU_CAPABILITY=avx2 and avx512, which
 *     take the same path). */
#include "sched/rng.h"

#include <math.h>
#include <string.h>

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

static void mt_seed(sd_rng *r, uint64_t seed)
{
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (int j = 1; j < SD_MT_N; j++)
        r->mt[j] = 1812433253u * (r->mt[j - 1] ^ (r->mt[j - 1] >> 30)) + (uint32_t)j;
    r->mt_left = 1;
    r->mt_next = 0;
}

static void mt_next_state(sd_rng *r)
{
    uint32_t *s = r->mt;
    r->mt_left = SD_MT_N;
    r->mt_next = 0;
    int k = 0;
    for (; k < SD_MT_N - MT_M; k++) {
        uint32_t y = (s[k] & MT_UPPER) | (s[k + 1] & MT_LOWER);
        s[k] = s[k + MT_M] ^ (y >> 1) ^ ((s[k + 1] & 1u) ? MT_MATRIX_A : 0u);
    }
    for (; k < SD_MT_N - 1; k++) {
        uint32_t y = (s[k] & MT_UPPER) | (s[k + 1] & MT_LOWER);
        s[k] = s[k + MT_M - SD_MT_N] ^ (y >> 1) ^ ((s[k + 1] & 1u) ? MT_MATRIX_A : 0u);
    }
    uint32_t y = (s[SD_MT_N - 1] & MT_UPPER) | (s[0] & MT_LOWER);
    s[SD_MT_N - 1] = s[MT_M - 1] ^ (y >> 1) ^ ((s[0] & 1u) ? MT_MATRIX_A : 0u);
}

static uint32_t mt_u32(sd_rng *r)
{
    if (--r->mt_left == 0)
        mt_next_state(r);
    uint32_t y = r->mt[r->mt_next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* torch uniform_real_distribution<float>(0, 1) */
static float mt_uniform_f32(sd_rng *r)
{
    return (float)(mt_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* torch uniform_real_distribution<double>(0, 1): random64() = (a << 32) | b */
static double mt_uniform_f64(sd_rng *r)
{
    uint64_t a = mt_u32(r);
    uint64_t b = mt_u32(r);
    uint64_t v = (a << 32) | b;
    return (double)(v & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------ Philox4x32-10 */

static void philox4x32_10(uint64_t counter, uint64_t key, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static uint32_t philox_word(sd_rng *r)
{
    uint32_t w[4];
    philox4x32_10(r->philox_pos >> 2, r->seed, w);
    uint32_t v = w[r->philox_pos & 3];
    r->philox_pos++;
    return v;
}

/* ------------------------------------------------------------ float math of torch's kernels */

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* log256_ps of ATen/native/cpu/avx_mathfun.h, one lane. */
static float cephes_logf(float x)
{
    bool invalid = !(x > 0.0f);
    if (x < u2f(0x00800000u))
        x = u2f(0x00800000u);
    int32_t imm0 = (int32_t)(f2u(x) >> 23);
    x = u2f((f2u(x) & ~0x7f800000u) | f2u(0.5f));
    imm0 -= 0x7f;
    float e = (float)imm0;
    e = e + 1.0f;
    bool mask = x < 0.707106781186547524f;
    float tmp = mask ? x : 0.0f;
    x = x - 1.0f;
    e = e - (mask ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    float eq1 = e * -2.12194440e-4f;
    y = fmaf(y, z, eq1);
    y = fmaf(-z, 0.5f, y);
    float xy = x + y;
    x = fmaf(e, 0.693359375f, xy);
    return invalid ? NAN : x;
}

/* sincos256_ps of avx_mathfun.h, one lane. */
static void cephes_sincosf(float xin, float *s, float *c)
{
    uint32_t sign_sin = f2u(xin) & 0x80000000u;
    float x = fabsf(xin);
    float y = x * 1.27323954473516f;
    int32_t j = (int32_t)y;
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    bool poly = (j & 2) == 0;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    uint32_t sign_cos = (~(uint32_t)(j - 2) & 4u) << 29;
    sign_sin ^= swap_sin;
    float z = x * x;
    float yc = 2.443315711809948E-005f;
    yc = fmaf(yc, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    float hz = z * 0.5f;
    yc = fmaf(yc, z, -hz);
    yc = yc + 1.0f;
    float ys = -1.9515295891E-4f;
    ys = fmaf(ys, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float vs = poly ? ys : yc, vc = poly ? yc : ys;
    *s = u2f(f2u(vs) ^ sign_sin);
    *c = u2f(f2u(vc) ^ sign_cos);
}

static void box_muller16_avx2(float *d)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float lg = cephes_logf(u1);
        float radius = sqrtf(-2.0f * lg);
        float theta = two_pi * u2;
        float sn, cs;
        cephes_sincosf(theta, &sn, &cs);
        float n1 = radius * cs;
        float n2 = radius * sn;
        d[j] = n1;
        d[j + 8] = n2;
    }
}

static void box_muller16_scalar(float *d)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float lg = logf(u1);
        float radius = sqrtf(-2.0f * lg);
        float theta = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        float n1 = radius * cosf(theta);
        float n2 = radius * sinf(theta);
        d[j] = n1;
        d[j + 8] = n2;
    }
}

/* at::normal_distribution<double>: one sample, caching the second. */
static double mt_normal_f64(sd_rng *r)
{
    if (r->has_cached_normal) {
        r->has_cached_normal = false;
        return r->cached_normal;
    }
    double u1 = mt_uniform_f64(r);
    double u2 = mt_uniform_f64(r);
    double radius = sqrt(-2.0 * log1p(-u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    r->cached_normal = radius * sin(theta);
    r->has_cached_normal = true;
    return radius * cos(theta);
}

/* ------------------------------------------------------------ public */

void sd_rng_init(sd_rng *r, sd_rng_kind kind, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    if ((int)kind < 0 || kind >= SD_RNG_KIND_COUNT)
        kind = SD_RNG_TORCH;
    r->kind = kind;
    r->seed = seed;
    mt_seed(r, seed);
}

void sd_rng_uniform(sd_rng *r, float *out, size_t n)
{
    if (r->kind == SD_RNG_FAST) {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)(philox_word(r) >> 8) * (1.0f / 16777216.0f);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = mt_uniform_f32(r);
}

static void fast_randn(sd_rng *r, float *out, size_t n)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    size_t i = 0;
    /* keep blocks aligned: position advances in whole 4-word blocks */
    if (r->philox_pos & 3)
        r->philox_pos = (r->philox_pos | 3) + 1;
    while (i < n) {
        uint32_t w[4];
        philox4x32_10(r->philox_pos >> 2, r->seed, w);
        r->philox_pos += 4;
        for (int p = 0; p < 2 && i < n; p++) {
            float u1 = (float)(w[2 * p] >> 8) * (1.0f / 16777216.0f) + (1.0f / 33554432.0f);
            float u2 = (float)(w[2 * p + 1] >> 8) * (1.0f / 16777216.0f);
            float radius = sqrtf(-2.0f * logf(u1));
            float theta = two_pi * u2;
            out[i++] = radius * cosf(theta);
            if (i < n)
                out[i++] = radius * sinf(theta);
        }
    }
}

void sd_rng_randn(sd_rng *r, float *out, size_t n)
{
    if (n == 0)
        return;
    if (r->kind == SD_RNG_FAST) {
        fast_randn(r, out, n);
        return;
    }
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)mt_normal_f64(r);
        return;
    }
    void (*fill16)(float *) = r->kind == SD_RNG_TORCH_SCALAR ? box_muller16_scalar : box_muller16_avx2;
    for (size_t i = 0; i < n; i++)
        out[i] = mt_uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16)
        fill16(out + i);
    if (n % 16 != 0) {
        float *d = out + n - 16;
        for (int i = 0; i < 16; i++)
            d[i] = mt_uniform_f32(r);
        fill16(d);
    }
}

static const char *const rng_names[SD_RNG_KIND_COUNT] = {"torch", "torch_scalar", "fast"};

const char *sd_rng_kind_name(sd_rng_kind k)
{
    return ((int)k >= 0 && k < SD_RNG_KIND_COUNT) ? rng_names[k] : "?";
}

sd_status sd_rng_kind_from_name(const char *name, sd_rng_kind *out)
{
    if (!name || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "rng: missing generator name");
    for (int k = 0; k < SD_RNG_KIND_COUNT; k++) {
        if (strcmp(name, rng_names[k]) == 0) {
            *out = (sd_rng_kind)k;
            return SD_OK;
        }
    }
    return sd_fail(SD_ERR_INVALID_ARGUMENT, "rng: unknown generator '%s' (valid: torch, torch_scalar, fast)", name);
}

sd_rng_kind sd_rng_torch_kind_for_capability(const char *capability)
{
    if (capability && (strcmp(capability, "DEFAULT") == 0 || strcmp(capability, "default") == 0))
        return SD_RNG_TORCH_SCALAR;
    return SD_RNG_TORCH;
}
