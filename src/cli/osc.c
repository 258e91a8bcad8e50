/* OSC listener for stream control (see osc.h). liblo decodes each message; the socket, the
 * bundle walk and the address table are ours so that the port binds to one address only. */
#include "cli/osc.h"

#include <lo/lo.h>

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define OSC_MAX_PACKET 65536
#define OSC_MAX_DEPTH 4

struct cli_osc {
    int fd, n_loras;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    cli_osc_update pending; /* under lock */
    cli_osc_update scratch; /* the listener thread's decode target */
    atomic_llong accepted, rejected;
    double last_report;
    uint8_t buf[OSC_MAX_PACKET];
};

static void why_set(char *why, size_t n, const char *fmt, const char *a)
{
    if (why && n && !*why)
        snprintf(why, n, fmt, a);
}

/* liblo's argument pointers point into the packet at 4-byte alignment: read through memcpy, not lo_arg's
 * (8-byte aligned) members */
static bool arg_number(char type, const lo_arg *a, double *v)
{
    int32_t i32;
    int64_t i64;
    float f;
    double d;
    switch (type) {
    case LO_INT32: memcpy(&i32, a, sizeof i32); *v = i32; return true;
    case LO_INT64: memcpy(&i64, a, sizeof i64); *v = (double)i64; return true;
    case LO_FLOAT: memcpy(&f, a, sizeof f); *v = f; return true;
    case LO_DOUBLE: memcpy(&d, a, sizeof d); *v = d; return true;
    case LO_TRUE: *v = 1; return true;
    case LO_FALSE: *v = 0; return true;
    default: return false;
    }
}

/* the blending addresses (osc.h): lists of (text | seed, weight) pairs, weights alone, or a mode name */
static bool blend_message(const char *path, const char *leaf, int argc, const char *types, lo_arg **argv,
                          cli_osc_update *u, char *why, size_t why_len)
{
    bool seeds = leaf[0] == 's';
    if (strstr(leaf, "_blend")) {
        sd_blend_mode m;
        if (argc != 1 || (types[0] != LO_STRING && types[0] != LO_SYMBOL) ||
            !sd_blend_mode_from_name((const char *)argv[0], &m)) {
            why_set(why, why_len, "%s takes one string: linear or slerp", path);
            return false;
        }
        *(seeds ? &u->seed_blend : &u->prompt_blend) = m;
        u->set |= seeds ? CLI_OSC_SEED_BLEND : CLI_OSC_PROMPT_BLEND;
        return true;
    }
    if (strstr(leaf, "_weights")) {
        float *w = seeds ? u->seed_weights : u->prompt_weights;
        double d;
        if (argc < 1 || argc > SD_STREAM_MAX_BLEND) {
            why_set(why, why_len, "%s takes 1..8 weights", path);
            return false;
        }
        for (int i = 0; i < argc; i++)
            if (!arg_number(types[i], argv[i], &d) || !isfinite(d) || d < 0) {
                why_set(why, why_len, "%s: weights are numbers >= 0", path);
                return false;
            } else
                w[i] = (float)d;
        *(seeds ? &u->n_seed_weights : &u->n_prompt_weights) = argc;
        u->set |= seeds ? CLI_OSC_SEED_WEIGHTS : CLI_OSC_PROMPT_WEIGHTS;
        return true;
    }
    cli_blend_list *l = seeds ? &u->seeds : &u->prompts;
    if (argc < 2 || argc % 2 || argc / 2 > SD_STREAM_MAX_BLEND) {
        why_set(why, why_len, seeds ? "%s takes 1..8 (seed, weight) pairs" : "%s takes 1..8 (prompt, weight) pairs",
                path);
        return false;
    }
    for (int i = 0; i < argc / 2; i++) {
        double v = 0, w = 0;
        const char *t = (const char *)argv[2 * i];
        bool key_ok = seeds ? arg_number(types[2 * i], argv[2 * i], &v) && v >= 0 && v <= 9007199254740991.0 &&
                                  v == floor(v)
                            : (types[2 * i] == LO_STRING || types[2 * i] == LO_SYMBOL) && strlen(t) < CLI_OSC_MAX_TEXT;
        if (!key_ok || !arg_number(types[2 * i + 1], argv[2 * i + 1], &w) || !isfinite(w) || w < 0) {
            why_set(why, why_len, seeds ? "%s: pairs of a whole number >= 0 and a weight >= 0"
                                        : "%s: pairs of a string (< 1024 bytes) and a weight >= 0", path);
            return false;
        }
        if (seeds)
            l->seed[i] = (uint64_t)v;
        else
            snprintf(l->text[i], CLI_OSC_MAX_TEXT, "%s", t);
        l->weight[i] = (float)w;
    }
    l->n = argc / 2;
    u->set |= seeds ? CLI_OSC_SEEDS : CLI_OSC_PROMPTS;
    u->set &= seeds ? ~(unsigned)(CLI_OSC_SEED | CLI_OSC_SEED_WEIGHTS) : ~(unsigned)(CLI_OSC_PROMPT | CLI_OSC_PROMPT_WEIGHTS);
    return true;
}

/* /streamdiff/controlnet/N/...: true when understood (ranges per value here; the whole by the library) */
static bool controlnet_message(const char *path, const char *leaf, int argc, const char *types, lo_arg **argv,
                               const double *num, bool all_numbers, cli_osc_update *u, char *why, size_t why_len)
{
    char *end;
    long k = strtol(leaf, &end, 10);
    if (end == leaf || *end != '/' || k < 0 || k >= CLI_OSC_MAX_CONTROLS) {
        why_set(why, why_len, "%s: ControlNets are /streamdiff/controlnet/N/... with N from 0 (the --control order)",
                path);
        return false;
    }
    const char *what = end + 1;
    cli_osc_cnet *c = &u->cnet[k];
    bool whole = all_numbers;
    for (int i = 0; i < argc && whole; i++)
        whole = num[i] == floor(num[i]);
    if (!strcmp(what, "scale") && argc == 1 && all_numbers && num[0] >= 0 && num[0] <= 10) {
        c->scale = (float)num[0], c->set |= CLI_OSC_CN_SCALE;
    } else if (!strcmp(what, "guidance") && argc == 2 && all_numbers && num[0] >= 0 && num[1] <= 1 && num[0] < num[1]) {
        c->start = (float)num[0], c->end = (float)num[1], c->set |= CLI_OSC_CN_WINDOW;
    } else if (!strcmp(what, "preprocess") && argc == 1 && (types[0] == LO_STRING || types[0] == LO_SYMBOL) &&
               sd_preprocess_from_name((const char *)argv[0], &c->kind)) {
        c->set |= CLI_OSC_CN_PREPROCESS;
    } else if (!strcmp(what, "canny") && argc == 2 && whole && num[0] >= 0 && num[0] <= num[1] && num[1] <= 2040) {
        c->canny_low = (int)num[0], c->canny_high = (int)num[1], c->set |= CLI_OSC_CN_CANNY;
    } else if (!strcmp(what, "threshold") && argc == 1 && whole && num[0] >= 0 && num[0] <= 255) {
        c->threshold = (int)num[0], c->set |= CLI_OSC_CN_THRESHOLD;
    } else {
        why_set(why, why_len, "%s: takes scale f (0..10), guidance f f (0 <= start < end <= 1), preprocess s (none, "
                "canny, softedge, scribble, invert, tile), canny i i (0 <= low <= high <= 2040) or threshold i "
                "(0..255)", path);
        return false;
    }
    u->set |= CLI_OSC_CONTROLNET;
    return true;
}

/* one message: true when its address and arguments were understood */
static bool apply_message(const char *path, lo_message m, int n_loras, cli_osc_update *u, char *why, size_t why_len)
{
    int argc = lo_message_get_argc(m);
    const char *types = lo_message_get_types(m);
    lo_arg **argv = lo_message_get_argv(m);
    if (argc < 0 || (argc > 0 && (!types || !argv))) {
        why_set(why, why_len, "%s: unreadable arguments", path);
        return false;
    }
    double num[CLI_OSC_MAX_T];
    int n_num = 0;
    bool all_numbers = argc <= CLI_OSC_MAX_T;
    for (int i = 0; i < argc && all_numbers; i++)
        all_numbers = arg_number(types[i], argv[i], &num[n_num++]);
    for (int i = 0; i < n_num; i++)
        if (!isfinite(num[i]))
            all_numbers = false;

    const char *leaf = !strncmp(path, "/streamdiff/", 12) ? path + 12 : NULL;
    if (!leaf) {
        why_set(why, why_len, "unknown address %s (every address starts with /streamdiff/)", path);
        return false;
    }
    if (!strcmp(leaf, "prompt") || !strcmp(leaf, "negative_prompt")) {
        bool neg = leaf[0] == 'n';
        if (argc != 1 || (types[0] != LO_STRING && types[0] != LO_SYMBOL)) {
            why_set(why, why_len, "%s takes one string", path);
            return false;
        }
        const char *s = (const char *)argv[0]; /* the string starts at the argument */
        if (strlen(s) >= CLI_OSC_MAX_TEXT) {
            why_set(why, why_len, "%s: longer than 1023 bytes", path);
            return false;
        }
        snprintf(neg ? u->negative : u->prompt, CLI_OSC_MAX_TEXT, "%s", s);
        u->set |= neg ? CLI_OSC_NEGATIVE : CLI_OSC_PROMPT;
        if (!neg)
            u->set &= ~(unsigned)(CLI_OSC_PROMPTS | CLI_OSC_PROMPT_WEIGHTS);
        return true;
    }
    if (!strcmp(leaf, "guidance") || !strcmp(leaf, "delta")) {
        bool g = leaf[0] == 'g';
        if (argc != 1 || !all_numbers || num[0] < 0 || num[0] > (g ? 100 : 10)) {
            why_set(why, why_len, g ? "%s takes one number in 0..100" : "%s takes one number in 0..10", path);
            return false;
        }
        if (g)
            u->guidance = (float)num[0], u->set |= CLI_OSC_GUIDANCE;
        else
            u->delta = (float)num[0], u->set |= CLI_OSC_DELTA;
        return true;
    }
    if (!strcmp(leaf, "seed")) {
        if (argc != 1 || !all_numbers || num[0] < 0 || num[0] > 9007199254740991.0 || num[0] != floor(num[0])) {
            why_set(why, why_len, "%s takes one whole number >= 0", path);
            return false;
        }
        u->seed = (int64_t)num[0];
        u->set |= CLI_OSC_SEED;
        u->set &= ~(unsigned)(CLI_OSC_SEEDS | CLI_OSC_SEED_WEIGHTS);
        return true;
    }
    if (!strcmp(leaf, "t_index")) {
        if (argc < 1 || !all_numbers) {
            why_set(why, why_len, "%s takes 1..16 whole numbers", path);
            return false;
        }
        for (int i = 0; i < argc; i++) {
            if (num[i] != floor(num[i]) || num[i] < 0 || num[i] > 999) {
                why_set(why, why_len, "%s: entries are whole numbers in 0..999", path);
                return false;
            }
            u->t_index[i] = (int)num[i];
        }
        u->n_t_index = argc;
        u->set |= CLI_OSC_T_INDEX;
        return true;
    }
    if (!strcmp(leaf, "similarity")) {
        if (argc < 1 || argc > 2 || !all_numbers || num[0] < 0 || num[0] > 1 ||
            (argc == 2 && (num[1] < 0 || num[1] > 1000 || num[1] != floor(num[1])))) {
            why_set(why, why_len, "%s takes a threshold in 0..1 and optionally max skipped frames 0..1000", path);
            return false;
        }
        u->similarity = (float)num[0];
        u->max_skip = argc == 2 ? (int)num[1] : -1;
        u->set |= CLI_OSC_SIMILARITY;
        return true;
    }
    if (!strcmp(leaf, "prompts") || !strcmp(leaf, "seeds") || !strcmp(leaf, "prompt_weights") ||
        !strcmp(leaf, "seed_weights") || !strcmp(leaf, "prompt_blend") || !strcmp(leaf, "seed_blend"))
        return blend_message(path, leaf, argc, types, argv, u, why, why_len);
    if (!strncmp(leaf, "lora/", 5)) {
        char *end;
        long i = strtol(leaf + 5, &end, 10);
        if (end == leaf + 5 || strcmp(end, "/scale")) {
            why_set(why, why_len, "unknown address %s (LoRA strengths: /streamdiff/lora/N/scale)", path);
            return false;
        }
        if (i < 0 || i >= n_loras || i >= CLI_OSC_MAX_LORAS) {
            why_set(why, why_len, "%s: no such LoRA (give them with --lora; counted from 0)", path);
            return false;
        }
        if (argc != 1 || !all_numbers || num[0] < -10 || num[0] > 10) {
            why_set(why, why_len, "%s takes one number in -10..10", path);
            return false;
        }
        u->lora_scale[i] = (float)num[0];
        u->lora_set |= 1u << i;
        u->set |= CLI_OSC_LORA;
        return true;
    }
    if (!strncmp(leaf, "controlnet/", 11))
        return controlnet_message(path, leaf + 11, argc, types, argv, num, all_numbers, u, why, why_len);
    why_set(why, why_len, "unknown address %s", path);
    return false;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int decode(uint8_t *data, size_t len, int depth, int n_loras, cli_osc_update *u, int *rejected, char *why,
                  size_t why_len)
{
    if (len < 4 || len % 4 || len > OSC_MAX_PACKET) {
        why_set(why, why_len, "%s", "malformed packet (OSC packets are a non-empty multiple of 4 bytes)");
        return -1;
    }
    if (len >= 8 && !memcmp(data, "#bundle", 8)) {
        if (depth >= OSC_MAX_DEPTH || len < 16) {
            why_set(why, why_len, "%s", depth >= OSC_MAX_DEPTH ? "bundles nested too deep" : "truncated bundle");
            return -1;
        }
        int total = 0;
        for (size_t off = 16; off < len;) {
            if (len - off < 4) {
                why_set(why, why_len, "%s", "truncated bundle element");
                return -1;
            }
            uint32_t n = be32(data + off);
            off += 4;
            if (n == 0 || n > len - off) {
                why_set(why, why_len, "%s", "bundle element size out of range");
                return -1;
            }
            int k = decode(data + off, n, depth + 1, n_loras, u, rejected, why, why_len);
            if (k < 0)
                return -1;
            total += k;
            off += n;
        }
        return total;
    }
    if (data[0] != '/') {
        why_set(why, why_len, "%s", "malformed packet (no OSC address)");
        return -1;
    }
    int res = 0;
    lo_message m = lo_message_deserialise(data, len, &res);
    if (!m) {
        why_set(why, why_len, "%s", "malformed OSC message");
        return -1;
    }
    const char *path = lo_get_path(data, (ssize_t)len);
    bool ok = path && apply_message(path, m, n_loras, u, why, why_len);
    lo_message_free(m);
    if (!ok)
        ++*rejected;
    return ok ? 1 : 0;
}

int cli_osc_decode(const void *data, size_t len, int n_loras, cli_osc_update *u, int *rejected, char *why,
                   size_t why_len)
{
    if (why && why_len)
        *why = 0;
    *rejected = 0;
    if (!data || len > OSC_MAX_PACKET) {
        why_set(why, why_len, "%s", "packet too large");
        return -1;
    }
    /* liblo decodes in place: work on a copy */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, data, len);
    cli_osc_update tmp = *u;
    int n = decode(copy, len, 0, n_loras, &tmp, rejected, why, why_len);
    free(copy);
    if (n >= 0) /* a malformed packet changes nothing, even if part of a bundle was fine */
        *u = tmp;
    return n;
}

/* merges the set fields of `src` into `dst` */
static void merge(cli_osc_update *dst, const cli_osc_update *src)
{
    if (src->set & CLI_OSC_PROMPT)
        memcpy(dst->prompt, src->prompt, sizeof dst->prompt);
    if (src->set & CLI_OSC_NEGATIVE)
        memcpy(dst->negative, src->negative, sizeof dst->negative);
    if (src->set & CLI_OSC_GUIDANCE)
        dst->guidance = src->guidance;
    if (src->set & CLI_OSC_DELTA)
        dst->delta = src->delta;
    if (src->set & CLI_OSC_SEED)
        dst->seed = src->seed;
    if (src->set & CLI_OSC_T_INDEX) {
        memcpy(dst->t_index, src->t_index, sizeof dst->t_index);
        dst->n_t_index = src->n_t_index;
    }
    if (src->set & CLI_OSC_SIMILARITY) {
        dst->similarity = src->similarity;
        dst->max_skip = src->max_skip;
    }
    for (int i = 0; i < CLI_OSC_MAX_LORAS; i++)
        if (src->lora_set & (1u << i))
            dst->lora_scale[i] = src->lora_scale[i];
    dst->lora_set |= src->lora_set;
    /* blending: a list replaces a pending single prompt / seed and its weights, and the other way round */
    for (int k = 0; k < 2; k++) {
        unsigned one = k ? CLI_OSC_SEED : CLI_OSC_PROMPT, list = k ? CLI_OSC_SEEDS : CLI_OSC_PROMPTS,
                 weights = k ? CLI_OSC_SEED_WEIGHTS : CLI_OSC_PROMPT_WEIGHTS;
        if (src->set & (one | list))
            dst->set &= ~(one | list | weights);
    }
    if (src->set & CLI_OSC_PROMPTS)
        dst->prompts = src->prompts;
    if (src->set & CLI_OSC_SEEDS)
        dst->seeds = src->seeds;
    if (src->set & CLI_OSC_PROMPT_WEIGHTS) {
        memcpy(dst->prompt_weights, src->prompt_weights, sizeof dst->prompt_weights);
        dst->n_prompt_weights = src->n_prompt_weights;
    }
    if (src->set & CLI_OSC_SEED_WEIGHTS) {
        memcpy(dst->seed_weights, src->seed_weights, sizeof dst->seed_weights);
        dst->n_seed_weights = src->n_seed_weights;
    }
    if (src->set & CLI_OSC_PROMPT_BLEND)
        dst->prompt_blend = src->prompt_blend;
    if (src->set & CLI_OSC_SEED_BLEND)
        dst->seed_blend = src->seed_blend;
    for (int k = 0; k < CLI_OSC_MAX_CONTROLS; k++) { /* per net, per value: the newest */
        const cli_osc_cnet *s = &src->cnet[k];
        cli_osc_cnet *d = &dst->cnet[k];
        if (s->set & CLI_OSC_CN_SCALE)
            d->scale = s->scale;
        if (s->set & CLI_OSC_CN_WINDOW)
            d->start = s->start, d->end = s->end;
        if (s->set & CLI_OSC_CN_PREPROCESS)
            d->kind = s->kind;
        if (s->set & CLI_OSC_CN_CANNY)
            d->canny_low = s->canny_low, d->canny_high = s->canny_high;
        if (s->set & CLI_OSC_CN_THRESHOLD)
            d->threshold = s->threshold;
        d->set |= s->set;
    }
    dst->set |= src->set;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *listen_loop(void *arg)
{
    cli_osc *o = arg;
    cli_osc_update *one = &o->scratch; /* only this thread uses it */
    while (!atomic_load(&o->stop)) {
        ssize_t n = recv(o->fd, o->buf, sizeof o->buf, 0);
        if (n < 0)
            continue; /* the receive timeout: look at the stop flag */
        memset(one, 0, sizeof *one);
        int rejected = 0;
        char why[256] = "";
        int k = decode(o->buf, (size_t)n, 0, o->n_loras, one, &rejected, why, sizeof why);
        if (k > 0) {
            pthread_mutex_lock(&o->lock);
            merge(&o->pending, one);
            pthread_mutex_unlock(&o->lock);
            atomic_fetch_add(&o->accepted, k);
        }
        if (k < 0 || rejected) {
            atomic_fetch_add(&o->rejected, k < 0 ? 1 : rejected);
            double t = now_s();
            if (t - o->last_report > 1.0) { /* at most one line a second */
                o->last_report = t;
                fprintf(stderr, "osc: ignored: %s\n", why[0] ? why : "malformed packet");
            }
        }
    }
    return NULL;
}

sd_status cli_osc_start(const char *bind_addr, int port, int n_loras, cli_osc **out)
{
    *out = NULL;
    const char *host = bind_addr && *bind_addr ? bind_addr : "127.0.0.1";
    if (port < 1 || port > 65535) {
        fprintf(stderr, "osc: port %d is out of range (1..65535)\n", port);
        return SD_ERR_INVALID_ARGUMENT;
    }
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    struct addrinfo *ai = NULL;
    int r = getaddrinfo(host, ps, &hints, &ai);
    if (r != 0) {
        fprintf(stderr, "osc: '%s' is not a numeric IP address to listen on (%s)\n", host, gai_strerror(r));
        return SD_ERR_INVALID_ARGUMENT;
    }
    cli_osc *o = calloc(1, sizeof *o);
    if (!o) {
        freeaddrinfo(ai);
        return SD_ERR_OUT_OF_MEMORY;
    }
    o->n_loras = n_loras < CLI_OSC_MAX_LORAS ? n_loras : CLI_OSC_MAX_LORAS;
    o->fd = socket(ai->ai_family, SOCK_DGRAM, 0);
    if (o->fd < 0 || bind(o->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "osc: cannot listen on UDP %s:%d: %s\n", host, port, strerror(errno));
        if (o->fd >= 0)
            close(o->fd);
        freeaddrinfo(ai);
        free(o);
        return SD_ERR_IO;
    }
    freeaddrinfo(ai);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(o->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_mutex_init(&o->lock, NULL);
    if (pthread_create(&o->thread, NULL, listen_loop, o) != 0) {
        fprintf(stderr, "osc: cannot start the listener thread\n");
        pthread_mutex_destroy(&o->lock);
        close(o->fd);
        free(o);
        return SD_ERR_INTERNAL;
    }
    *out = o;
    return SD_OK;
}

bool cli_osc_take(cli_osc *o, cli_osc_update *u)
{
    if (!o)
        return false;
    pthread_mutex_lock(&o->lock);
    bool any = o->pending.set != 0;
    if (any) {
        *u = o->pending;
        memset(&o->pending, 0, sizeof o->pending);
    }
    pthread_mutex_unlock(&o->lock);
    return any;
}

void cli_osc_counts(const cli_osc *o, int64_t *accepted, int64_t *rejected)
{
    *accepted = o ? atomic_load(&o->accepted) : 0;
    *rejected = o ? atomic_load(&o->rejected) : 0;
}

void cli_osc_stop(cli_osc *o)
{
    if (!o)
        return;
    atomic_store(&o->stop, true);
    pthread_join(o->thread, NULL);
    close(o->fd);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

static void cli_osc_apply_t_index(cli_live *l, const int *t, int n, int64_t frame)
{
    char list[CLI_OSC_MAX_T * 5 + 1] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", t[i]);
    if (sd_stream_set_t_index(l->s, t, n) == SD_OK)
        fprintf(stderr, "osc: t-index %s (from frame %lld on)\n", list, (long long)frame);
    else
        fprintf(stderr, "osc: t-index %s refused: %s\n", list, sd_last_error());
}

/* A ControlNet update onto settings `c` (the stream's now): what it sets replaces those values. */
void cli_osc_cnet_merge(const cli_osc_cnet *u, sd_stream_control *c)
{
    if (u->set & CLI_OSC_CN_SCALE)
        c->scale = u->scale;
    if (u->set & CLI_OSC_CN_WINDOW)
        c->guidance_start = u->start, c->guidance_end = u->end;
    if (u->set & CLI_OSC_CN_PREPROCESS)
        c->preprocess.kind = u->kind;
    if (u->set & CLI_OSC_CN_CANNY)
        c->preprocess.canny_low = u->canny_low, c->preprocess.canny_high = u->canny_high;
    if (u->set & CLI_OSC_CN_THRESHOLD)
        c->preprocess.threshold = u->threshold;
}

static void cli_osc_apply_controlnets(const cli_osc_update *u, cli_live *l, int64_t frame)
{
    for (int k = 0; k < CLI_OSC_MAX_CONTROLS; k++) {
        if (!u->cnet[k].set)
            continue;
        sd_stream_control c;
        sd_status st = sd_stream_get_control(l->s, k, &c);
        if (st == SD_OK) {
            cli_osc_cnet_merge(&u->cnet[k], &c);
            st = sd_stream_set_control(l->s, k, &c);
        }
        if (st == SD_OK)
            fprintf(stderr, "osc: ControlNet %d: scale %g, guidance %g..%g, %s (canny %d..%d, threshold %d) (from frame "
                    "%lld on)\n", k, (double)c.scale, (double)c.guidance_start, (double)c.guidance_end,
                    sd_preprocess_name(c.preprocess.kind), c.preprocess.canny_low, c.preprocess.canny_high,
                    c.preprocess.threshold, (long long)frame);
        else
            fprintf(stderr, "osc: ControlNet %d refused: %s\n", k, sd_last_error());
    }
}

void cli_osc_apply(const cli_osc_update *u, cli_live *l, int64_t frame)
{
    cli_osc_apply_blend(u, l, frame); /* prompts, negative prompt, seeds */
    if (u->set & (CLI_OSC_GUIDANCE | CLI_OSC_DELTA)) {
        float g = u->set & CLI_OSC_GUIDANCE ? u->guidance : l->guidance;
        float d = u->set & CLI_OSC_DELTA ? u->delta : l->delta;
        if (sd_stream_set_guidance(l->s, g, d) == SD_OK) {
            l->guidance = g, l->delta = d;
            fprintf(stderr, "osc: guidance %g, delta %g (from frame %lld on)\n", (double)g, (double)d, (long long)frame);
        } else {
            fprintf(stderr, "osc: guidance/delta refused: %s\n", sd_last_error());
        }
    }
    if (u->set & CLI_OSC_SIMILARITY) {
        int ms = u->max_skip >= 0 ? u->max_skip : l->max_skip;
        if (sd_stream_set_similarity_filter(l->s, u->similarity, ms) == SD_OK) {
            l->similarity = u->similarity, l->max_skip = ms;
            fprintf(stderr, "osc: similarity filter %g, at most %d skipped in a row\n", (double)u->similarity, ms);
        } else {
            fprintf(stderr, "osc: similarity filter refused: %s\n", sd_last_error());
        }
    }
    if ((u->set & CLI_OSC_LORA) && l->n_loras) {
        float old[CLI_OSC_MAX_LORAS];
        for (int i = 0; i < l->n_loras && i < CLI_OSC_MAX_LORAS; i++) {
            old[i] = l->loras[i].scale;
            if (u->lora_set & (1u << i))
                l->loras[i].scale = u->lora_scale[i];
        }
        sd_lora_options lo = {.allow_unmatched = l->lora_allow_unmatched};
        /* the stream re-encodes its prompt with the new text-encoder weights */
        if (sd_model_apply_loras_ex(l->m, l->loras, l->n_loras, &lo) == SD_OK && cli_live_set_prompts(l) == SD_OK) {
            for (int i = 0; i < l->n_loras && i < CLI_OSC_MAX_LORAS; i++)
                if (u->lora_set & (1u << i))
                    fprintf(stderr, "osc: LoRA %d (%s) strength %g\n", i, l->loras[i].path, (double)l->loras[i].scale);
        } else {
            fprintf(stderr, "osc: LoRA strengths refused: %s\n", sd_last_error());
            for (int i = 0; i < l->n_loras && i < CLI_OSC_MAX_LORAS; i++)
                l->loras[i].scale = old[i];
        }
    }
    if (u->set & CLI_OSC_T_INDEX)
        cli_osc_apply_t_index(l, u->t_index, u->n_t_index, frame);
    if (u->set & CLI_OSC_CONTROLNET)
        cli_osc_apply_controlnets(u, l, frame);
}
