/* OSC control (Open Sound Control over UDP) for `streamdiff stream` and `serve`:
 * TouchDesigner, Max, Pure Data, VJ tools and controllers steer a running stream.
 *
 * A listener thread receives datagrams on an opt-in port, bound to loopback unless
 * another address is given, decodes OSC messages and bundles (liblo parses each
 * message; bundles are walked here with bounds checks) and merges what they set into
 * one pending update. The frame loop takes that update between frames
 * (cli_osc_take: no allocation, no waiting) and applies it through the public API.
 * Malformed packets, unknown addresses and wrong argument types are counted and
 * reported (rate-limited) on stderr; the stream keeps running.
 *
 * Addresses (numbers may be sent as int32, int64, float32 or float64):
 *   /streamdiff/prompt            s        the prompt (re-encoded once, on the next frame)
 *   /streamdiff/negative_prompt   s        the negative prompt
 *   /streamdiff/guidance          f        guidance scale (0..100)
 *   /streamdiff/delta             f        RCFG delta (0..10)
 *   /streamdiff/seed              i        the stream's noise seed (>= 0): sd_stream_set_seed
 *   /streamdiff/t_index           i [i..]  the denoising steps, as many as at the start: sd_stream_set_t_index
 *   /streamdiff/similarity        f [i]    similarity filter threshold (0 = off) [, max skipped frames]
 *   /streamdiff/lora/N/scale      f        strength of the N-th --lora (from 0), -10..10
 *   /streamdiff/controlnet/N/scale       f    conditioning scale of the N-th --control (from 0), 0..10
 *   /streamdiff/controlnet/N/guidance    f f  its guidance window start, end (0 <= start < end <= 1)
 *   /streamdiff/controlnet/N/preprocess  s    how frames become its control image: none, canny, softedge, ...
 *   /streamdiff/controlnet/N/canny       i i  canny thresholds low, high (0..2040)
 *   /streamdiff/controlnet/N/threshold   i    scribble threshold (0..255)
 * (ControlNet values are checked as a whole by sd_stream_set_control when applied.)
 */
#ifndef SD_CLI_OSC_H
#define SD_CLI_OSC_H

#include "streamdiff.h"

#include <stdbool.h>
#include <stdint.h>

#define CLI_OSC_MAX_TEXT 1024
#define CLI_OSC_MAX_T 16
#define CLI_OSC_MAX_LORAS 16
#define CLI_OSC_MAX_CONTROLS 8

enum {
    CLI_OSC_PROMPT = 1 << 0,
    CLI_OSC_NEGATIVE = 1 << 1,
    CLI_OSC_GUIDANCE = 1 << 2,
    CLI_OSC_DELTA = 1 << 3,
    CLI_OSC_SEED = 1 << 4,
    CLI_OSC_T_INDEX = 1 << 5,
    CLI_OSC_SIMILARITY = 1 << 6,
    CLI_OSC_LORA = 1 << 7,
    CLI_OSC_CONTROLNET = 1 << 8,
};
/* What an update sets of one ControlNet (cli_osc_update.cnet[N].set). */
enum { CLI_OSC_CN_SCALE = 1, CLI_OSC_CN_WINDOW = 2, CLI_OSC_CN_PREPROCESS = 4, CLI_OSC_CN_CANNY = 8, CLI_OSC_CN_THRESHOLD = 16 };
typedef struct cli_osc_cnet {
    unsigned set; /* CLI_OSC_CN_* */
    float scale, start, end;
    sd_preprocess kind;
    int canny_low, canny_high, threshold;
} cli_osc_cnet;

/* What arrived since the last take; `set` says which fields hold values. */
typedef struct cli_osc_update {
    unsigned set;
    char prompt[CLI_OSC_MAX_TEXT], negative[CLI_OSC_MAX_TEXT];
    float guidance, delta;
    int64_t seed;
    int t_index[CLI_OSC_MAX_T], n_t_index;
    float similarity;
    int max_skip; /* -1: unchanged */
    unsigned lora_set; /* bit i: lora_scale[i] holds a new value */
    float lora_scale[CLI_OSC_MAX_LORAS];
    cli_osc_cnet cnet[CLI_OSC_MAX_CONTROLS]; /* with CLI_OSC_CONTROLNET */
} cli_osc_update;

typedef struct cli_osc cli_osc;

/* Listens on `bind_addr` (NULL: 127.0.0.1; "0.0.0.0" or "::" for every interface) UDP `port` (1..65535).
 * n_loras: how many LoRAs /streamdiff/lora/N/scale may address. Errors name the address and port. */
sd_status cli_osc_start(const char *bind_addr, int port, int n_loras, cli_osc **out);
/* Moves the pending update into *u (false when nothing arrived). Thread-safe, never blocks for long. */
bool cli_osc_take(cli_osc *o, cli_osc_update *u);
/* Messages applied / rejected so far. */
void cli_osc_counts(const cli_osc *o, int64_t *accepted, int64_t *rejected);
/* Stops the listener and frees it (NULL is fine). */
void cli_osc_stop(cli_osc *o);

/* What a running stream is set to now, for applying partial updates: the loop owns it. */
typedef struct cli_live {
    sd_stream *s;
    sd_model *m;
    char prompt[CLI_OSC_MAX_TEXT], negative[CLI_OSC_MAX_TEXT];
    float guidance, delta, similarity;
    int max_skip;
    sd_lora_spec *loras; /* the --lora list (scales changed in place) */
    int n_loras;
    bool lora_allow_unmatched;
} cli_live;
/* Applies an update to the stream through the public API, printing one line per change (or why a change
 * was refused: the stream keeps its previous value). `frame` names the first frame it affects. */
void cli_osc_apply(const cli_osc_update *u, cli_live *l, int64_t frame);
/* A ControlNet update onto settings `c`: the values it sets replace those (stream and serve). */
void cli_osc_cnet_merge(const cli_osc_cnet *u, sd_stream_control *c);

/* Decodes one datagram into *u (merging), as the listener does; returns the number of messages accepted,
 * -1 when the packet is malformed; *rejected counts messages with an unknown address or bad arguments, and
 * `why` (may be NULL) gets the first problem. For tests and the fuzzer. */
int cli_osc_decode(const void *data, size_t len, int n_loras, cli_osc_update *u, int *rejected, char *why,
                   size_t why_len);

#endif
