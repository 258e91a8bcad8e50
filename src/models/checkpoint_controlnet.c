/* Single-file ControlNets of the lllyasviel ControlNet v1.0 / v1.1 kind (cldm's ControlNet module: keys
 * control_model.* as saved from a whole cldm model, or the same keys without the prefix as distributed on
 * their own, e.g. control_v11p_sd15_canny.safetensors), mapped onto the diffusers ControlNetModel names as
 * diffusers' convert_controlnet_checkpoint does (see checkpoint.h). */
#include "models/checkpoint_impl.h"

#define P_CNET "control_model."

/* "" or "control_model." when the file is a ControlNet, else NULL */
static const char *cnet_prefix(const sd_safetensors *st)
{
    if (sd_st_find(st, P_CNET "input_hint_block.0.weight"))
        return P_CNET;
    if (sd_st_find(st, "input_hint_block.0.weight"))
        return "";
    return NULL;
}

bool sd_ckpt_is_controlnet(const sd_safetensors *st) { return cnet_prefix(st) != NULL; }

/* the largest conv index k of input_hint_block.k.weight (the last is conv_out) */
static int hint_last(const sd_safetensors *st, const char *pre)
{
    int last = -1;
    for (int k = 0; k < 64; k += 2)
        if (findf(st, "%sinput_hint_block.%d.weight", pre, k))
            last = k;
    return last;
}

sd_status sd_ckpt_controlnet_layout(const sd_safetensors *st, sd_ckpt_cnet_layout *L)
{
    memset(L, 0, sizeof *L);
    const char *pre = cnet_prefix(st), *lab = st_label(st);
    if (!pre)
        return sd_fail(SD_ERR_FORMAT, "%s: not a ControlNet (no input_hint_block.0.weight, with or without the "
                       "control_model. prefix)", lab);
    int last = hint_last(st, pre);
    /* convs at 0, 2, ..., last: conv_in, then per level a same-size and a stride-2 conv, conv_out */
    if (last < 2 || (last / 2 - 1) % 2)
        return sd_fail(SD_ERR_FORMAT, "%s: input_hint_block has convs 0..%d: expected conv_in, pairs of convs and "
                       "conv_out (an even number of convs in between)", lab, last);
    L->n_cond = (last / 2 - 1) / 2 + 1;
    if (L->n_cond > 8)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: input_hint_block has %d levels", lab, L->n_cond);
    for (int i = 0; i < L->n_cond; i++) {
        const sd_st_tensor *t = findf(st, "%sinput_hint_block.%d.weight", pre, i == 0 ? 0 : 4 * i);
        if (!t || t->ndim != 4)
            return sd_fail(SD_ERR_FORMAT, "%s: input_hint_block.%d.weight is missing or not a conv", lab, 4 * i);
        L->cond_channels[i] = t->shape[0];
        if (i == 0)
            L->conditioning_channels = t->shape[1];
    }
    while (findf(st, "%szero_convs.%d.0.weight", pre, L->n_zero))
        L->n_zero++;
    const sd_st_tensor *k = NULL;
    for (size_t i = 0; i < st->n_tensors && !k; i++)
        if (starts(st->tensors[i].name, pre) && ends(st->tensors[i].name, ".attn2.to_k.weight") &&
            st->tensors[i].ndim == 2)
            k = &st->tensors[i];
    L->ctx_dim = k ? k->shape[1] : 0;
    const sd_st_tensor *ci = findf(st, "%sinput_blocks.0.0.weight", pre);
    L->model_ch = ci && ci->ndim == 4 ? ci->shape[0] : 0;
    L->in_ch = ci && ci->ndim == 4 ? ci->shape[1] : 0;
    L->sdxl = findf(st, "%slabel_emb.0.0.weight", pre) != NULL;
    return SD_OK;
}

/* key without the prefix -> diffusers name */
static int map_key(const unet_layout *U, int hint_last_idx, const char *p, alias_out *o)
{
    int a;
    const char *q = p;
    if (take(&q, "input_hint_block.") && take_index(&q, &a) && is_wb(q)) {
        if (a % 2)
            return K_UNKNOWN;
        if (a == 0)
            return ck_out1(o, "controlnet_cond_embedding.conv_in.%s", q);
        if (a == hint_last_idx)
            return ck_out1(o, "controlnet_cond_embedding.conv_out.%s", q);
        return ck_out1(o, "controlnet_cond_embedding.blocks.%d.%s", a / 2 - 1, q);
    }
    q = p;
    if (take(&q, "zero_convs.") && take_index(&q, &a) && take(&q, "0.") && is_wb(q))
        return ck_out1(o, "controlnet_down_blocks.%d.%s", a, q);
    q = p;
    if (take(&q, "middle_block_out.0.") && is_wb(q))
        return ck_out1(o, "controlnet_mid_block.%s", q);
    /* the UNet's down path, mid block, time embedding and SDXL added embedding: the UNet table */
    if (!starts(p, "time_embed.") && !starts(p, "input_blocks.") && !starts(p, "middle_block.") &&
        !starts(p, "label_emb."))
        return K_UNKNOWN;
    char full[NAME_CAP];
    if ((size_t)snprintf(full, sizeof full, P_UNET "%s", p) >= sizeof full)
        return K_UNKNOWN;
    int r = ck_map_unet_key(U, full, o);
    o->row0 = 0;
    return r;
}

sd_status sd_ckpt_map_controlnet(const sd_safetensors *st, int layers_per_block, sd_weights *w, char **unknown)
{
    if (unknown)
        *unknown = NULL;
    const char *pre = cnet_prefix(st);
    if (!pre)
        return sd_fail(SD_ERR_FORMAT, "%s: not a ControlNet", st_label(st));
    unet_layout U;
    memset(&U, 0, sizeof U);
    U.lpb = layers_per_block;
    U.text_time = true; /* an SDXL ControlNet's label_emb; the model's UNet config decides whether it is used */
    int last = hint_last(st, pre);
    size_t pl = strlen(pre);
    for (size_t i = 0; i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        if (strncmp(t->name, pre, pl))
            continue;
        alias_out o;
        int r = map_key(&U, last, t->name + pl, &o);
        if (r == K_UNKNOWN) {
            if (unknown && !*unknown)
                *unknown = sd_strdup(t->name);
            continue;
        }
        if (r == K_IGNORED)
            continue;
        SD_TRY(sd_weights_add_alias(w, o.name, t, 0, t->ndim ? t->shape[0] : 1));
    }
    return SD_OK;
}
