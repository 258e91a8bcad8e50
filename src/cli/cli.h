#ifndef SD_CLI_H
#define SD_CLI_H
#include "core/core.h"
/* Each sub-command: argv[0] is the command name. Returns the process exit code. */
int cli_selfcheck(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_txt2img(int argc, char **argv);
int cli_img2img(int argc, char **argv);
#endif
