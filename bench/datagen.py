"""Plain random-walk 1-minute klines for the benchmark's extra hour (and a fallback generator)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from flows.lake import BatchRef, land_frame
from flows.schemas import KLINE_KEY, cast_klines


def klines_frame(
    symbols: Sequence[str],
    start: datetime,
    minutes: int,
    seed: int = 7,
    first_open: dict[str, float] | None = None,
    market: str = "spot",
) -> pd.DataFrame:
    """Valid candles (high >= open/close >= low, taker volume <= volume) in the raw kline schema."""
    rng = np.random.default_rng(seed)
    first_open = first_open or {}
    opens = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=minutes, freq="min")
    frames = []
    for i, symbol in enumerate(symbols):
        price0 = first_open.get(symbol, 100.0 * (i + 1))
        path = price0 * np.exp(np.cumsum(rng.normal(0, 0.001, minutes + 1)))
        path[0] = price0
        open_, close = path[:-1], path[1:]
        spread = np.abs(rng.normal(0, 0.0005, minutes)) * open_
        volume = rng.lognormal(2.0, 0.5, minutes)
        frames.append(
            pd.DataFrame(
                {
                    "market": market,
                    "symbol": symbol,
                    "interval": "1m",
                    "open_time": opens,
                    "close_time": opens + pd.Timedelta(milliseconds=59_999),
                    "open": open_,
                    "high": np.maximum(open_, close) + spread,
                    "low": np.minimum(open_, close) - spread,
                    "close": close,
                    "volume": volume,
                    "quote_volume": volume * (open_ + close) / 2,
                    "num_trades": rng.integers(1, 500, minutes),
                    "taker_buy_base_volume": volume * rng.uniform(0.2, 0.8, minutes),
                    "taker_buy_quote_volume": 0.0,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["taker_buy_quote_volume"] = frame["taker_buy_base_volume"] * frame["quote_volume"] / frame["volume"]
    return cast_klines(frame)


def land_klines(lake_dir: Path, frame: pd.DataFrame, zone: str = "landing") -> list[BatchRef]:
    """Land klines the way the synthetic source does: symbol/interval/date partitions."""
    return land_frame(
        frame,
        lake_dir,
        source="synthetic",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone=zone,
    )
