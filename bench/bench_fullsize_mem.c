/* bench_fullsize_mem: memory (and time) of loading a model and of one UNet
 * forward, for BENCHMARKS.md "Full-size models: load memory". One
 * configuration per process, since peak RSS (VmHWM) only grows.
 *
 *   bench_fullsize_mem MODEL [--keep-f16] [--config-dir DIR] [--unet W H] [--runs N]
 *
 * MODEL: a diffusers folder or single file (sd_model_load). Prints after the
 * load and after the UNet forwards (batch 1, W x H pixels, random inputs):
 * VmHWM (peak RSS), VmRSS, RssAnon (heap: converted weights, arena),
 * RssFile (mapped file pages touched), and the wall and process CPU time of
 * each forward (the first one also touches the arena pages; CPU time is the
 * steadier number on a shared machine). */
#include "backend/ops.h"
#include "pipe/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static void report(const char *when)
{
    printf("%-22s VmHWM %7.0f MiB  VmRSS %7.0f MiB  RssAnon %7.0f MiB  RssFile %7.0f MiB\n", when,
           status_kb("VmHWM") / 1024.0, status_kb("VmRSS") / 1024.0, status_kb("RssAnon") / 1024.0,
           status_kb("RssFile") / 1024.0);
    fflush(stdout);
}

static sd_tensor rand_tensor(sd_ctx *ctx, int ndim, const int64_t *ne, unsigned long long seed)
{
    sd_tensor t = sd_new(ctx, ctx->be->act_dtype, ndim, ne);
    if (!sd_ok(ctx) || ctx->plan)
        return t;
    size_t n = (size_t)sd_numel(&t);
    float *h = malloc(n * sizeof *h + 1);
    if (!h)
        return sd_ctx_fail(ctx, SD_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        h[i] = (float)((seed >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    sd_status s = sd_tensor_from_f32(ctx, &t, h);
    free(h);
    return s == SD_OK ? t : sd_ctx_fail(ctx, s, "%s", sd_last_error());
}

static void forward(sd_ctx *ctx, const sd_model *m, int64_t h, int64_t w)
{
    int64_t xs[4] = {1, m->unet_cfg.in_channels, h, w};
    int64_t cs[3] = {1, 77, m->unet_cfg.cross_attention_dim[0]};
    int64_t one = 1;
    sd_tensor x = rand_tensor(ctx, 4, xs, 1);
    sd_tensor c = rand_tensor(ctx, 3, cs, 2);
    sd_tensor t = sd_new(ctx, SD_F32, 1, &one);
    if (sd_ok(ctx) && !ctx->plan) {
        float tv = 500.0f;
        sd_tensor_from_f32(ctx, &t, &tv);
    }
    sd_unet_forward(ctx, m->unet, x, t, c, NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [--keep-f16] [--config-dir DIR] [--unet W H] [--runs N]\n", argv[0]);
        return 2;
    }
    sd_model_params p;
    sd_model_default_params(&p);
    int W = 0, H = 0, runs = 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--keep-f16"))
            p.keep_f16 = true;
        else if (!strcmp(argv[i], "--config-dir") && i + 1 < argc)
            p.config_dir = argv[++i];
        else if (!strcmp(argv[i], "--unet") && i + 2 < argc) {
            W = atoi(argv[++i]);
            H = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    report("start");
    double t0 = sd_time_now();
    sd_model *m = NULL;
    if (sd_model_load(argv[1], &p, &m) != SD_OK) {
        fprintf(stderr, "load failed: %s\n", sd_last_error());
        return 1;
    }
    sd_model_info info;
    sd_model_get_info(m, &info);
    printf("loaded %s (%s, keep_f16 %d) in %.2f s: weights %.0f MiB (device %.0f + mapped %.0f)\n", argv[1],
           info.arch, (int)p.keep_f16, sd_time_now() - t0, info.weight_bytes / 1048576.0,
           (m->w_text.bytes_device + m->w_unet.bytes_device + m->w_vae.bytes_device) / 1048576.0,
           (m->w_text.bytes_mapped + m->w_unet.bytes_mapped + m->w_vae.bytes_mapped) / 1048576.0);
    report("after load");
    int rc = 0;
    if (W > 0 && H > 0) {
        int f = 8;
        sd_ctx ctx;
        sd_ctx_init_plan(&ctx, m->be);
        forward(&ctx, m, H / f, W / f);
        size_t peak = ctx.peak;
        sd_status s = ctx.status;
        if (s == SD_OK)
            s = sd_ctx_init(&ctx, m->be, peak);
        printf("UNet %dx%d batch 1: arena %.1f MiB\n", W, H, peak / 1048576.0);
        for (int r = 0; s == SD_OK && r < runs; r++) {
            double t1 = sd_time_now(), c1 = cpu_s();
            sd_release(&ctx, 0);
            forward(&ctx, m, H / f, W / f);
            s = ctx.status;
            printf("  forward %d: %.2f s wall, %.2f s CPU (all threads)\n", r + 1, sd_time_now() - t1, cpu_s() - c1);
            fflush(stdout);
        }
        if (s != SD_OK) {
            fprintf(stderr, "forward failed: %s\n", sd_last_error());
            rc = 1;
        } else {
            sd_ctx_free(&ctx);
        }
        report("after UNet forwards");
    }
    sd_model_free(m);
    return rc;
}
