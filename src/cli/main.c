/* streamdiff command line: dispatches sub-commands. */
#include "cli/cli.h"

#include "backend/cpu/cpu_kern.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} k_cmds[] = {
    {"txt2img", cli_txt2img, "generate images from a text prompt"},
    {"img2img", cli_img2img, "transform an init image guided by a text prompt"},
    {"stream", cli_stream, "real-time img2img on a video, image folder or camera (StreamDiffusion)"},
    {"serve", cli_serve, "real-time server and web demo (webcam img2img, live txt2img in the browser)"},
    {"check", cli_check, "replay reference cases (fixtures) and compare every output with its tolerance"},
    {"bench", cli_bench, "performance benchmarks (bench ops: op GFLOP/s vs the sgemm peak)"},
    {"selfcheck", cli_selfcheck, "run a quick self-check of the build (ops against references)"},
};

static void usage(FILE *f)
{
    fprintf(f, "streamdiff %s — real-time diffusion image generation\n\n"
               "usage: streamdiff <command> [options]\n       streamdiff --version\n\ncommands:\n",
            sd_version());
    for (size_t i = 0; i < SD_ARRAY_LEN(k_cmds); i++)
        fprintf(f, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].help);
    fprintf(f, "\nRun 'streamdiff <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-v")) {
        printf("streamdiff %s\n", sd_version());
        /* what this build has (a build with SD_FULL=OFF may lack video and serve) */
        printf("features: cuda %s, video (FFmpeg) %s, serve (libwebsockets) %s, osc %s\n",
#ifdef SD_HAVE_CUDA
               "yes",
#else
               "no",
#endif
#ifdef SD_HAVE_FFMPEG
               "yes",
#else
               "no",
#endif
#ifdef SD_HAVE_SERVER
               "yes",
#else
               "no",
#endif
#ifdef SD_HAVE_OSC
               "yes"
#else
               "no"
#endif
        );
        /* the CPU kernels this machine gets (SD_CPU_ISA may lower them) and what precision auto means here */
        sd_backend *be = NULL;
        if (sd_backend_cpu_create(1, &be) == SD_OK) {
            const char *bk = sd_backend_cpu_bf16_isa(be);
            printf("cpu: fp32 kernels %s, bf16 kernels %s; precision auto = %s\n", sd_backend_cpu_isa(be),
                   bk ? bk : "none", sd_backend_cpu_auto_bf16(be) ? "bf16" : "fp32");
            sd_backend_destroy(be);
        }
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < SD_ARRAY_LEN(k_cmds); i++)
        if (!strcmp(argv[1], k_cmds[i].name))
            return k_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "streamdiff: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
