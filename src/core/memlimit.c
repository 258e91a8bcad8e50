#include "core/memlimit.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses "123", "512M", "2G", "1.5G" (base 1024). false when malformed. */
static bool parse_bytes(const char *s, size_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!strcmp(s, "unlimited")) {
        *out = 0;
        return true;
    }
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return false;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (toupper((unsigned char)end[0]) == 'I' && toupper((unsigned char)end[1]) == 'B') /* "MiB" */
        end += 2;
    else if (toupper((unsigned char)end[0]) == 'B') /* "MB", "B" */
        end++;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    v *= mul;
    *out = v >= 1.8e19 ? SIZE_MAX : (size_t)v;
    return true;
}

static size_t meminfo_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* -1: malformed, 0: no env limit, 1: *limit set */
static int env_limit(size_t *limit)
{
    const char *e = getenv("SD_MAX_ARENA_BYTES");
    if (!e || !*e)
        return 0;
    size_t v;
    if (!parse_bytes(e, &v))
        return -1;
    *limit = v ? v : SIZE_MAX;
    return 1;
}

size_t sd_mem_limit(bool host_memory, const char **source)
{
    size_t lim = SIZE_MAX;
    const char *src = "none";
    int e = env_limit(&lim);
    if (e == 1) {
        src = "SD_MAX_ARENA_BYTES";
    } else if (host_memory) {
        size_t avail = meminfo_available();
        if (avail) {
            lim = avail;
            src = "MemAvailable in /proc/meminfo";
        } else {
            long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
            if (pages > 0 && psz > 0) {
                lim = (size_t)pages * (size_t)psz;
                src = "free physical pages";
            }
        }
    }
    if (source)
        *source = src;
    return lim;
}

sd_status sd_mem_check(bool host_memory, size_t need, const char *what, const char *hint)
{
    size_t dummy;
    if (env_limit(&dummy) < 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "SD_MAX_ARENA_BYTES='%s' is not a size (use e.g. 2G, 512M, 1048576, or 0 for no limit)",
                       getenv("SD_MAX_ARENA_BYTES"));
    const char *src;
    size_t lim = sd_mem_limit(host_memory, &src);
    if (need <= lim)
        return SD_OK;
    const double MiB = 1024.0 * 1024.0, n = (double)need / MiB, l = (double)lim / MiB;
    return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s needs %.*f MiB of working memory but only %.*f MiB are available (%s)%s%s",
                   what ? what : "this operation", n < 10 ? 2 : 0, n, l < 10 ? 2 : 0, l, src, hint ? "; " : "",
                   hint ? hint : "");
}
