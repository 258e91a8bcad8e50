/* libFuzzer target: tokenizer (see fuzz_entries.h; build with -DSD_FUZZ=ON, run with fuzz/run.sh). */
#include "fuzz_entries.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return sd_fuzz_tokenizer_init() ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return sd_fuzz_tokenizer(data, size); }
