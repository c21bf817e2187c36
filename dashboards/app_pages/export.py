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
    applied = [
        f"market = {chosen.market}" if chosen.market and "market" in data.schema(snapshot)[mart] else "",
        (
            f"symbols = {', '.join(chosen.symbols) or '(all)'}"
            if "symbol" in data.schema(snapshot)[mart]
            else ""
        ),
        f"{time_column} in {chosen.start} .. {chosen.end}" if time_column and chosen.start else "",
    ]
    args = (
        snapshot,
        mart,
        chosen.market,
        chosen.symbols or None,
        chosen.start if time_column else None,
        chosen.end if time_column else None,
    )
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
