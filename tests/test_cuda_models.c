/* CUDA backend vs CPU backend, model by model: the whole UNet (batch 2, one
 * timestep per row, a text context), the CLIP text encoder, the AutoencoderKL
 * encoder and decoder and TAESD encoder and decoder run on both backends on
 * the same inputs (rounded to fp16 so both see identical values), and their
 * outputs are compared: max |cuda - cpu| / max |cpu| must stay within the
 * fp16 bound (1e-2, SD_GPU_TOL overrides) and no NaN/Inf may appear. The
 * CUDA arena is poisoned with 0xFF bytes (NaN in fp16) before every run, so
 * an element no kernel wrote shows up as NaN.
 *
 * SDXL: the UNet runs with its added conditions (text_embeds + time_ids, two rows with different ids) and
 * text encoder 2 is compared too (tiny-sdxl, always; the stream engine on SDXL as well).
 *
 * Models: the tiny test models of tests/data (always), plus the diffusers
 * folders in SD_GPU_MODELS (colon-separated, e.g. full-size random-weight
 * SD-turbo / SD1.5 written by bench/bench_gen_arch; bench/gpu.sh does it)
 * with the TAESD folder SD_GPU_TAESD, at SD_GPU_SIZE pixels (default 256).
 *
 * ControlNet: txt2img and img2img with the tiny ControlNets (controlnet-tiny-sd15 on tiny-sd15,
 * controlnet-tiny-sdxl on tiny-sdxl) compared the same way (compare_values: the images), streams whose
 * control image is made from each frame (canny; the stream refuses a step graph and runs eagerly), and a
 * stream group with ControlNet members (their ticks run without the captured UNet graph, the others' with).
 *
 * Without a GPU (or without CUDA in the build) the GPU cases skip with a
 * SKIP line (and the executable exits 77: skipped); the harness still runs, comparing the CPU backend with F32
 * weights against the CPU backend with F16 weights (keep_f16), ControlNet cases included (the stream group
 * with ControlNet members on the CPU). */
#include "backend/ops.h"
#include "models/clip.h"
#include "models/unet.h"
#include "models/vae.h"
#include "pipe/model.h"
#include "pipe/stream.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_why[600];
static bool g_have_gpu;
static double g_tol = 1e-2;

typedef enum { PART_UNET, PART_CLIP, PART_VAE_ENC, PART_VAE_DEC, PART_TAESD_ENC, PART_TAESD_DEC, PART_CLIP2 } part;
static const char *const k_part_names[] = {"unet", "clip", "vae-encode", "vae-decode", "taesd-encode",
                                           "taesd-decode", "clip2"};

typedef struct {
    part p;
    int size; /* pixels */
    float *x, *ctxt; /* host inputs (fp16-rounded) */
    float *te;       /* SDXL UNet: text_embeds [2,P] (fp16-rounded), time ids [2,6] */
    float ids6[12];
    float t[2];
    int32_t ids[2 * 77];
} job;

static float r16(float v) { return sd_f16_to_f32(sd_f32_to_f16(v)); }

/* The part's forward (planning or real); its output, or an empty tensor when the model lacks the part. */
static sd_tensor forward(sd_ctx *ctx, sd_model *m, const job *j)
{
    int64_t h = j->size / 8;
    sd_dtype act = ctx->be->act_dtype;
    switch (j->p) {
    case PART_UNET: {
        const sd_unet_config *c = sd_unet_get_config(m->unet);
        sd_tensor x = sd_new4(ctx, 2, c->in_channels, h, h);
        sd_tensor t = sd_new(ctx, SD_F32, 1, (int64_t[]){2});
        sd_tensor cx = sd_new(ctx, act, 3, (int64_t[]){2, 77, c->cross_attention_dim[0]});
        if (!ctx->plan && sd_ok(ctx)) {
            sd_tensor_from_f32(ctx, &x, j->x);
            sd_tensor_from_f32(ctx, &t, j->t);
            sd_tensor_from_f32(ctx, &cx, j->ctxt);
        }
        sd_unet_added add = {0};
        if (c->add_text_time) {
            int64_t P = c->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * c->addition_time_embed_dim;
            add.text_embeds = sd_new(ctx, act, 2, (int64_t[]){2, P});
            add.time_ids = sd_new(ctx, SD_F32, 2, (int64_t[]){2, SD_UNET_TIME_IDS});
            if (!ctx->plan && sd_ok(ctx)) {
                sd_tensor_from_f32(ctx, &add.text_embeds, j->te);
                sd_tensor_from_f32(ctx, &add.time_ids, j->ids6);
            }
        }
        return sd_unet_forward_added(ctx, m->unet, x, t, cx, NULL, NULL, c->add_text_time ? &add : NULL);
    }
    case PART_CLIP: return sd_clip_forward(ctx, m->clip, j->ids, 2, 77, 0, NULL, NULL);
    case PART_CLIP2: return sd_clip_forward(ctx, m->clip2, j->ids, 2, 77, 0, NULL, NULL);
    case PART_VAE_ENC:
    case PART_TAESD_ENC: {
        sd_tensor img = sd_new4(ctx, 1, 3, j->size, j->size);
        if (!ctx->plan && sd_ok(ctx))
            sd_tensor_from_f32(ctx, &img, j->x);
        if (j->p == PART_TAESD_ENC)
            return sd_taesd_encode(ctx, m->taesd, img);
        sd_tensor logvar;
        return sd_vae_encode(ctx, m->vae, img, &logvar);
    }
    case PART_VAE_DEC:
    case PART_TAESD_DEC: {
        sd_tensor z = sd_new4(ctx, 1, 4, h, h);
        if (!ctx->plan && sd_ok(ctx))
            sd_tensor_from_f32(ctx, &z, j->x);
        return j->p == PART_TAESD_DEC ? sd_taesd_decode(ctx, m->taesd, z) : sd_vae_decode(ctx, m->vae, z);
    }
    }
    return (sd_tensor){0};
}

/* Runs the job on m's backend; returns the output as host floats (malloc'd) and its size. */
static float *run(sd_model *m, const job *j, size_t *n)
{
    sd_ctx plan, ctx;
    sd_ctx_init_plan(&plan, m->be);
    forward(&plan, m, j);
    if (!sd_ok(&plan)) {
        printf("  planning %s failed: %s\n", k_part_names[j->p], sd_last_error());
        return NULL;
    }
    if (sd_ctx_init(&ctx, m->be, plan.peak) != SD_OK)
        return NULL;
    if (!m->be->host_memory) { /* poison the CUDA arena: an unwritten element reads as NaN */
        void *junk = malloc(ctx.cap);
        if (junk) {
            memset(junk, 0xFF, ctx.cap);
            m->be->ops->upload(m->be, ctx.base, junk, ctx.cap);
            free(junk);
        }
    }
    sd_tensor y = forward(&ctx, m, j);
    float *out = NULL;
    if (sd_ok(&ctx)) {
        *n = (size_t)sd_numel(&y);
        out = malloc(*n * sizeof(float));
        if (out && sd_tensor_to_f32(&ctx, &y, out) != SD_OK) {
            free(out);
            out = NULL;
        }
    }
    if (!out)
        printf("  %s on %s failed: %s\n", k_part_names[j->p], m->be->ops->name, sd_last_error());
    sd_ctx_free(&ctx);
    return out;
}

static void make_job(job *j, part p, int size, const sd_model *m)
{
    memset(j, 0, sizeof *j);
    j->p = p;
    j->size = size;
    unsigned long long seed = 1234 + (unsigned long long)p;
    int64_t h = size / 8;
    size_t nx = 0, nc = 0, nt = 0;
    if (p == PART_UNET) {
        const sd_unet_config *c = sd_unet_get_config(m->unet);
        nx = (size_t)2 * c->in_channels * h * h;
        nc = (size_t)2 * 77 * c->cross_attention_dim[0];
        j->t[0] = 951.0f;
        j->t[1] = 261.0f;
        if (c->add_text_time) { /* SDXL: pooled embeddings, and (1024,1024,0,0,1024,1024) / a cropped 768x512 */
            nt = (size_t)2 * (c->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * c->addition_time_embed_dim);
            const float ids[12] = {1024, 1024, 0, 0, 1024, 1024, 768, 512, 64, 32, 512, 512};
            memcpy(j->ids6, ids, sizeof ids);
        }
    } else if (p == PART_VAE_ENC || p == PART_TAESD_ENC) {
        nx = (size_t)3 * size * size;
    } else if (p == PART_VAE_DEC || p == PART_TAESD_DEC) {
        nx = (size_t)4 * h * h;
    } else {
        for (int b = 0; b < 2; b++) /* <|startoftext|>, some words, <|endoftext|>, padding */
            for (int i = 0; i < 77; i++)
                j->ids[b * 77 + i] = i == 0 ? 49406 : i < 9 + 4 * b ? 320 + i * 53 + b * 7 : 49407;
    }
    j->x = nx ? malloc(nx * sizeof(float)) : NULL;
    j->ctxt = nc ? malloc(nc * sizeof(float)) : NULL;
    j->te = nt ? malloc(nt * sizeof(float)) : NULL;
    for (size_t i = 0; i < nt; i++)
        j->te[i] = r16(test_rand(&seed));
    for (size_t i = 0; i < nx; i++) /* images in [-1, 1], latents and noise about N(0, 1)-sized */
        j->x[i] = r16(p == PART_VAE_ENC || p == PART_TAESD_ENC ? test_rand(&seed) : 1.7f * test_rand(&seed));
    for (size_t i = 0; i < nc; i++)
        j->ctxt[i] = r16(test_rand(&seed));
}

/* The rule of every model comparison: b (CUDA, or the harness's other CPU model) vs a (CPU fp32), n values
 * each (n = 0: the runs failed or differ in size): max |b - a| / max |a| within g_tol and no NaN/Inf; a
 * line of numbers; false on a failure (CHECKed). */
static bool compare_values(const char *label, const char *what, int size, const float *a, const float *b, size_t n,
                           double t_cpu, double t_gpu)
{
    bool ok = a && b && n > 0;
    double maxd = 0, maxref = 0;
    size_t bad = 0;
    for (size_t i = 0; ok && i < n; i++) {
        if (!isfinite(b[i]) || !isfinite(a[i])) {
            bad++;
            continue;
        }
        maxd = fmax(maxd, fabs((double)b[i] - a[i]));
        maxref = fmax(maxref, fabs((double)a[i]));
    }
    double rel = maxd / fmax(maxref, 1e-30);
    ok = ok && bad == 0 && rel <= g_tol;
    printf("  %-10s %-13s %4d px  %9zu values  max|cpu| %9.4g  max|cuda-cpu| %9.3g  rel %.2e  %s%s  (cpu %.2f s, "
           "cuda %.3f s)\n",
           label, what, size, n, maxref, maxd, rel, ok ? "ok" : "FAIL", bad ? "  (NaN/Inf)" : "", t_cpu, t_gpu);
    CHECK_MSG(ok, "%s %s: CUDA vs CPU rel %.3g (tolerance %.3g), %zu non-finite values", label, what, rel, g_tol, bad);
    return ok;
}

/* Compares part p of the two models; returns false on a failure. */
static bool compare_part(sd_model *cpu, sd_model *gpu, part p, int size, const char *label)
{
    bool have = p == PART_UNET ? cpu->unet != NULL
                : p == PART_CLIP ? cpu->clip != NULL
                : p == PART_CLIP2 ? cpu->clip2 != NULL
                : p == PART_VAE_ENC || p == PART_VAE_DEC ? cpu->vae != NULL
                                                           : cpu->taesd != NULL;
    if (!have)
        return true;
    job j;
    make_job(&j, p, size, cpu);
    size_t na = 0, nb = 0;
    double t0 = sd_time_now();
    float *a = run(cpu, &j, &na);
    double t1 = sd_time_now();
    float *b = run(gpu, &j, &nb);
    double t2 = sd_time_now();
    bool ok = compare_values(label, k_part_names[p], size, a, b, a && b && na == nb ? na : 0, t1 - t0, t2 - t1);
    free(a);
    free(b);
    free(j.x);
    free(j.ctxt);
    free(j.te);
    return ok;
}

/* The model in dir (with the TAESD taesd) on the CPU (fp32) as *cpu and on the CUDA backend as *gpu, or, with
 * other_cpu (the harness without a GPU), on the CPU with its F16 weights kept (keep_f16) as *gpu. */
static void load_pair(const char *dir, const char *taesd, bool other_cpu, sd_model **cpu, sd_model **gpu)
{
    sd_model_params p;
    sd_model_default_params(&p);
    p.taesd = taesd;
    *cpu = *gpu = NULL;
    CHECK_STATUS(sd_model_load(dir, &p, cpu), SD_OK);
    if (other_cpu)
        p.keep_f16 = true;
    else
        p.backend = SD_BACKEND_CUDA;
    CHECK_STATUS(sd_model_load(dir, &p, gpu), SD_OK);
}

/* other_cpu: the second model is a CPU model with keep_f16 instead of the CUDA one (the harness check) */
static void compare_model(const char *dir, const char *taesd, int size, const char *label, bool other_cpu)
{
    sd_model *cpu, *gpu;
    load_pair(dir, taesd, other_cpu, &cpu, &gpu);
    if (cpu && gpu)
        for (int k = PART_UNET; k <= PART_CLIP2; k++)
            compare_part(cpu, gpu, (part)k, size, label);
    sd_model_free(cpu);
    sd_model_free(gpu);
}

static bool tiny_paths(char *mp, char *tp, size_t n);

/* skips a GPU test without a GPU; fails without the (committed) tiny models */
#define NEED_GPU_AND_TINY()                                                                                          \
    do {                                                                                                             \
        char mp_[1024], tp_[1024];                                                                                   \
        if (!g_have_gpu)                                                                                             \
            SKIP("no CUDA GPU (%s)", g_why);                                                                         \
        if (!tiny_paths(mp_, tp_, sizeof mp_))                                                                       \
            FAIL("tiny models not found under $SD_TEST_DATA/models (committed test data)");                                                        \
    } while (0)

/* The tiny model (+ TAESD: taesd) on the GPU, or on the CPU (NULL after a failed CHECK). */
static sd_model *tiny_model(bool gpu, bool taesd)
{
    char mp[1024], tp[1024];
    if (!tiny_paths(mp, tp, sizeof mp))
        return NULL;
    sd_model_params p;
    sd_model_default_params(&p);
    p.taesd = taesd ? tp : NULL;
    p.backend = gpu ? SD_BACKEND_CUDA : SD_BACKEND_CPU;
    sd_model *m = NULL;
    CHECK_STATUS(sd_model_load(mp, &p, &m), SD_OK);
    return m;
}

static bool tiny_model_paths(const char *name, char *mp, char *tp, size_t n)
{
    const char *d = getenv("SD_TEST_DATA");
    snprintf(mp, n, "%s/models/%s", d ? d : "tests/data", name);
    snprintf(tp, n, "%s/models/taesd-tiny", d ? d : "tests/data");
    return !access(mp, R_OK) && !access(tp, R_OK);
}

static bool tiny_paths(char *mp, char *tp, size_t n) { return tiny_model_paths("tiny-sd15", mp, tp, n); }

/* The harness itself, without a GPU: the same comparisons between the CPU
 * backend with F32 weights and with F16 weights (keep_f16), which must also
 * stay within the fp16 bound. */
TEST(harness_on_cpu_f16_weights)
{
    char mp[1024], tp[1024];
    if (!tiny_paths(mp, tp, sizeof mp))
        FAIL("tiny models not found under $SD_TEST_DATA/models (committed test data)");
    compare_model(mp, tp, 64, "tiny-f16w", true);
    if (!tiny_model_paths("tiny-sdxl", mp, tp, sizeof mp))
        FAIL("tiny-sdxl not found under $SD_TEST_DATA/models (committed test data)");
    compare_model(mp, tp, 64, "sdxl-f16w", true);
}

TEST(tiny_models)
{
    if (!g_have_gpu)
        SKIP("no CUDA GPU (%s)", g_why);
    char mp[1024], tp[1024];
    if (!tiny_paths(mp, tp, sizeof mp))
        FAIL("tiny models not found under $SD_TEST_DATA/models (committed test data)");
    compare_model(mp, tp, 64, "tiny-sd15", false);
    if (!tiny_model_paths("tiny-sdxl", mp, tp, sizeof mp))
        FAIL("tiny-sdxl not found under $SD_TEST_DATA/models (committed test data)");
    compare_model(mp, tp, 64, "tiny-sdxl", false); /* the UNet with added conditions, both text encoders */
}

TEST(listed_models)
{
    if (!g_have_gpu)
        SKIP("no CUDA GPU (%s)", g_why);
    const char *list = getenv("SD_GPU_MODELS"); /* set: main runs this test only then */
    const char *sz = getenv("SD_GPU_SIZE");
    int size = sz ? atoi(sz) : 256;
    if (size < 64 || size % 64)
        size = 256;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        const char *base = strrchr(dir, '/');
        compare_model(dir, getenv("SD_GPU_TAESD"), size, base ? base + 1 : dir, false);
    }
}

/* ------------------------------------------------------------------ stream engine on the GPU */

static void frame(int k, int j, sd_image *img)
{
    img->width = img->height = 64;
    img->data = malloc(64 * 64 * 3);
    unsigned long long r = 77 + (unsigned long long)k * 131 + (unsigned long long)j * 7919;
    for (int i = 0; i < 64 * 64 * 3; i++)
        img->data[i] = (uint8_t)(128 + 60 * sinf(0.05f * (float)(i + 17 * k + 5 * j)) + 30 * test_rand(&r));
}

static float *stream_out(sd_stream *s)
{
    size_t n = (size_t)sd_numel(&s->img_out);
    float *o = malloc(n * sizeof(float));
    sd_ctx tmp = {.be = s->m->be};
    if (o && sd_tensor_to_f32(&tmp, &s->img_out, o) != SD_OK) {
        free(o);
        o = NULL;
    }
    return o;
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        d = fmax(d, fabs((double)a[i] - b[i]));
        r = fmax(r, fabs((double)b[i]));
    }
    return d / fmax(r, 1e-30);
}

/* ctl: a ControlNet (scale, window) whose control image is made from each frame (canny), or NULL */
static sd_stream *mk_stream(sd_model *m, sd_cfg_type cfg, int t0, uint64_t seed, bool graphs, const char *prompt,
                            const sd_control *ctl)
{
    sd_stream_params p;
    sd_stream_default_params(&p);
    p.width = p.height = 64;
    p.cfg_type = cfg;
    p.t_index_list[0] = t0;
    p.seed = seed;
    p.use_graphs = graphs;
    if (ctl) {
        p.controls = ctl;
        p.n_controls = 1;
        p.use_taesd = false; /* the tiny VAE's scale is the tiny ControlNets' (taesd-tiny's is not) */
        p.control_preprocess = (sd_preprocess_params){SD_PREPROCESS_CANNY, 40, 90, 64};
    }
    sd_stream *s = NULL;
    CHECK_STATUS(sd_stream_create(m, &p, &s), SD_OK);
    if (s)
        CHECK_STATUS(sd_stream_set_prompt(s, prompt, "blurry"), SD_OK);
    return s;
}

/* The tiny ControlNet `net` of tests/data loaded for m (NULL after a failed CHECK) and *c its control at
 * scale 0.8 (no image: made from each frame). */
static sd_controlnet *tiny_controlnet(sd_model *m, const char *net, sd_control *c)
{
    const char *d = getenv("SD_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", d ? d : "tests/data", net);
    sd_controlnet *cn = NULL;
    if (m)
        CHECK_STATUS(sd_controlnet_load(m, path, &cn), SD_OK);
    sd_control_default(c);
    c->net = cn;
    c->scale = 0.8f;
    return cn;
}

/* A stream whose step is a replayed CUDA graph gives exactly the frames of the same stream run op by op
 * (same kernels, same order), through a prompt change (K/V updated in place, no re-capture), a guidance
 * change (re-capture) and txt2img; and the CUDA frames stay close to the CPU's.
 * net (a tiny ControlNet, or NULL): every stream has it, its control image made from each frame (canny): the
 * graph path refuses such a stream (graphs_off from creation), which then gives the eager frames; no txt2img
 * (a control image made from frames needs one). other_cpu: the harness without a GPU (load_pair). */
static void stream_graph_replay_of(const char *model, const char *net, bool other_cpu)
{
    if (!g_have_gpu && !other_cpu)
        SKIP("no CUDA GPU (%s)", g_why);
    char mp[1024], tp[1024];
    if (!tiny_model_paths(model, mp, tp, sizeof mp))
        FAIL("%s / taesd-tiny not found under $SD_TEST_DATA/models (committed test data)", model);
    sd_model *cpu, *gpu;
    load_pair(mp, tp, other_cpu, &cpu, &gpu);
    sd_control cc, cg;
    sd_controlnet *ncpu = net ? tiny_controlnet(cpu, net, &cc) : NULL, *ngpu = net ? tiny_controlnet(gpu, net, &cg) : NULL;
    bool have = !net || (ncpu && ngpu);
    sd_stream *sg = gpu && have ? mk_stream(gpu, SD_CFG_SELF, 32, 5, true, "a fox", net ? &cg : NULL) : NULL;
    sd_stream *se = gpu && have ? mk_stream(gpu, SD_CFG_SELF, 32, 5, false, "a fox", net ? &cg : NULL) : NULL;
    sd_stream *sc = cpu && have ? mk_stream(cpu, SD_CFG_SELF, 32, 5, false, "a fox", net ? &cc : NULL) : NULL;
    double worst_cpu = 0;
    bool identical = true;
    for (int k = 0; sg && se && sc && k < 8; k++) {
        if (k == 3)
            for (sd_stream **x = (sd_stream *[]){sg, se, sc, NULL}; *x; x++)
                CHECK_STATUS(sd_stream_set_prompt(*x, "a castle", "blurry"), SD_OK);
        if (k == 5)
            for (sd_stream **x = (sd_stream *[]){sg, se, sc, NULL}; *x; x++)
                CHECK_STATUS(sd_stream_set_guidance(*x, 1.6f, 0.8f), SD_OK);
        sd_image in = {0}, o1 = {0}, o2 = {0}, o3 = {0};
        frame(k, 0, &in);
        bool txt = k == 7 && !net;
        CHECK_STATUS(txt ? sd_stream_txt2img(sg, &o1) : sd_stream_img2img(sg, &in, &o1), SD_OK);
        CHECK_STATUS(txt ? sd_stream_txt2img(se, &o2) : sd_stream_img2img(se, &in, &o2), SD_OK);
        CHECK_STATUS(txt ? sd_stream_txt2img(sc, &o3) : sd_stream_img2img(sc, &in, &o3), SD_OK);
        float *a = stream_out(sg), *b = stream_out(se), *c = stream_out(sc);
        size_t n = (size_t)sd_numel(&sg->img_out);
        bool same = a && b && !memcmp(a, b, n * sizeof(float));
        identical = identical && same;
        CHECK_MSG(same, "frame %d: the graph replay differs from the eager step", k);
        if (a && c && !txt) /* txt2img noise comes from each stream's generator: same seed, same values */
            worst_cpu = fmax(worst_cpu, max_rel(a, c, n));
        free(a);
        free(b);
        free(c);
        sd_image_free(&in);
        sd_image_free(&o1);
        sd_image_free(&o2);
        sd_image_free(&o3);
    }
    printf("  %s%s%s stream %s vs eager: %s; %s vs CPU frames max rel %.3g\n", model, net ? " + " : "",
           net ? net : "", net ? "(graphs refused)" : "graph replay", identical ? "bit-identical" : "DIFFERENT",
           other_cpu ? "CPU F16 weights" : "CUDA", worst_cpu);
    CHECK(!sg || sg->graphs_off == (net != NULL)); /* a ControlNet stream never captures; others always can */
    CHECK(worst_cpu <= 3 * g_tol);
    sd_stream_free(sg);
    sd_stream_free(se);
    sd_stream_free(sc);
    sd_controlnet_free(ncpu);
    sd_controlnet_free(ngpu);
    sd_model_free(cpu);
    sd_model_free(gpu);
}

TEST(stream_graph_replay) { stream_graph_replay_of("tiny-sd15", NULL, false); }
/* SDXL streams: the added conditions live in the stream's state (updated in place on prompt changes) */
TEST(sdxl_stream_graph_replay) { stream_graph_replay_of("tiny-sdxl", NULL, false); }
/* Streams with a ControlNet made from each frame: CUDA vs CPU (SD1.5 and SDXL) */
TEST(controlnet_stream) { stream_graph_replay_of("tiny-sd15", "controlnet-tiny-sd15", false); }
TEST(sdxl_controlnet_stream) { stream_graph_replay_of("tiny-sdxl", "controlnet-tiny-sdxl", false); }

/* Stream groups on the GPU: the batched UNet as a replayed graph (one per padded row count) with the
 * streams' own steps around it gives each stream's frames alone (bit-identical, or within fp16 where the
 * batched GEMMs pick other kernels); members that skip ticks change the make-up.
 * net (a tiny ControlNet of tiny-sd15, or NULL): streams 0 and 2 have it (control images made from each
 * frame): their ticks run without a captured graph (the ticks of stream 1, txt2img without a net, still
 * replay one), and give the frames of the streams alone. on_cpu: the same on the CPU (the harness). */
static void group_replay_of(const char *net, bool on_cpu)
{
    if (!on_cpu)
        NEED_GPU_AND_TINY();
    sd_model *gpu = tiny_model(!on_cpu, !net); /* with nets: members all on the VAE (one latent size) */
    if (!gpu)
        return;
    sd_control ctl;
    sd_controlnet *cn = net ? tiny_controlnet(gpu, net, &ctl) : NULL;
    if (net && !cn) {
        sd_model_free(gpu);
        return;
    }
    static const sd_cfg_type cfgs[3] = {SD_CFG_SELF, SD_CFG_NONE, SD_CFG_FULL};
    static const char *const prompts[3] = {"a fox", "a boat", "a city"};
    sd_stream *sg[3], *sa[3]; /* in the graph group, alone (eager) */
    sd_stream_group *g = NULL;
    CHECK_STATUS(sd_stream_group_create(gpu, 3, 3, &g), SD_OK);
    for (int j = 0; j < 3; j++) {
        const sd_control *c = net && j != 1 ? &ctl : NULL;
        sg[j] = mk_stream(gpu, cfgs[j], 20 + 5 * j, 40 + (uint64_t)j, true, prompts[j], c);
        sa[j] = mk_stream(gpu, cfgs[j], 20 + 5 * j, 40 + (uint64_t)j, false, prompts[j], c);
        if (g && sg[j])
            CHECK_STATUS(sd_stream_group_add(g, sg[j]), SD_OK);
    }
    bool identical = true;
    for (int k = 0; g && k < 6; k++) {
        sd_stream *fs[3];
        const sd_image *pin[3];
        sd_image in[3] = {0}, out[3] = {0}, ref = {0}, *pout[3];
        int n = 0, who[3];
        for (int j = 0; j < 3; j++) {
            if (j == 2 && k % 2) /* stream 2 sends every other tick */
                continue;
            frame(k, j, &in[j]);
            fs[n] = sg[j];
            pin[n] = j == 1 ? NULL : &in[j]; /* stream 1 is txt2img */
            pout[n] = &out[j];
            who[n++] = j;
        }
        CHECK_STATUS(sd_stream_group_run(g, fs, pin, pout, n), SD_OK);
        for (int f = 0; f < n; f++) {
            int j = who[f];
            CHECK_STATUS(j == 1 ? sd_stream_txt2img(sa[j], &ref) : sd_stream_img2img(sa[j], &in[j], &ref), SD_OK);
            float *a = stream_out(sg[j]), *b = stream_out(sa[j]);
            size_t nf = (size_t)sd_numel(&sg[j]->img_out);
            bool same = a && b && !memcmp(a, b, nf * sizeof(float));
            if (!same) /* batched GEMMs may pick other kernels than batch 1: then within fp16 */
                CHECK_MSG(a && b && max_rel(a, b, nf) <= g_tol, "tick %d stream %d: group vs alone rel %.3g", k, j,
                          a && b ? max_rel(a, b, nf) : -1.0);
            identical = identical && same;
            free(a);
            free(b);
            sd_image_free(&ref);
        }
        for (int j = 0; j < 3; j++) {
            sd_image_free(&in[j]);
            sd_image_free(&out[j]);
        }
    }
    printf("  stream group (%s, %s) vs each stream alone: %s\n", net ? "ControlNet ticks eager, others graph" : "graph ticks",
           on_cpu ? "CPU" : "CUDA", identical ? "bit-identical" : "within the fp16 tolerance (not bit-identical)");
    for (int j = 0; net && j < 3; j++) /* the ControlNet members never capture a step graph of their own */
        CHECK(!sg[j] || sg[j]->graphs_off == (j != 1));
    sd_stream_group_free(g);
    for (int j = 0; j < 3; j++) {
        sd_stream_free(sg[j]);
        sd_stream_free(sa[j]);
    }
    sd_controlnet_free(cn);
    sd_model_free(gpu);
}

TEST(group_graph_replay) { group_replay_of(NULL, false); }
TEST(group_with_controlnets) { group_replay_of("controlnet-tiny-sd15", false); }

/* ------------------------------------------------------------------ ControlNet generations */

/* txt2img and img2img (CFG, 2 steps) of a tiny model with its tiny ControlNet (a canny control image) on the
 * CPU (fp32) vs CUDA (other_cpu: the CPU with F16 weights): the images (bytes) within compare_values' bound. */
static void controlnet_gen_of(const char *model, const char *net, const char *label, bool other_cpu)
{
    char mp[1024], tp[1024];
    if (!tiny_model_paths(model, mp, tp, sizeof mp))
        FAIL("%s / taesd-tiny not found under $SD_TEST_DATA/models (committed test data)", model);
    sd_model *cpu, *gpu;
    load_pair(mp, tp, other_cpu, &cpu, &gpu);
    sd_control c[2];
    sd_controlnet *ncpu = tiny_controlnet(cpu, net, &c[0]), *ngpu = tiny_controlnet(gpu, net, &c[1]);
    sd_image src = {0}, edges = {0};
    frame(3, 1, &src);
    const sd_preprocess_params pp = {SD_PREPROCESS_CANNY, 40, 90, 64};
    CHECK_STATUS(sd_control_preprocess(&src, &pp, &edges), SD_OK);
    c[0].image = c[1].image = &edges;
    for (int img2img = 0; img2img < 2 && ncpu && ngpu && edges.data; img2img++) {
        sd_gen_params g;
        sd_gen_default_params(&g);
        g.prompt = "a fox in the snow";
        g.width = g.height = 64;
        g.steps = 2;
        g.guidance_scale = 2.0f;
        g.seed = 7;
        g.strength = 0.7f;
        g.n_controls = 1;
        sd_image out[2] = {{0}, {0}};
        double t[3];
        t[0] = sd_time_now();
        for (int b = 0; b < 2; b++) {
            g.controls = &c[b];
            sd_model *m = b ? gpu : cpu;
            CHECK_STATUS(img2img ? sd_img2img(m, &g, &src, &out[b]) : sd_txt2img(m, &g, &out[b]), SD_OK);
            t[b + 1] = sd_time_now();
        }
        size_t n = out[0].data && out[1].data && out[0].width == out[1].width && out[0].height == out[1].height
                       ? (size_t)out[0].width * out[0].height * 3
                       : 0;
        sd_image plain = {0}; /* the net must act: without it the CPU image differs */
        g.n_controls = 0;
        CHECK_STATUS(img2img ? sd_img2img(cpu, &g, &src, &plain) : sd_txt2img(cpu, &g, &plain), SD_OK);
        CHECK_MSG(n && plain.data && memcmp(plain.data, out[0].data, n), "%s: the ControlNet changed nothing", label);
        sd_image_free(&plain);
        float *v = n ? malloc(2 * n * sizeof(float)) : NULL;
        for (size_t i = 0; v && i < n; i++) {
            v[i] = out[0].data[i];
            v[n + i] = out[1].data[i];
        }
        compare_values(label, img2img ? "cnet-img2img" : "cnet-txt2img", 64, v, v ? v + n : NULL, v ? n : 0,
                       t[1] - t[0], t[2] - t[1]);
        free(v);
        sd_image_free(&out[0]);
        sd_image_free(&out[1]);
    }
    sd_image_free(&src);
    sd_image_free(&edges);
    sd_controlnet_free(ncpu);
    sd_controlnet_free(ngpu);
    sd_model_free(cpu);
    sd_model_free(gpu);
}

TEST(controlnet_generations)
{
    if (!g_have_gpu)
        SKIP("no CUDA GPU (%s)", g_why);
    controlnet_gen_of("tiny-sd15", "controlnet-tiny-sd15", "tiny-sd15", false);
    controlnet_gen_of("tiny-sdxl", "controlnet-tiny-sdxl", "tiny-sdxl", false);
}


/* The async pipeline on the GPU (page-locked slots, queued copies, one synchronize per step) gives the
 * frames of the synchronous calls (which convert the bytes on the device instead): at most 1 apart per
 * byte (the same fp32 expressions and fp16 rounding on both paths: 0 expected).
 * net (a tiny ControlNet of tiny-sd15, or NULL): both streams have it, the control images made from each
 * frame (the async path makes them from the frames' activations). on_cpu: the same on the CPU (the harness). */
static void async_pipeline_of(const char *net, bool on_cpu)
{
    if (!on_cpu)
        NEED_GPU_AND_TINY();
    sd_model *gpu = tiny_model(!on_cpu, !net);
    if (!gpu)
        return;
    sd_control ctl;
    sd_controlnet *cn = net ? tiny_controlnet(gpu, net, &ctl) : NULL;
    sd_stream_params sp;
    sd_stream_default_params(&sp);
    sp.width = sp.height = 64;
    sp.drop_old_frames = false; /* file policy: every frame comes out */
    if (cn) {
        sp.controls = &ctl;
        sp.n_controls = 1;
        sp.control_preprocess = (sd_preprocess_params){SD_PREPROCESS_CANNY, 40, 90, 64};
    }
    sd_stream *sa = NULL, *ss = NULL;
    if (!net || cn) {
        CHECK_STATUS(sd_stream_create(gpu, &sp, &sa), SD_OK);
        CHECK_STATUS(sd_stream_create(gpu, &sp, &ss), SD_OK);
    }
    enum { NF = 8 };
    sd_image ref[NF];
    memset(ref, 0, sizeof ref);
    int worst = 0, got = 0;
    for (int k = 0; sa && ss && k < NF; k++) {
        sd_image in = {0};
        frame(k, 0, &in);
        CHECK_STATUS(sd_stream_img2img(ss, &in, &ref[k]), SD_OK);
        CHECK_STATUS(sd_stream_push_frame(sa, &in), SD_OK);
        sd_image_free(&in);
    }
    if (sa)
        CHECK_STATUS(sd_stream_flush(sa), SD_OK);
    /* the sync stream's first outputs are the warm-up of its stream batch; the async one returns frame k's
     * output for frame k: compare the frames both have, by input index */
    for (;;) {
        sd_image out = {0};
        int64_t id = -1;
        if (!sa || sd_stream_pull_frame(sa, &out, &id, 30000) != SD_OK)
            break;
        int k = (int)id + (sp.n_t_index - 1); /* the sync call that returned this frame's output */
        if (id >= 0 && k < NF && ref[k].data && out.data) {
            for (size_t i = 0; i < (size_t)64 * 64 * 3; i++) {
                int d = abs((int)out.data[i] - (int)ref[k].data[i]);
                worst = d > worst ? d : worst;
            }
            got++;
        }
        sd_image_free(&out);
    }
    printf("  async pipeline vs synchronous calls on the %s%s: %d frames compared, max byte difference %d\n",
           on_cpu ? "CPU" : "GPU", net ? " with a ControlNet" : "", got, worst);
    CHECK(got >= NF - sp.n_t_index);
    CHECK(worst <= 1);
    for (int k = 0; k < NF; k++)
        sd_image_free(&ref[k]);
    sd_stream_free(sa);
    sd_stream_free(ss);
    sd_controlnet_free(cn);
    sd_model_free(gpu);
}

TEST(async_pipeline_on_gpu) { async_pipeline_of(NULL, false); }
TEST(async_pipeline_with_controlnet) { async_pipeline_of("controlnet-tiny-sd15", false); }

/* The ControlNet cases' harness without a GPU: the CPU with F16 weights in the CUDA model's place (the
 * generations, a stream), and the stream group and the async pipeline with ControlNets on the CPU. */
TEST(controlnet_harness_on_cpu)
{
    controlnet_gen_of("tiny-sd15", "controlnet-tiny-sd15", "tiny-f16w", true);
    controlnet_gen_of("tiny-sdxl", "controlnet-tiny-sdxl", "sdxl-f16w", true);
    stream_graph_replay_of("tiny-sd15", "controlnet-tiny-sd15", true);
    group_replay_of("controlnet-tiny-sd15", true);
    async_pipeline_of("controlnet-tiny-sd15", true);
}

int main(void)
{
    const char *tol = getenv("SD_GPU_TOL");
    if (tol && atof(tol) > 0)
        g_tol = atof(tol);
    sd_backend *be = NULL;
    if (sd_backend_cuda_create(0, &be) == SD_OK) {
        g_have_gpu = true;
        sd_backend_destroy(be);
    } else {
        snprintf(g_why, sizeof g_why, "%s", sd_last_error());
    }
    RUN(harness_on_cpu_f16_weights);
    RUN(controlnet_harness_on_cpu);
    RUN(tiny_models);
    RUN(controlnet_generations);
    RUN(stream_graph_replay);
    RUN(sdxl_stream_graph_replay);
    RUN(controlnet_stream);
    RUN(sdxl_controlnet_stream);
    RUN(group_graph_replay);
    RUN(group_with_controlnets);
    RUN(async_pipeline_on_gpu);
    RUN(async_pipeline_with_controlnet);
    if (getenv("SD_GPU_MODELS") && *getenv("SD_GPU_MODELS"))
        RUN(listed_models); /* opt-in extra models (bench/gpu.sh); not asked for is not a skip */
    else
        printf("(SD_GPU_MODELS is not set: no extra models listed)\n");
    return test_summary();
}
