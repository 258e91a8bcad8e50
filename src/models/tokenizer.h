/* CLIP byte-level BPE tokenizer, matching transformers' slow (pure Python)
 * CLIPTokenizer (v4.37) token for token.
 *
 * Pipeline for one prompt (what CLIPTokenizer.__call__ does):
 *   1. The prompt is split on the tokenizer's added tokens (exact, case-
 *      sensitive match, longest first): "<|startoftext|>", "<|endoftext|>",
 *      the bos/eos/unk/pad tokens and every entry of tokenizer_config.json's
 *      "added_tokens_decoder". SD2.x tokenizers declare the pad token "!"
 *      (id 0) as such a token, so every "!" in an SD2 prompt becomes id 0 on
 *      its own ("!!" -> 0 0, not the merged "!!" token).
 *   2. Every other piece is cleaned:
 *        SD_TOK_CLEAN_FTFY : whitespace_clean(ftfy.fix_text(piece)).lower()
 *                            (transformers with ftfy installed; what openai/CLIP
 *                            does). ftfy 6.1.1 default fixers are implemented:
 *                            HTML entity unescape (named HTML5 + numeric; skipped
 *                            for the rest of the piece from the first line that
 *                            contains '<'), C1 controls as Windows-1252, Latin
 *                            ligatures, full/half-width folding, curly quotes,
 *                            line breaks, ANSI escapes, control characters, NFC,
 *                            repeated to a fixed point per line.
 *                            NOT implemented: ftfy's mojibake repair
 *                            (fix_encoding: "cafÃ©" -> "café"); text that ftfy
 *                            considers mojibake can tokenize differently.
 *        SD_TOK_CLEAN_BASIC: BERT BasicTokenizer(strip_accents=False,
 *                            do_split_on_punc=False) (transformers without ftfy,
 *                            the usual diffusers install): drop NUL, U+FFFD and
 *                            category C* characters except \t\n\r, whitespace to
 *                            ' ', spaces around CJK ideographs, NFC, split on
 *                            whitespace, lower-case, join with ' '. No unescaping.
 *      Lower-casing is Python's str.lower() (full mapping: U+0130 -> "i\u0307",
 *      contextual final sigma).
 *   3. Pre-tokenizer (regex, IGNORECASE):
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      with \s = Unicode White_Space, categories from utf8proc.
 *   4. Each match -> UTF-8 bytes -> GPT-2 bytes_to_unicode characters -> BPE
 *      (lowest merge rank first, "</w>" on the last symbol) -> vocab ids.
 *      Pieces equal to "<|startoftext|>"/"<|endoftext|>" map to those tokens.
 *
 * Input text is UTF-8. Invalid UTF-8 is NOT an error: each maximal invalid
 * subsequence becomes U+FFFD, exactly like Python's
 * bytes.decode("utf-8", errors="replace"). (The BASIC path then drops it, the
 * FTFY path tokenizes it.) A NUL byte is a character like any other in the
 * *_n variants (both paths remove it). Texts over SD_TOK_MAX_TEXT_BYTES are
 * rejected with SD_ERR_INVALID_ARGUMENT; everything else runs in
 * O(n log n) time and O(n) memory.
 *
 * A tokenizer handle keeps a bounded BPE cache and is not safe for
 * concurrent use from several threads (use one handle per thread).
 *
 * Versions: the reference ran on Python 3.11 (unicodedata = Unicode 14) and a
 * recent `regex` module; utf8proc 2.8 is Unicode 15. Characters assigned after
 * Unicode 14 can be classified differently from the reference.
 */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H

#include "core/core.h"

#define SD_TOK_MAX_TEXT_BYTES ((size_t)4 * 1024 * 1024)

typedef struct sd_tokenizer sd_tokenizer;

typedef enum {
    SD_TOK_CLEAN_FTFY = 0, /* default: openai CLIP / transformers with ftfy */
    SD_TOK_CLEAN_BASIC     /* transformers without ftfy (BERT BasicTokenizer) */
} sd_tok_clean;

/* Loads `dir`/vocab.json and `dir`/merges.txt (required: SD_ERR_NOT_FOUND
 * naming the file when missing, SD_ERR_FORMAT when malformed) and, when
 * present, tokenizer_config.json / special_tokens_map.json for bos/eos/unk/pad
 * tokens, added tokens and model_max_length (defaults: "<|startoftext|>",
 * "<|endoftext|>" x3, 77). tokenizer_config.json wins over
 * special_tokens_map.json, as in transformers. */
sd_status sd_tokenizer_load(const char *dir, sd_tokenizer **out);
void sd_tokenizer_free(sd_tokenizer *t);

/* ids: exactly max_len entries [BOS, tokens..., EOS, pad...]; when there are
 * more than max_len-2 tokens the tail is dropped and EOS stays at the last
 * position (transformers truncation=True, padding="max_length").
 * *n_valid = number of real tokens incl. BOS/EOS (attention-mask length),
 * *n_truncated = tokens dropped (0 when it fits). Either may be NULL.
 * max_len must be >= 2. */
sd_status sd_tokenizer_encode(sd_tokenizer *t, const char *utf8_text, sd_tok_clean mode, int32_t *ids, int max_len,
                              int *n_valid, int *n_truncated);
/* Same with an explicit byte length (text may contain NUL bytes). */
sd_status sd_tokenizer_encode_n(sd_tokenizer *t, const char *utf8_text, size_t len, sd_tok_clean mode, int32_t *ids,
                                 int max_len, int *n_valid, int *n_truncated);

/* Unpadded token ids without BOS/EOS. *n = total number of tokens; at most
 * `cap` are written (ids may be NULL when cap is 0, to query the count). */
sd_status sd_tokenizer_tokenize(sd_tokenizer *t, const char *utf8_text, sd_tok_clean mode, int32_t *ids, int cap,
                                int *n);
sd_status sd_tokenizer_tokenize_n(sd_tokenizer *t, const char *utf8_text, size_t len, sd_tok_clean mode, int32_t *ids,
                                  int cap, int *n);

int sd_tokenizer_pad_id(const sd_tokenizer *t);
int sd_tokenizer_bos_id(const sd_tokenizer *t);
int sd_tokenizer_eos_id(const sd_tokenizer *t);
int sd_tokenizer_unk_id(const sd_tokenizer *t);
int sd_tokenizer_max_length(const sd_tokenizer *t); /* model_max_length (77 for SD) */
int sd_tokenizer_vocab_size(const sd_tokenizer *t); /* largest id + 1 */
/* Token string of an id ("photo</w>", "<|endoftext|>"), NULL if unknown. */
const char *sd_tokenizer_id_to_token(const sd_tokenizer *t, int id);

#endif
