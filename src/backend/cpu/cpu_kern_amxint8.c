/* int8 kernels on Intel AMX tiles (TDPBSSD, s8 x s8 -> s32; TDPBUSD, u8 x s8, for the direct convolution):
 * cpu_kern_int8_impl.h with a 2x2-tile micro-kernel (A tiles loaded with their row stride: packed tiles or
 * straight from a channels-last image). This file alone is compiled with -mamx-tile -mamx-int8 -mavx512*
 * (CMakeLists.txt); nothing here runs unless sd_cpu_int8_kern_select() found AMX-INT8 (cpu_isa.c: CPUID,
 * XCR0 tile state, Linux's tile permission). */
#include "backend/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AMX_INT8__) && defined(__AVX512BW__)

#include <immintrin.h>
#include <string.h>

#define IK_NAME "amx"
#define IK_FN(n) kamxi8_##n
#define IK_GETTER sd_cpu_int8_kern_amx
#define IK_SHIFT 0

/* palette 1: tmm0-3 C (16 x 16 int32), tmm4-5 A (16 x 64 s8), tmm6-7 B (16 quad rows x 16 columns) */
typedef struct __attribute__((packed, aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static void ik_begin(void)
{
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    __asm__ volatile("" : : "m"(c) : "memory"); /* all 64 bytes visible (see cpu_kern_amx.c) */
    _tile_loadconfig(&c);
}

static void ik_end(void) { _tile_release(); }

/* see cpu_kern_int8_impl.h: A rows lda bytes apart, depth block (t, cb) of A at toff[t] + cb * astep; A as s8
 * (TDPBSSD) or, u8, as u8 (TDPBUSD) */
static inline void amx_ukr(const void *A, const void *A1, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb,
                           int64_t astep, const int8_t *B, const int8_t *B1, int32_t *c, bool u8)
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t t = 0; t < ntap; t++)
        for (int64_t cb = 0; cb < ncb; cb++, B += 1024, B1 += 1024) {
            int64_t ao = toff[t] + cb * astep;
            _tile_loadd(4, (const uint8_t *)A + ao, lda);
            _tile_loadd(6, B, 64);
            _tile_loadd(5, (const uint8_t *)A1 + ao, lda);
            _tile_loadd(7, B1, 64);
            if (u8) {
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 4, 7);
                _tile_dpbusd(2, 5, 6);
                _tile_dpbusd(3, 5, 7);
            } else {
                _tile_dpbssd(0, 4, 6);
                _tile_dpbssd(1, 4, 7);
                _tile_dpbssd(2, 5, 6);
                _tile_dpbssd(3, 5, 7);
            }
        }
    _tile_stored(0, c, 128);
    _tile_stored(1, c + 16, 128);
    _tile_stored(2, c + 16 * 32, 128);
    _tile_stored(3, c + 16 * 32 + 16, 128);
}

static void ik_ukr_x(const int8_t *A, const int8_t *A1, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb,
                     int64_t astep, const int8_t *B, const int8_t *B1, int32_t *c)
{
    amx_ukr(A, A1, lda, toff, ntap, ncb, astep, B, B1, c, false);
}

static void ik_ukr_xu(const uint8_t *A, const uint8_t *A1, int64_t lda, const int64_t *toff, int64_t ntap, int64_t ncb,
                      int64_t astep, const int8_t *B, const int8_t *B1, int32_t *c)
{
    amx_ukr(A, A1, lda, toff, ntap, ncb, astep, B, B1, c, true);
}

/* the tile-only peak: 4 TDPBSSD per round on resident tiles (16 x 16 x 64 multiply-adds each) */
static double ik_peak(int64_t iters)
{
    static int8_t z[2][1024] __attribute__((aligned(64)));
    ik_begin();
    _tile_loadd(4, z[0], 64);
    _tile_loadd(5, z[1], 64);
    _tile_loadd(6, z[0], 64);
    _tile_loadd(7, z[1], 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    ik_end();
    return (double)iters * 4 * 16 * 16 * 64;
}

#include "backend/cpu/cpu_kern_int8_impl.h"

#else

const sd_cpu_int8_kern *sd_cpu_int8_kern_amx(void) { return NULL; }

#endif
