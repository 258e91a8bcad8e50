/* libFuzzer target: osc — one UDP datagram of `stream --osc-port` / `serve --osc-port`, decoded as the
 * listener does (src/cli/osc.c: liblo parses each message, bundles are walked by our code). Built only
 * when liblo is found (fuzz/CMakeLists.txt). */
#include "cli/osc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cli_osc_update u;
    memset(&u, 0, sizeof u);
    int rejected = 0;
    char why[256];
    int n = cli_osc_decode(data, size, 3, &u, &rejected, why, sizeof why);
    if (n < -1 || rejected < 0 || (n >= 0 && (u.n_t_index < 0 || u.n_t_index > CLI_OSC_MAX_T)))
        abort();
    if ((u.set & CLI_OSC_PROMPT) && !memchr(u.prompt, 0, sizeof u.prompt))
        abort();
    return 0;
}
