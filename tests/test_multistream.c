/* Stream groups (many streams, one batched UNet call per tick): every member's
 * output equals what the same stream gives alone with sd_stream_img2img (same
 * seed, prompt and frames), for streams with different prompts, cfg types
 * (self / none / initialize / full) and t_index_lists, over several ticks,
 * with batches smaller than the group (round robin), a prompt change and the
 * similarity filter. Plus the membership rules and errors.
 * Uses the tiny random-weight models in $SD_TEST_DATA/models (tiny-sd15 +
 * taesd-tiny) at 32x32 (latent 4x4); SD_TEST_STREAM_MODEL names another
 * model folder there (CTest test_multistream_sdxl: tiny-sdxl, whose UNet rows
 * carry SDXL's added conditions through the batched call). SD_TEST_PRECISION
 * (fp32, bf16, int8) sets the model's precision: CTest runs bf16 at the CPU
 * levels amx and avx512bf16 and int8 (test_multistream_bf16_*, _int8), where
 * a row's result must not depend on the other rows of the batch either;
 * SD_TEST_STREAM_SIZE sets the image size (default 32). */
#include "test.h"

#include "pipe/stream.h"

#include <unistd.h>

/* image size in pixels: 32 (latent 4x4) or SD_TEST_STREAM_SIZE (CTest's bf16 / int8 runs: 48, latent 6x6 =
 * 36 tokens per UNet row, so rows straddle the kernels' 32-row blocks differently alone and batched) */
static int S = 32;
#define NT 5 /* ticks */
#define MAXN 4

static sd_model *g_model;
static double g_last_padded; /* unet_rows_padded of the last compare() */
static char g_why[2600];
static char g_mp[1024], g_tp[1024];

static sd_model *load_model(void)
{
    sd_model_params p;
    sd_model_default_params(&p);
    p.taesd = g_tp;
    const char *nt = getenv("SD_TEST_THREADS");
    p.n_threads = nt ? atoi(nt) : 2;
    const char *prec = getenv("SD_TEST_PRECISION");
    if (prec && *prec && !sd_precision_from_name(prec, &p.precision)) {
        snprintf(g_why, sizeof g_why, "SD_TEST_PRECISION: unknown precision '%s'", prec);
        return NULL;
    }
    sd_model *m = NULL;
    if (sd_model_load(g_mp, &p, &m) != SD_OK)
        return NULL;
    return m;
}

static sd_model *model(void)
{
    if (g_model || g_why[0])
        return g_model;
    const char *d = getenv("SD_TEST_DATA");
    const char *mn = getenv("SD_TEST_STREAM_MODEL");
    snprintf(g_mp, sizeof g_mp, "%s/models/%s", d ? d : "tests/data", mn && *mn ? mn : "tiny-sd15");
    snprintf(g_tp, sizeof g_tp, "%s/models/taesd-tiny", d ? d : "tests/data");
    if (access(g_mp, R_OK) || access(g_tp, R_OK)) {
        snprintf(g_why, sizeof g_why, "tiny models not found under %s/models", d ? d : "tests/data");
        return NULL;
    }
    g_model = load_model();
    if (!g_model && !g_why[0])
        snprintf(g_why, sizeof g_why, "loading %s failed: %s", g_mp, sd_last_error());
    sd_model_info mi;
    if (g_model && sd_model_get_info(g_model, &mi) == SD_OK)
        printf("  model %s: precision %s, kernels %s\n", g_mp, mi.precision, mi.kernels);
    return g_model;
}

/* Frame k of stream j: smooth gradients plus noise (frames of stream `still` repeat, for the filter). */
static void make_frame(int j, int k, sd_image *img)
{
    int w = S, h = S;
    img->width = w;
    img->height = h;
    img->data = malloc((size_t)w * h * 3);
    unsigned long long r = 1000 + (unsigned long long)k * 7919 + (unsigned long long)j * 104729;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f + 60.0f * sinf(0.11f * (float)(x * (c + 1) + k * 5 + j * 17) + 0.07f * (float)y) +
                          40.0f * test_rand(&r);
                img->data[((size_t)y * w + x) * 3 + c] = (uint8_t)fminf(255.0f, fmaxf(0.0f, v));
            }
}

typedef struct cfg {
    sd_cfg_type cfg;
    int t[4], nt;
    uint64_t seed;
    float guidance, ssf;
    const char *prompt, *negative, *prompt2; /* prompt2: set before tick 2 (NULL: none) */
    bool still;                              /* the same frame every tick */
} cfg;

static void params_of(const cfg *c, sd_stream_params *p)
{
    sd_stream_default_params(p);
    p->width = p->height = S;
    p->cfg_type = c->cfg;
    p->n_t_index = c->nt;
    for (int i = 0; i < c->nt; i++)
        p->t_index_list[i] = c->t[i];
    p->seed = c->seed;
    p->guidance_scale = c->guidance;
    p->similarity_threshold = c->ssf;
    p->max_skip_frames = 2;
}

static size_t img_floats(void) { return (size_t)3 * S * S; }

static void out_floats(sd_stream *s, float *dst)
{
    sd_ctx tmp = {.be = s->m->be};
    sd_tensor t = s->img_out;
    sd_tensor_to_f32(&tmp, &t, dst);
}

static sd_status make_stream(const cfg *c, sd_stream **s)
{
    sd_stream_params p;
    params_of(c, &p);
    SD_TRY(sd_stream_create(model(), &p, s));
    return sd_stream_set_prompt(*s, c->prompt, c->negative);
}

/* Runs n streams alone (reference) and in a group of max_batch; returns the
 * max |diff| of the float outputs and whether every 8-bit image matched. */
static void compare(const cfg *cs, int n, int max_batch, double *maxdiff, bool *images_equal, uint64_t *ticks)
{
    size_t nf = img_floats();
    float *ref = malloc(sizeof(float) * nf * NT * MAXN), *got = malloc(sizeof(float) * nf);
    sd_image refimg[MAXN][NT];
    memset(refimg, 0, sizeof refimg);
    *maxdiff = 0;
    *images_equal = true;
    for (int j = 0; j < n; j++) { /* the reference: each stream alone */
        sd_stream *s = NULL;
        CHECK_STATUS(make_stream(&cs[j], &s), SD_OK);
        if (!s)
            goto done;
        for (int k = 0; k < NT; k++) {
            if (k == 2 && cs[j].prompt2)
                CHECK_STATUS(sd_stream_set_prompt(s, cs[j].prompt2, cs[j].negative), SD_OK);
            sd_image in = {0};
            make_frame(j, cs[j].still ? 0 : k, &in);
            CHECK_STATUS(sd_stream_img2img(s, &in, &refimg[j][k]), SD_OK);
            out_floats(s, ref + ((size_t)k * MAXN + j) * nf);
            sd_image_free(&in);
        }
        sd_stream_free(s);
    }
    sd_stream_group *g = NULL;
    sd_stream *ss[MAXN] = {0};
    CHECK_STATUS(sd_stream_group_create(model(), n, max_batch, &g), SD_OK);
    for (int j = 0; j < n && g; j++) {
        CHECK_STATUS(make_stream(&cs[j], &ss[j]), SD_OK);
        if (ss[j])
            CHECK_STATUS(sd_stream_group_add(g, ss[j]), SD_OK);
    }
    CHECK(sd_stream_group_count(g) == n);
    for (int k = 0; k < NT && sd_stream_group_count(g) == n; k++) {
        sd_image in[MAXN] = {0}, out[MAXN] = {0};
        const sd_image *pin[MAXN];
        sd_image *pout[MAXN];
        for (int j = 0; j < n; j++) {
            if (k == 2 && cs[j].prompt2)
                CHECK_STATUS(sd_stream_set_prompt(ss[j], cs[j].prompt2, cs[j].negative), SD_OK);
            make_frame(j, cs[j].still ? 0 : k, &in[j]);
            pin[j] = &in[j];
            pout[j] = &out[j];
        }
        CHECK_STATUS(sd_stream_group_img2img(g, pin, pout, n), SD_OK);
        for (int j = 0; j < n; j++) {
            out_floats(ss[j], got);
            const float *r = ref + ((size_t)k * MAXN + j) * nf;
            for (size_t i = 0; i < nf; i++)
                *maxdiff = fmax(*maxdiff, fabs((double)got[i] - r[i]));
            bool eq = out[j].data && out[j].width == refimg[j][k].width && out[j].height == refimg[j][k].height &&
                      !memcmp(out[j].data, refimg[j][k].data, nf);
            CHECK_MSG(eq, "stream %d tick %d: 8-bit image differs from the stream alone", j, k);
            *images_equal = *images_equal && eq;
            sd_image_free(&in[j]);
            sd_image_free(&out[j]);
        }
    }
    sd_stream_group_stats gs;
    *ticks = 0;
    if (g && sd_stream_group_get_stats(g, -1, &gs) == SD_OK) {
        *ticks = gs.ticks;
        g_last_padded = gs.unet_rows_padded;
    }
    for (int j = 0; j < n && g; j++) {
        sd_stream_group_stats ms;
        CHECK_STATUS(sd_stream_group_get_stats(g, j, &ms), SD_OK);
        CHECK(ms.frames + ms.frames_skipped == NT);
        sd_stream_stats st;
        CHECK_STATUS(sd_stream_get_stats(ss[j], &st), SD_OK);
        CHECK(st.frames_in == NT && st.frames_out == NT && st.frames_skipped == ms.frames_skipped);
    }
    sd_stream_group_free(g);
    for (int j = 0; j < n; j++)
        sd_stream_free(ss[j]);
done:
    for (int j = 0; j < MAXN; j++)
        for (int k = 0; k < NT; k++)
            sd_image_free(&refimg[j][k]);
    free(ref);
    free(got);
}

static const cfg three[3] = {
    {SD_CFG_SELF, {32, 45}, 2, 7, 1.2f, 0, "a red fox in the snow", "", NULL, false},
    {SD_CFG_NONE, {20, 40}, 2, 8, 1.0f, 0, "a blue car", "", "a green bicycle", false},
    {SD_CFG_INITIALIZE, {10, 30, 45}, 3, 9, 1.5f, 0, "mountains at dawn", "blurry", NULL, false},
};

TEST(three_streams_one_batch)
{
    if (!model())
        FAIL("%s", g_why);
    double d;
    bool eq;
    uint64_t ticks;
    compare(three, 3, 3, &d, &eq, &ticks);
    printf("  3 streams, batch 3: max |diff| vs alone %.3g, 8-bit images %s, %llu ticks\n", d,
           eq ? "identical" : "DIFFER", (unsigned long long)ticks);
    CHECK(d <= 1e-5);
    CHECK(ticks == NT);
}

TEST(three_streams_batch_two_round_robin)
{
    if (!model())
        FAIL("%s", g_why);
    double d;
    bool eq;
    uint64_t ticks;
    compare(three, 3, 2, &d, &eq, &ticks);
    printf("  3 streams, batch 2: max |diff| vs alone %.3g, 8-bit images %s, %llu ticks\n", d,
           eq ? "identical" : "DIFFER", (unsigned long long)ticks);
    CHECK(d <= 1e-5);
    CHECK(ticks == 2 * NT);
}

TEST(four_streams_full_cfg_single_step_and_filter)
{
    if (!model())
        FAIL("%s", g_why);
    const cfg four[4] = {
        {SD_CFG_FULL, {25}, 1, 11, 1.4f, 0, "a cat", "dark", NULL, false},
        {SD_CFG_SELF, {16, 32, 45}, 3, 12, 1.3f, 0.9f, "still life", "", NULL, true}, /* filter skips */
        {SD_CFG_NONE, {40}, 1, 13, 1.0f, 0, "a boat", "", "a ship", false},
        {SD_CFG_INITIALIZE, {30, 45}, 2, 14, 1.2f, 0, "a forest", "fog", "a jungle", false},
    };
    double d;
    bool eq;
    uint64_t ticks;
    compare(four, 4, 3, &d, &eq, &ticks);
    printf("  4 streams (full, self+filter, none, initialize), batch 3: max |diff| vs alone %.3g, 8-bit images %s, "
           "%llu ticks\n",
           d, eq ? "identical" : "DIFFER", (unsigned long long)ticks);
    CHECK(d <= 1e-5);
}

/* sd_stream_group_run: img2img and txt2img members in one UNet call, members
 * that send only on some ticks (the others' state untouched), frames given in
 * any order. Each output equals the stream alone on the same frames. */
TEST(mixed_txt2img_img2img_and_idle_members)
{
    if (!model())
        FAIL("%s", g_why);
    const cfg four[4] = {
        {SD_CFG_SELF, {32, 45}, 2, 21, 1.2f, 0, "a red fox", "", NULL, false},
        {SD_CFG_NONE, {25}, 1, 22, 1.0f, 0, "a lighthouse", "", "a castle", false},
        {SD_CFG_INITIALIZE, {10, 30, 45}, 3, 23, 1.5f, 0, "mountains", "blurry", NULL, false},
        {SD_CFG_FULL, {20, 40}, 2, 24, 1.4f, 0, "a city at night", "day", NULL, false},
    };
    const bool txt[4] = {false, true, false, true};
    /* sends[j][k]: stream j has a frame at tick k */
    const bool sends[4][NT] = {{1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}, {1, 0, 1, 0, 1}, {0, 1, 1, 0, 1}};
    size_t nf = img_floats();
    float *ref = calloc(nf * NT * 4, sizeof(float)), *got = malloc(sizeof(float) * nf);
    sd_stream *ss[4] = {0};
    sd_stream_group *g = NULL;
    for (int j = 0; j < 4; j++) { /* the reference: each stream alone, on its own frames */
        sd_stream *s = NULL;
        CHECK_STATUS(make_stream(&four[j], &s), SD_OK);
        for (int k = 0; s && k < NT; k++) {
            if (!sends[j][k])
                continue;
            if (k == 2 && four[j].prompt2)
                CHECK_STATUS(sd_stream_set_prompt(s, four[j].prompt2, four[j].negative), SD_OK);
            sd_image in = {0}, out = {0};
            make_frame(j, k, &in);
            CHECK_STATUS(txt[j] ? sd_stream_txt2img(s, &out) : sd_stream_img2img(s, &in, &out), SD_OK);
            out_floats(s, ref + ((size_t)k * 4 + j) * nf);
            sd_image_free(&in);
            sd_image_free(&out);
        }
        sd_stream_free(s);
    }
    CHECK_STATUS(sd_stream_group_create(model(), 4, 4, &g), SD_OK);
    for (int j = 0; j < 4 && g; j++) {
        CHECK_STATUS(make_stream(&four[j], &ss[j]), SD_OK);
        if (ss[j])
            CHECK_STATUS(sd_stream_group_add(g, ss[j]), SD_OK);
    }
    double maxdiff = 0;
    for (int k = 0; k < NT && sd_stream_group_count(g) == 4; k++) {
        sd_stream *fs[4];
        const sd_image *pin[4];
        sd_image in[4] = {0}, out[4] = {0}, *pout[4];
        int n = 0, who[4];
        for (int j = 3; j >= 0; j--) { /* reverse member order */
            if (!sends[j][k])
                continue;
            if (k == 2 && four[j].prompt2)
                CHECK_STATUS(sd_stream_set_prompt(ss[j], four[j].prompt2, four[j].negative), SD_OK);
            make_frame(j, k, &in[j]);
            fs[n] = ss[j];
            pin[n] = txt[j] ? NULL : &in[j];
            pout[n] = &out[j];
            who[n++] = j;
        }
        CHECK_STATUS(sd_stream_group_run(g, fs, pin, pout, n), SD_OK);
        for (int f = 0; f < n; f++) {
            int j = who[f];
            CHECK(out[j].data != NULL && out[j].width == S);
            out_floats(ss[j], got);
            const float *r = ref + ((size_t)k * 4 + j) * nf;
            for (size_t i = 0; i < nf; i++)
                maxdiff = fmax(maxdiff, fabs((double)got[i] - r[i]));
        }
        for (int j = 0; j < 4; j++) {
            sd_image_free(&in[j]);
            sd_image_free(&out[j]);
        }
    }
    printf("  img2img + txt2img members, idle members: max |diff| vs alone %.3g\n", maxdiff);
    CHECK(maxdiff <= 1e-5);
    sd_stream_group_stats gs;
    CHECK_STATUS(sd_stream_group_get_stats(g, -1, &gs), SD_OK);
    CHECK(gs.ticks == NT && gs.frames == 16);
    for (int j = 0; j < 4 && g; j++) {
        CHECK(sd_stream_group_index(g, ss[j]) == j);
        sd_stream_group_stats ms;
        CHECK_STATUS(sd_stream_group_get_stats(g, j, &ms), SD_OK);
        uint64_t want = 0;
        for (int k = 0; k < NT; k++)
            want += sends[j][k];
        CHECK_MSG(ms.frames == want, "stream %d: %llu frames in the group, %llu sent", j,
                  (unsigned long long)ms.frames, (unsigned long long)want);
    }
    /* errors: a non-member, a stream twice, an empty frame */
    if (g && ss[0] && ss[1]) {
        sd_stream *other = NULL;
        sd_stream_params p;
        params_of(&four[0], &p);
        CHECK_STATUS(sd_stream_create(model(), &p, &other), SD_OK);
        sd_image o = {0}, empty = {0};
        sd_image *po[2] = {&o, &o};
        const sd_image *pn[2] = {NULL, NULL};
        sd_stream *bad1[1] = {other}, *bad2[2] = {ss[1], ss[1]};
        CHECK_STATUS(sd_stream_group_run(g, bad1, pn, po, 1), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("not a member");
        CHECK_STATUS(sd_stream_group_run(g, bad2, pn, po, 2), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("twice");
        const sd_image *pe[1] = {&empty};
        CHECK_STATUS(sd_stream_group_run(g, ss, pe, po, 1), SD_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(sd_stream_group_run(g, ss, pn, po, 0), SD_ERR_INVALID_ARGUMENT);
        CHECK(sd_stream_group_index(g, other) == -1);
        sd_stream_free(other);
        sd_image_free(&o);
    }
    sd_stream_group_free(g);
    for (int j = 0; j < 4; j++)
        sd_stream_free(ss[j]);
    free(ref);
    free(got);
}

/* The UNet rows padded to a power of two (what the GPU does to reuse a few captured graphs; forced here
 * with SD_GROUP_PAD_ROWS=1): the padding rows change nothing in the streams' rows. */
TEST(padded_unet_rows)
{
    if (!model())
        FAIL("%s", g_why);
    const cfg two[2] = {
        {SD_CFG_SELF, {16, 32, 45}, 3, 31, 1.3f, 0, "a red fox", "", NULL, false},       /* UNet rows 3 */
        {SD_CFG_INITIALIZE, {30, 45}, 2, 32, 1.5f, 0, "a harbour", "fog", "a bay", false}, /* rows 2 + 1 */
    };
    setenv("SD_GROUP_PAD_ROWS", "1", 1);
    double d;
    bool eq;
    uint64_t ticks;
    compare(two, 2, 2, &d, &eq, &ticks); /* rows 3 + 3 = 6, padded to 8 */
    CHECK(g_last_padded == 8.0);
    unsetenv("SD_GROUP_PAD_ROWS");
    printf("  2 streams, UNet rows padded 6 -> 8: max |diff| vs alone %.3g, 8-bit images %s\n", d,
           eq ? "identical" : "DIFFER");
    CHECK(d <= 1e-5);
}

TEST(membership_rules)
{
    if (!model())
        FAIL("%s", g_why);
    sd_stream_group *g = NULL;
    CHECK_STATUS(sd_stream_group_create(NULL, 2, 1, &g), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_group_create(model(), 0, 1, &g), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_group_create(model(), 2, 3, &g), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_group_create(model(), 2, 2, &g), SD_OK);
    if (!g)
        return;
    sd_stream_params p;
    sd_stream_default_params(&p);
    p.width = p.height = S;
    sd_stream *a = NULL, *b = NULL, *c = NULL, *big = NULL, *fb = NULL, *seq = NULL;
    CHECK_STATUS(sd_stream_create(model(), &p, &a), SD_OK);
    CHECK_STATUS(sd_stream_create(model(), &p, &b), SD_OK);
    CHECK_STATUS(sd_stream_create(model(), &p, &c), SD_OK);
    p.width = 2 * S;
    CHECK_STATUS(sd_stream_create(model(), &p, &big), SD_OK);
    p.width = S;
    p.frame_buffer_size = 2;
    CHECK_STATUS(sd_stream_create(model(), &p, &fb), SD_OK);
    p.frame_buffer_size = 1;
    p.use_denoising_batch = false;
    CHECK_STATUS(sd_stream_create(model(), &p, &seq), SD_OK);
    if (!a || !b || !c || !big || !fb || !seq)
        goto out;
    sd_image in = {0}, o = {0};
    make_frame(0, 0, &in);
    const sd_image *pin[2] = {&in, &in};
    sd_image *pout[2] = {&o, &o};
    CHECK_STATUS(sd_stream_group_img2img(g, pin, pout, 1), SD_ERR_INVALID_ARGUMENT); /* empty group */
    CHECK_STATUS(sd_stream_group_add(g, a), SD_OK);
    CHECK_STATUS(sd_stream_group_add(g, a), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("already");
    CHECK_STATUS(sd_stream_group_add(g, big), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("different sizes");
    CHECK_STATUS(sd_stream_group_add(g, fb), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("frame_buffer_size 1");
    CHECK_STATUS(sd_stream_group_add(g, seq), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("use_denoising_batch");
    CHECK_STATUS(sd_stream_group_add(g, b), SD_OK);
    CHECK_STATUS(sd_stream_group_add(g, c), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("full");
    CHECK_STATUS(sd_stream_group_img2img(g, pin, pout, 3), SD_ERR_INVALID_ARGUMENT);
    const sd_image *bad[2] = {&in, NULL};
    CHECK_STATUS(sd_stream_group_img2img(g, bad, pout, 2), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_group_img2img(g, pin, pout, 1), SD_OK); /* a frame for the first stream only */
    sd_stream_group_stats st;
    CHECK_STATUS(sd_stream_group_get_stats(g, 1, &st), SD_OK);
    CHECK(st.frames == 0);
    CHECK_STATUS(sd_stream_group_get_stats(g, 0, &st), SD_OK);
    CHECK(st.frames == 1 && st.ticks == 1 && st.batch_frames == 1);
    CHECK_STATUS(sd_stream_group_get_stats(g, 2, &st), SD_ERR_INVALID_ARGUMENT);
    /* another group refuses a member; a different model is refused */
    sd_stream_group *g2 = NULL;
    CHECK_STATUS(sd_stream_group_create(model(), 2, 2, &g2), SD_OK);
    CHECK_STATUS(sd_stream_group_add(g2, b), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("another group");
    sd_model *m2 = load_model();
    CHECK(m2 != NULL);
    if (m2) {
        sd_stream *x = NULL;
        CHECK_STATUS(sd_stream_create(m2, &p, &x), SD_OK);
        CHECK_STATUS(sd_stream_group_add(g2, c), SD_OK);
        CHECK_STATUS(sd_stream_group_add(g2, x), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("another model");
        sd_stream_free(x);
        sd_model_free(m2);
    }
    sd_stream_group_free(g2); /* c leaves with it */
    /* remove, re-add, free of a member detaches it */
    CHECK_STATUS(sd_stream_group_remove(g, c), SD_ERR_NOT_FOUND);
    CHECK_STATUS(sd_stream_group_remove(g, a), SD_OK);
    CHECK(sd_stream_group_count(g) == 1);
    CHECK_STATUS(sd_stream_group_add(g, c), SD_OK);
    /* one mode at a time: a member cannot run asynchronously, an async stream cannot join */
    CHECK_STATUS(sd_stream_push_frame(c, &in), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("stream group");
    sd_image none = {0};
    CHECK_STATUS(sd_stream_pull_frame(c, &none, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    sd_image_free(&none);
    sd_stream_free(c);
    c = NULL;
    CHECK(sd_stream_group_count(g) == 1);
    CHECK_STATUS(sd_stream_push_frame(a, &in), SD_OK);
    CHECK_STATUS(sd_stream_group_add(g, a), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("asynchronously");
    CHECK_STATUS(sd_stream_group_img2img(g, pin, pout, 1), SD_OK);
    sd_image_free(&in);
    sd_image_free(&o);
out:
    sd_stream_group_free(g);
    sd_stream_free(a);
    sd_stream_free(b);
    sd_stream_free(c);
    sd_stream_free(big);
    sd_stream_free(fb);
    sd_stream_free(seq);
}

int main(void)
{
    const char *sz = getenv("SD_TEST_STREAM_SIZE");
    if (sz && *sz) {
        S = atoi(sz);
        if (S < 16 || S > 256 || S % 8) {
            fprintf(stderr, "SD_TEST_STREAM_SIZE: %s is not a multiple of 8 in [16, 256]\n", sz);
            return 1;
        }
    }
    RUN(three_streams_one_batch);
    RUN(three_streams_batch_two_round_robin);
    RUN(four_streams_full_cfg_single_step_and_filter);
    RUN(mixed_txt2img_img2img_and_idle_members);
    RUN(padded_unet_rows);
    RUN(membership_rules);
    sd_model_free(g_model);
    return test_summary();
}
