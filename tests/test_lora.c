/* LoRA / LoCon parsing and fusing (src/models/lora.c, sd_model_apply_loras) against
 * diffusers' load_lora_weights + fuse_lora on tiny-sd15 (references: tests/data/lora,
 * written by tools/gen_lora_cases.py). */
#include "test.h"
#include "test_util.h"

#include "backend/cpu/cpu_kern.h"
#include "models/lora.h"
#include "pipe/pipeline.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_data[1024];

static const char *data_path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", g_data, rel);
    return buf;
}

static sd_model *load_model(const char *dir)
{
    sd_model_params p;
    sd_model_default_params(&p);
    p.n_threads = 2;
    sd_model *m = NULL;
    sd_status s = sd_model_load(dir, &p, &m);
    if (s != SD_OK)
        fprintf(stderr, "  load %s: %s\n", dir, sd_last_error());
    return m;
}

static sd_model *load_tiny(void)
{
    char p[1200];
    return load_model(data_path(p, sizeof p, "models/tiny-sd15"));
}

/* ---------------------------------------------------------------- weight handles by name */

typedef struct {
    const char *want;
    sd_tensor *found;
} find_ctx;

static sd_status find_visit(void *user, const char *name, sd_tensor *t)
{
    find_ctx *f = user;
    if (!strcmp(name, f->want))
        f->found = t;
    return SD_OK;
}

static sd_tensor *weight(sd_model *m, const char *name)
{
    find_ctx f = {name, NULL};
    if (!strncmp(name, "text_model.", 11))
        sd_clip_for_each_weight(m->clip, find_visit, &f);
    else
        sd_unet_for_each_weight(m->unet, find_visit, &f);
    return f.found;
}

/* Every weight of a and b equal byte for byte (a prepared one: its layout's bytes); returns the number of
 * differing tensors. */
typedef struct {
    sd_model *other;
    int n_diff, n_seen;
    const char *first;
    char first_buf[256];
} eq_ctx;

static sd_status eq_visit(void *user, const char *name, sd_tensor *t)
{
    eq_ctx *e = user;
    sd_tensor *o = weight(e->other, name);
    e->n_seen++;
    size_t nb = o ? test_weight_bytes(e->other->be, o) : 0;
    if (!o || o->dtype != t->dtype || o->layout != t->layout || !nb || nb != test_weight_bytes(e->other->be, t) ||
        memcmp(o->data, t->data, nb)) {
        if (!e->n_diff++) {
            snprintf(e->first_buf, sizeof e->first_buf, "%s", name);
            e->first = e->first_buf;
        }
    }
    return SD_OK;
}

static int count_diff(sd_model *a, sd_model *b, const char **first)
{
    eq_ctx e = {.other = b};
    sd_unet_for_each_weight(a->unet, eq_visit, &e);
    sd_clip_for_each_weight(a->clip, eq_visit, &e);
    if (first)
        *first = e.first ? e.first : "";
    return e.n_diff;
}

/* ---------------------------------------------------------------- references */

static sd_safetensors *g_exp;

/* max |got - expected| for an expected tensor; -1 when absent / sizes differ. */
static double max_err(const char *key, const float *got, size_t n, double *max_abs_exp)
{
    const sd_st_tensor *t = sd_st_find(g_exp, key);
    if (!t || t->numel != n)
        return -1;
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double x = sd_st_get(t, i);
        double d = fabs((double)got[i] - x);
        e = d > e || isnan(d) ? d : e;
        mx = fabs(x) > mx ? fabs(x) : mx;
    }
    if (max_abs_exp)
        *max_abs_exp = mx;
    return e;
}

static double g_worst_w_rel, g_worst_lat_rel;

/* Compares every "<tag>.w.<name>" reference with the model's handle (1e-4 relative to max(1, max|w|)). */
static int check_weights(sd_model *m, const char *tag)
{
    char pre[64];
    snprintf(pre, sizeof pre, "%s.w.", tag);
    int n = 0;
    for (size_t i = 0; i < g_exp->n_tensors; i++) {
        const char *k = g_exp->tensors[i].name;
        if (strncmp(k, pre, strlen(pre)))
            continue;
        const char *name = k + strlen(pre);
        sd_tensor *t = weight(m, name);
        CHECK_MSG(t && t->dtype == SD_F32, "%s: no F32 weight handle '%s'", tag, name);
        if (!t || t->dtype != SD_F32)
            continue;
        double mx = 0, e = max_err(k, t->data, (size_t)sd_numel(t), &mx);
        double rel = e / (mx > 1 ? mx : 1);
        CHECK_MSG(e >= 0 && rel <= 1e-4, "%s: fused '%s' differs from diffusers by %g (rel %g)", tag, name, e, rel);
        if (rel > g_worst_w_rel)
            g_worst_w_rel = rel;
        n++;
    }
    return n;
}

typedef struct {
    const float *noise;
    size_t n;
    int draws;
} noise_src;

static void replay_noise(void *user, const char *who, float *out, size_t n)
{
    noise_src *s = user;
    (void)who;
    s->draws++;
    for (size_t i = 0; i < n; i++)
        out[i] = i < s->n ? s->noise[i] : 0.0f;
}

static float *exp_f32(const char *key, size_t *n)
{
    const sd_st_tensor *t = sd_st_find(g_exp, key);
    if (!t)
        return NULL;
    float *v = malloc(t->numel * sizeof(float));
    if (v)
        sd_st_to_f32(t, v);
    if (n)
        *n = t->numel;
    return v;
}

/* 2-step LCM txt2img with the stored x_T and noise; returns malloc'd final latents. */
static float *run_lcm(sd_model *m, size_t *n_out)
{
    const char *prompt = sd_st_meta(g_exp, "prompt");
    size_t nl = 0, nn = 0;
    float *lat = exp_f32("latents", &nl), *noise = exp_f32("noise.000", &nn);
    sd_scheduler *sched = NULL;
    float *res = NULL;
    int size = 16; /* pixels; tiny-sd15's VAE downsamples by 2 -> 8x8 latents */
    CHECK(nl == (size_t)4 * (size / 2) * (size / 2) && nn == nl);
    if (lat && noise && nl == (size_t)4 * (size / 2) * (size / 2) && nn == nl &&
        sd_scheduler_create(&m->sched_cfg, &sched) == SD_OK) {
        noise_src ns = {noise, nn, 0};
        sd_pipe_args a = {0};
        a.prompt = prompt ? prompt : "";
        a.batch = 1;
        a.width = a.height = size;
        a.steps = 2;
        a.guidance_scale = 1.0f;
        a.sched = sched;
        a.latents = lat;
        a.noise = replay_noise;
        a.noise_user = &ns;
        sd_pipe_out o;
        sd_status s = sd_pipe_run(m, &a, &o);
        CHECK_STATUS(s, SD_OK);
        if (s == SD_OK) {
            CHECK(ns.draws == 1);
            res = o.latents;
            *n_out = o.latents_n;
            o.latents = NULL;
            sd_pipe_out_free(&o);
        }
    }
    sd_scheduler_free(sched);
    free(lat);
    free(noise);
    return res;
}

static void check_latents(sd_model *m, const char *tag, float **keep)
{
    size_t n = 0;
    float *lat = run_lcm(m, &n);
    char key[64];
    snprintf(key, sizeof key, "%s.final_latents", tag);
    if (lat) {
        double mx = 0, e = max_err(key, lat, n, &mx);
        double rel = e / (mx > 1 ? mx : 1);
        printf("  %-8s final latents: max abs err %.3g (max |x| %.2f, rel %.3g)\n", tag, e, mx, rel);
        CHECK_MSG(e >= 0 && rel <= 1e-4, "%s: latents differ from diffusers by %g (rel %g)", tag, e, rel);
        if (rel > g_worst_lat_rel)
            g_worst_lat_rel = rel;
    }
    if (keep)
        *keep = lat;
    else
        free(lat);
}

static sd_status apply2(sd_model *m, const char *a, float sa, const char *b, float sb)
{
    char pa[1200], pb[1200];
    sd_lora_spec s[2] = {{a ? data_path(pa, sizeof pa, a) : NULL, sa}, {b ? data_path(pb, sizeof pb, b) : NULL, sb}};
    if (!a)
        return sd_model_apply_loras(m, s + 1, b ? 1 : 0);
    return sd_model_apply_loras(m, s, b ? 2 : 1);
}

#define STYLE "lora/style_kohya.safetensors"
#define LCM "lora/lcm_peft.safetensors"

/* ---------------------------------------------------------------- tests */

TEST(diffusers_scenarios)
{
    sd_model *m = load_tiny(), *fresh = load_tiny();
    CHECK(m && fresh);
    if (!m || !fresh) {
        sd_model_free(m);
        sd_model_free(fresh);
        return;
    }
    float *base = NULL, *unfused = NULL;
    check_latents(m, "base", &base);
    uint64_t v0 = m->weights_version;

    CHECK_STATUS(apply2(m, STYLE, 0.8f, NULL, 0), SD_OK);
    CHECK(check_weights(m, "style") == 9);
    CHECK(sd_lora_state_count(m->lora) == 12);
    sd_model_info mi;
    CHECK_STATUS(sd_model_get_info(m, &mi), SD_OK);
    CHECK(mi.active_loras == 1);
    check_latents(m, "style", NULL);

    CHECK_STATUS(apply2(m, LCM, 1.0f, NULL, 0), SD_OK);
    CHECK(check_weights(m, "lcm") == 9);
    CHECK(sd_lora_state_count(m->lora) == 89);
    check_latents(m, "lcm", NULL);

    CHECK_STATUS(apply2(m, STYLE, 0.6f, LCM, 1.0f), SD_OK);
    CHECK(check_weights(m, "both") == 9);
    CHECK(sd_lora_state_count(m->lora) == 89); /* style's layers are a subset of lcm's */
    CHECK_STATUS(sd_model_get_info(m, &mi), SD_OK);
    CHECK(mi.active_loras == 2);
    check_latents(m, "both", NULL);

    /* scale change: no reload of the base model, computed from the base weights */
    CHECK_STATUS(apply2(m, STYLE, 1.2f, LCM, 0.5f), SD_OK);
    CHECK(check_weights(m, "change") == 9);
    check_latents(m, "change", NULL);
    CHECK(m->weights_version > v0);

    /* unfuse: the base weights bit for bit */
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    CHECK(m->lora == NULL);
    CHECK_STATUS(sd_model_get_info(m, &mi), SD_OK);
    CHECK(mi.active_loras == 0);
    const char *first;
    int nd = count_diff(m, fresh, &first);
    CHECK_MSG(nd == 0, "%d weight tensors differ from a fresh load after unfusing (first '%s')", nd, first);
    check_latents(m, "unfused", &unfused);
    size_t nl = 0;
    float *fresh_lat = run_lcm(fresh, &nl);
    CHECK(base && unfused && fresh_lat);
    if (base && unfused && fresh_lat) {
        CHECK_MSG(!memcmp(base, unfused, nl * sizeof(float)), "latents after unfusing differ from the base run");
        CHECK(!memcmp(fresh_lat, unfused, nl * sizeof(float)));
    }
    free(fresh_lat);
    printf("  worst fused-weight rel err %.3g, worst latent rel err %.3g\n", g_worst_w_rel, g_worst_lat_rel);
    free(base);
    free(unfused);
    sd_model_free(m);
    sd_model_free(fresh);
}

TEST(peft_adapter_folder)
{
    sd_model *m = load_tiny(), *m2 = load_tiny();
    CHECK(m && m2);
    if (!m || !m2) {
        sd_model_free(m);
        sd_model_free(m2);
        return;
    }
    char p[1200];
    sd_lora_spec s = {data_path(p, sizeof p, "lora/peft_adapter"), 1.0f};
    CHECK_STATUS(sd_model_apply_loras(m, &s, 1), SD_OK);
    CHECK(check_weights(m, "peft") == 6);
    CHECK(sd_lora_state_count(m->lora) == 28);
    /* the file itself (adapter_config.json found next to it) */
    sd_lora_spec s2 = {data_path(p, sizeof p, "lora/peft_adapter/adapter_model.safetensors"), 1.0f};
    CHECK_STATUS(sd_model_apply_loras(m2, &s2, 1), SD_OK);
    CHECK(count_diff(m, m2, NULL) == 0);
    sd_model_free(m);
    sd_model_free(m2);
}

/* ---------------------------------------------------------------- format variants of lcm_peft */

typedef enum { V_OLD_DIFFUSERS, V_KOHYA, V_PROCS } variant_kind;

/* PEFT alpha of lcm_peft's layers (its lora_adapter_metadata) */
static float lcm_alpha(const char *comp, const char *mod)
{
    if (!strcmp(comp, "text_encoder"))
        return 3.0f;
    return !strcmp(mod, "down_blocks.0.attentions.0.proj_in") ? 2.0f : 8.0f;
}

static bool ends(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void underscores(char *s)
{
    for (; *s; s++)
        if (*s == '.')
            *s = '_';
}

/* Rewrites lcm_peft.safetensors in another key format (alphas as tensors). */
static sd_status write_variant(const char *out, variant_kind kind)
{
    char p[1200];
    sd_safetensors *st;
    SD_TRY(sd_safetensors_open(data_path(p, sizeof p, LCM), &st));
    sd_st_writer *w = sd_st_writer_new();
    sd_status s = w ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; s == SD_OK && i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        char comp[32], mod[400], name[600];
        bool down = ends(t->name, ".lora_A.weight");
        const char *dot = strchr(t->name, '.');
        snprintf(comp, sizeof comp, "%.*s", (int)(dot - t->name), t->name);
        snprintf(mod, sizeof mod, "%.*s", (int)(strlen(dot + 1) - strlen(".lora_A.weight")), dot + 1);
        bool te = !strcmp(comp, "text_encoder");
        char full[420]; /* with the hub text_model. root */
        snprintf(full, sizeof full, "%s%s", te ? "text_model." : "", mod);
        const char *role = down ? "down" : "up";
        if (kind == V_OLD_DIFFUSERS) {
            snprintf(name, sizeof name, "%s.%s.lora.%s.weight", comp, full, role);
        } else if (kind == V_KOHYA) {
            char u[420];
            snprintf(u, sizeof u, "%s", full);
            underscores(u);
            snprintf(name, sizeof name, "%s%s.lora_%s.weight", te ? "lora_te1_" : "lora_unet_", u, role);
        } else { /* attention-processor spelling */
            char base[420];
            snprintf(base, sizeof base, "%s", full);
            const char *procs[][2] = {{".to_out.0", "to_out"}, {".to_q", "to_q"}, {".to_k", "to_k"}, {".to_v", "to_v"},
                                      {".q_proj", "to_q"},   {".k_proj", "to_k"}, {".v_proj", "to_v"},
                                      {".out_proj", "to_out"}};
            const char *pn = NULL;
            for (size_t k = 0; k < SD_ARRAY_LEN(procs) && !pn; k++)
                if (ends(base, procs[k][0])) {
                    base[strlen(base) - strlen(procs[k][0])] = 0;
                    pn = procs[k][1];
                }
            if (pn)
                snprintf(name, sizeof name, "%s.%s%s.%s_lora.%s.weight", comp, base, te ? "" : ".processor", pn, role);
            else if (te)
                snprintf(name, sizeof name, "%s.%s.lora_linear_layer.%s.weight", comp, full, role);
            else
                snprintf(name, sizeof name, "%s.%s.lora.%s.weight", comp, full, role);
        }
        s = sd_st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data);
        if (s == SD_OK && down) {
            float a = lcm_alpha(comp, mod);
            if (kind == V_KOHYA) {
                char u[420];
                snprintf(u, sizeof u, "%s", full);
                underscores(u);
                snprintf(name, sizeof name, "%s%s.alpha", te ? "lora_te1_" : "lora_unet_", u);
            } else {
                snprintf(name, sizeof name, "%s.%s.alpha", comp, full);
            }
            uint16_t h = sd_f32_to_f16(a); /* kohya stores alphas as F16 scalars */
            s = sd_st_writer_add(w, name, SD_F16, 0, NULL, &h);
        }
    }
    if (s == SD_OK)
        s = sd_st_writer_save(w, out);
    sd_st_writer_free(w);
    sd_safetensors_close(st);
    return s;
}

static char g_tmp[512];

static const char *tmp_file(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_tmp, name);
    return buf;
}

TEST(format_variants)
{
    sd_model *ref = load_tiny(), *m = load_tiny();
    CHECK(ref && m);
    if (!ref || !m) {
        sd_model_free(ref);
        sd_model_free(m);
        return;
    }
    CHECK_STATUS(apply2(ref, LCM, 0.7f, NULL, 0), SD_OK);
    static const char *const names[] = {"old_diffusers", "kohya_te1", "attn_procs"};
    for (int k = 0; k < 3; k++) {
        char f[700];
        tmp_file(f, sizeof f, names[k]);
        strcat(f, ".safetensors");
        CHECK_STATUS(write_variant(f, (variant_kind)k), SD_OK);
        sd_lora_spec s = {f, 0.7f};
        CHECK_STATUS(sd_model_apply_loras(m, &s, 1), SD_OK);
        CHECK_MSG(sd_lora_state_count(m->lora) == 89, "%s: %zu layers fused", names[k], sd_lora_state_count(m->lora));
        const char *first;
        int nd = count_diff(m, ref, &first);
        CHECK_MSG(nd == 0, "%s: %d tensors differ from the PEFT-format fusion (first '%s')", names[k], nd, first);
        unlink(f);
    }
    sd_model_free(ref);
    sd_model_free(m);
}

/* A copy of tiny-sd15 with F32 UNet/text-encoder files: weights are zero-copy views (copy-on-write path). */
static sd_status convert_f32(const char *src, const char *dst)
{
    sd_safetensors *st;
    SD_TRY(sd_safetensors_open(src, &st));
    sd_st_writer *w = sd_st_writer_new();
    sd_status s = w ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; s == SD_OK && i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        float *v = malloc(t->numel * sizeof(float) + 1);
        if (!v) {
            s = SD_ERR_OUT_OF_MEMORY;
            break;
        }
        sd_st_to_f32(t, v);
        s = sd_st_writer_add(w, t->name, SD_F32, t->ndim, t->shape, v);
        free(v);
    }
    if (s == SD_OK)
        s = sd_st_writer_save(w, dst);
    sd_st_writer_free(w);
    sd_safetensors_close(st);
    return s;
}

static sd_status copy_file(const char *src, const char *dst)
{
    char *d;
    size_t n;
    SD_TRY(sd_read_file(src, 1 << 20, &d, &n));
    sd_status s = sd_write_file(dst, d, n);
    free(d);
    return s;
}

static char g_f32[700];

static bool make_f32_model(void)
{
    char a[1200], b[1200];
    snprintf(g_f32, sizeof g_f32, "%s/tiny-f32", g_tmp);
    const char *subs[] = {"unet", "text_encoder"};
    if (mkdir(g_f32, 0755) != 0)
        return false;
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", g_f32, subs[i]);
        if (mkdir(a, 0755) != 0)
            return false;
    }
    snprintf(a, sizeof a, "%s/models/tiny-sd15/", g_data);
    struct { const char *from, *to; } links[] = {{"tokenizer", "tokenizer"}, {"vae", "vae"}, {"scheduler", "scheduler"}};
    for (size_t i = 0; i < SD_ARRAY_LEN(links); i++) {
        snprintf(a, sizeof a, "%s/models/tiny-sd15/%s", g_data, links[i].from);
        snprintf(b, sizeof b, "%s/%s", g_f32, links[i].to);
        char *abs = realpath(a, NULL);
        bool ok = abs && symlink(abs, b) == 0;
        free(abs);
        if (!ok)
            return false;
    }
    static const char *const copies[] = {"model_index.json", "unet/config.json", "text_encoder/config.json"};
    for (size_t i = 0; i < SD_ARRAY_LEN(copies); i++) {
        snprintf(a, sizeof a, "%s/models/tiny-sd15/%s", g_data, copies[i]);
        snprintf(b, sizeof b, "%s/%s", g_f32, copies[i]);
        if (copy_file(a, b) != SD_OK)
            return false;
    }
    snprintf(a, sizeof a, "%s/models/tiny-sd15/unet/diffusion_pytorch_model.safetensors", g_data);
    snprintf(b, sizeof b, "%s/unet/diffusion_pytorch_model.safetensors", g_f32);
    if (convert_f32(a, b) != SD_OK)
        return false;
    snprintf(a, sizeof a, "%s/models/tiny-sd15/text_encoder/model.safetensors", g_data);
    snprintf(b, sizeof b, "%s/text_encoder/model.safetensors", g_f32);
    return convert_f32(a, b) == SD_OK;
}

TEST(zero_copy_copy_on_write)
{
    if (!make_f32_model())
        FAIL("could not write an F32 copy of tiny-sd15 under %s: %s", g_tmp, sd_last_error());
    sd_model *m = load_model(g_f32), *fresh = load_model(g_f32);
    CHECK(m && fresh);
    if (!m || !fresh) {
        sd_model_free(m);
        sd_model_free(fresh);
        return;
    }
    CHECK(m->w_unet.bytes_mapped > 0 && m->w_unet.n_allocs == 0); /* views, nothing allocated */
    sd_tensor *q = weight(m, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight");
    void *view = q ? q->data : NULL;
    CHECK_STATUS(apply2(m, STYLE, 1.2f, LCM, 0.5f), SD_OK);
    CHECK(check_weights(m, "change") == 9);
    CHECK(m->w_unet.n_cow > 0 && m->w_text.n_cow > 0);
    CHECK(q && q->data != view);
    check_latents(m, "change", NULL);
    /* a scale change re-uses the copies */
    size_t ncow = m->w_unet.n_cow;
    CHECK_STATUS(apply2(m, STYLE, 0.6f, LCM, 1.0f), SD_OK);
    CHECK(check_weights(m, "both") == 9);
    CHECK(m->w_unet.n_cow == ncow);
    CHECK_STATUS(apply2(m, STYLE, 0.8f, NULL, 0), SD_OK); /* fewer layers: the others go back to the file */
    CHECK(check_weights(m, "style") == 9);
    CHECK(m->w_unet.n_cow < ncow);
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    CHECK(m->w_unet.n_cow == 0 && m->w_text.n_cow == 0);
    CHECK(q && q->data == view);
    CHECK(count_diff(m, fresh, NULL) == 0);
    sd_model_free(m);
    sd_model_free(fresh);
}

/* keep_f16: F16 files stay F16 zero-copy views; fused weights are rounded to F16 in copy-on-write buffers. */
TEST(keep_f16_views)
{
    char p[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.keep_f16 = true;
    sd_model *m = NULL, *fresh = NULL;
    CHECK_STATUS(sd_model_load(data_path(p, sizeof p, "models/tiny-sd15"), &mp, &m), SD_OK);
    CHECK_STATUS(sd_model_load(p, &mp, &fresh), SD_OK);
    if (!m || !fresh) {
        sd_model_free(m);
        sd_model_free(fresh);
        return;
    }
    CHECK_STATUS(apply2(m, STYLE, 0.6f, LCM, 1.0f), SD_OK);
    CHECK(m->w_unet.n_cow > 0);
    /* each fused weight = the F32 reference rounded to F16 */
    int n = 0, bad = 0;
    for (size_t i = 0; i < g_exp->n_tensors; i++) {
        const char *k = g_exp->tensors[i].name;
        if (strncmp(k, "both.w.", 7))
            continue;
        sd_tensor *t = weight(m, k + 7);
        CHECK(t && t->dtype == SD_F16);
        if (!t || t->dtype != SD_F16)
            continue;
        for (int64_t j = 0; j < sd_numel(t); j++) {
            float want = sd_f16_to_f32(sd_f32_to_f16((float)sd_st_get(&g_exp->tensors[i], (size_t)j)));
            float got = sd_f16_to_f32(((const uint16_t *)t->data)[j]);
            /* the F32 sums may round to the neighbouring half: allow one F16 ulp */
            bad += fabsf(got - want) > fabsf(want) * 0x1p-10f + 0x1p-24f;
        }
        n++;
    }
    CHECK(n == 9 && bad == 0);
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    CHECK(m->w_unet.n_cow == 0 && m->w_text.n_cow == 0);
    CHECK(count_diff(m, fresh, NULL) == 0);
    sd_model_free(m);
    sd_model_free(fresh);
}

/* precision bf16 and int8: fusing rewrites a weight the backend prepared at load (bf16: conv and linear
 * weights as the bf16 kernels' tiles, where the CPU has bf16 kernels; int8: linear and pointwise conv
 * weights quantised into the int8 kernels' tiles, where it has int8 kernels) through weight_prepare; it
 * then computes as the expected fused weight (within 1e-2 of the largest output: bf16 rounding, and at
 * int8 the quantisation of two nearby weights), and unfusing gives back the loaded bytes */
static void prepared_weights(sd_precision prec)
{
    char p[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.precision = prec;
    sd_model *m = NULL, *fresh = NULL;
    CHECK_STATUS(sd_model_load(data_path(p, sizeof p, "models/tiny-sd15"), &mp, &m), SD_OK);
    CHECK_STATUS(sd_model_load(p, &mp, &fresh), SD_OK);
    if (!m || !fresh) {
        sd_model_free(m);
        sd_model_free(fresh);
        return;
    }
    CHECK_STATUS(apply2(m, STYLE, 0.6f, LCM, 1.0f), SD_OK);
    sd_ctx ctx;
    CHECK_STATUS(sd_ctx_init(&ctx, m->be, (size_t)8 << 20), SD_OK);
    int n = 0, bad = 0, prepared = 0, gemm_like = 0; /* linears and pointwise convs */
    for (size_t i = 0; i < g_exp->n_tensors; i++) {
        const char *k = g_exp->tensors[i].name;
        if (strncmp(k, "both.w.", 7))
            continue;
        const sd_st_tensor *et = &g_exp->tensors[i];
        sd_tensor *t = weight(m, k + 7);
        CHECK(t && t->dtype == SD_BF16);
        if (!t || t->dtype != SD_BF16)
            continue;
        n++;
        gemm_like += t->ndim == 2 || (t->ne[2] == 1 && t->ne[3] == 1);
        if (t->layout == SD_LAYOUT_ROWMAJOR) { /* the fused values rounded to bf16 (one ulp for the F32 sums) */
            for (int64_t j = 0; j < sd_numel(t); j++) {
                float want = sd_bf16_to_f32(sd_f32_to_bf16((float)sd_st_get(et, (size_t)j)));
                float got = sd_bf16_to_f32(((const uint16_t *)t->data)[j]);
                bad += fabsf(got - want) > fabsf(want) * 0x1p-7f + 0x1p-30f;
            }
            continue;
        }
        /* a prepared weight: the conv (linear) with it = the one with the expected weight, in double */
        prepared++;
        sd_ctx_reset(&ctx);
        bool conv = t->ndim == 4;
        int64_t O = t->ne[0], C = t->ne[1], KH = conv ? t->ne[2] : 1, KW = conv ? t->ne[3] : 1;
        int64_t pad = conv ? KH / 2 : 0, xe[4] = {1, C, 5, 7}, xl[2] = {35, C};
        sd_tensor x = conv ? sd_new(&ctx, SD_F32, 4, xe) : sd_new(&ctx, SD_F32, 2, xl);
        float *xv = malloc((size_t)(C * 35) * sizeof(float));
        for (int64_t j = 0; j < C * 35; j++)
            xv[j] = (float)((j * 37) % 23) / 11.0f - 1.0f;
        sd_tensor_from_f32(&ctx, &x, xv);
        sd_tensor y1 = conv ? sd_conv2d(&ctx, x, *t, NULL, 1, (int)pad) : sd_linear(&ctx, x, *t, NULL);
        CHECK(sd_ok(&ctx));
        if (sd_ok(&ctx)) { /* 35 outputs per channel: 5x7 pixels (conv) or 35 rows (linear) */
            float *a = malloc((size_t)(35 * O) * sizeof(float));
            sd_tensor_to_f32(&ctx, &y1, a);
            double md = 0, mr = 0;
            for (int64_t o = 0; o < O; o++)
                for (int64_t q = 0; q < 35; q++) {
                    double r = 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t ih = q / 7 - pad + kh, iw = q % 7 - pad + kw;
                                if (conv && (ih < 0 || ih >= 5 || iw < 0 || iw >= 7))
                                    continue;
                                double wv = sd_st_get(et, (size_t)(((o * C + c) * KH + kh) * KW + kw));
                                r += wv * (conv ? xv[(c * 5 + ih) * 7 + iw] : xv[q * C + c]);
                            }
                    md = fmax(md, fabs(a[conv ? o * 35 + q : q * O + o] - r));
                    mr = fmax(mr, fabs(r));
                }
            bad += !(md <= 1e-2 * (mr > 0 ? mr : 1));
            free(a);
        }
        free(xv);
    }
    sd_ctx_free(&ctx);
    CHECK(n == 9 && bad == 0);
    if (prec == SD_PRECISION_BF16 && sd_backend_cpu_bf16_isa(m->be)) /* bf16 kernels: conv and linear weights */
        CHECK(prepared == 9);
    if (prec == SD_PRECISION_INT8 && sd_backend_cpu_int8_isa(m->be)) /* int8 kernels: linear and 1x1 weights */
        CHECK(gemm_like > 0 && prepared >= gemm_like);
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    CHECK(count_diff(m, fresh, NULL) == 0);
    sd_model_free(m);
    sd_model_free(fresh);
}

TEST(bf16_prepared_weights) { prepared_weights(SD_PRECISION_BF16); }

TEST(int8_prepared_weights) { prepared_weights(SD_PRECISION_INT8); }

/* ---------------------------------------------------------------- errors */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} fake_tensor;

static sd_status write_fake(const char *path, const fake_tensor *ts, int n)
{
    sd_st_writer *w = sd_st_writer_new();
    if (!w)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = SD_OK;
    for (int i = 0; i < n && s == SD_OK; i++) {
        size_t numel = 1;
        for (int k = 0; k < ts[i].ndim; k++)
            numel *= (size_t)ts[i].shape[k];
        float *v = calloc(numel + 1, sizeof(float));
        for (size_t k = 0; v && k < numel; k++)
            v[k] = 0.01f * (float)(k % 7);
        if (ts[i].ndim == 0 && v)
            v[0] = 4.0f;
        s = v ? sd_st_writer_add(w, ts[i].name, SD_F32, ts[i].ndim, ts[i].shape, v) : SD_ERR_OUT_OF_MEMORY;
        free(v);
    }
    if (s == SD_OK)
        s = sd_st_writer_save(w, path);
    sd_st_writer_free(w);
    return s;
}

#define TQ "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"

TEST(errors)
{
    sd_model *m = load_tiny(), *ref = load_tiny();
    CHECK(m && ref);
    if (!m || !ref) {
        sd_model_free(m);
        sd_model_free(ref);
        return;
    }
    CHECK_STATUS(apply2(m, STYLE, 0.8f, NULL, 0), SD_OK);
    CHECK_STATUS(apply2(ref, STYLE, 0.8f, NULL, 0), SD_OK);
    char f[700];
    tmp_file(f, sizeof f, "bad.safetensors");
    sd_lora_spec spec = {f, 1.0f};

    /* unmatched keys: reported by name; allow_unmatched only warns */
    fake_tensor unmatched[] = {{TQ ".lora_down.weight", 2, {2, 16}},
                               {TQ ".lora_up.weight", 2, {16, 2}},
                               {"lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight", 2, {2, 16}},
                               {"lora_unet_down_blocks_7_resnets_0_conv1.lora_up.weight", 2, {16, 2}},
                               {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, {2, 32}}};
    CHECK_STATUS(write_fake(f, unmatched, 5), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight");
    CHECK_ERR_CONTAINS("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight");
    CHECK_ERR_CONTAINS("3 LoRA tensor(s) match no layer");
    CHECK(count_diff(m, ref, NULL) == 0); /* the previous set stays active */
    CHECK(sd_lora_state_count(m->lora) == 12);
    sd_lora_options opt = {.allow_unmatched = true};
    CHECK_STATUS(sd_model_apply_loras_ex(m, &spec, 1, &opt), SD_OK);
    CHECK(sd_lora_state_count(m->lora) == 1);

    /* unsupported variants name themselves */
    struct {
        const char *key, *what;
    } variants[] = {{TQ ".hada_w1_a", "LoHa"},         {TQ ".lokr_w1", "LoKr"},
                    {TQ ".dora_scale", "DoRA"},        {TQ ".lora_mid.weight", "lora_mid"},
                    {TQ ".on_input", "(IA)^3"},        {TQ ".diff", "diff"},
                    {"unet.x.lora_magnitude_vector", "DoRA"}, {"base_model.model.x.ia3_l", "(IA)^3"}};
    for (size_t i = 0; i < SD_ARRAY_LEN(variants); i++) {
        fake_tensor t[] = {{TQ ".lora_down.weight", 2, {2, 16}}, {TQ ".lora_up.weight", 2, {16, 2}},
                           {variants[i].key, 1, {4}}};
        CHECK_STATUS(write_fake(f, t, 3), SD_OK);
        CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_UNSUPPORTED);
        CHECK_ERR_CONTAINS(variants[i].what);
        CHECK_ERR_CONTAINS(variants[i].key);
    }

    /* shapes */
    fake_tensor bad_in[] = {{TQ ".lora_down.weight", 2, {2, 15}}, {TQ ".lora_up.weight", 2, {16, 2}}};
    CHECK_STATUS(write_fake(f, bad_in, 2), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(TQ ".lora_down.weight");
    fake_tensor bad_rank[] = {{TQ ".lora_down.weight", 2, {2, 16}}, {TQ ".lora_up.weight", 2, {16, 3}}};
    CHECK_STATUS(write_fake(f, bad_rank, 2), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_SHAPE);
    CHECK_ERR_CONTAINS(TQ ".lora_up.weight");
    fake_tensor up3x3[] = {{"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", 4, {2, 16, 3, 3}},
                           {"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", 4, {16, 2, 3, 3}}};
    CHECK_STATUS(write_fake(f, up3x3, 2), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_UNSUPPORTED);
    fake_tensor no_up[] = {{TQ ".lora_down.weight", 2, {2, 16}}, {TQ ".alpha", 0, {0}}};
    CHECK_STATUS(write_fake(f, no_up, 2), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("no matching up");
    fake_tensor twice[] = {{TQ ".lora_down.weight", 2, {2, 16}}, {TQ ".lora_up.weight", 2, {16, 2}},
                           {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", 2, {2, 16}}};
    CHECK_STATUS(write_fake(f, twice, 3), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_FORMAT);

    /* files and arguments */
    char nf[700];
    sd_lora_spec missing = {tmp_file(nf, sizeof nf, "nope.safetensors"), 1.0f};
    CHECK_STATUS(sd_model_apply_loras(m, &missing, 1), SD_ERR_NOT_FOUND);
    CHECK_STATUS(sd_write_file(f, "garbage!", 8), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &spec, 1), SD_ERR_FORMAT);
    sd_lora_spec nopath = {NULL, 1.0f}, nan_scale = {f, NAN};
    CHECK_STATUS(sd_model_apply_loras(m, &nopath, 1), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_model_apply_loras(m, &nan_scale, 1), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_model_apply_loras(m, NULL, -1), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 1), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_model_apply_loras(NULL, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    /* a PEFT folder of another adapter type */
    char dir[700], cfg[800];
    tmp_file(dir, sizeof dir, "loha_adapter");
    mkdir(dir, 0755);
    snprintf(cfg, sizeof cfg, "%s/adapter_model.safetensors", dir);
    fake_tensor ok[] = {{"base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", 2,
                         {2, 16}},
                        {"base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", 2,
                         {16, 2}}};
    CHECK_STATUS(write_fake(cfg, ok, 2), SD_OK);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    const char *js = "{\"peft_type\": \"LOHA\", \"r\": 2}";
    CHECK_STATUS(sd_write_file(cfg, js, strlen(js)), SD_OK);
    sd_lora_spec folder = {dir, 1.0f};
    CHECK_STATUS(sd_model_apply_loras(m, &folder, 1), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("LOHA");
    js = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 1, \"use_rslora\": true}";
    CHECK_STATUS(sd_write_file(cfg, js, strlen(js)), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(m, &folder, 1), SD_OK);
    unlink(cfg);
    snprintf(cfg, sizeof cfg, "%s/adapter_model.safetensors", dir);
    unlink(cfg);
    rmdir(dir);
    unlink(f);
    /* n = 0 from any state: the base */
    CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
    CHECK_STATUS(sd_model_apply_loras(ref, NULL, 0), SD_OK);
    CHECK(count_diff(m, ref, NULL) == 0);
    sd_model_free(m);
    sd_model_free(ref);
}

/* alpha semantics on a hand-made layer: W' = W + scale * alpha/r * up @ down */
TEST(formula)
{
    sd_model *m = load_tiny(), *ref = load_tiny();
    CHECK(m && ref);
    if (!m || !ref) {
        sd_model_free(m);
        sd_model_free(ref);
        return;
    }
    char f[700];
    tmp_file(f, sizeof f, "formula.safetensors");
    /* te1 prefix, F32 alpha 6 with rank 2 -> 3x, scale 0.5 */
    const char *k = "lora_te1_text_model_encoder_layers_1_self_attn_out_proj";
    char kd[200], ku[200], ka[200];
    snprintf(kd, sizeof kd, "%s.lora_down.weight", k);
    snprintf(ku, sizeof ku, "%s.lora_up.weight", k);
    snprintf(ka, sizeof ka, "%s.alpha", k);
    float down[2 * 32], up[32 * 2], alpha = 6.0f;
    unsigned long long seed = 7;
    for (int i = 0; i < 64; i++) {
        down[i] = test_rand(&seed);
        up[i] = test_rand(&seed);
    }
    sd_st_writer *w = sd_st_writer_new();
    CHECK_STATUS(sd_st_writer_add(w, kd, SD_F32, 2, (int64_t[]){2, 32}, down), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, ku, SD_F32, 2, (int64_t[]){32, 2}, up), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, ka, SD_F32, 0, NULL, &alpha), SD_OK);
    CHECK_STATUS(sd_st_writer_save(w, f), SD_OK);
    sd_st_writer_free(w);
    sd_lora_spec s = {f, 0.5f};
    CHECK_STATUS(sd_model_apply_loras(m, &s, 1), SD_OK);
    sd_tensor *t = weight(m, "text_model.encoder.layers.1.self_attn.out_proj.weight");
    sd_tensor *b = weight(ref, "text_model.encoder.layers.1.self_attn.out_proj.weight");
    CHECK(t && b);
    double worst = 0;
    for (int o = 0; t && b && o < 32; o++)
        for (int c = 0; c < 32; c++) {
            double d = 0;
            for (int r = 0; r < 2; r++)
                d += (double)up[o * 2 + r] * down[r * 32 + c];
            double want = ((const float *)b->data)[o * 32 + c] + 0.5 * 3.0 * d;
            double e = fabs(((const float *)t->data)[o * 32 + c] - want);
            worst = e > worst ? e : worst;
        }
    CHECK_MSG(worst < 1e-5, "max err %g", worst);
    /* scale 0: checked, nothing fused */
    s.scale = 0.0f;
    CHECK_STATUS(sd_model_apply_loras(m, &s, 1), SD_OK);
    CHECK(sd_lora_state_count(m->lora) == 0);
    CHECK(count_diff(m, ref, NULL) == 0);
    unlink(f);
    sd_model_free(m);
    sd_model_free(ref);
}

/* A single-file checkpoint: text-encoder weights are aliases into the UNet's file (row ranges for OpenCLIP). */
static void single_file(const char *file, const char *folder, const char *lora_path)
{
    char sp[1200], fp[1200];
    data_path(sp, sizeof sp, file);
    data_path(fp, sizeof fp, folder);
    sd_model_params p;
    sd_model_default_params(&p);
    p.n_threads = 2;
    p.config_dir = fp;
    sd_model *m = NULL, *f = NULL, *base = NULL;
    CHECK_STATUS(sd_model_load(sp, &p, &m), SD_OK);
    CHECK_STATUS(sd_model_load(sp, &p, &base), SD_OK);
    f = load_model(fp);
    CHECK(f);
    if (m && f && base) {
        sd_lora_spec s = {lora_path, 0.9f};
        CHECK_STATUS(sd_model_apply_loras(m, &s, 1), SD_OK);
        CHECK_STATUS(sd_model_apply_loras(f, &s, 1), SD_OK);
        CHECK(sd_lora_state_count(m->lora) > 0 && sd_lora_state_count(m->lora) == sd_lora_state_count(f->lora));
        const char *first;
        int nd = count_diff(m, f, &first);
        CHECK_MSG(nd == 0, "%s: %d fused tensors differ from the folder model's (first '%s')", file, nd, first);
        CHECK_STATUS(sd_model_apply_loras(m, NULL, 0), SD_OK);
        CHECK(count_diff(m, base, NULL) == 0);
    }
    sd_model_free(m);
    sd_model_free(f);
    sd_model_free(base);
}

TEST(single_file_checkpoints)
{
    char lp[1200];
    single_file("models/tiny-sd15-single.safetensors", "models/tiny-sd15", data_path(lp, sizeof lp, LCM));
    /* SD2: OpenCLIP's fused in_proj_weight is split into q/k/v row ranges */
    char f[700];
    tmp_file(f, sizeof f, "sd2.safetensors");
    fake_tensor t[] = {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", 2, {2, 8}},
                       {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", 2, {8, 2}},
                       {"lora_te_text_model_encoder_layers_0_self_attn_v_proj.lora_down.weight", 2, {2, 8}},
                       {"lora_te_text_model_encoder_layers_0_self_attn_v_proj.lora_up.weight", 2, {8, 2}},
                       {"lora_te_text_model_encoder_layers_2_mlp_fc2.lora_down.weight", 2, {2, 20}},
                       {"lora_te_text_model_encoder_layers_2_mlp_fc2.lora_up.weight", 2, {8, 2}},
                       {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight", 2, {2, 16}},
                       {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight", 2, {16, 2}}};
    CHECK_STATUS(write_fake(f, t, (int)SD_ARRAY_LEN(t)), SD_OK);
    single_file("models/tiny-sd2-single.safetensors", "models/tiny-sd2", f);
    unlink(f);
}

int main(void)
{
    const char *td = getenv("SD_TEST_DATA");
    snprintf(g_data, sizeof g_data, "%s", td ? td : "tests/data");
    char p[1200];
    if (sd_safetensors_open(data_path(p, sizeof p, "lora/expected.safetensors"), &g_exp) != SD_OK) {
        fprintf(stderr, "FAIL: committed test data %s does not open (%s)\n", p, sd_last_error());
        return 1;
    }
    if (!test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_test_lora")) {
        printf("cannot create a temporary folder\n");
        return 1;
    }
    RUN(diffusers_scenarios);
    RUN(peft_adapter_folder);
    RUN(format_variants);
    RUN(zero_copy_copy_on_write);
    RUN(keep_f16_views);
    RUN(bf16_prepared_weights);
    RUN(int8_prepared_weights);
    RUN(errors);
    RUN(formula);
    RUN(single_file_checkpoints);
    test_rm_tree(g_tmp);
    sd_safetensors_close(g_exp);
    return test_summary();
}
