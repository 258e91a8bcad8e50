/* Replays the fuzzers' inputs through the same entry points (fuzz/fuzz_entries.h)
 * under the normal build (and so under ASan+UBSan in `make test-asan`), every
 * file of
 *   tests/data/regress/<target>/  inputs that once crashed, leaked or hung a fuzz
 *                                 target (each a fixed bug; the name says which)
 *   fuzz/corpus/<target>/         the seed corpora (small valid and broken inputs)
 * A file passes when the entry point returns; a crash or sanitizer report fails
 * the test. */
#include "test.h"

#include "../fuzz/fuzz_entries.h"

#include <dirent.h>

static const sd_fuzz_target targets[] = {
    {"safetensors", sd_fuzz_safetensors}, {"config", sd_fuzz_config}, {"tokenizer", sd_fuzz_tokenizer},
    {"image", sd_fuzz_image},             {"checkpoint", sd_fuzz_checkpoint},   {"lora", sd_fuzz_lora},
    {"server_message", sd_fuzz_server_message}, {"server_frame", sd_fuzz_server_frame},
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs every regular file of dir/<target> through fn; returns the count (-1: no folder). */
static int replay_dir(const char *dir, const sd_fuzz_target *t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, t->name);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    char *names[1024];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL && n < (int)SD_ARRAY_LEN(names);)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int done = 0;
    for (int i = 0; i < n; i++) {
        char file[8192];
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        char *data = NULL;
        size_t len = 0;
        if (sd_read_file(file, (size_t)64 << 20, &data, &len) == SD_OK) {
            t->fn((const uint8_t *)data, len);
            free(data);
            done++;
        } else {
            CHECK_MSG(0, "cannot read %s: %s", file, sd_last_error());
        }
        free(names[i]);
    }
    return done;
}

static const char *test_data(void)
{
    const char *td = getenv("SD_TEST_DATA");
    return td && *td ? td : "tests/data";
}

TEST(regress_inputs)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/regress", test_data());
    if (!sd_fuzz_tokenizer_init() || !sd_fuzz_lora_init())
        FAIL("committed test data does not load (%s)", sd_last_error());
    int total = 0;
    for (size_t i = 0; i < SD_ARRAY_LEN(targets); i++) {
        int n = replay_dir(dir, &targets[i]);
        printf("  regress/%-12s %d file(s)\n", targets[i].name, n < 0 ? 0 : n);
        total += n < 0 ? 0 : n;
    }
    CHECK(total > 0); /* the folder ships with inputs */
}

TEST(seed_corpora)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/../../fuzz/corpus", test_data());
    if (!sd_dir_exists(dir))
        FAIL("no fuzz/corpus next to the test data (%s): it is committed", dir);
    if (!sd_fuzz_tokenizer_init() || !sd_fuzz_lora_init())
        FAIL("committed test data does not load (%s)", sd_last_error());
    for (size_t i = 0; i < SD_ARRAY_LEN(targets); i++) {
        int n = replay_dir(dir, &targets[i]);
        printf("  corpus/%-12s %d file(s)\n", targets[i].name, n < 0 ? 0 : n);
        CHECK_MSG(n > 0, "fuzz/corpus/%s is empty or missing", targets[i].name);
    }
}

int main(void)
{
    RUN(regress_inputs);
    RUN(seed_corpora);
    sd_fuzz_tokenizer_done();
    sd_fuzz_checkpoint_done();
    sd_fuzz_lora_done();
    return test_summary();
}
