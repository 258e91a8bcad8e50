/* Control images made in C, without models (sd_control_preprocess): Canny as OpenCV's cv2.Canny, Sobel soft
 * edges, a scribble threshold, invert, identity. */
#include "io/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sd_preprocess_default_params(sd_preprocess_params *p)
{
    memset(p, 0, sizeof *p);
    p->kind = SD_PREPROCESS_NONE;
    p->canny_low = 100;
    p->canny_high = 200;
    p->threshold = 64;
}

static const struct {
    const char *name;
    sd_preprocess kind;
} g_names[] = {
    {"none", SD_PREPROCESS_NONE},         {"canny", SD_PREPROCESS_CANNY},   {"softedge", SD_PREPROCESS_SOFTEDGE},
    {"sobel", SD_PREPROCESS_SOFTEDGE},    {"scribble", SD_PREPROCESS_SCRIBBLE}, {"invert", SD_PREPROCESS_INVERT},
    {"tile", SD_PREPROCESS_TILE},         {"identity", SD_PREPROCESS_TILE},
};

bool sd_preprocess_from_name(const char *name, sd_preprocess *out)
{
    for (size_t i = 0; name && i < SD_ARRAY_LEN(g_names); i++)
        if (!strcmp(name, g_names[i].name)) {
            *out = g_names[i].kind;
            return true;
        }
    return false;
}

const char *sd_preprocess_name(sd_preprocess p)
{
    for (size_t i = 0; i < SD_ARRAY_LEN(g_names); i++)
        if (g_names[i].kind == p)
            return g_names[i].name;
    return "?";
}

/* Sobel 3x3 with replicated borders (OpenCV's BORDER_REPLICATE) of one channel of an RGB8 image */
static void sobel(const sd_rgb *im, const float *plane, int x, int y, float *dx, float *dy)
{
    int W = im->width, H = im->height;
    int xm = x > 0 ? x - 1 : 0, xp = x < W - 1 ? x + 1 : W - 1;
    int ym = y > 0 ? y - 1 : 0, yp = y < H - 1 ? y + 1 : H - 1;
#define V(xx, yy) plane[(size_t)(yy) * W + (xx)]
    *dx = (V(xp, ym) - V(xm, ym)) + 2 * (V(xp, y) - V(xm, y)) + (V(xp, yp) - V(xm, yp));
    *dy = (V(xm, yp) - V(xm, ym)) + 2 * (V(x, yp) - V(x, ym)) + (V(xp, yp) - V(xp, ym));
#undef V
}

/* cv2.Canny(img, low, high) (L1 gradient, aperture 3) on an RGB image: per pixel the channel with the largest
 * |dx| + |dy|; non-maximum suppression in four directions with OpenCV's tan(22.5)/tan(67.5) sectors and its
 * tie rules; candidates m > low, seeds m > high, hysteresis over 8-neighbours. */
sd_status sd_preprocess_work_init(sd_preprocess_work *w, int width, int height)
{
    memset(w, 0, sizeof *w);
    size_t n = (size_t)width * height;
    w->width = width;
    w->height = height;
    w->f = sd_malloc(3 * n * sizeof(float));
    w->gx = sd_malloc(n * sizeof(int));
    w->gy = sd_malloc(n * sizeof(int));
    w->mag = sd_malloc(n * sizeof(int));
    w->map = sd_malloc(n);
    w->stack = sd_malloc(n * sizeof(size_t));
    if (w->f && w->gx && w->gy && w->mag && w->map && w->stack)
        return SD_OK;
    sd_preprocess_work_free(w);
    return SD_ERR_OUT_OF_MEMORY;
}

void sd_preprocess_work_free(sd_preprocess_work *w)
{
    free(w->f);
    free(w->gx);
    free(w->gy);
    free(w->mag);
    free(w->map);
    free(w->stack);
    memset(w, 0, sizeof *w);
}

static void canny(const sd_rgb *in, int low, int high, sd_preprocess_work *wk, sd_rgb *out)
{
    int W = in->width, H = in->height;
    size_t n = (size_t)W * H;
    float *pl = wk->f;
    int *gx = wk->gx, *gy = wk->gy, *mag = wk->mag;
    uint8_t *map = wk->map; /* 0 not an edge, 1 candidate, 2 edge */
    size_t *stack = wk->stack;
    memset(map, 0, n);
    {
        for (size_t i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                pl[c * n + i] = in->data[3 * i + c];
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = (size_t)y * W + x;
                int best = -1;
                for (int c = 0; c < 3; c++) {
                    float dx, dy;
                    sobel(in, pl + c * n, x, y, &dx, &dy);
                    int m = abs((int)dx) + abs((int)dy);
                    if (m > best) { /* the first channel wins ties, as OpenCV */
                        best = m;
                        gx[i] = (int)dx;
                        gy[i] = (int)dy;
                    }
                }
                mag[i] = best;
            }
#define MAG(xx, yy) ((xx) < 0 || (yy) < 0 || (xx) >= W || (yy) >= H ? 0 : mag[(size_t)(yy) * W + (xx)])
        const int64_t TG22 = 13573; /* tan(22.5 deg) * 2^15 */
        size_t top = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = (size_t)y * W + x;
                int m = mag[i];
                if (m <= low)
                    continue;
                int64_t xs = llabs(gx[i]), ys = (int64_t)llabs(gy[i]) << 15, tg22x = xs * TG22;
                bool keep;
                if (ys < tg22x) { /* horizontal gradient: compare left / right */
                    keep = m > MAG(x - 1, y) && m >= MAG(x + 1, y);
                } else if (ys > tg22x + (xs << 16)) { /* vertical: up / down */
                    keep = m > MAG(x, y - 1) && m >= MAG(x, y + 1);
                } else { /* diagonal */
                    int sg = ((gx[i] ^ gy[i]) < 0) ? -1 : 1;
                    keep = m > MAG(x - sg, y - 1) && m > MAG(x + sg, y + 1);
                }
                if (!keep)
                    continue;
                map[i] = 1;
                if (m > high) {
                    map[i] = 2;
                    stack[top++] = i;
                }
            }
#undef MAG
        while (top) { /* hysteresis: candidates 8-connected to an edge become edges */
            size_t i = stack[--top];
            int x = (int)(i % (size_t)W), y = (int)(i / (size_t)W);
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H)
                        continue;
                    size_t k = (size_t)yy * W + xx;
                    if (map[k] == 1) {
                        map[k] = 2;
                        stack[top++] = k;
                    }
                }
        }
        for (size_t i = 0; i < n; i++)
            memset(out->data + 3 * i, map[i] == 2 ? 255 : 0, 3);
    }
}

/* Sobel magnitude of the luminance (0.299 R + 0.587 G + 0.114 B), scaled to a maximum of 255; with
 * threshold >= 0 thresholded (>= threshold on that scale) and dilated 3x3 (scribble strokes) */
static void soft_edges(const sd_rgb *in, int threshold, sd_preprocess_work *wk, sd_rgb *out)
{
    int W = in->width, H = in->height;
    size_t n = (size_t)W * H;
    float *lum = wk->f, *m = wk->f + n;
    {
        for (size_t i = 0; i < n; i++)
            lum[i] = 0.299f * in->data[3 * i] + 0.587f * in->data[3 * i + 1] + 0.114f * in->data[3 * i + 2];
        float mx = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float dx, dy;
                sobel(in, lum, x, y, &dx, &dy);
                float v = sqrtf(dx * dx + dy * dy);
                m[(size_t)y * W + x] = v;
                mx = v > mx ? v : mx;
            }
        float k = mx > 0 ? 255.0f / mx : 0.0f;
        for (size_t i = 0; i < n; i++)
            m[i] = fminf(255.0f, roundf(m[i] * k));
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t v;
                if (threshold < 0) {
                    v = (uint8_t)m[(size_t)y * W + x];
                } else { /* any pixel of the 3x3 neighbourhood at or above the threshold */
                    v = 0;
                    for (int dy = -1; dy <= 1 && !v; dy++)
                        for (int dx = -1; dx <= 1 && !v; dx++) {
                            int xx = x + dx, yy = y + dy;
                            if (xx >= 0 && yy >= 0 && xx < W && yy < H && m[(size_t)yy * W + xx] >= (float)threshold &&
                                m[(size_t)yy * W + xx] > 0)
                                v = 255;
                        }
                }
                memset(out->data + 3 * ((size_t)y * W + x), v, 3);
            }
    }
}

/* the parameter rules (named errors) */
static sd_status check_params(const sd_preprocess_params *p)
{
    switch (p->kind) {
    case SD_PREPROCESS_CANNY:
        if (p->canny_low < 0 || p->canny_high > 2040 || p->canny_low > p->canny_high)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "canny thresholds low %d / high %d: need 0 <= low <= high <= 2040 "
                           "(L1 Sobel gradient units, as OpenCV; the usual pair is 100 / 200)", p->canny_low,
                           p->canny_high);
        return SD_OK;
    case SD_PREPROCESS_SCRIBBLE:
        if (p->threshold < 1 || p->threshold > 255)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "scribble threshold %d out of range (1..255 of the soft-edge "
                           "scale)", p->threshold);
        return SD_OK;
    case SD_PREPROCESS_SOFTEDGE:
    case SD_PREPROCESS_INVERT:
    case SD_PREPROCESS_NONE:
    case SD_PREPROCESS_TILE:
        return SD_OK;
    }
    return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown control preprocessor %d (none, canny, softedge, scribble, "
                   "invert, tile)", (int)p->kind);
}

sd_status sd_preprocess_check(const sd_preprocess_params *p) { return check_params(p); }

sd_status sd_control_preprocess_into(const sd_image *in, const sd_preprocess_params *p, sd_preprocess_work *w,
                                     sd_image *out)
{
    if (!in || !p || !w || !out || !in->data || !out->data || in->width != w->width || in->height != w->height ||
        out->width != in->width || out->height != in->height)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "control preprocessing: image, work buffers and output must have one "
                       "size");
    SD_TRY(check_params(p));
    switch (p->kind) {
    case SD_PREPROCESS_CANNY:
        canny(in, p->canny_low, p->canny_high, w, out);
        break;
    case SD_PREPROCESS_SOFTEDGE:
    case SD_PREPROCESS_SCRIBBLE:
        soft_edges(in, p->kind == SD_PREPROCESS_SCRIBBLE ? p->threshold : -1, w, out);
        break;
    default: {
        size_t nb = (size_t)in->width * in->height * 3;
        for (size_t i = 0; i < nb; i++)
            out->data[i] = p->kind == SD_PREPROCESS_INVERT ? (uint8_t)(255 - in->data[i]) : in->data[i];
    }
    }
    return SD_OK;
}

sd_status sd_control_preprocess(const sd_image *in, const sd_preprocess_params *p, sd_image *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!in || !p || !out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_control_preprocess: image, params and out are required");
    if (!in->data || in->width <= 0 || in->height <= 0 || in->width > SD_IMAGE_MAX_SIDE ||
        in->height > SD_IMAGE_MAX_SIDE)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "control preprocessing: the input image is empty or larger than %d "
                       "pixels a side", SD_IMAGE_MAX_SIDE);
    SD_TRY(check_params(p));
    sd_preprocess_work w;
    SD_TRY(sd_preprocess_work_init(&w, in->width, in->height));
    sd_status s = sd_rgb_alloc(out, in->width, in->height);
    if (s == SD_OK)
        s = sd_control_preprocess_into(in, p, &w, out);
    if (s != SD_OK)
        sd_rgb_free(out);
    sd_preprocess_work_free(&w);
    return s;
}
