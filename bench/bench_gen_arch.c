/* bench_gen_arch: writes a random-weight model of a real architecture, for
 * speed benchmarks and GPU-vs-CPU checks on machines without the weights
 * (the GPU machine has no network and only 64 MiB can be carried to it).
 *
 *   bench_gen_arch ARCH_DIR OUT_DIR [--tokenizer DIR] [--seed N]
 *
 * ARCH_DIR (bench/arch/<model>) holds the configs of a diffusers folder and,
 * per weights file, a tensors.txt with one "name dtype shape" line per tensor
 * (taken from the headers of the real files). Every folder of ARCH_DIR with a
 * tensors.txt becomes a folder of OUT_DIR with its config.json and the
 * weights file (F16, diffusers names): diffusion_pytorch_model.safetensors,
 * or model.safetensors for text_encoder; other files (model_index.json,
 * scheduler/) are copied, and --tokenizer copies a tokenizer folder into
 * OUT_DIR/tokenizer. A folder ARCH_DIR that itself has tensors.txt (TAESD)
 * becomes OUT_DIR itself.
 *
 * Values (deterministic for a seed, independent of file order): norm weights
 * 1, biases uniform in +-0.01, embedding tables N(0, 0.02) (as uniform of
 * that deviation), other weights uniform in +-1/sqrt(fan_in) (PyTorch's
 * default init bound for Linear/Conv). NOT a model: the outputs are noise. */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TENSORS 4096

typedef struct {
    char name[256];
    int ndim;
    int64_t shape[8];
    uint64_t numel;
} tensor_info;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* the init bound of a uniform distribution for this tensor; *constant >= 0: every value is that constant */
static double init_bound(const tensor_info *t, double *constant)
{
    *constant = -1;
    if (t->ndim <= 1) {
        bool norm = strstr(t->name, "norm") || strstr(t->name, "ln_") || strstr(t->name, ".ln");
        if (norm && ends_with(t->name, "weight")) {
            *constant = 1;
            return 0;
        }
        return 0.01;
    }
    if (strstr(t->name, "embedding") && t->ndim == 2 && !strstr(t->name, "time_embedding"))
        return 0.02 * sqrt(3.0);
    uint64_t fan_in = 1;
    for (int i = 1; i < t->ndim; i++)
        fan_in *= (uint64_t)t->shape[i];
    return 1.0 / sqrt((double)fan_in);
}

static sd_status read_tensors(const char *path, tensor_info **out, int *n)
{
    char *txt;
    size_t len;
    SD_TRY(sd_read_file(path, (size_t)16 << 20, &txt, &len));
    tensor_info *ts = calloc(MAX_TENSORS, sizeof *ts);
    if (!ts) {
        free(txt);
        return SD_ERR_OUT_OF_MEMORY;
    }
    int k = 0, line = 0;
    sd_status st = SD_OK;
    for (char *save = NULL, *l = strtok_r(txt, "\n", &save); l && st == SD_OK; l = strtok_r(NULL, "\n", &save)) {
        line++;
        if (l[0] == '#' || !l[0])
            continue;
        char name[256], dt[16], shape[256];
        if (k == MAX_TENSORS || sscanf(l, "%255s %15s %255s", name, dt, shape) != 3 || strcmp(dt, "F16")) {
            st = sd_fail(SD_ERR_FORMAT, "%s:%d: expected 'name F16 d0,d1,...' (at most %d tensors)", path, line,
                         MAX_TENSORS);
            break;
        }
        tensor_info *t = &ts[k++];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->numel = 1;
        if (strcmp(shape, "-")) {
            for (char *s2 = NULL, *d = strtok_r(shape, ",", &s2); d; d = strtok_r(NULL, ",", &s2)) {
                long long v = atoll(d);
                if (t->ndim == 8 || v <= 0 || v > (1LL << 32)) {
                    st = sd_fail(SD_ERR_FORMAT, "%s:%d: bad shape", path, line);
                    break;
                }
                t->shape[t->ndim++] = v;
                t->numel *= (uint64_t)v;
            }
        }
    }
    free(txt);
    if (st != SD_OK) {
        free(ts);
        return st;
    }
    *out = ts;
    *n = k;
    return SD_OK;
}

/* Writes a safetensors file tensor by tensor (no copy of the whole model in memory). */
static sd_status write_weights(const char *list, const char *path, uint64_t seed)
{
    tensor_info *ts;
    int n;
    SD_TRY(read_tensors(list, &ts, &n));
    size_t cap = 64 + (size_t)n * 400, hl = 0;
    char *h = malloc(cap);
    if (!h) {
        free(ts);
        return SD_ERR_OUT_OF_MEMORY;
    }
    uint64_t off = 0;
    hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"random weights\"}");
    for (int i = 0; i < n; i++) {
        hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"F16\",\"shape\":[", ts[i].name);
        for (int d = 0; d < ts[i].ndim; d++)
            hl += (size_t)snprintf(h + hl, cap - hl, "%s%lld", d ? "," : "", (long long)ts[i].shape[d]);
        hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                               (unsigned long long)(off + 2 * ts[i].numel));
        off += 2 * ts[i].numel;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    while (hl % 8)
        h[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    sd_status st = f ? SD_OK : sd_fail(SD_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    uint64_t hl64 = hl;
    if (st == SD_OK && (fwrite(&hl64, 8, 1, f) != 1 || fwrite(h, 1, hl, f) != hl))
        st = sd_fail(SD_ERR_IO, "cannot write %s", path);
    enum { CHUNK = 1 << 20 };
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    if (!buf)
        st = SD_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < n && st == SD_OK; i++) {
        double c;
        double b = init_bound(&ts[i], &c);
        uint64_t s = hash_name(ts[i].name, seed);
        for (uint64_t done = 0; done < ts[i].numel && st == SD_OK;) {
            size_t m = (size_t)SD_MIN((uint64_t)CHUNK, ts[i].numel - done);
            for (size_t j = 0; j < m; j++) {
                double u = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
                buf[j] = sd_f32_to_f16(c >= 0 ? (float)c : (float)((2 * u - 1) * b));
            }
            if (fwrite(buf, 2, m, f) != m)
                st = sd_fail(SD_ERR_IO, "cannot write %s (disk full?)", path);
            done += m;
        }
    }
    if (f && fclose(f) && st == SD_OK)
        st = sd_fail(SD_ERR_IO, "cannot write %s", path);
    printf("bench_gen_arch: %s: %d tensors, %.1f MB\n", path, n, (double)off / 1e6);
    free(buf);
    free(h);
    free(ts);
    return st;
}

static sd_status copy_file(const char *from, const char *to)
{
    char *data;
    size_t len;
    SD_TRY(sd_read_file(from, (size_t)64 << 20, &data, &len));
    sd_status st = sd_write_file(to, data, len);
    free(data);
    return st;
}

/* One folder: config + weights (when tensors.txt is there), other files copied, sub-folders recursed. */
static sd_status gen_dir(const char *src, const char *dst, const char *comp, uint64_t seed)
{
    SD_TRY(sd_make_dir(dst));
    DIR *d = opendir(src);
    if (!d)
        return sd_fail(SD_ERR_IO, "cannot open the architecture folder %s: %s", src, strerror(errno));
    sd_status st = SD_OK;
    struct dirent *e;
    while (st == SD_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *from = sd_path_join(src, e->d_name), *to = NULL;
        struct stat sb;
        if (!from || stat(from, &sb)) {
            st = sd_fail(SD_ERR_IO, "cannot stat %s", from ? from : e->d_name);
        } else if (S_ISDIR(sb.st_mode)) {
            to = sd_path_join(dst, e->d_name);
            st = to ? gen_dir(from, to, e->d_name, seed) : SD_ERR_OUT_OF_MEMORY;
        } else if (!strcmp(e->d_name, "tensors.txt")) {
            to = sd_path_join(dst, comp && !strncmp(comp, "text_encoder", 12) ? "model.safetensors"
                                                                         : "diffusion_pytorch_model.safetensors");
            st = to ? write_weights(from, to, hash_name(comp ? comp : "", seed)) : SD_ERR_OUT_OF_MEMORY;
        } else {
            to = sd_path_join(dst, e->d_name);
            st = to ? copy_file(from, to) : SD_ERR_OUT_OF_MEMORY;
        }
        free(from);
        free(to);
    }
    closedir(d);
    return st;
}

int main(int argc, char **argv)
{
    const char *arch = NULL, *out = NULL, *tok = NULL;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tok = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && !arch)
            arch = argv[i];
        else if (argv[i][0] != '-' && !out)
            out = argv[i];
        else
            arch = out = NULL, i = argc;
    }
    if (!arch || !out) {
        fprintf(stderr, "usage: bench_gen_arch ARCH_DIR OUT_DIR [--tokenizer DIR] [--seed N]\n"
                        "  e.g. bench_gen_arch bench/arch/sd-turbo /tmp/sd-turbo-random "
                        "--tokenizer tests/data/models/tiny-sd2/tokenizer\n");
        return 2;
    }
    sd_status st = gen_dir(arch, out, NULL, seed);
    if (st == SD_OK && tok) {
        char *td = sd_path_join(out, "tokenizer");
        st = td ? gen_dir(tok, td, "tokenizer", seed) : SD_ERR_OUT_OF_MEMORY;
        free(td);
    }
    if (st != SD_OK) {
        fprintf(stderr, "bench_gen_arch: %s\n", sd_last_error());
        return 1;
    }
    printf("bench_gen_arch: wrote %s (random weights: outputs are noise)\n", out);
    return 0;
}
