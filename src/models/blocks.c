#include "models/blocks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ loading */

void sd_wl_get(sd_wload *l, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...)
{
    memset(out, 0, sizeof *out);
    if (l->status != SD_OK)
        return;
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name) {
        l->status = sd_fail(SD_ERR_INTERNAL, "tensor name too long: '%s...'", name);
        return;
    }
    if (!l->w) {
        *out = sd_tensor_make(NULL, SD_F32, ndim, shape);
        if (l->fn)
            l->fn(l->user, name, shape, ndim);
        return;
    }
    l->status = sd_weights_get(l->w, out, shape, ndim, "%s", name);
    if (l->status != SD_OK || !l->record)
        return;
    if (l->n_slots == l->cap_slots) {
        size_t nc = l->cap_slots ? 2 * l->cap_slots : 256;
        sd_wslot *ns = realloc(l->slots, nc * sizeof *ns);
        if (!ns) {
            l->status = sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
            return;
        }
        l->slots = ns;
        l->cap_slots = nc;
    }
    char *copy = sd_strdup(name);
    if (!copy) {
        l->status = SD_ERR_OUT_OF_MEMORY;
        return;
    }
    l->slots[l->n_slots++] = (sd_wslot){copy, out};
}

void sd_wslots_free(sd_wslot *slots, size_t n)
{
    for (size_t i = 0; slots && i < n; i++)
        free(slots[i].name);
    free(slots);
}

#define GET(l, out, prefix, suffix, ...) sd_wl_get(l, out, SD_SHAPE(__VA_ARGS__), "%s." suffix, prefix)

/* Hook-name buffer: formats only when a hook is installed. */
static const char *subname(const sd_ctx *ctx, char *buf, size_t n, const char *name, const char *fmt, ...)
    SD_PRINTF(5, 6);
static const char *subname(const sd_ctx *ctx, char *buf, size_t n, const char *name, const char *fmt, ...)
{
    if (!ctx->hook || !name)
        return NULL;
    size_t o = (size_t)snprintf(buf, n, "%s.", name);
    if (o >= n)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + o, n - o, fmt, ap);
    va_end(ap);
    return buf;
}

static void hook(sd_ctx *ctx, sd_tensor t, const char *name, const char *suffix)
{
    if (!ctx->hook || !name)
        return;
    if (suffix)
        sd_hookf(ctx, t, "%s.%s", name, suffix);
    else
        sd_hook(ctx, name, t);
}

/* ------------------------------------------------------------------ ResnetBlock2D */

void sd_resnet_load(sd_wload *l, sd_resnet *r, const char *p, int64_t cin, int64_t cout, int64_t temb_dim,
                    int groups, float eps, float out_scale)
{
    memset(r, 0, sizeof *r);
    r->cin = cin;
    r->cout = cout;
    r->groups = groups;
    r->eps = eps;
    r->out_scale = out_scale;
    r->has_temb = temb_dim > 0;
    r->has_shortcut = cin != cout;
    GET(l, &r->norm1_w, p, "norm1.weight", cin);
    GET(l, &r->norm1_b, p, "norm1.bias", cin);
    GET(l, &r->conv1_w, p, "conv1.weight", cout, cin, 3, 3);
    GET(l, &r->conv1_b, p, "conv1.bias", cout);
    if (r->has_temb) {
        GET(l, &r->temb_w, p, "time_emb_proj.weight", cout, temb_dim);
        GET(l, &r->temb_b, p, "time_emb_proj.bias", cout);
    }
    GET(l, &r->norm2_w, p, "norm2.weight", cout);
    GET(l, &r->norm2_b, p, "norm2.bias", cout);
    GET(l, &r->conv2_w, p, "conv2.weight", cout, cout, 3, 3);
    GET(l, &r->conv2_b, p, "conv2.bias", cout);
    if (r->has_shortcut) {
        GET(l, &r->short_w, p, "conv_shortcut.weight", cout, cin, 1, 1);
        GET(l, &r->short_b, p, "conv_shortcut.bias", cout);
    }
}

/* x [B,Cin,H,W], semb = SiLU(time embedding) [B,T] -> [B,Cout,H,W]:
 *   (shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + time_emb_proj(semb))))) / output_scale_factor */
sd_tensor sd_resnet_forward(sd_ctx *ctx, const sd_resnet *r, sd_tensor x, const sd_tensor *semb)
{
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor h = sd_group_norm(ctx, x, r->norm1_w, r->norm1_b, r->groups, r->eps, true); /* [B,Cin,H,W] */
    h = sd_step(&s, sd_conv2d(ctx, h, r->conv1_w, &r->conv1_b, 1, 1));                   /* [B,Cout,H,W] */
    if (r->has_temb && semb) {
        sd_tensor tp = sd_linear(ctx, *semb, r->temb_w, &r->temb_b); /* [B,Cout] */
        tp = sd_reshape4(ctx, tp, tp.ne[0], tp.ne[1], 1, 1);        /* [B,Cout,1,1]: one value per channel */
        h = sd_step(&s, sd_add_inplace(ctx, h, tp)); /* h is the scope's: no copy */
    }
    h = sd_group_norm(ctx, h, r->norm2_w, r->norm2_b, r->groups, r->eps, true);
    h = sd_step(&s, sd_conv2d(ctx, h, r->conv2_w, &r->conv2_b, 1, 1)); /* [B,Cout,H,W] */
    sd_tensor sc = r->has_shortcut ? sd_conv2d(ctx, x, r->short_w, &r->short_b, 1, 0) : x; /* 1x1: [B,Cout,H,W] */
    sd_tensor out = sd_add_inplace(ctx, h, sc); /* h (the scope's first tensor) += sc: returned without a copy */
    if (r->out_scale != 1.0f)
        out = sd_affine(ctx, out, 1.0f / r->out_scale, 0.0f);
    return sd_scope_end(&s, out);
}

/* ------------------------------------------------------------------ Down/Upsample2D */

void sd_downsample_load(sd_wload *l, sd_resample *d, const char *p, int64_t ch, int pad)
{
    memset(d, 0, sizeof *d);
    d->pad = pad;
    GET(l, &d->w, p, "conv.weight", ch, ch, 3, 3);
    GET(l, &d->b, p, "conv.bias", ch);
}

/* x [B,C,H,W] -> conv3x3 stride 2 [B,C,H/2,W/2] */
sd_tensor sd_downsample_forward(sd_ctx *ctx, const sd_resample *d, sd_tensor x)
{
    int pads[4] = {d->pad, d->pad, d->pad, d->pad};
    if (d->pad == 0) { /* F.pad(x, (0, 1, 0, 1)): right and bottom */
        pads[2] = 1;
        pads[3] = 1;
    }
    return sd_conv2d_pads(ctx, x, d->w, &d->b, 2, pads);
}

void sd_upsample_load(sd_wload *l, sd_resample *d, const char *p, int64_t ch)
{
    memset(d, 0, sizeof *d);
    d->pad = 1;
    GET(l, &d->w, p, "conv.weight", ch, ch, 3, 3);
    GET(l, &d->b, p, "conv.bias", ch);
}

/* x [B,C,H,W] -> nearest 2x [B,C,2H,2W] -> conv3x3 [B,C,2H,2W] */
sd_tensor sd_upsample_forward(sd_ctx *ctx, const sd_resample *d, sd_tensor x)
{
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor u = sd_upsample2x(ctx, x);
    return sd_scope_end(&s, sd_conv2d(ctx, u, d->w, &d->b, 1, 1));
}

/* ------------------------------------------------------------------ Attention */

static void attn_load(sd_wload *l, sd_attn *a, const char *p, int64_t qdim, int64_t heads, int64_t head_dim,
                      int64_t kvdim, bool cross, int *kv_counter)
{
    memset(a, 0, sizeof *a);
    a->heads = heads;
    a->head_dim = head_dim;
    a->inner = heads * head_dim;
    a->qdim = qdim;
    a->kvdim = kvdim;
    a->cross = cross;
    a->kv_index = cross ? (*kv_counter)++ : -1;
    GET(l, &a->q, p, "to_q.weight", a->inner, qdim);
    GET(l, &a->k, p, "to_k.weight", a->inner, kvdim);
    GET(l, &a->v, p, "to_v.weight", a->inner, kvdim);
    GET(l, &a->out_w, p, "to_out.0.weight", qdim, a->inner);
    GET(l, &a->out_b, p, "to_out.0.bias", qdim);
}

void sd_attn_project_kv(sd_ctx *ctx, const sd_attn *a, sd_tensor context, sd_tensor *k, sd_tensor *v)
{
    *k = sd_linear(ctx, context, a->k, NULL);
    *v = sd_linear(ctx, context, a->v, NULL);
}

/* softmax(q k^T / sqrt(d)) v per head: q [B,N,inner], k/v [B or 1,S,inner] -> [B,N,inner];
 * k/v of batch 1 serve every row of q. */
static sd_tensor attention(sd_ctx *ctx, const sd_attn *a, sd_tensor q, sd_tensor k, sd_tensor v)
{
    float scale = (float)(1.0 / sqrt((double)a->head_dim));
    if (!sd_ok(ctx))
        return q;
    if (k.ndim == 3 && q.ndim == 3 && k.ne[0] == 1 && q.ne[0] > 1) {
        /* the same K/V for all rows: attend [1, B*N] queries at once (rows are independent) */
        sd_tensor q1 = sd_reshape3(ctx, q, 1, q.ne[0] * q.ne[1], q.ne[2]);
        sd_tensor o = sd_attention(ctx, q1, k, v, (int)a->heads, scale, false);
        return sd_reshape3(ctx, o, q.ne[0], q.ne[1], q.ne[2]);
    }
    if (k.ndim != 3 || k.ne[0] != q.ne[0]) {
        char sq[96], sk[96];
        sd_shape_str(&q, sq, sizeof sq);
        sd_shape_str(&k, sk, sizeof sk);
        return sd_ctx_fail(ctx, SD_ERR_SHAPE,
                           "cross-attention: the context (or K/V cache) batch must equal the sample batch or be 1 "
                           "(queries %s, keys %s)",
                           sq, sk);
    }
    return sd_attention(ctx, q, k, v, (int)a->heads, scale, false);
}

/* Attention: n [B,N,qdim] -> to_out(attention(to_q(n), to_k(src), to_v(src))) [B,N,qdim];
 * src = n (self) or the context [B,S,kvdim] (cross; its K/V come from the cache when given).
 * With h (the residual stream, the caller's): h += that, the out-projection writing into h (one fused op). */
static sd_tensor attn_forward(sd_ctx *ctx, const sd_attn *a, sd_tensor n, sd_tensor context, const sd_kv_pair *kv,
                              const sd_tensor *h)
{
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor q = sd_linear(ctx, n, a->q, NULL); /* [B,N,inner] */
    sd_tensor k, v;
    if (a->cross && kv && a->kv_index >= 0) {
        k = kv[a->kv_index].k;
        v = kv[a->kv_index].v;
    } else {
        sd_tensor src = a->cross ? context : n;
        if (a->cross && (src.ndim != 3 || src.ne[2] != a->kvdim)) {
            char sc[96];
            sd_shape_str(&src, sc, sizeof sc);
            sd_ctx_fail(ctx, SD_ERR_SHAPE, "cross-attention needs a context [B,S,%lld] (encoder_hidden_states), got %s",
                        (long long)a->kvdim, sc);
            return q;
        }
        sd_attn_project_kv(ctx, a, src, &k, &v); /* [B,S,inner] each */
    }
    sd_tensor o = attention(ctx, a, q, k, v); /* [B,N,inner] */
    if (h) {
        sd_linear_add_inplace(ctx, *h, o, a->out_w, &a->out_b);
        sd_scope_drop(&s);
        return *h;
    }
    return sd_scope_end(&s, sd_linear(ctx, o, a->out_w, &a->out_b)); /* [B,N,qdim] */
}

/* ------------------------------------------------------------------ Transformer2DModel */

void sd_transformer2d_load(sd_wload *l, sd_transformer2d *t, const char *p, int64_t ch, int64_t heads,
                           int64_t layers, int64_t ctx_dim, bool only_cross, bool linear_proj, int groups,
                           int *kv_counter)
{
    memset(t, 0, sizeof *t);
    if (l->status != SD_OK)
        return;
    if (heads <= 0 || ch / heads <= 0 || layers <= 0) {
        l->status = sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %lld channels cannot be split into %lld attention heads",
                            p, (long long)ch, (long long)heads);
        return;
    }
    t->ch = ch;
    t->heads = heads;
    t->head_dim = ch / heads; /* diffusers: out_channels // num_attention_heads */
    t->inner = t->heads * t->head_dim;
    t->groups = groups;
    t->linear_proj = linear_proj;
    t->n_layers = (int)layers;
    t->blocks = sd_calloc((size_t)layers, sizeof *t->blocks);
    if (!t->blocks) {
        l->status = SD_ERR_OUT_OF_MEMORY;
        return;
    }
    int64_t in = t->inner;
    GET(l, &t->norm_w, p, "norm.weight", ch);
    GET(l, &t->norm_b, p, "norm.bias", ch);
    if (linear_proj) {
        GET(l, &t->pin_w, p, "proj_in.weight", in, ch);
    } else {
        GET(l, &t->pin_w, p, "proj_in.weight", in, ch, 1, 1);
    }
    GET(l, &t->pin_b, p, "proj_in.bias", in);
    for (int i = 0; i < t->n_layers && l->status == SD_OK; i++) {
        sd_tblock *b = &t->blocks[i];
        char bp[400];
        snprintf(bp, sizeof bp, "%s.transformer_blocks.%d", p, i);
        char ap[420];
        GET(l, &b->n1_w, bp, "norm1.weight", in);
        GET(l, &b->n1_b, bp, "norm1.bias", in);
        snprintf(ap, sizeof ap, "%s.attn1", bp);
        attn_load(l, &b->attn1, ap, in, heads, t->head_dim, only_cross ? ctx_dim : in, only_cross, kv_counter);
        GET(l, &b->n2_w, bp, "norm2.weight", in);
        GET(l, &b->n2_b, bp, "norm2.bias", in);
        snprintf(ap, sizeof ap, "%s.attn2", bp);
        attn_load(l, &b->attn2, ap, in, heads, t->head_dim, ctx_dim, true, kv_counter);
        GET(l, &b->n3_w, bp, "norm3.weight", in);
        GET(l, &b->n3_b, bp, "norm3.bias", in);
        b->ff_inner = 4 * in; /* FeedForward(mult=4), GEGLU */
        GET(l, &b->ff1_w, bp, "ff.net.0.proj.weight", 2 * b->ff_inner, in);
        GET(l, &b->ff1_b, bp, "ff.net.0.proj.bias", 2 * b->ff_inner);
        GET(l, &b->ff2_w, bp, "ff.net.2.weight", in, b->ff_inner);
        GET(l, &b->ff2_b, bp, "ff.net.2.bias", in);
    }
    if (linear_proj) {
        GET(l, &t->pout_w, p, "proj_out.weight", ch, in);
    } else {
        GET(l, &t->pout_w, p, "proj_out.weight", ch, in, 1, 1);
    }
    GET(l, &t->pout_b, p, "proj_out.bias", ch);
}

void sd_transformer2d_free(sd_transformer2d *t)
{
    if (!t)
        return;
    free(t->blocks);
    t->blocks = NULL;
    t->n_layers = 0;
}

/* FeedForward: n [B,N,inner] -> GEGLU proj [B,N,4*inner] -> [B,N,inner]; with h: h += that (fused) */
static sd_tensor feed_forward(sd_ctx *ctx, const sd_tblock *b, sd_tensor n, const sd_tensor *h)
{
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor f = sd_linear_geglu(ctx, n, b->ff1_w, &b->ff1_b); /* value * GELU(gate): [B,N,ff_inner] */
    if (h) {
        sd_linear_add_inplace(ctx, *h, f, b->ff2_w, &b->ff2_b);
        sd_scope_drop(&s);
        return *h;
    }
    return sd_scope_end(&s, sd_linear(ctx, f, b->ff2_w, &b->ff2_b));
}

/* BasicTransformerBlock: h [B,N,inner] -> [B,N,inner]
 *   h += attn1(LN1(h)); h += attn2(LN2(h), context); h += ff(LN3(h))
 * `s` is the caller's scope, which holds h alone: each residual sum replaces it. Without hooks the sums
 * happen in the out-projections (sd_linear_add_inplace); the hooks see each branch's output first. */
static sd_tensor tblock_forward(sd_ctx *ctx, sd_scope *s, const sd_tblock *b, sd_tensor h, sd_tensor context,
                                const sd_kv_pair *kv, const char *name)
{
    const sd_tensor *fuse = ctx->hook && name ? NULL : &h;
    sd_tensor n = sd_layer_norm(ctx, h, b->n1_w, b->n1_b, 1e-5f);
    hook(ctx, n, name, "norm1");
    sd_tensor a = attn_forward(ctx, &b->attn1, n, context, kv, fuse); /* self-attention (or cross: only_cross) */
    hook(ctx, a, name, "attn1");
    h = sd_step(s, fuse ? h : sd_add_inplace(ctx, h, a)); /* h is the scope's only tensor: added in place */

    n = sd_layer_norm(ctx, h, b->n2_w, b->n2_b, 1e-5f);
    hook(ctx, n, name, "norm2");
    a = attn_forward(ctx, &b->attn2, n, context, kv, fuse); /* cross-attention on the prompt */
    hook(ctx, a, name, "attn2");
    h = sd_step(s, fuse ? h : sd_add_inplace(ctx, h, a));

    n = sd_layer_norm(ctx, h, b->n3_w, b->n3_b, 1e-5f);
    hook(ctx, n, name, "norm3");
    sd_tensor f = feed_forward(ctx, b, n, fuse);
    hook(ctx, f, name, "ff");
    h = sd_step(s, fuse ? h : sd_add_inplace(ctx, h, f));
    hook(ctx, h, name, NULL);
    return h;
}

/* Transformer2DModel: x [B,C,H,W] -> GN -> proj_in -> tokens [B,H*W,inner] -> transformer blocks ->
 * proj_out -> [B,C,H,W] + x (proj_in/out are 1x1 convs on [B,C,H,W], or linears on the tokens) */
sd_tensor sd_transformer2d_forward(sd_ctx *ctx, const sd_transformer2d *t, sd_tensor x, sd_tensor context,
                                   const sd_kv_pair *kv, const char *name)
{
    if (!sd_ok(ctx))
        return x;
    if (x.ndim != 4 || x.ne[1] != t->ch)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "Transformer2DModel %s: input must be [B,%lld,H,W]",
                           name ? name : "", (long long)t->ch);
    int64_t B = x.ne[0], H = x.ne[2], W = x.ne[3], N = H * W;
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor h = sd_group_norm(ctx, x, t->norm_w, t->norm_b, t->groups, 1e-6f, false); /* [B,C,H,W] */
    hook(ctx, h, name, "norm");
    if (!t->linear_proj) {
        h = sd_conv2d(ctx, h, t->pin_w, &t->pin_b, 1, 0); /* [B,inner,H,W] */
        hook(ctx, h, name, "proj_in");
        h = sd_reshape3(ctx, sd_permute(ctx, h, 0, 2, 3, 1), B, N, t->inner); /* [B,N,inner] */
    } else {
        h = sd_reshape3(ctx, sd_permute(ctx, h, 0, 2, 3, 1), B, N, t->ch); /* [B,N,C] */
        h = sd_linear(ctx, h, t->pin_w, &t->pin_b);                         /* [B,N,inner] */
        hook(ctx, h, name, "proj_in");
    }
    h = sd_step(&s, h);
    char buf[256];
    for (int i = 0; i < t->n_layers; i++)
        h = tblock_forward(ctx, &s, &t->blocks[i], h, context, kv,
                           subname(ctx, buf, sizeof buf, name, "transformer_blocks.%d", i));
    if (!t->linear_proj) {
        h = sd_permute(ctx, sd_reshape4(ctx, h, B, H, W, t->inner), 0, 3, 1, 2); /* [B,inner,H,W] */
        h = sd_conv2d(ctx, h, t->pout_w, &t->pout_b, 1, 0);                     /* [B,C,H,W] */
        hook(ctx, h, name, "proj_out");
    } else {
        h = sd_linear(ctx, h, t->pout_w, &t->pout_b); /* [B,N,C] */
        hook(ctx, h, name, "proj_out");
        h = sd_permute(ctx, sd_reshape4(ctx, h, B, H, W, t->ch), 0, 3, 1, 2); /* [B,C,H,W] */
    }
    h = sd_add(ctx, h, x);
    hook(ctx, h, name, NULL);
    return sd_scope_end(&s, h);
}

/* ------------------------------------------------------------------ UNet down / mid blocks */

void sd_down_block_load(sd_wload *l, sd_down_block *d, const char *p, const sd_level *lv, int *kvc)
{
    memset(d, 0, sizeof *d);
    if (l->status != SD_OK)
        return;
    d->n = lv->n;
    d->res = sd_calloc((size_t)d->n, sizeof *d->res);
    d->attn = lv->cross ? sd_calloc((size_t)d->n, sizeof *d->attn) : NULL;
    if (!d->res || (lv->cross && !d->attn)) {
        l->status = SD_ERR_OUT_OF_MEMORY;
        return;
    }
    char q[200];
    for (int j = 0; j < d->n; j++) {
        snprintf(q, sizeof q, "%s.resnets.%d", p, j);
        sd_resnet_load(l, &d->res[j], q, j ? lv->cout : lv->cin, lv->cout, lv->temb_dim, lv->groups, lv->eps, 1.0f);
        if (d->attn) {
            snprintf(q, sizeof q, "%s.attentions.%d", p, j);
            int64_t depth = lv->tlayers_per ? lv->tlayers_per[j] : lv->tlayers;
            sd_transformer2d_load(l, &d->attn[j], q, lv->cout, lv->heads, depth, lv->ctx_dim, lv->only_cross,
                                  lv->linear_proj, lv->groups, kvc);
        }
    }
    if (lv->has_down) {
        d->has_down = true;
        snprintf(q, sizeof q, "%s.downsamplers.0", p);
        sd_downsample_load(l, &d->down, q, lv->cout, lv->down_pad);
    }
}

void sd_down_block_free(sd_down_block *d)
{
    if (d->attn)
        for (int j = 0; j < d->n; j++)
            sd_transformer2d_free(&d->attn[j]);
    free(d->attn);
    free(d->res);
    memset(d, 0, sizeof *d);
}

sd_tensor sd_down_layer_forward(sd_ctx *ctx, const sd_down_block *d, int index, int j, sd_tensor h,
                                const sd_tensor *semb, sd_tensor context, const sd_kv_pair *kv)
{
    char name[160];
    h = sd_resnet_forward(ctx, &d->res[j], h, semb); /* [B,cout,h,w] */
    if (ctx->hook)
        sd_hookf(ctx, h, "down_blocks.%d.resnets.%d", index, j);
    if (d->attn) { /* [B,cout,h,w] -> [B,cout,h,w] */
        if (ctx->hook)
            snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", index, j);
        h = sd_transformer2d_forward(ctx, &d->attn[j], h, context, kv, ctx->hook ? name : NULL);
    }
    return h;
}

void sd_mid_block_load(sd_wload *l, sd_mid_block *m, const char *p, const sd_level *lv, float out_scale, int *kvc)
{
    memset(m, 0, sizeof *m);
    char q[200];
    snprintf(q, sizeof q, "%s.resnets.0", p);
    sd_resnet_load(l, &m->res[0], q, lv->cout, lv->cout, lv->temb_dim, lv->groups, lv->eps, out_scale);
    snprintf(q, sizeof q, "%s.attentions.0", p);
    sd_transformer2d_load(l, &m->attn, q, lv->cout, lv->heads, lv->tlayers, lv->ctx_dim, false, lv->linear_proj,
                          lv->groups, kvc);
    snprintf(q, sizeof q, "%s.resnets.1", p);
    sd_resnet_load(l, &m->res[1], q, lv->cout, lv->cout, lv->temb_dim, lv->groups, lv->eps, out_scale);
}

void sd_mid_block_free(sd_mid_block *m) { sd_transformer2d_free(&m->attn); }

sd_tensor sd_mid_block_forward(sd_ctx *ctx, const sd_mid_block *m, sd_tensor h, const sd_tensor *semb,
                               sd_tensor context, const sd_kv_pair *kv)
{
    h = sd_resnet_forward(ctx, &m->res[0], h, semb);
    h = sd_transformer2d_forward(ctx, &m->attn, h, context, kv, ctx->hook ? "mid_block.attentions.0" : NULL);
    return sd_resnet_forward(ctx, &m->res[1], h, semb);
}
