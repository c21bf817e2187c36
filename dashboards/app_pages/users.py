"""Users: registrations and activity over time, segments, country and device, balances."""

import plotly.express as px
import streamlit as st

from dashboards import data, ui

snapshot, chosen = ui.start_page("Users", symbols=False)

with ui.section("Registrations over time"):
    registrations = data.table(snapshot, "registrations", ["time", "registrations"])
    ui.require_rows(registrations, "No registrations in this snapshot; run `make run`.")
    registrations["cumulative"] = registrations["registrations"].cumsum()
    st.metric("registered users", f"{int(registrations['cumulative'].iloc[-1]):,}")
    ui.chart(
        px.bar(registrations, x="time", y="registrations"),
        "New users per day (whole history)",
        key="registrations",
    )

with ui.section("Activity over time"):
    activity = data.table(
        snapshot,
        "activity",
        ["time", "active_users"],
        ("transactions",),
        start=chosen.start,
        end=chosen.end,
    )
    ui.require_rows(activity)
    ui.chart(
        px.line(activity, x="time", y=[c for c in ("active_users", "transactions") if c in activity]),
        "Daily active users and transactions",
        key="activity",
    )

left, right = st.columns(2)
with left, ui.section("Segments"):
    segments = data.grouped_counts(snapshot, "users", "segment")
    ui.chart(px.bar(segments, x="segment", y="users"), "Users per segment", key="segments")
with right, ui.section("Balance distribution"):
    if data.has(snapshot, "balance_buckets"):
        buckets = data.table(snapshot, "balance_buckets", ["bucket", "users"], ("order",), order=("order",))
    else:
        buckets = data.balance_histogram(snapshot)
    ui.require_rows(buckets, "No balances in this snapshot; run `make run`.")
    ui.chart(px.bar(buckets, x="bucket", y="users"), "Users per balance bucket", key="balances")

left, right = st.columns(2)
with left, ui.section("Users by country"):
    if data.has(snapshot, "users_by_country"):
        countries = data.table(snapshot, "users_by_country", ["country", "users"], order=())
    else:
        countries = data.grouped_counts(snapshot, "users", "country")
    countries = countries.sort_values("users", ascending=False)
    ui.chart(px.bar(countries, x="country", y="users"), "Users by country", key="countries")
with right, ui.section("Users by device"):
    if data.has(snapshot, "users_by_device"):
        devices = data.table(snapshot, "users_by_device", ["device", "users"], order=())
    else:
        devices = data.grouped_counts(snapshot, "users", "device")
    ui.chart(px.pie(devices, names="device", values="users", hole=0.5), "Users by device", key="devices")
