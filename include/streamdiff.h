/* streamdiff — real-time diffusion image generation in C.
 *
 * The one public header. Every object is an opaque handle; every call that can
 * fail returns an sd_status, and sd_last_error() gives a human-readable message
 * for the most recent failure on the calling thread.
 *
 * Parameter structs come with *_default_params() functions: fill the defaults,
 * change what you need, pass the struct.
 */
#ifndef STREAMDIFF_H
#define STREAMDIFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum sd_status {
    SD_OK = 0,
    SD_ERR_INVALID_ARGUMENT,  /* a parameter is out of range or inconsistent */
    SD_ERR_OUT_OF_MEMORY,     /* an allocation failed or a size limit was hit */
    SD_ERR_IO,                /* a file could not be opened, read or written */
    SD_ERR_FORMAT,            /* a file is malformed (see the message for which rule) */
    SD_ERR_UNSUPPORTED,       /* valid input that this build does not handle */
    SD_ERR_NOT_FOUND,         /* a file, tensor, key or model is missing */
    SD_ERR_SHAPE,             /* tensor shapes disagree */
    SD_ERR_BACKEND,           /* the compute backend failed (e.g. no GPU) */
    SD_ERR_INTERNAL           /* a bug: please report it */
} sd_status;

/* Short stable name of a status code, e.g. "SD_ERR_FORMAT". */
const char *sd_status_name(sd_status s);

/* Message of the most recent error on this thread ("" if none). The pointer
 * stays valid until the next failing call on the same thread. */
const char *sd_last_error(void);

/* Library version, e.g. "0.1.0". */
const char *sd_version(void);

/* ---------------------------------------------------------------- safetensors
 * A read-only, zero-copy view of a .safetensors file (mmapped). Every rule of
 * the format is checked when opening; each violation is its own error message
 * starting with a rule name (see src/io/safetensors.h for the list). */

typedef struct sd_safetensors sd_safetensors;

sd_status sd_safetensors_open(const char *path, sd_safetensors **out);
void sd_safetensors_close(sd_safetensors *st);

#ifdef __cplusplus
}
#endif
#endif /* STREAMDIFF_H */
