/* CLIP byte-level BPE tokenizer (transformers slow CLIPTokenizer semantics).
 * See tokenizer.h for the pipeline and the exact reference behaviour. */
#include "models/tokenizer_impl.h"

/* ------------------------------------------------------------------ tokenize */

static sd_status tokenize_piece(sd_tokenizer *t, const int32_t *v, size_t n, sd_tok_clean mode, idbuf *out)
{
    if (n == 0)
        return SD_OK;
    cpbuf clean = {0}, tmp = {0};
    sd_status s = mode == SD_TOK_CLEAN_BASIC ? tok_clean_basic(t, v, n, &clean, &tmp) : tok_clean_ftfy(t, v, n, &clean, &tmp);
    cp_free(&tmp);
    if (s == SD_OK)
        s = tok_pretokenize(t, &clean, out);
    cp_free(&clean);
    return s;
}

/* Longest added token starting at v[i], or -1. */
static int added_at(const sd_tokenizer *t, const int32_t *v, size_t n, size_t i)
{
    int best = -1;
    size_t best_len = 0;
    for (int a = 0; a < t->n_added; a++) {
        const added_token *at = &t->added[a];
        if (at->ncp == 0 || at->ncp <= best_len || i + at->ncp > n || v[i] != at->cps[0])
            continue;
        if (memcmp(v + i, at->cps, at->ncp * sizeof *v) == 0) {
            best = a;
            best_len = at->ncp;
        }
    }
    return best;
}

static sd_status tokenize_all(sd_tokenizer *t, const char *text, size_t len, sd_tok_clean mode, idbuf *out)
{
    if (!t)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: NULL tokenizer");
    if (!text && len)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: NULL text");
    if (mode != SD_TOK_CLEAN_FTFY && mode != SD_TOK_CLEAN_BASIC)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: unknown clean-up mode %d (use SD_TOK_CLEAN_FTFY or "
                                                "SD_TOK_CLEAN_BASIC)", (int)mode);
    if (len > SD_TOK_MAX_TEXT_BYTES)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: prompt is %zu bytes, more than the limit of %zu; shorten it "
                                                "(only the first 75 tokens are used anyway)", len, SD_TOK_MAX_TEXT_BYTES);
    cpbuf cps = {0};
    sd_status s = tok_utf8_decode((const unsigned char *)(text ? text : ""), len, &cps);
    /* split on added tokens (transformers' Trie.split), honouring lstrip/rstrip */
    size_t seg = 0, i = 0;
    bool strip_left_next = false;
    while (s == SD_OK && i <= cps.n) {
        int a = i < cps.n ? added_at(t, cps.v, cps.n, i) : -1;
        if (a < 0 && i < cps.n) {
            i++;
            continue;
        }
        size_t b = seg, e = i;
        if (strip_left_next)
            while (b < e && is_py_space(cps.v[b]))
                b++;
        if (a >= 0 && t->added[a].lstrip)
            while (e > b && is_py_space(cps.v[e - 1]))
                e--;
        if (e > b) /* (cps.v is NULL for an empty text: no pointer arithmetic on it) */
            s = tokenize_piece(t, cps.v + b, e - b, mode, out);
        if (a < 0 || s != SD_OK)
            break;
        s = id_push(out, t->added[a].id);
        strip_left_next = t->added[a].rstrip;
        i += t->added[a].ncp;
        seg = i;
    }
    cp_free(&cps);
    return s;
}

sd_status sd_tokenizer_tokenize_n(sd_tokenizer *t, const char *utf8_text, size_t len, sd_tok_clean mode, int32_t *ids,
                                  int cap, int *n)
{
    if (n)
        *n = 0;
    if (cap < 0 || (cap > 0 && !ids))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: bad output buffer (cap %d)", cap);
    idbuf out = {0};
    sd_status s = tokenize_all(t, utf8_text, len, mode, &out);
    if (s == SD_OK) {
        if (out.n > (size_t)INT32_MAX) {
            s = sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: too many tokens");
        } else {
            size_t m = SD_MIN(out.n, (size_t)cap);
            if (m)
                memcpy(ids, out.v, m * sizeof *ids);
            if (n)
                *n = (int)out.n;
        }
    }
    free(out.v);
    return s;
}

sd_status sd_tokenizer_tokenize(sd_tokenizer *t, const char *utf8_text, sd_tok_clean mode, int32_t *ids, int cap,
                                int *n)
{
    return sd_tokenizer_tokenize_n(t, utf8_text, utf8_text ? strlen(utf8_text) : 0, mode, ids, cap, n);
}

sd_status sd_tokenizer_encode_n(sd_tokenizer *t, const char *utf8_text, size_t len, sd_tok_clean mode, int32_t *ids,
                                 int max_len, int *n_valid, int *n_truncated)
{
    if (n_valid)
        *n_valid = 0;
    if (n_truncated)
        *n_truncated = 0;
    if (!ids || max_len < 2)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "tokenizer: encode needs an id buffer of max_len >= 2 (got %d)",
                       max_len);
    idbuf out = {0};
    sd_status s = tokenize_all(t, utf8_text, len, mode, &out);
    if (s == SD_OK) {
        size_t keep = SD_MIN(out.n, (size_t)max_len - 2);
        ids[0] = t->bos_id;
        if (keep)
            memcpy(ids + 1, out.v, keep * sizeof *ids);
        ids[keep + 1] = t->eos_id;
        for (size_t i = keep + 2; i < (size_t)max_len; i++)
            ids[i] = t->pad_id;
        if (n_valid)
            *n_valid = (int)keep + 2;
        if (n_truncated)
            *n_truncated = (int)SD_MIN(out.n - keep, (size_t)INT32_MAX);
    }
    free(out.v);
    return s;
}

sd_status sd_tokenizer_encode(sd_tokenizer *t, const char *utf8_text, sd_tok_clean mode, int32_t *ids, int max_len,
                              int *n_valid, int *n_truncated)
{
    return sd_tokenizer_encode_n(t, utf8_text, utf8_text ? strlen(utf8_text) : 0, mode, ids, max_len, n_valid,
                                 n_truncated);
}

int sd_tokenizer_pad_id(const sd_tokenizer *t) { return t ? t->pad_id : -1; }
int sd_tokenizer_bos_id(const sd_tokenizer *t) { return t ? t->bos_id : -1; }
int sd_tokenizer_eos_id(const sd_tokenizer *t) { return t ? t->eos_id : -1; }
int sd_tokenizer_unk_id(const sd_tokenizer *t) { return t ? t->unk_id : -1; }
int sd_tokenizer_max_length(const sd_tokenizer *t) { return t ? t->model_max_length : 0; }
int sd_tokenizer_vocab_size(const sd_tokenizer *t) { return t ? t->n_ids : 0; }

const char *sd_tokenizer_id_to_token(const sd_tokenizer *t, int id)
{
    if (!t || id < 0 || id >= t->n_ids)
        return NULL;
    return t->id_to_tok[id];
}
