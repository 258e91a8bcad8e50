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
