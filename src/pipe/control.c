/* Public ControlNet loading (sd_controlnet_load): diffusers folders, single-file v1.x ControlNets, HF ids. */
#include "pipe/control.h"

#include "models/checkpoint.h"
#include "models/hfcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_control_default(sd_control *c)
{
    memset(c, 0, sizeof *c);
    c->scale = 1.0f;
    c->guidance_end = 1.0f;
}

void sd_controlnet_free(sd_controlnet *c)
{
    if (!c)
        return;
    sd_cnet_free(c->net);
    sd_weights_free(&c->w);
    free(c->source);
    free(c->name);
    free(c);
}

static sd_status load_folder(sd_model *m, sd_controlnet *c, const char *dir)
{
    char *cfg = sd_path_join(dir, "config.json");
    char *index = sd_path_join(dir, "model_index.json");
    if (!cfg || !index) {
        free(cfg);
        free(index);
        return SD_ERR_OUT_OF_MEMORY;
    }
    sd_status s = SD_OK;
    if (!sd_file_exists(cfg))
        s = sd_fail(SD_ERR_NOT_FOUND, "ControlNet %s: no config.json%s", dir,
                    sd_file_exists(index) ? " (this is a pipeline folder, not a ControlNetModel)" : "");
    if (s == SD_OK)
        s = sd_cnet_config_load(cfg, &c->cfg);
    if (s == SD_OK)
        s = sd_cnet_check_fit(&c->cfg, &m->unet_cfg, dir);
    if (s == SD_OK)
        s = sd_model_load_component(m, &c->w, dir, "controlnet", "diffusion_pytorch_model");
    free(cfg);
    free(index);
    return s;
}

/* The config of a single-file ControlNet: the model's UNet's, checked against what the tensors show. */
static sd_status single_config(const sd_model *m, const sd_safetensors *st, const char *path, sd_cnet_config *cfg)
{
    sd_ckpt_cnet_layout L;
    SD_TRY(sd_ckpt_controlnet_layout(st, &L));
    const sd_unet_config *u = &m->unet_cfg;
    memset(cfg, 0, sizeof *cfg);
    cfg->unet = *u;
    cfg->unet.time_cond_proj_dim = 0; /* an LCM UNet's guidance embedding is not the ControlNet's */
    cfg->conditioning_channels = L.conditioning_channels;
    cfg->n_cond = L.n_cond;
    memcpy(cfg->cond_channels, L.cond_channels, sizeof L.cond_channels);
    int64_t ctx = u->cross_attention_dim[0];
    if (L.ctx_dim != ctx)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: its cross-attention context is "
                       "%lld wide%s, the model's UNet takes %lld%s", path, (long long)L.ctx_dim,
                       L.ctx_dim == 768 ? " (SD1.x)" : L.ctx_dim == 1024 ? " (SD2.x)" : L.ctx_dim == 2048 ? " (SDXL)" : "",
                       (long long)ctx, ctx == 768 ? " (SD1.x)" : ctx == 1024 ? " (SD2.x)" : ctx == 2048 ? " (SDXL)" : "");
    if (L.model_ch != u->block_out_channels[0] || L.in_ch != u->in_channels)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: input_blocks.0.0 is [%lld,%lld], "
                       "the model's UNet conv_in [%lld,%lld]", path, (long long)L.model_ch, (long long)L.in_ch,
                       (long long)u->block_out_channels[0], (long long)u->in_channels);
    int skips = 1;
    for (int i = 0; i < u->n_blocks; i++)
        skips += (int)u->layers_per_block[i] + (i < u->n_blocks - 1 ? 1 : 0);
    if (L.n_zero != skips)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: %d zero_convs, the model's UNet "
                       "has %d skip connections", path, L.n_zero, skips);
    if (L.sdxl != u->add_text_time)
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s was made for another base model: it is %san SDXL ControlNet, the "
                       "model is %san SDXL model", path, L.sdxl ? "" : "not ", u->add_text_time ? "" : "not ");
    return SD_OK;
}

static sd_status load_single(sd_model *m, sd_controlnet *c, const char *path)
{
    sd_safetensors *st;
    SD_TRY(sd_safetensors_open(path, &st));
    if (!sd_ckpt_is_controlnet(st)) {
        sd_safetensors_close(st);
        return sd_fail(SD_ERR_FORMAT, "ControlNet %s: not a ControlNet file (no input_hint_block.0.weight, with or "
                       "without the control_model. prefix)", path);
    }
    sd_status s = single_config(m, st, path, &c->cfg);
    if (s != SD_OK) {
        sd_safetensors_close(st);
        return s;
    }
    char label[300];
    snprintf(label, sizeof label, "controlnet (%s)", path);
    sd_weights_init(&c->w, m->be, label, sd_model_weight_dtype(m->be, &m->params));
    c->w.check_finite = m->params.check_finite;
    SD_TRY(sd_weights_adopt_file(&c->w, st)); /* closes st on failure */
    char *unknown = NULL;
    s = sd_ckpt_map_controlnet(st, (int)m->unet_cfg.layers_per_block[0], &c->w, &unknown);
    if (s == SD_OK && unknown)
        s = sd_fail(SD_ERR_UNSUPPORTED, "ControlNet %s: tensor '%s' fits no rule of the ControlNet v1.x layout "
                    "(another ControlNet kind, e.g. ControlNet-LLLite, T2I-Adapter or a LoRA?)", path, unknown);
    free(unknown);
    if (s == SD_OK)
        s = sd_weights_finalize(&c->w);
    return s;
}

sd_status sd_controlnet_load(sd_model *m, const char *path, sd_controlnet **out)
{
    if (out)
        *out = NULL;
    if (!m || !path || !*path || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_controlnet_load: model, path and out are required");
    sd_controlnet *c = sd_calloc(1, sizeof *c);
    if (!c)
        return SD_ERR_OUT_OF_MEMORY;
    c->m = m;
    sd_status s = SD_OK;
    char *snap = NULL;
    if (sd_dir_exists(path)) {
        s = load_folder(m, c, path);
    } else if (sd_file_exists(path)) {
        s = load_single(m, c, path);
    } else if (sd_looks_like_hf_id(path)) {
        s = sd_hf_resolve(path, m->params.revision, &snap);
        if (s == SD_OK)
            s = load_folder(m, c, snap);
    } else {
        s = sd_fail(SD_ERR_NOT_FOUND, "ControlNet '%s' not found: not a folder, not a file, and not a Hugging Face "
                    "model id (org/name)", path);
    }
    if (s == SD_OK)
        s = sd_cnet_load(&c->w, &c->cfg, &c->net);
    if (s == SD_OK) {
        const char *unused[2];
        if (sd_weights_unused(&c->w, unused, 2))
            fprintf(stderr, "streamdiff: note: ControlNet %s: tensor %s is not used\n", path, unused[0]);
        sd_weights_release_pages(&c->w);
        const char *src = snap ? snap : path;
        c->source = sd_strdup(src);
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/')
            len--;
        size_t st = len;
        while (st > 0 && path[st - 1] != '/')
            st--;
        c->name = sd_malloc(len - st + 1);
        if (!c->source || !c->name)
            s = SD_ERR_OUT_OF_MEMORY;
        else {
            memcpy(c->name, path + st, len - st);
            c->name[len - st] = 0;
        }
    }
    free(snap);
    if (s != SD_OK) {
        sd_controlnet_free(c);
        return s;
    }
    *out = c;
    return SD_OK;
}
