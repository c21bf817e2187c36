"""Market: candlestick with volume, moving average, VWAP, support/resistance; returns."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboards import data, theme, ui

snapshot, chosen = ui.start_page("Market", interval=True)

with ui.section(f"{chosen.focus or 'Price'} candles"):
    ui.require_symbols(chosen)
    candles = data.klines_with_levels(
        snapshot,
        chosen.interval,
        chosen.market,
        chosen.focus,
        chosen.start,
        chosen.end,
        chosen.window,
    )
    ui.require_rows(candles)
    last = candles.iloc[-1]
    ui.metric_row(
        [
            ("close", f"{last.close:,.2f}", None),
            # n/a until the window is full (the first periods of the data).
            *(
                (label, "n/a" if pd.isna(value) else f"{value:,.2f}", None)
                for label, value in (
                    (f"MA {chosen.window}", last.moving_average),
                    ("support", last.support),
                    ("resistance", last.resistance),
                )
            ),
        ]
    )
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25])
    figure.add_trace(
        go.Candlestick(
            x=candles["time"],
            open=candles["open"],
            high=candles["high"],
            low=candles["low"],
            close=candles["close"],
            name=chosen.focus,
        ),
        row=1,
        col=1,
    )
    for column, label, color, dash in (
        ("moving_average", f"MA {chosen.window}", theme.YELLOW, "solid"),
        ("rolling_vwap", f"VWAP {chosen.window}", "#1E90FF", "solid"),
        ("support", "support", theme.UP, "dot"),
        ("resistance", "resistance", theme.DOWN, "dot"),
    ):
        figure.add_trace(
            go.Scatter(
                x=candles["time"],
                y=candles[column],
                name=label,
                line={"color": color, "dash": dash, "width": 1.5},
            ),
            row=1,
            col=1,
        )
    figure.add_trace(
        go.Bar(x=candles["time"], y=candles["volume"], name="volume", marker_color=theme.YELLOW),
        row=2,
        col=1,
    )
    figure.update_layout(xaxis_rangeslider_visible=False)
    # The price axis spans the candles' bodies and the lines, with room for ordinary wicks; a
    # wick far beyond (a spike gate 1 flags) is cut at the edge instead of flattening the chart.
    bodies = candles[["open", "close", "moving_average", "support", "resistance"]]
    low, high = float(bodies.min().min()), float(bodies.max().max())
    pad = max(high - low, abs(high) * 1e-3) * 0.25
    figure.update_yaxes(range=[max(low - pad, 0.0), high + pad], row=1, col=1)
    ui.chart(figure, f"{chosen.focus} {chosen.interval}", height=560, key="market_candles")
    cut = int(((candles["high"] > high + pad) | (candles["low"] < low - pad)).sum())
    if cut:
        st.caption(
            f"{cut} candle(s) have a wick beyond this price range (highest high "
            f"{candles['high'].max():,.2f}, lowest low {candles['low'].min():,.2f}); gate 1 flags "
            "such wicks and keeps them (see the Data quality page)."
        )

with ui.section("Returns"):
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
    left, right = ui.st.columns(2)
    with left:
        ui.chart(
            px.line(returns, x="time", y="cumulative_return", color="symbol").update_yaxes(
                tickformat=".0%", title_text="cumulative return"
            ),
            "Cumulative return",
            key="market_cumulative",
        )
    with right:
        ui.chart(
            px.histogram(
                returns.dropna(subset=["simple_return"]),
                x="simple_return",
                color="symbol",
                nbins=60,
                barmode="overlay",
                opacity=0.7,
            ),
            f"Distribution of {chosen.interval} returns",
            key="market_histogram",
        )

with ui.section("Technicals (daily)"):
    ui.require_symbols(chosen)
    technicals = data.table(
        snapshot,
        "technicals",
        ["symbol", "time", "close", "sma_20"],
        ("sma_50", "bollinger_upper", "bollinger_lower", "rsi", "support", "resistance"),
        market=chosen.market,
        symbols=(chosen.focus,),
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(technicals)
    lines = [
        c
        for c in ("close", "sma_20", "sma_50", "bollinger_upper", "bollinger_lower", "support", "resistance")
        if c in technicals
    ]
    has_rsi = "rsi" in technicals
    figure = make_subplots(
        rows=2 if has_rsi else 1,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.7, 0.3] if has_rsi else [1.0],
    )
    for column in lines:
        dash = "dot" if column.startswith(("bollinger", "support", "resistance")) else "solid"
        figure.add_trace(
            go.Scatter(x=technicals["time"], y=technicals[column], name=column, line={"dash": dash}),
            row=1,
            col=1,
        )
    if has_rsi:
        figure.add_trace(go.Scatter(x=technicals["time"], y=technicals["rsi"], name="RSI 14"), row=2, col=1)
        for level in (30, 70):
            figure.add_hline(y=level, line_dash="dash", line_color=theme.MUTED, row=2, col=1)
    ui.chart(
        figure,
        f"{chosen.focus}: 20/50-day averages, Bollinger bands, 20-day levels, RSI",
        height=520,
        key="market_technicals",
    )
