"""Benchmark: server-side render time of every dashboard page (AppTest), cold and warm cache."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboards import sample_snapshot

PAGES_DIR = Path(__file__).parent / "app_pages"
PAGES = (
    "overview",
    "market",
    "order_flow",
    "volatility",
    "pairs",
    "users",
    "transactions",
    "network",
    "data_quality",
    "export",
)
# The "M" scale point of the benchmarks: 10 symbols x 1 year, whose 1-minute klines (5.3M rows)
# roll up into 87,600 hourly rows; users and transactions at the synthetic defaults' order.
M_SCALE = {"symbols": 10, "days": 365, "users": 100_000, "transactions": 1_000_000}


def _timed(app: AppTest) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    app.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if app.exception:
        raise RuntimeError(f"page raised: {app.exception[0].value}")
    return wall, cpu


def render_times(lake_dir: Path, pages: tuple[str, ...] = PAGES, repeats: int = 5) -> dict:
    """Seconds per page run over lake_dir's CURRENT snapshot: cold (empty caches) and warm median.

    Each page gets one AppTest whose first run is discarded: it scans every installed package for
    Streamlit components, a cost the real server pays once at start-up, not per page view.
    Wall time suffers from other processes on a shared machine; process CPU time does not.
    """
    previous = os.environ.get("LAKEHOUSE_LAKE_DIR")
    os.environ["LAKEHOUSE_LAKE_DIR"] = str(lake_dir)
    try:
        results = {}
        for page in pages:
            app = AppTest.from_file(str(PAGES_DIR / f"{page}.py"), default_timeout=300)
            app.run()
            st.cache_data.clear()
            st.cache_resource.clear()
            cold_wall, cold_cpu = _timed(app)
            warm = [_timed(app) for _ in range(repeats)]
            results[page] = {
                "cold_s": cold_wall,
                "cold_cpu_s": cold_cpu,
                "warm_median_s": statistics.median(w for w, _ in warm),
                "warm_cpu_median_s": statistics.median(c for _, c in warm),
            }
        return results
    finally:
        if previous is None:
            os.environ.pop("LAKEHOUSE_LAKE_DIR", None)
        else:
            os.environ["LAKEHOUSE_LAKE_DIR"] = previous


def build_sample(lake_dir: Path, symbols: int, days: int, users: int, transactions: int) -> dict:
    names = tuple(sample_snapshot.SYMBOLS) + tuple(f"SYM{i:02d}USDT" for i in range(symbols))
    marts = sample_snapshot.build_marts(
        symbols=names[:symbols], days=days, users=users, transactions=transactions
    )
    sample_snapshot.write_snapshot(lake_dir, marts=marts)
    return {name: len(frame) for name, frame in marts.items()}


def markdown(results: dict) -> str:
    lines = [
        "| page | cold wall (s) | cold CPU (s) | warm wall median (s) | warm CPU median (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {page} | {r['cold_s']:.3f} | {r['cold_cpu_s']:.3f} | {r['warm_median_s']:.3f} "
        f"| {r['warm_cpu_median_s']:.3f} |"
        for page, r in results.items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake-dir", type=Path, help="use this lake's CURRENT snapshot as is")
    parser.add_argument("--symbols", type=int, default=M_SCALE["symbols"])
    parser.add_argument("--days", type=int, default=M_SCALE["days"])
    parser.add_argument("--users", type=int, default=M_SCALE["users"])
    parser.add_argument("--transactions", type=int, default=M_SCALE["transactions"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        lake = args.lake_dir
        if lake is None:
            lake = Path(scratch) / "lake"
            rows = build_sample(lake, args.symbols, args.days, args.users, args.transactions)
            print(
                f"sample snapshot: {rows['fct_klines_hourly']:,} hourly klines, "
                f"{rows['fct_pairs_hourly']:,} pair-hours, {rows['fct_transactions']:,} transactions"
            )
        results = render_times(lake, repeats=args.repeats)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
