#!/usr/bin/env bash
# `streamdiff serve` under load on loopback (tests/server/load.py): 4
# WebSocket clients stream img2img frames for 10 s while a fifth floods
# frames and never reads. Reports fps, latency percentiles and the server's
# RSS; fails on a crash, an error message, starvation, unfairness or memory
# growth. Bounded: 10 s of traffic, then SIGTERM.
set -uo pipefail
BIN="$1"
NAME=cli_server_load
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
CLIENTS=${SD_LOAD_CLIENTS:-4}
SECONDS_=${SD_LOAD_SECONDS:-10}
GROWTH=24
if [ -n "${ASAN_OPTIONS:-}" ]; then
    # AddressSanitizer keeps freed memory in quarantine: bound it so RSS settles
    export ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=16"
    GROWTH=64
fi
start_server "$tmp/server.log" -W 64 -H 64 --max-fps 0 --max-sessions $((CLIENTS + 1))
timeout 120 python3 "$HERE/server/load.py" --port "$PORT" --pid "$SERVER_PID" --clients "$CLIENTS" \
    --seconds "$SECONDS_" --max-growth-mib "$GROWTH" --json "${SD_BUILD_DIR:-$tmp}/server_load.json"
rc=$?
if [ $rc -ne 0 ]; then
    tail -30 "$tmp/server.log"
    echo "$NAME: FAIL"
    exit 1
fi
stop_server "$tmp/server.log"
echo "$NAME: OK (results in ${SD_BUILD_DIR:-$tmp}/server_load.json)"
