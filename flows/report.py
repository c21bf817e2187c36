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


# Where each kind of injected synthetic defect is meant to be caught (see docs/reliability.md).
DEFECT_CATCHERS = {
    "missing_values": "gate 1 quarantine (klines, transactions); staging imputation (users, network)",
    "outliers": (
        "gate 1 flag; staging caps user balances and nulls gas spikes; fct_transactions flags amount "
        "outliers and leaves them out of sums; kline spikes stay (prices are never capped)"
    ),
    "out_of_range": "gate 1 quarantine (klines); staging repair (users, transactions, network)",
    "invalid_candles": "gate 1 quarantine",
    "duplicate_keys": "gate 1 quarantine (both rows)",
    "duplicate_rows": "gate 1 collapses exact copies to one",
    "gaps": "fct_candle_completeness and gate 2 completeness",
    "late_arriving": "accepted; staging keeps the latest copy per key",
}


def _gate_verdict(row: dict) -> str:
    if row["success"]:
        return "pass"
    failed = row.get("expectations_failed") or len(row["failed_expectations"].split(", "))
    if row["gate"] == "raw":
        return f"{failed} checks failed: rows quarantined"
    return f"FAIL ({failed} checks)"


def one_line(item: object) -> str:
    """A note as one line: a dict's items side by side, any text's first line."""
    if isinstance(item, dict):
        item = ", ".join(f"{key}: {value}" for key, value in item.items())
    return (str(item).strip().splitlines() or [""])[0]


def as_lines(value: object) -> list[str]:
    """A note (a list, a dict of name: reason, or one text) as one line per entry."""
    if not value:
        return []
    if isinstance(value, dict):
        return [f"{key}: {one_line(reason)}" for key, reason in value.items()]
    if isinstance(value, list | tuple | set):
        return [one_line(item) for item in value]
    return [one_line(value)]


def landing_problems(notes: dict | None) -> tuple[list[str], list[str]]:
    """What did not land in a run, from its landing notes: (errors, warnings), one line each.

    Errors are the failed series and slices (notes["errors"]) and inbox files moved to failed/;
    warnings (notes["warnings"]) are things that landed with a remark."""
    notes = notes or {}
    errors = as_lines(notes.get("errors"))
    inbox = notes.get("inbox")
    if isinstance(inbox, dict):
        errors += [f"inbox file {line}" for line in as_lines(inbox.get("failed"))]
    return errors, as_lines(notes.get("warnings"))


def print_run_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    rows = Table(title="rows per layer and dataset")
    for column in ("layer", "dataset", "rows"):
        rows.add_column(column, justify="right" if column == "rows" else "left")
    for dataset, n in sorted(summary["landed"].items()):
        rows.add_row("landed (this run)", dataset, f"{n:,}")
    for row in summary["raw_gate"]:
        if row["rows_quarantined"]:
            rows.add_row("quarantined (this run)", row["dataset"], f"{row['rows_quarantined']:,}")
    for dataset, n in sorted(raw_row_counts(Path(summary["lake_dir"])).items()):
        rows.add_row("raw (all runs)", dataset, f"{n:,}")
    for mart, n in sorted(summary["marts"].items()):
        rows.add_row("marts (published)", mart, f"{n:,}")
    console.print(rows)

    gates = Table(title="quality gates")
    gate_rows = summary["raw_gate"] + summary["mart_gate"]
    # A dataset's name is what the counts are read by: never cut (80 columns cut it to "synthe…").
    longest = max((len(row["dataset"]) for row in gate_rows), default=7)
    for column in ("gate", "dataset", "accepted", "quarantined", "flagged", "collapsed", "checks", "result"):
        gates.add_column(
            column,
            justify="left" if column in ("gate", "dataset", "result") else "right",
            min_width=longest if column == "dataset" else None,
            overflow="fold",
        )
    for row in gate_rows:
        gates.add_row(
            row["gate"],
            row["dataset"],
            f"{row['rows_accepted']:,}",
            f"{row['rows_quarantined']:,}",
            f"{row.get('rows_flagged', 0):,}",
            f"{row.get('duplicates_collapsed', 0):,}",
            str(row["expectations_evaluated"]),
            _gate_verdict(row),
        )
    console.print(gates)
    if any(row["rows_quarantined"] for row in summary["raw_gate"]):
        console.print("quarantined rows and their reasons: .venv/bin/lakehouse quarantine list")

    defects = (summary.get("notes") or {}).get("defects") or {}
    if any(defects.values()):
        injected = Table(title="synthetic defects injected on purpose, and where they are caught")
        for column in ("dataset", "defect", "injected", "caught by"):
            injected.add_column(column, justify="right" if column == "injected" else "left")
        for dataset, kinds in sorted(defects.items()):
            for kind, n in sorted(kinds.items()):
                injected.add_row(dataset, kind, f"{n:,}", DEFECT_CATCHERS.get(kind, "-"))
        console.print(injected)

    timing = Table(title="seconds per stage")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in summary["seconds"].items():
        timing.add_row(stage, f"{seconds:.1f}")
    timing.add_row("total", f"{sum(summary['seconds'].values()):.1f}")
    console.print(timing)

    if summary.get("published", True):
        console.print(
            f"published snapshot [bold]{summary['snapshot_id']}[/bold] in {summary['lake_dir']}/marts"
        )
    else:  # nothing new to publish, or a rollback holds the live snapshot
        console.print(
            summary.get("publish_note") or f"snapshot {summary['snapshot_id']} stays live", soft_wrap=True
        )
    console.print("next:")
    for what, command in NEXT_STEPS:
        console.print(f"  {what:<38} {command}", soft_wrap=True)
