/* `streamdiff selfcheck`: a quick end-to-end check of the build: backend ops
 * against naive double-precision references and a safetensors round trip. */
#include "backend/cpu/cpu_kern.h"
#include "backend/ops.h"
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static double max_rel(const float *a, const double *ref, size_t n)
{
    double mx = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(ref[i]));
    for (size_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(a[i] - ref[i]) / scale);
    return mx;
}

int cli_selfcheck(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: streamdiff selfcheck\n\nRuns a 3x3 convolution and an attention on the CPU backend against\n"
               "double-precision references and round-trips a safetensors file. Exit 0 when all pass.\n");
        return 0;
    }
    sd_backend *be;
    if (sd_backend_cpu_create(0, &be) != SD_OK) {
        fprintf(stderr, "selfcheck: %s\n", sd_last_error());
        return 1;
    }
    printf("cpu kernel set    %s\n", sd_backend_cpu_isa(be)); /* picked at run time (SD_CPU_ISA lowers it) */
    int fails = 0;
    unsigned seed = 1;
    /* conv2d 3x3 pad 1 */
    enum { N = 1, C = 5, H = 7, W = 6, O = 3 };
    static float x[N * C * H * W], w[O * C * 9], b[O], y[N * O * H * W];
    static double ref[N * O * H * W];
    for (size_t i = 0; i < SD_ARRAY_LEN(x); i++) x[i] = frand(&seed);
    for (size_t i = 0; i < SD_ARRAY_LEN(w); i++) w[i] = frand(&seed);
    for (size_t i = 0; i < SD_ARRAY_LEN(b); i++) b[i] = frand(&seed);
    for (int o = 0; o < O; o++)
        for (int h = 0; h < H; h++)
            for (int ww = 0; ww < W; ww++) {
                double acc = b[o];
                for (int c = 0; c < C; c++)
                    for (int kh = 0; kh < 3; kh++)
                        for (int kw = 0; kw < 3; kw++) {
                            int ih = h + kh - 1, iw = ww + kw - 1;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                acc += (double)x[(c * H + ih) * W + iw] * w[((o * C + c) * 3 + kh) * 3 + kw];
                        }
                ref[(o * H + h) * W + ww] = acc;
            }
    sd_ctx ctx;
    sd_ctx_init(&ctx, be, 1 << 24);
    sd_tensor tx = sd_new4(&ctx, N, C, H, W), tw = sd_new4(&ctx, O, C, 3, 3), tb = sd_new4(&ctx, O, 0, 0, 0);
    sd_tensor_from_f32(&ctx, &tx, x);
    sd_tensor_from_f32(&ctx, &tw, w);
    sd_tensor_from_f32(&ctx, &tb, b);
    sd_tensor ty = sd_conv2d(&ctx, tx, tw, &tb, 1, 1);
    sd_tensor_to_f32(&ctx, &ty, y);
    double e = sd_ok(&ctx) ? max_rel(y, ref, SD_ARRAY_LEN(y)) : 1;
    printf("conv2d 3x3        max rel err %.2e  %s\n", e, e < 1e-5 ? "PASS" : "FAIL");
    fails += e >= 1e-5;

    /* attention: 2 heads, 9 queries, 11 keys, head dim 4 */
    enum { NQ = 9, NK = 11, HD = 8, HEADS = 2 };
    static float q[NQ * HD], k[NK * HD], v[NK * HD], o[NQ * HD];
    static double oref[NQ * HD];
    for (int i = 0; i < NQ * HD; i++) q[i] = frand(&seed);
    for (int i = 0; i < NK * HD; i++) { k[i] = frand(&seed); v[i] = frand(&seed); }
    int d = HD / HEADS;
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < NQ; i++) {
            double s[NK], mx = -1e300, sum = 0;
            for (int j = 0; j < NK; j++) {
                s[j] = 0;
                for (int t = 0; t < d; t++) s[j] += (double)q[i * HD + h * d + t] * k[j * HD + h * d + t];
                s[j] /= sqrt(d);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < NK; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
            for (int t = 0; t < d; t++) {
                double acc = 0;
                for (int j = 0; j < NK; j++) acc += s[j] / sum * v[j * HD + h * d + t];
                oref[i * HD + h * d + t] = acc;
            }
        }
    sd_tensor tq = sd_new4(&ctx, 1, NQ, HD, 0), tk = sd_new4(&ctx, 1, NK, HD, 0), tv = sd_new4(&ctx, 1, NK, HD, 0);
    sd_tensor_from_f32(&ctx, &tq, q);
    sd_tensor_from_f32(&ctx, &tk, k);
    sd_tensor_from_f32(&ctx, &tv, v);
    sd_tensor to = sd_attention(&ctx, tq, tk, tv, HEADS, 1.0f / sqrtf((float)d), false);
    sd_tensor_to_f32(&ctx, &to, o);
    e = sd_ok(&ctx) ? max_rel(o, oref, SD_ARRAY_LEN(o)) : 1;
    printf("attention         max rel err %.2e  %s\n", e, e < 1e-5 ? "PASS" : "FAIL");
    fails += e >= 1e-5;
    sd_ctx_free(&ctx);
    sd_backend_destroy(be);

    /* safetensors round trip */
    char path[] = "/tmp/streamdiff-selfcheck-XXXXXX";
    int fd = mkstemp(path);
    bool st_ok = false;
    if (fd >= 0) {
        close(fd);
        sd_st_writer *wr = sd_st_writer_new();
        int64_t shape[2] = {O, C * 9};
        sd_safetensors *st = NULL;
        if (wr && sd_st_writer_add(wr, "w", SD_F32, 2, shape, w) == SD_OK && sd_st_writer_save(wr, path) == SD_OK &&
            sd_safetensors_open(path, &st) == SD_OK) {
            const sd_st_tensor *t = sd_st_find(st, "w");
            st_ok = t && t->numel == SD_ARRAY_LEN(w) && !memcmp(t->data, w, sizeof w);
        }
        sd_safetensors_close(st);
        sd_st_writer_free(wr);
        unlink(path);
    }
    printf("safetensors round trip           %s\n", st_ok ? "PASS" : "FAIL");
    fails += !st_ok;
    printf("selfcheck: %s\n", fails ? "FAILED" : "all checks passed");
    return fails ? 1 : 0;
}
