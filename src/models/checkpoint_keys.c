/* Single-file checkpoints: the UNet layout read from the tensors, and the key tables that name
 * each LDM tensor's diffusers weight (UNet, VAE, CLIP, OpenCLIP). See checkpoint.h. */
#include "models/checkpoint_impl.h"

/* ------------------------------------------------------------------ UNet layout */

/* transformer blocks of the attention in <kind>.<i>.1 (middle_block.1 when i < 0) */
static int block_depth(const sd_safetensors *st, const char *kind, int i)
{
    int d = 0;
    while (d < 64 && (i < 0 ? findf(st, P_UNET "%s.1.transformer_blocks.%d.norm1.weight", kind, d)
                            : findf(st, P_UNET "%s.%d.1.transformer_blocks.%d.norm1.weight", kind, i, d)))
        d++;
    return d;
}

sd_status ck_unet_layout_parse(const sd_safetensors *st, unet_layout *L)
{
    memset(L, 0, sizeof *L);
    const char *lab = st_label(st);
    const sd_st_tensor *cin = sd_st_find(st, P_UNET "input_blocks.0.0.weight");
    const sd_st_tensor *cout = sd_st_find(st, P_UNET "out.2.weight");
    const sd_st_tensor *te = sd_st_find(st, P_UNET "time_embed.0.weight");
    if (!cin || cin->ndim != 4 || !cout || cout->ndim != 4 || !te || te->ndim != 2)
        return sd_fail(SD_ERR_FORMAT,
                       "%s: the UNet (model.diffusion_model.*) lacks input_blocks.0.0.weight, out.2.weight or "
                       "time_embed.0.weight of the expected rank: not a Stable Diffusion UNet",
                       lab);
    L->model_ch = (int)cin->shape[0];
    L->in_ch = (int)cin->shape[1];
    L->out_ch = (int)cout->shape[0];
    L->time_dim = te->shape[0];

    /* Per input block: 1 = resnet, 2 = downsample op. */
    unsigned char kind[MAX_BLOCK_INDEX] = {0};
    bool attn_in[MAX_BLOCK_INDEX] = {0}, attn_out[MAX_BLOCK_INDEX] = {0};
    int max_in = 0, max_out = -1;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *n = st->tensors[i].name;
        if (!starts(n, P_UNET))
            continue;
        const char *p = n + strlen(P_UNET);
        int a, b;
        if (take(&p, "input_blocks.")) {
            if (!take_index(&p, &a) || !take_index(&p, &b))
                continue;
            if (a >= MAX_BLOCK_INDEX)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet input block index %d is out of range", lab, a);
            if (a > max_in)
                max_in = a;
            if (a == 0)
                continue;
            if (b == 0)
                kind[a] = starts(p, "op.") ? 2 : (kind[a] ? kind[a] : 1);
            else if (b == 1)
                attn_in[a] = true;
            if (b == 1 && starts(p, "proj_in.weight"))
                L->linear_proj = st->tensors[i].ndim == 2;
        } else if (take(&p, "output_blocks.")) {
            if (!take_index(&p, &a) || !take_index(&p, &b))
                continue;
            if (a >= MAX_BLOCK_INDEX)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet output block index %d is out of range", lab, a);
            if (a > max_out)
                max_out = a;
            if (b == 1 && !starts(p, "conv."))
                attn_out[a] = true;
        } else if (take(&p, "middle_block.")) {
            L->has_mid = true;
            L->mid_attn = L->mid_attn || take(&p, "1.");
        }
        if (L->ctx_dim <= 0 && ends(n, ".attn2.to_k.weight") && st->tensors[i].ndim == 2)
            L->ctx_dim = st->tensors[i].shape[1];
    }
    /* Walk the input blocks: resnets of a level, then its downsampler. */
    int level = 0, count = 0;
    for (int i = 1; i <= max_in; i++) {
        if (kind[i] == 0)
            return sd_fail(SD_ERR_FORMAT, "%s: UNet input_blocks.%d is missing (blocks 0..%d expected)", lab, i,
                           max_in);
        if (kind[i] == 2) {
            if (count == 0)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet level %d has no resnet before its downsampler", lab,
                               level);
            if (L->lpb && count != L->lpb)
                return sd_fail(SD_ERR_UNSUPPORTED,
                               "%s: UNet levels have different numbers of resnets (%d and %d); diffusers' "
                               "UNet2DConditionModel cannot represent that",
                               lab, L->lpb, count);
            L->lpb = count;
            level++;
            count = 0;
            if (level >= MAX_LEVELS)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet has more than %d levels", lab, MAX_LEVELS);
            continue;
        }
        const sd_st_tensor *c2 = findf(st, P_UNET "input_blocks.%d.0.out_layers.3.weight", i);
        if (!c2 || c2->ndim != 4)
            return sd_fail(SD_ERR_FORMAT, "%s: UNet input_blocks.%d.0.out_layers.3.weight is missing or not a conv",
                           lab, i);
        bool attn = attn_in[i];
        if (count == 0) {
            L->ch[level] = (int)c2->shape[0];
            L->down_attn[level] = attn;
        } else if (L->ch[level] != c2->shape[0] || L->down_attn[level] != attn) {
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: UNet input_blocks.%d differs from the other blocks of its level (channels or "
                           "attention)",
                           lab, i);
        }
        if (count >= MAX_LPB)
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet level %d has more than %d resnets", lab, level, MAX_LPB);
        if (attn) {
            int depth = block_depth(st, "input_blocks", i);
            if (count == 0)
                L->tdepth[level] = depth;
            L->down_depth[level][count] = depth;
        }
        count++;
    }
    if (count == 0)
        return sd_fail(SD_ERR_FORMAT, "%s: UNet has no resnet in its last level (input_blocks up to %d)", lab,
                       max_in);
    if (L->lpb && count != L->lpb)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: the last UNet level has %d resnets, the others %d", lab, count,
                       L->lpb);
    L->lpb = count;
    L->levels = level + 1;
    L->n_output = max_out + 1;
    if (L->n_output != L->levels * (L->lpb + 1))
        return sd_fail(SD_ERR_FORMAT, "%s: UNet has %d output blocks, expected %d for %d levels of %d resnets", lab,
                       L->n_output, L->levels * (L->lpb + 1), L->levels, L->lpb);
    for (int b = 0; b < L->levels; b++) {
        bool a0 = attn_out[b * (L->lpb + 1)];
        for (int l = 1; l <= L->lpb; l++)
            if (attn_out[b * (L->lpb + 1) + l] != a0)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet output blocks of up level %d differ in attention", lab,
                               b);
        L->up_attn[b] = a0;
    }
    /* per-attention depths (distilled UNets such as SSD-1B / Vega differ per attention) and the rule
     * of a plain list: every attention of a level as deep as the level's first, the up path mirrored, the mid
     * block as the last level */
    L->uniform_depth = true;
    for (int b = 0; b < L->levels; b++) {
        int want = L->tdepth[b] ? L->tdepth[b] : 1, up_want = L->tdepth[L->levels - 1 - b];
        up_want = up_want ? up_want : 1;
        for (int l = 0; l < L->lpb; l++) {
            if (!L->down_attn[b])
                L->down_depth[b][l] = 1;
            L->uniform_depth &= L->down_depth[b][l] == want;
        }
        for (int l = 0; l <= L->lpb; l++) {
            L->up_depth[b][l] = L->up_attn[b] ? block_depth(st, "output_blocks", b * (L->lpb + 1) + l) : 1;
            L->uniform_depth &= !L->up_attn[b] || L->up_depth[b][l] == up_want;
        }
    }
    L->mid_depth = L->mid_attn ? block_depth(st, "middle_block", -1) : 1;
    int last = L->tdepth[L->levels - 1] ? L->tdepth[L->levels - 1] : 1;
    L->uniform_depth &= !L->mid_attn || L->mid_depth == last;
    if (L->mid_attn && L->mid_depth != L->down_depth[L->levels - 1][0])
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: the UNet's mid block has %d transformer blocks and its last level's "
                       "first attention %d: diffusers' UNet2DConditionModel cannot represent that", lab, L->mid_depth,
                       L->down_depth[L->levels - 1][0]);
    const sd_st_tensor *le = sd_st_find(st, P_UNET "label_emb.0.0.weight");
    if (le && le->ndim == 2) {
        L->add_in = le->shape[1];
        L->add_dim = le->shape[0];
    }
    return SD_OK;
}

/* ------------------------------------------------------------------ key classification */

int ck_out1(alias_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->name, sizeof o->name, fmt, ap);
    va_end(ap);
    o->row0 = 0;
    o->rows = -1;
    o->transpose = false;
    return (n < 0 || (size_t)n >= sizeof o->name) ? K_UNKNOWN : 1;
}

/* UNet resnet tail: returns the diffusers tail or NULL. */
static const char *unet_resnet_tail(const char *t, char *buf, size_t cap)
{
    static const char *const map[][2] = {
        {"in_layers.0.", "norm1."},      {"in_layers.2.", "conv1."},   {"out_layers.0.", "norm2."},
        {"out_layers.3.", "conv2."},     {"emb_layers.1.", "time_emb_proj."},
        {"skip_connection.", "conv_shortcut."},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(map); i++) {
        size_t n = strlen(map[i][0]);
        if (!strncmp(t, map[i][0], n) && is_wb(t + n)) {
            snprintf(buf, cap, "%s%s", map[i][1], t + n);
            return buf;
        }
    }
    return NULL;
}

/* Spatial transformer tail (same names in LDM and diffusers): valid? */
static bool unet_attn_tail_ok(const char *t)
{
    if ((take(&t, "norm.") || take(&t, "proj_in.") || take(&t, "proj_out.")) && is_wb(t))
        return true;
    int k;
    if (!take(&t, "transformer_blocks.") || !take_index(&t, &k))
        return false;
    if ((take(&t, "norm1.") || take(&t, "norm2.") || take(&t, "norm3.") || take(&t, "ff.net.0.proj.") ||
         take(&t, "ff.net.2.")) &&
        is_wb(t))
        return true;
    if (take(&t, "attn1.") || take(&t, "attn2.")) {
        if ((take(&t, "to_q.") || take(&t, "to_k.") || take(&t, "to_v.") || take(&t, "to_out.0.")) && is_wb(t))
            return true;
    }
    return false;
}

int ck_map_unet_key(const unet_layout *L, const char *key, alias_out *o)
{
    const char *p = key + strlen(P_UNET);
    if (!L->text_time && starts(p, "label_emb."))
        return K_UNKNOWN;
    static const char *const fixed[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."},              {"out.0.", "conv_norm_out."},
        {"out.2.", "conv_out."},                        {"label_emb.0.0.", "add_embedding.linear_1."},
        {"label_emb.0.2.", "add_embedding.linear_2."},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(fixed); i++) {
        size_t n = strlen(fixed[i][0]);
        if (!strncmp(p, fixed[i][0], n))
            return is_wb(p + n) ? ck_out1(o, "%s%s", fixed[i][1], p + n) : K_UNKNOWN;
    }
    char tb[64];
    int a, b;
    const char *t;
    if (take(&p, "input_blocks.")) {
        if (!take_index(&p, &a) || !take_index(&p, &b) || a < 1)
            return K_UNKNOWN;
        int blk = (a - 1) / (L->lpb + 1), lay = (a - 1) % (L->lpb + 1);
        if (b == 0 && take(&p, "op."))
            return is_wb(p) ? ck_out1(o, "down_blocks.%d.downsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (b == 0 && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return ck_out1(o, "down_blocks.%d.resnets.%d.%s", blk, lay, t);
        if (b == 1 && unet_attn_tail_ok(p))
            return ck_out1(o, "down_blocks.%d.attentions.%d.%s", blk, lay, p);
        return K_UNKNOWN;
    }
    if (take(&p, "middle_block.")) {
        if (!take_index(&p, &a))
            return K_UNKNOWN;
        if ((a == 0 || a == 2) && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return ck_out1(o, "mid_block.resnets.%d.%s", a / 2, t);
        if (a == 1 && unet_attn_tail_ok(p))
            return ck_out1(o, "mid_block.attentions.0.%s", p);
        return K_UNKNOWN;
    }
    if (take(&p, "output_blocks.")) {
        if (!take_index(&p, &a) || !take_index(&p, &b))
            return K_UNKNOWN;
        int blk = a / (L->lpb + 1), lay = a % (L->lpb + 1);
        if ((b == 1 || b == 2) && take(&p, "conv."))
            return is_wb(p) ? ck_out1(o, "up_blocks.%d.upsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (b == 0 && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return ck_out1(o, "up_blocks.%d.resnets.%d.%s", blk, lay, t);
        if (b == 1 && unet_attn_tail_ok(p))
            return ck_out1(o, "up_blocks.%d.attentions.%d.%s", blk, lay, p);
        return K_UNKNOWN;
    }
    return K_UNKNOWN;
}

/* VAE resnet tail */
static const char *vae_resnet_tail(const char *t, char *buf, size_t cap)
{
    if (take(&t, "nin_shortcut.")) {
        if (!is_wb(t))
            return NULL;
        snprintf(buf, cap, "conv_shortcut.%s", t);
        return buf;
    }
    const char *s = t;
    if ((take(&s, "norm1.") || take(&s, "conv1.") || take(&s, "norm2.") || take(&s, "conv2.")) && is_wb(s)) {
        snprintf(buf, cap, "%s", t);
        return buf;
    }
    return NULL;
}

static int map_vae_mid(const char *coder, const char *p, alias_out *o)
{
    char tb[64];
    const char *t;
    int a;
    if (take(&p, "block_")) {
        if (!take_index(&p, &a) || (a != 1 && a != 2) || !(t = vae_resnet_tail(p, tb, sizeof tb)))
            return K_UNKNOWN;
        return ck_out1(o, "%s.mid_block.resnets.%d.%s", coder, a - 1, t);
    }
    if (take(&p, "attn_1.")) {
        static const char *const m[][2] = {
            {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."},
        };
        for (size_t i = 0; i < SD_ARRAY_LEN(m); i++) {
            size_t n = strlen(m[i][0]);
            if (!strncmp(p, m[i][0], n) && is_wb(p + n))
                return ck_out1(o, "%s.mid_block.attentions.0.%s%s", coder, m[i][1], p + n);
        }
    }
    return K_UNKNOWN;
}

int ck_map_vae_key(int n_up, const char *key, alias_out *o)
{
    const char *p = key + strlen(P_VAE);
    if (starts(p, "loss."))
        return K_IGNORED; /* training-only discriminator/logvar, never in inference */
    static const char *const fixed[][2] = {
        {"encoder.conv_in.", "encoder.conv_in."},   {"encoder.conv_out.", "encoder.conv_out."},
        {"encoder.norm_out.", "encoder.conv_norm_out."}, {"decoder.conv_in.", "decoder.conv_in."},
        {"decoder.conv_out.", "decoder.conv_out."}, {"decoder.norm_out.", "decoder.conv_norm_out."},
        {"quant_conv.", "quant_conv."},             {"post_quant_conv.", "post_quant_conv."},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(fixed); i++) {
        size_t n = strlen(fixed[i][0]);
        if (!strncmp(p, fixed[i][0], n))
            return is_wb(p + n) ? ck_out1(o, "%s%s", fixed[i][1], p + n) : K_UNKNOWN;
    }
    char tb[64];
    const char *t;
    int a, b;
    if (take(&p, "encoder.")) {
        if (take(&p, "mid."))
            return map_vae_mid("encoder", p, o);
        if (!take(&p, "down.") || !take_index(&p, &a))
            return K_UNKNOWN;
        if (take(&p, "downsample.conv."))
            return is_wb(p) ? ck_out1(o, "encoder.down_blocks.%d.downsamplers.0.conv.%s", a, p) : K_UNKNOWN;
        if (take(&p, "block.") && take_index(&p, &b) && (t = vae_resnet_tail(p, tb, sizeof tb)))
            return ck_out1(o, "encoder.down_blocks.%d.resnets.%d.%s", a, b, t);
        return K_UNKNOWN;
    }
    if (take(&p, "decoder.")) {
        if (take(&p, "mid."))
            return map_vae_mid("decoder", p, o);
        if (!take(&p, "up.") || !take_index(&p, &a) || a >= n_up)
            return K_UNKNOWN;
        int blk = n_up - 1 - a;
        if (take(&p, "upsample.conv."))
            return is_wb(p) ? ck_out1(o, "decoder.up_blocks.%d.upsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (take(&p, "block.") && take_index(&p, &b) && (t = vae_resnet_tail(p, tb, sizeof tb)))
            return ck_out1(o, "decoder.up_blocks.%d.resnets.%d.%s", blk, b, t);
        return K_UNKNOWN;
    }
    return K_UNKNOWN;
}

/* Number of decoder.up.K levels (max K + 1), 0 if none. */
int ck_vae_up_levels(const sd_safetensors *st)
{
    int n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *p = st->tensors[i].name;
        int a;
        if (take(&p, P_VAE "decoder.up.") && take_index(&p, &a) && a < MAX_BLOCK_INDEX && a + 1 > n)
            n = a + 1;
    }
    return n;
}

int ck_vae_down_levels(const sd_safetensors *st)
{
    int n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *p = st->tensors[i].name;
        int a;
        if (take(&p, P_VAE "encoder.down.") && take_index(&p, &a) && a < MAX_BLOCK_INDEX && a + 1 > n)
            n = a + 1;
    }
    return n;
}

/* CLIPTextModel tail after "text_model.": valid? */
static bool clip_tail_ok(const char *t)
{
    if (!strcmp(t, "embeddings.token_embedding.weight") || !strcmp(t, "embeddings.position_embedding.weight"))
        return true;
    if (take(&t, "final_layer_norm."))
        return is_wb(t);
    int k;
    if (!take(&t, "encoder.layers.") || !take_index(&t, &k))
        return false;
    return (take(&t, "layer_norm1.") || take(&t, "layer_norm2.") || take(&t, "mlp.fc1.") || take(&t, "mlp.fc2.") ||
            take(&t, "self_attn.q_proj.") || take(&t, "self_attn.k_proj.") || take(&t, "self_attn.v_proj.") ||
            take(&t, "self_attn.out_proj.")) &&
           is_wb(t);
}

int ck_map_clip_key(const char *p, alias_out *o)
{
    take(&p, "text_model."); /* legacy files without the text_model. level get it added */
    if (!strcmp(p, "embeddings.position_ids"))
        return K_IGNORED; /* a buffer (0..76), not a weight; broken in some files */
    if (!clip_tail_ok(p))
        return K_UNKNOWN;
    return ck_out1(o, "text_model.%s", p);
}

bool ck_is_oclip(comp c, sd_arch arch) { return (c == C_TEXT && arch == SD_ARCH_SD2) || c == C_TEXT2; }

/* Number of text encoder blocks of component c in the file (max index + 1). */
int ck_text_blocks(const sd_safetensors *st, comp c, sd_arch arch)
{
    const char *pre = ck_comp_prefix(c, arch);
    bool oclip = ck_is_oclip(c, arch);
    int n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *p = st->tensors[i].name;
        int a;
        bool ok;
        if (!take(&p, pre))
            continue;
        if (oclip)
            ok = take(&p, "transformer.resblocks.");
        else
            ok = take(&p, "text_model.encoder.layers.") || take(&p, "encoder.layers.");
        if (ok && take_index(&p, &a) && a + 1 > n)
            n = a + 1;
    }
    return n;
}

/* The OpenCLIP block that is dropped (-1: none): SD2 pipelines read the penultimate layer of ViT-H as the last
 * hidden state; SDXL reads hidden_states[-2] of the whole tower. */
int ck_oclip_dropped_block(sd_arch arch, int n_blocks) { return arch == SD_ARCH_SD2 && n_blocks == 24 ? 23 : -1; }

int ck_map_oclip_key(int dropped, bool projection, const char *p, const sd_st_tensor *t, alias_out *o)
{
    if (projection && !strcmp(p, "text_projection")) { /* [D,P], used as x @ P: the Linear weight is its transpose */
        if (t->ndim != 2 || ck_out1(o, "text_projection.weight") != 1)
            return K_UNKNOWN;
        o->transpose = true;
        return 1;
    }
    if (!strcmp(p, "text_projection") || !strcmp(p, "logit_scale") || !strcmp(p, "attn_mask"))
        return K_IGNORED;
    if (!strcmp(p, "positional_embedding"))
        return ck_out1(o, "text_model.embeddings.position_embedding.weight");
    if (!strcmp(p, "token_embedding.weight"))
        return ck_out1(o, "text_model.embeddings.token_embedding.weight");
    if (take(&p, "ln_final."))
        return is_wb(p) ? ck_out1(o, "text_model.final_layer_norm.%s", p) : K_UNKNOWN;
    int k;
    if (!take(&p, "transformer.resblocks.") || !take_index(&p, &k))
        return K_UNKNOWN;
    static const char *const m[][2] = {
        {"ln_1.", "layer_norm1."},     {"ln_2.", "layer_norm2."},
        {"mlp.c_fc.", "mlp.fc1."},     {"mlp.c_proj.", "mlp.fc2."},
        {"attn.out_proj.", "self_attn.out_proj."},
    };
    int r = K_UNKNOWN;
    for (size_t i = 0; i < SD_ARRAY_LEN(m); i++) {
        size_t n = strlen(m[i][0]);
        if (!strncmp(p, m[i][0], n) && is_wb(p + n)) {
            r = ck_out1(o, "text_model.encoder.layers.%d.%s%s", k, m[i][1], p + n);
            break;
        }
    }
    if (r == K_UNKNOWN && (!strcmp(p, "attn.in_proj_weight") || !strcmp(p, "attn.in_proj_bias"))) {
        bool w = !strcmp(p, "attn.in_proj_weight");
        if (t->ndim != (w ? 2 : 1) || t->shape[0] % 3 != 0 || t->shape[0] == 0)
            return K_UNKNOWN;
        int64_t d = t->shape[0] / 3;
        static const char qkv[3] = {'q', 'k', 'v'};
        for (int j = 0; j < 3; j++) {
            if (ck_out1(&o[j], "text_model.encoder.layers.%d.self_attn.%c_proj.%s", k, qkv[j], w ? "weight" : "bias") !=
                1)
                return K_UNKNOWN;
            o[j].row0 = j * d;
            o[j].rows = d;
            o[j].transpose = false;
        }
        r = 3;
    }
    if (r > 0 && k == dropped)
        return K_IGNORED;
    return r;
}

/* ------------------------------------------------------------------ kohya LoRA names of the LDM UNet */

bool sd_ckpt_unet_ldm_module(const char *name, int layers_per_block, char *out, size_t cap)
{
    /* the LDM words with underscores; every other '_' separates two path segments */
    static const char *const words[] = {"input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb",
                                        "in_layers", "out_layers", "emb_layers", "skip_connection",
                                        "transformer_blocks", "proj_in", "proj_out", "to_q", "to_k", "to_v",
                                        "to_out"};
    char dotted[NAME_CAP];
    size_t o = (size_t)snprintf(dotted, sizeof dotted, P_UNET);
    const char *p = name;
    while (*p) {
        size_t n = 0;
        for (size_t i = 0; i < SD_ARRAY_LEN(words) && !n; i++) {
            size_t l = strlen(words[i]);
            if (!strncmp(p, words[i], l) && (p[l] == '_' || !p[l]))
                n = l;
        }
        if (!n)
            while (p[n] && p[n] != '_')
                n++;
        if (!n || o + n + 2 >= sizeof dotted)
            return false;
        memcpy(dotted + o, p, n);
        o += n;
        p += n;
        if (*p == '_')
            p++;
        dotted[o++] = *p ? '.' : 0;
    }
    if (o + sizeof "weight" >= sizeof dotted)
        return false;
    memcpy(dotted + o - 1, ".weight", sizeof ".weight");
    unet_layout L;
    memset(&L, 0, sizeof L);
    L.lpb = layers_per_block;
    L.text_time = true;
    alias_out a;
    if (layers_per_block < 1 || ck_map_unet_key(&L, dotted, &a) != 1 || !ends(a.name, ".weight"))
        return false;
    size_t n = strlen(a.name) - strlen(".weight");
    if (n >= cap)
        return false;
    memcpy(out, a.name, n);
    out[n] = 0;
    return true;
}
