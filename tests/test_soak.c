/* Soak test of the stream engine (CTest label "soak"; excluded from the
 * ASan run, where the allocator's quarantine makes RSS meaningless).
 *
 * The tiny model with TAESD at 32x32 runs thousands of frames through the
 * asynchronous API (push / pull on two threads, file-input policy: nothing
 * may be dropped), with a prompt change every PROMPT_EVERY frames, and
 * checks that
 *   - every pushed frame comes out exactly once, in input order (ids 0, 1, 2, ...),
 *   - the stats agree (frames_in == frames_out == pushed, none dropped),
 *   - the resident set size stays flat: VmRSS after the warm-up vs at the end.
 * Bounded: SD_SOAK_FRAMES frames (default 3000) or SD_SOAK_SECONDS seconds
 * (default 60), whichever comes first. */
#include "test.h"

#include "core/core.h"

#include <pthread.h>
#include <unistd.h>

#define PROMPT_EVERY 50
#define RSS_SLACK_KB (6 * 1024) /* allowed growth after warm-up (allocator noise) */

static long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

typedef struct {
    sd_stream *s;
    int64_t received, out_of_order, first_bad_id, first_bad_want;
    sd_status end;
    char end_msg[256];
    double last_mean; /* mean pixel of the last output (sanity: images are not constant garbage) */
} consumer;

static void *consume(void *arg)
{
    consumer *c = arg;
    sd_image img = {0}; /* reused: pull keeps an image of the right size */
    for (;;) {
        int64_t id = -1;
        sd_status st = sd_stream_pull_frame(c->s, &img, &id, 30000);
        if (st != SD_OK) {
            c->end = st;
            snprintf(c->end_msg, sizeof c->end_msg, "%s", sd_last_error());
            break;
        }
        if (id != c->received) {
            if (!c->out_of_order) {
                c->first_bad_id = id;
                c->first_bad_want = c->received;
            }
            c->out_of_order++;
        }
        c->received++;
        if ((c->received & 255) == 0) {
            double sum = 0;
            size_t n = (size_t)img.width * img.height * 3;
            for (size_t i = 0; i < n; i++)
                sum += img.data[i];
            c->last_mean = n ? sum / (double)n : 0;
        }
    }
    sd_image_free(&img);
    return NULL;
}

static void make_frame(int k, sd_image *f)
{
    f->width = f->height = 32;
    f->data = malloc(32 * 32 * 3);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++)
                f->data[(y * 32 + x) * 3 + c] = (uint8_t)((x * 8 + y * 3 * (c + 1) + k * 37) & 255);
}

TEST(stream_soak)
{
    const char *td = getenv("SD_TEST_DATA");
    char model_dir[4096], taesd[4096];
    snprintf(model_dir, sizeof model_dir, "%s/models/tiny-sd15", td ? td : "tests/data");
    snprintf(taesd, sizeof taesd, "%s/models/taesd-tiny", td ? td : "tests/data");
    const int max_frames = env_int("SD_SOAK_FRAMES", 3000);
    const int max_seconds = env_int("SD_SOAK_SECONDS", 60);

    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.taesd = taesd;
    sd_model *m = NULL;
    sd_status st = sd_model_load(model_dir, &mp, &m);
    if (st != SD_OK)
        FAIL("cannot load the tiny model: %s", sd_last_error());

    sd_stream_params sp;
    sd_stream_default_params(&sp);
    sp.width = sp.height = 32;
    sp.drop_old_frames = false; /* file input: push waits, nothing is lost */
    sp.queue_size = 4;
    sd_stream *s = NULL;
    CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_OK);
    if (!s) {
        sd_model_free(m);
        return;
    }
    static const char *const prompts[] = {"a photo of a red fox", "an oil painting of a lighthouse at night",
                                          "", "a cat wearing sunglasses, studio lighting, 4k",
                                          "watercolor mountains"};
    CHECK_STATUS(sd_stream_set_prompt(s, prompts[0], NULL), SD_OK);

    sd_image frames[8];
    for (int k = 0; k < 8; k++)
        make_frame(k, &frames[k]);
    consumer c = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, consume, &c);

    const int warm = max_frames / 10 > 100 ? max_frames / 10 : 100;
    long rss_warm = -1, rss_end = -1;
    double t0 = sd_time_now(), t_warm = t0;
    int pushed = 0, prompt_changes = 0;
    for (; pushed < max_frames && sd_time_now() - t0 < max_seconds; pushed++) {
        if (pushed && pushed % PROMPT_EVERY == 0) {
            st = sd_stream_set_prompt(s, prompts[(pushed / PROMPT_EVERY) % SD_ARRAY_LEN(prompts)], "blurry");
            CHECK_STATUS(st, SD_OK);
            prompt_changes++;
        }
        st = sd_stream_push_frame(s, &frames[pushed % 8]);
        if (st != SD_OK) {
            CHECK_STATUS(st, SD_OK);
            break;
        }
        if (pushed + 1 == warm) {
            rss_warm = vm_rss_kb();
            t_warm = sd_time_now();
        }
    }
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    pthread_join(th, NULL);
    rss_end = vm_rss_kb();
    double secs = sd_time_now() - t0;

    sd_stream_stats stats;
    CHECK_STATUS(sd_stream_get_stats(s, &stats), SD_OK);
    printf("  %d frames pushed in %.1f s (%.0f frames/s after warm-up), %d prompt changes\n", pushed, secs,
           pushed > warm ? (pushed - warm) / (sd_time_now() - t_warm) : 0.0, prompt_changes);
    printf("  received %lld, out of order %lld; stats: in %llu out %llu dropped %llu skipped %llu, "
           "latency %.1f ms, inference %.2f ms\n",
           (long long)c.received, (long long)c.out_of_order, (unsigned long long)stats.frames_in,
           (unsigned long long)stats.frames_out, (unsigned long long)stats.frames_dropped,
           (unsigned long long)stats.frames_skipped, stats.latency_ms, stats.inference_ms);
    printf("  VmRSS after %d warm-up frames: %ld kB, at the end: %ld kB (%+ld kB)\n", warm, rss_warm, rss_end,
           rss_end - rss_warm);
    CHECK_MSG(c.end == SD_ERR_NOT_FOUND, "the consumer ended with %s (%s), want the flushed NOT_FOUND",
              sd_status_name(c.end), c.end_msg);
    CHECK_MSG(c.received == pushed, "%lld frames out for %d in", (long long)c.received, pushed);
    CHECK_MSG(c.out_of_order == 0, "%lld frames out of order (first: id %lld where %lld was due)",
              (long long)c.out_of_order, (long long)c.first_bad_id, (long long)c.first_bad_want);
    CHECK(stats.frames_in == (uint64_t)pushed && stats.frames_out == (uint64_t)pushed);
    CHECK(stats.frames_dropped == 0);
    CHECK(c.last_mean > 0 && c.last_mean < 255);
    CHECK_MSG(pushed >= 2 * warm, "only %d frames in %d s: too slow to judge RSS (warm-up %d)", pushed,
              max_seconds, warm);
    if (rss_warm > 0 && rss_end > 0 && pushed >= 2 * warm)
        CHECK_MSG(rss_end - rss_warm <= RSS_SLACK_KB, "RSS grew by %ld kB over %d frames", rss_end - rss_warm,
                  pushed - warm);
    for (int k = 0; k < 8; k++)
        free(frames[k].data);
    sd_stream_free(s);
    sd_model_free(m);
}

int main(void)
{
    RUN(stream_soak);
    return test_summary();
}
