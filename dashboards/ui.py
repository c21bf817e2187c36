"""Page scaffolding shared by every page: snapshot guard, filters, alerts, sections and charts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import data, filters, theme

NO_SNAPSHOT = (
    "No published marts yet. Run `make run` (or `lakehouse run`) to build and publish them; "
    "this page picks the snapshot up on the next refresh."
)
EMPTY = "No rows for these filters: widen the date range or pick other symbols in the sidebar."


@dataclass(frozen=True)
class Alert:
    level: str  # "error" or "warning"
    text: str


def start_page(title: str, *, symbols: bool = True, interval: bool = False) -> tuple[str, filters.Filters]:
    """Resolve the snapshot once for this run, render the filters, the title and any alerts."""
    snapshot = data.snapshot_id()
    if snapshot is None:
        st.title(title)
        st.info(NO_SNAPSHOT)
        st.stop()
    chosen = filters.sidebar(snapshot, symbols=symbols, interval=interval)
    st.title(title)
    for alert in evaluate_alerts(snapshot, chosen):
        (st.error if alert.level == "error" else st.warning)(
            alert.text, icon=":material/notifications_active:"
        )
    st.caption(f"snapshot {snapshot}")
    return snapshot, chosen


def evaluate_alerts(snapshot: str, chosen: filters.Filters) -> list[Alert]:
    """z-score, spread and price alerts on the latest mart values."""
    alerts: list[Alert] = []
    with contextlib.suppress(data.DataUnavailable):
        latest = data.latest_per_group(snapshot, "pairs", ["symbol_a", "symbol_b"], ["zscore"], chosen.market)
        hits = latest[latest["zscore"].abs() >= chosen.z_threshold]
        alerts += [
            Alert(
                "error",
                f"z-score alert: {r.symbol_a}/{r.symbol_b} spread z-score {r.zscore:+.2f} "
                f"(|z| >= {chosen.z_threshold:g}) at {pd.Timestamp(r.time):%Y-%m-%d %H:%M}",
            )
            for r in hits.itertuples()
        ]
    if chosen.spread_threshold > 0:
        with contextlib.suppress(data.DataUnavailable):
            latest = data.latest_per_group(
                snapshot, "pairs", ["symbol_a", "symbol_b"], ["spread"], chosen.market
            )
            hits = latest[latest["spread"].abs() >= chosen.spread_threshold]
            alerts += [
                Alert(
                    "warning",
                    f"spread alert: {r.symbol_a}/{r.symbol_b} spread {r.spread:,.4f} "
                    f"(|spread| >= {chosen.spread_threshold:g})",
                )
                for r in hits.itertuples()
            ]
    if chosen.focus and (chosen.price_above > 0 or chosen.price_below > 0):
        with contextlib.suppress(data.DataUnavailable):
            latest = data.latest_per_group(snapshot, "klines_1h", ["market", "symbol"], ["close"])
            row = latest[(latest["market"] == chosen.market) & (latest["symbol"] == chosen.focus)]
            if not row.empty:
                close = float(row["close"].iloc[0])
                if chosen.price_above > 0 and close >= chosen.price_above:
                    alerts.append(
                        Alert(
                            "warning",
                            f"price alert: {chosen.focus} closed at {close:,.2f}, "
                            f"above {chosen.price_above:,.2f}",
                        )
                    )
                if chosen.price_below > 0 and close <= chosen.price_below:
                    alerts.append(
                        Alert(
                            "warning",
                            f"price alert: {chosen.focus} closed at {close:,.2f}, "
                            f"below {chosen.price_below:,.2f}",
                        )
                    )
    return alerts


@contextlib.contextmanager
def section(title: str | None = None) -> Iterator[None]:
    """One independent part of a page: a missing mart or empty result shows guidance, not a crash."""
    if title:
        st.subheader(title)
    try:
        yield
    except data.DataUnavailable as exc:
        st.info(str(exc))


def require_rows(frame: pd.DataFrame, message: str = EMPTY) -> pd.DataFrame:
    if frame.empty:
        raise data.DataUnavailable(message)
    return frame


def require_symbols(chosen: filters.Filters, count: int = 1) -> None:
    if len(chosen.symbols) < count:
        raise data.DataUnavailable(f"Pick at least {count} symbol{'s' if count > 1 else ''} in the sidebar.")


def chart(figure: go.Figure, title: str | None = None, height: int = 420, key: str | None = None):
    st.plotly_chart(theme.styled(figure, title, height), theme=None, width="stretch", key=key)


def metric_row(items: list[tuple[str, str, str | None]]) -> None:
    for column, (label, value, delta) in zip(st.columns(len(items)), items, strict=True):
        column.metric(label, value, delta)
