#!/usr/bin/env bash
# `make run`: starts the real-time demo server in the foreground and prints
# the URL to open (Ctrl-C stops it).
#
# Model, the first that is found:
#   1. $STREAMDIFF_MODEL (a diffusers folder, a .safetensors file or an HF id in the local cache)
#   2. in the local Hugging Face cache: stabilityai/sd-turbo, then SimianLuo/LCM_Dreamshaper_v7
#   3. the bundled tiny test model (tests/data/models/tiny-sd15): it has random weights, so the
#      output is noise; the page says so and how to get real weights.
# TAESD: $STREAMDIFF_TAESD, else madebyollin/taesd from the cache (the tiny model uses taesd-tiny).
# Settings: HOST (127.0.0.1), PORT (8080), STREAMDIFF_TOKEN, STREAMDIFF_SIZE (512 on a GPU, 256 on
# the CPU, 128 for the tiny model), STREAMDIFF_BACKEND (cuda when this build has CUDA and a GPU is
# visible, else cpu), SERVE_FLAGS (more `streamdiff serve` flags).
# Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
BIN="$BUILD/streamdiff"
[ -x "$BIN" ] || { echo "run-demo: $BIN is missing: run 'make build' first" >&2; exit 1; }

hf_root() {
    for d in "${HF_HUB_CACHE:-}" "${HUGGINGFACE_HUB_CACHE:-}" "${HF_HOME:+$HF_HOME/hub}" \
             "${XDG_CACHE_HOME:+$XDG_CACHE_HOME/huggingface/hub}" "${HOME:+$HOME/.cache/huggingface/hub}"; do
        [ -n "$d" ] && { echo "$d"; return; }
    done
}
in_cache() { # org/name -> true when a snapshot of it is in the cache
    local root
    root="$(hf_root)"
    [ -n "$root" ] && [ -n "$(ls -A "$root/models--${1//\//--}/snapshots" 2>/dev/null)" ]
}

MODEL="${STREAMDIFF_MODEL:-}"
TAESD="${STREAMDIFF_TAESD:-}"
tiny=0
if [ -z "$MODEL" ]; then
    for id in stabilityai/sd-turbo SimianLuo/LCM_Dreamshaper_v7; do
        if in_cache "$id"; then MODEL="$id"; break; fi
    done
fi
if [ -z "$MODEL" ]; then
    MODEL=tests/data/models/tiny-sd15
    TAESD=tests/data/models/taesd-tiny
    tiny=1
    cat <<MSG
run-demo: no model weights found, so the demo runs on the bundled tiny test model.
run-demo: Its weights are random: the output is noise, not pictures (the page says so too).
run-demo: For real images download weights once (a few GB), then 'make run' again:
run-demo:     pip install -U huggingface_hub
run-demo:     huggingface-cli download stabilityai/sd-turbo
run-demo:     huggingface-cli download madebyollin/taesd
run-demo: or point STREAMDIFF_MODEL at a diffusers folder or an SD1.x/SD2.x .safetensors file.
MSG
fi
if [ -z "$TAESD" ] && in_cache madebyollin/taesd; then
    TAESD=madebyollin/taesd
fi

BACKEND="${STREAMDIFF_BACKEND:-}"
if [ -z "$BACKEND" ]; then
    BACKEND=cpu
    if [ "$tiny" = 0 ] && grep -q '^CMAKE_CUDA_COMPILER:[A-Z]*=.*nvcc' "$BUILD/CMakeCache.txt" 2>/dev/null &&
        command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        BACKEND=cuda
    fi
fi
SIZE="${STREAMDIFF_SIZE:-}"
if [ -z "$SIZE" ]; then
    if [ "$tiny" = 1 ]; then SIZE=128; elif [ "$BACKEND" = cuda ]; then SIZE=512; else SIZE=256; fi
fi
args=(serve -m "$MODEL" --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" --backend "$BACKEND" -W "$SIZE" -H "$SIZE")
[ -n "$TAESD" ] && args+=(--taesd "$TAESD")
case "$MODEL" in
    *sd-turbo*) args+=(--cfg-type none) ;; # distilled without CFG
esac
echo "run-demo: $BIN ${args[*]} ${SERVE_FLAGS:-}"
# shellcheck disable=SC2086
exec "$BIN" "${args[@]}" ${SERVE_FLAGS:-}
