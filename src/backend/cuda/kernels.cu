/* CUDA kernels of the CUDA backend (launchers declared in cuda_kernels.h).
 *
 * Written for correctness first: grid-stride loops over int64 indices, every
 * value loaded through ldf() (F32/F16/BF16/I32 -> float) and stored through
 * stf() (float -> the output's dtype, round to nearest even), fp32 arithmetic
 * (fp64 for group-norm statistics). The GEMM-shaped work (linear, matmul,
 * conv2d) goes through cuBLAS in cuda_backend.c; this file has the rest.
 *
 * Only C-style CUDA: __global__ functions, plus templates where a register
 * array's size or an element type must be a compile-time constant.
 */
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
static unsigned grid_for(int64_t n, int threads)
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

/* ------------------------------------------------------------------ cast, bias */

static __global__ void k_cast(void *y, int ydt, const void *x, int xdt, int64_t n)
{
    GRID_STRIDE(i, n)
        stf(y, ydt, i, ldf(x, xdt, i));
}

extern "C" cudaError_t sdk_cast(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    k_cast<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, n);
    return cudaGetLastError();
}

static __global__ void k_fill_bias(void *y, int ydt, const void *b, int bdt, int64_t n, int64_t period, int64_t div)
{
    GRID_STRIDE(i, n)
        stf(y, ydt, i, ldf(b, bdt, (i % period) / div));
}

extern "C" cudaError_t sdk_fill_bias(cudaStream_t s, void *y, int ydt, const void *b, int bdt, int64_t n,
                                     int64_t period, int64_t div)
{
    if (n <= 0 || period <= 0 || div <= 0)
        return cudaSuccess;
    k_fill_bias<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, b, bdt, n, period, div);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ im2col
 * col[img][ck][p], ck = (c*KH + kh)*KW + kw (the weight's [Cin,kh,kw] order),
 * p = r*WO + ow for output rows r0 .. r0+nr-1. Optimisation idea: an implicit
 * GEMM (or cuDNN) that never materialises col; see cuda_backend.c. */
static __global__ void k_im2col(__half *col, const void *x, int xdt, int64_t img0, int64_t nimg, int64_t C,
                                int64_t H, int64_t W, int64_t KH, int64_t KW, int stride, int pt, int pl, int64_t WO,
                                int64_t r0, int64_t nr)
{
    int64_t ncol = nr * WO, CK = C * KH * KW;
    int64_t n = nimg * CK * ncol;
    GRID_STRIDE(i, n) {
        int64_t p = i % ncol, t = i / ncol;
        int64_t ck = t % CK, img = t / CK;
        int64_t ow = p % WO, r = p / WO;
        int64_t kw = ck % KW, kh = (ck / KW) % KH, c = ck / (KW * KH);
        int64_t ih = (r0 + r) * stride - pt + kh, iw = ow * stride - pl + kw;
        float v = 0.0f;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = ldf(x, xdt, (((img0 + img) * C + c) * H + ih) * W + iw);
        col[i] = __float2half_rn(v);
    }
}

extern "C" cudaError_t sdk_im2col(cudaStream_t s, void *col, const void *x, int xdt, int64_t img0, int64_t nimg,
                                  int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW, int stride, int pad_top,
                                  int pad_left, int64_t WO, int64_t r0, int64_t nr)
{
    int64_t n = nimg * C * KH * KW * nr * WO;
    if (n <= 0)
        return cudaSuccess;
    k_im2col<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>((__half *)col, x, xdt, img0, nimg, C, H, W, KH, KW,
                                                            stride, pad_top, pad_left, WO, r0, nr);
    return cudaGetLastError();
}

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

/* ------------------------------------------------------------------ implicit-GEMM conv on tensor cores
 * y[n, o, oh, ow] = bias[o] + sum_k w[o, k] * x_col[k, p], k = (c*KH + kh)*KW + kw (the weight's order),
 * p = (n*HO + oh)*WO + ow over the whole batch; x_col is never stored: each block gathers its tile of it
 * straight from x (zeros in the padding). Block: 4 warps, a tile of IG_BM = 64 output channels x IG_BN = 64
 * pixels, k in steps of IG_BK = 32 through shared memory (As [64][40] weights, row = o; Bs [64][40] x_col,
 * row = pixel: both give the fragments' k pairs as contiguous 32-bit words); warp (wm, wn) computes 32 x 32
 * with mma.sync m16n8k16 (2 x 4 tiles), fp32 accumulation, bias in the epilogue. F16 x and w. */
#define IG_BM 64
#define IG_BN 64
#define IG_BK 32
#define IG_LD (IG_BK + 8)
#define IG_THREADS 128 /* 4 warps: the kernel's loops assume exactly this block size */

static __global__ void __launch_bounds__(IG_THREADS)
    k_conv_igemm(void *y, int ydt, const __half *x, const __half *w, const void *bias, int bdt, int64_t N, int64_t C,
                 int64_t H, int64_t W, int64_t O, int KH, int KW, int stride, int pt, int pl, int64_t HO, int64_t WO)
{
    __shared__ __align__(16) __half As[IG_BM * IG_LD]; /* 32-bit fragment reads: 4-byte aligned */
    __shared__ __align__(16) __half Bs[IG_BN * IG_LD];
    __shared__ int64_t koff[IG_BK]; /* the tile's k = (c*KH + kh)*KW + kw as (c*H + kh)*W + kw, and kh, kw */
    __shared__ int kkh[IG_BK], kkw[IG_BK];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tg = lane & 3, wm = warp >> 1, wn = warp & 1;
    const int64_t K = C * KH * KW, HWO = HO * WO, NP = N * HWO, KK = (int64_t)KH * KW;
    const int64_t p0 = (int64_t)blockIdx.x * IG_BN, o0 = (int64_t)blockIdx.y * IG_BM;
    /* this thread's pixel of the x_col tile (the same for every k step): pixel tid % IG_BN, k rows
     * tid / IG_BN + j * (IG_THREADS / IG_BN); its window's top-left corner ih0, iw0 and x offset xb */
    const int bcol = tid % IG_BN;
    const int64_t pp = p0 + bcol;
    int64_t ih0 = 0, iw0 = 0, xb = 0;
    if (pp < NP) {
        int64_t img = pp / HWO, rem = pp % HWO, oh = rem / WO, ow = rem % WO;
        ih0 = oh * stride - pt;
        iw0 = ow * stride - pl;
        xb = img * C * H * W + ih0 * W + iw0;
    }

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
            acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;

    for (int64_t k0 = 0; k0 < K; k0 += IG_BK) {
        __syncthreads(); /* the previous tile (and k table) is consumed */
        if (tid < IG_BK) { /* the k table: one division chain per k, not per element */
            int64_t kk = k0 + tid;
            if (kk < K) {
                int64_t c = kk / KK, r = kk % KK, kh = r / KW, kw = r % KW;
                koff[tid] = (c * H + kh) * W + kw;
                kkh[tid] = (int)kh;
                kkw[tid] = (int)kw;
            } else { /* past K: ih = ih0 - 2^31 < 0 (ih0 = oh * stride - pt < 2^31), so zeros */
                koff[tid] = 0;
                kkh[tid] = -0x7fffffff - 1;
                kkw[tid] = 0;
            }
        }
        for (int idx = tid; idx < IG_BM * IG_BK; idx += blockDim.x) { /* weights: k fastest (coalesced) */
            int ml = idx / IG_BK, kl = idx % IG_BK;
            int64_t o = o0 + ml, kk = k0 + kl;
            As[ml * IG_LD + kl] = o < O && kk < K ? w[o * K + kk] : __float2half_rn(0.0f);
        }
        __syncthreads(); /* the k table is visible */
#pragma unroll 4
        for (int kl = tid / IG_BN; kl < IG_BK; kl += IG_THREADS / IG_BN) { /* x_col: pixel fastest (coalesced) */
            __half v = __float2half_rn(0.0f);
            if (pp < NP) {
                int64_t ih = ih0 + kkh[kl], iw = iw0 + kkw[kl];
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                    v = x[xb + koff[kl]];
            }
            Bs[bcol * IG_LD + kl] = v;
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < IG_BK / 16; ks++) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) { /* A (row = o, col = k): a0a1 (g, c), a2a3 (g+8, c), a4a5 (g, c+8), ... */
                const __half *ar = As + (wm * 32 + mi * 16 + g) * IG_LD + ks * 16 + tg * 2;
                a[mi][0] = *(const uint32_t *)ar;
                a[mi][1] = *(const uint32_t *)(ar + 8 * IG_LD);
                a[mi][2] = *(const uint32_t *)(ar + 8);
                a[mi][3] = *(const uint32_t *)(ar + 8 * IG_LD + 8);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) { /* B (k, n = pixel) = Bs[pixel][k] */
                const __half *br = Bs + (wn * 32 + ni * 8 + g) * IG_LD + ks * 16 + tg * 2;
                b[ni][0] = *(const uint32_t *)br;
                b[ni][1] = *(const uint32_t *)(br + 8);
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++)
                    mma16816(acc[mi][ni], a[mi], b[ni]);
        }
    }
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) { /* C: (row g + 8*(e>>1), col tg*2 + (e&1)) */
                int64_t o = o0 + wm * 32 + mi * 16 + g + (e >> 1) * 8;
                int64_t p = p0 + wn * 32 + ni * 8 + tg * 2 + (e & 1);
                if (o >= O || p >= NP)
                    continue;
                int64_t img = p / HWO, rem = p % HWO;
                float v = acc[mi][ni][e] + (bias ? ldf(bias, bdt, o) : 0.0f);
                stf(y, ydt, (img * O + o) * HWO + rem, v);
            }
}

extern "C" cudaError_t sdk_conv2d_igemm(cudaStream_t s, void *y, int ydt, const void *x, const void *w,
                                        const void *bias, int bdt, int64_t N, int64_t C, int64_t H, int64_t W,
                                        int64_t O, int KH, int KW, int stride, int pad_top, int pad_left, int64_t HO,
                                        int64_t WO)
{
    int64_t NP = N * HO * WO;
    if (NP <= 0 || O <= 0)
        return cudaSuccess;
    int64_t gx = (NP + IG_BN - 1) / IG_BN, gy = (O + IG_BM - 1) / IG_BM;
    if (gx > 0x7fffffff || gy > 65535)
        return cudaErrorInvalidConfiguration;
    dim3 grid((unsigned)gx, (unsigned)gy);
    k_conv_igemm<<<grid, IG_THREADS, 0, s>>>(y, ydt, (const __half *)x, (const __half *)w, bias, bdt, N, C, H, W, O,
                                             KH, KW, stride, pad_top, pad_left, HO, WO);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ norms */

/* one block per (n, group); two passes for the statistics (mean, then the sum
 * of squared deviations, both in fp64 like the CPU backend), a third to write.
 * Used when there are blocks enough for the GPU; else the split version below. */
/* y[base + i] for i in [lo, hi) of a group whose first channel is c0: (x - mean) * rstd * gamma + beta
 * (+ SiLU), with the mean as a float pair fm + fm_lo, as the CPU backend: the form
 * x * sc + (beta - mean * sc) cancels catastrophically when |mean| >> std */
static __device__ __forceinline__ void gn_write(void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt,
                                                const void *beta, int bdt, int64_t base, int64_t lo, int64_t hi,
                                                int64_t c0, int64_t S, double mean, float rstd, int silu)
{
    float fm = (float)mean, fm_lo = (float)(mean - (double)fm);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        int64_t c = c0 + i / S;
        float sc = ldf(gamma, gdt, c) * rstd;
        float v = ((ldf(x, xdt, base + i) - fm) - fm_lo) * sc + ldf(beta, bdt, c);
        if (silu)
            v = v / (1.0f + expf(-v));
        stf(y, ydt, base + i, v);
    }
}

static __global__ void __launch_bounds__(GN_THREADS)
    k_group_norm(void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt, const void *beta, int bdt,
                 int64_t C, int64_t S, int groups, float eps, int silu)
{
    __shared__ double sh[32];
    int64_t ng = blockIdx.x; /* n * groups + g */
    int64_t g = ng % groups;
    int64_t cpg = C / groups;
    int64_t cnt = cpg * S;
    int64_t base = ng * cnt; /* groups are contiguous: (n*C + g*cpg) * S */

    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x)
        sum += (double)ldf(x, xdt, base + i);
    double mean = block_sum_d(sum, sh) / (double)cnt;
    double sq = 0.0;
    for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) {
        double dv = (double)ldf(x, xdt, base + i) - mean;
        sq += dv * dv;
    }
    double var = block_sum_d(sq, sh) / (double)cnt;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    gn_write(y, ydt, x, xdt, gamma, gdt, beta, bdt, base, 0, cnt, g * cpg, S, mean, rstd, silu);
}

/* Split groups: with few groups (batch 1: 32 blocks on a GPU of 132 SMs) each group is cut into `split`
 * chunks over gridDim.y. Pass 1 writes each chunk's count, mean and M2 (sum of squared deviations from
 * the chunk's mean; two passes over the chunk, fp64); pass 2 combines the chunks of its group (Chan et
 * al.'s parallel formula, fp64, computed by every block of the group) and normalises its chunk. */
static __device__ __forceinline__ void gn_chunk(int64_t cnt, int split, int64_t *lo, int64_t *hi)
{
    int64_t chunk = (cnt + split - 1) / split;
    *lo = (int64_t)blockIdx.y * chunk;
    *hi = *lo + chunk < cnt ? *lo + chunk : cnt;
    if (*lo > cnt)
        *lo = cnt;
}

static __global__ void __launch_bounds__(GN_THREADS)
    k_group_norm_stats(double *part, const void *x, int xdt, int64_t cnt, int split)
{
    __shared__ double sh[32];
    int64_t ng = blockIdx.x, base = ng * cnt, lo, hi;
    gn_chunk(cnt, split, &lo, &hi);
    int64_t m = hi - lo; /* the same for the whole block: the reductions below are reached by all threads */
    double sum = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        sum += (double)ldf(x, xdt, base + i);
    double mean = m > 0 ? block_sum_d(sum, sh) / (double)m : 0.0;
    double sq = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double dv = (double)ldf(x, xdt, base + i) - mean;
        sq += dv * dv;
    }
    double m2 = m > 0 ? block_sum_d(sq, sh) : 0.0;
    if (threadIdx.x == 0) {
        double *p = part + (ng * split + blockIdx.y) * 3;
        p[0] = (double)m;
        p[1] = mean;
        p[2] = m2;
    }
}

static __global__ void __launch_bounds__(GN_THREADS)
    k_group_norm_apply(void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt, const void *beta, int bdt,
                       const double *part, int64_t C, int64_t S, int groups, int split, float eps, int silu)
{
    int64_t ng = blockIdx.x, g = ng % groups, cpg = C / groups, cnt = cpg * S, base = ng * cnt, lo, hi;
    gn_chunk(cnt, split, &lo, &hi);
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int k = 0; k < split; k++) {
        const double *p = part + (ng * split + k) * 3;
        double nb = p[0];
        if (nb <= 0.0)
            continue;
        double nn = n + nb, delta = p[1] - mean;
        mean += delta * nb / nn;
        m2 += p[2] + delta * delta * n * nb / nn;
        n = nn;
    }
    double var = m2 / n;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    gn_write(y, ydt, x, xdt, gamma, gdt, beta, bdt, base, lo, hi, g * cpg, S, mean, rstd, silu);
}

/* blocks per group (1: one block per group) */
static size_t group_norm_split(int64_t N, int64_t C, int64_t S, int groups, int min_blocks)
{
    int64_t blocks = N * groups, cnt = groups > 0 ? C / groups * S : 0;
    int split = 1;
    while (split < SDK_GN_SPLIT_MAX && blocks * split < min_blocks && cnt / (2 * split) >= 4 * GN_THREADS)
        split *= 2;
    return (size_t)split;
}

extern "C" cudaError_t sdk_group_norm(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const void *gamma,
                                      int gdt, const void *beta, int bdt, int64_t N, int64_t C, int64_t S, int groups,
                                      float eps, int silu, void *scratch, size_t scratch_bytes, int min_blocks)
{
    int64_t blocks = N * groups;
    if (blocks <= 0 || S <= 0 || C <= 0)
        return cudaSuccess;
    if (blocks > 0x7fffffff)
        return cudaErrorInvalidConfiguration;
    int split = (int)group_norm_split(N, C, S, groups, min_blocks);
    if (split > 1 && scratch && (size_t)blocks * (size_t)split * 3 * sizeof(double) <= scratch_bytes) {
        dim3 grid((unsigned)blocks, (unsigned)split);
        k_group_norm_stats<<<grid, GN_THREADS, 0, s>>>((double *)scratch, x, xdt, C / groups * S, split);
        k_group_norm_apply<<<grid, GN_THREADS, 0, s>>>(y, ydt, x, xdt, gamma, gdt, beta, bdt, (const double *)scratch,
                                                        C, S, groups, split, eps, silu);
        return cudaGetLastError();
    }
    k_group_norm<<<(unsigned)blocks, GN_THREADS, 0, s>>>(y, ydt, x, xdt, gamma, gdt, beta, bdt, C, S, groups, eps,
                                                          silu);
    return cudaGetLastError();
}

/* one block per row; two-pass mean/variance in fp32 (rows are short) */
static __global__ void __launch_bounds__(ROW_THREADS)
    k_layer_norm(void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt, const void *beta, int bdt,
                 int64_t D, float eps)
{
    __shared__ float sh[32];
    int64_t base = (int64_t)blockIdx.x * D;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        sum += ldf(x, xdt, base + i);
    float mean = block_sum(sum, sh) / (float)D;
    float sq = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        float dv = ldf(x, xdt, base + i) - mean;
        sq += dv * dv;
    }
    float var = block_sum(sq, sh) / (float)D;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        stf(y, ydt, base + i, (ldf(x, xdt, base + i) - mean) * rstd * ldf(gamma, gdt, i) + ldf(beta, bdt, i));
}

extern "C" cudaError_t sdk_layer_norm(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const void *gamma,
                                      int gdt, const void *beta, int bdt, int64_t rows, int64_t D, float eps)
{
    if (rows <= 0 || D <= 0)
        return cudaSuccess;
    if (rows > 0x7fffffff)
        return cudaErrorInvalidConfiguration;
    k_layer_norm<<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, ydt, x, xdt, gamma, gdt, beta, bdt, D, eps);
    return cudaGetLastError();
}

/* one block per row: max, sum of exp, write (as the CPU backend: exp(s*x - max) / sum) */
static __global__ void __launch_bounds__(ROW_THREADS)
    k_softmax(void *y, int ydt, const void *x, int xdt, int64_t D, float scale)
{
    __shared__ float sh[32];
    int64_t base = (int64_t)blockIdx.x * D;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        mx = fmaxf(mx, ldf(x, xdt, base + i) * scale);
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        sum += expf(ldf(x, xdt, base + i) * scale - mx);
    sum = block_sum(sum, sh);
    float inv = 1.0f / sum;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        stf(y, ydt, base + i, expf(ldf(x, xdt, base + i) * scale - mx) * inv);
}

extern "C" cudaError_t sdk_softmax(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t rows, int64_t D,
                                   float scale)
{
    if (rows <= 0 || D <= 0)
        return cudaSuccess;
    if (rows > 0x7fffffff)
        return cudaErrorInvalidConfiguration;
    k_softmax<<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, ydt, x, xdt, D, scale);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ attention
 * Flash-attention style, fp32 math, no [Nq, Nk] matrix anywhere.
 *
 * A block of ATT_WARPS warps owns BQ = ATT_WARPS * R query rows of one
 * (batch, head); warp w owns rows w*R .. w*R+R-1 and keeps their running max
 * m, running sum l and output accumulator o in registers (lane L holds output
 * dims L, L+32, ..., i.e. DPL = ceil(d/32) values per row). Keys go through in
 * tiles of ATT_BK = 32 (one key per lane), staged in shared memory:
 *   Qs [BQ][d]   fp32, pre-multiplied by `scale`
 *   Ks [32][SK]  fp16, SK = d rounded so that SK/2 is odd (conflict-free column reads)
 *   Vs [32][d]   fp16
 * For each tile: lane j computes the scores s[r] = q_r . k_j (masked to -inf
 * past Nk or, when causal, for keys after the query), the warp reduces the
 * tile max, rescales (o, l) by exp(m_old - m_new), adds p = exp(s - m_new),
 * then o[r][dim] += sum_j p_j[r] * V[j][dim] with p_j broadcast by shuffles.
 * Unused tile rows are zero-filled so 0 * garbage can never make a NaN.
 *
 * Optimisation ideas (GPU session): tensor cores (mma.sync m16n8k16 for
 * Q K^T and P V, as FlashAttention-2), 16-byte global loads, cp.async double
 * buffering of the K/V tiles, or cuDNN's fused SDPA. */
#define ATT_WARPS 4
#define ATT_BK 32

static __host__ __device__ int att_sk(int64_t d)
{
    int sk = (int)((d + 1) / 2) * 2;
    if (sk % 4 == 0)
        sk += 2;
    return sk;
}

template <int DPL, int R>
static __global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attention(void *y, int ydt, const void *q, int qdt, const void *k, int kdt, const void *v, int vdt, int Nq,
                int Nk, int H, int d, float scale, int causal)
{
    extern __shared__ float4 att_smem[];
    const int BQ = ATT_WARPS * R;
    const int sk = att_sk(d);
    float *Qs = (float *)att_smem;
    __half *Ks = (__half *)(Qs + BQ * d);
    __half *Vs = Ks + ATT_BK * sk;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
    const int64_t HD = (int64_t)H * d;
    const int q0 = blockIdx.x * BQ;

    for (int idx = tid; idx < BQ * d; idx += blockDim.x) {
        int row = idx / d, t = idx % d, qi = q0 + row;
        Qs[idx] = qi < Nq ? ldf(q, qdt, (b * Nq + qi) * HD + h * d + t) * scale : 0.0f;
    }

    float m[R], l[R], o[R][DPL];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; c++)
            o[r][c] = 0.0f;
    }

    int kend = Nk;
    if (causal) { /* keys after the block's last query are masked for every row */
        int qlast = min(q0 + BQ, Nq);
        kend = min(Nk, qlast);
    }

    for (int kt = 0; kt < kend; kt += ATT_BK) {
        __syncthreads(); /* the previous tile is consumed (first pass: nothing) */
        for (int idx = tid; idx < ATT_BK * d; idx += blockDim.x) {
            int jj = idx / d, t = idx % d, j = kt + jj;
            float kv = 0.0f, vv = 0.0f;
            if (j < Nk) {
                int64_t off = (b * Nk + j) * HD + h * d + t;
                kv = ldf(k, kdt, off);
                vv = ldf(v, vdt, off);
            }
            Ks[jj * sk + t] = __float2half_rn(kv);
            Vs[jj * d + t] = __float2half_rn(vv);
        }
        __syncthreads(); /* tile (and, on the first pass, Qs) visible to all warps */

        /* scores: this lane's key j against the warp's R rows */
        const int j = kt + lane;
        float sc[R];
#pragma unroll
        for (int r = 0; r < R; r++)
            sc[r] = 0.0f;
        const __half *krow = Ks + lane * sk;
        const float *qrow = Qs + warp * R * d;
        for (int t = 0; t < d; t++) {
            float kf = __half2float(krow[t]);
#pragma unroll
            for (int r = 0; r < R; r++)
                sc[r] = fmaf(qrow[r * d + t], kf, sc[r]);
        }

        /* online softmax update */
        float p[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            int qi = q0 + warp * R + r;
            bool ok = j < Nk && (!causal || j <= qi);
            float s = ok ? sc[r] : -INFINITY;
            float mnew = fmaxf(m[r], warp_max(s));
            float alpha = mnew == -INFINITY ? 1.0f : expf(m[r] - mnew); /* m = -inf, mnew finite: 0 */
            p[r] = ok ? expf(s - mnew) : 0.0f;
            l[r] = l[r] * alpha + warp_sum(p[r]);
            m[r] = mnew;
#pragma unroll
            for (int c = 0; c < DPL; c++)
                o[r][c] *= alpha;
        }

        /* o += P V over this tile's keys */
        const int nk = min(ATT_BK, kend - kt); /* block-uniform */
        for (int jj = 0; jj < nk; jj++) {
            float pj[R];
#pragma unroll
            for (int r = 0; r < R; r++)
                pj[r] = __shfl_sync(FULL_MASK, p[r], jj);
            const __half *vrow = Vs + jj * d;
#pragma unroll
            for (int c = 0; c < DPL; c++) {
                int dim = lane + 32 * c;
                if (dim < d) {
                    float vf = __half2float(vrow[dim]);
#pragma unroll
                    for (int r = 0; r < R; r++)
                        o[r][c] = fmaf(pj[r], vf, o[r][c]);
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; r++) {
        int qi = q0 + warp * R + r;
        if (qi >= Nq)
            continue;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; c++) {
            int dim = lane + 32 * c;
            if (dim < d)
                stf(y, ydt, (b * Nq + qi) * HD + h * d + dim, o[r][c] * inv);
        }
    }
}

/* rows per warp for a given DPL: fewer for the widest heads to bound shared memory */
#define ATT_R(dpl) ((dpl) > 8 ? 2 : 4)

static int att_dpl(int64_t d)
{
    if (d <= 64)
        return 2;
    if (d <= 96)
        return 3;
    if (d <= 160)
        return 5;
    if (d <= 256)
        return 8;
    if (d <= SDK_ATT_MAX_D)
        return 16;
    return 0;
}

extern "C" size_t sdk_attention_smem(int64_t d)
{
    int dpl = att_dpl(d);
    if (d < 1 || !dpl)
        return 0;
    int bq = ATT_WARPS * ATT_R(dpl);
    return (size_t)bq * (size_t)d * sizeof(float) + (size_t)ATT_BK * (size_t)att_sk(d) * 2 +
           (size_t)ATT_BK * (size_t)d * 2;
}

template <int DPL>
static cudaError_t launch_attention(cudaStream_t s, void *y, int ydt, const void *q, int qdt, const void *k, int kdt,
                                    const void *v, int vdt, int64_t B, int64_t Nq, int64_t Nk, int heads, int64_t d,
                                    float scale, int causal, int smem_optin)
{
    const int R = ATT_R(DPL);
    size_t smem = sdk_attention_smem(d);
    if (smem > 48 * 1024) {
        if ((int64_t)smem > (int64_t)smem_optin)
            return cudaErrorInvalidConfiguration;
        cudaError_t e = cudaFuncSetAttribute(k_attention<DPL, R>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess)
            return e;
    }
    int64_t tiles = (Nq + ATT_WARPS * R - 1) / (ATT_WARPS * R);
    int64_t bh = B * heads;
    if (tiles > 0x7fffffff || bh > 65535)
        return cudaErrorInvalidConfiguration;
    dim3 grid((unsigned)tiles, (unsigned)bh);
    k_attention<DPL, R><<<grid, ATT_WARPS * 32, smem, s>>>(y, ydt, q, qdt, k, kdt, v, vdt, (int)Nq, (int)Nk, heads,
                                                          (int)d, scale, causal);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ attention on tensor cores
 * FlashAttention-2 forward with mma.sync.m16n8k16 (fp16 inputs, fp32 accumulation), head dims up to
 * 160 (padded to a multiple of 16 with zeros). A block of FA_WARPS warps owns FA_BQ = 16 * FA_WARPS query
 * rows of one (batch, head); warp w owns 16 of them and keeps their Q as A fragments in registers, their
 * running max / sum for rows g and g + 8 (g = lane / 4) and the output accumulators as C fragments. Keys
 * go through in tiles of FA_BK = 64 staged in shared memory (Ks, Vs [FA_BK][DP + 8] fp16: the padding
 * makes the fragment reads conflict-free). Per tile: S = Q K^T (8 n-tiles of 8 keys), scaled and masked
 * in fp32 (keys past Nk; with causal, keys after the query), the online softmax (row max over the 4
 * threads of a group), P to fp16 straight from the C fragments into A fragments (the FA-2 layout
 * identity), O += P V. Fragment layouts: PTX ISA, "Matrix Fragments for mma.m16n8k16".
 * SD_CUDA_ATTENTION=simt selects the fp32 SIMT kernel above instead (for comparisons). */
#define FA_WARPS 4
#define FA_BQ (16 * FA_WARPS)
#define FA_BK 64

template <int KS> /* head dim padded: DP = 16 * KS */
static __global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_tc(void *y, int ydt, const void *q, int qdt, const void *k, int kdt, const void *v, int vdt, int Nq,
               int Nk, int H, int d, float scale, int causal)
{
    const int DP = 16 * KS, SK = DP + 8;
    __shared__ __align__(16) __half Ks[FA_BK * (16 * KS + 8)]; /* 32-bit fragment reads: 4-byte aligned */
    __shared__ __align__(16) __half Vs[FA_BK * (16 * KS + 8)];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tg = lane & 3;
    const int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
    const int64_t HD = (int64_t)H * d;
    const int qw = blockIdx.x * FA_BQ + warp * 16; /* this warp's first query row */

    uint32_t qa[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ks++)
#pragma unroll
        for (int rr = 0; rr < 4; rr++) { /* rr: 0 (row g, col c), 1 (g+8, c), 2 (g, c+8), 3 (g+8, c+8) */
            int row = qw + g + (rr & 1) * 8, col = ks * 16 + tg * 2 + (rr >> 1) * 8;
            float lo = 0.0f, hi = 0.0f;
            if (row < Nq) {
                int64_t off = ((int64_t)b * Nq + row) * HD + h * d;
                if (col < d)
                    lo = ldf(q, qdt, off + col);
                if (col + 1 < d)
                    hi = ldf(q, qdt, off + col + 1);
            }
            qa[ks][rr] = pack_h2(lo, hi);
        }

    float o[2 * KS][4];
#pragma unroll
    for (int n = 0; n < 2 * KS; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

    int kend = Nk;
    if (causal) { /* keys after the block's last query are masked for every row */
        int qlast = min((int)(blockIdx.x * FA_BQ + FA_BQ), Nq);
        kend = min(Nk, qlast);
    }
    /* F16 K and V with rows of whole 16-byte vectors (SD: d and H*d multiples of 8) load 8 halves at a time;
     * the shared rows (SK halves: 2 * DP + 16 bytes) and the vectors' offsets are 16-byte aligned */
    const bool vec = kdt == SDK_F16 && vdt == SDK_F16 && d % 8 == 0 && HD % 8 == 0 && ((uintptr_t)k & 15) == 0 &&
                     ((uintptr_t)v & 15) == 0;
    for (int kt = 0; kt < kend; kt += FA_BK) {
        __syncthreads(); /* the previous tile is consumed */
        if (vec) {
            const int VPR = DP / 8; /* vectors per shared row */
            for (int idx = tid; idx < FA_BK * VPR; idx += blockDim.x) {
                int jj = idx / VPR, t = (idx % VPR) * 8, j = kt + jj;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0); /* zeros past Nk and d */
                if (j < Nk && t < d) {
                    int64_t off = ((int64_t)b * Nk + j) * HD + h * d + t;
                    kv = *(const uint4 *)((const __half *)k + off);
                    vv = *(const uint4 *)((const __half *)v + off);
                }
                *(uint4 *)(Ks + jj * SK + t) = kv;
                *(uint4 *)(Vs + jj * SK + t) = vv;
            }
        } else {
            for (int idx = tid; idx < FA_BK * DP; idx += blockDim.x) {
                int jj = idx / DP, t = idx % DP, j = kt + jj;
                float kv = 0.0f, vv = 0.0f; /* zeros past Nk and d: 0 * 0, never NaN */
                if (j < Nk && t < d) {
                    int64_t off = ((int64_t)b * Nk + j) * HD + h * d + t;
                    kv = ldf(k, kdt, off);
                    vv = ldf(v, vdt, off);
                }
                Ks[jj * SK + t] = __float2half_rn(kv);
                Vs[jj * SK + t] = __float2half_rn(vv);
            }
        }
        __syncthreads();

        float sc[FA_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) { /* B (k = dim, n = key): Ks[key][dim], dim pairs contiguous */
                const __half *kr = Ks + (nt * 8 + g) * SK + ks * 16 + tg * 2;
                uint32_t bb[2] = {*(const uint32_t *)kr, *(const uint32_t *)(kr + 8)};
                mma16816(sc[nt], qa[ks], bb);
            }
        }
        /* scale, mask, row max: sc[nt][e] is row g + 8 * (e >> 1), key kt + nt * 8 + tg * 2 + (e & 1) */
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = qw + g + (e >> 1) * 8, key = kt + nt * 8 + tg * 2 + (e & 1);
                bool ok = key < Nk && (!causal || key <= row);
                sc[nt][e] = ok ? sc[nt][e] * scale : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
            }
        float mnew[2], alpha[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            mnew[r] = fmaxf(mrow[r], mx[r]);
            alpha[r] = mnew[r] == -INFINITY ? 1.0f : expf(mrow[r] - mnew[r]); /* mrow = -inf: 0 */
            mrow[r] = mnew[r];
        }
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = sc[nt][e] == -INFINITY ? 0.0f : expf(sc[nt][e] - mnew[e >> 1]);
                sc[nt][e] = p;
                rs[e >> 1] += p;
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            rs[r] += __shfl_xor_sync(FULL_MASK, rs[r], 1);
            rs[r] += __shfl_xor_sync(FULL_MASK, rs[r], 2);
            lrow[r] = lrow[r] * alpha[r] + rs[r];
        }
#pragma unroll
        for (int n = 0; n < 2 * KS; n++) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }
        /* O += P V: P's C fragments are the A fragments of 16-key steps; B (k = key, n = dim) = Vs[key][dim] */
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
            uint32_t pa[4] = {pack_h2(sc[2 * kk][0], sc[2 * kk][1]), pack_h2(sc[2 * kk][2], sc[2 * kk][3]),
                              pack_h2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                              pack_h2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < 2 * KS; n++) {
                const __half *v0 = Vs + (kk * 16 + tg * 2) * SK + n * 8 + g;
                uint32_t bb[2] = {pack_hh(v0[0], v0[SK]), pack_hh(v0[8 * SK], v0[9 * SK])};
                mma16816(o[n], pa, bb);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = qw + g + r * 8;
        if (row >= Nq)
            continue;
        float inv = lrow[r] > 0.0f ? 1.0f / lrow[r] : 0.0f;
        int64_t off = ((int64_t)b * Nq + row) * HD + h * d;
#pragma unroll
        for (int n = 0; n < 2 * KS; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int dim = n * 8 + tg * 2 + e;
                if (dim < d)
                    stf(y, ydt, off + dim, o[n][r * 2 + e] * inv);
            }
    }
}

template <int KS>
static cudaError_t launch_flash_tc(cudaStream_t s, void *y, int ydt, const void *q, int qdt, const void *k, int kdt,
                                   const void *v, int vdt, int64_t B, int64_t Nq, int64_t Nk, int heads, int64_t d,
                                   float scale, int causal)
{
    int64_t tiles = (Nq + FA_BQ - 1) / FA_BQ, bh = B * heads;
    if (tiles > 0x7fffffff || bh > 65535)
        return cudaErrorInvalidConfiguration;
    dim3 grid((unsigned)tiles, (unsigned)bh);
    k_flash_tc<KS><<<grid, FA_WARPS * 32, 0, s>>>(y, ydt, q, qdt, k, kdt, v, vdt, (int)Nq, (int)Nk, heads, (int)d,
                                                   scale, causal);
    return cudaGetLastError();
}

/* the tensor-core kernel's KS for head dim d (0: not supported there) */
static int flash_ks(int64_t d)
{
    int ks = (int)((d + 15) / 16);
    switch (ks) {
    case 1: case 2: case 3: case 4: case 5: case 6: case 8: case 10: return ks;
    case 7: return 8;
    case 9: return 10;
    default: return 0;
    }
}

extern "C" cudaError_t sdk_attention(cudaStream_t s, void *y, int ydt, const void *q, int qdt, const void *k, int kdt,
                                     const void *v, int vdt, int64_t B, int64_t Nq, int64_t Nk, int heads, int64_t d,
                                     float scale, int causal, int smem_optin)
{
    if (B <= 0 || Nq <= 0 || heads <= 0 || d <= 0)
        return cudaSuccess;
    if (Nq > 0x7fffffff || Nk > 0x7fffffff)
        return cudaErrorInvalidConfiguration;
    const char *mode = getenv("SD_CUDA_ATTENTION");
    if (!(mode && !strcmp(mode, "simt"))) {
        switch (flash_ks(d)) {
#define FLASH(KS)                                                                                                    \
    case KS: return launch_flash_tc<KS>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal);
            FLASH(1) FLASH(2) FLASH(3) FLASH(4) FLASH(5) FLASH(6) FLASH(8) FLASH(10)
#undef FLASH
        default: break; /* larger heads (VAE: 512): the SIMT kernel */
        }
    }
    switch (att_dpl(d)) {
    case 2: return launch_attention<2>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal, smem_optin);
    case 3: return launch_attention<3>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal, smem_optin);
    case 5: return launch_attention<5>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal, smem_optin);
    case 8: return launch_attention<8>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal, smem_optin);
    case 16:
        return launch_attention<16>(s, y, ydt, q, qdt, k, kdt, v, vdt, B, Nq, Nk, heads, d, scale, causal, smem_optin);
    default: return cudaErrorInvalidValue;
    }
}

/* ------------------------------------------------------------------ elementwise */

static __global__ void k_unary(void *y, int ydt, const void *x, int xdt, int64_t n, int op)
{
    GRID_STRIDE(i, n)
        stf(y, ydt, i, apply_unary(ldf(x, xdt, i), op));
}

extern "C" cudaError_t sdk_unary(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, int op)
{
    if (n <= 0)
        return cudaSuccess;
    k_unary<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, n, op);
    return cudaGetLastError();
}

static __global__ void k_binary(void *y, int ydt, const void *a, int adt, const void *b, int bdt, sdk_bcast bc,
                                int op)
{
    int64_t n = bc.ae[0] * bc.ae[1] * bc.ae[2] * bc.ae[3];
    GRID_STRIDE(i, n) {
        int64_t i3 = i % bc.ae[3], t = i / bc.ae[3];
        int64_t i2 = t % bc.ae[2];
        t /= bc.ae[2];
        int64_t i1 = t % bc.ae[1], i0 = t / bc.ae[1];
        float av = ldf(a, adt, i);
        float bv = ldf(b, bdt, i0 * bc.bs[0] + i1 * bc.bs[1] + i2 * bc.bs[2] + i3 * bc.bs[3]);
        stf(y, ydt, i, op == SDK_ADD ? av + bv : op == SDK_SUB ? av - bv : av * bv);
    }
}

extern "C" cudaError_t sdk_binary(cudaStream_t s, void *y, int ydt, const void *a, int adt, const void *b, int bdt,
                                  sdk_bcast bc, int op)
{
    int64_t n = bc.ae[0] * bc.ae[1] * bc.ae[2] * bc.ae[3];
    if (n <= 0)
        return cudaSuccess;
    k_binary<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, a, adt, b, bdt, bc, op);
    return cudaGetLastError();
}

static __global__ void k_affine(void *y, int ydt, const void *x, int xdt, int64_t n, float alpha, float beta)
{
    GRID_STRIDE(i, n)
        stf(y, ydt, i, alpha * ldf(x, xdt, i) + beta);
}

extern "C" cudaError_t sdk_affine(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, float alpha,
                                  float beta)
{
    if (n <= 0)
        return cudaSuccess;
    k_affine<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, n, alpha, beta);
    return cudaGetLastError();
}

static __global__ void k_clamp(void *y, int ydt, const void *x, int xdt, int64_t n, float lo, float hi)
{
    GRID_STRIDE(i, n)
        stf(y, ydt, i, fminf(fmaxf(ldf(x, xdt, i), lo), hi));
}

extern "C" cudaError_t sdk_clamp(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, float lo,
                                 float hi)
{
    if (n <= 0)
        return cudaSuccess;
    k_clamp<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, n, lo, hi);
    return cudaGetLastError();
}

static __global__ void k_geglu(void *y, int ydt, const void *x, int xdt, int64_t rows, int64_t N)
{
    GRID_STRIDE(i, rows * N) {
        int64_t r = i / N, c = i % N;
        stf(y, ydt, i, ldf(x, xdt, r * 2 * N + c) * gelu_erf(ldf(x, xdt, r * 2 * N + N + c)));
    }
}

extern "C" cudaError_t sdk_geglu(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t rows, int64_t N)
{
    if (rows <= 0 || N <= 0)
        return cudaSuccess;
    k_geglu<<<grid_for(rows * N, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, rows, N);
    return cudaGetLastError();
}

static __global__ void k_upsample2x(void *y, int ydt, const void *x, int xdt, int64_t P, int64_t H, int64_t W)
{
    GRID_STRIDE(i, P * 4 * H * W) {
        int64_t w = i % (2 * W), t = i / (2 * W);
        int64_t h = t % (2 * H), p = t / (2 * H);
        stf(y, ydt, i, ldf(x, xdt, (p * H + h / 2) * W + w / 2));
    }
}

extern "C" cudaError_t sdk_upsample2x(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t P, int64_t H,
                                      int64_t W)
{
    int64_t n = P * 4 * H * W;
    if (n <= 0)
        return cudaSuccess;
    k_upsample2x<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, P, H, W);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ images */

static __global__ void k_rgb8_to_chw(void *y, int ydt, const uint8_t *x, int64_t N, int64_t HW)
{
    GRID_STRIDE(i, N * 3 * HW) { /* i = (n * 3 + c) * HW + p */
        int64_t p = i % HW, t = i / HW;
        int64_t c = t % 3, n = t / 3;
        stf(y, ydt, i, (float)x[(n * HW + p) * 3 + c] / 127.5f - 1.0f);
    }
}

extern "C" cudaError_t sdk_rgb8_to_chw(cudaStream_t s, void *y, int ydt, const uint8_t *x, int64_t N, int64_t HW)
{
    int64_t n = N * 3 * HW;
    if (n <= 0)
        return cudaSuccess;
    k_rgb8_to_chw<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, N, HW);
    return cudaGetLastError();
}

static __global__ void k_chw_to_rgb8(uint8_t *y, const void *x, int xdt, int64_t N, int64_t HW)
{
    GRID_STRIDE(i, N * HW * 3) { /* i = (n * HW + p) * 3 + c */
        int64_t c = i % 3, t = i / 3;
        int64_t p = t % HW, n = t / HW;
        float v = (ldf(x, xdt, (n * 3 + c) * HW + p) + 1.0f) * 127.5f;
        y[i] = (uint8_t)(isnan(v) ? 0 : v <= 0.0f ? 0 : v >= 255.0f ? 255 : __float2int_rn(v));
    }
}

extern "C" cudaError_t sdk_chw_to_rgb8(cudaStream_t s, uint8_t *y, const void *x, int xdt, int64_t N, int64_t HW)
{
    int64_t n = N * HW * 3;
    if (n <= 0)
        return cudaSuccess;
    k_chw_to_rgb8<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, x, xdt, N, HW);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ copies */

template <typename T>
static __global__ void k_concat(T *y, const T *a, const T *b, int64_t outer, int64_t ia, int64_t ib)
{
    int64_t row = ia + ib;
    GRID_STRIDE(i, outer * row) {
        int64_t o = i / row, r = i % row;
        y[i] = r < ia ? a[o * ia + r] : b[o * ib + (r - ia)];
    }
}

extern "C" cudaError_t sdk_concat(cudaStream_t s, void *y, const void *a, const void *b, int64_t outer, int64_t ia,
                                  int64_t ib, int es)
{
    int64_t n = outer * (ia + ib);
    if (n <= 0)
        return cudaSuccess;
    unsigned g = grid_for(n, EW_THREADS);
    switch (es) {
    case 1: k_concat<uint8_t><<<g, EW_THREADS, 0, s>>>((uint8_t *)y, (const uint8_t *)a, (const uint8_t *)b, outer, ia, ib); break;
    case 2: k_concat<uint16_t><<<g, EW_THREADS, 0, s>>>((uint16_t *)y, (const uint16_t *)a, (const uint16_t *)b, outer, ia, ib); break;
    case 4: k_concat<uint32_t><<<g, EW_THREADS, 0, s>>>((uint32_t *)y, (const uint32_t *)a, (const uint32_t *)b, outer, ia, ib); break;
    case 8: k_concat<uint64_t><<<g, EW_THREADS, 0, s>>>((uint64_t *)y, (const uint64_t *)a, (const uint64_t *)b, outer, ia, ib); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <typename T>
static __global__ void k_slice(T *y, const T *x, int64_t outer, int64_t ix, int64_t iy, int64_t off)
{
    GRID_STRIDE(i, outer * iy) {
        int64_t o = i / iy, r = i % iy;
        y[i] = x[o * ix + off + r];
    }
}

extern "C" cudaError_t sdk_slice(cudaStream_t s, void *y, const void *x, int64_t outer, int64_t ix, int64_t iy,
                                 int64_t off, int es)
{
    int64_t n = outer * iy;
    if (n <= 0)
        return cudaSuccess;
    unsigned g = grid_for(n, EW_THREADS);
    switch (es) {
    case 1: k_slice<uint8_t><<<g, EW_THREADS, 0, s>>>((uint8_t *)y, (const uint8_t *)x, outer, ix, iy, off); break;
    case 2: k_slice<uint16_t><<<g, EW_THREADS, 0, s>>>((uint16_t *)y, (const uint16_t *)x, outer, ix, iy, off); break;
    case 4: k_slice<uint32_t><<<g, EW_THREADS, 0, s>>>((uint32_t *)y, (const uint32_t *)x, outer, ix, iy, off); break;
    case 8: k_slice<uint64_t><<<g, EW_THREADS, 0, s>>>((uint64_t *)y, (const uint64_t *)x, outer, ix, iy, off); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

typedef struct perm_args {
    int64_t yn[4];
    int64_t xs[4];
} perm_args;

static __global__ void k_permute(void *y, int ydt, const void *x, int xdt, perm_args pa)
{
    int64_t n = pa.yn[0] * pa.yn[1] * pa.yn[2] * pa.yn[3];
    GRID_STRIDE(i, n) {
        int64_t i3 = i % pa.yn[3], t = i / pa.yn[3];
        int64_t i2 = t % pa.yn[2];
        t /= pa.yn[2];
        int64_t i1 = t % pa.yn[1], i0 = t / pa.yn[1];
        stf(y, ydt, i, ldf(x, xdt, i0 * pa.xs[0] + i1 * pa.xs[1] + i2 * pa.xs[2] + i3 * pa.xs[3]));
    }
}

extern "C" cudaError_t sdk_permute(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const int64_t yn[4],
                                   const int64_t xs[4])
{
    perm_args pa;
    for (int i = 0; i < 4; i++) {
        pa.yn[i] = yn[i];
        pa.xs[i] = xs[i];
    }
    int64_t n = yn[0] * yn[1] * yn[2] * yn[3];
    if (n <= 0)
        return cudaSuccess;
    k_permute<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, x, xdt, pa);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ embeddings */

static __global__ void k_timestep_embedding(void *y, int ydt, const float *t, int64_t B, int dim, int flip,
                                            float shift, float max_period)
{
    int half = dim / 2;
    GRID_STRIDE(idx, B * dim) {
        int64_t b = idx / dim;
        int i = (int)(idx % dim);
        float v = 0.0f; /* odd dim: the last column is zero */
        if (i < 2 * half) {
            int f = i < half ? i : i - half;
            /* same float32 expression as the CPU backend */
            float e = -logf(max_period) * (float)f / ((float)half - shift);
            float arg = t[b] * expf(e);
            bool first = i < half;
            v = (first != (flip != 0)) ? sinf(arg) : cosf(arg); /* first half: sin, or cos when flipped */
        }
        stf(y, ydt, idx, v);
    }
}

extern "C" cudaError_t sdk_timestep_embedding(cudaStream_t s, void *y, int ydt, const float *t, int64_t B, int dim,
                                              int flip, float shift, float max_period)
{
    int64_t n = B * dim;
    if (n <= 0)
        return cudaSuccess;
    k_timestep_embedding<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, t, B, dim, flip, shift, max_period);
    return cudaGetLastError();
}

static __global__ void k_embedding(void *y, int ydt, const void *table, int tdt, const int32_t *ids, int64_t N,
                                   int64_t V, int64_t D)
{
    GRID_STRIDE(i, N * D) {
        int64_t r = i / D, c = i % D;
        int64_t id = ids[r];
        stf(y, ydt, i, (id >= 0 && id < V) ? ldf(table, tdt, id * D + c) : 0.0f);
    }
}

extern "C" cudaError_t sdk_embedding(cudaStream_t s, void *y, int ydt, const void *table, int tdt, const int32_t *ids,
                                     int64_t N, int64_t V, int64_t D)
{
    int64_t n = N * D;
    if (n <= 0)
        return cudaSuccess;
    k_embedding<<<grid_for(n, EW_THREADS), EW_THREADS, 0, s>>>(y, ydt, table, tdt, ids, N, V, D);
    return cudaGetLastError();
}
