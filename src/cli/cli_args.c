/* Option values of every `streamdiff` command: one strict number parser.
 * The whole string is the number: no leading or trailing blanks, nothing
 * after it, a sign only where the range allows negatives, and it lies in
 * the option's range. A bad value is a usage error whose message names the
 * command, the option, what it wants and what it got. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number must start the string (strto* would skip blanks) and fill it. */
static bool starts_number(const char *s) { return s && *s && !isspace((unsigned char)*s); }

bool cli_parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    if (!starts_number(s))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool cli_parse_int(const char *s, int lo, int hi, int *out)
{
    long long v;
    if (!cli_parse_ll(s, lo, hi, &v))
        return false;
    *out = (int)v;
    return true;
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    if (!starts_number(s) || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

bool cli_parse_double(const char *s, double lo, double hi, double *out)
{
    if (!starts_number(s))
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool cli_parse_int_list(const char *s, int lo, int hi, int max_n, int *out, int *n)
{
    *n = 0;
    if (!s || !*s)
        return false;
    char item[32];
    for (const char *p = s;;) {
        size_t k = 0;
        while (p[k] && p[k] != ',')
            k++;
        long long v;
        if (k == 0 || k >= sizeof item || *n >= max_n)
            return false;
        memcpy(item, p, k);
        item[k] = 0;
        if (!cli_parse_ll(item, lo, hi, &v))
            return false;
        out[(*n)++] = (int)v;
        if (!p[k])
            return true;
        p += k + 1;
    }
}

int cli_bad_value(const char *cmd, const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "streamdiff %s: %s needs %s, got '%s'\n", cmd, opt, want, v ? v : "");
    fprintf(stderr, "Run 'streamdiff %s --help' for all options and their defaults.\n", cmd);
    return 2;
}

int cli_stream_params_check(const char *cmd, const sd_stream_params *p, const cli_param_opt *names)
{
    const char *param = NULL;
    if (sd_stream_params_validate(p, &param) == SD_OK)
        return 0;
    const char *opt = NULL;
    for (const cli_param_opt *n = names; n && n->param && !opt; n++)
        if (param && !strcmp(param, n->param))
            opt = n->option;
    if (opt)
        fprintf(stderr, "streamdiff %s: %s: %s\n", cmd, opt, sd_last_error());
    else
        fprintf(stderr, "streamdiff %s: %s\n", cmd, sd_last_error());
    fprintf(stderr, "Run 'streamdiff %s --help' for all options and their defaults.\n", cmd);
    return 2;
}

/* --lora PATH[:SCALE] (every command that takes LoRAs) */
bool cli_split_weight(const char *v, double lo, double hi, size_t *name_len, double *w)
{
    size_t n = strlen(v);
    const char *colon = strrchr(v, ':');
    if (colon && colon[1] && strchr("+-.0123456789", colon[1])) {
        if (!cli_parse_double(colon + 1, lo, hi, w))
            return false;
        n = (size_t)(colon - v);
    }
    *name_len = n;
    return true;
}

bool cli_parse_lora(const char *v, sd_lora_spec *out)
{
    double scale = 1.0;
    size_t n;
    out->path = NULL;
    if (!cli_split_weight(v, -100.0, 100.0, &n, &scale) || !n)
        return false;
    char *p = malloc(n + 1);
    if (!p)
        return false;
    memcpy(p, v, n);
    p[n] = 0;
    out->path = p;
    out->scale = (float)scale;
    return true;
}
