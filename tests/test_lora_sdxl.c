/* LoRA on SDXL (src/models/lora.c with three components: unet, text_encoder, text_encoder_2) against diffusers'
 * StableDiffusionXLPipeline.load_lora_weights + fuse_lora on tiny-sdxl (references tests/data/lora/xl_*, written by
 * tools/gen_lora_sdxl_cases.py): a kohya LoRA with the LDM / SGM UNet names and lora_te1_ / lora_te2_, a PEFT
 * LoRA over every component (LCM-LoRA-SDXL-like) and both at once; fused weights of all three components and the
 * final latents of a 2-step txt2img; back to the base weights bit for bit; LoRAs of the other family refused by name
 * (an SDXL LoRA on SD1.5 and an SD1.5 LoRA on SDXL). */
#include "test.h"
#include "test_util.h"

#include "models/lora.h"
#include "pipe/pipeline.h"
#include "pipe/stream.h"

static char g_tmp[512];
static sd_safetensors *g_exp;

static sd_model *load(const char *rel)
{
    sd_model *m = test_load_model(rel);
    CHECK_MSG(m != NULL, "%s does not load", rel);
    return m;
}

/* "unet.<name>", "text_encoder.<name>" or "text_encoder_2.<name>" */
static sd_tensor *weight(sd_model *m, const char *key)
{
    static const char *const comps[] = {"text_encoder_2", "text_encoder", "unet"};
    for (size_t i = 0; i < SD_ARRAY_LEN(comps); i++) {
        size_t n = strlen(comps[i]);
        if (!strncmp(key, comps[i], n) && key[n] == '.')
            return test_model_weight(m, comps[i], key + n + 1);
    }
    return NULL;
}

/* max |got - exp| / max(1, max|exp|) of an expected tensor; -1 when absent or of another size */
static double rel_err(const char *key, const float *got, size_t n)
{
    const sd_st_tensor *t = sd_st_find(g_exp, key);
    if (!t || t->numel != n)
        return -1;
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double x = sd_st_get(t, i), d = fabs((double)got[i] - x);
        e = d > e || isnan(d) ? d : e;
        mx = fabs(x) > mx ? fabs(x) : mx;
    }
    return e / (mx > 1 ? mx : 1);
}

/* every "<tag>.w.<component>.<name>" reference against the model's handle; returns how many */
static int check_weights(sd_model *m, const char *tag)
{
    size_t tl = strlen(tag);
    int n = 0;
    for (size_t i = 0; i < g_exp->n_tensors; i++) {
        const char *k = g_exp->tensors[i].name, *name = k + tl + 3;
        if (strncmp(k, tag, tl) || strncmp(k + tl, ".w.", 3))
            continue;
        sd_tensor *t = weight(m, name);
        double r = t && t->dtype == SD_F32 ? rel_err(k, t->data, (size_t)sd_numel(t)) : -1;
        CHECK_MSG(r >= 0 && r <= 1e-4, "%s: fused '%s' is missing or differs from diffusers (rel %g)", tag, name, r);
        n++;
    }
    return n;
}

static void no_noise(void *user, const char *who, float *out, size_t n)
{
    (void)who;
    (void)user; /* Euler with s_churn 0: what is drawn is scaled by 0 (diffusers draws none) */
    memset(out, 0, n * sizeof *out);
}

/* 2-step txt2img with tiny-sdxl's Euler scheduler from the stored x_T, no CFG; malloc'd final latents */
static float *run(sd_model *m, size_t *n_out)
{
    const sd_st_tensor *lt = sd_st_find(g_exp, "latents");
    const char *prompt = sd_st_meta(g_exp, "prompt");
    CHECK(lt && lt->numel == 4 * 8 * 8 && prompt);
    if (!lt || lt->numel != 4 * 8 * 8 || !prompt)
        return NULL;
    float lat[4 * 8 * 8];
    sd_st_to_f32(lt, lat);
    sd_scheduler *sched = NULL;
    CHECK_STATUS(sd_scheduler_create(&m->sched_cfg, &sched), SD_OK);
    if (!sched)
        return NULL;
    sd_pipe_args a = {0};
    a.prompt = prompt;
    a.batch = 1;
    a.width = a.height = 16;
    a.steps = 2;
    a.guidance_scale = 1.0f;
    a.sched = sched;
    a.latents = lat;
    a.noise = no_noise;
    sd_pipe_out o;
    float *res = NULL;
    sd_status s = sd_pipe_run(m, &a, &o);
    CHECK_STATUS(s, SD_OK);
    if (s == SD_OK) {
        res = o.latents;
        *n_out = o.latents_n;
        o.latents = NULL;
        sd_pipe_out_free(&o);
    }
    sd_scheduler_free(sched);
    return res;
}

static void check_latents(sd_model *m, const char *tag)
{
    size_t n = 0;
    float *lat = run(m, &n);
    char key[64];
    snprintf(key, sizeof key, "%s.final_latents", tag);
    if (lat) {
        double r = rel_err(key, lat, n);
        printf("  %-6s final latents: rel err %.3g\n", tag, r);
        CHECK_MSG(r >= 0 && r <= 1e-4, "%s: latents differ from diffusers (rel %g)", tag, r);
    }
    free(lat);
}

#define STYLE "lora/xl_style_kohya.safetensors"
#define LCM "lora/xl_lcm_peft.safetensors"

static sd_status apply(sd_model *m, const char *a, float sa, const char *b, float sb)
{
    char pa[1200], pb[1200];
    sd_lora_spec s[2] = {{a ? test_data_file(pa, sizeof pa, a) : NULL, sa},
                         {b ? test_data_file(pb, sizeof pb, b) : NULL, sb}};
    return sd_model_apply_loras(m, a ? s : s + 1, (a != NULL) + (b != NULL));
}

/* weights of every component of a and b equal byte for byte: the number that differ */
typedef struct {
    sd_model *other;
    const char *comp;
    int n_diff;
} eq_ctx;

static sd_status eq_visit(void *user, const char *name, sd_tensor *t)
{
    eq_ctx *e = user;
    char key[600];
    snprintf(key, sizeof key, "%s.%s", e->comp, name);
    sd_tensor *o = weight(e->other, key);
    if (!o || o->dtype != t->dtype || sd_nbytes(o) != sd_nbytes(t) || memcmp(o->data, t->data, sd_nbytes(t)))
        e->n_diff++;
    return SD_OK;
}

static int count_diff(sd_model *a, sd_model *b)
{
    eq_ctx e = {b, "unet", 0};
    sd_unet_for_each_weight(a->unet, eq_visit, &e);
    e.comp = "text_encoder";
    sd_clip_for_each_weight(a->clip, eq_visit, &e);
    e.comp = "text_encoder_2";
    sd_clip_for_each_weight(a->clip2, eq_visit, &e);
    return e.n_diff;
}

TEST(diffusers_scenarios)
{
    sd_model *m = load("models/tiny-sdxl"), *fresh = load("models/tiny-sdxl");
    CHECK(m && fresh && m->sdxl);
    if (!m || !fresh) {
        sd_model_free(m);
        sd_model_free(fresh);
        return;
    }
    check_latents(m, "base");
    CHECK_STATUS(apply(m, STYLE, 0.8f, NULL, 0), SD_OK);
    CHECK(check_weights(m, "style") == 10);
    CHECK_MSG(sd_lora_state_count(m->lora) == 13, "%zu layers fused", sd_lora_state_count(m->lora));
    check_latents(m, "style");
    CHECK_STATUS(apply(m, LCM, 1.0f, NULL, 0), SD_OK);
    CHECK(check_weights(m, "lcm") == 10);
    CHECK_MSG(sd_lora_state_count(m->lora) == 265, "%zu layers fused", sd_lora_state_count(m->lora));
    check_latents(m, "lcm");
    uint64_t v = m->weights_version;
    CHECK_STATUS(apply(m, STYLE, 0.6f, LCM, 1.0f), SD_OK); /* a live change: from the base, no reload */
    CHECK(check_weights(m, "both") == 10);
    CHECK(m->weights_version > v);
    check_latents(m, "both");
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    int nd = count_diff(m, fresh);
    CHECK_MSG(nd == 0, "%d weight tensors differ from a fresh load after unfusing", nd);
    check_latents(m, "base");
    sd_model_free(m);
    sd_model_free(fresh);
}

TEST(other_family_is_named)
{
    sd_model *sd15 = load("models/tiny-sd15"), *xl = load("models/tiny-sdxl");
    CHECK(sd15 && xl);
    if (sd15 && xl) {
        /* an SDXL LoRA on SD1.5: its lora_te2_ keys tell */
        CHECK(apply(sd15, STYLE, 1.0f, NULL, 0) != SD_OK);
        CHECK_ERR_CONTAINS("an sdxl LoRA");
        CHECK_ERR_CONTAINS("on an sd1 model");
        CHECK_ERR_CONTAINS("lora_te2_");
        CHECK(sd15->lora == NULL);
        /* even when unmatched keys are allowed */
        char p[1200];
        sd_lora_spec s = {test_data_file(p, sizeof p, LCM), 1.0f};
        sd_lora_options opt = {.allow_unmatched = true};
        CHECK(sd_model_apply_loras_ex(sd15, &s, 1, &opt) != SD_OK);
        CHECK_ERR_CONTAINS("an sdxl LoRA");
        /* an SD1.5 LoRA on SDXL: tiny-sd15's (32-wide prompt) does not fit tiny-sdxl's layers, by name */
        CHECK(apply(xl, "lora/style_kohya.safetensors", 1.0f, NULL, 0) != SD_OK);
        CHECK_ERR_CONTAINS("does not fit layer");
        /* a full-size SD1.5 LoRA layer (attn2 K reads 768 wide) on SDXL: the family is named */
        char f[700];
        snprintf(f, sizeof f, "%s/sd15_lora.safetensors", g_tmp);
        sd_st_writer *w = sd_st_writer_new();
        static float z[2 * 768];
        const char *k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";
        char name[200];
        snprintf(name, sizeof name, "%s.lora_down.weight", k);
        sd_st_writer_add(w, name, SD_F32, 2, (const int64_t[]){2, 768}, z);
        snprintf(name, sizeof name, "%s.lora_up.weight", k);
        sd_st_writer_add(w, name, SD_F32, 2, (const int64_t[]){16, 2}, z);
        CHECK_STATUS(sd_st_writer_save(w, f), SD_OK);
        sd_st_writer_free(w);
        sd_lora_spec s1 = {f, 1.0f};
        CHECK(sd_model_apply_loras(xl, &s1, 1) != SD_OK);
        CHECK_ERR_CONTAINS("an sd1 LoRA");
        CHECK_ERR_CONTAINS("on an sdxl model");
        unlink(f);
        CHECK(xl->lora == NULL);
    }
    sd_model_free(sd15);
    sd_model_free(xl);
}

/* A LoRA changed while an SDXL stream runs takes effect from the next frame, as on SD1 (test_stream.c): the
 * stream re-encodes its prompt with the new weights. The LoRA here touches only text encoder 2 (the lora_te2_
 * layers of xl_style_kohya), so the outputs can change only through that re-encoding; unfused, the base comes
 * back bit for bit. */
#define NS 6
#define LORA_AT 3
TEST(live_change_in_a_stream)
{
    char src[1200], te2[700];
    test_data_file(src, sizeof src, STYLE);
    snprintf(te2, sizeof te2, "%s/te2_only.safetensors", g_tmp);
    sd_safetensors *st = NULL;
    sd_st_writer *w = sd_st_writer_new();
    int n = 0;
    CHECK_STATUS(sd_safetensors_open(src, &st), SD_OK);
    for (size_t i = 0; st && i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        if (strncmp(t->name, "lora_te2_", 9))
            continue;
        CHECK_STATUS(sd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), SD_OK);
        n++;
    }
    CHECK(n == 6); /* two layers: down, up, alpha */
    CHECK_STATUS(sd_st_writer_save(w, te2), SD_OK);
    sd_st_writer_free(w);
    sd_safetensors_close(st);
    char taesd[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.taesd = test_data_file(taesd, sizeof taesd, "models/taesd-tiny");
    char dir[1200];
    sd_model *m = NULL;
    CHECK_STATUS(sd_model_load(test_data_file(dir, sizeof dir, "models/tiny-sdxl"), &mp, &m), SD_OK);
    if (!m)
        return;
    sd_stream_params p;
    sd_stream_default_params(&p);
    p.width = p.height = 32;
    p.seed = 5;
    sd_image frames[NS], out[3][NS];
    memset(out, 0, sizeof out);
    for (int k = 0; k < NS; k++)
        frames[k] = (sd_image){32, 32, test_wave_frame(32, 32, k, 99 + (unsigned long long)k)};
    sd_lora_spec l = {te2, 1.0f};
    for (int run = 0; run < 3; run++) { /* 0: no LoRA, 1: the LoRA from frame LORA_AT, 2: unfused again */
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(m, &p, &s), SD_OK);
        if (!s)
            break;
        CHECK_STATUS(sd_stream_set_prompt(s, "a red fox", ""), SD_OK);
        for (int k = 0; k < NS; k++) {
            if (run == 1 && k == LORA_AT)
                CHECK_STATUS(sd_model_apply_loras(m, &l, 1), SD_OK);
            CHECK_STATUS(sd_stream_img2img(s, &frames[k], &out[run][k]), SD_OK);
        }
        sd_stream_free(s);
        if (run == 1)
            CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    }
    int before = 0, after = 0, back = 0;
    for (int k = 0; k < NS; k++) {
        size_t nb = (size_t)32 * 32 * 3;
        bool same01 = out[0][k].data && out[1][k].data && !memcmp(out[0][k].data, out[1][k].data, nb);
        before += k < LORA_AT && same01;
        after += k >= LORA_AT && !same01;
        back += out[0][k].data && out[2][k].data && !memcmp(out[0][k].data, out[2][k].data, nb);
    }
    CHECK_MSG(before == LORA_AT, "%d of the %d frames before the LoRA changed", LORA_AT - before, LORA_AT);
    CHECK_MSG(after == NS - LORA_AT, "only %d of the %d frames after the LoRA changed", after, NS - LORA_AT);
    CHECK_MSG(back == NS, "unfused: %d of %d frames as before the LoRA", back, NS);
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < NS; k++)
            sd_image_free(&out[r][k]);
    for (int k = 0; k < NS; k++)
        free(frames[k].data);
    unlink(te2);
    sd_model_free(m);
}

/* family detection on full-size shapes: cross-attention widths 768 / 1024 / 2048 and SDXL-only keys */
TEST(family_from_tensors)
{
    const char *dir = g_tmp;
    struct {
        const char *name;
        int64_t w;
        const char *want;
    } c[] = {{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", 768, "sd1"},
             {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight", 1024, "sd2"},
             {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight", 2048, "sdxl"},
             {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 16, "sdxl"},
             {"lora_unet_add_embedding_linear_1.lora_down.weight", 16, "sdxl"},
             {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_down.weight", 16, NULL}};
    for (size_t i = 0; i < SD_ARRAY_LEN(c); i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/f.safetensors", dir);
        sd_st_writer *w = sd_st_writer_new();
        int64_t shape[2] = {2, c[i].w};
        float *z = calloc((size_t)(2 * c[i].w), sizeof *z);
        sd_st_writer_add(w, c[i].name, SD_F32, 2, shape, z);
        CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
        sd_st_writer_free(w);
        free(z);
        sd_safetensors *st = NULL;
        CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
        char why[600] = "";
        const char *fam = st ? sd_lora_family(st, why, sizeof why) : NULL;
        CHECK_MSG(c[i].want ? fam && !strcmp(fam, c[i].want) : fam == NULL, "%s: family %s, want %s", c[i].name,
                  fam ? fam : "none", c[i].want ? c[i].want : "none");
        sd_safetensors_close(st);
        unlink(path);
    }
}

int main(void)
{
    char p[1200];
    test_data_file(p, sizeof p, "lora/xl_expected.safetensors");
    if (sd_safetensors_open(p, &g_exp) != SD_OK || !test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_test_lora_xl")) {
        fprintf(stderr, "FAIL: the committed %s or a temporary folder: %s\n", p, sd_last_error());
        return 1;
    }
    RUN(diffusers_scenarios);
    RUN(other_family_is_named);
    RUN(live_change_in_a_stream);
    RUN(family_from_tensors);
    test_rm_tree(g_tmp);
    sd_safetensors_close(g_exp);
    return test_summary();
}
