"""`make bench`: measure every scale point, save the figures, rewrite docs/benchmarks.md with plots."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.compare import compare_dirs
from bench.measure import Measurement, measure
from bench.scales import SCALES, Scale

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
# Benchmarks written by other parts of the project; each is run as `python -m bench.<name>`.
EXTRAS = ("bench_synthetic", "bench_archive", "bench_stream")  # page renders: the dashboard stage
EXTRA_TIMEOUT_SECONDS = 900
FULL_REFRESH = ("generate", "gate1", "build", "publish")
INCREMENTAL_RUNS = 3
# The published marts and the naive script's outputs that compute the same thing.
PUBLISHED_VS_NAIVE = {
    "fct_klines_hourly": "klines_hourly",
    "fct_klines_daily": "klines_daily",
    "fct_order_flow_hourly": "order_flow_hourly",
    "fct_volatility_daily": "volatility_daily",
    "fct_return_correlations": "return_correlations",
}
PRIMARY_CHECK = ("klines_hourly", "klines_daily")


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


class Runner:
    """Runs the stages of one scale point in fresh processes, each against a temporary lake."""

    def __init__(self, scale: Scale, work: Path, env: dict[str, str]):
        self.scale = scale
        self.work = work
        self.env = env
        self.stages: dict[str, list[dict]] = {}
        self.on_stage = lambda: None

    def run(
        self, name: str, stage: str, lake: Path, *extra: str, env: dict[str, str] | None = None
    ) -> Measurement:
        args = [stage, "--lake", str(lake), "--scale", self.scale.name, *extra]
        env = {
            **self.env,
            **(env or {}),
            "LAKEHOUSE_LAKE_DIR": str(lake),
            "LAKEHOUSE_GX_DIR": str(lake / "gx"),
        }
        result = measure(name, args, env, self.work / "logs")
        self.stages.setdefault(name, []).append(result.as_dict())
        status = "ok" if result.ok else f"FAILED: {result.error}"
        log(f"{self.scale.name} {name}: {result.seconds:.1f} s, {result.peak_mb:.0f} MB peak, {status}")
        self.on_stage()
        return result


def published_dir(lake: Path) -> Path | None:
    pointer = lake / "marts" / "CURRENT"
    if not pointer.exists():
        return None
    return lake / "marts" / pointer.read_text().strip()


def run_scale(scale: Scale, work: Path, env: dict[str, str], repeats: int, e2e: bool) -> dict:
    """Full refresh, the baselines, the check, archive import, dashboard, incremental hour, e2e."""
    runner = Runner(scale, work, env)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    agreement, floor_agreement = [], []

    def summary(complete: bool) -> dict:
        return {
            "scale": scale.name,
            "symbols": scale.symbols,
            "days": scale.days,
            "klines": scale.klines,
            "users": scale.users,
            "tx_per_day": scale.tx_per_day,
            "repeats": repeats,
            "measured_at": started.isoformat(timespec="seconds"),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "stages": runner.stages,
            "agreement": agreement,
            "floor_agreement": floor_agreement,
            "complete": complete,
        }

    # Saved after every stage, so an interrupted run still leaves what it measured.
    runner.on_stage = lambda: save_result(summary(False))
    for repeat in range(repeats):
        last = repeat == repeats - 1
        lake = work / f"{scale.name}-{repeat}" / "lake"
        done = set()
        for stage in FULL_REFRESH:
            if not runner.run(stage, stage, lake, "--full-refresh").ok:
                break
            done.add(stage)
        if "gate1" not in done:
            break
        # The baselines read the raw zone gate 1 wrote, whatever the later stages did.
        naive_out, floor_out = lake.parent / "naive", lake.parent / "floor"
        runner.run("naive", "naive", lake, "--output", str(naive_out))
        runner.run("floor", "floor", lake, "--output", str(floor_out))
        if "build" in done:  # the compiled SQL of the full build, before an incremental one replaces it
            runner.run("floor_project", "floor_project", lake)
        published = "publish" in done
        last = last or not published  # a broken pipeline will not mend itself in the next repeat
        if last:
            snapshot = published_dir(lake)
            if published and snapshot is not None:
                agreement = [
                    r.__dict__ | {"ok": r.ok, "text": r.describe()}
                    for r in compare_dirs(snapshot, naive_out, PUBLISHED_VS_NAIVE)
                ]
            floor_agreement = [
                r.__dict__ | {"ok": r.ok, "text": r.describe()}
                for r in compare_dirs(floor_out, naive_out, {n: n for n in PUBLISHED_VS_NAIVE.values()})
            ]
            archives = lake.parent / "archives"
            if runner.run("write_archives", "write_archives", lake, "--output", str(archives)).ok:
                runner.run("archive", "archive", lake.parent / "archive-lake", "--output", str(archives))
            if published:
                runner.run("dashboard", "dashboard", lake)
        if published and last:  # in one process each, as a scheduled run would
            # Three hours in a row, for a median: one run moves by a second or more with the
            # machine (each run lands the hour after the previous one's).
            for _ in range(INCREMENTAL_RUNS):
                if not runner.run("incremental", "incremental", lake).ok:
                    break
        if last:
            break
        shutil.rmtree(lake.parent, ignore_errors=True)
    if e2e:
        if not (work / "prefect").exists():
            runner.run("prefect_warmup", "prefect_warmup", work / "warmup" / "lake")
        e2e_lake = work / f"{scale.name}-e2e" / "lake"
        runner.run("e2e", "e2e", e2e_lake)
        # "Installed, warm": the same full refresh again, with dbt's parse cache from the first
        # run, against a Prefect server that is already up (as under `make serve`) instead of a
        # temporary one started for the run (the data is landed again over the same batches).
        # As many times as the point's repeats, for a median: one run moves by a second or more
        # with the machine.
        with prefect_server(env, work / "logs") as api_url:
            for _ in range(repeats):
                if not runner.run("e2e_warm", "e2e", e2e_lake, env={"PREFECT_API_URL": api_url}).ok:
                    break
    return summary(True)


@contextlib.contextmanager
def prefect_server(env: dict[str, str], log_dir: Path, timeout: float = 180.0) -> Iterator[str]:
    """A Prefect server on a free port of 127.0.0.1 for the run; yields its API URL, then stops it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_dir.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/api"
    with open(log_dir / "prefect-server.log", "w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Prefect server did not start; see {log_dir / 'prefect-server.log'}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def save_result(result: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result['scale']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)


def run_extras(env: dict[str, str], work: Path) -> dict:
    """Other benchmark modules, each once, by name; the missing ones are listed, not fatal."""
    found, missing = {}, []
    for name in EXTRAS:
        if importlib.util.find_spec(f"bench.{name}") is None:
            missing.append(name)
            continue
        log(f"extra benchmark bench.{name}")
        started = time.perf_counter()
        try:
            process = subprocess.run(
                [sys.executable, "-m", f"bench.{name}"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=EXTRA_TIMEOUT_SECONDS,
            )
            output, code = process.stdout, process.returncode
            error = process.stderr.strip().splitlines()[-1:] if code else []
        except subprocess.TimeoutExpired:
            output, code, error = "", -1, [f"timed out after {EXTRA_TIMEOUT_SECONDS} s"]
        found[name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "returncode": code,
            "error": error[0] if error else "",
            "output": output.strip().splitlines()[-40:],
        }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "found": found,
        "missing": missing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale",
        action="append",
        choices=sorted(SCALES),
        help="scale point to run (repeatable; default S). L takes many minutes and is never a default.",
    )
    parser.add_argument("--repeats", type=int, help="override the scale's repeat count (medians)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the Prefect end-to-end run")
    parser.add_argument("--no-extras", action="store_true", help="skip the other bench_* modules")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lakes")
    parser.add_argument("--no-page", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--page-only", action="store_true", help="only rewrite the page from saved results")
    parser.add_argument("--note", help="a line shown at the top of the page (e.g. why a point was not run)")
    args = parser.parse_args(argv)
    if args.page_only:
        from bench.report import write_page

        write_page(RESULTS_DIR, PAGE, ran=[], note=args.note)
        log(f"wrote {PAGE.relative_to(ROOT)}")
        return 0
    scales = args.scale or ["S"]
    work = Path(tempfile.mkdtemp(prefix="lakehouse-bench-"))
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # the end-to-end run starts its own temporary server
    env["PREFECT_HOME"] = str(work / "prefect")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TQDM_DISABLE", "1")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    try:
        for name in scales:
            scale = SCALES[name]
            save_result(run_scale(scale, work, env, args.repeats or scale.repeats, not args.no_e2e))
        if not args.no_extras:
            extras = run_extras(env, work)
            (RESULTS_DIR / "extras.json").write_text(json.dumps(extras, indent=1))
            log(f"extras run: {sorted(extras['found'])}; missing: {extras['missing']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not args.no_page:
        from bench.report import write_page

        write_page(RESULTS_DIR, PAGE, ran=scales, note=args.note)
        log(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
