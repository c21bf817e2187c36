"""Read-only SQL over the current published marts snapshot (one view per mart)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from flows.errors import LakehouseError
from flows.lake import current_snapshot, snapshot_path


def snapshot_connection(lake_dir: Path, snapshot_id: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per mart of one snapshot (CURRENT unless named)."""
    snapshot_id = snapshot_id or current_snapshot(lake_dir)
    if snapshot_id is None:
        raise LakehouseError(f"no published marts in {lake_dir}/marts; run `lakehouse run` first")
    folder = snapshot_path(lake_dir, snapshot_id)
    con = duckdb.connect(":memory:")
    for path in sorted(folder.glob("*.parquet")):
        con.execute(f"create view \"{path.stem}\" as select * from read_parquet('{path}')")
    # From here on the session may read only this snapshot's files and may not change settings.
    con.execute(f"set allowed_directories = ['{folder}/']")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def run_query(lake_dir: Path, sql: str) -> pd.DataFrame:
    con = snapshot_connection(lake_dir)
    try:
        statement = sql.strip().rstrip(";")
        first_word = statement.split(None, 1)[0].lower() if statement else ""
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
            return con.execute(statement).df()
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()[0]
            raise LakehouseError(f"query failed: {message}") from exc
    finally:
        con.close()


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso")
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        return frame.to_string(index=False)
