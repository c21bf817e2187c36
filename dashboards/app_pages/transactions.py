"""Transactions: volume, types, tokens, top traders, fee vs amount, leverage, fee drivers."""

import plotly.express as px
import streamlit as st

from dashboards import data, theme, ui

snapshot, chosen = ui.start_page("Transactions", symbols=False)

with ui.section("Volume over time"):
    daily = data.table(
        snapshot,
        "tx_daily",
        ["time", "token", "tx_type", "tx_count", "volume_usd"],
        ("fee_usd",),
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(daily)
    # One colour per type on every chart of the page (plotly assigns them in order of appearance).
    type_colors = {
        tx_type: theme.COLORWAY[i % len(theme.COLORWAY)]
        for i, tx_type in enumerate(sorted(daily["tx_type"].unique()))
    }
    ui.chart(
        px.bar(daily, x="time", y="volume_usd", color="tx_type", color_discrete_map=type_colors),
        "Volume (USD) per day by type",
        key="tx_volume",
    )
    left, right = st.columns(2)
    with left:
        ui.chart(
            px.pie(
                daily,
                names="tx_type",
                values="tx_count",
                hole=0.5,
                color="tx_type",
                color_discrete_map=type_colors,
            ),
            "Transactions by type",
            key="tx_types",
        )
    with right:
        ui.chart(
            px.bar(daily, x="token", y="volume_usd", color="tx_type", color_discrete_map=type_colors),
            "Volume (USD) by token",
            key="tx_tokens",
        )

with ui.section("Average fee by token"):
    fees = data.token_fees(snapshot, chosen.start, chosen.end)
    ui.require_rows(fees)
    ui.chart(px.bar(fees, x="token", y="avg_fee_usd"), "Average fee (USD) by token", key="fees")

left, right = st.columns(2)
with left, ui.section("Top traders"):
    traders = data.table(
        snapshot, "top_traders", ["user_id", "volume_usd"], ("tx_count", "rank"), order=("rank",)
    )
    traders = ui.require_rows(traders).sort_values("volume_usd", ascending=False).head(20)
    # Plotly puts numeric-looking strings on a numeric axis: "user 4261" stays a label.
    traders["user"] = "user " + traders["user_id"].astype(str)
    ui.chart(
        px.bar(traders, x="volume_usd", y="user", orientation="h").update_yaxes(
            type="category", autorange="reversed"
        ),
        "Top traders by volume (USD)",
        key="traders",
    )
with right, ui.section("Leverage distribution (futures)"):
    leverage = data.table(snapshot, "leverage", ["leverage", "tx_count"], order=("leverage",))
    leverage = ui.require_rows(leverage)
    leverage["leverage"] = leverage["leverage"].map(lambda v: f"{v:g}x")
    ui.chart(px.bar(leverage, x="leverage", y="tx_count"), "Trades per leverage", key="leverage")

left, right = st.columns(2)
with left, ui.section("Fee vs amount"):
    sample = ui.require_rows(data.fee_vs_amount(snapshot, chosen.start, chosen.end))
    # A log axis has no 0: transactions without a fee (every deposit) would vanish unsaid.
    free = sample["fee_usd"] <= 0
    sample = sample[~free]
    ui.chart(
        px.scatter(
            sample,
            x="amount_usd",
            y="fee_usd",
            color="tx_type",
            color_discrete_map=type_colors,
            log_x=True,
            log_y=True,
            opacity=0.6,
        ),
        "Fee vs amount (USD, sample)",
        key="fee_amount",
    )
    if free.any():
        st.caption(
            f"{int(free.sum()):,} sampled transactions without a fee are not drawn (a log axis has no 0)."
        )
with right, ui.section("What drives fees"):
    importance = data.table(snapshot, "fee_importance", ["feature", "importance"], order=("importance",))
    ui.require_rows(importance)
    ui.chart(
        px.bar(importance, x="importance", y="feature", orientation="h"),
        "Feature importance (random forest)",
        key="importance",
    )
