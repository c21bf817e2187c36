"""The only module that runs SQL for the dashboard: cached reads of the current published snapshot."""

from __future__ import annotations

import io
import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from flows.errors import LakehouseError
from flows.lake import current_snapshot, snapshot_path
from flows.query import json_records, snapshot_connection
from flows.settings import PROJECT_ROOT, Settings, load_settings

TTL_SECONDS = 60
RUN_HINT = "run `make run` (or `lakehouse run`) to build and publish the marts"

# Where each logical table of the dashboard lives and what its columns may be called: the first
# candidate present in the snapshot wins, so a renamed mart column needs one edit here only.
MARTS: dict[str, tuple[str, ...]] = {
    "symbols": ("dim_symbols",),
    "klines_1h": ("fct_klines_hourly",),
    "klines_1d": ("fct_klines_daily",),
    "volatility": ("fct_volatility_daily",),
    "technicals": ("fct_technicals_daily",),
    "order_flow": ("fct_order_flow_hourly",),
    "trades": ("fct_trade_latency_minutely", "fct_trades_minutely"),
    "correlations": ("fct_return_correlations",),
    "pairs": ("fct_pairs_hourly",),
    "cointegration": ("fct_pairs_cointegration",),
    "users": ("dim_users",),
    "registrations": ("fct_user_registrations_daily",),
    "activity": ("fct_user_activity_daily",),
    "balance_buckets": (
        "fct_user_balance_buckets",
        "fct_user_balance_distribution",
        "fct_balance_buckets",
        "fct_users_by_balance_bucket",
    ),
    "users_by_country": ("fct_users_by_country", "fct_user_countries"),
    "users_by_device": ("fct_users_by_device", "fct_user_devices"),
    "transactions": ("fct_transactions",),
    "tx_daily": (
        "fct_transactions_daily",
        "fct_transaction_activity_daily",
        "fct_daily_activity_by_token_type",
        "fct_transactions_daily_by_token",
    ),
    "top_traders": ("fct_top_traders",),
    "leverage": ("fct_leverage_distribution",),
    "fee_importance": ("fct_fee_feature_importance", "fct_fee_drivers"),
    "network": ("fct_network_hourly",),
    "gas_stl": (
        "fct_gas_price_decomposition",
        "fct_gas_price_stl",
        "fct_network_gas_decomposition",
        "fct_gas_stl",
    ),
    "completeness": ("fct_candle_completeness",),
    "quality_runs": ("fct_data_quality_runs",),
}

_KLINE_COLUMNS = {
    "market": ("market",),
    "symbol": ("symbol",),
    "time": ("open_time", "opened_at"),
    "open": ("open", "open_price"),
    "high": ("high", "high_price"),
    "low": ("low", "low_price"),
    "close": ("close", "close_price"),
    "volume": ("volume",),
    "quote_volume": ("quote_volume",),
    "num_trades": ("num_trades",),
    "vwap": ("vwap",),
    "simple_return": ("simple_return",),
    "log_return": ("log_return",),
    "candle_count": ("candle_count",),
    "is_complete": ("is_complete",),
}


def _metric(name: str) -> tuple[str, ...]:
    """Hourly mean of a network metric, as the mart may name it."""
    return (f"avg_{name}", f"{name}_mean", f"{name}_avg", name)


COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "symbols": {"market": ("market",), "symbol": ("symbol",)},
    "klines_1h": _KLINE_COLUMNS,
    "klines_1d": _KLINE_COLUMNS,
    "volatility": {
        "market": ("market",),
        "symbol": ("symbol",),
        "time": ("trading_date", "date", "open_time", "day"),
        "realized": ("realized_volatility_annualized", "realized_volatility"),
        "parkinson": ("parkinson_volatility_annualized", "parkinson_volatility"),
        "garman_klass": ("garman_klass_volatility_annualized", "garman_klass_volatility"),
    },
    "technicals": {
        "market": ("market",),
        "symbol": ("symbol",),
        "time": ("trading_date", "date", "open_time", "day"),
        "close": ("close", "close_price"),
        "sma_20": ("sma_20",),
        "sma_50": ("sma_50",),
        "rsi": ("rsi_14", "rsi"),
        "bollinger_upper": ("bollinger_upper", "bb_upper"),
        "bollinger_lower": ("bollinger_lower", "bb_lower"),
        "support": ("support_20d", "support_level"),
        "resistance": ("resistance_20d", "resistance_level"),
    },
    "order_flow": {
        "market": ("market",),
        "symbol": ("symbol",),
        "time": ("open_time", "hour"),
        "taker_buy_volume": ("taker_buy_volume", "taker_buy_base_volume", "buy_volume"),
        "taker_sell_volume": ("taker_sell_volume", "taker_sell_base_volume", "sell_volume"),
        "volume_delta": ("volume_delta", "delta"),
        "cvd": ("cumulative_volume_delta", "cvd", "cvd_running", "running_cvd"),
        "cvd_daily": ("cumulative_volume_delta_daily", "cvd_daily", "daily_cvd"),
        "taker_buy_ratio": ("taker_buy_ratio",),
        "trades_per_second": ("trades_per_second", "tps"),
    },
    "trades": {
        "market": ("market",),
        "symbol": ("symbol",),
        "time": ("opened_at", "minute", "open_time"),
        "trades_per_second": ("trades_per_second",),
        "latency_p50": ("p50_event_to_persist_ms", "latency_p50_ms"),
        "latency_p95": ("p95_event_to_persist_ms", "latency_p95_ms"),
        "latency_p99": ("p99_event_to_persist_ms", "latency_p99_ms"),
    },
    "pairs": {
        "market": ("market",),
        "symbol_a": ("symbol_a",),
        "symbol_b": ("symbol_b",),
        "time": ("open_time", "hour"),
        "hedge_ratio": ("hedge_ratio", "beta"),
        "spread": ("spread",),
        "zscore": ("spread_zscore", "zscore", "z_score"),
        "correlation": ("rolling_correlation", "correlation", "rolling_corr"),
    },
    "cointegration": {
        "market": ("market",),
        "symbol_a": ("symbol_a",),
        "symbol_b": ("symbol_b",),
        "time": ("window_end", "window_end_at"),
        "adf_statistic": ("adf_statistic", "adf_stat"),
        "p_value": ("p_value", "adf_p_value", "pvalue"),
        "critical_1pct": ("critical_value_1pct", "critical_value_1", "crit_1pct"),
        "critical_5pct": ("critical_value_5pct", "critical_value_5", "crit_5pct"),
        "critical_10pct": ("critical_value_10pct", "critical_value_10", "crit_10pct"),
    },
    "users": {
        "user_id": ("user_id",),
        "time": ("registered_at", "registration_date"),
        "segment": ("segment", "rfm_segment", "user_segment"),
        "country": ("country",),
        "device": ("device_type", "device"),
        "balance": ("account_balance_usd", "balance_usd"),
    },
    "registrations": {
        "time": ("registration_date", "date", "registered_date", "day"),
        "registrations": ("registrations", "new_users", "users_registered", "registered_users"),
    },
    "activity": {
        "time": ("activity_date", "date", "day"),
        "active_users": ("active_users", "daily_active_users", "users_active"),
        "transactions": ("transactions", "tx_count", "transaction_count"),
    },
    "balance_buckets": {
        "bucket": ("balance_bucket", "bucket"),
        "users": ("users", "user_count", "num_users"),
        "order": ("bucket_order", "bucket_index", "bucket_floor_usd", "lower_bound_usd"),
    },
    "users_by_country": {"country": ("country",), "users": ("users", "user_count", "num_users")},
    "users_by_device": {
        "device": ("device_type", "device"),
        "users": ("users", "user_count", "num_users"),
    },
    "transactions": {
        "tx_id": ("tx_id",),
        "time": ("occurred_at",),
        "tx_type": ("tx_type",),
        "token": ("token", "token_symbol"),
        "user_id": ("initiator_user_id", "from_user_id", "user_id"),
        "amount_usd": ("amount_usd",),
        "fee_usd": ("fee_usd",),
        "leverage": ("leverage",),
        "amount_outlier": ("is_amount_outlier",),
    },
    "tx_daily": {
        "time": ("activity_date", "date", "day", "occurred_date"),
        "token": ("token", "token_symbol"),
        "tx_type": ("tx_type",),
        "tx_count": ("tx_count", "transactions", "transaction_count"),
        "volume_usd": ("completed_volume_usd", "volume_usd", "amount_usd"),
        "fee_usd": ("fees_usd", "fee_usd", "total_fee_usd"),
        "completed_count": ("completed_transactions",),
        "outlier_count": ("outlier_transactions",),
    },
    "top_traders": {
        "user_id": ("user_id", "from_user_id", "trader_id"),
        "volume_usd": ("volume_usd", "total_volume_usd", "amount_usd"),
        "tx_count": ("tx_count", "trades", "transactions"),
        "rank": ("rank", "trader_rank", "volume_rank"),
    },
    "leverage": {
        "leverage": ("leverage",),
        "tx_count": ("tx_count", "transactions", "trades", "count"),
    },
    "fee_importance": {
        "feature": ("feature", "feature_name"),
        "importance": ("importance", "feature_importance"),
    },
    "network": {
        "time": ("observed_hour", "hour", "open_time"),
        "gas": _metric("gas_price_gwei"),
        "gas_p95": ("p95_gas_price_gwei", "gas_price_gwei_p95"),
        "tps": _metric("tps"),
        "block_time": _metric("block_time_s"),
        "difficulty": _metric("difficulty"),
        "hashrate": _metric("hashrate"),
    },
    "gas_stl": {
        "time": ("observed_hour", "hour", "open_time"),
        "observed": ("gas_price_gwei", "observed", "avg_gas_price_gwei"),
        "trend": ("trend",),
        "seasonal": ("seasonal", "seasonality"),
        "residual": ("residual", "resid", "remainder"),
    },
    "completeness": {
        "market": ("market",),
        "symbol": ("symbol",),
        "interval": ("kline_interval", "interval"),
        "time": ("candle_date", "date", "day"),
        "expected": ("expected_candles", "expected_count", "expected"),
        "present": ("present_candles", "present_count", "actual_candles", "present"),
        "completeness": ("completeness_ratio", "completeness"),
    },
    "quality_runs": {
        "run_id": ("run_id",),
        "time": ("validated_at", "run_at", "ran_at"),
        "gate": ("gate",),
        "dataset": ("dataset",),
        "evaluated": ("expectations_evaluated",),
        "failed": ("expectations_failed",),
        "accepted": ("rows_accepted",),
        "quarantined": ("rows_quarantined",),
        "failed_expectations": ("failed_expectations",),
        "success": ("success", "is_success"),
    },
}


class DataUnavailable(Exception):
    """What a page needs is not in the snapshot; the message says what is missing and what to run."""


def lake_dir() -> Path:
    return Path(os.environ.get("LAKEHOUSE_LAKE_DIR", PROJECT_ROOT / "lake")).resolve()


def snapshot_id() -> str | None:
    """Resolved once per script run; cached reads are keyed on it, so a publish is seen next run."""
    return current_snapshot(lake_dir())


def docs_urls() -> tuple[str, str]:
    """Data Docs and dbt docs addresses (settings data_docs_url / dbt_docs_url, env or .env)."""
    try:
        settings = load_settings()
    except LakehouseError:
        # A bad unrelated setting must not take the page down: fall back to the defaults.
        fields = Settings.model_fields
        return fields["data_docs_url"].default, fields["dbt_docs_url"].default
    return settings.data_docs_url, settings.dbt_docs_url


@st.cache_resource(ttl=TTL_SECONDS * 10, max_entries=4, show_spinner=False)
def _connection(snapshot: str, lake: str) -> duckdb.DuckDBPyConnection:
    # One connection per snapshot; every read takes its own cursor, so reruns run concurrently.
    return snapshot_connection(Path(lake), snapshot)


def _read(snapshot: str, sql: str, params: tuple = ()) -> pd.DataFrame:
    return _cached_read(str(lake_dir()), snapshot, sql, params)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _cached_read(lake: str, snapshot: str, sql: str, params: tuple) -> pd.DataFrame:
    # Keyed on the lake and snapshot id: a publish changes the id, so no stale result is served.
    try:
        cursor = _connection(snapshot, lake).cursor()
        try:
            return cursor.execute(sql, list(params)).df()
        finally:
            cursor.close()
    except (duckdb.Error, LakehouseError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataUnavailable(
            f"snapshot {snapshot} could not be read ({first}); reload the page, or {RUN_HINT}"
        ) from exc


def schema(snapshot: str) -> dict[str, list[str]]:
    """Mart name -> column names, from the parquet footers of the snapshot."""
    return _cached_schema(str(lake_dir()), snapshot)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _cached_schema(lake: str, snapshot: str) -> dict[str, list[str]]:
    folder = snapshot_path(Path(lake), snapshot)
    return {p.stem: list(pq.read_schema(p).names) for p in sorted(folder.glob("*.parquet"))}


def _utc_columns(snapshot: str) -> dict[str, set[str]]:
    return _cached_utc_columns(str(lake_dir()), snapshot)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _cached_utc_columns(lake: str, snapshot: str) -> dict[str, set[str]]:
    """Mart name -> its time-zone-aware timestamp columns."""
    folder = snapshot_path(Path(lake), snapshot)
    found = {}
    for path in sorted(folder.glob("*.parquet")):
        fields = pq.read_schema(path)
        found[path.stem] = {f.name for f in fields if pa.types.is_timestamp(f.type) and f.type.tz is not None}
    return found


def marts(snapshot: str) -> list[str]:
    return sorted(schema(snapshot))


def mart_name(snapshot: str, table: str) -> str | None:
    available = schema(snapshot)
    return next((m for m in MARTS[table] if m in available), None)


def has(snapshot: str, table: str) -> bool:
    return mart_name(snapshot, table) is not None


def has_rows(snapshot: str, table: str) -> bool:
    """Whether the snapshot holds the mart and it has at least one row (whatever the filters)."""
    mart = mart_name(snapshot, table)
    return mart is not None and bool(_read(snapshot, f"select count(*) as n from {_q(mart)}")["n"].iloc[0])


def resolve(
    snapshot: str, table: str, wanted: list[str], optional: tuple[str, ...] = ()
) -> tuple[str, dict[str, str]]:
    """The mart holding `table` and the physical name of each wanted column (optional may be absent)."""
    mart = mart_name(snapshot, table)
    if mart is None:
        raise DataUnavailable(f"mart `{MARTS[table][0]}` is not in snapshot {snapshot}; {RUN_HINT}")
    present = set(schema(snapshot)[mart])
    found, missing = {}, []
    for alias in [*wanted, *optional]:
        candidates = COLUMNS[table].get(alias, ())
        physical = next((c for c in candidates if c in present), None)
        if physical is not None:
            found[alias] = physical
        elif alias not in optional:
            missing.append(candidates[0] if candidates else alias)
    if missing:
        raise DataUnavailable(
            f"mart `{mart}` in snapshot {snapshot} has no column {', '.join(missing)}; rebuild it: {RUN_HINT}"
        )
    return mart, found


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    low = datetime.combine(start, time.min) if start else None
    high = datetime.combine(end + timedelta(days=1), time.min) if end else None
    return low, high


def _where(
    snapshot: str,
    mart: str,
    cols: dict[str, str],
    market: str | None,
    symbols: tuple[str, ...] | None,
    start: date | None,
    end: date | None,
) -> tuple[str, list]:
    clauses, params = [], []
    if market and "market" in cols:
        clauses.append(f"{_q(cols['market'])} = ?")
        params.append(market)
    if symbols is not None and "symbol" in cols:
        clauses.append(f"list_contains(?, {_q(cols['symbol'])})")
        params.append(list(symbols))
    low, high = _bounds(start, end)
    if "time" in cols and cols["time"] in _utc_columns(snapshot).get(mart, ()):
        # A UTC-aware bound compares exactly with a TIMESTAMPTZ column whatever the session's
        # time zone; a naive one would be read as local time.
        low, high = (b.replace(tzinfo=UTC) if b else None for b in (low, high))
    if low is not None and "time" in cols:
        clauses.append(f"{_q(cols['time'])} >= ?")
        params.append(low)
    if high is not None and "time" in cols:
        clauses.append(f"{_q(cols['time'])} < ?")
        params.append(high)
    return (" where " + " and ".join(clauses)) if clauses else "", params


def table(
    snapshot: str,
    name: str,
    wanted: list[str],
    optional: tuple[str, ...] = (),
    *,
    market: str | None = None,
    symbols: tuple[str, ...] | None = None,
    start: date | None = None,
    end: date | None = None,
    order: tuple[str, ...] = ("time",),
    descending: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Columns of one logical table under their dashboard names, filtered by parameters only."""
    filters = ("market", "symbol", "time")
    mart, cols = resolve(snapshot, name, wanted, tuple(o for o in (*optional, *filters)))
    shown = [a for a in [*wanted, *optional] if a in cols]
    select = ", ".join(f"{_q(cols[a])} as {_q(a)}" for a in shown)
    where, params = _where(snapshot, mart, cols, market, symbols, start, end)
    ordering = [f"{_q(cols[a])}{' desc' if descending else ''}" for a in order if a in cols]
    sql = f"select {select} from {_q(mart)}{where}"
    if ordering:
        sql += " order by " + ", ".join(ordering)
    if limit is not None:
        sql += " limit ?"
        params.append(int(limit))
    return _read(snapshot, sql, tuple(params))


def kline_universe(snapshot: str) -> pd.DataFrame:
    """Market, symbol and first/last day of every symbol with daily klines (filter options)."""
    mart, cols = resolve(snapshot, "klines_1d", ["market", "symbol", "time"])
    m, s, t = (_q(cols[a]) for a in ("market", "symbol", "time"))
    return _read(
        snapshot,
        f"select {m} as market, {s} as symbol, min({t})::date as first_day, "
        f"max({t})::date as last_day from {_q(mart)} group by 1, 2 order by 1, 2",
    )


def _warm_up(
    snapshot: str, mart: str, cols: dict[str, str], interval: str, start: date | None, periods: int
) -> tuple[date | None, str, list]:
    """A start `periods` intervals before `start` to read from (so a window is full at the range's
    first row), and the filter (on the alias `time`) that keeps the range itself."""
    if start is None:
        return None, "", []
    days = periods if interval == "1d" else -(-periods // 24)
    _, since = _where(snapshot, mart, {"time": cols["time"]}, None, None, start, None)
    return start - timedelta(days=days), " where time >= ?", since


def klines_with_levels(
    snapshot: str,
    interval: str,
    market: str,
    symbol: str,
    start: date,
    end: date,
    window: int,
) -> pd.DataFrame:
    """Candles of one symbol with a moving average, rolling VWAP and support/resistance over window.

    Support and resistance are the lowest and highest close of the window: a wick spike (which
    gate 1 flags, and keeps) put resistance at 20x the price. Windows read the periods before
    the range, and a window with fewer than `window` periods (the start of the data) is null,
    not an average of fewer periods labelled as a full window.
    """
    mart, cols = resolve(
        snapshot,
        f"klines_{interval}",
        ["market", "symbol", "time", "open", "high", "low", "close", "volume", "quote_volume"],
        ("vwap", "simple_return"),
    )
    c = {a: _q(p) for a, p in cols.items()}
    window = int(window)
    read_from, keep, since = _warm_up(snapshot, mart, cols, interval, start, window)
    where, params = _where(snapshot, mart, cols, market, (symbol,), read_from, end)
    vwap = c["vwap"] if "vwap" in c else f"{c['quote_volume']} / nullif({c['volume']}, 0)"
    frame = f"over (order by time rows between {window - 1} preceding and current row)"
    full = f"count(*) {frame} = {window}"
    sql = (
        "with base as ("
        f"select {c['time']} as time, {c['open']} as open, {c['high']} as high, "
        f"{c['low']} as low, {c['close']} as close, {c['volume']} as volume, "
        f"{c['quote_volume']} as quote_volume, {vwap} as vwap from {_q(mart)}{where}), "
        "levels as ("
        f"select time, open, high, low, close, volume, vwap, "
        f"case when {full} then avg(close) {frame} end as moving_average, "
        f"case when {full} then sum(quote_volume) {frame} / nullif(sum(volume) {frame}, 0) end as rolling_vwap, "
        f"case when {full} then min(close) {frame} end as support, "
        f"case when {full} then max(close) {frame} end as resistance from base) "
        f"select * from levels{keep} order by time"
    )
    return _read(snapshot, sql, (*params, *since))


def returns(
    snapshot: str,
    interval: str,
    market: str,
    symbols: tuple[str, ...],
    start: date,
    end: date,
    window: int,
) -> pd.DataFrame:
    """Per symbol and period: simple return, cumulative return and annualised rolling volatility.

    The cumulative return starts at the range's first close; the first return and the rolling
    volatility read the periods before the range, and a volatility of fewer than `window`
    returns is null.
    """
    mart, cols = resolve(snapshot, f"klines_{interval}", ["market", "symbol", "time", "close"])
    c = {a: _q(p) for a, p in cols.items()}
    window = int(window)
    read_from, keep, since = _warm_up(snapshot, mart, cols, interval, start, window + 1)
    where, params = _where(snapshot, mart, cols, market, symbols, read_from, end)
    periods_per_year = 24 * 365 if interval == "1h" else 365
    frame = f"over (partition by symbol order by time rows between {window - 1} preceding and current row)"
    sql = (
        "with base as ("
        f"select {c['symbol']} as symbol, {c['time']} as time, {c['close']} as close, "
        f"ln({c['close']} / lag({c['close']}) over (partition by {c['symbol']} "
        f"order by {c['time']})) as log_return from {_q(mart)}{where}), "
        "rolling as ("
        "select symbol, time, close, log_return, "
        f"case when count(log_return) {frame} = {window} "
        f"then stddev_samp(log_return) {frame} * sqrt({periods_per_year}) end as rolling_volatility "
        f"from base), kept as (select * from rolling{keep}) "
        "select symbol, time, exp(log_return) - 1 as simple_return, "
        "close / first_value(close) over (partition by symbol order by time) - 1 "
        "as cumulative_return, rolling_volatility from kept order by symbol, time"
    )
    return _read(snapshot, sql, (*params, *since))


def correlation_matrix(
    snapshot: str, market: str, symbols: tuple[str, ...], start: date, end: date
) -> pd.DataFrame:
    """Pairwise correlation of hourly log returns over the date range (long form)."""
    mart, cols = resolve(snapshot, "klines_1h", ["market", "symbol", "time", "close"])
    c = {a: _q(p) for a, p in cols.items()}
    where, params = _where(snapshot, mart, cols, market, symbols, start, end)
    sql = (
        "with r as ("
        f"select {c['symbol']} as symbol, {c['time']} as time, "
        f"ln({c['close']} / lag({c['close']}) over (partition by {c['symbol']} "
        f"order by {c['time']})) as log_return from {_q(mart)}{where}) "
        "select a.symbol as symbol_a, b.symbol as symbol_b, corr(a.log_return, b.log_return) "
        "as correlation from r a join r b using (time) group by 1, 2 order by 1, 2"
    )
    return _read(snapshot, sql, tuple(params))


def rolling_correlation(
    snapshot: str,
    market: str,
    symbol_a: str,
    symbol_b: str,
    start: date,
    end: date,
    window: int,
) -> pd.DataFrame:
    """Rolling correlation of two symbols' hourly log returns over `window` hours."""
    mart, cols = resolve(snapshot, "klines_1h", ["market", "symbol", "time", "close"])
    c = {a: _q(p) for a, p in cols.items()}
    where, params = _where(snapshot, mart, cols, market, (symbol_a, symbol_b), start, end)
    sql = (
        "with r as ("
        f"select {c['symbol']} as symbol, {c['time']} as time, "
        f"ln({c['close']} / lag({c['close']}) over (partition by {c['symbol']} "
        f"order by {c['time']})) as log_return from {_q(mart)}{where}), "
        "joined as (select a.time, a.log_return as ra, b.log_return as rb from r a "
        "join r b using (time) where a.symbol = ? and b.symbol = ?) "
        "select time, corr(ra, rb) over (order by time rows between ? preceding and current row) "
        "as correlation from joined order by time"
    )
    return _read(snapshot, sql, (*params, symbol_a, symbol_b, int(window) - 1))


def pair_list(snapshot: str, market: str | None) -> pd.DataFrame:
    mart, cols = resolve(snapshot, "pairs", ["symbol_a", "symbol_b"], ("market",))
    a, b = _q(cols["symbol_a"]), _q(cols["symbol_b"])
    where, params = _where(snapshot, mart, cols, market, None, None, None)
    return _read(
        snapshot,
        f"select distinct {a} as symbol_a, {b} as symbol_b from {_q(mart)}{where} order by 1, 2",
        tuple(params),
    )


def pair_series(
    snapshot: str, market: str | None, symbol_a: str, symbol_b: str, start: date, end: date
) -> pd.DataFrame:
    mart, cols = resolve(
        snapshot,
        "pairs",
        ["symbol_a", "symbol_b", "time", "spread", "zscore"],
        ("market", "hedge_ratio", "correlation"),
    )
    where, params = _where(snapshot, mart, cols, market, None, start, end)
    shown = [a for a in ("time", "hedge_ratio", "spread", "zscore", "correlation") if a in cols]
    where += (" and " if where else " where ") + f"{_q(cols['symbol_a'])} = ? and "
    where += f"{_q(cols['symbol_b'])} = ?"
    sql = (
        f"select {', '.join(f'{_q(cols[a])} as {a}' for a in shown)} from {_q(mart)}{where} "
        f"order by {_q(cols['time'])}"
    )
    return _read(snapshot, sql, (*params, symbol_a, symbol_b))


def latest_per_group(
    snapshot: str,
    name: str,
    keys: list[str],
    values: list[str],
    market: str | None = None,
    required: list[str] | None = None,
) -> pd.DataFrame:
    """The newest row (by its time column) of every key group whose `required` values (default:
    all values) are not null, in one market if given."""
    mart, cols = resolve(snapshot, name, [*keys, "time", *values], ("market",))
    key_sql = ", ".join(_q(cols[k]) for k in keys)
    select = ", ".join(f"{_q(cols[a])} as {_q(a)}" for a in [*keys, "time", *values])
    where, params = _where(snapshot, mart, cols, market, None, None, None)
    # Warm-up rows of rolling marts hold nulls; the latest value is the latest known one.
    not_null = " and ".join(f"{_q(cols[v])} is not null" for v in (required or values))
    where += (" and " if where else " where ") + not_null
    sql = (
        f"select {select} from {_q(mart)}{where} "
        f"qualify row_number() over (partition by {key_sql} order by {_q(cols['time'])} desc) = 1 "
        f"order by {key_sql}"
    )
    return _read(snapshot, sql, tuple(params))


def grouped_counts(snapshot: str, name: str, by: str, value: str | None = None) -> pd.DataFrame:
    """Row count (and sum of `value`) per `by` of a dimension, for marts without a rollup."""
    mart, cols = resolve(snapshot, name, [by] + ([value] if value else []))
    total = f", sum({_q(cols[value])}) as total" if value else ""
    sql = (
        f"select {_q(cols[by])} as {_q(by)}, count(*) as users{total} from {_q(mart)} "
        "group by 1 order by users desc"
    )
    return _read(snapshot, sql)


def balance_histogram(snapshot: str, bins: int = 12) -> pd.DataFrame:
    """Users per log10 balance bucket from dim_users (used when no bucket mart is published)."""
    mart, cols = resolve(snapshot, "users", ["balance"])
    b = _q(cols["balance"])
    sql = (
        f"select floor(log10(greatest({b}, 1)) * 2) / 2 as log10_floor, count(*) as users "
        f"from {_q(mart)} where {b} is not null group by 1 order by 1 limit ?"
    )
    frame = _read(snapshot, sql, (bins * 4,))
    frame["bucket"] = [f">= ${10**v:,.0f}" for v in frame["log10_floor"]]
    return frame


def fee_vs_amount(snapshot: str, start: date, end: date, sample: int = 3000) -> pd.DataFrame:
    """A repeatable sample of transactions' amount and fee in USD for a scatter; amount outliers
    (flagged in fct_transactions, left out of the volume charts too) are left out."""
    mart, cols = resolve(
        snapshot, "transactions", ["time", "amount_usd", "fee_usd", "tx_type"], ("amount_outlier",)
    )
    where, params = _where(snapshot, mart, cols, None, None, start, end)
    if "amount_outlier" in cols:
        flag = f"{_q(cols['amount_outlier'])} is not true"
        where = f"{where} and {flag}" if where else f" where {flag}"
    sql = (
        f"select {_q(cols['amount_usd'])} as amount_usd, {_q(cols['fee_usd'])} as fee_usd, "
        f"{_q(cols['tx_type'])} as tx_type from {_q(mart)}{where} "
        f"using sample reservoir({int(sample)} rows) repeatable (42)"
    )
    return _read(snapshot, sql, tuple(params))


def freshness(snapshot: str) -> pd.DataFrame:
    """Newest time every feed's mart covers: the data as-of time per feed.

    A row of an hourly or minutely mart is its period's start: the 23:00 candle covers up to
    23:59:59.999, so the feed is not an hour behind a transaction at 23:59:59.
    """
    feeds = [
        ("klines", "klines_1h", "1 hour"),
        ("order flow", "order_flow", "1 hour"),
        ("trades", "trades", "1 minute"),
        ("users", "users", None),
        ("transactions", "transactions", None),
        ("network", "network", "1 hour"),
        ("quality runs", "quality_runs", None),
    ]
    rows = []
    for feed, name, period in feeds:
        if not has(snapshot, name):
            rows.append({"feed": feed, "mart": MARTS[name][0], "latest": pd.NaT, "rows": 0})
            continue
        try:
            mart, cols = resolve(snapshot, name, ["time"])
        except DataUnavailable:
            continue
        frame = _read(
            snapshot,
            f"select (max({_q(cols['time'])})"
            + (f" + interval '{period}' - interval '1 millisecond'" if period else "")
            + f")::timestamp as latest, count(*) as rows from {_q(mart)}",
        )
        rows.append({"feed": feed, "mart": mart, **frame.iloc[0].to_dict()})
    return pd.DataFrame(rows, columns=["feed", "mart", "latest", "rows"])


def export_frame(
    snapshot: str,
    mart: str,
    market: str | None,
    symbols: tuple[str, ...] | None,
    start: date | None,
    end: date | None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Every column of one mart (picked from the snapshot's own list) with the shared filters."""
    available = schema(snapshot)
    if mart not in available:
        raise DataUnavailable(f"mart `{mart}` is not in snapshot {snapshot}; {RUN_HINT}")
    present = available[mart]
    cols = {}
    for alias, candidates in (
        ("market", ("market",)),
        ("symbol", ("symbol",)),
        ("time", _TIME_CANDIDATES),
    ):
        physical = next((c for c in candidates if c in present), None)
        if physical:
            cols[alias] = physical
    where, params = _where(snapshot, mart, cols, market, symbols, start, end)
    sql = f"select * from {_q(mart)}{where}"
    if "time" in cols:
        sql += f" order by {_q(cols['time'])}"
    if limit is not None:
        sql += " limit ?"
        params.append(int(limit))
    return _read(snapshot, sql, tuple(params))


_TIME_CANDIDATES = (
    "open_time",
    "date",
    "trading_date",
    "candle_date",
    "hour",
    "observed_hour",
    "minute",
    "occurred_at",
    "activity_date",
    "registration_date",
    "window_end",
    "validated_at",
    "registered_at",
    "observed_at",
)


def export_time_column(snapshot: str, mart: str) -> str | None:
    present = schema(snapshot).get(mart, [])
    return next((c for c in _TIME_CANDIDATES if c in present), None)


def export_span(snapshot: str, mart: str) -> tuple[date, date] | None:
    """The first and last day of a mart's time column (None without one, or without rows): the
    export's own date range, since each mart covers its own days (users' registrations go back
    a year before the first candle; quality runs are dated the day the gates ran)."""
    column = export_time_column(snapshot, mart)
    if column is None:
        return None
    span = _read(
        snapshot, f"select min({_q(column)})::date as first, max({_q(column)})::date as last from {_q(mart)}"
    )
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    if pd.isna(first) or pd.isna(last):
        return None
    return pd.Timestamp(first).date(), pd.Timestamp(last).date()


def export_count(
    snapshot: str,
    mart: str,
    market: str | None,
    symbols: tuple[str, ...] | None,
    start: date | None,
    end: date | None,
) -> int:
    available = schema(snapshot)
    if mart not in available:
        raise DataUnavailable(f"mart `{mart}` is not in snapshot {snapshot}; {RUN_HINT}")
    present = available[mart]
    cols = {a: a for a in ("market", "symbol") if a in present}
    time_column = export_time_column(snapshot, mart)
    if time_column:
        cols["time"] = time_column
    where, params = _where(snapshot, mart, cols, market, symbols, start, end)
    return int(_read(snapshot, f"select count(*) as n from {_q(mart)}{where}", tuple(params))["n"][0])


EXPORT_FORMATS = {
    "CSV": ("csv", "text/csv"),
    "JSON": ("json", "application/json"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
}


def encode(frame: pd.DataFrame, fmt: str) -> bytes:
    """The bytes of a download: CSV with a header, JSON records with ISO times, or parquet."""
    if fmt == "CSV":
        return frame.to_csv(index=False).encode()
    if fmt == "JSON":
        return json_records(frame).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise ValueError(f"unknown export format {fmt!r}")


def token_fees(snapshot: str, start: date | None, end: date | None) -> pd.DataFrame:
    """Volume and fee-weighted average fee per token over the date range.

    The mart's fees are those of completed transactions that are not amount outliers, so the
    average divides by that count when the mart has it (not by every transaction)."""
    mart, cols = resolve(
        snapshot,
        "tx_daily",
        ["time", "token", "tx_count", "volume_usd", "fee_usd"],
        ("completed_count", "outlier_count"),
    )
    c = {a: _q(p) for a, p in cols.items()}
    where, params = _where(snapshot, mart, cols, None, None, start, end)
    if "completed_count" in c and "outlier_count" in c:
        fee_count = f"sum({c['completed_count']}) - sum({c['outlier_count']})"
    else:
        fee_count = f"sum({c['tx_count']})"
    sql = (
        f"select {c['token']} as token, sum({c['volume_usd']}) as volume_usd, "
        f"sum({c['fee_usd']}) / nullif({fee_count}, 0) as avg_fee_usd, "
        f"sum({c['tx_count']}) as tx_count from {_q(mart)}{where} group by 1 order by 2 desc"
    )
    return _read(snapshot, sql, tuple(params))
