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
 * Blending (docs/blending.md; lists of 1..SD_STREAM_MAX_BLEND entries, weights >= 0 with a positive sum):
 *   /streamdiff/prompts           s f [s f..]  weighted prompts, blended (each encoded once): sd_stream_set_prompts
 *   /streamdiff/prompt_weights    f [f..]  new weights for the current prompt list (no encoding)
 *   /streamdiff/prompt_blend      s        "linear" or "slerp"
 *   /streamdiff/seeds             i f [i f..]  weighted seeds, their noises blended: sd_stream_set_seeds
 *   /streamdiff/seed_weights      f [f..]  new weights for the current seed list
 *   /streamdiff/seed_blend        s        "linear" or "slerp"
 * /streamdiff/prompt and /streamdiff/seed replace a list with one entry.
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
    CLI_OSC_PROMPTS = 1 << 8,
    CLI_OSC_PROMPT_WEIGHTS = 1 << 9,
    CLI_OSC_PROMPT_BLEND = 1 << 10,
    CLI_OSC_SEEDS = 1 << 11,
    CLI_OSC_SEED_WEIGHTS = 1 << 12,
    CLI_OSC_SEED_BLEND = 1 << 13,
    CLI_OSC_CONTROLNET = 1 << 14,
};
/* What an update sets of one ControlNet (cli_osc_update.cnet[N].set). */
enum { CLI_OSC_CN_SCALE = 1, CLI_OSC_CN_WINDOW = 2, CLI_OSC_CN_PREPROCESS = 4, CLI_OSC_CN_CANNY = 8, CLI_OSC_CN_THRESHOLD = 16 };
typedef struct cli_osc_cnet {
    unsigned set; /* CLI_OSC_CN_* */
    float scale, start, end;
    sd_preprocess kind;
    int canny_low, canny_high, threshold;
} cli_osc_cnet;

/* A weighted prompt or seed list (blending): texts for prompts, seeds for seeds. */
typedef struct cli_blend_list {
    int n;
    char text[SD_STREAM_MAX_BLEND][CLI_OSC_MAX_TEXT];
    uint64_t seed[SD_STREAM_MAX_BLEND];
    float weight[SD_STREAM_MAX_BLEND];
} cli_blend_list;

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
    cli_blend_list prompts, seeds;   /* CLI_OSC_PROMPTS / CLI_OSC_SEEDS */
    float prompt_weights[SD_STREAM_MAX_BLEND], seed_weights[SD_STREAM_MAX_BLEND];
    int n_prompt_weights, n_seed_weights;
    sd_blend_mode prompt_blend, seed_blend;
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
    /* blending (cli_blend.c): prompts.n > 0: the prompt list replaces `prompt`; seeds.n > 0: the seed list */
    cli_blend_list prompts, seeds;
    sd_blend_mode prompt_blend, seed_blend;
    bool normalize;
} cli_live;
/* The live prompt (or prompt list) and negative prompt onto the stream (cli_blend.c). */
sd_status cli_live_set_prompts(const cli_live *l);
/* The live seed list onto the stream (seeds.n > 0; cli_blend.c). */
sd_status cli_live_set_seeds(const cli_live *l);
/* The blending part of an OSC update (cli_blend.c): applied to *l (kept when the stream refuses). */
void cli_osc_apply_blend(const cli_osc_update *u, cli_live *l, int64_t frame);
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
