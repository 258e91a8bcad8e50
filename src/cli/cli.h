#ifndef SD_CLI_H
#define SD_CLI_H
#include "core/core.h"
/* Each sub-command: argv[0] is the command name. Returns the process exit code. */
int cli_selfcheck(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_txt2img(int argc, char **argv);
int cli_img2img(int argc, char **argv);
int cli_stream(int argc, char **argv);
int cli_bench_stream(int argc, char **argv); /* `bench stream` (cmd_bench_stream.c) */
/* Option values (cli_args.c), strict for every command: the whole string is the number (no blanks,
 * nothing after it) and it lies in lo..hi; false otherwise. */
bool cli_parse_ll(const char *s, long long lo, long long hi, long long *out);
bool cli_parse_int(const char *s, int lo, int hi, int *out);
bool cli_parse_u64(const char *s, uint64_t *out);
bool cli_parse_double(const char *s, double lo, double hi, double *out);
/* "A,B,C": 1..max_n numbers, each as cli_parse_ll, in lo..hi; *n of them into out. */
bool cli_parse_int_list(const char *s, int lo, int hi, int max_n, int *out, int *n);
/* Prints "streamdiff CMD: OPT needs WANT, got 'V'" and the --help hint; returns 2 (usage error). */
int cli_bad_value(const char *cmd, const char *opt, const char *v, const char *want);
/* Stream parameters checked by sd_stream_params_validate (the library's one rule); the message names
 * the command's option for the refused parameter (`names`: {param, option} pairs, ending {NULL}).
 * Returns 0, or 2 after printing the error. */
typedef struct cli_param_opt {
    const char *param, *option;
} cli_param_opt;
int cli_stream_params_check(const char *cmd, const sd_stream_params *p, const cli_param_opt *names);
/* stream option parsers shared by `stream` and `bench stream` (cmd_stream.c) */
bool cli_parse_t_index(const char *s, sd_stream_params *p);
bool cli_parse_cfg_type(const char *s, sd_cfg_type *out);
const char *cli_cfg_type_name(sd_cfg_type t);
int cli_serve(int argc, char **argv);
/* --lora PATH[:SCALE] (txt2img/img2img, stream and serve; cmd_generate.c): the part after the last ':' is the
 * scale when it starts like a number (-100..100, default 1). out->path is malloc'd (free it). */
#define CLI_MAX_LORAS 16
bool cli_parse_lora(const char *v, sd_lora_spec *out);
/* "NAME[:NUMBER]": the part after the last ':' is the number (in lo..hi) when it starts like one; *name_len
 * = the bytes before it (the whole string when there is none; *w then stays as it was). False on a bad number. */
bool cli_split_weight(const char *v, double lo, double hi, size_t *name_len, double *w);
/* Blending options (cli_blend.c; the list type is osc.h's cli_blend_list): --blend-prompt TEXT[:W] appends one
 * prompt (weight 0..1e6, default 1); --seeds S[:W],S[:W].. sets the seed list. False on a bad value or a full list. */
struct cli_blend_list;
bool cli_parse_blend_prompt(const char *v, struct cli_blend_list *l);
bool cli_parse_seed_list(const char *v, struct cli_blend_list *l);

/* The progress line of long runs (cli_progress.c): cli_progress is an sd_gen_params.progress callback with a
 * cli_progress_state as its user pointer; cli_progress_end closes a line left open. */
typedef struct cli_progress_state {
    bool tty;
    bool line_open;
    int image, n_images, per_call;
    const char *cmd;
} cli_progress_state;
void cli_progress(void *user, int step, int total, double elapsed_s);
void cli_progress_end(cli_progress_state *ps);

/* ControlNet options of txt2img / img2img (cli_control.c):
 *   --control NET:IMAGE[:SCALE[:START:END]]   repeatable (CLI_MAX_CONTROLS); IMAGE "input" = the init image
 *   --control-preprocess NAME                 once (every control image) or once per --control, in order
 *   --canny-low N, --canny-high N, --scribble-threshold N, --control-save FILE */
#define CLI_MAX_CONTROLS 8
typedef struct cli_controls {
    int n;
    char *net[CLI_MAX_CONTROLS], *image[CLI_MAX_CONTROLS]; /* malloc'd */
    float scale[CLI_MAX_CONTROLS], start[CLI_MAX_CONTROLS], end[CLI_MAX_CONTROLS];
    int n_pre;
    sd_preprocess pre[CLI_MAX_CONTROLS];
    sd_preprocess_params pp; /* thresholds (kind unused) */
    bool pp_set;             /* a threshold option was given */
    const char *save;        /* --control-save: where the control images as used are written */
    /* prepared (cli_controls_prepare) */
    sd_image raw[CLI_MAX_CONTROLS], img[CLI_MAX_CONTROLS];
    sd_controlnet *cn[CLI_MAX_CONTROLS];
    sd_control ctl[CLI_MAX_CONTROLS];
} cli_controls;
void cli_controls_init(cli_controls *cs);
/* Option handlers: 0, or 2 after a usage message naming `flag` and the value. */
int cli_controls_add(cli_controls *cs, const char *cmd, const char *flag, const char *v);
int cli_controls_preprocess(cli_controls *cs, const char *cmd, const char *flag, const char *v);
int cli_controls_threshold(cli_controls *cs, const char *cmd, const char *flag, const char *v);
/* Checks that need no files (0 or 2); then reads the control image files (0 or 1): before the model load. */
int cli_controls_check(cli_controls *cs, const char *cmd, bool img2img);
int cli_controls_load_images(cli_controls *cs, const char *cmd);
/* Loads the nets for m and makes each control image at W x H (a file of another size is resized, and said so;
 * "input" = the init image fitted as img2img fits it), preprocessed; cs->ctl is then ready (0 or 1). */
int cli_controls_prepare(cli_controls *cs, const char *cmd, sd_model *m, const sd_image *init, int W, int H,
                         bool verbose);
void cli_controls_free(cli_controls *cs); /* (nets before their model) */
/* `streamdiff stream`: loads the nets for m and fills sp->controls (IMAGE "input": made from each input frame
 * with sp->control_preprocess; one --control-preprocess for all) (0, 1, or 2 for a usage error). */
int cli_controls_for_stream(cli_controls *cs, const char *cmd, sd_model *m, sd_stream_params *sp);
/* Loads the nets for m and fills cs->ctl (IMAGE "input": image NULL; a file of another size than W x H is said
 * to be resized) (0 or 1); `streamdiff serve` and cli_controls_for_stream. */
int cli_controls_load_nets(cli_controls *cs, const char *cmd, sd_model *m, int W, int H);
/* Control k's preprocessor: its --control-preprocess (or the one for all) with the thresholds. */
sd_preprocess_params cli_controls_pp(const cli_controls *cs, int k);
#endif
