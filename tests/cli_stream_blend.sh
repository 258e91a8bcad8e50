#!/usr/bin/env bash
# Prompt and seed blending in `streamdiff stream` (docs/blending.md): one prompt of weight 1 and one seed of
# weight 1 give the frames of -p / -s byte for byte; a two-prompt blend and a two-seed blend give other frames
# (and a blend at t = 1 equals its second prompt); bad lists are usage errors naming the problem; over OSC
# (when built with liblo) /streamdiff/prompts, /streamdiff/prompt_weights, /streamdiff/seeds and bad lists.
set -uo pipefail
BIN="$1"
M="${SD_TEST_DATA:-tests/data}/models"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ -d "$M/tiny-sd15" ] && [ -d "$M/taesd-tiny" ] || { echo "cli_stream_blend: FAIL: tiny models missing under $M"; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "cli_stream_blend: FAIL: $*"; exit 1; }
TINY=(-m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 32 -H 32 --stats-every 0 --txt2img --precision fp32)
run() { local out="$1"; shift; "$BIN" stream "${TINY[@]}" --frames 3 "$@" -o "$tmp/$out/" 2>"$tmp/$out.log" || { cat "$tmp/$out.log"; fail "$out: exit $?"; }; }
same() { cmp -s "$tmp/$1/frame_000002.png" "$tmp/$2/frame_000002.png"; }

run single -p "a red fox" -s 7
run one --blend-prompt "a red fox:0.4" --seeds 7:3
same single one || fail "one prompt / one seed of any weight must equal -p / -s"
run two --blend-prompt "a red fox:0.5" --blend-prompt "a castle:0.5" -s 7
same single two && fail "a two-prompt blend gave the frames of its first prompt"
run castle -p "a castle" -s 7
run t1 --blend-prompt "a red fox:0" --blend-prompt "a castle:2" --prompt-blend slerp -s 7
same castle t1 || fail "slerp at t = 1 must equal the second prompt"
run seeds -p "a red fox" --seeds 7:1,8:1 --seed-blend slerp
same single seeds && fail "a two-seed blend gave the frames of its first seed"
run raw --blend-prompt "a red fox:1" --blend-prompt "a castle:1" --raw-weights -s 7
same two raw && fail "--raw-weights gave the normalised blend"

# bad lists: usage errors (2) that name the problem
bad() { local want="$1"; shift; "$BIN" stream "${TINY[@]}" --frames 3 "$@" -o "$tmp/bad/" 2>"$tmp/bad.log"; local rc=$?
        [ $rc -eq 2 ] && grep -q -- "$want" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "$* -> rc $rc, want 2 and '$want'"; }; }
bad "weights sum to 0" --blend-prompt "a:0" --blend-prompt "b:0"
bad "weight 0..1e6" --blend-prompt "a:-1"
bad "weight 0..1e6" --blend-prompt "a:1e9"
bad "at most 8 prompts" $(for i in 1 2 3 4 5 6 7 8 9; do echo --blend-prompt p$i; done)
bad "1..8 seeds" --seeds 1,2,3,4,5,6,7,8,9
bad "SEED\[:WEIGHT\]" --seeds "1:0.5,"
bad "linear or slerp" --seed-blend cubic
bad "either --blend-prompt or -p" -p a --blend-prompt b
bad "either -s or --seeds" -s 1 --seeds 2

if [[ "$("$BIN" --version 2>&1)" == *"osc no"* ]]; then
    echo "cli_stream_blend: ok (OSC part skipped: built without liblo)"; exit 0
fi
send() { python3 "$HERE/osc_send.py" "$@" || fail "osc_send.py $*"; }
port=$((30000 + ($$ + 7) % 20000))
"$BIN" stream "${TINY[@]}" --frames 1000000 --t-index 35 --cfg-type none -p "a cat" \
    --osc-port $port -o "$tmp/osc/" 2>"$tmp/osc.log" &
pid=$!
for _ in $(seq 600); do grep -q "osc: listening" "$tmp/osc.log" && break; sleep 0.1; done
send $port /streamdiff/prompts "s:a red fox" f:0.25 "s:a castle" f:0.75
send $port /streamdiff/prompt_weights f:1 f:0
send $port /streamdiff/prompt_weights f:1            # wrong count: refused, the stream keeps its list
send $port /streamdiff/prompts "s:a" f:0 "s:b" i:0    # weights sum to zero: refused
send $port /streamdiff/prompts "s:a" s:b              # not (text, weight) pairs: ignored
send $port /streamdiff/prompt_blend s:linear
send $port /streamdiff/seeds i:3 f:1 h:4 d:1
send $port /streamdiff/seed_weights f:0.2 f:0.8
send $port /streamdiff/seed_blend s:cubic             # ignored
send $port /streamdiff/seed i:9
for _ in $(seq 600); do grep -q "osc: seed 9 " "$tmp/osc.log" && break; sleep 0.1; done
sleep 0.3
kill -INT $pid
wait $pid
log=$(cat "$tmp/osc.log")
grep -q 'osc: prompt "a red fox" 0.25, "a castle" 0.75 (slerp)' <<<"$log" || { echo "$log"; fail "prompt list not applied"; }
grep -q 'osc: prompt "a red fox" 1, "a castle" 0 (slerp)' <<<"$log" || { echo "$log"; fail "prompt weights not applied"; }
grep -q "osc: prompt_weights refused: 1 weights for a list of 2 prompts" <<<"$log" || { echo "$log"; fail "bad weight count"; }
grep -q "osc: prompt refused: prompts: the weights sum to 0" <<<"$log" || { echo "$log"; fail "zero-sum weights"; }
grep -q "osc: ignored: /streamdiff/prompts: pairs of a string" <<<"$log" || { echo "$log"; fail "bad pairs not reported"; }
grep -q '(linear) (from frame' <<<"$log" || { echo "$log"; fail "prompt_blend not applied"; }
grep -q "osc: seed 3:1,4:1 (linear)" <<<"$log" || { echo "$log"; fail "seed list not applied"; }
grep -q "osc: seed 3:0.2,4:0.8 (linear)" <<<"$log" || { echo "$log"; fail "seed weights not applied"; }
grep -q "osc: seed 9 (from frame" <<<"$log" || { echo "$log"; fail "single seed after a list"; }
echo "cli_stream_blend: ok"
