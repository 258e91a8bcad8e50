/* safetensors reader/writer: every format rule with a hand-made bad file,
 * writer round trips, zero-copy, dtype conversions (exhaustive over all
 * 65536 halfs / bfloat16s) and the real fixture files when available. */
#include "io/safetensors.h"
#include "test.h"

#include <stdint.h>
#include <unistd.h>

static char g_dir[256];
static int g_file_no;

/* ------------------------------------------------------------ helpers */

static const char *tmpdir(void)
{
    if (!g_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/sd-test-st-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_dir)) {
            fprintf(stderr, "cannot create a temporary directory\n");
            exit(1);
        }
    }
    return g_dir;
}

/* Writes raw bytes to a fresh file in the temp dir; returns its path (static buffer rotation). */
static const char *write_raw(const void *bytes, size_t n)
{
    static char paths[4][300];
    char *p = paths[g_file_no % 4];
    snprintf(p, 300, "%s/f%03d.safetensors", tmpdir(), g_file_no++);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(bytes, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
    return p;
}

/* u64 length prefix `hlen`, the header text, then `data_len` bytes of data. */
static const char *write_st_len(uint64_t hlen, const char *header, size_t data_len)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    uint8_t *buf = calloc(1, n);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    const char *p = write_raw(buf, n);
    free(buf);
    return p;
}

static const char *write_st(const char *header, size_t data_len)
{
    return write_st_len(strlen(header), header, data_len);
}

/* Opening must fail with `want` and a message naming the file and the rule. */
#define EXPECT_BAD(path, want, tag)                                                                  \
    do {                                                                                             \
        const char *path_ = (path); /* evaluated once: it may write the file */                      \
        sd_safetensors *st_ = (sd_safetensors *)1;                                                   \
        CHECK_STATUS(sd_safetensors_open(path_, &st_), (want));                                      \
        CHECK(st_ == NULL);                                                                          \
        CHECK_ERR_CONTAINS(tag);                                                                     \
        CHECK_ERR_CONTAINS(path_);                                                                   \
        if (st_ && st_ != (sd_safetensors *)1)                                                       \
            sd_safetensors_close(st_);                                                               \
    } while (0)
#define EXPECT_FORMAT(header, data_len, tag) EXPECT_BAD(write_st((header), (data_len)), SD_ERR_FORMAT, tag)

#define T8(name, off) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" off "]}"

/* ------------------------------------------------------------ rules */

TEST(rule_file_too_small)
{
    EXPECT_BAD(write_raw("", 0), SD_ERR_FORMAT, "[file-too-small]");
    EXPECT_BAD(write_raw("\x02\0\0\0\0", 5), SD_ERR_FORMAT, "[file-too-small]");
    EXPECT_BAD(write_raw("\x02\0\0\0\0\0\0", 7), SD_ERR_FORMAT, "[file-too-small]");
}

TEST(rule_header_too_large)
{
    EXPECT_BAD(write_st_len(SD_ST_MAX_HEADER + 1, "{}", 0), SD_ERR_FORMAT, "[header-too-large]");
    EXPECT_BAD(write_st_len(UINT64_MAX, "{}", 0), SD_ERR_FORMAT, "[header-too-large]");
    EXPECT_BAD(write_st_len((uint64_t)1 << 63, "{}", 0), SD_ERR_FORMAT, "[header-too-large]");
}

TEST(rule_header_out_of_file)
{
    EXPECT_BAD(write_st_len(3, "{}", 0), SD_ERR_FORMAT, "[header-out-of-file]");
    EXPECT_BAD(write_st_len(1000, "{}", 10), SD_ERR_FORMAT, "[header-out-of-file]");
    EXPECT_BAD(write_st_len(1, "", 0), SD_ERR_FORMAT, "[header-out-of-file]");
}

TEST(rule_header_json)
{
    EXPECT_FORMAT("{\"a\":", 0, "[header-json]");
    EXPECT_FORMAT("{\"a\" 1}", 0, "[header-json]");
    EXPECT_FORMAT("{} x", 0, "[header-json]");   /* junk after the object */
    EXPECT_FORMAT("{}{}", 0, "[header-json]");
    EXPECT_FORMAT("", 0, "[header-json]");       /* N = 0 */
    EXPECT_FORMAT("   ", 0, "[header-json]");
    EXPECT_FORMAT("\xff\xfe", 0, "[header-json]");
    /* the JSON must end inside the header: a header cut short is invalid even if the data would complete it */
    EXPECT_BAD(write_st_len(5, "{\"a\":{}}", 0), SD_ERR_FORMAT, "[header-json]");
}

TEST(rule_header_not_object)
{
    EXPECT_FORMAT("[1,2]", 0, "[header-not-object]");
    EXPECT_FORMAT("\"str\"", 0, "[header-not-object]");
    EXPECT_FORMAT("42", 0, "[header-not-object]");
    EXPECT_FORMAT("null", 0, "[header-not-object]");
}

TEST(rule_duplicate_name)
{
    /* cJSON keeps duplicate keys; the parser must find them after sorting by name */
    EXPECT_FORMAT("{" T8("a", "0,8") "," T8("a", "8,16") "}", 16, "[duplicate-name]");
    EXPECT_FORMAT("{" T8("b", "0,8") "," T8("a", "8,16") "," T8("c", "16,24") "," T8("a", "24,32") "}", 32,
                  "[duplicate-name]");
    EXPECT_FORMAT("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "[duplicate-name]");
    /* the message names the duplicated tensor */
    EXPECT_FORMAT("{" T8("w.x", "0,8") "," T8("w.x", "8,16") "}", 16, "'w.x'");
}

TEST(rule_entry)
{
    EXPECT_FORMAT("{\"a\":5}", 0, "[entry]");
    EXPECT_FORMAT("{\"a\":[1,2]}", 0, "[entry]");
    EXPECT_FORMAT("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "[entry]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "[entry]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "[entry]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "[entry]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "[entry]");
}

TEST(rule_unknown_dtype)
{
    EXPECT_BAD(write_st("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8), SD_ERR_UNSUPPORTED,
               "[unknown-dtype]");
    EXPECT_BAD(write_st("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), SD_ERR_UNSUPPORTED,
               "[unknown-dtype]");
    EXPECT_BAD(write_st("{\"a\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), SD_ERR_UNSUPPORTED,
               "[unknown-dtype]");
    EXPECT_BAD(write_st("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
               SD_ERR_UNSUPPORTED, "[unknown-dtype]");
}

TEST(rule_shape)
{
#define SH(s, len) "{\"a\":{\"dtype\":\"U8\",\"shape\":" s ",\"data_offsets\":[0," #len "]}}"
    EXPECT_FORMAT(SH("\"x\"", 1), 1, "[shape]");
    EXPECT_FORMAT(SH("4", 4), 4, "[shape]");
    EXPECT_FORMAT(SH("{}", 1), 1, "[shape]");
    EXPECT_FORMAT(SH("[1,-1]", 1), 1, "[shape]");
    EXPECT_FORMAT(SH("[1.5]", 1), 1, "[shape]");
    EXPECT_FORMAT(SH("[\"2\"]", 2), 2, "[shape]");
    EXPECT_FORMAT(SH("[null]", 1), 1, "[shape]");
    EXPECT_FORMAT(SH("[1,1,1,1,1,1,1,1,1]", 1), 1, "[shape]"); /* 9 dims */
    EXPECT_FORMAT(SH("[18014398509481984]", 1), 1, "[shape]"); /* 2^54: not an exact JSON integer */
    EXPECT_FORMAT(SH("[1e300]", 1), 1, "[shape]");
#undef SH
}

TEST(rule_shape_overflow)
{
    /* numel = 2^62 fits, x 8 bytes overflows */
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"I64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8,
                  "[shape-overflow]");
    /* numel itself overflows */
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"U8\",\"shape\":[4503599627370496,4503599627370496],\"data_offsets\":[0,1]}}",
                  1, "[shape-overflow]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"F32\",\"shape\":[65536,65536,65536,65536],\"data_offsets\":[0,4]}}", 4,
                  "[shape-overflow]");
}

TEST(rule_offsets)
{
#define OF(o) "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" o "}}"
    EXPECT_FORMAT(OF("[4,0]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[0]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[0,4,8]"), 8, "[offsets]");
    EXPECT_FORMAT(OF("[-4,0]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[0,4.5]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("\"0,4\""), 4, "[offsets]");
    EXPECT_FORMAT(OF("{\"a\":0,\"b\":4}"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[0,\"4\"]"), 4, "[offsets]");
    EXPECT_FORMAT(OF("[0,1e300]"), 4, "[offsets]");
#undef OF
}

TEST(rule_offsets_out_of_data)
{
    EXPECT_FORMAT("{" T8("a", "0,8") "}", 4, "[offsets-out-of-data]");
    EXPECT_FORMAT("{" T8("a", "0,8") "}", 0, "[offsets-out-of-data]");
    EXPECT_FORMAT("{" T8("a", "8,16") "}", 12, "[offsets-out-of-data]");
    /* begin and end both far beyond, but below 2^53 */
    EXPECT_FORMAT("{" T8("a", "4503599627370496,4503599627370504") "}", 8, "[offsets-out-of-data]");
}

TEST(rule_size_mismatch)
{
    EXPECT_FORMAT("{" T8("a", "0,4") "}", 4, "[size-mismatch]");
    EXPECT_FORMAT("{" T8("a", "0,12") "}", 12, "[size-mismatch]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, "[size-mismatch]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"I64\",\"shape\":[2,0],\"data_offsets\":[0,8]}}", 8, "[size-mismatch]");
    EXPECT_FORMAT("{\"a\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "[size-mismatch]");
}

TEST(rule_overlap)
{
    EXPECT_FORMAT("{" T8("a", "0,8") "," T8("b", "4,12") "}", 12, "[overlap]");
    EXPECT_FORMAT("{" T8("a", "0,8") "," T8("b", "0,8") "}", 8, "[overlap]");
    /* listed out of order: b sorts first by name, a first by offset */
    EXPECT_FORMAT("{" T8("b", "8,16") "," T8("a", "0,8") "," T8("c", "12,20") "}", 20, "[overlap]");
}

TEST(rule_gap)
{
    EXPECT_FORMAT("{" T8("a", "0,8") "," T8("b", "12,20") "}", 20, "[gap]"); /* hole in the middle */
    EXPECT_FORMAT("{" T8("a", "4,12") "}", 12, "[gap]");                     /* hole at the start */
    EXPECT_FORMAT("{" T8("a", "0,8") "}", 9, "[gap]");                       /* trailing byte */
    EXPECT_FORMAT("{}", 1, "[gap]");                                          /* data with no tensor */
}

TEST(rule_metadata)
{
    EXPECT_FORMAT("{\"__metadata__\":5}", 0, "[metadata]");
    EXPECT_FORMAT("{\"__metadata__\":[\"a\"]}", 0, "[metadata]");
    EXPECT_FORMAT("{\"__metadata__\":\"x\"}", 0, "[metadata]");
    EXPECT_FORMAT("{\"__metadata__\":{\"format\":1}}", 0, "[metadata]");
    EXPECT_FORMAT("{\"__metadata__\":{\"a\":\"b\",\"n\":null}}", 0, "[metadata]");
    EXPECT_FORMAT("{\"__metadata__\":{\"o\":{}}," T8("a", "0,8") "}", 8, "[metadata]");
}

/* ------------------------------------------------------------ valid edge cases */

TEST(valid_minimal_files)
{
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_open(write_st("{}", 0), &st), SD_OK);
    if (st) {
        CHECK(st->n_tensors == 0);
        CHECK(sd_st_find(st, "a") == NULL);
        CHECK(sd_st_meta(st, "format") == NULL);
        sd_safetensors_close(st);
    }
    /* padding after the JSON (spaces as the writer pads, NULs and newlines) is allowed */
    const char *hdrs[] = {"{}      ", "{}\0\0\0\0\0\0", "{\"__metadata__\":{\"format\":\"pt\"}}\n\t\r "};
    size_t lens[] = {8, 8, strlen(hdrs[2])};
    for (int i = 0; i < 3; i++) {
        uint8_t buf[64] = {0};
        buf[0] = (uint8_t)lens[i];
        memcpy(buf + 8, hdrs[i], lens[i]);
        CHECK_STATUS(sd_safetensors_open(write_raw(buf, 8 + lens[i]), &st), SD_OK);
        if (st && i == 2)
            CHECK(sd_st_meta(st, "format") && !strcmp(sd_st_meta(st, "format"), "pt"));
        sd_safetensors_close(st);
        st = NULL;
    }
    /* scalars, zero-size tensors (several at one offset) and unordered offsets */
    const char *h = "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                    "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[4,8]},"
                    "\"y\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[8,8]},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]}}";
    CHECK_STATUS(sd_safetensors_open(write_st(h, 8), &st), SD_OK);
    if (st) {
        CHECK(st->n_tensors == 4);
        const sd_st_tensor *s = sd_st_find(st, "s"), *z = sd_st_find(st, "z"), *a = sd_st_find(st, "a");
        CHECK(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 4 && s->dtype == SD_I32);
        CHECK(z && z->ndim == 2 && z->numel == 0 && z->nbytes == 0 && z->shape[1] == 3);
        CHECK(a && a->numel == 4 && a->dtype == SD_U8 && sd_st_get(a, 1) == 8.0); /* byte pattern i*7+1 */
        /* sorted by name */
        for (size_t i = 1; i < st->n_tensors; i++)
            CHECK(strcmp(st->tensors[i - 1].name, st->tensors[i].name) < 0);
        sd_safetensors_close(st);
    }
}

TEST(missing_file_and_directory)
{
    char p[400];
    snprintf(p, sizeof p, "%s/does-not-exist.safetensors", tmpdir());
    sd_safetensors *st = (sd_safetensors *)1;
    CHECK_STATUS(sd_safetensors_open(p, &st), SD_ERR_NOT_FOUND);
    CHECK(st == NULL);
    CHECK_ERR_CONTAINS("does-not-exist.safetensors");
    CHECK_STATUS(sd_safetensors_open(tmpdir(), &st), SD_ERR_IO);
    CHECK(st == NULL);
}

TEST(parse_from_memory)
{
    const char *h = "{" T8("a", "0,8") "}";
    size_t hl = strlen(h);
    uint8_t buf[128] = {0};
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, h, hl);
    float v[2] = {1.5f, -2.0f};
    memcpy(buf + 8 + hl, v, 8);
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_parse(buf, 8 + hl + 8, "mem-label", &st), SD_OK);
    if (st) {
        const sd_st_tensor *t = sd_st_find(st, "a");
        CHECK(t && t->data == buf + 8 + hl);
        float out[2];
        CHECK_STATUS(sd_st_to_f32(t, out), SD_OK);
        CHECK(out[0] == 1.5f && out[1] == -2.0f);
        sd_safetensors_close(st);
    }
    CHECK_STATUS(sd_safetensors_parse(buf, 8 + hl + 4, "mem-label", &st), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("mem-label");
    CHECK_ERR_CONTAINS("[offsets-out-of-data]");
}

/* Every truncation and many single-byte corruptions of a valid file are
 * rejected cleanly (or accepted as valid), never crash (run under ASan in CI). */
TEST(truncation_and_corruption)
{
    sd_st_writer *w = sd_st_writer_new();
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3c00, 0x4000, 0xc000};
    CHECK_STATUS(sd_st_writer_add(w, "alpha", SD_F32, 2, (int64_t[]){2, 3}, a), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "beta", SD_F16, 1, (int64_t[]){3}, b), SD_OK);
    CHECK_STATUS(sd_st_writer_meta(w, "format", "pt"), SD_OK);
    char path[400];
    snprintf(path, sizeof path, "%s/valid.safetensors", tmpdir());
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    char *data;
    size_t len;
    CHECK_STATUS(sd_read_file(path, 1 << 20, &data, &len), SD_OK);
    if (!data)
        return;
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_parse((const uint8_t *)data, len, "full", &st), SD_OK);
    sd_safetensors_close(st);
    int rejected = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact-size buffer so ASan sees any over-read */
        memcpy(copy, data, n);
        sd_status s = sd_safetensors_parse(copy, n, "cut", &st);
        rejected += s != SD_OK;
        CHECK_MSG(s == SD_ERR_FORMAT, "truncated to %zu bytes gave %s", n, sd_status_name(s));
        if (s == SD_OK)
            sd_safetensors_close(st);
        free(copy);
    }
    CHECK(rejected == (int)len);
    unsigned long long seed = 7;
    int accepted = 0;
    for (int it = 0; it < 4000; it++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, data, len);
        size_t pos = (size_t)((test_rand(&seed) * 0.5f + 0.5f) * (float)len) % len;
        copy[pos] = (uint8_t)(copy[pos] ^ (1u << (it % 8)));
        sd_status s = sd_safetensors_parse(copy, len, "flip", &st);
        CHECK(s == SD_OK || s == SD_ERR_FORMAT || s == SD_ERR_UNSUPPORTED);
        if (s == SD_OK) {
            accepted++;
            for (size_t i = 0; i < st->n_tensors; i++) { /* every view stays inside the buffer */
                const uint8_t *p = st->tensors[i].data;
                CHECK(p >= copy && p + st->tensors[i].nbytes <= copy + len);
            }
            sd_safetensors_close(st);
        }
        free(copy);
    }
    printf("  corruption: %d of 4000 single-bit flips still valid (data bytes or harmless header bits)\n",
           accepted);
    free(data);
}

/* ------------------------------------------------------------ writer round trip */

TEST(writer_round_trip)
{
    float f32[2 * 3 * 4];
    uint16_t f16[5], bf16[5];
    int64_t i64[4] = {0, -1, INT64_MAX, INT64_MIN};
    int32_t i32[3] = {7, -123456, INT32_MIN};
    for (int i = 0; i < 24; i++)
        f32[i] = (float)i * 0.25f - 3.0f;
    const float hv[5] = {1.0f, -2.5f, 65504.0f, 5.9604644775390625e-8f, -0.0f};
    for (int i = 0; i < 5; i++) {
        f16[i] = sd_f32_to_f16(hv[i]);
        bf16[i] = sd_f32_to_bf16(hv[i] * 3.0f);
    }
    float scalar = 42.0f;
    sd_st_writer *w = sd_st_writer_new();
    CHECK(w != NULL);
    CHECK_STATUS(sd_st_writer_add(w, "t.f32", SD_F32, 3, (int64_t[]){2, 3, 4}, f32), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "t.f16", SD_F16, 1, (int64_t[]){5}, f16), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "t.bf16", SD_BF16, 2, (int64_t[]){5, 1}, bf16), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "t.i64", SD_I64, 2, (int64_t[]){2, 2}, i64), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "t.i32", SD_I32, 1, (int64_t[]){3}, i32), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "scalar", SD_F32, 0, NULL, &scalar), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "empty", SD_F32, 2, (int64_t[]){0, 5}, f32), SD_OK);
    CHECK_STATUS(sd_st_writer_meta(w, "format", "pt"), SD_OK);
    CHECK_STATUS(sd_st_writer_meta(w, "note", "first"), SD_OK);
    CHECK_STATUS(sd_st_writer_meta(w, "note", "a \"quoted\" value\n"), SD_OK); /* replaces */
    /* invalid writer arguments */
    CHECK_STATUS(sd_st_writer_add(w, "__metadata__", SD_F32, 1, (int64_t[]){1}, f32), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_st_writer_add(w, "neg", SD_F32, 1, (int64_t[]){-1}, f32), SD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sd_st_writer_add(w, "rank", SD_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, f32),
                 SD_ERR_INVALID_ARGUMENT);
    char path[400];
    snprintf(path, sizeof path, "%s/round.safetensors", tmpdir());
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);

    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    if (!st)
        return;
    CHECK(st->n_tensors == 7);
    CHECK(sd_st_meta(st, "format") && !strcmp(sd_st_meta(st, "format"), "pt"));
    CHECK(sd_st_meta(st, "note") && !strcmp(sd_st_meta(st, "note"), "a \"quoted\" value\n"));
    CHECK(sd_st_meta(st, "absent") == NULL);

    const sd_st_tensor *t = sd_st_find(st, "t.f32");
    CHECK(t && t->dtype == SD_F32 && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4 &&
          t->numel == 24 && t->nbytes == 96 && !memcmp(t->data, f32, 96));
    /* zero-copy: the tensor data lies inside the file mapping; the writer pads the header to 8 bytes */
    CHECK(t && (const uint8_t *)t->data >= st->map.data && (const uint8_t *)t->data + 96 <= st->map.data + st->map.size);
    CHECK(t && ((const uint8_t *)t->data - st->map.data) % 8 == 0);
    t = sd_st_find(st, "t.f16");
    CHECK(t && t->dtype == SD_F16 && t->ndim == 1 && t->numel == 5 && !memcmp(t->data, f16, 10));
    if (t) {
        float out[5];
        CHECK_STATUS(sd_st_to_f32(t, out), SD_OK);
        for (int i = 0; i < 5; i++)
            CHECK(out[i] == hv[i] && !!signbit(out[i]) == !!signbit(hv[i]));
    }
    t = sd_st_find(st, "t.bf16");
    CHECK(t && t->dtype == SD_BF16 && t->ndim == 2 && t->shape[1] == 1 && !memcmp(t->data, bf16, 10));
    if (t) {
        float out[5];
        CHECK_STATUS(sd_st_to_f32(t, out), SD_OK);
        for (int i = 0; i < 5; i++)
            CHECK(out[i] == sd_bf16_to_f32(bf16[i]));
        CHECK(out[0] == 3.0f && out[1] == -7.5f);
    }
    t = sd_st_find(st, "t.i64");
    CHECK(t && t->dtype == SD_I64 && t->numel == 4 && !memcmp(t->data, i64, 32));
    if (t) {
        CHECK(sd_st_get(t, 1) == -1.0 && sd_st_get(t, 3) == (double)INT64_MIN);
        float out[4];
        CHECK_STATUS(sd_st_to_f32(t, out), SD_OK);
        CHECK(out[0] == 0.0f && out[1] == -1.0f && out[2] == 9.223372036854775807e18f);
    }
    t = sd_st_find(st, "t.i32");
    CHECK(t && t->dtype == SD_I32 && t->numel == 3 && !memcmp(t->data, i32, 12));
    if (t) {
        float out[3];
        CHECK_STATUS(sd_st_to_f32(t, out), SD_OK);
        CHECK(out[0] == 7.0f && out[1] == -123456.0f && out[2] == -2147483648.0f);
    }
    t = sd_st_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && sd_st_get(t, 0) == 42.0);
    t = sd_st_find(st, "empty");
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    sd_safetensors_close(st);
}

TEST(writer_empty_and_bad_path)
{
    sd_st_writer *w = sd_st_writer_new();
    char path[400];
    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir());
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", tmpdir());
    CHECK_STATUS(sd_st_writer_save(w, path), SD_ERR_IO);
    CHECK_ERR_CONTAINS("no/such/dir");
    sd_st_writer_free(w);
    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir());
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    CHECK(st && st->n_tensors == 0 && st->metadata == NULL);
    sd_safetensors_close(st);
}

/* ------------------------------------------------------------ conversions */

static double half_value(uint16_t h) /* by definition, in double */
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Nearest half to |f| (finite), ties to even, found by bisection over the
 * monotonic positive half bit patterns 0..0x7c00. */
static uint16_t nearest_half(float f)
{
    double a = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (a >= 65520.0)
        return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; /* find the largest lo with value(lo) <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (half_value((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double v0 = half_value((uint16_t)lo), v1 = lo < 0x7bff ? half_value((uint16_t)(lo + 1)) : 65536.0;
    uint16_t r;
    if (a - v0 < v1 - a)
        r = (uint16_t)lo;
    else if (a - v0 > v1 - a)
        r = (uint16_t)(lo + 1);
    else
        r = (uint16_t)((lo & 1) ? lo + 1 : lo);
    return sign | r;
}

TEST(f16_exhaustive)
{
    int bad_dec = 0, bad_rt = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_f16_to_f32((uint16_t)h);
        bool is_nan = ((h >> 10) & 31) == 31 && (h & 1023);
        if (is_nan) {
            uint16_t back = sd_f32_to_f16(f);
            bad_nan += !isnan(f) || ((back >> 10) & 31) != 31 || !(back & 1023) || (back & 0x8000) != (h & 0x8000);
            continue;
        }
        double want = ((h >> 10) & 31) == 31 ? ((h & 0x8000) ? -INFINITY : INFINITY) : half_value((uint16_t)h);
        bad_dec += (double)f != want || !!signbit(f) != ((h & 0x8000) != 0);
        bad_rt += sd_f32_to_f16(f) != h;
    }
    CHECK_MSG(bad_dec == 0, "%d halfs decode wrongly", bad_dec);
    CHECK_MSG(bad_rt == 0, "%d halfs do not round-trip", bad_rt);
    CHECK_MSG(bad_nan == 0, "%d NaN halfs do not stay NaN", bad_nan);

    /* rounding: every midpoint between neighbouring halfs (ties to even) and its float neighbours */
    int bad_round = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double v0 = half_value((uint16_t)h), v1 = h < 0x7bff ? half_value((uint16_t)(h + 1)) : 65536.0;
        float mid = (float)((v0 + v1) / 2); /* exact: 12 significant bits */
        float below = nextafterf(mid, 0.0f), above = nextafterf(mid, INFINITY);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        bad_round += sd_f32_to_f16(mid) != even;
        bad_round += sd_f32_to_f16(-mid) != (0x8000 | even);
        bad_round += sd_f32_to_f16(below) != h;
        bad_round += sd_f32_to_f16(above) != h + 1;
        bad_round += sd_f32_to_f16(-above) != (0x8000 | (h + 1));
    }
    CHECK_MSG(bad_round == 0, "%d midpoint roundings wrong", bad_round);

    /* random floats over the whole half range and beyond, against the bisection reference */
    unsigned long long seed = 12345;
    int bad_rand = 0;
    for (int i = 0; i < 300000; i++) {
        float m = test_rand(&seed) + 1.0f + 1e-7f; /* (0, 2] */
        int e = (int)((test_rand(&seed) * 0.5f + 0.5f) * 50.0f) - 32;
        float f = ldexpf(m, e) * (i & 1 ? -1.0f : 1.0f);
        uint16_t got = sd_f32_to_f16(f), want = nearest_half(f);
        if (got != want && bad_rand++ < 5)
            fprintf(stderr, "  f32_to_f16(%.9g) = 0x%04x, want 0x%04x\n", (double)f, got, want);
    }
    CHECK_MSG(bad_rand == 0, "%d random conversions wrong", bad_rand);
    /* specials */
    CHECK(sd_f32_to_f16(INFINITY) == 0x7c00 && sd_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(sd_f32_to_f16(1e30f) == 0x7c00 && sd_f32_to_f16(-1e30f) == 0xfc00);
    CHECK(sd_f32_to_f16(1e-45f) == 0 && sd_f32_to_f16(-1e-45f) == 0x8000);
    CHECK(sd_f32_to_f16(2.9802322387695312e-8f) == 0);      /* exactly half the smallest subnormal: ties to 0 */
    CHECK(sd_f32_to_f16(2.98023259e-8f) == 1);              /* just above */
    CHECK(sd_f32_to_f16(8.9406967163085938e-8f) == 2);      /* 1.5 x smallest: ties to even 2 */
    CHECK(sd_f32_to_f16(6.1035156e-05f) == 0x0400);         /* smallest normal */
    CHECK(sd_f32_to_f16(6.09755516e-05f) == 0x03ff);        /* largest subnormal */
    CHECK(isnan(sd_f16_to_f32(sd_f32_to_f16(NAN))));
    CHECK(sd_f16_to_f32(0x7c00) == INFINITY && sd_f16_to_f32(0xfc00) == -INFINITY);
    CHECK(sd_f16_to_f32(0x0001) == 5.9604644775390625e-8f && sd_f16_to_f32(0x7bff) == 65504.0f);
}

static double bf16_value(uint16_t h)
{
    int e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return (h & 0x8000) ? -v : v;
}

TEST(bf16_exhaustive)
{
    int bad = 0, bad_round = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_bf16_to_f32((uint16_t)h);
        int e = (h >> 7) & 255;
        if (e == 255) {
            if (h & 127)
                bad += !isnan(f) || !isnan(sd_bf16_to_f32(sd_f32_to_bf16(f)));
            else
                bad += !isinf(f) || sd_f32_to_bf16(f) != h;
            continue;
        }
        bad += (double)f != bf16_value((uint16_t)h) || sd_f32_to_bf16(f) != h;
        if ((h & 0x7fff) < 0x7f7f) { /* midpoint to the next bf16 of the same sign */
            double v1 = bf16_value((uint16_t)(h + 1));
            float mid = (float)(((double)f + v1) / 2);
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            bad_round += sd_f32_to_bf16(mid) != even;
            bad_round += sd_f32_to_bf16(nextafterf(mid, 0.0f)) != h;
            bad_round += sd_f32_to_bf16(nextafterf(mid, signbit(f) ? -INFINITY : INFINITY)) != h + 1;
        }
    }
    CHECK_MSG(bad == 0, "%d bf16 values decode or round-trip wrongly", bad);
    CHECK_MSG(bad_round == 0, "%d bf16 roundings wrong", bad_round);
    CHECK(sd_f32_to_bf16(3.4028235e38f) == 0x7f80); /* max float rounds up to inf */
    CHECK(isnan(sd_bf16_to_f32(sd_f32_to_bf16(NAN))));
}

TEST(to_f32_subnormal_inf_nan)
{
    /* an F16 and a BF16 tensor with subnormals, infinities and NaN, read through the file path */
    uint16_t h[8] = {0x0001, 0x03ff, 0x8001, 0x7c00, 0xfc00, 0x7e00, 0x3555, 0x0400};
    uint16_t b[6] = {0x0001, 0x807f, 0x7f80, 0xff80, 0x7fc0, 0x3f80};
    sd_st_writer *w = sd_st_writer_new();
    CHECK_STATUS(sd_st_writer_add(w, "h", SD_F16, 1, (int64_t[]){8}, h), SD_OK);
    CHECK_STATUS(sd_st_writer_add(w, "b", SD_BF16, 1, (int64_t[]){6}, b), SD_OK);
    char path[400];
    snprintf(path, sizeof path, "%s/special.safetensors", tmpdir());
    CHECK_STATUS(sd_st_writer_save(w, path), SD_OK);
    sd_st_writer_free(w);
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    if (!st)
        return;
    float o[8];
    CHECK_STATUS(sd_st_to_f32(sd_st_find(st, "h"), o), SD_OK);
    CHECK(o[0] == 5.9604644775390625e-8f && o[1] == 6.09755516e-05f && o[2] == -5.9604644775390625e-8f);
    CHECK(o[3] == INFINITY && o[4] == -INFINITY && isnan(o[5]) && o[7] == 6.1035156e-05f);
    CHECK((double)o[6] == half_value(0x3555));
    for (int i = 0; i < 8; i++)
        CHECK(i == 5 || sd_st_get(sd_st_find(st, "h"), (size_t)i) == (double)o[i]);
    CHECK_STATUS(sd_st_to_f32(sd_st_find(st, "b"), o), SD_OK);
    CHECK((double)o[0] == ldexp(1, -133) && (double)o[1] == -bf16_value(0x007f));
    CHECK(o[2] == INFINITY && o[3] == -INFINITY && isnan(o[4]) && o[5] == 1.0f);
    sd_safetensors_close(st);
}

/* ------------------------------------------------------------ fixtures */

TEST(fixture_unet_fp16_matches_fp32)
{
    const char *fx = getenv("SD_FIXTURES");
    if (!fx || !*fx)
        SKIP("SD_FIXTURES is not set");
    char p16[600], p32[600];
    snprintf(p16, sizeof p16, "%s/models/tiny-sd15/unet/diffusion_pytorch_model.fp16.safetensors", fx);
    snprintf(p32, sizeof p32, "%s/models/tiny-sd15/unet/diffusion_pytorch_model.safetensors", fx);
    if (!sd_file_exists(p16) || !sd_file_exists(p32))
        SKIP("%s not present", p16);
    sd_safetensors *a = NULL, *b = NULL;
    CHECK_STATUS(sd_safetensors_open(p16, &a), SD_OK);
    CHECK_STATUS(sd_safetensors_open(p32, &b), SD_OK);
    if (!a || !b) {
        sd_safetensors_close(a);
        sd_safetensors_close(b);
        return;
    }
    CHECK(a->n_tensors == b->n_tensors && a->n_tensors > 100);
    CHECK(sd_st_meta(a, "format") && !strcmp(sd_st_meta(a, "format"), "pt"));
    const sd_st_tensor *ci = sd_st_find(a, "conv_in.weight");
    CHECK(ci && ci->dtype == SD_F16 && ci->ndim == 4 && ci->shape[0] == 32 && ci->shape[1] == 4 &&
          ci->shape[2] == 3 && ci->shape[3] == 3);
    /* the fp16 file is the fp32 file rounded to nearest even: check every element */
    size_t total = 0, mismatched = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const sd_st_tensor *t16 = &a->tensors[i], *t32 = sd_st_find(b, t16->name);
        CHECK_MSG(t32 != NULL, "%s missing in the fp32 file", t16->name);
        if (!t32)
            continue;
        CHECK(t16->dtype == SD_F16 && t32->dtype == SD_F32 && t16->ndim == t32->ndim && t16->numel == t32->numel);
        CHECK(!memcmp(t16->shape, t32->shape, sizeof(int64_t) * (size_t)t16->ndim));
        CHECK((const uint8_t *)t16->data >= a->map.data &&
              (const uint8_t *)t16->data + t16->nbytes <= a->map.data + a->map.size);
        float *f16 = malloc(t16->numel * sizeof(float) + 1), *f32 = malloc(t32->numel * sizeof(float) + 1);
        CHECK_STATUS(sd_st_to_f32(t16, f16), SD_OK);
        CHECK_STATUS(sd_st_to_f32(t32, f32), SD_OK);
        for (size_t j = 0; j < t16->numel; j++) {
            uint16_t bits;
            memcpy(&bits, (const uint8_t *)t16->data + 2 * j, 2);
            mismatched += sd_f32_to_f16(f32[j]) != bits || f16[j] != sd_f16_to_f32(bits);
        }
        total += t16->numel;
        free(f16);
        free(f32);
    }
    printf("  %zu tensors, %zu elements compared, %zu mismatches\n", a->n_tensors, total, mismatched);
    CHECK(mismatched == 0);
    sd_safetensors_close(a);
    sd_safetensors_close(b);
}

static void cleanup(void)
{
    if (!g_dir[0])
        return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
}

int main(void)
{
    RUN(rule_file_too_small);
    RUN(rule_header_too_large);
    RUN(rule_header_out_of_file);
    RUN(rule_header_json);
    RUN(rule_header_not_object);
    RUN(rule_duplicate_name);
    RUN(rule_entry);
    RUN(rule_unknown_dtype);
    RUN(rule_shape);
    RUN(rule_shape_overflow);
    RUN(rule_offsets);
    RUN(rule_offsets_out_of_data);
    RUN(rule_size_mismatch);
    RUN(rule_overlap);
    RUN(rule_gap);
    RUN(rule_metadata);
    RUN(valid_minimal_files);
    RUN(missing_file_and_directory);
    RUN(parse_from_memory);
    RUN(truncation_and_corruption);
    RUN(writer_round_trip);
    RUN(writer_empty_and_bad_path);
    RUN(f16_exhaustive);
    RUN(bf16_exhaustive);
    RUN(to_f32_subnormal_inf_nan);
    RUN(fixture_unet_fp16_matches_fp32);
    cleanup();
    return test_summary();
}
