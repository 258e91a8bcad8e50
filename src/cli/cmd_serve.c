/* `streamdiff serve`: the real-time server and web demo (src/server/).
 *
 * Exit codes: 0 stopped by SIGINT/SIGTERM or --max-runtime, 1 a runtime
 * failure (model, listening socket), 2 a usage error. */
#include "cli/cli.h"
#ifdef SD_HAVE_SERVER
#include "server/server.h"
#ifdef SD_HAVE_OSC
#include "cli/osc.h"
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    srv_options d;
    srv_options_default(&d);
    fprintf(f,
            "streamdiff serve — real-time img2img / txt2img server with a web page\n\n"
            "usage: streamdiff serve -m MODEL [--host 127.0.0.1] [--port 8080] [--token T] [options]\n\n"
            "Serves the demo page at http://HOST:PORT/, the WebSocket endpoint /ws (protocol:\n"
            "docs/protocol.md), GET /health and GET /metrics (Prometheus text). Each connected\n"
            "browser gets its own stream; up to --max-sessions are served at once (fairly, the least\n"
            "recently served first; their frames batched into one UNet call, see --max-batch), further\n"
            "clients wait in a queue and are told their position.\n\n"
            "model:\n"
            "  -m, --model PATH|ID        diffusers folder, single-file .safetensors or HF id in the local cache\n"
            "      --taesd DIR|ID         TAESD for fast encode/decode (recommended for real time)\n"
            "      --config-dir DIR       configs for a single-file checkpoint\n"
            "      --backend cpu|cuda     compute backend (default: cpu)\n"
            "  -t, --threads N            CPU threads, 0 = all cores (default: 0)\n"
            "      --precision P          CPU compute: auto (default: bf16 where the CPU has AMX, or\n"
            "                             AVX512-BF16 faster than its fp32 FMA, else fp32), fp32, bf16 or\n"
            "                             int8 (experimental: W8A8 linears/convs on AMX-INT8 or AVX512-VNNI,\n"
            "                             else as bf16)\n"
            "      --lora PATH[:SCALE]    fuse a LoRA / LoCon with strength SCALE (-%g..%g, default 1) at start;\n"
            "                             repeatable (up to %d), e.g. an LCM-LoRA plus a style LoRA. Clients can\n"
            "                             change the scales live (\"lora\" message, a slider each on the page);\n"
            "                             they apply to every client\n"
            "      --lora-allow-unmatched only warn about LoRA tensors that match no layer of the model\n"
            "      --control NET:IMAGE[:SCALE[:START:END]]\n"
            "                             a ControlNet (folder, .safetensors or HF id) for every client's stream;\n"
            "                             IMAGE 'input' = made from each client frame (img2img; a txt2img stream\n"
            "                             leaves it out), or a PNG/JPEG file (resized to the stream size). Each client\n"
            "                             sets its own scale, guidance window and preprocessor live (\"controlnet\"\n"
            "                             message; sliders on the page). Repeatable (up to %d)\n"
            "      --control-preprocess P none | canny | softedge | scribble | invert | tile: how frames become\n"
            "                             control images at start (once for all, or once per --control)\n"
            "      --canny-low N, --canny-high N, --scribble-threshold N   their start thresholds\n"
            "\nnetwork:\n"
            "      --host ADDR            address to bind (default: %s; anything else without --token warns)\n"
            "      --port N               TCP port, 0 = any free port (printed) (default: %d)\n"
            "      --token T              required as ?token=T on /ws and /metrics (or Authorization: Bearer T);\n"
            "                             also read from $STREAMDIFF_TOKEN\n"
            "      --any-origin           accept WebSocket connections from pages of other origins\n"
            "\nstream defaults (each client can change them, see docs/protocol.md):\n"
            "  -W, --width N, -H, --height N   stream size (default: the model's native size)\n"
            "  -p, --prompt TEXT          initial prompt (default: \"\")\n"
            "      --t-index-list A,B,..  denoising steps into the 50-step LCM schedule (default: 32,45)\n"
            "      --cfg-type T           none | full | self | initialize (default: self)\n"
            "      --guidance X           guidance scale (default: %g)\n"
            "      --delta X              residual-CFG delta (default: %g)\n"
            "      --seed N               noise seed (default: %llu)\n"
            "      --mode img2img|txt2img (default: img2img)\n"
            "\nlimits:\n"
            "      --max-sessions N       clients served at once, each with its own stream (default: %d)\n"
            "      --max-batch N          frames of different clients run in one batched UNet call (clients with\n"
            "                             the same stream size; each still gets exactly its own output). A frame\n"
            "                             waits at most one call while the clients with frames fit into N.\n"
            "                             1 = every frame alone (default: --max-sessions)\n"
            "      --max-clients N        connections including queued ones (default: %d)\n"
            "      --max-frame-bytes N    largest binary frame (default: %zu)\n"
            "      --max-text-bytes N     largest JSON message (default: %zu)\n"
            "      --max-prompt-bytes N   longest prompt (default: %zu, at most %d)\n"
            "      --max-frame-pixels N   largest decoded input frame (default: %lld)\n"
            "      --max-size N           largest stream width/height a client may ask for (default: %d)\n"
            "      --max-steps N          longest t_index_list (default: %d)\n"
            "      --max-fps X            output frames per second and client, 0 = no cap (default: %g)\n"
            "\nlive control:\n"
            "      --osc-port N           listen for OSC on UDP port N (TouchDesigner, Max, VJ tools): the same\n"
            "                             addresses as `streamdiff stream --osc-port` (docs/osc.md), applied to\n"
            "                             every client (each is told) and to clients that connect later\n"
            "      --osc-bind ADDR        the address OSC listens on (default: 127.0.0.1, this machine only)\n"
            "\nother:\n"
            "      --web-dir DIR          serve the page from DIR instead of the copy built into the binary\n"
            "      --max-runtime S        stop after S seconds (tests) (default: run until Ctrl-C)\n"
            "      --tiny                 tell the page the model is a test model (automatic for tiny models)\n"
            "  -v, --verbose              log connections (-v -v: also libwebsockets notices)\n"
            "  -h, --help                 this help\n\n"
            "example:\n"
            "  streamdiff serve -m stabilityai/sd-turbo --taesd madebyollin/taesd -W 512 -H 512\n",
            SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX, SRV_MAX_LORAS, SRV_MAX_CONTROLS, d.host, d.port, (double)d.defaults.guidance_scale, (double)d.defaults.delta,
            (unsigned long long)d.defaults.seed, d.max_sessions, d.max_clients, d.limits.max_frame_bytes,
            d.limits.max_text_bytes, d.limits.max_prompt_bytes, SRV_PROMPT_MAX, (long long)d.limits.max_frame_pixels,
            d.limits.max_size, d.limits.max_steps, d.limits.max_fps);
}

#define BAD(...)                                         \
    do {                                                 \
        fprintf(stderr, "streamdiff serve: " __VA_ARGS__); \
        fprintf(stderr, "\n(see streamdiff serve --help)\n"); \
        return 2;                                        \
    } while (0)

/* --lora values (paths malloc'd by cli_parse_lora; cli_serve frees them on every way out) and the ControlNets
 * (--control; the nets are freed before the model: free_model) */
typedef struct serve_loras {
    sd_lora_spec v[SRV_MAX_LORAS];
    int n;
    bool allow_unmatched;
    cli_controls ctl;
    char names[SRV_MAX_CONTROLS][64];
    const char *name_ptr[SRV_MAX_CONTROLS];
} serve_loras;

static void free_model(serve_loras *L, sd_model *m)
{
    cli_controls_free(&L->ctl);
    sd_model_free(m);
}

/* The page's name of a ControlNet: the last component of its path or id, printable ASCII ('?' else). */
static void control_name(const char *path, char *out, size_t cap)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t o = 0;
    for (size_t i = start; i < end && o + 1 < cap; i++)
        out[o++] = path[i] >= 0x20 && path[i] < 0x7f ? path[i] : '?';
    out[o] = 0;
}

/* The ControlNets for the server: loaded for m, and each one's start settings in the client defaults. */
static int serve_controls(serve_loras *L, sd_model *m, srv_options *o, srv_config *def)
{
    cli_controls *cs = &L->ctl;
    if (!cs->n)
        return 0;
    int rc = cli_controls_load_nets(cs, "serve", m, def->width, def->height);
    if (rc)
        return rc;
    def->n_cnet = cs->n;
    for (int k = 0; k < cs->n; k++) {
        def->cnet[k] = (srv_cnet){cs->scale[k], cs->start[k], cs->end[k], cli_controls_pp(cs, k)};
        control_name(cs->net[k], L->names[k], sizeof L->names[k]);
        L->name_ptr[k] = L->names[k];
        fprintf(stderr, "streamdiff serve: ControlNet %d: %s, %s, scale %g\n", k, cs->net[k],
                cs->ctl[k].image ? cs->image[k] : "from each client frame", (double)cs->scale[k]);
    }
    o->controls = cs->ctl;
    o->control_names = L->name_ptr;
    o->n_controls = cs->n;
    return 0;
}

#ifdef SD_HAVE_OSC
/* The blending part of an OSC update (docs/osc.md) as a server control update; a prompt longer than the
 * server's blended-prompt cap drops the list with a message. */
static void osc_blend_control(const cli_osc_update *u, srv_control *c)
{
    static const unsigned map[][2] = {{CLI_OSC_PROMPTS, SRV_CTL_PROMPTS}, {CLI_OSC_PROMPT_WEIGHTS, SRV_CTL_PROMPT_WEIGHTS},
                                      {CLI_OSC_PROMPT_BLEND, SRV_CTL_PROMPT_BLEND}, {CLI_OSC_SEEDS, SRV_CTL_SEEDS},
                                      {CLI_OSC_SEED_WEIGHTS, SRV_CTL_SEED_WEIGHTS}, {CLI_OSC_SEED_BLEND, SRV_CTL_SEED_BLEND}};
    for (size_t i = 0; i < SD_ARRAY_LEN(map); i++)
        c->set |= u->set & map[i][0] ? map[i][1] : 0;
    srv_blend *b = &c->blend;
    b->prompt_blend = u->prompt_blend, b->seed_blend = u->seed_blend;
    const cli_blend_list *pl = u->set & CLI_OSC_PROMPTS ? &u->prompts : NULL, *sl = u->set & CLI_OSC_SEEDS ? &u->seeds : NULL;
    b->n_prompts = pl ? pl->n : u->n_prompt_weights;
    b->n_seeds = sl ? sl->n : u->n_seed_weights;
    for (int i = 0; i < b->n_prompts; i++) {
        if (pl && strlen(pl->text[i]) > SRV_BLEND_PROMPT_MAX) {
            fprintf(stderr, "streamdiff serve: osc: /streamdiff/prompts refused: prompt %d is longer than %d bytes\n", i,
                    SRV_BLEND_PROMPT_MAX);
            c->set &= ~(unsigned)(SRV_CTL_PROMPTS | SRV_CTL_PROMPT_WEIGHTS);
            break;
        }
        if (pl)
            snprintf(b->prompts[i], sizeof b->prompts[i], "%s", pl->text[i]);
        b->prompt_weights[i] = pl ? pl->weight[i] : u->prompt_weights[i];
    }
    for (int i = 0; i < b->n_seeds; i++) {
        b->seeds[i] = sl ? sl->seed[i] : 0;
        b->seed_weights[i] = sl ? sl->weight[i] : u->seed_weights[i];
    }
}

/* srv_options.control: the OSC updates since the last poll, as a server control update */
static bool osc_control(void *user, srv_control *c)
{
    static cli_osc_update u; /* the engine worker is the only caller */
    if (!cli_osc_take(user, &u))
        return false;
    if (u.set & CLI_OSC_CONTROLNET) /* each client has its own ControlNet settings */
        fprintf(stderr, "streamdiff serve: osc: /streamdiff/controlnet/... is for `streamdiff stream`; serve clients "
                        "set their ControlNets with the \"controlnet\" message (docs/protocol.md): ignored\n");
    memset(c, 0, sizeof *c);
    c->set = (u.set & CLI_OSC_PROMPT ? SRV_CTL_PROMPT : 0) | (u.set & CLI_OSC_NEGATIVE ? SRV_CTL_NEGATIVE : 0) |
             (u.set & CLI_OSC_GUIDANCE ? SRV_CTL_GUIDANCE : 0) | (u.set & CLI_OSC_DELTA ? SRV_CTL_DELTA : 0) |
             (u.set & CLI_OSC_SEED ? SRV_CTL_SEED : 0) | (u.set & CLI_OSC_T_INDEX ? SRV_CTL_T_INDEX : 0) |
             (u.set & CLI_OSC_SIMILARITY ? SRV_CTL_SIMILARITY : 0) | (u.set & CLI_OSC_LORA ? SRV_CTL_LORA : 0);
    snprintf(c->prompt, sizeof c->prompt, "%s", u.prompt);
    snprintf(c->negative_prompt, sizeof c->negative_prompt, "%s", u.negative);
    c->guidance_scale = u.guidance, c->delta = u.delta, c->seed = (uint64_t)u.seed;
    c->similarity_threshold = u.similarity, c->max_skip_frames = u.max_skip;
    c->n_t_index = u.n_t_index < SD_STREAM_MAX_STEPS ? u.n_t_index : SD_STREAM_MAX_STEPS;
    memcpy(c->t_index_list, u.t_index, sizeof(int) * (size_t)c->n_t_index);
    c->lora_set = u.lora_set;
    for (int i = 0; i < CLI_OSC_MAX_LORAS && i < SRV_MAX_LORAS; i++)
        c->lora_scale[i] = u.lora_scale[i];
    osc_blend_control(&u, c);
    return true;
}
#endif

static int serve(int argc, char **argv, serve_loras *L)
{
    srv_options o;
    srv_options_default(&o);
    const char *model = NULL, *taesd = NULL, *config_dir = NULL, *prompt = NULL;
    int width = 0, height = 0, threads = 0; /* 0: the model's native size */
    bool size_set[2] = {false, false};
    sd_backend_kind backend = SD_BACKEND_CPU;
    sd_precision precision = SD_PRECISION_AUTO;
    bool force_tiny = false;
    int osc_port = 0;
    const char *osc_bind = NULL;
    srv_config def; /* stream defaults given on the command line (size applied after loading) */
    srv_config_default(&def, 0, 0);
    const char *env_token = getenv("STREAMDIFF_TOKEN");
    if (env_token && *env_token)
        o.token = env_token;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o.verbose++;
            continue;
        }
        if (!strcmp(a, "--any-origin")) {
            o.any_origin = true;
            continue;
        }
        if (!strcmp(a, "--tiny")) {
            force_tiny = true;
            continue;
        }
        if (!strcmp(a, "--lora-allow-unmatched")) {
            L->allow_unmatched = true;
            continue;
        }
        if (a[0] != '-')
            BAD("unexpected argument '%s'", a);
        if (i + 1 >= argc)
            BAD("%s needs a value", a);
        const char *v = argv[++i];
        long long n;
        double x;
        int crc = -1; /* ControlNet options (cli_control.c) */
        if (!strcmp(a, "--control"))
            crc = L->ctl.n >= SRV_MAX_CONTROLS ? (fprintf(stderr, "streamdiff serve: at most %d --control\n",
                                                         SRV_MAX_CONTROLS), 2)
                                               : cli_controls_add(&L->ctl, "serve", a, v);
        else if (!strcmp(a, "--control-preprocess"))
            crc = cli_controls_preprocess(&L->ctl, "serve", a, v);
        else if (!strcmp(a, "--canny-low") || !strcmp(a, "--canny-high") || !strcmp(a, "--scribble-threshold"))
            crc = cli_controls_threshold(&L->ctl, "serve", a, v);
        if (crc > 0)
            return crc;
        if (crc == 0)
            continue;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--taesd"))
            taesd = v;
        else if (!strcmp(a, "--config-dir"))
            config_dir = v;
        else if (!strcmp(a, "--lora")) {
            if (L->n >= SRV_MAX_LORAS)
                BAD("at most %d --lora options", SRV_MAX_LORAS);
            if (!cli_parse_lora(v, &L->v[L->n]))
                BAD("--lora needs PATH or PATH:SCALE, e.g. style.safetensors:0.8, not '%s'", v);
            L->n++; /* (owned from here: freed by cli_serve) */
            if (fabsf(L->v[L->n - 1].scale) > (float)SRV_LORA_SCALE_MAX)
                BAD("--lora scale %g is outside -%g..%g (the range clients can set)", (double)L->v[L->n - 1].scale,
                    SRV_LORA_SCALE_MAX, SRV_LORA_SCALE_MAX);
        }
        else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "cpu"))
                backend = SD_BACKEND_CPU;
            else if (!strcmp(v, "cuda"))
                backend = SD_BACKEND_CUDA;
            else
                BAD("--backend must be cpu or cuda, not '%s'", v);
        } else if (!strcmp(a, "--precision")) {
            if (!sd_precision_from_name(v, &precision))
                BAD("--precision must be fp32, bf16, int8 or auto, not '%s'", v);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!cli_parse_ll(v, 0, 1024, &n))
                BAD("--threads must be 0..1024, not '%s'", v);
            threads = (int)n;
        } else if (!strcmp(a, "--host")) {
            if (!*v || strlen(v) > 255)
                BAD("--host needs an address like 127.0.0.1");
            o.host = v;
        } else if (!strcmp(a, "--port")) {
            if (!cli_parse_ll(v, 0, 65535, &n))
                BAD("--port must be 0..65535, not '%s'", v);
            o.port = (int)n;
        } else if (!strcmp(a, "--token")) {
            if (!*v || strlen(v) > 256)
                BAD("--token must be 1..256 characters");
            for (const char *q = v; *q; q++)
                if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                      strchr("-_.~", *q)))
                    BAD("--token may hold only letters, digits and - _ . ~ (it travels in a URL)");
            o.token = v;
        } else if (!strcmp(a, "-W") || !strcmp(a, "--width") || !strcmp(a, "-H") || !strcmp(a, "--height")) {
            if (!cli_parse_ll(v, INT_MIN, INT_MAX, &n)) /* the rule: sd_stream_params_validate, below */
                BAD("%s must be a whole number of pixels (a multiple of 8), not '%s'", a, v);
            bool w = a[1] == 'W' || a[2] == 'w';
            *(w ? &width : &height) = (int)n;
            size_set[!w] = true;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (strlen(v) > SRV_PROMPT_MAX)
                BAD("--prompt is longer than %d bytes", SRV_PROMPT_MAX);
            prompt = v;
        } else if (!strcmp(a, "--t-index-list")) {
            if (!cli_parse_int_list(v, 0, 100000, SD_STREAM_MAX_STEPS, def.t_index_list, &def.n_t_index))
                BAD("--t-index-list needs at most %d whole numbers separated by commas, e.g. 32,45, not '%s'",
                    SD_STREAM_MAX_STEPS, v);
        } else if (!strcmp(a, "--cfg-type")) {
            int k = -1;
            for (int t = 0; t < 4; t++)
                if (!strcmp(v, srv_cfg_type_name((sd_cfg_type)t)))
                    k = t;
            if (k < 0)
                BAD("--cfg-type must be none, full, self or initialize, not '%s'", v);
            def.cfg_type = (sd_cfg_type)k;
        } else if (!strcmp(a, "--guidance")) {
            if (!cli_parse_double(v, 0, 20, &x))
                BAD("--guidance must be in 0..20, not '%s'", v);
            def.guidance_scale = (float)x;
        } else if (!strcmp(a, "--delta")) {
            if (!cli_parse_double(v, 0, 10, &x))
                BAD("--delta must be in 0..10, not '%s'", v);
            def.delta = (float)x;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_ll(v, 0, 9007199254740991LL, &n))
                BAD("--seed must be 0..2^53-1, not '%s'", v);
            def.seed = (uint64_t)n;
        } else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "img2img"))
                def.mode = SRV_MODE_IMG2IMG;
            else if (!strcmp(v, "txt2img"))
                def.mode = SRV_MODE_TXT2IMG;
            else
                BAD("--mode must be img2img or txt2img, not '%s'", v);
        } else if (!strcmp(a, "--max-sessions")) {
            if (!cli_parse_ll(v, 1, 64, &n))
                BAD("--max-sessions must be 1..64");
            o.max_sessions = (int)n;
        } else if (!strcmp(a, "--max-batch")) {
            if (!cli_parse_ll(v, 1, 64, &n))
                BAD("--max-batch must be 1..64 (1 runs every frame alone)");
            o.max_batch = (int)n;
        } else if (!strcmp(a, "--max-clients")) {
            if (!cli_parse_ll(v, 1, 1024, &n))
                BAD("--max-clients must be 1..1024");
            o.max_clients = (int)n;
        } else if (!strcmp(a, "--max-frame-bytes")) {
            if (!cli_parse_ll(v, 1024, (long long)SRV_FRAME_MAX, &n))
                BAD("--max-frame-bytes must be 1024..%zu", SRV_FRAME_MAX);
            o.limits.max_frame_bytes = (size_t)n;
        } else if (!strcmp(a, "--max-text-bytes")) {
            if (!cli_parse_ll(v, 256, (long long)SRV_TEXT_MAX, &n))
                BAD("--max-text-bytes must be 256..%zu", SRV_TEXT_MAX);
            o.limits.max_text_bytes = (size_t)n;
        } else if (!strcmp(a, "--max-prompt-bytes")) {
            if (!cli_parse_ll(v, 1, SRV_PROMPT_MAX, &n))
                BAD("--max-prompt-bytes must be 1..%d", SRV_PROMPT_MAX);
            o.limits.max_prompt_bytes = (size_t)n;
        } else if (!strcmp(a, "--max-frame-pixels")) {
            if (!cli_parse_ll(v, 64, (long long)16384 * 16384, &n))
                BAD("--max-frame-pixels must be 64..%lld", (long long)16384 * 16384);
            o.limits.max_frame_pixels = n;
        } else if (!strcmp(a, "--max-size")) {
            if (!cli_parse_ll(v, 8, 2048, &n))
                BAD("--max-size must be 8..2048");
            o.limits.max_size = (int)n;
        } else if (!strcmp(a, "--max-steps")) {
            if (!cli_parse_ll(v, 1, SD_STREAM_MAX_STEPS, &n))
                BAD("--max-steps must be 1..%d", SD_STREAM_MAX_STEPS);
            o.limits.max_steps = (int)n;
        } else if (!strcmp(a, "--max-fps")) {
            if (!cli_parse_double(v, 0, 1000, &x))
                BAD("--max-fps must be 0..1000");
            o.limits.max_fps = x;
        } else if (!strcmp(a, "--web-dir")) {
            o.web_dir = v;
        } else if (!strcmp(a, "--osc-port")) {
            if (!cli_parse_ll(v, 1, 65535, &n))
                BAD("--osc-port must be a UDP port 1..65535");
            osc_port = (int)n;
        } else if (!strcmp(a, "--osc-bind")) {
            osc_bind = v;
        } else if (!strcmp(a, "--max-runtime")) {
            if (!cli_parse_double(v, 0, 1e7, &x))
                BAD("--max-runtime must be a number of seconds");
            o.max_runtime_s = x;
        } else {
            BAD("unknown option '%s'", a);
        }
    }
    if (!model)
        BAD("-m MODEL is required");
    if (def.n_t_index > o.limits.max_steps)
        BAD("--t-index-list has %d entries but --max-steps is %d", def.n_t_index, o.limits.max_steps);
    { /* the stream parameters these defaults make, by the library's rule (the size is checked against the
       * model once it is loaded) */
        static const cli_param_opt names[] = {{"t_index_list", "--t-index-list"}, {"guidance_scale", "--guidance"},
                                              {"delta", "--delta"},               {"cfg_type", "--cfg-type"},
                                              {"width", "--width"},               {"height", "--height"},
                                              {NULL, NULL}};
        srv_config chk = def;
        chk.width = size_set[0] ? width : 512;
        chk.height = size_set[1] ? height : 512;
        sd_stream_params sp;
        srv_config_stream_params(&chk, &sp);
        int rc = cli_stream_params_check("serve", &sp, names);
        if (rc)
            return rc;
    }
    int crc = cli_controls_check(&L->ctl, "serve", true);
    if (crc || (crc = cli_controls_load_images(&L->ctl, "serve")))
        return crc;
    if (o.web_dir && !sd_dir_exists(o.web_dir)) {
        fprintf(stderr, "streamdiff serve: --web-dir '%s' is not a folder\n", o.web_dir);
        return 2;
    }

    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.backend = backend;
    mp.precision = precision;
    mp.n_threads = threads;
    mp.taesd = taesd;
    mp.config_dir = config_dir;
    sd_model *m = NULL;
    double t0 = sd_time_now();
    if (sd_model_load(model, &mp, &m) != SD_OK) {
        fprintf(stderr, "streamdiff serve: %s\n", sd_last_error());
        return 1;
    }
    fprintf(stderr, "streamdiff serve: loaded %s in %.1f s\n", model, sd_time_now() - t0);
    if (L->n) {
        t0 = sd_time_now();
        sd_lora_options lo = {.allow_unmatched = L->allow_unmatched};
        if (sd_model_apply_loras_ex(m, L->v, L->n, &lo) != SD_OK) {
            fprintf(stderr, "streamdiff serve: cannot apply the LoRA(s): %s\n", sd_last_error());
            free_model(L, m);
            return 1;
        }
        for (int i = 0; i < L->n; i++)
            fprintf(stderr, "streamdiff serve: LoRA %s, scale %g\n", L->v[i].path, (double)L->v[i].scale);
        fprintf(stderr, "streamdiff serve: %d LoRA(s) fused in %.2f s\n", L->n, sd_time_now() - t0);
    }
    sd_model_info info;
    sd_model_get_info(m, &info);
    int native = info.native_size > 0 ? info.native_size : 512;
    def.width = width ? width : native;
    def.height = height ? height : native;
    if (def.width > o.limits.max_size || def.height > o.limits.max_size)
        o.limits.max_size = SD_MAX(def.width, def.height);
    if (prompt)
        snprintf(def.prompt, sizeof def.prompt, "%s", prompt);
    o.model_name = model;
    /* the bundled test models have a few MB of random weights */
    o.tiny_model = force_tiny || info.weight_bytes < ((size_t)32 << 20);
    o.loras = L->v;
    o.n_loras = L->n;
    o.lora_allow_unmatched = L->allow_unmatched;
    crc = serve_controls(L, m, &o, &def);
    if (crc) {
        free_model(L, m);
        return crc;
    }
    o.defaults = def;

    /* the defaults must make a working stream: check once before listening */
    sd_stream_params sp;
    srv_config_stream_params(&def, &sp);
    sp.use_taesd = info.has_taesd;
    sp.controls = o.controls;
    sp.n_controls = o.n_controls;
    if (o.n_controls)
        sp.control_preprocess = def.cnet[0].pp;
    sd_stream *s = NULL;
    if (sd_stream_create(m, &sp, &s) != SD_OK) {
        fprintf(stderr, "streamdiff serve: the stream settings do not work with this model: %s\n", sd_last_error());
        free_model(L, m);
        return 2;
    }
    sd_stream_free(s);
    if (!info.has_taesd)
        fprintf(stderr, "streamdiff serve: note: no --taesd given: frames use the full VAE (slower)\n");

#ifdef SD_HAVE_OSC
    cli_osc *osc = NULL;
    if (osc_port) {
        if (cli_osc_start(osc_bind, osc_port, L->n, &osc) != SD_OK) {
            free_model(L, m);
            return 1;
        }
        fprintf(stderr, "streamdiff serve: osc: listening on UDP %s:%d\n", osc_bind ? osc_bind : "127.0.0.1", osc_port);
        o.control = osc_control;
        o.control_user = osc;
    }
#else
    (void)osc_bind;
    if (osc_port) {
        fprintf(stderr, "streamdiff serve: --osc-port: this streamdiff was built without OSC (liblo); "
                        "apt-get install liblo-dev and rebuild\n");
        free_model(L, m);
        return 2;
    }
#endif
    int rc = srv_run(m, &o);
#ifdef SD_HAVE_OSC
    if (osc) {
        int64_t acc, rej;
        cli_osc_counts(osc, &acc, &rej);
        fprintf(stderr, "streamdiff serve: osc: %lld messages applied, %lld ignored\n", (long long)acc, (long long)rej);
        cli_osc_stop(osc);
    }
#endif
    free_model(L, m);
    return rc;
}

int cli_serve(int argc, char **argv)
{
    serve_loras L;
    memset(&L, 0, sizeof L);
    cli_controls_init(&L.ctl);
    int rc = serve(argc, argv, &L);
    cli_controls_free(&L.ctl);
    for (int i = 0; i < L.n; i++)
        free((char *)L.v[i].path);
    return rc;
}
#else
#include <stdio.h>

int cli_serve(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "streamdiff serve: this streamdiff was built without libwebsockets, so it has no server; install "
                    "libwebsockets-dev and rebuild (cmake -DSD_FULL=ON requires it)\n");
    return 1;
}
#endif
