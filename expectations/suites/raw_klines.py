"""Gate 1 suite for raw klines from every source (REST, archive, upload, synthetic)."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.suites._common import (
    NON_FINITE,
    add_finite,
    add_key_unique,
    add_schema,
    add_time_range,
    flag,
    key_is_unique,
    non_finite_column,
    params_now,
)
from flows.schemas import INTERVAL_MS, KLINE_COLUMNS, KLINE_KEY
from flows.settings import KLINE_INTERVALS

KEY = list(KLINE_KEY)
DERIVED = [
    "check__open_time_offset_ms",
    "check__close_time_error_ms",
    "check__ms_closed_before_now",
    "check__wick_ratio",
    "check__price_jump_sigmas",
    "check__key_unique_in_batch",
    NON_FINITE,
]
NUMBERS = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
]
WEEK_ANCHOR_MS = 4 * 86_400_000  # Binance weeks open on Monday; 1970-01-01 was a Thursday
DEFAULTS = {"price_jump_sigmas": 12.0, "price_jump_window": 60, "wick_ratio": 3.0}


def build_suite(params: dict) -> gx.ExpectationSuite:
    p = {**DEFAULTS, **params}
    exps: list = []
    add_schema(exps, KLINE_COLUMNS, DERIVED)
    for column in [*KEY, "close_time", "open", "high", "low", "close", "volume"]:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="market", value_set=["spot", "usdm"]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="interval", value_set=list(KLINE_INTERVALS)))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(column="symbol", regex=r"^[A-Z0-9]{2,20}$"))
    add_time_range(exps, "open_time", p)
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__open_time_offset_ms",
            min_value=0,
            max_value=0,
            description="open_time is aligned to its interval (calendar month start for 1M, Monday for 1w).",
        )
    )
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__close_time_error_ms",
            min_value=0,
            max_value=0,
            description="close_time = open_time + interval - 1 ms (next month start - 1 ms for 1M).",
        )
    )
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__ms_closed_before_now",
            min_value=1,
            description="No candle from the future and no open candle: close_time is before the gate ran.",
        )
    )
    for column in ("open", "close", "low"):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B=column, or_equal=True)
        )
    for column in ("open", "close"):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=column, column_B="low", or_equal=True)
        )
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="low", min_value=0, strict_min=True))
    for column in (
        "volume",
        "quote_volume",
        "num_trades",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
    ):
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0))
    # Uploads may not know the quote or taker volumes (null): only known pairs are compared.
    for total, taker in (("volume", "taker_buy_base_volume"), ("quote_volume", "taker_buy_quote_volume")):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=total, column_B=taker, or_equal=True, ignore_row_if="either_value_is_missing"
            )
        )
    add_key_unique(exps, KEY)
    # high >= close holds for inf >= inf and volumes >= 0 for inf: neither stops an infinity.
    add_finite(exps, NUMBERS)
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="check__wick_ratio",
                max_value=p["wick_ratio"],
                description=f"Flag only: a wick more than {p['wick_ratio']:g}x beyond the candle body "
                "(high / max(open, close) or min(open, close) / low) is counted, not quarantined; "
                "prices are never capped (a real squeeze must reach the marts).",
            )
        )
    )
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="check__price_jump_sigmas",
                max_value=p["price_jump_sigmas"],
                description=f"Flag only: a close-to-close move beyond {p['price_jump_sigmas']:g} standard "
                f"deviations of the previous {p['price_jump_window']} returns is counted, not "
                "quarantined (real markets jump).",
            )
        )
    )
    return gx.ExpectationSuite(name="raw_klines", expectations=exps)


def _ms(series: pd.Series) -> np.ndarray:
    """Epoch milliseconds as float (NaN where missing), whatever the timestamp unit."""
    if not pd.api.types.is_datetime64_any_dtype(series):
        raise TypeError(f"{series.name} is {series.dtype}, not a timestamp")
    values = series.dt.tz_convert("UTC") if series.dt.tz is not None else series.dt.tz_localize("UTC")
    out = values.astype("datetime64[ms, UTC]").to_numpy(dtype="datetime64[ms]").astype("int64")
    return np.where(series.isna().to_numpy(), np.nan, out.astype("float64"))


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """The check__ columns the suite validates: interval alignment, closing, wicks, jumps, keys."""
    p = {**DEFAULTS, **params}
    open_ms = _ms(frame["open_time"])
    close_ms = _ms(frame["close_time"])
    # Per distinct interval, then spread by code (-1, a missing interval, picks the last entry).
    codes, names = pd.factorize(frame["interval"])
    names = [str(name) for name in names]
    length = np.array([*(INTERVAL_MS.get(n, np.nan) for n in names), np.nan], dtype="float64")[codes]
    weekly = np.array([*(n == "1w" for n in names), False])[codes]
    monthly = np.array([*(n == "1M" for n in names), False])[codes]
    offset = np.mod(open_ms - np.where(weekly, WEEK_ANCHOR_MS, 0), length)
    expected_close = open_ms + length - 1
    if monthly.any():
        opened = open_ms[monthly].astype("int64").astype("datetime64[ms]")
        month = opened.astype("datetime64[M]")
        offset[monthly] = (opened - month.astype("datetime64[ms]")).astype("int64")
        following = (month + 1).astype("datetime64[ms]").astype("int64")
        expected_close[monthly] = following - 1
    now_ms = params_now(p).timestamp() * 1000
    high, low = frame["high"].to_numpy("float64"), frame["low"].to_numpy("float64")
    open_, close = frame["open"].to_numpy("float64"), frame["close"].to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        wick = np.fmax(high / np.fmax(open_, close), np.fmin(open_, close) / low)
    return frame.assign(
        check__open_time_offset_ms=offset,
        check__close_time_error_ms=close_ms - expected_close,
        check__ms_closed_before_now=now_ms - close_ms,
        check__wick_ratio=np.where(np.isfinite(wick), wick, np.nan),
        check__price_jump_sigmas=price_jump_sigmas(
            frame, open_ms, close, int(p["price_jump_window"]), p.get(HISTORY)
        ),
        check__key_unique_in_batch=key_is_unique(frame, KEY, params),
        **{NON_FINITE: non_finite_column(frame, NUMBERS)},
    )


# params entry gate 1 fills for raw klines: the accepted candles just before each series of the
# batch (HISTORY_COLUMNS), so a batch shorter than the window (an hourly run's 60 minutes, a
# few days of 1d candles) is scored against the volatility before it.
HISTORY = "jump_history"
SERIES = ["market", "symbol", "interval"]


def price_jump_sigmas(
    frame: pd.DataFrame,
    open_ms: np.ndarray,
    close: np.ndarray,
    window: int,
    history: pd.DataFrame | None = None,
) -> np.ndarray:
    """|log return| over the std of the previous `window` log returns, per market/symbol/interval.

    Rows are ordered by series and time first. history (market, symbol, interval, open_ms,
    close: accepted candles before the batch) goes in front of its series and is not scored.
    A row with fewer than `window` returns before it has no history and is not scored: 0, like
    any row without a finite score (not NaN, which would make GE copy the whole frame to drop
    nulls for each metric of the check).
    """
    n = len(frame)
    if n == 0:
        return np.zeros(0)
    scores, position = _jump_scores(frame[SERIES], open_ms, close, window)
    head = np.flatnonzero(position <= window)  # rows with too few returns before them in the batch
    if history is None or not len(history) or not len(head):
        return scores
    # Only those rows are scored again, with the candles before the batch in front: a few rows a
    # series, not a copy of the whole batch.
    rows = pd.concat([frame[SERIES].iloc[head], history[SERIES]], ignore_index=True)
    rescored, _ = _jump_scores(
        rows,
        np.concatenate([open_ms[head], history["open_ms"].to_numpy("float64")]),
        np.concatenate([close[head], history["close"].to_numpy("float64")]),
        window,
    )
    scores[head] = rescored[: len(head)]
    return scores


def _jump_scores(
    frame: pd.DataFrame, open_ms: np.ndarray, close: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and each row's position in its series (rows before it), in the frame's order."""
    n = len(frame)
    series = frame.groupby(SERIES, sort=False, observed=True).ngroup().to_numpy()
    order = np.lexsort((np.nan_to_num(open_ms), series))
    series_sorted = series[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(close[order]), prepend=np.nan)
    starts = np.r_[True, series_sorted[1:] != series_sorted[:-1]]
    returns[starts] = np.nan
    history = pd.Series(returns).rolling(window, min_periods=window // 2).std().shift(1).to_numpy()
    position = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.abs(returns) / history
    score[(position <= window) | ~np.isfinite(score)] = 0.0
    out, where = np.empty(n), np.empty(n, dtype=np.int64)
    out[order], where[order] = score, position
    return out, where


def history(lake_dir: Path, frame: pd.DataFrame, params: dict) -> pd.DataFrame | None:
    """The accepted candles (from any source) just before each series of the batch: at most
    `price_jump_window` + 1 per series, one per open time, read from the raw lake's date
    partitions that can hold them. None when there are none."""
    window = int({**DEFAULTS, **params}["price_jump_window"])
    if not len(frame) or not set(SERIES) <= set(frame.columns):
        return None
    firsts = frame.groupby(SERIES, observed=True, sort=False)["open_time"].min()
    parts = []
    for (market, symbol, interval), first in firsts.items():
        length = INTERVAL_MS.get(str(interval), 31 * 86_400_000)  # 1M: at most 31 days
        if pd.isna(first):
            continue
        first = (
            pd.Timestamp(first).tz_convert("UTC")
            if pd.Timestamp(first).tzinfo
            else pd.Timestamp(first, tz="UTC")
        )
        since = first - pd.Timedelta(milliseconds=length * (window + 1))
        files = [
            path
            for day in pd.date_range(since.floor("D"), first.floor("D"), freq="D")
            for path in Path(lake_dir).glob(
                f"raw/*/klines/symbol={symbol}/interval={interval}/date={day:%Y-%m-%d}/*.parquet"
            )
        ]
        if not files:
            continue
        tables = [
            pq.read_table(f, columns=["market", "open_time", "close"], partitioning=None) for f in files
        ]
        earlier = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        earlier = earlier[(earlier["market"] == market) & (earlier["open_time"] < first)]
        earlier = earlier.drop_duplicates("open_time", keep="last").nlargest(window + 1, "open_time")
        parts.append(
            pd.DataFrame(
                {
                    "market": market,
                    "symbol": symbol,
                    "interval": interval,
                    "open_ms": _ms(earlier["open_time"]),
                    "close": earlier["close"].to_numpy("float64"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else None
