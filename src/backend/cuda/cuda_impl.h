/* Internals of the CUDA backend shared by its host files: cuda_backend.c (errors, memory, copies,
 * graphs, lifetime, the op table) and cuda_ops.c (the ops: cuBLAS GEMMs, conv2d, kernel launches).
 * Only included under SD_HAVE_CUDA. */
#ifndef SD_CUDA_IMPL_H
#define SD_CUDA_IMPL_H

#include "backend/backend.h"

#include "backend/cuda/cuda_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static inline cuda_impl *IMPL(sd_backend *be) { return (cuda_impl *)be->impl; }

static inline const char *dtname(sd_dtype t) { return sd_dtype_name(t); }

/* cuda_backend.c: errors (sticky, first one wins), the current device, device-to-device copies */
void cu_set_error(cuda_impl *c, sd_status s, const char *fmt, ...) SD_PRINTF(3, 4);
bool cu_ck(cuda_impl *c, cudaError_t e, const char *what);
bool cu_ckb(cuda_impl *c, cublasStatus_t s, const char *what);
bool cu_live(cuda_impl *c);
bool cu_d2d(cuda_impl *c, uint8_t *dst, const uint8_t *src, size_t n);

/* cuda_ops.c: the ops of the op table */
void cuda_linear(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b);
void cuda_matmul(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, bool ta, bool tb,
                 float alpha);
size_t cuda_conv2d_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y);
void cuda_conv2d(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                 int stride, const int pads[4], void *scratch);
void cuda_cast(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void cuda_group_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                     const sd_tensor *beta, int groups, float eps, bool silu);
void cuda_layer_norm(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *gamma,
                     const sd_tensor *beta, float eps);
void cuda_softmax(sd_backend *be, sd_tensor *y, const sd_tensor *x, float scale);
size_t cuda_attention_scratch(sd_backend *be, const sd_tensor *q, const sd_tensor *k, int heads);
void cuda_attention(sd_backend *be, sd_tensor *y, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                    int heads, float scale, bool causal, void *scratch);
void cuda_unary(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op);
void cuda_binary(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op);
void cuda_affine(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta);
void cuda_clamp(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi);
void cuda_geglu(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void cuda_upsample2x(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void cuda_rgb8_to_chw(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void cuda_chw_to_rgb8(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void cuda_concat(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis);
void cuda_slice(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start);
void cuda_permute(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4]);
void cuda_timestep_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip, float shift,
                             float max_period);
void cuda_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);

#endif
