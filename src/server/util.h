/* What every file of src/server shares besides the public API: the server is a client of the
 * library and sees only include/streamdiff.h (the sd_server target has include/ and src/server on
 * its include path, nothing else), so the few helpers it needs live here. The macros are spelled
 * as in src/core/core.h, so that a file including both (a test) sees one definition. */
#ifndef SD_SERVER_UTIL_H
#define SD_SERVER_UTIL_H

#include "streamdiff.h"

#include <time.h>

#ifndef SD_PRINTF
#if defined(__GNUC__)
#define SD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SD_PRINTF(a, b)
#endif
#endif
#ifndef SD_ARRAY_LEN
#define SD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#endif
#ifndef SD_MIN
#define SD_MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef SD_MAX
#define SD_MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

/* Seconds on the monotonic clock. */
static inline double srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
