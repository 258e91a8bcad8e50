/* CLIP tokenizer: byte-level BPE (lowest merge rank first) with its bounded cache, and the
 * pre-tokenizer regex that cuts the cleaned text into pieces. */
#include "models/tokenizer_impl.h"

/* ------------------------------------------------------------------ BPE cache */

static void cache_clear(bpe_cache *c)
{
    for (size_t i = 0; i < c->cap; i++) {
        free(c->slots[i].key);
        c->slots[i].key = NULL;
    }
    c->n = 0;
    c->ids.n = 0;
}

void tok_cache_free(bpe_cache *c)
{
    cache_clear(c);
    free(c->slots);
    free(c->ids.v);
    memset(c, 0, sizeof *c);
}

static cache_slot *cache_find(bpe_cache *c, const char *key, size_t klen)
{
    size_t mask = c->cap - 1, i = (size_t)tok_hash_bytes(key, klen) & mask;
    for (;;) {
        cache_slot *s = &c->slots[i];
        if (!s->key || (s->klen == klen && memcmp(s->key, key, klen) == 0))
            return s;
        i = (i + 1) & mask;
    }
}

/* ------------------------------------------------------------------ BPE */

typedef struct heap_ent {
    int32_t rank, left, right, llen, rlen;
} heap_ent;

typedef struct bpe_heap {
    heap_ent *v;
    size_t n, cap;
} bpe_heap;

static inline bool heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static sd_status heap_push(bpe_heap *h, heap_ent e)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        heap_ent *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (BPE heap)");
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
    return SD_OK;
}

static heap_ent heap_pop(bpe_heap *h)
{
    heap_ent top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *mv = &last;
        if (l < h->n && heap_less(&h->v[l], mv)) {
            m = l;
            mv = &h->v[l];
        }
        if (r < h->n && heap_less(&h->v[r], mv))
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

typedef struct bpe_word {
    const char *s; /* mapped word (UTF-8 of byte-level characters) */
    size_t len;
    int32_t *start, *slen, *prev, *next;
    size_t nsym;
} bpe_word;

/* Looks up the merge rank of adjacent symbols a,b; -1 if none. */
static int32_t pair_rank(sd_tokenizer *t, const bpe_word *w, int32_t a, int32_t b, sd_status *st)
{
    bool fin = (size_t)(w->start[b] + w->slen[b]) == w->len;
    bytebuf *k = &t->key;
    k->n = 0;
    if ((*st = bb_reserve(k, (size_t)w->slen[a] + (size_t)w->slen[b] + 6)) != SD_OK)
        return -1;
    memcpy(k->v, w->s + w->start[a], (size_t)w->slen[a]);
    k->n = (size_t)w->slen[a];
    k->v[k->n++] = ' ';
    memcpy(k->v + k->n, w->s + w->start[b], (size_t)w->slen[b]);
    k->n += (size_t)w->slen[b];
    if (fin) {
        memcpy(k->v + k->n, "</w>", 4);
        k->n += 4;
    }
    int32_t r;
    return tok_strmap_get(&t->merges, k->v, k->n, &r) ? r : -1;
}

static sd_status push_pair(sd_tokenizer *t, bpe_word *w, bpe_heap *h, int32_t a, int32_t b)
{
    if (a < 0 || b < 0)
        return SD_OK;
    sd_status st = SD_OK;
    int32_t r = pair_rank(t, w, a, b, &st);
    if (st != SD_OK)
        return st;
    if (r < 0)
        return SD_OK;
    heap_ent e = {r, a, b, w->slen[a], w->slen[b]};
    return heap_push(h, e);
}

static int32_t symbol_id(sd_tokenizer *t, const bpe_word *w, int32_t a, sd_status *st)
{
    bool fin = (size_t)(w->start[a] + w->slen[a]) == w->len;
    bytebuf *k = &t->key;
    k->n = 0;
    if ((*st = bb_append(k, w->s + w->start[a], (size_t)w->slen[a])) != SD_OK)
        return t->unk_id;
    if (fin && (*st = bb_append(k, "</w>", 4)) != SD_OK)
        return t->unk_id;
    int32_t id;
    return tok_strmap_get(&t->vocab, k->v, k->n, &id) ? id : t->unk_id;
}

static int cmp_left(const void *a, const void *b)
{
    const heap_ent *x = a, *y = b;
    return (x->left > y->left) - (x->left < y->left);
}

/* CLIPTokenizer.bpe(): repeatedly merge every occurrence of the lowest-ranked
 * adjacent pair (left to right, non-overlapping). Heap-based: O(n log n). */
static sd_status bpe_run(sd_tokenizer *t, const char *s, size_t len, idbuf *out)
{
    /* symbols = mapped characters (1..4 UTF-8 bytes each) */
    size_t nsym = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            nsym++;
    bpe_word w = {s, len, NULL, NULL, NULL, NULL, nsym};
    int32_t *mem = sd_calloc(nsym * 4 + 4, sizeof(int32_t));
    if (!mem)
        return SD_ERR_OUT_OF_MEMORY;
    w.start = mem;
    w.slen = mem + nsym;
    w.prev = mem + 2 * nsym;
    w.next = mem + 3 * nsym;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            w.start[k] = (int32_t)i;
            w.prev[k] = (int32_t)k - 1;
            w.next[k] = k + 1 < nsym ? (int32_t)k + 1 : -1;
            k++;
        }
    }
    for (size_t i = 0; i < nsym; i++)
        w.slen[i] = (i + 1 < nsym ? w.start[i + 1] : (int32_t)len) - w.start[i];

    bpe_heap h = {0};
    heap_ent *batch = NULL;
    size_t batch_cap = 0;
    sd_status st = SD_OK;
    for (size_t i = 0; i + 1 < nsym && st == SD_OK; i++)
        st = push_pair(t, &w, &h, (int32_t)i, (int32_t)i + 1);
    while (st == SD_OK && h.n) {
        /* all entries of the lowest rank = every occurrence of one bigram */
        int32_t rank = h.v[0].rank;
        size_t nb = 0;
        while (h.n && h.v[0].rank == rank) {
            if (nb == batch_cap) {
                size_t cap = batch_cap ? batch_cap * 2 : 32;
                heap_ent *nbv = realloc(batch, cap * sizeof *nbv);
                if (!nbv) {
                    st = sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (BPE)");
                    break;
                }
                batch = nbv;
                batch_cap = cap;
            }
            batch[nb++] = heap_pop(&h);
        }
        if (st != SD_OK)
            break;
        qsort(batch, nb, sizeof *batch, cmp_left);
        for (size_t b = 0; b < nb && st == SD_OK; b++) {
            heap_ent e = batch[b];
            int32_t a = e.left, c = e.right;
            if (w.slen[a] != e.llen || w.slen[c] != e.rlen || w.next[a] != c || w.slen[a] == 0 || w.slen[c] == 0)
                continue; /* stale */
            w.slen[a] += w.slen[c];
            w.slen[c] = 0;
            w.next[a] = w.next[c];
            if (w.next[c] >= 0)
                w.prev[w.next[c]] = a;
            st = push_pair(t, &w, &h, w.prev[a], a);
            if (st == SD_OK)
                st = push_pair(t, &w, &h, a, w.next[a]);
        }
    }
    for (int32_t a = nsym ? 0 : -1; st == SD_OK && a >= 0; a = w.next[a]) {
        int32_t id = symbol_id(t, &w, a, &st);
        if (st == SD_OK)
            st = id_push(out, id);
    }
    free(h.v);
    free(batch);
    free(mem);
    return st;
}

/* BPE of one pre-tokenizer match (already byte-mapped), with the cache. */
static sd_status bpe_word_ids(sd_tokenizer *t, const char *s, size_t len, idbuf *out)
{
    if ((len == 15 && memcmp(s, "<|startoftext|>", 15) == 0) || (len == 13 && memcmp(s, "<|endoftext|>", 13) == 0)) {
        int32_t id;
        return id_push(out, tok_strmap_get(&t->vocab, s, len, &id) ? id : t->unk_id);
    }
    bpe_cache *c = &t->cache;
    bool cacheable = len <= TOK_CACHE_MAX_WORD && c->cap;
    if (cacheable) {
        cache_slot *sl = cache_find(c, s, len);
        if (sl->key) {
            for (uint32_t i = 0; i < sl->cnt; i++)
                SD_TRY(id_push(out, c->ids.v[sl->off + i]));
            return SD_OK;
        }
    }
    size_t before = out->n;
    SD_TRY(bpe_run(t, s, len, out));
    if (cacheable) {
        if (c->n >= TOK_CACHE_MAX_ENTRIES)
            cache_clear(c);
        char *key = malloc(len + 1);
        if (!key)
            return SD_OK; /* caching is optional */
        memcpy(key, s, len);
        key[len] = 0;
        uint32_t off = (uint32_t)c->ids.n;
        for (size_t i = before; i < out->n; i++)
            if (id_push(&c->ids, out->v[i]) != SD_OK) {
                sd_clear_error();
                c->ids.n = off;
                free(key);
                return SD_OK;
            }
        cache_slot *sl = cache_find(c, s, len);
        sl->key = key;
        sl->klen = (uint32_t)len;
        sl->off = off;
        sl->cnt = (uint32_t)(out->n - before);
        c->n++;
    }
    return SD_OK;
}

/* ------------------------------------------------------------------ pre-tokenizer */

/* Case-insensitive literal match under the regex module's IGNORECASE (simple
 * case folding): only ASCII letters and U+017F (long s ~ 's') matter here. */
static bool lit_match(const int32_t *v, size_t n, size_t i, const char *lit)
{
    for (size_t k = 0; lit[k]; k++) {
        if (i + k >= n)
            return false;
        int32_t c = v[i + k], l = (unsigned char)lit[k];
        if (c == l)
            continue;
        if (l >= 'a' && l <= 'z' && c == l - 32)
            continue;
        if (l == 's' && c == 0x17F)
            continue;
        return false;
    }
    return true;
}

static sd_status emit_piece(sd_tokenizer *t, const int32_t *v, size_t a, size_t b, idbuf *out)
{
    bytebuf *w = &t->word;
    w->n = 0;
    SD_TRY(bb_reserve(w, (b - a) * 8));
    for (size_t i = a; i < b; i++) {
        char u[4];
        int nu = tok_utf8_encode_cp(v[i], u);
        for (int k = 0; k < nu; k++) {
            unsigned char by = (unsigned char)u[k];
            memcpy(w->v + w->n, t->byte_enc[by], t->byte_enc_len[by]);
            w->n += t->byte_enc_len[by];
        }
    }
    w->v[w->n] = 0;
    /* bpe_word_ids uses t->key as scratch, never t->word */
    return bpe_word_ids(t, w->v, w->n, out);
}

sd_status tok_pretokenize(sd_tokenizer *t, const cpbuf *text, idbuf *out)
{
    static const char *const specials[] = {"<|startoftext|>", "<|endoftext|>"};
    static const char *const contractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    const int32_t *v = text->v;
    size_t n = text->n, i = 0;
    while (i < n) {
        int32_t c = v[i];
        size_t e = 0;
        if (c == '<') {
            for (size_t k = 0; k < 2 && !e; k++)
                if (lit_match(v, n, i, specials[k]))
                    e = i + strlen(specials[k]);
        } else if (c == '\'') {
            for (size_t k = 0; k < SD_ARRAY_LEN(contractions) && !e; k++)
                if (lit_match(v, n, i + 1, contractions[k]))
                    e = i + 1 + strlen(contractions[k]);
        }
        if (!e) {
            if (is_letter(c)) {
                e = i + 1;
                while (e < n && is_letter(v[e]))
                    e++;
            } else if (is_number(c)) {
                e = i + 1;
            } else if (!is_re_space(c) && c != 0x345) {
                /* U+0345 case-folds to a letter, so under IGNORECASE it is
                 * matched by neither [\p{L}] nor the negated class */
                e = i + 1;
                while (e < n && !is_re_space(v[e]) && !is_letter(v[e]) && !is_number(v[e]) && v[e] != 0x345)
                    e++;
            }
        }
        if (!e) {
            i++;
            continue;
        }
        SD_TRY(emit_piece(t, v, i, e, out));
        i = e;
    }
    return SD_OK;
}
