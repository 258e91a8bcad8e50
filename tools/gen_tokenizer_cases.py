#!/usr/bin/env python3
"""Writes tests/data/tokenizer/cases.json: reference CLIP token ids for
tests/test_tokenizer.c, produced by transformers' *slow* (pure Python)
CLIPTokenizer - the implementation src/models/tokenizer.c reproduces.

Developer tool, not run by CI. Needs transformers < 5 (v5 dropped the slow
CLIPTokenizer) and, for the ftfy path, ftfy 6.1.1, e.g.:

    python3 -m venv --system-site-packages /tmp/tokvenv
    /tmp/tokvenv/bin/pip install "transformers==4.37.2" "ftfy==6.1.1"
    /tmp/tokvenv/bin/python tools/gen_tokenizer_cases.py

Both text-cleaning paths are produced from one tokenizer object by switching
what CLIPTokenizer.__init__ would have chosen:
  noftfy: tok.fix_text = None; tok.nlp = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
  ftfy:   tok.fix_text = ftfy.fix_text
and two padding conventions: sd15 (tests/data/tokenizer/sd15, pad "<|endoftext|>")
and sd2 (vocab/merges of sd15 + tests/data/tokenizer/sd2/*.json, pad "!" = id 0,
which is also an added token that splits every "!" off the text).

Prompts are stored as UTF-8 bytes (hex); byte strings that are not valid UTF-8
are tokenized by the reference as bytes.decode("utf-8", errors="replace"),
which is the documented behaviour of the C tokenizer.

`ftfy_needs_fix_encoding` marks prompts where ftfy's mojibake repair
(fix_encoding, not implemented in C) changes the result; their ftfy ids are the
true reference and the C test skips them.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data", "tokenizer")
MAX_LEN = 77

# (name, prompt as str or bytes)
PROMPTS = [
    ("empty", ""),
    ("ascii_simple", "a photo of a cat"),
    ("ascii_case", "A Portrait Of An Old Man, Oil Painting, HIGHLY DETAILED"),
    ("punct_weights", "hello, world! (masterpiece:1.2) [bad_hands] {x|y} ~ ^ ` \\ / @ # $ % * + = _"),
    ("punct_runs", "wow!!! really?! ... -- a.b,c;d:e \"quoted\""),
    ("numbers", "2048x2048 8k uhd 1.5 0.75 1e-5 #1 100% year 1999"),
    ("contractions", "it's don't we're I've I'm you'll he'd they'RE"),
    ("contractions_upper", "IT'S DON'T WE'LL"),
    ("apostrophes", "rock'n'roll o'clock 'quoted' ''s '' x'"),
    ("curly_quotes", "\u2018single\u2019 \u201cdouble\u201d it\u2019s \u201ehere\u201f \u02bcx"),
    ("latin_accents", "na\u00efve caf\u00e9 \u00c5ngstr\u00f6m Z\u00fcrich stra\u00dfe \u1e9e"),
    ("decomposed", "e\u0301te\u0301 Cafe\u0301 a\u0308\u0304"),
    ("turkish_dotted", "\u0130stanbul \u0131\u0130I"),
    ("greek_sigma", "\u03a3\u039f\u03a6\u039f\u03a3 \u03c3\u03bf\u03c6\u03cc\u03c2 \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3. \u03a3 A\u03a3\u0301"),
    ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0420\u0410\u0421\u0418\u0412\u042b\u0419"),
    ("hebrew_arabic", "\u05e2\u05d1\u05e8\u05d9\u05ea \u0645\u0631\u062d\u0628\u0627"),
    ("devanagari_thai", "\u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22"),
    ("cjk_japanese", "\u6771\u4eac\u30bf\u30ef\u30fc\u3068\u5bcc\u58eb\u5c71"),
    ("cjk_chinese", "\u4e00\u53ea\u732b\u5728\u5c4b\u9876\u4e0a\uff0c\u5f88\u53ef\u7231"),
    ("cjk_mixed", "\u6f22\u5b57and English\u6df7\u3056\u308b \ud55c\uad6d\uc5b4 \U00020000\uf900"),
    ("emoji", "\U0001f431\U0001f680\u2728 sparkles \u2764\ufe0f\u200d\U0001f525 \U0001f3f3\ufe0f\u200d\U0001f308 \U0001f44d\U0001f3fd"),
    ("html_entities", "Tom &amp; Jerry &lt;3 &quot;hi&quot; &#8217;s &#x1F600; &eacute;t&eacute; &amp;amp; &EACUTE; &#59; &nosuch;"),
    ("html_with_tag", "a <b>bold</b> &amp; tag"),
    ("html_sticky_lines", "line1 &amp;\nline2 < &amp;\nline3 &amp;"),
    ("fullwidth_ligatures", "\uff26\uff35\uff2c\uff2c \uff57\uff49\uff44\uff54\uff48 \uff11\uff12\uff13\uff01 \ufb01ne \ufb02ow \ufb03 \u01c5emal \uff76\uff9e"),
    ("whitespace_only", "   "),
    ("whitespace_mixed", "\t a\u3000b\u00a0c\u2028d\u200be\u2003f \r\n"),
    ("endoftext_only", "<|endoftext|>"),
    ("endoftext_inside", "a photo<|endoftext|>of a cat"),
    ("both_specials", "<|startoftext|> x <|endoftext|> y"),
    ("special_upper", "<|ENDOFTEXT|> upper <|StartOfText|>"),
    ("special_partial", "<|endoftext <|end|> |>"),
    ("exclamations", "wow! amazing!! great!!! ok?!"),
    ("controls_ansi", "\x00control\x07chars\x1b[31mred\x1b[0m \x7f del"),
    ("c1_controls", "\x93quoted\x94 \x85 \x80100"),
    ("unicode_numbers", "\u00bd \u00b2 \u216b \u0663\u0664 \u2460 \uff15"),
    ("long_repeat", "a photo of a cat " * 30),
    ("long_tags", ", ".join("tag%d" % i for i in range(60))),
    ("long_word", "x" * 400),
    ("exactly_75_tokens", " ".join(["cat"] * 75)),
    ("exactly_76_tokens", " ".join(["cat"] * 76)),
    ("mojibake", "caf\u00c3\u00a9 cr\u00c3\u00a8me \u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d"),
    ("invalid_latin1_bytes", b"caf\xe9 cr\xe8me br\xfbl\xe9e"),
    ("invalid_mixed_bytes", b"\xff\xfe bad \xc0\xaf seq \xe2\x82 trunc \xed\xa0\x80 surrogate \xf4\x90\x80\x80 big"),
    ("invalid_truncated_end", b"emoji \xf0\x9f\x98"),
]


def load_tok(path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(path)
    if not hasattr(tok, "bpe") or not hasattr(tok, "fix_text"):
        sys.exit("need the slow CLIPTokenizer (transformers < 5); see this script's header")
    return tok


def set_mode(tok, mode, fix_encoding=True):
    from transformers.models.bert.tokenization_bert import BasicTokenizer

    if mode == "noftfy":
        tok.fix_text = None
        tok.nlp = BasicTokenizer(strip_accents=False, do_split_on_punc=False)
    else:
        import ftfy

        tok.fix_text = ftfy.fix_text if fix_encoding else (lambda s: ftfy.fix_text(s, fix_encoding=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(DATA, "cases.json"))
    args = ap.parse_args()

    import transformers

    try:
        import ftfy

        ftfy_version = ftfy.__version__
    except ImportError:
        ftfy_version = None
        print("ftfy not installed: writing the noftfy path only", file=sys.stderr)
    modes = ["noftfy"] + (["ftfy"] if ftfy_version else [])

    tmp = tempfile.mkdtemp(prefix="sd_tok_")
    try:
        sd2 = os.path.join(tmp, "sd2")
        os.makedirs(sd2)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(DATA, "sd15", f), sd2)
        for f in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(DATA, "sd2", f), sd2)
        toks = {"sd15": load_tok(os.path.join(DATA, "sd15")), "sd2": load_tok(sd2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cases = []
    for name, p in PROMPTS:
        raw = p if isinstance(p, bytes) else p.encode("utf-8")
        text = raw.decode("utf-8", errors="replace")
        case = {"name": name, "bytes_hex": raw.hex()}
        if not isinstance(p, bytes):
            case["prompt"] = p
        case["ids"], case["n_valid"], case["n_truncated"], case["unpadded_sd15"] = {}, {}, {}, {}
        for mode in modes:
            for pad, tok in toks.items():
                set_mode(tok, mode)
                enc = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True)
                full = tok.convert_tokens_to_ids(tok.tokenize(text))
                key = "%s.%s" % (pad, mode)
                case["ids"][key] = enc["input_ids"]
                case["n_valid"][key] = sum(enc["attention_mask"])
                case["n_truncated"][key] = max(0, len(full) - (MAX_LEN - 2))
                if pad == "sd15":
                    case["unpadded_sd15"][mode] = full
                    if mode == "noftfy":
                        case["tokens_sd15_noftfy"] = tok.tokenize(text)
            if mode == "ftfy":
                tok = toks["sd15"]
                set_mode(tok, "ftfy", fix_encoding=False)
                without = tok.convert_tokens_to_ids(tok.tokenize(text))
                case["ftfy_needs_fix_encoding"] = without != case["unpadded_sd15"]["ftfy"]
        cases.append(case)

    meta = {
        "generator": "tools/gen_tokenizer_cases.py",
        "transformers": transformers.__version__,
        "ftfy": ftfy_version,
        "python": sys.version.split()[0],
        "unicodedata": unicodedata.unidata_version,
        "max_length": MAX_LEN,
        "keys": ["%s.%s" % (pad, m) for m in modes for pad in ("sd15", "sd2")],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k, v in meta.items():
            f.write(" %s: %s,\n" % (json.dumps(k), json.dumps(v)))
        f.write(' "cases": [\n')
        for i, c in enumerate(cases):
            f.write("  " + json.dumps(c, ensure_ascii=True) + ("," if i + 1 < len(cases) else "") + "\n")
        f.write(" ]\n}\n")
    n_enc = sum(1 for c in cases if c.get("ftfy_needs_fix_encoding"))
    print("wrote %s: %d cases, modes %s, %d need ftfy fix_encoding" % (args.out, len(cases), modes, n_enc))


if __name__ == "__main__":
    main()
