#include "models/clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- config */

static sd_status get_int(const sd_config *j, const char *key, int64_t def, int64_t lo, int64_t hi, int *out)
{
    int64_t v;
    SD_TRY(sd_config_int(j, key, def, &v));
    if (v < lo || v > hi)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' = %lld is out of range [%lld, %lld]", j->path, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = (int)v;
    return SD_OK;
}

static bool act_from_name(const char *s, sd_unary_op *op)
{
    if (!strcmp(s, "quick_gelu"))
        *op = SD_UNARY_QUICK_GELU;
    else if (!strcmp(s, "gelu") || !strcmp(s, "gelu_python"))
        *op = SD_UNARY_GELU;
    else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh") || !strcmp(s, "gelu_fast") ||
             !strcmp(s, "gelu_python_tanh"))
        *op = SD_UNARY_GELU_TANH;
    else
        return false;
    return true;
}

sd_status sd_clip_config_from(const sd_config *json, sd_clip_config *c)
{
    memset(c, 0, sizeof *c);
    sd_config tc = *json;
    tc.owner = false;
    tc.path_owned = NULL;
    if (sd_config_has(json, "text_config")) /* a full CLIPConfig */
        SD_TRY(sd_config_sub(json, "text_config", &tc));
    SD_TRY(get_int(&tc, "vocab_size", 49408, 1, 1 << 24, &c->vocab_size));
    SD_TRY(get_int(&tc, "hidden_size", 512, 1, 1 << 16, &c->hidden_size));
    SD_TRY(get_int(&tc, "intermediate_size", 2048, 1, 1 << 20, &c->intermediate_size));
    SD_TRY(get_int(&tc, "num_hidden_layers", 12, 1, 4096, &c->num_hidden_layers));
    SD_TRY(get_int(&tc, "num_attention_heads", 8, 1, 4096, &c->num_attention_heads));
    SD_TRY(get_int(&tc, "max_position_embeddings", 77, 1, 1 << 16, &c->max_position_embeddings));
    SD_TRY(get_int(&tc, "projection_dim", 512, 1, 1 << 16, &c->projection_dim));
    SD_TRY(get_int(&tc, "eos_token_id", 49407, -1, 1 << 24, &c->eos_token_id));
    double eps;
    SD_TRY(sd_config_float(&tc, "layer_norm_eps", 1e-5, &eps));
    if (!(eps > 0 && eps < 1))
        return sd_fail(SD_ERR_FORMAT, "%s: layer_norm_eps = %g must be in (0, 1)", tc.path, eps);
    c->layer_norm_eps = (float)eps;
    if (c->hidden_size % c->num_attention_heads)
        return sd_fail(SD_ERR_FORMAT, "%s: hidden_size %d is not divisible by num_attention_heads %d", tc.path,
                       c->hidden_size, c->num_attention_heads);
    const char *act;
    SD_TRY(sd_config_str(&tc, "hidden_act", "quick_gelu", &act));
    if (!act_from_name(act, &c->hidden_act))
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: hidden_act '%s' is not supported (use quick_gelu, gelu, gelu_new or gelu_pytorch_tanh)",
                       tc.path, act);
    const char *arch[8];
    int na = 0;
    if (sd_config_has(json, "architectures"))
        SD_TRY(sd_config_str_list(json, "architectures", arch, 8, &na));
    for (int i = 0; i < na; i++)
        if (!strcmp(arch[i], "CLIPTextModelWithProjection"))
            c->with_projection = true;
    return SD_OK;
}

sd_status sd_clip_config_load(const char *config_json, sd_clip_config *c)
{
    sd_config j;
    SD_TRY(sd_config_load(config_json, &j));
    sd_status s = sd_clip_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

/* ---------------------------------------------------------------- load */

void sd_clip_free(sd_clip *m)
{
    if (!m)
        return;
    free(m->layers);
    if (m->owned_weights) {
        sd_weights_free(m->owned_weights);
        free(m->owned_weights);
    }
    free(m);
}

#define P "text_model."

static sd_status load_layer(sd_weights *w, const sd_clip_config *c, int i, sd_clip_layer *l)
{
    int64_t D = c->hidden_size, I = c->intermediate_size;
    SD_TRY(sd_weights_get(w, &l->ln1_w, SD_SHAPE(D), P "encoder.layers.%d.layer_norm1.weight", i));
    SD_TRY(sd_weights_get(w, &l->ln1_b, SD_SHAPE(D), P "encoder.layers.%d.layer_norm1.bias", i));
    SD_TRY(sd_weights_get(w, &l->ln2_w, SD_SHAPE(D), P "encoder.layers.%d.layer_norm2.weight", i));
    SD_TRY(sd_weights_get(w, &l->ln2_b, SD_SHAPE(D), P "encoder.layers.%d.layer_norm2.bias", i));
    SD_TRY(sd_weights_get(w, &l->q_w, SD_SHAPE(D, D), P "encoder.layers.%d.self_attn.q_proj.weight", i));
    SD_TRY(sd_weights_get(w, &l->q_b, SD_SHAPE(D), P "encoder.layers.%d.self_attn.q_proj.bias", i));
    SD_TRY(sd_weights_get(w, &l->k_w, SD_SHAPE(D, D), P "encoder.layers.%d.self_attn.k_proj.weight", i));
    SD_TRY(sd_weights_get(w, &l->k_b, SD_SHAPE(D), P "encoder.layers.%d.self_attn.k_proj.bias", i));
    SD_TRY(sd_weights_get(w, &l->v_w, SD_SHAPE(D, D), P "encoder.layers.%d.self_attn.v_proj.weight", i));
    SD_TRY(sd_weights_get(w, &l->v_b, SD_SHAPE(D), P "encoder.layers.%d.self_attn.v_proj.bias", i));
    SD_TRY(sd_weights_get(w, &l->o_w, SD_SHAPE(D, D), P "encoder.layers.%d.self_attn.out_proj.weight", i));
    SD_TRY(sd_weights_get(w, &l->o_b, SD_SHAPE(D), P "encoder.layers.%d.self_attn.out_proj.bias", i));
    SD_TRY(sd_weights_get(w, &l->fc1_w, SD_SHAPE(I, D), P "encoder.layers.%d.mlp.fc1.weight", i));
    SD_TRY(sd_weights_get(w, &l->fc1_b, SD_SHAPE(I), P "encoder.layers.%d.mlp.fc1.bias", i));
    SD_TRY(sd_weights_get(w, &l->fc2_w, SD_SHAPE(D, I), P "encoder.layers.%d.mlp.fc2.weight", i));
    SD_TRY(sd_weights_get(w, &l->fc2_b, SD_SHAPE(D), P "encoder.layers.%d.mlp.fc2.bias", i));
    return SD_OK;
}

sd_status sd_clip_weights_canonical(sd_weights *w)
{
    /* transformers 5 saves CLIPTextModel without the "text_model." prefix (CLIPTextModelWithProjection keeps it) */
    if (sd_weights_has(w, P "embeddings.token_embedding.weight") || !sd_weights_has(w, "embeddings.token_embedding.weight"))
        return SD_OK;
    static const char *const roots[] = {"embeddings.", "encoder.", "final_layer_norm."};
    for (size_t i = 0; i < w->n_idx; i++) {
        bool ours = false;
        for (size_t k = 0; k < SD_ARRAY_LEN(roots) && !ours; k++)
            ours = !strncmp(w->idx[i].name, roots[k], strlen(roots[k]));
        if (!ours)
            continue;
        size_t n = strlen(P) + strlen(w->idx[i].name) + 1;
        char *nn = sd_malloc(n);
        if (!nn)
            return SD_ERR_OUT_OF_MEMORY;
        snprintf(nn, n, P "%s", w->idx[i].name);
        free(w->idx[i].name);
        w->idx[i].name = nn;
    }
    return sd_weights_finalize(w); /* sorts the index again (and refuses a name given twice) */
}

sd_status sd_clip_load(sd_weights *w, const sd_clip_config *c, sd_clip **out)
{
    *out = NULL;
    SD_TRY(sd_clip_weights_canonical(w));
    sd_clip *m = sd_calloc(1, sizeof *m);
    if (!m)
        return SD_ERR_OUT_OF_MEMORY;
    m->cfg = *c;
    m->layers = sd_calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        sd_clip_free(m);
        return SD_ERR_OUT_OF_MEMORY;
    }
    int64_t D = c->hidden_size;
    /* tables read by rows: row-major whatever the backend prepares for linears */
    sd_status s = sd_weights_get_table(w, &m->tok_emb, SD_SHAPE(c->vocab_size, D), P "embeddings.token_embedding.weight");
    if (s == SD_OK)
        s = sd_weights_get_table(w, &m->pos_emb, SD_SHAPE(c->max_position_embeddings, D),
                                 P "embeddings.position_embedding.weight");
    for (int i = 0; s == SD_OK && i < c->num_hidden_layers; i++)
        s = load_layer(w, c, i, &m->layers[i]);
    if (s == SD_OK)
        s = sd_weights_get(w, &m->final_ln_w, SD_SHAPE(D), P "final_layer_norm.weight");
    if (s == SD_OK)
        s = sd_weights_get(w, &m->final_ln_b, SD_SHAPE(D), P "final_layer_norm.bias");
    if (s == SD_OK && c->with_projection)
        s = sd_weights_get(w, &m->text_projection, SD_SHAPE(c->projection_dim, D), "text_projection.weight");
    if (s != SD_OK) {
        sd_clip_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

sd_status sd_clip_for_each_weight(sd_clip *m, sd_weight_visit_fn fn, void *user)
{
    if (!m)
        return SD_OK;
    char n[160];
    SD_TRY(fn(user, P "embeddings.token_embedding.weight", &m->tok_emb));
    SD_TRY(fn(user, P "embeddings.position_embedding.weight", &m->pos_emb));
    static const char *const names[16] = {
        "layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
        "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
        "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
    for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
        sd_clip_layer *l = &m->layers[i];
        sd_tensor *slots[16] = {&l->ln1_w, &l->ln1_b, &l->ln2_w, &l->ln2_b, &l->q_w,   &l->q_b,   &l->k_w,   &l->k_b,
                                &l->v_w,   &l->v_b,   &l->o_w,   &l->o_b,   &l->fc1_w, &l->fc1_b, &l->fc2_w, &l->fc2_b};
        for (int k = 0; k < 16; k++) {
            snprintf(n, sizeof n, P "encoder.layers.%d.%s", i, names[k]);
            SD_TRY(fn(user, n, slots[k]));
        }
    }
    SD_TRY(fn(user, P "final_layer_norm.weight", &m->final_ln_w));
    SD_TRY(fn(user, P "final_layer_norm.bias", &m->final_ln_b));
    if (m->cfg.with_projection && m->text_projection.data)
        SD_TRY(fn(user, "text_projection.weight", &m->text_projection));
    return SD_OK;
}

sd_status sd_clip_load_dir(sd_backend *be, const char *dir, int with_projection, sd_clip **out)
{
    *out = NULL;
    sd_clip_config cfg;
    char *cpath = sd_path_join(dir, "config.json");
    if (!cpath)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = sd_clip_config_load(cpath, &cfg);
    free(cpath);
    if (s != SD_OK)
        return s;
    if (with_projection >= 0)
        cfg.with_projection = with_projection != 0;
    static const char *const names[] = {"model.safetensors", "model.fp16.safetensors"};
    sd_weights *w;
    SD_TRY(sd_weights_open_dir(be, dir, names, SD_ARRAY_LEN(names), "model.safetensors (or model.fp16.safetensors)",
                               "text encoder", &w));
    sd_clip *m = NULL;
    s = sd_clip_load(w, &cfg, &m);
    if (s != SD_OK) {
        sd_weights_free(w);
        free(w);
        return s;
    }
    m->owned_weights = w;
    *out = m;
    return SD_OK;
}

/* ---------------------------------------------------------------- forward */

int sd_clip_pool_index(const sd_clip_config *c, const int32_t *ids, int seq_len)
{
    int best = 0;
    if (c->eos_token_id == 2) { /* legacy: first occurrence of the largest id */
        for (int i = 1; i < seq_len; i++)
            if (ids[i] > ids[best])
                best = i;
        return best;
    }
    for (int i = 0; i < seq_len; i++)
        if (ids[i] == c->eos_token_id)
            return i;
    return 0; /* argmax of an all-zero mask */
}

/* CLIPEncoderLayer: x [B,S,D] -> x1 = x + out_proj(causal attention(LN1(x)))
 *                               -> x1 + fc2(act(fc1(LN2(x1))))   [B,S,D] (fc1: D -> intermediate) */
static sd_tensor encoder_layer(sd_ctx *ctx, const sd_clip *m, const sd_clip_layer *l, sd_tensor x)
{
    const sd_clip_config *c = &m->cfg;
    float eps = c->layer_norm_eps;
    int heads = c->num_attention_heads;
    float scale = 1.0f / sqrtf((float)(c->hidden_size / heads));
    sd_scope s = sd_scope_begin(ctx);
    sd_tensor h = sd_layer_norm(ctx, x, l->ln1_w, l->ln1_b, eps);
    sd_tensor q = sd_linear(ctx, h, l->q_w, &l->q_b); /* [B,S,D] = heads x head_dim */
    sd_tensor k = sd_linear(ctx, h, l->k_w, &l->k_b);
    sd_tensor v = sd_linear(ctx, h, l->v_w, &l->v_b);
    sd_tensor a = sd_attention(ctx, q, k, v, heads, scale, true);
    sd_tensor o = sd_linear(ctx, a, l->o_w, &l->o_b);
    sd_tensor x1 = sd_step(&s, sd_add(ctx, x, o));
    h = sd_layer_norm(ctx, x1, l->ln2_w, l->ln2_b, eps);
    sd_tensor f = sd_linear(ctx, h, l->fc1_w, &l->fc1_b); /* [B,S,intermediate] */
    f = sd_unary_inplace(ctx, f, c->hidden_act);
    f = sd_linear(ctx, f, l->fc2_w, &l->fc2_b); /* [B,S,D] */
    return sd_scope_end(&s, sd_add_inplace(ctx, x1, f)); /* x1 is the scope's first tensor: no copy */
}

sd_tensor sd_clip_forward_hidden(sd_ctx *ctx, const sd_clip *m, const int32_t *host_ids, int batch, int seq_len,
                                 int skip, bool final_norm, sd_tensor *pooled, sd_tensor *text_embeds)
{
    sd_tensor empty = {0};
    if (pooled)
        *pooled = empty;
    if (text_embeds)
        *text_embeds = empty;
    if (!sd_ok(ctx))
        return empty;
    const sd_clip_config *c = &m->cfg;
    int L = c->num_hidden_layers;
    if (!host_ids || batch < 1 || seq_len < 1 || seq_len > c->max_position_embeddings)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT,
                           "clip: need ids for batch >= 1 and 1 <= seq_len <= %d (got batch %d, seq_len %d)",
                           c->max_position_embeddings, batch, seq_len);
    if (skip < 0 || skip > L)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "clip: clip_skip %d out of range [0, %d] for a %d-layer encoder",
                           skip, L, L);
    if (text_embeds && !c->with_projection)
        return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT,
                           "clip: text_embeds need a CLIPTextModelWithProjection (text_projection.weight)");
    size_t n = (size_t)batch * (size_t)seq_len;
    for (size_t i = 0; i < n; i++)
        if (host_ids[i] < 0 || host_ids[i] >= c->vocab_size)
            return sd_ctx_fail(ctx, SD_ERR_INVALID_ARGUMENT, "clip: token id %d at position %zu is outside [0, %d)",
                               host_ids[i], i, c->vocab_size);
    int64_t B = batch, S = seq_len, D = c->hidden_size;
    bool need_pool = pooled || text_embeds;

    /* outputs first, at the bottom of this call's arena region: [B,S,D], [B,D], [B,P] */
    sd_tensor out = sd_new4(ctx, B, S, D, 0);
    sd_tensor pool = need_pool ? sd_new4(ctx, B, D, 0, 0) : empty;
    sd_tensor temb = text_embeds ? sd_new4(ctx, B, c->projection_dim, 0, 0) : empty;
    sd_scope s0 = sd_scope_begin(ctx); /* everything else: only the outputs above survive */

    int64_t nid = (int64_t)n;
    sd_tensor ids = sd_new(ctx, SD_I32, 1, &nid);
    if (sd_ok(ctx) && !ctx->plan) {
        sd_status s = ctx->be->ops->upload(ctx->be, ids.data, host_ids, n * sizeof(int32_t));
        if (s != SD_OK)
            return sd_ctx_fail(ctx, s, "clip: uploading token ids: %s", sd_last_error());
    }
    sd_tensor x = sd_embedding(ctx, m->tok_emb, ids);      /* ids [B*S] -> [B*S,D] */
    x = sd_reshape3(ctx, x, B, S, D);                        /* [B,S,D] */
    x = sd_add(ctx, x, sd_view_rows(ctx, m->pos_emb, 0, S)); /* + positions [S,D] */
    x = sd_step(&s0, x);
    sd_hook(ctx, "text_model.embeddings", x);

    int target = L - skip; /* index into hidden_states */
    int run = need_pool ? L : target;
    for (int i = 0; i <= run; i++) {
        if (i > 0) {
            x = sd_step(&s0, encoder_layer(ctx, m, &m->layers[i - 1], x)); /* [B,S,D] */
            sd_hookf(ctx, x, "text_model.encoder.layers.%d", i - 1);
        }
        bool last = i == L;
        if (i != target && !(last && need_pool))
            continue;
        sd_scope s = sd_scope_begin(ctx);
        sd_tensor lhs = (final_norm || last) ? sd_layer_norm(ctx, x, m->final_ln_w, m->final_ln_b, c->layer_norm_eps)
                                             : x;
        if (last)
            sd_hook(ctx, "text_model.final_layer_norm", lhs);
        if (i == target)
            sd_copy_into(ctx, out, final_norm ? lhs : x);
        if (last && need_pool) {
            sd_tensor rows = sd_reshape2(ctx, lhs, B * S, D);
            for (int64_t b = 0; b < B; b++) {
                int idx = sd_clip_pool_index(c, host_ids + b * S, seq_len);
                sd_copy_into(ctx, sd_view_rows(ctx, pool, b, 1), sd_view_rows(ctx, rows, b * S + idx, 1));
            }
            if (text_embeds) /* [B,D] -> [B,P] */
                sd_copy_into(ctx, temb, sd_linear(ctx, pool, m->text_projection, NULL));
        }
        sd_scope_drop(&s);
    }
    sd_scope_drop(&s0);
    if (!sd_ok(ctx))
        return empty;
    if (pooled)
        *pooled = pool;
    if (text_embeds)
        *text_embeds = temb;
    return out;
}

sd_tensor sd_clip_forward(sd_ctx *ctx, const sd_clip *m, const int32_t *host_ids, int batch, int seq_len,
                          int clip_skip, sd_tensor *pooled, sd_tensor *text_embeds)
{
    return sd_clip_forward_hidden(ctx, m, host_ids, batch, seq_len, clip_skip, true, pooled, text_embeds);
}
