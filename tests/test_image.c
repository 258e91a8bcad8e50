#include "io/image.h"
#include "test.h"

#include <unistd.h>

static char tmpdir[] = "/tmp/sd-test-image-XXXXXX";

static char *tmp(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static void make_img(sd_rgb *img, int w, int h)
{
    sd_rgb_alloc(img, w, h);
    for (int i = 0; i < w * h * 3; i++)
        img->data[i] = (uint8_t)(i * 7 + i / 3);
}

TEST(png_roundtrip_with_text)
{
    sd_rgb img, back;
    make_img(&img, 13, 7);
    const char *kv[] = {"parameters", "a cat\nSteps: 4, Seed: 42", NULL};
    CHECK_STATUS(sd_rgb_save_png(tmp("a.png"), &img, kv), SD_OK);
    CHECK_STATUS(sd_rgb_load(tmp("a.png"), &back), SD_OK);
    CHECK(back.width == 13 && back.height == 7);
    CHECK(back.data && !memcmp(back.data, img.data, 13 * 7 * 3));
    char *v = NULL;
    CHECK_STATUS(sd_png_read_text(tmp("a.png"), "parameters", &v), SD_OK);
    CHECK(v && !strcmp(v, kv[1]));
    free(v);
    CHECK_STATUS(sd_png_read_text(tmp("a.png"), "nope", &v), SD_ERR_NOT_FOUND);
    sd_rgb_free(&img);
    sd_rgb_free(&back);
}

TEST(jpeg_roundtrip)
{
    sd_rgb img, back;
    sd_rgb_alloc(&img, 32, 24);
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++)
                img.data[(y * 32 + x) * 3 + c] = (uint8_t)(x * 6 + c * 20 + y);
    CHECK_STATUS(sd_rgb_save_jpeg(tmp("a.jpg"), &img, 95), SD_OK);
    CHECK_STATUS(sd_rgb_load(tmp("a.jpg"), &back), SD_OK);
    CHECK(back.width == 32 && back.height == 24);
    int maxd = 0;
    for (int i = 0; back.data && i < 32 * 24 * 3; i++) {
        int d = abs((int)back.data[i] - (int)img.data[i]);
        maxd = d > maxd ? d : maxd;
    }
    CHECK_MSG(maxd < 12, "jpeg max diff %d", maxd);
    sd_rgb_free(&img);
    sd_rgb_free(&back);
}

TEST(broken_inputs)
{
    sd_rgb out;
    CHECK_STATUS(sd_rgb_decode((const uint8_t *)"", 0, "empty", &out), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("not a PNG or JPEG");
    CHECK_STATUS(sd_rgb_decode((const uint8_t *)"hello world", 11, "text", &out), SD_ERR_FORMAT);
    /* truncated PNG */
    sd_rgb img;
    make_img(&img, 20, 20);
    CHECK_STATUS(sd_rgb_save_png(tmp("t.png"), &img, NULL), SD_OK);
    char *data;
    size_t len;
    CHECK_STATUS(sd_read_file(tmp("t.png"), 1 << 20, &data, &len), SD_OK);
    for (size_t cut = 8; cut < len - 12; cut += 17) { /* the last 12 bytes are IEND, not needed */
        sd_status s = sd_rgb_decode((const uint8_t *)data, cut, "cut.png", &out);
        CHECK(s == SD_ERR_FORMAT);
        CHECK(out.data == NULL);
    }
    /* flipped bytes must never crash */
    for (size_t i = 8; i < len; i += 3) {
        char saved = data[i];
        data[i] ^= 0x5a;
        if (sd_rgb_decode((const uint8_t *)data, len, "flip.png", &out) == SD_OK)
            sd_rgb_free(&out);
        data[i] = saved;
    }
    free(data);
    /* truncated JPEG */
    CHECK_STATUS(sd_rgb_save_jpeg(tmp("t.jpg"), &img, 90), SD_OK);
    CHECK_STATUS(sd_read_file(tmp("t.jpg"), 1 << 20, &data, &len), SD_OK);
    for (size_t cut = 3; cut < len; cut += 29) {
        sd_status s = sd_rgb_decode((const uint8_t *)data, cut, "cut.jpg", &out);
        if (s == SD_OK)
            sd_rgb_free(&out); /* libjpeg may pad a truncated scan: decoding must stay safe */
        else
            CHECK(s == SD_ERR_FORMAT);
    }
    free(data);
    sd_rgb_free(&img);
    CHECK_STATUS(sd_rgb_load(tmp("missing.png"), &out), SD_ERR_NOT_FOUND);
}

TEST(absurd_size_png_header)
{
    /* A PNG signature + IHDR claiming 100000 x 100000: rejected before allocating. */
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                  0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0, 0x3c, 0x8f, 0x5f, 0x5d};
    sd_rgb out;
    CHECK_STATUS(sd_rgb_decode(png, sizeof png, "huge.png", &out), SD_ERR_FORMAT);
    CHECK_STATUS(sd_rgb_alloc(&out, 100000, 10), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_rgb_alloc(&out, 0, 10), SD_ERR_INVALID_ARGUMENT);
}

TEST(resize_and_convert)
{
    sd_rgb img, small, fit;
    sd_rgb_alloc(&img, 8, 8);
    memset(img.data, 200, 8 * 8 * 3);
    CHECK_STATUS(sd_rgb_resize(&img, 3, 5, &small), SD_OK);
    for (int i = 0; i < 3 * 5 * 3; i++)
        CHECK(small.data[i] == 200);
    CHECK_STATUS(sd_rgb_fit(&img, 16, 4, &fit), SD_OK);
    CHECK(fit.width == 16 && fit.height == 4);
    float chw[8 * 8 * 3];
    sd_rgb_to_chw(&img, chw);
    CHECK(fabsf(chw[0] - (200 / 127.5f - 1)) < 1e-6f);
    chw[0] = 5.0f;
    chw[1] = -3.0f;
    chw[2] = NAN;
    sd_chw_to_rgb(chw, &img);
    CHECK(img.data[0] == 255 && img.data[3] == 0 && img.data[6] == 0 && img.data[9] == 200);
    sd_rgb_free(&img);
    sd_rgb_free(&small);
    sd_rgb_free(&fit);
}

/* The public in-memory calls (what `streamdiff serve` uses): decode of both formats, JPEG and PNG
 * encode, and their errors. */
TEST(public_memory_codecs)
{
    sd_image img = {0}, back = {0};
    make_img(&img, 13, 7);
    uint8_t *png = NULL, *jpg = NULL;
    size_t npng = 0, njpg = 0;
    CHECK_STATUS(sd_image_encode_png(&img, "a cat, Seed: 1", &png, &npng), SD_OK);
    CHECK(png && npng > 8 && !memcmp(png, "\x89PNG", 4));
    CHECK_STATUS(sd_image_decode(png, npng, &back), SD_OK);
    CHECK(back.width == 13 && back.height == 7 && back.data && !memcmp(back.data, img.data, 13 * 7 * 3));
    sd_image_free(&back);
    /* the parameters text survives: the same bytes as a file */
    FILE *f = fopen(tmp("mem.png"), "wb");
    CHECK(f && fwrite(png, 1, npng, f) == npng);
    if (f)
        fclose(f);
    char *v = NULL;
    CHECK_STATUS(sd_png_read_text(tmp("mem.png"), "parameters", &v), SD_OK);
    CHECK(v && !strcmp(v, "a cat, Seed: 1"));
    free(v);
    CHECK_STATUS(sd_image_encode_jpeg(&img, 90, &jpg, &njpg), SD_OK);
    CHECK(jpg && njpg > 3 && jpg[0] == 0xff && jpg[1] == 0xd8);
    CHECK_STATUS(sd_image_decode(jpg, njpg, &back), SD_OK);
    CHECK(back.width == 13 && back.height == 7);
    sd_image_free(&back);
    /* errors: named, outputs cleared */
    CHECK_STATUS(sd_image_decode(png, 5, &back), SD_ERR_FORMAT);
    CHECK(back.data == NULL);
    CHECK_STATUS(sd_image_decode(NULL, 10, &back), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_image_decode("GIF89a....", 10, &back), SD_ERR_FORMAT);
    CHECK(strstr(sd_last_error(), "not a PNG or JPEG") != NULL);
    sd_image empty = {0};
    uint8_t *o = (uint8_t *)1;
    size_t no = 1;
    CHECK_STATUS(sd_image_encode_jpeg(&empty, 90, &o, &no), SD_ERR_INVALID_ARGUMENT);
    CHECK(o == NULL && no == 0);
    CHECK_STATUS(sd_image_encode_png(&empty, NULL, &o, &no), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_image_encode_png(&img, NULL, NULL, &no), SD_ERR_INVALID_ARGUMENT);
    free(png);
    free(jpg);
    sd_image_free(&img);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(png_roundtrip_with_text);
    RUN(jpeg_roundtrip);
    RUN(broken_inputs);
    RUN(absurd_size_png_header);
    RUN(resize_and_convert);
    RUN(public_memory_codecs);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return test_summary();
}
