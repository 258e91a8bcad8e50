/* Single-file checkpoints: diffusers configs derived from the tensors (UNet, VAE, text encoder,
 * scheduler), with the standard SD1.5 / SD2.1 values for what the tensors do not tell. */
#include "models/checkpoint_impl.h"
#include "models/unet.h"

/* ------------------------------------------------------------------ configs */

typedef struct jb {
    cJSON *o;
    bool ok;
} jb;

static void j_num(jb *b, const char *k, double v) { b->ok &= cJSON_AddNumberToObject(b->o, k, v) != NULL; }
static void j_str(jb *b, const char *k, const char *v) { b->ok &= cJSON_AddStringToObject(b->o, k, v) != NULL; }
static void j_bool(jb *b, const char *k, bool v) { b->ok &= cJSON_AddBoolToObject(b->o, k, v) != NULL; }
static void j_null(jb *b, const char *k) { b->ok &= cJSON_AddNullToObject(b->o, k) != NULL; }
static void j_ints(jb *b, const char *k, const int *v, int n)
{
    cJSON *a = cJSON_CreateIntArray(v, n);
    b->ok &= a != NULL && cJSON_AddItemToObject(b->o, k, a);
}
static void j_strs(jb *b, const char *k, const char *const *v, int n)
{
    cJSON *a = cJSON_CreateStringArray(v, n);
    b->ok &= a != NULL && cJSON_AddItemToObject(b->o, k, a);
}

static cJSON *j_finish(jb *b)
{
    if (!b->ok) {
        cJSON_Delete(b->o);
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory building a config");
        return NULL;
    }
    return b->o;
}

/* Image resolution from modelspec.resolution ("WxH"), else the SD default. */
static int image_size(const sd_safetensors *st, sd_arch arch)
{
    const char *r = sd_st_meta(st, "modelspec.resolution");
    if (r) {
        char *end;
        long w = strtol(r, &end, 10);
        if (end != r && w >= 64 && w <= 8192)
            return (int)w;
    }
    return arch == SD_ARCH_SDXL ? 1024 : arch == SD_ARCH_SD2 ? 768 : 512;
}

/* The nested transformer_layers_per_block / reverse_transformer_layers_per_block of an asymmetric UNet. */
static void j_depths(jb *b, const char *k, const int (*d)[MAX_LPB + 1], int levels, int per)
{
    cJSON *a = cJSON_CreateArray();
    b->ok &= a != NULL && cJSON_AddItemToObject(b->o, k, a);
    for (int i = 0; b->ok && i < levels; i++) {
        cJSON *e = cJSON_CreateIntArray(d[i], per);
        b->ok &= e != NULL && cJSON_AddItemToArray(a, e);
    }
}

static sd_status config_arch(const sd_safetensors *st, sd_arch *arch)
{
    SD_TRY(ck_resolve_arch(st, arch));
    return SD_OK;
}

cJSON *sd_ckpt_unet_config(const sd_safetensors *st, sd_arch arch)
{
    if (config_arch(st, &arch) != SD_OK)
        return NULL;
    unet_layout L;
    if (!has_prefix_key(st, P_UNET)) {
        sd_fail(SD_ERR_NOT_FOUND, "%s: the checkpoint has no UNet (no " P_UNET "* tensors)", st_label(st));
        return NULL;
    }
    if (ck_unet_layout_parse(st, &L) != SD_OK)
        return NULL;
    if (L.ctx_dim <= 0) {
        sd_fail(SD_ERR_UNSUPPORTED, "%s: the UNet has no cross-attention (attn2.to_k): not a text-to-image UNet",
                st_label(st));
        return NULL;
    }
    bool sd2 = arch == SD_ARCH_SD2, xl = arch == SD_ARCH_SDXL;
    if (xl && (L.add_in <= 0 || L.add_dim != L.time_dim)) {
        sd_fail(SD_ERR_FORMAT, "%s: an SDXL UNet needs label_emb.0.0.weight [%lld, *] (its text_time added "
                "conditioning)", st_label(st), (long long)L.time_dim);
        return NULL;
    }
    const char *down[MAX_LEVELS], *up[MAX_LEVELS];
    int heads[MAX_LEVELS], depth = 0;
    bool depth_uniform = true;
    int depths[MAX_LEVELS];
    for (int i = 0; i < L.levels; i++) {
        down[i] = L.down_attn[i] ? "CrossAttnDownBlock2D" : "DownBlock2D";
        up[i] = L.up_attn[i] ? "CrossAttnUpBlock2D" : "UpBlock2D";
        heads[i] = L.ch[i] % 64 == 0 && L.ch[i] >= 64 ? L.ch[i] / 64 : 1;
        if (L.tdepth[i]) {
            if (depth && depth != L.tdepth[i])
                depth_uniform = false;
            depth = depth ? depth : L.tdepth[i];
        }
    }
    for (int i = 0; i < L.levels; i++)
        depths[i] = L.tdepth[i] ? L.tdepth[i] : 1;
    int vae_scale = 1 << (ck_vae_down_levels(st) > 0 ? ck_vae_down_levels(st) - 1 : 3);

    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    j_str(&b, "_class_name", "UNet2DConditionModel");
    j_str(&b, "act_fn", "silu");
    if (xl) {
        /* pooled width P (text_projection [D,P]) + 6 time ids x D_t; without the encoder SDXL's 1280 */
        const sd_st_tensor *tp = sd_st_find(st, P_XL_OCLIP "text_projection");
        int64_t pooled = tp && tp->ndim == 2 ? tp->shape[1] : 1280;
        int64_t tdim = (L.add_in - pooled) / SD_UNET_TIME_IDS;
        if (tdim <= 0 || pooled + SD_UNET_TIME_IDS * tdim != L.add_in) {
            cJSON_Delete(b.o);
            sd_fail(SD_ERR_FORMAT, "%s: the UNet's added conditioning takes %lld values, which is not the pooled "
                    "text embedding (%lld) + 6 time ids", st_label(st), (long long)L.add_in, (long long)pooled);
            return NULL;
        }
        j_str(&b, "addition_embed_type", "text_time");
        j_num(&b, "addition_time_embed_dim", (double)tdim);
        j_num(&b, "projection_class_embeddings_input_dim", (double)L.add_in);
    }
    if (sd2 || xl)
        j_ints(&b, "attention_head_dim", heads, L.levels);
    else
        j_num(&b, "attention_head_dim", 8);
    j_ints(&b, "block_out_channels", L.ch, L.levels);
    j_bool(&b, "center_input_sample", false);
    j_num(&b, "cross_attention_dim", (double)L.ctx_dim);
    j_strs(&b, "down_block_types", down, L.levels);
    j_num(&b, "downsample_padding", 1);
    j_bool(&b, "flip_sin_to_cos", true);
    j_num(&b, "freq_shift", 0);
    j_num(&b, "in_channels", L.in_ch);
    j_num(&b, "layers_per_block", L.lpb);
    j_num(&b, "mid_block_scale_factor", 1);
    if (L.has_mid)
        j_str(&b, "mid_block_type", L.mid_attn ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D");
    else /* BK-SDM / SDXS / segmind tiny-sd style: no mid block */
        j_null(&b, "mid_block_type");
    j_num(&b, "norm_eps", 1e-5);
    j_num(&b, "norm_num_groups", 32);
    j_num(&b, "out_channels", L.out_ch);
    j_num(&b, "sample_size", image_size(st, arch) / vae_scale);
    if (L.time_dim != 4 * (int64_t)L.model_ch)
        j_num(&b, "time_embedding_dim", (double)L.time_dim);
    else
        j_null(&b, "time_embedding_dim");
    if (!L.uniform_depth) { /* distilled SDXL UNets (SSD-1B, Vega): a depth per attention */
        int dd[MAX_LEVELS][MAX_LPB + 1];
        for (int i = 0; i < L.levels; i++)
            for (int l = 0; l < L.lpb; l++)
                dd[i][l] = L.down_depth[i][l];
        j_depths(&b, "reverse_transformer_layers_per_block", (const int(*)[MAX_LPB + 1])L.up_depth, L.levels,
                 L.lpb + 1);
        j_depths(&b, "transformer_layers_per_block", (const int(*)[MAX_LPB + 1])dd, L.levels, L.lpb);
    } else if (depth_uniform)
        j_num(&b, "transformer_layers_per_block", depth ? depth : 1);
    else
        j_ints(&b, "transformer_layers_per_block", depths, L.levels);
    j_strs(&b, "up_block_types", up, L.levels);
    j_bool(&b, "upcast_attention", sd2);
    j_bool(&b, "use_linear_projection", L.linear_proj);
    return j_finish(&b);
}

cJSON *sd_ckpt_vae_config(const sd_safetensors *st, sd_arch arch)
{
    if (config_arch(st, &arch) != SD_OK)
        return NULL;
    const char *lab = st_label(st);
    const sd_st_tensor *ein = sd_st_find(st, P_VAE "encoder.conv_in.weight");
    const sd_st_tensor *dout = sd_st_find(st, P_VAE "decoder.conv_out.weight");
    const sd_st_tensor *din = sd_st_find(st, P_VAE "decoder.conv_in.weight");
    if (!ein || ein->ndim != 4 || !dout || dout->ndim != 4 || !din || din->ndim != 4) {
        sd_fail(has_prefix_key(st, P_VAE) ? SD_ERR_FORMAT : SD_ERR_NOT_FOUND,
                "%s: the checkpoint has no complete VAE (first_stage_model.encoder.conv_in.weight, "
                "decoder.conv_in.weight, decoder.conv_out.weight as 4-d convs)",
                lab);
        return NULL;
    }
    int levels = ck_vae_down_levels(st);
    if (levels < 1 || levels > MAX_LEVELS || ck_vae_up_levels(st) != levels) {
        sd_fail(SD_ERR_FORMAT, "%s: VAE encoder has %d levels and decoder %d: expected equal, 1..%d", lab, levels,
                ck_vae_up_levels(st), MAX_LEVELS);
        return NULL;
    }
    int ch[MAX_LEVELS], lpb = 0;
    for (int i = 0; i < levels; i++) {
        const sd_st_tensor *c = findf(st, P_VAE "encoder.down.%d.block.0.conv2.weight", i);
        if (!c || c->ndim != 4) {
            sd_fail(SD_ERR_FORMAT, "%s: VAE encoder.down.%d.block.0.conv2.weight is missing", lab, i);
            return NULL;
        }
        ch[i] = (int)c->shape[0];
    }
    while (lpb < 64 && findf(st, P_VAE "encoder.down.0.block.%d.conv1.weight", lpb))
        lpb++;
    const char *down[MAX_LEVELS], *up[MAX_LEVELS];
    for (int i = 0; i < levels; i++) {
        down[i] = "DownEncoderBlock2D";
        up[i] = "UpDecoderBlock2D";
    }
    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    j_str(&b, "_class_name", "AutoencoderKL");
    j_str(&b, "act_fn", "silu");
    j_ints(&b, "block_out_channels", ch, levels);
    j_strs(&b, "down_block_types", down, levels);
    j_bool(&b, "force_upcast", true);
    j_num(&b, "in_channels", (double)ein->shape[1]);
    j_num(&b, "latent_channels", (double)din->shape[1]);
    j_num(&b, "layers_per_block", lpb);
    j_bool(&b, "mid_block_add_attention", sd_st_find(st, P_VAE "decoder.mid.attn_1.q.weight") != NULL);
    j_num(&b, "norm_num_groups", 32);
    j_num(&b, "out_channels", (double)dout->shape[0]);
    j_num(&b, "sample_size", image_size(st, arch));
    j_num(&b, "scaling_factor", arch == SD_ARCH_SDXL ? 0.13025 : 0.18215);
    j_strs(&b, "up_block_types", up, levels);
    j_bool(&b, "use_post_quant_conv", sd_st_find(st, P_VAE "post_quant_conv.weight") != NULL);
    j_bool(&b, "use_quant_conv", sd_st_find(st, P_VAE "quant_conv.weight") != NULL);
    return j_finish(&b);
}

static cJSON *text_config(const sd_safetensors *st, sd_arch arch, comp c)
{
    if (config_arch(st, &arch) != SD_OK)
        return NULL;
    const char *lab = st_label(st), *pre = ck_comp_prefix(c, arch);
    if (!pre) {
        sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: an %s checkpoint has no second text encoder", lab, sd_arch_name(arch));
        return NULL;
    }
    bool oclip = ck_is_oclip(c, arch);
    const sd_st_tensor *tok, *pos, *fc1, *proj = NULL;
    if (oclip) {
        tok = findf(st, "%stoken_embedding.weight", pre);
        pos = findf(st, "%spositional_embedding", pre);
        fc1 = findf(st, "%stransformer.resblocks.0.mlp.c_fc.weight", pre);
        if (c == C_TEXT2 && (!(proj = findf(st, "%stext_projection", pre)) || proj->ndim != 2))
            proj = NULL, tok = NULL; /* SDXL's pooled embedding needs it */
    } else {
        char tl[NAME_CAP];
        snprintf(tl, sizeof tl, "%stext_model.embeddings.token_embedding.weight", pre);
        const char *tm = sd_st_find(st, tl) ? "text_model." : "";
        tok = findf(st, "%s%sembeddings.token_embedding.weight", pre, tm);
        pos = findf(st, "%s%sembeddings.position_embedding.weight", pre, tm);
        fc1 = findf(st, "%s%sencoder.layers.0.mlp.fc1.weight", pre, tm);
    }
    if (!tok || tok->ndim != 2 || !pos || pos->ndim != 2 || !fc1 || fc1->ndim != 2) {
        sd_fail(has_prefix_key(st, pre) ? SD_ERR_FORMAT : SD_ERR_NOT_FOUND,
                "%s: the checkpoint has no complete %s text encoder (%s*: token/position embeddings and layer 0 "
                "MLP%s)", lab, c == C_TEXT2 ? "second (OpenCLIP ViT-bigG)" : oclip ? "OpenCLIP (SD2)" : "CLIP", pre,
                c == C_TEXT2 ? ", text_projection" : "");
        return NULL;
    }
    int64_t hidden = tok->shape[1];
    sd_ckpt_info info;
    ck_info_fill_text(st, c, arch, &info);
    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    const char *archs[1] = {proj ? "CLIPTextModelWithProjection" : "CLIPTextModel"};
    j_strs(&b, "architectures", archs, 1);
    j_num(&b, "attention_dropout", 0.0);
    j_num(&b, "bos_token_id", 0);
    j_num(&b, "eos_token_id", 2);
    j_str(&b, "hidden_act", oclip ? "gelu" : "quick_gelu");
    j_num(&b, "hidden_size", (double)hidden);
    j_num(&b, "initializer_factor", 1.0);
    j_num(&b, "initializer_range", 0.02);
    j_num(&b, "intermediate_size", (double)fc1->shape[0]);
    j_num(&b, "layer_norm_eps", 1e-5);
    j_num(&b, "max_position_embeddings", (double)pos->shape[0]);
    j_str(&b, "model_type", "clip_text_model");
    j_num(&b, "num_attention_heads", hidden % 64 == 0 ? (double)(hidden / 64) : 1.0);
    j_num(&b, "num_hidden_layers", info.text_layers);
    j_num(&b, "pad_token_id", 1);
    j_num(&b, "projection_dim", proj ? (double)proj->shape[1] : oclip ? 512 : 768);
    j_str(&b, "torch_dtype", "float32");
    j_num(&b, "vocab_size", (double)tok->shape[0]);
    return j_finish(&b);
}

cJSON *sd_ckpt_text_config(const sd_safetensors *st, sd_arch arch) { return text_config(st, arch, C_TEXT); }

cJSON *sd_ckpt_text2_config(const sd_safetensors *st, sd_arch arch) { return text_config(st, arch, C_TEXT2); }

const char *sd_ckpt_prediction_type(const sd_safetensors *st, sd_arch arch, bool *known)
{
    bool k = false;
    const char *res = arch == SD_ARCH_SD2 ? "v_prediction" : "epsilon";
    const char *pt = st ? sd_st_meta(st, "modelspec.prediction_type") : NULL;
    const char *ar = st ? sd_st_meta(st, "modelspec.architecture") : NULL;
    if (pt && (!strcmp(pt, "v") || !strcmp(pt, "v_prediction") || !strcmp(pt, "v-prediction"))) {
        res = "v_prediction";
        k = true;
    } else if (pt && (!strcmp(pt, "epsilon") || !strcmp(pt, "eps"))) {
        res = "epsilon";
        k = true;
    } else if (ar && starts(ar, "stable-diffusion-v2")) {
        size_t n = strlen(ar);
        k = true;
        res = n >= 2 && !strcmp(ar + n - 2, "-v") ? "v_prediction" : "epsilon";
    } else if (ar && starts(ar, "stable-diffusion-v1")) {
        k = true;
        res = "epsilon";
    }
    if (known)
        *known = k;
    return res;
}

cJSON *sd_ckpt_scheduler_config(const sd_safetensors *st, sd_arch arch)
{
    if (config_arch(st, &arch) != SD_OK)
        return NULL;
    bool sd2 = arch == SD_ARCH_SD2, xl = arch == SD_ARCH_SDXL;
    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    j_str(&b, "_class_name", xl ? "EulerDiscreteScheduler" : sd2 ? "DDIMScheduler" : "PNDMScheduler");
    if (xl) { /* stable-diffusion-xl-base-1.0's */
        j_str(&b, "interpolation_type", "linear");
        j_bool(&b, "use_karras_sigmas", false);
    }
    j_num(&b, "beta_end", 0.012);
    j_str(&b, "beta_schedule", "scaled_linear");
    j_num(&b, "beta_start", 0.00085);
    j_bool(&b, "clip_sample", false);
    j_num(&b, "num_train_timesteps", 1000);
    j_str(&b, "prediction_type", sd_ckpt_prediction_type(st, arch, NULL));
    j_bool(&b, "set_alpha_to_one", false);
    j_bool(&b, "skip_prk_steps", true);
    j_num(&b, "steps_offset", 1);
    j_str(&b, "timestep_spacing", "leading");
    j_null(&b, "trained_betas");
    return j_finish(&b);
}
