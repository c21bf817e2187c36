"""The run summary printed at the end of `lakehouse run`: rows per layer, gates, timings, next steps."""

from __future__ import annotations

from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

NEXT_STEPS = [
    ("Prefect UI with this run's history", "make serve"),
    ("dbt docs and lineage", "make docs"),
    ("data-quality report (Data Docs)", "make dq-report"),
    ("marts dashboard", "make dashboard"),
    ("query the marts", '.venv/bin/lakehouse query "select count(*) from fct_klines_hourly"'),
]


def raw_row_counts(lake_dir: Path) -> dict[str, int]:
    """Rows per source.dataset in the accepted raw lake (parquet metadata only, no scan)."""
    counts: dict[str, int] = {}
    raw = Path(lake_dir) / "raw"
    with duckdb.connect() as con:
        for dataset_dir in sorted(p for p in raw.glob("*/*") if p.is_dir()):
            glob = str(dataset_dir / "**" / "*.parquet")
            if not any(dataset_dir.rglob("*.parquet")):
                continue
            (n,) = con.execute(
                "select coalesce(sum(num_rows), 0) from parquet_file_metadata(?)", [glob]
            ).fetchone()
            counts[f"{dataset_dir.parent.name}.{dataset_dir.name}"] = int(n)
    return counts


def print_run_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    rows = Table(title="rows per layer and dataset")
    for column in ("layer", "dataset", "rows"):
        rows.add_column(column, justify="right" if column == "rows" else "left")
    for dataset, n in sorted(summary["landed"].items()):
        rows.add_row("landed", dataset, f"{n:,}")
    for dataset, n in sorted(raw_row_counts(Path(summary["lake_dir"])).items()):
        rows.add_row("raw (all runs)", dataset, f"{n:,}")
    for mart, n in sorted(summary["marts"].items()):
        rows.add_row("marts", mart, f"{n:,}")
    console.print(rows)

    gates = Table(title="quality gates")
    for column in ("gate", "dataset", "accepted", "quarantined", "checks", "result"):
        gates.add_column(column)
    for row in summary["raw_gate"] + summary["mart_gate"]:
        verdict = "pass" if row["success"] else f"fail: {row['failed_expectations']}"
        gates.add_row(
            row["gate"],
            row["dataset"],
            f"{row['rows_accepted']:,}",
            f"{row['rows_quarantined']:,}",
            str(row["expectations_evaluated"]),
            verdict,
        )
    console.print(gates)

    timing = Table(title="seconds per stage")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in summary["seconds"].items():
        timing.add_row(stage, f"{seconds:.1f}")
    timing.add_row("total", f"{sum(summary['seconds'].values()):.1f}")
    console.print(timing)

    console.print(f"published snapshot [bold]{summary['snapshot_id']}[/bold] in {summary['lake_dir']}/marts")
    console.print("next:")
    for what, command in NEXT_STEPS:
        console.print(f"  {what:<38} {command}")
