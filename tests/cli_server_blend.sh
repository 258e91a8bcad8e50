#!/usr/bin/env bash
# `streamdiff serve`: prompt and seed blending over the WebSocket (tests/server/blend.py): blends at the ends equal
# the single prompt / seed frame for frame, weight changes apply live, bad lists are errors. Loopback, kernel port.
set -uo pipefail
BIN="$1"
NAME=cli_server_blend
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
start_server "$tmp/s.log" -W 64 -H 64 --max-fps 0
timeout 120 python3 "$HERE/server/blend.py" --port "$PORT"
rc=$?
if [ $rc -ne 0 ]; then
    tail -20 "$tmp/s.log"
    echo "$NAME: FAIL"
    exit 1
fi
stop_server "$tmp/s.log"
echo "$NAME: ok"
