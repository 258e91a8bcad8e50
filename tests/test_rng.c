/* sd_rng against torch's CPU generator (tests/data/rng/cases.safetensors, made by
 * tools/gen_rng_cases.py): exact float32 equality. Plus properties of SD_RNG_FAST. */
#include "test.h"

#include "io/safetensors.h"
#include "sched/rng.h"

static uint64_t fnv1a64(const float *v, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n * sizeof(float); i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int n_compared;

/* exact comparison; returns true when equal */
static bool same(const sd_safetensors *st, const char *name, const float *got, size_t n)
{
    const sd_st_tensor *t = sd_st_find(st, name);
    if (!t || t->dtype != SD_F32 || t->numel != n) {
        printf("  %s: missing or wrong size\n", name);
        return false;
    }
    n_compared++;
    for (size_t i = 0; i < n; i++) {
        float e;
        memcpy(&e, (const char *)t->data + i * 4, 4);
        if (memcmp(&e, &got[i], 4) != 0) {
            printf("  %s[%zu]: got %.9g, torch %.9g\n", name, i, got[i], e);
            return false;
        }
    }
    return true;
}

static int parse_list(const char *s, uint64_t *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        out[n++] = strtoull(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s != ',')
            break;
    }
    return n;
}

TEST(torch_compat)
{
    const char *data = getenv("SD_TEST_DATA");
    if (!data)
        FAIL("SD_TEST_DATA is not set (ctest sets it to tests/data)");
    char path[1024];
    snprintf(path, sizeof path, "%s/rng/cases.safetensors", data);
    sd_safetensors *st = NULL;
    CHECK_STATUS(sd_safetensors_open(path, &st), SD_OK);
    if (!st)
        return;
    uint64_t seeds[16], sizes[16], seq[16], big[1];
    int ns = parse_list(sd_st_meta(st, "seeds"), seeds, 16);
    int nz = parse_list(sd_st_meta(st, "sizes"), sizes, 16);
    int nq = parse_list(sd_st_meta(st, "seq_sizes"), seq, 16);
    CHECK(parse_list(sd_st_meta(st, "big"), big, 1) == 1);
    CHECK(ns > 0 && nz > 0 && nq > 0);
    const sd_rng_kind kinds[] = {SD_RNG_TORCH, SD_RNG_TORCH_SCALAR};
    float *buf = malloc((size_t)(big[0] > 4096 ? big[0] : 4096) * sizeof(float));
    for (size_t kk = 0; kk < SD_ARRAY_LEN(kinds) && buf; kk++) {
        const char *kn = sd_rng_kind_name(kinds[kk]);
        int ok = 0, bad = 0;
        for (int si = 0; si < ns; si++) {
            char name[128];
            sd_rng r;
            for (int zi = 0; zi < nz; zi++) {
                sd_rng_init(&r, kinds[kk], seeds[si]);
                sd_rng_randn(&r, buf, sizes[zi]);
                snprintf(name, sizeof name, "%s.s%llu.n%llu", kn, (unsigned long long)seeds[si],
                         (unsigned long long)sizes[zi]);
                same(st, name, buf, sizes[zi]) ? ok++ : bad++;
            }
            /* big draw: head, tail, hash of everything */
            sd_rng_init(&r, kinds[kk], seeds[si]);
            sd_rng_randn(&r, buf, big[0]);
            snprintf(name, sizeof name, "%s.s%llu.big.head", kn, (unsigned long long)seeds[si]);
            same(st, name, buf, 64) ? ok++ : bad++;
            snprintf(name, sizeof name, "%s.s%llu.big.tail", kn, (unsigned long long)seeds[si]);
            same(st, name, buf + big[0] - 64, 64) ? ok++ : bad++;
            snprintf(name, sizeof name, "%s.s%llu.big.fnv1a64", kn, (unsigned long long)seeds[si]);
            const char *want = sd_st_meta(st, name);
            char got[32];
            snprintf(got, sizeof got, "%016llx", (unsigned long long)fnv1a64(buf, big[0]));
            if (want && strcmp(want, got) == 0) {
                ok++;
            } else {
                printf("  %s: hash %s, torch %s\n", name, got, want ? want : "(missing)");
                bad++;
            }
            /* successive draws from one generator */
            sd_rng_init(&r, kinds[kk], seeds[si]);
            size_t off = 0;
            for (int q = 0; q < nq; q++) {
                sd_rng_randn(&r, buf + off, seq[q]);
                off += seq[q];
            }
            snprintf(name, sizeof name, "%s.s%llu.seq", kn, (unsigned long long)seeds[si]);
            same(st, name, buf, off) ? ok++ : bad++;
            /* torch.rand */
            sd_rng_init(&r, kinds[kk], seeds[si]);
            sd_rng_uniform(&r, buf, 5);
            sd_rng_uniform(&r, buf + 5, 17);
            snprintf(name, sizeof name, "%s.s%llu.rand", kn, (unsigned long long)seeds[si]);
            same(st, name, buf, 22) ? ok++ : bad++;
        }
        printf("  %s (torch capability %s): %d exact, %d differ\n", kn,
               sd_st_meta(st, kk == 0 ? "torch.capability" : "torch_scalar.capability"), ok, bad);
        CHECK(bad == 0 && ok > 0);
    }
    free(buf);
    sd_safetensors_close(st);
}

TEST(seed_is_low_32_bits)
{
    sd_rng a, b;
    float x[20], y[20];
    sd_rng_init(&a, SD_RNG_TORCH, 5);
    sd_rng_init(&b, SD_RNG_TORCH, (1ull << 32) + 5);
    sd_rng_randn(&a, x, 20);
    sd_rng_randn(&b, y, 20);
    CHECK(memcmp(x, y, sizeof x) == 0);
    /* reseeding restarts the stream and clears the cached normal */
    sd_rng_init(&a, SD_RNG_TORCH, 7);
    sd_rng_randn(&a, x, 3);
    sd_rng_init(&a, SD_RNG_TORCH, 7);
    sd_rng_randn(&a, y, 3);
    CHECK(memcmp(x, y, 3 * sizeof(float)) == 0);
    sd_rng_randn(&a, x, 0); /* no-op */
}

TEST(fast_generator)
{
    enum { N = 1 << 16 };
    float *v = malloc(N * sizeof(float)), *w = malloc(N * sizeof(float));
    if (!v || !w) {
        free(v);
        free(w);
        CHECK(0);
        return;
    }
    sd_rng r;
    sd_rng_init(&r, SD_RNG_FAST, 1234);
    sd_rng_randn(&r, v, N);
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++)
        mean += v[i];
    mean /= N;
    for (int i = 0; i < N; i++)
        var += (v[i] - mean) * (v[i] - mean);
    var /= N;
    printf("  fast randn: mean %.4f, var %.4f over %d samples\n", mean, var, N);
    CHECK(fabs(mean) < 0.02 && fabs(var - 1.0) < 0.03);
    for (int i = 0; i < N; i++)
        CHECK(isfinite(v[i]));
    /* deterministic; position-based: two draws of N/2 (multiple of 4) equal one draw of N */
    sd_rng_init(&r, SD_RNG_FAST, 1234);
    sd_rng_randn(&r, w, N / 2);
    sd_rng_randn(&r, w + N / 2, N / 2);
    CHECK(memcmp(v, w, N * sizeof(float)) == 0);
    /* another seed differs */
    sd_rng_init(&r, SD_RNG_FAST, 1235);
    sd_rng_randn(&r, w, 16);
    CHECK(memcmp(v, w, 16 * sizeof(float)) != 0);
    /* uniforms in [0, 1) */
    sd_rng_init(&r, SD_RNG_FAST, 9);
    sd_rng_uniform(&r, w, 4096);
    double um = 0;
    for (int i = 0; i < 4096; i++) {
        CHECK(w[i] >= 0.0f && w[i] < 1.0f);
        um += w[i];
    }
    CHECK(fabs(um / 4096 - 0.5) < 0.02);
    free(v);
    free(w);
}

TEST(names)
{
    sd_rng_kind k;
    CHECK_STATUS(sd_rng_kind_from_name("fast", &k), SD_OK);
    CHECK(k == SD_RNG_FAST);
    CHECK_STATUS(sd_rng_kind_from_name("torch_scalar", &k), SD_OK);
    CHECK(k == SD_RNG_TORCH_SCALAR);
    CHECK_STATUS(sd_rng_kind_from_name("mt", &k), SD_ERR_INVALID_ARGUMENT);
    CHECK_ERR_CONTAINS("torch");
    CHECK(sd_rng_torch_kind_for_capability("AVX512") == SD_RNG_TORCH);
    CHECK(sd_rng_torch_kind_for_capability("DEFAULT") == SD_RNG_TORCH_SCALAR);
}

int main(void)
{
    RUN(torch_compat);
    RUN(seed_is_low_32_bits);
    RUN(fast_generator);
    RUN(names);
    return test_summary();
}
