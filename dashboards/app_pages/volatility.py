"""Volatility and correlation: rolling and realized volatility, heatmap, rolling correlation."""

import plotly.express as px
import streamlit as st

from dashboards import data, theme, ui

snapshot, chosen = ui.start_page("Volatility & correlation", interval=True)

with ui.section("Rolling volatility"):
    ui.require_symbols(chosen)
    returns = data.returns(
        snapshot,
        chosen.interval,
        chosen.market,
        chosen.symbols,
        chosen.start,
        chosen.end,
        chosen.window,
    )
    ui.require_rows(returns)
    ui.chart(
        px.line(returns, x="time", y="rolling_volatility", color="symbol").update_yaxes(
            tickformat=".0%", title_text="annualised volatility"
        ),
        f"Annualised volatility over {chosen.window} {chosen.interval} periods",
        key="rolling_vol",
    )

with ui.section("Realized volatility (daily estimators)"):
    ui.require_symbols(chosen)
    realized = data.table(
        snapshot,
        "volatility",
        ["symbol", "time", "realized"],
        ("parkinson", "garman_klass"),
        market=chosen.market,
        symbols=(chosen.focus,),
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(realized)
    estimators = [c for c in ("realized", "parkinson", "garman_klass") if c in realized]
    ui.chart(
        px.line(realized, x="time", y=estimators).update_yaxes(
            tickformat=".0%", title_text="annualised volatility"
        ),
        f"{chosen.focus} realized, Parkinson and Garman-Klass volatility",
        key="realized_vol",
    )
    if len(estimators) > 1:
        st.caption(
            "Parkinson and Garman-Klass read each day's high and low: a wick spike gate 1 flags "
            "(and keeps, since prices are never capped) inflates them; realized volatility reads "
            "closes only."
        )

with ui.section("Correlation of hourly returns"):
    ui.require_symbols(chosen, 2)
    pairs = data.correlation_matrix(snapshot, chosen.market, chosen.symbols, chosen.start, chosen.end)
    ui.require_rows(pairs)
    matrix = pairs.pivot(index="symbol_a", columns="symbol_b", values="correlation")
    ui.chart(
        px.imshow(
            matrix,
            zmin=-1,
            zmax=1,
            text_auto=".2f",
            aspect="auto",
            color_continuous_scale=theme.DIVERGING,
        ),
        "Correlation heatmap",
        key="heatmap",
    )

with ui.section("Rolling correlation of two symbols"):
    ui.require_symbols(chosen, 2)
    left, right = st.columns(2)
    first = left.selectbox("First symbol", chosen.symbols, index=0, key="corr_a")
    others = [s for s in chosen.symbols if s != first]
    second = right.selectbox("Second symbol", others, index=0, key="corr_b")
    rolling = data.rolling_correlation(
        snapshot, chosen.market, first, second, chosen.start, chosen.end, chosen.window
    )
    ui.require_rows(rolling)
    ui.chart(
        px.line(rolling, x="time", y="correlation", range_y=[-1, 1]),
        f"{first} vs {second}: correlation over {chosen.window} hours",
        key="rolling_corr",
    )
