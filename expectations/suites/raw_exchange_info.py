"""Gate 1 suite for Binance exchange info snapshots (one row per market, symbol and snapshot)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from expectations.suites._common import add_key_unique, add_schema, add_time_range, key_is_unique

KEY = ["snapshot_at", "market", "symbol"]
COLUMNS = {
    "market": "string",
    "symbol": "string",
    "status": "string",
    "base_asset": "string",
    "quote_asset": "string",
    "contract_type": "string",
    "onboard_date": "timestamp",
    "filters": "string",
    "snapshot_at": "timestamp",
}
DERIVED = ["check__key_unique_in_batch"]


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    add_schema(exps, COLUMNS, DERIVED)
    for column in ("market", "symbol", "status", "base_asset", "quote_asset", "snapshot_at"):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    add_key_unique(exps, KEY)
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="market", value_set=["spot", "usdm"]))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(column="symbol", regex=r"^[A-Z0-9]{2,20}$"))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(column="filters", regex=r"^\[.*\]$"))
    add_time_range(exps, "snapshot_at", params)
    add_time_range(exps, "onboard_date", params)
    return gx.ExpectationSuite(name="raw_exchange_info", expectations=exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    return frame.assign(check__key_unique_in_batch=key_is_unique(frame, KEY, params))
