/* Pipeline cases: diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline /
 * LatentConsistencyModelPipeline replayed with the recorded noise. */
#include "check/check.h"
#include "pipe/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sd_case *c;
    int next;    /* next noise.NNN to replay */
    bool failed;
    bool euler;  /* Euler (churn 0): its per-step draw is unused */
} replay;

/* drawn_by of the manifest's noise_draws entry for `key` ("" if absent) */
static const char *drawn_by(sd_case *c, const char *key)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "noise_draws");
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "key"), *d = cJSON_GetObjectItemCaseSensitive(e, "drawn_by");
        if (cJSON_IsString(k) && !strcmp(k->valuestring, key))
            return cJSON_IsString(d) ? d->valuestring : "";
    }
    return "";
}

static void replay_noise(void *user, const char *who, float *out, size_t n)
{
    replay *r = user;
    char key[32];
    snprintf(key, sizeof key, "noise.%03d", r->next);
    /* an Euler step's unused draw that a newer diffusers did not make: supply zeros */
    if (!strcmp(who, "scheduler.step") && r->euler && !strstr(drawn_by(r->c, key), "euler")) {
        memset(out, 0, n * sizeof(float));
        return;
    }
    r->next++;
    const sd_st_tensor *t = r->c->inputs ? sd_st_find(r->c->inputs, key) : NULL;
    if (!t || t->numel != n) {
        if (!r->failed) {
            char msg[160];
            snprintf(msg, sizeof msg, "the pipeline drew noise %s of %zu values, the reference %s", key, n,
                     t ? "drew another size" : "drew nothing there");
            sd_case_fail(r->c, msg);
        }
        r->failed = true;
        memset(out, 0, n * sizeof(float));
        return;
    }
    sd_st_to_f32(t, out);
}

typedef struct {
    sd_case *c;
    bool lcm_pipeline;
} step_ctx;

static void on_step(void *user, int i, double t, const float *latents, const float *denoised, size_t n)
{
    step_ctx *s = user;
    char key[48];
    snprintf(key, sizeof key, "step_latents.%03d", i);
    sd_case_compare(s->c, key, latents, n);
    snprintf(key, sizeof key, "step_denoised.%03d", i);
    if (s->c->expected && sd_st_find(s->c->expected, key))
        sd_case_compare(s->c, key, denoised, n);
}

sd_status sd_check_pipe(sd_case *c)
{
    const char *pipeline = NULL;
    SD_TRY(sd_config_str(&c->manifest, "pipeline", NULL, &pipeline));
    bool img2img = strstr(pipeline, "Img2Img") != NULL;
    bool lcm_pipe = !strcmp(pipeline, "LatentConsistencyModelPipeline");
    if (strcmp(pipeline, "StableDiffusionPipeline") && strcmp(pipeline, "StableDiffusionImg2ImgPipeline") && !lcm_pipe)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: pipeline '%s' is not supported", c->name, pipeline);
    char *model_dir = sd_case_path(c, "model_dir");
    char *unet_dir = sd_config_has(&c->manifest, "unet_dir") ? sd_case_path(c, "unet_dir") : NULL;
    if (!model_dir)
        return SD_ERR_FORMAT;
    sd_model_params mp;
    sd_case_model_params(c, &mp);
    sd_model *m = NULL;
    sd_status s = sd_model_load_folder(model_dir, unet_dir, &mp, &m);
    free(model_dir);
    free(unet_dir);
    if (s != SD_OK)
        return s;

    sd_config kw, sc;
    sd_scheduler *sched = NULL;
    float *latents = NULL, *image = NULL;
    if ((s = sd_config_sub(&c->manifest, "call_kwargs", &kw)) != SD_OK ||
        (s = sd_config_sub(&c->manifest, "scheduler_config", &sc)) != SD_OK)
        goto done;
    sd_sched_config scfg;
    if ((s = sd_sched_config_from_json(&sc, -1, &scfg)) != SD_OK)
        goto done;
    /* the pipeline's eta argument (diffusers passes it to step(): DDIM eta, TCD gamma; default 0) */
    if ((scfg.kind == SD_SCHED_DDIM || scfg.kind == SD_SCHED_TCD) &&
        (s = sd_config_float(&kw, "eta", 0.0, &scfg.eta)) != SD_OK)
        goto done;
    if ((s = sd_scheduler_create(&scfg, &sched)) != SD_OK)
        goto done;
    const char *prompt = "", *neg = NULL;
    int64_t steps = 50, width = 0, height = 0;
    double g = 7.5, strength = 0.8;
    sd_config_str(&kw, "prompt", "", &prompt);
    sd_config_str(&kw, "negative_prompt", NULL, &neg);
    sd_config_int(&kw, "num_inference_steps", lcm_pipe ? 4 : 50, &steps);
    sd_config_float(&kw, "guidance_scale", lcm_pipe ? 8.5 : 7.5, &g);
    sd_config_float(&kw, "strength", 0.8, &strength);
    sd_model_info info;
    sd_model_get_info(m, &info);
    sd_config_int(&kw, "width", info.native_size, &width);
    sd_config_int(&kw, "height", info.native_size, &height);
    sd_pipe_args a = {0};
    a.prompt = prompt;
    a.negative_prompt = neg;
    a.batch = 1;
    a.steps = (int)steps;
    a.guidance_scale = (float)g;
    a.strength = (float)strength;
    a.sched = sched;
    replay r = {c, 0, false, scfg.kind == SD_SCHED_EULER && scfg.s_churn == 0};
    step_ctx sc2 = {c, lcm_pipe};
    a.noise = replay_noise;
    a.noise_user = &r;
    a.on_step = on_step;
    a.step_user = &sc2;
    if (img2img) {
        size_t n;
        if (!(image = sd_case_input_f32(c, "image", &n))) {
            s = SD_ERR_FORMAT;
            goto done;
        }
        const sd_st_tensor *it = sd_case_input(c, "image");
        a.height = (int)it->shape[2];
        a.width = (int)it->shape[3];
        for (size_t i = 0; i < n; i++) /* VaeImageProcessor.preprocess: [0,1] -> [-1,1] */
            image[i] = 2.0f * image[i] - 1.0f;
        a.image = image;
    } else {
        a.width = (int)width;
        a.height = (int)height;
        if (c->inputs && sd_st_find(c->inputs, "latents"))
            a.latents = latents = sd_case_input_f32(c, "latents", NULL);
    }
    sd_pipe_out o;
    if ((s = sd_pipe_run(m, &a, &o)) != SD_OK)
        goto done;
    sd_case_compare(c, "prompt_embeds", o.prompt_embeds, o.embeds_n);
    if (c->expected && sd_st_find(c->expected, "negative_prompt_embeds")) {
        if (o.negative_prompt_embeds)
            sd_case_compare(c, "negative_prompt_embeds", o.negative_prompt_embeds, o.embeds_n);
        else
            sd_case_fail(c, "the reference ran classifier-free guidance, the pipeline did not");
    }
    sd_case_compare(c, "final_latents", o.latents, o.latents_n);
    float ts[1024];
    for (int i = 0; i < o.n_timesteps; i++)
        ts[i] = (float)o.timesteps[i];
    sd_case_compare(c, "timesteps", ts, (size_t)o.n_timesteps);
    /* image_np: NHWC of (decoded/2+0.5).clamp(0,1) */
    size_t hw = (size_t)a.width * a.height, n = o.image_n;
    float *np = sd_malloc(n * sizeof(float));
    if (np) {
        for (size_t b = 0; b < n / (3 * hw); b++)
            for (size_t p = 0; p < hw; p++)
                for (int ch = 0; ch < 3; ch++) {
                    float v = o.image[(b * 3 + ch) * hw + p] * 0.5f + 0.5f;
                    np[(b * hw + p) * 3 + ch] = v < 0 ? 0 : v > 1 ? 1 : v;
                }
        sd_case_compare(c, "image_np", np, n);
        free(np);
    }
    sd_pipe_out_free(&o);
    char key[32];
    snprintf(key, sizeof key, "noise.%03d", r.next);
    if (!r.failed && c->inputs && sd_st_find(c->inputs, key))
        sd_case_fail(c, "the reference drew more noise than the pipeline");
done:
    free(latents);
    free(image);
    sd_scheduler_free(sched);
    sd_model_free(m);
    return s;
}
