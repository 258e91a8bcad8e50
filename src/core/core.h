/* Internal core utilities: errors, allocation, files. Not part of the public API. */
#ifndef SD_CORE_H
#define SD_CORE_H

#include "streamdiff.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SD_PRINTF(a, b)
#endif

/* Records a thread-local error message and returns `s` (for `return sd_fail(...)`). */
sd_status sd_fail(sd_status s, const char *fmt, ...) SD_PRINTF(2, 3);
/* Prefixes the current thread's error message with "context: ". Returns `s`. */
sd_status sd_fail_context(sd_status s, const char *fmt, ...) SD_PRINTF(2, 3);
void sd_clear_error(void);

/* Checked allocation helpers. They never abort; NULL means out of memory and
 * an error has been recorded. Sizes are checked for overflow. */
void *sd_malloc(size_t n);
void *sd_calloc(size_t count, size_t size);
void *sd_aligned_alloc(size_t n); /* 64-byte aligned, free with sd_aligned_free */
void sd_aligned_free(void *p);
char *sd_strdup(const char *s);
/* a*b with overflow check; returns false on overflow. */
bool sd_mul_overflow(size_t a, size_t b, size_t *out);

/* Whole-file helpers. */
sd_status sd_read_file(const char *path, size_t max_bytes, char **data, size_t *len);
sd_status sd_write_file(const char *path, const void *data, size_t len);
bool sd_file_exists(const char *path);
/* Creates the folder `path` (its parent must exist); an existing folder is fine. */
sd_status sd_make_dir(const char *path);
bool sd_dir_exists(const char *path);
/* Joins path components with '/', result malloc'd (NULL on OOM). */
char *sd_path_join(const char *a, const char *b);

/* Read-only memory map of a whole file. */
typedef struct sd_mmap {
    const uint8_t *data;
    size_t size;
} sd_mmap;
sd_status sd_mmap_open(const char *path, sd_mmap *m);
void sd_mmap_close(sd_mmap *m);
/* Drops the mapping's resident pages (they are re-read from the file on access). */
void sd_mmap_release_pages(const sd_mmap *m);
/* Same for the whole pages inside [p, p+n) of a read-only file mapping. */
void sd_release_range(const void *p, size_t n);

/* fp16 / bf16 conversions (exact, round-to-nearest-even for narrowing). */
float sd_f16_to_f32(uint16_t h);
uint16_t sd_f32_to_f16(float f);
float sd_bf16_to_f32(uint16_t h);
uint16_t sd_f32_to_bf16(float f);

/* Monotonic time in seconds. */
double sd_time_now(void);

#define SD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SD_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Propagate a non-OK status. */
#define SD_TRY(expr)                        \
    do {                                    \
        sd_status sd_try_s_ = (expr);       \
        if (sd_try_s_ != SD_OK)             \
            return sd_try_s_;               \
    } while (0)

#endif
