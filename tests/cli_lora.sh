#!/usr/bin/env bash
# `streamdiff txt2img --lora`: a 4-step LCM generation with the tiny "fine-tune"
# (tests/data/models/tiny-sd15) plus an "LCM-LoRA" (diffusers/PEFT format) and a
# "style LoRA" (kohya format) at different scales writes a PNG whose parameters
# name both; the LoRAs change the image, scale 0 gives the base image back;
# bad --lora values are usage errors (exit 2), unusable files runtime errors (exit 1);
# `streamdiff stream --lora` writes a frame.
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
MODEL="$DATA/models/tiny-sd15"
LCM="$DATA/lora/lcm_peft.safetensors"
STYLE="$DATA/lora/style_kohya.safetensors"
if [ -z "$DATA" ] || [ ! -f "$MODEL/model_index.json" ] || [ ! -f "$LCM" ] || [ ! -f "$STYLE" ]; then
    echo "cli_lora: FAIL: the committed tiny model or tests/data/lora is absent (ctest sets SD_TEST_DATA to tests/data)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_lora: FAIL: $*"; exit 1; }

COMMON=(-m "$MODEL" -p "a watercolor fox" -W 32 -H 32 --sampler lcm --steps 4 --cfg-scale 1 -s 7 --threads 2)

is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }

# 1. LCM-LoRA + style LoRA
"$BIN" txt2img "${COMMON[@]}" --lora "$LCM:1.0" --lora "$STYLE:0.8" -o "$tmp/both.png" -v >"$tmp/out" 2>"$tmp/err" ||
    fail "txt2img with two LoRAs failed: $(cat "$tmp/err")"
[ -s "$tmp/both.png" ] && is_png "$tmp/both.png" || fail "no PNG written"
grep -q "2 LoRA(s) fused" "$tmp/err" || fail "verbose output does not report the fused LoRAs: $(cat "$tmp/err")"
grep -aq "LoRA: lcm_peft.safetensors:1, style_kohya.safetensors:0.8" "$tmp/both.png" ||
    fail "the PNG parameters do not name the LoRAs"

# 2. the LoRAs change the image; scale 0 (and a path without scale at 0 via =) equals the base image
"$BIN" txt2img "${COMMON[@]}" -o "$tmp/base.png" >/dev/null 2>&1 || fail "base txt2img failed"
"$BIN" txt2img "${COMMON[@]}" --lora "$STYLE:0" --lora="$LCM:0" -o "$tmp/zero.png" >/dev/null 2>&1 ||
    fail "txt2img with scale-0 LoRAs failed"
"$BIN" txt2img "${COMMON[@]}" --lora "$STYLE" -o "$tmp/style.png" >/dev/null 2>&1 || fail "txt2img --lora PATH failed"
# the pixel data: everything from the first IDAT chunk on (the text chunk comes before it and differs)
pixels() { local off; off=$(grep -abo IDAT "$1" | head -1 | cut -d: -f1); [ -n "$off" ] && tail -c +"$off" "$1"; }
cmp -s <(pixels "$tmp/base.png") <(pixels "$tmp/both.png") && fail "the LoRAs did not change the image"
cmp -s <(pixels "$tmp/base.png") <(pixels "$tmp/style.png") && fail "the style LoRA did not change the image"
cmp -s <(pixels "$tmp/base.png") <(pixels "$tmp/zero.png") || fail "scale-0 LoRAs changed the image"

# 3. errors
"$BIN" txt2img "${COMMON[@]}" --lora "$STYLE:0.5x" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 2 ] || fail "--lora PATH:0.5x: exit $rc, want 2"
"$BIN" txt2img "${COMMON[@]}" --lora ":0.5" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 2 ] || fail "--lora :0.5: exit $rc, want 2"
"$BIN" txt2img "${COMMON[@]}" --lora "$tmp/missing.safetensors" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 1 ] || fail "missing LoRA: exit $rc, want 1"
grep -q "missing.safetensors" "$tmp/err" || fail "the error does not name the missing file: $(cat "$tmp/err")"
printf 'not a safetensors file' >"$tmp/bad.safetensors"
"$BIN" txt2img "${COMMON[@]}" --lora "$tmp/bad.safetensors" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 1 ] || fail "corrupt LoRA: exit $rc, want 1"
[ -e "$tmp/x.png" ] && fail "an image was written despite the LoRA error"
"$BIN" txt2img --help >"$tmp/help" 2>&1 || fail "--help failed"
grep -q -- "--lora PATH\[:SCALE\]" "$tmp/help" || fail "--help does not document --lora"
# 4. streamdiff stream --lora (txt2img clip to a folder of PNGs)
features=$("$BIN" --version 2>&1 || true)
skipped=0
if [[ "$features" == *"video (FFmpeg) yes"* ]]; then
    mkdir -p "$tmp/frames"
    "$BIN" stream -m "$MODEL" --txt2img --frames 1 -W 16 -H 16 -p "a fox" --threads 2 -o "$tmp/frames/" \
        --lora "$LCM" --lora "$STYLE:0.5" >/dev/null 2>"$tmp/err" || fail "stream --lora failed: $(cat "$tmp/err")"
    is_png "$tmp/frames/frame_000000.png" || fail "stream --lora wrote no frame"
    "$BIN" stream -m "$MODEL" --txt2img --frames 1 -W 16 -H 16 -o "$tmp/frames/" --lora "$tmp/missing.safetensors" \
        >/dev/null 2>"$tmp/err"
    rc=$?; [ $rc -eq 1 ] || fail "stream with a missing LoRA: exit $rc, want 1"
else
    echo "cli_lora: SKIP (after the rest passed): built without FFmpeg, the 'streamdiff stream --lora' part did not run"
    skipped=1
fi
[ $skipped -eq 0 ] || exit 77
echo "cli_lora: OK"
