/* Single-file (LDM) Stable Diffusion checkpoint -> diffusers names and configs.
 * See checkpoint.h for the mapping rules. */
#include "models/checkpoint.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P_UNET "model.diffusion_model."
#define P_VAE "first_stage_model."
#define P_CLIP "cond_stage_model.transformer."
#define P_OCLIP "cond_stage_model.model."
#define P_SDXL "conditioner.embedders."

#define MAX_LEVELS 8
#define MAX_BLOCK_INDEX 128 /* input/output block indices considered (SD uses 0..11) */
#define NAME_CAP 512

const char *sd_arch_name(sd_arch a)
{
    switch (a) {
    case SD_ARCH_SD1: return "SD1";
    case SD_ARCH_SD2: return "SD2";
    case SD_ARCH_SDXL: return "SDXL";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------------ helpers */

static bool starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static bool ends(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static const char *st_label(const sd_safetensors *st) { return st->path ? st->path : "checkpoint"; }

static const sd_st_tensor *findf(const sd_safetensors *st, const char *fmt, ...) SD_PRINTF(2, 3);
static const sd_st_tensor *findf(const sd_safetensors *st, const char *fmt, ...)
{
    char name[NAME_CAP];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name)
        return NULL;
    return sd_st_find(st, name);
}

static bool has_prefix_key(const sd_safetensors *st, const char *prefix)
{
    /* tensors are sorted by name: binary search for the first name >= prefix */
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(st->tensors[mid].name, prefix) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->n_tensors && starts(st->tensors[lo].name, prefix);
}

/* Parses a decimal index (no sign, no leading zeros except "0", < 100000)
 * followed by '.', advancing *p past the dot. */
static bool take_index(const char **p, int *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return false;
    if (s[0] == '0' && isdigit((unsigned char)s[1]))
        return false;
    long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v >= 100000)
            return false;
        s++;
    }
    if (*s != '.')
        return false;
    *out = (int)v;
    *p = s + 1;
    return true;
}

static bool take(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n))
        return false;
    *p += n;
    return true;
}

static bool is_wb(const char *s) { return !strcmp(s, "weight") || !strcmp(s, "bias"); }

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

/* ------------------------------------------------------------------ UNet layout */

typedef struct unet_layout {
    int model_ch, in_ch, out_ch;
    int64_t ctx_dim, time_dim;
    int levels, lpb;
    int ch[MAX_LEVELS];
    bool down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];
    int tdepth[MAX_LEVELS]; /* transformer blocks per attention (0 for levels without) */
    bool linear_proj, mid_attn;
    int n_output;
} unet_layout;

static sd_status ck_unet_layout_parse(const sd_safetensors *st, unet_layout *L)
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
        } else if (take(&p, "middle_block.1.")) {
            L->mid_attn = true;
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
        if (attn) {
            int depth = 0;
            while (depth < 64 && findf(st, P_UNET "input_blocks.%d.1.transformer_blocks.%d.norm1.weight", i, depth))
                depth++;
            if (L->tdepth[level] && L->tdepth[level] != depth)
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: UNet attentions of one level differ in depth", lab);
            L->tdepth[level] = depth;
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
    return SD_OK;
}

/* ------------------------------------------------------------------ key classification */

typedef struct alias_out {
    char name[NAME_CAP];
    int64_t row0, rows; /* rows < 0: the whole tensor */
} alias_out;

enum { K_UNKNOWN = -1, K_IGNORED = 0 };

static int out1(alias_out *o, const char *fmt, ...) SD_PRINTF(2, 3);
static int out1(alias_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->name, sizeof o->name, fmt, ap);
    va_end(ap);
    o->row0 = 0;
    o->rows = -1;
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

static int ck_map_unet_key(const unet_layout *L, const char *key, alias_out *o)
{
    const char *p = key + strlen(P_UNET);
    static const char *const fixed[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."},              {"out.0.", "conv_norm_out."},
        {"out.2.", "conv_out."},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(fixed); i++) {
        size_t n = strlen(fixed[i][0]);
        if (!strncmp(p, fixed[i][0], n))
            return is_wb(p + n) ? out1(o, "%s%s", fixed[i][1], p + n) : K_UNKNOWN;
    }
    char tb[64];
    int a, b;
    const char *t;
    if (take(&p, "input_blocks.")) {
        if (!take_index(&p, &a) || !take_index(&p, &b) || a < 1)
            return K_UNKNOWN;
        int blk = (a - 1) / (L->lpb + 1), lay = (a - 1) % (L->lpb + 1);
        if (b == 0 && take(&p, "op."))
            return is_wb(p) ? out1(o, "down_blocks.%d.downsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (b == 0 && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return out1(o, "down_blocks.%d.resnets.%d.%s", blk, lay, t);
        if (b == 1 && unet_attn_tail_ok(p))
            return out1(o, "down_blocks.%d.attentions.%d.%s", blk, lay, p);
        return K_UNKNOWN;
    }
    if (take(&p, "middle_block.")) {
        if (!take_index(&p, &a))
            return K_UNKNOWN;
        if ((a == 0 || a == 2) && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return out1(o, "mid_block.resnets.%d.%s", a / 2, t);
        if (a == 1 && unet_attn_tail_ok(p))
            return out1(o, "mid_block.attentions.0.%s", p);
        return K_UNKNOWN;
    }
    if (take(&p, "output_blocks.")) {
        if (!take_index(&p, &a) || !take_index(&p, &b))
            return K_UNKNOWN;
        int blk = a / (L->lpb + 1), lay = a % (L->lpb + 1);
        if ((b == 1 || b == 2) && take(&p, "conv."))
            return is_wb(p) ? out1(o, "up_blocks.%d.upsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (b == 0 && (t = unet_resnet_tail(p, tb, sizeof tb)))
            return out1(o, "up_blocks.%d.resnets.%d.%s", blk, lay, t);
        if (b == 1 && unet_attn_tail_ok(p))
            return out1(o, "up_blocks.%d.attentions.%d.%s", blk, lay, p);
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
        return out1(o, "%s.mid_block.resnets.%d.%s", coder, a - 1, t);
    }
    if (take(&p, "attn_1.")) {
        static const char *const m[][2] = {
            {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."},
        };
        for (size_t i = 0; i < SD_ARRAY_LEN(m); i++) {
            size_t n = strlen(m[i][0]);
            if (!strncmp(p, m[i][0], n) && is_wb(p + n))
                return out1(o, "%s.mid_block.attentions.0.%s%s", coder, m[i][1], p + n);
        }
    }
    return K_UNKNOWN;
}

static int ck_map_vae_key(int n_up, const char *key, alias_out *o)
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
            return is_wb(p + n) ? out1(o, "%s%s", fixed[i][1], p + n) : K_UNKNOWN;
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
            return is_wb(p) ? out1(o, "encoder.down_blocks.%d.downsamplers.0.conv.%s", a, p) : K_UNKNOWN;
        if (take(&p, "block.") && take_index(&p, &b) && (t = vae_resnet_tail(p, tb, sizeof tb)))
            return out1(o, "encoder.down_blocks.%d.resnets.%d.%s", a, b, t);
        return K_UNKNOWN;
    }
    if (take(&p, "decoder.")) {
        if (take(&p, "mid."))
            return map_vae_mid("decoder", p, o);
        if (!take(&p, "up.") || !take_index(&p, &a) || a >= n_up)
            return K_UNKNOWN;
        int blk = n_up - 1 - a;
        if (take(&p, "upsample.conv."))
            return is_wb(p) ? out1(o, "decoder.up_blocks.%d.upsamplers.0.conv.%s", blk, p) : K_UNKNOWN;
        if (take(&p, "block.") && take_index(&p, &b) && (t = vae_resnet_tail(p, tb, sizeof tb)))
            return out1(o, "decoder.up_blocks.%d.resnets.%d.%s", blk, b, t);
        return K_UNKNOWN;
    }
    return K_UNKNOWN;
}

/* Number of decoder.up.K levels (max K + 1), 0 if none. */
static int ck_vae_up_levels(const sd_safetensors *st)
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

static int ck_vae_down_levels(const sd_safetensors *st)
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

static int ck_map_clip_key(const char *key, alias_out *o)
{
    const char *p = key + strlen(P_CLIP);
    take(&p, "text_model."); /* legacy files without the text_model. level get it added */
    if (!strcmp(p, "embeddings.position_ids"))
        return K_IGNORED; /* a buffer (0..76), not a weight; broken in some files */
    if (!clip_tail_ok(p))
        return K_UNKNOWN;
    return out1(o, "text_model.%s", p);
}

/* Number of text encoder blocks in the file (max index + 1). */
static int ck_text_blocks(const sd_safetensors *st, sd_arch arch)
{
    int n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *p = st->tensors[i].name;
        int a;
        bool ok;
        if (arch == SD_ARCH_SD2)
            ok = take(&p, P_OCLIP "transformer.resblocks.");
        else
            ok = take(&p, P_CLIP) && (take(&p, "text_model.encoder.layers.") || take(&p, "encoder.layers."));
        if (ok && take_index(&p, &a) && a + 1 > n)
            n = a + 1;
    }
    return n;
}

/* The SD2 OpenCLIP block that is dropped (-1: none). */
static int ck_oclip_dropped_block(int n_blocks) { return n_blocks == 24 ? 23 : -1; }

static int ck_map_oclip_key(int dropped, const char *key, const sd_st_tensor *t, alias_out *o)
{
    const char *p = key + strlen(P_OCLIP);
    if (!strcmp(p, "text_projection") || !strcmp(p, "logit_scale") || !strcmp(p, "attn_mask"))
        return K_IGNORED;
    if (!strcmp(p, "positional_embedding"))
        return out1(o, "text_model.embeddings.position_embedding.weight");
    if (!strcmp(p, "token_embedding.weight"))
        return out1(o, "text_model.embeddings.token_embedding.weight");
    if (take(&p, "ln_final."))
        return is_wb(p) ? out1(o, "text_model.final_layer_norm.%s", p) : K_UNKNOWN;
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
            r = out1(o, "text_model.encoder.layers.%d.%s%s", k, m[i][1], p + n);
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
            if (out1(&o[j], "text_model.encoder.layers.%d.self_attn.%c_proj.%s", k, qkv[j], w ? "weight" : "bias") !=
                1)
                return K_UNKNOWN;
            o[j].row0 = j * d;
            o[j].rows = d;
        }
        r = 3;
    }
    if (r > 0 && k == dropped)
        return K_IGNORED;
    return r;
}

/* ------------------------------------------------------------------ mapping driver */

typedef enum comp { C_UNET, C_VAE, C_TEXT } comp;

static const char *ck_comp_prefix(comp c, sd_arch arch)
{
    return c == C_UNET ? P_UNET : c == C_VAE ? P_VAE : arch == SD_ARCH_SD2 ? P_OCLIP : P_CLIP;
}

static const char *comp_name(comp c) { return c == C_UNET ? "UNet" : c == C_VAE ? "VAE" : "text encoder"; }

/* Maps one component. w may be NULL (dry run). */
static sd_status map_component(const sd_safetensors *st, sd_arch arch, comp c, sd_weights *w, size_t *n_mapped,
                               size_t *n_ignored, strlist *unknown)
{
    const char *prefix = ck_comp_prefix(c, arch);
    const char *lab = st_label(st);
    if (!has_prefix_key(st, prefix))
        return sd_fail(SD_ERR_NOT_FOUND, "%s: the checkpoint has no %s (no %s* tensors)", lab, comp_name(c), prefix);
    unet_layout L;
    int n_up = 0, dropped = -1;
    if (c == C_UNET)
        SD_TRY(ck_unet_layout_parse(st, &L));
    else if (c == C_VAE)
        n_up = ck_vae_up_levels(st);
    else if (arch == SD_ARCH_SD2)
        dropped = ck_oclip_dropped_block(ck_text_blocks(st, arch));
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
        else if (arch == SD_ARCH_SD2)
            r = ck_map_oclip_key(dropped, t->name, t, o);
        else
            r = ck_map_clip_key(t->name, o);
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
            if (w) {
                int64_t rows = o[j].rows >= 0 ? o[j].rows : (t->ndim ? t->shape[0] : 1);
                SD_TRY(sd_weights_add_alias(w, o[j].name, t, o[j].row0, rows));
            }
            if (n_mapped)
                (*n_mapped)++;
        }
    }
    return SD_OK;
}

static sd_status ck_resolve_arch(const sd_safetensors *st, sd_arch *arch)
{
    if (*arch == SD_ARCH_UNKNOWN)
        SD_TRY(sd_ckpt_detect(st, arch));
    if (*arch == SD_ARCH_SDXL)
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: this is a Stable Diffusion XL checkpoint (conditioner.embedders.*): SDXL is not supported "
                       "yet; use an SD1.x or SD2.x model (e.g. stabilityai/sd-turbo)",
                       st_label(st));
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
        else
            info->n_text += mapped;
        info->n_ignored += ignored;
    }
    info_take_unknown(info, &unk);
    return s;
}

static void ck_info_fill_text(const sd_safetensors *st, sd_arch arch, sd_ckpt_info *info)
{
    if (!info)
        return;
    info->arch = arch;
    info->text_blocks_in_file = ck_text_blocks(st, arch);
    info->text_layers = info->text_blocks_in_file;
    if (arch == SD_ARCH_SD2 && ck_oclip_dropped_block(info->text_blocks_in_file) >= 0)
        info->text_layers--;
}

/* Counts the ignored keys outside the component prefixes (EMA etc.). */
static size_t count_other_ignored(const sd_safetensors *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *k = st->tensors[i].name;
        if (!starts(k, P_UNET) && !starts(k, P_VAE) && !starts(k, P_CLIP) && !starts(k, P_OCLIP))
            n++;
    }
    return n;
}

sd_status sd_ckpt_map(const sd_safetensors *st, sd_arch arch, sd_weights *unet, sd_weights *vae, sd_weights *text,
                      sd_ckpt_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    SD_TRY(ck_resolve_arch(st, &arch));
    ck_info_fill_text(st, arch, info);
    if (info)
        info->n_ignored = count_other_ignored(st);
    if (unet)
        SD_TRY(map_one(st, arch, C_UNET, unet, info));
    if (vae)
        SD_TRY(map_one(st, arch, C_VAE, vae, info));
    if (text)
        SD_TRY(map_one(st, arch, C_TEXT, text, info));
    return SD_OK;
}

sd_status sd_ckpt_load(const char *path, sd_weights *unet, sd_weights *vae, sd_weights *text, sd_ckpt_info *info)
{
    if (info)
        memset(info, 0, sizeof *info);
    sd_weights *ws[3] = {unet, vae, text};
    sd_arch arch = SD_ARCH_UNKNOWN;
    bool first = true;
    for (int c = 0; c < 3; c++) {
        if (!ws[c])
            continue;
        sd_safetensors *st;
        SD_TRY(sd_safetensors_open(path, &st));
        SD_TRY(sd_weights_adopt_file(ws[c], st)); /* closes st on failure */
        if (first) {
            SD_TRY(ck_resolve_arch(st, &arch));
            ck_info_fill_text(st, arch, info);
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
            ck_info_fill_text(st, arch, info);
        sd_safetensors_close(st);
        return s;
    }
    return SD_OK;
}

sd_status sd_ckpt_unknown_keys(const sd_safetensors *st, sd_arch arch, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    SD_TRY(ck_resolve_arch(st, &arch));
    strlist l = {0};
    for (int c = 0; c < 3; c++) {
        if (!has_prefix_key(st, ck_comp_prefix((comp)c, arch)))
            continue;
        sd_status s = map_component(st, arch, (comp)c, NULL, NULL, NULL, &l);
        if (s != SD_OK) {
            strlist_free(&l);
            return s;
        }
    }
    /* the other text encoder kind's keys are unknown for this architecture */
    const char *other = arch == SD_ARCH_SD2 ? P_CLIP : P_OCLIP;
    for (size_t i = 0; i < st->n_tensors; i++)
        if (starts(st->tensors[i].name, other)) {
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
    return arch == SD_ARCH_SD2 ? 768 : 512;
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
    bool sd2 = arch == SD_ARCH_SD2;
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
    if (sd2)
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
    j_str(&b, "mid_block_type", L.mid_attn ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D");
    j_num(&b, "norm_eps", 1e-5);
    j_num(&b, "norm_num_groups", 32);
    j_num(&b, "out_channels", L.out_ch);
    j_num(&b, "sample_size", image_size(st, arch) / vae_scale);
    if (L.time_dim != 4 * (int64_t)L.model_ch)
        j_num(&b, "time_embedding_dim", (double)L.time_dim);
    else
        j_null(&b, "time_embedding_dim");
    if (depth_uniform)
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
    j_num(&b, "scaling_factor", 0.18215);
    j_strs(&b, "up_block_types", up, levels);
    j_bool(&b, "use_post_quant_conv", sd_st_find(st, P_VAE "post_quant_conv.weight") != NULL);
    j_bool(&b, "use_quant_conv", sd_st_find(st, P_VAE "quant_conv.weight") != NULL);
    return j_finish(&b);
}

cJSON *sd_ckpt_text_config(const sd_safetensors *st, sd_arch arch)
{
    if (config_arch(st, &arch) != SD_OK)
        return NULL;
    const char *lab = st_label(st);
    bool sd2 = arch == SD_ARCH_SD2;
    const sd_st_tensor *tok, *pos, *fc1;
    if (sd2) {
        tok = sd_st_find(st, P_OCLIP "token_embedding.weight");
        pos = sd_st_find(st, P_OCLIP "positional_embedding");
        fc1 = sd_st_find(st, P_OCLIP "transformer.resblocks.0.mlp.c_fc.weight");
    } else {
        const char *tm = sd_st_find(st, P_CLIP "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
        tok = findf(st, P_CLIP "%sembeddings.token_embedding.weight", tm);
        pos = findf(st, P_CLIP "%sembeddings.position_embedding.weight", tm);
        fc1 = findf(st, P_CLIP "%sencoder.layers.0.mlp.fc1.weight", tm);
    }
    if (!tok || tok->ndim != 2 || !pos || pos->ndim != 2 || !fc1 || fc1->ndim != 2) {
        sd_fail(has_prefix_key(st, ck_comp_prefix(C_TEXT, arch)) ? SD_ERR_FORMAT : SD_ERR_NOT_FOUND,
                "%s: the checkpoint has no complete %s text encoder (token/position embeddings and layer 0 MLP)", lab,
                sd2 ? "OpenCLIP (SD2)" : "CLIP (SD1)");
        return NULL;
    }
    int64_t hidden = tok->shape[1];
    sd_ckpt_info info;
    ck_info_fill_text(st, arch, &info);
    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    const char *archs[1] = {"CLIPTextModel"};
    j_strs(&b, "architectures", archs, 1);
    j_num(&b, "attention_dropout", 0.0);
    j_num(&b, "bos_token_id", 0);
    j_num(&b, "eos_token_id", 2);
    j_str(&b, "hidden_act", sd2 ? "gelu" : "quick_gelu");
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
    j_num(&b, "projection_dim", sd2 ? 512 : 768);
    j_str(&b, "torch_dtype", "float32");
    j_num(&b, "vocab_size", (double)tok->shape[0]);
    return j_finish(&b);
}

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
    bool sd2 = arch == SD_ARCH_SD2;
    jb b = {cJSON_CreateObject(), true};
    if (!b.o) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    j_str(&b, "_class_name", sd2 ? "DDIMScheduler" : "PNDMScheduler");
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
