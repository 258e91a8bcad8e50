#!/usr/bin/env bash
# The demo page end to end in headless Debian Chromium driven by Playwright
# (tests/server/browser_e2e.py) with a fake camera playing a .y4m clip: the
# page loads, output frames arrive and change when the prompt changes, stats,
# snapshot and the txt2img switch work. Saves a screenshot to the build folder
# (and to docs/screenshot.png with SD_UPDATE_SCREENSHOT=1).
# Exit 77 (skip) without Chromium or Playwright: scripts/install-test-deps.sh
# installs both (.ci/run runs it).
set -uo pipefail
BIN="$1"
NAME=cli_server_e2e
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
if [ -z "${SD_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ] && [ ! -x /usr/bin/chromium-browser ]; then
    echo "$NAME: SKIP: no Chromium (run scripts/install-test-deps.sh: apt package 'chromium')"
    exit 77
fi
if ! python3 -c 'import playwright.sync_api' 2>/dev/null; then
    echo "$NAME: SKIP: no Playwright for $(command -v python3) (run scripts/install-test-deps.sh: pip install playwright)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
shot="${SD_BUILD_DIR:-$tmp}/server_e2e_screenshot.png"
start_server "$tmp/server.log" -W 64 -H 64
timeout 300 python3 "$HERE/server/browser_e2e.py" --url "http://127.0.0.1:$PORT/" --workdir "$tmp/browser" \
    --screenshot "$shot"
rc=$?
if [ $rc -eq 77 ]; then
    exit 77
fi
if [ $rc -ne 0 ]; then
    tail -30 "$tmp/server.log"
    echo "$NAME: FAIL"
    exit 1
fi
stop_server "$tmp/server.log"
if [ "${SD_UPDATE_SCREENSHOT:-0}" = 1 ]; then
    cp "$shot" "$HERE/../docs/screenshot.png" && echo "$NAME: screenshot copied to docs/screenshot.png"
fi
echo "$NAME: OK (screenshot: $shot)"
