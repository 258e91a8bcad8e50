/* The CPU kernels, written once against a small vector abstraction and
 * compiled per instruction set. Included by cpu_kern_avx512.c / cpu_kern_avx2.c
 * after they define (inside their target pragma):
 *   KERN_NAME, KERN_FN(name), KERN_GETTER, VL (floats per vector), NVMAX
 *   (vectors per GEMM panel), the vector type V and vzero vset1 vld vst vldn vstn
 *   vldr (lanes [a,b) only) vtail vadd vsub vmul vdiv vmax vmin vfma vfnma vhsum vhmax vabs vcopysign
 *   vld_f16 vld_bf16 vexp, the double accumulator VD (vd_zero vd_add vd_addsq
 *   vd_sum), the 8x8 AVX transpose t8x8 with ld8_f16/ld8_bf16, kern_supported().
 *
 * GEMM (Goto/BLIS structure): each thread owns a rectangle of C (a column
 * range, or a row range when B is the cheaper operand to duplicate). For each
 * NC column block and KC depth block it packs B into panels of NR = NVMAX*VL
 * columns ([k][NR], zero-padded) and runs the MR x NR micro-kernel over MC row
 * blocks. A is read in place with its row stride (F32) or converted block-wise
 * (F16/BF16); the micro-kernel broadcasts A values, so A needs no panel
 * layout. Threads never wait for each other inside a GEMM.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#define MR 6
#define NR (NVMAX * VL)

/* Block sizes (floats), tuned on a Zen 4/5-class core (48 KiB L1d, 1 MiB L2): KC 512 to 640 and MC
 * 96 to 192 were within noise of each other, KC 128 was 30% slower on 1x1/linear shapes; overridable
 * at compile time for tuning. */
#ifndef GEMM_KC
#define GEMM_KC 512
#endif
#ifndef GEMM_MC
#define GEMM_MC 192
#endif
#ifndef GEMM_NC
#define GEMM_NC 512
#endif

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))

static ALWAYS_INLINE int64_t kmin(int64_t a, int64_t b) { return a < b ? a : b; }
static ALWAYS_INLINE int64_t kmax(int64_t a, int64_t b) { return a > b ? a : b; }

/* ------------------------------------------------------------------ micro-kernel
 * C[i][0..ncols) (+)= sum_k A[i*lda + k] * B[k*ldb + 0..nv*VL) for i < mr (mr <= MR).
 * Rows >= mr read row mr-1 (never past A) and are not stored. */
static ALWAYS_INLINE void ukr_body(const int nv, int64_t K, const float *A, int64_t lda, int mr, const float *B,
                                  int64_t ldb, float *C, int64_t ldc, int64_t ncols, int acc)
{
    const float *a0 = A, *a1 = A + (mr > 1 ? 1 : 0) * lda, *a2 = A + (mr > 2 ? 2 : mr - 1) * lda,
                *a3 = A + (mr > 3 ? 3 : mr - 1) * lda, *a4 = A + (mr > 4 ? 4 : mr - 1) * lda,
                *a5 = A + (mr > 5 ? 5 : mr - 1) * lda;
    V c[MR][NVMAX];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVMAX; v++)
            c[i][v] = vzero();
    for (int64_t k = 0; k < K; k++) {
        V b[NVMAX];
#pragma GCC unroll 8
        for (int v = 0; v < NVMAX; v++)
            if (v < nv)
                b[v] = vld(B + v * VL);
        B += ldb;
        V a;
#define UKR_ROW(i)                                      \
    a = vset1(a##i[k]);                                 \
    _Pragma("GCC unroll 8") for (int v = 0; v < NVMAX; v++) if (v < nv) c[i][v] = vfma(a, b[v], c[i][v]);
        UKR_ROW(0)
        UKR_ROW(1)
        UKR_ROW(2)
        UKR_ROW(3)
        UKR_ROW(4)
        UKR_ROW(5)
#undef UKR_ROW
    }
    if (mr == MR && ncols == (int64_t)nv * VL) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < NVMAX; v++)
                if (v < nv) {
                    float *cp = C + i * ldc + v * VL;
                    vst(cp, acc ? vadd(vld(cp), c[i][v]) : c[i][v]);
                }
        return;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (i >= mr)
            break;
#pragma GCC unroll 8
        for (int v = 0; v < NVMAX; v++) {
            if (v >= nv)
                break;
            int64_t w = ncols - v * VL;
            float *cp = C + i * ldc + v * VL;
            if (w >= VL)
                vst(cp, acc ? vadd(vld(cp), c[i][v]) : c[i][v]);
            else if (w > 0)
                vstn(cp, acc ? vadd(vldn(cp, w), c[i][v]) : c[i][v], w);
        }
    }
}

typedef void (*ukr_fn)(int64_t K, const float *A, int64_t lda, int mr, const float *B, int64_t ldb, float *C,
                       int64_t ldc, int64_t ncols, int acc);

#define UKR_INST(nv)                                                                                              \
    static NOINLINE void KERN_FN(ukr##nv)(int64_t K, const float *A, int64_t lda, int mr, const float *B,          \
                                          int64_t ldb, float *C, int64_t ldc, int64_t ncols, int acc)             \
    {                                                                                                             \
        ukr_body(nv, K, A, lda, mr, B, ldb, C, ldc, ncols, acc);                                                  \
    }
UKR_INST(1)
UKR_INST(2)
#if NVMAX >= 4
UKR_INST(3)
UKR_INST(4)
static const ukr_fn k_ukr[5] = {NULL, KERN_FN(ukr1), KERN_FN(ukr2), KERN_FN(ukr3), KERN_FN(ukr4)};
#else
static const ukr_fn k_ukr[3] = {NULL, KERN_FN(ukr1), KERN_FN(ukr2)};
#endif

/* ------------------------------------------------------------------ B packing
 * One panel: columns [n0, n0+nc) (nc <= NR), depth [k0, k0+kc), stored as dst[k*w + j]
 * with w = nc rounded up to VL, zero beyond nc. */

static inline int64_t panel_width(int64_t nc) { return (nc + VL - 1) / VL * VL; }

static void pack_b_rowmajor(const sd_gemm *g, float *dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc)
{
    int64_t w = panel_width(nc);
    const float *src = (const float *)g->b + k0 * g->ldb + n0;
    for (int64_t k = 0; k < kc; k++, src += g->ldb, dst += w) {
        int64_t j = 0;
        for (; j + VL <= nc; j += VL)
            vst(dst + j, vld(src + j));
        if (j < w)
            vst(dst + j, vldn(src + j, nc - j)); /* the rest of the vector becomes zero */
    }
}

/* 8 values of row r of a transposed B (row = one column of B), converted to F32 */
static ALWAYS_INLINE __m256 ld8_any(const void *b, sd_dtype dt, int64_t off)
{
    if (dt == SD_F16)
        return ld8_f16((const uint16_t *)b + off);
    if (dt == SD_BF16)
        return ld8_bf16((const uint16_t *)b + off);
    return _mm256_loadu_ps((const float *)b + off);
}

static ALWAYS_INLINE float ld1_any(const void *b, sd_dtype dt, int64_t off)
{
    if (dt == SD_F16)
        return sd_f16_to_f32(((const uint16_t *)b)[off]);
    if (dt == SD_BF16)
        return sd_bf16_to_f32(((const uint16_t *)b)[off]);
    return ((const float *)b)[off];
}

/* B[k][n] = b[n*ldb + k]: 8x8 blocks are transposed in registers */
static void pack_b_trans(const sd_gemm *g, float *dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc)
{
    int64_t w = panel_width(nc), ldb = g->ldb;
    sd_dtype dt = g->b_dt;
    int64_t j = 0;
    for (; j + 8 <= nc; j += 8) {
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = ld8_any(g->b, dt, (n0 + j + i) * ldb + k0 + k);
            t8x8(r);
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(dst + (k + i) * w + j, r[i]);
        }
        for (; k < kc; k++)
            for (int i = 0; i < 8; i++)
                dst[k * w + j + i] = ld1_any(g->b, dt, (n0 + j + i) * ldb + k0 + k);
    }
    for (; j < w; j++)
        for (int64_t k = 0; k < kc; k++)
            dst[k * w + j] = j < nc ? ld1_any(g->b, dt, (n0 + j) * ldb + k0 + k) : 0.0f;
}

/* Implicit im2col from an NCHW image, for a whole block: columns [n0, n0+nc) as panels of NR, depth
 * [k0, k0+kc). The block's pixels are cut into runs that stay within one output row and one panel;
 * for each depth row k every run is one (masked) vector copy from the input row, so the input is read
 * in long contiguous stretches. `seg` holds 4*nc int64 of scratch. */
static void pack_b_conv_block(const sd_gemm *g, float *Bp, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t *seg)
{
    const float *x = g->b;
    int64_t H = g->H, W = g->W, WO = g->WO, KHW = g->KH * g->KW;
    int s = g->stride;
    int64_t npan = (nc + NR - 1) / NR, wlast = panel_width(nc - (npan - 1) * NR);
    /* run r: seg[4r] = oh, seg[4r+1] = ow, seg[4r+2] = len, seg[4r+3] = offset of (k = 0) in Bp | width << 48 */
    int64_t nseg = 0;
    for (int64_t n = n0; n < n0 + nc;) {
        int64_t oh = n / WO, ow = n % WO, p = (n - n0) / NR, col = (n - n0) % NR;
        int64_t len = kmin(kmin(n0 + nc - n, WO - ow), NR - col);
        int64_t w = p == npan - 1 ? wlast : NR;
        seg[4 * nseg] = oh;
        seg[4 * nseg + 1] = ow;
        seg[4 * nseg + 2] = len;
        seg[4 * nseg + 3] = (p * NR * kc + col) | (w << 48);
        nseg++;
        n += len;
    }
    /* zero the padding columns of the last panel */
    if (wlast > nc - (npan - 1) * NR) {
        float *lp = Bp + (npan - 1) * NR * kc;
        int64_t used = nc - (npan - 1) * NR;
        for (int64_t k = 0; k < kc; k++)
            for (int64_t j = used; j < wlast; j++)
                lp[k * wlast + j] = 0.0f;
    }
    /* the input rows the block reads, per channel: prefetched one channel ahead */
    int64_t ih_lo = kmax(0, seg[0] * s - g->pad_t), ih_hi = kmin(H, seg[4 * (nseg - 1)] * s - g->pad_t + g->KH);
    int64_t c = k0 / KHW, r = k0 % KHW, kh = r / g->KW, kw = r % g->KW;
    for (int64_t k = 0; k < kc; k++) {
        const float *xc = x + c * H * W;
        if (kh == 0 && kw == 0 && c + 1 < g->C && ih_hi > ih_lo) {
            const char *pf = (const char *)(xc + H * W + ih_lo * W), *pe = (const char *)(xc + H * W + ih_hi * W);
            for (; pf < pe; pf += 64)
                _mm_prefetch(pf, _MM_HINT_T0);
        }
        for (int64_t sg = 0; sg < nseg; sg++) {
            int64_t len = seg[4 * sg + 2], ih = seg[4 * sg] * s - g->pad_t + kh;
            int64_t w = seg[4 * sg + 3] >> 48;
            float *d = Bp + (seg[4 * sg + 3] & (((int64_t)1 << 48) - 1)) + k * w;
            if (ih < 0 || ih >= H) {
                memset(d, 0, (size_t)len * sizeof(float));
            } else if (s == 1) {
                /* d[j] = row[iw0 + j] for j in [lo, hi), 0 elsewhere; masked loads never touch the
                 * lanes outside [lo, hi), so nothing outside the row is read */
                int64_t iw0 = seg[4 * sg + 1] - g->pad_l + kw;
                const float *src = xc + ih * W + iw0;
                int64_t lo = kmin(len, kmax(0, -iw0)), hi = kmax(lo, kmin(len, W - iw0));
                int64_t jj = 0;
                for (; jj + VL <= len; jj += VL) {
                    if (jj >= lo && jj + VL <= hi)
                        vst(d + jj, vld(src + jj));
                    else
                        vst(d + jj, vldr(src + jj, kmin(VL, kmax(0, lo - jj)), kmax(0, kmin(VL, hi - jj))));
                }
                if (jj < len)
                    vstn(d + jj, vldr(src + jj, kmin(VL, kmax(0, lo - jj)), kmax(0, kmin(VL, hi - jj))), len - jj);
            } else {
                const float *row = xc + ih * W;
                int64_t iw = seg[4 * sg + 1] * s - g->pad_l + kw;
                for (int64_t jj = 0; jj < len; jj++, iw += s)
                    d[jj] = (iw >= 0 && iw < W) ? row[iw] : 0.0f;
            }
        }
        if (++kw == g->KW) {
            kw = 0;
            if (++kh == g->KH) {
                kh = 0;
                c++;
            }
        }
    }
}

/* the B block [k0, k0+kc) x [n0, n0+nc) as panels of NR columns at Bp + j*NR*kc */
static void pack_b_block(const sd_gemm *g, float *Bp, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t *seg)
{
    if (g->bkind == SD_GB_CONV) {
        pack_b_conv_block(g, Bp, k0, kc, n0, nc, seg);
        return;
    }
    for (int64_t j = 0; j * NR < nc; j++) {
        if (g->bkind == SD_GB_TRANS)
            pack_b_trans(g, Bp + j * NR * kc, k0, kc, n0 + j * NR, kmin(NR, nc - j * NR));
        else
            pack_b_rowmajor(g, Bp + j * NR * kc, k0, kc, n0 + j * NR, kmin(NR, nc - j * NR));
    }
}

/* rows [m0, m0+mc) x depth [k0, k0+kc) of a F16/BF16 A, as F32 rows of stride kc */
static void convert_a(const sd_gemm *g, float *dst, int64_t m0, int64_t mc, int64_t k0, int64_t kc)
{
    for (int64_t i = 0; i < mc; i++) {
        const uint16_t *src = (const uint16_t *)g->a + (m0 + i) * g->lda + k0;
        float *d = dst + i * kc;
        int64_t k = 0;
        if (g->a_dt == SD_F16)
            for (; k + VL <= kc; k += VL)
                vst(d + k, vld_f16(src + k));
        else
            for (; k + VL <= kc; k += VL)
                vst(d + k, vld_bf16(src + k));
        for (; k < kc; k++)
            d[k] = g->a_dt == SD_F16 ? sd_f16_to_f32(src[k]) : sd_bf16_to_f32(src[k]);
    }
}

/* per thread: the B block, the A conversion block, the conv run table (4*NC int64 = 8*NC floats) */
static size_t gemm_ws_thread(void)
{
    return (size_t)GEMM_KC * GEMM_NC + (size_t)GEMM_MC * GEMM_KC + 8 * (size_t)GEMM_NC + 64;
}

static size_t KERN_FN(gemm_ws)(int nthreads) { return (size_t)(nthreads > 0 ? nthreads : 1) * gemm_ws_thread(); }

/* C[m0:m1, n0:n1] on one thread: its own B packing and A conversion buffers, no synchronisation. */
static void gemm_rect(const sd_gemm *g, float *ws, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    float *Bp = ws, *Ac = ws + (size_t)GEMM_KC * GEMM_NC;
    int64_t *seg = (int64_t *)(Ac + (size_t)GEMM_MC * GEMM_KC);
    int64_t K = g->K, ldc = g->ldc;
    bool a_f32 = g->a_dt == SD_F32;
    for (int64_t jc = n0; jc < n1; jc += GEMM_NC) {
        int64_t nc = kmin(GEMM_NC, n1 - jc), npan = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < K; pc += GEMM_KC) {
            int64_t kc = kmin(GEMM_KC, K - pc);
            pack_b_block(g, Bp, pc, kc, jc, nc, seg);
            int acc = g->accumulate || pc > 0;
            for (int64_t ic = m0; ic < m1; ic += GEMM_MC) {
                int64_t mc = kmin(GEMM_MC, m1 - ic), lda;
                const float *Ab;
                if (a_f32) {
                    Ab = (const float *)g->a + ic * g->lda + pc;
                    lda = g->lda;
                } else {
                    convert_a(g, Ac, ic, mc, pc, kc);
                    Ab = Ac;
                    lda = kc;
                }
                for (int64_t j = 0; j < npan; j++) {
                    int64_t ncols = kmin(NR, nc - j * NR), nv = (ncols + VL - 1) / VL;
                    const float *bp = Bp + j * NR * kc;
                    float *cp = g->c + ic * ldc + jc + j * NR;
                    ukr_fn f = k_ukr[nv];
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        f(kc, Ab + ir * lda, lda, (int)kmin(MR, mc - ir), bp, nv * VL, cp + ir * ldc, ldc, ncols,
                          acc);
                }
            }
        }
    }
}

/* Threads take column ranges (each packs only its part of B, A is read by all) or row ranges
 * (each packs all of B, A is split): whichever duplicates less work. No barriers inside, so a
 * thread that the OS deschedules delays only its own share. */
static bool gemm_split_rows(const sd_gemm *g, int nt)
{
    int64_t npan = (g->N + NR - 1) / NR, mpan = (g->M + MR - 1) / MR;
    if (npan < 2 * (int64_t)nt)
        return true;
    if (mpan < 2 * (int64_t)nt)
        return false;
    double dup_b = (double)g->K * g->N;                                      /* packing B once more */
    double dup_a = (double)g->M * g->K * (g->a_dt == SD_F32 ? 0.25 : 1.0); /* reading (converting) A again */
    return dup_b < dup_a;
}

static NOINLINE void KERN_FN(gemm_thread)(const sd_gemm *g, float *ws, int tid, int nt)
{
    ws += (size_t)tid * gemm_ws_thread();
    if (gemm_split_rows(g, nt)) {
        int64_t mpan = (g->M + MR - 1) / MR;
        int64_t m0 = mpan * tid / nt * MR, m1 = kmin(g->M, mpan * (tid + 1) / nt * MR);
        if (m0 < m1)
            gemm_rect(g, ws, m0, m1, 0, g->N);
    } else {
        int64_t npan = (g->N + NR - 1) / NR;
        int64_t n0 = npan * tid / nt * NR, n1 = kmin(g->N, npan * (tid + 1) / nt * NR);
        if (n0 < n1)
            gemm_rect(g, ws, 0, g->M, n0, n1);
    }
}

static void KERN_FN(gemm)(const sd_gemm *g, float *ws, int nthreads)
{
    if (g->M <= 0 || g->N <= 0)
        return;
    if (g->K <= 0) { /* empty sum */
        if (!g->accumulate)
            for (int64_t m = 0; m < g->M; m++)
                memset(g->c + m * g->ldc, 0, (size_t)g->N * sizeof(float));
        return;
    }
    /* small problems are not worth waking a second thread */
    int nt = nthreads > 1 && (double)g->M * g->N * g->K >= 2e6 ? nthreads : 1;
    if (nt == 1) {
        gemm_rect(g, ws, 0, g->M, 0, g->N);
        return;
    }
#pragma omp parallel num_threads(nt)
    KERN_FN(gemm_thread)(g, ws, omp_get_thread_num(), omp_get_num_threads());
}

/* ------------------------------------------------------------------ attention
 * Per task (batch, head, QB query rows): online softmax over key blocks of BK.
 * K of the head is packed once per head into NR-column panels ([d][NR]), V into
 * rows of dp = d rounded up to VL. Per key block and 6-row micro block:
 * S = Q K^T (micro-kernel), running max/sum update and exp in place, then
 * O += P V (micro-kernel). Q is pre-scaled by `scale`. */

#define ATT_QB (8 * MR)

static int64_t att_bk(int64_t d) { return d <= 64 ? 256 : 128; }

static size_t att_ws_thread(int64_t Nk, int64_t d)
{
    int64_t dp = (d + VL - 1) / VL * VL, kpan = (Nk + NR - 1) / NR;
    return (size_t)(kpan * NR * d + Nk * dp + ATT_QB * d + ATT_QB * dp + MR * att_bk(d) + 2 * ATT_QB) + 64;
}

static size_t KERN_FN(attn_ws)(int64_t Nq, int64_t Nk, int64_t d, int nthreads)
{
    (void)Nq;
    return (size_t)(nthreads > 0 ? nthreads : 1) * att_ws_thread(Nk, d);
}

/* y = exp(x - m) for the first n values, zero up to nz; returns the sum */
static ALWAYS_INLINE float exp_row(float *x, int64_t n, int64_t nz, float m)
{
    V mv = vset1(m), s = vzero();
    int64_t j = 0;
    for (; j + VL <= n; j += VL) {
        V e = vexp(vsub(vld(x + j), mv));
        vst(x + j, e);
        s = vadd(s, e);
    }
    if (j < n) {
        V e = vtail(vzero(), vexp(vsub(vldn(x + j, n - j), mv)), n - j);
        vst(x + j, e); /* zeros past n */
        s = vadd(s, e);
        j += VL;
    }
    for (; j < nz; j++)
        x[j] = 0.0f;
    return vhsum(s);
}

static ALWAYS_INLINE float max_row(const float *x, int64_t n)
{
    V m = vset1(-INFINITY);
    int64_t j = 0;
    for (; j + VL <= n; j += VL)
        m = vmax(m, vld(x + j));
    if (j < n)
        m = vmax(m, vtail(vset1(-INFINITY), vldn(x + j, n - j), n - j));
    return vhmax(m);
}

static NOINLINE void KERN_FN(attn_thread)(float *y, const float *q, const float *k, const float *v, int64_t B,
                                          int64_t Nq, int64_t Nk, int heads, int64_t d, float scale, bool causal,
                                          float *ws, int tid, int nt)
{
    int64_t HD = heads * d, dp = (d + VL - 1) / VL * VL, kpan = (Nk + NR - 1) / NR, BK = att_bk(d);
    float *Kp = ws + (size_t)tid * att_ws_thread(Nk, d);
    float *Vp = Kp + kpan * NR * d, *Qb = Vp + Nk * dp, *O = Qb + ATT_QB * d, *S = O + ATT_QB * dp;
    float *mrow = S + MR * BK, *lrow = mrow + ATT_QB;
    int64_t qblocks = (Nq + ATT_QB - 1) / ATT_QB, tasks = B * heads * qblocks;
    int64_t t0 = tasks * tid / nt, t1 = tasks * (tid + 1) / nt, cached = -1;
    for (int64_t task = t0; task < t1; task++) {
        int64_t bh = task / qblocks, qb = task % qblocks, b = bh / heads, h = bh % heads;
        if (bh != cached) { /* pack this head's K (transposed, in panels) and V */
            for (int64_t p = 0; p < kpan; p++) {
                float *kp = Kp + p * NR * d;
                for (int64_t jj = 0; jj < NR; jj++) {
                    int64_t j = p * NR + jj;
                    if (j < Nk) {
                        const float *kr = k + (b * Nk + j) * HD + h * d;
                        for (int64_t c = 0; c < d; c++)
                            kp[c * NR + jj] = kr[c];
                    } else {
                        for (int64_t c = 0; c < d; c++)
                            kp[c * NR + jj] = 0.0f;
                    }
                }
            }
            for (int64_t j = 0; j < Nk; j++) {
                memcpy(Vp + j * dp, v + (b * Nk + j) * HD + h * d, (size_t)d * sizeof(float));
                for (int64_t c = d; c < dp; c++)
                    Vp[j * dp + c] = 0.0f;
            }
            cached = bh;
        }
        int64_t q0 = qb * ATT_QB, nq = kmin(ATT_QB, Nq - q0);
        for (int64_t i = 0; i < nq; i++) {
            const float *qr = q + (b * Nq + q0 + i) * HD + h * d;
            for (int64_t c = 0; c < d; c++)
                Qb[i * d + c] = qr[c] * scale;
            mrow[i] = -INFINITY;
            lrow[i] = 0.0f;
        }
        memset(O, 0, (size_t)(nq * dp) * sizeof(float));
        int64_t kend = causal ? kmin(Nk, q0 + nq) : Nk;
        for (int64_t kb = 0; kb < kend; kb += BK) {
            int64_t bk = kmin(BK, kend - kb);
            for (int64_t r0 = 0; r0 < nq; r0 += MR) {
                int mr = (int)kmin(MR, nq - r0);
                /* keys of this block any row of the micro block may see */
                int64_t kv = causal ? kmin(bk, q0 + r0 + mr - kb) : bk;
                if (kv <= 0)
                    continue;
                for (int64_t p0 = 0; p0 < kv; p0 += NR) {
                    int64_t ncols = kmin(NR, kv - p0), nv = (ncols + VL - 1) / VL;
                    k_ukr[nv](d, Qb + r0 * d, d, mr, Kp + ((kb + p0) / NR) * NR * d, NR, S + p0, BK, ncols, 0);
                }
                for (int i = 0; i < mr; i++) {
                    float *srow = S + i * BK;
                    int64_t lim = causal ? kmax(0, kmin(kv, q0 + r0 + i + 1 - kb)) : kv;
                    float *mi = mrow + r0 + i, *li = lrow + r0 + i;
                    if (lim == 0) {
                        memset(srow, 0, (size_t)kv * sizeof(float));
                        continue;
                    }
                    float mnew = fmaxf(*mi, max_row(srow, lim));
                    if (mnew != *mi) {
                        float alpha = expf(*mi - mnew); /* 0 the first time (m = -inf) */
                        *li *= alpha;
                        float *orow = O + (r0 + i) * dp;
                        V av = vset1(alpha);
                        for (int64_t c = 0; c < dp; c += VL)
                            vst(orow + c, vmul(vld(orow + c), av));
                        *mi = mnew;
                    }
                    *li += exp_row(srow, lim, kv, mnew);
                }
                for (int64_t c0 = 0; c0 < dp; c0 += NR) {
                    int64_t ncols = kmin(NR, dp - c0), nv = ncols / VL;
                    k_ukr[nv](kv, S, BK, mr, Vp + kb * dp + c0, dp, O + r0 * dp + c0, dp, ncols, 1);
                }
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            float inv = lrow[i] > 0.0f ? 1.0f / lrow[i] : 0.0f; /* no keys (Nk = 0): zeros, as the BLAS path */
            float *yr = y + (b * Nq + q0 + i) * HD + h * d;
            const float *orow = O + i * dp;
            for (int64_t c = 0; c < d; c++)
                yr[c] = orow[c] * inv;
        }
    }
}

static void KERN_FN(attention)(float *y, const float *q, const float *k, const float *v, int64_t B, int64_t Nq,
                               int64_t Nk, int heads, int64_t d, float scale, bool causal, float *ws, int nthreads)
{
    int64_t tasks = B * heads * ((Nq + ATT_QB - 1) / ATT_QB);
    int nt = nthreads > 1 && tasks > 1 ? (int)kmin(nthreads, tasks) : 1;
    if (nt == 1) {
        KERN_FN(attn_thread)(y, q, k, v, B, Nq, Nk, heads, d, scale, causal, ws, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    KERN_FN(attn_thread)(y, q, k, v, B, Nq, Nk, heads, d, scale, causal, ws, omp_get_thread_num(),
                         omp_get_num_threads());
}

/* ------------------------------------------------------------------ elementwise */

static ALWAYS_INLINE V vsigmoid(V x) { return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vsub(vzero(), x)))); }
static ALWAYS_INLINE V vsilu(V x) { return vdiv(x, vadd(vset1(1.0f), vexp(vsub(vzero(), x)))); }

/* erf: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the form PyTorch's vectorised erf uses */
static ALWAYS_INLINE V verf(V x)
{
    V a = vabs(x);
    V t = vdiv(vset1(1.0f), vfma(vset1(0.3275911f), a, vset1(1.0f)));
    V p = vset1(1.061405429f);
    p = vfma(p, t, vset1(-1.453152027f));
    p = vfma(p, t, vset1(1.421413741f));
    p = vfma(p, t, vset1(-0.284496736f));
    p = vfma(p, t, vset1(0.254829592f));
    p = vmul(p, t);
    V e = vexp(vmul(vsub(vzero(), a), a));
    return vcopysign(vfnma(p, e, vset1(1.0f)), x);
}

static ALWAYS_INLINE V vgelu(V x)
{
    V h = vmul(vset1(0.5f), x);
    return vfma(h, verf(vmul(x, vset1(0.70710678118654752f))), h);
}

static ALWAYS_INLINE V unary_v(V x, sd_unary_op op)
{
    switch (op) {
    case SD_UNARY_SILU: return vsilu(x);
    case SD_UNARY_GELU: return vgelu(x);
    case SD_UNARY_QUICK_GELU: return vdiv(x, vadd(vset1(1.0f), vexp(vmul(vset1(-1.702f), x))));
    case SD_UNARY_RELU: return vmax(x, vzero()); /* NaN -> 0, like the scalar v > 0 ? v : 0 */
    case SD_UNARY_SIGMOID: return vsigmoid(x);
    case SD_UNARY_EXP: return vexp(x);
    default: return x;
    }
}

#define UNARY_LOOP(op)                                   \
    do {                                                 \
        int64_t i = 0;                                   \
        for (; i + VL <= n; i += VL)                     \
            vst(y + i, unary_v(vld(x + i), op));         \
        if (i < n)                                       \
            vstn(y + i, unary_v(vldn(x + i, n - i), op), n - i); \
    } while (0)

static bool KERN_FN(unary)(float *y, const float *x, int64_t n, sd_unary_op op)
{
    switch (op) {
    case SD_UNARY_SILU: UNARY_LOOP(SD_UNARY_SILU); return true;
    case SD_UNARY_GELU: UNARY_LOOP(SD_UNARY_GELU); return true;
    case SD_UNARY_QUICK_GELU: UNARY_LOOP(SD_UNARY_QUICK_GELU); return true;
    case SD_UNARY_RELU: UNARY_LOOP(SD_UNARY_RELU); return true;
    case SD_UNARY_SIGMOID: UNARY_LOOP(SD_UNARY_SIGMOID); return true;
    case SD_UNARY_EXP: UNARY_LOOP(SD_UNARY_EXP); return true;
    default: return false; /* tanh-based ops stay scalar */
    }
}

static void KERN_FN(geglu)(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        vst(y + i, vmul(vld(x + i), vgelu(vld(x + n + i))));
    if (i < n)
        vstn(y + i, vmul(vldn(x + i, n - i), vgelu(vldn(x + n + i, n - i))), n - i);
}

static void KERN_FN(softmax)(float *y, const float *x, int64_t n, float scale)
{
    V sc = vset1(scale), m = vset1(-INFINITY);
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        m = vmax(m, vmul(vld(x + i), sc));
    if (i < n)
        m = vmax(m, vtail(vset1(-INFINITY), vmul(vldn(x + i, n - i), sc), n - i));
    V mv = vset1(vhmax(m)), s = vzero();
    for (i = 0; i + VL <= n; i += VL) {
        V e = vexp(vfma(vld(x + i), sc, vsub(vzero(), mv)));
        vst(y + i, e);
        s = vadd(s, e);
    }
    if (i < n) {
        V e = vtail(vzero(), vexp(vfma(vldn(x + i, n - i), sc, vsub(vzero(), mv))), n - i);
        vstn(y + i, e, n - i);
        s = vadd(s, e);
    }
    V inv = vset1(1.0f / vhsum(s));
    for (i = 0; i + VL <= n; i += VL)
        vst(y + i, vmul(vld(y + i), inv));
    if (i < n)
        vstn(y + i, vmul(vldn(y + i, n - i), inv), n - i);
}

static double KERN_FN(sum)(const float *x, int64_t n)
{
    VD a = vd_zero(), b = vd_zero();
    int64_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        a = vd_add(a, vld(x + i));
        b = vd_add(b, vld(x + i + VL));
    }
    for (; i + VL <= n; i += VL)
        a = vd_add(a, vld(x + i));
    if (i < n)
        b = vd_add(b, vldn(x + i, n - i));
    return vd_sum(a) + vd_sum(b);
}

static double KERN_FN(sqdev)(const float *x, int64_t n, float mhi, float mlo)
{
    V h = vset1(mhi), l = vset1(mlo);
    VD a = vd_zero(), b = vd_zero();
    int64_t i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        a = vd_addsq(a, vsub(vsub(vld(x + i), h), l));
        b = vd_addsq(b, vsub(vsub(vld(x + i + VL), h), l));
    }
    for (; i + VL <= n; i += VL)
        a = vd_addsq(a, vsub(vsub(vld(x + i), h), l));
    if (i < n)
        b = vd_addsq(b, vtail(vzero(), vsub(vsub(vldn(x + i, n - i), h), l), n - i));
    return vd_sum(a) + vd_sum(b);
}

static void KERN_FN(norm_affine)(float *y, const float *x, int64_t n, float mhi, float mlo, float sc, float sh,
                                 bool silu)
{
    V h = vset1(mhi), l = vset1(mlo), s = vset1(sc), t = vset1(sh);
    int64_t i = 0;
    if (silu) {
        for (; i + VL <= n; i += VL)
            vst(y + i, vsilu(vfma(vsub(vsub(vld(x + i), h), l), s, t)));
        if (i < n)
            vstn(y + i, vsilu(vfma(vsub(vsub(vldn(x + i, n - i), h), l), s, t)), n - i);
    } else {
        for (; i + VL <= n; i += VL)
            vst(y + i, vfma(vsub(vsub(vld(x + i), h), l), s, t));
        if (i < n)
            vstn(y + i, vfma(vsub(vsub(vldn(x + i, n - i), h), l), s, t), n - i);
    }
}

static void KERN_FN(norm_row)(float *y, const float *x, int64_t n, float mhi, float mlo, float rstd, const float *g,
                              const float *b)
{
    V h = vset1(mhi), l = vset1(mlo), r = vset1(rstd);
    int64_t i = 0;
    for (; i + VL <= n; i += VL)
        vst(y + i, vadd(vmul(vmul(vsub(vsub(vld(x + i), h), l), r), vld(g + i)), vld(b + i))); /* no FMA: as the scalar */
    for (; i < n; i++)
        y[i] = ((x[i] - mhi) - mlo) * rstd * g[i] + b[i];
}

/* ------------------------------------------------------------------ table */

/* the FMA's register-only peak, measured as the bf16 / int8 kernels' peak (cpu_kern.h): 16 independent
 * vfma per round (VL lanes, one multiply-add each) */
static double KERN_FN(peak)(int64_t iters)
{
    V acc[16];
    for (int i = 0; i < 16; i++)
        acc[i] = vzero();
    V a = vset1(1.0f), b = vset1(0x1p-20f);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            acc[i] = vfma(a, b, acc[i]);
        __asm__ volatile("" : "+x"(a), "+x"(b));
    }
    float s = 0;
    for (int i = 0; i < 16; i++)
        s += vhsum(acc[i]);
    __asm__ volatile("" ::"x"(s));
    return (double)iters * 16 * VL;
}

static const sd_cpu_kern k_table = {
    .name = KERN_NAME,
    .vl = VL,
    .gemm_ws = KERN_FN(gemm_ws),
    .gemm = KERN_FN(gemm),
    .attn_ws = KERN_FN(attn_ws),
    .attention = KERN_FN(attention),
    .unary = KERN_FN(unary),
    .geglu = KERN_FN(geglu),
    .softmax = KERN_FN(softmax),
    .sum = KERN_FN(sum),
    .sqdev = KERN_FN(sqdev),
    .norm_affine = KERN_FN(norm_affine),
    .norm_row = KERN_FN(norm_row),
    .peak = KERN_FN(peak),
};

const sd_cpu_kern *KERN_GETTER(void) { return kern_supported() ? &k_table : NULL; }
