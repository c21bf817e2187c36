"""The `lakehouse` command line: parses options, calls the pipeline modules, prints results."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from typer._click.exceptions import ClickException  # typer vendors click

from flows import quick_exit  # first: its exit handler must be registered before any other
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
End = Annotated[
    str | None,
    typer.Option(
        help="Day after the last one, YYYY-MM-DD (default: settings; up to now for real market data)."
    ),
]
LakeDir = Annotated[Path | None, typer.Option(help="Lake directory (default: LAKEHOUSE_LAKE_DIR or ./lake).")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Global options; --debug is read by main() before the command runs."""


DEBUG = False  # set by main() from --debug


def console_without_tracebacks() -> None:
    """Keep Prefect's console log lines but not the tracebacks it logs for a failing task or
    flow: without --debug a failed run ends with one line saying what failed, where and what to
    do. Only the console's formatting changes; the Prefect UI's logs keep the tracebacks."""
    import logging

    if DEBUG:
        return
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.StreamHandler) or getattr(handler, "_lakehouse_quiet", False):
            continue
        original = handler.format

        def without_traceback(record: logging.LogRecord, original=original) -> str:
            saved = record.exc_info, record.exc_text, record.stack_info
            record.exc_info = record.exc_text = record.stack_info = None
            try:
                return original(record)
            finally:
                record.exc_info, record.exc_text, record.stack_info = saved

        handler.format = without_traceback
        handler._lakehouse_quiet = True


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
    settings = load_settings(
        lake_dir=lake_dir,
        source=source,
        symbols=symbols,
        intervals=interval,
        start=parse_day(start, "--start"),
        end=parse_day(end, "--end"),
        **extra,
    )
    # The lake, or the nearest of its parents that exists, must be a folder.
    existing = next(p for p in (settings.lake_dir, *settings.lake_dir.parents) if p.exists())
    if not existing.is_dir():
        raise LakehouseError(
            f"lake directory {settings.lake_dir} is not usable ({existing} is a file, not a folder); "
            "set LAKEHOUSE_LAKE_DIR (or --lake-dir) to the lake folder"
        )
    return settings


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
    task_runner: Annotated[
        str, typer.Option(help="Where ingestion tasks run: thread (here) or dask (a Dask cluster).")
    ] = "thread",
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (default: a local one)."
        ),
    ] = None,
) -> None:
    """Run the whole pipeline as one Prefect flow: ingest, gate 1, dbt build, gate 2, publish."""
    settings = settings_from(
        lake_dir=lake_dir, source=source, symbols=symbols, interval=interval, start=start, end=end
    )
    ensure_prefect_home()
    from flows.pipeline import lakehouse, make_task_runner
    from flows.report import print_run_summary

    console_without_tracebacks()

    make_task_runner(task_runner, dask_address)  # a bad choice fails here, before any work
    summary = lakehouse(settings=settings, task_runner=task_runner, dask_address=dask_address)
    print_run_summary(summary)
    echo_run_problems(summary)


def echo_run_problems(summary: dict) -> None:
    """Each series (or inbox file) that did not land, one line on stderr; any of them makes the
    run fail, although what did land was validated, built and published."""
    from flows.report import landing_problems

    errors, warnings = landing_problems(summary.get("notes"))
    for line in warnings:
        typer.echo(f"warning: {line}", err=True)
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    if errors:
        raise LakehouseError(
            f"{len(errors)} series or inbox files did not land (see the errors above); the rest is "
            f"published in snapshot {summary.get('snapshot_id')}; fix the cause and rerun to retry them"
        )


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
    failed = echo_problems(result)
    if "inbox" in result.notes:
        echo_inbox(settings, result.notes["inbox"])
    raise_if_series_failed(failed)


def echo_inbox(settings, report: dict[str, list[str]]) -> None:
    """What became of each inbox file; a file that failed makes the command fail, in one line."""
    inbox = settings.inbox
    done, failed, waiting = report.get("done", []), report.get("failed", []), report.get("waiting", [])
    if not (done or failed or waiting):
        typer.echo(f"the inbox {inbox} has no files: copy archive zips or SYMBOL-INTERVAL-*.csv/.json there")
        return
    typer.echo(f"inbox {inbox}: {len(done)} landed (moved to done/), {len(waiting)} still being copied")
    for line in failed:
        typer.echo(f"failed: {line}", err=True)
    if failed:
        raise LakehouseError(
            f"{len(failed)} inbox file(s) failed (above) and were moved to {inbox / 'failed'}, each with "
            "a .reason.txt; fix them and copy them back into the inbox"
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
    kept = f" ({result.unchanged} unchanged, kept)" if result.unchanged else ""
    typer.echo(
        f"dbt build passed: {result.models} models{kept}, {result.tests} tests in {result.seconds:.1f}s"
    )


@app.command()
def publish(lake_dir: LakeDir = None) -> None:
    """Gate 2 then publish: export marts to a new snapshot, validate it, swap CURRENT."""
    from flows.lake import check_lake_dir
    from flows.publish import publish_marts

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    result = publish_marts(settings)
    if not result.published:  # nothing new, or a rollback holds the live snapshot
        typer.echo(result.note)
        return
    unchanged = (
        f", {len(result.reused)} unchanged and linked from the previous snapshot" if result.reused else ""
    )
    if result.carried:
        unchanged += f", {len(result.carried)} of them not validated again (they passed the same checks)"
    typer.echo(f"published snapshot {result.snapshot_id} ({len(result.tables)} marts{unchanged})")


@app.command()
def query(
    sql: Annotated[str | None, typer.Argument(help="Read-only SQL; every published mart is a view.")] = None,
    analysis: Annotated[
        str | None,
        typer.Option(help="Run a dbt analysis from dbt_project/analyses instead, e.g. price_trend."),
    ] = None,
    dbt_vars: Annotated[
        str | None, typer.Option("--vars", help="dbt vars for --analysis, e.g. '{symbol: ETHUSDT}'.")
    ] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table | csv | json.")] = "table",
    lake_dir: LakeDir = None,
) -> None:
    """Run read-only SQL (or a compiled dbt analysis) over the current published marts snapshot."""
    from flows.query import compile_analysis, render, run_query

    settings = settings_from(lake_dir=lake_dir)
    if format not in ("table", "csv", "json"):
        raise LakehouseError(f"--format {format!r} is not one of table, csv, json")
    if (sql is None) == (analysis is None):
        raise LakehouseError('give either SQL (lakehouse query "select ...") or --analysis NAME')
    if dbt_vars is not None and analysis is None:
        raise LakehouseError("--vars sets dbt vars of an analysis; use it with --analysis NAME")
    extra_dirs: list[Path] = []
    if analysis:
        sql = compile_analysis(settings, analysis, dbt_vars)
        extra_dirs.append(settings.lake_dir / "raw")
    frame = run_query(settings.lake_dir, sql, extra_dirs=extra_dirs)
    typer.echo(render(frame, format))


@app.command()
def snapshots(
    rollback: Annotated[
        str | None,
        typer.Option(
            help="Point CURRENT back at this snapshot id and hold it: runs publish no marts equal to "
            "the snapshot rolled back from, only new data (which lifts the hold)."
        ),
    ] = None,
    release_hold: Annotated[
        bool, typer.Option("--release-hold", help="Lift a rollback's hold: the next run publishes as usual.")
    ] = False,
    lake_dir: LakeDir = None,
) -> None:
    """List published snapshots (the current one is marked, a held one says so) or roll back to an older one."""
    from flows import lake

    settings = settings_from(lake_dir=lake_dir)
    if rollback and release_hold:
        raise LakehouseError("--rollback holds the snapshot it points at; use it without --release-hold")
    if rollback:
        hold = lake.roll_back(settings.lake_dir, rollback)
        typer.echo(
            f"CURRENT now points at {rollback} and is held: runs will not publish the marts of "
            f"{hold['rolled_back_from'] or 'the previous CURRENT'} again, only new data; "
            "`lakehouse snapshots --release-hold` lifts the hold"
        )
        return
    if release_hold:
        hold = lake.release_hold(settings.lake_dir)
        if hold is None:
            typer.echo(f"no snapshot is held in {lake.marts_dir(settings.lake_dir)}; nothing to release")
        else:
            typer.echo(f"released the hold on {hold.get('snapshot')}: the next run publishes as usual")
        return
    current = lake.current_snapshot(settings.lake_dir)
    held = (lake.read_hold(settings.lake_dir) or {}).get("snapshot")
    published = lake.list_snapshots(settings.lake_dir)
    if not published:
        typer.echo(
            f"no snapshot published in {settings.lake_dir / 'marts'} yet; `lakehouse run` publishes one"
        )
    for snapshot in published:
        note = (
            "  (held by a rollback; `lakehouse snapshots --release-hold` lifts it)"
            if snapshot == held
            else ""
        )
        typer.echo(f"{'*' if snapshot == current else ' '} {snapshot}{note}")


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    lake_dir: LakeDir = None,
) -> None:
    """Serve the Streamlit marts dashboard (reads only the published snapshot)."""
    from flows.serving import serve_dashboard

    settings = settings_from(lake_dir=lake_dir)
    serve_dashboard(settings, host=host, port=port)


@app.command()
def docs(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    lake_dir: LakeDir = None,
) -> None:
    """Generate dbt docs (lineage from sources to dashboard exposures) and serve them."""
    from flows.serving import serve_dbt_docs

    settings = settings_from(lake_dir=lake_dir)
    serve_dbt_docs(settings, host=host, port=port)


@app.command("dq-report")
def dq_report(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only build; print the path.")] = False,
    lake_dir: LakeDir = None,
) -> None:
    """Build the Great Expectations Data Docs if needed and serve them."""
    from flows.serving import serve_data_docs

    settings = settings_from(lake_dir=lake_dir)
    serve_data_docs(settings, host=host, port=port, serve=not no_serve)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
    host: Annotated[str, typer.Option(help="Address the local Prefect server binds.")] = "127.0.0.1",
) -> None:
    """Start a local Prefect server (unless PREFECT_API_URL names one) and serve every deployment
    in prefect.yaml; prints the UI URL, Ctrl-C stops all it started."""
    ensure_prefect_home()
    from flows.deployments import serve_all

    serve_all(host=host, port=port)


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


# Binance klines: backfill, gaps, archives, uploads (issue 3) --------------------------------

Market = Annotated[str | None, typer.Option(help="spot | usdm (default: settings).")]
Validate = Annotated[bool, typer.Option("--validate/--no-validate", help="Run gate 1 on what was landed.")]


def echo_landed(result, title: str = "landed") -> None:
    echo_table(
        title,
        ["dataset", "batches", "rows"],
        [[name, len(refs), sum(r.rows for r in refs)] for name, refs in result.refs.items()],
    )


def admit_landed(settings) -> list:
    """Gate 1 over lake/landing, so what a command landed is in lake/raw when it returns."""
    from flows.quality import validate_raw

    results = validate_raw(settings)
    echo_table(
        "gate 1 (raw)",
        ["dataset", "batches", "accepted", "quarantined", "success"],
        [[r.dataset, r.batches, r.accepted, r.quarantined, r.success] for r in results],
    )
    return results


def echo_problems(result, keys: tuple[str, ...] = ("warnings", "errors")) -> int:
    """Print notes' warnings and errors (one line each) to stderr; the number of errors."""
    for key in keys:
        for line in result.notes.get(key) or []:
            typer.echo(f"{key[:-1]}: {line}", err=True)
    return len(result.notes.get("errors") or [])


def raise_if_series_failed(failed: int) -> None:
    if failed:
        # main() turns this into exit status 1 (typer.Exit's code is lost in non-standalone mode).
        raise LakehouseError(
            f"{failed} of the requested series failed (see the errors above); rerun to retry them"
        )


def gap_filters(settings, symbols, interval, market, start, end):
    from flows.sources.binance_rest import day_start_ms

    ranged = start is not None or end is not None
    return {
        "markets": [market] if market else ([settings.market] if ranged else None),
        "symbols": settings.symbols if symbols else None,
        "intervals": settings.intervals if interval else None,
        "start_ms": day_start_ms(settings.start) if ranged else None,
        "end_ms": day_start_ms(settings.end) if ranged else None,
    }


@app.command()
def backfill(
    symbols: Symbols = None,
    interval: Interval = None,
    start: Start = None,
    end: End = None,
    market: Market = None,
    gaps: Annotated[
        bool, typer.Option("--gaps", help="Refetch exactly the candles `lakehouse gaps` lists.")
    ] = False,
    validate: Validate = True,
    lake_dir: LakeDir = None,
) -> None:
    """Fetch klines from the Binance REST API for an explicit range, or only the missing ones."""
    from flows.lake import check_lake_dir
    from flows.sources.binance_rest import backfill_gaps, backfill_klines
    from flows.sources.gaps import find_gaps

    # source="binance": an end not given is now, not the synthetic source's fixed window.
    settings = settings_from(
        lake_dir=lake_dir, source="binance", symbols=symbols, interval=interval, start=start, end=end,
        market=market,
    )  # fmt: skip
    check_lake_dir(settings.lake_dir)
    if gaps:
        found = find_gaps(settings.lake_dir, **gap_filters(settings, symbols, interval, market, start, end))
        typer.echo(f"{len(found)} gaps, {sum(g.missing for g in found)} missing candles")
        result = backfill_gaps(settings, found)
    else:
        result = backfill_klines(settings)
    echo_landed(result)
    failed = echo_problems(result)
    if validate and any(result.refs.values()):
        admit_landed(settings)
    raise_if_series_failed(failed)


@app.command("gaps")
def gaps_command(
    symbols: Symbols = None,
    interval: Interval = None,
    start: Start = None,
    end: End = None,
    market: Market = None,
    lake_dir: LakeDir = None,
) -> None:
    """List missing candles in lake/raw per market/symbol/interval/day (holes, or --start..--end)."""
    from flows.sources.gaps import GAP_COLUMNS, find_gaps

    settings = settings_from(
        lake_dir=lake_dir, symbols=symbols, interval=interval, start=start, end=end, market=market
    )
    checked: list[tuple[str, str, str]] = []
    filters = gap_filters(settings, symbols, interval, market, start, end)
    found = find_gaps(settings.lake_dir, checked=checked, **filters)
    if not checked:
        # Nothing to compare with: saying "no gaps" would claim candles that are not there.
        typer.echo(
            f"no candles in {settings.lake_dir / 'raw'} for the series asked; give --start and --end "
            "to list the whole range as missing"
        )
        return
    if not found:
        typer.echo(f"no gaps: every expected candle of {len(checked)} series is in lake/raw")
        return
    echo_table("missing candles", GAP_COLUMNS, [g.as_row() for g in found])
    typer.echo(
        f"{len(found)} gaps, {sum(g.missing for g in found)} missing candles; "
        "`lakehouse backfill --gaps` refetches them"
    )


@app.command("import-archive")
def import_archive(
    paths: Annotated[list[Path], typer.Argument(help="Kline zips (or folders of them).")],
    market: Annotated[
        str | None, typer.Option(help="spot | usdm (default: from the path, else settings).")
    ] = None,
    validate: Validate = True,
    lake_dir: LakeDir = None,
) -> None:
    """Land Binance public archive zips (data.binance.vision names), checksums verified."""
    from flows.lake import check_lake_dir
    from flows.sources.binance_archive import import_archives

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    if market not in (None, "spot", "usdm"):
        raise LakehouseError(f"--market {market!r} is not spot or usdm")
    result = import_archives(paths, settings, market=market)
    stats = result.notes["archives"]
    echo_landed(result)
    typer.echo(
        f"{stats['files'] - stats['refused']} of {stats['files']} archives, "
        f"{stats['rows']} rows in {stats['seconds']:.2f}s"
    )
    failed = echo_problems(result)
    if validate and any(result.refs.values()):
        admit_landed(settings)
    if failed:
        raise LakehouseError(f"{failed} of {stats['files']} archives were refused (see the errors above)")


@app.command("download-archive")
def download_archive(
    symbols: Symbols = None,
    interval: Interval = None,
    start: Start = None,
    end: End = None,
    market: Market = None,
    dest: Annotated[Path | None, typer.Option(help="Download folder (default: <lake>/downloads).")] = None,
    land: Annotated[bool, typer.Option("--import/--no-import", help="Land what was downloaded.")] = True,
    validate: Validate = True,
    lake_dir: LakeDir = None,
) -> None:
    """Download kline archives from data.binance.vision (monthly, else daily) and land them."""
    from flows.lake import check_lake_dir
    from flows.sources.binance_archive import download_archives, import_archives

    # source="archive": an end not given is now, not the synthetic source's fixed window.
    settings = settings_from(
        lake_dir=lake_dir, source="archive", symbols=symbols, interval=interval, start=start, end=end,
        market=market,
    )  # fmt: skip
    check_lake_dir(settings.lake_dir)
    downloaded = download_archives(settings, dest=dest)
    if not (downloaded.files or downloaded.missing or downloaded.errors):
        today = datetime.now(UTC).date()
        raise LakehouseError(
            f"no archive can exist for {settings.start}..{settings.end} yet: data.binance.vision publishes "
            f"days before today ({today}) and months before this one; give an earlier --start/--end"
        )
    typer.echo(f"{len(downloaded.files)} archives downloaded, {len(downloaded.missing)} not published")
    for line in downloaded.errors:
        typer.echo(f"error: {line}", err=True)
    if land and downloaded.files:
        result = import_archives(downloaded.files, settings, market=settings.market)
        echo_landed(result)
        if echo_problems(result):
            downloaded.errors.append("import")
        if validate and any(result.refs.values()):
            admit_landed(settings)
    if downloaded.errors:
        raise LakehouseError(
            f"{len(downloaded.errors)} archives could not be downloaded or landed (see above)"
        )


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="CSV or JSON: timestamp, open, high, low, close, volume.")],
    symbol: Annotated[str, typer.Option(help="Symbol of the candles, e.g. BTCUSDT.")],
    interval: Annotated[str, typer.Option(help="Interval of the candles, e.g. 1m.")],
    market: Annotated[str, typer.Option(help="spot | usdm.")] = "spot",
    validate: Validate = True,
    lake_dir: LakeDir = None,
) -> None:
    """Land an OHLC file as source=upload; gate 1 validates it like any other batch."""
    from flows.lake import check_lake_dir
    from flows.sources.uploads import land_upload

    settings = settings_from(lake_dir=lake_dir)
    check_lake_dir(settings.lake_dir)
    result = land_upload(file, settings, symbol=symbol, interval=interval, market=market)
    facts = result.notes["upload"]
    echo_landed(result)
    if facts["filled"]:
        typer.echo(f"not in the file: {describe_filled(facts['filled'])}")
    if facts["open_skipped"]:
        typer.echo(f"{facts['open_skipped']} candle(s) still open at upload time were skipped")
    if validate and any(result.refs.values()):
        results = admit_landed(settings)
        accepted = sum(r.accepted for r in results)
        quarantined = sum(r.quarantined for r in results)
        if quarantined and not accepted:
            failed = sorted({e for r in results for e in r.failed_expectations})
            raise LakehouseError(
                f"gate 1 quarantined all {quarantined} rows of {file.name} (failed: {'; '.join(failed)}); "
                "`lakehouse quarantine list` shows why, `lakehouse quarantine release` re-admits them after a fix"
            )


def describe_filled(filled: list[str]) -> str:
    """What an upload lacked and what the lake holds instead."""
    parts = []
    if "close_time" in filled:
        parts.append("close_time (derived from the interval)")
    unknown = [c for c in filled if c not in ("close_time", "num_trades")]
    if unknown:
        parts.append(f"{', '.join(unknown)} (left unknown)")
    if "num_trades" in filled:
        parts.append("num_trades (0)")
    return "; ".join(parts)


@app.command()
def generate(
    seed: Annotated[int | None, typer.Option(help="Random seed (default: settings, 42).")] = None,
    users: Annotated[int | None, typer.Option(help="Number of users (default: settings).")] = None,
    days: Annotated[int | None, typer.Option(help="Days from --start; overrides --end.")] = None,
    symbols: Symbols = None,
    interval: Interval = None,
    tx_per_day: Annotated[
        int | None, typer.Option("--tx-per-day", help="Mean transactions a day (default: settings).")
    ] = None,
    clean: Annotated[bool, typer.Option("--clean", help="Inject no defects.")] = False,
    defect_rate: Annotated[
        float | None, typer.Option(help="Share of rows each defect kind hits (default: settings).")
    ] = None,
    start: Start = None,
    end: End = None,
    validate: Annotated[
        bool, typer.Option("--validate/--no-validate", help="Run gate 1 on what was landed.")
    ] = False,
    lake_dir: LakeDir = None,
) -> None:
    """Land synthetic klines, users, transactions and network data (deterministic per seed)."""
    from datetime import timedelta

    from flows.lake import check_lake_dir
    from flows.sources.synthetic import land_synthetic

    if days is not None and days < 1:
        raise LakehouseError(f"--days {days} must be 1 or more")
    if days is not None:
        first = parse_day(start, "--start") or load_settings(lake_dir=lake_dir).start
        start, end = first.isoformat(), (first + timedelta(days=days)).isoformat()
    settings = settings_from(
        lake_dir=lake_dir, symbols=symbols, interval=interval, start=start, end=end,
        seed=seed, defect_rate=defect_rate, source="synthetic",
    )  # fmt: skip
    check_lake_dir(settings.lake_dir)
    result = land_synthetic(settings, clean=clean or None, users=users, tx_per_day=tx_per_day)
    echo_landed(result, f"synthetic {settings.start}..{settings.end} seed {settings.seed}")
    defects = result.notes["defects"]
    kinds = list(dict.fromkeys(kind for counts in defects.values() for kind in counts))
    echo_table(
        "defects injected",
        ["defect", *defects],
        [[kind, *(counts.get(kind, "-") for counts in defects.values())] for kind in kinds],
    )
    if validate and any(result.refs.values()):
        admit_landed(settings)


quarantine_app = typer.Typer(
    help="Inspect quarantined batches and re-admit them after a fix (re-validated by gate 1).",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(lake_dir: LakeDir = None) -> None:
    """List quarantined batches: partition, batch id, rows, failed expectations."""
    from flows.quarantine import list_quarantine

    settings = settings_from(lake_dir=lake_dir)
    batches = list_quarantine(settings.lake_dir)
    if not batches:
        typer.echo(f"nothing in quarantine under {settings.lake_dir / 'quarantine'}")
        return
    typer.echo(f"{len(batches)} quarantined batches, {sum(b.rows for b in batches):,} rows:")
    for b in batches:
        whole = " (whole batch)" if b.reason.get("whole_batch") else ""
        typer.echo(
            f"{b.ref.batch_id}  {b.partition}  {b.rows} rows{whole}  "
            f"at {b.reason.get('quarantined_at', '?')}  failed: {'; '.join(b.failed)}"
        )


@quarantine_app.command("show")
def quarantine_show(
    batch_id: Annotated[str, typer.Argument(help="Batch id (or a unique prefix) from `quarantine list`.")],
    rows: Annotated[int, typer.Option(min=1, help="How many quarantined rows to print.")] = 20,
    lake_dir: LakeDir = None,
) -> None:
    """Show why a batch was quarantined and its rows, each with the expectations it failed."""
    from flows.lake import reason_json
    from flows.quarantine import show_batch

    settings = settings_from(lake_dir=lake_dir)
    batch, frame = show_batch(settings.lake_dir, batch_id, limit=rows)
    summary = {k: v for k, v in batch.reason.items() if k != "row_reasons"}
    typer.echo(f"{batch.path}\n{reason_json(summary)}")
    for row, failed in enumerate(frame.pop("failed")):
        typer.echo(f"row {row}: {failed}")
    typer.echo(frame.to_string(max_colwidth=40))


@quarantine_app.command("release")
def quarantine_release(
    batch_id: Annotated[str, typer.Argument(help="Batch id (or a unique prefix) from `quarantine list`.")],
    lake_dir: LakeDir = None,
) -> None:
    """Re-validate a quarantined batch; rows that now pass join lake/raw, the rest stay quarantined."""
    from flows.quarantine import release_batch

    settings = settings_from(lake_dir=lake_dir)
    result = release_batch(settings, batch_id)
    if result.unreadable:
        raise LakehouseError(
            f"batch {result.batch_id} stays quarantined: {result.unreadable}; replace the file with a "
            "fixed copy (see `lakehouse quarantine list`) and release it again"
        )
    typer.echo(
        f"batch {result.batch_id}: {result.released} rows released to raw, "
        f"{result.still_quarantined} still quarantined"
        + (f" ({'; '.join(result.failed)})" if result.failed else "")
    )


def usage_line(exc: ClickException) -> str:
    """Click's usage error (usage, hint and message over several lines) as one line."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "lakehouse"
    return f"{exc.format_message()} (see `{command} --help`)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line for any error, a traceback only with --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    global DEBUG
    debug = DEBUG = "--debug" in argv
    if debug:  # accepted anywhere on the line, as the README puts it: `--debug` shows the traceback
        argv = ["--debug", *(arg for arg in argv if arg != "--debug")]
    try:
        code = app(args=argv, prog_name="lakehouse", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:
        if debug:
            raise
        typer.echo(f"error: {usage_line(exc)}", err=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except LakehouseError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except PermissionError as exc:
        if debug:
            raise
        where = exc.filename or "a file of the lake"
        typer.echo(
            f"error: permission denied on {where}: this command writes there; give your user write "
            "access (the folder's owner and mode) or point --lake-dir / LAKEHOUSE_LAKE_DIR at a lake you own",
            err=True,
        )
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
    # Without standalone mode, typer.Exit(code) comes back as the return value.
    return code if isinstance(code, int) else 0


def entry() -> None:
    """The `lakehouse` command: main(), then the process ends without the interpreter's
    teardown (flows.quick_exit), 0.8 s sooner after a pipeline run."""
    quick_exit.exit_with(main())


if __name__ == "__main__":
    entry()
