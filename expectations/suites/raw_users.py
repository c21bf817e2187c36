"""Gate 1 suite for raw users (synthetic): keys, ranges, categories, timestamps."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from expectations.suites._common import add_key_unique, add_schema, add_time_range, flag, key_is_unique
from flows.sources.synthetic_activity import COUNTRIES, DEVICES

KEY = ["user_id"]
COLUMNS = {
    "user_id": "int64",
    "wallet_address": "string",
    "registered_at": "timestamp",
    "last_login_at": "timestamp",
    "account_balance_usd": "float64",
    "country": "string",
    "device_type": "string",
    "vip_tier": "int64",
    "kyc_level": "int64",
    "is_active": "bool",
}
DERIVED = ["check__key_unique_in_batch"]
BALANCE_FLAG_USD = 1e8  # clean balances stay below 5e7; staging caps above its own limit


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    add_schema(exps, COLUMNS, DERIVED)
    for column in ("user_id", "registered_at"):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="user_id", min_value=1))
    add_key_unique(exps, KEY)
    add_time_range(exps, "registered_at", params)
    add_time_range(exps, "last_login_at", params)
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="country", value_set=[str(c) for c in COUNTRIES]))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="device_type", value_set=[str(d) for d in DEVICES]))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="vip_tier", min_value=0, max_value=9))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="kyc_level", min_value=0, max_value=3))
    exps.append(gxe.ExpectColumnValuesToMatchRegex(column="wallet_address", regex=r"^0x[0-9a-f]{40}$"))
    # Value defects staging repairs by a documented rule are flagged, not quarantined: the user
    # row stays, so the user's transactions still pass the referential check.
    for column in ("country", "device_type", "wallet_address"):
        exps.append(flag(gxe.ExpectColumnValuesToNotBeNull(column=column)))
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="account_balance_usd",
                min_value=0,
                description="Flag only: a negative balance is counted; staging sets it to 0.",
            )
        )
    )
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="account_balance_usd",
                max_value=BALANCE_FLAG_USD,
                description=f"Flag only: balances above {BALANCE_FLAG_USD:.0e} USD are outliers; "
                "staging caps them.",
            )
        )
    )
    exps.append(
        flag(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="last_login_at", column_B="registered_at", or_equal=True
            )
        )
    )
    return gx.ExpectationSuite(name="raw_users", expectations=exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    return frame.assign(check__key_unique_in_batch=key_is_unique(frame, KEY, params))
