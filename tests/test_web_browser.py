"""The search page in a real browser: ``SimDeepDXF.py --serve`` on a free localhost port,
driven by the system's headless Chromium (Debian's ``chromium`` and ``chromium-driver``;
nothing is downloaded), and the server stopping cleanly on Ctrl-C.

``make test`` installs the browser where it can (root with apt); elsewhere the browser
tests are skipped and say why. The screenshot of a search is written to
``logs/web_search.png`` (the README's ``docs/web_search.png`` is a copy of it).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dataset.make_sample_dxf import make_sample_corpus

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: without these a headless Chromium on a machine with no network hangs on connection attempts
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
TOPK = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``SimDeepDXF.py --serve`` over the sample corpus (features embedding: no checkpoint)."""
    pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
    root = tmp_path_factory.mktemp("served")
    archive = root / "archive"
    make_sample_corpus(archive, n_revisions=2)
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "xdg"), "PYTHONUNBUFFERED": "1"}
    log = open(root / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "SimDeepDXF.py", "--serve", "--gallery", str(archive), "--embedding",
                             "features", "--port", str(port), "--encodings", "none", "--workers", "1",
                             "--topk", str(TOPK)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if get_json(url + "/api/health")["state"] == "ready":
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(f"the server did not become ready:\n{log.read()[-3000:]}")
        time.sleep(0.3)
    yield {"url": url, "proc": proc, "log": log, "archive": archive}
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"no system Chromium ({CHROMIUM} and {CHROMEDRIVER}): install Debian's chromium and "
                    "chromium-driver (make test does, as root) to run the browser test")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 30.0, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def result_cards(driver) -> list[dict]:
    """The result cards of the page whose thumbnails have loaded, as name/score/percent texts."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .card.result')].map(c => ({
            name: c.querySelector('.name').textContent, score: c.querySelector('.score').textContent,
            pct: c.querySelector('.pct').textContent, bar: c.querySelector('.bar div').style.width,
            loaded: c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0}));""")


def all_loaded(driver, n: int) -> list[dict]:
    cards = result_cards(driver)
    return cards if len(cards) == n and all(c["loaded"] for c in cards) else []


def test_upload_a_drawing_and_see_the_top_k_thumbnails(server, browser):
    browser.get(server["url"] + "/")
    wait_for(lambda: "gallery ready" in browser.find_element("id", "status").text, what="the gallery")
    query = server["archive"] / "QFN-a_rev0.dxf"
    browser.find_element("id", "file").send_keys(str(query))
    cards = wait_for(lambda: all_loaded(browser, TOPK), what=f"{TOPK} loaded thumbnails")
    names = [re.sub(r"^\d+\. ", "", c["name"]) for c in cards]
    assert all(names) and "QFN-a_rev0" not in names
    scores = [float(re.fullmatch(r"similarity (-?\d\.\d{3})", c["score"]).group(1)) for c in cards]
    assert scores == sorted(scores, reverse=True)
    assert all(re.fullmatch(r"above \d+% of the gallery", c["pct"]) and c["bar"].endswith("%") for c in cards)
    assert browser.find_element("id", "query-name").text == "QFN-a_rev0 (uploaded)"
    assert browser.execute_script("return document.getElementById('query-picture').naturalWidth") > 0
    out = ROOT / "logs" / "web_search.png"
    out.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(out)) and out.stat().st_size > 10_000


def test_a_result_opens_side_by_side_and_searches_with_it(server, browser):
    browser.get(server["url"] + "/?query=QFN-a_rev0&topk=3")  # the link of a search, opened fresh
    first = wait_for(lambda: all_loaded(browser, 3), what="3 results of the link")[0]
    assert browser.find_element("id", "query-name").text == "QFN-a_rev0"
    browser.find_elements("css selector", "#results .card.result")[0].click()
    wait_for(lambda: browser.execute_script(
        "return !document.getElementById('compare').hidden && ['compare-a', 'compare-b'].every("
        "id => document.getElementById(id).naturalWidth > 300)"), what="two large pictures side by side")
    wait_for(lambda: "% of" in browser.find_element("id", "compare-text").text, what="the pair's percentile")
    browser.find_element("id", "compare-query").click()
    picked = re.sub(r"^\d+\. ", "", first["name"])
    wait_for(lambda: browser.find_element("id", "query-name").text == picked, what="the new query")
    assert f"query={picked}" in browser.current_url.replace("%20", " ") or "query=" in browser.current_url


def test_a_bad_upload_shows_the_reason(server, browser, tmp_path):
    bad = tmp_path / "notes.dxf"
    bad.write_text("these are not drawing notes")
    browser.get(server["url"] + "/")
    wait_for(lambda: "gallery ready" in browser.find_element("id", "status").text, what="the gallery")
    browser.find_element("id", "file").send_keys(str(bad))
    message = wait_for(lambda: browser.find_element("id", "message").text, what="an error message")
    assert message.startswith("cannot use notes.dxf: not a DXF file")


def test_the_server_says_where_it_listens_and_stops_cleanly_on_ctrl_c(server):
    proc = server["proc"]
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    code = proc.wait(20)
    server["log"].seek(0)
    log = server["log"].read()
    assert "serving the search page at http://127.0.0.1:" in log and "only this machine" in log
    assert code == 0 and "server stopped" in log, log[-2000:]
    assert "Traceback" not in log, log[-3000:]
