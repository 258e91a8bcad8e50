/* CLIP text encoder cases (clip_text_*): CLIPTextModel[WithProjection] on
 * given token ids. Compares last_hidden_state, pooler_output, text_embeds,
 * clip_skip_<k> (diffusers encode_prompt(clip_skip=k)), penultimate_hidden_state
 * (SDXL: hidden_states[-2] without final_layer_norm) and hidden_states.<k>
 * (through the model's activation hook). Every expected tensor must be
 * produced: one the runner does not know counts as a failure. */
#include "check/check.h"
#include "backend/ops.h"
#include "models/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DONE 64

typedef struct clip_run {
    sd_case *c;
    const char *done[MAX_DONE];
    int n_done;
} clip_run;

static void mark_done(clip_run *r, const char *name)
{
    for (int i = 0; i < r->n_done; i++)
        if (!strcmp(r->done[i], name))
            return;
    if (r->n_done < MAX_DONE) {
        const sd_st_tensor *t = r->c->expected ? sd_st_find(r->c->expected, name) : NULL;
        r->done[r->n_done++] = t ? t->name : name;
    }
}

static void compare_tensor(clip_run *r, const char *name, sd_tensor t)
{
    sd_case_compare_tensor(r->c, name, t);
    mark_done(r, name);
}

/* text_model.embeddings -> hidden_states.0, text_model.encoder.layers.<i> -> hidden_states.<i+1> */
static void clip_hook(void *user, const char *name, sd_tensor t)
{
    clip_run *r = user;
    char key[64];
    int i;
    if (!strcmp(name, "text_model.embeddings"))
        snprintf(key, sizeof key, "hidden_states.0");
    else if (sscanf(name, "text_model.encoder.layers.%d", &i) == 1)
        snprintf(key, sizeof key, "hidden_states.%d", i + 1);
    else
        return;
    if (r->c->expected && sd_st_find(r->c->expected, key))
        compare_tensor(r, key, t);
}

static bool has_expected(sd_case *c, const char *name) { return c->expected && sd_st_find(c->expected, name); }

/* One pass over everything the case asks for; compares only when !ctx->plan. */
static void clip_pass(clip_run *r, sd_ctx *ctx, const sd_clip *m, const int32_t *ids, int B, int S)
{
    sd_case *c = r->c;
    bool real = !ctx->plan;
    bool want_te = has_expected(c, "text_embeds");
    size_t m0 = sd_mark(ctx);
    sd_tensor pooled, te;
    sd_tensor lhs = sd_clip_forward(ctx, m, ids, B, S, 0, &pooled, want_te ? &te : NULL);
    if (real && sd_ok(ctx)) {
        compare_tensor(r, "last_hidden_state", lhs);
        if (has_expected(c, "pooler_output"))
            compare_tensor(r, "pooler_output", pooled);
        if (want_te)
            compare_tensor(r, "text_embeds", te);
    }
    sd_release(ctx, m0);
    void (*hook)(void *, const char *, sd_tensor) = ctx->hook;
    ctx->hook = NULL; /* hidden_states.* were compared on the first pass */
    for (size_t i = 0; c->expected && i < c->expected->n_tensors && sd_ok(ctx); i++) {
        const char *name = c->expected->tensors[i].name;
        int k;
        char tail;
        if (sscanf(name, "clip_skip_%d%c", &k, &tail) != 1)
            continue;
        sd_tensor h = sd_clip_forward(ctx, m, ids, B, S, k, NULL, NULL);
        if (real && sd_ok(ctx))
            compare_tensor(r, name, h);
        sd_release(ctx, m0);
    }
    if (has_expected(c, "penultimate_hidden_state") && sd_ok(ctx)) {
        /* SDXL: hidden_states[-2] without final_layer_norm */
        sd_tensor h = sd_clip_forward_hidden(ctx, m, ids, B, S, 1, false, NULL, NULL);
        if (real && sd_ok(ctx))
            compare_tensor(r, "penultimate_hidden_state", h);
        sd_release(ctx, m0);
    }
    ctx->hook = hook;
}

sd_status sd_check_clip(sd_case *c)
{
    const char *cls = NULL;
    sd_config_str(&c->manifest, "model_class", NULL, &cls);
    char *dir = sd_case_path(c, "model_dir");
    if (!dir)
        return SD_ERR_NOT_FOUND;
    sd_clip *m = NULL;
    int with_proj = cls ? !strcmp(cls, "CLIPTextModelWithProjection") : -1;
    sd_status s = sd_clip_load_dir(c->be, dir, with_proj, &m);
    free(dir);
    if (s != SD_OK)
        return s;

    int32_t *ids = NULL;
    int B = 0, S = 0;
    const sd_st_tensor *it = sd_case_input(c, "input_ids");
    if (!it) {
        s = SD_ERR_NOT_FOUND;
        goto done;
    }
    if (it->ndim != 2) {
        s = sd_fail(SD_ERR_FORMAT, "%s: input_ids must be [B, S]", c->name);
        goto done;
    }
    B = (int)it->shape[0];
    S = (int)it->shape[1];
    ids = sd_malloc(it->numel * sizeof *ids + 1);
    if (!ids) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < it->numel; i++)
        ids[i] = (int32_t)sd_st_get(it, i);

    clip_run r = {.c = c};
    sd_ctx plan;
    sd_ctx_init_plan(&plan, c->be);
    clip_pass(&r, &plan, m, ids, B, S);
    if (!sd_ok(&plan)) {
        s = plan.status;
        goto done;
    }
    sd_ctx ctx;
    s = sd_ctx_init(&ctx, c->be, plan.peak);
    if (s != SD_OK)
        goto done;
    ctx.hook = clip_hook;
    ctx.hook_user = &r;
    clip_pass(&r, &ctx, m, ids, B, S);
    s = ctx.status;
    if (s == SD_OK)
        sd_case_check_peak(c, ctx.peak, plan.peak);
    sd_ctx_free(&ctx);
    if (s == SD_OK)
        sd_case_check_produced(c, r.done, r.n_done, "CLIP");
done:
    free(ids);
    sd_clip_free(m);
    return s;
}
