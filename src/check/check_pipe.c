/* Pipeline cases: diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline /
 * LatentConsistencyModelPipeline / StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline replayed
 * with the recorded noise. Besides the final latents and image, whatever the case records of the run is
 * compared: per-step latents and UNet calls (step.NNN.unet_sample / unet_out), img2img's init/noisy
 * latents, SDXL's pooled embeddings, added conditioning and token ids (exact); with ControlNets
 * (StableDiffusionControlNetPipeline, controlnet_dirs) the control images each net received and the summed
 * residuals fed to the UNet. */
#include "check/check.h"
#include "pipe/control.h"
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

static bool has_expected(sd_case *c, const char *name) { return c->expected && sd_st_find(c->expected, name); }

static void on_unet(void *user, int i, double t, const float *sample, const float *out, size_t n)
{
    step_ctx *s = user;
    char key[48];
    snprintf(key, sizeof key, "step.%03d.unet_sample", i);
    if (has_expected(s->c, key))
        sd_case_compare(s->c, key, sample, n);
    snprintf(key, sizeof key, "step.%03d.unet_out", i);
    if (has_expected(s->c, key))
        sd_case_compare(s->c, key, out, n);
    snprintf(key, sizeof key, "step.%03d.unet_timestep", i);
    if (has_expected(s->c, key)) {
        float tf = (float)t;
        sd_case_compare(s->c, key, &tf, 1);
    }
}

static void on_latents(void *user, const char *what, const float *x, size_t n)
{
    step_ctx *s = user;
    if (has_expected(s->c, what))
        sd_case_compare(s->c, what, x, n);
}

/* token ids must match exactly */
static void compare_ids(sd_case *c, const char *name, sd_tokenizer *tok, sd_tok_clean mode, const char *prompt)
{
    const sd_st_tensor *t = c->expected ? sd_st_find(c->expected, name) : NULL;
    if (!t || !tok)
        return;
    int32_t ids[1024];
    int len = (int)t->numel, nv = 0, nt = 0;
    c->n_checked++;
    if (len > 1024 || sd_tokenizer_encode(tok, prompt ? prompt : "", mode, ids, len, &nv, &nt) != SD_OK) {
        sd_case_fail(c, sd_last_error());
        c->n_checked--;
        return;
    }
    for (int i = 0; i < len; i++)
        if ((int64_t)ids[i] != (int64_t)sd_st_get(t, (size_t)i)) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s: token %d is %d, the reference has %lld", name, i, ids[i],
                     (long long)sd_st_get(t, (size_t)i));
            c->n_checked--;
            sd_case_fail(c, msg);
            return;
        }
    if (c->verbose)
        printf("  %-44s PASS  exact (%d ids)\n", name, len);
}

/* call_kwargs [a, b] -> out (absent: unchanged) */
static void int_pair(const sd_config *kw, const char *key, int out[2])
{
    int64_t v[2];
    int n = 0;
    if (sd_config_has(kw, key) && sd_config_int_list(kw, key, v, 2, 2, &n) == SD_OK && n == 2) {
        out[0] = (int)v[0];
        out[1] = (int)v[1];
    }
}

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

/* call_kwargs value `key` as one number or a list of n (one per ControlNet); absent: def */
static sd_status per_net(sd_case *c, const sd_config *kw, const char *key, int n, double def, float *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kw->root, key);
    for (int k = 0; k < n; k++)
        out[k] = (float)def;
    if (!v || cJSON_IsNull(v))
        return SD_OK;
    if (cJSON_IsNumber(v)) {
        for (int k = 0; k < n; k++)
            out[k] = (float)v->valuedouble;
        return SD_OK;
    }
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (k >= n || !cJSON_IsNumber(e))
            return sd_fail(SD_ERR_FORMAT, "%s: call_kwargs '%s' must be a number or %d numbers", c->name, key, n);
        out[k++] = (float)e->valuedouble;
    }
    if (k != n)
        return sd_fail(SD_ERR_FORMAT, "%s: call_kwargs '%s' has %d entries for %d ControlNets", c->name, key, k, n);
    return SD_OK;
}

typedef struct {
    sd_controlnet *net[SD_PIPE_MAX_CONTROLS];
    float *img[SD_PIPE_MAX_CONTROLS];
    sd_pipe_control pc[SD_PIPE_MAX_CONTROLS];
    int n;
} case_controls;

static void controls_free(case_controls *cc)
{
    for (int k = 0; k < SD_PIPE_MAX_CONTROLS; k++) {
        sd_controlnet_free(cc->net[k]);
        free(cc->img[k]);
    }
}

/* controlnet_dirs + the control image inputs (tensor_call_kwargs image: one name or a list) + scales */
static sd_status load_controls(sd_case *c, sd_model *m, const sd_config *kw, int width, int height, bool img2img,
                               case_controls *cc)
{
    /* the control image argument: `image` (txt2img), `control_image` (img2img, where `image` is the init image) */
    const char *arg = img2img ? "control_image" : "image";
    const cJSON *dirs = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "controlnet_dirs");
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "tensor_call_kwargs");
    const cJSON *imgs = tk ? cJSON_GetObjectItemCaseSensitive(tk, arg) : NULL;
    if (!cJSON_IsArray(dirs) || !imgs)
        return sd_fail(SD_ERR_FORMAT, "%s: a ControlNet case needs controlnet_dirs and tensor_call_kwargs.%s", c->name,
                       arg);
    cc->n = cJSON_GetArraySize(dirs);
    if (cc->n < 1 || cc->n > SD_PIPE_MAX_CONTROLS)
        return sd_fail(SD_ERR_FORMAT, "%s: %d controlnet_dirs", c->name, cc->n);
    float scale[SD_PIPE_MAX_CONTROLS], start[SD_PIPE_MAX_CONTROLS], end[SD_PIPE_MAX_CONTROLS];
    SD_TRY(per_net(c, kw, "controlnet_conditioning_scale", cc->n, 1.0, scale));
    SD_TRY(per_net(c, kw, "control_guidance_start", cc->n, 0.0, start));
    SD_TRY(per_net(c, kw, "control_guidance_end", cc->n, 1.0, end));
    for (int k = 0; k < cc->n; k++) {
        const cJSON *d = cJSON_GetArrayItem(dirs, k);
        const cJSON *in = cJSON_IsArray(imgs) ? cJSON_GetArrayItem(imgs, k) : k == 0 ? imgs : NULL;
        if (!cJSON_IsString(d) || !cJSON_IsString(in))
            return sd_fail(SD_ERR_FORMAT, "%s: controlnet_dirs / tensor_call_kwargs.image entry %d is not a string",
                           c->name, k);
        char *dir = sd_path_join(c->root, d->valuestring);
        if (!dir)
            return SD_ERR_OUT_OF_MEMORY;
        sd_status s = sd_controlnet_load(m, dir, &cc->net[k]);
        free(dir);
        SD_TRY(s);
        const sd_st_tensor *t = sd_case_input(c, in->valuestring);
        if (!t)
            return SD_ERR_FORMAT;
        if (t->ndim != 4 || t->shape[0] != 1 || t->shape[2] != height || t->shape[3] != width)
            return sd_fail(SD_ERR_FORMAT, "%s: control image '%s' must be [1,C,%d,%d]", c->name, in->valuestring,
                           height, width);
        if (!(cc->img[k] = sd_case_input_f32(c, in->valuestring, NULL)))
            return SD_ERR_OUT_OF_MEMORY;
        cc->pc[k] = (sd_pipe_control){cc->net[k]->net, cc->img[k], scale[k], start[k], end[k]};
    }
    return SD_OK;
}

sd_status sd_check_pipe(sd_case *c)
{
    const char *pipeline = NULL;
    SD_TRY(sd_config_str(&c->manifest, "pipeline", NULL, &pipeline));
    bool img2img = strstr(pipeline, "Img2Img") != NULL;
    bool lcm_pipe = !strcmp(pipeline, "LatentConsistencyModelPipeline");
    bool cn_pipe = !strcmp(pipeline, "StableDiffusionControlNetPipeline") ||
                   !strcmp(pipeline, "StableDiffusionControlNetImg2ImgPipeline") ||
                   !strcmp(pipeline, "StableDiffusionXLControlNetPipeline") ||
                   !strcmp(pipeline, "StableDiffusionXLControlNetImg2ImgPipeline");
    bool xl_pipe = !strcmp(pipeline, "StableDiffusionXLPipeline") || !strcmp(pipeline, "StableDiffusionXLImg2ImgPipeline") ||
                   !strncmp(pipeline, "StableDiffusionXLControlNet", 27);
    if (strcmp(pipeline, "StableDiffusionPipeline") && strcmp(pipeline, "StableDiffusionImg2ImgPipeline") && !lcm_pipe &&
        !xl_pipe && !cn_pipe)
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
    case_controls cc = {0};
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
    int64_t nimg = 1;
    sd_config_int(&kw, "num_images_per_prompt", 1, &nimg);
    a.batch = (int)nimg;
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
    a.on_unet = on_unet;
    a.on_latents = on_latents;
    const char *prompt2 = NULL, *neg2 = NULL;
    sd_config_str(&kw, "prompt_2", NULL, &prompt2);
    sd_config_str(&kw, "negative_prompt_2", NULL, &neg2);
    a.prompt_2 = prompt2;
    a.negative_prompt_2 = neg2;
    int_pair(&kw, "original_size", a.micro.original_size);
    int_pair(&kw, "crops_coords_top_left", a.micro.crops_top_left);
    int_pair(&kw, "target_size", a.micro.target_size);
    int_pair(&kw, "negative_original_size", a.micro.negative_original_size);
    int_pair(&kw, "negative_crops_coords_top_left", a.micro.negative_crops_top_left);
    int_pair(&kw, "negative_target_size", a.micro.negative_target_size);
    if (xl_pipe != m->sdxl) {
        s = sd_fail(SD_ERR_FORMAT, "%s: the case runs %s but the model folder is %s an SDXL model", c->name, pipeline,
                    m->sdxl ? "" : "not");
        goto done;
    }
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
    if (cn_pipe) {
        if ((s = load_controls(c, m, &kw, a.width, a.height, img2img, &cc)) != SD_OK)
            goto done;
        a.controls = cc.pc;
        a.n_controls = cc.n;
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
    if (m->sdxl) {
        sd_case_compare(c, "pooled_prompt_embeds", o.pooled_prompt_embeds, o.pooled_n);
        if (has_expected(c, "negative_pooled_prompt_embeds")) {
            if (o.negative_pooled_prompt_embeds)
                sd_case_compare(c, "negative_pooled_prompt_embeds", o.negative_pooled_prompt_embeds, o.pooled_n);
            else
                sd_case_fail(c, "the reference ran classifier-free guidance, the pipeline did not");
        }
        sd_case_compare(c, "add_text_embeds", o.add_text_embeds, (size_t)o.unet_rows * o.pooled_n);
        sd_case_compare(c, "add_time_ids", o.add_time_ids, (size_t)o.unet_rows * SD_UNET_TIME_IDS);
        compare_ids(c, "input_ids.tokenizer", m->tok, m->tok_mode, prompt);
        compare_ids(c, "input_ids.tokenizer_2", m->tok2, m->tok_mode, prompt2 && *prompt2 ? prompt2 : prompt);
        compare_ids(c, "negative_input_ids.tokenizer", m->tok, m->tok_mode, neg);
        compare_ids(c, "negative_input_ids.tokenizer_2", m->tok2, m->tok_mode, neg2 && *neg2 ? neg2 : neg);
    } else {
        compare_ids(c, "input_ids.tokenizer", m->tok, m->tok_mode, prompt);
        compare_ids(c, "negative_input_ids.tokenizer", m->tok, m->tok_mode, neg);
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
    controls_free(&cc);
    sd_scheduler_free(sched);
    sd_model_free(m);
    return s;
}
