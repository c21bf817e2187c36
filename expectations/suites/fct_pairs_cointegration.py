"""Gate 2 suite for fct_pairs_cointegration: grain, finite fits and ADF statistics, p-values."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.suites import _marts as m


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    m.finite(
        exps,
        [
            "hedge_ratio",
            "intercept",
            "adf_statistic",
            "critical_value_1pct",
            "critical_value_5pct",
            "critical_value_10pct",
        ],
    )
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="p_value", min_value=0, max_value=1))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="observations", min_value=0))
    return m.generic("fct_pairs_cointegration", params, exps)
