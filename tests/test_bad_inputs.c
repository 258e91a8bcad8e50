/* The bad-input matrix: every case damages a copy of a tiny model (or passes
 * a bad parameter) through the public API and expects one specific status
 * and a message that names the problem. Nothing here may crash, hang, or
 * fail with a misleading error.
 *
 * Models: $SD_TEST_DATA/models/tiny-sd15 (folder) and tiny-sd15-single.safetensors,
 * copied to a temporary folder before they are damaged. */
#include "test.h"
#include "test_util.h"

#include "core/core.h"
#include "core/memlimit.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_src[4096];  /* tiny-sd15 folder */
static char g_single[4096];
static char g_taesd[4096];
static char g_tmp[4096];  /* temp root */
static int g_n;
static sd_model *g_model; /* undamaged, loaded once */

/* ---------------------------------------------------------------- file helpers */

static bool copy_tree(const char *src, const char *dst)
{
    struct stat st;
    if (stat(src, &st) != 0)
        return false;
    if (!S_ISDIR(st.st_mode)) {
        char *data;
        size_t len;
        if (sd_read_file(src, (size_t)1 << 30, &data, &len) != SD_OK)
            return false;
        bool ok = sd_write_file(dst, data, len) == SD_OK;
        free(data);
        return ok;
    }
    if (mkdir(dst, 0755) != 0)
        return false;
    DIR *d = opendir(src);
    if (!d)
        return false;
    bool ok = true;
    for (struct dirent *e; ok && (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *a = sd_path_join(src, e->d_name), *b = sd_path_join(dst, e->d_name);
        ok = a && b && copy_tree(a, b);
        free(a);
        free(b);
    }
    closedir(d);
    return ok;
}

/* A fresh copy of the tiny model folder; returns its path (static buffer). */
static const char *model_copy(void)
{
    static char dir[4200];
    snprintf(dir, sizeof dir, "%s/m%d", g_tmp, g_n++);
    if (!copy_tree(g_src, dir)) {
        fprintf(stderr, "  cannot copy %s to %s\n", g_src, dir);
        return NULL;
    }
    return dir;
}

static char *join(const char *a, const char *b)
{
    static char buf[4][4400];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", a, b);
    return p;
}

static bool truncate_file(const char *path, size_t keep)
{
    char *data;
    size_t len;
    if (sd_read_file(path, (size_t)1 << 30, &data, &len) != SD_OK)
        return false;
    bool ok = sd_write_file(path, data, keep < len ? keep : len) == SD_OK;
    free(data);
    return ok;
}

static size_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Rewrites a safetensors file: edit(header, data section) may change both
 * (the header is re-serialised; data offsets are relative to the data). */
typedef void (*st_edit_fn)(cJSON *header, uint8_t *data, size_t data_len, void *user);

static bool st_edit(const char *path, st_edit_fn fn, void *user)
{
    char *raw;
    size_t len;
    if (sd_read_file(path, (size_t)1 << 30, &raw, &len) != SD_OK || len < 8)
        return false;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)(uint8_t)raw[i] << (8 * i);
    cJSON *h = cJSON_ParseWithLength(raw + 8, (size_t)n);
    bool ok = h != NULL;
    if (ok) {
        uint8_t *data = (uint8_t *)raw + 8 + n;
        size_t dlen = len - 8 - (size_t)n;
        fn(h, data, dlen, user);
        char *js = cJSON_PrintUnformatted(h);
        size_t hl = strlen(js);
        uint8_t *out = malloc(8 + hl + dlen);
        for (int i = 0; i < 8; i++)
            out[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        memcpy(out + 8, js, hl);
        memcpy(out + 8 + hl, data, dlen);
        ok = sd_write_file(path, out, 8 + hl + dlen) == SD_OK;
        free(out);
        free(js);
        cJSON_Delete(h);
    }
    free(raw);
    return ok;
}

/* Edits a JSON file through fn(root). */
static bool json_edit(const char *path, void (*fn)(cJSON *root, void *user), void *user)
{
    char *raw;
    size_t len;
    if (sd_read_file(path, (size_t)1 << 24, &raw, &len) != SD_OK)
        return false;
    cJSON *j = cJSON_ParseWithLength(raw, len);
    free(raw);
    if (!j)
        return false;
    fn(j, user);
    char *js = cJSON_Print(j);
    bool ok = sd_write_file(path, js, strlen(js)) == SD_OK;
    free(js);
    cJSON_Delete(j);
    return ok;
}

static void set_json(cJSON *root, void *user)
{
    /* user: "key=<json value>" */
    const char *kv = user;
    const char *eq = strchr(kv, '=');
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    cJSON *v = cJSON_Parse(eq + 1);
    if (cJSON_GetObjectItemCaseSensitive(root, key))
        cJSON_ReplaceItemInObjectCaseSensitive(root, key, v);
    else
        cJSON_AddItemToObject(root, key, v);
}

static bool set_config(const char *cfg, const char *kv) { return json_edit(cfg, set_json, (void *)kv); }

/* Loads `path` expecting `want` and an error containing `needle`. */
#define EXPECT_LOAD(path, params, want, needle)                                   \
    do {                                                                          \
        sd_model *m_ = NULL;                                                      \
        CHECK_STATUS(sd_model_load((path), (params), &m_), (want));               \
        if ((want) != SD_OK)                                                      \
            CHECK_ERR_CONTAINS(needle);                                           \
        CHECK(((want) == SD_OK) == (m_ != NULL));                                 \
        printf("    -> %s: %s\n", sd_status_name((want)), (want) == SD_OK ? "loaded" : sd_last_error()); \
        sd_model_free(m_);                                                        \
    } while (0)

#define NEED_MODEL()                                                                  \
    do {                                                                              \
        if (!g_model)                                                                 \
            FAIL("the tiny model %s did not load", g_src);                          \
    } while (0)

/* ---------------------------------------------------------------- files */

TEST(truncated_weights)
{
    const char *d = model_copy();
    CHECK(d);
    char *f = join(d, "unet/diffusion_pytorch_model.safetensors");
    CHECK(truncate_file(f, file_size(f) - 100));
    EXPECT_LOAD(d, NULL, SD_ERR_FORMAT, "[offsets-out-of-data]");
    CHECK_ERR_CONTAINS("unet/diffusion_pytorch_model.safetensors");
    CHECK(truncate_file(f, 40)); /* inside the header */
    EXPECT_LOAD(d, NULL, SD_ERR_FORMAT, "[header-out-of-file]");
    CHECK(truncate_file(f, 5));
    EXPECT_LOAD(d, NULL, SD_ERR_FORMAT, "[file-too-small]");
}

TEST(truncated_single_file)
{
    char f[4200];
    snprintf(f, sizeof f, "%s/single%d.safetensors", g_tmp, g_n++);
    CHECK(copy_tree(g_single, f));
    CHECK(truncate_file(f, file_size(f) / 2));
    EXPECT_LOAD(f, NULL, SD_ERR_FORMAT, "[offsets-out-of-data]");
    CHECK(truncate_file(f, 0));
    EXPECT_LOAD(f, NULL, SD_ERR_FORMAT, "[file-too-small]");
}

TEST(not_a_model)
{
    EXPECT_LOAD(NULL, NULL, SD_ERR_INVALID_ARGUMENT, "no model given");
    EXPECT_LOAD("", NULL, SD_ERR_INVALID_ARGUMENT, "no model given");
    char p[4200];
    snprintf(p, sizeof p, "%s/does/not/exist", g_tmp);
    EXPECT_LOAD(p, NULL, SD_ERR_NOT_FOUND, "not found");
    /* an empty folder */
    snprintf(p, sizeof p, "%s/empty%d", g_tmp, g_n++);
    CHECK(mkdir(p, 0755) == 0);
    EXPECT_LOAD(p, NULL, SD_ERR_NOT_FOUND, "no unet/ folder");
    /* a text file */
    snprintf(p, sizeof p, "%s/notes%d.txt", g_tmp, g_n++);
    static const char txt[] = "hello world, not a model\n";
    CHECK(sd_write_file(p, txt, sizeof txt - 1) == SD_OK);
    EXPECT_LOAD(p, NULL, SD_ERR_FORMAT, "[header-too-large]");
    CHECK_ERR_CONTAINS("notes");
    /* PyTorch pickles (.ckpt = zip, old .pt = raw pickle): refused by name, never parsed */
    snprintf(p, sizeof p, "%s/model%d.ckpt", g_tmp, g_n++);
    static const char zip[] = "PK\3\4\24\0\0\0\0\0archive/data.pkl", pkl[] = "\x80\x02}q\0(X\x05\0\0\0state";
    CHECK(sd_write_file(p, zip, sizeof zip - 1) == SD_OK);
    EXPECT_LOAD(p, NULL, SD_ERR_UNSUPPORTED, "pickle");
    CHECK(sd_write_file(p, pkl, sizeof pkl - 1) == SD_OK);
    EXPECT_LOAD(p, NULL, SD_ERR_UNSUPPORTED, "never loads pickles");
    /* a valid safetensors file that is not a Stable Diffusion checkpoint (the TAESD weights) */
    EXPECT_LOAD(join(g_taesd, "diffusion_pytorch_model.safetensors"), NULL, SD_ERR_FORMAT,
                "not a single-file Stable Diffusion checkpoint");
}

static void set_dtype(cJSON *h, uint8_t *data, size_t n, void *user)
{
    (void)data;
    (void)n;
    const char **a = user; /* {tensor, dtype} */
    cJSON *e = cJSON_GetObjectItemCaseSensitive(h, a[0]);
    cJSON_ReplaceItemInObjectCaseSensitive(e, "dtype", cJSON_CreateString(a[1]));
}

TEST(wrong_dtypes)
{
    /* F32 -> I32 (same size): an integer tensor where a float weight belongs */
    const char *d = model_copy();
    CHECK(d);
    const char *a[2] = {"decoder.conv_in.weight", "I32"};
    CHECK(st_edit(join(d, "vae/diffusion_pytorch_model.safetensors"), set_dtype, a));
    EXPECT_LOAD(d, NULL, SD_ERR_FORMAT, "decoder.conv_in.weight");
    CHECK_ERR_CONTAINS("I32");
    /* F16 -> BF16 (same size): a float dtype, converted, loads */
    d = model_copy();
    const char *b[2] = {"conv_in.weight", "BF16"};
    CHECK(st_edit(join(d, "unet/diffusion_pytorch_model.safetensors"), set_dtype, b));
    EXPECT_LOAD(d, NULL, SD_OK, "");
    /* an unknown dtype */
    d = model_copy();
    const char *c[2] = {"conv_in.weight", "F8_E4M3"};
    CHECK(st_edit(join(d, "unet/diffusion_pytorch_model.safetensors"), set_dtype, c));
    EXPECT_LOAD(d, NULL, SD_ERR_UNSUPPORTED, "[unknown-dtype]");
    CHECK_ERR_CONTAINS("F8_E4M3");
}

TEST(shapes_disagree_with_config)
{
    const char *d = model_copy();
    CHECK(d);
    CHECK(set_config(join(d, "unet/config.json"), "block_out_channels=[16,48]"));
    EXPECT_LOAD(d, NULL, SD_ERR_SHAPE, "needs");
    CHECK_ERR_CONTAINS("unet");
    d = model_copy();
    CHECK(set_config(join(d, "unet/config.json"), "cross_attention_dim=64"));
    EXPECT_LOAD(d, NULL, SD_ERR_SHAPE, "attn2.to_k.weight");
    d = model_copy();
    CHECK(set_config(join(d, "text_encoder/config.json"), "hidden_size=48"));
    EXPECT_LOAD(d, NULL, SD_ERR_SHAPE, "text_encoder");
    d = model_copy();
    CHECK(set_config(join(d, "vae/config.json"), "latent_channels=8"));
    EXPECT_LOAD(d, NULL, SD_ERR_SHAPE, "vae");
    /* more layers than the file has */
    d = model_copy();
    CHECK(set_config(join(d, "text_encoder/config.json"), "num_hidden_layers=3"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "text_model.encoder.layers.2");
}

TEST(absurd_configs)
{
    static const char *const cases[][3] = {
        /* file, key=value, expected substring */
        {"unet/config.json", "block_out_channels=[16,1e15]", "block_out_channels"},
        {"unet/config.json", "cross_attention_dim=1e12", "cross_attention_dim"},
        {"unet/config.json", "block_out_channels=[]", "block_out_channels"},
        {"unet/config.json", "layers_per_block=1000000", "layers_per_block"},
        {"unet/config.json", "attention_head_dim=[0,0]", "attention_head_dim"},
        {"unet/config.json", "norm_num_groups=0", "norm_num_groups"},
        {"unet/config.json", "norm_num_groups=7", "norm_num_groups"},
        {"unet/config.json", "in_channels=-4", "in_channels"},
        {"unet/config.json", "sample_size=-1", "sample_size"},
        {"text_encoder/config.json", "num_attention_heads=0", "num_attention_heads"},
        {"text_encoder/config.json", "num_attention_heads=3", "num_attention_heads"},
        {"text_encoder/config.json", "num_hidden_layers=-1", "num_hidden_layers"},
        {"text_encoder/config.json", "max_position_embeddings=0", "max_position_embeddings"},
        {"text_encoder/config.json", "vocab_size=10", "token_embedding"},
        {"vae/config.json", "block_out_channels=[8,16,32,64,128,256,512,1024,2048,4096]", "block_out_channels"},
        {"vae/config.json", "norm_num_groups=0", "norm_num_groups"},
        {"vae/config.json", "scaling_factor=0", "scaling_factor"},
        {"scheduler/scheduler_config.json", "num_train_timesteps=0", "num_train_timesteps"},
        {"scheduler/scheduler_config.json", "num_train_timesteps=2000000000", "num_train_timesteps"},
        {"scheduler/scheduler_config.json", "beta_end=2", "beta_end 2 must be in [0, 1)"},
        {"scheduler/scheduler_config.json", "beta_schedule=\"cubic\"", "cubic"},
        {"scheduler/scheduler_config.json", "prediction_type=\"flow\"", "flow"},
        /* a class this build lacks runs as DPM-Solver++ from the file (like SD1.5's PNDMScheduler): loads */
        {"scheduler/scheduler_config.json", "_class_name=\"FooScheduler\"", ""},
        {"unet/config.json", "down_block_types=\"CrossAttnDownBlock2D\"", "down_block_types"},
        {"model_index.json", "unet=42", ""},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        const char *d = model_copy();
        CHECK(d);
        CHECK(set_config(join(d, cases[i][0]), cases[i][1]));
        sd_model *m = NULL;
        sd_status s = sd_model_load(d, NULL, &m);
        printf("    %s %s -> %s: %s\n", cases[i][0], cases[i][1], sd_status_name(s), s ? sd_last_error() : "loaded");
        if (!cases[i][2][0]) { /* accepted on purpose */
            CHECK_STATUS(s, SD_OK);
        } else {
            CHECK_MSG(s != SD_OK, "%s %s was accepted", cases[i][0], cases[i][1]);
            CHECK_ERR_CONTAINS(cases[i][2]);
        }
        sd_model_free(m);
    }
}

TEST(missing_sub_models)
{
    const char *d = model_copy();
    CHECK(d);
    test_rm_tree(join(d, "unet"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "no unet/ folder");

    d = model_copy();
    test_rm_tree(join(d, "text_encoder"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "no text_encoder/ folder");

    d = model_copy();
    test_rm_tree(join(d, "tokenizer"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "vocab.json");

    d = model_copy(); /* the weights file alone is missing */
    unlink(join(d, "unet/diffusion_pytorch_model.safetensors"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "no weights found");

    d = model_copy(); /* the config alone is missing */
    unlink(join(d, "unet/config.json"));
    EXPECT_LOAD(d, NULL, SD_ERR_NOT_FOUND, "unet/config.json");

    d = model_copy(); /* only a pickle checkpoint: refused, never executed */
    unlink(join(d, "unet/diffusion_pytorch_model.safetensors"));
    CHECK(sd_write_file(join(d, "unet/diffusion_pytorch_model.bin"), "PK\3\4", 4) == SD_OK);
    EXPECT_LOAD(d, NULL, SD_ERR_UNSUPPORTED, ".safetensors only");

    d = model_copy(); /* no scheduler/: defaults */
    test_rm_tree(join(d, "scheduler"));
    EXPECT_LOAD(d, NULL, SD_OK, "");

    d = model_copy(); /* no vae/: loads, but generation needs a VAE or TAESD */
    test_rm_tree(join(d, "vae"));
    sd_model *m = NULL;
    CHECK_STATUS(sd_model_load(d, NULL, &m), SD_OK);
    if (m) {
        sd_gen_params gp;
        sd_gen_default_params(&gp);
        gp.steps = 1;
        sd_image img = {0};
        CHECK_STATUS(sd_txt2img(m, &gp, &img), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("no VAE");
        sd_stream *s = NULL;
        sd_stream_params sp;
        sd_stream_default_params(&sp);
        sp.width = sp.height = 32;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("neither a VAE nor a TAESD");
        sd_model_free(m);
    }

    d = model_copy(); /* a bad TAESD path */
    sd_model_params mp;
    sd_model_default_params(&mp);
    char p[4400];
    snprintf(p, sizeof p, "%s/no-taesd-here", d);
    mp.taesd = p;
    EXPECT_LOAD(d, &mp, SD_ERR_NOT_FOUND, "TAESD");
}

static void poison(cJSON *h, uint8_t *data, size_t n, void *user)
{
    const char **a = user; /* {tensor, "nan"|"inf"} */
    cJSON *e = cJSON_GetObjectItemCaseSensitive(h, a[0]);
    const char *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring;
    size_t off = (size_t)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(e, "data_offsets"), 0)->valuedouble;
    size_t at = off + 3 * (!strcmp(dt, "F32") ? 4 : 2); /* element 3 */
    if (at + 4 > n)
        return;
    bool nan = !strcmp(a[1], "nan");
    if (!strcmp(dt, "F32")) {
        uint32_t u = nan ? 0x7fc00000u : 0xff800000u;
        memcpy(data + at, &u, 4);
    } else {
        uint16_t v = nan ? 0x7e00u : 0x7c00u;
        memcpy(data + at, &v, 2);
    }
}

TEST(non_finite_weights)
{
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.check_finite = true;
    /* a NaN in the F32 VAE */
    const char *d = model_copy();
    CHECK(d);
    const char *a[2] = {"decoder.conv_in.weight", "nan"};
    CHECK(st_edit(join(d, "vae/diffusion_pytorch_model.safetensors"), poison, a));
    EXPECT_LOAD(d, &mp, SD_ERR_FORMAT, "decoder.conv_in.weight");
    CHECK_ERR_CONTAINS("NaN at element 3");
    /* the check is opt-in: without it the file loads */
    EXPECT_LOAD(d, NULL, SD_OK, "");
    /* an Inf in the F16 UNet */
    d = model_copy();
    const char *b[2] = {"conv_in.weight", "inf"};
    CHECK(st_edit(join(d, "unet/diffusion_pytorch_model.safetensors"), poison, b));
    EXPECT_LOAD(d, &mp, SD_ERR_FORMAT, "'conv_in.weight'");
    CHECK_ERR_CONTAINS("+Inf");
    /* the undamaged model passes the check */
    EXPECT_LOAD(g_src, &mp, SD_OK, "");
    /* single file (its configs from the folder: the tiny model's head counts are not derivable) */
    mp.config_dir = g_src;
    EXPECT_LOAD(g_single, &mp, SD_OK, "");
}

/* ---------------------------------------------------------------- generation parameters */

static sd_status gen(void (*tweak)(sd_gen_params *), bool img2img)
{
    sd_gen_params gp;
    sd_gen_default_params(&gp);
    gp.steps = 1;
    gp.width = gp.height = 32;
    gp.prompt = "a cat";
    tweak(&gp);
    sd_image out[2] = {{0}}, init = {0};
    sd_status s;
    if (img2img) {
        init.width = init.height = 32;
        init.data = calloc(32 * 32 * 3, 1);
        s = sd_img2img(g_model, &gp, &init, out);
        free(init.data);
    } else {
        s = sd_txt2img(g_model, &gp, out);
    }
    printf("    -> %s: %s\n", sd_status_name(s), s ? sd_last_error() : "ok");
    if (s == SD_OK)
        for (int b = 0; b < gp.batch_size && b < 2; b++)
            sd_image_free(&out[b]);
    return s;
}

#define GEN_CASE(name, body) \
    static void name(sd_gen_params *p) { body; }
GEN_CASE(g_w100000, p->width = 100000)
GEN_CASE(g_wneg, p->width = -8)
GEN_CASE(g_w36, p->width = 36)
GEN_CASE(g_h20, p->height = 20)
GEN_CASE(g_w4096, p->width = p->height = 4096)
GEN_CASE(g_steps_neg, p->steps = -1)
GEN_CASE(g_steps_big, p->steps = 100000)
GEN_CASE(g_guid_neg, p->guidance_scale = -1)
GEN_CASE(g_guid_nan, p->guidance_scale = NAN)
GEN_CASE(g_guid_big, p->guidance_scale = 1e9f)
GEN_CASE(g_batch0, p->batch_size = 0)
GEN_CASE(g_batch_big, p->batch_size = 1000)
GEN_CASE(g_clip_skip_neg, p->clip_skip = -1)
GEN_CASE(g_clip_skip_big, p->clip_skip = 50)
GEN_CASE(g_sampler, p->sampler = "dpm_fastest_ever")
GEN_CASE(g_schedule, p->schedule = "exponentialish")
GEN_CASE(g_strength0, p->strength = 0)
GEN_CASE(g_strength_big, p->strength = 1.5f)
GEN_CASE(g_strength_nan, p->strength = NAN)
GEN_CASE(g_eta_nan, { p->sampler = "ddim"; p->eta = NAN; })
GEN_CASE(g_eta_neg, { p->sampler = "ddim"; p->eta = -1; })
GEN_CASE(g_rng, p->rng = (sd_rng_type)7)
GEN_CASE(g_empty_prompt, p->prompt = "")
GEN_CASE(g_null_prompt, { p->prompt = NULL; p->negative_prompt = NULL; })
GEN_CASE(g_ok, p->steps = 2) /* img2img strength 0.8: int(2 * 0.8) = 1 step */

TEST(generation_parameters)
{
    NEED_MODEL();
    static const struct {
        const char *what;
        void (*fn)(sd_gen_params *);
        bool img2img;
        sd_status want;
        const char *needle;
    } cases[] = {
        {"width 100000", g_w100000, false, SD_ERR_INVALID_ARGUMENT, "multiples of 8"},
        {"width -8", g_wneg, false, SD_ERR_INVALID_ARGUMENT, "multiples of 8"},
        {"width 36 (not a multiple of 8)", g_w36, false, SD_ERR_INVALID_ARGUMENT, "multiples of 8"},
        {"height 20 (not a multiple of 8)", g_h20, false, SD_ERR_INVALID_ARGUMENT, "multiples of 8"},
        {"steps -1", g_steps_neg, false, SD_ERR_INVALID_ARGUMENT, "steps"},
        {"steps 100000", g_steps_big, false, SD_ERR_INVALID_ARGUMENT, "steps"},
        {"guidance -1", g_guid_neg, false, SD_ERR_INVALID_ARGUMENT, "guidance"},
        {"guidance NaN", g_guid_nan, false, SD_ERR_INVALID_ARGUMENT, "guidance"},
        {"guidance 1e9", g_guid_big, false, SD_ERR_INVALID_ARGUMENT, "guidance"},
        {"batch 0", g_batch0, false, SD_ERR_INVALID_ARGUMENT, "batch"},
        {"batch 1000", g_batch_big, false, SD_ERR_INVALID_ARGUMENT, "batch"},
        {"clip_skip -1", g_clip_skip_neg, false, SD_ERR_INVALID_ARGUMENT, "clip"},
        {"clip_skip 50", g_clip_skip_big, false, SD_ERR_INVALID_ARGUMENT, "clip"},
        {"unknown sampler", g_sampler, false, SD_ERR_INVALID_ARGUMENT, "dpm_fastest_ever"},
        {"unknown schedule", g_schedule, false, SD_ERR_INVALID_ARGUMENT, "exponentialish"},
        {"img2img strength 0", g_strength0, true, SD_ERR_INVALID_ARGUMENT, "strength"},
        {"img2img strength 1.5", g_strength_big, true, SD_ERR_INVALID_ARGUMENT, "strength"},
        {"img2img strength NaN", g_strength_nan, true, SD_ERR_INVALID_ARGUMENT, "strength"},
        {"ddim eta NaN", g_eta_nan, false, SD_ERR_INVALID_ARGUMENT, "eta"},
        {"ddim eta -1", g_eta_neg, false, SD_ERR_INVALID_ARGUMENT, "eta"},
        {"rng type 7", g_rng, false, SD_ERR_INVALID_ARGUMENT, "rng"},
        {"empty prompt", g_empty_prompt, false, SD_OK, ""},
        {"NULL prompts", g_null_prompt, false, SD_OK, ""},
        {"valid img2img", g_ok, true, SD_OK, ""},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        printf("  %s\n", cases[i].what);
        sd_status s = gen(cases[i].fn, cases[i].img2img);
        CHECK_MSG(s == cases[i].want, "%s: got %s, want %s (%s)", cases[i].what, sd_status_name(s),
                  sd_status_name(cases[i].want), sd_last_error());
        if (cases[i].want != SD_OK)
            CHECK_ERR_CONTAINS(cases[i].needle);
    }
    /* img2img with an empty init image */
    sd_gen_params gp;
    sd_gen_default_params(&gp);
    gp.steps = 1;
    sd_image init = {0}, out = {0};
    CHECK_STATUS(sd_img2img(g_model, &gp, &init, &out), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("empty");
    CHECK_STATUS(sd_img2img(g_model, &gp, NULL, &out), SD_ERR_INVALID_ARGUMENT);
    init.width = -5;
    init.height = 3;
    init.data = (uint8_t *)"x";
    CHECK_STATUS(sd_img2img(g_model, &gp, &init, &out), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_txt2img(NULL, &gp, &out), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_txt2img(g_model, NULL, &out), SD_ERR_INVALID_ARGUMENT);
}

TEST(memory_limit)
{
    NEED_MODEL();
    /* 4096x4096 on the tiny model: refused up front against the limit, naming needed and available MiB */
    setenv("SD_MAX_ARENA_BYTES", "64M", 1);
    printf("  4096x4096 with SD_MAX_ARENA_BYTES=64M\n");
    CHECK_STATUS(gen(g_w4096, false), SD_ERR_OUT_OF_MEMORY);
    CHECK_ERR_CONTAINS("MiB of working memory but only 64 MiB are available (SD_MAX_ARENA_BYTES)");
    /* the normal size fits */
    CHECK_STATUS(gen(g_ok, false), SD_OK);
    sd_stream_params sp;
    sd_stream_default_params(&sp);
    sp.width = sp.height = 2048;
    sp.n_t_index = 4;
    sp.t_index_list[2] = 47;
    sp.t_index_list[3] = 49;
    sd_stream *st = NULL;
    CHECK_STATUS(sd_stream_create(g_model, &sp, &st), SD_ERR_OUT_OF_MEMORY);
    CHECK_ERR_CONTAINS("2048x2048 stream");
    printf("    -> %s\n", sd_last_error());
    sd_stream_free(st);
    setenv("SD_MAX_ARENA_BYTES", "lots", 1);
    CHECK_STATUS(gen(g_ok, false), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("SD_MAX_ARENA_BYTES");
    setenv("SD_MAX_ARENA_BYTES", "0", 1); /* 0 = no limit */
    CHECK(sd_mem_limit(true, NULL) == SIZE_MAX);
    unsetenv("SD_MAX_ARENA_BYTES");
    const char *src = NULL;
    size_t avail = sd_mem_limit(true, &src);
    printf("  available without a limit: %zu MiB (%s)\n", avail >> 20, src);
    CHECK(avail > ((size_t)16 << 20));
}

TEST(prompts)
{
    NEED_MODEL();
    /* far beyond 77 tokens: a warning and truncation, not an error */
    size_t n = 20000;
    char *p = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        p[i] = "a cat on a mat "[i % 15];
    p[n] = 0;
    sd_gen_params gp;
    sd_gen_default_params(&gp);
    gp.steps = 1;
    gp.prompt = p;
    gp.negative_prompt = p;
    sd_image out = {0};
    CHECK_STATUS(sd_txt2img(g_model, &gp, &out), SD_OK);
    sd_image_free(&out);
    free(p);
    /* beyond the tokenizer's input cap (4 MiB): refused with a clear message */
    n = ((size_t)4 << 20) + 16;
    p = malloc(n + 1);
    memset(p, 'a', n);
    p[n] = 0;
    gp.prompt = p;
    gp.negative_prompt = NULL;
    CHECK_STATUS(sd_txt2img(g_model, &gp, &out), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("more than the limit");
    free(p);
    /* invalid UTF-8 and control characters are fine */
    gp.prompt = "caf\xc3 \xff\xfe \x01\x02 <|endoftext|> \xf0\x9f\x99\x82";
    CHECK_STATUS(sd_txt2img(g_model, &gp, &out), SD_OK);
    sd_image_free(&out);
}

/* ---------------------------------------------------------------- stream parameters */

typedef void (*stream_tweak)(sd_stream_params *);
#define ST_CASE(name, body) \
    static void name(sd_stream_params *p) { body; }
ST_CASE(s_none, p->n_t_index = 0)
ST_CASE(s_many, p->n_t_index = SD_STREAM_MAX_STEPS + 1)
ST_CASE(s_desc, { p->t_index_list[0] = 45; p->t_index_list[1] = 32; })
ST_CASE(s_dup, { p->t_index_list[0] = 32; p->t_index_list[1] = 32; })
ST_CASE(s_range, p->t_index_list[1] = 50)
ST_CASE(s_neg, p->t_index_list[0] = -1)
ST_CASE(s_steps0, p->num_inference_steps = 0)
ST_CASE(s_steps_few, p->num_inference_steps = 10)
ST_CASE(s_fbs0, p->frame_buffer_size = 0)
ST_CASE(s_queue0, p->queue_size = 0)
ST_CASE(s_guid_nan, p->guidance_scale = NAN)
ST_CASE(s_delta_inf, p->delta = INFINITY)
ST_CASE(s_cfg, p->cfg_type = (sd_cfg_type)9)
ST_CASE(s_w4, p->width = 4)
ST_CASE(s_w36, p->width = 36)
ST_CASE(s_w_big, p->width = 100000)
ST_CASE(s_ssf, p->similarity_threshold = 2)
ST_CASE(s_skip_neg, { p->similarity_threshold = 0.9f; p->max_skip_frames = -1; })
ST_CASE(s_rng, p->rng = (sd_rng_type)5)
ST_CASE(s_ok, (void)p)

TEST(stream_parameters)
{
    NEED_MODEL();
    static const struct {
        const char *what;
        stream_tweak fn;
        sd_status want;
        const char *needle;
    } cases[] = {
        {"empty t_index_list", s_none, SD_ERR_INVALID_ARGUMENT, "t_index_list"},
        {"17 steps", s_many, SD_ERR_INVALID_ARGUMENT, "t_index_list"},
        {"descending t_index_list", s_desc, SD_ERR_INVALID_ARGUMENT, "ascend"},
        {"repeated t_index", s_dup, SD_ERR_INVALID_ARGUMENT, "ascend"},
        {"t_index 50 of 50", s_range, SD_ERR_INVALID_ARGUMENT, "outside"},
        {"t_index -1", s_neg, SD_ERR_INVALID_ARGUMENT, "outside"},
        {"num_inference_steps 0", s_steps0, SD_ERR_INVALID_ARGUMENT, "num_inference_steps"},
        {"t_index beyond a 10-step schedule", s_steps_few, SD_ERR_INVALID_ARGUMENT, "outside"},
        {"frame_buffer_size 0", s_fbs0, SD_ERR_INVALID_ARGUMENT, "frame_buffer_size"},
        {"queue_size 0", s_queue0, SD_ERR_INVALID_ARGUMENT, "queue_size"},
        {"guidance NaN", s_guid_nan, SD_ERR_INVALID_ARGUMENT, "guidance"},
        {"delta Inf", s_delta_inf, SD_ERR_INVALID_ARGUMENT, "delta"},
        {"cfg_type 9", s_cfg, SD_ERR_INVALID_ARGUMENT, "cfg_type"},
        {"width 4", s_w4, SD_ERR_INVALID_ARGUMENT, "multiples"},
        {"width 36", s_w36, SD_ERR_INVALID_ARGUMENT, "multiples"},
        {"width 100000", s_w_big, SD_ERR_INVALID_ARGUMENT, "2048"},
        {"similarity_threshold 2", s_ssf, SD_ERR_INVALID_ARGUMENT, "similarity_threshold"},
        {"max_skip_frames -1", s_skip_neg, SD_ERR_INVALID_ARGUMENT, "max_skip_frames"},
        {"rng type 5", s_rng, SD_ERR_INVALID_ARGUMENT, "rng"},
        {"valid", s_ok, SD_OK, ""},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        sd_stream_params sp;
        sd_stream_default_params(&sp);
        sp.width = sp.height = 32;
        cases[i].fn(&sp);
        sd_stream *s = NULL;
        sd_status st = sd_stream_create(g_model, &sp, &s);
        printf("  %s -> %s: %s\n", cases[i].what, sd_status_name(st), st ? sd_last_error() : "ok");
        CHECK_MSG(st == cases[i].want, "%s: got %s, want %s", cases[i].what, sd_status_name(st),
                  sd_status_name(cases[i].want));
        if (cases[i].want != SD_OK)
            CHECK_ERR_CONTAINS(cases[i].needle);
        CHECK((st == SD_OK) == (s != NULL));
        if (s) { /* bad frames and prompts on a valid stream */
            sd_image in = {0}, out = {0};
            CHECK_STATUS(sd_stream_img2img(s, &in, &out), SD_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(sd_stream_img2img(s, NULL, &out), SD_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(sd_stream_set_prompt(s, NULL, NULL), SD_OK);
            CHECK_STATUS(sd_stream_set_prompt(NULL, "x", NULL), SD_ERR_INVALID_ARGUMENT);
            in.width = 7; /* odd size: resized */
            in.height = 3;
            in.data = calloc(7 * 3 * 3, 1);
            CHECK_STATUS(sd_stream_img2img(s, &in, &out), SD_OK);
            CHECK(out.width == 32 && out.height == 32);
            free(in.data);
            sd_image_free(&out);
        }
        sd_stream_free(s);
    }
    sd_stream *none = NULL;
    CHECK_STATUS(sd_stream_create(NULL, NULL, &none), SD_ERR_INVALID_ARGUMENT);
}

TEST(model_parameters)
{
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.prediction_type = "x0";
    EXPECT_LOAD(g_src, &mp, SD_ERR_INVALID_ARGUMENT, "prediction type");
    sd_model_default_params(&mp);
    mp.backend = (sd_backend_kind)7;
    EXPECT_LOAD(g_src, &mp, SD_ERR_INVALID_ARGUMENT, "backend");
    sd_model_default_params(&mp);
    mp.n_threads = -3;
    EXPECT_LOAD(g_src, &mp, SD_OK, ""); /* <= 0 = all cores */
    sd_model_default_params(&mp);
    mp.config_dir = "/nonexistent/config/dir";
    EXPECT_LOAD(g_single, &mp, SD_ERR_NOT_FOUND, "/nonexistent/config/dir");
    /* image files */
    sd_image img = {0};
    char p[4200];
    snprintf(p, sizeof p, "%s/missing.png", g_tmp);
    CHECK_STATUS(sd_image_load(p, &img), SD_ERR_NOT_FOUND);
    snprintf(p, sizeof p, "%s/fake%d.png", g_tmp, g_n++);
    static const char png[] = "\x89PNG\r\n\x1a\n garbage", gif[] = "GIF89a......";
    CHECK(sd_write_file(p, png, sizeof png - 1) == SD_OK);
    CHECK_STATUS(sd_image_load(p, &img), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("broken PNG");
    CHECK(sd_write_file(p, gif, sizeof gif - 1) == SD_OK);
    CHECK_STATUS(sd_image_load(p, &img), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("not a PNG or JPEG");
}

int main(void)
{
    const char *td = getenv("SD_TEST_DATA");
    if (!td)
        td = "tests/data";
    snprintf(g_src, sizeof g_src, "%s/models/tiny-sd15", td);
    snprintf(g_single, sizeof g_single, "%s/models/tiny-sd15-single.safetensors", td);
    snprintf(g_taesd, sizeof g_taesd, "%s/models/taesd-tiny", td);
    if (!test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_bad_inputs")) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    if (sd_model_load(g_src, &mp, &g_model) != SD_OK) {
        fprintf(stderr, "cannot load %s: %s\n", g_src, sd_last_error());
        g_model = NULL;
    }
    RUN(truncated_weights);
    RUN(truncated_single_file);
    RUN(not_a_model);
    RUN(wrong_dtypes);
    RUN(shapes_disagree_with_config);
    RUN(absurd_configs);
    RUN(missing_sub_models);
    RUN(non_finite_weights);
    RUN(generation_parameters);
    RUN(memory_limit);
    RUN(prompts);
    RUN(stream_parameters);
    RUN(model_parameters);
    sd_model_free(g_model);
    test_rm_tree(g_tmp);
    return test_summary();
}
