/* The progress line of long runs (txt2img / img2img): step, rate, elapsed time and ETA, rewritten in place
 * on a terminal, one line per update otherwise. */
#include "cli/cli.h"

#include <stdio.h>

static void fmt_duration(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e7)
        s = 0;
    if (s < 59.95) {
        snprintf(buf, n, "%.1fs", s);
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void cli_progress(void *user, int step, int total, double elapsed_s)
{
    cli_progress_state *ps = user;
    if (total <= 0)
        return;
    if (step < 0)
        step = 0;
    if (step > total)
        step = total;
    double per = step > 0 ? elapsed_s / step : 0;
    char eta[32], el[32], img[48] = "";
    fmt_duration(per * (total - step), eta, sizeof eta);
    fmt_duration(elapsed_s, el, sizeof el);
    if (ps->per_call > 1)
        snprintf(img, sizeof img, "images %d-%d/%d  ", ps->image + 1, ps->image + ps->per_call, ps->n_images);
    else if (ps->n_images > 1)
        snprintf(img, sizeof img, "image %d/%d  ", ps->image + 1, ps->n_images);
    char rate[48];
    if (per > 0 && per < 1.0)
        snprintf(rate, sizeof rate, "%.2f s/it (%.2f it/s)", per, 1.0 / per);
    else
        snprintf(rate, sizeof rate, "%.2f s/it", per);
    fprintf(stderr, "%s%sstep %d/%d  %s  elapsed %s  ETA %s%s", ps->tty ? "\r" : "", img, step, total, rate, el,
            eta, ps->tty ? "\033[K" : "\n");
    ps->line_open = ps->tty && step < total;
    if (ps->tty && step >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_end(cli_progress_state *ps)
{
    if (ps->line_open)
        fputc('\n', stderr);
    ps->line_open = false;
}
