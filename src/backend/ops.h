/* Op wrappers and the execution context: what model code calls.
 *
 * An sd_ctx couples a backend with an activation arena. Every wrapper checks
 * shapes, allocates its output from the arena and dispatches to the backend.
 * Errors are sticky: the first failure is recorded in ctx->status (with the
 * thread's error message) and every later op becomes a no-op returning an
 * empty tensor, so model code needs no error checks between ops.
 *
 * Memory planning: run a forward pass once with a planning context
 * (sd_ctx_init_plan: no memory, no compute) to learn the exact peak arena
 * size for the static shapes, allocate once, then run for real any number of
 * times. Within a forward, scopes give memory back (sd_scope below; sd_mark /
 * sd_keep / sd_release are the primitives underneath).
 */
#ifndef SD_OPS_H
#define SD_OPS_H

#include "backend/backend.h"

typedef struct sd_ctx {
    sd_backend *be;
    uint8_t *base;   /* arena memory (backend), NULL while planning */
    size_t cap;      /* arena capacity */
    size_t off;      /* current top */
    size_t peak;     /* highest top seen */
    bool plan;       /* planning: track sizes only, run nothing */
    sd_status status;/* sticky first error */
    /* optional debug hook: models call sd_hook(ctx, "name", t) on named
     * intermediate activations (diffusers module paths); used by the
     * conformance runner to compare act.* tensors. Never called while planning. */
    void (*hook)(void *user, const char *name, sd_tensor t);
    void *hook_user;
} sd_ctx;

void sd_ctx_init_plan(sd_ctx *ctx, sd_backend *be);
/* Allocates `bytes` of backend memory for the arena. */
sd_status sd_ctx_init(sd_ctx *ctx, sd_backend *be, size_t bytes);
/* Records what `record` issues on ctx into an executable graph (backends with graphs; the ops are
 * recorded, not run): *graph, or NULL and an error when the backend has none, or the capture or an op
 * failed; then ctx's status and arena top are as before, so the caller can run the ops eagerly. */
sd_status sd_ctx_capture(sd_ctx *ctx, void (*record)(sd_ctx *ctx, void *user), void *user, void **graph);
void sd_ctx_free(sd_ctx *ctx);
void sd_ctx_reset(sd_ctx *ctx); /* empty the arena, clear the error */
bool sd_ok(const sd_ctx *ctx);

size_t sd_mark(const sd_ctx *ctx);
void sd_release(sd_ctx *ctx, size_t mark);
/* Moves t down to `mark` (no copy when it is already there or below) and frees everything above it. */
sd_tensor sd_keep(sd_ctx *ctx, size_t mark, sd_tensor t);

/* Scopes: how model code gives temporaries back. The arena is a stack; a scope owns every tensor
 * allocated while it is open, and keeps only what it returns. Tensors from before it (its inputs,
 * outputs allocated up front) are never touched.
 *     sd_scope s = sd_scope_begin(ctx);
 *     h = sd_step(&s, f(h));       f's result becomes the scope's only tensor: it moves down to where
 *                                  the scope began, everything else the scope held is freed
 *     return sd_scope_end(&s, h);  the last step: the caller's own scope now holds h
 *     sd_scope_drop(&s);           or keep nothing (the results went into tensors made before the scope)
 * A block function opens one scope and steps where a value replaces everything computed before it
 * in the block (after norm -> conv, after a residual add), so the arena holds only live values and
 * the planning pass measures exactly that peak. A step whose value was allocated first in the scope
 * costs no copy. */
typedef struct sd_scope {
    sd_ctx *ctx;
    size_t mark; /* the arena top when the scope began */
} sd_scope;
sd_scope sd_scope_begin(sd_ctx *ctx);
sd_tensor sd_step(sd_scope *s, sd_tensor t);
sd_tensor sd_scope_end(sd_scope *s, sd_tensor t);
void sd_scope_drop(sd_scope *s);
/* Records an error in the context (first one wins); returns an empty tensor. */
sd_tensor sd_ctx_fail(sd_ctx *ctx, sd_status s, const char *fmt, ...) SD_PRINTF(3, 4);

void sd_hook(sd_ctx *ctx, const char *name, sd_tensor t);
/* printf-style name; formats only when a hook is installed */
void sd_hookf(sd_ctx *ctx, sd_tensor t, const char *fmt, ...) SD_PRINTF(3, 4);

/* New uninitialised tensor from the arena (activation dtype unless given). */
sd_tensor sd_new(sd_ctx *ctx, sd_dtype dt, int ndim, const int64_t *ne);
sd_tensor sd_new4(sd_ctx *ctx, int64_t a, int64_t b, int64_t c, int64_t d); /* act dtype, trailing 0s drop dims */
/* host <-> tensor (converts between host float32 and the tensor's dtype) */
sd_status sd_tensor_from_f32(sd_ctx *ctx, sd_tensor *t, const float *host);
sd_status sd_tensor_to_f32(sd_ctx *ctx, const sd_tensor *t, float *host);

/* views (no copy) */
sd_tensor sd_reshape(sd_ctx *ctx, sd_tensor x, int ndim, const int64_t *ne);
sd_tensor sd_reshape2(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b);
sd_tensor sd_reshape3(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b, int64_t c);
sd_tensor sd_reshape4(sd_ctx *ctx, sd_tensor x, int64_t a, int64_t b, int64_t c, int64_t d);
/* rows [start, start+n) of the first dimension (a view) */
sd_tensor sd_view_rows(sd_ctx *ctx, sd_tensor x, int64_t start, int64_t n);

/* ops */
sd_tensor sd_cast(sd_ctx *ctx, sd_tensor x, sd_dtype dt);
sd_tensor sd_linear(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b);
/* Fused linears (one backend op where it has them, else the two ops; the same values either way):
 * r += x w^T + b in place (r: a temporary of the caller's, of the linear's output shape, not overlapping x;
 * returns r, allocates nothing), and geglu(x w^T + b) (w [N,K], N even: [..., N/2]; in BF16 where the
 * backend's linears take BF16 inputs (CPU precision bf16): such a result is for sd_linear* only). */
sd_tensor sd_linear_add_inplace(sd_ctx *ctx, sd_tensor r, sd_tensor x, sd_tensor w, const sd_tensor *b);
sd_tensor sd_linear_geglu(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b);
sd_tensor sd_matmul(sd_ctx *ctx, sd_tensor a, sd_tensor b, bool trans_a, bool trans_b, float alpha);
sd_tensor sd_conv2d(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, int pad);
sd_tensor sd_conv2d_pads(sd_ctx *ctx, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, const int pads[4]);
/* sd_conv2d writing into dst (the output's shape, not overlapping x; e.g. a dead temporary at a scope's
 * start, so that no step has to copy the result down); returns dst */
sd_tensor sd_conv2d_into(sd_ctx *ctx, sd_tensor dst, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride, int pad);
/* A chain of convolutions with fused epilogues (TAESD): y = act(conv(x) + b + res), act an sd_unary_op or
 * < 0 for none, res NULL or a tensor of y's shape and layout; y in `layout` (new, or *dst as sd_conv2d_into).
 * sd_conv_layout gives the activation layout the backend reads and writes fastest for w at stride with act
 * (SD_LAYOUT_BF16_IMAGE on the CPU at precision bf16: channels-last bf16, backend.h), else row-major; a
 * chain asks it once and passes it as `layout` to its convolutions (the last one's output row-major when
 * other ops read it: only conv2d_ex, upsample2x and a ReLU in place take the image layout). *dst may be res
 * for image-layout tensors (each residual value is read just before the output replaces it). Row-major, or
 * a backend without the fused op: the same values as sd_conv2d, sd_add_inplace, sd_unary_inplace. */
sd_layout sd_conv_layout(sd_ctx *ctx, sd_tensor w, int stride, int act);
sd_tensor sd_conv2d_ex(sd_ctx *ctx, const sd_tensor *dst, sd_tensor x, sd_tensor w, const sd_tensor *b, int stride,
                       int pad, const sd_tensor *res, int act, sd_layout layout);
sd_tensor sd_group_norm(sd_ctx *ctx, sd_tensor x, sd_tensor gamma, sd_tensor beta, int groups, float eps, bool silu);
sd_tensor sd_layer_norm(sd_ctx *ctx, sd_tensor x, sd_tensor gamma, sd_tensor beta, float eps);
sd_tensor sd_softmax(sd_ctx *ctx, sd_tensor x, float scale);
sd_tensor sd_attention(sd_ctx *ctx, sd_tensor q, sd_tensor k, sd_tensor v, int heads, float scale, bool causal);
sd_tensor sd_unary(sd_ctx *ctx, sd_tensor x, sd_unary_op op);
sd_tensor sd_silu(sd_ctx *ctx, sd_tensor x);
sd_tensor sd_add(sd_ctx *ctx, sd_tensor a, sd_tensor b);
/* In place: x = op(x), a = a + b (b broadcast to a); they return x / a and allocate nothing, so a scope
 * that steps onto the result moves nothing when it already sits at the scope's start. x and a must be
 * temporaries of the caller's (never a weight or an input another op still reads). Same values as
 * sd_unary / sd_add (a + b and b + a are the same float sum). */
sd_tensor sd_unary_inplace(sd_ctx *ctx, sd_tensor x, sd_unary_op op);
sd_tensor sd_add_inplace(sd_ctx *ctx, sd_tensor a, sd_tensor b);
sd_tensor sd_sub(sd_ctx *ctx, sd_tensor a, sd_tensor b);
sd_tensor sd_mul(sd_ctx *ctx, sd_tensor a, sd_tensor b);
sd_tensor sd_affine(sd_ctx *ctx, sd_tensor x, float alpha, float beta);
sd_tensor sd_clamp(sd_ctx *ctx, sd_tensor x, float lo, float hi);
sd_tensor sd_geglu(sd_ctx *ctx, sd_tensor x);
sd_tensor sd_upsample2x(sd_ctx *ctx, sd_tensor x);
/* Images on the device: U8 [N,H,W,3] RGB bytes -> [N,3,H,W] in [-1, 1], and back (rounded, clamped). */
sd_tensor sd_rgb8_to_chw(sd_ctx *ctx, sd_tensor x);
sd_tensor sd_chw_to_rgb8(sd_ctx *ctx, sd_tensor x);
sd_tensor sd_concat(sd_ctx *ctx, sd_tensor a, sd_tensor b, int axis);
sd_tensor sd_slice(sd_ctx *ctx, sd_tensor x, int axis, int64_t start, int64_t len);
sd_tensor sd_permute(sd_ctx *ctx, sd_tensor x, int p0, int p1, int p2, int p3);
sd_tensor sd_timestep_embedding(sd_ctx *ctx, sd_tensor t, int dim, bool flip_sin_to_cos, float shift);
sd_tensor sd_embedding(sd_ctx *ctx, sd_tensor table, sd_tensor ids);
/* copy x into an existing tensor of the same shape and dtype */
void sd_copy_into(sd_ctx *ctx, sd_tensor dst, sd_tensor src);

#endif
