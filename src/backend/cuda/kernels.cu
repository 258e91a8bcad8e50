/* CUDA kernels of the CUDA backend (launchers declared in cuda_kernels.h).
 *
 * Written for correctness first: grid-stride loops over int64 indices, every
 * value loaded through ldf() (F32/F16/BF16/I32 -> float) and stored through
 * stf() (float -> the output's dtype, round to nearest even), fp32 arithmetic
 * (fp64 for group-norm statistics). The GEMM-shaped work (linear, matmul,
 * conv2d) goes through cuBLAS in cuda_backend.c; this file has the rest
 * except attention (kernels_attention.cu); shared device helpers: kernels_common.cuh.
 *
 * Only C-style CUDA: __global__ functions, plus templates where a register
 * array's size or an element type must be a compile-time constant.
 */
#include "kernels_common.cuh"

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
