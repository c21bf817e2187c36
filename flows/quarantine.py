"""Quarantined batches: list them, show why they failed, and re-admit them after a fix (re-validated)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import LakehouseError
from flows.lake import BatchRef, iter_batches
from flows.settings import Settings


@dataclass
class QuarantinedBatch:
    """One quarantined batch file and the reason written beside it."""

    ref: BatchRef
    path: Path
    rows: int
    reason: dict

    @property
    def failed(self) -> list[str]:
        return [f["expectation"] for f in self.reason.get("failed_expectations", [])]

    @property
    def partition(self) -> str:
        return str(self.ref.relative_dir())


def list_quarantine(lake_dir: Path) -> list[QuarantinedBatch]:
    """Every quarantined batch, oldest first."""
    batches = []
    for ref in iter_batches(lake_dir, "quarantine"):
        path = ref.path(lake_dir, "quarantine")
        try:
            reason = json.loads(path.with_suffix(".json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            reason = {}
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError):  # quarantined because it is not readable parquet
            rows = 0
        batches.append(QuarantinedBatch(ref, path, rows, reason))
    return sorted(batches, key=lambda b: (b.reason.get("quarantined_at", ""), b.partition, b.ref.batch_id))


def find_batch(lake_dir: Path, batch_id: str) -> QuarantinedBatch:
    """The quarantined batch whose id is (or starts with) batch_id; one clear error otherwise."""
    matches = [b for b in list_quarantine(lake_dir) if b.ref.batch_id.startswith(batch_id)]
    if not matches:
        raise LakehouseError(
            f"no quarantined batch {batch_id!r} under {Path(lake_dir) / 'quarantine'}; "
            "see `lakehouse quarantine list`"
        )
    exact = [b for b in matches if b.ref.batch_id == batch_id]
    if len(exact) == 1:
        return exact[0]
    if len(matches) > 1:
        raise LakehouseError(
            f"batch id {batch_id!r} matches {len(matches)} quarantined batches; give more characters"
        )
    return matches[0]


def show_batch(lake_dir: Path, batch_id: str, limit: int = 20) -> tuple[QuarantinedBatch, pd.DataFrame]:
    """A quarantined batch and its first rows, each with the expectations it failed."""
    batch = find_batch(lake_dir, batch_id)
    try:
        frame = pq.read_table(batch.path, partitioning=None).to_pandas().head(limit)
    except (pa.ArrowException, OSError) as exc:
        raise LakehouseError(
            f"quarantined batch {batch.ref.batch_id} at {batch.path} is not readable parquet "
            f"({type(exc).__name__}: {exc}); replace it with a fixed copy and run "
            f"`lakehouse quarantine release {batch.ref.batch_id}`, or delete it and its .json"
        ) from None
    reasons = batch.reason.get("row_reasons", {})
    frame.insert(0, "failed", ["; ".join(reasons.get(str(i), [])) for i in range(len(frame))])
    return batch, frame


@dataclass
class ReleaseResult:
    batch_id: str
    released: int
    still_quarantined: int
    failed: list[str]
    unreadable: str = ""  # why the file is not readable parquet (then nothing was validated)


def release_batch(settings: Settings, batch_id: str) -> ReleaseResult:
    """Re-validate a quarantined batch with gate 1; passing rows join raw, the rest stay here.

    The fix is whatever made the rows valid since: a corrected quarantine file, a parent row that
    has arrived since (referential checks), or a changed suite. Nothing is admitted unvalidated.
    """
    from flows.quality import UNREADABLE, validate_zone

    batch = find_batch(settings.lake_dir, batch_id)
    results = validate_zone(settings, "quarantine", refs=[batch.ref])  # holds the gate 1 lock
    if not results:
        raise LakehouseError(
            f"quarantined batch {batch.ref.batch_id} was released or removed meanwhile; "
            "see `lakehouse quarantine list`"
        )
    result = results[0]
    unreadable = ""
    if UNREADABLE in result.failed_expectations:
        reason = json.loads(batch.path.with_suffix(".json").read_text())
        unreadable = (
            f"{batch.path} is not readable parquet ({reason['failed_expectations'][0]['sample_values'][0]})"
        )
    return ReleaseResult(
        batch_id=batch.ref.batch_id,
        released=result.accepted,
        still_quarantined=result.quarantined,
        failed=sorted(set(result.failed_expectations)),
        unreadable=unreadable,
    )
