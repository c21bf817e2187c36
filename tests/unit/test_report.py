"""The run summary: rows per layer, gate verdicts, injected defects, timings and next steps."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from flows.lake import land_frame
from flows.report import print_run_summary, raw_row_counts


def gate_row(gate: str, dataset: str, accepted: int, quarantined: int, success: bool) -> dict:
    return {
        "gate": gate,
        "dataset": dataset,
        "rows_accepted": accepted,
        "rows_quarantined": quarantined,
        "rows_flagged": 2,
        "duplicates_collapsed": 1,
        "expectations_evaluated": 12,
        "expectations_failed": 0 if success else 3,
        "failed_expectations": "" if success else "a, b, c",
        "success": success,
    }


def test_raw_row_counts_reads_parquet_metadata_per_source_dataset(tmp_path):
    frame = pd.DataFrame(
        {"k": [1, 2, 3], "at": pd.to_datetime(["2026-10-01", "2026-10-01", "2026-10-02"], utc=True)}
    )
    land_frame(
        frame, tmp_path, source="synthetic", dataset="users", key_columns=["k"], date_column="at", zone="raw"
    )

    assert raw_row_counts(tmp_path) == {"synthetic.users": 3}


def test_summary_prints_layers_gates_defects_timings_and_next_steps(tmp_path):
    summary = {
        "lake_dir": str(tmp_path),
        "landed": {"klines": 100},
        "notes": {"defects": {"klines": {"invalid_candles": 4, "gaps": 2}}},
        "raw_gate": [gate_row("raw", "synthetic.klines", 96, 4, success=False)],
        "mart_gate": [gate_row("marts", "fct_klines_hourly", 2, 0, success=True)],
        "marts": {"fct_klines_hourly": 2},
        "snapshot_id": "20261122T000000000000Z",
        "seconds": {"ingest": 1.0, "build": 2.5},
    }
    console = Console(record=True, width=220)

    print_run_summary(summary, console=console)

    text = console.export_text()
    assert "landed (this run)      │ klines" in text
    assert "quarantined (this run) │ synthetic.klines" in text
    assert "3 checks failed: rows quarantined" in text
    assert "fct_klines_hourly │        2 │           0 │       2 │         1 │     12 │ pass" in text
    assert "invalid_candles │        4 │ gate 1 quarantine" in text
    assert "gaps            │        2 │ fct_candle_completeness" in text
    assert "│ total  │     3.5 │" in text
    assert "published snapshot 20261122T000000000000Z" in text
    assert '.venv/bin/lakehouse query "select count(*) from fct_klines_hourly"' in text


def test_gate_table_keeps_every_dataset_name_whole_in_an_80_column_terminal(tmp_path):
    summary = {
        "lake_dir": str(tmp_path),
        "landed": {"transactions": 100},
        "notes": {},
        "raw_gate": [gate_row("raw", "synthetic.transactions", 96, 4, success=False)],
        "mart_gate": [gate_row("marts", "fct_candle_completeness", 2, 0, success=True)],
        "marts": {"fct_candle_completeness": 2},
        "snapshot_id": "20261122T000000000000Z",
        "seconds": {"ingest": 1.0},
    }
    console = Console(record=True, width=80)

    print_run_summary(summary, console=console)

    gates = console.export_text().split("quality gates")[1]
    assert "synthetic.transactions" in gates and "fct_candle_completeness" in gates
    assert "…" not in gates


def test_landing_problems_are_one_line_each_whatever_shape_the_notes_take():
    from flows.report import landing_problems

    assert landing_problems(None) == ([], [])
    assert landing_problems({"errors": [], "warnings": [], "defects": {"klines": {"gaps": 2}}}) == ([], [])
    notes = {
        "errors": ["binance-NOPEUSDT-1h: no klines landed: Invalid symbol.\nsecond line"],
        "warnings": ["BTCUSDT 1m (spot): 2 malformed rows from Binance quarantined"],
        "inbox": {"done": ["a.zip"], "failed": ["b.csv: no timestamp column"], "waiting": []},
    }
    assert landing_problems(notes) == (
        ["binance-NOPEUSDT-1h: no klines landed: Invalid symbol.", "inbox file b.csv: no timestamp column"],
        ["BTCUSDT 1m (spot): 2 malformed rows from Binance quarantined"],
    )
    assert landing_problems({"errors": {"binance-NOPEUSDT-1h": "Invalid symbol."}}) == (
        ["binance-NOPEUSDT-1h: Invalid symbol."],
        [],
    )
    assert landing_problems({"errors": "ingest: timed out"}) == (["ingest: timed out"], [])
    assert landing_problems({"errors": [{"series": "NOPEUSDT 1h", "error": "Invalid symbol."}]}) == (
        ["series: NOPEUSDT 1h, error: Invalid symbol."],
        [],
    )


def test_a_run_that_published_nothing_new_says_why_instead_of_published(tmp_path):
    note = "publish: every mart equals the live snapshot 20261122T000000000000Z under x, so no new snapshot"
    summary = {
        "lake_dir": str(tmp_path),
        "landed": {},
        "notes": {},
        "raw_gate": [],
        "mart_gate": [],
        "marts": {"fct_klines_hourly": 2},
        "snapshot_id": "20261122T000000000000Z",
        "published": False,
        "publish_note": note,
        "seconds": {"ingest": 1.0},
    }
    console = Console(record=True, width=220)

    print_run_summary(summary, console=console)

    text = console.export_text()
    assert note in text
    assert "published snapshot" not in text
