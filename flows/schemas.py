"""Raw dataset schemas shared by every source, and the casts that enforce them."""

from __future__ import annotations

import pandas as pd

KLINE_KEY = ("market", "symbol", "interval", "open_time")
KLINE_COLUMNS: dict[str, str] = {
    "market": "string",
    "symbol": "string",
    "interval": "string",
    "open_time": "timestamp",
    "close_time": "timestamp",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "quote_volume": "float64",
    "num_trades": "int64",
    "taker_buy_base_volume": "float64",
    "taker_buy_quote_volume": "float64",
}

INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}  # "1M" has no fixed length: months are computed from calendar dates.


def cast_frame(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Select and cast the schema's columns; timestamps become UTC with ms precision."""
    out = pd.DataFrame(index=frame.index)
    for name, kind in columns.items():
        series = frame[name]
        if kind == "timestamp":
            if pd.api.types.is_numeric_dtype(series):
                series = pd.to_datetime(series, unit="ms", utc=True)
            else:
                series = pd.to_datetime(series, utc=True)
            out[name] = series.dt.floor("ms").astype("datetime64[ms, UTC]")
        elif kind == "string":
            out[name] = series.astype(str)
        else:
            out[name] = series.astype(kind)
    return out


def cast_klines(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame in the raw kline schema (lineage columns are added by the lake writer)."""
    return cast_frame(frame, KLINE_COLUMNS)
