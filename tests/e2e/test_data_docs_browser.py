"""`lakehouse dq-report`: the Data Docs site is served on 127.0.0.1 and renders offline in Chromium."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from flows.cli import main
from flows.quality import data_docs_index, validate_raw
from flows.serving import data_docs_server
from tests.unit.test_quality import klines, land_klines

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, quiet and offline (see /work/shared/NOTES.md).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def report(settings, lake_dir):
    frame = klines(30)
    frame.loc[4, "volume"] = -1.0
    land_klines(lake_dir, frame)
    validate_raw(settings)
    return settings


def test_dq_report_prints_the_index_path(report, capsys):
    assert main(["dq-report", "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert f"Data Docs index: {data_docs_index(report)}" in out
    assert data_docs_index(report).exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (run `make browser`)")
def test_report_renders_in_headless_chromium_without_errors(report):
    from playwright.sync_api import sync_playwright

    server = data_docs_server(report, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
            page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
            # Nothing may come from outside: the site must be complete on its own.
            page.route(
                "**/*",
                lambda route: route.continue_() if route.request.url.startswith(base) else route.abort(),
            )
            page.goto(f"{base}/index.html")
            # The validation results table is drawn by bootstrap-table from the page's data.
            row = page.locator("table tbody tr").filter(has_text="raw_binance_klines").first
            row.wait_for(timeout=30_000)
            assert row.locator(".text-danger").count() >= 1  # the failed-run icon
            [link] = re.findall(
                r"validations/raw_binance_klines/[^'\"]+?\.html", data_docs_index(report).read_text()
            )
            page.goto(f"{base}/{link}")
            page.wait_for_load_state("load")
            body = page.inner_text("body")
            assert "Status: Failed" in " ".join(body.split())
            assert "volume" in body
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert errors == []
