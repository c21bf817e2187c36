"""The dbt Python models: vectorised code equals the per-window code and library calls it replaces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp
from statsmodels.tsa.seasonal import STL
from statsmodels.tsa.stattools import adfuller

MARTS = Path(__file__).resolve().parents[2] / "dbt_project" / "models" / "marts"


def load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, MARTS / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gas = load("network/fct_gas_price_decomposition.py")
pairs = load("pairs/fct_pairs_cointegration.py")
fees = load("transactions/fct_fee_feature_importance.py")


def gas_series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(n)
    values = 30 + 5 * np.sin(2 * np.pi * hours / 24) + np.cumsum(rng.normal(0, 0.3, n))
    return values + rng.standard_t(2, n)


def test_decompose_interpolates_and_flags_missing_hours():
    hours = pd.date_range("2026-10-01", periods=96, freq="h", tz="UTC")
    hourly = pd.DataFrame({"observed_hour": hours, "avg_gas_price_gwei": gas_series(96, seed=1)})
    hourly = hourly.drop(index=[10, 11]).sample(frac=1, random_state=0)
    result = gas.decompose(hourly)
    assert list(result.dtypes.astype(str)) == list(gas.COLUMNS.values())
    assert len(result) == 96
    assert result["is_interpolated"].sum() == 2
    expected = STL(result["gas_price_gwei"].to_numpy(), period=24, robust=True).fit()
    np.testing.assert_array_equal(result["trend"], expected.trend)
    assert gas.decompose(hourly.head(47)).empty


def reference_cointegration(frame: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """The per-window loop the model replaced: np.polyfit, adf_lag1 and statsmodels' tables."""
    rows = []
    for (market, symbol_a, symbol_b), pair in frame.groupby(["market", "symbol_a", "symbol_b"]):
        pair = pair.sort_values("open_time")
        times = pair["open_time"].astype("datetime64[ns, UTC]").astype("int64").to_numpy()
        log_a, log_b = pair["log_price_a"].to_numpy(), pair["log_price_b"].to_numpy()
        first_end = pair["open_time"].min().floor("D") + pd.Timedelta(days=1)
        last_end = pair["open_time"].max().floor("D") + pd.Timedelta(days=1)
        for window_end in pd.date_range(first_end, last_end, freq="D"):
            start = np.searchsorted(times, (window_end - pd.Timedelta(days=window_days)).value)
            stop = np.searchsorted(times, window_end.value)
            if stop - start < pairs.MIN_OBSERVATIONS:
                continue
            x, y = log_b[start:stop], log_a[start:stop]
            hedge_ratio, intercept = np.polyfit(x, y, 1)
            spread = y - intercept - hedge_ratio * x
            if np.allclose(spread, spread[0]):
                continue
            statistic = pairs.adf_lag1(spread)
            critical = mackinnoncrit(N=1, regression="c", nobs=stop - start - 2)
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
                    "p_value": mackinnonp(statistic, regression="c", N=1),
                    "critical_value_1pct": critical[0],
                    "critical_value_5pct": critical[1],
                    "critical_value_10pct": critical[2],
                    "is_cointegrated_5pct": bool(statistic < critical[1]),
                }
            )
    columns = {name: kind for name, kind in pairs.COLUMNS.items() if name != "loaded_at"}
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def pairs_frame() -> pd.DataFrame:
    """Four symbols over 40 days of hours, with gaps; one pair's spread is exactly constant and
    one symbol's price is too for 20 days (np.polyfit's rank-deficient case)."""
    rng = np.random.default_rng(3)
    hours = pd.date_range("2026-10-01 05:00", periods=40 * 24, freq="h", tz="UTC")
    base = np.cumsum(rng.normal(0, 0.01, len(hours))) + 4.0
    prices = {
        "AAAUSDT": base * 1.5 + rng.normal(0, 0.005, len(hours)),
        "BBBUSDT": base,
        "CCCUSDT": base + 0.25,  # log(C) - log(B) is constant
        "DDDUSDT": np.where(np.arange(len(hours)) < 20 * 24, 0.5, base - base[20 * 24] + 0.5),
    }
    keep = rng.random(len(hours)) > 0.1
    keep[200:300] = False  # a gap of four days
    frames = []
    for symbol_a, symbol_b in [
        ("AAAUSDT", "BBBUSDT"),
        ("AAAUSDT", "CCCUSDT"),
        ("AAAUSDT", "DDDUSDT"),
        ("BBBUSDT", "CCCUSDT"),
    ]:
        frames.append(
            pd.DataFrame(
                {
                    "market": "spot",
                    "symbol_a": symbol_a,
                    "symbol_b": symbol_b,
                    "open_time": hours[keep],
                    "log_price_a": prices[symbol_a][keep],
                    "log_price_b": prices[symbol_b][keep],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sample(frac=1, random_state=1)


@pytest.mark.filterwarnings("ignore:Polyfit may be poorly conditioned")
def test_cointegration_equals_the_per_window_loop():
    frame = pairs_frame()
    con = duckdb.connect()
    relation = con.from_df(frame)
    keys = relation.query("pairs", pairs.KEYS_SQL).fetchall()
    series = relation.query("pairs", pairs.PAIRS_SQL).fetchnumpy()
    result = pairs.cointegration(
        keys, series["pair"], series["open_us"], series["log_price_a"], series["log_price_b"], 7
    )
    expected = reference_cointegration(frame, 7)
    assert len(expected) > 50
    assert "BBBUSDT" not in set(expected["symbol_a"])  # the constant spread has no rows
    assert result["loaded_at"].nunique() == 1
    result = result.drop(columns="loaded_at")
    pd.testing.assert_frame_equal(result, expected, check_exact=False, rtol=1e-9, atol=0)


def test_cointegration_from_a_first_window_end_equals_those_windows_of_a_full_run():
    frame = pairs_frame()
    full = run_cointegration(frame, 7)
    first_end = full["window_end"].sort_values().unique()[-3]  # the last three window ends
    first_end_us = first_end.value // 1000
    recent = frame[frame["open_time"] >= first_end - pd.Timedelta(days=7)]
    part = run_cointegration(recent, 7, first_end_us)
    expected = full[full["window_end"] >= first_end].reset_index(drop=True)
    assert len(expected) >= 3 and part["window_end"].min() == first_end
    pd.testing.assert_frame_equal(part, expected, check_exact=False, rtol=1e-9, atol=0)


def test_pairs_streamed_in_batches_give_the_same_windows_as_all_at_once():
    frame = pairs_frame()
    relation = duckdb.connect().from_df(frame)
    keys = relation.query("pairs", pairs.KEYS_SQL).fetchall()
    table = relation.query("pairs", pairs.PAIRS_SQL).to_arrow_table()
    # Batches that cut pairs anywhere, and one that holds a single pair's middle.
    cuts = [0, 1, 700, 701, 1500, 2900, table.num_rows]
    batches = [table.slice(a, b - a).to_batches()[0] for a, b in zip(cuts, cuts[1:], strict=False)]
    groups = list(pairs.whole_pairs(iter(batches)))

    seen = [np.unique(group[0]) for group in groups]
    assert np.concatenate(seen).tolist() == sorted(set(np.concatenate(seen).tolist()))  # each pair once
    loaded_at = pd.Timestamp("2026-12-01", tz="UTC")
    streamed = pd.concat(
        [pairs.cointegration(keys, *group, 7, None, loaded_at) for group in groups], ignore_index=True
    )
    pd.testing.assert_frame_equal(streamed, run_cointegration(frame, 7))


def run_cointegration(frame: pd.DataFrame, window_days: int, first_end_us: int | None = None) -> pd.DataFrame:
    relation = duckdb.connect().from_df(frame)
    keys = relation.query("pairs", pairs.KEYS_SQL).fetchall()
    series = relation.query("pairs", pairs.PAIRS_SQL).fetchnumpy()
    loaded_at = pd.Timestamp("2026-12-01", tz="UTC")
    return pairs.cointegration(
        keys, series["pair"], series["open_us"], series["log_price_a"], series["log_price_b"], window_days,
        first_end_us, loaded_at,
    )  # fmt: skip


def test_adf_lag1_is_statsmodels_adfuller():
    series = np.cumsum(np.random.default_rng(5).normal(size=300))
    expected = adfuller(series, maxlag=1, autolag=None, regression="c", result_object=False)[0]
    assert pairs.adf_lag1(series) == pytest.approx(expected, rel=1e-10)
    statistic, fallback = pairs.adf_statistics(series[None, :])
    assert statistic[0] == pytest.approx(expected, rel=1e-10)
    assert not fallback[0]


def test_mackinnon_p_values_equal_mackinnonp():
    statistics = np.concatenate([np.linspace(-25, 5, 601), [-18.83, -1.61, 2.74]])
    expected = [mackinnonp(value, regression="c", N=1) for value in statistics]
    np.testing.assert_array_equal(pairs.mackinnon_p_values(statistics), expected)


def test_fee_sample_is_fixed():
    first, second = fees.sample_positions(100_000), fees.sample_positions(100_000)
    np.testing.assert_array_equal(first, second)
    assert len(np.unique(first)) == fees.SAMPLE_ROWS
    np.testing.assert_array_equal(np.sort(fees.sample_positions(70)), np.arange(70))


class FakeDbt:
    """What the fee model uses of dbt's Python-model object: config, ref and this."""

    def __init__(self, session, table: str):
        self.session, self.this = session, "fee_importance"
        self.table = table
        self.config = lambda **_: None

    def ref(self, name: str):
        return self.session.table(self.table)


def fee_transactions(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(5, 1, rows)
    return pd.DataFrame(
        {
            "tx_id": np.arange(rows),
            "is_completed": True,
            "amount_usd": amount,
            "fee_usd": amount * 0.001 * rng.uniform(0.5, 1.5, rows),
            "leverage": rng.choice([0, 5, 20], rows),
            "hour_of_day": rng.integers(0, 24, rows),
            "day_of_week": rng.integers(1, 8, rows),
            "tx_type": rng.choice(["trade", "futures"], rows),
            "token_symbol": rng.choice(["BTC", "ETH"], rows),
        }
    )


def test_fee_forest_is_kept_when_its_training_sample_is_unchanged(monkeypatch):
    session = duckdb.connect()
    session.register("tx", fee_transactions(600, seed=1))
    dbt = FakeDbt(session, "tx")
    first = fees.model(dbt, session)
    assert len(first) == len(fees.FEATURES) and first["training_sample_hash"].nunique() == 1
    session.execute("create table fee_importance as select * from first")

    def no_training(_):
        raise AssertionError("the forest was fitted again on the same sample")

    monkeypatch.setattr(fees, "feature_importance", no_training)
    pd.testing.assert_frame_equal(fees.model(dbt, session), first)
    # Other transactions: another sample, so the forest is fitted again.
    session.register("tx", fee_transactions(600, seed=2))
    with pytest.raises(AssertionError, match="fitted again"):
        fees.model(dbt, session)
