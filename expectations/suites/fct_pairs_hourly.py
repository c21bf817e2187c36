"""Gate 2 suite for fct_pairs_hourly: grain, finite hedge ratios and z-scores, correlation range."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.suites import _marts as m


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    m.finite(exps, ["hedge_ratio", "intercept", "spread", "spread_zscore"])
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="rolling_correlation", min_value=-1.000001, max_value=1.000001
        )
    )
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="observations", min_value=0))
    m.non_negative(exps, ["close_a", "close_b"])
    return m.generic("fct_pairs_hourly", params, exps)
