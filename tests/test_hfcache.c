/* Hugging Face cache resolution (src/models/hfcache.h) on a fake cache tree in
 * a temporary folder: refs/main -> snapshots/<hash>, revision by branch and by
 * hash, env var precedence, clear not-found messages, hostile ids. */
#include "models/hfcache.h"
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

static void mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static void write_text(const char *path, const char *text) { sd_write_file(path, text, strlen(text)); }

#define H1 "0123456789abcdef0123456789abcdef01234567"
#define H2 "fedcba9876543210fedcba9876543210fedcba98"

/* <root>/models--org--name with refs/main -> H1, refs/fp16 -> H2, snapshots H1, H2 */
static void make_repo(const char *root, const char *org, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/models--%s--%s/refs", root, org, name);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/models--%s--%s/refs/main", root, org, name);
    write_text(p, H1); /* huggingface_hub writes no trailing newline */
    snprintf(p, sizeof p, "%s/models--%s--%s/refs/fp16", root, org, name);
    write_text(p, H2 "\n");
    snprintf(p, sizeof p, "%s/models--%s--%s/snapshots/" H1, root, org, name);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/models--%s--%s/snapshots/" H1 "/model_index.json", root, org, name);
    write_text(p, "{\"_class_name\": \"StableDiffusionPipeline\"}");
    snprintf(p, sizeof p, "%s/models--%s--%s/snapshots/" H2, root, org, name);
    mkdirs(p);
}

static void clear_env(void)
{
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
}

static bool resolves_to(const char *id, const char *rev, const char *want)
{
    char *dir = NULL;
    sd_status s = sd_hf_resolve(id, rev, &dir);
    bool ok = s == SD_OK && dir && !strcmp(dir, want);
    if (!ok)
        fprintf(stderr, "  resolve(%s, %s) = %s '%s' (%s), want '%s'\n", id, rev ? rev : "NULL", sd_status_name(s),
                dir ? dir : "", sd_last_error(), want);
    free(dir);
    return ok;
}

TEST(resolve_main_branch_and_hash)
{
    char root[512], want[1024];
    snprintf(root, sizeof root, "%s/hubA", g_tmp);
    make_repo(root, "stabilityai", "sd-turbo");
    clear_env();
    setenv("HF_HUB_CACHE", root, 1);
    snprintf(want, sizeof want, "%s/models--stabilityai--sd-turbo/snapshots/" H1, root);
    CHECK(resolves_to("stabilityai/sd-turbo", NULL, want));
    CHECK(resolves_to("stabilityai/sd-turbo", "main", want));
    CHECK(resolves_to("stabilityai/sd-turbo", "", want));
    snprintf(want, sizeof want, "%s/models--stabilityai--sd-turbo/snapshots/" H2, root);
    CHECK(resolves_to("stabilityai/sd-turbo", "fp16", want)); /* ref file with a trailing newline */
    CHECK(resolves_to("stabilityai/sd-turbo", H2, want));     /* commit hash, no ref needed */
    char *dir = NULL;
    CHECK_STATUS(sd_hf_resolve("stabilityai/sd-turbo", NULL, &dir), SD_OK);
    if (dir) {
        char mi[1200];
        snprintf(mi, sizeof mi, "%s/model_index.json", dir);
        CHECK(sd_file_exists(mi));
    }
    free(dir);
}

/* the SDXL family's ids (models, TAESDXL, LCM-LoRA-SDXL) resolve like SD1's (loading them: tests/cli_sdxl.sh) */
TEST(sdxl_family_ids)
{
    char root[512], want[1024];
    snprintf(root, sizeof root, "%s/hubXL", g_tmp);
    static const char *const ids[][2] = {{"stabilityai", "sdxl-turbo"},
                                         {"stabilityai", "stable-diffusion-xl-base-1.0"},
                                         {"segmind", "SSD-1B"},
                                         {"madebyollin", "taesdxl"},
                                         {"latent-consistency", "lcm-lora-sdxl"}};
    for (size_t i = 0; i < SD_ARRAY_LEN(ids); i++)
        make_repo(root, ids[i][0], ids[i][1]);
    clear_env();
    setenv("HF_HUB_CACHE", root, 1);
    for (size_t i = 0; i < SD_ARRAY_LEN(ids); i++) {
        char id[128];
        snprintf(id, sizeof id, "%s/%s", ids[i][0], ids[i][1]);
        CHECK(sd_looks_like_hf_id(id));
        snprintf(want, sizeof want, "%s/models--%s--%s/snapshots/" H1, root, ids[i][0], ids[i][1]);
        CHECK(resolves_to(id, NULL, want));
    }
}

TEST(env_precedence)
{
    char a[512], b[512], c[512], d[512], e[512], want[1024];
    snprintf(a, sizeof a, "%s/pA", g_tmp);     /* HF_HUB_CACHE */
    snprintf(b, sizeof b, "%s/pB", g_tmp);     /* HF_HOME -> pB/hub */
    snprintf(c, sizeof c, "%s/pC", g_tmp);     /* XDG_CACHE_HOME -> pC/huggingface/hub */
    snprintf(d, sizeof d, "%s/pD", g_tmp);     /* HOME -> pD/.cache/huggingface/hub */
    snprintf(e, sizeof e, "%s/pE", g_tmp);     /* HUGGINGFACE_HUB_CACHE (legacy) */
    char rb[600], rc[600], rd[600];
    snprintf(rb, sizeof rb, "%s/hub", b);
    snprintf(rc, sizeof rc, "%s/huggingface/hub", c);
    snprintf(rd, sizeof rd, "%s/.cache/huggingface/hub", d);
    make_repo(a, "o", "m");
    make_repo(rb, "o", "m");
    make_repo(rc, "o", "m");
    make_repo(rd, "o", "m");
    make_repo(e, "o", "m");
    clear_env();
    setenv("HOME", d, 1);
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, rd);
    CHECK(resolves_to("o/m", NULL, want));
    setenv("XDG_CACHE_HOME", c, 1);
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, rc);
    CHECK(resolves_to("o/m", NULL, want));
    setenv("HF_HOME", b, 1);
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, rb);
    CHECK(resolves_to("o/m", NULL, want));
    setenv("HUGGINGFACE_HUB_CACHE", e, 1);
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, e);
    CHECK(resolves_to("o/m", NULL, want));
    setenv("HF_HUB_CACHE", a, 1);
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, a);
    CHECK(resolves_to("o/m", NULL, want));
    char *root = sd_hf_cache_dir();
    CHECK(root && !strcmp(root, a));
    free(root);
    setenv("HF_HUB_CACHE", "", 1); /* empty counts as unset */
    snprintf(want, sizeof want, "%s/models--o--m/snapshots/" H1, e);
    CHECK(resolves_to("o/m", NULL, want));
    clear_env();
    root = sd_hf_cache_dir();
    CHECK(root == NULL);
    free(root);
    char *dir = NULL;
    CHECK_STATUS(sd_hf_resolve("o/m", NULL, &dir), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("HF_HUB_CACHE");
    CHECK(dir == NULL);
}

TEST(missing_model_or_revision)
{
    char root[512];
    snprintf(root, sizeof root, "%s/hubA", g_tmp);
    make_repo(root, "stabilityai", "sd-turbo");
    clear_env();
    setenv("HF_HUB_CACHE", root, 1);
    char *dir = NULL;
    CHECK_STATUS(sd_hf_resolve("stabilityai/sdxl-turbo", NULL, &dir), SD_ERR_NOT_FOUND);
    CHECK(dir == NULL);
    CHECK_ERR_CONTAINS("models--stabilityai--sdxl-turbo"); /* where it looked */
    CHECK_ERR_CONTAINS(root);
    CHECK_ERR_CONTAINS("$HF_HUB_CACHE");
    CHECK_ERR_CONTAINS("huggingface-cli download stabilityai/sdxl-turbo");
    CHECK_ERR_CONTAINS("folder");
    /* unknown branch: lists what the cache has */
    CHECK_STATUS(sd_hf_resolve("stabilityai/sd-turbo", "v2", &dir), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("refs/v2");
    CHECK_ERR_CONTAINS("main");
    CHECK_ERR_CONTAINS(H1);
    /* a ref pointing at a snapshot that is not there (interrupted download) */
    char p[1024];
    snprintf(p, sizeof p, "%s/models--stabilityai--sd-turbo/refs/broken", root);
    write_text(p, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK_STATUS(sd_hf_resolve("stabilityai/sd-turbo", "broken", &dir), SD_ERR_NOT_FOUND);
    CHECK_ERR_CONTAINS("incomplete");
    /* a ref file with garbage */
    snprintf(p, sizeof p, "%s/models--stabilityai--sd-turbo/refs/bad", root);
    write_text(p, "../../etc");
    CHECK_STATUS(sd_hf_resolve("stabilityai/sd-turbo", "bad", &dir), SD_ERR_FORMAT);
    CHECK(dir == NULL);
}

TEST(hostile_ids_rejected)
{
    clear_env();
    char root[512];
    snprintf(root, sizeof root, "%s/hubA", g_tmp);
    setenv("HF_HUB_CACHE", root, 1);
    static const char *const bad[] = {
        "",           "sd-turbo",      "/etc/passwd", "../x",     "a/../b",  "a/b/c",        "..",
        "a/..",       "./a",           "a/.",         "a//b",     "a/b/",    "/a/b",          "a b/c",
        "a/b\n",      "a--b/c",        "a/b--c",      "-a/b",     "a/b-",    ".hidden/model", "a/b.",
        "a\\b/c",     "a/b;rm -rf",    "a/%2e%2e",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/b",
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(bad); i++) {
        char *dir = NULL;
        sd_status s = sd_hf_resolve(bad[i], NULL, &dir);
        CHECK_MSG(s == SD_ERR_INVALID_ARGUMENT, "id '%s' gave %s", bad[i], sd_status_name(s));
        CHECK(dir == NULL);
        CHECK_MSG(!sd_looks_like_hf_id(bad[i]), "'%s' looks like an id", bad[i]);
    }
    char *dir = NULL;
    CHECK_STATUS(sd_hf_resolve(NULL, NULL, &dir), SD_ERR_INVALID_ARGUMENT);
    static const char *const bad_rev[] = {"../main", "/main", "a/../b", "main/", "a//b", "a b", "x\n"};
    for (size_t i = 0; i < SD_ARRAY_LEN(bad_rev); i++) {
        sd_status s = sd_hf_resolve("o/m", bad_rev[i], &dir);
        CHECK_MSG(s == SD_ERR_INVALID_ARGUMENT, "revision '%s' gave %s", bad_rev[i], sd_status_name(s));
    }
}

TEST(looks_like_id)
{
    CHECK(sd_looks_like_hf_id("stabilityai/sd-turbo"));
    CHECK(sd_looks_like_hf_id("runwayml/stable-diffusion-v1-5"));
    CHECK(sd_looks_like_hf_id("SimianLuo/LCM_Dreamshaper_v7"));
    CHECK(sd_looks_like_hf_id("latent-consistency/lcm-lora-sdv1-5"));
    CHECK(sd_looks_like_hf_id("madebyollin/taesd"));
    CHECK(sd_looks_like_hf_id("a.b/c.d"));
    CHECK(!sd_looks_like_hf_id(NULL));
    CHECK(!sd_looks_like_hf_id("model.safetensors"));
    CHECK(!sd_looks_like_hf_id("/abs/path"));
    /* an existing relative path is a path, not an id */
    char cwd[1024];
    if (getcwd(cwd, sizeof cwd) && chdir(g_tmp) == 0) {
        mkdirs("org/model");
        CHECK(!sd_looks_like_hf_id("org/model"));
        write_text("org/file.safetensors", "x");
        CHECK(!sd_looks_like_hf_id("org/file.safetensors"));
        CHECK(sd_looks_like_hf_id("org/other"));
        CHECK(chdir(cwd) == 0);
    }
}

static void rm_rf(const char *path) /* only inside our own mkdtemp folder */
{
    char cmd[600];
    if (strncmp(path, "/tmp/sd_test_hf_", 16) == 0 && !strstr(path, "..")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
        if (system(cmd) != 0)
            fprintf(stderr, "  could not remove %s\n", path);
    }
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/sd_test_hf_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    RUN(resolve_main_branch_and_hash);
    RUN(sdxl_family_ids);
    RUN(env_precedence);
    RUN(missing_model_or_revision);
    RUN(hostile_ids_rejected);
    RUN(looks_like_id);
    rm_rf(g_tmp);
    return test_summary();
}
