"""The shared sidebar filters; pages pass their values into dashboards.data functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import streamlit as st

from dashboards import data

WINDOW_MIN, WINDOW_MAX, WINDOW_DEFAULT = 5, 100, 20
Z_DEFAULT = 2.0
DEFAULT_DAYS = 90
INTERVALS = {"1h": "hourly", "1d": "daily"}
PREFERRED = ("BTCUSDT", "ETHUSDT")


@dataclass(frozen=True)
class Filters:
    market: str | None
    symbols: tuple[str, ...]
    interval: str
    start: date | None
    end: date | None
    window: int = WINDOW_DEFAULT
    z_threshold: float = Z_DEFAULT
    spread_threshold: float = 0.0
    price_above: float = 0.0
    price_below: float = 0.0

    @property
    def focus(self) -> str | None:
        """The symbol single-symbol charts show: the first one picked."""
        return self.symbols[0] if self.symbols else None


def _remembered(key: str, default: object) -> object:
    # Widget state is dropped when a page without that widget runs; a plain session key survives
    # page switches, so filters set on one page still hold on the next. The key is set again on
    # every run: each page's sidebar is a new widget to Streamlit, and a widget whose key was not
    # set in this run starts from its own default (a slider's minimum: MA 5, |z| >= 0.5 alerts).
    if key in st.session_state:
        value = st.session_state[key]
    else:
        value = st.session_state.get(f"_kept_{key}", default)
    st.session_state[key] = value
    return value


def _keep(*keys: str) -> None:
    for key in keys:
        st.session_state[f"_kept_{key}"] = st.session_state[key]


def universe(snapshot: str) -> pd.DataFrame:
    try:
        return data.kline_universe(snapshot)
    except data.DataUnavailable:
        return pd.DataFrame(columns=["market", "symbol", "first_day", "last_day"])


def sidebar(snapshot: str, *, symbols: bool = True, interval: bool = False) -> Filters:
    """Render the shared filters in the sidebar and return their values."""
    known = universe(snapshot)
    bar = st.sidebar
    bar.header("Filters")

    markets = sorted(known["market"].dropna().unique().tolist()) or ["spot"]
    _remembered("f_market", markets[0])
    if st.session_state["f_market"] not in markets:
        st.session_state["f_market"] = markets[0]
    market = bar.selectbox("Market", markets, key="f_market")

    in_market = known[known["market"] == market]
    options = in_market["symbol"].tolist()
    default = [s for s in PREFERRED if s in options] or options[:2]
    chosen: tuple[str, ...] = ()
    if symbols:
        _remembered("f_symbols", default)
        st.session_state["f_symbols"] = [s for s in st.session_state["f_symbols"] if s in options]
        chosen = tuple(bar.multiselect("Symbols", options, key="f_symbols"))

    chosen_interval = "1h"
    if interval:
        _remembered("f_interval", "1h")
        chosen_interval = bar.radio(
            "Interval", list(INTERVALS), key="f_interval", format_func=INTERVALS.get, horizontal=True
        )

    start = end = None
    if not in_market.empty:
        first, last = in_market["first_day"].min(), in_market["last_day"].max()
        first, last = pd.Timestamp(first).date(), pd.Timestamp(last).date()
        _remembered("f_dates", (max(first, last - timedelta(days=DEFAULT_DAYS)), last))
        kept = st.session_state["f_dates"]
        # A new snapshot may cover other days: a remembered range outside it starts over.
        if not isinstance(kept, tuple | list) or not kept or not all(first <= d <= last for d in kept):
            st.session_state["f_dates"] = (max(first, last - timedelta(days=DEFAULT_DAYS)), last)
        picked = bar.date_input("Date range", key="f_dates", min_value=first, max_value=last)
        if isinstance(picked, tuple | list) and len(picked) == 2:
            start, end = picked
        elif isinstance(picked, tuple | list) and len(picked) == 1:
            start = end = picked[0]

    _remembered("f_window", WINDOW_DEFAULT)
    window = bar.slider("Rolling window (periods)", WINDOW_MIN, WINDOW_MAX, key="f_window")

    with bar.expander("Alert thresholds", expanded=False):
        _remembered("f_z", Z_DEFAULT)
        z = st.number_input("|z-score| at least", 0.5, 10.0, step=0.5, key="f_z")
        _remembered("f_spread", 0.0)
        spread = st.number_input("|spread| at least (0 = off)", 0.0, step=0.01, format="%.4f", key="f_spread")
        _remembered("f_above", 0.0)
        above = st.number_input("price above (0 = off)", 0.0, step=100.0, key="f_above")
        _remembered("f_below", 0.0)
        below = st.number_input("price below (0 = off)", 0.0, step=100.0, key="f_below")

    _keep(
        *(k for k in ("f_market", "f_symbols", "f_interval", "f_dates") if k in st.session_state),
        "f_window",
        "f_z",
        "f_spread",
        "f_above",
        "f_below",
    )
    return Filters(
        market=market if not known.empty else None,
        symbols=chosen,
        interval=chosen_interval,
        start=start,
        end=end,
        window=int(window),
        z_threshold=float(z),
        spread_threshold=float(spread),
        price_above=float(above),
        price_below=float(below),
    )
