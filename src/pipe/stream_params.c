/* Stream parameters: their defaults and the one rule that checks them (sd_stream_params_validate: the
 * library, the CLI and the server protocol all use it). What needs the model is checked at creation
 * (stream.c). */
#include "pipe/stream.h"
#include "pipe/control.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void sd_stream_default_params(sd_stream_params *p)
{
    memset(p, 0, sizeof *p);
    p->width = p->height = 512;
    p->t_index_list[0] = 32;
    p->t_index_list[1] = 45;
    p->n_t_index = 2;
    p->num_inference_steps = 50;
    p->frame_buffer_size = 1;
    p->use_denoising_batch = true;
    p->do_add_noise = true;
    p->cfg_type = SD_CFG_SELF;
    p->guidance_scale = 1.2f;
    p->delta = 1.0f;
    p->seed = 2;
    p->similarity_threshold = 0.0f;
    p->max_skip_frames = 10;
    p->use_taesd = true;
    p->rng = SD_RNG_TYPE_TORCH;
    p->queue_size = 4;
    p->drop_old_frames = true;
    p->use_graphs = true;
    sd_preprocess_default_params(&p->control_preprocess);
}

/* ---------------------------------------------------------------- parameters: one validator */

/* A refused parameter: its name into *param (when asked), the message (naming it) into sd_last_error. */
#define BAD_PARAM(name, ...) (param ? (void)(*param = (name)) : (void)0, sd_fail(SD_ERR_INVALID_ARGUMENT, __VA_ARGS__))

sd_status sd_stream_check_guidance(float guidance_scale, float delta, const char **param)
{
    if (!(guidance_scale >= 0 && guidance_scale <= 100))
        return BAD_PARAM("guidance_scale", "guidance_scale %g is outside 0..100", guidance_scale);
    if (!(fabsf(delta) <= 100))
        return BAD_PARAM("delta", "delta %g is outside -100..100", delta);
    return SD_OK;
}

sd_status sd_stream_check_filter(float threshold, int max_skip_frames, const char **param)
{
    if (!(threshold >= 0 && threshold <= 1))
        return BAD_PARAM("similarity_threshold", "similarity_threshold %g is outside 0..1 (0 = filter off)", threshold);
    if (max_skip_frames < 0)
        return BAD_PARAM("max_skip_frames", "max_skip_frames %d must be 0 or more", max_skip_frames);
    return SD_OK;
}

sd_status sd_control_check(float scale, float guidance_start, float guidance_end, int k, const char **param)
{
    char who[32] = ""; /* k < 0: no index to name */
    if (k >= 0)
        snprintf(who, sizeof who, "controls[%d]: ", k);
    if (!(scale >= 0 && scale <= 10))
        return BAD_PARAM("controls", "%sconditioning scale %g out of range (0..10)", who, scale);
    if (!(guidance_start >= 0 && guidance_start < guidance_end && guidance_end <= 1))
        return BAD_PARAM("controls", "%sguidance start %g / end %g must satisfy 0 <= start < end <= 1", who,
                         guidance_start, guidance_end);
    return SD_OK;
}

sd_status sd_stream_params_validate(const sd_stream_params *p, const char **param)
{
    if (param)
        *param = NULL;
    if (!p)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_params_validate: NULL parameters");
    if (p->n_t_index < 1 || p->n_t_index > SD_STREAM_MAX_STEPS)
        return BAD_PARAM("t_index_list", "t_index_list needs 1 to %d entries, got %d", SD_STREAM_MAX_STEPS,
                         p->n_t_index);
    if (p->num_inference_steps < 1 || p->num_inference_steps > 1000)
        return BAD_PARAM("num_inference_steps", "num_inference_steps %d is outside 1..1000", p->num_inference_steps);
    for (int i = 0; i < p->n_t_index; i++) {
        if (p->t_index_list[i] < 0 || p->t_index_list[i] >= p->num_inference_steps)
            return BAD_PARAM("t_index_list", "t_index_list[%d] = %d is outside 0..%d (num_inference_steps %d)", i,
                             p->t_index_list[i], p->num_inference_steps - 1, p->num_inference_steps);
        if (i && p->t_index_list[i] <= p->t_index_list[i - 1])
            return BAD_PARAM("t_index_list",
                             "t_index_list must ascend (indices nearer 0 change the image more), got %d after %d",
                             p->t_index_list[i], p->t_index_list[i - 1]);
    }
    if (p->frame_buffer_size < 1 || p->frame_buffer_size > 16)
        return BAD_PARAM("frame_buffer_size", "frame_buffer_size %d is outside 1..16", p->frame_buffer_size);
    if ((unsigned)p->cfg_type > SD_CFG_INITIALIZE)
        return BAD_PARAM("cfg_type", "unknown cfg_type %d (none, full, self or initialize)", (int)p->cfg_type);
    if (p->rng != SD_RNG_TYPE_TORCH && p->rng != SD_RNG_TYPE_FAST)
        return BAD_PARAM("rng", "unknown rng type %d (SD_RNG_TYPE_TORCH or SD_RNG_TYPE_FAST)", (int)p->rng);
    SD_TRY(sd_stream_check_guidance(p->guidance_scale, p->delta, param));
    SD_TRY(sd_stream_check_filter(p->similarity_threshold, p->max_skip_frames, param));
    if (p->queue_size < 1 || p->queue_size > 64)
        return BAD_PARAM("queue_size", "queue_size %d is outside 1..64", p->queue_size);
    if (p->width < 8 || p->width > 2048 || p->width % 8)
        return BAD_PARAM("width", "width %d: width and height must be multiples of 8 from 8 to 2048", p->width);
    if (p->height < 8 || p->height > 2048 || p->height % 8)
        return BAD_PARAM("height", "height %d: width and height must be multiples of 8 from 8 to 2048", p->height);
    if (p->n_controls < 0 || p->n_controls > SD_STREAM_MAX_CONTROLS || (p->n_controls && !p->controls))
        return BAD_PARAM("controls", "%d ControlNets: 0..%d, with a controls array", p->n_controls,
                         SD_STREAM_MAX_CONTROLS);
    for (int k = 0; k < p->n_controls; k++) {
        const sd_control *c = &p->controls[k];
        if (!c->net)
            return BAD_PARAM("controls", "controls[%d]: no ControlNet (net is NULL)", k);
        SD_TRY(sd_control_check(c->scale, c->guidance_start, c->guidance_end, k, param));
        if (c->image && (!c->image->data || c->image->width <= 0 || c->image->height <= 0 ||
                         c->image->width > SD_IMAGE_MAX_SIDE || c->image->height > SD_IMAGE_MAX_SIDE))
            return BAD_PARAM("controls", "controls[%d]: the control image is empty", k);
    }
    if (p->n_controls && (unsigned)p->control_preprocess.kind > SD_PREPROCESS_TILE)
        return BAD_PARAM("control_preprocess", "unknown control preprocessor %d", (int)p->control_preprocess.kind);
    return SD_OK;
}
