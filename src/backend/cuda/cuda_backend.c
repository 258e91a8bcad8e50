/* CUDA backend: fp16 activations, fp32 accumulation, one stream per backend.
 *
 * Host side (C17). Kernels are in kernels.cu and kernels_attention.cu (launchers in cuda_kernels.h),
 * the ops that launch them in cuda_ops.c (shared internals: cuda_impl.h);
 * GEMM-shaped ops use cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx with
 * CUBLAS_COMPUTE_32F: fp16 inputs and outputs, fp32 accumulation, tensor
 * cores on sm_80+).
 *
 * Memory: alloc() is one cudaMalloc per request (the arena and each weight
 * are allocated once); nothing else allocates on the hot path except move()'s
 * rarely used bounce buffer. All work is enqueued on the backend's stream;
 * upload/download are synchronous (they wait on the stream), ops are not.
 *
 * Errors: ops return void, so a failing launch or an unsupported dtype is
 * recorded as the backend's sticky error (first one wins, with the
 * cudaGetErrorString / cuBLAS text) and returned by every later upload,
 * download and synchronize as SD_ERR_BACKEND. After an error the backend is
 * unusable (CUDA errors from kernels poison the context anyway).
 *
 * This file is compiled in every build (the src/backend .c files are globbed); without
 * SD_HAVE_CUDA it is empty and backend_select.c supplies the fallback
 * sd_backend_cuda_create. */
#include "backend/backend.h"

#ifdef SD_HAVE_CUDA

#include "backend/cuda/cuda_impl.h"

_Static_assert(SDK_F32 == (int)SD_F32 && SDK_F16 == (int)SD_F16 && SDK_BF16 == (int)SD_BF16 &&
                   SDK_I64 == (int)SD_I64 && SDK_I32 == (int)SD_I32,
               "cuda_kernels.h dtype codes must equal sd_dtype");
_Static_assert(SDK_SILU == (int)SD_UNARY_SILU && SDK_GELU == (int)SD_UNARY_GELU &&
                   SDK_GELU_TANH == (int)SD_UNARY_GELU_TANH && SDK_QUICK_GELU == (int)SD_UNARY_QUICK_GELU &&
                   SDK_TANH == (int)SD_UNARY_TANH && SDK_RELU == (int)SD_UNARY_RELU &&
                   SDK_SIGMOID == (int)SD_UNARY_SIGMOID && SDK_EXP == (int)SD_UNARY_EXP,
               "cuda_kernels.h unary codes must equal sd_unary_op");
_Static_assert(SDK_ADD == (int)SD_BINARY_ADD && SDK_SUB == (int)SD_BINARY_SUB && SDK_MUL == (int)SD_BINARY_MUL,
               "cuda_kernels.h binary codes must equal sd_binary_op");

/* ------------------------------------------------------------------ errors */

void cu_set_error(cuda_impl *c, sd_status s, const char *fmt, ...)
{
    if (c->err != SD_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    c->err = s;
    sd_fail(s, "%s", c->errmsg);
}

/* records a CUDA runtime error; returns true when e is cudaSuccess */
bool cu_ck(cuda_impl *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return true;
    cu_set_error(c, SD_ERR_BACKEND, "cuda backend: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return false;
}

static const char *blas_str(cublasStatus_t s) { return cublasGetStatusString(s); }

bool cu_ckb(cuda_impl *c, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return true;
    cu_set_error(c, SD_ERR_BACKEND, "cuda backend: %s: cuBLAS %s", what, blas_str(s));
    return false;
}

static sd_status sticky(cuda_impl *c)
{
    if (c->err != SD_OK)
        return sd_fail(c->err, "%s", c->errmsg);
    return SD_OK;
}

/* the device use_device() last made current in this thread (-1: unknown); every other cudaSetDevice
 * in this file resets it */
static _Thread_local int g_cur_device = -1;

/* Make this backend's device current in the calling thread (cheap when it already is). */
static bool use_device(cuda_impl *c)
{
    if (g_cur_device == c->device)
        return true;
    if (!cu_ck(c, cudaSetDevice(c->device), "cudaSetDevice"))
        return false;
    g_cur_device = c->device;
    return true;
}

/* true when further work should be enqueued */
bool cu_live(cuda_impl *c) { return c->err == SD_OK && use_device(c); }

/* ------------------------------------------------------------------ memory */

static void *cuda_alloc(sd_backend *be, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!use_device(c))
        return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky in CUDA: keep the backend usable */
        sd_fail(e == cudaErrorMemoryAllocation ? SD_ERR_OUT_OF_MEMORY : SD_ERR_BACKEND,
                "cuda backend: cudaMalloc of %zu MiB on device %d failed: %s", bytes >> 20, c->device,
                cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(sd_backend *be, void *p)
{
    cuda_impl *c = IMPL(be);
    if (!p || !use_device(c))
        return;
    /* cudaFree waits for the device; make the ordering explicit anyway */
    cudaStreamSynchronize(c->stream);
    cu_ck(c, cudaFree(p), "cudaFree");
}

static sd_status cuda_upload(sd_backend *be, void *dst, const void *host, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (bytes) {
        /* synchronous for the caller: the host buffer may be freed on return */
        if (!cu_ck(c, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->stream), "upload") ||
            !cu_ck(c, cudaStreamSynchronize(c->stream), "upload (synchronize)"))
            return sticky(c);
    }
    return SD_OK;
}

static sd_status cuda_download(sd_backend *be, void *host, const void *src, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (bytes) {
        if (!cu_ck(c, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download") ||
            !cu_ck(c, cudaStreamSynchronize(c->stream), "download (synchronize)"))
            return sticky(c);
    }
    return sticky(c);
}

bool cu_d2d(cuda_impl *c, uint8_t *dst, const uint8_t *src, size_t n)
{
    return cu_ck(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream), "move (cudaMemcpyAsync)");
}

/* memmove within device memory, safe for overlapping ranges. cudaMemcpy* on
 * overlapping ranges is undefined, so an overlapping move is split into
 * chunks no larger than the distance |dst - src|, issued in stream order from
 * the end that is read first: forward when dst < src (sd_keep), backward when
 * dst > src. Each chunk's source and destination are disjoint, and a chunk
 * only overwrites source bytes that an earlier chunk already copied. When
 * that would take many calls (small distance), copy through a bounce buffer. */
static void cuda_move(sd_backend *be, void *dstv, const void *srcv, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    uint8_t *dst = dstv;
    const uint8_t *src = srcv;
    if (!bytes || dst == src || !cu_live(c))
        return;
    size_t dist = dst < src ? (size_t)(src - dst) : (size_t)(dst - src);
    if (dist >= bytes) { /* disjoint */
        cu_d2d(c, dst, src, bytes);
        return;
    }
    size_t chunks = (bytes + dist - 1) / dist;
    if (chunks > MOVE_MAX_CHUNKS) {
        /* The old buffer is synchronized and freed only outside a capture (a stream synchronize would
         * invalidate it, and the capture may already have recorded a use) and when no captured graph
         * may replay it: otherwise it is retired until destroy. cudaMalloc is allowed in a relaxed
         * capture. When no bigger buffer can be had, fall back to the chunks below. */
        bool keep_old = c->capturing || c->bounce_captured;
        if (c->bounce_size < bytes && (!c->bounce || !keep_old || c->n_retired < MOVE_RETIRED_MAX)) {
            void *nb = NULL;
            if (cudaMalloc(&nb, bytes) == cudaSuccess) {
                if (c->bounce && keep_old) {
                    c->retired[c->n_retired++] = c->bounce;
                } else if (c->bounce) {
                    cudaStreamSynchronize(c->stream); /* earlier eager moves may still read it */
                    cudaFree(c->bounce);
                }
                c->bounce = nb;
                c->bounce_size = bytes;
                c->bounce_captured = false;
            } else {
                cudaGetLastError(); /* not sticky: fall back to chunks below */
            }
        }
        if (c->bounce && c->bounce_size >= bytes) {
            if (c->capturing)
                c->bounce_captured = true;
            if (cu_d2d(c, c->bounce, src, bytes))
                cu_d2d(c, dst, c->bounce, bytes);
            return;
        }
    }
    if (dst < src) {
        for (size_t off = 0; off < bytes; off += dist) {
            size_t n = bytes - off < dist ? bytes - off : dist;
            if (!cu_d2d(c, dst + off, src + off, n))
                return;
        }
    } else {
        for (size_t end = bytes; end > 0;) {
            size_t n = end < dist ? end : dist;
            end -= n;
            if (!cu_d2d(c, dst + end, src + end, n))
                return;
        }
    }
}

static sd_status cuda_synchronize(sd_backend *be)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    cu_ck(c, cudaStreamSynchronize(c->stream), "synchronize");
    cu_ck(c, cudaGetLastError(), "synchronize (last error)");
    return sticky(c);
}

static bool cuda_accepts(sd_backend *be, sd_dtype t) { return t == SD_F16; }

/* ------------------------------------------------------------------ pinned memory, queued copies */

static void *cuda_host_alloc(sd_backend *be, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!use_device(c))
        return NULL;
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        cudaGetLastError();
        sd_fail(SD_ERR_OUT_OF_MEMORY, "cuda backend: cudaHostAlloc of %zu KiB (pinned memory) failed: %s", bytes >> 10,
                cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_host_free(sd_backend *be, void *p)
{
    cuda_impl *c = IMPL(be);
    if (!p || !use_device(c))
        return;
    cudaStreamSynchronize(c->stream); /* a queued copy may still read or write it */
    cudaFreeHost(p);
}

static sd_status cuda_upload_async(sd_backend *be, void *dst, const void *host, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing) /* it would be recorded into the graph and replayed with it: fail the capture instead */
        cu_set_error(c, SD_ERR_INTERNAL, "cuda backend: upload_async while capturing a graph");
    else if (bytes)
        cu_ck(c, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, c->stream), "upload (queued)");
    return sticky(c);
}

static sd_status cuda_download_async(sd_backend *be, void *host, const void *src, size_t bytes)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing)
        cu_set_error(c, SD_ERR_INTERNAL, "cuda backend: download_async while capturing a graph");
    else if (bytes)
        cu_ck(c, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download (queued)");
    return sticky(c);
}

/* ------------------------------------------------------------------ graphs */

/* Relaxed capture: an unsafe API call elsewhere (the lazily allocated move() bounce buffer) does not
 * invalidate the capture. Errors during the capture are not made sticky for good: capture_end reports
 * them and clears them, so the caller can run the same work eagerly. */
static sd_status cuda_capture_begin(sd_backend *be)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (c->capturing)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: a graph capture is already running");
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return sd_fail(SD_ERR_BACKEND, "cuda backend: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
    }
    c->capturing = true;
    return SD_OK;
}

static sd_status cuda_capture_end(sd_backend *be, void **graph)
{
    cuda_impl *c = IMPL(be);
    *graph = NULL;
    if (!c->capturing)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: capture_end without capture_begin");
    c->capturing = false;
    use_device(c);
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    sd_status st = SD_OK;
    char why[600];
    if (c->err != SD_OK) { /* an op failed while recording: report it, keep the backend usable */
        snprintf(why, sizeof why, "%s", c->errmsg);
        c->err = SD_OK;
        c->errmsg[0] = 0;
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: graph capture failed: %s", why);
    } else if (e != cudaSuccess || !g) {
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: cudaStreamEndCapture: %s", cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = NULL;
    if (st == SD_OK && (e = cudaGraphInstantiate(&exec, g, 0)) != cudaSuccess) {
        exec = NULL;
        st = sd_fail(SD_ERR_BACKEND, "cuda backend: cudaGraphInstantiate: %s", cudaGetErrorString(e));
    }
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError(); /* capture errors are not sticky in CUDA: clear the last one */
    *graph = exec;
    return st;
}

static sd_status cuda_graph_launch(sd_backend *be, void *graph)
{
    cuda_impl *c = IMPL(be);
    if (!cu_live(c))
        return sticky(c);
    if (!graph)
        return sd_fail(SD_ERR_INTERNAL, "cuda backend: graph_launch of a NULL graph");
    cu_ck(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream), "cudaGraphLaunch");
    return sticky(c);
}

static void cuda_graph_free(sd_backend *be, void *graph)
{
    cuda_impl *c = IMPL(be);
    if (!graph || !use_device(c))
        return;
    cudaStreamSynchronize(c->stream); /* a launched replay may still run */
    cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ------------------------------------------------------------------ lifetime */

static void cuda_destroy(sd_backend *be)
{
    if (!be)
        return;
    cuda_impl *c = IMPL(be);
    if (c) {
        g_cur_device = -1;
        if (cudaSetDevice(c->device) == cudaSuccess) {
            if (c->stream)
                cudaStreamSynchronize(c->stream);
            if (c->bounce)
                cudaFree(c->bounce);
            for (int i = 0; i < c->n_retired; i++)
                cudaFree(c->retired[i]);
            if (c->blas_ws)
                cudaFree(c->blas_ws);
            if (c->gn_scratch)
                cudaFree(c->gn_scratch);
            if (c->blas)
                cublasDestroy(c->blas);
            if (c->stream)
                cudaStreamDestroy(c->stream);
        }
        free(c);
    }
    free(be);
}

static const sd_backend_ops k_cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .move = cuda_move,
    .synchronize = cuda_synchronize,
    .accepts_weight_dtype = cuda_accepts,
    .conv2d_scratch = cuda_conv2d_scratch,
    .attention_scratch = cuda_attention_scratch,
    .cast = cuda_cast,
    .linear = cuda_linear,
    .matmul = cuda_matmul,
    .conv2d = cuda_conv2d,
    .group_norm = cuda_group_norm,
    .layer_norm = cuda_layer_norm,
    .softmax = cuda_softmax,
    .attention = cuda_attention,
    .unary = cuda_unary,
    .binary = cuda_binary,
    .affine = cuda_affine,
    .clamp = cuda_clamp,
    .geglu = cuda_geglu,
    .upsample2x = cuda_upsample2x,
    .rgb8_to_chw = cuda_rgb8_to_chw,
    .chw_to_rgb8 = cuda_chw_to_rgb8,
    .concat = cuda_concat,
    .slice = cuda_slice,
    .permute = cuda_permute,
    .timestep_embedding = cuda_timestep_embedding,
    .embedding = cuda_embedding,
    .destroy = cuda_destroy,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .upload_async = cuda_upload_async,
    .download_async = cuda_download_async,
    .capture_begin = cuda_capture_begin,
    .capture_end = cuda_capture_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

sd_status sd_backend_cuda_create(int device, sd_backend **out)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear it: no driver / no device is an ordinary condition here */
        return sd_fail(SD_ERR_BACKEND, "no CUDA GPU found (cudaGetDeviceCount: %s); use the CPU backend, SD_BACKEND_CPU",
                       cudaGetErrorString(e));
    }
    if (count <= 0)
        return sd_fail(SD_ERR_BACKEND, "no CUDA GPU found (cudaGetDeviceCount: 0 devices); use the CPU backend, SD_BACKEND_CPU");
    if (device < 0 || device >= count)
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d does not exist (%d device%s found: 0..%d)", device, count,
                       count == 1 ? "" : "s", count - 1);
    struct cudaDeviceProp prop;
    g_cur_device = -1;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        cudaGetLastError();
        return sd_fail(SD_ERR_BACKEND, "cannot open CUDA device %d: %s", device, cudaGetErrorString(e));
    }
    if (prop.major < 8)
        return sd_fail(SD_ERR_BACKEND,
                       "CUDA device %d (%s) has compute capability %d.%d; this build needs 8.0 or newer "
                       "(compiled for sm_80, sm_89, sm_90)",
                       device, prop.name, prop.major, prop.minor);

    sd_backend *be = sd_calloc(1, sizeof *be);
    cuda_impl *c = sd_calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return SD_ERR_OUT_OF_MEMORY;
    }
    c->device = device;
    snprintf(c->devname, sizeof c->devname, "%s", prop.name);
    be->ops = &k_cuda_ops;
    be->impl = c;
    be->act_dtype = SD_F16;
    be->host_memory = false;
    be->n_threads = 1;

    cublasStatus_t bs;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cudaGetLastError();
        c->stream = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cannot create a stream: %s", device, prop.name,
                       cudaGetErrorString(e));
    }
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasCreate failed: %s", device, prop.name,
                       blas_str(bs));
    }
    if ((bs = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasSetStream failed: %s", device, prop.name,
                       blas_str(bs));
    }
    /* cuBLAS's workspace, given explicitly so that GEMMs inside a graph capture allocate nothing
     * (32 MiB: NVIDIA's recommendation for Hopper) */
    size_t ws = (size_t)32 << 20;
    if ((e = cudaMalloc(&c->blas_ws, ws)) != cudaSuccess) {
        cudaGetLastError();
        c->blas_ws = NULL;
        cuda_destroy(be);
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "CUDA device %d (%s): cannot allocate the 32 MiB cuBLAS workspace: %s",
                       device, prop.name, cudaGetErrorString(e));
    }
    if ((bs = cublasSetWorkspace(c->blas, c->blas_ws, ws)) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return sd_fail(SD_ERR_BACKEND, "CUDA device %d (%s): cublasSetWorkspace failed: %s", device, prop.name,
                       blas_str(bs));
    }
    c->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    if (cudaMalloc(&c->gn_scratch, GN_SCRATCH) != cudaSuccess) { /* optional: one block per group without it */
        cudaGetLastError();
        c->gn_scratch = NULL;
    }
    if ((e = cudaDeviceGetAttribute(&c->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) !=
        cudaSuccess) {
        cudaGetLastError();
        c->smem_optin = 48 * 1024;
    }
    *out = be;
    return SD_OK;
}

#else
/* built without CUDA: backend_select.c defines the sd_backend_cuda_create fallback */
typedef int sd_cuda_backend_not_built;
#endif
