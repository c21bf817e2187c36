"""Overview: data as-of time and freshness per feed, headline KPIs, latest gate status."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboards import data, filters, ui

snapshot, chosen = ui.start_page("Overview")

with ui.section("Headline"):
    ui.require_symbols(chosen)
    # The newest close, even on a series' first day (no 1-day change yet: shown without one).
    latest = data.latest_per_group(
        snapshot, "klines_1d", ["market", "symbol"], ["close", "simple_return"], required=["close"]
    )
    latest = latest[(latest["market"] == chosen.market) & latest["symbol"].isin(chosen.symbols)]
    ui.require_rows(latest)
    ui.metric_row(
        [
            (
                f"{r.symbol} close",
                f"{r.close:,.2f}",
                None if pd.isna(r.simple_return) else f"{r.simple_return:+.2%} 1d",
            )
            for r in latest.itertuples()
        ][:6]
    )

with ui.section("Freshness per feed"):
    feeds = data.freshness(snapshot)
    # The quality runs' time is when the gates ran, not a time in the data: it sets no as-of.
    is_data = feeds["feed"] != "quality runs"
    as_of = feeds.loc[is_data, "latest"].max()
    st.markdown(f"**Data as of {as_of:%Y-%m-%d %H:%M} UTC**" if pd.notna(as_of) else "No feed data.")
    behind = (as_of - feeds["latest"]).dt.total_seconds() / 3600
    feeds["behind newest feed"] = [
        "no data" if pd.isna(h) else (f"{h:,.1f} h" if data_feed else "(when the gates ran)")
        for h, data_feed in zip(behind, is_data, strict=True)
    ]
    rows = dict(zip(feeds["feed"], feeds["rows"].fillna(0).astype(int), strict=True))
    ui.metric_row(
        [
            ("symbols", f"{len(filters.universe(snapshot)):,}", None),
            ("hourly candles", f"{rows.get('klines', 0):,}", None),
            ("users", f"{rows.get('users', 0):,}", None),
            ("transactions", f"{rows.get('transactions', 0):,}", None),
        ]
    )
    st.dataframe(feeds, hide_index=True, width="stretch")

with ui.section("Latest gate status"):
    runs = data.latest_per_group(
        snapshot, "quality_runs", ["gate", "dataset"], ["success", "failed", "quarantined"]
    )
    ui.require_rows(runs, "No gate runs recorded in this snapshot yet; run `make run`.")
    for gate, group in runs.groupby("gate"):
        passed = int(group["success"].sum())
        text = (
            f"gate `{gate}`: {passed}/{len(group)} datasets passed at "
            f"{pd.Timestamp(group['time'].max()):%Y-%m-%d %H:%M:%S} UTC"
        )
        (st.success if passed == len(group) else st.warning)(text)
    st.dataframe(runs, hide_index=True, width="stretch")

with ui.section("Price trend"):
    ui.require_symbols(chosen)
    trend = data.returns(
        snapshot, "1d", chosen.market, chosen.symbols, chosen.start, chosen.end, chosen.window
    )
    ui.require_rows(trend)
    ui.chart(
        px.line(trend, x="time", y="cumulative_return", color="symbol"),
        "Cumulative return over the date range",
        key="overview_trend",
    )
