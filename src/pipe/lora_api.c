/* Public LoRA API: sd_model_apply_loras on top of src/models/lora.c. */
#include "models/lora.h"
#include "pipe/model.h"

static sd_status unet_each(void *model, sd_weight_visit_fn fn, void *user)
{
    return sd_unet_for_each_weight(model, fn, user);
}

static sd_status clip_each(void *model, sd_weight_visit_fn fn, void *user)
{
    return sd_clip_for_each_weight(model, fn, user);
}

sd_status sd_model_apply_loras_ex(sd_model *m, const sd_lora_spec *loras, int n, const sd_lora_options *opt)
{
    if (!m || !m->unet || !m->clip)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_model_apply_loras: no model given");
    int lpb = (int)m->unet_cfg.layers_per_block[0];
    sd_lora_component comps[3] = {
        {"unet", "lora_unet_", NULL, &m->w_unet, unet_each, m->unet, lpb, m->arch},
        {"text_encoder", "lora_te_", "text_model.", &m->w_text, clip_each, m->clip, 0, m->arch},
        {"text_encoder_2", "lora_te2_", "text_model.", &m->w_text2, clip_each, m->clip2, 0, m->arch},
    };
    sd_status s = sd_lora_apply(&m->lora, comps, m->sdxl && m->clip2 ? 3 : 2, loras, n, opt);
    m->weights_version++; /* also after a failure: the weights may have gone back to the base */
    return s;
}

sd_status sd_model_apply_loras(sd_model *m, const sd_lora_spec *loras, int n)
{
    return sd_model_apply_loras_ex(m, loras, n, NULL);
}
