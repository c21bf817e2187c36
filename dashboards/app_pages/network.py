"""Network: gas price with its trend/seasonal decomposition, tps, block time, difficulty, hashrate."""

import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import data, ui

snapshot, chosen = ui.start_page("Network", symbols=False)


def hourly_network():
    return data.table(
        snapshot,
        "network",
        ["time", "gas"],
        ("gas_p95", "tps", "block_time", "difficulty", "hashrate"),
        start=chosen.start,
        end=chosen.end,
    )


NO_NETWORK = "No network rows in this date range: widen it in the sidebar (network data has no symbols)."

with ui.section("Gas price"):
    network = ui.require_rows(hourly_network(), NO_NETWORK)
    ui.chart(
        px.line(network, x="time", y=[c for c in ("gas", "gas_p95") if c in network]),
        "Gas price (gwei), hourly mean and p95",
        key="gas",
    )

with ui.section("Gas price decomposition (STL)"):
    stl = data.table(
        snapshot,
        "gas_stl",
        ["time", "observed", "trend", "seasonal", "residual"],
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(
        stl,
        "No decomposition in this date range: STL needs at least 2 days of hourly network data "
        "(its daily season), so widen the date range in the sidebar or land more days.",
    )
    parts = ["observed", "trend", "seasonal", "residual"]
    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, subplot_titles=parts)
    for row, part in enumerate(parts, start=1):
        figure.add_trace(go.Scatter(x=stl["time"], y=stl[part], name=part), row=row, col=1)
    ui.chart(figure, "Trend, daily seasonality and residual", height=640, key="stl")

with ui.section("Throughput and chain"):
    network = ui.require_rows(hourly_network(), NO_NETWORK)
    metrics = [c for c in ("tps", "block_time", "difficulty", "hashrate") if c in network]
    if not metrics:
        raise data.DataUnavailable("fct_network_hourly has no tps/block time columns; run `make run`.")
    figure = make_subplots(rows=2, cols=2, subplot_titles=metrics, shared_xaxes=True)
    for i, metric in enumerate(metrics):
        figure.add_trace(
            go.Scatter(x=network["time"], y=network[metric], name=metric),
            row=i // 2 + 1,
            col=i % 2 + 1,
        )
    ui.chart(figure, "tps, block time (s), difficulty, hashrate", height=560, key="chain")
