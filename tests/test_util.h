/* Helpers shared by the model tests: a temporary folder, reference-case
 * runners (fixture and project cases) and tensor downloads. Every test is its
 * own executable, so these static functions (and their static buffers) are
 * per test. Include after test.h. */
#ifndef SD_TEST_UTIL_H
#define SD_TEST_UTIL_H

#include "test.h"

#include "backend/ops.h"
#include "check/check.h"
#include "core/core.h"
#include "models/weights.h"
#include "pipe/model.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

/* w prepared as the model loader prepares it (backend weight_layout / weight_prepare: e.g. the CPU's bf16
 * B tiles) in ctx's arena; w itself (row-major) where the backend keeps it so */
static inline sd_tensor test_prepared(sd_ctx *ctx, sd_backend *be, sd_tensor w, sd_weight_use use)
{
    (void)be; /* ctx's backend */
    return sd_prepare_weight(ctx, w, use);
}

/* the bytes of a model weight's memory: its prepared layout's (weight_layout; the int8 tiles are fewer than
 * sd_nbytes of the logical BF16 tensor) or sd_nbytes for a row-major one */
static inline size_t test_weight_bytes(sd_backend *be, const sd_tensor *t)
{
    size_t bytes = sd_nbytes(t);
    if (t->layout == SD_LAYOUT_ROWMAJOR)
        return bytes;
    sd_tensor plain = *t;
    plain.layout = SD_LAYOUT_ROWMAJOR;
    sd_layout lay = be->ops->weight_layout(be, &plain, t->ndim == 4 ? SD_WEIGHT_CONV : SD_WEIGHT_LINEAR, &bytes);
    return lay == (sd_layout)t->layout ? bytes : 0;
}

/* Creates $TMPDIR/<name>_XXXXXX (/tmp when TMPDIR is unset) in buf; false on failure. */
static inline bool test_make_tmpdir(char *buf, size_t cap, const char *name)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, cap, "%s/%s_XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    return mkdtemp(buf) != NULL;
}

/* dir/name in one of four rotating static buffers. */
static inline char *test_tmp_path(const char *dir, const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* Removes path: a file, or a folder and everything in it. */
static inline void test_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            for (struct dirent *e; (e = readdir(d)) != NULL;) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char *a = sd_path_join(path, e->d_name);
                if (a)
                    test_rm_tree(a);
                free(a);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Runs one reference case folder; the test fails unless it checked something and all of it passed. */
static inline void test_run_case_dir(sd_backend *be, const char *case_dir, const char *root)
{
    int n = 0, f = 0;
    sd_status s = sd_check_case(case_dir, root, be, false, &n, &f);
    CHECK_MSG(s == SD_OK && f == 0 && n > 0, "%s: %s (%d checked, %d failed) %s", case_dir, sd_status_name(s), n, f,
              sd_last_error());
}

/* Runs the named cases under $SD_FIXTURES/cases that exist; skips when none do
 * (`pattern` names them in the skip message, e.g. "vae_*"). */
static inline void test_fixture_cases(sd_backend *be, const char *const *names, size_t n, const char *pattern)
{
    const char *fx = getenv("SD_FIXTURES");
    if (!fx || !*fx)
        SKIP("SD_FIXTURES is not set");
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/cases/%s", fx, names[i]);
        if (!sd_dir_exists(dir))
            continue;
        test_run_case_dir(be, dir, NULL);
        ran++;
    }
    if (!ran)
        SKIP("no %s cases under %s/cases", pattern, fx);
}

/* Runs every case under $SD_TEST_DATA/cases whose name contains one of `needles`
 * (a NULL-terminated list); fails when there are none (committed data; `pattern` names them). */
static inline void test_project_cases(sd_backend *be, const char *const *needles, const char *pattern)
{
    const char *td = getenv("SD_TEST_DATA");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/cases", td ? td : "");
    DIR *dp = td && *td ? opendir(dir) : NULL;
    if (!dp)
        FAIL("no $SD_TEST_DATA/cases folder (committed test data)");
    int ran = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        bool match = false;
        for (size_t i = 0; needles[i] && !match; i++)
            match = strstr(e->d_name, needles[i]) != NULL;
        if (!match)
            continue;
        char cd[1200];
        snprintf(cd, sizeof cd, "%s/%s", dir, e->d_name);
        test_run_case_dir(be, cd, td);
        ran++;
    }
    closedir(dp);
    if (!ran)
        FAIL("no %s cases under %s (committed test data)", pattern, dir);
}

/* host floats as a new tensor of ctx in dtype dt (nothing uploaded when ctx has failed) */
static inline sd_tensor test_upload(sd_ctx *ctx, sd_dtype dt, int nd, const int64_t *ne, const float *host)
{
    sd_tensor t = sd_new(ctx, dt, nd, ne);
    if (sd_ok(ctx))
        sd_tensor_from_f32(ctx, &t, host);
    return t;
}

/* max |t - ref| / max |ref| over n values (a NaN counts as infinite); 1 when the op failed (ctx not ok) or t
 * does not have n values */
static inline double test_rel_err(sd_ctx *ctx, sd_tensor t, const double *ref, size_t n)
{
    if (!sd_ok(ctx) || (size_t)sd_numel(&t) != n) {
        fprintf(stderr, "  op failed: %s\n", sd_last_error());
        return 1.0;
    }
    float *y = malloc(n * sizeof(float));
    sd_tensor_to_f32(ctx, &t, y);
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]);
        if (!(d <= md))
            md = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > mr)
            mr = fabs(ref[i]);
    }
    free(y);
    return md / (mr > 0 ? mr : 1.0);
}

/* A tensor as a malloc'd float32 array (caller frees). */
static inline float *test_download(sd_ctx *ctx, sd_tensor t)
{
    float *h = malloc((size_t)sd_numel(&t) * sizeof(float) + 1);
    CHECK_STATUS(sd_tensor_to_f32(ctx, &t, h), SD_OK);
    return h;
}

/* Opens one safetensors file as finalized F32 weights labelled `label`, failing the test on any error. */
static inline void test_weights_open(sd_weights *w, sd_backend *be, const char *label, const char *path)
{
    sd_weights_init(w, be, label, SD_F32);
    CHECK_STATUS(sd_weights_add_file(w, path, NULL, false), SD_OK);
    CHECK_STATUS(sd_weights_finalize(w), SD_OK);
}

/* $SD_TEST_DATA/<rel> (ctest sets SD_TEST_DATA to tests/data) into buf */
static inline const char *test_data_file(char *buf, size_t cap, const char *rel)
{
    const char *d = getenv("SD_TEST_DATA");
    snprintf(buf, cap, "%s/%s", d ? d : "tests/data", rel);
    return buf;
}

/* A model from $SD_TEST_DATA/<rel> on 2 CPU threads; NULL (and the error said) when it does not load. */
static inline sd_model *test_load_model(const char *rel)
{
    char p[1200];
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    sd_model *m = NULL;
    if (sd_model_load(test_data_file(p, sizeof p, rel), &mp, &m) != SD_OK)
        fprintf(stderr, "  load %s: %s\n", rel, sd_last_error());
    return m;
}

typedef struct test_find_ctx {
    const char *want;
    sd_tensor *found;
} test_find_ctx;

static inline sd_status test_find_visit(void *user, const char *name, sd_tensor *t)
{
    test_find_ctx *f = user;
    if (!strcmp(name, f->want))
        f->found = t;
    return SD_OK;
}

/* A model's loaded weight handle by component ("unet", "text_encoder", "text_encoder_2") and state-dict name. */
static inline sd_tensor *test_model_weight(sd_model *m, const char *comp, const char *name)
{
    test_find_ctx f = {name, NULL};
    if (!strcmp(comp, "unet"))
        sd_unet_for_each_weight(m->unet, test_find_visit, &f);
    else if (!strcmp(comp, "text_encoder") || (!strcmp(comp, "text_encoder_2") && m->clip2))
        sd_clip_for_each_weight(!strcmp(comp, "text_encoder") ? m->clip : m->clip2, test_find_visit, &f);
    return f.found;
}

/* The double reference of a convolution: y [N,O,HO,WO] = conv(x [N,C,H,W], w [O,C,KH,KW]) + b (NULL: none), stride
 * s, pads p (top, left, bottom, right); xf (NULL: none) maps each input value as the kernel sees it (e.g. rounded
 * to bf16). */
static inline void test_conv_ref(double *y, const float *x, const float *w, const float *b, int64_t N, int64_t C,
                                 int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW, int s, const int p[4],
                                 int64_t HO, int64_t WO, double (*xf)(float))
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oh = 0; oh < HO; oh++)
                for (int64_t ow = 0; ow < WO; ow++) {
                    double acc = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t ih = oh * s - p[0] + kh;
                            if (ih < 0 || ih >= H)
                                continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t iw = ow * s - p[1] + kw;
                                if (iw < 0 || iw >= W)
                                    continue;
                                float v = x[((n * C + c) * H + ih) * W + iw];
                                acc += (xf ? xf(v) : (double)v) * w[((o * C + c) * KH + kh) * KW + kw];
                            }
                        }
                    y[((n * O + o) * HO + oh) * WO + ow] = acc;
                }
}

#endif
