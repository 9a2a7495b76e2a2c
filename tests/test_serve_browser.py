"""The player page in a real browser: Debian's headless Chromium, driven by Playwright.

``bash recipes/setup.sh`` installs both (CI runs it first); where either is missing the test
is skipped with that advice. WAVEGEN_SCREENSHOT=path keeps a screenshot of the page.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from test_serve import Server, make_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# as root, on a machine without a display or a network beyond loopback
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

CANVAS = """() => {
  const c = document.getElementById('spectrogram');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, digest = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
    digest = (digest * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
  }
  return [lit / (d.length / 4), digest];
}"""


@pytest.fixture(scope="module")
def playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (bash recipes/setup.sh)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no chromium: apt-get install chromium (bash recipes/setup.sh does)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.mark.slow
def test_the_page_plays_the_stream_and_draws_a_live_spectrogram(playwright, tmp_path):
    model = make_model(tmp_path / "tiny")
    # a noisy model: guard events (and no pitch: --pitch-sync leaves its draws as they are; the page names it)
    server = Server(model, "--guard-seconds", "1", "--guard-attempts", "1", "--pitch-sync", "0.9")
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1040, "height": 860})
        server.wait_for(lambda s: s["position_seconds"] >= 5.0)  # a burst the browser can start on
        errors, failed = [], []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('f-model').textContent === 'tiny'")
        assert not failed  # nothing the page asks for is missing
        assert page.text_content("#f-preset") == "samplernn-tiny"
        assert page.text_content("#f-draws") == "pitch-synchronous (0.9)"
        assert page.evaluate(CANVAS)[0] == 0  # dark before playing

        page.click("#play")
        page.wait_for_function("document.getElementById('audio').currentTime > 0.5", timeout=30000)
        current = "document.getElementById('audio').currentTime"
        t1 = page.evaluate(current)
        lit1, digest1 = page.evaluate(CANVAS)
        time.sleep(1.5)
        t2 = page.evaluate(current)
        lit2, digest2 = page.evaluate(CANVAS)
        assert t2 - t1 > 1.0, (t1, t2)  # playing at about real time
        # drawn, and scrolling on: columns keep arriving (how many per second is the browser's frame rate)
        assert 0 < lit1 < lit2 and digest2 != digest1, (lit1, lit2)
        page.wait_for_function("document.getElementById('f-listeners').textContent === '1 of 100'")
        page.wait_for_function("document.getElementById('f-guard').textContent.includes('noise')")
        assert page.evaluate("document.getElementById('audio').error") is None and not errors
        shot = os.environ.get("WAVEGEN_SCREENSHOT") or str(tmp_path / "serve.png")
        page.screenshot(path=shot)

        page.click("#play")  # stop: the connection goes, the listener count follows
        server.wait_for(lambda s: s["listeners"] == 0, timeout=15)
        browser.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)


@pytest.mark.slow
def test_the_page_says_so_when_the_stream_stops(playwright, tmp_path):
    """The server stops while the page plays: the audio plays out what it holds and ends; the page
    goes back to Listen, its on-air light off, and says the stream stopped. (A burst of 2 s, not the
    6 s default: less to wait for, before and after the stop.)"""
    server = Server(make_model(tmp_path / "tiny"), "--no-guard", "--burst-seconds", "2")
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        server.wait_for(lambda s: s["position_seconds"] >= 2.0)
        page.goto(server.url + "/")
        page.click("#play")
        page.wait_for_function("document.getElementById('audio').currentTime > 0.5", timeout=30000)
        assert page.text_content("#play") == "■ Stop" and not page.is_visible("#notice")
    finally:
        assert server.stop(signal.SIGINT) == 130, "".join(server.stderr)
    page.wait_for_function("!document.getElementById('notice').hidden", timeout=30000)
    assert page.text_content("#notice") == "The stream stopped. Press Listen to join again."
    assert page.text_content("#play") == "▶ Listen"
    assert "live" not in page.get_attribute("#onair", "class")
    assert page.text_content("#clock") == ""  # not "listening 0:04", stopped there
    browser.close()


@pytest.mark.slow
def test_a_page_not_playing_drops_the_slow_notice_once_the_server_is_gone(playwright, tmp_path):
    """A page open on a slow stream (its /status says slow) shows how far the stream falls behind; once the server
    has stopped, it says the server is not answering and no longer that the stream falls behind and will catch up
    (that notice stayed, beside the headline, for as long as the page was open)."""
    server = Server(make_model(tmp_path / "tiny"), "--no-guard")

    def slow_status(route):
        try:
            response = route.fetch()
        except Exception:  # the server is gone: the page's fetch fails as it would without this route
            route.abort()
            return
        route.fulfill(response=response, json={**response.json(), "slow": True, "delay_seconds": 3.0})

    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.route("**/status", slow_status)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('notice').textContent.includes('falls behind (3.0 s')",
                               timeout=30000)
    finally:
        assert server.stop() == 130, "".join(server.stderr)
    page.wait_for_function("document.getElementById('headline').textContent === 'the server is not answering'",
                           timeout=30000)
    assert not page.is_visible("#notice"), page.text_content("#notice")
    browser.close()


@pytest.mark.slow
def test_the_page_says_so_when_this_address_has_as_many_listeners_as_it_may(playwright, tmp_path):
    """--max-listeners-per-client 1 with this address's one place taken (a raw listener): Listen is
    refused (429) and the page says why, not that the stream stopped or is full."""
    import socket

    server = Server(make_model(tmp_path / "tiny"), "--no-guard", "--max-listeners-per-client", "1")
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        server.wait_for(lambda s: s["position_seconds"] >= 2.0)
        holder = socket.create_connection(("127.0.0.1", server.port))
        holder.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in holder.recv(4096)
        page.goto(server.url + "/")
        # the page's look at why (HEAD /stream) answered late, as on a busy machine: the refused load's own
        # error ("no supported source") must not be shown meanwhile, and taken for the reason
        page.route("**/stream", lambda route: (time.sleep(1.0), route.continue_())
                   if route.request.method == "HEAD" else route.continue_())
        page.click("#play")
        page.wait_for_function("!document.getElementById('notice').hidden", timeout=30000)
        assert page.text_content("#notice") == ("This address already has 1 listener, as many as one address may "
                                                "have. Stop one of them, or try again in a little while.")
        assert page.text_content("#play") == "▶ Listen"
        browser.close()
        holder.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)


@pytest.mark.slow
def test_the_page_shows_the_label_and_its_control_only_with_the_token(playwright, tmp_path):
    """A conditioned model with --control-token: the page shows the label in force; opened plainly it has
    no control, opened as /#token=TOKEN it has one (the token taken off the address), and its switch
    changes the label the page and /status show."""
    from conftest import save_tiny_model
    from test_serve import SR

    model = save_tiny_model(tmp_path / "cond", sample_rate=SR, dim=32, emb_size=8, labels=["rain", "bells"])
    server = Server(model, "--no-guard", "--label", "rain", "--control-token", "operator-token-1")
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('f-label').textContent === 'rain'", timeout=30000)
        assert page.text_content("#f-draws") == "independent"  # no --pitch-sync
        time.sleep(1.5)  # a few polls: still no control without the token
        assert not page.is_visible("#control")
        page.goto(server.url + "/#token=operator-token-1")
        page.wait_for_selector("#control", state="visible", timeout=30000)
        assert "token" not in page.url
        page.select_option("#c-label", "bells")
        page.click("#c-switch")
        page.wait_for_function("document.getElementById('c-result').textContent.startsWith('bells from')",
                               timeout=30000)
        page.wait_for_function("document.getElementById('f-label').textContent === 'bells'", timeout=30000)
        assert server.status()["label"] == "bells"
        page.fill("#c-blend", "drums")
        page.click("#c-switch")
        page.wait_for_function("document.getElementById('c-result').textContent.includes(\"'drums' is not one\")",
                               timeout=30000)
        browser.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)


@pytest.mark.slow
def test_the_label_control_of_a_page_opened_after_a_switch_starts_at_the_label_in_force(playwright, tmp_path):
    """A page opened mid-stream, after a switch to the model's second label: its control starts at that label, the
    one /status says is in force (it started at the model's first label, the wrong one selected for a user who
    then switches something else, or presses the switch as it stands)."""
    from conftest import save_tiny_model
    from test_serve import SR
    from test_serve_label import post

    model = save_tiny_model(tmp_path / "cond", sample_rate=SR, dim=32, emb_size=8, labels=["rain", "bells"])
    server = Server(model, "--no-guard", "--label", "rain", "--control-token", "operator-token-1")
    try:
        assert post(server, "bells", "operator-token-1")[0] in (200, 202)  # 202: taken later, on a busy machine
        server.wait_for(lambda s: s["label"] == "bells", timeout=60)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/#token=operator-token-1")
        page.wait_for_selector("#control", state="visible", timeout=30000)
        assert page.text_content("#f-label") == "bells"
        assert page.eval_on_selector("#c-label", "select => select.value") == "bells"
        browser.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)


@pytest.mark.slow
def test_the_label_control_tells_labels_apart_and_starts_at_the_one_in_force_however_written(playwright, tmp_path):
    """The control matched the label in force by its text: --label "bells:1" (bells, written with its weight)
    started it at the model's first label; and an option shows its text with spaces stripped, so "rain" and " rain"
    read alike. Now it starts at the label /status names in force, and the second reads '" rain"'."""
    from conftest import save_tiny_model
    from test_serve import SR

    labels = ["rain", " rain", "bells"]
    model = save_tiny_model(tmp_path / "cond", sample_rate=SR, dim=32, emb_size=8, labels=labels)
    server = Server(model, "--no-guard", "--label", "bells:1", "--control-token", "operator-token-1")
    try:
        status = server.status()
        assert status["label"] == "bells:1" and status["label_in_force"] == "bells"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/#token=operator-token-1")
        page.wait_for_selector("#control", state="visible", timeout=30000)
        assert page.eval_on_selector("#c-label", "select => select.value") == "bells"
        options = page.eval_on_selector("#c-label", "select => [...select.options].map((o) => [o.text, o.value])")
        assert options == [["rain", "rain"], ['" rain"', " rain"], ["bells", "bells"]], options
        browser.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)


@pytest.mark.slow
def test_the_page_names_the_postfilter_after_the_draws(playwright, tmp_path):
    """With --postfilter the page's draws say it after the draws (" + postfilter G"); without it, as before."""
    model = make_model(tmp_path / "tiny")
    server = Server(model, "--no-guard", "--postfilter", "0.5")
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('f-model').textContent === 'tiny'", timeout=30000)
        assert page.text_content("#f-draws") == "independent + postfilter 0.5"
        browser.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)
