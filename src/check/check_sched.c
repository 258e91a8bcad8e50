/* Scheduler cases (shared/fixtures/README.md "Schedulers"):
 *
 *  - rollouts (manifest has `scheduler_class`): the scheduler is built from the
 *    manifest's `scheduler_config` (diffusers 0.26 or newer configs; keys this
 *    engine does not know are ignored), `set_timesteps` (num_inference_steps /
 *    custom timesteps / strength), optional `step_kwargs` (DDIM eta, Euler
 *    s_churn ...). Tables (timesteps exact, sigmas, alphas_cumprod, betas), x_T =
 *    x_T_noise * init_noise_sigma, and per step model_input / prev_sample /
 *    denoised (or pred_original_sample, or TCD's pred_noised_sample) are compared
 *    with the manifest tolerances (TCD's gamma is step_kwargs.eta).
 *    Step noise is replayed from `steps[i].noise_drawn` after checking with the
 *    manifest's `noise_draws` that the scheduler's step() drew it. Euler with
 *    s_churn = 0 never uses its noise: diffusers 0.26 still drew one tensor per
 *    step, diffusers >= 0.27 draws none; both recordings are accepted.
 *  - StreamDiffusion coefficient tables (`t_index_list` + `scheduler_config`, no
 *    `stream_constructor`): sub-timesteps, c_skip, c_out, sqrt(abar), sqrt(1-abar)
 *    over the N-step LCM schedule (N from the expected `timesteps_N` table).
 *  - LCM guidance embedding (`embedding_dim`, no model): embedding of each input w.
 *
 * Outputs without a manifest tolerance (the integer timestep tables) must match
 * exactly. */
#include "check/check.h"
#include "sched/scheduler.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 10000

/* Exact comparison of a table (stored I64, or F32: then compared after rounding to float32). */
static void compare_exact(sd_case *c, const char *name, const double *got, size_t n)
{
    c->n_checked++;
    const sd_st_tensor *t = sd_case_expected(c, name);
    if (!t || t->numel != n) {
        c->n_failed++;
        if (t)
            printf("  %-44s FAIL  %zu entries, expected %zu\n", name, n, t->numel);
        else
            printf("  %-44s FAIL  %s\n", name, sd_last_error());
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double e = sd_st_get(t, i);
        double g = t->dtype == SD_F32 ? (double)(float)got[i] : got[i];
        if (!(g == e)) {
            c->n_failed++;
            c->worst_ratio = INFINITY;
            printf("  %-44s FAIL  entry %zu: got %.9g, expected %.9g (must match exactly)\n", name, i, got[i], e);
            return;
        }
    }
    if (c->verbose)
        printf("  %-44s PASS  exact (%zu entries)\n", name, n);
}

/* A float output: the manifest tolerance when there is one, else exact. */
static void compare_f32(sd_case *c, const char *name, const float *got, size_t n)
{
    if (sd_case_tolerance(c, name) >= 0) {
        sd_case_compare(c, name, got, n);
        return;
    }
    double *d = sd_malloc((n ? n : 1) * sizeof(double));
    if (!d) {
        sd_case_fail(c, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = got[i];
    compare_exact(c, name, d, n);
    free(d);
}

/* A scalar from the manifest, relative 1e-6. */
static void compare_scalar(sd_case *c, const char *name, double got, double want)
{
    double tol = 1e-6 * fmax(1.0, fabs(want)), err = fabs(got - want);
    bool pass = err <= tol;
    c->n_checked++;
    if (err / tol > c->worst_ratio || isnan(err))
        c->worst_ratio = isnan(err) ? INFINITY : err / tol;
    if (!pass)
        c->n_failed++;
    if (!pass || c->verbose)
        printf("  %-44s %s  got %.9g, manifest %.9g\n", name, pass ? "PASS" : "FAIL", got, want);
}

/* The scheduler config of the manifest (kind < 0: from its _class_name). */
static sd_status make_scheduler(sd_case *c, int kind, sd_sched_config *cfg)
{
    sd_config sc;
    SD_TRY(sd_config_sub(&c->manifest, "scheduler_config", &sc));
    SD_TRY(sd_sched_config_from_json(&sc, kind, cfg));
    return SD_OK;
}

/* step_kwargs: arguments diffusers' step() was called with. */
static sd_status apply_step_kwargs(sd_case *c, sd_sched_config *cfg)
{
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "step_kwargs");
    if (!kw || cJSON_IsNull(kw))
        return SD_OK;
    if (!cJSON_IsObject(kw))
        return sd_fail(SD_ERR_FORMAT, "%s: manifest step_kwargs must be an object", c->dir);
    const cJSON *e;
    cJSON_ArrayForEach(e, kw)
    {
        static const char *const num[] = {"eta", "s_churn", "s_tmin", "s_tmax", "s_noise"};
        double *dst[] = {&cfg->eta, &cfg->s_churn, &cfg->s_tmin, &cfg->s_tmax, &cfg->s_noise};
        bool done = false;
        for (size_t k = 0; k < SD_ARRAY_LEN(num) && !done; k++) {
            if (strcmp(e->string, num[k]) != 0)
                continue;
            if (!cJSON_IsNumber(e))
                return sd_fail(SD_ERR_FORMAT, "%s: step_kwargs.%s must be a number", c->dir, e->string);
            *dst[k] = e->valuedouble;
            done = true;
        }
        if (done)
            continue;
        if (!strcmp(e->string, "use_clipped_model_output") && (cJSON_IsFalse(e) || cJSON_IsNull(e)))
            continue; /* the default */
        if (!strcmp(e->string, "return_dict") || !strcmp(e->string, "generator"))
            continue; /* no effect on the values (the noise is replayed) */
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: step_kwargs.%s is not supported by this runner (supported: eta, s_churn, s_tmin, "
                       "s_tmax, s_noise, use_clipped_model_output=false)",
                       c->dir, e->string);
    }
    return SD_OK;
}

/* set_timesteps: {"num_inference_steps": N} | {"timesteps": [...]} (+ "strength"), or a bare N. */
static sd_status set_timesteps(sd_case *c, sd_scheduler *s)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "set_timesteps");
    if (cJSON_IsNumber(st))
        return sd_scheduler_set_timesteps(s, st->valueint, 1.0, NULL, 0);
    if (!cJSON_IsObject(st))
        return sd_fail(SD_ERR_FORMAT, "%s: manifest has no set_timesteps object", c->dir);
    sd_config sts = {.root = (cJSON *)st, .path = c->manifest.path};
    double strength = 1.0;
    int64_t steps = 0;
    SD_TRY(sd_config_float(&sts, "strength", 1.0, &strength));
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(st, "timesteps");
    if (ts && !cJSON_IsNull(ts)) {
        int n = cJSON_GetArraySize(ts);
        if (n < 1 || n > MAX_STEPS)
            return sd_fail(SD_ERR_FORMAT, "%s: set_timesteps.timesteps must list 1..%d timesteps", c->dir,
                           MAX_STEPS);
        int64_t *custom = sd_malloc((size_t)n * sizeof *custom);
        if (!custom)
            return SD_ERR_OUT_OF_MEMORY;
        int got = 0;
        sd_status r = sd_config_int_list(&sts, "timesteps", custom, n, 0, &got);
        if (r == SD_OK)
            r = sd_scheduler_set_timesteps(s, 0, strength, custom, got);
        free(custom);
        return r;
    }
    SD_TRY(sd_config_int(&sts, "num_inference_steps", 0, &steps));
    if (steps < 1 || steps > MAX_STEPS)
        return sd_fail(SD_ERR_FORMAT, "%s: set_timesteps.num_inference_steps %lld is out of range", c->dir,
                       (long long)steps);
    return sd_scheduler_set_timesteps(s, (int)steps, strength, NULL, 0);
}

/* noise_draws[].drawn_by of `key` (NULL if the manifest does not list it). */
static const char *drawn_by(sd_case *c, const char *key)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "noise_draws");
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "key");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "drawn_by");
        if (cJSON_IsString(k) && !strcmp(k->valuestring, key))
            return cJSON_IsString(d) ? d->valuestring : "";
    }
    return NULL;
}

/* Noise tensor for one step, or NULL with *ok = false after recording a failure.
 * `need` = what this scheduler consumes; the step's noise_drawn = what the reference drew. */
static float *step_noise(sd_case *c, const sd_scheduler *s, int i, const cJSON *st, size_t n, bool *ok)
{
    const sd_sched_config *cfg = sd_scheduler_config(s);
    int need = sd_scheduler_step_needs_noise(s, i);
    const cJSON *nd = cJSON_GetObjectItemCaseSensitive(st, "noise_drawn");
    int drawn = cJSON_GetArraySize(nd);
    /* EulerDiscrete with s_churn = 0 ignores its noise: diffusers 0.26 drew one tensor per
     * step anyway, newer versions draw none. */
    bool unused_draw = cfg->kind == SD_SCHED_EULER && cfg->s_churn == 0;
    char msg[300];
    *ok = true;
    if (drawn > 1 || (need != drawn && !unused_draw)) {
        snprintf(msg, sizeof msg, "step %d: the scheduler consumes %d noise tensors, the reference drew %d", i, need,
                 drawn);
        sd_case_fail(c, msg);
        *ok = false;
        return NULL;
    }
    if (!need)
        return NULL;
    float *noise = NULL;
    if (drawn == 1) {
        const cJSON *k = cJSON_GetArrayItem(nd, 0);
        const char *key = cJSON_IsString(k) ? k->valuestring : "";
        const char *by = drawn_by(c, key);
        if (by && !strstr(by, ".step")) {
            snprintf(msg, sizeof msg, "step %d: %s was drawn by %s, not by the scheduler's step()", i, key, by);
            sd_case_fail(c, msg);
            *ok = false;
            return NULL;
        }
        size_t nn = 0;
        noise = sd_case_input_f32(c, key, &nn);
        if (!noise || nn != n) {
            snprintf(msg, sizeof msg, "step %d: noise '%s' %s", i, key, noise ? "has the wrong size" : "is missing");
            free(noise);
            sd_case_fail(c, msg);
            *ok = false;
            return NULL;
        }
    } else { /* the reference skipped an unused draw */
        noise = calloc(n ? n : 1, sizeof(float));
        if (!noise) {
            sd_case_fail(c, "out of memory");
            *ok = false;
        }
    }
    return noise;
}

static sd_status run_rollout(sd_case *c)
{
    const char *cls = NULL;
    sd_sched_kind kind;
    sd_sched_config cfg;
    SD_TRY(sd_config_str(&c->manifest, "scheduler_class", NULL, &cls));
    SD_TRY(sd_sched_kind_from_name(cls, &kind));
    SD_TRY(make_scheduler(c, (int)kind, &cfg));
    SD_TRY(apply_step_kwargs(c, &cfg));
    sd_scheduler *s = NULL;
    SD_TRY(sd_scheduler_create(&cfg, &s));
    float *x = NULL, *xin = NULL, *den = NULL, *mo = NULL;
    sd_status r = set_timesteps(c, s);
    if (r != SD_OK)
        goto out;

    int nt = 0, ns = 0, T = 0;
    const double *ts = sd_scheduler_timesteps(s, &nt);
    compare_exact(c, "timesteps", ts, (size_t)nt);
    const float *sig = sd_scheduler_sigmas(s, &ns);
    if (c->expected && sd_st_find(c->expected, "sigmas")) {
        if (sig)
            compare_f32(c, "sigmas", sig, (size_t)ns);
        else
            sd_case_fail(c, "the reference has sigmas, this scheduler has none");
    }
    const float *ac = sd_scheduler_alphas_cumprod(s, &T);
    compare_f32(c, "alphas_cumprod", ac, (size_t)T);
    const float *bt = sd_scheduler_betas(s, &T);
    compare_f32(c, "betas", bt, (size_t)T);
    double ins = sd_scheduler_init_noise_sigma(s), want_ins;
    if (sd_config_has(&c->manifest, "init_noise_sigma")) {
        if ((r = sd_config_float(&c->manifest, "init_noise_sigma", 1.0, &want_ins)) != SD_OK)
            goto out;
        compare_scalar(c, "init_noise_sigma", ins, want_ins);
    }

    size_t n = 0;
    if (!(x = sd_case_input_f32(c, "x_T_noise", &n))) {
        r = SD_ERR_FORMAT;
        goto out;
    }
    float insf = (float)ins;
    for (size_t k = 0; k < n; k++)
        x[k] *= insf;
    compare_f32(c, "x_T", x, n);
    xin = sd_malloc((n ? n : 1) * sizeof(float));
    den = sd_malloc((n ? n : 1) * sizeof(float));
    if (!xin || !den) {
        r = SD_ERR_OUT_OF_MEMORY;
        goto out;
    }
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "steps");
    if (!cJSON_IsArray(steps) || cJSON_GetArraySize(steps) == 0) {
        r = sd_fail(SD_ERR_FORMAT, "%s: manifest has no steps list", c->dir);
        goto out;
    }
    int idx = 0;
    const cJSON *st;
    cJSON_ArrayForEach(st, steps)
    {
        sd_config sc = {.root = (cJSON *)st, .path = c->manifest.path};
        int64_t i64;
        const char *mo_name = NULL, *mi_name = NULL, *prev_name = NULL, *dn = NULL;
        if ((r = sd_config_int(&sc, "i", idx++, &i64)) != SD_OK ||
            (r = sd_config_str(&sc, "model_output", NULL, &mo_name)) != SD_OK ||
            (r = sd_config_str(&sc, "model_input", "identity", &mi_name)) != SD_OK ||
            (r = sd_config_str(&sc, "prev_sample", NULL, &prev_name)) != SD_OK ||
            (r = sd_config_str(&sc, "denoised", NULL, &dn)) != SD_OK ||
            (!dn && (r = sd_config_str(&sc, "pred_original_sample", NULL, &dn)) != SD_OK) ||
            (!dn && (r = sd_config_str(&sc, "pred_noised_sample", NULL, &dn)) != SD_OK))
            goto out;
        if (i64 < 0 || i64 >= sd_scheduler_num_timesteps(s) || !mo_name) {
            r = sd_fail(SD_ERR_FORMAT, "%s: step %lld: index out of the schedule (%d steps) or no model_output",
                        c->dir, (long long)i64, sd_scheduler_num_timesteps(s));
            goto out;
        }
        int i = (int)i64;
        size_t nm = 0;
        free(mo);
        if (!(mo = sd_case_input_f32(c, mo_name, &nm)) || nm != n) {
            r = sd_fail(SD_ERR_FORMAT, "%s: model output '%s' is missing or not the size of x_T_noise", c->dir,
                        mo_name);
            goto out;
        }
        if ((r = sd_scheduler_scale_model_input(s, i, x, xin, n)) != SD_OK)
            goto out;
        if (strcmp(mi_name, "identity") != 0)
            compare_f32(c, mi_name, xin, n);
        bool ok;
        float *noise = step_noise(c, s, i, st, n, &ok);
        if (!ok)
            break; /* the rest of the rollout would diverge */
        r = sd_scheduler_step(s, i, mo, x, noise, x, den, n);
        free(noise);
        if (r != SD_OK)
            goto out;
        if (prev_name)
            compare_f32(c, prev_name, x, n);
        if (dn)
            compare_f32(c, dn, den, n);
    }
out:
    free(x);
    free(xin);
    free(den);
    free(mo);
    sd_scheduler_free(s);
    return r;
}

/* The schedule length of the coefficient tables: expected tensor "timesteps_<N>". */
static int table_steps(sd_case *c)
{
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "files");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(files, "expected.safetensors");
    const cJSON *e;
    cJSON_ArrayForEach(e, ex)
    {
        int n = 0;
        char tail;
        if (e->string && sscanf(e->string, "timesteps_%d%c", &n, &tail) == 1 && n > 0)
            return n;
    }
    return 50; /* StreamDiffusion's default num_inference_steps */
}

static sd_status run_stream_coeffs(sd_case *c)
{
    sd_sched_config cfg;
    SD_TRY(make_scheduler(c, SD_SCHED_LCM, &cfg));
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "t_index_list");
    int n = cJSON_GetArraySize(tl);
    if (!cJSON_IsArray(tl) || n < 1 || n > MAX_STEPS)
        return sd_fail(SD_ERR_FORMAT, "%s: t_index_list must be a list of 1..%d indices", c->dir, MAX_STEPS);
    sd_scheduler *s = NULL;
    SD_TRY(sd_scheduler_create(&cfg, &s));
    int N = table_steps(c);
    int64_t *idx64 = sd_malloc((size_t)n * sizeof *idx64), *sub = sd_malloc((size_t)n * sizeof *sub);
    int *idx = sd_malloc((size_t)n * sizeof *idx);
    float *tab = sd_malloc((size_t)n * 4 * sizeof *tab);
    double *d = sd_malloc((size_t)(n > N ? n : N) * sizeof *d);
    sd_status r = SD_ERR_OUT_OF_MEMORY;
    int got = 0;
    if (!idx64 || !sub || !idx || !tab || !d)
        goto out;
    if ((r = sd_scheduler_set_timesteps(s, N, 1.0, NULL, 0)) != SD_OK ||
        (r = sd_config_int_list(&c->manifest, "t_index_list", idx64, n, 0, &got)) != SD_OK)
        goto out;
    for (int k = 0; k < got; k++) {
        if (idx64[k] < 0 || idx64[k] >= N) {
            r = sd_fail(SD_ERR_FORMAT, "%s: t_index_list[%d] = %lld is outside the %d-step schedule", c->dir, k,
                        (long long)idx64[k], N);
            goto out;
        }
        idx[k] = (int)idx64[k];
    }
    int nt = 0;
    const double *ts = sd_scheduler_timesteps(s, &nt);
    char name[32];
    snprintf(name, sizeof name, "timesteps_%d", N);
    if (c->expected && sd_st_find(c->expected, name))
        compare_exact(c, name, ts, (size_t)nt);
    float *a = tab, *b = tab + n, *cs = tab + 2 * n, *co = tab + 3 * n;
    if ((r = sd_lcm_stream_coeffs(s, idx, got, sub, a, b, cs, co)) != SD_OK)
        goto out;
    for (int k = 0; k < got; k++)
        d[k] = (double)sub[k];
    compare_exact(c, "sub_timesteps", d, (size_t)got);
    compare_f32(c, "c_skip", cs, (size_t)got);
    compare_f32(c, "c_out", co, (size_t)got);
    compare_f32(c, "alpha_prod_t_sqrt", a, (size_t)got);
    compare_f32(c, "beta_prod_t_sqrt", b, (size_t)got);
    if (c->expected && sd_st_find(c->expected, "alphas_cumprod")) {
        int T = 0;
        const float *ac = sd_scheduler_alphas_cumprod(s, &T);
        compare_f32(c, "alphas_cumprod", ac, (size_t)T);
    }
out:
    free(idx64);
    free(sub);
    free(idx);
    free(tab);
    free(d);
    sd_scheduler_free(s);
    return r;
}

sd_status sd_check_sched(sd_case *c)
{
    if (sd_config_has(&c->manifest, "scheduler_class"))
        return run_rollout(c);
    if (sd_config_has(&c->manifest, "t_index_list") && sd_config_has(&c->manifest, "scheduler_config"))
        return run_stream_coeffs(c);
    return sd_fail(SD_ERR_FORMAT, "%s: not a scheduler case (no scheduler_class, no t_index_list)", c->dir);
}

sd_status sd_check_guidance_embedding(sd_case *c)
{
    int64_t dim = 0;
    SD_TRY(sd_config_int(&c->manifest, "embedding_dim", 0, &dim));
    if (dim < 4 || dim > 65536)
        return sd_fail(SD_ERR_FORMAT, "%s: embedding_dim %lld must be in [4, 65536]", c->dir, (long long)dim);
    size_t nw = 0;
    float *w = sd_case_input_f32(c, "w", &nw);
    if (!w)
        return SD_ERR_FORMAT;
    float *out = sd_malloc((nw ? nw : 1) * (size_t)dim * sizeof(float));
    sd_status r = out ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    for (size_t k = 0; k < nw && r == SD_OK; k++)
        r = sd_lcm_guidance_embedding(w[k], (int)dim, out + k * (size_t)dim);
    if (r == SD_OK)
        compare_f32(c, "embedding", out, nw * (size_t)dim);
    free(out);
    free(w);
    return r;
}
