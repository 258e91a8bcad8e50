/* The compute backend interface.
 *
 * A backend owns device memory and implements a fixed set of ops on tensors
 * that already have their memory. Shapes are validated by the op wrappers in
 * ops.c before a backend function is called, so backends may assume valid,
 * contiguous, row-major tensors. Models never call these directly: they call
 * the wrappers in ops.h, which allocate outputs from the context's arena.
 *
 * Activations use the backend's act_dtype (F32 on the CPU, F16 on CUDA).
 * Weights may be F32, F16 or BF16; a backend that cannot consume a weight
 * dtype directly reports that through accepts_weight_dtype() and the wrapper
 * converts into arena scratch memory first.
 */
#ifndef SD_BACKEND_H
#define SD_BACKEND_H

#include "core/core.h"
#include "io/safetensors.h" /* sd_dtype */

#define SD_MAX_DIMS 4

/* How a tensor's values lie in its memory: row-major (every activation and most weights), or a layout a
 * backend prepared a model weight in at load (weight_layout / weight_prepare below; only that backend's ops
 * read it, and the shape stays the logical one). */
typedef enum sd_layout {
    SD_LAYOUT_ROWMAJOR = 0,
    SD_LAYOUT_CPU_BF16_CONV,   /* CPU, precision bf16: a conv weight [O,C,kh,kw] as the direct convolution's
                                * B tiles (sd_dconv, backend/cpu/cpu_kern.h) */
    SD_LAYOUT_CPU_BF16_LINEAR, /* CPU, precision bf16: a linear weight [N,K] as the bf16 GEMM's B tiles
                                * (SD_GB_PACKED, backend/cpu/cpu_kern.h) */
    SD_LAYOUT_CPU_I8_LINEAR,   /* CPU, precision int8: a linear weight [N,K] quantised per output channel
                                * into the int8 GEMM's B tiles, its scales and column sums (sd_i8w, as_b) */
    SD_LAYOUT_CPU_I8_PW,       /* CPU, precision int8: a pointwise (1x1) conv weight [O,C,1,1] quantised
                                * the same way into A tiles (sd_i8w; VNNI: stored as u8 = q + 128) */
    SD_LAYOUT_CPU_I8_CONV,     /* CPU, precision int8: a kxk conv weight [O,C,kh,kw] quantised per output
                                * channel as the int8 direct convolution's B tiles, scales and VNNI
                                * corrections (sd_i8_dconv_wbytes, backend/cpu/cpu_kern.h) */
    SD_LAYOUT_BF16_IMAGE,      /* an activation [N,C,H,W] between the convolutions of a chain (conv_layout
                                * below): BF16, channels-last, channels padded to a multiple of 32 and a one-pixel
                                * zero border around each image, which a 3x3 stride-1 conv reads in place:
                                * sd_image_layout_at / sd_image_layout_bytes */
} sd_layout;

/* SD_LAYOUT_BF16_IMAGE: value (n, c, h, w) of [N,C,H,W] is element sd_image_layout_at(ne, n, c, h, w) (bf16) of
 * the memory; per image (H + 2) x (W + 2) pixels (the border is zero) and 64 more (the reads of the last pixel
 * block of a conv that reads the image in place), each pixel up32(C) bf16 (zeros past C) */
static inline int64_t sd_image_layout_cp(const int64_t ne[4]) { return (ne[1] + 31) / 32 * 32; }
static inline int64_t sd_image_layout_pixels(const int64_t ne[4]) { return (ne[2] + 2) * (ne[3] + 2) + 64; }
static inline int64_t sd_image_layout_at(const int64_t ne[4], int64_t n, int64_t c, int64_t h, int64_t w)
{
    return (n * sd_image_layout_pixels(ne) + (h + 1) * (ne[3] + 2) + w + 1) * sd_image_layout_cp(ne) + c;
}
static inline size_t sd_image_layout_bytes(const int64_t ne[4])
{
    return (size_t)(ne[0] * sd_image_layout_pixels(ne) * sd_image_layout_cp(ne)) * 2;
}

/* What a model weight is for (weight_layout): a convolution's, a linear's, or anything else (tables read by
 * row, e.g. embeddings: always row-major). SD_WEIGHT_CONV_BF16: a convolution's of a model whose convolutions
 * keep bf16 under precision int8 where the backend has bf16 convolutions (sd_weights.convs_bf16: TAESD, whose
 * bf16 conv chain keeps its activations in the image layout and outruns int8 convolutions) */
typedef enum sd_weight_use { SD_WEIGHT_CONV, SD_WEIGHT_LINEAR, SD_WEIGHT_OTHER, SD_WEIGHT_CONV_BF16 } sd_weight_use;

typedef struct sd_tensor {
    void *data; /* backend memory (NULL while planning) */
    sd_dtype dtype;
    int ndim;
    int64_t ne[SD_MAX_DIMS]; /* shape, row-major: ne[ndim-1] is contiguous */
    uint8_t layout;          /* sd_layout: SD_LAYOUT_ROWMAJOR unless a backend prepared this weight (its memory is
                              * then weight_layout's bytes, which may be fewer than sd_nbytes: int8 tiles) */
} sd_tensor;

typedef enum sd_unary_op {
    SD_UNARY_SILU,
    SD_UNARY_GELU,      /* exact erf GELU */
    SD_UNARY_GELU_TANH, /* tanh approximation */
    SD_UNARY_QUICK_GELU,/* x * sigmoid(1.702 x) */
    SD_UNARY_TANH,
    SD_UNARY_RELU,
    SD_UNARY_SIGMOID,
    SD_UNARY_EXP
} sd_unary_op;

typedef enum sd_binary_op { SD_BINARY_ADD, SD_BINARY_SUB, SD_BINARY_MUL } sd_binary_op;

/* What a fused linear does with t = x w^T + b (linear_ex): nothing, y = r + t, or y = GEGLU(t) (in the
 * activation dtype, or BF16: rounded to nearest even, for a backend whose linears take BF16 inputs) */
typedef enum sd_linear_epi { SD_EPI_NONE, SD_EPI_ADD, SD_EPI_GEGLU, SD_EPI_GEGLU_BF16 } sd_linear_epi;

typedef struct sd_backend sd_backend;

typedef struct sd_backend_ops {
    const char *name;
    /* memory */
    void *(*alloc)(sd_backend *be, size_t bytes); /* NULL + sd_fail on error */
    void (*free)(sd_backend *be, void *p);
    sd_status (*upload)(sd_backend *be, void *dst, const void *host, size_t bytes);
    sd_status (*download)(sd_backend *be, void *host, const void *src, size_t bytes);
    void (*move)(sd_backend *be, void *dst, const void *src, size_t bytes); /* memmove within device memory */
    sd_status (*synchronize)(sd_backend *be);
    bool (*accepts_weight_dtype)(sd_backend *be, sd_dtype t);
    /* scratch bytes an op needs (0 if none); the wrapper allocates it from the arena */
    size_t (*conv2d_scratch)(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y);
    size_t (*attention_scratch)(sd_backend *be, const sd_tensor *q, const sd_tensor *k, int heads);

    /* ops: y is preallocated with the right shape */
    void (*cast)(sd_backend *be, sd_tensor *y, const sd_tensor *x);
    /* y[M,N] = x[M,K] w[N,K]^T + b[N] */
    void (*linear)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b);
    /* Fused linears (optional: the wrappers decompose into linear and add / geglu where linear_fuses is NULL
     * or says no). linear_fuses: whether linear_ex runs epilogue epi for these operands; the answer depends
     * on shapes, dtypes and layouts only, so planning and running agree. linear_ex: t = x w^T + b, then
     * SD_EPI_ADD: y = r + t (r has y's shape and may be y itself), SD_EPI_GEGLU: w [N,K] with even N,
     * y[..., N/2] = t[..., :N/2] * gelu(t[..., N/2:]); the values are exactly those of the unfused ops.
     * SD_EPI_GEGLU_BF16: the same rounded into a BF16 y, which only this backend's linears then read (as x:
     * they round x to bf16 anyway, so their results are those of the unfused ops). */
    bool (*linear_fuses)(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b, sd_linear_epi epi);
    void (*linear_ex)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                      sd_linear_epi epi, const sd_tensor *r);
    /* y[B,M,N] = alpha * op(a)[B,M,K] op(b)[B,K,N]; op = transpose when trans_* */
    void (*matmul)(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, bool trans_a, bool trans_b,
                   float alpha);
    /* NCHW conv, w [Cout,Cin,kh,kw]; pads = {top, left, bottom, right} */
    void (*conv2d)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                   int stride, const int pads[4], void *scratch);
    /* Optional (NULL: sd_conv2d_ex runs conv2d, binary add and unary): y = act(conv(x) + b + res), with res
     * (NULL: none) of y's shape and layout and act an sd_unary_op (act < 0: none); x, y and res row-major
     * F32 or, where conv_layout gives it for (w, stride, act), SD_LAYOUT_BF16_IMAGE. */
    void (*conv2d_ex)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                      int stride, const int pads[4], const sd_tensor *res, int act, void *scratch);
    /* Optional (NULL: row-major): the activation layout conv2d_ex reads and writes fastest for weight w at
     * stride with the activation act fused (act < 0: none), for a chain of such convolutions;
     * SD_LAYOUT_BF16_IMAGE tensors also go through upsample2x. */
    sd_layout (*conv_layout)(sd_backend *be, const sd_tensor *w, int stride, int act);
    /* x [N, C, ...]: normalise over groups of C/groups channels x spatial */
    void (*group_norm)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                       const sd_tensor *beta, int groups, float eps, bool silu);
    /* normalise the last dimension */
    void (*layer_norm)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                       const sd_tensor *beta, float eps);
    void (*softmax)(sd_backend *be, sd_tensor *y, const sd_tensor *x, float scale); /* softmax(scale*x) over last dim */
    /* q [B,Nq,H*d], k,v [B,Nk,H*d] -> y [B,Nq,H*d]; softmax(q k^T * scale) v per head */
    void (*attention)(sd_backend *be, sd_tensor *y, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                      int heads, float scale, bool causal, void *scratch);
    void (*unary)(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op);
    /* y = a op b, b broadcast to a's shape (both given as 4-D right-aligned shapes) */
    void (*binary)(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op);
    void (*affine)(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta); /* alpha x + beta */
    void (*clamp)(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi);
    /* x [..., 2N] -> y [..., N] = x[..., :N] * gelu(x[..., N:]) */
    void (*geglu)(sd_backend *be, sd_tensor *y, const sd_tensor *x);
    void (*upsample2x)(sd_backend *be, sd_tensor *y, const sd_tensor *x); /* nearest, NCHW */
    /* images: x U8 [N,H,W,3] (interleaved RGB) -> y [N,3,H,W] = x / 127.5 - 1 */
    void (*rgb8_to_chw)(sd_backend *be, sd_tensor *y, const sd_tensor *x);
    /* x [N,3,H,W] -> y U8 [N,H,W,3]: v = (x + 1) * 127.5 in fp32, 0 for NaN and v <= 0, 255 for v >= 255,
     * else rounded to nearest even (lrintf): exactly sd_chw_to_rgb (io/image.c) */
    void (*chw_to_rgb8)(sd_backend *be, sd_tensor *y, const sd_tensor *x);
    void (*concat)(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis);
    void (*slice)(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start);
    void (*permute)(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4]); /* 4-D */
    /* t F32 [B] -> y [B, dim]: diffusers get_timestep_embedding */
    void (*timestep_embedding)(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip_sin_to_cos,
                               float downscale_freq_shift, float max_period);
    /* table [V, D], ids I32 [N] -> y [N, D] */
    void (*embedding)(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);
    void (*destroy)(sd_backend *be);

    /* Prepared weights (optional: NULL keeps every weight row-major). The one place a model weight is put
     * into the layout a backend's kernels read, once at load (src/models/weights.c calls these for every
     * weight it loads, and again when LoRA fusing rewrites or restores one). weight_layout: the layout for
     * weight t (its shape and kept dtype, used as `use`) and its bytes, or
     * SD_LAYOUT_ROWMAJOR to keep it as it is. weight_prepare: dst (those bytes, backend memory) = the
     * row-major values of t (host memory) in `layout`. */
    sd_layout (*weight_layout)(sd_backend *be, const sd_tensor *t, sd_weight_use use, size_t *bytes);
    void (*weight_prepare)(sd_backend *be, void *dst, const sd_tensor *t, sd_layout layout);

    /* Page-locked host memory and queued copies (optional: NULL on the CPU, where plain memory and the
     * synchronous upload/download serve). host_alloc'd memory makes copies DMA straight from/to it;
     * upload_async/download_async queue a copy in order with the ops and return at once: the host memory
     * (from host_alloc) must stay untouched until a later synchronize. */
    void *(*host_alloc)(sd_backend *be, size_t bytes); /* NULL + sd_fail on error */
    void (*host_free)(sd_backend *be, void *p);
    sd_status (*upload_async)(sd_backend *be, void *dst, const void *host, size_t bytes);
    sd_status (*download_async)(sd_backend *be, void *host, const void *src, size_t bytes);

    /* Graphs (optional: NULL on backends without them, the CPU). Between capture_begin and capture_end
     * the ops are recorded, not run; capture_end turns them into an executable graph that graph_launch
     * replays with the same pointers and scalars (so the arena layout and every host-side parameter of
     * the recorded ops must be unchanged). Nothing may upload, download or synchronize while capturing.
     * A failed capture leaves the backend usable (its error is not sticky) and the caller runs eagerly. */
    sd_status (*capture_begin)(sd_backend *be);
    sd_status (*capture_end)(sd_backend *be, void **graph);
    sd_status (*graph_launch)(sd_backend *be, void *graph);
    void (*graph_free)(sd_backend *be, void *graph);
} sd_backend_ops;

struct sd_backend {
    const sd_backend_ops *ops;
    bool host_memory;   /* device memory is ordinary host memory (CPU): weights may be zero-copy views */
    /* Precision bf16 (CPU, sd_backend_cpu_set_bf16): the one weight-preparation rule is that model weights
     * of 2 and more dimensions are converted once at load into BF16 (sd_model_weight_dtype; biases and
     * norm parameters stay F32), which halves their memory (the F32 file pages are released after
     * conversion), then, when the CPU has bf16 kernels, prepared (weight_prepare) in the tiles the kernels
     * read: a conv weight as the direct convolution's B tiles (SD_LAYOUT_CPU_BF16_CONV), a linear weight
     * [N, K] as the GEMM's B tiles (SD_LAYOUT_CPU_BF16_LINEAR). Linears,
     * convolutions and attention then round activations to bf16 as they pack them and sum in fp32;
     * norms, softmax and elementwise ops stay fp32 on F32 activations. */
    bool bf16;
    bool int8; /* precision int8 (CPU, sd_backend_cpu_set_int8; bf16 is on too): linears and convolutions
                * W8A8 on int8 kernels where the CPU has some (cpu_kern.h), the rest as bf16 */
    sd_dtype act_dtype;
    int n_threads;
    void *impl;
};

sd_status sd_backend_cpu_create(int n_threads, sd_backend **out);
/* Fails with SD_ERR_BACKEND and a clear message when CUDA is absent. */
sd_status sd_backend_cuda_create(int device, sd_backend **out);
void sd_backend_destroy(sd_backend *be);

/* tensor helpers (no allocation) */
int64_t sd_numel(const sd_tensor *t);
size_t sd_nbytes(const sd_tensor *t);
bool sd_same_shape(const sd_tensor *a, const sd_tensor *b);
void sd_shape_str(const sd_tensor *t, char *buf, size_t n); /* "[2,4,8,8]" */
sd_tensor sd_tensor_make(void *data, sd_dtype dt, int ndim, const int64_t *ne);

#endif
