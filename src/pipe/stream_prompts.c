/* A stream's prompts and seeds: the prompt list blended into the cross-attention K/V (sd_stream_set_prompts;
 * sd_stream_set_prompt is its one-prompt case), the seed list blended into the initial noise
 * (sd_stream_set_seeds; sd_stream_set_seed likewise), each input cached by its text or seed (pipe/blend.h) so a
 * new weight re-blends without encoding and a changed entry recomputes only itself. Everything happens at the
 * call under the engine lock; the frame path only reads the K/V and the noise. Part of the engine: writes
 * struct sd_stream's prompt and noise state (stream.h). */
#include "pipe/stream.h"
#include "pipe/pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void prompts_clear(struct sd_stream_prompts *pl)
{
    for (int i = 0; i < pl->n; i++)
        free(pl->text[i]);
    free(pl->negative);
    memset(pl, 0, sizeof *pl);
}

void sd_stream_prompts_free(sd_stream *s)
{
    prompts_clear(&s->prompts);
    sd_blend_cache_free(&s->text_cache);
    sd_blend_cache_free(&s->noise_cache);
}

/* The model's prompt encoder on the stream's own arena and token scratch (SDXL: both encoders, and the
 * pooled embedding into `pooled`). Caller holds s->engine. */
static sd_status encode_text(sd_stream *s, const char *text, float *out, float *pooled)
{
    SD_TRY(sd_model_tokenize(s->m, NULL, text, s->ids, s->S, false));
    if (s->P) {
        SD_TRY(sd_model_tokenize(s->m, s->m->tok2, text, s->ids2, s->S, false));
        sd_sdxl_text_forward(s->m, &s->text_ctx, s->ids, s->ids2, s->S, 0, out, pooled);
    } else {
        sd_model_text_forward(s->m, &s->text_ctx, s->ids, s->S, 0, out);
    }
    return s->text_ctx.status;
}

/* SDXL: the added conditions of the UNet rows (the first `u` rows uncond), as StableDiffusionXLPipeline's
 * defaults at the stream's size (original = target = (H, W), crop (0, 0)), from host_pooled [cond, uncond]. */
static sd_status upload_added(sd_stream *s, int64_t u)
{
    float ids[SD_UNET_TIME_IDS], neg[SD_UNET_TIME_IDS];
    sd_sdxl_time_ids(&(sd_pipe_args){.width = s->W, .height = s->H}, ids, neg);
    sd_status st = SD_OK;
    for (int64_t r = 0; r < s->UB && st == SD_OK; r++) {
        sd_tensor te = sd_view_rows(&s->state, s->add_te, r, 1), ti = sd_view_rows(&s->state, s->add_ids, r, 1);
        st = sd_tensor_from_f32(&s->state, &te, r < u ? s->host_pooled + s->P : s->host_pooled);
        if (st == SD_OK)
            st = sd_tensor_from_f32(&s->state, &ti, ids);
    }
    return st;
}

/* The cache slot holding `text`'s encoding (encoded now when missing); `pinned` collects the slots in use.
 * Caller holds s->engine. */
static sd_status text_slot(sd_stream *s, const char *text, uint32_t *pinned, int *slot)
{
    sd_blend_cache *c = &s->text_cache;
    int k = sd_blend_cache_find(c, text);
    if (k < 0) {
        SD_TRY(sd_blend_cache_take(c, *pinned, &k));
        SD_TRY(encode_text(s, text, c->val[k], c->val[k] + (size_t)s->S * s->D));
        SD_TRY(sd_blend_cache_commit(c, k, text));
    }
    *pinned |= 1u << k;
    *slot = k;
    return SD_OK;
}

/* Blends the list's encodings, uploads the embedding rows and recomputes the cross-attention K/V in place.
 * Caller holds s->engine. */
static sd_status apply_prompts(sd_stream *s, const struct sd_stream_prompts *pl)
{
    if (s->text_cache_version != s->m->weights_version) { /* a LoRA changed the text encoder: encode again */
        sd_blend_cache_clear(&s->text_cache);
        s->text_cache_version = s->m->weights_version;
    }
    size_t SD_ = (size_t)s->S * s->D;
    float *cond = s->host_embeds, *uncond = s->host_embeds + SD_;
    float eff[SD_STREAM_MAX_BLEND];
    const float *src[SD_STREAM_MAX_BLEND];
    uint32_t pinned = 0;
    sd_status st = sd_blend_weights(pl->weight, pl->n, pl->normalize, "prompts", eff);
    for (int i = 0; i < pl->n && st == SD_OK; i++) {
        int k = -1;
        st = text_slot(s, pl->text[i], &pinned, &k);
        if (st == SD_OK)
            src[i] = s->text_cache.val[k];
    }
    bool need_uncond = s->p.cfg_type == SD_CFG_FULL || s->p.cfg_type == SD_CFG_INITIALIZE;
    if (st == SD_OK && need_uncond) {
        int k = -1;
        st = text_slot(s, pl->negative ? pl->negative : "", &pinned, &k);
        if (st == SD_OK) {
            memcpy(uncond, s->text_cache.val[k], SD_ * sizeof(float));
            memcpy(s->host_pooled + s->P, s->text_cache.val[k] + SD_, (size_t)s->P * sizeof(float));
        }
    }
    if (st == SD_OK) { /* SDXL: the pooled embeddings are blended as their own tensor, as the prompt embeddings */
        const float *srcp[SD_STREAM_MAX_BLEND];
        for (int i = 0; i < pl->n; i++)
            srcp[i] = src[i] + SD_;
        sd_blend(src, eff, pl->n, SD_, pl->mode, cond);
        if (s->P)
            sd_blend(srcp, eff, pl->n, (size_t)s->P, pl->mode, s->host_pooled);
    }
    if (st == SD_OK) { /* rows: [uncond x U, cond x B] (U = B for full, fbs for initialize), or one cond row */
        int64_t rows_n = s->embeds.ne[0], u = rows_n - (need_uncond ? s->B : 1);
        for (int64_t r = 0; r < rows_n && st == SD_OK; r++) {
            sd_tensor row = sd_view_rows(&s->state, s->embeds, r, 1);
            st = sd_tensor_from_f32(&s->state, &row, r < u ? uncond : cond);
        }
        if (st == SD_OK && s->P)
            st = upload_added(s, need_uncond ? s->UB - s->B : 0);
    }
    if (st == SD_OK) {
        sd_ctx_reset(&s->ctx);
        sd_unet_kv_compute(&s->ctx, s->m->unet, s->embeds, s->kv);
        st = s->ctx.status;
    }
    if (st == SD_OK)
        s->weights_version = s->m->weights_version;
    s->kv_version++; /* the cache changed (or may have, on an error) */
    return st;
}

/* The arguments of a set call: the stream, the mode, the weights (sd_blend_check). */
static sd_status check_call(const sd_stream *s, const float *w, int n, sd_blend_mode mode, const char *what)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL stream");
    if (mode != SD_BLEND_LINEAR && mode != SD_BLEND_SLERP)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: unknown blend mode %d (linear or slerp)", what, (int)mode);
    return sd_blend_check(w, n, what);
}

sd_status sd_stream_set_prompts(sd_stream *s, const sd_prompt_weight *prompts, int n, const char *negative_prompt,
                                sd_blend_mode mode, bool normalize)
{
    float w[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < n && i < SD_STREAM_MAX_BLEND && prompts; i++)
        w[i] = prompts[i].weight;
    SD_TRY(check_call(s, prompts ? w : NULL, n, mode, "prompts"));
    struct sd_stream_prompts pl = {.n = n, .mode = mode, .normalize = normalize};
    bool ok = (pl.negative = sd_strdup(negative_prompt ? negative_prompt : "")) != NULL;
    for (int i = 0; i < n; i++) {
        pl.weight[i] = w[i];
        ok = ok && (pl.text[i] = sd_strdup(prompts[i].prompt ? prompts[i].prompt : "")) != NULL;
    }
    if (!ok) {
        prompts_clear(&pl);
        return SD_ERR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&s->engine);
    sd_status st = apply_prompts(s, &pl);
    if (st == SD_OK) { /* kept to re-encode after the model's weights change (LoRA) */
        struct sd_stream_prompts old = s->prompts;
        s->prompts = pl;
        pl = old;
    }
    pthread_mutex_unlock(&s->engine);
    prompts_clear(&pl);
    return st;
}

sd_status sd_stream_set_prompt(sd_stream *s, const char *prompt, const char *negative_prompt)
{
    sd_prompt_weight one = {prompt, 1.0f};
    return sd_stream_set_prompts(s, &one, 1, negative_prompt, SD_BLEND_LINEAR, true);
}

sd_status sd_stream_refresh_prompt(sd_stream *s)
{
    if (s->weights_version == s->m->weights_version || !s->prompts.n)
        return SD_OK;
    return apply_prompts(s, &s->prompts);
}

/* ---------------------------------------------------------------- seeds */

sd_status sd_stream_set_seeds(sd_stream *s, const sd_seed_weight *seeds, int n, sd_blend_mode mode, bool normalize)
{
    float w[SD_STREAM_MAX_BLEND], eff[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < n && i < SD_STREAM_MAX_BLEND && seeds; i++)
        w[i] = seeds[i].weight;
    SD_TRY(check_call(s, seeds ? w : NULL, n, mode, "seeds"));
    sd_blend_weights(w, n, normalize, "seeds", eff);
    sd_blend_cache *c = &s->noise_cache;
    float *noise = sd_malloc(c->len * sizeof(float));
    if (!noise)
        return SD_ERR_OUT_OF_MEMORY;
    sd_rng_kind kind = s->p.rng == SD_RNG_TYPE_FAST ? SD_RNG_FAST : SD_RNG_TORCH;
    pthread_mutex_lock(&s->engine);
    const float *src[SD_STREAM_MAX_BLEND];
    int first = -1;
    uint32_t pinned = 0;
    sd_status st = SD_OK;
    for (int i = 0; i < n && st == SD_OK; i++) { /* each seed's noise: randn([B,C,h,w]) from a fresh generator */
        char key[24];
        snprintf(key, sizeof key, "%" PRIu64, seeds[i].seed);
        int k = sd_blend_cache_find(c, key);
        if (k < 0) {
            if ((st = sd_blend_cache_take(c, pinned, &k)) != SD_OK)
                break;
            sd_rng_init(&s->noise_rng[k], kind, seeds[i].seed);
            sd_rng_randn(&s->noise_rng[k], c->val[k], c->len);
            st = sd_blend_cache_commit(c, k, key);
        }
        pinned |= 1u << k;
        src[i] = c->val[k];
        if (i == 0)
            first = k;
    }
    if (st == SD_OK) {
        sd_blend(src, eff, n, c->len, mode, noise);
        st = sd_stream_set_init_noise(s, noise);
    }
    if (st == SD_OK) { /* the generator goes on from seeds[0]'s, as sd_stream_set_seed(seeds[0]) */
        s->p.seed = seeds[0].seed;
        s->rng = s->noise_rng[first];
        sd_rng_init(&s->ssf_rng, SD_RNG_FAST, seeds[0].seed ^ 0x5353465f636f696eULL); /* "SSF_coin" */
    }
    pthread_mutex_unlock(&s->engine);
    free(noise);
    return st;
}

sd_status sd_stream_set_seed(sd_stream *s, uint64_t seed)
{
    sd_seed_weight one = {seed, 1.0f};
    return sd_stream_set_seeds(s, &one, 1, SD_BLEND_LINEAR, true);
}
