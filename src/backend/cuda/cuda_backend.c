/* CUDA backend: fp16 activations, fp32 accumulation, one stream per backend.
 *
 * Host side (C17). Kernels are in kernels.cu (launchers in cuda_kernels.h);
 * GEMM-shaped ops use cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx with
 * CUBLAS_COMPUTE_32F: fp16 inputs and outputs, fp32 accumulation, tensor
 * cores on sm_80+).
 *
 * Memory: alloc() is one cudaMalloc per request (the arena and each weight
 * are allocated once); nothing else allocates on the hot path except move()'s
 * rarely used bounce buffer. All work is enqueued on the backend's stream;
 * upload/download are synchronous (they wait on the stream), ops are not.
 *
 * Errors: ops return void, so a failing launch or an unsupported dtype is
 * recorded as the backend's sticky error (first one wins, with the
 * cudaGetErrorString / cuBLAS text) and returned by every later upload,
 * download and synchronize as SD_ERR_BACKEND. After an error the backend is
 * unusable (CUDA errors from kernels poison the context anyway).
 *
 * This file is compiled in every build (the src/backend .c files are globbed); without
 * SD_HAVE_CUDA it is empty and backend_select.c supplies the fallback
 * sd_backend_cuda_create. */
#include "backend/backend.h"

#ifdef SD_HAVE_CUDA

#include "backend/cuda/cuda_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SDK_F32 == (int)SD_F32 && SDK_F16 == (int)SD_F16 && SDK_BF16 == (int)SD_BF16 &&
                   SDK_I64 == (int)SD_I64 && SDK_I32 == (int)SD_I32,
               "cuda_kernels.h dtype codes must equal sd_dtype");
_Static_assert(SDK_SILU == (int)SD_UNARY_SILU && SDK_GELU == (int)SD_UNARY_GELU &&
                   SDK_GELU_TANH == (int)SD_UNARY_GELU_TANH && SDK_QUICK_GELU == (int)SD_UNARY_QUICK_GELU &&
                   SDK_TANH == (int)SD_UNARY_TANH && SDK_RELU == (int)SD_UNARY_RELU &&
                   SDK_SIGMOID == (int)SD_UNARY_SIGMOID && SDK_EXP == (int)SD_UNARY_EXP,
               "cuda_kernels.h unary codes must equal sd_unary_op");
_Static_assert(SDK_ADD == (int)SD_BINARY_ADD && SDK_SUB == (int)SD_BINARY_SUB && SDK_MUL == (int)SD_BINARY_MUL,
               "cuda_kernels.h binary codes must equal sd_binary_op");

/* im2col scratch per conv2d call is capped at this many bytes; larger convs are
 * done in chunks of output rows (VAE decoder at 512x512: ~10 chunks per image). */
#define CONV_SCRATCH_MAX ((size_t)64 << 20)
/* move(): overlapping copies use forward/backward chunks of |dst - src| bytes
 * when that takes at most this many cudaMemcpyAsync calls, else a bounce buffer */
#define MOVE_MAX_CHUNKS 16
/* bounce buffers replaced while a captured graph may still use them: kept until destroy */
#define MOVE_RETIRED_MAX 8
/* group norm statistics scratch: 3 doubles per block, e.g. 64 rows x 32 groups x 32 chunks */
#define GN_SCRATCH ((size_t)1 << 20)

typedef struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int smem_optin;     /* cudaDevAttrMaxSharedMemoryPerBlockOptin */
    void *bounce;       /* move() bounce buffer (lazily grown, never while capturing) */
    size_t bounce_size;
    bool bounce_captured; /* a graph captured with this bounce buffer may replay it: never cudaFree it */
    void *retired[MOVE_RETIRED_MAX]; /* earlier captured bounce buffers, freed by destroy */
    int n_retired;
    void *blas_ws;      /* cuBLAS workspace (set explicitly: no allocation inside a graph capture) */
    void *gn_scratch;   /* group norm's per-block statistics when groups are split (GN_SCRATCH bytes) */
    int sm_count;
    bool capturing;     /* between capture_begin and capture_end */
    sd_status err;      /* sticky first error */
    char errmsg[512];
    char devname[256];
} cuda_impl;

static cuda_impl *IMPL(sd_backend *be) { return (cuda_impl *)be->impl; }

/* ------------------------------------------------------------------ errors */

static void cu_set_error(cuda_impl *c, sd_status s, const char *fmt, ...) SD_PRINTF(3, 4);
static void cu_set_error(cuda_impl *c, sd_status s, const char *fmt, ...)
{
    if (c->err != SD_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->err = s;
    sd_fail(s, "%s", c->errmsg);
}

/* records a CUDA runtime error; returns true when e is cudaSuccess */
static bool cu_ck(cuda_impl *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return true;
    cu_set_error(c, SD_ERR_BACKEND, "cuda backend: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return false;
}

static const char *blas_str(cublasStatus_t s) { return cublasGetStatusString(s); }

static bool cu_ckb(cuda_impl *c, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return true;
    cu_set_error(c, SD_ERR_BACKEND, "cuda backend: %s: cuBLAS %s", what, blas_str(s));
    return false;
}

static sd_status sticky(cuda_impl *c)
{
    if (c->err != SD_OK)
        return sd_fail(c->err, "%s", c->errmsg);
    return SD_OK;
}

/* the device use_device() last made current in this thread (-1: unknown); every other cudaSetDevice
 * in this file resets it */
static _Thread_local int g_cur_device = -1;

/* Make this backend's device current in the calling thread (cheap when it already is). */
static bool use_device(cuda_impl *c)
{
    if (g_cur_device == c->device)
        return true;
    if (!cu_ck(c, cudaSetDevice(c->device), "cudaSetDevice"))
        return false;
    g_cur_device = c->device;
    return true;
}

/* true when further work should be enqueued */
static bool cu_live(cuda_impl *c) { return c->err == SD_OK && use_device(c); }

static const char *dtname(sd_dtype t) { return sd_dtype_name(t); }

/* ------------------------------------------------------------------ memory */

static void *cuda_alloc(sd_backend *be, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!use_device(c))
        return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky in CUDA: keep the backend usable */
        sd_fail(e == cudaErrorMemoryAllocation ? SD_ERR_OUT_OF_MEMORY : SD_ERR_BACKEND,
                "cuda backend: cudaMalloc of %zu MiB on device %d failed: %s", bytes >> 20, c->device,
                cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(sd_backend *be, void *p)
{
    cuda_impl *c = IMPL(be);
    if (!p || !use_device(c))
        return;
    /* cudaFree waits for the device; make the ordering explicit anyway */
    cudaStreamSynchronize(c->stream);
    cu_ck(c, cudaFree(p), "cudaFree");
}

static sd_status cuda_upload(sd_backend *be, void *dst, const void *host, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (bytes) {
        /* synchronous for the caller: the host buffer may be freed on return */
        if (!cu_ck(c, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->stream), "upload") ||
            !cu_ck(c, cudaStreamSynchronize(c->stream), "upload (synchronize)"))
            return sticky(c);
    }
    return SD_OK;
}

static sd_status cuda_download(sd_backend *be, void *host, const void *src, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (bytes) {
        if (!cu_ck(c, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download") ||
            !cu_ck(c, cudaStreamSynchronize(c->stream), "download (synchronize)"))
            return sticky(c);
    }
    return sticky(c);
}

static bool cu_d2d(cuda_impl *c, uint8_t *dst, const uint8_t *src, size_t n)
{
    return cu_ck(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream), "move (cudaMemcpyAsync)");
}

/* memmove within device memory, safe for overlapping ranges. cudaMemcpy* on
 * overlapping ranges is undefined, so an overlapping move is split into
 * chunks no larger than the distance |dst - src|, issued in stream order from
 * the end that is read first: forward when dst < src (sd_keep), backward when
 * dst > src. Each chunk's source and destination are disjoint, and a chunk
 * only overwrites source bytes that an earlier chunk already copied. When
 * that would take many calls (small distance), copy through a bounce buffer. */
static void cuda_move(sd_backend *be, void *dstv, const void *srcv, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    uint8_t *dst = dstv;
    const uint8_t *src = srcv;
    if (!bytes || dst == src || !cu_live(c))
        return;
    size_t dist = dst < src ? (size_t)(src - dst) : (size_t)(dst - src);
    if (dist >= bytes) { /* disjoint */
        cu_d2d(c, dst, src, bytes);
        return;
    }
    size_t chunks = (bytes + dist - 1) / dist;
    if (chunks > MOVE_MAX_CHUNKS) {
        /* The old buffer is synchronized and freed only outside a capture (a stream synchronize would
         * invalidate it, and the capture may already have recorded a use) and when no captured graph
         * may replay it: otherwise it is retired until destroy. cudaMalloc is allowed in a relaxed
         * capture. When no bigger buffer can be had, fall back to the chunks below. */
        bool keep_old = c->capturing || c->bounce_captured;
        if (c->bounce_size < bytes && (!c->bounce || !keep_old || c->n_retired < MOVE_RETIRED_MAX)) {
            void *nb = NULL;
            if (cudaMalloc(&nb, bytes) == cudaSuccess) {
                if (c->bounce && keep_old) {
                    c->retired[c->n_retired++] = c->bounce;
                } else if (c->bounce) {
                    cudaStreamSynchronize(c->stream); /* earlier eager moves may still read it */
                    cudaFree(c->bounce);
                }
                c->bounce = nb;
                c->bounce_size = bytes;
                c->bounce_captured = false;
            } else {
                cudaGetLastError(); /* not sticky: fall back to chunks below */
            }
        }
        if (c->bounce && c->bounce_size >= bytes) {
            if (c->capturing)
                c->bounce_captured = true;
            if (cu_d2d(c, c->bounce, src, bytes))
                cu_d2d(c, dst, c->bounce, bytes);
            return;
        }
    }
    if (dst < src) {
        for (size_t off = 0; off < bytes; off += dist) {
            size_t n = bytes - off < dist ? bytes - off : dist;
            if (!cu_d2d(c, dst + off, src + off, n))
                return;
        }
    } else {
        for (size_t end = bytes; end > 0;) {
            size_t n = end < dist ? end : dist;
            end -= n;
            if (!cu_d2d(c, dst + end, src + end, n))
                return;
        }
    }
}

static sd_status cuda_synchronize(sd_backend *be)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    cu_ck(c, cudaStreamSynchronize(c->stream), "synchronize");
    cu_ck(c, cudaGetLastError(), "synchronize (last error)");
    return sticky(c);
}

static bool cuda_accepts(sd_backend *be, sd_dtype t) { return t == SD_F16; }

/* ------------------------------------------------------------------ GEMM */

static bool blas_type(sd_dtype t, cudaDataType_t *out)
{
    switch (t) {
    case SD_F16: *out = CUDA_R_16F; return true;
    case SD_BF16: *out = CUDA_R_16BF; return true;
    case SD_F32: *out = CUDA_R_32F; return true;
    default: return false;
    }
}

/* cuBLAS with CUBLAS_COMPUTE_32F takes A and B of one type and C of that type or F32 */
static bool gemm_types(cuda_impl *c, const char *op, sd_dtype at, sd_dtype bt, sd_dtype ct, cudaDataType_t *ta,
                       cudaDataType_t *tc)
{
    cudaDataType_t tb;
    if (!blas_type(at, ta) || !blas_type(bt, &tb) || !blas_type(ct, tc) || at != bt || (ct != at && ct != SD_F32)) {
        cu_set_error(c, SD_ERR_BACKEND,
                  "cuda backend: %s: unsupported dtypes %s x %s -> %s (expected F16 activations and weights)", op,
                  dtname(at), dtname(bt), dtname(ct));
        return false;
    }
    return true;
}

static bool fits_int(cuda_impl *c, const char *op, int64_t v)
{
    if (v >= 0 && v <= INT_MAX)
        return true;
    cu_set_error(c, SD_ERR_BACKEND, "cuda backend: %s: dimension %lld exceeds cuBLAS's int range", op, (long long)v);
    return false;
}

/* Column-major C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C, batched with
 * strides (stride 0 reuses one matrix). Row-major callers pass their operands
 * swapped: row-major Y = X W is column-major Y^T = W^T X^T. */
static void gemm(cuda_impl *c, const char *op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                 const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, float beta, void *C,
                 int64_t ldc, int64_t sC, int64_t batch, cudaDataType_t tab, cudaDataType_t tc)
{
    if (m <= 0 || n <= 0 || batch <= 0)
        return;
    if (!fits_int(c, op, m) || !fits_int(c, op, n) || !fits_int(c, op, k) || !fits_int(c, op, lda) ||
        !fits_int(c, op, ldb) || !fits_int(c, op, ldc) || !fits_int(c, op, batch))
        return;
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (batch == 1)
        s = cublasGemmEx(c->blas, oa, ob, (int)m, (int)n, (int)k, &alpha, A, tab, (int)lda, B, tab, (int)ldb, &beta, C,
                         tc, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else
        s = cublasGemmStridedBatchedEx(c->blas, oa, ob, (int)m, (int)n, (int)k, &alpha, A, tab, (int)lda,
                                       (long long)sA, B, tab, (int)ldb, (long long)sB, &beta, C, tc, (int)ldc,
                                       (long long)sC, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cu_ckb(c, s, op);
}

/* y[M,N] = x[M,K] w[N,K]^T + b[N]. Column-major: y^T[N,M] = (w as K x N)^T (x as K x M). */
static void cuda_linear(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t N = w->ne[0], K = w->ne[1];
    int64_t M = K ? sd_numel(x) / K : 0;
    cudaDataType_t tab, tc;
    if (!gemm_types(c, "linear", x->dtype, w->dtype, y->dtype, &tab, &tc))
        return;
    if (b && !cu_ck(c, sdk_fill_bias(c->stream, y->data, y->dtype, b->data, b->dtype, M * N, N, 1), "linear bias"))
        return;
    gemm(c, "linear", true, false, N, M, K, 1.0f, w->data, K, 0, x->data, K, 0, b ? 1.0f : 0.0f, y->data, N, 0, 1,
         tab, tc);
}

/* y[B,M,N] = alpha op(a) op(b). Column-major per batch: y^T[N,M] = op(b)^T op(a)^T,
 * where the row-major buffers read as column-major are b^T (ld b.ne[2]) and a^T (ld a.ne[2]). */
static void cuda_matmul(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, bool ta, bool tb,
                        float alpha)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t B = a->ne[0], M = y->ne[1], N = y->ne[2];
    int64_t K = ta ? a->ne[1] : a->ne[2];
    cudaDataType_t tab, tc;
    if (!gemm_types(c, "matmul", a->dtype, b->dtype, y->dtype, &tab, &tc))
        return;
    gemm(c, "matmul", tb, ta, N, M, K, alpha, b->data, b->ne[2], b->ne[1] * b->ne[2], a->data, a->ne[2],
         a->ne[1] * a->ne[2], 0.0f, y->data, N, M * N, B, tab, tc);
}

/* ------------------------------------------------------------------ conv2d
 * y[n] (O x HWO) = w (O x CK) col[n] (CK x HWO) + b, col = im2col(x[n]).
 * Column-major: y[n]^T (HWO x O) = col^T (col as ncol x CK) w^T (w as CK x O).
 * A 1x1 conv with unchanged size is a plain GEMM on x (no scratch). Otherwise
 * im2col goes into scratch (from conv2d_scratch, at most CONV_SCRATCH_MAX):
 * whole images batched when several fit, else chunks of output rows.
 * Optimisation ideas: implicit-GEMM (cuDNN or CUTLASS) without the col
 * buffer, NHWC activations. */

typedef struct conv_plan {
    bool pointwise; /* GEMM directly on x */
    bool igemm;     /* implicit GEMM kernel (no scratch) */
    int64_t rows;   /* output rows per im2col chunk */
    int64_t nimg;   /* images per im2col chunk (> 1 only when rows == HO) */
    size_t scratch; /* bytes */
} conv_plan;

static conv_plan plan_conv(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    conv_plan p = {0};
    int64_t C = x->ne[1], KH = w->ne[2], KW = w->ne[3], HO = y->ne[2], WO = y->ne[3];
    /* 1x1 with equal sizes means stride 1 and no padding (or a 1-pixel axis, where stride is moot) */
    p.pointwise = KH == 1 && KW == 1 && x->ne[2] == HO && x->ne[3] == WO && x->dtype == SD_F16;
    if (p.pointwise)
        return p;
    /* The implicit GEMM (sdk_conv2d_igemm) for few output channels, where im2col's traffic dwarfs the GEMM
     * (TAESD's 64-channel convs at up to 512x512); im2col + cuBLAS elsewhere. SD_CUDA_CONV=igemm|im2col
     * forces one (benchmarks, tests). */
    const char *mode = getenv("SD_CUDA_CONV");
    bool f16 = x->dtype == SD_F16 && w->dtype == SD_F16;
    p.igemm = f16 && (mode && !strcmp(mode, "igemm") ? true : mode && !strcmp(mode, "im2col") ? false : w->ne[0] <= 128);
    if (p.igemm)
        return p;
    size_t per_row = (size_t)(C * KH * KW * WO) * 2;
    if (!per_row)
        per_row = 1;
    int64_t rows = (int64_t)(CONV_SCRATCH_MAX / per_row);
    p.rows = rows < 1 ? 1 : rows > HO ? HO : rows;
    p.nimg = 1;
    if (p.rows == HO && HO > 0) {
        int64_t imgs = (int64_t)(CONV_SCRATCH_MAX / (per_row * (size_t)HO));
        p.nimg = imgs < 1 ? 1 : imgs > x->ne[0] ? x->ne[0] : imgs;
    }
    p.scratch = per_row * (size_t)p.rows * (size_t)p.nimg;
    return p;
}

static size_t cuda_conv2d_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    return plan_conv(x, w, y).scratch;
}

static void cuda_conv2d(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                        int stride, const int pads[4], void *scratch)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t N = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3];
    int64_t O = w->ne[0], KH = w->ne[2], KW = w->ne[3], HO = y->ne[2], WO = y->ne[3];
    int64_t HWO = HO * WO, CK = C * KH * KW;
    conv_plan p = plan_conv(x, w, y);
    cudaDataType_t tab, tc;
    /* the col buffer is F16, so only w (and x on the pointwise path) must be F16 */
    if (!gemm_types(c, "conv2d", SD_F16, w->dtype, y->dtype, &tab, &tc))
        return;
    /* plan_conv cannot see stride/pads: output (oh, ow) reads x (oh*stride - top, ow*stride - left), which is
     * x (oh, ow) only without top/left padding and with stride 1 (or a single output row/column). A 1x1 conv
     * that keeps its size otherwise (e.g. 2x2 input, pads 1, stride 2) got no im2col scratch: the implicit
     * GEMM, which needs none, does it (x is F16 on the pointwise path). */
    if (p.pointwise && (pads[0] || pads[1] || (stride != 1 && (HO > 1 || WO > 1)))) {
        if (w->dtype != SD_F16) {
            cu_set_error(c, SD_ERR_BACKEND,
                      "cuda backend: conv2d: a 1x1 kernel with stride %d and pads %d,%d,%d,%d that keeps the size "
                      "%lldx%lld needs F16 weights, got %s",
                      stride, pads[0], pads[1], pads[2], pads[3], (long long)HO, (long long)WO, dtname(w->dtype));
            return;
        }
        p.pointwise = false;
        p.igemm = true;
    }
    if (b && !p.igemm &&
        !cu_ck(c, sdk_fill_bias(c->stream, y->data, y->dtype, b->data, b->dtype, N * O * HWO, O * HWO, HWO),
            "conv2d bias"))
        return;
    float beta = b ? 1.0f : 0.0f;
    size_t ys = sd_dtype_size(y->dtype);
    if (p.pointwise) {
        gemm(c, "conv2d", false, false, HWO, O, C, 1.0f, x->data, HWO, C * HWO, w->data, C, 0, beta, y->data, HWO,
             O * HWO, N, tab, tc);
        return;
    }
    if (p.igemm) { /* the bias is added in its epilogue */
        cu_ck(c,
           sdk_conv2d_igemm(c->stream, y->data, y->dtype, x->data, w->data, b ? b->data : NULL, b ? b->dtype : 0, N,
                            C, H, W, O, (int)KH, (int)KW, stride, pads[0], pads[1], HO, WO),
           "conv2d (implicit GEMM)");
        return;
    }
    if (!scratch) {
        cu_set_error(c, SD_ERR_INTERNAL, "cuda backend: conv2d called without its scratch buffer");
        return;
    }
    for (int64_t n0 = 0; n0 < N; n0 += p.nimg) {
        int64_t nb = N - n0 < p.nimg ? N - n0 : p.nimg;
        for (int64_t r0 = 0; r0 < HO; r0 += p.rows) {
            int64_t nr = HO - r0 < p.rows ? HO - r0 : p.rows, ncol = nr * WO;
            if (!cu_ck(c,
                    sdk_im2col(c->stream, scratch, x->data, x->dtype, n0, nb, C, H, W, KH, KW, stride, pads[0],
                               pads[1], WO, r0, nr),
                    "conv2d im2col"))
                return;
            uint8_t *yc = (uint8_t *)y->data + (size_t)(n0 * O * HWO + r0 * WO) * ys;
            gemm(c, "conv2d", false, false, ncol, O, CK, 1.0f, scratch, ncol, CK * ncol, w->data, CK, 0, beta, yc,
                 HWO, O * HWO, nb, tab, tc);
            if (c->err != SD_OK)
                return;
        }
    }
}

/* ------------------------------------------------------------------ other ops */

static void cuda_cast(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    if (y->dtype == x->dtype) {
        cu_d2d(c, y->data, x->data, sd_nbytes(x));
        return;
    }
    if ((y->dtype != SD_F32 && y->dtype != SD_F16 && y->dtype != SD_BF16) ||
        (x->dtype != SD_F32 && x->dtype != SD_F16 && x->dtype != SD_BF16 && x->dtype != SD_I32)) {
        cu_set_error(c, SD_ERR_BACKEND, "cuda backend: cast %s -> %s is not supported", dtname(x->dtype),
                  dtname(y->dtype));
        return;
    }
    cu_ck(c, sdk_cast(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x)), "cast");
}

static void cuda_group_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                            const sd_tensor *beta, int groups, float eps, bool silu)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t N = x->ne[0], C = x->ne[1];
    int64_t S = (N > 0 && C > 0) ? sd_numel(x) / (N * C) : 0;
    cu_ck(c,
       sdk_group_norm(c->stream, y->data, y->dtype, x->data, x->dtype, gamma->data, gamma->dtype, beta->data,
                      beta->dtype, N, C, S, groups, eps, silu, c->gn_scratch, c->gn_scratch ? GN_SCRATCH : 0,
                      2 * c->sm_count),
       "group_norm");
}

static void cuda_layer_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                            const sd_tensor *beta, float eps)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t D = x->ne[x->ndim - 1], R = D ? sd_numel(x) / D : 0;
    cu_ck(c,
       sdk_layer_norm(c->stream, y->data, y->dtype, x->data, x->dtype, gamma->data, gamma->dtype, beta->data,
                      beta->dtype, R, D, eps),
       "layer_norm");
}

static void cuda_softmax(sd_backend *be, sd_tensor *y, const sd_tensor *x, float scale)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t D = x->ne[x->ndim - 1], R = D ? sd_numel(x) / D : 0;
    cu_ck(c, sdk_softmax(c->stream, y->data, y->dtype, x->data, x->dtype, R, D, scale), "softmax");
}

static size_t cuda_attention_scratch(sd_backend *be, const sd_tensor *q, const sd_tensor *k, int heads) { return 0; }

static void cuda_attention(sd_backend *be, sd_tensor *y, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                           int heads, float scale, bool causal, void *scratch)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], d = q->ne[2] / heads;
    size_t smem = sdk_attention_smem(d);
    if (!smem || smem > (size_t)c->smem_optin) {
        cu_set_error(c, SD_ERR_BACKEND,
                  "cuda backend: attention head dimension %lld is not supported (at most %d, and %zu bytes of shared "
                  "memory against the device's %d)",
                  (long long)d, SDK_ATT_MAX_D, smem, c->smem_optin);
        return;
    }
    if (B * heads > 65535) {
        cu_set_error(c, SD_ERR_BACKEND, "cuda backend: attention batch x heads = %lld exceeds 65535",
                  (long long)(B * heads));
        return;
    }
    cu_ck(c,
       sdk_attention(c->stream, y->data, y->dtype, q->data, q->dtype, k->data, k->dtype, v->data, v->dtype, B, Nq, Nk,
                     heads, d, scale, causal, c->smem_optin),
       "attention");
}

static void cuda_unary(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_unary(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), (int)op), "unary");
}

static void cuda_binary(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    /* right-align b's shape to a's; stride 0 where b broadcasts (as the CPU backend) */
    sdk_bcast bc = {{1, 1, 1, 1}, {0, 0, 0, 0}};
    for (int i = 0; i < a->ndim; i++)
        bc.ae[4 - a->ndim + i] = a->ne[i];
    int64_t st = 1;
    for (int i = b->ndim - 1; i >= 0; i--) {
        int ax = 4 - b->ndim + i;
        bc.bs[ax] = b->ne[i] == 1 ? 0 : st;
        st *= b->ne[i];
    }
    cu_ck(c, sdk_binary(c->stream, y->data, y->dtype, a->data, a->dtype, b->data, b->dtype, bc, (int)op), "binary");
}

static void cuda_affine(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_affine(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), alpha, beta), "affine");
}

static void cuda_clamp(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_clamp(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), lo, hi), "clamp");
}

static void cuda_geglu(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t N = y->ne[y->ndim - 1], R = N ? sd_numel(y) / N : 0;
    cu_ck(c, sdk_geglu(c->stream, y->data, y->dtype, x->data, x->dtype, R, N), "geglu");
}

static void cuda_upsample2x(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_upsample2x(c->stream, y->data, y->dtype, x->data, x->dtype, x->ne[0] * x->ne[1], x->ne[2], x->ne[3]),
           "upsample2x");
}

static void cuda_rgb8_to_chw(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_rgb8_to_chw(c->stream, y->data, y->dtype, x->data, x->ne[0], x->ne[1] * x->ne[2]), "rgb8_to_chw");
}

static void cuda_chw_to_rgb8(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_chw_to_rgb8(c->stream, y->data, x->data, x->dtype, x->ne[0], x->ne[2] * x->ne[3]), "chw_to_rgb8");
}

/* outer = product of dims before axis; inner = product of dims from axis on */
static void split_axis(const sd_tensor *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->ne[i];
    for (int i = axis; i < t->ndim; i++)
        *inner *= t->ne[i];
}

static void cuda_concat(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t outer, ia, ib;
    split_axis(a, axis, &outer, &ia);
    split_axis(b, axis, &outer, &ib);
    cu_ck(c, sdk_concat(c->stream, y->data, a->data, b->data, outer, ia, ib, (int)sd_dtype_size(a->dtype)), "concat");
}

static void cuda_slice(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t outer, ix, iy;
    split_axis(x, axis, &outer, &ix);
    split_axis(y, axis, &outer, &iy);
    int64_t off = x->ne[axis] ? start * (ix / x->ne[axis]) : 0;
    cu_ck(c, sdk_slice(c->stream, y->data, x->data, outer, ix, iy, off, (int)sd_dtype_size(x->dtype)), "slice");
}

static void cuda_permute(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4])
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t xs[4], ps[4], yn[4];
    xs[3] = 1;
    for (int i = 2; i >= 0; i--)
        xs[i] = xs[i + 1] * x->ne[i + 1];
    for (int i = 0; i < 4; i++) {
        ps[i] = xs[perm[i]];
        yn[i] = y->ne[i];
    }
    cu_ck(c, sdk_permute(c->stream, y->data, y->dtype, x->data, x->dtype, yn, ps), "permute");
}

static void cuda_timestep_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip, float shift,
                                    float max_period)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    if (t->dtype != SD_F32) {
        cu_set_error(c, SD_ERR_BACKEND, "cuda backend: timestep_embedding needs F32 timesteps, got %s",
                  dtname(t->dtype));
        return;
    }
    cu_ck(c, sdk_timestep_embedding(c->stream, y->data, y->dtype, t->data, t->ne[0], dim, flip, shift, max_period),
       "timestep_embedding");
}

static void cuda_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    if (ids->dtype != SD_I32) {
        cu_set_error(c, SD_ERR_BACKEND, "cuda backend: embedding needs I32 ids, got %s", dtname(ids->dtype));
        return;
    }
    cu_ck(c,
       sdk_embedding(c->stream, y->data, y->dtype, table->data, table->dtype, ids->data, ids->ne[0], table->ne[0],
                     table->ne[1]),
       "embedding");
}

/* ------------------------------------------------------------------ pinned memory, queued copies */

static void *cuda_host_alloc(sd_backend *be, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!use_device(c))
        return NULL;
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        cudaGetLastError();
        sd_fail(SD_ERR_OUT_OF_MEMORY, "cuda backend: cudaHostAlloc of %zu KiB (pinned memory) failed: %s", bytes >> 10,
                cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_host_free(sd_backend *be, void *p)
{
    cuda_impl *c = IMPL(be);
    if (!p || !use_device(c))
        return;
    cudaStreamSynchronize(c->stream); /* a queued copy may still read or write it */
    cudaFreeHost(p);
}

static sd_status cuda_upload_async(sd_backend *be, void *dst, const void *host, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing) /* it would be recorded into the graph and replayed with it: fail the capture instead */
        cu_set_error(c, SD_ERR_INTERNAL, "cuda backend: upload_async while capturing a graph");
    else if (bytes)
        cu_ck(c, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->stream), "upload (queued)");
    return sticky(c);
}

static sd_status cuda_download_async(sd_backend *be, void *host, const void *src, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing)
        cu_set_error(c, SD_ERR_INTERNAL, "cuda backend: download_async while capturing a graph");
    else if (bytes)
        cu_ck(c, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download (queued)");
    return sticky(c);
}

/* ------------------------------------------------------------------ graphs */

/* Relaxed capture: an unsafe API call elsewhere (the lazily allocated move() bounce buffer) does not
 * invalidate the capture. Errors during the capture are not made sticky for good: capture_end reports
 * them and clears them, so the caller can run the same work eagerly. */
static sd_status cuda_capture_begin(sd_backend *be)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: a graph capture is already running");
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return sd_fail(SD_ERR_BACKEND, "cuda backend: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
    }
    c->capturing = true;
    return SD_OK;
}

static sd_status cuda_capture_end(sd_backend *be, void **graph)
{
    cuda_impl *c = IMPL(be);
    *graph = NULL;
    if (!c->capturing)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: capture_end without capture_begin");
    c->capturing = false;
    use_device(c);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    sd_status st = SD_OK;
    char why[600];
    if (c->err != SD_OK) { /* an op failed while recording: report it, keep the backend usable */
        snprintf(why, sizeof why, "%s", c->errmsg);
        c->err = SD_OK;
        c->errmsg[0] = 0;
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: graph capture failed: %s", why);
    } else if (e != cudaSuccess || !g) {
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: cudaStreamEndCapture: %s", cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = NULL;
    if (st == SD_OK && (e = cudaGraphInstantiate(&exec, g, 0)) != cudaSuccess) {
        exec = NULL;
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: cudaGraphInstantiate: %s", cudaGetErrorString(e));
    }
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError(); /* capture errors are not sticky in CUDA: clear the last one */
    *graph = exec;
    return st;
}

static sd_status cuda_graph_launch(sd_backend *be, void *graph)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (!graph)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: graph_launch of a NULL graph");
    cu_ck(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream), "cudaGraphLaunch");
    return sticky(c);
}

static void cuda_graph_free(sd_backend *be, void *graph)
{
    cuda_impl *c = IMPL(be);
    if (!graph || !use_device(c))
        return;
    cudaStreamSynchronize(c->stream); /* a launched replay may still run */
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ------------------------------------------------------------------ lifetime */

static void cuda_destroy(sd_backend *be)
{
    if (!be)
        return;
    cuda_impl *c = IMPL(be);
    if (c) {
        g_cur_device = -1;
        if (cudaSetDevice(c->device) == cudaSuccess) {
            if (c->stream)
                cudaStreamSynchronize(c->stream);
            if (c->bounce)
                cudaFree(c->bounce);
            for (int i = 0; i < c->n_retired; i++)
                cudaFree(c->retired[i]);
            if (c->blas_ws)
                cudaFree(c->blas_ws);
            if (c->gn_scratch)
                cudaFree(c->gn_scratch);
            if (c->blas)
                cublasDestroy(c->blas);
            if (c->stream)
                cudaStreamDestroy(c->stream);
        }
        free(c);
    }
    free(be);
}

static const sd_backend_ops k_cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .move = cuda_move,
    .synchronize = cuda_synchronize,
    .accepts_weight_dtype = cuda_accepts,
    .conv2d_scratch = cuda_conv2d_scratch,
    .attention_scratch = cuda_attention_scratch,
    .cast = cuda_cast,
    .linear = cuda_linear,
    .matmul = cuda_matmul,
    .conv2d = cuda_conv2d,
    .group_norm = cuda_group_norm,
    .layer_norm = cuda_layer_norm,
    .softmax = cuda_softmax,
    .attention = cuda_attention,
    .unary = cuda_unary,
    .binary = cuda_binary,
    .affine = cuda_affine,
    .clamp = cuda_clamp,
    .geglu = cuda_geglu,
    .upsample2x = cuda_upsample2x,
    .rgb8_to_chw = cuda_rgb8_to_chw,
    .chw_to_rgb8 = cuda_chw_to_rgb8,
    .concat = cuda_concat,
    .slice = cuda_slice,
    .permute = cuda_permute,
    .timestep_embedding = cuda_timestep_embedding,
    .embedding = cuda_embedding,
    .destroy = cuda_destroy,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .upload_async = cuda_upload_async,
    .download_async = cuda_download_async,
    .capture_begin = cuda_capture_begin,
    .capture_end = cuda_capture_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

sd_status sd_backend_cuda_create(int device, sd_backend **out)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear it: no driver / no device is an ordinary condition here */
        return sd_fail(SD_ERR_BACKEND, "no CUDA GPU found (cudaGetDeviceCount: %s); use --backend cpu",
                       cudaGetErrorString(e));
    }
    if (count <= 0)
        return sd_fail(SD_ERR_BACKEND, "no CUDA GPU found (cudaGetDeviceCount: 0 devices); use --backend cpu");
    if (device < 0 || device >= count)
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d does not exist (%d device%s found: 0..%d)", device, count,
                       count == 1 ? "" : "s", count - 1);
    struct cudaDeviceProp prop;
    g_cur_device = -1;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        cudaGetLastError();
        return sd_fail(SD_ERR_BACKEND, "cannot open CUDA device %d: %s", device, cudaGetErrorString(e));
    }
    if (prop.major < 8)
        return sd_fail(SD_ERR_BACKEND,
                       "CUDA device %d (%s) has compute capability %d.%d; this build needs 8.0 or newer "
                       "(compiled for sm_80, sm_89, sm_90)",
                       device, prop.name, prop.major, prop.minor);

    sd_backend *be = sd_calloc(1, sizeof *be);
    cuda_impl *c = sd_calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return SD_ERR_OUT_OF_MEMORY;
    }
    c->device = device;
    snprintf(c->devname, sizeof c->devname, "%s", prop.name);
    be->ops = &k_cuda_ops;
    be->impl = c;
    be->act_dtype = SD_F16;
    be->host_memory = false;
    be->n_threads = 1;

    cublasStatus_t bs;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cudaGetLastError();
        c->stream = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cannot create a stream: %s", device, prop.name,
                       cudaGetErrorString(e));
    }
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasCreate failed: %s", device, prop.name,
                       blas_str(bs));
    }
    if ((bs = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasSetStream failed: %s", device, prop.name,
                       blas_str(bs));
    }
    /* cuBLAS's workspace, given explicitly so that GEMMs inside a graph capture allocate nothing
     * (32 MiB: NVIDIA's recommendation for Hopper) */
    size_t ws = (size_t)32 << 20;
    if ((e = cudaMalloc(&c->blas_ws, ws)) != cudaSuccess) {
        cudaGetLastError();
        c->blas_ws = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "CUDA device %d (%s): cannot allocate the 32 MiB cuBLAS workspace: %s",
                       device, prop.name, cudaGetErrorString(e));
    }
    if ((bs = cublasSetWorkspace(c->blas, c->blas_ws, ws)) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasSetWorkspace failed: %s", device, prop.name,
                       blas_str(bs));
    }
    c->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    if (cudaMalloc(&c->gn_scratch, GN_SCRATCH) != cudaSuccess) { /* optional: one block per group without it */
        cudaGetLastError();
        c->gn_scratch = NULL;
    }
    if ((e = cudaDeviceGetAttribute(&c->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) !=
        cudaSuccess) {
        cudaGetLastError();
        c->smem_optin = 48 * 1024;
    }
    *out = be;
    return SD_OK;
}

#else
/* built without CUDA: backend_select.c defines the sd_backend_cuda_create fallback */
typedef int sd_cuda_backend_not_built;
#endif
