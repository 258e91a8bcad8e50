/* CLIP text encoder: fixture cases (when SD_FIXTURES is set), project cases
 * under $SD_TEST_DATA/cases (names containing clip_text), and fixture-independent tests on a tiny
 * random model written with the safetensors writer: numerics against a naive
 * double-precision reference, clip_skip / penultimate / pooled / projection
 * semantics, config and weight errors, argument checks, planning. */
#include "backend/ops.h"
#include "check/check.h"
#include "models/clip.h"
#include "test.h"
#include "test_util.h"

#include <dirent.h>
#include <unistd.h>

static sd_backend *g_be;
static char g_dir[256];

static const char *tmp_path(const char *name) { return test_tmp_path(g_dir, name); }

/* ------------------------------------------------------------ fixture cases */

TEST(fixture_cases)
{
    static const char *const cases[] = {"clip_text_gelu", "clip_text_gelu_projection", "clip_text_quickgelu",
                                        "sdxl_clip_te1", "sdxl_clip_te2"};
    test_fixture_cases(g_be, cases, SD_ARRAY_LEN(cases), "clip_text_* / sdxl_clip_*");
}

TEST(project_cases)
{
    static const char *const needles[] = {"clip_text", "sdxl_clip", NULL}; /* own_clip_text_*, own_sdxl_clip_* */
    test_project_cases(g_be, needles, "*clip_text* / *sdxl_clip*");
}

/* ------------------------------------------------------------ tiny random model */

enum { V = 20, D = 8, H = 2, I = 12, NL = 2, MAXP = 6, PD = 4 };

typedef struct tiny {
    float tok[V * D], pos[MAXP * D];
    float ln1w[NL][D], ln1b[NL][D], ln2w[NL][D], ln2b[NL][D];
    float qw[NL][D * D], qb[NL][D], kw[NL][D * D], kb[NL][D], vw[NL][D * D], vb[NL][D], ow[NL][D * D], ob[NL][D];
    float f1w[NL][I * D], f1b[NL][I], f2w[NL][D * I], f2b[NL][D];
    float lnfw[D], lnfb[D], proj[PD * D];
} tiny;

static tiny g_m;

static void fill(float *p, int n, unsigned long long *s, float scale, float offset)
{
    for (int i = 0; i < n; i++)
        p[i] = offset + scale * test_rand(s);
}

static void init_tiny(void)
{
    unsigned long long s = 1234;
    fill(g_m.tok, V * D, &s, 0.5f, 0);
    fill(g_m.pos, MAXP * D, &s, 0.2f, 0);
    for (int l = 0; l < NL; l++) {
        fill(g_m.ln1w[l], D, &s, 0.2f, 1);
        fill(g_m.ln1b[l], D, &s, 0.1f, 0);
        fill(g_m.ln2w[l], D, &s, 0.2f, 1);
        fill(g_m.ln2b[l], D, &s, 0.1f, 0);
        fill(g_m.qw[l], D * D, &s, 0.5f, 0);
        fill(g_m.qb[l], D, &s, 0.1f, 0);
        fill(g_m.kw[l], D * D, &s, 0.5f, 0);
        fill(g_m.kb[l], D, &s, 0.1f, 0);
        fill(g_m.vw[l], D * D, &s, 0.5f, 0);
        fill(g_m.vb[l], D, &s, 0.1f, 0);
        fill(g_m.ow[l], D * D, &s, 0.5f, 0);
        fill(g_m.ob[l], D, &s, 0.1f, 0);
        fill(g_m.f1w[l], I * D, &s, 0.5f, 0);
        fill(g_m.f1b[l], I, &s, 0.1f, 0);
        fill(g_m.f2w[l], D * I, &s, 0.4f, 0);
        fill(g_m.f2b[l], D, &s, 0.1f, 0);
    }
    fill(g_m.lnfw, D, &s, 0.2f, 1);
    fill(g_m.lnfb, D, &s, 0.1f, 0);
    fill(g_m.proj, PD * D, &s, 0.5f, 0);
}

/* Writes the tiny model; `skip` names a tensor to leave out, `bad` one to
 * write with a wrong shape. */
static const char *write_tiny(const char *file, const char *skip, const char *bad)
{
    sd_st_writer *w = sd_st_writer_new();
    char name[128];
#define ADD(nm, ptr, ...)                                                                                   \
    do {                                                                                                    \
        const int64_t shp_[] = {__VA_ARGS__};                                                               \
        int nd_ = (int)SD_ARRAY_LEN(shp_);                                                                  \
        int64_t sh_[2] = {shp_[0], nd_ > 1 ? shp_[1] : 0};                                                  \
        if (bad && !strcmp(bad, nm))                                                                        \
            sh_[0] -= 1;                                                                                    \
        if (!skip || strcmp(skip, nm))                                                                      \
            CHECK_STATUS(sd_st_writer_add(w, nm, SD_F32, nd_, sh_, ptr), SD_OK);                            \
    } while (0)
    ADD("text_model.embeddings.token_embedding.weight", g_m.tok, V, D);
    ADD("text_model.embeddings.position_embedding.weight", g_m.pos, MAXP, D);
    for (int l = 0; l < NL; l++) {
#define L(suffix) (snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s", l, suffix), name)
        ADD(L("layer_norm1.weight"), g_m.ln1w[l], D);
        ADD(L("layer_norm1.bias"), g_m.ln1b[l], D);
        ADD(L("layer_norm2.weight"), g_m.ln2w[l], D);
        ADD(L("layer_norm2.bias"), g_m.ln2b[l], D);
        ADD(L("self_attn.q_proj.weight"), g_m.qw[l], D, D);
        ADD(L("self_attn.q_proj.bias"), g_m.qb[l], D);
        ADD(L("self_attn.k_proj.weight"), g_m.kw[l], D, D);
        ADD(L("self_attn.k_proj.bias"), g_m.kb[l], D);
        ADD(L("self_attn.v_proj.weight"), g_m.vw[l], D, D);
        ADD(L("self_attn.v_proj.bias"), g_m.vb[l], D);
        ADD(L("self_attn.out_proj.weight"), g_m.ow[l], D, D);
        ADD(L("self_attn.out_proj.bias"), g_m.ob[l], D);
        ADD(L("mlp.fc1.weight"), g_m.f1w[l], I, D);
        ADD(L("mlp.fc1.bias"), g_m.f1b[l], I);
        ADD(L("mlp.fc2.weight"), g_m.f2w[l], D, I);
        ADD(L("mlp.fc2.bias"), g_m.f2b[l], D);
#undef L
    }
    ADD("text_model.final_layer_norm.weight", g_m.lnfw, D);
    ADD("text_model.final_layer_norm.bias", g_m.lnfb, D);
    ADD("text_projection.weight", g_m.proj, PD, D);
#undef ADD
    const char *p = tmp_path(file);
    CHECK_STATUS(sd_st_writer_save(w, p), SD_OK);
    sd_st_writer_free(w);
    return p;
}

static sd_clip_config tiny_cfg(bool proj, int eos)
{
    sd_clip_config c = {.vocab_size = V,
                        .hidden_size = D,
                        .intermediate_size = I,
                        .num_hidden_layers = NL,
                        .num_attention_heads = H,
                        .max_position_embeddings = MAXP,
                        .hidden_act = SD_UNARY_QUICK_GELU,
                        .layer_norm_eps = 1e-5f,
                        .projection_dim = PD,
                        .eos_token_id = eos,
                        .with_projection = proj};
    return c;
}

/* ---- naive double reference: hs[l] = hidden_states[l] [S, D] for one sequence */

static void ref_ln(const double *x, const float *w, const float *b, double *y)
{
    double m = 0, v = 0;
    for (int i = 0; i < D; i++)
        m += x[i];
    m /= D;
    for (int i = 0; i < D; i++)
        v += (x[i] - m) * (x[i] - m);
    v /= D;
    for (int i = 0; i < D; i++)
        y[i] = (x[i] - m) / sqrt(v + 1e-5) * w[i] + b[i];
}

static void ref_lin(const double *x, const float *w, const float *b, int n, int k, double *y)
{
    for (int o = 0; o < n; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < k; i++)
            s += w[o * k + i] * x[i];
        y[o] = s;
    }
}

static void ref_forward(const int32_t *ids, int S, double hs[NL + 1][MAXP][D])
{
    for (int t = 0; t < S; t++)
        for (int i = 0; i < D; i++)
            hs[0][t][i] = (double)g_m.tok[ids[t] * D + i] + g_m.pos[t * D + i];
    int hd = D / H;
    for (int l = 0; l < NL; l++) {
        double q[MAXP][D], k[MAXP][D], v[MAXP][D], a[MAXP][D], h[D], x1[MAXP][D];
        for (int t = 0; t < S; t++) {
            ref_ln(hs[l][t], g_m.ln1w[l], g_m.ln1b[l], h);
            ref_lin(h, g_m.qw[l], g_m.qb[l], D, D, q[t]);
            ref_lin(h, g_m.kw[l], g_m.kb[l], D, D, k[t]);
            ref_lin(h, g_m.vw[l], g_m.vb[l], D, D, v[t]);
        }
        for (int hh = 0; hh < H; hh++)
            for (int t = 0; t < S; t++) {
                double sc[MAXP], mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    sc[j] = 0;
                    for (int e = 0; e < hd; e++)
                        sc[j] += q[t][hh * hd + e] * k[j][hh * hd + e];
                    sc[j] /= sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int e = 0; e < hd; e++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        o += sc[j] / sum * v[j][hh * hd + e];
                    a[t][hh * hd + e] = o;
                }
            }
        for (int t = 0; t < S; t++) {
            double o[D], f[I], f2[D];
            ref_lin(a[t], g_m.ow[l], g_m.ob[l], D, D, o);
            for (int i = 0; i < D; i++)
                x1[t][i] = hs[l][t][i] + o[i];
            ref_ln(x1[t], g_m.ln2w[l], g_m.ln2b[l], h);
            ref_lin(h, g_m.f1w[l], g_m.f1b[l], I, D, f);
            for (int i = 0; i < I; i++)
                f[i] = f[i] / (1 + exp(-1.702 * f[i]));
            ref_lin(f, g_m.f2w[l], g_m.f2b[l], D, I, f2);
            for (int i = 0; i < D; i++)
                hs[l + 1][t][i] = x1[t][i] + f2[i];
        }
    }
}

static double max_diff(const float *got, const double *want, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs(got[i] - want[i]));
    return m;
}

static sd_clip *load_tiny(const char *path, sd_clip_config cfg, sd_weights *w)
{
    test_weights_open(w, g_be, "tiny clip", path);
    sd_clip *m = NULL;
    CHECK_STATUS(sd_clip_load(w, &cfg, &m), SD_OK);
    return m;
}

TEST(tiny_numerics)
{
    const char *path = write_tiny("tiny.safetensors", NULL, NULL);
    sd_weights w;
    sd_clip *m = load_tiny(path, tiny_cfg(true, 2), &w);
    if (!m) {
        sd_weights_free(&w);
        return;
    }
    enum { B = 2, S = MAXP };
    const int32_t ids[B * S] = {0, 5, 7, 19, 19, 19, /* eos (largest) first at 3 */ 0, 3, 19, 2, 1, 1};
    double hs[B][NL + 1][MAXP][D];
    for (int b = 0; b < B; b++)
        ref_forward(ids + b * S, S, hs[b]);
    double lhs[B][S][D], skip1[B][S][D], pooled[B][D], te[B][PD];
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < S; t++) {
            ref_ln(hs[b][NL][t], g_m.lnfw, g_m.lnfb, lhs[b][t]);
            ref_ln(hs[b][NL - 1][t], g_m.lnfw, g_m.lnfb, skip1[b][t]);
        }
        int p = b == 0 ? 3 : 2;
        memcpy(pooled[b], lhs[b][p], sizeof pooled[b]);
        ref_lin(pooled[b], g_m.proj, NULL, PD, D, te[b]);
    }
    CHECK(sd_clip_pool_index(&m->cfg, ids, S) == 3);
    CHECK(sd_clip_pool_index(&m->cfg, ids + S, S) == 2);

    /* plan all calls, then run with exactly the planned arena */
    for (int pass = 0; pass < 2; pass++) {
        sd_ctx ctx;
        static size_t peak;
        if (pass == 0)
            sd_ctx_init_plan(&ctx, g_be);
        else
            CHECK_STATUS(sd_ctx_init(&ctx, g_be, peak), SD_OK);
        sd_tensor po, tx;
        sd_tensor out = sd_clip_forward(&ctx, m, ids, B, S, 0, &po, &tx);
        CHECK_STATUS(ctx.status, SD_OK);
        CHECK(out.ndim == 3 && out.ne[0] == B && out.ne[1] == S && out.ne[2] == D);
        CHECK(po.ndim == 2 && po.ne[0] == B && po.ne[1] == D && tx.ne[1] == PD);
        if (pass == 1 && sd_ok(&ctx)) {
            float *g = test_download(&ctx, out);
            CHECK_MSG(max_diff(g, &lhs[0][0][0], B * S * D) < 2e-5, "last_hidden_state off by %g",
                      max_diff(g, &lhs[0][0][0], B * S * D));
            free(g);
            g = test_download(&ctx, po);
            CHECK(max_diff(g, &pooled[0][0], B * D) < 2e-5);
            free(g);
            g = test_download(&ctx, tx);
            CHECK(max_diff(g, &te[0][0], B * PD) < 2e-5);
            free(g);
        }
        sd_release(&ctx, 0);
        out = sd_clip_forward(&ctx, m, ids, B, S, 1, NULL, NULL); /* diffusers clip_skip=1 */
        if (pass == 1 && sd_ok(&ctx)) {
            float *g = test_download(&ctx, out);
            CHECK(max_diff(g, &skip1[0][0][0], B * S * D) < 2e-5);
            free(g);
        }
        sd_release(&ctx, 0);
        /* SDXL penultimate: hidden_states[-2] without the final norm, plus pooled */
        out = sd_clip_forward_hidden(&ctx, m, ids, B, S, 1, false, &po, NULL);
        if (pass == 1 && sd_ok(&ctx)) {
            float *g = test_download(&ctx, out);
            double want[B][S][D];
            for (int b = 0; b < B; b++)
                memcpy(want[b], hs[b][NL - 1], sizeof want[b]);
            CHECK(max_diff(g, &want[0][0][0], B * S * D) < 2e-5);
            free(g);
            g = test_download(&ctx, po);
            CHECK(max_diff(g, &pooled[0][0], B * D) < 2e-5);
            free(g);
        }
        sd_release(&ctx, 0);
        /* clip_skip = all layers: embeddings through the final norm */
        out = sd_clip_forward(&ctx, m, ids, B, 3, NL, NULL, NULL);
        CHECK(out.ne[1] == 3);
        CHECK_STATUS(ctx.status, SD_OK);
        if (pass == 0)
            peak = ctx.peak;
        else
            CHECK_MSG(ctx.peak == peak, "planned peak %zu, real %zu", peak, ctx.peak);
        sd_ctx_free(&ctx);
    }
    sd_clip_free(m);
    sd_weights_free(&w);
}

TEST(new_eos_rule)
{
    sd_clip_config c = tiny_cfg(false, 7);
    const int32_t a[5] = {0, 9, 7, 7, 19};
    CHECK(sd_clip_pool_index(&c, a, 5) == 2); /* first eos, not the largest id */
    const int32_t b[3] = {0, 9, 8};
    CHECK(sd_clip_pool_index(&c, b, 3) == 0); /* no eos: argmax of zeros */
    c.eos_token_id = 2;
    CHECK(sd_clip_pool_index(&c, a, 5) == 4);
}

TEST(bad_arguments)
{
    const char *path = write_tiny("tiny2.safetensors", NULL, "text_projection.weight");
    sd_weights w;
    sd_clip *m = load_tiny(path, tiny_cfg(false, 2), &w); /* projection ignored (even if malformed) */
    if (!m) {
        sd_weights_free(&w);
        return;
    }
    int32_t ids[MAXP + 1] = {0, 1, 2, 3, 4, 5, 6};
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, g_be);
    sd_tensor te;
    sd_clip_forward(&ctx, m, ids, 1, MAXP + 1, 0, NULL, NULL);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("seq_len");
    sd_ctx_reset(&ctx);
    ids[2] = V;
    sd_clip_forward(&ctx, m, ids, 1, 4, 0, NULL, NULL);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("token id 20");
    sd_ctx_reset(&ctx);
    ids[2] = 2;
    sd_clip_forward(&ctx, m, ids, 1, 4, NL + 1, NULL, NULL);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("clip_skip");
    sd_ctx_reset(&ctx);
    sd_clip_forward(&ctx, m, ids, 1, 4, 0, NULL, &te);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("text_projection");
    sd_ctx_reset(&ctx);
    sd_clip_forward(&ctx, m, ids, 0, 4, 0, NULL, NULL);
    CHECK(ctx.status == SD_ERR_INVALID_ARGUMENT);
    sd_ctx_reset(&ctx);
    /* an arena one byte short of the plan fails cleanly */
    sd_clip_forward(&ctx, m, ids, 1, 4, 0, NULL, NULL);
    size_t peak = ctx.peak;
    sd_ctx small;
    CHECK_STATUS(sd_ctx_init(&small, g_be, peak - 1), SD_OK);
    sd_clip_forward(&small, m, ids, 1, 4, 0, NULL, NULL);
    CHECK(small.status == SD_ERR_OUT_OF_MEMORY);
    sd_ctx_free(&small);
    sd_clip_free(m);
    sd_weights_free(&w);
}

TEST(weight_errors)
{
    const char *missing = "text_model.encoder.layers.1.mlp.fc2.bias";
    const char *path = write_tiny("missing.safetensors", missing, NULL);
    sd_weights w;
    test_weights_open(&w, g_be, "tiny clip", path);
    sd_clip_config cfg = tiny_cfg(false, 2);
    sd_clip *m = (sd_clip *)1;
    CHECK_STATUS(sd_clip_load(&w, &cfg, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS(missing);
    CHECK(m == NULL);
    sd_weights_free(&w);

    const char *bad = "text_model.encoder.layers.0.mlp.fc1.weight";
    path = write_tiny("bad.safetensors", NULL, bad);
    test_weights_open(&w, g_be, "tiny clip", path);
    CHECK_STATUS(sd_clip_load(&w, &cfg, &m), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(bad);
    sd_weights_free(&w);

    /* projection wanted but absent */
    path = write_tiny("noproj.safetensors", "text_projection.weight", NULL);
    test_weights_open(&w, g_be, "tiny clip", path);
    cfg.with_projection = true;
    CHECK_STATUS(sd_clip_load(&w, &cfg, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("text_projection.weight");
    sd_weights_free(&w);

    /* a folder without weights */
    const char *cfgp = tmp_path("config.json");
    const char *js = "{\"hidden_size\": 8, \"num_attention_heads\": 2}";
    CHECK_STATUS(sd_write_file(cfgp, js, strlen(js)), SD_OK);
    CHECK_STATUS(sd_clip_load_dir(g_be, g_dir, -1, &m), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("model.safetensors");
    unlink(cfgp);
}

static sd_status cfg_from(const char *json, sd_clip_config *c)
{
    sd_config j;
    sd_status s = sd_config_parse(json, strlen(json), "test.json", &j);
    if (s == SD_OK)
        s = sd_clip_config_from(&j, c);
    sd_config_free(&j);
    return s;
}

TEST(config)
{
    sd_clip_config c;
    CHECK_STATUS(cfg_from("{\"hidden_act\": \"swiglu\"}", &c), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("swiglu");
    CHECK_STATUS(cfg_from("{\"hidden_size\": 10, \"num_attention_heads\": 4}", &c), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("divisible");
    CHECK_STATUS(cfg_from("{\"num_hidden_layers\": 0}", &c), SD_ERR_FORMAT);
    CHECK_STATUS(cfg_from("{\"layer_norm_eps\": -1}", &c), SD_ERR_FORMAT);
    CHECK_STATUS(cfg_from("{\"hidden_act\": 3}", &c), SD_ERR_FORMAT);
    /* defaults = CLIPTextConfig */
    CHECK_STATUS(cfg_from("{}", &c), SD_OK);
    CHECK(c.vocab_size == 49408 && c.hidden_size == 512 && c.num_hidden_layers == 12 && c.num_attention_heads == 8);
    CHECK(c.hidden_act == SD_UNARY_QUICK_GELU && c.eos_token_id == 49407 && !c.with_projection);
    CHECK_STATUS(cfg_from("{\"hidden_act\": \"gelu_new\", \"architectures\": [\"CLIPTextModelWithProjection\"]}", &c),
                 SD_OK);
    CHECK(c.hidden_act == SD_UNARY_GELU_TANH && c.with_projection);
    CHECK_STATUS(cfg_from("{\"hidden_act\": \"gelu\"}", &c), SD_OK);
    CHECK(c.hidden_act == SD_UNARY_GELU);
    /* a full CLIPConfig */
    CHECK_STATUS(cfg_from("{\"text_config\": {\"hidden_size\": 1024, \"num_attention_heads\": 16}}", &c), SD_OK);
    CHECK(c.hidden_size == 1024 && c.num_attention_heads == 16);
}

int main(void)
{
    if (sd_backend_cpu_create(2, &g_be) != SD_OK) {
        fprintf(stderr, "cannot create the CPU backend: %s\n", sd_last_error());
        return 1;
    }
    if (!test_make_tmpdir(g_dir, sizeof g_dir, "sd-test-clip")) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    init_tiny();
    RUN(config);
    RUN(new_eos_rule);
    RUN(tiny_numerics);
    RUN(bad_arguments);
    RUN(weight_errors);
    RUN(fixture_cases);
    RUN(project_cases);
    sd_backend_destroy(g_be);
    test_rm_tree(g_dir);
    return test_summary();
}
