/* libFuzzer target: lora (see fuzz_entries.h; build with -DSD_FUZZ=ON, run with fuzz/run.sh). */
#include "fuzz_entries.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!sd_fuzz_lora_init())
        return 1;
    atexit(sd_fuzz_lora_done); /* removes the temporary LoRA file */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return sd_fuzz_lora(data, size); }
