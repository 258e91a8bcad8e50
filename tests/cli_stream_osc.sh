#!/usr/bin/env bash
# OSC control of `streamdiff stream` (--osc-port) with a local OSC sender (tests/osc_send.py):
# a prompt sent while the stream runs takes effect (the last frame equals a run with that
# prompt from the start), guidance/delta in one bundle, a LoRA strength, the similarity
# filter, ControlNet settings; unknown addresses, wrong argument types and malformed packets are ignored with a
# message and the stream runs to its end; bad --osc-port / --osc-bind values are usage errors.
set -uo pipefail
BIN="$1"
M="${SD_TEST_DATA:-tests/data}/models"
L="${SD_TEST_DATA:-tests/data}/lora"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ -d "$M/tiny-sd15" ] && [ -d "$M/taesd-tiny" ] || { echo "cli_stream_osc: FAIL: tiny models missing under $M"; exit 1; }
if [[ "$("$BIN" --version 2>&1)" == *"osc no"* ]]; then
    echo "SKIP: this streamdiff was built without OSC (liblo)"; exit 77
fi
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "cli_stream_osc: FAIL: $*"; exit 1; }
send() { python3 "$HERE/osc_send.py" "$@" || fail "osc_send.py $*"; }
TINY=(-m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 64 -H 64 --stats-every 0 --txt2img --precision fp32)
port=$((30000 + $$ % 20000))

# wait_listening LOG: until the stream says it listens (the model loads first)
wait_listening() {
    for _ in $(seq 600); do
        grep -q "osc: listening" "$1" && return 0
        sleep 0.1
    done
    cat "$1"
    fail "the stream never listened for OSC"
}

# 1. a live prompt change, plus everything else the stream must survive. One denoising step without
#    guidance: txt2img frame k depends only on the prompt and k, so a frame made after the change equals
#    frame k of a stream that had the new prompt from the start.
ONE=(--t-index 35 --cfg-type none)
"$BIN" stream "${TINY[@]}" "${ONE[@]}" --frames 1000000 -p "a cat" --lora "$L/style_kohya.safetensors:1" \
    --osc-port $port -o "$tmp/osc/" 2>"$tmp/osc.log" &
pid=$!
wait_listening "$tmp/osc.log"
send $port /streamdiff/prompt "s:a dog"
send $port --bundle /streamdiff/guidance f:1.2 -- /streamdiff/delta d:1
send $port /streamdiff/lora/0/scale f:1
# ignored, with a message, the stream keeps running
send $port /streamdiff/nope i:1
send $port /other/prompt "s:x"
send $port /streamdiff/guidance "s:high"
send $port /streamdiff/guidance f:1000
send $port /streamdiff/lora/7/scale f:1
send $port --raw 00112233
send $port --raw 2f73747265616d64                  # an address without a type tag string
send $port --raw 2362756e646c650000000000000000017fffffff  # a bundle element larger than the packet
send $port --raw 2f7374
send $port /streamdiff/similarity f:0 i:3         # the last one: when it is applied, all arrived
for _ in $(seq 600); do
    grep -q "osc: similarity filter 0, at most 3" "$tmp/osc.log" && break
    sleep 0.1
done
sleep 0.5
kill -INT $pid
wait $pid || { cat "$tmp/osc.log"; fail "the OSC-controlled stream failed"; }
log=$(cat "$tmp/osc.log")
grep -q 'osc: prompt "a dog"' <<<"$log" || { echo "$log"; fail "prompt not applied"; }
grep -q "osc: guidance 1.2, delta 1" <<<"$log" || { echo "$log"; fail "guidance/delta bundle not applied"; }
grep -q "osc: LoRA 0 (.*style_kohya.safetensors) strength 1" <<<"$log" || { echo "$log"; fail "LoRA strength not applied"; }
grep -q "osc: similarity filter 0, at most 3" <<<"$log" || { echo "$log"; fail "similarity filter not applied"; }
grep -q "osc: ignored:" <<<"$log" || { echo "$log"; fail "no message for the ignored packets"; }
grep -qE "osc: 5 messages applied, (9|[1-9][0-9]) ignored" <<<"$log" || { echo "$log"; fail "applied/ignored counts"; }
written=$(sed -nE 's/^wrote ([0-9]+) txt2img frames.*/\1/p' <<<"$log")
from=$(sed -nE 's/^osc: prompt "a dog" \(from frame ([0-9]+) on\)/\1/p' <<<"$log")
[ -n "$written" ] && [ -n "$from" ] && [ "$written" -gt "$from" ] ||
    { echo "$log"; fail "expected frames after the prompt change (wrote '$written', change at '$from')"; }

# the prompt took effect from that frame on: frames before it are "a cat", after it "a dog"
"$BIN" stream "${TINY[@]}" "${ONE[@]}" --frames "$written" -p "a dog" --lora "$L/style_kohya.safetensors:1" \
    -o "$tmp/dog/" 2>"$tmp/ref.log" || { cat "$tmp/ref.log"; fail "reference run"; }
last=$(printf 'frame_%06d.png' $((written - 1)))
first=frame_000000.png
cmp -s "$tmp/osc/$last" "$tmp/dog/$last" || fail "frame $((written - 1)) is not the new prompt's frame"
[ "$from" -eq 0 ] || ! cmp -s "$tmp/osc/$first" "$tmp/dog/$first" || fail "frame 0 already had the new prompt"
echo "cli_stream_osc: prompt applied from frame $from of $written; last frame equals the new prompt's"

# 2. seed and t-index live (the library's setters: tests/test_stream.c live_t_index_and_seed checks the frames)
"$BIN" stream "${TINY[@]}" --frames 1000000 -p "a cat" --osc-port $((port + 1)) -o "$tmp/osc2/" 2>"$tmp/osc2.log" &
pid=$!
wait_listening "$tmp/osc2.log"
send $((port + 1)) /streamdiff/seed i:7
send $((port + 1)) /streamdiff/t_index i:20 i:40
send $((port + 1)) /streamdiff/t_index i:10          # another count: refused by the stream, with a message
send $((port + 1)) /streamdiff/seed f:1.5            # not a whole number: ignored
send $((port + 1)) /streamdiff/similarity f:0        # the last one
for _ in $(seq 600); do
    grep -q "osc: similarity filter 0," "$tmp/osc2.log" && break
    sleep 0.1
done
kill -INT $pid
wait $pid || { cat "$tmp/osc2.log"; fail "the second OSC-controlled stream failed"; }
log=$(cat "$tmp/osc2.log")
grep -q "osc: seed 7 (from frame" <<<"$log" || { echo "$log"; fail "seed not applied"; }
grep -q "osc: t-index 20,40 (from frame" <<<"$log" || { echo "$log"; fail "t-index not applied"; }
grep -q "osc: t-index 10 refused: t_index_list: a live change keeps the number of steps" <<<"$log" ||
    { echo "$log"; fail "a t-index of another length was not refused with a message"; }
grep -q "osc: ignored: /streamdiff/seed takes one whole number" <<<"$log" || { echo "$log"; fail "bad seed not reported"; }

# 3. ControlNet settings live (a fixed control image: txt2img frames; the full VAE, as the tiny ControlNet's
#    embedding downsamples by 2): scale 0 from frame F on gives exactly the frames of a stream without the net
CN=(-m "$M/tiny-sd15" -W 64 -H 64 --stats-every 0 --txt2img --precision fp32 "${ONE[@]}" -p "a cat")
CTL=(--control "$M/controlnet-tiny-sd15:${SD_TEST_DATA:-tests/data}/preprocess/input.png:1")
"$BIN" stream "${CN[@]}" "${CTL[@]}" --frames 1000000 --osc-port $((port + 2)) -o "$tmp/osc3/" 2>"$tmp/osc3.log" &
pid=$!
wait_listening "$tmp/osc3.log"
send $((port + 2)) /streamdiff/controlnet/0/preprocess s:canny   # no effect on a fixed image, but applied
send $((port + 2)) /streamdiff/controlnet/0/canny i:300 i:100     # low above high: ignored
send $((port + 2)) /streamdiff/controlnet/0/guidance f:0.5 f:0.2  # start after end: ignored
send $((port + 2)) /streamdiff/controlnet/3/scale f:1             # no such net: refused by the stream
send $((port + 2)) /streamdiff/controlnet/0/scale f:0             # the last one
for _ in $(seq 600); do
    grep -q "osc: ControlNet 0: scale 0," "$tmp/osc3.log" && break
    sleep 0.1
done
sleep 0.5
kill -INT $pid
wait $pid || { cat "$tmp/osc3.log"; fail "the ControlNet stream failed"; }
log=$(cat "$tmp/osc3.log")
grep -q "osc: ControlNet 0: scale 1, guidance 0..1, canny" <<<"$log" || { echo "$log"; fail "preprocess not applied"; }
grep -q "osc: ignored: /streamdiff/controlnet/0/canny" <<<"$log" || { echo "$log"; fail "bad canny not reported"; }
grep -q "osc: 3 messages applied, 2 ignored" <<<"$log" || { echo "$log"; fail "bad canny / window not ignored"; }
grep -q "osc: ControlNet 3 refused: .*index 3 out of range" <<<"$log" || { echo "$log"; fail "net 3 not refused"; }
written=$(sed -nE 's/^wrote ([0-9]+) txt2img frames.*/\1/p' <<<"$log")
from=$(sed -nE 's/^osc: ControlNet 0: scale 0, .*\(from frame ([0-9]+) on\)/\1/p' <<<"$log")
[ -n "$written" ] && [ -n "$from" ] && [ "$written" -gt "$from" ] ||
    { echo "$log"; fail "expected frames after the scale change (wrote '$written', change at '$from')"; }
"$BIN" stream "${CN[@]}" --frames "$written" -o "$tmp/nonet/" 2>"$tmp/ref3.log" || { cat "$tmp/ref3.log"; fail "reference"; }
last=$(printf 'frame_%06d.png' $((written - 1)))
cmp -s "$tmp/osc3/$last" "$tmp/nonet/$last" || fail "frame $((written - 1)) (scale 0) differs from the stream without the net"
cmp -s "$tmp/osc3/frame_000000.png" "$tmp/nonet/frame_000000.png" && fail "frame 0 (scale 1) equals the stream without the net"
echo "cli_stream_osc: ControlNet scale 0 from frame $from of $written: the frames of a stream without the net"

# 4. usage errors
"$BIN" stream "${TINY[@]}" --frames 2 -p x --osc-port 0 -o "$tmp/x/" >"$tmp/err" 2>&1
[ $? -eq 2 ] || fail "--osc-port 0 should be a usage error"
grep -q -- "--osc-port" "$tmp/err" || fail "--osc-port 0: $(cat "$tmp/err")"
"$BIN" stream "${TINY[@]}" --frames 2 -p x --osc-port $port --osc-bind not-an-ip -o "$tmp/x/" >"$tmp/err" 2>&1 &&
    fail "--osc-bind not-an-ip accepted"
grep -q "not a numeric IP address" "$tmp/err" || fail "--osc-bind: $(cat "$tmp/err")"
echo "cli_stream_osc: ok"
