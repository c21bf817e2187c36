"""The deployments in prefect.yaml: served from one process, with a local Prefect server if none is set."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from flows.errors import LakehouseError
from flows.settings import PROJECT_ROOT, ensure_prefect_home

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
# A first start migrates the SQLite database, which takes a while on a busy machine.
SERVER_STARTUP_SECONDS = 180


def read_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployment entries of prefect.yaml, with YAML aliases already resolved."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise LakehouseError(f"no deployments file at {path}; run from the project root") from exc
    except yaml.YAMLError as exc:
        raise LakehouseError(f"{path} is not valid YAML: {exc}") from exc
    deployments = (document or {}).get("deployments") or []
    if not deployments:
        raise LakehouseError(f"{path} defines no deployments")
    return deployments


def entrypoint_exists(spec: dict[str, Any], root: Path = PROJECT_ROOT) -> bool:
    file, _, _ = spec["entrypoint"].partition(":")
    return (root / file).is_file()


def load_flow(entrypoint: str):
    """Import `path/to/module.py:flow` as a module of the project, so it pickles by reference."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise LakehouseError(f"prefect.yaml names {entrypoint}, but {file} has no {name}") from exc


def schedules_from(spec: dict[str, Any]) -> list:
    from prefect.schedules import Cron, Interval

    schedules = []
    for entry in spec.get("schedules") or []:
        options = {k: entry[k] for k in ("timezone", "active", "parameters") if k in entry}
        if "cron" in entry:
            schedules.append(Cron(entry["cron"], **options))
        elif "interval" in entry:
            schedules.append(Interval(entry["interval"], **options))
        else:
            raise LakehouseError(
                f"deployment {spec['name']}: a schedule needs `cron` or `interval`, got {entry}"
            )
    return schedules


def runner_deployments(path: Path = PREFECT_YAML) -> tuple[list, list[str]]:
    """RunnerDeployments for every entry whose code exists, and the names of those skipped."""
    deployments, skipped = [], []
    for spec in read_deployments(path):
        if not entrypoint_exists(spec):
            skipped.append(f"{spec['name']} ({spec['entrypoint']} does not exist yet)")
            continue
        flow = load_flow(spec["entrypoint"])
        limit = spec.get("concurrency_limit")
        if isinstance(limit, dict):
            from prefect.client.schemas.objects import ConcurrencyLimitConfig

            limit = ConcurrencyLimitConfig(**limit)
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                version=spec.get("version"),
                parameters=spec.get("parameters") or {},
                schedules=schedules_from(spec),
                concurrency_limit=limit,
                enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
            )
        )
    return deployments, skipped


def run_runner() -> None:
    """Register every deployment with the API in PREFECT_API_URL and run their flow runs here."""
    from prefect import serve

    deployments, skipped = runner_deployments()
    for name in skipped:
        print(f"not serving {name}", flush=True)
    serve(*deployments)


# The local server and the runner, as child processes of `lakehouse serve` ----------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def wait_for_api(api_url: str, process: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LakehouseError(
                f"the Prefect server exited with code {process.returncode} before it answered; "
                f"see its log above (PREFECT_HOME={os.environ.get('PREFECT_HOME')})"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{api_url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise LakehouseError(f"no Prefect API answered at {api_url} within {timeout:.0f} s")


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """Interrupt a child's process group, then terminate and kill it if it lingers."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_all(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Start a local Prefect server (unless PREFECT_API_URL names one) and the deployments runner.

    Both run as children in their own process groups; Ctrl-C stops them, runner first, so no
    flow run is left orphaned.
    """
    ensure_prefect_home()
    read_deployments()  # fail fast on a broken prefect.yaml, before anything starts
    # The children have their own sessions, so a TERM or HUP sent to this process alone (a
    # process manager, a closed terminal) would end it and leave them running: treat both as
    # Ctrl-C, which stops them below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    children: list[subprocess.Popen] = []
    api_url = configured_api_url()
    env = dict(os.environ)
    try:
        if api_url is None:
            if not port_is_free(host, port):
                raise LakehouseError(
                    f"port {port} on {host} is in use (another Prefect server?); pass --port, "
                    "or set PREFECT_API_URL to use that server"
                )
            api_url = f"http://{host}:{port}/api"
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            server = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                env=env,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
            children.append(server)
            print(f"starting a Prefect server (SQLite in {env['PREFECT_HOME']})", flush=True)
            wait_for_api(api_url, server, SERVER_STARTUP_SECONDS)
        else:
            print(f"using the Prefect API at {api_url}", flush=True)
            wait_for_api(api_url, None, 30)
        env["PREFECT_API_URL"] = api_url
        runner = subprocess.Popen(
            [sys.executable, "-m", "flows.deployments"],
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        children.insert(0, runner)
        ui_url = api_url.removesuffix("/api")
        print(
            f"Prefect UI: {ui_url}\n"
            f"run a deployment: PREFECT_API_URL={api_url} "
            ".venv/bin/prefect deployment run 'lakehouse/refresh'\n"
            "Ctrl-C stops the runner and the server",
            flush=True,
        )
        runner.wait()
        if runner.returncode:
            raise LakehouseError(f"the deployments runner exited with code {runner.returncode}")
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        for child in children:
            stop(child)


if __name__ == "__main__":
    run_runner()
