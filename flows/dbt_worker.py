"""A dbt process started before its command is due:
`python -m flows.dbt_worker [--status-fd N] [--preload] PARSE_DIR OPTION...`.

While the run lands and validates data, this process imports dbt and parses the project
(OPTION... are dbt's global options: project, profiles, target and log paths): about 3 s that
a build otherwise spends before its first node. With --preload it also imports, in a thread,
what the project's Python models import (about 1 s inside an incremental build's last node,
the cointegration model). A full build is not given --preload: its Python models import their
modules after its largest queries, and loaded early those modules (90 MB) would add to its
memory peak. Of a small lake, whose size is known once the run has landed its data, the
caller may ask for them later with a request line {"preload": true} before the command.

The parse writes its partial parse state (which the next parse starts from) to PARSE_DIR, under
a lock, not to the target folder a running build of the same lake may be using. Parsing opens
no connection. The process then reads one command from stdin, a JSON line
{"args": [...], "env": {...}, "state": {...}}, sets the environment, runs the command with the
parsed manifest and exits with dbt's exit code (0 success, 1 a node failed, 2 dbt could not
run), after closing the warehouse (DuckDB checkpoints it). When stdin closes without a command
(the run stopped before its build), the process exits 0 having done nothing.

With --status-fd N, the exit code is also written to file descriptor N as soon as the caller
may go on. For a build, that is when run_results.json is written and the warehouse closed. The
process then writes the manifest with the build's compiled SQL (about 0.45 s at 145 nodes) and,
after a successful build, the state the next build compares with (a request's "state"); the
caller's next steps (gate 2, publish) run meanwhile. Files are replaced whole, never seen
half-written.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path


def python_model_imports(manifest) -> list[str]:
    """The modules the project's Python models import when dbt loads them, in first-seen order,
    plus `package.name` for each `from package import name`.

    Imports inside functions are left out: a model imports there what it needs only sometimes
    (the fee model loads scikit-learn only when its training sample changed), and loaded ahead
    they would cost a build that never uses them (the GIL their import holds slows the build's
    own threads).
    """
    modules: dict[str, None] = {}
    for node in manifest.nodes.values():
        if getattr(node, "language", None) != "python":
            continue
        try:
            tree = ast.parse(node.raw_code)
        except SyntaxError:
            continue  # dbt reports it when the model runs
        for statement in loaded_statements(tree):
            if isinstance(statement, ast.Import):
                modules.update(dict.fromkeys(alias.name for alias in statement.names))
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                # `from package import module` imports the module too; names that are not
                # modules fail to import and are skipped.
                modules[statement.module] = None
                modules.update(dict.fromkeys(f"{statement.module}.{alias.name}" for alias in statement.names))
    return list(modules)


def loaded_statements(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a module that run when it is loaded: all but the bodies of its functions."""
    for child in ast.iter_child_nodes(tree):
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from loaded_statements(child)


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

    print(f"lakehouse dbt worker: importing {len(modules)} modules for Python models", flush=True)
    thread = threading.Thread(target=load, name="preload-python-models", daemon=True)
    thread.start()
    return thread


def parse(parse_dir: Path, options: list[str]):
    """The project's manifest, parsed into parse_dir (one parse at a time); None if it fails.

    The parse writes its partial parse state and perf_info.json there, not manifest.json: the
    build writes that, with its compiled SQL (writing it takes about 0.45 s)."""
    from dbt.cli.main import dbtRunner

    parse_dir.mkdir(parents=True, exist_ok=True)
    with open(parse_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parsed = dbtRunner().invoke(["parse", *options, "--target-path", str(parse_dir), "--no-write-json"])
    return parsed.result if parsed.success else None


def close_warehouse() -> None:
    """Close dbt-duckdb's database now (it checkpoints), instead of at interpreter exit."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = getattr(DuckDBConnectionManager, "_ENV", None)
    DuckDBConnectionManager.close_all_connections()
    if environment is not None:
        environment.close()


def replace_file(write, path: Path) -> None:
    """Write path through write(temporary path), then rename it into place."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def option(args: list[str], name: str) -> str | None:
    """The value of a dbt option in args (`--target-path X`), or None."""
    return args[args.index(name) + 1] if name in args[:-1] else None


# Beside the state's manifest: the fingerprint of the parse that built it (write_state).
PROJECT_FINGERPRINT = "project_fingerprint"
UNMODIFIED_SELECTOR = "state:modified+"


def project_fingerprint(manifest) -> str:
    """A hash of everything a parse of the project reads: dbt's and the adapter's versions, the
    checksum of every file of the project and of dbt's own macros, the rendered profile, the
    vars, and the environment variables the project's files use. Two parses with the same
    fingerprint give the same manifest, so between them no node is state:modified."""
    check = manifest.state_check
    parts = {
        "versions": [metadata.version(name) for name in ("dbt-core", "dbt-adapters", "dbt-duckdb")],
        "vars": check.vars_hash.checksum,
        "profile": check.profile_hash.checksum,
        "project_env": check.project_env_vars_hash.checksum,
        "profile_env": check.profile_env_vars_hash.checksum,
        "projects": {name: value.checksum for name, value in check.project_hashes.items()},
        "files": {name: file.checksum.checksum for name, file in manifest.files.items()},
        "env_vars": dict(manifest.env_vars),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def without_unmodified_state(args: list[str], manifest) -> list[str]:
    """args without `state:modified+` in --select and without --state when the project parsed
    exactly as for the build that saved that state: then nothing can be modified, and dbt need
    not read the saved manifest to find it out (about 0.5 s). Otherwise args unchanged, as they
    are when nothing else is selected (a selection must not become empty, which is everything)."""
    state, select = option(args, "--state"), option(args, "--select")
    if manifest is None or state is None or select is None:
        return args
    selectors = select.split()
    rest = [selector for selector in selectors if selector != UNMODIFIED_SELECTOR]
    if not rest or rest == selectors:
        return args
    try:
        saved = (Path(state) / PROJECT_FINGERPRINT).read_text().strip()
    except OSError:
        return args
    if saved != project_fingerprint(manifest):
        return args
    kept = list(args)
    kept[kept.index("--select") + 1] = " ".join(rest)
    at = kept.index("--state")
    del kept[at : at + 2]
    return kept


def run_command(manifest, args: list[str], report, state: dict | None = None) -> int:
    """Run one dbt command with the parsed manifest; report(code) is called once the caller may
    go on. Returns the exit code (0 success, 1 a node failed, 2 dbt could not run).

    A build's artifacts are written by this function rather than by dbt: run_results.json before
    report, then the manifest (with the compiled SQL), then, after a successful build and when
    state ({"dir", "lake_files"}) is given, the state the next build compares with.
    """
    from dbt.cli.main import dbtRunner

    target = option(args, "--target-path")
    target_dir = Path(target) if target is not None else None
    build = args[:1] == ["build"] and target_dir is not None
    # Without a parsed manifest the build parses again, and dbt writes its artifacts itself.
    deferred = build and manifest is not None
    if deferred:
        target_dir.mkdir(parents=True, exist_ok=True)
        # A build that stops before its results are written must not leave the previous
        # build's results to be read as its own.
        (target_dir / "run_results.json").unlink(missing_ok=True)
        args = [*without_unmodified_state(args, manifest), "--no-write-json"]
    result = dbtRunner(manifest=manifest).invoke(args)
    close_warehouse()
    if result.success:
        code = 0
    elif result.exception is not None:
        print(f"Encountered an error:\n{result.exception}", flush=True)
        code = 2
    else:
        code = 1
    if deferred and hasattr(result.result, "write"):
        replace_file(lambda path: result.result.write(str(path)), target_dir / "run_results.json")
    report(code)
    if deferred:
        write_manifest(manifest, target_dir)
    if build and state is not None and code == 0:
        from flows.transform import write_state

        write_state(
            Path(state["dir"]),
            target_dir / "manifest.json",
            state.get("lake_files"),
            project_fingerprint(manifest) if manifest is not None else None,
        )
    return code


def write_manifest(manifest, target_dir: Path) -> None:
    """dbt's manifest.json and semantic_manifest.json in target_dir, each replaced whole."""
    from dbt.parser.manifest import write_manifest as write

    staging = target_dir / f".manifest-{os.getpid()}"
    try:
        write(manifest, str(staging))
        for name in ("semantic_manifest.json", "manifest.json"):
            if (staging / name).exists():
                os.replace(staging / name, target_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_command(lines, start_preload) -> dict | None:
    """The command request from lines (stdin), None when they end without one; a
    {"preload": true} line before it calls start_preload."""
    for line in lines:
        if not line.strip():
            continue
        request = json.loads(line)
        if "args" in request:
            return request
        if request.get("preload"):
            start_preload()
    return None


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    preload_imports = status_fd = None
    while argv and argv[0].startswith("--"):
        if argv[0] == "--preload":
            preload_imports, argv = True, argv[1:]
        elif argv[0] == "--status-fd":
            status_fd, argv = int(argv[1]), argv[2:]
        else:
            break
    parse_dir, options = Path(argv[0]), argv[1:]
    manifest = parse(parse_dir, options)
    preloading: list[threading.Thread] = []

    def start_preload() -> None:
        if manifest is not None and not preloading:
            preloading.append(preload(python_model_imports(manifest)))

    if manifest is not None:
        print(f"lakehouse dbt worker: parsed in {time.perf_counter() - started:.1f} s", flush=True)
        if preload_imports:
            start_preload()
    request = read_command(sys.stdin, start_preload)
    if request is None:
        return 0
    os.environ.update(request.get("env", {}))

    def report(code: int) -> None:
        sys.stdout.flush()
        if status_fd is not None:
            os.write(status_fd, f"{code}\n".encode())
            os.close(status_fd)

    # Without a parsed manifest (the project did not parse), the command parses again and
    # reports the error the way dbt does.
    return run_command(manifest, request["args"], report, request.get("state"))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything is written and the warehouse closed: skip the interpreter's teardown of dbt,
    # pandas, statsmodels and sklearn (about 0.9 s after an incremental build).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
