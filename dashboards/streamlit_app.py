"""Dashboard router: builds the navigation from the pages under app_pages/."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="binance-lakehouse", page_icon=":chart_with_upwards_trend:", layout="wide")
navigation = st.navigation([st.Page(str(PAGES / "overview.py"), title="Overview", default=True)])
navigation.run()
