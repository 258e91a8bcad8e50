/* Scheduler configuration: diffusers v0.26.3 defaults (TCD: 0.42), scheduler_config.json parsing,
 * names. */
#include "sched/scheduler.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

static const char *const kind_names[SD_SCHED_KIND_COUNT] = {"lcm", "dpmpp_2m", "ddim", "euler", "euler_a", "tcd"};
static const char *const class_names[SD_SCHED_KIND_COUNT] = {
    "LCMScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "TCDScheduler"};

const char *sd_sched_kind_name(sd_sched_kind k)
{
    return ((int)k >= 0 && k < SD_SCHED_KIND_COUNT) ? kind_names[k] : "?";
}

const char *sd_sched_kind_class_name(sd_sched_kind k)
{
    return ((int)k >= 0 && k < SD_SCHED_KIND_COUNT) ? class_names[k] : "?";
}

static bool ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

sd_status sd_sched_kind_from_name(const char *name, sd_sched_kind *k)
{
    static const struct {
        const char *name;
        sd_sched_kind kind;
    } aliases[] = {
        {"lcm", SD_SCHED_LCM},           {"LCMScheduler", SD_SCHED_LCM},
        {"dpm++2m", SD_SCHED_DPMPP_2M},  {"dpmpp_2m", SD_SCHED_DPMPP_2M},
        {"dpmpp2m", SD_SCHED_DPMPP_2M},  {"dpmpp-2m", SD_SCHED_DPMPP_2M},
        {"dpm++", SD_SCHED_DPMPP_2M},    {"dpm", SD_SCHED_DPMPP_2M},
        {"dpm2m", SD_SCHED_DPMPP_2M},
        {"dpmsolver", SD_SCHED_DPMPP_2M}, {"DPMSolverMultistepScheduler", SD_SCHED_DPMPP_2M},
        {"ddim", SD_SCHED_DDIM},         {"DDIMScheduler", SD_SCHED_DDIM},
        {"euler", SD_SCHED_EULER},       {"EulerDiscreteScheduler", SD_SCHED_EULER},
        {"euler_a", SD_SCHED_EULER_A},   {"euler-a", SD_SCHED_EULER_A},
        {"euler_ancestral", SD_SCHED_EULER_A}, {"EulerAncestralDiscreteScheduler", SD_SCHED_EULER_A},
        {"tcd", SD_SCHED_TCD},           {"TCDScheduler", SD_SCHED_TCD},
    };
    if (!k)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler: no output given for the scheduler kind");
    if (name) {
        for (size_t i = 0; i < SD_ARRAY_LEN(aliases); i++) {
            if (ieq(name, aliases[i].name)) {
                *k = aliases[i].kind;
                return SD_OK;
            }
        }
    }
    return sd_fail(SD_ERR_INVALID_ARGUMENT,
                   "scheduler: unknown scheduler '%s'; valid names: lcm, dpm++2m (dpmpp_2m), ddim, euler, "
                   "euler_a, tcd, or the diffusers classes LCMScheduler, DPMSolverMultistepScheduler, "
                   "DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, TCDScheduler",
                   name ? name : "(null)");
}

void sd_sched_config_default(sd_sched_config *c, sd_sched_kind kind)
{
    memset(c, 0, sizeof *c);
    if ((int)kind < 0 || kind >= SD_SCHED_KIND_COUNT)
        kind = SD_SCHED_LCM;
    c->kind = kind;
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    c->beta_schedule = SD_BETA_LINEAR;
    c->prediction_type = SD_PRED_EPSILON;
    c->timestep_spacing = SD_SPACING_LINSPACE;
    c->steps_offset = 0;
    c->set_alpha_to_one = true;
    c->clip_sample = false;
    c->clip_sample_range = 1.0;
    c->dynamic_thresholding_ratio = 0.995;
    c->sample_max_value = 1.0;
    c->original_inference_steps = 50;
    c->timestep_scaling = 10.0;
    c->algorithm_type = SD_DPM_DPMSOLVER_PP;
    c->solver_order = 2;
    c->solver_type = SD_SOLVER_MIDPOINT;
    c->lower_order_final = true;
    c->final_sigmas_type = SD_FINAL_SIGMAS_ZERO;
    c->lambda_min_clipped = -INFINITY;
    c->interpolation_type = SD_INTERP_LINEAR;
    c->timestep_type = SD_TIMESTEP_DISCRETE;
    c->sigma_min = NAN;
    c->sigma_max = NAN;
    c->s_churn = 0.0;
    c->s_tmin = 0.0;
    c->s_tmax = INFINITY;
    c->s_noise = 1.0;
    c->eta = 0.0;
    switch (kind) {
    case SD_SCHED_LCM:
    case SD_SCHED_TCD: /* the same defaults in diffusers */
        c->beta_start = 0.00085;
        c->beta_end = 0.012;
        c->beta_schedule = SD_BETA_SCALED_LINEAR;
        c->timestep_spacing = SD_SPACING_LEADING;
        break;
    case SD_SCHED_DDIM:
        c->clip_sample = true;
        c->timestep_spacing = SD_SPACING_LEADING;
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------- JSON */

typedef struct {
    const char *name;
    int value;
} enum_entry;

static sd_status parse_enum(const sd_config *j, const char *key, const enum_entry *tab, size_t n, int *out)
{
    if (!sd_config_has(j, key))
        return SD_OK;
    const char *v = NULL;
    SD_TRY(sd_config_str(j, key, NULL, &v));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, tab[i].name) == 0) {
            *out = tab[i].value;
            return SD_OK;
        }
    }
    char valid[256] = "";
    for (size_t i = 0; i < n; i++) {
        if (i)
            strncat(valid, ", ", sizeof valid - strlen(valid) - 1);
        strncat(valid, tab[i].name, sizeof valid - strlen(valid) - 1);
    }
    return sd_fail(SD_ERR_UNSUPPORTED, "%s: %s \"%s\" is not supported (supported: %s)", j->path, key, v, valid);
}

static sd_status get_int(const sd_config *j, const char *key, int *v, int lo, int hi)
{
    int64_t x;
    SD_TRY(sd_config_int(j, key, *v, &x));
    if (x < lo || x > hi)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %s = %lld is out of range [%d, %d]", j->path, key, (long long)x,
                       lo, hi);
    *v = (int)x;
    return SD_OK;
}

static sd_status get_f(const sd_config *j, const char *key, double *v)
{
    return sd_config_float(j, key, *v, v);
}

static sd_status get_b(const sd_config *j, const char *key, bool *v)
{
    return sd_config_bool(j, key, *v, v);
}

sd_status sd_sched_config_from_json(const sd_config *j, int kind, sd_sched_config *c)
{
    if (!j || !c)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler config: missing argument");
    if (kind < 0) {
        const char *cls = NULL;
        SD_TRY(sd_config_str(j, "_class_name", NULL, &cls));
        if (!cls)
            return sd_fail(SD_ERR_FORMAT,
                           "%s: no _class_name; name the scheduler explicitly (sd_sched_config_load_as)", j->path);
        int found = -1;
        for (int k = 0; k < SD_SCHED_KIND_COUNT; k++)
            if (strcmp(cls, class_names[k]) == 0)
                found = k;
        if (found < 0)
            return sd_fail(SD_ERR_UNSUPPORTED,
                           "%s: scheduler class %s is not supported (supported: LCMScheduler, "
                           "DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler, "
                           "EulerAncestralDiscreteScheduler, TCDScheduler); choose one by name to convert this config "
                           "(like diffusers from_config)",
                           j->path, cls);
        kind = found;
    }
    if (kind >= SD_SCHED_KIND_COUNT)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler config: invalid scheduler kind %d", kind);
    sd_sched_config_default(c, (sd_sched_kind)kind);
    /* options of newer diffusers versions that change the schedule: refuse rather than ignore */
    static const char *const newer[] = {"use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
                                        "use_dynamic_shifting"};
    for (size_t i = 0; i < SD_ARRAY_LEN(newer); i++) {
        bool on = false;
        if (sd_config_bool(j, newer[i], false, &on) == SD_OK && on)
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: %s = true is not supported (use the default false)", j->path,
                           newer[i]);
    }

    static const enum_entry betas[] = {
        {"linear", SD_BETA_LINEAR}, {"scaled_linear", SD_BETA_SCALED_LINEAR},
        {"squaredcos_cap_v2", SD_BETA_SQUAREDCOS_CAP_V2}};
    static const enum_entry preds[] = {
        {"epsilon", SD_PRED_EPSILON}, {"v_prediction", SD_PRED_V_PREDICTION}, {"sample", SD_PRED_SAMPLE},
        {"original_sample", SD_PRED_SAMPLE}};
    static const enum_entry spacings[] = {
        {"linspace", SD_SPACING_LINSPACE}, {"leading", SD_SPACING_LEADING}, {"trailing", SD_SPACING_TRAILING}};
    static const enum_entry algos[] = {
        {"dpmsolver++", SD_DPM_DPMSOLVER_PP}, {"dpmsolver", SD_DPM_DPMSOLVER},
        {"sde-dpmsolver++", SD_DPM_SDE_DPMSOLVER_PP}, {"sde-dpmsolver", SD_DPM_SDE_DPMSOLVER},
        {"deis", SD_DPM_DPMSOLVER_PP}};
    static const enum_entry solvers[] = {
        {"midpoint", SD_SOLVER_MIDPOINT}, {"heun", SD_SOLVER_HEUN}, {"logrho", SD_SOLVER_MIDPOINT},
        {"bh1", SD_SOLVER_MIDPOINT}, {"bh2", SD_SOLVER_MIDPOINT}};
    static const enum_entry finals[] = {{"zero", SD_FINAL_SIGMAS_ZERO}, {"sigma_min", SD_FINAL_SIGMAS_SIGMA_MIN}};
    static const enum_entry interps[] = {{"linear", SD_INTERP_LINEAR}, {"log_linear", SD_INTERP_LOG_LINEAR}};
    static const enum_entry ttypes[] = {{"discrete", SD_TIMESTEP_DISCRETE}, {"continuous", SD_TIMESTEP_CONTINUOUS}};

    int e;
    SD_TRY(get_int(j, "num_train_timesteps", &c->num_train_timesteps, 2, 100000));
    SD_TRY(get_f(j, "beta_start", &c->beta_start));
    SD_TRY(get_f(j, "beta_end", &c->beta_end));
    e = (int)c->beta_schedule;
    SD_TRY(parse_enum(j, "beta_schedule", betas, SD_ARRAY_LEN(betas), &e));
    c->beta_schedule = (sd_beta_schedule)e;
    c->trained_betas = sd_config_has(j, "trained_betas");
    e = (int)c->prediction_type;
    SD_TRY(parse_enum(j, "prediction_type", preds, SD_ARRAY_LEN(preds), &e));
    c->prediction_type = (sd_pred_type)e;
    e = (int)c->timestep_spacing;
    SD_TRY(parse_enum(j, "timestep_spacing", spacings, SD_ARRAY_LEN(spacings), &e));
    c->timestep_spacing = (sd_spacing)e;
    SD_TRY(get_int(j, "steps_offset", &c->steps_offset, -100000, 100000));
    SD_TRY(get_b(j, "set_alpha_to_one", &c->set_alpha_to_one));
    SD_TRY(get_b(j, "clip_sample", &c->clip_sample));
    SD_TRY(get_f(j, "clip_sample_range", &c->clip_sample_range));
    SD_TRY(get_b(j, "thresholding", &c->thresholding));
    SD_TRY(get_f(j, "dynamic_thresholding_ratio", &c->dynamic_thresholding_ratio));
    SD_TRY(get_f(j, "sample_max_value", &c->sample_max_value));
    SD_TRY(get_b(j, "rescale_betas_zero_snr", &c->rescale_betas_zero_snr));
    SD_TRY(get_int(j, "original_inference_steps", &c->original_inference_steps, 1, 100000));
    SD_TRY(get_f(j, "timestep_scaling", &c->timestep_scaling));
    e = (int)c->algorithm_type;
    SD_TRY(parse_enum(j, "algorithm_type", algos, SD_ARRAY_LEN(algos), &e));
    c->algorithm_type = (sd_dpm_algorithm)e;
    SD_TRY(get_int(j, "solver_order", &c->solver_order, 1, 3));
    e = (int)c->solver_type;
    SD_TRY(parse_enum(j, "solver_type", solvers, SD_ARRAY_LEN(solvers), &e));
    c->solver_type = (sd_solver_type)e;
    SD_TRY(get_b(j, "lower_order_final", &c->lower_order_final));
    SD_TRY(get_b(j, "euler_at_final", &c->euler_at_final));
    SD_TRY(get_b(j, "use_karras_sigmas", &c->use_karras_sigmas));
    SD_TRY(get_b(j, "use_lu_lambdas", &c->use_lu_lambdas));
    e = (int)c->final_sigmas_type;
    SD_TRY(parse_enum(j, "final_sigmas_type", finals, SD_ARRAY_LEN(finals), &e));
    c->final_sigmas_type = (sd_final_sigmas)e;
    SD_TRY(get_f(j, "lambda_min_clipped", &c->lambda_min_clipped));
    if (sd_config_has(j, "variance_type")) {
        const char *v = NULL;
        SD_TRY(sd_config_str(j, "variance_type", NULL, &v));
        c->variance_type_learned = v && (strcmp(v, "learned") == 0 || strcmp(v, "learned_range") == 0);
    }
    SD_TRY(get_f(j, "eta", &c->eta));
    e = (int)c->interpolation_type;
    SD_TRY(parse_enum(j, "interpolation_type", interps, SD_ARRAY_LEN(interps), &e));
    c->interpolation_type = (sd_interp)e;
    e = (int)c->timestep_type;
    SD_TRY(parse_enum(j, "timestep_type", ttypes, SD_ARRAY_LEN(ttypes), &e));
    c->timestep_type = (sd_timestep_type)e;
    SD_TRY(get_f(j, "sigma_min", &c->sigma_min));
    SD_TRY(get_f(j, "sigma_max", &c->sigma_max));
    SD_TRY(get_f(j, "s_churn", &c->s_churn));
    SD_TRY(get_f(j, "s_tmin", &c->s_tmin));
    SD_TRY(get_f(j, "s_tmax", &c->s_tmax));
    SD_TRY(get_f(j, "s_noise", &c->s_noise));
    return SD_OK;
}

static sd_status load_file(const char *path, int kind, sd_sched_config *c)
{
    if (!path)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler config: no path given");
    sd_config j;
    SD_TRY(sd_config_load(path, &j));
    sd_status st = sd_sched_config_from_json(&j, kind, c);
    sd_config_free(&j);
    return st;
}

sd_status sd_sched_config_load(const char *scheduler_config_json, sd_sched_config *c)
{
    return load_file(scheduler_config_json, -1, c);
}

sd_status sd_sched_config_load_as(const char *scheduler_config_json, sd_sched_kind kind, sd_sched_config *c)
{
    if ((int)kind < 0 || kind >= SD_SCHED_KIND_COUNT)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "scheduler config: invalid scheduler kind %d", (int)kind);
    return load_file(scheduler_config_json, (int)kind, c);
}

void sd_sched_config_from_model(const sd_sched_config *model, sd_sched_kind kind, sd_sched_config *out)
{
    if (kind == model->kind) {
        *out = *model;
        return;
    }
    sd_sched_config d;
    sd_sched_config_default(&d, kind);
    d.num_train_timesteps = model->num_train_timesteps;
    d.beta_start = model->beta_start;
    d.beta_end = model->beta_end;
    d.beta_schedule = model->beta_schedule;
    d.trained_betas = model->trained_betas;
    d.prediction_type = model->prediction_type;
    d.steps_offset = model->steps_offset;
    d.timestep_spacing = model->timestep_spacing;
    d.set_alpha_to_one = model->set_alpha_to_one;
    d.rescale_betas_zero_snr = model->rescale_betas_zero_snr;
    *out = d;
}
