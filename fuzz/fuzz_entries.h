/* The fuzzed entry points, shared by the libFuzzer targets (fuzz/fuzz_*.c)
 * and the regression replay test (tests/test_regress.c), so that a crash
 * input saved under tests/data/regress/<target>/ runs through exactly the
 * code the fuzzer ran.
 *
 * Every entry takes arbitrary bytes and must return normally: a library
 * error status is the expected outcome for bad input; a crash, a sanitizer
 * report, a leak or a hang is a bug. Each returns 0 (libFuzzer's "keep
 * going"); the status is only used to sanity-check the error message.
 *
 * Targets (name = fuzz/corpus/<name>/ = tests/data/regress/<name>/):
 *   safetensors  sd_safetensors_parse on memory, then every accessor on
 *                every tensor of a file that parsed
 *   config       sd_config_parse, then the UNet / CLIP / VAE / TAESD /
 *                scheduler (auto and every kind) config readers, and what
 *                consumes an accepted config (UNet tensor list, scheduler
 *                tables and a 4-step schedule)
 *   tokenizer    the CLIP BPE tokenizer (tests/data/tokenizer/sd15) on the
 *                bytes as text (any UTF-8, invalid UTF-8, NUL bytes), both
 *                cleaning modes
 *   image        sd_rgb_decode (PNG / JPEG), then a small resize of what
 *                decoded
 *   checkpoint   the input is a safetensors JSON header; a zero-filled data
 *                section as large as the header's largest end offset (at
 *                most 16 MiB) is appended, then sd_ckpt_detect, sd_ckpt_map
 *                into three weight sets, the derived configs, and the UNet /
 *                VAE / text-encoder loaders on the mapped tensors
 *   lora         the input is a LoRA .safetensors file, applied to the tiny SD1.5
 *                model (tests/data/models/tiny-sd15) through the public API
 *                (kohya / diffusers / PEFT key parsing, shape checks, fusing),
 *                strict and with allow_unmatched; removing it must always work
 *   server_message  a WebSocket text message of `streamdiff serve`
 *                (srv_parse_message: the client's JSON control messages)
 *   server_frame    a WebSocket binary message (srv_check_frame, then the
 *                decode the server runs): an accepted frame must decode to at
 *                most the pixels the pre-check allowed
 *
 * The tokenizer vocabulary comes from $SD_FUZZ_TOKENIZER, else
 * $SD_TEST_DATA/tokenizer/sd15, else SD_FUZZ_TOKENIZER_DIR (compile time);
 * the LoRA target's model from $SD_TEST_DATA/models/tiny-sd15, else
 * SD_FUZZ_MODEL_DIR.
 *
 * (The WebSocket framing itself - opcodes, masking, fragments - is done by
 * libwebsockets, not by streamdiff code; the server caps what it reassembles
 * at the text/frame limits before these parsers run.)
 */
#ifndef SD_FUZZ_ENTRIES_H
#define SD_FUZZ_ENTRIES_H

#include "io/config.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/clip.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "sched/scheduler.h"
#include "server/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A failing call must leave a message: FZ(call) clears the thread's error,
 * makes the call and aborts when it failed silently. */
static inline sd_status sd_fuzz_checked(sd_status s, const char *what)
{
    if (s != SD_OK && sd_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz: %s returned %s without an error message\n", what, sd_status_name(s));
        abort();
    }
    return s;
}
#define FZ(call) (sd_clear_error(), sd_fuzz_checked((call), #call))

/* ---------------------------------------------------------------- safetensors */

static inline int sd_fuzz_safetensors(const uint8_t *data, size_t len)
{
    sd_safetensors *st = NULL;
    sd_status s = FZ(sd_safetensors_parse(data, len, "fuzz.safetensors", &st));
    if (s != SD_OK)
        return 0;
    (void)sd_st_meta(st, "format");
    for (size_t i = 0; i < st->n_tensors; i++) {
        const sd_st_tensor *t = &st->tensors[i];
        if (sd_st_find(st, t->name) != t)
            abort(); /* names are unique and sorted: find must return this very entry */
        double acc = 0;
        for (size_t k = 0; k < t->numel && k < 64; k++)
            acc += sd_st_get(t, k);
        if (t->numel)
            acc += sd_st_get(t, t->numel - 1);
        (void)acc;
        if (t->numel <= ((size_t)1 << 20)) {
            float *f = malloc(t->numel * sizeof(float) + 4);
            if (f) {
                (void)FZ(sd_st_to_f32(t, f));
                free(f);
            }
        }
    }
    if (st->metadata)
        for (cJSON *e = st->metadata->child; e; e = e->next)
            (void)sd_st_meta(st, e->string);
    sd_safetensors_close(st);
    return 0;
}

/* ---------------------------------------------------------------- config */

static inline void sd_fuzz_unet_tensor(void *user, const char *name, const int64_t *shape, int ndim)
{
    size_t *n = user;
    (void)name;
    (void)shape;
    (void)ndim;
    (*n)++;
}

static inline int sd_fuzz_config(const uint8_t *data, size_t len)
{
    sd_config c;
    sd_status s = FZ(sd_config_parse((const char *)data, len, "fuzz.json", &c));
    if (s != SD_OK)
        return 0;

    sd_unet_config u;
    s = FZ(sd_unet_config_from(&c, &u));
    if (s == SD_OK) {
        size_t n = 0;
        (void)FZ(sd_unet_list_tensors(&u, sd_fuzz_unet_tensor, &n));
    }
    sd_clip_config cl;
    (void)FZ(sd_clip_config_from(&c, &cl));
    sd_vae_config v;
    if (FZ(sd_vae_config_from(&c, &v)) == SD_OK)
        (void)sd_vae_downscale(&v);
    sd_taesd_config tc;
    if (FZ(sd_taesd_config_from(&c, &tc)) == SD_OK)
        (void)sd_taesd_downscale(&tc);
    for (int kind = -1; kind < SD_SCHED_KIND_COUNT; kind++) {
        sd_sched_config sc;
        s = FZ(sd_sched_config_from_json(&c, kind, &sc));
        if (s != SD_OK)
            continue;
        sd_scheduler *sch = NULL;
        s = FZ(sd_scheduler_create(&sc, &sch));
        if (s != SD_OK)
            continue;
        s = FZ(sd_scheduler_set_timesteps(sch, 4, 1.0, NULL, 0));
        if (s == SD_OK) {
            float x[4] = {0.5f, -0.5f, 1.0f, 0.0f}, eps[4] = {0.1f, 0.2f, -0.3f, 0.0f}, nz[4] = {1, -1, 0.5f, 0};
            float prev[4], den[4];
            int nt = sd_scheduler_num_timesteps(sch);
            for (int i = 0; i < nt; i++) {
                (void)FZ(sd_scheduler_scale_model_input(sch, i, x, prev, 4));
                s = FZ(sd_scheduler_step(sch, i, eps, x, nz, prev, den, 4));
                if (s != SD_OK)
                    break;
                memcpy(x, prev, sizeof x);
            }
        }
        sd_scheduler_free(sch);
    }
    sd_config_free(&c);
    return 0;
}

/* ---------------------------------------------------------------- tokenizer */

#ifndef SD_FUZZ_TOKENIZER_DIR
#define SD_FUZZ_TOKENIZER_DIR "tests/data/tokenizer/sd15"
#endif

static sd_tokenizer *sd_fuzz_tok;

/* Loads the tokenizer once; false (with a message) when its files are missing. */
static inline bool sd_fuzz_tokenizer_init(void)
{
    if (sd_fuzz_tok)
        return true;
    char dir[4096];
    const char *env = getenv("SD_FUZZ_TOKENIZER"), *td = getenv("SD_TEST_DATA");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s", env);
    else if (td && *td)
        snprintf(dir, sizeof dir, "%s/tokenizer/sd15", td);
    else
        snprintf(dir, sizeof dir, "%s", SD_FUZZ_TOKENIZER_DIR);
    if (sd_tokenizer_load(dir, &sd_fuzz_tok) != SD_OK) {
        fprintf(stderr, "fuzz: cannot load the tokenizer from %s: %s\n", dir, sd_last_error());
        return false;
    }
    return true;
}

static inline void sd_fuzz_tokenizer_done(void)
{
    sd_tokenizer_free(sd_fuzz_tok);
    sd_fuzz_tok = NULL;
}

static inline int sd_fuzz_tokenizer(const uint8_t *data, size_t len)
{
    if (!sd_fuzz_tokenizer_init())
        abort();
    int32_t ids[77], few[8];
    for (int mode = 0; mode < 2; mode++) {
        sd_tok_clean m = mode ? SD_TOK_CLEAN_BASIC : SD_TOK_CLEAN_FTFY;
        int nv = -1, ntr = -1;
        sd_status s = FZ(sd_tokenizer_encode_n(sd_fuzz_tok, (const char *)data, len, m, ids, 77, &nv, &ntr));
        if (s == SD_OK) {
            int eos = sd_tokenizer_eos_id(sd_fuzz_tok), vocab = sd_tokenizer_vocab_size(sd_fuzz_tok);
            if (nv < 2 || nv > 77 || ntr < 0 || ids[0] != sd_tokenizer_bos_id(sd_fuzz_tok) || ids[nv - 1] != eos)
                abort(); /* encode's contract: [BOS, tokens..., EOS, pad...] */
            for (int i = 0; i < 77; i++)
                if (ids[i] < 0 || ids[i] >= vocab)
                    abort();
        }
        int n = -1;
        s = FZ(sd_tokenizer_tokenize_n(sd_fuzz_tok, (const char *)data, len, m, few, (int)SD_ARRAY_LEN(few), &n));
        if (s == SD_OK && n < 0)
            abort();
    }
    /* the NUL-terminated variant on the prefix before the first NUL */
    char *z = malloc(len + 1);
    if (z) {
        memcpy(z, data, len);
        z[len] = 0;
        int nv, ntr;
        (void)FZ(sd_tokenizer_encode(sd_fuzz_tok, z, SD_TOK_CLEAN_FTFY, ids, 77, &nv, &ntr));
        free(z);
    }
    return 0;
}

/* ---------------------------------------------------------------- image */

static inline int sd_fuzz_image(const uint8_t *data, size_t len)
{
    sd_rgb img = {0};
    sd_status s = FZ(sd_rgb_decode(data, len, "fuzz-image", &img));
    if (s != SD_OK)
        return 0;
    if (img.width <= 0 || img.height <= 0 || img.width > SD_IMAGE_MAX_SIDE || img.height > SD_IMAGE_MAX_SIDE ||
        !img.data)
        abort();
    sd_rgb small = {0};
    (void)FZ(sd_rgb_fit(&img, 16, 8, &small));
    sd_rgb_free(&small);
    sd_rgb_free(&img);
    return 0;
}

/* ---------------------------------------------------------------- checkpoint */

#define SD_FUZZ_CKPT_MAX_DATA ((size_t)16 << 20)

static sd_backend *sd_fuzz_be;

static inline void sd_fuzz_checkpoint_done(void)
{
    if (sd_fuzz_be)
        sd_backend_destroy(sd_fuzz_be);
    sd_fuzz_be = NULL;
}

/* Largest data_offsets end in a header (0 when there is none or it is not a number). */
static inline size_t sd_fuzz_header_data_size(const cJSON *h)
{
    size_t max = 0;
    for (const cJSON *e = h ? h->child : NULL; e; e = e->next) {
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        const cJSON *end = cJSON_IsArray(off) ? cJSON_GetArrayItem(off, 1) : NULL;
        if (cJSON_IsNumber(end) && end->valuedouble > 0 && end->valuedouble <= (double)SD_FUZZ_CKPT_MAX_DATA &&
            (size_t)end->valuedouble > max)
            max = (size_t)end->valuedouble;
    }
    return max;
}

static inline sd_status sd_fuzz_cfg_wrap(cJSON *j, sd_config *c)
{
    memset(c, 0, sizeof *c);
    if (!j)
        return SD_ERR_FORMAT;
    c->root = j;
    c->path = "derived";
    c->owner = true;
    return SD_OK;
}

static inline int sd_fuzz_checkpoint(const uint8_t *data, size_t len)
{
    if (!sd_fuzz_be && sd_backend_cpu_create(1, &sd_fuzz_be) != SD_OK)
        abort();
    cJSON *h = cJSON_ParseWithLength((const char *)data, len);
    size_t dlen = sd_fuzz_header_data_size(h);
    cJSON_Delete(h);
    uint8_t *buf = calloc(1, 8 + len + dlen);
    if (!buf)
        return 0;
    uint64_t n = len;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, data, len);
    sd_safetensors *st = NULL;
    sd_status s = FZ(sd_safetensors_parse(buf, 8 + len + dlen, "fuzz-ckpt.safetensors", &st));
    sd_arch arch = SD_ARCH_UNKNOWN;
    if (s == SD_OK && (s = FZ(sd_ckpt_detect(st, &arch))) == SD_OK && arch != SD_ARCH_SDXL) {
        (void)sd_arch_name(arch);
        (void)sd_ckpt_prediction_type(st, arch, NULL);
        char **names = NULL;
        size_t nn = 0;
        if (FZ(sd_ckpt_unknown_keys(st, arch, &names, &nn)) == SD_OK) {
            for (size_t i = 0; i < nn; i++)
                free(names[i]);
            free(names);
        }
        sd_weights wu, wv, wt, wt2;
        /* F16 kept as F16: zero-copy views of the (zero) data instead of per-element conversion, so the
         * executions go to the mapping and the shape checks */
        sd_weights_init(&wu, sd_fuzz_be, "unet", SD_F16);
        sd_weights_init(&wv, sd_fuzz_be, "vae", SD_F16);
        sd_weights_init(&wt, sd_fuzz_be, "text", SD_F16);
        sd_weights_init(&wt2, sd_fuzz_be, "text2", SD_F16);
        sd_ckpt_info info;
        memset(&info, 0, sizeof info);
        /* each component on its own, so a missing one does not hide the others (text2: SDXL's second encoder) */
        sd_weights *ws[SD_CKPT_COMPONENTS] = {&wu, &wv, &wt, &wt2};
        bool mapped[SD_CKPT_COMPONENTS];
        for (int k = 0; k < SD_CKPT_COMPONENTS; k++) {
            sd_weights *one[SD_CKPT_COMPONENTS] = {NULL, NULL, NULL, NULL};
            one[k] = ws[k];
            s = FZ(sd_ckpt_map_all(st, arch, one, &info));
            sd_ckpt_info_free(&info);
            mapped[k] = s == SD_OK && FZ(sd_weights_finalize(ws[k])) == SD_OK;
        }
        sd_config c;
        if (sd_fuzz_cfg_wrap(sd_ckpt_unet_config(st, arch), &c) == SD_OK) {
            sd_unet_config ucfg;
            sd_unet *unet = NULL;
            if (FZ(sd_unet_config_from(&c, &ucfg)) == SD_OK && mapped[0] && FZ(sd_unet_load(&wu, &ucfg, &unet)) == SD_OK)
                sd_unet_free(unet);
            sd_config_free(&c);
        }
        if (sd_fuzz_cfg_wrap(sd_ckpt_vae_config(st, arch), &c) == SD_OK) {
            sd_vae_config vcfg;
            sd_vae *vae = NULL;
            if (FZ(sd_vae_config_from(&c, &vcfg)) == SD_OK && mapped[1] && FZ(sd_vae_load(&wv, &vcfg, &vae)) == SD_OK)
                sd_vae_free(vae);
            sd_config_free(&c);
        }
        for (int k = 2; k < SD_CKPT_COMPONENTS; k++) {
            if (sd_fuzz_cfg_wrap(k == 2 ? sd_ckpt_text_config(st, arch) : sd_ckpt_text2_config(st, arch), &c) != SD_OK)
                continue;
            sd_clip_config ccfg;
            sd_clip *clip = NULL;
            if (FZ(sd_clip_config_from(&c, &ccfg)) == SD_OK && mapped[k] &&
                FZ(sd_clip_load(ws[k], &ccfg, &clip)) == SD_OK)
                sd_clip_free(clip);
            sd_config_free(&c);
        }
        if (sd_fuzz_cfg_wrap(sd_ckpt_scheduler_config(st, arch), &c) == SD_OK) {
            sd_sched_config sc;
            (void)FZ(sd_sched_config_from_json(&c, -1, &sc));
            sd_config_free(&c);
        }
        sd_weights_free(&wu);
        sd_weights_free(&wv);
        sd_weights_free(&wt);
        sd_weights_free(&wt2);
    }
    sd_safetensors_close(st);
    free(buf);
    return 0;
}

/* ---------------------------------------------------------------- lora */

#ifndef SD_FUZZ_MODEL_DIR
#define SD_FUZZ_MODEL_DIR "tests/data/models/tiny-sd15"
#endif

static sd_model *sd_fuzz_model;
static char sd_fuzz_lora_file[512];

static inline bool sd_fuzz_lora_init(void)
{
    if (sd_fuzz_model)
        return true;
    char dir[4096];
    const char *td = getenv("SD_TEST_DATA");
    if (td && *td)
        snprintf(dir, sizeof dir, "%s/models/tiny-sd15", td);
    else
        snprintf(dir, sizeof dir, "%s", SD_FUZZ_MODEL_DIR);
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 1;
    if (sd_model_load(dir, &mp, &sd_fuzz_model) != SD_OK) {
        fprintf(stderr, "fuzz: cannot load the model %s: %s\n", dir, sd_last_error());
        sd_fuzz_model = NULL;
        return false;
    }
    const char *tmp = sd_dir_exists("/dev/shm") ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(sd_fuzz_lora_file, sizeof sd_fuzz_lora_file, "%s/sd_fuzz_lora_%ld.safetensors", tmp, (long)getpid());
    return true;
}

static inline void sd_fuzz_lora_done(void)
{
    sd_model_free(sd_fuzz_model);
    sd_fuzz_model = NULL;
    if (sd_fuzz_lora_file[0])
        unlink(sd_fuzz_lora_file);
}

static inline int sd_fuzz_lora(const uint8_t *data, size_t len)
{
    if (!sd_fuzz_lora_init())
        abort();
    if (sd_write_file(sd_fuzz_lora_file, data, len) != SD_OK)
        abort();
    for (int allow = 0; allow < 2; allow++) {
        sd_lora_spec spec = {sd_fuzz_lora_file, allow ? 0.5f : 1.0f};
        sd_lora_options opt = {.allow_unmatched = allow != 0};
        (void)FZ(sd_model_apply_loras_ex(sd_fuzz_model, &spec, 1, &opt));
    }
    /* back to the base weights: must always succeed */
    if (FZ(sd_model_apply_loras(sd_fuzz_model, NULL, 0)) != SD_OK) {
        fprintf(stderr, "fuzz: removing the LoRAs failed: %s\n", sd_last_error());
        abort();
    }
    return 0;
}

/* ---------------------------------------------------------------- server */

static inline int sd_fuzz_server_message(const uint8_t *data, size_t len)
{
    srv_limits lim;
    srv_limits_default(&lim);
    srv_config cur, next;
    srv_config_default(&cur, 512, 512);
    cur.n_cnet = 2; /* two ControlNets, so that "controlnet" messages reach their parser */
    for (int k = 0; k < cur.n_cnet; k++) {
        cur.cnet[k] = (srv_cnet){1.0f, 0.0f, 1.0f, {0}};
        sd_preprocess_default_params(&cur.cnet[k].pp);
    }
    memset(&next, 0x5a, sizeof next);
    srv_msg msg;
    srv_error err;
    memset(&err, 0, sizeof err);
    if (srv_parse_message((const char *)data, len, &lim, &cur, &msg, &next, &err)) {
        if (msg.type == SRV_MSG_CONTROLNET) { /* an accepted one holds settings the library takes */
            for (int k = 0; k < next.n_cnet; k++) {
                sd_stream_control sc;
                srv_cnet_to_stream(&next.cnet[k], &sc);
                if (next.n_cnet != cur.n_cnet || sd_stream_control_validate(&sc) != SD_OK)
                    abort();
            }
            char *js = srv_json_print(srv_config_json(&next));
            free(js);
        }
        if (msg.type == SRV_MSG_CONFIG) { /* what the server does with an accepted config */
            (void)srv_config_diff(&cur, &next);
            sd_stream_params sp;
            srv_config_stream_params(&next, &sp);
            if (strlen(next.prompt) > lim.max_prompt_bytes || strlen(next.negative_prompt) > lim.max_prompt_bytes ||
                next.width > lim.max_size || next.height > lim.max_size || next.n_t_index > lim.max_steps)
                abort(); /* an accepted config must respect the limits */
            char *js = srv_json_print(srv_config_json(&next));
            free(js);
        }
    } else {
        if (!err.code || !err.message[0])
            abort(); /* a rejection says why */
        char *js = srv_error_json(&err);
        free(js);
    }
    (void)srv_utf8_valid(data, len);
    return 0;
}

static inline int sd_fuzz_server_frame(const uint8_t *data, size_t len)
{
    srv_limits lim;
    srv_limits_default(&lim);
    lim.max_frame_pixels = 512 * 512; /* small, so that the decoded-size invariant is exercised */
    int w = 0, h = 0;
    srv_error err;
    memset(&err, 0, sizeof err);
    if (!srv_check_frame(data, len, &lim, &w, &h, &err)) {
        if (!err.code || !err.message[0])
            abort();
        return 0;
    }
    sd_rgb img = {0};
    if (FZ(sd_rgb_decode(data, len, "frame", &img)) == SD_OK) {
        if ((int64_t)img.width * img.height > lim.max_frame_pixels) {
            fprintf(stderr, "fuzz: the frame pre-check said %dx%d, the decoder made %dx%d\n", w, h, img.width,
                    img.height);
            abort(); /* a tiny file got past the size check */
        }
        sd_rgb_free(&img);
    }
    return 0;
}

/* ---------------------------------------------------------------- registry */

typedef int (*sd_fuzz_fn)(const uint8_t *data, size_t len);

typedef struct sd_fuzz_target {
    const char *name;
    sd_fuzz_fn fn;
} sd_fuzz_target;

#endif
