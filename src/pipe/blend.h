/* Prompt and seed blending: the weight rule, the blend (linear / slerp, the formulas of include/streamdiff.h
 * and docs/blending.md, after StreamDiffusion forks' StreamParameterUpdater) and a small LRU cache of blended
 * inputs (a prompt's embedding, a seed's noise) keyed by a string. Used by the stream (stream_prompts.c). */
#ifndef SD_PIPE_BLEND_H
#define SD_PIPE_BLEND_H

#include "streamdiff.h"

#include <stddef.h>
#include <stdint.h>

/* sd_blend_check (the weight rule: n in 1..SD_STREAM_MAX_BLEND, every weight finite and >= 0, a positive sum),
 * then eff[i] = the effective weights (w_i / sum(w) when normalize, else w_i). */
sd_status sd_blend_weights(const float *w, int n, bool normalize, const char *what, float *eff);

/* out[len] = the blend of v[0..n-1] (each len floats) with effective weights eff (sd_blend_weights).
 * out may not alias the inputs. */
void sd_blend(const float *const *v, const float *eff, int n, size_t len, sd_blend_mode mode, float *out);

/* Spherical interpolation of two flattened tensors at t (the forks' _slerp). */
void sd_slerp(const float *a, const float *b, size_t len, float t, float *out);

/* ---------------------------------------------------------------- cache */

#define SD_BLEND_CACHE_SLOTS (SD_STREAM_MAX_BLEND + 2)

/* Slots of `len` floats keyed by a string, least recently used first out; slot memory is allocated when a
 * slot is first filled (set time, never per frame). */
typedef struct sd_blend_cache {
    size_t len;
    char *key[SD_BLEND_CACHE_SLOTS];
    float *val[SD_BLEND_CACHE_SLOTS];
    uint64_t used[SD_BLEND_CACHE_SLOTS], tick;
    uint64_t fills; /* slots filled (encodes / noise draws): tests check what a change recomputed */
} sd_blend_cache;

void sd_blend_cache_init(sd_blend_cache *c, size_t len);
void sd_blend_cache_free(sd_blend_cache *c);
/* Forgets every entry (keeps the memory). */
void sd_blend_cache_clear(sd_blend_cache *c);
/* The slot holding `key` (marked used), or -1. */
int sd_blend_cache_find(sd_blend_cache *c, const char *key);
/* A slot for the caller to fill (*slot): a free one, else the least recently used one whose bit in `pinned`
 * is clear (a mask of slots the caller still needs). Its key is set by sd_blend_cache_commit, once filled. */
sd_status sd_blend_cache_take(sd_blend_cache *c, uint32_t pinned, int *slot);
sd_status sd_blend_cache_commit(sd_blend_cache *c, int slot, const char *key);

#endif
