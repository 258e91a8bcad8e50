/* CUDA backend ops: GEMMs through cuBLAS (linear, matmul), conv2d (implicit GEMM on tensor cores
 * or im2col + cuBLAS), and the launches of the own kernels (kernels.cu, kernels_attention.cu).
 * Compiled in every build (src/backend is globbed): empty without SD_HAVE_CUDA. */
#include "backend/backend.h"

#ifdef SD_HAVE_CUDA

#include "backend/cuda/cuda_impl.h"

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
void cuda_linear(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
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
void cuda_matmul(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, bool ta, bool tb,
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

size_t cuda_conv2d_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    return plan_conv(x, w, y).scratch;
}

void cuda_conv2d(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
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

void cuda_cast(sd_backend *be, sd_tensor *y, const sd_tensor *x)
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

void cuda_group_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
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

void cuda_layer_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
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

void cuda_softmax(sd_backend *be, sd_tensor *y, const sd_tensor *x, float scale)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t D = x->ne[x->ndim - 1], R = D ? sd_numel(x) / D : 0;
    cu_ck(c, sdk_softmax(c->stream, y->data, y->dtype, x->data, x->dtype, R, D, scale), "softmax");
}

size_t cuda_attention_scratch(sd_backend *be, const sd_tensor *q, const sd_tensor *k, int heads) { return 0; }

void cuda_attention(sd_backend *be, sd_tensor *y, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
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

void cuda_unary(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_unary(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), (int)op), "unary");
}

void cuda_binary(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op)
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

void cuda_affine(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_affine(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), alpha, beta), "affine");
}

void cuda_clamp(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_clamp(c->stream, y->data, y->dtype, x->data, x->dtype, sd_numel(x), lo, hi), "clamp");
}

void cuda_geglu(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t N = y->ne[y->ndim - 1], R = N ? sd_numel(y) / N : 0;
    cu_ck(c, sdk_geglu(c->stream, y->data, y->dtype, x->data, x->dtype, R, N), "geglu");
}

void cuda_upsample2x(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_upsample2x(c->stream, y->data, y->dtype, x->data, x->dtype, x->ne[0] * x->ne[1], x->ne[2], x->ne[3]),
           "upsample2x");
}

void cuda_rgb8_to_chw(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    cuda_impl *c = IMPL(be);
    if (cu_live(c))
        cu_ck(c, sdk_rgb8_to_chw(c->stream, y->data, y->dtype, x->data, x->ne[0], x->ne[1] * x->ne[2]), "rgb8_to_chw");
}

void cuda_chw_to_rgb8(sd_backend *be, sd_tensor *y, const sd_tensor *x)
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

void cuda_concat(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return;
    int64_t outer, ia, ib;
    split_axis(a, axis, &outer, &ia);
    split_axis(b, axis, &outer, &ib);
    cu_ck(c, sdk_concat(c->stream, y->data, a->data, b->data, outer, ia, ib, (int)sd_dtype_size(a->dtype)), "concat");
}

void cuda_slice(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start)
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

void cuda_permute(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4])
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

void cuda_timestep_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip, float shift,
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

void cuda_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
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

#else
typedef int sd_cuda_ops_not_built;
#endif
