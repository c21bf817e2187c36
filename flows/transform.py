"""Runs dbt against the lake's DuckDB warehouse, in a subprocess so no connection outlives the build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.errors import LakehouseError
from flows.settings import PROJECT_ROOT, Settings

DBT_PROJECT = PROJECT_ROOT / "dbt_project"


@dataclass
class BuildResult:
    models: int
    tests: int
    seconds: float
    unit_tests: int = 0
    failures: list[str] = field(default_factory=list)


def warehouse_path(settings: Settings) -> Path:
    return settings.lake_dir / "warehouse" / "lakehouse.duckdb"


def dbt_paths(settings: Settings) -> tuple[Path, Path]:
    """Per-lake target and log folders, so two lakes never share dbt artifacts."""
    base = settings.lake_dir / "warehouse" / "dbt"
    return base / "target", base / "logs"


def dbt_env(settings: Settings) -> dict[str, str]:
    target, _ = dbt_paths(settings)
    env = dict(os.environ)
    env["LAKEHOUSE_LAKE_DIR"] = str(settings.lake_dir)
    env["LAKEHOUSE_DBT_TARGET_PATH"] = str(target)
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def run_dbt(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one dbt command in the project with this lake's paths; returns the finished process."""
    target, logs = dbt_paths(settings)
    (settings.lake_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    dbt = Path(sys.executable).parent / "dbt"
    command = [
        str(dbt),
        *args,
        "--project-dir",
        str(DBT_PROJECT),
        "--profiles-dir",
        str(DBT_PROJECT),
        "--target-path",
        str(target),
        "--log-path",
        str(logs),
    ]
    process = subprocess.run(command, cwd=DBT_PROJECT, env=dbt_env(settings), capture_output=True, text=True)
    if check and process.returncode != 0:
        raise LakehouseError(
            f"dbt {args[0]} failed: {summarise_failures(settings, process)} (full log: {logs / 'dbt.log'})"
        )
    return process


def summarise_failures(settings: Settings, process: subprocess.CompletedProcess) -> str:
    failures = read_failures(settings)
    if failures:
        return "; ".join(failures[:5]) + (f" and {len(failures) - 5} more" if len(failures) > 5 else "")
    lines = [ln for ln in process.stdout.splitlines() if "error" in ln.lower()]
    return (lines[-1].strip() if lines else process.stdout.strip().splitlines()[-1:] or ["unknown"])[0]


def read_run_results(settings: Settings) -> list[dict]:
    target, _ = dbt_paths(settings)
    path = target / "run_results.json"
    if not path.exists():
        return []
    return json.loads(path.read_text()).get("results", [])


def read_failures(settings: Settings) -> list[str]:
    failures = []
    for result in read_run_results(settings):
        if result.get("status") in ("error", "fail", "runtime error"):
            node = result.get("unique_id", "?").split(".", 2)[-1]
            message = (result.get("message") or "").strip().splitlines()
            failures.append(f"{node}: {message[0] if message else result['status']}")
    return failures


def build_marts(
    settings: Settings, *, full_refresh: bool = False, select: str | None = None, unit_tests: bool = False
) -> BuildResult:
    """`dbt build` into lake/warehouse; raises LakehouseError naming the failed nodes.

    dbt unit tests check model logic on fixed rows, not the data, so pipeline runs skip them
    (`make test` and a plain `dbt build` run them)."""
    started = time.perf_counter()
    args = ["build"]
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", select]
    run_dbt(settings, *args)
    results = read_run_results(settings)
    models = sum(1 for r in results if r.get("unique_id", "").startswith("model."))
    tests = sum(1 for r in results if r.get("unique_id", "").startswith("test."))
    unit = sum(1 for r in results if r.get("unique_id", "").startswith("unit_test."))
    return BuildResult(models=models, tests=tests, unit_tests=unit, seconds=time.perf_counter() - started)


def mart_tables(settings: Settings) -> list[str]:
    """Tables in the warehouse's marts schema (opened read-only: the build has finished)."""
    import duckdb

    path = warehouse_path(settings)
    if not path.exists():
        raise LakehouseError(f"no warehouse at {path}; run `lakehouse build` first")
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables "
            "where table_schema = 'marts' and table_type = 'BASE TABLE' order by 1"
        ).fetchall()
    return [r[0] for r in rows]
