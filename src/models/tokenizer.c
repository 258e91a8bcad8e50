/* CLIP byte-level BPE tokenizer (transformers slow CLIPTokenizer semantics).
 * See tokenizer.h for the pipeline and the exact reference behaviour. */
#include "models/tokenizer.h"

#include "models/tokenizer_entities.h"

#include <cjson/cJSON.h>
#include <stdio.h>
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

static sd_status cp_reserve(cpbuf *b, size_t extra)
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

static void cp_free(cpbuf *b)
{
    free(b->v);
    memset(b, 0, sizeof *b);
}

static void cp_swap(cpbuf *a, cpbuf *b)
{
    cpbuf t = *a;
    *a = *b;
    *b = t;
}

typedef struct bytebuf {
    char *v;
    size_t n, cap;
} bytebuf;

static sd_status bb_reserve(bytebuf *b, size_t extra)
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

static sd_status bb_append(bytebuf *b, const char *s, size_t n)
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

static sd_status id_push(idbuf *b, int32_t id)
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

static uint64_t tok_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

typedef struct strmap_slot {
    const char *key; /* NULL = empty */
    uint32_t klen;
    int32_t val;
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;
    size_t cap, n; /* cap is a power of two */
} strmap;

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

static bool tok_strmap_get(const strmap *m, const char *key, size_t klen, int32_t *val)
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

/* ------------------------------------------------------------------ BPE cache */

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

static void cache_clear(bpe_cache *c)
{
    for (size_t i = 0; i < c->cap; i++) {
        free(c->slots[i].key);
        c->slots[i].key = NULL;
    }
    c->n = 0;
    c->ids.n = 0;
}

static void tok_cache_free(bpe_cache *c)
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

/* ------------------------------------------------------------------ UTF-8 */

/* Python bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal
 * invalid subsequence. */
static sd_status tok_utf8_decode(const unsigned char *s, size_t n, cpbuf *out)
{
    SD_TRY(cp_reserve(out, n));
    size_t i = 0;
    while (i < n) {
        unsigned b = s[i];
        if (b < 0x80) {
            out->v[out->n++] = (int32_t)b;
            i++;
            continue;
        }
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        int32_t cp;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
            cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            cp = b & 0x0F;
            if (b == 0xE0)
                lo = 0xA0;
            else if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            cp = b & 0x07;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;
        } else {
            out->v[out->n++] = 0xFFFD;
            i++;
            continue;
        }
        size_t j = i + 1;
        int got = 0;
        while (got < need && j < n) {
            unsigned c = s[j];
            unsigned l = got == 0 ? lo : 0x80, h = got == 0 ? hi : 0xBF;
            if (c < l || c > h)
                break;
            cp = (cp << 6) | (int32_t)(c & 0x3F);
            j++;
            got++;
        }
        out->v[out->n++] = got == need ? cp : 0xFFFD;
        i = j;
    }
    return SD_OK;
}

static int tok_utf8_encode_cp(int32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static sd_status cps_to_utf8(const int32_t *v, size_t n, bytebuf *out)
{
    out->n = 0;
    SD_TRY(bb_reserve(out, n * 4));
    for (size_t i = 0; i < n; i++)
        out->n += (size_t)tok_utf8_encode_cp(v[i], out->v + out->n);
    out->v[out->n] = 0;
    return SD_OK;
}

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

/* DerivedCoreProperties Cased ~ Lu/Ll/Lt, anything with a case mapping, and
 * Other_Lowercase / Other_Uppercase. */
static bool is_cased(int32_t c)
{
    int k = cat_of(c);
    if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT)
        return true;
    if (utf8proc_tolower(c) != c || utf8proc_toupper(c) != c)
        return true;
    static const int32_t other[][2] = {
        {0x00AA, 0x00AA}, {0x00BA, 0x00BA}, {0x02B0, 0x02B8}, {0x02C0, 0x02C1}, {0x02E0, 0x02E4},
        {0x0345, 0x0345}, {0x037A, 0x037A}, {0x10FC, 0x10FC}, {0x1D2C, 0x1D6A}, {0x1D78, 0x1D78},
        {0x1D9B, 0x1DBF}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2160, 0x217F},
        {0x24B6, 0x24E9}, {0x2C7C, 0x2C7D}, {0xA69C, 0xA69D}, {0xA770, 0xA770}, {0xA7F2, 0xA7F4},
        {0xA7F8, 0xA7F9}, {0xAB5C, 0xAB5F}, {0xAB69, 0xAB69}, {0x10780, 0x10780}, {0x10783, 0x10785},
        {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x1E030, 0x1E06D}, {0x1F130, 0x1F149}, {0x1F150, 0x1F169},
        {0x1F170, 0x1F189},
    };
    for (size_t i = 0; i < SD_ARRAY_LEN(other); i++)
        if (c >= other[i][0] && c <= other[i][1])
            return true;
    return false;
}

/* Case_Ignorable: Mn, Me, Cf, Lm, Sk, and Word_Break MidLetter/MidNumLet/Single_Quote. */
static bool is_case_ignorable(int32_t c)
{
    switch (c) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4: case 0x2018:
    case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07:
    case 0xFF0E: case 0xFF1A:
        return true;
    default:
        break;
    }
    int k = cat_of(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* Python str.lower(): full lower-case mapping (U+0130 -> i + U+0307) and the
 * Final_Sigma context for U+03A3. */
static sd_status tok_py_lower(const cpbuf *in, cpbuf *out)
{
    out->n = 0;
    SD_TRY(cp_reserve(out, in->n + 8));
    for (size_t i = 0; i < in->n; i++) {
        int32_t c = in->v[i];
        if (c < 0x80) {
            if (c >= 'A' && c <= 'Z')
                c += 32;
            SD_TRY(cp_push(out, c));
        } else if (c == 0x130) {
            SD_TRY(cp_push(out, 0x69));
            SD_TRY(cp_push(out, 0x307));
        } else if (c == 0x3A3) {
            size_t j = i;
            int32_t prev = 0;
            bool found = false;
            while (j > 0) {
                prev = in->v[--j];
                if (!is_case_ignorable(prev)) {
                    found = true;
                    break;
                }
            }
            bool fin = found && is_cased(prev);
            if (fin) {
                size_t k = i + 1;
                while (k < in->n && is_case_ignorable(in->v[k]))
                    k++;
                fin = k == in->n || !is_cased(in->v[k]);
            }
            SD_TRY(cp_push(out, fin ? 0x3C2 : 0x3C3));
        } else {
            SD_TRY(cp_push(out, utf8proc_tolower(c)));
        }
    }
    return SD_OK;
}

/* Unicode normalization of a code point buffer (in place). */
static sd_status tok_normalize(cpbuf *b, int options, bytebuf *scratch)
{
    bool trivial = true;
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i] >= 0x300) {
            trivial = false;
            break;
        }
    if (trivial && !(options & UTF8PROC_COMPAT))
        return SD_OK;
    SD_TRY(cps_to_utf8(b->v, b->n, scratch));
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)scratch->v, (utf8proc_ssize_t)scratch->n, &res,
                                       (utf8proc_option_t)(UTF8PROC_STABLE | options));
    if (rl < 0) {
        free(res);
        return sd_fail(rl == UTF8PROC_ERROR_NOMEM ? SD_ERR_OUT_OF_MEMORY : SD_ERR_INTERNAL,
                       "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(rl));
    }
    b->n = 0;
    sd_status s = tok_utf8_decode(res, (size_t)rl, b);
    free(res);
    return s;
}

static inline bool is_cjk(int32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* ------------------------------------------------------------------ BASIC clean (BERT BasicTokenizer) */

static sd_status tok_clean_basic(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp)
{
    tmp->n = 0;
    SD_TRY(cp_reserve(tmp, n));
    for (size_t i = 0; i < n; i++) {
        int32_t c = in[i];
        if (c == 0 || c == 0xFFFD)
            continue;
        int k = cat_of(c);
        bool ws3 = c == '\t' || c == '\n' || c == '\r';
        /* _is_control: category C* (Cc Cf Cs Co Cn) except \t \n \r */
        if (!ws3 && (k == UTF8PROC_CATEGORY_CN || k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF ||
                     k == UTF8PROC_CATEGORY_CS || k == UTF8PROC_CATEGORY_CO))
            continue;
        if (c == ' ' || ws3 || k == UTF8PROC_CATEGORY_ZS) {
            SD_TRY(cp_push(tmp, ' '));
        } else if (is_cjk(c)) {
            SD_TRY(cp_push(tmp, ' '));
            SD_TRY(cp_push(tmp, c));
            SD_TRY(cp_push(tmp, ' '));
        } else {
            SD_TRY(cp_push(tmp, c));
        }
    }
    SD_TRY(tok_normalize(tmp, UTF8PROC_COMPOSE, &t->key));
    /* whitespace_tokenize (str.split()) then ' '.join */
    cpbuf joined = {0};
    sd_status s = SD_OK;
    size_t i = 0;
    while (i < tmp->n && s == SD_OK) {
        while (i < tmp->n && is_py_space(tmp->v[i]))
            i++;
        if (i >= tmp->n)
            break;
        if (joined.n)
            s = cp_push(&joined, ' ');
        while (s == SD_OK && i < tmp->n && !is_py_space(tmp->v[i]))
            s = cp_push(&joined, tmp->v[i++]);
    }
    if (s == SD_OK)
        s = tok_py_lower(&joined, out);
    cp_free(&joined);
    return s;
}

/* ------------------------------------------------------------------ FTFY clean (ftfy 6.1.1 fix_text) */

static const int32_t cp1252_80_9f[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

static int entity_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const sd_html_entity *)elem)->name);
}

static inline bool is_ascii_alnum(int32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline int hexval(int32_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* html.unescape() of a whole "&#...;" reference (Python's _replace_charref),
 * as ftfy uses it: returns the number of code points written to `o` (0 = the
 * reference decodes to nothing), or -1 when ftfy keeps the text unchanged. */
static int numeric_entity(const int32_t *body, size_t n, int32_t *o)
{
    /* body excludes '&', '#' and ';' */
    if (n == 0)
        return -1;
    uint64_t num = 0;
    bool hex = body[0] == 'x' || body[0] == 'X';
    size_t i = hex ? 1 : 0;
    if (i >= n)
        return -1;
    for (; i < n; i++) {
        int d = hex ? hexval(body[i]) : (body[i] >= '0' && body[i] <= '9' ? body[i] - '0' : -1);
        if (d < 0)
            return -1;
        num = num * (hex ? 16u : 10u) + (uint64_t)d;
        if (num > 0x7FFFFFFF)
            num = 0x7FFFFFFF; /* saturate: anything > 0x10FFFF is U+FFFD */
    }
    int32_t r;
    if (num == 0)
        r = 0xFFFD;
    else if (num == 0x0D)
        r = 0x0D;
    else if (num >= 0x80 && num <= 0x9F)
        r = cp1252_80_9f[num - 0x80];
    else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
        r = 0xFFFD;
    else if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || (num >= 0x7F && num <= 0x9F) ||
             (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return 0;
    else
        r = (int32_t)num;
    if (r == ';')
        return -1; /* ftfy: "if ';' in unescaped: return text" */
    o[0] = r;
    return 1;
}

/* ftfy.fixes.unescape_html: re.sub(r"&#?[0-9A-Za-z]{1,24};", ...) */
static sd_status fix_unescape_html(const cpbuf *in, cpbuf *out, cpbuf *tmp)
{
    out->n = 0;
    SD_TRY(cp_reserve(out, in->n));
    size_t i = 0, n = in->n;
    const int32_t *v = in->v;
    char name[32];
    while (i < n) {
        if (v[i] != '&') {
            SD_TRY(cp_push(out, v[i++]));
            continue;
        }
        size_t p = i + 1;
        bool hash = p < n && v[p] == '#';
        if (hash)
            p++;
        size_t q = p;
        while (q < n && q - p <= 24 && is_ascii_alnum(v[q]))
            q++;
        size_t len = q - p;
        if (len < 1 || len > 24 || q >= n || v[q] != ';') {
            SD_TRY(cp_push(out, v[i++]));
            continue;
        }
        /* matched v[i..q] */
        bool replaced = false;
        if (!hash) {
            for (size_t k = 0; k < len; k++)
                name[k] = (char)v[p + k];
            name[len] = 0;
            const sd_html_entity *e = bsearch(name, sd_html_entities, SD_ARRAY_LEN(sd_html_entities),
                                              sizeof sd_html_entities[0], entity_cmp);
            if (e) {
                tmp->n = 0;
                SD_TRY(tok_utf8_decode((const unsigned char *)e->utf8, strlen(e->utf8), tmp));
                for (size_t k = 0; k < tmp->n; k++)
                    SD_TRY(cp_push(out, tmp->v[k]));
                replaced = true;
            }
        } else {
            int32_t r[1];
            int m = numeric_entity(v + p, len, r);
            if (m >= 0) {
                for (int k = 0; k < m; k++)
                    SD_TRY(cp_push(out, r[k]));
                replaced = true;
            }
        }
        if (!replaced)
            for (size_t k = i; k <= q; k++)
                SD_TRY(cp_push(out, v[k]));
        i = q + 1;
    }
    return SD_OK;
}

static int ligature(int32_t c, int32_t *o)
{
    switch (c) {
    case 0x0132: o[0] = 'I'; o[1] = 'J'; return 2;
    case 0x0133: o[0] = 'i'; o[1] = 'j'; return 2;
    case 0x0149: o[0] = 0x02BC; o[1] = 'n'; return 2;
    case 0x01F1: o[0] = 'D'; o[1] = 'Z'; return 2;
    case 0x01F2: o[0] = 'D'; o[1] = 'z'; return 2;
    case 0x01F3: o[0] = 'd'; o[1] = 'z'; return 2;
    case 0x01C4: o[0] = 'D'; o[1] = 0x017D; return 2;
    case 0x01C5: o[0] = 'D'; o[1] = 0x017E; return 2;
    case 0x01C6: o[0] = 'd'; o[1] = 0x017E; return 2;
    case 0x01C7: o[0] = 'L'; o[1] = 'J'; return 2;
    case 0x01C8: o[0] = 'L'; o[1] = 'j'; return 2;
    case 0x01C9: o[0] = 'l'; o[1] = 'j'; return 2;
    case 0x01CA: o[0] = 'N'; o[1] = 'J'; return 2;
    case 0x01CB: o[0] = 'N'; o[1] = 'j'; return 2;
    case 0x01CC: o[0] = 'n'; o[1] = 'j'; return 2;
    case 0xFB00: o[0] = 'f'; o[1] = 'f'; return 2;
    case 0xFB01: o[0] = 'f'; o[1] = 'i'; return 2;
    case 0xFB02: o[0] = 'f'; o[1] = 'l'; return 2;
    case 0xFB03: o[0] = 'f'; o[1] = 'f'; o[2] = 'i'; return 3;
    case 0xFB04: o[0] = 'f'; o[1] = 'f'; o[2] = 'l'; return 3;
    case 0xFB05: o[0] = 0x017F; o[1] = 't'; return 2;
    case 0xFB06: o[0] = 's'; o[1] = 't'; return 2;
    default: return 0;
    }
}

static inline bool is_ftfy_control(int32_t c)
{
    return (c >= 0 && c <= 8) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

/* One fix_and_explain round minus unescape/fix_encoding/NFC: the character
 * fixers in ftfy's order (c1 controls, ligatures, width, quotes, line breaks,
 * [surrogates: impossible in decoded UTF-8], terminal escapes, control chars).
 * The per-character fixers compose, so they run in one pass per stage. */
static sd_status fix_chars(const sd_tokenizer *t, const cpbuf *in, cpbuf *out, cpbuf *tmp)
{
    /* stage 1: c1 -> ligatures -> width -> quotes (each a 1:n map of single characters) */
    tmp->n = 0;
    SD_TRY(cp_reserve(tmp, in->n));
    for (size_t i = 0; i < in->n; i++) {
        int32_t c = in->v[i];
        if (c >= 0x80 && c <= 0x9F)
            c = cp1252_80_9f[c - 0x80];
        int32_t lig[3];
        int nl = ligature(c, lig);
        if (!nl) {
            lig[0] = c;
            nl = 1;
        }
        for (int a = 0; a < nl; a++) {
            int32_t d = lig[a];
            int32_t w[3];
            int nw = 1;
            w[0] = d;
            if (d == 0x3000) {
                w[0] = ' ';
            } else if (d >= 0xFF01 && d <= 0xFFEF && t->width_map[d - 0xFF01][0] >= 0) {
                nw = t->width_len[d - 0xFF01];
                memcpy(w, t->width_map[d - 0xFF01], sizeof w);
            }
            for (int b = 0; b < nw; b++) {
                int32_t e = w[b];
                if (e == 0x02BC || (e >= 0x2018 && e <= 0x201B))
                    e = '\'';
                else if (e >= 0x201C && e <= 0x201F)
                    e = '"';
                SD_TRY(cp_push(tmp, e));
            }
        }
    }
    /* stage 2: line breaks (\r\n, \r, U+2028, U+2029, U+0085 -> \n) */
    out->n = 0;
    SD_TRY(cp_reserve(out, tmp->n));
    for (size_t i = 0; i < tmp->n; i++) {
        int32_t c = tmp->v[i];
        if (c == '\r') {
            if (i + 1 < tmp->n && tmp->v[i + 1] == '\n')
                i++;
            c = '\n';
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            c = '\n';
        }
        out->v[out->n++] = c;
    }
    /* stage 3: ANSI terminal escapes "\033\[((?:\d|;)*)([a-zA-Z])" */
    tmp->n = 0;
    SD_TRY(cp_reserve(tmp, out->n));
    for (size_t i = 0; i < out->n; i++) {
        int32_t c = out->v[i];
        if (c == 0x1B && i + 1 < out->n && out->v[i + 1] == '[') {
            size_t j = i + 2;
            while (j < out->n && (out->v[j] == ';' || cat_of(out->v[j]) == UTF8PROC_CATEGORY_ND))
                j++;
            if (j < out->n && ((out->v[j] >= 'a' && out->v[j] <= 'z') || (out->v[j] >= 'A' && out->v[j] <= 'Z'))) {
                i = j;
                continue;
            }
        }
        tmp->v[tmp->n++] = c;
    }
    /* stage 4: control characters */
    out->n = 0;
    for (size_t i = 0; i < tmp->n; i++)
        if (!is_ftfy_control(tmp->v[i]))
            out->v[out->n++] = tmp->v[i];
    return SD_OK;
}

static bool cp_equal(const cpbuf *a, const cpbuf *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* fix_and_explain on one segment with fix_encoding disabled. */
static sd_status ftfy_segment(sd_tokenizer *t, const int32_t *seg, size_t n, bool unescape, cpbuf *out)
{
    cpbuf cur = {0}, nxt = {0}, tmp = {0};
    sd_status s = cp_reserve(&cur, n + 1);
    if (s == SD_OK) {
        if (n)
            memcpy(cur.v, seg, n * sizeof *seg);
        cur.n = n;
    }
    for (int round = 0; s == SD_OK && round < TOK_FTFY_MAX_ROUNDS; round++) {
        cpbuf orig = {0};
        s = cp_reserve(&orig, cur.n + 1);
        if (s != SD_OK)
            break;
        if (cur.n)
            memcpy(orig.v, cur.v, cur.n * sizeof *cur.v);
        orig.n = cur.n;
        if (unescape) {
            s = fix_unescape_html(&cur, &nxt, &tmp);
            if (s == SD_OK)
                cp_swap(&cur, &nxt);
        }
        if (s == SD_OK)
            s = fix_chars(t, &cur, &nxt, &tmp);
        if (s == SD_OK) {
            cp_swap(&cur, &nxt);
            s = tok_normalize(&cur, UTF8PROC_COMPOSE, &t->key);
        }
        bool same = s == SD_OK && cp_equal(&cur, &orig);
        cp_free(&orig);
        if (same)
            break;
    }
    for (size_t i = 0; s == SD_OK && i < cur.n; i++)
        s = cp_push(out, cur.v[i]);
    cp_free(&cur);
    cp_free(&nxt);
    cp_free(&tmp);
    return s;
}

static sd_status tok_clean_ftfy(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp)
{
    /* ftfy.fix_text: per line (segment ends after '\n'), at most
     * max_decode_length code points; unescape_html="auto" switches off for
     * this and every later segment once a segment contains '<'. */
    tmp->n = 0;
    bool unescape = true;
    size_t pos = 0;
    while (pos < n) {
        size_t end = pos;
        while (end < n && in[end] != '\n')
            end++;
        end = end < n ? end + 1 : n;
        if (end - pos > TOK_FTFY_MAX_SEGMENT)
            end = pos + TOK_FTFY_MAX_SEGMENT;
        if (unescape)
            for (size_t i = pos; i < end; i++)
                if (in[i] == '<') {
                    unescape = false;
                    break;
                }
        SD_TRY(ftfy_segment(t, in + pos, end - pos, unescape, tmp));
        pos = end;
    }
    /* whitespace_clean: re.sub(r"\s+", " ", text).strip() */
    cpbuf ws = {0};
    sd_status s = cp_reserve(&ws, tmp->n + 1);
    size_t i = 0;
    while (s == SD_OK && i < tmp->n) {
        if (is_py_space(tmp->v[i])) {
            while (i < tmp->n && is_py_space(tmp->v[i]))
                i++;
            if (ws.n && i < tmp->n)
                ws.v[ws.n++] = ' ';
        } else {
            ws.v[ws.n++] = tmp->v[i++];
        }
    }
    if (s == SD_OK)
        s = tok_py_lower(&ws, out);
    cp_free(&ws);
    return s;
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

static sd_status tok_pretokenize(sd_tokenizer *t, const cpbuf *text, idbuf *out)
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
