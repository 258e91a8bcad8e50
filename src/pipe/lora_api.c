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
    if (m->sdxl && n > 0) /* its second text encoder and kohya's SDXL names are not mapped */
        return sd_fail(SD_ERR_UNSUPPORTED, "LoRA on SDXL models is not supported yet (SD1.x/SD2.x LoRAs are)");
    sd_lora_component comps[2] = {
        {"unet", "lora_unet_", NULL, &m->w_unet, unet_each, m->unet},
        {"text_encoder", "lora_te_", "text_model.", &m->w_text, clip_each, m->clip},
    };
    sd_status s = sd_lora_apply(&m->lora, comps, 2, loras, n, opt);
    m->weights_version++; /* also after a failure: the weights may have gone back to the base */
    return s;
}

sd_status sd_model_apply_loras(sd_model *m, const sd_lora_spec *loras, int n)
{
    return sd_model_apply_loras_ex(m, loras, n, NULL);
}
