"""Baseline (b): the same market marts the single-script way (read everything, groupby, write)."""

from __future__ import annotations

import argparse
import glob
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["market", "symbol", "interval", "open_time"]
GROUP = ["market", "symbol"]
# Trailing windows of the correlation mart, in hours, evaluated at the end of each UTC day.
CORRELATION_WINDOWS = {"1d": 24, "7d": 168, "30d": 720}
MIN_CORRELATION_OBSERVATIONS = 3
SUMS = ["volume", "quote_volume", "num_trades", "taker_buy_base_volume", "taker_buy_quote_volume"]


def read_klines(paths: list[str]) -> pd.DataFrame:
    """Every raw kline file into one frame; latest ingested copy of a candle wins, as in staging."""
    frame = pd.concat((pd.read_parquet(p) for p in paths), ignore_index=True)
    frame = frame[frame["interval"] == "1m"]
    frame = frame.sort_values([*KEY, "ingested_at", "batch_id"])
    return frame.drop_duplicates(KEY, keep="last").reset_index(drop=True)


def previous_if_adjacent(frame: pd.DataFrame, column: str, step: pd.Timedelta) -> pd.Series:
    """The previous row's value within the symbol, only when it is exactly one step earlier."""
    grouped = frame.groupby(GROUP)
    adjacent = grouped["open_time"].shift() == frame["open_time"] - step
    return grouped[column].shift().where(adjacent)


def rollup(klines: pd.DataFrame, freq: str, minutes: int) -> pd.DataFrame:
    """OHLCV per market, symbol and period, with vwap, returns, realized volatility, completeness."""
    period = klines["open_time"].dt.floor(freq).rename("open_time")
    grouped = klines.groupby([klines["market"], klines["symbol"], period], sort=True)
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        **{c: (c, "sum") for c in SUMS},
        sum_r2=("minute_r2", lambda s: s.sum(min_count=1)),
        candle_count=("open", "size"),
    ).reset_index()
    out["vwap"] = out["quote_volume"] / out["volume"].replace(0, np.nan)
    previous = previous_if_adjacent(out, "close", pd.Timedelta(minutes=minutes))
    out["simple_return"] = out["close"] / previous - 1
    out["log_return"] = np.log(out["close"] / previous)
    out["realized_volatility"] = np.sqrt(out.pop("sum_r2"))
    out["is_complete"] = out["candle_count"] == minutes
    columns = ["market", "symbol", "open_time", "open", "high", "low", "close", *SUMS, "vwap"]
    return out[
        [*columns, "simple_return", "log_return", "realized_volatility", "candle_count", "is_complete"]
    ]


def volatility_daily(daily: pd.DataFrame) -> pd.DataFrame:
    """Per day: realized (from 1-minute returns), Parkinson and Garman-Klass volatility."""
    range_term = np.log(daily["high"] / daily["low"]) ** 2
    body_term = np.log(daily["close"] / daily["open"]) ** 2
    return pd.DataFrame(
        {
            "market": daily["market"],
            "symbol": daily["symbol"],
            "trading_date": daily["open_time"].dt.date,
            "log_return": daily["log_return"],
            "realized_volatility": daily["realized_volatility"],
            "parkinson_volatility": np.sqrt(range_term / (4 * np.log(2))),
            "garman_klass_volatility": np.sqrt(
                np.maximum(0.5 * range_term - (2 * np.log(2) - 1) * body_term, 0)
            ),
        }
    )


def order_flow_hourly(hourly: pd.DataFrame) -> pd.DataFrame:
    """Taker buy/sell volume, volume delta and cumulative volume delta (per day and running)."""
    out = hourly[["market", "symbol", "open_time"]].copy()
    out["taker_buy_volume"] = hourly["taker_buy_base_volume"]
    out["taker_sell_volume"] = hourly["volume"] - hourly["taker_buy_base_volume"]
    out["volume_delta"] = out["taker_buy_volume"] - out["taker_sell_volume"]
    day = out["open_time"].dt.floor("D")
    out["cvd_daily"] = out.groupby([out["market"], out["symbol"], day])["volume_delta"].cumsum()
    out["cvd_running"] = out.groupby(GROUP)["volume_delta"].cumsum()
    return out


def return_correlations(hourly: pd.DataFrame) -> pd.DataFrame:
    """Per pair and day end, the correlation of hourly log returns over trailing 1, 7, 30 days."""
    rows = []
    for market, frame in hourly.groupby("market", sort=True):
        returns = frame.pivot(index="open_time", columns="symbol", values="log_return")
        closes = frame.pivot(index="open_time", columns="symbol", values="close")
        # A full hourly grid, so a time window of N hours holds exactly the hours (t - N h, t].
        grid = pd.date_range(returns.index.min(), returns.index.max(), freq="h", name="open_time")
        returns, closes = returns.reindex(grid), closes.reindex(grid)
        day_ends = grid[grid.hour == 23]
        for a, b in combinations(sorted(returns.columns), 2):
            # Evaluated where both symbols have the 23:00 candle, as the pairs join does.
            ends = day_ends[closes.loc[day_ends, a].notna() & closes.loc[day_ends, b].notna()]
            both = (returns[a].notna() & returns[b].notna()).astype(float)
            for label, hours in CORRELATION_WINDOWS.items():
                window = f"{hours}h"
                observations = both.rolling(window).sum().loc[ends].to_numpy().astype("int64")
                correlation = returns[a].rolling(window).corr(returns[b]).loc[ends].to_numpy(copy=True)
                correlation[observations < MIN_CORRELATION_OBSERVATIONS] = np.nan
                rows.append(
                    pd.DataFrame(
                        {
                            "market": market,
                            "symbol_a": a,
                            "symbol_b": b,
                            "window_end": ends + pd.Timedelta(hours=1),
                            "return_window": label,
                            "window_hours": hours,
                            "correlation": correlation,
                            "observations": observations,
                        }
                    )
                )
    columns = ["market", "symbol_a", "symbol_b", "window_end", "return_window", "window_hours"]
    if not rows:
        return pd.DataFrame(columns=[*columns, "correlation", "observations"])
    return pd.concat(rows, ignore_index=True)


def compute(klines: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """All the marts the benchmark compares, from deduplicated 1-minute klines."""
    klines = klines.sort_values(["market", "symbol", "open_time"]).reset_index(drop=True)
    previous = previous_if_adjacent(klines, "close", pd.Timedelta(minutes=1))
    klines["minute_r2"] = np.log(klines["close"] / previous) ** 2
    hourly = rollup(klines, "h", 60)
    daily = rollup(klines, "D", 1440)
    return {
        "klines_hourly": hourly,
        "klines_daily": daily,
        "volatility_daily": volatility_daily(daily),
        "order_flow_hourly": order_flow_hourly(hourly),
        "return_correlations": return_correlations(hourly),
    }


def run(raw_glob: str, out_dir: Path) -> dict[str, int]:
    """Read every file under the glob, compute, write one parquet per mart; returns row counts."""
    paths = sorted(glob.glob(raw_glob, recursive=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, frame in compute(read_klines(paths)).items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_glob")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    print(run(args.raw_glob, args.out_dir))


if __name__ == "__main__":
    main()
