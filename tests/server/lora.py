"""LoRA scales changed live over the WebSocket (`{"type":"lora"}`), against two
servers on loopback: A started with two LoRAs (--lora), B without any. The
streams use one denoising step and cfg_type none, so an output frame depends
only on its input frame and the weights: then A with every scale 0 must send
exactly B's frames, and A back at its start scales exactly its first frames.
Also: the hello/lora/stats/config messages carry the scales, every client of A
learns a change, bad messages get the right error codes, a queued client may
not change the scales, and a LoRA file that vanished gives an engine error
that keeps the scales in force.

    python3 lora.py --port-a A --port-b B --names style.safetensors,lcm.safetensors --scales 0.8,1 \
        [--vanish FILE_OF_LORA_1]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

HOST = '127.0.0.1'
failures = []


def check(cond, what):
    print('lora: %s: %s' % ('ok' if cond else 'FAIL', what))
    if not cond:
        failures.append(what)


class Client:
    def __init__(self, port):
        self.ws = wsclient.WS(HOST, port, timeout=20)
        self.hello = self.ws.recv_json(want='hello', timeout=20)
        self.texts = []

    def on_text(self, msg):
        self.texts.append(msg)
        if msg.get('type') == 'error':
            check(False, 'unexpected error message %s' % msg)

    def configure(self):
        self.ws.send_json({'type': 'config', 'mode': 'img2img', 'cfg_type': 'none', 't_index_list': [25],
                           'guidance_scale': 1.0, 'similarity_threshold': 0, 'jpeg_quality': 95})
        while True:
            m = self.ws.recv_json(want='config', timeout=30)
            if m['config']['cfg_type'] == 'none' and m['config']['t_index_list'] == [25]:
                return m

    def run(self, frames):
        out = []
        for f in frames:
            self.ws.send_binary(f)
            out.append(self.ws.recv_binary(timeout=30, on_text=self.on_text))
        return out

    def lora(self, scales, want):
        """Sends a lora message; returns the server's "lora" answer (after the apply)."""
        self.ws.send_json({'type': 'lora', 'scales': scales})
        m = self.ws.recv_json(want='lora', timeout=30)
        got = [x['scale'] for x in m['loras']]
        check(m.get('ok') is True and close(got, want), 'lora %s applied: scales %s (%.1f ms)'
              % (scales, got, m.get('apply_ms', -1)))
        return m

    def error(self, msg, code):
        self.ws.send_json(msg)
        e = self.ws.recv_json(want='error', timeout=10)
        check(e.get('code') == code, '%s -> error %s (%s)' % (msg, e.get('code'), e.get('message')))
        return e


def close(a, b):
    return len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port-a', type=int, required=True)
    ap.add_argument('--port-b', type=int, required=True)
    ap.add_argument('--names', required=True)
    ap.add_argument('--scales', required=True)
    ap.add_argument('--vanish', help='the file of the first LoRA: deleted to make an apply fail')
    a = ap.parse_args()
    names = a.names.split(',')
    start = [float(x) for x in a.scales.split(',')]
    frames = [wsclient.png_bytes(64, 64, seed) for seed in (0, 37, 90)]

    A = Client(a.port_a)
    B = Client(a.port_b)
    hl = A.hello.get('loras')
    check(isinstance(hl, list) and [x['name'] for x in hl] == names and close([x['scale'] for x in hl], start),
          'hello of A lists the LoRAs with their scales: %s' % hl)
    check(B.hello.get('loras') == [], 'hello of B lists no LoRAs')
    cfg = A.configure()
    check(close(cfg.get('lora_scales', []), start), 'the config echo carries the scales: %s' % cfg.get('lora_scales'))
    B.configure()

    a1 = A.run(frames)
    check(A.run(frames) == a1, 'A is deterministic (same inputs, same output frames)')
    b0 = B.run(frames)
    check(B.run(frames) == b0, 'B is deterministic')
    check(all(x != y for x, y in zip(a1, b0)), 'the LoRAs change the output (A != B on every frame)')

    # a second served client watches, a third waits in the queue (--max-sessions 2)
    W = Client(a.port_a)
    Q = Client(a.port_a)
    check(W.hello.get('state') == 'active' and Q.hello.get('state') == 'queued',
          'a second client is served, a third queued (%s, %s)' % (W.hello.get('state'), Q.hello.get('state')))

    zero = [0.0] * len(names)
    A.lora(zero, zero)
    w = W.ws.recv_json(want='lora', timeout=10)
    check(close([x['scale'] for x in w['loras']], zero), 'the other client learns the new scales too')
    a0 = A.run(frames)
    check(a0 == b0, 'every scale 0: A sends exactly the frames of the server without LoRAs')

    # by name: only the first LoRA on
    half = [start[0]] + [0.0] * (len(names) - 1)
    A.lora({names[0]: start[0]}, half)
    ah = A.run(frames)
    check(all(x != y for x, y in zip(ah, b0)) and (len(names) == 1 or ah != a1),
          'only %s at %g: different from no LoRA and from all LoRAs' % (names[0], start[0]))
    check(A.run(frames) == ah, 'deterministic at the partial scales')
    # the others back by name: the start scales again
    A.lora({n: s for n, s in zip(names[1:], start[1:])}, start)
    check(A.run(frames) == a1, 'back at the start scales: A sends its first frames again')
    check(A.run(frames[:1]) == a1[:1], 'and keeps doing so')

    # bad messages: the scales stay
    A.error({'type': 'lora', 'scales': [4.5] + start[1:]}, 'bad_value')
    A.error({'type': 'lora', 'scales': start + [1]}, 'bad_value')
    A.error({'type': 'lora', 'scales': {'no-such-lora.safetensors': 1}}, 'bad_value')
    A.error({'type': 'lora', 'scales': 'all'}, 'bad_type')
    A.error({'type': 'lora', 'scales': start, 'prompt': 'x'}, 'unknown_field')
    Q.error({'type': 'lora', 'scales': zero}, 'busy')
    B.error({'type': 'lora', 'scales': []}, 'bad_value')
    check(A.run(frames) == a1, 'after the rejected messages the output is unchanged')

    # stats carry the scales (about once a second while frames flow); only stats sent from now on
    # count: an earlier one may carry the partial scales of the steps above
    A.texts.clear()
    end = time.monotonic() + 3
    stats = None
    while time.monotonic() < end and stats is None:
        A.run(frames[:1])
        stats = next((m for m in A.texts if m.get('type') == 'stats'), None)
    check(stats is not None and close(stats.get('lora_scales', []), start),
          'stats carry the scales: %s' % (stats and stats.get('lora_scales')))

    if a.vanish:
        os.remove(a.vanish)
        A.ws.send_json({'type': 'lora', 'scales': zero})
        e = A.ws.recv_json(want='error', timeout=30)
        check(e.get('code') == 'engine' and os.path.basename(a.vanish) in e.get('message', ''),
              'a LoRA file that vanished: engine error (%s)' % e.get('message'))
        m = A.ws.recv_json(want='lora', timeout=10)
        got = [x['scale'] for x in m['loras']]
        check(m.get('ok') is False and close(got, start), 'the scales in force stay %s' % got)
        check(A.run(frames) == a1, 'and so does the output')

    for c in (A, B, W, Q):
        c.ws.close()
    print('lora: %d failed' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
