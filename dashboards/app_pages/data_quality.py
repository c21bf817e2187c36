"""Data quality: last runs of both gates, quarantine counts with reasons, candle completeness."""

import plotly.express as px
import streamlit as st

from dashboards import data, ui

snapshot, chosen = ui.start_page("Data quality")

data_docs, dbt_docs = data.docs_urls()
left, right = st.columns(2)
left.link_button("Great Expectations Data Docs", data_docs, width="stretch")
right.link_button("dbt docs (lineage)", dbt_docs, width="stretch")
st.caption(
    f"Data Docs: `lakehouse dq-report` serves {data_docs}; dbt docs: `lakehouse docs` serves "
    f"{dbt_docs} (set LAKEHOUSE_DATA_DOCS_URL / LAKEHOUSE_DBT_DOCS_URL to change). "
    "Data Docs marks a validation failed when any expectation fails, flag-only ones too (severity "
    "warning in their suite: rows counted and accepted); this page counts only the rules that "
    "quarantine rows or stop a publish, so it can show fewer failures."
)


def gate_runs():
    return data.table(
        snapshot,
        "quality_runs",
        ["run_id", "time", "gate", "dataset", "success"],
        ("evaluated", "failed", "accepted", "quarantined", "failed_expectations"),
        descending=True,
    )


NO_RUNS = "No gate runs recorded in this snapshot yet; run `make run`."

with ui.section("Last runs of both gates"):
    runs = ui.require_rows(gate_runs(), NO_RUNS)
    last = runs.sort_values("time").groupby(["gate", "dataset"], as_index=False).last()
    cols = st.columns(max(1, last["gate"].nunique()))
    for column, (gate, group) in zip(cols, last.groupby("gate"), strict=False):
        failed = int((~group["success"].astype(bool)).sum())
        column.metric(
            f"gate {gate}",
            f"{len(group) - failed}/{len(group)} passed",
            f"{failed} failing" if failed else "all green",
            delta_color="inverse" if failed else "normal",
            delta_arrow="off",  # a count of failing datasets is not a rise or a fall
        )
    st.dataframe(last, hide_index=True, width="stretch")

with ui.section("Quarantine counts with reasons"):
    runs = ui.require_rows(gate_runs(), NO_RUNS)
    if "quarantined" not in runs:
        raise data.DataUnavailable("fct_data_quality_runs has no rows_quarantined column.")
    quarantined = runs[runs["quarantined"].fillna(0) > 0]
    if quarantined.empty:
        st.success("No rows quarantined in the recorded runs.")
    else:
        # One bar per dataset from its latest run: bars stacked over every recorded run added
        # the same rows up again at each run.
        latest = quarantined.sort_values("time").groupby(["gate", "dataset"], as_index=False).last()
        ui.chart(
            px.bar(
                latest,
                x="dataset",
                y="quarantined",
                color="gate",
                hover_data=[c for c in ("failed_expectations", "run_id", "time") if c in latest],
            ),
            "Rows quarantined per dataset in its latest gate run",
            height=320,
            key="quarantine",
        )
        reasons = [
            c for c in ("time", "gate", "dataset", "quarantined", "failed_expectations") if c in quarantined
        ]
        st.dataframe(quarantined[reasons], hide_index=True, width="stretch")
        st.caption("Inspect or re-admit rows with `lakehouse quarantine list|show|release`.")

with ui.section("Candle completeness per symbol and day"):
    completeness = data.table(
        snapshot,
        "completeness",
        ["symbol", "time", "completeness"],
        ("interval", "expected", "present"),
        market=chosen.market,
        symbols=chosen.symbols or None,
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(completeness)
    if "interval" in completeness:
        intervals = sorted(completeness["interval"].unique())
        interval = st.radio("Interval", intervals, horizontal=True, key="completeness_interval")
        completeness = completeness[completeness["interval"] == interval]
    matrix = completeness.pivot_table(index="symbol", columns="time", values="completeness")
    ui.chart(
        px.imshow(matrix, zmin=0, zmax=1, aspect="auto"),
        "Share of expected candles present",
        key="completeness",
    )
    gaps = completeness[completeness["completeness"] < 1]
    st.caption(f"{len(gaps)} symbol-days with missing candles in the range")
