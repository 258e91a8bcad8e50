#!/usr/bin/env bash
# Cross-session batching in `streamdiff serve` (tests/server/batch.py): six
# WebSocket clients with different prompts, seeds, cfg types, t_index_lists,
# two stream sizes and both modes stream in lock step, once against a server
# that runs every frame alone (--max-batch 1) and once against one that
# batches (--max-batch 6). Every client must get byte-identical output frames
# both times, and the batched server must have run several clients' frames in
# one call. Plus per-client frame-rate caps (config field max_fps).
set -uo pipefail
BIN="$1"
NAME=cli_server_batch
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
for mode in alone batched; do
    if [ $mode = alone ]; then batch=1; else batch=6; fi
    start_server "$tmp/server_$mode.log" -W 64 -H 64 --max-fps 0 --max-sessions 6 --max-batch $batch
    if ! timeout 300 python3 "$HERE/server/batch.py" --port "$PORT" --rounds 6 --json "$tmp/$mode.json"; then
        tail -30 "$tmp/server_$mode.log"
        echo "$NAME: FAIL ($mode run)"
        exit 1
    fi
    # the fps caps are the server's, not the model's: timed once, on the default model (the SDXL run,
    # cli_server_batch_sdxl, with its slower VAE frames, checks the batching only)
    if [ $mode = batched ] && [ -z "${SD_SERVE_TEST_MODEL:-}" ] &&
        ! timeout 120 python3 "$HERE/server/batch.py" --port "$PORT" --fps-caps; then
        tail -30 "$tmp/server_$mode.log"
        echo "$NAME: FAIL (per-client fps caps)"
        exit 1
    fi
    stop_server "$tmp/server_$mode.log"
done
if ! python3 "$HERE/server/batch.py" --compare "$tmp/alone.json" "$tmp/batched.json"; then
    echo "$NAME: FAIL"
    exit 1
fi
echo "$NAME: OK"
