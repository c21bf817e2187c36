"""The dbt project built on small hand-made lakes: exact rollups, precedence, repairs, empty sources, incremental."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from flows import transform
from flows.errors import LakehouseError
from flows.lake import land_frame, to_arrow, write_parquet_atomic
from flows.quality import validate_raw
from flows.schemas import KLINE_KEY
from flows.settings import load_settings
from flows.transform import (
    build_marts,
    changed_selection,
    lake_fingerprints,
    read_run_results,
    run_dbt,
    warehouse_path,
)

FIRST_LOAD = datetime(2026, 11, 1, tzinfo=UTC)
SECOND_LOAD = datetime(2026, 11, 1, 2, tzinfo=UTC)
THIRD_LOAD = datetime(2026, 11, 1, 4, tzinfo=UTC)
# Staging is incremental too, so a partial build must include it (the + selects the parents).
KLINE_MODELS = "+fct_klines_hourly +fct_klines_daily"


def candles(symbol: str, start: str, periods: int, base: float, interval: str = "1m") -> pd.DataFrame:
    """Deterministic candles: a slow saw-tooth price, volumes that vary by minute."""
    step = pd.Timedelta(interval.replace("m", "min"))
    open_time = pd.date_range(start, periods=periods, freq=step, tz="UTC")
    i = np.arange(periods)
    open_ = base + (i % 50) * 0.5
    close = open_ + np.where(i % 3 == 0, 0.25, -0.25)
    volume = 1.0 + (i % 7)
    return pd.DataFrame(
        {
            "market": "spot",
            "symbol": symbol,
            "interval": interval,
            "open_time": open_time,
            "close_time": open_time + step - pd.Timedelta(milliseconds=1),
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": volume,
            "quote_volume": volume * close,
            "num_trades": (10 + i % 5).astype("int64"),
            "taker_buy_base_volume": volume / 2,
            "taker_buy_quote_volume": volume * close / 2,
        }
    )


def land_klines(lake: Path, frame: pd.DataFrame, source: str, at: datetime) -> None:
    land_frame(
        frame,
        lake,
        source=source,
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
        ingested_at=at,
    )


# The synthetic activity datasets: natural key and the column their date partition comes from.
ACTIVITY = {
    "users": ("user_id", "registered_at"),
    "transactions": ("tx_id", "occurred_at"),
    "network": ("observed_at", "observed_at"),
}


def land_raw_activity(lake: Path, dataset: str, frame: pd.DataFrame, at: datetime) -> None:
    key, date_column = ACTIVITY[dataset]
    land_frame(
        frame,
        lake,
        source="synthetic",
        dataset=dataset,
        key_columns=(key,),
        date_column=date_column,
        zone="raw",
        ingested_at=at,
    )


def land_activity(lake: Path) -> None:
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "wallet_address": ["0x01", "0x02", "0x03"],
            "registered_at": pd.to_datetime(
                ["2026-09-01T00:00", "2026-09-15T00:00", "2026-10-01T12:00"], utc=True
            ),
            "last_login_at": pd.to_datetime(
                ["2026-10-02T00:00", "2026-10-01T00:00", "2026-10-02T00:00"], utc=True
            ),
            "account_balance_usd": [50.0, 5_000.0, -3.0],
            "country": ["DE", "US", None],
            "device_type": ["ios", "web", "android"],
            "vip_tier": [0, 2, 1],
            "kyc_level": [1, 2, 0],
            "is_active": [True, True, False],
        }
    )
    land_raw_activity(lake, "users", users, FIRST_LOAD)
    transactions = pd.DataFrame(
        {
            "tx_id": [1, 2, 3, 4],
            "occurred_at": pd.to_datetime(
                ["2026-10-01T03:07:40", "2026-10-01T04:00:01", "2026-10-02T08:00:00", "2026-10-02T09:30:00"],
                utc=True,
            ),
            "from_user_id": [1, 2, -1, 1],
            "to_user_id": [2, 3, 3, -1],
            "from_address": ["0x01", "0x02", "0xff", "0x01"],
            "to_address": ["0x02", "0x03", "0x03", "0xfe"],
            "tx_type": ["trade", "futures", "deposit", "withdrawal"],
            "token_symbol": ["BTC", "ETH", "USDT", "BTC"],
            "amount": [2.0, 3.0, 100.0, 0.5],
            "fee": [0.01, 1.5, 0.0, None],
            "fee_token": ["BTC", "USDT", "USDT", "BTC"],
            "leverage": [0, 400, 0, 0],
            "status": ["completed", "completed", "completed", "failed"],
        }
    )
    land_raw_activity(lake, "transactions", transactions, FIRST_LOAD)
    minutes = pd.date_range("2026-10-01", periods=3 * 1440, freq="1min", tz="UTC")
    hour = minutes.hour.to_numpy()
    network = pd.DataFrame(
        {
            "observed_at": minutes,
            "gas_price_gwei": 20.0 + 5 * np.sin(hour / 24 * 2 * np.pi),
            "tps": 15.0,
            "block_time_s": 12.0,
            "difficulty": 1e15,
            "hashrate": 1e12,
        }
    )
    network.loc[10, "gas_price_gwei"] = -1.0  # a sensor error staging nulls and carries forward
    land_raw_activity(lake, "network", network, FIRST_LOAD)
    gate = pd.DataFrame(
        {
            "run_id": ["20261101T000000000000Z"],
            "validated_at": [pd.Timestamp(FIRST_LOAD)],
            "gate": ["raw"],
            "dataset": ["synthetic/klines"],
            "batches": [4],
            "rows_accepted": [5760],
            "rows_quarantined": [2],
            "expectations_evaluated": [12],
            "expectations_failed": [1],
            "failed_expectations": ["expect_column_values_to_be_between(volume)"],
            "success": [False],
        }
    )
    write_parquet_atomic(
        to_arrow(gate), lake / "quality" / "gate_runs" / "date=2026-11-01" / "run-raw.parquet"
    )


def first_lake(lake: Path) -> dict[str, pd.DataFrame]:
    """Two synthetic 1m symbols for two days with known defects, one REST override, hourly SOL."""
    btc = candles("BTCUSDT", "2026-10-01", 2 * 1440, 100.0)
    eth = candles("ETHUSDT", "2026-10-01", 2 * 1440, 50.0)
    btc = btc[btc["open_time"] != pd.Timestamp("2026-10-01T10:30", tz="UTC")]  # a gap
    btc.loc[btc["open_time"] == pd.Timestamp("2026-10-01T07:00", tz="UTC"), "high"] = 1.0
    eth.loc[eth["open_time"] == pd.Timestamp("2026-10-01T12:00", tz="UTC"), "volume"] = -5.0
    land_klines(lake, pd.concat([btc, eth]), "synthetic", FIRST_LOAD)
    # The first ten minutes landed again later with other prices: the later copy must win.
    relanded = candles("BTCUSDT", "2026-10-01", 10, 300.0)
    land_klines(lake, relanded, "synthetic", FIRST_LOAD.replace(minute=5))
    rest = candles("BTCUSDT", "2026-10-01T05:59", 1, 700.0)
    land_klines(lake, rest, "binance", FIRST_LOAD)
    sol = candles("SOLUSDT", "2026-10-01", 48, 20.0, interval="1h")
    land_klines(lake, sol, "archive", FIRST_LOAD)
    land_activity(lake)
    return {"btc": btc, "eth": eth, "relanded": relanded, "rest": rest, "sol": sol}


def query(settings, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse_path(settings)), read_only=True) as con:
        return con.execute(sql).df()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    settings = load_settings(lake_dir=lake, gx_dir=lake / "gx")
    frames = first_lake(lake)
    result = build_marts(settings, unit_tests=True)
    return settings, frames, result


def expected_btc_minutes(frames) -> pd.DataFrame:
    """What staging and precedence should leave of BTC's 1m candles, built independently."""
    btc = frames["btc"].set_index("open_time")
    for frame in (frames["relanded"], frames["rest"]):
        btc.loc[frame["open_time"].to_numpy(), frame.columns.drop("open_time")] = frame.set_index("open_time")
    btc["high"] = btc[["open", "high", "close"]].max(axis=1)
    btc["low"] = btc[["open", "low", "close"]].min(axis=1)
    return btc.reset_index()


def test_build_runs_every_model_and_test(built):
    _, _, result = built
    assert result.models >= 30
    assert result.tests >= 100
    assert result.unit_tests == 16


def test_every_model_and_every_column_it_builds_is_described(built):
    """The docs cover what the warehouse holds: each model's description, and exactly the
    columns each model built, each with a description (dbt docs do not check either)."""
    settings, _, _ = built
    target = transform.dbt_paths(settings)[0]
    manifest = json.loads((target / "manifest.json").read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    built_columns = query(
        settings,
        "select table_name, list(column_name order by ordinal_position) as columns "
        "from information_schema.columns where table_schema in ('staging', 'intermediate', 'marts') "
        "group by table_name",
    )
    built_columns = {
        name: columns
        for name, columns in zip(built_columns["table_name"], built_columns["columns"], strict=True)
        if not name.endswith("__files")  # the staging models' bookkeeping of files already read
    }
    materialized = {name for name, node in models.items() if node["config"]["materialized"] != "ephemeral"}
    assert set(built_columns) == materialized and len(materialized) == len(models) == 42
    undescribed = [name for name, node in models.items() if not node["description"].strip()]
    assert undescribed == []
    for name, columns in built_columns.items():
        documented = models[name]["columns"]
        assert sorted(documented) == sorted(columns), name
        assert [c for c, doc in documented.items() if not doc["description"].strip()] == [], name


def test_hourly_rollup_equals_independent_rollup_of_the_minutes(built):
    settings, frames, _ = built
    minutes = expected_btc_minutes(frames)
    minutes["hour"] = minutes["open_time"].dt.floor("h")
    expected = (
        minutes.sort_values("open_time")
        .groupby("hour")
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            quote_volume=("quote_volume", "sum"),
            num_trades=("num_trades", "sum"),
            candle_count=("open", "size"),
        )
    )
    actual = query(
        settings,
        "select * from marts.fct_klines_hourly where symbol = 'BTCUSDT' order by open_time",
    ).set_index("open_time")
    assert len(actual) == 48
    for column in ["open", "high", "low", "close", "num_trades", "candle_count"]:
        assert actual[column].tolist() == expected[column].tolist(), column
    assert np.allclose(actual["volume"], expected["volume"], rtol=1e-12)
    assert np.allclose(actual["vwap"], expected["quote_volume"] / expected["volume"], rtol=1e-12)
    returns = expected["close"] / expected["close"].shift() - 1
    assert np.allclose(actual["simple_return"].iloc[1:], returns.iloc[1:], rtol=1e-12)
    assert np.isnan(actual["simple_return"].iloc[0])
    # The REST candle at 05:59 outranks the synthetic one and closes the 05:00 hour.
    assert actual.loc["2026-10-01 05:00:00+00:00", "close"] == frames["rest"]["close"].iloc[0]
    # The gap at 10:30 leaves 59 candles and an incomplete hour; full hours are complete.
    assert actual.loc["2026-10-01 10:00:00+00:00", "candle_count"] == 59
    assert not actual.loc["2026-10-01 10:00:00+00:00", "is_complete"]
    assert actual.loc["2026-10-01 11:00:00+00:00", "is_complete"]


def test_daily_rollup_from_hourly_candles_when_no_minutes(built):
    settings, frames, _ = built
    sol = frames["sol"]
    daily = query(
        settings,
        "select * from marts.fct_klines_daily where symbol = 'SOLUSDT' order by open_time",
    )
    first_day = sol.iloc[:24]
    assert daily["source_interval"].tolist() == ["1h", "1h"]
    assert daily["candle_count"].tolist() == [24, 24]
    assert daily["is_complete"].tolist() == [True, True]
    assert daily["open"].iloc[0] == first_day["open"].iloc[0]
    assert daily["close"].iloc[0] == first_day["close"].iloc[-1]
    assert daily["high"].iloc[0] == first_day["high"].max()
    assert daily["volume"].iloc[0] == pytest.approx(first_day["volume"].sum(), rel=1e-12)


def test_staging_counts_every_repair_drop_and_duplicate(built):
    settings, _, _ = built
    repairs = query(
        settings,
        "select model_name, rule_name, affected_rows from marts.fct_staging_repairs "
        "order by model_name, rule_name",
    )
    counts = {(r.model_name, r.rule_name): r.affected_rows for r in repairs.itertuples()}
    assert counts[("stg_synthetic__klines", "duplicates_collapsed")] == 10
    assert counts[("stg_synthetic__klines", "ohlc_bounds_repaired")] == 1
    assert counts[("stg_synthetic__klines", "dropped")] == 1
    assert counts[("stg_synthetic__users", "balance_negative_zeroed")] == 1
    assert counts[("stg_synthetic__users", "country_imputed")] == 1
    assert counts[("stg_synthetic__transactions", "leverage_capped")] == 1
    assert counts[("stg_synthetic__transactions", "fee_imputed")] == 1
    assert counts[("stg_synthetic__network", "out_of_range_nulled")] == 1
    completeness = query(
        settings,
        "select symbol, candle_date, missing_candles from marts.fct_candle_completeness "
        "where missing_candles > 0 order by symbol",
    )
    assert completeness.values.tolist() == [
        ["BTCUSDT", pd.Timestamp("2026-10-01"), 1],
        ["ETHUSDT", pd.Timestamp("2026-10-01"), 1],
    ]


def test_the_candle_grid_flags_exactly_the_missing_slots(built):
    """int_klines_gridded: every slot between each series' first and last candle, and the two
    candles first_lake leaves out (BTC's gap, ETH's candle staging drops) flagged missing."""
    settings, _, _ = built
    grid = query(
        settings,
        "select symbol, kline_interval, count(*) as slots, count(*) filter (where is_missing) as missing, "
        "min(opened_at) as first, max(opened_at) as last "
        "from intermediate.int_klines_gridded group by all order by symbol",
    )
    first, last = pd.Timestamp("2026-10-01", tz="UTC"), pd.Timestamp("2026-10-02T23:00", tz="UTC")
    assert grid.values.tolist() == [
        ["BTCUSDT", "1m", 2 * 1440, 1, first, last + pd.Timedelta(minutes=59)],
        ["ETHUSDT", "1m", 2 * 1440, 1, first, last + pd.Timedelta(minutes=59)],
        ["SOLUSDT", "1h", 48, 0, first, last],
    ]
    missing = query(
        settings,
        "select symbol, opened_at from intermediate.int_klines_gridded where is_missing order by symbol",
    )
    assert missing.values.tolist() == [
        ["BTCUSDT", pd.Timestamp("2026-10-01T10:30", tz="UTC")],
        ["ETHUSDT", pd.Timestamp("2026-10-01T12:00", tz="UTC")],
    ]


def test_network_hourly_aggregates_equal_an_independent_computation(built):
    """fct_network_hourly against pandas over first_lake's network minutes, with the one
    impossible gas reading (minute 10) nulled and carried forward from minute 9, as staging does.
    (This fixture's gas is constant within an hour, so the p95 is checked for its grouping only.)"""
    settings, _, _ = built
    minutes = pd.date_range("2026-10-01", periods=3 * 1440, freq="1min", tz="UTC")
    gas = pd.Series(20.0 + 5 * np.sin(minutes.hour.to_numpy() / 24 * 2 * np.pi), index=minutes)
    gas.iloc[10] = gas.iloc[9]
    expected = gas.groupby(gas.index.floor("h")).agg(["count", "mean", lambda g: g.quantile(0.95)])
    built_hours = query(
        settings,
        "select observed_hour, observations, imputed_observations, avg_gas_price_gwei, "
        "p95_gas_price_gwei, max_gas_price_gwei, avg_tps, p95_tps "
        "from marts.fct_network_hourly order by observed_hour",
    )
    assert built_hours["observed_hour"].tolist() == expected.index.tolist()
    assert built_hours["observations"].tolist() == expected["count"].tolist()
    assert built_hours["imputed_observations"].tolist() == [1] + [0] * 71
    assert built_hours["avg_gas_price_gwei"].tolist() == pytest.approx(expected["mean"].tolist(), rel=1e-12)
    assert built_hours["p95_gas_price_gwei"].tolist() == pytest.approx(
        expected.iloc[:, 2].tolist(), rel=1e-12
    )
    assert built_hours["max_gas_price_gwei"].tolist() == gas.groupby(gas.index.floor("h")).max().tolist()
    assert set(built_hours["avg_tps"]) == set(built_hours["p95_tps"]) == {15.0}


def test_derived_calendar_and_spread_columns(built):
    """Days since registration to the lake's as-of time (the latest login, 2026-10-02 00:00),
    each transaction's UTC hour and ISO weekday, and each pair hour's spread from its own fit."""
    settings, _, _ = built
    users = query(settings, "select user_id, days_since_registration from marts.dim_users order by user_id")
    # Whole days to the as-of time (the latest login, 10-02 00:00): user 3 registered 12 hours before.
    assert users.values.tolist() == [[1, 31], [2, 17], [3, 0]]
    tx = query(settings, "select tx_id, hour_of_day, day_of_week from marts.fct_transactions order by tx_id")
    assert tx.values.tolist() == [[1, 3, 4], [2, 4, 4], [3, 8, 5], [4, 9, 5]]  # Thursday, Friday
    pairs = query(
        settings,
        "select close_a, close_b, intercept, hedge_ratio, spread from marts.fct_pairs_hourly "
        "where hedge_ratio is not null",
    )
    assert len(pairs) > 0
    expected = np.log(pairs["close_a"]) - pairs["intercept"] - pairs["hedge_ratio"] * np.log(pairs["close_b"])
    assert pairs["spread"].tolist() == pytest.approx(expected.tolist(), rel=1e-9, abs=1e-12)


def test_transactions_are_priced_at_the_minute_close(built):
    settings, frames, _ = built
    tx = query(settings, "select * from marts.fct_transactions order by tx_id").set_index("tx_id")
    btc = expected_btc_minutes(frames).set_index("open_time")
    eth = frames["eth"].set_index("open_time")
    btc_0307 = btc.loc[pd.Timestamp("2026-10-01T03:07", tz="UTC"), "close"]
    eth_0400 = eth.loc[pd.Timestamp("2026-10-01T04:00", tz="UTC"), "close"]
    assert tx.loc[1, "amount_usd"] == pytest.approx(2.0 * btc_0307, rel=1e-12)
    assert tx.loc[1, "fee_usd"] == pytest.approx(0.01 * btc_0307, rel=1e-12)
    assert tx.loc[2, "amount_usd"] == pytest.approx(3.0 * eth_0400, rel=1e-12)
    assert tx.loc[2, "leverage"] == 125
    assert tx.loc[3, "amount_usd"] == 100.0
    assert tx["price_source"].tolist() == ["kline_1m", "kline_1m", "stablecoin", "kline_1m"]
    users = query(settings, "select user_id, segment, account_balance_usd, country from marts.dim_users")
    users = users.set_index("user_id")
    assert users.loc[3, "account_balance_usd"] == 0.0
    assert users.loc[3, "country"] == "unknown"
    assert set(users["segment"]) <= {
        "no_activity",
        "champions",
        "loyal",
        "promising",
        "at_risk",
        "hibernating",
        "needs_attention",
    }


def test_python_models_and_quality_runs_are_built(built):
    settings, _, _ = built
    gas = query(settings, "select * from marts.fct_gas_price_decomposition")
    assert len(gas) == 72
    assert np.allclose(gas["trend"] + gas["seasonal"] + gas["residual"], gas["gas_price_gwei"])
    coint = query(settings, "select * from marts.fct_pairs_cointegration order by symbol_a, symbol_b")
    # Two days of common hours: only the window ending 2026-10-03 holds the 48 hours needed.
    assert coint[["symbol_a", "symbol_b", "observations"]].values.tolist() == [
        ["BTCUSDT", "ETHUSDT", 48],
        ["BTCUSDT", "SOLUSDT", 48],
        ["ETHUSDT", "SOLUSDT", 48],
    ]
    assert ((coint["p_value"] >= 0) & (coint["p_value"] <= 1)).all()
    runs = query(settings, "select * from marts.fct_data_quality_runs")
    assert runs[["gate", "rows_quarantined", "expectations_failed"]].values.tolist() == [["raw", 2, 1]]


def test_missing_sources_give_empty_typed_relations(built):
    settings, _, _ = built
    columns = query(
        settings,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'staging' and table_name = 'stg_upload__klines' "
        "order by ordinal_position",
    )
    types = dict(zip(columns["column_name"], columns["data_type"], strict=True))
    assert types["opened_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["close_price"] == "DOUBLE"
    assert types["num_trades"] == "BIGINT"
    assert query(settings, "select count(*) as n from staging.stg_upload__klines")["n"][0] == 0


def test_incremental_build_equals_full_refresh(built):
    settings, frames, _ = built
    lake = settings.lake_dir
    # A new hour for both symbols, and a late REST correction of an old BTC candle.
    new_hour = pd.concat(
        [candles("BTCUSDT", "2026-10-03", 60, 130.0), candles("ETHUSDT", "2026-10-03", 60, 60.0)]
    )
    land_klines(lake, new_hour, "synthetic", SECOND_LOAD)
    correction = candles("BTCUSDT", "2026-10-02T10:15", 1, 900.0)
    land_klines(lake, correction, "binance", SECOND_LOAD)
    order = {
        "intermediate.int_klines_unioned": "market, symbol, kline_interval, opened_at",
        "marts.fct_klines_hourly": "market, symbol, open_time",
        "marts.fct_klines_daily": "market, symbol, open_time",
        "marts.fct_pairs_hourly": "market, symbol_a, symbol_b, open_time",
        "marts.fct_return_correlations": "market, symbol_a, symbol_b, window_end, return_window",
        "marts.fct_candle_completeness": "market, symbol, kline_interval, candle_date",
        "marts.fct_pairs_cointegration": "market, symbol_a, symbol_b, window_end",
    }
    tables = list(order)
    selection = (
        f"{KLINE_MODELS} +fct_pairs_hourly +fct_return_correlations +fct_candle_completeness"
        " +fct_pairs_cointegration"
    )
    windows = "select window_end, loaded_at from marts.fct_pairs_cointegration order by window_end"
    before = query(settings, windows)
    build_marts(settings, select=selection)
    # loaded_at says when a row was written, so it is the one column that must differ.
    read = "select * exclude (loaded_at) from {} order by {}"
    incremental = {t: query(settings, read.format(t, order[t])) for t in tables}
    build_marts(settings, select=selection, full_refresh=True)
    full = {t: query(settings, read.format(t, order[t])) for t in tables}
    for table in tables:
        # Keys, counts and prices match exactly; sums of floats may differ in the last bits
        # because DuckDB adds them in a different order when it reads fewer rows.
        pd.testing.assert_frame_equal(incremental[table], full[table], check_exact=False, rtol=1e-12)
    # The correction (2026-10-02 10:15) is in the windows ending 2026-10-03 and later: those are
    # recomputed, and the new hour adds the window ending 2026-10-04.
    coint = incremental["marts.fct_pairs_cointegration"]
    assert [
        (a, b, str(end.date())) for a, b, end in coint[["symbol_a", "symbol_b", "window_end"]].values
    ] == [
        ("BTCUSDT", "ETHUSDT", "2026-10-03"),
        ("BTCUSDT", "ETHUSDT", "2026-10-04"),
        ("BTCUSDT", "SOLUSDT", "2026-10-03"),
        ("ETHUSDT", "SOLUSDT", "2026-10-03"),
    ]
    assert set(before["window_end"]) == {pd.Timestamp("2026-10-03", tz="UTC")}
    hourly = incremental["marts.fct_klines_hourly"].set_index(["symbol", "open_time"])
    assert hourly.loc[("BTCUSDT", pd.Timestamp("2026-10-03", tz="UTC")), "candle_count"] == 60
    assert hourly.loc[("BTCUSDT", pd.Timestamp("2026-10-02T10:00", tz="UTC")), "high"] >= 900.0


def test_incremental_reads_only_unread_files_however_old_their_stamp(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    land_klines(lake, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", SECOND_LOAD)
    build_marts(settings)
    files = "select count(*) as n from staging.stg_synthetic__klines__files"
    assert query(settings, files)["n"][0] == 1
    # A batch stamped a day before everything already built (landed long ago, gated late).
    land_klines(lake, candles("BTCUSDT", "2026-10-02", 60, 200.0), "synthetic", FIRST_LOAD)
    build_marts(settings, select=KLINE_MODELS)
    compiled = next((lake / "warehouse" / "dbt" / "target" / "compiled").rglob("stg_synthetic__klines.sql"))
    assert compiled.read_text().count(".parquet'") == 1, "only the new file is read"
    hourly = "select open_time, open, close, candle_count from marts.fct_klines_hourly order by open_time"
    rows = query(settings, hourly)
    assert len(rows) == 3
    assert rows["open"].iloc[2] == 200.0
    assert rows["candle_count"].tolist() == [60, 60, 60]
    # The same range landed again (same batch file, new content): it replaces the built rows.
    land_klines(lake, candles("BTCUSDT", "2026-10-02", 60, 300.0), "synthetic", SECOND_LOAD)
    build_marts(settings, select=KLINE_MODELS)
    incremental = query(settings, hourly)
    assert incremental["open"].iloc[2] == 300.0
    assert query(settings, files)["n"][0] == 2
    build_marts(settings, select=KLINE_MODELS, full_refresh=True)
    pd.testing.assert_frame_equal(incremental, query(settings, hourly))
    assert query(settings, files)["n"][0] == 2
    # A file gone from the lake is forgotten; the listing each build makes is dropped after it.
    next((lake / "raw" / "synthetic" / "klines").rglob("date=2026-10-02/*.parquet")).unlink()
    build_marts(settings, select=KLINE_MODELS)
    assert query(settings, files)["n"][0] == 1
    listings = "select count(*) as n from duckdb_tables() where table_name like '%listing'"
    assert query(settings, listings)["n"][0] == 0


def ran_with(settings) -> tuple[list[str], str | None]:
    """The selection and the state directory the last dbt build ran with."""
    args = json.loads((transform.dbt_paths(settings)[0] / "run_results.json").read_text())["args"]
    return args.get("select"), args.get("state")


def test_changed_only_builds_what_changed_since_the_last_build(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    land_klines(lake, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", FIRST_LOAD)
    land_activity(lake)
    assert changed_selection(settings, lake_fingerprints(settings)) is None, "no previous build: everything"
    everything = build_marts(settings, changed_only=True)
    assert changed_selection(settings, lake_fingerprints(settings)) == "state:modified+"
    land_klines(lake, candles("BTCUSDT", "2026-10-01T02:00", 60, 150.0), "synthetic", SECOND_LOAD)
    assert (
        changed_selection(settings, lake_fingerprints(settings)) == "source:synthetic.klines+ state:modified+"
    )
    klines_only = build_marts(settings, changed_only=True)
    built = {
        r["unique_id"].split(".")[-1]
        for r in read_run_results(settings)
        if r["unique_id"].startswith("model.")
    }
    # Transactions are priced from klines (and users scored from transactions): rebuilt too.
    assert {
        "stg_synthetic__klines",
        "int_klines_unioned",
        "fct_klines_hourly",
        "fct_transactions",
        "dim_users",
    } <= built
    assert not built & {
        "stg_synthetic__network",
        "fct_network_hourly",
        "stg_synthetic__users",
        "stg_upload__klines",
    }
    assert 0 < klines_only.models < everything.models
    hourly = query(settings, "select open, candle_count from marts.fct_klines_hourly order by open_time")
    assert hourly["open"].tolist() == [100.0, 105.0, 150.0]
    assert hourly["candle_count"].tolist() == [60, 60, 60]
    # The project parsed as for the last build: nothing in it is modified, and dbt was not asked.
    assert ran_with(settings) == (["source:synthetic.klines+"], None)
    # A changed profile (here the memory limit) parses differently: dbt compares with the state.
    resized = settings.model_copy(update={"dbt_memory_limit": "1100MB"})
    land_klines(lake, candles("BTCUSDT", "2026-10-01T03:00", 60, 160.0), "synthetic", THIRD_LOAD)
    assert build_marts(resized, changed_only=True).models > 0
    state = str(transform.state_dir(settings))
    assert ran_with(settings) == (["source:synthetic.klines+", "state:modified+"], state)
    hourly = query(settings, "select open, candle_count from marts.fct_klines_hourly order by open_time")
    assert hourly["open"].tolist() == [100.0, 105.0, 150.0, 160.0]
    # Nothing new: nothing to build (state:modified+ alone is kept: an empty selection is all).
    assert build_marts(resized, changed_only=True).models == 0
    assert ran_with(settings) == (["state:modified+"], state)


def wait_for(path: Path, process, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the worker exited before parsing"
        assert time.monotonic() < deadline, f"{path} not written in {timeout} s"
        time.sleep(0.1)


def test_a_warm_worker_parses_aside_holds_no_connection_and_runs_the_build(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    land_klines(lake, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", FIRST_LOAD)
    land_activity(lake)
    build_marts(settings, changed_only=True)
    target_manifest = transform.dbt_paths(settings)[0] / "manifest.json"
    built_manifest = target_manifest.stat().st_mtime_ns
    land_klines(lake, candles("BTCUSDT", "2026-10-01T02:00", 60, 150.0), "synthetic", SECOND_LOAD)
    with transform.warm_build(settings):
        worker = transform._WARM[lake.resolve()]
        # perf_info.json is the parse's last artifact; it goes beside the parse, not into the
        # target folder a build of the same lake may be using.
        wait_for(transform.parse_dir(settings) / "perf_info.json", worker.process)
        assert (transform.parse_dir(settings) / "partial_parse.msgpack").exists()
        assert target_manifest.stat().st_mtime_ns == built_manifest
        # Parsed and waiting, it holds no connection: another writer opens the warehouse.
        with duckdb.connect(str(warehouse_path(settings))) as con:
            con.execute("select 1").fetchall()
        result = build_marts(settings, changed_only=True)
        assert lake.resolve() not in transform._WARM
        # The build's results are there when build_marts returns; its manifest and state may
        # still be being written.
        assert {r["unique_id"] for r in read_run_results(settings)} >= {"model.lakehouse.fct_klines_hourly"}
    assert worker.process.returncode == 0  # the block waited for it
    state_manifest = transform.state_dir(settings) / "manifest.json"
    assert state_manifest.read_bytes() == target_manifest.read_bytes()
    assert changed_selection(settings, lake_fingerprints(settings)) == "state:modified+"
    assert result.models > 0
    # An incremental build: the Python models' modules were imported while it waited.
    assert re.search(r"imported \d+ modules for Python models", worker.output)
    assert target_manifest.stat().st_mtime_ns > built_manifest  # the build writes its own
    compiled = json.loads(target_manifest.read_text())["nodes"]["model.lakehouse.fct_klines_hourly"]
    assert "int_klines_unioned" in compiled["compiled_code"]
    assert not list(target_manifest.parent.glob(".*"))  # no partial file or folder left
    # The worker closed the warehouse before exiting: checkpointed, no WAL left to replay.
    assert not warehouse_path(settings).with_name("lakehouse.duckdb.wal").exists()
    hourly = query(settings, "select open, candle_count from marts.fct_klines_hourly order by open_time")
    assert hourly["open"].tolist() == [100.0, 105.0, 150.0]
    assert hourly["candle_count"].tolist() == [60, 60, 60]


def test_a_warm_worker_runs_its_command_with_the_profile_of_that_moment(tmp_path):
    """The memory limit depends on the lake's size, which gate 1 changes after the worker parsed."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx", dbt_memory_limit="1000MB")
    worker = transform.DbtWorker(settings)
    wait_for(transform.parse_dir(settings) / "perf_info.json", worker.process)
    worker.settings = settings.model_copy(update={"dbt_memory_limit": "3000MB"})
    shown = worker.run("show", "--inline", "select current_setting('memory_limit') as memory_limit")
    with duckdb.connect() as con:
        con.execute("set memory_limit = '3000MB'")
        expected = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    assert expected != "953.6 MiB"  # what 1000MB shows as
    assert re.search(rf"\|\s*{re.escape(expected)}\s*\|", shown.stdout)


def test_a_full_build_worker_preloads_once_a_small_lake_has_landed_and_not_for_a_large_one(
    tmp_path, monkeypatch
):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    land_klines(settings.lake_dir, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", FIRST_LOAD)
    for small in (True, False):
        monkeypatch.setattr(transform, "SMALL_LAKE_BYTES", 128 * 2**20 if small else 1)
        worker = transform.DbtWorker(settings)
        assert "--preload" not in worker.process.args  # nothing built yet: a full build
        worker.landed()  # read by the worker before its command
        shown = worker.run("show", "--inline", "select 41 + 1 as answer")
        worker.close()
        assert re.search(r"\|\s*42\s*\|", shown.stdout)
        preloaded = re.search(r"importing (\d+) modules for Python models", shown.stdout)
        assert (preloaded is not None) == small, shown.stdout
        if small:
            assert int(preloaded.group(1)) >= 3  # statsmodels, scipy and sklearn at least


def test_an_unused_warm_worker_stops_with_the_block_and_changes_nothing(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    with transform.warm_build(settings):
        worker = transform._WARM[settings.lake_dir.resolve()]
        wait_for(transform.parse_dir(settings) / "perf_info.json", worker.process)
        assert worker.process.poll() is None  # parsed, waiting for a command
    assert worker.process.returncode == 0
    assert "--preload" not in worker.process.args  # a first build is a full build
    assert not warehouse_path(settings).exists()
    assert not (transform.dbt_paths(settings)[0] / "run_results.json").exists()


def test_a_second_run_of_the_same_lake_leaves_the_first_runs_warm_worker_alone(tmp_path):
    """Two runs of one lake in one process (two threads): the second starts no worker of its own
    beside the first's and never takes or stops the first's; its build starts dbt itself."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    seen: list = []

    def second_run() -> None:  # a thread starts with a context of its own, as a second run does
        with transform.warm_build(settings) as second:
            second.landed()
            seen.append((second, *transform.take_worker(settings)))

    with transform.warm_build(settings) as first:
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
        second, taken, owned = seen[0]
        assert not isinstance(second, transform.DbtWorker)
        assert owned and taken is not first
        taken.close()
        assert taken.process.returncode == 0
        assert first.process.poll() is None  # still waiting for its own run's command
        first.landed()  # its stdin is open: this wrote to it (it raised when the other run had closed it)
        assert first.preloading
        assert transform.take_worker(settings) == (first, False)
    assert first.process.returncode == 0


def test_a_file_changed_while_the_build_ran_is_built_again_next_time(tmp_path, monkeypatch):
    """The state records the lake as the build found it when it started, not as it is after."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    land_klines(lake, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", FIRST_LOAD)
    land_activity(lake)
    build_marts(settings, changed_only=True)
    run = transform.DbtWorker.run

    def land_during_the_build(self, *args, **kwargs):
        done = run(self, *args, **kwargs)
        land_klines(lake, candles("BTCUSDT", "2026-10-01T02:00", 60, 150.0), "synthetic", SECOND_LOAD)
        return done

    monkeypatch.setattr(transform.DbtWorker, "run", land_during_the_build)
    network = lake / "raw" / "synthetic" / "network"
    next(network.rglob("*.parquet")).touch()  # a change the build sees
    build_marts(settings, changed_only=True)
    monkeypatch.setattr(transform.DbtWorker, "run", run)
    assert (
        changed_selection(settings, lake_fingerprints(settings)) == "source:synthetic.klines+ state:modified+"
    )
    build_marts(settings, changed_only=True)
    hourly = query(settings, "select open from marts.fct_klines_hourly order by open_time")
    assert hourly["open"].tolist() == [100.0, 105.0, 150.0]


def test_binance_only_lake_builds_with_empty_synthetic_marts(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    land_klines(settings.lake_dir, candles("BTCUSDT", "2026-10-01", 1440, 100.0), "binance", FIRST_LOAD)
    build_marts(settings)
    hourly = query(settings, "select count(*) as n from marts.fct_klines_hourly")["n"][0]
    users = query(settings, "select count(*) as n from marts.dim_users")["n"][0]
    network = query(settings, "select count(*) as n from marts.fct_gas_price_decomposition")["n"][0]
    assert (hourly, users, network) == (24, 0, 0)


def test_dbt_builds_on_its_own_in_the_project_folder_and_freshness_reports_stale_feeds(tmp_path):
    """`cd dbt_project && dbt build`, then `dbt source freshness`, with only LAKEHOUSE_LAKE_DIR set,
    on a lake that was landed and gated but never built by `lakehouse` (so no warehouse yet).

    The profile and every path come from the committed files; DBT_TARGET_PATH and DBT_LOG_PATH
    only keep dbt's artifacts out of the checkout. Freshness: binance klines 30 minutes old pass
    (warn after 2 hours), archive klines 3 days old warn (2 days; error after 7), synthetic
    klines 8 days old are an error (7 days), and a feed that never landed a file is stale.
    """
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    now = datetime.now(UTC)
    for symbol, source, age in (
        ("BTCUSDT", "binance", timedelta(minutes=30)),
        ("ETHUSDT", "archive", timedelta(days=3)),
        ("SOLUSDT", "synthetic", timedelta(days=8)),
    ):
        frame = candles(symbol, "2026-10-01", 120, 100.0)
        land_frame(
            frame,
            lake,
            source=source,
            dataset="klines",
            key_columns=KLINE_KEY,
            date_column="open_time",
            partition_columns=("symbol", "interval"),
            ingested_at=now - age,
        )
    # Landed and gated as `lakehouse ingest` and `lakehouse validate` do; never built by lakehouse.
    assert [r.accepted for r in validate_raw(settings)] == [120, 120, 120]
    assert not (lake / "warehouse" / "lakehouse.duckdb").exists()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "DBT_"))},
        "LAKEHOUSE_LAKE_DIR": str(lake),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    dbt = str(Path(sys.executable).parent / "dbt")

    build = subprocess.run([dbt, "build"], cwd=transform.DBT_PROJECT, env=env, capture_output=True, text=True)

    assert build.returncode == 0, build.stdout[-3000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    assert {(r["unique_id"].split(".")[0], r["status"]) for r in results} == {
        ("operation", "success"),  # the project's hooks
        ("seed", "success"),
        ("model", "success"),
        ("test", "pass"),
        ("unit_test", "pass"),
        ("exposure", "no-op"),  # the dashboard pages, in the lineage
    }
    with duckdb.connect(str(lake / "warehouse" / "lakehouse.duckdb"), read_only=True) as con:
        hourly = con.execute(
            "select symbol, count(*) from marts.fct_klines_hourly group by symbol order by symbol"
        ).fetchall()
    assert hourly == [("BTCUSDT", 2), ("ETHUSDT", 2), ("SOLUSDT", 2)]

    freshness = subprocess.run(
        [dbt, "source", "freshness"], cwd=transform.DBT_PROJECT, env=env, capture_output=True, text=True
    )

    assert freshness.returncode == 1  # some feed is an error
    sources = json.loads((tmp_path / "target" / "sources.json").read_text())["results"]
    status = {r["unique_id"].removeprefix("source.lakehouse."): r["status"] for r in sources}
    assert status == {
        "binance.klines": "pass",
        "archive.klines": "warn",
        "synthetic.klines": "error",
        "synthetic.users": "error",
        "synthetic.transactions": "error",
        "synthetic.network": "error",
        "binance.exchange_info": "error",
        "binance_trades.trades": "error",
        "quality.gate_runs": "pass",  # gate 1 has just run
    }
    archive = next(r for r in sources if r["unique_id"].endswith("archive.klines"))
    assert 3 * 86_400 - 60 < archive["max_loaded_at_time_ago_in_s"] < 3 * 86_400 + 600


def test_the_custom_generic_tests_fail_on_exactly_the_rows_they_describe(tmp_path):
    """OHLC consistency, candle spacing, non-negative volumes and taker volume within volume,
    run on int_klines_unioned after four of its candles were broken in the warehouse."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    land_klines(settings.lake_dir, candles("BTCUSDT", "2026-10-01", 180, 100.0), "binance", FIRST_LOAD)
    build_marts(settings)
    at = "timestamptz '2026-10-01 {}:00+00'".format
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            f"""
            update intermediate.int_klines_unioned set
                high_price = if(opened_at = {at("00:10")}, low_price - 1, high_price),
                volume = if(opened_at = {at("00:20")}, -1.0, volume),
                taker_buy_base_volume = if(opened_at = {at("00:30")}, volume + 1, taker_buy_base_volume),
                opened_at = if(opened_at = {at("00:40")}, opened_at + interval 30 second, opened_at),
                -- written after the tests last passed, so incremental tests check these rows again
                loaded_at = loaded_at + interval 400 day
            """
        )

    run_dbt(settings, "test", "--select", "int_klines_unioned", check=False)

    target = transform.dbt_paths(settings)[0]
    results = json.loads((target / "run_results.json").read_text())["results"]
    failures = {
        r["unique_id"].split(".")[2].split("_int_klines_unioned")[0]: r["failures"]
        for r in results
        if r["status"] == "fail"
    }
    assert failures == {
        "ohlc_consistency": 1,  # 00:10: high below low
        "non_negative": 1,  # 00:20: volume -1
        "taker_volume_within_volume": 2,  # 00:30, and 00:20 (taker-buy volume 0.5 above -1)
        "candle_spacing": 1,  # 00:40:30: off the grid, and less than a minute before 00:41
    }


def exchange_candles(minutes: pd.DataFrame, interval: str) -> pd.DataFrame:
    """The exchange's own candles of a longer interval, made from its 1-minute candles."""
    step = pd.Timedelta(interval.replace("h", "hour").replace("d", "day"))
    grouped = minutes.groupby(["market", "symbol", minutes["open_time"].dt.floor(step)], sort=True)
    frame = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        quote_volume=("quote_volume", "sum"),
        num_trades=("num_trades", "sum"),
        taker_buy_base_volume=("taker_buy_base_volume", "sum"),
        taker_buy_quote_volume=("taker_buy_quote_volume", "sum"),
    ).reset_index()
    return frame.assign(
        interval=interval, close_time=frame["open_time"] + step - pd.Timedelta(milliseconds=1)
    )


def test_built_from_complete_minutes_the_rollups_equal_the_exchange_hour_and_day_candles(tmp_path):
    """The lake holds one source's 1m, 1h and 1d candles: the marts roll up the minutes and
    equal the exchange's hours and days; the singular test warns about the one hour whose
    1h candle the exchange revised (its close differs from the minutes')."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    minutes = candles("BTCUSDT", "2026-10-01", 2 * 1440, 100.0)
    hours, days = exchange_candles(minutes, "1h"), exchange_candles(minutes, "1d")
    revised = hours.assign(close=np.where(hours.index == 5, hours["close"] + 1, hours["close"]))
    land_klines(settings.lake_dir, pd.concat([minutes, revised, days]), "binance", FIRST_LOAD)

    build_marts(settings)

    columns = ["open_time", "open", "high", "low", "close", "volume", "quote_volume", "num_trades"]
    columns += ["taker_buy_base_volume", "taker_buy_quote_volume"]
    for mart, exchange in (("fct_klines_hourly", hours), ("fct_klines_daily", days)):
        built = query(settings, f"select * from marts.{mart} order by open_time")
        assert built["source_interval"].unique().tolist() == ["1m"] and built["is_complete"].all()
        assert len(built) == len(exchange) and (mart, len(exchange)) in {
            ("fct_klines_hourly", 48),
            ("fct_klines_daily", 2),
        }
        for column in columns[:5]:  # prices and times exactly
            assert built[column].tolist() == exchange[column].tolist(), (mart, column)
        for column in columns[5:]:  # sums, to float rounding
            assert built[column].tolist() == pytest.approx(exchange[column].tolist(), rel=1e-12), (
                mart,
                column,
            )
    target = transform.dbt_paths(settings)[0]
    [check] = [
        r
        for r in json.loads((target / "run_results.json").read_text())["results"]
        if r["unique_id"].startswith("test.lakehouse.assert_hourly_rollup_matches_exchange_hourly")
    ]
    assert (check["status"], check["failures"]) == ("warn", 1)


def test_every_staging_rule_repairs_and_counts_exactly_the_rows_it_describes(tmp_path):
    """One row per rule in each staging model (the built lake above covers a few of them):
    fct_staging_repairs counts each rule once and nothing else."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    klines = candles("BTCUSDT", "2026-10-01", 60, 100.0).astype({"num_trades": "Int64"})
    klines.loc[1, "close_time"] += pd.Timedelta(seconds=1)  # close_time_derived
    klines.loc[2, "high"] = klines.loc[2, "low"]  # below open and close: ohlc_bounds_repaired
    klines.loc[3, "taker_buy_base_volume"] = klines.loc[3, "volume"] + 1  # taker_volume_capped
    klines.loc[4, "num_trades"] = None  # num_trades_imputed
    klines.loc[5, "low"] = 0.0  # a non-positive price: dropped
    land_klines(lake, klines, "binance", FIRST_LOAD)

    registered = pd.Timestamp("2026-09-01", tz="UTC")
    users = pd.DataFrame(
        {
            "user_id": pd.array(range(1, 11), dtype="Int64"),
            "wallet_address": [f"0x{i:02d}" for i in range(1, 11)],
            "registered_at": registered + pd.to_timedelta(range(10), unit="D"),
            "last_login_at": pd.Timestamp("2026-10-01", tz="UTC"),
            "account_balance_usd": [50.0] * 10,
            "country": ["DE"] * 10,
            "device_type": ["ios"] * 10,
            "vip_tier": pd.array([1] * 10, dtype="Int64"),
            "kyc_level": pd.array([1] * 10, dtype="Int64"),
            "is_active": [True] * 10,
        }
    )
    users.loc[1, "account_balance_usd"] = -3.0  # balance_negative_zeroed
    users.loc[2, "account_balance_usd"] = None  # balance_imputed
    users.loc[3, "account_balance_usd"] = 6e7  # above the 50M cap: balance_capped
    users.loc[4, "country"] = None  # country_imputed
    users.loc[5, "device_type"] = None  # device_imputed
    users.loc[6, "vip_tier"] = None  # tiers_imputed
    users.loc[7, "last_login_at"] = registered  # before its registration: login_before_registration
    users.loc[8, "user_id"] = None  # dropped
    land_raw_activity(lake, "users", users, FIRST_LOAD)

    tx = pd.DataFrame(
        {
            "tx_id": range(1, 9),
            "occurred_at": pd.Timestamp("2026-10-01T00:30", tz="UTC") + pd.to_timedelta(range(8), unit="min"),
            "from_user_id": -1,
            "to_user_id": -1,
            "from_address": "0xaa",
            "to_address": "0xbb",
            "tx_type": ["trade", "trade", "trade", "trade", "futures", "futures", "trade", "trade"],
            "token_symbol": "BTC",
            "amount": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -2.0, 0.0],
            "fee": [0.1, None, -1.0, 0.1, 0.1, 0.1, 0.1, 0.1],
            "fee_token": ["BTC", "BTC", "BTC", None, "BTC", "BTC", "BTC", "BTC"],
            "leverage": pd.array([0, 0, 0, 0, None, 400, 0, 0], dtype="Int64"),
            "status": "completed",
        }
    )
    # fee_imputed, fee_negative_zeroed, fee_token_imputed, leverage_imputed, leverage_capped,
    # amount_sign_repaired, and a zero amount dropped: rows 2 to 8.
    land_raw_activity(lake, "transactions", tx, FIRST_LOAD)

    network = pd.DataFrame(
        {
            "observed_at": pd.date_range("2026-10-01", periods=60, freq="1min", tz="UTC"),
            "gas_price_gwei": 20.0,
            "tps": 15.0,
            "block_time_s": 12.0,
            "difficulty": 1e15,
            "hashrate": 1e12,
        }
    )
    network.loc[10, "gas_price_gwei"] = -1.0  # out_of_range_nulled
    network.loc[20, "tps"] = None  # metric_imputed
    land_raw_activity(lake, "network", network, FIRST_LOAD)

    build_marts(settings)

    repairs = query(settings, "select model_name, rule_name, affected_rows from marts.fct_staging_repairs")
    counts = {(r.model_name, r.rule_name): r.affected_rows for r in repairs.itertuples() if r.affected_rows}
    assert counts == {
        ("stg_binance__klines", "close_time_derived"): 1,
        ("stg_binance__klines", "ohlc_bounds_repaired"): 1,
        ("stg_binance__klines", "taker_volume_capped"): 1,
        ("stg_binance__klines", "num_trades_imputed"): 1,
        ("stg_binance__klines", "dropped"): 1,
        ("stg_synthetic__users", "balance_negative_zeroed"): 1,
        ("stg_synthetic__users", "balance_imputed"): 1,
        ("stg_synthetic__users", "balance_capped"): 1,
        ("stg_synthetic__users", "country_imputed"): 1,
        ("stg_synthetic__users", "device_imputed"): 1,
        ("stg_synthetic__users", "tiers_imputed"): 1,
        ("stg_synthetic__users", "login_before_registration"): 1,
        ("stg_synthetic__users", "dropped"): 1,
        ("stg_synthetic__transactions", "fee_imputed"): 1,
        ("stg_synthetic__transactions", "fee_negative_zeroed"): 1,
        ("stg_synthetic__transactions", "fee_token_imputed"): 1,
        ("stg_synthetic__transactions", "leverage_imputed"): 1,
        ("stg_synthetic__transactions", "leverage_capped"): 1,
        ("stg_synthetic__transactions", "amount_sign_repaired"): 1,
        ("stg_synthetic__transactions", "dropped"): 1,
        ("stg_synthetic__network", "out_of_range_nulled"): 1,
        ("stg_synthetic__network", "metric_imputed"): 2,  # the missing tps, and the gas nulled above
    }
    staged_users = query(
        settings,
        "select user_id, account_balance_usd, country, device_type, vip_tier, last_login_at "
        "from staging.stg_synthetic__users where not is_dropped order by user_id",
    )
    assert staged_users["account_balance_usd"].tolist() == [50.0, 0.0, 0.0, 5e7, 50.0, 50.0, 50.0, 50.0, 50.0]
    assert staged_users.loc[4, "country"] == "unknown" and staged_users.loc[5, "device_type"] == "unknown"
    assert staged_users.loc[6, "vip_tier"] == 0 and staged_users.loc[
        7, "last_login_at"
    ] == registered + pd.Timedelta(days=7)


def test_users_and_network_landed_again_keep_the_latest_copy(tmp_path):
    """Staging dedupes on the natural key, the latest ingested_at winning, and counts the copies."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "wallet_address": ["0x01", "0x02"],
            "registered_at": pd.Timestamp("2026-09-01", tz="UTC"),
            "last_login_at": pd.Timestamp("2026-10-01", tz="UTC"),
            "account_balance_usd": [10.0, 30.0],
            "country": "DE",
            "device_type": "ios",
            "vip_tier": 1,
            "kyc_level": 1,
            "is_active": True,
        }
    )
    network = pd.DataFrame(
        {
            "observed_at": pd.date_range("2026-10-01", periods=10, freq="1min", tz="UTC"),
            "gas_price_gwei": 20.0,
            "tps": 15.0,
            "block_time_s": 12.0,
            "difficulty": 1e15,
            "hashrate": 1e12,
        }
    )
    later = {
        "users": users.iloc[[0]].assign(account_balance_usd=20.0),
        "network": network.iloc[[5]].assign(gas_price_gwei=99.0),
    }
    for name, frame in (("users", users), ("network", network)):
        # The second batch holds another key range, so it is another file beside the first.
        land_raw_activity(lake, name, frame, FIRST_LOAD)
        land_raw_activity(lake, name, later[name], SECOND_LOAD)
    assert len(list((lake / "raw" / "synthetic" / "users").rglob("*.parquet"))) == 2

    build_marts(settings)

    staged = query(
        settings, "select user_id, account_balance_usd from staging.stg_synthetic__users order by 1"
    )
    assert staged.values.tolist() == [[1, 20.0], [2, 30.0]]
    gas = query(settings, "select gas_price_gwei from staging.stg_synthetic__network order by observed_at")
    assert gas["gas_price_gwei"].tolist() == [20.0] * 5 + [99.0] + [20.0] * 4
    repairs = query(
        settings,
        "select model_name, affected_rows from marts.fct_staging_repairs "
        "where rule_name = 'duplicates_collapsed' and affected_rows > 0 order by 1",
    )
    assert repairs.values.tolist() == [["stg_synthetic__network", 1], ["stg_synthetic__users", 1]]


def test_trades_and_exchange_info_landed_twice_keep_the_copy_their_rule_prefers(tmp_path, monkeypatch):
    """Trades: the websocket copy wins (it has the exchange's event time), then the first one
    persisted; exchange info: the latest copy of a snapshot row. Both count what they collapsed."""
    from flows.sources import trades_stream
    from flows.sources.binance_rest import exchange_info_frame

    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx", symbols="BTCUSDT")
    lake = settings.lake_dir
    traded = int(datetime(2026, 10, 31, 12, tzinfo=UTC).timestamp() * 1000)

    def trade(trade_id: int, origin: str, price: str) -> tuple:
        at = traded + trade_id
        event = at + 5 if origin == "ws" else None
        return (
            "BTCUSDT",
            trade_id,
            price,
            "0.5",
            2 * trade_id,
            2 * trade_id + 1,
            at,
            False,
            event,
            at + 9,
            origin,
        )

    # Three collectors (as three runs of the stream would be) persist overlapping id ranges; each
    # range is its own file. The price says which landing a row came from.
    landings = [
        (FIRST_LOAD, [trade(100, "rest", "1"), trade(101, "rest", "1")]),
        (SECOND_LOAD, [trade(100, "ws", "2"), trade(101, "rest", "2"), trade(102, "rest", "2")]),
        (THIRD_LOAD, [trade(101, "rest", "3"), trade(102, "ws", "3"), trade(103, "ws", "3")]),
    ]
    for at, rows in landings:
        monkeypatch.setattr(trades_stream, "utc_now", lambda at=at: at)
        assert trades_stream.TradeCollector(settings).land_rows(rows).rows == len(rows)
    assert len(list((lake / "raw" / "binance" / "trades").rglob("*.parquet"))) == 3

    # One snapshot landed twice: first with both symbols, then again with BTCUSDT alone (another
    # file), its status changed in between.
    info = {
        "symbols": [
            {
                "symbol": symbol,
                "status": "TRADING",
                "baseAsset": symbol[:3],
                "quoteAsset": "USDT",
                "filters": [],
            }
            for symbol in ("BTCUSDT", "ETHUSDT")
        ]
    }
    halted = {"symbols": [dict(info["symbols"][0], status="HALT")]}
    for document, symbols, at in (
        (info, ["BTCUSDT", "ETHUSDT"], FIRST_LOAD),
        (halted, ["BTCUSDT"], SECOND_LOAD),
    ):
        land_frame(
            exchange_info_frame(document, "spot", symbols, FIRST_LOAD),
            lake,
            source="binance",
            dataset="exchange_info",
            key_columns=("snapshot_at", "market", "symbol"),
            date_column="snapshot_at",
            zone="raw",
            ingested_at=at,
        )

    build_marts(settings)

    trades = query(
        settings,
        "select agg_trade_id, price, is_gap_filled, persisted_at, duplicate_copies "
        "from staging.stg_binance__trades order by 1",
    )
    assert trades.drop(columns="persisted_at").values.tolist() == [
        [100, 2.0, False, 2],
        [101, 1.0, True, 3],
        [102, 3.0, False, 2],
        [103, 3.0, False, 1],
    ]
    assert trades["persisted_at"].tolist() == [
        pd.Timestamp(at) for at in (SECOND_LOAD, FIRST_LOAD, THIRD_LOAD, THIRD_LOAD)
    ]
    info_rows = query(
        settings,
        "select symbol, symbol_status, ingested_at, duplicate_copies from staging.stg_binance__exchange_info order by 1",
    )
    assert info_rows.values.tolist() == [
        ["BTCUSDT", "halt", pd.Timestamp(SECOND_LOAD), 2],
        ["ETHUSDT", "trading", pd.Timestamp(FIRST_LOAD), 1],
    ]
    repairs = query(
        settings,
        "select model_name, dataset, affected_rows from marts.fct_staging_repairs "
        "where rule_name = 'duplicates_collapsed' order by 1",
    )
    assert repairs.values.tolist() == [
        ["stg_binance__exchange_info", "exchange_info", 1],
        ["stg_binance__trades", "trades", 4],
    ]


def test_an_upload_without_quote_or_taker_volumes_reaches_the_published_marts_with_them_unknown(tmp_path):
    """OHLCV only (what `lakehouse upload` documents): the candles are kept, not dropped; the
    unknown volumes stay null through staging (not the volume), the rollups and gate 2."""
    from flows.publish import publish_marts

    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    minutes = candles("BTCUSDT", "2026-10-01", 120, 100.0)
    unknown = ["quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"]
    land_klines(settings.lake_dir, minutes.assign(**dict.fromkeys(unknown, np.nan)), "upload", FIRST_LOAD)

    build_marts(settings)
    published = publish_marts(settings)

    staged = query(
        settings,
        "select count(*) filter (where is_dropped), count(*), count(taker_buy_base_volume), "
        "count(taker_buy_quote_volume), count(quote_volume) from staging.stg_upload__klines",
    )
    assert staged.values.tolist() == [[0, 120, 0, 0, 0]]
    hourly = query(
        settings,
        "select volume, quote_volume, vwap, taker_buy_base_volume, close, is_complete "
        "from marts.fct_klines_hourly order by open_time",
    )
    volumes = minutes.groupby(minutes["open_time"].dt.floor("h"))["volume"].sum().tolist()
    assert hourly["volume"].tolist() == volumes
    assert hourly[["quote_volume", "vwap", "taker_buy_base_volume"]].isna().all().all()
    assert hourly["close"].tolist() == [minutes["close"].iloc[59], minutes["close"].iloc[119]]
    assert hourly["is_complete"].tolist() == [True, True]
    assert published.tables["fct_klines_hourly"] == 2 and all(r.success for r in published.gate)


def test_volatility_and_technicals_equal_an_independent_computation(tmp_path):
    """22 days of a random walk: realized volatility (hourly, daily, rolling), close-to-close
    volatility, the annualized columns and Bollinger bands against pandas, to float rounding."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    minutes = candles("BTCUSDT", "2026-10-01", 22 * 1440, 100.0)
    rng = np.random.default_rng(11)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.0008, len(minutes))))
    open_ = np.r_[100.0, close[:-1]]
    minutes = minutes.assign(
        open=open_, close=close, high=np.maximum(open_, close) * 1.0005, low=np.minimum(open_, close) * 0.9995
    )
    land_klines(settings.lake_dir, minutes, "binance", FIRST_LOAD)

    build_marts(settings)

    at = minutes.set_index("open_time")
    squared = np.log(at["close"]).diff() ** 2  # the first minute has no return
    hourly = np.sqrt(squared.groupby(at.index.floor("h")).sum(min_count=1))
    built_hourly = query(
        settings, "select realized_volatility from marts.fct_klines_hourly order by open_time"
    )
    assert built_hourly["realized_volatility"].tolist() == pytest.approx(hourly.tolist(), rel=1e-9)

    daily = exchange_candles(minutes, "1d").set_index("open_time")[["close"]]
    daily["realized"] = np.sqrt(squared.groupby(at.index.floor("D")).sum(min_count=1))
    daily["log_return"] = np.log(daily["close"]).diff()
    year = np.sqrt(365)
    expected = pd.DataFrame(
        {
            "log_return": daily["log_return"],
            "realized_volatility_annualized": daily["realized"] * year,
            # Seven returns: the first day has none, so the 8th day is the first with a value.
            "close_to_close_7d_annualized": daily["log_return"].rolling(7).std() * year,
            "realized_7d_annualized": np.sqrt((daily["realized"] ** 2).rolling(7).mean()) * year,
            "realized_30d_annualized": np.nan,  # fewer than 30 days
        }
    )
    built = query(
        settings, f"select {', '.join(expected)} from marts.fct_volatility_daily order by trading_date"
    )
    for column in expected:
        assert built[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-9, nan_ok=True), (
            column
        )

    mean_20, std_20 = daily["close"].rolling(20).mean(), daily["close"].rolling(20).std()
    bands = query(
        settings,
        "select sma_20, bollinger_upper, bollinger_lower from marts.fct_technicals_daily order by trading_date",
    )
    assert bands["sma_20"].tolist() == pytest.approx(mean_20.tolist(), rel=1e-12, nan_ok=True)
    assert bands["bollinger_upper"].tolist() == pytest.approx(
        (mean_20 + 2 * std_20).tolist(), rel=1e-9, nan_ok=True
    )
    assert bands["bollinger_lower"].tolist() == pytest.approx(
        (mean_20 - 2 * std_20).tolist(), rel=1e-9, nan_ok=True
    )
    assert bands["sma_20"].notna().sum() == 3  # days 20 to 22


def test_amount_and_fee_outliers_follow_the_robust_z_score_within_each_type(tmp_path):
    """20 trades and 20 withdrawals of about 1 BTC with fees of about 0.001 BTC; one trade's
    fee is 100 times the others and one withdrawal's amount 50 times: only those are flagged,
    and every flag equals |ln(x) - median| / (1.4826 MAD) > 4 computed from the mart's USD values."""
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    land_klines(lake, candles("BTCUSDT", "2026-10-01", 120, 100.0), "binance", FIRST_LOAD)
    n = 40
    i = np.arange(n)
    amount = 1.0 + (i % 7) * 0.01
    fee = 0.001 * (1.0 + (i % 5) * 0.02)
    fee[3] *= 100  # a trade
    amount[25] *= 50  # a withdrawal
    amount[8] *= 50  # a trade of user 1
    frame = pd.DataFrame(
        {
            "tx_id": i + 1,
            "occurred_at": pd.Timestamp("2026-10-01T00:10", tz="UTC") + pd.to_timedelta(i, unit="min"),
            "from_user_id": np.where(i % 2 == 0, 1, 2),  # trades: user 1 the even ones, user 2 the odd
            "to_user_id": -1,
            "from_address": "0xaa",
            "to_address": "0xbb",
            "tx_type": np.where(i < 20, "trade", "withdrawal"),
            "token_symbol": "BTC",
            "amount": amount,
            "fee": fee,
            "fee_token": "BTC",
            "leverage": 0,
            "status": "completed",
        }
    )
    land_raw_activity(lake, "transactions", frame, FIRST_LOAD)
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "wallet_address": ["0x01", "0x02"],
            "registered_at": pd.Timestamp("2026-09-01", tz="UTC"),
            "last_login_at": pd.Timestamp("2026-10-01", tz="UTC"),
            "account_balance_usd": 100.0,
            "country": "DE",
            "device_type": "ios",
            "vip_tier": 1,
            "kyc_level": 1,
            "is_active": True,
        }
    )
    land_raw_activity(lake, "users", users, FIRST_LOAD)

    build_marts(settings)

    tx = query(
        settings,
        "select tx_id, tx_type, amount_usd, fee_usd, is_amount_outlier, is_fee_outlier, from_user_id "
        "from marts.fct_transactions order by tx_id",
    )
    assert tx.loc[tx["is_fee_outlier"], "tx_id"].tolist() == [4]
    assert tx.loc[tx["is_amount_outlier"], "tx_id"].tolist() == [9, 26]
    # Top traders leave the outlier out of the sums, as the daily activity mart does: user 1's
    # 50x trade would otherwise rank them first.
    trades = tx[(tx["tx_type"] == "trade") & ~tx["is_amount_outlier"]]
    expected = trades.groupby("from_user_id")[["amount_usd", "fee_usd"]].sum()
    traders = query(
        settings,
        "select volume_rank, user_id, trades, outlier_trades, volume_usd, fees_usd from marts.fct_top_traders",
    )
    assert traders[["volume_rank", "user_id", "trades", "outlier_trades"]].values.tolist() == [
        [1, 2, 10, 0],
        [2, 1, 10, 1],
    ]
    assert traders["volume_usd"].tolist() == pytest.approx(
        expected.loc[[2, 1], "amount_usd"].tolist(), rel=1e-12
    )
    assert traders["fees_usd"].tolist() == pytest.approx(expected.loc[[2, 1], "fee_usd"].tolist(), rel=1e-12)
    # So do every user mart's volumes (a 50x trade and a 50x withdrawal would swamp them).
    kept = tx[~tx["is_amount_outlier"]]
    monetary = query(settings, "select user_id, monetary_usd from marts.dim_users order by user_id")
    per_user = kept.groupby("from_user_id")["amount_usd"].sum()
    assert monetary["monetary_usd"].tolist() == pytest.approx(per_user.loc[[1, 2]].tolist(), rel=1e-12)
    daily = query(settings, "select volume_usd, fees_usd from marts.fct_user_activity_daily")
    assert daily.values.tolist() == [
        [pytest.approx(kept["amount_usd"].sum(), rel=1e-12), pytest.approx(kept["fee_usd"].sum(), rel=1e-12)]
    ]
    country = query(settings, "select country, volume_usd from marts.fct_users_by_country")
    assert country.values.tolist() == [["DE", pytest.approx(kept["amount_usd"].sum(), rel=1e-12)]]
    for measure, flag in (("amount_usd", "is_amount_outlier"), ("fee_usd", "is_fee_outlier")):
        logs = np.log(tx[measure])
        median = logs.groupby(tx["tx_type"]).transform("median")
        mad = (logs - median).abs().groupby(tx["tx_type"]).transform("median")
        assert tx[flag].tolist() == ((logs - median).abs() / (1.4826 * mad) > 4).tolist(), measure


def flat_candles(symbol: str, start: str, periods: int, price: float) -> pd.DataFrame:
    frame = candles(symbol, start, periods, price)
    return frame.assign(open=price, high=price, low=price, close=price, quote_volume=frame["volume"] * price)


def land_transactions(lake: Path, rows: list[tuple], at: datetime) -> None:
    """(tx_id, occurred_at, tx_type, token, amount) rows; fees in USDT, users outside the exchange."""
    frame = pd.DataFrame(rows, columns=["tx_id", "occurred_at", "tx_type", "token_symbol", "amount"])
    n = len(frame)
    frame = frame.assign(
        occurred_at=pd.to_datetime(frame["occurred_at"], utc=True, format="ISO8601"),
        from_user_id=-1,
        to_user_id=-1,
        from_address="0xaa",
        to_address="0xbb",
        fee=0.1,
        fee_token="USDT",
        leverage=0,
        status=["completed"] * n,
    )
    land_raw_activity(lake, "transactions", frame, at)


def test_incremental_transactions_equal_a_full_refresh(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    btc = flat_candles("BTCUSDT", "2026-10-01", 361, 100.0)  # 00:00 to 06:00
    gap = btc["open_time"].between(
        pd.Timestamp("2026-10-01T03:00", tz="UTC"), pd.Timestamp("2026-10-01T03:09", tz="UTC")
    )
    land_klines(lake, btc[~gap], "synthetic", FIRST_LOAD)
    usdt_trades = [(k + 5, "2026-10-01T01:00", "trade", "USDT", 100 * np.exp(0.1 * k)) for k in range(-4, 5)]
    gap_trades = [(20 + m, f"2026-10-01T03:0{m}:30", "trade", "BTC", 1.0) for m in range(1, 7)]
    outlier, late = (
        (30, "2026-10-01T02:00", "trade", "USDT", 200.0),
        (40, "2026-10-01T07:30", "withdrawal", "BTC", 1.0),
    )
    land_transactions(lake, [*usdt_trades, *gap_trades, outlier, late], FIRST_LOAD)
    read = "select * from marts.fct_transactions order by tx_id"

    build_marts(settings)
    first = query(settings, read).set_index("tx_id")
    assert set(first.loc[21:26, "price_source"]) == {"kline_1m_earlier"}
    assert first.loc[21:26, "amount_usd"].tolist() == [100.0] * 6  # the close of 02:59
    assert first.loc[40, "price_source"] == "unpriced" and pd.isna(first.loc[40, "amount_usd"])
    assert first.loc[30, "is_amount_outlier"] and first["is_amount_outlier"].sum() == 1

    # Candles a day after the last transaction price nothing: the run knows it from its probe,
    # computes nothing (the compiled SQL ends in an always-false filter) and writes nothing.
    land_klines(lake, flat_candles("ETHUSDT", "2026-10-02T12:00", 60, 50.0), "synthetic", FIRST_LOAD)
    build_marts(settings, changed_only=True)
    compiled = next((lake / "warehouse" / "dbt" / "target" / "compiled").rglob("fct_transactions.sql"))
    assert compiled.read_text().rstrip().endswith("where false")
    pd.testing.assert_frame_equal(query(settings, read).set_index("tx_id"), first)

    # Only klines change: the gap is filled at another price and candles reach the withdrawal.
    land_klines(lake, flat_candles("BTCUSDT", "2026-10-01T03:00", 10, 1000.0), "synthetic", SECOND_LOAD)
    land_klines(lake, flat_candles("BTCUSDT", "2026-10-01T06:01", 119, 100.0), "synthetic", SECOND_LOAD)
    build_marts(settings, changed_only=True)  # as the pipeline builds
    second = query(settings, read).set_index("tx_id")
    assert second.loc[21:26, "amount_usd"].tolist() == [1000.0] * 6
    assert set(second.loc[21:26, "price_source"]) == {"kline_1m"}
    assert second.loc[40, "price_source"] == "kline_1m" and second.loc[40, "amount_usd"] == 100.0
    # The new prices move the trade statistics: the 200 USDT trade, priced earlier, is no outlier now.
    assert not second["is_amount_outlier"].any()
    rewritten = set(second.index[second["loaded_at"] > first["loaded_at"].max()])
    assert rewritten == {21, 22, 23, 24, 25, 26, 30, 40}, "only re-priced and re-flagged rows are written"
    build_marts(settings, full_refresh=True)
    full = query(settings, read).set_index("tx_id")
    pd.testing.assert_frame_equal(second.drop(columns="loaded_at"), full.drop(columns="loaded_at"))

    # A correction drops the outlier (amount 0) and a new transaction arrives: staging is rebuilt.
    land_transactions(lake, [(30, "2026-10-01T02:00", "trade", "USDT", 0.0)], SECOND_LOAD)
    land_transactions(lake, [(50, "2026-10-01T05:00", "trade", "BTC", 2.0)], SECOND_LOAD)
    build_marts(settings, changed_only=True)
    third = query(settings, read).set_index("tx_id")
    assert 30 not in third.index and third.loc[50, "amount_usd"] == 200.0
    build_marts(settings, full_refresh=True)
    full = query(settings, read).set_index("tx_id")
    pd.testing.assert_frame_equal(third.drop(columns="loaded_at"), full.drop(columns="loaded_at"))


def test_tests_of_incremental_models_recheck_rows_until_they_pass(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    land_klines(settings.lake_dir, candles("BTCUSDT", "2026-10-01", 120, 100.0), "synthetic", FIRST_LOAD)
    build_marts(settings)
    records = "select count(*) as n from main.lakehouse_tested_models where relation_name like '%int_klines_unioned%'"
    assert query(settings, records)["n"][0] == 1
    test_unioned = ("test", "--select", "int_klines_unioned")

    def write(sql: str) -> None:
        with duckdb.connect(str(warehouse_path(settings))) as con:
            con.execute(sql)

    # A copy of a candle written after the last passing run breaks the grain...
    copy = "insert into intermediate.int_klines_unioned select * replace (now() as loaded_at) from intermediate.int_klines_unioned limit 1"
    write(copy)
    for _ in range(2):  # ...and stays a failure: a failing run records nothing
        with pytest.raises(LakehouseError, match="unique_combination_int_klines_unioned"):
            run_dbt(settings, *test_unioned)
    assert query(settings, records)["n"][0] == 1
    # A copy stamped before the last passing run is not looked at again: it was checked then.
    write(
        "delete from intermediate.int_klines_unioned where loaded_at = (select max(loaded_at) from intermediate.int_klines_unioned)"
    )
    write(copy.replace("now()", "loaded_at"))
    run_dbt(settings, *test_unioned)
    assert query(settings, records)["n"][0] == 2


# Marts built whole from fct_transactions and the users (materialized table_when_changed).
TRANSACTION_MARTS = [
    "dim_users",
    "fct_leverage_distribution",
    "fct_top_traders",
    "fct_transaction_activity_daily",
    "fct_user_activity_daily",
    "fct_user_balance_buckets",
    "fct_user_registrations_daily",
    "fct_users_by_country",
    "fct_users_by_device",
]


def model_messages(settings) -> dict[str, str]:
    """What the last dbt command said of each model it ran ("unchanged" for one it kept)."""
    return {
        r["unique_id"].split(".")[-1]: r["adapter_response"].get("_message")
        for r in read_run_results(settings)
        if r["unique_id"].startswith("model.")
    }


def mark_marts(settings, tables: list[str], mark: str) -> None:
    """Comment each marts table: a table built again is a new table, without the comment."""
    with duckdb.connect(str(warehouse_path(settings))) as con:
        for table in tables:
            con.execute(f"comment on table marts.{table} is '{mark}'")


def mart_comments(settings, tables: list[str]) -> dict[str, str | None]:
    rows = query(settings, "select table_name, comment from duckdb_tables() where schema_name = 'marts'")
    comments = dict(zip(rows["table_name"], rows["comment"], strict=True))
    return {table: comments[table] for table in tables}


def mart_contents(settings, tables: list[str]) -> dict[str, pd.DataFrame]:
    return {table: query(settings, f"select * from marts.{table} order by all") for table in tables}


def test_marts_whose_inputs_did_not_change_are_kept_and_built_again_when_they_do(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake", gx_dir=tmp_path / "gx")
    lake = settings.lake_dir
    two_days = [
        candles("BTCUSDT", "2026-10-01", 2 * 1440, 100.0),
        candles("ETHUSDT", "2026-10-01", 2 * 1440, 50.0),
    ]
    land_klines(lake, pd.concat(two_days), "synthetic", FIRST_LOAD)
    land_activity(lake)
    build_marts(settings, changed_only=True)
    mark_marts(settings, TRANSACTION_MARTS, "first build")
    before = mart_contents(settings, TRANSACTION_MARTS)

    # A new hour of candles a day after the last transaction prices none: the marts built from the
    # transactions and users are kept as they are, the kline marts are built.
    land_klines(lake, candles("BTCUSDT", "2026-10-03", 60, 130.0), "synthetic", SECOND_LOAD)
    result = build_marts(settings, changed_only=True)
    messages = model_messages(settings)
    assert {t: messages[t] for t in TRANSACTION_MARTS} == dict.fromkeys(TRANSACTION_MARTS, "unchanged")
    assert messages["fct_transactions"] == "OK" and messages["fct_order_flow_hourly"] == "OK"
    assert result.unchanged == len(TRANSACTION_MARTS)
    assert mart_comments(settings, TRANSACTION_MARTS) == dict.fromkeys(TRANSACTION_MARTS, "first build")
    kept = mart_contents(settings, TRANSACTION_MARTS)
    for table in TRANSACTION_MARTS:
        pd.testing.assert_frame_equal(kept[table], before[table])

    # A late correction of the candle at the BTC trade's minute prices the trade again: every mart
    # downstream is built again, and equals a full refresh.
    land_klines(lake, candles("BTCUSDT", "2026-10-01T03:07", 1, 900.0), "binance", SECOND_LOAD)
    result = build_marts(settings, changed_only=True)
    messages = model_messages(settings)
    assert {t: messages[t] for t in TRANSACTION_MARTS} == dict.fromkeys(TRANSACTION_MARTS, "OK")
    assert result.unchanged == 0
    assert mart_comments(settings, TRANSACTION_MARTS) == dict.fromkeys(TRANSACTION_MARTS, None)
    traders = query(settings, "select user_id, volume_usd from marts.fct_top_traders order by volume_rank")
    # 2 BTC at the corrected close (900.25), 3 ETH at the close of 04:00 (70.25).
    assert traders.values.tolist() == [[1, 2 * 900.25], [2, 3 * 70.25]]
    incremental = mart_contents(settings, TRANSACTION_MARTS)
    build_marts(settings, full_refresh=True)
    assert model_messages(settings)["dim_users"] == "OK", "a full refresh builds everything"
    full = mart_contents(settings, TRANSACTION_MARTS)
    for table in TRANSACTION_MARTS:
        pd.testing.assert_frame_equal(incremental[table], full[table])

    # The model's own code changes (a var it renders): built again.
    run_dbt(settings, "build", "--select", "fct_top_traders", "--vars", "{top_traders: 1}")
    assert model_messages(settings) == {"fct_top_traders": "OK"}
    assert query(settings, "select user_id from marts.fct_top_traders")["user_id"].tolist() == [1]

    # Rows deleted from an input (its newest loaded_at stays, its count moves): built again.
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute("delete from marts.fct_transactions where tx_id = 2")
    run_dbt(settings, "build", "--select", "fct_transaction_activity_daily")
    assert model_messages(settings) == {"fct_transaction_activity_daily": "OK"}
    activity = query(settings, "select tx_type from marts.fct_transaction_activity_daily order by all")
    assert activity["tx_type"].tolist() == ["deposit", "trade", "withdrawal"]

    # An input without loaded_at changes in place (its rows' hashes move): built again, and the
    # marts built from it too.
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute("update staging.stg_synthetic__users set country = 'FR' where user_id = 2")
    run_dbt(settings, "build", "--select", "dim_users+", "--exclude", "fct_transactions")
    messages = model_messages(settings)
    assert messages["dim_users"] == "OK" and messages["fct_users_by_country"] == "OK"
    assert messages["fct_user_balance_buckets"] == "OK"
    countries = query(settings, "select country, users from marts.fct_users_by_country order by country")
    assert dict(countries.values.tolist())["FR"] == 1
