/* Internal state of sd_scheduler, shared by scheduler.c and sched_tables.c. */
#ifndef SD_SCHED_INTERNAL_H
#define SD_SCHED_INTERNAL_H

#include "sched/scheduler.h"

#include <math.h>

struct sd_scheduler {
    sd_sched_config cfg;
    int T;                  /* num_train_timesteps */
    float *betas;           /* [T] float32 as torch */
    float *alphas_cumprod;  /* [T] */
    float final_alpha_cumprod;
    float *sigma_table;     /* [T] sqrt((1-abar)/abar) (DPM, Euler kinds) */

    /* schedule (after set_timesteps) */
    int n;                  /* number of timesteps */
    double *timesteps;      /* [n] */
    int n_sigmas;
    float *sigmas;          /* [n_sigmas] (DPM, Euler kinds) */
    float init_noise_sigma;
    int num_inference_steps; /* diffusers' attribute of that name */

    /* DPM multistep state */
    float *hist[3];         /* model_outputs[0..order-1] (oldest first) */
    size_t hist_len;        /* element count the history was allocated for */
    int lower_order_nums;
    int next_step;          /* expected next step index, -1 = any */
};

/* LCM and TCD share diffusers' set_timesteps rule (original_inference_steps,
 * strength, custom timesteps). */
static inline bool sd_sched_lcm_schedule(sd_sched_kind k) { return k == SD_SCHED_LCM || k == SD_SCHED_TCD; }

/* Tables and schedules (sched_tables.c). */
sd_status sd_sched_build_tables(sd_scheduler *s);
sd_status sd_sched_build_schedule(sd_scheduler *s, int num_inference_steps, double strength,
                                  const int64_t *custom, int n_custom);

/* Torch float32 helpers shared by both files. */
static inline float sd_sched_alpha_of_sigma(float sigma) /* 1 / (sigma**2 + 1) ** 0.5 */
{
    return 1.0f / sqrtf(sigma * sigma + 1.0f);
}

#endif
