/* Helpers shared by the single-file checkpoint tests (test_checkpoint.c, test_checkpoint_sdxl.c): weights
 * aliases by name, a component's tensors against a diffusers file, derived configs against a config.json.
 * Include after test.h. */
#ifndef SD_TEST_CKPT_UTIL_H
#define SD_TEST_CKPT_UTIL_H

#include "models/weights.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>

static inline const sd_wsrc *alias(const sd_weights *w, const char *name)
{
    for (size_t i = 0; i < w->n_idx; i++)
        if (!strcmp(w->idx[i].name, name))
            return &w->idx[i];
    return NULL;
}

static inline void squeeze(const int64_t *s, int n, int64_t *out, int *on)
{
    while (n > 1 && s[n - 1] == 1)
        n--;
    memcpy(out, s, (size_t)n * sizeof *s);
    *on = n;
}

/* Every tensor of `file` must be an alias in w with the same bytes and shape. */
static inline void compare_component(sd_weights *w, const char *file, const char *skip_name, const char *what)
{
    sd_safetensors *ref;
    if (sd_safetensors_open(file, &ref) != SD_OK) {
        CHECK_MSG(0, "%s: %s", file, sd_last_error());
        return;
    }
    size_t n_ok = 0, n_ref = 0;
    for (size_t i = 0; i < ref->n_tensors; i++) {
        const sd_st_tensor *r = &ref->tensors[i];
        if ((skip_name && !strcmp(r->name, skip_name)) || strstr(r->name, "position_ids"))
            continue;
        n_ref++;
        const sd_wsrc *a = alias(w, r->name);
        char tm[600];
        snprintf(tm, sizeof tm, "text_model.%s", r->name);
        if (!a && strncmp(r->name, "text_model.", 11) && strncmp(r->name, "text_projection", 15))
            a = alias(w, tm); /* a transformers 5 file without the text_model. level (the loader adds it) */
        if (!a) {
            CHECK_MSG(0, "%s: '%s' not reachable through the mapping", what, r->name);
            continue;
        }
        int64_t as[SD_ST_MAX_DIMS], rs[SD_ST_MAX_DIMS], s0[SD_ST_MAX_DIMS];
        int an, rn;
        memcpy(s0, a->t->shape, sizeof s0);
        if (a->t->ndim)
            s0[0] = a->rows;
        squeeze(s0, a->t->ndim, as, &an);
        squeeze(r->shape, r->ndim, rs, &rn);
        bool shape_ok = an == rn && !memcmp(as, rs, (size_t)an * sizeof *as);
        size_t es = sd_dtype_size(a->t->dtype);
        size_t row = a->t->ndim && a->t->shape[0] ? a->t->numel / (size_t)a->t->shape[0] : 1;
        const uint8_t *src = (const uint8_t *)a->t->data + (size_t)a->row0 * row * es;
        bool data_ok = shape_ok && a->t->dtype == r->dtype && row * (size_t)a->rows * es == r->nbytes &&
                       !memcmp(src, r->data, r->nbytes);
        CHECK_MSG(shape_ok && data_ok, "%s: '%s' (from %s) %s", what, r->name, a->t->name,
                  !shape_ok ? "shape differs" : "data differs");
        n_ok += shape_ok && data_ok;
    }
    CHECK_MSG(n_ref == w->n_idx, "%s: %zu reference tensors but %zu aliases", what, n_ref, w->n_idx);
    printf("  %s: %zu/%zu tensors identical (%zu aliases)\n", what, n_ok, n_ref, w->n_idx);
    sd_safetensors_close(ref);
}

static inline cJSON *load_json(const char *path)
{
    char *txt = NULL;
    size_t len = 0;
    if (sd_read_file(path, 1 << 20, &txt, &len) != SD_OK)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    return j;
}

/* derived[k] must equal folder[k] for each key (absent/null in folder counts as null). */
static inline void compare_config(const cJSON *derived, const char *config_path, const char *const *keys,
                                  size_t nk, const char *what)
{
    cJSON *ref = load_json(config_path);
    CHECK_MSG(ref != NULL, "%s: cannot read %s", what, config_path);
    if (!ref)
        return;
    size_t ok = 0;
    for (size_t i = 0; i < nk; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(derived, keys[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(ref, keys[i]);
        bool eq = (a && b) ? cJSON_Compare(a, b, true) : false;
        if (!eq && a && b && cJSON_IsNumber(a) && cJSON_IsNumber(b))
            eq = fabs(a->valuedouble - b->valuedouble) <= 1e-9 * fabs(b->valuedouble);
        if (!eq) {
            char *sa = a ? cJSON_PrintUnformatted(a) : NULL, *sb = b ? cJSON_PrintUnformatted(b) : NULL;
            CHECK_MSG(0, "%s config '%s': derived %s, folder %s", what, keys[i], sa ? sa : "(absent)",
                      sb ? sb : "(absent)");
            free(sa);
            free(sb);
        } else {
            ok++;
        }
    }
    printf("  %s config: %zu/%zu keys equal\n", what, ok, nk);
    cJSON_Delete(ref);
}

/* $SD_TEST_DATA/models/<rel> into buf (committed test data; ctest sets SD_TEST_DATA) */
static inline const char *models_path(char *buf, size_t cap, const char *rel)
{
    const char *d = getenv("SD_TEST_DATA");
    snprintf(buf, cap, "%s/models/%s", d ? d : "tests/data", rel);
    return buf;
}

#endif
