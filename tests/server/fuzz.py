"""Bad-message fuzzing of the `streamdiff serve` WebSocket endpoint on
loopback: random bytes, huge frames, invalid UTF-8, hostile JSON, wrong
types, broken images, WebSocket protocol violations and broken handshakes.
Every application-level bad message must get an error message with the
expected code on a connection that stays usable; protocol violations may
close that connection; the server must stay up and keep serving. Bounded:
a fixed seed, a few hundred messages.

    python3 fuzz.py --port P [--max-frame-bytes N] [--max-text-bytes N]
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

HOST = '127.0.0.1'
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print('fuzz: FAIL: ' + what)


def connect(port):
    ws = wsclient.WS(HOST, port, timeout=10)
    hello = ws.recv_json(want='hello', timeout=10)
    return ws, hello


def expect_error(ws, code, what, timeout=10):
    """The next error message (skipping other text and binary messages)."""
    try:
        msg = ws.recv_json(want='error', timeout=timeout)
    except Exception as e:  # noqa: BLE001
        check(False, '%s: no error message (%s: %s)' % (what, type(e).__name__, e))
        return None
    check(code is None or msg.get('code') == code,
          '%s: error code %r, want %r (%s)' % (what, msg.get('code'), code, msg.get('message')))
    check(isinstance(msg.get('message'), str) and msg['message'], '%s: error without a message' % what)
    return msg


def still_usable(ws, what):
    pid = random.randint(1, 10 ** 6)
    try:
        ws.send_json({'type': 'ping', 'id': pid})
        msg = ws.recv_json(want='pong', timeout=10)
        check(msg.get('id') == pid, '%s: pong id %r, want %r' % (what, msg.get('id'), pid))
    except Exception as e:  # noqa: BLE001
        check(False, '%s: the connection is no longer usable (%s: %s)' % (what, type(e).__name__, e))


def server_alive(port, what):
    try:
        status, _, body = wsclient.http_get(HOST, port, '/health')
        check(status == 200 and json.loads(body).get('status') == 'ok', '%s: /health answered %d' % (what, status))
    except Exception as e:  # noqa: BLE001
        check(False, '%s: the server does not answer /health (%s: %s)' % (what, type(e).__name__, e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--max-frame-bytes', type=int, default=4 << 20)
    ap.add_argument('--max-text-bytes', type=int, default=16 << 10)
    ap.add_argument('--max-clients', type=int, default=16)
    a = ap.parse_args()
    rng = random.Random(20240601)
    random.seed(7)
    port = a.port
    t0 = time.monotonic()

    ws, hello = connect(port)
    check(hello.get('state') == 'active', 'first client is active')
    limits = hello['limits']

    # a real JPEG (one txt2img output) for image mutations
    ws.send_json({'type': 'config', 'mode': 'txt2img'})
    jpeg = ws.recv_binary(timeout=30)
    check(jpeg[:3] == b'\xff\xd8\xff', 'txt2img output is a JPEG')
    ws.send_json({'type': 'config', 'mode': 'img2img'})
    ws.recv_json(want='config', timeout=10)

    # 1. random binary messages
    for i in range(40):
        n = rng.choice([1, 2, 3, 7, 100, 1000, 20000, 70000])
        data = bytes(rng.getrandbits(8) for _ in range(min(n, 2048))) * (n // 2048 + 1)
        data = data[:n]
        if data[:2] == b'\xff\xd8' or data[:4] == b'\x89PNG':
            data = b'x' + data
        ws.send_binary(data)
        expect_error(ws, 'bad_frame', 'random binary #%d (%d bytes)' % (i, n))
    still_usable(ws, 'after random binary')

    # 2. random text messages: invalid UTF-8, or valid UTF-8 that is not JSON
    for i in range(30):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        try:
            raw.decode('utf-8')
            code = None  # valid UTF-8 by chance: then bad_json (or another JSON error)
        except UnicodeDecodeError:
            code = 'bad_utf8'
        ws.send_frame(0x1, raw)
        expect_error(ws, code, 'random text #%d' % i)
    for bad in [b'\xc0\xaf', b'\xed\xa0\x80', b'\xf4\x90\x80\x80', b'{"type":"config","prompt":"\xff"}',
                b'{"type":"config","prompt":"\xe2\x82"}']:
        ws.send_frame(0x1, bad)
        expect_error(ws, 'bad_utf8', 'invalid UTF-8 %r' % bad[:20])
    still_usable(ws, 'after random text')

    # 3. hostile JSON
    hostile = [
        ('', 'bad_json'), ('{', 'bad_json'), ('nul', 'bad_json'), ('{"type":"config"} x', 'bad_json'),
        ('[' * 100000 + ']' * 100000, 'too_large'), ('[' * 3000 + ']' * 3000, 'bad_json'),
        ('{"a":' * 900 + '1' + '}' * 900, 'unknown_type'), ('{"type":"config","prompt":' * 600 + '1' + '}' * 600, None),
        ('null', 'bad_type'), ('[]', 'bad_type'), ('"config"', 'bad_type'), ('42', 'bad_type'),
        ('{}', 'unknown_type'), ('{"type":5}', 'bad_type'), ('{"type":"launch"}', 'unknown_type'),
        ('{"type":"config","guidance_scale":"high"}', 'bad_type'),
        ('{"type":"config","guidance_scale":1e400}', 'bad_value'),
        ('{"type":"config","guidance_scale":NaN}', 'bad_json'),
        ('{"type":"config","guidance_scale":-1}', 'bad_value'),
        ('{"type":"config","guidance_scale":true}', 'bad_type'),
        ('{"type":"config","delta":null}', 'bad_type'),
        ('{"type":"config","t_index_list":[45,32]}', 'bad_value'),
        ('{"type":"config","t_index_list":[]}', 'bad_value'),
        ('{"type":"config","t_index_list":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}', 'bad_value'),
        ('{"type":"config","t_index_list":[0.5]}', 'bad_value'),
        ('{"type":"config","t_index_list":[50]}', 'bad_value'),
        ('{"type":"config","t_index_list":["32"]}', 'bad_type'),
        ('{"type":"config","t_index_list":{"0":32}}', 'bad_type'),
        ('{"type":"config","seed":-1}', 'bad_value'), ('{"type":"config","seed":1.5}', 'bad_value'),
        ('{"type":"config","seed":18446744073709551616}', 'bad_value'),
        ('{"type":"config","width":4096}', 'bad_value'), ('{"type":"config","width":100}', 'bad_value'),
        ('{"type":"config","height":0}', 'bad_value'),
        ('{"type":"config","mode":"video"}', 'bad_value'), ('{"type":"config","mode":1}', 'bad_type'),
        ('{"type":"config","cfg_type":"half"}', 'bad_value'),
        ('{"type":"config","jpeg_quality":0}', 'bad_value'),
        ('{"type":"config","similarity_threshold":2}', 'bad_value'),
        ('{"type":"config","max_skip_frames":-3}', 'bad_value'),
        ('{"type":"config","prompt":["a"]}', 'bad_type'),
        ('{"type":"config","prompt":"%s"}' % ('x' * (limits['max_prompt_bytes'] + 1)), 'too_large'),
        ('{"type":"config","prompt":"a","prompt":"b"}', 'duplicate_field'),
        ('{"type":"config","promt":"typo"}', 'unknown_field'),
        ('{"type":"config","__proto__":{}}', 'unknown_field'),
        ('{"type":"config","prompt":"\\ud800"}', 'bad_json'),
        ('{"type":"ping","id":"x"}', 'bad_type'), ('{"type":"ping","extra":1}', 'unknown_field'),
    ]
    for text, code in hostile:
        if len(text.encode()) > a.max_text_bytes:
            code = 'too_large'
        ws.send_text(text)
        expect_error(ws, code, 'hostile JSON %r' % text[:50])
    still_usable(ws, 'after hostile JSON')
    # a good message after all that still works, and a prompt with \u0000 and odd Unicode is fine
    ws.send_json({'type': 'config', 'prompt': 'a cat \u0000 \u2603 \U0001F600', 'guidance_scale': 1.1})
    msg = ws.recv_json(want='config', timeout=10)
    check(abs(msg['config']['guidance_scale'] - 1.1) < 1e-6, 'a good config after the bad ones applies')

    # 4. oversized messages: error, and the connection stays usable
    ws.send_binary(b'\xff\xd8\xff' + b'\0' * (a.max_frame_bytes + 10))
    expect_error(ws, 'too_large', 'binary over the limit')
    ws.send_text('{"type":"config","prompt":"' + 'y' * (a.max_text_bytes + 10) + '"}')
    expect_error(ws, 'too_large', 'text over the limit')
    # fragmented: many continuation frames adding up to more than the limit
    chunk = b'z' * 65536
    ws.send_frame(0x2, b'\xff\xd8\xff', fin=False)
    for _ in range(a.max_frame_bytes // len(chunk) + 2):
        ws.send_frame(0x0, chunk, fin=False)
    ws.send_frame(0x0, b'', fin=True)
    expect_error(ws, 'too_large', 'fragmented binary over the limit')
    still_usable(ws, 'after oversized messages')

    # 5. images that lie or break
    sof = b'\xff\xd8\xff\xc0\x00\x11\x08' + struct.pack('!HH', 60000, 60000) + b'\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01'
    ws.send_binary(sof + b'\0' * 100)
    expect_error(ws, 'too_large', 'JPEG header claiming 60000x60000')
    png = wsclient.png_bytes(8, 8)
    huge_png = png[:16] + struct.pack('!II', 100000, 100000) + png[24:]
    ws.send_binary(huge_png)
    expect_error(ws, 'too_large', 'PNG header claiming 100000x100000')
    ws.send_binary(b'\xff\xd8\xff\xe0\x00\x02')
    expect_error(ws, 'bad_frame', 'JPEG without SOF')
    ws.send_binary(jpeg[:len(jpeg) // 3])
    expect_error(ws, 'bad_frame', 'truncated JPEG')
    corrupt = bytearray(jpeg)
    for _ in range(40):
        corrupt[rng.randrange(200, len(corrupt))] = rng.getrandbits(8)
    ws.send_binary(bytes(corrupt))  # may decode (to garbage) or fail: either way no crash
    ws.send_binary(png[:30])
    expect_error(ws, 'bad_frame', 'truncated PNG')
    still_usable(ws, 'after broken images')
    ws.send_binary(jpeg)
    out = ws.recv_binary(timeout=20)
    check(out[:3] == b'\xff\xd8\xff', 'a good frame after the broken ones gives an output frame')
    ws.close()
    server_alive(port, 'after application-level fuzzing')

    # 6. WebSocket protocol violations: the server may close that connection, nothing else
    violations = [
        ('unmasked frame', lambda w: w.send_frame(0x1, b'{"type":"ping"}', mask=False)),
        ('reserved opcode 3', lambda w: w.send_frame(0x3, b'abc')),
        ('RSV bits without extension', lambda w: w.send_frame(0x1, b'{}', rsv=7)),
        ('ping longer than 125 bytes', lambda w: w.send_frame(0x9, b'p' * 200)),
        ('fragmented ping', lambda w: w.send_frame(0x9, b'p', fin=False)),
        ('continuation without start', lambda w: w.send_frame(0x0, b'abc')),
        ('new message inside a fragmented one', lambda w: (w.send_frame(0x1, b'{"ty', fin=False),
                                                            w.send_frame(0x1, b'pe"}'))),
        ('length 2^63', lambda w: w.send_raw(b'\x82\xff' + struct.pack('!Q', 1 << 63) + b'abcd')),
        ('random bytes on the socket', lambda w: w.send_raw(bytes(rng.getrandbits(8) for _ in range(3000)))),
        ('close with a bad code', lambda w: w.send_frame(0x8, struct.pack('!H', 999))),
    ]
    for name, act in violations:
        try:
            w, _ = connect(port)
            act(w)
            try:  # read until the server closes or 1 s passes
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    w.recv(timeout=max(0.01, end - time.monotonic()))
            except (wsclient.Closed, TimeoutError, OSError, UnicodeDecodeError, ValueError):
                pass
            w.close()
        except Exception as e:  # noqa: BLE001
            check(False, 'protocol violation %r: %s: %s' % (name, type(e).__name__, e))
        server_alive(port, 'after %s' % name)
    # pings inside a fragmented message are legal
    w, _ = connect(port)
    w.send_frame(0x1, b'{"type":', fin=False)
    w.send_frame(0x9, b'hi')
    w.send_frame(0x0, b'"ping","id":5}', fin=True)
    check(w.recv_json(want='pong', timeout=10).get('id') == 5, 'fragmented message with a ping in between')
    w.close()

    # 7. broken handshakes and wrong paths
    def raw_http(data, read=True):
        s = socket.create_connection((HOST, port), timeout=5)
        try:
            s.sendall(data)
            if read:
                try:
                    return s.recv(4096)
                except (socket.timeout, OSError):
                    return b''
        finally:
            s.close()
        return b''
    raw_http(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + os.urandom(200))  # a TLS hello
    raw_http(os.urandom(5000))
    raw_http(b'GET / HTTP/1.1\r\nHost: x\r\n' + b'X-Big: ' + b'a' * 20000 + b'\r\n\r\n')
    raw_http(b'GET /' + b'a' * 10000 + b' HTTP/1.1\r\nHost: x\r\n\r\n')
    raw_http(b'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
    raw_http(b'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
             b'Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 99\r\n\r\n')
    raw_http(b'POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello')
    raw_http(b'GET / HTTP/1.1\r\n', read=False)  # and hang up mid-request
    for path in ['/wsx', '/ws/', '/', '/health']:
        try:
            wsclient.WS(HOST, port, path=path, timeout=5).close()
            check(False, 'a WebSocket on %s was accepted' % path)
        except (wsclient.HandshakeError, OSError):
            pass
    try:
        wsclient.WS(HOST, port, headers={'Origin': 'http://evil.example'}, timeout=5).close()
        check(False, 'a WebSocket from a foreign Origin was accepted')
    except (wsclient.HandshakeError, OSError):
        pass
    for path in ['/../../etc/passwd', '/%2e%2e/x', '/.hidden', '/nope.js']:
        status, _, _ = wsclient.http_get(HOST, port, path)
        check(status in (400, 403, 404), 'GET %s answered %d' % (path, status))
    status, hdrs, _ = wsclient.http_get(HOST, port, '/')
    check(status == 200 and hdrs.get('content-type', '').startswith('text/html'), 'GET / serves the page')
    server_alive(port, 'after broken handshakes')

    # 8. more connections than --max-clients: the extra ones are refused, the rest queue or stream
    conns, refused, states = [], 0, []
    for _ in range(a.max_clients + 3):
        try:
            w, h = connect(port)
            conns.append(w)
            states.append(h['state'])
        except (wsclient.HandshakeError, OSError, wsclient.Closed):
            refused += 1
    check(len(conns) == a.max_clients and refused == 3,
          'max clients: %d connected, %d refused (limit %d)' % (len(conns), refused, a.max_clients))
    check('queued' in states or a.max_clients <= hello['max_sessions'], 'clients past max_sessions are queued')
    for w in conns:
        w.close()
    time.sleep(0.3)
    server_alive(port, 'after too many connections')

    # 9. churn: clients that leave while the engine works for them (new stream, frame in flight)
    for i in range(40):
        try:
            w, _ = connect(port)
            w.send_json({'type': 'config', 'seed': i, 'mode': 'txt2img' if i % 3 == 0 else 'img2img'})
            w.send_binary(jpeg)
            if i % 2:
                time.sleep(0.005 * (i % 5))
            w.sock.close()  # no close handshake
        except (wsclient.HandshakeError, OSError, wsclient.Closed):
            pass  # the previous ones may still hold the slots for a moment
    time.sleep(0.5)
    server_alive(port, 'after connection churn')

    # a normal client still streams
    ws, h = connect(port)
    check(h['state'] == 'active', 'a new client after everything is served')
    ws.send_binary(jpeg)
    check(ws.recv_binary(timeout=20)[:3] == b'\xff\xd8\xff', 'a new client after everything gets output')
    ws.close()
    status, _, body = wsclient.http_get(HOST, port, '/metrics')
    bad = [line for line in body.decode().splitlines() if line.startswith('streamdiff_bad_messages_total')]
    check(status == 200 and bad and float(bad[0].split()[1]) > 100, 'metrics count the bad messages: %s' % bad)

    print('fuzz: %d checks, %d failed, %.1f s' % (checks, len(failures), time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
