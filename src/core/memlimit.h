/* Up-front memory checks: a configuration whose planned arenas exceed the
 * memory that is available is refused with a clear message before anything
 * is allocated (instead of an allocation that succeeds through overcommit and
 * gets the process OOM-killed later, or a multi-GB allocation on a server).
 *
 * Available memory:
 *   SD_MAX_ARENA_BYTES (environment): an explicit limit on the working memory
 *     of one generation or stream (bytes, with an optional K/M/G suffix, base
 *     1024; "0" or "unlimited" switches the checks off). Applies to every
 *     backend.
 *   otherwise, for host-memory (CPU) backends: MemAvailable from
 *     /proc/meminfo, else sysconf(_SC_AVPHYS_PAGES) * page size. Device
 *     backends without a limit are not checked here (their allocator fails
 *     cleanly).
 */
#ifndef SD_MEMLIMIT_H
#define SD_MEMLIMIT_H

#include "core/core.h"

/* The limit in bytes for a backend (host_memory: CPU), SIZE_MAX when there is
 * none. *source (may be NULL) names where it came from ("SD_MAX_ARENA_BYTES",
 * "MemAvailable", "free pages"). */
size_t sd_mem_limit(bool host_memory, const char **source);

/* SD_OK when `need` bytes fit the limit; else SD_ERR_OUT_OF_MEMORY with
 * "<what> needs N MiB of working memory but only M MiB are available (<source>);
 * <hint>". `hint` may be NULL. A malformed SD_MAX_ARENA_BYTES is
 * SD_ERR_INVALID_ARGUMENT. */
sd_status sd_mem_check(bool host_memory, size_t need, const char *what, const char *hint);

#endif
