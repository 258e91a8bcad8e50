/* CPU backend: float32 activations, OpenMP threads.
 *
 * Two paths, chosen once per backend (see cpu_kern.h):
 *  - SIMD kernels (AVX-512 or AVX2, picked at run time): own GEMM with implicit
 *    im2col for convolutions, F16/BF16 weights converted while packing (so the
 *    backend accepts them and the op wrappers convert nothing), flash attention,
 *    vectorised exp/erf in group norm + SiLU, GEGLU, softmax and activations.
 *  - "blas": OpenBLAS sgemm with chunked im2col, tiled attention and scalar
 *    loops; used on CPUs without AVX2 or when SD_CPU_ISA=blas.
 * Biases, norm parameters and embedding tables are read in any float dtype. */
#include "backend/cpu/cpu_backend_impl.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the bf16 kernels when precision bf16 is on and the CPU has some, else NULL */
static const sd_cpu_bf16_kern *bf16k(const sd_backend *be)
{
    const cpu_impl *im = be->impl;
    return im->bf16 ? im->bk : NULL;
}

static bool i8_layout(const sd_tensor *w)
{
    return w->layout == SD_LAYOUT_CPU_I8_LINEAR || w->layout == SD_LAYOUT_CPU_I8_PW;
}

/* precision int8: a linear or pointwise weight prepared at load as the int8 kernels' tiles: *v its view;
 * false for any other weight (a row-major one takes the bf16 path) */
static bool int8w(const sd_tensor *w, sd_i8w *v)
{
    if (!i8_layout(w))
        return false;
    sd_i8w_view(v, w->data, w->ne[0], sd_numel(w) / w->ne[0], w->layout == SD_LAYOUT_CPU_I8_LINEAR);
    return true;
}

/* rows of im2col processed per GEMM call are limited so the scratch stays small */
#define CONV_SCRATCH_MAX ((size_t)32 << 20)
/* query rows per attention tile */
#define ATT_TILE 64

static void *cpu_alloc(sd_backend *be, size_t bytes) { return sd_aligned_alloc(bytes); }
static void cpu_free(sd_backend *be, void *p) { sd_aligned_free(p); }

static sd_status cpu_copy(sd_backend *be, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
    return SD_OK;
}

/* memcpy of non-overlapping ranges, split across the threads when large */
void sd_cpu_par_memcpy(sd_backend *be, void *dst, const void *src, size_t bytes)
{
    int nt = nthreads(be);
    if (nt < 2 || bytes < PAR_COPY_MIN) {
        memcpy(dst, src, bytes);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        size_t a = bytes * (size_t)t / (size_t)nt / 64 * 64, b = t + 1 == nt ? bytes : bytes * (size_t)(t + 1) / (size_t)nt / 64 * 64;
        memcpy((uint8_t *)dst + a, (const uint8_t *)src + a, b - a);
    }
}

/* memmove (sd_keep moves results down the arena, often overlapping their old place). Large moves run
 * in rounds of `distance` bytes: within a round no thread's destination overlaps another's source, and
 * a round only overwrites source bytes that earlier rounds have finished reading. */
static void cpu_move(sd_backend *be, void *dst, const void *src, size_t bytes)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    size_t dist = d > s ? (size_t)(d - s) : (size_t)(s - d);
    if (nthreads(be) < 2 || bytes < PAR_COPY_MIN || dist == 0 || (dist < bytes && dist < PAR_COPY_MIN)) {
        memmove(dst, src, bytes);
        return;
    }
    if (dist >= bytes) {
        sd_cpu_par_memcpy(be, dst, src, bytes);
        return;
    }
    if (d < s) { /* forward: round k copies [k*dist, (k+1)*dist) */
        for (size_t o = 0; o < bytes; o += dist)
            sd_cpu_par_memcpy(be, d + o, s + o, bytes - o < dist ? bytes - o : dist);
    } else { /* backward: from the end */
        for (size_t e = bytes; e > 0;) {
            size_t n = e < dist ? e : dist;
            e -= n;
            sd_cpu_par_memcpy(be, d + e, s + e, n);
        }
    }
}
static sd_status cpu_sync(sd_backend *be) { return SD_OK; }
/* The SIMD GEMM converts F16/BF16 weights while packing; OpenBLAS needs F32. */
static bool cpu_accepts(sd_backend *be, sd_dtype t)
{
    return t == SD_F32 || (kern(be) && (t == SD_F16 || t == SD_BF16));
}

/* one GEMM: g8 on the int8 kernels, else g (precision bf16: the bf16 kernels round A and B to bf16
 * as they pack them; a prepared B: the bf16 kernels') */
static void gemm_on(sd_backend *be, const sd_gemm *g, const sd_gemm_i8 *g8, float *ws)
{
    cpu_impl *im = be->impl;
    if (g8)
        im->ik->gemm(g8, ws, nthreads(be));
    else
        (bf16k(be) || g->bkind == SD_GB_PACKED ? im->bk->gemm : im->k->gemm)(g, ws, nthreads(be));
}

/* Runs one GEMM on the SIMD path with the backend's workspace (no allocation unless another
 * host thread holds it at the same moment). */
static void run_gemm2(sd_backend *be, const sd_gemm *g, const sd_gemm_i8 *g8)
{
    cpu_impl *im = be->impl;
    if (pthread_mutex_trylock(&im->ws_lock) == 0) {
        gemm_on(be, g, g8, im->ws);
        pthread_mutex_unlock(&im->ws_lock);
        return;
    }
    float *ws = sd_aligned_alloc(im->ws_floats * sizeof(float));
    if (ws) {
        gemm_on(be, g, g8, ws);
        sd_aligned_free(ws);
        return;
    }
    pthread_mutex_lock(&im->ws_lock); /* out of memory: wait for the shared one */
    gemm_on(be, g, g8, im->ws);
    pthread_mutex_unlock(&im->ws_lock);
}
static void run_gemm(sd_backend *be, const sd_gemm *g) { run_gemm2(be, g, NULL); }

static void cpu_cast(sd_backend *be, sd_tensor *y, const sd_tensor *x)
{
    int64_t n = sd_numel(x);
    if (y->dtype == x->dtype) {
        memcpy(y->data, x->data, sd_nbytes(x));
        return;
    }
    const uint16_t *h = x->data;
    uint16_t *oh = y->data;
    float *of = y->data;
    const float *xf = x->data;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        if (y->dtype == SD_F32 && x->dtype == SD_F16)
            of[i] = sd_f16_to_f32(h[i]);
        else if (y->dtype == SD_F32 && x->dtype == SD_BF16)
            of[i] = sd_bf16_to_f32(h[i]);
        else if (y->dtype == SD_F16 && x->dtype == SD_F32)
            oh[i] = sd_f32_to_f16(xf[i]);
        else if (y->dtype == SD_BF16 && x->dtype == SD_F32)
            oh[i] = sd_f32_to_bf16(xf[i]);
    }
}

/* the bf16 kernels run this linear (precision bf16, or a weight prepared for them), one pass over the
 * whole depth with the bias in the epilogue (sd_bk_linear_full) */
static bool linear_bf16_full(const sd_backend *be, const sd_tensor *w)
{
    const cpu_impl *im = be->impl;
    return im->bk && !i8_layout(w) && (im->bf16 || w->layout == SD_LAYOUT_CPU_BF16_LINEAR) && w->ne[1] <= SD_BK_KFULL;
}

/* backend op linear_fuses: the epilogues run where the bf16 kernels take the linear in one pass (never at
 * fp32, whose sums stay exactly those of linear then add / geglu, nor at int8) */
static bool cpu_linear_fuses(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                             sd_linear_epi epi)
{
    (void)x;
    const cpu_impl *im = be->impl;
    if (im->int8 || !kern(be) || !linear_bf16_full(be, w) || (b && b->dtype != SD_F32))
        return false;
    return (epi != SD_EPI_GEGLU && epi != SD_EPI_GEGLU_BF16) || w->ne[0] % 32 == 0;
}

/* y = x w^T + b, then the epilogue: + r (SD_EPI_ADD) or GEGLU (cpu_linear_fuses said yes for these); x F32,
 * or BF16 from a fused GEGLU on the bf16 kernels */
static void cpu_linear_ex(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                          sd_linear_epi epi, const sd_tensor *r)
{
    int64_t N = w->ne[0], K = w->ne[1];
    int64_t M = sd_numel(x) / K;
    float *Y = F(y);
    sd_i8w qw;
    bool i8 = int8w(w, &qw);
    if (i8 && (!b || b->dtype == SD_F32)) { /* precision int8: activations quantised per row */
        sd_gemm_i8 g8 = {.M = M, .N = N, .K = K, .w = &qw, .x = CF(x), .c = Y, .ldc = N, .bias = b ? CF(b) : NULL};
        run_gemm2(be, NULL, &g8);
        return;
    }
    bool full = !i8 && kern(be) && linear_bf16_full(be, w) && (!b || b->dtype == SD_F32); /* bias in the epilogue */
    if (b && M > 0 && !full) {
        for (int64_t n = 0; n < N; n++)
            Y[n] = ldp(b, n);
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
        for (int64_t i = 1; i < M; i++)
            memcpy(Y + i * N, Y, (size_t)N * sizeof(float));
    }
    if (i8) { /* a bias of another dtype: filled in above */
        sd_gemm_i8 g8 = {.M = M, .N = N, .K = K, .w = &qw, .x = CF(x), .c = Y, .ldc = N, .accumulate = b != NULL};
        run_gemm2(be, NULL, &g8);
        return;
    }
    if (kern(be)) {
        bool prep = w->layout == SD_LAYOUT_CPU_BF16_LINEAR; /* B tiles prepared at load */
        bool gg = epi == SD_EPI_GEGLU || epi == SD_EPI_GEGLU_BF16;
        sd_gemm g = {.M = M, .N = N, .K = K, .a = x->data, .a_dt = x->dtype, .lda = K, .b = w->data,
                     .b_dt = w->dtype, .ldb = K, .bkind = prep ? SD_GB_PACKED : SD_GB_TRANS, .c = Y,
                     .ldc = gg ? N / 2 : N, .accumulate = b != NULL && !full, .bias = b && full ? CF(b) : NULL,
                     .res = epi == SD_EPI_ADD ? CF(r) : NULL, .ldr = N, .geglu = gg ? kern(be)->geglu : NULL,
                     .c_bf16 = epi == SD_EPI_GEGLU_BF16};
        run_gemm(be, &g);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, CF(x), (int)K, CF(w), (int)K,
                b ? 1.0f : 0.0f, Y, (int)N);
}

static void cpu_linear(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b)
{
    cpu_linear_ex(be, y, x, w, b, SD_EPI_NONE, NULL);
}

static void cpu_matmul(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, bool ta, bool tb,
                       float alpha)
{
    int64_t B = a->ne[0], M = y->ne[1], N = y->ne[2];
    int64_t K = ta ? a->ne[1] : a->ne[2];
    for (int64_t i = 0; i < B; i++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                    (int)K, alpha, CF(a) + i * a->ne[1] * a->ne[2], (int)a->ne[2], CF(b) + i * b->ne[1] * b->ne[2],
                    (int)b->ne[2], 0.0f, F(y) + i * M * N, (int)N);
}

/* ---------------------------------------------------------------- conv2d */

static bool conv_is_pointwise(const sd_tensor *w, int stride, const int pads[4])
{
    return w->ne[2] == 1 && w->ne[3] == 1 && stride == 1 && !pads[0] && !pads[1] && !pads[2] && !pads[3];
}

/* output rows per im2col chunk */
static int64_t conv_chunk_rows(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    size_t per_row = (size_t)(x->ne[1] * w->ne[2] * w->ne[3] * y->ne[3]) * sizeof(float);
    int64_t rows = (int64_t)(CONV_SCRATCH_MAX / (per_row ? per_row : 1));
    if (rows < 1)
        rows = 1;
    return rows > y->ne[2] ? y->ne[2] : rows;
}

/* precision bf16: the zero-padded bf16 image of a stride-1 conv (its padded size is HO + KH - 1 by
 * WO + KW - 1); 0 for pointwise convs */
static size_t conv_pad_bytes(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    if (w->ne[2] == 1 && w->ne[3] == 1)
        return 0;
    return (size_t)(x->ne[1] * (y->ne[2] + w->ne[2] - 1) * (y->ne[3] + w->ne[3] - 1)) * 2 + 64;
}

/* precision bf16, direct convolution (sd_dconv): it runs for a weight prepared at load
 * (SD_LAYOUT_CPU_BF16_CONV: the B tiles are ready) and for a row-major BF16/F16/F32 weight when the image is
 * large enough that packing the weight per call costs little next to the products (never another backend
 * layout: int8's prepared weights have their own kernels); stride 1 or 2. The
 * choice looks at one image's output pixels, never the batch's: the direct convolution and the implicit
 * GEMM sum in different orders, and an image's result must not depend on the other images of the batch
 * (cross-session batching in the server) */
#define DCONV_MIN_PIXELS 1024
static bool dconv_use(const sd_backend *be, const sd_tensor *w, const sd_tensor *y, int stride)
{
    const sd_cpu_bf16_kern *bk = ((const cpu_impl *)be->impl)->bk;
    bool packed = w->layout == SD_LAYOUT_CPU_BF16_CONV;
    bool big = w->layout == SD_LAYOUT_ROWMAJOR && bf16k(be) && y->ne[2] * y->ne[3] >= DCONV_MIN_PIXELS;
    return bk && bk->dconv && (packed || big) &&
           (stride == 1 || stride == 2) && w->ne[2] * w->ne[3] <= SD_DCONV_MAX_TAPS;
}

/* an image-layout input that is the direct convolution's image copy itself (read in place): 3x3, stride 1,
 * output as large as the input (the wrappers pass image-layout tensors with symmetric pads only: pad 1) */
static bool dconv_inplace(const sd_tensor *x, const sd_tensor *w, const sd_tensor *y, int stride)
{
    return x->layout == SD_LAYOUT_BF16_IMAGE && stride == 1 && w->ne[2] == 3 && w->ne[3] == 3 && y->ne[2] == x->ne[2] &&
           y->ne[3] == x->ne[3];
}

/* its scratch: the image copy (unless read in place), the packed weight (unless prepared) and the bias in
 * F32, each 64-byte aligned */
static size_t dconv_bytes(const sd_dconv *d, bool packed, bool inplace)
{
    return ((inplace ? 0 : d->x_elems) + (packed ? 0 : d->w_elems)) * 2 + (size_t)d->O * 4 + 192;
}

static size_t cpu_conv2d_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y)
{
    if (w->layout == SD_LAYOUT_CPU_I8_CONV)
        return sd_cpu_conv_i8_scratch(be, x, w, y);
    bool packed = w->layout == SD_LAYOUT_CPU_BF16_CONV;
    bool i8 = i8_layout(w);
    size_t px = i8 ? (size_t)(x->ne[2] * x->ne[3]) * sizeof(float) + 64 : 0; /* int8: the pixel maxima */
    if (bf16k(be) || packed) { /* the stride is not known here: 2 only when the output is smaller than the input */
        size_t n = packed ? 0 : conv_pad_bytes(x, w, y) > px ? conv_pad_bytes(x, w, y) : px;
        int smax = y->ne[2] < x->ne[2] || y->ne[3] < x->ne[3] ? 2 : 1;
        for (int s = 1; s <= smax; s++) {
            sd_dconv d;
            sd_dconv_geom(&d, x->ne[1], x->ne[2], x->ne[3], w->ne[0], w->ne[2], w->ne[3], y->ne[2], y->ne[3], s, 0, 0);
            size_t db = dconv_bytes(&d, packed, s == 1 && dconv_inplace(x, w, y, 1));
            if (dconv_use(be, w, y, s) && db > n)
                n = db;
        }
        return n;
    }
    if (px) /* precision int8 without bf16 kernels: the pixel maxima */
        return px;
    if (kern(be))
        return 0; /* implicit im2col: the GEMM packs straight from the image */
    if (w->ne[2] == 1 && w->ne[3] == 1 && x->ne[2] == y->ne[2] && x->ne[3] == y->ne[3])
        return 0; /* pointwise: no im2col (pads are zero when sizes match for 1x1) */
    return (size_t)(x->ne[1] * w->ne[2] * w->ne[3] * y->ne[3] * conv_chunk_rows(x, w, y)) * sizeof(float);
}

/* y = conv(x) with a prepared weight (its values read from the tiles: bf16, or int8 times the channel's
 * scale; the image rounded to bf16; fp32 sums): any stride */
static void conv_packed_ref(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                            int stride, const int pads[4])
{
    bool i8 = w->layout == SD_LAYOUT_CPU_I8_CONV;
    sd_dconv d;
    sd_dconv_geom_blk(&d, i8 ? SD_I8_CBLK : 32, x->ne[1], x->ne[2], x->ne[3], w->ne[0], w->ne[2], w->ne[3], y->ne[2],
                      y->ne[3], stride, pads[0], pads[1]);
    const uint16_t *wp = w->data;
    const int8_t *wq = w->data;
    const float *ws = (const float *)(wq + d.w_elems);
    int64_t taps = d.KH * d.KW, ncb = d.Cp / 32, s = d.stride, C = d.C, H = d.H, W = d.W;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t no = 0; no < x->ne[0] * d.O; no++) {
        int64_t n = no / d.O, o = no % d.O;
        for (int64_t oh = 0; oh < d.HO; oh++)
            for (int64_t ow = 0; ow < d.WO; ow++) {
                float acc = b ? ldp(b, o) : 0.0f;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t t = 0; t < taps; t++) {
                        int64_t ih = oh * s - d.pad_t + t / d.KW, iw = ow * s - d.pad_l + t % d.KW, k = c % 32;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                            continue;
                        float wv = i8 ? wq[sd_i8_dconv_widx(&d, o, c, t)] * ws[o]
                                      : sd_bf16_to_f32(wp[(((o / 16) * taps + t) * ncb + c / 32) * 512 + (k / 2) * 32 +
                                                          (o % 16) * 2 + k % 2]);
                        acc += sd_bf16_to_f32(sd_f32_to_bf16(CF(x)[((n * C + c) * H + ih) * W + iw])) * wv;
                    }
                F(y)[((n * d.O + o) * d.HO + oh) * d.WO + ow] = acc;
            }
    }
}

/* backend ops weight_layout / weight_prepare: at precision int8 with int8 kernels, linear and pointwise
 * conv weights are quantised into their tiles (sd_i8w) and kxk conv weights into the direct convolution's
 * (SD_LAYOUT_CPU_I8_CONV), but SD_WEIGHT_CONV_BF16 ones stay bf16 where the bf16 direct convolution exists
 * and bf16 is the fast path (precision auto's rule: AMX, or a VDPBF16PS that outpaces the fp32 FMA);
 * with bf16 kernels, BF16 conv weights become the direct convolution's B tiles and BF16 linear weights the
 * GEMM's (SD_GB_PACKED) */
static sd_layout cpu_weight_layout(sd_backend *be, const sd_tensor *t, sd_weight_use use, size_t *bytes)
{
    const cpu_impl *im = be->impl;
    const sd_cpu_bf16_kern *bk = bf16k(be); /* precision int8 turns bf16 on too */
    bool conv_bf16 = use == SD_WEIGHT_CONV_BF16 && bk && bk->dconv && sd_backend_cpu_auto_bf16(be);
    if (use == SD_WEIGHT_CONV_BF16)
        use = SD_WEIGHT_CONV;
    if (im->int8 && !conv_bf16) {
        int64_t O = t->ne[0], K = O > 0 ? sd_numel(t) / O : 0;
        bool fl = t->dtype == SD_F32 || t->dtype == SD_F16 || t->dtype == SD_BF16, fits = K > 0 && K <= SD_I8_KMAX;
        bool lin = use == SD_WEIGHT_LINEAR && t->ndim == 2;
        bool pw = use == SD_WEIGHT_CONV && t->ndim == 4 && t->ne[2] == 1 && t->ne[3] == 1;
        bool kxk = use == SD_WEIGHT_CONV && t->ndim == 4 && !pw && t->ne[2] * t->ne[3] <= SD_DCONV_MAX_TAPS;
        if (fl && kxk && K > 0 && K <= SD_I8_DCONV_KMAX) {
            sd_dconv d;
            sd_dconv_geom_blk(&d, SD_I8_CBLK, t->ne[1], 1, 1, O, t->ne[2], t->ne[3], 1, 1, 1, 0, 0);
            *bytes = sd_i8_dconv_wbytes(&d);
            return SD_LAYOUT_CPU_I8_CONV;
        }
        if (!fl || !fits || (!lin && !pw))
            return SD_LAYOUT_ROWMAJOR; /* kernels past SD_DCONV_MAX_TAPS, deeper than the kernels take: bf16 */
        *bytes = sd_i8w_bytes(O, K);
        return lin ? SD_LAYOUT_CPU_I8_LINEAR : SD_LAYOUT_CPU_I8_PW;
    }
    if (!bk || t->dtype != SD_BF16)
        return SD_LAYOUT_ROWMAJOR;
    if (use == SD_WEIGHT_CONV && bk->dconv && t->ndim == 4 && t->ne[2] * t->ne[3] <= SD_DCONV_MAX_TAPS) {
        sd_dconv d;
        sd_dconv_geom(&d, t->ne[1], 1, 1, t->ne[0], t->ne[2], t->ne[3], 1, 1, 1, 0, 0);
        *bytes = d.w_elems * 2;
        return SD_LAYOUT_CPU_BF16_CONV;
    }
    if (use == SD_WEIGHT_LINEAR && bk->linear_pack && t->ndim == 2) {
        *bytes = (size_t)((t->ne[0] + 31) / 32 * 32 * ((t->ne[1] + 31) / 32 * 32)) * 2;
        return SD_LAYOUT_CPU_BF16_LINEAR;
    }
    return SD_LAYOUT_ROWMAJOR;
}

static void cpu_weight_prepare(sd_backend *be, void *dst, const sd_tensor *t, sd_layout layout)
{
    const cpu_impl *im = be->impl;
    const sd_cpu_bf16_kern *bk = im->bk;
    if (layout == SD_LAYOUT_CPU_I8_CONV) {
        sd_i8_dconv_weight(dst, t, nthreads(be));
        return;
    }
    if (layout == SD_LAYOUT_CPU_I8_LINEAR || layout == SD_LAYOUT_CPU_I8_PW) {
        sd_i8w v;
        sd_i8w_view(&v, dst, t->ne[0], sd_numel(t) / t->ne[0], layout == SD_LAYOUT_CPU_I8_LINEAR);
        sd_i8w_quantise(t, im->ik->shift, &v, nthreads(be));
        return;
    }
    if (layout == SD_LAYOUT_CPU_BF16_LINEAR) {
        bk->linear_pack(dst, t->data, t->dtype, t->ne[0], t->ne[1]);
        return;
    }
    sd_dconv d;
    sd_dconv_geom(&d, t->ne[1], 1, 1, t->ne[0], t->ne[2], t->ne[3], 1, 1, 1, 0, 0);
    bk->dconv_weight(dst, t->data, t->dtype, &d, nthreads(be));
}

/* the direct convolution with its epilogue (sd_dconv_out) when it runs (dconv_use and the scratch), else false.
 * Image-layout activations (backend.h) go only this way: cpu_conv_layout offers the layout where it runs. */
static bool conv_direct(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                        int stride, const int pads[4], const sd_tensor *res, int act, void *scratch)
{
    const sd_cpu_bf16_kern *bk = ((const cpu_impl *)be->impl)->bk;
    int64_t N = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3], O = w->ne[0], HO = y->ne[2], WO = y->ne[3];
    bool packed = w->layout == SD_LAYOUT_CPU_BF16_CONV, inplace = dconv_inplace(x, w, y, stride);
    bool xcl = x->layout == SD_LAYOUT_BF16_IMAGE, ycl = y->layout == SD_LAYOUT_BF16_IMAGE;
    sd_dconv d;
    sd_dconv_geom(&d, C, H, W, O, w->ne[2], w->ne[3], HO, WO, stride, pads[0], pads[1]);
    if (!scratch || !dconv_use(be, w, y, stride) || dconv_bytes(&d, packed, inplace) > cpu_conv2d_scratch(be, x, w, y))
        return false;
    /* the weight in B tiles (unless prepared at load) and the bias once, then per image its channels-last
     * copy (none when read in place) and the products */
    uint16_t *xp = scratch, *wp = xp + (inplace ? 0 : (d.x_elems + 31) / 32 * 32);
    float *bias = (float *)(wp + (packed ? 0 : (d.w_elems + 31) / 32 * 32));
    int nt = nthreads(be);
    if (packed)
        wp = w->data;
    else
        bk->dconv_weight(wp, w->data, w->dtype, &d, nt);
    for (int64_t o = 0; b && o < O; o++)
        bias[o] = ldp(b, o);
    size_t xim = (size_t)(sd_image_layout_pixels(x->ne) * d.Cp), yim = (size_t)(sd_image_layout_pixels(y->ne) * ((O + 31) / 32 * 32));
    for (int64_t n = 0; n < N; n++) {
        const uint16_t *img = xp;
        if (inplace)
            img = (const uint16_t *)x->data + n * xim;
        else if (xcl)
            bk->dconv_image_cl(xp, (const uint16_t *)x->data + n * xim, &d, nt);
        else
            bk->dconv_image(xp, CF(x) + n * C * H * W, &d, nt);
        size_t yo = ycl ? n * yim : (size_t)(n * O * HO * WO);
        sd_dconv_out out = {.y = ycl ? (void *)((uint16_t *)y->data + yo) : (void *)(F(y) + yo), .bias = b ? bias : NULL,
                            .cl = ycl, .relu = act == SD_UNARY_RELU};
        if (res)
            out.res = ycl ? (const void *)((const uint16_t *)res->data + yo) : (const void *)(CF(res) + yo);
        if (ycl)
            sd_cpu_image_border(out.y, HO, WO, (O + 31) / 32 * 32);
        bk->dconv(&out, img, wp, &d, nt);
    }
    if (act >= 0 && act != SD_UNARY_RELU) /* row-major only (cpu_conv_layout): as sd_unary_inplace */
        sd_cpu_unary(be, y, y, (sd_unary_op)act);
    return true;
}

static void cpu_conv2d(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                       int stride, const int pads[4], void *scratch)
{
    int64_t N = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3];
    int64_t O = w->ne[0], KH = w->ne[2], KW = w->ne[3], HO = y->ne[2], WO = y->ne[3];
    int64_t HWO = HO * WO, CK = C * KH * KW;
    int nt = nthreads(be);
    if (w->layout == SD_LAYOUT_CPU_I8_CONV) { /* precision int8, kxk: the direct convolution (any other stride:
                                               * the reference loop) */
        if (!sd_cpu_conv_i8(be, y, x, w, b, stride, pads, NULL, -1, scratch))
            conv_packed_ref(be, y, x, w, b, stride, pads);
        return;
    }
    sd_i8w qw; /* precision int8 (a prepared weight always has its scratch: cpu_conv2d_scratch) */
    bool q8 = scratch && int8w(w, &qw);
    if (!q8 && (dconv_use(be, w, y, stride) || w->layout == SD_LAYOUT_CPU_BF16_CONV)) {
        if (conv_direct(be, y, x, w, b, stride, pads, NULL, -1, scratch))
            return;
        sd_dconv d;
        sd_dconv_geom(&d, C, H, W, O, KH, KW, HO, WO, stride, pads[0], pads[1]);
        bool packed = w->layout == SD_LAYOUT_CPU_BF16_CONV;
        if (packed) { /* a prepared weight at a stride the direct convolution does not take (no model has one) */
            conv_packed_ref(be, y, x, w, b, stride, pads);
            return;
        }
    }
    bool bias_in = q8 && b && b->dtype == SD_F32; /* the int8 epilogue adds an F32 bias */
    for (int64_t n = 0; n < N; n++) {
        const float *xn = CF(x) + n * C * H * W;
        float *yn = F(y) + n * O * HWO;
        if (b && !bias_in) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t o = 0; o < O; o++) {
                float bv = ldp(b, o);
                for (int64_t i = 0; i < HWO; i++)
                    yn[o * HWO + i] = bv;
            }
        }
        if (q8) { /* precision int8: the image quantised per output pixel over its receptive field */
            sd_i8_pixmax(scratch, xn, C, H * W, nt);
            bool pw = conv_is_pointwise(w, stride, pads); /* pointwise: one long image row */
            sd_gemm_i8 g8 = {.M = O, .N = HWO, .K = CK, .w = &qw, .x = xn, .C = C, .H = pw ? 1 : H, .W = pw ? H * W : W,
                             .KH = KH, .KW = KW, .WO = pw ? HWO : WO, .stride = stride, .pad_t = pads[0], .pad_l = pads[1],
                             .pixmax = scratch, .c = yn, .ldc = HWO, .accumulate = b && !bias_in,
                             .bias = bias_in ? CF(b) : NULL};
            run_gemm2(be, NULL, &g8);
            continue;
        }
        if (bf16k(be) && stride == 1 && !conv_is_pointwise(w, stride, pads) && scratch &&
            conv_pad_bytes(x, w, y) >= (size_t)(C * (H + pads[0] + pads[2]) * (W + pads[1] + pads[3])) * 2) {
            /* the image in bf16 with its padding, once, then the GEMM reads kernel taps without bounds */
            bf16k(be)->conv_pad(scratch, xn, C, H, W, pads, nt);
            sd_gemm g = {.M = O, .N = HWO, .K = CK, .a = w->data, .a_dt = w->dtype, .lda = CK, .b = scratch,
                         .b_dt = SD_BF16, .bkind = SD_GB_CONV_BF16P, .C = C, .H = H + pads[0] + pads[2],
                         .W = W + pads[1] + pads[3], .KH = KH, .KW = KW, .WO = WO, .stride = 1, .c = yn, .ldc = HWO,
                         .accumulate = b != NULL};
            run_gemm(be, &g);
            continue;
        }
        if (kern(be)) {
            bool pw = conv_is_pointwise(w, stride, pads);
            sd_gemm g = {.M = O, .N = HWO, .K = CK, .a = w->data, .a_dt = w->dtype, .lda = CK, .b = xn,
                         .b_dt = SD_F32, .ldb = H * W, .bkind = pw ? SD_GB_ROWMAJOR : SD_GB_CONV, .C = C, .H = H,
                         .W = W, .KH = KH, .KW = KW, .WO = WO, .stride = stride, .pad_t = pads[0],
                         .pad_l = pads[1], .c = yn, .ldc = HWO, .accumulate = b != NULL};
            run_gemm(be, &g);
            continue;
        }
        if (conv_is_pointwise(w, stride, pads)) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)HWO, (int)C, 1.0f, CF(w), (int)C, xn,
                        (int)HWO, b ? 1.0f : 0.0f, yn, (int)HWO);
            continue;
        }
        if (!scratch) {
            /* A 1x1 kernel whose output size equals the input size but with stride > 1 or padding (e.g. a 1x1
             * input with stride 2): cpu_conv2d_scratch cannot see stride/pads and gave no im2col scratch.
             * Rare and tiny, so compute directly. */
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t o = 0; o < O; o++)
                for (int64_t oh = 0; oh < HO; oh++)
                    for (int64_t ow = 0; ow < WO; ow++) {
                        float acc = b ? ldp(b, o) : 0.0f;
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t kh = 0; kh < KH; kh++) {
                                int64_t ih = oh * stride - pads[0] + kh;
                                if (ih < 0 || ih >= H)
                                    continue;
                                for (int64_t kw = 0; kw < KW; kw++) {
                                    int64_t iw = ow * stride - pads[1] + kw;
                                    if (iw >= 0 && iw < W)
                                        acc += xn[(c * H + ih) * W + iw] * CF(w)[((o * C + c) * KH + kh) * KW + kw];
                                }
                            }
                        yn[o * HWO + oh * WO + ow] = acc;
                    }
            continue;
        }
        int64_t rows = conv_chunk_rows(x, w, y);
        float *col = scratch;
        for (int64_t r0 = 0; r0 < HO; r0 += rows) {
            int64_t nr = r0 + rows > HO ? HO - r0 : rows, ncol = nr * WO;
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t ck = 0; ck < CK; ck++) {
                int64_t c = ck / (KH * KW), kh = (ck / KW) % KH, kw = ck % KW;
                float *dst = col + ck * ncol;
                const float *src = xn + c * H * W;
                for (int64_t r = 0; r < nr; r++) {
                    int64_t ih = (r0 + r) * stride - pads[0] + kh;
                    float *d = dst + r * WO;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)WO * sizeof(float));
                        continue;
                    }
                    const float *srow = src + ih * W;
                    for (int64_t ow = 0; ow < WO; ow++) {
                        int64_t iw = ow * stride - pads[1] + kw;
                        d[ow] = (iw >= 0 && iw < W) ? srow[iw] : 0.0f;
                    }
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)ncol, (int)CK, 1.0f, CF(w), (int)CK,
                        col, (int)ncol, b ? 1.0f : 0.0f, yn + r0 * WO, (int)HWO);
        }
    }
}

/* conv2d with the epilogue: in the direct convolution's write-back where it runs (image-layout tensors only go
 * there), else the plain conv, then the same add and activation kernels as sd_add_inplace / sd_unary_inplace */
static void cpu_conv2d_ex(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                          int stride, const int pads[4], const sd_tensor *res, int act, void *scratch)
{
    /* precision int8: the k x k direct convolution with the epilogue in its write-back, else (other strides,
     * a pointwise weight: dconv_use refuses int8-prepared weights) cpu_conv2d's path and the epilogue after it */
    bool direct = w->layout == SD_LAYOUT_CPU_I8_CONV
                      ? sd_cpu_conv_i8(be, y, x, w, b, stride, pads, res, act, scratch)
                      : conv_direct(be, y, x, w, b, stride, pads, res, act, scratch);
    if (direct)
        return;
    cpu_conv2d(be, y, x, w, b, stride, pads, scratch);
    if (res)
        sd_cpu_binary(be, y, y, res, SD_BINARY_ADD);
    if (act >= 0)
        sd_cpu_unary(be, y, y, (sd_unary_op)act);
}

/* the image layout where the direct convolution reads and writes it: a weight prepared at load for it
 * (precision bf16 with bf16 kernels), stride 1 or 2, no activation or ReLU in the epilogue */
static sd_layout cpu_conv_layout(sd_backend *be, const sd_tensor *w, int stride, int act)
{
    const sd_cpu_bf16_kern *bk = ((const cpu_impl *)be->impl)->bk;
    bool ok = bk && bk->dconv && w->layout == SD_LAYOUT_CPU_BF16_CONV && (stride == 1 || stride == 2) &&
              w->ne[2] * w->ne[3] <= SD_DCONV_MAX_TAPS && (act < 0 || act == SD_UNARY_RELU);
    return ok ? SD_LAYOUT_BF16_IMAGE : SD_LAYOUT_ROWMAJOR;
}

/* ---------------------------------------------------------------- norms */

static void cpu_group_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                           const sd_tensor *beta, int groups, float eps, bool silu)
{
    int64_t N = x->ne[0], C = x->ne[1];
    int64_t S = sd_numel(x) / (N * C);
    int64_t cpg = C / groups;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static) collapse(2)
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < groups; g++) {
            const float *xs = CF(x) + (n * C + g * cpg) * S;
            float *ys = F(y) + (n * C + g * cpg) * S;
            int64_t cnt = cpg * S;
            const sd_cpu_kern *k = kern(be);
            if (k) {
                double mean = k->sum(xs, cnt) / (double)cnt;
                float fm = (float)mean, fm_lo = (float)(mean - fm); /* see below */
                float rstd = (float)(1.0 / sqrt(k->sqdev(xs, cnt, fm, fm_lo) / (double)cnt + eps));
                for (int64_t c = 0; c < cpg; c++)
                    k->norm_affine(ys + c * S, xs + c * S, S, fm, fm_lo, ldp(gamma, g * cpg + c) * rstd,
                                   ldp(beta, g * cpg + c), silu);
                continue;
            }
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < cnt; i++)
                sum += xs[i];
            double mean = sum / (double)cnt;
            for (int64_t i = 0; i < cnt; i++) {
                double d = xs[i] - mean;
                sq += d * d;
            }
            float rstd = (float)(1.0 / sqrt(sq / (double)cnt + eps));
            /* the mean as a float pair fm + fm_lo: x - fm is exact near the mean, so (x - fm) - fm_lo
             * keeps full precision when |mean| >> std */
            float fm = (float)mean, fm_lo = (float)(mean - fm);
            for (int64_t c = 0; c < cpg; c++) {
                /* (x - mean) * scale + beta, not x * scale + (beta - mean * scale): the latter cancels
                 * catastrophically when |mean| >> std (e.g. one element per group: 1e-4 relative error) */
                float sc = ldp(gamma, g * cpg + c) * rstd, sh = ldp(beta, g * cpg + c);
                const float *xc = xs + c * S;
                float *yc = ys + c * S;
                if (silu) {
                    for (int64_t i = 0; i < S; i++) {
                        float v = ((xc[i] - fm) - fm_lo) * sc + sh;
                        yc[i] = v / (1.0f + expf(-v));
                    }
                } else {
                    for (int64_t i = 0; i < S; i++)
                        yc[i] = ((xc[i] - fm) - fm_lo) * sc + sh;
                }
            }
        }
}

static void cpu_layer_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                           const sd_tensor *beta, float eps)
{
    int64_t D = x->ne[x->ndim - 1], R = sd_numel(x) / D;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = CF(x) + r * D;
        float *yr = F(y) + r * D;
        const sd_cpu_kern *k = kern(be);
        if (k) { /* the same statistics and final formula for every gamma/beta dtype */
            double mean = k->sum(xr, D) / (double)D;
            float fm = (float)mean, fm_lo = (float)(mean - fm);
            float rstd = (float)(1.0 / sqrt(k->sqdev(xr, D, fm, fm_lo) / (double)D + eps));
            if (gamma->dtype == SD_F32 && beta->dtype == SD_F32)
                k->norm_row(yr, xr, D, fm, fm_lo, rstd, CF(gamma), CF(beta));
            else
                for (int64_t i = 0; i < D; i++)
                    yr[i] = ((xr[i] - fm) - fm_lo) * rstd * ldp(gamma, i) + ldp(beta, i);
            continue;
        }
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < D; i++)
            sum += xr[i];
        double mean = sum / (double)D;
        for (int64_t i = 0; i < D; i++) {
            double d = xr[i] - mean;
            sq += d * d;
        }
        float rstd = (float)(1.0 / sqrt(sq / (double)D + eps)), fm = (float)mean, fm_lo = (float)(mean - fm);
        if (gamma->dtype == SD_F32 && beta->dtype == SD_F32) {
            for (int64_t i = 0; i < D; i++) /* mean as fm + fm_lo: see cpu_group_norm */
                yr[i] = ((xr[i] - fm) - fm_lo) * rstd * CF(gamma)[i] + CF(beta)[i];
        } else {
            for (int64_t i = 0; i < D; i++)
                yr[i] = ((xr[i] - fm) - fm_lo) * rstd * ldp(gamma, i) + ldp(beta, i);
        }
    }
}

static void softmax_row(float *y, const float *x, int64_t n, float scale)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        mx = fmaxf(mx, x[i] * scale);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        y[i] = expf(x[i] * scale - mx);
        sum += y[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++)
        y[i] *= inv;
}

static void cpu_softmax(sd_backend *be, sd_tensor *y, const sd_tensor *x, float scale)
{
    int64_t D = x->ne[x->ndim - 1], R = sd_numel(x) / D;
#pragma omp parallel for num_threads(nthreads(be)) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        if (kern(be))
            kern(be)->softmax(F(y) + r * D, CF(x) + r * D, D, scale);
        else
            softmax_row(F(y) + r * D, CF(x) + r * D, D, scale);
    }
}

/* ---------------------------------------------------------------- attention
 * Tiled over query rows: each task takes one (batch, head, tile of ATT_TILE
 * queries), computes its [tile, Nk] scores, softmax, and multiplies by V.
 * Only one tile of scores per thread exists at a time. */

static size_t cpu_attention_scratch(sd_backend *be, const sd_tensor *q, const sd_tensor *k, int heads)
{
    int64_t d = q->ne[2] / heads;
    if (bf16k(be) && bf16k(be)->attention && d <= 256)
        return bf16k(be)->attn_ws(q->ne[1], k->ne[1], d, nthreads(be)) * sizeof(float);
    if (kern(be))
        return kern(be)->attn_ws(q->ne[1], k->ne[1], d, nthreads(be)) * sizeof(float);
    return (size_t)nthreads(be) * (size_t)(ATT_TILE * k->ne[1] + 3 * ATT_TILE * d + 2 * k->ne[1] * d) * sizeof(float);
}

static void cpu_attention(sd_backend *be, sd_tensor *y, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                          int heads, float scale, bool causal, void *scratch)
{
    int64_t B = q->ne[0], Nq = q->ne[1], Nk = k->ne[1], HD = q->ne[2], d = HD / heads;
    if (bf16k(be) && bf16k(be)->attention && d <= 256) { /* larger heads: the fp32 kernel */
        bf16k(be)->attention(F(y), CF(q), CF(k), CF(v), B, Nq, Nk, heads, d, scale, causal, scratch, nthreads(be));
        return;
    }
    if (kern(be)) {
        kern(be)->attention(F(y), CF(q), CF(k), CF(v), B, Nq, Nk, heads, d, scale, causal, scratch, nthreads(be));
        return;
    }
    int64_t tiles = (Nq + ATT_TILE - 1) / ATT_TILE;
    int64_t tasks = B * heads * tiles;
    int nt = nthreads(be);
    size_t per_thread = (size_t)(ATT_TILE * Nk + 3 * ATT_TILE * d + 2 * Nk * d);
#pragma omp parallel num_threads(nt)
    {
        float *S = (float *)scratch + (size_t)omp_get_thread_num() * per_thread;
        float *Qt = S + ATT_TILE * Nk, *Ot = Qt + ATT_TILE * d, *Kt = Ot + ATT_TILE * d, *Vt = Kt + Nk * d;
        int64_t cached = -1;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t bh = task / tiles, tile = task % tiles, b = bh / heads, h = bh % heads;
            int64_t q0 = tile * ATT_TILE, nq = Nq - q0 < ATT_TILE ? Nq - q0 : ATT_TILE;
            if (cached != bh) { /* gather this head's K and V contiguously */
                for (int64_t j = 0; j < Nk; j++) {
                    memcpy(Kt + j * d, CF(k) + (b * Nk + j) * HD + h * d, (size_t)d * sizeof(float));
                    memcpy(Vt + j * d, CF(v) + (b * Nk + j) * HD + h * d, (size_t)d * sizeof(float));
                }
                cached = bh;
            }
            for (int64_t i = 0; i < nq; i++)
                memcpy(Qt + i * d, CF(q) + (b * Nq + q0 + i) * HD + h * d, (size_t)d * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)Nk, (int)d, scale, Qt, (int)d, Kt,
                        (int)d, 0.0f, S, (int)Nk);
            for (int64_t i = 0; i < nq; i++) {
                float *row = S + i * Nk;
                if (causal)
                    for (int64_t j = q0 + i + 1; j < Nk; j++)
                        row[j] = -INFINITY;
                softmax_row(row, row, Nk, 1.0f);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)d, (int)Nk, 1.0f, S, (int)Nk, Vt,
                        (int)d, 0.0f, Ot, (int)d);
            for (int64_t i = 0; i < nq; i++)
                memcpy(F(y) + (b * Nq + q0 + i) * HD + h * d, Ot + i * d, (size_t)d * sizeof(float));
        }
    }
}

void sd_cpu_destroy(sd_backend *be)
{
    cpu_impl *im = be->impl;
    if (im) {
        pthread_mutex_destroy(&im->ws_lock);
        sd_aligned_free(im->ws);
        free(im);
    }
    free(be);
}

const sd_backend_ops sd_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .move = cpu_move,
    .synchronize = cpu_sync,
    .accepts_weight_dtype = cpu_accepts,
    .conv2d_scratch = cpu_conv2d_scratch,
    .attention_scratch = cpu_attention_scratch,
    .cast = cpu_cast,
    .linear = cpu_linear,
    .linear_fuses = cpu_linear_fuses,
    .linear_ex = cpu_linear_ex,
    .matmul = cpu_matmul,
    .conv2d = cpu_conv2d,
    .conv2d_ex = cpu_conv2d_ex,
    .conv_layout = cpu_conv_layout,
    .weight_layout = cpu_weight_layout,
    .weight_prepare = cpu_weight_prepare,
    .group_norm = cpu_group_norm,
    .layer_norm = cpu_layer_norm,
    .softmax = cpu_softmax,
    .attention = cpu_attention,
    .unary = sd_cpu_unary,
    .binary = sd_cpu_binary,
    .affine = sd_cpu_affine,
    .clamp = sd_cpu_clamp,
    .geglu = sd_cpu_geglu,
    .upsample2x = sd_cpu_upsample2x,
    .rgb8_to_chw = sd_cpu_rgb8_to_chw,
    .chw_to_rgb8 = sd_cpu_chw_to_rgb8,
    .concat = sd_cpu_concat,
    .slice = sd_cpu_slice,
    .permute = sd_cpu_permute,
    .timestep_embedding = sd_cpu_timestep_embedding,
    .embedding = sd_cpu_embedding,
    .destroy = sd_cpu_destroy,
};
