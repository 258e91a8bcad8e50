/* Launchers for the CUDA backend's kernels (src/backend/cuda/kernels.cu).
 *
 * C linkage, plain types: included by the C17 host code (cuda_backend.c) and
 * by the CUDA file. Every launcher enqueues work on `s` and returns the
 * launch status (cudaGetLastError()); it does not synchronize. Sizes of 0 are
 * no-ops. Tensors are contiguous row-major; a `*dt` argument is the tensor's
 * dtype code (SDK_* below, equal to the sd_dtype values, checked in
 * cuda_backend.c). Float-valued inputs may be F32, F16 or BF16 (and I32 where
 * noted); all arithmetic is fp32 inside the kernels.
 */
#ifndef SD_CUDA_KERNELS_H
#define SD_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtype codes: same numbers as sd_dtype (io/safetensors.h) */
enum { SDK_F32 = 0, SDK_F16 = 1, SDK_BF16 = 2, SDK_I64 = 3, SDK_I32 = 4 };
/* unary / binary op codes: same numbers as sd_unary_op / sd_binary_op (backend.h) */
enum {
    SDK_SILU = 0,
    SDK_GELU,
    SDK_GELU_TANH,
    SDK_QUICK_GELU,
    SDK_TANH,
    SDK_RELU,
    SDK_SIGMOID,
    SDK_EXP
};
enum { SDK_ADD = 0, SDK_SUB, SDK_MUL };

/* the largest attention head dimension sdk_attention supports */
#define SDK_ATT_MAX_D 512

/* y[i] = x[i] converted (float dtypes, I32 read as float) */
cudaError_t sdk_cast(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n);
/* y[n] = b[n % period / div]: bias broadcast. Linear: period = N, div = 1; conv: period = O*HW, div = HW */
cudaError_t sdk_fill_bias(cudaStream_t s, void *y, int ydt, const void *b, int bdt, int64_t n, int64_t period,
                          int64_t div);
/* im2col for images img0 .. img0+nimg-1 of x [N,C,H,W], output rows r0 .. r0+nr-1:
 * col (F16) [nimg][C*KH*KW][nr*WO], zero where the window falls into the padding */
cudaError_t sdk_im2col(cudaStream_t s, void *col, const void *x, int xdt, int64_t img0, int64_t nimg, int64_t C,
                       int64_t H, int64_t W, int64_t KH, int64_t KW, int stride, int pad_top, int pad_left, int64_t WO,
                       int64_t r0, int64_t nr);
/* conv2d as an implicit GEMM on tensor cores (no im2col buffer): x F16 [N,C,H,W], w F16 [O,C,KH,KW],
 * bias (any float dtype, may be NULL) -> y [N,O,HO,WO] */
cudaError_t sdk_conv2d_igemm(cudaStream_t s, void *y, int ydt, const void *x, const void *w, const void *bias, int bdt,
                             int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int KH, int KW, int stride,
                             int pad_top, int pad_left, int64_t HO, int64_t WO);
/* x [N, C, S]: per (n, group of C/groups channels) mean/var over cpg*S values (fp64 sums), then
 * y = (x - mean) * rstd * gamma[c] + beta[c], optionally followed by SiLU. When N*groups < min_blocks
 * (e.g. 2 x the SM count) and the groups are large, each group is split over several blocks, whose
 * statistics (3 doubles per block) go to `scratch` (device memory of scratch_bytes; without enough, one
 * block per group). */
#define SDK_GN_SPLIT_MAX 32
cudaError_t sdk_group_norm(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt,
                           const void *beta, int bdt, int64_t N, int64_t C, int64_t S, int groups, float eps, int silu,
                           void *scratch, size_t scratch_bytes, int min_blocks);
/* rows of length D */
cudaError_t sdk_layer_norm(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const void *gamma, int gdt,
                           const void *beta, int bdt, int64_t rows, int64_t D, float eps);
cudaError_t sdk_softmax(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t rows, int64_t D,
                        float scale);
/* fused attention: q [B,Nq,H*d], k,v [B,Nk,H*d] -> y [B,Nq,H*d]; d <= SDK_ATT_MAX_D.
 * smem_optin: the device's cudaDevAttrMaxSharedMemoryPerBlockOptin. */
cudaError_t sdk_attention(cudaStream_t s, void *y, int ydt, const void *q, int qdt, const void *k, int kdt,
                          const void *v, int vdt, int64_t B, int64_t Nq, int64_t Nk, int heads, int64_t d, float scale,
                          int causal, int smem_optin);
/* shared memory bytes sdk_attention needs for head dimension d (0 if d is unsupported) */
size_t sdk_attention_smem(int64_t d);
cudaError_t sdk_unary(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, int op);
/* y = a op b; a has the 4-D shape ae (right-aligned, leading 1s), b is read at
 * i0*bs[0] + i1*bs[1] + i2*bs[2] + i3*bs[3] (stride 0 where broadcast) */
typedef struct sdk_bcast {
    int64_t ae[4];
    int64_t bs[4];
} sdk_bcast;
cudaError_t sdk_binary(cudaStream_t s, void *y, int ydt, const void *a, int adt, const void *b, int bdt, sdk_bcast bc,
                       int op);
cudaError_t sdk_affine(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, float alpha, float beta);
cudaError_t sdk_clamp(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t n, float lo, float hi);
/* x [rows, 2N] -> y [rows, N] = x[:, :N] * gelu_erf(x[:, N:]) */
cudaError_t sdk_geglu(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t rows, int64_t N);
/* nearest 2x: x [P, H, W] -> y [P, 2H, 2W] */
cudaError_t sdk_upsample2x(cudaStream_t s, void *y, int ydt, const void *x, int xdt, int64_t P, int64_t H, int64_t W);
/* images: x U8 [N,HW,3] -> y [N,3,HW] = x / 127.5 - 1; and x [N,3,HW] -> y U8 [N,HW,3] =
 * (x + 1) * 127.5 clamped to 0..255 (NaN -> 0), rounded to nearest even, as the CPU backend */
cudaError_t sdk_rgb8_to_chw(cudaStream_t s, void *y, int ydt, const uint8_t *x, int64_t N, int64_t HW);
cudaError_t sdk_chw_to_rgb8(cudaStream_t s, uint8_t *y, const void *x, int xdt, int64_t N, int64_t HW);
/* raw element copies (dtype-agnostic, es = element size 1/2/4/8):
 * concat: y[o][0:ia] = a[o], y[o][ia:ia+ib] = b[o] for o < outer
 * slice:  y[o][0:iy] = x[o][off:off+iy] with x rows of ix elements */
cudaError_t sdk_concat(cudaStream_t s, void *y, const void *a, const void *b, int64_t outer, int64_t ia, int64_t ib,
                       int es);
cudaError_t sdk_slice(cudaStream_t s, void *y, const void *x, int64_t outer, int64_t ix, int64_t iy, int64_t off,
                      int es);
/* y [n0,n1,n2,n3] (contiguous) = x at i0*xs[0] + i1*xs[1] + i2*xs[2] + i3*xs[3] */
cudaError_t sdk_permute(cudaStream_t s, void *y, int ydt, const void *x, int xdt, const int64_t yn[4],
                        const int64_t xs[4]);
/* t F32 [B] -> y [B, dim] (diffusers get_timestep_embedding, fp32 math as in the CPU backend) */
cudaError_t sdk_timestep_embedding(cudaStream_t s, void *y, int ydt, const float *t, int64_t B, int dim, int flip,
                                   float shift, float max_period);
/* table [V, D], ids I32 [N] -> y [N, D]; ids outside [0, V) give zero rows */
cudaError_t sdk_embedding(cudaStream_t s, void *y, int ydt, const void *table, int tdt, const int32_t *ids, int64_t N,
                          int64_t V, int64_t D);

#ifdef __cplusplus
}
#endif

#endif
