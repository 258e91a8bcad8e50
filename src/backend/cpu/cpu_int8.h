/* Precision int8 on the CPU backend (cpu_int8.c): the cache of quantised weights and helpers. */
#ifndef SD_CPU_INT8_H
#define SD_CPU_INT8_H

#include "backend/cpu/cpu_kern.h"

typedef struct sd_i8_cache sd_i8_cache;
sd_i8_cache *sd_i8_cache_new(bool shift); /* shift: the kernels take A as u8 (VNNI); NULL: out of memory */
void sd_i8_cache_free(sd_i8_cache *c);
/* w quantised (as B for a linear, as A for a convolution), made on the first call for this weight
 * memory, shape and values (a fingerprint of 64 of them) and kept; NULL when it cannot be (depth past SD_I8_KMAX, a non-float dtype, out of
 * memory): the caller then uses the bf16 path. Thread-safe. */
const sd_i8w *sd_i8_cache_get(sd_i8_cache *c, const sd_tensor *w, bool as_b);
/* dst[p] = max over c of |x[c*HW + p]| */
void sd_i8_pixmax(float *dst, const float *x, int64_t C, int64_t HW, int nthreads);

#endif
