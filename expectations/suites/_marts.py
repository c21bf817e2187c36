"""Gate 2 building blocks: grain, row counts against the published snapshot, finiteness, freshness."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

# Outside this, a ratio, z-score or return is a division by ~0 or an inf, not a market move.
FINITE_BOUND = 1e12


def row_count_bounds(exps: list, params: dict) -> None:
    """Fail on a sudden drop: at least min_row_ratio of the rows of the published snapshot."""
    previous = params.get("previous_rows")
    if previous:
        ratio = params.get("min_row_ratio", 0.5)
        exps.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=math.ceil(previous * ratio),
                description=f"At least {ratio:.0%} of the {previous:,} rows of the published "
                "snapshot (a sudden drop fails the gate).",
            )
        )
    else:
        exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=0))


def grain(exps: list, columns: list[str]) -> None:
    for column in columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    if len(columns) == 1:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=columns[0]))
    else:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns)))


def finite(exps: list, columns: list[str]) -> None:
    """Null is allowed (too little history); NaN (gate 2 reads it as +inf), inf and absurd
    magnitudes are not."""
    for column in columns:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-FINITE_BOUND, max_value=FINITE_BOUND)
        )


def non_negative(exps: list, columns: list[str]) -> None:
    for column in columns:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0))


def fresh(exps: list, column: str, params: dict) -> None:
    """The newest row reaches the newest input period, and nothing is dated after the gate ran."""
    latest = params.get("latest_input")
    exps.append(
        gxe.ExpectColumnMaxToBeBetween(
            column=column,
            min_value=latest,
            max_value=params.get("now"),
            description="Freshness: the newest row covers the newest input period "
            + (f"({latest:%Y-%m-%d %H:%M} UTC)" if latest is not None else "")
            + " and nothing is dated in the future.",
        )
    )


def ohlc(exps: list) -> None:
    for column in ("open", "close", "low"):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B=column, or_equal=True)
        )
    for column in ("open", "close"):
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=column, column_B="low", or_equal=True)
        )
    # An unknown taker volume (an upload of OHLCV only) stays unknown: only known pairs compare.
    exps.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="volume",
            column_B="taker_buy_base_volume",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
        )
    )


ROLLUP_MEASURES = ("volume", "quote_volume", "num_trades", "candle_count")


def rollup_errors(frame: pd.DataFrame, inputs: pd.DataFrame | None) -> pd.DataFrame:
    """check__rollup_<measure>_error: relative difference to the sum of the 1-minute inputs.

    Only rows built from 1-minute candles are compared; a 1m-built row with no inputs is an
    error of 1 (100%), and so is a total known on one side only. A total unknown on both sides
    (the quote volume of an upload that had none) agrees.
    """
    if inputs is None:
        return frame
    keyed = frame[["market", "symbol", "open_time"]].assign(
        open_ms=_epoch_ms(frame["open_time"]), _row=np.arange(len(frame))
    )
    inputs = inputs.assign(open_ms=_epoch_ms(inputs["open_time"])).drop(columns="open_time")
    joined = keyed.merge(inputs, on=["market", "symbol", "open_ms"], how="left").sort_values("_row")
    from_minutes = (frame["source_interval"] == "1m").to_numpy(dtype=bool, na_value=False)
    has_inputs = joined["input_candle_count"].notna().to_numpy()
    out = {}
    for measure in ROLLUP_MEASURES:
        mart = frame[measure].to_numpy(dtype="float64", na_value=np.nan)
        expected = joined[f"input_{measure}"].to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            error = np.abs(mart - expected) / np.maximum(np.abs(expected), 1e-12)
        both_unknown = np.isnan(mart) & np.isnan(expected)
        error = np.where(both_unknown, 0.0, np.where(np.isnan(error), 1.0, error))
        error = np.where(has_inputs, error, 1.0)
        out[f"check__rollup_{measure}_error"] = np.where(from_minutes, error, np.nan)
    return frame.assign(**out)


def missing_periods(frame: pd.DataFrame, inputs: pd.DataFrame | None) -> pd.DataFrame:
    """check__input_periods_missing: per row, how many periods of its series that have 1-minute
    input candles have no row in the mart (a series behind its inputs, or a hole in it).

    The rollup check compares the rows the mart has; this one finds the rows it lacks.
    """
    if inputs is None:
        return frame
    series = ["market", "symbol"]
    have = frame[series].astype(str).assign(open_ms=_epoch_ms(frame["open_time"]))
    wanted = inputs[series].astype(str).assign(open_ms=_epoch_ms(inputs["open_time"]))
    found = wanted.merge(have.drop_duplicates(), on=[*series, "open_ms"], how="left", indicator=True)
    lacking = found[found["_merge"] == "left_only"].groupby(series).size().rename("missing").reset_index()
    per_row = have[series].merge(lacking, on=series, how="left")["missing"].fillna(0).to_numpy("float64")
    return frame.assign(check__input_periods_missing=per_row)


def rollup_expectations(exps: list, params: dict) -> None:
    if params.get("rollup_inputs") is None:
        return
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="check__input_periods_missing",
            max_value=0,
            description="Coverage: every period with 1-minute input candles has a row, in every "
            "series (a series left behind, or a hole in it, fails; the value is how many it lacks).",
        )
    )
    for measure in ROLLUP_MEASURES:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=f"check__rollup_{measure}_error",
                max_value=1e-9,
                description=f"Rollup total: {measure} equals the sum of its 1-minute input candles.",
            )
        )


def _epoch_ms(series: pd.Series) -> np.ndarray:
    values = pd.to_datetime(series, utc=True).astype("datetime64[ms, UTC]")
    return values.to_numpy(dtype="datetime64[ms]").astype("int64")


def suite(name: str, exps: list) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=exps)


def dbt_grains() -> dict[str, list[str]]:
    """Each mart's grain as the dbt project declares it (unique_combination, or a unique column)."""
    from flows.settings import PROJECT_ROOT

    paths = sorted((PROJECT_ROOT / "dbt_project" / "models" / "marts").rglob("*.yml"))
    # Parsed once per set of file versions: gate 2 asks for every mart without a suite module.
    grains = _grains(tuple((str(path), path.stat().st_mtime_ns) for path in paths))
    return {name: list(columns) for name, columns in grains.items()}


@functools.lru_cache(maxsize=4)
def _grains(files: tuple[tuple[str, int], ...]) -> dict[str, list[str]]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    grains: dict[str, list[str]] = {}
    for path, _ in files:
        for model in (yaml.load(Path(path).read_text(), Loader=loader) or {}).get("models") or []:
            for test in model.get("data_tests") or model.get("tests") or []:
                if isinstance(test, dict) and "unique_combination" in test:
                    spec = test["unique_combination"] or {}
                    columns = (spec.get("arguments") or spec).get("columns")
                    if columns:
                        grains[model["name"]] = list(columns)
            if model["name"] in grains:
                continue
            for column in model.get("columns") or []:
                tests = column.get("data_tests") or column.get("tests") or []
                if "unique" in tests:
                    grains[model["name"]] = [column["name"]]
                    break
    return grains


def generic(name: str, params: dict, extra: list | None = None) -> gx.ExpectationSuite:
    """Row count against the published snapshot and the dbt-declared grain, plus extra checks."""
    exps: list = []
    row_count_bounds(exps, params)
    columns = dbt_grains().get(name)
    if columns:
        grain(exps, columns)
    return suite(name, [*exps, *(extra or [])])
