#include "io/image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>

#include <jpeglib.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

sd_status sd_rgb_alloc(sd_rgb *img, int width, int height)
{
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0 || width > SD_IMAGE_MAX_SIDE || height > SD_IMAGE_MAX_SIDE ||
        (size_t)width * (size_t)height > SD_IMAGE_MAX_PIXELS)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "image size %dx%d is out of range (1..%d per side, at most %zu pixels)",
                       width, height, SD_IMAGE_MAX_SIDE, SD_IMAGE_MAX_PIXELS);
    img->data = sd_malloc((size_t)width * (size_t)height * 3);
    if (!img->data)
        return SD_ERR_OUT_OF_MEMORY;
    img->width = width;
    img->height = height;
    return SD_OK;
}

void sd_rgb_free(sd_rgb *img)
{
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* ---------------------------------------------------------------- PNG */

/* Largest ancillary chunk (text, ICC profile, ...) libpng may allocate; image
 * data is streamed and bounded by SD_IMAGE_MAX_PIXELS instead. */
#define SD_PNG_MAX_CHUNK ((png_alloc_size_t)8 * 1024 * 1024)

typedef struct {
    const uint8_t *data;
    size_t len, pos;
} mem_reader;

static void png_mem_read(png_structp png, png_bytep out, png_size_t n)
{
    mem_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos)
        png_error(png, "truncated file");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

typedef struct {
    char msg[256];
} png_err_ctx;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_err_ctx *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* libpng reports a chunk longer than png_set_chunk_malloc_max as a *benign*
 * error (a warning by default) and then allocates and zeroes it anyway: a
 * 100-byte file declaring a 2 GB tEXt chunk cost 2 GB and seconds. That one
 * is fatal here; other warnings are ignored. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    if (strstr(msg, "chunk data is too large"))
        png_on_error(png, msg);
}

static sd_status decode_png(const uint8_t *data, size_t len, const char *label, sd_rgb *out)
{
    png_err_ctx err = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
    }
    mem_reader r = {data, len, 0};
    volatile sd_status s = SD_OK;
    png_bytep *volatile rows = NULL;
    memset(out, 0, sizeof *out);
    if (setjmp(png_jmpbuf(png))) {
        s = sd_fail(SD_ERR_FORMAT, "%s: broken PNG: %s", label, err.msg);
        goto done;
    }
    png_set_read_fn(png, &r, png_mem_read);
    png_set_user_limits(png, SD_IMAGE_MAX_SIDE, SD_IMAGE_MAX_SIDE);
    png_set_chunk_malloc_max(png, SD_PNG_MAX_CHUNK); /* a 100-byte file may declare a 2 GB text chunk */
    png_set_chunk_cache_max(png, 1000);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info), bd = png_get_bit_depth(png, info);
    if ((s = sd_rgb_alloc(out, (int)w, (int)h)) != SD_OK) {
        sd_fail_context(s, "%s", label);
        goto done;
    }
    if (bd == 16)
        png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && bd < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        s = sd_fail(SD_ERR_UNSUPPORTED, "%s: PNG pixel layout not supported", label);
        goto done;
    }
    rows = sd_malloc(h * sizeof *rows);
    if (!rows) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = out->data + (size_t)y * w * 3;
    png_read_image(png, rows);
done:
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    if (s != SD_OK)
        sd_rgb_free(out);
    return s;
}

/* Writes the PNG to `f` (left open); `path` names it in messages. */
static sd_status write_png(FILE *f, const char *path, const sd_rgb *img, const char *const *text_kv)
{
    png_err_ctx err = {{0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    volatile sd_status s = SD_OK;
    png_bytep *volatile rows = NULL;
    if (!info) {
        s = sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        s = sd_fail(SD_ERR_IO, "%s: PNG write failed: %s", path, err.msg);
        goto done;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    int nt = 0;
    while (text_kv && text_kv[2 * nt])
        nt++;
    if (nt) {
        png_text *t = calloc((size_t)nt, sizeof *t);
        if (!t) {
            s = sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
            goto done;
        }
        for (int i = 0; i < nt; i++) {
            t[i].compression = PNG_TEXT_COMPRESSION_NONE;
            t[i].key = (png_charp)text_kv[2 * i];
            t[i].text = (png_charp)text_kv[2 * i + 1];
            t[i].text_length = strlen(text_kv[2 * i + 1]);
        }
        png_set_text(png, info, t, nt);
        free(t);
    }
    png_write_info(png, info);
    rows = sd_malloc((size_t)img->height * sizeof *rows);
    if (!rows) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int y = 0; y < img->height; y++)
        rows[y] = img->data + (size_t)y * (size_t)img->width * 3;
    png_write_image(png, rows);
    png_write_end(png, NULL);
done:
    free(rows);
    png_destroy_write_struct(&png, &info);
    return s;
}

sd_status sd_rgb_save_png(const char *path, const sd_rgb *img, const char *const *text_kv)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return sd_fail(SD_ERR_IO, "%s: cannot create file", path);
    sd_status s = write_png(f, path, img, text_kv);
    if (fclose(f) != 0 && s == SD_OK)
        s = sd_fail(SD_ERR_IO, "%s: write error", path);
    return s;
}

sd_status sd_png_read_text(const char *path, const char *key, char **value)
{
    *value = NULL;
    char *data;
    size_t len;
    SD_TRY(sd_read_file(path, (size_t)1 << 30, &data, &len));
    png_err_ctx err = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    volatile sd_status s = SD_ERR_NOT_FOUND;
    mem_reader r = {(const uint8_t *)data, len, 0};
    if (!info) {
        s = sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        s = sd_fail(SD_ERR_FORMAT, "%s: broken PNG: %s", path, err.msg);
        goto done;
    }
    png_set_read_fn(png, &r, png_mem_read);
    png_set_chunk_malloc_max(png, SD_PNG_MAX_CHUNK);
    png_set_chunk_cache_max(png, 1000);
    png_read_info(png, info);
    png_textp t;
    int n = 0;
    png_get_text(png, info, &t, &n);
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].key, key)) {
            *value = sd_strdup(t[i].text);
            s = *value ? SD_OK : SD_ERR_OUT_OF_MEMORY;
            break;
        }
    if (s == SD_ERR_NOT_FOUND)
        sd_fail(s, "%s: no '%s' text chunk", path, key);
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(data);
    return s;
}

/* ---------------------------------------------------------------- JPEG */

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) { (void)cinfo, (void)level; }

static sd_status decode_jpeg(const uint8_t *data, size_t len, const char *label, sd_rgb *out)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    memset(out, 0, sizeof *out);
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    volatile sd_status s = SD_OK;
    if (setjmp(err.jb)) {
        s = sd_fail(SD_ERR_FORMAT, "%s: broken JPEG: %s", label, err.msg);
        jpeg_destroy_decompress(&cinfo);
        sd_rgb_free(out);
        return s;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    if ((s = sd_rgb_alloc(out, (int)cinfo.image_width, (int)cinfo.image_height)) != SD_OK) {
        sd_fail_context(s, "%s", label);
        jpeg_destroy_decompress(&cinfo);
        return s;
    }
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3 || (int)cinfo.output_width != out->width ||
        (int)cinfo.output_height != out->height) {
        jpeg_destroy_decompress(&cinfo);
        sd_rgb_free(out);
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: JPEG color layout not supported", label);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out->data + (size_t)cinfo.output_scanline * (size_t)out->width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return SD_OK;
}

sd_status sd_rgb_encode_jpeg(const sd_rgb *img, int quality, uint8_t **out, size_t *out_len)
{
    struct jpeg_compress_struct cinfo;
    jpeg_err err;
    unsigned char *buf = NULL;
    unsigned long blen = 0;
    *out = NULL;
    *out_len = 0;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    if (setjmp(err.jb)) {
        jpeg_destroy_compress(&cinfo);
        free(buf);
        return sd_fail(SD_ERR_INTERNAL, "JPEG encode failed: %s", err.msg);
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buf, &blen);
    cinfo.image_width = (JDIMENSION)img->width;
    cinfo.image_height = (JDIMENSION)img->height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = img->data + (size_t)cinfo.next_scanline * (size_t)img->width * 3;
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buf;
    *out_len = blen;
    return SD_OK;
}

sd_status sd_rgb_save_jpeg(const char *path, const sd_rgb *img, int quality)
{
    uint8_t *buf;
    size_t len;
    SD_TRY(sd_rgb_encode_jpeg(img, quality, &buf, &len));
    sd_status s = sd_write_file(path, buf, len);
    free(buf);
    return s;
}

/* ---------------------------------------------------------------- dispatch */

sd_status sd_rgb_decode(const uint8_t *data, size_t len, const char *label, sd_rgb *out)
{
    memset(out, 0, sizeof *out);
    if (len >= 8 && !png_sig_cmp(data, 0, 8))
        return decode_png(data, len, label, out);
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return decode_jpeg(data, len, label, out);
    return sd_fail(SD_ERR_FORMAT, "%s: not a PNG or JPEG image", label);
}

sd_status sd_rgb_load(const char *path, sd_rgb *out)
{
    char *data;
    size_t len;
    memset(out, 0, sizeof *out);
    SD_TRY(sd_read_file(path, (size_t)512 << 20, &data, &len));
    sd_status s = sd_rgb_decode((const uint8_t *)data, len, path, out);
    free(data);
    return s;
}

sd_status sd_rgb_resize(const sd_rgb *src, int width, int height, sd_rgb *dst)
{
    SD_TRY(sd_rgb_alloc(dst, width, height));
    double sx = (double)src->width / width, sy = (double)src->height / height;
    for (int y = 0; y < height; y++) {
        double fy = (y + 0.5) * sy - 0.5;
        if (fy < 0)
            fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < src->height ? y0 + 1 : y0;
        double wy = fy - y0;
        for (int x = 0; x < width; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            if (fx < 0)
                fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < src->width ? x0 + 1 : x0;
            double wx = fx - x0;
            for (int c = 0; c < 3; c++) {
                const uint8_t *p = src->data;
                size_t W = (size_t)src->width;
                double v = (1 - wy) * ((1 - wx) * p[((size_t)y0 * W + x0) * 3 + c] + wx * p[((size_t)y0 * W + x1) * 3 + c]) +
                           wy * ((1 - wx) * p[((size_t)y1 * W + x0) * 3 + c] + wx * p[((size_t)y1 * W + x1) * 3 + c]);
                dst->data[((size_t)y * width + x) * 3 + c] = (uint8_t)lrint(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    return SD_OK;
}

sd_status sd_rgb_fit(const sd_rgb *src, int width, int height, sd_rgb *dst)
{
    if (src->width == width && src->height == height) {
        SD_TRY(sd_rgb_alloc(dst, width, height));
        memcpy(dst->data, src->data, (size_t)width * height * 3);
        return SD_OK;
    }
    /* center crop to the target aspect ratio */
    double ta = (double)width / height, sa = (double)src->width / src->height;
    int cw = src->width, ch = src->height;
    if (sa > ta)
        cw = (int)lrint(src->height * ta);
    else
        ch = (int)lrint(src->width / ta);
    if (cw < 1) cw = 1;
    if (ch < 1) ch = 1;
    sd_rgb crop;
    SD_TRY(sd_rgb_alloc(&crop, cw, ch));
    int ox = (src->width - cw) / 2, oy = (src->height - ch) / 2;
    for (int y = 0; y < ch; y++)
        memcpy(crop.data + (size_t)y * cw * 3, src->data + ((size_t)(y + oy) * src->width + ox) * 3, (size_t)cw * 3);
    sd_status s = sd_rgb_resize(&crop, width, height, dst);
    sd_rgb_free(&crop);
    return s;
}

void sd_rgb_fit_into(const sd_rgb *src, sd_rgb *dst)
{
    int width = dst->width, height = dst->height;
    double ta = (double)width / height, sa = (double)src->width / src->height;
    double cw = src->width, ch = src->height;
    if (sa > ta)
        cw = src->height * ta;
    else
        ch = src->width / ta;
    double ox = (src->width - cw) / 2, oy = (src->height - ch) / 2;
    double sx = cw / width, sy = ch / height;
    size_t W = (size_t)src->width;
    for (int y = 0; y < height; y++) {
        double fy = oy + (y + 0.5) * sy - 0.5;
        if (fy < 0)
            fy = 0;
        int y0 = (int)fy;
        if (y0 > src->height - 1)
            y0 = src->height - 1;
        int y1 = y0 + 1 < src->height ? y0 + 1 : y0;
        double wy = fy - y0;
        for (int x = 0; x < width; x++) {
            double fx = ox + (x + 0.5) * sx - 0.5;
            if (fx < 0)
                fx = 0;
            int x0 = (int)fx;
            if (x0 > src->width - 1)
                x0 = src->width - 1;
            int x1 = x0 + 1 < src->width ? x0 + 1 : x0;
            double wx = fx - x0;
            const uint8_t *p = src->data;
            for (int c = 0; c < 3; c++) {
                double v = (1 - wy) * ((1 - wx) * p[((size_t)y0 * W + x0) * 3 + c] + wx * p[((size_t)y0 * W + x1) * 3 + c]) +
                           wy * ((1 - wx) * p[((size_t)y1 * W + x0) * 3 + c] + wx * p[((size_t)y1 * W + x1) * 3 + c]);
                dst->data[((size_t)y * width + x) * 3 + c] = (uint8_t)lrint(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

void sd_rgb_to_chw(const sd_rgb *img, float *chw)
{
    size_t hw = (size_t)img->width * img->height;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++)
            chw[c * hw + i] = img->data[i * 3 + c] / 127.5f - 1.0f;
}

void sd_chw_to_rgb(const float *chw, sd_rgb *img)
{
    size_t hw = (size_t)img->width * img->height;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = (chw[c * hw + i] + 1.0f) * 127.5f;
            img->data[i * 3 + c] = (uint8_t)(isnan(v) ? 0 : v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
        }
}

/* ---------------------------------------------------------------- public API */

void sd_image_free(sd_image *img) { sd_rgb_free(img); }
sd_status sd_image_load(const char *path, sd_image *out) { return sd_rgb_load(path, out); }

static bool image_ok(const sd_image *img)
{
    return img && img->data && img->width > 0 && img->height > 0 && img->width <= SD_IMAGE_MAX_SIDE &&
           img->height <= SD_IMAGE_MAX_SIDE;
}

sd_status sd_image_decode(const void *data, size_t len, sd_image *out)
{
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_decode: no output image");
    if (!data || len == 0) {
        memset(out, 0, sizeof *out);
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_decode: no data");
    }
    return sd_rgb_decode(data, len, "image data", out);
}

sd_status sd_image_encode_jpeg(const sd_image *img, int quality, uint8_t **out, size_t *out_len)
{
    if (!out || !out_len)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_encode_jpeg: no output buffer");
    *out = NULL;
    *out_len = 0;
    if (!image_ok(img))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_encode_jpeg: empty image or a side above %d",
                       SD_IMAGE_MAX_SIDE);
    return sd_rgb_encode_jpeg(img, quality, out, out_len);
}

sd_status sd_image_encode_png(const sd_image *img, const char *parameters, uint8_t **out, size_t *out_len)
{
    if (!out || !out_len)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_encode_png: no output buffer");
    *out = NULL;
    *out_len = 0;
    if (!image_ok(img))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_image_encode_png: empty image or a side above %d",
                       SD_IMAGE_MAX_SIDE);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "sd_image_encode_png: out of memory");
    const char *kv[] = {"parameters", parameters, NULL};
    sd_status s = write_png(f, "PNG in memory", img, parameters ? kv : NULL);
    if (fclose(f) != 0 && s == SD_OK)
        s = sd_fail(SD_ERR_OUT_OF_MEMORY, "sd_image_encode_png: out of memory");
    if (s != SD_OK) {
        free(buf);
        return s;
    }
    *out = (uint8_t *)buf;
    *out_len = len;
    return SD_OK;
}

sd_status sd_image_save_png(const char *path, const sd_image *img, const char *parameters)
{
    if (!img || !img->data || img->width <= 0 || img->height <= 0)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: empty image", path);
    const char *kv[] = {"parameters", parameters, NULL};
    return sd_rgb_save_png(path, img, parameters ? kv : NULL);
}
