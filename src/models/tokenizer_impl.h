/* Internals of the CLIP tokenizer (src/models/tokenizer*.c), shared by its files:
 *   tokenizer.c        the pipeline: added-token split, clean, pre-tokenize, BPE; public calls
 *   tokenizer_text.c   UTF-8, Python str.lower(), NFC, the BASIC (BERT) clean path
 *   tokenizer_ftfy.c   the FTFY clean path (ftfy 6.1.1 fix_text)
 *   tokenizer_bpe.c    the BPE merge loop, its cache, the pre-tokenizer regex
 *   tokenizer_vocab.c  loading vocab.json / merges.txt / configs, the string -> id hash map, the string arena
 * See tokenizer.h for the pipeline and the exact reference behaviour. */
#ifndef SD_TOKENIZER_IMPL_H
#define SD_TOKENIZER_IMPL_H

#include "models/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define TOK_MAX_VOCAB_BYTES ((size_t)64 * 1024 * 1024)
#define TOK_MAX_CONFIG_BYTES ((size_t)16 * 1024 * 1024)
#define TOK_MAX_ID (1 << 21)
/* CLIPTokenizer reads at most 49152 - 256 - 2 merges after the header line. */
#define TOK_MAX_MERGES (49152 - 256 - 2)
#define TOK_CACHE_MAX_ENTRIES 8192
#define TOK_CACHE_MAX_WORD 256
/* ftfy's fix_and_explain repeats all fixers until nothing changes; nested
 * entities ("&amp;amp;amp;...") need one round per level. Bounded here. */
#define TOK_FTFY_MAX_ROUNDS 64
#define TOK_FTFY_MAX_SEGMENT 1000000 /* ftfy max_decode_length */

/* ------------------------------------------------------------------ buffers */

typedef struct cpbuf {
    int32_t *v;
    size_t n, cap;
} cpbuf;

static inline sd_status cp_reserve(cpbuf *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return SD_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra)
        cap *= 2;
    int32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (%zu code points)", cap);
    b->v = v;
    b->cap = cap;
    return SD_OK;
}

static inline sd_status cp_push(cpbuf *b, int32_t c)
{
    if (b->n == b->cap)
        SD_TRY(cp_reserve(b, 1));
    b->v[b->n++] = c;
    return SD_OK;
}

static inline void cp_free(cpbuf *b)
{
    free(b->v);
    memset(b, 0, sizeof *b);
}

static inline void cp_swap(cpbuf *a, cpbuf *b)
{
    cpbuf t = *a;
    *a = *b;
    *b = t;
}

typedef struct bytebuf {
    char *v;
    size_t n, cap;
} bytebuf;

static inline sd_status bb_reserve(bytebuf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return SD_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *v = realloc(b->v, cap);
    if (!v)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (%zu bytes)", cap);
    b->v = v;
    b->cap = cap;
    return SD_OK;
}

static inline sd_status bb_append(bytebuf *b, const char *s, size_t n)
{
    SD_TRY(bb_reserve(b, n));
    memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
    return SD_OK;
}

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
} idbuf;

static inline sd_status id_push(idbuf *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 128;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (%zu tokens)", cap);
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return SD_OK;
}

/* ------------------------------------------------------------------ arena */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
} arena_block;

typedef struct arena {
    arena_block *head;
} arena;


/* ------------------------------------------------------------------ string -> int map
 * (tokenizer_vocab.c) */

typedef struct strmap_slot {
    const char *key; /* NULL = empty */
    uint32_t klen;
    int32_t val;
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;
    size_t cap, n; /* cap is a power of two */
} strmap;

/* ------------------------------------------------------------------ BPE cache (tokenizer_bpe.c) */

typedef struct cache_slot {
    char *key; /* malloc'd; NULL = empty */
    uint32_t klen;
    uint32_t off, cnt; /* into cache ids */
} cache_slot;

typedef struct bpe_cache {
    cache_slot *slots;
    size_t cap, n;
    idbuf ids;
} bpe_cache;

/* ------------------------------------------------------------------ tokenizer */

typedef struct added_token {
    int32_t *cps; /* content as code points */
    size_t ncp;
    int32_t id;
    bool lstrip, rstrip;
} added_token;

struct sd_tokenizer {
    arena mem;
    strmap vocab;  /* token string -> id */
    strmap merges; /* "left right" -> rank */
    const char **id_to_tok;
    int n_ids;
    added_token *added;
    int n_added;
    int32_t bos_id, eos_id, pad_id, unk_id;
    int model_max_length;
    char byte_enc[256][3]; /* GPT-2 bytes_to_unicode, UTF-8 */
    uint8_t byte_enc_len[256];
    int32_t width_map[0xFFEF - 0xFF01 + 1][3]; /* ftfy fix_character_width; [0] = -1: unchanged */
    uint8_t width_len[0xFFEF - 0xFF01 + 1];
    bpe_cache cache;
    /* scratch reused across calls */
    bytebuf word, key;
};

/* ------------------------------------------------------------------ character classes */

static inline int cat_of(int32_t c) { return (int)utf8proc_category(c); }

static inline bool is_letter(int32_t c)
{
    int k = cat_of(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static inline bool is_number(int32_t c)
{
    int k = cat_of(c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* The `regex` module's \s: the Unicode White_Space property. */
static inline bool is_re_space(int32_t c)
{
    if (c < 0x80)
        return (c >= 0x09 && c <= 0x0D) || c == 0x20;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's str.isspace() / re's \s on str / str.split(): White_Space plus
 * U+001C..U+001F (bidi class B/S). */
static inline bool is_py_space(int32_t c) { return is_re_space(c) || (c >= 0x1C && c <= 0x1F); }

/* ------------------------------------------------------------------ across the files */

/* tokenizer_vocab.c */
uint64_t tok_hash_bytes(const char *s, size_t n);
bool tok_strmap_get(const strmap *m, const char *key, size_t klen, int32_t *val);

/* tokenizer_bpe.c */
void tok_cache_free(bpe_cache *c);
sd_status tok_pretokenize(sd_tokenizer *t, const cpbuf *text, idbuf *out);

/* tokenizer_text.c */
sd_status tok_utf8_decode(const unsigned char *s, size_t n, cpbuf *out);
int tok_utf8_encode_cp(int32_t c, char *o);
sd_status tok_py_lower(const cpbuf *in, cpbuf *out);
sd_status tok_normalize(cpbuf *b, int options, bytebuf *scratch);
sd_status tok_clean_basic(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp);

/* tokenizer_ftfy.c */
sd_status tok_clean_ftfy(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp);

#endif
