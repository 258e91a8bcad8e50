#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SD_ERR_MSG_MAX 2048
static _Thread_local char g_err[SD_ERR_MSG_MAX];

const char *sd_version(void) { return SD_VERSION_STRING; }

const char *sd_status_name(sd_status s)
{
    switch (s) {
    case SD_OK: return "SD_OK";
    case SD_ERR_INVALID_ARGUMENT: return "SD_ERR_INVALID_ARGUMENT";
    case SD_ERR_OUT_OF_MEMORY: return "SD_ERR_OUT_OF_MEMORY";
    case SD_ERR_IO: return "SD_ERR_IO";
    case SD_ERR_FORMAT: return "SD_ERR_FORMAT";
    case SD_ERR_UNSUPPORTED: return "SD_ERR_UNSUPPORTED";
    case SD_ERR_NOT_FOUND: return "SD_ERR_NOT_FOUND";
    case SD_ERR_SHAPE: return "SD_ERR_SHAPE";
    case SD_ERR_BACKEND: return "SD_ERR_BACKEND";
    case SD_ERR_INTERNAL: return "SD_ERR_INTERNAL";
    }
    return "SD_ERR_UNKNOWN";
}

const char *sd_last_error(void) { return g_err; }
void sd_clear_error(void) { g_err[0] = 0; }

sd_status sd_fail(sd_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return s;
}

sd_status sd_fail_context(sd_status s, const char *fmt, ...)
{
    char prefix[1024], old[SD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t lp = strnlen(prefix, sizeof prefix - 1);
    memcpy(g_err, prefix, lp);
    g_err[lp] = ':';
    g_err[lp + 1] = ' ';
    size_t room = sizeof g_err - lp - 3, lo = strnlen(old, room);
    memcpy(g_err + lp + 2, old, lo);
    g_err[lp + 2 + lo] = 0;
    return s;
}

bool sd_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }

void *sd_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", n);
    return p;
}

void *sd_calloc(size_t count, size_t size)
{
    size_t total;
    if (sd_mul_overflow(count, size, &total)) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "allocation size overflow (%zu x %zu)", count, size);
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", total);
    return p;
}

void *sd_aligned_alloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) {
        sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory allocating %zu bytes", n);
        return NULL;
    }
    return p;
}

void sd_aligned_free(void *p) { free(p); }

char *sd_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = sd_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *sd_path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = sd_malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    size_t o = la;
    if (la && a[la - 1] != '/')
        p[o++] = '/';
    memcpy(p + o, b, lb + 1);
    return p;
}

sd_status sd_make_dir(const char *path)
{
    if (sd_dir_exists(path))
        return SD_OK;
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return sd_fail(SD_ERR_IO, "%s: cannot create the folder: %s", path, strerror(errno));
    return SD_OK;
}

bool sd_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool sd_dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

sd_status sd_read_file(const char *path, size_t max_bytes, char **data, size_t *len)
{
    *data = NULL;
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_fail(errno == ENOENT ? SD_ERR_NOT_FOUND : SD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return sd_fail(SD_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return sd_fail(SD_ERR_FORMAT, "%s: file is %lld bytes, more than the limit of %zu", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = sd_malloc(n + 1);
    if (!buf) {
        fclose(f);
        return SD_ERR_OUT_OF_MEMORY;
    }
    if (n && fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return sd_fail(SD_ERR_IO, "%s: read error", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len)
        *len = n;
    return SD_OK;
}

sd_status sd_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return sd_fail(SD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (len && fwrite(data, 1, len, f) != len) {
        fclose(f);
        return sd_fail(SD_ERR_IO, "%s: write error: %s", path, strerror(errno));
    }
    if (fclose(f) != 0)
        return sd_fail(SD_ERR_IO, "%s: write error: %s", path, strerror(errno));
    return SD_OK;
}

sd_status sd_mmap_open(const char *path, sd_mmap *m)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sd_fail(errno == ENOENT ? SD_ERR_NOT_FOUND : SD_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sd_fail(SD_ERR_IO, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        m->data = (const uint8_t *)"";
        return SD_OK;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        m->size = 0;
        return sd_fail(SD_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    }
    m->data = p;
    return SD_OK;
}

void sd_mmap_release_pages(const sd_mmap *m)
{
    if (m->data && m->size)
        madvise((void *)m->data, m->size, MADV_DONTNEED);
}

void sd_release_range(const void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !p)
        return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1), b = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void sd_mmap_close(sd_mmap *m)
{
    if (m->data && m->size)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

float sd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal */
            float f = (float)mant * 5.9604644775390625e-8f; /* 2^-24 */
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sd_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520 -> inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* subnormal or zero in half */
        float a;
        memcpy(&a, &absx, 4);
        /* round to nearest even multiple of 2^-24 */
        float q = a * 16777216.0f;
        uint32_t m = (uint32_t)nearbyintf(q);
        return (uint16_t)(sign | m);
    }
    uint32_t mant = absx & 0x7fffff;
    uint32_t exp = (absx >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float sd_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sd_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    uint32_t r = 0x7fff + ((x >> 16) & 1);
    return (uint16_t)((x + r) >> 16);
}

double sd_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
