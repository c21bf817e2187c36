"""The dashboard served by `lakehouse dashboard`, opened page by page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboards import sample_snapshot

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# url path -> (title, charts drawn on the sample snapshot)
PAGES = {
    "": ("Overview", 1),
    "market": ("Market", 4),
    "order_flow": ("Order flow", 5),
    "volatility": ("Volatility & correlation", 4),
    "pairs": ("Pairs", 4),
    "users": ("Users", 6),
    "transactions": ("Transactions", 8),
    "network": ("Network", 3),
    "data_quality": ("Data quality", 2),
    "export": ("Export", 0),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, deadline_s: float = 90) -> None:
    # Start-up waits for a condition; the deadline only stops a hung server from hanging the test.
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"dashboard exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("dashboard did not become healthy")


@pytest.fixture
def dashboard(lake_dir: Path):
    sample_snapshot.write_snapshot(lake_dir)
    port = free_port()
    lakehouse = Path(sys.executable).parent / "lakehouse"
    process = subprocess.Popen(
        [str(lakehouse), "dashboard", "--port", str(port)],
        env=dict(os.environ, LAKEHOUSE_LAKE_DIR=str(lake_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        # The CLI runs streamlit as a child: stop the whole session this test started.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing: run `make browser`")
def test_every_page_renders_in_a_real_browser(dashboard: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            for path, (title, charts) in PAGES.items():
                page.goto(f"{dashboard}/{path}", wait_until="domcontentloaded")
                page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
                if charts:
                    page.wait_for_function(
                        "n => { const plots = [...document.querySelectorAll('.js-plotly-plot')];"
                        " return plots.length >= n && plots.every(p => p.querySelector('.main-svg')); }",
                        arg=charts,
                        timeout=120_000,
                    )
                else:
                    page.get_by_test_id("stDownloadButton").wait_for(timeout=120_000)
                page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=120_000)
                assert page.get_by_test_id("stException").count() == 0, path
                assert page.locator(".js-plotly-plot").count() == charts, path
                page.screenshot(path=str(shots / f"{path or 'overview'}.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in shots.iterdir()) == sorted(f"{path or 'overview'}.png" for path in PAGES)
