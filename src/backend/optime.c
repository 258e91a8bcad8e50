/* Per-op-kind timers (optime.h). */
#include "backend/optime.h"

#include "core/core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool sd_optime_on;

static atomic_llong g_ns[SD_OPT_N], g_cpu_ns[SD_OPT_N], g_calls[SD_OPT_N], g_kmadds[SD_OPT_N]; /* kmadds: 1e3 */
static atomic_int g_init;

static const char *const k_names[SD_OPT_N] = {
    [SD_OPT_LINEAR] = "linear", [SD_OPT_CONV3] = "conv 3x3", [SD_OPT_CONV1] = "conv 1x1",
    [SD_OPT_CONVX] = "conv other", [SD_OPT_MATMUL] = "matmul", [SD_OPT_ATT_SELF] = "attention self",
    [SD_OPT_ATT_CROSS] = "attention cross", [SD_OPT_GN] = "group norm", [SD_OPT_GN_SILU] = "group norm+silu",
    [SD_OPT_LN] = "layer norm", [SD_OPT_SOFTMAX] = "softmax", [SD_OPT_GEGLU] = "geglu", [SD_OPT_UNARY] = "unary",
    [SD_OPT_ADD] = "add", [SD_OPT_SUB] = "sub", [SD_OPT_MUL] = "mul", [SD_OPT_AFFINE] = "affine/clamp",
    [SD_OPT_UPSAMPLE] = "upsample2x", [SD_OPT_CONCAT] = "concat", [SD_OPT_SLICE] = "slice",
    [SD_OPT_PERMUTE] = "permute", [SD_OPT_MOVE] = "move/copy", [SD_OPT_CAST] = "cast",
    [SD_OPT_IMAGE] = "rgb8<->chw", [SD_OPT_OTHER] = "other",
};

static void print_at_exit(void) { sd_optime_print(stderr, 1); }

void sd_optime_init(void)
{
    if (atomic_exchange(&g_init, 1))
        return;
    const char *e = getenv("SD_OP_TIMES");
    if (e && *e && strcmp(e, "0")) {
        sd_optime_on = true;
        atexit(print_at_exit);
    }
}

static long long cpu_now_ns(void) /* CPU time of the whole process (all threads) */
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

sd_optime_t0 sd_optime_begin(void) { return (sd_optime_t0){sd_time_now(), cpu_now_ns()}; }

void sd_optime_add(sd_opt_kind k, sd_optime_t0 t0, double madds)
{
    atomic_fetch_add_explicit(&g_ns[k], (long long)((sd_time_now() - t0.wall) * 1e9), memory_order_relaxed);
    atomic_fetch_add_explicit(&g_cpu_ns[k], cpu_now_ns() - t0.cpu_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_calls[k], 1, memory_order_relaxed);
    if (madds > 0)
        atomic_fetch_add_explicit(&g_kmadds[k], (long long)(madds * 1e-3), memory_order_relaxed);
}

void sd_optime_reset(void)
{
    for (int k = 0; k < SD_OPT_N; k++) {
        atomic_store(&g_ns[k], 0);
        atomic_store(&g_cpu_ns[k], 0);
        atomic_store(&g_calls[k], 0);
        atomic_store(&g_kmadds[k], 0);
    }
}

void sd_optime_print(FILE *f, int runs)
{
    if (!sd_optime_on)
        return;
    long long ns[SD_OPT_N], total = 0, calls_all = 0;
    int order[SD_OPT_N];
    for (int k = 0; k < SD_OPT_N; k++) {
        ns[k] = atomic_load(&g_ns[k]);
        total += ns[k];
        calls_all += atomic_load(&g_calls[k]);
        order[k] = k;
    }
    if (!calls_all) /* nothing timed since the last reset (e.g. printed and reset by a benchmark) */
        return;
    for (int i = 1; i < SD_OPT_N; i++) /* by time, largest first */
        for (int j = i; j > 0 && ns[order[j]] > ns[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (runs < 1)
        runs = 1;
    long long cpu_total = 0;
    fprintf(f, "op times (SD_OP_TIMES, wall clock of the backend calls%s):\n", runs > 1 ? "" : ", all runs");
    fprintf(f, "  %-16s %8s %10s %10s %6s %9s %12s\n", "kind", "calls", "ms", runs > 1 ? "ms/run" : "", "%", "GFLOP/s",
            runs > 1 ? "cpu ms/run" : "cpu ms");
    for (int i = 0; i < SD_OPT_N; i++) {
        int k = order[i];
        long long calls = atomic_load(&g_calls[k]), kmadds = atomic_load(&g_kmadds[k]);
        if (!calls)
            continue;
        char gf[32] = "";
        if (kmadds && ns[k])
            snprintf(gf, sizeof gf, "%.0f", 2.0 * (double)kmadds * 1e3 / (double)ns[k]);
        char per[32] = "";
        if (runs > 1)
            snprintf(per, sizeof per, "%.2f", (double)ns[k] * 1e-6 / runs);
        fprintf(f, "  %-16s %8lld %10.2f %10s %6.1f %9s %12.2f\n", k_names[k], calls, (double)ns[k] * 1e-6, per,
                total ? 100.0 * (double)ns[k] / (double)total : 0.0, gf,
                (double)atomic_load(&g_cpu_ns[k]) * 1e-6 / runs);
        cpu_total += atomic_load(&g_cpu_ns[k]);
    }
    char per[32] = "";
    if (runs > 1)
        snprintf(per, sizeof per, "%.2f", (double)total * 1e-6 / runs);
    fprintf(f, "  %-16s %8s %10.2f %10s %6s %9s %12.2f\n", "total", "", (double)total * 1e-6, per, "", "",
            (double)cpu_total * 1e-6 / runs);
}
