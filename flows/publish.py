"""Write-audit-publish of marts: export to a hidden snapshot, validate it, then swap CURRENT."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.errors import LakehouseError
from flows.lake import (
    FINGERPRINT_KEY,
    current_snapshot,
    lake_lock,
    marts_dir,
    new_snapshot_id,
    prune_snapshots,
    read_hold,
    release_hold,
    snapshot_path,
    swap_current,
    utc_now,
    write_parquet_atomic,
)
from flows.quality import (
    GateResult,
    ReadAhead,
    build_data_docs,
    describe_failures,
    gx_context,
    mart_columns,
    mart_suite,
    record_gate_results,
    validate_frame,
)
from flows.settings import PROJECT_ROOT, Settings
from flows.transform import warehouse_path

log = logging.getLogger(__name__)


class GateFailed(LakehouseError):
    """Gate 2 rejected the built marts; the published snapshot did not change."""


@dataclass
class PublishResult:
    snapshot_id: str
    tables: dict[str, int] = field(default_factory=dict)
    gate: list[GateResult] = field(default_factory=list)
    # Marts unchanged since the previous snapshot, whose published file was linked, not copied.
    reused: list[str] = field(default_factory=list)
    # Of those, the marts whose passing gate 2 result was carried over, not validated again
    # (see carried_validation); they have no entry in `gate`.
    carried: list[str] = field(default_factory=list)
    # False: no new snapshot (see snapshot_decision); snapshot_id is the live one, note says why.
    published: bool = True
    note: str = ""


# DuckDB's memory while publish reads the warehouse. DuckDB keeps what it read cached up to its
# limit (by default 80% of RAM); publish's reads stream (the copy to parquet, the rollup sums),
# so a small limit keeps that cache out of gate 2's way: at 50 symbols a 1 GB cache beside the
# frame of the pairs mart (10.7M rows) took publish past 4 GB.
READER_CONFIG = {"memory_limit": "256MB"}


# Rows of exported marts waiting for gate 2 beyond which the export pauses.
OVERLAP_ROWS = 2_000_000


def open_warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The finished warehouse, read-only; every reader here opens it alike (DuckDB refuses two
    connections to one file with different settings in one process)."""
    path = warehouse_path(settings)
    if not path.exists():
        raise LakehouseError(f"no warehouse at {path}; run `lakehouse build` first")
    con = duckdb.connect(str(path), read_only=True, config=READER_CONFIG)
    # A copy of a large mart takes seconds: no progress bar on the user's terminal.
    con.execute("set enable_progress_bar = false").fetchall()
    return con


def mart_tables(settings: Settings) -> list[str]:
    """Tables in the warehouse's marts schema, largest first."""
    with open_warehouse(settings) as con:
        rows = con.execute(
            "select table_name from duckdb_tables() "
            "where schema_name = 'marts' and not temporary order by estimated_size desc, table_name"
        ).fetchall()
    return [row[0] for row in rows]


def missing_marts(settings: Settings, tables: list[str]) -> list[str]:
    """Marts of the published snapshot that are models of the project but not in the warehouse.

    Publishing without them would drop them from the new snapshot, and every query, chart and
    export of them would fail. A mart whose model left the project may go.
    """
    current = current_snapshot(settings.lake_dir)
    if current is None:
        return []
    models = PROJECT_ROOT / "dbt_project" / "models" / "marts"
    project = {path.stem for path in models.rglob("*") if path.suffix in (".sql", ".py")}
    published = {path.stem for path in snapshot_path(settings.lake_dir, current).glob("*.parquet")}
    return sorted((published & project) - set(tables))


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, int]:
    """What a marts table holds, as a short string: its columns and types, its row count and the
    sum of its rows' 64-bit hashes (the same for the same rows in any order; one scan, about
    0.06 s for 1.8M rows of 29 columns). Returned with the row count."""
    columns = con.execute(
        "select string_agg(column_name || ' ' || data_type, ', ' order by ordinal_position) "
        "from information_schema.columns where table_schema = 'marts' and table_name = ?",
        [table],
    ).fetchall()[0][0]
    rows, total = con.execute(f"select count(*), sum(hash(t)::hugeint) from marts.{table} as t").fetchall()[0]
    schema = hashlib.sha1((columns or "").encode()).hexdigest()[:16]
    return f"v1:{schema}:{rows}:{total or 0}", rows


def file_fingerprint(path: Path) -> str | None:
    """The fingerprint an exported mart file was written with (None: none, or no such file)."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(FINGERPRINT_KEY.encode())
    return value.decode() if value else None


def reuse_file(previous: Path, path: Path) -> None:
    """Put the published file of an unchanged mart into the new snapshot: a hard link (snapshots
    are never written after they are published), or a copy where the file system has none."""
    try:
        os.link(previous, path)
    except OSError:
        shutil.copyfile(previous, path)


class ExportedMart(NamedTuple):
    table: str
    rows: int
    fingerprint: str
    reused: bool  # the published snapshot's file, linked


def export_marts(settings: Settings, target: Path, tables: list[str]) -> Iterator[ExportedMart]:
    """Copy each marts table into target/<table>.parquet; yields each as it is written.

    A table whose fingerprint equals that of its file in the published snapshot is not copied
    again: the published file is linked in. After a new hour of klines most user and
    transaction marts are unchanged, and fct_transactions alone takes 3 s of the copy at 1.8M
    rows.
    """
    target.mkdir(parents=True)
    current = current_snapshot(settings.lake_dir)
    published = snapshot_path(settings.lake_dir, current) if current else None
    with open_warehouse(settings) as con:
        for table in tables:
            path = target / f"{table}.parquet"
            fingerprint, rows = table_fingerprint(con, table)
            previous = published / f"{table}.parquet" if published else None
            reused = previous is not None and file_fingerprint(previous) == fingerprint
            if reused:
                reuse_file(previous, path)
            else:
                # DuckDB 2.0 refuses the next statement while a result (the copy's row count) is unread.
                con.execute(
                    f"copy (select * from marts.{table}) to '{path}' (format parquet, compression zstd, "
                    f"kv_metadata {{{FINGERPRINT_KEY}: '{fingerprint}'}})"
                ).fetchall()
            yield ExportedMart(table, rows, fingerprint, reused)


def previous_row_counts(settings: Settings) -> dict[str, int]:
    """Rows per mart in the published snapshot (empty before the first publish)."""
    current = current_snapshot(settings.lake_dir)
    if current is None:
        return {}
    counts = {}
    for path in snapshot_path(settings.lake_dir, current).glob("*.parquet"):
        counts[path.stem] = pq.ParquetFile(path).metadata.num_rows
    return counts


ROLLUP_INTERVALS = {"hour": ("1m", "1h"), "day": ("1m", "1h", "1d")}
PERIOD_MS = {"hour": 3_600_000, "day": 86_400_000}


def sql_list(values: Iterable[str]) -> str:
    """Constant strings as a SQL list: ('1m', '1h'); ('1m') for one (a Python tuple would give ('1m',))."""
    return "(" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + ")"


def rollup_inputs(
    settings: Settings, periods: list[str]
) -> dict[str, tuple[pd.DataFrame | None, datetime | None]]:
    """Per period: sums of the 1-minute candles per market, symbol and period, and the newest
    input period.

    Read from the warehouse the marts were built from (read-only: the build has finished);
    (None, None) when the warehouse has no unioned klines relation. The minutes are scanned
    once, into hourly sums; a day's sums are the sums of its hours' (within the gate's 1e-9
    relative tolerance of summing the minutes). Periods are UTC buckets of epoch milliseconds
    (date_trunc on a timestamptz goes through ICU and is twice as slow).
    """
    path = warehouse_path(settings)
    if not periods or not path.exists():
        return dict.fromkeys(periods, (None, None))
    with open_warehouse(settings) as con:
        con.execute("set TimeZone = 'UTC'").fetchall()
        exists = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'intermediate' and table_name = 'int_klines_unioned'"
        ).fetchall()[0][0]
        if not exists:
            return dict.fromkeys(periods, (None, None))
        hourly = con.sql(
            f"""
            select market, symbol, epoch_ms(opened_at) // {PERIOD_MS["hour"]} * {PERIOD_MS["hour"]} as open_ms,
                sum(volume) as input_volume, sum(quote_volume) as input_quote_volume,
                sum(num_trades) as input_num_trades, count(*) as input_candle_count,
            from intermediate.int_klines_unioned
            where kline_interval = '1m'
            group by all
            """
        ).to_arrow_table()
        con.register("hourly_inputs", hourly)
        newest = con.execute(
            "select "
            + ", ".join(
                f"date_trunc('{p}', max(opened_at) filter (where kline_interval in {sql_list(ROLLUP_INTERVALS[p])}))"
                for p in periods
            )
            + " from intermediate.int_klines_unioned"
        ).fetchall()[0]
        out = {}
        for period, latest in zip(periods, newest, strict=True):
            inputs = con.sql(
                f"""
                select market, symbol,
                    make_timestamptz(open_ms // {PERIOD_MS[period]} * {PERIOD_MS[period]} * 1000) as open_time,
                    sum(input_volume) as input_volume, sum(input_quote_volume) as input_quote_volume,
                    sum(input_num_trades) as input_num_trades, sum(input_candle_count)::bigint as input_candle_count,
                from hourly_inputs
                group by all
                """
            ).to_arrow_table()
            out[period] = (inputs.to_pandas(), latest)
    return out


# Beside the marts of each published snapshot: what gate 2 found of each, and of which rows.
GATE_RECORD = "gate2.json"
# `now` when a suite is built for its fingerprint. Mart suites use the validation time only as
# an upper bound (nothing dated in the future), which rows that passed once still meet later.
SUITE_NOW = datetime(2000, 1, 1, tzinfo=UTC)


def suite_fingerprint(table: str, params: dict) -> str | None:
    """The expectations gate 2 checks a mart with, as a short string; None when the outcome
    depends on more than the mart's rows (a prepare step joins other inputs, e.g. the rollup
    marts' 1-minute sums).

    Built with `now` fixed and without the previous row count: a mart linked from the published
    snapshot has exactly the published row count, which any min_row_ratio (at most 1) admits.
    """
    suite, prepare = mart_suite(table, {**params, "now": SUITE_NOW, "previous_rows": None})
    if prepare is not None:
        return None
    configs = [e.configuration.to_json_dict() for e in suite.expectations]
    return hashlib.sha1(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def published_validations(settings: Settings) -> dict[str, dict]:
    """Per mart of the published snapshot, the gate 2 record it was published with ({} if none)."""
    current = current_snapshot(settings.lake_dir)
    if current is None:
        return {}
    try:
        return json.loads((snapshot_path(settings.lake_dir, current) / GATE_RECORD).read_text())["marts"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # published before gate 2 kept records: every mart is validated


def carried_validation(mart: ExportedMart, suite: str | None, published: dict[str, dict]) -> dict | None:
    """The published record of a mart gate 2 need not validate again, else None: the same rows
    (its file was linked from the published snapshot) against the same expectations passed."""
    record = published.get(mart.table)
    if not mart.reused or suite is None or not isinstance(record, dict):
        return None
    if record.get("fingerprint") != mart.fingerprint or record.get("suite") != suite:
        return None
    return record


def read_mart(path: Path, table: str, params: dict) -> pd.DataFrame:
    """The columns of a staged mart its suite reads, as a frame.

    Strings are read as dictionaries and arrive as categoricals: a few codes instead of a
    Python string per row, and no full string column in between (the pairs mart has three
    string keys on 10.7M rows at 50 symbols). Columns are read one at a time, each handed to
    pandas and its arrow buffers freed before the next: for that mart, a peak of 1.0 GB
    instead of 2.0 GB for a 0.77 GB frame, and a third of the time.
    """
    schema = pq.read_schema(path)
    return read_columns(path, mart_columns(table, params, schema.names) or schema.names)


def read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """Some columns of a parquet file as a frame (strings as categoricals, NaN as +inf)."""
    schema = pq.read_schema(path)
    strings = [f.name for f in schema if _is_string(f.type) and f.name in columns]
    with pq.ParquetFile(path, read_dictionary=strings) as file:
        return _to_frame(file.read(columns=[column]) for column in columns)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _to_frame(columns: Iterable[pa.Table]) -> pd.DataFrame:
    """One-column tables as one frame, each handed to pandas and its buffers freed before the next."""
    data = {}
    for table in columns:
        name = table.column_names[0]
        if _is_string(table.schema.field(0).type):
            table = pa.table({name: pc.dictionary_encode(table.column(0))})
        data[name] = not_a_number_as_infinity(table).to_pandas(split_blocks=True, self_destruct=True)[name]
        pa.default_memory_pool().release_unused()
    return pd.DataFrame(data, copy=False)


# A mart with more rows than this is validated in parts (validate_in_parts).
PART_ROWS = 2_000_000


def validate_in_parts(
    settings: Settings, path: Path, table: str, rows: int, params: dict, context, validations: list
) -> GateResult | None:
    """Gate 2 for a mart too large for one frame: memory bounded by a part, not by the mart.

    The suite is split (quality.part_plan): the row count and other whole-table aggregates run
    once, over the columns they name (or one column, for a count); every other expectation runs
    on each of about rows / PART_ROWS parts, each with the columns the suite names. A part holds
    whole grain keys (rows whose key hashes alike), so a repeated key is caught whichever rows
    hold it. None when the suite cannot be split (validate the mart whole).

    At 50 symbols the pairs mart has 10.7M rows; validated whole its frame (0.77 GB, and GE's
    copies of it) took publish to 3.1 GB. The number of parts grows with the mart, its
    memory does not: the pairs mart grows with the square of the symbols.
    """
    from flows.quality import fold_validation, part_plan, run_suite, sub_suite, suite_columns

    suite, prepare = mart_suite(table, params)
    plan = None if prepare is not None else part_plan(suite)
    if plan is None:
        return None
    names = pq.read_schema(path).names
    result = GateResult(gate="marts", dataset=table, batches=1, accepted=rows)
    if plan.whole:
        whole = sub_suite(mart_suite(table, params)[0], table, plan.whole)
        columns = [c for c in names if c in (suite_columns(whole) or ())] or names[:1]
        frame = read_columns(path, columns)
        fold_validation(result, run_suite(context, whole, f"mart_{table}", frame, validations))
        del frame
    parts = -(-rows // PART_ROWS)
    part_suite = sub_suite(mart_suite(table, params)[0], f"{table}__parts", plan.rows)
    columns = [c for c in names if c in (suite_columns(part_suite) or ())] or names[:1]
    for frame in read_parts(path, columns, plan.key, parts):
        fold_validation(result, run_suite(context, part_suite, f"mart_{table}__parts", frame, validations))
        del frame
    result.evaluated = len(plan.whole) + len(plan.rows)
    result.batches = parts
    return result


def read_parts(path: Path, columns: list[str], key: list[str], parts: int) -> Iterator[pd.DataFrame]:
    """A parquet file's rows in `parts` frames: by the hash of key (every row of a key in one
    part), or by row position without a key. Each is read by its own scan of the file."""
    quoted = ", ".join(_quote(c) for c in columns)
    by = f"hash({', '.join(_quote(c) for c in key)})" if key else "file_row_number"
    split = f"{by} % {parts}"
    with duckdb.connect(config=READER_CONFIG) as con:
        con.execute("set TimeZone = 'UTC'").fetchall()
        con.execute("set enable_progress_bar = false").fetchall()
        for part in range(parts):
            # con.sql, not con.execute: a DB-API result copies the rows once more into arrow.
            arrow = con.sql(
                f"select {quoted} from read_parquet({sql_list([str(path)])}, file_row_number = true) "
                f"where {split} = {part}"
            ).to_arrow_table()
            singles = [arrow.select([name]) for name in arrow.column_names]
            del arrow
            yield _to_frame(_popping(singles))


def _popping(items: list) -> Iterator:
    """The items of a list, each removed from it as it is taken (so only the caller holds it)."""
    while items:
        yield items.pop(0)


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def not_a_number_as_infinity(table: pa.Table) -> pa.Table:
    """A one-column table whose NaN values (0/0, a regression over a constant series) are +inf.

    pandas reads NaN as a missing value, and GE skips missing values: a NaN z-score or hedge
    ratio passed every finiteness check, while a null (too little history) is allowed. As +inf
    it fails them. Only the frame validated changes, never the published file.
    """
    column = table.column(0)
    if not pa.types.is_floating(column.type):
        return table
    nan = pc.is_nan(column)
    if not pc.any(nan).as_py():
        return table
    return pa.table({table.column_names[0]: pc.if_else(nan, float("inf"), column)})


@dataclass
class Audit:
    results: list[GateResult]
    counts: dict[str, int]
    reused: list[str]
    carried: list[str]
    records: dict[str, dict]  # per mart, what gate2.json of the new snapshot says
    gate_runs: Path | None = None  # this gate 2's rows, as written for fct_data_quality_runs


def audit_snapshot(
    settings: Settings, staged: Path, tables: list[str], context, exported: Iterable[ExportedMart]
) -> Audit:
    """Gate 2: every staged mart against its suite, with the published snapshot as the baseline.

    exported yields each of tables as it is written under staged; each mart is validated as soon
    as it arrives. A mart linked unchanged from the published snapshot, whose expectations have
    not changed either, has passed them already: its result is carried over
    (carried_validation), and it is neither read nor validated again.
    """
    from expectations.suites import load_module

    previous = previous_row_counts(settings)
    published = published_validations(settings)
    now = utc_now()
    audit = Audit(results=[], counts={}, reused=[], carried=[], records={})
    validations: list = []
    periods = {table: getattr(load_module(table), "ROLLUP", None) for table in tables}
    inputs = rollup_inputs(settings, sorted({p for p in periods.values() if p}))
    for mart in exported:
        table = mart.table
        audit.counts[table] = mart.rows
        if mart.reused:
            audit.reused.append(table)
        params = {
            "now": now,
            "previous_rows": previous.get(table),
            "min_row_ratio": settings.gate_min_row_ratio,
        }
        if periods[table]:
            params["rollup_inputs"], params["latest_input"] = inputs[periods[table]]
        suite = suite_fingerprint(table, params)
        carried = carried_validation(mart, suite, published)
        if carried is not None:
            audit.carried.append(table)
            audit.records[table] = carried
            continue
        path = staged / f"{table}.parquet"
        result = None
        if mart.rows > PART_ROWS:
            result = validate_in_parts(settings, path, table, mart.rows, params, context, validations)
        if result is None:
            frame = read_mart(path, table, params)
            result = validate_frame(
                settings, table, frame, context=context, params=params, validations=validations
            )
            del frame
        audit.results.append(result)
        audit.records[table] = {
            "fingerprint": mart.fingerprint,
            "suite": suite,
            "validated_at": now.isoformat(),
            "evaluated": result.evaluated,
        }
    audit.results.sort(key=lambda r: r.dataset)
    if validations:  # without any, the site is as the last gate left it
        build_data_docs(context, validations)
    audit.gate_runs = record_gate_results(settings, audit.results)
    audit.counts = dict(sorted(audit.counts.items()))
    return audit


QUALITY_RUNS = "fct_data_quality_runs"


def append_gate_runs(staged: Path, gate_runs: Path | None) -> int | None:
    """Add this publish's gate 2 rows to the staged fct_data_quality_runs.

    dbt builds that mart before gate 2 runs, so a snapshot showed the gate 2 of the publish
    before it (and none after the first publish): the dashboard's gate status was a run behind.
    The file is replaced, never written in place: it may be a link to the live snapshot's.
    Returns the mart's rows now (None when it was left as it was).
    """
    target = staged / f"{QUALITY_RUNS}.parquet"
    if gate_runs is None or not target.exists():
        return None
    mart = pq.read_table(target)
    runs = pq.read_table(gate_runs).to_pandas()
    validated = runs["rows_accepted"] + runs["rows_quarantined"]
    rows = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "gate": runs["gate"],
            "dataset": runs["dataset"],
            "validated_at": runs["validated_at"],
            "batches": runs["batches"],
            "rows_accepted": runs["rows_accepted"],
            "rows_quarantined": runs["rows_quarantined"],
            "rows_validated": validated,
            "quarantined_ratio": runs["rows_quarantined"] / validated.where(validated > 0),
            "expectations_evaluated": runs["expectations_evaluated"],
            "expectations_failed": runs["expectations_failed"],
            "failed_expectations": runs["failed_expectations"].where(runs["failed_expectations"] != ""),
            "is_success": runs["success"],
        }
    )
    if sorted(rows.columns) != sorted(mart.column_names):
        log.warning("publish: %s has other columns than gate 2's rows; left as dbt built it", QUALITY_RUNS)
        return None
    # DuckDB writes a column without nulls as required; gate 2's rows may have one (the ratio of
    # an empty mart), so every field may be null.
    schema = pa.schema([field.with_nullable(True) for field in mart.schema], metadata=mart.schema.metadata)
    added = pa.Table.from_pandas(rows[mart.column_names], preserve_index=False)
    write_parquet_atomic(pa.concat_tables([mart.cast(schema), added.cast(schema)]), target)
    return mart.num_rows + added.num_rows


# Marts that log the pipeline's own runs rather than hold data: a rollback's hold ignores them
# (a gate 1 run that quarantined a batch changes only them, which is no new data).
RUN_LOG_MARTS = frozenset({QUALITY_RUNS})


def content_fingerprint(con: duckdb.DuckDBPyConnection, relation: str) -> tuple:
    """Columns with types, rows and the sum of the rows' hashes of a table or a parquet file, alike
    for both: publish appends gate 2's rows to the file of fct_data_quality_runs after the export,
    so that file's recorded fingerprint is not its content's."""
    columns = tuple(row[:2] for row in con.execute(f"describe select * from {relation}").fetchall())
    rows, total = con.execute(f"select count(*), sum(hash(t)::hugeint) from {relation} as t").fetchall()[0]
    return columns, rows, total or 0


def equals_snapshot(
    con: duckdb.DuckDBPyConnection, settings: Settings, tables: list[str], snapshot_id: str
) -> bool:
    """Whether the warehouse's marts are the marts of a published snapshot, row for row."""
    files = {path.stem: path for path in snapshot_path(settings.lake_dir, snapshot_id).glob("*.parquet")}
    if set(files) != set(tables):
        return False
    for table in set(tables) - RUN_LOG_MARTS:  # row counts first: they differ after most builds
        rows = con.execute(f"select count(*) from marts.{table}").fetchall()[0][0]
        if pq.ParquetFile(files[table]).metadata.num_rows != rows:
            return False
    for table in tables:
        if file_fingerprint(files[table]) == table_fingerprint(con, table)[0]:
            continue
        relation = "read_parquet('{}')".format(str(files[table]).replace("'", "''"))
        if content_fingerprint(con, f"marts.{table}") != content_fingerprint(con, relation):
            return False
    return True


def equals_held(con: duckdb.DuckDBPyConnection, tables: list[str], hold: dict) -> bool:
    """Whether the warehouse's data marts are those of the snapshot a rollback left (its hold
    records their fingerprints); a marker without them holds until it is released."""
    held = {name: value for name, value in (hold.get("marts") or {}).items() if name not in RUN_LOG_MARTS}
    if not held:
        return True
    data = [table for table in tables if table not in RUN_LOG_MARTS]
    if set(data) != set(held):
        return False
    return all(held[table] == table_fingerprint(con, table)[0] for table in data)


def snapshot_decision(settings: Settings, tables: list[str]) -> str | None:
    """None: publish a new snapshot; else the one line saying why the live one stays.

    Every run published a snapshot, changed or not: with a 5-minute schedule and 5 snapshots
    kept, rollback targets were pruned within 25 minutes, and a run after a rollback published
    the very marts rolled back from again.
    """
    live = current_snapshot(settings.lake_dir)
    if live is None:
        return None
    hold = read_hold(settings.lake_dir)
    with open_warehouse(settings) as con:
        if equals_snapshot(con, settings, tables, live):
            return f"publish: every mart equals the live snapshot {live} under {marts_dir(settings.lake_dir)}, so no new snapshot; {live} stays live"
        if hold is not None and equals_held(con, tables, hold):
            origin = hold.get("rolled_back_from") or "an unknown snapshot"
            return (
                f"publish: {live} is held by a rollback from {origin} and the built marts equal that one's, "
                f"so {live} stays live until new data arrives; `lakehouse snapshots --release-hold` lifts the hold"
            )
    return None


def publish_marts(settings: Settings) -> PublishResult:
    """WAP: write the marts to a staged snapshot, audit it with gate 2, then publish atomically."""
    with lake_lock(settings.lake_dir, "publish"):
        snapshot_id = new_snapshot_id()
        staged = marts_dir(settings.lake_dir) / f".staged-{snapshot_id}"
        try:
            tables = mart_tables(settings)
            if not tables:
                live = current_snapshot(settings.lake_dir)
                raise LakehouseError(
                    f"the warehouse {warehouse_path(settings)} has no marts, so there is nothing to "
                    f"publish ({f'snapshot {live} stays live' if live else 'nothing was published yet'}); "
                    "build them first with `lakehouse build` (or `lakehouse run`)"
                )
            missing = missing_marts(settings, tables)
            if missing:
                live = current_snapshot(settings.lake_dir)
                raise LakehouseError(
                    f"the warehouse {warehouse_path(settings)} lacks {len(missing)} mart(s) of the published "
                    f"snapshot {live} ({', '.join(missing)}), so nothing was published and {live} stays "
                    "live; build them again with `lakehouse build --full-refresh`"
                )
            note = snapshot_decision(settings, tables)
            if note is not None:
                log.info(note)
                live = current_snapshot(settings.lake_dir)
                return PublishResult(
                    snapshot_id=live,
                    tables=previous_row_counts(settings),
                    reused=sorted(tables),
                    published=False,
                    note=note,
                )
            # The export runs in a thread, largest mart first, and each mart is validated as
            # soon as its file is written: DuckDB's copy and GE's checks (which hold the GIL)
            # overlap instead of adding up. It waits while a large mart is being checked, so
            # the copy's memory never adds to the largest frame's (gate 2 holds a frame of the
            # rows it checks, several times over while GE computes).
            exported = ReadAhead(export_marts(settings, staged, tables), lambda mart: mart.rows, OVERLAP_ROWS)
            try:
                audit = audit_snapshot(settings, staged, tables, gx_context(settings), exported)
            finally:
                exported.close()
            if not all(r.success for r in audit.results):
                raise GateFailed(
                    f"gate 2 failed, snapshot not published (the previous one stays live): "
                    f"{describe_failures(audit.results)}; see `lakehouse dq-report`"
                )
            rows = append_gate_runs(staged, audit.gate_runs)
            if rows is not None:
                audit.counts[QUALITY_RUNS] = rows
            (staged / GATE_RECORD).write_text(json.dumps({"marts": audit.records}, indent=1, sort_keys=True))
            staged.rename(snapshot_path(settings.lake_dir, snapshot_id))
        finally:
            if staged.exists():
                shutil.rmtree(staged)
        swap_current(settings.lake_dir, snapshot_id)
        if release_hold(settings.lake_dir) is not None:  # new data: the rollback has done its part
            log.info("publish: new marts replaced the snapshot a rollback held; the hold is lifted")
        prune_snapshots(settings.lake_dir, settings.snapshots_kept)
    if audit.reused:
        log.info(
            "publish: %d unchanged marts linked from the previous snapshot: %s",
            len(audit.reused),
            ", ".join(sorted(audit.reused)),
        )
    if audit.carried:
        log.info(
            "gate 2: %d unchanged marts had passed the same expectations, not validated again: %s",
            len(audit.carried),
            ", ".join(sorted(audit.carried)),
        )
    return PublishResult(
        snapshot_id=snapshot_id,
        tables=audit.counts,
        gate=audit.results,
        reused=sorted(audit.reused),
        carried=sorted(audit.carried),
    )
