/* Model weights: an index of named tensors from one or more safetensors files,
 * loaded on demand into backend memory with shape checks.
 *
 * Names are diffusers/transformers state-dict keys. A single-file (LDM)
 * checkpoint is mapped into the same names by src/models/checkpoint.c through
 * sd_weights_add_alias(), which can also expose a row range of a fused tensor
 * (OpenCLIP's in_proj_weight split into q/k/v).
 *
 * On a host-memory backend, tensors whose stored dtype equals the wanted dtype
 * are zero-copy views into the mapped file (the files stay open while the
 * weights live). Otherwise they are converted once and uploaded. A model weight
 * the backend wants in a layout of its own (backend ops weight_layout /
 * weight_prepare: at bf16 on the CPU, conv weights as the direct convolution's
 * tiles) is converted into that layout once here (sd_tensor.layout), and again
 * by sd_weights_write_f32 / sd_weights_restore.
 */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include "backend/backend.h"
#include "backend/ops.h"

typedef struct sd_wsrc {
    char *name;
    const sd_st_tensor *t;
    int64_t row0, rows; /* rows of dim 0 exposed; rows = t->shape[0] for whole tensors */
    bool used;
} sd_wsrc;

typedef struct sd_weights {
    sd_backend *be;
    char *label;                /* e.g. "unet (models/x/unet)" for messages */
    sd_safetensors **files;     /* owned */
    int n_files;
    sd_wsrc *idx;               /* sorted by name after sd_weights_finalize */
    size_t n_idx, cap_idx;
    sd_dtype float_dtype;       /* dtype floating weights are kept in (F32 or F16) */
    void **allocs;              /* backend memory owned */
    size_t n_allocs, cap_allocs;
    size_t bytes_device;        /* bytes allocated in backend memory */
    size_t bytes_mapped;        /* bytes used zero-copy from the mapped files */
    void **cow;                 /* copy-on-write buffers of modified views (backend memory owned) */
    size_t n_cow, cap_cow;
    bool check_finite;          /* fail loading a float tensor that holds NaN/Inf (SD_ERR_FORMAT) */
    bool convs_bf16;            /* conv weights asked for as SD_WEIGHT_CONV_BF16 (backend.h; set by the model) */
    sd_st_tensor **owned;       /* host copies made at mapping time (sd_weights_add_transposed) */
    size_t n_owned;
} sd_weights;

void sd_weights_init(sd_weights *w, sd_backend *be, const char *label, sd_dtype float_dtype);
/* Opens a safetensors file, takes ownership, indexes all of its tensors under
 * their own names (with `strip_prefix` removed when present, others skipped
 * if strip_prefix is non-NULL and `only_prefixed`). */
sd_status sd_weights_add_file(sd_weights *w, const char *path, const char *strip_prefix, bool only_prefixed);
/* Takes ownership of an open file without indexing it (for alias mapping). */
sd_status sd_weights_adopt_file(sd_weights *w, sd_safetensors *st);
sd_status sd_weights_add_alias(sd_weights *w, const char *name, const sd_st_tensor *t, int64_t row0, int64_t rows);
/* Indexes the transpose of a 2-d tensor `t` under `name`: a host copy owned by w (OpenCLIP's text_projection
 * [D,P], used as x @ P, is transformers' text_projection.weight [P,D]). */
sd_status sd_weights_add_transposed(sd_weights *w, const char *name, const sd_st_tensor *t);
sd_status sd_weights_finalize(sd_weights *w);
void sd_weights_free(sd_weights *w);

bool sd_weights_has(const sd_weights *w, const char *fmt, ...) SD_PRINTF(2, 3);
/* Loads the named tensor, which must have `shape` (trailing 1-dims are
 * ignored on both sides, so a conv [O,C,1,1] serves a linear [O,C]). */
sd_status sd_weights_get(sd_weights *w, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...)
    SD_PRINTF(5, 6);
/* As sd_weights_get, for a table read by rows (an embedding): always row-major, never in a backend's
 * prepared layout (sd_weights_get gives 4-D weights the convolution's and 2-D ones the linear's). */
sd_status sd_weights_get_table(sd_weights *w, sd_tensor *out, const int64_t *shape, int ndim, const char *fmt, ...)
    SD_PRINTF(5, 6);
/* Names of indexed tensors no model loaded; returns the count and writes up
 * to `max` names (owned by w) into `names`. */
size_t sd_weights_unused(const sd_weights *w, const char **names, size_t max);

/* Modifying loaded weights in place (LoRA fusing), with a bit-exact way back.
 * `name` is the tensor's index name and `t` the handle sd_weights_get filled
 * (a floating-point tensor; its dtype is the kept dtype).
 *   read_f32:  the stored values (from the file, not from t) as float32, numel(t) values.
 *   write_f32: t's values become `vals` (float32, converted to t->dtype). A
 *              zero-copy view into a mapped file is never written: it gets a
 *              backend buffer owned by `w` first and t->data moves there
 *              (copy-on-write). Backend memory is overwritten in place.
 *   restore:   t holds exactly what sd_weights_get loaded again: a
 *              copy-on-write buffer is freed and t->data points back into
 *              the file; backend memory is rewritten from the file with the
 *              load conversion. */
sd_status sd_weights_read_f32(sd_weights *w, const char *name, const sd_tensor *t, float *dst);
sd_status sd_weights_write_f32(sd_weights *w, const char *name, sd_tensor *t, const float *vals);
sd_status sd_weights_restore(sd_weights *w, const char *name, sd_tensor *t);

/* A model's loaded weight handle, visited by name (sd_unet_for_each_weight,
 * sd_clip_for_each_weight). The visitor may change t->data through the
 * functions above. A non-OK return stops the walk and is returned. */
typedef sd_status (*sd_weight_visit_fn)(void *user, const char *name, sd_tensor *t);

/* Opens the first of `names` (n_names file names) that exists in `dir` into a new,
 * finalized sd_weights labelled "<what> (<dir>)" in the backend's activation dtype;
 * the caller owns it (sd_weights_free + free). None there: SD_ERR_NOT_FOUND
 * "<dir>: no <missing> in this folder". */
sd_status sd_weights_open_dir(sd_backend *be, const char *dir, const char *const *names, size_t n_names,
                              const char *missing, const char *what, sd_weights **out);

/* Shape literal for sd_weights_get: sd_weights_get(w, &t, SD_SHAPE(320, 4, 3, 3), "conv_in.weight"). */
#define SD_SHAPE(...) ((const int64_t[]){__VA_ARGS__}), (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

/* Drops the mapped files' pages from memory once every weight was converted
 * or copied (no zero-copy views): they stay mapped and fault back in when read. */
void sd_weights_release_pages(const sd_weights *w);

/* Adds the weights of a diffusers/transformers component folder to `w`:
 * <dir>/<base>[.<variant>].safetensors, or a sharded
 * <dir>/<base>[.<variant>].safetensors.index.json (weight_map). With variant
 * NULL the plain file is preferred and the ".fp16" variant used as fallback;
 * with a variant, that variant first and the plain file as fallback. `base` is
 * "diffusion_pytorch_model" (diffusers) or "model" (transformers). Missing
 * files give SD_ERR_NOT_FOUND naming every path tried. `chosen` (may be NULL)
 * receives a malloc'd description of what was loaded. */
sd_status sd_weights_add_component(sd_weights *w, const char *dir, const char *base, const char *variant,
                                   char **chosen);

/* w (row-major) as the model loader prepares a weight for `use` (the backend's weight_layout /
 * weight_prepare, e.g. the CPU's bf16 or int8 tiles), in ctx's arena: for weights made outside the loader
 * (benchmarks, tests); w itself where the backend keeps it row-major or its memory is not the host's. */
sd_tensor sd_prepare_weight(sd_ctx *ctx, sd_tensor w, sd_weight_use use);

#endif
