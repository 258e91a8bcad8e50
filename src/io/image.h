/* Image files: PNG (libpng) and JPEG (libjpeg-turbo) decode/encode, 8-bit RGB.
 * Decoding validates sizes before allocating; broken files give SD_ERR_FORMAT
 * naming the file and the problem. */
#ifndef SD_IMAGE_H
#define SD_IMAGE_H

#include "core/core.h"

/* SD_IMAGE_MAX_SIDE (16384): include/streamdiff.h */
#define SD_IMAGE_MAX_PIXELS ((size_t)64 * 1024 * 1024)

/* The public sd_image: width*height*3 bytes, row-major RGB, malloc'd. */
typedef sd_image sd_rgb;

sd_status sd_rgb_alloc(sd_rgb *img, int width, int height);
void sd_rgb_free(sd_rgb *img);
/* Decodes PNG or JPEG (by signature) from memory or a file into RGB8. */
sd_status sd_rgb_decode(const uint8_t *data, size_t len, const char *label, sd_rgb *out);
sd_status sd_rgb_load(const char *path, sd_rgb *out);
/* PNG with optional tEXt chunks (key/value pairs, NULL-terminated list). */
sd_status sd_rgb_save_png(const char *path, const sd_rgb *img, const char *const *text_kv);
/* JPEG encode to a malloc'd buffer (quality 1..100). */
sd_status sd_rgb_encode_jpeg(const sd_rgb *img, int quality, uint8_t **out, size_t *out_len);
sd_status sd_rgb_save_jpeg(const char *path, const sd_rgb *img, int quality);
/* Reads a PNG's tEXt value for `key` (malloc'd string) — for tests and tools. */
sd_status sd_png_read_text(const char *path, const char *key, char **value);
/* Bilinear resize (half-pixel centers, like PIL's BILINEAR without antialias). */
sd_status sd_rgb_resize(const sd_rgb *src, int width, int height, sd_rgb *dst);
/* Center crop to the target aspect then resize. */
sd_status sd_rgb_fit(const sd_rgb *src, int width, int height, sd_rgb *dst);
/* Center crop to the target aspect and bilinear-resize into a preallocated
 * image of the target size (no allocation: for the per-frame path). */
void sd_rgb_fit_into(const sd_rgb *src, sd_rgb *dst);
/* RGB8 -> float NCHW [3,H,W] in [-1,1] (x/127.5 - 1), and back with clamping
 * (round((x+1)*127.5)). */
void sd_rgb_to_chw(const sd_rgb *img, float *chw);
void sd_chw_to_rgb(const float *chw, sd_rgb *img);

/* ControlNet control images (src/io/preprocess.c; public: sd_control_preprocess): the same on caller-owned
 * buffers, for the per-frame path (no allocation): work buffers for one image size, an output image of that
 * size. */
typedef struct sd_preprocess_work {
    int width, height;
    float *f;      /* [3*W*H] */
    int *gx, *gy, *mag;
    uint8_t *map;
    size_t *stack;
} sd_preprocess_work;
sd_status sd_preprocess_work_init(sd_preprocess_work *w, int width, int height);
void sd_preprocess_work_free(sd_preprocess_work *w);
sd_status sd_preprocess_check(const sd_preprocess_params *p);
sd_status sd_control_preprocess_into(const sd_image *in, const sd_preprocess_params *p, sd_preprocess_work *w,
                                     sd_image *out);

#endif
