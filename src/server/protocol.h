/* The WebSocket protocol of `streamdiff serve` (docs/protocol.md): parsing
 * and validation of the client's JSON control messages, checks on binary
 * frames, and the JSON the server sends. Pure functions, no networking, so
 * tests/test_server_protocol.c covers them directly.
 *
 * Every parse is all-or-nothing: a message with one bad field changes
 * nothing and yields an error code (a short stable word) and a message that
 * says what is wrong and what to send instead. */
#ifndef SD_SERVER_PROTOCOL_H
#define SD_SERVER_PROTOCOL_H

#include "util.h"

#include <cjson/cJSON.h>

/* Hard caps (the configurable limits below cannot exceed them). */
#define SRV_PROMPT_MAX 4096            /* bytes of a prompt */
#define SRV_TEXT_MAX ((size_t)1 << 20) /* bytes of one JSON message */
#define SRV_FRAME_MAX ((size_t)64 << 20)
#define SRV_NUM_INFERENCE_STEPS 50     /* the LCM schedule t_index_list indexes into */

typedef enum srv_mode { SRV_MODE_IMG2IMG = 0, SRV_MODE_TXT2IMG = 1 } srv_mode;

/* Limits on what a client may send (server flags set them). */
typedef struct srv_limits {
    size_t max_frame_bytes;  /* one binary message (JPEG/PNG frame): 4 MiB */
    size_t max_text_bytes;   /* one JSON message: 16 KiB */
    size_t max_prompt_bytes; /* prompt / negative prompt: 1000 */
    int64_t max_frame_pixels;/* decoded input frame: 3840*2160 */
    int max_size;            /* stream width/height: 1024 */
    int max_steps;           /* entries of t_index_list: 4 */
    double max_fps;          /* output frames per second and client: 30 (0 = no cap) */
} srv_limits;

void srv_limits_default(srv_limits *l);

/* Prompt and seed blending (docs/protocol.md "prompts", "seeds"; src/server/blend.c): n_prompts > 0: the
 * weighted prompts replace "prompt"; n_seeds > 0: the weighted seeds replace "seed". */
#define SRV_BLEND_PROMPT_MAX 1000 /* bytes of one blended prompt (also at most max_prompt_bytes) */
typedef struct srv_blend {
    int n_prompts;
    char prompts[SD_STREAM_MAX_BLEND][SRV_BLEND_PROMPT_MAX + 1];
    float prompt_weights[SD_STREAM_MAX_BLEND];
    int n_seeds;
    uint64_t seeds[SD_STREAM_MAX_BLEND];
    float seed_weights[SD_STREAM_MAX_BLEND];
    sd_blend_mode prompt_blend, seed_blend; /* slerp, linear (the forks' defaults) */
    bool raw_weights;                       /* false: weights divided by their sum */
} srv_blend;
/* One ControlNet's live settings of a client (the server's nets: serve --control; protocol_cnet.c). */
#define SRV_MAX_CONTROLS 8
typedef struct srv_cnet {
    float scale, guidance_start, guidance_end;
    sd_preprocess_params pp; /* how the client's frames become the net's control image */
} srv_cnet;

/* One client's generation settings. */
typedef struct srv_config {
    srv_mode mode;
    char prompt[SRV_PROMPT_MAX + 1];
    char negative_prompt[SRV_PROMPT_MAX + 1];
    float guidance_scale, delta;
    int t_index_list[SD_STREAM_MAX_STEPS], n_t_index;
    uint64_t seed;
    float similarity_threshold;
    int max_skip_frames;
    int width, height;
    sd_cfg_type cfg_type;
    int jpeg_quality;
    float max_fps; /* this client's output frame-rate cap, 0 = the server's (--max-fps); the lower one wins */
    srv_blend blend;
    int n_cnet;    /* the server's ControlNets (0 = none), each with this client's settings */
    srv_cnet cnet[SRV_MAX_CONTROLS];
} srv_config;

/* Defaults from sd_stream_default_params(), size width x height. */
void srv_config_default(srv_config *c, int width, int height);

/* What differs between two configs. */
enum {
    SRV_CHANGE_PROMPT = 1, /* prompt / negative prompt: re-encoded live */
    SRV_CHANGE_LIVE = 2,   /* guidance, delta, similarity filter: applied live */
    SRV_CHANGE_STREAM = 4, /* t_index_list, size, cfg type, seed: a new stream */
    SRV_CHANGE_OTHER = 8,  /* mode, JPEG quality, max_fps: no engine work */
    SRV_CHANGE_SEEDS = 16, /* the seed list (blending): applied live */
    SRV_CHANGE_CONTROL = 32 /* ControlNet scales, windows, preprocessors: applied live */
};
unsigned srv_config_diff(const srv_config *a, const srv_config *b);

/* Stream parameters for a config (on top of sd_stream_default_params). */
void srv_config_stream_params(const srv_config *c, sd_stream_params *p);

/* The LoRAs the server fused at start (serve --lora): model-wide, so a
 * "lora" message changes the weights every client's stream uses. */
#define SRV_MAX_LORAS 16
#define SRV_LORA_NAME_MAX 128 /* bytes of a LoRA's name (its file's base name, cut at a character) */
#define SRV_LORA_SCALE_MAX 4.0 /* a scale is in -SRV_LORA_SCALE_MAX .. SRV_LORA_SCALE_MAX */

typedef struct srv_loras {
    int n;
    char name[SRV_MAX_LORAS][SRV_LORA_NAME_MAX + 1]; /* valid UTF-8 */
    float scale[SRV_MAX_LORAS];
} srv_loras;

/* Appends the LoRA at `path` (a file or a PEFT adapter folder) with its
 * scale; the name is the path's last component (invalid UTF-8 bytes become
 * '?'). False when the list is full, the path has no name or the scale is out
 * of range. */
bool srv_loras_add(srv_loras *l, const char *path, float scale);
/* [{"name":..,"scale":..}, ...] (cJSON array, free with cJSON_Delete). */
cJSON *srv_loras_json(const srv_loras *l);

typedef enum srv_msg_type { SRV_MSG_CONFIG = 0, SRV_MSG_PING = 1, SRV_MSG_LORA = 2, SRV_MSG_CONTROLNET = 3 } srv_msg_type;

typedef struct srv_msg {
    srv_msg_type type;
    double ping_id; /* "ping": echoed in "pong" */
    bool has_ping_id;
    /* "lora": every LoRA's scale after the message (those it does not name keep theirs) */
    int n_lora;
    float lora_scale[SRV_MAX_LORAS];
} srv_msg;

typedef struct srv_error {
    const char *code; /* bad_json, bad_utf8, too_large, bad_type, unknown_type, unknown_field,
                         duplicate_field, bad_value, bad_frame, busy, engine */
    char message[320];
} srv_error;

/* Blending (blend.c): a "config" field of the blend section: -1 when `name` is none of them, else true/false
 * as the field was good (*seen: the fields met so far, for duplicates); what the lists change (SRV_CHANGE_*);
 * the fields into a config's JSON; the config's prompt (or prompt list) and seeds onto a stream. */
int srv_blend_field(const char *name, const cJSON *it, const srv_limits *lim, srv_config *c, unsigned *seen,
                    srv_error *err);
unsigned srv_blend_diff(const srv_config *a, const srv_config *b);
void srv_blend_json(const srv_config *c, cJSON *o);
sd_status srv_blend_set_prompts(sd_stream *s, const srv_config *c);
sd_status srv_blend_set_seeds(sd_stream *s, const srv_config *c);

void srv_error_set(srv_error *e, const char *code, const char *fmt, ...) SD_PRINTF(3, 4);
/* The protocol's error code for a library status (SD_ERR_INVALID_ARGUMENT: "bad_value"). */
const char *srv_status_code(sd_status st);
/* The config's stream parameters checked by sd_stream_params_validate (the library's one rule); on
 * failure err gets the mapped code and a message naming the field. */
bool srv_check_stream_params(const srv_config *c, srv_error *err);

/* Parses one text message of `len` bytes (not NUL-terminated necessarily).
 * "config": *next = *cur with the message's fields applied.
 * Returns false with *err filled when the message is rejected (then *next is
 * untouched). */
bool srv_parse_message(const char *text, size_t len, const srv_limits *lim, const srv_config *cur, srv_msg *msg,
                       srv_config *next, srv_error *err);
/* The same, with the server's LoRAs (NULL = none) for "lora" messages:
 * names are looked up there, and the scales a message does not give are
 * taken from loras->scale. */
bool srv_parse_message_ex(const char *text, size_t len, const srv_limits *lim, const srv_loras *loras,
                          const srv_config *cur, srv_msg *msg, srv_config *next, srv_error *err);

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
bool srv_utf8_valid(const uint8_t *s, size_t n);

/* Checks a binary frame before decoding: size, JPEG or PNG signature, and the
 * dimensions from its header against the limits (so a tiny file cannot ask
 * for a huge decode). */
bool srv_check_frame(const uint8_t *b, size_t n, const srv_limits *lim, int *width, int *height, srv_error *err);

/* Field readers of the parsers (protocol.c): a finite number in [lo, hi] (integral when `integer`), one of
 * `names`; false with *err naming the field. */
bool srv_get_number(const cJSON *it, const char *name, double lo, double hi, bool integer, double *out, srv_error *err);
bool srv_get_enum(const cJSON *it, const char *name, const char *const *names, int count, int *out, srv_error *err);

/* ControlNets (protocol_cnet.c). "controlnet": *next = *cur with net k's settings changed (every field
 * optional but one: "net", the index, may be left out when the server has one net), checked by the library's
 * rule (sd_stream_control_validate). */
bool srv_parse_controlnet(const cJSON *root, const srv_config *cur, srv_msg *msg, srv_config *next, srv_error *err);
/* [{"scale":..,"guidance_start":..,"guidance_end":..,"preprocess":..,"canny_low":..,"canny_high":..,
 * "threshold":..}, ...] of a config (cJSON array). */
cJSON *srv_cnet_json(const srv_config *c);
/* Net k's settings as the library's sd_stream_control. */
void srv_cnet_to_stream(const srv_cnet *n, sd_stream_control *out);

/* JSON builders (cJSON objects, free with cJSON_Delete). */
cJSON *srv_config_json(const srv_config *c);
cJSON *srv_limits_json(const srv_limits *l);
/* Serialized messages (malloc'd, NUL-terminated). */
char *srv_error_json(const srv_error *e);
char *srv_json_print(cJSON *obj); /* prints and deletes obj; NULL on failure */

const char *srv_cfg_type_name(sd_cfg_type t);
const char *srv_mode_name(srv_mode m);

#endif
