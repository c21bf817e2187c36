"""Runs dbt against the lake's DuckDB warehouse, in a subprocess so no connection outlives the build."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
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


# DuckDB's memory for a build of a small lake; larger lakes get more (dbt_memory_limit).
BASE_MEMORY_MB = 1200
MEMORY_STEP_MB = 64


def raw_lake_bytes(lake_dir: Path) -> int:
    """Size on disk of every parquet file in the raw lake."""
    total = 0
    folders = [lake_dir / "raw"]
    while folders:
        with contextlib.suppress(FileNotFoundError), os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                elif entry.name.endswith(".parquet"):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
    return total


def dbt_memory_limit(settings: Settings) -> str:
    """The build's DuckDB memory limit: the setting, else 1.2 GB plus half the raw lake's size.

    Joins, sorts and windows spill to disk beyond the limit, but what a model holds while it
    runs (median and MAD states, a Python model's input, two large models at once) cannot. At
    50 symbols x a year of minutes (2.1 GB of raw parquet) a fixed 1.2 GB ran out of memory,
    1.7 GB ran out in one run of two (fct_transactions needs about 1.1 GB alone and overlaps
    fct_klines_hourly), and 2.25 GB builds in the same time. 10 symbols (0.45 GB) get 1.4 GB,
    which keeps their build within the 2 GB it is allowed. Never more than half the machine.
    """
    if settings.dbt_memory_limit:
        return settings.dbt_memory_limit
    machine_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    wanted_mb = BASE_MEMORY_MB + raw_lake_bytes(settings.lake_dir) // 2 // 2**20
    # In steps: the limit is part of dbt's profile, and any change to it makes the next run parse
    # the whole project again (about 2.5 s) instead of only what changed.
    wanted_mb -= wanted_mb % MEMORY_STEP_MB
    return f"{max(BASE_MEMORY_MB, min(wanted_mb, machine_mb // 2))}MB"


def dbt_env(settings: Settings) -> dict[str, str]:
    target, _ = dbt_paths(settings)
    env = dict(os.environ)
    env["LAKEHOUSE_LAKE_DIR"] = str(settings.lake_dir)
    env["LAKEHOUSE_DBT_MEMORY_LIMIT"] = dbt_memory_limit(settings)
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
        # The debug file log writes every statement of every node: about a second per build.
        # Errors, node results and timings are still logged at info.
        "--log-level-file",
        "info",
    ]
    env = dbt_env(settings)
    process = subprocess.run(command, cwd=DBT_PROJECT, env=env, capture_output=True, text=True)
    if check and process.returncode != 0:
        summary = summarise_failures(settings, process)
        if "out of memory" in summary.lower():
            summary += (
                f"; DuckDB ran out of its {env['LAKEHOUSE_DBT_MEMORY_LIMIT']} for the build:"
                " set LAKEHOUSE_DBT_MEMORY_LIMIT higher (e.g. 4GB) and run again"
            )
        raise LakehouseError(f"dbt {args[0]} failed: {summary} (full log: {logs / 'dbt.log'})")
    return process


def summarise_failures(settings: Settings, process: subprocess.CompletedProcess) -> str:
    failures = read_failures(settings)
    if failures:
        return "; ".join(failures[:5]) + (f" and {len(failures) - 5} more" if len(failures) > 5 else "")
    lines = [ln.strip() for ln in process.stdout.splitlines() if "error" in ln.lower()]
    tail = process.stdout.strip().splitlines()
    return lines[-1] if lines else tail[-1] if tail else "unknown"


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
            lines = [ln.strip() for ln in (result.get("message") or "").splitlines() if ln.strip()]
            # "Runtime Error in model x (path)" says where; the line after it says what.
            if len(lines) > 1 and lines[0].startswith("Runtime Error in"):
                lines = lines[1:]
            # A Python model's failure is its traceback: the exception is the last line.
            if len(lines) > 1 and lines[0].startswith("Python model failed"):
                lines = [f"{lines[0].rstrip(':')}: {lines[-1]}"]
            failures.append(f"{node}: {lines[0] if lines else result['status']}")
    return failures


def state_dir(settings: Settings) -> Path:
    """What the last successful build saw: its manifest and a fingerprint of each source's files."""
    return settings.lake_dir / "warehouse" / "dbt" / "state"


def source_globs(manifest: dict) -> dict[str, str]:
    """dbt source name (e.g. synthetic.klines) -> the raw-lake glob it reads."""
    globs = {}
    for node in manifest.get("sources", {}).values():
        found = re.search(r"read_parquet\(\s*'([^']+)'", node.get("relation_name") or "")
        if found:
            globs[f"{node['source_name']}.{node['name']}"] = found.group(1)
    return globs


def source_fingerprints(globs: dict[str, str]) -> dict[str, str]:
    """A hash of every file version (path, size, modification time) under each source's glob."""
    prints = {}
    for name, pattern in globs.items():
        digest = hashlib.sha1()
        for path in sorted(glob.glob(pattern, recursive=True)):
            with contextlib.suppress(FileNotFoundError):
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        prints[name] = digest.hexdigest()
    return prints


def changed_selection(settings: Settings) -> str | None:
    """dbt selector for what a build must redo since the last successful one, or None for everything.

    Models downstream of a source whose files changed, plus models whose code or config changed
    (dbt's state:modified against the last build's manifest). Without a previous build (or
    after a failed one, which saves no state) everything is built.
    """
    state = state_dir(settings)
    try:
        manifest = json.loads((state / "manifest.json").read_text())
        previous = json.loads((state / "lake_files.json").read_text())
    except (OSError, ValueError):
        return None
    if not warehouse_path(settings).exists():
        return None
    now = source_fingerprints(source_globs(manifest))
    changed = sorted(name for name, value in now.items() if previous.get(name) != value)
    return " ".join([*(f"source:{name}+" for name in changed), "state:modified+"])


def save_state(settings: Settings) -> None:
    """After a build without failures: its manifest and the source fingerprints it built from."""
    target, _ = dbt_paths(settings)
    state = state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    manifest = target / "manifest.json"
    prints = source_fingerprints(source_globs(json.loads(manifest.read_text())))
    shutil.copyfile(manifest, state / "manifest.json.partial")
    (state / "lake_files.json.partial").write_text(json.dumps(prints, indent=1, sort_keys=True))
    os.replace(state / "manifest.json.partial", state / "manifest.json")
    os.replace(state / "lake_files.json.partial", state / "lake_files.json")


def build_marts(
    settings: Settings,
    *,
    full_refresh: bool = False,
    select: str | None = None,
    unit_tests: bool = False,
    changed_only: bool = False,
) -> BuildResult:
    """`dbt build` into lake/warehouse; raises LakehouseError naming the failed nodes.

    dbt unit tests check model logic on fixed rows, not the data, so pipeline runs skip them
    (`make test` and a plain `dbt build` run them). changed_only builds just what changed since
    the last successful build (see changed_selection); the marts left alone are still current.
    """
    started = time.perf_counter()
    args = ["build"]
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    if select is None and changed_only and not full_refresh:
        changed = changed_selection(settings)
        if changed is not None:
            args += ["--select", changed, "--state", str(state_dir(settings))]
    elif select:
        args += ["--select", select]
    run_dbt(settings, *args)
    if select is None:
        save_state(settings)
    results = read_run_results(settings)
    models = sum(1 for r in results if r.get("unique_id", "").startswith("model."))
    tests = sum(1 for r in results if r.get("unique_id", "").startswith("test."))
    unit = sum(1 for r in results if r.get("unique_id", "").startswith("unit_test."))
    return BuildResult(models=models, tests=tests, unit_tests=unit, seconds=time.perf_counter() - started)
