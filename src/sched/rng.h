/* Random number generators for latents and scheduler noise.
 *
 * SD_RNG_TORCH reproduces PyTorch's CPU generator bit for bit:
 *   g = torch.Generator("cpu").manual_seed(seed); torch.randn(n, generator=g)  (float32)
 *   torch.rand(n, generator=g)                                                 (float32)
 * including the state carried between successive draws from one generator.
 * How torch does it (ATen/core/MT19937RNGEngine.h, ATen/core/DistributionsHelper.h,
 * ATen/native/cpu/DistributionTemplates.h):
 *   - engine: MT19937 seeded with the low 32 bits of the 64-bit seed (so 2^32+5
 *     gives the same stream as 5); random() = one 32-bit output, random64() =
 *     (first << 32) | second.
 *   - uniform float32: (random() & (2^24-1)) * 2^-24.
 *   - randn with n >= 16: the whole output is first filled with float uniforms,
 *     then converted in place 16 at a time: for j < 8, u1 = 1 - d[j], u2 = d[j+8],
 *     r = sqrt(-2 log u1), theta = 2 pi u2, d[j] = r cos theta, d[j+8] = r sin theta.
 *     If n % 16 != 0 the last 16 values are redrawn (16 fresh uniforms) and converted
 *     again. Which float log/sin/cos is used depends on torch's CPU dispatch:
 *       * SD_RNG_TORCH       the scalar kernel (libm logf/cosf/sinf, theta rounded
 *                            from double): CPUs where torch reports "AVX512" or
 *                            "DEFAULT" capability (torch.backends.cpu.get_cpu_capability()).
 *       * SD_RNG_TORCH_AVX2  the AVX2 kernel (Cephes-style log256_ps/sincos256_ps
 *                            polynomials with FMA): CPUs where torch reports "AVX2"
 *                            (or ATEN_CPU_CAPABILITY=avx2).
 *   - randn with n < 16: element-wise Box-Muller in double from two 53-bit uniforms
 *     (u1, u2 from random64()): r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, returns
 *     r cos theta and caches r sin theta in the generator for the next n < 16 draw
 *     (the cache survives n >= 16 draws, it is cleared by seeding).
 *
 * SD_RNG_FAST is a documented, fast, portable alternative for real-time use (not
 * torch-compatible): Philox4x32-10 (Salmon et al. 2011, the generator of cuRAND
 * and torch CUDA) keyed with the 64-bit seed, counter = 64-bit block index, giving
 * four 32-bit words per block; every pair of words (a, b) becomes two normals by
 * Box-Muller in float: u1 = (a >> 8) * 2^-24 + 2^-25 (in (0,1)), u2 = (b >> 8) * 2^-24,
 * r = sqrtf(-2 logf u1), out = r cosf(2 pi u2), r sinf(2 pi u2). Output element k
 * depends only on (seed, k + position), so a GPU kernel can generate the same
 * stream in parallel; successive draws continue the stream (the position advances
 * by n rounded up to a multiple of 4).
 */
#ifndef SD_RNG_H
#define SD_RNG_H

#include "core/core.h"

typedef enum sd_rng_kind {
    SD_RNG_TORCH = 0,  /* torch CPU generator, scalar (AVX512/default) kernel */
    SD_RNG_TORCH_AVX2, /* torch CPU generator, AVX2 kernel */
    SD_RNG_FAST,       /* Philox4x32-10 + float Box-Muller (see above) */
    SD_RNG_KIND_COUNT
} sd_rng_kind;

#define SD_MT_N 624

typedef struct sd_rng {
    sd_rng_kind kind;
    uint64_t seed;
    /* torch: MT19937 state */
    uint32_t mt[SD_MT_N];
    int mt_next, mt_left;
    bool has_cached_normal; /* torch's next_double_normal_sample */
    double cached_normal;
    /* fast: Philox position (in 32-bit words) */
    uint64_t philox_pos;
} sd_rng;

/* Seeds (or reseeds) a generator; `kind` out of range falls back to SD_RNG_TORCH. */
void sd_rng_init(sd_rng *r, sd_rng_kind kind, uint64_t seed);
/* Standard normal float32 samples (see above for the exact algorithm per kind). */
void sd_rng_randn(sd_rng *r, float *out, size_t n);
/* Uniform float32 samples in [0, 1) (torch.rand for the torch kinds). */
void sd_rng_uniform(sd_rng *r, float *out, size_t n);
/* One raw 32-bit engine output (MT19937 for the torch kinds). */
uint32_t sd_rng_u32(sd_rng *r);

/* Parses "torch", "torch_avx2", "fast"; unknown -> SD_ERR_INVALID_ARGUMENT. */
sd_status sd_rng_kind_from_name(const char *name, sd_rng_kind *out);
const char *sd_rng_kind_name(sd_rng_kind k);
/* The torch kind that matches a torch CPU capability string ("AVX2" -> SD_RNG_TORCH_AVX2,
 * anything else -> SD_RNG_TORCH). */
sd_rng_kind sd_rng_torch_kind_for_capability(const char *capability);

#endif
