/* Precision int8 on the CPU backend (cpu_int8.c): helpers of the int8 kernels' prepared weights. */
#ifndef SD_CPU_INT8_H
#define SD_CPU_INT8_H

#include "backend/cpu/cpu_kern.h"

/* dst[p] = max over c of |x[c*HW + p]| */
void sd_i8_pixmax(float *dst, const float *x, int64_t C, int64_t HW, int nthreads);

/* precision int8, kxk convolutions (cpu_kern.h, sd_dconv): dst (sd_i8_dconv_wbytes) = w [O][C][KH][KW] (F32,
 * F16 or BF16) quantised per output channel as the direct convolution's prepared weight */
void sd_i8_dconv_weight(void *dst, const sd_tensor *w, int nthreads);
/* the scratch the direct convolution needs (the image copy, the bias, the kernel's workspace) */
size_t sd_cpu_conv_i8_scratch(sd_backend *be, const sd_tensor *x, const sd_tensor *w, const sd_tensor *y);
/* y = act(conv(x) + b + res) (res: NULL or F32 in y's shape; act: an sd_unary_op, < 0 none) through the int8
 * direct convolution with w prepared (SD_LAYOUT_CPU_I8_CONV), image by image, the residual and ReLU in its
 * write-back; false (nothing done) at a stride it does not take (1 and 2 only), for tensors not row-major,
 * or without the scratch it needs */
bool sd_cpu_conv_i8(sd_backend *be, sd_tensor *y, const sd_tensor *x, const sd_tensor *w, const sd_tensor *b,
                    int stride, const int pads[4], const sd_tensor *res, int act, void *scratch);

#endif
