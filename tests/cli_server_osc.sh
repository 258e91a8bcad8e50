#!/usr/bin/env bash
# `streamdiff serve --osc-port`: OSC control of every session (tests/server/osc.py with the
# sender tests/osc_send.py), on loopback with kernel-chosen WebSocket ports.
set -uo pipefail
BIN="$1"
NAME=cli_server_osc
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
if [[ "$("$BIN" --version 2>&1)" == *"osc no"* ]]; then
    echo "$NAME: SKIP: this streamdiff was built without OSC (liblo)"; exit 77
fi
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
osc_port=$((30000 + ($$ * 7) % 20000))
start_server "$tmp/s.log" -W 64 -H 64 --max-fps 0 --max-sessions 2 --osc-port $osc_port \
    --lora "${SD_TEST_DATA}/lora/style_kohya.safetensors:1"
python3 "$HERE/server/osc.py" --port "$PORT" --osc-port $osc_port || { tail -30 "$tmp/s.log"; exit 1; }
grep -q "osc: listening on UDP 127.0.0.1:$osc_port" "$tmp/s.log" || { cat "$tmp/s.log"; echo "$NAME: FAIL: no listening line"; exit 1; }
stop_server "$tmp/s.log"
grep -qE "osc: [0-9]+ messages applied" "$tmp/s.log" || { cat "$tmp/s.log"; echo "$NAME: FAIL: no OSC summary"; exit 1; }
"$BIN" serve -m "$MODEL" --osc-port 70000 >"$tmp/u.log" 2>&1
[ $? -eq 2 ] && grep -q -- "--osc-port must be" "$tmp/u.log" || { cat "$tmp/u.log"; echo "$NAME: FAIL: --osc-port 70000"; exit 1; }
echo "$NAME: ok"
