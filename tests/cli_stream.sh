#!/usr/bin/env bash
# `streamdiff stream` end to end on the tiny model: txt2img clip -> video file,
# video -> img2img -> video with the same number of frames (checked with the
# built-in decoder, `stream --probe`), folder in/out, prompt file, errors, and
# a tiny `bench stream` run writing JSON.
set -euo pipefail
BIN="$1"
M="${SD_TEST_DATA:-tests/data}/models"
if [ ! -d "$M/tiny-sd15" ] || [ ! -d "$M/taesd-tiny" ]; then
  echo "FAIL: the committed tiny models are not under $M"; exit 1
fi
features=$("$BIN" --version 2>&1 || true)
if [[ "$features" == *"video (FFmpeg) no"* ]]; then
  echo "SKIP: this streamdiff was built without FFmpeg (no video)"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_stream: $*"; exit 1; }
TINY=(-m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 64 -H 64 --stats-every 0)

"$BIN" stream --help >"$tmp/help"
grep -q -- "--prompt-file" "$tmp/help" || fail "--help lacks --prompt-file"
grep -q "examples:" "$tmp/help" || fail "--help lacks examples"

# 1. a 12-frame input clip (txt2img), then img2img on it: 12 frames out
"$BIN" stream "${TINY[@]}" --txt2img --frames 12 -p "a red apple" -o "$tmp/in.mkv" 2>"$tmp/log" || { cat "$tmp/log"; fail "txt2img clip"; }
probe=$("$BIN" stream --probe "$tmp/in.mkv")
echo "$probe" | grep -q "^frames 12 size 64x64" || fail "input clip: $probe"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/out.mp4" -p "a green pear" 2>"$tmp/log" || { cat "$tmp/log"; fail "img2img"; }
grep -q "wrote 12 frames" "$tmp/log" || { cat "$tmp/log"; fail "img2img did not report 12 frames"; }
probe=$("$BIN" stream --probe "$tmp/out.mp4")
echo "$probe" | grep -q "^frames 12 size 64x64" || fail "output video: $probe"

# 2. folder in (frames of another size: center crop + resize), folder out, a prompt
#    file, the similarity filter and three denoising steps
"$BIN" stream -m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 96 -H 80 --stats-every 0 --txt2img --frames 7 -o "$tmp/frames/" 2>"$tmp/log" || { cat "$tmp/log"; fail "txt2img to folder"; }
[ "$(ls "$tmp/frames" | grep -c '^frame_[0-9]*\.png$')" -eq 7 ] || fail "expected 7 PNGs in $tmp/frames"
echo "a watercolor" > "$tmp/prompt.txt"
"$BIN" stream "${TINY[@]}" -i "$tmp/frames" -o "$tmp/out_frames/" --prompt-file "$tmp/prompt.txt" \
  --similarity 0.98 --max-skip 2 --t-index 10,25,40 --cfg-type initialize -n "blurry" 2>"$tmp/log" || { cat "$tmp/log"; fail "folder run"; }
[ "$(ls "$tmp/out_frames" | wc -l)" -eq 7 ] || fail "expected 7 output PNGs, got $(ls "$tmp/out_frames" | wc -l)"
probe=$("$BIN" stream --probe "$tmp/out_frames")
echo "$probe" | grep -q "^frames 7 size 64x64" || fail "output frames: $probe"

# 3. errors: clear messages, exit 1 (runtime) / 2 (usage)
set +e
"$BIN" stream "${TINY[@]}" -i "$tmp/nosuch.mp4" -o "$tmp/x.mp4" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "nosuch.mp4: no such file" "$tmp/err" || fail "missing input: rc $rc, $(cat "$tmp/err")"
echo "not a video" > "$tmp/bad.mp4"
"$BIN" stream "${TINY[@]}" -i "$tmp/bad.mp4" -o "$tmp/x.mp4" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad.mp4: not a video" "$tmp/err" || fail "broken input: rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.unknownext" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "no video container" "$tmp/err" || fail "bad output extension: rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.mp4" --t-index 45,32 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "must ascend" "$tmp/err" || fail "t-index order: rc $rc, $(cat "$tmp/err")"
# the library's one rule (sd_stream_params_validate), named by the option; strict numbers (whole string)
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.mp4" --t-index 32,50 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--t-index: t_index_list\[1\] = 50 is outside 0..49" "$tmp/err" || fail "t-index range: rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.mp4" --t-index " 32" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--t-index needs" "$tmp/err" || fail "t-index blank: rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.mp4" --steps 10x 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--steps needs a whole number, got '10x'" "$tmp/err" || fail "steps: rc $rc, $(cat "$tmp/err")"
"$BIN" check --threads "" "$M" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--threads" "$tmp/err" || fail "check --threads '': rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -i "$tmp/in.mkv" -o "$tmp/x.mp4" --cfg-type maybe 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "none, full, self or initialize" "$tmp/err" || fail "cfg-type: rc $rc, $(cat "$tmp/err")"
"$BIN" stream -m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 72 -H 64 -i "$tmp/in.mkv" -o "$tmp/x.mp4" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "multiples of 16" "$tmp/err" || fail "size: rc $rc, $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" -o "$tmp/x.mp4" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "no input given" "$tmp/err" || fail "no input: rc $rc"
"$BIN" stream "${TINY[@]}" --txt2img -o "$tmp/x.mp4" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--frames" "$tmp/err" || fail "txt2img without --frames: rc $rc"
"$BIN" stream --bogus 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "unknown option '--bogus'" "$tmp/err" || fail "unknown option: rc $rc"
set -e

# 3b. precision: the default is auto (bf16 where the CPU's bf16 kernels outpace its fp32 ones: `--version` says), fp32 when asked
auto=$("$BIN" --version | sed -n 's/.*precision auto = \([a-z0-9]*\).*/\1/p')
[ -n "$auto" ] || fail "--version does not say what precision auto is: $("$BIN" --version)"
for p in default auto fp32; do
  extra=(); [ $p = default ] || extra=(--precision $p)
  "$BIN" stream "${TINY[@]}" --txt2img --frames 1 -o "$tmp/p_$p/" "${extra[@]}" 2>"$tmp/log" || { cat "$tmp/log"; fail "precision $p"; }
  want=$auto; [ $p = fp32 ] && want=fp32
  grep -q "precision $want on" "$tmp/log" || { cat "$tmp/log"; fail "precision $p: want $want"; }
done

# 4. bench stream: a tiny run with JSON
"$BIN" bench stream -m "$M/tiny-sd15" --taesd "$M/taesd-tiny" --size 32,64 --frames 3 --warmup 1 -t 2 \
  --precision fp32,auto --json "$tmp/b.json" >"$tmp/bench.out" 2>&1 || { cat "$tmp/bench.out"; fail "bench stream"; }
grep -q "64x64 *fp32 *img2img-async" "$tmp/bench.out" || { cat "$tmp/bench.out"; fail "bench table"; }
grep -q "64x64 *$auto *img2img-async" "$tmp/bench.out" || { cat "$tmp/bench.out"; fail "bench table at auto ($auto)"; }
grep -q '"mode":[[:space:]]*"txt2img"' "$tmp/b.json" || fail "bench JSON lacks txt2img"
grep -q '"latency_ms_p50"' "$tmp/b.json" || fail "bench JSON lacks latency"
[ "$(grep -c '"fps"' "$tmp/b.json")" -eq 12 ] || fail "bench JSON should have 12 results (2 precisions x 2 sizes x 3 modes)"
[ "$(grep -c '"precision":[[:space:]]*"fp32"' "$tmp/b.json")" -ge 6 ] || fail "bench JSON: fp32 results"
[ "$(grep -c "\"precision\":[[:space:]]*\"$auto\"" "$tmp/b.json")" -ge 6 ] || fail "bench JSON: $auto results"
set +e
"$BIN" bench stream -m "$M/tiny-sd15" --precision fp8 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "fp32, bf16, int8, auto" "$tmp/err" || fail "bench stream --precision fp8: rc $rc, $(cat "$tmp/err")"
echo "cli_stream: ok"
