/* The stream engine's API: async ordering equals the synchronous path, prompt
 * changes, the similarity filter, the live drop policy, parameter errors.
 * Uses the tiny random-weight models in $SD_TEST_DATA/models (tiny-sd15 +
 * taesd-tiny) at 32x32 (latent 4x4). */
#include "test.h"

#include "backend/cpu/cpu_kern.h"
#include "pipe/stream.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define S 32
#define NF 40

static sd_model *g_model;
static char g_why[2600];

/* tiny-sd15 + taesd-tiny at a precision; NULL with the reason in g_why */
static sd_model *load_tiny(sd_precision precision)
{
    const char *d = getenv("SD_TEST_DATA");
    char mp[1024], tp[1024];
    snprintf(mp, sizeof mp, "%s/models/tiny-sd15", d ? d : "tests/data");
    snprintf(tp, sizeof tp, "%s/models/taesd-tiny", d ? d : "tests/data");
    if (access(mp, R_OK) || access(tp, R_OK)) {
        snprintf(g_why, sizeof g_why, "tiny models not found under %s/models", d ? d : "tests/data");
        return NULL;
    }
    sd_model_params p;
    sd_model_default_params(&p);
    p.taesd = tp;
    p.precision = precision;
    const char *nt = getenv("SD_TEST_THREADS"); /* e.g. 1 under ThreadSanitizer (libgomp is not instrumented) */
    p.n_threads = nt ? atoi(nt) : 2;
    sd_model *m = NULL;
    if (sd_model_load(mp, &p, &m) != SD_OK) {
        snprintf(g_why, sizeof g_why, "loading %s failed: %s", mp, sd_last_error());
        m = NULL;
    }
    return m;
}

static sd_model *model(void)
{
    if (!g_model && !g_why[0])
        g_model = load_tiny(SD_PRECISION_FP32);
    return g_model;
}

/* Distinct frames: smooth gradients plus noise; odd frames are 48x32 (fitted). */
static void make_frame(int k, sd_image *img)
{
    int w = k % 2 ? S + 16 : S, h = S;
    img->width = w;
    img->height = h;
    img->data = malloc((size_t)w * h * 3);
    unsigned long long r = 1000 + (unsigned long long)k * 7919;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f + 60.0f * sinf(0.11f * (float)(x * (c + 1) + k * 5) + 0.07f * (float)y) +
                          40.0f * test_rand(&r);
                img->data[((size_t)y * w + x) * 3 + c] = (uint8_t)fminf(255.0f, fmaxf(0.0f, v));
            }
}

static bool same(const sd_image *a, const sd_image *b)
{
    return a->width == b->width && a->height == b->height &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * 3);
}

static void base_params(sd_stream_params *p)
{
    sd_stream_default_params(p);
    p->width = p->height = S;
    p->seed = 7;
}

/* ------------------------------------------------------------ async consumer */

typedef struct {
    sd_stream *s;
    sd_image out[256];
    int64_t id[256];
    int n;
    sd_status end;
    int sleep_ms;
    int64_t total, in_order; /* all outputs, and those whose id is the previous one + 1 */
} consumer;

static void *consume(void *arg)
{
    consumer *c = arg;
    for (;;) {
        sd_image img = {0};
        int64_t id;
        sd_status st = sd_stream_pull_frame(c->s, &img, &id, 20000);
        if (st != SD_OK) {
            c->end = st;
            sd_image_free(&img);
            return NULL;
        }
        c->in_order += id == c->total;
        c->total++;
        if (c->n < 256) {
            c->out[c->n] = img;
            c->id[c->n] = id;
            c->n++;
        } else {
            sd_image_free(&img);
        }
        if (c->sleep_ms)
            usleep((useconds_t)c->sleep_ms * 1000);
    }
}

static void consumer_free(consumer *c)
{
    for (int i = 0; i < c->n; i++)
        sd_image_free(&c->out[i]);
}

/* Sync reference: frames 0..nf-1 then the last one again `pad` times. */
static bool run_sync(const sd_stream_params *p, sd_image *frames, int nf, int pad, sd_image *outs)
{
    sd_stream *s;
    if (sd_stream_create(model(), p, &s) != SD_OK)
        return false;
    bool ok = sd_stream_set_prompt(s, "a photo of a red fox", "") == SD_OK;
    for (int k = 0; ok && k < nf + pad; k++) {
        outs[k] = (sd_image){0};
        ok = sd_stream_img2img(s, &frames[k < nf ? k : nf - 1], &outs[k]) == SD_OK;
    }
    sd_stream_free(s);
    return ok;
}

static void check_async_equals_sync(const char *label, sd_stream_params p)
{
    sd_image frames[NF], sync_out[NF + SD_STREAM_MAX_STEPS];
    for (int k = 0; k < NF; k++)
        make_frame(k, &frames[k]);
    int D = p.use_denoising_batch ? p.n_t_index - 1 : 0;
    p.drop_old_frames = false;
    CHECK(run_sync(&p, frames, NF, D, sync_out));

    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(s, "a photo of a red fox", ""), SD_OK);
    consumer c = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, consume, &c);
    for (int k = 0; k < NF; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &frames[k]), SD_OK);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    pthread_join(th, NULL);
    CHECK_MSG(c.end == SD_ERR_NOT_FOUND, "%s: consumer ended with %s", label, sd_status_name(c.end));
    CHECK_MSG(c.n == NF, "%s: %d outputs, want %d", label, c.n, NF);
    int equal = 0;
    for (int k = 0; k < c.n && k < NF; k++) {
        CHECK_MSG(c.id[k] == k, "%s: output %d has id %lld", label, k, (long long)c.id[k]);
        equal += same(&c.out[k], &sync_out[k + D]);
    }
    CHECK_MSG(equal == NF, "%s: %d of %d outputs equal the sync path's", label, equal, NF);
    /* the sync outputs differ from frame to frame (the check is not vacuous) */
    int distinct = 0;
    for (int k = D + 1; k < NF + D; k++)
        distinct += !same(&sync_out[k], &sync_out[k - 1]);
    CHECK_MSG(distinct == NF - 1, "%s: only %d distinct consecutive outputs", label, distinct);
    sd_stream_stats st;
    CHECK_STATUS(sd_stream_get_stats(s, &st), SD_OK);
    CHECK(st.frames_in == NF && st.frames_out == NF && st.frames_dropped == 0 && st.frames_skipped == 0);
    CHECK(st.inference_ms > 0 && st.latency_ms > 0 && st.fps > 0);
    printf("  %s: %d outputs, ids 0..%d in order, all equal to sync (delay %d); fps %.1f latency %.1f ms "
           "inference %.2f ms\n",
           label, c.n, NF - 1, D, st.fps, st.latency_ms, st.inference_ms);
    /* after the flush the stream keeps working, and stays drained */
    sd_image extra = {0};
    int64_t id = -5;
    CHECK_STATUS(sd_stream_pull_frame(s, &extra, &id, -1), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("flushed");
    CHECK_STATUS(sd_stream_push_frame(s, &frames[3]), SD_OK);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    CHECK_STATUS(sd_stream_pull_frame(s, &extra, &id, 20000), SD_OK);
    CHECK(id == NF);
    sd_image_free(&extra);
    /* the sync calls are refused once the stream runs asynchronously */
    sd_image o = {0};
    CHECK_STATUS(sd_stream_img2img(s, &frames[0], &o), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("asynchronously");
    sd_image_free(&o);
    sd_stream_free(s);
    consumer_free(&c);
    for (int k = 0; k < NF; k++) {
        sd_image_free(&frames[k]);
        sd_image_free(&sync_out[k]);
    }
    for (int k = NF; k < NF + D; k++)
        sd_image_free(&sync_out[k]);
}

TEST(async_order_equals_sync)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_params p;
    base_params(&p);
    check_async_equals_sync("batch t=[32,45] self", p);
    base_params(&p);
    p.n_t_index = 3;
    p.t_index_list[0] = 10, p.t_index_list[1] = 25, p.t_index_list[2] = 40;
    p.cfg_type = SD_CFG_INITIALIZE;
    p.queue_size = 1;
    check_async_equals_sync("batch t=[10,25,40] initialize q=1", p);
    base_params(&p);
    p.use_denoising_batch = false;
    p.cfg_type = SD_CFG_FULL;
    check_async_equals_sync("sequential full", p);
}

/* set_prompt from another thread while frames flow: no deadlock, nothing lost. */
TEST(async_prompt_change_while_streaming)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_params p;
    base_params(&p);
    p.drop_old_frames = false;
    p.queue_size = 2;
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    consumer c = {.s = s, .sleep_ms = 1};
    pthread_t th;
    pthread_create(&th, NULL, consume, &c);
    sd_image f[2];
    make_frame(0, &f[0]);
    make_frame(1, &f[1]);
    for (int k = 0; k < 60; k++) {
        CHECK_STATUS(sd_stream_push_frame(s, &f[k % 2]), SD_OK);
        if (k % 5 == 0)
            CHECK_STATUS(sd_stream_set_prompt(s, k % 10 ? "a dog" : "a cat", "blurry"), SD_OK);
    }
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    pthread_join(th, NULL);
    CHECK_MSG(c.n == 60, "%d outputs", c.n);
    for (int k = 0; k < c.n; k++)
        CHECK(c.id[k] == k);
    sd_stream_free(s);
    consumer_free(&c);
    sd_image_free(&f[0]);
    sd_image_free(&f[1]);
}

/* ------------------------------------------------------------ prompt change (sync) */

#define NP 8
#define CHANGE 4

static void run_prompts(const sd_stream_params *p, sd_image *frames, const char *first, const char *then, sd_image *out)
{
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), p, &s), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(s, first, ""), SD_OK);
    for (int k = 0; k < NP; k++) {
        if (k == CHANGE && then)
            CHECK_STATUS(sd_stream_set_prompt(s, then, ""), SD_OK);
        out[k] = (sd_image){0};
        CHECK_STATUS(sd_stream_img2img(s, &frames[k], &out[k]), SD_OK);
    }
    sd_stream_free(s);
}

TEST(prompt_change_next_frame)
{
    if (!model())
        FAIL("%s", g_why);
    sd_image frames[NP], a[NP], b[NP], c[NP];
    for (int k = 0; k < NP; k++)
        make_frame(k, &frames[k]);
    const char *P1 = "a watercolor painting of a lighthouse", *P2 = "a neon city street at night, rain";
    /* 1. stream batch + RCFG self: identical up to the change, different from the change on */
    sd_stream_params p;
    base_params(&p);
    run_prompts(&p, frames, P1, NULL, a);
    run_prompts(&p, frames, P1, P2, b);
    int eq_before = 0, diff_after = 0;
    for (int k = 0; k < NP; k++) {
        if (k < CHANGE)
            eq_before += same(&a[k], &b[k]);
        else
            diff_after += !same(&a[k], &b[k]);
    }
    CHECK_MSG(eq_before == CHANGE, "batch: %d of %d frames before the change equal", eq_before, CHANGE);
    CHECK_MSG(diff_after == NP - CHANGE, "batch: %d of %d frames from the change on differ", diff_after, NP - CHANGE);
    for (int k = 0; k < NP; k++) {
        sd_image_free(&a[k]);
        sd_image_free(&b[k]);
    }
    /* 2. sequential path with cfg none carries no prompt-dependent state from
     *    frame to frame (init_noise is replaced by each frame's x_t, the
     *    re-noising draws do not depend on the prompt): from the change on the
     *    output equals a stream created with the new prompt from the start. */
    base_params(&p);
    p.use_denoising_batch = false;
    p.cfg_type = SD_CFG_NONE;
    run_prompts(&p, frames, P1, NULL, a);
    run_prompts(&p, frames, P1, P2, b);
    run_prompts(&p, frames, P2, NULL, c);
    int eq_old = 0, eq_new = 0, diff_old = 0;
    for (int k = 0; k < NP; k++) {
        if (k < CHANGE) {
            eq_old += same(&a[k], &b[k]);
        } else {
            eq_new += same(&b[k], &c[k]);
            diff_old += !same(&b[k], &a[k]);
        }
    }
    CHECK_MSG(eq_old == CHANGE, "sequential: %d of %d frames before the change equal the old prompt's", eq_old, CHANGE);
    CHECK_MSG(eq_new == NP - CHANGE, "sequential: %d of %d frames after the change equal the new prompt's", eq_new,
              NP - CHANGE);
    CHECK_MSG(diff_old == NP - CHANGE, "sequential: %d of %d frames after the change differ from the old prompt's",
              diff_old, NP - CHANGE);
    printf("  batch: %d/%d equal before, %d/%d differ from frame %d on; sequential: %d/%d equal to the new prompt's\n",
           eq_before, CHANGE, diff_after, NP - CHANGE, CHANGE, eq_new, NP - CHANGE);
    for (int k = 0; k < NP; k++) {
        sd_image_free(&a[k]);
        sd_image_free(&b[k]);
        sd_image_free(&c[k]);
        sd_image_free(&frames[k]);
    }
}

/* ------------------------------------------------------------ similarity filter */

TEST(similarity_filter)
{
    if (!model())
        FAIL("%s", g_why);
    const int max_skip = 3, N = 21;
    sd_stream_params p;
    base_params(&p);
    p.similarity_threshold = 0.98f;
    p.max_skip_frames = max_skip;
    sd_image x, nx, out = {0};
    make_frame(0, &x);
    nx = x;
    nx.data = malloc((size_t)S * S * 3);
    for (size_t i = 0; i < (size_t)S * S * 3; i++)
        nx.data[i] = (uint8_t)(255 - x.data[i]); /* [-1,1] values negated: cosine -1 */
    /* identical frames: cos = 1, skip_prob = 1 -> max_skip skipped, one forced through, repeating */
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    int pattern_ok = 0;
    uint64_t prev = 0;
    for (int k = 0; k < N; k++) {
        CHECK_STATUS(sd_stream_img2img(s, &x, &out), SD_OK);
        sd_stream_stats st;
        sd_stream_get_stats(s, &st);
        bool skipped = st.frames_skipped > prev, want = k > 0 && k % (max_skip + 1) != 0;
        prev = st.frames_skipped;
        pattern_ok += skipped == want;
    }
    int want_skips = (N - 1) - (N - 1) / (max_skip + 1);
    CHECK_MSG(pattern_ok == N, "static input: skip pattern wrong on %d of %d frames", N - pattern_ok, N);
    CHECK_MSG(prev == (uint64_t)want_skips, "static input: %llu skipped, want %d", (unsigned long long)prev, want_skips);
    sd_stream_free(s);
    /* alternating very different frames: nothing skipped */
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    for (int k = 0; k < N; k++)
        CHECK_STATUS(sd_stream_img2img(s, k % 2 ? &nx : &x, &out), SD_OK);
    sd_stream_stats st;
    sd_stream_get_stats(s, &st);
    CHECK_MSG(st.frames_skipped == 0, "alternating input: %llu skipped", (unsigned long long)st.frames_skipped);
    sd_stream_free(s);
    /* async: the same static input; every frame comes out in order, a skipped
     * one with the output image of the frame before it */
    p.drop_old_frames = false;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    consumer c = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, consume, &c);
    for (int k = 0; k < N; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &x), SD_OK);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    pthread_join(th, NULL);
    CHECK_MSG(c.n == N, "async static input: %d outputs, want %d", c.n, N);
    int order = 0, repeats = 0;
    for (int k = 0; k < c.n; k++) {
        order += c.id[k] == k;
        repeats += same(&c.out[k], &c.out[k - k % (max_skip + 1)]);
    }
    CHECK(order == N);
    CHECK_MSG(repeats == N, "async: %d of %d outputs equal their forced-through frame's", repeats, N);
    sd_stream_get_stats(s, &st);
    CHECK_MSG(st.frames_skipped == (uint64_t)want_skips, "async: %llu skipped, want %d",
              (unsigned long long)st.frames_skipped, want_skips);
    printf("  static: %d of %d frames skipped (max_skip %d), alternating: 0 skipped, async: %d outputs in order\n",
           want_skips, N, max_skip, c.n);
    sd_stream_free(s);
    consumer_free(&c);
    /* a static scene with no skip limit: more skipped frames than the pending
     * list holds; padding steps move them out, all in order */
    p.max_skip_frames = 1000000;
    const int NS = 2500;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    consumer c2 = {.s = s};
    pthread_create(&th, NULL, consume, &c2);
    for (int k = 0; k < NS; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &x), SD_OK);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    pthread_join(th, NULL);
    sd_stream_get_stats(s, &st);
    CHECK_MSG(c2.total == NS && c2.in_order == NS, "unlimited skips: %lld outputs, %lld in order, want %d",
              (long long)c2.total, (long long)c2.in_order, NS);
    CHECK(st.frames_skipped == (uint64_t)NS - 1);
    int rep2 = 0;
    for (int k = 1; k < c2.n; k++)
        rep2 += same(&c2.out[k], &c2.out[0]);
    CHECK(rep2 == c2.n - 1);
    printf("  unlimited skips: %lld of %d frames out in order, %llu skipped\n", (long long)c2.total, NS,
           (unsigned long long)st.frames_skipped);
    sd_stream_free(s);
    consumer_free(&c2);
    sd_image_free(&x);
    sd_image_free(&nx);
    sd_image_free(&out);
}

/* ------------------------------------------------------------ live policy */

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
        res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

TEST(live_drops_oldest)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_params p;
    base_params(&p);
    p.drop_old_frames = true;
    p.queue_size = 2;
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    sd_image f[4];
    for (int k = 0; k < 4; k++)
        make_frame(k, &f[k]);
    const int N = 400;
    long rss0 = 0;
    uint64_t allocs0 = 0;
    double worst_push = 0;
    for (int k = 0; k < N; k++) { /* nobody pulls: the slowest consumer */
        double t0 = sd_time_now();
        CHECK_STATUS(sd_stream_push_frame(s, &f[k % 4]), SD_OK);
        double dt = sd_time_now() - t0;
        worst_push = dt > worst_push ? dt : worst_push;
        if (k == 50) {
            usleep(200000);
            rss0 = rss_kb();
            allocs0 = sd_stream_async_slot_allocs(s);
        }
    }
    usleep(200000);
    long rss1 = rss_kb();
    uint64_t allocs1 = sd_stream_async_slot_allocs(s);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    consumer c = {.s = s};
    consume(&c);
    sd_stream_stats st;
    CHECK_STATUS(sd_stream_get_stats(s, &st), SD_OK);
    CHECK(c.end == SD_ERR_NOT_FOUND);
    CHECK(st.frames_in == (uint64_t)N);
    CHECK_MSG(st.frames_out + st.frames_dropped == (uint64_t)N, "out %llu + dropped %llu != %d",
              (unsigned long long)st.frames_out, (unsigned long long)st.frames_dropped, N);
    CHECK_MSG(c.n <= 4 * (p.queue_size + 2) + 2, "%d outputs survived a consumer that never pulled", c.n);
    CHECK(c.n >= 1);
    int increasing = 1;
    for (int k = 1; k < c.n; k++)
        increasing &= c.id[k] > c.id[k - 1];
    CHECK(increasing);
    CHECK_MSG(c.n > 0 && c.id[c.n - 1] == N - 1, "the newest frame must survive (last id %lld)",
              c.n ? (long long)c.id[c.n - 1] : -1LL);
    CHECK_MSG(allocs1 == allocs0, "slot buffers reallocated: %llu -> %llu", (unsigned long long)allocs0,
              (unsigned long long)allocs1);
    CHECK_MSG(rss0 > 0 && rss1 - rss0 < 2048, "RSS grew by %ld KiB over %d frames", rss1 - rss0, N - 50);
    CHECK_MSG(worst_push < 0.25, "a live push took %.0f ms", worst_push * 1e3);
    printf("  live: %d pushed, %llu dropped, %d returned (ids increasing, last %lld), slot allocs %llu, RSS %+ld KiB, "
           "slowest push %.2f ms\n",
           N, (unsigned long long)st.frames_dropped, c.n, c.n ? (long long)c.id[c.n - 1] : -1LL,
           (unsigned long long)allocs1, rss1 - rss0, worst_push * 1e3);
    sd_stream_free(s);
    consumer_free(&c);
    for (int k = 0; k < 4; k++)
        sd_image_free(&f[k]);
}

/* ------------------------------------------------------------ LoRA change while streaming */

#define NL 10
#define LORA_AT 5

/* A LoRA applied to the model while an async stream runs takes effect on the stream's next frame (its
 * prompt K/V are re-encoded with the new text encoder / UNet weights), exactly as on a sync stream that
 * had the same LoRA change between the same frames: same output bytes, frame for frame. */
TEST(async_lora_change_next_frame)
{
    if (!model())
        FAIL("%s", g_why);
    const char *d = getenv("SD_TEST_DATA");
    char lp[1200];
    snprintf(lp, sizeof lp, "%s/lora/style_kohya.safetensors", d ? d : "tests/data");
    sd_lora_spec lora = {lp, 1.0f};
    sd_stream_params p;
    base_params(&p);
    p.drop_old_frames = false;
    const int D = p.n_t_index - 1;
    sd_image frames[NL], sync_out[NL + SD_STREAM_MAX_STEPS], plain[NL + SD_STREAM_MAX_STEPS];
    for (int k = 0; k < NL; k++)
        make_frame(k, &frames[k]);
    /* sync reference without the LoRA (the LoRA must change the outputs: the check is not vacuous) */
    CHECK(run_sync(&p, frames, NL, D, plain));
    /* sync: LoRA applied between frame LORA_AT-1 and frame LORA_AT */
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(s, "a photo of a red fox", ""), SD_OK);
    for (int k = 0; k < NL + D; k++) {
        if (k == LORA_AT)
            CHECK_STATUS(sd_model_apply_loras(model(), &lora, 1), SD_OK);
        sync_out[k] = (sd_image){0};
        CHECK_STATUS(sd_stream_img2img(s, &frames[k < NL ? k : NL - 1], &sync_out[k]), SD_OK);
    }
    sd_stream_free(s);
    CHECK_STATUS(sd_model_apply_loras(model(), NULL, 0), SD_OK);
    /* async: the same frames, the same LoRA change once the step on frame LORA_AT-1 has run (its output,
     * frame LORA_AT-1-D, was pulled) and before frame LORA_AT is pushed */
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(s, "a photo of a red fox", ""), SD_OK);
    sd_image out[NL] = {{0}};
    int64_t id = -1;
    int got = 0;
    for (int k = 0; k < LORA_AT; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &frames[k]), SD_OK);
    while (got < LORA_AT - D && sd_stream_pull_frame(s, &out[got], &id, 20000) == SD_OK)
        CHECK(id == got++);
    CHECK_STATUS(sd_model_apply_loras(model(), &lora, 1), SD_OK);
    for (int k = LORA_AT; k < NL; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &frames[k]), SD_OK);
    CHECK_STATUS(sd_stream_flush(s), SD_OK);
    while (got < NL && sd_stream_pull_frame(s, &out[got], &id, 20000) == SD_OK)
        CHECK(id == got++);
    CHECK_MSG(got == NL, "%d of %d async outputs", got, NL);
    sd_stream_free(s);
    CHECK_STATUS(sd_model_apply_loras(model(), NULL, 0), SD_OK);
    int equal = 0, changed = 0;
    for (int k = 0; k < got; k++) {
        equal += same(&out[k], &sync_out[k + D]);
        changed += !same(&sync_out[k + D], &plain[k + D]);
    }
    CHECK_MSG(equal == NL, "%d of %d async outputs equal the sync stream's with the same LoRA change", equal, NL);
    CHECK_MSG(changed == NL - (LORA_AT - D), "the LoRA changed %d sync outputs, want the %d from frame %d on",
              changed, NL - (LORA_AT - D), LORA_AT - D);
    printf("  LoRA applied before frame %d: %d/%d async outputs equal the sync stream's, %d changed by it\n", LORA_AT,
           equal, NL, changed);
    for (int k = 0; k < NL; k++) {
        sd_image_free(&frames[k]);
        sd_image_free(&out[k]);
    }
    for (int k = 0; k < NL + D; k++) {
        sd_image_free(&sync_out[k]);
        sd_image_free(&plain[k]);
    }
}

/* ------------------------------------------------------------ errors */

/* Live t_index_list and seed: set on a stream before its first frame, they give the frames of a stream
 * created with them; set later, they change the frames from there on; a refused list changes nothing. */
static void run_frames(sd_stream *s, sd_image *frames, int nf, sd_image *outs)
{
    for (int k = 0; k < nf; k++) {
        outs[k] = (sd_image){0};
        CHECK_STATUS(sd_stream_img2img(s, &frames[k], &outs[k]), SD_OK);
    }
}

TEST(live_t_index_and_seed)
{
    if (!model())
        FAIL("%s", g_why);
    enum { N = 6 };
    sd_image frames[N], ref[N], got[N];
    for (int k = 0; k < N; k++)
        make_frame(k, &frames[k]);
    sd_stream_params p;
    base_params(&p);
    p.cfg_type = SD_CFG_NONE;
    sd_stream_params q = p;
    q.t_index_list[0] = 20, q.t_index_list[1] = 40, q.seed = 11;
    sd_stream *a, *b;
    CHECK_STATUS(sd_stream_create(model(), &q, &b), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(b, "a photo of a red fox", ""), SD_OK);
    run_frames(b, frames, N, ref);
    sd_stream_free(b);

    CHECK_STATUS(sd_stream_create(model(), &p, &a), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(a, "a photo of a red fox", ""), SD_OK);
    /* refused: another count, descending, out of range; the stream keeps its schedule */
    CHECK_STATUS(sd_stream_set_t_index(a, (int[]){10, 20, 30}, 3), SD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(sd_last_error(), "t_index_list") != NULL);
    CHECK_STATUS(sd_stream_set_t_index(a, (int[]){40, 20}, 2), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_t_index(a, (int[]){20, 50}, 2), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_t_index(a, (int[]){20, 40}, 2), SD_OK);
    CHECK_STATUS(sd_stream_set_seed(a, 11), SD_OK);
    run_frames(a, frames, N, got);
    int same_n = 0;
    for (int k = 0; k < N; k++)
        same_n += same(&ref[k], &got[k]);
    CHECK_MSG(same_n == N, "live t_index [20,40] + seed 11 before the first frame: %d of %d frames equal a stream "
              "created with them", same_n, N);
    for (int k = 0; k < N; k++)
        sd_image_free(&got[k]);
    /* changed mid-stream: the frames after the change differ from the unchanged stream's */
    sd_stream *c;
    CHECK_STATUS(sd_stream_create(model(), &p, &c), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(c, "a photo of a red fox", ""), SD_OK);
    run_frames(c, frames, N, got);
    sd_stream_free(c);
    CHECK_STATUS(sd_stream_create(model(), &p, &c), SD_OK);
    CHECK_STATUS(sd_stream_set_prompt(c, "a photo of a red fox", ""), SD_OK);
    sd_image mid[N];
    for (int k = 0; k < N; k++) {
        if (k == 3)
            CHECK_STATUS(sd_stream_set_t_index(c, (int[]){10, 30}, 2), SD_OK);
        mid[k] = (sd_image){0};
        CHECK_STATUS(sd_stream_img2img(c, &frames[k], &mid[k]), SD_OK);
    }
    sd_stream_free(c);
    for (int k = 0; k < N; k++)
        CHECK_MSG(same(&mid[k], &got[k]) == (k < 3), "frame %d: the t_index change at frame 3 %s", k,
                  k < 3 ? "changed an earlier frame" : "did not change it");
    for (int k = 0; k < N; k++) {
        sd_image_free(&frames[k]);
        sd_image_free(&ref[k]);
        sd_image_free(&got[k]);
        sd_image_free(&mid[k]);
    }
    sd_stream_free(a);
}

TEST(bad_params)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_params p;
    sd_stream *s = NULL;
    base_params(&p);
    p.t_index_list[0] = 45, p.t_index_list[1] = 32;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("ascend");
    base_params(&p);
    p.t_index_list[1] = 50;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("outside 0..49");
    base_params(&p);
    p.t_index_list[0] = -1;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    base_params(&p);
    p.n_t_index = 0;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("t_index_list");
    base_params(&p);
    p.width = 72; /* not a multiple of 16 (TAESD 8 x 2 UNet levels) */
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("multiples of 16");
    base_params(&p);
    p.cfg_type = (sd_cfg_type)7;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("cfg_type");
    base_params(&p);
    p.similarity_threshold = 1.5f;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    base_params(&p);
    p.queue_size = 0;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("queue_size");
    CHECK(s == NULL);
    /* the validator on its own names the parameter */
    const char *param = "unset";
    base_params(&p);
    CHECK_STATUS(sd_stream_params_validate(&p, &param), SD_OK);
    CHECK(param == NULL);
    p.t_index_list[1] = 50;
    CHECK_STATUS(sd_stream_params_validate(&p, &param), SD_ERR_INVALID_ARGUMENT);
    CHECK(param && !strcmp(param, "t_index_list"));
    CHECK_ERR_CONTAINS("t_index_list[1] = 50 is outside 0..49");
    base_params(&p);
    p.delta = -200;
    CHECK_STATUS(sd_stream_params_validate(&p, &param), SD_ERR_INVALID_ARGUMENT);
    CHECK(param && !strcmp(param, "delta"));
    base_params(&p);
    p.height = 20;
    CHECK_STATUS(sd_stream_params_validate(&p, &param), SD_ERR_INVALID_ARGUMENT);
    CHECK(param && !strcmp(param, "height"));
    CHECK_STATUS(sd_stream_params_validate(NULL, NULL), SD_ERR_INVALID_ARGUMENT);
    /* API misuse */
    base_params(&p);
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    sd_image empty = {0}, out = {0};
    CHECK_STATUS(sd_stream_push_frame(s, &empty), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_push_frame(s, NULL), SD_ERR_INVALID_ARGUMENT);
    int64_t id;
    CHECK_STATUS(sd_stream_pull_frame(s, &out, &id, 0), SD_ERR_NOT_FOUND);
    CHECK_STATUS(sd_stream_pull_frame(s, &out, &id, 30), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("30 ms");
    CHECK_STATUS(sd_stream_pull_frame(NULL, &out, &id, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_get_stats(s, NULL), SD_ERR_INVALID_ARGUMENT);
    sd_stream_free(s);
    base_params(&p);
    p.frame_buffer_size = 2;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    sd_image f;
    make_frame(0, &f);
    CHECK_STATUS(sd_stream_push_frame(s, &f), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("frame_buffer_size");
    sd_stream_free(s);
    sd_image_free(&f);
    CHECK_STATUS(sd_stream_create(NULL, &p, &s), SD_ERR_INVALID_ARGUMENT);
}

/* Freeing a stream with frames in flight joins the threads cleanly. */
TEST(free_while_busy)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_params p;
    base_params(&p);
    p.drop_old_frames = true;
    sd_stream *s;
    CHECK_STATUS(sd_stream_create(model(), &p, &s), SD_OK);
    sd_image f;
    make_frame(2, &f);
    for (int k = 0; k < 20; k++)
        CHECK_STATUS(sd_stream_push_frame(s, &f), SD_OK);
    sd_stream_free(s);
    sd_image_free(&f);
}

/* precision auto (the default of `stream` and `serve`) is bf16 exactly where the CPU has bf16 kernels
 * (AMX or AVX512-BF16), else fp32; SD_CPU_ISA lowering the kernels lowers it too; the model says which */
static void load_precision(sd_precision pr, sd_model_info *info, sd_model **out)
{
    memset(info, 0, sizeof *info);
    *out = load_tiny(pr);
    CHECK_MSG(*out != NULL, "%s", g_why);
    if (*out)
        sd_model_get_info(*out, info);
}

TEST(precision_auto)
{
    if (!model()) {
        SKIP("%s", g_why);
        return;
    }
    sd_backend *probe = NULL;
    CHECK_STATUS(sd_backend_cpu_create(1, &probe), SD_OK);
    const char *bk = probe ? sd_backend_cpu_bf16_isa(probe) : NULL, *fk = probe ? sd_backend_cpu_isa(probe) : "?";
    bool ab = probe && sd_backend_cpu_auto_bf16(probe); /* auto's one rule (cpu_kern.h) */
    sd_backend_destroy(probe);
    printf("  this CPU: fp32 kernels %s, bf16 kernels %s, auto = %s\n", fk, bk ? bk : "none", ab ? "bf16" : "fp32");
    sd_model *m;
    sd_model_info in;
    load_precision(SD_PRECISION_FP32, &in, &m);
    CHECK(in.precision && !strcmp(in.precision, "fp32") && in.kernels && !strcmp(in.kernels, fk));
    sd_model_free(m);
    load_precision(SD_PRECISION_AUTO, &in, &m);
    CHECK_MSG(in.precision && !strcmp(in.precision, ab ? "bf16" : "fp32"), "auto gave %s", in.precision);
    CHECK_MSG(in.kernels && !strcmp(in.kernels, ab ? bk : fk), "auto ran the %s kernels", in.kernels);
    if (m) { /* and a stream at that precision runs */
        sd_stream_params sp;
        sd_stream_default_params(&sp);
        sp.width = sp.height = S;
        sp.use_taesd = true;
        sd_stream *s = NULL;
        sd_image f, out = {0};
        make_frame(0, &f);
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_OK);
        if (s)
            CHECK_STATUS(sd_stream_img2img(s, &f, &out), SD_OK);
        CHECK(out.width == S && out.height == S);
        sd_stream_free(s);
        sd_image_free(&f);
        sd_image_free(&out);
    }
    sd_model_free(m);
    /* bf16 asked for: bf16 weights; bf16 compute where the kernels exist, else the fp32 kernels */
    load_precision(SD_PRECISION_BF16, &in, &m);
    CHECK(in.precision && !strcmp(in.precision, "bf16") && in.kernels && !strcmp(in.kernels, bk ? bk : fk));
    sd_model_free(m);
    /* SD_CPU_ISA=avx512 (no bf16 kernels): auto falls back to fp32 */
    if (!strcmp(fk, "avx512")) {
        const char *old = getenv("SD_CPU_ISA");
        char keep[64];
        snprintf(keep, sizeof keep, "%s", old ? old : "");
        setenv("SD_CPU_ISA", "avx512", 1);
        load_precision(SD_PRECISION_AUTO, &in, &m);
        CHECK_MSG(in.precision && !strcmp(in.precision, "fp32") && in.kernels && !strcmp(in.kernels, "avx512"),
                  "SD_CPU_ISA=avx512, auto: %s / %s", in.precision, in.kernels);
        sd_model_free(m);
        if (old)
            setenv("SD_CPU_ISA", keep, 1);
        else
            unsetenv("SD_CPU_ISA");
    }
}

int main(void)
{
    RUN(bad_params);
    RUN(async_order_equals_sync);
    RUN(async_prompt_change_while_streaming);
    RUN(prompt_change_next_frame);
    RUN(similarity_filter);
    RUN(live_drops_oldest);
    RUN(free_while_busy);
    RUN(async_lora_change_next_frame);
    RUN(live_t_index_and_seed);
    RUN(precision_auto);
    sd_model_free(g_model);
    return test_summary();
}
