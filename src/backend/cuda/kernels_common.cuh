/* Device helpers shared by the CUDA kernel files (kernels.cu, kernels_attention.cu): dtype loads and
 * stores, warp / block reductions, activations, the mma.sync m16n8k16 wrapper and f16x2 packing. */
#ifndef SD_CUDA_KERNELS_COMMON_CUH
#define SD_CUDA_KERNELS_COMMON_CUH

#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FULL_MASK 0xffffffffu
#define EW_THREADS 256 /* threads per block of the elementwise kernels */
#define ROW_THREADS 256 /* threads per block of the row kernels (layer norm, softmax) */
#define GN_THREADS 512 /* threads per block of group norm (one block per group) */

/* ------------------------------------------------------------------ helpers */

static __device__ __forceinline__ float ldf(const void *p, int dt, int64_t i)
{
    switch (dt) {
    case SDK_F16: return __half2float(((const __half *)p)[i]);
    case SDK_F32: return ((const float *)p)[i];
    case SDK_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case SDK_I32: return (float)((const int32_t *)p)[i];
    default: return __int_as_float(0x7fffffff); /* NaN: an unsupported dtype cannot pass a test */
    }
}

static __device__ __forceinline__ void stf(void *p, int dt, int64_t i, float v)
{
    switch (dt) {
    case SDK_F16: ((__half *)p)[i] = __float2half_rn(v); break;
    case SDK_F32: ((float *)p)[i] = v; break;
    case SDK_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    case SDK_I32: ((int32_t *)p)[i] = (int32_t)rintf(v); break;
    default: break;
    }
}

/* blocks for a grid-stride loop over n items */
static inline unsigned grid_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b > (1 << 20))
        b = 1 << 20;
    return (unsigned)(b < 1 ? 1 : b);
}

#define GRID_STRIDE(i, n)                                                                   \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);              \
         i += (int64_t)gridDim.x * blockDim.x)

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

/* Block-wide reductions; blockDim.x must be a multiple of 32 (<= 1024). Every
 * thread gets the result. `sh` is 32 slots of shared memory; the leading
 * barrier makes back-to-back calls with the same `sh` safe. */
static __device__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(t);
}

static __device__ float block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(t);
}

static __device__ double block_sum_d(double v, double *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    double t = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(t);
}

static __device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static __device__ __forceinline__ float apply_unary(float v, int op)
{
    switch (op) {
    case SDK_SILU: return v / (1.0f + expf(-v));
    case SDK_GELU: return gelu_erf(v);
    case SDK_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case SDK_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    case SDK_TANH: return tanhf(v);
    case SDK_RELU: return v > 0.0f ? v : 0.0f;
    case SDK_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case SDK_EXP: return expf(v);
    default: return __int_as_float(0x7fffffff);
    }
}

/* ------------------------------------------------------------------ tensor-core helpers */

static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* two floats as an f16x2 register: lo in the low half (the element with the smaller index) */
static __device__ __forceinline__ uint32_t pack_h2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof u); /* not *(uint32_t *)&h: no type punning through a pointer */
    return u;
}

static __device__ __forceinline__ uint32_t pack_hh(__half lo, __half hi)
{
    __half2 h = __halves2half2(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

#endif
