"""Gate 1 suite for aggregate trades (websocket stream and REST gap fill)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from expectations.suites._common import (
    NON_FINITE,
    add_finite,
    add_key_unique,
    add_schema,
    add_time_range,
    key_is_unique,
    non_finite_column,
)

# The trade stream's row layout (flows/sources/trades_stream.py), kept here so the suite states it.
TRADE_COLUMNS = {
    "market": "string",
    "symbol": "string",
    "agg_trade_id": "int64",
    "price": "float64",
    "quantity": "float64",
    "first_trade_id": "int64",
    "last_trade_id": "int64",
    "trade_time": "timestamp",
    "is_buyer_maker": "bool",
    "event_time": "timestamp",
    "received_at": "timestamp",
    "origin": "string",
}
KEY = ["market", "symbol", "agg_trade_id"]
DERIVED = ["check__key_unique_in_batch", NON_FINITE]
NUMBERS = ["price", "quantity"]


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    add_schema(exps, TRADE_COLUMNS, DERIVED)
    for column in (*KEY, "price", "quantity", "trade_time"):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    add_key_unique(exps, KEY)
    add_finite(exps, NUMBERS)
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="market", value_set=["spot", "usdm"]))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=0, strict_min=True))
    exps.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="last_trade_id", column_B="first_trade_id", or_equal=True
        )
    )
    add_time_range(exps, "trade_time", params)
    return gx.ExpectationSuite(name="raw_trades", expectations=exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    return frame.assign(
        check__key_unique_in_batch=key_is_unique(frame, KEY, params),
        **{NON_FINITE: non_finite_column(frame, NUMBERS)},
    )
