/* Single-file (LDM) Stable Diffusion checkpoint -> diffusers names and configs.
 * See checkpoint.h for the mapping rules. */
#include "models/checkpoint_impl.h"

const char *sd_arch_name(sd_arch a)
{
    switch (a) {
    case SD_ARCH_SD1: return "SD1";
    case SD_ARCH_SD2: return "SD2";
    case SD_ARCH_SDXL: return "SDXL";
    default: return "unknown";
    }
}

/* A growable list of owned strings. */
typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

static sd_status strlist_add(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 16;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        l->v = nv;
        l->cap = nc;
    }
    char *d = sd_strdup(s);
    if (!d)
        return SD_ERR_OUT_OF_MEMORY;
    l->v[l->n++] = d;
    return SD_OK;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------------ detection */

sd_status sd_ckpt_detect(const sd_safetensors *st, sd_arch *arch)
{
    *arch = SD_ARCH_UNKNOWN;
    if (has_prefix_key(st, P_SDXL)) {
        *arch = SD_ARCH_SDXL;
        return SD_OK;
    }
    if (has_prefix_key(st, P_OCLIP)) {
        *arch = SD_ARCH_SD2;
        return SD_OK;
    }
    if (has_prefix_key(st, P_CLIP)) {
        *arch = SD_ARCH_SD1;
        return SD_OK;
    }
    /* No text encoder: look at the UNet's cross-attention context width. */
    if (has_prefix_key(st, P_UNET)) {
        int64_t ctx = -1;
        for (size_t i = 0; i < st->n_tensors && ctx < 0; i++) {
            const char *n = st->tensors[i].name;
            if (starts(n, P_UNET) && ends(n, ".attn2.to_k.weight") && st->tensors[i].ndim == 2)
                ctx = st->tensors[i].shape[1];
        }
        if (ctx == 2048 || ctx == 1280 || sd_st_find(st, P_UNET "label_emb.0.0.weight")) {
            *arch = SD_ARCH_SDXL;
            return SD_OK;
        }
        if (ctx == 768) {
            *arch = SD_ARCH_SD1;
            return SD_OK;
        }
        if (ctx == 1024) {
            *arch = SD_ARCH_SD2;
            return SD_OK;
        }
        return sd_fail(SD_ERR_FORMAT,
                       "%s: a Stable Diffusion UNet without its text encoder and with a cross-attention width of "
                       "%lld, which is neither SD1 (768) nor SD2 (1024): cannot tell the architecture; use a full "
                       "checkpoint or a diffusers model folder",
                       st_label(st), (long long)ctx);
    }
    if (has_prefix_key(st, "down_blocks.") || has_prefix_key(st, "text_model.") ||
        has_prefix_key(st, "encoder.down_blocks.") || has_prefix_key(st, "conv_in.weight"))
        return sd_fail(SD_ERR_FORMAT,
                       "%s: this looks like one component of a diffusers model (diffusers key names), not a "
                       "single-file Stable Diffusion checkpoint: pass the model folder (the one with "
                       "model_index.json) instead",
                       st_label(st));
    return sd_fail(SD_ERR_FORMAT,
                   "%s: not a single-file Stable Diffusion checkpoint (no model.diffusion_model.*, "
                   "first_stage_model.* or cond_stage_model.* tensors); pass an original SD1.x/SD2.x "
                   ".safetensors file or a diffusers model folder",
                   st_label(st));
}

sd_status sd_ckpt_sdxl_check(const sd_safetensors *st)
{
    const sd_st_tensor *le = sd_st_find(st, P_UNET "label_emb.0.0.weight");
    bool has_te1 = has_prefix_key(st, P_XL_CLIP), has_te2 = has_prefix_key(st, P_XL_OCLIP);
    bool aesthetic = le && le->ndim == 2 && le->shape[1] == 2560; /* 1280 pooled + 5 x 256: aesthetic score */
    if ((has_te2 && !has_te1) || aesthetic)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: this is an SDXL refiner checkpoint (%s): refiners are not "
                       "supported; use an SDXL base, turbo or distilled checkpoint (conditioner.embedders.0 and .1)",
                       st_label(st), aesthetic ? "its UNet's added conditioning takes an aesthetic score, 2560 wide"
                                               : "only the OpenCLIP text encoder, conditioner.embedders.1");
    return SD_OK;
}

/* ------------------------------------------------------------------ mapping driver */

const char *ck_comp_prefix(comp c, sd_arch arch)
{
    if (c == C_UNET || c == C_VAE)
        return c == C_UNET ? P_UNET : P_VAE;
    if (arch == SD_ARCH_SDXL)
        return c == C_TEXT ? P_XL_CLIP : P_XL_OCLIP;
    return c == C_TEXT2 ? NULL : arch == SD_ARCH_SD2 ? P_OCLIP : P_CLIP;
}

static const char *comp_name(comp c)
{
    static const char *const n[C_COUNT] = {"UNet", "VAE", "text encoder", "second text encoder"};
    return n[c];
}

/* Maps one component. w may be NULL (dry run). */
static sd_status map_component(const sd_safetensors *st, sd_arch arch, comp c, sd_weights *w, size_t *n_mapped,
                               size_t *n_ignored, strlist *unknown)
{
    const char *prefix = ck_comp_prefix(c, arch);
    const char *lab = st_label(st);
    if (!prefix)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: an %s checkpoint has no %s", lab, sd_arch_name(arch),
                       comp_name(c));
    if (!has_prefix_key(st, prefix))
        return sd_fail(SD_ERR_NOT_FOUND, "%s: the checkpoint has no %s (no %s* tensors)", lab, comp_name(c), prefix);
    unet_layout L;
    int n_up = 0, dropped = -1;
    if (c == C_UNET) {
        SD_TRY(ck_unet_layout_parse(st, &L));
        L.text_time = arch == SD_ARCH_SDXL;
    } else if (c == C_VAE) {
        n_up = ck_vae_up_levels(st);
    } else if (ck_is_oclip(c, arch)) {
        dropped = ck_oclip_dropped_block(arch, ck_text_blocks(st, c, arch));
    }
    size_t pl = strlen(prefix);
    alias_out o[3];
    for (size_t i = 0; i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        if (strncmp(t->name, prefix, pl))
            continue;
        int r;
        if (c == C_UNET)
            r = ck_map_unet_key(&L, t->name, o);
        else if (c == C_VAE)
            r = ck_map_vae_key(n_up, t->name, o);
        else if (ck_is_oclip(c, arch))
            r = ck_map_oclip_key(dropped, c == C_TEXT2, t->name + pl, t, o);
        else
            r = ck_map_clip_key(t->name + pl, o);
        if (r == K_UNKNOWN) {
            if (unknown)
                SD_TRY(strlist_add(unknown, t->name));
            continue;
        }
        if (r == K_IGNORED) {
            if (n_ignored)
                (*n_ignored)++;
            continue;
        }
        for (int j = 0; j < r; j++) {
            if (w && o[j].transpose) {
                SD_TRY(sd_weights_add_transposed(w, o[j].name, t));
            } else if (w) {
                int64_t rows = o[j].rows >= 0 ? o[j].rows : (t->ndim ? t->shape[0] : 1);
                SD_TRY(sd_weights_add_alias(w, o[j].name, t, o[j].row0, rows));
            }
            if (n_mapped)
                (*n_mapped)++;
        }
    }
    return SD_OK;
}

sd_status ck_resolve_arch(const sd_safetensors *st, sd_arch *arch)
{
    if (*arch == SD_ARCH_UNKNOWN)
        SD_TRY(sd_ckpt_detect(st, arch));
    if (*arch == SD_ARCH_SDXL)
        return sd_ckpt_sdxl_check(st);
    if (*arch != SD_ARCH_SD1 && *arch != SD_ARCH_SD2)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: unknown architecture", st_label(st));
    return SD_OK;
}

void sd_ckpt_info_free(sd_ckpt_info *info)
{
    if (!info)
        return;
    for (size_t i = 0; i < info->n_unknown; i++)
        free(info->unknown[i]);
    free(info->unknown);
    memset(info, 0, sizeof *info);
}

static void info_take_unknown(sd_ckpt_info *info, strlist *l)
{
    if (!info) {
        strlist_free(l);
        return;
    }
    /* append l to info->unknown */
    if (l->n) {
        char **nv = realloc(info->unknown, (info->n_unknown + l->n) * sizeof *nv);
        if (!nv) {
            strlist_free(l);
            return;
        }
        memcpy(nv + info->n_unknown, l->v, l->n * sizeof *nv);
        info->unknown = nv;
        info->n_unknown += l->n;
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static sd_status map_one(const sd_safetensors *st, sd_arch arch, comp c, sd_weights *w, sd_ckpt_info *info)
{
    strlist unk = {0};
    size_t mapped = 0, ignored = 0;
    sd_status s = map_component(st, arch, c, w, &mapped, &ignored, &unk);
    if (info) {
        if (c == C_UNET)
            info->n_unet += mapped;
        else if (c == C_VAE)
            info->n_vae += mapped;
        else if (c == C_TEXT)
            info->n_text += mapped;
        else
            info->n_text2 += mapped;
        info->n_ignored += ignored;
    }
    info_take_unknown(info, &unk);
    return s;
}

void ck_info_fill_text(const sd_safetensors *st, comp c, sd_arch arch, sd_ckpt_info *info)
{
    if (!info)
        return;
    info->arch = arch;
    info->text_blocks_in_file = ck_text_blocks(st, c, arch);
    info->text_layers = info->text_blocks_in_file;
    if (ck_is_oclip(c, arch) && ck_oclip_dropped_block(arch, info->text_blocks_in_file) >= 0)
        info->text_layers--;
}

/* Counts the ignored keys outside the component prefixes (EMA etc.). */
static size_t count_other_ignored(const sd_safetensors *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *k = st->tensors[i].name;
        if (!starts(k, P_UNET) && !starts(k, P_VAE) && !starts(k, P_CLIP) && !starts(k, P_OCLIP) && !starts(k, P_SDXL))
            n++;
    }
    return n;
}

sd_status sd_ckpt_map_all(const sd_safetensors *st, sd_arch arch, sd_weights *const w[SD_CKPT_COMPONENTS],
                          sd_ckpt_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    SD_TRY(ck_resolve_arch(st, &arch));
    ck_info_fill_text(st, C_TEXT, arch, info);
    if (info)
        info->n_ignored = count_other_ignored(st);
    for (int c = 0; c < C_COUNT; c++)
        if (w[c])
            SD_TRY(map_one(st, arch, (comp)c, w[c], info));
    return SD_OK;
}

sd_status sd_ckpt_map(const sd_safetensors *st, sd_arch arch, sd_weights *unet, sd_weights *vae, sd_weights *text,
                      sd_ckpt_info *info)
{
    sd_weights *const w[SD_CKPT_COMPONENTS] = {unet, vae, text, NULL};
    return sd_ckpt_map_all(st, arch, w, info);
}

sd_status sd_ckpt_load_all(const char *path, sd_weights *const ws[SD_CKPT_COMPONENTS], sd_ckpt_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    sd_arch arch = SD_ARCH_UNKNOWN;
    bool first = true;
    for (int c = 0; c < C_COUNT; c++) {
        if (!ws[c])
            continue;
        sd_safetensors *st;
        SD_TRY(sd_safetensors_open(path, &st));
        SD_TRY(sd_weights_adopt_file(ws[c], st)); /* closes st on failure */
        if (first) {
            SD_TRY(ck_resolve_arch(st, &arch));
            ck_info_fill_text(st, C_TEXT, arch, info);
            if (info)
                info->n_ignored = count_other_ignored(st);
            first = false;
        }
        SD_TRY(map_one(st, arch, (comp)c, ws[c], info));
        SD_TRY(sd_weights_finalize(ws[c]));
    }
    if (first) {
        sd_safetensors *st;
        SD_TRY(sd_safetensors_open(path, &st));
        sd_status s = ck_resolve_arch(st, &arch);
        if (s == SD_OK)
            ck_info_fill_text(st, C_TEXT, arch, info);
        sd_safetensors_close(st);
        return s;
    }
    return SD_OK;
}

sd_status sd_ckpt_load(const char *path, sd_weights *unet, sd_weights *vae, sd_weights *text, sd_ckpt_info *info)
{
    sd_weights *const w[SD_CKPT_COMPONENTS] = {unet, vae, text, NULL};
    return sd_ckpt_load_all(path, w, info);
}

sd_status sd_ckpt_unknown_keys(const sd_safetensors *st, sd_arch arch, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    SD_TRY(ck_resolve_arch(st, &arch));
    strlist l = {0};
    for (int c = 0; c < C_COUNT; c++) {
        const char *pre = ck_comp_prefix((comp)c, arch);
        if (!pre || !has_prefix_key(st, pre))
            continue;
        sd_status s = map_component(st, arch, (comp)c, NULL, NULL, NULL, &l);
        if (s != SD_OK) {
            strlist_free(&l);
            return s;
        }
    }
    /* the other text encoder kinds' keys are unknown for this architecture */
    for (size_t i = 0; i < st->n_tensors; i++)
        if ((arch != SD_ARCH_SD1 && starts(st->tensors[i].name, P_CLIP)) ||
            (arch != SD_ARCH_SD2 && starts(st->tensors[i].name, P_OCLIP)) ||
            (arch == SD_ARCH_SDXL && starts(st->tensors[i].name, P_SDXL) && !starts(st->tensors[i].name, P_XL_CLIP) &&
             !starts(st->tensors[i].name, P_XL_OCLIP))) {
            sd_status s = strlist_add(&l, st->tensors[i].name);
            if (s != SD_OK) {
                strlist_free(&l);
                return s;
            }
        }
    *names = l.v;
    *n = l.n;
    return SD_OK;
}
