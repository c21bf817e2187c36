"""Overview: which snapshot is live and what it holds."""

import plotly.graph_objects as go
import streamlit as st

from dashboards import data

st.title("binance-lakehouse")
snapshot = data.snapshot_id()
if snapshot is None:
    st.info("No published marts yet. Run `make run` (or `lakehouse run`) to build and publish them.")
    st.stop()

st.caption(f"published snapshot {snapshot}")
st.dataframe(data.daily_summary(snapshot), hide_index=True)
symbol = st.selectbox("symbol", data.symbols(snapshot))
klines = data.hourly_klines(snapshot, symbol)
figure = go.Figure(
    go.Candlestick(
        x=klines["open_time"],
        open=klines["open"],
        high=klines["high"],
        low=klines["low"],
        close=klines["close"],
        name=symbol,
    )
)
st.plotly_chart(figure, use_container_width=True)
