"""Shared by the page tests (lora_page.py, controlnet_page.py): headless Chromium through Playwright, the page
opened on the test pattern with its script errors collected."""
import os

CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser']


def find(name):
    """(chromium path, sync_playwright), or None after printing the skip line of test `name`."""
    chromium = os.environ.get('SD_CHROMIUM') or next((c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), None)
    if not chromium:
        print('%s: SKIP: no Chromium' % name)
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print('%s: SKIP: no Playwright' % name)
        return None
    return chromium, sync_playwright


def open_page(p, chromium, url, errors):
    """(browser, page) with `url`?source=pattern loaded; page errors and console errors go to `errors`."""
    browser = p.chromium.launch(executable_path=chromium, headless=True,
                                args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
    ctx = browser.new_context(viewport={'width': 1280, 'height': 900}, bypass_csp=True)
    page = ctx.new_page()
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.goto(url + '?source=pattern', wait_until='load')
    return browser, page
