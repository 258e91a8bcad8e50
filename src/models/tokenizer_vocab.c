/* CLIP tokenizer: loading (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json),
 * the string -> int hash map (vocabulary, merge ranks) and the arena holding the strings. */
#include "models/tokenizer_impl.h"

#include <cjson/cJSON.h>
#include <stdio.h>

/* ------------------------------------------------------------------ arena */

/* n + 1 bytes, uninitialised */
static char *arena_alloc(arena *a, size_t n)
{
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        b = malloc(sizeof *b + cap);
        if (!b) {
            sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (%zu bytes)", cap);
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    char *p = b->data + b->used;
    p[n] = 0;
    b->used += n + 1;
    return p;
}

static char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void arena_free(arena *a)
{
    arena_block *b = a->head;
    while (b) {
        arena_block *nx = b->next;
        free(b);
        b = nx;
    }
    a->head = NULL;
}

/* ------------------------------------------------------------------ string -> int map */

uint64_t tok_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}


static sd_status strmap_init(strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2 + 16)
        cap *= 2;
    m->slots = sd_calloc(cap, sizeof *m->slots);
    if (!m->slots)
        return SD_ERR_OUT_OF_MEMORY;
    m->cap = cap;
    m->n = 0;
    return SD_OK;
}

static strmap_slot *strmap_find_slot(const strmap *m, const char *key, size_t klen)
{
    size_t mask = m->cap - 1, i = (size_t)tok_hash_bytes(key, klen) & mask;
    for (;;) {
        strmap_slot *s = &m->slots[i];
        if (!s->key || (s->klen == klen && memcmp(s->key, key, klen) == 0))
            return s;
        i = (i + 1) & mask;
    }
}

bool tok_strmap_get(const strmap *m, const char *key, size_t klen, int32_t *val)
{
    if (!m->cap)
        return false;
    const strmap_slot *s = strmap_find_slot(m, key, klen);
    if (!s->key)
        return false;
    *val = s->val;
    return true;
}

/* Inserts or overwrites; the key must outlive the map (arena). */
static sd_status strmap_put(strmap *m, const char *key, size_t klen, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        strmap bigger;
        SD_TRY(strmap_init(&bigger, m->n + 1));
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key)
                *strmap_find_slot(&bigger, m->slots[i].key, m->slots[i].klen) = m->slots[i];
        bigger.n = m->n;
        free(m->slots);
        *m = bigger;
    }
    strmap_slot *s = strmap_find_slot(m, key, klen);
    if (!s->key) {
        s->key = key;
        s->klen = (uint32_t)klen;
        m->n++;
    }
    s->val = val;
    return SD_OK;
}

static void strmap_free(strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ loading */

void sd_tokenizer_free(sd_tokenizer *t)
{
    if (!t)
        return;
    strmap_free(&t->vocab);
    strmap_free(&t->merges);
    free(t->id_to_tok);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].cps);
    free(t->added);
    tok_cache_free(&t->cache);
    free(t->word.v);
    free(t->key.v);
    arena_free(&t->mem);
    free(t);
}

static sd_status load_vocab(sd_tokenizer *t, const char *path)
{
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, TOK_MAX_VOCAB_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root)
        return sd_fail(SD_ERR_FORMAT, "%s: not valid JSON; expected {\"token\": id, ...} as written by "
                                      "transformers' save_pretrained", path);
    sd_status s = SD_OK;
    if (!cJSON_IsObject(root)) {
        s = sd_fail(SD_ERR_FORMAT, "%s: top level is not a JSON object of token -> id", path);
        goto done;
    }
    int count = cJSON_GetArraySize(root), max_id = -1;
    if (count <= 0) {
        s = sd_fail(SD_ERR_FORMAT, "%s: the vocabulary is empty", path);
        goto done;
    }
    if ((s = strmap_init(&t->vocab, (size_t)count)) != SD_OK)
        goto done;
    for (const cJSON *e = root->child; e; e = e->next) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!e->string || !cJSON_IsNumber(e) || d < 0 || d >= TOK_MAX_ID || d != (double)(int32_t)d) {
            s = sd_fail(SD_ERR_FORMAT, "%s: entry \"%.60s\" must map to an integer id in [0, %d)", path,
                        e->string ? e->string : "?", TOK_MAX_ID);
            goto done;
        }
        char *key = arena_strndup(&t->mem, e->string, strlen(e->string));
        if (!key) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        if ((s = strmap_put(&t->vocab, key, strlen(key), (int32_t)d)) != SD_OK)
            goto done;
        if ((int)d > max_id)
            max_id = (int)d;
    }
    t->n_ids = max_id + 1;
    t->id_to_tok = sd_calloc((size_t)t->n_ids, sizeof *t->id_to_tok);
    if (!t->id_to_tok) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    /* decoder = {v: k for k, v in encoder.items()}: the last key of an id wins */
    for (const cJSON *e = root->child; e; e = e->next) {
        size_t kl = strlen(e->string);
        const strmap_slot *sl = strmap_find_slot(&t->vocab, e->string, kl);
        if (sl->key)
            t->id_to_tok[sl->val] = sl->key;
    }
done:
    cJSON_Delete(root);
    return s;
}

static inline bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

static sd_status load_merges(sd_tokenizer *t, const char *path)
{
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, TOK_MAX_VOCAB_BYTES, &text, &len));
    sd_status s = strmap_init(&t->merges, 65536);
    /* merges_handle.read().strip().split("\n")[1:48895]; tuple(merge.split()) */
    size_t b = 0, e = len;
    while (b < e && is_ascii_space(text[b]))
        b++;
    while (e > b && is_ascii_space(text[e - 1]))
        e--;
    if (s == SD_OK && memchr(text + b, 0, e - b)) {
        s = sd_fail(SD_ERR_FORMAT, "%s: contains NUL bytes; expected a text file of \"left right\" lines", path);
    }
    size_t line = 0, p = b;
    int32_t rank = 0, usable = 0;
    while (s == SD_OK && p < e && rank < TOK_MAX_MERGES) {
        const char *nl = memchr(text + p, '\n', e - p);
        size_t q = nl ? (size_t)(nl - text) : e;
        if (line > 0) {
            /* split on whitespace: exactly two parts form a merge */
            const char *part[3];
            size_t plen[3];
            int np = 0;
            size_t k = p;
            while (k < q && np < 3) {
                while (k < q && is_ascii_space(text[k]))
                    k++;
                if (k >= q)
                    break;
                size_t st = k;
                while (k < q && !is_ascii_space(text[k]))
                    k++;
                part[np] = text + st;
                plen[np] = k - st;
                np++;
            }
            if (np == 2) {
                size_t kl = plen[0] + plen[1] + 1;
                char *key = arena_alloc(&t->mem, kl);
                if (!key) {
                    s = SD_ERR_OUT_OF_MEMORY;
                } else {
                    memcpy(key, part[0], plen[0]);
                    key[plen[0]] = ' ';
                    memcpy(key + plen[0] + 1, part[1], plen[1]);
                    key[kl] = 0;
                    s = strmap_put(&t->merges, key, kl, rank);
                    usable++;
                }
            }
            rank++;
        }
        line++;
        p = q + 1;
    }
    free(text);
    if (s == SD_OK && usable == 0)
        s = sd_fail(SD_ERR_FORMAT, "%s: no merges found; expected a \"#version\" header line followed by "
                                   "\"left right\" lines", path);
    return s;
}

/* A special token in tokenizer_config.json / special_tokens_map.json: a
 * string or an AddedToken object {"content": ...}. */
static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

static sd_status load_json_opt(const char *path, cJSON **out)
{
    *out = NULL;
    if (!sd_file_exists(path))
        return SD_OK;
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, TOK_MAX_CONFIG_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sd_fail(SD_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = root;
    return SD_OK;
}

static sd_status add_added(sd_tokenizer *t, const char *content, int32_t id, bool lstrip, bool rstrip)
{
    for (int i = 0; i < t->n_added; i++) {
        cpbuf tmp = {0};
        SD_TRY(tok_utf8_decode((const unsigned char *)content, strlen(content), &tmp));
        bool same = tmp.n == t->added[i].ncp && (tmp.n == 0 || !memcmp(tmp.v, t->added[i].cps, tmp.n * 4));
        cp_free(&tmp);
        if (same)
            return SD_OK;
    }
    added_token *a = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *a);
    if (!a)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    t->added = a;
    cpbuf cps = {0};
    SD_TRY(tok_utf8_decode((const unsigned char *)content, strlen(content), &cps));
    added_token *n = &t->added[t->n_added++];
    n->cps = cps.v;
    n->ncp = cps.n;
    n->id = id;
    n->lstrip = lstrip;
    n->rstrip = rstrip;
    return SD_OK;
}

static sd_status resolve_special(sd_tokenizer *t, const char *dir, const cJSON *cfg, const cJSON *map, const char *key,
                                 const char *def, int32_t *id_out)
{
    const char *content = NULL;
    const cJSON *src = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (src && !cJSON_IsNull(src)) {
        content = token_content(src);
        if (!content)
            return sd_fail(SD_ERR_FORMAT, "%s/tokenizer_config.json: \"%s\" must be a string or {\"content\": ...}",
                           dir, key);
    } else if (map && (src = cJSON_GetObjectItemCaseSensitive(map, key)) && !cJSON_IsNull(src)) {
        content = token_content(src);
        if (!content)
            return sd_fail(SD_ERR_FORMAT, "%s/special_tokens_map.json: \"%s\" must be a string or {\"content\": ...}",
                           dir, key);
    } else {
        content = def;
    }
    /* added tokens first, then the vocabulary */
    cpbuf cps = {0};
    SD_TRY(tok_utf8_decode((const unsigned char *)content, strlen(content), &cps));
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].ncp == cps.n && (cps.n == 0 || !memcmp(t->added[i].cps, cps.v, cps.n * 4))) {
            *id_out = t->added[i].id;
            cp_free(&cps);
            return SD_OK;
        }
    cp_free(&cps);
    int32_t id;
    if (!tok_strmap_get(&t->vocab, content, strlen(content), &id))
        return sd_fail(SD_ERR_FORMAT, "%s: %s \"%.60s\" is neither in vocab.json nor in tokenizer_config.json's "
                                      "added_tokens_decoder", dir, key, content);
    *id_out = id;
    /* special tokens are always split off the text (transformers adds them as added tokens) */
    return add_added(t, content, id, false, false);
}

static void init_tables(sd_tokenizer *t)
{
    /* GPT-2 bytes_to_unicode */
    bool direct[256] = {false};
    for (int b = '!'; b <= '~'; b++)
        direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++)
        direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++)
        direct[b] = true;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int32_t cp = direct[b] ? b : 256 + extra++;
        t->byte_enc_len[b] = (uint8_t)tok_utf8_encode_cp(cp, t->byte_enc[b]);
    }
    /* ftfy WIDTH_MAP: NFKC of U+FF01..U+FFEF where it differs */
    for (int32_t c = 0xFF01; c <= 0xFFEF; c++) {
        int idx = c - 0xFF01;
        t->width_map[idx][0] = -1;
        t->width_len[idx] = 0;
        char u[5];
        int nu = tok_utf8_encode_cp(c, u);
        u[nu] = 0;
        utf8proc_uint8_t *res = NULL;
        utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)u, nu, &res,
                                           (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
        if (rl > 0 && !(rl == nu && memcmp(res, u, (size_t)nu) == 0)) {
            cpbuf tmp = {0};
            if (tok_utf8_decode(res, (size_t)rl, &tmp) == SD_OK && tmp.n >= 1 && tmp.n <= 3) {
                for (size_t k = 0; k < tmp.n; k++)
                    t->width_map[idx][k] = tmp.v[k];
                t->width_len[idx] = (uint8_t)tmp.n;
            }
            cp_free(&tmp);
        }
        free(res);
    }
}

sd_status sd_tokenizer_load(const char *dir, sd_tokenizer **out)
{
    if (!out)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_tokenizer_load: NULL output pointer");
    *out = NULL;
    if (!dir || !*dir)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "sd_tokenizer_load: empty directory name");
    sd_tokenizer *t = sd_calloc(1, sizeof *t);
    if (!t)
        return SD_ERR_OUT_OF_MEMORY;
    init_tables(t);
    cJSON *cfg = NULL, *map = NULL;
    char *p_vocab = sd_path_join(dir, "vocab.json"), *p_merges = sd_path_join(dir, "merges.txt");
    char *p_cfg = sd_path_join(dir, "tokenizer_config.json"), *p_map = sd_path_join(dir, "special_tokens_map.json");
    sd_status s = SD_OK;
    if (!p_vocab || !p_merges || !p_cfg || !p_map) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if (!sd_file_exists(p_vocab)) {
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: missing; a CLIP tokenizer folder needs vocab.json and merges.txt", p_vocab);
        goto done;
    }
    if (!sd_file_exists(p_merges)) {
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: missing; a CLIP tokenizer folder needs vocab.json and merges.txt",
                    p_merges);
        goto done;
    }
    if ((s = load_vocab(t, p_vocab)) != SD_OK || (s = load_merges(t, p_merges)) != SD_OK)
        goto done;
    if ((s = load_json_opt(p_cfg, &cfg)) != SD_OK || (s = load_json_opt(p_map, &map)) != SD_OK)
        goto done;
    /* added_tokens_decoder: {"id": {"content": ..., "lstrip": ..., "rstrip": ...}} */
    const cJSON *atd = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL;
    if (atd && !cJSON_IsNull(atd)) {
        if (!cJSON_IsObject(atd)) {
            s = sd_fail(SD_ERR_FORMAT, "%s: \"added_tokens_decoder\" must be an object", p_cfg);
            goto done;
        }
        for (const cJSON *e = atd->child; e; e = e->next) {
            char *endp = NULL;
            long id = e->string ? strtol(e->string, &endp, 10) : -1;
            const char *content = token_content(e);
            if (!e->string || !*e->string || *endp || id < 0 || id >= TOK_MAX_ID || !content || !*content) {
                s = sd_fail(SD_ERR_FORMAT, "%s: added_tokens_decoder entry \"%.40s\" must be \"<id>\": "
                                           "{\"content\": \"...\"}", p_cfg, e->string ? e->string : "?");
                goto done;
            }
            bool lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
            bool rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
            if ((s = add_added(t, content, (int32_t)id, lstrip, rstrip)) != SD_OK)
                goto done;
        }
    }
    if ((s = resolve_special(t, dir, cfg, map, "bos_token", "<|startoftext|>", &t->bos_id)) != SD_OK ||
        (s = resolve_special(t, dir, cfg, map, "eos_token", "<|endoftext|>", &t->eos_id)) != SD_OK ||
        (s = resolve_special(t, dir, cfg, map, "unk_token", "<|endoftext|>", &t->unk_id)) != SD_OK ||
        (s = resolve_special(t, dir, cfg, map, "pad_token", "<|endoftext|>", &t->pad_id)) != SD_OK)
        goto done;
    t->model_max_length = 77;
    const cJSON *mml = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length") : NULL;
    if (mml && !cJSON_IsNull(mml)) {
        if (!cJSON_IsNumber(mml) || mml->valuedouble < 2) {
            s = sd_fail(SD_ERR_FORMAT, "%s: \"model_max_length\" must be a number >= 2", p_cfg);
            goto done;
        }
        /* transformers writes int(1e30) for "no limit"; CLIP's position table is 77 long */
        t->model_max_length = mml->valuedouble > 1e6 ? 77 : (int)mml->valuedouble;
    }
    /* BPE cache */
    t->cache.cap = 16384;
    t->cache.slots = sd_calloc(t->cache.cap, sizeof *t->cache.slots);
    if (!t->cache.slots) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    free(p_vocab);
    free(p_merges);
    free(p_cfg);
    free(p_map);
    if (s != SD_OK) {
        sd_tokenizer_free(t);
        return s;
    }
    *out = t;
    return SD_OK;
}
