"""`lakehouse docs`: dbt docs generated for the lake and served on 127.0.0.1, lineage to exposures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_docs_command_serves_lineage_from_sources_to_exposures(tmp_path):
    port = free_port()
    lake = tmp_path / "lake"
    env = dict(os.environ, LAKEHOUSE_LAKE_DIR=str(lake), LAKEHOUSE_GX_DIR=str(tmp_path / "gx"))
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "lakehouse"), "docs", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the dbt server is a child: the whole group is stopped below
    )
    try:
        deadline = time.monotonic() + 600
        index = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                index = fetch(f"http://127.0.0.1:{port}/index.html")
                break
            except OSError:
                time.sleep(1)
        assert index is not None, (
            f"dbt docs never answered: {process.stdout.read() if process.poll() is not None else ''}"
        )

        manifest = json.loads(fetch(f"http://127.0.0.1:{port}/manifest.json"))
        exposures = manifest["exposures"]
        assert any(key.startswith("exposure.lakehouse.") for key in exposures)
        market_page = next(e for e in exposures.values() if "fct_klines_hourly" in str(e["depends_on"]))
        assert "model.lakehouse.fct_klines_hourly" in market_page["depends_on"]["nodes"]
        parents = manifest["parent_map"]
        lineage, frontier = set(), ["model.lakehouse.fct_klines_hourly"]
        while frontier:
            node = frontier.pop()
            for parent in parents.get(node, []):
                if parent not in lineage:
                    lineage.add(parent)
                    frontier.append(parent)
        assert "source.lakehouse.synthetic.klines" in lineage
        assert (lake / "warehouse" / "dbt" / "target" / "catalog.json").is_file()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
