/* ControlNets in running streams: the live settings (sd_stream_set_control / get_control: scale, guidance
 * window, each net's preprocessor) give what a stream created with them gives; bad live values are named and
 * change nothing; streams with ControlNets in a stream group give, bit for bit, what each gives alone (each
 * UNet row with the residuals of its own frame), mixed with a stream without nets, and on SDXL; a fixed control
 * image of another size is resized. Tiny random-weight models
 * from tests/data. */
#include "test.h"
#include "test_util.h"

#include "io/image.h"

#include <math.h>

static char g_data[1024];

static const char *data_path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", g_data, rel);
    return buf;
}

enum { SF = 32, NF = 4 }; /* 32x32 frames, four of them */

static void frame(int k, sd_image *img)
{
    sd_rgb_alloc(img, SF, SF);
    unsigned long long r = 900 + (unsigned long long)k * 104729;
    for (int y = 0; y < SF; y++)
        for (int x = 0; x < SF; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f + 90.0f * sinf(0.35f * (float)(x * (c + 1) + 2 * k) - 0.21f * (float)(y + k)) +
                          25.0f * test_rand(&r);
                img->data[((size_t)y * SF + x) * 3 + c] = (uint8_t)fminf(255.0f, fmaxf(0.0f, v));
            }
}

static bool img_eq(const sd_image *a, const sd_image *b)
{
    return a->data && b->data && a->width == b->width && a->height == b->height &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * 3);
}

static void params(sd_stream_params *p, const sd_control *c, int n, sd_cfg_type cfg, uint64_t seed)
{
    sd_stream_default_params(p);
    p->width = p->height = SF;
    p->t_index_list[0] = 20;
    p->t_index_list[1] = 40;
    p->n_t_index = 2;
    p->cfg_type = cfg;
    p->use_taesd = false; /* the tiny VAE downsamples by 2, as the tiny ControlNets' embeddings */
    p->seed = seed;
    p->controls = c;
    p->n_controls = n;
}

/* NF frames through a stream; `live` (may be NULL) is applied to net 0 before the first frame. */
static sd_status run(sd_model *m, const sd_stream_params *p, const sd_stream_control *live, const sd_image *in,
                     sd_image *out)
{
    sd_stream *s = NULL;
    SD_TRY(sd_stream_create(m, p, &s));
    sd_status st = live ? sd_stream_set_control(s, 0, live) : SD_OK;
    for (int t = 0; t < NF && st == SD_OK; t++)
        st = sd_stream_img2img(s, &in[t], &out[t]);
    sd_stream_free(s);
    return st;
}

static void free_all(sd_image *v, int n)
{
    for (int i = 0; i < n; i++)
        sd_image_free(&v[i]);
}

static sd_model *g_m;
static sd_controlnet *g_cn;
static sd_image g_in[NF];

TEST(live_settings_equal_created_ones)
{
    sd_control c;
    sd_control_default(&c);
    c.net = g_cn;
    sd_stream_params p;
    sd_image a[NF] = {{0}}, b[NF] = {{0}};
    /* scale and guidance window */
    c.scale = 0.4f;
    c.guidance_start = 0.5f;
    params(&p, &c, 1, SD_CFG_NONE, 5);
    CHECK_STATUS(run(g_m, &p, NULL, g_in, a), SD_OK);
    c.scale = 1.0f;
    c.guidance_start = 0.0f;
    params(&p, &c, 1, SD_CFG_NONE, 5);
    sd_stream_control live = {.scale = 0.4f, .guidance_start = 0.5f, .guidance_end = 1.0f};
    sd_preprocess_default_params(&live.preprocess);
    CHECK_STATUS(run(g_m, &p, &live, g_in, b), SD_OK);
    for (int t = 0; t < NF; t++)
        CHECK_MSG(img_eq(&a[t], &b[t]), "frame %d: live scale/window differ from created ones", t);
    free_all(b, NF);
    CHECK_STATUS(run(g_m, &p, NULL, g_in, b), SD_OK); /* and the change mattered (the test can fail) */
    CHECK(!img_eq(&a[NF - 1], &b[NF - 1]));
    free_all(a, NF);
    free_all(b, NF);
    /* the preprocessor, per net: canny made live equals canny at creation */
    params(&p, &c, 1, SD_CFG_NONE, 5);
    p.control_preprocess.kind = SD_PREPROCESS_CANNY;
    p.control_preprocess.canny_low = 40;
    p.control_preprocess.canny_high = 90;
    CHECK_STATUS(run(g_m, &p, NULL, g_in, a), SD_OK);
    params(&p, &c, 1, SD_CFG_NONE, 5);
    live = (sd_stream_control){.scale = 1.0f, .guidance_end = 1.0f};
    live.preprocess = (sd_preprocess_params){SD_PREPROCESS_CANNY, 40, 90, 64};
    CHECK_STATUS(run(g_m, &p, &live, g_in, b), SD_OK);
    for (int t = 0; t < NF; t++)
        CHECK_MSG(img_eq(&a[t], &b[t]), "frame %d: live canny differs from canny at creation", t);
    free_all(b, NF);
    CHECK_STATUS(run(g_m, &p, NULL, g_in, b), SD_OK); /* the frame itself as control: another output */
    CHECK(!img_eq(&a[NF - 1], &b[NF - 1]));
    free_all(a, NF);
    free_all(b, NF);
}

TEST(live_settings_refuse_bad_values)
{
    sd_control c;
    sd_control_default(&c);
    c.net = g_cn;
    sd_stream_params p;
    params(&p, &c, 1, SD_CFG_SELF, 3);
    sd_stream *s = NULL;
    CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
    if (!s)
        return;
    CHECK(sd_stream_control_count(s) == 1);
    sd_stream_control ok, v;
    CHECK_STATUS(sd_stream_get_control(s, 0, &ok), SD_OK);
    CHECK(ok.scale == 1.0f && ok.guidance_end == 1.0f && ok.from_frame && ok.preprocess.kind == SD_PREPROCESS_NONE);
    v = ok;
    CHECK_STATUS(sd_stream_set_control(s, 1, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("index 1");
    CHECK_STATUS(sd_stream_set_control(s, -1, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_get_control(s, 3, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_stream_set_control(s, 0, NULL), SD_ERR_INVALID_ARGUMENT);
    v.scale = 10.5f;
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("scale");
    v.scale = NAN;
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    v = ok;
    v.guidance_start = 0.7f;
    v.guidance_end = 0.6f;
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("guidance start");
    v = ok;
    v.preprocess.kind = (sd_preprocess)99;
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("preprocessor");
    v = ok;
    v.preprocess = (sd_preprocess_params){SD_PREPROCESS_CANNY, 300, 200, 64};
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    v.preprocess = (sd_preprocess_params){SD_PREPROCESS_CANNY, 100, 5000, 64};
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    v.preprocess = (sd_preprocess_params){SD_PREPROCESS_SCRIBBLE, 100, 200, 0};
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_ERR_INVALID_ARGUMENT);
    /* nothing changed */
    CHECK_STATUS(sd_stream_get_control(s, 0, &v), SD_OK);
    CHECK(v.scale == ok.scale && v.guidance_start == ok.guidance_start && v.guidance_end == ok.guidance_end &&
          v.preprocess.kind == ok.preprocess.kind);
    /* a good change between frames, while the stream runs */
    sd_image o = {0};
    CHECK_STATUS(sd_stream_img2img(s, &g_in[0], &o), SD_OK);
    v.scale = 0.5f;
    v.preprocess = (sd_preprocess_params){SD_PREPROCESS_SOFTEDGE, 100, 200, 64};
    CHECK_STATUS(sd_stream_set_control(s, 0, &v), SD_OK);
    CHECK_STATUS(sd_stream_img2img(s, &g_in[1], &o), SD_OK);
    CHECK_STATUS(sd_stream_get_control(s, 0, &v), SD_OK);
    CHECK(v.scale == 0.5f && v.preprocess.kind == SD_PREPROCESS_SOFTEDGE);
    sd_image_free(&o);
    sd_stream_free(s);
    CHECK(sd_stream_control_count(NULL) == 0);
}

/* A fixed control image of another size than the stream's is resized (bilinear, sd_rgb_resize): the same
 * frames as with the image resized beforehand. */
TEST(fixed_image_of_another_size_is_resized)
{
    sd_image big = {0}, sized = {0};
    CHECK_STATUS(sd_rgb_alloc(&big, 48, 40), SD_OK);
    for (size_t i = 0; big.data && i < (size_t)48 * 40 * 3; i++)
        big.data[i] = (uint8_t)(i * 37 % 251);
    CHECK_STATUS(sd_rgb_resize(&big, SF, SF, &sized), SD_OK);
    sd_control c;
    sd_control_default(&c);
    c.net = g_cn;
    c.image = &big;
    sd_stream_params p;
    params(&p, &c, 1, SD_CFG_NONE, 9);
    sd_image a[NF] = {{0}}, b[NF] = {{0}};
    CHECK_STATUS(run(g_m, &p, NULL, g_in, a), SD_OK);
    c.image = &sized;
    CHECK_STATUS(run(g_m, &p, NULL, g_in, b), SD_OK);
    for (int t = 0; t < NF; t++)
        CHECK_MSG(img_eq(&a[t], &b[t]), "frame %d: the 48x40 control image was not resized as sd_rgb_resize does", t);
    free_all(a, NF);
    free_all(b, NF);
    sd_image_free(&big);
    sd_image_free(&sized);
}

/* n streams of sp[] (n <= 3) in one group of model m, the NF frames to every member: out[i][t] = member i's
 * output of frame t; *g and s[] are left to the caller (to free). Each member's outputs are checked against
 * alone[i] (its outputs on its own), bit for bit; `what` names the case. */
static void run_group(sd_model *m, const sd_stream_params *sp, int n, sd_stream_group **g, sd_stream **s,
                      sd_image (*alone)[NF], const char *what)
{
    sd_image out[3][NF];
    memset(out, 0, sizeof out);
    *g = NULL;
    CHECK_STATUS(sd_stream_group_create(m, n, n, g), SD_OK);
    bool ok = *g != NULL;
    for (int i = 0; i < n; i++) {
        s[i] = NULL;
        CHECK_STATUS(sd_stream_create(m, &sp[i], &s[i]), SD_OK);
        ok = ok && s[i] && sd_stream_group_add(*g, s[i]) == SD_OK;
    }
    for (int t = 0; ok && t < NF; t++) {
        const sd_image *in[3] = {&g_in[t], &g_in[t], &g_in[t]};
        sd_image *o[3] = {&out[0][t], &out[1][t], &out[2][t]};
        CHECK_STATUS(sd_stream_group_img2img(*g, in, o, n), SD_OK);
    }
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < NF; t++)
            CHECK_MSG(img_eq(&alone[i][t], &out[i][t]), "%s: member %d, frame %d differs from alone", what, i, t);
        free_all(out[i], NF);
    }
}

/* Three streams (two with the net at different scales and preprocessors, one without) in one group: each
 * member's outputs equal its outputs alone, bit for bit. */
TEST(group_members_with_controlnets_equal_alone)
{
    sd_control c[2];
    sd_control_default(&c[0]);
    sd_control_default(&c[1]);
    c[0].net = c[1].net = g_cn;
    c[1].scale = 0.6f;
    sd_stream_params p[3];
    params(&p[0], &c[0], 1, SD_CFG_SELF, 21);
    params(&p[1], &c[1], 1, SD_CFG_NONE, 22);
    p[1].control_preprocess.kind = SD_PREPROCESS_SOFTEDGE;
    params(&p[2], NULL, 0, SD_CFG_SELF, 23);
    sd_image alone[3][NF];
    memset(alone, 0, sizeof alone);
    for (int i = 0; i < 3; i++)
        CHECK_STATUS(run(g_m, &p[i], NULL, g_in, alone[i]), SD_OK);
    for (int pad = 0; pad < 2; pad++) { /* pad: the group's UNet rows padded to a power of two (as with graphs) */
        setenv("SD_GROUP_PAD_ROWS", pad ? "1" : "0", 1);
        sd_stream_group *g;
        sd_stream *s[3];
        run_group(g_m, p, 3, &g, s, alone, pad ? "padded rows" : "exact rows");
        if (g && s[0]) { /* a live change reaches a grouped member on its next frame */
            sd_stream_control v;
            CHECK_STATUS(sd_stream_get_control(s[0], 0, &v), SD_OK);
            v.scale = 0.0f;
            CHECK_STATUS(sd_stream_set_control(s[0], 0, &v), SD_OK);
            sd_image o = {0};
            const sd_image *in[1] = {&g_in[0]};
            sd_image *out[1] = {&o};
            CHECK_STATUS(sd_stream_group_run(g, s, in, out, 1), SD_OK);
            sd_image_free(&o);
        }
        sd_stream_group_free(g);
        for (int i = 0; i < 3; i++)
            sd_stream_free(s[i]);
    }
    unsetenv("SD_GROUP_PAD_ROWS");
    /* the members differ from each other (the test can fail) */
    CHECK(!img_eq(&alone[0][NF - 1], &alone[2][NF - 1]) && !img_eq(&alone[0][NF - 1], &alone[1][NF - 1]));
    for (int i = 0; i < 3; i++)
        free_all(alone[i], NF);
}

/* SDXL: two SDXL streams with the tiny SDXL ControlNet (added conditions and residuals per row) in one group
 * give what each gives alone. */
TEST(sdxl_group_members_with_controlnets_equal_alone)
{
    char p[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    sd_model *m = NULL;
    sd_controlnet *cn = NULL;
    if (sd_model_load(data_path(p, sizeof p, "models/tiny-sdxl"), &mp, &m) != SD_OK ||
        sd_controlnet_load(m, data_path(p, sizeof p, "models/controlnet-tiny-sdxl"), &cn) != SD_OK) {
        CHECK_MSG(false, "tiny-sdxl / controlnet-tiny-sdxl do not load (committed test data): %s", sd_last_error());
        sd_model_free(m);
        return;
    }
    sd_control c[2];
    sd_control_default(&c[0]);
    sd_control_default(&c[1]);
    c[0].net = c[1].net = cn;
    c[1].scale = 0.5f;
    sd_stream_params sp[2];
    params(&sp[0], &c[0], 1, SD_CFG_SELF, 31);
    params(&sp[1], &c[1], 1, SD_CFG_FULL, 32);
    sd_image alone[2][NF];
    memset(alone, 0, sizeof alone);
    for (int i = 0; i < 2; i++)
        CHECK_STATUS(run(m, &sp[i], NULL, g_in, alone[i]), SD_OK);
    sd_stream_group *g;
    sd_stream *s[2];
    run_group(m, sp, 2, &g, s, alone, "SDXL");
    CHECK(!img_eq(&alone[0][NF - 1], &alone[1][NF - 1]));
    sd_stream_group_free(g);
    for (int i = 0; i < 2; i++) {
        sd_stream_free(s[i]);
        free_all(alone[i], NF);
    }
    sd_controlnet_free(cn);
    sd_model_free(m);
}

int main(void)
{
    const char *d = getenv("SD_TEST_DATA");
    if (!d || !*d) {
        fprintf(stderr, "SD_TEST_DATA is not set (tests/data)\n");
        return 1;
    }
    snprintf(g_data, sizeof g_data, "%s", d);
    char p[1200], tp[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.taesd = data_path(tp, sizeof tp, "models/taesd-tiny");
    if (sd_model_load(data_path(p, sizeof p, "models/tiny-sd15"), &mp, &g_m) != SD_OK) {
        fprintf(stderr, "tiny-sd15 + taesd-tiny do not load (committed test data): %s\n", sd_last_error());
        return 1;
    }
    if (sd_controlnet_load(g_m, data_path(p, sizeof p, "models/controlnet-tiny-sd15"), &g_cn) != SD_OK) {
        fprintf(stderr, "controlnet-tiny-sd15 does not load (committed test data): %s\n", sd_last_error());
        return 1;
    }
    for (int t = 0; t < NF; t++)
        frame(t, &g_in[t]);
    RUN(live_settings_equal_created_ones);
    RUN(live_settings_refuse_bad_values);
    RUN(fixed_image_of_another_size_is_resized);
    RUN(group_members_with_controlnets_equal_alone);
    RUN(sdxl_group_members_with_controlnets_equal_alone);
    free_all(g_in, NF);
    sd_controlnet_free(g_cn);
    sd_model_free(g_m);
    return test_summary();
}
