"""OSC control of `streamdiff serve --osc-port` with a WebSocket client on loopback: an OSC prompt /
guidance / t-index reaches the connected client's settings (it gets a "config" message carrying them),
its frames then equal those of a client that asked for the same settings itself, a LoRA strength sent
over OSC is broadcast as a "lora" message, and a value the stream refuses (a t-index of more entries
than --max-steps) comes back as an error message while the settings stay.

    python3 osc.py --port P --osc-port O
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402

HOST = '127.0.0.1'
HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def check(cond, what):
    print('osc: %s: %s' % ('ok' if cond else 'FAIL', what))
    if not cond:
        failures.append(what)


def osc(port, *args):
    subprocess.run([sys.executable, os.path.join(HERE, '..', 'osc_send.py'), str(port)] + list(args), check=True)


def wait_type(ws, want, pred=lambda m: True, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = ws.recv_json(timeout=max(0.1, end - time.monotonic()))
        if m.get('type') == want and pred(m):
            return m
    raise TimeoutError('no %s message' % want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--osc-port', type=int, required=True)
    a = ap.parse_args()
    frame = wsclient.png_bytes(64, 64, seed=3)
    base = {'type': 'config', 'mode': 'img2img', 'cfg_type': 'none', 't_index_list': [25], 'guidance_scale': 1.0,
            'similarity_threshold': 0, 'jpeg_quality': 95, 'prompt': 'a cat'}

    A = wsclient.WS(HOST, a.port, timeout=20)
    A.recv_json(want='hello', timeout=20)
    A.send_json(base)
    wait_type(A, 'config', lambda m: m['config']['t_index_list'] == [25])

    # OSC: prompt + t-index in one bundle
    osc(a.osc_port, '--bundle', '/streamdiff/prompt', 's:a dog', '--', '/streamdiff/t_index', 'i:30')
    m = wait_type(A, 'config', lambda m: m['config']['prompt'] == 'a dog')
    check(m['config']['t_index_list'] == [30], 'the OSC t-index reached the client: %s' % m['config']['t_index_list'])
    A.send_binary(frame)
    got = A.recv_binary(timeout=30)

    # a client that asks for the same settings itself gets the same frame
    B = wsclient.WS(HOST, a.port, timeout=20)
    hello = B.recv_json(want='hello', timeout=20)
    check(hello.get('config', {}).get('prompt') == 'a dog', 'a client connecting later starts with the OSC prompt')
    B.send_json(dict(base, prompt='a dog', t_index_list=[30]))
    wait_type(B, 'config', lambda m: m['config']['t_index_list'] == [30] and m['config']['prompt'] == 'a dog')
    B.send_binary(frame)
    ref = B.recv_binary(timeout=30)
    check(got == ref, 'the frame after the OSC change equals a client that asked for it')

    # refused by the server's limit: an error message, the settings stay
    osc(a.osc_port, '/streamdiff/t_index', 'i:10', 'i:20', 'i:30', 'i:40', 'i:45')
    e = wait_type(A, 'error')
    check('t_index_list' in e.get('message', ''), 'too many t-index entries: error %s' % e)
    osc(a.osc_port, '/streamdiff/guidance', 'f:1.5')
    m = wait_type(A, 'config', lambda m: abs(m['config']['guidance_scale'] - 1.5) < 1e-6)
    check(m['config']['t_index_list'] == [30], 'after the refused t-index the settings stay')

    # a LoRA strength over OSC: broadcast like a "lora" message
    osc(a.osc_port, '/streamdiff/lora/0/scale', 'f:0.25')
    lm = wait_type(A, 'lora')
    check(abs(lm['loras'][0]['scale'] - 0.25) < 1e-6, 'LoRA 0 at 0.25 over OSC: %s' % lm['loras'])

    # blending over OSC (docs/osc.md): a prompt list, then weights alone; a zero-sum list is refused
    osc(a.osc_port, '--bundle', '/streamdiff/prompts', 's:a dog', 'f:1', 's:a castle', 'f:0', '--',
        '/streamdiff/seeds', 'i:5', 'f:1', 'i:6', 'f:1')
    m = wait_type(A, 'config', lambda m: len(m['config'].get('prompts', [])) == 2)
    check([p['prompt'] for p in m['config']['prompts']] == ['a dog', 'a castle'] and len(m['config']['seeds']) == 2,
          'the OSC prompt and seed lists reached the client: %s %s' % (m['config']['prompts'], m['config']['seeds']))
    osc(a.osc_port, '/streamdiff/prompt_weights', 'f:0.25', 'f:0.75')
    m = wait_type(A, 'config', lambda m: m['config']['prompts'] and m['config']['prompts'][1]['weight'] == 0.75)
    check(m['config']['prompts'][0]['weight'] == 0.25, 'OSC prompt weights alone re-weight the list')
    osc(a.osc_port, '/streamdiff/prompt_weights', 'f:0', 'f:0')
    e = wait_type(A, 'error')
    check('weights sum to 0' in e.get('message', ''), 'zero-sum OSC weights: error %s' % e)
    osc(a.osc_port, '/streamdiff/prompt', 's:a dog')
    m = wait_type(A, 'config', lambda m: m['config'].get('prompts') == [])
    check(m['config']['prompt'] == 'a dog', 'an OSC prompt replaces the list')
    A.close()
    B.close()
    if failures:
        print('osc: %d failed' % len(failures))
        sys.exit(1)
    print('osc: all ok')


if __name__ == '__main__':
    main()
