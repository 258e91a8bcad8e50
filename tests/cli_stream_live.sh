#!/usr/bin/env bash
# `streamdiff stream -o URL`: live outputs end to end on loopback, received by a
# local FFmpeg (the ffmpeg command, on the same libav libraries): UDP, TCP, RTMP and
# SRT (MPEG-TS / FLV with H.264 tune zerolatency). Each received frame must be the
# frame streamdiff made (PSNR against the same stream written as PNGs); an
# unreachable peer and an unknown URL scheme are named errors, quickly, no crash.
# Skips (77) without FFmpeg in the build or without the ffmpeg command
# (scripts/install-test-deps.sh installs it).
set -uo pipefail
BIN="$1"
M="${SD_TEST_DATA:-tests/data}/models"
[ -d "$M/tiny-sd15" ] && [ -d "$M/taesd-tiny" ] || { echo "cli_stream_live: FAIL: tiny models missing under $M"; exit 1; }
features=$("$BIN" --version 2>&1 || true)
if [[ "$features" == *"video (FFmpeg) no"* ]]; then
    echo "SKIP: this streamdiff was built without FFmpeg (no video)"; exit 77
fi
command -v ffmpeg >/dev/null || { echo "SKIP: no ffmpeg command to receive the streams (apt-get install ffmpeg)"; exit 77; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "cli_stream_live: FAIL: $*"; exit 1; }
TINY=(-m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -W 64 -H 64 --stats-every 0 --txt2img --frames 20 -p "a red fox" -s 5)
base=$((20000 + $$ % 20000))

# the reference: the same deterministic stream as PNGs
"$BIN" stream "${TINY[@]}" -o "$tmp/ref/" 2>"$tmp/ref.log" || { cat "$tmp/ref.log"; fail "reference run"; }

# psnr A B: the PSNR (dB) of two images, as ffmpeg computes it
psnr() {
    ffmpeg -hide_banner -nostats -i "$1" -i "$2" -lavfi psnr -f null - 2>&1 |
        sed -nE 's/.*average:([0-9.]+|inf).*/\1/p' | tail -1
}

# live NAME RECEIVER_URL SENDER_URL MIN_FRAMES [receiver options...]
live() {
    local name="$1" rx="$2" tx="$3" min="$4"
    shift 4
    mkdir -p "$tmp/$name"
    timeout 40 ffmpeg -hide_banner -loglevel error -y "$@" -i "$rx" -fps_mode passthrough -frames:v 10 "$tmp/$name/rx_%03d.png" \
        2>"$tmp/$name.rx.log" &
    local rxpid=$!
    sleep 2
    timeout 60 "$BIN" stream "${TINY[@]}" -o "$tx" 2>"$tmp/$name.tx.log" || { cat "$tmp/$name.tx.log"; fail "$name: sender"; }
    grep -q "wrote 20 txt2img frames to $tx (libx264)" "$tmp/$name.tx.log" || { cat "$tmp/$name.tx.log"; fail "$name: sender log"; }
    wait $rxpid
    local n
    n=$(ls "$tmp/$name" | grep -c '^rx_.*\.png$')
    [ "$n" -ge "$min" ] || { cat "$tmp/$name.rx.log"; fail "$name: received $n frames, expected at least $min"; }
    # the received frames are streamdiff's frames: the best match of the first one among the reference frames
    local best=0 f p
    for f in "$tmp"/ref/frame_0000{00..19}.png; do
        p=$(psnr "$tmp/$name/rx_001.png" "$f")
        [ "$p" = inf ] && p=99
        best=$(awk -v a="$best" -v b="$p" 'BEGIN { print (b > a) ? b : a }')
    done
    # H.264 at 64x64 of the tiny model's noisy frames: the sent frame ~21 dB, any other frame ~12 dB
    awk -v b="$best" 'BEGIN { exit !(b >= 18) }' || fail "$name: first received frame matches no sent frame (best PSNR $best dB)"
    echo "cli_stream_live: $name: $n frames received, first frame PSNR $best dB against the sent frames"
}

# UDP may drop datagrams on a loaded machine: a few frames prove the path
live udp "udp://127.0.0.1:$base?timeout=20000000" "udp://127.0.0.1:$base" 3
live tcp "tcp://127.0.0.1:$((base + 1))?listen=1" "tcp://127.0.0.1:$((base + 1))" 10
live rtmp "rtmp://127.0.0.1:$((base + 2))/live/test" "rtmp://127.0.0.1:$((base + 2))/live/test" 10 -listen 1
# SRT (live mode) drops what is unsent when the sender closes; linger keeps the socket for the tail
if ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx '  srt'; then
    live srt "srt://127.0.0.1:$((base + 3))?mode=listener" "srt://127.0.0.1:$((base + 3))?mode=caller&linger=3" 3
else
    echo "cli_stream_live: note: this FFmpeg has no SRT; srt:// not tested"
fi

# errors: nobody listening (refused at once, or the 5 s timeout), an unknown scheme
start=$(date +%s)
timeout 30 "$BIN" stream "${TINY[@]}" -o "rtmp://127.0.0.1:$((base + 4))/live/none" >"$tmp/err" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -lt 124 ] || fail "unreachable rtmp: exit $rc"
grep -q "cannot connect or open the live output" "$tmp/err" || fail "unreachable rtmp: $(cat "$tmp/err")"
[ $(($(date +%s) - start)) -le 15 ] || fail "unreachable rtmp took more than 15 s"
"$BIN" stream "${TINY[@]}" -o "foo://127.0.0.1:1/x" >"$tmp/err" 2>&1 && fail "foo:// accepted"
grep -q "unsupported output URL scheme 'foo'" "$tmp/err" || fail "unknown scheme: $(cat "$tmp/err")"
echo "cli_stream_live: ok"
