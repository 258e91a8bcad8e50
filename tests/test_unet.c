/* UNet2DConditionModel: reference cases (fixtures and the project's own
 * generated cases) plus fixture-free tests on tiny random models written
 * with the safetensors writer: config parsing (naming trap, unsupported
 * keys), load errors, memory planning, the K/V cache, F16-kept weights. */
#include "test.h"
#include "test_util.h"

#include "backend/ops.h"
#include "check/check.h"
#include "io/safetensors.h"
#include "models/unet.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static sd_backend *g_be;
static char g_tmp[256];

/* ------------------------------------------------------------------ tiny models */

/* A: conv projections, LCM cond_proj, mid block, 2 levels */
static const char *CFG_A =
    "{\"_class_name\": \"UNet2DConditionModel\", \"in_channels\": 4, \"out_channels\": 4,"
    " \"block_out_channels\": [8, 16], \"layers_per_block\": 1,"
    " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"cross_attention_dim\": 12,"
    " \"attention_head_dim\": 2, \"norm_num_groups\": 4, \"time_cond_proj_dim\": 6,"
    " \"num_attention_heads\": null, \"addition_embed_type\": null, \"mid_block_type\": \"UNetMidBlock2DCrossAttn\"}";

/* B: linear projections, only_cross_attention on level 0, 2 transformer layers,
 * no mid block, downsample_padding 0, per-block heads, 3 levels */
static const char *CFG_B =
    "{\"in_channels\": 4, \"out_channels\": 3, \"block_out_channels\": [8, 16, 16], \"layers_per_block\": [1, 2, 1],"
    " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"],"
    " \"cross_attention_dim\": 12, \"attention_head_dim\": [2, 4, 4], \"norm_num_groups\": 4,"
    " \"use_linear_projection\": true, \"only_cross_attention\": [true, false, false],"
    " \"transformer_layers_per_block\": 2, \"mid_block_type\": null, \"downsample_padding\": 0,"
    " \"upcast_attention\": true, \"mid_block_scale_factor\": 1}";

static char *tmp_path(const char *name) { return test_tmp_path(g_tmp, name); }

static bool write_text(const char *path, const char *text)
{
    return sd_write_file(path, text, strlen(text)) == SD_OK;
}

typedef struct wgen {
    sd_st_writer *w;
    unsigned long long seed;
    const char *skip;    /* leave this tensor out */
    const char *reshape; /* give this tensor a wrong first dimension */
    char want[128], got[128];
    sd_dtype dt;
    int count;
    bool fail;
} wgen;

static void shape_str(const int64_t *s, int n, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ",%lld" : "%lld", (long long)s[i]);
    snprintf(buf + o, cap - o, "]");
}

static void gen_cb(void *user, const char *name, const int64_t *shape, int ndim)
{
    wgen *g = user;
    g->count++;
    if (g->skip && !strcmp(name, g->skip))
        return;
    int64_t sh[8];
    memcpy(sh, shape, (size_t)ndim * sizeof *sh);
    if (g->reshape && !strcmp(name, g->reshape)) {
        shape_str(sh, ndim, g->want, sizeof g->want);
        sh[0] += 1;
        shape_str(sh, ndim, g->got, sizeof g->got);
    }
    size_t n = 1, fan_in = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)sh[i];
    for (int i = 1; i < ndim; i++)
        fan_in *= (size_t)sh[i];
    float *f = malloc(n * sizeof *f + 4);
    uint16_t *h = malloc(n * sizeof *h + 4);
    size_t len = strlen(name);
    bool norm_w = ndim == 1 && strstr(name, "norm") && len > 7 && !strcmp(name + len - 7, ".weight");
    float scale = ndim >= 2 ? 1.5f / sqrtf((float)fan_in) : 0.1f;
    for (size_t i = 0; i < n; i++) {
        f[i] = (norm_w ? 1.0f : 0.0f) + scale * test_rand(&g->seed);
        if (g->dt == SD_F16) { /* values exactly representable in F16 */
            h[i] = sd_f32_to_f16(f[i]);
            f[i] = sd_f16_to_f32(h[i]);
        }
    }
    if (sd_st_writer_add(g->w, name, g->dt, ndim, sh, g->dt == SD_F16 ? (const void *)h : (const void *)f) != SD_OK)
        g->fail = true;
    free(f);
    free(h);
}

/* Writes config.json-style text and a random weights file for it. */
static bool make_model(const char *cfg_text, const char *cfg_name, const char *w_name, wgen *g)
{
    sd_unet_config cfg;
    if (!write_text(tmp_path(cfg_name), cfg_text))
        return false;
    if (sd_unet_config_load(tmp_path(cfg_name), &cfg) != SD_OK) {
        fprintf(stderr, "  config: %s\n", sd_last_error());
        return false;
    }
    g->w = sd_st_writer_new();
    if (!g->seed)
        g->seed = 12345;
    sd_status s = sd_unet_list_tensors(&cfg, gen_cb, g);
    if (s == SD_OK && !g->fail)
        s = sd_st_writer_save(g->w, tmp_path(w_name));
    sd_st_writer_free(g->w);
    g->w = NULL;
    return s == SD_OK && !g->fail;
}

typedef struct model {
    sd_unet_config cfg;
    sd_weights w;
    sd_unet *u;
} model;

static sd_status load_model(model *m, const char *cfg_name, const char *w_name, sd_dtype wdt)
{
    memset(m, 0, sizeof *m);
    SD_TRY(sd_unet_config_load(tmp_path(cfg_name), &m->cfg));
    sd_weights_init(&m->w, g_be, "unet", wdt);
    SD_TRY(sd_weights_add_file(&m->w, tmp_path(w_name), NULL, false));
    SD_TRY(sd_weights_finalize(&m->w));
    return sd_unet_load(&m->w, &m->cfg, &m->u);
}

static void free_model(model *m)
{
    sd_unet_free(m->u);
    sd_weights_free(&m->w);
}

/* ------------------------------------------------------------------ forward helpers */

typedef struct fin {
    int64_t B, H, W, S, Bc; /* Bc: context batch */
    float *x, *t, *c, *tc;
} fin;

static void fin_make(fin *in, const sd_unet_config *cfg, int64_t B, int64_t H, int64_t Bc, int64_t S,
                     unsigned long long seed)
{
    in->B = B;
    in->H = in->W = H;
    in->S = S;
    in->Bc = Bc;
    size_t nx = (size_t)(B * cfg->in_channels * H * H), nc = (size_t)(Bc * S * cfg->cross_attention_dim[0]);
    in->x = malloc(nx * sizeof(float));
    in->c = malloc(nc * sizeof(float));
    in->t = malloc((size_t)B * sizeof(float));
    in->tc = malloc((size_t)(B * (cfg->time_cond_proj_dim + 1)) * sizeof(float));
    for (size_t i = 0; i < nx; i++)
        in->x[i] = test_rand(&seed);
    for (size_t i = 0; i < nc; i++)
        in->c[i] = test_rand(&seed);
    for (int64_t b = 0; b < B; b++)
        in->t[b] = (float)(999 - 317 * b % 1000);
    for (int64_t i = 0; i < B * cfg->time_cond_proj_dim; i++)
        in->tc[i] = test_rand(&seed);
}

static void fin_free(fin *in)
{
    free(in->x);
    free(in->t);
    free(in->c);
    free(in->tc);
}

static sd_tensor up(sd_ctx *ctx, sd_dtype dt, const float *h, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = {a, b, c, d};
    sd_tensor t = sd_new(ctx, dt, nd, ne);
    sd_tensor_from_f32(ctx, &t, h);
    return t;
}

/* kv: NULL = direct; else the cache is (re)computed from in->c first */
static sd_tensor fwd(sd_ctx *ctx, const model *m, const fin *in, sd_unet_kv *kv)
{
    const sd_unet_config *cfg = &m->cfg;
    sd_tensor x = up(ctx, SD_F32, in->x, 4, in->B, cfg->in_channels, in->H, in->W);
    sd_tensor t = up(ctx, SD_F32, in->t, 1, in->B, 0, 0, 0);
    sd_tensor tc = {0};
    if (cfg->time_cond_proj_dim)
        tc = up(ctx, SD_F32, in->tc, 2, in->B, cfg->time_cond_proj_dim, 0, 0);
    size_t mk = sd_mark(ctx);
    sd_tensor c = up(ctx, SD_F32, in->c, 3, in->Bc, in->S, cfg->cross_attention_dim[0], 0);
    sd_tensor none = {0};
    if (kv) {
        sd_unet_kv_compute(ctx, m->u, c, kv);
        sd_release(ctx, mk);
    }
    return sd_unet_forward(ctx, m->u, x, t, kv ? none : c, cfg->time_cond_proj_dim ? &tc : NULL, kv);
}

/* plan, allocate, run; returns malloc'd output (NULL on error), *peak */
static float *run_fwd(const model *m, const fin *in, sd_unet_kv *kv, size_t *peak_out)
{
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, g_be);
    fwd(&ctx, m, in, kv);
    if (!sd_ok(&ctx)) {
        fprintf(stderr, "  plan: %s\n", sd_last_error());
        return NULL;
    }
    size_t peak = ctx.peak;
    if (peak_out)
        *peak_out = peak;
    if (sd_ctx_init(&ctx, g_be, peak) != SD_OK)
        return NULL;
    sd_tensor y = fwd(&ctx, m, in, kv);
    float *out = NULL;
    if (sd_ok(&ctx)) {
        out = malloc((size_t)sd_numel(&y) * sizeof(float));
        sd_tensor_to_f32(&ctx, &y, out);
    } else {
        fprintf(stderr, "  run: %s\n", sd_last_error());
    }
    sd_ctx_free(&ctx);
    return out;
}

static size_t out_n(const model *m, const fin *in) { return (size_t)(in->B * m->cfg.out_channels * in->H * in->W); }

static double maxdiff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d))
            d = isnan(e) ? INFINITY : e;
    }
    return d;
}

static bool all_finite(const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return false;
    return true;
}

/* ------------------------------------------------------------------ config tests */

static sd_status cfg_from_text(const char *text, sd_unet_config *cfg)
{
    sd_config c;
    SD_TRY(sd_config_parse(text, strlen(text), "config.json", &c));
    sd_status s = sd_unet_config_from(&c, cfg);
    sd_config_free(&c);
    return s;
}

/* CFG_A with `"key": value,` inserted first (cJSON finds the first of duplicate keys) */
static sd_status cfg_with(const char *base, const char *kv, sd_unet_config *cfg)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "{%s, %s", kv, base + 1);
    return cfg_from_text(buf, cfg);
}

TEST(config_naming_trap)
{
    sd_unet_config cfg;
    /* SD1.x: attention_head_dim is the number of heads */
    CHECK_STATUS(cfg_with(CFG_A, "\"attention_head_dim\": 8", &cfg), SD_OK);
    CHECK(!cfg.num_attention_heads_given);
    CHECK(cfg.num_heads[0] == 8 && cfg.num_heads[1] == 8);
    CHECK(cfg.attention_head_dim_raw[0] == 8);
    /* SD2.x: per-level tuple = heads per level */
    CHECK_STATUS(cfg_from_text(CFG_B, &cfg), SD_OK);
    CHECK(cfg.n_blocks == 3);
    CHECK(cfg.num_heads[0] == 2 && cfg.num_heads[1] == 4 && cfg.num_heads[2] == 4);
    /* num_attention_heads given: it wins, attention_head_dim is ignored for the heads */
    CHECK_STATUS(cfg_with(CFG_A, "\"num_attention_heads\": [2, 4], \"attention_head_dim\": 64", &cfg), SD_OK);
    CHECK(cfg.num_attention_heads_given);
    CHECK(cfg.num_heads[0] == 2 && cfg.num_heads[1] == 4);
    CHECK(cfg.attention_head_dim_raw[0] == 64);
    CHECK_STATUS(cfg_with(CFG_A, "\"num_attention_heads\": 4", &cfg), SD_OK);
    CHECK(cfg.num_heads[0] == 4 && cfg.num_heads[1] == 4);
    /* the rest of CFG_A / CFG_B */
    CHECK_STATUS(cfg_from_text(CFG_A, &cfg), SD_OK);
    CHECK(cfg.time_cond_proj_dim == 6 && cfg.has_mid_block && cfg.down_cross[0] && !cfg.down_cross[1]);
    CHECK(!cfg.up_cross[0] && cfg.up_cross[1] && cfg.time_embed_dim == 32 && cfg.norm_eps == 1e-5);
    CHECK(cfg.flip_sin_to_cos && cfg.freq_shift == 0 && cfg.downsample_padding == 1);
    CHECK_STATUS(cfg_from_text(CFG_B, &cfg), SD_OK);
    CHECK(!cfg.has_mid_block && cfg.use_linear_projection && cfg.upcast_attention);
    CHECK(cfg.only_cross_attention[0] && !cfg.only_cross_attention[1] && cfg.transformer_layers[2] == 2);
    CHECK(cfg.layers_per_block[1] == 2 && cfg.downsample_padding == 0 && cfg.out_channels == 3);
    /* the fixture configs, when present */
    const char *fx = getenv("SD_FIXTURES");
    if (fx && *fx) {
        char p[512];
        snprintf(p, sizeof p, "%s/models/tiny-sd15/unet/config.json", fx);
        if (sd_file_exists(p)) {
            CHECK_STATUS(sd_unet_config_load(p, &cfg), SD_OK);
            CHECK(cfg.num_heads[0] == 8 && cfg.block_out_channels[0] == 32); /* 8 heads of dim 4 */
        }
        snprintf(p, sizeof p, "%s/models/tiny-sd2/unet/config.json", fx);
        if (sd_file_exists(p)) {
            CHECK_STATUS(sd_unet_config_load(p, &cfg), SD_OK);
            CHECK(cfg.num_heads[0] == 2 && cfg.num_heads[1] == 4 && cfg.num_heads[2] == 4);
        }
    }
}

TEST(config_unsupported_keys)
{
    static const struct {
        const char *kv, *key;
    } cases[] = {
        {"\"addition_embed_type\": \"image\"", "addition_embed_type"},
        {"\"addition_embed_type\": \"text\"", "addition_embed_type"},
        {"\"class_embed_type\": \"timestep\"", "class_embed_type"},
        {"\"num_class_embeds\": 10", "num_class_embeds"},
        {"\"encoder_hid_dim\": 32", "encoder_hid_dim"},
        {"\"encoder_hid_dim_type\": \"text_proj\"", "encoder_hid_dim_type"},
        {"\"dual_cross_attention\": true", "dual_cross_attention"},
        {"\"resnet_time_scale_shift\": \"scale_shift\"", "resnet_time_scale_shift"},
        {"\"time_embedding_type\": \"fourier\"", "time_embedding_type"},
        {"\"time_embedding_act_fn\": \"silu\"", "time_embedding_act_fn"},
        {"\"timestep_post_act\": \"silu\"", "timestep_post_act"},
        {"\"act_fn\": \"gelu\"", "act_fn"},
        {"\"attention_type\": \"gated\"", "attention_type"},
        {"\"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\"", "mid_block_type"},
        {"\"down_block_types\": [\"AttnDownBlock2D\", \"DownBlock2D\"]", "down_block_types"},
        {"\"up_block_types\": [\"UpBlock2D\", \"SimpleCrossAttnUpBlock2D\"]", "up_block_types"},
        {"\"norm_num_groups\": null", "norm_num_groups"},
        {"\"conv_in_kernel\": 4", "conv_in_kernel"},
        {"\"_class_name\": \"UNet2DModel\"", "_class_name"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        sd_unet_config cfg;
        sd_status s = cfg_with(CFG_A, cases[i].kv, &cfg);
        CHECK_MSG(s == SD_ERR_UNSUPPORTED, "%s -> %s (%s)", cases[i].kv, sd_status_name(s), sd_last_error());
        CHECK_MSG(strstr(sd_last_error(), cases[i].key) != NULL, "error '%s' lacks '%s'", sd_last_error(),
                  cases[i].key);
    }
    /* keys without effect on the supported block types are accepted */
    sd_unet_config cfg;
    CHECK_STATUS(cfg_with(CFG_A, "\"resnet_skip_time_act\": false, \"cross_attention_norm\": null, "
                          "\"act_fn\": \"swish\", \"dropout\": 0.0",
                          &cfg),
                 SD_OK);
    /* SDXL's text_time is accepted with its two dimensions, which must be consistent */
    CHECK_STATUS(cfg_with(CFG_A, "\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 8, "
                          "\"projection_class_embeddings_input_dim\": 68", &cfg),
                 SD_OK);
    CHECK(cfg.add_text_time && cfg.addition_time_embed_dim == 8 && cfg.projection_class_embeddings_input_dim == 68);
    static const struct {
        const char *kv, *key;
    } bad_xl[] = {
        {"\"addition_embed_type\": \"text_time\", \"projection_class_embeddings_input_dim\": 68",
         "addition_time_embed_dim"},
        {"\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 7, "
         "\"projection_class_embeddings_input_dim\": 68", "addition_time_embed_dim"},
        {"\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 8, "
         "\"projection_class_embeddings_input_dim\": 48", "projection_class_embeddings_input_dim"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad_xl); i++) {
        sd_status s = cfg_with(CFG_A, bad_xl[i].kv, &cfg);
        CHECK_MSG(s == SD_ERR_FORMAT, "%s -> %s (%s)", bad_xl[i].kv, sd_status_name(s), sd_last_error());
        CHECK_MSG(strstr(sd_last_error(), bad_xl[i].key) != NULL, "error '%s' lacks '%s'", sd_last_error(),
                  bad_xl[i].key);
    }
    /* asymmetric depth (SSD-1B style): per-layer lists, the up path from the reverse list, mid = last entry */
    CHECK_STATUS(cfg_with(CFG_A, "\"layers_per_block\": 2, \"transformer_layers_per_block\": [[1, 2], 3], "
                          "\"reverse_transformer_layers_per_block\": [[4, 5, 6], 1]", &cfg),
                 SD_OK);
    CHECK(cfg.per_layer_depth && cfg.down_depth[0][0] == 1 && cfg.down_depth[0][1] == 2 && cfg.down_depth[1][1] == 3);
    CHECK(cfg.up_depth[0][0] == 4 && cfg.up_depth[0][2] == 6 && cfg.up_depth[1][2] == 1 && cfg.mid_depth == 3);
    CHECK_STATUS(cfg_with(CFG_A, "\"transformer_layers_per_block\": [2, 3]", &cfg), SD_OK);
    CHECK(!cfg.per_layer_depth && cfg.transformer_layers[0] == 2 && cfg.transformer_layers[1] == 3);
    /* malformed values are format errors naming the key */
    static const struct {
        const char *kv, *key;
    } bad[] = {
        {"\"block_out_channels\": [8, 18]", "block_out_channels"},
        {"\"block_out_channels\": [8]", "block_out_channels"},
        {"\"layers_per_block\": [1, 2, 3]", "layers_per_block"},
        {"\"only_cross_attention\": [true]", "only_cross_attention"},
        {"\"attention_head_dim\": 0", "attention_head_dim"},
        {"\"in_channels\": \"four\"", "in_channels"},
        {"\"transformer_layers_per_block\": [[1, 2], 1]", "transformer_layers_per_block"},
        {"\"transformer_layers_per_block\": [[1], 1]", "reverse_transformer_layers_per_block"},
        {"\"reverse_transformer_layers_per_block\": [[1], [1]]", "reverse_transformer_layers_per_block"},
        {"\"transformer_layers_per_block\": [1, 0]", "transformer_layers_per_block"},
        {"\"transformer_layers_per_block\": [1e300, 1.5]", "transformer_layers_per_block"},
        {"\"reverse_transformer_layers_per_block\": [\"x\", 1]", "reverse_transformer_layers_per_block"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++) {
        sd_status s = cfg_with(CFG_A, bad[i].kv, &cfg);
        CHECK_MSG(s == SD_ERR_FORMAT, "%s -> %s (%s)", bad[i].kv, sd_status_name(s), sd_last_error());
        CHECK_MSG(strstr(sd_last_error(), bad[i].key) != NULL, "error '%s' lacks '%s'", sd_last_error(), bad[i].key);
    }
    CHECK(sd_unet_config_load(tmp_path("does-not-exist.json"), &cfg) != SD_OK);
}

/* ------------------------------------------------------------------ load errors */

TEST(missing_tensor)
{
    const char *name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    wgen g = {.skip = name, .dt = SD_F32};
    CHECK(make_model(CFG_A, "a.json", "missing.safetensors", &g));
    model m;
    CHECK_STATUS(load_model(&m, "a.json", "missing.safetensors", SD_F32), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS(name);
    CHECK_ERR_CONTAINS("[8,12]");
    CHECK(m.u == NULL);
    free_model(&m);
}

TEST(wrong_shape)
{
    const char *name = "up_blocks.1.resnets.0.conv1.weight";
    wgen g = {.reshape = name, .dt = SD_F32};
    CHECK(make_model(CFG_A, "a.json", "shape.safetensors", &g));
    model m;
    CHECK_STATUS(load_model(&m, "a.json", "shape.safetensors", SD_F32), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(name);
    CHECK_ERR_CONTAINS(g.want); /* what the config needs */
    CHECK_ERR_CONTAINS(g.got);  /* what the file has */
    free_model(&m);
}

/* ------------------------------------------------------------------ forward tests */

static bool g_models_ok;

TEST(make_models)
{
    wgen ga = {.dt = SD_F32, .seed = 1};
    wgen gb = {.dt = SD_F32, .seed = 2};
    wgen gh = {.dt = SD_F16, .seed = 3};
    g_models_ok = make_model(CFG_A, "a.json", "a.safetensors", &ga) && make_model(CFG_B, "b.json", "b.safetensors", &gb) &&
                  make_model(CFG_A, "a.json", "a16.safetensors", &gh);
    CHECK(g_models_ok);
    CHECK(ga.count > 50 && gb.count > ga.count);
}

TEST(plan_peak_vs_run)
{
    if (!g_models_ok)
        FAIL("the tiny models were not written (see the first test)");
    model m;
    CHECK_STATUS(load_model(&m, "a.json", "a.safetensors", SD_F32), SD_OK);
    if (!m.u) {
        free_model(&m);
        return;
    }
    fin in;
    fin_make(&in, &m.cfg, 2, 16, 2, 7, 77);
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, g_be);
    fwd(&ctx, &m, &in, NULL);
    CHECK(sd_ok(&ctx));
    size_t peak = ctx.peak;
    CHECK(peak > 0);
    /* exactly the planned size works and reaches exactly the planned peak */
    CHECK_STATUS(sd_ctx_init(&ctx, g_be, peak), SD_OK);
    sd_tensor y = fwd(&ctx, &m, &in, NULL);
    CHECK(sd_ok(&ctx));
    CHECK_MSG(ctx.peak == peak, "run peak %zu, planned %zu", ctx.peak, peak);
    CHECK(y.ndim == 4 && y.ne[0] == 2 && y.ne[1] == 4 && y.ne[2] == 16 && y.ne[3] == 16);
    /* the output is the only thing left above the inputs */
    CHECK(ctx.off == (size_t)((uint8_t *)y.data - ctx.base) + ((sd_nbytes(&y) + 63) & ~(size_t)63));
    /* a second run in the same arena is identical */
    float *o1 = malloc(sd_nbytes(&y)), *o2 = malloc(sd_nbytes(&y));
    sd_tensor_to_f32(&ctx, &y, o1);
    sd_ctx_reset(&ctx);
    y = fwd(&ctx, &m, &in, NULL);
    sd_tensor_to_f32(&ctx, &y, o2);
    CHECK(sd_ok(&ctx) && maxdiff(o1, o2, out_n(&m, &in)) == 0 && all_finite(o1, out_n(&m, &in)));
    sd_ctx_free(&ctx);
    /* one cache line less fails cleanly */
    CHECK_STATUS(sd_ctx_init(&ctx, g_be, peak - 64), SD_OK);
    fwd(&ctx, &m, &in, NULL);
    CHECK(ctx.status == SD_ERR_OUT_OF_MEMORY);
    sd_ctx_free(&ctx);
    free(o1);
    free(o2);
    fin_free(&in);
    free_model(&m);
}

static void kv_checks(const char *cfg_name, const char *w_name)
{
    model m;
    CHECK_STATUS(load_model(&m, cfg_name, w_name, SD_F32), SD_OK);
    if (!m.u) {
        free_model(&m);
        return;
    }
    const int64_t B = 3, S = 5;
    fin in;
    fin_make(&in, &m.cfg, B, 8, B, S, 99);
    size_t n = out_n(&m, &in);
    float *direct = run_fwd(&m, &in, NULL, NULL);
    CHECK(direct && all_finite(direct, n));

    /* cache of the same batch: bit-identical */
    size_t bytes = sd_unet_kv_bytes(m.u, B, S, SD_F32);
    CHECK(bytes > 0);
    void *mem = g_be->ops->alloc(g_be, bytes);
    sd_unet_kv *kv = NULL;
    CHECK_STATUS(sd_unet_kv_init(&kv, m.u, mem, B, S, SD_F32), SD_OK);
    float *cached = kv ? run_fwd(&m, &in, kv, NULL) : NULL;
    CHECK(cached && direct && maxdiff(direct, cached, n) == 0);
    free(cached);

    /* prompt change recomputed in place, then back */
    fin in2;
    fin_make(&in2, &m.cfg, B, 8, B, S, 1234);
    memcpy(in2.x, in.x, (size_t)(B * m.cfg.in_channels * 64) * sizeof(float));
    memcpy(in2.tc, in.tc, (size_t)(B * m.cfg.time_cond_proj_dim) * sizeof(float));
    float *direct2 = run_fwd(&m, &in2, NULL, NULL);
    float *cached2 = kv ? run_fwd(&m, &in2, kv, NULL) : NULL;
    CHECK(direct2 && cached2 && maxdiff(direct2, cached2, n) == 0);
    CHECK(direct && direct2 && maxdiff(direct, direct2, n) > 1e-4); /* the prompt matters */
    free(cached2);
    free(direct2);
    fin_free(&in2);

    /* batch-1 cache (one prompt for every row) == context repeated per row */
    fin one;
    fin_make(&one, &m.cfg, B, 8, 1, S, 99);
    memcpy(one.x, in.x, (size_t)(B * m.cfg.in_channels * 64) * sizeof(float));
    memcpy(one.tc, in.tc, (size_t)(B * m.cfg.time_cond_proj_dim) * sizeof(float));
    size_t csz = (size_t)(S * m.cfg.cross_attention_dim[0]);
    for (int64_t b = 0; b < B; b++) /* make in's context rows all equal to one's */
        memcpy(in.c + b * csz, one.c, csz * sizeof(float));
    float *rep = run_fwd(&m, &in, NULL, NULL);
    float *bc_direct = run_fwd(&m, &one, NULL, NULL); /* context [1,S,D] broadcast */
    void *mem1 = g_be->ops->alloc(g_be, sd_unet_kv_bytes(m.u, 1, S, SD_F32));
    sd_unet_kv *kv1 = NULL;
    CHECK_STATUS(sd_unet_kv_init(&kv1, m.u, mem1, 1, S, SD_F32), SD_OK);
    float *bc_cached = kv1 ? run_fwd(&m, &one, kv1, NULL) : NULL;
    CHECK(rep && bc_direct && bc_cached);
    if (rep && bc_direct && bc_cached) {
        double d1 = maxdiff(rep, bc_direct, n), d2 = maxdiff(bc_direct, bc_cached, n);
        CHECK_MSG(d1 <= 1e-5, "broadcast context vs repeated: %g", d1);
        CHECK_MSG(d2 == 0, "broadcast cache vs broadcast context: %g", d2);
    }
    free(rep);
    free(bc_direct);
    free(bc_cached);

    /* misuse: cache of batch 2 for a batch of 3; context of the wrong shape */
    void *mem2 = g_be->ops->alloc(g_be, sd_unet_kv_bytes(m.u, 2, S, SD_F32));
    sd_unet_kv *kv2 = NULL;
    CHECK_STATUS(sd_unet_kv_init(&kv2, m.u, mem2, 2, S, SD_F32), SD_OK);
    if (kv2) {
        sd_ctx ctx;
        sd_ctx_init_plan(&ctx, g_be);
        sd_tensor c3 = up(&ctx, SD_F32, in.c, 3, 3, S, m.cfg.cross_attention_dim[0], 0);
        sd_unet_kv_compute(&ctx, m.u, c3, kv2);
        CHECK(ctx.status == SD_ERR_SHAPE);
        sd_ctx_init_plan(&ctx, g_be);
        fwd(&ctx, &m, &in, kv2);
        CHECK(ctx.status == SD_ERR_SHAPE);
    }
    sd_unet_kv *kv_bad = NULL;
    CHECK_STATUS(sd_unet_kv_init(&kv_bad, m.u, mem2, 0, S, SD_F32), SD_ERR_INVALID_ARGUMENT);
    CHECK(kv_bad == NULL);
    sd_unet_kv_free(kv2);
    g_be->ops->free(g_be, mem2);

    sd_unet_kv_free(kv1);
    g_be->ops->free(g_be, mem1);
    sd_unet_kv_free(kv);
    g_be->ops->free(g_be, mem);
    fin_free(&one);
    fin_free(&in);
    free(direct);
    free_model(&m);
}

TEST(kv_cache_equality)
{
    if (!g_models_ok)
        FAIL("the tiny models were not written (see the first test)");
    kv_checks("a.json", "a.safetensors");
    kv_checks("b.json", "b.safetensors"); /* linear proj, only_cross_attention (attn1 cached too), no mid block */
}

TEST(per_row_timesteps)
{
    if (!g_models_ok)
        FAIL("the tiny models were not written (see the first test)");
    model m;
    CHECK_STATUS(load_model(&m, "b.json", "b.safetensors", SD_F32), SD_OK);
    if (!m.u) {
        free_model(&m);
        return;
    }
    fin in;
    fin_make(&in, &m.cfg, 3, 8, 3, 4, 5);
    float *all = run_fwd(&m, &in, NULL, NULL);
    CHECK(all != NULL);
    size_t row = (size_t)(m.cfg.out_channels * 64);
    size_t xrow = (size_t)(m.cfg.in_channels * 64), crow = (size_t)(4 * m.cfg.cross_attention_dim[0]);
    for (int b = 0; all && b < 3; b++) {
        fin one = in;
        one.B = one.Bc = 1;
        one.x = in.x + b * xrow;
        one.c = in.c + b * crow;
        one.t = in.t + b;
        float *o = run_fwd(&m, &one, NULL, NULL);
        CHECK(o != NULL);
        if (o) {
            double d = maxdiff(o, all + b * row, row);
            CHECK_MSG(d <= 1e-5, "row %d: %g", b, d);
        }
        free(o);
    }
    free(all);
    fin_free(&in);
    free_model(&m);
}

TEST(f16_weights_both_modes)
{
    if (!g_models_ok)
        FAIL("the tiny models were not written (see the first test)");
    model m32, m16;
    CHECK_STATUS(load_model(&m32, "a.json", "a16.safetensors", SD_F32), SD_OK);
    CHECK_STATUS(load_model(&m16, "a.json", "a16.safetensors", SD_F16), SD_OK);
    if (m32.u && m16.u) {
        fin in;
        fin_make(&in, &m32.cfg, 2, 8, 2, 3, 8);
        float *a = run_fwd(&m32, &in, NULL, NULL), *b = run_fwd(&m16, &in, NULL, NULL);
        CHECK(a && b);
        if (a && b)
            CHECK_MSG(maxdiff(a, b, out_n(&m32, &in)) == 0, "F16-kept vs F32-converted differ");
        CHECK(m16.w.bytes_device + m16.w.bytes_mapped < m32.w.bytes_device + m32.w.bytes_mapped);
        free(a);
        free(b);
        fin_free(&in);
    }
    free_model(&m32);
    free_model(&m16);
}

TEST(forward_errors)
{
    if (!g_models_ok)
        FAIL("the tiny models were not written (see the first test)");
    model m;
    CHECK_STATUS(load_model(&m, "a.json", "a.safetensors", SD_F32), SD_OK);
    if (!m.u) {
        free_model(&m);
        return;
    }
    sd_ctx ctx;
    float z[4096] = {0};
    const sd_unet_config *c = &m.cfg;
    struct {
        int64_t C, H, T, Bc, D, tcd;
        bool tc;
        sd_status want;
    } cases[] = {
        {4, 8, 2, 2, 12, 6, true, SD_OK},
        {4, 8, 2, 2, 12, 6, false, SD_OK},                 /* cond is optional */
        {3, 8, 2, 2, 12, 6, true, SD_ERR_SHAPE},           /* channels */
        {4, 7, 2, 2, 12, 6, true, SD_ERR_UNSUPPORTED},     /* odd size */
        {4, 8, 3, 2, 12, 6, true, SD_ERR_SHAPE},           /* timesteps */
        {4, 8, 2, 3, 12, 6, true, SD_ERR_SHAPE},           /* context batch */
        {4, 8, 2, 2, 10, 6, true, SD_ERR_SHAPE},           /* context width */
        {4, 8, 2, 2, 12, 5, true, SD_ERR_SHAPE},           /* timestep_cond width */
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        sd_ctx_init_plan(&ctx, g_be);
        sd_tensor x = up(&ctx, SD_F32, z, 4, 2, cases[i].C, cases[i].H, cases[i].H);
        sd_tensor t = up(&ctx, SD_F32, z, 1, cases[i].T, 0, 0, 0);
        sd_tensor cx = up(&ctx, SD_F32, z, 3, cases[i].Bc, 3, cases[i].D, 0);
        sd_tensor tc = up(&ctx, SD_F32, z, 2, 2, cases[i].tcd, 0, 0);
        sd_unet_forward(&ctx, m.u, x, t, cx, cases[i].tc ? &tc : NULL, NULL);
        CHECK_MSG(ctx.status == cases[i].want, "case %zu: %s (%s)", i, sd_status_name(ctx.status), sd_last_error());
    }
    (void)c;
    free_model(&m);
    /* timestep_cond for a model without cond_proj */
    CHECK_STATUS(load_model(&m, "b.json", "b.safetensors", SD_F32), SD_OK);
    if (m.u) {
        sd_ctx_init_plan(&ctx, g_be);
        sd_tensor x = up(&ctx, SD_F32, z, 4, 1, 4, 8, 8);
        sd_tensor t = up(&ctx, SD_F32, z, 1, 1, 0, 0, 0);
        sd_tensor cx = up(&ctx, SD_F32, z, 3, 1, 3, 12, 0);
        sd_tensor tc = up(&ctx, SD_F32, z, 2, 1, 6, 0, 0);
        sd_unet_forward(&ctx, m.u, x, t, cx, &tc, NULL);
        CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("time_cond_proj_dim");
    }
    free_model(&m);
}

/* ------------------------------------------------------------------ reference cases */

static bool is_unet_case(const char *case_dir, const char *root)
{
    char p[2048];
    char *mp = sd_path_join(case_dir, "manifest.json");
    sd_config man, mc;
    sd_status ls = mp ? sd_config_load(mp, &man) : SD_ERR_OUT_OF_MEMORY;
    free(mp);
    if (ls != SD_OK)
        return false;
    const char *md = NULL, *cls = NULL;
    bool yes = false;
    sd_config_str(&man, "model_dir", NULL, &md);
    if (md && !sd_config_has(&man, "pipeline") && !sd_config_has(&man, "stream_constructor")) {
        snprintf(p, sizeof p, "%s/%s/config.json", root, md);
        if (sd_config_load(p, &mc) == SD_OK) {
            sd_config_str(&mc, "_class_name", NULL, &cls);
            yes = cls && !strcmp(cls, "UNet2DConditionModel");
            sd_config_free(&mc);
        }
    }
    sd_config_free(&man);
    return yes;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* runs every UNet case under root/cases; returns how many ran */
static int run_cases(const char *root)
{
    char cases[1024];
    snprintf(cases, sizeof cases, "%s/cases", root);
    DIR *d = opendir(cases);
    if (!d)
        return 0;
    char *names[512];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nn < 512)
        if (e->d_name[0] != '.')
            names[nn++] = sd_strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_names);
    int ran = 0;
    for (int i = 0; i < nn; i++) {
        char dir[2048];
        snprintf(dir, sizeof dir, "%s/%s", cases, names[i]);
        if (is_unet_case(dir, root)) {
            int checked = 0, failed = 0;
            sd_status s = sd_check_case(dir, root, g_be, false, &checked, &failed);
            CHECK_MSG(s == SD_OK && failed == 0 && checked > 0, "%s: %s, %d/%d failed (%s)", names[i],
                      sd_status_name(s), failed, checked, sd_last_error());
            ran++;
        }
        free(names[i]);
    }
    return ran;
}

TEST(fixture_cases)
{
    const char *fx = getenv("SD_FIXTURES");
    char p[1024];
    snprintf(p, sizeof p, "%s/cases", fx ? fx : "");
    if (!fx || !*fx || !sd_dir_exists(p))
        SKIP("SD_FIXTURES not set or has no cases/ (reference fixtures absent)");
    int ran = run_cases(fx);
    CHECK_MSG(ran >= 4, "expected the 4 UNet fixture cases, ran %d", ran);
}

TEST(project_cases)
{
    const char *td = getenv("SD_TEST_DATA");
    char p[1024];
    snprintf(p, sizeof p, "%s/cases", td ? td : "");
    if (!td || !*td || !sd_dir_exists(p))
        FAIL("no $SD_TEST_DATA/cases (committed test data)");
    int ran = run_cases(td);
    CHECK_MSG(ran > 0, "no UNet cases in %s (committed test data)", p);
}

int main(void)
{
    if (!test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_test_unet") || sd_backend_cpu_create(2, &g_be) != SD_OK) {
        fprintf(stderr, "setup failed: %s\n", sd_last_error());
        return 1;
    }
    RUN(config_naming_trap);
    RUN(config_unsupported_keys);
    RUN(missing_tensor);
    RUN(wrong_shape);
    RUN(make_models);
    RUN(plan_peak_vs_run);
    RUN(kv_cache_equality);
    RUN(per_row_timesteps);
    RUN(f16_weights_both_modes);
    RUN(forward_errors);
    RUN(fixture_cases);
    RUN(project_cases);
    test_rm_tree(g_tmp);
    sd_backend_destroy(g_be);
    return test_summary();
}
