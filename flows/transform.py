"""Runs dbt against the lake's DuckDB warehouse, in a subprocess so no connection outlives the build."""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flows.errors import LakehouseError
from flows.settings import PROJECT_ROOT, Settings

DBT_PROJECT = PROJECT_ROOT / "dbt_project"
# The adapter response code of a model kept because its inputs had not changed
# (dbt_project/macros/table_when_changed.sql).
UNCHANGED = "UNCHANGED"


@dataclass
class BuildResult:
    models: int
    tests: int
    seconds: float
    unit_tests: int = 0
    failures: list[str] = field(default_factory=list)
    # Models kept as they were: their inputs had not changed (macros/table_when_changed.sql).
    unchanged: int = 0


def warehouse_path(settings: Settings) -> Path:
    return settings.lake_dir / "warehouse" / "lakehouse.duckdb"


def ensure_warehouse_dir(lake_dir: Path) -> None:
    """Create the folder dbt's committed profile opens the warehouse file in.

    DuckDB does not create a missing folder, so `cd dbt_project && dbt build` on a lake that
    only ever had data landed and gated (never built by `lakehouse`) failed to open the file.
    Whatever puts rows into raw/ calls this (gate 1 and the trade stream), as does every dbt run.
    """
    (Path(lake_dir) / "warehouse").mkdir(parents=True, exist_ok=True)


def dbt_paths(settings: Settings) -> tuple[Path, Path]:
    """Per-lake target and log folders, so two lakes never share dbt artifacts."""
    base = settings.lake_dir / "warehouse" / "dbt"
    return base / "target", base / "logs"


# DuckDB's memory for a build: a base plus a share of the raw lake's size (dbt_memory_limit).
BASE_MEMORY_MB = 768
RAW_MEMORY_SHARE = 0.7
# From this much raw parquet on, dbt builds one model at a time, with a smaller share (dbt_threads).
LARGE_LAKE_BYTES = 2**30
LARGE_RAW_MEMORY_SHARE = 0.4
MEMORY_STEP_MB = 64
# Below this much raw parquet a full build preloads its Python models' modules (DbtWorker.landed).
SMALL_LAKE_BYTES = 128 * 2**20


def files_under(root: str, *, follow_links: bool, skip_hidden: bool) -> Iterator[os.DirEntry]:
    """Every file in the tree under root (none if it does not exist), walked with os.scandir;
    follow_links: descend into links to folders; skip_hidden: leave out names starting with a dot."""
    folders = [root]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                if skip_hidden and entry.name.startswith("."):
                    continue
                try:
                    is_folder = entry.is_dir(follow_symlinks=follow_links)
                except OSError:
                    continue
                if is_folder:
                    folders.append(entry.path)
                else:
                    yield entry


def lake_parquet_sizes(lake_dir: Path) -> Iterator[tuple[str, int]]:
    """(path relative to its zone, size) of every parquet file in raw, then in landing."""
    for zone in ("raw", "landing"):
        root = lake_dir / zone
        for entry in files_under(str(root), follow_links=False, skip_hidden=False):
            if entry.name.endswith(".parquet"):
                with contextlib.suppress(FileNotFoundError):
                    yield os.path.relpath(entry.path, root), entry.stat().st_size


def raw_lake_bytes(lake_dir: Path) -> int:
    """Size on disk the raw lake has once landing is validated: every parquet file in raw and
    in landing, a landed file counted in place of a raw file at the same path (a batch landed
    again replaces its raw copy).

    Landing counts because gate 1 is about to move it into raw: the dbt worker, started before
    gate 1, then parses with the memory limit its build runs with (a change reparses the project).
    """
    # Landing comes last: its files replace their raw namesakes.
    return sum(dict(lake_parquet_sizes(lake_dir)).values())


def lake_smaller_than(lake_dir: Path, limit: int) -> bool:
    """Whether the parquet files in raw and landing add up to less than limit bytes (a batch
    landed again over its raw copy counts twice here); stops counting at the limit."""
    total = 0
    for _, size in lake_parquet_sizes(lake_dir):
        total += size
        if total >= limit:
            return False
    return True


def dbt_memory_limit(settings: Settings, raw_bytes: int | None = None) -> str:
    """The build's DuckDB memory limit: the setting, else 768 MB plus 0.7 of the raw lake's size
    (0.4 from LARGE_LAKE_BYTES on, where dbt runs one model at a time: dbt_threads).

    Joins, sorts and windows spill to disk beyond the limit, but what a model holds while it
    runs (median and MAD states, a Python model's input, two large models at once) cannot. At
    50 symbols x a year of minutes (2.1 GB of raw parquet) with two models at a time, a fixed
    1.2 GB ran out of memory, 1.7 GB ran out in one run of two (fct_transactions needs about
    1.1 GB alone and overlapped fct_klines_hourly), and 2.25 GB built, with the build's
    processes at 3.35 GB. One model at a time, 1.6 GB builds with the same CPU time (363 s
    against 375 s) and the processes peak at 2.56 GB. 10 symbols (0.45 GB) build in the same
    time with 1 GB as with 1.4 GB (and with 0.75 GB, 1.5 s slower); DuckDB keeps what it read
    cached up to its limit, so the build's process held 1.8 GB with 1.4 GB and 1.45 GB with
    1 GB, which keeps a run's processes (the flow's own holds about 0.45 GB) within the 2 GB
    the run is allowed. Never more than half the machine.
    """
    if settings.dbt_memory_limit:
        return settings.dbt_memory_limit
    machine_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    raw_bytes = raw_lake_bytes(settings.lake_dir) if raw_bytes is None else raw_bytes
    share = LARGE_RAW_MEMORY_SHARE if raw_bytes >= LARGE_LAKE_BYTES else RAW_MEMORY_SHARE
    wanted_mb = BASE_MEMORY_MB + int(raw_bytes * share) // 2**20
    # In steps: the limit is part of dbt's profile, and any change to it makes the next run parse
    # the whole project again (about 2.5 s) instead of only what changed.
    wanted_mb -= wanted_mb % MEMORY_STEP_MB
    return f"{max(BASE_MEMORY_MB, min(wanted_mb, machine_mb // 2))}MB"


def dbt_threads(raw_bytes: int) -> str:
    """Models dbt runs at once: 2 (this machine's cores), 1 from LARGE_LAKE_BYTES of raw parquet on.

    DuckDB spreads each query over every core, so a second model at once mostly overlaps dbt's
    own per-model work (many small models and tests: an incremental run); on a large lake it
    also doubles what the build holds (see dbt_memory_limit). LAKEHOUSE_DBT_THREADS overrides.
    """
    return "1" if raw_bytes >= LARGE_LAKE_BYTES else "2"


def dbt_env(settings: Settings, worker: bool = False) -> dict[str, str]:
    """dbt's environment for this lake; worker=True adds the project to PYTHONPATH (flows.dbt_worker)."""
    target, _ = dbt_paths(settings)
    env = dict(os.environ)
    if worker:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["LAKEHOUSE_LAKE_DIR"] = str(settings.lake_dir)
    raw_bytes = raw_lake_bytes(settings.lake_dir)
    env["LAKEHOUSE_DBT_MEMORY_LIMIT"] = dbt_memory_limit(settings, raw_bytes)
    env.setdefault("LAKEHOUSE_DBT_THREADS", dbt_threads(raw_bytes))
    env["LAKEHOUSE_DBT_TARGET_PATH"] = str(target)
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def parse_dir(settings: Settings) -> Path:
    """Where the dbt worker parses the project (a build of the same lake may be using the target)."""
    return settings.lake_dir / "warehouse" / "dbt" / "parse"


def dbt_options(settings: Settings) -> list[str]:
    """dbt's options for this lake: the project, its profile, and the lake's target and log paths."""
    target, logs = dbt_paths(settings)
    return [
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


def run_dbt(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one dbt command in the project with this lake's paths; returns the finished process."""
    ensure_warehouse_dir(settings.lake_dir)
    dbt = Path(sys.executable).parent / "dbt"
    command = [str(dbt), *args, *dbt_options(settings)]
    env = dbt_env(settings)
    process = subprocess.run(command, cwd=DBT_PROJECT, env=env, capture_output=True, text=True)
    return checked(settings, args[0], process, env, check)


def checked(
    settings: Settings, name: str, process: subprocess.CompletedProcess, env: dict[str, str], check: bool
) -> subprocess.CompletedProcess:
    """The finished dbt process; when check is set and it failed, LakehouseError naming what failed."""
    if check and process.returncode != 0:
        _, logs = dbt_paths(settings)
        summary = summarise_failures(settings, process)
        if "out of memory" in summary.lower():
            summary += (
                f"; DuckDB ran out of its {env['LAKEHOUSE_DBT_MEMORY_LIMIT']} for the build:"
                " set LAKEHOUSE_DBT_MEMORY_LIMIT higher (e.g. 4GB) and run again"
            )
        elif "no space left on device" in summary.lower() or "[errno 28]" in summary.lower():
            summary += (
                f"; the disk holding the lake {settings.lake_dir} is full: free space there"
                " (or move the lake to a larger disk) and run again"
            )
        raise LakehouseError(f"dbt {name} failed: {summary} (full log: {logs / 'dbt.log'})")
    return process


class DbtWorker:
    """A dbt process (flows.dbt_worker) that imports dbt and parses the project now, and runs one
    command later (`run`), so the build does not wait for dbt's start-up.

    The process holds no warehouse connection while it waits. `run` returns when the command's
    results are written; after a build the process then writes the manifest with the compiled
    SQL and the build's state, and exits. `close` waits for that (or stops a worker given no
    command).
    """

    def __init__(self, settings: Settings, preload: bool = False) -> None:
        ensure_warehouse_dir(settings.lake_dir)
        self.settings = settings
        self.preloading = preload
        self.output = ""  # what the process printed, once its command has run
        self._output = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed by run/close
        status, status_child = os.pipe()  # the worker writes its exit code here (flows.dbt_worker)
        flags = ["--status-fd", str(status_child), *(["--preload"] if preload else [])]
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.dbt_worker",
                    *flags,
                    str(parse_dir(settings)),
                    *dbt_options(settings),
                ],
                cwd=DBT_PROJECT,
                env=dbt_env(settings, worker=True),
                stdin=subprocess.PIPE,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(status_child,),
            )
        except BaseException:
            os.close(status)
            self._output.close()
            raise
        finally:
            os.close(status_child)
        self._status = os.fdopen(status, "rb")

    def preload(self) -> None:
        """Have the worker import what the project's Python models import, now, in a thread
        (see flows.dbt_worker), unless it does already."""
        if self.preloading:
            return
        self.preloading = True
        with contextlib.suppress(OSError):  # a worker that died says why when it is run
            self.process.stdin.write(json.dumps({"preload": True}) + "\n")
            self.process.stdin.flush()

    def landed(self) -> None:
        """The run has landed its data: before a full build of a small lake, preload the Python
        models' modules. There they cost about 1 s of a 6 s build and their 90 MB matters to no
        memory goal; beyond SMALL_LAKE_BYTES a full build imports them when its models need them,
        after its largest queries."""
        if not self.preloading and lake_smaller_than(self.settings.lake_dir, SMALL_LAKE_BYTES):
            self.preload()

    def _finished(self) -> int:
        """The command's exit code, as soon as its results are written (the process may still be
        writing the manifest), or the process's own when it died first."""
        line = self._status.readline()
        return int(line) if line.strip() else self.process.wait()

    def run(self, *args: str, check: bool = True, state: dict | None = None) -> subprocess.CompletedProcess:
        """Run `dbt ARGS` in the waiting process; the environment is taken afresh (memory limit).

        state ({"dir", "lake_files"}): where a successful build saves its state (see write_state).
        """
        env = dbt_env(self.settings)
        command = [*args, *dbt_options(self.settings)]
        request = {
            "args": command,
            "env": {k: v for k, v in env.items() if k.startswith(("LAKEHOUSE_", "DBT_"))},
            "state": state,
        }
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died; its output says why
        try:
            returncode = self._finished()
        except BaseException:  # interrupted (Ctrl-C, a cancelled run): stop dbt too
            self.process.kill()
            self.process.wait()
            self._close_files()
            raise
        self._output.seek(0)
        self.output = self._output.read()
        self._close_files()
        process = subprocess.CompletedProcess(command, returncode, self.output, "")
        return checked(self.settings, args[0], process, env, check)

    def _close_files(self) -> None:
        self._status.close()
        self._output.close()

    def close(self) -> None:
        """Wait for a worker that ran its command to finish writing; stop one that was given none."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_files()


_WARM: dict[Path, DbtWorker] = {}  # lake -> the warm worker of the block that holds the lake
_WARM_LOCK = threading.Lock()
# The worker of the warm_build block this code runs in (Prefect's subflows and tasks see it).
_OWN_WARM: contextvars.ContextVar[DbtWorker | None] = contextvars.ContextVar("own_warm", default=None)


class _NoWorker:
    """What warm_build yields while another block of this process holds the same lake."""

    def landed(self) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def warm_build(settings: Settings, full_refresh: bool = False) -> Iterator[DbtWorker | _NoWorker]:
    """Start dbt for this lake's next build now; a build inside the block uses it.

    The flow opens this before landing; landing and gate 1 take longer than dbt's start-up. When
    the build will be incremental (a previous build's state exists and no full refresh is asked
    for), the worker also imports the Python models' modules ahead (see flows.dbt_worker). At
    the end of the block the worker is waited for (it writes the build's manifest after the
    build returns), or stopped if the block did not use it. Yields the worker; calling its
    `close` inside the block waits there instead (the flow does, while it holds the lake's lock).

    Only the block's own build takes its worker. While another block of this process holds the
    same lake (two runs of one lake at once), this one starts no worker (two would parse into
    the same folder) and its build starts dbt itself: taking or stopping the other block's
    worker left that run writing to a closed worker, or unsure its manifest was written.
    """
    key = settings.lake_dir.resolve()
    incremental = not full_refresh and (state_dir(settings) / "manifest.json").exists()
    with _WARM_LOCK:
        held = key in _WARM
        if not held:
            worker = DbtWorker(settings, preload=incremental and warehouse_path(settings).exists())
            _WARM[key] = worker
    if held:
        yield _NoWorker()
        return
    token = _OWN_WARM.set(worker)
    try:
        yield worker
    finally:
        _OWN_WARM.reset(token)
        with _WARM_LOCK:
            if _WARM.get(key) is worker:
                del _WARM[key]
        worker.close()


def take_worker(settings: Settings) -> tuple[DbtWorker, bool]:
    """The warm worker started for this lake by the block this runs in, else a new one (started
    now); and whether the caller must close it (a warm worker is closed by its warm_build block)."""
    key = settings.lake_dir.resolve()
    own = _OWN_WARM.get()
    with _WARM_LOCK:
        worker = _WARM.pop(key) if own is not None and _WARM.get(key) is own else None
    if worker is not None and worker.process.poll() is None:
        return worker, False
    return DbtWorker(settings), True


def summarise_failures(settings: Settings, process: subprocess.CompletedProcess) -> str:
    failures = read_failures(settings)
    if failures:
        return "; ".join(failures[:5]) + (f" and {len(failures) - 5} more" if len(failures) > 5 else "")
    cause = encountered_error(process.stdout)
    if cause:
        return cause
    lines = [ln.strip() for ln in process.stdout.splitlines() if "error" in ln.lower()]
    tail = process.stdout.strip().splitlines()
    return lines[-1] if lines else tail[-1] if tail else "unknown"


# The first line of dbt's own exceptions names only their kind: "Runtime Error", "Compilation
# Error in model x (path)"; the line after it says what happened.
GENERIC_ERROR = re.compile(r"^[A-Z][A-Za-z]*( [A-Z][A-Za-z]*)* Error( in .*)?:?$")


def encountered_error(output: str) -> str | None:
    """The cause of an error dbt could not run past: dbt (and flows.dbt_worker after it) prints
    "Encountered an error:" and the exception on the next lines, e.g. "[Errno 28] No space left
    on device"; None when the output has no such line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    marks = [i for i, line in enumerate(lines) if line.endswith("Encountered an error:")]
    for mark in reversed(marks):
        cause = []
        for line in lines[mark + 1 : mark + 3]:
            if line.endswith("Encountered an error:"):
                break
            cause.append(line)
        if len(cause) > 1 and GENERIC_ERROR.match(cause[0]):
            return cause[1]
        if cause:
            return cause[0]
    return None


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


def glob_files(pattern: str) -> list[str]:
    """The paths glob.glob(pattern, recursive=True) returns, in no particular order.

    A source's glob is `ROOT/**/NAME` (NAME without a slash): for it the tree under ROOT is
    walked with os.scandir, half the time of glob's matching at 5,000 files. As glob does, names
    starting with a dot (the lake's partial files) are skipped, and links to folders followed.
    """
    root, recursive, name = pattern.partition("/**/")
    if not recursive or glob.has_magic(root) or "/" in name:
        return glob.glob(pattern, recursive=True)
    files = files_under(root, follow_links=True, skip_hidden=True)
    return [entry.path for entry in files if fnmatch.fnmatchcase(entry.name, name)]


def source_fingerprints(globs: dict[str, str]) -> dict[str, str]:
    """A hash of every file version (path, size, modification time) under each source's glob."""
    prints = {}
    for name, pattern in globs.items():
        digest = hashlib.sha1()
        for path in sorted(glob_files(pattern)):
            with contextlib.suppress(FileNotFoundError):
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        prints[name] = digest.hexdigest()
    return prints


def lake_fingerprints(settings: Settings) -> dict[str, str] | None:
    """Source fingerprints of the lake now, for the sources the last successful build knew; None
    without a previous build."""
    try:
        manifest = json.loads((state_dir(settings) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return source_fingerprints(source_globs(manifest))


def changed_selection(settings: Settings, now: dict[str, str] | None) -> str | None:
    """dbt selector for what a build must redo since the last successful one, or None for everything.

    Models downstream of a source whose files changed (now: lake_fingerprints), plus models whose
    code or config changed (dbt's state:modified against the last build's manifest). Without a
    previous build (or after a failed one, which saves no state) everything is built.
    """
    if now is None or not warehouse_path(settings).exists():
        return None
    try:
        previous = json.loads((state_dir(settings) / "lake_files.json").read_text())
    except (OSError, ValueError):
        return None
    changed = sorted(name for name, value in now.items() if previous.get(name) != value)
    return " ".join([*(f"source:{name}+" for name in changed), "state:modified+"])


def write_state(
    state: Path, manifest: Path, prints: dict[str, str] | None, project: str | None = None
) -> None:
    """After a build without failures: its manifest and the source fingerprints it built from.

    Written by the build's dbt process once it has written the manifest (flows.dbt_worker).
    prints are the fingerprints taken before the build started (lake_fingerprints): a file that
    changed while it ran then counts as changed at the next build. Without them (a first build)
    they are taken now, from the sources this manifest declares. project is the fingerprint of
    the parse the build ran with (flows.dbt_worker.project_fingerprint); it goes first and comes
    back last, so it is never beside the manifest of another build.
    """
    from flows.dbt_worker import PROJECT_FINGERPRINT

    state.mkdir(parents=True, exist_ok=True)
    if prints is None:
        prints = source_fingerprints(source_globs(json.loads(manifest.read_text())))
    (state / PROJECT_FINGERPRINT).unlink(missing_ok=True)
    shutil.copyfile(manifest, state / "manifest.json.partial")
    (state / "lake_files.json.partial").write_text(json.dumps(prints, indent=1, sort_keys=True))
    os.replace(state / "manifest.json.partial", state / "manifest.json")
    os.replace(state / "lake_files.json.partial", state / "lake_files.json")
    if project is not None:
        (state / f"{PROJECT_FINGERPRINT}.partial").write_text(project + "\n")
        os.replace(state / f"{PROJECT_FINGERPRINT}.partial", state / PROJECT_FINGERPRINT)


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
    Returns once the warehouse is built and closed; the build's manifest and state are written
    right after, by its dbt process (see DbtWorker).
    """
    started = time.perf_counter()
    args = ["build"]
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    prints = lake_fingerprints(settings) if select is None else None
    if select is None and changed_only and not full_refresh:
        changed = changed_selection(settings, prints)
        if changed is not None:
            args += ["--select", changed, "--state", str(state_dir(settings))]
    elif select:
        args += ["--select", select]
    state = {"dir": str(state_dir(settings)), "lake_files": prints} if select is None else None
    worker, owned = take_worker(settings)
    try:
        worker.run(*args, state=state)
    finally:
        if owned:  # a warm worker is waited for at the end of its block
            worker.close()
    results = read_run_results(settings)
    models = sum(1 for r in results if r.get("unique_id", "").startswith("model."))
    tests = sum(1 for r in results if r.get("unique_id", "").startswith("test."))
    unit = sum(1 for r in results if r.get("unique_id", "").startswith("unit_test."))
    unchanged = sum(1 for r in results if (r.get("adapter_response") or {}).get("code") == UNCHANGED)
    return BuildResult(
        models=models,
        tests=tests,
        unit_tests=unit,
        unchanged=unchanged,
        seconds=time.perf_counter() - started,
    )
