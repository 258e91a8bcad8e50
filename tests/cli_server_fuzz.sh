#!/usr/bin/env bash
# `streamdiff serve` robustness on loopback: bad-message fuzzing of the
# WebSocket endpoint (tests/server/fuzz.py: random bytes, huge and fragmented
# frames, invalid UTF-8, hostile JSON, wrong types, lying image headers,
# protocol violations, broken handshakes, too many clients), the token, and
# command-line usage errors. The server must answer errors, keep serving and
# exit cleanly on SIGTERM.
set -uo pipefail
BIN="$1"
NAME=cli_server_fuzz
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/server/common.sh"
require_basics
tmp=$(mktemp -d)
trap 'cleanup_server; rm -rf "$tmp"' EXIT
fail() { echo "$NAME: FAIL: $*"; exit 1; }

# usage errors: exit 2 with a message, before loading anything
for args in "--port 70000" "--port x" "-m $MODEL --width 100" "-m $MODEL --token a/b" "-m $MODEL --bogus" \
            "-m $MODEL --t-index-list 45,32" "-m $MODEL --max-fps -1" "" "-m $MODEL --cfg-type half"; do
    # shellcheck disable=SC2086
    "$BIN" serve $args >"$tmp/usage.log" 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "'serve $args' exited $rc, want 2: $(cat "$tmp/usage.log")"
    grep -q "streamdiff serve:" "$tmp/usage.log" || fail "'serve $args' printed no message"
done
"$BIN" serve --help >"$tmp/help.txt"; grep -q -- "--max-frame-bytes" "$tmp/help.txt" || fail "serve --help lacks the limits"
# stream settings the model cannot do: exit 2 with the engine's reason
"$BIN" serve -m "$MODEL" --taesd "$TAESD" -W 72 -H 72 --port 0 --max-runtime 5 >"$tmp/size.log" 2>&1
[ $? -eq 2 ] && grep -q "multiples of" "$tmp/size.log" || fail "a size the model cannot do: $(cat "$tmp/size.log")"
# the port is taken: exit 1 with a message
python3 -c 'import socket,time,sys
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(20)' >"$tmp/busy.port" &
busy_pid=$!
for _ in $(seq 1 50); do [ -s "$tmp/busy.port" ] && break; sleep 0.1; done
LSAN_OPTIONS="suppressions=$HERE/server/lsan-lws.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
    "$BIN" serve -m "$MODEL" --taesd "$TAESD" -W 64 -H 64 --port "$(cat "$tmp/busy.port")" --max-runtime 5 \
    >"$tmp/busy.log" 2>&1
rc=$?
kill "$busy_pid" 2>/dev/null
[ "$rc" -eq 1 ] && grep -q "cannot listen" "$tmp/busy.log" || fail "a taken port: exit $rc: $(cat "$tmp/busy.log")"

# the fuzzer against a server with small limits
start_server "$tmp/server.log" -W 64 -H 64 --max-sessions 2 --max-clients 6 --max-frame-bytes 1048576 \
    --max-text-bytes 16384
# no --precision: the default is auto (what `--version` says auto is on this CPU)
auto=$("$BIN" --version | sed -n 's/.*precision auto = \([a-z0-9]*\).*/\1/p')
grep -q "precision $auto on" "$tmp/server.log" || fail "serve's default precision is not auto ($auto): $(head -3 "$tmp/server.log")"
timeout 300 python3 "$HERE/server/fuzz.py" --port "$PORT" --max-frame-bytes 1048576 --max-text-bytes 16384 \
    --max-clients 6 || { tail -30 "$tmp/server.log"; fail "fuzz.py"; }
stop_server "$tmp/server.log"

# --token: /ws and /metrics need it, /health and the page do not; a public bind without a token warns
start_server "$tmp/token.log" -W 64 -H 64 --token s3cret-Token
python3 - "$PORT" "$HERE/server" <<'PY' || fail "token checks"
import sys
sys.path.insert(0, sys.argv[2])
import wsclient as w
port = int(sys.argv[1])
ok = True
def check(c, what):
    global ok
    print('cli_server_fuzz: %s: %s' % ('ok' if c else 'FAIL', what))
    ok = ok and c
for path in ['/ws', '/ws?token=wrong', '/ws?token=s3cret-Toke', '/ws?token=s3cret-Token2']:
    try:
        w.WS('127.0.0.1', port, path=path, timeout=5).close()
        check(False, 'WebSocket %s refused' % path)
    except (w.HandshakeError, OSError):
        check(True, 'WebSocket %s refused' % path)
ws = w.WS('127.0.0.1', port, path='/ws?token=s3cret-Token')
check(ws.recv_json(want='hello')['state'] == 'active', 'WebSocket with the token accepted')
ws.close()
ws = w.WS('127.0.0.1', port, headers={'Authorization': 'Bearer s3cret-Token'})
check(ws.recv_json(want='hello')['type'] == 'hello', 'WebSocket with a bearer header accepted')
ws.close()
check(w.http_get('127.0.0.1', port, '/metrics')[0] == 401, '/metrics without the token: 401')
check(w.http_get('127.0.0.1', port, '/metrics?token=s3cret-Token')[0] == 200, '/metrics with the token: 200')
check(w.http_get('127.0.0.1', port, '/health')[0] == 200, '/health needs no token')
check(w.http_get('127.0.0.1', port, '/')[0] == 200, 'the page needs no token')
sys.exit(0 if ok else 1)
PY
grep -q "open http://127.0.0.1:$PORT/?token=s3cret-Token" "$tmp/token.log" || fail "the printed URL lacks the token"
stop_server "$tmp/token.log"
"$BIN" serve -m "$MODEL" --taesd "$TAESD" -W 64 -H 64 --host 0.0.0.0 --port 0 --max-runtime 0.5 >"$tmp/warn.log" 2>&1
grep -q "WARNING: listening on 0.0.0.0 without --token" "$tmp/warn.log" || fail "no warning for a public bind: $(cat "$tmp/warn.log")"
echo "$NAME: OK"
