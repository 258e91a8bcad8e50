/* Prompt and seed blending in `serve` (docs/protocol.md): the "config" fields "prompts" ([{"prompt": TEXT,
 * "weight": W}, ...], [] = off), "prompt_blend" ("linear" | "slerp"), "seeds" ([{"seed": N, "weight": W}, ...],
 * [] = off), "seed_blend", "raw_weights" (true: weights as given); their JSON, what they change and how a
 * stream gets them (sd_stream_set_prompts / sd_stream_set_seeds, whose weight rule sd_blend_check is). */
#include "server.h"

#include <math.h>
#include <string.h>

static const char *const k_blend_fields[] = {"prompts", "prompt_blend", "seeds", "seed_blend", "raw_weights"};

static bool blend_mode(const cJSON *it, const char *name, sd_blend_mode *out, srv_error *err)
{
    if (cJSON_IsString(it) && sd_blend_mode_from_name(it->valuestring, out))
        return true;
    srv_error_set(err, cJSON_IsString(it) ? "bad_value" : "bad_type", "field '%s' must be \"linear\" or \"slerp\"",
                  name);
    return false;
}

/* [{"prompt"|"seed": .., "weight": W}, ...]: up to SD_STREAM_MAX_BLEND entries, weights by sd_blend_check */
static bool blend_list(const cJSON *it, bool seeds, const srv_limits *lim, srv_blend *b, srv_error *err)
{
    const char *name = seeds ? "seeds" : "prompts", *key = seeds ? "seed" : "prompt";
    if (!cJSON_IsArray(it)) {
        srv_error_set(err, "bad_type", "field '%s' must be an array of {\"%s\": .., \"weight\": ..} objects", name, key);
        return false;
    }
    int n = cJSON_GetArraySize(it);
    if (n > SD_STREAM_MAX_BLEND) {
        srv_error_set(err, "bad_value", "field '%s' has %d entries; at most %d can be blended", name, n,
                      SD_STREAM_MAX_BLEND);
        return false;
    }
    size_t maxp = SD_MIN(lim->max_prompt_bytes, (size_t)SRV_BLEND_PROMPT_MAX);
    float w[SD_STREAM_MAX_BLEND];
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, key), *wt = cJSON_GetObjectItemCaseSensitive(e, "weight");
        if (!cJSON_IsObject(e) || !k || !cJSON_IsNumber(wt) || cJSON_GetArraySize(e) != 2) {
            srv_error_set(err, "bad_type", "%s[%d] must be {\"%s\": .., \"weight\": NUMBER}", name, i, key);
            return false;
        }
        w[i] = isfinite(wt->valuedouble) && fabs(wt->valuedouble) < 1e30 ? (float)wt->valuedouble : NAN;
        if (seeds) {
            double d = k->valuedouble;
            if (!cJSON_IsNumber(k) || !isfinite(d) || d < 0 || d > 9007199254740991.0 || d != floor(d)) {
                srv_error_set(err, "bad_value", "seeds[%d].seed must be a whole number 0..2^53-1", i);
                return false;
            }
            b->seeds[i] = (uint64_t)d;
        } else {
            size_t len = cJSON_IsString(k) ? strlen(k->valuestring) : 0;
            if (!cJSON_IsString(k) || len > maxp || !srv_utf8_valid((const uint8_t *)k->valuestring, len)) {
                srv_error_set(err, cJSON_IsString(k) ? "bad_value" : "bad_type",
                              "prompts[%d].prompt must be UTF-8 text of at most %zu bytes", i, maxp);
                return false;
            }
            memcpy(b->prompts[i], k->valuestring, len + 1);
        }
        i++;
    }
    if (n && sd_blend_check(w, n, name) != SD_OK) {
        srv_error_set(err, "bad_value", "%s", sd_last_error());
        return false;
    }
    memcpy(seeds ? b->seed_weights : b->prompt_weights, w, sizeof(float) * (size_t)n);
    *(seeds ? &b->n_seeds : &b->n_prompts) = n;
    return true;
}

int srv_blend_field(const char *name, const cJSON *it, const srv_limits *lim, srv_config *c, unsigned *seen,
                    srv_error *err)
{
    int f = -1;
    for (int i = 0; i < (int)SD_ARRAY_LEN(k_blend_fields); i++)
        if (!strcmp(name, k_blend_fields[i]))
            f = i;
    if (f < 0)
        return -1;
    if (*seen & (1u << f)) {
        srv_error_set(err, "duplicate_field", "field '%s' appears twice", name);
        return 0;
    }
    *seen |= 1u << f;
    srv_blend *b = &c->blend;
    switch (f) {
    case 0:
    case 2:
        return blend_list(it, f == 2, lim, b, err);
    case 1:
    case 3:
        return blend_mode(it, name, f == 1 ? &b->prompt_blend : &b->seed_blend, err);
    default:
        if (!cJSON_IsBool(it)) {
            srv_error_set(err, "bad_type", "field 'raw_weights' must be true or false");
            return 0;
        }
        b->raw_weights = cJSON_IsTrue(it);
        return 1;
    }
}

unsigned srv_blend_diff(const srv_config *a, const srv_config *b)
{
    const srv_blend *x = &a->blend, *y = &b->blend;
    unsigned d = 0;
    bool raw = x->raw_weights != y->raw_weights;
    if (raw || x->n_prompts != y->n_prompts || x->prompt_blend != y->prompt_blend ||
        memcmp(x->prompt_weights, y->prompt_weights, sizeof(float) * (size_t)x->n_prompts))
        d |= SRV_CHANGE_PROMPT;
    for (int i = 0; i < x->n_prompts && !(d & SRV_CHANGE_PROMPT); i++)
        if (strcmp(x->prompts[i], y->prompts[i]))
            d |= SRV_CHANGE_PROMPT;
    if (raw || x->n_seeds != y->n_seeds || x->seed_blend != y->seed_blend ||
        memcmp(x->seeds, y->seeds, sizeof(uint64_t) * (size_t)x->n_seeds) ||
        memcmp(x->seed_weights, y->seed_weights, sizeof(float) * (size_t)x->n_seeds))
        d |= SRV_CHANGE_SEEDS;
    return d;
}

void srv_blend_json(const srv_config *c, cJSON *o)
{
    const srv_blend *b = &c->blend;
    cJSON *p = cJSON_AddArrayToObject(o, "prompts"), *s = cJSON_AddArrayToObject(o, "seeds");
    for (int i = 0; p && i < b->n_prompts; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "prompt", b->prompts[i]);
        cJSON_AddNumberToObject(e, "weight", round((double)b->prompt_weights[i] * 1e4) / 1e4);
        cJSON_AddItemToArray(p, e);
    }
    for (int i = 0; s && i < b->n_seeds; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "seed", (double)b->seeds[i]);
        cJSON_AddNumberToObject(e, "weight", round((double)b->seed_weights[i] * 1e4) / 1e4);
        cJSON_AddItemToArray(s, e);
    }
    cJSON_AddStringToObject(o, "prompt_blend", sd_blend_mode_name(b->prompt_blend));
    cJSON_AddStringToObject(o, "seed_blend", sd_blend_mode_name(b->seed_blend));
    cJSON_AddBoolToObject(o, "raw_weights", b->raw_weights);
}

sd_status srv_blend_set_prompts(sd_stream *s, const srv_config *c)
{
    const srv_blend *b = &c->blend;
    if (!b->n_prompts)
        return sd_stream_set_prompt(s, c->prompt, c->negative_prompt);
    sd_prompt_weight pw[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < b->n_prompts; i++)
        pw[i] = (sd_prompt_weight){b->prompts[i], b->prompt_weights[i]};
    return sd_stream_set_prompts(s, pw, b->n_prompts, c->negative_prompt, b->prompt_blend, !b->raw_weights);
}

sd_status srv_blend_set_seeds(sd_stream *s, const srv_config *c)
{
    const srv_blend *b = &c->blend;
    if (!b->n_seeds)
        return sd_stream_set_seed(s, c->seed);
    sd_seed_weight sw[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < b->n_seeds; i++)
        sw[i] = (sd_seed_weight){b->seeds[i], b->seed_weights[i]};
    return sd_stream_set_seeds(s, sw, b->n_seeds, b->seed_blend, !b->raw_weights);
}

/* ---------------------------------------------------------------- live control (OSC) */

bool srv_blend_control(const srv_control *u, srv_config *out, srv_error *err)
{
    srv_blend *b = &out->blend;
    const srv_blend *n = &u->blend;
    if (u->set & SRV_CTL_PROMPT) /* one prompt replaces the list */
        b->n_prompts = 0;
    if (u->set & SRV_CTL_SEED)
        b->n_seeds = 0;
    for (int k = 0; k < 2; k++) {
        bool seeds = k == 1;
        unsigned list = seeds ? SRV_CTL_SEEDS : SRV_CTL_PROMPTS, wts = seeds ? SRV_CTL_SEED_WEIGHTS : SRV_CTL_PROMPT_WEIGHTS;
        const char *what = seeds ? "seeds" : "prompts";
        int cnt = seeds ? n->n_seeds : n->n_prompts, *have = seeds ? &b->n_seeds : &b->n_prompts;
        const float *w = seeds ? n->seed_weights : n->prompt_weights;
        if (!(u->set & (list | wts)))
            continue;
        if ((u->set & wts) && !(u->set & list) && cnt != *have) {
            srv_error_set(err, "bad_value", "%s weights: %d for a list of %d", what, cnt, *have);
            return false;
        }
        if (sd_blend_check(w, cnt, what) != SD_OK) {
            srv_error_set(err, "bad_value", "%s", sd_last_error());
            return false;
        }
        if ((u->set & list) && seeds)
            memcpy(b->seeds, n->seeds, sizeof b->seeds);
        if ((u->set & list) && !seeds)
            memcpy(b->prompts, n->prompts, sizeof b->prompts);
        memcpy(seeds ? b->seed_weights : b->prompt_weights, w, sizeof(float) * (size_t)cnt);
        *have = cnt;
    }
    if (u->set & SRV_CTL_PROMPT_BLEND)
        b->prompt_blend = n->prompt_blend;
    if (u->set & SRV_CTL_SEED_BLEND)
        b->seed_blend = n->seed_blend;
    return true;
}
