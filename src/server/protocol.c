/* Control-message parsing and frame checks of the `streamdiff serve`
 * protocol (docs/protocol.md). Hostile input is the normal case here: every
 * length is checked before use, numbers must be finite and in range, strings
 * valid UTF-8, and a message is applied all-or-nothing. */
#include "protocol.h"


#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_limits_default(srv_limits *l)
{
    memset(l, 0, sizeof *l);
    l->max_frame_bytes = (size_t)4 << 20;
    l->max_text_bytes = (size_t)16 << 10;
    l->max_prompt_bytes = 1000;
    l->max_frame_pixels = (int64_t)3840 * 2160;
    l->max_size = 1024;
    l->max_steps = 4;
    l->max_fps = 30;
}

void srv_config_default(srv_config *c, int width, int height)
{
    sd_stream_params p;
    sd_stream_default_params(&p);
    memset(c, 0, sizeof *c);
    c->mode = SRV_MODE_IMG2IMG;
    c->guidance_scale = p.guidance_scale;
    c->delta = p.delta;
    c->n_t_index = p.n_t_index;
    memcpy(c->t_index_list, p.t_index_list, sizeof c->t_index_list);
    c->seed = p.seed;
    c->similarity_threshold = p.similarity_threshold;
    c->max_skip_frames = p.max_skip_frames;
    c->width = width;
    c->height = height;
    c->cfg_type = p.cfg_type;
    c->jpeg_quality = 85;
    c->blend.prompt_blend = SD_BLEND_SLERP;
    c->blend.seed_blend = SD_BLEND_LINEAR;
}

unsigned srv_config_diff(const srv_config *a, const srv_config *b)
{
    unsigned d = 0;
    if (strcmp(a->prompt, b->prompt) || strcmp(a->negative_prompt, b->negative_prompt))
        d |= SRV_CHANGE_PROMPT;
    if (a->guidance_scale != b->guidance_scale || a->delta != b->delta ||
        a->similarity_threshold != b->similarity_threshold || a->max_skip_frames != b->max_skip_frames)
        d |= SRV_CHANGE_LIVE;
    if (a->n_t_index != b->n_t_index ||
        memcmp(a->t_index_list, b->t_index_list, sizeof(int) * (size_t)SD_MAX(a->n_t_index, 0)) ||
        a->width != b->width || a->height != b->height || a->cfg_type != b->cfg_type || a->seed != b->seed)
        d |= SRV_CHANGE_STREAM;
    if (a->mode != b->mode || a->jpeg_quality != b->jpeg_quality || a->max_fps != b->max_fps)
        d |= SRV_CHANGE_OTHER;
    if (a->n_cnet != b->n_cnet || memcmp(a->cnet, b->cnet, sizeof(srv_cnet) * (size_t)SD_MAX(a->n_cnet, 0)))
        d |= SRV_CHANGE_CONTROL;
    return d | srv_blend_diff(a, b);
}

void srv_config_stream_params(const srv_config *c, sd_stream_params *p)
{
    sd_stream_default_params(p);
    p->width = c->width;
    p->height = c->height;
    p->n_t_index = c->n_t_index;
    memcpy(p->t_index_list, c->t_index_list, sizeof p->t_index_list);
    p->num_inference_steps = SRV_NUM_INFERENCE_STEPS;
    p->cfg_type = c->cfg_type;
    p->guidance_scale = c->guidance_scale;
    p->delta = c->delta;
    p->seed = c->seed;
    p->similarity_threshold = c->similarity_threshold;
    p->max_skip_frames = c->max_skip_frames;
    p->rng = SD_RNG_TYPE_FAST; /* real-time: per-frame noise need not replay torch */
    p->queue_size = 2;
    p->drop_old_frames = true;
}

static const char *const k_cfg_names[] = {"none", "full", "self", "initialize"};
static const char *const k_mode_names[] = {"img2img", "txt2img"};

const char *srv_cfg_type_name(sd_cfg_type t) { return (unsigned)t < 4 ? k_cfg_names[t] : "?"; }
const char *srv_mode_name(srv_mode m) { return (unsigned)m < 2 ? k_mode_names[m] : "?"; }

void srv_error_set(srv_error *e, const char *code, const char *fmt, ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- UTF-8 */

bool srv_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* ---------------------------------------------------------------- fields */

const char *srv_status_code(sd_status st)
{
    switch (st) {
    case SD_OK:
        return "ok";
    case SD_ERR_INVALID_ARGUMENT:
        return "bad_value";
    case SD_ERR_OUT_OF_MEMORY:
        return "too_large";
    default:
        return "engine";
    }
}

bool srv_check_stream_params(const srv_config *c, srv_error *err)
{
    sd_stream_params p;
    srv_config_stream_params(c, &p);
    const char *param = NULL;
    sd_status st = sd_stream_params_validate(&p, &param);
    if (st == SD_OK)
        return true;
    srv_error_set(err, srv_status_code(st), "field '%s': %s", param ? param : "config", sd_last_error());
    return false;
}

/* A finite number in [lo, hi]; integral when `integer`. */
static bool get_number(const cJSON *it, const char *name, double lo, double hi, bool integer, double *out,
                       srv_error *err)
{
    if (!cJSON_IsNumber(it)) {
        srv_error_set(err, "bad_type", "field '%s' must be a number", name);
        return false;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v < lo || v > hi) {
        srv_error_set(err, "bad_value", "field '%s': %g is outside %g..%g", name, v, lo, hi);
        return false;
    }
    if (integer && v != floor(v)) {
        srv_error_set(err, "bad_value", "field '%s' must be a whole number, got %g", name, v);
        return false;
    }
    *out = v;
    return true;
}

static bool get_string(const cJSON *it, const char *name, size_t max_bytes, char *dst, srv_error *err)
{
    if (!cJSON_IsString(it) || !it->valuestring) {
        srv_error_set(err, "bad_type", "field '%s' must be a string", name);
        return false;
    }
    size_t n = strlen(it->valuestring);
    if (n > max_bytes) {
        srv_error_set(err, "too_large", "field '%s' has %zu bytes; the limit is %zu", name, n, max_bytes);
        return false;
    }
    if (!srv_utf8_valid((const uint8_t *)it->valuestring, n)) {
        srv_error_set(err, "bad_utf8", "field '%s' is not valid UTF-8", name);
        return false;
    }
    memcpy(dst, it->valuestring, n + 1);
    return true;
}

static bool get_enum(const cJSON *it, const char *name, const char *const *names, int count, int *out,
                     srv_error *err)
{
    if (cJSON_IsString(it) && it->valuestring)
        for (int i = 0; i < count; i++)
            if (!strcmp(it->valuestring, names[i])) {
                *out = i;
                return true;
            }
    char list[128] = "";
    for (int i = 0; i < count; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
    srv_error_set(err, cJSON_IsString(it) ? "bad_value" : "bad_type", "field '%s' must be one of %s", name, list);
    return false;
}

bool srv_get_number(const cJSON *it, const char *name, double lo, double hi, bool integer, double *out, srv_error *err)
{
    return get_number(it, name, lo, hi, integer, out, err);
}

bool srv_get_enum(const cJSON *it, const char *name, const char *const *names, int count, int *out, srv_error *err)
{
    return get_enum(it, name, names, count, out, err);
}

/* An array of whole numbers, at most the server's --max-steps; what makes a valid list (range, order) is
 * sd_stream_params_validate's rule, checked on the whole config (parse_object). */
static bool get_t_index_list(const cJSON *it, const srv_limits *lim, srv_config *c, srv_error *err)
{
    if (!cJSON_IsArray(it)) {
        srv_error_set(err, "bad_type", "field 't_index_list' must be an array of whole numbers");
        return false;
    }
    int n = cJSON_GetArraySize(it);
    int maxn = SD_MIN(lim->max_steps, SD_STREAM_MAX_STEPS);
    if (n > maxn) {
        srv_error_set(err, "bad_value", "field 't_index_list' has %d entries; this server allows at most %d", n, maxn);
        return false;
    }
    int v[SD_STREAM_MAX_STEPS], i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it)
    {
        double d;
        if (!get_number(e, "t_index_list[]", -1e6, 1e6, true, &d, err))
            return false;
        v[i++] = (int)d;
    }
    memset(c->t_index_list, 0, sizeof c->t_index_list);
    memcpy(c->t_index_list, v, sizeof(int) * (size_t)n);
    c->n_t_index = n;
    return true;
}

/* The fields of a "config" message, in the order of docs/protocol.md. */
static const char *const k_fields[] = {"type",     "mode",  "prompt", "negative_prompt", "guidance_scale", "delta",
                                       "t_index_list", "seed", "similarity_threshold", "max_skip_frames", "width",
                                       "height", "cfg_type", "jpeg_quality", "max_fps"};

static bool apply_field(int f, const cJSON *it, const srv_limits *lim, srv_config *c, srv_error *err)
{
    double d;
    int e;
    size_t maxp = SD_MIN(lim->max_prompt_bytes, (size_t)SRV_PROMPT_MAX);
    switch (f) {
    case 0:
        return true;
    case 1:
        if (!get_enum(it, "mode", k_mode_names, 2, &e, err))
            return false;
        c->mode = (srv_mode)e;
        return true;
    case 2:
        return get_string(it, "prompt", maxp, c->prompt, err);
    case 3:
        return get_string(it, "negative_prompt", maxp, c->negative_prompt, err);
    case 4:
        if (!get_number(it, "guidance_scale", 0, 20, false, &d, err))
            return false;
        c->guidance_scale = (float)d;
        return true;
    case 5:
        if (!get_number(it, "delta", 0, 10, false, &d, err))
            return false;
        c->delta = (float)d;
        return true;
    case 6:
        return get_t_index_list(it, lim, c, err);
    case 7:
        if (!get_number(it, "seed", 0, 9007199254740991.0, true, &d, err))
            return false;
        c->seed = (uint64_t)d;
        return true;
    case 8:
        if (!get_number(it, "similarity_threshold", 0, 1, false, &d, err))
            return false;
        c->similarity_threshold = (float)d;
        return true;
    case 9:
        if (!get_number(it, "max_skip_frames", 0, 1000, true, &d, err))
            return false;
        c->max_skip_frames = (int)d;
        return true;
    case 10:
    case 11: {
        const char *name = f == 10 ? "width" : "height";
        if (!get_number(it, name, 8, lim->max_size, true, &d, err)) /* the server's limit; the rest: parse_object */
            return false;
        *(f == 10 ? &c->width : &c->height) = (int)d;
        return true;
    }
    case 12:
        if (!get_enum(it, "cfg_type", k_cfg_names, 4, &e, err))
            return false;
        c->cfg_type = (sd_cfg_type)e;
        return true;
    case 13:
        if (!get_number(it, "jpeg_quality", 1, 100, true, &d, err))
            return false;
        c->jpeg_quality = (int)d;
        return true;
    case 14:
        if (!get_number(it, "max_fps", 0, 1000, false, &d, err))
            return false;
        c->max_fps = (float)d;
        return true;
    default:
        srv_error_set(err, "unknown_field", "internal: field %d", f);
        return false;
    }
}

/* ---------------------------------------------------------------- LoRAs */

bool srv_loras_add(srv_loras *l, const char *path, float scale)
{
    if (!l || !path || l->n >= SRV_MAX_LORAS || !isfinite(scale) || fabs((double)scale) > SRV_LORA_SCALE_MAX)
        return false;
    size_t end = strlen(path);
    while (end > 0 && path[end - 1] == '/') /* a PEFT adapter folder "dir/" */
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    if (start == end)
        return false;
    const uint8_t *s = (const uint8_t *)path + start;
    size_t n = end - start, o = 0;
    char *dst = l->name[l->n];
    for (size_t i = 0; i < n;) { /* valid UTF-8 for the JSON that carries it; '?' for anything else */
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool good = k && i + k <= n && srv_utf8_valid(s + i, k) && c >= 0x20 && c != 0x7f;
        if (!good)
            k = 1;
        if (o + k > SRV_LORA_NAME_MAX)
            break;
        if (good)
            memcpy(dst + o, s + i, k);
        else
            dst[o] = '?';
        o += k;
        i += k;
    }
    dst[o] = 0;
    l->scale[l->n++] = scale;
    return true;
}

cJSON *srv_loras_json(const srv_loras *l)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && l && i < l->n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "name", l->name[i]);
        cJSON_AddNumberToObject(o, "scale", round((double)l->scale[i] * 1e4) / 1e4);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

/* "the server has: a.safetensors, b.safetensors" (cut to fit) */
static void lora_names(const srv_loras *l, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "the server has:");
    for (int i = 0; i < l->n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s %.60s", i ? "," : "", l->name[i]);
}

/* {"type":"lora","scales":[0.8, 1.0]} or {"type":"lora","scales":{"style.safetensors":0.8}} */
static bool parse_lora(const cJSON *root, const srv_loras *l, srv_msg *msg, srv_error *err)
{
    if (!l || l->n <= 0) {
        srv_error_set(err, "bad_value", "this server has no LoRAs to scale (start it with --lora PATH[:SCALE])");
        return false;
    }
    int n = SD_MIN(l->n, SRV_MAX_LORAS);
    const cJSON *it, *scales = NULL;
    int types = 0;
    cJSON_ArrayForEach(it, root)
    {
        if (it->string && !strcmp(it->string, "type") && !types++)
            continue;
        if (!it->string || (strcmp(it->string, "type") && strcmp(it->string, "scales"))) {
            srv_error_set(err, "unknown_field", "\"lora\" takes only \"scales\", not '%.40s'",
                          it->string ? it->string : "");
            return false;
        }
        if (!strcmp(it->string, "type") || scales) {
            srv_error_set(err, "duplicate_field", "field '%s' appears twice", it->string);
            return false;
        }
        scales = it;
    }
    char names[200];
    lora_names(l, names, sizeof names);
    if (!scales) {
        srv_error_set(err, "bad_value",
                      "\"lora\" needs \"scales\": an array with one number per LoRA, or an object "
                      "{\"name\": number} (%s)", names);
        return false;
    }
    float v[SRV_MAX_LORAS];
    memcpy(v, l->scale, sizeof v);
    char what[SRV_LORA_NAME_MAX + 16];
    double d;
    if (cJSON_IsArray(scales)) {
        int k = cJSON_GetArraySize(scales);
        if (k != n) {
            srv_error_set(err, "bad_value", "field 'scales' needs %d number%s, one per LoRA in order, got %d (%s)", n,
                          n == 1 ? "" : "s", k, names);
            return false;
        }
        int i = 0;
        cJSON_ArrayForEach(it, scales)
        {
            snprintf(what, sizeof what, "scales[%d]", i);
            if (!get_number(it, what, -SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX, false, &d, err))
                return false;
            v[i++] = (float)d;
        }
    } else if (cJSON_IsObject(scales)) {
        bool seen[SRV_MAX_LORAS] = {false};
        cJSON_ArrayForEach(it, scales)
        {
            const char *key = it->string ? it->string : "";
            int found = -1, count = 0;
            for (int i = 0; i < n; i++)
                if (!strcmp(key, l->name[i])) {
                    found = found < 0 ? i : found;
                    count++;
                }
            if (found < 0) {
                srv_error_set(err, "bad_value", "unknown LoRA '%.60s' in 'scales' (%s)", key, names);
                return false;
            }
            if (count > 1) {
                srv_error_set(err, "bad_value", "%d LoRAs are named '%.60s': give 'scales' as an array instead", count,
                              key);
                return false;
            }
            if (seen[found]) {
                srv_error_set(err, "duplicate_field", "LoRA '%.60s' appears twice in 'scales'", key);
                return false;
            }
            seen[found] = true;
            snprintf(what, sizeof what, "scales.%s", l->name[found]);
            if (!get_number(it, what, -SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX, false, &d, err))
                return false;
            v[found] = (float)d;
        }
    } else {
        srv_error_set(err, "bad_type",
                      "field 'scales' must be an array of numbers (one per LoRA) or an object {\"name\": number}");
        return false;
    }
    msg->type = SRV_MSG_LORA;
    msg->n_lora = n;
    memcpy(msg->lora_scale, v, sizeof v);
    return true;
}

static bool parse_object(const cJSON *root, const srv_limits *lim, const srv_loras *loras, const srv_config *cur,
                         srv_msg *msg, srv_config *next, srv_error *err)
{
    if (!cJSON_IsObject(root)) {
        srv_error_set(err, "bad_type", "a control message must be a JSON object like {\"type\":\"config\",...}");
        return false;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!type) {
        srv_error_set(err, "unknown_type", "the message has no \"type\" field (\"config\", \"ping\" or \"lora\")");
        return false;
    }
    if (!cJSON_IsString(type) || !type->valuestring) {
        srv_error_set(err, "bad_type", "field 'type' must be a string (\"config\", \"ping\" or \"lora\")");
        return false;
    }
    memset(msg, 0, sizeof *msg);
    const cJSON *it;
    if (!strcmp(type->valuestring, "ping")) {
        msg->type = SRV_MSG_PING;
        int seen = 0;
        cJSON_ArrayForEach(it, root)
        {
            if (!it->string || (strcmp(it->string, "type") && strcmp(it->string, "id"))) {
                srv_error_set(err, "unknown_field", "\"ping\" takes only \"id\" (a number), not '%.40s'",
                              it->string ? it->string : "");
                return false;
            }
            if (!strcmp(it->string, "type"))
                continue;
            if (seen++) {
                srv_error_set(err, "duplicate_field", "field 'id' appears twice");
                return false;
            }
            if (!get_number(it, "id", -9007199254740991.0, 9007199254740991.0, false, &msg->ping_id, err))
                return false;
            msg->has_ping_id = true;
        }
        return true;
    }
    if (!strcmp(type->valuestring, "lora"))
        return parse_lora(root, loras, msg, err);
    if (!strcmp(type->valuestring, "controlnet"))
        return srv_parse_controlnet(root, cur, msg, next, err);
    if (strcmp(type->valuestring, "config")) {
        srv_error_set(err, "unknown_type",
                      "unknown message type '%.40s' (use \"config\", \"ping\", \"lora\" or \"controlnet\")",
                      type->valuestring);
        return false;
    }
    msg->type = SRV_MSG_CONFIG;
    /* work on a copy: nothing changes unless every field is good */
    srv_config *c = malloc(sizeof *c);
    if (!c) {
        srv_error_set(err, "engine", "out of memory");
        return false;
    }
    *c = *cur;
    unsigned seen = 0, seen_blend = 0;
    bool ok = true;
    cJSON_ArrayForEach(it, root)
    {
        int f = -1;
        for (int i = 0; it->string && i < (int)SD_ARRAY_LEN(k_fields); i++)
            if (!strcmp(it->string, k_fields[i]))
                f = i;
        int bf = f < 0 && it->string ? srv_blend_field(it->string, it, lim, c, &seen_blend, err) : -1;
        if (bf >= 0) { /* prompt / seed blending (blend.c) */
            if (!bf) {
                ok = false;
                break;
            }
            continue;
        }
        if (f < 0) {
            srv_error_set(err, "unknown_field", "unknown field '%.40s' in \"config\" (see docs/protocol.md)",
                          it->string ? it->string : "");
            ok = false;
            break;
        }
        if (seen & (1u << f)) {
            srv_error_set(err, "duplicate_field", "field '%s' appears twice", k_fields[f]);
            ok = false;
            break;
        }
        seen |= 1u << f;
        if (!apply_field(f, it, lim, c, err)) {
            ok = false;
            break;
        }
    }
    if (ok) /* the stream parameters it makes, by the library's rules (sd_stream_params_validate) */
        ok = srv_check_stream_params(c, err);
    if (ok)
        *next = *c;
    free(c);
    return ok;
}

bool srv_parse_message(const char *text, size_t len, const srv_limits *lim, const srv_config *cur, srv_msg *msg,
                       srv_config *next, srv_error *err)
{
    return srv_parse_message_ex(text, len, lim, NULL, cur, msg, next, err);
}

bool srv_parse_message_ex(const char *text, size_t len, const srv_limits *lim, const srv_loras *loras,
                          const srv_config *cur, srv_msg *msg, srv_config *next, srv_error *err)
{
    size_t maxb = SD_MIN(lim->max_text_bytes, SRV_TEXT_MAX);
    if (len > maxb) {
        srv_error_set(err, "too_large", "a text message has %zu bytes; the limit is %zu", len, maxb);
        return false;
    }
    if (!text || len == 0) {
        srv_error_set(err, "bad_json", "empty text message (send a JSON object)");
        return false;
    }
    if (!srv_utf8_valid((const uint8_t *)text, len)) {
        srv_error_set(err, "bad_utf8", "the text message is not valid UTF-8");
        return false;
    }
    if (memchr(text, 0, len)) {
        srv_error_set(err, "bad_json", "the text message contains a NUL byte");
        return false;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        srv_error_set(err, "bad_json", "the text message is not valid JSON (error near byte %zu)", off);
        return false;
    }
    /* only whitespace may follow the value */
    for (const char *p = end; p && p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            srv_error_set(err, "bad_json", "unexpected data after the JSON value at byte %zu", (size_t)(p - text));
            return false;
        }
    bool ok = parse_object(root, lim, loras, cur, msg, next, err);
    cJSON_Delete(root);
    return ok;
}

/* ---------------------------------------------------------------- frames */

static bool jpeg_dims(const uint8_t *b, size_t n, int *w, int *h)
{
    size_t i = 2;
    while (i + 4 <= n) {
        if (b[i] != 0xff)
            return false;
        while (i < n && b[i] == 0xff) /* fill bytes */
            i++;
        if (i >= n)
            return false;
        uint8_t m = b[i++];
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) /* standalone markers */
            continue;
        if (m == 0xd9 || m == 0xda) /* EOI / SOS before any SOF */
            return false;
        if (i + 2 > n)
            return false;
        size_t seg = ((size_t)b[i] << 8) | b[i + 1];
        if (seg < 2 || i + seg > n)
            return false;
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (seg < 7)
                return false;
            *h = (b[i + 3] << 8) | b[i + 4];
            *w = (b[i + 5] << 8) | b[i + 6];
            return true;
        }
        i += seg;
    }
    return false;
}

bool srv_check_frame(const uint8_t *b, size_t n, const srv_limits *lim, int *width, int *height, srv_error *err)
{
    size_t maxb = SD_MIN(lim->max_frame_bytes, SRV_FRAME_MAX);
    if (n > maxb) {
        srv_error_set(err, "too_large", "a frame has %zu bytes; the limit is %zu", n, maxb);
        return false;
    }
    int w = 0, h = 0;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) {
        if (!jpeg_dims(b, n, &w, &h)) {
            srv_error_set(err, "bad_frame", "the JPEG frame is truncated or has no frame header (SOF)");
            return false;
        }
    } else if (n >= 24 && !memcmp(b, png_sig, 8)) {
        if (memcmp(b + 12, "IHDR", 4)) {
            srv_error_set(err, "bad_frame", "the PNG frame does not start with an IHDR chunk");
            return false;
        }
        uint32_t pw = ((uint32_t)b[16] << 24) | ((uint32_t)b[17] << 16) | ((uint32_t)b[18] << 8) | b[19];
        uint32_t ph = ((uint32_t)b[20] << 24) | ((uint32_t)b[21] << 16) | ((uint32_t)b[22] << 8) | b[23];
        if (pw > SD_IMAGE_MAX_SIDE || ph > SD_IMAGE_MAX_SIDE) {
            srv_error_set(err, "too_large", "the PNG frame is %ux%u; the limit is %d per side", pw, ph,
                          SD_IMAGE_MAX_SIDE);
            return false;
        }
        w = (int)pw, h = (int)ph;
    } else {
        srv_error_set(err, "bad_frame", "a binary message must be a JPEG or PNG image (%zu bytes, no image signature)",
                      n);
        return false;
    }
    if (w <= 0 || h <= 0) {
        srv_error_set(err, "bad_frame", "the frame header gives an empty size %dx%d", w, h);
        return false;
    }
    if ((int64_t)w * h > lim->max_frame_pixels) {
        srv_error_set(err, "too_large", "the frame is %dx%d; the limit is %lld pixels", w, h,
                      (long long)lim->max_frame_pixels);
        return false;
    }
    *width = w;
    *height = h;
    return true;
}

/* ---------------------------------------------------------------- JSON out */

static double round4(float v) { return round((double)v * 1e4) / 1e4; }

cJSON *srv_config_json(const srv_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "mode", srv_mode_name(c->mode));
    cJSON_AddStringToObject(o, "prompt", c->prompt);
    cJSON_AddStringToObject(o, "negative_prompt", c->negative_prompt);
    cJSON_AddNumberToObject(o, "guidance_scale", round4(c->guidance_scale));
    cJSON_AddNumberToObject(o, "delta", round4(c->delta));
    cJSON *t = cJSON_AddArrayToObject(o, "t_index_list");
    for (int i = 0; t && i < c->n_t_index; i++)
        cJSON_AddItemToArray(t, cJSON_CreateNumber(c->t_index_list[i]));
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "similarity_threshold", round4(c->similarity_threshold));
    cJSON_AddNumberToObject(o, "max_skip_frames", c->max_skip_frames);
    cJSON_AddNumberToObject(o, "width", c->width);
    cJSON_AddNumberToObject(o, "height", c->height);
    cJSON_AddStringToObject(o, "cfg_type", srv_cfg_type_name(c->cfg_type));
    cJSON_AddNumberToObject(o, "jpeg_quality", c->jpeg_quality);
    cJSON_AddNumberToObject(o, "max_fps", c->max_fps);
    srv_blend_json(c, o);
    if (c->n_cnet > 0)
        cJSON_AddItemToObject(o, "controlnets", srv_cnet_json(c));
    return o;
}

cJSON *srv_limits_json(const srv_limits *l)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "max_frame_bytes", (double)l->max_frame_bytes);
    cJSON_AddNumberToObject(o, "max_text_bytes", (double)l->max_text_bytes);
    cJSON_AddNumberToObject(o, "max_prompt_bytes", (double)l->max_prompt_bytes);
    cJSON_AddNumberToObject(o, "max_frame_pixels", (double)l->max_frame_pixels);
    cJSON_AddNumberToObject(o, "max_size", l->max_size);
    cJSON_AddNumberToObject(o, "max_steps", l->max_steps);
    cJSON_AddNumberToObject(o, "max_fps", l->max_fps);
    cJSON_AddNumberToObject(o, "num_inference_steps", SRV_NUM_INFERENCE_STEPS);
    return o;
}

char *srv_json_print(cJSON *obj)
{
    if (!obj)
        return NULL;
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return s;
}

char *srv_error_json(const srv_error *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", e->code ? e->code : "error");
    /* messages quote client input: keep them valid UTF-8 for the client's JSON parser */
    char msg[sizeof e->message];
    size_t n = strnlen(e->message, sizeof msg - 1);
    memcpy(msg, e->message, n);
    msg[n] = 0;
    while (n > 0 && !srv_utf8_valid((const uint8_t *)msg, n))
        msg[--n] = 0;
    cJSON_AddStringToObject(o, "message", msg);
    return srv_json_print(o);
}
