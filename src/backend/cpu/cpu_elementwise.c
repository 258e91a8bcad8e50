/* Elementwise, conversion and layout ops of the CPU backend (its GEMM-based ops, norms and attention are in
 * cpu_backend.c): vectorised through the fp32 kernel table when there is one, scalar loops otherwise. */
#include "backend/cpu/cpu_backend_impl.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ---------------------------------------------------------------- elementwise */

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* elements per task of the vectorised elementwise loops */
#define EW_CHUNK 16384

void sd_cpu_unary(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op)
{
    if (x->layout == SD_LAYOUT_BF16_IMAGE) { /* ReLU only (ops.c), on every value: the border stays zero */
        size_t nv = sd_nbytes(x) / 2;
        const uint16_t *xs = x->data;
        uint16_t *ys = y->data;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
        for (size_t i = 0; i < nv; i++)
            ys[i] = sd_bf16_to_f32(xs[i]) > 0 ? xs[i] : 0;
        return;
    }
    int64_t n = sd_numel(x);
    const float *X = CF(x);
    float *Y = F(y);
    const sd_cpu_kern *k = kern(be);
    if (k && n > 0 && k->unary(Y, X, n < EW_CHUNK ? n : EW_CHUNK, op)) {
        int64_t chunks = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static) if (chunks > 1)
        for (int64_t c = 1; c < chunks; c++) {
            int64_t i0 = c * EW_CHUNK, len = n - i0 < EW_CHUNK ? n - i0 : EW_CHUNK;
            k->unary(Y + i0, X + i0, len, op);
        }
        return;
    }
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = X[i];
        switch (op) {
        case SD_UNARY_SILU: Y[i] = v / (1.0f + expf(-v)); break;
        case SD_UNARY_GELU: Y[i] = gelu_erf(v); break;
        case SD_UNARY_GELU_TANH:
            Y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            break;
        case SD_UNARY_QUICK_GELU: Y[i] = v / (1.0f + expf(-1.702f * v)); break;
        case SD_UNARY_TANH: Y[i] = tanhf(v); break;
        case SD_UNARY_RELU: Y[i] = v > 0 ? v : 0; break;
        case SD_UNARY_SIGMOID: Y[i] = 1.0f / (1.0f + expf(-v)); break;
        case SD_UNARY_EXP: Y[i] = expf(v); break;
        }
    }
}

void sd_cpu_binary(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op)
{
    int64_t n = sd_numel(a);
    /* right-align b's shape to a's and compute strides (0 where broadcast) */
    int64_t ae[4] = {1, 1, 1, 1}, bs[4] = {0, 0, 0, 0};
    for (int i = 0; i < a->ndim; i++)
        ae[4 - a->ndim + i] = a->ne[i];
    int64_t st = 1;
    for (int i = b->ndim - 1; i >= 0; i--) {
        int ax = 4 - b->ndim + i;
        bs[ax] = b->ne[i] == 1 ? 0 : st;
        st *= b->ne[i];
    }
    const float *A = CF(a), *Bv = CF(b);
    float *Y = F(y);
    int64_t inner = ae[3];
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t o = 0; o < n / inner; o++) {
        int64_t i2 = o % ae[2], i1 = (o / ae[2]) % ae[1], i0 = o / (ae[2] * ae[1]);
        const float *bp = Bv + i0 * bs[0] + i1 * bs[1] + i2 * bs[2];
        const float *ap = A + o * inner;
        float *yp = Y + o * inner;
        /* the op and b's inner stride (1 or 0) hoisted, so that the loops vectorise */
        if (bs[3]) {
            if (op == SD_BINARY_ADD)
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] + bp[i];
            else if (op == SD_BINARY_SUB)
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] - bp[i];
            else
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] * bp[i];
        } else {
            float bv = bp[0];
            if (op == SD_BINARY_ADD)
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] + bv;
            else if (op == SD_BINARY_SUB)
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] - bv;
            else
                for (int64_t i = 0; i < inner; i++)
                    yp[i] = ap[i] * bv;
        }
    }
}

void sd_cpu_affine(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta)
{
    int64_t n = sd_numel(x);
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        F(y)[i] = alpha * CF(x)[i] + beta;
}

void sd_cpu_clamp(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi)
{
    int64_t n = sd_numel(x);
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        F(y)[i] = fminf(fmaxf(CF(x)[i], lo), hi);
}

void sd_cpu_geglu(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    int64_t N = y->ne[y->ndim - 1], R = sd_numel(y) / N;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = CF(x) + r * 2 * N;
        float *yr = F(y) + r * N;
        if (kern(be)) {
            kern(be)->geglu(yr, xr, N);
            continue;
        }
        for (int64_t i = 0; i < N; i++)
            yr[i] = xr[i] * gelu_erf(xr[N + i]);
    }
}

void sd_cpu_image_border(uint16_t *img, int64_t H, int64_t W, int64_t Cp)
{
    int64_t Wl = W + 2;
    memset(img, 0, (size_t)(Wl + 1) * (size_t)Cp * 2); /* the top row and row 1's left pixel */
    for (int64_t h = 1; h <= H; h++) /* row h's right pixel and row h + 1's left one */
        memset(img + (h * Wl + W + 1) * Cp, 0, (size_t)(2 * Cp) * 2);
    memset(img + ((H + 1) * Wl + 1) * Cp, 0, (size_t)(Wl - 1 + 64) * (size_t)Cp * 2); /* bottom row and tail */
}

/* nearest 2x in the image layout: each output row from its source row's pixels, then the border */
static void upsample2x_image(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    int64_t N = x->ne[0], H = x->ne[2], W = x->ne[3], Cp = sd_image_layout_cp(x->ne);
    int64_t xpix = sd_image_layout_pixels(x->ne), ypix = sd_image_layout_pixels(y->ne);
    const uint16_t *X = x->data;
    uint16_t *Y = y->data;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t r = 0; r < N * 2 * H; r++) {
        int64_t n = r / (2 * H), oh = r % (2 * H);
        const uint16_t *src = X + (n * xpix + (oh / 2 + 1) * (W + 2) + 1) * Cp;
        uint16_t *dst = Y + (n * ypix + (oh + 1) * (2 * W + 2) + 1) * Cp;
        for (int64_t w = 0; w < W; w++) {
            memcpy(dst + 2 * w * Cp, src + w * Cp, (size_t)Cp * 2);
            memcpy(dst + (2 * w + 1) * Cp, src + w * Cp, (size_t)Cp * 2);
        }
    }
    for (int64_t n = 0; n < N; n++)
        sd_cpu_image_border(Y + n * ypix * Cp, 2 * H, 2 * W, Cp);
}

void sd_cpu_upsample2x(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    if (x->layout == SD_LAYOUT_BF16_IMAGE) {
        upsample2x_image(be, y, x);
        return;
    }
    int64_t NC = x->ne[0] * x->ne[1], H = x->ne[2], W = x->ne[3];
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t p = 0; p < NC; p++)
        for (int64_t h = 0; h < H; h++) { /* one doubled row, then a copy of it */
            const float *src = CF(x) + (p * H + h) * W;
            float *dst = F(y) + (p * 2 * H + 2 * h) * 2 * W;
            for (int64_t w = 0; w < W; w++)
                dst[2 * w] = dst[2 * w + 1] = src[w];
            memcpy(dst + 2 * W, dst, (size_t)(2 * W) * sizeof(float));
        }
}

void sd_cpu_rgb8_to_chw(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    int64_t N = x->ne[0], HW = x->ne[1] * x->ne[2];
    const uint8_t *src = x->data;
    float *dst = F(y);
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < HW; i++)
            for (int c = 0; c < 3; c++) /* the expression of sd_rgb_to_chw (io/image.c) */
                dst[(n * 3 + c) * HW + i] = src[(n * HW + i) * 3 + c] / 127.5f - 1.0f;
}

void sd_cpu_chw_to_rgb8(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    int64_t N = x->ne[0], HW = x->ne[2] * x->ne[3];
    const float *src = CF(x);
    uint8_t *dst = y->data;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < HW; i++)
            for (int c = 0; c < 3; c++) { /* the expression of sd_chw_to_rgb (io/image.c) */
                float v = (src[(n * 3 + c) * HW + i] + 1.0f) * 127.5f;
                dst[(n * HW + i) * 3 + c] = (uint8_t)(isnan(v) ? 0 : v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
            }
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

void sd_cpu_concat(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis)
{
    int64_t outer, ia, ib;
    split_axis(a, axis, &outer, &ia);
    split_axis(b, axis, &outer, &ib);
    size_t es = sd_dtype_size(a->dtype);
    uint8_t *Y = y->data;
    if (outer == 1) { /* the UNet skip connections: two large blocks */
        sd_cpu_par_memcpy(be, Y, a->data, (size_t)ia * es);
        sd_cpu_par_memcpy(be, Y + (size_t)ia * es, b->data, (size_t)ib * es);
        return;
    }
#pragma omp parallel for num_threads(nthreads(be)) schedule(static) if ((size_t)(outer * (ia + ib)) * es >= PAR_COPY_MIN)
    for (int64_t o = 0; o < outer; o++) {
        memcpy(Y + (size_t)(o * (ia + ib)) * es, (const uint8_t *)a->data + (size_t)(o * ia) * es, (size_t)ia * es);
        memcpy(Y + (size_t)(o * (ia + ib) + ia) * es, (const uint8_t *)b->data + (size_t)(o * ib) * es,
               (size_t)ib * es);
    }
}

void sd_cpu_slice(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start)
{
    int64_t outer, ix, iy;
    split_axis(x, axis, &outer, &ix);
    split_axis(y, axis, &outer, &iy);
    int64_t off = start * (ix / x->ne[axis]);
    size_t es = sd_dtype_size(x->dtype);
    if (outer == 1) {
        sd_cpu_par_memcpy(be, y->data, (const uint8_t *)x->data + (size_t)off * es, (size_t)iy * es);
        return;
    }
#pragma omp parallel for num_threads(nthreads(be)) schedule(static) if ((size_t)(outer * iy) * es >= PAR_COPY_MIN)
    for (int64_t o = 0; o < outer; o++)
        memcpy((uint8_t *)y->data + (size_t)(o * iy) * es, (const uint8_t *)x->data + (size_t)(o * ix + off) * es,
               (size_t)iy * es);
}

/* y[b] = x[b]^T for nb matrices x[b] of R x C elements (esz bytes): 32 x 32 blocks, so that both the
 * reads and the writes run along cache lines (a strided gather reads one value per line) */
#define TR_BLOCK 32
static void transpose_batched(sd_backend *be, uint8_t *y, const uint8_t *x, int64_t nb, int64_t R, int64_t C,
                              size_t esz)
{
    int64_t rb = (R + TR_BLOCK - 1) / TR_BLOCK, cb = (C + TR_BLOCK - 1) / TR_BLOCK;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t t = 0; t < nb * rb * cb; t++) {
        int64_t b = t / (rb * cb), r0 = (t / cb) % rb * TR_BLOCK, c0 = t % cb * TR_BLOCK;
        int64_t r1 = r0 + TR_BLOCK < R ? r0 + TR_BLOCK : R, c1 = c0 + TR_BLOCK < C ? c0 + TR_BLOCK : C;
        const uint8_t *xb = x + (size_t)(b * R * C) * esz;
        uint8_t *yb = y + (size_t)(b * R * C) * esz;
        if (esz == 4) {
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++)
                    ((float *)yb)[c * R + r] = ((const float *)xb)[r * C + c];
        } else {
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++)
                    memcpy(yb + (size_t)(c * R + r) * esz, xb + (size_t)(r * C + c) * esz, esz);
        }
    }
}

void sd_cpu_permute(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4])
{
    /* NCHW <-> NHWC (the transformers' token layout): per batch, a [C, H*W] <-> [H*W, C] transpose */
    bool nhwc = perm[1] == 2 && perm[2] == 3 && perm[3] == 1, nchw = perm[1] == 3 && perm[2] == 1 && perm[3] == 2;
    if (perm[0] == 0 && (nhwc || nchw)) {
        bool to_nhwc = nhwc;
        int64_t C = to_nhwc ? x->ne[1] : x->ne[3], HW = to_nhwc ? x->ne[2] * x->ne[3] : x->ne[1] * x->ne[2];
        transpose_batched(be, y->data, x->data, x->ne[0], to_nhwc ? C : HW, to_nhwc ? HW : C,
                          sd_dtype_size(x->dtype));
        return;
    }
    int64_t xs[4];
    xs[3] = 1;
    for (int i = 2; i >= 0; i--)
        xs[i] = xs[i + 1] * x->ne[i + 1];
    int64_t s0 = xs[perm[0]], s1 = xs[perm[1]], s2 = xs[perm[2]], s3 = xs[perm[3]];
    int64_t n0 = y->ne[0], n1 = y->ne[1], n2 = y->ne[2], n3 = y->ne[3];
    const float *X = CF(x);
    float *Y = F(y);
#pragma omp parallel for num_threads(nthreads(be)) schedule(static) collapse(2)
    for (int64_t i0 = 0; i0 < n0; i0++)
        for (int64_t i1 = 0; i1 < n1; i1++)
            for (int64_t i2 = 0; i2 < n2; i2++) {
                float *yp = Y + ((i0 * n1 + i1) * n2 + i2) * n3;
                const float *xp = X + i0 * s0 + i1 * s1 + i2 * s2;
                for (int64_t i3 = 0; i3 < n3; i3++)
                    yp[i3] = xp[i3 * s3];
            }
}

void sd_cpu_timestep_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip, float shift,
                                   float max_period)
{
    int half = dim / 2;
    for (int64_t b = 0; b < t->ne[0]; b++) {
        float *yr = F(y) + b * dim;
        float tv = CF(t)[b];
        for (int i = 0; i < half; i++) {
            /* float32 like torch: exponent = -ln(max_period) * i / (half - shift) */
            float e = -logf(max_period) * (float)i / ((float)half - shift);
            float arg = tv * expf(e);
            float s = sinf(arg), c = cosf(arg);
            yr[i] = flip ? c : s;
            yr[half + i] = flip ? s : c;
        }
        if (dim % 2)
            yr[dim - 1] = 0.0f;
    }
}

void sd_cpu_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids)
{
    int64_t V = table->ne[0], D = table->ne[1];
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < ids->ne[0]; i++) {
        if (id[i] >= 0 && id[i] < V && table->dtype == SD_F32)
            memcpy(F(y) + i * D, CF(table) + id[i] * D, (size_t)D * sizeof(float));
        else if (id[i] >= 0 && id[i] < V)
            for (int64_t j = 0; j < D; j++)
                F(y)[i * D + j] = ldp(table, id[i] * D + j);
        else
            memset(F(y) + i * D, 0, (size_t)D * sizeof(float));
    }
}

