/* `streamdiff bench stream`: frames per second and per-frame latency of the
 * StreamDiffusion engine for a model, at one or more square sizes:
 *
 *   img2img        synchronous sd_stream_img2img, one frame per call: the
 *                  latency of a call (resize/convert, encode, one UNet call
 *                  on the stream batch, decode, download); fps = 1000 / mean.
 *   img2img-async  the push/pull pipeline (input, inference and output
 *                  threads), file policy, a producer pushing as fast as it
 *                  may: throughput = frames / wall time between the first and
 *                  last timed output; latency = push -> pull of each frame
 *                  (includes the stream batch delay and the queues).
 *   txt2img        synchronous sd_stream_txt2img.
 *   streams        N concurrent img2img streams (different prompts and seeds)
 *                  in one stream group: every tick each stream has a new
 *                  frame and all N run in one batched UNet call
 *                  (sd_stream_group_img2img); latency = the tick (the frames
 *                  arrive together at its start); total fps = N / tick. The
 *                  same N streams run one after another (sd_stream_img2img)
 *                  give the unbatched baseline. N from --streams.
 *
 * Input frames are synthetic (two alternating patterns), the similarity
 * filter is off, so every frame runs the UNet. --precision takes a list
 * (fp32,bf16,int8,auto; default auto, as `stream`): the model is loaded once
 * per precision and every size and mode runs at each. Results go to a table
 * and, with --json, to a JSON file (each result names its precision and
 * kernels). */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZES 8
#define MAX_COUNTS 8
#define MAX_GROUP 64
#define MAX_PRECISIONS 4

typedef struct {
    const char *model, *taesd, *json;
    int sizes[MAX_SIZES], nsizes, width, height;
    int frames, warmup, threads;
    sd_backend_kind backend;
    sd_stream_params sp;
    bool mode_sync, mode_async, mode_txt, mode_multi;
    int counts[MAX_COUNTS], ncounts; /* --streams */
    sd_precision precisions[MAX_PRECISIONS];
    int nprecisions; /* --precision */
} bopts;

typedef struct {
    int w, h;
    const char *mode;
    const char *precision, *kernels; /* what the model computed in (sd_model_info) */
    double weight_bytes;             /* the model's weights at that precision */
    int frames;
    double fps, mean, p50, p90, p99, min, max;
    double step_ms; /* engine's inference EMA */
    double cpu_ms;  /* process CPU time (all threads) per timed frame: steadier than wall time on a busy host */
    int streams;    /* streams mode: concurrent streams */
    double alone_fps; /* streams mode: total fps of the same streams run one after another */
} bresult;

static void usage(FILE *f)
{
    fprintf(f,
            "streamdiff bench stream — StreamDiffusion frames/s and per-frame latency for a model\n\n"
            "usage: streamdiff bench stream -m MODEL [--taesd DIR] [options]\n\n"
            "Modes (all by default):\n"
            "  img2img        synchronous sd_stream_img2img; latency = one call; fps = 1000 / mean latency\n"
            "  img2img-async  push/pull pipeline (3 threads), file policy; fps = throughput; latency = push->pull\n"
            "                 (includes the stream batch delay of len(t-index)-1 frames and queueing)\n"
            "  txt2img        synchronous sd_stream_txt2img\n"
            "  streams        N concurrent img2img streams (own prompts and seeds) batched into one UNet call\n"
            "                 per tick (stream group); latency = one tick, total fps = N / tick; also the same\n"
            "                 streams run one after another (unbatched) for comparison; N from --streams\n"
            "Every row also gives the process CPU time per frame (all threads): steadier than wall time when\n"
            "the machine is busy.\n\n"
            "options:\n"
            "  -m, --model PATH|ID     model (required): diffusers folder, .safetensors file or cached HF id\n"
            "      --taesd DIR|ID      TAESD for encode/decode (as StreamDiffusion uses; else the full VAE)\n"
            "      --size LIST         square sizes, e.g. 256,512 (default: 512)\n"
            "  -W, --width N / -H, --height N   one non-square size instead of --size\n"
            "      --frames N          timed frames per mode (default: 20)\n"
            "      --warmup N          untimed frames first (default: 3)\n"
            "      --modes LIST        img2img,img2img-async,txt2img,streams (default: the first three, plus\n"
            "                          streams when --streams is given)\n"
            "      --streams LIST      concurrent stream counts for the streams mode, e.g. 1,2,4,8,16\n"
            "      --t-index LIST      default 32,45\n"
            "      --cfg-type T        none | full | self | initialize (default: self)\n"
            "      --guidance G        default 1.2\n"
            "      --no-denoising-batch sequential steps instead of the stream batch\n"
            "      --no-graphs         run the ops one by one instead of replaying a captured graph (CUDA)\n"
            "      --backend cpu|cuda  default cpu\n"
            "  -t, --threads N         CPU threads, 0 = all cores (default: 0)\n"
            "      --precision LIST    CPU compute, one run per entry: fp32, bf16, int8, auto (default: auto =\n"
            "                          bf16 where the CPU has AMX or a fast AVX512-BF16, else fp32; as `stream`),\n"
            "                          e.g. fp32,bf16 compares them in one run\n"
            "      --json FILE         also write the results as JSON\n"
            "  -h, --help              this help\n\n"
            "examples:\n"
            "  streamdiff bench stream -m stabilityai/sd-turbo --taesd madebyollin/taesd --size 256,512 \\\n"
            "      --t-index 32,45 --json stream.json\n"
            "  streamdiff bench stream -m stabilityai/sd-turbo --taesd madebyollin/taesd --size 256 \\\n"
            "      --t-index 45 --cfg-type none --modes img2img --precision fp32,bf16\n"
            "  streamdiff bench stream -m tests/data/models/tiny-sd15 --taesd tests/data/models/taesd-tiny \\\n"
            "      --size 64 --frames 50\n"
            "  streamdiff bench stream -m stabilityai/sd-turbo --taesd madebyollin/taesd --backend cuda \\\n"
            "      --modes streams --streams 1,2,4,8,16 --t-index 32 --cfg-type none --frames 100\n");
}

static int bad(const char *flag, const char *v, const char *what)
{
    fprintf(stderr, "streamdiff bench stream: %s needs %s, got '%s'\n", flag, what, v);
    return 2;
}

static int parse(int argc, char **argv, bopts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--no-denoising-batch")) {
            o->sp.use_denoising_batch = false;
            continue;
        }
        if (!strcmp(a, "--no-graphs")) {
            o->sp.use_graphs = false;
            continue;
        }
        static const char *vals[] = {"-m", "--model", "--taesd", "--size", "-W", "--width", "-H", "--height",
                                     "--frames", "--warmup", "--modes", "--t-index", "--cfg-type", "--guidance",
                                     "--backend", "-t", "--threads", "--json", "--streams", "--precision"};
        bool known = false;
        for (size_t k = 0; k < SD_ARRAY_LEN(vals) && !known; k++)
            known = !strcmp(a, vals[k]);
        if (!known) {
            fprintf(stderr, "streamdiff bench stream: unknown option '%s'; see 'streamdiff bench stream --help'\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "streamdiff bench stream: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--taesd"))
            o->taesd = v;
        else if (!strcmp(a, "--json"))
            o->json = v;
        else if (!strcmp(a, "--size")) {
            o->nsizes = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->nsizes == MAX_SIZES || !cli_parse_int(t, 8, 2048, &o->sizes[o->nsizes]) || o->sizes[o->nsizes] % 8)
                    return bad(a, v, "up to 8 comma-separated sizes, multiples of 8 from 8 to 2048");
                o->nsizes++;
            }
            if (!o->nsizes)
                return bad(a, v, "a size list such as 256,512");
        } else if (!strcmp(a, "-W") || !strcmp(a, "--width") || !strcmp(a, "-H") || !strcmp(a, "--height")) {
            int x;
            if (!cli_parse_int(v, 8, 2048, &x) || x % 8)
                return bad(a, v, "a multiple of 8 from 8 to 2048");
            *(a[1] == 'W' || a[2] == 'w' ? &o->width : &o->height) = x;
        } else if (!strcmp(a, "--frames")) {
            if (!cli_parse_int(v, 1, 100000, &o->frames))
                return bad(a, v, "a number of frames from 1");
        } else if (!strcmp(a, "--warmup")) {
            if (!cli_parse_int(v, 0, 100000, &o->warmup))
                return bad(a, v, "a number of frames from 0");
        } else if (!strcmp(a, "--modes")) {
            o->mode_sync = false;
            o->mode_async = false;
            o->mode_txt = false;
            o->mode_multi = false;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "img2img"))
                    o->mode_sync = true;
                else if (!strcmp(t, "img2img-async") || !strcmp(t, "async"))
                    o->mode_async = true;
                else if (!strcmp(t, "txt2img"))
                    o->mode_txt = true;
                else if (!strcmp(t, "streams"))
                    o->mode_multi = true;
                else
                    return bad(a, v, "a list of img2img, img2img-async, txt2img, streams");
            }
        } else if (!strcmp(a, "--streams")) {
            o->ncounts = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->ncounts == MAX_COUNTS || !cli_parse_int(t, 1, MAX_GROUP, &o->counts[o->ncounts]))
                    return bad(a, v, "up to 8 comma-separated stream counts from 1 to 64");
                o->ncounts++;
            }
            if (!o->ncounts)
                return bad(a, v, "a list of stream counts such as 1,2,4,8");
        } else if (!strcmp(a, "--precision")) {
            o->nprecisions = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->nprecisions == MAX_PRECISIONS || !sd_precision_from_name(t, &o->precisions[o->nprecisions]))
                    return bad(a, v, "up to 4 comma-separated precisions: fp32, bf16, int8, auto");
                o->nprecisions++;
            }
            if (!o->nprecisions)
                return bad(a, v, "a precision list such as fp32,bf16");
        } else if (!strcmp(a, "--t-index")) {
            if (!cli_parse_t_index(v, &o->sp))
                return bad(a, v, "comma-separated ascending indices, e.g. 32,45");
        } else if (!strcmp(a, "--cfg-type")) {
            if (!cli_parse_cfg_type(v, &o->sp.cfg_type))
                return bad(a, v, "none, full, self or initialize");
        } else if (!strcmp(a, "--guidance")) {
            double g;
            if (!cli_parse_double(v, 0, 100, &g))
                return bad(a, v, "a number from 0 to 100");
            o->sp.guidance_scale = (float)g;
        } else if (!strcmp(a, "--backend")) {
            if (!strcasecmp(v, "cpu"))
                o->backend = SD_BACKEND_CPU;
            else if (!strcasecmp(v, "cuda"))
                o->backend = SD_BACKEND_CUDA;
            else
                return bad(a, v, "'cpu' or 'cuda'");
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!cli_parse_int(v, 0, 1024, &o->threads))
                return bad(a, v, "a number of threads from 0");
        }
    }
    return -1;
}

/* ------------------------------------------------------------ measurement */

static double cpu_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void summarize(bresult *r, double *lat, int n)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += lat[i];
    r->frames = n;
    r->mean = sum / n;
    r->p50 = lat[n / 2];
    r->p90 = lat[(int)floor(0.9 * (n - 1) + 0.5)];
    r->p99 = lat[(int)floor(0.99 * (n - 1) + 0.5)];
    r->min = lat[0];
    r->max = lat[n - 1];
}

static void make_frames(int w, int h, sd_image f[2])
{
    for (int k = 0; k < 2; k++) {
        f[k].width = w;
        f[k].height = h;
        f[k].data = malloc((size_t)w * h * 3);
        if (!f[k].data)
            continue;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    f[k].data[((size_t)y * w + x) * 3 + c] =
                        (uint8_t)(127.5 + 100 * sin(0.05 * (x * (c + 1) + 13 * k) + 0.03 * y * (k + 1)));
    }
}

static sd_status bench_sync(sd_model *m, const bopts *o, const sd_stream_params *sp, bool txt, bresult *r)
{
    sd_stream *s;
    SD_TRY(sd_stream_create(m, sp, &s));
    sd_status st = sd_stream_set_prompt(s, "a photograph of a mountain lake at sunrise", "");
    sd_image f[2], out = {0};
    make_frames(sp->width, sp->height, f);
    double *lat = malloc(sizeof(double) * (size_t)o->frames);
    if (!lat || !f[0].data || !f[1].data)
        st = SD_ERR_OUT_OF_MEMORY;
    double c0 = 0;
    for (int k = 0; st == SD_OK && k < o->warmup + o->frames; k++) {
        if (k == o->warmup)
            c0 = cpu_now_ms();
        double t0 = sd_time_now();
        st = txt ? sd_stream_txt2img(s, &out) : sd_stream_img2img(s, &f[k % 2], &out);
        if (k >= o->warmup)
            lat[k - o->warmup] = (sd_time_now() - t0) * 1e3;
    }
    r->cpu_ms = (cpu_now_ms() - c0) / o->frames;
    if (st == SD_OK) {
        summarize(r, lat, o->frames);
        r->fps = 1000.0 / r->mean;
        sd_stream_stats ss;
        sd_stream_get_stats(s, &ss);
        r->step_ms = ss.inference_ms;
    }
    free(lat);
    sd_image_free(&out);
    sd_image_free(&f[0]);
    sd_image_free(&f[1]);
    sd_stream_free(s);
    return st;
}

typedef struct {
    sd_stream *s;
    sd_image *f;
    int n;
    double *t_push;
    sd_status st;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (int k = 0; k < p->n; k++) {
        p->t_push[k] = sd_time_now();
        if ((p->st = sd_stream_push_frame(p->s, &p->f[k % 2])) != SD_OK)
            break;
    }
    sd_stream_flush(p->s);
    return NULL;
}

static sd_status bench_async(sd_model *m, const bopts *o, const sd_stream_params *sp0, bresult *r)
{
    sd_stream_params sp = *sp0;
    sp.drop_old_frames = false;
    sd_stream *s;
    SD_TRY(sd_stream_create(m, &sp, &s));
    sd_status st = sd_stream_set_prompt(s, "a photograph of a mountain lake at sunrise", "");
    int n = o->warmup + o->frames;
    sd_image f[2], out = {0};
    make_frames(sp.width, sp.height, f);
    double *t_push = calloc((size_t)n, sizeof(double)), *lat = malloc(sizeof(double) * (size_t)o->frames);
    if (!t_push || !lat || !f[0].data || !f[1].data)
        st = SD_ERR_OUT_OF_MEMORY;
    producer p = {s, f, n, t_push, SD_OK};
    pthread_t th;
    bool started = st == SD_OK && pthread_create(&th, NULL, produce, &p) == 0;
    double t_first = 0, t_last = 0;
    int got = 0;
    while (started && st == SD_OK && got < n) {
        int64_t id;
        st = sd_stream_pull_frame(s, &out, &id, 600000);
        if (st != SD_OK)
            break;
        double now = sd_time_now();
        if (got == o->warmup) {
            t_first = now;
            r->cpu_ms = cpu_now_ms();
        }
        if (got >= o->warmup && got - o->warmup < o->frames && id >= 0 && id < n)
            lat[got - o->warmup] = (now - t_push[id]) * 1e3;
        t_last = now;
        got++;
    }
    if (started)
        pthread_join(th, NULL);
    if (st == SD_OK && p.st != SD_OK)
        st = p.st;
    if (st == SD_OK) {
        summarize(r, lat, o->frames);
        /* throughput: the frames after the first timed one over the time they took */
        r->fps = o->frames > 1 && t_last > t_first ? (o->frames - 1) / (t_last - t_first) : 1000.0 / r->mean;
        r->cpu_ms = o->frames > 1 ? (cpu_now_ms() - r->cpu_ms) / (o->frames - 1) : 0;
        sd_stream_stats ss;
        sd_stream_get_stats(s, &ss);
        r->step_ms = ss.inference_ms;
    }
    free(t_push);
    free(lat);
    sd_image_free(&out);
    sd_image_free(&f[0]);
    sd_image_free(&f[1]);
    sd_stream_free(s);
    return st;
}

/* N streams in one group: o->warmup + o->frames ticks, every stream a frame
 * per tick; then the same streams one after another (fresh streams, same
 * settings) for the unbatched total. */
static sd_status bench_multi(sd_model *m, const bopts *o, const sd_stream_params *sp0, int n, bresult *r)
{
    static const char *const prompts[] = {"a photograph of a mountain lake at sunrise", "a watercolor fox",
                                          "a neon city street at night", "an oil painting of a ship",
                                          "a portrait in the style of a comic book", "a forest in autumn"};
    sd_stream *ss[MAX_GROUP] = {0};
    sd_stream_group *g = NULL;
    sd_image f[2], out[MAX_GROUP];
    const sd_image *pin[MAX_GROUP];
    sd_image *pout[MAX_GROUP];
    memset(out, 0, sizeof out);
    make_frames(sp0->width, sp0->height, f);
    double *lat = malloc(sizeof(double) * (size_t)o->frames);
    sd_status st = lat && f[0].data && f[1].data ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (st == SD_OK)
        st = sd_stream_group_create(m, n, n, &g);
    for (int j = 0; j < n && st == SD_OK; j++) {
        sd_stream_params sp = *sp0;
        sp.seed = sp0->seed + (uint64_t)j;
        st = sd_stream_create(m, &sp, &ss[j]);
        if (st == SD_OK)
            st = sd_stream_set_prompt(ss[j], prompts[j % SD_ARRAY_LEN(prompts)], "");
        if (st == SD_OK)
            st = sd_stream_group_add(g, ss[j]);
        pout[j] = &out[j];
    }
    double t_total = 0, c0 = 0;
    for (int k = 0; st == SD_OK && k < o->warmup + o->frames; k++) {
        if (k == o->warmup)
            c0 = cpu_now_ms();
        for (int j = 0; j < n; j++)
            pin[j] = &f[(k + j) % 2];
        double t0 = sd_time_now();
        st = sd_stream_group_img2img(g, pin, pout, n);
        double dt = sd_time_now() - t0;
        if (k >= o->warmup) {
            lat[k - o->warmup] = dt * 1e3;
            t_total += dt;
        }
    }
    if (st == SD_OK) {
        summarize(r, lat, o->frames);
        r->fps = n * o->frames / t_total;
        r->cpu_ms = (cpu_now_ms() - c0) / (n * o->frames);
        r->streams = n;
        sd_stream_stats s0;
        sd_stream_get_stats(ss[0], &s0);
        r->step_ms = s0.inference_ms;
    }
    sd_stream_group_free(g);
    /* the baseline: the same streams, each frame alone, one stream after another */
    double t_alone = 0;
    int frames_alone = 0;
    for (int k = 0; st == SD_OK && k < o->warmup + o->frames; k++)
        for (int j = 0; j < n && st == SD_OK; j++) {
            double t0 = sd_time_now();
            st = sd_stream_img2img(ss[j], &f[(k + j) % 2], &out[j]);
            if (k >= o->warmup) {
                t_alone += sd_time_now() - t0;
                frames_alone++;
            }
        }
    if (st == SD_OK)
        r->alone_fps = t_alone > 0 ? frames_alone / t_alone : 0;
    for (int j = 0; j < n; j++) {
        sd_stream_free(ss[j]);
        sd_image_free(&out[j]);
    }
    free(lat);
    sd_image_free(&f[0]);
    sd_image_free(&f[1]);
    return st;
}

/* ------------------------------------------------------------ output */

static void write_json(const bopts *o, const sd_model_info *info, const bresult *res, int nres, const double *load_s)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "benchmark", "stream");
    cJSON_AddStringToObject(root, "streamdiff_version", sd_version());
    time_t now = time(NULL);
    char ts[64];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(root, "timestamp", ts);
    cJSON *mo = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(mo, "path", info->source);
    cJSON_AddStringToObject(mo, "arch", info->arch);
    cJSON_AddBoolToObject(mo, "taesd", info->has_taesd);
    cJSON *ls = cJSON_AddArrayToObject(mo, "load_seconds"); /* one per --precision entry */
    for (int i = 0; i < o->nprecisions; i++)
        cJSON_AddItemToArray(ls, cJSON_CreateNumber(load_s[i]));
    cJSON *cf = cJSON_AddObjectToObject(root, "config");
    cJSON_AddStringToObject(cf, "backend", o->backend == SD_BACKEND_CUDA ? "cuda" : "cpu");
    cJSON_AddNumberToObject(cf, "threads", o->threads);
    cJSON_AddNumberToObject(cf, "cpus_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON *tl = cJSON_AddArrayToObject(cf, "t_index_list");
    for (int i = 0; i < o->sp.n_t_index; i++)
        cJSON_AddItemToArray(tl, cJSON_CreateNumber(o->sp.t_index_list[i]));
    cJSON_AddStringToObject(cf, "cfg_type", cli_cfg_type_name(o->sp.cfg_type));
    cJSON_AddNumberToObject(cf, "guidance_scale", o->sp.guidance_scale);
    cJSON_AddBoolToObject(cf, "use_denoising_batch", o->sp.use_denoising_batch);
    cJSON_AddBoolToObject(cf, "use_graphs", o->sp.use_graphs);
    cJSON_AddNumberToObject(cf, "frames", o->frames);
    cJSON_AddNumberToObject(cf, "warmup", o->warmup);
    cJSON *arr = cJSON_AddArrayToObject(root, "results");
    for (int i = 0; i < nres; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "width", res[i].w);
        cJSON_AddNumberToObject(r, "height", res[i].h);
        cJSON_AddStringToObject(r, "mode", res[i].mode);
        cJSON_AddStringToObject(r, "precision", res[i].precision);
        cJSON_AddStringToObject(r, "kernels", res[i].kernels);
        cJSON_AddNumberToObject(r, "weight_bytes", res[i].weight_bytes);
        cJSON_AddNumberToObject(r, "frames", res[i].frames);
        cJSON_AddNumberToObject(r, "fps", res[i].fps);
        cJSON_AddNumberToObject(r, "latency_ms_mean", res[i].mean);
        cJSON_AddNumberToObject(r, "latency_ms_p50", res[i].p50);
        cJSON_AddNumberToObject(r, "latency_ms_p90", res[i].p90);
        cJSON_AddNumberToObject(r, "latency_ms_p99", res[i].p99);
        if (res[i].streams) {
            cJSON_AddNumberToObject(r, "streams", res[i].streams);
            cJSON_AddNumberToObject(r, "fps_per_stream", res[i].fps / res[i].streams);
            cJSON_AddNumberToObject(r, "fps_unbatched", res[i].alone_fps);
        }
        cJSON_AddNumberToObject(r, "latency_ms_min", res[i].min);
        cJSON_AddNumberToObject(r, "latency_ms_max", res[i].max);
        cJSON_AddNumberToObject(r, "step_ms_ema", res[i].step_ms);
        cJSON_AddNumberToObject(r, "cpu_ms_per_frame", res[i].cpu_ms);
        cJSON_AddItemToArray(arr, r);
    }
    char *txt = cJSON_Print(root);
    if (!txt || sd_write_file(o->json, txt, strlen(txt)) != SD_OK)
        fprintf(stderr, "streamdiff bench stream: cannot write %s: %s\n", o->json, sd_last_error());
    else
        printf("wrote %s\n", o->json);
    free(txt);
    cJSON_Delete(root);
}

int cli_bench_stream(int argc, char **argv)
{
    bopts o = {.frames = 20, .warmup = 3, .mode_sync = true, .mode_async = true, .mode_txt = true,
               .precisions = {SD_PRECISION_AUTO}, .nprecisions = 1};
    sd_stream_default_params(&o.sp);
    o.sizes[0] = 512;
    o.nsizes = 1;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (!o.model) {
        fprintf(stderr, "streamdiff bench stream: no model given; pass -m PATH (see --help)\n");
        return 2;
    }
    if ((o.width > 0) != (o.height > 0)) {
        fprintf(stderr, "streamdiff bench stream: give both -W and -H (or --size)\n");
        return 2;
    }
    if (o.ncounts && !o.mode_multi && o.mode_sync && o.mode_async && o.mode_txt)
        o.mode_multi = true; /* --streams without --modes: add the streams table */
    if (o.mode_multi && !o.ncounts) {
        o.counts[0] = 1;
        o.counts[1] = 2;
        o.counts[2] = 4;
        o.ncounts = 3;
    }
    if (!o.mode_sync && !o.mode_async && !o.mode_txt && !o.mode_multi) {
        fprintf(stderr, "streamdiff bench stream: --modes selected nothing\n");
        return 2;
    }
    static bresult res[MAX_PRECISIONS * MAX_SIZES * (3 + MAX_COUNTS)];
    int nres = 0;
    double load_s[MAX_PRECISIONS] = {0};
    sd_model_info info0 = {0}; /* the first model's, for the JSON header (its strings copied) */
    char src[1024] = "", arch[32] = "";
    for (int pi = 0; pi < o.nprecisions && rc <= 0; pi++) {
        sd_model_params mp;
        sd_model_default_params(&mp);
        mp.backend = o.backend;
        mp.n_threads = o.threads;
        mp.taesd = o.taesd;
        mp.precision = o.precisions[pi];
        sd_model *m;
        double t0 = sd_time_now();
        if (sd_model_load(o.model, &mp, &m) != SD_OK) {
            fprintf(stderr, "streamdiff bench stream: precision %s: %s\n", sd_precision_name(mp.precision),
                    sd_last_error());
            rc = 1;
            break;
        }
        load_s[pi] = sd_time_now() - t0;
        sd_model_info info;
        sd_model_get_info(m, &info);
        if (pi == 0) {
            info0 = info;
            snprintf(src, sizeof src, "%s", info.source);
            snprintf(arch, sizeof arch, "%s", info.arch);
            info0.source = src;
            info0.arch = arch;
        }
        o.sp.use_taesd = info.has_taesd;
        char tl[128] = "";
        for (int i = 0; i < o.sp.n_t_index; i++)
            snprintf(tl + strlen(tl), sizeof tl - strlen(tl), "%s%d", i ? "," : "", o.sp.t_index_list[i]);
        printf("%smodel %s (%s, %.1f MB weights, %s), precision %s (asked: %s) on %s kernels, loaded in %.1f s\n",
               pi ? "\n" : "", info.source, info.arch, (double)info.weight_bytes / 1e6,
               info.has_taesd ? "TAESD" : "full VAE", info.precision, sd_precision_name(mp.precision), info.kernels,
               load_s[pi]);
        printf("backend %s, threads %d (%ld CPUs online), t-index [%s], cfg %s, guidance %g, %s, %d timed frames after "
               "%d warm-up\n\n",
               o.backend == SD_BACKEND_CUDA ? "cuda" : "cpu", o.threads, sysconf(_SC_NPROCESSORS_ONLN), tl,
               cli_cfg_type_name(o.sp.cfg_type), (double)o.sp.guidance_scale,
               o.sp.use_denoising_batch ? "stream batch" : "sequential", o.frames, o.warmup);
        if (o.backend == SD_BACKEND_CUDA)
            printf("graphs: %s\n\n",
                   o.sp.use_graphs ? "on (the step is captured once and replayed)" : "off (--no-graphs)");
        if (o.mode_sync || o.mode_async || o.mode_txt)
            printf("%-10s %-9s %-14s %7s %9s %30s %10s %12s\n", "size", "precision", "mode", "frames", "fps",
                   "latency ms mean/p50/p90/min", "step ms", "cpu ms/frame");
        int nsz = o.width ? 1 : o.nsizes;
        for (int si = 0; si < nsz && rc <= 0; si++) {
            sd_stream_params sp = o.sp;
            sp.width = o.width ? o.width : o.sizes[si];
            sp.height = o.height ? o.height : o.sizes[si];
            for (int mode = 0; mode < 3; mode++) {
                if ((mode == 0 && !o.mode_sync) || (mode == 1 && !o.mode_async) || (mode == 2 && !o.mode_txt))
                    continue;
                bresult r = {.w = sp.width, .h = sp.height, .precision = info.precision, .kernels = info.kernels,
                             .weight_bytes = (double)info.weight_bytes,
                             .mode = mode == 0 ? "img2img" : mode == 1 ? "img2img-async" : "txt2img"};
                sd_status st = mode == 1 ? bench_async(m, &o, &sp, &r) : bench_sync(m, &o, &sp, mode == 2, &r);
                if (st != SD_OK) {
                    fprintf(stderr, "streamdiff bench stream: %dx%d %s: %s\n", sp.width, sp.height, r.mode,
                            sd_last_error());
                    rc = st == SD_ERR_INVALID_ARGUMENT ? 2 : 1;
                    break;
                }
                char sz[32], lat[96];
                snprintf(sz, sizeof sz, "%dx%d", r.w, r.h);
                snprintf(lat, sizeof lat, "%.1f / %.1f / %.1f / %.1f", r.mean, r.p50, r.p90, r.min);
                printf("%-10s %-9s %-14s %7d %9.2f %30s %10.1f %12.1f\n", sz, r.precision, r.mode, r.frames, r.fps,
                       lat, r.step_ms, r.cpu_ms);
                fflush(stdout);
                res[nres++] = r;
            }
            for (int ci = 0; o.mode_multi && rc <= 0 && ci < o.ncounts; ci++) {
                if (ci == 0)
                    printf("\n%-10s %-9s %7s %10s %10s %12s %30s %12s\n", "size", "precision", "streams", "total fps",
                           "fps/stream", "unbatched", "tick ms mean/p50/p90/p99", "batch gain");
                bresult r = {.w = sp.width, .h = sp.height, .precision = info.precision, .kernels = info.kernels,
                             .weight_bytes = (double)info.weight_bytes,
                             .mode = "streams"};
                sd_status st = bench_multi(m, &o, &sp, o.counts[ci], &r);
                if (st != SD_OK) {
                    fprintf(stderr, "streamdiff bench stream: %dx%d, %d streams: %s\n", sp.width, sp.height,
                            o.counts[ci], sd_last_error());
                    rc = st == SD_ERR_INVALID_ARGUMENT ? 2 : 1;
                    break;
                }
                char sz[32], lat[96];
                snprintf(sz, sizeof sz, "%dx%d", r.w, r.h);
                snprintf(lat, sizeof lat, "%.1f / %.1f / %.1f / %.1f", r.mean, r.p50, r.p90, r.p99);
                printf("%-10s %-9s %7d %10.2f %10.2f %12.2f %30s %11.2fx\n", sz, r.precision, r.streams, r.fps,
                       r.fps / r.streams, r.alone_fps, lat, r.alone_fps > 0 ? r.fps / r.alone_fps : 0);
                fflush(stdout);
                res[nres++] = r;
            }
        }
        sd_model_free(m);
    }
    if (o.json && nres)
        write_json(&o, &info0, res, nres, load_s);
    return rc > 0 ? rc : 0;
}
