/* The stream engine's ControlNets: control images (fixed, or made from each frame through each net's own
 * preprocessor), the per-row conditioning scales of the guidance windows, and the live settings
 * (sd_stream_get_control / sd_stream_set_control). The struct is stream.c's (stream.h); the residuals are made
 * in the step (stream_step.c). */
#include "pipe/stream.h"
#include "pipe/control.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static sd_status upload_f32(sd_stream *s, sd_tensor *t, const float *host) { return sd_tensor_from_f32(&s->state, t, host); }

static bool same_pp(const sd_preprocess_params *a, const sd_preprocess_params *b)
{
    return a->kind == b->kind && a->canny_low == b->canny_low && a->canny_high == b->canny_high &&
           a->threshold == b->threshold;
}

sd_status sd_stream_control_frames(sd_stream *s, const uint8_t *frames)
{
    size_t hw = (size_t)s->H * s->W;
    /* one preprocessing per distinct preprocessor: nets that share one share its image */
    for (int k = 0; k < s->n_ctl; k++) {
        if (!s->ctl[k].from_frame)
            continue;
        bool done = false;
        for (int j = 0; j < k && !done; j++)
            done = s->ctl[j].from_frame && same_pp(&s->ctl[j].pp, &s->ctl[k].pp);
        if (done)
            continue;
        for (int f = 0; f < s->fbs; f++) {
            sd_image in = {s->W, s->H, (uint8_t *)frames + (size_t)f * hw * 3};
            SD_TRY(sd_control_preprocess_into(&in, &s->ctl[k].pp, &s->ctl_work, &s->ctl_img));
            float *dst = s->ctl_host + (size_t)f * 3 * hw;
            for (size_t i = 0; i < hw; i++)
                for (int ch = 0; ch < 3; ch++)
                    dst[ch * hw + i] = s->ctl_img.data[3 * i + ch] / 255.0f;
        }
        for (int j = k; j < s->n_ctl; j++)
            if (s->ctl[j].from_frame && same_pp(&s->ctl[j].pp, &s->ctl[k].pp))
                SD_TRY(upload_f32(s, &s->ctl[j].cond_new, s->ctl_host));
    }
    return SD_OK;
}

sd_status sd_stream_control_image(sd_stream *s, int k, const sd_image *fixed)
{
    size_t hw = (size_t)s->H * s->W;
    sd_image sized = {0};
    if (fixed && (fixed->width != s->W || fixed->height != s->H)) {
        SD_TRY(sd_rgb_resize(fixed, s->W, s->H, &sized));
        fixed = &sized;
    }
    for (size_t i = 0; i < hw; i++)
        for (int ch = 0; ch < 3; ch++)
            s->ctl_host[ch * hw + i] = fixed ? fixed->data[3 * i + ch] / 255.0f : 0.0f;
    sd_rgb_free(&sized);
    sd_status st = SD_OK;
    for (int r = 0; r < s->B && st == SD_OK; r++) {
        sd_tensor row = sd_view_rows(&s->state, s->ctl[k].cond_rows, r, 1);
        st = upload_f32(s, &row, s->ctl_host);
    }
    for (int f = 0; f < s->fbs && st == SD_OK; f++) {
        sd_tensor row = sd_view_rows(&s->state, s->ctl[k].cond_new, f, 1);
        st = upload_f32(s, &row, s->ctl_host);
    }
    return st;
}

/* The guidance window of the row's step k of n (as the pipeline's keep: off when k/n < start or (k+1)/n > end;
 * margins as there), one list per step index, rows as t_unet's (uncond rows first for initialize / full). */
sd_status sd_stream_control_scales(sd_stream *s, int c, float *host)
{
    const struct sd_stream_ctl *ct = &s->ctl[c];
    const int B = s->B, fbs = s->fbs, n = s->n;
    for (int idx = 0; idx < n; idx++) {
        float *row = host + (size_t)idx * s->UB;
        int u = 0;
        float kr[SD_STREAM_MAX_STEPS * 16];
        for (int r = 0; r < B; r++) {
            int k = s->p.use_denoising_batch ? r / fbs : idx;
            bool off = (double)k / n < (double)ct->start - 1e-6 || (double)(k + 1) / n > (double)ct->end + 1e-6;
            kr[r] = off ? 0.0f : ct->scale;
        }
        if (s->p.cfg_type == SD_CFG_INITIALIZE)
            for (int r = 0; r < fbs; r++)
                row[u++] = kr[r];
        if (s->p.cfg_type == SD_CFG_FULL)
            for (int r = 0; r < B; r++)
                row[u++] = kr[r];
        for (int r = 0; r < B; r++)
            row[u++] = kr[r];
    }
    return upload_f32(s, &s->ctl[c].k_scale, host);
}

/* ---------------------------------------------------------------- live settings */

int sd_stream_control_count(const sd_stream *s) { return s ? s->n_ctl : 0; }

sd_status sd_stream_control_validate(const sd_stream_control *c)
{
    if (!c)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_control_validate: NULL settings");
    SD_TRY(sd_control_check(c->scale, c->guidance_start, c->guidance_end, -1, NULL));
    if ((unsigned)c->preprocess.kind > SD_PREPROCESS_TILE)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown preprocessor %d", (int)c->preprocess.kind);
    return sd_preprocess_check(&c->preprocess);
}

static sd_status check_index(const sd_stream *s, int k, const char *fn)
{
    if (!s)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: NULL stream", fn);
    if (k < 0 || k >= s->n_ctl)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: ControlNet index %d out of range (this stream has %d: 0..%d)",
                       fn, k, s->n_ctl, s->n_ctl - 1);
    return SD_OK;
}

sd_status sd_stream_get_control(const sd_stream *s, int k, sd_stream_control *out)
{
    SD_TRY(check_index(s, k, "sd_stream_get_control"));
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_get_control: NULL output");
    sd_stream *w = (sd_stream *)s;
    pthread_mutex_lock(&w->engine);
    const struct sd_stream_ctl *ct = &s->ctl[k];
    *out = (sd_stream_control){.scale = ct->scale, .guidance_start = ct->start, .guidance_end = ct->end,
                               .preprocess = ct->pp, .from_frame = ct->from_frame};
    pthread_mutex_unlock(&w->engine);
    return SD_OK;
}

sd_status sd_stream_set_control(sd_stream *s, int k, const sd_stream_control *c)
{
    SD_TRY(check_index(s, k, "sd_stream_set_control"));
    if (!c)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_stream_set_control: NULL settings");
    sd_status v = sd_stream_control_validate(c);
    if (v != SD_OK)
        return sd_fail_context(v, "sd_stream_set_control: ControlNet %d", k);
    pthread_mutex_lock(&s->engine);
    struct sd_stream_ctl *ct = &s->ctl[k];
    float old[3] = {ct->scale, ct->start, ct->end};
    ct->pp = c->preprocess; /* the next frame's control image */
    sd_status st = SD_OK;
    if (old[0] != c->scale || old[1] != c->guidance_start || old[2] != c->guidance_end) {
        ct->scale = c->scale;
        ct->start = c->guidance_start;
        ct->end = c->guidance_end;
        st = sd_stream_control_scales(s, k, s->ctl_scales); /* the next step's row scales */
        if (st != SD_OK) {
            ct->scale = old[0], ct->start = old[1], ct->end = old[2];
            sd_stream_control_scales(s, k, s->ctl_scales);
        }
    }
    pthread_mutex_unlock(&s->engine);
    return st;
}
