#include "models/unet.h"
#include "models/blocks.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================== model */

typedef struct unet_up {
    int n;
    sd_resnet *res;
    sd_transformer2d *attn; /* NULL for UpBlock2D */
    bool has_up;
    sd_resample up;
} unet_up;

struct sd_unet {
    sd_unet_config cfg;
    sd_backend *be;
    sd_tensor conv_in_w, conv_in_b, t1_w, t1_b, t2_w, t2_b, cond_w;
    sd_tensor a1_w, a1_b, a2_w, a2_b; /* add_embedding (SDXL text_time) */
    sd_down_block down[SD_UNET_MAX_BLOCKS];
    sd_mid_block mid;
    unet_up up[SD_UNET_MAX_BLOCKS];
    sd_tensor norm_out_w, norm_out_b, conv_out_w, conv_out_b;
    int n_skips;
    int n_kv;
    const sd_attn **kv_attn; /* cross-attentions by cache slot */
    sd_wslot *slots;         /* every loaded weight handle by name (sd_unet_for_each_weight) */
    size_t n_slots;
};

struct sd_unet_kv {
    int64_t batch, seq;
    int64_t cap; /* rows the memory holds (sd_unet_kv_gather uses fewer) */
    sd_dtype dt;
    int n;
    sd_kv_pair *pairs;
};

const sd_unet_config *sd_unet_get_config(const sd_unet *u) { return &u->cfg; }
int sd_unet_num_skips(const sd_unet *u) { return u ? u->n_skips : 0; }

void sd_unet_free(sd_unet *u)
{
    if (!u)
        return;
    for (int i = 0; i < SD_UNET_MAX_BLOCKS; i++) {
        sd_down_block_free(&u->down[i]);
        if (u->up[i].attn)
            for (int j = 0; j < u->up[i].n; j++)
                sd_transformer2d_free(&u->up[i].attn[j]);
        free(u->up[i].attn);
        free(u->up[i].res);
    }
    sd_mid_block_free(&u->mid);
    free(u->kv_attn);
    sd_wslots_free(u->slots, u->n_slots);
    free(u);
}

static void register_kv(sd_unet *u, const sd_transformer2d *t)
{
    for (int b = 0; b < t->n_layers; b++) {
        const sd_attn *a[2] = {&t->blocks[b].attn1, &t->blocks[b].attn2};
        for (int k = 0; k < 2; k++)
            if (a[k]->kv_index >= 0 && a[k]->kv_index < u->n_kv)
                u->kv_attn[a[k]->kv_index] = a[k];
    }
}

#define P(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

/* transformer depth of attention j of up block i (down blocks and the mid block: sd_level) */
static int64_t depth_up(const sd_unet_config *c, int i, int j)
{
    return c->per_layer_depth ? c->up_depth[i][j] : c->transformer_layers[c->n_blocks - 1 - i];
}

void sd_unet_level(const sd_unet_config *c, int i, sd_level *lv)
{
    memset(lv, 0, sizeof *lv);
    lv->cin = c->block_out_channels[i > 0 ? i - 1 : 0];
    lv->cout = c->block_out_channels[i];
    lv->n = (int)c->layers_per_block[i];
    lv->temb_dim = c->time_embed_dim;
    lv->cross = c->down_cross[i];
    lv->heads = c->num_heads[i];
    lv->tlayers = c->transformer_layers[i];
    lv->ctx_dim = c->cross_attention_dim[i];
    lv->only_cross = c->only_cross_attention[i];
    lv->linear_proj = c->use_linear_projection;
    lv->has_down = i < c->n_blocks - 1;
    lv->down_pad = (int)c->downsample_padding;
    lv->groups = (int)c->norm_num_groups;
    lv->eps = (float)c->norm_eps;
    lv->tlayers_per = c->per_layer_depth ? c->down_depth[i] : NULL;
}

static void build(sd_wload *l, sd_unet *u)
{
    const sd_unet_config *c = &u->cfg;
    int n = c->n_blocks;
    int64_t ted = c->time_embed_dim, c0 = c->block_out_channels[0];
    int g = (int)c->norm_num_groups;
    float eps = (float)c->norm_eps;
    int kvc = 0;
    char p[160];

    sd_wl_get(l, &u->conv_in_w, SD_SHAPE(c0, c->in_channels, c->conv_in_kernel, c->conv_in_kernel),
              "conv_in.weight");
    sd_wl_get(l, &u->conv_in_b, SD_SHAPE(c0), "conv_in.bias");
    sd_wl_get(l, &u->t1_w, SD_SHAPE(ted, c0), "time_embedding.linear_1.weight");
    sd_wl_get(l, &u->t1_b, SD_SHAPE(ted), "time_embedding.linear_1.bias");
    sd_wl_get(l, &u->t2_w, SD_SHAPE(ted, ted), "time_embedding.linear_2.weight");
    sd_wl_get(l, &u->t2_b, SD_SHAPE(ted), "time_embedding.linear_2.bias");
    if (c->time_cond_proj_dim > 0)
        sd_wl_get(l, &u->cond_w, SD_SHAPE(c0, c->time_cond_proj_dim), "time_embedding.cond_proj.weight");
    if (c->add_text_time) {
        sd_wl_get(l, &u->a1_w, SD_SHAPE(ted, c->projection_class_embeddings_input_dim),
                  "add_embedding.linear_1.weight");
        sd_wl_get(l, &u->a1_b, SD_SHAPE(ted), "add_embedding.linear_1.bias");
        sd_wl_get(l, &u->a2_w, SD_SHAPE(ted, ted), "add_embedding.linear_2.weight");
        sd_wl_get(l, &u->a2_b, SD_SHAPE(ted), "add_embedding.linear_2.bias");
    }

    u->n_skips = 1;
    for (int i = 0; i < n && l->status == SD_OK; i++) {
        sd_level lv;
        sd_unet_level(c, i, &lv);
        sd_down_block_load(l, &u->down[i], P(p, "down_blocks.%d", i), &lv, &kvc);
        u->n_skips += lv.n + (lv.has_down ? 1 : 0);
    }

    if (c->has_mid_block) {
        sd_level lv;
        sd_unet_level(c, n - 1, &lv);
        sd_mid_block_load(l, &u->mid, "mid_block", &lv, (float)c->mid_block_scale_factor, &kvc);
    }

    int64_t out_ch = c->block_out_channels[n - 1];
    for (int i = 0; i < n && l->status == SD_OK; i++) {
        unet_up *up = &u->up[i];
        int r = n - 1 - i; /* the matching down block */
        int64_t prev = out_ch;
        out_ch = c->block_out_channels[r];
        int64_t in_ch = c->block_out_channels[r > 0 ? r - 1 : 0];
        up->n = (int)c->layers_per_block[r] + 1;
        up->res = sd_calloc((size_t)up->n, sizeof *up->res);
        up->attn = c->up_cross[i] ? sd_calloc((size_t)up->n, sizeof *up->attn) : NULL;
        if (!up->res || (c->up_cross[i] && !up->attn)) {
            l->status = SD_ERR_OUT_OF_MEMORY;
            return;
        }
        for (int j = 0; j < up->n; j++) {
            int64_t skip = j == up->n - 1 ? in_ch : out_ch;
            int64_t rin = j == 0 ? prev : out_ch;
            sd_resnet_load(l, &up->res[j], P(p, "up_blocks.%d.resnets.%d", i, j), rin + skip, out_ch, ted, g, eps,
                           1.0f);
            if (up->attn)
                sd_transformer2d_load(l, &up->attn[j], P(p, "up_blocks.%d.attentions.%d", i, j), out_ch,
                                      c->num_heads[r], depth_up(c, i, j), c->cross_attention_dim[r],
                                      c->only_cross_attention[r], c->use_linear_projection, g, &kvc);
        }
        if (i < n - 1) {
            up->has_up = true;
            sd_upsample_load(l, &up->up, P(p, "up_blocks.%d.upsamplers.0", i), out_ch);
        }
    }

    sd_wl_get(l, &u->norm_out_w, SD_SHAPE(c0), "conv_norm_out.weight");
    sd_wl_get(l, &u->norm_out_b, SD_SHAPE(c0), "conv_norm_out.bias");
    sd_wl_get(l, &u->conv_out_w, SD_SHAPE(c->out_channels, c0, c->conv_out_kernel, c->conv_out_kernel),
              "conv_out.weight");
    sd_wl_get(l, &u->conv_out_b, SD_SHAPE(c->out_channels), "conv_out.bias");
    if (l->status != SD_OK)
        return;

    /* cache slots: every cross-attention in forward order */
    u->n_kv = kvc;
    u->kv_attn = sd_calloc((size_t)(kvc ? kvc : 1), sizeof *u->kv_attn);
    if (!u->kv_attn) {
        l->status = SD_ERR_OUT_OF_MEMORY;
        return;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; u->down[i].attn && j < u->down[i].n; j++)
            register_kv(u, &u->down[i].attn[j]);
    if (c->has_mid_block)
        register_kv(u, &u->mid.attn);
    for (int i = 0; i < n; i++)
        for (int j = 0; u->up[i].attn && j < u->up[i].n; j++)
            register_kv(u, &u->up[i].attn[j]);
}

static sd_status build_model(sd_wload *l, const sd_unet_config *cfg, sd_backend *be, sd_unet **out)
{
    *out = NULL;
    if (!cfg || cfg->n_blocks < 1 || cfg->n_blocks > SD_UNET_MAX_BLOCKS)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "UNet config: invalid number of blocks");
    sd_unet *u = sd_calloc(1, sizeof *u);
    if (!u)
        return SD_ERR_OUT_OF_MEMORY;
    u->cfg = *cfg;
    u->be = be;
    build(l, u);
    u->slots = l->slots;
    u->n_slots = l->n_slots;
    l->slots = NULL;
    l->n_slots = l->cap_slots = 0;
    if (l->status != SD_OK) {
        sd_unet_free(u);
        return l->status;
    }
    *out = u;
    return SD_OK;
}

sd_status sd_unet_load(sd_weights *w, const sd_unet_config *cfg, sd_unet **out)
{
    if (!w || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_unet_load: weights and output are required");
    sd_wload l = {.w = w, .record = true};
    return build_model(&l, cfg, w->be, out);
}

sd_status sd_unet_for_each_weight(sd_unet *u, sd_weight_visit_fn fn, void *user)
{
    for (size_t i = 0; u && i < u->n_slots; i++)
        SD_TRY(fn(user, u->slots[i].name, u->slots[i].t));
    return SD_OK;
}

sd_status sd_unet_list_tensors(const sd_unet_config *cfg, sd_unet_tensor_fn fn, void *user)
{
    sd_wload l = {.fn = fn, .user = user};
    sd_unet *u;
    SD_TRY(build_model(&l, cfg, NULL, &u));
    sd_unet_free(u);
    return SD_OK;
}

/* ================================================================== K/V cache */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t kv_slot_bytes(const sd_attn *a, int64_t batch, int64_t seq, sd_dtype dt)
{
    return align64((size_t)batch * (size_t)seq * (size_t)a->inner * sd_dtype_size(dt));
}

size_t sd_unet_kv_bytes(const sd_unet *u, int64_t batch, int64_t seq_len, sd_dtype dt)
{
    if (!u || batch <= 0 || seq_len <= 0)
        return 0;
    size_t total = 0;
    for (int i = 0; i < u->n_kv; i++)
        total += 2 * kv_slot_bytes(u->kv_attn[i], batch, seq_len, dt);
    return total;
}

sd_status sd_unet_kv_init(sd_unet_kv **out, const sd_unet *u, void *memory, int64_t batch, int64_t seq_len,
                          sd_dtype dt)
{
    *out = NULL;
    if (!u || batch <= 0 || seq_len <= 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "UNet K/V cache: batch (%lld) and sequence length (%lld) must be "
                       "positive", (long long)batch, (long long)seq_len);
    if (u->be && dt != u->be->act_dtype)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "UNet K/V cache: dtype %s must be the backend's activation dtype %s",
                       sd_dtype_name(dt), sd_dtype_name(u->be->act_dtype));
    if (!memory && u->n_kv)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "UNet K/V cache: no memory given (need %zu bytes)",
                       sd_unet_kv_bytes(u, batch, seq_len, dt));
    sd_unet_kv *kv = sd_calloc(1, sizeof *kv);
    if (!kv)
        return SD_ERR_OUT_OF_MEMORY;
    kv->pairs = sd_calloc((size_t)(u->n_kv ? u->n_kv : 1), sizeof *kv->pairs);
    if (!kv->pairs) {
        free(kv);
        return SD_ERR_OUT_OF_MEMORY;
    }
    kv->batch = batch;
    kv->cap = batch;
    kv->seq = seq_len;
    kv->dt = dt;
    kv->n = u->n_kv;
    uint8_t *p = memory;
    for (int i = 0; i < u->n_kv; i++) {
        const sd_attn *a = u->kv_attn[i];
        int64_t ne[3] = {batch, seq_len, a->inner};
        size_t sz = kv_slot_bytes(a, batch, seq_len, dt);
        kv->pairs[i].k = sd_tensor_make(p, dt, 3, ne);
        kv->pairs[i].v = sd_tensor_make(p + sz, dt, 3, ne);
        p += 2 * sz;
    }
    *out = kv;
    return SD_OK;
}

void sd_unet_kv_free(sd_unet_kv *kv)
{
    if (!kv)
        return;
    free(kv->pairs);
    free(kv);
}

sd_status sd_unet_kv_set_batch(sd_unet_kv *kv, int64_t batch)
{
    if (!kv || batch < 1 || batch > kv->cap)
        return sd_fail(SD_ERR_SHAPE, "UNet K/V cache: batch %lld outside 1..%lld", (long long)batch,
                       kv ? (long long)kv->cap : 0LL);
    kv->batch = batch;
    for (int i = 0; i < kv->n; i++) {
        kv->pairs[i].k.ne[0] = batch;
        kv->pairs[i].v.ne[0] = batch;
    }
    return SD_OK;
}

void sd_unet_kv_gather(sd_ctx *ctx, sd_unet_kv *dst, const sd_unet_kv *const *srcs, const int64_t *rows_per_src, int n)
{
    if (!sd_ok(ctx))
        return;
    if (!dst || n < 1 || !srcs || !rows_per_src) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet K/V gather: no destination or no sources");
        return;
    }
    int64_t total = 0;
    for (int j = 0; j < n; j++) {
        const sd_unet_kv *s = srcs[j];
        if (!s || s->n != dst->n || s->seq != dst->seq || s->dt != dst->dt) {
            sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet K/V gather: source %d was made for another model, "
                        "sequence length or dtype than the group cache", j);
            return;
        }
        if (rows_per_src[j] < 1 || (s->batch != 1 && s->batch != rows_per_src[j])) {
            sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet K/V gather: source %d has batch %lld, cannot give %lld rows", j,
                        (long long)s->batch, (long long)rows_per_src[j]);
            return;
        }
        total += rows_per_src[j];
    }
    if (total > dst->cap) {
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet K/V gather: %lld rows exceed the cache's %lld", (long long)total,
                    (long long)dst->cap);
        return;
    }
    dst->batch = total; /* the pairs now view the first `total` rows of their slots */
    for (int i = 0; i < dst->n; i++) {
        dst->pairs[i].k.ne[0] = total;
        dst->pairs[i].v.ne[0] = total;
    }
    for (int i = 0; i < dst->n && sd_ok(ctx); i++) {
        int64_t r = 0;
        for (int j = 0; j < n && sd_ok(ctx); j++) {
            const sd_kv_pair *sp = &srcs[j]->pairs[i];
            if (srcs[j]->batch == rows_per_src[j]) {
                sd_copy_into(ctx, sd_view_rows(ctx, dst->pairs[i].k, r, rows_per_src[j]), sp->k);
                sd_copy_into(ctx, sd_view_rows(ctx, dst->pairs[i].v, r, rows_per_src[j]), sp->v);
            } else { /* batch 1: the same prompt for every row */
                for (int64_t q = 0; q < rows_per_src[j]; q++) {
                    sd_copy_into(ctx, sd_view_rows(ctx, dst->pairs[i].k, r + q, 1), sp->k);
                    sd_copy_into(ctx, sd_view_rows(ctx, dst->pairs[i].v, r + q, 1), sp->v);
                }
            }
            r += rows_per_src[j];
        }
    }
}

void sd_unet_kv_compute(sd_ctx *ctx, const sd_unet *u, sd_tensor context, sd_unet_kv *kv)
{
    if (!sd_ok(ctx))
        return;
    if (!u || !kv || kv->n != u->n_kv) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet K/V cache: cache was made for another model");
        return;
    }
    if (context.ndim != 3 || context.ne[0] != kv->batch || context.ne[1] != kv->seq) {
        char s[96];
        sd_shape_str(&context, s, sizeof s);
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet K/V cache: context %s must be [%lld,%lld,D] as the cache was made for",
                    s, (long long)kv->batch, (long long)kv->seq);
        return;
    }
    for (int i = 0; i < kv->n && sd_ok(ctx); i++) {
        const sd_attn *a = u->kv_attn[i];
        if (context.ne[2] != a->kvdim) {
            sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet K/V cache: context width %lld, the model's cross_attention_dim is "
                        "%lld", (long long)context.ne[2], (long long)a->kvdim);
            return;
        }
        sd_scope s = sd_scope_begin(ctx);
        sd_tensor k, v;
        sd_attn_project_kv(ctx, a, context, &k, &v); /* context [B,S,D] -> [B,S,inner] each */
        sd_copy_into(ctx, kv->pairs[i].k, k);
        sd_copy_into(ctx, kv->pairs[i].v, v);
        sd_scope_drop(&s);
    }
}

/* ================================================================== forward */

static const char *nm(const sd_ctx *ctx, char *buf, size_t n, const char *fmt, ...) SD_PRINTF(4, 5);
static const char *nm(const sd_ctx *ctx, char *buf, size_t n, const char *fmt, ...)
{
    if (!ctx->hook)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return buf;
}

/* A skip connection: a down-block output and the scope that holds it on the arena. Popping one
 * ends its scope with the up-block output, which replaces the skip and everything above it. */
typedef struct skip {
    sd_tensor t;
    sd_scope s;
} skip;

sd_tensor sd_unet_forward(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                          const sd_tensor *timestep_cond, const sd_unet_kv *kv)
{
    return sd_unet_forward_added(ctx, u, x, timesteps, context, timestep_cond, kv, NULL);
}

/* SDXL: add_embedding(cat([text_embeds, add_time_proj(time_ids.flatten()).reshape(B, 6*D)], -1)):
 * text_embeds [B,P], time_ids [B,6] -> [B,6*D] -> cat [B,P+6*D] -> MLP [B,T] */
static sd_tensor added_embedding(sd_ctx *ctx, const sd_unet *u, int64_t B, const sd_unet_added *a)
{
    const sd_unet_config *c = &u->cfg;
    int64_t D = c->addition_time_embed_dim, P = c->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * D;
    if (!a)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet: this is an SDXL UNet (addition_embed_type "
                           "'text_time'): it needs the pooled text embedding and the time ids");
    const sd_tensor *te = &a->text_embeds, *ti = &a->time_ids;
    if (te->ndim != 2 || te->ne[0] != B || te->ne[1] != P) {
        char s[96];
        sd_shape_str(te, s, sizeof s);
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: text_embeds %s must be [%lld,%lld] (the UNet's "
                           "projection_class_embeddings_input_dim %lld - 6 x addition_time_embed_dim %lld)", s,
                           (long long)B, (long long)P, (long long)c->projection_class_embeddings_input_dim,
                           (long long)D);
    }
    if (ti->ndim != 2 || ti->ne[0] != B || ti->ne[1] != SD_UNET_TIME_IDS || ti->dtype != SD_F32)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: time_ids must be F32 [%lld,%d]", (long long)B,
                           SD_UNET_TIME_IDS);
    int64_t nid = B * SD_UNET_TIME_IDS;
    sd_tensor tp = sd_timestep_embedding(ctx, sd_reshape(ctx, *ti, 1, &nid), (int)D, c->flip_sin_to_cos,
                                         (float)c->freq_shift);
    sd_hook(ctx, "add_time_proj", tp);
    sd_tensor ae = sd_concat(ctx, *te, sd_reshape2(ctx, tp, B, SD_UNET_TIME_IDS * D), 1);
    ae = sd_linear(ctx, ae, u->a1_w, &u->a1_b);
    ae = sd_linear(ctx, sd_silu(ctx, ae), u->a2_w, &u->a2_b);
    sd_hook(ctx, "add_embedding", ae);
    return ae;
}

sd_tensor sd_unet_forward_added(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                                const sd_tensor *timestep_cond, const sd_unet_kv *kv, const sd_unet_added *added)
{
    return sd_unet_forward_ex(ctx, u, x, timesteps, context, timestep_cond, kv, added, NULL);
}

/* residual j must have skip j's shape and dtype exactly (no broadcasting) */
static bool residual_fits(sd_ctx *ctx, sd_tensor r, sd_tensor sk, const char *what, int j)
{
    bool ok = r.ndim == sk.ndim && r.dtype == sk.dtype;
    for (int d = 0; ok && d < r.ndim; d++)
        ok = r.ne[d] == sk.ne[d];
    if (!ok) {
        char a[96], b[96];
        sd_shape_str(&r, a, sizeof a);
        sd_shape_str(&sk, b, sizeof b);
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: ControlNet %s %d is %s %s, the UNet's is %s %s (a ControlNet made for "
                    "another base model?)", what, j, sd_dtype_name(r.dtype), a, sd_dtype_name(sk.dtype), b);
    }
    return ok;
}

sd_tensor sd_unet_forward_ex(sd_ctx *ctx, const sd_unet *u, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                             const sd_tensor *timestep_cond, const sd_unet_kv *kv, const sd_unet_added *added,
                             const sd_unet_residuals *res)
{
    sd_tensor none = {0};
    if (!sd_ok(ctx))
        return none;
    if (!u)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "sd_unet_forward: no model");
    const sd_unet_config *c = &u->cfg;
    int n = c->n_blocks;
    char sx[96];
    sd_shape_str(&x, sx, sizeof sx);
    if (x.ndim != 4 || x.ne[1] != c->in_channels || x.ne[0] < 1)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: sample %s must be [B,%lld,H,W]", sx, (long long)c->in_channels);
    int64_t B = x.ne[0], H = x.ne[2], W = x.ne[3];
    int64_t f = (int64_t)1 << (n - 1);
    if (H % f || W % f)
        return sd_ctx_fail(ctx, SD_ERR_UNSUPPORTED,
                           "UNet: sample %s: height and width must be multiples of %lld (2^(number of blocks - 1))",
                           sx, (long long)f);
    if (timesteps.ndim != 1 || timesteps.ne[0] != B || timesteps.dtype != SD_F32)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: timesteps must be F32 [%lld] (one per batch row)",
                           (long long)B);
    if (timestep_cond) {
        if (c->time_cond_proj_dim <= 0)
            return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT,
                               "UNet: timestep_cond given but the model has no time_cond_proj_dim (not an LCM UNet)");
        if (timestep_cond->ndim != 2 || timestep_cond->ne[0] != B || timestep_cond->ne[1] != c->time_cond_proj_dim)
            return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: timestep_cond must be [%lld,%lld]", (long long)B,
                               (long long)c->time_cond_proj_dim);
    }
    if (kv) {
        if (kv->n != u->n_kv)
            return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet: the K/V cache was made for another model");
        if (kv->batch != B && kv->batch != 1)
            return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: K/V cache batch %lld must be 1 or the sample batch %lld",
                               (long long)kv->batch, (long long)B);
    } else if (u->n_kv) {
        if (context.ndim != 3 || (context.ne[0] != B && context.ne[0] != 1) || context.ne[1] < 1) {
            char sc[96];
            sd_shape_str(&context, sc, sizeof sc);
            return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: encoder_hidden_states %s must be [%lld or 1,S,%lld]", sc,
                               (long long)B, (long long)c->cross_attention_dim[0]);
        }
    }
    if (added && !c->add_text_time)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "UNet: text_embeds / time_ids given but the UNet has no "
                           "'text_time' added conditioning (not an SDXL UNet)");
    if (res && (!c->has_mid_block || res->n_down != u->n_skips || !res->down))
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "UNet: %d ControlNet down residuals given, the UNet has %d skip "
                           "connections%s", res->n_down, u->n_skips, c->has_mid_block ? "" : " and no mid block");
    const sd_kv_pair *kvp = kv ? kv->pairs : NULL;
    /* the skip stack: a fixed array, no allocation per call (not in the model: forwards on one model
     * may run on several threads at once); the config rules bound the count (SD_UNET_MAX_SKIPS) */
    if (u->n_skips > SD_UNET_MAX_SKIPS)
        return sd_ctx_fail(ctx, SD_ERR_INTERNAL, "UNet: %d skip connections, the stack holds %d", u->n_skips,
                           SD_UNET_MAX_SKIPS);
    skip st[SD_UNET_MAX_SKIPS];
    int ns = 0;
    char name[160];
    sd_scope s0 = sd_scope_begin(ctx); /* the whole forward: only the output survives it */

    /* time embedding: timesteps [B] -> sinusoidal [B,C0] -> MLP [B,T]; resnets only ever use SiLU(emb) */
    sd_tensor temb = sd_timestep_embedding(ctx, timesteps, (int)c->block_out_channels[0], c->flip_sin_to_cos,
                                           (float)c->freq_shift);
    sd_hook(ctx, "time_proj", temb);
    if (timestep_cond) /* LCM: + cond_proj(w embedding) [B,C0] */
        temb = sd_add(ctx, temb, sd_linear(ctx, *timestep_cond, u->cond_w, NULL));
    sd_tensor emb = sd_linear(ctx, temb, u->t1_w, &u->t1_b);
    emb = sd_linear(ctx, sd_silu(ctx, emb), u->t2_w, &u->t2_b);
    sd_hook(ctx, "time_embedding", emb);
    if (c->add_text_time) /* SDXL: + add_embedding(text_embeds, time_ids) [B,T] */
        emb = sd_add(ctx, emb, added_embedding(ctx, u, B, added));
    sd_tensor semb = sd_step(&s0, sd_silu(ctx, emb)); /* [B,T] */

    /* conv_in: x [B,Cin,H,W] -> [B,C0,H,W], the first skip */
    sd_scope sk = sd_scope_begin(ctx);
    sd_tensor h = x;
    if (c->center_input_sample)
        h = sd_affine(ctx, h, 2.0f, -1.0f);
    h = sd_step(&sk, sd_conv2d(ctx, h, u->conv_in_w, &u->conv_in_b, 1, (int)(c->conv_in_kernel - 1) / 2));
    sd_hook(ctx, "conv_in", h);
    st[ns++] = (skip){h, sk};

    /* down block i: [B,C(i-1),h,w] -> resnets (+ transformers) [B,Ci,h,w] -> downsample [B,Ci,h/2,w/2];
     * every output is a skip connection, each in its own scope, stacked in order on the arena */
    for (int i = 0; i < n && sd_ok(ctx); i++) {
        const sd_down_block *d = &u->down[i];
        int k = 0;
        for (int j = 0; j < d->n; j++) {
            sk = sd_scope_begin(ctx);
            h = sd_step(&sk, sd_down_layer_forward(ctx, d, i, j, h, &semb, context, kvp));
            sd_hookf(ctx, h, "down_blocks.%d.res_samples.%d", i, k++);
            st[ns++] = (skip){h, sk};
        }
        if (d->has_down) {
            sk = sd_scope_begin(ctx);
            h = sd_step(&sk, sd_downsample_forward(ctx, &d->down, h));
            sd_hookf(ctx, h, "down_blocks.%d.downsamplers.0", i);
            sd_hookf(ctx, h, "down_blocks.%d.res_samples.%d", i, k++);
            st[ns++] = (skip){h, sk};
        }
        sd_hookf(ctx, h, "down_blocks.%d", i);
    }

    /* mid: [B,Cn,h,w] -> resnet, transformer, resnet -> [B,Cn,h,w] */
    sd_scope hs = st[ns - 1].s; /* the scope that holds h */
    if (c->has_mid_block && sd_ok(ctx)) {
        hs = sd_scope_begin(ctx);
        h = sd_step(&hs, sd_mid_block_forward(ctx, &u->mid, h, &semb, context, kvp));
        sd_hook(ctx, "mid_block", h);
    }

    /* ControlNet residuals (diffusers down_block_additional_residuals / mid_block_additional_residual):
     * after the down path and the mid block, skip j += down[j] in place (the up path reads the sums; the
     * mid block read the plain last down output) and the mid output += mid */
    if (res && sd_ok(ctx)) {
        for (int j = 0; j < ns; j++)
            if (!residual_fits(ctx, res->down[j], st[j].t, "down residual", j))
                break;
        if (sd_ok(ctx))
            residual_fits(ctx, res->mid, h, "mid residual", 0);
        for (int j = 0; j < ns && sd_ok(ctx); j++) {
            sd_scope t = sd_scope_begin(ctx);
            sd_copy_into(ctx, st[j].t, sd_add(ctx, st[j].t, res->down[j])); /* [B,Cj,hj,wj] */
            sd_scope_drop(&t);
        }
        h = sd_step(&hs, sd_add(ctx, h, res->mid)); /* [B,Cn,h,w] */
    }

    /* up block i: per resnet, cat(h, popped skip) on channels -> resnet (+ transformer) [B,Ci,h,w], which
     * ends the skip's scope (replaces the skip and all above it); then upsample [B,Ci,2h,2w] */
    for (int i = 0; i < n && sd_ok(ctx); i++) {
        const unet_up *up = &u->up[i];
        for (int j = 0; j < up->n; j++) {
            if (ns <= 0) {
                sd_ctx_fail(ctx, SD_ERR_INTERNAL, "UNet: skip connections exhausted");
                break;
            }
            skip sp = st[--ns];
            sd_tensor cat = sd_concat(ctx, h, sp.t, 1);
            h = sd_resnet_forward(ctx, &up->res[j], cat, &semb);
            if (ctx->hook)
                sd_hookf(ctx, h, "up_blocks.%d.resnets.%d", i, j);
            if (up->attn)
                h = sd_transformer2d_forward(ctx, &up->attn[j], h, context, kvp,
                                             nm(ctx, name, sizeof name, "up_blocks.%d.attentions.%d", i, j));
            h = sd_scope_end(&sp.s, h);
            hs = sp.s;
        }
        if (up->has_up) {
            h = sd_step(&hs, sd_upsample_forward(ctx, &up->up, h));
            sd_hookf(ctx, h, "up_blocks.%d.upsamplers.0", i);
        }
        sd_hookf(ctx, h, "up_blocks.%d", i);
    }

    /* out: GN + SiLU -> conv_out: [B,C0,H,W] -> [B,Cout,H,W] */
    if (ctx->hook) { /* conv_norm_out before its SiLU, for the checker only */
        sd_scope sh = sd_scope_begin(ctx);
        sd_hook(ctx, "conv_norm_out",
                sd_group_norm(ctx, h, u->norm_out_w, u->norm_out_b, (int)c->norm_num_groups, (float)c->norm_eps,
                              false));
        sd_scope_drop(&sh);
    }
    sd_tensor o = sd_group_norm(ctx, h, u->norm_out_w, u->norm_out_b, (int)c->norm_num_groups, (float)c->norm_eps,
                                true);
    o = sd_conv2d(ctx, o, u->conv_out_w, &u->conv_out_b, 1, (int)(c->conv_out_kernel - 1) / 2);
    sd_hook(ctx, "conv_out", o);
    o = sd_scope_end(&s0, o);
    return sd_ok(ctx) ? o : none;
}
