/* Prompt and seed blending of streams (sd_stream_set_prompts / sd_stream_set_seeds) against the torch reference
 * of tools/gen_blend_cases.py (tests/data/blend: tiny-sd15 encodings, torch noise, the forks' blend formulas);
 * the caches (a weight change encodes nothing, a changed prompt encodes only itself, frames never encode);
 * the one-entry calls equal sd_stream_set_prompt / sd_stream_set_seed; bad lists are named errors and leave the
 * stream as it was. Tiny models at 32x32 (latent 4x4, two steps: noise [2,4,4,4]); SDXL streams blend the pooled
 * embedding too. */
#include "test.h"

#include "io/safetensors.h"
#include "pipe/stream.h"

#include <cjson/cJSON.h>
#include <unistd.h>

#define SZ 32

static sd_model *g_model, *g_sdxl;
static char g_dir[1024];

/* tiny-sd15 (or tiny-sdxl) with taesd-tiny, loaded once */
static sd_model *load(const char *name, sd_model **slot)
{
    if (*slot)
        return *slot;
    const char *d = getenv("SD_TEST_DATA");
    snprintf(g_dir, sizeof g_dir, "%s", d ? d : "tests/data");
    char mp[1100], tp[1100];
    snprintf(mp, sizeof mp, "%s/models/%s", g_dir, name);
    snprintf(tp, sizeof tp, "%s/models/taesd-tiny", g_dir);
    sd_model_params p;
    sd_model_default_params(&p);
    p.taesd = tp;
    p.n_threads = 2;
    if (sd_model_load(mp, &p, slot) != SD_OK)
        *slot = NULL;
    return *slot;
}

static sd_model *model(void) { return load("tiny-sd15", &g_model); }

static sd_stream *stream_on(sd_model *m, sd_cfg_type cfg)
{
    sd_stream_params p;
    sd_stream_default_params(&p);
    p.width = p.height = SZ;
    p.t_index_list[0] = 20;
    p.t_index_list[1] = 40;
    p.cfg_type = cfg;
    sd_stream *s = NULL;
    if (m && sd_stream_create(m, &p, &s) != SD_OK)
        s = NULL;
    return s;
}

static sd_stream *stream(sd_cfg_type cfg) { return stream_on(model(), cfg); }

/* The last row of a stream tensor: the conditional embedding the stream blended (s->embeds), SDXL's pooled one
 * (s->add_te) */
static float *last_row(sd_stream *s, const sd_tensor *t)
{
    size_t n = (size_t)sd_numel(t), row = n / (size_t)t->ne[0];
    float *all = malloc(n * sizeof(float)), *out = malloc(row * sizeof(float));
    sd_tensor_to_f32(&s->state, t, all);
    memcpy(out, all + n - row, row * sizeof(float));
    free(all);
    return out;
}

static float *cond_row(sd_stream *s) { return last_row(s, &s->embeds); }

static float *init_noise(sd_stream *s)
{
    float *out = malloc((size_t)sd_numel(&s->init_noise) * sizeof(float));
    sd_tensor_to_f32(&s->state, &s->init_noise, out);
    return out;
}

/* max |got - want| over the tensor, against tol * max(1, max |want|) */
static double max_err(const float *got, const sd_st_tensor *t, double *scale)
{
    float *want = malloc(t->numel * sizeof(float));
    sd_st_to_f32(t, want);
    double e = 0, m = 1;
    for (size_t i = 0; i < t->numel; i++) {
        e = fmax(e, fabs((double)got[i] - want[i]));
        m = fmax(m, fabs((double)want[i]));
    }
    free(want);
    *scale = m;
    return e;
}

TEST(reference_cases)
{
    if (!model())
        FAIL("tiny models under %s/models do not load: %s", g_dir, sd_last_error());
    char jp[1100], sp[1100];
    snprintf(jp, sizeof jp, "%s/blend/blend.json", g_dir);
    snprintf(sp, sizeof sp, "%s/blend/blend.safetensors", g_dir);
    char *text = NULL;
    size_t len = 0;
    sd_safetensors *st = NULL;
    if (sd_read_file(jp, 1 << 20, &text, &len) != SD_OK || sd_safetensors_open(sp, &st) != SD_OK)
        FAIL("tests/data/blend does not load: %s", sd_last_error());
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    sd_stream *s15 = stream(SD_CFG_SELF), *sxl = stream_on(load("tiny-sdxl", &g_sdxl), SD_CFG_SELF);
    CHECK(s15 && sxl && cJSON_GetArraySize(cases) >= 14);
    int n_cases = 0;
    for (cJSON *c = cases ? cases->child : NULL; c && s15 && sxl; c = c->next) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        bool xl = strstr(cJSON_GetObjectItem(c, "model")->valuestring, "sdxl") != NULL;
        sd_stream *s = xl ? sxl : s15;
        const cJSON *wp = cJSON_GetObjectItem(c, "expected_pooled");
        const sd_st_tensor *want_pooled = wp ? sd_st_find(st, wp->valuestring) : NULL;
        CHECK(xl == (want_pooled != NULL));
        bool prompts = !strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "prompts");
        sd_blend_mode mode;
        CHECK(sd_blend_mode_from_name(cJSON_GetObjectItem(c, "mode")->valuestring, &mode));
        bool norm = cJSON_IsTrue(cJSON_GetObjectItem(c, "normalize"));
        const sd_st_tensor *want = sd_st_find(st, cJSON_GetObjectItem(c, "expected")->valuestring);
        sd_prompt_weight pw[SD_STREAM_MAX_BLEND];
        sd_seed_weight sw[SD_STREAM_MAX_BLEND];
        int n = 0;
        for (cJSON *e = cJSON_GetObjectItem(c, "entries")->child; e && n < SD_STREAM_MAX_BLEND; e = e->next, n++) {
            cJSON *v = cJSON_GetArrayItem(e, 0);
            float w = (float)cJSON_GetArrayItem(e, 1)->valuedouble;
            if (prompts)
                pw[n] = (sd_prompt_weight){v->valuestring, w};
            else
                sw[n] = (sd_seed_weight){(uint64_t)v->valuedouble, w};
        }
        if (!want)
            FAIL("%s: no expected tensor", name);
        float *got;
        if (prompts) {
            CHECK_STATUS(sd_stream_set_prompts(s, pw, n, "", mode, norm), SD_OK);
            got = cond_row(s);
        } else {
            CHECK_STATUS(sd_stream_set_seeds(s, sw, n, mode, norm), SD_OK);
            got = init_noise(s);
        }
        CHECK(want->numel == (size_t)(prompts ? s->S * s->D : sd_numel(&s->init_noise)));
        double scale, e = max_err(got, want, &scale);
        /* encodings: CLIP against transformers (the fixtures' 2e-5 floor); noise:
         * the torch generator is bit-exact, the blend's float rounding remains */
        double tol = (prompts ? 2e-5 : 2e-6) * scale;
        CHECK_MSG(e <= tol, "%s: max abs err %.3g > %.3g", name, e, tol);
        printf("  %-32s max abs err %.3g (tol %.3g)\n", name, e, tol);
        free(got);
        if (want_pooled) { /* SDXL: the pooled embedding, blended as its own tensor */
            got = last_row(s, &s->add_te);
            CHECK(want_pooled->numel == (size_t)s->P);
            e = max_err(got, want_pooled, &scale);
            CHECK_MSG(e <= 2e-5 * scale, "%s pooled: max abs err %.3g", name, e);
            printf("  %-32s pooled max abs err %.3g\n", name, e);
            free(got);
        }
        n_cases++;
    }
    CHECK(n_cases == cJSON_GetArraySize(cases));
    sd_stream_free(s15);
    sd_stream_free(sxl);
    cJSON_Delete(root);
    sd_safetensors_close(st);
}

/* What a change recomputes: the caches count their fills (encodes, noise draws). */
TEST(cached_inputs)
{
    sd_stream *s = stream(SD_CFG_FULL);
    if (!s)
        FAIL("stream: %s", sd_last_error());
    sd_prompt_weight ab[2] = {{"a red fox", 1.0f}, {"a blue whale", 1.0f}};
    uint64_t f0 = s->text_cache.fills;
    CHECK_STATUS(sd_stream_set_prompts(s, ab, 2, "blurry", SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->text_cache.fills == f0 + 3); /* two prompts and the negative */
    float *e1 = cond_row(s);
    ab[1].weight = 3.0f; /* a new weight: re-blend, nothing encoded */
    uint64_t kv = s->kv_version;
    CHECK_STATUS(sd_stream_set_prompts(s, ab, 2, "blurry", SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->text_cache.fills == f0 + 3);
    CHECK(s->kv_version > kv);
    float *e2 = cond_row(s);
    CHECK(memcmp(e1, e2, (size_t)s->S * s->D * sizeof(float)) != 0);
    ab[1].prompt = "a green parrot"; /* one changed prompt: one encode */
    CHECK_STATUS(sd_stream_set_prompts(s, ab, 2, "blurry", SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->text_cache.fills == f0 + 4);
    ab[1].prompt = "a blue whale"; /* back: still cached */
    CHECK_STATUS(sd_stream_set_prompts(s, ab, 2, "blurry", SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->text_cache.fills == f0 + 4);
    float *e3 = cond_row(s);
    CHECK(!memcmp(e2, e3, (size_t)s->S * s->D * sizeof(float)));
    /* frames encode nothing and draw no seed noise */
    sd_image out = {0};
    uint64_t nf = s->noise_cache.fills;
    for (int k = 0; k < 3; k++) {
        CHECK_STATUS(sd_stream_txt2img(s, &out), SD_OK);
        sd_image_free(&out);
    }
    CHECK(s->text_cache.fills == f0 + 4 && s->noise_cache.fills == nf);
    /* seeds: two draws, then a weight change draws none */
    sd_seed_weight sw[2] = {{5, 1.0f}, {6, 1.0f}};
    CHECK_STATUS(sd_stream_set_seeds(s, sw, 2, SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->noise_cache.fills == nf + 2);
    sw[0].weight = 0.2f;
    CHECK_STATUS(sd_stream_set_seeds(s, sw, 2, SD_BLEND_SLERP, true), SD_OK);
    CHECK(s->noise_cache.fills == nf + 2);
    /* a LoRA change re-encodes the active list (and the negative) on the next frame */
    char lp[1100];
    snprintf(lp, sizeof lp, "%s/lora/style_kohya.safetensors", g_dir);
    sd_lora_spec lora = {lp, 1.0f};
    uint64_t f1 = s->text_cache.fills;
    CHECK_STATUS(sd_model_apply_loras(model(), &lora, 1), SD_OK);
    CHECK_STATUS(sd_stream_txt2img(s, &out), SD_OK);
    sd_image_free(&out);
    CHECK(s->text_cache.fills == f1 + 3);
    CHECK_STATUS(sd_model_apply_loras(model(), NULL, 0), SD_OK);
    free(e1);
    free(e2);
    free(e3);
    sd_stream_free(s);
}

/* The one-entry lists are sd_stream_set_prompt / sd_stream_set_seed: the same frames. */
TEST(one_entry_equals_single_setters)
{
    sd_stream *a = stream(SD_CFG_SELF), *b = stream(SD_CFG_SELF);
    if (!a || !b)
        FAIL("stream: %s", sd_last_error());
    CHECK_STATUS(sd_stream_set_prompt(a, "a lighthouse", ""), SD_OK);
    CHECK_STATUS(sd_stream_set_seed(a, 99), SD_OK);
    sd_prompt_weight p = {"a lighthouse", 0.3f};
    sd_seed_weight w = {99, 2.0f};
    CHECK_STATUS(sd_stream_set_prompts(b, &p, 1, NULL, SD_BLEND_SLERP, true), SD_OK);
    CHECK_STATUS(sd_stream_set_seeds(b, &w, 1, SD_BLEND_LINEAR, true), SD_OK);
    for (int k = 0; k < 3; k++) {
        sd_image oa = {0}, ob = {0};
        CHECK_STATUS(sd_stream_txt2img(a, &oa), SD_OK);
        CHECK_STATUS(sd_stream_txt2img(b, &ob), SD_OK);
        CHECK(oa.data && ob.data && !memcmp(oa.data, ob.data, (size_t)SZ * SZ * 3));
        sd_image_free(&oa);
        sd_image_free(&ob);
    }
    sd_stream_free(a);
    sd_stream_free(b);
}

TEST(bad_lists)
{
    sd_stream *s = stream(SD_CFG_SELF);
    if (!s)
        FAIL("stream: %s", sd_last_error());
    sd_prompt_weight ok[2] = {{"a", 0.5f}, {"b", 0.5f}};
    CHECK_STATUS(sd_stream_set_prompts(s, ok, 2, "", SD_BLEND_LINEAR, true), SD_OK);
    float *before = cond_row(s), *nb = init_noise(s);
    sd_prompt_weight p[SD_STREAM_MAX_BLEND + 1];
    for (int i = 0; i <= SD_STREAM_MAX_BLEND; i++)
        p[i] = (sd_prompt_weight){"x", 1.0f};
    CHECK_STATUS(sd_stream_set_prompts(s, p, 0, "", SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("empty");
    CHECK_STATUS(sd_stream_set_prompts(s, NULL, 2, "", SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_prompts(s, p, SD_STREAM_MAX_BLEND + 1, "", SD_BLEND_LINEAR, true),
                 SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("at most 8");
    p[1].weight = -0.5f;
    CHECK_STATUS(sd_stream_set_prompts(s, p, 2, "", SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("weight[1] = -0.5 is negative");
    p[1].weight = NAN;
    CHECK_STATUS(sd_stream_set_prompts(s, p, 2, "", SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("weight[1] is not a finite number");
    p[1].weight = INFINITY;
    CHECK_STATUS(sd_stream_set_prompts(s, p, 2, "", SD_BLEND_LINEAR, false), SD_ERR_INVALID_ARGUMENT);
    p[0].weight = p[1].weight = 0.0f;
    CHECK_STATUS(sd_stream_set_prompts(s, p, 2, "", SD_BLEND_SLERP, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("prompts: the weights sum to 0");
    p[0].weight = 3e38f; /* the sum overflows */
    p[1].weight = 3e38f;
    CHECK_STATUS(sd_stream_set_prompts(s, p, 2, "", SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_prompts(s, ok, 2, "", (sd_blend_mode)7, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("blend mode");
    sd_seed_weight sw[2] = {{1, 0.0f}, {2, 0.0f}};
    CHECK_STATUS(sd_stream_set_seeds(s, sw, 2, SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("seeds: the weights sum to 0");
    CHECK_STATUS(sd_stream_set_seeds(s, sw, 0, SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_seeds(NULL, sw, 1, SD_BLEND_LINEAR, true), SD_ERR_INVALID_ARGUMENT);
    float *after = cond_row(s), *na = init_noise(s); /* refused calls changed nothing */
    CHECK(!memcmp(before, after, (size_t)s->S * s->D * sizeof(float)));
    CHECK(!memcmp(nb, na, (size_t)sd_numel(&s->init_noise) * sizeof(float)));
    sd_blend_mode m;
    CHECK(sd_blend_mode_from_name("slerp", &m) && m == SD_BLEND_SLERP);
    CHECK(!sd_blend_mode_from_name("cubic", &m) && !sd_blend_mode_from_name(NULL, &m));
    CHECK(!strcmp(sd_blend_mode_name(SD_BLEND_LINEAR), "linear"));
    free(before);
    free(after);
    free(nb);
    free(na);
    sd_stream_free(s);
}

int main(void)
{
    RUN(reference_cases);
    RUN(cached_inputs);
    RUN(one_entry_equals_single_setters);
    RUN(bad_lists);
    sd_model_free(g_model);
    sd_model_free(g_sdxl);
    return test_summary();
}
