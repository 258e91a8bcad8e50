/* CLIP text encoder (transformers CLIPTextModel / CLIPTextModelWithProjection).
 *
 * Pre-LN transformer with a causal mask and no padding mask (as Stable
 * Diffusion uses it). Weights are the transformers state-dict keys:
 *   text_model.embeddings.{token,position}_embedding.weight
 *   text_model.encoder.layers.<i>.{layer_norm1,layer_norm2}.{weight,bias}
 *   text_model.encoder.layers.<i>.self_attn.{q,k,v,out}_proj.{weight,bias}
 *   text_model.encoder.layers.<i>.mlp.{fc1,fc2}.{weight,bias}
 *   text_model.final_layer_norm.{weight,bias}
 *   text_projection.weight            (only with with_projection)
 *
 * Hooked activations (sd_hookf, transformers module paths):
 *   "text_model.embeddings"        = hidden_states[0]
 *   "text_model.encoder.layers.<i>" = hidden_states[i+1]
 *   "text_model.final_layer_norm"  = last_hidden_state
 */
#ifndef SD_MODELS_CLIP_H
#define SD_MODELS_CLIP_H

#include "backend/ops.h"
#include "io/config.h"
#include "models/weights.h"

typedef struct sd_clip_config {
    int vocab_size;              /* 49408 */
    int hidden_size;             /* D */
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int max_position_embeddings; /* 77 */
    sd_unary_op hidden_act;      /* quick_gelu | gelu (erf) | gelu_new/gelu_pytorch_tanh/gelu_fast (tanh) */
    float layer_norm_eps;        /* 1e-5 */
    int projection_dim;
    int eos_token_id;            /* 2 = legacy rule: pooled row at argmax(ids) */
    bool with_projection;        /* CLIPTextModelWithProjection: load text_projection.weight */
} sd_clip_config;

typedef struct sd_clip_layer {
    sd_tensor ln1_w, ln1_b, ln2_w, ln2_b;
    sd_tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
    sd_tensor fc1_w, fc1_b, fc2_w, fc2_b;
} sd_clip_layer;

typedef struct sd_clip {
    sd_clip_config cfg;
    sd_tensor tok_emb, pos_emb;
    sd_clip_layer *layers;
    sd_tensor final_ln_w, final_ln_b;
    sd_tensor text_projection; /* [P, D]; data NULL without projection */
    sd_weights *owned_weights; /* set by sd_clip_load_dir (freed with the model) */
} sd_clip;

/* Parses a transformers config.json (CLIPTextConfig; a full CLIPConfig with a
 * "text_config" object also works). with_projection is true when
 * "architectures" names CLIPTextModelWithProjection (callers may override).
 * An unknown hidden_act is SD_ERR_UNSUPPORTED naming it. */
sd_status sd_clip_config_load(const char *config_json, sd_clip_config *c);
sd_status sd_clip_config_from(const sd_config *json, sd_clip_config *c);

/* Names a transformers-5 CLIPTextModel file's tensors ("embeddings.*", "encoder.*",
 * "final_layer_norm.*", saved without the "text_model." prefix) by the canonical
 * "text_model.*" keys, in `w`'s index (finalized again); a no-op for files that have
 * the prefix. sd_clip_load calls it. */
sd_status sd_clip_weights_canonical(sd_weights *w);
/* Loads every tensor (shape-checked against the config) from `w`, which must
 * outlive the model (its index may be renamed: sd_clip_weights_canonical). Missing tensor -> SD_ERR_NOT_FOUND, wrong shape -> SD_ERR_SHAPE. */
sd_status sd_clip_load(sd_weights *w, const sd_clip_config *c, sd_clip **out);
/* Visits every loaded weight handle by its state-dict name (for LoRA fusing:
 * see sd_weight_visit_fn in weights.h). */
sd_status sd_clip_for_each_weight(sd_clip *m, sd_weight_visit_fn fn, void *user);
/* Convenience: a transformers text_encoder folder (config.json +
 * model.safetensors or model.fp16.safetensors). with_projection: -1 = from
 * config, 0/1 = force. Weights are kept in the backend's activation dtype. */
sd_status sd_clip_load_dir(sd_backend *be, const char *dir, int with_projection, sd_clip **out);
void sd_clip_free(sd_clip *m);

/* Runs the encoder on host token ids [batch * seq_len] (0 <= id < vocab_size,
 * seq_len <= max_position_embeddings).
 *
 * Returns [B,S,D]: with clip_skip = 0 the last_hidden_state (final layer norm
 * of the last layer, what SD feeds the UNet); with clip_skip = k > 0 the
 * diffusers encode_prompt(clip_skip=k) semantics: final_layer_norm(
 * hidden_states[-(k+1)]), i.e. the last k layers are skipped (k <= layers).
 * (A1111's "clip skip 2" is k = 1 here.)
 * Optional outputs (pass NULL to skip): pooled [B,D] = last_hidden_state at
 * the eos position (argmax(ids) when eos_token_id == 2, else the first
 * position of eos_token_id, 0 if absent - as transformers); text_embeds
 * [B,P] = pooled @ text_projection^T (needs with_projection).
 * The returned tensors sit at the bottom of what this call allocated in the
 * arena (outputs first), so a caller can sd_keep/sd_release around it.
 * Errors are recorded in ctx->status (and an empty tensor returned). */
sd_tensor sd_clip_forward(sd_ctx *ctx, const sd_clip *m, const int32_t *host_ids, int batch, int seq_len,
                          int clip_skip, sd_tensor *pooled, sd_tensor *text_embeds);

/* General form: returns hidden_states[-(skip+1)] (skip = 0: last layer
 * output), passed through final_layer_norm when final_norm. SDXL uses
 * skip = 1 + clip_skip, final_norm = false (the penultimate hidden state). */
sd_tensor sd_clip_forward_hidden(sd_ctx *ctx, const sd_clip *m, const int32_t *host_ids, int batch, int seq_len,
                                 int skip, bool final_norm, sd_tensor *pooled, sd_tensor *text_embeds);

/* Index of the pooled (eos) token in one row of ids, by the config's rule. */
int sd_clip_pool_index(const sd_clip_config *c, const int32_t *ids, int seq_len);

#endif
