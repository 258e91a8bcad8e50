/* The bf16 GEMM (and attention) of the CPU backend, written once and compiled per instruction set:
 * cpu_kern_amx.c (AMX tiles: TDPBF16PS) and cpu_kern_avx512bf16.c (VDPBF16PS). The including file
 * defines, inside its target flags: BK_NAME, BK_FN(name), BK_GETTER, and the micro-kernel
 *   static void bk_ukr_x(const uint16_t *A0, const uint16_t *A1, int64_t lda, const int64_t *toff, int64_t ntap,
 *                        int64_t ncb, int64_t astep, const uint16_t *B0, const uint16_t *B1, float *c,
 *                        int64_t ldc, int acc)
 * which computes the 32x32 block c[i*ldc + j] (+)= (A B)[i][j] (added to c when acc) over ntap x ncb depth
 * blocks of 32: A rows 0-15 from A0, 16-31 from A1, row r of depth block (t, cb) at A + toff[t] + cb*astep +
 * r*lda (32 consecutive bf16: packed A tiles have lda 32 and astep 512, a channels-last image has lda = its
 * pixel stride); B columns 0-15 from B0, 16-31 from B1, ntap*ncb consecutive tiles; plus
 *   static void bk_begin(void) / bk_end(void)  (per thread: AMX tile configuration and release),
 *   static double bk_peak(int64_t iters)       (the instruction's register-only peak, see cpu_kern.h).
 * bk_ukr below is the packed-tile case (nkb depth blocks).
 *
 * Packed layouts (both exactly the AMX tile layouts, 1 KiB per tile):
 *   A tile (16 rows x 32 depth):      a[r*32 + k]            = A[m0 + r][k0 + k]
 *   B tile (32 depth x 16 columns):   b[(k/2)*32 + n*2 + k%2] = B[k0 + k][n0 + n]   (VNNI pairs)
 * Rows, columns and depth beyond the matrix are zero, so the micro-kernel never sees a tail: odd K,
 * M and N that are not multiples of 16 or 32 are handled by the packing and by the write-back.
 * Values are rounded to bf16 (round to nearest even) when packed; sums are fp32.
 *
 * GEMM loop (Goto structure as cpu_kern_impl.h): per thread a rectangle of C; per NC column block and
 * KC depth block B is packed once, per MC row block A is packed, then 32x32 micro blocks. */
#include <math.h>
#include <omp.h>
#include <string.h>

#define BKC 512 /* depth per packed block (multiple of 32) */
#define BMC 128 /* rows per packed A block (multiple of 32) */
#define BNCC 512 /* columns per C block of a convolution (multiple of BNC) */
#define BNCL 1024 /* columns per packed B block of a linear (the weight): A is converted once per BNCL */
#define BNC 256 /* columns per packed B block (multiple of 32) */
#define TILE 512 /* bf16 per tile */

/* the vector helpers vexp needs */
typedef __m512 V;
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vfnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
#include "backend/cpu/cpu_kern_vexp512.h"
#include "backend/cpu/cpu_kern_dconv512.h"

/* 2^x for finite x <= 0 to 7.5e-5 relative (the result is rounded to bf16, 2^-9): f = x - floor(x) in
 * [0, 1) in one VREDUCEPS, a cubic for 2^f (relative minimax on [0, 1)), then VSCALEFPS multiplies by
 * 2^floor(x) (0 for very negative x). Four instructions fewer than exp(x) through a rounding to nearest:
 * the attention's softmax is what bounds it at head size 64. */
static inline V vexp2_p(V x)
{
    V f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    V p = vfma(vfma(vfma(vset1(7.802403e-2f), f, vset1(2.2606707e-1f)), f, vset1(6.9583398e-1f)), f,
               vset1(9.9992514e-1f));
    return _mm512_scalef_ps(p, x);
}

/* the micro-kernel on packed A tiles: nkb consecutive depth blocks */
static inline void bk_ukr(const uint16_t *A0, const uint16_t *A1, const uint16_t *B0, const uint16_t *B1, int64_t nkb,
                          float *c, int64_t ldc, int acc)
{
    static const int64_t zero = 0;
    bk_ukr_x(A0, A1, 32, &zero, 1, nkb, TILE, B0, B1, c, ldc, acc);
}

static inline int64_t up32(int64_t x) { return (x + 31) & ~(int64_t)31; }

static inline __mmask32 bm32(int64_t n)
{
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1u);
}

/* 32 values as bf16 (lo: values 0-15, hi: 16-31) */
static inline __m512i to_bf16x32(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

/* n (<= 32) values of a row in dtype dt as 32 bf16, zero past n */
static inline __m512i ld_row_bf16(const void *p, sd_dtype dt, int64_t n)
{
    if (dt == SD_BF16)
        return _mm512_maskz_loadu_epi16(bm32(n), p);
    if (dt == SD_F16) {
        const uint16_t *h = p;
        __m512 lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(bm16(n), h));
        __m512 hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(bm16(n - 16), h + 16));
        return to_bf16x32(lo, hi);
    }
    const float *f = p;
    return to_bf16x32(_mm512_maskz_loadu_ps(bm16(n), f), _mm512_maskz_loadu_ps(bm16(n - 16), f + 16));
}

/* interleave the two halves of v (r0[0..15], r1[0..15]) into pairs (r0[j], r1[j]) */
static inline __m512i pair_interleave(__m512i v)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, v);
}

/* ------------------------------------------------------------------ A packing
 * rows [m0, m0+mc) x depth [k0, k0+kc) into mt = up32(mc)/16 row tiles of nkb depth blocks */
static void pack_a(const sd_gemm *g, uint16_t *Ap, int64_t m0, int64_t mc, int64_t k0, int64_t kc)
{
    int64_t nkb = up32(kc) / 32, mt = up32(mc) / 16;
    size_t es = sd_dtype_size(g->a_dt);
    for (int64_t t = 0; t < mt; t++) { /* a row tile at a time: its tiles written in order (one contiguous
                                        * run), its 16 source rows read side by side */
        const uint8_t *src[16];
        for (int r = 0; r < 16; r++)
            src[r] = (const uint8_t *)g->a + ((size_t)((m0 + bmin(t * 16 + r, mc - 1)) * g->lda + k0)) * es;
        uint16_t *dst = Ap + t * nkb * TILE;
        for (int64_t kb = 0; kb < nkb; kb++)
            for (int r = 0; r < 16; r++) {
                __m512i v = t * 16 + r < mc ? ld_row_bf16(src[r] + (size_t)(kb * 32) * es, g->a_dt, kc - kb * 32)
                                            : _mm512_setzero_si512();
                _mm512_storeu_si512(dst + kb * TILE + r * 32, v);
            }
    }
}

/* ------------------------------------------------------------------ B packing */

/* Implicit im2col: row k of B at columns [col0, col0 + 16) (output position oh, ow of col0), zero past n
 * columns; ck = {c, kh, kw} of k, NULL for zeros. Sixteen columns in one output row at stride 1 are one
 * masked load from the image row (the lanes outside it are not read); other cases gather. */
static inline __m512 conv_col16(const sd_gemm *g, const int64_t *ck, int64_t oh, int64_t ow, int64_t n)
{
    if (!ck || n <= 0)
        return _mm512_setzero_ps();
    int64_t H = g->H, W = g->W, WO = g->WO, len = bmin(n, 16), kh = ck[1], kw = ck[2];
    const float *xc = (const float *)g->b + ck[0] * H * W;
    if (g->stride == 1 && ow + len <= WO) {
        int64_t ih = oh - g->pad_t + kh;
        if (ih < 0 || ih >= H)
            return _mm512_setzero_ps();
        int64_t iw0 = ow - g->pad_l + kw; /* input column of lane 0 */
        int64_t lo = bmin(len, bmax(0, -iw0)), hi = bmax(lo, bmin(len, W - iw0));
        return _mm512_maskz_loadu_ps((__mmask16)(bm16(hi) & ~bm16(lo)), xc + ih * W + iw0);
    }
    float tmp[16];
    int s = g->stride;
    for (int64_t j = 0; j < 16; j++, ow++) {
        if (ow == WO) {
            ow = 0;
            oh++;
        }
        int64_t ih = oh * s - g->pad_t + kh, iw = ow * s - g->pad_l + kw;
        tmp[j] = j < len && ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[ih * W + iw] : 0.0f;
    }
    return _mm512_loadu_ps(tmp);
}

/* B block depth [k0, k0+kc) x columns [n0, n0+nc) into nt = up32(nc)/16 column tiles of nkb depth blocks.
 * The convolution kinds take nc <= BNC. */
static void pack_b(const sd_gemm *g, uint16_t *Bp, int64_t k0, int64_t kc, int64_t n0, int64_t nc)
{
    int64_t nkb = up32(kc) / 32, nt = up32(nc) / 16;
    if (g->bkind == SD_GB_TRANS) { /* B[k][n] = b[n*ldb + k]: a row of b gives one column's pairs */
        size_t es = sd_dtype_size(g->b_dt);
        uint32_t tmp[16 * 16];
        for (int64_t t = 0; t < nt; t++)
            for (int64_t kb = 0; kb < nkb; kb++) {
                uint16_t *tile = Bp + (t * nkb + kb) * TILE;
                int64_t n = kc - kb * 32;
                for (int64_t j = 0; j < 16; j++) {
                    int64_t col = t * 16 + j;
                    __m512i v = _mm512_setzero_si512();
                    if (col < nc)
                        v = ld_row_bf16((const uint8_t *)g->b + ((size_t)((n0 + col) * g->ldb + k0 + kb * 32)) * es,
                                        g->b_dt, n);
                    _mm512_storeu_si512(tmp + j * 16, v);
                }
                /* 16x16 transpose of 32-bit pairs: tile row p = pair p of the 16 columns */
                __m512i r[16];
                for (int j = 0; j < 16; j++)
                    r[j] = _mm512_loadu_si512(tmp + j * 16);
                transpose16x16_epi32(r);
                for (int p = 0; p < 16; p++)
                    _mm512_storeu_si512(tile + p * 32, r[p]);
            }
        return;
    }
    if (g->bkind == SD_GB_CONV_BF16P) { /* from the padded bf16 image: two 16-value loads per pair row */
        int64_t toh[BNC / 16], tow[BNC / 16];
        for (int64_t t = 0; t < nt; t++) {
            toh[t] = (n0 + t * 16) / g->WO;
            tow[t] = (n0 + t * 16) % g->WO;
        }
        const uint16_t *xp = g->b;
        int64_t KHW = g->KH * g->KW, Hp = g->H, Wp = g->W, WO = g->WO, off[2];
        for (int64_t k = 0; k < up32(kc); k += 2) {
            int64_t kb = k / 32, p = (k % 32) / 2;
            for (int h = 0; h < 2; h++) {
                int64_t kk = k0 + k + h, r = kk % KHW;
                off[h] = k + h < kc ? ((kk / KHW) * Hp + r / g->KW) * Wp + r % g->KW : -1;
            }
            for (int64_t t = 0; t < nt; t++) {
                int64_t n = nc - t * 16;
                __m256i a, b;
                if (n >= 16 && tow[t] + 16 <= WO) {
                    const uint16_t *s0 = xp + toh[t] * Wp + tow[t];
                    a = off[0] >= 0 ? _mm256_loadu_si256((const __m256i *)(s0 + off[0])) : _mm256_setzero_si256();
                    b = off[1] >= 0 ? _mm256_loadu_si256((const __m256i *)(s0 + off[1])) : _mm256_setzero_si256();
                } else { /* a tile across output rows, or the last columns */
                    uint16_t ta[16], tb[16];
                    int64_t oh = toh[t], ow = tow[t];
                    for (int64_t j = 0; j < 16; j++, ow++) {
                        if (ow == WO) {
                            ow = 0;
                            oh++;
                        }
                        bool in = j < n;
                        ta[j] = in && off[0] >= 0 ? xp[off[0] + oh * Wp + ow] : 0;
                        tb[j] = in && off[1] >= 0 ? xp[off[1] + oh * Wp + ow] : 0;
                    }
                    a = _mm256_loadu_si256((const __m256i *)ta);
                    b = _mm256_loadu_si256((const __m256i *)tb);
                }
                __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
                _mm512_storeu_si512(Bp + (t * nkb + kb) * TILE + p * 32, pair_interleave(v));
            }
        }
        return;
    }
    if (g->bkind == SD_GB_CONV) { /* implicit im2col, 16 columns at a time straight from the image */
        int64_t toh[BNC / 16], tow[BNC / 16]; /* output position of each tile's first column */
        for (int64_t t = 0; t < nt; t++) {
            toh[t] = (n0 + t * 16) / g->WO;
            tow[t] = (n0 + t * 16) % g->WO;
        }
        int64_t KHW = g->KH * g->KW, ck[2][3];
        for (int64_t k = 0; k < up32(kc); k += 2) {
            int64_t kb = k / 32, p = (k % 32) / 2;
            for (int h = 0; h < 2; h++) {
                int64_t kk = k0 + k + h, r = kk % KHW;
                ck[h][0] = kk / KHW;
                ck[h][1] = r / g->KW;
                ck[h][2] = r % g->KW;
            }
            const int64_t *c0 = k < kc ? ck[0] : NULL, *c1 = k + 1 < kc ? ck[1] : NULL;
            for (int64_t t = 0; t < nt; t++) {
                __m512 v0 = conv_col16(g, c0, toh[t], tow[t], nc - t * 16);
                __m512 v1 = conv_col16(g, c1, toh[t], tow[t], nc - t * 16);
                _mm512_storeu_si512(Bp + (t * nkb + kb) * TILE + p * 32, pair_interleave(to_bf16x32(v0, v1)));
            }
        }
        return;
    }
    /* SD_GB_ROWMAJOR (F32): rows k and k+1, 16 columns per masked load */
    const float *b = g->b;
    for (int64_t k = 0; k < up32(kc); k += 2) {
        int64_t kb = k / 32, p = (k % 32) / 2;
        const float *r0 = k < kc ? b + (k0 + k) * g->ldb + n0 : NULL;
        const float *r1 = k + 1 < kc ? b + (k0 + k + 1) * g->ldb + n0 : NULL;
        for (int64_t t = 0; t < nt; t++) {
            __mmask16 m = bm16(nc - t * 16);
            __m512 v0 = r0 ? _mm512_maskz_loadu_ps(m, r0 + t * 16) : _mm512_setzero_ps();
            __m512 v1 = r1 ? _mm512_maskz_loadu_ps(m, r1 + t * 16) : _mm512_setzero_ps();
            _mm512_storeu_si512(Bp + (t * nkb + kb) * TILE + p * 32, pair_interleave(to_bf16x32(v0, v1)));
        }
    }
}

/* ------------------------------------------------------------------ GEMM */

/* per thread: the B block (BKC x BNCL, or a linear's column block over the whole depth), the A block (BMC x
 * BKC, or a linear's row panel over the whole depth: up to BK_APANEL values), two 32 x 32 fp32 blocks */
#define BK_BPANEL ((size_t)(BKC / 32) * (BNCL / 16) * TILE)
#define BK_APANEL ((size_t)32 * SD_BK_KFULL)
#define BK_APANEL_HOT ((size_t)256 * 1024) /* values of a linear's A panel (L2) */
static size_t bk_ws_thread(void) /* bytes */
{
    return BK_BPANEL * 2 + BK_APANEL * 2 + 2 * 32 * 32 * sizeof(float) + 256;
}

static size_t BK_FN(gemm_ws)(int nthreads) { return (size_t)(nthreads > 0 ? nthreads : 1) * bk_ws_thread() / sizeof(float); }

/* c[32][32] into C rows [0, mr), columns [0, nr) */
static inline void write_back(float *C, int64_t ldc, const float *c, int64_t mr, int64_t nr)
{
    __mmask16 k0 = bm16(nr), k1 = bm16(nr - 16);
    for (int64_t i = 0; i < mr; i++) {
        float *cp = C + i * ldc;
        _mm512_mask_storeu_ps(cp, k0, _mm512_loadu_ps(c + i * 32));
        _mm512_mask_storeu_ps(cp + 16, k1, _mm512_loadu_ps(c + i * 32 + 16));
    }
}

/* one 32x32 block of C (mr x nr of it inside the matrix): full blocks accumulate in C itself, edge
 * blocks go through cb (32 x 32 floats) and are written back masked. An edge block that accumulates
 * starts from C's values in cb, as a full block starts from C: every element gets the same sums in the
 * same order wherever the block edges fall (they move with M, e.g. with the rows of a batched stream
 * group, whose outputs must equal each stream's alone) */
static inline void micro(const uint16_t *A0, const uint16_t *A1, const uint16_t *B0, const uint16_t *B1, int64_t nkb,
                         float *C, int64_t ldc, float *cb, int64_t mr, int64_t nr, int acc)
{
    if (mr >= 32 && nr >= 32) {
        bk_ukr(A0, A1, B0, B1, nkb, C, ldc, acc);
        return;
    }
    if (acc)
        for (int64_t i = 0; i < 32; i++) {
            const float *cp = C + i * ldc;
            _mm512_storeu_ps(cb + i * 32, i < mr ? _mm512_maskz_loadu_ps(bm16(nr), cp) : _mm512_setzero_ps());
            _mm512_storeu_ps(cb + i * 32 + 16,
                             i < mr ? _mm512_maskz_loadu_ps(bm16(nr - 16), cp + 16) : _mm512_setzero_ps());
        }
    bk_ukr(A0, A1, B0, B1, nkb, cb, 32, acc);
    write_back(C, ldc, cb, mr, nr);
}

/* ------------------------------------------------------------------ linears over the whole depth
 * B (the weight: prepared tiles, or packed here per column block) and A (row panels of the whole depth) are
 * multiplied by 32x32 blocks whose fp32 sums s come out once, into an L1 block, and go to C through the
 * epilogue (sd_gemm: + bias, + res or GEGLU): each element's value is s + bias[n] whatever the block edges,
 * the thread split or the epilogue, so fused and plain linears agree bit for bit */

/* rows [0, mr) x columns [0, nr) of the block s (row stride 32) into C with the epilogue (not GEGLU) */
static inline void epi_store(const sd_gemm *g, float *C, const float *s, const float *bias, const float *res,
                             int64_t ldr, int64_t mr, int64_t nr)
{
    __mmask16 k0 = bm16(nr), k1 = bm16(nr - 16);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(k0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(k1, bias + 16) : _mm512_setzero_ps();
    for (int64_t i = 0; i < mr; i++) {
        float *cp = C + i * g->ldc;
        __m512 v0 = _mm512_loadu_ps(s + i * 32), v1 = _mm512_loadu_ps(s + i * 32 + 16);
        if (bias) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        }
        if (res) {
            const float *rp = res + i * ldr;
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, rp), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, rp + 16), v1);
        }
        _mm512_mask_storeu_ps(cp, k0, v0);
        _mm512_mask_storeu_ps(cp + 16, k1, v1);
    }
}

/* GEGLU: value sums sv and gate sums sg (row stride 32; the gate's bias at bias + N/2) into C rows
 * [m, m + mr), columns [n, n + nr): each row's 2 nr values, biased, laid out as g->geglu reads them; C in
 * bf16 when g->c_bf16 (rounded as pack_a rounds) */
static inline void epi_geglu(const sd_gemm *g, int64_t m, int64_t n, const float *sv, const float *sg,
                             const float *bias, int64_t mr, int64_t nr)
{
    float row[64] __attribute__((aligned(64))), out[32] __attribute__((aligned(64)));
    __mmask16 k0 = bm16(nr), k1 = bm16(nr - 16);
    const float *bg = bias ? bias + g->N / 2 : NULL;
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(k0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(k1, bias + 16) : _mm512_setzero_ps();
    __m512 g0 = bias ? _mm512_maskz_loadu_ps(k0, bg) : _mm512_setzero_ps();
    __m512 g1 = bias ? _mm512_maskz_loadu_ps(k1, bg + 16) : _mm512_setzero_ps();
    for (int64_t i = 0; i < mr; i++) {
        __m512 v0 = _mm512_loadu_ps(sv + i * 32), v1 = _mm512_loadu_ps(sv + i * 32 + 16);
        __m512 u0 = _mm512_loadu_ps(sg + i * 32), u1 = _mm512_loadu_ps(sg + i * 32 + 16);
        if (bias) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
            u0 = _mm512_add_ps(u0, g0);
            u1 = _mm512_add_ps(u1, g1);
        }
        _mm512_mask_storeu_ps(row, k0, v0);
        _mm512_mask_storeu_ps(row + 16, k1, v1);
        _mm512_mask_storeu_ps(row + nr, k0, u0);
        _mm512_mask_storeu_ps(row + nr + 16, k1, u1);
        if (!g->c_bf16) {
            g->geglu(g->c + (m + i) * g->ldc + n, row, nr);
            continue;
        }
        g->geglu(out, row, nr);
        _mm512_mask_storeu_epi16((uint16_t *)g->c + (m + i) * g->ldc + n, bm32(nr),
                                 to_bf16x32(_mm512_loadu_ps(out), _mm512_loadu_ps(out + 16)));
    }
}

/* the linear's rows [m0, m1) x output columns [n0, n1) (GEGLU: of the N/2 output columns) */
static void bk_linear_rect(const sd_gemm *g, uint8_t *ws, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    uint16_t *Bp = (uint16_t *)ws, *Ap = Bp + BK_BPANEL;
    float *sv = (float *)(Ap + BK_APANEL), *sg = sv + 32 * 32;
    int64_t K = g->K, nkb = up32(K) / 32, half = g->geglu ? g->N / 2 : 0;
    const float *res = g->res ? g->res : g->accumulate ? g->c : NULL; /* C += AB: C is the residual */
    int64_t ldr = g->res ? g->ldr : g->ldc;
    /* row panels of about BK_APANEL_HOT values (L2), at least 32 and at most 256 rows */
    int64_t mb = bmax(32, bmin(256, (int64_t)(BK_APANEL_HOT / (size_t)(nkb * 32 + 1)) / 32 * 32));
    /* prepared B: all of it; else column blocks that fit the B area (half as wide for GEGLU's two halves) */
    int64_t nbw = g->bkind == SD_GB_PACKED ? n1 - n0
                                            : bmax(32, (int64_t)(BK_BPANEL / (size_t)(nkb * 32 + 1)) / (half ? 64 : 32) * 32);
    const uint16_t *B = g->b;
    int64_t bstride = nkb * TILE; /* one column tile */
    bk_begin();
    for (int64_t jc = n0; jc < n1; jc += nbw) {
        int64_t nc = bmin(nbw, n1 - jc), bc0 = jc; /* B's first column tile column */
        if (g->bkind != SD_GB_PACKED) {
            pack_b(g, Bp, 0, K, jc, nc);
            if (half)
                pack_b(g, Bp + (up32(nc) / 16) * bstride, 0, K, half + jc, nc);
            B = Bp;
            bc0 = 0;
        }
        for (int64_t ic = m0; ic < m1; ic += mb) {
            int64_t mc = bmin(mb, m1 - ic), mt = up32(mc) / 16;
            pack_a(g, Ap, ic, mc, 0, K);
            for (int64_t j = 0; j < nc; j += 32) {
                int64_t nr = bmin(32, nc - j), t = (bc0 + j) / 16;
                const uint16_t *b0 = B + t * bstride, *b1 = b0 + bstride;
                const uint16_t *g0 = NULL, *g1 = NULL; /* GEGLU's gate columns */
                if (half) {
                    g0 = g->bkind == SD_GB_PACKED ? B + ((half + jc + j) / 16) * bstride : b0 + (up32(nc) / 16) * bstride;
                    g1 = g0 + bstride;
                }
                const float *bias = g->bias ? g->bias + jc + j : NULL;
                for (int64_t i = 0; i < mt; i += 2) {
                    int64_t row = ic + i * 16, mr = bmin(32, mc - i * 16);
                    const uint16_t *a0 = Ap + i * nkb * TILE, *a1 = a0 + nkb * TILE;
                    float *C = g->c + row * g->ldc + jc + j; /* (not when c_bf16) */
                    const char *Cb = g->c_bf16 ? (const char *)((uint16_t *)g->c + row * g->ldc + jc + j) : (const char *)C;
                    size_t lb = (size_t)g->ldc * (g->c_bf16 ? 2 : 4);
                    for (int64_t r = 0; r < mr; r++) { /* C's lines (and the residual's) on their way while the
                                                        * tiles multiply: the write-back then finds them in cache */
                        _mm_prefetch(Cb + r * lb, _MM_HINT_ET0);
                        _mm_prefetch(Cb + r * lb + 64, _MM_HINT_ET0);
                    }
                    bk_ukr(a0, a1, b0, b1, nkb, sv, 32, 0);
                    if (half) {
                        bk_ukr(a0, a1, g0, g1, nkb, sg, 32, 0);
                        epi_geglu(g, row, jc + j, sv, sg, bias, mr, nr);
                    } else
                        epi_store(g, C, sv, bias, res ? res + row * ldr + jc + j : NULL, ldr, mr, nr);
                }
            }
        }
    }
    bk_end();
}

static void bk_gemm_rect(const sd_gemm *g, uint8_t *ws, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    uint16_t *Bp = (uint16_t *)ws;
    uint16_t *Ap = Bp + BK_BPANEL;
    float *cb = (float *)(Ap + BK_APANEL);
    int64_t K = g->K, ldc = g->ldc;
    bk_begin();
    if (g->bkind != SD_GB_TRANS && g->bkind != SD_GB_PACKED) {
        /* convolutions: per column block of BNCC (its C block stays in L2 across the depth blocks), B (the
         * image, implicit im2col) packed once per depth block, A (the weight) per row block, read along
         * its rows */
        for (int64_t jc = n0; jc < n1; jc += BNCC) {
            int64_t ncc = bmin(BNCC, n1 - jc);
            for (int64_t pc = 0; pc < K; pc += BKC) {
                int64_t kc = bmin(BKC, K - pc), nkb = up32(kc) / 32;
                int acc = g->accumulate || pc > 0;
                for (int64_t jb = 0; jb < ncc; jb += BNC) /* pack the whole column block */
                    pack_b(g, Bp + (jb / 16) * nkb * TILE, pc, kc, jc + jb, bmin(BNC, ncc - jb));
                int64_t nt = up32(ncc) / 16;
                for (int64_t ic = m0; ic < m1; ic += BMC) {
                    int64_t mc = bmin(BMC, m1 - ic), mt = up32(mc) / 16;
                    pack_a(g, Ap, ic, mc, pc, kc);
                    for (int64_t j = 0; j < nt; j += 2)
                        for (int64_t i = 0; i < mt; i += 2) {
                            micro(Ap + i * nkb * TILE, Ap + (i + 1) * nkb * TILE, Bp + j * nkb * TILE,
                                  Bp + (j + 1) * nkb * TILE, nkb, g->c + (ic + i * 16) * ldc + jc + j * 16, ldc, cb,
                                  bmin(32, mc - i * 16), bmin(32, ncc - j * 16), acc);
                        }
                }
            }
        }
        bk_end();
        return;
    }
    /* linears: B (the weight, transposed) is packed once per column and depth block (or was prepared at
     * load: SD_GB_PACKED), A (activations) per row block */
    bool prep = g->bkind == SD_GB_PACKED;
    int64_t nkbt = up32(K) / 32;
    for (int64_t jc = n0; jc < n1; jc += BNCL) {
        int64_t nc = bmin(BNCL, n1 - jc), nt = up32(nc) / 16;
        for (int64_t pc = 0; pc < K; pc += BKC) {
            int64_t kc = bmin(BKC, K - pc), nkb = up32(kc) / 32, bs = (prep ? nkbt : nkb) * TILE;
            if (prep)
                Bp = (uint16_t *)g->b + ((jc / 16) * nkbt + pc / 32) * TILE;
            else
                pack_b(g, Bp, pc, kc, jc, nc); /* the transposed kind takes any width */
            int acc = g->accumulate || pc > 0;
            for (int64_t ic = m0; ic < m1; ic += BMC) {
                int64_t mc = bmin(BMC, m1 - ic), mt = up32(mc) / 16;
                pack_a(g, Ap, ic, mc, pc, kc);
                for (int64_t j = 0; j < nt; j += 2)
                    for (int64_t i = 0; i < mt; i += 2) {
                        micro(Ap + i * nkb * TILE, Ap + (i + 1) * nkb * TILE, Bp + j * bs, Bp + (j + 1) * bs, nkb,
                              g->c + (ic + i * 16) * ldc + jc + j * 16, ldc, cb, bmin(32, mc - i * 16),
                              bmin(32, nc - j * 16), acc);
                    }
            }
        }
    }
    bk_end();
}

/* as the fp32 GEMM: threads take column ranges, or row ranges when B is the cheaper operand to repeat
 * (N: the output columns) */
static bool bk_split_rows(const sd_gemm *g, int64_t N, int nt)
{
    if (N < 32 * nt)
        return true;
    if (g->M < 32 * nt)
        return false;
    return (double)g->K * N < (double)g->M * g->K;
}

static void BK_FN(gemm_thread)(const sd_gemm *g, uint8_t *ws, int tid, int nt)
{
    ws += (size_t)tid * bk_ws_thread();
    bool lin = sd_bk_linear_full(g);
    void (*rect)(const sd_gemm *, uint8_t *, int64_t, int64_t, int64_t, int64_t) = lin ? bk_linear_rect : bk_gemm_rect;
    int64_t N = g->geglu ? g->N / 2 : g->N;
    if (bk_split_rows(g, N, nt)) {
        int64_t mb = (g->M + 31) / 32, m0 = mb * tid / nt * 32, m1 = bmin(g->M, mb * (tid + 1) / nt * 32);
        if (m0 < m1)
            rect(g, ws, m0, m1, 0, N);
    } else {
        int64_t nb = (N + 31) / 32, n0 = nb * tid / nt * 32, n1 = bmin(N, nb * (tid + 1) / nt * 32);
        if (n0 < n1)
            rect(g, ws, 0, g->M, n0, n1);
    }
}

static void BK_FN(gemm)(const sd_gemm *g, float *ws, int nthreads)
{
    if (g->M <= 0 || g->N <= 0)
        return;
    if (g->K <= 0 && !sd_bk_linear_full(g)) { /* (a linear's epilogue still runs on zero sums) */
        if (!g->accumulate)
            for (int64_t m = 0; m < g->M; m++)
                memset(g->c + m * g->ldc, 0, (size_t)g->N * sizeof(float));
        return;
    }
    int nt = nthreads > 1 && (double)g->M * g->N * g->K >= 4e6 ? nthreads : 1;
    if (nt == 1) {
        BK_FN(gemm_thread)(g, (uint8_t *)ws, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    BK_FN(gemm_thread)(g, (uint8_t *)ws, omp_get_thread_num(), omp_get_num_threads());
}


/* ------------------------------------------------------------------ attention
 * Per task (batch, head, 32 query rows): Q pre-scaled and packed as A tiles; the head's K packed once as
 * B tiles of S = Q K^T (key columns) and V as B tiles of O = P V (key depth). Per key block of ABK keys:
 * S (fp32) from the tiles, online softmax in fp32 (running max and sum per row), P = exp(S - max) =
 * 2^(S log2 e - max log2 e) (one FMA, then vexp2_p) packed as bf16 A tiles, O += P V in fp32; y = O / sum.
 * Heads of d > 256 use the fp32 kernel (cpu_backend.c). */

#define ABK 128

static size_t bk_att_ws_thread(int64_t Nk, int64_t d) /* bytes */
{
    int64_t nk = up32(Nk), dp = up32(d);
    return (size_t)(2 * nk * dp * 2 + 32 * d * 4 + 32 * dp * 2 + 32 * ABK * 4 + 32 * ABK * 2 + 32 * dp * 4 +
                    32 * 32 * 4 + 64 * 4 + 8 * 64); /* + the 7 alignments */
}

static size_t BK_FN(attn_ws)(int64_t Nq, int64_t Nk, int64_t d, int nthreads)
{
    (void)Nq;
    return (size_t)(nthreads > 0 ? nthreads : 1) * ((bk_att_ws_thread(Nk, d) + 3) / 4);
}

static inline uint8_t *al64(uint8_t *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static void BK_FN(attn_thread)(float *y, const float *q, const float *k, const float *v, int64_t B, int64_t Nq,
                               int64_t Nk, int heads, int64_t d, float scale, bool causal, float *wsf, int tid, int nt)
{
    int64_t HD = heads * d, nk = up32(Nk), dp = up32(d), nkbd = dp / 32, nkbv = nk / 32;
    uint8_t *w = (uint8_t *)wsf + (size_t)tid * ((bk_att_ws_thread(Nk, d) + 3) / 4) * 4;
    uint16_t *Kp = (uint16_t *)al64(w);
    uint16_t *Vp = (uint16_t *)al64((uint8_t *)(Kp + nk * dp));
    float *Qs = (float *)al64((uint8_t *)(Vp + nk * dp));
    uint16_t *Qa = (uint16_t *)al64((uint8_t *)(Qs + 32 * d));
    float *S = (float *)al64((uint8_t *)(Qa + 32 * dp));
    uint16_t *Pa = (uint16_t *)al64((uint8_t *)(S + 32 * ABK));
    float *O = (float *)al64((uint8_t *)(Pa + 32 * ABK));
    float *lvec = O + 32 * dp, *mrow = lvec + 32 * 32, *lrow = mrow + 32; /* lvec: each row's sum in 16 lanes */
    int64_t qblocks = (Nq + 31) / 32, tasks = B * heads * qblocks;
    int64_t t0 = tasks * tid / nt, t1 = tasks * (tid + 1) / nt, cached = -1;
    if (t0 >= t1)
        return;
    bk_begin();
    for (int64_t task = t0; task < t1; task++) {
        int64_t bh = task / qblocks, qb = task % qblocks, b = bh / heads, h = bh % heads;
        if (bh != cached) {
            /* K as B of Q K^T: B[c][j] = k[j][c] (a row of k is a column of B); V as B of P V */
            sd_gemm gk = {.K = d, .N = Nk, .b = k + b * Nk * HD + h * d, .b_dt = SD_F32, .ldb = HD, .bkind = SD_GB_TRANS};
            pack_b(&gk, Kp, 0, d, 0, Nk);
            sd_gemm gv = {.K = Nk, .N = d, .b = v + b * Nk * HD + h * d, .b_dt = SD_F32, .ldb = HD,
                          .bkind = SD_GB_ROWMAJOR};
            pack_b(&gv, Vp, 0, Nk, 0, d);
            cached = bh;
        }
        int64_t q0 = qb * 32, nq = bmin(32, Nq - q0);
        for (int64_t i = 0; i < 32; i++) {
            const float *qr = q + (b * Nq + q0 + bmin(i, nq - 1)) * HD + h * d;
            for (int64_t c = 0; c < d; c++)
                Qs[i * d + c] = qr[c] * scale;
            mrow[i] = -INFINITY;
            _mm512_storeu_ps(lvec + i * 16, _mm512_setzero_ps());
        }
        sd_gemm gq = {.a = Qs, .a_dt = SD_F32, .lda = d};
        pack_a(&gq, Qa, 0, 32, 0, d);
        memset(O, 0, (size_t)(32 * dp) * sizeof(float));
        int64_t kend = causal ? bmin(Nk, q0 + nq) : Nk;
        for (int64_t kb0 = 0; kb0 < kend; kb0 += ABK) {
            int64_t bk = bmin(ABK, kend - kb0), bkp = up32(bk);
            int64_t nkbp = bkp / 32;
            for (int64_t j = 0; j < bkp; j += 32) {
                int64_t t = (kb0 + j) / 16;
                bk_ukr(Qa, Qa + nkbd * TILE, Kp + t * nkbd * TILE, Kp + (t + 1) * nkbd * TILE, nkbd, S + j, ABK, 0);
            }
            for (int64_t i = 0; i < 32; i++) {
                float *srow = S + i * ABK;
                uint16_t *prow = Pa + (i / 16) * nkbp * TILE + (i % 16) * 32; /* row i of the P tiles */
                int64_t lim = i >= nq ? 0 : causal ? bmax(0, bmin(bk, q0 + i + 1 - kb0)) : bk;
                if (lim == 0) {
                    for (int64_t j = 0; j < bkp; j += 32)
                        _mm512_storeu_si512(prow + (j / 32) * TILE, _mm512_setzero_si512());
                    continue;
                }
                __m512 mx = _mm512_set1_ps(-INFINITY);
                if (lim == ABK) /* a whole block: no masks */
                    for (int64_t j = 0; j < ABK; j += 16)
                        mx = _mm512_max_ps(mx, _mm512_loadu_ps(srow + j));
                else
                    for (int64_t j = 0; j < lim; j += 16)
                        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), bm16(lim - j), srow + j));
                float bmx = _mm512_reduce_max_ps(mx), mnew = bmx > mrow[i] ? bmx : mrow[i];
                if (mnew != mrow[i]) {
                    float alpha = expf(mrow[i] - mnew); /* 0 the first time */
                    _mm512_storeu_ps(lvec + i * 16, _mm512_mul_ps(_mm512_loadu_ps(lvec + i * 16), _mm512_set1_ps(alpha)));
                    for (int64_t c = 0; c < dp; c += 16)
                        _mm512_storeu_ps(O + i * dp + c, _mm512_mul_ps(_mm512_loadu_ps(O + i * dp + c), _mm512_set1_ps(alpha)));
                    mrow[i] = mnew;
                }
                /* P = exp(S - max) = 2^(S L - max L), zero past lim, summed in fp32 and written as bf16 A
                 * tiles */
                const __m512 L = _mm512_set1_ps(1.44269504088896341f);
                __m512 sum = _mm512_setzero_ps(), mv = _mm512_set1_ps(mnew * 1.44269504088896341f);
                if (lim == ABK) {
                    __m512 sum1 = _mm512_setzero_ps();
                    for (int64_t j = 0; j < ABK; j += 32) {
                        __m512 e0 = vexp2_p(_mm512_fmsub_ps(_mm512_loadu_ps(srow + j), L, mv));
                        __m512 e1 = vexp2_p(_mm512_fmsub_ps(_mm512_loadu_ps(srow + j + 16), L, mv));
                        sum = _mm512_add_ps(sum, e0);
                        sum1 = _mm512_add_ps(sum1, e1);
                        _mm512_storeu_si512(prow + (j / 32) * TILE, to_bf16x32(e0, e1));
                    }
                    sum = _mm512_add_ps(sum, sum1);
                } else {
                    for (int64_t j = 0; j < bkp; j += 32) {
                        __m512 e0 = _mm512_maskz_mov_ps(bm16(lim - j),
                                                        vexp2_p(_mm512_fmsub_ps(_mm512_loadu_ps(srow + j), L, mv)));
                        __m512 e1 = _mm512_maskz_mov_ps(bm16(lim - j - 16),
                                                        vexp2_p(_mm512_fmsub_ps(_mm512_loadu_ps(srow + j + 16), L, mv)));
                        sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
                        _mm512_storeu_si512(prow + (j / 32) * TILE, to_bf16x32(e0, e1));
                    }
                }
                _mm512_storeu_ps(lvec + i * 16, _mm512_add_ps(_mm512_loadu_ps(lvec + i * 16), sum));
            }
            for (int64_t c0 = 0; c0 < dp; c0 += 32) {
                int64_t t = c0 / 16;
                const uint16_t *b0 = Vp + (t * nkbv + kb0 / 32) * TILE, *b1 = Vp + ((t + 1) * nkbv + kb0 / 32) * TILE;
                bk_ukr(Pa, Pa + nkbp * TILE, b0, b1, nkbp, O + c0, dp, 1); /* O += P V in place */
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            lrow[i] = _mm512_reduce_add_ps(_mm512_loadu_ps(lvec + i * 16));
            float inv = lrow[i] > 0.0f ? 1.0f / lrow[i] : 0.0f;
            float *yr = y + (b * Nq + q0 + i) * HD + h * d;
            for (int64_t c = 0; c < d; c++)
                yr[c] = O[i * dp + c] * inv;
        }
    }
    bk_end();
}

static void BK_FN(attention)(float *y, const float *q, const float *k, const float *v, int64_t B, int64_t Nq,
                             int64_t Nk, int heads, int64_t d, float scale, bool causal, float *ws, int nthreads)
{
    int64_t tasks = B * heads * ((Nq + 31) / 32);
    int nt = nthreads > 1 && tasks > 1 ? (int)bmin(nthreads, tasks) : 1;
    if (nt == 1) {
        BK_FN(attn_thread)(y, q, k, v, B, Nq, Nk, heads, d, scale, causal, ws, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    BK_FN(attn_thread)(y, q, k, v, B, Nq, Nk, heads, d, scale, causal, ws, omp_get_thread_num(), omp_get_num_threads());
}

static void BK_FN(conv_pad)(uint16_t *dst, const float *x, int64_t C, int64_t H, int64_t W, const int pads[4],
                            int nthreads)
{
    int64_t Hp = H + pads[0] + pads[2], Wp = W + pads[1] + pads[3];
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t cr = 0; cr < C * Hp; cr++) {
        int64_t c = cr / Hp, r = cr % Hp - pads[0];
        uint16_t *d = dst + cr * Wp;
        if (r < 0 || r >= H) {
            memset(d, 0, (size_t)Wp * 2);
            continue;
        }
        memset(d, 0, (size_t)pads[1] * 2);
        const float *xr = x + (c * H + r) * W;
        uint16_t *dd = d + pads[1];
        for (int64_t j = 0; j < W; j += 32)
            _mm512_mask_storeu_epi16(dd + j, bm32(W - j), ld_row_bf16(xr + j, SD_F32, W - j));
        memset(dd + W, 0, (size_t)pads[3] * 2);
    }
}

#include "backend/cpu/cpu_kern_bf16_dconv.h"

static void BK_FN(linear_pack)(uint16_t *dst, const void *w, sd_dtype dt, int64_t N, int64_t K)
{
    sd_gemm g = {.K = K, .N = N, .b = w, .b_dt = dt, .ldb = K, .bkind = SD_GB_TRANS};
    pack_b(&g, dst, 0, K, 0, N);
}

static const sd_cpu_bf16_kern bk_table = {
    .name = BK_NAME,
    .gemm_ws = BK_FN(gemm_ws),
    .gemm = BK_FN(gemm),
    .attn_ws = BK_FN(attn_ws),
    .attention = BK_FN(attention),
    .peak = bk_peak,
    .conv_pad = BK_FN(conv_pad),
    .dconv_image = BK_FN(dconv_image),
    .dconv_image_cl = BK_FN(dconv_image_cl),
    .dconv_weight = BK_FN(dconv_weight),
    .dconv = BK_FN(dconv),
    .linear_pack = BK_FN(linear_pack),
};

const sd_cpu_bf16_kern *BK_GETTER(void) { return &bk_table; }
