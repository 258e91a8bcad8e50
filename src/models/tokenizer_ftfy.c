/* CLIP tokenizer: the FTFY clean path, a port of ftfy 6.1.1 fix_text's default fixers (see
 * tokenizer.h for what is and is not implemented). */
#include "models/tokenizer_impl.h"
#include "models/tokenizer_entities.h"

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

sd_status tok_clean_ftfy(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp)
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
