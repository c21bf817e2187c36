"""Long-running servers a user starts: dashboard, dbt docs, Data Docs, Prefect."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
from pathlib import Path

import typer

from flows.errors import LakehouseError
from flows.settings import PROJECT_ROOT, Settings

DASHBOARD_APP = PROJECT_ROOT / "dashboards" / "streamlit_app.py"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def dashboard_command(settings: Settings, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, LAKEHOUSE_LAKE_DIR=str(settings.lake_dir))
    command = [
        _bin("streamlit"),
        "run",
        str(DASHBOARD_APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    return command, env


def require_free_port(host: str, port: int, what: str) -> None:
    """Fail in one line, before printing a URL, when something already listens on host:port."""
    import errno
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port left in TIME_WAIT by an earlier server counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LakehouseError(
                    f"port {port} on {host} is already in use, so the {what} cannot start there; "
                    "stop what uses it or pick another with --port"
                ) from exc
            raise LakehouseError(f"cannot serve the {what} on {host}:{port}: {exc.strerror or exc}") from exc


def serve_dashboard(settings: Settings, host: str, port: int) -> None:
    command, env = dashboard_command(settings, host, port)
    require_free_port(host, port, "dashboard")
    typer.echo(f"dashboard on http://{host}:{port} (Ctrl-C stops it)")
    _run_foreground(command, env=env, cwd=PROJECT_ROOT, what="dashboard")


def serve_dbt_docs(settings: Settings, host: str, port: int) -> None:
    from flows.transform import dbt_env, dbt_paths, run_dbt

    require_free_port(host, port, "dbt docs")
    run_dbt(settings, "docs", "generate")
    target, logs = dbt_paths(settings)
    typer.echo(f"dbt docs on http://{host}:{port} (Ctrl-C stops it)")
    command = [
        _bin("dbt"),
        "docs",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--no-browser",
        "--project-dir",
        str(PROJECT_ROOT / "dbt_project"),
        "--profiles-dir",
        str(PROJECT_ROOT / "dbt_project"),
        "--target-path",
        str(target),
        "--log-path",
        str(logs),
    ]
    _run_foreground(command, env=dbt_env(settings), cwd=PROJECT_ROOT / "dbt_project", what="dbt docs server")


def build_data_docs(settings: Settings, rebuild: bool = False) -> Path:
    """The Data Docs index.html, built first when it does not exist yet (gate runs keep it current)."""
    from flows.quality import build_data_docs as build_site
    from flows.quality import data_docs_index, gx_context

    index = data_docs_index(settings)
    if rebuild or not index.exists():
        build_site(gx_context(settings))
    return index


def data_docs_server(settings: Settings, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server over the Data Docs folder (port 0 picks a free one); the caller serves it."""
    index = build_data_docs(settings)
    handler = functools.partial(_QuietHandler, directory=str(index.parent))
    return http.server.ThreadingHTTPServer((host, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Keep the terminal for the URL, not one line per static file."""


def serve_data_docs(settings: Settings, host: str, port: int, serve: bool = True) -> None:
    if serve:
        require_free_port(host, port, "Data Docs server")
    index = build_data_docs(settings)
    typer.echo(f"Data Docs index: {index}")
    if not serve:
        return
    with data_docs_server(settings, host, port) as server:
        typer.echo(f"Data Docs on http://{host}:{server.server_address[1]}/index.html (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def _run_foreground(command: list[str], env: dict[str, str], cwd: Path, what: str) -> None:
    process = subprocess.Popen(command, env=env, cwd=cwd)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        return
    if code not in (0, -2, 130):  # 0, or stopped by Ctrl-C
        raise LakehouseError(f"the {what} stopped with exit code {code}; its own messages are above")
