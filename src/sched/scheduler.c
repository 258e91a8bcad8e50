/* Scheduler object, step functions, add_noise, StreamDiffusion / LCM helpers.
 * Per-step arithmetic is float32 in torch's evaluation order: 0-d tensor
 * coefficients are combined first (as Python evaluates them left to right), then
 * applied element-wise. This file must not be compiled with floating-point
 * contraction (the project's -std=c17 keeps GCC's -ffp-contract=off). */
#include "sched/sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- lifecycle */

static sd_status validate_config(const sd_sched_config *c)
{
    const char *cls = sd_sched_kind_class_name(c->kind);
    if ((int)c->kind < 0 || c->kind >= SD_SCHED_KIND_COUNT)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler: invalid kind %d", (int)c->kind);
    if (c->num_train_timesteps < 2 || c->num_train_timesteps > 100000)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: num_train_timesteps %d must be in [2, 100000]", cls,
                       c->num_train_timesteps);
    if (c->trained_betas)
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: trained_betas is not supported; use beta_schedule linear, scaled_linear or "
                       "squaredcos_cap_v2",
                       cls);
    if ((int)c->beta_schedule < 0 || c->beta_schedule > SD_BETA_SQUAREDCOS_CAP_V2)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid beta_schedule %d", cls, (int)c->beta_schedule);
    if (c->beta_schedule != SD_BETA_SQUAREDCOS_CAP_V2 &&
        !(c->beta_start >= 0 && c->beta_end >= 0 && c->beta_start < 1 && c->beta_end < 1))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: beta_start %g / beta_end %g must be in [0, 1)", cls,
                       c->beta_start, c->beta_end);
    if ((int)c->prediction_type < 0 || c->prediction_type > SD_PRED_SAMPLE)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid prediction_type %d", cls, (int)c->prediction_type);
    if ((int)c->timestep_spacing < 0 || c->timestep_spacing > SD_SPACING_TRAILING)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid timestep_spacing %d", cls, (int)c->timestep_spacing);
    bool thresholding_used = c->kind == SD_SCHED_LCM || c->kind == SD_SCHED_DDIM || c->kind == SD_SCHED_DPMPP_2M;
    if (thresholding_used && c->thresholding)
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: thresholding (dynamic thresholding) is not supported; set \"thresholding\": false", cls);
    if ((c->kind == SD_SCHED_LCM || c->kind == SD_SCHED_DDIM) && c->clip_sample && !(c->clip_sample_range > 0))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: clip_sample_range %g must be > 0", cls, c->clip_sample_range);
    switch (c->kind) {
    case SD_SCHED_LCM:
        if (c->original_inference_steps < 1)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: original_inference_steps must be >= 1", cls);
        if (!isfinite(c->timestep_scaling))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: timestep_scaling must be finite", cls);
        break;
    case SD_SCHED_TCD: /* its step() uses neither clip_sample nor thresholding */
        if (c->original_inference_steps < 1)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: original_inference_steps must be >= 1", cls);
        if (!(c->eta >= 0 && c->eta <= 1))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: gamma (eta) %g must be in [0, 1]", cls, c->eta);
        break;
    case SD_SCHED_DPMPP_2M:
        if (c->solver_order < 1 || c->solver_order > 3)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: solver_order %d must be 1, 2 or 3", cls, c->solver_order);
        if ((int)c->algorithm_type < 0 || c->algorithm_type > SD_DPM_SDE_DPMSOLVER)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid algorithm_type %d", cls, (int)c->algorithm_type);
        if ((c->algorithm_type == SD_DPM_SDE_DPMSOLVER || c->algorithm_type == SD_DPM_SDE_DPMSOLVER_PP) &&
            c->solver_order == 3)
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: solver_order 3 is not defined for the sde-dpmsolver algorithms (use order 1 or 2)",
                           cls);
        if ((c->algorithm_type == SD_DPM_DPMSOLVER || c->algorithm_type == SD_DPM_SDE_DPMSOLVER) &&
            c->final_sigmas_type == SD_FINAL_SIGMAS_ZERO)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "%s: final_sigmas_type \"zero\" is not supported for algorithm_type dpmsolver / "
                           "sde-dpmsolver (as in diffusers 0.26); set final_sigmas_type \"sigma_min\"",
                           cls);
        if (c->variance_type_learned)
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: variance_type learned / learned_range is not supported (models predicting variance)",
                           cls);
        if (isnan(c->lambda_min_clipped))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: lambda_min_clipped is NaN", cls);
        break;
    case SD_SCHED_DDIM:
        if (!(c->eta >= 0 && isfinite(c->eta)))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: eta %g must be a finite value >= 0", cls, c->eta);
        break;
    case SD_SCHED_EULER:
        if (!(c->s_churn >= 0) || isnan(c->s_tmin) || isnan(c->s_tmax) || !isfinite(c->s_noise))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid s_churn / s_tmin / s_tmax / s_noise", cls);
        if (c->use_karras_sigmas && ((!isnan(c->sigma_min) && !(c->sigma_min > 0)) ||
                                     (!isnan(c->sigma_max) && !(c->sigma_max > 0))))
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: sigma_min / sigma_max must be > 0", cls);
        break;
    case SD_SCHED_EULER_A:
        if (c->prediction_type == SD_PRED_SAMPLE)
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: prediction_type \"sample\" is not implemented by the reference either; use epsilon or "
                           "v_prediction",
                           cls);
        break;
    default:
        break;
    }
    return SD_OK;
}

sd_status sd_scheduler_create(const sd_sched_config *c, sd_scheduler **out)
{
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler: no output pointer");
    *out = NULL;
    if (!c)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler: no config");
    SD_TRY(validate_config(c));
    sd_scheduler *s = sd_calloc(1, sizeof *s);
    if (!s)
        return SD_ERR_OUT_OF_MEMORY;
    s->cfg = *c;
    s->T = c->num_train_timesteps;
    s->next_step = -1;
    s->init_noise_sigma = 1.0f;
    sd_status st = sd_sched_build_tables(s);
    if (st != SD_OK) {
        sd_scheduler_free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

void sd_scheduler_free(sd_scheduler *s)
{
    if (!s)
        return;
    free(s->betas);
    free(s->alphas_cumprod);
    free(s->sigma_table);
    free(s->timesteps);
    free(s->sigmas);
    for (int i = 0; i < 3; i++)
        free(s->hist[i]);
    free(s);
}

const sd_sched_config *sd_scheduler_config(const sd_scheduler *s) { return s ? &s->cfg : NULL; }

void sd_scheduler_reset(sd_scheduler *s)
{
    if (!s)
        return;
    s->lower_order_nums = 0;
    s->next_step = -1;
}

sd_status sd_scheduler_set_timesteps(sd_scheduler *s, int num_inference_steps, double strength,
                                     const int64_t *custom_timesteps, int n_custom)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler: NULL scheduler");
    const char *cls = sd_sched_kind_class_name(s->cfg.kind);
    bool has_custom = custom_timesteps != NULL || n_custom != 0;
    if (has_custom) {
        if (!sd_sched_lcm_schedule(s->cfg.kind))
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: custom timesteps are supported by the LCM and TCD schedulers only",
                           cls);
        if (!custom_timesteps || n_custom < 1 || n_custom > s->T)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: custom timesteps need 1..%d entries (got %d)", cls, s->T,
                           n_custom);
    } else {
        if (num_inference_steps < 1)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: num_inference_steps %d must be >= 1", cls,
                           num_inference_steps);
        if (num_inference_steps > s->T)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "%s: num_inference_steps %d cannot be larger than num_train_timesteps %d", cls,
                           num_inference_steps, s->T);
    }
    if (!sd_sched_lcm_schedule(s->cfg.kind))
        strength = 1.0;
    sd_status st = sd_sched_build_schedule(s, num_inference_steps, strength, has_custom ? custom_timesteps : NULL,
                                           n_custom);
    if (st != SD_OK) {
        s->n = 0;
        s->n_sigmas = 0;
        return st;
    }
    sd_scheduler_reset(s);
    return SD_OK;
}

int sd_scheduler_num_timesteps(const sd_scheduler *s) { return s ? s->n : 0; }

double sd_scheduler_timestep(const sd_scheduler *s, int i)
{
    if (!s || i < 0 || i >= s->n)
        return NAN;
    return s->timesteps[i];
}

const double *sd_scheduler_timesteps(const sd_scheduler *s, int *n)
{
    if (n)
        *n = s ? s->n : 0;
    return s ? s->timesteps : NULL;
}

const float *sd_scheduler_sigmas(const sd_scheduler *s, int *n)
{
    if (n)
        *n = (s && s->sigmas) ? s->n_sigmas : 0;
    return s ? s->sigmas : NULL;
}

double sd_scheduler_init_noise_sigma(const sd_scheduler *s) { return s ? (double)s->init_noise_sigma : 1.0; }

const float *sd_scheduler_alphas_cumprod(const sd_scheduler *s, int *n)
{
    if (n)
        *n = s ? s->T : 0;
    return s ? s->alphas_cumprod : NULL;
}

const float *sd_scheduler_betas(const sd_scheduler *s, int *n)
{
    if (n)
        *n = s ? s->T : 0;
    return s ? s->betas : NULL;
}


/* ---------------------------------------------------------------- helpers */

static sd_status check_step(const sd_scheduler *s, int i, const char *what)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler %s: NULL scheduler", what);
    if (s->n == 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s %s: call set_timesteps first", sd_sched_kind_class_name(s->cfg.kind),
                       what);
    if (i < 0 || i >= s->n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s %s: step index %d is outside [0, %d)",
                       sd_sched_kind_class_name(s->cfg.kind), what, i, s->n);
    return SD_OK;
}

static bool is_euler(const sd_scheduler *s) { return s->cfg.kind == SD_SCHED_EULER || s->cfg.kind == SD_SCHED_EULER_A; }

static int64_t int_timestep(const sd_scheduler *s, int i) { return (int64_t)s->timesteps[i]; }

sd_status sd_scheduler_scale_model_input(const sd_scheduler *s, int step_index, const float *x, float *out, size_t n)
{
    SD_TRY(check_step(s, step_index, "scale_model_input"));
    if ((!x || !out) && n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scale_model_input: NULL buffer");
    if (is_euler(s)) {
        float sigma = s->sigmas[step_index];
        float d = sqrtf(sigma * sigma + 1.0f);
        for (size_t k = 0; k < n; k++)
            out[k] = x[k] / d;
    } else if (out != x && n) {
        memmove(out, x, n * sizeof(float));
    }
    return SD_OK;
}

int sd_scheduler_step_needs_noise(const sd_scheduler *s, int i)
{
    if (!s || i < 0 || i >= s->n)
        return 0;
    switch (s->cfg.kind) {
    case SD_SCHED_LCM:
        return i != s->num_inference_steps - 1;
    case SD_SCHED_EULER:
    case SD_SCHED_EULER_A:
        return 1;
    case SD_SCHED_DDIM:
        return s->cfg.eta > 0;
    case SD_SCHED_TCD:
        return s->cfg.eta > 0 && i != s->num_inference_steps - 1;
    case SD_SCHED_DPMPP_2M:
        return s->cfg.algorithm_type == SD_DPM_SDE_DPMSOLVER || s->cfg.algorithm_type == SD_DPM_SDE_DPMSOLVER_PP;
    default:
        return 0;
    }
}

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* x0 and eps from the model output `m` at sample `x` (sa = sqrt(alpha_t), sb = sqrt(1 - alpha_t)) for each
 * prediction type; TCD and DDIM share it. */
static inline void pred_x0_eps(int prediction_type, float x, float m, float sa, float sb, float *x0, float *eps)
{
    switch (prediction_type) {
    case SD_PRED_EPSILON:
        *x0 = (x - sb * m) / sa;
        *eps = m;
        break;
    case SD_PRED_SAMPLE:
        *x0 = m;
        *eps = (x - sa * m) / sb;
        break;
    default: /* v */
        *x0 = sa * x - sb * m;
        *eps = sa * m + sb * x;
        break;
    }
}

/* ---------------------------------------------------------------- LCM */

void sd_lcm_scalings(double timestep_scaling, int64_t t, float *c_skip, float *c_out)
{
    /* scaled = t * timestep_scaling (int64 tensor * float -> float32);
     * c_skip = 0.25 / (s^2 + 0.25) (python float / tensor = reciprocal * 0.25);
     * c_out = s / (s^2 + 0.25) ** 0.5 */
    float sc = (float)t * (float)timestep_scaling;
    float d = sc * sc + 0.25f;
    float r = 1.0f / d;
    if (c_skip)
        *c_skip = r * 0.25f;
    if (c_out)
        *c_out = sc / sqrtf(d);
}

static sd_status lcm_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise, float *prev,
                          float *den, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    int64_t t = int_timestep(s, i);
    int64_t prev_t = i + 1 < s->n ? int_timestep(s, i + 1) : t;
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    float b_t = 1.0f - a_t;
    float b_prev = 1.0f - a_prev;
    float c_skip, c_out;
    sd_lcm_scalings(c->timestep_scaling, t, &c_skip, &c_out);
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float sap = sqrtf(a_prev), sbp = sqrtf(b_prev);
    bool last = i == s->num_inference_steps - 1;
    float lo = (float)-c->clip_sample_range, hi = (float)c->clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0;
        switch (c->prediction_type) {
        case SD_PRED_EPSILON:
            x0 = (x[k] - sb * mo[k]) / sa;
            break;
        case SD_PRED_SAMPLE:
            x0 = mo[k];
            break;
        default: /* v */
            x0 = sa * x[k] - sb * mo[k];
            break;
        }
        if (c->clip_sample)
            x0 = clampf(x0, lo, hi);
        float d = c_out * x0 + c_skip * x[k];
        float p = last ? d : sap * d + sbp * noise[k];
        if (den)
            den[k] = d;
        prev[k] = p;
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- TCD */

/* TCDScheduler.step: with prev_t the next schedule timestep (0 after the last step) and
 * s = floor((1 - gamma) * prev_t) (a float32 product, as torch multiplies a Python float
 * by an int64 0-d tensor), the model output gives x0 and eps at t; the predicted noised
 * sample x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps; with gamma > 0 (except on the
 * last step) it is re-noised forward to prev_t:
 * x = sqrt(abar_prev / abar_s) x_s + sqrt(1 - abar_prev / abar_s) noise. */
static int64_t tcd_timestep_s(double gamma, int64_t prev_t)
{
    float f = (float)(1.0 - gamma) * (float)prev_t;
    return (int64_t)floorf(f);
}

static sd_status tcd_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise, float *prev,
                          float *pns_out, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    int64_t t = int_timestep(s, i);
    int64_t prev_t = i + 1 < s->n ? int_timestep(s, i + 1) : 0;
    int64_t ts = tcd_timestep_s(c->eta, prev_t);
    if (ts < 0)
        ts = 0;
    if (ts >= s->T)
        ts = s->T - 1;
    float a_t = s->alphas_cumprod[t];
    float b_t = 1.0f - a_t;
    float a_prev = s->alphas_cumprod[prev_t];
    float a_s = s->alphas_cumprod[ts];
    float b_s = 1.0f - a_s;
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float sas = sqrtf(a_s), sbs = sqrtf(b_s);
    bool renoise = sd_scheduler_step_needs_noise(s, i) != 0;
    float ratio = a_prev / a_s;
    float c_keep = sqrtf(ratio), c_noise = sqrtf(1.0f - ratio);
    for (size_t k = 0; k < n; k++) {
        float x0, eps;
        pred_x0_eps(c->prediction_type, x[k], mo[k], sa, sb, &x0, &eps);
        float pns = sas * x0 + sbs * eps;
        if (pns_out)
            pns_out[k] = pns;
        prev[k] = renoise ? c_keep * pns + c_noise * noise[k] : pns;
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- DDIM */

static sd_status ddim_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise, float *prev,
                           float *den, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    int64_t t = int_timestep(s, i);
    int64_t prev_t = t - s->T / s->num_inference_steps;
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    float b_t = 1.0f - a_t;
    float sa = sqrtf(a_t), sb = sqrtf(b_t), sap = sqrtf(a_prev);
    float b_prev = 1.0f - a_prev;
    float variance = b_prev / b_t * (1.0f - a_t / a_prev);
    float std_dev = (float)c->eta * sqrtf(variance);
    float dir_coef = sqrtf(1.0f - a_prev - std_dev * std_dev);
    bool noisy = c->eta > 0;
    float lo = (float)-c->clip_sample_range, hi = (float)c->clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0, eps;
        pred_x0_eps(c->prediction_type, x[k], mo[k], sa, sb, &x0, &eps);
        if (c->clip_sample)
            x0 = clampf(x0, lo, hi);
        float p = sap * x0 + dir_coef * eps;
        if (noisy)
            p = p + std_dev * noise[k];
        if (den)
            den[k] = x0;
        prev[k] = p;
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- Euler */

static sd_status euler_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise, float *prev,
                            float *den, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    float sigma = s->sigmas[i];
    double gamma = 0.0;
    if (c->s_tmin <= (double)sigma && (double)sigma <= c->s_tmax) {
        gamma = c->s_churn / (double)(s->n_sigmas - 1);
        double cap = sqrt(2.0) - 1.0;
        if (gamma > cap)
            gamma = cap;
    }
    float sigma_hat = sigma * (float)(gamma + 1.0);
    float churn = 0.0f;
    if (gamma > 0)
        churn = sqrtf(sigma_hat * sigma_hat - sigma * sigma);
    float s_noise = (float)c->s_noise;
    float dt = s->sigmas[i + 1] - sigma_hat;
    float v_c1 = -sigma / sqrtf(sigma * sigma + 1.0f);
    float v_c2 = sigma * sigma + 1.0f;
    for (size_t k = 0; k < n; k++) {
        float xs = x[k];
        if (gamma > 0)
            xs = xs + (noise[k] * s_noise) * churn;
        float x0;
        switch (c->prediction_type) {
        case SD_PRED_EPSILON:
            x0 = xs - sigma_hat * mo[k];
            break;
        case SD_PRED_SAMPLE:
            x0 = mo[k];
            break;
        default:
            x0 = mo[k] * v_c1 + xs / v_c2;
            break;
        }
        float deriv = (xs - x0) / sigma_hat;
        float p = xs + deriv * dt;
        if (den)
            den[k] = x0;
        prev[k] = p;
    }
    return SD_OK;
}

static sd_status euler_a_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise,
                              float *prev, float *den, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    float sigma = s->sigmas[i];
    float sf = sigma, st = s->sigmas[i + 1];
    float sf2 = sf * sf, st2 = st * st;
    float sigma_up = sqrtf(st2 * (sf2 - st2) / sf2);
    float sigma_down = sqrtf(st2 - sigma_up * sigma_up);
    float dt = sigma_down - sigma;
    float v_c1 = -sigma / sqrtf(sigma * sigma + 1.0f);
    float v_c2 = sigma * sigma + 1.0f;
    for (size_t k = 0; k < n; k++) {
        float x0 = c->prediction_type == SD_PRED_EPSILON ? x[k] - sigma * mo[k] : mo[k] * v_c1 + x[k] / v_c2;
        float deriv = (x[k] - x0) / sigma;
        float p = x[k] + deriv * dt;
        p = p + noise[k] * sigma_up;
        if (den)
            den[k] = x0;
        prev[k] = p;
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- DPM-Solver multistep */

typedef struct {
    float alpha, sigma, lambda;
} dpm_point;

static dpm_point dpm_at(float sig)
{
    dpm_point p;
    p.alpha = sd_sched_alpha_of_sigma(sig);
    p.sigma = sig * p.alpha;
    p.lambda = logf(p.alpha) - logf(p.sigma);
    return p;
}

static sd_status dpm_alloc_history(sd_scheduler *s, size_t n)
{
    if (s->hist_len == n && s->hist[0])
        return SD_OK;
    for (int k = 0; k < 3; k++) {
        free(s->hist[k]);
        s->hist[k] = NULL;
    }
    s->hist_len = 0;
    for (int k = 0; k < 3; k++) {
        s->hist[k] = sd_malloc((n ? n : 1) * sizeof(float));
        if (!s->hist[k])
            return SD_ERR_OUT_OF_MEMORY;
    }
    s->hist_len = n;
    return SD_OK;
}

static sd_status dpm_step(sd_scheduler *s, int i, const float *mo, const float *x, const float *noise, float *prev,
                          float *den, size_t n)
{
    const sd_sched_config *c = &s->cfg;
    if (i == 0 && s->next_step != 0)
        sd_scheduler_reset(s);
    if (s->next_step >= 0 && i != s->next_step)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "DPMSolverMultistepScheduler step: multistep steps must be taken in order (expected step %d, "
                       "got %d); call set_timesteps or sd_scheduler_reset to restart",
                       s->next_step, i);
    if (s->next_step >= 0 && s->hist_len != n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "DPMSolverMultistepScheduler step: latent size changed from %zu to %zu during a rollout",
                       s->hist_len, n);
    SD_TRY(dpm_alloc_history(s, n));
    int order = c->solver_order;
    int nt = s->n;
    bool lof = i == nt - 1 && (c->euler_at_final || (c->lower_order_final && nt < 15) ||
                               c->final_sigmas_type == SD_FINAL_SIGMAS_ZERO);
    bool los = i == nt - 2 && c->lower_order_final && nt < 15;
    bool pp = c->algorithm_type == SD_DPM_DPMSOLVER_PP || c->algorithm_type == SD_DPM_SDE_DPMSOLVER_PP;
    bool sde = c->algorithm_type == SD_DPM_SDE_DPMSOLVER_PP || c->algorithm_type == SD_DPM_SDE_DPMSOLVER;

    /* convert_model_output -> newest history slot (rotate: oldest buffer becomes newest) */
    float *newest = s->hist[0];
    for (int k = 0; k < order - 1; k++)
        s->hist[k] = s->hist[k + 1];
    s->hist[order - 1] = newest;
    dpm_point cur = dpm_at(s->sigmas[i]);
    for (size_t k = 0; k < n; k++) {
        float m;
        if (pp) {
            switch (c->prediction_type) {
            case SD_PRED_EPSILON:
                m = (x[k] - cur.sigma * mo[k]) / cur.alpha;
                break;
            case SD_PRED_SAMPLE:
                m = mo[k];
                break;
            default:
                m = cur.alpha * x[k] - cur.sigma * mo[k];
                break;
            }
        } else {
            switch (c->prediction_type) {
            case SD_PRED_EPSILON:
                m = mo[k];
                break;
            case SD_PRED_SAMPLE:
                m = (x[k] - cur.alpha * mo[k]) / cur.sigma;
                break;
            default:
                m = cur.alpha * mo[k] + cur.sigma * x[k];
                break;
            }
        }
        newest[k] = m;
    }
    if (den) {
        for (size_t k = 0; k < n; k++)
            den[k] = pp ? newest[k] : (x[k] - cur.sigma * newest[k]) / cur.alpha;
    }

    const float *m0 = s->hist[order - 1];
    int use = (order == 1 || s->lower_order_nums < 1 || lof) ? 1
              : (order == 2 || s->lower_order_nums < 2 || los) ? 2
                                                               : 3;
    dpm_point pt = dpm_at(s->sigmas[i + 1]);
    dpm_point p0 = cur;
    float h = pt.lambda - p0.lambda;
    float em = expf(-h), ep = expf(h);
    if (use == 1) {
        float ca, cb, cn = 0.0f;
        switch (c->algorithm_type) {
        case SD_DPM_DPMSOLVER_PP:
            ca = pt.sigma / p0.sigma;
            cb = -(pt.alpha * (em - 1.0f));
            break;
        case SD_DPM_DPMSOLVER:
            ca = pt.alpha / p0.alpha;
            cb = -(pt.sigma * (ep - 1.0f));
            break;
        case SD_DPM_SDE_DPMSOLVER_PP: {
            float e2 = expf(-2.0f * h);
            ca = pt.sigma / p0.sigma * em;
            cb = pt.alpha * (1.0f - e2);
            cn = pt.sigma * sqrtf(1.0f - e2);
            break;
        }
        default: { /* sde-dpmsolver */
            float e2 = expf(2.0f * h);
            ca = pt.alpha / p0.alpha;
            cb = -(2.0f * (pt.sigma * (ep - 1.0f)));
            cn = pt.sigma * sqrtf(e2 - 1.0f);
            break;
        }
        }
        /* x_t = ca*x - |cb|*m (+ cn*noise), evaluated as torch: (ca*x) - (b*m) with b = -cb */
        for (size_t k = 0; k < n; k++) {
            float v;
            if (c->algorithm_type == SD_DPM_SDE_DPMSOLVER_PP)
                v = ca * x[k] + cb * m0[k] + cn * noise[k];
            else {
                v = ca * x[k] - (-cb) * m0[k];
                if (sde)
                    v = v + cn * noise[k];
            }
            prev[k] = v;
        }
    } else if (use == 2) {
        const float *m1 = s->hist[order - 2];
        dpm_point p1 = dpm_at(s->sigmas[i - 1]);
        float h0 = p0.lambda - p1.lambda;
        float r0 = h0 / h;
        float inv_r0 = 1.0f / r0;
        bool heun = c->solver_type == SD_SOLVER_HEUN;
        float ca, c0, c1, cn = 0.0f;
        /* signs: x_t = ca*x (op0) c0*D0 (op1) c1*D1 (+ cn*noise) as written in diffusers */
        int op0 = -1, op1 = -1;
        switch (c->algorithm_type) {
        case SD_DPM_DPMSOLVER_PP:
            ca = pt.sigma / p0.sigma;
            c0 = pt.alpha * (em - 1.0f);
            if (heun) {
                c1 = pt.alpha * ((em - 1.0f) / h + 1.0f);
                op1 = +1;
            } else {
                c1 = 0.5f * (pt.alpha * (em - 1.0f));
            }
            break;
        case SD_DPM_DPMSOLVER:
            ca = pt.alpha / p0.alpha;
            c0 = pt.sigma * (ep - 1.0f);
            c1 = heun ? pt.sigma * ((ep - 1.0f) / h - 1.0f) : 0.5f * (pt.sigma * (ep - 1.0f));
            break;
        case SD_DPM_SDE_DPMSOLVER_PP: {
            float e2 = expf(-2.0f * h);
            ca = pt.sigma / p0.sigma * em;
            c0 = pt.alpha * (1.0f - e2);
            op0 = +1;
            op1 = +1;
            c1 = heun ? pt.alpha * ((1.0f - e2) / (-2.0f * h) + 1.0f) : 0.5f * (pt.alpha * (1.0f - e2));
            cn = pt.sigma * sqrtf(1.0f - e2);
            break;
        }
        default: { /* sde-dpmsolver */
            float e2 = expf(2.0f * h);
            ca = pt.alpha / p0.alpha;
            c0 = 2.0f * (pt.sigma * (ep - 1.0f));
            c1 = heun ? 2.0f * (pt.sigma * ((ep - 1.0f) / h - 1.0f)) : pt.sigma * (ep - 1.0f);
            cn = pt.sigma * sqrtf(e2 - 1.0f);
            break;
        }
        }
        for (size_t k = 0; k < n; k++) {
            float d0 = m0[k];
            float d1 = inv_r0 * (m0[k] - m1[k]);
            float v = ca * x[k];
            v = op0 > 0 ? v + c0 * d0 : v - c0 * d0;
            v = op1 > 0 ? v + c1 * d1 : v - c1 * d1;
            if (sde)
                v = v + cn * noise[k];
            prev[k] = v;
        }
    } else {
        const float *m1 = s->hist[order - 2];
        const float *m2 = s->hist[order - 3];
        dpm_point p1 = dpm_at(s->sigmas[i - 1]);
        dpm_point p2 = dpm_at(s->sigmas[i - 2]);
        float h0 = p0.lambda - p1.lambda, h1 = p1.lambda - p2.lambda;
        float r0 = h0 / h, r1 = h1 / h;
        float inv_r0 = 1.0f / r0, inv_r1 = 1.0f / r1;
        float ratio = r0 / (r0 + r1);
        float inv_sum = 1.0f / (r0 + r1);
        float ca, c0, c1, c2;
        bool plus_d1;
        if (c->algorithm_type == SD_DPM_DPMSOLVER_PP) {
            ca = pt.sigma / p0.sigma;
            c0 = pt.alpha * (em - 1.0f);
            c1 = pt.alpha * ((em - 1.0f) / h + 1.0f);
            c2 = pt.alpha * ((em - 1.0f + h) / (h * h) - 0.5f);
            plus_d1 = true;
        } else {
            ca = pt.alpha / p0.alpha;
            c0 = pt.sigma * (ep - 1.0f);
            c1 = pt.sigma * ((ep - 1.0f) / h - 1.0f);
            c2 = pt.sigma * ((ep - 1.0f - h) / (h * h) - 0.5f);
            plus_d1 = false;
        }
        for (size_t k = 0; k < n; k++) {
            float d10 = inv_r0 * (m0[k] - m1[k]);
            float d11 = inv_r1 * (m1[k] - m2[k]);
            float diff = d10 - d11;
            float d1 = d10 + ratio * diff;
            float d2 = inv_sum * diff;
            float v = ca * x[k] - c0 * m0[k];
            v = plus_d1 ? v + c1 * d1 : v - c1 * d1;
            v = v - c2 * d2;
            prev[k] = v;
        }
    }
    if (s->lower_order_nums < order)
        s->lower_order_nums++;
    s->next_step = i + 1;
    return SD_OK;
}

/* ---------------------------------------------------------------- step / add_noise */

sd_status sd_scheduler_step(sd_scheduler *s, int i, const float *model_output, const float *sample,
                            const float *noise, float *prev_sample, float *denoised, size_t n)
{
    SD_TRY(check_step(s, i, "step"));
    if (n && (!model_output || !sample || !prev_sample))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s step: NULL model_output / sample / prev_sample",
                       sd_sched_kind_class_name(s->cfg.kind));
    if (denoised && denoised == sample && n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s step: denoised must not alias sample",
                       sd_sched_kind_class_name(s->cfg.kind));
    if (sd_scheduler_step_needs_noise(s, i) && !noise && n)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "%s step %d: this step consumes a noise tensor (sd_scheduler_step_needs_noise) but none was "
                       "given",
                       sd_sched_kind_class_name(s->cfg.kind), i);
    switch (s->cfg.kind) {
    case SD_SCHED_LCM:
        return lcm_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    case SD_SCHED_DDIM:
        return ddim_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    case SD_SCHED_EULER:
        return euler_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    case SD_SCHED_EULER_A:
        return euler_a_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    case SD_SCHED_DPMPP_2M:
        return dpm_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    case SD_SCHED_TCD:
        return tcd_step(s, i, model_output, sample, noise, prev_sample, denoised, n);
    default:
        return sd_fail(SD_ERR_INTERNAL, "scheduler: invalid kind");
    }
}

sd_status sd_scheduler_add_noise(const sd_scheduler *s, const float *x0, const float *noise, double timestep,
                                 float *out, size_t n)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "add_noise: NULL scheduler");
    const char *cls = sd_sched_kind_class_name(s->cfg.kind);
    if (n && (!x0 || !noise || !out))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s add_noise: NULL buffer", cls);
    if (sd_sched_lcm_schedule(s->cfg.kind) || s->cfg.kind == SD_SCHED_DDIM) {
        if (!(timestep >= 0 && timestep <= s->T - 1) || floor(timestep) != timestep)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s add_noise: timestep %g must be an integer in [0, %d]", cls,
                           timestep, s->T - 1);
        float a = s->alphas_cumprod[(int)timestep];
        float sa = sqrtf(a), sb = sqrtf(1.0f - a);
        for (size_t k = 0; k < n; k++)
            out[k] = sa * x0[k] + sb * noise[k];
        return SD_OK;
    }
    if (s->n == 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s add_noise: call set_timesteps first", cls);
    int found = 0, idx = -1, second = -1;
    for (int i = 0; i < s->n; i++) {
        bool eq = is_euler(s) ? (float)s->timesteps[i] == (float)timestep : s->timesteps[i] == timestep;
        if (eq) {
            if (found == 0)
                idx = i;
            else if (found == 1)
                second = i;
            found++;
        }
    }
    if (s->cfg.kind == SD_SCHED_DPMPP_2M) {
        int step_index = found == 0 ? s->n - 1 : (found > 1 ? second : idx);
        dpm_point p = dpm_at(s->sigmas[step_index]);
        for (size_t k = 0; k < n; k++)
            out[k] = p.alpha * x0[k] + p.sigma * noise[k];
        return SD_OK;
    }
    if (found != 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s add_noise: timestep %g %s the schedule", cls, timestep,
                       found == 0 ? "is not in" : "occurs more than once in");
    float sigma = s->sigmas[idx];
    for (size_t k = 0; k < n; k++)
        out[k] = x0[k] + noise[k] * sigma;
    return SD_OK;
}

/* ---------------------------------------------------------------- StreamDiffusion / LCM helpers */

sd_status sd_lcm_stream_coeffs(const sd_scheduler *s, const int *t_index_list, int n, int64_t *timesteps,
                               float *alpha_prod_t_sqrt, float *beta_prod_t_sqrt, float *c_skip, float *c_out)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "stream coefficients: NULL scheduler");
    if (s->cfg.kind != SD_SCHED_LCM)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "stream coefficients: need an LCM scheduler (got %s)",
                       sd_sched_kind_class_name(s->cfg.kind));
    if (s->n == 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "stream coefficients: call set_timesteps first");
    if (n < 1 || !t_index_list)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "stream coefficients: t_index_list is empty");
    for (int k = 0; k < n; k++) {
        int idx = t_index_list[k];
        if (idx < 0 || idx >= s->n)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "stream coefficients: t_index_list[%d] = %d is outside the %d-step schedule [0, %d)", k,
                           idx, s->n, s->n);
        int64_t t = int_timestep(s, idx);
        float a = s->alphas_cumprod[t];
        if (timesteps)
            timesteps[k] = t;
        if (alpha_prod_t_sqrt)
            alpha_prod_t_sqrt[k] = sqrtf(a);
        if (beta_prod_t_sqrt)
            beta_prod_t_sqrt[k] = sqrtf(1.0f - a);
        sd_lcm_scalings(s->cfg.timestep_scaling, t, c_skip ? &c_skip[k] : NULL, c_out ? &c_out[k] : NULL);
    }
    return SD_OK;
}

sd_status sd_lcm_guidance_embedding(float w, int dim, float *out)
{
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "guidance embedding: NULL output");
    if (dim < 4 || dim > (1 << 20))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "guidance embedding: dimension %d must be in [4, 2^20]", dim);
    if (!isfinite(w))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "guidance embedding: w must be finite");
    int half = dim / 2;
    float w1000 = w * 1000.0f;
    float emb = logf(10000.0f) / (float)(half - 1);
    for (int k = 0; k < half; k++) {
        float f = expf((float)k * -emb);
        float e = w1000 * f;
        out[k] = sinf(e);
        out[half + k] = cosf(e);
    }
    if (dim % 2)
        out[dim - 1] = 0.0f;
    return SD_OK;
}
