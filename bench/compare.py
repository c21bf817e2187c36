"""Check that two implementations agree on the marts they both compute (exact keys, float tolerance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Columns that must match exactly (taken as-is from one candle, or counted) and those summed or
# derived in floating point, where the order of additions differs between engines.
EXACT = (
    "open", "high", "low", "close", "num_trades", "candle_count", "is_complete", "observations", "window_hours",
)  # fmt: skip
FLOAT_RTOL = 1e-9
# Correlations are computed from running sums in SQL and by pandas' rolling kernel: not bit-equal.
CORRELATION_ATOL = 1e-6
KEYS = {
    "klines_hourly": ["market", "symbol", "open_time"],
    "klines_daily": ["market", "symbol", "open_time"],
    "volatility_daily": ["market", "symbol", "trading_date"],
    "order_flow_hourly": ["market", "symbol", "open_time"],
    "return_correlations": ["market", "symbol_a", "symbol_b", "window_end", "return_window"],
}


@dataclass
class Agreement:
    """How one table of implementation A compares with the same table of implementation B."""

    table: str
    rows_a: int
    rows_b: int
    matched: int = 0
    exact_columns: list[str] = field(default_factory=list)
    float_columns: list[str] = field(default_factory=list)
    mismatches: dict[str, int] = field(default_factory=dict)
    max_rel_diff: float = 0.0
    max_abs_diff: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rows_a == self.rows_b == self.matched and not self.mismatches

    def describe(self) -> str:
        if self.ok:
            return (
                f"{self.table}: {self.matched} rows agree ({len(self.exact_columns)} columns exact, "
                f"{len(self.float_columns)} within tolerance, max relative difference "
                f"{self.max_rel_diff:.1e})"
            )
        bad = ", ".join(f"{c} ({n} rows)" for c, n in sorted(self.mismatches.items()))
        return f"{self.table}: DISAGREE - rows {self.rows_a} vs {self.rows_b}, matched {self.matched}" + (
            f"; differing: {bad}" if bad else ""
        )


def _normalise(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(
            frame[column]
        ):
            values = pd.to_datetime(frame[column], utc=True)
            frame[column] = values.dt.tz_convert("UTC").astype("datetime64[ms, UTC]")
        elif pd.api.types.is_string_dtype(frame[column]) or frame[column].dtype == object:
            frame[column] = frame[column].astype(str)
    return frame.sort_values(keys).reset_index(drop=True)


def compare_frames(table: str, a: pd.DataFrame, b: pd.DataFrame, keys: list[str] | None = None) -> Agreement:
    """Join on the table's key and compare every column both frames have."""
    keys = keys or KEYS[table]
    a, b = _normalise(a, keys), _normalise(b, keys)
    result = Agreement(table=table, rows_a=len(a), rows_b=len(b))
    shared = [c for c in a.columns if c in b.columns and c not in keys]
    joined = a[keys + shared].merge(b[keys + shared], on=keys, how="inner", suffixes=("_a", "_b"))
    result.matched = len(joined)
    for column in shared:
        left, right = joined[f"{column}_a"], joined[f"{column}_b"]
        numeric = pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right)
        if column in EXACT or not numeric or pd.api.types.is_bool_dtype(left):
            result.exact_columns.append(column)
            same = (left.astype(object) == right.astype(object)) | (left.isna() & right.isna())
        else:
            result.float_columns.append(column)
            x, y = left.to_numpy(float), right.to_numpy(float)
            both_nan = np.isnan(x) & np.isnan(y)
            diff = np.where(both_nan, 0.0, np.abs(x - y))
            scale = np.maximum(np.abs(x), np.abs(y))
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.where(scale > 0, diff / scale, 0.0)
            if column == "correlation":
                same = pd.Series(both_nan | (diff <= CORRELATION_ATOL))
                result.max_abs_diff = max(result.max_abs_diff, float(np.nanmax(diff, initial=0.0)))
                result.max_rel_diff = max(result.max_rel_diff, float(np.nanmax(rel, initial=0.0)))
            else:
                # Running sums that cancel towards zero (CVD) get the column's scale as the yardstick.
                column_scale = float(np.nanmax(scale, initial=0.0))
                same = pd.Series(both_nan | (rel <= FLOAT_RTOL) | (diff <= FLOAT_RTOL * column_scale))
                result.max_rel_diff = max(result.max_rel_diff, float(np.nanmax(rel, initial=0.0)))
        bad = int((~same.fillna(False).to_numpy(bool)).sum())
        if bad:
            result.mismatches[column] = bad
    return result


def compare_dirs(dir_a: Path, dir_b: Path, names: dict[str, str]) -> list[Agreement]:
    """Compare parquet outputs: names maps a table in dir_a to its counterpart in dir_b."""
    results = []
    for name_a, name_b in names.items():
        path_a, path_b = dir_a / f"{name_a}.parquet", dir_b / f"{name_b}.parquet"
        if path_a.exists() and path_b.exists():
            results.append(compare_frames(name_b, pd.read_parquet(path_a), pd.read_parquet(path_b)))
    return results
