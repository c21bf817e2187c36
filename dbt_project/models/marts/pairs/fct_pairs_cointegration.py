"""Engle-Granger style cointegration check per pair: ADF test of the OLS spread, daily windows."""

import numpy as np
import pandas as pd
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp

COLUMNS = {
    "market": "string",
    "symbol_a": "string",
    "symbol_b": "string",
    "window_end": "datetime64[us, UTC]",
    "window_days": "int64",
    "observations": "int64",
    "hedge_ratio": "float64",
    "intercept": "float64",
    "adf_statistic": "float64",
    "p_value": "float64",
    "critical_value_1pct": "float64",
    "critical_value_5pct": "float64",
    "critical_value_10pct": "float64",
    "is_cointegrated_5pct": "bool",
}
# A window needs at least this many common hours before its test means anything.
MIN_OBSERVATIONS = 48


def adf_lag1(series: np.ndarray) -> float:
    """ADF t-statistic with a constant and one lagged difference.

    Equal to statsmodels' adfuller(series, maxlag=1, autolag=None, regression="c")[0]; the
    regression is solved directly so thousands of windows stay cheap. p-values and critical
    values come from statsmodels' MacKinnon tables below.
    """
    diff = np.diff(series)
    y = diff[1:]
    design = np.column_stack([series[1:-1], diff[:-1], np.ones(len(y))])
    coef, _, _, _ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = len(y) - design.shape[1]
    sigma2 = resid @ resid / dof
    cov = sigma2 * np.linalg.inv(design.T @ design)
    return float(coef[0] / np.sqrt(cov[0, 0]))


def cointegration_rows(pairs: pd.DataFrame, window_days: int) -> list[dict]:
    rows = []
    window = pd.Timedelta(days=window_days)
    for (market, symbol_a, symbol_b), pair in pairs.groupby(["market", "symbol_a", "symbol_b"]):
        pair = pair.sort_values("open_time")
        # Integer nanoseconds: tz-aware timestamps come back from numpy as slow objects.
        times = pair["open_time"].astype("datetime64[ns, UTC]").astype("int64").to_numpy()
        log_a = pair["log_price_a"].to_numpy()
        log_b = pair["log_price_b"].to_numpy()
        first_end = pair["open_time"].min().floor("D") + pd.Timedelta(days=1)
        last_end = pair["open_time"].max().floor("D") + pd.Timedelta(days=1)
        for window_end in pd.date_range(first_end, last_end, freq="D"):
            start = np.searchsorted(times, (window_end - window).value, side="left")
            stop = np.searchsorted(times, window_end.value, side="left")
            if stop - start < MIN_OBSERVATIONS:
                continue
            x, y = log_b[start:stop], log_a[start:stop]
            hedge_ratio, intercept = np.polyfit(x, y, 1)
            spread = y - intercept - hedge_ratio * x
            if np.allclose(spread, spread[0]):
                continue
            statistic = adf_lag1(spread)
            nobs = stop - start - 2
            critical = mackinnoncrit(N=1, regression="c", nobs=nobs)
            rows.append(
                {
                    "market": market,
                    "symbol_a": symbol_a,
                    "symbol_b": symbol_b,
                    "window_end": window_end,
                    "window_days": window_days,
                    "observations": stop - start,
                    "hedge_ratio": hedge_ratio,
                    "intercept": intercept,
                    "adf_statistic": statistic,
                    "p_value": float(mackinnonp(statistic, regression="c", N=1)),
                    "critical_value_1pct": float(critical[0]),
                    "critical_value_5pct": float(critical[1]),
                    "critical_value_10pct": float(critical[2]),
                    "is_cointegrated_5pct": bool(statistic < critical[1]),
                }
            )
    return rows


def model(dbt, session):
    dbt.config(materialized="table")
    window_days = int(dbt.config.get("cointegration_window_days") or 30)
    pairs = dbt.ref("int_symbol_pairs_joined").df()
    rows = cointegration_rows(pairs, window_days) if len(pairs) else []
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype(COLUMNS)
