"""A small RFC 6455 WebSocket client on the Python standard library, for the
`streamdiff serve` tests (load test, fuzzing). It can also send malformed
frames on purpose (send_frame with odd flags, send_raw). Loopback only."""
import base64
import json
import os
import socket
import struct
import time


class Closed(Exception):
    pass


class HandshakeError(Exception):
    pass


def http_get(host, port, path, timeout=5.0, headers=None):
    """A minimal HTTP/1.1 GET: returns (status, headers dict, body bytes)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        extra = ''.join('%s: %s\r\n' % kv for kv in (headers or {}).items())
        s.sendall(('GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s\r\n' % (path, host, port, extra)).encode())
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b'\r\n\r\n')
            if sep:
                hdrs = parse_headers(head)
                n = int(hdrs.get('content-length', -1))
                if n >= 0 and len(body) >= n:
                    break
    finally:
        s.close()
    head, _, body = data.partition(b'\r\n\r\n')
    status = int(head.split(b' ', 2)[1]) if head.startswith(b'HTTP/') else 0
    return status, parse_headers(head), body


def parse_headers(head):
    out = {}
    for line in head.split(b'\r\n')[1:]:
        k, _, v = line.decode('latin-1').partition(':')
        out[k.strip().lower()] = v.strip()
    return out


class WS:
    def __init__(self, host, port, path='/ws', headers=None, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        key = base64.b64encode(os.urandom(16)).decode()
        extra = ''.join('%s: %s\r\n' % kv for kv in (headers or {}).items())
        req = ('GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n') % (path, host, port, key, extra)
        self.sock.sendall(req.encode())
        while b'\r\n\r\n' not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise HandshakeError('connection closed during the handshake')
            self.buf += chunk
            if len(self.buf) > 65536:
                raise HandshakeError('handshake response too long')
        head, _, self.buf = self.buf.partition(b'\r\n\r\n')
        if not head.startswith(b'HTTP/1.1 101'):
            raise HandshakeError(head.split(b'\r\n')[0].decode('latin-1'))
        self.closed = False

    # ------------------------------------------------------------ sending
    def send_frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack('!BB', b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack('!BBH', b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack('!BBQ', b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            payload = xor_mask(payload, key)
            hdr += key
        self.sock.sendall(hdr + payload)

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_text(self, s):
        self.send_frame(0x1, s.encode('utf-8') if isinstance(s, str) else s)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_binary(self, b):
        self.send_frame(0x2, b)

    def close(self):
        if not self.closed:
            try:
                self.send_frame(0x8, struct.pack('!H', 1000))
            except OSError:
                pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ receiving
    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no data in time')
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise TimeoutError('no data in time')
            if not chunk:
                self.closed = True
                raise Closed('connection closed by the server')
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self, deadline):
        b0, b1 = self._read(2, deadline)
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack('!H', self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack('!Q', self._read(8, deadline))[0]
        key = self._read(4, deadline) if b1 & 0x80 else None
        payload = self._read(n, deadline) if n else b''
        if key:
            payload = xor_mask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0f, payload

    def recv(self, timeout=10.0):
        """Next message: ('text', str) or ('binary', bytes). Raises Closed,
        TimeoutError. Answers pings."""
        deadline = time.monotonic() + timeout
        parts, kind = [], None
        while True:
            fin, op, payload = self._frame(deadline)
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                self.closed = True
                code = struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else None
                raise Closed('close frame (code %s)' % code)
            if op in (0x1, 0x2):
                kind = 'text' if op == 0x1 else 'binary'
                parts = [payload]
            elif op == 0x0:
                parts.append(payload)
            if fin and kind:
                data = b''.join(parts)
                return (kind, data.decode('utf-8')) if kind == 'text' else (kind, data)

    def recv_json(self, timeout=10.0, want=None):
        """Next JSON message (of type `want` if given), skipping binary frames
        and other types."""
        deadline = time.monotonic() + timeout
        while True:
            kind, data = self.recv(max(0.001, deadline - time.monotonic()))
            if kind != 'text':
                continue
            msg = json.loads(data)
            if want is None or msg.get('type') == want:
                return msg

    def recv_binary(self, timeout=10.0, on_text=None):
        deadline = time.monotonic() + timeout
        while True:
            kind, data = self.recv(max(0.001, deadline - time.monotonic()))
            if kind == 'binary':
                return data
            if on_text:
                on_text(json.loads(data))


def xor_mask(data, key):
    if not data:
        return b''
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, 'little') ^ int.from_bytes(k, 'little')).to_bytes(n, 'little')


def png_bytes(w, h, seed=0):
    """A valid RGB PNG made with zlib only (test input frames)."""
    import zlib
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            rows += bytes(((x * 4 + seed) & 255, (y * 4 + 2 * seed) & 255, ((x + y) * 2 + 3 * seed) & 255))

    def chunk(t, b):
        return struct.pack('!I', len(b)) + t + b + struct.pack('!I', zlib.crc32(t + b) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('!IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(bytes(rows))) + chunk(b'IEND', b''))
