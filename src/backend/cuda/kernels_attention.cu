/* CUDA kernels: attention (the fp32 SIMT flash-attention kernel and FlashAttention-2 on tensor
 * cores), launched through sdk_attention (cuda_kernels.h). */
#include "kernels_common.cuh"

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
