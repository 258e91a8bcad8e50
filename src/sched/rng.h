/* Random number generators for latents and scheduler noise.
 *
 * SD_RNG_TORCH reproduces PyTorch's CPU generator bit for bit:
 *   g = torch.Generator("cpu").manual_seed(seed); torch.randn(n, generator=g)  (float32)
 *   torch.rand(n, generator=g)                                                 (float32)
 * including the state carried between successive draws from one generator.
 * How torch does it (ATen/core/MT19937RNGEngine.h, ATen/core/DistributionsHelper.h,
 * ATen/native/cpu/DistributionTemplates.h, avx_mathfun.h):
 *   - engine: MT19937 seeded with the low 32 bits of the 64-bit seed (so 2^32+5
 *     gives the same stream as 5); random() = one 32-bit output, random64() =
 *     (first << 32) | second.
 *   - uniform float32: (random() & (2^24-1)) * 2^-24.
 *   - randn with n >= 16: the whole output is first filled with float uniforms,
 *     then converted in place 16 at a time: for j < 8, u1 = 1 - d[j], u2 = d[j+8],
 *     r = sqrt(-2 log u1), theta = 2 pi u2, d[j] = r cos theta, d[j+8] = r sin theta.
 *     If n % 16 != 0 the last 16 values are redrawn (16 fresh uniforms) and converted
 *     again. The float log/sin/cos depend on torch's CPU kernel dispatch
 *     (torch.backends.cpu.get_cpu_capability()):
 *       * SD_RNG_TORCH         "AVX2" and "AVX512" (every current x86-64 CPU): the
 *                              Cephes-style log256_ps/sincos256_ps polynomials of
 *                              avx_mathfun.h with FMA, theta = float(2 pi) * u2.
 *       * SD_RNG_TORCH_SCALAR  "DEFAULT" (no AVX2, or ATEN_CPU_CAPABILITY=default):
 *                              libm logf/cosf/sinf, theta rounded from double.
 *   - randn with n < 16: element-wise Box-Muller in double from two 53-bit uniforms
 *     (u1, u2 from random64()): r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, returns
 *     r cos theta and caches r sin theta in the generator for the next n < 16 draw
 *     (the cache survives n >= 16 draws; seeding clears it).
 *
 * SD_RNG_FAST is a documented, fast, portable alternative for real-time use (not
 * torch-compatible): Philox4x32-10 (Salmon et al. 2011, as in cuRAND) keyed with the
 * 64-bit seed, counter = 64-bit block index, giving four 32-bit words per block; each
 * word pair (a, b) becomes two normals by Box-Muller in float:
 *   u1 = (a >> 8) * 2^-24 + 2^-25 (in (0,1)), u2 = (b >> 8) * 2^-24,
 *   r = sqrtf(-2 logf u1), out = r cosf(2 pi u2), r sinf(2 pi u2).
 * Each randn call starts at a fresh block and consumes ceil(n/4) blocks, so element k
 * of a draw depends only on (seed, first block, k): a GPU kernel can generate the
 * same values in parallel. sd_rng_uniform uses one word per value: (w >> 8) * 2^-24.
 */
#ifndef SD_RNG_H
#define SD_RNG_H

#include "core/core.h"

typedef enum sd_rng_kind {
    SD_RNG_TORCH = 0,    /* torch CPU generator, AVX2/AVX512 kernels (x86-64 default) */
    SD_RNG_TORCH_SCALAR, /* torch CPU generator, DEFAULT (scalar libm) kernel */
    SD_RNG_FAST,         /* Philox4x32-10 + float Box-Muller (see above) */
    SD_RNG_KIND_COUNT
} sd_rng_kind;

#define SD_MT_N 624

/* Plain struct so it can live on the stack or inside another object. */
typedef struct sd_rng {
    sd_rng_kind kind;
    uint64_t seed;
    uint32_t mt[SD_MT_N]; /* torch kinds: MT19937 state */
    int mt_next, mt_left;
    bool has_cached_normal; /* torch's next_double_normal_sample */
    double cached_normal;
    uint64_t philox_pos; /* fast kind: position in 32-bit words */
} sd_rng;

/* Seeds (or reseeds) a generator; a `kind` out of range falls back to SD_RNG_TORCH. */
void sd_rng_init(sd_rng *r, sd_rng_kind kind, uint64_t seed);
/* Standard normal float32 samples (see above for the exact algorithm per kind). */
void sd_rng_randn(sd_rng *r, float *out, size_t n);
/* Uniform float32 samples in [0, 1) (torch.rand for the torch kinds). */
void sd_rng_uniform(sd_rng *r, float *out, size_t n);

/* Parses "torch", "torch_scalar", "fast"; unknown -> SD_ERR_INVALID_ARGUMENT listing them. */
sd_status sd_rng_kind_from_name(const char *name, sd_rng_kind *out);
const char *sd_rng_kind_name(sd_rng_kind k);
/* The torch kind matching a torch CPU capability string: "DEFAULT" -> SD_RNG_TORCH_SCALAR,
 * anything else ("AVX2", "AVX512", NULL) -> SD_RNG_TORCH. */
sd_rng_kind sd_rng_torch_kind_for_capability(const char *capability);

#endif
