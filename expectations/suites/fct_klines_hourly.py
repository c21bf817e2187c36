"""Gate 2 suite for fct_klines_hourly: grain, OHLC, completeness, rollup totals, freshness, row count."""

from __future__ import annotations

import great_expectations as gx
import pandas as pd

from expectations.suites import _kline_rollup

ROLLUP = "hour"


def build_suite(params: dict) -> gx.ExpectationSuite:
    return _kline_rollup.build("fct_klines_hourly", params)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    return _kline_rollup.prepare(frame, params)
