"""Engle-Granger style cointegration check per pair: ADF test of the OLS spread, daily windows.

Incremental: a run recomputes the windows that hold an hour fct_klines_hourly wrote since this
model last ran (rows carry loaded_at, the time of the run that wrote them), reading the window
length further back. Those windows replace every row of their market and window end (so a
window that no longer qualifies goes too). Without new hours, nothing is computed.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm
from statsmodels.tsa import adfvalues
from statsmodels.tsa.adfvalues import mackinnoncrit

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
    "loaded_at": "datetime64[us, UTC]",
}
# A window needs at least this many common hours before its test means anything.
MIN_OBSERVATIONS = 48
DAY_US = 86_400_000_000
# Windows this close to singular (relative sums of squares) take the per-window lstsq path.
PRECISION = 1e-6
# Windows of one length computed together: keeps the work arrays in cache.
CHUNK_WINDOWS = 256
# Input hours handed over at a time, cut at a pair boundary: at 50 symbols the model holds about
# a million hours at once instead of all 10.7M (0.5 GB beside the build's other models).
BATCH_ROWS = 1_000_000
# Numbered pairs, and their hours as epoch microseconds: no strings or timestamps cross to pandas.
PAIRS_SQL = """
with keys as (
    select market, symbol_a, symbol_b,
        row_number() over (order by market, symbol_a, symbol_b) - 1 as pair
    from (select distinct market, symbol_a, symbol_b from pairs)
    where market is not null and symbol_a is not null and symbol_b is not null
)
select keys.pair, epoch_us(pairs.open_time) as open_us, pairs.log_price_a, pairs.log_price_b
from pairs
inner join keys using (market, symbol_a, symbol_b)
order by keys.pair, open_us
"""
KEYS_SQL = """
select distinct market, symbol_a, symbol_b from pairs
where market is not null and symbol_a is not null and symbol_b is not null
order by market, symbol_a, symbol_b
"""


def adf_lag1(series: np.ndarray) -> float:
    """ADF t-statistic with a constant and one lagged difference, for one series.

    Equal to statsmodels' adfuller(series, maxlag=1, autolag=None, regression="c")[0]; the
    regression is solved directly. window_tests uses it only for near-singular windows.
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


def adf_statistics(spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """adf_lag1 of every row of spread, at once, from sums of products.

    The constant is removed by centring the sums and the lagged difference by projecting it
    out (Frisch-Waugh-Lovell): the level's coefficient and standard error are those of the full
    regression. A spread is an OLS residual, so the means are near 0 and centring the sums loses
    no precision. Also returns the rows too near singular (or too well fitted) for this.
    """
    nobs = spread.shape[1] - 2
    diff = np.diff(spread, axis=1)
    columns = spread[:, 1:-1], diff[:, :-1], diff[:, 1:]  # level, lagged diff, diff
    sums = [column.sum(axis=1) for column in columns]

    def centred(i: int, j: int) -> np.ndarray:
        return np.einsum("ij,ij->i", columns[i], columns[j]) - sums[i] * sums[j] / nobs

    aa, ab, ac, bb, bc, cc = (centred(i, j) for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        level_ss = aa - ab * ab / bb
        level_target = ac - ab * bc / bb
        coef = level_target / level_ss
        rss = cc - bc * bc / bb - coef * level_target
        statistic = coef / np.sqrt(rss / (nobs - 3) / level_ss)
    fallback = ~((bb > 0) & (level_ss > PRECISION * aa) & (rss > PRECISION * cc))
    return statistic, fallback


def window_tests(log_a: np.ndarray, log_b: np.ndarray, start: np.ndarray, length: int) -> tuple:
    """OLS fit and ADF statistic of windows of equal length (rows of a sliding view), at once.

    Returns hedge ratios, intercepts, ADF statistics and whether the spread varies (windows
    whose spread np.allclose calls constant get no test); rare near-singular windows go through
    np.polyfit and adf_lag1 one by one.
    """
    x = sliding_window_view(log_b, length)[start]
    y = sliding_window_view(log_a, length)[start]
    x_mean, y_mean = x.mean(axis=1), y.mean(axis=1)
    x -= x_mean[:, None]
    y -= y_mean[:, None]
    x_ss = np.einsum("ij,ij->i", x, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        hedge_ratio = np.einsum("ij,ij->i", x, y) / x_ss
    intercept = y_mean - hedge_ratio * x_mean
    spread = y - hedge_ratio[:, None] * x  # log_a - intercept - hedge_ratio * log_b
    for i in np.flatnonzero(~(x_ss > PRECISION * (x_ss + length * x_mean**2))):
        window_a, window_b = log_a[start[i] : start[i] + length], log_b[start[i] : start[i] + length]
        hedge_ratio[i], intercept[i] = np.polyfit(window_b, window_a, 1)
        spread[i] = window_a - intercept[i] - hedge_ratio[i] * window_b
    # Not np.allclose(spread, spread[0]): the largest distance from the first value is at an extreme.
    first = spread[:, 0]
    distance = np.maximum(spread.max(axis=1) - first, first - spread.min(axis=1))
    varies = distance > 1e-8 + 1e-5 * np.abs(first)
    statistic, fallback = adf_statistics(spread)
    for i in np.flatnonzero(fallback & varies):
        statistic[i] = adf_lag1(spread[i])
    return hedge_ratio, intercept, statistic, varies


def mackinnon_p_values(statistics: np.ndarray) -> np.ndarray:
    """mackinnonp(statistic, regression="c", N=1) of every statistic, from statsmodels' own tables."""
    small = np.polyval(adfvalues._tau_smallps["c"][0][::-1], statistics)
    large = np.polyval(adfvalues._tau_largeps["c"][0][::-1], statistics)
    p_values = norm.cdf(np.where(statistics <= adfvalues._tau_stars["c"][0], small, large))
    p_values = np.where(statistics < adfvalues._tau_mins["c"][0], 0.0, p_values)
    return np.where(statistics > adfvalues._tau_maxs["c"][0], 1.0, p_values)


def cointegration(
    keys: list[tuple],
    pair: np.ndarray,
    open_us: np.ndarray,
    log_a: np.ndarray,
    log_b: np.ndarray,
    window_days: int,
    first_end_us: int | None = None,
    loaded_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per pair and daily window end with enough hours and a varying spread.

    Rows of the inputs are sorted by pair number (an index into keys) and hour. A window ending
    at midnight holds the hours of the window_days before it; windows are grouped by their
    number of hours and computed in chunks, then put back in pair and window order. With
    first_end_us, only windows ending then or later (the inputs must start window_days before).
    """
    bounds = np.searchsorted(pair, np.arange(len(keys) + 1))
    windows = []
    for number in range(len(keys)):
        times = open_us[bounds[number] : bounds[number + 1]]
        if not len(times):
            continue
        ends = np.arange(times[0] // DAY_US + 1, times[-1] // DAY_US + 2) * DAY_US
        if first_end_us is not None:
            ends = ends[ends >= first_end_us]
        start = np.searchsorted(times, ends - window_days * DAY_US, side="left")
        count = np.searchsorted(times, ends, side="left") - start
        keep = count >= MIN_OBSERVATIONS
        windows.append((np.full(keep.sum(), number), ends[keep], bounds[number] + start[keep], count[keep]))
    if not windows:
        return empty_result()
    number, window_end, start, count = (np.concatenate(parts) for parts in zip(*windows, strict=True))
    hedge_ratio, intercept, statistic = (np.empty(len(start)) for _ in range(3))
    varies = np.zeros(len(start), dtype=bool)
    for length in np.unique(count):
        same = np.flatnonzero(count == length)
        for chunk in np.array_split(same, -(-len(same) // CHUNK_WINDOWS)):
            results = window_tests(log_a, log_b, start[chunk], int(length))
            hedge_ratio[chunk], intercept[chunk], statistic[chunk], varies[chunk] = results
    number, window_end, count = number[varies], window_end[varies], count[varies]
    statistic = statistic[varies]
    # Critical values depend only on the number of observations the ADF regression sees.
    lengths, inverse = np.unique(count, return_inverse=True)
    critical = np.array([mackinnoncrit(N=1, regression="c", nobs=n - 2) for n in lengths]).reshape(-1, 3)[
        inverse
    ]
    key_columns = np.array(keys, dtype=object).reshape(-1, 3)[number]
    frame = pd.DataFrame(
        {
            "market": key_columns[:, 0],
            "symbol_a": key_columns[:, 1],
            "symbol_b": key_columns[:, 2],
            "window_end": pd.to_datetime(window_end, unit="us", utc=True),
            "window_days": window_days,
            "observations": count,
            "hedge_ratio": hedge_ratio[varies],
            "intercept": intercept[varies],
            "adf_statistic": statistic,
            "p_value": mackinnon_p_values(statistic),
            "critical_value_1pct": critical[:, 0],
            "critical_value_5pct": critical[:, 1],
            "critical_value_10pct": critical[:, 2],
            "is_cointegrated_5pct": statistic < critical[:, 1],
            "loaded_at": loaded_at if loaded_at is not None else pd.Timestamp.now(tz="UTC"),
        }
    )
    return frame.astype(COLUMNS)


def empty_result() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)


def first_window_end(dbt, session) -> int | None:
    """The first window end (epoch µs) this run must recompute: None for every window, -1 for none.

    Every window ending after the earliest hour fct_klines_hourly wrote since this model's
    newest loaded_at holds that hour.
    """
    if not dbt.is_incremental:
        return None
    this = str(dbt.this)
    if "loaded_at" not in session.sql(f"select * from {this} limit 0").columns:
        return None  # built before loaded_at: recompute everything once
    watermark = session.sql(f"select epoch_us(max(loaded_at)) from {this}").fetchall()[0][0]
    if watermark is None:
        return None
    earliest = (
        dbt.ref("fct_klines_hourly")
        .query(
            "hourly", f"select epoch_us(min(open_time)) from hourly where epoch_us(loaded_at) > {watermark}"
        )
        .fetchall()[0][0]
    )
    if earliest is None:
        return -1
    return (earliest // DAY_US + 1) * DAY_US


def model(dbt, session):
    dbt.config(
        materialized="incremental",
        incremental_strategy="delete+insert",
        unique_key=["market", "window_end"],
        on_schema_change="append_new_columns",
    )
    window_days = int(dbt.config.get("cointegration_window_days") or 30)
    loaded_at = pd.Timestamp.now(tz="UTC")
    first_end_us = first_window_end(dbt, session)
    if first_end_us == -1:
        return empty_result()
    pairs = dbt.ref("int_symbol_pairs_joined")
    if first_end_us is not None:
        pairs = pairs.filter(f"open_time >= make_timestamptz({first_end_us - window_days * DAY_US})")
    keys = pairs.query("pairs", KEYS_SQL).fetchall()
    frames = [
        cointegration(keys, *columns, window_days, first_end_us, loaded_at)
        for columns in whole_pairs(pairs.query("pairs", PAIRS_SQL).to_arrow_reader(BATCH_ROWS))
    ]
    if not frames:
        return empty_result()
    return pd.concat(frames, ignore_index=True)


def whole_pairs(reader) -> Iterator[tuple[np.ndarray, ...]]:
    """(pair, open_us, log_a, log_b) arrays of whole pairs, from record batches sorted by pair.

    Each batch's last pair may go on in the next batch, so it is carried over. Null prices
    come back as NaN and fail the fit, as they did in pandas.
    """
    carry: list[np.ndarray] | None = None
    for batch in reader:
        arrays = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(4)]
        arrays[2:] = [np.asarray(a, dtype="float64") for a in arrays[2:]]
        if carry is not None:
            arrays = [np.concatenate([old, new]) for old, new in zip(carry, arrays, strict=True)]
        if not len(arrays[0]):
            continue
        cut = int(np.searchsorted(arrays[0], arrays[0][-1]))  # where the last pair starts
        if cut:
            yield tuple(a[:cut] for a in arrays)
        carry = [a[cut:] for a in arrays]
    if carry is not None and len(carry[0]):
        yield tuple(carry)
