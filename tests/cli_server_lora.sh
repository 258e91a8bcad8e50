#!/usr/bin/env bash
# `streamdiff serve --lora`: LoRA scales changed live over the WebSocket
# (tests/server/lora.py) on the tiny model with the tiny LoRAs of
# tests/data/lora: scale 0 gives exactly the frames of a server without the
# LoRAs, the start scales give the first frames back; errors, broadcast to the
# other clients, a vanished LoRA file. Also the --lora usage errors and, when
# Chromium and Playwright are there (scripts/install-test-deps.sh), the page's
# LoRA sliders (tests/server/lora_page.py). Loopback only, kernel-chosen ports.
set -uo pipefail
BIN="$1"
NAME=cli_server_lora
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
LORA="${SD_TEST_DATA}/lora"
if [ ! -f "$LORA/style_kohya.safetensors" ] || [ ! -f "$LORA/lcm_peft.safetensors" ]; then
    echo "$NAME: FAIL: the committed tiny LoRAs are absent (tests/data/lora)"
    exit 1
fi
page_skipped=0
tmp=$(mktemp -d)
PID_B=""
trap 'cleanup_server; [ -n "$PID_B" ] && kill -9 "$PID_B" 2>/dev/null; rm -rf "$tmp"' EXIT

# usage errors: exit 2 before loading anything; a LoRA that does not fit: exit 1
expect_exit() {
    local want="$1" what="$2"
    shift 2
    "$BIN" serve -m "$MODEL" --taesd "$TAESD" --port 0 --max-runtime 5 "$@" >"$tmp/usage.log" 2>&1
    local rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -q "$what" "$tmp/usage.log"; then
        echo "$NAME: FAIL: serve $* exited $rc (want $want, message '$what'):"
        cat "$tmp/usage.log"
        exit 1
    fi
}
expect_exit 2 "outside -4..4" --lora "$LORA/style_kohya.safetensors:4.5"
expect_exit 2 "needs PATH or PATH:SCALE" --lora ":1"
expect_exit 1 "cannot apply the LoRA" --lora "$tmp/missing.safetensors"

# the LoRAs are copies: the test deletes one to make an apply fail
cp "$LORA/style_kohya.safetensors" "$LORA/lcm_peft.safetensors" "$tmp/"
start_server "$tmp/a.log" -W 64 -H 64 --max-fps 0 --max-sessions 2 \
    --lora "$tmp/style_kohya.safetensors:0.8" --lora "$tmp/lcm_peft.safetensors"
PORT_A=$PORT
PID_A=$SERVER_PID
start_server "$tmp/b.log" -W 64 -H 64 --max-fps 0 --max-sessions 2
PORT_B=$PORT
PID_B=$SERVER_PID
run_page_test "$tmp/a.log" "$HERE/server/lora_page.py" --url "http://127.0.0.1:$PORT_A/" --port "$PORT_A" \
    --names style_kohya.safetensors,lcm_peft.safetensors --scales 0.8,1
timeout 120 python3 "$HERE/server/lora.py" --port-a "$PORT_A" --port-b "$PORT_B" \
    --names style_kohya.safetensors,lcm_peft.safetensors --scales 0.8,1 --vanish "$tmp/style_kohya.safetensors"
rc=$?
if [ $rc -ne 0 ]; then
    echo "--- server A:"
    tail -20 "$tmp/a.log"
    echo "$NAME: FAIL"
    exit 1
fi
stop_server "$tmp/b.log"
PID_B=""
SERVER_PID=$PID_A
stop_server "$tmp/a.log"
if [ $page_skipped -eq 1 ]; then
    echo "$NAME: SKIP (after the rest passed): the browser part did not run"
    exit 77
fi
echo "$NAME: OK"
