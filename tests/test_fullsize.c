/* Full-size random-weight SD1.5 and SD-turbo (SD2.1 architecture) models, in
 * both layouts users have (CTest label "slow"; minutes, several GB of RAM).
 *
 * The models and cases come from tools/gen_fullsize.py (developer-run) in
 * $SD_FULLSIZE (default /work/fullsize): diffusers folders <name>/, single-file
 * LDM checkpoints <name>.safetensors and cases/full_<name>_{unet,clip,vae}.
 * Without that folder every test SKIPs.
 *
 *  - folder_layout: every case through the conformance runner (sd_check_case),
 *    i.e. the component loaders on the diffusers folders (the UNet in F32 and
 *    with F16 weights kept in memory, direct and K/V-cache paths).
 *  - single_file_layout: for each single file named by the cases' manifest
 *    (`single_file`, `pipeline_dir`), sd_model_load(file, config_dir = the
 *    matching folder) and the loaded model's UNet / text encoder / VAE are run
 *    on the same inputs and compared with the same expected tensors and
 *    tolerances (every expected tensor must be produced).
 *  (`test_fullsize <test name>` runs one of them.)
 *  - single_file_derived_configs: the configs derived from the single file's
 *    tensors (what sd_model_load uses without config_dir) equal the folder's
 *    config.json on every key that matters at full size (head counts included:
 *    real models have 64-wide heads).
 *  - single_file_layout_derived_configs: the single-file cases again with
 *    sd_model_load(file) and no config_dir (configs derived from the tensors,
 *    the tokenizer from a throw-away HF cache: $HF_HUB_CACHE is set for it).
 */
#include "test.h"
#include "test_ckpt_util.h"

#include "backend/ops.h"
#include "check/check.h"
#include "models/checkpoint.h"
#include "pipe/model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static sd_backend *g_be;
static char g_root[1024];
static char **g_cases; /* case folders, sorted */
static int g_n_cases;

static const char *fullsize_root(void)
{
    const char *r = getenv("SD_FULLSIZE");
    return r && *r ? r : "/work/fullsize";
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Fills g_cases; false when the full-size data is absent. */
static bool find_cases(void)
{
    snprintf(g_root, sizeof g_root, "%s", fullsize_root());
    char cdir[1100];
    snprintf(cdir, sizeof cdir, "%s/cases", g_root);
    DIR *d = opendir(cdir);
    if (!d)
        return false;
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = sd_path_join(cdir, e->d_name);
        char *mf = p ? sd_path_join(p, "manifest.json") : NULL;
        if (mf && sd_file_exists(mf)) {
            if (g_n_cases == cap) {
                cap = cap ? cap * 2 : 16;
                char **nc = realloc(g_cases, (size_t)cap * sizeof *nc);
                if (!nc) {
                    free(mf);
                    free(p);
                    break;
                }
                g_cases = nc;
            }
            g_cases[g_n_cases++] = p;
            p = NULL;
        }
        free(mf);
        free(p);
    }
    closedir(d);
    if (g_n_cases)
        qsort(g_cases, (size_t)g_n_cases, sizeof *g_cases, by_name);
    return g_n_cases > 0;
}

#define NEED_DATA()                                                                                            \
    do {                                                                                                       \
        if (!g_n_cases)                                                                                        \
            SKIP("no full-size models in %s (run tools/gen_fullsize.py, or set SD_FULLSIZE)", fullsize_root()); \
    } while (0)

/* ------------------------------------------------------------------ folder layout */

TEST(folder_layout)
{
    NEED_DATA();
    for (int i = 0; i < g_n_cases; i++) {
        int n = 0, nf = 0;
        sd_status s = sd_check_case(g_cases[i], g_root, g_be, false, &n, &nf);
        CHECK_MSG(s == SD_OK && nf == 0 && n > 0, "%s: %s, %d of %d outputs failed (%s)", g_cases[i],
                  sd_status_name(s), nf, n, sd_last_error());
    }
}

/* ------------------------------------------------------------------ single-file layout */

#define MAX_SEEN 256

typedef struct run {
    sd_case c;
    const char *prefix; /* hook prefix: "act." (UNet), "enc.act." / "dec.act." (VAE), NULL = none */
    bool clip_hook;     /* map CLIP layer names to hidden_states.<k> */
    char *seen[MAX_SEEN];
    int n_seen;
} run;

static void mark_seen(run *r, const char *name)
{
    for (int i = 0; i < r->n_seen; i++)
        if (!strcmp(r->seen[i], name))
            return;
    if (r->n_seen < MAX_SEEN)
        r->seen[r->n_seen++] = sd_strdup(name);
}

static void compare_host(run *r, const char *name, const float *host, size_t n)
{
    sd_case_compare(&r->c, name, host, n);
    mark_seen(r, name);
}

static void compare_tensor(run *r, const char *name, sd_tensor t)
{
    size_t n = (size_t)sd_numel(&t);
    float *host = sd_malloc(n * sizeof(float) + 1);
    sd_ctx tmp = {.be = r->c.be};
    if (host && sd_tensor_to_f32(&tmp, &t, host) == SD_OK)
        compare_host(r, name, host, n);
    else
        sd_case_fail(&r->c, sd_last_error());
    free(host);
}

static void hook(void *user, const char *name, sd_tensor t)
{
    run *r = user;
    char key[320];
    int i;
    if (r->clip_hook) {
        if (!strcmp(name, "text_model.embeddings"))
            snprintf(key, sizeof key, "hidden_states.0");
        else if (sscanf(name, "text_model.encoder.layers.%d", &i) == 1)
            snprintf(key, sizeof key, "hidden_states.%d", i + 1);
        else
            return;
    } else if (r->prefix) {
        snprintf(key, sizeof key, "%s%s", r->prefix, name);
    } else {
        return;
    }
    if (r->c.expected && sd_st_find(r->c.expected, key))
        compare_tensor(r, key, t);
}

/* An input of the case uploaded into a new arena tensor (activation dtype unless `dt` is given). */
static sd_tensor input(sd_ctx *ctx, sd_case *c, const char *name, int dt)
{
    const sd_st_tensor *st = sd_case_input(c, name);
    if (!st)
        return sd_ctx_fail(ctx, SD_ERR_NOT_FOUND, "%s", sd_last_error());
    sd_tensor t = sd_new(ctx, dt < 0 ? ctx->be->act_dtype : (sd_dtype)dt, st->ndim, st->shape);
    if (!sd_ok(ctx) || ctx->plan)
        return t;
    float *host = sd_malloc(st->numel * sizeof(float) + 1);
    if (!host)
        return sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "out of memory");
    sd_st_to_f32(st, host);
    sd_status s = sd_tensor_from_f32(ctx, &t, host);
    free(host);
    return s == SD_OK ? t : sd_ctx_fail(ctx, s, "%s", sd_last_error());
}

static bool want(run *r, const char *name) { return r->c.expected && sd_st_find(r->c.expected, name); }

static void unet_pass(run *r, sd_ctx *ctx, const sd_model *m)
{
    sd_tensor x = input(ctx, &r->c, "sample", -1);
    sd_tensor t = input(ctx, &r->c, "timestep", SD_F32);
    sd_tensor cx = input(ctx, &r->c, "encoder_hidden_states", -1);
    r->prefix = "act.";
    sd_tensor y = sd_unet_forward(ctx, m->unet, x, t, cx, NULL, NULL);
    r->prefix = NULL;
    if (!ctx->plan && sd_ok(ctx))
        compare_tensor(r, "out_sample", y);
}

static void clip_pass(run *r, sd_ctx *ctx, const sd_model *m, const int32_t *ids, int B, int S)
{
    size_t m0 = sd_mark(ctx);
    sd_tensor pooled;
    r->clip_hook = true;
    sd_tensor lhs = sd_clip_forward(ctx, m->clip, ids, B, S, 0, &pooled, NULL);
    r->clip_hook = false;
    if (!ctx->plan && sd_ok(ctx)) {
        compare_tensor(r, "last_hidden_state", lhs);
        if (want(r, "pooler_output"))
            compare_tensor(r, "pooler_output", pooled);
    }
    sd_release(ctx, m0);
    for (int k = 1; k < m->clip_cfg.num_hidden_layers && sd_ok(ctx); k++) {
        char name[32];
        snprintf(name, sizeof name, "clip_skip_%d", k);
        if (!want(r, name))
            continue;
        sd_tensor h = sd_clip_forward(ctx, m->clip, ids, B, S, k, NULL, NULL);
        if (!ctx->plan && sd_ok(ctx))
            compare_tensor(r, name, h);
        sd_release(ctx, m0);
    }
}

static void vae_pass(run *r, sd_ctx *ctx, const sd_model *m)
{
    bool real = !ctx->plan;
    size_t m0 = sd_mark(ctx);
    sd_tensor img = input(ctx, &r->c, "image", -1);
    sd_tensor logvar;
    r->prefix = "enc.act.";
    sd_tensor mean = sd_vae_encode(ctx, m->vae, img, &logvar);
    r->prefix = NULL;
    if (real && sd_ok(ctx)) {
        compare_tensor(r, "latent_dist.mean", mean);
        compare_tensor(r, "latent_dist.logvar", logvar);
    }
    size_t m1 = sd_mark(ctx);
    if (want(r, "latent_dist.std")) {
        sd_tensor std = sd_unary(ctx, sd_affine(ctx, logvar, 0.5f, 0.0f), SD_UNARY_EXP);
        if (real && sd_ok(ctx))
            compare_tensor(r, "latent_dist.std", std);
        sd_release(ctx, m1);
    }
    if (want(r, "latent_dist.sample")) {
        sd_tensor smp = sd_vae_sample(ctx, mean, logvar, input(ctx, &r->c, "sample_noise", -1));
        if (real && sd_ok(ctx))
            compare_tensor(r, "latent_dist.sample", smp);
        sd_release(ctx, m1);
    }
    if (want(r, "forward_mode_roundtrip")) {
        sd_tensor rt = sd_vae_decode(ctx, m->vae, mean);
        if (real && sd_ok(ctx))
            compare_tensor(r, "forward_mode_roundtrip", rt);
        sd_release(ctx, m1);
    }
    sd_release(ctx, m0);
    if (want(r, "decoded")) {
        sd_tensor z = input(ctx, &r->c, "latent", -1);
        r->prefix = "dec.act.";
        sd_tensor dec = sd_vae_decode(ctx, m->vae, z);
        r->prefix = NULL;
        if (real && sd_ok(ctx))
            compare_tensor(r, "decoded", dec);
        sd_release(ctx, m0);
    }
}

static sd_status open_case(sd_case *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    c->dir = dir;
    c->be = g_be;
    c->root = sd_strdup(g_root);
    char *mp = sd_path_join(dir, "manifest.json");
    sd_status s = mp && c->root ? sd_config_load(mp, &c->manifest) : SD_ERR_OUT_OF_MEMORY;
    free(mp);
    if (s != SD_OK)
        return s;
    sd_config_str(&c->manifest, "name", dir, &c->name);
    for (int i = 0; i < 2 && s == SD_OK; i++) {
        char *p = sd_path_join(dir, i ? "expected.safetensors" : "inputs.safetensors");
        s = p ? sd_safetensors_open(p, i ? &c->expected : &c->inputs) : SD_ERR_OUT_OF_MEMORY;
        free(p);
    }
    return s;
}

static void close_case(sd_case *c)
{
    sd_safetensors_close(c->inputs);
    sd_safetensors_close(c->expected);
    sd_config_free(&c->manifest);
    free(c->root);
}

static void pass(run *r, sd_ctx *ctx, const sd_model *m, const char *comp, const int32_t *ids, int B, int S)
{
    if (!strcmp(comp, "unet"))
        unet_pass(r, ctx, m);
    else if (!strcmp(comp, "clip"))
        clip_pass(r, ctx, m, ids, B, S);
    else
        vae_pass(r, ctx, m);
}

/* Runs one case on the loaded single-file model and prints its worst err/tol. */
static void single_file_case(const char *dir, const sd_model *m, const char *file)
{
    run r;
    memset(&r, 0, sizeof r);
    sd_status s = open_case(&r.c, dir);
    CHECK_MSG(s == SD_OK, "%s: %s", dir, sd_last_error());
    const char *comp = NULL;
    if (s == SD_OK)
        sd_config_str(&r.c.manifest, "component", "", &comp);
    if (s != SD_OK || !comp || (strcmp(comp, "unet") && strcmp(comp, "clip") && strcmp(comp, "vae"))) {
        CHECK_MSG(s != SD_OK, "%s: manifest 'component' must be unet, clip or vae", dir);
        close_case(&r.c);
        return;
    }
    double t0 = sd_time_now();
    int32_t *ids = NULL;
    int B = 0, S = 0;
    if (!strcmp(comp, "clip")) {
        const sd_st_tensor *it = sd_case_input(&r.c, "input_ids");
        CHECK_MSG(it && it->ndim == 2, "%s: input_ids [B,S] missing", dir);
        if (it && it->ndim == 2) {
            B = (int)it->shape[0];
            S = (int)it->shape[1];
            ids = malloc(it->numel * sizeof *ids + 1);
            for (size_t i = 0; ids && i < it->numel; i++)
                ids[i] = (int32_t)sd_st_get(it, i);
        }
        if (!ids) {
            close_case(&r.c);
            return;
        }
    }
    sd_ctx ctx;
    sd_ctx_init_plan(&ctx, g_be);
    pass(&r, &ctx, m, comp, ids, B, S);
    s = ctx.status;
    size_t peak = ctx.peak;
    if (s == SD_OK)
        s = sd_ctx_init(&ctx, g_be, peak);
    if (s == SD_OK) {
        ctx.hook = hook;
        ctx.hook_user = &r;
        pass(&r, &ctx, m, comp, ids, B, S);
        s = ctx.status;
        sd_ctx_free(&ctx);
    }
    CHECK_MSG(s == SD_OK, "%s [single file]: %s", r.c.name, sd_last_error());
    int missing = 0;
    for (size_t i = 0; r.c.expected && i < r.c.expected->n_tensors; i++) {
        bool seen = false;
        for (int k = 0; k < r.n_seen && !seen; k++)
            seen = !strcmp(r.seen[k], r.c.expected->tensors[i].name);
        if (!seen) {
            missing++;
            printf("  %-44s FAIL  not produced by the single-file run\n", r.c.expected->tensors[i].name);
        }
    }
    printf("%s [single file %s]: %s  (%d outputs, %d failed, %d not produced, worst err/tol %.3f, %.1f s)\n",
           r.c.name, file, (r.c.n_failed || missing || s != SD_OK) ? "FAIL" : "PASS", r.c.n_checked, r.c.n_failed,
           missing, r.c.worst_ratio, sd_time_now() - t0);
    fflush(stdout);
    CHECK_MSG(r.c.n_failed == 0 && missing == 0 && r.c.n_checked > 0, "%s [single file]: %d failed, %d missing",
              r.c.name, r.c.n_failed, missing);
    for (int k = 0; k < r.n_seen; k++)
        free(r.seen[k]);
    free(ids);
    close_case(&r.c);
}

/* manifest string of a case (copied; NULL when absent) */
static char *manifest_str(const char *dir, const char *key)
{
    char *mp = sd_path_join(dir, "manifest.json");
    sd_config c;
    char *out = NULL;
    if (mp && sd_config_load(mp, &c) == SD_OK) {
        const char *v = NULL;
        if (sd_config_str(&c, key, NULL, &v) == SD_OK && v)
            out = sd_strdup(v);
        sd_config_free(&c);
    }
    free(mp);
    return out;
}

/* Every case on its single file, loaded with sd_model_load(file, config_dir = <pipeline_dir>) or, without
 * config_dir, with every config derived from the tensors (the tokenizer then comes from the HF cache). */
static void single_file_run(bool with_config_dir)
{
    bool *done = calloc((size_t)g_n_cases, sizeof *done);
    CHECK(done != NULL);
    for (int i = 0; done && i < g_n_cases; i++) {
        if (done[i])
            continue;
        char *file = manifest_str(g_cases[i], "single_file"), *pdir = manifest_str(g_cases[i], "pipeline_dir");
        if (!file || !pdir) {
            printf("  %s: no single_file/pipeline_dir in its manifest, not run in the single-file layout\n",
                   g_cases[i]);
            free(file);
            free(pdir);
            continue;
        }
        char *fpath = sd_path_join(g_root, file), *cfg = sd_path_join(g_root, pdir);
        sd_model_params p;
        sd_model_default_params(&p);
        if (with_config_dir)
            p.config_dir = cfg;
        sd_model *m = NULL;
        double t0 = sd_time_now();
        sd_status s = sd_model_load(fpath, &p, &m);
        CHECK_MSG(s == SD_OK, "sd_model_load(%s, config_dir=%s): %s", fpath, p.config_dir ? cfg : "NULL",
                  sd_last_error());
        char label[300];
        snprintf(label, sizeof label, "%s%s", file, with_config_dir ? "" : " (derived configs)");
        if (s == SD_OK) {
            sd_model_info info;
            sd_model_get_info(m, &info);
            printf("%s: loaded (config_dir %s) in %.1f s: arch %s, %s, %s, %.2f GB of weights in memory\n", file,
                   with_config_dir ? pdir : "none", sd_time_now() - t0, info.arch, info.scheduler,
                   info.prediction_type, info.weight_bytes / 1e9);
            fflush(stdout);
        }
        for (int j = i; j < g_n_cases; j++) {
            char *fj = j == i ? NULL : manifest_str(g_cases[j], "single_file");
            if (j == i || (fj && !strcmp(fj, file))) {
                done[j] = true;
                if (m)
                    single_file_case(g_cases[j], m, label);
            }
            free(fj);
        }
        sd_model_free(m);
        free(fpath);
        free(cfg);
        free(file);
        free(pdir);
    }
    free(done);
}

TEST(single_file_layout)
{
    NEED_DATA();
    single_file_run(true);
}

/* A throw-away HF cache holding only openai/clip-vit-large-patch14's tokenizer files (copied from the first
 * case's pipeline folder), so that sd_model_load(file) without config_dir finds a tokenizer. */
static const char *const k_tok_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                          "special_tokens_map.json"};
#define FAKE_REPO "models--openai--clip-vit-large-patch14"
#define FAKE_HASH "0000000000000000000000000000000000000000"

static bool fake_hf_cache(char *tmp, size_t cap)
{
    snprintf(tmp, cap, "/tmp/sd_fullsize_hf_XXXXXX");
    if (!mkdtemp(tmp))
        return false;
    char *pdir = manifest_str(g_cases[0], "pipeline_dir");
    char p[1400], q[1400];
    bool ok = pdir != NULL;
    const char *dirs[] = {FAKE_REPO, FAKE_REPO "/refs", FAKE_REPO "/snapshots", FAKE_REPO "/snapshots/" FAKE_HASH};
    for (size_t i = 0; ok && i < SD_ARRAY_LEN(dirs); i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, dirs[i]);
        ok = mkdir(p, 0700) == 0;
    }
    snprintf(p, sizeof p, "%s/" FAKE_REPO "/refs/main", tmp);
    ok = ok && sd_write_file(p, FAKE_HASH "\n", strlen(FAKE_HASH) + 1) == SD_OK;
    for (size_t i = 0; ok && i < SD_ARRAY_LEN(k_tok_files); i++) {
        char *data = NULL;
        size_t len = 0;
        snprintf(q, sizeof q, "%s/%s/tokenizer/%s", g_root, pdir, k_tok_files[i]);
        snprintf(p, sizeof p, "%s/" FAKE_REPO "/snapshots/" FAKE_HASH "/%s", tmp, k_tok_files[i]);
        ok = sd_read_file(q, (size_t)64 << 20, &data, &len) == SD_OK && sd_write_file(p, data, len) == SD_OK;
        free(data);
    }
    free(pdir);
    return ok;
}

static void remove_fake_hf_cache(const char *tmp)
{
    char p[1400];
    for (size_t i = 0; i < SD_ARRAY_LEN(k_tok_files); i++) {
        snprintf(p, sizeof p, "%s/" FAKE_REPO "/snapshots/" FAKE_HASH "/%s", tmp, k_tok_files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/" FAKE_REPO "/refs/main", tmp);
    unlink(p);
    const char *dirs[] = {FAKE_REPO "/snapshots/" FAKE_HASH, FAKE_REPO "/snapshots", FAKE_REPO "/refs", FAKE_REPO};
    for (size_t i = 0; i < SD_ARRAY_LEN(dirs); i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, dirs[i]);
        rmdir(p);
    }
    rmdir(tmp);
}

TEST(single_file_layout_derived_configs)
{
    NEED_DATA();
    char tmp[256];
    bool ok = fake_hf_cache(tmp, sizeof tmp);
    CHECK_MSG(ok, "cannot build a temporary HF cache in %s", tmp);
    if (ok) {
        const char *old = getenv("HF_HUB_CACHE");
        char *saved = old ? sd_strdup(old) : NULL;
        setenv("HF_HUB_CACHE", tmp, 1);
        single_file_run(false);
        if (saved)
            setenv("HF_HUB_CACHE", saved, 1);
        else
            unsetenv("HF_HUB_CACHE");
        free(saved);
    }
    remove_fake_hf_cache(tmp);
}

/* ------------------------------------------------------------------ derived configs */

/* a derived config (owned; NULL = could not derive) against the folder's (tests/test_ckpt_util.h) */
static void compare_owned(cJSON *derived, const char *folder_cfg, const char *const *keys, size_t nk, const char *what)
{
    CHECK_MSG(derived != NULL, "%s: cannot derive the config (%s)", what, sd_last_error());
    if (derived)
        compare_config(derived, folder_cfg, keys, nk, what);
    cJSON_Delete(derived);
}

TEST(single_file_derived_configs)
{
    NEED_DATA();
    static const char *const ukeys[] = {
        "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
        "up_block_types", "cross_attention_dim", "use_linear_projection", "attention_head_dim", "norm_num_groups",
        "flip_sin_to_cos", "freq_shift", "norm_eps", "act_fn", "downsample_padding", "mid_block_scale_factor",
    };
    static const char *const vkeys[] = {
        "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
        "down_block_types", "up_block_types", "norm_num_groups", "scaling_factor", "act_fn",
    };
    static const char *const tkeys[] = {
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
        "vocab_size", "hidden_act", "layer_norm_eps", "bos_token_id", "eos_token_id", "pad_token_id",
    };
    for (int i = 0; i < g_n_cases; i++) {
        char *file = manifest_str(g_cases[i], "single_file"), *pdir = manifest_str(g_cases[i], "pipeline_dir");
        char *comp = manifest_str(g_cases[i], "component");
        if (file && pdir && comp && !strcmp(comp, "unet")) { /* once per model */
            char fp[1200], cp[1200];
            snprintf(fp, sizeof fp, "%s/%s", g_root, file);
            sd_safetensors *st = NULL;
            sd_arch arch = SD_ARCH_UNKNOWN;
            CHECK_STATUS(sd_safetensors_open(fp, &st), SD_OK);
            if (st) {
                CHECK_STATUS(sd_ckpt_detect(st, &arch), SD_OK);
                printf("  %s: %s\n", file, sd_arch_name(arch));
                snprintf(cp, sizeof cp, "%s/%s/unet/config.json", g_root, pdir);
                compare_owned(sd_ckpt_unet_config(st, arch), cp, ukeys, SD_ARRAY_LEN(ukeys), "unet");
                snprintf(cp, sizeof cp, "%s/%s/vae/config.json", g_root, pdir);
                compare_owned(sd_ckpt_vae_config(st, arch), cp, vkeys, SD_ARRAY_LEN(vkeys), "vae");
                snprintf(cp, sizeof cp, "%s/%s/text_encoder/config.json", g_root, pdir);
                compare_owned(sd_ckpt_text_config(st, arch), cp, tkeys, SD_ARRAY_LEN(tkeys), "text");
                sd_weights u, v, t;
                sd_weights_init(&u, NULL, "unet", SD_F32);
                sd_weights_init(&v, NULL, "vae", SD_F32);
                sd_weights_init(&t, NULL, "text", SD_F32);
                sd_ckpt_info info;
                memset(&info, 0, sizeof info);
                CHECK_STATUS(sd_ckpt_map(st, arch, &u, &v, &t, &info), SD_OK);
                CHECK_MSG(info.n_unknown == 0, "%zu unknown keys, first %s", info.n_unknown,
                          info.n_unknown ? info.unknown[0] : "");
                printf("  %s: %zu unet + %zu vae + %zu text aliases, %zu ignored, text blocks %d -> %d\n", file,
                       info.n_unet, info.n_vae, info.n_text, info.n_ignored, info.text_blocks_in_file,
                       info.text_layers);
                sd_ckpt_info_free(&info);
                sd_weights_free(&u);
                sd_weights_free(&v);
                sd_weights_free(&t);
                sd_safetensors_close(st);
            }
        }
        free(file);
        free(pdir);
        free(comp);
    }
}

/* argv[1] (optional): run only the test of that name */
#define RUN_SEL(name)                                 \
    do {                                              \
        if (argc < 2 || !strcmp(argv[1], #name))      \
            RUN(name);                                \
    } while (0)

int main(int argc, char **argv)
{
    bool have = find_cases();
    if (have) {
        sd_status s = sd_backend_cpu_create(0, &g_be);
        if (s != SD_OK) {
            fprintf(stderr, "cannot create the CPU backend: %s\n", sd_last_error());
            return 1;
        }
        printf("full-size models: %s (%d cases)\n", g_root, g_n_cases);
    }
    RUN_SEL(single_file_derived_configs);
    RUN_SEL(folder_layout);
    RUN_SEL(single_file_layout);
    RUN_SEL(single_file_layout_derived_configs);
    for (int i = 0; i < g_n_cases; i++)
        free(g_cases[i]);
    free(g_cases);
    sd_backend_destroy(g_be);
    return test_summary();
}
