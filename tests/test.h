/* Minimal test harness: each tests/test_*.c is one CTest executable.
 *   TEST(name) { CHECK(cond); CHECK_STATUS(call, SD_OK); ... }
 *   int main(void) { RUN(name); ...; return test_summary(); }
 *
 * SKIP(reason) ends the current test as skipped. It is ONLY for what a machine
 * may lack: a GPU (or every bf16 level of the CPU), the shared reference fixtures
 * (../shared, $SD_FIXTURES), a browser, an optional library of the build.
 * Committed data (tests/data, fuzz/corpus) that is missing or does not load
 * is a failure: FAIL(reason) ends the current test as failed.
 * test_summary() returns 1 when a test failed, else 77 when one skipped (CTest's
 * SKIP_RETURN_CODE: the executable is reported as skipped, not passed), else 0. */
#ifndef SD_TEST_H
#define SD_TEST_H

#include "streamdiff.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failed, t_passed, t_skipped, t_cur_failed, t_cur_skipped;

#define TEST(name) static void name(void)
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            t_cur_failed = 1;                                                         \
        }                                                                             \
    } while (0)
#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
            t_cur_failed = 1;                                                        \
        }                                                                            \
    } while (0)
#define CHECK_STATUS(call, want)                                                                            \
    do {                                                                                                    \
        sd_status got_ = (call);                                                                            \
        if (got_ != (want)) {                                                                               \
            fprintf(stderr, "  %s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, #call,         \
                    sd_status_name(got_), sd_status_name(want), sd_last_error());                          \
            t_cur_failed = 1;                                                                               \
        }                                                                                                   \
    } while (0)
#define CHECK_ERR_CONTAINS(needle)                                                                  \
    CHECK_MSG(strstr(sd_last_error(), (needle)) != NULL, "error '%s' lacks '%s'", sd_last_error(), \
              (needle))
#define SKIP(...)                        \
    do {                                 \
        printf("  SKIP: ");              \
        printf(__VA_ARGS__);             \
        printf("\n");                    \
        t_cur_skipped = 1;               \
        return;                          \
    } while (0)
#define FAIL(...)                        \
    do {                                 \
        fprintf(stderr, "  FAIL: ");     \
        fprintf(stderr, __VA_ARGS__);    \
        fprintf(stderr, "\n");           \
        t_cur_failed = 1;                \
        return;                          \
    } while (0)
#define RUN(name)                                                  \
    do {                                                           \
        t_cur_failed = t_cur_skipped = 0;                          \
        printf("[ RUN  ] %s\n", #name);                            \
        fflush(stdout);                                            \
        name();                                                    \
        if (t_cur_failed) {                                        \
            t_failed++;                                            \
            printf("[ FAIL ] %s\n", #name);                        \
        } else if (t_cur_skipped) {                                \
            t_skipped++;                                           \
            printf("[ SKIP ] %s\n", #name);                        \
        } else {                                                   \
            t_passed++;                                            \
            printf("[  OK  ] %s\n", #name);                        \
        }                                                          \
        fflush(stdout);                                            \
    } while (0)

static inline int test_summary(void)
{
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : t_skipped ? 77 : 0;
}

/* Deterministic uniform random numbers for tests. */
static inline float test_rand(unsigned long long *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* A synthetic RGB frame (w x h x 3 bytes, malloc'd into *data): smooth waves that move with k, plus noise from
 * seed; distinct for every k. */
static inline unsigned char *test_wave_frame(int w, int h, int k, unsigned long long seed)
{
    unsigned char *d = (unsigned char *)malloc((size_t)w * h * 3);
    for (int y = 0; d && y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f + 60.0f * sinf(0.13f * (float)(x * (c + 1) + k * 5) + 0.09f * (float)y) +
                          30.0f * test_rand(&seed);
                d[((size_t)y * w + x) * 3 + c] = (unsigned char)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
            }
    return d;
}

#endif
