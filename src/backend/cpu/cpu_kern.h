/* SIMD kernels of the CPU backend, one table per instruction set.
 *
 * cpu_kern_impl.h holds the kernels once, written against a small vector
 * abstraction; cpu_kern_avx512.c and cpu_kern_avx2.c compile it with their
 * own vector width and `#pragma GCC target`, so the library needs no special
 * compiler flags and picks the widest set the CPU has at run time
 * (__builtin_cpu_supports). Without AVX2 the backend falls back to OpenBLAS
 * and scalar loops (cpu_backend.c).
 *
 * GEMM: C[M,N] (+)= A[M,K] B[K,N], all row-major, C F32.
 *   A is read in place (F32) or converted block by block (F16/BF16).
 *   B is packed into panels of `nr` columns, from a row-major matrix, from the
 *   transpose of a row-major matrix (linear weights [N,K]) or straight from an
 *   NCHW image (implicit im2col: convolutions need no im2col buffer).
 *   The packing buffer lives in a fixed-size workspace (gemm_ws floats).
 * Attention: softmax(q k^T * scale) v per head, flash style (online softmax
 *   over key blocks), scores only ever exist for one 6-row x key-block tile.
 */
#ifndef SD_CPU_KERN_H
#define SD_CPU_KERN_H

#include "backend/backend.h"

typedef enum { SD_GB_ROWMAJOR, SD_GB_TRANS, SD_GB_CONV, SD_GB_CONV_BF16P, SD_GB_PACKED } sd_gemm_bkind;

typedef struct sd_gemm {
    int64_t M, N, K;
    const void *a; /* A[m][k] = a[m*lda + k] */
    sd_dtype a_dt;
    int64_t lda;
    const void *b;
    sd_dtype b_dt;
    int64_t ldb;
    sd_gemm_bkind bkind;
    /* SD_GB_ROWMAJOR: B[k][n] = b[k*ldb + n]
     * SD_GB_TRANS:    B[k][n] = b[n*ldb + k]
     * SD_GB_CONV:     b = one image [C][H][W] (F32); k = (c*KH + kh)*KW + kw, n = oh*WO + ow;
     *                 B[k][n] = x[c][oh*stride - pad_t + kh][ow*stride - pad_l + kw], 0 outside
     * SD_GB_CONV_BF16P (bf16 kernels only): b = one zero-padded BF16 image [C][H][W] (conv_pad), stride 1,
     *                 no padding left: B[k][n] = b[(c*H + oh + kh)*W + ow + kw]
     * SD_GB_PACKED (bf16 kernels only): b = B already in B tiles (linear_pack, a linear weight prepared at
     *                 load): the tile of columns [16t, 16t+16) and depth [32d, 32d+32) at (t*up32(K)/32 + d)*512 */
    int64_t C, H, W, KH, KW, WO;
    int stride, pad_t, pad_l;
    float *c; /* C[m][n] = c[m*ldc + n] */
    int64_t ldc;
    bool accumulate; /* C += AB (else C = AB) */
    /* The epilogue of a linear on the bf16 kernels (sd_bk_linear_full: the whole depth in one pass, so each
     * element's fp32 sum s = (AB)[m][n] is final once): v = s + bias[n] (bias NULL: v = s), then
     * C[m][n] = res[m*ldr + n] + v (res NULL: C = v; res may be c itself; accumulate is res = c), or with
     * geglu (N = 2 * the output columns, N a multiple of 32): C[m][j] = the row function
     * geglu(C row, (v[m][j0..j0+n), v[m][N/2+j0..N/2+j0+n)), n) over 32-column runs (cpu_kern's geglu). */
    const float *bias;
    const float *res;
    int64_t ldr;
    void (*geglu)(float *y, const float *x, int64_t n);
    bool c_bf16; /* GEGLU only: C is bf16 (c points to uint16_t), each value rounded to nearest even */
} sd_gemm;

/* The deepest linear the bf16 kernels take in one pass (deeper: depth blocks summed through C, and no
 * epilogue but accumulate) */
#define SD_BK_KFULL 8192
static inline bool sd_bk_linear_full(const sd_gemm *g)
{
    return (g->bkind == SD_GB_PACKED || g->bkind == SD_GB_TRANS) && g->K <= SD_BK_KFULL;
}

typedef struct sd_cpu_kern {
    const char *name;
    int vl; /* floats per vector */
    /* GEMM */
    size_t (*gemm_ws)(int nthreads); /* floats of workspace gemm() needs */
    void (*gemm)(const sd_gemm *g, float *ws, int nthreads);
    /* attention: q [B,Nq,H*d], k,v [B,Nk,H*d] F32 -> y [B,Nq,H*d] */
    size_t (*attn_ws)(int64_t Nq, int64_t Nk, int64_t d, int nthreads); /* floats */
    void (*attention)(float *y, const float *q, const float *k, const float *v, int64_t B, int64_t Nq, int64_t Nk,
                      int heads, int64_t d, float scale, bool causal, float *ws, int nthreads);
    /* elementwise on contiguous rows (the caller splits work across threads) */
    bool (*unary)(float *y, const float *x, int64_t n, sd_unary_op op); /* false: op not vectorised here */
    void (*geglu)(float *y, const float *x, int64_t n);                 /* y[i] = x[i] * gelu(x[n+i]) */
    void (*softmax)(float *y, const float *x, int64_t n, float scale);
    /* normalisation helpers: sum over n values, then the squared deviation from mean (hi + lo) */
    double (*sum)(const float *x, int64_t n);
    double (*sqdev)(const float *x, int64_t n, float mean_hi, float mean_lo);
    /* y = ((x - mean_hi) - mean_lo) * sc + sh, then SiLU when silu */
    void (*norm_affine)(float *y, const float *x, int64_t n, float mean_hi, float mean_lo, float sc, float sh,
                        bool silu);
    /* y[i] = ((x[i] - mean_hi) - mean_lo) * rstd * g[i] + b[i] */
    void (*norm_row)(float *y, const float *x, int64_t n, float mean_hi, float mean_lo, float rstd, const float *g,
                     const float *b);
    /* the fp32 FMA's peak on this core, as sd_cpu_bf16_kern.peak (the yardstick of the bf16 / int8 peaks) */
    double (*peak)(int64_t iters);
} sd_cpu_kern;

/* A direct convolution (precision bf16: cpu_kern_bf16_impl.h; precision int8: cpu_kern_int8_impl.h): the
 * image converted once per conv into a zero-padded channels-last copy (bf16, or u8 with one scale and zero
 * point per image), its channels padded to Cp (a multiple of the channel block: 32 bf16 or 64 int8 values,
 * one tile row) and, for stride s > 1, split into s*s phase planes (padded pixel (r, c) in plane (r % s, c % s)
 * at (r / s, c / s)), so every kernel tap reads the planes at stride 1: output pixel q = oh * Wps + ow (ow < WO;
 * the columns past WO of each plane row are computed and dropped) reads, for tap (kh, kw), pixel q + (kh / s) *
 * Wps + kw / s of plane (kh % s, kw % s). The A tiles (16 output pixels x one channel block) are strided tile
 * loads from that copy (no im2col); the weight is B tiles [up32(O) / 16][KH * KW][Cp / block] (1 KiB each). */
typedef struct sd_dconv {
    int64_t C, H, W, O, KH, KW, HO, WO;
    int stride, pad_t, pad_l;
    int64_t Cp, Hps, Wps; /* channels padded to the block; one phase plane: Hps x Wps pixels */
    int64_t Q, nq;        /* computed output pixels HO * Wps, in nq blocks of 32 */
    size_t x_elems;       /* values of the image copy, with the tail the last pixel block reads */
    size_t w_elems;       /* values of the packed weight's tiles */
} sd_dconv;

/* Where the direct convolution writes one image and what its epilogue adds: y = relu?((conv + bias) + res) */
typedef struct sd_dconv_out {
    void *y;           /* F32 [O][HO][WO], or (cl) the image's SD_LAYOUT_BF16_IMAGE pixels (backend.h) */
    const void *res;   /* NULL, or a residual in y's shape and layout */
    const float *bias; /* [O] or NULL */
    bool cl;           /* y and res in the image layout (its border and tail are the caller's) */
    bool relu;
} sd_dconv_out;

/* the largest kernel (KH * KW) of the direct convolution */
#define SD_DCONV_MAX_TAPS 64

/* the geometry for channel blocks of cblk values (32: bf16, SD_I8_CBLK: int8) */
static inline void sd_dconv_geom_blk(sd_dconv *d, int64_t cblk, int64_t C, int64_t H, int64_t W, int64_t O,
                                     int64_t KH, int64_t KW, int64_t HO, int64_t WO, int stride, int pad_t, int pad_l)
{
    int64_t s = stride;
    *d = (sd_dconv){.C = C, .H = H, .W = W, .O = O, .KH = KH, .KW = KW, .HO = HO, .WO = WO, .stride = stride,
                    .pad_t = pad_t, .pad_l = pad_l};
    d->Cp = (C + cblk - 1) / cblk * cblk;
    d->Hps = HO + (KH - 1) / s;
    d->Wps = WO + (KW - 1) / s;
    d->Q = HO * d->Wps;
    d->nq = (d->Q + 31) / 32;
    int64_t plane = d->Hps * d->Wps, pix = s * s * plane;
    /* tail reads: a block of 32 pixels may start at any computed pixel (Q + 31 pixels), plus the farthest tap */
    int64_t last = (s * s - 1) * plane + ((KH - 1) / s) * d->Wps + (KW - 1) / s + d->nq * 32 + 32;
    d->x_elems = (size_t)((last > pix ? last : pix) * d->Cp);
    d->w_elems = (size_t)((O + 31) / 32 * 32 * KH * KW * d->Cp);
}

/* the bf16 direct convolution's geometry */
static inline void sd_dconv_geom(sd_dconv *d, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                 int64_t HO, int64_t WO, int stride, int pad_t, int pad_l)
{
    sd_dconv_geom_blk(d, 32, C, H, W, O, KH, KW, HO, WO, stride, pad_t, pad_l);
}

/* bf16 compute (precision bf16): the same sd_gemm problems with A and B rounded to bf16 as they are
 * packed and fp32 sums (cpu_kern_bf16_impl.h), and attention with QK^T and PV in bf16 and the online
 * softmax in fp32. One table per instruction set: "amx" (AMX-BF16 tiles) and "avx512bf16" (VDPBF16PS). */
typedef struct sd_cpu_bf16_kern {
    const char *name;
    size_t (*gemm_ws)(int nthreads); /* floats of workspace gemm() needs */
    void (*gemm)(const sd_gemm *g, float *ws, int nthreads);
    size_t (*attn_ws)(int64_t Nq, int64_t Nk, int64_t d, int nthreads); /* floats; NULL: no bf16 attention */
    void (*attention)(float *y, const float *q, const float *k, const float *v, int64_t B, int64_t Nq, int64_t Nk,
                      int heads, int64_t d, float scale, bool causal, float *ws, int nthreads);
    /* the instruction's peak on this core: `iters` rounds of the micro-kernel's products on registers
     * only (no loads); returns the multiply-adds done (x2 = FLOPs) for the caller to time */
    double (*peak)(int64_t iters);
    /* dst [C][H+pt+pb][W+pl+pr] BF16 = x [C][H][W] rounded, zeros around (the image of a stride-1 conv,
     * converted once instead of once per kernel tap) */
    void (*conv_pad)(uint16_t *dst, const float *x, int64_t C, int64_t H, int64_t W, const int pads[4], int nthreads);
    /* the direct convolution (sd_dconv; NULL: none): the image [C][H][W] F32, or one image of an
     * SD_LAYOUT_BF16_IMAGE activation (_cl), into its channels-last copy xp (d->x_elems); the weight
     * [O][C][KH][KW] (F32, F16 or BF16) into B tiles wp (d->w_elems); then the output o (sd_dconv_out) */
    void (*dconv_image)(uint16_t *xp, const float *x, const sd_dconv *d, int nthreads);
    void (*dconv_image_cl)(uint16_t *xp, const uint16_t *x, const sd_dconv *d, int nthreads);
    void (*dconv_weight)(uint16_t *wp, const void *w, sd_dtype dt, const sd_dconv *d, int nthreads);
    void (*dconv)(const sd_dconv_out *o, const uint16_t *xp, const uint16_t *wp, const sd_dconv *d, int nthreads);
    /* a linear weight w [N][K] (F32, F16 or BF16) as B tiles for SD_GB_PACKED: up32(N) * up32(K) bf16 */
    void (*linear_pack)(uint16_t *dst, const void *w, sd_dtype dt, int64_t N, int64_t K);
} sd_cpu_bf16_kern;

/* The tables, unchecked: only sd_cpu_bf16_kern_select may hand them out (NULL when not compiled in). */
const sd_cpu_bf16_kern *sd_cpu_bf16_kern_amx(void);
const sd_cpu_bf16_kern *sd_cpu_bf16_kern_avx512bf16(void);
/* The bf16 kernels for level "amx" or "avx512bf16" when this CPU and OS can run them (for AMX: CPUID
 * AMX-TILE + AMX-BF16 + AVX512-BF16, XCR0 tile state, and Linux's per-process tile permission, which
 * this requests), else NULL. Any other name gives NULL. Plain x86-64 code: safe on every CPU. */
const sd_cpu_bf16_kern *sd_cpu_bf16_kern_select(const char *level);

/* NULL when the CPU lacks the instruction set (avx512: F, BW, VL, DQ; avx2: AVX2, FMA, F16C). */
const sd_cpu_kern *sd_cpu_kern_avx512(void);
const sd_cpu_kern *sd_cpu_kern_avx2(void);

/* A CPU backend that uses the named level: "amx", "avx512bf16" (the AVX-512 fp32 kernels plus that
 * bf16 kernel set), "avx512", "avx2" or "blas" (OpenBLAS + scalar loops), or NULL/"auto" for the best
 * this CPU supports (the environment variable SD_CPU_ISA, when set, can lower that choice; tests and
 * benchmarks use it to compare). Fails with SD_ERR_UNSUPPORTED if the CPU lacks the named level.
 * The bf16 kernels are only used after sd_backend_cpu_set_bf16(be, true). */
sd_status sd_backend_cpu_create_isa(int n_threads, const char *isa, sd_backend **out);
/* The fp32 kernel set a CPU backend uses ("avx512", "avx2" or "blas"). */
const char *sd_backend_cpu_isa(const sd_backend *be);
/* The bf16 kernel set it has ("amx", "avx512bf16"), NULL when none (bf16 then means bf16 weight
 * storage with fp32 compute). */
const char *sd_backend_cpu_bf16_isa(const sd_backend *be);
/* precision bf16 on (linears, convolutions and attention through the bf16 kernels when there are
 * some) or off (fp32: exactly the fp32 kernels). Not thread-safe against running ops. */
void sd_backend_cpu_set_bf16(sd_backend *be, bool on);
/* Precision auto's one rule: bf16 when the backend's bf16 kernels outpace its fp32 ones: AMX always;
 * AVX512-BF16 when VDPBF16PS's FLOP rate, measured once per process on registers (the kernels' peak
 * functions, best of 3, well under 1 ms), is at least the fp32 FMA's: Zen 4/5 (expected ~2x), not an Intel
 * core whose AMX is hidden by a hypervisor or not granted by an old kernel (measured 0.5x here). */
bool sd_backend_cpu_auto_bf16(const sd_backend *be);

/* int8 compute (precision int8, W8A8): weights quantised once (symmetric, one scale per output channel)
 * and packed in 1 KiB tiles (16 rows x 64 bytes, AMX-INT8 / VNNI layout), activations quantised
 * dynamically, int32 sums, dequantised in the epilogue: c = acc * sa * sw. Linears (sd_gemm_i8): one scale
 * per token row of A. Convolutions: kxk ones with the weight prepared at load (SD_LAYOUT_CPU_I8_CONV) run
 * the direct convolution (sd_dconv, 64-channel blocks) on an image quantised to u8 with ONE scale and zero
 * point (its range / 255: per-pixel scales would not factor out of the sum over the taps); others go through
 * sd_gemm_i8 with one scale per output pixel (the max |x| over its receptive field).
 * Written once (cpu_kern_int8_impl.h) for AMX-INT8 (cpu_kern_amxint8.c: TDPBSSD) and AVX512-VNNI
 * (cpu_kern_vnni.c: VPDPBUSD on activations shifted to u8, minus 128 * the column sums of B). */
#define SD_I8_KMAX 16384 /* deepest K the int8 kernels take (deeper: the bf16 path) */
typedef struct sd_i8w {
    int64_t O, K, Kp;  /* output channels, depth, depth rounded up to 64 */
    bool as_b;         /* linear weight [O,K]: packed as B tiles (16 columns x 16 depth quads, column n's
                        * 4 bytes together); conv weight [O,C*KH*KW]: as A tiles (16 rows x 64 depth) */
    int8_t *q;         /* up32(O)/16 tile rows (or columns) of Kp/64 tiles each, zeros past O and K
                        * (VNNI's A tiles: q + 128 as u8; their depth tail meets B's zeros) */
    float *scale;      /* [up32(O)] max |w| / 127 per output channel (0 past O) */
    int32_t *colsum;   /* linear: 128 * sum over k of column n (the VNNI correction), [up32(O)] */
} sd_i8w;

typedef struct sd_gemm_i8 {
    int64_t M, N, K;
    const sd_i8w *w;    /* linear: B (N = O); conv: A (M = O) */
    const float *x;     /* linear: A[m][k] = x[m*K + k]; conv: one image [C][H][W] (SD_GB_CONV's B) */
    int64_t C, H, W, KH, KW, WO;
    int stride, pad_t, pad_l;
    const float *pixmax; /* conv: [H][W] max over channels of |x| (the column scales come from it) */
    float *c;           /* C[m][n] = c[m*ldc + n] */
    int64_t ldc;
    bool accumulate;    /* C += the product (else C = the product) */
    const float *bias;  /* NULL, or added to the product: linear: per column [N]; conv: per row [M] */
} sd_gemm_i8;

typedef struct sd_cpu_int8_kern {
    const char *name;
    bool shift; /* VNNI: the A operand is stored as u8 (q + 128) */
    size_t (*ws)(int nthreads); /* bytes of workspace gemm() needs */
    void (*gemm)(const sd_gemm_i8 *g, void *ws, int nthreads);
    double (*peak)(int64_t iters); /* as sd_cpu_bf16_kern.peak */
    /* the direct convolution (sd_dconv with SD_I8_CBLK-channel blocks): dconv_image quantises the image
     * [C][H][W] F32 asymmetrically with one scale xs = (hi - lo) / 255 (returned) and zero point zp (*zp) over
     * its finite values (lo = min(0, min x), hi = max(0, max x)): u8 q = clamp(round(x * 255 / (hi - lo)) + zp,
     * 0, 255) (NaN as zp, +-Inf saturates) into the channels-last copy xp (d->x_elems bytes, zp around);
     * dconv: out->y [O][HO][WO] F32 = (acc - zp * wsum) * xs * ws + bias, then the epilogue (out->res F32,
     * ReLU; out->cl must be false), wp the prepared weight (sd_i8_dconv_wbytes), ws a workspace of dconv_ws
     * bytes */
    float (*dconv_image)(uint8_t *xp, const float *x, const sd_dconv *d, int32_t *zp, int nthreads);
    size_t (*dconv_ws)(const sd_dconv *d, int nthreads);
    void (*dconv)(const sd_dconv_out *out, const uint8_t *xp, float xs, int32_t zp, const int8_t *wp,
                  const sd_dconv *d, void *ws, int nthreads);
} sd_cpu_int8_kern;

/* The int8 direct convolution's channel block (one tile row of depth) and its prepared weight
 * (SD_LAYOUT_CPU_I8_CONV): d->w_elems bytes of s8 B tiles (b[(k/4)*64 + n*4 + k%4] = q[o0 + n][c0 + k] of
 * the tap), then ws [up32(O)] floats (max |w| / 127 per output channel) and wsum [up32(O)] int32 (the
 * channel's sum of q, for the image's zero point); zeros past O and C. */
#define SD_I8_CBLK 64
/* the deepest C * KH * KW it takes: int32 sums of u8 x s8 products (VNNI: up to 255 * 127 each) cannot overflow */
#define SD_I8_DCONV_KMAX 65536
static inline size_t sd_i8_dconv_wbytes(const sd_dconv *d) { return d->w_elems + (size_t)((d->O + 31) / 32 * 32) * 8; }
/* where q of output channel o, input channel c, tap t lies in those tiles */
static inline size_t sd_i8_dconv_widx(const sd_dconv *d, int64_t o, int64_t c, int64_t t)
{
    int64_t ncb = d->Cp / SD_I8_CBLK, k = c % SD_I8_CBLK;
    return (size_t)((((o / 16) * d->KH * d->KW + t) * ncb + c / SD_I8_CBLK) * 1024 + (k / 4) * 64 + (o % 16) * 4 +
                    k % 4);
}

const sd_cpu_int8_kern *sd_cpu_int8_kern_amx(void);
const sd_cpu_int8_kern *sd_cpu_int8_kern_vnni(void);
/* The int8 kernels of a level when this CPU and OS can run them: "amx" (AMX-INT8 tiles, else VNNI),
 * "avx512bf16" and "avx512vnni" (AVX512-VNNI); NULL for other levels or a CPU without them. */
const sd_cpu_int8_kern *sd_cpu_int8_kern_select(const char *level);
/* CPUID/XCR0 checks (cpu_isa.c, plain x86-64 code); AMX ones also request Linux's tile permission */
bool sd_cpu_has_avx512bf16(void);
bool sd_cpu_has_avx512vnni(void);
bool sd_cpu_has_amx_bf16(void);
bool sd_cpu_has_amx_int8(void);
/* A quantised weight lies in one buffer of sd_i8w_bytes(O, K) bytes: the tiles q (up32(O) * Kp bytes),
 * then scale and colsum (up32(O) each). That buffer is the prepared layout of precision int8
 * (SD_LAYOUT_CPU_I8_LINEAR: as_b; SD_LAYOUT_CPU_I8_PW, a pointwise conv weight: as A), made once at load
 * by weight_prepare (cpu_int8.c, plain C). sd_i8w_view: the sd_i8w of such a buffer (no copy).
 * sd_i8w_quantise: w ([O, K...] F32/F16/BF16, row-major) quantised into out's buffer (on nthreads);
 * shift: A tiles as u8 (q + 128, for VNNI). */
size_t sd_i8w_bytes(int64_t O, int64_t K);
void sd_i8w_view(sd_i8w *v, const void *buf, int64_t O, int64_t K, bool as_b);
void sd_i8w_quantise(const sd_tensor *w, bool shift, const sd_i8w *out, int nthreads);

/* The int8 kernel set a CPU backend has, NULL when none (precision int8 then runs as bf16). */
const char *sd_backend_cpu_int8_isa(const sd_backend *be);
/* precision int8 on: the weights loaded from then on are prepared as the int8 kernels' tiles (weight_layout),
 * and linears and convolutions with such weights run on the int8 kernels (a row-major weight: the bf16
 * path), attention as precision bf16; also turns bf16 on. Off: back to fp32. */
void sd_backend_cpu_set_int8(sd_backend *be, bool on);

#endif
