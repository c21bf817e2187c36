"""`lakehouse serve` for real: a Prefect server on 127.0.0.1, the deployments, one refresh run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.lake import current_snapshot, list_snapshots
from flows.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
# Guards against a hang, not assertions about speed: a busy 2-core machine needs minutes here.
STARTUP_LIMIT = 600
RUN_LIMIT = 1200
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check, limit: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`lakehouse serve` exited ({process.returncode}) before {what}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            value = check()
            if value:
                return value
        time.sleep(1)
    pytest.fail(f"gave up waiting for {what}:\n{log.read_text()[-5000:]}")


@pytest.fixture
def served(tmp_path: Path):
    """`lakehouse serve` on a free port with its own PREFECT_HOME and a two-symbol, two-day lake."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LAKEHOUSE_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        LAKEHOUSE_LAKE_DIR=str(tmp_path / "lake"),
        LAKEHOUSE_GX_DIR=str(tmp_path / "gx"),
        LAKEHOUSE_SOURCE="synthetic",
        LAKEHOUSE_SYMBOLS="BTCUSDT,ETHUSDT",
        LAKEHOUSE_START="2026-10-01",
        LAKEHOUSE_END="2026-10-03",
        # The scheduled incremental deployment may start during the test: keep it on 127.0.0.1,
        # where nothing listens, so it fails at once instead of reaching out to Binance.
        LAKEHOUSE_BINANCE_API_URL="http://127.0.0.1:9/api",
        LAKEHOUSE_BINANCE_FUTURES_API_URL="http://127.0.0.1:9/fapi",
        LAKEHOUSE_BINANCE_MAX_RETRIES="0",
    )
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "lakehouse"), "serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        yield api, env, tmp_path / "lake", process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert not port_open(port), "the Prefect server outlived `lakehouse serve`"


def test_refresh_deployment_runs_from_the_cli_and_publishes_a_snapshot(served):
    api, env, lake, process, log = served

    def deployment(name: str):
        response = httpx.get(f"{api}/deployments/name/lakehouse/{name}", timeout=10)
        return response.json() if response.status_code == 200 else None

    names = ("refresh", "incremental", "backfill", "synthetic", "stream")

    def all_registered():
        found = {name: deployment(name) for name in names}
        return found if all(found.values()) else None

    registered = wait_until(all_registered, STARTUP_LIMIT, "every deployment registered", process, log)
    assert {d["name"] for d in registered.values()} == set(names)
    assert registered["refresh"]["entrypoint"] == "flows/pipeline.py:refresh"
    assert registered["backfill"]["parameter_openapi_schema"]["required"] == [
        "symbols",
        "interval",
        "start",
        "end",
    ]
    assert current_snapshot(lake) is None

    def scheduled_runs(deployment_id: str):
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 5,
            "offset": 0,
        }
        return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()

    # The server's scheduler creates the hourly refresh runs ahead of time.
    upcoming = wait_until(
        lambda: scheduled_runs(registered["refresh"]["id"]),
        STARTUP_LIMIT,
        "scheduled refresh runs",
        process,
        log,
    )
    assert {run["expected_start_time"][14:19] for run in upcoming} == {"00:00"}

    started = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "lakehouse/refresh"],
        env={**env, "PREFECT_API_URL": api},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

    def finished():
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        return run if run["state_type"] in TERMINAL else None

    run = wait_until(finished, RUN_LIMIT, "the refresh run to finish", process, log)
    assert run["state_type"] == "COMPLETED", log.read_text()[-5000:]
    snapshot = current_snapshot(lake)
    assert snapshot in list_snapshots(lake)
    assert (lake / "marts" / snapshot / "fct_klines_hourly.parquet").is_file()


PROBE_FLOW = """
from prefect import flow, get_run_logger


@flow(name="cli-probe")
def cli_probe():
    get_run_logger().info("probe log line")


state = cli_probe(return_state=True)
print(state.state_details.flow_run_id, state.type.value)
"""


def test_prefect_cli_lists_deployments_and_runs_and_reads_a_runs_logs(served):
    """Operators read a run's logs with the Prefect CLI: its list and log commands send explicit
    nulls for limit/offset/sort/filters, which a FastAPI from 0.151 on rejects (422) on the
    Prefect 3.8 server."""
    api, env, lake, process, log = served
    cli_env = {**env, "PREFECT_API_URL": api, "COLUMNS": "250"}  # wide enough for whole ids in tables

    def prefect(*args: str) -> str:
        result = subprocess.run(
            [str(BIN / "prefect"), *args],
            env=cli_env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def refresh_deployment():
        response = httpx.get(f"{api}/deployments/name/lakehouse/refresh", timeout=10)
        return response.json() if response.status_code == 200 else None

    refresh = wait_until(
        refresh_deployment,
        STARTUP_LIMIT,
        "the refresh deployment registered",
        process,
        log,
    )
    listed = prefect("deployment", "ls")
    assert "lakehouse/refresh" in listed and refresh["id"] in listed

    probe = subprocess.run(
        [sys.executable, "-c", PROBE_FLOW],
        env=cli_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    flow_run_id, state = probe.stdout.split()[-2:]
    assert state == "COMPLETED", probe.stdout + probe.stderr
    name = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()["name"]

    runs = prefect("flow-run", "ls", "--flow-name", "cli-probe")
    assert flow_run_id in runs and name in runs
    logs = prefect("flow-run", "logs", flow_run_id)
    assert f"Flow run '{name}' - probe log line" in logs


def processes_with_home(home: Path) -> list[int]:
    """Processes whose environment names this PREFECT_HOME (the server and the runner started)."""
    marker = f"PREFECT_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def test_sigterm_to_serve_alone_stops_the_server_and_the_runner_it_started(served):
    """A process manager (or a closed terminal) signals `lakehouse serve` alone, not its children,
    which run in their own sessions: they must stop with it, not live on holding the port."""
    api, env, lake, process, log = served
    home = Path(env["PREFECT_HOME"])
    wait_until(
        lambda: httpx.get(f"{api}/deployments/name/lakehouse/refresh", timeout=10).status_code == 200,
        STARTUP_LIMIT,
        "the refresh deployment registered",
        process,
        log,
    )
    children = [pid for pid in processes_with_home(home) if pid != process.pid]
    assert len(children) >= 2, log.read_text()  # the server and the runner (and their children)

    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=90) == 0, log.read_text()[-3000:]

    assert "stopping" in log.read_text()
    assert processes_with_home(home) == []
    assert not port_open(int(api.split(":")[2].split("/")[0]))
