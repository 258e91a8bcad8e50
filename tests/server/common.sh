# Shared by tests/cli_server_*.sh: start `streamdiff serve` on the tiny test
# model on 127.0.0.1 with a kernel-chosen free port, and stop it cleanly.
# Usage: source this file after setting BIN, NAME and tmp.
# SD_SERVE_TEST_MODEL names another folder of tests/data/models (CTest
# cli_server_batch_sdxl: tiny-sdxl); SD_SERVE_TEST_TAESD=none serves it with
# its own VAE (no --taesd).

MODEL="${SD_TEST_DATA:-}/models/${SD_SERVE_TEST_MODEL:-tiny-sd15}"
TAESD="${SD_TEST_DATA:-}/models/taesd-tiny"
[ "${SD_SERVE_TEST_TAESD:-}" = none ] && TAESD=""

require_basics() {
    if [ -z "${SD_TEST_DATA:-}" ] || [ ! -f "$MODEL/model_index.json" ] || { [ -n "$TAESD" ] && [ ! -f "$TAESD/config.json" ]; }; then
        echo "$NAME: FAIL: the committed tiny test models are absent (ctest sets SD_TEST_DATA to tests/data)"
        exit 1
    fi
    local features
    features=$("$BIN" --version 2>&1 || true)
    if [[ "$features" == *"serve (libwebsockets) no"* ]]; then
        echo "$NAME: SKIP: this streamdiff was built without libwebsockets (no serve)"
        exit 77
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "$NAME: FAIL: python3 is needed for the WebSocket test client (scripts/install-deps.sh installs it)"
        exit 1
    fi
}

# start_server LOGFILE [extra serve flags...]; sets SERVER_PID and PORT
start_server() {
    local log="$1"
    shift
    "$BIN" serve -m "$MODEL" ${TAESD:+--taesd "$TAESD"} --host 127.0.0.1 --port 0 --threads 2 \
        --max-runtime 600 "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    PORT=""
    for _ in $(seq 1 600); do
        PORT=$(sed -n 's|.*open http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log" | head -1)
        [ -n "$PORT" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$NAME: FAIL: the server exited at startup:"
            cat "$log"
            exit 1
        fi
        sleep 0.1
    done
    if [ -z "$PORT" ]; then
        echo "$NAME: FAIL: the server printed no URL within 60 s:"
        cat "$log"
        kill -9 "$SERVER_PID" 2>/dev/null
        exit 1
    fi
}

# stop_server LOGFILE: SIGTERM, then the exit status must be 0 (sanitizer
# builds fail here on leaks or errors at shutdown)
stop_server() {
    local log="$1" rc
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID"
        rc=$?
        echo "$NAME: FAIL: the server died during the test (exit $rc):"
        tail -40 "$log"
        exit 1
    fi
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "$NAME: FAIL: the server did not stop within 30 s of SIGTERM"
        kill -9 "$SERVER_PID"
        exit 1
    fi
    wait "$SERVER_PID"
    rc=$?
    if [ "$rc" -ne 0 ] || ! grep -q "streamdiff serve: stopped" "$log"; then
        echo "$NAME: FAIL: the server exited with status $rc after SIGTERM:"
        tail -40 "$log"
        exit 1
    fi
    SERVER_PID=""
}

cleanup_server() {
    if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -9 "$SERVER_PID" 2>/dev/null
    fi
}

# run_page_test LOG SCRIPT [args...]: a page test in headless Chromium (tests/server/*_page.py); sets
# page_skipped=1 when Chromium or Playwright is missing (the test then ends with SKIP after the rest passed);
# a failure prints the server log's end and exits 1.
run_page_test() {
    local log="$1" script="$2" rc
    shift 2
    if { [ -n "${SD_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ]; } &&
        python3 -c 'import playwright.sync_api' 2>/dev/null; then
        timeout 120 python3 "$script" "$@"
        rc=$?
        [ $rc -ne 77 ] || page_skipped=1
        if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
            tail -20 "$log"
            echo "$NAME: FAIL (page)"
            exit 1
        fi
    else
        echo "$NAME: no Chromium or Playwright: $(basename "$script") did not run"
        page_skipped=1
    fi
}
