/* CLIP tokenizer: text primitives (UTF-8 with Python's replacement rules, str.lower(), NFC) and
 * the BASIC clean path (BERT BasicTokenizer). */
#include "models/tokenizer_impl.h"

/* ------------------------------------------------------------------ UTF-8 */

/* Python bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal
 * invalid subsequence. */
sd_status tok_utf8_decode(const unsigned char *s, size_t n, cpbuf *out)
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

int tok_utf8_encode_cp(int32_t c, char *o)
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
sd_status tok_py_lower(const cpbuf *in, cpbuf *out)
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
sd_status tok_normalize(cpbuf *b, int options, bytebuf *scratch)
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

sd_status tok_clean_basic(sd_tokenizer *t, const int32_t *in, size_t n, cpbuf *out, cpbuf *tmp)
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
