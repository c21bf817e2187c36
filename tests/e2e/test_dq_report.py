"""`lakehouse dq-report`: builds the Data Docs when none exist, serves them on 127.0.0.1, stops on Ctrl-C."""

from __future__ import annotations

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


def test_dq_report_builds_the_site_it_lacks_serves_it_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    gx_dir = tmp_path / "gx"
    env = dict(os.environ, LAKEHOUSE_LAKE_DIR=str(tmp_path / "lake"), LAKEHOUSE_GX_DIR=str(gx_dir))
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "lakehouse"), "dq-report", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(line.startswith("Data Docs on ") for line in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        url = f"http://127.0.0.1:{port}/index.html"
        assert lines[-1] == f"Data Docs on {url} (Ctrl-C stops it)", lines
        [built] = [line for line in lines if line.startswith("Data Docs index: ")]
        index = Path(built.removeprefix("Data Docs index: "))
        assert index.is_file() and index.is_relative_to(gx_dir)  # built: the gate had never run
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert response.read() == index.read_bytes()

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # nothing listens any more
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
