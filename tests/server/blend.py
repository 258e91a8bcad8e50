"""Prompt and seed blending over the WebSocket ("prompts", "seeds" in "config"; docs/protocol.md) on one server.
The stream takes one denoising step with cfg_type none, so an output frame depends only on its input frame, the
initial noise and the prompt embedding: a blend at t = 0 / t = 1 must give exactly the frames of its first / second
prompt, a seed blend at t = 0 those of its first seed; a half blend differs from both; weight changes apply live
(no new stream); bad lists are errors that change nothing.

    python3 blend.py --port P
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

failures = []


def check(cond, what):
    print('blend: %s: %s' % ('ok' if cond else 'FAIL', what))
    if not cond:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    a = ap.parse_args()
    ws = wsclient.WS('127.0.0.1', a.port, timeout=20)
    ws.recv_json(want='hello', timeout=20)
    frames = [wsclient.png_bytes(64, 64, s) for s in (3, 41)]

    def config(fields):
        ws.send_json(dict({'type': 'config'}, **fields))
        return ws.recv_json(want='config', timeout=30)

    def run():
        out = []
        for f in frames:
            ws.send_binary(f)
            out.append(ws.recv_binary(timeout=30))
        return out

    config({'mode': 'img2img', 'cfg_type': 'none', 't_index_list': [25], 'guidance_scale': 1.0,
            'similarity_threshold': 0, 'jpeg_quality': 95, 'seed': 5, 'prompt': 'a red fox'})
    fox = run()
    check(run() == fox, 'deterministic')
    config({'prompt': 'a castle'})
    castle = run()
    check(castle != fox, 'another prompt, other frames')

    m = config({'prompts': [{'prompt': 'a red fox', 'weight': 1}, {'prompt': 'a castle', 'weight': 0}],
                'prompt_blend': 'slerp'})
    check(m['recreated'] is False and len(m['config']['prompts']) == 2 and m['config']['prompt_blend'] == 'slerp',
          'a prompt list applies live, echoed in the config: %s' % m['config']['prompts'])
    check(run() == fox, 'slerp t = 0: the first prompt\'s frames')
    m = config({'prompts': [{'prompt': 'a red fox', 'weight': 0}, {'prompt': 'a castle', 'weight': 2}]})
    check(m['recreated'] is False, 'a weight change needs no new stream')
    check(run() == castle, 'slerp t = 1: the second prompt\'s frames')
    config({'prompts': [{'prompt': 'a red fox', 'weight': 1}, {'prompt': 'a castle', 'weight': 1}]})
    half = run()
    check(half != fox and half != castle, 'a half blend differs from both prompts')
    config({'prompt_blend': 'linear'})
    lin = run()
    check(lin != half, 'linear and slerp differ at t = 0.5')

    m = config({'seeds': [{'seed': 5, 'weight': 1}, {'seed': 6, 'weight': 0}], 'prompts': [], 'prompt': 'a red fox'})
    check(m['recreated'] is False and len(m['config']['seeds']) == 2, 'a seed list applies live')
    check(run() == fox, 'seed blend t = 0: the first seed\'s frames (and prompts [] = the single prompt)')
    config({'seeds': [{'seed': 5, 'weight': 1}, {'seed': 6, 'weight': 1}], 'seed_blend': 'slerp'})
    check(run() != fox, 'a half seed blend gives other frames')
    config({'seeds': []})
    check(run() == fox, 'seeds [] = back to "seed"')

    for msg, code in [({'type': 'config', 'prompts': [{'prompt': 'a', 'weight': 0}, {'prompt': 'b', 'weight': 0}]},
                       'bad_value'),
                      ({'type': 'config', 'seeds': [{'seed': 1, 'weight': -1}]}, 'bad_value'),
                      ({'type': 'config', 'prompts': 'a fox'}, 'bad_type'),
                      ({'type': 'config', 'prompt_blend': 'cubic'}, 'bad_value')]:
        ws.send_json(msg)
        e = ws.recv_json(want='error', timeout=10)
        check(e.get('code') == code, '%s -> %s (%s)' % (msg, e.get('code'), e.get('message')))
    check(run() == fox, 'the rejected messages changed nothing')
    ws.close()
    if failures:
        print('blend: %d failure(s)' % len(failures))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
