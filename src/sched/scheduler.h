/* Diffusion schedulers on host float32 latents, matching Hugging Face diffusers
 * v0.26.3 (the version the reference fixtures were made with):
 *   LCMScheduler, DPMSolverMultistepScheduler, DDIMScheduler,
 *   EulerDiscreteScheduler, EulerAncestralDiscreteScheduler;
 * and TCDScheduler (added in diffusers 0.27; matches 0.42, the v2 fixtures).
 *
 * Numerics follow the reference: the beta / alphas_cumprod / sigma tables are
 * float32 as torch computes them (cumprod accumulated in double), timestep and
 * Karras/interpolated sigma schedules are computed in float64 like numpy and then
 * stored as float32, and the per-step arithmetic is float32 in torch's operation
 * order (scalar coefficients first, then element-wise ops).
 *
 * Usage (a pipeline):
 *   sd_sched_config c; sd_sched_config_load_as("model/scheduler/scheduler_config.json", SD_SCHED_LCM, &c);
 *   sd_scheduler *s; sd_scheduler_create(&c, &s);
 *   sd_scheduler_set_timesteps(s, 4, 1.0, NULL, 0);
 *   x = randn * sd_scheduler_init_noise_sigma(s);
 *   for (i = 0; i < sd_scheduler_num_timesteps(s); i++) {
 *       sd_scheduler_scale_model_input(s, i, x, xin, n);   // UNet input
 *       eps = unet(xin, sd_scheduler_timestep(s, i));
 *       noise = sd_scheduler_step_needs_noise(s, i) ? randn(n) : NULL;
 *       sd_scheduler_step(s, i, eps, x, noise, x, denoised, n);   // in place is fine
 *   }
 * Steps of the multistep solver (DPM) must be taken in order i, i+1, ... after
 * set_timesteps (or sd_scheduler_reset); the first step may be any index (img2img).
 */
#ifndef SD_SCHEDULER_H
#define SD_SCHEDULER_H

#include "core/core.h"
#include "io/config.h"

typedef enum sd_sched_kind {
    SD_SCHED_LCM = 0,
    SD_SCHED_DPMPP_2M, /* DPMSolverMultistepScheduler (any algorithm_type / order) */
    SD_SCHED_DDIM,
    SD_SCHED_EULER,
    SD_SCHED_EULER_A,
    SD_SCHED_TCD, /* TCDScheduler: LCM's schedule, gamma (config `eta`) picks the intermediate timestep s */
    SD_SCHED_KIND_COUNT
} sd_sched_kind;

typedef enum sd_beta_schedule { SD_BETA_LINEAR = 0, SD_BETA_SCALED_LINEAR, SD_BETA_SQUAREDCOS_CAP_V2 } sd_beta_schedule;
typedef enum sd_pred_type { SD_PRED_EPSILON = 0, SD_PRED_V_PREDICTION, SD_PRED_SAMPLE } sd_pred_type;
typedef enum sd_spacing { SD_SPACING_LINSPACE = 0, SD_SPACING_LEADING, SD_SPACING_TRAILING } sd_spacing;
typedef enum sd_dpm_algorithm {
    SD_DPM_DPMSOLVER_PP = 0, /* "dpmsolver++" (and "deis", which diffusers maps to it) */
    SD_DPM_DPMSOLVER,        /* "dpmsolver" */
    SD_DPM_SDE_DPMSOLVER_PP, /* "sde-dpmsolver++": one noise tensor per step */
    SD_DPM_SDE_DPMSOLVER     /* "sde-dpmsolver": one noise tensor per step */
} sd_dpm_algorithm;
typedef enum sd_solver_type { SD_SOLVER_MIDPOINT = 0, SD_SOLVER_HEUN } sd_solver_type;
typedef enum sd_final_sigmas { SD_FINAL_SIGMAS_ZERO = 0, SD_FINAL_SIGMAS_SIGMA_MIN } sd_final_sigmas;
typedef enum sd_interp { SD_INTERP_LINEAR = 0, SD_INTERP_LOG_LINEAR } sd_interp;
typedef enum sd_timestep_type { SD_TIMESTEP_DISCRETE = 0, SD_TIMESTEP_CONTINUOUS } sd_timestep_type;

/* Every field of the six diffusers classes (v0.26.3 names and defaults; TCD: 0.42).
 * Fields a kind does not use are ignored for it. */
typedef struct sd_sched_config {
    sd_sched_kind kind;
    int num_train_timesteps;   /* 1000 */
    double beta_start, beta_end;
    sd_beta_schedule beta_schedule;
    bool trained_betas;        /* config had a non-null trained_betas: unsupported */
    sd_pred_type prediction_type;
    sd_spacing timestep_spacing;
    int steps_offset;
    bool set_alpha_to_one;     /* LCM, DDIM */
    bool clip_sample;          /* LCM, DDIM */
    double clip_sample_range;
    bool thresholding;         /* LCM, DDIM, DPM: unsupported when true */
    double dynamic_thresholding_ratio, sample_max_value;
    bool rescale_betas_zero_snr; /* LCM, DDIM, Euler, EulerA (DPM in 0.26.3 has no such option) */
    /* LCM, TCD */
    int original_inference_steps; /* 50 */
    double timestep_scaling;      /* 10 */
    /* DPMSolverMultistep */
    sd_dpm_algorithm algorithm_type;
    int solver_order; /* 1..3 */
    sd_solver_type solver_type;
    bool lower_order_final, euler_at_final, use_karras_sigmas, use_lu_lambdas;
    sd_final_sigmas final_sigmas_type;
    double lambda_min_clipped; /* -inf */
    bool variance_type_learned; /* variance_type "learned"/"learned_range": unsupported */
    /* DDIM eta; TCD gamma (diffusers' step(eta=...), the paper's gamma), 0..1: s = floor((1-gamma) t_prev).
     * A pipeline call argument in diffusers (default 0), kept here. */
    double eta;
    /* Euler */
    sd_interp interpolation_type;
    sd_timestep_type timestep_type;
    double sigma_min, sigma_max; /* NAN = None (used with use_karras_sigmas) */
    double s_churn, s_tmin, s_tmax, s_noise; /* step() arguments: 0, 0, inf, 1 */
} sd_sched_config;

/* diffusers defaults of the class behind `kind`. */
void sd_sched_config_default(sd_sched_config *c, sd_sched_kind kind);

/* Reads a diffusers scheduler_config.json; `_class_name` picks the kind (one of the
 * six classes, else SD_ERR_UNSUPPORTED naming it). */
sd_status sd_sched_config_load(const char *scheduler_config_json, sd_sched_config *c);
/* Like diffusers `Kind.from_config(json)`: the defaults of `kind`, overridden by the
 * keys present in the file (whatever its _class_name, e.g. an SD1.5 PNDM config). */
sd_status sd_sched_config_load_as(const char *scheduler_config_json, sd_sched_kind kind, sd_sched_config *c);
/* The same from an already parsed JSON object; kind < 0 means "from _class_name". */
sd_status sd_sched_config_from_json(const sd_config *json, int kind, sd_sched_config *c);

/* The config of a scheduler of `kind` built from a model's scheduler config, like diffusers
 * `Kind.from_config(pipe.scheduler.config)`: the defaults of `kind` with the model's noise schedule and
 * parameterisation (num_train_timesteps, beta_start/end, beta_schedule, prediction_type, steps_offset,
 * timestep_spacing, set_alpha_to_one, rescale_betas_zero_snr; a key the model's file lacks holds its
 * default there too). kind == model->kind: the model's config as it is. The one place a scheduler is
 * derived from a model (txt2img/img2img --sampler, the stream's LCM schedule). */
void sd_sched_config_from_model(const sd_sched_config *model, sd_sched_kind kind, sd_sched_config *out);

/* "lcm", "dpm++2m" / "dpmpp_2m" / "dpmpp2m" / "dpm2m" / "dpm" / "dpmsolver" (the algorithm
 * and order come from the config: defaults dpmsolver++ order 2), "ddim", "euler",
 * "euler_a" / "euler_ancestral", "tcd" (case-insensitive) and the diffusers class names.
 * Unknown -> SD_ERR_INVALID_ARGUMENT listing the valid names. */
sd_status sd_sched_kind_from_name(const char *name, sd_sched_kind *k);
const char *sd_sched_kind_name(sd_sched_kind k);       /* "lcm", "dpmpp_2m", ... */
const char *sd_sched_kind_class_name(sd_sched_kind k); /* "LCMScheduler", ... */

typedef struct sd_scheduler sd_scheduler;

/* Validates the config (unsupported options fail here with a named error) and
 * builds the beta / alphas_cumprod tables. */
sd_status sd_scheduler_create(const sd_sched_config *c, sd_scheduler **out);
void sd_scheduler_free(sd_scheduler *s);
const sd_sched_config *sd_scheduler_config(const sd_scheduler *s);

/* diffusers set_timesteps. `strength` (in (0, 1]; a double so that e.g. 0.7 gives
 * int(50 * 0.7) = 35 as in Python) is used by LCM and TCD only (their own
 * img2img trimming); other kinds ignore it (the img2img pipeline
 * trims: src/pipe/generate.c). `custom_timesteps` (descending, LCM/TCD only; NULL/0
 * for none) replaces num_inference_steps. LCM and TCD share the schedule rule (TCD's
 * set_timesteps without its original_inference_steps argument). Errors: steps < 1 or
 * > num_train_timesteps, LCM/TCD steps > original_inference_steps or >
 * original_inference_steps*strength, custom timesteps not descending / out of range,
 * custom timesteps for other kinds. */
sd_status sd_scheduler_set_timesteps(sd_scheduler *s, int num_inference_steps, double strength,
                                     const int64_t *custom_timesteps, int n_custom);
/* Restarts the multistep history (DPM) without changing the schedule. */
void sd_scheduler_reset(sd_scheduler *s);

int sd_scheduler_num_timesteps(const sd_scheduler *s); /* 0 before set_timesteps */
/* Timestep i as fed to the UNet (integers for LCM/TCD/DDIM/DPM, float32 values for Euler);
 * NAN when i is out of range. */
double sd_scheduler_timestep(const sd_scheduler *s, int i);
const double *sd_scheduler_timesteps(const sd_scheduler *s, int *n);
/* Sigma schedule (num_timesteps + 1 entries) for DPM / Euler kinds, else NULL, *n = 0. */
const float *sd_scheduler_sigmas(const sd_scheduler *s, int *n);
double sd_scheduler_init_noise_sigma(const sd_scheduler *s);
const float *sd_scheduler_alphas_cumprod(const sd_scheduler *s, int *n); /* num_train_timesteps */
const float *sd_scheduler_betas(const sd_scheduler *s, int *n);

/* scale_model_input for step i: Euler family x / sqrt(sigma_i^2 + 1), identity for
 * the others. `out` may equal `x`. */
sd_status sd_scheduler_scale_model_input(const sd_scheduler *s, int step_index, const float *x, float *out, size_t n);

/* Number of noise tensors (0 or 1, each n floats) step i consumes, in the reference's
 * draw order: LCM every step but the last (diffusers: step_index != num_inference_steps-1),
 * Euler every step (drawn even when unused: s_churn = 0), EulerAncestral every step,
 * DDIM when eta > 0, TCD when gamma (eta) > 0 on every step but the last (like LCM),
 * DPM for the sde-* algorithms. */
int sd_scheduler_step_needs_noise(const sd_scheduler *s, int step_index);

/* One step at schedule index i. `noise` must be given when step_needs_noise says so
 * (else SD_ERR_INVALID_ARGUMENT), otherwise it is ignored. `denoised` (may be NULL)
 * receives LCM's denoised, DDIM/Euler/EulerA's pred_original_sample, TCD's
 * pred_noised_sample (x_s, the second output of its step), or DPM's data
 * prediction x0 of this step. `prev_sample` may alias `sample` (in place); `denoised`
 * must not alias `sample`. */
sd_status sd_scheduler_step(sd_scheduler *s, int i, const float *model_output, const float *sample,
                            const float *noise, float *prev_sample, float *denoised, size_t n);

/* img2img forward noising at a schedule timestep: LCM/TCD/DDIM sqrt(abar_t) x0 +
 * sqrt(1-abar_t) noise (t integer in [0, T)); DPM alpha_t x0 + sigma_t noise with the
 * sigma of t's schedule index; Euler x0 + sigma noise (t must be in the schedule). */
sd_status sd_scheduler_add_noise(const sd_scheduler *s, const float *x0, const float *noise, double timestep,
                                 float *out, size_t n);

/* StreamDiffusion coefficient tables (LCM kind, after set_timesteps(N)): for each
 * t_index_list[k] (an index into the current schedule): the timestep, sqrt(abar_t),
 * sqrt(1-abar_t) (float32 torch sqrt) and LCM's c_skip, c_out
 * (get_scalings_for_boundary_condition_discrete in float32). Output arrays (n
 * entries each) may be NULL. */
sd_status sd_lcm_stream_coeffs(const sd_scheduler *s, const int *t_index_list, int n, int64_t *timesteps,
                               float *alpha_prod_t_sqrt, float *beta_prod_t_sqrt, float *c_skip, float *c_out);
/* LCM's c_skip / c_out for an integer timestep (float32, as torch). */
void sd_lcm_scalings(double timestep_scaling, int64_t t, float *c_skip, float *c_out);

/* LatentConsistencyModelPipeline.get_guidance_scale_embedding for one w (the pipeline
 * passes w = guidance_scale - 1): [sin(1000 w f_k) | cos(1000 w f_k)], f_k =
 * exp(-k ln(10000)/(half-1)), zero-padded when dim is odd; float32. dim >= 4. */
sd_status sd_lcm_guidance_embedding(float w, int dim, float *out);

#endif
