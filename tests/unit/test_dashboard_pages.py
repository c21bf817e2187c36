"""Every dashboard page under AppTest, on small snapshots written by the test itself."""

from __future__ import annotations

import base64
import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.components.v2.component_manager import BidiComponentManager
from streamlit.testing.v1 import AppTest

from dashboards import data, sample_snapshot, ui
from flows.lake import snapshot_path, swap_current

APP = Path(data.__file__).parent
PAGES = APP / "app_pages"
SNAPSHOT = "20261031T000000000000Z"
# Charts each page draws on the sample snapshot with the default filters.
CHARTS = {
    "overview": 1,
    "market": 4,
    "order_flow": 5,
    "volatility": 4,
    "pairs": 4,
    "users": 6,
    "transactions": 8,
    "network": 3,
    "data_quality": 2,
    "export": 0,
}


@pytest.fixture(autouse=True)
def no_component_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each new AppTest scans the metadata of every installed package for custom components
    # (about a second each); these pages use none, so the scan is skipped to keep the file fast.
    monkeypatch.setattr(BidiComponentManager, "discover_and_register_components", lambda *a, **k: None)


@pytest.fixture(scope="module")
def marts() -> dict[str, pd.DataFrame]:
    return sample_snapshot.build_marts()


@pytest.fixture
def published(lake_dir: Path, marts: dict[str, pd.DataFrame]) -> Path:
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=marts)
    return lake_dir


def run_page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60).run()


def chart_specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def values(encoded: dict | list) -> list:
    """Plotly sends numeric arrays as base64 typed arrays; decode them back to a list."""
    if isinstance(encoded, list):
        return encoded
    return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]).tolist()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


@pytest.mark.parametrize("page", list(CHARTS))
def test_page_renders_its_charts_without_exception(published: Path, page: str) -> None:
    app = run_page(page)
    assert not app.exception, texts(app.exception)
    specs = chart_specs(app)
    assert len(specs) == CHARTS[page]
    # Every chart uses the one Binance-yellow template.
    for spec in specs:
        assert spec["layout"]["template"]["layout"]["colorway"][0] == "#F0B90B"
        assert spec["layout"]["template"]["layout"]["paper_bgcolor"] == "#0B0E11"
    assert app.caption[0].value == f"snapshot {SNAPSHOT}"


@pytest.mark.parametrize("page", list(CHARTS))
def test_page_without_snapshot_shows_the_command_to_run(lake_dir: Path, page: str) -> None:
    app = run_page(page)
    assert not app.exception, texts(app.exception)
    assert texts(app.info) == [ui.NO_SNAPSHOT]
    assert "`make run`" in ui.NO_SNAPSHOT
    assert not app.get("plotly_chart")


def test_router_opens_overview_and_switches_to_every_page(published: Path) -> None:
    app = AppTest.from_file(str(APP / "streamlit_app.py"), default_timeout=60).run()
    assert not app.exception, texts(app.exception)
    assert texts(app.title) == ["Overview"]
    app.switch_page("app_pages/pairs.py").run()
    assert not app.exception, texts(app.exception)
    assert texts(app.title) == ["Pairs"]


def test_auto_refresh_toggle_runs_and_the_next_run_shows_a_new_publish(published: Path, marts) -> None:
    app = AppTest.from_file(str(APP / "streamlit_app.py"), default_timeout=60).run()
    app.toggle(key="auto_refresh").set_value(True).run()
    assert not app.exception, texts(app.exception)
    sample_snapshot.write_snapshot(published, "20261101T000000000000Z", marts=marts)
    app.run()
    assert not app.exception, texts(app.exception)
    assert app.caption[0].value == "snapshot 20261101T000000000000Z"


def test_missing_mart_shows_guidance_and_the_rest_of_the_page(
    lake_dir: Path, marts: dict[str, pd.DataFrame]
) -> None:
    partial = {k: v for k, v in marts.items() if k != "fct_gas_price_decomposition"}
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=partial)
    app = run_page("network")
    assert not app.exception, texts(app.exception)
    assert texts(app.info) == [
        f"mart `fct_gas_price_decomposition` is not in snapshot {SNAPSHOT}; {data.RUN_HINT}"
    ]
    assert len(chart_specs(app)) == 2  # gas price and chain metrics still render


def test_missing_column_names_the_column_and_the_command(
    lake_dir: Path, marts: dict[str, pd.DataFrame]
) -> None:
    changed = dict(marts, fct_pairs_hourly=marts["fct_pairs_hourly"].drop(columns="spread_zscore"))
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=changed)
    app = run_page("pairs")
    assert not app.exception, texts(app.exception)
    assert texts(app.info)[0] == (
        f"mart `fct_pairs_hourly` in snapshot {SNAPSHOT} has no column spread_zscore; "
        f"rebuild it: {data.RUN_HINT}"
    )
    assert not app.error  # no z-score column, so no z-score alert either


def test_empty_mart_shows_the_empty_filter_message(lake_dir: Path, marts: dict[str, pd.DataFrame]) -> None:
    changed = dict(marts, fct_order_flow_hourly=marts["fct_order_flow_hourly"].head(0))
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=changed)
    app = run_page("order_flow")
    assert not app.exception, texts(app.exception)
    assert texts(app.info)[:2] == [ui.EMPTY, ui.EMPTY]
    assert len(chart_specs(app)) == 1  # only the trade-stream latency chart


def test_window_filter_changes_the_moving_average(published: Path, marts) -> None:
    app = run_page("market")
    assert [m.label for m in app.metric][:2] == ["close", "MA 20"]
    hourly = marts["fct_klines_hourly"]
    btc = hourly[
        (hourly["symbol"] == "BTCUSDT") & (hourly["open_time"] >= pd.Timestamp("2026-10-01", tz="UTC"))
    ]
    assert app.metric[1].value == f"{btc['close'].tail(20).mean():,.2f}"
    app.slider(key="f_window").set_value(50).run()
    assert not app.exception
    assert app.metric[1].label == "MA 50"
    assert app.metric[1].value == f"{btc['close'].tail(50).mean():,.2f}"


def test_symbol_filter_changes_the_series_shown(published: Path) -> None:
    app = run_page("order_flow")
    names = {t["name"] for t in chart_specs(app)[0]["data"]}
    assert names == {"BTCUSDT", "ETHUSDT"}
    app.multiselect(key="f_symbols").set_value(["BNBUSDT"]).run()
    assert {t["name"] for t in chart_specs(app)[0]["data"]} == {"BNBUSDT"}
    app.multiselect(key="f_symbols").set_value([]).run()
    assert not app.exception
    assert "Pick at least 1 symbol in the sidebar." in texts(app.info)


def test_interval_and_dates_filter_the_candles(published: Path) -> None:
    app = run_page("market")
    candles = chart_specs(app)[0]["data"][0]
    assert candles["type"] == "candlestick"
    assert len(candles["x"]) == 30 * 24
    app.radio(key="f_interval").set_value("1d").run()
    app.date_input(key="f_dates").set_value((date(2026, 10, 3), date(2026, 10, 7))).run()
    assert not app.exception, texts(app.exception)
    candles = chart_specs(app)[0]["data"][0]
    assert [x[:10] for x in candles["x"]] == [f"2026-10-0{d}" for d in range(3, 8)]


def test_correlation_heatmap_needs_two_symbols(published: Path) -> None:
    app = run_page("volatility")
    heatmap = next(s for s in chart_specs(app) if s["data"][0]["type"] == "heatmap")
    assert heatmap["data"][0]["x"] == ["BTCUSDT", "ETHUSDT"]
    app.multiselect(key="f_symbols").set_value(["ETHUSDT"]).run()
    assert not app.exception
    assert texts(app.info).count("Pick at least 2 symbols in the sidebar.") == 2


def test_zscore_alert_is_shown_first_and_follows_the_threshold(published: Path) -> None:
    app = run_page("pairs")
    assert len(app.error) == 1
    assert app.error[0].value.startswith("z-score alert: BTCUSDT/ETHUSDT spread z-score +3.10 (|z| >= 2)")
    assert [app.main[0].type, app.main[1].type] == ["title", "error"]  # right under the title
    app.number_input(key="f_z").set_value(3.5).run()
    assert not app.error


def test_spread_and_price_alerts(published: Path, marts) -> None:
    app = run_page("overview")
    app.number_input(key="f_spread").set_value(0.0001).run()
    app.number_input(key="f_above").set_value(1.0).run()
    warnings = texts(app.warning)
    hourly = marts["fct_klines_hourly"]
    close = hourly[hourly["symbol"] == "BTCUSDT"]["close"].iloc[-1]
    assert f"price alert: BTCUSDT closed at {close:,.2f}, above 1.00" in warnings
    assert sum(w.startswith("spread alert: ") for w in warnings) == 3  # every pair's spread


def test_publish_while_open_shows_the_new_snapshot(published: Path, marts) -> None:
    app = run_page("market")
    newer = "20261101T000000000000Z"
    sample_snapshot.write_snapshot(published, newer, marts=marts)
    # The old snapshot is pruned while the page is open.
    for path in snapshot_path(published, SNAPSHOT).iterdir():
        path.unlink()
    snapshot_path(published, SNAPSHOT).rmdir()
    app.run()
    assert not app.exception, texts(app.exception)
    assert app.caption[0].value == f"snapshot {newer}"
    assert len(chart_specs(app)) == CHARTS["market"]


def test_export_counts_and_encodes_the_filtered_rows(published: Path, marts) -> None:
    app = run_page("export")
    app.selectbox(key="export_mart").set_value("fct_klines_daily").run()
    app.date_input(key="export_dates_fct_klines_daily").set_value(
        (date(2026, 10, 2), date(2026, 10, 4))
    ).run()
    assert not app.exception, texts(app.exception)
    assert app.get("download_button")[0].proto.label == "Download 6 rows as CSV"
    app.radio(key="export_format").set_value("parquet").run()
    assert app.get("download_button")[0].proto.label == "Download 6 rows as parquet"

    args = (SNAPSHOT, "fct_klines_daily", "spot", ("BTCUSDT", "ETHUSDT"))
    frame = data.export_frame(*args, date(2026, 10, 2), date(2026, 10, 4))
    daily = marts["fct_klines_daily"]
    expected = daily[
        daily["symbol"].isin(["BTCUSDT", "ETHUSDT"])
        & daily["open_time"].dt.strftime("%Y-%m-%d").between("2026-10-02", "2026-10-04")
    ]
    assert sorted(zip(frame["symbol"], frame["close"], strict=True)) == sorted(
        zip(expected["symbol"], expected["close"], strict=True)
    )
    from_csv = pd.read_csv(io.BytesIO(data.encode(frame, "CSV")))
    assert list(from_csv.columns) == list(daily.columns)
    assert from_csv["close"].tolist() == frame["close"].tolist()
    from_json = json.loads(data.encode(frame, "JSON"))
    assert [r["symbol"] for r in from_json] == frame["symbol"].tolist()
    assert [r["close"] for r in from_json] == frame["close"].tolist()  # exact, as in the CSV
    from_parquet = pd.read_parquet(io.BytesIO(data.encode(frame, "parquet")))
    pd.testing.assert_frame_equal(from_parquet, frame)


def test_export_refuses_a_mart_outside_the_snapshot(published: Path) -> None:
    with pytest.raises(data.DataUnavailable, match="is not in snapshot"):
        data.export_frame(SNAPSHOT, 'dim_users"; drop table x; --', None, None, None, None)


def test_data_quality_links_to_both_docs_and_lists_quarantine(
    published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = run_page("data_quality")
    links = [(b.proto.label, b.proto.url) for b in app.get("link_button")]
    assert links == [
        ("Great Expectations Data Docs", "http://127.0.0.1:8081/index.html"),
        ("dbt docs (lineage)", "http://127.0.0.1:8080"),
    ]
    quarantine = chart_specs(app)[0]["data"][0]
    assert list(quarantine["x"]) == ["klines"] and values(quarantine["y"]) == [120]
    monkeypatch.setenv("LAKEHOUSE_DBT_DOCS_URL", "http://127.0.0.1:9999")
    app = run_page("data_quality")
    assert app.get("link_button")[1].proto.url == "http://127.0.0.1:9999"


def test_marts_with_other_column_names_are_resolved(lake_dir: Path, marts: dict[str, pd.DataFrame]) -> None:
    renamed = dict(
        marts,
        fct_order_flow_hourly=marts["fct_order_flow_hourly"].rename(
            columns={"cvd_running": "cumulative_volume_delta"}
        ),
    )
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=renamed)
    app = run_page("order_flow")
    assert not app.exception and len(chart_specs(app)) == CHARTS["order_flow"]


def test_swap_current_alone_switches_what_pages_read(published: Path, marts) -> None:
    changed = dict(marts, dim_symbols=marts["dim_symbols"].head(1))
    sample_snapshot.write_snapshot(published, "20261102T000000000000Z", marts=changed, publish=False)
    app = run_page("export")
    assert app.get("download_button")[0].proto.label == "Download 2 rows as CSV"
    swap_current(published, "20261102T000000000000Z")
    app.run()
    assert app.get("download_button")[0].proto.label == "Download 1 rows as CSV"


def test_quarantine_chart_shows_each_datasets_latest_run_not_the_sum_of_runs(lake_dir: Path, marts) -> None:
    """Two raw runs that each quarantined the same klines: the bar shows the latest run's 150,
    not 120 + 150 (the table below still lists both runs)."""
    runs = marts["fct_data_quality_runs"]
    again = runs.iloc[[0]].assign(
        run_id="r3", validated_at=runs["validated_at"].max() + pd.Timedelta(hours=1), rows_quarantined=150
    )
    changed = {**marts, "fct_data_quality_runs": pd.concat([runs, again], ignore_index=True)}
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=changed)
    app = run_page("data_quality")
    assert not app.exception, texts(app.exception)
    [bar] = [spec for spec in chart_specs(app) if spec["data"][0]["type"] == "bar"]
    assert [(trace["x"], values(trace["y"])) for trace in bar["data"]] == [(["klines"], [150])]


def test_overview_as_of_is_the_newest_data_not_the_gate_run(lake_dir: Path, marts) -> None:
    """The quality runs' time is when the gates ran (here a week after the data): it must not set
    the data's as-of time, or every feed looks a week behind."""
    runs = marts["fct_data_quality_runs"]
    later = runs.assign(validated_at=runs["validated_at"] + pd.Timedelta(days=7))
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts={**marts, "fct_data_quality_runs": later})
    feeds = data.freshness(SNAPSHOT).set_index("feed")["latest"]
    newest = feeds.drop("quality runs").max()
    assert feeds["quality runs"] > newest
    app = run_page("overview")
    assert not app.exception, texts(app.exception)
    assert f"**Data as of {newest:%Y-%m-%d %H:%M} UTC**" in texts(app.markdown)


def test_transactions_page_colours_each_type_alike_and_leaves_outliers_out_of_the_scatter(
    lake_dir: Path, marts
) -> None:
    tx = marts["fct_transactions"]
    outlier = tx.iloc[[0]].assign(tx_id="tx9999999", amount_usd=5.4e18)
    flagged = pd.concat(
        [tx.assign(is_amount_outlier=False), outlier.assign(is_amount_outlier=True)], ignore_index=True
    )
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts={**marts, "fct_transactions": flagged})
    app = run_page("transactions")
    assert not app.exception, texts(app.exception)
    specs = {spec["layout"]["title"]["text"]: spec for spec in chart_specs(app)}
    colours = []
    for title in ("Volume (USD) per day by type", "Volume (USD) by token", "Fee vs amount (USD, sample)"):
        colours.append({trace["name"]: trace["marker"]["color"] for trace in specs[title]["data"]})
    pie = specs["Transactions by type"]["data"][0]
    colours.append(dict(zip(pie["labels"], pie["marker"]["colors"], strict=True)))
    assert len(colours[0]) > 1 and all(c == colours[0] for c in colours[1:]), colours
    # The scatter's rows: every transaction but the flagged one (a sample larger than the mart).
    scatter = data.fee_vs_amount(SNAPSHOT, None, None, sample=10 * len(flagged))
    assert len(scatter) == len(tx) and scatter["amount_usd"].max() < 5.4e18


def test_every_filter_keeps_its_value_across_page_switches(published: Path) -> None:
    """Slider and number inputs took their minimum on the next page (MA 5, |z| >= 0.5 alerts)."""
    app = AppTest.from_file(str(APP / "streamlit_app.py"), default_timeout=60).run()
    app.switch_page("app_pages/market.py").run()
    app.slider(key="f_window").set_value(50).run()
    app.number_input(key="f_z").set_value(3.0).run()
    app.number_input(key="f_spread").set_value(0.05).run()
    for page in ("app_pages/pairs.py", "app_pages/overview.py", "app_pages/market.py"):
        app.switch_page(page).run()
        assert not app.exception, texts(app.exception)
        assert app.slider(key="f_window").value == 50, page
        assert (app.number_input(key="f_z").value, app.number_input(key="f_spread").value) == (3.0, 0.05), (
            page
        )
    assert app.metric[1].label == "MA 50"


def test_overview_headline_shows_the_close_of_a_series_with_one_day(
    lake_dir: Path, marts: dict[str, pd.DataFrame]
) -> None:
    """A first day has no 1-day change: the close shows without one (the headline was empty)."""
    daily = marts["fct_klines_daily"]
    first = daily[daily["open_time"] == daily["open_time"].min()]
    assert first["simple_return"].isna().all()
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=dict(marts, fct_klines_daily=first))
    app = run_page("overview")
    assert not app.exception, texts(app.exception)
    btc = first[first["symbol"] == "BTCUSDT"].iloc[0]
    headline = {m.label: (m.value, m.delta) for m in app.metric}
    assert headline["BTCUSDT close"] == (f"{btc['close']:,.2f}", "")  # no delta


def test_a_wick_spike_moves_neither_resistance_nor_the_price_axis(
    lake_dir: Path, marts: dict[str, pd.DataFrame]
) -> None:
    """Gate 1 flags and keeps wick spikes: resistance was a 20x high and the axis flattened the candles."""
    hourly = marts["fct_klines_hourly"].copy()
    btc = hourly.index[hourly["symbol"] == "BTCUSDT"]
    spike = btc[-3]
    hourly.loc[spike, "high"] = hourly.loc[spike, "close"] * 20
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=dict(marts, fct_klines_hourly=hourly))
    app = run_page("market")
    assert not app.exception, texts(app.exception)
    closes = hourly.loc[btc, "close"].tail(20)
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["support"], metrics["resistance"]) == (f"{closes.min():,.2f}", f"{closes.max():,.2f}")
    candles = chart_specs(app)[0]
    low, high = candles["layout"]["yaxis"]["range"]
    assert high < hourly.loc[spike, "high"] / 5 and low > 0
    assert any(c.value.startswith("1 candle(s) have a wick beyond this price range") for c in app.caption)


def test_freshness_counts_an_hourly_row_up_to_the_end_of_its_hour(published: Path, marts) -> None:
    """The 23:00 candle covers up to 23:59:59.999: klines were shown an hour behind."""
    feeds = data.freshness(SNAPSHOT).set_index("feed")["latest"]
    newest_hour = marts["fct_klines_hourly"]["open_time"].max().tz_convert(None)
    assert feeds["klines"] == newest_hour + pd.Timedelta(hours=1) - pd.Timedelta(milliseconds=1)
    newest_tx = marts["fct_transactions"]["occurred_at"].max().tz_convert(None)
    assert abs(feeds["transactions"] - newest_tx) < pd.Timedelta(microseconds=1)


def test_tiny_p_values_show_in_scientific_notation_and_fee_free_transactions_are_counted(
    published: Path, marts
) -> None:
    pairs = run_page("pairs")
    assert not pairs.exception, texts(pairs.exception)
    [adf] = [frame for frame in pairs.dataframe if "p_value" in frame.value.columns]
    assert json.loads(adf.proto.columns)["p_value"]["type_config"]["format"] == "%.2e"
    tx = marts["fct_transactions"]
    sample_snapshot.write_snapshot(
        published, "20261101T000000000000Z", marts={**marts, "fct_transactions": tx.assign(fee_usd=0.0)}
    )
    app = run_page("transactions")
    assert not app.exception, texts(app.exception)
    assert any(
        c.value.endswith("sampled transactions without a fee are not drawn (a log axis has no 0).")
        for c in app.caption
    )


def test_empty_states_say_what_to_do_on_pages_without_symbols_or_streamed_trades(
    lake_dir: Path, marts: dict[str, pd.DataFrame]
) -> None:
    trades = [name for name in marts if name in data.MARTS["trades"]]
    assert trades
    emptied = {**marts, **{name: marts[name].head(0) for name in trades}}
    emptied["fct_gas_price_decomposition"] = marts["fct_gas_price_decomposition"].head(0)
    sample_snapshot.write_snapshot(lake_dir, SNAPSHOT, marts=emptied)
    flow = run_page("order_flow")
    assert not flow.exception, texts(flow.exception)
    assert any(
        t.startswith("No trade stream marts yet. Start one with `lakehouse stream") for t in texts(flow.info)
    )
    network = run_page("network")
    assert not network.exception, texts(network.exception)
    assert any(
        t.startswith("No decomposition in this date range: STL needs at least 2 days")
        for t in texts(network.info)
    )
    assert ui.EMPTY not in texts(network.info)


def test_export_says_all_symbols_when_none_is_picked(published: Path) -> None:
    app = run_page("export")
    app.selectbox(key="export_mart").set_value("fct_klines_hourly").run()
    app.multiselect(key="f_symbols").set_value([]).run()
    assert not app.exception, texts(app.exception)
    [caption] = [c.value for c in app.caption if c.value.startswith("filters applied:")]
    assert "symbols = (all)" in caption


def test_cvd_starts_at_the_range_start_on_one_axis_per_symbol(published: Path, marts) -> None:
    app = run_page("order_flow")
    assert not app.exception, texts(app.exception)
    cvd = chart_specs(app)[0]
    flow = marts["fct_order_flow_hourly"]
    start = pd.Timestamp(app.date_input(key="f_dates").value[0], tz="UTC")
    for trace in cvd["data"]:
        rows = flow[(flow["symbol"] == trace["name"]) & (flow["open_time"] >= start)].sort_values("open_time")
        assert values(trace["y"])[0] == pytest.approx(rows["volume_delta"].iloc[0])
        assert values(trace["y"])[-1] == pytest.approx(rows["volume_delta"].sum())
    axes = [key for key in cvd["layout"] if key.startswith("yaxis")]
    assert len(axes) == len(cvd["data"]) == 2
    assert all(cvd["layout"][axis].get("matches") is None for axis in axes)


def test_return_and_volatility_axes_read_as_percentages(published: Path) -> None:
    for page, titles in (
        ("market", {"Cumulative return"}),
        ("volatility", {"Annualised volatility over 20 1h periods"}),
    ):
        app = run_page(page)
        assert not app.exception, texts(app.exception)
        specs = {spec["layout"]["title"]["text"]: spec for spec in chart_specs(app)}
        for title in titles:
            assert specs[title]["layout"]["yaxis"]["tickformat"] == ".0%", (page, title)
    assert app.number_input(key="f_spread").step == 0.01


def test_rolling_windows_read_before_the_range_and_are_null_until_full(published: Path, marts) -> None:
    """A window of fewer periods was labelled MA 20 (at the range start, an average of 1 close)."""
    hourly = marts["fct_klines_hourly"]
    btc = hourly[hourly["symbol"] == "BTCUSDT"].sort_values("open_time").reset_index(drop=True)
    first_day = btc["open_time"].min().date()
    later = first_day + pd.Timedelta(days=3)
    candles = data.klines_with_levels(SNAPSHOT, "1h", "spot", "BTCUSDT", later, later, 20)
    at = btc.index[btc["open_time"] == pd.Timestamp(later, tz="UTC")][0]
    assert candles["moving_average"].iloc[0] == pytest.approx(btc["close"].iloc[at - 19 : at + 1].mean())
    assert candles["resistance"].iloc[0] == pytest.approx(btc["close"].iloc[at - 19 : at + 1].max())
    from_start = data.klines_with_levels(SNAPSHOT, "1h", "spot", "BTCUSDT", first_day, later, 20)
    assert from_start["moving_average"].isna().tolist()[:20] == [True] * 19 + [False]
    returns = data.returns(SNAPSHOT, "1h", "spot", ("BTCUSDT",), later, later, 20)
    assert returns["cumulative_return"].iloc[0] == 0
    assert returns["simple_return"].iloc[0] == pytest.approx(
        btc["close"].iloc[at] / btc["close"].iloc[at - 1] - 1
    )
    assert returns["rolling_volatility"].notna().all()
    returns = data.returns(SNAPSHOT, "1h", "spot", ("BTCUSDT",), first_day, later, 20)
    assert returns["rolling_volatility"].isna().tolist()[:21] == [True] * 20 + [False]


def test_market_metrics_say_n_a_while_the_window_is_not_full(published: Path, marts) -> None:
    first_day = marts["fct_klines_hourly"]["open_time"].min().date()
    app = run_page("market")
    app.date_input(key="f_dates").set_value((first_day, first_day)).run()
    app.slider(key="f_window").set_value(50).run()  # 24 hours in the data: never full
    assert not app.exception, texts(app.exception)
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["MA 50"], metrics["support"], metrics["resistance"]) == ("n/a", "n/a", "n/a")


def test_export_picks_dates_from_each_marts_own_span(published: Path, marts) -> None:
    """One range for every mart exported 600 of 5,000 users and no quality run at all."""
    app = run_page("export")
    for mart, column in (("dim_users", "registered_at"), ("fct_data_quality_runs", "validated_at")):
        app.selectbox(key="export_mart").set_value(mart).run()
        assert not app.exception, texts(app.exception)
        values = pd.to_datetime(marts[mart][column], utc=True)
        first, last = values.min().date(), values.max().date()
        assert app.date_input(key=f"export_dates_{mart}").value == (first, last)
        assert app.get("download_button")[0].proto.label == f"Download {len(marts[mart]):,} rows as CSV"
