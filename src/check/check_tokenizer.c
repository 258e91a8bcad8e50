/* Tokenizer cases (shared/fixtures/README.md "Tokenizer"): a prompt set
 * (manifest `prompts_file`, a JSON list of {"prompt", "ids_unpadded_<variant>",
 * "tokens_<variant>", ...}) encoded by every tokenizer of `tokenizer_dirs`
 * ({"<pad>": "<folder relative to the fixtures root> (optional remark)"}) with
 * every text-cleaning path of `variants` ("ftfy" -> SD_TOK_CLEAN_FTFY, "noftfy"
 * -> SD_TOK_CLEAN_BASIC). Expected: input_ids.<pad>.<variant> and
 * attention_mask.<pad>.<variant> [prompts, max_length]; all exact.
 * The unpadded ids and token strings of prompts_file (they include BOS/EOS) are
 * checked with the first tokenizer listed. */
#include "check/check.h"
#include "models/tokenizer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENIZERS 8
#define MAX_VARIANTS 4

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool hex4(const char *s, const char *end, unsigned *v)
{
    *v = 0;
    if (end - s < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return false;
        *v = *v * 16 + (unsigned)h;
    }
    return true;
}

/* Decodes the JSON string whose opening quote is at *pp, keeping \u0000 (cJSON
 * stops at it). On return *pp is past the closing quote. malloc'd; NULL on a
 * malformed string. */
static char *json_string(const char **pp, const char *end, size_t *len)
{
    const char *s = *pp + 1;
    size_t cap = 64, n = 0;
    char *o = malloc(cap);
    while (o && s < end && *s != '"') {
        if (n + 8 > cap) {
            char *no = realloc(o, cap *= 2);
            if (!no)
                break;
            o = no;
        }
        if (*s != '\\') {
            o[n++] = *s++;
            continue;
        }
        if (++s >= end)
            break;
        char e = *s++;
        if (e == 'u') {
            unsigned cp, lo;
            if (!hex4(s, end, &cp))
                break;
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - s >= 6 && s[0] == '\\' && s[1] == 'u' &&
                hex4(s + 2, end, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            n += put_utf8(o + n, cp);
        } else {
            o[n++] = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
        }
    }
    if (!o || s >= end || *s != '"') {
        free(o);
        return NULL;
    }
    o[n] = 0;
    *len = n;
    *pp = s + 1;
    return o;
}

/* The raw bytes of every "prompt" value, in file order (string tokens are
 * skipped as units, so "prompt" inside another string never matches). */
static int raw_prompts(const char *text, size_t len, char **raw, size_t *rawlen, int max)
{
    const char *p = text, *end = text + len;
    int n = 0;
    while (p < end && n < max) {
        if (*p != '"') {
            p++;
            continue;
        }
        size_t kl = 0;
        char *key = json_string(&p, end, &kl);
        if (!key)
            break;
        bool is_prompt = !strcmp(key, "prompt") && kl == 6;
        free(key);
        const char *q = p;
        while (q < end && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t'))
            q++;
        if (!is_prompt || q >= end || *q != ':')
            continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t'))
            q++;
        if (q >= end || *q != '"')
            continue;
        raw[n] = json_string(&q, end, &rawlen[n]);
        if (!raw[n])
            break;
        n++;
        p = q;
    }
    return n;
}

/* Folder of a tokenizer_dirs value: the path before an optional " (remark)". */
static char *tokenizer_dir(sd_case *c, const char *value)
{
    char *v = sd_strdup(value);
    if (!v)
        return NULL;
    char *full = sd_path_join(c->root, v);
    if (full && sd_dir_exists(full)) {
        free(v);
        return full;
    }
    free(full);
    char *paren = strstr(v, " (");
    if (paren)
        *paren = 0;
    full = sd_path_join(c->root, v);
    free(v);
    return full;
}

static void report(sd_case *c, const char *name, int ok, int total, const char *detail)
{
    c->n_checked++;
    bool pass = ok == total;
    if (!pass) {
        c->n_failed++;
        c->worst_ratio = INFINITY;
    }
    if (!pass || c->verbose)
        printf("  %-44s %s  exact %d/%d%s%s\n", name, pass ? "PASS" : "FAIL", ok, total, detail[0] ? "  " : "",
               detail);
}

typedef struct {
    const char *name;
    sd_tok_clean mode;
} variant;

/* input_ids.<pad>.<variant> and attention_mask.<pad>.<variant> for one tokenizer and path */
static void check_padded(sd_case *c, sd_tokenizer *tk, const char *pad, const variant *v, char **raw,
                         const size_t *rawlen, int np)
{
    char kid[160], kmask[160];
    snprintf(kid, sizeof kid, "input_ids.%s.%s", pad, v->name);
    snprintf(kmask, sizeof kmask, "attention_mask.%s.%s", pad, v->name);
    const sd_st_tensor *tid = c->expected ? sd_st_find(c->expected, kid) : NULL;
    const sd_st_tensor *tmask = c->expected ? sd_st_find(c->expected, kmask) : NULL;
    if (!tid || tid->ndim != 2 || tid->shape[0] != np || tid->shape[1] < 2 || tid->shape[1] > 4096 ||
        (tmask && tmask->numel != tid->numel)) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: missing or not [%d prompts, max_length] (or its mask differs in shape)", kid,
                 np);
        sd_case_fail(c, msg);
        return;
    }
    int L = (int)tid->shape[1];
    int32_t *ids = sd_malloc((size_t)L * sizeof *ids);
    if (!ids) {
        sd_case_fail(c, "out of memory");
        return;
    }
    int ids_ok = 0, mask_ok = 0;
    char detail[200] = "";
    for (int i = 0; i < np; i++) {
        int nv = -1, nt = -1;
        sd_status s = sd_tokenizer_encode_n(tk, raw[i], rawlen[i], v->mode, ids, L, &nv, &nt);
        bool ok = s == SD_OK, mok = s == SD_OK;
        for (int j = 0; j < L; j++) {
            size_t at = (size_t)i * (size_t)L + (size_t)j;
            ok = ok && ids[j] == (int64_t)sd_st_get(tid, at);
            if (tmask)
                mok = mok && (int64_t)sd_st_get(tmask, at) == (j < nv ? 1 : 0);
        }
        ids_ok += ok;
        mask_ok += mok;
        if ((!ok || (tmask && !mok)) && !detail[0])
            snprintf(detail, sizeof detail, "first difference: prompt %d%s%s", i, s != SD_OK ? ": " : "",
                     s != SD_OK ? sd_last_error() : "");
    }
    report(c, kid, ids_ok, np, ids_ok == np ? "" : detail);
    if (tmask)
        report(c, kmask, mask_ok, np, mask_ok == np ? "" : detail);
    free(ids);
}

/* ids_unpadded_<variant> / tokens_<variant> of prompts_file ([BOS, tokens..., EOS], untruncated) */
static void check_unpadded(sd_case *c, sd_tokenizer *tk, const variant *v, const cJSON *prompts, char **raw,
                           const size_t *rawlen, int np)
{
    char kids[96], ktoks[96];
    snprintf(kids, sizeof kids, "ids_unpadded_%s", v->name);
    snprintf(ktoks, sizeof ktoks, "tokens_%s", v->name);
    int n_ids = 0, ok_ids = 0, n_toks = 0, ok_toks = 0, first_bad = -1;
    for (int i = 0; i < np; i++) {
        const cJSON *pe = cJSON_GetArrayItem(prompts, i);
        const cJSON *ue = cJSON_GetObjectItemCaseSensitive(pe, kids), *te = cJSON_GetObjectItemCaseSensitive(pe, ktoks);
        if (!cJSON_IsArray(ue))
            continue;
        n_ids++;
        int want = cJSON_GetArraySize(ue) - 2, n = -1;
        int32_t *ids = want >= 0 ? sd_malloc(sizeof(int32_t) * (size_t)(want + 2)) : NULL;
        bool ok = ids && sd_tokenizer_tokenize_n(tk, raw[i], rawlen[i], v->mode, ids, want + 2, &n) == SD_OK &&
                  n == want;
        for (int j = 0; ok && j < n; j++) {
            const cJSON *e = cJSON_GetArrayItem(ue, j + 1);
            ok = cJSON_IsNumber(e) && ids[j] == (int32_t)e->valuedouble;
        }
        ok_ids += ok;
        if (cJSON_IsArray(te)) {
            n_toks++;
            bool tok_ok = ok && cJSON_GetArraySize(te) == want + 2;
            for (int j = 0; tok_ok && j < n; j++) {
                const char *ts = sd_tokenizer_id_to_token(tk, ids[j]);
                const char *es = cJSON_GetStringValue(cJSON_GetArrayItem(te, j + 1));
                tok_ok = ts && es && !strcmp(ts, es);
            }
            ok_toks += tok_ok;
            if (!tok_ok && first_bad < 0)
                first_bad = i;
        }
        if (!ok && first_bad < 0)
            first_bad = i;
        free(ids);
    }
    char detail[64] = "";
    if (first_bad >= 0)
        snprintf(detail, sizeof detail, "first difference: prompt %d", first_bad);
    char name[128];
    if (n_ids) {
        snprintf(name, sizeof name, "prompts_file:%s", kids);
        report(c, name, ok_ids, n_ids, ok_ids == n_ids ? "" : detail);
    }
    if (n_toks) {
        snprintf(name, sizeof name, "prompts_file:%s", ktoks);
        report(c, name, ok_toks, n_toks, ok_toks == n_toks ? "" : detail);
    }
}

sd_status sd_check_tokenizer(sd_case *c)
{
    const char *pf = NULL;
    SD_TRY(sd_config_str(&c->manifest, "prompts_file", NULL, &pf));
    /* variants: keys of manifest "variants" (default: both paths) */
    variant vars[MAX_VARIANTS];
    int nvar = 0;
    const cJSON *vj = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "variants"), *e;
    cJSON_ArrayForEach(e, vj)
    {
        if (!e->string)
            continue;
        if (nvar == MAX_VARIANTS)
            return sd_fail(SD_ERR_FORMAT, "%s: more than %d variants", c->dir, MAX_VARIANTS);
        if (!strcmp(e->string, "ftfy"))
            vars[nvar++] = (variant){"ftfy", SD_TOK_CLEAN_FTFY};
        else if (!strcmp(e->string, "noftfy"))
            vars[nvar++] = (variant){"noftfy", SD_TOK_CLEAN_BASIC};
        else
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: unknown tokenizer variant '%s' (known: ftfy, noftfy)", c->dir,
                           e->string);
    }
    if (!nvar) {
        vars[nvar++] = (variant){"ftfy", SD_TOK_CLEAN_FTFY};
        vars[nvar++] = (variant){"noftfy", SD_TOK_CLEAN_BASIC};
    }
    const cJSON *dirs = cJSON_GetObjectItemCaseSensitive(c->manifest.root, "tokenizer_dirs");
    if (!cJSON_IsObject(dirs) || !dirs->child)
        return sd_fail(SD_ERR_FORMAT, "%s: manifest has no tokenizer_dirs object {pad name: folder}", c->dir);

    sd_tokenizer *tk[MAX_TOKENIZERS] = {0};
    const char *pads[MAX_TOKENIZERS];
    int ntk = 0;
    char *text = NULL, **raw = NULL;
    size_t len = 0, *rawlen = NULL;
    cJSON *prompts = NULL;
    int np = 0;
    sd_status s = SD_OK;
    cJSON_ArrayForEach(e, dirs)
    {
        if (ntk == MAX_TOKENIZERS || !cJSON_IsString(e)) {
            s = sd_fail(SD_ERR_FORMAT, "%s: tokenizer_dirs must map at most %d names to folder strings", c->dir,
                        MAX_TOKENIZERS);
            goto out;
        }
        char *dir = tokenizer_dir(c, e->valuestring);
        s = dir ? sd_tokenizer_load(dir, &tk[ntk]) : SD_ERR_OUT_OF_MEMORY;
        free(dir);
        if (s != SD_OK)
            goto out;
        pads[ntk++] = e->string;
    }
    char *ppath = sd_path_join(c->dir, pf);
    s = ppath ? sd_read_file(ppath, (size_t)64 << 20, &text, &len) : SD_ERR_OUT_OF_MEMORY;
    free(ppath);
    if (s != SD_OK)
        goto out;
    prompts = cJSON_ParseWithLength(text, len);
    np = cJSON_GetArraySize(prompts);
    if (!cJSON_IsArray(prompts) || np < 1) {
        s = sd_fail(SD_ERR_FORMAT, "%s/%s: not a JSON list of prompt objects", c->dir, pf);
        goto out;
    }
    raw = calloc((size_t)np, sizeof *raw);
    rawlen = calloc((size_t)np, sizeof *rawlen);
    if (!raw || !rawlen) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto out;
    }
    int nraw = raw_prompts(text, len, raw, rawlen, np);
    for (int i = 0; i < np; i++) {
        /* the raw decoding must agree with cJSON's (which stops at a NUL) */
        const char *cj = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(prompts, i), "prompt"));
        if (i >= nraw || !cj || strcmp(raw[i], cj) != 0) {
            s = sd_fail(SD_ERR_FORMAT, "%s/%s: entry %d has no readable \"prompt\" string", c->dir, pf, i);
            goto out;
        }
    }
    for (int m = 0; m < nvar; m++)
        for (int k = 0; k < ntk; k++)
            check_padded(c, tk[k], pads[k], &vars[m], raw, rawlen, np);
    for (int m = 0; m < nvar; m++)
        check_unpadded(c, tk[0], &vars[m], prompts, raw, rawlen, np);
out:
    for (int i = 0; raw && i < np; i++)
        free(raw[i]);
    free(raw);
    free(rawlen);
    cJSON_Delete(prompts);
    free(text);
    for (int k = 0; k < ntk; k++)
        sd_tokenizer_free(tk[k]);
    return s;
}
