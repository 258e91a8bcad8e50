/* ControlNet: the UNet residual input, MultiControlNet sums, single-file vs folder loading, the public API
 * (sd_controlnet_load, sd_gen_params.controls), bad input, and the control-image preprocessors (Canny against
 * OpenCV's output, tests/data/preprocess from tools/gen_canny_ref.py; the others against naive references).
 * The reference cases (tests/data/cases/own_*controlnet*, fixtures controlnet_*) run in cli_check. */
#include "test.h"
#include "test_util.h"

#include "io/image.h"
#include "io/safetensors.h"
#include "models/controlnet.h"
#include "pipe/control.h"
#include "pipe/pipeline.h"

static char g_data[1024], g_tmp[256];

static const char *data_path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", g_data, rel);
    return buf;
}

static sd_model *load_model(const char *rel) { return test_load_model(rel); }

static sd_controlnet *load_cn(sd_model *m, const char *rel)
{
    char p[1200];
    sd_controlnet *c = NULL;
    if (sd_controlnet_load(m, data_path(p, sizeof p, rel), &c) != SD_OK)
        fprintf(stderr, "  load %s: %s\n", rel, sd_last_error());
    return c;
}

static void fill(float *x, size_t n, unsigned long long seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * 0.5f * (test_rand(&seed) + 1.0f);
}

static sd_tensor up(sd_ctx *ctx, sd_dtype dt, const float *host, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = {a, b, c, d};
    sd_tensor t = sd_new(ctx, dt, ndim, ne);
    sd_tensor_from_f32(ctx, &t, host);
    return t;
}

/* ---------------------------------------------------------------- model level */

typedef struct {
    const sd_model *m;
    const sd_cnet *a, *b;
    const float *x, *t, *c, *ca, *cb;
    int64_t B, h, w, H, W;
    int mode; /* 0: UNet plain vs zero residuals; 1: a, b separately then a + b accumulated */
    sd_tensor *ra, *rb, *rs;
    sd_tensor ma, mb, ms, y0, y1;
    int64_t bad_h; /* mode 2: residuals of another size */
} job;

static void stage(sd_ctx *ctx, void *user)
{
    job *j = user;
    sd_tensor x = up(ctx, SD_F32, j->x, 4, j->B, 4, j->h, j->w);
    sd_tensor t = up(ctx, SD_F32, j->t, 1, j->B, 0, 0, 0);
    sd_tensor c = up(ctx, SD_F32, j->c, 3, j->B, 77, 32, 0);
    sd_tensor ca = up(ctx, SD_F32, j->ca, 4, j->B, 3, j->H, j->W);
    sd_tensor cb = up(ctx, SD_F32, j->cb, 4, j->B, 3, j->H, j->W);
    int n = sd_cnet_num_residuals(j->a);
    if (j->mode == 0) {
        sd_cnet_residuals_new(ctx, j->a, j->B, j->h, j->w, j->ra, &j->ma);
        for (int k = 0; k < n; k++)
            sd_copy_into(ctx, j->ra[k], sd_affine(ctx, j->ra[k], 0.0f, 0.0f)); /* zeros (arena memory is not) */
        sd_copy_into(ctx, j->ma, sd_affine(ctx, j->ma, 0.0f, 0.0f));
        sd_unet_residuals r = {j->ra, n, j->ma};
        j->y0 = sd_unet_forward(ctx, j->m->unet, x, t, c, NULL, NULL);
        j->y1 = sd_unet_forward_ex(ctx, j->m->unet, x, t, c, NULL, NULL, NULL, &r);
    } else if (j->mode == 1) {
        sd_cnet_residuals_new(ctx, j->a, j->B, j->h, j->w, j->ra, &j->ma);
        sd_cnet_residuals_new(ctx, j->a, j->B, j->h, j->w, j->rb, &j->mb);
        sd_cnet_residuals_new(ctx, j->a, j->B, j->h, j->w, j->rs, &j->ms);
        sd_unet_residuals ra = {j->ra, n, j->ma}, rb = {j->rb, n, j->mb}, rs = {j->rs, n, j->ms};
        sd_cnet_forward(ctx, j->a, x, t, c, ca, 0.7f, NULL, &ra, false);
        sd_cnet_forward(ctx, j->b, x, t, c, cb, 1.3f, NULL, &rb, false);
        sd_cnet_forward(ctx, j->a, x, t, c, ca, 0.7f, NULL, &rs, false);
        sd_cnet_forward(ctx, j->b, x, t, c, cb, 1.3f, NULL, &rs, true);
    } else { /* residuals made for another latent size */
        sd_cnet_residuals_new(ctx, j->a, j->B, j->bad_h, j->w, j->ra, &j->ma);
        sd_unet_residuals r = {j->ra, n, j->ma};
        j->y1 = sd_unet_forward_ex(ctx, j->m->unet, x, t, c, NULL, NULL, NULL, &r);
    }
}

static bool same(sd_tensor a, sd_tensor b, double *maxdiff)
{
    size_t n = (size_t)sd_numel(&a);
    if (n != (size_t)sd_numel(&b))
        return false;
    const float *pa = a.data, *pb = b.data;
    bool eq = true;
    *maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        if (pa[i] != pb[i])
            eq = false;
        *maxdiff = fmax(*maxdiff, fabs((double)pa[i] - pb[i]));
    }
    return eq;
}

/* run the stage once for real in a planned arena; the caller frees ctx */
static sd_status run_job(sd_ctx *ctx, job *j)
{
    sd_ctx plan;
    sd_ctx_init_plan(&plan, j->m->be);
    stage(&plan, j);
    if (plan.status != SD_OK)
        return plan.status;
    SD_TRY(sd_ctx_init(ctx, j->m->be, plan.peak));
    stage(ctx, j);
    return ctx->status;
}

TEST(unet_residuals)
{
    sd_model *m = load_model("models/tiny-sd15");
    if (!m)
        FAIL("tiny-sd15 does not load (committed test data)");
    sd_controlnet *a = load_cn(m, "models/controlnet-tiny-sd15"), *b = load_cn(m, "models/controlnet-tiny-sd15-bgr");
    if (!a || !b) {
        sd_controlnet_free(a);
        sd_controlnet_free(b);
        sd_model_free(m);
        FAIL("the committed ControlNets do not load");
    }
    enum { B = 2, h = 6, w = 8, H = 12, W = 16 };
    static float x[B * 4 * h * w], t[B] = {801, 15}, c[B * 77 * 32], ca[B * 3 * H * W], cb[B * 3 * H * W];
    fill(x, SD_ARRAY_LEN(x), 1, -2, 2);
    fill(c, SD_ARRAY_LEN(c), 2, -1, 1);
    fill(ca, SD_ARRAY_LEN(ca), 3, 0, 1);
    fill(cb, SD_ARRAY_LEN(cb), 4, 0, 1);
    int n = sd_cnet_num_residuals(a->net);
    CHECK(n == sd_unet_num_skips(m->unet));
    sd_tensor ra[64], rb[64], rs[64];
    job j = {m, a->net, b->net, x, t, c, ca, cb, B, h, w, H, W, 0, ra, rb, rs, {0}, {0}, {0}, {0}, {0}, 0};
    double d;

    /* zero residuals: bit-identical to the plain forward */
    sd_ctx ctx = {0};
    CHECK_STATUS(run_job(&ctx, &j), SD_OK);
    if (ctx.status == SD_OK)
        CHECK_MSG(same(j.y0, j.y1, &d), "UNet with zero residuals differs from the plain UNet by %g", d);
    sd_ctx_free(&ctx);

    /* MultiControlNet: accumulating b onto a gives exactly a + b, residual by residual */
    j.mode = 1;
    memset(&ctx, 0, sizeof ctx);
    CHECK_STATUS(run_job(&ctx, &j), SD_OK);
    if (ctx.status == SD_OK) {
        for (int k = 0; k <= n; k++) {
            sd_tensor ta = k < n ? ra[k] : j.ma, tb = k < n ? rb[k] : j.mb, ts = k < n ? rs[k] : j.ms;
            const float *pa = ta.data, *pb = tb.data, *ps = ts.data;
            size_t cnt = (size_t)sd_numel(&ta), bad = 0;
            double amax = 0;
            for (size_t i = 0; i < cnt; i++) {
                bad += ps[i] != pa[i] + pb[i];
                amax = fmax(amax, fabs(pa[i]));
            }
            CHECK_MSG(bad == 0, "residual %d: %zu values differ from the sum of the two nets", k, bad);
            CHECK_MSG(amax > 1e-3, "residual %d of net a is ~0 (max %g): the test would prove nothing", k, amax);
        }
        /* the bgr net differs from the rgb net on the same image: sanity that b ran */
        CHECK(!same(ra[0], rb[0], &d));
    }
    sd_ctx_free(&ctx);

    /* residuals of another size: a named shape error, no crash */
    j.mode = 2;
    j.bad_h = h + 2;
    memset(&ctx, 0, sizeof ctx);
    sd_status s = run_job(&ctx, &j);
    CHECK_MSG(s == SD_ERR_SHAPE, "mismatched residuals: %s (%s)", sd_status_name(s), sd_last_error());
    CHECK_ERR_CONTAINS("residual");
    sd_ctx_free(&ctx);

    sd_controlnet_free(a);
    sd_controlnet_free(b);
    sd_model_free(m);
}

/* ---------------------------------------------------------------- public API */

static sd_status gen(sd_model *m, const sd_control *ctl, int n, const sd_image *init, sd_image *out)
{
    sd_gen_params p;
    sd_gen_default_params(&p);
    p.prompt = "a house on a hill";
    p.width = 32;
    p.height = 24;
    p.steps = 2;
    p.guidance_scale = 1.0f;
    p.seed = 7;
    p.controls = ctl;
    p.n_controls = n;
    p.strength = 0.7f;
    return init ? sd_img2img(m, &p, init, out) : sd_txt2img(m, &p, out);
}

static bool img_eq(const sd_image *a, const sd_image *b)
{
    return a->width == b->width && a->height == b->height &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * 3);
}

static sd_image edge_image(int w, int h)
{
    sd_image im = {0};
    if (sd_rgb_alloc(&im, w, h) != SD_OK)
        return im;
    memset(im.data, 0, (size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (y == h / 4 || y == 3 * h / 4 || x == w / 5 || x == 4 * w / 5 || x == y)
                memset(im.data + 3 * ((size_t)y * w + x), 255, 3);
    return im;
}

/* writes the single file's tensors under `prefix`-stripped names (the distributed-alone layout) */
static sd_status strip_prefix_copy(const char *src, const char *dst)
{
    sd_safetensors *st;
    SD_TRY(sd_safetensors_open(src, &st));
    sd_st_writer *w = sd_st_writer_new();
    sd_status s = w ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; s == SD_OK && i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        const char *name = strncmp(t->name, "control_model.", 14) ? t->name : t->name + 14;
        s = sd_st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data);
    }
    if (s == SD_OK)
        s = sd_st_writer_save(w, dst);
    sd_st_writer_free(w);
    sd_safetensors_close(st);
    return s;
}

TEST(api_generation)
{
    sd_model *m = load_model("models/tiny-sd15");
    if (!m)
        FAIL("tiny-sd15 does not load (committed test data)");
    char p[1200];
    sd_controlnet *folder = load_cn(m, "models/controlnet-tiny-sd15");
    sd_controlnet *single = load_cn(m, "models/controlnet-tiny-sd15-single.safetensors");
    sd_controlnet *bare = NULL;
    const char *bare_path = test_tmp_path(g_tmp, "bare_cn.safetensors");
    CHECK_STATUS(strip_prefix_copy(data_path(p, sizeof p, "models/controlnet-tiny-sd15-single.safetensors"), bare_path),
                 SD_OK);
    CHECK_STATUS(sd_controlnet_load(m, bare_path, &bare), SD_OK);
    sd_controlnet *bgr = load_cn(m, "models/controlnet-tiny-sd15-bgr");
    sd_image ci = edge_image(32, 24), big = edge_image(64, 48);
    sd_image plain = {0}, o_folder = {0}, o_single = {0}, o_bare = {0}, o_big = {0}, o_zero = {0}, o_window = {0},
             o_multi = {0}, i_plain = {0}, i_ctl = {0};
    if (!folder || !single || !bare || !bgr || !ci.data || !big.data)
        goto done;
    sd_control c;
    sd_control_default(&c);
    CHECK(c.scale == 1.0f && c.guidance_start == 0.0f && c.guidance_end == 1.0f);
    c.image = &ci;
    CHECK_STATUS(gen(m, NULL, 0, NULL, &plain), SD_OK);
    c.net = folder;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_folder), SD_OK);
    c.net = single;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_single), SD_OK);
    c.net = bare;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_bare), SD_OK);
    if (o_folder.data && o_single.data && o_bare.data && plain.data) {
        CHECK_MSG(!img_eq(&plain, &o_folder), "the ControlNet changed nothing");
        CHECK_MSG(img_eq(&o_folder, &o_single), "single-file ControlNet (control_model.*) differs from the folder");
        CHECK_MSG(img_eq(&o_folder, &o_bare), "single-file ControlNet without prefix differs from the folder");
    }
    /* a control image of another size is resized: 64x48 -> 32x24 (an exact 2x box of the same drawing is not
     * the same image, so only: it runs and steers) */
    c.net = folder;
    c.image = &big;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_big), SD_OK);
    if (o_big.data)
        CHECK(!img_eq(&plain, &o_big));
    c.image = &ci;
    /* scale 0, and a guidance window that covers no step (2 steps: i/N = 0, 0.5 < start 0.9): the nets do not
     * act and the image is the plain one, bit for bit */
    c.scale = 0.0f;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_zero), SD_OK);
    if (o_zero.data && plain.data)
        CHECK_MSG(img_eq(&plain, &o_zero), "scale 0 must give the image without ControlNet");
    c.scale = 1.0f;
    c.guidance_start = 0.9f;
    CHECK_STATUS(gen(m, &c, 1, NULL, &o_window), SD_OK);
    if (o_window.data && plain.data)
        CHECK_MSG(img_eq(&plain, &o_window), "a guidance window past every step must give the plain image");
    c.guidance_start = 0.0f;
    /* two nets at once */
    sd_control two[2] = {c, c};
    two[1].net = bgr;
    two[1].scale = 0.5f;
    CHECK_STATUS(gen(m, two, 2, NULL, &o_multi), SD_OK);
    if (o_multi.data)
        CHECK(!img_eq(&o_multi, &o_folder));
    /* img2img with a control image */
    CHECK_STATUS(gen(m, NULL, 0, &ci, &i_plain), SD_OK);
    CHECK_STATUS(gen(m, &c, 1, &ci, &i_ctl), SD_OK);
    if (i_plain.data && i_ctl.data)
        CHECK(!img_eq(&i_plain, &i_ctl));
    /* a Hugging Face id from the local cache ($HF_HUB_CACHE/models--org--name/{refs/main, snapshots/<hash>/}) */
    {
        char hub[400], q[600];
        snprintf(hub, sizeof hub, "%s/hub", g_tmp);
        CHECK(sd_make_dir(hub) == SD_OK);
        snprintf(q, sizeof q, "%s/models--tiny--controlnet-sd15", hub);
        CHECK(sd_make_dir(q) == SD_OK);
        snprintf(q, sizeof q, "%s/models--tiny--controlnet-sd15/snapshots", hub);
        CHECK(sd_make_dir(q) == SD_OK);
        snprintf(q, sizeof q, "%s/models--tiny--controlnet-sd15/snapshots/0123abcd", hub);
        CHECK(symlink(data_path(p, sizeof p, "models/controlnet-tiny-sd15"), q) == 0);
        snprintf(q, sizeof q, "%s/models--tiny--controlnet-sd15/refs", hub);
        CHECK(sd_make_dir(q) == SD_OK);
        snprintf(q, sizeof q, "%s/models--tiny--controlnet-sd15/refs/main", hub);
        FILE *f = fopen(q, "w");
        if (f) {
            fputs("0123abcd", f);
            fclose(f);
        }
        setenv("HF_HUB_CACHE", hub, 1);
        sd_controlnet *hf = NULL;
        sd_image o_hf = {0};
        CHECK_STATUS(sd_controlnet_load(m, "tiny/controlnet-sd15", &hf), SD_OK);
        c.net = hf;
        if (hf)
            CHECK_STATUS(gen(m, &c, 1, NULL, &o_hf), SD_OK);
        if (o_hf.data && o_folder.data)
            CHECK_MSG(img_eq(&o_hf, &o_folder), "the ControlNet from the HF cache differs from the folder");
        sd_controlnet *none = NULL;
        CHECK_STATUS(sd_controlnet_load(m, "tiny/not-cached", &none), SD_ERR_NOT_FOUND);
        c.net = folder;
        sd_image_free(&o_hf);
        sd_controlnet_free(hf);
        unsetenv("HF_HUB_CACHE");
    }
    /* the parameters text names the nets */
    sd_gen_params gp;
    sd_gen_default_params(&gp);
    gp.controls = two;
    gp.n_controls = 2;
    char *txt = sd_gen_parameters_text(m, &gp, false);
    CHECK(txt && strstr(txt, "ControlNet 0: \"Model: controlnet-tiny-sd15,") && strstr(txt, "ControlNet 1:"));
    free(txt);
done:
    CHECK(folder && single && bare && bgr);
    sd_image *imgs[] = {&ci, &big, &plain, &o_folder, &o_single, &o_bare, &o_big, &o_zero, &o_window, &o_multi,
                        &i_plain, &i_ctl};
    for (size_t i = 0; i < SD_ARRAY_LEN(imgs); i++)
        sd_image_free(imgs[i]);
    sd_controlnet_free(folder);
    sd_controlnet_free(single);
    sd_controlnet_free(bare);
    sd_controlnet_free(bgr);
    sd_model_free(m);
}

/* ---------------------------------------------------------------- bad input */

static void expect_load(sd_model *m, const char *path, sd_status want, const char *needle)
{
    sd_controlnet *c = NULL;
    sd_status s = sd_controlnet_load(m, path, &c);
    CHECK_MSG(s == want && !c, "%s: %s (%s), want %s", path, sd_status_name(s), sd_last_error(), sd_status_name(want));
    if (needle)
        CHECK_ERR_CONTAINS(needle);
    sd_controlnet_free(c);
}

/* a copy of a ControlNet folder with one config key replaced */
static const char *patched_folder(const char *name, const char *key, const char *value)
{
    char p[1200];
    static char dir[8][300];
    static int nd;
    char *d = dir[nd++ & 7];
    snprintf(d, sizeof dir[0], "%s/%s", g_tmp, name);
    mkdir(d, 0755);
    sd_config c;
    if (sd_config_load(data_path(p, sizeof p, "models/controlnet-tiny-sd15/config.json"), &c) != SD_OK)
        return NULL;
    cJSON_ReplaceItemInObjectCaseSensitive(c.root, key, cJSON_Parse(value));
    char *txt = cJSON_Print(c.root);
    sd_config_free(&c);
    char q[400];
    snprintf(q, sizeof q, "%s/config.json", d);
    FILE *f = fopen(q, "w");
    if (f) {
        fputs(txt, f);
        fclose(f);
    }
    free(txt);
    snprintf(q, sizeof q, "%s/diffusion_pytorch_model.safetensors", d);
    if (symlink(data_path(p, sizeof p, "models/controlnet-tiny-sd15/diffusion_pytorch_model.safetensors"), q))
        return NULL;
    return d;
}

TEST(bad_input)
{
    sd_model *m = load_model("models/tiny-sd15"), *m2 = load_model("models/tiny-sd2"), *m3 = load_model("models/tiny-sd15");
    if (!m || !m2 || !m3) {
        sd_model_free(m);
        sd_model_free(m2);
        sd_model_free(m3);
        FAIL("the tiny models do not load (committed test data)");
    }
    char p[1200];
    /* ControlNets of another base model */
    expect_load(m, data_path(p, sizeof p, "models/controlnet-tiny-sd2"), SD_ERR_FORMAT, "another base model");
    CHECK_ERR_CONTAINS("cross_attention_dim");
    expect_load(m2, data_path(p, sizeof p, "models/controlnet-tiny-sd15"), SD_ERR_FORMAT, "another base model");
    expect_load(m2, data_path(p, sizeof p, "models/controlnet-tiny-sd15-single.safetensors"), SD_ERR_FORMAT,
                "another base model");
    /* not ControlNets */
    expect_load(m, data_path(p, sizeof p, "models/tiny-sd15"), SD_ERR_NOT_FOUND, "pipeline folder");
    expect_load(m, data_path(p, sizeof p, "models/tiny-sd15/unet"), SD_ERR_UNSUPPORTED, "this is a UNet");
    expect_load(m, data_path(p, sizeof p, "models/tiny-sd15-single.safetensors"), SD_ERR_FORMAT, "not a ControlNet");
    expect_load(m, data_path(p, sizeof p, "models/no-such-net"), SD_ERR_NOT_FOUND, "not found");
    expect_load(m, "", SD_ERR_INVALID_ARGUMENT, NULL);
    /* unsupported config values, named */
    const char *d = patched_folder("pool", "global_pool_conditions", "true");
    if (d)
        expect_load(m, d, SD_ERR_UNSUPPORTED, "global_pool_conditions");
    d = patched_folder("order", "controlnet_conditioning_channel_order", "\"grb\"");
    if (d)
        expect_load(m, d, SD_ERR_UNSUPPORTED, "controlnet_conditioning_channel_order");
    d = patched_folder("cond", "conditioning_embedding_out_channels", "[4, 0]");
    if (d)
        expect_load(m, d, SD_ERR_FORMAT, "conditioning_embedding_out_channels");
    d = patched_folder("levels", "conditioning_embedding_out_channels", "[4, 8, 8]");
    if (d) { /* loads (shapes are checked per tensor) -> the blocks.2 tensor is missing */
        sd_controlnet *c = NULL;
        sd_status s = sd_controlnet_load(m, d, &c);
        CHECK_MSG(s == SD_ERR_NOT_FOUND || s == SD_ERR_SHAPE, "3-level embedding on 2-level weights: %s (%s)",
                  sd_status_name(s), sd_last_error());
        sd_controlnet_free(c);
    }
    /* a truncated single file */
    {
        const char *tr = test_tmp_path(g_tmp, "truncated.safetensors");
        FILE *in = fopen(data_path(p, sizeof p, "models/controlnet-tiny-sd15-single.safetensors"), "rb");
        FILE *out = fopen(tr, "wb");
        if (in && out) {
            char buf[4096];
            size_t n = fread(buf, 1, sizeof buf, in);
            fwrite(buf, 1, n, out);
        }
        if (in)
            fclose(in);
        if (out)
            fclose(out);
        expect_load(m, tr, SD_ERR_FORMAT, NULL);
    }

    /* generation arguments */
    sd_controlnet *cn = load_cn(m, "models/controlnet-tiny-sd15");
    sd_image ci = edge_image(32, 24), out = {0};
    if (cn && ci.data) {
        sd_control c;
        sd_control_default(&c);
        c.net = cn;
        c.image = NULL;
        CHECK_STATUS(gen(m, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("control image");
        sd_image broken = {32, 24, NULL};
        c.image = &broken;
        CHECK_STATUS(gen(m, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT);
        c.image = &ci;
        c.net = NULL;
        CHECK_STATUS(gen(m, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT);
        c.net = cn;
        c.guidance_start = 0.6f;
        c.guidance_end = 0.5f;
        CHECK_STATUS(gen(m, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("start");
        c.guidance_start = 0.0f;
        c.guidance_end = 1.0f;
        c.scale = NAN;
        CHECK_STATUS(gen(m, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("scale");
        c.scale = 1.0f;
        CHECK_STATUS(gen(m, &c, 9, NULL, &out), SD_ERR_INVALID_ARGUMENT); /* more than 8 (and past the array) */
        CHECK_STATUS(gen(m3, &c, 1, NULL, &out), SD_ERR_INVALID_ARGUMENT); /* a net loaded for another model */
        CHECK_ERR_CONTAINS("another model");
        CHECK(out.data == NULL);
    } else {
        CHECK(cn && ci.data);
    }
    sd_image_free(&ci);
    sd_controlnet_free(cn);
    sd_controlnet_free(NULL);
    sd_model_free(m);
    sd_model_free(m2);
    sd_model_free(m3);
}

/* ---------------------------------------------------------------- streams */

enum { SF = 32, NF = 5 }; /* stream frames: 32x32, five of them */

static void stream_frame(int k, sd_image *img)
{
    sd_rgb_alloc(img, SF, SF);
    unsigned long long r = 500 + (unsigned long long)k * 7919;
    for (int y = 0; y < SF; y++)
        for (int x = 0; x < SF; x++)
            for (int c = 0; c < 3; c++) {
                float v = 127.5f + 70.0f * sinf(0.2f * (float)(x * (c + 1) + 3 * k) + 0.13f * (float)(y - 2 * k)) +
                          30.0f * test_rand(&r);
                img->data[((size_t)y * SF + x) * 3 + c] = (uint8_t)fminf(255.0f, fmaxf(0.0f, v));
            }
}

/* Runs NF frames through a 2-step stream (cfg none: no state across frames but the latents) with the given
 * controls; out[t] = the output of call t. */
static sd_status run_stream(sd_model *m, const sd_control *c, int n, const sd_image *frames, sd_image *out)
{
    sd_stream_params p;
    sd_stream_default_params(&p);
    p.width = p.height = SF;
    p.t_index_list[0] = 20;
    p.t_index_list[1] = 40;
    p.n_t_index = 2;
    p.cfg_type = SD_CFG_NONE;
    p.use_taesd = false; /* the tiny VAE downsamples by 2, as the tiny ControlNets' embeddings (taesd-tiny: 8) */
    p.seed = 11;
    p.controls = c;
    p.n_controls = n;
    sd_stream *s = NULL;
    SD_TRY(sd_stream_create(m, &p, &s));
    sd_status st = SD_OK;
    for (int t = 0; t < NF && st == SD_OK; t++)
        st = sd_stream_img2img(s, &frames[t], &out[t]);
    sd_stream_free(s);
    return st;
}

TEST(stream_rows_take_their_frames_controls)
{
    char p[1200], tp[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    mp.taesd = data_path(tp, sizeof tp, "models/taesd-tiny");
    sd_model *m = NULL;
    if (sd_model_load(data_path(p, sizeof p, "models/tiny-sd15"), &mp, &m) != SD_OK)
        FAIL("tiny-sd15 + taesd-tiny do not load (committed test data): %s", sd_last_error());
    sd_controlnet *cn = load_cn(m, "models/controlnet-tiny-sd15");
    sd_image frames[NF] = {{0}}, plain[NF] = {{0}}, zero[NF] = {{0}}, ctl[NF] = {{0}}, fixed[NF] = {{0}};
    for (int t = 0; t < NF; t++)
        stream_frame(t, &frames[t]);
    if (!cn) {
        CHECK(cn != NULL);
        goto done;
    }
    sd_control c;
    sd_control_default(&c);
    c.net = cn;
    /* no net, and a net at scale 0: the same frames, bit for bit */
    CHECK_STATUS(run_stream(m, NULL, 0, frames, plain), SD_OK);
    c.scale = 0.0f;
    CHECK_STATUS(run_stream(m, &c, 1, frames, zero), SD_OK);
    for (int t = 0; t < NF; t++)
        CHECK_MSG(plain[t].data && zero[t].data && img_eq(&plain[t], &zero[t]), "frame %d: scale 0 changed it", t);
    c.scale = 1.0f;
    CHECK_STATUS(run_stream(m, &c, 1, frames, ctl), SD_OK);
    CHECK_MSG(ctl[NF - 1].data && !img_eq(&plain[NF - 1], &ctl[NF - 1]), "the ControlNet changed nothing");
    /* the asynchronous path (the control images made from the frames' activations) equals the synchronous
     * one; its outputs start one call later (the 2-step pipeline's warm-up output is not returned) */
    {
        sd_stream_params sp;
        sd_stream_default_params(&sp);
        sp.width = sp.height = SF;
        sp.t_index_list[0] = 20;
        sp.t_index_list[1] = 40;
        sp.n_t_index = 2;
        sp.cfg_type = SD_CFG_NONE;
        sp.use_taesd = false;
        sp.seed = 11;
        sp.controls = &c;
        sp.n_controls = 1;
        sp.drop_old_frames = false;
        sp.queue_size = 2 * NF;
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_OK);
        for (int t = 0; s && t < NF; t++)
            CHECK_STATUS(sd_stream_push_frame(s, &frames[t]), SD_OK);
        if (s)
            CHECK_STATUS(sd_stream_flush(s), SD_OK);
        int equal = 0;
        for (int k = 0; s && k < NF; k++) {
            sd_image o = {0};
            int64_t id = -1;
            CHECK_STATUS(sd_stream_pull_frame(s, &o, &id, 60000), SD_OK);
            CHECK(id == k);
            if (k + 1 < NF)
                equal += o.data && ctl[k + 1].data && img_eq(&o, &ctl[k + 1]);
            sd_image_free(&o);
        }
        CHECK_MSG(equal == NF - 1, "async: %d of %d outputs equal the synchronous ones", equal, NF - 1);
        sd_stream_free(s);
    }
    for (int t = 0; t < NF; t++)
        sd_image_free(&ctl[t]);
    /* Row alignment. With a guidance window that covers one of the two steps only, the output of call t
     * (the frame of call t-1, finished) saw a control image once: at step 0 in call t-1 (window 0..0.5) or
     * at step 1 in call t (0.5..1), and in both cases it must be frame t-1's. A stream whose control is
     * that frame as a fixed image gives the same output at call t, bit for bit; the rows' other steps were
     * outside the window, and cfg none keeps no other state. */
    for (int w = 0; w < 2; w++) {
        c.guidance_start = w ? 0.5f : 0.0f;
        c.guidance_end = w ? 1.0f : 0.5f;
        c.image = NULL; /* from each frame (preprocess none: the frame itself) */
        CHECK_STATUS(run_stream(m, &c, 1, frames, ctl), SD_OK);
        for (int t = 2; t < NF; t++) {
            sd_control f = c;
            f.image = &frames[t - 1];
            CHECK_STATUS(run_stream(m, &f, 1, frames, fixed), SD_OK);
            CHECK_MSG(ctl[t].data && fixed[t].data && img_eq(&ctl[t], &fixed[t]),
                      "window %d: the output of call %d did not take frame %d's control image", w, t, t - 1);
            f.image = &frames[t]; /* the wrong frame's control: a different output (the test can fail) */
            for (int k = 0; k < NF; k++)
                sd_image_free(&fixed[k]);
            CHECK_STATUS(run_stream(m, &f, 1, frames, fixed), SD_OK);
            CHECK_MSG(fixed[t].data && !img_eq(&ctl[t], &fixed[t]), "window %d, call %d: frames t and t-1 give the "
                      "same output", w, t);
            for (int k = 0; k < NF; k++)
                sd_image_free(&fixed[k]);
        }
        for (int t = 0; t < NF; t++)
            sd_image_free(&ctl[t]);
    }
    /* txt2img frames need a fixed control image; groups take streams with nets; bad parameters named */
    {
        sd_stream_params sp;
        sd_stream_default_params(&sp);
        sp.width = sp.height = SF;
        sp.use_taesd = false;
        sd_control_default(&c);
        c.net = cn;
        sp.controls = &c;
        sp.n_controls = 1;
        sd_stream *s = NULL;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_OK);
        sd_image o = {0};
        if (s) {
            CHECK_STATUS(sd_stream_txt2img(s, &o), SD_ERR_INVALID_ARGUMENT);
            CHECK_ERR_CONTAINS("fixed control image");
            sd_stream_group *g = NULL; /* groups take them (tests/test_controlnet_live.c: outputs as alone) */
            CHECK_STATUS(sd_stream_group_create(m, 2, 2, &g), SD_OK);
            if (g)
                CHECK_STATUS(sd_stream_group_add(g, s), SD_OK);
            sd_stream_group_free(g);
            sd_stream_free(s);
        }
        c.image = &frames[0];
        s = NULL;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_OK);
        if (s)
            CHECK_STATUS(sd_stream_txt2img(s, &o), SD_OK);
        sd_image_free(&o);
        sd_stream_free(s);
        c.scale = 11.0f;
        s = NULL;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_ERR_INVALID_ARGUMENT);
        CHECK_ERR_CONTAINS("scale");
        c.scale = 1.0f;
        sp.n_controls = 9;
        CHECK_STATUS(sd_stream_create(m, &sp, &s), SD_ERR_INVALID_ARGUMENT);
        CHECK(s == NULL);
    }
done:
    for (int t = 0; t < NF; t++) {
        sd_image_free(&frames[t]);
        sd_image_free(&plain[t]);
        sd_image_free(&zero[t]);
        sd_image_free(&ctl[t]);
        sd_image_free(&fixed[t]);
    }
    sd_controlnet_free(cn);
    sd_model_free(m);
}

/* ---------------------------------------------------------------- preprocessors */

TEST(canny_matches_opencv)
{
    char p[1200];
    sd_image in = {0};
    if (sd_image_load(data_path(p, sizeof p, "preprocess/input.png"), &in) != SD_OK)
        FAIL("tests/data/preprocess/input.png does not load (committed test data): %s", sd_last_error());
    static const int pairs[][2] = {{100, 200}, {50, 120}, {0, 30}, {300, 600}};
    for (size_t k = 0; k < SD_ARRAY_LEN(pairs); k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "preprocess/canny_%d_%d.png", pairs[k][0], pairs[k][1]);
        sd_image ref = {0}, got = {0};
        if (sd_image_load(data_path(p, sizeof p, rel), &ref) != SD_OK) {
            CHECK_MSG(false, "%s does not load (committed test data)", rel);
            continue;
        }
        sd_preprocess_params pp;
        sd_preprocess_default_params(&pp);
        pp.kind = SD_PREPROCESS_CANNY;
        pp.canny_low = pairs[k][0];
        pp.canny_high = pairs[k][1];
        CHECK_STATUS(sd_control_preprocess(&in, &pp, &got), SD_OK);
        if (got.data) {
            size_t n = (size_t)in.width * in.height, diff = 0, edges = 0;
            for (size_t i = 0; i < 3 * n; i++)
                diff += got.data[i] != ref.data[i];
            for (size_t i = 0; i < n; i++)
                edges += ref.data[3 * i] == 255;
            CHECK_MSG(diff == 0, "%s: %zu of %zu bytes differ from cv2.Canny", rel, diff, 3 * n);
            CHECK_MSG(edges > 100, "%s has only %zu edge pixels: a weak reference", rel, edges);
        }
        sd_image_free(&ref);
        sd_image_free(&got);
    }
    sd_image_free(&in);
}

/* Canny of a white rectangle on black: OpenCV's tie rules put the left/top edges on the dark pixel before the
 * step and the right/bottom edges on the last bright pixel; nothing else is an edge */
TEST(canny_known_edges)
{
    enum { W = 40, H = 30, X0 = 10, X1 = 29, Y0 = 8, Y1 = 21 }; /* bright: X0..X1, Y0..Y1 inclusive */
    sd_image im = {0}, e = {0};
    CHECK_STATUS(sd_rgb_alloc(&im, W, H), SD_OK);
    if (!im.data)
        return;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(im.data + 3 * (y * W + x), (x >= X0 && x <= X1 && y >= Y0 && y <= Y1) ? 255 : 0, 3);
    sd_preprocess_params pp;
    sd_preprocess_default_params(&pp);
    pp.kind = SD_PREPROCESS_CANNY;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &e), SD_OK);
    if (e.data) {
#define SIDE(xx, yy) ((((xx) == X0 - 1 || (xx) == X1) && (yy) >= Y0 && (yy) <= Y1) || \
                      (((yy) == Y0 - 1 || (yy) == Y1) && (xx) >= X0 && (xx) <= X1))
#define EDGE(xx, yy) (e.data[3 * ((yy) * W + (xx))] == 255)
        int wrong = 0, missing = 0, thick = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                bool near = false; /* every edge pixel lies on a side, or next to one (the corners) */
                for (int j = -1; j <= 1; j++)
                    for (int i = -1; i <= 1; i++)
                        near |= SIDE(x + i, y + j);
                wrong += EDGE(x, y) && !near;
                /* the straight parts of the sides, two pixels away from the corners: marked, one pixel thick */
                bool vert = (x == X0 - 1 || x == X1) && y >= Y0 + 2 && y <= Y1 - 2;
                bool horz = (y == Y0 - 1 || y == Y1) && x >= X0 + 2 && x <= X1 - 2;
                missing += (vert || horz) && !EDGE(x, y);
                thick += vert && (EDGE(x - 1, y) || EDGE(x + 1, y));
                thick += horz && (EDGE(x, y - 1) || EDGE(x, y + 1));
            }
#undef SIDE
#undef EDGE
        CHECK_MSG(wrong == 0, "%d edge pixels off the rectangle's sides", wrong);
        CHECK_MSG(missing == 0, "%d side pixels not marked", missing);
        CHECK_MSG(thick == 0, "%d side pixels with a marked neighbour across the side (not thin)", thick);
    }
    sd_image_free(&e);
    /* thresholds above the largest gradient (|dx| + |dy| <= 2040 here 1020): no edges */
    pp.canny_low = 1100;
    pp.canny_high = 2040;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &e), SD_OK);
    size_t any = 0;
    for (size_t i = 0; e.data && i < (size_t)W * H * 3; i++)
        any += e.data[i] != 0;
    CHECK(e.data && any == 0);
    sd_image_free(&e);
    sd_image_free(&im);
}

/* soft edges / scribble / invert / tile against direct formulas */
TEST(other_preprocessors)
{
    enum { W = 23, H = 17 };
    sd_image im = {0}, o = {0};
    CHECK_STATUS(sd_rgb_alloc(&im, W, H), SD_OK);
    if (!im.data)
        return;
    unsigned long long seed = 99;
    for (size_t i = 0; i < (size_t)W * H * 3; i++)
        im.data[i] = (uint8_t)(127.5f + 127.0f * test_rand(&seed));
    /* naive Sobel magnitude of the luminance, replicated borders, in double */
    static double lum[H][W], mag[H][W];
    double mx = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *q = im.data + 3 * (y * W + x);
            lum[y][x] = 0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2];
        }
#define L(yy, xx) lum[(yy) < 0 ? 0 : (yy) >= H ? H - 1 : (yy)][(xx) < 0 ? 0 : (xx) >= W ? W - 1 : (xx)]
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double gx = 0, gy = 0;
            static const int kx[3][3] = {{-1, 0, 1}, {-2, 0, 2}, {-1, 0, 1}}, ky[3][3] = {{-1, -2, -1}, {0, 0, 0}, {1, 2, 1}};
            for (int j = -1; j <= 1; j++)
                for (int i = -1; i <= 1; i++) {
                    gx += kx[j + 1][i + 1] * L(y + j, x + i);
                    gy += ky[j + 1][i + 1] * L(y + j, x + i);
                }
            mag[y][x] = sqrt(gx * gx + gy * gy);
            mx = fmax(mx, mag[y][x]);
        }
#undef L
    sd_preprocess_params pp;
    sd_preprocess_default_params(&pp);
    pp.kind = SD_PREPROCESS_SOFTEDGE;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_OK);
    int worst = 0;
    for (int y = 0; o.data && y < H; y++)
        for (int x = 0; x < W; x++) {
            int ref = (int)lround(mag[y][x] * 255.0 / mx), got = o.data[3 * (y * W + x)];
            worst = abs(ref - got) > worst ? abs(ref - got) : worst;
            CHECK(o.data[3 * (y * W + x) + 1] == got && o.data[3 * (y * W + x) + 2] == got);
        }
    CHECK_MSG(worst <= 1, "soft edges differ from the naive Sobel magnitude by %d levels", worst);
    sd_image_free(&o);
    /* scribble: 255 exactly where some 3x3 neighbour's soft edge reaches the threshold */
    pp.kind = SD_PREPROCESS_SCRIBBLE;
    pp.threshold = 128;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_OK);
    int bad = 0, on = 0;
    for (int y = 0; o.data && y < H; y++)
        for (int x = 0; x < W; x++) {
            bool want = false, borderline = false;
            for (int j = -1; j <= 1; j++)
                for (int i = -1; i <= 1; i++) {
                    int yy = y + j, xx = x + i;
                    if (yy < 0 || xx < 0 || yy >= H || xx >= W)
                        continue;
                    double v = mag[yy][xx] * 255.0 / mx;
                    want |= lround(v) >= 128;
                    borderline |= fabs(v - 127.5) < 0.01;
                }
            bool got = o.data[3 * (y * W + x)] == 255;
            on += got;
            bad += got != want && !borderline;
        }
    CHECK_MSG(bad == 0, "scribble: %d pixels differ from the thresholded, dilated soft edges", bad);
    CHECK(on > 0 && on < W * H);
    sd_image_free(&o);
    /* invert and tile */
    pp.kind = SD_PREPROCESS_INVERT;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_OK);
    for (size_t i = 0; o.data && i < (size_t)W * H * 3; i++)
        if (o.data[i] != 255 - im.data[i]) {
            CHECK_MSG(false, "invert: byte %zu", i);
            break;
        }
    sd_image_free(&o);
    pp.kind = SD_PREPROCESS_TILE;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_OK);
    CHECK(o.data && img_eq(&o, &im));
    sd_image_free(&o);

    /* names and bad arguments */
    sd_preprocess k;
    CHECK(sd_preprocess_from_name("canny", &k) && k == SD_PREPROCESS_CANNY);
    CHECK(sd_preprocess_from_name("identity", &k) && k == SD_PREPROCESS_TILE);
    CHECK(!sd_preprocess_from_name("depth", &k) && !sd_preprocess_from_name(NULL, &k));
    CHECK(!strcmp(sd_preprocess_name(SD_PREPROCESS_SCRIBBLE), "scribble"));
    pp.kind = (sd_preprocess)99;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("unknown control preprocessor");
    pp.kind = SD_PREPROCESS_CANNY;
    pp.canny_low = 300;
    pp.canny_high = 200;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("canny thresholds");
    pp.canny_low = 10;
    pp.canny_high = 5000;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    pp.kind = SD_PREPROCESS_SCRIBBLE;
    pp.threshold = 0;
    CHECK_STATUS(sd_control_preprocess(&im, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("scribble threshold");
    sd_image empty = {0, 0, NULL};
    pp.kind = SD_PREPROCESS_NONE;
    CHECK_STATUS(sd_control_preprocess(&empty, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_control_preprocess(NULL, &pp, &o), SD_ERR_INVALID_ARGUMENT);
    CHECK(o.data == NULL);
    sd_image_free(&im);
}

int main(void)
{
    const char *d = getenv("SD_TEST_DATA");
    if (!d || !*d) {
        fprintf(stderr, "SD_TEST_DATA is not set (tests/data)\n");
        return 1;
    }
    snprintf(g_data, sizeof g_data, "%s", d);
    if (!test_make_tmpdir(g_tmp, sizeof g_tmp, "sd_test_controlnet")) {
        fprintf(stderr, "no temporary folder\n");
        return 1;
    }
    RUN(unet_residuals);
    RUN(api_generation);
    RUN(bad_input);
    RUN(stream_rows_take_their_frames_controls);
    RUN(canny_matches_opencv);
    RUN(canny_known_edges);
    RUN(other_preprocessors);
    test_rm_tree(g_tmp);
    return test_summary();
}
