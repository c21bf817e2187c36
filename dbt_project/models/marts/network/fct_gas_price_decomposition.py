"""Seasonal-trend decomposition (STL, daily season) of the hourly mean gas price."""

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

COLUMNS = {
    "observed_hour": "datetime64[us, UTC]",
    "gas_price_gwei": "float64",
    "trend": "float64",
    "seasonal": "float64",
    "residual": "float64",
    "is_interpolated": "bool",
}
PERIOD = 24  # hours: gas follows the daily activity cycle


def decompose(hourly: pd.DataFrame) -> pd.DataFrame:
    """STL needs an evenly spaced series: missing hours are linearly interpolated and flagged."""
    if len(hourly) < 2 * PERIOD:
        return pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)
    series = hourly.set_index("observed_hour")["avg_gas_price_gwei"].sort_index()
    grid = pd.date_range(series.index.min(), series.index.max(), freq="h")
    observed = series.reindex(grid)
    interpolated = observed.isna()
    filled = observed.interpolate(limit_direction="both")
    fit = STL(filled.to_numpy(), period=PERIOD, robust=True).fit()
    return pd.DataFrame(
        {
            "observed_hour": grid,
            "gas_price_gwei": filled.to_numpy(),
            "trend": np.asarray(fit.trend),
            "seasonal": np.asarray(fit.seasonal),
            "residual": np.asarray(fit.resid),
            "is_interpolated": interpolated.to_numpy(),
        }
    ).astype(COLUMNS)


def model(dbt, session):
    dbt.config(materialized="table")
    hourly = dbt.ref("fct_network_hourly").project("observed_hour, avg_gas_price_gwei").df()
    return decompose(hourly)
