/* Noise tables and timestep / sigma schedules, reproducing the reference
 * arithmetic (diffusers v0.26.3 on torch float32 and numpy float64).
 *
 * numpy/torch behaviours reproduced here:
 *   - np.round is round-half-to-even (rint), np.floor for LCM's indices.
 *   - np.linspace(a, b, num): y[i] = i*step + a (step = (b-a)/div), last = b exactly.
 *   - np.arange(a, b, d) (float d): length ceil((b-a)/d), y[0] = a, y[1] = a + d,
 *     y[i] = a + i*((a + d) - a).
 *   - np.interp on xp = 0..T-1: slope*(x - j) + y[j], clamped at both ends.
 *   - torch.cumprod on CPU accumulates in double and rounds each output to float32.
 *   - torch.linspace(float32): the reference fixtures were produced by a torch build
 *     whose vectorised linspace kernel fuses multiply-adds (8-lane vectors, 16
 *     elements per loop iteration, scalar tail; base = start + step*idx for the first
 *     half, end - step*(steps-idx-1) for the second). Reproducing it makes the beta
 *     and alphas_cumprod tables bit-identical to the fixtures; an x86 torch build
 *     differs by at most 2 ulp in a few betas (< 1e-7 in alphas_cumprod).
 *   - Karras / sigma_to_t: log_sigma vs the float32 log-sigma table with numpy 1.x
 *     promotion (the fixture environment): comparison and the interpolation weight in
 *     float32, t in float64. */
#include "sched/sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- numpy / torch helpers */

static void np_linspace(double start, double stop, int num, bool endpoint, double *y)
{
    if (num <= 0)
        return;
    int div = endpoint ? num - 1 : num;
    double delta = stop - start;
    if (div > 0) {
        double step = delta / div;
        for (int i = 0; i < num; i++)
            y[i] = (step == 0.0 ? ((double)i / div) * delta : (double)i * step) + start;
    } else {
        for (int i = 0; i < num; i++)
            y[i] = (double)i * delta + start;
    }
    if (endpoint && num > 1)
        y[num - 1] = stop;
}

/* Length of np.arange(start, stop, step); -1 when absurd. */
static int np_arange_len(double start, double stop, double step)
{
    double len = ceil((stop - start) / step);
    if (!(len > 0))
        return 0;
    if (len > 1e7)
        return -1;
    return (int)len;
}

static void np_arange(double start, double step, int len, double *y)
{
    if (len <= 0)
        return;
    y[0] = start;
    if (len == 1)
        return;
    y[1] = start + step;
    double d = y[1] - start;
    for (int i = 2; i < len; i++)
        y[i] = start + (double)i * d;
}

/* np.interp(x, arange(T), fp) */
static double np_interp_arange(double x, const float *fp, int T)
{
    if (isnan(x))
        return x;
    if (x < 0.0)
        return fp[0];
    if (x >= (double)(T - 1))
        return fp[T - 1];
    int j = (int)floor(x);
    if ((double)j == x)
        return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - (double)j) + (double)fp[j];
}

static void torch_linspace_f32(double start_d, double end_d, int steps, float *out)
{
    float start = (float)start_d, end = (float)end_d;
    if (steps == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(steps - 1);
    int halfway = steps / 2;
    enum { W = 8 };
    int nvec = (steps / (2 * W)) * (2 * W);
    for (int b = 0; b < nvec; b += W) {
        float base = b < halfway ? fmaf(step, (float)b, start) : fmaf(-step, (float)(steps - b - 1), end);
        for (int j = 0; j < W; j++)
            out[b + j] = fmaf((float)j, step, base);
    }
    for (int k = nvec; k < steps; k++)
        out[k] = k < halfway ? fmaf(step, (float)k, start) : fmaf(-step, (float)(steps - k - 1), end);
}

static void torch_cumprod_f32(const float *a, float *out, int n)
{
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= (double)a[i];
        out[i] = (float)acc;
    }
}

static double alpha_bar_cosine(double t)
{
    double v = cos((t + 0.008) / 1.008 * 3.14159265358979323846 / 2.0);
    return v * v;
}

/* rescale_zero_terminal_snr, float32 */
static sd_status rescale_zero_snr(float *betas, int T)
{
    float *a = sd_malloc((size_t)T * sizeof(float));
    float *sq = sd_malloc((size_t)T * sizeof(float));
    if (!a || !sq) {
        free(a);
        free(sq);
        return SD_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < T; i++)
        a[i] = 1.0f - betas[i];
    torch_cumprod_f32(a, sq, T);
    for (int i = 0; i < T; i++)
        sq[i] = sqrtf(sq[i]);
    float s0 = sq[0], sT = sq[T - 1];
    float scale = s0 / (s0 - sT);
    for (int i = 0; i < T; i++) {
        sq[i] = sq[i] - sT;
        sq[i] = sq[i] * scale;
        sq[i] = sq[i] * sq[i]; /* alphas_bar */
    }
    betas[0] = 1.0f - sq[0];
    for (int i = 1; i < T; i++)
        betas[i] = 1.0f - sq[i] / sq[i - 1];
    free(a);
    free(sq);
    return SD_OK;
}

sd_status sd_sched_build_tables(sd_scheduler *s)
{
    const sd_sched_config *c = &s->cfg;
    int T = s->T;
    s->betas = sd_malloc((size_t)T * sizeof(float));
    s->alphas_cumprod = sd_malloc((size_t)T * sizeof(float));
    float *alphas = sd_malloc((size_t)T * sizeof(float));
    if (!s->betas || !s->alphas_cumprod || !alphas) {
        free(alphas);
        return SD_ERR_OUT_OF_MEMORY;
    }
    switch (c->beta_schedule) {
    case SD_BETA_LINEAR:
        torch_linspace_f32(c->beta_start, c->beta_end, T, s->betas);
        break;
    case SD_BETA_SCALED_LINEAR:
        torch_linspace_f32(sqrt(c->beta_start), sqrt(c->beta_end), T, s->betas);
        for (int i = 0; i < T; i++)
            s->betas[i] = s->betas[i] * s->betas[i];
        break;
    case SD_BETA_SQUAREDCOS_CAP_V2:
        for (int i = 0; i < T; i++) {
            double t1 = (double)i / T, t2 = (double)(i + 1) / T;
            double b = 1.0 - alpha_bar_cosine(t2) / alpha_bar_cosine(t1);
            s->betas[i] = (float)(b < 0.999 ? b : 0.999);
        }
        break;
    }
    bool rescale = c->rescale_betas_zero_snr && c->kind != SD_SCHED_DPMPP_2M;
    if (rescale) {
        sd_status st = rescale_zero_snr(s->betas, T);
        if (st != SD_OK) {
            free(alphas);
            return st;
        }
    }
    for (int i = 0; i < T; i++)
        alphas[i] = 1.0f - s->betas[i];
    torch_cumprod_f32(alphas, s->alphas_cumprod, T);
    free(alphas);
    if (rescale && (c->kind == SD_SCHED_EULER || c->kind == SD_SCHED_EULER_A))
        s->alphas_cumprod[T - 1] = 0x1p-24f;
    s->final_alpha_cumprod = c->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    if (c->kind == SD_SCHED_DPMPP_2M || c->kind == SD_SCHED_EULER || c->kind == SD_SCHED_EULER_A) {
        s->sigma_table = sd_malloc((size_t)T * sizeof(float));
        if (!s->sigma_table)
            return SD_ERR_OUT_OF_MEMORY;
        for (int i = 0; i < T; i++) {
            float a = s->alphas_cumprod[i];
            s->sigma_table[i] = sqrtf((1.0f - a) / a);
        }
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- schedule storage */

static sd_status alloc_schedule(sd_scheduler *s, int n, int n_sigmas)
{
    free(s->timesteps);
    free(s->sigmas);
    s->timesteps = NULL;
    s->sigmas = NULL;
    s->n = 0;
    s->n_sigmas = 0;
    s->timesteps = sd_malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!s->timesteps)
        return SD_ERR_OUT_OF_MEMORY;
    if (n_sigmas > 0) {
        s->sigmas = sd_malloc((size_t)n_sigmas * sizeof(float));
        if (!s->sigmas)
            return SD_ERR_OUT_OF_MEMORY;
    }
    s->n = n;
    s->n_sigmas = n_sigmas;
    return SD_OK;
}

static sd_status check_int_range(const sd_scheduler *s, const char *what)
{
    for (int i = 0; i < s->n; i++) {
        if (s->timesteps[i] < 0 || s->timesteps[i] > s->T - 1)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "scheduler %s: timestep %.0f (index %d) is outside [0, %d]; check steps_offset / "
                           "timestep_spacing against num_inference_steps",
                           what, s->timesteps[i], i, s->T - 1);
    }
    return SD_OK;
}

/* Timesteps (float64 values before any rounding) of the usual spacings for DDIM / Euler:
 * linspace over [0, T-1] with N points, leading T//N * i + offset, trailing
 * round(arange(T, 0, -T/N)) - 1. Returns count (may differ from N for trailing). */
static int spacing_timesteps(const sd_scheduler *s, int N, double *ts, int cap, bool round_linspace)
{
    int T = s->T;
    switch (s->cfg.timestep_spacing) {
    case SD_SPACING_LINSPACE: {
        if (cap < N)
            return -1;
        double *lin = sd_malloc((size_t)N * sizeof(double));
        if (!lin)
            return -1;
        np_linspace(0.0, (double)(T - 1), N, true, lin);
        for (int i = 0; i < N; i++)
            ts[i] = round_linspace ? rint(lin[N - 1 - i]) : lin[N - 1 - i];
        free(lin);
        return N;
    }
    case SD_SPACING_LEADING: {
        if (cap < N)
            return -1;
        int ratio = T / N;
        for (int i = 0; i < N; i++)
            ts[i] = (double)((int64_t)(N - 1 - i) * ratio);
        return N;
    }
    case SD_SPACING_TRAILING: {
        double ratio = (double)T / N;
        int len = np_arange_len((double)T, 0.0, -ratio);
        if (len < 0 || len > cap)
            return -1;
        np_arange((double)T, -ratio, len, ts);
        for (int i = 0; i < len; i++)
            ts[i] = rint(ts[i]);
        return len;
    }
    }
    return -1;
}

/* ---------------------------------------------------------------- sigma_to_t / Karras */

static double sigma_to_t(double sigma, const float *log_sig, int T)
{
    float ls = (float)log(fmax(sigma, 1e-10));
    int last = -1;
    for (int i = 0; i < T; i++)
        if (ls >= log_sig[i])
            last = i;
    int lo = last < 0 ? 0 : last;
    if (lo > T - 2)
        lo = T - 2;
    float low = log_sig[lo], high = log_sig[lo + 1];
    float w = (low - ls) / (low - high);
    if (w < 0.0f)
        w = 0.0f;
    if (w > 1.0f)
        w = 1.0f;
    return (double)(1.0f - w) * (double)lo + (double)w * (double)(lo + 1);
}

static void karras_sigmas(double sigma_min, double sigma_max, int N, double *out)
{
    const double rho = 7.0;
    double *ramp = sd_malloc((size_t)N * sizeof(double));
    if (!ramp) {
        for (int i = 0; i < N; i++)
            out[i] = NAN;
        return;
    }
    np_linspace(0.0, 1.0, N, true, ramp);
    double min_inv = pow(sigma_min, 1.0 / rho);
    double max_inv = pow(sigma_max, 1.0 / rho);
    for (int i = 0; i < N; i++)
        out[i] = pow(max_inv + ramp[i] * (min_inv - max_inv), rho);
    free(ramp);
}

static float *log_sigma_table(const sd_scheduler *s)
{
    float *ls = sd_malloc((size_t)s->T * sizeof(float));
    if (ls)
        for (int i = 0; i < s->T; i++)
            ls[i] = (float)log((double)s->sigma_table[i]);
    return ls;
}

static float max_sigma(const float *sig, int n)
{
    float m = sig[0];
    for (int i = 1; i < n; i++)
        if (sig[i] > m)
            m = sig[i];
    return m;
}

/* ---------------------------------------------------------------- per kind */

/* LCMScheduler and TCDScheduler set_timesteps (the same rule in diffusers). */
static sd_status lcm_schedule(sd_scheduler *s, int N, double strength, const int64_t *custom, int nc)
{
    const char *cls = sd_sched_kind_class_name(s->cfg.kind);
    int T = s->T, orig = s->cfg.original_inference_steps;
    if (orig > T)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "%s: original_inference_steps %d cannot be larger than num_train_timesteps %d", cls, orig,
                       T);
    if (!(strength > 0.0 && strength <= 1.0))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: strength %g must be in (0, 1]", cls, strength);
    int k = T / orig;
    int count = (int)((double)orig * strength);
    if (custom) {
        for (int i = 0; i < nc; i++) {
            if (custom[i] < 0 || custom[i] >= T)
                return sd_fail(SD_ERR_INVALID_ARGUMENT,
                               "%s: custom timestep %lld (index %d) is outside [0, %d]", cls,
                               (long long)custom[i], i, T - 1);
            if (i > 0 && custom[i] >= custom[i - 1])
                return sd_fail(SD_ERR_INVALID_ARGUMENT,
                               "%s: custom timesteps must be in descending order (%lld then %lld)", cls,
                               (long long)custom[i - 1], (long long)custom[i]);
        }
        int init = (int)((double)nc * strength);
        if (init > nc)
            init = nc;
        int t_start = nc - init > 0 ? nc - init : 0;
        if (nc - t_start < 1)
            return sd_fail(SD_ERR_INVALID_ARGUMENT,
                           "%s: strength %g leaves none of the %d custom timesteps", cls, strength, nc);
        SD_TRY(alloc_schedule(s, nc - t_start, 0));
        for (int i = t_start; i < nc; i++)
            s->timesteps[i - t_start] = (double)custom[i];
        s->num_inference_steps = nc;
        return SD_OK;
    }
    if (N > orig)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "%s: num_inference_steps %d cannot be larger than original_inference_steps %d "
                       "(the schedule is a subset of the original %d-step schedule)",
                       cls, N, orig, orig);
    if (count / N < 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "%s: original_inference_steps x strength = %d x %g is smaller than "
                       "num_inference_steps %d; use fewer steps or a higher strength",
                       cls, orig, strength, N);
    double *idx = sd_malloc((size_t)N * sizeof(double));
    if (!idx)
        return SD_ERR_OUT_OF_MEMORY;
    np_linspace(0.0, (double)count, N, false, idx);
    sd_status st = alloc_schedule(s, N, 0);
    if (st == SD_OK) {
        for (int i = 0; i < N; i++) {
            int64_t j = (int64_t)floor(idx[i]);
            /* reversed origin: element j is (count - j) * k - 1 */
            s->timesteps[i] = (double)((count - j) * (int64_t)k - 1);
        }
        s->num_inference_steps = N;
    }
    free(idx);
    return st;
}

static sd_status ddim_schedule(sd_scheduler *s, int N)
{
    int cap = N + 2;
    double *ts = sd_malloc((size_t)cap * sizeof(double));
    if (!ts)
        return SD_ERR_OUT_OF_MEMORY;
    int n = spacing_timesteps(s, N, ts, cap, true);
    if (n < 1) {
        free(ts);
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "DDIM scheduler: cannot build a schedule of %d steps", N);
    }
    sd_status st = alloc_schedule(s, n, 0);
    if (st == SD_OK) {
        for (int i = 0; i < n; i++) {
            double t = ts[i];
            if (s->cfg.timestep_spacing == SD_SPACING_LEADING)
                t += s->cfg.steps_offset;
            else if (s->cfg.timestep_spacing == SD_SPACING_TRAILING)
                t -= 1;
            s->timesteps[i] = t;
        }
        s->num_inference_steps = N;
        st = check_int_range(s, "DDIM");
    }
    free(ts);
    return st;
}

static sd_status dpm_schedule(sd_scheduler *s, int N)
{
    const sd_sched_config *c = &s->cfg;
    int T = s->T;
    /* lambda_min_clipped: number of lambda_t (float32) below it */
    int clipped = 0;
    if (c->lambda_min_clipped > -INFINITY) {
        for (int t = 0; t < T; t++) {
            float a = s->alphas_cumprod[t];
            float lam = logf(sqrtf(a)) - logf(sqrtf(1.0f - a));
            if ((double)lam < c->lambda_min_clipped)
                clipped++;
        }
    }
    int last = T - clipped;
    if (last < 1)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "DPM-Solver scheduler: lambda_min_clipped = %g excludes every timestep", c->lambda_min_clipped);
    int cap = N + 2;
    double *ts = sd_malloc((size_t)cap * sizeof(double));
    double *sig = sd_malloc((size_t)cap * sizeof(double));
    float *log_sig = NULL;
    sd_status st = SD_OK;
    if (!ts || !sig) {
        st = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    int n = 0;
    switch (c->timestep_spacing) {
    case SD_SPACING_LINSPACE: {
        double *lin = sd_malloc((size_t)(N + 1) * sizeof(double));
        if (!lin) {
            st = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        np_linspace(0.0, (double)(last - 1), N + 1, true, lin);
        for (int i = 0; i < N; i++)
            ts[i] = rint(lin[N - i]);
        free(lin);
        n = N;
        break;
    }
    case SD_SPACING_LEADING: {
        int ratio = last / (N + 1);
        for (int i = 0; i < N; i++)
            ts[i] = (double)((int64_t)(N - i) * ratio + c->steps_offset);
        n = N;
        break;
    }
    case SD_SPACING_TRAILING: {
        double ratio = (double)T / N;
        n = np_arange_len((double)last, 0.0, -ratio);
        if (n < 1 || n > cap) {
            st = sd_fail(SD_ERR_INVALID_ARGUMENT, "DPM-Solver scheduler: cannot build a trailing schedule of %d steps",
                         N);
            goto done;
        }
        np_arange((double)last, -ratio, n, ts);
        for (int i = 0; i < n; i++)
            ts[i] = rint(ts[i]) - 1.0;
        break;
    }
    }
    if (c->use_karras_sigmas || c->use_lu_lambdas) {
        log_sig = log_sigma_table(s);
        if (!log_sig) {
            st = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        n = N;
        if (c->use_karras_sigmas) {
            karras_sigmas((double)s->sigma_table[0], (double)s->sigma_table[T - 1], N, sig);
        } else {
            double *ramp = sd_malloc((size_t)N * sizeof(double));
            if (!ramp) {
                st = SD_ERR_OUT_OF_MEMORY;
                goto done;
            }
            np_linspace(0.0, 1.0, N, true, ramp);
            double lmin = (double)log_sig[0], lmax = (double)log_sig[T - 1];
            for (int i = 0; i < N; i++)
                sig[i] = exp(lmax + ramp[i] * (lmin - lmax));
            free(ramp);
        }
        for (int i = 0; i < N; i++)
            ts[i] = rint(sigma_to_t(sig[i], log_sig, T));
    } else {
        for (int i = 0; i < n; i++)
            sig[i] = np_interp_arange(ts[i], s->sigma_table, T);
    }
    st = alloc_schedule(s, n, n + 1);
    if (st != SD_OK)
        goto done;
    for (int i = 0; i < n; i++) {
        s->timesteps[i] = ts[i];
        s->sigmas[i] = (float)sig[i];
    }
    s->sigmas[n] = c->final_sigmas_type == SD_FINAL_SIGMAS_SIGMA_MIN ? s->sigma_table[0] : 0.0f;
    s->num_inference_steps = n;
    s->init_noise_sigma = 1.0f;
done:
    free(ts);
    free(sig);
    free(log_sig);
    return st;
}

static sd_status euler_schedule(sd_scheduler *s, int N)
{
    const sd_sched_config *c = &s->cfg;
    int T = s->T;
    bool ancestral = c->kind == SD_SCHED_EULER_A;
    int cap = N + 2;
    double *ts = sd_malloc((size_t)cap * sizeof(double));
    double *sig = sd_malloc((size_t)(cap + 1) * sizeof(double));
    float *log_sig = NULL;
    sd_status st = SD_OK;
    if (!ts || !sig) {
        st = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    int n = spacing_timesteps(s, N, ts, cap, false);
    if (n < 1) {
        st = sd_fail(SD_ERR_INVALID_ARGUMENT, "Euler scheduler: cannot build a schedule of %d steps", N);
        goto done;
    }
    /* float32 timesteps */
    for (int i = 0; i < n; i++) {
        float t = (float)ts[i];
        if (c->timestep_spacing == SD_SPACING_LEADING)
            t = t + (float)c->steps_offset;
        else if (c->timestep_spacing == SD_SPACING_TRAILING)
            t = t - 1.0f;
        ts[i] = (double)t;
    }
    int nsig = n; /* entries before the appended 0 */
    if (!ancestral && c->interpolation_type == SD_INTERP_LOG_LINEAR) {
        /* torch.linspace(log(sigma[-1]), log(sigma[0]), N + 1).exp() (float32), as in v0.26.3 */
        nsig = N + 1;
        float *lin = sd_malloc((size_t)nsig * sizeof(float));
        if (!lin) {
            st = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        torch_linspace_f32((double)logf(s->sigma_table[T - 1]), (double)logf(s->sigma_table[0]), nsig, lin);
        for (int i = 0; i < nsig; i++)
            sig[i] = (double)expf(lin[i]);
        free(lin);
    } else {
        for (int i = 0; i < n; i++)
            sig[i] = np_interp_arange(ts[i], s->sigma_table, T);
    }
    if (!ancestral && c->use_karras_sigmas) {
        log_sig = log_sigma_table(s);
        if (!log_sig) {
            st = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        double smin = isnan(c->sigma_min) ? sig[nsig - 1] : c->sigma_min;
        double smax = isnan(c->sigma_max) ? sig[0] : c->sigma_max;
        karras_sigmas(smin, smax, N, sig);
        nsig = N;
        n = N;
        for (int i = 0; i < N; i++)
            ts[i] = (double)(float)sigma_to_t(sig[i], log_sig, T);
    }
    st = alloc_schedule(s, n, nsig + 1);
    if (st != SD_OK)
        goto done;
    for (int i = 0; i < nsig; i++)
        s->sigmas[i] = (float)sig[i];
    s->sigmas[nsig] = 0.0f;
    for (int i = 0; i < n; i++) {
        if (!ancestral && c->timestep_type == SD_TIMESTEP_CONTINUOUS && c->prediction_type == SD_PRED_V_PREDICTION)
            s->timesteps[i] = (double)(0.25f * logf(s->sigmas[i]));
        else
            s->timesteps[i] = ts[i];
    }
    s->num_inference_steps = N;
    float m = max_sigma(s->sigmas, s->n_sigmas);
    s->init_noise_sigma = c->timestep_spacing == SD_SPACING_LEADING ? sqrtf(m * m + 1.0f) : m;
done:
    free(ts);
    free(sig);
    free(log_sig);
    return st;
}

sd_status sd_sched_build_schedule(sd_scheduler *s, int N, double strength, const int64_t *custom, int n_custom)
{
    s->init_noise_sigma = 1.0f;
    switch (s->cfg.kind) {
    case SD_SCHED_LCM:
    case SD_SCHED_TCD:
        return lcm_schedule(s, N, strength, custom, n_custom);
    case SD_SCHED_DDIM:
        return ddim_schedule(s, N);
    case SD_SCHED_DPMPP_2M:
        return dpm_schedule(s, N);
    case SD_SCHED_EULER:
    case SD_SCHED_EULER_A:
        return euler_schedule(s, N);
    default:
        return sd_fail(SD_ERR_INTERNAL, "scheduler: invalid kind %d", (int)s->cfg.kind);
    }
}
