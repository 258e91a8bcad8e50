#include "models/controlnet.h"
#include "models/blocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================== config */

sd_status sd_cnet_config_from(const sd_config *c, sd_cnet_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *cls;
    SD_TRY(sd_config_str(c, "_class_name", NULL, &cls));
    if (cls && strcmp(cls, "ControlNetModel"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: '_class_name' is \"%s\", expected ControlNetModel%s", c->path, cls,
                       !strcmp(cls, "UNet2DConditionModel") ? " (this is a UNet, not a ControlNet)" : "");
    SD_TRY(sd_unet_config_from_encoder(c, &cfg->unet));
    SD_TRY(sd_config_int(c, "conditioning_channels", 3, &cfg->conditioning_channels));
    if (cfg->conditioning_channels < 1 || cfg->conditioning_channels > 64)
        return sd_fail(SD_ERR_FORMAT, "%s: 'conditioning_channels' = %lld is out of range (1..64; 3 for RGB)",
                       c->path, (long long)cfg->conditioning_channels);
    if (sd_config_has(c, "conditioning_embedding_out_channels")) {
        SD_TRY(sd_config_int_list(c, "conditioning_embedding_out_channels", cfg->cond_channels, SD_CNET_MAX_COND,
                                  0, &cfg->n_cond));
    } else {
        static const int64_t def[] = {16, 32, 96, 256};
        cfg->n_cond = 4;
        memcpy(cfg->cond_channels, def, sizeof def);
    }
    if (cfg->n_cond < 1)
        return sd_fail(SD_ERR_FORMAT, "%s: 'conditioning_embedding_out_channels' is empty", c->path);
    for (int i = 0; i < cfg->n_cond; i++)
        if (cfg->cond_channels[i] < 1 || cfg->cond_channels[i] > 65536)
            return sd_fail(SD_ERR_FORMAT, "%s: 'conditioning_embedding_out_channels' entry %d = %lld is out of range",
                           c->path, i, (long long)cfg->cond_channels[i]);
    const char *order;
    SD_TRY(sd_config_str(c, "controlnet_conditioning_channel_order", "rgb", &order));
    if (strcmp(order, "rgb") && strcmp(order, "bgr"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: 'controlnet_conditioning_channel_order' is \"%s\"; only \"rgb\" and "
                       "\"bgr\" exist", c->path, order);
    cfg->bgr = !strcmp(order, "bgr");
    bool pool;
    SD_TRY(sd_config_bool(c, "global_pool_conditions", false, &pool));
    if (pool)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: 'global_pool_conditions' = true (shuffle-style ControlNets with "
                       "pooled residuals) is not supported", c->path);
    if (cfg->unet.time_cond_proj_dim > 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: 'time_cond_proj_dim': a ControlNet with a guidance embedding is not "
                       "supported", c->path);
    if (cfg->unet.conv_in_kernel != 3)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: 'conv_in_kernel' must be 3 for a ControlNet", c->path);
    return SD_OK;
}

sd_status sd_cnet_config_load(const char *path, sd_cnet_config *cfg)
{
    sd_config c;
    SD_TRY(sd_config_load(path, &c));
    sd_status s = sd_cnet_config_from(&c, cfg);
    sd_config_free(&c);
    return s;
}

int sd_cnet_cond_factor(const sd_cnet_config *c) { return 1 << (c->n_cond - 1); }

static const char *base_name(int64_t ctx_dim)
{
    return ctx_dim == 768 ? " (SD1.x)" : ctx_dim == 1024 ? " (SD2.x)" : ctx_dim == 2048 ? " (SDXL)" : "";
}

sd_status sd_cnet_check_fit(const sd_cnet_config *cn, const sd_unet_config *u, const char *what)
{
    const sd_unet_config *c = &cn->unet;
    if (c->cross_attention_dim[0] != u->cross_attention_dim[0])
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: its cross_attention_dim is "
                       "%lld%s, the model's UNet has %lld%s", what, (long long)c->cross_attention_dim[0],
                       base_name(c->cross_attention_dim[0]), (long long)u->cross_attention_dim[0],
                       base_name(u->cross_attention_dim[0]));
    if (c->n_blocks != u->n_blocks)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: it has %d down blocks, the "
                       "model's UNet %d", what, c->n_blocks, u->n_blocks);
    if (c->in_channels != u->in_channels)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: in_channels %lld, the model's "
                       "UNet %lld", what, (long long)c->in_channels, (long long)u->in_channels);
    if (!u->has_mid_block)
        return sd_fail(SD_ERR_UNSUPPORTED, "ControlNet %s: the model's UNet has no mid block to add the ControlNet's "
                       "mid residual to", what);
    for (int i = 0; i < c->n_blocks; i++) {
        if (c->block_out_channels[i] != u->block_out_channels[i])
            return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: block_out_channels[%d] is "
                           "%lld, the model's UNet has %lld", what, i, (long long)c->block_out_channels[i],
                           (long long)u->block_out_channels[i]);
        if (c->layers_per_block[i] != u->layers_per_block[i])
            return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: layers_per_block[%d] is "
                           "%lld, the model's UNet has %lld", what, i, (long long)c->layers_per_block[i],
                           (long long)u->layers_per_block[i]);
    }
    if (c->add_text_time != u->add_text_time)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: it is %san SDXL ControlNet, "
                       "the model is %san SDXL model", what, c->add_text_time ? "" : "not ", u->add_text_time ? "" : "not ");
    return SD_OK;
}

/* ================================================================== model */

struct sd_cnet {
    sd_cnet_config cfg;
    sd_tensor conv_in_w, conv_in_b, t1_w, t1_b, t2_w, t2_b;
    sd_tensor a1_w, a1_b, a2_w, a2_b; /* add_embedding (SDXL text_time) */
    sd_tensor ce_in_w, ce_in_b, ce_out_w, ce_out_b;
    sd_tensor ce_w[2 * SD_CNET_MAX_COND], ce_b[2 * SD_CNET_MAX_COND]; /* controlnet_cond_embedding.blocks.k */
    sd_down_block down[SD_UNET_MAX_BLOCKS];
    sd_mid_block mid;
    int n_res;
    sd_tensor *zc_w, *zc_b; /* controlnet_down_blocks.j [Cj,Cj,1,1] */
    sd_tensor zm_w, zm_b;   /* controlnet_mid_block */
    sd_wslot *slots;
    size_t n_slots;
};

const sd_cnet_config *sd_cnet_get_config(const sd_cnet *cn) { return &cn->cfg; }
int sd_cnet_num_residuals(const sd_cnet *cn) { return cn ? cn->n_res : 0; }

void sd_cnet_free(sd_cnet *cn)
{
    if (!cn)
        return;
    for (int i = 0; i < SD_UNET_MAX_BLOCKS; i++)
        sd_down_block_free(&cn->down[i]);
    sd_mid_block_free(&cn->mid);
    free(cn->zc_w);
    free(cn->zc_b);
    sd_wslots_free(cn->slots, cn->n_slots);
    free(cn);
}

static void build(sd_wload *l, sd_cnet *cn)
{
    const sd_unet_config *c = &cn->cfg.unet;
    const sd_cnet_config *k = &cn->cfg;
    int n = c->n_blocks;
    int64_t ted = c->time_embed_dim, c0 = c->block_out_channels[0];
    char p[160];

    sd_wl_get(l, &cn->conv_in_w, SD_SHAPE(c0, c->in_channels, 3, 3), "conv_in.weight");
    sd_wl_get(l, &cn->conv_in_b, SD_SHAPE(c0), "conv_in.bias");
    sd_wl_get(l, &cn->t1_w, SD_SHAPE(ted, c0), "time_embedding.linear_1.weight");
    sd_wl_get(l, &cn->t1_b, SD_SHAPE(ted), "time_embedding.linear_1.bias");
    sd_wl_get(l, &cn->t2_w, SD_SHAPE(ted, ted), "time_embedding.linear_2.weight");
    sd_wl_get(l, &cn->t2_b, SD_SHAPE(ted), "time_embedding.linear_2.bias");
    if (c->add_text_time) {
        sd_wl_get(l, &cn->a1_w, SD_SHAPE(ted, c->projection_class_embeddings_input_dim),
                  "add_embedding.linear_1.weight");
        sd_wl_get(l, &cn->a1_b, SD_SHAPE(ted), "add_embedding.linear_1.bias");
        sd_wl_get(l, &cn->a2_w, SD_SHAPE(ted, ted), "add_embedding.linear_2.weight");
        sd_wl_get(l, &cn->a2_b, SD_SHAPE(ted), "add_embedding.linear_2.bias");
    }

    /* conditioning embedding: conv_in, then per level a same-size conv and a stride-2 conv, conv_out */
    const int64_t *cc = k->cond_channels;
    sd_wl_get(l, &cn->ce_in_w, SD_SHAPE(cc[0], k->conditioning_channels, 3, 3),
              "controlnet_cond_embedding.conv_in.weight");
    sd_wl_get(l, &cn->ce_in_b, SD_SHAPE(cc[0]), "controlnet_cond_embedding.conv_in.bias");
    for (int i = 0; i + 1 < k->n_cond; i++) {
        sd_wl_get(l, &cn->ce_w[2 * i], SD_SHAPE(cc[i], cc[i], 3, 3), "controlnet_cond_embedding.blocks.%d.weight",
                  2 * i);
        sd_wl_get(l, &cn->ce_b[2 * i], SD_SHAPE(cc[i]), "controlnet_cond_embedding.blocks.%d.bias", 2 * i);
        sd_wl_get(l, &cn->ce_w[2 * i + 1], SD_SHAPE(cc[i + 1], cc[i], 3, 3),
                  "controlnet_cond_embedding.blocks.%d.weight", 2 * i + 1);
        sd_wl_get(l, &cn->ce_b[2 * i + 1], SD_SHAPE(cc[i + 1]), "controlnet_cond_embedding.blocks.%d.bias",
                  2 * i + 1);
    }
    sd_wl_get(l, &cn->ce_out_w, SD_SHAPE(c0, cc[k->n_cond - 1], 3, 3), "controlnet_cond_embedding.conv_out.weight");
    sd_wl_get(l, &cn->ce_out_b, SD_SHAPE(c0), "controlnet_cond_embedding.conv_out.bias");

    /* the down path: one residual conv per skip, in the UNet's skip order */
    int n_res = 1;
    for (int i = 0; i < n; i++)
        n_res += (int)c->layers_per_block[i] + (i < n - 1 ? 1 : 0);
    cn->n_res = n_res;
    cn->zc_w = sd_calloc((size_t)n_res, sizeof *cn->zc_w);
    cn->zc_b = sd_calloc((size_t)n_res, sizeof *cn->zc_b);
    if (!cn->zc_w || !cn->zc_b) {
        l->status = SD_ERR_OUT_OF_MEMORY;
        return;
    }
    int kvc = 0;
    for (int i = 0; i < n && l->status == SD_OK; i++) {
        sd_level lv;
        sd_unet_level(c, i, &lv);
        snprintf(p, sizeof p, "down_blocks.%d", i);
        sd_down_block_load(l, &cn->down[i], p, &lv, &kvc);
    }
    sd_level lv;
    sd_unet_level(c, n - 1, &lv);
    sd_mid_block_load(l, &cn->mid, "mid_block", &lv, (float)c->mid_block_scale_factor, &kvc);
    int j = 0;
    sd_wl_get(l, &cn->zc_w[j], SD_SHAPE(c0, c0, 1, 1), "controlnet_down_blocks.%d.weight", j);
    sd_wl_get(l, &cn->zc_b[j], SD_SHAPE(c0), "controlnet_down_blocks.%d.bias", j);
    for (int i = 0; i < n; i++) {
        int64_t ch = c->block_out_channels[i];
        for (int r = 0; r < (int)c->layers_per_block[i] + (i < n - 1 ? 1 : 0); r++) {
            j++;
            sd_wl_get(l, &cn->zc_w[j], SD_SHAPE(ch, ch, 1, 1), "controlnet_down_blocks.%d.weight", j);
            sd_wl_get(l, &cn->zc_b[j], SD_SHAPE(ch), "controlnet_down_blocks.%d.bias", j);
        }
    }
    int64_t cm = c->block_out_channels[n - 1];
    sd_wl_get(l, &cn->zm_w, SD_SHAPE(cm, cm, 1, 1), "controlnet_mid_block.weight");
    sd_wl_get(l, &cn->zm_b, SD_SHAPE(cm), "controlnet_mid_block.bias");
}

static sd_status build_model(sd_wload *l, const sd_cnet_config *cfg, sd_cnet **out)
{
    *out = NULL;
    if (!cfg || cfg->unet.n_blocks < 1 || cfg->unet.n_blocks > SD_UNET_MAX_BLOCKS || cfg->n_cond < 1 ||
        cfg->n_cond > SD_CNET_MAX_COND)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "ControlNet config: invalid number of blocks");
    sd_cnet *cn = sd_calloc(1, sizeof *cn);
    if (!cn)
        return SD_ERR_OUT_OF_MEMORY;
    cn->cfg = *cfg;
    build(l, cn);
    cn->slots = l->slots;
    cn->n_slots = l->n_slots;
    l->slots = NULL;
    l->n_slots = l->cap_slots = 0;
    if (l->status != SD_OK) {
        sd_cnet_free(cn);
        return l->status;
    }
    *out = cn;
    return SD_OK;
}

sd_status sd_cnet_load(sd_weights *w, const sd_cnet_config *cfg, sd_cnet **out)
{
    if (!w || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_cnet_load: weights and output are required");
    sd_wload l = {.w = w, .record = true};
    return build_model(&l, cfg, out);
}

sd_status sd_cnet_list_tensors(const sd_cnet_config *cfg, sd_unet_tensor_fn fn, void *user)
{
    sd_wload l = {.fn = fn, .user = user};
    sd_cnet *cn;
    SD_TRY(build_model(&l, cfg, &cn));
    sd_cnet_free(cn);
    return SD_OK;
}

/* ================================================================== forward */

void sd_cnet_residual_shape(const sd_cnet *cn, int64_t B, int64_t h, int64_t w, int k, int64_t ne[4])
{
    const sd_unet_config *c = &cn->cfg.unet;
    int64_t ch = c->block_out_channels[0];
    int j = 0; /* j == 0: conv_in */
    for (int i = 0; i < c->n_blocks && j < k; i++) {
        ch = c->block_out_channels[i];
        for (int r = 0; r < (int)c->layers_per_block[i] && j < k; r++)
            j++; /* resnet (+ attention): the level's size */
        if (i < c->n_blocks - 1 && j < k) {
            h = (h + 1) / 2; /* downsampler: 3x3 stride 2 pad 1 */
            w = (w + 1) / 2;
            j++;
        }
    }
    if (k >= cn->n_res) /* mid: the last level */
        ch = c->block_out_channels[c->n_blocks - 1];
    ne[0] = B;
    ne[1] = ch;
    ne[2] = h;
    ne[3] = w;
}

void sd_cnet_residuals_new(sd_ctx *ctx, const sd_cnet *cn, int64_t B, int64_t h, int64_t w, sd_tensor *down,
                           sd_tensor *mid)
{
    int64_t ne[4];
    for (int k = 0; k <= cn->n_res; k++) {
        sd_cnet_residual_shape(cn, B, h, w, k, ne);
        sd_tensor t = sd_new4(ctx, ne[0], ne[1], ne[2], ne[3]);
        if (k < cn->n_res)
            down[k] = t;
        else
            *mid = t;
    }
}

/* SDXL: add_embedding(cat([text_embeds, add_time_proj(time_ids)])) [B,T], as the UNet's */
static sd_tensor added_embedding(sd_ctx *ctx, const sd_cnet *cn, int64_t B, const sd_unet_added *a)
{
    const sd_unet_config *c = &cn->cfg.unet;
    int64_t D = c->addition_time_embed_dim, P = c->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * D;
    if (!a)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "ControlNet: an SDXL ControlNet (addition_embed_type "
                           "'text_time') needs the pooled text embedding and the time ids");
    if (a->text_embeds.ndim != 2 || a->text_embeds.ne[0] != B || a->text_embeds.ne[1] != P ||
        a->time_ids.ndim != 2 || a->time_ids.ne[0] != B || a->time_ids.ne[1] != SD_UNET_TIME_IDS ||
        a->time_ids.dtype != SD_F32)
        return sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: text_embeds must be [%lld,%lld] and time_ids F32 [%lld,%d]",
                           (long long)B, (long long)P, (long long)B, SD_UNET_TIME_IDS);
    int64_t nid = B * SD_UNET_TIME_IDS;
    sd_tensor tp = sd_timestep_embedding(ctx, sd_reshape(ctx, a->time_ids, 1, &nid), (int)D, c->flip_sin_to_cos,
                                         (float)c->freq_shift); /* [B*6,D] */
    sd_tensor ae = sd_concat(ctx, a->text_embeds, sd_reshape2(ctx, tp, B, SD_UNET_TIME_IDS * D), 1); /* [B,P+6D] */
    ae = sd_linear(ctx, ae, cn->a1_w, &cn->a1_b);
    return sd_linear(ctx, sd_silu(ctx, ae), cn->a2_w, &cn->a2_b); /* [B,T] */
}

/* residual j (or the mid one: zw/zb = controlnet_mid_block) from its skip h: conv1x1(h) * scale, stored
 * into (or added to) dst; the temporaries are freed */
static void emit(sd_ctx *ctx, sd_tensor h, sd_tensor zw, sd_tensor zb, float scale, const sd_tensor *row_scale,
                 sd_tensor dst, bool accumulate)
{
    sd_scope e = sd_scope_begin(ctx);
    sd_tensor r = sd_conv2d(ctx, h, zw, &zb, 1, 0); /* [B,Cj,hj,wj] */
    r = row_scale ? sd_mul(ctx, r, *row_scale) : sd_affine(ctx, r, scale, 0.0f);
    if (accumulate)
        r = sd_add(ctx, dst, r);
    sd_copy_into(ctx, dst, r);
    sd_scope_drop(&e);
}

static void forward(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                    sd_tensor cond, float scale, const sd_tensor *row_scale, const sd_unet_added *added,
                    const sd_unet_residuals *out, bool accumulate);

void sd_cnet_forward(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                     sd_tensor cond, float scale, const sd_unet_added *added, const sd_unet_residuals *out,
                     bool accumulate)
{
    forward(ctx, cn, x, timesteps, context, cond, scale, NULL, added, out, accumulate);
}

void sd_cnet_forward_rows(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                          sd_tensor cond, sd_tensor row_scale, const sd_unet_added *added, const sd_unet_residuals *out,
                          bool accumulate)
{
    if (sd_ok(ctx) && (row_scale.ndim != 4 || row_scale.ne[0] != x.ne[0] || row_scale.ne[1] != 1 ||
                       row_scale.ne[2] != 1 || row_scale.ne[3] != 1)) {
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: per-row scales must be [%lld,1,1,1]", (long long)x.ne[0]);
        return;
    }
    forward(ctx, cn, x, timesteps, context, cond, 0.0f, &row_scale, added, out, accumulate);
}

static void forward(sd_ctx *ctx, const sd_cnet *cn, sd_tensor x, sd_tensor timesteps, sd_tensor context,
                    sd_tensor cond, float scale, const sd_tensor *row_scale, const sd_unet_added *added,
                    const sd_unet_residuals *out, bool accumulate)
{
    if (!sd_ok(ctx))
        return;
    if (!cn || !out || !out->down || out->n_down != cn->n_res) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "ControlNet forward: no model, or %d residual tensors for %d",
                    out ? out->n_down : 0, cn ? cn->n_res : 0);
        return;
    }
    const sd_unet_config *c = &cn->cfg.unet;
    int n = c->n_blocks, f = sd_cnet_cond_factor(&cn->cfg);
    char sx[96], sc[96];
    sd_shape_str(&x, sx, sizeof sx);
    sd_shape_str(&cond, sc, sizeof sc);
    if (x.ndim != 4 || x.ne[1] != c->in_channels || x.ne[0] < 1) {
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: sample %s must be [B,%lld,H,W]", sx, (long long)c->in_channels);
        return;
    }
    int64_t B = x.ne[0], H = x.ne[2], W = x.ne[3], div = (int64_t)1 << (n - 1);
    if (H % div || W % div) {
        sd_ctx_fail(ctx, SD_ERR_UNSUPPORTED, "ControlNet: sample %s: height and width must be multiples of %lld", sx,
                    (long long)div);
        return;
    }
    if (cond.ndim != 4 || cond.ne[0] != B || cond.ne[1] != cn->cfg.conditioning_channels || cond.ne[2] != H * f ||
        cond.ne[3] != W * f) {
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: control image %s must be [%lld,%lld,%lld,%lld] (%d x the latent "
                    "size %lldx%lld)", sc, (long long)B, (long long)cn->cfg.conditioning_channels, (long long)(H * f),
                    (long long)(W * f), f, (long long)H, (long long)W);
        return;
    }
    if (timesteps.ndim != 1 || timesteps.ne[0] != B || timesteps.dtype != SD_F32) {
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: timesteps must be F32 [%lld] (one per batch row)", (long long)B);
        return;
    }
    if (context.ndim != 3 || (context.ne[0] != B && context.ne[0] != 1) ||
        context.ne[2] != c->cross_attention_dim[0]) {
        char s[96];
        sd_shape_str(&context, s, sizeof s);
        sd_ctx_fail(ctx, SD_ERR_SHAPE, "ControlNet: encoder_hidden_states %s must be [%lld or 1,S,%lld]", s,
                    (long long)B, (long long)c->cross_attention_dim[0]);
        return;
    }
    if (added && !c->add_text_time) {
        sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "ControlNet: text_embeds / time_ids given to a ControlNet without "
                    "'text_time' added conditioning");
        return;
    }
    sd_scope s0 = sd_scope_begin(ctx); /* the whole forward: nothing survives it */

    /* time embedding: timesteps [B] -> sinusoidal [B,C0] -> MLP [B,T] (its own weights) */
    sd_tensor temb = sd_timestep_embedding(ctx, timesteps, (int)c->block_out_channels[0], c->flip_sin_to_cos,
                                           (float)c->freq_shift);
    sd_hook(ctx, "time_proj", temb);
    sd_tensor emb = sd_linear(ctx, temb, cn->t1_w, &cn->t1_b);
    emb = sd_linear(ctx, sd_silu(ctx, emb), cn->t2_w, &cn->t2_b);
    sd_hook(ctx, "time_embedding", emb);
    if (c->add_text_time) /* SDXL: + add_embedding(text_embeds, time_ids) [B,T] */
        emb = sd_add(ctx, emb, added_embedding(ctx, cn, B, added));
    sd_tensor semb = sd_step(&s0, sd_silu(ctx, emb)); /* [B,T] */

    /* h = conv_in(x) [B,C0,H,W] + cond_embedding(cond) [B,3,fH,fW] -> ... -> [B,C0,H,W] */
    sd_scope s1 = sd_scope_begin(ctx); /* holds h only */
    sd_tensor h = sd_conv2d(ctx, x, cn->conv_in_w, &cn->conv_in_b, 1, 1);
    sd_hook(ctx, "conv_in", h);
    sd_tensor e = cond;
    if (cn->cfg.bgr) { /* torch.flip(cond, dims=[1]) */
        e = sd_slice(ctx, cond, 1, cond.ne[1] - 1, 1);
        for (int64_t ch = cond.ne[1] - 2; ch >= 0; ch--)
            e = sd_concat(ctx, e, sd_slice(ctx, cond, 1, ch, 1), 1);
    }
    e = sd_silu(ctx, sd_conv2d(ctx, e, cn->ce_in_w, &cn->ce_in_b, 1, 1)); /* [B,cc0,fH,fW] */
    for (int i = 0; i + 1 < cn->cfg.n_cond; i++) {
        e = sd_silu(ctx, sd_conv2d(ctx, e, cn->ce_w[2 * i], &cn->ce_b[2 * i], 1, 1));             /* same size */
        e = sd_silu(ctx, sd_conv2d(ctx, e, cn->ce_w[2 * i + 1], &cn->ce_b[2 * i + 1], 2, 1));     /* half size */
    }
    e = sd_conv2d(ctx, e, cn->ce_out_w, &cn->ce_out_b, 1, 1); /* [B,C0,H,W] */
    sd_hook(ctx, "controlnet_cond_embedding", e);
    h = sd_step(&s1, sd_add(ctx, h, e));
    int k = 0;
    emit(ctx, h, cn->zc_w[k], cn->zc_b[k], scale, row_scale, out->down[k], accumulate);
    k++;

    /* down block i: resnets (+ transformers) [B,Ci,h,w], downsample [B,Ci,h/2,w/2]; every output -> a residual */
    for (int i = 0; i < n && sd_ok(ctx); i++) {
        const sd_down_block *d = &cn->down[i];
        int r = 0;
        for (int j = 0; j < d->n; j++) {
            h = sd_step(&s1, sd_down_layer_forward(ctx, d, i, j, h, &semb, context, NULL));
            sd_hookf(ctx, h, "down_blocks.%d.res_samples.%d", i, r++);
            emit(ctx, h, cn->zc_w[k], cn->zc_b[k], scale, row_scale, out->down[k], accumulate);
            k++;
        }
        if (d->has_down) {
            h = sd_step(&s1, sd_downsample_forward(ctx, &d->down, h));
            sd_hookf(ctx, h, "down_blocks.%d.res_samples.%d", i, r++);
            emit(ctx, h, cn->zc_w[k], cn->zc_b[k], scale, row_scale, out->down[k], accumulate);
            k++;
        }
        sd_hookf(ctx, h, "down_blocks.%d", i);
    }

    /* mid: [B,Cn,h,w] -> resnet, transformer, resnet -> [B,Cn,h,w] -> the mid residual */
    h = sd_step(&s1, sd_mid_block_forward(ctx, &cn->mid, h, &semb, context, NULL));
    sd_hook(ctx, "mid_block", h);
    emit(ctx, h, cn->zm_w, cn->zm_b, scale, row_scale, out->mid, accumulate);
    sd_scope_drop(&s1);
    sd_scope_drop(&s0);
}
