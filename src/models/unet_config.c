/* UNet2DConditionModel configs: config.json parsed and checked (every key the code does not implement is
 * a named SD_ERR_UNSUPPORTED, a malformed value a named SD_ERR_FORMAT); the model itself is unet.c. */
#include "models/unet.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================== config */

static const cJSON *raw(const sd_config *c, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(c->root, key);
}

static sd_status unsupported(const sd_config *c, const char *key, const char *what)
{
    const cJSON *v = raw(c, key);
    char *txt = v ? cJSON_PrintUnformatted(v) : NULL;
    sd_status s = sd_fail(SD_ERR_UNSUPPORTED, "%s: '%s' = %s is not supported by this UNet implementation (%s)",
                          c->path, key, txt ? txt : "?", what);
    free(txt);
    return s;
}

/* key must be absent or null */
static sd_status need_null(const sd_config *c, const char *key, const char *what)
{
    return sd_config_has(c, key) ? unsupported(c, key, what) : SD_OK;
}

/* key absent/null/false */
static sd_status need_false(const sd_config *c, const char *key, const char *what)
{
    bool b;
    SD_TRY(sd_config_bool(c, key, false, &b));
    return b ? unsupported(c, key, what) : SD_OK;
}

/* key absent/null (diffusers default) or one of the allowed strings */
static sd_status need_str(const sd_config *c, const char *key, const char *a, const char *b, const char *what)
{
    const char *s;
    SD_TRY(sd_config_str(c, key, NULL, &s));
    if (!s || !strcmp(s, a) || (b && !strcmp(s, b)))
        return SD_OK;
    return unsupported(c, key, what);
}

/* scalar (broadcast) or list of n integers; absent/null -> def */
static sd_status block_ints(const sd_config *c, const char *key, int64_t def, int n, int64_t *out, bool *given)
{
    const cJSON *v = raw(c, key);
    if (given)
        *given = v && !cJSON_IsNull(v);
    if (!v || cJSON_IsNull(v)) {
        for (int i = 0; i < n; i++)
            out[i] = def;
        return SD_OK;
    }
    if (cJSON_IsArray(v))
        for (const cJSON *e = v->child; e; e = e->next)
            if (cJSON_IsArray(e))
                return unsupported(c, key, "per-layer nested lists (asymmetric UNets) are not handled");
    int cnt = 0;
    SD_TRY(sd_config_int_list(c, key, out, SD_UNET_MAX_BLOCKS, n, &cnt));
    if (cnt != n)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' has %d entries but there are %d down blocks", c->path, key, cnt, n);
    return SD_OK;
}

static sd_status block_bools(const sd_config *c, const char *key, int n, bool *out)
{
    const cJSON *v = raw(c, key);
    for (int i = 0; i < n; i++)
        out[i] = false;
    if (!v || cJSON_IsNull(v))
        return SD_OK;
    if (cJSON_IsBool(v)) {
        for (int i = 0; i < n; i++)
            out[i] = cJSON_IsTrue(v);
        return SD_OK;
    }
    if (!cJSON_IsArray(v))
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be true/false or a list of them", c->path, key);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (i >= n || !cJSON_IsBool(e))
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be a list of %d booleans (one per down block)", c->path,
                           key, n);
        out[i] = cJSON_IsTrue(e);
    }
    if (i != n)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' has %d entries but there are %d down blocks", c->path, key, i, n);
    return SD_OK;
}

/* "CrossAttn<kind>Block2D" -> true, "<kind>Block2D" -> false (diffusers strips a "UNetRes" prefix) */
static sd_status block_types(const sd_config *c, const char *key, const char *const *def, int ndef, bool up,
                             bool *cross, int *n)
{
    const char *types[SD_UNET_MAX_BLOCKS];
    if (sd_config_has(c, key)) {
        SD_TRY(sd_config_str_list(c, key, types, SD_UNET_MAX_BLOCKS, n));
    } else {
        *n = ndef;
        for (int i = 0; i < ndef; i++)
            types[i] = def[i];
    }
    const char *plain = up ? "UpBlock2D" : "DownBlock2D";
    const char *xattn = up ? "CrossAttnUpBlock2D" : "CrossAttnDownBlock2D";
    for (int i = 0; i < *n; i++) {
        const char *t = types[i];
        if (!strncmp(t, "UNetRes", 7))
            t += 7;
        if (!strcmp(t, plain))
            cross[i] = false;
        else if (!strcmp(t, xattn))
            cross[i] = true;
        else
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: '%s' entry %d is \"%s\"; only %s and %s are supported by this UNet implementation",
                           c->path, key, i, types[i], xattn, plain);
    }
    return SD_OK;
}

/* a JSON number as a depth; anything outside 0..1e6 (or not integral) becomes -1, which the range check names */
static int64_t depth_val(double d) { return d >= 0 && d <= 1e6 && d == (double)(int64_t)d ? (int64_t)d : -1; }

/* One depth list: an int for every layer of every block, or a list of n entries, each an int (every layer of
 * that block) or a list of per[i] ints (one per layer). *nested: some entry was a list. */
static sd_status depth_list(const sd_config *c, const char *key, int n, const int64_t *per,
                            int64_t out[][SD_UNET_MAX_LAYERS_PER_BLOCK + 1], bool *nested)
{
    const cJSON *v = raw(c, key);
    *nested = false;
    if (cJSON_IsNumber(v)) {
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < per[i]; j++)
                out[i][j] = depth_val(v->valuedouble);
        return SD_OK;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be a number or a list of %d entries (one per block)", c->path,
                       key, n);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (cJSON_IsNumber(e)) {
            for (int64_t j = 0; j < per[i]; j++)
                out[i][j] = depth_val(e->valuedouble);
            continue;
        }
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != per[i])
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' entry %d must be a number or a list of %lld numbers (one per "
                           "layer of that block)", c->path, key, i, (long long)per[i]);
        *nested = true;
        int j = 0;
        for (const cJSON *f = e->child; f; f = f->next, j++) {
            if (!cJSON_IsNumber(f))
                return sd_fail(SD_ERR_FORMAT, "%s: '%s' entry %d holds a non-number", c->path, key, i);
            out[i][j] = depth_val(f->valuedouble);
        }
    }
    return SD_OK;
}

/* transformer_layers_per_block (+ reverse_transformer_layers_per_block), as UNet2DConditionModel reads them:
 * down block i attention j: tl[i][j]; mid block: tl[-1] (its first entry when a list); up block i: reverse[i]
 * when given, else reversed(tl)[i] (a nested tl needs the reverse list, as diffusers requires). */
static sd_status transformer_depths(const sd_config *c, sd_unet_config *cfg)
{
    int n = cfg->n_blocks;
    const char *key = "transformer_layers_per_block", *rkey = "reverse_transformer_layers_per_block";
    const cJSON *v = raw(c, key), *rv = raw(c, rkey);
    bool has_r = rv && !cJSON_IsNull(rv);
    int64_t per[SD_UNET_MAX_BLOCKS], rper[SD_UNET_MAX_BLOCKS];
    for (int i = 0; i < n; i++) {
        if (cfg->layers_per_block[i] <= 0 || cfg->layers_per_block[i] > SD_UNET_MAX_LAYERS_PER_BLOCK)
            return sd_fail(SD_ERR_FORMAT, "%s: 'layers_per_block' entry %d = %lld is out of range (1..%d)", c->path,
                           i, (long long)cfg->layers_per_block[i], SD_UNET_MAX_LAYERS_PER_BLOCK);
        per[i] = cfg->layers_per_block[i];
        rper[i] = cfg->layers_per_block[n - 1 - i] + 1;
    }
    bool nested = false, rnested = false;
    if (!v || cJSON_IsNull(v)) {
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < per[i]; j++)
                cfg->down_depth[i][j] = 1;
    } else {
        SD_TRY(depth_list(c, key, n, per, cfg->down_depth, &nested));
    }
    for (int i = 0; i < n; i++)
        cfg->transformer_layers[i] = cfg->down_depth[i][0];
    cfg->mid_depth = cfg->down_depth[n - 1][0];
    if (nested && !has_r)
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' has per-layer lists (an asymmetric UNet) but '%s' is missing", c->path,
                       key, rkey);
    if (has_r) {
        SD_TRY(depth_list(c, rkey, n, rper, cfg->up_depth, &rnested));
    } else {
        for (int i = 0; i < n; i++)
            for (int64_t j = 0; j < rper[i]; j++)
                cfg->up_depth[i][j] = cfg->down_depth[n - 1 - i][0];
    }
    cfg->per_layer_depth = nested || has_r;
    for (int i = 0; i < n; i++) {
        for (int64_t j = 0; j < per[i]; j++)
            if (cfg->down_depth[i][j] < 1 || cfg->down_depth[i][j] > 64)
                return sd_fail(SD_ERR_FORMAT, "%s: '%s' = %lld (block %d) is out of range (1..64)", c->path, key,
                               (long long)cfg->down_depth[i][j], i);
        for (int64_t j = 0; j < rper[i]; j++)
            if (cfg->up_depth[i][j] < 1 || cfg->up_depth[i][j] > 64)
                return sd_fail(SD_ERR_FORMAT, "%s: '%s' = %lld (up block %d) is out of range (1..64)", c->path,
                               has_r ? rkey : key, (long long)cfg->up_depth[i][j], i);
    }
    return SD_OK;
}

/* encoder: a ControlNetModel config (no class check, no up blocks) */
static sd_status config_parse(const sd_config *c, sd_unet_config *cfg, bool encoder)
{
    memset(cfg, 0, sizeof *cfg);
    const char *cls;
    SD_TRY(sd_config_str(c, "_class_name", NULL, &cls));
    if (!encoder && cls && strcmp(cls, "UNet2DConditionModel"))
        return unsupported(c, "_class_name", "expected UNet2DConditionModel");

    /* features outside the SD1/SD2/turbo/LCM family */
    SD_TRY(need_str(c, "addition_embed_type", "text_time", NULL,
                    "only SDXL's 'text_time' added conditioning (pooled text embedding + time ids)"));
    SD_TRY(need_null(c, "class_embed_type", "class embeddings"));
    SD_TRY(need_null(c, "num_class_embeds", "class embeddings"));
    SD_TRY(need_null(c, "encoder_hid_dim", "encoder_hid_proj"));
    SD_TRY(need_null(c, "encoder_hid_dim_type", "encoder_hid_proj"));
    SD_TRY(need_null(c, "time_embedding_act_fn", "time_embed_act"));
    SD_TRY(need_null(c, "timestep_post_act", "TimestepEmbedding post_act"));
    SD_TRY(need_false(c, "dual_cross_attention", "DualTransformer2DModel"));
    SD_TRY(need_str(c, "act_fn", "silu", "swish", "only silu activations"));
    SD_TRY(need_str(c, "resnet_time_scale_shift", "default", NULL, "only 'default' (additive time embedding)"));
    SD_TRY(need_str(c, "time_embedding_type", "positional", NULL, "only sinusoidal 'positional' timesteps"));
    SD_TRY(need_str(c, "attention_type", "default", NULL, "no GLIGEN / gated attention"));

    static const char *const def_down[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                           "DownBlock2D"};
    static const char *const def_up[] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                         "CrossAttnUpBlock2D"};
    int n, nu;
    SD_TRY(block_types(c, "down_block_types", def_down, 4, false, cfg->down_cross, &n));
    if (encoder) { /* the mirror image, as a UNet for it would have */
        nu = n;
        for (int i = 0; i < n; i++)
            cfg->up_cross[i] = cfg->down_cross[n - 1 - i];
    } else {
        SD_TRY(block_types(c, "up_block_types", def_up, 4, true, cfg->up_cross, &nu));
    }
    if (n < 1 || nu != n)
        return sd_fail(SD_ERR_FORMAT, "%s: 'down_block_types' (%d) and 'up_block_types' (%d) must have the same, "
                       "non-zero number of entries", c->path, n, nu);
    cfg->n_blocks = n;

    const cJSON *mid = raw(c, "mid_block_type");
    if (!mid) {
        cfg->has_mid_block = true; /* diffusers default */
    } else if (cJSON_IsNull(mid)) {
        cfg->has_mid_block = false;
    } else if (cJSON_IsString(mid) && !strcmp(mid->valuestring, "UNetMidBlock2DCrossAttn")) {
        cfg->has_mid_block = true;
    } else {
        return unsupported(c, "mid_block_type", "only UNetMidBlock2DCrossAttn or null");
    }
    if (encoder && !cfg->has_mid_block)
        return unsupported(c, "mid_block_type", "a ControlNet needs its UNetMidBlock2DCrossAttn");

    if (sd_config_has(c, "block_out_channels")) {
        int nb;
        SD_TRY(sd_config_int_list(c, "block_out_channels", cfg->block_out_channels, SD_UNET_MAX_BLOCKS, 0, &nb));
        if (nb != n)
            return sd_fail(SD_ERR_FORMAT, "%s: 'block_out_channels' has %d entries but there are %d down blocks",
                           c->path, nb, n);
    } else {
        static const int64_t def_boc[] = {320, 640, 1280, 1280};
        if (n != 4)
            return sd_fail(SD_ERR_FORMAT, "%s: 'block_out_channels' is missing", c->path);
        memcpy(cfg->block_out_channels, def_boc, sizeof def_boc);
    }

    const cJSON *ss = raw(c, "sample_size");
    if (cJSON_IsArray(ss) && ss->child && cJSON_IsNumber(ss->child))
        cfg->sample_size = (int64_t)ss->child->valuedouble;
    else
        SD_TRY(sd_config_int(c, "sample_size", 0, &cfg->sample_size));
    SD_TRY(sd_config_int(c, "in_channels", 4, &cfg->in_channels));
    SD_TRY(sd_config_int(c, "out_channels", 4, &cfg->out_channels));
    SD_TRY(sd_config_int(c, "downsample_padding", 1, &cfg->downsample_padding));
    SD_TRY(sd_config_int(c, "conv_in_kernel", 3, &cfg->conv_in_kernel));
    SD_TRY(sd_config_int(c, "conv_out_kernel", 3, &cfg->conv_out_kernel));
    SD_TRY(sd_config_int(c, "time_cond_proj_dim", 0, &cfg->time_cond_proj_dim));
    SD_TRY(sd_config_int(c, "time_embedding_dim", 4 * cfg->block_out_channels[0], &cfg->time_embed_dim));
    if (raw(c, "norm_num_groups") && cJSON_IsNull(raw(c, "norm_num_groups")))
        return unsupported(c, "norm_num_groups", "GroupNorm-free UNets");
    SD_TRY(sd_config_int(c, "norm_num_groups", 32, &cfg->norm_num_groups));
    SD_TRY(sd_config_float(c, "norm_eps", 1e-5, &cfg->norm_eps));
    SD_TRY(sd_config_float(c, "freq_shift", 0, &cfg->freq_shift));
    SD_TRY(sd_config_float(c, "mid_block_scale_factor", 1, &cfg->mid_block_scale_factor));
    SD_TRY(sd_config_bool(c, "flip_sin_to_cos", true, &cfg->flip_sin_to_cos));
    SD_TRY(sd_config_bool(c, "use_linear_projection", false, &cfg->use_linear_projection));
    SD_TRY(sd_config_bool(c, "upcast_attention", false, &cfg->upcast_attention));
    SD_TRY(sd_config_bool(c, "center_input_sample", false, &cfg->center_input_sample));

    const char *aet = NULL;
    SD_TRY(sd_config_str(c, "addition_embed_type", NULL, &aet));
    cfg->add_text_time = aet != NULL;
    if (cfg->add_text_time) {
        SD_TRY(sd_config_int(c, "addition_time_embed_dim", 0, &cfg->addition_time_embed_dim));
        SD_TRY(sd_config_int(c, "projection_class_embeddings_input_dim", 0,
                             &cfg->projection_class_embeddings_input_dim));
        if (cfg->addition_time_embed_dim <= 0 || cfg->addition_time_embed_dim % 2 ||
            cfg->addition_time_embed_dim > 65536)
            return sd_fail(SD_ERR_FORMAT, "%s: 'addition_time_embed_dim' must be a positive even number with "
                           "addition_embed_type 'text_time' (SDXL: 256)", c->path);
        if (cfg->projection_class_embeddings_input_dim <= SD_UNET_TIME_IDS * cfg->addition_time_embed_dim ||
            cfg->projection_class_embeddings_input_dim > (1 << 20))
            return sd_fail(SD_ERR_FORMAT, "%s: 'projection_class_embeddings_input_dim' = %lld must exceed 6 x "
                           "addition_time_embed_dim = %lld (it is the pooled text width + 6 time-id embeddings; "
                           "SDXL: 1280 + 6 x 256 = 2816)", c->path,
                           (long long)cfg->projection_class_embeddings_input_dim,
                           (long long)(SD_UNET_TIME_IDS * cfg->addition_time_embed_dim));
    }

    SD_TRY(block_ints(c, "layers_per_block", 2, n, cfg->layers_per_block, NULL));
    SD_TRY(transformer_depths(c, cfg));
    SD_TRY(block_ints(c, "cross_attention_dim", 1280, n, cfg->cross_attention_dim, NULL));
    SD_TRY(block_ints(c, "attention_head_dim", 8, n, cfg->attention_head_dim_raw, NULL));
    SD_TRY(block_ints(c, "num_attention_heads", 0, n, cfg->num_heads, &cfg->num_attention_heads_given));
    /* diffusers: num_attention_heads = num_attention_heads or attention_head_dim */
    if (!cfg->num_attention_heads_given)
        memcpy(cfg->num_heads, cfg->attention_head_dim_raw, sizeof cfg->num_heads);
    SD_TRY(block_bools(c, "only_cross_attention", n, cfg->only_cross_attention));

    /* sanity */
    const char *bad = NULL;
    if (cfg->in_channels <= 0)
        bad = "in_channels";
    else if (cfg->out_channels <= 0)
        bad = "out_channels";
    else if (cfg->norm_num_groups <= 0)
        bad = "norm_num_groups";
    else if (!(cfg->norm_eps > 0))
        bad = "norm_eps";
    else if (cfg->time_embed_dim <= 0)
        bad = "time_embedding_dim";
    else if (cfg->time_cond_proj_dim < 0)
        bad = "time_cond_proj_dim";
    else if (cfg->downsample_padding < 0 || cfg->downsample_padding > 8)
        bad = "downsample_padding";
    else if (cfg->mid_block_scale_factor == 0)
        bad = "mid_block_scale_factor";
    else if (cfg->sample_size < 0 || cfg->sample_size > 65536) /* 0: unknown; native size = sample_size * 8 */
        bad = "sample_size";
    else if (cfg->block_out_channels[0] % 2)
        bad = "block_out_channels"; /* sinusoidal embedding of block_out_channels[0] */
    for (int i = 0; !bad && i < n; i++) {
        if (cfg->block_out_channels[i] <= 0 || cfg->block_out_channels[i] > 65536 ||
            cfg->block_out_channels[i] % cfg->norm_num_groups)
            bad = "block_out_channels";
        else if (cfg->layers_per_block[i] <= 0 || cfg->layers_per_block[i] > SD_UNET_MAX_LAYERS_PER_BLOCK)
            bad = "layers_per_block";
        else if (cfg->transformer_layers[i] <= 0 || cfg->transformer_layers[i] > 64)
            bad = "transformer_layers_per_block";
        else if (cfg->cross_attention_dim[i] <= 0 || cfg->cross_attention_dim[i] > 65536)
            bad = "cross_attention_dim";
        else if (cfg->num_heads[i] <= 0 || cfg->num_heads[i] > cfg->block_out_channels[i])
            bad = cfg->num_attention_heads_given ? "num_attention_heads" : "attention_head_dim";
    }
    if (!bad && (cfg->conv_in_kernel <= 0 || cfg->conv_in_kernel % 2 == 0))
        return unsupported(c, "conv_in_kernel", "odd kernel sizes only");
    if (!bad && (cfg->conv_out_kernel <= 0 || cfg->conv_out_kernel % 2 == 0))
        return unsupported(c, "conv_out_kernel", "odd kernel sizes only");
    if (bad) {
        const cJSON *v = raw(c, bad);
        char *txt = v ? cJSON_PrintUnformatted(v) : NULL;
        sd_status s = sd_fail(SD_ERR_FORMAT,
                              "%s: '%s' = %s is out of range (channels must be positive multiples of "
                              "norm_num_groups = %lld, head counts at most the channel count)",
                              c->path, bad, txt ? txt : "(default)", (long long)cfg->norm_num_groups);
        free(txt);
        return s;
    }
    return SD_OK;
}

sd_status sd_unet_config_from(const sd_config *c, sd_unet_config *cfg) { return config_parse(c, cfg, false); }

sd_status sd_unet_config_from_encoder(const sd_config *c, sd_unet_config *cfg) { return config_parse(c, cfg, true); }

sd_status sd_unet_config_load(const char *path, sd_unet_config *cfg)
{
    sd_config c;
    SD_TRY(sd_config_load(path, &c));
    sd_status s = sd_unet_config_from(&c, cfg);
    sd_config_free(&c);
    return s;
}
