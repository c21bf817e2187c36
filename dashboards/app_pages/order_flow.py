"""Order flow: cumulative volume delta, taker buy ratio, trades per second, ingest latency."""

import plotly.express as px
import plotly.graph_objects as go

from dashboards import data, theme, ui

snapshot, chosen = ui.start_page("Order flow")


def order_flow():
    ui.require_symbols(chosen)
    return data.table(
        snapshot,
        "order_flow",
        ["symbol", "time", "volume_delta", "cvd", "taker_buy_ratio", "trades_per_second"],
        market=chosen.market,
        symbols=chosen.symbols,
        start=chosen.start,
        end=chosen.end,
    )


with ui.section("Cumulative volume delta"):
    flow = ui.require_rows(order_flow()).sort_values(["symbol", "time"])
    # From the range's first hour, and each symbol on its own axis: the deltas are in base units
    # (BTC, ETH), so one shared axis made ETH look 20x more one-sided than BTC.
    flow["cvd_in_range"] = flow.groupby("symbol")["volume_delta"].cumsum()
    figure = px.line(flow, x="time", y="cvd_in_range", color="symbol", facet_row="symbol")
    figure.update_yaxes(matches=None, title_text="")
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    ui.chart(
        figure,
        f"Cumulative volume delta since {chosen.start} (base units, one axis per symbol)",
        height=120 + 180 * flow["symbol"].nunique(),
        key="cvd",
    )
    focus = flow[flow["symbol"] == chosen.focus]
    colors = [theme.UP if v >= 0 else theme.DOWN for v in focus["volume_delta"]]
    ui.chart(
        go.Figure(go.Bar(x=focus["time"], y=focus["volume_delta"], marker_color=colors)),
        f"{chosen.focus} volume delta per hour (taker buy - taker sell)",
        height=320,
        key="delta",
    )

with ui.section("Taker buy ratio and trades per second"):
    flow = ui.require_rows(order_flow())
    left, right = ui.st.columns(2)
    with left:
        figure = px.line(flow, x="time", y="taker_buy_ratio", color="symbol")
        figure.add_hline(y=0.5, line_dash="dot", line_color=theme.MUTED)
        ui.chart(figure, "Taker buy ratio", key="ratio")
    with right:
        ui.chart(
            px.line(flow, x="time", y="trades_per_second", color="symbol"),
            "Trades per second",
            key="tps",
        )

with ui.section("Live trade stream: ingest latency"):
    if not data.has_rows(snapshot, "trades"):  # a lake that never streamed has the marts, empty
        raise data.DataUnavailable(
            "No trade stream marts yet. Start one with `lakehouse stream --symbols BTCUSDT "
            "--duration 60`, then `make run` to publish."
        )
    trades = data.table(
        snapshot,
        "trades",
        ["symbol", "time", "latency_p50", "latency_p95", "latency_p99"],
        ("trades_per_second",),
        market=chosen.market,
        symbols=chosen.symbols or None,
    )
    ui.require_rows(trades, "The trade stream has no rows for these symbols and market.")
    long = trades.melt(
        id_vars=["symbol", "time"],
        value_vars=["latency_p50", "latency_p95", "latency_p99"],
        var_name="percentile",
        value_name="ms",
    )
    ui.chart(
        px.line(long, x="time", y="ms", color="percentile", line_dash="symbol"),
        "Event-to-persist latency (ms)",
        key="latency",
    )
