/* Prometheus text rendering of the server's counters and histograms. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const double srv_hist_bounds[SRV_HIST_BUCKETS] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                  0.1,    0.2,   0.5,   1.0,   2.0,  5.0,  10.0};

static const char *const k_stage_names[SRV_STAGE_COUNT] = {"queue", "decode", "infer", "encode", "send", "total"};

const char *srv_stage_name(srv_stage s) { return (unsigned)s < SRV_STAGE_COUNT ? k_stage_names[s] : "?"; }

void srv_hist_observe(srv_hist *h, double seconds)
{
    if (!(seconds >= 0)) /* NaN or negative (clock oddities) */
        seconds = 0;
    int b = 0;
    while (b < SRV_HIST_BUCKETS && seconds > srv_hist_bounds[b])
        b++;
    if (b < SRV_HIST_BUCKETS)
        h->counts[b]++;
    else
        h->inf++;
    h->sum += seconds;
    h->n++;
}

double srv_hist_quantile(const srv_hist *h, double q)
{
    if (!h->n)
        return 0;
    double want = q * (double)h->n;
    uint64_t acc = 0;
    for (int b = 0; b < SRV_HIST_BUCKETS; b++) {
        acc += h->counts[b];
        if ((double)acc >= want)
            return srv_hist_bounds[b];
    }
    return INFINITY;
}

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void counter(buf *b, const char *name, const char *help, uint64_t v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

char *srv_metrics_render(const srv_metrics *m, const srv_gauges *g)
{
    buf b = {malloc(8192), 0, 8192, 0};
    if (!b.p)
        return NULL;
    b.p[0] = 0;
    counter(&b, "streamdiff_frames_in_total", "Input frames received from clients.", m->frames_in);
    counter(&b, "streamdiff_frames_out_total", "Output frames sent to clients.", m->frames_out);
    counter(&b, "streamdiff_frames_skipped_total", "Frames skipped by the similarity filter.", m->frames_skipped);
    counter(&b, "streamdiff_frames_dropped_total",
            "Frames replaced by a newer one in a full queue (newest frame wins).", m->frames_dropped);
    counter(&b, "streamdiff_bad_messages_total", "Client messages rejected with an error message.", m->bad_messages);
    counter(&b, "streamdiff_engine_errors_total", "Engine failures reported to clients.", m->engine_errors);
    counter(&b, "streamdiff_connections_total", "WebSocket connections accepted.", m->connections);
    counter(&b, "streamdiff_connections_rejected_total", "WebSocket connections refused (token, origin, limit).",
            m->rejected);
    counter(&b, "streamdiff_streams_created_total", "Streams created (new clients and parameter changes).",
            m->streams_created);
    counter(&b, "streamdiff_engine_calls_total",
            "Engine calls: a frame run alone, or one batched UNet call over several sessions' frames.", m->engine_calls);
    counter(&b, "streamdiff_engine_frames_total",
            "Frames run by those calls (engine_frames / engine_calls = mean frames per batch).", m->engine_frames);
    bprintf(&b, "# HELP streamdiff_clients Connected WebSocket clients.\n# TYPE streamdiff_clients gauge\n"
                "streamdiff_clients{state=\"active\"} %d\nstreamdiff_clients{state=\"queued\"} %d\n",
            g->clients_active, g->clients_queued);
    bprintf(&b, "# HELP streamdiff_queue_depth Filled queue slots over all clients.\n"
                "# TYPE streamdiff_queue_depth gauge\n"
                "streamdiff_queue_depth{queue=\"input\"} %d\nstreamdiff_queue_depth{queue=\"output\"} %d\n"
                "streamdiff_queue_depth{queue=\"text\"} %d\n",
            g->input_queue, g->output_queue, g->text_queue);
    bprintf(&b, "# HELP streamdiff_streams Live streams (one per active client).\n# TYPE streamdiff_streams gauge\n"
                "streamdiff_streams %d\n",
            g->streams);
    bprintf(&b, "# HELP streamdiff_process_resident_memory_bytes Resident set size.\n"
                "# TYPE streamdiff_process_resident_memory_bytes gauge\nstreamdiff_process_resident_memory_bytes %zu\n",
            g->rss_bytes);
    bprintf(&b, "# HELP streamdiff_uptime_seconds Seconds since the server started.\n"
                "# TYPE streamdiff_uptime_seconds gauge\nstreamdiff_uptime_seconds %.3f\n",
            g->uptime_s);
    bprintf(&b, "# HELP streamdiff_stage_latency_seconds Per-stage frame latency.\n"
                "# TYPE streamdiff_stage_latency_seconds histogram\n");
    for (int s = 0; s < SRV_STAGE_COUNT; s++) {
        const srv_hist *h = &m->stage[s];
        uint64_t acc = 0;
        for (int k = 0; k < SRV_HIST_BUCKETS; k++) {
            acc += h->counts[k];
            bprintf(&b, "streamdiff_stage_latency_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n", k_stage_names[s],
                    srv_hist_bounds[k], (unsigned long long)acc);
        }
        bprintf(&b, "streamdiff_stage_latency_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n", k_stage_names[s],
                (unsigned long long)h->n);
        bprintf(&b, "streamdiff_stage_latency_seconds_sum{stage=\"%s\"} %.6f\n", k_stage_names[s], h->sum);
        bprintf(&b, "streamdiff_stage_latency_seconds_count{stage=\"%s\"} %llu\n", k_stage_names[s],
                (unsigned long long)h->n);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

size_t srv_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, res = 0;
    int n = fscanf(f, "%lu %lu", &size, &res);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (size_t)res * (size_t)page : 0;
}
