/* Single-file (LDM) checkpoint mapping (src/models/checkpoint.h): fake SD1 /
 * SD2 / SDXL checkpoints built with the safetensors writer check detection,
 * key names, row ranges of OpenCLIP's fused in_proj, SD2's dropped last block,
 * unknown-key reporting and derived configs. When
 * $SD_TEST_DATA/models/tiny-sd15-single.safetensors / tiny-sd2-single.safetensors
 * exist (the same weights as the tiny-sd15/ and tiny-sd2/ diffusers folders
 * next to them), every tensor of the folders' unet/vae/text_encoder must be
 * reachable under its own name with identical bytes and shape, and the derived
 * configs must equal the folders' config.json in every derivable key. */
#include "io/config.h"
#include "models/checkpoint.h"
#include "models/unet.h"
#include "test.h"
#include "test_ckpt_util.h"

#include <stdarg.h>
#include <unistd.h>

/* ------------------------------------------------------------------ fake checkpoints */

static unsigned long long g_seed = 1;
static sd_status g_wst = SD_OK;

static void addt(sd_st_writer *w, const char *name, int ndim, ...)
{
    int64_t shape[4] = {0};
    size_t n = 1;
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) {
        shape[i] = va_arg(ap, int);
        n *= (size_t)shape[i];
    }
    va_end(ap);
    float *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = test_rand(&g_seed);
    sd_status s = sd_st_writer_add(w, name, SD_F32, ndim, shape, d);
    if (s != SD_OK)
        g_wst = s;
    free(d);
}

static void addf(sd_st_writer *w, int ndim, int d0, int d1, int d2, int d3, const char *fmt, ...) SD_PRINTF(7, 8);
static void addf(sd_st_writer *w, int ndim, int d0, int d1, int d2, int d3, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    addt(w, name, ndim, d0, d1, d2, d3);
}

#define U "model.diffusion_model."
#define V "first_stage_model."

static void add_resnet(sd_st_writer *w, const char *p, int cin, int cout, int temb)
{
    addf(w, 1, cin, 0, 0, 0, "%s.in_layers.0.weight", p);
    addf(w, 1, cin, 0, 0, 0, "%s.in_layers.0.bias", p);
    addf(w, 4, cout, cin, 3, 3, "%s.in_layers.2.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.in_layers.2.bias", p);
    addf(w, 2, cout, temb, 0, 0, "%s.emb_layers.1.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.emb_layers.1.bias", p);
    addf(w, 1, cout, 0, 0, 0, "%s.out_layers.0.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.out_layers.0.bias", p);
    addf(w, 4, cout, cout, 3, 3, "%s.out_layers.3.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.out_layers.3.bias", p);
    if (cin != cout) {
        addf(w, 4, cout, cin, 1, 1, "%s.skip_connection.weight", p);
        addf(w, 1, cout, 0, 0, 0, "%s.skip_connection.bias", p);
    }
}

static void add_attn(sd_st_writer *w, const char *p, int c, int ctx, bool linear)
{
    addf(w, 1, c, 0, 0, 0, "%s.norm.weight", p);
    addf(w, 1, c, 0, 0, 0, "%s.norm.bias", p);
    if (linear) {
        addf(w, 2, c, c, 0, 0, "%s.proj_in.weight", p);
        addf(w, 2, c, c, 0, 0, "%s.proj_out.weight", p);
    } else {
        addf(w, 4, c, c, 1, 1, "%s.proj_in.weight", p);
        addf(w, 4, c, c, 1, 1, "%s.proj_out.weight", p);
    }
    addf(w, 1, c, 0, 0, 0, "%s.proj_in.bias", p);
    addf(w, 1, c, 0, 0, 0, "%s.proj_out.bias", p);
    const char *tb = "transformer_blocks.0";
    for (int n = 1; n <= 3; n++) {
        addf(w, 1, c, 0, 0, 0, "%s.%s.norm%d.weight", p, tb, n);
        addf(w, 1, c, 0, 0, 0, "%s.%s.norm%d.bias", p, tb, n);
    }
    for (int a = 1; a <= 2; a++) {
        int kv = a == 1 ? c : ctx;
        addf(w, 2, c, c, 0, 0, "%s.%s.attn%d.to_q.weight", p, tb, a);
        addf(w, 2, c, kv, 0, 0, "%s.%s.attn%d.to_k.weight", p, tb, a);
        addf(w, 2, c, kv, 0, 0, "%s.%s.attn%d.to_v.weight", p, tb, a);
        addf(w, 2, c, c, 0, 0, "%s.%s.attn%d.to_out.0.weight", p, tb, a);
        addf(w, 1, c, 0, 0, 0, "%s.%s.attn%d.to_out.0.bias", p, tb, a);
    }
    addf(w, 2, 8 * c, c, 0, 0, "%s.%s.ff.net.0.proj.weight", p, tb);
    addf(w, 1, 8 * c, 0, 0, 0, "%s.%s.ff.net.0.proj.bias", p, tb);
    addf(w, 2, c, 4 * c, 0, 0, "%s.%s.ff.net.2.weight", p, tb);
    addf(w, 1, c, 0, 0, 0, "%s.%s.ff.net.2.bias", p, tb);
}

static bool g_no_mid; /* add_unet leaves out the middle block (BK-SDM / SDXS / segmind tiny-sd style) */

/* 2 levels (4, 8 channels), 1 resnet per level, attention on the outer level only. */
static void add_unet(sd_st_writer *w, int ctx, bool linear)
{
    const int T = 16;
    addt(w, U "time_embed.0.weight", 2, T, 4);
    addt(w, U "time_embed.0.bias", 1, T);
    addt(w, U "time_embed.2.weight", 2, T, T);
    addt(w, U "time_embed.2.bias", 1, T);
    addt(w, U "input_blocks.0.0.weight", 4, 4, 4, 3, 3);
    addt(w, U "input_blocks.0.0.bias", 1, 4);
    add_resnet(w, U "input_blocks.1.0", 4, 4, T);
    add_attn(w, U "input_blocks.1.1", 4, ctx, linear);
    addt(w, U "input_blocks.2.0.op.weight", 4, 4, 4, 3, 3);
    addt(w, U "input_blocks.2.0.op.bias", 1, 4);
    add_resnet(w, U "input_blocks.3.0", 4, 8, T);
    if (!g_no_mid) {
        add_resnet(w, U "middle_block.0", 8, 8, T);
        add_attn(w, U "middle_block.1", 8, ctx, linear);
        add_resnet(w, U "middle_block.2", 8, 8, T);
    }
    add_resnet(w, U "output_blocks.0.0", 16, 8, T);
    add_resnet(w, U "output_blocks.1.0", 12, 8, T);
    addt(w, U "output_blocks.1.1.conv.weight", 4, 8, 8, 3, 3);
    addt(w, U "output_blocks.1.1.conv.bias", 1, 8);
    add_resnet(w, U "output_blocks.2.0", 12, 4, T);
    add_attn(w, U "output_blocks.2.1", 4, ctx, linear);
    add_resnet(w, U "output_blocks.3.0", 8, 4, T);
    add_attn(w, U "output_blocks.3.1", 4, ctx, linear);
    addt(w, U "out.0.weight", 1, 4);
    addt(w, U "out.0.bias", 1, 4);
    addt(w, U "out.2.weight", 4, 4, 4, 3, 3);
    addt(w, U "out.2.bias", 1, 4);
}

static void add_vres(sd_st_writer *w, const char *p, int cin, int cout)
{
    addf(w, 1, cin, 0, 0, 0, "%s.norm1.weight", p);
    addf(w, 1, cin, 0, 0, 0, "%s.norm1.bias", p);
    addf(w, 4, cout, cin, 3, 3, "%s.conv1.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.conv1.bias", p);
    addf(w, 1, cout, 0, 0, 0, "%s.norm2.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.norm2.bias", p);
    addf(w, 4, cout, cout, 3, 3, "%s.conv2.weight", p);
    addf(w, 1, cout, 0, 0, 0, "%s.conv2.bias", p);
    if (cin != cout) {
        addf(w, 4, cout, cin, 1, 1, "%s.nin_shortcut.weight", p);
        addf(w, 1, cout, 0, 0, 0, "%s.nin_shortcut.bias", p);
    }
}

static void add_vmid(sd_st_writer *w, const char *coder, int c)
{
    char p[128];
    snprintf(p, sizeof p, V "%s.mid.block_1", coder);
    add_vres(w, p, c, c);
    snprintf(p, sizeof p, V "%s.mid.block_2", coder);
    add_vres(w, p, c, c);
    static const char *const qkv[] = {"q", "k", "v", "proj_out"};
    for (int i = 0; i < 4; i++) {
        addf(w, 4, c, c, 1, 1, V "%s.mid.attn_1.%s.weight", coder, qkv[i]);
        addf(w, 1, c, 0, 0, 0, V "%s.mid.attn_1.%s.bias", coder, qkv[i]);
    }
    addf(w, 1, c, 0, 0, 0, V "%s.mid.attn_1.norm.weight", coder);
    addf(w, 1, c, 0, 0, 0, V "%s.mid.attn_1.norm.bias", coder);
}

/* VAE: channels [4, 8], 1 resnet per encoder level, latent 4. */
static void add_vae(sd_st_writer *w)
{
    addt(w, V "encoder.conv_in.weight", 4, 4, 3, 3, 3);
    addt(w, V "encoder.conv_in.bias", 1, 4);
    add_vres(w, V "encoder.down.0.block.0", 4, 4);
    addt(w, V "encoder.down.0.downsample.conv.weight", 4, 4, 4, 3, 3);
    addt(w, V "encoder.down.0.downsample.conv.bias", 1, 4);
    add_vres(w, V "encoder.down.1.block.0", 4, 8);
    add_vmid(w, "encoder", 8);
    addt(w, V "encoder.norm_out.weight", 1, 8);
    addt(w, V "encoder.norm_out.bias", 1, 8);
    addt(w, V "encoder.conv_out.weight", 4, 8, 8, 3, 3);
    addt(w, V "encoder.conv_out.bias", 1, 8);
    addt(w, V "quant_conv.weight", 4, 8, 8, 1, 1);
    addt(w, V "quant_conv.bias", 1, 8);
    addt(w, V "post_quant_conv.weight", 4, 4, 4, 1, 1);
    addt(w, V "post_quant_conv.bias", 1, 4);
    addt(w, V "decoder.conv_in.weight", 4, 8, 4, 3, 3);
    addt(w, V "decoder.conv_in.bias", 1, 8);
    add_vmid(w, "decoder", 8);
    add_vres(w, V "decoder.up.1.block.0", 8, 8);
    add_vres(w, V "decoder.up.1.block.1", 8, 8);
    addt(w, V "decoder.up.1.upsample.conv.weight", 4, 8, 8, 3, 3);
    addt(w, V "decoder.up.1.upsample.conv.bias", 1, 8);
    add_vres(w, V "decoder.up.0.block.0", 8, 4);
    add_vres(w, V "decoder.up.0.block.1", 4, 4);
    addt(w, V "decoder.norm_out.weight", 1, 4);
    addt(w, V "decoder.norm_out.bias", 1, 4);
    addt(w, V "decoder.conv_out.weight", 4, 3, 4, 3, 3);
    addt(w, V "decoder.conv_out.bias", 1, 3);
}

#define C1 "cond_stage_model.transformer.text_model."
static void add_clip(sd_st_writer *w, int layers)
{
    const int D = 8, I = 12;
    addt(w, C1 "embeddings.token_embedding.weight", 2, 10, D);
    addt(w, C1 "embeddings.position_embedding.weight", 2, 5, D);
    int64_t one[2] = {1, 5};
    int64_t ids[5] = {0, 1, 2, 3, 4};
    sd_st_writer_add(w, C1 "embeddings.position_ids", SD_I64, 2, one, ids);
    for (int l = 0; l < layers; l++) {
        static const char *const pr[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int i = 0; i < 4; i++) {
            addf(w, 2, D, D, 0, 0, C1 "encoder.layers.%d.self_attn.%s.weight", l, pr[i]);
            addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.self_attn.%s.bias", l, pr[i]);
        }
        addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.layer_norm1.weight", l);
        addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.layer_norm1.bias", l);
        addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.layer_norm2.weight", l);
        addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.layer_norm2.bias", l);
        addf(w, 2, I, D, 0, 0, C1 "encoder.layers.%d.mlp.fc1.weight", l);
        addf(w, 1, I, 0, 0, 0, C1 "encoder.layers.%d.mlp.fc1.bias", l);
        addf(w, 2, D, I, 0, 0, C1 "encoder.layers.%d.mlp.fc2.weight", l);
        addf(w, 1, D, 0, 0, 0, C1 "encoder.layers.%d.mlp.fc2.bias", l);
    }
    addt(w, C1 "final_layer_norm.weight", 1, D);
    addt(w, C1 "final_layer_norm.bias", 1, D);
}

#define C2 "cond_stage_model.model."
static void add_openclip(sd_st_writer *w, int blocks)
{
    const int D = 4, I = 6;
    addt(w, C2 "token_embedding.weight", 2, 10, D);
    addt(w, C2 "positional_embedding", 2, 5, D);
    addt(w, C2 "ln_final.weight", 1, D);
    addt(w, C2 "ln_final.bias", 1, D);
    addt(w, C2 "text_projection", 2, D, 3);
    addt(w, C2 "logit_scale", 0);
    for (int l = 0; l < blocks; l++) {
        addf(w, 2, 3 * D, D, 0, 0, C2 "transformer.resblocks.%d.attn.in_proj_weight", l);
        addf(w, 1, 3 * D, 0, 0, 0, C2 "transformer.resblocks.%d.attn.in_proj_bias", l);
        addf(w, 2, D, D, 0, 0, C2 "transformer.resblocks.%d.attn.out_proj.weight", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.attn.out_proj.bias", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.ln_1.weight", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.ln_1.bias", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.ln_2.weight", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.ln_2.bias", l);
        addf(w, 2, I, D, 0, 0, C2 "transformer.resblocks.%d.mlp.c_fc.weight", l);
        addf(w, 1, I, 0, 0, 0, C2 "transformer.resblocks.%d.mlp.c_fc.bias", l);
        addf(w, 2, D, I, 0, 0, C2 "transformer.resblocks.%d.mlp.c_proj.weight", l);
        addf(w, 1, D, 0, 0, 0, C2 "transformer.resblocks.%d.mlp.c_proj.bias", l);
    }
}

static void add_extras(sd_st_writer *w)
{
    addt(w, "betas", 1, 10);
    addt(w, "alphas_cumprod", 1, 10);
    addt(w, "model_ema.decay", 0);
    addt(w, "model_ema.diffusion_modelinput_blocks00weight", 4, 4, 4, 3, 3);
}

enum { F_SD1, F_SD2, F_SD2_SMALL, F_SDXL, F_SDXL_UNET, F_UNET1024, F_SD1_UNKNOWN, F_SD1_NOMID };

/* Writes a fake checkpoint, returns its path (static buffer per kind). */
static const char *make_fake(int kind, const char *meta_arch)
{
    static char paths[8][256];
    char *path = paths[kind];
    snprintf(path, 256, "/tmp/sd_test_ckpt_%d_%d.safetensors", (int)getpid(), kind);
    sd_st_writer *w = sd_st_writer_new();
    g_wst = SD_OK;
    g_seed = 1000 + (unsigned long long)kind;
    switch (kind) {
    case F_SD1:
    case F_SD1_UNKNOWN:
    case F_SD1_NOMID:
        g_no_mid = kind == F_SD1_NOMID;
        add_unet(w, 768, false);
        g_no_mid = false;
        add_vae(w);
        add_clip(w, 2);
        add_extras(w);
        if (kind == F_SD1_UNKNOWN) {
            addt(w, U "label_emb.0.0.weight", 2, 16, 8);
            addt(w, U "input_blocks.1.1.transformer_blocks.0.attn1.rotary.weight", 1, 4);
            addt(w, V "encoder.down.0.block.0.gamma", 1, 4);
            addt(w, V "encoder.mid.attn_1.qkv.weight", 1, 4);
            addt(w, C1 "encoder.layers.0.adapter.weight", 1, 4);
            addt(w, C2 "token_embedding.weight", 2, 10, 4); /* an SD2 text key in an SD1 file */
        }
        break;
    case F_SD2:
    case F_SD2_SMALL:
        add_unet(w, 1024, true);
        add_vae(w);
        add_openclip(w, kind == F_SD2 ? 24 : 2);
        add_extras(w);
        break;
    case F_SDXL:
        add_unet(w, 2048, true);
        add_vae(w);
        addt(w, "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight", 2, 77, 8);
        addt(w, "conditioner.embedders.1.model.positional_embedding", 2, 77, 8);
        break;
    case F_SDXL_UNET:
        add_unet(w, 2048, true);
        break;
    case F_UNET1024:
        add_unet(w, 1024, true);
        break;
    }
    if (meta_arch)
        sd_st_writer_meta(w, "modelspec.architecture", meta_arch);
    sd_status s = g_wst == SD_OK ? sd_st_writer_save(w, path) : g_wst;
    sd_st_writer_free(w);
    if (s != SD_OK)
        fprintf(stderr, "  writing %s failed: %s\n", path, sd_last_error());
    return path;
}

static sd_safetensors *open_fake(int kind, const char *meta_arch)
{
    sd_safetensors *st = NULL;
    const char *p = make_fake(kind, meta_arch);
    sd_status s = sd_safetensors_open(p, &st);
    unlink(p);
    if (s != SD_OK) {
        fprintf(stderr, "  open %s: %s\n", p, sd_last_error());
        return NULL;
    }
    return st;
}

/* ------------------------------------------------------------------ helpers */

/* name maps to the LDM tensor `ldm` (whole, or rows [row0, row0+rows) when rows >= 0) */
static bool maps_to(const sd_weights *w, const sd_safetensors *st, const char *name, const char *ldm, int64_t row0,
                    int64_t rows)
{
    const sd_wsrc *a = alias(w, name);
    const sd_st_tensor *t = sd_st_find(st, ldm);
    if (!a || !t) {
        fprintf(stderr, "  %s -> %s: %s\n", name, ldm, !a ? "no alias" : "no such LDM tensor");
        return false;
    }
    if (rows < 0) {
        row0 = 0;
        rows = t->ndim ? t->shape[0] : 1;
    }
    if (a->t != t || a->row0 != row0 || a->rows != rows) {
        fprintf(stderr, "  %s: maps to %s rows [%lld,+%lld), want %s [%lld,+%lld)\n", name, a->t->name,
                (long long)a->row0, (long long)a->rows, ldm, (long long)row0, (long long)rows);
        return false;
    }
    return true;
}

static bool has_unknown(const sd_ckpt_info *info, const char *key)
{
    for (size_t i = 0; i < info->n_unknown; i++)
        if (!strcmp(info->unknown[i], key))
            return true;
    return false;
}

static int json_int(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -12345;
}

static const char *json_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static bool json_ints_eq(const cJSON *o, const char *k, const int *want, int n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return false;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e) || e->valueint != want[i])
            return false;
    }
    return true;
}

static bool json_strs_eq(const cJSON *o, const char *k, const char *const *want, int n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return false;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsString(e) || strcmp(e->valuestring, want[i]))
            return false;
    }
    return true;
}

static bool json_true(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

/* ------------------------------------------------------------------ tests */

TEST(detect_architectures)
{
    static const struct {
        int kind;
        sd_arch want;
    } cases[] = {
        {F_SD1, SD_ARCH_SD1},   {F_SD2, SD_ARCH_SD2},         {F_SD2_SMALL, SD_ARCH_SD2},
        {F_SDXL, SD_ARCH_SDXL}, {F_SDXL_UNET, SD_ARCH_SDXL}, {F_UNET1024, SD_ARCH_SD2},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++) {
        sd_safetensors *st = open_fake(cases[i].kind, NULL);
        CHECK(st != NULL);
        if (!st)
            continue;
        sd_arch a = SD_ARCH_UNKNOWN;
        CHECK_STATUS(sd_ckpt_detect(st, &a), SD_OK);
        CHECK_MSG(a == cases[i].want, "kind %d: got %s want %s", cases[i].kind, sd_arch_name(a),
                  sd_arch_name(cases[i].want));
        sd_safetensors_close(st);
    }
}

TEST(not_a_checkpoint)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/sd_test_ckpt_%d_other.safetensors", (int)getpid());
    float x[4] = {0};
    int64_t sh[1] = {4};
    /* a diffusers component file */
    sd_st_writer *w = sd_st_writer_new();
    sd_st_writer_add(w, "down_blocks.0.resnets.0.conv1.bias", SD_F32, 1, sh, x);
    sd_st_writer_add(w, "conv_in.weight", SD_F32, 1, sh, x);
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    sd_safetensors *st;
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    sd_arch a = SD_ARCH_SD1;
    CHECK_STATUS(sd_ckpt_detect(st, &a), SD_ERR_FORMAT);
    CHECK(a == SD_ARCH_UNKNOWN);
    CHECK_ERR_CONTAINS("diffusers");
    sd_weights u;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &u, NULL, NULL, NULL), SD_ERR_FORMAT);
    CHECK(sd_ckpt_unet_config(st, SD_ARCH_UNKNOWN) == NULL);
    sd_weights_free(&u);
    sd_safetensors_close(st);
    /* something else entirely */
    w = sd_st_writer_new();
    sd_st_writer_add(w, "foo", SD_F32, 1, sh, x);
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    CHECK_STATUS(sd_ckpt_detect(st, &a), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("not a single-file Stable Diffusion checkpoint");
    sd_safetensors_close(st);
    /* broken UNet: model.diffusion_model.* without conv_in */
    w = sd_st_writer_new();
    sd_st_writer_add(w, U "input_blocks.1.0.in_layers.0.weight", SD_F32, 1, sh, x);
    sd_st_writer_add(w, C1 "final_layer_norm.weight", SD_F32, 1, sh, x);
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    CHECK_STATUS(sd_ckpt_detect(st, &a), SD_OK);
    CHECK(a == SD_ARCH_SD1);
    sd_weights_init(&u, NULL, "unet", SD_F32);
    CHECK_STATUS(sd_ckpt_map(st, a, &u, NULL, NULL, NULL), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("input_blocks.0.0.weight");
    sd_weights_free(&u);
    sd_weights v;
    sd_weights_init(&v, NULL, "vae", SD_F32);
    CHECK_STATUS(sd_ckpt_map(st, a, NULL, &v, NULL, NULL), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("no VAE");
    sd_weights_free(&v);
    CHECK(sd_ckpt_vae_config(st, a) == NULL);
    CHECK(sd_ckpt_text_config(st, a) == NULL);
    sd_safetensors_close(st);
    unlink(path);
}

TEST(sdxl_without_added_conditioning)
{
    /* an SDXL file maps (test_checkpoint_sdxl.c has the real layouts), but a UNet without label_emb has no
     * text_time conditioning to derive: a named error */
    sd_safetensors *st = open_fake(F_SDXL, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    sd_weights u;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &u, NULL, NULL, NULL), SD_OK);
    CHECK(u.n_idx > 0);
    CHECK(sd_ckpt_unet_config(st, SD_ARCH_UNKNOWN) == NULL);
    CHECK_ERR_CONTAINS("label_emb");
    sd_weights_free(&u);
    sd_safetensors_close(st);
}

TEST(sd1_mapping)
{
    sd_safetensors *st = open_fake(F_SD1, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    sd_weights u, v, t;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    sd_weights_init(&v, NULL, "vae", SD_F32);
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &u, &v, &t, &info), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&u), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&v), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&t), SD_OK);
    CHECK(info.arch == SD_ARCH_SD1);
    CHECK_MSG(info.n_unknown == 0, "%zu unknown, first %s", info.n_unknown, info.n_unknown ? info.unknown[0] : "");
    /* every UNet/VAE/text tensor mapped exactly once; position_ids + 6 top-level keys ignored */
    size_t nu = 0, nv = 0, nt = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *n = st->tensors[i].name;
        nu += !strncmp(n, U, strlen(U));
        nv += !strncmp(n, V, strlen(V));
        nt += !strncmp(n, C1, strlen(C1));
    }
    CHECK(info.n_unet == nu && u.n_idx == nu);
    CHECK(info.n_vae == nv && v.n_idx == nv);
    CHECK(info.n_text == nt - 1 && t.n_idx == nt - 1);
    CHECK_MSG(info.n_ignored == 5, "ignored %zu", info.n_ignored);
    CHECK(info.text_blocks_in_file == 2 && info.text_layers == 2);

    static const char *const um[][2] = {
        {"time_embedding.linear_1.weight", "time_embed.0.weight"},
        {"time_embedding.linear_2.bias", "time_embed.2.bias"},
        {"conv_in.weight", "input_blocks.0.0.weight"},
        {"conv_norm_out.weight", "out.0.weight"},
        {"conv_out.bias", "out.2.bias"},
        {"down_blocks.0.resnets.0.norm1.weight", "input_blocks.1.0.in_layers.0.weight"},
        {"down_blocks.0.resnets.0.conv1.weight", "input_blocks.1.0.in_layers.2.weight"},
        {"down_blocks.0.resnets.0.norm2.bias", "input_blocks.1.0.out_layers.0.bias"},
        {"down_blocks.0.resnets.0.conv2.weight", "input_blocks.1.0.out_layers.3.weight"},
        {"down_blocks.0.resnets.0.time_emb_proj.weight", "input_blocks.1.0.emb_layers.1.weight"},
        {"down_blocks.0.attentions.0.proj_in.weight", "input_blocks.1.1.proj_in.weight"},
        {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"},
        {"down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.bias",
         "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.bias"},
        {"down_blocks.0.downsamplers.0.conv.weight", "input_blocks.2.0.op.weight"},
        {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.3.0.skip_connection.weight"},
        {"mid_block.resnets.0.conv1.bias", "middle_block.0.in_layers.2.bias"},
        {"mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
         "middle_block.1.transformer_blocks.0.attn1.to_out.0.weight"},
        {"mid_block.resnets.1.conv2.weight", "middle_block.2.out_layers.3.weight"},
        {"up_blocks.0.resnets.0.conv_shortcut.weight", "output_blocks.0.0.skip_connection.weight"},
        {"up_blocks.0.resnets.1.time_emb_proj.weight", "output_blocks.1.0.emb_layers.1.weight"},
        {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.1.1.conv.weight"},
        {"up_blocks.1.resnets.0.norm1.bias", "output_blocks.2.0.in_layers.0.bias"},
        {"up_blocks.1.attentions.1.proj_out.bias", "output_blocks.3.1.proj_out.bias"},
        {"up_blocks.1.attentions.0.transformer_blocks.0.norm3.weight",
         "output_blocks.2.1.transformer_blocks.0.norm3.weight"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(um); i++) {
        char ldm[256];
        snprintf(ldm, sizeof ldm, U "%s", um[i][1]);
        CHECK_MSG(maps_to(&u, st, um[i][0], ldm, 0, -1), "%s", um[i][0]);
    }
    static const char *const vm[][2] = {
        {"encoder.conv_in.weight", "encoder.conv_in.weight"},
        {"encoder.conv_norm_out.bias", "encoder.norm_out.bias"},
        {"encoder.down_blocks.0.resnets.0.conv1.weight", "encoder.down.0.block.0.conv1.weight"},
        {"encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.down.0.downsample.conv.weight"},
        {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"},
        {"encoder.mid_block.resnets.1.norm2.weight", "encoder.mid.block_2.norm2.weight"},
        {"encoder.mid_block.attentions.0.group_norm.bias", "encoder.mid.attn_1.norm.bias"},
        {"encoder.mid_block.attentions.0.to_q.weight", "encoder.mid.attn_1.q.weight"},
        {"encoder.mid_block.attentions.0.to_k.bias", "encoder.mid.attn_1.k.bias"},
        {"encoder.mid_block.attentions.0.to_v.weight", "encoder.mid.attn_1.v.weight"},
        {"encoder.mid_block.attentions.0.to_out.0.weight", "encoder.mid.attn_1.proj_out.weight"},
        {"quant_conv.weight", "quant_conv.weight"},
        {"post_quant_conv.bias", "post_quant_conv.bias"},
        {"decoder.mid_block.attentions.0.to_out.0.bias", "decoder.mid.attn_1.proj_out.bias"},
        {"decoder.up_blocks.0.resnets.1.conv2.weight", "decoder.up.1.block.1.conv2.weight"},
        {"decoder.up_blocks.0.upsamplers.0.conv.weight", "decoder.up.1.upsample.conv.weight"},
        {"decoder.up_blocks.1.resnets.0.conv_shortcut.weight", "decoder.up.0.block.0.nin_shortcut.weight"},
        {"decoder.conv_norm_out.weight", "decoder.norm_out.weight"},
        {"decoder.conv_out.bias", "decoder.conv_out.bias"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(vm); i++) {
        char ldm[256];
        snprintf(ldm, sizeof ldm, V "%s", vm[i][1]);
        CHECK_MSG(maps_to(&v, st, vm[i][0], ldm, 0, -1), "%s", vm[i][0]);
    }
    CHECK(maps_to(&t, st, "text_model.embeddings.token_embedding.weight", C1 "embeddings.token_embedding.weight", 0,
                  -1));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.1.self_attn.k_proj.bias",
                  C1 "encoder.layers.1.self_attn.k_proj.bias", 0, -1));
    CHECK(maps_to(&t, st, "text_model.final_layer_norm.weight", C1 "final_layer_norm.weight", 0, -1));
    CHECK(alias(&t, "text_model.embeddings.position_ids") == NULL);

    /* Loading through a real backend: the VAE's [C,C,1,1] attention conv serves a [C,C] linear. */
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create(1, &be), SD_OK);
    if (be) {
        v.be = be;
        sd_tensor q;
        CHECK_STATUS(sd_weights_get(&v, &q, SD_SHAPE(8, 8), "decoder.mid_block.attentions.0.to_q.weight"), SD_OK);
        const sd_st_tensor *src = sd_st_find(st, V "decoder.mid.attn_1.q.weight");
        CHECK(q.ndim == 2 && q.ne[0] == 8 && q.ne[1] == 8 && !memcmp(q.data, src->data, 64 * sizeof(float)));
        sd_weights_free(&v);
        sd_backend_destroy(be);
    } else {
        sd_weights_free(&v);
    }
    sd_ckpt_info_free(&info);
    sd_weights_free(&u);
    sd_weights_free(&t);
    sd_safetensors_close(st);
}

TEST(sd1_configs)
{
    sd_safetensors *st = open_fake(F_SD1, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    cJSON *u = sd_ckpt_unet_config(st, SD_ARCH_SD1);
    CHECK(u != NULL);
    if (u) {
        CHECK(json_ints_eq(u, "block_out_channels", (const int[]){4, 8}, 2));
        CHECK(json_int(u, "layers_per_block") == 1);
        CHECK(json_int(u, "in_channels") == 4 && json_int(u, "out_channels") == 4);
        CHECK(json_int(u, "cross_attention_dim") == 768);
        CHECK(json_int(u, "attention_head_dim") == 8);
        CHECK(json_int(u, "transformer_layers_per_block") == 1);
        CHECK(!json_true(u, "use_linear_projection") && !json_true(u, "upcast_attention"));
        CHECK(json_strs_eq(u, "down_block_types", (const char *const[]){"CrossAttnDownBlock2D", "DownBlock2D"}, 2));
        CHECK(json_strs_eq(u, "up_block_types", (const char *const[]){"UpBlock2D", "CrossAttnUpBlock2D"}, 2));
        CHECK(!strcmp(json_str(u, "mid_block_type"), "UNetMidBlock2DCrossAttn"));
        CHECK(json_int(u, "sample_size") == 256); /* 512 / 2 (2-level VAE) */
        /* time_embed is 16 wide = 4 x 4 channels: standard, so no explicit time_embedding_dim */
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(u, "time_embedding_dim")));
        cJSON_Delete(u);
    }
    cJSON *v = sd_ckpt_vae_config(st, SD_ARCH_SD1);
    CHECK(v != NULL);
    if (v) {
        CHECK(json_ints_eq(v, "block_out_channels", (const int[]){4, 8}, 2));
        CHECK(json_int(v, "layers_per_block") == 1);
        CHECK(json_int(v, "in_channels") == 3 && json_int(v, "out_channels") == 3);
        CHECK(json_int(v, "latent_channels") == 4);
        CHECK(fabs(cJSON_GetObjectItem(v, "scaling_factor")->valuedouble - 0.18215) < 1e-12);
        CHECK(json_int(v, "sample_size") == 512);
        CHECK(json_strs_eq(v, "up_block_types", (const char *const[]){"UpDecoderBlock2D", "UpDecoderBlock2D"}, 2));
        cJSON_Delete(v);
    }
    cJSON *t = sd_ckpt_text_config(st, SD_ARCH_SD1);
    CHECK(t != NULL);
    if (t) {
        CHECK(json_int(t, "hidden_size") == 8 && json_int(t, "intermediate_size") == 12);
        CHECK(json_int(t, "num_hidden_layers") == 2);
        CHECK(json_int(t, "vocab_size") == 10 && json_int(t, "max_position_embeddings") == 5);
        CHECK(!strcmp(json_str(t, "hidden_act"), "quick_gelu"));
        cJSON_Delete(t);
    }
    cJSON *s = sd_ckpt_scheduler_config(st, SD_ARCH_SD1);
    CHECK(s != NULL);
    if (s) {
        CHECK(!strcmp(json_str(s, "prediction_type"), "epsilon"));
        CHECK(!strcmp(json_str(s, "beta_schedule"), "scaled_linear"));
        CHECK(json_int(s, "num_train_timesteps") == 1000 && json_int(s, "steps_offset") == 1);
        cJSON_Delete(s);
    }
    sd_safetensors_close(st);
}

/* A distilled UNet without a middle block (BK-SDM, SDXS, segmind tiny-sd as single files): the derived config
 * says mid_block_type null (not UNetMidBlock2D, which the UNet loader refuses), and every tensor maps. */
TEST(unet_without_mid_block)
{
    sd_safetensors *st = open_fake(F_SD1_NOMID, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    cJSON *u = sd_ckpt_unet_config(st, SD_ARCH_UNKNOWN);
    CHECK(u != NULL);
    if (u) {
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(u, "mid_block_type")));
        CHECK(json_int(u, "layers_per_block") == 1);
        /* the fake's 4 / 8 channels need smaller groups and head counts (the weights cannot tell those) */
        cJSON_ReplaceItemInObject(u, "norm_num_groups", cJSON_CreateNumber(4));
        cJSON_ReplaceItemInObject(u, "attention_head_dim", cJSON_CreateNumber(1));
        char *txt = cJSON_PrintUnformatted(u);
        sd_config c;
        sd_unet_config cfg;
        CHECK_STATUS(sd_config_parse(txt, strlen(txt), "derived", &c), SD_OK);
        if (!t_cur_failed) {
            CHECK_STATUS(sd_unet_config_from(&c, &cfg), SD_OK);
            CHECK(!cfg.has_mid_block && cfg.n_blocks == 2);
            sd_config_free(&c);
        }
        free(txt);
        cJSON_Delete(u);
    }
    sd_weights w;
    sd_weights_init(&w, NULL, "unet", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &w, NULL, NULL, &info), SD_OK);
    CHECK_MSG(info.n_unknown == 0, "%zu unknown, first %s", info.n_unknown, info.n_unknown ? info.unknown[0] : "");
    CHECK(info.arch == SD_ARCH_SD1);
    sd_ckpt_info_free(&info);
    sd_weights_free(&w);
    sd_safetensors_close(st);
}

TEST(sd2_openclip_24_blocks)
{
    sd_safetensors *st = open_fake(F_SD2, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    sd_weights t, u;
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_weights_init(&u, NULL, "unet", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_UNKNOWN, &u, NULL, &t, &info), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&t), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&u), SD_OK);
    CHECK(info.arch == SD_ARCH_SD2);
    CHECK(info.n_unknown == 0);
    CHECK(info.text_blocks_in_file == 24 && info.text_layers == 23);
    /* 23 layers x 16 tensors + 2 embeddings + 2 final norm */
    CHECK_MSG(t.n_idx == 23 * 16 + 4, "%zu text aliases", t.n_idx);
    /* ignored: 12 keys of block 23, text_projection, logit_scale, 4 top-level extras */
    CHECK_MSG(info.n_ignored == 12 + 2 + 4, "ignored %zu", info.n_ignored);
    const char *w5 = C2 "transformer.resblocks.5.attn.in_proj_weight";
    const char *b5 = C2 "transformer.resblocks.5.attn.in_proj_bias";
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.q_proj.weight", w5, 0, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.k_proj.weight", w5, 4, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.v_proj.weight", w5, 8, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.q_proj.bias", b5, 0, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.k_proj.bias", b5, 4, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.5.self_attn.v_proj.bias", b5, 8, 4));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.22.self_attn.out_proj.weight",
                  C2 "transformer.resblocks.22.attn.out_proj.weight", 0, -1));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.0.layer_norm1.bias", C2 "transformer.resblocks.0.ln_1.bias", 0,
                  -1));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.0.layer_norm2.weight",
                  C2 "transformer.resblocks.0.ln_2.weight", 0, -1));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.3.mlp.fc1.weight", C2 "transformer.resblocks.3.mlp.c_fc.weight",
                  0, -1));
    CHECK(maps_to(&t, st, "text_model.encoder.layers.3.mlp.fc2.bias", C2 "transformer.resblocks.3.mlp.c_proj.bias",
                  0, -1));
    CHECK(maps_to(&t, st, "text_model.embeddings.position_embedding.weight", C2 "positional_embedding", 0, -1));
    CHECK(maps_to(&t, st, "text_model.embeddings.token_embedding.weight", C2 "token_embedding.weight", 0, -1));
    CHECK(maps_to(&t, st, "text_model.final_layer_norm.bias", C2 "ln_final.bias", 0, -1));
    CHECK(!sd_weights_has(&t, "text_model.encoder.layers.23.layer_norm1.weight"));
    CHECK(!sd_weights_has(&t, "text_projection.weight"));
    CHECK(maps_to(&u, st, "down_blocks.0.attentions.0.proj_in.weight", U "input_blocks.1.1.proj_in.weight", 0, -1));

    /* Row slices through a real backend: k_proj = rows 4..7 of in_proj_weight, v bias = elements 8..11. */
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create(1, &be), SD_OK);
    if (be) {
        t.be = be;
        sd_tensor k, vb;
        CHECK_STATUS(sd_weights_get(&t, &k, SD_SHAPE(4, 4), "text_model.encoder.layers.5.self_attn.k_proj.weight"),
                     SD_OK);
        CHECK_STATUS(sd_weights_get(&t, &vb, SD_SHAPE(4), "text_model.encoder.layers.5.self_attn.v_proj.bias"), SD_OK);
        const float *W = sd_st_find(st, w5)->data, *B = sd_st_find(st, b5)->data;
        CHECK(!memcmp(k.data, W + 16, 16 * sizeof(float)));
        CHECK(!memcmp(vb.data, B + 8, 4 * sizeof(float)));
        sd_tensor bad;
        CHECK_STATUS(sd_weights_get(&t, &bad, SD_SHAPE(12, 4), "text_model.encoder.layers.5.self_attn.q_proj.weight"),
                     SD_ERR_SHAPE);
        sd_weights_free(&t);
        sd_backend_destroy(be);
    } else {
        sd_weights_free(&t);
    }

    cJSON *tc = sd_ckpt_text_config(st, SD_ARCH_SD2);
    CHECK(tc != NULL);
    if (tc) {
        CHECK(json_int(tc, "num_hidden_layers") == 23);
        CHECK(json_int(tc, "hidden_size") == 4 && json_int(tc, "intermediate_size") == 6);
        CHECK(!strcmp(json_str(tc, "hidden_act"), "gelu"));
        cJSON_Delete(tc);
    }
    cJSON *uc = sd_ckpt_unet_config(st, SD_ARCH_SD2);
    CHECK(uc != NULL);
    if (uc) {
        CHECK(json_true(uc, "use_linear_projection") && json_true(uc, "upcast_attention"));
        CHECK(json_int(uc, "cross_attention_dim") == 1024);
        CHECK(json_ints_eq(uc, "attention_head_dim", (const int[]){1, 1}, 2)); /* channels/64, at least 1 */
        CHECK(json_int(uc, "sample_size") == 384);                              /* 768 / 2 */
        cJSON_Delete(uc);
    }
    cJSON *sc = sd_ckpt_scheduler_config(st, SD_ARCH_SD2);
    CHECK(sc != NULL);
    if (sc) {
        CHECK(!strcmp(json_str(sc, "prediction_type"), "v_prediction"));
        CHECK(!strcmp(json_str(sc, "_class_name"), "DDIMScheduler"));
        cJSON_Delete(sc);
    }
    bool known = true;
    CHECK(!strcmp(sd_ckpt_prediction_type(st, SD_ARCH_SD2, &known), "v_prediction") && !known);
    sd_ckpt_info_free(&info);
    sd_weights_free(&u);
    sd_safetensors_close(st);
}

TEST(sd2_small_tower_keeps_all_blocks_and_metadata_hints)
{
    sd_safetensors *st = open_fake(F_SD2_SMALL, "stable-diffusion-v2-512");
    CHECK(st != NULL);
    if (!st)
        return;
    sd_weights t;
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_SD2, NULL, NULL, &t, &info), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&t), SD_OK);
    CHECK(info.text_blocks_in_file == 2 && info.text_layers == 2);
    CHECK(t.n_idx == 2 * 16 + 4);
    CHECK(sd_weights_has(&t, "text_model.encoder.layers.1.self_attn.v_proj.weight"));
    bool known = false;
    CHECK(!strcmp(sd_ckpt_prediction_type(st, SD_ARCH_SD2, &known), "epsilon") && known);
    cJSON *sc = sd_ckpt_scheduler_config(st, SD_ARCH_SD2);
    CHECK(sc && !strcmp(json_str(sc, "prediction_type"), "epsilon"));
    cJSON_Delete(sc);
    sd_ckpt_info_free(&info);
    sd_weights_free(&t);
    sd_safetensors_close(st);
    st = open_fake(F_SD2_SMALL, "stable-diffusion-v2-768-v");
    CHECK(st != NULL);
    if (st) {
        CHECK(!strcmp(sd_ckpt_prediction_type(st, SD_ARCH_SD2, &known), "v_prediction") && known);
        sd_safetensors_close(st);
    }
}

TEST(unknown_keys_reported)
{
    sd_safetensors *st = open_fake(F_SD1_UNKNOWN, NULL);
    CHECK(st != NULL);
    if (!st)
        return;
    sd_weights u, v, t;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    sd_weights_init(&v, NULL, "vae", SD_F32);
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_ckpt_info info;
    /* detection prefers... an SD2 text key is present too: SD2 wins, so pass SD1 explicitly */
    CHECK_STATUS(sd_ckpt_map(st, SD_ARCH_SD1, &u, &v, &t, &info), SD_OK);
    CHECK_MSG(info.n_unknown == 5, "%zu unknown", info.n_unknown);
    CHECK(has_unknown(&info, U "label_emb.0.0.weight"));
    CHECK(has_unknown(&info, U "input_blocks.1.1.transformer_blocks.0.attn1.rotary.weight"));
    CHECK(has_unknown(&info, V "encoder.down.0.block.0.gamma"));
    CHECK(has_unknown(&info, V "encoder.mid.attn_1.qkv.weight"));
    CHECK(has_unknown(&info, C1 "encoder.layers.0.adapter.weight"));
    char **names = NULL;
    size_t n = 0;
    CHECK_STATUS(sd_ckpt_unknown_keys(st, SD_ARCH_SD1, &names, &n), SD_OK);
    CHECK_MSG(n == 6, "%zu unknown keys", n); /* the 5 above + the stray OpenCLIP key */
    bool stray = false;
    for (size_t i = 0; i < n; i++) {
        stray |= !strcmp(names[i], C2 "token_embedding.weight");
        free(names[i]);
    }
    free(names);
    CHECK(stray);
    sd_ckpt_info_free(&info);
    sd_weights_free(&u);
    sd_weights_free(&v);
    sd_weights_free(&t);
    sd_safetensors_close(st);
}

TEST(load_owns_one_mapping_per_component)
{
    const char *path = make_fake(F_SD1, NULL);
    sd_weights u, v, t;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    sd_weights_init(&v, NULL, "vae", SD_F32);
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_load(path, &u, &v, &t, &info), SD_OK);
    unlink(path);
    CHECK(u.n_files == 1 && v.n_files == 1 && t.n_files == 1);
    CHECK(info.arch == SD_ARCH_SD1 && info.n_unknown == 0 && info.n_vae == v.n_idx);
    /* free in any order: the VAE's aliases stay valid after the UNet is gone */
    sd_weights_free(&u);
    const sd_wsrc *a = alias(&v, "decoder.conv_out.weight");
    CHECK(a && a->t->ndim == 4 && a->t->shape[0] == 3);
    float sum = 0;
    if (a)
        for (size_t i = 0; i < a->t->numel; i++)
            sum += ((const float *)a->t->data)[i];
    CHECK(isfinite(sum));
    sd_weights_free(&t);
    sd_weights_free(&v);
    sd_ckpt_info_free(&info);
    /* missing file */
    sd_weights_init(&u, NULL, "unet", SD_F32);
    CHECK_STATUS(sd_ckpt_load("/nonexistent/x.safetensors", &u, NULL, NULL, NULL), SD_ERR_NOT_FOUND);
    sd_weights_free(&u);
}

/* Malformed layouts give errors or unknown keys, never crashes. */
TEST(hostile_layouts)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/sd_test_ckpt_%d_hostile.safetensors", (int)getpid());
    for (int kind = 0; kind < 5; kind++) {
        sd_st_writer *w = sd_st_writer_new();
        g_wst = SD_OK;
        add_unet(w, 768, false);
        add_clip(w, 1);
        if (kind == 0)
            addt(w, U "input_blocks.500.0.out_layers.3.weight", 4, 4, 4, 3, 3);
        if (kind == 1)
            addt(w, U "input_blocks.5.0.in_layers.0.weight", 1, 4); /* gap: 4 is missing */
        if (kind == 2)
            addt(w, U "input_blocks.99999999999.0.in_layers.0.weight", 1, 4); /* index too large to parse */
        if (kind == 3) {
            addt(w, C2 "transformer.resblocks.0.attn.in_proj_weight", 2, 7, 4); /* not 3 x D rows */
            addt(w, C2 "transformer.resblocks.0.attn.in_proj_bias", 0);
            addt(w, C2 "token_embedding.weight", 2, 10, 4);
        }
        if (kind == 4)
            addt(w, U "output_blocks.4.0.in_layers.0.weight", 1, 4); /* one output block too many */
        CHECK_STATUS(g_wst, SD_OK);
        CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
        sd_st_writer_free(w);
        sd_safetensors *st;
        CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
        if (t_cur_failed)
            break;
        sd_weights u, t;
        sd_weights_init(&u, NULL, "unet", SD_F32);
        sd_weights_init(&t, NULL, "text", SD_F32);
        sd_ckpt_info info;
        sd_status s = sd_ckpt_map(st, kind == 3 ? SD_ARCH_SD2 : SD_ARCH_SD1, kind == 3 ? NULL : &u, NULL,
                                  kind == 3 ? &t : NULL, &info);
        cJSON *c = sd_ckpt_unet_config(st, SD_ARCH_SD1);
        switch (kind) {
        case 0:
            CHECK(s == SD_ERR_UNSUPPORTED && c == NULL);
            CHECK_ERR_CONTAINS("500");
            break;
        case 1:
            CHECK(s == SD_ERR_FORMAT && c == NULL);
            CHECK_ERR_CONTAINS("input_blocks.4 is missing");
            break;
        case 2:
            CHECK(s == SD_OK && c != NULL);
            CHECK(info.n_unknown == 1 && has_unknown(&info, U "input_blocks.99999999999.0.in_layers.0.weight"));
            break;
        case 3:
            CHECK_STATUS(s, SD_OK);
            CHECK(info.n_unknown == 2); /* both in_proj tensors */
            CHECK(!sd_weights_has(&t, "text_model.encoder.layers.0.self_attn.q_proj.weight"));
            break;
        case 4:
            CHECK(s == SD_ERR_FORMAT && c == NULL);
            CHECK_ERR_CONTAINS("output blocks");
            break;
        }
        cJSON_Delete(c);
        sd_ckpt_info_free(&info);
        sd_weights_free(&u);
        sd_weights_free(&t);
        sd_safetensors_close(st);
    }
    unlink(path);
}

/* ------------------------------------------------------------------ tiny real models */

static void check_tiny(const char *single, const char *folder, sd_arch want)
{
    const char *data = getenv("SD_TEST_DATA");
    if (!data)
        FAIL("SD_TEST_DATA is not set (ctest sets it to tests/data)");
    char sp[1024], fp[1024], p[1200];
    snprintf(sp, sizeof sp, "%s/models/%s", data, single);
    snprintf(fp, sizeof fp, "%s/models/%s", data, folder);
    if (!sd_file_exists(sp) || !sd_dir_exists(fp))
        FAIL("%s or %s is absent (committed test data)", sp, fp);
    sd_safetensors *st;
    CHECK_STATUS(sd_safetensors_open(sp, &st), SD_OK);
    if (t_cur_failed)
        return;
    sd_arch arch;
    CHECK_STATUS(sd_ckpt_detect(st, &arch), SD_OK);
    CHECK(arch == want);
    sd_weights u, v, t;
    sd_weights_init(&u, NULL, "unet", SD_F32);
    sd_weights_init(&v, NULL, "vae", SD_F32);
    sd_weights_init(&t, NULL, "text", SD_F32);
    sd_ckpt_info info;
    CHECK_STATUS(sd_ckpt_map(st, arch, &u, &v, &t, &info), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&u), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&v), SD_OK);
    CHECK_STATUS(sd_weights_finalize(&t), SD_OK);
    CHECK_MSG(info.n_unknown == 0, "%zu unknown keys, first %s", info.n_unknown,
              info.n_unknown ? info.unknown[0] : "");
    printf("  %s: %s, %zu unet + %zu vae + %zu text aliases, %zu ignored, text blocks %d -> %d\n", single,
           sd_arch_name(arch), info.n_unet, info.n_vae, info.n_text, info.n_ignored, info.text_blocks_in_file,
           info.text_layers);

    /* Derivable keys (and fixed SD constants). Not compared because the weights cannot tell them:
     * attention_head_dim / num_attention_heads (head counts), norm_num_groups, sample_size. */
    static const char *const ukeys[] = {
        "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
        "up_block_types", "mid_block_type", "cross_attention_dim", "use_linear_projection",
        "transformer_layers_per_block", "upcast_attention", "flip_sin_to_cos", "freq_shift", "norm_eps", "act_fn",
        "center_input_sample", "downsample_padding", "mid_block_scale_factor", "time_embedding_dim",
    };
    static const char *const vkeys[] = {
        "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
        "down_block_types", "up_block_types", "scaling_factor", "act_fn",
    };
    static const char *const tkeys[] = {
        "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "vocab_size",
        "hidden_act", "layer_norm_eps", "bos_token_id", "eos_token_id", "pad_token_id",
    };
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", fp);
    if (sd_file_exists(p)) {
        compare_component(&u, p, NULL, "unet");
        cJSON *c = sd_ckpt_unet_config(st, arch);
        CHECK(c != NULL);
        snprintf(p, sizeof p, "%s/unet/config.json", fp);
        if (c)
            compare_config(c, p, ukeys, SD_ARRAY_LEN(ukeys), "unet");
        cJSON_Delete(c);
    }
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", fp);
    if (sd_file_exists(p)) {
        compare_component(&v, p, NULL, "vae");
        cJSON *c = sd_ckpt_vae_config(st, arch);
        CHECK(c != NULL);
        snprintf(p, sizeof p, "%s/vae/config.json", fp);
        if (c)
            compare_config(c, p, vkeys, SD_ARRAY_LEN(vkeys), "vae");
        cJSON_Delete(c);
    } else {
        printf("  (no %s/vae folder: VAE tensors not compared)\n", folder);
    }
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", fp);
    if (sd_file_exists(p)) {
        /* SD2: text_projection.weight (CLIPTextModelWithProjection) is dropped, as diffusers does */
        compare_component(&t, p, arch == SD_ARCH_SD2 ? "text_projection.weight" : NULL, "text_encoder");
        cJSON *c = sd_ckpt_text_config(st, arch);
        CHECK(c != NULL);
        snprintf(p, sizeof p, "%s/text_encoder/config.json", fp);
        if (c)
            compare_config(c, p, tkeys, SD_ARRAY_LEN(tkeys), "text_encoder");
        cJSON_Delete(c);
    }
    sd_ckpt_info_free(&info);
    sd_weights_free(&u);
    sd_weights_free(&v);
    sd_weights_free(&t);
    sd_safetensors_close(st);
}

TEST(tiny_sd15_single_file_matches_folder) { check_tiny("tiny-sd15-single.safetensors", "tiny-sd15", SD_ARCH_SD1); }
TEST(tiny_sd2_single_file_matches_folder) { check_tiny("tiny-sd2-single.safetensors", "tiny-sd2", SD_ARCH_SD2); }

int main(void)
{
    RUN(detect_architectures);
    RUN(not_a_checkpoint);
    RUN(sdxl_without_added_conditioning);
    RUN(sd1_mapping);
    RUN(sd1_configs);
    RUN(unet_without_mid_block);
    RUN(sd2_openclip_24_blocks);
    RUN(sd2_small_tower_keeps_all_blocks_and_metadata_hints);
    RUN(unknown_keys_reported);
    RUN(load_owns_one_mapping_per_component);
    RUN(hostile_layouts);
    RUN(tiny_sd15_single_file_matches_folder);
    RUN(tiny_sd2_single_file_matches_folder);
    return test_summary();
}
