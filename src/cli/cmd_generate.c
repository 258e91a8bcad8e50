/* `streamdiff txt2img` / `streamdiff img2img`: generate images from a prompt
 * (and an init image), with flags in the style of stable-diffusion.cpp.
 *
 * Built on the public API (include/streamdiff.h). Two read-only internal
 * helpers are used for a better command line: sd_sched_kind_from_name() to
 * reject an unknown --sampler before the (slow) model load, and
 * sd_hf_cache_dir() to show in --help where Hugging Face ids are looked up.
 *
 * Exit codes: 0 success, 1 a runtime failure (model, image, generation, file
 * writing), 2 a usage error (unknown flag, malformed or out-of-range value). */
#include "cli/cli.h"
#include "models/hfcache.h"
#include "sched/scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GEN_MAX_SIZE 4096
#define GEN_MAX_STEPS 1000
#define GEN_MAX_BATCH_COUNT 10000
#define GEN_MAX_BATCH_SIZE 64
#define GEN_MAX_LORAS CLI_MAX_LORAS

/* ------------------------------------------------------------ options */

typedef enum {
    O_MODEL, O_PROMPT, O_NEG, O_WIDTH, O_HEIGHT, O_STEPS, O_CFG, O_SAMPLER, O_SCHEDULE, O_SEED,
    O_BATCH_COUNT, O_BATCH_SIZE, O_STRENGTH, O_INIT, O_OUTPUT, O_TAESD, O_THREADS, O_CLIP_SKIP,
    O_RNG, O_BACKEND, O_ETA, O_KEEP_F16, O_PRECISION, O_CONFIG_DIR, O_PRED, O_CHECK_FINITE, O_LORA, O_LORA_ALLOW, O_VERBOSE, O_HELP,
    O_ORIG_SIZE, O_TARGET_SIZE, O_CROP, O_NEG_ORIG_SIZE, O_NEG_TARGET_SIZE, O_NEG_CROP, O_PROMPT2, O_NEG2,
    O_CONTROL, O_CONTROL_PRE, O_CANNY_LOW, O_CANNY_HIGH, O_SCRIBBLE, O_CONTROL_SAVE
} opt_id;

typedef struct {
    const char *shrt, *lng;
    bool has_value, img2img_only;
    opt_id id;
} opt_def;

static const opt_def k_opts[] = {
    {"-m", "--model", true, false, O_MODEL},
    {"-p", "--prompt", true, false, O_PROMPT},
    {"-n", "--negative-prompt", true, false, O_NEG},
    {"-W", "--width", true, false, O_WIDTH},
    {"-H", "--height", true, false, O_HEIGHT},
    {NULL, "--steps", true, false, O_STEPS},
    {NULL, "--cfg-scale", true, false, O_CFG},
    {NULL, "--sampler", true, false, O_SAMPLER},
    {NULL, "--scheduler", true, false, O_SCHEDULE},
    {"-s", "--seed", true, false, O_SEED},
    {"-b", "--batch-count", true, false, O_BATCH_COUNT},
    {NULL, "--batch-size", true, false, O_BATCH_SIZE},
    {NULL, "--strength", true, true, O_STRENGTH},
    {"-i", "--init-img", true, true, O_INIT},
    {"-o", "--output", true, false, O_OUTPUT},
    {NULL, "--taesd", true, false, O_TAESD},
    {"-t", "--threads", true, false, O_THREADS},
    {NULL, "--clip-skip", true, false, O_CLIP_SKIP},
    {NULL, "--rng", true, false, O_RNG},
    {NULL, "--backend", true, false, O_BACKEND},
    {NULL, "--eta", true, false, O_ETA},
    {NULL, "--keep-f16", false, false, O_KEEP_F16},
    {NULL, "--precision", true, false, O_PRECISION},
    {NULL, "--config-dir", true, false, O_CONFIG_DIR},
    {NULL, "--check-finite", false, false, O_CHECK_FINITE},
    {NULL, "--prediction-type", true, false, O_PRED},
    {NULL, "--lora", true, false, O_LORA},
    {NULL, "--lora-allow-unmatched", false, false, O_LORA_ALLOW},
    {NULL, "--prompt-2", true, false, O_PROMPT2},
    {NULL, "--negative-prompt-2", true, false, O_NEG2},
    {NULL, "--original-size", true, false, O_ORIG_SIZE},
    {NULL, "--target-size", true, false, O_TARGET_SIZE},
    {NULL, "--crop", true, false, O_CROP},
    {NULL, "--negative-original-size", true, false, O_NEG_ORIG_SIZE},
    {NULL, "--negative-target-size", true, false, O_NEG_TARGET_SIZE},
    {NULL, "--negative-crop", true, false, O_NEG_CROP},
    {NULL, "--control", true, false, O_CONTROL},
    {NULL, "--control-preprocess", true, false, O_CONTROL_PRE},
    {NULL, "--canny-low", true, false, O_CANNY_LOW},
    {NULL, "--canny-high", true, false, O_CANNY_HIGH},
    {NULL, "--scribble-threshold", true, false, O_SCRIBBLE},
    {NULL, "--control-save", true, false, O_CONTROL_SAVE},
    {"-v", "--verbose", false, false, O_VERBOSE},
    {"-h", "--help", false, false, O_HELP},
};

typedef struct {
    bool img2img;
    const char *cmd; /* "txt2img" / "img2img" */
    const char *model, *prompt, *negative, *output, *init_img, *taesd, *sampler, *schedule;
    const char *config_dir, *prediction_type;
    bool check_finite;
    int width, height, steps, batch_count, batch_size, threads, clip_skip;
    float cfg, strength, eta;
    bool random_seed;
    uint64_t seed;
    sd_rng_type rng;
    sd_backend_kind backend;
    bool keep_f16, verbose;
    sd_precision precision;
    bool steps_set;
    sd_lora_spec loras[GEN_MAX_LORAS];
    int n_loras;
    bool lora_allow_unmatched;
    /* SDXL micro-conditioning, {height, width} / {top, left}; 0 = default */
    int orig_size[2], target_size[2], crop[2], neg_orig_size[2], neg_target_size[2], neg_crop[2];
    const char *prompt2, *negative2; /* SDXL: the second text encoder's prompts */
    cli_controls ctl; /* --control ... (cli_control.c) */
} gen_opts;

/* ------------------------------------------------------------ help */

static void usage(FILE *f, const gen_opts *o)
{
    sd_gen_params d;
    sd_gen_default_params(&d);
    if (o->img2img)
        fprintf(f, "streamdiff img2img — transform an init image guided by a text prompt\n\n"
                   "usage: streamdiff img2img -m MODEL -i INIT_IMAGE -p PROMPT [options]\n\n"
                   "The init image is encoded to latents, noised to --strength and denoised with the\n"
                   "prompt (diffusers StableDiffusion[XL]Img2ImgPipeline): strength 0.3 keeps the picture,\n"
                   "1.0 ignores it. Only int(steps * strength) of the --steps denoising steps run.\n\n");
    else
        fprintf(f, "streamdiff txt2img — generate images from a text prompt\n\n"
                   "usage: streamdiff txt2img -m MODEL -p PROMPT [options]\n\n"
                   "Random latent noise (from --seed) is denoised in --steps steps guided by the prompt\n"
                   "(diffusers StableDiffusion[XL]Pipeline; LCM models use their guidance embedding).\n\n");
    fprintf(f,
            "model and prompt:\n"
            "  -m, --model PATH|ID       the model (required): a diffusers folder (model_index.json; SD1.x,\n"
            "                            SD2.x or SDXL base/turbo/distilled), a single-file SD1.x/SD2.x\n"
            "                            .safetensors checkpoint, or a Hugging Face\n"
            "                            id (org/name) already in the local HF cache (see 'models' below)\n"
            "  -p, --prompt TEXT         what to draw (default: \"\")\n"
            "  -n, --negative-prompt T   what to avoid (default: \"\"; needs --cfg-scale > 1)\n");
    if (o->img2img)
        fprintf(f,
                "  -i, --init-img FILE       the init image, PNG or JPEG (required); it is center-cropped to\n"
                "                            the aspect of -W x -H and resized when its size differs\n"
                "      --strength X          how much to change the init image, 0 < X <= 1 (default: %g)\n",
                (double)d.strength);
    fprintf(f,
            "\nsampling:\n"
            "  -W, --width N             image width in pixels, a multiple of 8 up to 4096\n"
            "                            (default: %s)\n"
            "  -H, --height N            image height in pixels, a multiple of 8 up to 4096\n"
            "                            (default: %s)\n"
            "      --steps N             denoising steps, 1..%d (default: the sampler's: lcm, tcd 4,\n"
            "                            euler with a turbo model 1, others 20)\n"
            "      --cfg-scale X         classifier-free guidance scale, 0..100; <= 1 turns CFG off (one\n"
            "                            UNet pass per step, negative prompt unused) (default: %g)\n"
            "      --sampler NAME        lcm | tcd | euler | euler_a | ddim | dpm++2m (also dpmpp_2m, dpm)\n"
            "                            or a diffusers class name (default: the model's own scheduler)\n"
            "      --scheduler NAME      sigma schedule: default | karras (default: default)\n"
            "      --eta X               DDIM eta / TCD gamma (stochasticity; TCD suggests 0.3), 0..1\n"
            "                            (default: %g)\n"
            "  -s, --seed N              random seed, 0..2^64-1; -1 = random from the clock, printed\n"
            "                            (default: %" PRIu64 ")\n"
            "      --rng torch|fast      noise generator: torch = identical to torch.randn on the CPU with\n"
            "                            manual_seed (reproduces diffusers), fast = Philox (default: torch)\n"
            "      --clip-skip N         skip the last N CLIP text-encoder layers, 0..30 (diffusers\n"
            "                            clip_skip; A1111's \"Clip skip: 2\" is 1 here) (default: 0)\n"
            "\nSDXL (ignored by SD1.x/SD2.x models):\n"
            "      --prompt-2 TEXT       the second text encoder's prompt (default: the -p prompt)\n"
            "      --negative-prompt-2 T its negative prompt (default: the -n prompt)\n"
            "      --original-size WxH   the size the model is told the training image had (default: the\n"
            "                            output size)\n"
            "      --target-size WxH     the size it is told to aim for (default: the output size)\n"
            "      --crop TOP,LEFT       the crop offset it is told of (default: 0,0)\n"
            "      --negative-original-size WxH, --negative-target-size WxH, --negative-crop TOP,LEFT\n"
            "                            the same for the negative (CFG) branch (default: as the positive;\n"
            "                            txt2img uses them only when both negative sizes are given)\n"
            "\nLoRA:\n"
            "      --lora PATH[:SCALE]   fuse a LoRA / LoCon into the model with strength SCALE (default 1.0);\n"
            "                            repeat for several (up to %d), e.g. an LCM-LoRA plus a style LoRA.\n"
            "                            kohya/A1111 (lora_unet_*, lora_te_*, SDXL's lora_te1_/te2_ and LDM names),\n"
            "                            diffusers/PEFT files, a PEFT folder or an HF id; no LoHa/LoKr/(IA)^3/DoRA.\n"
            "      --lora-allow-unmatched  warn about LoRA tensors that match no layer of the model instead of\n"
            "                            failing (a LoRA of another model family fails anyway where it differs)\n"
            "\nControlNet:\n"
            "      --control NET:IMAGE[:SCALE[:START:END]]\n"
            "                            steer with a ControlNet: NET a diffusers ControlNetModel folder, a\n"
            "                            single-file v1.x .safetensors (control_v11p_sd15_canny...) or an HF id;\n"
            "                            IMAGE the control image (PNG/JPEG; resized to -W x -H when it differs),\n"
            "                            or 'input' (img2img: the init image); SCALE 0..10 (default 1); it acts\n"
            "                            from fraction START to END of the steps (default 0:1). Repeat for\n"
            "                            several nets (up to %d; their effects add up)\n"
            "      --control-preprocess P  make the control image from IMAGE first: none | canny | softedge |\n"
            "                            scribble | invert | tile (default: none, IMAGE is the control image).\n"
            "                            Once for every --control, or once per --control in the same order\n"
            "      --canny-low N, --canny-high N  Canny thresholds as OpenCV's (default 100, 200)\n"
            "      --scribble-threshold N  soft-edge level that becomes a stroke, 1..255 (default 64)\n"
            "      --control-save FILE   also write the control image(s) as used (PNG; FILE_1.png, ... or %%d)\n"
            "\noutput:\n"
            "  -o, --output FILE         PNG file to write (default: output.png). With several images:\n"
            "                            output.png, output_1.png, output_2.png, ... or a pattern with\n"
            "                            %%d / %%03d for the image index (0, 1, ...), e.g. out_%%03d.png.\n"
            "                            The PNG carries an A1111-style \"parameters\" text chunk.\n"
            "  -b, --batch-count N       images to make one after the other, seeds seed, seed+1, ...\n"
            "                            (default: 1)\n"
            "      --batch-size N        images per generation call (one batched UNet pass, same seed),\n"
            "                            1..%d (default: 1)\n"
            "\nperformance:\n"
            "      --backend cpu|cuda    compute backend (default: cpu)\n"
            "  -t, --threads N           CPU threads, 0 = all cores (default: 0)\n"
            "      --taesd DIR|ID        a TAESD (AutoencoderTiny) folder or HF id: fast, lower-quality\n"
            "                            VAE encode/decode (default: the full VAE)\n"
            "      --keep-f16            keep F16 weights as F16 in memory (half the RAM, CPU converts per op)\n"
            "      --precision P         CPU compute: fp32 (default), bf16 (AMX / AVX512-BF16; else bf16 weights,\n"
            "                            fp32 compute), int8 (experimental: W8A8 linears/convs on AMX-INT8 or\n"
            "                            AVX512-VNNI, else as bf16) or auto (bf16 where the CPU has bf16 kernels)\n"
            "      --config-dir DIR      for a single-file checkpoint: a diffusers folder (or HF id) of the same\n"
            "                            architecture whose configs and tokenizer to use\n"
            "      --prediction-type T   epsilon or v_prediction (SD2 single files cannot tell; sd-turbo is epsilon)\n"
            "      --check-finite        refuse weights that contain NaN or Inf (checks every tensor at load)\n"
            "  -v, --verbose             print the model and the settings used, and timings\n"
            "  -h, --help                this help\n",
            o->img2img ? "the init image's width, rounded down to a multiple of 8"
                       : "the model's native size: 512 SD1.5, 768 SD2, 1024 SDXL",
            o->img2img ? "the init image's height, rounded down to a multiple of 8"
                       : "the model's native size: 512 SD1.5, 768 SD2, 1024 SDXL", GEN_MAX_STEPS,
            (double)d.guidance_scale, (double)d.eta, d.seed, GEN_MAX_LORAS, CLI_MAX_CONTROLS, GEN_MAX_BATCH_SIZE);
    fprintf(f, "\nexamples:\n");
    if (o->img2img)
        fprintf(f,
                "  # sd-turbo, 2 steps at strength 0.5 (1 step runs)\n"
                "  streamdiff img2img -m stabilityai/sd-turbo -i photo.png -p \"a watercolor painting\" \\\n"
                "      --sampler euler --steps 2 --strength 0.5 --cfg-scale 1 -o painted.png\n"
                "  # LCM (e.g. a model with an LCM-distilled UNet), 4 steps\n"
                "  streamdiff img2img -m SimianLuo/LCM_Dreamshaper_v7 -i sketch.png -p \"a castle at dusk\" \\\n"
                "      --sampler lcm --steps 4 --cfg-scale 8 --strength 0.6\n"
                "  # SD 1.5, DPM++ 2M Karras, 20 steps\n"
                "  streamdiff img2img -m runwayml/stable-diffusion-v1-5 -i in.png -p \"oil painting, detailed\" \\\n"
                "      -n \"blurry\" --sampler dpm++2m --scheduler karras --steps 20 --cfg-scale 7 --strength 0.75\n");
    else
        fprintf(f,
                "  # sd-turbo, one step, no CFG\n"
                "  streamdiff txt2img -m stabilityai/sd-turbo -p \"a cat wearing a hat\" \\\n"
                "      --sampler euler --steps 1 --cfg-scale 1 -o cat.png\n"
                "  # LCM (e.g. a model with an LCM-distilled UNet), 4 steps\n"
                "  streamdiff txt2img -m SimianLuo/LCM_Dreamshaper_v7 -p \"a castle at dusk\" \\\n"
                "      --sampler lcm --steps 4 --cfg-scale 8 -b 4 -o castle_%%d.png\n"
                "  # TCD: SD 1.5 + the TCD LoRA, 4 steps, gamma 0.3\n"
                "  streamdiff txt2img -m runwayml/stable-diffusion-v1-5 --lora TCD-SD15-LoRA.safetensors \\\n"
                "      -p \"a fox in the snow\" --sampler tcd --eta 0.3 --steps 4 --cfg-scale 1\n"
                "  # SD 1.5, DPM++ 2M Karras, 20 steps\n"
                "  streamdiff txt2img -m runwayml/stable-diffusion-v1-5 -p \"a lighthouse, oil painting\" \\\n"
                "      -n \"blurry, low quality\" --sampler dpm++2m --scheduler karras --steps 20 --cfg-scale 7 -s -1\n");
    char *cache = sd_hf_cache_dir();
    fprintf(f,
            "\nmodels:\n"
            "  -m (and --taesd) take a path first: a folder with model_index.json (or unet/, vae/, ...),\n"
            "  or a single-file .safetensors (SD1.x/SD2.x/SDXL; --config-dir gives configs and tokenizers).\n"
            "  Otherwise an id like org/name is looked up in the local Hugging Face hub cache, the first that\n"
            "  is set of: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,\n"
            "  $HOME/.cache/huggingface/hub%s%s%s. Nothing is downloaded (fetch: 'huggingface-cli download ID').\n",
            cache ? " (here: " : "", cache ? cache : "", cache ? ")" : "");
    free(cache);
}

/* ------------------------------------------------------------ value parsing */

static bool parse_float(const char *s, double lo, double hi, float *out)
{
    double v;
    if (!cli_parse_double(s, lo, hi, &v))
        return false;
    *out = (float)v;
    return true;
}

static bool parse_seed(const char *s, bool *random, uint64_t *out)
{
    if (s && !strcmp(s, "-1")) {
        *random = true;
        return true;
    }
    if (!cli_parse_u64(s, out))
        return false;
    *random = false;
    return true;
}

/* Output naming. A pattern holds one %d or %0Nd (N = 1..9) for the image
 * index; %% is a literal %. Returns false for any other use of %. */
static bool output_pattern_check(const char *s, bool *has_index)
{
    int n = 0;
    for (const char *p = s; *p; p++) {
        if (*p != '%')
            continue;
        if (p[1] == '%') {
            p++;
            continue;
        }
        const char *q = p + 1;
        if (*q == '0' && q[1] >= '1' && q[1] <= '9')
            q += 2;
        if (*q != 'd')
            return false;
        n++;
        p = q;
    }
    *has_index = n == 1;
    return n <= 1;
}

/* Writes the file name of image `idx` of `total` to buf. */
static bool output_name(const char *pat, bool has_index, int idx, int total, char *buf, size_t n)
{
    size_t o = 0;
    char tmp[32];
    if (!has_index) {
        /* no pattern: copy (%% -> %), and for idx > 0 insert _idx before the extension */
        const char *slash = strrchr(pat, '/');
        const char *dot = strrchr(pat, '.');
        if (dot && (dot == pat || (slash && dot < slash) || dot[-1] == '/'))
            dot = NULL;
        bool inserted = !(total > 1 && idx > 0);
        for (const char *p = pat;; p++) {
            if (!inserted && (p == dot || !*p)) {
                inserted = true;
                int k = snprintf(tmp, sizeof tmp, "_%d", idx);
                if (k < 0 || o + (size_t)k >= n)
                    return false;
                memcpy(buf + o, tmp, (size_t)k);
                o += (size_t)k;
            }
            if (!*p)
                break;
            if (*p == '%' && p[1] == '%')
                p++;
            if (o + 1 >= n)
                return false;
            buf[o++] = *p;
        }
        buf[o] = 0;
        return true;
    }
    for (const char *p = pat; *p; p++) {
        if (*p == '%' && p[1] == '%') {
            p++;
        } else if (*p == '%') {
            int width = 0;
            p++;
            if (*p == '0') {
                width = p[1] - '0';
                p += 2;
            }
            int k = snprintf(tmp, sizeof tmp, "%0*d", width, idx);
            if (k < 0 || o + (size_t)k >= n)
                return false;
            memcpy(buf + o, tmp, (size_t)k);
            o += (size_t)k;
            continue;
        }
        if (o + 1 >= n)
            return false;
        buf[o++] = *p;
    }
    buf[o] = 0;
    return true;
}

/* ------------------------------------------------------------ argument parsing */

static int bad_value(const gen_opts *o, const char *flag, const char *val, const char *what)
{
    fprintf(stderr, "streamdiff %s: %s needs %s, got '%s'\n", o->cmd, flag, what, val);
    fprintf(stderr, "Run 'streamdiff %s --help' for all options and their defaults.\n", o->cmd);
    return 2;
}

/* "WxH" -> {H, W} (diffusers' (height, width) order); "TOP,LEFT" -> {TOP, LEFT} */
static int pair_value(const gen_opts *o, const char *flag, const char *val, bool size, int out[2])
{
    char a[32], b[32];
    const char *sep = strchr(val, size ? 'x' : ',');
    if (!sep && size)
        sep = strchr(val, 'X');
    size_t la = sep ? (size_t)(sep - val) : 0;
    int x = 0, y = 0;
    bool ok = sep && la > 0 && la < sizeof a && strlen(sep + 1) < sizeof b;
    if (ok) {
        memcpy(a, val, la);
        a[la] = 0;
        snprintf(b, sizeof b, "%s", sep + 1);
        ok = cli_parse_int(a, size ? 1 : 0, 65536, &x) && cli_parse_int(b, size ? 1 : 0, 65536, &y);
    }
    if (!ok)
        return bad_value(o, flag, val, size ? "WIDTHxHEIGHT in pixels, e.g. 1024x1024"
                                            : "TOP,LEFT in pixels, e.g. 0,0");
    out[0] = size ? y : x;
    out[1] = size ? x : y;
    return 0;
}

static int size_value(const gen_opts *o, const char *flag, const char *val, int *out)
{
    int v;
    if (!cli_parse_int(val, 1, GEN_MAX_SIZE, &v))
        return bad_value(o, flag, val, "a whole number of pixels from 8 to 4096 (a multiple of 8)");
    if (v % 8) {
        int lo = v / 8 * 8, hi = lo + 8;
        fprintf(stderr,
                "streamdiff %s: %s must be a multiple of 8 (the VAE downsamples by 8), got %d; "
                "use %d or %d\n",
                o->cmd, flag, v, lo ? lo : hi, hi);
        return 2;
    }
    *out = v;
    return 0;
}

static int lora_value(gen_opts *o, const char *flag, const char *v)
{
    if (o->n_loras >= GEN_MAX_LORAS) {
        fprintf(stderr, "streamdiff %s: at most %d --lora options\n", o->cmd, GEN_MAX_LORAS);
        return 2;
    }
    if (!cli_parse_lora(v, &o->loras[o->n_loras])) /* (an out-of-memory reads as a bad value here) */
        return bad_value(o, flag, v,
                         "PATH or PATH:SCALE with SCALE a number from -100 to 100 (e.g. style.safetensors:0.8)");
    o->n_loras++;
    return 0;
}

static void free_loras(gen_opts *o)
{
    for (int i = 0; i < o->n_loras; i++)
        free((char *)o->loras[i].path);
    o->n_loras = 0;
}

/* Returns -1 to go on, or an exit code (0 after --help). */
static int parse_args(int argc, char **argv, gen_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *inline_val = NULL;
        char name[64];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            inline_val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        const opt_def *d = NULL;
        for (size_t k = 0; k < SD_ARRAY_LEN(k_opts) && !d; k++)
            if ((k_opts[k].shrt && !strcmp(name, k_opts[k].shrt)) || !strcmp(name, k_opts[k].lng))
                d = &k_opts[k];
        if (!d) {
            if (a[0] != '-')
                fprintf(stderr,
                        "streamdiff %s: unexpected argument '%s'; options take the form -p \"TEXT\" "
                        "(quote a prompt that has spaces)\n",
                        o->cmd, a);
            else
                fprintf(stderr, "streamdiff %s: unknown option '%s'\n", o->cmd, a);
            fprintf(stderr, "Run 'streamdiff %s --help' for the list of options.\n", o->cmd);
            return 2;
        }
        if (d->img2img_only && !o->img2img) {
            fprintf(stderr, "streamdiff %s: %s is an img2img option; use 'streamdiff img2img' to start from an image\n",
                    o->cmd, d->lng);
            return 2;
        }
        char flag[48];
        if (d->shrt)
            snprintf(flag, sizeof flag, "%s/%s", d->shrt, d->lng);
        else
            snprintf(flag, sizeof flag, "%s", d->lng);
        const char *v = NULL;
        if (d->has_value) {
            if (inline_val) {
                v = inline_val;
            } else if (i + 1 < argc) {
                v = argv[++i];
            } else {
                fprintf(stderr, "streamdiff %s: %s needs a value; see 'streamdiff %s --help'\n", o->cmd, a, o->cmd);
                return 2;
            }
        } else if (inline_val) {
            fprintf(stderr, "streamdiff %s: %s takes no value; write just %s\n", o->cmd, name, d->lng);
            return 2;
        }
        int rc = 0;
        switch (d->id) {
        case O_MODEL: o->model = v; break;
        case O_PROMPT: o->prompt = v; break;
        case O_NEG: o->negative = v; break;
        case O_WIDTH: rc = size_value(o, flag, v, &o->width); break;
        case O_HEIGHT: rc = size_value(o, flag, v, &o->height); break;
        case O_STEPS:
            if (!cli_parse_int(v, 1, GEN_MAX_STEPS, &o->steps))
                rc = bad_value(o, flag, v, "a whole number of steps from 1 to 1000 (leave it out for the sampler's default)");
            o->steps_set = true;
            break;
        case O_CFG:
            if (!parse_float(v, 0.0, 100.0, &o->cfg))
                rc = bad_value(o, flag, v, "a number from 0 to 100 (e.g. 7.5; 1 = no CFG)");
            break;
        case O_SAMPLER: {
            sd_sched_kind k;
            if (sd_sched_kind_from_name(v, &k) != SD_OK) {
                fprintf(stderr,
                        "streamdiff %s: unknown --sampler '%s'; use one of lcm, tcd, euler, euler_a, ddim, dpm++2m "
                        "(or leave it out for the model's own scheduler)\n",
                        o->cmd, v);
                rc = 2;
            }
            o->sampler = v;
            break;
        }
        case O_SCHEDULE:
            if (!strcasecmp(v, "default"))
                o->schedule = NULL;
            else if (!strcasecmp(v, "karras"))
                o->schedule = "karras";
            else
                rc = bad_value(o, flag, v, "'default' or 'karras'");
            break;
        case O_SEED:
            if (!parse_seed(v, &o->random_seed, &o->seed))
                rc = bad_value(o, flag, v, "a whole number from 0 to 18446744073709551615, or -1 for a random seed");
            break;
        case O_BATCH_COUNT:
            if (!cli_parse_int(v, 1, GEN_MAX_BATCH_COUNT, &o->batch_count))
                rc = bad_value(o, flag, v, "a number of images from 1 to 10000");
            break;
        case O_BATCH_SIZE:
            if (!cli_parse_int(v, 1, GEN_MAX_BATCH_SIZE, &o->batch_size))
                rc = bad_value(o, flag, v, "a number of images per call from 1 to 64");
            break;
        case O_STRENGTH:
            if (!parse_float(v, 0.0, 1.0, &o->strength) || o->strength <= 0.0f)
                rc = bad_value(o, flag, v, "a number greater than 0 and at most 1 (e.g. 0.5; 1 ignores the init image)");
            break;
        case O_INIT: o->init_img = v; break;
        case O_PROMPT2: o->prompt2 = v; break;
        case O_NEG2: o->negative2 = v; break;
        case O_ORIG_SIZE: rc = pair_value(o, flag, v, true, o->orig_size); break;
        case O_TARGET_SIZE: rc = pair_value(o, flag, v, true, o->target_size); break;
        case O_CROP: rc = pair_value(o, flag, v, false, o->crop); break;
        case O_NEG_ORIG_SIZE: rc = pair_value(o, flag, v, true, o->neg_orig_size); break;
        case O_NEG_TARGET_SIZE: rc = pair_value(o, flag, v, true, o->neg_target_size); break;
        case O_NEG_CROP: rc = pair_value(o, flag, v, false, o->neg_crop); break;
        case O_OUTPUT: o->output = v; break;
        case O_TAESD: o->taesd = v; break;
        case O_THREADS:
            if (!cli_parse_int(v, 0, 1024, &o->threads))
                rc = bad_value(o, flag, v, "a number of threads from 0 (all cores) to 1024");
            break;
        case O_CLIP_SKIP:
            if (!cli_parse_int(v, 0, 30, &o->clip_skip))
                rc = bad_value(o, flag, v, "a number of layers from 0 to 30 (0 = use the last layer)");
            break;
        case O_RNG:
            if (!strcasecmp(v, "torch"))
                o->rng = SD_RNG_TYPE_TORCH;
            else if (!strcasecmp(v, "fast"))
                o->rng = SD_RNG_TYPE_FAST;
            else
                rc = bad_value(o, flag, v, "'torch' or 'fast'");
            break;
        case O_BACKEND:
            if (!strcasecmp(v, "cpu"))
                o->backend = SD_BACKEND_CPU;
            else if (!strcasecmp(v, "cuda"))
                o->backend = SD_BACKEND_CUDA;
            else
                rc = bad_value(o, flag, v, "'cpu' or 'cuda'");
            break;
        case O_ETA:
            if (!parse_float(v, 0.0, 1.0, &o->eta))
                rc = bad_value(o, flag, v, "a number from 0 to 1 (DDIM eta / TCD gamma)");
            break;
        case O_KEEP_F16: o->keep_f16 = true; break;
        case O_PRECISION:
            if (!sd_precision_from_name(v, &o->precision))
                rc = bad_value(o, flag, v, "fp32, bf16, int8 or auto");
            break;
        case O_CONFIG_DIR: o->config_dir = v; break;
        case O_CHECK_FINITE: o->check_finite = true; break;
        case O_PRED:
            if (strcmp(v, "epsilon") && strcmp(v, "v_prediction"))
                rc = bad_value(o, flag, v, "'epsilon' or 'v_prediction'");
            else
                o->prediction_type = v;
            break;
        case O_LORA: rc = lora_value(o, flag, v); break;
        case O_LORA_ALLOW: o->lora_allow_unmatched = true; break;
        case O_CONTROL: rc = cli_controls_add(&o->ctl, o->cmd, flag, v); break;
        case O_CONTROL_PRE: rc = cli_controls_preprocess(&o->ctl, o->cmd, flag, v); break;
        case O_CANNY_LOW:
        case O_CANNY_HIGH:
        case O_SCRIBBLE: rc = cli_controls_threshold(&o->ctl, o->cmd, flag, v); break;
        case O_CONTROL_SAVE: o->ctl.save = v; break;
        case O_VERBOSE: o->verbose = true; break;
        case O_HELP: usage(stdout, o); return 0;
        }
        if (rc)
            return rc;
    }
    return -1;
}

/* Checks that need no model: returns 0 when fine, else an exit code. */
static int check_args(gen_opts *o, bool *has_index)
{
    if (!o->model || !*o->model) {
        fprintf(stderr,
                "streamdiff %s: no model given; pass -m PATH with a diffusers folder, a .safetensors "
                "checkpoint or a Hugging Face id (e.g. -m stabilityai/sd-turbo); see 'streamdiff %s --help'\n",
                o->cmd, o->cmd);
        return 2;
    }
    if (o->img2img && (!o->init_img || !*o->init_img)) {
        fprintf(stderr,
                "streamdiff img2img: no init image given; pass -i FILE (PNG or JPEG), or use "
                "'streamdiff txt2img' to start from noise\n");
        return 2;
    }
    if (!*o->output) {
        fprintf(stderr, "streamdiff %s: -o needs a file name, e.g. -o output.png\n", o->cmd);
        return 2;
    }
    if (!output_pattern_check(o->output, has_index)) {
        fprintf(stderr,
                "streamdiff %s: -o '%s': a '%%' must be the one image-index field, %%d or %%0Nd "
                "(e.g. out_%%03d.png), or be doubled (%%%%) for a literal %%\n",
                o->cmd, o->output);
        return 2;
    }
    const char *base = strrchr(o->output, '/');
    base = base ? base + 1 : o->output;
    if (!*base) {
        fprintf(stderr, "streamdiff %s: -o '%s' is a folder; give a file name, e.g. -o %soutput.png\n", o->cmd,
                o->output, o->output);
        return 2;
    }
    const char *ext = strrchr(base, '.');
    if (ext && ext != base && strcasecmp(ext, ".png")) {
        fprintf(stderr, "streamdiff %s: -o '%s': only PNG output is written; use a .png file name\n", o->cmd,
                o->output);
        return 2;
    }
    /* the output folder must exist (checked now, not after minutes of generation) */
    if (base != o->output && !memchr(o->output, '%', (size_t)(base - o->output))) {
        size_t n = (size_t)(base - o->output);
        char *dir = malloc(n + 1);
        if (!dir) {
            fprintf(stderr, "streamdiff %s: out of memory\n", o->cmd);
            return 1;
        }
        memcpy(dir, o->output, n);
        dir[n] = 0;
        struct stat sb;
        bool ok = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
        if (!ok)
            fprintf(stderr, "streamdiff %s: the output folder '%s' does not exist; create it (mkdir -p %s) or "
                            "choose another -o\n", o->cmd, dir, dir);
        free(dir);
        if (!ok)
            return 1;
    }
    if (o->schedule && o->sampler) {
        sd_sched_kind k;
        if (sd_sched_kind_from_name(o->sampler, &k) == SD_OK && k != SD_SCHED_DPMPP_2M && k != SD_SCHED_EULER) {
            fprintf(stderr,
                    "streamdiff %s: --scheduler %s works with --sampler dpm++2m or euler, not '%s'; drop "
                    "--scheduler or change the sampler\n", o->cmd, o->schedule, o->sampler);
            return 2;
        }
    }
    if (o->taesd && !*o->taesd) {
        fprintf(stderr, "streamdiff %s: --taesd needs a folder or Hugging Face id\n", o->cmd);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------ the command */

static uint64_t clock_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x & 0x7fffffffULL; /* 31 bits, like stable-diffusion.cpp: easy to type back */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_error(const gen_opts *o, const char *what, sd_status st)
{
    const char *msg = sd_last_error();
    fprintf(stderr, "streamdiff %s: %s: %s [%s]\n", o->cmd, what, msg && *msg ? msg : "unknown error",
            sd_status_name(st));
    return 1;
}

/* ", LoRA: a.safetensors:0.8, b.safetensors:1" appended to the parameters text (file names only). */
static char *append_loras(char *text, const gen_opts *o)
{
    size_t cap = strlen(text) + 32;
    for (int i = 0; i < o->n_loras; i++)
        cap += strlen(o->loras[i].path) + 32;
    char *t = realloc(text, cap);
    if (!t)
        return text;
    size_t n = strlen(t);
    n += (size_t)snprintf(t + n, cap - n, ", LoRA: ");
    for (int i = 0; i < o->n_loras && n < cap; i++) {
        const char *base = strrchr(o->loras[i].path, '/');
        base = base && base[1] ? base + 1 : o->loras[i].path;
        n += (size_t)snprintf(t + n, cap - n, "%s%s:%g", i ? ", " : "", base, (double)o->loras[i].scale);
    }
    return t;
}

static int run_generate(gen_opts *o, bool img2img)
{
    sd_gen_params defs;
    sd_gen_default_params(&defs);
    int rc;
    bool has_index = false;
    if ((rc = check_args(o, &has_index)) != 0)
        return rc;
    if ((rc = cli_controls_check(&o->ctl, o->cmd, img2img)) != 0)
        return rc;

    /* the init image first: a bad file fails before the slow model load */
    sd_image init = {0};
    if (img2img) {
        sd_status st = sd_image_load(o->init_img, &init);
        if (st != SD_OK) {
            run_error(o, "cannot read the init image", st);
            fprintf(stderr, "  (-i '%s' must be a readable PNG or JPEG file)\n", o->init_img);
            return 1;
        }
        /* like diffusers' image processor: the init size rounded down to multiples of 8 */
        if (!o->width)
            o->width = init.width / 8 * 8;
        if (!o->height)
            o->height = init.height / 8 * 8;
        if (o->width < 8 || o->height < 8 || o->width > GEN_MAX_SIZE || o->height > GEN_MAX_SIZE) {
            fprintf(stderr,
                    "streamdiff img2img: the init image '%s' is %dx%d; give -W and -H (multiples of 8 from 8 to "
                    "%d) to resize it\n",
                    o->init_img, init.width, init.height, GEN_MAX_SIZE);
            sd_image_free(&init);
            return 2;
        }
        if ((o->width != init.width || o->height != init.height) && o->verbose)
            fprintf(stderr, "init image %dx%d is resized to %dx%d\n", init.width, init.height, o->width, o->height);
    }
    if (cli_controls_load_images(&o->ctl, o->cmd)) { /* a bad control image fails before the model load too */
        sd_image_free(&init);
        return 1;
    }
    if (o->random_seed)
        o->seed = clock_seed();

    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.backend = o->backend;
    mp.n_threads = o->threads;
    mp.taesd = o->taesd;
    mp.keep_f16 = o->keep_f16;
    mp.precision = o->precision;
    mp.config_dir = o->config_dir;
    mp.prediction_type = o->prediction_type;
    mp.check_finite = o->check_finite;
    double t0 = now_s();
    if (o->verbose)
        fprintf(stderr, "loading model '%s'%s%s ...\n", o->model, o->taesd ? " with TAESD " : "", o->taesd ? o->taesd : "");
    sd_model *m = NULL;
    sd_status lst = sd_model_load(o->model, &mp, &m);
    if (lst != SD_OK) {
        run_error(o, "cannot load the model", lst);
        if (lst == SD_ERR_NOT_FOUND || lst == SD_ERR_IO)
            fprintf(stderr, "  (-m takes a diffusers folder, a .safetensors checkpoint or a Hugging Face id in the "
                            "local cache; see 'streamdiff %s --help', section 'models')\n", o->cmd);
        sd_image_free(&init);
        return 1;
    }
    double t_load = now_s() - t0;
    sd_model_info info;
    memset(&info, 0, sizeof info);
    bool have_info = sd_model_get_info(m, &info) == SD_OK;
    if (o->verbose) {
        if (have_info)
            fprintf(stderr,
                    "model: %s (%s), %s, prediction %s, native %dx%d, %.1f MiB of weights%s%s, loaded in %.2f s\n",
                    info.source ? info.source : o->model, info.arch ? info.arch : "?",
                    info.scheduler ? info.scheduler : "?", info.prediction_type ? info.prediction_type : "?",
                    info.native_size, info.native_size, (double)info.weight_bytes / (1024.0 * 1024.0),
                    info.has_taesd ? ", TAESD" : "", info.lcm_guidance_embedding ? ", LCM guidance embedding" : "",
                    t_load);
        else
            fprintf(stderr, "model loaded in %.2f s\n", t_load);
    }
    if (o->n_loras) {
        double tl = now_s();
        sd_lora_options lo = {.allow_unmatched = o->lora_allow_unmatched};
        sd_status ls = sd_model_apply_loras_ex(m, o->loras, o->n_loras, &lo);
        if (ls != SD_OK) {
            run_error(o, "cannot apply the LoRA(s)", ls);
            cli_controls_free(&o->ctl);
            sd_model_free(m);
            sd_image_free(&init);
            return 1;
        }
        if (o->verbose) {
            for (int i = 0; i < o->n_loras; i++)
                fprintf(stderr, "LoRA %s, scale %g\n", o->loras[i].path, (double)o->loras[i].scale);
            fprintf(stderr, "%d LoRA(s) fused in %.2f s\n", o->n_loras, now_s() - tl);
        }
    }

    /* the real size, so that the PNG parameters text names it */
    if (have_info && info.native_size > 0) {
        if (!o->width)
            o->width = info.native_size;
        if (!o->height)
            o->height = info.native_size;
    }
    if (o->ctl.n && cli_controls_prepare(&o->ctl, o->cmd, m, &init, o->width, o->height, o->verbose)) {
        cli_controls_free(&o->ctl); /* the nets before their model */
        sd_model_free(m);
        sd_image_free(&init);
        return 1;
    }
    if (o->negative && *o->negative && (o->cfg <= 1.0f || (have_info && info.lcm_guidance_embedding)))
        fprintf(stderr,
                "streamdiff %s: note: the negative prompt is not used: %s\n", o->cmd,
                o->cfg <= 1.0f ? "--cfg-scale <= 1 turns classifier-free guidance off; raise --cfg-scale to use it"
                              : "this LCM model steers with its guidance embedding instead of classifier-free "
                                "guidance");
    sd_gen_params gp = defs;
    gp.prompt = o->prompt;
    gp.negative_prompt = o->negative;
    gp.width = o->width;
    gp.height = o->height;
    gp.steps = o->steps_set ? o->steps : 0;
    gp.guidance_scale = o->cfg;
    gp.sampler = o->sampler;
    gp.schedule = o->schedule;
    gp.batch_size = o->batch_size;
    gp.clip_skip = o->clip_skip;
    gp.strength = o->strength;
    gp.eta = o->eta;
    gp.use_taesd = o->taesd != NULL;
    gp.rng = o->rng;
    for (int k = 0; k < 2; k++) {
        gp.original_size[k] = o->orig_size[k];
        gp.target_size[k] = o->target_size[k];
        gp.crops_coords_top_left[k] = o->crop[k];
        gp.negative_original_size[k] = o->neg_orig_size[k];
        gp.negative_target_size[k] = o->neg_target_size[k];
        gp.negative_crops_coords_top_left[k] = o->neg_crop[k];
    }
    gp.prompt_2 = o->prompt2;
    gp.negative_prompt_2 = o->negative2;
    cli_progress_state ps = {.tty = isatty(fileno(stderr)) != 0, .n_images = o->batch_count * o->batch_size,
                         .per_call = o->batch_size, .cmd = o->cmd};
    gp.progress = cli_progress;
    gp.progress_user = &ps;
    gp.controls = o->ctl.n ? o->ctl.ctl : NULL;
    gp.n_controls = o->ctl.n;

    if (o->random_seed)
        fprintf(stderr, "seed: %" PRIu64 " (random)\n", o->seed);
    if (o->verbose)
    {
        char steps[16] = "default", strength[32] = "";
        if (o->steps_set)
            snprintf(steps, sizeof steps, "%d", o->steps);
        if (img2img)
            snprintf(strength, sizeof strength, ", strength %g", (double)o->strength);
        fprintf(stderr, "%s: %dx%d, steps %s, cfg %g, sampler %s%s%s%s, seed %" PRIu64 ", %d image(s)\n", o->cmd,
                o->width, o->height, steps, (double)o->cfg, o->sampler ? o->sampler : "(the model's)",
                o->schedule ? " " : "", o->schedule ? o->schedule : "", strength, o->seed, ps.n_images);
    }

    sd_image *imgs = calloc((size_t)o->batch_size, sizeof *imgs);
    size_t name_cap = strlen(o->output) + 64;
    char *name = malloc(name_cap);
    if (!imgs || !name) {
        fprintf(stderr, "streamdiff %s: out of memory\n", o->cmd);
        free(imgs);
        free(name);
        cli_controls_free(&o->ctl);
        sd_model_free(m);
        sd_image_free(&init);
        return 1;
    }
    rc = 0;
    int total = o->batch_count * o->batch_size;
    double t_all = now_s();
    for (int b = 0; b < o->batch_count && !rc; b++) {
        gp.seed = o->seed + (uint64_t)b;
        ps.image = b * o->batch_size;
        double tg = now_s();
        sd_status st = img2img ? sd_img2img(m, &gp, &init, imgs) : sd_txt2img(m, &gp, imgs);
        cli_progress_end(&ps);
        if (st != SD_OK) {
            rc = run_error(o, "generation failed", st);
            break;
        }
        double t_gen = now_s() - tg;
        char *text = sd_gen_parameters_text(m, &gp, img2img);
        if (text && o->n_loras)
            text = append_loras(text, o);
        if (!text)
            fprintf(stderr, "streamdiff %s: warning: could not make the parameters text; the PNG will not carry it\n",
                    o->cmd);
        for (int k = 0; k < o->batch_size; k++) {
            int idx = b * o->batch_size + k;
            if (!rc && !output_name(o->output, has_index, idx, total, name, name_cap)) {
                fprintf(stderr, "streamdiff %s: the output name is too long\n", o->cmd);
                rc = 1;
            }
            sd_status ws = rc ? SD_OK : sd_image_save_png(name, &imgs[k], text);
            if (ws != SD_OK)
                rc = run_error(o, "cannot write the image", ws);
            if (!rc)
                printf("%s  %dx%d  seed %" PRIu64 "  %.2f s\n", name, imgs[k].width, imgs[k].height, gp.seed, t_gen);
            sd_image_free(&imgs[k]);
        }
        fflush(stdout);
        free(text);
    }
    if (!rc && o->verbose)
        fprintf(stderr, "%d image(s) in %.2f s (model load %.2f s)\n", total, now_s() - t_all, t_load);
    free(imgs);
    free(name);
    cli_controls_free(&o->ctl);
    sd_model_free(m);
    sd_image_free(&init);
    return rc;
}

static int generate(int argc, char **argv, bool img2img)
{
    sd_gen_params defs;
    sd_gen_default_params(&defs);
    gen_opts o = {
        .img2img = img2img,
        .cmd = img2img ? "img2img" : "txt2img",
        .prompt = "",
        .negative = NULL,
        .output = "output.png",
        .batch_count = 1,
        .batch_size = 1,
        .cfg = defs.guidance_scale,
        .strength = defs.strength,
        .eta = defs.eta,
        .seed = defs.seed,
        .clip_skip = defs.clip_skip,
        .rng = defs.rng,
        .backend = SD_BACKEND_CPU,
    };
    cli_controls_init(&o.ctl);
    int rc = parse_args(argc, argv, &o);
    if (rc < 0)
        rc = run_generate(&o, img2img);
    free_loras(&o);
    cli_controls_free(&o.ctl);
    return rc;
}

int cli_txt2img(int argc, char **argv)
{
    return generate(argc, argv, false);
}

int cli_img2img(int argc, char **argv)
{
    return generate(argc, argv, true);
}
