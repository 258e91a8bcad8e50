#!/usr/bin/env bash
# Installs what the browser and WebSocket tests of `streamdiff serve`, the portability test and the
# Python binding's tests need, only what is missing (.ci/run calls it; safe to run repeatedly):
#   - qemu-user (qemu-x86_64): tests/cli_portable.sh runs the binary on an emulated
#     pre-AVX2 CPU (-cpu Nehalem); without it that test skips (exit 77)
#   - Debian's Chromium (apt package 'chromium', /usr/bin/chromium), large (~300 MB)
#   - ffmpeg (the command), the receiver of the live-output test (tests/cli_stream_live.sh)
#   - Playwright from PyPI for the python3 on PATH (its driver; the browser is Debian's,
#     Playwright's own browser download is not used)
#   - Debian's python3-pytest, python3-numpy, python3-pil for the Python binding's tests
#     (tests/python, CTest python_binding; they skip without them)
# Without them tests/cli_server_e2e.sh skips (exit 77); the other server tests need only python3.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && SUDO=sudo
fi
apt_install() { # apt_install PKG: installs a missing Debian package (root or sudo)
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" && return 0
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "install-test-deps: need root to apt-get install $1" >&2
        return 1
    fi
    echo "install-test-deps: installing $1"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends "$1" ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$1"; }
}
apt_install qemu-user
apt_install python3-pytest   # the Python binding's tests (tests/python, CTest python_binding)
apt_install python3-numpy
apt_install python3-pil
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        echo "install-test-deps: need root to apt-get install chromium" >&2
        exit 1
    fi
    echo "install-test-deps: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
# The ffmpeg command receives the live outputs of `streamdiff stream -o URL` (tests/cli_stream_live.sh).
if ! command -v ffmpeg >/dev/null; then
    echo "install-test-deps: installing ffmpeg"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends ffmpeg ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends ffmpeg; }
fi
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import playwright.sync_api' 2>/dev/null && ! "$PY" -m pip --version >/dev/null 2>&1; then
    echo "install-test-deps: installing python3-pip"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends python3-pip ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends python3-pip; }
fi
if ! "$PY" -c 'import playwright.sync_api' 2>/dev/null; then
    echo "install-test-deps: pip install playwright (for $(command -v "$PY"))"
    "$PY" -m pip install -q --disable-pip-version-check playwright ||
        "$PY" -m pip install -q --disable-pip-version-check --break-system-packages playwright
fi
"$PY" -c 'import playwright.sync_api' && test -x /usr/bin/chromium && echo "install-test-deps: chromium and playwright ready"
