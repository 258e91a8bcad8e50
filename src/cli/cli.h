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
#endif
