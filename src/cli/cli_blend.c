/* Prompt and seed blending in the CLI: the `stream` options (--blend-prompt TEXT[:W], --seeds S[:W],..,
 * --prompt-blend / --seed-blend linear|slerp, --raw-weights) and the live state they start (cli_live: the
 * prompt list or prompt, the seed list), which OSC updates change (cli_osc_apply_blend). Everything reaches the
 * stream through sd_stream_set_prompts / sd_stream_set_seeds (docs/blending.md). */
#include "cli/cli.h"
#include "cli/osc.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

bool cli_parse_blend_prompt(const char *v, cli_blend_list *l)
{
    double w = 1.0;
    size_t n;
    if (l->n >= SD_STREAM_MAX_BLEND || !cli_split_weight(v, 0.0, 1e6, &n, &w) || n >= CLI_OSC_MAX_TEXT)
        return false;
    memcpy(l->text[l->n], v, n);
    l->text[l->n][n] = 0;
    l->weight[l->n++] = (float)w;
    return true;
}

bool cli_parse_seed_list(const char *v, cli_blend_list *l)
{
    char item[64];
    l->n = 0;
    for (const char *p = v;; p++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p), n;
        double w = 1.0;
        if (!len || len >= sizeof item || l->n >= SD_STREAM_MAX_BLEND)
            return false;
        memcpy(item, p, len);
        item[len] = 0;
        if (!cli_split_weight(item, 0.0, 1e6, &n, &w))
            return false;
        item[n] = 0;
        if (!cli_parse_u64(item, &l->seed[l->n]))
            return false;
        l->weight[l->n++] = (float)w;
        if (!end)
            return true;
        p = end;
    }
}

sd_status cli_live_set_prompts(const cli_live *l)
{
    const char *neg = l->negative[0] ? l->negative : NULL;
    if (!l->prompts.n)
        return sd_stream_set_prompt(l->s, l->prompt, neg);
    sd_prompt_weight pw[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < l->prompts.n; i++)
        pw[i] = (sd_prompt_weight){l->prompts.text[i], l->prompts.weight[i]};
    return sd_stream_set_prompts(l->s, pw, l->prompts.n, neg, l->prompt_blend, l->normalize);
}

sd_status cli_live_set_seeds(const cli_live *l)
{
    sd_seed_weight sw[SD_STREAM_MAX_BLEND];
    for (int i = 0; i < l->seeds.n; i++)
        sw[i] = (sd_seed_weight){l->seeds.seed[i], l->seeds.weight[i]};
    return sd_stream_set_seeds(l->s, sw, l->seeds.n, l->seed_blend, l->normalize);
}

/* "a" 0.7, "b" 0.3 / 1:0.5,2:0.5 for the log */
static void describe(const cli_blend_list *b, bool seeds, sd_blend_mode mode, char *out, size_t cap)
{
    out[0] = 0;
    for (int i = 0; i < b->n; i++) {
        size_t k = strlen(out);
        if (seeds)
            snprintf(out + k, cap - k, "%s%" PRIu64 ":%g", i ? "," : "", b->seed[i], (double)b->weight[i]);
        else
            snprintf(out + k, cap - k, "%s\"%.60s\" %g", i ? ", " : "", b->text[i], (double)b->weight[i]);
    }
    size_t k = strlen(out);
    snprintf(out + k, cap - k, " (%s)", sd_blend_mode_name(mode));
}

void cli_osc_apply_blend(const cli_osc_update *u, cli_live *l, int64_t frame)
{
    static cli_live next; /* the frame loop is the only caller; too large for the stack of some threads */
    char line[1024];
    if (u->set & (CLI_OSC_PROMPT | CLI_OSC_NEGATIVE | CLI_OSC_PROMPTS | CLI_OSC_PROMPT_WEIGHTS | CLI_OSC_PROMPT_BLEND)) {
        next = *l;
        if (u->set & CLI_OSC_PROMPT) {
            snprintf(next.prompt, sizeof next.prompt, "%s", u->prompt);
            next.prompts.n = 0;
        }
        if (u->set & CLI_OSC_NEGATIVE)
            snprintf(next.negative, sizeof next.negative, "%s", u->negative);
        if (u->set & CLI_OSC_PROMPTS)
            next.prompts = u->prompts;
        if (u->set & CLI_OSC_PROMPT_BLEND)
            next.prompt_blend = u->prompt_blend;
        bool ok = true;
        if (u->set & CLI_OSC_PROMPT_WEIGHTS) {
            ok = u->n_prompt_weights == next.prompts.n;
            if (!ok)
                fprintf(stderr, "osc: prompt_weights refused: %d weights for a list of %d prompts\n",
                        u->n_prompt_weights, next.prompts.n);
            else
                memcpy(next.prompts.weight, u->prompt_weights, sizeof(float) * (size_t)u->n_prompt_weights);
        }
        if (ok && cli_live_set_prompts(&next) == SD_OK) {
            *l = next;
            if (l->prompts.n)
                describe(&l->prompts, false, l->prompt_blend, line, sizeof line);
            else
                snprintf(line, sizeof line, "\"%.1000s\"", l->prompt);
            fprintf(stderr, "osc: prompt %s%s%s%s (from frame %lld on)\n", line, l->negative[0] ? ", negative \"" : "",
                    l->negative, l->negative[0] ? "\"" : "", (long long)frame);
        } else if (ok) {
            fprintf(stderr, "osc: prompt refused: %s\n", sd_last_error());
        }
    }
    if (u->set & (CLI_OSC_SEED | CLI_OSC_SEEDS | CLI_OSC_SEED_WEIGHTS | CLI_OSC_SEED_BLEND)) {
        next = *l;
        if (u->set & CLI_OSC_SEED) { /* one seed: a list of one */
            next.seeds.n = 1;
            next.seeds.seed[0] = (uint64_t)u->seed;
            next.seeds.weight[0] = 1.0f;
        }
        if (u->set & CLI_OSC_SEEDS)
            next.seeds = u->seeds;
        if (u->set & CLI_OSC_SEED_BLEND)
            next.seed_blend = u->seed_blend;
        bool ok = next.seeds.n > 0;
        if (!ok)
            fprintf(stderr, "osc: seed_weights / seed_blend refused: no seed list (send /streamdiff/seeds first)\n");
        if (ok && (u->set & CLI_OSC_SEED_WEIGHTS)) {
            ok = u->n_seed_weights == next.seeds.n;
            if (!ok)
                fprintf(stderr, "osc: seed_weights refused: %d weights for a list of %d seeds\n", u->n_seed_weights,
                        next.seeds.n);
            else
                memcpy(next.seeds.weight, u->seed_weights, sizeof(float) * (size_t)u->n_seed_weights);
        }
        if (ok && cli_live_set_seeds(&next) == SD_OK) {
            *l = next;
            if (l->seeds.n == 1)
                snprintf(line, sizeof line, "%" PRIu64, l->seeds.seed[0]);
            else
                describe(&l->seeds, true, l->seed_blend, line, sizeof line);
            fprintf(stderr, "osc: seed %s (from frame %lld on)\n", line, (long long)frame);
        } else if (ok) {
            fprintf(stderr, "osc: seed refused: %s\n", sd_last_error());
        }
    }
}
