"""The demo page's LoRA sliders in headless Chromium (Playwright): a server
started with LoRAs shows one slider per LoRA with its name and scale; moving
one sends a "lora" message, and the server's answer (also seen by a second
WebSocket client) carries the new scale; the scale is put back at the end.

    python3 lora_page.py --url http://127.0.0.1:PORT/ --port PORT --names a,b --scales 0.8,1
Exit 77 when Playwright or Chromium is missing.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pagetest  # noqa: E402
import wsclient  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True)
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--names', required=True)
    ap.add_argument('--scales', required=True)
    ap.add_argument('--timeout', type=float, default=30)
    a = ap.parse_args()
    names = a.names.split(',')
    start = [float(x) for x in a.scales.split(',')]
    found = pagetest.find('lora_page')
    if not found:
        return 77
    chromium, sync_playwright = found
    fails = []
    errors = []
    ms = int(a.timeout * 1000)

    def check(cond, what):
        print('lora_page: %s: %s' % ('ok' if cond else 'FAIL', what))
        if not cond:
            fails.append(what)

    watcher = wsclient.WS('127.0.0.1', a.port, timeout=20)
    watcher.recv_json(want='hello', timeout=20)
    with sync_playwright() as p:
        browser, page = pagetest.open_page(p, chromium, a.url, errors)
        page.wait_for_function('window.streamdiff && window.streamdiff.loras.length === %d' % len(names), timeout=ms)
        check(page.is_visible('#loras'), 'the LoRA group is shown')
        labels = page.eval_on_selector_all('#loras label', 'ls => ls.map(l => l.textContent)')
        values = page.eval_on_selector_all('#loras input', 'is => is.map(i => Number(i.value))')
        check(len(labels) == len(names) and all(n in t for n, t in zip(names, labels)),
              'one slider per LoRA, named: %s' % labels)
        check(all(abs(v - s) < 1e-6 for v, s in zip(values, start)), 'the sliders show the scales %s' % values)

        page.eval_on_selector('#loras input', "e => { e.value = '0'; e.dispatchEvent(new Event('input')); "
                                              "e.dispatchEvent(new Event('change')); }")
        page.wait_for_function('window.streamdiff.loras[0].scale === 0', timeout=ms)
        check(True, 'moving the first slider to 0 changes the server\'s scale')
        want = [0.0] + start[1:]
        got = None
        for _ in range(20):
            m = watcher.recv_json(want='lora', timeout=10)
            got = [x['scale'] for x in m['loras']]
            if all(abs(x - y) < 1e-6 for x, y in zip(got, want)):
                break
        check(got is not None and all(abs(x - y) < 1e-6 for x, y in zip(got, want)),
              'another client learns the scales %s' % got)
        page.eval_on_selector('#loras input', "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); "
                                              "e.dispatchEvent(new Event('change')); }", str(start[0]))
        page.wait_for_function('Math.abs(window.streamdiff.loras[0].scale - %r) < 1e-6' % start[0], timeout=ms)
        check(True, 'the slider puts the scale back to %g' % start[0])
        check(not errors, 'no script errors on the page %s' % errors[:3])
        browser.close()
    watcher.close()
    print('lora_page: %d failed' % len(fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
