#include "check/check.h"
#include "backend/ops.h"

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sd_case_path(sd_case *c, const char *key)
{
    const char *rel;
    if (sd_config_str(&c->manifest, key, NULL, &rel) != SD_OK || !rel) {
        sd_fail(SD_ERR_FORMAT, "%s: manifest has no string '%s'", c->dir, key);
        return NULL;
    }
    return sd_path_join(c->root, rel);
}

static const sd_st_tensor *lookup(sd_case *c, sd_safetensors *st, const char *file, const char *name)
{
    const sd_st_tensor *t = st ? sd_st_find(st, name) : NULL;
    if (!t)
        sd_fail(SD_ERR_NOT_FOUND, "%s: %s has no tensor '%s'", c->dir, file, name);
    return t;
}

const sd_st_tensor *sd_case_input(sd_case *c, const char *name)
{
    return lookup(c, c->inputs, "inputs.safetensors", name);
}

const sd_st_tensor *sd_case_expected(sd_case *c, const char *name)
{
    return lookup(c, c->expected, "expected.safetensors", name);
}

float *sd_case_input_f32(sd_case *c, const char *name, size_t *n)
{
    const sd_st_tensor *t = sd_case_input(c, name);
    if (!t)
        return NULL;
    float *f = sd_malloc(t->numel * sizeof(float) + 1);
    if (f)
        sd_st_to_f32(t, f);
    if (n)
        *n = t->numel;
    return f;
}

sd_status sd_case_input_nd(sd_case *c, const char *name, int ndim, float **out, int64_t *shape)
{
    const sd_st_tensor *t = sd_case_input(c, name);
    if (!t)
        return SD_ERR_NOT_FOUND;
    if (t->ndim != ndim)
        return sd_fail(SD_ERR_FORMAT, "%s: input '%s' must have %d dimensions, has %d", c->name, name, ndim, t->ndim);
    for (int i = 0; i < ndim; i++)
        shape[i] = t->shape[i];
    *out = sd_case_input_f32(c, name, NULL);
    return *out ? SD_OK : SD_ERR_OUT_OF_MEMORY;
}

double sd_case_tolerance(sd_case *c, const char *name)
{
    sd_config tols, one;
    double tol = -1;
    if (sd_config_sub(&c->manifest, "tolerances", &tols) == SD_OK && sd_config_sub(&tols, name, &one) == SD_OK)
        sd_config_float(&one, "recommended_max_abs_err", -1, &tol);
    return tol;
}

void sd_case_fail(sd_case *c, const char *what)
{
    c->n_checked++;
    c->n_failed++;
    printf("  %-44s FAIL  %s\n", "-", what);
}

static double g_f16_rel = 1e-2;

void sd_check_set_f16_rel(double rel) { g_f16_rel = rel > 0 ? rel : 1e-2; }

/* precision bf16 (CPU): bf16 inputs to every GEMM and attention product (8-bit significands, unit
 * roundoff 2^-9) through whole models; the bound relative to the output's largest magnitude, measured on
 * the fixture cases (BENCHMARKS.md, "bf16 on AMX") with a margin */
static const double g_bf16_rel = 5e-2;

/* precision int8 (CPU, experimental): W8A8 linears and convolutions (weights per output channel,
 * activations per token row / per output pixel's receptive field, 7-bit magnitudes: unit roundoff
 * 2^-8 of each row's largest value) on top of bf16 attention; the bound relative to the output's
 * largest magnitude, measured on the fixture cases (docs/precision.md) with a margin */
static const double g_int8_rel = 1.5e-1;

double sd_check_precision_rel(const sd_backend *be)
{
    return !be ? 0.0 : be->int8 ? g_int8_rel : be->bf16 ? g_bf16_rel : 0.0;
}

static int g_cuda_device;

void sd_check_set_cuda_device(int device) { g_cuda_device = device; }

void sd_case_model_params(const sd_case *c, sd_model_params *mp)
{
    sd_model_default_params(mp);
    bool cuda = c->be && !strcmp(c->be->ops->name, "cuda");
    mp->backend = cuda ? SD_BACKEND_CUDA : SD_BACKEND_CPU;
    mp->cuda_device = g_cuda_device;
    mp->n_threads = c->be && !cuda ? c->be->n_threads : 0;
    mp->precision = !c->be ? SD_PRECISION_FP32 : c->be->int8 ? SD_PRECISION_INT8 : c->be->bf16 ? SD_PRECISION_BF16
                                                                                               : SD_PRECISION_FP32;
}

void sd_case_compare(sd_case *c, const char *name, const float *got, size_t n)
{
    c->n_checked++;
    const sd_st_tensor *t = sd_case_expected(c, name);
    if (!t || t->numel != n) {
        c->n_failed++;
        if (t)
            printf("  %-44s FAIL  size %zu, expected %zu elements\n", name, n, t->numel);
        else
            printf("  %-44s FAIL  %s\n", name, sd_last_error());
        return;
    }
    double tol = sd_case_tolerance(c, name);
    double max_abs = 0, max_ref = 0;
    bool nan = false;
    for (size_t i = 0; i < n; i++) {
        double e = sd_st_get(t, i);
        double d = fabs((double)got[i] - e);
        if (isnan(got[i]) != isnan(e) || isinf(got[i]) != isinf(e))
            nan = true;
        else if (!isnan(d))
            max_abs = fmax(max_abs, d);
        max_ref = fmax(max_ref, fabs(e));
    }
    if (tol < 0) /* no tolerance given: 1e-4 relative to the largest magnitude */
        tol = 1e-4 * fmax(1.0, max_ref);
    if (c->be && c->be->act_dtype == SD_F16) /* fp16 activations: the fp16 bound */
        tol = fmax(tol, g_f16_rel * fmax(1.0, max_ref));
    if (sd_check_precision_rel(c->be) > 0) /* precision bf16 or int8: its bound */
        tol = fmax(tol, sd_check_precision_rel(c->be) * fmax(1.0, max_ref));
    bool pass = !nan && max_abs <= tol;
    double ratio = max_abs / (tol > 0 ? tol : 1e-30);
    if (ratio > c->worst_ratio)
        c->worst_ratio = ratio;
    if (!pass)
        c->n_failed++;
    if (!pass || c->verbose)
        printf("  %-44s %s  max_abs %.3e  max_rel %.3e  tol %.3e%s\n", name, pass ? "PASS" : "FAIL", max_abs,
               max_abs / fmax(max_ref, 1e-30), tol, nan ? "  (NaN/Inf mismatch)" : "");
}

void sd_case_hook(void *user, const char *name, sd_tensor t)
{
    sd_case *c = user;
    char key[300];
    snprintf(key, sizeof key, "act.%s", name);
    if (!c->expected || !sd_st_find(c->expected, key))
        return;
    size_t n = (size_t)sd_numel(&t);
    float *host = sd_malloc(n * sizeof(float) + 1);
    if (!host)
        return;
    sd_ctx tmp = {.be = c->be};
    if (sd_tensor_to_f32(&tmp, &t, host) == SD_OK)
        sd_case_compare(c, key, host, n);
    free(host);
}

/* ------------------------------------------------------------ pending cases */

#define PENDING_MAX 256
static struct {
    bool loaded;
    int n;
    char name[PENDING_MAX][128];
    char reason[PENDING_MAX][160];
} g_pending;

sd_status sd_check_set_pending_file(const char *path)
{
    g_pending.loaded = true;
    g_pending.n = 0;
    if (!path || !*path)
        return SD_OK;
    FILE *f = fopen(path, "r");
    if (!f)
        return sd_fail(SD_ERR_IO, "pending-case list %s: cannot read it", path);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || !*p)
            continue;
        if (g_pending.n == PENDING_MAX) {
            fclose(f);
            return sd_fail(SD_ERR_FORMAT, "pending-case list %s: more than %d cases", path, PENDING_MAX);
        }
        size_t len = strcspn(p, " \t\n#");
        if (len >= sizeof g_pending.name[0]) {
            fclose(f);
            return sd_fail(SD_ERR_FORMAT, "pending-case list %s: case name too long: %.40s...", path, p);
        }
        memcpy(g_pending.name[g_pending.n], p, len);
        g_pending.name[g_pending.n][len] = 0;
        p += len;
        p += strspn(p, " \t#");
        snprintf(g_pending.reason[g_pending.n], sizeof g_pending.reason[0], "%.*s", (int)strcspn(p, "\n"), p);
        g_pending.n++;
    }
    fclose(f);
    return SD_OK;
}

bool sd_check_is_pending(const char *case_dir, const char **reason)
{
    if (!g_pending.loaded && sd_check_set_pending_file(getenv("SD_CHECK_PENDING")) != SD_OK)
        fprintf(stderr, "warning: SD_CHECK_PENDING: %s\n", sd_last_error());
    size_t len = strlen(case_dir);
    while (len > 1 && case_dir[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && case_dir[start - 1] != '/')
        start--;
    for (int i = 0; i < g_pending.n; i++)
        if (strlen(g_pending.name[i]) == len - start && !strncmp(g_pending.name[i], case_dir + start, len - start)) {
            if (reason)
                *reason = g_pending.reason[i];
            return true;
        }
    return false;
}

static sd_case_fn pick(sd_case *c, const char **kind)
{
    const sd_config *m = &c->manifest;
    if (sd_config_has(m, "scheduler_class"))
        return *kind = "scheduler", sd_check_sched;
    if (sd_config_has(m, "stream_constructor"))
        return *kind = "stream", sd_check_stream;
    if (sd_config_has(m, "t_index_list") && sd_config_has(m, "scheduler_config"))
        return *kind = "lcm-stream-coefficients", sd_check_sched;
    if (sd_config_has(m, "pipeline"))
        return *kind = "pipeline", sd_check_pipe;
    if (sd_config_has(m, "prompts_file"))
        return *kind = "tokenizer", sd_check_tokenizer;
    if (sd_config_has(m, "embedding_dim") && !sd_config_has(m, "model_dir"))
        return *kind = "guidance-embedding", sd_check_guidance_embedding;
    if (!sd_config_has(m, "model_dir"))
        return NULL;
    const char *cls = NULL;
    sd_config mc = {0};
    char *dir = sd_case_path(c, "model_dir");
    char *cfg = dir ? sd_path_join(dir, "config.json") : NULL;
    sd_case_fn fn = NULL;
    if (cfg && sd_config_load(cfg, &mc) == SD_OK) {
        sd_config_str(&mc, "_class_name", NULL, &cls);
        const char *mcls = NULL;
        sd_config_str(m, "model_class", NULL, &mcls);
        if (mcls)
            cls = mcls;
        if (cls && !strcmp(cls, "UNet2DConditionModel"))
            fn = sd_check_unet, *kind = "unet";
        else if (cls && !strncmp(cls, "CLIPTextModel", 13))
            fn = sd_check_clip, *kind = "clip-text";
        else if (cls && (!strcmp(cls, "AutoencoderKL") || !strcmp(cls, "AutoencoderTiny")))
            fn = sd_check_vae, *kind = "vae";
        else if (cls && !strcmp(cls, "ControlNetModel"))
            fn = sd_check_controlnet, *kind = "controlnet";
    }
    sd_config_free(&mc);
    free(cfg);
    free(dir);
    return fn;
}

sd_status sd_check_case(const char *case_dir, const char *fixtures_root, sd_backend *be, bool verbose,
                        int *n_checked, int *n_failed)
{
    sd_case c = {.dir = case_dir, .be = be, .verbose = verbose};
    *n_checked = *n_failed = 0;
    char *mpath = sd_path_join(case_dir, "manifest.json");
    if (!mpath)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = sd_config_load(mpath, &c.manifest);
    free(mpath);
    if (s != SD_OK) {
        printf("%s: ERROR %s\n", case_dir, sd_last_error());
        *n_failed = 1;
        return s;
    }
    if (fixtures_root) {
        c.root = sd_strdup(fixtures_root);
    } else { /* <root>/cases/<name> */
        char *tmp = sd_strdup(case_dir);
        char *parent = tmp ? sd_strdup(dirname(tmp)) : NULL;
        c.root = parent ? sd_strdup(dirname(parent)) : NULL;
        free(parent);
        free(tmp);
    }
    c.name = case_dir;
    sd_config_str(&c.manifest, "name", case_dir, &c.name);
    for (int i = 0; i < 2; i++) {
        char *p = sd_path_join(case_dir, i ? "expected.safetensors" : "inputs.safetensors");
        if (p && sd_file_exists(p)) {
            s = sd_safetensors_open(p, i ? &c.expected : &c.inputs);
            if (s != SD_OK)
                printf("%s: ERROR %s\n", case_dir, sd_last_error());
        }
        free(p);
    }
    const char *kind = "?";
    sd_case_fn fn = s == SD_OK ? pick(&c, &kind) : NULL;
    double t0 = sd_time_now();
    if (s != SD_OK) {
        c.n_failed = 1;
    } else if (!fn) {
        printf("%s: ERROR cannot tell the kind of this case from its manifest\n", c.name);
        c.n_failed = 1;
        s = SD_ERR_UNSUPPORTED;
    } else {
        printf("%s (%s)\n", c.name, kind);
        fflush(stdout);
        s = fn(&c);
        if (s != SD_OK) {
            printf("  ERROR %s\n", sd_last_error());
            c.n_failed++;
        }
    }
    if (fn)
        printf("%s: %s  (%d outputs, %d failed, worst err/tol %.3f, %.2f s)\n", c.name,
               c.n_failed ? "FAIL" : "PASS", c.n_checked, c.n_failed, c.worst_ratio, sd_time_now() - t0);
    fflush(stdout);
    *n_checked = c.n_checked;
    *n_failed = c.n_failed;
    if (s == SD_OK && c.n_failed) /* before the manifest (which holds c.name) is freed */
        s = sd_fail(SD_ERR_INTERNAL, "%s: %d outputs out of tolerance", c.name, c.n_failed);
    const char *why = NULL;
    if (sd_check_is_pending(case_dir, &why)) {
        if (s != SD_OK || c.n_failed) { /* the expected outcome for a feature not built yet */
            printf("%s: PENDING  (listed as not supported yet: %s)\n", c.name, why && *why ? why : "no reason given");
            *n_checked = c.n_checked > 0 ? c.n_checked : 1;
            *n_failed = 0;
            s = SD_OK;
        } else {
            printf("%s: FAIL  (listed as pending but passes: remove it from the pending-case list)\n", c.name);
            *n_failed = 1;
            s = sd_fail(SD_ERR_INTERNAL, "%s passes but is listed as pending: remove it from the pending-case list",
                        c.name);
        }
        fflush(stdout);
    }
    sd_safetensors_close(c.inputs);
    sd_safetensors_close(c.expected);
    sd_config_free(&c.manifest);
    free(c.root);
    return s;
}

void sd_case_compare_tensor(sd_case *c, const char *name, sd_tensor t)
{
    size_t n = (size_t)sd_numel(&t);
    float *host = sd_malloc(n * sizeof(float) + 1);
    if (!host) {
        sd_case_fail(c, "out of memory");
        return;
    }
    sd_ctx tmp = {.be = c->be};
    if (sd_tensor_to_f32(&tmp, &t, host) == SD_OK)
        sd_case_compare(c, name, host, n);
    else
        sd_case_fail(c, sd_last_error());
    free(host);
}

void sd_case_check_peak(sd_case *c, size_t peak, size_t planned)
{
    if (peak == planned)
        return;
    char msg[160];
    snprintf(msg, sizeof msg, "arena peak %zu bytes differs from the planned %zu", peak, planned);
    sd_case_fail(c, msg);
}

void sd_case_check_produced(sd_case *c, const char *const *done, int n_done, const char *runner)
{
    for (size_t i = 0; c->expected && i < c->expected->n_tensors; i++) {
        const char *name = c->expected->tensors[i].name;
        bool seen = false;
        for (int k = 0; k < n_done && !seen; k++)
            seen = !strcmp(done[k], name);
        if (!seen) {
            char msg[300];
            snprintf(msg, sizeof msg, "expected tensor '%s' is not produced by the %s runner", name, runner);
            sd_case_fail(c, msg);
        }
    }
}
