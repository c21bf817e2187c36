"""Export: the filtered data of any mart as CSV, JSON or parquet."""

import pandas as pd
import streamlit as st

from dashboards import data, ui

PREVIEW_ROWS = 200

snapshot, chosen = ui.start_page("Export")

with ui.section():
    names = data.marts(snapshot)
    ui.require_rows(pd.DataFrame({"mart": names}), f"Snapshot {snapshot} holds no marts.")
    mart = st.selectbox("Mart", names, key="export_mart")
    fmt = st.radio("Format", list(data.EXPORT_FORMATS), horizontal=True, key="export_format")
    time_column = data.export_time_column(snapshot, mart)
    # Each mart covers its own days (registrations a year before the first candle, quality runs
    # on the day the gates ran): the export picks from the mart's own span, not the sidebar's.
    span = data.export_span(snapshot, mart)
    start = end = None
    if span is not None:
        first, last = span
        picked = st.date_input(
            f"Date range of {time_column} ({first} .. {last} in this mart)",
            value=(first, last),
            min_value=first,
            max_value=last,
            key=f"export_dates_{mart}",
        )
        if isinstance(picked, tuple | list) and picked:
            start, end = picked[0], picked[-1]
    schema = data.schema(snapshot)[mart]
    applied = [
        f"market = {chosen.market}" if chosen.market and "market" in schema else "",
        f"symbols = {', '.join(chosen.symbols) or '(all)'}" if "symbol" in schema else "",
        f"{time_column} in {start} .. {end}" if start else "",
    ]
    args = (snapshot, mart, chosen.market, chosen.symbols or None, start, end)
    rows = data.export_count(*args)
    st.caption("filters applied: " + ("; ".join(a for a in applied if a) or "none (whole mart)"))
    if rows == 0:
        raise data.DataUnavailable(ui.EMPTY)
    st.download_button(
        f"Download {rows:,} rows as {fmt}",
        data=lambda: data.encode(data.export_frame(*args), fmt),
        file_name=f"{mart}-{snapshot}.{data.EXPORT_FORMATS[fmt][0]}",
        mime=data.EXPORT_FORMATS[fmt][1],
        on_click="ignore",
        type="primary",
        key="export_download",
    )
    st.dataframe(data.export_frame(*args, limit=PREVIEW_ROWS), hide_index=True, width="stretch")
    st.caption(f"preview: first {min(rows, PREVIEW_ROWS)} of {rows:,} rows")
