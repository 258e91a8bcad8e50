#!/usr/bin/env bash
# `streamdiff serve --control`: a ControlNet in every client's stream, its settings changed live over the
# WebSocket (tests/server/controlnet.py) on the tiny model with the tiny random ControlNet of tests/data
# (full VAE: the tiny ControlNet's conditioning embedding downsamples as the tiny VAE): scale 0 gives
# exactly the frames of a server without the net, the start settings give the first frames back, the
# preprocessor changes them; bad messages named; two clients batched (stream group) get what each gets
# alone; txt2img leaves the frame-made net out. Also the --control usage errors and, with Chromium and
# Playwright, the page's ControlNet controls (tests/server/controlnet_page.py). Loopback only.
set -uo pipefail
BIN="$1"
NAME=cli_server_controlnet
HERE="$(cd "$(dirname "$0")" && pwd)"
SD_SERVE_TEST_TAESD=none # the full VAE (see above)
source "$HERE/server/common.sh"
require_basics
CN="${SD_TEST_DATA}/models/controlnet-tiny-sd15"
CN2="${SD_TEST_DATA}/models/controlnet-tiny-sd2"
if [ ! -f "$CN/config.json" ] || [ ! -f "$CN2/config.json" ]; then
    echo "$NAME: FAIL: the committed tiny ControlNets are absent (tests/data/models)"
    exit 1
fi
tmp=$(mktemp -d)
PID_B=""
trap 'cleanup_server; [ -n "$PID_B" ] && kill -9 "$PID_B" 2>/dev/null; rm -rf "$tmp"' EXIT

expect_exit() {
    local want="$1" what="$2"
    shift 2
    "$BIN" serve -m "$MODEL" --port 0 --max-runtime 5 "$@" >"$tmp/usage.log" 2>&1
    local rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -q "$what" "$tmp/usage.log"; then
        echo "$NAME: FAIL: serve $* exited $rc (want $want, message '$what'):"
        cat "$tmp/usage.log"
        exit 1
    fi
}
expect_exit 2 "NET:IMAGE" --control "$CN"
expect_exit 2 "NET:IMAGE" --control "$CN:input:11"
expect_exit 2 "one of none, canny" --control "$CN:input" --control-preprocess sobel2
expect_exit 2 "above --canny-high" --control "$CN:input" --canny-low 300 --canny-high 200
expect_exit 2 "need a --control" --control-preprocess canny
expect_exit 1 "cannot read the control image" --control "$CN:$tmp/missing.png"
expect_exit 1 "another base model" --control "$CN2:input"

start_server "$tmp/a.log" -W 64 -H 64 --max-fps 0 --max-sessions 2 --max-batch 2 --control "$CN:input:1"
PORT_A=$PORT
PID_A=$SERVER_PID
start_server "$tmp/b.log" -W 64 -H 64 --max-fps 0 --max-sessions 2
PORT_B=$PORT
PID_B=$SERVER_PID
timeout 300 python3 "$HERE/server/controlnet.py" --port-a "$PORT_A" --port-b "$PORT_B" --name controlnet-tiny-sd15
rc=$?
if [ $rc -ne 0 ]; then
    echo "--- server A:"
    tail -20 "$tmp/a.log"
    echo "$NAME: FAIL"
    exit 1
fi
page_skipped=0
run_page_test "$tmp/a.log" "$HERE/server/controlnet_page.py" --url "http://127.0.0.1:$PORT_A/" --name controlnet-tiny-sd15
stop_server "$tmp/b.log"
PID_B=""
SERVER_PID=$PID_A
stop_server "$tmp/a.log"
if [ $page_skipped -eq 1 ]; then
    echo "$NAME: SKIP (after the rest passed): the browser part did not run"
    exit 77
fi
echo "$NAME: OK"
