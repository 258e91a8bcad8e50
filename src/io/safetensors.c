#include "io/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[SD_DTYPE_COUNT] = {
    [SD_F32] = {"F32", 4}, [SD_F16] = {"F16", 2}, [SD_BF16] = {"BF16", 2}, [SD_I64] = {"I64", 8},
    [SD_I32] = {"I32", 4}, [SD_U8] = {"U8", 1},   [SD_BOOL] = {"BOOL", 1},
};

size_t sd_dtype_size(sd_dtype t) { return (unsigned)t < SD_DTYPE_COUNT ? k_dtypes[t].size : 0; }
const char *sd_dtype_name(sd_dtype t) { return (unsigned)t < SD_DTYPE_COUNT ? k_dtypes[t].name : "?"; }

bool sd_dtype_from_name(const char *name, sd_dtype *out)
{
    for (int i = 0; i < SD_DTYPE_COUNT; i++)
        if (strcmp(name, k_dtypes[i].name) == 0) {
            *out = (sd_dtype)i;
            return true;
        }
    return false;
}

#define BAD(rule, ...) sd_fail(SD_ERR_FORMAT, "%s: [" rule "] " __VA_ARGS__)

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const sd_st_tensor *)a)->name, ((const sd_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const sd_st_tensor *x = *(const sd_st_tensor *const *)a, *y = *(const sd_st_tensor *const *)b;
    uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
        return false;
    *out = (uint64_t)d;
    return true;
}

static sd_status parse_header(sd_safetensors *st, const uint8_t *data, size_t len)
{
    const char *p = st->path;
    if (len < 8)
        return BAD("file-too-small", "file is %zu bytes, shorter than the 8-byte header length", p, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | data[i];
    if (n > SD_ST_MAX_HEADER)
        return BAD("header-too-large", "header length %llu exceeds the limit of %llu bytes", p, (unsigned long long)n,
                   (unsigned long long)SD_ST_MAX_HEADER);
    if (n > len - 8)
        return BAD("header-out-of-file", "header length %llu is larger than the %zu bytes after the length prefix", p,
                   (unsigned long long)n, len - 8);
    const char *end = NULL;
    st->header = cJSON_ParseWithLengthOpts((const char *)data + 8, (size_t)n, &end, false);
    if (!st->header)
        return BAD("header-json", "header is not valid JSON (error near byte %lld)", p,
                   (long long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - (const char *)data - 8 : -1));
    /* allow trailing spaces (padding) only */
    for (const char *q = end; q && q < (const char *)data + 8 + n; q++)
        if (*q != ' ' && *q != '\0' && *q != '\n' && *q != '\t' && *q != '\r')
            return BAD("header-json", "unexpected bytes after the header JSON object", p);
    if (!cJSON_IsObject(st->header))
        return BAD("header-not-object", "header JSON is not an object", p);

    const uint8_t *base = data + 8 + n;
    size_t data_len = len - 8 - (size_t)n;
    size_t count = 0;
    for (cJSON *e = st->header->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0)
            count++;
    st->tensors = sd_calloc(count ? count : 1, sizeof *st->tensors);
    if (!st->tensors)
        return SD_ERR_OUT_OF_MEMORY;

    size_t k = 0;
    for (cJSON *e = st->header->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (st->metadata)
                return BAD("duplicate-name", "__metadata__ appears twice", p);
            if (!cJSON_IsObject(e))
                return BAD("metadata", "__metadata__ is not an object", p);
            for (cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m))
                    return BAD("metadata", "__metadata__ value for '%s' is not a string", p, m->string);
            st->metadata = e;
            continue;
        }
        sd_st_tensor *t = &st->tensors[k++];
        t->name = e->string;
        if (!cJSON_IsObject(e))
            return BAD("entry", "tensor '%s' is not an object", p, e->string);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !sh || !of)
            return BAD("entry", "tensor '%s' lacks a string dtype, a shape or data_offsets", p, e->string);
        if (!sd_dtype_from_name(dt->valuestring, &t->dtype))
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: [unknown-dtype] tensor '%s' has dtype '%.32s'; supported: F32 F16 BF16 I64 I32 U8 BOOL",
                           p, e->string, dt->valuestring);
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > SD_ST_MAX_DIMS)
            return BAD("shape", "tensor '%s': shape must be a list of at most %d integers", p, e->string,
                       SD_ST_MAX_DIMS);
        size_t numel = 1;
        bool overflow = false;
        t->ndim = 0;
        for (const cJSON *d = sh->child; d; d = d->next) {
            uint64_t v;
            if (!json_uint(d, &v))
                return BAD("shape", "tensor '%s': shape entry is not a non-negative integer", p, e->string);
            t->shape[t->ndim++] = (int64_t)v;
            if (v > SIZE_MAX || sd_mul_overflow(numel, (size_t)v, &numel))
                overflow = true;
        }
        size_t nbytes = 0;
        if (overflow || sd_mul_overflow(numel, sd_dtype_size(t->dtype), &nbytes))
            return BAD("shape-overflow", "tensor '%s': the byte size of its shape overflows", p, e->string);
        t->numel = numel;
        t->nbytes = nbytes;
        uint64_t b0, b1;
        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &b0) ||
            !json_uint(of->child->next, &b1) || b0 > b1)
            return BAD("offsets", "tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", p,
                       e->string);
        if (b1 > data_len)
            return BAD("offsets-out-of-data", "tensor '%s': data_offsets end %llu is beyond the %zu-byte data section",
                       p, e->string, (unsigned long long)b1, data_len);
        if (b1 - b0 != nbytes)
            return BAD("size-mismatch", "tensor '%s': %llu bytes in data_offsets but dtype %s x %zu elements = %zu bytes",
                       p, e->string, (unsigned long long)(b1 - b0), k_dtypes[t->dtype].name, numel, nbytes);
        t->data = base + b0;
    }
    st->n_tensors = k;

    /* names unique */
    qsort(st->tensors, k, sizeof *st->tensors, cmp_by_name);
    for (size_t i = 1; i < k; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return BAD("duplicate-name", "tensor name '%s' appears twice", p, st->tensors[i].name);

    /* byte ranges: sorted, non-overlapping, covering the data section */
    const sd_st_tensor **order = sd_calloc(k ? k : 1, sizeof *order);
    if (!order)
        return SD_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < k; i++)
        order[i] = &st->tensors[i];
    qsort(order, k, sizeof *order, cmp_by_offset);
    size_t pos = 0;
    sd_status s = SD_OK;
    for (size_t i = 0; i < k && s == SD_OK; i++) {
        size_t b = (size_t)((const uint8_t *)order[i]->data - base);
        if (b < pos)
            s = BAD("overlap", "tensor '%s' overlaps the bytes of tensor '%s'", p, order[i]->name, order[i - 1]->name);
        else if (b > pos)
            s = BAD("gap", "bytes %zu..%zu of the data section belong to no tensor (before '%s')", p, pos, b,
                    order[i]->name);
        pos = b + order[i]->nbytes;
    }
    free(order);
    if (s == SD_OK && pos != data_len)
        s = BAD("gap", "the data section has %zu bytes but tensors cover only %zu", p, data_len, pos);
    return s;
}

sd_status sd_safetensors_parse(const uint8_t *data, size_t len, const char *label, sd_safetensors **out)
{
    *out = NULL;
    sd_safetensors *st = sd_calloc(1, sizeof *st);
    if (!st)
        return SD_ERR_OUT_OF_MEMORY;
    st->path = sd_strdup(label ? label : "<memory>");
    if (!st->path) {
        free(st);
        return SD_ERR_OUT_OF_MEMORY;
    }
    sd_status s = parse_header(st, data, len);
    if (s != SD_OK) {
        sd_safetensors_close(st);
        return s;
    }
    *out = st;
    return SD_OK;
}

sd_status sd_safetensors_open(const char *path, sd_safetensors **out)
{
    *out = NULL;
    sd_mmap m;
    SD_TRY(sd_mmap_open(path, &m));
    sd_status s = sd_safetensors_parse(m.data, m.size, path, out);
    if (s != SD_OK) {
        sd_mmap_close(&m);
        return s;
    }
    (*out)->map = m;
    return SD_OK;
}

void sd_safetensors_close(sd_safetensors *st)
{
    if (!st)
        return;
    cJSON_Delete(st->header);
    free(st->tensors);
    sd_mmap_close(&st->map);
    free(st->path);
    free(st);
}

const sd_st_tensor *sd_st_find(const sd_safetensors *st, const char *name)
{
    sd_st_tensor key = {.name = name};
    return st->n_tensors ? bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_by_name) : NULL;
}

const char *sd_st_meta(const sd_safetensors *st, const char *key)
{
    if (!st->metadata)
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

double sd_st_get(const sd_st_tensor *t, size_t i)
{
    const uint8_t *b = (const uint8_t *)t->data + i * sd_dtype_size(t->dtype);
    switch (t->dtype) {
    case SD_F32: { float v; memcpy(&v, b, 4); return v; }
    case SD_F16: { uint16_t v; memcpy(&v, b, 2); return sd_f16_to_f32(v); }
    case SD_BF16: { uint16_t v; memcpy(&v, b, 2); return sd_bf16_to_f32(v); }
    case SD_I64: { int64_t v; memcpy(&v, b, 8); return (double)v; }
    case SD_I32: { int32_t v; memcpy(&v, b, 4); return v; }
    case SD_U8: case SD_BOOL: return *b;
    default: return 0;
    }
}

sd_status sd_st_to_f32(const sd_st_tensor *t, float *dst)
{
    if (t->dtype == SD_F32) {
        memcpy(dst, t->data, t->nbytes);
        return SD_OK;
    }
    if (t->dtype == SD_F16) {
        const uint8_t *b = t->data;
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t v;
            memcpy(&v, b + 2 * i, 2);
            dst[i] = sd_f16_to_f32(v);
        }
        return SD_OK;
    }
    for (size_t i = 0; i < t->numel; i++)
        dst[i] = (float)sd_st_get(t, i);
    return SD_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    sd_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    size_t nbytes;
    void *data;
} wentry;

struct sd_st_writer {
    wentry *e;
    size_t n, cap;
    cJSON *meta;
};

sd_st_writer *sd_st_writer_new(void) { return sd_calloc(1, sizeof(sd_st_writer)); }

sd_status sd_st_writer_add(sd_st_writer *w, const char *name, sd_dtype dtype, int ndim, const int64_t *shape,
                           const void *data)
{
    if (ndim < 0 || ndim > SD_ST_MAX_DIMS || (unsigned)dtype >= SD_DTYPE_COUNT || !name || !strcmp(name, "__metadata__"))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "safetensors writer: bad tensor '%s'", name ? name : "(null)");
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || sd_mul_overflow(numel, (size_t)shape[i], &numel))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "safetensors writer: bad shape for '%s'", name);
    size_t nbytes;
    if (sd_mul_overflow(numel, sd_dtype_size(dtype), &nbytes))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "safetensors writer: '%s' too large", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 16;
        wentry *ne = realloc(w->e, nc * sizeof *ne);
        if (!ne)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        w->e = ne;
        w->cap = nc;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = sd_strdup(name);
    e->data = sd_malloc(nbytes);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return SD_ERR_OUT_OF_MEMORY;
    }
    if (nbytes) /* memcpy with a NULL pointer is undefined even for 0 bytes (scalars may pass shape = NULL) */
        memcpy(e->data, data, nbytes);
    e->dtype = dtype;
    e->ndim = ndim;
    if (ndim)
        memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->nbytes = nbytes;
    w->n++;
    return SD_OK;
}

sd_status sd_st_writer_meta(sd_st_writer *w, const char *key, const char *value)
{
    if (!w->meta && !(w->meta = cJSON_CreateObject()))
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    if (!cJSON_AddStringToObject(w->meta, key, value))
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    return SD_OK;
}

sd_status sd_st_writer_save(sd_st_writer *w, const char *path)
{
    cJSON *h = cJSON_CreateObject();
    if (!h)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    if (w->meta)
        cJSON_AddItemReferenceToObject(h, "__metadata__", w->meta);
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        cJSON *o = cJSON_AddObjectToObject(h, w->e[i].name);
        cJSON_AddStringToObject(o, "dtype", sd_dtype_name(w->e[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < w->e[i].ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)w->e[i].shape[d]));
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += w->e[i].nbytes;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!js)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(js);
        return sd_fail(SD_ERR_IO, "%s: cannot create file", path);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(js, 1, jl, f) == jl;
    for (size_t i = jl; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < w->n; i++)
        ok = fwrite(w->e[i].data, 1, w->e[i].nbytes, f) == w->e[i].nbytes;
    free(js);
    if (fclose(f) != 0 || !ok)
        return sd_fail(SD_ERR_IO, "%s: write error", path);
    return SD_OK;
}

void sd_st_writer_free(sd_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].data);
    }
    free(w->e);
    cJSON_Delete(w->meta);
    free(w);
}
