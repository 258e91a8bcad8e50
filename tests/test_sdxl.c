/* SDXL (issue #17) through the public API on the project's own tiny SDXL folder
 * ($SD_TEST_DATA/models/tiny-sdxl, tools/gen_testdata.py): loading and the model
 * family, txt2img / img2img, what the micro-conditioning and
 * force_zeros_for_empty_prompt change, and bad folders (a missing
 * text_encoder_2 or tokenizer_2, a refiner, mismatched components): named
 * errors, never a crash. The numerics against diffusers are the reference
 * cases own_sdxl_* / sdxl_* (cli_check, test_unet, test_clip). */
#include "test_util.h"

#include "models/unet.h"

#include <errno.h>

static char g_tmp[512];
static char g_xl[600]; /* the tiny SDXL folder */
static sd_model *g_m;

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void link_component(const char *dir, const char *name, const char *src_model, const char *src_name)
{
    char src[1200], dst[1200];
    snprintf(src, sizeof src, "%s/../%s/%s", g_xl, src_model, src_name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    CHECK_MSG(symlink(src, dst) == 0, "symlink %s -> %s: %s", dst, src, strerror(errno));
}

static const char *const k_components[] = {"tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "unet",
                                           "vae", "scheduler"};
static const char *k_index = "{\"_class_name\": \"StableDiffusionXLPipeline\", \"force_zeros_for_empty_prompt\": true}";

/* A fresh folder <tmp>/<name> with the tiny SDXL components linked, except `skip` (may be NULL), and
 * model_index.json = `index` (NULL: none). */
static const char *make_folder(const char *name, const char *skip, const char *index)
{
    static char dir[4][800];
    static int k;
    char *d = dir[k++ & 3];
    snprintf(d, sizeof dir[0], "%s/%s", g_tmp, name);
    test_rm_tree(d);
    CHECK(mkdir(d, 0755) == 0);
    for (size_t i = 0; i < SD_ARRAY_LEN(k_components); i++)
        if (!skip || strcmp(skip, k_components[i]))
            link_component(d, k_components[i], "tiny-sdxl", k_components[i]);
    if (index)
        write_text(d, "model_index.json", index);
    return d;
}

static sd_status load(const char *dir, sd_model **m)
{
    sd_model_params p;
    sd_model_default_params(&p);
    p.n_threads = 2;
    return sd_model_load(dir, &p, m);
}

static void expect_error(const char *dir, sd_status want, const char *needle)
{
    sd_model *m = NULL;
    sd_status s = load(dir, &m);
    CHECK_MSG(s == want, "%s: %s (%s), want %s", dir, sd_status_name(s), sd_last_error(), sd_status_name(want));
    CHECK_MSG(strstr(sd_last_error(), needle) != NULL, "error '%s' lacks '%s'", sd_last_error(), needle);
    CHECK(m == NULL);
    sd_model_free(m);
}

TEST(load_and_info)
{
    sd_model_info info;
    CHECK_STATUS(sd_model_get_info(g_m, &info), SD_OK);
    CHECK_MSG(info.arch && !strcmp(info.arch, "sdxl"), "arch %s", info.arch ? info.arch : "(null)");
    CHECK(info.context_dim == 20);      /* 8 (text_encoder) + 12 (text_encoder_2) */
    CHECK(info.native_size == 16 * 2);  /* unet sample_size x VAE scale */
    CHECK(info.weight_bytes > 0);
    CHECK(!strcmp(info.scheduler, "EulerDiscreteScheduler"));
}

static void gen(const sd_gen_params *p, const sd_image *init, sd_image *out)
{
    sd_status s = init ? sd_img2img(g_m, p, init, out) : sd_txt2img(g_m, p, out);
    CHECK_MSG(s == SD_OK, "generation failed: %s", sd_last_error());
    if (s != SD_OK)
        memset(out, 0, sizeof *out);
}

static int max_diff(const sd_image *a, const sd_image *b)
{
    if (!a->data || !b->data || a->width != b->width || a->height != b->height)
        return 1000;
    int d = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * 3; i++) {
        int e = abs((int)a->data[i] - (int)b->data[i]);
        d = e > d ? e : d;
    }
    return d;
}

static void base_params(sd_gen_params *p)
{
    sd_gen_default_params(p);
    p->prompt = "a red fox in the snow";
    p->width = 32;
    p->height = 24;
    p->steps = 2;
    p->seed = 7;
}

TEST(txt2img_conditioning)
{
    sd_gen_params p;
    base_params(&p);
    p.guidance_scale = 0;
    sd_image a, b, c, d;
    gen(&p, NULL, &a);
    gen(&p, NULL, &b);
    CHECK_MSG(max_diff(&a, &b) == 0, "the same seed gave different images");
    CHECK(a.width == 32 && a.height == 24);
    /* the micro-conditioning reaches the UNet: another crop gives another image */
    p.crops_coords_top_left[0] = 256;
    p.crops_coords_top_left[1] = 128;
    gen(&p, NULL, &c);
    CHECK_MSG(max_diff(&a, &c) > 0, "crops_coords_top_left changed nothing");
    p.crops_coords_top_left[0] = p.crops_coords_top_left[1] = 0;
    p.original_size[0] = 24; /* = the output size: the default */
    p.original_size[1] = 32;
    gen(&p, NULL, &d);
    CHECK_MSG(max_diff(&a, &d) == 0, "original_size equal to the output size must be the default");
    sd_image_free(&d);
    p.original_size[0] = p.original_size[1] = 0;
    p.prompt_2 = p.prompt; /* the same prompt for encoder 2: the default */
    gen(&p, NULL, &d);
    CHECK_MSG(max_diff(&a, &d) == 0, "prompt_2 = prompt must be the default");
    sd_image_free(&d);
    p.prompt_2 = "an oil painting";
    gen(&p, NULL, &d);
    CHECK_MSG(max_diff(&a, &d) > 0, "prompt_2 changed nothing");
    char *t = sd_gen_parameters_text(g_m, &p, false);
    CHECK_MSG(t && strstr(t, "Prompt 2: \"an oil painting\""), "parameters: %s", t ? t : "(null)");
    free(t);
    p.prompt_2 = NULL;
    sd_image_free(&a);
    sd_image_free(&b);
    sd_image_free(&c);
    sd_image_free(&d);
    /* out of range */
    p.target_size[0] = -1;
    sd_image e;
    CHECK_STATUS(sd_txt2img(g_m, &p, &e), SD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(sd_last_error(), "target size") != NULL);
}

/* With CFG and no negative prompt the negatives are zeros (force_zeros_for_empty_prompt); "" counts as none.
 * A folder whose model_index.json turns the flag off encodes "" instead: another image. */
TEST(force_zeros_for_empty_prompt)
{
    sd_gen_params p;
    base_params(&p);
    p.guidance_scale = 4;
    sd_image a, b, c, d;
    p.negative_prompt = NULL;
    gen(&p, NULL, &a);
    p.negative_prompt = "";
    gen(&p, NULL, &b);
    CHECK_MSG(max_diff(&a, &b) == 0, "negative prompt NULL and \"\" differ");
    p.negative_prompt = "blurry";
    gen(&p, NULL, &c);
    CHECK_MSG(max_diff(&a, &c) > 0, "a negative prompt changed nothing");
    const char *dir = make_folder("no_force_zeros", NULL,
                                  "{\"_class_name\": \"StableDiffusionXLPipeline\", \"force_zeros_for_empty_prompt\": false}");
    sd_model *m2 = NULL;
    CHECK_STATUS(load(dir, &m2), SD_OK);
    if (m2) {
        p.negative_prompt = NULL;
        CHECK_STATUS(sd_txt2img(m2, &p, &d), SD_OK);
        CHECK_MSG(max_diff(&a, &d) > 0, "force_zeros_for_empty_prompt false changed nothing");
        sd_image_free(&d);
        sd_model_free(m2);
    }
    sd_image_free(&a);
    sd_image_free(&b);
    sd_image_free(&c);
}

TEST(img2img_and_parameters)
{
    sd_gen_params p;
    base_params(&p);
    p.sampler = "euler_a";
    p.guidance_scale = 0;
    p.strength = 0.5f;
    p.steps = 4;
    uint8_t px[32 * 24 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 7 % 251);
    sd_image init = {32, 24, px};
    sd_image out;
    gen(&p, &init, &out);
    CHECK(out.width == 32 && out.height == 24);
    sd_image_free(&out);
    p.original_size[0] = 1024;
    p.original_size[1] = 768;
    char *t = sd_gen_parameters_text(g_m, &p, true);
    CHECK_MSG(t && strstr(t, "Model family: sdxl") && strstr(t, "Original size: 768x1024"), "parameters: %s",
              t ? t : "(null)");
    free(t);
}

/* The fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix) is an AutoencoderKL config with force_upcast false: it
 * loads as the SDXL VAE does and, in float32, decodes the same image. */
TEST(fp16_fix_style_vae)
{
    const char *d = make_folder("fp16_fix_vae", "vae", k_index);
    char vdir[900];
    snprintf(vdir, sizeof vdir, "%s/vae", d);
    CHECK(mkdir(vdir, 0755) == 0);
    link_component(vdir, "diffusion_pytorch_model.safetensors", "tiny-sdxl", "vae/diffusion_pytorch_model.safetensors");
    write_text(vdir, "config.json",
               "{\"_class_name\": \"AutoencoderKL\", \"_diffusers_version\": \"0.18.0.dev0\", \"act_fn\": \"silu\", "
               "\"block_out_channels\": [8, 16], \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], "
               "\"force_upcast\": false, \"in_channels\": 3, \"latent_channels\": 4, \"layers_per_block\": 1, "
               "\"norm_num_groups\": 4, \"out_channels\": 3, \"sample_size\": 32, \"scaling_factor\": 0.13025, "
               "\"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}");
    sd_model *m = NULL;
    CHECK_STATUS(load(d, &m), SD_OK);
    if (!m)
        return;
    sd_gen_params p;
    base_params(&p);
    p.guidance_scale = 0;
    sd_image a, b = {0};
    gen(&p, NULL, &a);
    CHECK_STATUS(sd_txt2img(m, &p, &b), SD_OK);
    CHECK_MSG(max_diff(&a, &b) == 0, "force_upcast false changed the float32 image");
    sd_image_free(&a);
    sd_image_free(&b);
    sd_model_free(m);
}

TEST(bad_folders)
{
    /* loads as a folder without model_index.json too: the UNet tells it is SDXL */
    sd_model *m = NULL;
    CHECK_STATUS(load(make_folder("no_index", NULL, NULL), &m), SD_OK);
    sd_model_free(m);
    expect_error(make_folder("no_te2", "text_encoder_2", k_index), SD_ERR_NOT_FOUND, "text_encoder_2");
    expect_error(make_folder("no_tok2", "tokenizer_2", k_index), SD_ERR_NOT_FOUND, "tokenizer_2");
    expect_error(make_folder("no_te2_no_index", "text_encoder_2", NULL), SD_ERR_NOT_FOUND, "text_encoder_2");
    /* the refiner: only text_encoder_2, requires_aesthetics_score */
    expect_error(make_folder("refiner", "text_encoder",
                             "{\"_class_name\": \"StableDiffusionXLImg2ImgPipeline\", \"requires_aesthetics_score\": "
                             "true, \"text_encoder\": [null, null], \"text_encoder_2\": [\"transformers\", "
                             "\"CLIPTextModelWithProjection\"]}"),
                 SD_ERR_UNSUPPORTED, "refiner");
    expect_error(make_folder("inpaint", NULL, "{\"_class_name\": \"StableDiffusionXLInpaintPipeline\"}"),
                 SD_ERR_UNSUPPORTED, "StableDiffusionXLInpaintPipeline");
    /* mismatched components */
    const char *d = make_folder("sd15_unet", "unet", k_index);
    link_component(d, "unet", "tiny-sd15", "unet");
    expect_error(d, SD_ERR_FORMAT, "text_time");
    d = make_folder("xl_unet_in_sd_folder", NULL, "{\"_class_name\": \"StableDiffusionPipeline\"}");
    expect_error(d, SD_ERR_FORMAT, "text_time");
    d = make_folder("sd2_te2", "text_encoder_2", k_index); /* hidden 8 + 8 = 16, the UNet wants 20 */
    link_component(d, "text_encoder_2", "tiny-sd2", "text_encoder");
    expect_error(d, SD_ERR_FORMAT, "cross_attention_dim");
    /* a VAE config that does not fit its weights (8 latent channels): named, with the component */
    d = make_folder("vae_8ch", "vae", k_index);
    char vdir[900];
    snprintf(vdir, sizeof vdir, "%s/vae", d);
    CHECK(mkdir(vdir, 0755) == 0);
    link_component(vdir, "diffusion_pytorch_model.safetensors", "tiny-sdxl", "vae/diffusion_pytorch_model.safetensors");
    write_text(vdir, "config.json",
               "{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [8, 16], \"down_block_types\": "
               "[\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", "
               "\"UpDecoderBlock2D\"], \"layers_per_block\": 1, \"norm_num_groups\": 4, \"latent_channels\": 8, "
               "\"scaling_factor\": 0.13025}");
    m = NULL;
    sd_status s = load(d, &m);
    CHECK_MSG(s == SD_ERR_SHAPE && strstr(sd_last_error(), "vae"), "a VAE config with 8 latent channels: %s (%s)",
              sd_status_name(s), sd_last_error());
    sd_model_free(m);
    d = make_folder("latents_mean_vae", "vae", k_index);
    snprintf(vdir, sizeof vdir, "%s/vae", d);
    CHECK(mkdir(vdir, 0755) == 0);
    link_component(vdir, "diffusion_pytorch_model.safetensors", "tiny-sdxl", "vae/diffusion_pytorch_model.safetensors");
    write_text(vdir, "config.json",
               "{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [8, 16], \"down_block_types\": "
               "[\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", "
               "\"UpDecoderBlock2D\"], \"layers_per_block\": 1, \"norm_num_groups\": 4, \"latent_channels\": 4, "
               "\"scaling_factor\": 0.5, \"latents_mean\": [0, 0, 0, 0], \"latents_std\": [1, 1, 1, 1]}");
    expect_error(d, SD_ERR_UNSUPPORTED, "latents_mean");
}

/* Full-size structure without weights: the UNet of SDXL base 1.0 (bench/arch/sdxl-base/unet: the published
 * config, and tensors.txt = the state dict diffusers builds from it, 1680 tensors / 2567.5 M parameters) must
 * ask for exactly those names and shapes. */
typedef struct {
    char **names;
    int n, cap;
} name_list;

static void collect(void *user, const char *name, const int64_t *shape, int ndim)
{
    name_list *l = user;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->names = realloc(l->names, (size_t)l->cap * sizeof *l->names);
    }
    char buf[400];
    int o = snprintf(buf, sizeof buf, "%s ", name);
    for (int i = 0; i < ndim; i++)
        o += snprintf(buf + o, sizeof buf - (size_t)o, "%s%lld", i ? "," : "", (long long)shape[i]);
    l->names[l->n++] = strdup(buf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

TEST(full_size_unet_structure)
{
    char dir[900], path[1000];
    snprintf(dir, sizeof dir, "%s/../../bench/arch/sdxl-base/unet", getenv("SD_TEST_DATA"));
    snprintf(path, sizeof path, "%s/config.json", dir);
    sd_unet_config cfg;
    CHECK_STATUS(sd_unet_config_load(path, &cfg), SD_OK);
    CHECK(cfg.add_text_time && cfg.addition_time_embed_dim == 256 && cfg.projection_class_embeddings_input_dim == 2816);
    name_list got = {0}, want = {0};
    CHECK_STATUS(sd_unet_list_tensors(&cfg, collect, &got), SD_OK);
    snprintf(path, sizeof path, "%s/tensors.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "%s is missing", path);
    char line[512], nm[400], dt[16], shp[64];
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%399s %15s %63s", nm, dt, shp) != 3)
            continue;
        char buf[480];
        snprintf(buf, sizeof buf, "%s %s", nm, strcmp(shp, "-") ? shp : "");
        if (want.n == want.cap) {
            want.cap = want.cap ? 2 * want.cap : 1024;
            want.names = realloc(want.names, (size_t)want.cap * sizeof *want.names);
        }
        want.names[want.n++] = strdup(buf);
    }
    if (f)
        fclose(f);
    CHECK_MSG(got.n == 1680 && want.n == 1680, "%d tensors from the config, %d in the list (SDXL base: 1680)", got.n,
              want.n);
    qsort(got.names, (size_t)got.n, sizeof *got.names, cmp_str);
    qsort(want.names, (size_t)want.n, sizeof *want.names, cmp_str);
    int bad = 0;
    for (int i = 0; i < got.n && i < want.n && bad < 3; i++)
        if (strcmp(got.names[i], want.names[i])) {
            CHECK_MSG(false, "tensor %d: ours '%s', diffusers '%s'", i, got.names[i], want.names[i]);
            bad++;
        }
    for (int i = 0; i < got.n; i++)
        free(got.names[i]);
    for (int i = 0; i < want.n; i++)
        free(want.names[i]);
    free(got.names);
    free(want.names);
}

int main(void)
{
    const char *td = getenv("SD_TEST_DATA");
    if (!td || !*td) {
        fprintf(stderr, "SD_TEST_DATA is not set (tests/data)\n");
        return 1;
    }
    snprintf(g_xl, sizeof g_xl, "%s/models/tiny-sdxl", td);
    if (!sd_dir_exists(g_xl)) { /* committed data: missing is a failure, not a skip */
        fprintf(stderr, "%s is missing (tools/gen_testdata.py --sdxl-only writes it)\n", g_xl);
        return 1;
    }
    if (!test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_test_sdxl") || load(g_xl, &g_m) != SD_OK) {
        fprintf(stderr, "setup failed: %s\n", sd_last_error());
        return 1;
    }
    RUN(load_and_info);
    RUN(txt2img_conditioning);
    RUN(force_zeros_for_empty_prompt);
    RUN(img2img_and_parameters);
    RUN(fp16_fix_style_vae);
    RUN(bad_folders);
    RUN(full_size_unet_structure);
    sd_model_free(g_m);
    test_rm_tree(g_tmp);
    return test_summary();
}
