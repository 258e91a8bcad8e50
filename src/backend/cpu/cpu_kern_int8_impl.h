/* The int8 GEMM (precision int8, W8A8) of the CPU backend, written once and compiled per instruction
 * set: cpu_kern_amxint8.c (AMX tiles: TDPBSSD) and cpu_kern_vnni.c (VPDPBUSD). The including file
 * defines, inside its target flags: IK_NAME, IK_FN(name), IK_GETTER, IK_SHIFT (1: A is stored as u8 =
 * q + 128 and the epilogue subtracts 128 * the column sums of B) and
 *   static void ik_ukr_x(const int8_t *A0, const int8_t *A1, int64_t lda, const int64_t *toff, int64_t ntap,
 *                        int64_t ncb, int64_t astep, const int8_t *B0, const int8_t *B1, int32_t *c)
 * which sets the 32x32 block c[i*32 + j] = (A B)[i][j] in int32 over ntap x ncb depth blocks of 64: A rows
 * 0-15 from A0, 16-31 from A1, row r of depth block (t, cb) at A + toff[t] + cb*astep + r*lda (64 consecutive
 * bytes: packed A tiles have lda 64 and astep 1024, a channels-last image has lda = its pixel stride); B
 * columns 0-15 from B0, 16-31 from B1, ntap*ncb consecutive 1 KiB tiles; plus ik_begin / ik_end (per
 * thread) and ik_peak (the register-only peak, see cpu_kern.h), and ik_ukr_xu, the same with A as u8 (the
 * direct convolution's image). ik_ukr below is the packed-tile case.
 *
 * Tiles (the AMX-INT8 layouts): A (16 rows x 64 depth) a[r*64 + k] = A[m0 + r][k0 + k]; B (64 depth x
 * 16 columns) b[(k/4)*64 + n*4 + k%4] = B[k0 + k][n0 + n]. Zeros past M, N and K (u8 128 in a
 * shifted A's depth tail meets B's zeros), so the micro-kernel never sees a tail.
 *
 * Linears: B is the weight, prepared at load (sd_i8w_quantise); the rows of A are taken in blocks, each
 * row with its scale (max |a| / 127 over the whole row) quantised into A tiles over the whole depth.
 * Convolutions through the GEMM: A is the weight; the output pixels are taken in blocks, the image read
 * through implicit im2col, each column quantised with its own scale (the max |x| over its receptive
 * field, from pixmax). Either way the threads quantise a block together into one shared buffer, then
 * each multiplies its own pairs of weight tiles with the whole block (ik_run), so every weight byte is
 * read once per block by one thread. Epilogue: c = (acc - corr[n]) * sa * sw (+ c) (+ bias), where a row
 * scale of A and a column scale of B meet. The direct convolution (sd_dconv, at the end) reads its A
 * tiles straight from a channels-last u8 image quantised with one scale and zero point, and subtracts
 * zp * (the sum of the channel's q) from each sum. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu/cpu_kern_dconv512.h"

#define IBLK 1024 /* at most this many rows of A (linears) or columns of B (convolutions) quantised at a
                   * time: as many as fit IWS bytes of packed tiles, so the weight streams fewer times */
#define IWS ((size_t)64 * SD_I8_KMAX)
#define ITILE 1024

/* the micro-kernel on packed A tiles: nkb consecutive depth blocks */
static inline void ik_ukr(const int8_t *A0, const int8_t *A1, const int8_t *B0, const int8_t *B1, int64_t nkb,
                          int32_t *c)
{
    static const int64_t zero = 0;
    ik_ukr_x(A0, A1, 64, &zero, 1, nkb, ITILE, B0, B1, c);
}

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t iup(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline __mmask16 im16(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

/* 16 floats times inv, rounded to nearest even and saturated to [-127, 127] as int32 lanes */
static inline __m512i q16(__m512 v, __m512 inv)
{
    __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv));
    return _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
}

/* Workspace: one block of quantised activation tiles shared by the threads (IWS bytes), its scales and
 * column corrections (IBLK each), then per thread the int32 block. */
static size_t IK_FN(ws)(int nthreads)
{
    return IWS + 2 * IBLK * 4 + (size_t)(nthreads > 0 ? nthreads : 1) * (32 * 32 * 4 + 64) + 256;
}

/* activations per block for depth Kp: a multiple of 32, at most IBLK and IWS bytes of tiles, the blocks
 * of an extent of n as even as that allows */
static inline int64_t ik_block(int64_t Kp, int64_t n)
{
    int64_t most = imin(IBLK, imax(32, (int64_t)(IWS / (size_t)Kp) & ~(int64_t)31)), nb = (n + most - 1) / most;
    return iup((n + nb - 1) / nb, 32);
}

/* 64 floats at p (n of them, zeros past n) times inv, rounded to nearest even and saturated to
 * [-127, 127] as int8 in order: the int32 lanes narrowed by two saturating packs (in-lane interleaved)
 * and one dword permutation that puts the four 16-value runs back in order (as _mm512_cvtsepi32_epi8,
 * a NaN gives -127 as the clamp of q16 did) */
static inline __m512i q64(const float *p, int64_t n, __m512 inv)
{
    __m512i r[4];
    __m512i lo = _mm512_set1_epi32(-127);
    for (int j = 0; j < 4; j++) {
        __m512 v = n >= 64 ? _mm512_loadu_ps(p + 16 * j) : _mm512_maskz_loadu_ps(im16(n - 16 * j), p + 16 * j);
        r[j] = _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), lo);
    }
    __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(r[0], r[1]), _mm512_packs_epi32(r[2], r[3]));
    const __m512i perm = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    return _mm512_permutexvar_epi32(perm, b);
}

/* 16-row groups [t0, t1) of rows [m0, m0+mc) of A (F32 [M][K]) quantised per row into tiles (Kp/64 tiles
 * per group), scales into sa (indexed from m0); rows past mc zero */
static void pack_a_rows(const sd_gemm_i8 *g, int8_t *Ap, float *sa, int64_t m0, int64_t mc, int64_t t0, int64_t t1)
{
    int64_t K = g->K, nkb = g->w->Kp / 64;
    for (int64_t m = t0 * 16; m < t1 * 16; m++) {
        int8_t *dst = Ap + (m / 16) * nkb * ITILE + (m % 16) * 64;
        if (m >= mc) {
            for (int64_t kb = 0; kb < nkb; kb++)
                memset(dst + kb * ITILE, IK_SHIFT ? 0x80 : 0, 64);
            sa[m] = 0.0f;
            continue;
        }
        const float *src = g->x + (m0 + m) * K;
        __m512 mx0 = _mm512_setzero_ps(), mx1 = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            mx0 = _mm512_max_ps(mx0, _mm512_abs_ps(_mm512_loadu_ps(src + k)));
            mx1 = _mm512_max_ps(mx1, _mm512_abs_ps(_mm512_loadu_ps(src + k + 16)));
        }
        for (; k < K; k += 16)
            mx0 = _mm512_max_ps(mx0, _mm512_abs_ps(_mm512_maskz_loadu_ps(im16(K - k), src + k)));
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1));
        sa[m] = amax > 0.0f && isfinite(amax) ? amax / 127.0f : 0.0f;
        __m512 inv = _mm512_set1_ps(sa[m] > 0.0f ? 127.0f / amax : 0.0f);
        for (int64_t kb = 0; kb < nkb; kb++) {
            __m512i v = q64(src + kb * 64, K - kb * 64, inv);
            if (IK_SHIFT) /* q + 128 as u8; the depth tail too (it meets B's zeros) */
                v = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
            _mm512_storeu_si512(dst + kb * ITILE, v);
        }
    }
}

/* a depth index k of the implicit im2col as (channel, kernel row, kernel column), advanced one at a
 * time (no divisions in the packing loop); c == C past the depth */
typedef struct {
    int64_t c, kh, kw;
} kcur;

static inline void kcur_next(const sd_gemm_i8 *g, kcur *k)
{
    if (++k->kw == g->KW) {
        k->kw = 0;
        if (++k->kh == g->KH) {
            k->kh = 0;
            k->c++;
        }
    }
}

/* the image value at depth k for 16 output columns from (oh, ow) on, zero outside the image, past the
 * depth and past n columns (implicit im2col, as SD_GB_CONV) */
static inline __m512 conv_vals(const sd_gemm_i8 *g, const kcur *k, int64_t oh, int64_t ow, int64_t n)
{
    if (k->c >= g->C || n <= 0)
        return _mm512_setzero_ps();
    int64_t H = g->H, W = g->W, WO = g->WO, len = imin(n, 16), kh = k->kh, kw = k->kw;
    const float *img = g->x + k->c * H * W;
    if (g->stride == 1 && ow + len <= WO) { /* one output row: a masked load of the image row */
        int64_t ih = oh - g->pad_t + kh, iw0 = ow - g->pad_l + kw;
        if (ih < 0 || ih >= H)
            return _mm512_setzero_ps();
        int64_t lo = imin(len, imax(0, -iw0)), hi = imax(lo, imin(len, W - iw0));
        return _mm512_maskz_loadu_ps((__mmask16)(im16(hi) & ~im16(lo)), img + ih * W + iw0);
    }
    float t[16];
    for (int64_t j = 0; j < 16; j++, ow++) {
        if (ow == WO) {
            ow = 0;
            oh++;
        }
        int64_t ih = oh * g->stride - g->pad_t + kh, iw = ow * g->stride - g->pad_l + kw;
        t[j] = j < len && ih >= 0 && ih < H && iw >= 0 && iw < W ? img[ih * W + iw] : 0.0f;
    }
    return _mm512_loadu_ps(t);
}

/* 16-column tiles [t0, t1) of columns [n0, n0+nc) of the convolution's B quantised per column (scales
 * into sb, 128 * column sums into corr when shifting; both indexed from n0) into tile columns of Kp/64
 * tiles; columns past nc zero */
static void pack_b_conv(const sd_gemm_i8 *g, int8_t *Bp, float *sb, int32_t *corr, int64_t n0, int64_t nc, int64_t t0,
                        int64_t t1)
{
    int64_t nkb = g->w->Kp / 64, WO = g->WO;
    for (int64_t t = t0; t < t1; t++) {
        float inv[16];
        for (int64_t jj = 0; jj < 16; jj++) { /* column scale: max of pixmax over the receptive field */
            int64_t j = t * 16 + jj;
            float m = 0.0f;
            if (j < nc) {
                int64_t oh = (n0 + j) / WO, ow = (n0 + j) % WO;
                for (int64_t kh = 0; kh < g->KH; kh++) {
                    int64_t ih = oh * g->stride - g->pad_t + kh;
                    if (ih < 0 || ih >= g->H)
                        continue;
                    for (int64_t kw = 0; kw < g->KW; kw++) {
                        int64_t iw = ow * g->stride - g->pad_l + kw;
                        if (iw >= 0 && iw < g->W && g->pixmax[ih * g->W + iw] > m)
                            m = g->pixmax[ih * g->W + iw];
                    }
                }
            }
            bool ok = m > 0.0f && isfinite(m);
            sb[j] = ok ? m / 127.0f : 0.0f;
            inv[jj] = ok ? 127.0f / m : 0.0f;
        }
        int64_t oh = (n0 + t * 16) / WO, ow = (n0 + t * 16) % WO, n = nc - t * 16;
        __m512 iv = _mm512_loadu_ps(inv);
        __m512i sum = _mm512_setzero_si512(), lo8 = _mm512_set1_epi32(0xFF);
        int8_t *tile = Bp + t * nkb * ITILE;
        kcur kc = {0, 0, 0};
        for (int64_t k = 0; k < nkb * 64; k += 4) {
            __m512i r[4];
            for (int j = 0; j < 4; j++, kcur_next(g, &kc))
                r[j] = q16(conv_vals(g, &kc, oh, ow, n), iv);
            __m512i r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
            if (IK_SHIFT)
                sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(r0, r1), _mm512_add_epi32(r2, r3)));
            __m512i v = _mm512_or_si512(_mm512_and_si512(r0, lo8), _mm512_slli_epi32(_mm512_and_si512(r1, lo8), 8));
            v = _mm512_or_si512(v, _mm512_slli_epi32(_mm512_and_si512(r2, lo8), 16));
            v = _mm512_or_si512(v, _mm512_slli_epi32(r3, 24));
            _mm512_storeu_si512(tile + (k / 64) * ITILE + (k % 64) / 4 * 64, v);
        }
        _mm512_storeu_si512(corr + t * 16, _mm512_slli_epi32(sum, 7));
    }
}

/* c rows [0, mr) x columns [0, nr) = (acc - corr) * sa[i] * sb[j] + C (accumulate) + bias: bc[j] (a bias per
 * column) or br[i] (per row), when given */
static inline void epilogue(float *C, int64_t ldc, const int32_t *acc, const int32_t *corr, const float *sa,
                            const float *sb, int64_t mr, int64_t nr, bool add, const float *bc, const float *br)
{
    __mmask16 k0 = im16(nr), k1 = im16(nr - 16);
    __m512i c0 = _mm512_loadu_si512(corr), c1 = _mm512_loadu_si512(corr + 16);
    __m512 s0 = _mm512_loadu_ps(sb), s1 = _mm512_loadu_ps(sb + 16);
    __m512 b0 = bc ? _mm512_maskz_loadu_ps(k0, bc) : _mm512_setzero_ps(), b1 = bc ? _mm512_maskz_loadu_ps(k1, bc + 16) : b0;
    for (int64_t i = 0; i < mr; i++) {
        float *cp = C + i * ldc;
        __m512 a = _mm512_set1_ps(sa[i]);
        __m512 v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + i * 32), c0)),
                                  _mm512_mul_ps(a, s0));
        __m512 v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + i * 32 + 16), c1)),
                                  _mm512_mul_ps(a, s1));
        if (add) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, cp));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, cp + 16));
        }
        if (bc) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        } else if (br) {
            v0 = _mm512_add_ps(v0, _mm512_set1_ps(br[i]));
            v1 = _mm512_add_ps(v1, _mm512_set1_ps(br[i]));
        }
        _mm512_mask_storeu_ps(cp, k0, v0);
        _mm512_mask_storeu_ps(cp + 16, k1, v1);
    }
}

static inline uint8_t *ial64(uint8_t *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* One thread's share of the GEMM. The activations (linear: the rows of A; convolution: the output pixels,
 * the columns of B) are taken in blocks; the threads quantise each block together into the shared tiles,
 * then each multiplies its own pairs of weight tiles (linear: column pairs of B; convolution: row pairs
 * of A) with every pair of the block's tiles (or, when the weight has fewer pairs than threads, its own
 * pairs of the block's tiles with every weight pair): each weight byte is read once per block, by one
 * thread, and its tile pair stays in L1 while the block's tiles stream past it from L2. */
static void ik_run(const sd_gemm_i8 *g, uint8_t *ws, int tid, int nt)
{
    const sd_i8w *w = g->w;
    const bool lin = w->as_b;
    int64_t nkb = w->Kp / 64, XE = lin ? g->M : g->N, WE = lin ? g->N : g->M, blk = ik_block(w->Kp, XE);
    int8_t *P = (int8_t *)ial64(ws);
    float *s = (float *)((uint8_t *)P + IWS);
    int32_t *corr = (int32_t *)(s + IBLK);
    int32_t *acc = (int32_t *)ial64((uint8_t *)(corr + IBLK) + (size_t)tid * (32 * 32 * 4 + 64));
    static const int32_t zero32[32] = {0};
    int64_t wp = (WE + 31) / 32;
    ik_begin();
    for (int64_t x0 = 0; x0 < XE; x0 += blk) {
        int64_t xc = imin(blk, XE - x0), xt = iup(xc, 32) / 16, xp = xt / 2;
        int64_t t0 = xt * tid / nt, t1 = xt * (tid + 1) / nt;
        if (lin)
            pack_a_rows(g, P, s, x0, xc, t0, t1);
        else
            pack_b_conv(g, P, s, corr, x0, xc, t0, t1);
        if (nt > 1) {
#pragma omp barrier
        }
        bool split_w = wp >= nt; /* else the block's pairs are split */
        int64_t w0 = split_w ? wp * tid / nt : 0, w1 = split_w ? wp * (tid + 1) / nt : wp;
        int64_t p0 = split_w ? 0 : xp * tid / nt, p1 = split_w ? xp : xp * (tid + 1) / nt;
        for (int64_t jw = w0; jw < w1; jw++) {
            const int8_t *W0 = w->q + jw * 2 * nkb * ITILE;
            int64_t wr = imin(32, WE - jw * 32);
            for (int64_t ip = p0; ip < p1; ip++) {
                const int8_t *X0 = P + ip * 2 * nkb * ITILE;
                int64_t xr = imin(32, xc - ip * 32);
                if (lin) {
                    ik_ukr(X0, X0 + nkb * ITILE, W0, W0 + nkb * ITILE, nkb, acc);
                    epilogue(g->c + (x0 + ip * 32) * g->ldc + jw * 32, g->ldc, acc, IK_SHIFT ? w->colsum + jw * 32 : zero32,
                             s + ip * 32, w->scale + jw * 32, xr, wr, g->accumulate, g->bias ? g->bias + jw * 32 : NULL,
                             NULL);
                } else {
                    ik_ukr(W0, W0 + nkb * ITILE, X0, X0 + nkb * ITILE, nkb, acc);
                    epilogue(g->c + jw * 32 * g->ldc + x0 + ip * 32, g->ldc, acc, IK_SHIFT ? corr + ip * 32 : zero32,
                             w->scale + jw * 32, s + ip * 32, wr, xr, g->accumulate, NULL,
                             g->bias ? g->bias + jw * 32 : NULL);
                }
            }
        }
        if (nt > 1) {
#pragma omp barrier
        }
    }
    ik_end();
}

static void IK_FN(gemm)(const sd_gemm_i8 *g, void *ws, int nthreads)
{
    if (g->M <= 0 || g->N <= 0)
        return;
    /* threads for enough products, or for a weight large enough that streaming it from memory on several
     * cores pays (the time embedding's one-row linears) */
    double wbytes = (double)(g->w->as_b ? g->N : g->M) * g->K;
    int nt = nthreads > 1 && ((double)g->M * g->N * g->K >= 4e6 || wbytes >= 262144.0) ? nthreads : 1;
    if (nt == 1) {
        ik_run(g, ws, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    ik_run(g, ws, omp_get_thread_num(), omp_get_num_threads());
}

/* ------------------------------------------------------------------ direct convolution (sd_dconv, cpu_kern.h)
 * The image quantised once into its channels-last int8 copy with one scale, then per task (32 output pixels x
 * 32 output channels) one micro-kernel call over every tap and channel block (A: strided tile loads from the
 * copy; B: the weight prepared at load), its int32 block dequantised and transposed into NCHW rows. */

/* the smallest and largest finite values of x[0..n), widened to include 0 */
static void ik_minmax(const float *x, int64_t n, int nthreads, float *lo, float *hi)
{
    float mn = 0.0f, mx = 0.0f;
    const __m512 inf = _mm512_set1_ps(INFINITY);
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(min : mn) reduction(max : mx)
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        __m512 vmn = _mm512_setzero_ps(), vmx = _mm512_setzero_ps();
        for (int64_t i = i0; i < imin(n, i0 + 4096); i += 16) {
            __m512 v = _mm512_maskz_loadu_ps(bm16(n - i), x + i);
            __mmask16 fin = _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_LT_OQ); /* NaN, Inf: skipped */
            vmn = _mm512_mask_min_ps(vmn, fin, vmn, v);
            vmx = _mm512_mask_max_ps(vmx, fin, vmx, v);
        }
        mn = fminf(mn, _mm512_reduce_min_ps(vmn));
        mx = fmaxf(mx, _mm512_reduce_max_ps(vmx));
    }
    *lo = mn;
    *hi = mx;
}

/* 16 image values as u8 lanes (int32) q = round(x * inv) + zp, clamped to [0, 255] (+-Inf too); NaN as zp */
static inline __m512i ik_qimg(__m512 v, __m512 inv, __m512 tlo, __m512 thi, __m512i zp)
{
    __m512 t = _mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v, inv), thi), tlo);
    return _mm512_add_epi32(_mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), t), zp);
}

/* four channels' 16 quantised values (int32 lanes in [0, 255]) as byte quads: dword j = pixel j's 4 bytes */
static inline __m512i ik_quads(__m512i q0, __m512i q1, __m512i q2, __m512i q3)
{
    /* per 128-bit lane L: bytes q0[4L..4L+3], q1[..], q2[..], q3[..], then pixel by pixel */
    __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
    const __m512i perm = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    return _mm512_shuffle_epi8(b, perm);
}

static float IK_FN(dconv_image)(uint8_t *xp, const float *x, const sd_dconv *d, int32_t *zpo, int nthreads)
{
    float lo, hi;
    ik_minmax(x, d->C * d->H * d->W, nthreads, &lo, &hi);
    float xs = hi > lo ? (hi - lo) / 255.0f : 0.0f, fi = xs > 0.0f ? 255.0f / (hi - lo) : 0.0f;
    int zp = (int)nearbyintf(-lo * fi); /* in [0, 255]: lo <= 0 <= hi */
    *zpo = zp;
    const __m512 inv = _mm512_set1_ps(fi), tlo = _mm512_set1_ps((float)-zp), thi = _mm512_set1_ps((float)(255 - zp));
    const __m512i zpv = _mm512_set1_epi32(zp);
    int64_t s = d->stride, Cp = d->Cp, Wps = d->Wps, rows = s * s * d->Hps, C = d->C, HW = d->H * d->W;
    size_t used = (size_t)(rows * Wps * Cp);
    memset(xp + used, zp, d->x_elems - used); /* the tail the last pixel blocks read */
    /* per input row (ph, r) its s phase planes together: a stride-2 conv reads each row from memory once */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t pr = 0; pr < s * d->Hps; pr++) {
        int64_t ph = pr / d->Hps, r = pr % d->Hps, ih = r * s + ph - d->pad_t;
        if (ih < 0 || ih >= d->H) {
            for (int64_t pw = 0; pw < s; pw++)
                memset(xp + ((ph * s + pw) * d->Hps + r) * Wps * Cp, zp, (size_t)(Wps * Cp));
            continue;
        }
        const float *xr = x + ih * d->W;
        for (int64_t c0 = 0; c0 < Cp; c0 += 16) /* 16 channels (4 quads): 16 rows read side by side */
            for (int64_t pw = 0; pw < s; pw++)
                for (int64_t j0 = 0; j0 < Wps; j0 += 16) {
                    dc_cols cols = dc_cols_at(d, j0, pw);
                    __m512i r4[4], q[4];
                    for (int64_t k = 0; k < 4; k++) {
                        for (int64_t i = 0; i < 4; i++) {
                            int64_t c = c0 + 4 * k + i;
                            q[i] = c < C ? ik_qimg(dc_ld(xr + c * HW, &cols, s), inv, tlo, thi, zpv) : zpv;
                        }
                        r4[k] = ik_quads(q[0], q[1], q[2], q[3]);
                    }
                    /* 4 x 16 dwords to 16 pixels x 16 bytes: p[m] holds pixel 4L + m in its 128-bit lane L */
                    __m512i a = _mm512_unpacklo_epi32(r4[0], r4[1]), b = _mm512_unpackhi_epi32(r4[0], r4[1]);
                    __m512i e = _mm512_unpacklo_epi32(r4[2], r4[3]), f = _mm512_unpackhi_epi32(r4[2], r4[3]);
                    __m512i p[4] = {_mm512_unpacklo_epi64(a, e), _mm512_unpackhi_epi64(a, e),
                                    _mm512_unpacklo_epi64(b, f), _mm512_unpackhi_epi64(b, f)};
                    uint8_t *o = xp + (((ph * s + pw) * d->Hps + r) * Wps + j0) * Cp + c0;
                    for (int64_t j = 0; j < bmin(16, Wps - j0); j++) /* lane j / 4 of p[j % 4], at pixel j */
                        _mm512_mask_storeu_epi32(o + j * Cp - (j / 4) * 16, (__mmask16)(0xFu << (4 * (j / 4))),
                                                 p[j % 4]);
                }
    }
    return xs;
}

/* A task: r output rows (a band) x g output blocks of 32 channels (a group). The group's weight tiles stay in
 * L2 (IK_WGROUP) while its bands stream through; a band's outputs are staged (dc_stage16, IK_STAGE bytes per
 * thread) and copied out row by row (dc_copy_out). Every output is one exact int32 sum, so the split changes
 * no bit of the result. */
#define IK_STAGE ((size_t)256 << 10)
#define IK_WGROUP ((size_t)512 << 10)
#define IK_STREAM 8e6 /* outputs of more bytes are written with non-temporal stores (far past L2) */

static size_t ik_stage_bytes(const sd_dconv *d) { return (size_t)imax((int64_t)IK_STAGE, 128 * iup(d->Wps, 32)); }

static void ik_dconv_split(const sd_dconv *d, int nt, int64_t *g, int64_t *r)
{
    int64_t no = (d->O + 31) / 32, st = (int64_t)ik_stage_bytes(d) / 128; /* floats per channel of 32 */
    *g = imax(1, imin(no, (int64_t)(IK_WGROUP / (size_t)(32 * d->KH * d->KW * d->Cp))));
    *r = (st / *g - 31) / d->Wps;
    if (*r < 1) {
        *g = imax(1, st / iup(d->Wps, 32));
        *r = 1;
    }
    *r = imin(*r, d->HO);
    while (*r > 1 && ((d->HO + *r - 1) / *r) * ((no + *g - 1) / *g) < 2 * nt) /* enough tasks for the threads */
        *r = (*r + 1) / 2;
}

static void IK_FN(dconv_thread)(const sd_dconv_out *out, const uint8_t *xp, float xs, int32_t zp, const int8_t *wp,
                                const sd_dconv *d, float *stage, int tid, int nt)
{
    int64_t s = d->stride, Cp = d->Cp, taps = d->KH * d->KW, ncb = Cp / 64, no = (d->O + 31) / 32, Wps = d->Wps;
    int64_t plane = d->Hps * Wps, toff[SD_DCONV_MAX_TAPS], g, R;
    for (int64_t kh = 0; kh < d->KH; kh++)
        for (int64_t kw = 0; kw < d->KW; kw++)
            toff[kh * d->KW + kw] = (((kh % s) * s + kw % s) * plane + (kh / s) * Wps + kw / s) * Cp;
    ik_dconv_split(d, nt, &g, &R);
    const float *ws = (const float *)(wp + d->w_elems);
    const int32_t *wsum = (const int32_t *)(ws + no * 32);
    const __m512i zpv = _mm512_set1_epi32(zp);
    int64_t nb = (d->HO + R - 1) / R, ng = (no + g - 1) / g, lq = iup(R * Wps, 32);
    int64_t tasks = nb * ng, t0 = tasks * tid / nt, t1 = tasks * (tid + 1) / nt;
    int32_t acc[32 * 32] __attribute__((aligned(64)));
    float *cb = (float *)acc; /* dequantised in place */
    bool stream = (double)d->O * d->HO * d->WO * 4 > IK_STREAM;
    ik_begin();
    for (int64_t task = t0; task < t1; task++) {
        int64_t grp = task / nb, oh0 = (task % nb) * R, rr = imin(R, d->HO - oh0), nqb = (rr * Wps + 31) / 32;
        for (int64_t gb = 0; gb < g && grp * g + gb < no; gb++) {
            int64_t o0 = (grp * g + gb) * 32;
            const int8_t *B0 = wp + (o0 / 16) * taps * ncb * ITILE;
            __m512 m0 = _mm512_mul_ps(_mm512_loadu_ps(ws + o0), _mm512_set1_ps(xs));
            __m512 m1 = _mm512_mul_ps(_mm512_loadu_ps(ws + o0 + 16), _mm512_set1_ps(xs));
            __m512i c0 = _mm512_mullo_epi32(_mm512_loadu_si512(wsum + o0), zpv); /* zp * sum q: the zero point */
            __m512i c1 = _mm512_mullo_epi32(_mm512_loadu_si512(wsum + o0 + 16), zpv);
            for (int64_t i = 0; i < nqb; i++) {
                const uint8_t *A0 = xp + (oh0 * Wps + i * 32) * Cp;
                ik_ukr_xu(A0, A0 + 16 * Cp, Cp, toff, taps, ncb, 64, B0, B0 + taps * ncb * ITILE, acc);
                for (int k = 0; k < 32; k++) {
                    __m512i a0 = _mm512_sub_epi32(_mm512_load_si512(acc + k * 32), c0);
                    __m512i a1 = _mm512_sub_epi32(_mm512_load_si512(acc + k * 32 + 16), c1);
                    _mm512_store_ps(cb + k * 32, _mm512_mul_ps(_mm512_cvtepi32_ps(a0), m0));
                    _mm512_store_ps(cb + k * 32 + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(a1), m1));
                }
                for (int h = 0; h < 2; h++)
                    for (int c = 0; c < 2; c++)
                        dc_stage16(stage + (gb * 32 + c * 16) * lq + i * 32 + h * 16, lq, cb + h * 16 * 32 + c * 16);
            }
        }
        dc_copy_out(out, stage, lq, d, oh0, rr, grp * g * 32, g * 32, stream);
    }
    if (stream)
        _mm_sfence();
    ik_end();
}

static size_t IK_FN(dconv_ws)(const sd_dconv *d, int nthreads)
{
    return (size_t)(nthreads > 0 ? nthreads : 1) * (ik_stage_bytes(d) + 64) + 64;
}

static void IK_FN(dconv)(const sd_dconv_out *out, const uint8_t *xp, float xs, int32_t zp, const int8_t *wp,
                         const sd_dconv *d, void *ws, int nthreads)
{
    int64_t g, R;
    ik_dconv_split(d, nthreads, &g, &R);
    int64_t tasks = ((d->HO + R - 1) / R) * (((d->O + 31) / 32 + g - 1) / g);
    int nt = nthreads > 1 && tasks > 1 ? (int)imin(nthreads, tasks) : 1;
    float *st0 = (float *)ial64(ws);
    size_t per = (ik_stage_bytes(d) + 64) / sizeof(float);
    if (nt == 1) {
        IK_FN(dconv_thread)(out, xp, xs, zp, wp, d, st0, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num();
        IK_FN(dconv_thread)(out, xp, xs, zp, wp, d, st0 + tid * per, tid, omp_get_num_threads());
    }
}

static const sd_cpu_int8_kern ik_table = {
    .name = IK_NAME,
    .shift = IK_SHIFT,
    .ws = IK_FN(ws),
    .gemm = IK_FN(gemm),
    .peak = ik_peak,
    .dconv_image = IK_FN(dconv_image),
    .dconv_ws = IK_FN(dconv_ws),
    .dconv = IK_FN(dconv),
};

const sd_cpu_int8_kern *IK_GETTER(void) { return &ik_table; }
