"""The whole `lakehouse` flow on the offline default source, twice, in a temporary lake."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from flows.lake import current_snapshot, list_snapshots
from flows.query import run_query
from flows.report import raw_row_counts
from flows.settings import load_settings

HOURLY = "select * from fct_klines_hourly order by market, symbol, open_time"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prefect_harness):
    from flows.pipeline import lakehouse
    from flows.transform import take_worker as transform_take_worker

    root = tmp_path_factory.mktemp("e2e")
    settings = load_settings(
        lake_dir=root / "lake",
        gx_dir=root / "gx",
        symbols="BTCUSDT,ETHUSDT",
        start=date(2026, 10, 1),
        end=date(2026, 10, 4),
    )
    taken: list[bool] = []  # per build: whether it had to start dbt itself

    def take_worker(settings):
        worker, owned = transform_take_worker(settings)
        taken.append(owned)
        return worker, owned

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.transform.take_worker", take_worker)
        first = lakehouse(settings=settings)
        first_hourly = run_query(settings.lake_dir, HOURLY)
        first_raw = raw_row_counts(settings.lake_dir)
        second = lakehouse(settings=settings)
    first["dbt_started_by_build"], second["dbt_started_by_build"] = taken
    return settings, first, first_hourly, first_raw, second


def test_each_runs_build_uses_the_dbt_worker_its_run_started_beside_landing(two_runs):
    _, first, _, _, second = two_runs
    assert (first["dbt_started_by_build"], second["dbt_started_by_build"]) == (False, False)


def test_every_layer_has_rows_and_a_snapshot_is_published(two_runs):
    settings, first, _, first_raw, _ = two_runs

    assert first["landed"]["klines"] > 0
    assert first_raw["synthetic.klines"] > 0
    assert first["marts"]["fct_klines_hourly"] > 0
    assert first["marts"]["fct_klines_daily"] > 0
    assert all(row["success"] for row in first["mart_gate"])
    assert (settings.lake_dir / "marts" / first["snapshot_id"] / "fct_klines_hourly.parquet").is_file()


def test_hourly_mart_holds_every_symbol_hour(two_runs):
    settings, *_ = two_runs
    counts = run_query(
        settings.lake_dir, "select symbol, count(*) as n from fct_klines_hourly group by 1 order by 1"
    )
    assert counts.to_dict("records") == [{"symbol": "BTCUSDT", "n": 72}, {"symbol": "ETHUSDT", "n": 72}]


def test_second_run_leaves_counts_and_published_values_unchanged(two_runs):
    settings, first, first_hourly, first_raw, second = two_runs

    assert second["landed"] == first["landed"]
    assert raw_row_counts(settings.lake_dir) == first_raw
    history = "fct_data_quality_runs"  # one row per gate result: it grows with every run, by design
    assert {k: v for k, v in second["marts"].items() if k != history} == {
        k: v for k, v in first["marts"].items() if k != history
    }
    # Each snapshot's history holds the gate 2 run that passed it (added at publish); run 2's
    # build adds run 2's raw gate, and its publish run 2's mart gate.
    assert second["marts"][history] == (
        first["marts"][history] + len(second["raw_gate"]) + len(second["mart_gate"])
    )
    assert second["snapshot_id"] != first["snapshot_id"]
    assert current_snapshot(settings.lake_dir) == second["snapshot_id"]
    assert list_snapshots(settings.lake_dir) == sorted([first["snapshot_id"], second["snapshot_id"]])
    second_hourly = run_query(settings.lake_dir, HOURLY)
    # Lineage (when the inputs were ingested) moves with every run; every value must not.
    lineage = [c for c in first_hourly.columns if c.endswith(("ingested_at", "loaded_at"))]
    assert lineage, "the hourly mart should carry its lineage"
    # Float sums may differ in the last bits: the incremental rebuild sums in another order.
    pd.testing.assert_frame_equal(
        second_hourly.drop(columns=lineage), first_hourly.drop(columns=lineage), check_exact=False, rtol=1e-12
    )


def test_query_command_runs_sql_and_dbt_analyses_on_the_snapshot(two_runs, capsys):
    import json

    from flows.cli import main

    settings, *_ = two_runs
    lake = str(settings.lake_dir)

    assert (
        main(["query", "select count(*) as n from fct_klines_daily", "-f", "json", "--lake-dir", lake]) == 0
    )
    assert json.loads(capsys.readouterr().out) == [{"n": 6}]

    assert main(["query", "--analysis", "volume_per_symbol", "-f", "json", "--lake-dir", lake]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["symbol"] for r in rows) == ["BTCUSDT", "ETHUSDT"]

    assert main(["query", "drop view fct_klines_daily", "--lake-dir", lake]) == 1
    assert "query must be read-only SQL" in capsys.readouterr().err


def test_every_daily_analysis_runs_through_the_query_command_with_the_marts_numbers(two_runs, capsys):
    import json

    from flows.cli import main

    settings, *_ = two_runs
    lake = settings.lake_dir

    def analysis(name: str, *extra: str) -> list[dict]:
        assert main(["query", "--analysis", name, *extra, "-f", "json", "--lake-dir", str(lake)]) == 0
        return json.loads(capsys.readouterr().out)

    trend = analysis("price_trend", "--vars", "{symbol: ETHUSDT}")
    daily = run_query(lake, "select close from fct_klines_daily where symbol = 'ETHUSDT' order by open_time")
    assert [r["symbol"] for r in trend] == ["ETHUSDT"] * len(daily) and len(daily) == 3
    assert [r["close"] for r in trend] == daily["close"].tolist()
    assert {r["zone"] for r in trend} == {"warming up"}  # fewer than 20 days of history

    rates = analysis("trades_per_second")
    hourly = run_query(
        lake,
        "select symbol, avg(trades_per_second) as avg_tps, max(trades_per_second) as peak_tps "
        "from fct_order_flow_hourly group by symbol order by symbol",
    )
    assert [(r["symbol"], r["basis"]) for r in rates] == [
        ("BTCUSDT", "klines, all hours"),
        ("ETHUSDT", "klines, all hours"),
    ]  # no trade stream in this lake
    assert [r["avg_trades_per_second"] for r in rates] == pytest.approx(hourly["avg_tps"].tolist(), rel=1e-12)
    assert [r["peak_trades_per_second"] for r in rates] == hourly["peak_tps"].tolist()

    audit = analysis("raw_feed_audit")
    assert sorted((r["feed"], r["symbol"]) for r in audit) == [
        ("synthetic", "BTCUSDT"),
        ("synthetic", "ETHUSDT"),
    ]
    assert sum(r["raw_rows"] for r in audit) == raw_row_counts(lake)["synthetic.klines"]
    # Gate 1 let through no conflicting keys, no open candles and nothing off the minute grid.
    assert {
        (
            r["rows_with_duplicate_key"],
            r["close_time_mismatches"],
            r["off_grid_open_times"],
            r["future_candles"],
        )
        for r in audit
    } == {(0, 0, 0, 0)}

    assert analysis("trade_ingest_latency") == []  # no trades landed


def test_a_run_whose_marts_fail_gate_2_fails_and_leaves_the_published_snapshot_serving(two_runs):
    """Last in this module (it changes the shared lake): ETH's raw klines are lost and a full
    refresh of BTC alone halves the hourly mart; with at least 90% of the published rows
    required, gate 2 fails the flow, naming the row-count check, and the previous snapshot
    stays current, byte for byte, and answers queries."""
    import hashlib
    import shutil

    from flows.pipeline import lakehouse
    from flows.publish import GateFailed

    settings, *_ = two_runs
    lake = settings.lake_dir
    published = current_snapshot(lake)
    folder = lake / "marts" / published

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before, hourly_before = digests(), run_query(lake, HOURLY)
    shutil.rmtree(lake / "raw" / "synthetic" / "klines" / "symbol=ETHUSDT")
    narrower = settings.model_copy(update={"symbols": ["BTCUSDT"], "gate_min_row_ratio": 0.9})

    with pytest.raises(GateFailed) as failed:
        lakehouse(settings=narrower, full_refresh=True)

    message = str(failed.value)
    assert "gate 2" in message and "fct_klines_hourly" in message
    assert "expect_table_row_count_to_be_between" in message
    assert current_snapshot(lake) == published and list_snapshots(lake)[-1] == published
    assert digests() == before
    pd.testing.assert_frame_equal(run_query(lake, HOURLY), hourly_before)
