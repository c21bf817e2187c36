"""Gate 1 suite for raw transactions (synthetic): keys, ranges, categories, users they reference."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from expectations.suites._common import (
    NON_FINITE,
    add_finite,
    add_key_unique,
    add_schema,
    add_time_range,
    flag,
    key_is_unique,
    non_finite_column,
    users_known,
)
from flows.sources.synthetic_activity import STATUSES, TX_TYPES

KEY = ["tx_id"]
COLUMNS = {
    "tx_id": "int64",
    "occurred_at": "timestamp",
    "from_user_id": "int64?",
    "to_user_id": "int64?",
    "from_address": "string",
    "to_address": "string",
    "tx_type": "string",
    "token_symbol": "string",
    "amount": "float64",
    "fee": "float64",
    "fee_token": "string",
    "leverage": "int64?",
    "status": "string",
}
NUMBERS = ["amount", "fee"]
AMOUNT_FLAG = 1e10  # token units; clean amounts are worth at most 5e6 USD


def derived(params: dict) -> list[str]:
    names = ["check__key_unique_in_batch", NON_FINITE]
    if params.get("known_users") is not None:
        names.append("check__users_known")
    return names


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    add_schema(exps, COLUMNS, derived(params))
    # A transaction without its id, time, token, amount or status cannot be valued or settled.
    for column in ("tx_id", "occurred_at", "tx_type", "token_symbol", "amount", "status"):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    add_key_unique(exps, KEY)
    add_finite(exps, NUMBERS)
    add_time_range(exps, "occurred_at", params)
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="tx_type", value_set=[str(t) for t in TX_TYPES]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=[str(s) for s in STATUSES]))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(column="token_symbol", regex=r"^[A-Z0-9]{2,12}$"))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="leverage", min_value=1, max_value=125))
    if params.get("known_users") is not None:
        exps.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="check__users_known",
                value_set=[True],
                description="from_user_id and to_user_id (when present) are users the lake accepted.",
            )
        )
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="amount",
                min_value=0,
                description="Flag only: a negative amount is a sign error; staging takes its absolute value.",
            )
        )
    )
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="amount",
                max_value=AMOUNT_FLAG,
                description=f"Flag only: amounts above {AMOUNT_FLAG:.0e} token units are outliers.",
            )
        )
    )
    exps.append(flag(gxe.ExpectColumnValuesToBeBetween(column="fee", min_value=0)))
    return gx.ExpectationSuite(name="raw_transactions", expectations=exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    frame = frame.assign(
        check__key_unique_in_batch=key_is_unique(frame, KEY, params),
        **{NON_FINITE: non_finite_column(frame, NUMBERS)},
    )
    known = params.get("known_users")
    if known is not None:
        known = np.asarray(known, dtype=np.int64)
        ok = users_known(frame["from_user_id"], known) & users_known(frame["to_user_id"], known)
        frame = frame.assign(check__users_known=ok)
    return frame
