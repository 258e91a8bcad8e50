/* Schedulers against reference cases and small self-contained reference data.
 *
 * - case folders: $SD_FIXTURES/cases/sched_* and lcm_guidance_embedding (diffusers
 *   0.26.3) and $SD_TEST_DATA/cases/own_sched_* (diffusers 0.42), replayed by the
 *   conformance runner (src/check/check_sched.c, `streamdiff check`);
 * - tests/data/sched/ (made by tools/gen_sched_cases.py with diffusers 0.26.3):
 *   schedules of many configs and short rollouts of options the cases do not cover. */
#include "test.h"

#include "check/check.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "sched/rng.h"
#include "sched/scheduler.h"

#include <dirent.h>

/* ------------------------------------------------------------------ comparison helpers */

typedef struct {
    const char *name;
    int n_checked, n_failed;
    double worst_ratio;
    char worst_what[300];
} case_ctx;

static void note_ratio(case_ctx *cc, const char *what, double ratio)
{
    if (ratio > cc->worst_ratio || isnan(ratio)) {
        cc->worst_ratio = isnan(ratio) ? INFINITY : ratio;
        snprintf(cc->worst_what, sizeof cc->worst_what, "%s", what);
    }
}

/* max |a-b| over n; NaN anywhere -> INFINITY */
static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d))
            return INFINITY;
        if (d > m)
            m = d;
    }
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

static float *tensor_f32(const sd_safetensors *st, const char *name, size_t *n)
{
    const sd_st_tensor *t = st ? sd_st_find(st, name) : NULL;
    if (!t)
        return NULL;
    float *v = malloc((t->numel ? t->numel : 1) * sizeof(float));
    if (!v)
        return NULL;
    if (sd_st_to_f32(t, v) != SD_OK) {
        free(v);
        return NULL;
    }
    if (n)
        *n = t->numel;
    return v;
}

static void report(case_ctx *cc)
{
    printf("  %s %-44s checked %2d, worst err/tol %.3f (%s)\n", cc->n_failed ? "FAIL" : "PASS", cc->name,
           cc->n_checked, cc->worst_ratio, cc->worst_what[0] ? cc->worst_what : "-");
}

/* ------------------------------------------------------------------ reference case folders */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool wanted(const char *name, const char *const *prefixes)
{
    for (; *prefixes; prefixes++)
        if (!strncmp(name, *prefixes, strlen(*prefixes)))
            return true;
    return false;
}

/* Runs every case folder of `cases_dir` whose name starts with one of `prefixes`
 * through sd_check_case; returns the number of cases run (-1: no such folder). */
static int run_cases(const char *cases_dir, const char *const *prefixes)
{
    DIR *d = opendir(cases_dir);
    if (!d)
        return -1;
    char *names[512];
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nn < 512)
        if (de->d_name[0] != '.' && wanted(de->d_name, prefixes))
            names[nn++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], cmp_str);
    sd_backend *be = NULL;
    CHECK_STATUS(sd_backend_cpu_create(1, &be), SD_OK);
    int failed = 0;
    for (int k = 0; k < nn; k++) {
        char *dir = sd_path_join(cases_dir, names[k]);
        int n_checked = 0, n_failed = 0;
        sd_status s = be && dir ? sd_check_case(dir, NULL, be, false, &n_checked, &n_failed) : SD_ERR_OUT_OF_MEMORY;
        CHECK_MSG(s == SD_OK && n_failed == 0 && n_checked > 0, "%s: %s", names[k], sd_last_error());
        failed += s != SD_OK || n_failed;
        free(dir);
        free(names[k]);
    }
    printf("  %s: %d cases, %d failed\n", cases_dir, nn, failed);
    if (be)
        sd_backend_destroy(be);
    return nn;
}

TEST(fixture_cases)
{
    const char *root = getenv("SD_FIXTURES");
    if (!root || !*root)
        SKIP("SD_FIXTURES is not set");
    char *cases = sd_path_join(root, "cases");
    static const char *const prefixes[] = {"sched_", "lcm_guidance_embedding", NULL};
    int n = cases ? run_cases(cases, prefixes) : -1;
    free(cases);
    if (n < 0)
        SKIP("no fixtures at %s", root);
    CHECK(n > 0);
}

TEST(own_cases)
{
    const char *data = getenv("SD_TEST_DATA");
    if (!data || !*data)
        FAIL("SD_TEST_DATA is not set (ctest sets it to tests/data)");
    char *cases = sd_path_join(data, "cases");
    static const char *const prefixes[] = {"own_sched_", NULL};
    int n = cases ? run_cases(cases, prefixes) : -1;
    free(cases);
    CHECK_MSG(n > 0, "no own_sched_* cases in %s/cases", data);
}

/* ------------------------------------------------------------------ self-contained tests */

static sd_scheduler *make(sd_sched_kind kind, void (*tweak)(sd_sched_config *))
{
    sd_sched_config c;
    sd_sched_config_default(&c, kind);
    if (tweak)
        tweak(&c);
    sd_scheduler *s = NULL;
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_OK);
    return s;
}

static void sd15(sd_sched_config *c)
{
    c->beta_start = 0.00085;
    c->beta_end = 0.012;
    c->beta_schedule = SD_BETA_SCALED_LINEAR;
    c->set_alpha_to_one = false;
    c->steps_offset = 1;
}

static void turbo(sd_sched_config *c)
{
    sd15(c);
    c->timestep_spacing = SD_SPACING_TRAILING;
}

TEST(known_schedules)
{
    sd_scheduler *s = make(SD_SCHED_LCM, sd15);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 50, 1.0, NULL, 0), SD_OK);
    CHECK(sd_scheduler_num_timesteps(s) == 50);
    for (int i = 0; i < 50; i++)
        CHECK_MSG(sd_scheduler_timestep(s, i) == 999 - 20 * i, "LCM t[%d] = %g", i, sd_scheduler_timestep(s, i));
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    const double want4[] = {999, 759, 499, 259};
    for (int i = 0; i < 4; i++)
        CHECK(sd_scheduler_timestep(s, i) == want4[i]);
    /* img2img strength 0.5: origin 19..499 (25 entries), 4 steps */
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 0.5, NULL, 0), SD_OK);
    const double want_s[] = {499, 379, 259, 139};
    for (int i = 0; i < 4; i++)
        CHECK(sd_scheduler_timestep(s, i) == want_s[i]);
    /* custom timesteps with strength: the first n - int(n*strength) are dropped, and every
     * remaining step draws noise (diffusers: step_index != num_inference_steps - 1) */
    const int64_t cust[] = {999, 679, 359, 99};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 0.5, cust, 4), SD_OK);
    CHECK(sd_scheduler_num_timesteps(s) == 2 && sd_scheduler_timestep(s, 0) == 359);
    CHECK(sd_scheduler_step_needs_noise(s, 1) == 1);
    sd_scheduler_free(s);

    s = make(SD_SCHED_EULER, turbo);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 1, 1.0, NULL, 0), SD_OK);
    CHECK(sd_scheduler_num_timesteps(s) == 1 && sd_scheduler_timestep(s, 0) == 999);
    int ns;
    const float *sig = sd_scheduler_sigmas(s, &ns);
    CHECK(ns == 2 && fabsf(sig[0] - 14.6146f) < 1e-3f && sig[1] == 0.0f);
    CHECK(fabs(sd_scheduler_init_noise_sigma(s) - sig[0]) == 0);
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    const double want_t[] = {999, 749, 499, 249};
    for (int i = 0; i < 4; i++)
        CHECK(sd_scheduler_timestep(s, i) == want_t[i]);
    CHECK(sd_scheduler_step_needs_noise(s, 3) == 1);
    sd_scheduler_free(s);

    /* DPM default spacing linspace 4 steps: round(linspace(0, 999, 5))[::-1][:-1] */
    s = make(SD_SCHED_DPMPP_2M, sd15);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    const double want_d[] = {999, 749, 500, 250};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(sd_scheduler_timestep(s, i) == want_d[i], "dpm t[%d] = %g", i, sd_scheduler_timestep(s, i));
    sd_scheduler_free(s);
}

/* tests/data/sched/schedules.json: timesteps (exact; Euler float ones 1e-6 rel) and sigmas (rel 1e-6) of many
 * configs and step counts, from diffusers 0.26.3 (tools/gen_sched_cases.py). */
static bool check_run(const char *label, sd_sched_kind kind, sd_scheduler *s, const cJSON *run, double strength,
                      double *worst_sig)
{
    const cJSON *jsteps = cJSON_GetObjectItemCaseSensitive(run, "steps");
    int steps = cJSON_IsNumber(jsteps) ? jsteps->valueint : 0;
    if (sd_scheduler_set_timesteps(s, steps, strength, NULL, 0) != SD_OK) {
        printf("  %s steps=%d: set_timesteps failed: %s\n", label, steps, sd_last_error());
        return false;
    }
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(run, "timesteps");
    int nt = 0;
    const double *mine = sd_scheduler_timesteps(s, &nt);
    if (cJSON_GetArraySize(ts) != nt) {
        printf("  %s steps=%d: %d timesteps, reference %d\n", label, steps, nt, cJSON_GetArraySize(ts));
        return false;
    }
    bool is_float = kind == SD_SCHED_EULER || kind == SD_SCHED_EULER_A;
    int k = 0;
    for (const cJSON *v = ts->child; v; v = v->next, k++) {
        /* integer schedules exact; Euler's float timesteps (Karras / continuous) within 1e-6
         * relative + 1e-5: numpy float64 log / promotion rules move them by an ulp of the
         * float32 interpolation weight */
        bool bad = is_float ? fabs(mine[k] - v->valuedouble) > 1e-6 * fabs(v->valuedouble) + 1e-5
                            : mine[k] != v->valuedouble;
        if (bad) {
            printf("  %s steps=%d: timestep[%d] = %.9g, reference %.9g\n", label, steps, k, mine[k], v->valuedouble);
            return false;
        }
    }
    const cJSON *sg = cJSON_GetObjectItemCaseSensitive(run, "sigmas");
    if (sg) {
        int ns = 0;
        const float *ms = sd_scheduler_sigmas(s, &ns);
        if (cJSON_GetArraySize(sg) != ns) {
            printf("  %s steps=%d: %d sigmas, reference %d\n", label, steps, ns, cJSON_GetArraySize(sg));
            return false;
        }
        k = 0;
        for (const cJSON *v = sg->child; v; v = v->next, k++) {
            double r = fabs(ms[k] - v->valuedouble) / fmax(1e-3, fabs(v->valuedouble));
            if (r > *worst_sig)
                *worst_sig = r;
            if (r > 1e-6) {
                printf("  %s steps=%d: sigma[%d] = %.9g, reference %.9g\n", label, steps, k, ms[k], v->valuedouble);
                return false;
            }
        }
    }
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(run, "init_noise_sigma");
    if (cJSON_IsNumber(ins) && fabs(sd_scheduler_init_noise_sigma(s) - ins->valuedouble) >
                                   1e-6 * fmax(1, ins->valuedouble)) {
        printf("  %s steps=%d: init_noise_sigma %.9g, reference %.9g\n", label, steps,
               sd_scheduler_init_noise_sigma(s), ins->valuedouble);
        return false;
    }
    return true;
}

TEST(reference_schedules)
{
    const char *data = getenv("SD_TEST_DATA");
    if (!data)
        FAIL("SD_TEST_DATA is not set (ctest sets it to tests/data)");
    char *p = sd_path_join(data, "sched/schedules.json");
    sd_config j;
    sd_status st = sd_config_load(p, &j);
    free(p);
    CHECK_STATUS(st, SD_OK);
    if (st != SD_OK)
        return;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j.root, "schedules");
    int n_ok = 0, n_bad = 0;
    double worst_sig = 0;
    for (const cJSON *e = arr ? arr->child : NULL; e; e = e->next) {
        sd_config ec = {.root = (cJSON *)e, .path = j.path}, cfgj;
        const char *cls = NULL, *label = NULL;
        double strength = 1.0;
        sd_sched_kind kind;
        sd_sched_config c;
        sd_scheduler *s = NULL;
        if (sd_config_str(&ec, "class", NULL, &cls) != SD_OK || sd_sched_kind_from_name(cls, &kind) != SD_OK ||
            sd_config_str(&ec, "label", "?", &label) != SD_OK || sd_config_sub(&ec, "config", &cfgj) != SD_OK ||
            sd_sched_config_from_json(&cfgj, (int)kind, &c) != SD_OK ||
            sd_config_float(&ec, "strength", 1.0, &strength) != SD_OK || sd_scheduler_create(&c, &s) != SD_OK) {
            printf("  bad entry: %s\n", sd_last_error());
            n_bad++;
            continue;
        }
        const cJSON *runs = cJSON_GetObjectItemCaseSensitive(e, "runs");
        for (const cJSON *r = runs ? runs->child : NULL; r; r = r->next)
            check_run(label, kind, s, r, strength, &worst_sig) ? n_ok++ : n_bad++;
        sd_scheduler_free(s);
    }
    printf("  reference schedules: %d match, %d differ (worst sigma rel err %.2g)\n", n_ok, n_bad, worst_sig);
    CHECK(n_bad == 0 && n_ok > 0);
    sd_config_free(&j);
}

/* tests/data/sched/rollouts.safetensors: short diffusers 0.26.3 rollouts on 1x4x2x2 latents of
 * options the fixtures do not cover (v_prediction, DDIM eta > 0, heun, sde-dpmsolver++, Karras
 * Euler, LCM strength, img2img starts, add_noise ...). Metadata "cases" lists them; "<c>.config"
 * is the scheduler JSON (+ set_timesteps, step kwargs, add_noise_t); tensors <c>.x (start
 * latent), <c>.mo / .prev [steps, 16] for every step from first_step, <c>.den / .in / .noise
 * with the step lists in metadata "<c>.den_steps" ...; <c>.an.x0/.noise/.out for add_noise.
 * Tolerance 2e-5 * max(1, max|expected|). */
static int list_index(const char *list, int step)
{
    int row = 0;
    for (const char *q = list; q && *q;) {
        char *end;
        long v = strtol(q, &end, 10);
        if (end == q)
            break;
        if (v == step)
            return row;
        row++;
        q = *end == ',' ? end + 1 : end;
    }
    return -1;
}

static const float *row_of(const sd_safetensors *st, const char *name, const char *kind, int row, size_t n,
                           float *buf)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", name, kind);
    const sd_st_tensor *t = sd_st_find(st, key);
    if (!t || row < 0 || t->ndim != 2 || (size_t)t->shape[1] != n || row >= t->shape[0])
        return NULL;
    for (size_t k = 0; k < n; k++)
        buf[k] = (float)sd_st_get(t, (size_t)row * n + k);
    return buf;
}

static void check_close(case_ctx *cc, const char *what, const float *got, const float *exp, size_t n)
{
    double tol = 2e-5 * fmax(1.0, max_abs(exp, n));
    double err = max_abs_diff(got, exp, n);
    cc->n_checked++;
    note_ratio(cc, what, err / tol);
    if (!(err <= tol)) {
        printf("    %s FAIL max abs err %.3g > tol %.3g\n", what, err, tol);
        cc->n_failed++;
        t_cur_failed = 1;
    }
}

static void run_ref_rollout(const sd_safetensors *st, const char *name)
{
    char key[256];
    snprintf(key, sizeof key, "%s.config", name);
    const char *cfg_text = sd_st_meta(st, key);
    sd_config j, sts;
    sd_sched_config c;
    sd_scheduler *s = NULL;
    case_ctx cc = {.name = name};
    if (!cfg_text || sd_config_parse(cfg_text, strlen(cfg_text), name, &j) != SD_OK) {
        printf("  %s: no config\n", name);
        t_cur_failed = 1;
        return;
    }
    CHECK_STATUS(sd_sched_config_from_json(&j, -1, &c), SD_OK);
    CHECK_STATUS(sd_config_sub(&j, "set_timesteps", &sts), SD_OK);
    if (!t_cur_failed)
        CHECK_STATUS(sd_scheduler_create(&c, &s), SD_OK);
    if (!s) {
        sd_config_free(&j);
        return;
    }
    int64_t steps = 0, first = 0, custom[64];
    int n_custom = 0;
    double strength = 1.0, an_t = NAN;
    CHECK_STATUS(sd_config_int(&sts, "num_inference_steps", 0, &steps), SD_OK);
    CHECK_STATUS(sd_config_float(&sts, "strength", 1.0, &strength), SD_OK);
    CHECK_STATUS(sd_config_int(&sts, "first_step", 0, &first), SD_OK);
    CHECK_STATUS(sd_config_float(&j, "add_noise_t", NAN, &an_t), SD_OK);
    if (sd_config_has(&sts, "timesteps"))
        CHECK_STATUS(sd_config_int_list(&sts, "timesteps", custom, 64, 0, &n_custom), SD_OK);
    CHECK_STATUS(sd_scheduler_set_timesteps(s, (int)steps, strength, n_custom ? custom : NULL, n_custom), SD_OK);
    snprintf(key, sizeof key, "%s.x", name);
    size_t n = 0;
    float *x = tensor_f32(st, key, &n);
    CHECK(x != NULL && n > 0 && n <= 4096);
    if (!x || n > 4096 || t_cur_failed) {
        free(x);
        sd_scheduler_free(s);
        sd_config_free(&j);
        return;
    }
    if (!isnan(an_t)) {
        char k0[256], k1[256], k2[256];
        snprintf(k0, sizeof k0, "%s.an.x0", name);
        snprintf(k1, sizeof k1, "%s.an.noise", name);
        snprintf(k2, sizeof k2, "%s.an.out", name);
        float *x0 = tensor_f32(st, k0, NULL), *nz = tensor_f32(st, k1, NULL), *eo = tensor_f32(st, k2, NULL);
        CHECK(x0 && nz && eo);
        if (x0 && nz && eo) {
            CHECK_STATUS(sd_scheduler_add_noise(s, x0, nz, an_t, x, n), SD_OK);
            check_close(&cc, "add_noise", x, eo, n);
        }
        free(x0);
        free(nz);
        free(eo);
    }
    float xin[4096], den[4096], mo[4096], noise[4096], e[4096];
    char lk[256];
    snprintf(lk, sizeof lk, "%s.noise_steps", name);
    const char *noise_steps = sd_st_meta(st, lk);
    snprintf(lk, sizeof lk, "%s.den_steps", name);
    const char *den_steps = sd_st_meta(st, lk);
    snprintf(lk, sizeof lk, "%s.in_steps", name);
    const char *in_steps = sd_st_meta(st, lk);
    for (int i = (int)first; i < sd_scheduler_num_timesteps(s) && !t_cur_failed; i++) {
        int row = i - (int)first;
        char what[300];
        if (!row_of(st, name, "mo", row, n, mo)) {
            CHECK_MSG(0, "%s: model output of step %d missing", name, i);
            break;
        }
        int nrow = list_index(noise_steps, i);
        const float *nz = nrow >= 0 ? row_of(st, name, "noise", nrow, n, noise) : NULL;
        CHECK_MSG((nz != NULL) == (sd_scheduler_step_needs_noise(s, i) != 0), "%s: noise use differs at step %d",
                  name, i);
        CHECK_STATUS(sd_scheduler_scale_model_input(s, i, x, xin, n), SD_OK);
        if (row_of(st, name, "in", list_index(in_steps, i), n, e)) {
            snprintf(what, sizeof what, "model_input.%d", i);
            check_close(&cc, what, xin, e, n);
        }
        CHECK_STATUS(sd_scheduler_step(s, i, mo, x, nz, x, den, n), SD_OK);
        if (row_of(st, name, "prev", row, n, e)) {
            snprintf(what, sizeof what, "prev_sample.%d", i);
            check_close(&cc, what, x, e, n);
        }
        if (row_of(st, name, "den", list_index(den_steps, i), n, e)) {
            snprintf(what, sizeof what, "denoised.%d", i);
            check_close(&cc, what, den, e, n);
        }
    }
    report(&cc);
    free(x);
    sd_scheduler_free(s);
    sd_config_free(&j);
}

TEST(reference_rollouts)
{
    const char *data = getenv("SD_TEST_DATA");
    if (!data)
        FAIL("SD_TEST_DATA is not set (ctest sets it to tests/data)");
    char *p = sd_path_join(data, "sched/rollouts.safetensors");
    sd_safetensors *st = NULL;
    sd_status s0 = sd_safetensors_open(p, &st);
    free(p);
    CHECK_STATUS(s0, SD_OK);
    if (s0 != SD_OK)
        return;
    const char *list = sd_st_meta(st, "cases");
    CHECK(list != NULL);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", list ? list : "");
    int n_cases = 0;
    for (char *save = NULL, *name = strtok_r(buf, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int before = t_cur_failed;
        t_cur_failed = 0;
        run_ref_rollout(st, name);
        t_cur_failed = t_cur_failed || before;
        n_cases++;
    }
    CHECK(n_cases > 0);
    sd_safetensors_close(st);
}

static void with_thresholding(sd_sched_config *c) { c->thresholding = true; }
static void with_trained(sd_sched_config *c) { c->trained_betas = true; }
static void sde3(sd_sched_config *c)
{
    c->algorithm_type = SD_DPM_SDE_DPMSOLVER_PP;
    c->solver_order = 3;
}
static void dpm_zero(sd_sched_config *c) { c->algorithm_type = SD_DPM_DPMSOLVER; }

TEST(bad_input)
{
    sd_sched_kind k;
    CHECK_STATUS(sd_sched_kind_from_name("pndm", &k), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("euler_a");
    CHECK_STATUS(sd_sched_kind_from_name(NULL, &k), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_sched_kind_from_name("DPM++2M", &k), SD_OK);
    CHECK(k == SD_SCHED_DPMPP_2M);
    CHECK_STATUS(sd_sched_kind_from_name("EulerAncestralDiscreteScheduler", &k), SD_OK);
    CHECK(k == SD_SCHED_EULER_A);

    sd_sched_config c;
    sd_scheduler *s = NULL;
    sd_sched_config_default(&c, SD_SCHED_DDIM);
    with_thresholding(&c);
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("thresholding");
    sd_sched_config_default(&c, SD_SCHED_LCM);
    with_trained(&c);
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("trained_betas");
    sd_sched_config_default(&c, SD_SCHED_DPMPP_2M);
    sde3(&c);
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_UNSUPPORTED);
    sd_sched_config_default(&c, SD_SCHED_DPMPP_2M);
    dpm_zero(&c);
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("sigma_min");
    CHECK(s == NULL);

    /* config parsing errors */
    sd_config j;
    const char *bad1 = "{\"_class_name\": \"PNDMScheduler\"}";
    CHECK_STATUS(sd_config_parse(bad1, strlen(bad1), "bad1", &j), SD_OK);
    CHECK_STATUS(sd_sched_config_from_json(&j, -1, &c), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("PNDMScheduler");
    CHECK_STATUS(sd_sched_config_from_json(&j, SD_SCHED_LCM, &c), SD_OK); /* from_config conversion */
    sd_config_free(&j);
    const char *bad2 = "{\"_class_name\": \"EulerDiscreteScheduler\", \"timestep_spacing\": \"sideways\"}";
    CHECK_STATUS(sd_config_parse(bad2, strlen(bad2), "bad2", &j), SD_OK);
    CHECK_STATUS(sd_sched_config_from_json(&j, -1, &c), SD_ERR_UNSUPPORTED);
    CHECK_ERR_CONTAINS("timestep_spacing");
    sd_config_free(&j);
    const char *bad3 = "{\"_class_name\": \"LCMScheduler\", \"num_train_timesteps\": \"many\"}";
    CHECK_STATUS(sd_config_parse(bad3, strlen(bad3), "bad3", &j), SD_OK);
    CHECK_STATUS(sd_sched_config_from_json(&j, -1, &c), SD_ERR_FORMAT);
    sd_config_free(&j);
    CHECK_STATUS(sd_sched_config_load("/nonexistent/scheduler_config.json", &c), SD_ERR_NOT_FOUND);

    s = make(SD_SCHED_LCM, sd15);
    if (!s)
        return;
    float x[16] = {0}, o[16];
    CHECK_STATUS(sd_scheduler_step(s, 0, x, x, NULL, o, NULL, 16), SD_ERR_INVALID_ARGUMENT); /* no set_timesteps */
    CHECK_ERR_CONTAINS("set_timesteps");
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 1001, 1.0, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("num_train_timesteps");
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 51, 1.0, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("original_inference_steps");
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 30, 0.5, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("strength");
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 0.0, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    const int64_t asc[] = {99, 359};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, asc, 2), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("descending");
    const int64_t big[] = {1000, 359};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, big, 2), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    CHECK_STATUS(sd_scheduler_step(s, 4, x, x, NULL, o, NULL, 16), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_scheduler_step(s, 0, x, x, NULL, o, NULL, 16), SD_ERR_INVALID_ARGUMENT); /* needs noise */
    CHECK_ERR_CONTAINS("noise");
    CHECK_STATUS(sd_scheduler_step(s, 3, x, x, NULL, o, NULL, 16), SD_OK); /* last step: no noise */
    CHECK_STATUS(sd_scheduler_add_noise(s, x, x, 1000.0, o, 16), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_scheduler_add_noise(s, x, x, 2.5, o, 16), SD_ERR_INVALID_ARGUMENT);
    int bad_idx[] = {0, 4};
    CHECK_STATUS(sd_lcm_stream_coeffs(s, bad_idx, 2, NULL, NULL, NULL, NULL, NULL), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_lcm_guidance_embedding(1.0f, 2, o), SD_ERR_INVALID_ARGUMENT);
    sd_scheduler_free(s);

    s = make(SD_SCHED_DDIM, NULL);
    if (!s)
        return;
    const int64_t cust[] = {999, 500};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, cust, 2), SD_ERR_UNSUPPORTED);
    sd_scheduler_free(s);

    s = make(SD_SCHED_DPMPP_2M, sd15);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 5, 1.0, NULL, 0), SD_OK);
    CHECK_STATUS(sd_scheduler_step(s, 0, x, x, NULL, o, NULL, 16), SD_OK);
    CHECK_STATUS(sd_scheduler_step(s, 2, x, x, NULL, o, NULL, 16), SD_ERR_INVALID_ARGUMENT); /* out of order */
    CHECK_ERR_CONTAINS("order");
    CHECK_STATUS(sd_scheduler_step(s, 1, x, x, NULL, o, o, 16), SD_OK);
    CHECK_STATUS(sd_scheduler_step(s, 2, x, x, NULL, x, x, 16), SD_ERR_INVALID_ARGUMENT); /* den aliases sample */
    CHECK_STATUS(sd_scheduler_add_noise(s, x, x, 999.0, o, 16), SD_OK);
    sd_scheduler_free(s);

    s = make(SD_SCHED_EULER, turbo);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    CHECK_STATUS(sd_scheduler_add_noise(s, x, x, 500.0, o, 16), SD_ERR_INVALID_ARGUMENT); /* not in schedule */
    CHECK_STATUS(sd_scheduler_add_noise(s, x, x, 499.0, o, 16), SD_OK);
    CHECK_STATUS(sd_scheduler_scale_model_input(s, 9, x, o, 16), SD_ERR_INVALID_ARGUMENT);
    sd_scheduler_free(s);
    CHECK_STATUS(sd_scheduler_create(NULL, &s), SD_ERR_INVALID_ARGUMENT);
}

static void tcd_gamma03(sd_sched_config *c)
{
    sd15(c);
    c->eta = 0.3;
}

/* TCDScheduler: names, schedule rules, the noise rule and one step against the
 * paper's formula evaluated in double precision (the diffusers rollouts are the
 * sched_tcd_* fixture cases and tests/data/cases/own_sched_tcd_*). */
TEST(tcd_rules)
{
    sd_sched_kind k;
    CHECK_STATUS(sd_sched_kind_from_name("tcd", &k), SD_OK);
    CHECK(k == SD_SCHED_TCD);
    CHECK_STATUS(sd_sched_kind_from_name("TCDScheduler", &k), SD_OK);
    CHECK(k == SD_SCHED_TCD);
    CHECK(!strcmp(sd_sched_kind_name(SD_SCHED_TCD), "tcd"));
    CHECK_STATUS(sd_sched_kind_from_name("pndm", &k), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("tcd");

    sd_sched_config c;
    sd_scheduler *s = NULL;
    sd_sched_config_default(&c, SD_SCHED_TCD);
    c.eta = 1.5;
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("gamma");
    c.eta = -0.1;
    CHECK_STATUS(sd_scheduler_create(&c, &s), SD_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);

    const char *js = "{\"_class_name\": \"TCDScheduler\", \"beta_schedule\": \"scaled_linear\"}";
    sd_config j;
    CHECK_STATUS(sd_config_parse(js, strlen(js), "tcd", &j), SD_OK);
    CHECK_STATUS(sd_sched_config_from_json(&j, -1, &c), SD_OK);
    CHECK(c.kind == SD_SCHED_TCD && c.original_inference_steps == 50 && c.beta_end == 0.012);
    sd_config_free(&j);

    s = make(SD_SCHED_TCD, tcd_gamma03);
    if (!s)
        return;
    /* the LCM rule: 4 of the 50-step schedule 999, 979, ..., 19 */
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    const double want4[] = {999, 759, 499, 259};
    CHECK(sd_scheduler_num_timesteps(s) == 4);
    for (int i = 0; i < 4; i++)
        CHECK_MSG(sd_scheduler_timestep(s, i) == want4[i], "TCD t[%d] = %g", i, sd_scheduler_timestep(s, i));
    /* strength 0.5: int(50*0.5) = 25 origin steps (19..499), indices floor(linspace(0, 25, 4)) */
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 0.5, NULL, 0), SD_OK);
    const double want_s[] = {499, 379, 259, 139};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(sd_scheduler_timestep(s, i) == want_s[i], "TCD strength 0.5 t[%d] = %g", i,
                  sd_scheduler_timestep(s, i));
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 30, 0.5, NULL, 0), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("TCDScheduler");
    const int64_t cust[] = {999, 600, 250};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, cust, 3), SD_OK);
    CHECK(sd_scheduler_num_timesteps(s) == 3 && sd_scheduler_timestep(s, 1) == 600);
    const int64_t asc[] = {250, 600};
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 0, 1.0, asc, 2), SD_ERR_INVALID_ARGUMENT);

    /* noise: gamma > 0, every step but the last */
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    CHECK(sd_scheduler_step_needs_noise(s, 0) == 1 && sd_scheduler_step_needs_noise(s, 2) == 1);
    CHECK(sd_scheduler_step_needs_noise(s, 3) == 0);
    CHECK(sd_scheduler_init_noise_sigma(s) == 1.0);

    enum { N = 8 };
    float x[N], eps[N], nz[N], prev[N], pns[N], xin[N];
    for (int q = 0; q < N; q++) {
        x[q] = 0.3f * (float)q - 1.0f;
        eps[q] = 0.8f - 0.15f * (float)q;
        nz[q] = (q % 3) - 0.7f;
    }
    CHECK_STATUS(sd_scheduler_step(s, 1, eps, x, NULL, prev, pns, N), SD_ERR_INVALID_ARGUMENT); /* needs noise */
    CHECK_STATUS(sd_scheduler_scale_model_input(s, 1, x, xin, N), SD_OK);
    CHECK(!memcmp(xin, x, sizeof x));
    CHECK_STATUS(sd_scheduler_step(s, 1, eps, x, nz, prev, pns, N), SD_OK);
    /* step 1: t = 759, prev_t = 499, s = floor(0.7 * 499) = 349 */
    int T = 0;
    const float *ab = sd_scheduler_alphas_cumprod(s, &T);
    double at = ab[759], ap = ab[499], as = ab[349];
    double worst = 0;
    for (int q = 0; q < N; q++) {
        double x0 = (x[q] - sqrt(1 - at) * eps[q]) / sqrt(at);
        double xs = sqrt(as) * x0 + sqrt(1 - as) * eps[q];
        double xp = sqrt(ap / as) * xs + sqrt(1 - ap / as) * nz[q];
        worst = fmax(worst, fabs(xs - pns[q]) / fmax(1.0, fabs(xs)));
        worst = fmax(worst, fabs(xp - prev[q]) / fmax(1.0, fabs(xp)));
    }
    CHECK_MSG(worst < 1e-5, "TCD step vs the formula in double: worst rel err %g", worst);
    /* the last step returns x_s with s = 0 and takes no noise */
    CHECK_STATUS(sd_scheduler_step(s, 3, eps, x, NULL, prev, pns, N), SD_OK);
    CHECK(!memcmp(prev, pns, sizeof prev));
    double a0 = ab[0], a259 = ab[259];
    double x0 = (x[2] - sqrt(1 - a259) * eps[2]) / sqrt(a259);
    CHECK(fabs(sqrt(a0) * x0 + sqrt(1 - a0) * eps[2] - prev[2]) < 1e-5);
    /* img2img noising: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise */
    CHECK_STATUS(sd_scheduler_add_noise(s, x, nz, 499.0, prev, N), SD_OK);
    CHECK(fabs(sqrt(ap) * x[5] + sqrt(1 - ap) * nz[5] - prev[5]) < 1e-5);
    sd_scheduler_free(s);

    /* gamma 0: deterministic, no noise on any step */
    s = make(SD_SCHED_TCD, sd15);
    if (!s)
        return;
    CHECK_STATUS(sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0), SD_OK);
    CHECK(sd_scheduler_step_needs_noise(s, 0) == 0);
    CHECK_STATUS(sd_scheduler_step(s, 0, eps, x, NULL, prev, pns, N), SD_OK);
    CHECK(!memcmp(prev, pns, sizeof prev));
    sd_scheduler_free(s);
}

/* The guidance embedding and stream coefficients on known values (no fixtures). */
TEST(lcm_helpers)
{
    float e[8];
    CHECK_STATUS(sd_lcm_guidance_embedding(0.0f, 8, e), SD_OK);
    for (int k = 0; k < 4; k++)
        CHECK(e[k] == 0.0f && e[4 + k] == 1.0f);
    float e9[9];
    CHECK_STATUS(sd_lcm_guidance_embedding(0.5f, 9, e9), SD_OK);
    CHECK(e9[8] == 0.0f && fabsf(e9[0] - sinf(500.0f)) < 1e-4f);
    float cs, co;
    sd_lcm_scalings(10.0, 0, &cs, &co);
    CHECK(cs == 1.0f && co == 0.0f);
    sd_lcm_scalings(10.0, 999, &cs, &co);
    CHECK(fabsf(cs - 0.25f / (9990.0f * 9990.0f + 0.25f)) < 1e-12f && fabsf(co - 1.0f) < 1e-6f);
}

int main(void)
{
    RUN(known_schedules);
    RUN(bad_input);
    RUN(lcm_helpers);
    RUN(tcd_rules);
    RUN(fixture_cases);
    RUN(own_cases);
    RUN(reference_schedules);
    RUN(reference_rollouts);
    return test_summary();
}
