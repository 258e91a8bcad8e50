/* bf16 kernels on Intel AMX tiles (TDPBF16PS): cpu_kern_bf16_impl.h with a 2x2-tile micro-kernel
 * (A tiles loaded with their row stride: packed tiles or straight from a channels-last image).
 * This file alone is compiled with -mamx-tile -mamx-bf16 -mavx512* (CMakeLists.txt); nothing here
 * runs unless sd_cpu_bf16_kern_select() (cpu_backend.c, plain x86-64 code) found AMX-BF16 in CPUID,
 * the OS enabled the tile state (XCR0) and Linux granted this process the tile data
 * (arch_prctl ARCH_REQ_XCOMP_PERM). */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)

#include <immintrin.h>
#include <string.h>

#define BK_NAME "amx"
#define BK_FN(n) kamx_##n
#define BK_GETTER sd_cpu_bf16_kern_amx

/* palette 1: tmm0-3 C (16 x 16 fp32), tmm4-5 A (16 x 32 bf16), tmm6-7 B (16 pair rows x 16 columns) */
typedef struct __attribute__((packed, aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static void bk_begin(void)
{
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    /* GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes of the configuration, so the
     * other stores could be dropped as dead: make all 64 bytes visible first */
    __asm__ volatile("" : : "m"(c) : "memory");
    _tile_loadconfig(&c);
}

static void bk_end(void) { _tile_release(); }

/* see cpu_kern_bf16_impl.h: A rows lda bf16 apart, depth block (t, cb) of A at toff[t] + cb * astep; B1 NULL:
 * columns 16-31 of B are zero (the direct convolution's last output block when it has <= 16 channels) */
static void bk_ukr_x(const uint16_t *A, const uint16_t *A1, int64_t lda, const int64_t *toff, int64_t ntap,
                     int64_t ncb, int64_t astep, const uint16_t *B, const uint16_t *B1, float *c, int64_t ldc, int acc)
{
    if (acc) { /* C += A B: the C block itself is the accumulator */
        _tile_loadd(0, c, ldc * 4);
        _tile_loadd(1, c + 16, ldc * 4);
        _tile_loadd(2, c + 16 * ldc, ldc * 4);
        _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    if (!B1) { /* columns 16-31 are all zero (a narrow last output block): half the products */
        for (int64_t t = 0; t < ntap; t++)
            for (int64_t cb = 0; cb < ncb; cb++, B += 512) {
                int64_t ao = toff[t] + cb * astep;
                _tile_loadd(4, A + ao, lda * 2);
                _tile_loadd(6, B, 64);
                _tile_loadd(5, A1 + ao, lda * 2);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(2, 5, 6);
            }
    } else {
        for (int64_t t = 0; t < ntap; t++)
            for (int64_t cb = 0; cb < ncb; cb++, B += 512, B1 += 512) {
                int64_t ao = toff[t] + cb * astep;
                _tile_loadd(4, A + ao, lda * 2);
                _tile_loadd(6, B, 64);
                _tile_loadd(5, A1 + ao, lda * 2);
                _tile_loadd(7, B1, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
    }
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

/* the tile-only peak: 4 TDPBF16PS per round on resident tiles (16 x 16 x 32 multiply-adds each) */
static double bk_peak(int64_t iters)
{
    static uint16_t z[2][512] __attribute__((aligned(64)));
    bk_begin();
    _tile_loadd(4, z[0], 64);
    _tile_loadd(5, z[1], 64);
    _tile_loadd(6, z[0], 64);
    _tile_loadd(7, z[1], 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    bk_end();
    return (double)iters * 4 * 16 * 16 * 32;
}

#include "backend/cpu/cpu_kern_bf16_impl.h"

#else

const sd_cpu_bf16_kern *sd_cpu_bf16_kern_amx(void) { return NULL; }

#endif
