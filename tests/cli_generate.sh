#!/usr/bin/env bash
# `streamdiff txt2img` / `streamdiff img2img` end to end on the tiny test model
# (tests/data/models/tiny-sd15, 32x32): PNG output with the A1111 "parameters"
# chunk, seed determinism, img2img from a txt2img output, --batch-count naming,
# and clear usage errors (exit 2) / runtime errors (exit 1) for bad input.
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
MODEL="$DATA/models/tiny-sd15"
if [ -z "$DATA" ] || [ ! -f "$MODEL/model_index.json" ]; then
    echo "cli_generate: FAIL: the committed tiny test model '$MODEL' is absent (ctest sets SD_TEST_DATA to tests/data)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_generate: FAIL: $*"; exit 1; }

COMMON=(-m "$MODEL" -W 32 -H 32 --steps 2 --threads 2)

# PNG check with only the Python standard library: signature, IHDR size, and the
# "parameters" text chunk (tEXt / zTXt / iTXt) printed to stdout.
png_params() {
    python3 - "$1" "$2" <<'EOF'
import struct, sys, zlib
path, size = sys.argv[1], int(sys.argv[2])
b = open(path, 'rb').read()
if b[:8] != b'\x89PNG\r\n\x1a\n':
    sys.exit('%s: not a PNG (bad signature)' % path)
pos, params, w = 8, None, None
while pos + 8 <= len(b):
    n, typ = struct.unpack('>I4s', b[pos:pos + 8])
    body = b[pos + 8:pos + 8 + n]
    if zlib.crc32(typ + body) != struct.unpack('>I', b[pos + 8 + n:pos + 12 + n])[0]:
        sys.exit('%s: bad CRC in chunk %r' % (path, typ))
    if typ == b'IHDR':
        w, h = struct.unpack('>II', body[:8])
    elif typ in (b'tEXt', b'zTXt', b'iTXt'):
        key, _, rest = body.partition(b'\0')
        if key == b'parameters':
            if typ == b'tEXt':
                params = rest.decode('latin-1')
            elif typ == b'zTXt':
                params = zlib.decompress(rest[1:]).decode('latin-1')
            else:
                cflag, rest = rest[0], rest[2:]
                rest = rest.split(b'\0', 2)[2]
                params = (zlib.decompress(rest) if cflag else rest).decode('utf-8')
    elif typ == b'IEND':
        break
    pos += 12 + n
if w != size or h != size:
    sys.exit('%s: IHDR says %sx%s, expected %dx%d' % (path, w, h, size, size))
if params is None:
    sys.exit('%s: no "parameters" text chunk' % path)
print(params)
EOF
}
have_py=0
command -v python3 >/dev/null 2>&1 && have_py=1

# ---------------------------------------------------------------- help
"$BIN" txt2img --help >"$tmp/help" || fail "txt2img --help should exit 0"
for w in --model --prompt --negative-prompt --width --height --steps --cfg-scale --sampler --scheduler --seed \
    --batch-count --batch-size --output --taesd --threads --clip-skip --rng --backend --eta --keep-f16 --verbose \
    karras "huggingface" "default:"; do
    grep -q -- "$w" "$tmp/help" || fail "txt2img --help does not mention '$w'"
done
"$BIN" img2img --help >"$tmp/help2" || fail "img2img --help should exit 0"
grep -q -- "--strength" "$tmp/help2" || fail "img2img --help does not mention --strength"
grep -q -- "--init-img" "$tmp/help2" || fail "img2img --help does not mention --init-img"
"$BIN" --help | grep -q txt2img || fail "streamdiff --help does not list txt2img"

# ---------------------------------------------------------------- txt2img
"$BIN" txt2img "${COMMON[@]}" -p "a red cube" -s 42 -o "$tmp/a.png" >"$tmp/out" 2>"$tmp/err" ||
    fail "txt2img failed: $(cat "$tmp/err")"
[ -s "$tmp/a.png" ] || fail "txt2img wrote no $tmp/a.png"
grep -q "step 2/2" "$tmp/err" || fail "no progress line 'step 2/2' on stderr: $(cat "$tmp/err")"
grep -q "s/it" "$tmp/err" || fail "progress line has no s/it: $(cat "$tmp/err")"
grep -q "a.png" "$tmp/out" || fail "txt2img does not report the file it wrote: $(cat "$tmp/out")"
if [ $have_py = 1 ]; then
    params=$(png_params "$tmp/a.png" 32) || fail "a.png: $params"
    echo "$params" | grep -q "a red cube" || fail "parameters chunk lacks the prompt: $params"
    echo "$params" | grep -q "Seed: 42" || fail "parameters chunk lacks 'Seed: 42': $params"
    echo "$params" | grep -q "Steps: 2" || fail "parameters chunk lacks 'Steps: 2': $params"
    echo "$params" | grep -q "Size: 32x32" || fail "parameters chunk lacks 'Size: 32x32': $params"
else
    [ "$(head -c 8 "$tmp/a.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "a.png is not a PNG"
    grep -a -q "Seed: 42" "$tmp/a.png" || fail "a.png carries no 'Seed: 42'"
    echo "cli_generate: note: python3 absent, PNG chunks checked only by grep"
fi

# same seed -> identical bytes; another seed -> different bytes
"$BIN" txt2img "${COMMON[@]}" -p "a red cube" -s 42 -o "$tmp/b.png" >/dev/null 2>&1 || fail "second txt2img failed"
cmp -s "$tmp/a.png" "$tmp/b.png" || fail "the same seed gave different files"
"$BIN" txt2img "${COMMON[@]}" -p "a red cube" -s 43 -o "$tmp/c.png" >/dev/null 2>&1 || fail "txt2img seed 43 failed"
cmp -s "$tmp/a.png" "$tmp/c.png" && fail "seeds 42 and 43 gave identical files"

# another sampler + Karras schedule, the fast RNG, a negative prompt with CFG, --name=value syntax
"$BIN" txt2img "${COMMON[@]}" -p "a red cube" -n "blurry" --cfg-scale 3 --sampler=dpm++2m --scheduler karras \
    --rng fast -o "$tmp/d.png" >/dev/null 2>"$tmp/err" || fail "txt2img dpm++2m karras failed: $(cat "$tmp/err")"
[ -s "$tmp/d.png" ] || fail "dpm++2m karras wrote no file"

# --batch-count 2: output.png and output_1.png with seeds 7 and 8
"$BIN" txt2img "${COMMON[@]}" -p "x" -s 7 -b 2 -o "$tmp/batch.png" >"$tmp/out" 2>/dev/null || fail "batch-count 2 failed"
[ -s "$tmp/batch.png" ] && [ -s "$tmp/batch_1.png" ] || fail "batch-count 2 did not write batch.png and batch_1.png: $(ls "$tmp")"
[ -e "$tmp/batch_2.png" ] && fail "batch-count 2 wrote a third file"
cmp -s "$tmp/batch.png" "$tmp/batch_1.png" && fail "the two images of a batch are identical"
if [ $have_py = 1 ]; then
    png_params "$tmp/batch_1.png" 32 | grep -q "Seed: 8" || fail "second image of the batch should have seed 8"
fi
# a %d pattern
"$BIN" txt2img "${COMMON[@]}" -p "x" -s 7 -b 2 -o "$tmp/pat_%02d.png" >/dev/null 2>&1 || fail "-o pattern failed"
[ -s "$tmp/pat_00.png" ] && [ -s "$tmp/pat_01.png" ] || fail "-o pat_%02d.png did not write pat_00.png, pat_01.png"
cmp -s "$tmp/batch.png" "$tmp/pat_00.png" || fail "seed 7 gave different files in two runs"

# ---------------------------------------------------------------- img2img
"$BIN" img2img "${COMMON[@]}" -p "a blue cube" -i "$tmp/a.png" --strength 0.5 -s 1 -o "$tmp/i.png" >/dev/null \
    2>"$tmp/err" || fail "img2img failed: $(cat "$tmp/err")"
[ -s "$tmp/i.png" ] || fail "img2img wrote no file"
if [ $have_py = 1 ]; then
    params=$(png_params "$tmp/i.png" 32) || fail "i.png: $params"
    echo "$params" | grep -q "a blue cube" || fail "img2img parameters chunk lacks the prompt: $params"
fi
# without -W/-H the init image's size is used
"$BIN" img2img -m "$MODEL" --steps 2 --threads 2 -p "y" -i "$tmp/a.png" -o "$tmp/j.png" >/dev/null 2>"$tmp/err" ||
    fail "img2img at the init image's size failed: $(cat "$tmp/err")"
[ $have_py = 1 ] && { png_params "$tmp/j.png" 32 >/dev/null || fail "img2img output is not 32x32"; }

# ---------------------------------------------------------------- errors
# expect_err CODE PATTERN -- command...: exit status CODE and PATTERN in stderr
expect_err() {
    local code="$1" pat="$2"
    shift 3
    "$@" >"$tmp/eo" 2>"$tmp/ee"
    local rc=$?
    [ $rc -eq "$code" ] || fail "'$*' exited $rc, expected $code; stderr: $(cat "$tmp/ee")"
    grep -q -i -- "$pat" "$tmp/ee" || fail "'$*': unclear error (want /$pat/): $(cat "$tmp/ee")"
}
expect_err 2 "no model given" -- "$BIN" txt2img -p x -o "$tmp/e.png"
expect_err 1 "cannot load the model" -- "$BIN" txt2img -m "$tmp/no-such-model" -p x -o "$tmp/e.png"
expect_err 2 "multiple of 8" -- "$BIN" txt2img "${COMMON[@]}" -W 33 -o "$tmp/e.png"
expect_err 2 "use 32 or 40" -- "$BIN" txt2img "${COMMON[@]}" -H 33 -o "$tmp/e.png"
expect_err 2 "steps" -- "$BIN" txt2img "${COMMON[@]}" --steps 0 -o "$tmp/e.png"
expect_err 2 "steps" -- "$BIN" txt2img "${COMMON[@]}" --steps 12abc -o "$tmp/e.png"
expect_err 2 "width" -- "$BIN" txt2img "${COMMON[@]}" -W 32x -o "$tmp/e.png"
expect_err 2 "cfg-scale" -- "$BIN" txt2img "${COMMON[@]}" --cfg-scale nan -o "$tmp/e.png"
expect_err 2 "seed" -- "$BIN" txt2img "${COMMON[@]}" -s -5 -o "$tmp/e.png"
expect_err 2 "strength" -- "$BIN" img2img "${COMMON[@]}" -i "$tmp/a.png" --strength 1.5 -o "$tmp/e.png"
expect_err 2 "strength" -- "$BIN" img2img "${COMMON[@]}" -i "$tmp/a.png" --strength 0 -o "$tmp/e.png"
expect_err 2 "img2img option" -- "$BIN" txt2img "${COMMON[@]}" --strength 0.5 -o "$tmp/e.png"
expect_err 2 "unknown --sampler 'bogus'" -- "$BIN" txt2img "${COMMON[@]}" --sampler bogus -o "$tmp/e.png"
expect_err 2 "karras" -- "$BIN" txt2img "${COMMON[@]}" --scheduler exponential -o "$tmp/e.png"
expect_err 2 "works with --sampler dpm++2m or euler" -- "$BIN" txt2img "${COMMON[@]}" --sampler lcm --scheduler karras \
    -o "$tmp/e.png"
expect_err 2 "unknown option '--bogus'" -- "$BIN" txt2img "${COMMON[@]}" --bogus -o "$tmp/e.png"
expect_err 2 "unexpected argument" -- "$BIN" txt2img "${COMMON[@]}" stray -o "$tmp/e.png"
expect_err 2 "needs a value" -- "$BIN" txt2img "${COMMON[@]}" -o
expect_err 2 "only PNG" -- "$BIN" txt2img "${COMMON[@]}" -o "$tmp/e.jpg"
expect_err 2 "%d" -- "$BIN" txt2img "${COMMON[@]}" -o "$tmp/e_%s.png"
expect_err 1 "does not exist" -- "$BIN" txt2img "${COMMON[@]}" -o "$tmp/nodir/e.png"
expect_err 2 "no init image" -- "$BIN" img2img "${COMMON[@]}" -o "$tmp/e.png"
expect_err 1 "cannot read the init image" -- "$BIN" img2img "${COMMON[@]}" -i "$tmp/missing.png" -o "$tmp/e.png"
printf 'this is not an image at all\n' >"$tmp/garbage.png"
expect_err 1 "cannot read the init image" -- "$BIN" img2img "${COMMON[@]}" -i "$tmp/garbage.png" -o "$tmp/e.png"
[ -e "$tmp/e.png" ] && fail "a failed run left an output file"

echo "cli_generate: ok"
