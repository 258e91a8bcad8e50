#include "models/weights.h"

#include "backend/ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_weights_init(sd_weights *w, sd_backend *be, const char *label, sd_dtype float_dtype)
{
    memset(w, 0, sizeof *w);
    w->be = be;
    w->label = sd_strdup(label ? label : "weights");
    w->float_dtype = float_dtype;
}

void sd_weights_free(sd_weights *w)
{
    for (size_t i = 0; i < w->n_allocs; i++)
        w->be->ops->free(w->be, w->allocs[i]);
    free(w->allocs);
    for (size_t i = 0; i < w->n_cow; i++)
        w->be->ops->free(w->be, w->cow[i]);
    free(w->cow);
    for (size_t i = 0; i < w->n_idx; i++)
        free(w->idx[i].name);
    free(w->idx);
    for (int i = 0; i < w->n_files; i++)
        sd_safetensors_close(w->files[i]);
    free(w->files);
    for (size_t i = 0; i < w->n_owned; i++)
        free(w->owned[i]);
    free(w->owned);
    free(w->label);
    memset(w, 0, sizeof *w);
}

sd_status sd_weights_adopt_file(sd_weights *w, sd_safetensors *st)
{
    sd_safetensors **nf = realloc(w->files, (size_t)(w->n_files + 1) * sizeof *nf);
    if (!nf) {
        sd_safetensors_close(st);
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    }
    w->files = nf;
    w->files[w->n_files++] = st;
    return SD_OK;
}

sd_status sd_weights_add_alias(sd_weights *w, const char *name, const sd_st_tensor *t, int64_t row0, int64_t rows)
{
    if (t->ndim < 1 && (row0 != 0 || rows != 1))
        return sd_fail(SD_ERR_INTERNAL, "alias row range on a scalar");
    if (w->n_idx == w->cap_idx) {
        size_t nc = w->cap_idx ? 2 * w->cap_idx : 256;
        sd_wsrc *ni = realloc(w->idx, nc * sizeof *ni);
        if (!ni)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        w->idx = ni;
        w->cap_idx = nc;
    }
    sd_wsrc *e = &w->idx[w->n_idx];
    e->name = sd_strdup(name);
    if (!e->name)
        return SD_ERR_OUT_OF_MEMORY;
    e->t = t;
    e->row0 = row0;
    e->rows = rows;
    e->used = false;
    w->n_idx++;
    return SD_OK;
}

sd_status sd_weights_add_transposed(sd_weights *w, const char *name, const sd_st_tensor *t)
{
    if (t->ndim != 2)
        return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' has %d dimensions; its transpose needs 2", w->label, name,
                       t->ndim);
    size_t es = sd_dtype_size(t->dtype), r = (size_t)t->shape[0], c = (size_t)t->shape[1];
    sd_st_tensor **no = realloc(w->owned, (w->n_owned + 1) * sizeof *no);
    if (!no)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    w->owned = no;
    /* one block: the tensor record, then its data (aligned for any element type) */
    size_t head = (sizeof(sd_st_tensor) + 15) & ~(size_t)15;
    sd_st_tensor *n = sd_malloc(head + t->nbytes + 1);
    if (!n)
        return SD_ERR_OUT_OF_MEMORY;
    *n = *t;
    n->shape[0] = (int64_t)c;
    n->shape[1] = (int64_t)r;
    uint8_t *d = (uint8_t *)n + head;
    const uint8_t *src = t->data;
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < c; j++)
            memcpy(d + (j * r + i) * es, src + (i * c + j) * es, es);
    n->data = d;
    w->owned[w->n_owned++] = n;
    return sd_weights_add_alias(w, name, n, 0, (int64_t)c);
}

sd_status sd_weights_add_file(sd_weights *w, const char *path, const char *strip_prefix, bool only_prefixed)
{
    sd_safetensors *st;
    SD_TRY(sd_safetensors_open(path, &st));
    SD_TRY(sd_weights_adopt_file(w, st));
    size_t pl = strip_prefix ? strlen(strip_prefix) : 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        const char *name = t->name;
        if (pl && !strncmp(name, strip_prefix, pl))
            name += pl;
        else if (pl && only_prefixed)
            continue;
        SD_TRY(sd_weights_add_alias(w, name, t, 0, t->ndim ? t->shape[0] : 1));
    }
    return SD_OK;
}

static int cmp_src(const void *a, const void *b) { return strcmp(((const sd_wsrc *)a)->name, ((const sd_wsrc *)b)->name); }

sd_status sd_weights_finalize(sd_weights *w)
{
    if (w->n_idx)
        qsort(w->idx, w->n_idx, sizeof *w->idx, cmp_src);
    for (size_t i = 1; i < w->n_idx; i++)
        if (!strcmp(w->idx[i - 1].name, w->idx[i].name))
            return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' is given twice (in two files or under two names)",
                           w->label, w->idx[i].name);
    return SD_OK;
}

static sd_wsrc *find(const sd_weights *w, const char *name)
{
    sd_wsrc key = {.name = (char *)name};
    return w->n_idx ? bsearch(&key, w->idx, w->n_idx, sizeof key, cmp_src) : NULL;
}

bool sd_weights_has(const sd_weights *w, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return find(w, name) != NULL;
}

static int squeeze_ndim(const int64_t *shape, int ndim)
{
    while (ndim > 1 && shape[ndim - 1] == 1)
        ndim--;
    return ndim;
}

static void shape_to_str(const int64_t *s, int n, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ",%lld" : "%lld", (long long)s[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

/* The bytes of an entry in its file: row range [row0, row0+rows) of dim 0. */
static const uint8_t *entry_src(const sd_wsrc *e, size_t *numel)
{
    const sd_st_tensor *t = e->t;
    size_t es = sd_dtype_size(t->dtype);
    size_t row_elems = e->rows ? t->numel / (size_t)(t->ndim ? t->shape[0] : 1) : 0;
    *numel = row_elems * (size_t)e->rows;
    return (const uint8_t *)t->data + (size_t)e->row0 * row_elems * es;
}

/* The dtype a stored dtype is kept in (SD_DTYPE_COUNT: not a weight dtype). */
static sd_dtype kept_dtype(const sd_weights *w, sd_dtype stored, int ndim)
{
    if (stored == SD_F32 || stored == SD_F16 || stored == SD_BF16) /* bf16: only GEMM weights (backend.h) */
        return w->float_dtype == SD_BF16 && ndim < 2 ? SD_F32 : w->float_dtype;
    if (stored == SD_I64 || stored == SD_I32)
        return SD_I32;
    return SD_DTYPE_COUNT;
}

/* Converts (or copies) an entry's file bytes into backend memory `dev` of
 * numel * size(want_dt) bytes: the load conversion, shared by load() and
 * sd_weights_restore() so that a restore is bit-exact. */
static sd_status upload_entry(sd_weights *w, const sd_wsrc *e, sd_dtype want_dt, void *dev)
{
    const sd_st_tensor *t = e->t;
    size_t numel;
    const uint8_t *src = entry_src(e, &numel);
    size_t es = sd_dtype_size(t->dtype), oes = sd_dtype_size(want_dt);
    void *host = NULL;
    const void *up = src;
    bool convert = want_dt != t->dtype || ((uintptr_t)src % es) != 0;
    if (convert && w->be->host_memory) {
        host = dev; /* host-memory backend: convert straight into the weight's memory */
    } else if (convert) {
        host = sd_malloc(numel * oes + 1);
        if (!host)
            return SD_ERR_OUT_OF_MEMORY;
    }
    if (convert) {
        if (t->dtype == SD_F16 && want_dt == SD_F32) { /* the common case (fp16 files, F32 compute): fast path */
            float *o = host;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < numel; i++) {
                uint16_t h;
                memcpy(&h, src + 2 * i, 2);
                o[i] = sd_f16_to_f32(h);
            }
        } else if (want_dt == SD_BF16 && (t->dtype == SD_F32 || t->dtype == SD_F16)) { /* precision bf16 */
            uint16_t *o = host;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < numel; i++) {
                float f;
                if (t->dtype == SD_F32) {
                    memcpy(&f, src + 4 * i, 4);
                } else {
                    uint16_t h;
                    memcpy(&h, src + 2 * i, 2);
                    f = sd_f16_to_f32(h);
                }
                o[i] = sd_f32_to_bf16(f);
            }
        } else {
            sd_st_tensor view = *t;
            view.data = src;
            for (size_t i = 0; i < numel; i++) {
                double v = sd_st_get(&view, i);
                if (want_dt == SD_F32) {
                    float f = (float)v;
                    memcpy((uint8_t *)host + 4 * i, &f, 4);
                } else if (want_dt == SD_F16) {
                    uint16_t h = sd_f32_to_f16((float)v);
                    memcpy((uint8_t *)host + 2 * i, &h, 2);
                } else if (want_dt == SD_BF16) {
                    uint16_t h = sd_f32_to_bf16((float)v);
                    memcpy((uint8_t *)host + 2 * i, &h, 2);
                } else {
                    int32_t iv = (int32_t)v;
                    memcpy((uint8_t *)host + 4 * i, &iv, 4);
                }
            }
        }
        up = host;
    }
    sd_status s = up == dev ? SD_OK : w->be->ops->upload(w->be, dev, up, numel * oes);
    if (host != dev)
        free(host);
    if (s == SD_OK && convert) /* the file pages were only needed for the conversion */
        sd_release_range(src, numel * es);
    return s;
}

/* The load conversion of an entry into t's memory dev, in t's layout: row-major straight (upload_entry),
 * a backend's prepared layout (SD_LAYOUT_*: weight_prepare) from the row-major values in host memory.
 * Shared by load() and sd_weights_restore(), so that a restore is bit-exact. */
static sd_status fill_entry(sd_weights *w, const sd_wsrc *e, const sd_tensor *t, void *dev)
{
    if (t->layout == SD_LAYOUT_ROWMAJOR)
        return upload_entry(w, e, t->dtype, dev);
    sd_tensor plain = *t;
    plain.layout = SD_LAYOUT_ROWMAJOR;
    plain.data = sd_malloc(sd_nbytes(t) + 1);
    if (!plain.data)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = upload_entry(w, e, t->dtype, plain.data); /* host memory only: weight_layout is a CPU op */
    if (s == SD_OK) {
        w->be->ops->weight_prepare(w->be, dev, &plain, (sd_layout)t->layout);
        size_t numel;
        const uint8_t *src = entry_src(e, &numel);
        sd_release_range(src, numel * sd_dtype_size(e->t->dtype)); /* a copy that was not a conversion too */
    }
    free(plain.data);
    return s;
}

/* Index of the first NaN/Inf of n raw elements of a float dtype, n when all are finite. */
static size_t first_nonfinite(sd_dtype dt, const uint8_t *p, size_t n, const char **what)
{
    size_t i = 0;
    if (dt == SD_F32) {
        for (uint32_t u = 0; i < n; i++) {
            memcpy(&u, p + 4 * i, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) {
                *what = (u & 0x007fffffu) ? "NaN" : (u >> 31) ? "-Inf" : "+Inf";
                break;
            }
        }
    } else if (dt == SD_F16 || dt == SD_BF16) {
        const uint16_t exp = dt == SD_F16 ? 0x7c00u : 0x7f80u;
        for (uint16_t h = 0; i < n; i++) {
            memcpy(&h, p + 2 * i, 2);
            if ((h & exp) == exp) {
                *what = (h & (uint16_t)~exp & 0x7fffu) ? "NaN" : (h >> 15) ? "-Inf" : "+Inf";
                break;
            }
        }
    } else {
        i = n;
    }
    return i;
}

static sd_status load(sd_weights *w, sd_wsrc *e, sd_tensor *out, const int64_t *shape, int ndim, bool table)
{
    const sd_st_tensor *t = e->t;
    const bool model_weight = shape != NULL; /* sd_weights_get: a layer's parameter, always floating point */
    int64_t src_shape[SD_ST_MAX_DIMS];
    int sn = t->ndim;
    memcpy(src_shape, t->shape, sizeof src_shape);
    if (sn >= 1)
        src_shape[0] = e->rows;
    if (shape) {
        int a = squeeze_ndim(shape, ndim), b = squeeze_ndim(src_shape, sn);
        bool ok = a == b;
        for (int i = 0; ok && i < a; i++)
            ok = shape[i] == src_shape[i];
        if (!ok) {
            char want[128], got[128];
            shape_to_str(shape, ndim, want, sizeof want);
            shape_to_str(src_shape, sn, got, sizeof got);
            return sd_fail(SD_ERR_SHAPE, "%s: tensor '%s' has shape %s but the model config needs %s", w->label,
                           e->name, got, want);
        }
    } else {
        shape = src_shape;
        ndim = sn;
    }
    if (ndim > SD_MAX_DIMS)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (max %d)", w->label, e->name, ndim,
                       SD_MAX_DIMS);
    sd_dtype want_dt = kept_dtype(w, t->dtype, ndim);
    if (want_dt == SD_DTYPE_COUNT || (model_weight && want_dt == SD_I32))
        return sd_fail(want_dt == SD_DTYPE_COUNT ? SD_ERR_UNSUPPORTED : SD_ERR_FORMAT,
                       "%s: tensor '%s' has dtype %s, not a weight dtype (F32, F16 or BF16)", w->label, e->name,
                       sd_dtype_name(t->dtype));
    size_t es = sd_dtype_size(t->dtype);
    size_t numel;
    const uint8_t *src = entry_src(e, &numel);
    if (w->check_finite) { /* sd_model_params.check_finite */
        const char *bad = "";
        size_t at = first_nonfinite(t->dtype, src, numel, &bad);
        if (at < numel)
            return sd_fail(SD_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value (%s at element %zu): the weights "
                           "file is corrupt (or comes from a diverged training run); re-download or re-convert it",
                           w->label, e->name, bad, at);
    }
    *out = sd_tensor_make(NULL, want_dt, ndim ? ndim : 1, ndim ? shape : (const int64_t[]){1});
    size_t oes = sd_dtype_size(want_dt), bytes = numel * oes;
    if (model_weight && w->be->ops->weight_layout) /* the backend's prepared layout (backend.h) */
        out->layout = (uint8_t)w->be->ops->weight_layout(
            w->be, out,
            table       ? SD_WEIGHT_OTHER
            : ndim == 4 ? (w->convs_bf16 ? SD_WEIGHT_CONV_BF16 : SD_WEIGHT_CONV)
            : ndim == 2 ? SD_WEIGHT_LINEAR
                        : SD_WEIGHT_OTHER,
            &bytes);

    if (out->layout == SD_LAYOUT_ROWMAJOR && w->be->host_memory && want_dt == t->dtype && ((uintptr_t)src % es) == 0) {
        out->data = (void *)src; /* zero-copy view into the mapped file */
        w->bytes_mapped += numel * es;
        e->used = true;
        return SD_OK;
    }
    void *dev = w->be->ops->alloc(w->be, bytes);
    if (!dev)
        return sd_fail_context(SD_ERR_OUT_OF_MEMORY, "%s: loading '%s'", w->label, e->name);
    sd_status s = fill_entry(w, e, out, dev);
    if (s == SD_OK && w->n_allocs == w->cap_allocs) {
        size_t nc = w->cap_allocs ? 2 * w->cap_allocs : 256;
        void **na = realloc(w->allocs, nc * sizeof *na);
        if (!na)
            s = sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        else {
            w->allocs = na;
            w->cap_allocs = nc;
        }
    }
    if (s != SD_OK) {
        w->be->ops->free(w->be, dev);
        return s;
    }
    w->allocs[w->n_allocs++] = dev;
    w->bytes_device += bytes;
    out->data = dev;
    e->used = true;
    return SD_OK;
}

static sd_status get(sd_weights *w, sd_tensor *out, const int64_t *shape, int ndim, bool table, const char *fmt,
                     va_list ap)
{
    char name[512];
    vsnprintf(name, sizeof name, fmt, ap);
    sd_wsrc *e = find(w, name);
    if (!e) {
        char want[128];
        shape_to_str(shape, ndim, want, sizeof want);
        return sd_fail(SD_ERR_NOT_FOUND, "%s: tensor '%s' %s is missing from the weights", w->label, name, want);
    }
    return load(w, e, out, shape, ndim, table);
}

sd_status sd_weights_get(sd_weights *w, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sd_status s = get(w, out, shape, ndim, false, fmt, ap);
    va_end(ap);
    return s;
}

sd_status sd_weights_get_table(sd_weights *w, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sd_status s = get(w, out, shape, ndim, true, fmt, ap);
    va_end(ap);
    return s;
}

size_t sd_weights_unused(const sd_weights *w, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_idx; i++)
        if (!w->idx[i].used) {
            if (n < max)
                names[n] = w->idx[i].name;
            n++;
        }
    return n;
}

/* ---------------------------------------------------------------- modification (LoRA fusing) */

static bool owns_alloc(const sd_weights *w, const void *p)
{
    for (size_t i = 0; i < w->n_allocs; i++)
        if (w->allocs[i] == p)
            return true;
    return false;
}

static ptrdiff_t cow_index(const sd_weights *w, const void *p)
{
    for (size_t i = 0; i < w->n_cow; i++)
        if (w->cow[i] == p)
            return (ptrdiff_t)i;
    return -1;
}

/* The index entry of a loaded floating-point tensor `t` named `name`, checked against t. */
static sd_status modifiable(sd_weights *w, const char *name, const sd_tensor *t, sd_wsrc **out, size_t *numel,
                            const uint8_t **src)
{
    sd_wsrc *e = name ? find(w, name) : NULL;
    if (!e || !t || !t->data)
        return sd_fail(SD_ERR_INTERNAL, "%s: tensor '%s' is not loaded from these weights", w->label,
                       name ? name : "(null)");
    *src = entry_src(e, numel);
    sd_dtype kd = kept_dtype(w, e->t->dtype, t->ndim);
    if ((kd != SD_F32 && kd != SD_F16 && kd != SD_BF16) || t->dtype != kd || (size_t)sd_numel(t) != *numel)
        return sd_fail(SD_ERR_INTERNAL, "%s: tensor '%s' does not match its loaded form (dtype %s, %zu values)",
                       w->label, name, sd_dtype_name(t->dtype), *numel);
    *out = e;
    return SD_OK;
}

sd_status sd_weights_read_f32(sd_weights *w, const char *name, const sd_tensor *t, float *dst)
{
    sd_wsrc *e;
    size_t numel;
    const uint8_t *src;
    SD_TRY(modifiable(w, name, t, &e, &numel, &src));
    sd_st_tensor view = *e->t;
    view.data = src;
    view.numel = numel;
    view.nbytes = numel * sd_dtype_size(view.dtype);
    return sd_st_to_f32(&view, dst);
}

sd_status sd_weights_write_f32(sd_weights *w, const char *name, sd_tensor *t, const float *vals)
{
    sd_wsrc *e;
    size_t numel;
    const uint8_t *src;
    SD_TRY(modifiable(w, name, t, &e, &numel, &src));
    bool view = w->be->host_memory && t->data == (const void *)src;
    if (!view && !owns_alloc(w, t->data) && cow_index(w, t->data) < 0)
        return sd_fail(SD_ERR_INTERNAL, "%s: tensor '%s' is not memory of these weights", w->label, name);
    size_t bytes = numel * sd_dtype_size(t->dtype);
    void *host = NULL;
    const void *up = vals;
    if (t->dtype != SD_F32) {
        uint16_t *h = sd_malloc(numel * 2 + 1);
        if (!h)
            return SD_ERR_OUT_OF_MEMORY;
        for (size_t i = 0; i < numel; i++)
            h[i] = t->dtype == SD_F16 ? sd_f32_to_f16(vals[i]) : sd_f32_to_bf16(vals[i]);
        host = h;
        up = h;
    }
    void *dst = t->data;
    if (t->layout != SD_LAYOUT_ROWMAJOR) { /* a prepared weight (never a view): prepared again */
        sd_tensor plain = *t;
        plain.layout = SD_LAYOUT_ROWMAJOR;
        plain.data = (void *)up;
        w->be->ops->weight_prepare(w->be, dst, &plain, (sd_layout)t->layout);
        free(host);
        return SD_OK;
    }
    if (view) { /* copy-on-write: never write into the mapped file */
        if (w->n_cow == w->cap_cow) {
            size_t nc = w->cap_cow ? 2 * w->cap_cow : 64;
            void **ncw = realloc(w->cow, nc * sizeof *ncw);
            if (!ncw) {
                free(host);
                return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
            }
            w->cow = ncw;
            w->cap_cow = nc;
        }
        dst = w->be->ops->alloc(w->be, bytes);
        if (!dst) {
            free(host);
            return sd_fail_context(SD_ERR_OUT_OF_MEMORY, "%s: copy of '%s'", w->label, name);
        }
    }
    sd_status s = w->be->ops->upload(w->be, dst, up, bytes);
    free(host);
    if (view) {
        if (s != SD_OK) {
            w->be->ops->free(w->be, dst);
            return s;
        }
        w->cow[w->n_cow++] = dst;
        w->bytes_device += bytes;
        t->data = dst;
    }
    return s;
}

sd_status sd_weights_restore(sd_weights *w, const char *name, sd_tensor *t)
{
    sd_wsrc *e;
    size_t numel;
    const uint8_t *src;
    SD_TRY(modifiable(w, name, t, &e, &numel, &src));
    ptrdiff_t ci = cow_index(w, t->data);
    if (ci >= 0) {
        w->be->ops->free(w->be, t->data);
        w->cow[ci] = w->cow[--w->n_cow];
        w->bytes_device -= numel * sd_dtype_size(t->dtype);
        t->data = (void *)src;
        return SD_OK;
    }
    if (w->be->host_memory && t->data == (const void *)src)
        return SD_OK; /* an untouched view */
    if (!owns_alloc(w, t->data))
        return sd_fail(SD_ERR_INTERNAL, "%s: tensor '%s' is not memory of these weights", w->label, name);
    return fill_entry(w, e, t, t->data);
}

#include "io/config.h"

static sd_status add_sharded(sd_weights *w, const char *dir, const char *index_path)
{
    sd_config idx;
    SD_TRY(sd_config_load(index_path, &idx));
    sd_config map;
    sd_status s = sd_config_sub(&idx, "weight_map", &map);
    if (s != SD_OK) {
        sd_config_free(&idx);
        return s;
    }
    /* unique file names, in order of first appearance */
    const char *files[256];
    int nf = 0;
    for (cJSON *e = map.root->child; e && s == SD_OK; e = e->next) {
        if (!cJSON_IsString(e)) {
            s = sd_fail(SD_ERR_FORMAT, "%s: weight_map['%s'] is not a file name", index_path, e->string);
            break;
        }
        const char *f = e->valuestring;
        if (strchr(f, '/') || !strcmp(f, "..")) {
            s = sd_fail(SD_ERR_FORMAT, "%s: shard name '%s' must be a plain file name", index_path, f);
            break;
        }
        bool seen = false;
        for (int i = 0; i < nf && !seen; i++)
            seen = !strcmp(files[i], f);
        if (!seen) {
            if (nf == 256) {
                s = sd_fail(SD_ERR_FORMAT, "%s: more than 256 shards", index_path);
                break;
            }
            files[nf++] = f;
        }
    }
    for (int i = 0; i < nf && s == SD_OK; i++) {
        char *p = sd_path_join(dir, files[i]);
        s = p ? sd_weights_add_file(w, p, NULL, false) : SD_ERR_OUT_OF_MEMORY;
        free(p);
    }
    sd_config_free(&idx);
    return s;
}

sd_status sd_weights_add_component(sd_weights *w, const char *dir, const char *base, const char *variant,
                                   char **chosen)
{
    char names[4][300];
    int n = 0;
    const char *var = variant ? variant : "fp16";
    if (variant)
        snprintf(names[n++], sizeof names[0], "%s.%s.safetensors", base, var);
    snprintf(names[n++], sizeof names[0], "%s.safetensors", base);
    if (!variant)
        snprintf(names[n++], sizeof names[0], "%s.%s.safetensors", base, var);
    char tried[2048];
    size_t to = 0;
    tried[0] = 0;
    if (chosen)
        *chosen = NULL;
    for (int i = 0; i < n; i++) {
        for (int sharded = 0; sharded < 2; sharded++) {
            char fname[320];
            snprintf(fname, sizeof fname, "%.300s%s", names[i], sharded ? ".index.json" : "");
            char *p = sd_path_join(dir, fname);
            if (!p)
                return SD_ERR_OUT_OF_MEMORY;
            if (sd_file_exists(p)) {
                sd_status s = sharded ? add_sharded(w, dir, p) : sd_weights_add_file(w, p, NULL, false);
                if (s == SD_OK && chosen)
                    *chosen = p;
                else
                    free(p);
                return s;
            }
            to += (size_t)snprintf(tried + to, to < sizeof tried ? sizeof tried - to : 0, "%s%s", to ? ", " : "", p);
            if (to >= sizeof tried)
                to = sizeof tried - 1;
            free(p);
        }
    }
    if (!strcmp(base, "diffusion_pytorch_model") || !strcmp(base, "model")) {
        char *bin = sd_path_join(dir, !strcmp(base, "model") ? "pytorch_model.bin" : "diffusion_pytorch_model.bin");
        bool has_bin = bin && sd_file_exists(bin);
        free(bin);
        if (has_bin)
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: only a PyTorch .bin checkpoint is present; streamdiff reads .safetensors only "
                           "(convert it, e.g. with diffusers' save_pretrained(safe_serialization=True))", dir);
    }
    return sd_fail(SD_ERR_NOT_FOUND, "%s: no weights found (tried %s)", dir, tried);
}

sd_status sd_weights_open_dir(sd_backend *be, const char *dir, const char *const *names, size_t n_names,
                              const char *missing, const char *what, sd_weights **out)
{
    *out = NULL;
    char *wpath = NULL;
    for (size_t i = 0; i < n_names && !wpath; i++) {
        char *p = sd_path_join(dir, names[i]);
        if (!p)
            return SD_ERR_OUT_OF_MEMORY;
        if (sd_file_exists(p))
            wpath = p;
        else
            free(p);
    }
    if (!wpath)
        return sd_fail(SD_ERR_NOT_FOUND, "%s: no %s in this folder", dir, missing);
    sd_weights *w = sd_calloc(1, sizeof *w);
    if (!w) {
        free(wpath);
        return SD_ERR_OUT_OF_MEMORY;
    }
    char label[512];
    snprintf(label, sizeof label, "%s (%s)", what, dir);
    /* precision bf16: BF16 weights in the kernels' prepared layouts, as a model's components (backend.h) */
    sd_weights_init(w, be, label, be->bf16 && be->act_dtype == SD_F32 ? SD_BF16 : be->act_dtype);
    sd_status s = sd_weights_add_file(w, wpath, NULL, false);
    free(wpath);
    if (s == SD_OK)
        s = sd_weights_finalize(w);
    if (s != SD_OK) {
        sd_weights_free(w);
        free(w);
        return s;
    }
    *out = w;
    return SD_OK;
}

void sd_weights_release_pages(const sd_weights *w)
{
    /* Only when no weight is a zero-copy view into the files: the pages were
     * converted or copied and are re-read from the file on demand (LoRA undo). */
    if (w->bytes_mapped)
        return;
    for (int i = 0; i < w->n_files; i++)
        sd_mmap_release_pages(&w->files[i]->map);
}

/* ---------------------------------------------------------------- weights made outside the loader */

sd_tensor sd_prepare_weight(sd_ctx *ctx, sd_tensor w, sd_weight_use use)
{
    sd_backend *be = ctx->be;
    size_t bytes = 0;
    if (ctx->status != SD_OK || !be->ops->weight_layout || !be->host_memory || w.layout != SD_LAYOUT_ROWMAJOR)
        return w;
    sd_layout lay = be->ops->weight_layout(be, &w, use, &bytes);
    if (lay == SD_LAYOUT_ROWMAJOR)
        return w;
    sd_tensor buf = sd_new(ctx, SD_U8, 1, (const int64_t[]){(int64_t)bytes});
    sd_tensor p = w;
    p.data = buf.data;
    p.layout = (uint8_t)lay;
    if (ctx->status == SD_OK && !ctx->plan)
        be->ops->weight_prepare(be, p.data, &w, lay);
    return p;
}
