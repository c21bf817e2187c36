"""The CLI: help for every command, one-line errors, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flows.pipeline
from flows.cli import app, main

CORE_COMMANDS = [
    "run",
    "ingest",
    "validate",
    "build",
    "publish",
    "query",
    "dashboard",
    "docs",
    "dq-report",
    "serve",
]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("command", CORE_COMMANDS)
def test_every_core_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    doc = next(
        c
        for c in app.registered_commands
        if (c.name or c.callback.__name__) == command.replace("-", "_") or c.name == command
    )
    assert doc.callback.__doc__.split("\n")[0].strip()[:40] in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--symbols", "BTC/USDT"],
            "error: invalid setting symbols: symbol 'BTC/USDT' is not a Binance symbol",
        ),
        (
            ["run", "--start", "2026-02-01", "--end", "2026-01-01"],
            "end 2026-01-01 must be after start 2026-02-01",
        ),
        (["ingest", "--start", "yesterday"], "error: --start 'yesterday' is not a date; use YYYY-MM-DD"),
        (["query", "select 1"], "error: no published marts in"),
    ],
)
def test_bad_input_prints_one_line_and_exits_nonzero(args, message, lake_dir, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_unreadable_lake_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    assert main(["validate", "--lake-dir", str(blocker / "lake")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: lake directory {blocker / 'lake'} is not usable")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", [["query", "select 1"], ["snapshots"], ["quarantine", "list"], ["gaps"]])
def test_a_lake_dir_that_is_a_file_is_one_line_for_reading_commands_too(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    assert main([*command, "--lake-dir", str(blocker)]) == 1
    assert capsys.readouterr().err == (
        f"error: lake directory {blocker} is not usable ({blocker} is a file, not a folder); "
        "set LAKEHOUSE_LAKE_DIR (or --lake-dir) to the lake folder\n"
    )
    assert blocker.read_text() == "x"


def test_debug_shows_the_traceback(lake_dir):
    result = run_cli("--debug", "query", "select 1")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "LakehouseError: no published marts" in result.stderr


def test_usage_errors_are_one_line_naming_the_help_to_read(capsys):
    assert main(["query", "--nope"]) == 2
    assert capsys.readouterr().err == "error: No such option: --nope (see `lakehouse query --help`)\n"
    assert main(["dashboard", "--port", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid value for '--port'") and err.endswith(
        "(see `lakehouse dashboard --help`)\n"
    )
    assert err.count("\n") == 1


def test_debug_after_the_command_shows_the_traceback_too(lake_dir):
    result = run_cli("query", "select 1", "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "LakehouseError: no published marts" in result.stderr
    assert "NoSuchOption" not in result.stderr


def test_rollback_takes_only_a_published_snapshot(lake_dir, capsys):
    from flows.lake import current_snapshot, snapshot_path, swap_current

    for snapshot in ("20261001T000000000000Z", "20261002T000000000000Z"):
        snapshot_path(lake_dir, snapshot).mkdir(parents=True)
    swap_current(lake_dir, "20261002T000000000000Z")
    (lake_dir / "raw").mkdir()

    # Folders that are not snapshots: the lake's other zones, the marts folder itself.
    for name in ("../raw", ".", "../marts", "2026"):
        assert main(["snapshots", "--rollback", name, "--lake-dir", str(lake_dir)]) == 1
        assert capsys.readouterr().err == (
            f"error: snapshot {name!r} does not exist under {lake_dir / 'marts'}; "
            "`lakehouse snapshots` lists the published ones\n"
        )
        assert current_snapshot(lake_dir) == "20261002T000000000000Z"
    assert main(["snapshots", "--rollback", "20261001T000000000000Z", "--lake-dir", str(lake_dir)]) == 0
    assert current_snapshot(lake_dir) == "20261001T000000000000Z"
    assert main(["snapshots", "--lake-dir", str(lake_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "* 20261001T000000000000Z  (held by a rollback; `lakehouse snapshots --release-hold` lifts it)",
        "  20261002T000000000000Z",
    ]


def test_a_rollback_says_it_holds_and_release_hold_lifts_it(lake_dir, capsys):
    from flows.lake import current_snapshot, read_hold, snapshot_path, swap_current

    for snapshot in ("20261001T000000000000Z", "20261002T000000000000Z"):
        snapshot_path(lake_dir, snapshot).mkdir(parents=True)
    swap_current(lake_dir, "20261002T000000000000Z")

    assert main(["snapshots", "--rollback", "20261001T000000000000Z", "--lake-dir", str(lake_dir)]) == 0
    assert capsys.readouterr().out == (
        "CURRENT now points at 20261001T000000000000Z and is held: runs will not publish the marts of "
        "20261002T000000000000Z again, only new data; `lakehouse snapshots --release-hold` lifts the hold\n"
    )
    hold = read_hold(lake_dir)
    assert (hold["snapshot"], hold["rolled_back_from"], hold["marts"]) == (
        "20261001T000000000000Z",
        "20261002T000000000000Z",
        {},
    )

    assert main(["snapshots", "--release-hold", "--lake-dir", str(lake_dir)]) == 0
    assert capsys.readouterr().out == (
        "released the hold on 20261001T000000000000Z: the next run publishes as usual\n"
    )
    assert read_hold(lake_dir) is None
    assert current_snapshot(lake_dir) == "20261001T000000000000Z"
    assert main(["snapshots", "--release-hold", "--lake-dir", str(lake_dir)]) == 0
    assert capsys.readouterr().out == f"no snapshot is held in {lake_dir / 'marts'}; nothing to release\n"
    assert main(["snapshots", "--lake-dir", str(lake_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == ["* 20261001T000000000000Z", "  20261002T000000000000Z"]


def test_query_rejects_writes_and_bad_format(lake_dir, capsys):
    assert main(["query", "select 1", "--format", "xml"]) == 1
    assert "--format 'xml' is not one of table, csv, json" in capsys.readouterr().err


def test_a_failing_query_says_in_one_line_what_duckdb_suggests_and_what_to_run(lake_dir, capsys):
    import pyarrow as pa

    from flows.lake import snapshot_path, swap_current, write_parquet_atomic

    table = pa.table({"symbol": ["BTCUSDT"], "close": [97_000.5]})
    write_parquet_atomic(table, snapshot_path(lake_dir, "s1") / "fct_klines_daily.parquet")
    swap_current(lake_dir, "s1")

    def error(sql: str) -> str:
        assert main(["query", sql]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        return err.rstrip("\n")

    assert error("select closing from fct_klines_daily") == (
        'error: query failed: Binder Error: Referenced column "closing" not found in FROM clause! '
        'Candidate bindings: "close"; every column of a mart: lakehouse query "describe <mart>"'
    )
    assert error("select * from fct_klines_dayly") == (
        "error: query failed: Catalog Error: Table with name fct_klines_dayly does not exist! "
        'Did you mean "fct_klines_daily"?'
    )
    # DuckDB's own suggestion here is one of its catalog tables, not a mart.
    assert error("select * from trades") == (
        "error: query failed: Catalog Error: Table with name trades does not exist! "
        'List the published marts with: lakehouse query "show tables"'
    )
    assert error("select cast(symbol as int) from fct_klines_daily") == (
        "error: query failed: Conversion Error: Could not convert string 'BTCUSDT' to INT32 when casting from source column symbol"
    )
    assert main(["query", "show tables", "-f", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["name", "fct_klines_daily"]
    # DuckDB runs every statement and returns the last result: one at a time instead.
    assert error("select 1; select close from fct_klines_daily") == (
        "error: query holds 2 SQL statements; give one at a time (each its own `lakehouse query`)"
    )
    assert main(["query", "select 1", "--vars", "{symbol: ETHUSDT}"]) == 1
    assert (
        capsys.readouterr().err == "error: --vars sets dbt vars of an analysis; use it with --analysis NAME\n"
    )
    # An empty result names its columns (pandas would print "Empty DataFrame ... Index: []").
    assert main(["query", "select symbol, close from fct_klines_daily where close < 0"]) == 0
    assert capsys.readouterr().out == "(no rows; columns: symbol, close)\n"


def test_query_json_gives_every_float_exactly(lake_dir, capsys):
    import json

    import pyarrow as pa

    from flows.lake import snapshot_path, swap_current, write_parquet_atomic

    prices = [0.000012345678901234, 3036.7495791278234, float("nan")]
    table = pa.table({"symbol": ["SHIBUSDT", "ETHUSDT", "XRPUSDT"], "close": prices})
    write_parquet_atomic(table, snapshot_path(lake_dir, "s1") / "fct_klines_daily.parquet")
    swap_current(lake_dir, "s1")

    assert main(["query", "select * from fct_klines_daily", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # pandas' to_json gave 0.0000123457 and 3036.7495791278 (10 decimal places).
    assert [r["close"] for r in rows] == [0.000012345678901234, 3036.7495791278234, None]
    assert main(["query", "select * from fct_klines_daily", "-f", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1:3] == [
        "SHIBUSDT,1.2345678901234e-05",
        "ETHUSDT,3036.7495791278234",
    ]


def test_a_failed_run_logs_no_traceback_to_the_console_but_keeps_it_for_other_handlers(monkeypatch):
    """Prefect logs a failing task's traceback through the root logger's console handler;
    without --debug the console keeps the line and drops the traceback. A handler of its own
    (Prefect's API log handler) still gets the exception."""
    import io
    import logging

    import flows.cli

    console, api = io.StringIO(), []
    handler = logging.StreamHandler(console)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])

    class Keep(logging.Handler):
        def emit(self, record):
            api.append(record.exc_info is not None)

    logger = logging.getLogger("lakehouse-test-run")
    monkeypatch.setattr(logger, "handlers", [Keep()])
    monkeypatch.setattr(flows.cli, "DEBUG", False)
    flows.cli.console_without_tracebacks()
    flows.cli.console_without_tracebacks()  # twice (two runs in one process): still one wrapper
    try:
        raise ValueError("no space left")
    except ValueError:
        logger.exception("Task run failed with exception: %s", "ValueError('no space left')")

    assert console.getvalue() == "Task run failed with exception: ValueError('no space left')\n"
    assert api == [True]

    monkeypatch.setattr(flows.cli, "DEBUG", True)
    debug_console = io.StringIO()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(debug_console)])
    flows.cli.console_without_tracebacks()
    try:
        raise ValueError("no space left")
    except ValueError:
        logger.exception("failed")
    assert "Traceback (most recent call last)" in debug_console.getvalue()


@pytest.mark.parametrize(
    ("command", "what"), [("dashboard", "dashboard"), ("docs", "dbt docs"), ("dq-report", "Data Docs server")]
)
def test_a_server_whose_port_is_taken_fails_in_one_line_before_printing_a_url(
    command, what, lake_dir, capsys
):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main([command, "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: port {port} on 127.0.0.1 is already in use, so the {what} cannot start there; "
        "stop what uses it or pick another with --port\n"
    )


def test_a_read_only_lake_says_which_file_it_could_not_write(lake_dir, capsys, monkeypatch):
    """The tests run as root, who may write anywhere: the refusal a user meets is raised here as
    the operating system raises it when CURRENT's temporary file cannot be created."""
    import flows.lake
    from flows.lake import current_snapshot, snapshot_path, swap_current

    for snapshot in ("20261001T000000000000Z", "20261002T000000000000Z"):
        snapshot_path(lake_dir, snapshot).mkdir(parents=True)
    swap_current(lake_dir, "20261002T000000000000Z")
    partial = lake_dir / "marts" / "CURRENT.partial"

    def read_only(path, text):
        raise PermissionError(13, "Permission denied", str(partial))

    monkeypatch.setattr(flows.lake, "write_text_atomic", read_only)
    assert main(["snapshots", "--rollback", "20261001T000000000000Z"]) == 1
    assert capsys.readouterr().err == (
        f"error: permission denied on {partial}: this command writes there; give your user write access "
        "(the folder's owner and mode) or point --lake-dir / LAKEHOUSE_LAKE_DIR at a lake you own\n"
    )
    assert current_snapshot(lake_dir) == "20261002T000000000000Z"


NOPE_ERROR = (
    "NOPEUSDT 1h (spot): Binance rejected spot klines NOPEUSDT 1h from 2026-12-01 00:00:00: "
    "Invalid symbol. (code -1121, HTTP 400)"
)


def test_ingest_prints_a_failed_series_and_exits_1_as_backfill_does(lake_dir, capsys, monkeypatch):
    import flows.sources.binance_rest as binance_rest
    from flows.sources import LandResult

    def land(settings, **options):
        return LandResult(
            refs={"klines": [], "exchange_info": []}, notes={"errors": [NOPE_ERROR], "warnings": []}
        )

    monkeypatch.setattr(binance_rest, "land_rest_klines", land)
    monkeypatch.setattr(binance_rest, "backfill_klines", land)
    series = [
        "--symbols",
        "BTCUSDT,NOPEUSDT",
        "--interval",
        "1h",
        "--start",
        "2026-12-01",
        "--end",
        "2026-12-08",
    ]
    for command in (["ingest", "--source", "binance"], ["backfill", "--no-validate"]):
        assert main([*command, *series]) == 1
        assert capsys.readouterr().err.splitlines() == [
            f"error: {NOPE_ERROR}",
            "error: 1 of the requested series failed (see the errors above); rerun to retry them",
        ]


def test_only_start_for_binance_commands_runs_up_to_now(lake_dir, capsys, monkeypatch):
    from datetime import UTC, datetime, timedelta

    import flows.sources.binance_rest as binance_rest
    from flows.sources import LandResult

    seen = []

    def land(settings, **options):
        seen.append(settings)
        return LandResult(refs={"klines": []}, notes={"errors": [], "warnings": []})

    monkeypatch.setattr(binance_rest, "land_rest_klines", land)
    monkeypatch.setattr(binance_rest, "backfill_klines", land)
    today = datetime.now(UTC).date()
    start = (today - timedelta(days=2)).isoformat()
    assert main(["ingest", "--source", "binance", "--symbols", "BTCUSDT", "--start", start]) == 0
    assert main(["backfill", "--symbols", "BTCUSDT", "--start", start, "--no-validate"]) == 0
    assert capsys.readouterr().err == ""
    # The day after today: end days are exclusive, and landing clips the range to now.
    assert [(s.start.isoformat(), s.end) for s in seen] == [(start, today + timedelta(days=1))] * 2


def run_summary(lake_dir, notes: dict) -> dict:
    return {
        "lake_dir": str(lake_dir),
        "landed": {"klines": 24},
        "notes": notes,
        "raw_gate": [],
        "mart_gate": [],
        "marts": {"fct_klines_hourly": 24},
        "snapshot_id": "20261207T000000000000Z",
        "seconds": {"ingest": 1.0},
    }


def test_run_names_each_series_that_did_not_land_and_exits_1(lake_dir, capsys, monkeypatch):
    # flows.pipeline is imported with this module, not here: importing Prefect binds its console log
    # handler to sys.stderr as it is then, and capsys closes this test's stderr when it ends (every
    # later Prefect log line then printed a "Logging error" traceback into other tests' stderr).
    notes = {
        "errors": [f"binance-NOPEUSDT-1h: no klines landed: {NOPE_ERROR}"],
        "warnings": [],
        "binance_rest": {},
    }
    monkeypatch.setattr(flows.pipeline, "lakehouse", lambda **kwargs: run_summary(lake_dir, notes))

    assert main(["run", "--source", "binance", "--symbols", "BTCUSDT,NOPEUSDT", "--interval", "1h"]) == 1
    captured = capsys.readouterr()
    assert "published snapshot 20261207T000000000000Z" in captured.out
    assert captured.err.splitlines() == [
        f"error: binance-NOPEUSDT-1h: no klines landed: {NOPE_ERROR}",
        "error: 1 series or inbox files did not land (see the errors above); the rest is published in "
        "snapshot 20261207T000000000000Z; fix the cause and rerun to retry them",
    ]

    monkeypatch.setattr(flows.pipeline, "lakehouse", lambda **kwargs: run_summary(lake_dir, {"errors": []}))
    assert main(["run", "--source", "binance", "--symbols", "BTCUSDT", "--interval", "1h"]) == 0
    assert capsys.readouterr().err == ""


def test_an_empty_lake_dir_variable_is_one_line_not_the_current_directory(monkeypatch, capsys):
    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", "")
    assert main(["validate"]) == 1
    assert capsys.readouterr().err == (
        "error: invalid setting lake_dir: it is empty, which would mean the current directory; set it "
        "to a folder, or unset it for the default (check the option or LAKEHOUSE_LAKE_DIR)\n"
    )
