/* Public generation API: sd_txt2img / sd_img2img on top of the pipeline core. */
#include "pipe/control.h"
#include "pipe/pipeline.h"

#include "io/image.h"
#include "sched/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_gen_default_params(sd_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->prompt = "";
    p->guidance_scale = 7.5f;
    p->seed = 42;
    p->batch_size = 1;
    p->strength = 0.8f;
    p->rng = SD_RNG_TYPE_TORCH;
}

static void rng_noise(void *user, const char *who, float *out, size_t n)
{
    (void)who;
    sd_rng_randn(user, out, n);
}

/* The scheduler for a request: the model's own config, or a named sampler
 * built on the model's noise schedule (betas, prediction type). */
static sd_status make_scheduler(const sd_model *m, const sd_gen_params *p, sd_scheduler **out, sd_sched_config *used)
{
    sd_sched_config c = m->sched_cfg;
    if (p->sampler && *p->sampler) {
        sd_sched_kind kind;
        SD_TRY(sd_sched_kind_from_name(p->sampler, &kind));
        sd_sched_config_from_model(&m->sched_cfg, kind, &c);
    }
    if (p->schedule && *p->schedule && strcmp(p->schedule, "default") != 0) {
        if (!strcmp(p->schedule, "karras")) {
            if (c.kind != SD_SCHED_DPMPP_2M && c.kind != SD_SCHED_EULER)
                return sd_fail(SD_ERR_INVALID_ARGUMENT,
                               "schedule \"karras\" works with the dpm++2m and euler samplers, not %s",
                               sd_sched_kind_name(c.kind));
            c.use_karras_sigmas = true;
        } else {
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown schedule '%s' (use default or karras)", p->schedule);
        }
    }
    if (c.kind == SD_SCHED_DDIM || c.kind == SD_SCHED_TCD)
        c.eta = p->eta; /* DDIM eta / TCD gamma, a pipeline argument in diffusers */
    *used = c;
    return sd_scheduler_create(&c, out);
}

static int default_steps(const sd_sched_config *c)
{
    if (c->kind == SD_SCHED_LCM || c->kind == SD_SCHED_TCD)
        return 4;
    if (c->kind == SD_SCHED_EULER && c->timestep_spacing == SD_SPACING_TRAILING)
        return 1; /* sd-turbo */
    if (c->kind == SD_SCHED_EULER_A && c->timestep_spacing == SD_SPACING_TRAILING)
        return 1; /* sdxl-turbo */
    return 20;
}

/* sd_control list -> pipeline controls: control images resized to the generation size (as diffusers'
 * control image processor: a plain resize) and converted to NCHW [0,1]. imgs[k] is malloc'd. */
static sd_status make_controls(const sd_model *m, const sd_gen_params *p, int W, int H, sd_pipe_control *pc,
                               float **imgs)
{
    if (p->n_controls < 0 || p->n_controls > SD_PIPE_MAX_CONTROLS || (p->n_controls && !p->controls))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "n_controls %d: 0..%d ControlNets, with a controls array",
                       p->n_controls, SD_PIPE_MAX_CONTROLS);
    if (p->n_controls && (W <= 0 || H <= 0 || W > SD_IMAGE_MAX_SIDE || H > SD_IMAGE_MAX_SIDE))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "size %dx%d out of range", W, H);
    for (int k = 0; k < p->n_controls; k++) {
        const sd_control *c = &p->controls[k];
        if (!c->net)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "controls[%d]: no ControlNet (net is NULL)", k);
        if (c->net->m != m)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "controls[%d]: the ControlNet %s was loaded for another model "
                           "(sd_controlnet_load with this model)", k, c->net->name);
        if (!c->image || !c->image->data || c->image->width <= 0 || c->image->height <= 0 ||
            c->image->width > SD_IMAGE_MAX_SIDE || c->image->height > SD_IMAGE_MAX_SIDE)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "controls[%d]: the control image is missing or empty", k);
        if (c->net->cfg.conditioning_channels != 3)
            return sd_fail(SD_ERR_UNSUPPORTED, "controls[%d]: ControlNet %s takes %lld conditioning channels, not an "
                           "RGB image", k, c->net->name, (long long)c->net->cfg.conditioning_channels);
        sd_rgb fit = {0};
        const sd_rgb *src = c->image;
        if (src->width != W || src->height != H) {
            SD_TRY(sd_rgb_resize(src, W, H, &fit));
            src = &fit;
        }
        size_t hw = (size_t)W * H;
        if (!(imgs[k] = sd_malloc(3 * hw * sizeof(float)))) {
            sd_rgb_free(&fit);
            return SD_ERR_OUT_OF_MEMORY;
        }
        for (size_t i = 0; i < hw; i++)
            for (int ch = 0; ch < 3; ch++)
                imgs[k][ch * hw + i] = src->data[3 * i + ch] / 255.0f;
        sd_rgb_free(&fit);
        pc[k] = (sd_pipe_control){c->net->net, imgs[k], c->scale, c->guidance_start, c->guidance_end};
    }
    return SD_OK;
}

static sd_status generate(sd_model *m, const sd_gen_params *p, const sd_image *init, sd_image *out)
{
    if (!m || !p || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "NULL argument");
    if (p->rng != SD_RNG_TYPE_TORCH && p->rng != SD_RNG_TYPE_FAST)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown rng type %d (SD_RNG_TYPE_TORCH or SD_RNG_TYPE_FAST)",
                       (int)p->rng);
    sd_model_info info;
    sd_model_get_info(m, &info);
    sd_scheduler *sched = NULL;
    sd_sched_config used;
    memset(&used, 0, sizeof used);
    SD_TRY(make_scheduler(m, p, &sched, &used));
    sd_pipe_args a = {0};
    a.prompt = p->prompt ? p->prompt : "";
    a.negative_prompt = p->negative_prompt ? p->negative_prompt : "";
    a.batch = p->batch_size;
    a.width = p->width ? p->width : (init ? init->width : info.native_size);
    a.height = p->height ? p->height : (init ? init->height : info.native_size);
    a.steps = p->steps ? p->steps : default_steps(&used);
    a.clip_skip = p->clip_skip;
    a.guidance_scale = p->guidance_scale;
    a.strength = p->strength;
    a.eta = p->eta;
    a.sched = sched;
    a.use_taesd = sd_model_use_taesd(m, p->use_taesd);
    a.progress = p->progress;
    a.progress_user = p->progress_user;
    a.prompt_2 = p->prompt_2;
    a.negative_prompt_2 = p->negative_prompt_2;
    for (int k = 0; k < 2; k++) {
        a.micro.original_size[k] = p->original_size[k];
        a.micro.crops_top_left[k] = p->crops_coords_top_left[k];
        a.micro.target_size[k] = p->target_size[k];
        a.micro.negative_original_size[k] = p->negative_original_size[k];
        a.micro.negative_crops_top_left[k] = p->negative_crops_coords_top_left[k];
        a.micro.negative_target_size[k] = p->negative_target_size[k];
    }
    sd_rng rng;
    sd_rng_init(&rng, p->rng == SD_RNG_TYPE_FAST ? SD_RNG_FAST : SD_RNG_TORCH, p->seed);
    a.noise = rng_noise;
    a.noise_user = &rng;
    float *img = NULL, *cimgs[SD_PIPE_MAX_CONTROLS] = {0};
    sd_pipe_control pc[SD_PIPE_MAX_CONTROLS];
    sd_status s = make_controls(m, p, a.width, a.height, pc, cimgs);
    a.controls = pc;
    a.n_controls = p->n_controls;
    if (s == SD_OK && init) {
        if (!init->data || init->width <= 0 || init->height <= 0) {
            for (int k = 0; k < SD_PIPE_MAX_CONTROLS; k++)
                free(cimgs[k]);
            sd_scheduler_free(sched);
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "img2img: the init image is empty");
        }
        size_t per = (size_t)3 * a.width * a.height;
        img = sd_malloc((size_t)a.batch * per * sizeof(float));
        sd_rgb fit = {0};
        if (!img)
            s = SD_ERR_OUT_OF_MEMORY;
        else if (a.width > 0 && a.height > 0 && a.width <= SD_IMAGE_MAX_SIDE && a.height <= SD_IMAGE_MAX_SIDE)
            s = sd_rgb_fit(init, a.width, a.height, &fit);
        else
            s = sd_fail(SD_ERR_INVALID_ARGUMENT, "size %dx%d out of range", a.width, a.height);
        if (s == SD_OK) {
            for (int b = 0; b < a.batch; b++)
                sd_rgb_to_chw(&fit, img + b * per);
        }
        sd_rgb_free(&fit);
        a.image = img;
    }
    sd_pipe_out po;
    if (s == SD_OK)
        s = sd_pipe_run(m, &a, &po);
    if (s == SD_OK) {
        size_t per = (size_t)3 * a.width * a.height;
        int b = 0;
        for (; b < a.batch && s == SD_OK; b++) {
            s = sd_rgb_alloc(&out[b], a.width, a.height);
            if (s == SD_OK)
                sd_chw_to_rgb(po.image + b * per, &out[b]);
        }
        if (s != SD_OK)
            for (int k = 0; k < b; k++)
                sd_rgb_free(&out[k]);
        sd_pipe_out_free(&po);
    }
    free(img);
    for (int k = 0; k < SD_PIPE_MAX_CONTROLS; k++)
        free(cimgs[k]);
    sd_scheduler_free(sched);
    return s;
}

sd_status sd_txt2img(sd_model *m, const sd_gen_params *p, sd_image *out) { return generate(m, p, NULL, out); }

sd_status sd_img2img(sd_model *m, const sd_gen_params *p, const sd_image *init, sd_image *out)
{
    if (!init)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "img2img needs an init image");
    return generate(m, p, init, out);
}

char *sd_gen_parameters_text(const sd_model *m, const sd_gen_params *p, bool img2img)
{
    sd_model_info info;
    sd_model_get_info(m, &info);
    int steps = p->steps;
    if (!steps) {
        sd_scheduler *sch = NULL;
        sd_sched_config used;
        memset(&used, 0, sizeof used);
        steps = make_scheduler(m, p, &sch, &used) == SD_OK ? default_steps(&used) : 0;
        sd_scheduler_free(sch);
    }
    int W = p->width ? p->width : info.native_size, H = p->height ? p->height : info.native_size;
    const char *src = info.source ? info.source : "";
    const char *slash = strrchr(src, '/');
    const char *model = slash && slash[1] ? slash + 1 : src;
    char sampler[64];
    snprintf(sampler, sizeof sampler, "%s%s", p->sampler && *p->sampler ? p->sampler : info.scheduler,
             p->schedule && !strcmp(p->schedule, "karras") ? " Karras" : "");
    size_t cap = strlen(p->prompt ? p->prompt : "") + strlen(p->negative_prompt ? p->negative_prompt : "") +
                 strlen(p->prompt_2 ? p->prompt_2 : "") + strlen(p->negative_prompt_2 ? p->negative_prompt_2 : "") +
                 strlen(model) + 600 + (size_t)(p->n_controls > 0 ? p->n_controls : 0) * 160;
    char *t = sd_malloc(cap);
    if (!t)
        return NULL;
    int o = snprintf(t, cap, "%s\n", p->prompt ? p->prompt : "");
    if (p->negative_prompt && *p->negative_prompt)
        o += snprintf(t + o, cap - (size_t)o, "Negative prompt: %s\n", p->negative_prompt);
    o += snprintf(t + o, cap - (size_t)o, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s",
                  steps, sampler, p->guidance_scale, (unsigned long long)p->seed, W, H, model);
    if (img2img)
        o += snprintf(t + o, cap - (size_t)o, ", Denoising strength: %g", p->strength);
    if (p->clip_skip)
        o += snprintf(t + o, cap - (size_t)o, ", Clip skip: %d", p->clip_skip + 1);
    if (sd_model_use_taesd(m, p->use_taesd))
        o += snprintf(t + o, cap - (size_t)o, ", VAE: TAESD");
    for (int k = 0; p->controls && k < p->n_controls && k < SD_PIPE_MAX_CONTROLS && (size_t)o < cap; k++)
        if (p->controls[k].net) /* A1111's ControlNet extension style */
            o += snprintf(t + o, cap - (size_t)o, ", ControlNet %d: \"Model: %.60s, Weight: %g, Guidance Start: %g, "
                          "Guidance End: %g\"", k, p->controls[k].net->name, p->controls[k].scale,
                          p->controls[k].guidance_start, p->controls[k].guidance_end);
    o += snprintf(t + o, cap - (size_t)o, ", Model family: %s", info.arch ? info.arch : "?");
    if (info.arch && !strcmp(info.arch, "sdxl")) { /* micro-conditioning that differs from the defaults */
        if (p->original_size[0] > 0 && p->original_size[1] > 0)
            o += snprintf(t + o, cap - (size_t)o, ", Original size: %dx%d", p->original_size[1], p->original_size[0]);
        if (p->crops_coords_top_left[0] || p->crops_coords_top_left[1])
            o += snprintf(t + o, cap - (size_t)o, ", Crop top-left: %d,%d", p->crops_coords_top_left[0],
                          p->crops_coords_top_left[1]);
        if (p->target_size[0] > 0 && p->target_size[1] > 0)
            o += snprintf(t + o, cap - (size_t)o, ", Target size: %dx%d", p->target_size[1], p->target_size[0]);
        if (p->prompt_2 && *p->prompt_2)
            o += snprintf(t + o, cap - (size_t)o, ", Prompt 2: \"%s\"", p->prompt_2);
        if (p->negative_prompt_2 && *p->negative_prompt_2)
            o += snprintf(t + o, cap - (size_t)o, ", Negative prompt 2: \"%s\"", p->negative_prompt_2);
    }
    snprintf(t + o, cap - (size_t)o, ", Version: streamdiff %s", sd_version());
    return t;
}
