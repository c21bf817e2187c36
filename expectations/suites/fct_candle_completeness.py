"""Gate 2 suite for fct_candle_completeness: counts add up and completeness stays above thresholds."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.suites import _marts as m

# A symbol-day below this share of its candles is a feed outage, not a stray gap.
MIN_DAY_COMPLETENESS = 0.9
# Share of symbol-days that must clear MIN_DAY_COMPLETENESS.
MOSTLY = 0.95


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="completeness_ratio",
            min_value=params.get("min_day_completeness", MIN_DAY_COMPLETENESS),
            max_value=1,
            mostly=params.get("complete_share", MOSTLY),
            description=f"Completeness: at least {MOSTLY:.0%} of symbol-days hold at least "
            f"{MIN_DAY_COMPLETENESS:.0%} of their expected candles.",
        )
    )
    exps.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="expected_candles", column_B="present_candles", or_equal=True
        )
    )
    m.non_negative(exps, ["missing_candles", "present_candles"])
    return m.generic("fct_candle_completeness", params, exps)
