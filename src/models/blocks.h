/* Building blocks shared by the diffusers models: ResnetBlock2D,
 * Downsample2D / Upsample2D, Attention (classic AttnProcessor),
 * BasicTransformerBlock and Transformer2DModel (continuous input).
 *
 * Loading goes through sd_wload, which either fetches tensors from an
 * sd_weights (shape-checked) or only enumerates (name, shape) for tools and
 * tests; its status is sticky, so loaders need no error checks between gets.
 *
 * Forward functions allocate from the ctx arena and return their output kept
 * at the scope mark they took on entry (temporaries released). Hook names are
 * diffusers module paths: pass `name` = the module path (may be NULL when the
 * context has no hook installed).
 */
#ifndef SD_BLOCKS_H
#define SD_BLOCKS_H

#include "backend/ops.h"
#include "models/weights.h"

/* ------------------------------------------------------------------ loading */

typedef void (*sd_wload_fn)(void *user, const char *name, const int64_t *shape, int ndim);

/* (name, handle) of a loaded tensor, recorded for sd_unet_for_each_weight. */
typedef struct sd_wslot {
    char *name;
    sd_tensor *t;
} sd_wslot;

typedef struct sd_wload {
    sd_weights *w;     /* fetch from here, or ... */
    sd_wload_fn fn;    /* ... only report names and shapes (w == NULL) */
    void *user;
    sd_status status;  /* first error */
    bool record;       /* with w: append every loaded (name, handle) to slots */
    sd_wslot *slots;   /* owned by the caller after loading (sd_wslots_free) */
    size_t n_slots, cap_slots;
} sd_wload;

void sd_wslots_free(sd_wslot *slots, size_t n);

/* Loads tensor `fmt...` with `shape` (see sd_weights_get). No-op after an error. */
void sd_wl_get(sd_wload *l, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...) SD_PRINTF(5, 6);

/* ------------------------------------------------------------------ ResnetBlock2D */

typedef struct sd_resnet {
    int64_t cin, cout;
    int groups;
    float eps;
    float out_scale; /* output_scale_factor */
    bool has_temb, has_shortcut;
    sd_tensor norm1_w, norm1_b, conv1_w, conv1_b, temb_w, temb_b;
    sd_tensor norm2_w, norm2_b, conv2_w, conv2_b, short_w, short_b;
} sd_resnet;

/* `prefix` e.g. "down_blocks.0.resnets.1"; temb_dim 0 = no time embedding. */
void sd_resnet_load(sd_wload *l, sd_resnet *r, const char *prefix, int64_t cin, int64_t cout, int64_t temb_dim,
                    int groups, float eps, float out_scale);
/* semb = SiLU(emb) [B, temb_dim] (shared by all resnets) or NULL when !has_temb. */
sd_tensor sd_resnet_forward(sd_ctx *ctx, const sd_resnet *r, sd_tensor x, const sd_tensor *semb);

/* ------------------------------------------------------------------ Down/Upsample2D */

typedef struct sd_resample {
    sd_tensor w, b;
    int pad; /* Downsample2D padding; 0 means F.pad (0,1,0,1) then conv with padding 0 */
} sd_resample;

void sd_downsample_load(sd_wload *l, sd_resample *d, const char *prefix, int64_t ch, int pad); /* prefix.conv.* */
sd_tensor sd_downsample_forward(sd_ctx *ctx, const sd_resample *d, sd_tensor x);
void sd_upsample_load(sd_wload *l, sd_resample *d, const char *prefix, int64_t ch); /* prefix.conv.* */
sd_tensor sd_upsample_forward(sd_ctx *ctx, const sd_resample *d, sd_tensor x); /* nearest x2, conv3x3 */

/* ------------------------------------------------------------------ Attention */

typedef struct sd_attn {
    int64_t heads, head_dim, inner, qdim, kvdim;
    bool cross;   /* K/V come from the context */
    int kv_index; /* slot in a K/V cache (cross only), -1 if none */
    sd_tensor q, k, v, out_w, out_b;
} sd_attn;

/* Pre-projected K and V of one cross-attention: [Bc, S, inner] each. */
typedef struct sd_kv_pair {
    sd_tensor k, v;
} sd_kv_pair;

/* ------------------------------------------------------------------ Transformer2DModel */

typedef struct sd_tblock {
    sd_tensor n1_w, n1_b, n2_w, n2_b, n3_w, n3_b;
    sd_attn attn1, attn2;
    sd_tensor ff1_w, ff1_b, ff2_w, ff2_b; /* GEGLU proj [2*ff, dim], out [dim, ff] */
    int64_t ff_inner;
} sd_tblock;

typedef struct sd_transformer2d {
    int64_t ch, inner, heads, head_dim;
    int groups;
    bool linear_proj;
    sd_tensor norm_w, norm_b, pin_w, pin_b, pout_w, pout_b;
    int n_layers;
    sd_tblock *blocks; /* owned (free with sd_transformer2d_free) */
} sd_transformer2d;

/* *kv_counter: next K/V cache slot, incremented for every cross-attention. */
void sd_transformer2d_load(sd_wload *l, sd_transformer2d *t, const char *prefix, int64_t ch, int64_t heads,
                           int64_t layers, int64_t ctx_dim, bool only_cross, bool linear_proj, int groups,
                           int *kv_counter);
void sd_transformer2d_free(sd_transformer2d *t);
/* x [B,C,H,W]; context [B or 1, S, D] (unused where kv is given); kv = cache
 * slots (indexed by sd_attn.kv_index) or NULL. */
sd_tensor sd_transformer2d_forward(sd_ctx *ctx, const sd_transformer2d *t, sd_tensor x, sd_tensor context,
                                   const sd_kv_pair *kv, const char *name);
/* K/V projections of one cross-attention (for filling a cache). */
void sd_attn_project_kv(sd_ctx *ctx, const sd_attn *a, sd_tensor context, sd_tensor *k, sd_tensor *v);

/* ------------------------------------------------------------------ UNet down / mid blocks
 * CrossAttnDownBlock2D / DownBlock2D and UNetMidBlock2DCrossAttn, shared by UNet2DConditionModel
 * (src/models/unet.c) and ControlNetModel (src/models/controlnet.c), which has the same down path. */

/* The shape of down block i, from a UNet / ControlNet config (sd_unet_level in unet.h). */
typedef struct sd_level {
    int64_t cin, cout;  /* channels into the level's first resnet, and of the level */
    int n;              /* resnets (layers_per_block) */
    int64_t temb_dim;
    bool cross;         /* CrossAttnDownBlock2D: a Transformer2DModel after every resnet */
    int64_t heads, tlayers, ctx_dim;
    const int64_t *tlayers_per; /* transformer depth per layer (n entries; asymmetric UNets), or NULL: tlayers */
    bool only_cross, linear_proj;
    bool has_down;      /* a Downsample2D at the end (every level but the last) */
    int down_pad;
    int groups;
    float eps;
} sd_level;

typedef struct sd_down_block {
    int n;
    sd_resnet *res;
    sd_transformer2d *attn; /* NULL for DownBlock2D */
    bool has_down;
    sd_resample down;
} sd_down_block;

/* prefix e.g. "down_blocks.1"; *kvc as sd_transformer2d_load. */
void sd_down_block_load(sd_wload *l, sd_down_block *d, const char *prefix, const sd_level *lv, int *kvc);
void sd_down_block_free(sd_down_block *d);
/* Layer j of down block `index`: resnet j (+ transformer j): [B,cin or cout,h,w] -> [B,cout,h,w].
 * Hooks "down_blocks.<index>.resnets.<j>" and the transformer's under ".attentions.<j>". */
sd_tensor sd_down_layer_forward(sd_ctx *ctx, const sd_down_block *d, int index, int j, sd_tensor h,
                                const sd_tensor *semb, sd_tensor context, const sd_kv_pair *kv);

typedef struct sd_mid_block {
    sd_resnet res[2];
    sd_transformer2d attn;
} sd_mid_block;

/* UNetMidBlock2DCrossAttn at the last level's shape (lv: cout, heads, tlayers, ctx_dim, linear_proj). */
void sd_mid_block_load(sd_wload *l, sd_mid_block *m, const char *prefix, const sd_level *lv, float out_scale,
                       int *kvc);
void sd_mid_block_free(sd_mid_block *m);
/* [B,C,h,w] -> resnet, transformer ("mid_block.attentions.0"), resnet -> [B,C,h,w] */
sd_tensor sd_mid_block_forward(sd_ctx *ctx, const sd_mid_block *m, sd_tensor h, const sd_tensor *semb,
                               sd_tensor context, const sd_kv_pair *kv);

#endif
