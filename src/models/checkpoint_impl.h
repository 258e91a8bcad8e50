/* Internals of the single-file checkpoint support (src/models/checkpoint*.c), shared by its files:
 *   checkpoint.c         detection, the mapping driver (names -> weights), loading, unknown keys
 *   checkpoint_keys.c    the UNet layout read from the tensors and the key tables: LDM name -> diffusers name
 *   checkpoint_config.c  diffusers configs derived from the tensors (UNet, VAE, text encoder, scheduler)
 * See checkpoint.h for the mapping rules. */
#ifndef SD_CHECKPOINT_IMPL_H
#define SD_CHECKPOINT_IMPL_H

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
#define P_XL_CLIP "conditioner.embedders.0.transformer." /* SDXL text encoder 1: transformers CLIP ViT-L */
#define P_XL_OCLIP "conditioner.embedders.1.model."      /* SDXL text encoder 2: OpenCLIP ViT-bigG */

#define MAX_LEVELS 8
#define MAX_BLOCK_INDEX 128 /* input/output block indices considered (SD uses 0..11) */
#define NAME_CAP 512
#define MAX_LPB 16 /* resnets per UNet level considered */

/* ------------------------------------------------------------------ helpers */

static inline bool starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static inline bool ends(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static inline const char *st_label(const sd_safetensors *st) { return st->path ? st->path : "checkpoint"; }

static inline const sd_st_tensor *findf(const sd_safetensors *st, const char *fmt, ...) SD_PRINTF(2, 3);
static inline const sd_st_tensor *findf(const sd_safetensors *st, const char *fmt, ...)
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

static inline bool has_prefix_key(const sd_safetensors *st, const char *prefix)
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
static inline bool take_index(const char **p, int *out)
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

static inline bool take(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n))
        return false;
    *p += n;
    return true;
}

static inline bool is_wb(const char *s) { return !strcmp(s, "weight") || !strcmp(s, "bias"); }

/* ------------------------------------------------------------------ UNet layout (checkpoint_keys.c) */

typedef struct unet_layout {
    int model_ch, in_ch, out_ch;
    int64_t ctx_dim, time_dim;
    int levels, lpb;
    int ch[MAX_LEVELS];
    bool down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];
    int tdepth[MAX_LEVELS]; /* transformer blocks of the level's first down attention (0 for levels without) */
    /* transformer blocks of every attention: down level i attention j, up level i (diffusers' up block order)
     * attention j, the mid block; uniform_depth: every level's down and up attentions and the mid block
     * have the depth of tdepth[] (a plain transformer_layers_per_block list says it all) */
    int down_depth[MAX_LEVELS][MAX_LPB], up_depth[MAX_LEVELS][MAX_LPB + 1], mid_depth;
    bool uniform_depth;
    bool linear_proj, mid_attn, has_mid; /* has_mid: any middle_block tensor (distilled UNets: none) */
    int n_output;
    int64_t add_in, add_dim; /* label_emb.0.0 (SDXL text_time): input width, time embedding width (0: none) */
    bool text_time;          /* label_emb.* maps to add_embedding (SDXL files, ControlNets); else unknown */
} unet_layout;

/* ------------------------------------------------------------------ key classification (checkpoint_keys.c) */

typedef struct alias_out {
    char name[NAME_CAP];
    int64_t row0, rows; /* rows < 0: the whole tensor */
    bool transpose;     /* the 2-d tensor's transpose (OpenCLIP's text_projection) */
} alias_out;

enum { K_UNKNOWN = -1, K_IGNORED = 0 };
/* o->name = the formatted diffusers name, the whole tensor (row0 0, rows -1): 1, or K_UNKNOWN when it does not fit. */
int ck_out1(alias_out *o, const char *fmt, ...) SD_PRINTF(2, 3);

/* C_TEXT: SD1 CLIP, SD2 OpenCLIP ViT-H, SDXL CLIP ViT-L; C_TEXT2: SDXL OpenCLIP ViT-bigG (with projection) */
typedef enum comp { C_UNET, C_VAE, C_TEXT, C_TEXT2, C_COUNT } comp;

/* checkpoint_keys.c */
sd_status ck_unet_layout_parse(const sd_safetensors *st, unet_layout *L);
int ck_map_unet_key(const unet_layout *L, const char *key, alias_out *o);
int ck_map_vae_key(int n_up, const char *key, alias_out *o);
int ck_vae_up_levels(const sd_safetensors *st);
int ck_vae_down_levels(const sd_safetensors *st);
/* the text encoder maps take the key without its component prefix (ck_comp_prefix) */
int ck_map_clip_key(const char *p, alias_out *o);
/* whether component c of arch is an OpenCLIP tower (SD2's text encoder, SDXL's second) */
bool ck_is_oclip(comp c, sd_arch arch);
int ck_text_blocks(const sd_safetensors *st, comp c, sd_arch arch);
int ck_oclip_dropped_block(sd_arch arch, int n_blocks);
int ck_map_oclip_key(int dropped, bool projection, const char *p, const sd_st_tensor *t, alias_out *o);

/* checkpoint.c */
const char *ck_comp_prefix(comp c, sd_arch arch);
sd_status ck_resolve_arch(const sd_safetensors *st, sd_arch *arch);
void ck_info_fill_text(const sd_safetensors *st, comp c, sd_arch arch, sd_ckpt_info *info);

#endif
