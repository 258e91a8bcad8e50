#include "backend/ops.h"

#include "backend/optime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_ARENA_ALIGN 64

/* one backend call, timed into its op kind when SD_OP_TIMES is on (optime.h); madds: its multiply-adds */
#define BE_CALL(kind, madds, call)                                                                            \
    do {                                                                                                      \
        if (sd_optime_on) {                                                                                   \
            sd_optime_t0 t0_ = sd_optime_begin();                                                             \
            call;                                                                                             \
            sd_optime_add(kind, t0_, madds);                                                                  \
        } else {                                                                                              \
            call;                                                                                             \
        }                                                                                                     \
    } while (0)

/* ------------------------------------------------------------ tensors */

int64_t sd_numel(const sd_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->ne[i];
    return n;
}

size_t sd_nbytes(const sd_tensor *t)
{
    if (t->layout == SD_LAYOUT_BF16_IMAGE && t->ndim == 4)
        return sd_image_layout_bytes(t->ne);
    return (size_t)sd_numel(t) * sd_dtype_size(t->dtype);
}

bool sd_same_shape(const sd_tensor *a, const sd_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i])
            return false;
    return true;
}

void sd_shape_str(const sd_tensor *t, char *buf, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)t->ne[i]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

sd_tensor sd_tensor_make(void *data, sd_dtype dt, int ndim, const int64_t *ne)
{
    sd_tensor t = {.data = data, .dtype = dt, .ndim = ndim};
    for (int i = 0; i < ndim && i < SD_MAX_DIMS; i++)
        t.ne[i] = ne[i];
    return t;
}

void sd_backend_destroy(sd_backend *be)
{
    if (be && be->ops->destroy)
        be->ops->destroy(be);
}

/* ------------------------------------------------------------ context */

void sd_ctx_init_plan(sd_ctx *ctx, sd_backend *be)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->be = be;
    ctx->plan = true;
    ctx->cap = SIZE_MAX;
}

sd_status sd_ctx_init(sd_ctx *ctx, sd_backend *be, size_t bytes)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->be = be;
    ctx->cap = bytes;
    sd_optime_init();
    if (bytes) {
        ctx->base = be->ops->alloc(be, bytes);
        if (!ctx->base)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "cannot allocate the %zu MiB activation arena", bytes >> 20);
    }
    return SD_OK;
}

void sd_ctx_free(sd_ctx *ctx)
{
    if (ctx->base)
        ctx->be->ops->free(ctx->be, ctx->base);
    ctx->base = NULL;
    ctx->cap = ctx->off = 0;
}

sd_status sd_ctx_capture(sd_ctx *ctx, void (*record)(sd_ctx *ctx, void *user), void *user, void **graph)
{
    sd_backend *be = ctx->be;
    *graph = NULL;
    if (!be->ops->capture_begin)
        return sd_fail(SD_ERR_UNSUPPORTED, "the %s backend has no graphs", be->ops->name);
    size_t mark = sd_mark(ctx);
    SD_TRY(be->ops->capture_begin(be));
    record(ctx, user);
    sd_status st = be->ops->capture_end(be, graph);
    if (st == SD_OK && !sd_ok(ctx))
        st = ctx->status;
    if (st != SD_OK) {
        if (*graph)
            be->ops->graph_free(be, *graph);
        *graph = NULL;
        ctx->status = SD_OK;
        sd_release(ctx, mark);
    }
    return st;
}

void sd_ctx_reset(sd_ctx *ctx)
{
    ctx->off = 0;
    ctx->status = SD_OK;
}

bool sd_ok(const sd_ctx *ctx) { return ctx->status == SD_OK; }
size_t sd_mark(const sd_ctx *ctx) { return ctx->off; }

void sd_release(sd_ctx *ctx, size_t mark)
{
    if (mark <= ctx->off)
        ctx->off = mark;
}

sd_tensor sd_ctx_fail(sd_ctx *ctx, sd_status s, const char *fmt, ...)
{
    if (ctx->status == SD_OK) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        ctx->status = sd_fail(s, "%s", msg);
    }
    sd_tensor t = {0};
    return t;
}

void sd_hook(sd_ctx *ctx, const char *name, sd_tensor t)
{
    if (ctx->hook && !ctx->plan && ctx->status == SD_OK)
        ctx->hook(ctx->hook_user, name, t);
}

void sd_hookf(sd_ctx *ctx, sd_tensor t, const char *fmt, ...)
{
    if (!ctx->hook || ctx->plan || ctx->status != SD_OK)
        return;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    ctx->hook(ctx->hook_user, name, t);
}

static void *arena_alloc(sd_ctx *ctx, size_t bytes)
{
    size_t sz = (bytes + SD_ARENA_ALIGN - 1) & ~(size_t)(SD_ARENA_ALIGN - 1);
    if (sz < bytes || ctx->off > ctx->cap || sz > ctx->cap - ctx->off) {
        sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY,
                    "activation arena exhausted: need %zu more bytes, %zu of %zu in use (plan the context first)",
                    sz, ctx->off, ctx->cap);
        return NULL;
    }
    void *p = ctx->plan ? NULL : ctx->base + ctx->off;
    ctx->off += sz;
    if (ctx->off > ctx->peak)
        ctx->peak = ctx->off;
    return p;
}

sd_tensor sd_new(sd_ctx *ctx, sd_dtype dt, int ndim, const int64_t *ne)
{
    sd_tensor t = {0};
    if (ctx->status != SD_OK)
        return t;
    if (ndim < 1 || ndim > SD_MAX_DIMS)
        return sd_ctx_fail(ctx, SD_ERR_INTERNAL, "tensor rank %d not supported", ndim);
    size_t n = sd_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0 || sd_mul_overflow(n, (size_t)ne[i], &n))
            return sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "tensor size overflows");
    }
    t = sd_tensor_make(NULL, dt, ndim, ne);
    t.data = arena_alloc(ctx, n);
    if (ctx->status != SD_OK) {
        sd_tensor z = {0};
        return z;
    }
    return t;
}

/* a new [N,C,H,W] activation in SD_LAYOUT_BF16_IMAGE */
static sd_tensor new_image(sd_ctx *ctx, const int64_t ne[4])
{
    sd_tensor t = sd_tensor_make(NULL, SD_BF16, 4, ne);
    t.layout = SD_LAYOUT_BF16_IMAGE;
    t.data = arena_alloc(ctx, sd_nbytes(&t));
    return ctx->status == SD_OK ? t : (sd_tensor){0};
}

sd_tensor sd_new4(sd_ctx *ctx, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = {a, b, c, d};
    int nd = d ? 4 : c ? 3 : b ? 2 : 1;
    return sd_new(ctx, ctx->be->act_dtype, nd, ne);
}

sd_tensor sd_keep(sd_ctx *ctx, size_t mark, sd_tensor t)
{
    if (ctx->status != SD_OK)
        return t;
    size_t bytes = sd_nbytes(&t);
    if (ctx->plan) {
        ctx->off = mark;
        arena_alloc(ctx, bytes);
        t.data = NULL;
        return t;
    }
    uint8_t *dst = ctx->base + mark;
    if ((uint8_t *)t.data < dst) /* already below the mark: nothing to move */
        return sd_release(ctx, mark), t;
    if ((uint8_t *)t.data != dst)
        BE_CALL(SD_OPT_MOVE, 0, ctx->be->ops->move(ctx->be, dst, t.data, bytes));
    ctx->off = mark;
    t.data = arena_alloc(ctx, bytes);
    return t;
}

sd_scope sd_scope_begin(sd_ctx *ctx) { return (sd_scope){ctx, ctx->off}; }
sd_tensor sd_step(sd_scope *s, sd_tensor t) { return sd_keep(s->ctx, s->mark, t); }
sd_tensor sd_scope_end(sd_scope *s, sd_tensor t) { return sd_keep(s->ctx, s->mark, t); }
void sd_scope_drop(sd_scope *s) { sd_release(s->ctx, s->mark); }

/* SD_LAYOUT_BF16_IMAGE <-> row-major F32 values on the host (to_image: the border and padding zero) */
static void image_layout_copy(const int64_t ne[4], uint16_t *img, float *rm, bool to_image)
{
    if (to_image)
        memset(img, 0, sd_image_layout_bytes(ne));
    for (int64_t n = 0; n < ne[0]; n++)
        for (int64_t c = 0; c < ne[1]; c++)
            for (int64_t h = 0; h < ne[2]; h++)
                for (int64_t w = 0; w < ne[3]; w++) {
                    uint16_t *p = img + sd_image_layout_at(ne, n, c, h, w);
                    float *f = rm + ((n * ne[1] + c) * ne[2] + h) * ne[3] + w;
                    if (to_image)
                        *p = sd_f32_to_bf16(*f);
                    else
                        *f = sd_bf16_to_f32(*p);
                }
}

static sd_status image_layout_transfer(sd_ctx *ctx, const sd_tensor *t, float *host, bool up)
{
    size_t bytes = sd_nbytes(t);
    uint16_t *tmp = sd_malloc(bytes);
    if (!tmp)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = SD_OK;
    if (up) {
        image_layout_copy(t->ne, tmp, (float *)host, true);
        s = ctx->be->ops->upload(ctx->be, t->data, tmp, bytes);
    } else if ((s = ctx->be->ops->download(ctx->be, tmp, t->data, bytes)) == SD_OK) {
        image_layout_copy(t->ne, tmp, host, false);
    }
    free(tmp);
    return s;
}

sd_status sd_tensor_from_f32(sd_ctx *ctx, sd_tensor *t, const float *host)
{
    if (ctx->status != SD_OK)
        return ctx->status;
    if (ctx->plan)
        return SD_OK;
    sd_backend *be = ctx->be;
    if (t->layout == SD_LAYOUT_BF16_IMAGE)
        return image_layout_transfer(ctx, t, (float *)host, true);
    if (t->dtype == SD_F32)
        return be->ops->upload(be, t->data, host, sd_nbytes(t));
    size_t n = (size_t)sd_numel(t);
    size_t es = sd_dtype_size(t->dtype);
    uint8_t *tmp = sd_malloc(n * es);
    if (!tmp)
        return SD_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == SD_F16) {
            uint16_t h = sd_f32_to_f16(host[i]);
            memcpy(tmp + 2 * i, &h, 2);
        } else if (t->dtype == SD_BF16) {
            uint16_t h = sd_f32_to_bf16(host[i]);
            memcpy(tmp + 2 * i, &h, 2);
        } else if (t->dtype == SD_I32) {
            int32_t v = (int32_t)host[i];
            memcpy(tmp + 4 * i, &v, 4);
        } else {
            free(tmp);
            return sd_fail(SD_ERR_INTERNAL, "sd_tensor_from_f32: dtype %s", sd_dtype_name(t->dtype));
        }
    }
    sd_status s = be->ops->upload(be, t->data, tmp, n * es);
    free(tmp);
    return s;
}

sd_status sd_tensor_to_f32(sd_ctx *ctx, const sd_tensor *t, float *host)
{
    if (ctx->status != SD_OK)
        return ctx->status;
    if (ctx->plan)
        return SD_OK;
    sd_backend *be = ctx->be;
    if (t->layout == SD_LAYOUT_BF16_IMAGE)
        return image_layout_transfer(ctx, t, host, false);
    if (t->dtype == SD_F32)
        return be->ops->download(be, host, t->data, sd_nbytes(t));
    size_t n = (size_t)sd_numel(t);
    size_t es = sd_dtype_size(t->dtype);
    uint8_t *tmp = sd_malloc(n * es);
    if (!tmp)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = be->ops->download(be, tmp, t->data, n * es);
    for (size_t i = 0; s == SD_OK && i < n; i++) {
        uint16_t h;
        memcpy(&h, tmp + es * i, es < 2 ? es : 2);
        if (t->dtype == SD_F16)
            host[i] = sd_f16_to_f32(h);
        else if (t->dtype == SD_BF16)
            host[i] = sd_bf16_to_f32(h);
        else if (t->dtype == SD_I32) {
            int32_t v;
            memcpy(&v, tmp + 4 * i, 4);
            host[i] = (float)v;
        } else
            s = sd_fail(SD_ERR_INTERNAL, "sd_tensor_to_f32: dtype %s", sd_dtype_name(t->dtype));
    }
    free(tmp);
    return s;
}

/* ------------------------------------------------------------ checks */

#define LIVE(ctx) ((ctx)->status == SD_OK)
#define RUN(ctx) (!(ctx)->plan)

static bool check(sd_ctx *ctx, bool cond, const char *op, const sd_tensor *a, const sd_tensor *b, const char *what)
{
    if (cond || ctx->status != SD_OK)
        return cond;
    char sa[96] = "-", sb[96] = "-";
    if (a)
        sd_shape_str(a, sa, sizeof sa);
    if (b)
        sd_shape_str(b, sb, sizeof sb);
    sd_ctx_fail(ctx, SD_ERR_SHAPE, "%s: %s (shapes %s and %s)", op, what, sa, sb);
    return false;
}

/* ops other than conv2d, upsample2x and a ReLU in place read activations row-major: an image-layout tensor
 * is refused */
static bool rowmajor(sd_ctx *ctx, const char *op, const sd_tensor *t)
{
    return check(ctx, t->layout != SD_LAYOUT_BF16_IMAGE, op, t, NULL,
                 "an activation in the image layout of a conv chain (only conv2d, upsample2x and a ReLU in place "
                 "take it)");
}

/* Weight in a dtype the backend consumes: converted into arena scratch if needed. */
static sd_tensor weight_for(sd_ctx *ctx, sd_tensor w)
{
    if (ctx->be->ops->accepts_weight_dtype(ctx->be, w.dtype))
        return w;
    return sd_cast(ctx, w, ctx->be->act_dtype);
}

/* ------------------------------------------------------------ views */

sd_tensor sd_reshape(sd_ctx *ctx, sd_tensor x, int ndim, const int64_t *ne)
{
    sd_tensor empty = {0};
    if (!LIVE(ctx))
        return empty;
    if (ndim < 1 || ndim > SD_MAX_DIMS)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "reshape: rank %d not supported (1..%d)", ndim, SD_MAX_DIMS);
    sd_tensor y = sd_tensor_make(x.data, x.dtype, ndim, ne);
    if (!check(ctx, sd_numel(&y) == sd_numel(&x), "reshape", &x, &y, "element counts differ") ||
        !check(ctx, x.layout == SD_LAYOUT_ROWMAJOR, "reshape", &x, &y, "a weight in a backend's prepared layout "
               "keeps its shape"))
        return empty;
    return y;
}

sd_tensor sd_reshape2(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b)
{
    int64_t ne[2] = {a, b};
    return sd_reshape(ctx, x, 2, ne);
}
sd_tensor sd_reshape3(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b, int64_t c)
{
    int64_t ne[3] = {a, b, c};
    return sd_reshape(ctx, x, 3, ne);
}
sd_tensor sd_reshape4(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = {a, b, c, d};
    return sd_reshape(ctx, x, 4, ne);
}

sd_tensor sd_view_rows(sd_ctx *ctx, sd_tensor x, int64_t start, int64_t n)
{
    sd_tensor empty = {0};
    if (!LIVE(ctx))
        return empty;
    if (!check(ctx, x.ndim >= 1 && start >= 0 && n >= 0 && start + n <= x.ne[0], "view_rows", &x, NULL,
               "row range out of bounds") ||
        !check(ctx, x.layout == SD_LAYOUT_ROWMAJOR, "view_rows", &x, NULL, "a weight in a backend's prepared layout "
               "has no rows (load it with sd_weights_get_table)"))
        return empty;
    sd_tensor y = x;
    size_t row = sd_nbytes(&x) / (size_t)(x.ne[0] ? x.ne[0] : 1);
    if (x.data)
        y.data = (uint8_t *)x.data + row * (size_t)start;
    y.ne[0] = n;
    return y;
}

/* ------------------------------------------------------------ ops */

sd_tensor sd_cast(sd_ctx *ctx, sd_tensor x, sd_dtype dt)
{
    if (!rowmajor(ctx, "cast", &x))
        return (sd_tensor){0};
    sd_tensor y = sd_new(ctx, dt, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_CAST, 0, ctx->be->ops->cast(ctx->be, &y, &x));
    return y;
}

/* the backend runs linear x w^T + b with epilogue epi in one op (linear_fuses), the weight as it is */
static bool linear_fuses(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b, sd_linear_epi epi)
{
    const sd_backend_ops *o = ctx->be->ops;
    return o->linear_fuses && o->linear_ex && o->accepts_weight_dtype(ctx->be, w.dtype) &&
           o->linear_fuses(ctx->be, &x, &w, b, epi);
}

static bool linear_args(sd_ctx *ctx, const char *op, sd_tensor x, sd_tensor w, const sd_tensor *b)
{
    return check(ctx, w.ndim == 2 && x.ne[x.ndim - 1] == w.ne[1], op, &x, &w, "x[...,K] needs w[N,K]") &&
           (!b || check(ctx, b->ndim == 1 && b->ne[0] == w.ne[0], op, &w, b, "bias must be [N]"));
}

sd_tensor sd_linear(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b)
{
    if (!rowmajor(ctx, "linear", &x))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!linear_args(ctx, "linear", x, w, b))
        return y;
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, x.ne, sizeof ne);
    ne[x.ndim - 1] = w.ne[0];
    y = sd_new(ctx, ctx->be->act_dtype, x.ndim, ne);
    size_t m = sd_mark(ctx);
    sd_tensor wc = weight_for(ctx, w);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_LINEAR, (double)sd_numel(&y) * (double)w.ne[1],
                ctx->be->ops->linear(ctx->be, &y, &x, &wc, b));
    sd_release(ctx, m);
    return y;
}

sd_tensor sd_linear_add_inplace(sd_ctx *ctx, sd_tensor r, sd_tensor x, sd_tensor w, const sd_tensor *b)
{
    if (!LIVE(ctx) || !linear_args(ctx, "linear + add", x, w, b))
        return r;
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, x.ne, sizeof ne);
    ne[x.ndim - 1] = w.ne[0];
    sd_tensor shape = sd_tensor_make(NULL, r.dtype, x.ndim, ne);
    if (!check(ctx, sd_same_shape(&r, &shape) && r.dtype == ctx->be->act_dtype, "linear + add", &r, &x,
               "r must be an activation tensor of the linear's output shape"))
        return r;
    const uint8_t *rp = r.data, *xp = x.data;
    if (!check(ctx, !rp || !xp || rp + sd_nbytes(&r) <= xp || xp + sd_nbytes(&x) <= rp, "linear + add", &r, &x,
               "r must not overlap x"))
        return r;
    if (!linear_fuses(ctx, x, w, b, SD_EPI_ADD)) { /* the same values in two ops */
        size_t m = sd_mark(ctx);
        sd_add_inplace(ctx, r, sd_linear(ctx, x, w, b));
        sd_release(ctx, m);
        return r;
    }
    if (RUN(ctx))
        BE_CALL(SD_OPT_LINEAR, (double)sd_numel(&r) * (double)w.ne[1],
                ctx->be->ops->linear_ex(ctx->be, &r, &x, &w, b, SD_EPI_ADD, &r));
    return r;
}

sd_tensor sd_linear_geglu(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b)
{
    sd_tensor y = {0};
    if (!LIVE(ctx) || !linear_args(ctx, "linear + geglu", x, w, b))
        return y;
    if (!check(ctx, w.ne[0] % 2 == 0, "linear + geglu", &w, NULL, "the weight's output size must be even"))
        return y;
    /* the backend's own bf16 output where its linears take one, else the activation dtype, else two ops */
    sd_linear_epi epi = linear_fuses(ctx, x, w, b, SD_EPI_GEGLU_BF16) ? SD_EPI_GEGLU_BF16 : SD_EPI_GEGLU;
    if (epi == SD_EPI_GEGLU && !linear_fuses(ctx, x, w, b, SD_EPI_GEGLU)) { /* the same values in two ops */
        size_t m = sd_mark(ctx);
        return sd_keep(ctx, m, sd_geglu(ctx, sd_linear(ctx, x, w, b)));
    }
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, x.ne, sizeof ne);
    ne[x.ndim - 1] = w.ne[0] / 2;
    y = sd_new(ctx, epi == SD_EPI_GEGLU_BF16 ? SD_BF16 : ctx->be->act_dtype, x.ndim, ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_LINEAR, (double)sd_numel(&y) * 2.0 * (double)w.ne[1],
                ctx->be->ops->linear_ex(ctx->be, &y, &x, &w, b, epi, NULL));
    return y;
}

sd_tensor sd_matmul(sd_ctx *ctx, sd_tensor a, sd_tensor b, bool trans_a, bool trans_b, float alpha)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, a.ndim == 3 && b.ndim == 3 && a.ne[0] == b.ne[0], "matmul", &a, &b, "need [B,M,K] x [B,K,N]"))
        return y;
    int64_t M = trans_a ? a.ne[2] : a.ne[1], Ka = trans_a ? a.ne[1] : a.ne[2];
    int64_t Kb = trans_b ? b.ne[2] : b.ne[1], N = trans_b ? b.ne[1] : b.ne[2];
    if (!check(ctx, Ka == Kb, "matmul", &a, &b, "inner dimensions differ"))
        return y;
    y = sd_new4(ctx, a.ne[0], M, N, 0);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_MATMUL, (double)sd_numel(&y) * (double)Ka,
                ctx->be->ops->matmul(ctx->be, &y, &a, &b, trans_a, trans_b, alpha));
    return y;
}

/* a conv's fused epilogue (sd_conv2d_ex): + res, then act (< 0: none), output in layout */
typedef struct conv_epi {
    const sd_tensor *res;
    int act;
    sd_layout layout;
} conv_epi;

/* into a new tensor, or into *dst (its shape checked, not overlapping x) */
static sd_tensor conv2d(sd_ctx *ctx, const sd_tensor *dst, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride,
                        const int pads[4], const conv_epi *e)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ndim == 4 && w.ndim == 4 && x.ne[1] == w.ne[1] && stride >= 1, "conv2d", &x, &w,
               "x[N,C,H,W] needs w[O,C,kh,kw]"))
        return y;
    if (b && !check(ctx, b->ndim == 1 && b->ne[0] == w.ne[0], "conv2d", &w, b, "bias must be [O]"))
        return y;
    if (!check(ctx, pads[0] >= 0 && pads[1] >= 0 && pads[2] >= 0 && pads[3] >= 0, "conv2d", &x, &w,
               "padding must be non-negative"))
        return y;
    /* (H + pads - k) can be negative: C division truncates toward zero, so test before dividing */
    if (!check(ctx, x.ne[2] + pads[0] + pads[2] >= w.ne[2] && x.ne[3] + pads[1] + pads[3] >= w.ne[3], "conv2d", &x,
               &w, "input smaller than kernel"))
        return y;
    int64_t ho = (x.ne[2] + pads[0] + pads[2] - w.ne[2]) / stride + 1;
    int64_t wo = (x.ne[3] + pads[1] + pads[3] - w.ne[3]) / stride + 1;
    if (!check(ctx, ho > 0 && wo > 0, "conv2d", &x, &w, "input smaller than kernel"))
        return y;
    int64_t ye[4] = {x.ne[0], w.ne[0], ho, wo};
    sd_layout yl = e ? e->layout : SD_LAYOUT_ROWMAJOR;
    if (e && !check(ctx, !e->res || (e->res->ndim == 4 && !memcmp(e->res->ne, ye, sizeof ye) && e->res->layout == yl),
                    "conv2d (residual)", e->res, &w, "the residual must have the output's shape and layout"))
        return y;
    if (x.layout == SD_LAYOUT_BF16_IMAGE || yl == SD_LAYOUT_BF16_IMAGE) {
        int act = e ? e->act : -1;
        bool ok = ctx->be->ops->conv2d_ex && ctx->be->ops->conv_layout &&
                  ctx->be->ops->conv_layout(ctx->be, &w, stride, act) == SD_LAYOUT_BF16_IMAGE;
        if (!check(ctx, ok && pads[0] == pads[1] && pads[0] == pads[2] && pads[0] == pads[3], "conv2d", &x, &w,
                   "the backend takes no image-layout activations for this convolution"))
            return y;
    }
    if (dst) {
        const uint8_t *d0 = dst->data, *x0 = x.data;
        bool apart = !d0 || !x0 || d0 + sd_nbytes(dst) <= x0 || x0 + sd_nbytes(&x) <= d0;
        if (!check(ctx, dst->ndim == 4 && !memcmp(dst->ne, ye, sizeof ye) && dst->layout == yl &&
                            (yl || dst->dtype == ctx->be->act_dtype),
                   "conv2d (into)", dst, &w, "the destination must be the output's shape") ||
            !check(ctx, apart, "conv2d (into)", dst, &x, "the destination overlaps the input"))
            return y;
        if (!check(ctx, !e || !e->res || !dst->data || e->res->data != dst->data || yl == SD_LAYOUT_BF16_IMAGE,
                   "conv2d (into)", dst,
                   e ? e->res : NULL, "only an image-layout output may replace its residual"))
            return y;
        y = *dst;
    } else if (yl == SD_LAYOUT_BF16_IMAGE) {
        y = new_image(ctx, ye);
    } else {
        y = sd_new4(ctx, x.ne[0], w.ne[0], ho, wo);
    }
    size_t m = sd_mark(ctx);
    sd_tensor wc = weight_for(ctx, w);
    size_t sb = ctx->be->ops->conv2d_scratch ? ctx->be->ops->conv2d_scratch(ctx->be, &x, &wc, &y) : 0;
    void *scratch = sb ? arena_alloc(ctx, sb) : NULL;
    if (LIVE(ctx) && RUN(ctx)) {
        sd_opt_kind kind = w.ne[2] == 3 && w.ne[3] == 3 ? SD_OPT_CONV3 : w.ne[2] == 1 && w.ne[3] == 1 ? SD_OPT_CONV1
                                                                                                        : SD_OPT_CONVX;
        double madds = (double)sd_numel(&y) * (double)(w.ne[1] * w.ne[2] * w.ne[3]);
        sd_backend *be = ctx->be;
        if (e && be->ops->conv2d_ex) {
            BE_CALL(kind, madds, be->ops->conv2d_ex(be, &y, &x, &wc, b, stride, pads, e->res, e->act, scratch));
        } else {
            BE_CALL(kind, madds, be->ops->conv2d(be, &y, &x, &wc, b, stride, pads, scratch));
            if (e && e->res) /* the epilogue decomposed: exactly sd_add_inplace, then sd_unary_inplace */
                BE_CALL(SD_OPT_ADD, 0, be->ops->binary(be, &y, &y, e->res, SD_BINARY_ADD));
            if (e && e->act >= 0)
                BE_CALL(SD_OPT_UNARY, 0, be->ops->unary(be, &y, &y, (sd_unary_op)e->act));
        }
    }
    sd_release(ctx, m);
    return y;
}

sd_tensor sd_conv2d_pads(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, const int pads[4])
{
    return conv2d(ctx, NULL, x, w, b, stride, pads, NULL);
}

sd_tensor sd_conv2d(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, int pad)
{
    int pads[4] = {pad, pad, pad, pad};
    return conv2d(ctx, NULL, x, w, b, stride, pads, NULL);
}

sd_tensor sd_conv2d_into(sd_ctx *ctx, sd_tensor dst, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, int pad)
{
    int pads[4] = {pad, pad, pad, pad};
    return conv2d(ctx, &dst, x, w, b, stride, pads, NULL);
}

sd_layout sd_conv_layout(sd_ctx *ctx, sd_tensor w, int stride, int act)
{
    sd_backend *be = ctx->be;
    return be->ops->conv2d_ex && be->ops->conv_layout ? be->ops->conv_layout(be, &w, stride, act) : SD_LAYOUT_ROWMAJOR;
}

sd_tensor sd_conv2d_ex(sd_ctx *ctx, const sd_tensor *dst, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride,
                       int pad, const sd_tensor *res, int act, sd_layout layout)
{
    int pads[4] = {pad, pad, pad, pad};
    conv_epi e = {res, act, layout};
    return conv2d(ctx, dst, x, w, b, stride, pads, &e);
}

sd_tensor sd_group_norm(sd_ctx *ctx, sd_tensor x, sd_tensor gamma, sd_tensor beta, int groups, float eps, bool silu)
{
    if (!rowmajor(ctx, "group_norm", &x))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ndim >= 2 && groups > 0 && x.ne[1] % groups == 0, "group_norm", &x, NULL,
               "channels not divisible by groups"))
        return y;
    if (!check(ctx, gamma.ndim == 1 && gamma.ne[0] == x.ne[1] && sd_same_shape(&gamma, &beta), "group_norm", &x,
               &gamma, "gamma/beta must be [C]"))
        return y;
    y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(silu ? SD_OPT_GN_SILU : SD_OPT_GN, 0,
                ctx->be->ops->group_norm(ctx->be, &y, &x, &gamma, &beta, groups, eps, silu));
    return y;
}

sd_tensor sd_layer_norm(sd_ctx *ctx, sd_tensor x, sd_tensor gamma, sd_tensor beta, float eps)
{
    if (!rowmajor(ctx, "layer_norm", &x))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, gamma.ndim == 1 && gamma.ne[0] == x.ne[x.ndim - 1] && sd_same_shape(&gamma, &beta),
               "layer_norm", &x, &gamma, "gamma/beta must match the last dimension"))
        return y;
    y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_LN, 0, ctx->be->ops->layer_norm(ctx->be, &y, &x, &gamma, &beta, eps));
    return y;
}

sd_tensor sd_softmax(sd_ctx *ctx, sd_tensor x, float scale)
{
    sd_tensor y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_SOFTMAX, 0, ctx->be->ops->softmax(ctx->be, &y, &x, scale));
    return y;
}

sd_tensor sd_attention(sd_ctx *ctx, sd_tensor q, sd_tensor k, sd_tensor v, int heads, float scale, bool causal)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, q.ndim == 3 && k.ndim == 3 && sd_same_shape(&k, &v) && q.ne[0] == k.ne[0] &&
                        q.ne[2] == k.ne[2] && heads > 0 && q.ne[2] % heads == 0,
               "attention", &q, &k, "need q[B,Nq,H*d], k,v[B,Nk,H*d]"))
        return y;
    y = sd_new(ctx, ctx->be->act_dtype, 3, q.ne);
    size_t m = sd_mark(ctx);
    size_t sb = ctx->be->ops->attention_scratch ? ctx->be->ops->attention_scratch(ctx->be, &q, &k, heads) : 0;
    void *scratch = sb ? arena_alloc(ctx, sb) : NULL;
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(q.ne[1] == k.ne[1] ? SD_OPT_ATT_SELF : SD_OPT_ATT_CROSS, 2.0 * (double)sd_numel(&q) * (double)k.ne[1],
                ctx->be->ops->attention(ctx->be, &y, &q, &k, &v, heads, scale, causal, scratch));
    sd_release(ctx, m);
    return y;
}

sd_tensor sd_unary(sd_ctx *ctx, sd_tensor x, sd_unary_op op)
{
    if (!rowmajor(ctx, "unary", &x))
        return (sd_tensor){0};
    sd_tensor y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_UNARY, 0, ctx->be->ops->unary(ctx->be, &y, &x, op));
    return y;
}

sd_tensor sd_silu(sd_ctx *ctx, sd_tensor x) { return sd_unary(ctx, x, SD_UNARY_SILU); }

sd_tensor sd_unary_inplace(sd_ctx *ctx, sd_tensor x, sd_unary_op op)
{
    if ((x.layout != SD_LAYOUT_BF16_IMAGE || op != SD_UNARY_RELU) && !rowmajor(ctx, "unary (in place)", &x))
        return x;
    if (!check(ctx, x.dtype == ctx->be->act_dtype || x.layout == SD_LAYOUT_BF16_IMAGE, "unary (in place)", &x, NULL,
               "needs an activation tensor"))
        return x;
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_UNARY, 0, ctx->be->ops->unary(ctx->be, &x, &x, op));
    return x;
}

static bool broadcasts(sd_ctx *ctx, const sd_tensor *a, const sd_tensor *b)
{
    bool ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++) {
        int64_t da = a->ne[a->ndim - 1 - i], db = b->ne[b->ndim - 1 - i];
        ok = db == da || db == 1;
    }
    return check(ctx, ok, "binary op", a, b, "b does not broadcast to a");
}

static sd_tensor binary(sd_ctx *ctx, sd_tensor a, sd_tensor b, sd_binary_op op)
{
    if (!rowmajor(ctx, "binary op", &a) || !rowmajor(ctx, "binary op", &b))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!broadcasts(ctx, &a, &b))
        return y;
    /* backends compute on activations: an operand in another dtype (a weight kept in F16 on the CPU, such as
     * CLIP's position table with keep_f16) is converted into arena scratch first */
    if (a.dtype != ctx->be->act_dtype)
        a = sd_cast(ctx, a, ctx->be->act_dtype);
    if (b.dtype != ctx->be->act_dtype)
        b = sd_cast(ctx, b, ctx->be->act_dtype);
    y = sd_new(ctx, ctx->be->act_dtype, a.ndim, a.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(op == SD_BINARY_ADD ? SD_OPT_ADD : op == SD_BINARY_SUB ? SD_OPT_SUB : SD_OPT_MUL, 0,
                ctx->be->ops->binary(ctx->be, &y, &a, &b, op));
    return y;
}

sd_tensor sd_add(sd_ctx *ctx, sd_tensor a, sd_tensor b) { return binary(ctx, a, b, SD_BINARY_ADD); }

sd_tensor sd_add_inplace(sd_ctx *ctx, sd_tensor a, sd_tensor b)
{
    if (!rowmajor(ctx, "add (in place)", &a) || !rowmajor(ctx, "add (in place)", &b))
        return a;
    if (!LIVE(ctx) || !broadcasts(ctx, &a, &b))
        return a;
    if (!check(ctx, a.dtype == ctx->be->act_dtype, "add (in place)", &a, &b, "a must be an activation tensor"))
        return a;
    size_t m = sd_mark(ctx);
    if (b.dtype != ctx->be->act_dtype) /* as binary(): an operand in another dtype is converted first */
        b = sd_cast(ctx, b, ctx->be->act_dtype);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_ADD, 0, ctx->be->ops->binary(ctx->be, &a, &a, &b, SD_BINARY_ADD));
    sd_release(ctx, m);
    return a;
}
sd_tensor sd_sub(sd_ctx *ctx, sd_tensor a, sd_tensor b) { return binary(ctx, a, b, SD_BINARY_SUB); }
sd_tensor sd_mul(sd_ctx *ctx, sd_tensor a, sd_tensor b) { return binary(ctx, a, b, SD_BINARY_MUL); }

sd_tensor sd_affine(sd_ctx *ctx, sd_tensor x, float alpha, float beta)
{
    if (!rowmajor(ctx, "affine", &x))
        return (sd_tensor){0};
    sd_tensor y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_AFFINE, 0, ctx->be->ops->affine(ctx->be, &y, &x, alpha, beta));
    return y;
}

sd_tensor sd_clamp(sd_ctx *ctx, sd_tensor x, float lo, float hi)
{
    if (!rowmajor(ctx, "clamp", &x))
        return (sd_tensor){0};
    sd_tensor y = sd_new(ctx, ctx->be->act_dtype, x.ndim, x.ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_AFFINE, 0, ctx->be->ops->clamp(ctx->be, &y, &x, lo, hi));
    return y;
}

sd_tensor sd_geglu(sd_ctx *ctx, sd_tensor x)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ne[x.ndim - 1] % 2 == 0, "geglu", &x, NULL, "last dimension must be even"))
        return y;
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, x.ne, sizeof ne);
    ne[x.ndim - 1] /= 2;
    y = sd_new(ctx, ctx->be->act_dtype, x.ndim, ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_GEGLU, 0, ctx->be->ops->geglu(ctx->be, &y, &x));
    return y;
}

sd_tensor sd_upsample2x(sd_ctx *ctx, sd_tensor x)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ndim == 4, "upsample2x", &x, NULL, "need NCHW"))
        return y;
    if (x.layout == SD_LAYOUT_BF16_IMAGE) /* the image layout stays (conv_layout) */
        y = new_image(ctx, (int64_t[]){x.ne[0], x.ne[1], 2 * x.ne[2], 2 * x.ne[3]});
    else
        y = sd_new4(ctx, x.ne[0], x.ne[1], 2 * x.ne[2], 2 * x.ne[3]);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_UPSAMPLE, 0, ctx->be->ops->upsample2x(ctx->be, &y, &x));
    return y;
}

sd_tensor sd_rgb8_to_chw(sd_ctx *ctx, sd_tensor x)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ndim == 4 && x.ne[3] == 3 && x.dtype == SD_U8, "rgb8_to_chw", &x, NULL,
               "need U8 [N,H,W,3]"))
        return y;
    y = sd_new4(ctx, x.ne[0], 3, x.ne[1], x.ne[2]);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_IMAGE, 0, ctx->be->ops->rgb8_to_chw(ctx->be, &y, &x));
    return y;
}

sd_tensor sd_chw_to_rgb8(sd_ctx *ctx, sd_tensor x)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, x.ndim == 4 && x.ne[1] == 3 && x.dtype == ctx->be->act_dtype, "chw_to_rgb8", &x, NULL,
               "need [N,3,H,W] activations"))
        return y;
    y = sd_new(ctx, SD_U8, 4, (int64_t[]){x.ne[0], x.ne[2], x.ne[3], 3});
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_IMAGE, 0, ctx->be->ops->chw_to_rgb8(ctx->be, &y, &x));
    return y;
}

sd_tensor sd_concat(sd_ctx *ctx, sd_tensor a, sd_tensor b, int axis)
{
    if (!rowmajor(ctx, "concat", &a) || !rowmajor(ctx, "concat", &b))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    bool ok = a.ndim == b.ndim && axis >= 0 && axis < a.ndim && a.dtype == b.dtype;
    for (int i = 0; ok && i < a.ndim; i++)
        ok = i == axis || a.ne[i] == b.ne[i];
    if (!check(ctx, ok, "concat", &a, &b, "shapes differ outside the concat axis"))
        return y;
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, a.ne, sizeof ne);
    ne[axis] += b.ne[axis];
    y = sd_new(ctx, a.dtype, a.ndim, ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_CONCAT, 0, ctx->be->ops->concat(ctx->be, &y, &a, &b, axis));
    return y;
}

sd_tensor sd_slice(sd_ctx *ctx, sd_tensor x, int axis, int64_t start, int64_t len)
{
    if (!rowmajor(ctx, "slice", &x))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, axis >= 0 && axis < x.ndim && start >= 0 && len >= 0 && start + len <= x.ne[axis], "slice", &x,
               NULL, "range out of bounds"))
        return y;
    int64_t ne[SD_MAX_DIMS];
    memcpy(ne, x.ne, sizeof ne);
    ne[axis] = len;
    y = sd_new(ctx, x.dtype, x.ndim, ne);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_SLICE, 0, ctx->be->ops->slice(ctx->be, &y, &x, axis, start));
    return y;
}

sd_tensor sd_permute(sd_ctx *ctx, sd_tensor x, int p0, int p1, int p2, int p3)
{
    if (!rowmajor(ctx, "permute", &x))
        return (sd_tensor){0};
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    int perm[4] = {p0, p1, p2, p3};
    int seen = 0;
    for (int i = 0; i < 4; i++)
        if (perm[i] >= 0 && perm[i] < 4)
            seen |= 1 << perm[i];
    if (!check(ctx, x.ndim == 4 && seen == 15, "permute", &x, NULL, "need a 4-D tensor and a permutation of 0..3"))
        return y;
    y = sd_new4(ctx, x.ne[p0], x.ne[p1], x.ne[p2], x.ne[p3]);
    y.ndim = 4;
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_PERMUTE, 0, ctx->be->ops->permute(ctx->be, &y, &x, perm));
    return y;
}

sd_tensor sd_timestep_embedding(sd_ctx *ctx, sd_tensor t, int dim, bool flip_sin_to_cos, float shift)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, t.ndim == 1 && t.dtype == SD_F32 && dim > 0, "timestep_embedding", &t, NULL,
               "timesteps must be F32 [B]"))
        return y;
    y = sd_new4(ctx, t.ne[0], dim, 0, 0);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_OTHER, 0,
                ctx->be->ops->timestep_embedding(ctx->be, &y, &t, dim, flip_sin_to_cos, shift, 10000.0f));
    return y;
}

sd_tensor sd_embedding(sd_ctx *ctx, sd_tensor table, sd_tensor ids)
{
    sd_tensor y = {0};
    if (!LIVE(ctx))
        return y;
    if (!check(ctx, table.ndim == 2 && ids.ndim == 1 && ids.dtype == SD_I32, "embedding", &table, &ids,
               "need table[V,D] and I32 ids[N]") ||
        !check(ctx, table.layout == SD_LAYOUT_ROWMAJOR, "embedding", &table, &ids, "the table is in a backend's "
               "prepared layout (load it with sd_weights_get_table)"))
        return y;
    y = sd_new4(ctx, ids.ne[0], table.ne[1], 0, 0);
    if (LIVE(ctx) && RUN(ctx))
        BE_CALL(SD_OPT_OTHER, 0, ctx->be->ops->embedding(ctx->be, &y, &table, &ids));
    return y;
}

void sd_copy_into(sd_ctx *ctx, sd_tensor dst, sd_tensor src)
{
    if (!LIVE(ctx))
        return;
    if (!check(ctx, sd_same_shape(&dst, &src) && dst.dtype == src.dtype, "copy", &dst, &src, "shapes differ"))
        return;
    if (RUN(ctx) && dst.data != src.data)
        BE_CALL(SD_OPT_MOVE, 0, ctx->be->ops->move(ctx->be, dst.data, src.data, sd_nbytes(&src)));
}
