"""Run one stage in a fresh process and measure its wall time and peak memory (the whole process tree)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

POLL_SECONDS = 0.05


@dataclass
class Measurement:
    stage: str
    seconds: float
    peak_mb: float
    cpu_seconds: float
    ok: bool
    error: str = ""
    result: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _tree_rss(root: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (dbt runs as a child of the build)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def _high_water_mark(pid: int) -> int:
    """The kernel's peak resident set of one process (VmHWM), in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def measure(stage: str, args: list[str], env: dict[str, str], log_dir: Path) -> Measurement:
    """Run `python -m bench.stages <args>`; the stage writes its result JSON to a file we pass it.

    Peak memory is the larger of the polled sum over the process tree (concurrent processes add
    up) and the stage process's own high-water mark (VmHWM), which catches its spikes shorter
    than the polling interval. (Not wait4's ru_maxrss: a forked child starts with its parent's,
    so a small stage would report this runner's memory.)
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out = log_dir / f"{stage}-{time.monotonic_ns()}.json"
    log = log_dir / f"{out.stem}.log"
    command = [sys.executable, "-m", "bench.stages", *args, "--out", str(out)]
    peak = 0
    with open(log, "w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd())
        root = psutil.Process(process.pid)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(root), _high_water_mark(process.pid))
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    result: dict = {}
    if out.exists():
        result = json.loads(out.read_text())
    ok = process.returncode == 0
    error = ""
    if not ok:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        # The last line naming an error; Prefect and dbt log shutdown chatter after it.
        named = [ln for ln in lines if "Error" in ln or "Exception" in ln or "failed" in ln]
        error = ((named or lines)[-1] if lines else f"exit code {process.returncode}")[:300]
    cpu = usage.ru_utime + usage.ru_stime  # includes reaped descendants such as dbt
    return Measurement(stage, round(seconds, 3), round(peak / 2**20, 1), round(cpu, 3), ok, error, result)
