"""The synthetic source: schemas, determinism, realism within stated tolerances, counted defects."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import adfuller

from flows.cli import main
from flows.errors import LakehouseError
from flows.schemas import KLINE_COLUMNS, cast_klines
from flows.settings import load_settings
from flows.sources.synthetic import DEFECT_RULES, DEFECTS_FILE, land_synthetic
from flows.sources.synthetic_activity import LEVERAGES, MAX_TX_USD

ARROW_TYPES = {"timestamp": "timestamp[ms, tz=UTC]", "float64": "double"}
LINEAGE = {"source": "string", "batch_id": "string", "ingested_at": "timestamp[ms, tz=UTC]"}
SCHEMAS = {
    "klines": {
        **{n: ARROW_TYPES.get(k, k) for n, k in KLINE_COLUMNS.items()},
        **LINEAGE,
    },
    "users": {
        "user_id": "int64",
        "wallet_address": "string",
        "registered_at": "timestamp[ms, tz=UTC]",
        "last_login_at": "timestamp[ms, tz=UTC]",
        "account_balance_usd": "double",
        "country": "string",
        "device_type": "string",
        "vip_tier": "int64",
        "kyc_level": "int64",
        "is_active": "bool",
        **LINEAGE,
    },
    "transactions": {
        "tx_id": "int64",
        "occurred_at": "timestamp[ms, tz=UTC]",
        "from_user_id": "int64",
        "to_user_id": "int64",
        "from_address": "string",
        "to_address": "string",
        "tx_type": "string",
        "token_symbol": "string",
        "amount": "double",
        "fee": "double",
        "fee_token": "string",
        "leverage": "int64",
        "status": "string",
        **LINEAGE,
    },
    "network": {
        "observed_at": "timestamp[ms, tz=UTC]",
        "gas_price_gwei": "double",
        "tps": "double",
        "block_time_s": "double",
        "difficulty": "double",
        "hashrate": "double",
        **LINEAGE,
    },
}
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT"


def make_settings(lake: Path, **overrides):
    values = {
        "lake_dir": lake,
        "symbols": SYMBOLS,
        "intervals": "1m",
        "start": date(2026, 9, 1),
        "end": date(2026, 9, 4),
        "seed": 7,
        "market": "spot",
        "synthetic_users": 150,
        "synthetic_tx_per_day": 300,
        "defect_rate": 0.002,
        "synthetic_clean": False,
    }
    values.update(overrides)
    return load_settings(**values)


def read(lake: Path, dataset: str, zone: str = "landing") -> pd.DataFrame:
    pattern = str(lake / zone / "synthetic" / dataset / "**" / "*.parquet")
    with duckdb.connect() as con:
        query = f"select * from read_parquet('{pattern}', hive_partitioning=false, union_by_name=true)"
        return con.sql(query).to_arrow_table().to_pandas()


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    """Three clean weeks: enough hours and weekdays for the statistical properties."""
    lake = tmp_path_factory.mktemp("realistic")
    settings = make_settings(
        lake,
        start=date(2026, 8, 3),
        end=date(2026, 8, 24),
        synthetic_users=3000,
        synthetic_tx_per_day=1500,
    )
    result = land_synthetic(settings, clean=True)
    return lake, result


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    """A short run with a high defect rate, so every kind is injected a countable number of times."""
    lake = tmp_path_factory.mktemp("defective")
    settings = make_settings(
        lake, defect_rate=0.02, synthetic_users=3000, synthetic_tx_per_day=3000, intervals="1m,1h"
    )
    return lake, land_synthetic(settings)


@pytest.fixture(scope="module")
def frames(realistic):
    lake, _ = realistic
    return {name: read(lake, name) for name in SCHEMAS}


# Schema, layout, determinism -----------------------------------------------------------------


@pytest.mark.parametrize("dataset", list(SCHEMAS))
def test_every_batch_file_has_the_dataset_schema_and_lineage(realistic, dataset):
    lake, result = realistic
    paths = sorted((lake / "landing" / "synthetic" / dataset).rglob("*.parquet"))
    assert paths and len(paths) == len(result.refs[dataset])
    for path in paths[:50]:
        schema = pq.read_schema(path)
        assert {f.name: str(f.type) for f in schema} == SCHEMAS[dataset]
    table = pq.read_table(paths[0]).to_pandas()
    assert set(table["source"]) == {"synthetic"}
    assert set(table["batch_id"]) == {paths[0].stem}
    assert "date=" in paths[0].parent.name


def test_klines_pass_the_raw_kline_cast_unchanged(frames):
    klines = frames["klines"][list(KLINE_COLUMNS)]
    pd.testing.assert_frame_equal(cast_klines(klines), klines, check_dtype=False)
    assert set(klines["market"]) == {"spot"} and set(klines["interval"]) == {"1m"}


def test_kline_partitions_follow_the_lake_layout(realistic):
    lake, result = realistic
    ref = result.refs["klines"][0]
    assert [k for k, _ in ref.partitions] == ["symbol", "interval", "date"]
    assert ref.path(lake, "landing").exists()


def test_clean_run_has_one_candle_per_symbol_minute_and_ordered_keys(frames):
    klines = frames["klines"]
    days = 21
    assert len(klines) == 3 * days * 1440
    assert not klines.duplicated(["symbol", "open_time"]).any()
    for _, group in klines.groupby("symbol"):
        times = group.sort_values("open_time")["open_time"]
        assert (times.diff().dropna() == pd.Timedelta(minutes=1)).all()
    assert (klines["close_time"] - klines["open_time"] == pd.Timedelta(milliseconds=59_999)).all()


def test_same_seed_and_parameters_land_identical_rows(tmp_path):
    def landed(lake: Path, seed: int) -> dict[str, pd.DataFrame]:
        land_synthetic(make_settings(lake, seed=seed, end=date(2026, 9, 2), defect_rate=0.02))
        out = {}
        for name in SCHEMAS:
            frame = read(lake, name).drop(columns=["ingested_at"])
            out[name] = frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)
        return out

    first, again = landed(tmp_path / "a", 7), landed(tmp_path / "b", 7)
    other = landed(tmp_path / "c", 8)
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(first[name], again[name])
        assert not first[name].equals(other[name])
    first_json = json.loads((tmp_path / "a" / DEFECTS_FILE).read_text())
    again_json = json.loads((tmp_path / "b" / DEFECTS_FILE).read_text())
    assert first_json["defects"] == again_json["defects"]
    assert first_json["batches"] == again_json["batches"]


def test_a_longer_range_keeps_the_shorter_ranges_days_unchanged(tmp_path):
    """Streams are per day, so the first two days do not depend on how many follow."""
    short = make_settings(tmp_path / "short", end=date(2026, 9, 3), synthetic_clean=True)
    long = make_settings(tmp_path / "long", end=date(2026, 9, 5), synthetic_clean=True)
    land_synthetic(short)
    land_synthetic(long)
    for name, column in (("klines", "open_time"), ("network", "observed_at")):
        a = read(tmp_path / "short", name).drop(columns=["ingested_at", "batch_id"])
        b = read(tmp_path / "long", name).drop(columns=["ingested_at", "batch_id"])
        b = b[b[column] < pd.Timestamp("2026-09-03", tz="UTC")]
        keys = [c for c in ("symbol", column) if c in a.columns]
        pd.testing.assert_frame_equal(
            a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
        )


def test_landing_the_same_parameters_twice_replaces_the_files(tmp_path):
    settings = make_settings(tmp_path, end=date(2026, 9, 2))
    first = land_synthetic(settings)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    second = land_synthetic(settings)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == files
    assert first.rows == second.rows


def test_only_closed_candles_and_past_events_are_landed(tmp_path):
    today = datetime.now(UTC).date()
    settings = make_settings(
        tmp_path, start=today - timedelta(days=1), end=today + timedelta(days=2), symbols="BTCUSDT"
    )
    before = pd.Timestamp.now(tz="UTC")
    land_synthetic(settings, clean=True)
    klines, txs = read(tmp_path, "klines"), read(tmp_path, "transactions")
    network, users = read(tmp_path, "network"), read(tmp_path, "users")
    after = pd.Timestamp.now(tz="UTC")
    assert klines["close_time"].max() < after
    # Everything closed before the run started is there: yesterday in full, today until then.
    assert klines["open_time"].min() == pd.Timestamp(today - timedelta(days=1), tz="UTC")
    assert klines["close_time"].max() >= before - pd.Timedelta(minutes=2)
    assert txs["occurred_at"].max() < after and network["observed_at"].max() < after
    assert users["registered_at"].max() < after


def test_longer_intervals_aggregate_the_same_minute_path(tmp_path):
    settings = make_settings(
        tmp_path,
        start=date(2026, 6, 1),
        end=date(2026, 9, 1),
        intervals="1h,1d,3d,1w,1M",
        symbols="BTCUSDT",
        synthetic_users=50,
        synthetic_tx_per_day=0,
    )
    land_synthetic(settings, clean=True)
    k = read(tmp_path, "klines").sort_values("open_time")
    by = {i: g.set_index("open_time") for i, g in k.groupby("interval")}
    assert len(by["1h"]) == 92 * 24 and len(by["1d"]) == 92
    months = by["1M"].index
    assert list(months) == [pd.Timestamp(f"2026-0{m}-01", tz="UTC") for m in (6, 7, 8)]
    assert (by["1w"].index.day_of_week == 0).all()  # weekly candles open on Mondays
    # Mondays 2026-06-01 .. 2026-08-31: the last opens in range and closes (in the past) after it
    assert len(by["1w"]) == 14
    assert by["1w"]["close_time"].iloc[-1] == pd.Timestamp("2026-09-07", tz="UTC") - pd.Timedelta(1, "ms")
    assert (by["3d"].index.map(lambda t: (t - pd.Timestamp(0, tz="UTC")).days % 3) == 0).all()
    daily = by["1d"]
    july = daily[(daily.index >= "2026-07-01") & (daily.index < "2026-08-01")]
    m = by["1M"].loc[pd.Timestamp("2026-07-01", tz="UTC")]
    assert m["open"] == july["open"].iloc[0] and m["close"] == july["close"].iloc[-1]
    assert m["high"] == july["high"].max() and m["low"] == july["low"].min()
    assert m["volume"] == pytest.approx(july["volume"].sum())
    assert m["close_time"] == pd.Timestamp("2026-08-01", tz="UTC") - pd.Timedelta(milliseconds=1)
    hours = by["1h"].loc[by["1h"].index < "2026-06-02"]
    first_day = daily.iloc[0]
    assert first_day["high"] == hours["high"].max() and first_day["num_trades"] == hours["num_trades"].sum()


def test_one_second_candles_aggregate_to_the_minute_candles(tmp_path):
    settings = make_settings(
        tmp_path, intervals="1s,1m", symbols="XRPUSDT", end=date(2026, 9, 2), synthetic_tx_per_day=10
    )
    land_synthetic(settings, clean=True)
    k = read(tmp_path, "klines")
    seconds = k[k["interval"] == "1s"].sort_values("open_time")
    minutes = k[k["interval"] == "1m"].sort_values("open_time").reset_index(drop=True)
    assert len(seconds) == 86_400 and len(minutes) == 1440
    grouped = seconds.groupby(seconds["open_time"].dt.floor("min"))
    assert np.allclose(grouped["high"].max().to_numpy(), minutes["high"].to_numpy())
    assert np.allclose(grouped["close"].last().to_numpy(), minutes["close"].to_numpy())
    assert (grouped["num_trades"].sum().to_numpy() == minutes["num_trades"].to_numpy()).all()


def test_unknown_symbols_get_a_stable_price(tmp_path):
    settings = make_settings(
        tmp_path, symbols="FOOUSDT", intervals="1d", end=date(2026, 9, 3), synthetic_tx_per_day=10
    )
    land_synthetic(settings, clean=True)
    first = read(tmp_path, "klines").sort_values("open_time")["open"].iloc[0]
    assert 0.1 <= first <= 1000


# Realism: market ---------------------------------------------------------------------------


def hourly_log_closes(klines: pd.DataFrame) -> pd.DataFrame:
    hours = klines.assign(hour=klines["open_time"].dt.floor("h"))
    return np.log(hours.pivot_table(index="hour", columns="symbol", values="close", aggfunc="last"))


def test_every_clean_candle_is_valid_and_volumes_are_consistent(frames):
    k = frames["klines"]
    assert (k["high"] >= k[["open", "close"]].max(axis=1)).all()
    assert (k["low"] <= k[["open", "close"]].min(axis=1)).all()
    assert (k["low"] > 0).all() and (k["volume"] > 0).all() and (k["num_trades"] >= 1).all()
    assert (k["taker_buy_base_volume"] <= k["volume"]).all()
    assert (k["taker_buy_quote_volume"] <= k["quote_volume"]).all()
    # quote volume is volume times a price inside the candle
    assert (k["quote_volume"] >= k["volume"] * k["low"] * (1 - 1e-9)).all()
    assert (k["quote_volume"] <= k["volume"] * k["high"] * (1 + 1e-9)).all()
    btc = k[k["symbol"] == "BTCUSDT"].sort_values("open_time")
    assert np.allclose(btc["open"].to_numpy()[1:], btc["close"].to_numpy()[:-1])


def test_start_prices_are_realistic(frames):
    k = frames["klines"].sort_values("open_time").groupby("symbol")["open"].first()
    assert k["BTCUSDT"] == pytest.approx(65_000) and k["ETHUSDT"] == pytest.approx(3_200)
    assert k["BNBUSDT"] == pytest.approx(580)


def test_btc_and_eth_hourly_returns_correlate_near_0_8(frames):
    returns = hourly_log_closes(frames["klines"]).diff().dropna()
    assert 0.70 <= returns["BTCUSDT"].corr(returns["ETHUSDT"]) <= 0.90  # stated tolerance 0.8 ± 0.1


def test_eth_bnb_is_cointegrated_and_btc_eth_is_not(frames):
    logs = hourly_log_closes(frames["klines"])

    def adf_of_spread(y: str, x: str) -> tuple[float, float]:
        fit = sm.OLS(logs[y], sm.add_constant(logs[x])).fit()
        stat, pvalue = adfuller(fit.resid, result_object=False)[:2]
        return stat, pvalue

    stat, _ = adf_of_spread("BNBUSDT", "ETHUSDT")
    assert stat < -3.90  # Engle-Granger 1% critical value for two series
    _, pvalue = adf_of_spread("BTCUSDT", "ETHUSDT")
    assert pvalue > 0.05


def test_minute_returns_are_fat_tailed_with_volatility_clustering(frames):
    btc = frames["klines"].query("symbol == 'BTCUSDT'").sort_values("open_time")
    r = np.log(btc["close"]).diff().dropna()
    assert r.kurt() > 5  # a normal distribution has excess kurtosis 0
    squared = (r**2).to_numpy()
    hourly = squared[: len(squared) // 60 * 60].reshape(-1, 60).sum(axis=1)
    assert pd.Series(hourly).autocorr(1) > 0.2  # regimes make volatility persist


def test_volume_follows_an_intraday_profile_and_taker_share_follows_price(frames):
    k = frames["klines"]
    by_hour = k.groupby(k["open_time"].dt.hour)["quote_volume"].mean()
    assert by_hour.loc[13:16].mean() > 1.4 * by_hour.loc[3:6].mean()
    up = k["close"] > k["open"]
    share = k["taker_buy_base_volume"] / k["volume"]
    assert share[up].mean() > 0.55 > 0.45 > share[~up].mean()
    assert k["num_trades"].corr(k["quote_volume"]) > 0.8


# Realism: users, transactions, network ---------------------------------------------------------


def usd_amounts(frames) -> pd.Series:
    """Transactions priced at the close of their 1m candle (USDT at 1)."""
    k = frames["klines"]
    tx = frames["transactions"]
    closes = k.assign(token_symbol=k["symbol"].str.removesuffix("USDT"))[
        ["token_symbol", "open_time", "close"]
    ]
    merged = tx.assign(open_time=tx["occurred_at"].dt.floor("min")).merge(
        closes, on=["token_symbol", "open_time"], how="left"
    )
    merged.loc[merged["token_symbol"] == "USDT", "close"] = 1.0
    return (merged["amount"] * merged["close"]).set_axis(tx.index)


def test_transaction_amounts_are_priced_from_the_klines(frames):
    usd = usd_amounts(frames)
    assert usd.notna().all()
    # amounts are rounded to 8 decimals: a dollar of BTC is off by at most 0.04%
    assert usd.min() >= 0.999 and usd.max() <= MAX_TX_USD * 1.001
    tx = frames["transactions"]
    medians = usd.groupby(tx["token_symbol"]).median()
    assert set(medians.index) == {"BTC", "ETH", "BNB", "USDT"}
    assert medians.max() / medians.min() < 3  # same dollar sizes whatever the token's price


def test_balances_and_trade_sizes_are_heavy_tailed(frames):
    balance = frames["users"]["account_balance_usd"].sort_values(ascending=False)
    top = balance.iloc[: len(balance) // 100].sum() / balance.sum()
    assert top > 0.25  # the richest 1% hold more than a quarter
    usd = usd_amounts(frames)
    assert usd.quantile(0.99) / usd.median() > 20


def test_newer_cohorts_transact_more_per_user(frames):
    users, tx = frames["users"], frames["transactions"]
    start = pd.Timestamp("2026-08-03", tz="UTC")
    age = (start - users["registered_at"]).dt.days
    counts = tx["from_user_id"].dropna().astype("int64").value_counts()
    per_user = users["user_id"].map(counts).fillna(0)
    recent = per_user[(age >= 0) & (age < 60)].mean()
    old = per_user[age > 240].mean()
    assert recent > 2 * old


def test_transactions_and_network_load_have_daily_and_weekly_seasonality(frames):
    tx = frames["transactions"]
    by_hour = tx.groupby(tx["occurred_at"].dt.hour).size()
    assert by_hour.max() > 1.5 * by_hour.min()
    by_day = tx.groupby(tx["occurred_at"].dt.normalize()).size()
    weekend = by_day[by_day.index.day_of_week >= 5].mean()
    assert weekend < 0.9 * by_day[by_day.index.day_of_week < 5].mean()
    net = frames["network"]
    tps_by_hour = net.groupby(net["observed_at"].dt.hour)["tps"].mean()
    assert tps_by_hour.max() > 1.4 * tps_by_hour.min()


def test_gas_rises_with_tps_and_fees_follow_amount_and_gas(frames):
    net = frames["network"]
    assert net["gas_price_gwei"].corr(net["tps"], method="spearman") > 0.6
    tx = frames["transactions"].assign(usd=usd_amounts(frames))
    trades = tx[tx["tx_type"] == "trade"]
    fee_usd = trades["fee"] * trades["usd"] / trades["amount"]
    assert np.log(fee_usd).corr(np.log(trades["usd"])) > 0.9
    onchain = tx[tx["tx_type"] == "withdrawal"].assign(minute=lambda f: f["occurred_at"].dt.floor("min"))
    gas = onchain["minute"].map(net.set_index("observed_at")["gas_price_gwei"])
    onchain_fee_usd = onchain["fee"] * onchain["usd"] / onchain["amount"]
    same_gas_units = onchain["token_symbol"] == "USDT"
    assert onchain_fee_usd[same_gas_units].corr(gas[same_gas_units], method="spearman") > 0.6
    assert (tx.loc[tx["tx_type"] == "deposit", "fee"] == 0).all()


def test_leverage_only_on_futures_and_on_common_values(frames):
    tx = frames["transactions"]
    futures = tx["tx_type"] == "futures"
    assert tx.loc[~futures, "leverage"].isna().all()
    leverage = tx.loc[futures, "leverage"]
    assert leverage.notna().all() and set(leverage.astype(int)) <= set(LEVERAGES)
    assert leverage.value_counts(normalize=True).iloc[:4].sum() > 0.6
    assert leverage.mode().iloc[0] == 10


def test_country_and_device_mix_is_plausible(frames):
    users = frames["users"]
    countries = users["country"].value_counts(normalize=True)
    assert countries.index[0] == "US" and 0.10 < countries.iloc[0] < 0.20
    assert len(countries) >= 20
    devices = users["device_type"].value_counts(normalize=True)
    assert devices.index[0] == "android" and set(devices.index) == {"android", "ios", "web", "desktop"}
    ios = users["device_type"].eq("ios")
    rich, poorer = users["country"].isin(["US", "JP", "GB"]), users["country"].isin(["IN", "NG", "VN"])
    assert ios[rich].mean() > 2 * ios[poorer].mean()


def test_user_attributes_are_consistent(frames):
    users = frames["users"]
    assert users["user_id"].is_unique and users["wallet_address"].str.fullmatch("0x[0-9a-f]{40}").all()
    assert (users["last_login_at"] >= users["registered_at"]).all()
    assert users["registered_at"].is_monotonic_increasing  # ids grow with registration time
    recent = users["last_login_at"] >= pd.Timestamp("2026-08-24", tz="UTC") - pd.Timedelta(days=30)
    assert (users["is_active"] == recent).all()
    assert users["vip_tier"].between(0, 9).all() and users["kyc_level"].between(0, 3).all()
    assert users.groupby("vip_tier")["account_balance_usd"].min().is_monotonic_increasing


def test_transaction_parties_match_the_type(frames):
    tx, users = frames["transactions"], frames["users"].set_index("user_id")
    deposits = tx[tx["tx_type"] == "deposit"]
    assert deposits["from_user_id"].isna().all()
    assert (deposits["to_address"].to_numpy() == users.loc[deposits["to_user_id"], "wallet_address"]).all()
    trades = tx[tx["tx_type"] == "trade"]
    assert (trades["from_user_id"] != trades["to_user_id"]).all()
    senders = users.loc[trades["from_user_id"].astype("int64"), "wallet_address"].to_numpy()
    assert (trades["from_address"].to_numpy() == senders).all()
    assert tx.loc[tx["tx_type"] == "withdrawal", "to_user_id"].isna().all()
    assert tx["tx_id"].is_unique
    assert set(tx["status"]) == {"completed", "pending", "failed"}


# Defects --------------------------------------------------------------------------------------


def found_defects(lake: Path, dataset: str, late_batches: list[str], expected_keys: int) -> dict:
    """Count each defect kind in the landed files by the rule DEFECT_RULES states."""
    frame = read(lake, dataset)
    late = int(frame["batch_id"].isin(late_batches).sum())
    if dataset == "klines":
        top = frame[["open", "close"]].max(axis=1, skipna=False)
        bottom = frame[["open", "close"]].min(axis=1, skipna=False)
        keys = frame[["symbol", "interval", "open_time"]].drop_duplicates()
        return {
            "missing_values": int((frame["close"].isna() | frame["volume"].isna()).sum()),
            "outliers": int((frame["high"] >= 5 * top).sum()),
            "out_of_range": int((frame["volume"] < 0).sum()),
            "invalid_candles": int(((frame["high"] < top) | (frame["low"] > bottom)).sum()),
            "duplicate_keys": len(frame) - len(keys),
            "gaps": expected_keys - len(keys),
            "late_arriving": late,
        }
    key, value, required = {
        "users": ("user_id", "account_balance_usd", ["country", "device_type", "wallet_address"]),
        "transactions": ("tx_id", "amount", ["amount", "token_symbol", "status"]),
        "network": ("observed_at", "gas_price_gwei", ["gas_price_gwei", "tps"]),
    }[dataset]
    outlier = {"users": 1e9, "transactions": 1e12, "network": 1e5}[dataset]
    negative = {"users": "account_balance_usd", "transactions": "amount", "network": "tps"}[dataset]
    lineage = ["source", "batch_id", "ingested_at"]
    exact = len(frame.drop(columns=lineage).drop_duplicates())
    assert exact == frame[key].nunique()  # duplicates are exact copies
    return {
        "missing_values": int(frame[required].isna().any(axis=1).sum()),
        "outliers": int((frame[value] >= outlier).sum()),
        "out_of_range": int((frame[negative] < 0).sum()),
        "duplicate_rows": len(frame) - frame[key].nunique(),
        "late_arriving": late,
    }


def test_recorded_defect_counts_equal_what_the_landed_files_hold(defective):
    lake, result = defective
    recorded = result.notes["defects"]
    late = result.notes["late_batches"]
    expected_keys = {"klines": 3 * 3 * (1440 + 24), "network": 3 * 1440}
    for dataset in SCHEMAS:
        found = found_defects(lake, dataset, late.get(dataset, []), expected_keys.get(dataset, 0))
        assert found == recorded[dataset], dataset
        assert set(recorded[dataset]) == set(DEFECT_RULES[dataset])
    for kind in ("missing_values", "invalid_candles", "duplicate_keys", "gaps", "late_arriving"):
        assert recorded["klines"][kind] > 10, kind
    for dataset in ("transactions", "network"):
        assert min(recorded[dataset].values()) > 5, dataset
    assert min(recorded["users"].values()) > 0


def test_defect_report_file_matches_the_result_and_the_batches(defective):
    lake, result = defective
    report = json.loads((lake / DEFECTS_FILE).read_text())
    assert report["defects"] == result.notes["defects"]
    assert report["rules"] == DEFECT_RULES
    assert report["rows"] == result.rows
    for dataset, batches in report["batches"].items():
        totals = {}
        for counts in batches.values():
            for kind, n in counts.items():
                totals[kind] = totals.get(kind, 0) + n
        assert totals == {k: v for k, v in report["defects"][dataset].items() if v}
    batch_ids = {ref.batch_id for refs in result.refs.values() for ref in refs}
    assert set().union(*(set(b) for b in report["batches"].values())) <= batch_ids
    # a late batch holds only late rows, in the partition of their own date
    late_id = report["late_batches"]["transactions"][0]
    late_ref = next(r for r in result.refs["transactions"] if r.batch_id == late_id)
    rows = pq.read_table(late_ref.path(lake, "landing")).to_pandas()
    assert report["batches"]["transactions"][late_id] == {"late_arriving": len(rows)}
    assert (rows["occurred_at"].dt.strftime("%Y-%m-%d") == dict(late_ref.partitions)["date"]).all()


def test_duplicate_kline_keys_carry_different_but_valid_values(defective):
    lake, _ = defective
    k = read(lake, "klines")
    dupes = k[k.duplicated(["symbol", "interval", "open_time"], keep=False)]
    assert len(dupes) > 0
    for _, pair in list(dupes.groupby(["symbol", "interval", "open_time"]))[:20]:
        assert pair["volume"].nunique() == 2
        assert ((pair["low"] <= pair["close"]) & (pair["close"] <= pair["high"])).all()


def test_clean_yields_zero_defects(tmp_path):
    settings = make_settings(tmp_path, defect_rate=0.05, synthetic_clean=True)
    result = land_synthetic(settings)
    assert all(n == 0 for counts in result.notes["defects"].values() for n in counts.values())
    expected_keys = {"klines": 3 * 3 * 1440, "network": 3 * 1440}
    for dataset in SCHEMAS:
        found = found_defects(tmp_path, dataset, [], expected_keys.get(dataset, 0))
        assert set(found.values()) == {0}, dataset
    assert result.notes["late_batches"] == {}


# Input errors and the CLI ---------------------------------------------------------------------


def test_too_few_users_is_one_clear_error(tmp_path):
    with pytest.raises(LakehouseError, match="at least 2 users"):
        land_synthetic(make_settings(tmp_path), users=1)
    assert not (tmp_path / "landing").exists()


def test_a_range_in_the_future_is_refused(tmp_path):
    later = datetime.now(UTC).date() + timedelta(days=3)
    settings = make_settings(tmp_path, start=later, end=later + timedelta(days=1))
    with pytest.raises(LakehouseError, match="starts in the future"):
        land_synthetic(settings)


def test_generate_command_lands_the_requested_scale(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no project .env
    code = main(
        ["generate", "--seed", "3", "--users", "120", "--days", "2", "--symbols", "BTCUSDT,SOLUSDT",
         "--tx-per-day", "300", "--clean", "--start", "2026-09-01", "--lake-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "defects injected" in out and "klines" in out
    klines = read(tmp_path, "klines")
    assert len(klines) == 2 * 2 * 1440 and set(klines["symbol"]) == {"BTCUSDT", "SOLUSDT"}
    assert klines["open_time"].max() < pd.Timestamp("2026-09-03", tz="UTC")
    assert len(read(tmp_path, "users")) == 120
    report = json.loads((tmp_path / DEFECTS_FILE).read_text())
    assert report["seed"] == 3 and report["clean"] is True


def test_generate_command_rejects_bad_days_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--days", "0", "--lake-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --days 0 must be 1 or more"]


@pytest.mark.parametrize(("gain", "decay"), [(1.0, 0.98), (0.01, 0.99), (1.0, 0.5)])
def test_first_order_recursion_is_lfilter_bit_for_bit(gain, decay):
    from scipy.signal import lfilter

    from flows.sources.synthetic_market import first_order_recursion

    rng = np.random.default_rng(3)
    for _ in range(20):
        x, previous = rng.normal(0, 1_000, 1440), float(rng.normal())
        expected, _ = lfilter([gain], [1.0, -decay], x, zi=[decay * previous])
        assert np.array_equal(first_order_recursion(gain, decay, x, previous), expected)
    assert first_order_recursion(gain, decay, np.array([]), 1.0).shape == (0,)


def test_the_synthetic_source_imports_no_scipy():
    """scipy.signal's import takes 0.5 s and brings scipy.stats, which the gates defer."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, flows.sources.synthetic; print(sorted(m for m in sys.modules if m.startswith('scipy')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
