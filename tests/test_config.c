/* JSON config getters (src/io/config.h): defaults, wrong types, non-finite
 * strings, integer lists with broadcast, nested objects, invalid files. */
#include "io/config.h"
#include "test.h"

#include <unistd.h>

static sd_config parse(const char *json, const char *label)
{
    sd_config c;
    sd_status s = sd_config_parse(json, strlen(json), label, &c);
    if (s != SD_OK)
        fprintf(stderr, "  parse failed: %s\n", sd_last_error());
    return c;
}

static const char *k_json = "{"
                            "\"i\": 42, \"neg\": -7, \"big\": 9007199254740992, \"f\": 1.5, \"fi\": 3,"
                            "\"pinf\": \"inf\", \"ninf\": \"-inf\", \"qnan\": \"nan\","
                            "\"pinf2\": \"Infinity\", \"ninf2\": \"-Infinity\", \"qnan2\": \"NaN\","
                            "\"t\": true, \"fa\": false, \"s\": \"hello\", \"empty\": \"\", \"nul\": null,"
                            "\"list\": [320, 640, 1280], \"scalar\": 8, \"flist\": [1, 2.5], \"mixed\": [1, \"x\"],"
                            "\"elist\": [], \"strs\": [\"a\", \"b\"], \"badstrs\": [\"a\", 1],"
                            "\"sub\": {\"x\": 3, \"s\": 5, \"deep\": {\"y\": true}}, \"arr\": [[1]], \"obj\": {}"
                            "}";

TEST(defaults_when_absent_or_null)
{
    sd_config c = parse(k_json, "cfg.json");
    int64_t i;
    double f;
    bool b;
    const char *s;
    CHECK_STATUS(sd_config_int(&c, "absent", 11, &i), SD_OK);
    CHECK(i == 11);
    CHECK_STATUS(sd_config_int(&c, "nul", -3, &i), SD_OK);
    CHECK(i == -3);
    CHECK_STATUS(sd_config_float(&c, "absent", 0.25, &f), SD_OK);
    CHECK(f == 0.25);
    CHECK_STATUS(sd_config_float(&c, "nul", -1.5, &f), SD_OK);
    CHECK(f == -1.5);
    CHECK_STATUS(sd_config_bool(&c, "absent", true, &b), SD_OK);
    CHECK(b == true);
    CHECK_STATUS(sd_config_bool(&c, "nul", false, &b), SD_OK);
    CHECK(b == false);
    CHECK_STATUS(sd_config_str(&c, "absent", "dflt", &s), SD_OK);
    CHECK(s && !strcmp(s, "dflt"));
    CHECK_STATUS(sd_config_str(&c, "nul", NULL, &s), SD_OK);
    CHECK(s == NULL);
    CHECK(!sd_config_has(&c, "absent"));
    CHECK(!sd_config_has(&c, "nul"));
    CHECK(sd_config_has(&c, "i"));
    CHECK(sd_config_has(&c, "fa")); /* false is present */
    /* keys are case-sensitive */
    CHECK_STATUS(sd_config_int(&c, "I", 5, &i), SD_OK);
    CHECK(i == 5);
    sd_config_free(&c);
}

TEST(present_values)
{
    sd_config c = parse(k_json, "cfg.json");
    int64_t i;
    double f;
    bool b;
    const char *s;
    CHECK_STATUS(sd_config_int(&c, "i", 0, &i), SD_OK);
    CHECK(i == 42);
    CHECK_STATUS(sd_config_int(&c, "neg", 0, &i), SD_OK);
    CHECK(i == -7);
    CHECK_STATUS(sd_config_int(&c, "big", 0, &i), SD_OK);
    CHECK(i == 9007199254740992LL);
    CHECK_STATUS(sd_config_float(&c, "f", 0, &f), SD_OK);
    CHECK(f == 1.5);
    CHECK_STATUS(sd_config_float(&c, "fi", 0, &f), SD_OK); /* an integer is a valid float */
    CHECK(f == 3.0);
    CHECK_STATUS(sd_config_bool(&c, "t", false, &b), SD_OK);
    CHECK(b);
    CHECK_STATUS(sd_config_bool(&c, "fa", true, &b), SD_OK);
    CHECK(!b);
    CHECK_STATUS(sd_config_str(&c, "s", NULL, &s), SD_OK);
    CHECK(s && !strcmp(s, "hello"));
    CHECK_STATUS(sd_config_str(&c, "empty", "x", &s), SD_OK);
    CHECK(s && !strcmp(s, ""));
    sd_config_free(&c);
}

TEST(non_finite_strings)
{
    sd_config c = parse(k_json, "cfg.json");
    double f;
    CHECK_STATUS(sd_config_float(&c, "pinf", 0, &f), SD_OK);
    CHECK(isinf(f) && f > 0);
    CHECK_STATUS(sd_config_float(&c, "ninf", 0, &f), SD_OK);
    CHECK(isinf(f) && f < 0);
    CHECK_STATUS(sd_config_float(&c, "qnan", 0, &f), SD_OK);
    CHECK(isnan(f));
    CHECK_STATUS(sd_config_float(&c, "pinf2", 0, &f), SD_OK);
    CHECK(isinf(f) && f > 0);
    CHECK_STATUS(sd_config_float(&c, "ninf2", 0, &f), SD_OK);
    CHECK(isinf(f) && f < 0);
    CHECK_STATUS(sd_config_float(&c, "qnan2", 0, &f), SD_OK);
    CHECK(isnan(f));
    /* other strings are not numbers; "inf" is not an integer */
    f = 123;
    CHECK_STATUS(sd_config_float(&c, "s", 0, &f), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("cfg.json");
    CHECK_ERR_CONTAINS("'s'");
    int64_t i;
    CHECK_STATUS(sd_config_int(&c, "pinf", 0, &i), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'pinf'");
    sd_config_free(&c);
}

TEST(wrong_types_name_file_and_key)
{
    sd_config c = parse(k_json, "models/x/config.json");
    int64_t i;
    double f;
    bool b;
    const char *s;
    struct {
        sd_status got;
        const char *key;
    } cases[] = {
        {sd_config_int(&c, "f", 0, &i), "'f'"},         /* 1.5 is not an integer */
        {sd_config_int(&c, "s", 0, &i), "'s'"},
        {sd_config_int(&c, "t", 0, &i), "'t'"},
        {sd_config_int(&c, "list", 0, &i), "'list'"},
        {sd_config_float(&c, "t", 0, &f), "'t'"},
        {sd_config_float(&c, "sub", 0, &f), "'sub'"},
        {sd_config_float(&c, "list", 0, &f), "'list'"},
        {sd_config_bool(&c, "i", false, &b), "'i'"},     /* 1/0 are not booleans */
        {sd_config_bool(&c, "s", false, &b), "'s'"},
        {sd_config_str(&c, "i", NULL, &s), "'i'"},
        {sd_config_str(&c, "strs", NULL, &s), "'strs'"},
        {sd_config_str(&c, "t", NULL, &s), "'t'"},
    };
    for (size_t k = 0; k < SD_ARRAY_LEN(cases); k++) {
        CHECK_MSG(cases[k].got == SD_ERR_FORMAT, "case %zu (%s) gave %s", k, cases[k].key,
                  sd_status_name(cases[k].got));
    }
    /* the message of each failing call names file and key (checked right after the call) */
    CHECK_STATUS(sd_config_int(&c, "f", 0, &i), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("models/x/config.json");
    CHECK_ERR_CONTAINS("'f'");
    CHECK_ERR_CONTAINS("integer");
    CHECK_STATUS(sd_config_bool(&c, "i", false, &b), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("models/x/config.json");
    CHECK_ERR_CONTAINS("'i'");
    CHECK_STATUS(sd_config_str(&c, "i", NULL, &s), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'i'");
    CHECK_ERR_CONTAINS("string");
    /* on error the out value is the default (never garbage) */
    i = 99;
    sd_config_int(&c, "s", 17, &i);
    CHECK(i == 17);
    sd_config_free(&c);
}

TEST(int_lists)
{
    sd_config c = parse(k_json, "cfg.json");
    int64_t v[8];
    int n = -1;
    CHECK_STATUS(sd_config_int_list(&c, "list", v, 8, 0, &n), SD_OK);
    CHECK(n == 3 && v[0] == 320 && v[1] == 640 && v[2] == 1280);
    /* a list ignores broadcast_n */
    CHECK_STATUS(sd_config_int_list(&c, "list", v, 8, 5, &n), SD_OK);
    CHECK(n == 3);
    /* scalar broadcast */
    CHECK_STATUS(sd_config_int_list(&c, "scalar", v, 8, 4, &n), SD_OK);
    CHECK(n == 4 && v[0] == 8 && v[1] == 8 && v[2] == 8 && v[3] == 8);
    /* a scalar without broadcast is an error */
    CHECK_STATUS(sd_config_int_list(&c, "scalar", v, 8, 0, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'scalar'");
    CHECK(n == 0);
    /* broadcast beyond max */
    CHECK_STATUS(sd_config_int_list(&c, "scalar", v, 3, 4, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'scalar'");
    /* a non-integer scalar cannot be broadcast */
    CHECK_STATUS(sd_config_int_list(&c, "f", v, 8, 4, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'f'");
    /* too many entries */
    CHECK_STATUS(sd_config_int_list(&c, "list", v, 2, 0, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("more than 2");
    /* bad entries */
    CHECK_STATUS(sd_config_int_list(&c, "flist", v, 8, 0, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("entry 1");
    CHECK_STATUS(sd_config_int_list(&c, "mixed", v, 8, 0, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("entry 1");
    CHECK_STATUS(sd_config_int_list(&c, "arr", v, 8, 0, &n), SD_ERR_FORMAT);
    CHECK_STATUS(sd_config_int_list(&c, "s", v, 8, 2, &n), SD_ERR_FORMAT);
    CHECK_STATUS(sd_config_int_list(&c, "obj", v, 8, 2, &n), SD_ERR_FORMAT);
    /* empty list */
    CHECK_STATUS(sd_config_int_list(&c, "elist", v, 8, 3, &n), SD_OK);
    CHECK(n == 0);
    /* missing or null */
    CHECK_STATUS(sd_config_int_list(&c, "absent", v, 8, 3, &n), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("'absent'");
    CHECK_ERR_CONTAINS("cfg.json");
    CHECK_STATUS(sd_config_int_list(&c, "nul", v, 8, 3, &n), SD_ERR_NOT_FOUND);
    sd_config_free(&c);
}

TEST(str_lists)
{
    sd_config c = parse(k_json, "cfg.json");
    const char *v[4];
    int n = -1;
    CHECK_STATUS(sd_config_str_list(&c, "strs", v, 4, &n), SD_OK);
    CHECK(n == 2 && !strcmp(v[0], "a") && !strcmp(v[1], "b"));
    CHECK_STATUS(sd_config_str_list(&c, "strs", v, 1, &n), SD_ERR_FORMAT);
    CHECK_STATUS(sd_config_str_list(&c, "badstrs", v, 4, &n), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("entry 1");
    CHECK_STATUS(sd_config_str_list(&c, "s", v, 4, &n), SD_ERR_FORMAT);
    CHECK_STATUS(sd_config_str_list(&c, "absent", v, 4, &n), SD_ERR_NOT_FOUND);
    sd_config_free(&c);
}

TEST(nested_objects)
{
    sd_config c = parse(k_json, "cfg.json"), sub, deep;
    CHECK_STATUS(sd_config_sub(&c, "sub", &sub), SD_OK);
    int64_t i;
    bool b;
    CHECK_STATUS(sd_config_int(&sub, "x", 0, &i), SD_OK);
    CHECK(i == 3);
    CHECK_STATUS(sd_config_int(&sub, "i", 9, &i), SD_OK); /* parent keys are not visible */
    CHECK(i == 9);
    const char *s;
    CHECK_STATUS(sd_config_str(&sub, "s", NULL, &s), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("cfg.json"); /* views keep the file label */
    CHECK_STATUS(sd_config_sub(&sub, "deep", &deep), SD_OK);
    CHECK_STATUS(sd_config_bool(&deep, "y", false, &b), SD_OK);
    CHECK(b);
    CHECK_STATUS(sd_config_sub(&c, "absent", &sub), SD_ERR_NOT_FOUND);
    CHECK_STATUS(sd_config_sub(&c, "nul", &sub), SD_ERR_NOT_FOUND);
    CHECK_STATUS(sd_config_sub(&c, "list", &sub), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("'list'");
    /* freeing a view does not free the parent */
    CHECK_STATUS(sd_config_sub(&c, "sub", &sub), SD_OK);
    sd_config_free(&sub);
    CHECK_STATUS(sd_config_int(&c, "i", 0, &i), SD_OK);
    CHECK(i == 42);
    sd_config_free(&c);
}

TEST(invalid_json)
{
    sd_config c;
    const char *bad[] = {"{", "{\"a\": }", "{\"a\": 1,}", "", "nul", "{\"a\": 1} trailing", "{'a': 1}"};
    for (size_t k = 0; k < SD_ARRAY_LEN(bad); k++) {
        c.root = (cJSON *)1;
        CHECK_MSG(sd_config_parse(bad[k], strlen(bad[k]), "bad.json", &c) == SD_ERR_FORMAT, "case %zu: %s", k,
                  bad[k]);
        CHECK_ERR_CONTAINS("bad.json");
        CHECK(c.root == NULL);
    }
    CHECK_STATUS(sd_config_parse("{\"a\":", 5, "bad.json", &c), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS("invalid JSON");
    /* valid JSON but not an object */
    const char *notobj[] = {"[1,2]", "3", "\"s\"", "null", "true"};
    for (size_t k = 0; k < SD_ARRAY_LEN(notobj); k++) {
        CHECK_STATUS(sd_config_parse(notobj[k], strlen(notobj[k]), "arr.json", &c), SD_ERR_FORMAT);
        CHECK_ERR_CONTAINS("arr.json");
        CHECK_ERR_CONTAINS("object");
    }
    /* the length is honoured: text beyond it is ignored */
    const char *t = "{\"a\": 1}garbage";
    CHECK_STATUS(sd_config_parse(t, 8, "len.json", &c), SD_OK);
    int64_t i;
    CHECK_STATUS(sd_config_int(&c, "a", 0, &i), SD_OK);
    CHECK(i == 1);
    sd_config_free(&c);
}

TEST(load_files)
{
    char dir[] = "/tmp/sd-test-config-XXXXXX";
    if (!mkdtemp(dir))
        FAIL("cannot create a temporary directory");
    char path[256], bad[256], missing[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(bad, sizeof bad, "%s/broken.json", dir);
    snprintf(missing, sizeof missing, "%s/missing.json", dir);
    const char *good = "{\"sample_size\": 64, \"norm_eps\": 1e-5, \"act_fn\": \"silu\"}";
    CHECK_STATUS(sd_write_file(path, good, strlen(good)), SD_OK);
    CHECK_STATUS(sd_write_file(bad, "{\"a\": [1, 2}", 12), SD_OK);
    sd_config c;
    CHECK_STATUS(sd_config_load(path, &c), SD_OK);
    int64_t i;
    double f;
    CHECK_STATUS(sd_config_int(&c, "sample_size", 0, &i), SD_OK);
    CHECK(i == 64);
    CHECK_STATUS(sd_config_float(&c, "norm_eps", 0, &f), SD_OK);
    CHECK(f == 1e-5);
    CHECK_STATUS(sd_config_int(&c, "act_fn", 0, &i), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS(path);
    CHECK_ERR_CONTAINS("'act_fn'");
    sd_config_free(&c);

    CHECK_STATUS(sd_config_load(bad, &c), SD_ERR_FORMAT);
    CHECK_ERR_CONTAINS(bad);
    CHECK_ERR_CONTAINS("invalid JSON");
    CHECK(c.root == NULL);
    sd_config_free(&c); /* safe after a failed load */

    CHECK_STATUS(sd_config_load(missing, &c), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS(missing);
    CHECK(c.root == NULL);
    CHECK_STATUS(sd_config_load(dir, &c), SD_ERR_IO); /* a directory */
    unlink(path);
    unlink(bad);
    rmdir(dir);
}

TEST(fixture_unet_config)
{
    const char *fx = getenv("SD_FIXTURES");
    if (!fx || !*fx)
        SKIP("SD_FIXTURES is not set");
    char path[600];
    snprintf(path, sizeof path, "%s/models/tiny-sd15/unet/config.json", fx);
    if (!sd_file_exists(path))
        SKIP("%s not present", path);
    sd_config c;
    CHECK_STATUS(sd_config_load(path, &c), SD_OK);
    int64_t ch[8], i;
    int n;
    double eps;
    bool flip;
    const char *cls, *act;
    CHECK_STATUS(sd_config_int_list(&c, "block_out_channels", ch, 8, 0, &n), SD_OK);
    CHECK(n == 2 && ch[0] == 32 && ch[1] == 64);
    CHECK_STATUS(sd_config_int_list(&c, "attention_head_dim", ch, 8, n, &n), SD_OK); /* scalar 8, broadcast */
    CHECK(n == 2 && ch[0] == 8 && ch[1] == 8);
    CHECK_STATUS(sd_config_float(&c, "norm_eps", 0, &eps), SD_OK);
    CHECK(eps == 1e-5);
    CHECK_STATUS(sd_config_bool(&c, "flip_sin_to_cos", false, &flip), SD_OK);
    CHECK(flip);
    CHECK_STATUS(sd_config_str(&c, "_class_name", NULL, &cls), SD_OK);
    CHECK(cls && !strcmp(cls, "UNet2DConditionModel"));
    CHECK_STATUS(sd_config_str(&c, "addition_embed_type", "none", &act), SD_OK); /* null -> default */
    CHECK(act && !strcmp(act, "none"));
    CHECK_STATUS(sd_config_int(&c, "num_attention_heads", -1, &i), SD_OK); /* null -> default */
    CHECK(i == -1);
    sd_config_free(&c);
}

int main(void)
{
    RUN(defaults_when_absent_or_null);
    RUN(present_values);
    RUN(non_finite_strings);
    RUN(wrong_types_name_file_and_key);
    RUN(int_lists);
    RUN(str_lists);
    RUN(nested_objects);
    RUN(invalid_json);
    RUN(load_files);
    RUN(fixture_unet_config);
    return test_summary();
}
