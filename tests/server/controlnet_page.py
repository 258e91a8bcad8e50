"""The demo page's ControlNet controls in headless Chromium (Playwright): a server started with a ControlNet
made from the frames shows its group (name, scale slider, preprocessor); moving the scale slider and picking
a preprocessor send "controlnet" messages, and the server's "config" answer carries the new settings (the page
keeps them in window.streamdiff.controlnets); the canny thresholds show only for canny.

    python3 controlnet_page.py --url http://127.0.0.1:PORT/ --name controlnet-tiny-sd15
Exit 77 when Playwright or Chromium is missing.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pagetest  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True)
    ap.add_argument('--name', required=True)
    ap.add_argument('--timeout', type=float, default=30)
    a = ap.parse_args()
    found = pagetest.find('controlnet_page')
    if not found:
        return 77
    chromium, sync_playwright = found
    fails = []
    errors = []
    ms = int(a.timeout * 1000)

    def check(cond, what):
        print('controlnet_page: %s: %s' % ('ok' if cond else 'FAIL', what))
        if not cond:
            fails.append(what)

    with sync_playwright() as p:
        browser, page = pagetest.open_page(p, chromium, a.url, errors)
        page.wait_for_function('window.streamdiff && window.streamdiff.controlnets.length === 1', timeout=ms)
        check(page.is_visible('#controlnets'), 'the ControlNet group is shown')
        legend = page.text_content('#controlnets legend')
        check(a.name in legend, 'named after the net: %s' % legend)
        check(page.eval_on_selector('#controlnets input[type=range]', 'e => Number(e.value)') == 1,
              'the scale slider shows the start scale 1')
        check(not page.is_visible('#controlnets label:has-text("Canny low")'), 'no canny thresholds for "none"')
        page.eval_on_selector('#controlnets input[type=range]', "e => { e.value = '0.4'; "
                              "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }")
        page.wait_for_function('Math.abs(window.streamdiff.controlnets[0].scale - 0.4) < 1e-6', timeout=ms)
        check(True, 'moving the slider to 0.4: the server applied scale 0.4')
        page.select_option('#controlnets select', 'canny')
        page.wait_for_function("window.streamdiff.controlnets[0].preprocess === 'canny'", timeout=ms)
        check(True, 'picking canny: the server applied it')
        check(page.is_visible('#controlnets label:has-text("Canny low")'), 'the canny thresholds are shown')
        page.eval_on_selector('#controlnets label:has-text("Canny high") input', "e => { e.value = '50'; "
                              "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); }")
        page.wait_for_function('window.streamdiff.controlnets[0].canny_high === 50', timeout=ms)
        s = page.evaluate('window.streamdiff.controlnets[0]')
        check(s['canny_high'] == 50 and s['canny_low'] <= 50, 'canny high 50 (low kept below): %s' % s)
        page.wait_for_function('window.streamdiff.framesOut > 2', timeout=ms)
        check(True, 'output frames arrive')
        check(not errors, 'no script errors on the page %s' % errors[:3])
        browser.close()
    print('controlnet_page: %d failed' % len(fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
