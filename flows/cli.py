"""The `lakehouse` command line: parses options, calls the pipeline modules, prints results."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from typer._click.exceptions import ClickException  # typer vendors click

from flows.errors import LakehouseError
from flows.settings import ensure_prefect_home, load_settings

app = typer.Typer(
    help="binance-lakehouse: land, validate, build, publish and query a local crypto market lakehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Symbols = Annotated[
    str | None,
    typer.Option(help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT (default: settings)."),
]
Interval = Annotated[str | None, typer.Option(help="Kline interval, e.g. 1m or 1h (default: settings).")]
Start = Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (default: settings).")]
End = Annotated[str | None, typer.Option(help="Day after the last one, YYYY-MM-DD (default: settings).")]
LakeDir = Annotated[Path | None, typer.Option(help="Lake directory (default: LAKEHOUSE_LAKE_DIR or ./lake).")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Global options; --debug is read by main() before the command runs."""


def parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise LakehouseError(f"{option} {value!r} is not a date; use YYYY-MM-DD, e.g. 2026-10-01") from exc


def settings_from(
    *,
    lake_dir: Path | None = None,
    source: str | None = None,
    symbols: str | None = None,
    interval: str | None = None,
    start: str | None = None,
    end: str | None = None,
    **extra: object,
):
    """Settings from env/.env with the command's options laid over them."""
    return load_settings(
        lake_dir=lake_dir,
        source=source,
        symbols=symbols,
        intervals=interval,
        start=parse_day(start, "--start"),
        end=parse_day(end, "--end"),
        **extra,
    )


def echo_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    Console().print(table)


@app.command()
def run(
    source: Annotated[str | None, typer.Option(help="synthetic | binance | archive | upload.")] = None,
    symbols: Symbols = None,
    interval: Interval = None,
    start: Start = None,
    end: End = None,
    lake_dir: LakeDir = None,
) -> None:
    """Run the whole pipeline as one Prefect flow: ingest, gate 1, dbt build, gate 2, publish."""
    settings = settings_from(
        lake_dir=lake_dir, source=source, symbols=symbols, interval=interval, start=start, end=end
    )
    ensure_prefect_home()
    from flows.pipeline import lakehouse
    from flows.report import print_run_summary

    summary = lakehouse(settings=settings)
    print_run_summary(summary)


@app.command()
def ingest(
    source: Annotated[str | None, typer.Option(help="synthetic | binance | archive | upload.")] = None,
    symbols: Symbols = None,
    interval: Interval = None,
    start: Start = None,
    end: End = None,
    lake_dir: LakeDir = None,
) -> None:
    """Land one source into lake/landing (no validation; `validate` moves it on)."""
    from flows.lake import check_lake_dir
    from flows.sources import land_source

    settings = settings_from(
        lake_dir=lake_dir, source=source, symbols=symbols, interval=interval, start=start, end=end
    )
    check_lake_dir(settings.lake_dir)
    result = land_source(settings)
    echo_table(
        "landed",
        ["dataset", "batches", "rows"],
        [[name, len(refs), sum(r.rows for r in refs)] for name, refs in result.refs.items()],
    )


@app.command()
def validate(lake_dir: LakeDir = None) -> None:
    """Gate 1: validate landed batches; accepted rows go to lake/raw, failing rows to quarantine."""
    from flows.lake import check_lake_dir
    from flows.quality import validate_raw

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    results = validate_raw(settings)
    echo_table(
        "gate 1 (raw)",
        ["dataset", "batches", "accepted", "quarantined", "success"],
        [[r.dataset, r.batches, r.accepted, r.quarantined, r.success] for r in results],
    )


@app.command()
def build(
    full_refresh: Annotated[bool, typer.Option(help="Rebuild incremental models from scratch.")] = False,
    lake_dir: LakeDir = None,
) -> None:
    """Run `dbt build` (staging, intermediate, marts and their tests) into the DuckDB warehouse."""
    from flows.lake import check_lake_dir
    from flows.transform import build_marts

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    result = build_marts(settings, full_refresh=full_refresh)
    typer.echo(f"dbt build passed: {result.models} models, {result.tests} tests in {result.seconds:.1f}s")


@app.command()
def publish(lake_dir: LakeDir = None) -> None:
    """Gate 2 then publish: export marts to a new snapshot, validate it, swap CURRENT."""
    from flows.lake import check_lake_dir
    from flows.publish import publish_marts

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    result = publish_marts(settings)
    typer.echo(f"published snapshot {result.snapshot_id} ({len(result.tables)} marts)")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="Read-only SQL; every published mart is a view.")],
    format: Annotated[str, typer.Option("--format", "-f", help="table | csv | json.")] = "table",
    lake_dir: LakeDir = None,
) -> None:
    """Run read-only SQL over the current published marts snapshot."""
    from flows.query import render, run_query

    settings = settings_from(lake_dir=lake_dir)
    if format not in ("table", "csv", "json"):
        raise LakehouseError(f"--format {format!r} is not one of table, csv, json")
    frame = run_query(settings.lake_dir, sql)
    typer.echo(render(frame, format))


@app.command()
def snapshots(
    rollback: Annotated[str | None, typer.Option(help="Point CURRENT back at this snapshot id.")] = None,
    lake_dir: LakeDir = None,
) -> None:
    """List published snapshots (the current one is marked) or roll back to an older one."""
    from flows.lake import current_snapshot, list_snapshots, swap_current

    settings = settings_from(lake_dir=lake_dir)
    if rollback:
        swap_current(settings.lake_dir, rollback)
        typer.echo(f"CURRENT now points at {rollback}")
        return
    current = current_snapshot(settings.lake_dir)
    for snapshot in list_snapshots(settings.lake_dir):
        typer.echo(f"{'*' if snapshot == current else ' '} {snapshot}")


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    lake_dir: LakeDir = None,
) -> None:
    """Serve the Streamlit marts dashboard (reads only the published snapshot)."""
    from flows.serving import serve_dashboard

    settings = settings_from(lake_dir=lake_dir)
    serve_dashboard(settings, host=host, port=port)


@app.command()
def docs(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    lake_dir: LakeDir = None,
) -> None:
    """Generate dbt docs (lineage from sources to dashboard exposures) and serve them."""
    from flows.serving import serve_dbt_docs

    settings = settings_from(lake_dir=lake_dir)
    serve_dbt_docs(settings, host=host, port=port)


@app.command("dq-report")
def dq_report(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only build; print the path.")] = False,
    lake_dir: LakeDir = None,
) -> None:
    """Build the Great Expectations Data Docs if needed and serve them."""
    from flows.serving import serve_data_docs

    settings = settings_from(lake_dir=lake_dir)
    serve_data_docs(settings, host=host, port=port, serve=not no_serve)


@app.command()
def serve() -> None:
    """Start a local Prefect server and a runner for every deployment in prefect.yaml."""
    ensure_prefect_home()
    from flows.serving import serve_prefect

    serve_prefect()


@app.command()
def stream(
    symbols: Symbols = None,
    market: Annotated[str | None, typer.Option(help="spot | usdm (default: settings).")] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds, flushing first (default: until Ctrl-C)."),
    ] = None,
    lake_dir: LakeDir = None,
) -> None:
    """Land live aggTrades from Binance websockets into lake/raw in ~1 s micro-batches."""
    import logging

    from flows.lake import check_lake_dir
    from flows.sources.trades_stream import run_stream

    settings = settings_from(lake_dir=lake_dir, symbols=symbols, market=market)
    check_lake_dir(settings.lake_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stats = run_stream(settings, duration=duration)
    echo_table("stream", ["counter", "value"], [[k, v] for k, v in stats.as_dict().items()])


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line for any error, a traceback only with --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        app(args=argv, prog_name="lakehouse", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:
        if debug:
            raise
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except LakehouseError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except Exception as exc:
        if debug:
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(
            f"error: {type(exc).__name__}: {first_line} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
