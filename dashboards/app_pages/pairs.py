"""Pairs: hedge ratio, spread, z-score with threshold bands, ADF result with critical values."""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboards import data, theme, ui

snapshot, chosen = ui.start_page("Pairs")
symbol_a = symbol_b = label = None

with ui.section():
    pairs = data.pair_list(snapshot, chosen.market)
    ui.require_rows(pairs, "The pairs mart has no pairs yet; run `make run` with 2+ symbols.")
    labels = [f"{a}/{b}" for a, b in zip(pairs["symbol_a"], pairs["symbol_b"], strict=True)]
    preferred = next(
        (
            i
            for i, (a, b) in enumerate(zip(pairs["symbol_a"], pairs["symbol_b"], strict=True))
            if a in chosen.symbols and b in chosen.symbols
        ),
        0,
    )
    label = st.selectbox("Pair", labels, index=preferred, key="pair")
    symbol_a, symbol_b = label.split("/")
    series = data.pair_series(snapshot, chosen.market, symbol_a, symbol_b, chosen.start, chosen.end)
    ui.require_rows(series)
    last = series.iloc[-1]
    ui.metric_row(
        [
            ("hedge ratio", f"{last.get('hedge_ratio', float('nan')):.4f}", None),
            ("spread", f"{last.spread:.4f}", None),
            ("z-score", f"{last.zscore:+.2f}", None),
            ("correlation", f"{last.get('correlation', float('nan')):.2f}", None),
        ]
    )
    ui.chart(px.line(series, x="time", y="spread"), f"Spread {label}", height=320, key="spread")
    z = go.Figure(go.Scatter(x=series["time"], y=series["zscore"], name="z-score"))
    beyond = series[series["zscore"].abs() >= chosen.z_threshold]
    z.add_trace(
        go.Scatter(
            x=beyond["time"],
            y=beyond["zscore"],
            mode="markers",
            name=f"|z| >= {chosen.z_threshold:g}",
            marker={"color": theme.DOWN, "size": 7},
        )
    )
    for level in (chosen.z_threshold, -chosen.z_threshold):
        z.add_hline(y=level, line_dash="dash", line_color=theme.DOWN)
    z.add_hline(y=0, line_dash="dot", line_color=theme.MUTED)
    ui.chart(z, f"Spread z-score with ±{chosen.z_threshold:g} bands", height=360, key="zscore")
    st.caption(f"{len(beyond)} hours beyond the threshold in the date range")
    extra = [c for c in ("hedge_ratio", "correlation") if c in series]
    if extra:
        ui.chart(px.line(series, x="time", y=extra), "Hedge ratio and rolling correlation", key="hedge")

with ui.section("Cointegration (Augmented Dickey-Fuller on the spread)"):
    adf = data.table(
        snapshot,
        "cointegration",
        ["symbol_a", "symbol_b", "time", "adf_statistic", "p_value"],
        ("critical_1pct", "critical_5pct", "critical_10pct"),
        market=chosen.market,
    )
    ui.require_rows(adf, "No ADF results in this snapshot; run `make run`.")
    adf = adf.sort_values("time").groupby(["symbol_a", "symbol_b"], as_index=False).last()
    # Below the 5% critical value (or p < 0.05 when the mart has no critical values) rejects a
    # unit root in the spread: the pair is cointegrated at 5%.
    rejects = adf["adf_statistic"] < adf["critical_5pct"] if "critical_5pct" in adf else adf["p_value"] < 0.05
    adf["verdict"] = rejects.map({True: "cointegrated (5%)", False: "not cointegrated"})
    st.dataframe(
        adf,
        hide_index=True,
        width="stretch",
        # A p-value of 5e-16 in a fixed format read ")0000000000005".
        column_config={"p_value": st.column_config.NumberColumn("p_value", format="%.2e")},
    )
    chosen_row = adf[(adf["symbol_a"] == symbol_a) & (adf["symbol_b"] == symbol_b)]
    if label and not chosen_row.empty:
        row = chosen_row.iloc[0]
        figure = go.Figure(
            go.Bar(
                # Plotly reads "1%" as the number 1: name the critical values as words.
                x=["ADF statistic", "1% critical", "5% critical", "10% critical"],
                y=[row.adf_statistic]
                + [row.get(k, float("nan")) for k in ("critical_1pct", "critical_5pct", "critical_10pct")],
                marker_color=[theme.YELLOW, theme.MUTED, theme.MUTED, theme.MUTED],
            )
        )
        figure.update_xaxes(type="category")
        ui.chart(
            figure,
            f"{label}: ADF {row.adf_statistic:.2f}, p = {row.p_value:.3f}",
            height=300,
            key="adf",
        )
