"""The shared suite of fct_klines_hourly and fct_klines_daily (rollups of 1-minute candles)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from expectations.suites import _marts as m

GRAIN = ["market", "symbol", "open_time"]


def build(name: str, params: dict) -> gx.ExpectationSuite:
    exps: list = []
    m.row_count_bounds(exps, params)
    m.grain(exps, GRAIN)
    m.ohlc(exps)
    m.non_negative(exps, ["volume", "quote_volume", "num_trades", "taker_buy_base_volume"])
    m.finite(exps, ["simple_return", "log_return", "vwap"])
    exps.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="expected_candle_count", column_B="candle_count", or_equal=True
        )
    )
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="candle_count", min_value=1))
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__completeness",
            min_value=params.get("min_period_completeness", 0.5),
            mostly=params.get("complete_share", 0.95),
            description="Completeness: at least 95% of periods hold at least half of their candles "
            "(the newest period of each series is still filling and is not counted).",
        )
    )
    m.rollup_expectations(exps, params)
    m.fresh(exps, "open_time", params)
    return m.suite(name, exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    completeness = (frame["candle_count"] / frame["expected_candle_count"]).astype("float64")
    # The newest period of a series is the one candles are still arriving for (an incremental
    # run an hour into the day has 60 of 1440): null, so the completeness check skips it.
    newest = frame.groupby(["market", "symbol"], observed=True, sort=False)["open_time"].transform("max")
    frame = frame.assign(check__completeness=completeness.where(frame["open_time"] != newest))
    inputs = params.get("rollup_inputs")
    return m.missing_periods(m.rollup_errors(frame, inputs), inputs)
