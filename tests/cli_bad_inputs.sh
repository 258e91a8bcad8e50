#!/usr/bin/env bash
# CLI-level bad inputs (tests/test_bad_inputs.c covers the API): each case
# expects a specific exit status and a message that names the problem, never
# a crash. Files that are damaged here are copies in a temporary folder.
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
MODEL="$DATA/models/tiny-sd15"
if [ -z "$DATA" ] || [ ! -f "$MODEL/model_index.json" ]; then
    echo "cli_bad_inputs: FAIL: the committed tiny test model '$MODEL' is absent (ctest sets SD_TEST_DATA to tests/data)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_bad_inputs: FAIL: $*"; exit 1; }
COMMON=(-W 32 -H 32 --steps 2 --threads 2 -p "a cat")

# expect CODE PATTERN -- command...: exit status CODE (not a signal) and PATTERN in stderr
expect() {
    local code="$1" pat="$2"
    shift 3
    timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    [ $rc -eq "$code" ] || fail "'$*' exited $rc, expected $code; stderr: $(cat "$tmp/err")"
    grep -q -i -F -- "$pat" "$tmp/err" || fail "'$*': unclear message (want '$pat'): $(cat "$tmp/err")"
    echo "  ok ($rc): $(grep -i -F -m1 -- "$pat" "$tmp/err" | cut -c1-160)"
}

# a PyTorch pickle checkpoint is refused by name (never unpickled)
printf 'PK\003\004\024\000\000\000\000\000archive/data.pkl' >"$tmp/model.ckpt"
expect 1 "pickle" -- "$BIN" txt2img -m "$tmp/model.ckpt" "${COMMON[@]}" -o "$tmp/a.png"
# a truncated single-file checkpoint
head -c 100000 "$DATA/models/tiny-sd15-single.safetensors" >"$tmp/cut.safetensors"
expect 1 "[offsets-out-of-data]" -- "$BIN" txt2img -m "$tmp/cut.safetensors" "${COMMON[@]}" -o "$tmp/a.png"
# a model folder whose UNet weights were cut short
cp -r "$MODEL" "$tmp/m"
f="$tmp/m/unet/diffusion_pytorch_model.safetensors"
head -c $(( $(stat -c %s "$f") - 64 )) "$f" >"$f.cut" && mv "$f.cut" "$f"
expect 1 "[offsets-out-of-data]" -- "$BIN" txt2img -m "$tmp/m" "${COMMON[@]}" -o "$tmp/a.png"
# no text encoder
cp -r "$MODEL" "$tmp/m2" && rm -rf "$tmp/m2/text_encoder"
expect 1 "no text_encoder/ folder" -- "$BIN" txt2img -m "$tmp/m2" "${COMMON[@]}" -o "$tmp/a.png"
# a 108-byte PNG that declares a 2 GB text chunk (fuzzer finding): refused at once
expect 1 "chunk data is too large" -- "$BIN" img2img -m "$MODEL" "${COMMON[@]}" \
    -i "$DATA/regress/image/png-2gb-text-chunk" -o "$tmp/a.png"
# a working-memory limit: refused up front with the needed and available MiB
expect 1 "MiB of working memory but only 0.06 MiB are available (SD_MAX_ARENA_BYTES)" -- \
    env SD_MAX_ARENA_BYTES=64K "$BIN" txt2img -m "$MODEL" "${COMMON[@]}" -o "$tmp/a.png"
expect 1 "SD_MAX_ARENA_BYTES" -- env SD_MAX_ARENA_BYTES=lots "$BIN" txt2img -m "$MODEL" "${COMMON[@]}" -o "$tmp/a.png"
# a prompt far beyond 77 tokens: a warning, and the image is made
long=$(printf 'a very long prompt %.0s' $(seq 1 500))
expect 0 "tokens too long" -- "$BIN" txt2img -m "$MODEL" -W 32 -H 32 --steps 2 --threads 2 -p "$long" -o "$tmp/long.png"
[ -s "$tmp/long.png" ] || fail "the long-prompt run wrote no image"
# an empty prompt is fine
"$BIN" txt2img -m "$MODEL" -W 32 -H 32 --steps 2 --threads 2 -p "" -o "$tmp/empty.png" 2>"$tmp/err" ||
    fail "an empty prompt failed: $(cat "$tmp/err")"
[ -e "$tmp/a.png" ] && fail "a failed run left an output file"
echo "cli_bad_inputs: ok"
