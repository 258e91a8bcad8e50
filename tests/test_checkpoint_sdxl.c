/* Single-file SDXL checkpoints (src/models/checkpoint.h, the SGM layout of sd_xl_base_1.0.safetensors):
 *   - tests/data/models/tiny-sdxl-single.safetensors and tiny-sdxl-asym-single.safetensors (written by
 *     tools/gen_testdata.py from the tiny-sdxl folder, the second with the distilled unet-sdxl-asym UNet, and
 *     loaded by diffusers' own StableDiffusionXLPipeline.from_single_file there): every tensor of the folders'
 *     unet / vae / text_encoder / text_encoder_2 is reachable under its diffusers name with identical bytes
 *     (OpenCLIP's fused in_proj split into q/k/v rows, text_projection transposed), and the configs derived from
 *     the tensors equal the folders' in every derivable key (per-attention transformer depths included);
 *   - refiners (only the OpenCLIP encoder, or a 2560-wide added conditioning) are refused by name;
 *   - a whole model loads from the single file (+ config_dir) as an SDXL model. */
#include "io/config.h"
#include "models/checkpoint.h"
#include "models/clip.h"
#include "models/unet.h"
#include "pipe/model.h"
#include "test.h"
#include "test_ckpt_util.h"

#include <unistd.h>

/* derived UNet config vs the folder's, as UNet2DConditionModel reads them (nested depth lists compare by meaning) */
static void compare_unet(cJSON *derived, const char *config_path)
{
    /* what the weights cannot tell (head counts, GroupNorm groups) comes from the folder, as with config_dir */
    cJSON *ref = load_json(config_path);
    CHECK(ref != NULL);
    if (!ref)
        return;
    static const char *const given[] = {"norm_num_groups", "attention_head_dim"};
    for (size_t i = 0; i < SD_ARRAY_LEN(given); i++)
        cJSON_ReplaceItemInObjectCaseSensitive(
            derived, given[i], cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(ref, given[i]), true));
    cJSON_Delete(ref);
    sd_config dc = {.root = derived, .path = "derived"};
    sd_unet_config a, b;
    CHECK_STATUS(sd_unet_config_from(&dc, &a), SD_OK);
    CHECK_STATUS(sd_unet_config_load(config_path, &b), SD_OK);
    if (t_cur_failed)
        return;
    CHECK(a.n_blocks == b.n_blocks && a.in_channels == b.in_channels && a.out_channels == b.out_channels);
    CHECK(a.add_text_time && b.add_text_time);
    CHECK_MSG(a.addition_time_embed_dim == b.addition_time_embed_dim, "addition_time_embed_dim %lld vs %lld",
              (long long)a.addition_time_embed_dim, (long long)b.addition_time_embed_dim);
    CHECK(a.projection_class_embeddings_input_dim == b.projection_class_embeddings_input_dim);
    CHECK(a.use_linear_projection == b.use_linear_projection && a.has_mid_block == b.has_mid_block);
    int bad = 0;
    for (int i = 0; i < a.n_blocks && i < b.n_blocks; i++) {
        bad += a.block_out_channels[i] != b.block_out_channels[i] || a.layers_per_block[i] != b.layers_per_block[i];
        bad += a.down_cross[i] != b.down_cross[i] || a.up_cross[i] != b.up_cross[i];
        bad += a.cross_attention_dim[i] != b.cross_attention_dim[i];
        for (int j = 0; j < b.layers_per_block[i]; j++)
            bad += b.down_cross[i] && a.down_depth[i][j] != b.down_depth[i][j];
        for (int j = 0; j <= b.layers_per_block[b.n_blocks - 1 - i]; j++)
            bad += b.up_cross[i] && a.up_depth[i][j] != b.up_depth[i][j];
    }
    if (b.has_mid_block)
        bad += a.mid_depth != b.mid_depth;
    CHECK_MSG(bad == 0, "%d UNet config values differ (channels, layers, attention, transformer depths)", bad);
    printf("  unet config: %d levels, depths and added conditioning as the folder's (per_layer_depth %d)\n",
           a.n_blocks, (int)a.per_layer_depth);
}

static void check_file(const char *single, const char *unet_folder)
{
    char sp[1024], fp[1024], up[1024], p[1200];
    const char *paths[3] = {models_path(sp, sizeof sp, single), models_path(fp, sizeof fp, "tiny-sdxl"),
                            models_path(up, sizeof up, unet_folder)};
    for (int i = 0; i < 3; i++)
        if (!sd_file_exists(paths[i]) && !sd_dir_exists(paths[i]))
            FAIL("%s is absent (committed test data)", paths[i]);
    sd_safetensors *st = NULL;
    sd_arch arch = SD_ARCH_UNKNOWN;
    if (sd_safetensors_open(sp, &st) != SD_OK || sd_ckpt_detect(st, &arch) != SD_OK || arch != SD_ARCH_SDXL) {
        sd_safetensors_close(st);
        FAIL("%s: not an SDXL checkpoint (%s)", sp, sd_last_error());
    }
    sd_weights w[SD_CKPT_COMPONENTS];
    static const char *const names[SD_CKPT_COMPONENTS] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    for (int c = 0; c < SD_CKPT_COMPONENTS; c++)
        sd_weights_init(&w[c], NULL, names[c], SD_F32);
    sd_weights *const ws[SD_CKPT_COMPONENTS] = {&w[0], &w[1], &w[2], &w[3]};
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map_all(st, arch, ws, &info), SD_OK);
    for (int c = 0; c < SD_CKPT_COMPONENTS; c++)
        CHECK_STATUS(sd_weights_finalize(&w[c]), SD_OK);
    CHECK_MSG(info.n_unknown == 0, "%zu unknown keys, first %s", info.n_unknown,
              info.n_unknown ? info.unknown[0] : "");
    printf("  %s: %zu unet + %zu vae + %zu text + %zu text2 aliases, %zu ignored\n", single, info.n_unet, info.n_vae,
           info.n_text, info.n_text2, info.n_ignored);

    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", up);
    compare_component(&w[0], p, NULL, "unet");
    cJSON *c = sd_ckpt_unet_config(st, arch);
    CHECK(c != NULL);
    snprintf(p, sizeof p, "%s/config.json", up);
    if (c)
        compare_unet(c, p);
    cJSON_Delete(c);

    static const char *const vkeys[] = {"in_channels", "out_channels", "latent_channels", "block_out_channels",
                                        "layers_per_block", "scaling_factor", "force_upcast"};
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", fp);
    compare_component(&w[1], p, NULL, "vae");
    c = sd_ckpt_vae_config(st, arch);
    CHECK(c != NULL);
    snprintf(p, sizeof p, "%s/vae/config.json", fp);
    if (c)
        compare_config(c, p, vkeys, SD_ARRAY_LEN(vkeys), "vae");
    cJSON_Delete(c);

    static const char *const tkeys[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                        "max_position_embeddings", "vocab_size", "hidden_act", "projection_dim"};
    for (int k = 0; k < 2; k++) {
        const char *sub = k ? "text_encoder_2" : "text_encoder";
        snprintf(p, sizeof p, "%s/%s/model.safetensors", fp, sub);
        compare_component(&w[2 + k], p, NULL, sub);
        c = k ? sd_ckpt_text2_config(st, arch) : sd_ckpt_text_config(st, arch);
        CHECK(c != NULL);
        snprintf(p, sizeof p, "%s/%s/config.json", fp, sub);
        /* text encoder 1's projection_dim is not in the weights (CLIPTextModel has no projection) */
        if (c)
            compare_config(c, p, tkeys, SD_ARRAY_LEN(tkeys) - (k ? 0 : 1), sub);
        cJSON_Delete(c);
    }
    cJSON *sc = sd_ckpt_scheduler_config(st, arch);
    CHECK(sc != NULL);
    if (sc) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(sc, "_class_name");
        CHECK(cJSON_IsString(cls) && !strcmp(cls->valuestring, "EulerDiscreteScheduler"));
    }
    cJSON_Delete(sc);
    sd_ckpt_info_free(&info);
    for (int k = 0; k < SD_CKPT_COMPONENTS; k++)
        sd_weights_free(&w[k]);
    sd_safetensors_close(st);
}

TEST(tiny_sdxl_single_file_matches_folder) { check_file("tiny-sdxl-single.safetensors", "tiny-sdxl/unet"); }
TEST(distilled_sdxl_single_file_matches_folder) { check_file("tiny-sdxl-asym-single.safetensors", "unet-sdxl-asym"); }

/* a small file of the named tensors (F32, random), opened */
static sd_safetensors *fake(const char *tag, int n, const char *const *names, const int64_t (*shapes)[2])
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/sd_test_xl_%s_%d.safetensors", tag, (int)getpid());
    sd_st_writer *w = sd_st_writer_new();
    float buf[8 * 2816];
    unsigned long long seed = 7;
    for (size_t i = 0; i < SD_ARRAY_LEN(buf); i++)
        buf[i] = test_rand(&seed);
    for (int i = 0; i < n; i++)
        sd_st_writer_add(w, names[i], SD_F32, shapes[i][1] ? 2 : 1, shapes[i], buf);
    sd_status s = sd_st_writer_save(w, path);
    sd_st_writer_free(w);
    sd_safetensors *st = NULL;
    if (s == SD_OK)
        s = sd_safetensors_open(path, &st);
    unlink(path);
    return s == SD_OK ? st : NULL;
}

TEST(refiners_are_refused_by_name)
{
    static const char *const te1 = "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight";
    static const char *const te2 = "conditioner.embedders.1.model.ln_final.weight";
    static const char *const le = "model.diffusion_model.label_emb.0.0.weight";
    const int64_t sh[3][2] = {{8, 0}, {8, 0}, {8, 2560}}, base[3][2] = {{8, 0}, {8, 0}, {8, 2816}};
    const char *const only2[2] = {te2, le}, *const both[3] = {te1, te2, le};
    const int64_t only2_sh[2][2] = {{8, 0}, {8, 2816}};
    struct {
        const char *tag;
        int n;
        const char *const *names;
        const int64_t (*shapes)[2];
        sd_status want;
    } cases[] = {
        {"refiner_te2_only", 2, only2, only2_sh, SD_ERR_UNSUPPORTED},
        {"refiner_aesthetic", 3, both, sh, SD_ERR_UNSUPPORTED},
        {"base", 3, both, base, SD_OK},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        sd_safetensors *st = fake(cases[i].tag, cases[i].n, cases[i].names, cases[i].shapes);
        CHECK(st != NULL);
        if (!st)
            continue;
        sd_arch a;
        CHECK_STATUS(sd_ckpt_detect(st, &a), SD_OK);
        CHECK(a == SD_ARCH_SDXL);
        CHECK_STATUS(sd_ckpt_sdxl_check(st), cases[i].want);
        if (cases[i].want != SD_OK) {
            CHECK_ERR_CONTAINS("refiner");
            sd_weights u;
            sd_weights_init(&u, NULL, "unet", SD_F32);
            CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &u, NULL, NULL, NULL), SD_ERR_UNSUPPORTED);
            CHECK(sd_ckpt_unet_config(st, SD_ARCH_UNKNOWN) == NULL);
            CHECK_ERR_CONTAINS("refiner");
            sd_weights_free(&u);
        }
        sd_safetensors_close(st);
    }
}

TEST(sd1_file_has_no_second_text_encoder)
{
    char sp[1024];
    models_path(sp, sizeof sp, "tiny-sd15-single.safetensors");
    if (!sd_file_exists(sp))
        FAIL("%s is absent (committed test data)", sp);
    sd_safetensors *st;
    CHECK_STATUS(sd_safetensors_open(sp, &st), SD_OK);
    if (t_cur_failed)
        return;
    sd_weights t2;
    sd_weights_init(&t2, NULL, "text_encoder_2", SD_F32);
    sd_weights *const ws[SD_CKPT_COMPONENTS] = {NULL, NULL, NULL, &t2};
    CHECK_STATUS(sd_ckpt_map_all(st, SD_ARCH_UNKNOWN, ws, NULL), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("second text encoder");
    CHECK(sd_ckpt_text2_config(st, SD_ARCH_UNKNOWN) == NULL);
    sd_weights_free(&t2);
    sd_safetensors_close(st);
}

TEST(model_loads_from_the_single_file)
{
    char sp[1024], fp[1024];
    models_path(sp, sizeof sp, "tiny-sdxl-single.safetensors");
    models_path(fp, sizeof fp, "tiny-sdxl");
    sd_model_params p;
    sd_model_default_params(&p);
    p.n_threads = 2;
    p.config_dir = fp;
    sd_model *m = NULL;
    CHECK_STATUS(sd_model_load(sp, &p, &m), SD_OK);
    if (m) {
        CHECK(m->sdxl && m->clip2 && m->tok2 && !strcmp(m->arch, "sdxl"));
        CHECK(m->clip2_cfg.with_projection && !m->clip_cfg.with_projection);
        CHECK(m->force_zeros_for_empty_prompt);
        sd_model_free(m);
    }
    /* an SD1.5 folder's configs do not fit an SDXL file: a named error, no crash */
    models_path(fp, sizeof fp, "tiny-sd15");
    m = NULL;
    CHECK(sd_model_load(sp, &p, &m) != SD_OK && m == NULL);
    CHECK_ERR_CONTAINS("text_encoder_2");
}

int main(void)
{
    RUN(tiny_sdxl_single_file_matches_folder);
    RUN(distilled_sdxl_single_file_matches_folder);
    RUN(refiners_are_refused_by_name);
    RUN(sd1_file_has_no_second_text_encoder);
    RUN(model_loads_from_the_single_file);
    return test_summary();
}
