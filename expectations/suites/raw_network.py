"""Gate 1 suite for raw network metrics (synthetic, one row a minute)."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from expectations.suites._common import add_key_unique, add_schema, add_time_range, flag, key_is_unique

KEY = ["observed_at"]
METRICS = ("gas_price_gwei", "tps", "block_time_s", "difficulty", "hashrate")
COLUMNS = {"observed_at": "timestamp", **dict.fromkeys(METRICS, "float64")}
DERIVED = ["check__key_unique_in_batch", "check__observed_at_offset"]
GAS_FLAG_GWEI = 1e4  # clean gas stays below 2,000 gwei; staging nulls anything above 10,000


def build_suite(params: dict) -> gx.ExpectationSuite:
    exps: list = []
    add_schema(exps, COLUMNS, DERIVED)
    exps.append(gxe.ExpectColumnValuesToNotBeNull(column="observed_at"))
    add_key_unique(exps, KEY)
    add_time_range(exps, "observed_at", params)
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__observed_at_offset",
            min_value=0,
            max_value=0,
            description="observed_at is on a whole minute.",
        )
    )
    # A gauge sampled every minute: staging nulls impossible values and carries the last value
    # forward, so value defects are flagged and the minute is kept.
    for column in METRICS:
        exps.append(flag(gxe.ExpectColumnValuesToNotBeNull(column=column)))
        exps.append(flag(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0)))
    exps.append(
        flag(
            gxe.ExpectColumnValuesToBeBetween(
                column="gas_price_gwei",
                max_value=GAS_FLAG_GWEI,
                description=f"Flag only: gas above {GAS_FLAG_GWEI:,.0f} gwei is an outlier; staging nulls it.",
            )
        )
    )
    return gx.ExpectationSuite(name="raw_network", expectations=exps)


def prepare(frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    observed = frame["observed_at"]
    second = (observed.dt.second + observed.dt.microsecond).astype("float64")
    return frame.assign(
        check__key_unique_in_batch=key_is_unique(frame, KEY, params),
        check__observed_at_offset=second,
    )
