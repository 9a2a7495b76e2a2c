"""A screenshot of a running `wavegen serve` page while it plays (how docs/serve.png was made).

    python3 recipes/stream/screenshot.py http://127.0.0.1:8000/ docs/serve.png [--seconds 12]

Drives Debian's headless Chromium (/usr/bin/chromium) with Playwright, as the browser test
does: opens the page, presses Listen, waits, and saves the page as a PNG.
"""

from __future__ import annotations

import argparse
import time

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long it plays before the picture")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1040, "height": 860})
        page.goto(args.url)
        page.click("#play")
        page.wait_for_function("document.getElementById('audio').currentTime > 0.5", timeout=60000)
        time.sleep(args.seconds)
        page.screenshot(path=args.out)
        browser.close()


if __name__ == "__main__":
    main()
