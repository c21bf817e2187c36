"""Read-only SQL over the current published marts snapshot (one view per mart)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flows.errors import LakehouseError
from flows.lake import current_snapshot, snapshot_path

LEADING_COMMENTS = re.compile(r"^(\s*(--[^\n]*(\n|$)|/\*.*?\*/))*\s*", re.DOTALL)


def snapshot_connection(
    lake_dir: Path, snapshot_id: str | None = None, extra_dirs: list[Path] | tuple = ()
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per mart of one snapshot (CURRENT unless named).

    The session may read only the snapshot's folder (plus `extra_dirs`, e.g. lake/raw for the
    raw-feed audit analysis) and cannot change its settings afterwards."""
    snapshot_id = snapshot_id or current_snapshot(lake_dir)
    if snapshot_id is None:
        raise LakehouseError(f"no published marts in {lake_dir}/marts; run `lakehouse run` first")
    folder = snapshot_path(lake_dir, snapshot_id)
    con = duckdb.connect(":memory:")
    for path in sorted(folder.glob("*.parquet")):
        con.execute(f"create view \"{path.stem}\" as select * from read_parquet('{path}')")
    # From here on the session may read only this snapshot's files and may not change settings.
    con.execute("set TimeZone = 'UTC'")  # timestamps print and cast in UTC on any machine
    allowed = ", ".join(f"'{Path(d)}/'" for d in (folder, *extra_dirs))
    con.execute(f"set allowed_directories = [{allowed}]")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def run_query(lake_dir: Path, sql: str, extra_dirs: list[Path] | tuple = ()) -> pd.DataFrame:
    con = snapshot_connection(lake_dir, extra_dirs=extra_dirs)
    try:
        statement = sql.strip().rstrip(";")
        code = LEADING_COMMENTS.sub("", statement)
        first_word = code.split(None, 1)[0].lower() if code else ""
        if first_word not in (
            "select",
            "with",
            "from",
            "describe",
            "show",
            "summarize",
            "pivot",
            "values",
        ):
            raise LakehouseError(
                f"query must be read-only SQL (select/with/describe...), got {first_word or 'nothing'!r}"
            )
        try:
            count = len(con.extract_statements(statement))
            if count > 1:
                # DuckDB would run them all and show only the last result.
                raise LakehouseError(
                    f"query holds {count} SQL statements; give one at a time (each its own `lakehouse query`)"
                )
            return con.execute(statement).df()
        except duckdb.Error as exc:
            raise LakehouseError(query_error(str(exc), marts(con))) from exc
    finally:
        con.close()


def marts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The views of a snapshot session: one per published mart."""
    return [
        name for (name,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()
    ]


def query_error(message: str, names: list[str]) -> str:
    """DuckDB's error as one line: its first line, its hint, and what to run next.

    DuckDB puts its hint ("Did you mean ...", "Candidate bindings: ...") and the caret under
    the query on lines of their own. A table suggestion that is not a mart (DuckDB offers its
    own catalog's tables, such as pg_tables) is replaced by how to list the marts.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "DuckDB gave no message"
    hint = next((line for line in lines[1:] if line.startswith(("Did you mean", "Candidate bindings"))), "")
    if first.startswith("Catalog Error") and not any(f'"{name}"' in hint for name in names):
        hint = 'List the published marts with: lakehouse query "show tables"'
    elif first.startswith("Binder Error") and hint.startswith("Candidate bindings"):
        hint += '; every column of a mart: lakehouse query "describe <mart>"'
    return f"query failed: {first}" + (f" {hint}" if hint else "")


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json_records(frame)
    if frame.empty:  # not pandas' "Empty DataFrame / Columns: [...] / Index: []"
        return f"(no rows; columns: {', '.join(map(str, frame.columns))})"
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        return frame.to_string(index=False)


def json_records(frame: pd.DataFrame) -> str:
    """The frame as JSON records with ISO times, every float exactly as stored.

    pandas' to_json keeps 10 decimal places: a price of 0.000012345678901234 came out as
    0.0000123457. Float columns are written with Python's shortest exact repr instead (NaN
    and infinities as null, as pandas writes them); everything else as pandas writes it.
    """
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        if pd.api.types.is_float_dtype(column.dtype):
            values = column.to_numpy(dtype="float64", na_value=np.nan).tolist()
            for record, value in zip(records, values, strict=True):
                record[name] = value if math.isfinite(value) else None
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def compile_analysis(settings, name: str, dbt_vars: str | None = None) -> str:
    """Compile dbt_project/analyses/<name>.sql with dbt and point its mart refs at the snapshot views."""
    from flows.transform import DBT_PROJECT, dbt_paths, run_dbt

    available = sorted(p.stem for p in (DBT_PROJECT / "analyses").glob("*.sql"))
    if name not in available:
        raise LakehouseError(
            f"no analysis {name!r} in dbt_project/analyses; choose one of {', '.join(available)}"
        )
    args = ["compile", "--select", name, "--quiet"]
    if dbt_vars:
        args += ["--vars", dbt_vars]
    run_dbt(settings, *args)
    target, _ = dbt_paths(settings)
    compiled = next((target / "compiled").rglob(f"analyses/{name}.sql"), None)
    if compiled is None:
        raise LakehouseError(f"dbt did not write a compiled {name}.sql under {target}/compiled")
    # Refs compile to "<database>"."marts"."<mart>"; in a snapshot session each mart is a plain view.
    return re.sub(r'"[^"]+"\."marts"\."([^"]+)"', r'"\1"', compiled.read_text())
