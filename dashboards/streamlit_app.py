"""Dashboard router: builds the navigation from the pages under app_pages/."""

from pathlib import Path

import streamlit as st

from dashboards import data

PAGES = Path(__file__).parent / "app_pages"
# (file, title, icon); the order is the sidebar's.
PAGE_FILES = [
    ("overview.py", "Overview", ":material/dashboard:"),
    ("market.py", "Market", ":material/candlestick_chart:"),
    ("order_flow.py", "Order flow", ":material/swap_vert:"),
    ("volatility.py", "Volatility & correlation", ":material/ssid_chart:"),
    ("pairs.py", "Pairs", ":material/compare_arrows:"),
    ("users.py", "Users", ":material/group:"),
    ("transactions.py", "Transactions", ":material/receipt_long:"),
    ("network.py", "Network", ":material/hub:"),
    ("data_quality.py", "Data quality", ":material/verified:"),
    ("export.py", "Export", ":material/download:"),
]
REFRESH_SECONDS = 30

st.set_page_config(page_title="binance-lakehouse", page_icon=":chart_with_upwards_trend:", layout="wide")
pages = [
    st.Page(str(PAGES / name), title=title, icon=icon, default=i == 0)
    for i, (name, title, icon) in enumerate(PAGE_FILES)
]
navigation = st.navigation(pages)

seen = data.snapshot_id()
if st.sidebar.toggle(f"Auto-refresh ({REFRESH_SECONDS} s)", key="auto_refresh"):

    @st.fragment(run_every=REFRESH_SECONDS)
    def watch_snapshot() -> None:
        # Only a new publish reruns the page; cached reads of an unchanged snapshot stay put.
        if data.snapshot_id() != seen:
            st.rerun(scope="app")

    watch_snapshot()

navigation.run()
