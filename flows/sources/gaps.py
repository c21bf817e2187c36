"""Missing candles in lake/raw klines against each series' expected grid, per day."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from flows.schemas import INTERVAL_MS

DAY_MS = 86_400_000
# Weekly candles open on Monday 00:00 UTC; 1970-01-01 was a Thursday, four days earlier.
WEEK_OFFSET_MS = 4 * DAY_MS


@dataclass(frozen=True)
class Gap:
    """A run of missing candles within one day of one series (open times inclusive)."""

    market: str
    symbol: str
    interval: str
    date: str
    first_open_ms: int
    last_open_ms: int
    missing: int

    def as_row(self) -> list[object]:
        # Runs never cross midnight, so the date column plus a time of day says it all.
        def text(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")

        return [
            self.market,
            self.symbol,
            self.interval,
            self.date,
            text(self.first_open_ms),
            text(self.last_open_ms),
            self.missing,
        ]


GAP_COLUMNS = ["market", "symbol", "interval", "date", "first_open", "last_open", "missing"]


def month_starts(first_ms: int, last_ms: int) -> np.ndarray:
    """Month starts (ms) in [first_ms, last_ms]."""
    first = pd.Timestamp(first_ms, unit="ms", tz="UTC")
    begin = first.normalize().replace(day=1)
    if begin < first:
        begin += pd.DateOffset(months=1)
    months = pd.date_range(begin, pd.Timestamp(last_ms, unit="ms", tz="UTC"), freq="MS")
    return months.as_unit("ms").asi8.astype("int64")


def next_open_ms(interval: str, open_ms: int) -> int:
    """The open time after this one (calendar months for 1M)."""
    if interval == "1M":
        following = pd.Timestamp(open_ms, unit="ms", tz="UTC") + pd.DateOffset(months=1)
        return int(following.value // 1_000_000)
    return open_ms + INTERVAL_MS[interval]


def expected_grid(interval: str, first_ms: int, last_ms: int, anchor_ms: int | None = None) -> np.ndarray:
    """Every open time in [first_ms, last_ms] on the interval's grid (anchored on real data)."""
    if last_ms < first_ms:
        return np.empty(0, dtype="int64")
    if interval == "1M":
        return month_starts(first_ms, last_ms)
    step = INTERVAL_MS[interval]
    if anchor_ms is None:
        anchor_ms = WEEK_OFFSET_MS if interval == "1w" else 0
    begin = anchor_ms + -(-(first_ms - anchor_ms) // step) * step
    return np.arange(begin, last_ms + 1, step, dtype="int64")


def missing_runs(interval: str, missing: np.ndarray) -> Iterable[tuple[int, int, int]]:
    """Consecutive missing open times split at day boundaries: (first, last, count)."""
    if missing.size == 0:
        return
    days = missing // DAY_MS
    if interval == "1M":
        breaks = np.ones(missing.size - 1, dtype=bool)
        for i in range(missing.size - 1):
            breaks[i] = next_open_ms(interval, int(missing[i])) != int(missing[i + 1])
    else:
        breaks = np.diff(missing) != INTERVAL_MS[interval]
    breaks |= np.diff(days) != 0
    starts = np.concatenate(([0], np.nonzero(breaks)[0] + 1))
    ends = np.concatenate((starts[1:], [missing.size]))
    for a, b in zip(starts, ends, strict=True):
        yield int(missing[a]), int(missing[b - 1]), int(b - a)


def present_open_times(
    lake_dir: Path,
    markets: Iterable[str] | None,
    symbols: Iterable[str] | None,
    intervals: Iterable[str] | None,
) -> pd.DataFrame:
    """Distinct (market, symbol, interval, open_ms) in lake/raw klines of every source."""
    import duckdb

    files = []
    root = Path(lake_dir) / "raw"
    for path in root.glob("*/klines/symbol=*/interval=*/date=*/*.parquet"):
        symbol = path.parent.parent.parent.name.removeprefix("symbol=")
        interval = path.parent.parent.name.removeprefix("interval=")
        if path.name.startswith(".tmp-"):
            continue
        if symbols is not None and symbol not in set(symbols):
            continue
        if intervals is not None and interval not in set(intervals):
            continue
        files.append(str(path))
    if not files:
        return pd.DataFrame({"market": [], "symbol": [], "interval": [], "open_ms": []})
    market_filter = ""
    params: list[object] = [sorted(files)]
    if markets is not None:
        market_filter = "where list_contains(?, market)"
        params.append(list(markets))
    with duckdb.connect() as con:
        return con.execute(
            "select distinct market, symbol, interval, epoch_ms(open_time) as open_ms "
            f"from read_parquet(?, hive_partitioning=false, union_by_name=true) {market_filter} "
            "order by all",
            params,
        ).df()


def find_gaps(
    lake_dir: Path,
    *,
    markets: Iterable[str] | None = None,
    symbols: Iterable[str] | None = None,
    intervals: Iterable[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
    checked: list[tuple[str, str, str]] | None = None,
) -> list[Gap]:
    """Missing closed candles per market/symbol/interval/day (`checked` receives the series looked at).

    Without a range, each series is checked from its first to its last candle (holes only).
    With start_ms/end_ms, the grid covers [start, end) clipped to closed candles, and series
    named by markets x symbols x intervals that have no data at all are reported whole.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    markets = list(markets) if markets is not None else None
    symbols = list(symbols) if symbols is not None else None
    intervals = list(intervals) if intervals is not None else None
    present = present_open_times(lake_dir, markets, symbols, intervals)
    series: dict[tuple[str, str, str], np.ndarray] = {
        key: group["open_ms"].to_numpy(dtype="int64")
        for key, group in present.groupby(["market", "symbol", "interval"], sort=True)
    }
    ranged = start_ms is not None and end_ms is not None
    if ranged and markets and symbols and intervals:
        for key in ((m, s, i) for m in markets for s in symbols for i in intervals):
            series.setdefault(key, np.empty(0, dtype="int64"))
    if checked is not None:
        checked.extend(sorted(series))
    gaps: list[Gap] = []
    for (market, symbol, interval), opens in sorted(series.items()):
        if ranged:
            first = start_ms
            # Only closed candles are due: the last one must have closed before now.
            last = end_ms - 1
            if interval == "1M":
                due = [t for t in month_starts(first, last) if next_open_ms(interval, t) <= now_ms]
                last = due[-1] if due else first - 1
            else:
                last = min(last, now_ms - INTERVAL_MS[interval])
            anchor = int(opens[0]) if opens.size else None
        else:
            if opens.size == 0:
                continue
            first, last, anchor = int(opens[0]), int(opens[-1]), int(opens[0])
        grid = expected_grid(interval, first, last, anchor)
        missing = np.setdiff1d(grid, opens, assume_unique=True)
        for lo, hi, count in missing_runs(interval, missing):
            day = datetime.fromtimestamp(lo / 1000, UTC).strftime("%Y-%m-%d")
            gaps.append(Gap(market, symbol, interval, day, lo, hi, count))
    return gaps


def gap_ranges(gaps: Iterable[Gap]) -> list[tuple[str, str, str, int, int]]:
    """Fetch ranges [first, after last) per series, joining runs that continue over midnight."""
    ranges: list[list] = []
    for gap in sorted(gaps, key=lambda g: (g.market, g.symbol, g.interval, g.first_open_ms)):
        end = next_open_ms(gap.interval, gap.last_open_ms)
        last = ranges[-1] if ranges else None
        if last and last[:3] == [gap.market, gap.symbol, gap.interval] and last[4] == gap.first_open_ms:
            last[4] = end
        else:
            ranges.append([gap.market, gap.symbol, gap.interval, gap.first_open_ms, end])
    return [tuple(r) for r in ranges]
