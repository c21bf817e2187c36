"""Gate 1 suite for raw klines from every source (REST, archive, upload, synthetic)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from flows.schemas import KLINE_COLUMNS, KLINE_KEY

LINEAGE = ["source", "batch_id", "ingested_at"]


def build_suite() -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="raw_klines")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(column_set=[*KLINE_COLUMNS, *LINEAGE], exact_match=True)
    )
    for column in KLINE_KEY:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="market", value_set=["spot", "usdm"]))
    for column in ("open", "close", "low"):
        suite.add_expectation(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B=column, or_equal=True)
        )
    for column in ("open", "close"):
        suite.add_expectation(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=column, column_B="low", or_equal=True)
        )
    for column in ("volume", "quote_volume", "num_trades", "taker_buy_base_volume"):
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0))
    suite.add_expectation(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="volume", column_B="taker_buy_base_volume", or_equal=True
        )
    )
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(KLINE_KEY)))
    return suite
