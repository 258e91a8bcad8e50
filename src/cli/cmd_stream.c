/* `streamdiff stream`: StreamDiffusion on a video, an image folder or a
 * camera (img2img), or a generated clip (txt2img), written to a video file or
 * a folder of PNGs.
 *
 * img2img runs the asynchronous pipeline of the public API: a reader thread
 * decodes frames and pushes them (file input: push waits, nothing is
 * dropped; live input: the oldest waiting frame is dropped), the main thread
 * pulls the outputs in input order, writes them, re-reads --prompt-file when
 * it changes, and prints the statistics. txt2img uses the synchronous call.
 *
 * Exit codes: 0 success, 1 a runtime failure, 2 a usage error. */
#include "cli/cli.h"
#include "cli/osc.h" /* cli_live (blending), and OSC where liblo is built in */
#include "io/video.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROMPT_MAX (64 * 1024)

typedef struct {
    const char *model, *taesd, *input, *output, *prompt, *prompt_file, *negative, *probe;
    sd_stream_params sp;
    int threads, frames;
    sd_backend_kind backend;
    sd_precision precision;
    bool txt2img, live_set, live;
    double fps, stats_every;
    sd_lora_spec loras[CLI_MAX_LORAS]; /* --lora (paths malloc'd) */
    int n_loras;
    bool lora_allow_unmatched;
    int osc_port;         /* 0: no OSC */
    const char *osc_bind; /* NULL: 127.0.0.1 */
    cli_controls *ctl;    /* --control ... (cli_control.c; owned by cli_stream) */
    cli_blend_list prompts, seeds; /* --blend-prompt, --seeds (cli_blend.c) */
    sd_blend_mode prompt_blend, seed_blend;
    bool raw_weights, seed_set;
} stream_opts;

/* ------------------------------------------------------------ shared parsers (cli.h) */

/* The list's syntax only (the one rule of a valid list: sd_stream_params_validate). */
bool cli_parse_t_index(const char *s, sd_stream_params *p)
{
    return cli_parse_int_list(s, 0, 100000, SD_STREAM_MAX_STEPS, p->t_index_list, &p->n_t_index);
}

bool cli_parse_cfg_type(const char *s, sd_cfg_type *out)
{
    static const char *names[] = {"none", "full", "self", "initialize"};
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(s, names[i])) {
            *out = (sd_cfg_type)i;
            return true;
        }
    return false;
}

const char *cli_cfg_type_name(sd_cfg_type t)
{
    static const char *names[] = {"none", "full", "self", "initialize"};
    return (unsigned)t < 4 ? names[t] : "?";
}

/* The options behind sd_stream_params fields (the validator's messages name the field). */
static const cli_param_opt k_param_opts[] = {
    {"t_index_list", "--t-index"},     {"num_inference_steps", "--steps"}, {"cfg_type", "--cfg-type"},
    {"guidance_scale", "--guidance"},  {"delta", "--delta"},           {"width", "--width"},
    {"height", "--height"},            {"similarity_threshold", "--similarity"},
    {"max_skip_frames", "--max-skip"}, {"queue_size", "--queue"},      {"rng", "--rng"},
    {NULL, NULL}};

/* ------------------------------------------------------------ help */

static void usage(FILE *f)
{
    sd_stream_params d;
    sd_stream_default_params(&d);
    fprintf(f,
            "streamdiff stream — real-time img2img on video with StreamDiffusion (or a txt2img clip)\n\n"
            "usage: streamdiff stream -m MODEL -i INPUT -o OUTPUT [-p PROMPT] [options]\n"
            "       streamdiff stream -m MODEL --txt2img --frames N -o OUTPUT [-p PROMPT] [options]\n\n"
            "Every input frame is center-cropped and resized to -W x -H, encoded, noised to the\n"
            "first entry of --t-index and denoised by a few-step model (sd-turbo, LCM) in one\n"
            "UNet call per frame: the stream batch keeps len(t-index) frames in flight, one per\n"
            "denoising step, so an output leaves len(t-index)-1 frames after its input came in.\n"
            "At the end the last frame is repeated until every frame has come out: the output\n"
            "has exactly as many frames as the input (file input).\n\n"
            "input and output:\n"
            "  -i, --input PATH        a video file (.mp4, .mkv, .webm, .avi, ...), a folder of PNG/JPEG\n"
            "                          images read in name order, or a camera (/dev/video0)\n"
            "  -o, --output PATH|URL   a video file (.mp4/.mkv/.mov: H.264 via libx264; .avi: MPEG-4), a\n"
            "                          folder (existing, or ending in /) for frame_000000.png, ..., or a\n"
            "                          live output, each frame sent as soon as it is made (H.264 zerolatency):\n"
            "                          rtmp://host/app/key (OBS media source, nginx-rtmp, Twitch), srt://host:port,\n"
            "                          udp://host:port, tcp://host:port (MPEG-TS), or /dev/videoN, a v4l2loopback\n"
            "                          virtual camera that OBS, Zoom and browsers see (docs/live-output.md)\n"
            "      --fps X             output frame rate (default: the input's, else 30)\n"
            "      --frames N          stop after N input frames (txt2img: make N frames; required)\n"
            "      --live              live policy: when the pipeline is behind, the oldest waiting frame is\n"
            "                          dropped so the output follows the input with the least delay (the\n"
            "                          default for a camera). A file or folder is then played in real time\n"
            "                          (at --fps, else its own rate, else 30), like a camera; without\n"
            "                          --live file input loses nothing and runs as fast as it can\n"
            "      --no-live           never drop frames, also for a camera\n"
            "      --probe PATH        decode a video / folder / camera input, print its frame count, size\n"
            "                          and fps, and exit (no model needed)\n"
            "\nmodel and prompt:\n"
            "  -m, --model PATH|ID     the model (required): a diffusers folder, a .safetensors checkpoint or\n"
            "                          a Hugging Face id in the local cache; a few-step model (sd-turbo,\n"
            "                          LCM, sdxl-turbo) is what StreamDiffusion is made for; SDXL models\n"
            "                          stream too (both text encoders, pooled embedding and size ids per row)\n"
            "      --taesd DIR|ID      TAESD (AutoencoderTiny) for fast encode/decode (recommended;\n"
            "                          without it the full VAE runs); SDXL: madebyollin/taesdxl\n"
            "  -p, --prompt TEXT       the prompt (default: \"\")\n"
            "      --prompt-file FILE  read the prompt from FILE and re-read it whenever it changes (its\n"
            "                          modification time); a new prompt takes effect on the next frame.\n"
            "                          Edit the file while streaming to steer the video.\n"
            "  -n, --negative-prompt T the negative prompt (used by --cfg-type full and initialize)\n"
            "      --blend-prompt TEXT[:W]  blend weighted prompts instead of -p (repeat, up to 8; W >= 0, default 1;\n"
            "                          each encoded once, live weights over OSC /streamdiff/prompt_weights)\n"
            "      --prompt-blend M    linear | slerp (default: slerp; slerp takes two prompts, else linear)\n"
            "      --seeds S[:W],..    blend the initial noises of several seeds instead of -s (up to 8)\n"
            "      --seed-blend M      linear | slerp (default: linear)\n"
            "      --raw-weights       use blend weights as given (default: divided by their sum;\n"
            "                          docs/blending.md has the formulas)\n"
            "      --lora PATH[:SCALE] fuse a LoRA / LoCon with strength SCALE (default 1) before streaming;\n"
            "                          repeatable, e.g. an LCM-LoRA plus a style LoRA (see txt2img --help)\n"
            "      --lora-allow-unmatched  only warn about LoRA tensors that match no layer of the model\n"
            "      --control NET:IMAGE[:SCALE[:START:END]]  a ControlNet (folder, v1.x .safetensors or HF id) steers\n"
            "                          every frame: IMAGE a fixed control image, or 'input' = made from each input\n"
            "                          frame (each stream-batch row takes its own frame's); START:END = the part of\n"
            "                          the steps it acts on; repeat for several (up to 8)\n"
            "      --control-preprocess P  how 'input' control images are made: none | canny | softedge | scribble |\n"
            "                          invert | tile (one for all); --canny-low/--canny-high N, --scribble-threshold N\n"
            "\nStreamDiffusion:\n"
            "      --t-index LIST      ascending indices into the 50-step LCM schedule, one per denoising\n"
            "                          step; smaller = more noise = more change (default: 32,45)\n"
            "      --steps N           length of that schedule, 1..1000 (default: 50)\n"
            "      --cfg-type T        none | full | self | initialize (default: self): residual CFG (RCFG)\n"
            "                          self: virtual negative from the stored noise, no extra UNet pass;\n"
            "                          initialize: one negative pass per frame; full: classic CFG (2x cost)\n"
            "      --guidance G        guidance scale, 0..100 (default: %g; <= 1 turns guidance off)\n"
            "      --delta D           RCFG delta, how strongly the virtual negative counts (default: %g)\n"
            "  -s, --seed N            seed of the fixed stream noise (default: %" PRIu64 ")\n"
            "  -W, --width N           frame width, a multiple of 64 for SD (default: %d)\n"
            "  -H, --height N          frame height (default: %d)\n"
            "      --similarity X      stochastic similar-image filter: skip a frame whose cosine similarity\n"
            "                          to the last processed one exceeds X, e.g. 0.98 (0 = off, the default);\n"
            "                          a skipped frame repeats the previous output\n"
            "      --max-skip N        at most N skipped frames in a row (default: %d)\n"
            "      --no-denoising-batch run the steps one after another (no stream batch; no delay)\n"
            "      --rng torch|fast    noise generator (default: torch)\n"
            "      --queue N           frames waiting per pipeline stage, 1..64 (default: %d)\n"
            "\ntxt2img:\n"
            "      --txt2img           generate --frames N frames from noise instead of reading input\n"
            "\nperformance and output:\n"
            "      --backend cpu|cuda  compute backend (default: cpu)\n"
            "  -t, --threads N         CPU threads, 0 = all cores (default: 0)\n"
            "      --precision P       CPU compute: auto (default: bf16 where the CPU has AMX, or AVX512-BF16\n"
            "                          faster than its fp32 FMA, else fp32; `streamdiff --version` says which),\n"
            "                          fp32, bf16 or int8 (experimental: W8A8 linears/convs on AMX-INT8 or\n"
            "                          AVX512-VNNI, else as bf16)\n"
            "      --stats-every S     print statistics every S seconds, 0 = only at the end (default: 2)\n"
            "      --osc-port N        listen for OSC control on UDP port N (TouchDesigner, Max, VJ tools):\n"
            "                          /streamdiff/prompt s, /streamdiff/negative_prompt s, /streamdiff/guidance f,\n"
            "                          /streamdiff/delta f, /streamdiff/seed i, /streamdiff/t_index i..,\n"
            "                          /streamdiff/similarity f [i], /streamdiff/lora/N/scale f (N-th --lora from 0),\n"
            "                          /streamdiff/controlnet/N/{scale f, guidance f f, preprocess s, canny i i,\n"
            "                          threshold i} (N-th --control from 0);\n"
            "                          applied on the next frame (docs/osc.md)\n"
            "      --osc-bind ADDR     the address OSC listens on (default: 127.0.0.1, this machine only;\n"
            "                          0.0.0.0 takes messages from the network)\n"
            "  -h, --help              this help\n"
            "\nWhile it runs it prints frames in/out, skipped and dropped frames, output fps (EMA),\n"
            "push->pull latency and the time of one stream step; Ctrl-C stops reading and finishes the\n"
            "frames already in flight.\n"
            "\nexamples:\n"
            "  # sd-turbo + TAESD on a clip, one denoising step, no guidance\n"
            "  streamdiff stream -m stabilityai/sd-turbo --taesd madebyollin/taesd -i in.mp4 -o out.mp4 \\\n"
            "      -p \"a cyberpunk city, neon\" --t-index 35 --cfg-type none\n"
            "  # LCM-style model, two steps with RCFG self, prompt steered live from a file\n"
            "  echo \"an oil painting\" > prompt.txt\n"
            "  streamdiff stream -m SimianLuo/LCM_Dreamshaper_v7 --taesd madebyollin/taesd -i /dev/video0 \\\n"
            "      -o live.mkv --prompt-file prompt.txt --t-index 32,45 --cfg-type self --guidance 1.4\n"
            "  # the webcam, stylised, into OBS (Media Source, input udp://127.0.0.1:9000, see docs/live-output.md)\n"
            "  streamdiff stream -m stabilityai/sd-turbo --taesd madebyollin/taesd -i /dev/video0 \\\n"
            "      -o udp://127.0.0.1:9000 -W 512 -H 512 -p \"anime\" --t-index 35 --cfg-type none\n"
            "  # a folder of frames to a folder of PNGs, skipping near-duplicate frames\n"
            "  streamdiff stream -m stabilityai/sd-turbo --taesd madebyollin/taesd -i frames/ -o styled/ \\\n"
            "      -p \"watercolor\" --similarity 0.98 --max-skip 10\n"
            "  # sdxl-turbo + TAESDXL at 512x512 on the webcam, one step\n"
            "  streamdiff stream -m stabilityai/sdxl-turbo --taesd madebyollin/taesdxl -i /dev/video0 \\\n"
            "      -o live.mkv -W 512 -H 512 -p \"a watercolor portrait\" --t-index 35 --cfg-type none\n"
            "  # a 5 second txt2img clip at 30 fps\n"
            "  streamdiff stream -m stabilityai/sd-turbo --taesd madebyollin/taesd --txt2img --frames 150 \\\n"
            "      -o clip.mp4 -p \"clouds over mountains, timelapse\" --t-index 0 --cfg-type none\n",
            (double)d.guidance_scale, (double)d.delta, d.seed, d.width, d.height, d.max_skip_frames, d.queue_size);
}

/* ------------------------------------------------------------ arguments */

static bool flag_is(const char *name, const char *shrt, const char *lng)
{
    return (shrt && !strcmp(name, shrt)) || !strcmp(name, lng);
}

/* Returns -1 to go on, or an exit code (0 after --help). */
static int parse_args(int argc, char **argv, stream_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char name[64];
        const char *inl = NULL, *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            inl = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
#define FLAG(s, l) flag_is(name, (s), (l))
        /* flags without a value */
        if (FLAG("-h", "--help")) {
            usage(stdout);
            return 0;
        }
        bool noval = true;
        if (FLAG(NULL, "--txt2img"))
            o->txt2img = true;
        else if (FLAG(NULL, "--live"))
            o->live_set = o->live = true;
        else if (FLAG(NULL, "--no-live"))
            o->live_set = true, o->live = false;
        else if (FLAG(NULL, "--no-denoising-batch"))
            o->sp.use_denoising_batch = false;
        else if (FLAG(NULL, "--lora-allow-unmatched"))
            o->lora_allow_unmatched = true;
        else if (FLAG(NULL, "--raw-weights"))
            o->raw_weights = true;
        else
            noval = false;
        if (noval) {
            if (inl) {
                fprintf(stderr, "streamdiff stream: %s takes no value\n", name);
                return 2;
            }
            continue;
        }
        static const char *with_value[] = {"-m", "--model", "--taesd", "-i", "--input", "-o", "--output", "-p",
                                           "--prompt", "--prompt-file", "-n", "--negative-prompt", "--t-index",
                                           "--steps", "--cfg-type", "--guidance", "--delta", "-s", "--seed", "-W",
                                           "--width", "-H", "--height", "--similarity", "--max-skip", "--frames",
                                           "-t", "--threads", "--backend", "--precision", "--fps", "--queue", "--rng",
                                           "--stats-every", "--probe", "--lora", "--osc-port", "--osc-bind",
                                           "--control", "--control-preprocess", "--canny-low", "--canny-high",
                                           "--scribble-threshold", "--blend-prompt", "--prompt-blend", "--seeds",
                                           "--seed-blend"};
        bool known = false;
        for (size_t k = 0; k < SD_ARRAY_LEN(with_value) && !known; k++)
            known = !strcmp(name, with_value[k]);
        if (!known) {
            if (a[0] != '-')
                fprintf(stderr, "streamdiff stream: unexpected argument '%s' (quote a prompt that has spaces)\n", a);
            else
                fprintf(stderr, "streamdiff stream: unknown option '%s'\n", a);
            fprintf(stderr, "Run 'streamdiff stream --help' for the list of options.\n");
            return 2;
        }
        const char *v = inl;
        if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "streamdiff stream: %s needs a value; see 'streamdiff stream --help'\n", name);
                return 2;
            }
            v = argv[++i];
        }
        double dv;
        int iv;
        if (FLAG("-m", "--model"))
            o->model = v;
        else if (FLAG(NULL, "--taesd"))
            o->taesd = v;
        else if (FLAG("-i", "--input"))
            o->input = v;
        else if (FLAG("-o", "--output"))
            o->output = v;
        else if (FLAG("-p", "--prompt"))
            o->prompt = v;
        else if (FLAG(NULL, "--blend-prompt")) {
            if (!cli_parse_blend_prompt(v, &o->prompts))
                return cli_bad_value("stream", name, v, "TEXT or TEXT:WEIGHT (weight 0..1e6; at most 8 prompts)");
        } else if (FLAG(NULL, "--seeds")) {
            if (!cli_parse_seed_list(v, &o->seeds))
                return cli_bad_value("stream", name, v, "SEED[:WEIGHT],... (1..8 seeds, weights 0..1e6)");
        } else if (FLAG(NULL, "--prompt-blend") || FLAG(NULL, "--seed-blend")) {
            if (!sd_blend_mode_from_name(v, name[2] == 'p' ? &o->prompt_blend : &o->seed_blend))
                return cli_bad_value("stream", name, v, "linear or slerp");
        } else if (FLAG(NULL, "--probe"))
            o->probe = v;
        else if (FLAG(NULL, "--prompt-file"))
            o->prompt_file = v;
        else if (FLAG("-n", "--negative-prompt"))
            o->negative = v;
        else if (FLAG(NULL, "--t-index")) {
            if (!cli_parse_t_index(v, &o->sp))
                return cli_bad_value("stream", name, v, "at most 16 comma-separated whole numbers (e.g. 32,45)");
        } else if (FLAG(NULL, "--steps")) {
            if (!cli_parse_int(v, INT_MIN, INT_MAX, &o->sp.num_inference_steps))
                return cli_bad_value("stream", name, v, "a whole number");
        } else if (FLAG(NULL, "--cfg-type")) {
            if (!cli_parse_cfg_type(v, &o->sp.cfg_type))
                return cli_bad_value("stream", name, v, "none, full, self or initialize");
        } else if (FLAG(NULL, "--guidance")) {
            if (!cli_parse_double(v, -FLT_MAX, FLT_MAX, &dv))
                return cli_bad_value("stream", name, v, "a number");
            o->sp.guidance_scale = (float)dv;
        } else if (FLAG(NULL, "--delta")) {
            if (!cli_parse_double(v, -FLT_MAX, FLT_MAX, &dv))
                return cli_bad_value("stream", name, v, "a number");
            o->sp.delta = (float)dv;
        } else if (FLAG("-s", "--seed")) {
            o->seed_set = true;
            if (!cli_parse_u64(v, &o->sp.seed))
                return cli_bad_value("stream", name, v, "a whole number from 0 to 18446744073709551615");
        } else if (FLAG("-W", "--width") || FLAG("-H", "--height")) {
            if (!cli_parse_int(v, INT_MIN, INT_MAX, &iv))
                return cli_bad_value("stream", name, v, "a number of pixels, a multiple of 8 (64 for SD models)");
            *(FLAG("-W", "--width") ? &o->sp.width : &o->sp.height) = iv;
        } else if (FLAG(NULL, "--similarity")) {
            if (!cli_parse_double(v, -FLT_MAX, FLT_MAX, &dv))
                return cli_bad_value("stream", name, v, "a cosine-similarity threshold from 0 (off) to 1, e.g. 0.98");
            o->sp.similarity_threshold = (float)dv;
        } else if (FLAG(NULL, "--max-skip")) {
            if (!cli_parse_int(v, INT_MIN, INT_MAX, &o->sp.max_skip_frames))
                return cli_bad_value("stream", name, v, "a number of frames");
        } else if (FLAG(NULL, "--frames")) {
            if (!cli_parse_int(v, 1, 100000000, &o->frames))
                return cli_bad_value("stream", name, v, "a number of frames from 1");
        } else if (FLAG("-t", "--threads")) {
            if (!cli_parse_int(v, 0, 1024, &o->threads))
                return cli_bad_value("stream", name, v, "a number of threads from 0 (all cores) to 1024");
        } else if (FLAG(NULL, "--precision")) {
            if (!sd_precision_from_name(v, &o->precision))
                return cli_bad_value("stream", name, v, "fp32, bf16, int8 or auto");
        } else if (FLAG(NULL, "--backend")) {
            if (!strcasecmp(v, "cpu"))
                o->backend = SD_BACKEND_CPU;
            else if (!strcasecmp(v, "cuda"))
                o->backend = SD_BACKEND_CUDA;
            else
                return cli_bad_value("stream", name, v, "'cpu' or 'cuda'");
        } else if (FLAG(NULL, "--fps")) {
            if (!cli_parse_double(v, 0.01, 1000, &o->fps))
                return cli_bad_value("stream", name, v, "frames per second from 0.01 to 1000");
        } else if (FLAG(NULL, "--queue")) {
            if (!cli_parse_int(v, INT_MIN, INT_MAX, &o->sp.queue_size))
                return cli_bad_value("stream", name, v, "a queue depth");
        } else if (FLAG(NULL, "--rng")) {
            if (!strcasecmp(v, "torch"))
                o->sp.rng = SD_RNG_TYPE_TORCH;
            else if (!strcasecmp(v, "fast"))
                o->sp.rng = SD_RNG_TYPE_FAST;
            else
                return cli_bad_value("stream", name, v, "'torch' or 'fast'");
        } else if (FLAG(NULL, "--lora")) {
            if (o->n_loras >= CLI_MAX_LORAS)
                return cli_bad_value("stream", name, v, "at most 16 LoRAs");
            if (!cli_parse_lora(v, &o->loras[o->n_loras]))
                return cli_bad_value("stream", name, v, "PATH or PATH:SCALE with SCALE a number from -100 to 100 (e.g. lcm.safetensors:1)");
            o->n_loras++;
        } else if (FLAG(NULL, "--control")) {
            int rc = cli_controls_add(o->ctl, "stream", name, v);
            if (rc)
                return rc;
        } else if (FLAG(NULL, "--control-preprocess")) {
            int rc = cli_controls_preprocess(o->ctl, "stream", name, v);
            if (rc)
                return rc;
        } else if (FLAG(NULL, "--canny-low") || FLAG(NULL, "--canny-high") || FLAG(NULL, "--scribble-threshold")) {
            int rc = cli_controls_threshold(o->ctl, "stream", name, v);
            if (rc)
                return rc;
        } else if (FLAG(NULL, "--osc-port")) {
            if (!cli_parse_int(v, 1, 65535, &o->osc_port))
                return cli_bad_value("stream", name, v, "a UDP port from 1 to 65535, e.g. 9000");
        } else if (FLAG(NULL, "--osc-bind")) {
            o->osc_bind = v;
        } else if (FLAG(NULL, "--stats-every")) {
            if (!cli_parse_double(v, 0, 3600, &o->stats_every))
                return cli_bad_value("stream", name, v, "seconds from 0 (only at the end) to 3600");
        }
#undef FLAG
    }
    return -1;
}

static int check_args(const stream_opts *o)
{
    if (!o->model) {
        fprintf(stderr, "streamdiff stream: no model given; pass -m PATH (e.g. -m stabilityai/sd-turbo); see "
                        "'streamdiff stream --help'\n");
        return 2;
    }
    if (!o->output) {
        fprintf(stderr, "streamdiff stream: no output given; pass -o out.mp4 (a video file) or -o frames/ (PNGs)\n");
        return 2;
    }
    if (o->txt2img && o->input) {
        fprintf(stderr, "streamdiff stream: --txt2img generates frames from noise; drop -i %s (or drop --txt2img for "
                        "img2img on the input)\n", o->input);
        return 2;
    }
    if (o->txt2img && !o->frames) {
        fprintf(stderr, "streamdiff stream: --txt2img needs --frames N (how many frames to make)\n");
        return 2;
    }
    if (!o->txt2img && !o->input) {
        fprintf(stderr, "streamdiff stream: no input given; pass -i VIDEO, -i FOLDER or -i /dev/video0 (or --txt2img "
                        "--frames N to generate from noise)\n");
        return 2;
    }
    if (o->prompt && o->prompt_file) {
        fprintf(stderr, "streamdiff stream: give either -p or --prompt-file, not both\n");
        return 2;
    }
    if ((o->prompts.n && (o->prompt || o->prompt_file)) || (o->seeds.n && o->seed_set)) {
        fprintf(stderr, "streamdiff stream: %s\n", o->seeds.n && o->seed_set ? "give either -s or --seeds, not both"
                                                     : "give either --blend-prompt or -p / --prompt-file, not both");
        return 2;
    }
    for (int k = 0; k < 2; k++) { /* the library's weight rule, before the model loads */
        const cli_blend_list *b = k ? &o->seeds : &o->prompts;
        if (b->n && sd_blend_check(b->weight, b->n, k ? "--seeds" : "--blend-prompt") != SD_OK) {
            fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
            return 2;
        }
    }
    return cli_stream_params_check("stream", &o->sp, k_param_opts);
}

/* ------------------------------------------------------------ prompt file */

typedef struct {
    const char *path;
    struct timespec mtime;
    off_t size;
    double last_check;
    cli_live live; /* the prompt(s), seeds and settings the stream runs with */
#ifdef SD_HAVE_OSC
    cli_osc *osc; /* live control: OSC updates applied between frames (NULL: none) */
    cli_osc_update upd;
#endif
} prompt_watch;

/* Between frames: OSC updates that arrived since the last frame. */
static void poll_osc(prompt_watch *pw, int64_t next_frame)
{
#ifdef SD_HAVE_OSC
    if (pw->osc && cli_osc_take(pw->osc, &pw->upd))
        cli_osc_apply(&pw->upd, &pw->live, next_frame);
#else
    (void)pw, (void)next_frame;
#endif
}

/* Reads the file (trailing whitespace trimmed); *changed when it differs from last time. */
static sd_status read_prompt_file(prompt_watch *w, char **text, bool *changed)
{
    *changed = false;
    *text = NULL;
    struct stat sb;
    if (stat(w->path, &sb) != 0)
        return sd_fail(SD_ERR_IO, "%s: %s", w->path, strerror(errno));
    if (sb.st_mtim.tv_sec == w->mtime.tv_sec && sb.st_mtim.tv_nsec == w->mtime.tv_nsec && sb.st_size == w->size)
        return SD_OK;
    char *data;
    size_t len;
    SD_TRY(sd_read_file(w->path, PROMPT_MAX, &data, &len));
    w->mtime = sb.st_mtim;
    w->size = sb.st_size;
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' || data[len - 1] == '\t'))
        len--;
    data[len] = 0;
    *text = data;
    *changed = true;
    return SD_OK;
}

/* ------------------------------------------------------------ statistics */

static void print_stats(const sd_stream *s, const char *tag, double elapsed, int64_t written)
{
    sd_stream_stats st;
    if (sd_stream_get_stats(s, &st) != SD_OK)
        return;
    double skip = st.frames_in ? 100.0 * (double)st.frames_skipped / (double)st.frames_in : 0.0;
    fprintf(stderr,
            "%s %6.1fs  in %" PRIu64 "  out %" PRId64 "  skipped %" PRIu64 " (%.0f%%)  dropped %" PRIu64
            "  |  %.1f fps  latency %.0f ms  step %.1f ms\n",
            tag, elapsed, st.frames_in, written, st.frames_skipped, skip, st.frames_dropped, st.fps, st.latency_ms,
            st.inference_ms);
}

/* ------------------------------------------------------------ img2img */

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends at once */
}

typedef struct {
    sd_stream *s;
    sd_video_source *src;
    int max_frames;
    double pace_fps; /* live file input: push in real time at this rate (0: as fast as possible) */
    int64_t pushed;
    sd_status st;
    char err[1024];
    volatile int done; /* set under `mu` */
    pthread_mutex_t mu;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    sd_rgb frame = {0};
    sd_status st = SD_OK;
    double t0 = sd_time_now();
    while (!g_interrupted && (!r->max_frames || r->pushed < r->max_frames)) {
        if (r->pace_fps > 0) { /* play the file like a camera */
            double wait = t0 + (double)r->pushed / r->pace_fps - sd_time_now();
            if (wait > 0)
                usleep((useconds_t)(wait * 1e6));
        }
        st = sd_video_source_read(r->src, &frame);
        if (st == SD_ERR_NOT_FOUND) {
            st = r->pushed ? SD_OK
                           : sd_fail(SD_ERR_FORMAT, "the input has no frame that could be decoded (truncated or "
                                                    "damaged file?)");
            break;
        }
        if (st == SD_OK)
            st = sd_stream_push_frame(r->s, &frame);
        if (st != SD_OK)
            break;
        r->pushed++;
    }
    pthread_mutex_lock(&r->mu);
    if (st != SD_OK) {
        r->st = st;
        snprintf(r->err, sizeof r->err, "%s", sd_last_error());
    }
    pthread_mutex_unlock(&r->mu);
    sd_stream_flush(r->s);
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    pthread_mutex_unlock(&r->mu);
    sd_rgb_free(&frame);
    return NULL;
}

static int run_img2img(const stream_opts *o, sd_stream *s, sd_video_source *src, sd_video_sink *sink,
                       prompt_watch *pw)
{
    reader r = {.s = s, .src = src, .max_frames = o->frames};
    if (o->sp.drop_old_frames && sd_video_source_kind(src) != SD_VIDEO_CAMERA)
        r.pace_fps = o->fps > 0 ? o->fps : sd_video_source_fps(src) > 0 ? sd_video_source_fps(src) : 30.0;
    pthread_mutex_init(&r.mu, NULL);
    g_interrupted = 0;
    void (*old)(int) = signal(SIGINT, on_sigint);
    pthread_t th;
    if (pthread_create(&th, NULL, reader_main, &r) != 0) {
        fprintf(stderr, "streamdiff stream: cannot start the reader thread\n");
        return 1;
    }
    double t0 = sd_time_now(), next_stats = t0 + o->stats_every;
    int64_t written = 0, last_id = -1;
    int rc = 0;
    sd_image out = {0};
    for (;;) {
        int64_t id;
        sd_status st = sd_stream_pull_frame(s, &out, &id, 100);
        double now = sd_time_now();
        if (st == SD_OK) {
            if (id <= last_id) {
                fprintf(stderr, "streamdiff stream: internal error: frame %" PRId64 " after %" PRId64 "\n", id, last_id);
                rc = 1;
                break;
            }
            last_id = id;
            if (sd_video_sink_write(sink, &out) != SD_OK) {
                fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
                rc = 1;
                break;
            }
            written++;
        } else if (st == SD_ERR_NOT_FOUND) {
            pthread_mutex_lock(&r.mu);
            int done = r.done;
            pthread_mutex_unlock(&r.mu);
            sd_stream_stats ss;
            sd_stream_get_stats(s, &ss);
            if (done && ss.frames_out + ss.frames_dropped >= ss.frames_in)
                break;
        } else {
            fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
            rc = 1;
            break;
        }
        if (pw->path && now - pw->last_check > 0.1) {
            pw->last_check = now;
            char *text;
            bool changed;
            if (read_prompt_file(pw, &text, &changed) != SD_OK) {
                fprintf(stderr, "streamdiff stream: warning: %s (keeping the current prompt)\n", sd_last_error());
            } else if (changed) {
                if (sd_stream_set_prompt(s, text, o->negative) == SD_OK)
                    fprintf(stderr, "prompt: \"%s\" (from frame %" PRId64 " on)\n", text, last_id + 1);
                else
                    fprintf(stderr, "streamdiff stream: warning: new prompt refused: %s\n", sd_last_error());
                free(text);
            }
        }
        poll_osc(pw, last_id + 1);
        if (o->stats_every > 0 && now >= next_stats) {
            print_stats(s, "stream", now - t0, written);
            next_stats = now + o->stats_every;
        }
    }
    if (rc) { /* stop the reader: it may wait in push (file input) */
        g_interrupted = 1;
        sd_image drain = {0};
        for (;;) {
            pthread_mutex_lock(&r.mu);
            int done = r.done;
            pthread_mutex_unlock(&r.mu);
            if (done)
                break;
            sd_stream_pull_frame(s, &drain, NULL, 50);
        }
        sd_image_free(&drain);
    }
    pthread_join(th, NULL);
    signal(SIGINT, old);
    sd_image_free(&out);
    if (r.st != SD_OK) {
        fprintf(stderr, "streamdiff stream: reading the input failed: %s\n", r.err);
        rc = 1;
    }
    double el = sd_time_now() - t0;
    print_stats(s, "done  ", el, written);
    fprintf(stderr, "wrote %" PRId64 " frames to %s (%s) in %.1f s: %.2f frames/s overall%s\n", written, o->output,
            sd_video_sink_codec(sink), el, el > 0 ? (double)written / el : 0.0,
            g_interrupted && !rc ? " (interrupted)" : "");
    return rc;
}

/* ------------------------------------------------------------ txt2img */

static int run_txt2img(const stream_opts *o, sd_stream *s, sd_video_sink *sink, prompt_watch *pw)
{
    int warm = o->sp.use_denoising_batch ? o->sp.n_t_index - 1 : 0; /* the empty batch's outputs */
    sd_image out = {0};
    double t0 = sd_time_now(), next_stats = t0 + o->stats_every, t_first = 0;
    int64_t written = 0;
    int rc = 0;
    g_interrupted = 0;
    void (*old)(int) = signal(SIGINT, on_sigint);
    double ema = 0;
    for (int k = 0; k < o->frames + warm && !g_interrupted; k++) {
        double now = sd_time_now();
        if (pw->path && now - pw->last_check > 0.1) {
            pw->last_check = now;
            char *text;
            bool changed;
            if (read_prompt_file(pw, &text, &changed) == SD_OK && changed) {
                if (sd_stream_set_prompt(s, text, o->negative) == SD_OK)
                    fprintf(stderr, "prompt: \"%s\" (from frame %d on)\n", text, k);
                free(text);
            }
        }
        poll_osc(pw, k);
        double ts = sd_time_now();
        if (sd_stream_txt2img(s, &out) != SD_OK) {
            fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
            rc = 1;
            break;
        }
        double dt = sd_time_now() - ts;
        ema = ema > 0 ? 0.9 * ema + 0.1 * dt : dt;
        if (k < warm)
            continue;
        if (!t_first)
            t_first = sd_time_now();
        if (sd_video_sink_write(sink, &out) != SD_OK) {
            fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
            rc = 1;
            break;
        }
        written++;
        now = sd_time_now();
        if (o->stats_every > 0 && now >= next_stats) {
            fprintf(stderr, "txt2img %6.1fs  frames %" PRId64 "/%d  |  %.1f fps  step %.1f ms\n", now - t0, written,
                    o->frames, 1.0 / ema, ema * 1e3);
            next_stats = now + o->stats_every;
        }
    }
    signal(SIGINT, old);
    sd_image_free(&out);
    double el = sd_time_now() - t0;
    fprintf(stderr, "wrote %" PRId64 " txt2img frames to %s (%s) in %.1f s: %.2f frames/s (step %.1f ms EMA)\n", written,
            o->output, sd_video_sink_codec(sink), el, el > 0 ? (double)written / el : 0.0, ema * 1e3);
    return rc;
}

/* ------------------------------------------------------------ probe */

/* Decodes every frame: "frames N size WxH fps X" (sizes: the first frame's;
 * "mixed" when they vary). */
static int probe(const char *path)
{
    sd_video_source *v;
    if (sd_video_source_open(path, &v) != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        return 1;
    }
    sd_rgb f = {0};
    int64_t n = 0;
    int w = 0, h = 0;
    bool mixed = false;
    sd_status st;
    while ((st = sd_video_source_read(v, &f)) == SD_OK) {
        if (!n)
            w = f.width, h = f.height;
        mixed |= f.width != w || f.height != h;
        n++;
    }
    int rc = 0;
    if (st != SD_ERR_NOT_FOUND) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = 1;
    } else if (!n) {
        fprintf(stderr, "streamdiff stream: %s: no frame could be decoded (truncated or damaged file?)\n", path);
        rc = 1;
    }
    printf("frames %" PRId64 " size %dx%d%s fps %.3f\n", n, w, h, mixed ? " (mixed)" : "", sd_video_source_fps(v));
    sd_rgb_free(&f);
    sd_video_source_close(v);
    return rc;
}

/* ------------------------------------------------------------ main */

static int cli_stream_run(stream_opts *po);

int cli_stream(int argc, char **argv)
{
    cli_controls ctl;
    cli_controls_init(&ctl);
    static stream_opts o; /* large (the blend lists); one per process */
    o = (stream_opts){.backend = SD_BACKEND_CPU, .precision = SD_PRECISION_AUTO, .stats_every = 2.0, .ctl = &ctl,
                      .prompt_blend = SD_BLEND_SLERP, .seed_blend = SD_BLEND_LINEAR};
    sd_stream_default_params(&o.sp);
    o.sp.n_t_index = 0;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0)
        rc = cli_stream_run(&o);
    for (int i = 0; i < o.n_loras; i++)
        free((char *)o.loras[i].path);
    cli_controls_free(&ctl);
    return rc;
}

static int cli_stream_run(stream_opts *po)
{
    stream_opts o = *po; /* parsed options (the LoRA paths stay owned by cli_stream) */
    int rc;
    if (o.probe)
        return probe(o.probe);
    if (o.sp.n_t_index == 0) {
        sd_stream_params d;
        sd_stream_default_params(&d);
        memcpy(o.sp.t_index_list, d.t_index_list, sizeof d.t_index_list);
        o.sp.n_t_index = d.n_t_index;
    }
    if ((rc = check_args(&o)) || (rc = cli_controls_check(o.ctl, "stream", !o.txt2img)))
        return rc;
    if (cli_controls_load_images(o.ctl, "stream")) /* fixed control images: fail before the model load */
        return 1;

    /* the prompt file and the input first: fail before the slow model load */
    prompt_watch pw = {.path = o.prompt_file};
    char *file_prompt = NULL;
    if (pw.path) {
        bool changed;
        if (read_prompt_file(&pw, &file_prompt, &changed) != SD_OK) {
            fprintf(stderr, "streamdiff stream: --prompt-file: %s\n", sd_last_error());
            return 1;
        }
    }
    sd_video_source *src = NULL;
    if (!o.txt2img && sd_video_source_open(o.input, &src) != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        free(file_prompt);
        return 1;
    }
    bool camera = src && sd_video_source_kind(src) == SD_VIDEO_CAMERA;
    o.sp.drop_old_frames = o.live_set ? o.live : camera;

    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.backend = o.backend;
    mp.precision = o.precision;
    mp.n_threads = o.threads;
    mp.taesd = o.taesd;
    sd_model *m = NULL;
    sd_stream *s = NULL;
    sd_video_sink *sink = NULL;
    double t_load = sd_time_now();
    if (sd_model_load(o.model, &mp, &m) != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = 1;
        goto done;
    }
    if (o.n_loras) {
        sd_lora_options lo = {.allow_unmatched = o.lora_allow_unmatched};
        if (sd_model_apply_loras_ex(m, o.loras, o.n_loras, &lo) != SD_OK) {
            fprintf(stderr, "streamdiff stream: cannot apply the LoRA(s): %s\n", sd_last_error());
            rc = 1;
            goto done;
        }
    }
    sd_model_info info;
    sd_model_get_info(m, &info);
    o.sp.use_taesd = info.has_taesd;
    if ((rc = cli_controls_for_stream(o.ctl, "stream", m, &o.sp)))
        goto done;
    sd_status cst = sd_stream_create(m, &o.sp, &s);
    if (cst != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = cst == SD_ERR_INVALID_ARGUMENT ? 2 : 1;
        goto done;
    }
    const char *prompt = file_prompt ? file_prompt : o.prompt ? o.prompt : "";
    cli_live *l = &pw.live;
    l->s = s, l->m = m;
    snprintf(l->prompt, sizeof l->prompt, "%s", prompt);
    snprintf(l->negative, sizeof l->negative, "%s", o.negative ? o.negative : "");
    l->prompts = o.prompts, l->seeds = o.seeds, l->prompt_blend = o.prompt_blend, l->seed_blend = o.seed_blend;
    l->normalize = !o.raw_weights;
    if (cli_live_set_prompts(l) != SD_OK || (l->seeds.n && cli_live_set_seeds(l) != SD_OK)) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = 1;
        goto done;
    }
    if (o.osc_port) {
#ifdef SD_HAVE_OSC
        l->guidance = o.sp.guidance_scale, l->delta = o.sp.delta;
        l->similarity = o.sp.similarity_threshold, l->max_skip = o.sp.max_skip_frames;
        l->loras = o.loras, l->n_loras = o.n_loras, l->lora_allow_unmatched = o.lora_allow_unmatched;
        if (cli_osc_start(o.osc_bind, o.osc_port, o.n_loras, &pw.osc) != SD_OK) {
            rc = 1;
            goto done;
        }
        fprintf(stderr, "osc: listening on UDP %s:%d (/streamdiff/prompt, /streamdiff/guidance, ...; see --help)\n",
                o.osc_bind ? o.osc_bind : "127.0.0.1", o.osc_port);
#else
        fprintf(stderr, "streamdiff stream: --osc-port: this streamdiff was built without OSC (liblo); "
                        "apt-get install liblo-dev and rebuild\n");
        rc = 2;
        goto done;
#endif
    }
    double fps = o.fps > 0 ? o.fps : src && sd_video_source_fps(src) > 0 ? sd_video_source_fps(src) : 30.0;
    if (sd_video_sink_open(o.output, o.sp.width, o.sp.height, fps, &sink) != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = 1;
        goto done;
    }
    {
        char tl[128] = "";
        for (int i = 0; i < o.sp.n_t_index; i++)
            snprintf(tl + strlen(tl), sizeof tl - strlen(tl), "%s%d", i ? "," : "", o.sp.t_index_list[i]);
        fprintf(stderr,
                "model %s (%s, %s, precision %s on %s kernels) loaded in %.1f s; %dx%d, t-index [%s] of %d, cfg %s "
                "(guidance %g, delta %g), %s, %s%s, %s input -> %s (%s, %.2f fps)\n",
                info.source, info.arch, info.has_taesd ? "TAESD" : "full VAE", info.precision, info.kernels,
                sd_time_now() - t_load, o.sp.width,
                o.sp.height, tl, o.sp.num_inference_steps, cli_cfg_type_name(o.sp.cfg_type), (double)o.sp.guidance_scale,
                (double)o.sp.delta, o.sp.use_denoising_batch ? "stream batch" : "sequential steps",
                o.sp.similarity_threshold > 0 ? "similarity filter on" : "no similarity filter",
                o.sp.drop_old_frames ? ", live (drops old frames)" : "",
                o.txt2img ? "txt2img" : camera                                  ? "camera"
                                    : sd_video_source_kind(src) == SD_VIDEO_FOLDER ? "folder"
                                                                                     : "video",
                o.output, sd_video_sink_codec(sink), fps);
    }
    rc = o.txt2img ? run_txt2img(&o, s, sink, &pw) : run_img2img(&o, s, src, sink, &pw);
done:
#ifdef SD_HAVE_OSC
    if (pw.osc) {
        int64_t acc, rej;
        cli_osc_counts(pw.osc, &acc, &rej);
        fprintf(stderr, "osc: %lld messages applied, %lld ignored\n", (long long)acc, (long long)rej);
        cli_osc_stop(pw.osc);
    }
#endif
    if (sink && sd_video_sink_close(sink) != SD_OK) {
        fprintf(stderr, "streamdiff stream: %s\n", sd_last_error());
        rc = rc ? rc : 1;
    }
    sd_stream_free(s);
    cli_controls_free(o.ctl); /* the nets before their model */
    sd_model_free(m);
    sd_video_source_close(src);
    free(file_prompt);
    return rc;
}
