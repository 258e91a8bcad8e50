"""ControlNet settings changed live over the WebSocket (`{"type":"controlnet"}`), against two servers on
loopback: A started with the tiny ControlNet made from each client frame (--control NET:input), B without.
The streams use one denoising step and cfg_type none, so an output frame depends only on its input frame,
the weights and the control image: A at scale 0 must send exactly B's frames, A back at its start settings
exactly its first frames, and another preprocessor other frames. Also: hello/config carry the nets and the
settings, bad messages get the right error codes and change nothing, two clients of A batched in one UNet
call (stream group, --max-batch 2) each get what they get alone, and txt2img runs without the frame-made net.

    python3 controlnet.py --port-a A --port-b B --name controlnet-tiny-sd15
"""
import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

HOST = '127.0.0.1'
failures = []


def check(cond, what):
    print('controlnet: %s: %s' % ('ok' if cond else 'FAIL', what))
    if not cond:
        failures.append(what)


class Client:
    def __init__(self, port):
        self.ws = wsclient.WS(HOST, port, timeout=30)
        self.hello = self.ws.recv_json(want='hello', timeout=30)

    def on_text(self, msg):
        if msg.get('type') == 'error':
            check(False, 'unexpected error message %s' % msg)

    def configure(self, **extra):
        msg = {'type': 'config', 'mode': 'img2img', 'cfg_type': 'none', 't_index_list': [25],
               'guidance_scale': 1.0, 'similarity_threshold': 0, 'jpeg_quality': 95}
        msg.update(extra)
        self.ws.send_json(msg)
        while True:
            m = self.ws.recv_json(want='config', timeout=60)
            if m['config']['cfg_type'] == 'none' and all(m['config'].get(k) == v for k, v in extra.items()):
                return m

    def fresh(self, seed, frames):
        """A new stream (another seed, then `seed`), then `frames` through it."""
        self.configure(seed=seed + 1000)
        self.configure(seed=seed)
        return self.run(frames)

    def run(self, frames):
        out = []
        for f in frames:
            self.ws.send_binary(f)
            out.append(self.ws.recv_binary(timeout=60, on_text=self.on_text))
        return out

    def control(self, **fields):
        """Sends a controlnet message; returns the net's settings in the server's "config" answer."""
        self.ws.send_json(dict(type='controlnet', **fields))
        m = self.ws.recv_json(want='config', timeout=60)
        return m['config'].get('controlnets', [None])[fields.get('net', 0)]

    def error(self, msg, code):
        self.ws.send_json(msg)
        e = self.ws.recv_json(want='error', timeout=20)
        check(e.get('code') == code, '%s -> error %s (%s)' % (msg, e.get('code'), e.get('message')))
        return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port-a', type=int, required=True)
    ap.add_argument('--port-b', type=int, required=True)
    ap.add_argument('--name', required=True)
    a = ap.parse_args()
    frames = [wsclient.png_bytes(64, 64, seed) for seed in (0, 37, 90)]

    A = Client(a.port_a)
    B = Client(a.port_b)
    hc = A.hello.get('controlnets')
    check(hc == [{'name': a.name, 'from_frame': True}], 'hello of A lists the ControlNet: %s' % hc)
    check(B.hello.get('controlnets') == [], 'hello of B lists none')
    start = A.hello['config'].get('controlnets')
    check(isinstance(start, list) and len(start) == 1 and start[0]['scale'] == 1 and
          start[0]['preprocess'] == 'none', 'the config carries the start settings: %s' % start)
    check('controlnets' not in B.hello['config'], 'B\'s config has no controlnets')
    # The full VAE samples its latent with noise drawn per frame from the stream's generator: outputs are
    # compared between streams at the same frame count (fresh(): a new stream with that seed).
    a1 = A.fresh(7, frames)
    check(A.fresh(7, frames) == a1, 'A is deterministic (a fresh stream, the same frames)')
    b0 = B.fresh(7, frames)
    check(all(x != y for x, y in zip(a1, b0)), 'the ControlNet changes the output (A != B on every frame)')

    # live: after the first frame, scale 0: the next frames are exactly B's
    A.fresh(7, frames[:1])
    got = A.control(scale=0)
    check(got and got['scale'] == 0, 'scale 0 applied: %s' % got)
    check(A.run(frames[1:]) == b0[1:], 'scale 0 (live, between frames): A sends exactly the frames of the server '
          'without the net')
    got = A.control(net=0, scale=1)
    check(A.fresh(7, frames) == a1, 'scale 1 again: the first frames again')
    A.fresh(7, frames[:1])
    got = A.control(preprocess='canny', canny_low=20, canny_high=60)
    check(got and got['preprocess'] == 'canny' and got['canny_low'] == 20, 'canny applied: %s' % got)
    ac = A.run(frames[1:])
    check(all(x != y for x, y in zip(ac, a1[1:])), 'canny control images (live) change the output')
    check(A.fresh(7, frames)[1:] == ac, 'live canny equals canny from the start of a stream')
    A.control(preprocess='none')
    check(A.fresh(7, frames) == a1, 'preprocessor none again: the first frames again')

    A.error({'type': 'controlnet', 'scale': 11}, 'bad_value')
    A.error({'type': 'controlnet', 'scale': 'x'}, 'bad_type')
    A.error({'type': 'controlnet', 'net': 1, 'scale': 1}, 'bad_value')
    A.error({'type': 'controlnet', 'preprocess': 'sobel2'}, 'bad_value')
    A.error({'type': 'controlnet', 'preprocess': 'canny', 'canny_low': 300, 'canny_high': 200}, 'bad_value')
    A.error({'type': 'controlnet', 'canny_high': 5000}, 'bad_value')
    A.error({'type': 'controlnet', 'guidance_start': 0.8, 'guidance_end': 0.2}, 'bad_value')
    A.error({'type': 'controlnet', 'scale': 1, 'prompt': 'x'}, 'unknown_field')
    A.error({'type': 'controlnet', 'scale': [1]}, 'bad_type')
    B.error({'type': 'controlnet', 'scale': 1}, 'bad_value')
    check(A.fresh(7, frames) == a1, 'after the rejected messages the output is unchanged')

    # a second client at its own scale: alone first, then both at once (batched when their frames meet)
    A2 = Client(a.port_a)
    A2.control(scale=0.5)
    many = frames * 3
    a2 = A2.fresh(7, many)
    ref = A.fresh(7, many)
    check(all(x != y for x, y in zip(a2, ref)) and all(x != y for x, y in zip(a2[:3], b0)),
          'the second client at scale 0.5 gets its own frames')
    A.fresh(7, [])
    A2.fresh(7, [])
    res = {}

    def both(c, key):
        res[key] = c.run(many)
    ts = [threading.Thread(target=both, args=(c, k)) for c, k in ((A, 'a'), (A2, 'a2'))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(res.get('a') == ref and res.get('a2') == a2,
          'two clients at once (one stream group): each gets exactly its frames alone')

    # txt2img: the frame-made net is left out (no frames), and frames come
    A.configure(mode='txt2img')
    A.ws.recv_binary(timeout=60, on_text=A.on_text)
    check(True, 'txt2img runs without the frame-made net')
    A.configure(mode='img2img')
    check(A.fresh(7, frames) == a1, 'back to img2img: the first frames again')

    for c in (A, A2, B):
        c.ws.close()
    print('controlnet: %d failed' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
