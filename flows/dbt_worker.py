"""A dbt process started before its command is due:
`python -m flows.dbt_worker [--preload] PARSE_DIR OPTION...`.

While the run lands and validates data, this process imports dbt and parses the project
(OPTION... are dbt's global options: project, profiles, target and log paths): about 3 s that
a build otherwise spends before its first node. With --preload it also imports, in a thread,
what the project's Python models import (about 1 s inside an incremental build's last node,
the cointegration model). A full build is not given --preload: its Python models import their
modules after its largest queries, and loaded early those modules (90 MB) would add to its
memory peak.

The parse writes its artifacts (and the partial parse state it starts from) to PARSE_DIR, under
a lock, not to the target folder a running build of the same lake may be using. Parsing opens
no connection. The process then reads one command from stdin, a JSON line
{"args": [...], "env": {...}}, sets the environment, runs the command with the parsed manifest
and exits with dbt's exit code (0 success, 1 a node failed, 2 dbt could not run), after closing
the warehouse (DuckDB checkpoints it). When stdin closes without a command (the run stopped
before its build), the process exits 0 having done nothing.
"""

from __future__ import annotations

import ast
import fcntl
import importlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path


def python_model_imports(manifest) -> list[str]:
    """The modules imported anywhere in the project's Python models (inside functions too), in
    first-seen order, plus `package.name` for each `from package import name`."""
    modules: dict[str, None] = {}
    for node in manifest.nodes.values():
        if getattr(node, "language", None) != "python":
            continue
        try:
            tree = ast.parse(node.raw_code)
        except SyntaxError:
            continue  # dbt reports it when the model runs
        for statement in ast.walk(tree):
            if isinstance(statement, ast.Import):
                modules.update(dict.fromkeys(alias.name for alias in statement.names))
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                # `from package import module` imports the module too; names that are not
                # modules fail to import and are skipped.
                modules[statement.module] = None
                modules.update(dict.fromkeys(f"{statement.module}.{alias.name}" for alias in statement.names))
    return list(modules)


def preload(modules: list[str]) -> threading.Thread:
    def load() -> None:
        started = time.perf_counter()
        loaded = 0
        for name in modules:
            try:
                importlib.import_module(name)
                loaded += 1
            except Exception:  # noqa: BLE001 - the model reports its own import error when it runs
                continue
        print(
            f"lakehouse dbt worker: imported {loaded} modules for Python models in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

    thread = threading.Thread(target=load, name="preload-python-models", daemon=True)
    thread.start()
    return thread


def parse(parse_dir: Path, options: list[str]):
    """The project's manifest, parsed into parse_dir (one parse at a time); None if it fails."""
    from dbt.cli.main import dbtRunner

    parse_dir.mkdir(parents=True, exist_ok=True)
    with open(parse_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parsed = dbtRunner().invoke(["parse", *options, "--target-path", str(parse_dir)])
    return parsed.result if parsed.success else None


def close_warehouse() -> None:
    """Close dbt-duckdb's database now (it checkpoints), instead of at interpreter exit."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = getattr(DuckDBConnectionManager, "_ENV", None)
    DuckDBConnectionManager.close_all_connections()
    if environment is not None:
        environment.close()


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    from dbt.cli.main import dbtRunner

    preload_imports = argv[:1] == ["--preload"]
    if preload_imports:
        argv = argv[1:]
    parse_dir, options = Path(argv[0]), argv[1:]
    manifest = parse(parse_dir, options)
    if manifest is not None:
        print(f"lakehouse dbt worker: parsed in {time.perf_counter() - started:.1f} s", flush=True)
        if preload_imports:
            preload(python_model_imports(manifest))
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    os.environ.update(request.get("env", {}))
    # Without a parsed manifest (the project did not parse), the command parses again and
    # reports the error the way dbt does.
    result = dbtRunner(manifest=manifest).invoke(request["args"])
    close_warehouse()
    if result.success:
        return 0
    if result.exception is not None:
        print(f"Encountered an error:\n{result.exception}", flush=True)
        return 2
    return 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything is written and the warehouse closed: skip the interpreter's teardown of dbt,
    # pandas, statsmodels and sklearn (about 0.9 s after an incremental build).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
