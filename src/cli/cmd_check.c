/* `streamdiff check CASE_DIR...`: the conformance runner. */
#include "check/check.h"
#include "cli/cli.h"
#include "backend/cpu/cpu_kern.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: streamdiff check [--verbose] [--root DIR] [--threads N] [--backend cpu|cuda] [--pending FILE]\n"
            "                        CASE_DIR...\n\n"
            "Replays reference cases (folders with manifest.json, inputs.safetensors and\n"
            "expected.safetensors, as in shared/fixtures/cases) and compares every output\n"
            "with its tolerance. Prints max abs/rel error per output and PASS/FAIL per case;\n"
            "exits 1 if any case fails.\n\n"
            "  CASE_DIR      a case folder, or a folder of case folders (e.g. fixtures/cases)\n"
            "  --root DIR    folder that model_dir paths in manifests are relative to\n"
            "                (default: the parent of the cases/ folder)\n"
            "  --verbose     print every output, not only failures\n"
            "  --threads N   CPU threads (default: all cores)\n"
            "  --backend B   cpu (float32, the fixtures' tolerances) or cuda (fp16 activations: each\n"
            "                tolerance is widened to --fp16-rel x max(1, max |expected|)) (default: cpu)\n"
            "  --device N    CUDA device (default: 0)\n"
            "  --fp16-rel X  relative tolerance for fp16 backends (default: 1e-2)\n"
            "  --pending F   cases of features not built yet, one case folder name per line (then a\n"
            "                reason), e.g. tests/data/fixtures_pending.txt: such a case that fails is\n"
            "                reported PENDING and does not fail the run; one that passes fails the run\n"
            "                until it is removed from F (default: $SD_CHECK_PENDING, else none)\n"
            "  --precision P fp32 (default) or bf16 (CPU: bf16 GEMMs and attention; tolerances widened to\n"
            "                5e-2 of each output's largest magnitude), int8 (CPU, experimental: W8A8 linears and\n"
            "                convolutions, the rest bf16; tolerances widened to 1.5e-1) or auto\n\n"
            "examples: streamdiff check ../shared/fixtures/cases/unet_sd15\n"
            "          streamdiff check --backend cuda tests/data/cases\n");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cli_check(int argc, char **argv)
{
    bool verbose = false;
    const char *root = NULL;
    int threads = 0, n_dirs = 0, device = 0;
    bool cuda = false;
    sd_precision precision = SD_PRECISION_FP32;
    char **dirs = calloc((size_t)argc + 1, sizeof *dirs);
    if (!dirs)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(dirs);
            return 0;
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            verbose = true;
        } else if (!strcmp(argv[i], "--root") && i + 1 < argc) {
            root = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 0, 1024, &threads)) {
                fprintf(stderr, "streamdiff check: --threads must be 0..1024, not '%s'\n", argv[i]);
                free(dirs);
                return 2;
            }
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            const char *b = argv[++i];
            if (strcmp(b, "cpu") && strcmp(b, "cuda")) {
                fprintf(stderr, "streamdiff check: --backend must be cpu or cuda, not '%s'\n", b);
                free(dirs);
                return 2;
            }
            cuda = !strcmp(b, "cuda");
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            int v;
            if (!cli_parse_int(argv[++i], 0, 63, &v)) {
                fprintf(stderr, "streamdiff check: --device must be 0..63, not '%s'\n", argv[i]);
                free(dirs);
                return 2;
            }
            device = v;
            sd_check_set_cuda_device(device);
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (!sd_precision_from_name(argv[++i], &precision)) {
                fprintf(stderr, "streamdiff check: --precision must be fp32, bf16, int8 or auto, not '%s'\n", argv[i]);
                free(dirs);
                return 2;
            }
        } else if (!strcmp(argv[i], "--fp16-rel") && i + 1 < argc) {
            double v;
            if (!cli_parse_double(argv[++i], 0, 1, &v) || v == 0 || v == 1) {
                fprintf(stderr, "streamdiff check: --fp16-rel must be a number in (0, 1), not '%s'\n", argv[i]);
                free(dirs);
                return 2;
            }
            sd_check_set_f16_rel(v);
        } else if (!strcmp(argv[i], "--pending") && i + 1 < argc) {
            if (sd_check_set_pending_file(argv[++i]) != SD_OK) {
                fprintf(stderr, "streamdiff check: --pending: %s\n", sd_last_error());
                free(dirs);
                return 2;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "streamdiff check: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            free(dirs);
            return 2;
        } else {
            dirs[n_dirs++] = argv[i];
        }
    }
    if (!n_dirs) {
        fprintf(stderr, "streamdiff check: give at least one case folder\n\n");
        usage(stderr);
        free(dirs);
        return 2;
    }
    sd_backend *be;
    if ((cuda ? sd_backend_cuda_create(device, &be) : sd_backend_cpu_create(threads, &be)) != SD_OK) {
        fprintf(stderr, "streamdiff check: %s\n", sd_last_error());
        free(dirs);
        return 1;
    }
    if (!cuda && precision == SD_PRECISION_INT8) {
        sd_backend_cpu_set_int8(be, true);
        printf("precision int8 (%s kernels), tolerance: the int8 bound\n",
               sd_backend_cpu_int8_isa(be) ? sd_backend_cpu_int8_isa(be) : "no int8 kernels on this CPU: bf16");
    } else if (!cuda && (precision == SD_PRECISION_BF16 || (precision == SD_PRECISION_AUTO && sd_backend_cpu_auto_bf16(be)))) {
        sd_backend_cpu_set_bf16(be, true);
        printf("precision bf16 (%s kernels), tolerance: the bf16 bound\n",
               sd_backend_cpu_bf16_isa(be) ? sd_backend_cpu_bf16_isa(be) : "no bf16 kernels on this CPU: fp32");
    } else if (cuda && (precision == SD_PRECISION_BF16 || precision == SD_PRECISION_INT8)) {
        fprintf(stderr, "streamdiff check: --precision %s is for the CPU backend (CUDA computes in fp16)\n",
                sd_precision_name(precision));
        sd_backend_destroy(be);
        free(dirs);
        return 2;
    }
    int cases = 0, failed_cases = 0, pending_cases = 0, outputs = 0, failed_outputs = 0;
    for (int d = 0; d < n_dirs; d++) {
        char *man = sd_path_join(dirs[d], "manifest.json");
        bool single = man && sd_file_exists(man);
        free(man);
        char **list = NULL;
        size_t n = 0;
        if (single) {
            list = malloc(sizeof *list);
            if (list)
                list[n++] = sd_strdup(dirs[d]);
        } else {
            DIR *dp = opendir(dirs[d]);
            if (!dp) {
                fprintf(stderr, "streamdiff check: %s: not a case folder (no manifest.json) and not a folder of cases\n",
                        dirs[d]);
                failed_cases++;
                continue;
            }
            struct dirent *de;
            size_t cap = 0;
            while ((de = readdir(dp))) {
                if (de->d_name[0] == '.')
                    continue;
                char *sub = sd_path_join(dirs[d], de->d_name);
                char *m = sub ? sd_path_join(sub, "manifest.json") : NULL;
                if (m && sd_file_exists(m)) {
                    if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        list = realloc(list, cap * sizeof *list);
                    }
                    list[n++] = sub;
                    sub = NULL;
                }
                free(m);
                free(sub);
            }
            closedir(dp);
            if (n)
                qsort(list, n, sizeof *list, cmp_str);
        }
        for (size_t i = 0; i < n; i++) {
            int nc, nf;
            sd_status cs = sd_check_case(list[i], root, be, verbose, &nc, &nf);
            cases++;
            failed_cases += nf > 0 || cs != SD_OK;
            pending_cases += cs == SD_OK && nf == 0 && sd_check_is_pending(list[i], NULL);
            outputs += nc;
            failed_outputs += nf;
            free(list[i]);
        }
        free(list);
    }
    printf("\n%d cases: %d passed, %d failed", cases, cases - failed_cases - pending_cases, failed_cases);
    if (pending_cases)
        printf(", %d pending", pending_cases);
    printf(" (%d outputs compared, %d out of tolerance)\n", outputs, failed_outputs);
    sd_backend_destroy(be);
    free(dirs);
    return failed_cases ? 1 : 0;
}
