#!/usr/bin/env bash
# `streamdiff txt2img / img2img --control`: a ControlNet (diffusers folder and single file) steers the tiny
# model; a control image of another size is resized and the CLI says so; --control-preprocess makes the control
# image (--control-save writes it; the thresholds matter; test_controlnet checks Canny against cv2.Canny); 'input' takes the
# img2img init image; two nets at once; scale 0 gives the plain image; the PNG parameters name the nets;
# bad values are usage errors (exit 2), unusable files and nets of another base model runtime errors (exit 1)
# naming the problem.
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
MODEL="$DATA/models/tiny-sd15"
CN="$DATA/models/controlnet-tiny-sd15"
CN1="$DATA/models/controlnet-tiny-sd15-single.safetensors"
CN2="$DATA/models/controlnet-tiny-sd2"
PHOTO="$DATA/preprocess/input.png"
EDGES="$DATA/preprocess/canny_100_200.png"
for f in "$MODEL/model_index.json" "$CN/config.json" "$CN1" "$CN2/config.json" "$PHOTO" "$EDGES"; do
    [ -n "$DATA" ] && [ -f "$f" ] || { echo "cli_controlnet: FAIL: committed test data missing: $f"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_controlnet: FAIL: $*"; exit 1; }
pixels() { local off; off=$(grep -abo IDAT "$1" | head -1 | cut -d: -f1); [ -n "$off" ] && tail -c +"$off" "$1"; }

# the control images are 60x44: generating at 48x40 resizes them
COMMON=(-m "$MODEL" -p "a house on a hill" -W 48 -H 40 --steps 2 --cfg-scale 1 -s 3 --threads 2)

# 1. plain, folder net, single-file net (same image), a canny control image made from the photo
"$BIN" txt2img "${COMMON[@]}" -o "$tmp/plain.png" >/dev/null 2>&1 || fail "plain txt2img failed"
"$BIN" txt2img "${COMMON[@]}" --control "$CN:$EDGES:0.9" -o "$tmp/folder.png" >/dev/null 2>"$tmp/err" ||
    fail "txt2img --control (folder) failed: $(cat "$tmp/err")"
grep -q "control image '$EDGES' is 60x44; resized to 48x40" "$tmp/err" ||
    fail "the resize of the control image is not reported: $(cat "$tmp/err")"
"$BIN" txt2img "${COMMON[@]}" --control "$CN1:$EDGES:0.9" -o "$tmp/single.png" >/dev/null 2>&1 ||
    fail "txt2img --control (single file) failed"
cmp -s <(pixels "$tmp/plain.png") <(pixels "$tmp/folder.png") && fail "the ControlNet did not change the image"
cmp -s <(pixels "$tmp/folder.png") <(pixels "$tmp/single.png") || fail "single-file and folder ControlNets differ"
grep -aq 'ControlNet 0: "Model: controlnet-tiny-sd15, Weight: 0.9, Guidance Start: 0, Guidance End: 1"' \
    "$tmp/folder.png" || fail "the PNG parameters do not name the ControlNet"
"$BIN" txt2img "${COMMON[@]}" --control "$CN:$EDGES:0" -o "$tmp/zero.png" >/dev/null 2>&1 || fail "scale 0 failed"
cmp -s <(pixels "$tmp/plain.png") <(pixels "$tmp/zero.png") || fail "scale 0 changed the image"

# 2. --control-preprocess canny on the (resized) photo, written by --control-save; other thresholds, other edges
"$BIN" txt2img "${COMMON[@]}" -W 56 -H 40 --control "$CN:$PHOTO" --control-preprocess canny \
    --control-save "$tmp/ctl.png" -o "$tmp/canny.png" >/dev/null 2>&1 || fail "--control-preprocess canny failed"
[ -s "$tmp/ctl.png" ] || fail "--control-save wrote nothing"
"$BIN" txt2img -m "$MODEL" -p x -W 56 -H 40 --steps 1 --cfg-scale 1 --threads 2 --control "$CN:$PHOTO" \
    --control-preprocess canny --canny-low 300 --canny-high 600 --control-save "$tmp/hi.png" -o "$tmp/x.png" \
    >/dev/null 2>&1 || fail "--canny-low/--canny-high failed"
cmp -s "$tmp/ctl.png" "$tmp/hi.png" && fail "the Canny thresholds changed nothing"
[ -f "$tmp/x.png" ] && rm -f "$tmp/x.png"

# 3. img2img with 'input' (the init image) and a second net: two control images saved
"$BIN" img2img -m "$MODEL" -i "$PHOTO" -p "a house" -W 48 -H 40 --steps 2 --cfg-scale 1 --strength 0.9 --threads 2 \
    --control "$CN:input:0.7:0:0.5" --control "$CN1:$EDGES" --control-preprocess softedge --control-preprocess none \
    --control-save "$tmp/c_%d.png" -o "$tmp/i2i.png" >/dev/null 2>"$tmp/err" || fail "img2img --control failed: $(cat "$tmp/err")"
[ -s "$tmp/c_0.png" ] && [ -s "$tmp/c_1.png" ] || fail "img2img: the two control images were not saved"
grep -q "control image 'input'" "$tmp/err" && fail "the init image must not be reported as resized"

# 4. usage errors (exit 2)
usage() { "$BIN" txt2img "${COMMON[@]}" "$@" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"; local rc=$?
          [ $rc -eq 2 ] || fail "$*: exit $rc, want 2 ($(cat "$tmp/err"))"; [ ! -e "$tmp/x.png" ] || fail "$*: wrote an image"; }
usage --control "$CN"
usage --control "$CN:$EDGES:abc"
usage --control "$CN:$EDGES:11"
usage --control "$CN:$EDGES:1:0.5"
usage --control "$CN:$EDGES:1:0.6:0.4"
usage --control "$CN:input"
grep -q "img2img" "$tmp/err" || fail "'input' in txt2img: the message does not say img2img"
usage --control "$CN:$EDGES" --control-preprocess depth
usage --control-preprocess canny
usage --control "$CN:$EDGES" --canny-low 2100
usage --control "$CN:$EDGES" --canny-low 300 --canny-high 200
usage --control "$CN:$EDGES" --scribble-threshold 0
usage --control "$CN:$EDGES" --control "$CN:$EDGES" --control-preprocess canny --control-preprocess none \
    --control-preprocess tile
"$BIN" txt2img --help >"$tmp/help" 2>&1 || fail "--help failed"
grep -q -- "--control NET:IMAGE\[:SCALE\[:START:END\]\]" "$tmp/help" || fail "--help does not document --control"

# 5. runtime errors (exit 1) naming the problem
runtime() { local want="$1"; shift; "$BIN" txt2img "${COMMON[@]}" "$@" -o "$tmp/x.png" >/dev/null 2>"$tmp/err"
            local rc=$?; [ $rc -eq 1 ] || fail "$*: exit $rc, want 1 ($(cat "$tmp/err"))"
            grep -q -- "$want" "$tmp/err" || fail "$*: the error lacks '$want': $(cat "$tmp/err")"
            [ ! -e "$tmp/x.png" ] || fail "$*: wrote an image"; }
runtime "another base model" --control "$CN2:$EDGES"
runtime "missing.png" --control "$CN:$tmp/missing.png"
printf 'not an image' >"$tmp/broken.png"
runtime "broken.png" --control "$CN:$tmp/broken.png"
runtime "no-such-net" --control "$tmp/no-such-net:$EDGES"
runtime "not a ControlNet" --control "$DATA/models/tiny-sd15-single.safetensors:$EDGES"

# 6. streamdiff stream --control: from each input frame (canny) or a fixed image; usage and runtime errors
features=$("$BIN" --version 2>&1 || true)
if [[ "$features" != *"video (FFmpeg) yes"* ]]; then
    echo "cli_controlnet: SKIP (after the rest passed): built without FFmpeg, the 'streamdiff stream --control' part did not run"
    exit 77
fi
mkdir -p "$tmp/frames" "$tmp/plain" "$tmp/ctl" "$tmp/fixed"
for k in 0 1 2; do cp "$PHOTO" "$tmp/frames/f$k.png"; done
SCOMMON=(-m "$MODEL" -i "$tmp/frames" -W 32 -H 32 -p "a house" --threads 2)
"$BIN" stream "${SCOMMON[@]}" -o "$tmp/plain/" >/dev/null 2>&1 || fail "stream without ControlNet failed"
"$BIN" stream "${SCOMMON[@]}" -o "$tmp/ctl/" --control "$CN:input:0.9" --control-preprocess canny >/dev/null \
    2>"$tmp/err" || fail "stream --control NET:input failed: $(cat "$tmp/err")"
"$BIN" stream "${SCOMMON[@]}" -o "$tmp/fixed/" --control "$CN1:$EDGES" >/dev/null 2>"$tmp/err" ||
    fail "stream --control NET:IMAGE failed: $(cat "$tmp/err")"
grep -q "resized to 32x32" "$tmp/err" || fail "stream: the resized control image is not reported"
cmp -s "$tmp/plain/frame_000002.png" "$tmp/ctl/frame_000002.png" && fail "stream: the ControlNet changed nothing"
"$BIN" stream "${SCOMMON[@]}" -o "$tmp/x/" --control "$CN:input" --control "$CN:input" --control-preprocess canny \
    --control-preprocess none >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 2 ] || fail "stream with two different --control-preprocess: exit $rc, want 2"
"$BIN" stream -m "$MODEL" --txt2img --frames 1 -W 32 -H 32 -o "$tmp/x/" --control "$CN:input" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 2 ] || fail "stream --txt2img --control NET:input: exit $rc, want 2"
"$BIN" stream "${SCOMMON[@]}" -o "$tmp/x/" --control "$CN2:input" >/dev/null 2>"$tmp/err"
rc=$?; [ $rc -eq 1 ] && grep -q "another base model" "$tmp/err" || fail "stream with an SD2 net on SD1.5: exit $rc ($(cat "$tmp/err"))"
echo "cli_controlnet: OK"
