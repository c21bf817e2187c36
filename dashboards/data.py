"""The only module that runs SQL for the dashboard: cached reads of the current published snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from flows.lake import current_snapshot
from flows.query import snapshot_connection
from flows.settings import PROJECT_ROOT

TTL_SECONDS = 60


def lake_dir() -> Path:
    return Path(os.environ.get("LAKEHOUSE_LAKE_DIR", PROJECT_ROOT / "lake")).resolve()


def snapshot_id() -> str | None:
    """Resolved once per script run; cached reads are keyed on it, so a publish is seen next run."""
    return current_snapshot(lake_dir())


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def _read(snapshot: str, sql: str, params: tuple = ()) -> pd.DataFrame:
    con = snapshot_connection(lake_dir(), snapshot)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def marts(snapshot: str) -> list[str]:
    folder = lake_dir() / "marts" / snapshot
    return sorted(p.stem for p in folder.glob("*.parquet"))


def symbols(snapshot: str) -> list[str]:
    return _read(snapshot, "select distinct symbol from fct_klines_daily order by 1")["symbol"].tolist()


def hourly_klines(snapshot: str, symbol: str) -> pd.DataFrame:
    return _read(
        snapshot,
        "select open_time, open, high, low, close, volume, vwap from fct_klines_hourly "
        "where symbol = ? order by open_time",
        (symbol,),
    )


def daily_summary(snapshot: str) -> pd.DataFrame:
    return _read(
        snapshot,
        "select symbol, count(*) as days, min(open_time) as first_day, max(open_time) as last_day, "
        "sum(quote_volume) as quote_volume from fct_klines_daily group by symbol order by symbol",
    )
