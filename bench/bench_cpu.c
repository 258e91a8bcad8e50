/* bench_cpu: the streamdiff side of bench/cpu_vs_torch.py.
 *
 * Measures ONE part per process, so that the peak RSS it reports belongs to
 * that part alone (the driver runs one process per row):
 *   unet     one UNet step, batch 1, latent size/8, random context [1,77,D]; an SDXL ("text_time") UNet also
 *            gets a random pooled text embedding and the time ids (size, size, 0, 0, size, size)
 *   controlnet  one UNet step with --nets N ControlNets (0..4; N copies of --controlnet DIR, each loaded
 *            separately, as N different nets would be) on a random control image of the size the net takes:
 *            every net's residuals (scale 1, summed as MultiControlNet) added to the UNet's skips
 *   taesd    TAESD (AutoencoderTiny) decode of a random [1,4,size/8,size/8] latent
 *   clip     the text encoder on one 77-token prompt
 *   txt2img  a full 1-step text-to-image (CLIP + 1 UNet step (Euler, no CFG) +
 *            TAESD decode), through the public API sd_txt2img
 *   bf16peak the bf16 kernels' instruction peak per core (AMX TDPBF16PS, AVX512 VDPBF16PS) on registers
 *            only, best of 5 (what the bf16 GFLOP/s are compared with), then the fp32 FMA's peak measured
 *            the same way ("op": "fp32 fma"; avx512, avx2): the yardstick (docs/precision.md, no AMX)
 *   sgemm    the machine's GEMM peak: a 2048^3 (--size) F32 product through
 *            OpenBLAS cblas_sgemm (kernels per OPENBLAS_CORETYPE) and through
 *            the backend's own GEMM (sd_linear); reports GFLOP/s of the best run
 * Loading is not timed. One warm-up run, then --reps timed runs; prints one
 * JSON object: {"part":..., "ms_min":..., "ms_median":..., "ms": [...],
 * "cpu_ms": [...] (process CPU time per run: all threads; compare with ms to
 * see whether the machine was busy), "peak_rss_mib":..., "arena_mib":...,
 * "weights_mib":..., "isa":...}.
 *
 *   bench_cpu --part unet --model DIR [--size 512] [--reps 3] [--threads 2] [--f16] [--batch N]
 *   bench_cpu --part unet --model DIR --backend cuda --batch 4    (the CUDA backend, fp16; bench/gpu.sh)
 *   bench_cpu --part taesd --taesd DIR ...      bench_cpu --part clip --model DIR ...
 *   bench_cpu --part txt2img --model DIR --taesd DIR ...
 *   bench_cpu --part controlnet --model DIR --controlnet DIR --nets 2 ...
 * --f16 keeps the F16 weights as F16 in memory (converted while packing each GEMM).
 * --precision bf16 (or auto: bf16 where the CPU has AMX / AVX512-BF16) keeps weights in BF16 and runs the
 * linears, convolutions and attention through the bf16 kernels; "isa" then names both kernel sets.
 * --precision int8 (experimental) runs linears and convolutions W8A8 on the int8 kernels (weights
 * quantised in the untimed warm-up run), the rest as bf16; "isa" names the int8 kernel set.
 *   int8peak  the int8 kernels' instruction peak per core (AMX TDPBSSD, AVX512 VPDPBUSD), as bf16peak
 * --save FILE (unet, taesd, taesd-encode, clip) writes the last run's output as raw float32 (the
 * inputs are the same random values every run and precision: outputs of two precisions compare).
 * The CPU kernel set follows SD_CPU_ISA (avx512, avx2, blas; default: the best).
 * SD_OP_TIMES=1 adds the time per op kind of the timed runs (backend/optime.h) on stderr. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "backend/optime.h"
#include "core/core.h"
#include "models/clip.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"
#include "pipe/model.h"
#include "streamdiff.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static double cpu_ms(void) /* CPU time of all threads of the process */
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* Peak RSS of this process image: VmHWM of /proc/self/status. (getrusage's ru_maxrss is not used: it
 * survives execve, so a child of a large parent, e.g. the Python driver, would report the parent's peak.) */
static double peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kib = atof(line + 6);
    if (f)
        fclose(f);
    if (kib < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kib = (double)ru.ru_maxrss;
    }
    return kib / 1024.0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned long long g_rng = 0x243f6a8885a308d3ULL;
static float frand(void)
{
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Inputs are filled on the first real run only: later runs (after sd_ctx_reset) get the same arena
 * addresses, so the data is still there and the timed runs measure the part, not the input upload. */
static bool g_fill = true;

static sd_tensor rand_tensor(sd_ctx *ctx, sd_dtype dt, int nd, const int64_t *ne)
{
    sd_tensor t = sd_new(ctx, dt, nd, ne);
    if (!sd_ok(ctx) || ctx->plan || !g_fill)
        return t;
    size_t n = (size_t)sd_numel(&t);
    float *h = malloc(n * sizeof(float));
    if (!h) {
        sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "bench_cpu: out of memory");
        return t;
    }
    for (size_t i = 0; i < n; i++)
        h[i] = dt == SD_F32 ? frand() : (float)(int)((frand() + 1.0f) * 100.0f);
    sd_tensor_from_f32(ctx, &t, h);
    free(h);
    return t;
}

/* the kernel set a CPU backend computes with: int8's, bf16's, else the fp32 one */
static const char *part_isa(const sd_backend *be)
{
    if (be->int8 && sd_backend_cpu_int8_isa(be))
        return sd_backend_cpu_int8_isa(be);
    return be->bf16 && sd_backend_cpu_bf16_isa(be) ? sd_backend_cpu_bf16_isa(be) : sd_backend_cpu_isa(be);
}

/* y as raw float32 into path */
static sd_status save_f32(sd_ctx *ctx, sd_tensor y, const char *path)
{
    size_t n = (size_t)sd_numel(&y);
    float *h = malloc(n * sizeof(float));
    if (!h)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "bench_cpu: out of memory");
    sd_status s = sd_tensor_to_f32(ctx, &y, h);
    FILE *f = s == SD_OK ? fopen(path, "wb") : NULL;
    if (s == SD_OK && (!f || fwrite(h, sizeof(float), n, f) != n))
        s = sd_fail(SD_ERR_IO, "bench_cpu: cannot write %s", path);
    if (f && fclose(f) != 0 && s == SD_OK)
        s = sd_fail(SD_ERR_IO, "bench_cpu: cannot write %s", path);
    free(h);
    return s;
}

typedef struct {
    const char *part, *model, *taesd, *json, *save, *controlnet;
    int size, reps, threads, batch, nets;
    bool f16, cuda;
    sd_precision precision; /* --precision fp32|bf16|auto */
} opts;

/* the part's forward, for both the planning and the real context */
#define MAX_NETS 4
typedef struct {
    const opts *o;
    sd_backend *be;
    sd_unet *unet;
    sd_cnet *cnet[MAX_NETS];
    sd_clip *clip;
    sd_taesd *taesd;
    int32_t ids[77];
} part_state;

static sd_tensor run_part(sd_ctx *ctx, part_state *ps)
{
    int64_t h = ps->o->size / 8, B = ps->o->batch;
    sd_dtype act = ctx->be->act_dtype;
    if (ps->unet) {
        const sd_unet_config *c = sd_unet_get_config(ps->unet);
        sd_tensor x = rand_tensor(ctx, act, 4, (int64_t[]){B, c->in_channels, h, h});
        sd_tensor t = sd_new(ctx, SD_F32, 1, (int64_t[]){B});
        if (sd_ok(ctx) && !ctx->plan && g_fill) {
            float tt[64];
            for (int64_t i = 0; i < B; i++)
                tt[i] = 999.0f - 250.0f * (float)i;
            sd_tensor_from_f32(ctx, &t, tt);
        }
        sd_tensor cx = rand_tensor(ctx, act, 3, (int64_t[]){B, 77, c->cross_attention_dim[0]});
        sd_unet_added add, *addp = NULL;
        if (c->add_text_time) { /* SDXL: pooled text embedding [B,P] and the 6 time ids */
            int64_t P = c->projection_class_embeddings_input_dim - SD_UNET_TIME_IDS * c->addition_time_embed_dim;
            add.text_embeds = rand_tensor(ctx, act, 2, (int64_t[]){B, P});
            add.time_ids = sd_new(ctx, SD_F32, 2, (int64_t[]){B, SD_UNET_TIME_IDS});
            if (sd_ok(ctx) && !ctx->plan && g_fill) {
                float ids[64 * SD_UNET_TIME_IDS], s = (float)ps->o->size;
                for (int64_t i = 0; i < B; i++)
                    memcpy(ids + i * SD_UNET_TIME_IDS, (float[]){s, s, 0, 0, s, s}, sizeof(float) * SD_UNET_TIME_IDS);
                sd_tensor_from_f32(ctx, &add.time_ids, ids);
            }
            addp = &add;
        }
        sd_unet_residuals res = {0}, *resp = NULL;
        sd_tensor down[SD_UNET_MAX_SKIPS];
        for (int k = 0; k < ps->o->nets && sd_ok(ctx); k++) { /* MultiControlNet: residuals summed in net order */
            const sd_cnet *cn = ps->cnet[k];
            int64_t f = sd_cnet_cond_factor(sd_cnet_get_config(cn));
            if (!k) {
                sd_cnet_residuals_new(ctx, cn, B, h, h, down, &res.mid);
                res.down = down;
                res.n_down = sd_cnet_num_residuals(cn);
                resp = &res;
            }
            sd_tensor cond = rand_tensor(ctx, act, 4, (int64_t[]){B, 3, f * h, f * h}); /* kept: filled once */
            sd_cnet_forward(ctx, cn, x, t, cx, cond, 1.0f, addp, &res, k > 0);
        }
        return sd_unet_forward_ex(ctx, ps->unet, x, t, cx, NULL, NULL, addp, resp);
    }
    if (ps->taesd) {
        if (!strcmp(ps->o->part, "taesd-encode")) {
            sd_tensor img = rand_tensor(ctx, act, 4, (int64_t[]){B, 3, 8 * h, 8 * h});
            return sd_taesd_encode(ctx, ps->taesd, img);
        }
        sd_tensor z = rand_tensor(ctx, act, 4, (int64_t[]){B, 4, h, h});
        return sd_taesd_decode(ctx, ps->taesd, z);
    }
    return sd_clip_forward(ctx, ps->clip, ps->ids, 1, 77, 0, NULL, NULL);
}

/* The weights of one folder (DIR/diffusion_pytorch_model.safetensors) at the precision the backend computes in:
 * BF16 for the bf16 kernels, F16 with --f16 or CUDA, else F32. Initialised even when it fails (free it). */
static sd_status load_weights(const part_state *ps, const char *dir, const char *label, sd_weights *w)
{
    char wp[4200];
    snprintf(wp, sizeof wp, "%s/diffusion_pytorch_model.safetensors", dir);
    sd_weights_init(w, ps->be, label, ps->be->bf16 ? SD_BF16 : ps->o->f16 || ps->o->cuda ? SD_F16 : SD_F32);
    sd_status s = sd_weights_add_file(w, wp, NULL, false);
    return s == SD_OK ? sd_weights_finalize(w) : s;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_cpu --part unet|controlnet|taesd|taesd-encode|clip|txt2img|sgemm [--model DIR] "
                    "[--taesd DIR] [--size N] [--reps N] [--threads N] [--f16] [--backend cpu|cuda] [--batch N]\n"
                    "                 [--precision fp32|bf16|int8|auto] [--save FILE] [--controlnet DIR --nets N]\n"
                    "  --part bf16peak|int8peak: the bf16 / int8 kernels' instruction peak per core (and the fp32 FMA's)\n"
                    "  --part controlnet: one UNet step of --model with N (0..%d) copies of the ControlNet DIR\n"
                    "  --backend cuda: the CUDA backend (fp16; unet/taesd/taesd-encode/clip/txt2img)\n"
                    "  --batch N: batch rows for unet / taesd / taesd-encode (1..64, default 1)\n", MAX_NETS);
    return 2;
}

int main(int argc, char **argv)
{
    opts o = {.part = NULL, .size = 512, .reps = 3, .threads = 0, .batch = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--f16"))
            o.f16 = true;
        else if (!v)
            return usage();
        else if (!strcmp(a, "--part"))
            o.part = v, i++;
        else if (!strcmp(a, "--model"))
            o.model = v, i++;
        else if (!strcmp(a, "--taesd"))
            o.taesd = v, i++;
        else if (!strcmp(a, "--controlnet"))
            o.controlnet = v, i++;
        else if (!strcmp(a, "--nets"))
            o.nets = atoi(v), i++;
        else if (!strcmp(a, "--size"))
            o.size = atoi(v), i++;
        else if (!strcmp(a, "--reps"))
            o.reps = atoi(v), i++;
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v), i++;
        else if (!strcmp(a, "--precision")) {
            if (!sd_precision_from_name(v, &o.precision))
                return usage();
            i++;
        } else if (!strcmp(a, "--save"))
            o.save = v, i++;
        else if (!strcmp(a, "--batch"))
            o.batch = atoi(v), i++;
        else if (!strcmp(a, "--backend") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            o.cuda = !strcmp(v, "cuda"), i++;
        else
            return usage();
    }
    if (!o.part || o.size < 64 || o.size % 64 || o.size > 8192 || o.reps < 1 || o.reps > 1000 || o.batch < 1 ||
        o.batch > 64 || (o.cuda && !strcmp(o.part, "sgemm")) || o.nets < 0 || o.nets > MAX_NETS ||
        (o.nets && (!o.controlnet || strcmp(o.part, "controlnet"))))
        return usage();
    double times[1000], cpu[1000];
    double arena_mib = 0, weights_mib = 0;
    const char *isa = "?";
    sd_status s = SD_OK;

    if (!strcmp(o.part, "sgemm")) {
        int64_t n = o.size;
        sd_backend *be = NULL;
        sd_ctx ctx = {0}; /* freed below only when initialised */
        s = sd_backend_cpu_create(o.threads, &be);
        if (s == SD_OK)
            s = sd_ctx_init(&ctx, be, (size_t)(3 * n * n) * sizeof(float) + 4096);
        if (s != SD_OK) {
            fprintf(stderr, "bench_cpu: %s\n", sd_last_error());
            return 1;
        }
        openblas_set_num_threads(be->n_threads);
        sd_tensor a = rand_tensor(&ctx, SD_F32, 2, (int64_t[]){n, n}), b = rand_tensor(&ctx, SD_F32, 2, (int64_t[]){n, n});
        double best_blas = 1e30, best_own = 1e30;
        for (int r = 0; r <= o.reps; r++) {
            double t0 = now_ms();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0f, a.data, (int)n, b.data,
                        (int)n, 0.0f, (float *)ctx.base + 2 * n * n, (int)n);
            double t1 = now_ms();
            size_t m = sd_mark(&ctx);
            sd_linear(&ctx, a, b, NULL);
            double t2 = now_ms();
            sd_release(&ctx, m);
            if (r && t1 - t0 < best_blas)
                best_blas = t1 - t0;
            if (r && t2 - t1 < best_own)
                best_own = t2 - t1;
        }
        const char *core = openblas_get_corename();
        double gf = 2.0 * n * n * n * 1e-6;
        printf("{\"engine\": \"streamdiff\", \"part\": \"sgemm\", \"size\": %lld, \"threads\": %d, "
               "\"openblas_core\": \"%s\", \"openblas_gflops\": %.1f, \"own_isa\": \"%s\", \"own_gflops\": %.1f}\n",
               (long long)n, be->n_threads, core ? core : "?", gf / best_blas, sd_backend_cpu_isa(be),
               gf / best_own);
        sd_ctx_free(&ctx);
        sd_backend_destroy(be);
        return sd_ok(&ctx) ? 0 : 1;
    }
    bool i8peak = !strcmp(o.part, "int8peak");
    if (i8peak || !strcmp(o.part, "bf16peak")) { /* the kernels' instruction peak, one core, registers only */
        const char *lv[] = {"amx", i8peak ? "avx512vnni" : "avx512bf16"};
        for (int i = 0; i < 2; i++) {
            const sd_cpu_bf16_kern *k = i8peak ? NULL : sd_cpu_bf16_kern_select(lv[i]);
            const sd_cpu_int8_kern *k8 = i8peak ? sd_cpu_int8_kern_select(lv[i]) : NULL;
            if ((!k && !k8) || (k8 && strcmp(k8->name, lv[i]))) {
                printf("{\"engine\": \"streamdiff\", \"part\": \"%s\", \"isa\": \"%s\", \"available\": false}\n",
                       o.part, lv[i]);
                continue;
            }
            double best = 0;
            for (int r = 0; r < 5; r++) {
                double t0 = now_ms(), macs = k8 ? k8->peak(2000000) : k->peak(2000000), ms = now_ms() - t0;
                best = fmax(best, 2.0 * macs / ms * 1e-6);
            }
            printf("{\"engine\": \"streamdiff\", \"part\": \"%s\", \"isa\": \"%s\", \"%s_per_core\": %.1f}\n", o.part,
                   lv[i], i8peak ? "gops" : "gflops", best);
        }
        /* the yardstick: the fp32 FMA's peak measured the same way (16 independent accumulators) */
        const sd_cpu_kern *fk[] = {sd_cpu_kern_avx512(), sd_cpu_kern_avx2()};
        for (int i = 0; i < 2; i++) {
            if (!fk[i])
                continue;
            double best = 0;
            for (int r = 0; r < 5; r++) {
                double t0 = now_ms(), macs = fk[i]->peak(2000000), ms = now_ms() - t0;
                best = fmax(best, 2.0 * macs / ms * 1e-6);
            }
            printf("{\"engine\": \"streamdiff\", \"part\": \"%s\", \"isa\": \"%s\", \"op\": \"fp32 fma\", "
                   "\"gflops_per_core\": %.1f}\n", o.part, fk[i]->name, best);
        }
        return 0;
    }
    if (!strcmp(o.part, "txt2img")) {
        if (!o.model || !o.taesd)
            return usage();
        sd_model_params mp;
        sd_model_default_params(&mp);
        mp.n_threads = o.threads;
        mp.taesd = o.taesd;
        mp.keep_f16 = o.f16;
        mp.precision = o.precision;
        mp.backend = o.cuda ? SD_BACKEND_CUDA : SD_BACKEND_CPU;
        sd_model *m = NULL;
        s = sd_model_load(o.model, &mp, &m);
        if (s != SD_OK) {
            fprintf(stderr, "bench_cpu: %s\n", sd_last_error());
            return 1;
        }
        sd_model_info info;
        sd_model_get_info(m, &info);
        weights_mib = info.weight_bytes / 1048576.0;
        isa = o.cuda ? "cuda" : part_isa(m->be);
        sd_gen_params gp;
        sd_gen_default_params(&gp);
        gp.prompt = "a photograph of an astronaut riding a horse on the moon, highly detailed";
        gp.width = gp.height = o.size;
        gp.steps = 1;
        gp.guidance_scale = 0.0f;
        gp.sampler = "euler";
        gp.use_taesd = true;
        for (int r = 0; r <= o.reps && s == SD_OK; r++) {
            sd_image img = {0};
            double t0 = now_ms(), c0 = cpu_ms();
            if (r == 1)
                sd_optime_reset(); /* the op times of the timed runs only */
            s = sd_txt2img(m, &gp, &img);
            if (r) {
                times[r - 1] = now_ms() - t0;
                cpu[r - 1] = cpu_ms() - c0;
            }
            sd_image_free(&img);
        }
        sd_model_free(m);
    } else {
        part_state ps = {.o = &o};
        sd_weights w[1 + MAX_NETS];
        int n_w = 0;
        s = o.cuda ? sd_backend_cuda_create(0, &ps.be) : sd_backend_cpu_create(o.threads, &ps.be);
        if (s == SD_OK && !o.cuda && o.precision == SD_PRECISION_INT8)
            sd_backend_cpu_set_int8(ps.be, true);
        else if (s == SD_OK && !o.cuda &&
            (o.precision == SD_PRECISION_BF16 || (o.precision == SD_PRECISION_AUTO && sd_backend_cpu_auto_bf16(ps.be))))
            sd_backend_cpu_set_bf16(ps.be, true);
        if (s == SD_OK) {
            isa = o.cuda ? "cuda" : part_isa(ps.be);
            if ((!strcmp(o.part, "unet") || !strcmp(o.part, "controlnet")) && o.model) {
                char dir[4096], cp[4200];
                snprintf(dir, sizeof dir, "%s/unet", o.model);
                snprintf(cp, sizeof cp, "%s/config.json", dir);
                sd_unet_config cfg;
                sd_cnet_config cc;
                s = sd_unet_config_load(cp, &cfg);
                if (s == SD_OK)
                    s = load_weights(&ps, dir, "unet", &w[n_w++]);
                if (s == SD_OK)
                    s = sd_unet_load(&w[0], &cfg, &ps.unet);
                snprintf(cp, sizeof cp, "%s/config.json", o.controlnet ? o.controlnet : ".");
                if (s == SD_OK && o.nets && (s = sd_cnet_config_load(cp, &cc)) == SD_OK)
                    s = sd_cnet_check_fit(&cc, &cfg, o.controlnet);
                for (int k = 0; k < o.nets && s == SD_OK; k++) { /* each net its own weights, as distinct nets */
                    s = load_weights(&ps, o.controlnet, "controlnet", &w[n_w++]);
                    if (s == SD_OK)
                        s = sd_cnet_load(&w[n_w - 1], &cc, &ps.cnet[k]);
                }
                for (int k = 0; k < n_w && s == SD_OK; k++)
                    weights_mib += (w[k].bytes_device + w[k].bytes_mapped) / 1048576.0;
            } else if ((!strcmp(o.part, "taesd") || !strcmp(o.part, "taesd-encode")) && o.taesd) {
                s = sd_taesd_load_dir(ps.be, o.taesd, &ps.taesd);
            } else if (!strcmp(o.part, "clip") && o.model) {
                char dir[4096];
                snprintf(dir, sizeof dir, "%s/text_encoder", o.model);
                s = sd_clip_load_dir(ps.be, dir, 0, &ps.clip);
                ps.ids[0] = 49406; /* <|startoftext|>, then a few words, <|endoftext|> and padding */
                for (int i = 1; i < 77; i++)
                    ps.ids[i] = i < 16 ? 320 + i * 37 : 49407;
            } else {
                return usage();
            }
        }
        sd_ctx ctx = {0}; /* freed below only when initialised */
        if (s == SD_OK) {
            sd_ctx_init_plan(&ctx, ps.be);
            run_part(&ctx, &ps);
            s = ctx.status;
            size_t peak = ctx.peak;
            if (s == SD_OK)
                s = sd_ctx_init(&ctx, ps.be, peak);
            arena_mib = peak / 1048576.0;
        }
        for (int r = 0; r <= o.reps && s == SD_OK; r++) {
            sd_ctx_reset(&ctx);
            g_rng = 0x243f6a8885a308d3ULL;
            g_fill = r == 0;
            if (r == 1)
                sd_optime_reset();
            double t0 = now_ms(), c0 = cpu_ms();
            sd_tensor y = run_part(&ctx, &ps);
            if (sd_ok(&ctx)) {
                float probe;
                sd_tensor one = y;
                one.ndim = 1;
                one.ne[0] = 1;
                sd_tensor_to_f32(&ctx, &one, &probe); /* a synchronisation point for any backend */
            }
            if (r) {
                times[r - 1] = now_ms() - t0;
                cpu[r - 1] = cpu_ms() - c0;
            }
            s = ctx.status;
            if (s == SD_OK && r == o.reps && o.save)
                s = save_f32(&ctx, y, o.save);
        }
        if (ps.be && ctx.base)
            sd_ctx_free(&ctx);
        sd_unet_free(ps.unet);
        sd_clip_free(ps.clip);
        sd_taesd_free(ps.taesd);
        for (int k = 0; k < o.nets; k++)
            sd_cnet_free(ps.cnet[k]);
        for (int k = 0; k < n_w; k++)
            sd_weights_free(&w[k]);
        sd_backend_destroy(ps.be);
    }
    if (s != SD_OK) {
        fprintf(stderr, "bench_cpu: %s: %s\n", o.part, sd_last_error());
        return 1;
    }
    sd_optime_print(stderr, o.reps);
    sd_optime_reset();
    double sorted[1000];
    memcpy(sorted, times, (size_t)o.reps * sizeof(double));
    qsort(sorted, (size_t)o.reps, sizeof(double), cmp_d);
    printf("{\"engine\": \"streamdiff\", \"part\": \"%s\", \"size\": %d, \"batch\": %d, \"isa\": \"%s\", "
           "\"f16_weights\": %s, \"ms_min\": %.2f, \"ms_median\": %.2f, \"ms\": [",
           o.part, o.size, o.batch, isa, o.f16 || o.cuda ? "true" : "false", sorted[0], sorted[o.reps / 2]);
    for (int r = 0; r < o.reps; r++)
        printf(r ? ", %.2f" : "%.2f", times[r]);
    printf("], \"cpu_ms\": [");
    for (int r = 0; r < o.reps; r++)
        printf(r ? ", %.2f" : "%.2f", cpu[r]);
    printf("], \"peak_rss_mib\": %.1f, \"arena_mib\": %.1f, \"weights_mib\": %.1f}\n", peak_rss_mib(), arena_mib,
           weights_mib);
    return 0;
}
