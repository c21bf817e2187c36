"""A small, deterministic marts snapshot for dashboard tests and the page-render benchmark."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from flows.lake import snapshot_path, swap_current

START = pd.Timestamp("2026-10-01", tz="UTC")  # marts carry UTC-aware timestamps
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
BASE_PRICE = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "BNBUSDT": 550.0}


def _klines_hourly(symbols: tuple[str, ...], days: int, rng: np.random.Generator) -> pd.DataFrame:
    hours = pd.date_range(START, periods=days * 24, freq="h")
    common = rng.normal(0, 0.004, len(hours))
    frames = []
    for i, symbol in enumerate(symbols):
        own = rng.normal(0, 0.003, len(hours))
        log_close = np.log(BASE_PRICE.get(symbol, 10.0 * (i + 1))) + np.cumsum(common + own)
        close = np.exp(log_close)
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, 0.002, len(hours)))
        high = np.maximum(open_, close) * (1 + spread)
        low = np.minimum(open_, close) * (1 - spread)
        volume = rng.lognormal(3, 0.4, len(hours))
        taker_buy = volume * rng.uniform(0.35, 0.65, len(hours))
        counts = np.full(len(hours), 60)
        counts[5::97] = 58  # a few incomplete hours, as a real feed has
        frames.append(
            pd.DataFrame(
                {
                    "market": "spot",
                    "symbol": symbol,
                    "open_time": hours,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                    "quote_volume": volume * (open_ + close) / 2,
                    "num_trades": (volume * 40).astype("int64"),
                    "taker_buy_base_volume": taker_buy,
                    "taker_buy_quote_volume": taker_buy * close,
                    "candle_count": counts,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["vwap"] = frame["quote_volume"] / frame["volume"]
    by = frame.groupby("symbol")["close"]
    frame["simple_return"] = by.pct_change()
    frame["log_return"] = np.log(frame["close"] / by.shift())
    frame["is_complete"] = frame["candle_count"] == 60
    return frame


def _klines_daily(hourly: pd.DataFrame) -> pd.DataFrame:
    day = hourly.assign(open_time=hourly["open_time"].dt.floor("D"))
    daily = day.groupby(["market", "symbol", "open_time"], as_index=False).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        quote_volume=("quote_volume", "sum"),
        num_trades=("num_trades", "sum"),
        taker_buy_base_volume=("taker_buy_base_volume", "sum"),
        taker_buy_quote_volume=("taker_buy_quote_volume", "sum"),
        candle_count=("candle_count", "sum"),
    )
    daily["vwap"] = daily["quote_volume"] / daily["volume"]
    by = daily.groupby("symbol")["close"]
    daily["simple_return"] = by.pct_change()
    daily["log_return"] = np.log(daily["close"] / by.shift())
    daily["is_complete"] = daily["candle_count"] == 1440
    return daily


def _pairs(hourly: pd.DataFrame, symbols: tuple[str, ...], window: int = 48) -> pd.DataFrame:
    closes = hourly.pivot(index="open_time", columns="symbol", values="close")
    rows = []
    for a, b in itertools.combinations(symbols, 2):
        la, lb = np.log(closes[a]), np.log(closes[b])
        beta = la.rolling(window, min_periods=2).cov(lb) / lb.rolling(window, min_periods=2).var()
        spread = la - beta * lb
        z = (spread - spread.rolling(window, min_periods=2).mean()) / spread.rolling(
            window, min_periods=2
        ).std()
        corr = la.diff().rolling(window, min_periods=3).corr(lb.diff())
        rows.append(
            pd.DataFrame(
                {
                    "market": "spot",
                    "symbol_a": a,
                    "symbol_b": b,
                    "open_time": closes.index,
                    "hedge_ratio": beta.to_numpy(),
                    "spread": spread.to_numpy(),
                    "spread_zscore": z.to_numpy(),
                    "rolling_correlation": corr.to_numpy(),
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    # The newest z-score of the first pair is pinned far out so alert tests have a known trigger.
    last = frame.index[(frame["symbol_a"] == symbols[0]) & (frame["symbol_b"] == symbols[1])][-1]
    frame.loc[last, "spread_zscore"] = 3.1
    return frame


def build_marts(
    symbols: tuple[str, ...] = SYMBOLS,
    days: int = 30,
    users: int = 500,
    transactions: int = 3000,
    seed: int = 7,
) -> dict[str, pd.DataFrame]:
    """Every mart the dashboard reads, with the columns it reads, from seeded random data."""
    rng = np.random.default_rng(seed)
    hourly = _klines_hourly(symbols, days, rng)
    daily = _klines_daily(hourly)
    dates = daily["open_time"].drop_duplicates().sort_values().reset_index(drop=True)
    hours = hourly["open_time"].drop_duplicates().sort_values().reset_index(drop=True)
    marts: dict[str, pd.DataFrame] = {
        "dim_symbols": pd.DataFrame(
            {
                "market": "spot",
                "symbol": list(symbols),
                "base_asset": [s.removesuffix("USDT") for s in symbols],
                "quote_asset": "USDT",
            }
        ),
        "fct_klines_hourly": hourly,
        "fct_klines_daily": daily,
    }
    marts["fct_volatility_daily"] = (
        daily[["market", "symbol", "open_time"]]
        .rename(columns={"open_time": "trading_date"})
        .assign(
            realized_volatility_annualized=rng.uniform(0.3, 0.9, len(daily)),
            parkinson_volatility_annualized=rng.uniform(0.3, 0.9, len(daily)),
            garman_klass_volatility_annualized=rng.uniform(0.3, 0.9, len(daily)),
        )
    )
    closes = daily.groupby("symbol")["close"]
    marts["fct_technicals_daily"] = (
        daily[["market", "symbol", "open_time", "close"]]
        .rename(columns={"open_time": "trading_date"})
        .assign(
            sma_20=closes.transform(lambda c: c.rolling(20).mean()),
            sma_50=closes.transform(lambda c: c.rolling(50).mean()),
            bollinger_upper=lambda f: f["sma_20"] + 2 * closes.transform(lambda c: c.rolling(20).std()),
            bollinger_lower=lambda f: f["sma_20"] - 2 * closes.transform(lambda c: c.rolling(20).std()),
            rsi_14=rng.uniform(20, 80, len(daily)),
            support_20d=daily.groupby("symbol")["low"].transform(lambda c: c.rolling(20).min()),
            resistance_20d=daily.groupby("symbol")["high"].transform(lambda c: c.rolling(20).max()),
        )
    )
    flow = hourly[["market", "symbol", "open_time", "volume", "taker_buy_base_volume"]].copy()
    flow["taker_buy_volume"] = flow.pop("taker_buy_base_volume")
    flow["taker_sell_volume"] = flow["volume"] - flow["taker_buy_volume"]
    flow["volume_delta"] = flow["taker_buy_volume"] - flow["taker_sell_volume"]
    flow["cvd_running"] = flow.groupby("symbol")["volume_delta"].cumsum()
    flow["taker_buy_ratio"] = flow["taker_buy_volume"] / flow["volume"]
    flow["trades_per_second"] = hourly["num_trades"] / 3600
    marts["fct_order_flow_hourly"] = flow.drop(columns="volume")
    minutes = pd.date_range(hours.iloc[-1], periods=60, freq="min")
    marts["fct_trade_latency_minutely"] = pd.DataFrame(
        {
            "market": "spot",
            "symbol": symbols[0],
            "opened_at": minutes,
            "agg_trade_count": rng.integers(300, 3000, len(minutes)),
            "p50_event_to_persist_ms": rng.uniform(80, 200, len(minutes)),
            "p95_event_to_persist_ms": rng.uniform(200, 600, len(minutes)),
            "p99_event_to_persist_ms": rng.uniform(600, 1200, len(minutes)),
        }
    )
    pairs = _pairs(hourly, symbols)
    marts["fct_pairs_hourly"] = pairs
    marts["fct_pairs_cointegration"] = (
        pairs.groupby(["market", "symbol_a", "symbol_b"], as_index=False)["open_time"]
        .max()
        .rename(columns={"open_time": "window_end"})
        .assign(
            adf_statistic=lambda f: -np.linspace(2.0, 4.2, len(f)),
            p_value=lambda f: np.linspace(0.3, 0.004, len(f)),
            critical_value_1pct=-3.43,
            critical_value_5pct=-2.86,
            critical_value_10pct=-2.57,
        )
    )
    countries = np.array(["US", "DE", "BR", "IN", "NG", "VN", "TR", "GB"])
    devices = np.array(["ios", "android", "web", "desktop"])
    registered = START - pd.to_timedelta(rng.integers(0, days * 3, users), unit="D")
    marts["dim_users"] = pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1),
            "registered_at": registered,
            "country": rng.choice(countries, users, p=[0.25, 0.1, 0.15, 0.2, 0.08, 0.1, 0.07, 0.05]),
            "device_type": rng.choice(devices, users, p=[0.3, 0.4, 0.2, 0.1]),
            "segment": rng.choice(["champions", "loyal", "at risk", "new", "dormant"], users),
            "account_balance_usd": rng.lognormal(7, 1.6, users),
        }
    )
    marts["fct_user_registrations_daily"] = (
        marts["dim_users"]
        .assign(registration_date=lambda f: f["registered_at"].dt.floor("D"))
        .groupby("registration_date", as_index=False)
        .size()
        .rename(columns={"size": "registrations"})
    )
    marts["fct_user_activity_daily"] = pd.DataFrame(
        {
            "activity_date": dates,
            "active_users": rng.integers(users // 4, users // 2, len(dates)),
            "transactions": rng.integers(transactions // days, 2 * transactions // days, len(dates)),
        }
    )
    buckets = ["< $100", "$100-1k", "$1k-10k", "$10k-100k", ">= $100k"]
    marts["fct_user_balance_buckets"] = pd.DataFrame(
        {"balance_bucket": buckets, "bucket_order": range(5), "users": [60, 180, 170, 80, 10]}
    )
    marts["fct_users_by_country"] = (
        marts["dim_users"].groupby("country", as_index=False).size().rename(columns={"size": "users"})
    )
    marts["fct_users_by_device"] = (
        marts["dim_users"].groupby("device_type", as_index=False).size().rename(columns={"size": "users"})
    )
    types = np.array(["trade", "deposit", "withdrawal", "transfer", "futures"])
    tokens = np.array(["BTC", "ETH", "BNB", "USDT"])
    tx_type = rng.choice(types, transactions, p=[0.5, 0.15, 0.1, 0.1, 0.15])
    amount = rng.lognormal(6, 1.5, transactions)
    tx = pd.DataFrame(
        {
            "tx_id": [f"tx{i:07d}" for i in range(transactions)],
            "occurred_at": START + pd.to_timedelta(rng.uniform(0, days * 86400, transactions), "s"),
            "initiator_user_id": rng.integers(1, users + 1, transactions),
            "tx_type": tx_type,
            "token_symbol": rng.choice(tokens, transactions),
            "amount_usd": amount,
            "fee_usd": amount * 0.001 + rng.uniform(0.1, 2.0, transactions),
            "leverage": np.where(
                tx_type == "futures", rng.choice([2, 5, 10, 20, 50, 100], transactions), np.nan
            ),
        }
    ).sort_values("occurred_at", ignore_index=True)
    marts["fct_transactions"] = tx
    marts["fct_transaction_activity_daily"] = (
        tx.assign(activity_date=tx["occurred_at"].dt.floor("D"))
        .groupby(["activity_date", "token_symbol", "tx_type"], as_index=False)
        .agg(
            transactions=("tx_id", "count"),
            completed_volume_usd=("amount_usd", "sum"),
            fees_usd=("fee_usd", "sum"),
        )
    )
    traders = (
        tx.groupby("initiator_user_id", as_index=False)
        .agg(volume_usd=("amount_usd", "sum"), trades=("tx_id", "count"))
        .rename(columns={"initiator_user_id": "user_id"})
        .sort_values("volume_usd", ascending=False, ignore_index=True)
        .head(20)
    )
    traders.insert(0, "volume_rank", np.arange(1, len(traders) + 1))
    marts["fct_top_traders"] = traders
    marts["fct_leverage_distribution"] = (
        tx.dropna(subset=["leverage"])
        .groupby("leverage", as_index=False)
        .size()
        .rename(columns={"size": "transactions"})
    )
    marts["fct_fee_feature_importance"] = pd.DataFrame(
        {
            "feature": ["amount_usd", "gas_price_gwei", "tx_type", "hour", "token"],
            "importance": [0.55, 0.25, 0.1, 0.06, 0.04],
        }
    )
    diurnal = np.sin(np.arange(len(hours)) / 24 * 2 * np.pi)
    gas = 30 + 8 * diurnal + np.linspace(0, 5, len(hours)) + rng.normal(0, 1.5, len(hours))
    marts["fct_network_hourly"] = pd.DataFrame(
        {
            "observed_hour": hours,
            "avg_gas_price_gwei": gas,
            "p95_gas_price_gwei": gas * 1.4,
            "avg_tps": 15 + 4 * diurnal + rng.normal(0, 1, len(hours)),
            "avg_block_time_s": rng.normal(12, 0.3, len(hours)),
            "avg_difficulty": np.linspace(5.0e14, 5.2e14, len(hours)),
            "avg_hashrate": np.linspace(9.0e14, 9.4e14, len(hours)),
        }
    )
    trend = pd.Series(gas).rolling(24, center=True, min_periods=1).mean().to_numpy()
    marts["fct_gas_price_decomposition"] = pd.DataFrame(
        {
            "observed_hour": hours,
            "gas_price_gwei": gas,
            "trend": trend,
            "seasonal": 8 * diurnal,
            "residual": gas - trend - 8 * diurnal,
        }
    )
    completeness = daily[["market", "symbol", "open_time", "candle_count"]].rename(
        columns={"open_time": "candle_date", "candle_count": "present_candles"}
    )
    completeness.insert(2, "kline_interval", "1m")
    completeness["expected_candles"] = 1440
    completeness["completeness_ratio"] = completeness["present_candles"] / 1440
    marts["fct_candle_completeness"] = completeness
    run_at = hours.iloc[-1] + pd.Timedelta(minutes=5)
    marts["fct_data_quality_runs"] = pd.DataFrame(
        {
            "run_id": ["r1", "r1", "r2", "r2"],
            "validated_at": [run_at, run_at] + [run_at + pd.Timedelta(minutes=1)] * 2,
            "gate": ["raw", "raw", "marts", "marts"],
            "dataset": ["klines", "transactions", "fct_klines_hourly", "fct_pairs_hourly"],
            "expectations_evaluated": [12, 9, 6, 5],
            "expectations_failed": [1, 0, 0, 0],
            "rows_accepted": [len(hourly) * 60 - 120, transactions, len(hourly), len(pairs)],
            "rows_quarantined": [120, 0, 0, 0],
            "failed_expectations": ["expect_column_values_to_be_between(high)", "", "", ""],
            "is_success": [False, True, True, True],
        }
    )
    return marts


def write_snapshot(
    lake_dir: Path,
    snapshot_id: str = "20261031T000000000000Z",
    marts: dict[str, pd.DataFrame] | None = None,
    publish: bool = True,
    **kwargs: object,
) -> Path:
    """Write the marts as lake/marts/<snapshot_id>/<mart>.parquet and point CURRENT at it."""
    folder = snapshot_path(Path(lake_dir), snapshot_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (marts if marts is not None else build_marts(**kwargs)).items():
        # Microseconds, as DuckDB's own export writes them (it cannot compare TIMESTAMPTZ_NS).
        timestamps = frame.select_dtypes(include=["datetime", "datetimetz"]).columns
        frame = frame.astype({c: str(frame[c].dtype).replace("[ns", "[us") for c in timestamps})
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    if publish:
        swap_current(Path(lake_dir), snapshot_id)
    return folder
