/* SDXL (diffusers StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline): the folder layout, the
 * second text encoder, the two-encoder prompt encoding and the micro-conditioning time ids. The UNet's
 * "text_time" added conditioning is in src/models/unet.c (sd_unet_forward_added); the denoising loop is
 * the one of src/pipe/generate.c.
 *
 * Prompt encoding (StableDiffusionXLPipeline.encode_prompt, clip_skip = k):
 *   prompt_embeds = cat([te1.hidden_states[-(k+2)], te2.hidden_states[-(k+2)]], -1)  (no final_layer_norm)
 *   pooled        = te2.text_embeds = text_projection(final_layer_norm(last layer)[eos])
 * te1 reads ids of tokenizer/ (pad <|endoftext|>), te2 ids of tokenizer_2/ (pad "!"). */
#include "pipe/pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool null_component(const sd_config *idx, const char *key)
{
    /* model_index.json: "text_encoder": [null, null] (or absent) = the pipeline has no such component */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(idx->root, key);
    return !v || cJSON_IsNull(v) || (cJSON_IsArray(v) && (!v->child || cJSON_IsNull(v->child)));
}

static sd_status unet_is_text_time(const char *unet_dir, bool *yes)
{
    *yes = false;
    char *p = sd_path_join(unet_dir, "config.json");
    if (!p)
        return SD_ERR_OUT_OF_MEMORY;
    sd_config c;
    sd_status s = SD_OK;
    if (sd_file_exists(p) && (s = sd_config_load(p, &c)) == SD_OK) {
        const char *aet = NULL;
        s = sd_config_str(&c, "addition_embed_type", NULL, &aet);
        *yes = s == SD_OK && aet && !strcmp(aet, "text_time");
        sd_config_free(&c);
    }
    free(p);
    return s;
}

sd_status sd_sdxl_check_folder(const char *dir, const char *unet_dir, bool *is_sdxl)
{
    *is_sdxl = false;
    bool text_time = false;
    SD_TRY(unet_is_text_time(unet_dir, &text_time));
    char *p = sd_path_join(dir, "model_index.json");
    if (!p)
        return SD_ERR_OUT_OF_MEMORY;
    if (!sd_file_exists(p)) { /* a folder without model_index.json: the UNet tells */
        free(p);
        *is_sdxl = text_time;
        return SD_OK;
    }
    sd_config idx;
    sd_status s = sd_config_load(p, &idx);
    free(p);
    if (s != SD_OK) { /* SD1/SD2 folders never needed model_index.json: only an SDXL UNet makes it matter */
        if (!text_time)
            return SD_OK;
        return s;
    }
    const char *cls = NULL;
    sd_config_str(&idx, "_class_name", NULL, &cls);
    bool xl_class = cls && !strncmp(cls, "StableDiffusionXL", 17);
    bool aesthetics = false;
    sd_config_bool(&idx, "requires_aesthetics_score", false, &aesthetics);
    if (xl_class && (aesthetics || (null_component(&idx, "text_encoder") && !null_component(&idx, "text_encoder_2"))))
        s = sd_fail(SD_ERR_UNSUPPORTED, "%s: this is an SDXL refiner (%s with %s): refiners are not supported; use "
                    "an SDXL base, turbo or distilled model folder (StableDiffusionXLPipeline with text_encoder/ "
                    "and text_encoder_2/)", dir, cls,
                    aesthetics ? "requires_aesthetics_score" : "only text_encoder_2");
    else if (xl_class && strcmp(cls, "StableDiffusionXLPipeline") && strcmp(cls, "StableDiffusionXLImg2ImgPipeline"))
        s = sd_fail(SD_ERR_UNSUPPORTED, "%s: model_index.json names %s; of the SDXL pipelines only "
                    "StableDiffusionXLPipeline folders (txt2img and img2img) are supported", dir, cls);
    else if (xl_class && !text_time)
        s = sd_fail(SD_ERR_FORMAT, "%s: model_index.json names %s but unet/config.json has no addition_embed_type "
                    "'text_time': the UNet is not an SDXL UNet (mismatched unet/ folder)", dir, cls);
    else if (!xl_class && text_time && cls && strstr(cls, "Pipeline"))
        s = sd_fail(SD_ERR_FORMAT, "%s: unet/config.json is an SDXL UNet (addition_embed_type 'text_time') but "
                    "model_index.json names %s (mismatched unet/ folder)", dir, cls);
    else
        *is_sdxl = xl_class || text_time;
    sd_config_free(&idx);
    return s;
}

static sd_status force_zeros(const char *dir, bool *out)
{
    *out = true; /* StableDiffusionXLPipeline's default */
    char *p = sd_path_join(dir, "model_index.json");
    if (!p)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = SD_OK;
    sd_config idx;
    if (sd_file_exists(p) && (s = sd_config_load(p, &idx)) == SD_OK) {
        s = sd_config_bool(&idx, "force_zeros_for_empty_prompt", true, out);
        sd_config_free(&idx);
    }
    free(p);
    return s;
}

/* a VAE that normalises latents with latents_mean / latents_std (Playground v2.5) needs a pipeline step this
 * one does not have: refused instead of decoding wrong colours */
static sd_status vae_plain(const char *dir, const sd_backend *be)
{
    char *p = sd_path_join(dir, "vae/config.json");
    if (!p)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = SD_OK;
    sd_config c;
    if (sd_file_exists(p) && (s = sd_config_load(p, &c)) == SD_OK) {
        if (sd_config_has(&c, "latents_mean") || sd_config_has(&c, "latents_std"))
            s = sd_fail(SD_ERR_UNSUPPORTED, "%s: 'latents_mean' / 'latents_std' (latent normalisation, e.g. "
                        "Playground v2.5) are not supported", p);
        bool upcast = false;
        sd_config_bool(&c, "force_upcast", false, &upcast);
        if (s == SD_OK && upcast && be && be->act_dtype == SD_F16) /* diffusers runs such a VAE in float32 */
            fprintf(stderr, "streamdiff: warning: %s: this VAE asks for float32 (force_upcast) but runs with the "
                            "backend's fp16 activations; the SDXL VAE can overflow there (black or NaN images): use "
                            "a VAE made for fp16 (e.g. madebyollin/sdxl-vae-fp16-fix) or a TAESD\n", p);
        sd_config_free(&c);
    }
    free(p);
    return s;
}

sd_status sd_model_check_fit(const sd_model *m)
{
    const sd_unet_config *u = &m->unet_cfg;
    if (m->vae && m->vae_cfg.latent_channels != u->in_channels)
        return sd_fail(SD_ERR_FORMAT, "%s: the VAE has %d latent channels but the UNet takes %lld input channels: "
                       "vae/ and unet/ are from different models", m->source, m->vae_cfg.latent_channels,
                       (long long)u->in_channels);
    /* SD1/SD2 and SDXL VAEs share one architecture; their latent scales tell them apart (0.18215 / 0.13025) */
    if (m->vae) {
        double sf = m->vae_cfg.scaling_factor;
        bool sd1_vae = fabs(sf - 0.18215) < 1e-6, xl_vae = fabs(sf - 0.13025) < 1e-6;
        if ((m->sdxl && sd1_vae) || (!m->sdxl && xl_vae))
            return sd_fail(SD_ERR_FORMAT, "%s: an %s VAE (scaling_factor %g) in an %s model: vae/ is from another "
                           "model family (its latents would decode to wrong colours); use the model's own VAE",
                           m->source, sd1_vae ? "SD1/SD2" : "SDXL", sf, m->sdxl ? "SDXL" : "SD1/SD2");
    }
    int64_t width = m->clip_cfg.hidden_size + (m->sdxl ? m->clip2_cfg.hidden_size : 0);
    for (int i = 0; i < u->n_blocks; i++)
        if (u->cross_attention_dim[i] != width) {
            if (m->sdxl)
                return sd_fail(SD_ERR_FORMAT, "%s: the text encoders give %d + %d = %lld channels but the UNet's "
                               "cross_attention_dim is %lld: text_encoder/, text_encoder_2/ and unet/ are from "
                               "different models", m->source, m->clip_cfg.hidden_size, m->clip2_cfg.hidden_size,
                               (long long)width, (long long)u->cross_attention_dim[i]);
            return sd_fail(SD_ERR_FORMAT, "%s: the text encoder gives %lld channels but the UNet's "
                           "cross_attention_dim is %lld: text_encoder/ and unet/ are from different models%s",
                           m->source, (long long)width, (long long)u->cross_attention_dim[i],
                           u->add_text_time ? " (an SDXL UNet needs text_encoder_2/ as well)" : "");
        }
    if (m->sdxl) {
        int64_t need = u->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * u->addition_time_embed_dim;
        if (!u->add_text_time)
            return sd_fail(SD_ERR_FORMAT, "%s: an SDXL pipeline needs a UNet with addition_embed_type 'text_time'",
                           m->source);
        if (m->clip2_cfg.projection_dim != need)
            return sd_fail(SD_ERR_FORMAT, "%s: text_encoder_2's projection_dim is %d but the UNet expects a pooled "
                           "embedding of %lld (projection_class_embeddings_input_dim %lld - 6 x "
                           "addition_time_embed_dim %lld)", m->source, m->clip2_cfg.projection_dim, (long long)need,
                           (long long)u->projection_class_embeddings_input_dim,
                           (long long)u->addition_time_embed_dim);
    }
    return SD_OK;
}

sd_status sd_sdxl_load_folder(sd_model *m, const char *dir)
{
    char *te2 = sd_path_join(dir, "text_encoder_2"), *tok2 = sd_path_join(dir, "tokenizer_2");
    char *cfg = te2 ? sd_path_join(te2, "config.json") : NULL;
    sd_status s = te2 && tok2 && cfg ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (s == SD_OK && !sd_dir_exists(te2))
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: no text_encoder_2/ folder: an SDXL model folder needs both text encoders "
                    "(text_encoder/: CLIP ViT-L, text_encoder_2/: OpenCLIP ViT-bigG with projection)", dir);
    if (s == SD_OK && !sd_dir_exists(tok2))
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: no tokenizer_2/ folder: an SDXL model folder needs the second "
                    "tokenizer (vocab.json + merges.txt, pads with \"!\")", dir);
    if (s == SD_OK)
        s = vae_plain(dir, m->be);
    if (s == SD_OK)
        s = sd_tokenizer_load(tok2, &m->tok2);
    if (s == SD_OK)
        s = sd_clip_config_load(cfg, &m->clip2_cfg);
    if (s == SD_OK) {
        m->clip2_cfg.with_projection = true; /* the pooled embedding is text_projection's output */
        s = sd_model_load_component(m, &m->w_text2, te2, "text_encoder_2", "model");
    }
    if (s == SD_OK)
        s = sd_clip_load(&m->w_text2, &m->clip2_cfg, &m->clip2);
    if (s == SD_OK)
        s = force_zeros(dir, &m->force_zeros_for_empty_prompt);
    if (s == SD_OK) {
        m->sdxl = true;
        m->arch = "sdxl";
    }
    free(te2);
    free(tok2);
    free(cfg);
    return s;
}

void sd_sdxl_free(sd_model *m)
{
    sd_clip_free(m->clip2);
    m->clip2 = NULL;
    sd_tokenizer_free(m->tok2);
    m->tok2 = NULL;
    sd_weights_free(&m->w_text2);
}

/* ---------------------------------------------------------------- prompts */

void sd_sdxl_text_forward(const sd_model *m, sd_ctx *ctx, const int32_t *ids1, const int32_t *ids2, int S, int clip_skip,
                          float *embeds, float *pooled)
{
    sd_ctx_reset(ctx);
    int skip = 1 + clip_skip; /* hidden_states[-(clip_skip + 2)] */
    sd_tensor h1 = sd_clip_forward_hidden(ctx, m->clip, ids1, 1, S, skip, false, NULL, NULL);
    sd_tensor p;
    sd_tensor h2 = sd_clip_forward_hidden(ctx, m->clip2, ids2, 1, S, skip, false, NULL, &p);
    sd_tensor e = sd_concat(ctx, h1, h2, 2);
    sd_tensor_to_f32(ctx, &e, embeds);
    sd_tensor_to_f32(ctx, &p, pooled);
}

typedef struct {
    sd_model *m;
    const int32_t *ids1, *ids2;
    int seq, clip_skip;
    float *embeds, *pooled;
} xl_text_job;

static void xl_text_stage(sd_ctx *ctx, void *user)
{
    xl_text_job *j = user;
    sd_sdxl_text_forward(j->m, ctx, j->ids1, j->ids2, j->seq, j->clip_skip, j->embeds, j->pooled);
}

sd_status sd_sdxl_encode_prompt(sd_model *m, const char *prompt, const char *prompt_2, int clip_skip, float **embeds,
                                float **pooled, int *seq_len, int *dim, int *pooled_dim)
{
    if (!prompt_2 || !*prompt_2) /* diffusers: prompt_2 = prompt_2 or prompt */
        prompt_2 = prompt;
    *embeds = *pooled = NULL;
    if (!m->sdxl || !m->clip2)
        return sd_fail(SD_ERR_INTERNAL, "sd_sdxl_encode_prompt: not an SDXL model");
    int seq = sd_model_prompt_tokens(m);
    int skip = 1 + clip_skip; /* hidden_states[-(clip_skip + 2)] */
    if (clip_skip < 0 || skip > m->clip_cfg.num_hidden_layers || skip > m->clip2_cfg.num_hidden_layers)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "clip skip %d is out of range for SDXL's text encoders (%d and %d "
                       "layers; SDXL already uses the penultimate layer)", clip_skip, m->clip_cfg.num_hidden_layers,
                       m->clip2_cfg.num_hidden_layers);
    int D = m->clip_cfg.hidden_size + m->clip2_cfg.hidden_size, P = m->clip2_cfg.projection_dim;
    int32_t *ids = sd_calloc((size_t)2 * seq, sizeof *ids);
    float *e = sd_malloc((size_t)seq * D * sizeof(float)), *p = sd_malloc((size_t)P * sizeof(float));
    sd_status s = ids && e && p ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (s == SD_OK)
        s = sd_model_tokenize(m, m->tok, prompt, ids, seq, true); /* the model's prompt tokenizer (one warning) */
    if (s == SD_OK)
        s = sd_model_tokenize(m, m->tok2, prompt_2, ids + seq, seq, false);
    if (s == SD_OK) {
        xl_text_job j = {m, ids, ids + seq, seq, clip_skip, e, p};
        s = sd_pipe_stage(m->be, xl_text_stage, &j, "the SDXL text encoders");
    }
    free(ids);
    if (s != SD_OK) {
        free(e);
        free(p);
        return s;
    }
    *embeds = e;
    *pooled = p;
    *seq_len = seq;
    *dim = D;
    *pooled_dim = P;
    return SD_OK;
}

/* ---------------------------------------------------------------- micro-conditioning */

static int or_default(int v, int def) { return v > 0 ? v : def; }

void sd_sdxl_time_ids(const sd_pipe_args *a, float pos[SD_UNET_TIME_IDS], float neg[SD_UNET_TIME_IDS])
{
    const sd_sdxl_micro *c = &a->micro;
    /* defaults: original_size = target_size = (height, width), crops (0, 0) */
    int oh = or_default(c->original_size[0], a->height), ow = or_default(c->original_size[1], a->width);
    int th = or_default(c->target_size[0], a->height), tw = or_default(c->target_size[1], a->width);
    const float p[SD_UNET_TIME_IDS] = {(float)oh, (float)ow, (float)c->crops_top_left[0], (float)c->crops_top_left[1],
                                       (float)th, (float)tw};
    memcpy(pos, p, sizeof p);
    memcpy(neg, p, sizeof p);
    bool neg_o = c->negative_original_size[0] > 0 && c->negative_original_size[1] > 0;
    bool neg_t = c->negative_target_size[0] > 0 && c->negative_target_size[1] > 0;
    if (a->image) {
        /* StableDiffusionXLImg2ImgPipeline (no aesthetic score): negative_original_size + the POSITIVE crops +
         * negative_target_size, each negative size defaulting to the positive one */
        if (neg_o) {
            neg[0] = (float)c->negative_original_size[0];
            neg[1] = (float)c->negative_original_size[1];
        }
        if (neg_t) {
            neg[4] = (float)c->negative_target_size[0];
            neg[5] = (float)c->negative_target_size[1];
        }
    } else if (neg_o && neg_t) {
        /* StableDiffusionXLPipeline: its own negative ids only when both negative sizes are given */
        const float n[SD_UNET_TIME_IDS] = {(float)c->negative_original_size[0], (float)c->negative_original_size[1],
                                           (float)c->negative_crops_top_left[0], (float)c->negative_crops_top_left[1],
                                           (float)c->negative_target_size[0], (float)c->negative_target_size[1]};
        memcpy(neg, n, sizeof n);
    }
}
