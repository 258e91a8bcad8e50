#include "io/config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sd_status sd_config_parse(const char *text, size_t len, const char *label, sd_config *out)
{
    memset(out, 0, sizeof *out);
    out->path_owned = sd_strdup(label ? label : "<config>");
    if (!out->path_owned)
        return SD_ERR_OUT_OF_MEMORY;
    out->path = out->path_owned;
    out->owner = true;
    const char *end = NULL;
    out->root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    /* cJSON_ParseWithLength stops after the first value: reject anything but whitespace after it */
    for (const char *q = end; out->root && q && q < text + len && *q; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            cJSON_Delete(out->root);
            out->root = NULL;
            sd_status s = sd_fail(SD_ERR_FORMAT, "%s: invalid JSON: unexpected text after the top-level value "
                                  "near byte %ld", out->path, (long)(q - text));
            sd_config_free(out);
            return s;
        }
    if (!out->root) {
        const char *ep = cJSON_GetErrorPtr();
        long off = ep && ep >= text && ep <= text + len ? (long)(ep - text) : -1;
        sd_status s = sd_fail(SD_ERR_FORMAT, "%s: invalid JSON near byte %ld", out->path, off);
        sd_config_free(out);
        return s;
    }
    if (!cJSON_IsObject(out->root)) {
        sd_status s = sd_fail(SD_ERR_FORMAT, "%s: expected a JSON object at the top level", out->path);
        sd_config_free(out);
        return s;
    }
    return SD_OK;
}

sd_status sd_config_load(const char *path, sd_config *out)
{
    memset(out, 0, sizeof *out);
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, SD_CONFIG_MAX_BYTES, &text, &len));
    sd_status s = sd_config_parse(text, len, path, out);
    free(text);
    return s;
}

void sd_config_free(sd_config *c)
{
    if (c->owner)
        cJSON_Delete(c->root);
    free(c->path_owned);
    memset(c, 0, sizeof *c);
}

static const cJSON *get(const sd_config *c, const char *key)
{
    const cJSON *v = c->root ? cJSON_GetObjectItemCaseSensitive(c->root, key) : NULL;
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

bool sd_config_has(const sd_config *c, const char *key) { return get(c, key) != NULL; }

sd_status sd_config_sub(const sd_config *c, const char *key, sd_config *out)
{
    memset(out, 0, sizeof *out);
    const cJSON *v = get(c, key);
    if (!v)
        return sd_fail(SD_ERR_NOT_FOUND, "%s: key '%s' is missing", c->path, key);
    if (!cJSON_IsObject(v))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be an object", c->path, key);
    out->root = (cJSON *)v;
    out->path = c->path;
    return SD_OK;
}

static bool as_int(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(fabs(d) <= 9007199254740992.0) || floor(d) != d)
        return false;
    *out = (int64_t)d;
    return true;
}

sd_status sd_config_int(const sd_config *c, const char *key, int64_t def, int64_t *out)
{
    const cJSON *v = get(c, key);
    *out = def;
    if (!v)
        return SD_OK;
    if (!as_int(v, out))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be an integer", c->path, key);
    return SD_OK;
}

static bool as_float(const cJSON *v, double *out)
{
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return true;
    }
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (!strcmp(s, "inf") || !strcmp(s, "Infinity")) { *out = INFINITY; return true; }
        if (!strcmp(s, "-inf") || !strcmp(s, "-Infinity")) { *out = -INFINITY; return true; }
        if (!strcmp(s, "nan") || !strcmp(s, "NaN")) { *out = NAN; return true; }
    }
    return false;
}

sd_status sd_config_float(const sd_config *c, const char *key, double def, double *out)
{
    const cJSON *v = get(c, key);
    *out = def;
    if (!v)
        return SD_OK;
    if (!as_float(v, out))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be a number", c->path, key);
    return SD_OK;
}

sd_status sd_config_bool(const sd_config *c, const char *key, bool def, bool *out)
{
    const cJSON *v = get(c, key);
    *out = def;
    if (!v)
        return SD_OK;
    if (!cJSON_IsBool(v))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be true or false", c->path, key);
    *out = cJSON_IsTrue(v);
    return SD_OK;
}

sd_status sd_config_str(const sd_config *c, const char *key, const char *def, const char **out)
{
    const cJSON *v = get(c, key);
    *out = def;
    if (!v)
        return SD_OK;
    if (!cJSON_IsString(v))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be a string", c->path, key);
    *out = v->valuestring;
    return SD_OK;
}

sd_status sd_config_int_list(const sd_config *c, const char *key, int64_t *out, int max, int broadcast_n, int *count)
{
    const cJSON *v = get(c, key);
    *count = 0;
    if (!v)
        return sd_fail(SD_ERR_NOT_FOUND, "%s: key '%s' is missing", c->path, key);
    if (cJSON_IsNumber(v) && broadcast_n > 0) {
        int64_t x;
        if (!as_int(v, &x))
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be an integer or a list of integers", c->path, key);
        if (broadcast_n > max)
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s': more than %d entries", c->path, key, max);
        for (int i = 0; i < broadcast_n; i++)
            out[i] = x;
        *count = broadcast_n;
        return SD_OK;
    }
    if (!cJSON_IsArray(v))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be a list of integers", c->path, key);
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (n >= max)
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s' has more than %d entries", c->path, key, max);
        if (!as_int(e, &out[n]))
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s' entry %d is not an integer", c->path, key, n);
        n++;
    }
    *count = n;
    return SD_OK;
}

sd_status sd_config_str_list(const sd_config *c, const char *key, const char **out, int max, int *count)
{
    const cJSON *v = get(c, key);
    *count = 0;
    if (!v)
        return sd_fail(SD_ERR_NOT_FOUND, "%s: key '%s' is missing", c->path, key);
    if (!cJSON_IsArray(v))
        return sd_fail(SD_ERR_FORMAT, "%s: key '%s' must be a list of strings", c->path, key);
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (n >= max)
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s' has more than %d entries", c->path, key, max);
        if (!cJSON_IsString(e))
            return sd_fail(SD_ERR_FORMAT, "%s: key '%s' entry %d is not a string", c->path, key, n);
        out[n++] = e->valuestring;
    }
    *count = n;
    return SD_OK;
}
