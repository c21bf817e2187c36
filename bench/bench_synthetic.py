"""Synthetic generator throughput: 10M transactions with their users, and 5M 1-minute klines."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from bench.scales import SYMBOLS

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scenario:
    name: str
    symbols: list[str]
    intervals: list[str]
    days: int
    users: int
    tx_per_day: int
    target: str

    def scaled(self, factor: float) -> Scenario:
        """The same shape at a fraction of the size (for a quick check of the script itself)."""
        return Scenario(
            self.name,
            self.symbols,
            self.intervals,
            max(1, round(self.days * factor)),
            max(2, round(self.users * factor)),
            round(self.tx_per_day * factor),
            self.target,
        )


START = date(2026, 6, 1)
SCENARIOS = {
    # 30 days x 333,334 a day = 10M transactions (Poisson per day, so within a fraction of a percent).
    "transactions_10m": Scenario(
        "transactions_10m", ["BTCUSDT", "ETHUSDT"], ["1h"], 30, 1_000_000, 333_334,
        "10M transactions with users in <= 60 s and <= 1.5 GB",
    ),
    # 50 symbols x 70 days x 1440 = 5,040,000 one-minute candles.
    "klines_5m": Scenario(
        "klines_5m", SYMBOLS[:50], ["1m"], 70, 2, 0,
        "5M 1-minute klines in <= 20 s",
    ),
}  # fmt: skip


def child(name: str, lake: Path, factor: float) -> dict:
    """Run one scenario in this (fresh) process and report its figures."""
    from flows.settings import load_settings
    from flows.sources.synthetic import land_synthetic

    scenario = SCENARIOS[name].scaled(factor)
    settings = load_settings(
        lake_dir=lake,
        symbols=",".join(scenario.symbols),
        intervals=",".join(scenario.intervals),
        start=START,
        end=START + timedelta(days=scenario.days),
        seed=42,
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = land_synthetic(settings, clean=False, users=scenario.users, tx_per_day=scenario.tx_per_day)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    files = sum(len(refs) for refs in result.refs.values())
    size = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
    return {
        "scenario": name,
        "target": scenario.target,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
        "rows": result.rows,
        "files": files,
        "parquet_mb": round(size / 2**20, 1),
    }


def run(name: str, factor: float, work: Path) -> dict:
    lake = work / name
    process = subprocess.run(
        [sys.executable, "-m", "bench.bench_synthetic", "--child", name, "--lake", str(lake),
         "--factor", str(factor)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    shutil.rmtree(lake, ignore_errors=True)
    if process.returncode:
        return {"scenario": name, "error": (process.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--factor", type=float, default=1.0, help="scale every scenario down")
    parser.add_argument("--child")
    parser.add_argument("--lake", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.lake, args.factor)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-synthetic-"))
    try:
        results = [run(name, args.factor, work) for name in args.scenario or list(SCENARIOS)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"synthetic generator, {os.cpu_count()} cores, load average after: {load}")
    print("| scenario | rows | files | wall s | cpu s | peak RSS MB | parquet MB | target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['scenario']} | failed: {r['error']} |  |  |  |  |  |  |")
            continue
        rows = ", ".join(f"{k} {v:,}" for k, v in r["rows"].items())
        print(
            f"| {r['scenario']} | {rows} | {r['files']:,} | {r['seconds']} | {r['cpu_seconds']} | "
            f"{r['peak_rss_mb']} | {r['parquet_mb']} | {r['target']} |"
        )
    print(json.dumps(results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
