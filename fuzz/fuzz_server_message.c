/* libFuzzer target: server_message (see fuzz_entries.h; build with -DSD_FUZZ=ON, run with fuzz/run.sh). */
#include "fuzz_entries.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return sd_fuzz_server_message(data, size); }
