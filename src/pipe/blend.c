/* Prompt and seed blending: weights, linear / slerp, and the LRU cache of blended inputs (blend.h).
 * Reference: tools/gen_blend_cases.py computes the same blends with torch (tests/data/blend). */
#include "pipe/blend.h"

#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool sd_blend_mode_from_name(const char *name, sd_blend_mode *out)
{
    if (!name)
        return false;
    if (!strcmp(name, "linear"))
        *out = SD_BLEND_LINEAR;
    else if (!strcmp(name, "slerp"))
        *out = SD_BLEND_SLERP;
    else
        return false;
    return true;
}

const char *sd_blend_mode_name(sd_blend_mode m) { return m == SD_BLEND_SLERP ? "slerp" : "linear"; }

sd_status sd_blend_check(const float *w, int n, const char *what)
{
    what = what ? what : "weights";
    if (n < 1 || !w)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: the list is empty (give at least one entry)", what);
    if (n > SD_STREAM_MAX_BLEND)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %d entries, at most %d can be blended", what, n,
                       SD_STREAM_MAX_BLEND);
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        if (!isfinite(w[i]))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: weight[%d] is not a finite number", what, i);
        if (w[i] < 0.0f)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: weight[%d] = %g is negative (weights must be >= 0)", what,
                           i, (double)w[i]);
        sum += w[i];
    }
    if (!(sum > 0.0f) || !isfinite(sum))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: the weights sum to %g (they must sum to a positive number)",
                       what, (double)sum);
    return SD_OK;
}

sd_status sd_blend_weights(const float *w, int n, bool normalize, const char *what, float *eff)
{
    SD_TRY(sd_blend_check(w, n, what));
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += w[i];
    for (int i = 0; i < n; i++) /* torch: weights_tensor / weights_tensor.sum() in float32 */
        eff[i] = normalize ? w[i] / sum : w[i];
    return SD_OK;
}

void sd_slerp(const float *a, const float *b, size_t len, float t, float *out)
{
    if (t <= 0.0f) {
        memcpy(out, a, len * sizeof(float));
        return;
    }
    if (t >= 1.0f) {
        memcpy(out, b, len * sizeof(float));
        return;
    }
    /* F.normalize(x, dim=0) = x / max(|x|, 1e-12); the dot of the normalised vectors, clamped */
    double aa = 0.0, bb = 0.0, ab = 0.0;
    for (size_t i = 0; i < len; i++) {
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
        ab += (double)a[i] * b[i];
    }
    double na = fmax(sqrt(aa), 1e-12), nb = fmax(sqrt(bb), 1e-12);
    double dot = fmin(1.0, fmax(-1.0, ab / (na * nb)));
    double theta = acos(dot);
    float w0, w1;
    if (fabs(theta) < 1e-6) { /* parallel: linear */
        w0 = 1.0f - t;
        w1 = t;
    } else {
        double st = sin(theta);
        w0 = (float)(sin((1.0 - t) * theta) / st);
        w1 = (float)(sin(t * theta) / st);
    }
    for (size_t i = 0; i < len; i++)
        out[i] = w0 * a[i] + w1 * b[i];
}

void sd_blend(const float *const *v, const float *eff, int n, size_t len, sd_blend_mode mode, float *out)
{
    if (mode == SD_BLEND_SLERP && n == 2) { /* t = the second effective weight */
        sd_slerp(v[0], v[1], len, eff[1], out);
        return;
    }
    memset(out, 0, len * sizeof(float)); /* combined = zeros; combined += w_i * x_i, in order */
    for (int k = 0; k < n; k++) {
        const float *x = v[k];
        float wk = eff[k];
        for (size_t i = 0; i < len; i++)
            out[i] += wk * x[i];
    }
}

/* ---------------------------------------------------------------- cache */

void sd_blend_cache_init(sd_blend_cache *c, size_t len)
{
    memset(c, 0, sizeof *c);
    c->len = len;
}

void sd_blend_cache_free(sd_blend_cache *c)
{
    for (int i = 0; i < SD_BLEND_CACHE_SLOTS; i++) {
        free(c->key[i]);
        free(c->val[i]);
    }
    sd_blend_cache_init(c, c->len);
}

void sd_blend_cache_clear(sd_blend_cache *c)
{
    for (int i = 0; i < SD_BLEND_CACHE_SLOTS; i++) {
        free(c->key[i]);
        c->key[i] = NULL;
        c->used[i] = 0;
    }
}

int sd_blend_cache_find(sd_blend_cache *c, const char *key)
{
    for (int i = 0; i < SD_BLEND_CACHE_SLOTS; i++)
        if (c->key[i] && !strcmp(c->key[i], key)) {
            c->used[i] = ++c->tick;
            return i;
        }
    return -1;
}

sd_status sd_blend_cache_take(sd_blend_cache *c, uint32_t pinned, int *slot)
{
    int best = -1;
    for (int i = 0; i < SD_BLEND_CACHE_SLOTS; i++) {
        if (pinned >> i & 1u)
            continue;
        if (!c->key[i]) { /* free */
            best = i;
            break;
        }
        if (best < 0 || c->used[i] < c->used[best])
            best = i;
    }
    if (best < 0) /* cannot happen: lists pin at most SD_STREAM_MAX_BLEND + 1 slots */
        return sd_fail(SD_ERR_INTERNAL, "blend cache: every slot is in use");
    free(c->key[best]);
    c->key[best] = NULL;
    if (!c->val[best] && !(c->val[best] = sd_malloc(c->len * sizeof(float))))
        return SD_ERR_OUT_OF_MEMORY;
    *slot = best;
    return SD_OK;
}

sd_status sd_blend_cache_commit(sd_blend_cache *c, int slot, const char *key)
{
    if (!(c->key[slot] = sd_strdup(key)))
        return SD_ERR_OUT_OF_MEMORY;
    c->used[slot] = ++c->tick;
    c->fills++;
    return SD_OK;
}
