/* safetensors reader (mmap, zero-copy) and writer.
 *
 * Format: u64 little-endian header length N, N bytes of JSON header, then the
 * data section. Opening validates every rule before any tensor is used; a
 * violation returns SD_ERR_FORMAT (SD_ERR_UNSUPPORTED for an unknown dtype)
 * and a message that names the file and starts the reason with one of these
 * rule tags (tests match on them):
 *   [file-too-small]     shorter than the 8-byte length prefix
 *   [header-too-large]   N above SD_ST_MAX_HEADER
 *   [header-out-of-file] N larger than the rest of the file
 *   [header-json]        header is not valid JSON
 *   [header-not-object]  header JSON is not an object
 *   [duplicate-name]     a tensor name appears twice
 *   [entry]              an entry is not an object or lacks dtype/shape/data_offsets
 *   [unknown-dtype]      dtype is not F32, F16, BF16, I64, I32, U8 or BOOL
 *   [shape]              shape is not a list of non-negative integers (<= 8 dims)
 *   [shape-overflow]     the product of the shape (times dtype size) overflows
 *   [offsets]            data_offsets is not [begin, end] with 0 <= begin <= end
 *   [offsets-out-of-data] end beyond the data section
 *   [size-mismatch]      end - begin != numel * dtype size
 *   [overlap]            two tensors' byte ranges overlap
 *   [gap]                bytes of the data section are covered by no tensor
 *   [metadata]           __metadata__ is not an object of strings
 */
#ifndef SD_SAFETENSORS_H
#define SD_SAFETENSORS_H

#include "core/core.h"
#include <cjson/cJSON.h>

#define SD_ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
#define SD_ST_MAX_DIMS 8

typedef enum sd_dtype {
    SD_F32 = 0,
    SD_F16,
    SD_BF16,
    SD_I64,
    SD_I32,
    SD_U8,
    SD_BOOL,
    SD_DTYPE_COUNT
} sd_dtype;

size_t sd_dtype_size(sd_dtype t);
const char *sd_dtype_name(sd_dtype t); /* "F32", ... */
bool sd_dtype_from_name(const char *name, sd_dtype *out);

typedef struct sd_st_tensor {
    const char *name;
    sd_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; /* points into the mapped file; may be unaligned */
} sd_st_tensor;

struct sd_safetensors {
    char *path;
    sd_mmap map;        /* owned mapping (empty when parsed from memory) */
    size_t n_tensors;
    sd_st_tensor *tensors; /* sorted by name */
    cJSON *header;         /* parsed header (owns the name strings) */
    cJSON *metadata;       /* __metadata__ object or NULL */
};

/* Parses a buffer that stays owned by the caller (used by the fuzzer). */
sd_status sd_safetensors_parse(const uint8_t *data, size_t len, const char *label, sd_safetensors **out);
const sd_st_tensor *sd_st_find(const sd_safetensors *st, const char *name);
const char *sd_st_meta(const sd_safetensors *st, const char *key); /* NULL if absent */

/* Copies a tensor to float32 (converting F16/BF16/I64/I32), count = numel. */
sd_status sd_st_to_f32(const sd_st_tensor *t, float *dst);
/* Reads element i as double (any dtype). */
double sd_st_get(const sd_st_tensor *t, size_t i);

/* Writer: collects tensors (data is copied), then writes one file.
 * Tensors are stored in insertion order; metadata may be NULL. */
typedef struct sd_st_writer sd_st_writer;
sd_st_writer *sd_st_writer_new(void);
sd_status sd_st_writer_add(sd_st_writer *w, const char *name, sd_dtype dtype, int ndim, const int64_t *shape,
                           const void *data);
sd_status sd_st_writer_meta(sd_st_writer *w, const char *key, const char *value);
sd_status sd_st_writer_save(sd_st_writer *w, const char *path);
void sd_st_writer_free(sd_st_writer *w);

#endif
