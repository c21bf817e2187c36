"""Every dashboard page over a snapshot the real pipeline built and published."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from streamlit.components.v2.component_manager import BidiComponentManager
from streamlit.testing.v1 import AppTest

from flows.lake import current_snapshot
from flows.settings import load_settings

PAGES = Path(__file__).parents[2] / "dashboards" / "app_pages"
# Charts each page draws on three days of the offline default source; the trade stream does not
# run in `lakehouse run`, so order flow shows its guidance instead of the latency chart.
CHARTS = {
    "overview": 1,
    "market": 4,
    "order_flow": 4,
    "volatility": 4,
    "pairs": 4,
    "users": 6,
    "transactions": 8,
    "network": 3,
    "data_quality": 2,
    "export": 0,
}


@pytest.fixture(scope="module")
def published_lake(tmp_path_factory, prefect_harness) -> Path:
    from flows.pipeline import lakehouse

    root = tmp_path_factory.mktemp("dashboard")
    settings = load_settings(
        lake_dir=root / "lake",
        gx_dir=root / "gx",
        symbols="BTCUSDT,ETHUSDT,BNBUSDT",
        start=date(2026, 10, 1),
        end=date(2026, 10, 8),
    )
    lakehouse(settings=settings)
    assert current_snapshot(settings.lake_dir) is not None
    return settings.lake_dir


@pytest.mark.parametrize("page", list(CHARTS))
def test_page_renders_on_pipeline_marts(
    published_lake: Path, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", str(published_lake))
    # The pages use no custom components: skip AppTest's scan of every installed package.
    monkeypatch.setattr(BidiComponentManager, "discover_and_register_components", lambda *a, **k: None)
    app = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("plotly_chart")) == CHARTS[page]
    if page == "order_flow":
        # The trade marts are built, and empty: the page says how to start a stream.
        [info] = [i.value for i in app.info]
        assert info.startswith("No trade stream marts yet. Start one with `lakehouse stream")
    else:
        assert not app.info, [i.value for i in app.info]


def test_charts_read_the_marts_as_their_titles_say(
    published_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Average fee per token divides the fees of completed, non-outlier transactions by their
    count (not by every transaction); the top traders and ADF charts have category axes (Plotly
    turned user ids and "1%" labels into numbers and dropped the ADF statistic's bar)."""
    import json

    import duckdb

    from dashboards import data

    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", str(published_lake))
    snapshot = current_snapshot(published_lake)
    marts = published_lake / "marts" / snapshot
    fees = data.token_fees(snapshot, None, None).set_index("token")["avg_fee_usd"]
    expected = duckdb.sql(
        f"select token_symbol, avg(fee_usd) from '{marts / 'fct_transactions.parquet'}' "
        "where is_completed and is_amount_outlier is not true group by 1"
    ).fetchall()
    assert len(expected) > 1
    for token, average in expected:
        assert fees[token] == pytest.approx(average, rel=1e-9), token

    monkeypatch.setattr(BidiComponentManager, "discover_and_register_components", lambda *a, **k: None)
    for page, key in (("transactions", "traders"), ("pairs", "adf")):
        app = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120).run()
        assert not app.exception
        [chart] = [c for c in app.get("plotly_chart") if f'"{key}"' in c.proto.id or key in c.proto.id]
        figure = json.loads(chart.proto.spec)
        axis = figure["layout"]["yaxis" if key == "traders" else "xaxis"]
        assert axis["type"] == "category", axis
        if key == "adf":
            assert figure["data"][0]["x"] == ["ADF statistic", "1% critical", "5% critical", "10% critical"]
        else:
            assert all(label.startswith("user ") for label in figure["data"][0]["y"])
