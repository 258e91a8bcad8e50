/* StreamDiffusion cases: replay frame by frame and compare every named
 * intermediate (call.NNN.*) with the reference. */
#include "check/check.h"
#include "pipe/stream.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sd_case *c;
    int call;
} stream_hook_ctx;

static void hook(void *user, const char *name, sd_tensor t)
{
    stream_hook_ctx *h = user;
    char key[96];
    snprintf(key, sizeof key, "call.%03d.%s", h->call, name);
    if (!h->c->expected || !sd_st_find(h->c->expected, key))
        return;
    size_t n = (size_t)sd_numel(&t);
    float *host = sd_malloc(n * sizeof(float) + 1);
    if (!host)
        return;
    sd_ctx tmp = {.be = h->c->be};
    if (sd_tensor_to_f32(&tmp, &t, host) == SD_OK)
        sd_case_compare(h->c, key, host, n);
    free(host);
}

static sd_cfg_type cfg_from_name(const char *s)
{
    return !strcmp(s, "full") ? SD_CFG_FULL : !strcmp(s, "self") ? SD_CFG_SELF
                                          : !strcmp(s, "initialize") ? SD_CFG_INITIALIZE : SD_CFG_NONE;
}

sd_status sd_check_stream(sd_case *c)
{
    sd_config ctor, prep;
    SD_TRY(sd_config_sub(&c->manifest, "stream_constructor", &ctor));
    SD_TRY(sd_config_sub(&c->manifest, "prepare_kwargs", &prep));
    sd_stream_params p;
    sd_stream_default_params(&p);
    int64_t tl[SD_STREAM_MAX_STEPS];
    SD_TRY(sd_config_int_list(&ctor, "t_index_list", tl, SD_STREAM_MAX_STEPS, 0, &p.n_t_index));
    for (int i = 0; i < p.n_t_index; i++)
        p.t_index_list[i] = (int)tl[i];
    int64_t v;
    const char *cfg = "self", *prompt = "", *neg = NULL, *mode = "img2img";
    double g, delta;
    sd_config_bool(&ctor, "use_denoising_batch", true, &p.use_denoising_batch);
    sd_config_bool(&ctor, "do_add_noise", true, &p.do_add_noise);
    sd_config_int(&ctor, "frame_buffer_size", 1, &v);
    p.frame_buffer_size = (int)v;
    sd_config_int(&ctor, "width", 512, &v);
    p.width = (int)v;
    sd_config_int(&ctor, "height", 512, &v);
    p.height = (int)v;
    sd_config_str(&ctor, "cfg_type", "self", &cfg);
    p.cfg_type = cfg_from_name(cfg);
    sd_config_str(&prep, "prompt", "", &prompt);
    sd_config_str(&prep, "negative_prompt", NULL, &neg);
    sd_config_int(&prep, "num_inference_steps", 50, &v);
    p.num_inference_steps = (int)v;
    sd_config_float(&prep, "guidance_scale", 1.2, &g);
    sd_config_float(&prep, "delta", 1.0, &delta);
    p.guidance_scale = (float)g;
    p.delta = (float)delta;
    sd_config_str(&c->manifest, "mode", "img2img", &mode);

    /* components: the pipe folder (text encoder, tokenizer, unet) + TAESD */
    sd_config comp;
    const char *pipe_dir = NULL, *vae_dir = NULL;
    SD_TRY(sd_config_sub(&c->manifest, "components", &comp));
    sd_config_str(&comp, "pipe_dir", NULL, &pipe_dir);
    sd_config_str(&comp, "vae", NULL, &vae_dir);
    if (!pipe_dir || !vae_dir)
        return sd_fail(SD_ERR_FORMAT, "%s: components.pipe_dir / components.vae missing", c->name);
    char pd[512], vd[512]; /* "models/tiny-sd15 (text_encoder, ...)" -> first word */
    sscanf(pipe_dir, "%511s", pd);
    sscanf(vae_dir, "%511s", vd);
    char *pdir = sd_path_join(c->root, pd), *vdir = sd_path_join(c->root, vd);
    sd_model_params mp;
    sd_case_model_params(c, &mp);
    mp.taesd = vdir;
    sd_model *m = NULL;
    sd_status s = sd_model_load_folder(pdir, NULL, &mp, &m);
    free(pdir);
    free(vdir);
    if (s != SD_OK)
        return s;
    p.use_taesd = true;
    sd_stream *st = NULL;
    float *buf = NULL;
    if ((s = sd_stream_create(m, &p, &st)) != SD_OK)
        goto done;
    size_t nn;
    float *noise0 = sd_case_input_f32(c, "noise.000", &nn);
    if (!noise0) {
        s = SD_ERR_FORMAT;
        goto done;
    }
    s = sd_stream_set_init_noise(st, noise0);
    free(noise0);
    if (s == SD_OK)
        s = sd_stream_set_prompt(st, prompt, neg ? neg : "");
    if (s != SD_OK)
        goto done;
    /* prepare-time tensors */
    float tmp[SD_STREAM_MAX_STEPS * 4];
    for (int i = 0; i < st->B; i++)
        tmp[i] = st->c_skip[p.use_denoising_batch ? i / st->fbs : i];
    sd_case_compare(c, "c_skip", tmp, (size_t)st->B);
    for (int i = 0; i < st->B; i++)
        tmp[i] = st->c_out[p.use_denoising_batch ? i / st->fbs : i];
    sd_case_compare(c, "c_out", tmp, (size_t)st->B);
    for (int i = 0; i < st->B; i++)
        tmp[i] = st->alpha[p.use_denoising_batch ? i / st->fbs : i];
    sd_case_compare(c, "alpha_prod_t_sqrt", tmp, (size_t)st->B);
    for (int i = 0; i < st->B; i++)
        tmp[i] = st->beta[p.use_denoising_batch ? i / st->fbs : i];
    sd_case_compare(c, "beta_prod_t_sqrt", tmp, (size_t)st->B);
    for (int i = 0; i < st->n; i++)
        tmp[i] = (float)st->t_sub[i];
    sd_case_compare(c, "sub_timesteps_tensor", tmp, (size_t)st->n);
    size_t emb_n = (size_t)sd_numel(&st->embeds);
    buf = sd_malloc(emb_n * sizeof(float));
    if (buf && sd_tensor_to_f32(&st->state, &st->embeds, buf) == SD_OK && c->expected &&
        sd_st_find(c->expected, "prompt_embeds")) {
        const sd_st_tensor *pe = sd_st_find(c->expected, "prompt_embeds");
        if (pe->numel == emb_n) {
            sd_case_compare(c, "prompt_embeds", buf, emb_n);
        } else { /* the reference repeats the cond row: compare our single row against each */
            size_t row = emb_n;
            double rt = sd_check_precision_rel(c->be) > 0 ? sd_check_precision_rel(c->be) : 1e-4; /* bf16/int8 */
            for (size_t r = 0; row && r * row < pe->numel; r++) {
                bool ok = true;
                for (size_t i = 0; i < row && ok; i++)
                    ok = fabs(sd_st_get(pe, r * row + i) - buf[i]) <= rt * (1 + fabs(buf[i]));
                if (!ok) {
                    sd_case_fail(c, "prompt_embeds row differs");
                    break;
                }
            }
            c->n_checked++;
        }
    }
    if (st->P) { /* SDXL: the added conditions of the UNet rows */
        sd_tensor add[2] = {st->add_te, st->add_ids};
        static const char *const names[2] = {"add_text_embeds", "add_time_ids"};
        for (int k = 0; k < 2; k++) {
            size_t an = (size_t)sd_numel(&add[k]);
            float *h = sd_malloc(an * sizeof(float));
            if (h && sd_tensor_to_f32(&st->state, &add[k], h) == SD_OK)
                sd_case_compare(c, names[k], h, an);
            free(h);
        }
    }
    int64_t n_calls = 0;
    sd_config_int(&c->manifest, "n_calls", 0, &n_calls);
    bool txt = !strcmp(mode, "txt2img");
    stream_hook_ctx hc = {c, 0};
    for (int k = 0; k < n_calls && s == SD_OK; k++) {
        hc.call = k;
        char key[32];
        if (txt) {
            snprintf(key, sizeof key, "noise.%03d", k + 1);
            float *x = sd_case_input_f32(c, key, &nn);
            if (!x) {
                s = SD_ERR_FORMAT;
                break;
            }
            s = sd_tensor_from_f32(&st->state, &st->x_in, x);
            free(x);
        } else {
            snprintf(key, sizeof key, "frame.%03d", k);
            float *x = sd_case_input_f32(c, key, &nn);
            if (!x) {
                s = SD_ERR_FORMAT;
                break;
            }
            for (size_t i = 0; i < nn; i++)
                x[i] = 2.0f * x[i] - 1.0f;
            s = sd_tensor_from_f32(&st->state, &st->img_in, x);
            free(x);
        }
        if (s == SD_OK)
            s = sd_stream_step(st, txt, hook, &hc);
    }
done:
    free(buf);
    sd_stream_free(st);
    sd_model_free(m);
    return s;
}
