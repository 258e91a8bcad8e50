/* ControlNet options of `streamdiff txt2img` / `img2img` (see cli.h). On the public API, plus the internal
 * image resize / fit of src/io/image.h (the same ones the library uses for control and init images). */
#include "cli/cli.h"
#include "io/image.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_controls_init(cli_controls *cs)
{
    memset(cs, 0, sizeof *cs);
    sd_preprocess_default_params(&cs->pp);
}

void cli_controls_free(cli_controls *cs)
{
    for (int k = 0; k < CLI_MAX_CONTROLS; k++) {
        free(cs->net[k]);
        free(cs->image[k]);
        sd_image_free(&cs->raw[k]);
        sd_image_free(&cs->img[k]);
        sd_controlnet_free(cs->cn[k]);
    }
    memset(cs, 0, sizeof *cs);
}

static bool num(const char *s, double lo, double hi, float *out)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = (float)v;
    return true;
}

static int usage_error(const char *cmd, const char *flag, const char *v, const char *want)
{
    fprintf(stderr, "streamdiff %s: %s '%s': %s\n", cmd, flag, v, want);
    return 2;
}

int cli_controls_add(cli_controls *cs, const char *cmd, const char *flag, const char *v)
{
    if (cs->n >= CLI_MAX_CONTROLS) {
        fprintf(stderr, "streamdiff %s: at most %d %s options\n", cmd, CLI_MAX_CONTROLS, flag);
        return 2;
    }
    const char *want = "NET:IMAGE[:SCALE[:START:END]] with NET a ControlNet folder, .safetensors file or Hugging "
                       "Face id, IMAGE a PNG/JPEG file (or 'input': the init image of img2img), SCALE 0..10 "
                       "(default 1), 0 <= START < END <= 1 (default 0:1), e.g. lllyasviel/control_v11p_sd15_canny:"
                       "edges.png:0.8";
    char *f[6];
    int nf = 0;
    char *copy = sd_strdup(v);
    if (!copy)
        return usage_error(cmd, flag, v, "out of memory");
    for (char *p = copy, *q; nf < 6; p = q + 1) {
        f[nf++] = p;
        if (!(q = strchr(p, ':')))
            break;
        *q = 0;
    }
    int k = cs->n;
    float scale = 1.0f, start = 0.0f, end = 1.0f;
    bool ok = (nf == 2 || nf == 3 || nf == 5) && *f[0] && *f[1];
    if (ok && nf >= 3)
        ok = num(f[2], 0.0, 10.0, &scale);
    if (ok && nf == 5)
        ok = num(f[3], 0.0, 1.0, &start) && num(f[4], 0.0, 1.0, &end) && start < end;
    if (ok) {
        cs->net[k] = sd_strdup(f[0]);
        cs->image[k] = sd_strdup(f[1]);
        ok = cs->net[k] && cs->image[k];
    }
    free(copy);
    if (!ok)
        return usage_error(cmd, flag, v, want);
    cs->scale[k] = scale;
    cs->start[k] = start;
    cs->end[k] = end;
    cs->n++;
    return 0;
}

int cli_controls_preprocess(cli_controls *cs, const char *cmd, const char *flag, const char *v)
{
    if (cs->n_pre >= CLI_MAX_CONTROLS) {
        fprintf(stderr, "streamdiff %s: at most %d %s options\n", cmd, CLI_MAX_CONTROLS, flag);
        return 2;
    }
    if (!sd_preprocess_from_name(v, &cs->pre[cs->n_pre]))
        return usage_error(cmd, flag, v, "one of none, canny, softedge (sobel), scribble, invert, tile (identity)");
    cs->n_pre++;
    return 0;
}

int cli_controls_threshold(cli_controls *cs, const char *cmd, const char *flag, const char *v)
{
    float x;
    bool scribble = strstr(flag, "scribble") != NULL;
    if (!num(v, scribble ? 1 : 0, scribble ? 255 : 2040, &x) || x != floorf(x))
        return usage_error(cmd, flag, v, scribble ? "a whole number from 1 to 255 (of the soft-edge scale)"
                                                  : "a whole number from 0 to 2040 (L1 Sobel gradient, as OpenCV)");
    if (scribble)
        cs->pp.threshold = (int)x;
    else if (strstr(flag, "low"))
        cs->pp.canny_low = (int)x;
    else
        cs->pp.canny_high = (int)x;
    cs->pp_set = true;
    return 0;
}

static sd_preprocess pre_of(const cli_controls *cs, int k)
{
    return cs->n_pre == 0 ? SD_PREPROCESS_NONE : cs->n_pre == 1 ? cs->pre[0] : cs->pre[k];
}

int cli_controls_check(cli_controls *cs, const char *cmd, bool img2img)
{
    if (!cs->n) {
        if (cs->n_pre || cs->pp_set || cs->save) {
            fprintf(stderr, "streamdiff %s: --control-preprocess, --canny-*, --scribble-threshold and --control-save "
                    "need a --control NET:IMAGE\n", cmd);
            return 2;
        }
        return 0;
    }
    if (cs->n_pre > 1 && cs->n_pre != cs->n) {
        fprintf(stderr, "streamdiff %s: %d --control-preprocess options for %d --control options: give one (for every "
                "control image) or one per --control, in the same order\n", cmd, cs->n_pre, cs->n);
        return 2;
    }
    if (cs->pp.canny_low > cs->pp.canny_high) {
        fprintf(stderr, "streamdiff %s: --canny-low %d is above --canny-high %d\n", cmd, cs->pp.canny_low,
                cs->pp.canny_high);
        return 2;
    }
    for (int k = 0; k < cs->n; k++)
        if (!strcmp(cs->image[k], "input") && !img2img) {
            fprintf(stderr, "streamdiff %s: --control %s:input takes the init image, which only img2img has; give "
                    "an image file\n", cmd, cs->net[k]);
            return 2;
        }
    return 0;
}

int cli_controls_load_images(cli_controls *cs, const char *cmd)
{
    for (int k = 0; k < cs->n; k++) {
        if (!strcmp(cs->image[k], "input"))
            continue;
        sd_status s = sd_image_load(cs->image[k], &cs->raw[k]);
        if (s != SD_OK) {
            fprintf(stderr, "streamdiff %s: cannot read the control image '%s' (%s): %s\n", cmd, cs->image[k],
                    sd_status_name(s), sd_last_error());
            return 1;
        }
    }
    return 0;
}

/* --control-save name of control k: the pattern with %d, else name, name_1, ... before the extension */
static void save_name(const char *pat, int k, int n, char *buf, size_t cap)
{
    if (strstr(pat, "%d") || strstr(pat, "%03d")) {
        const char *p = strstr(pat, "%d") ? strstr(pat, "%d") : strstr(pat, "%03d");
        int w = p[1] == 'd' ? 2 : 4;
        snprintf(buf, cap, "%.*s%0*d%s", (int)(p - pat), pat, w == 4 ? 3 : 1, k, p + w);
        return;
    }
    if (n == 1 || k == 0) {
        snprintf(buf, cap, "%s", pat);
        return;
    }
    const char *dot = strrchr(pat, '.'), *slash = strrchr(pat, '/');
    if (!dot || (slash && dot < slash))
        dot = pat + strlen(pat);
    snprintf(buf, cap, "%.*s_%d%s", (int)(dot - pat), pat, k, dot);
}

int cli_controls_prepare(cli_controls *cs, const char *cmd, sd_model *m, const sd_image *init, int W, int H,
                         bool verbose)
{
    for (int k = 0; k < cs->n; k++) {
        sd_status s = sd_controlnet_load(m, cs->net[k], &cs->cn[k]);
        if (s != SD_OK) {
            fprintf(stderr, "streamdiff %s: cannot load the ControlNet '%s' (%s): %s\n", cmd, cs->net[k],
                    sd_status_name(s), sd_last_error());
            return 1;
        }
        /* the control image at the generation size: the init image as img2img fits it (center crop + resize),
         * a file of another size resized (as diffusers' control image processor: no crop) */
        sd_image sized = {0};
        const sd_image *src = init;
        if (strcmp(cs->image[k], "input")) {
            src = &cs->raw[k];
            if (src->width != W || src->height != H)
                fprintf(stderr, "streamdiff %s: note: control image '%s' is %dx%d; resized to %dx%d\n", cmd,
                        cs->image[k], src->width, src->height, W, H);
            s = src->width != W || src->height != H ? sd_rgb_resize(src, W, H, &sized) : SD_OK;
        } else {
            s = sd_rgb_fit(src, W, H, &sized);
        }
        sd_preprocess_params pp = cs->pp;
        pp.kind = pre_of(cs, k);
        if (s == SD_OK)
            s = sd_control_preprocess(sized.data ? &sized : src, &pp, &cs->img[k]);
        sd_image_free(&sized);
        if (s != SD_OK) {
            fprintf(stderr, "streamdiff %s: cannot make control image %d from '%s' (%s): %s\n", cmd, k + 1,
                    cs->image[k], sd_status_name(s), sd_last_error());
            return 1;
        }
        if (cs->save) {
            char name[1024];
            save_name(cs->save, k, cs->n, name, sizeof name);
            s = sd_image_save_png(name, &cs->img[k], NULL);
            if (s != SD_OK) {
                fprintf(stderr, "streamdiff %s: cannot write the control image '%s': %s\n", cmd, name, sd_last_error());
                return 1;
            }
            if (verbose)
                fprintf(stderr, "control image %d written to %s\n", k + 1, name);
        }
        sd_control_default(&cs->ctl[k]);
        cs->ctl[k].net = cs->cn[k];
        cs->ctl[k].image = &cs->img[k];
        cs->ctl[k].scale = cs->scale[k];
        cs->ctl[k].guidance_start = cs->start[k];
        cs->ctl[k].guidance_end = cs->end[k];
        if (verbose)
            fprintf(stderr, "ControlNet %d: %s, image %s (%s), scale %g, guidance %g..%g\n", k + 1, cs->net[k],
                    cs->image[k], sd_preprocess_name(pp.kind), (double)cs->scale[k], (double)cs->start[k],
                    (double)cs->end[k]);
    }
    return 0;
}

int cli_controls_load_nets(cli_controls *cs, const char *cmd, sd_model *m, int W, int H)
{
    for (int k = 0; k < cs->n; k++) {
        sd_status s = sd_controlnet_load(m, cs->net[k], &cs->cn[k]);
        if (s != SD_OK) {
            fprintf(stderr, "streamdiff %s: cannot load the ControlNet '%s' (%s): %s\n", cmd, cs->net[k],
                    sd_status_name(s), sd_last_error());
            return 1;
        }
        bool frame = !strcmp(cs->image[k], "input");
        if (!frame && (cs->raw[k].width != W || cs->raw[k].height != H))
            fprintf(stderr, "streamdiff %s: note: control image '%s' is %dx%d; resized to %dx%d\n", cmd, cs->image[k],
                    cs->raw[k].width, cs->raw[k].height, W, H);
        sd_control_default(&cs->ctl[k]);
        cs->ctl[k].net = cs->cn[k];
        cs->ctl[k].image = frame ? NULL : &cs->raw[k];
        cs->ctl[k].scale = cs->scale[k];
        cs->ctl[k].guidance_start = cs->start[k];
        cs->ctl[k].guidance_end = cs->end[k];
    }
    return 0;
}

sd_preprocess_params cli_controls_pp(const cli_controls *cs, int k)
{
    sd_preprocess_params pp = cs->pp;
    pp.kind = pre_of(cs, k);
    return pp;
}

int cli_controls_for_stream(cli_controls *cs, const char *cmd, sd_model *m, sd_stream_params *sp)
{
    if (!cs->n)
        return 0;
    for (int k = 1; k < cs->n_pre; k++)
        if (cs->pre[k] != cs->pre[0]) {
            fprintf(stderr, "streamdiff %s: a stream makes every control image from the frame the same way: give one "
                    "--control-preprocess\n", cmd);
            return 2;
        }
    int rc = cli_controls_load_nets(cs, cmd, m, sp->width, sp->height);
    if (rc)
        return rc;
    sp->controls = cs->ctl;
    sp->n_controls = cs->n;
    sp->control_preprocess = cli_controls_pp(cs, 0);
    return 0;
}
