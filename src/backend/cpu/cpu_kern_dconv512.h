/* AVX-512 helpers shared by the bf16 and int8 kernel headers (cpu_kern_bf16_impl.h, cpu_kern_int8_impl.h):
 * masks, the 16x16 32-bit transpose, and the two ends of the direct convolution (sd_dconv, cpu_kern.h) that
 * do not depend on the element type: reading 16 input pixels of one channel row into a phase plane, and
 * staging / copying fp32 blocks (pixels x output channels) into NCHW rows with the bias (the bf16 write-back
 * with its epilogue is cpu_kern_bf16_dconv.h's dc_write). Included by files
 * compiled with AVX-512 F/BW/VL/DQ (their own target flags). */
#ifndef SD_CPU_KERN_DCONV512_H
#define SD_CPU_KERN_DCONV512_H

#include <immintrin.h>
#include <stdint.h>

#include "backend/cpu/cpu_kern.h"

static inline int64_t bmin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t bmax(int64_t a, int64_t b) { return a > b ? a : b; }

static inline __mmask16 bm16(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

/* in-register transpose of 16 rows of 16 32-bit values */
static inline void transpose16x16_epi32(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4q + s] now holds, per 128-bit lane L, the 4 values of column 4L + c(s) of rows 4q..4q+3,
     * with c(0..3) = 0, 1, 2, 3 */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);       /* lanes 0, 2 of r[i], lanes 0, 2 of r[i+4] */
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);   /* lanes 1, 3 */
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);       /* columns 0-3 */
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);   /* columns 8-11 */
        r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88); /* columns 4-7 */
        r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD); /* columns 12-15 */
    }
}

/* the input columns of the 16 plane columns j0.. of phase column pw (iw = j * s + pw - pad_l), found once
 * for every channel row read there: lanes outside the image are masked (they read as 0). Stride 1: one masked
 * load; stride 2: the 32-column window [iw0, iw0 + 32) in two masked loads, its even lanes picked */
typedef struct {
    int64_t iw0;     /* input column of lane 0 */
    __mmask16 m, m2; /* the window's columns inside the image (m2: its second half, stride 2) */
} dc_cols;

static inline __mmask16 dc_win16(int64_t iw0, int64_t W)
{
    int64_t lo = bmin(16, bmax(0, -iw0)), hi = bmax(lo, bmin(16, W - iw0));
    return (__mmask16)(bm16(hi) & ~bm16(lo));
}

static inline dc_cols dc_cols_at(const sd_dconv *d, int64_t j0, int64_t pw)
{
    dc_cols c;
    c.iw0 = j0 * d->stride + pw - d->pad_l;
    c.m = dc_win16(c.iw0, d->W);
    c.m2 = dc_win16(c.iw0 + 16, d->W);
    return c;
}

/* 16 values of input row xr (one channel) at the columns c (stride s: 1 or 2) */
static inline __m512 dc_ld(const float *xr, const dc_cols *c, int64_t s)
{
    if (s == 1)
        return _mm512_maskz_loadu_ps(c->m, xr + c->iw0);
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(c->m, xr + c->iw0), even,
                                  _mm512_maskz_loadu_ps(c->m2, xr + c->iw0 + 16));
}

/* 16 values of input row xr (one channel) at plane columns j0.. of phase column pw */
static inline __m512 dc_ld16(const float *xr, const sd_dconv *d, int64_t j0, int64_t pw)
{
    dc_cols c = dc_cols_at(d, j0, pw);
    return dc_ld(xr, &c, d->stride);
}

/* the epilogue after the sums: (+ residual) then ReLU, as sd_add_inplace and sd_unary_inplace do them */
static inline __m512 dc_epi(__m512 v, const sd_dconv_out *o, __m512 res)
{
    if (o->res)
        v = _mm512_add_ps(v, res);
    return o->relu ? _mm512_max_ps(v, _mm512_setzero_ps()) : v;
}

/* Staged write-back (the int8 direct convolution): a task computes r output rows (the pixels q0 = oh0 * Wps
 * onwards, in blocks of 32) for some output channels into a per-thread buffer, one row of lq floats per
 * channel (lq = up32(r * Wps): L2-resident), then copies each channel's rows out to y at once: long
 * sequential stores instead of 16-pixel pieces of many channel planes. */

/* the 16x16 fp32 block cb (row stride 32; rows: pixels, columns: channels) transposed into the buffer:
 * channel n's 16 pixels at st + n * lq */
static inline void dc_stage16(float *st, int64_t lq, const float *cb)
{
    __m512i r[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_si512(cb + i * 32);
    transpose16x16_epi32(r);
    for (int n = 0; n < 16; n++)
        _mm512_storeu_si512(st + n * lq, r[n]);
}

/* rows [oh0, oh0 + rr) of output channels [o0, o0 + nch) from the buffer (channel i's row r at buf + i * lq +
 * r * Wps) into o->y (F32 NCHW) with the bias and the epilogue (dc_epi; o->res in y's layout); stream:
 * non-temporal stores where aligned (an output far larger than the caches: no read for ownership; the caller
 * fences) */
static inline void dc_copy_out(const sd_dconv_out *o, const float *buf, int64_t lq, const sd_dconv *d, int64_t oh0,
                               int64_t rr, int64_t o0, int64_t nch, bool stream)
{
    int64_t WO = d->WO;
    for (int64_t i = 0; i < nch && o0 + i < d->O; i++) {
        __m512 b = _mm512_set1_ps(o->bias ? o->bias[o0 + i] : 0.0f);
        size_t at = (size_t)(((o0 + i) * d->HO + oh0) * WO);
        float *yo = (float *)o->y + at;
        const float *ro = o->res ? (const float *)o->res + at : NULL;
        for (int64_t r = 0; r < rr; r++) {
            const float *src = buf + i * lq + r * d->Wps;
            float *dst = yo + r * WO;
            for (int64_t k = 0; k < WO; k += 16) {
                __mmask16 m = bm16(WO - k);
                __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + k), b);
                v = dc_epi(v, o, ro ? _mm512_maskz_loadu_ps(m, ro + r * WO + k) : _mm512_setzero_ps());
                if (stream && m == 0xFFFF && !((uintptr_t)(dst + k) & 63))
                    _mm512_stream_ps(dst + k, v);
                else
                    _mm512_mask_storeu_ps(dst + k, m, v);
            }
        }
    }
}

#endif