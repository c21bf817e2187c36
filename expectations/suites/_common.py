"""Building blocks the suite modules share: schema checks, flag-only expectations, time bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

LINEAGE: dict[str, str] = {"source": "string", "batch_id": "string", "ingested_at": "timestamp"}
# Gate 1 gives an integer column with nulls as pandas' nullable Int64 (GE calls it "Int64Dtype"):
# its nulls are rows for the not-null checks, not a schema break. A nullable int column ("int64?")
# written as float64 is accepted too.
DTYPES: dict[str, list[str]] = {
    "float64": ["float64"],
    "int64": ["int64", "Int64Dtype"],
    "int64?": ["int64", "Int64Dtype", "float64"],
    "string": ["str"],
    "bool": ["bool"],
}
# Nothing in this lake predates Bitcoin's first block; older timestamps are unit or parse errors.
EARLIEST = datetime(2009, 1, 3, tzinfo=UTC)
FLAG = "flag"  # meta action: failing rows are counted and reported but still accepted


def params_now(params: dict) -> datetime:
    return params.get("now") or datetime.now(UTC)


def add_schema(exps: list, columns: dict[str, str], derived: list[str] = ()) -> None:
    """Exact column set (schema + lineage + derived check columns) and the dtype of each column.

    A failure here is batch-level: the whole batch goes to quarantine.
    """
    expected = {**columns, **LINEAGE}
    exps.append(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*expected, *derived],
            exact_match=True,
            description="The batch has exactly the dataset's columns (a schema break quarantines it whole).",
        )
    )
    for column, kind in expected.items():
        types = DTYPES.get(kind)
        if types and len(types) == 1:
            # ExpectColumnValuesToBeInTypeList does not match pandas' str dtype; OfType does.
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=types[0]))
        elif types:
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=types))


def add_time_range(exps: list, column: str, params: dict, **kwargs) -> None:
    """Timestamps between EARLIEST and the validation time (nothing from the future)."""
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=EARLIEST, max_value=params_now(params), **kwargs
        )
    )


def flag(expectation):
    """Make an expectation flag-only: shown as a warning in Data Docs, rows counted, not quarantined."""
    expectation.severity = "warning"
    expectation.meta = {**(expectation.meta or {}), "action": FLAG}
    return expectation


# params entry gate 1 fills: True where another row of the batch shares the key (saves a pass).
KEY_SHARED = "key_shared"


def key_is_unique(frame: pd.DataFrame, key: list[str], params: dict | None = None) -> np.ndarray:
    """True where no other row of the same batch shares the natural key."""
    shared = (params or {}).get(KEY_SHARED)
    if shared is None or len(shared) != len(frame):
        shared = frame.duplicated([*key, "batch_id"], keep=False).to_numpy()
    return ~shared


def add_key_unique(exps: list, key: list[str]) -> None:
    exps.append(
        gxe.ExpectColumnValuesToBeInSet(
            column="check__key_unique_in_batch",
            value_set=[True],
            description=f"No two rows of one batch share ({', '.join(key)}) with different values "
            "(exact copies are collapsed before validation).",
        )
    )


# Derived column: the first of a row's number columns that holds +inf or -inf, else null.
NON_FINITE = "check__non_finite_column"


def add_finite(exps: list, columns: list[str]) -> None:
    """Quarantine a row with +inf or -inf in one of the columns (NaN is a missing value: the
    not-null checks decide on it). The failing rows' sample values name the column."""
    exps.append(
        gxe.ExpectColumnValuesToBeNull(
            column=NON_FINITE,
            description=f"{', '.join(columns)} are finite numbers: a row with +inf or -inf in one of "
            "them is quarantined (the sample values name the column).",
        )
    )


def non_finite_column(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per row, the first of the columns holding +inf or -inf, else None (NON_FINITE's values)."""
    out = np.full(len(frame), None, dtype=object)
    for column in reversed(columns):  # the first column wins
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        out[np.isinf(values)] = column
    return out


def users_known(ids: pd.Series, known: np.ndarray) -> np.ndarray:
    """True where the id is missing (no user on that side) or is a user the lake accepted."""
    values = ids.to_numpy(dtype="float64", na_value=np.nan)
    present = ~np.isnan(values)
    result = np.ones(len(values), dtype=bool)
    result[present] = np.isin(values[present].astype(np.int64), known)
    return result
