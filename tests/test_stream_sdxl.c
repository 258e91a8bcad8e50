/* The stream engine on SDXL (issue #17): the tiny SDXL folder ($SD_TEST_DATA/models/tiny-sdxl) with taesd-tiny
 * (TAESDXL has TAESD's layout) or its own AutoencoderKL. The added conditions the stream keeps per UNet row
 * (pooled text embedding of text encoder 2, the negative's on the uncond rows; time ids from the stream size),
 * every cfg type, txt2img, prompt changes, the async path against the synchronous one, the similarity filter
 * and ControlNets in an SDXL stream. Numerics against the reference: the own_sdxl_stream_* check cases;
 * batched (grouped) SDXL streams: test_multistream_sdxl. */
#include "test.h"

#include "pipe/pipeline.h"
#include "pipe/stream.h"

#include <unistd.h>

#define S 32
#define NF 6

static sd_model *g_m;
static char g_dir[1024], g_taesd[1024];

static void make_frame(int k, sd_image *img)
{
    *img = (sd_image){S, S, test_wave_frame(S, S, k, 77 + (unsigned long long)k * 7919)};
}

static bool same(const sd_image *a, const sd_image *b)
{
    return a->data && b->data && a->width == b->width && a->height == b->height &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * 3);
}

static void params(sd_stream_params *p, sd_cfg_type cfg)
{
    sd_stream_default_params(p);
    p->width = p->height = S;
    p->seed = 5;
    p->cfg_type = cfg;
    p->guidance_scale = 1.6f;
}

static float *download(sd_stream *s, sd_tensor t)
{
    float *h = malloc((size_t)sd_numel(&t) * sizeof(float));
    if (h && sd_tensor_to_f32(&s->state, &t, h) != SD_OK) {
        free(h);
        h = NULL;
    }
    return h;
}

/* The rows of add_te are the pooled embeddings of the prompt (and of the negative prompt on the uncond rows,
 * first) as txt2img's encoder gives them; every row's time ids are (H, W, 0, 0, H, W). */
TEST(added_conditions_per_row)
{
    static const sd_cfg_type cfgs[4] = {SD_CFG_NONE, SD_CFG_SELF, SD_CFG_FULL, SD_CFG_INITIALIZE};
    float *pe = NULL, *pp = NULL, *ne = NULL, *np = NULL;
    int Sq, D, P;
    CHECK_STATUS(sd_sdxl_encode_prompt(g_m, "a lighthouse", NULL, 0, &pe, &pp, &Sq, &D, &P), SD_OK);
    CHECK_STATUS(sd_sdxl_encode_prompt(g_m, "fog", NULL, 0, &ne, &np, &Sq, &D, &P), SD_OK);
    for (int c = 0; c < 4 && pp && np; c++) {
        sd_stream_params p;
        params(&p, cfgs[c]);
        p.width = 2 * S; /* non-square: (H, W) order */
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        if (!s)
            continue;
        CHECK_STATUS(sd_stream_set_prompt(s, "a lighthouse", "fog"), SD_OK);
        CHECK(s->P == P && s->D == D && s->add_te.ne[0] == s->UB);
        float *te = download(s, s->add_te), *ti = download(s, s->add_ids);
        int u = cfgs[c] == SD_CFG_FULL ? s->B : cfgs[c] == SD_CFG_INITIALIZE ? s->fbs : 0;
        int bad = 0;
        for (int r = 0; te && ti && r < s->UB; r++) {
            const float *want = r < u ? np : pp;
            for (int i = 0; i < P; i++)
                bad += fabsf(te[(size_t)r * P + i] - want[i]) > 1e-5f * (1 + fabsf(want[i]));
            const float ids[6] = {S, 2 * S, 0, 0, S, 2 * S};
            for (int i = 0; i < 6; i++)
                bad += ti[r * 6 + i] != ids[i];
        }
        CHECK_MSG(te && ti && bad == 0, "cfg %d: %d added-condition values differ from the encoders' / (H,W,0,0,H,W)",
                  c, bad);
        free(te);
        free(ti);
        sd_stream_free(s);
    }
    free(pe);
    free(pp);
    free(ne);
    free(np);
}

/* Every cfg type streams frames; a new prompt changes the next frame; txt2img gives images; the async path
 * (push / pull) equals the synchronous frames. */
TEST(cfg_types_prompts_txt2img_async)
{
    sd_image frames[NF];
    for (int k = 0; k < NF; k++)
        make_frame(k, &frames[k]);
    static const sd_cfg_type cfgs[4] = {SD_CFG_NONE, SD_CFG_SELF, SD_CFG_FULL, SD_CFG_INITIALIZE};
    for (int c = 0; c < 4; c++) {
        sd_stream_params p;
        params(&p, cfgs[c]);
        sd_image sync[NF] = {{0}}, other = {0};
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        if (!s)
            continue;
        CHECK_STATUS(sd_stream_set_prompt(s, "a red fox", "blurry"), SD_OK);
        for (int k = 0; k < NF; k++)
            CHECK_STATUS(sd_stream_img2img(s, &frames[k], &sync[k]), SD_OK);
        sd_stream_free(s);
        /* the same stream with another prompt from frame 3 on */
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        CHECK_STATUS(sd_stream_set_prompt(s, "a red fox", "blurry"), SD_OK);
        for (int k = 0; s && k < 4; k++) {
            if (k == 3)
                CHECK_STATUS(sd_stream_set_prompt(s, "a blue whale", "blurry"), SD_OK);
            CHECK_STATUS(sd_stream_img2img(s, &frames[k], &other), SD_OK);
            CHECK_MSG(same(&other, &sync[k]) == (k < 3), "cfg %d frame %d: the prompt change at frame 3 %s", c, k,
                      k < 3 ? "changed an earlier frame" : "changed nothing");
        }
        sd_stream_free(s);
        /* async: frames pushed, outputs pulled (the 2-step warm-up output is not returned) */
        p.drop_old_frames = false;
        p.queue_size = 2 * NF;
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        CHECK_STATUS(sd_stream_set_prompt(s, "a red fox", "blurry"), SD_OK);
        for (int k = 0; s && k < NF; k++)
            CHECK_STATUS(sd_stream_push_frame(s, &frames[k]), SD_OK);
        if (s)
            CHECK_STATUS(sd_stream_flush(s), SD_OK);
        int equal = 0;
        for (int k = 0; s && k < NF - 1; k++) {
            sd_image o = {0};
            int64_t id = -1;
            CHECK_STATUS(sd_stream_pull_frame(s, &o, &id, 60000), SD_OK);
            equal += id == k && same(&o, &sync[k + 1]);
            sd_image_free(&o);
        }
        CHECK_MSG(equal == NF - 1, "cfg %d async: %d of %d outputs equal the synchronous ones", c, equal, NF - 1);
        sd_stream_free(s);
        /* txt2img */
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        CHECK_STATUS(sd_stream_set_prompt(s, "a red fox", "blurry"), SD_OK);
        sd_image t1 = {0}, t2 = {0};
        CHECK_STATUS(sd_stream_txt2img(s, &t1), SD_OK);
        CHECK_STATUS(sd_stream_txt2img(s, &t2), SD_OK);
        CHECK(t1.width == S && t2.height == S && !same(&t1, &t2));
        sd_image_free(&t1);
        sd_image_free(&t2);
        sd_stream_free(s);
        for (int k = 0; k < NF; k++)
            sd_image_free(&sync[k]);
        sd_image_free(&other);
    }
    /* the similarity filter: a repeated frame is skipped (the previous output comes again) */
    sd_stream_params p;
    params(&p, SD_CFG_NONE);
    p.similarity_threshold = 0.99f;
    p.max_skip_frames = 5;
    sd_stream *s = NULL;
    CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
    sd_image a = {0}, b = {0};
    for (int k = 0; s && k < 4; k++)
        CHECK_STATUS(sd_stream_img2img(s, &frames[0], k % 2 ? &b : &a), SD_OK);
    sd_stream_stats st = {0};
    if (s)
        CHECK_STATUS(sd_stream_get_stats(s, &st), SD_OK);
    CHECK_MSG(st.frames_skipped >= 2, "the filter skipped %llu of 3 repeated frames", (unsigned long long)st.frames_skipped);
    sd_image_free(&a);
    sd_image_free(&b);
    sd_stream_free(s);
    for (int k = 0; k < NF; k++)
        sd_image_free(&frames[k]);
}

/* An SDXL ControlNet in an SDXL stream (the VAE: the tiny ControlNet embeds at the VAE's scale): scale 0 gives
 * the frames of the stream without it, bit for bit; scale 1 changes them. */
TEST(controlnet_in_sdxl_stream)
{
    char cd[1100];
    snprintf(cd, sizeof cd, "%s/../controlnet-tiny-sdxl", g_dir);
    sd_controlnet *cn = NULL;
    CHECK_STATUS(sd_controlnet_load(g_m, cd, &cn), SD_OK);
    if (!cn)
        return;
    sd_image frames[NF], plain[NF] = {{0}}, zero[NF] = {{0}}, ctl[NF] = {{0}};
    for (int k = 0; k < NF; k++)
        make_frame(k, &frames[k]);
    sd_control c;
    sd_control_default(&c);
    c.net = cn;
    for (int run = 0; run < 3; run++) {
        sd_stream_params p;
        params(&p, SD_CFG_SELF);
        p.use_taesd = false;
        c.scale = run == 2 ? 1.0f : 0.0f;
        p.controls = &c;
        p.n_controls = run ? 1 : 0;
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(g_m, &p, &s), SD_OK);
        sd_image *out = run == 0 ? plain : run == 1 ? zero : ctl;
        for (int k = 0; s && k < NF; k++)
            CHECK_STATUS(sd_stream_img2img(s, &frames[k], &out[k]), SD_OK);
        sd_stream_free(s);
    }
    for (int k = 0; k < NF; k++)
        CHECK_MSG(same(&plain[k], &zero[k]), "frame %d: a ControlNet at scale 0 changed it", k);
    CHECK_MSG(plain[NF - 1].data && !same(&plain[NF - 1], &ctl[NF - 1]), "the ControlNet changed nothing");
    for (sd_image **set = (sd_image *[]){frames, plain, zero, ctl, NULL}; *set; set++)
        for (int k = 0; k < NF; k++)
            sd_image_free(&(*set)[k]);
    sd_controlnet_free(cn);
}

int main(void)
{
    const char *d = getenv("SD_TEST_DATA");
    snprintf(g_dir, sizeof g_dir, "%s/models/tiny-sdxl", d ? d : "tests/data");
    snprintf(g_taesd, sizeof g_taesd, "%s/models/taesd-tiny", d ? d : "tests/data");
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.taesd = g_taesd;
    mp.n_threads = 2;
    if (access(g_dir, R_OK) || sd_model_load(g_dir, &mp, &g_m) != SD_OK) {
        fprintf(stderr, "FAIL: the committed tiny SDXL model %s does not load: %s\n", g_dir, sd_last_error());
        return 1;
    }
    RUN(added_conditions_per_row);
    RUN(cfg_types_prompts_txt2img_async);
    RUN(controlnet_in_sdxl_stream);
    sd_model_free(g_m);
    return test_summary();
}
