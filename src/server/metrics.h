/* Counters and per-stage latency histograms of `streamdiff serve`, rendered
 * in the Prometheus text exposition format (GET /metrics). Plain data: the
 * server guards it with its own lock. */
#ifndef SD_SERVER_METRICS_H
#define SD_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum srv_stage {
    SRV_STAGE_QUEUE,  /* frame received -> the engine takes it */
    SRV_STAGE_DECODE, /* JPEG/PNG decode */
    SRV_STAGE_INFER,  /* one stream step (encode, UNet, decode) */
    SRV_STAGE_ENCODE, /* JPEG encode of the output */
    SRV_STAGE_SEND,   /* output ready -> handed to the socket */
    SRV_STAGE_TOTAL,  /* frame received (or txt2img start) -> output handed to the socket */
    SRV_STAGE_COUNT
} srv_stage;

#define SRV_HIST_BUCKETS 14

typedef struct srv_hist {
    uint64_t counts[SRV_HIST_BUCKETS]; /* cumulative on render; stored per bucket */
    uint64_t inf;                      /* above the last bucket */
    double sum;                        /* seconds */
    uint64_t n;
} srv_hist;

typedef struct srv_metrics {
    uint64_t frames_in;       /* binary frames accepted from clients */
    uint64_t frames_out;      /* output frames sent */
    uint64_t frames_skipped;  /* similarity filter skips */
    uint64_t frames_dropped;  /* replaced in a full queue (newest frame wins) */
    uint64_t bad_messages;    /* rejected messages (error sent) */
    uint64_t engine_errors;
    uint64_t connections;     /* WebSocket connections accepted */
    uint64_t rejected;        /* connections refused (token, origin, too many) */
    uint64_t streams_created;
    uint64_t engine_calls;    /* stream steps run: one per frame alone, one per batched call */
    uint64_t engine_frames;   /* frames those calls ran (engine_frames / engine_calls = mean batch) */
    srv_hist stage[SRV_STAGE_COUNT];
} srv_metrics;

typedef struct srv_gauges {
    int clients_active, clients_queued;
    int input_queue, output_queue, text_queue; /* filled slots over all clients */
    int streams;
    size_t rss_bytes;
    double uptime_s;
} srv_gauges;

extern const double srv_hist_bounds[SRV_HIST_BUCKETS]; /* seconds */
const char *srv_stage_name(srv_stage s);
void srv_hist_observe(srv_hist *h, double seconds);
/* Quantile estimate from the buckets (upper bound of the bucket holding q). */
double srv_hist_quantile(const srv_hist *h, double q);
/* Prometheus text (malloc'd), NULL when out of memory. */
char *srv_metrics_render(const srv_metrics *m, const srv_gauges *g);
/* Resident set size of this process from /proc/self/statm (0 if unknown). */
size_t srv_rss_bytes(void);

#endif
