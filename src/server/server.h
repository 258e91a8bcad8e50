/* `streamdiff serve`: the real-time HTTP + WebSocket server (libwebsockets).
 *
 * Threads: the libwebsockets event loop (all socket work, message parsing,
 * queue bookkeeping) and one engine worker (decode, stream step, encode),
 * joined by one mutex. Each active client has its own stream; every tick the
 * worker takes up to max_batch clients that have work, the least recently
 * served first (so clients share the engine fairly and a frame waits at most
 * one tick while the clients with frames fit into max_batch), and runs the
 * frames of streams of the same size in one batched UNet call (a stream group,
 * src/pipe/stream_group.c); each stream's output equals what it gives alone. Queues are one slot each (newest frame wins), so a slow
 * client never makes memory grow. See docs/protocol.md and docs/server.md. */
#ifndef SD_SERVER_H
#define SD_SERVER_H

#include "protocol.h"

/* Live control of every session from outside the WebSocket protocol (OSC: `serve --osc-port`). What it
 * sets applies to every client's settings, as if each had sent it in a "config" message (each is told with
 * a "config" message, as for its own; a value its stream refuses is reported to it and not applied), to the
 * settings of clients that connect later, and to the LoRA scales, as a "lora" message does. */
enum {
    SRV_CTL_PROMPT = 1 << 0,
    SRV_CTL_NEGATIVE = 1 << 1,
    SRV_CTL_GUIDANCE = 1 << 2,
    SRV_CTL_DELTA = 1 << 3,
    SRV_CTL_SEED = 1 << 4,
    SRV_CTL_T_INDEX = 1 << 5,
    SRV_CTL_SIMILARITY = 1 << 6,
    SRV_CTL_LORA = 1 << 7,
    /* blending (blend.c): lists replace the prompt / seed (and a single one replaces a list); weights alone
     * apply to the list in force when their count matches */
    SRV_CTL_PROMPTS = 1 << 8,
    SRV_CTL_PROMPT_WEIGHTS = 1 << 9,
    SRV_CTL_PROMPT_BLEND = 1 << 10,
    SRV_CTL_SEEDS = 1 << 11,
    SRV_CTL_SEED_WEIGHTS = 1 << 12,
    SRV_CTL_SEED_BLEND = 1 << 13,
};
typedef struct srv_control {
    unsigned set; /* SRV_CTL_*: which fields hold values */
    char prompt[SRV_PROMPT_MAX + 1], negative_prompt[SRV_PROMPT_MAX + 1];
    float guidance_scale, delta, similarity_threshold;
    int max_skip_frames; /* with SRV_CTL_SIMILARITY; -1: unchanged */
    uint64_t seed;
    int t_index_list[SD_STREAM_MAX_STEPS], n_t_index;
    unsigned lora_set; /* bit i: lora_scale[i] is the i-th LoRA's new scale */
    float lora_scale[SRV_MAX_LORAS];
    srv_blend blend; /* SRV_CTL_PROMPTS / SEEDS: the lists; *_WEIGHTS: the weights (n_* their count); modes */
} srv_control;

/* The blending part of a control update onto a config (blend.c): false (and *err) when refused. */
bool srv_blend_control(const srv_control *u, srv_config *out, srv_error *err);

typedef struct srv_options {
    const char *host;         /* "127.0.0.1" */
    int port;                 /* 8080; 0 = any free port (printed) */
    const char *token;        /* NULL = none; else required as ?token= on /ws and /metrics */
    srv_limits limits;
    int max_sessions;         /* clients served at once (each has a stream): 4 */
    int max_clients;          /* connections incl. queued: 16 */
    int max_batch;            /* frames of different sessions in one batched UNet call (stream group, same
                                 size): 0 = max_sessions; 1 = every frame alone */
    srv_config defaults;      /* a new client's settings */
    const char *web_dir;      /* serve the page from this folder instead of the embedded copy */
    bool any_origin;          /* accept WebSocket connections from pages of other origins */
    double max_runtime_s;     /* stop after this many seconds (0 = run until SIGINT/SIGTERM) */
    const char *model_name;   /* shown on the page */
    bool tiny_model;          /* the bundled test model: the page says outputs are noise */
    const sd_lora_spec *loras;/* LoRAs the caller fused at start (serve --lora, at most SRV_MAX_LORAS, scales
                                 within SRV_LORA_SCALE_MAX); clients may change their scales ("lora") */
    int n_loras;
    bool lora_allow_unmatched;/* the sd_lora_options the caller applied them with */
    /* ControlNets (serve --control), loaded by the caller for the model, at most SRV_MAX_CONTROLS: every client's
     * stream gets them; controls[k].image NULL = made from each client frame (img2img only: a txt2img stream
     * leaves those out), else the fixed image. Each client sets its own scale, window and preprocessor
     * ("controlnet"); defaults.cnet holds the start values. control_names[k]: shown on the page. */
    const sd_control *controls;
    const char *const *control_names;
    int n_controls;
    int verbose;
    /* Optional live control: polled by the engine worker between ticks (at least every 100 ms while it is
     * set); returns true and fills *c when something arrived. */
    bool (*control)(void *user, srv_control *c);
    void *control_user;
} srv_options;

void srv_options_default(srv_options *o);

/* Runs until SIGINT / SIGTERM (or max_runtime_s). Returns a process exit code. */
int srv_run(sd_model *m, const srv_options *o);

#endif
