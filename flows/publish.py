"""Write-audit-publish of marts: export to a hidden snapshot, validate it, then swap CURRENT."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from flows.errors import LakehouseError
from flows.lake import (
    lake_lock,
    marts_dir,
    new_snapshot_id,
    prune_snapshots,
    snapshot_path,
    swap_current,
)
from flows.quality import (
    GateResult,
    describe_failures,
    gx_context,
    record_gate_results,
    validate_frame,
)
from flows.settings import Settings
from flows.transform import mart_tables, warehouse_path


class GateFailed(LakehouseError):
    """Gate 2 rejected the built marts; the published snapshot did not change."""


@dataclass
class PublishResult:
    snapshot_id: str
    tables: dict[str, int] = field(default_factory=dict)
    gate: list[GateResult] = field(default_factory=list)


def export_marts(settings: Settings, target: Path) -> dict[str, int]:
    """Copy every marts table from the warehouse into parquet files under target."""
    target.mkdir(parents=True)
    counts = {}
    with duckdb.connect(str(warehouse_path(settings)), read_only=True) as con:
        for table in mart_tables(settings):
            path = target / f"{table}.parquet"
            con.execute(f"copy (select * from marts.{table}) to '{path}' (format parquet, compression zstd)")
            counts[table] = pq.ParquetFile(path).metadata.num_rows
    return counts


def audit_snapshot(settings: Settings, staged: Path, tables: list[str]) -> list[GateResult]:
    context = gx_context(settings)
    results = []
    for table in tables:
        frame = pq.read_table(staged / f"{table}.parquet").to_pandas()
        results.append(validate_frame(settings, table, frame, context=context))
    context.build_data_docs()
    record_gate_results(settings, results)
    return results


def publish_marts(settings: Settings) -> PublishResult:
    """WAP: write the marts to a staged snapshot, audit it with gate 2, then publish atomically."""
    with lake_lock(settings.lake_dir, "publish"):
        snapshot_id = new_snapshot_id()
        staged = marts_dir(settings.lake_dir) / f".staged-{snapshot_id}"
        try:
            counts = export_marts(settings, staged)
            gate = audit_snapshot(settings, staged, sorted(counts))
            if not all(r.success for r in gate):
                raise GateFailed(
                    f"gate 2 failed, snapshot not published (the previous one stays live): "
                    f"{describe_failures(gate)}; see `lakehouse dq-report`"
                )
            staged.rename(snapshot_path(settings.lake_dir, snapshot_id))
        finally:
            if staged.exists():
                shutil.rmtree(staged)
        swap_current(settings.lake_dir, snapshot_id)
        prune_snapshots(settings.lake_dir, settings.snapshots_kept)
    return PublishResult(snapshot_id=snapshot_id, tables=counts, gate=gate)
