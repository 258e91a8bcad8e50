"""Cross-session batching in `streamdiff serve`: several clients with
different prompts, seeds, cfg types, t_index_lists, sizes and modes (img2img
and txt2img) stream in lock step; every client's output frames are recorded
(SHA-256 of each JPEG). Run once against a server with --max-batch 1 (every
frame alone) and once with batching; `--compare A B` then checks that every
client got byte-identical frames both times and that the batched run really
batched (engine_frames_total > engine_calls_total in /metrics). `--fps-caps` checks per-client frame-rate
caps (the config field max_fps)."""
import argparse
import hashlib
import json
import sys
import threading
import time

import wsclient

HOST = '127.0.0.1'

# Per client: settings (what differs between sessions) and whether it sends frames.
CLIENTS = [
    {'prompt': 'a red fox in the snow', 'seed': 11, 'cfg_type': 'self', 't_index_list': [32, 45]},
    {'prompt': 'a lighthouse at dusk', 'seed': 12, 'cfg_type': 'none', 't_index_list': [20]},
    {'prompt': 'mountains at dawn', 'negative_prompt': 'blurry', 'seed': 13, 'cfg_type': 'full',
     't_index_list': [10, 30, 45], 'guidance_scale': 1.5},
    {'prompt': 'a city at night', 'seed': 14, 'cfg_type': 'initialize', 't_index_list': [25, 40], 'mode': 'txt2img'},
    {'prompt': 'a small boat', 'seed': 15, 'cfg_type': 'self', 't_index_list': [30], 'width': 48, 'height': 48},
    {'prompt': 'a forest path', 'seed': 16, 'cfg_type': 'none', 't_index_list': [16, 45], 'width': 48, 'height': 48},
]


def metrics(port):
    status, _, body = wsclient.http_get(HOST, port, '/metrics')
    out = {}
    for line in body.decode().splitlines():
        if line.startswith('streamdiff_engine_'):
            k, v = line.split()
            out[k] = int(float(v))
    return out


def run(port, rounds):
    n = len(CLIENTS)
    conns, errors = [], []
    for i, cfg in enumerate(CLIENTS):
        ws = wsclient.WS(HOST, port, timeout=30)
        hello = ws.recv_json(want='hello', timeout=30)
        if hello.get('state') != 'active':
            raise RuntimeError('client %d is not served (%s): start the server with --max-sessions %d' %
                               (i, hello.get('state'), n))
        ws.send_json(dict({'type': 'config'}, **cfg))
        msg = ws.recv_json(want='config', timeout=60)
        if msg.get('reverted'):
            raise RuntimeError('client %d: settings refused: %s' % (i, msg))
        conns.append(ws)
    outs = [[] for _ in range(n)]
    barrier = threading.Barrier(n)

    def client(i):
        ws, cfg = conns[i], CLIENTS[i]
        w, h = cfg.get('width', 64), cfg.get('height', 64)
        try:
            for k in range(rounds):
                barrier.wait(timeout=120)  # every round starts together: the frames meet in the server
                if cfg.get('mode') != 'txt2img':
                    ws.send_binary(wsclient.png_bytes(w, h, k * 11 + i * 37))  # frame k of client i
                data = ws.recv_binary(timeout=120, on_text=lambda m: m.get('type') == 'error' and errors.append(m))
                outs[i].append(hashlib.sha256(data).hexdigest())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append({'client': i, 'exception': '%s: %s' % (type(e).__name__, e)})
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for ws in conns:
        ws.close()
    return {'outputs': outs, 'errors': errors, 'metrics': metrics(port)}


def fps_caps_once(port, seconds):
    """One measurement: a txt2img client asking for max_fps 4 and an uncapped one beside it (the server has
    --max-fps 0) count their frames for `seconds` from their first frame. Returns (capped, free, errors)."""
    counts, errors = {}, []

    def client(name, cap):
        ws = wsclient.WS(HOST, port, timeout=30)
        ws.recv_json(want='hello', timeout=30)
        cfg = {'type': 'config', 'mode': 'txt2img', 'prompt': name}
        if cap:
            cfg['max_fps'] = cap
        ws.send_json(cfg)
        ws.recv_json(want='config', timeout=60)
        n, end = 0, None
        while True:
            ws.recv_binary(timeout=30, on_text=lambda m: m.get('type') == 'error' and errors.append(m))
            now = time.monotonic()
            if end is None:
                end = now + seconds  # count from the first frame
                continue
            if now > end:
                break
            n += 1
        counts[name] = n
        ws.close()

    ts = [threading.Thread(target=client, args=a, daemon=True) for a in (('capped', FPS_CAP), ('free', 0))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    return counts.get('capped'), counts.get('free'), errors


FPS_CAP = 4


def fps_caps(port, seconds=2.5, tries=3):
    """Per-client frame-rate caps. The cap is an upper bound that load cannot break: more than
    FPS_CAP * seconds + 2 frames for the capped client fails at once. The lower bounds (the capped client
    gets at least FPS_CAP * seconds - 3 frames: it is not throttled below its cap; the uncapped one gets at
    least twice as many: the cap is per client) need the server to keep up, which a loaded 2-core machine
    may not do for a few seconds: a miss there is measured again (up to `tries` times, each window twice as
    long as the one before) and fails only when every try misses."""
    for attempt in range(tries):
        capped, free, errors = fps_caps_once(port, seconds)
        print('fps caps: capped client (max_fps %d) %s frames in %.1f s, uncapped %s' %
              (FPS_CAP, capped, seconds, free))
        if errors or capped is None or free is None:
            print('FAIL: fps caps (errors: %s)' % errors)
            return False
        if capped > FPS_CAP * seconds + 2:
            print('FAIL: the capped client got more than max_fps %d allows' % FPS_CAP)
            return False
        if capped >= FPS_CAP * seconds - 3 and free >= 2 * capped:
            return True
        print('  too few frames (a loaded machine?)%s' % ('; measuring again' if attempt + 1 < tries else ''))
        seconds *= 2
    print('FAIL: fps caps: too few frames in every try (capped client throttled below its cap, or the '
          'uncapped one capped too)')
    return False


def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    ok = True
    for name, r in (('alone', a), ('batched', b)):
        if r['errors']:
            print('%s run: errors: %s' % (name, r['errors']))
            ok = False
    for i, (oa, ob) in enumerate(zip(a['outputs'], b['outputs'])):
        same = oa == ob and len(oa) > 0
        print('client %d (%s): %d frames, %s' % (i, CLIENTS[i]['prompt'], len(ob),
                                                 'identical to running alone' if same else 'DIFFERENT'))
        ok = ok and same
    ma, mb = a['metrics'], b['metrics']
    calls_a, frames_a = ma.get('streamdiff_engine_calls_total', 0), ma.get('streamdiff_engine_frames_total', 0)
    calls_b, frames_b = mb.get('streamdiff_engine_calls_total', 0), mb.get('streamdiff_engine_frames_total', 0)
    print('alone:   %d frames in %d engine calls' % (frames_a, calls_a))
    print('batched: %d frames in %d engine calls (%.2f frames per call)' %
          (frames_b, calls_b, frames_b / max(calls_b, 1)))
    if calls_a != frames_a or frames_a == 0:
        print('FAIL: --max-batch 1 must run every frame alone')
        ok = False
    if not frames_b > calls_b:
        print('FAIL: the batched server never ran two frames in one call')
        ok = False
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int)
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--json')
    ap.add_argument('--compare', nargs=2)
    ap.add_argument('--fps-caps', action='store_true')
    a = ap.parse_args()
    if a.fps_caps:
        sys.exit(0 if fps_caps(a.port) else 1)
    if a.compare:
        sys.exit(0 if compare(*a.compare) else 1)
    r = run(a.port, a.rounds)
    with open(a.json, 'w') as f:
        json.dump(r, f)
    if r['errors']:
        print('errors: %s' % r['errors'])
        sys.exit(1)


if __name__ == '__main__':
    main()
