"""End-to-end test of the demo page in headless Chromium (Debian's
/usr/bin/chromium) driven by Playwright, with a fake camera playing a small
.y4m clip this script writes. Checks: the page loads and says it runs on the
tiny model, the fake camera is picked, output frames arrive, they change when
the prompt changes, stats show, the snapshot button downloads a JPEG, the
txt2img switch works, and no script error happens. Saves a screenshot.

    python3 browser_e2e.py --url http://127.0.0.1:PORT/ --workdir DIR --screenshot OUT.png
Exit 77 when Playwright or Chromium is missing.
"""
import argparse
import os
import shutil
import sys
import time

CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser']


def write_y4m(path, w=160, h=120, frames=30):
    """A still scene (the same picture in every frame): a static input lets
    the stream settle, so an output change can only come from the prompt."""
    ys = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            v = 40 + (x * 150) // w
            if (x - w // 2) ** 2 + (y - h // 2) ** 2 < (h // 4) ** 2:
                v = 220
            ys[y * w + x] = v
    us = bytes([90 + (i % (w // 2)) // 2 for i in range((w // 2) * (h // 2))])
    vs = bytes([160] * ((w // 2) * (h // 2)))
    with open(path, 'wb') as f:
        f.write(b'YUV4MPEG2 W%d H%d F15:1 Ip A1:1 C420jpeg\n' % (w, h))
        for _ in range(frames):
            f.write(b'FRAME\n' + bytes(ys) + us + vs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True)
    ap.add_argument('--workdir', required=True)
    ap.add_argument('--screenshot', required=True)
    ap.add_argument('--timeout', type=float, default=60)
    a = ap.parse_args()

    chromium = os.environ.get('SD_CHROMIUM') or next((c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), None)
    if not chromium:
        print('browser_e2e: SKIP: no Chromium (apt-get install chromium, or run scripts/install-test-deps.sh)')
        return 77
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print('browser_e2e: SKIP: no Playwright (pip install playwright, or run scripts/install-test-deps.sh)')
        return 77

    os.makedirs(a.workdir, exist_ok=True)
    clip = os.path.join(a.workdir, 'fake-camera.y4m')
    write_y4m(clip)
    fails = []
    page_errors = []
    ms = int(a.timeout * 1000)

    def check(cond, what):
        print('browser_e2e: %s: %s' % ('ok' if cond else 'FAIL', what))
        if not cond:
            fails.append(what)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True,
            args=['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
                  '--use-file-for-fake-video-capture=' + clip, '--disable-gpu', '--disable-dev-shm-usage'])
        # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP forbids
        ctx = browser.new_context(viewport={'width': 1280, 'height': 860}, accept_downloads=True, bypass_csp=True)
        page = ctx.new_page()
        page.on('pageerror', lambda e: page_errors.append(str(e)))
        page.on('console', lambda m: page_errors.append(m.text) if m.type == 'error' else None)
        t0 = time.monotonic()
        page.goto(a.url, wait_until='load')
        state = 'window.streamdiff'
        page.wait_for_function('%s && %s.framesOut >= 5' % (state, state), timeout=ms)
        check(True, 'output frames arrive (%.1f s after load)' % (time.monotonic() - t0))
        check(page.evaluate('%s.source' % state) == 'camera', 'the fake camera is the input')
        labels = page.eval_on_selector_all('#camera option', 'os => os.map(o => o.textContent)')
        check(len(labels) >= 2, 'camera picker lists the camera and the test pattern: %s' % labels)
        notice = page.inner_text('#notice') if page.is_visible('#notice') else ''
        check('tiny test model' in notice and 'huggingface-cli download' in notice,
              'the page says it runs on the tiny model and how to get weights')

        def settle(label):
            """Waits until two consecutive new output frames are identical; returns that hash."""
            end = time.monotonic() + a.timeout
            last, n_last, same = None, -1, 0
            while time.monotonic() < end:
                n, h = page.evaluate('[%s.framesOut, %s.lastHash]' % (state, state))
                if n != n_last:
                    same = same + 1 if h == last else 0
                    last, n_last = h, n
                    if same >= 2:
                        return h
                time.sleep(0.02)
            check(False, '%s: the output did not settle' % label)
            return None

        before = settle('before the prompt change')
        page.fill('#prompt', 'a bright red sports car on a mountain road, dramatic light')
        page.wait_for_function("%s.applied && %s.applied.prompt.startsWith('a bright red')" % (state, state),
                               timeout=ms)
        n0 = page.evaluate('%s.framesOut' % state)
        page.wait_for_function('%s.framesOut >= %d' % (state, n0 + 3), timeout=ms)
        after = settle('after the prompt change')
        check(before is not None and after is not None and before != after,
              'output changes when the prompt changes (frame hash %s -> %s)' % (before, after))

        page.wait_for_function("document.getElementById('fps').textContent !== '–'", timeout=ms)
        fps = page.inner_text('#fps')
        lat = page.inner_text('#latency')
        check(float(fps) > 0, 'fps display shows %s, latency %s' % (fps, lat))

        with page.expect_download(timeout=ms) as dl:
            page.click('#snapshot')
        name = dl.value.suggested_filename
        path = os.path.join(a.workdir, name)
        dl.value.save_as(path)
        with open(path, 'rb') as f:
            head = f.read(3)
        check(name.endswith('.jpg') and head == b'\xff\xd8\xff', 'snapshot downloads a JPEG (%s)' % name)

        # live slider: guidance is applied without a new stream
        page.eval_on_selector('#guidance', "e => { e.value = '1.6'; e.dispatchEvent(new Event('input')); }")
        page.wait_for_function('%s.applied && Math.abs(%s.applied.guidance_scale - 1.6) < 1e-6' % (state, state),
                               timeout=ms)
        check(True, 'guidance slider applies live')

        page.check('input[name=mode][value=txt2img]')
        page.wait_for_function("%s.applied && %s.applied.mode === 'txt2img'" % (state, state), timeout=ms)
        n1 = page.evaluate('%s.framesOut' % state)
        page.wait_for_function('%s.framesOut >= %d' % (state, n1 + 5), timeout=ms)
        check(True, 'txt2img mode streams frames')
        page.check('input[name=mode][value=img2img]')
        page.fill('#prompt', 'a watercolor painting of a lighthouse at dusk')
        page.wait_for_function("%s.applied && %s.applied.mode === 'img2img'" % (state, state), timeout=ms)
        n2 = page.evaluate('%s.framesOut' % state)
        page.wait_for_function('%s.framesOut >= %d' % (state, n2 + 5), timeout=ms)
        time.sleep(1.2)  # let a stats message arrive for the picture
        page.screenshot(path=a.screenshot, full_page=True)
        check(os.path.getsize(a.screenshot) > 10000, 'screenshot saved to %s' % a.screenshot)
        errs = [e for e in page_errors if 'favicon' not in e]
        check(not errs, 'no script errors on the page %s' % errs[:3])
        stats = page.evaluate('%s.stats' % state)
        print('browser_e2e: page stats: %s' % stats)
        browser.close()
    shutil.rmtree(a.workdir, ignore_errors=True)
    print('browser_e2e: %d failed' % len(fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
