/* The `streamdiff serve` protocol without a network (src/server/protocol.c,
 * metrics.c): control-message parsing and validation, limits, hostile JSON,
 * frame header checks, the JSON the server sends, Prometheus rendering. */
#include "test.h"

#include "io/image.h"
#include "server/metrics.h"
#include "server/protocol.h"

static srv_limits L;
static srv_config C0;

static void setup(void)
{
    srv_limits_default(&L);
    srv_config_default(&C0, 512, 512);
}

/* Parses `text`; returns whether it was accepted. On rejection checks that
 * `next` was left alone and that the error code is `code` (when given). */
static bool parse(const char *text, const char *code, srv_config *next, srv_msg *msg)
{
    srv_error err = {0};
    srv_msg m;
    *next = C0;
    next->seed = 777; /* sentinel: a rejected message must not touch *next */
    bool ok = srv_parse_message(text, strlen(text), &L, &C0, msg ? msg : &m, next, &err);
    if (!ok) {
        CHECK_MSG(next->seed == 777, "rejected message changed the output config: %s", text);
        CHECK_MSG(err.message[0] != 0, "no error message for %s", text);
        if (code)
            CHECK_MSG(err.code && !strcmp(err.code, code), "'%.60s': code %s, want %s (%s)", text,
                      err.code ? err.code : "(null)", code, err.message);
    } else if (code) {
        CHECK_MSG(false, "'%.60s' was accepted, want error %s", text, code);
    }
    return ok;
}

TEST(defaults_match_stream_defaults)
{
    setup();
    sd_stream_params p;
    sd_stream_default_params(&p);
    CHECK(C0.mode == SRV_MODE_IMG2IMG);
    CHECK(C0.n_t_index == p.n_t_index && C0.t_index_list[0] == 32 && C0.t_index_list[1] == 45);
    CHECK(C0.guidance_scale == p.guidance_scale && C0.delta == p.delta && C0.cfg_type == p.cfg_type);
    CHECK(C0.width == 512 && C0.height == 512 && C0.jpeg_quality == 85);
    sd_stream_params q;
    srv_config_stream_params(&C0, &q);
    CHECK(q.width == 512 && q.n_t_index == 2 && q.num_inference_steps == 50 && q.drop_old_frames);
}

TEST(full_config_applies)
{
    setup();
    srv_config n;
    const char *msg = "{\"type\":\"config\",\"mode\":\"txt2img\",\"prompt\":\"a cat, watercolor\","
                      "\"negative_prompt\":\"blurry\",\"guidance_scale\":1.5,\"delta\":0.8,"
                      "\"t_index_list\":[0,16,32,45],\"seed\":123456789,\"similarity_threshold\":0.98,"
                      "\"max_skip_frames\":5,\"width\":256,\"height\":320,\"cfg_type\":\"full\",\"jpeg_quality\":70,"
                      "\"max_fps\":12.5}";
    CHECK(parse(msg, NULL, &n, NULL));
    CHECK(n.mode == SRV_MODE_TXT2IMG);
    CHECK(!strcmp(n.prompt, "a cat, watercolor") && !strcmp(n.negative_prompt, "blurry"));
    CHECK(fabsf(n.guidance_scale - 1.5f) < 1e-6f && fabsf(n.delta - 0.8f) < 1e-6f);
    CHECK(n.n_t_index == 4 && n.t_index_list[0] == 0 && n.t_index_list[3] == 45);
    CHECK(n.seed == 123456789ull && fabsf(n.similarity_threshold - 0.98f) < 1e-6f && n.max_skip_frames == 5);
    CHECK(n.width == 256 && n.height == 320 && n.cfg_type == SD_CFG_FULL && n.jpeg_quality == 70);
    CHECK(fabsf(n.max_fps - 12.5f) < 1e-6f);
    CHECK(srv_config_diff(&C0, &n) & SRV_CHANGE_OTHER);
}

TEST(partial_update_keeps_the_rest)
{
    setup();
    srv_config n;
    CHECK(parse("{\"type\":\"config\",\"prompt\":\"dog\"}", NULL, &n, NULL));
    CHECK(!strcmp(n.prompt, "dog"));
    CHECK(n.guidance_scale == C0.guidance_scale && n.n_t_index == 2 && n.width == 512 && n.seed == C0.seed);
    /* whitespace around the value is fine, field order does not matter */
    CHECK(parse(" \n\t{\"seed\":5, \"type\":\"config\"}\r\n ", NULL, &n, NULL));
    CHECK(n.seed == 5);
    CHECK(parse("{\"type\":\"config\"}", NULL, &n, NULL)); /* no fields: a no-op */
}

TEST(all_or_nothing)
{
    setup();
    srv_config n;
    /* good prompt, then a bad field: nothing changes (parse() checks the sentinel) */
    parse("{\"type\":\"config\",\"prompt\":\"changed\",\"guidance_scale\":99}", "bad_value", &n, NULL);
    parse("{\"type\":\"config\",\"width\":256,\"t_index_list\":[9,3]}", "bad_value", &n, NULL);
    parse("{\"type\":\"config\",\"seed\":1,\"bogus\":1}", "unknown_field", &n, NULL);
}

TEST(ping)
{
    setup();
    srv_config n;
    srv_msg m;
    CHECK(parse("{\"type\":\"ping\",\"id\":42.5}", NULL, &n, &m));
    CHECK(m.type == SRV_MSG_PING && m.has_ping_id && m.ping_id == 42.5);
    CHECK(parse("{\"type\":\"ping\"}", NULL, &n, &m));
    CHECK(m.type == SRV_MSG_PING && !m.has_ping_id);
    parse("{\"type\":\"ping\",\"id\":\"x\"}", "bad_type", &n, NULL);
    parse("{\"type\":\"ping\",\"id\":1,\"id\":2}", "duplicate_field", &n, NULL);
    parse("{\"type\":\"ping\",\"prompt\":\"x\"}", "unknown_field", &n, NULL);
}

TEST(malformed_json)
{
    setup();
    srv_config n;
    const char *bad_json[] = {"{", "}", "{\"type\":", "nul", "tru", "{\"type\":\"config\",}", "{'type':'config'}",
                              "{\"type\":\"config\"} {}", "{\"type\":\"config\"}x", "[1,2,,3]",
                              "{\"type\":\"config\",\"guidance_scale\":NaN}",
                              "{\"type\":\"config\",\"guidance_scale\":Infinity}",
                              "{\"type\":\"config\",\"prompt\":\"\\ud800\"}", "\"unterminated"};
    for (size_t i = 0; i < SD_ARRAY_LEN(bad_json); i++)
        parse(bad_json[i], "bad_json", &n, NULL);
    srv_error err;
    srv_msg m;
    CHECK(!srv_parse_message("", 0, &L, &C0, &m, &n, &err) && !strcmp(err.code, "bad_json"));
    CHECK(!srv_parse_message(NULL, 0, &L, &C0, &m, &n, &err));
    /* a NUL byte inside the message */
    const char nul[] = "{\"type\":\"config\",\"prompt\":\"a\0b\"}";
    CHECK(!srv_parse_message(nul, sizeof nul - 1, &L, &C0, &m, &n, &err) && !strcmp(err.code, "bad_json"));
    /* not NUL-terminated: only `len` bytes are read */
    const char *two = "{\"type\":\"ping\"}GARBAGE";
    CHECK(srv_parse_message(two, 15, &L, &C0, &m, &n, &err) && m.type == SRV_MSG_PING);
}

TEST(wrong_types_and_shapes)
{
    setup();
    srv_config n;
    const struct {
        const char *text, *code;
    } cases[] = {
        {"null", "bad_type"},
        {"[]", "bad_type"},
        {"42", "bad_type"},
        {"\"config\"", "bad_type"},
        {"{}", "unknown_type"},
        {"{\"prompt\":\"x\"}", "unknown_type"},
        {"{\"type\":null}", "bad_type"},
        {"{\"type\":[\"config\"]}", "bad_type"},
        {"{\"type\":\"Config\"}", "unknown_type"},
        {"{\"type\":\"config\",\"prompt\":7}", "bad_type"},
        {"{\"type\":\"config\",\"prompt\":null}", "bad_type"},
        {"{\"type\":\"config\",\"negative_prompt\":{}}", "bad_type"},
        {"{\"type\":\"config\",\"guidance_scale\":\"1.2\"}", "bad_type"},
        {"{\"type\":\"config\",\"guidance_scale\":true}", "bad_type"},
        {"{\"type\":\"config\",\"delta\":[1]}", "bad_type"},
        {"{\"type\":\"config\",\"t_index_list\":32}", "bad_type"},
        {"{\"type\":\"config\",\"t_index_list\":[\"32\"]}", "bad_type"},
        {"{\"type\":\"config\",\"t_index_list\":[[32]]}", "bad_type"},
        {"{\"type\":\"config\",\"mode\":1}", "bad_type"},
        {"{\"type\":\"config\",\"mode\":\"video\"}", "bad_value"},
        {"{\"type\":\"config\",\"cfg_type\":\"SELF\"}", "bad_value"},
        {"{\"type\":\"config\",\"width\":\"512\"}", "bad_type"},
        {"{\"type\":\"config\",\"Prompt\":\"x\"}", "unknown_field"},
        {"{\"type\":\"config\",\"\":1}", "unknown_field"},
        {"{\"type\":\"config\",\"prompt\":\"a\",\"prompt\":\"b\"}", "duplicate_field"},
        {"{\"type\":\"config\",\"type\":\"config\"}", "duplicate_field"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(cases); i++)
        parse(cases[i].text, cases[i].code, &n, NULL);
}

TEST(value_ranges)
{
    setup();
    srv_config n;
    /* boundaries accepted */
    CHECK(parse("{\"type\":\"config\",\"guidance_scale\":0,\"delta\":0,\"similarity_threshold\":0}", NULL, &n, NULL));
    CHECK(parse("{\"type\":\"config\",\"guidance_scale\":20,\"delta\":10,\"similarity_threshold\":1}", NULL, &n, NULL));
    CHECK(parse("{\"type\":\"config\",\"seed\":0}", NULL, &n, NULL) && n.seed == 0);
    CHECK(parse("{\"type\":\"config\",\"seed\":9007199254740991}", NULL, &n, NULL) && n.seed == 9007199254740991ull);
    CHECK(parse("{\"type\":\"config\",\"seed\":1e3}", NULL, &n, NULL) && n.seed == 1000); /* integral */
    CHECK(parse("{\"type\":\"config\",\"width\":8,\"height\":1024}", NULL, &n, NULL) && n.width == 8);
    CHECK(parse("{\"type\":\"config\",\"jpeg_quality\":1}", NULL, &n, NULL));
    CHECK(parse("{\"type\":\"config\",\"jpeg_quality\":100}", NULL, &n, NULL));
    CHECK(parse("{\"type\":\"config\",\"t_index_list\":[49]}", NULL, &n, NULL) && n.n_t_index == 1);
    CHECK(parse("{\"type\":\"config\",\"t_index_list\":[0,1,2,3]}", NULL, &n, NULL) && n.n_t_index == 4);
    /* out of range */
    const char *bad[] = {
        "{\"type\":\"config\",\"guidance_scale\":-0.01}", "{\"type\":\"config\",\"guidance_scale\":20.001}",
        "{\"type\":\"config\",\"guidance_scale\":1e999}", "{\"type\":\"config\",\"guidance_scale\":-1e999}",
        "{\"type\":\"config\",\"delta\":10.5}",           "{\"type\":\"config\",\"similarity_threshold\":1.01}",
        "{\"type\":\"config\",\"max_skip_frames\":-1}",   "{\"type\":\"config\",\"max_skip_frames\":1001}",
        "{\"type\":\"config\",\"max_skip_frames\":2.5}",  "{\"type\":\"config\",\"seed\":-1}",
        "{\"type\":\"config\",\"seed\":0.5}",             "{\"type\":\"config\",\"seed\":9007199254740993}",
        "{\"type\":\"config\",\"seed\":1e30}",            "{\"type\":\"config\",\"width\":0}",
        "{\"type\":\"config\",\"width\":1030}",           "{\"type\":\"config\",\"width\":100}",
        "{\"type\":\"config\",\"height\":-64}",           "{\"type\":\"config\",\"jpeg_quality\":0}",
        "{\"type\":\"config\",\"jpeg_quality\":101}",     "{\"type\":\"config\",\"max_fps\":-1}",
        "{\"type\":\"config\",\"max_fps\":1001}",        "{\"type\":\"config\",\"t_index_list\":[]}",
        "{\"type\":\"config\",\"t_index_list\":[50]}",    "{\"type\":\"config\",\"t_index_list\":[-1]}",
        "{\"type\":\"config\",\"t_index_list\":[3,3]}",   "{\"type\":\"config\",\"t_index_list\":[40,30]}",
        "{\"type\":\"config\",\"t_index_list\":[1.5]}",   "{\"type\":\"config\",\"t_index_list\":[0,1,2,3,4]}",
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++)
        parse(bad[i], "bad_value", &n, NULL);
}

TEST(configurable_limits)
{
    setup();
    srv_config n;
    /* prompt bytes: exactly the limit passes, one more fails */
    L.max_prompt_bytes = 10;
    CHECK(parse("{\"type\":\"config\",\"prompt\":\"0123456789\"}", NULL, &n, NULL));
    parse("{\"type\":\"config\",\"prompt\":\"0123456789a\"}", "too_large", &n, NULL);
    /* multi-byte characters count in bytes: 4 x 3 bytes = 12 */
    parse("{\"type\":\"config\",\"negative_prompt\":\"\u2603\u2603\u2603\u2603\"}", "too_large", &n, NULL);
    /* \u escapes decode before the check: 11 escaped characters */
    parse("{\"type\":\"config\",\"prompt\":\"\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041\"}",
          "too_large", &n, NULL);
    setup();
    L.max_steps = 2;
    CHECK(parse("{\"type\":\"config\",\"t_index_list\":[10,20]}", NULL, &n, NULL));
    parse("{\"type\":\"config\",\"t_index_list\":[10,20,30]}", "bad_value", &n, NULL);
    setup();
    L.max_size = 256;
    CHECK(parse("{\"type\":\"config\",\"width\":256}", NULL, &n, NULL));
    parse("{\"type\":\"config\",\"width\":264}", "bad_value", &n, NULL);
    /* text message bytes */
    setup();
    L.max_text_bytes = 40;
    CHECK(parse("{\"type\":\"config\",\"prompt\":\"abcdefgh\"}", NULL, &n, NULL)); /* 36 bytes */
    parse("{\"type\":\"config\",\"prompt\":\"abcdefghijklmn\"}", "too_large", &n, NULL);
    /* the hard cap wins over a bigger configured limit */
    setup();
    L.max_text_bytes = (size_t)1 << 30;
    size_t big = SRV_TEXT_MAX + 10;
    char *s = malloc(big + 1);
    CHECK(s != NULL);
    if (s) {
        memset(s, ' ', big);
        s[big] = 0;
        memcpy(s, "{\"type\":\"ping\"}", 15);
        parse(s, "too_large", &n, NULL);
        free(s);
    }
}

TEST(deep_nesting_and_large_input)
{
    setup();
    srv_config n;
    L.max_text_bytes = SRV_TEXT_MAX;
    /* deeper than cJSON's nesting limit: rejected, no stack overflow */
    size_t d = 200000;
    char *s = malloc(2 * d + 1);
    CHECK(s != NULL);
    if (!s)
        return;
    memset(s, '[', d);
    memset(s + d, ']', d);
    s[2 * d] = 0;
    parse(s, "bad_json", &n, NULL);
    /* many fields: a 1000-element t_index_list is just too long */
    size_t k = 0;
    k += (size_t)sprintf(s + k, "{\"type\":\"config\",\"t_index_list\":[");
    for (int i = 0; i < 1000; i++)
        k += (size_t)sprintf(s + k, "%s%d", i ? "," : "", i % 50);
    sprintf(s + k, "]}");
    parse(s, "bad_value", &n, NULL);
    free(s);
}

TEST(utf8)
{
    CHECK(srv_utf8_valid((const uint8_t *)"", 0));
    CHECK(srv_utf8_valid((const uint8_t *)"plain ascii", 11));
    const char *ok[] = {"\xc3\xa9", "\xe2\x98\x83", "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf",
                        "\xed\x9f\xbf"};
    for (size_t i = 0; i < SD_ARRAY_LEN(ok); i++)
        CHECK_MSG(srv_utf8_valid((const uint8_t *)ok[i], strlen(ok[i])), "valid #%zu", i);
    const char *bad[] = {"\x80",             "\xbf",         "\xc0\xaf",     "\xc1\xbf",     "\xe0\x80\xaf",
                         "\xf0\x80\x80\xaf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
                         "\xff",             "\xfe",         "\xc3",         "\xe2\x98",     "\xf0\x9f\x98",
                         "\xc3\x28",         "\xe2\x28\xa1"};
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++)
        CHECK_MSG(!srv_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])), "invalid #%zu", i);
    setup();
    srv_config n;
    parse("{\"type\":\"config\",\"prompt\":\"\xff\"}", "bad_utf8", &n, NULL);
    CHECK(parse("\xef\xbb\xbf{\"type\":\"ping\"}", NULL, &n, NULL)); /* a leading BOM is skipped (cJSON) */
    CHECK(parse("{\"type\":\"config\",\"prompt\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}", NULL, &n, NULL));
    CHECK(!strcmp(n.prompt, "caf\xc3\xa9 \xf0\x9f\x98\x80"));
}

TEST(config_diff)
{
    setup();
    srv_config b = C0;
    CHECK(srv_config_diff(&C0, &b) == 0);
    snprintf(b.prompt, sizeof b.prompt, "x");
    CHECK(srv_config_diff(&C0, &b) == SRV_CHANGE_PROMPT);
    b = C0;
    b.guidance_scale = 2;
    b.delta = 0.5f;
    CHECK(srv_config_diff(&C0, &b) == SRV_CHANGE_LIVE);
    b = C0;
    b.similarity_threshold = 0.9f;
    CHECK(srv_config_diff(&C0, &b) == SRV_CHANGE_LIVE);
    const char *stream_changes[] = {"{\"type\":\"config\",\"t_index_list\":[20,45]}",
                                    "{\"type\":\"config\",\"t_index_list\":[32]}",
                                    "{\"type\":\"config\",\"width\":256}", "{\"type\":\"config\",\"height\":256}",
                                    "{\"type\":\"config\",\"cfg_type\":\"none\"}", "{\"type\":\"config\",\"seed\":9}"};
    for (size_t i = 0; i < SD_ARRAY_LEN(stream_changes); i++) {
        CHECK(parse(stream_changes[i], NULL, &b, NULL));
        CHECK_MSG(srv_config_diff(&C0, &b) == SRV_CHANGE_STREAM, "%s", stream_changes[i]);
    }
    CHECK(parse("{\"type\":\"config\",\"mode\":\"txt2img\",\"jpeg_quality\":50}", NULL, &b, NULL));
    CHECK(srv_config_diff(&C0, &b) == SRV_CHANGE_OTHER);
    CHECK(parse("{\"type\":\"config\",\"prompt\":\"p\",\"delta\":0.1,\"width\":64}", NULL, &b, NULL));
    CHECK(srv_config_diff(&C0, &b) == (SRV_CHANGE_PROMPT | SRV_CHANGE_LIVE | SRV_CHANGE_STREAM));
}

/* A minimal JPEG header: SOI, APP0, SOF0 with the given size. */
static size_t fake_jpeg(uint8_t *b, int w, int h, uint8_t sof)
{
    size_t k = 0;
    const uint8_t head[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
    memcpy(b, head, sizeof head);
    k = sizeof head;
    const uint8_t s[] = {0xff, sof, 0x00, 0x11, 8, (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)(w >> 8), (uint8_t)w,
                         3,    1,   0x22, 0,    2, 0x11, 1, 3, 0x11, 1};
    memcpy(b + k, s, sizeof s);
    return k + sizeof s;
}

TEST(frame_checks)
{
    setup();
    srv_error e;
    int w = 0, h = 0;
    uint8_t b[256];
    size_t n = fake_jpeg(b, 640, 480, 0xc0);
    CHECK(srv_check_frame(b, n, &L, &w, &h, &e) && w == 640 && h == 480);
    n = fake_jpeg(b, 320, 200, 0xc2); /* progressive */
    CHECK(srv_check_frame(b, n, &L, &w, &h, &e) && w == 320 && h == 200);
    n = fake_jpeg(b, 60000, 60000, 0xc0);
    CHECK(!srv_check_frame(b, n, &L, &w, &h, &e) && !strcmp(e.code, "too_large"));
    n = fake_jpeg(b, 0, 480, 0xc0);
    CHECK(!srv_check_frame(b, n, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    /* truncated inside the SOF, no SOF, SOS before SOF, bad marker */
    n = fake_jpeg(b, 64, 64, 0xc0);
    CHECK(!srv_check_frame(b, 24, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    CHECK(!srv_check_frame(b, 20, &L, &w, &h, &e));
    const uint8_t sos[] = {0xff, 0xd8, 0xff, 0xda, 0x00, 0x02, 0xff, 0xd9};
    CHECK(!srv_check_frame(sos, sizeof sos, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    const uint8_t junk[] = {0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 1, 2, 0x12, 0x34, 0x56, 0x78};
    CHECK(!srv_check_frame(junk, sizeof junk, &L, &w, &h, &e));
    const uint8_t seg_len_lies[] = {0xff, 0xd8, 0xff, 0xe0, 0xff, 0xff, 1, 2};
    CHECK(!srv_check_frame(seg_len_lies, sizeof seg_len_lies, &L, &w, &h, &e));
    /* no signature */
    CHECK(!srv_check_frame((const uint8_t *)"GIF89a....", 10, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    CHECK(!srv_check_frame(b, 0, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    /* too many bytes for the limit */
    L.max_frame_bytes = 16;
    n = fake_jpeg(b, 64, 64, 0xc0);
    CHECK(!srv_check_frame(b, n, &L, &w, &h, &e) && !strcmp(e.code, "too_large"));
    setup();
    /* pixel limit */
    L.max_frame_pixels = 64 * 64;
    n = fake_jpeg(b, 64, 64, 0xc0);
    CHECK(srv_check_frame(b, n, &L, &w, &h, &e));
    n = fake_jpeg(b, 64, 65, 0xc0);
    CHECK(!srv_check_frame(b, n, &L, &w, &h, &e) && !strcmp(e.code, "too_large"));
    setup();
    /* PNG: IHDR size */
    uint8_t png[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                       0,    0,   1,   0,   0,    0,    0,    200, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    CHECK(srv_check_frame(png, sizeof png, &L, &w, &h, &e) && w == 256 && h == 200);
    png[16] = 0x7f; /* 2 Gi pixels wide */
    CHECK(!srv_check_frame(png, sizeof png, &L, &w, &h, &e) && !strcmp(e.code, "too_large"));
    png[16] = 0;
    memcpy(png + 12, "IDAT", 4);
    CHECK(!srv_check_frame(png, sizeof png, &L, &w, &h, &e) && !strcmp(e.code, "bad_frame"));
    CHECK(!srv_check_frame(png, 20, &L, &w, &h, &e));
}

TEST(real_jpeg_frame)
{
    setup();
    sd_image img;
    CHECK_STATUS(sd_rgb_alloc(&img, 96, 40), SD_OK);
    if (!img.data)
        return;
    for (int i = 0; i < 96 * 40 * 3; i++)
        img.data[i] = (uint8_t)(i * 7);
    uint8_t *jpg = NULL;
    size_t n = 0;
    CHECK_STATUS(sd_rgb_encode_jpeg(&img, 80, &jpg, &n), SD_OK);
    srv_error e;
    int w = 0, h = 0;
    CHECK(jpg && srv_check_frame(jpg, n, &L, &w, &h, &e) && w == 96 && h == 40);
    /* every truncation is either rejected here or left to the decoder; none crashes */
    for (size_t k = 0; jpg && k < n; k += 7)
        srv_check_frame(jpg, k, &L, &w, &h, &e);
    free(jpg);
    sd_image_free(&img);
}

TEST(json_out_round_trip)
{
    setup();
    srv_config a;
    CHECK(parse("{\"type\":\"config\",\"mode\":\"txt2img\",\"prompt\":\"quote \\\" backslash \\\\ tab \\t \u00e9\","
                "\"guidance_scale\":1.35,\"t_index_list\":[5,25,45],\"seed\":42,\"width\":384,\"cfg_type\":\"initialize\"}",
                NULL, &a, NULL));
    cJSON *o = srv_config_json(&a);
    CHECK(o != NULL);
    if (!o)
        return;
    cJSON_AddStringToObject(o, "type", "config");
    char *s = srv_json_print(o);
    CHECK(s != NULL);
    srv_config b;
    srv_msg m;
    srv_error e;
    CHECK(s && srv_parse_message(s, strlen(s), &L, &C0, &m, &b, &e));
    CHECK(srv_config_diff(&a, &b) == 0);
    CHECK(s && strstr(s, "\"guidance_scale\":1.35") != NULL); /* rounded, not 1.350000023841858 */
    free(s);
    /* error messages are valid JSON even when they quote odd input */
    srv_error er;
    srv_error_set(&er, "bad_value", "field \"%s\": \x01 control, \xe2\x98\x83, cut \xe2\x98", "x");
    char *j = srv_error_json(&er);
    CHECK(j != NULL);
    cJSON *back = j ? cJSON_Parse(j) : NULL;
    CHECK(back != NULL);
    if (back) {
        CHECK(!strcmp(cJSON_GetObjectItem(back, "type")->valuestring, "error"));
        CHECK(!strcmp(cJSON_GetObjectItem(back, "code")->valuestring, "bad_value"));
        const char *msg = cJSON_GetObjectItem(back, "message")->valuestring;
        CHECK(msg && srv_utf8_valid((const uint8_t *)msg, strlen(msg)));
        cJSON_Delete(back);
    }
    free(j);
    cJSON *lj = srv_limits_json(&L);
    CHECK(lj && cJSON_GetObjectItem(lj, "max_frame_bytes")->valuedouble == (double)L.max_frame_bytes);
    cJSON_Delete(lj);
}

/* Parses a "lora" message against `lo`; on rejection checks the code and that
 * the message was not taken for anything else. */
static bool parse_lora_msg(const srv_loras *lo, const char *text, const char *code, srv_msg *m)
{
    srv_config n = C0;
    n.seed = 777;
    srv_error err = {0};
    memset(m, 0, sizeof *m);
    bool ok = srv_parse_message_ex(text, strlen(text), &L, lo, &C0, m, &n, &err);
    CHECK_MSG(n.seed == 777, "a lora message changed the config: %s", text);
    if (!ok) {
        CHECK_MSG(err.message[0] != 0, "no error message for %s", text);
        if (code)
            CHECK_MSG(err.code && !strcmp(err.code, code), "'%.70s': code %s, want %s (%s)", text,
                      err.code ? err.code : "(null)", code, err.message);
    } else {
        CHECK_MSG(!code, "'%.70s' was accepted, want error %s", text, code ? code : "");
        CHECK(m->type == SRV_MSG_LORA && m->n_lora == lo->n);
    }
    return ok;
}

TEST(lora_names)
{
    srv_loras lo;
    memset(&lo, 0, sizeof lo);
    CHECK(srv_loras_add(&lo, "/models/loras/style.safetensors", 0.8f));
    CHECK(srv_loras_add(&lo, "adapters/peft_adapter//", 1.0f)); /* a PEFT folder: its name */
    CHECK(srv_loras_add(&lo, "plain.safetensors", -4.0f));
    CHECK(lo.n == 3 && !strcmp(lo.name[0], "style.safetensors") && !strcmp(lo.name[1], "peft_adapter") &&
          !strcmp(lo.name[2], "plain.safetensors") && lo.scale[0] == 0.8f && lo.scale[2] == -4.0f);
    /* no name, bad scales: refused, nothing added */
    CHECK(!srv_loras_add(&lo, "//", 1) && !srv_loras_add(&lo, "/", 1) && !srv_loras_add(&lo, "", 1));
    CHECK(!srv_loras_add(&lo, "a", 4.01f) && !srv_loras_add(&lo, "a", -5) && !srv_loras_add(&lo, "a", NAN) &&
          !srv_loras_add(&lo, "a", INFINITY));
    CHECK(lo.n == 3);
    /* invalid UTF-8 and control characters become '?', long names are cut at a character */
    CHECK(srv_loras_add(&lo, "x/caf\xc3\xa9-\xff\x01.safetensors", 1));
    CHECK(!strcmp(lo.name[3], "caf\xc3\xa9-??.safetensors"));
    char longname[400];
    memset(longname, 0, sizeof longname);
    for (int i = 0; i < 100; i++)
        memcpy(longname + 3 * i, "\xe2\x98\x83", 3); /* 300 bytes of snowmen */
    CHECK(srv_loras_add(&lo, longname, 1));
    size_t nl = strlen(lo.name[4]);
    CHECK(nl <= SRV_LORA_NAME_MAX && nl == 126 && srv_utf8_valid((const uint8_t *)lo.name[4], nl));
    while (lo.n < SRV_MAX_LORAS)
        CHECK(srv_loras_add(&lo, "more.safetensors", 1));
    CHECK(!srv_loras_add(&lo, "one_too_many.safetensors", 1) && lo.n == SRV_MAX_LORAS);
    /* the JSON list */
    lo.n = 2;
    char *js = srv_json_print(srv_loras_json(&lo));
    CHECK(js && !strcmp(js, "[{\"name\":\"style.safetensors\",\"scale\":0.8},{\"name\":\"peft_adapter\",\"scale\":1}]"));
    free(js);
    lo.n = 0;
    js = srv_json_print(srv_loras_json(&lo));
    CHECK(js && !strcmp(js, "[]"));
    free(js);
}

TEST(lora_message)
{
    setup();
    srv_loras lo;
    memset(&lo, 0, sizeof lo);
    CHECK(srv_loras_add(&lo, "loras/style.safetensors", 0.8f) && srv_loras_add(&lo, "loras/lcm.safetensors", 1.0f));
    srv_msg m;
    /* by index: one scale per LoRA, in order */
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":[0.5,1.25]}", NULL, &m));
    CHECK(m.lora_scale[0] == 0.5f && m.lora_scale[1] == 1.25f);
    CHECK(parse_lora_msg(&lo, "{\"scales\":[-4,4],\"type\":\"lora\"}", NULL, &m)); /* the range ends */
    CHECK(m.lora_scale[0] == -4.0f && m.lora_scale[1] == 4.0f);
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":[0,0]}", NULL, &m) && m.lora_scale[1] == 0.0f);
    /* by name: the others keep the scales in lo */
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":0.3}}", NULL, &m));
    CHECK(m.lora_scale[0] == 0.8f && fabsf(m.lora_scale[1] - 0.3f) < 1e-7f);
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":2,\"style.safetensors\":-1}}",
                         NULL, &m));
    CHECK(m.lora_scale[0] == -1.0f && m.lora_scale[1] == 2.0f);
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":{}}", NULL, &m)); /* a no-op */
    CHECK(m.lora_scale[0] == 0.8f && m.lora_scale[1] == 1.0f);
    /* out of range */
    const char *range[] = {
        "{\"type\":\"lora\",\"scales\":[4.001,1]}",          "{\"type\":\"lora\",\"scales\":[1,-4.5]}",
        "{\"type\":\"lora\",\"scales\":[1e999,1]}",           "{\"type\":\"lora\",\"scales\":{\"style.safetensors\":9}}",
        "{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":-1e300}}",
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(range); i++)
        parse_lora_msg(&lo, range[i], "bad_value", &m);
    /* wrong count, shape or type */
    const struct {
        const char *text, *code;
    } bad[] = {
        {"{\"type\":\"lora\",\"scales\":[1]}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":[1,1,1]}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":[]}", "bad_value"},
        {"{\"type\":\"lora\"}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":1}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":\"1,1\"}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":null}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":[\"1\",1]}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":[1,true]}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":[[1],1]}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":{\"style.safetensors\":\"0.5\"}}", "bad_type"},
        {"{\"type\":\"lora\",\"scales\":[1,1],\"scale\":1}", "unknown_field"},
        {"{\"type\":\"lora\",\"prompt\":\"x\",\"scales\":[1,1]}", "unknown_field"},
        {"{\"type\":\"lora\",\"scales\":[1,1],\"scales\":[1,1]}", "duplicate_field"},
        {"{\"type\":\"lora\",\"type\":\"lora\",\"scales\":[1,1]}", "duplicate_field"},
        {"{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":1,\"lcm.safetensors\":2}}", "duplicate_field"},
        /* unknown names: exact base names only */
        {"{\"type\":\"lora\",\"scales\":{\"nope.safetensors\":1}}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":{\"lcm\":1}}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":{\"loras/lcm.safetensors\":1}}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":{\"LCM.safetensors\":1}}", "bad_value"},
        {"{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":1,\"x\":1}}", "bad_value"},
        {"{\"type\":\"LoRA\",\"scales\":[1,1]}", "unknown_type"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++)
        parse_lora_msg(&lo, bad[i].text, bad[i].code, &m);
    /* a server without LoRAs (and the plain parser) refuses "lora" */
    srv_loras none;
    memset(&none, 0, sizeof none);
    parse_lora_msg(&none, "{\"type\":\"lora\",\"scales\":[]}", "bad_value", &m);
    parse_lora_msg(NULL, "{\"type\":\"lora\",\"scales\":[1]}", "bad_value", &m);
    srv_config n;
    parse("{\"type\":\"lora\",\"scales\":[1,1]}", "bad_value", &n, NULL);
    /* the message names the LoRAs the server has */
    srv_error e;
    srv_config nx;
    const char *t = "{\"type\":\"lora\",\"scales\":{\"x\":1}}";
    CHECK(!srv_parse_message_ex(t, strlen(t), &L, &lo, &C0, &m, &nx, &e));
    CHECK(strstr(e.message, "style.safetensors") && strstr(e.message, "lcm.safetensors"));
    /* two LoRAs of the same name: by name is ambiguous, by index works */
    CHECK(srv_loras_add(&lo, "other/lcm.safetensors", 0.5f));
    parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":1}}", "bad_value", &m);
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":{\"style.safetensors\":1}}", NULL, &m));
    CHECK(m.lora_scale[0] == 1.0f && m.lora_scale[1] == 1.0f && m.lora_scale[2] == 0.5f);
    CHECK(parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":[0,0,1]}", NULL, &m) && m.lora_scale[2] == 1.0f);
    /* the message size limit applies as to any text message */
    L.max_text_bytes = 30;
    parse_lora_msg(&lo, "{\"type\":\"lora\",\"scales\":[0.25,0.25,0.25]}", "too_large", &m);
    /* mutations of good lora messages: never a crash, a rejection always says why */
    setup();
    lo.n = 2;
    const char *seeds[] = {"{\"type\":\"lora\",\"scales\":[0.5,1.25]}",
                           "{\"type\":\"lora\",\"scales\":{\"lcm.safetensors\":0.3,\"style.safetensors\":1}}"};
    unsigned long long rs = 777;
    char buf[256];
    int accepted = 0;
    static const char alphabet[] = "{}[]\",:0123456789.eE-+lcmstyle\\\x80\xff ";
    for (int it = 0; it < 5000; it++) {
        const char *s0 = seeds[it % 2];
        size_t len = strlen(s0);
        memcpy(buf, s0, len);
        size_t pos = (size_t)(test_rand(&rs) * (float)len) % len;
        buf[pos] = alphabet[(size_t)(test_rand(&rs) * (float)(sizeof alphabet - 1)) % (sizeof alphabet - 1)];
        srv_error er;
        memset(&er, 0, sizeof er);
        if (srv_parse_message_ex(buf, len, &L, &lo, &C0, &m, &nx, &er)) {
            accepted++;
            if (m.type == SRV_MSG_LORA)
                for (int i = 0; i < m.n_lora; i++)
                    CHECK(isfinite(m.lora_scale[i]) && fabsf(m.lora_scale[i]) <= 4.0f);
        } else {
            CHECK(er.code && er.message[0]);
        }
    }
    CHECK(accepted > 100);
}

/* Random mutations of good messages: never a crash (ASan/UBSan runs this too),
 * and a rejected message never changes the config. */
/* "controlnet": one net's live settings (protocol_cnet.c), all-or-nothing, by the library's rule. */
TEST(controlnet_message)
{
    setup();
    srv_config cur = C0, next;
    srv_msg m;
    srv_error err = {0};
#define CN(text) srv_parse_message(text, strlen(text), &L, &cur, &m, &next, &err)
    CHECK(!CN("{\"type\":\"controlnet\",\"scale\":0.5}") && !strcmp(err.code, "bad_value")); /* no nets */
    CHECK(strstr(err.message, "--control") != NULL);
    cur.n_cnet = 2;
    for (int k = 0; k < 2; k++) {
        cur.cnet[k] = (srv_cnet){1.0f, 0.0f, 1.0f, {0}};
        sd_preprocess_default_params(&cur.cnet[k].pp);
    }
    CHECK(CN("{\"type\":\"controlnet\",\"net\":1,\"scale\":0.25,\"preprocess\":\"canny\",\"canny_low\":50,"
             "\"canny_high\":150,\"guidance_start\":0.2,\"guidance_end\":0.8}"));
    CHECK(m.type == SRV_MSG_CONTROLNET && next.cnet[1].scale == 0.25f && next.cnet[1].pp.kind == SD_PREPROCESS_CANNY &&
          next.cnet[1].pp.canny_low == 50 && next.cnet[1].pp.canny_high == 150 &&
          fabsf(next.cnet[1].guidance_start - 0.2f) < 1e-7f && next.cnet[0].scale == 1.0f);
    CHECK(srv_config_diff(&cur, &next) == SRV_CHANGE_CONTROL);
    CHECK(CN("{\"type\":\"controlnet\",\"net\":0,\"preprocess\":\"scribble\",\"threshold\":30}"));
    CHECK(next.cnet[0].pp.kind == SD_PREPROCESS_SCRIBBLE && next.cnet[0].pp.threshold == 30 && next.cnet[0].scale == 1);
    char *js = srv_json_print(srv_config_json(&next));
    CHECK(js && strstr(js, "\"controlnets\":[{\"scale\":1,") && strstr(js, "\"preprocess\":\"scribble\""));
    free(js);
    const struct {
        const char *text, *code;
    } bad[] = {
        {"{\"type\":\"controlnet\",\"scale\":0.5}", "bad_value"}, /* two nets: "net" is needed */
        {"{\"type\":\"controlnet\",\"net\":2}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":-1}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0.5}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":\"0\"}", "bad_type"},
        {"{\"type\":\"controlnet\",\"net\":0,\"scale\":10.01}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"scale\":-0.1}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"scale\":1e999}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"guidance_start\":1}", "bad_value"}, /* start < end = 1 */
        {"{\"type\":\"controlnet\",\"net\":0,\"preprocess\":\"depth\"}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"preprocess\":3}", "bad_type"},
        {"{\"type\":\"controlnet\",\"net\":0,\"preprocess\":\"canny\",\"canny_low\":250}", "bad_value"}, /* > high */
        {"{\"type\":\"controlnet\",\"net\":0,\"canny_high\":2041}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"threshold\":256}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"threshold\":1.5}", "bad_value"},
        {"{\"type\":\"controlnet\",\"net\":0,\"scale\":1,\"scale\":2}", "duplicate_field"},
        {"{\"type\":\"controlnet\",\"net\":0,\"strength\":1}", "unknown_field"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++) {
        next = cur;
        next.cnet[0].scale = 7.0f; /* sentinel: a rejected message leaves next alone */
        bool ok = CN(bad[i].text);
        CHECK_MSG(!ok && err.code && !strcmp(err.code, bad[i].code) && next.cnet[0].scale == 7.0f,
                  "'%s': %s, code %s (want %s): %s", bad[i].text, ok ? "accepted" : "rejected", err.code, bad[i].code,
                  err.message);
    }
#undef CN
}

TEST(mutation_fuzz)
{
    setup();
    const char *seeds[] = {
        "{\"type\":\"config\",\"prompt\":\"a cat\",\"guidance_scale\":1.2,\"t_index_list\":[32,45],\"seed\":3}",
        "{\"type\":\"ping\",\"id\":1}",
        "{\"type\":\"config\",\"mode\":\"txt2img\",\"width\":256,\"height\":256,\"cfg_type\":\"none\"}",
    };
    unsigned long long rs = 12345;
    char buf[512];
    int accepted = 0, rejected = 0;
    static const char alphabet[] = "{}[]\",:0123456789.eE-+ntfalsrueu\\\x80\xff\xc3\xa9 ";
    for (int it = 0; it < 20000; it++) {
        const char *s = seeds[it % SD_ARRAY_LEN(seeds)];
        size_t n = strlen(s);
        memcpy(buf, s, n);
        int edits = 1 + (int)(test_rand(&rs) * 4);
        for (int k = 0; k < edits; k++) {
            size_t pos = (size_t)(test_rand(&rs) * (float)n) % (n ? n : 1);
            int op = (int)(test_rand(&rs) * 3);
            char ch = alphabet[(size_t)(test_rand(&rs) * (float)(sizeof alphabet - 1)) % (sizeof alphabet - 1)];
            if (op == 0) {
                buf[pos] = ch; /* replace */
            } else if (op == 1 && n + 1 < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, n - pos); /* insert */
                buf[pos] = ch;
                n++;
            } else if (n > 1) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1); /* delete */
                n--;
            }
        }
        srv_config next = C0;
        next.seed = 777;
        srv_msg m;
        srv_error e;
        if (srv_parse_message(buf, n, &L, &C0, &m, &next, &e)) {
            accepted++;
        } else {
            rejected++;
            CHECK(next.seed == 777 && e.code && e.message[0]);
        }
    }
    printf("  mutation fuzz: %d accepted, %d rejected\n", accepted, rejected);
    CHECK(accepted > 100 && rejected > 1000);
}

TEST(metrics_render)
{
    srv_metrics m;
    memset(&m, 0, sizeof m);
    m.frames_in = 10;
    m.frames_out = 7;
    m.frames_dropped = 3;
    srv_hist_observe(&m.stage[SRV_STAGE_INFER], 0.004);
    srv_hist_observe(&m.stage[SRV_STAGE_INFER], 0.004);
    srv_hist_observe(&m.stage[SRV_STAGE_INFER], 0.030);
    srv_hist_observe(&m.stage[SRV_STAGE_INFER], 99.0); /* above the last bucket */
    srv_hist_observe(&m.stage[SRV_STAGE_DECODE], -1);  /* clamped */
    CHECK(m.stage[SRV_STAGE_INFER].n == 4 && m.stage[SRV_STAGE_INFER].inf == 1);
    CHECK(fabs(srv_hist_quantile(&m.stage[SRV_STAGE_INFER], 0.5) - 0.005) < 1e-12);
    CHECK(fabs(srv_hist_quantile(&m.stage[SRV_STAGE_INFER], 0.75) - 0.05) < 1e-12);
    CHECK(isinf(srv_hist_quantile(&m.stage[SRV_STAGE_INFER], 1.0)));
    srv_gauges g = {.clients_active = 2, .clients_queued = 1, .input_queue = 1, .rss_bytes = 12345, .uptime_s = 3};
    char *s = srv_metrics_render(&m, &g);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK(strstr(s, "# TYPE streamdiff_frames_in_total counter\nstreamdiff_frames_in_total 10\n") != NULL);
    CHECK(strstr(s, "streamdiff_frames_out_total 7\n") != NULL);
    CHECK(strstr(s, "streamdiff_frames_dropped_total 3\n") != NULL);
    CHECK(strstr(s, "streamdiff_clients{state=\"active\"} 2\n") != NULL);
    CHECK(strstr(s, "streamdiff_clients{state=\"queued\"} 1\n") != NULL);
    CHECK(strstr(s, "streamdiff_queue_depth{queue=\"input\"} 1\n") != NULL);
    CHECK(strstr(s, "# TYPE streamdiff_stage_latency_seconds histogram\n") != NULL);
    CHECK(strstr(s, "streamdiff_stage_latency_seconds_bucket{stage=\"infer\",le=\"0.005\"} 2\n") != NULL);
    CHECK(strstr(s, "streamdiff_stage_latency_seconds_bucket{stage=\"infer\",le=\"0.05\"} 3\n") != NULL);
    CHECK(strstr(s, "streamdiff_stage_latency_seconds_bucket{stage=\"infer\",le=\"+Inf\"} 4\n") != NULL);
    CHECK(strstr(s, "streamdiff_stage_latency_seconds_count{stage=\"infer\"} 4\n") != NULL);
    CHECK(strstr(s, "streamdiff_stage_latency_seconds_count{stage=\"decode\"} 1\n") != NULL);
    /* every stage has its histogram; buckets never decrease */
    for (int st = 0; st < SRV_STAGE_COUNT; st++) {
        char key[96];
        snprintf(key, sizeof key, "streamdiff_stage_latency_seconds_sum{stage=\"%s\"}", srv_stage_name((srv_stage)st));
        CHECK_MSG(strstr(s, key) != NULL, "missing %s", key);
    }
    unsigned long long prev = 0;
    const char *p = s;
    while ((p = strstr(p, "stage=\"infer\",le=\"")) != NULL) {
        const char *v = strchr(p, '}') + 2;
        unsigned long long x = strtoull(v, NULL, 10);
        CHECK(x >= prev);
        prev = x;
        p = v;
    }
    free(s);
    CHECK(srv_rss_bytes() > 0);
}

/* Prompt and seed blending fields (src/server/blend.c): lists, modes, what they change, the JSON back, and bad
 * lists named (the weight rule is the library's sd_blend_check). */
TEST(blend_fields)
{
    setup();
    srv_config n;
    CHECK(parse("{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a fox\",\"weight\":0.7},{\"prompt\":\"a castle\","
                "\"weight\":0.3}],\"prompt_blend\":\"linear\",\"seeds\":[{\"seed\":1,\"weight\":1},{\"seed\":123456789012,"
                "\"weight\":2}],\"seed_blend\":\"slerp\",\"raw_weights\":true}", NULL, &n, NULL));
    CHECK(n.blend.n_prompts == 2 && !strcmp(n.blend.prompts[1], "a castle") && n.blend.prompt_weights[0] == 0.7f);
    CHECK(n.blend.n_seeds == 2 && n.blend.seeds[1] == 123456789012ULL && n.blend.seed_weights[1] == 2.0f);
    CHECK(n.blend.prompt_blend == SD_BLEND_LINEAR && n.blend.seed_blend == SD_BLEND_SLERP && n.blend.raw_weights);
    CHECK(C0.blend.n_prompts == 0 && C0.blend.prompt_blend == SD_BLEND_SLERP && C0.blend.seed_blend == SD_BLEND_LINEAR);
    unsigned d = srv_config_diff(&C0, &n);
    CHECK((d & SRV_CHANGE_PROMPT) && (d & SRV_CHANGE_SEEDS) && !(d & SRV_CHANGE_STREAM)); /* live, no new stream */
    srv_config w = n;
    w.blend.prompt_weights[1] = 0.5f; /* a weight alone: a prompt change, no seeds */
    CHECK(srv_config_diff(&n, &w) == SRV_CHANGE_PROMPT);
    w = n;
    w.blend.seed_weights[0] = 3.0f;
    CHECK(srv_config_diff(&n, &w) == SRV_CHANGE_SEEDS);
    /* the JSON back parses to the same config */
    cJSON *o = srv_config_json(&n);
    cJSON_AddStringToObject(o, "type", "config");
    char *txt = srv_json_print(o);
    srv_config b;
    srv_msg m;
    srv_error e;
    CHECK(txt && srv_parse_message(txt, strlen(txt), &L, &C0, &m, &b, &e));
    CHECK_MSG(srv_config_diff(&n, &b) == 0, "diff %u: %s", srv_config_diff(&n, &b), txt);
    CHECK(txt && strstr(txt, "\"prompts\":[{\"prompt\":\"a fox\",\"weight\":0.7}"));
    free(txt);
    CHECK(parse("{\"type\":\"config\",\"prompts\":[]}", NULL, &n, NULL) && n.blend.n_prompts == 0); /* off */
    const struct {
        const char *text, *code, *msg;
    } bad[] = {
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a\",\"weight\":0},{\"prompt\":\"b\",\"weight\":0}]}", "bad_value",
         "prompts: the weights sum to 0"},
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a\",\"weight\":-1}]}", "bad_value", "weight[0] = -1 is negative"},
        {"{\"type\":\"config\",\"seeds\":[{\"seed\":1,\"weight\":1e300}]}", "bad_value", "not a finite number"},
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a\",\"weight\":\"1\"}]}", "bad_type", "prompts[0] must be"},
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a\"}]}", "bad_type", "prompts[0] must be"},
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":\"a\",\"weight\":1,\"x\":1}]}", "bad_type", "prompts[0] must be"},
        {"{\"type\":\"config\",\"prompts\":[\"a\"]}", "bad_type", "prompts[0] must be"},
        {"{\"type\":\"config\",\"prompts\":{\"prompt\":\"a\",\"weight\":1}}", "bad_type", "must be an array"},
        {"{\"type\":\"config\",\"prompts\":[{\"prompt\":7,\"weight\":1}]}", "bad_type", "UTF-8 text"},
        {"{\"type\":\"config\",\"seeds\":[{\"seed\":-1,\"weight\":1}]}", "bad_value", "whole number"},
        {"{\"type\":\"config\",\"seeds\":[{\"seed\":1.5,\"weight\":1}]}", "bad_value", "whole number"},
        {"{\"type\":\"config\",\"seeds\":[{\"seed\":\"1\",\"weight\":1}]}", "bad_value", "whole number"},
        {"{\"type\":\"config\",\"seeds\":[{\"seed\":1,\"weight\":1},{\"seed\":2,\"weight\":1},{\"seed\":3,\"weight\":1},"
         "{\"seed\":4,\"weight\":1},{\"seed\":5,\"weight\":1},{\"seed\":6,\"weight\":1},{\"seed\":7,\"weight\":1},"
         "{\"seed\":8,\"weight\":1},{\"seed\":9,\"weight\":1}]}", "bad_value", "at most 8"},
        {"{\"type\":\"config\",\"prompt_blend\":\"cubic\"}", "bad_value", "\"linear\" or \"slerp\""},
        {"{\"type\":\"config\",\"seed_blend\":1}", "bad_type", "\"linear\" or \"slerp\""},
        {"{\"type\":\"config\",\"raw_weights\":1}", "bad_type", "true or false"},
        {"{\"type\":\"config\",\"seeds\":[],\"seeds\":[]}", "duplicate_field", "twice"},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++) {
        srv_error er = {0};
        srv_config x = C0;
        CHECK_MSG(!srv_parse_message(bad[i].text, strlen(bad[i].text), &L, &C0, &m, &x, &er), "accepted: %s", bad[i].text);
        CHECK_MSG(er.code && !strcmp(er.code, bad[i].code) && strstr(er.message, bad[i].msg), "'%s': %s %s",
                  bad[i].text, er.code ? er.code : "-", er.message);
    }
    char big[1200]; /* a blended prompt longer than its cap */
    int k = snprintf(big, sizeof big, "{\"type\":\"config\",\"prompts\":[{\"prompt\":\"");
    memset(big + k, 'a', 1001);
    snprintf(big + k + 1001, sizeof big - (size_t)k - 1001, "\",\"weight\":1}]}");
    L.max_text_bytes = 1 << 16;
    L.max_prompt_bytes = 4000;
    parse(big, "bad_value", &n, NULL);
}

int main(void)
{
    RUN(defaults_match_stream_defaults);
    RUN(full_config_applies);
    RUN(partial_update_keeps_the_rest);
    RUN(all_or_nothing);
    RUN(ping);
    RUN(malformed_json);
    RUN(wrong_types_and_shapes);
    RUN(value_ranges);
    RUN(configurable_limits);
    RUN(deep_nesting_and_large_input);
    RUN(utf8);
    RUN(config_diff);
    RUN(frame_checks);
    RUN(real_jpeg_frame);
    RUN(json_out_round_trip);
    RUN(lora_names);
    RUN(lora_message);
    RUN(controlnet_message);
    RUN(mutation_fuzz);
    RUN(metrics_render);
    RUN(blend_fields);
    return test_summary();
}
