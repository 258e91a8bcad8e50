/* The CPU backend's private parts shared by its files (cpu_backend.c: memory, GEMM-based ops, norms,
 * attention, the op table; cpu_elementwise.c: elementwise, conversion and layout ops; cpu_levels.c: kernel
 * levels, creation, precision switches). */
#ifndef SD_CPU_BACKEND_IMPL_H
#define SD_CPU_BACKEND_IMPL_H

#include "backend/backend.h"
#include "backend/cpu/cpu_int8.h"
#include "backend/cpu/cpu_kern.h"

#include <pthread.h>

typedef struct cpu_impl {
    const sd_cpu_kern *k; /* NULL: the OpenBLAS/scalar path */
    const sd_cpu_bf16_kern *bk; /* bf16 kernels of this CPU (NULL: none) */
    bool bf16;                  /* precision bf16: GEMMs and attention through bk when there is one */
    const sd_cpu_int8_kern *ik; /* int8 kernels of this CPU (NULL: none) */
    bool int8;                  /* precision int8 with ik: weights prepared at load as its tiles */
    pthread_mutex_t ws_lock;
    float *ws; /* GEMM workspace, k->gemm_ws floats; a concurrent caller gets its own */
    size_t ws_floats;
} cpu_impl;

static inline const sd_cpu_kern *kern(const sd_backend *be) { return ((const cpu_impl *)be->impl)->k; }

#define F(t) ((float *)(t)->data)
#define CF(t) ((const float *)(t)->data)

/* Parameter vectors (biases, norm gamma/beta, embedding tables) are read in
 * F32, F16 or BF16 as given; only GEMM weights are converted by the wrappers. */
static inline float ldp(const sd_tensor *t, int64_t i)
{
    if (t->dtype == SD_F16)
        return sd_f16_to_f32(((const uint16_t *)t->data)[i]);
    if (t->dtype == SD_BF16)
        return sd_bf16_to_f32(((const uint16_t *)t->data)[i]);
    return CF(t)[i];
}

static inline int nthreads(const sd_backend *be) { return be->n_threads > 0 ? be->n_threads : 1; }

/* copies of at least this many bytes are split across the threads */
#define PAR_COPY_MIN ((size_t)1 << 20)
/* memcpy of non-overlapping ranges, split across the threads when large (cpu_backend.c) */
void sd_cpu_par_memcpy(sd_backend *be, void *dst, const void *src, size_t bytes);

/* cpu_backend.c: the op table (a backend is a CPU one when be->ops == &sd_cpu_ops) and its destroy op */
extern const sd_backend_ops sd_cpu_ops;
void sd_cpu_destroy(sd_backend *be);

/* cpu_elementwise.c */
void sd_cpu_unary(sd_backend *be, sd_tensor *y, const sd_tensor *x, sd_unary_op op);
void sd_cpu_binary(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, sd_binary_op op);
void sd_cpu_affine(sd_backend *be, sd_tensor *y, const sd_tensor *x, float alpha, float beta);
void sd_cpu_clamp(sd_backend *be, sd_tensor *y, const sd_tensor *x, float lo, float hi);
void sd_cpu_geglu(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void sd_cpu_upsample2x(sd_backend *be, sd_tensor *y, const sd_tensor *x);
/* SD_LAYOUT_BF16_IMAGE (backend.h): zeros into the border and tail of one image's pixels img (H x W inside) */
void sd_cpu_image_border(uint16_t *img, int64_t H, int64_t W, int64_t Cp);
void sd_cpu_rgb8_to_chw(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void sd_cpu_chw_to_rgb8(sd_backend *be, sd_tensor *y, const sd_tensor *x);
void sd_cpu_concat(sd_backend *be, sd_tensor *y, const sd_tensor *a, const sd_tensor *b, int axis);
void sd_cpu_slice(sd_backend *be, sd_tensor *y, const sd_tensor *x, int axis, int64_t start);
void sd_cpu_permute(sd_backend *be, sd_tensor *y, const sd_tensor *x, const int perm[4]);
void sd_cpu_timestep_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *t, int dim, bool flip, float shift,
                               float max_period);
void sd_cpu_embedding(sd_backend *be, sd_tensor *y, const sd_tensor *table, const sd_tensor *ids);

#endif
