"""Load test of `streamdiff serve` on loopback: N WebSocket clients stream
img2img frames for a fixed time (closed loop: one frame in flight each), one
extra client (so the server needs --max-sessions N+1) floods frames and
never reads: it must not make the server's memory grow. Reports fps, latency percentiles, fairness and the server's
RSS; exits non-zero on a crash, an error, starvation or memory growth.

    python3 load.py --port P --pid SERVER_PID [--clients 4] [--seconds 10]
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

HOST = '127.0.0.1'


def rss_kib(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(xs, q):
    if not xs:
        return float('nan')
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


class Client(threading.Thread):
    def __init__(self, idx, port, seconds, start_evt):
        super().__init__(daemon=True)
        self.idx, self.port, self.seconds, self.start_evt = idx, port, seconds, start_evt
        self.lat, self.frames, self.errors, self.fail = [], 0, [], None
        self.jpeg = None
        self.ready = threading.Event()

    def on_text(self, msg):
        if msg.get('type') == 'error':
            self.errors.append(msg)

    def run(self):
        try:
            ws = wsclient.WS(HOST, self.port, timeout=20)
            hello = ws.recv_json(want='hello', timeout=20)
            if hello.get('state') != 'active':
                raise RuntimeError('client %d not served: %s' % (self.idx, hello.get('state')))
            # one txt2img frame from the server is our JPEG input
            ws.send_json({'type': 'config', 'mode': 'txt2img', 'seed': 100 + self.idx})
            self.jpeg = ws.recv_binary(timeout=30, on_text=self.on_text)
            ws.send_json({'type': 'config', 'mode': 'img2img'})
            self.ready.set()
            self.start_evt.wait()
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                t = time.monotonic()
                ws.send_binary(self.jpeg)
                ws.recv_binary(timeout=20, on_text=self.on_text)
                self.lat.append((time.monotonic() - t) * 1e3)
                self.frames += 1
            ws.close()
        except Exception as e:  # noqa: BLE001 - reported below
            self.fail = '%s: %s' % (type(e).__name__, e)
            self.ready.set()


class Flooder(threading.Thread):
    """Sends frames as fast as the socket takes them and never reads."""

    def __init__(self, port, jpeg, stop):
        super().__init__(daemon=True)
        self.port, self.jpeg, self.stop, self.sent, self.fail = port, jpeg, stop, 0, None
        self.state = None

    def run(self):
        try:
            ws = wsclient.WS(HOST, self.port, timeout=5)
            self.state = ws.recv_json(want='hello', timeout=10).get('state')
            ws.sock.setsockopt(wsclient.socket.SOL_SOCKET, wsclient.socket.SO_RCVBUF, 4096)
            while not self.stop.is_set():
                try:
                    ws.send_binary(self.jpeg)
                    self.sent += 1
                except (TimeoutError, OSError):  # the server stopped reading us: fine
                    time.sleep(0.05)
                if self.sent % 20 == 0:
                    time.sleep(0.005)
            ws.sock.close()
        except Exception as e:  # noqa: BLE001
            self.fail = '%s: %s' % (type(e).__name__, e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--pid', type=int, required=True)
    ap.add_argument('--clients', type=int, default=4)
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--json', help='write the results here')
    ap.add_argument('--max-growth-mib', type=float, default=24)
    a = ap.parse_args()

    start = threading.Event()
    clients = [Client(i, a.port, a.seconds, start) for i in range(a.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.ready.wait(60)
    fails = [c.fail for c in clients if c.fail]
    if fails:
        print('load: FAIL: ' + '; '.join(fails))
        return 1
    stop = threading.Event()
    flood = Flooder(a.port, clients[0].jpeg, stop)
    rss = []
    t0 = time.monotonic()
    start.set()
    flood.start()
    while any(c.is_alive() for c in clients):
        r = rss_kib(a.pid)
        if r is None:
            print('load: FAIL: the server process %d is gone' % a.pid)
            return 1
        rss.append((time.monotonic() - t0, r))
        time.sleep(0.25)
    stop.set()
    flood.join(5)
    for c in clients:
        c.join()
    elapsed = time.monotonic() - t0

    status, _, body = wsclient.http_get(HOST, a.port, '/metrics')
    metrics = {}
    for line in body.decode().splitlines():
        if line and not line.startswith('#') and ' ' in line:
            k, v = line.rsplit(' ', 1)
            metrics[k] = float(v)
    lat = [x for c in clients for x in c.lat]
    per = [c.frames / a.seconds for c in clients]
    half = [r for t, r in rss if t <= elapsed / 2]
    late = [r for t, r in rss if t > elapsed / 2]
    res = {
        'clients': a.clients, 'seconds': a.seconds,
        'fps_total': round(sum(per), 2), 'fps_per_client': [round(x, 2) for x in per],
        'fairness_min_over_max': round(min(per) / max(per), 3) if max(per) > 0 else 0,
        'latency_ms': {'p50': round(percentile(lat, 50), 1), 'p90': round(percentile(lat, 90), 1),
                       'p99': round(percentile(lat, 99), 1), 'max': round(max(lat), 1) if lat else None},
        'server_rss_mib': {'start': round(rss[0][1] / 1024, 1), 'end': round(rss[-1][1] / 1024, 1),
                           'max_first_half': round(max(half) / 1024, 1) if half else None,
                           'max_second_half': round(max(late) / 1024, 1) if late else None},
        'flooder_state': flood.state, 'flooder_frames_sent': flood.sent,
        'server_frames_dropped': metrics.get('streamdiff_frames_dropped_total'),
        'server_frames_out': metrics.get('streamdiff_frames_out_total'),
        'errors': sum(len(c.errors) for c in clients),
    }
    print('load: ' + json.dumps(res))
    print('load: %d clients x %.0f s: %.1f fps total (%s per client), latency p50 %.1f / p90 %.1f / p99 %.1f ms, '
          'server RSS %.1f -> %.1f MiB (flooder sent %d frames, server dropped %d)' % (
              a.clients, a.seconds, res['fps_total'], ', '.join('%.1f' % x for x in per),
              res['latency_ms']['p50'], res['latency_ms']['p90'], res['latency_ms']['p99'],
              res['server_rss_mib']['start'], res['server_rss_mib']['end'], flood.sent,
              res['server_frames_dropped'] or 0))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=1)
    bad = []
    fails = [c.fail for c in clients if c.fail]
    if fails:
        bad.append('client failures: ' + '; '.join(fails))
    if res['errors']:
        bad.append('error messages: %s' % [e for c in clients for e in c.errors][:3])
    if min(per) <= 0:
        bad.append('a client got no frames')
    elif res['fairness_min_over_max'] < 0.5:
        bad.append('unfair: per-client fps %s' % per)
    if half and late and max(late) - max(half) > a.max_growth_mib * 1024:
        bad.append('server RSS grew by %.1f MiB in the second half' % ((max(late) - max(half)) / 1024))
    if flood.fail:
        bad.append('flooder: ' + flood.fail)
    elif flood.state != 'active':
        bad.append('the flooding client was not served (start the server with --max-sessions %d)' % (a.clients + 1))
    if status != 200:
        bad.append('/metrics answered %d after the load' % status)
    if bad:
        print('load: FAIL: ' + ' | '.join(bad))
        return 1
    print('load: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
