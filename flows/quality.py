"""Great Expectations gates: gate 1 splits landed batches into raw and quarantine; gate 2 audits marts."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from flows.lake import (
    BatchRef,
    iter_batches,
    to_arrow,
    utc_now,
    write_parquet_atomic,
    write_quarantine,
)
from flows.settings import Settings

log = logging.getLogger(__name__)
# Rows validated in one checkpoint run; bounds memory while keeping GE's per-run overhead small.
CHUNK_ROWS = 1_000_000
SAMPLE_VALUES = 5


@dataclass
class GateResult:
    """The outcome of one gate for one dataset."""

    gate: str
    dataset: str
    batches: int = 0
    accepted: int = 0
    quarantined: int = 0
    evaluated: int = 0
    failed_expectations: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed_expectations

    def as_row(self) -> dict:
        return {
            "gate": self.gate,
            "dataset": self.dataset,
            "batches": self.batches,
            "rows_accepted": self.accepted,
            "rows_quarantined": self.quarantined,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.failed_expectations),
            "failed_expectations": ", ".join(sorted(set(self.failed_expectations))),
            "success": self.success,
        }


def gx_context(settings: Settings):
    """The file-backed GE context whose Data Docs site the reports are read from."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GE's per-metric progress bars flood the run log
    import great_expectations as gx

    settings.gx_root.mkdir(parents=True, exist_ok=True)
    return gx.get_context(mode="file", project_root_dir=str(settings.gx_root))


def data_docs_index(settings: Settings) -> Path:
    return settings.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def run_suite(context, suite, name: str, frame: pd.DataFrame):
    """Validate one dataframe against a suite through a checkpoint; returns the validation result."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas("lake")
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None)
    batch = batch or asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(result.run_results.values()))


def _expectation_label(result) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k != "column_set")
    return f"{config.type}({args})"


def failing_rows(validation) -> tuple[dict[int, list[str]], list[str], dict[str, list]]:
    """Row index -> failed expectation labels; table-level failures; sample values per label."""
    rows: dict[int, list[str]] = defaultdict(list)
    table_level: list[str] = []
    samples: dict[str, list] = {}
    for result in validation.results:
        if result.success:
            continue
        label = _expectation_label(result)
        indexes = (result.result or {}).get("unexpected_index_list")
        if indexes is None:
            table_level.append(label)
            continue
        for index in indexes:
            rows[int(index if not isinstance(index, dict) else index.get("index"))].append(label)
        samples[label] = list((result.result or {}).get("partial_unexpected_list", []))[:SAMPLE_VALUES]
    return rows, table_level, samples


def _group_batches(lake_dir: Path) -> dict[tuple[str, str], list[BatchRef]]:
    groups: dict[tuple[str, str], list[BatchRef]] = defaultdict(list)
    for ref in iter_batches(lake_dir, "landing"):
        groups[(ref.source, ref.dataset)].append(ref)
    return groups


def _chunks(lake_dir: Path, refs: list[BatchRef]):
    """Batches grouped by column signature, then into chunks of about CHUNK_ROWS rows."""
    chunk: list[tuple[BatchRef, pd.DataFrame]] = []
    rows, signature = 0, None
    for ref in refs:
        frame = pq.read_table(ref.path(lake_dir, "landing")).to_pandas()
        this = tuple(frame.columns)
        if chunk and (rows + len(frame) > CHUNK_ROWS or this != signature):
            yield chunk
            chunk, rows = [], 0
        chunk.append((ref, frame))
        rows += len(frame)
        signature = this
    if chunk:
        yield chunk


def validate_raw(settings: Settings) -> list[GateResult]:
    """Gate 1: every landed batch is validated; accepted rows move to raw, failures to quarantine."""
    from expectations.suites import load_suite

    lake_dir = settings.lake_dir
    groups = _group_batches(lake_dir)
    if not groups:
        return []
    context = gx_context(settings)
    results: list[GateResult] = []
    for (source, dataset), refs in sorted(groups.items()):
        result = GateResult(gate="raw", dataset=f"{source}.{dataset}", batches=len(refs))
        suite = load_suite(f"raw_{dataset}")
        for chunk in _chunks(lake_dir, refs):
            frame = pd.concat([f for _, f in chunk], ignore_index=True)
            if suite is None:
                bad_rows, table_level, samples, evaluated = {}, [], {}, 0
            else:
                validation = run_suite(context, suite, f"raw_{source}_{dataset}", frame)
                bad_rows, table_level, samples = failing_rows(validation)
                evaluated = len(validation.results)
            result.evaluated = max(result.evaluated, evaluated)
            result.failed_expectations.extend(table_level)
            for labels in bad_rows.values():
                result.failed_expectations.extend(labels)
            offset = 0
            for ref, part in chunk:
                positions = range(offset, offset + len(part))
                offset += len(part)
                if table_level:
                    bad = {i: table_level for i in positions}
                else:
                    bad = {i: bad_rows[i] for i in positions if i in bad_rows}
                accepted, quarantined = _route_batch(lake_dir, ref, part, bad, positions.start, samples)
                result.accepted += accepted
                result.quarantined += quarantined
        results.append(result)
    context.build_data_docs()
    record_gate_results(settings, results)
    return results


def _route_batch(
    lake_dir: Path,
    ref: BatchRef,
    frame: pd.DataFrame,
    bad: dict[int, list[str]],
    offset: int,
    samples: dict[str, list],
) -> tuple[int, int]:
    """Write a batch's good rows to raw and its bad rows to quarantine, then drop the landing file."""
    local_bad = sorted(i - offset for i in bad)
    good = frame.drop(index=local_bad) if local_bad else frame
    if len(good):
        write_parquet_atomic(to_arrow(good), ref.path(lake_dir, "raw"))
    if local_bad:
        counts: dict[str, int] = defaultdict(int)
        for labels in bad.values():
            for label in set(labels):
                counts[label] += 1
        reason = {
            "batch_id": ref.batch_id,
            "source": ref.source,
            "dataset": ref.dataset,
            "partition": dict(ref.partitions),
            "rows_in_batch": len(frame),
            "rows_quarantined": len(local_bad),
            "failed_expectations": [
                {"expectation": label, "rows": n, "sample_values": samples.get(label, [])}
                for label, n in sorted(counts.items())
            ],
            "row_reasons": {str(i - offset): sorted(set(labels)) for i, labels in bad.items()},
            "quarantined_at": utc_now().isoformat(),
        }
        write_quarantine(lake_dir, ref, frame.iloc[local_bad], reason)
    ref.path(lake_dir, "landing").unlink()
    return len(good), len(local_bad)


def record_gate_results(settings: Settings, results: list[GateResult]) -> Path | None:
    """Append the gate's summary rows to the lake, where fct_data_quality_runs reads them."""
    if not results:
        return None
    run_at = utc_now()
    frame = pd.DataFrame([r.as_row() for r in results])
    frame.insert(0, "run_id", run_at.strftime("%Y%m%dT%H%M%S%fZ"))
    frame.insert(1, "validated_at", pd.Timestamp(run_at))
    path = (
        settings.lake_dir
        / "quality"
        / "gate_runs"
        / f"date={run_at:%Y-%m-%d}"
        / f"{frame['run_id'][0]}-{results[0].gate}.parquet"
    )
    return write_parquet_atomic(to_arrow(frame), path)


def validate_frame(settings: Settings, name: str, frame: pd.DataFrame, context=None) -> GateResult:
    """Gate 2 for one mart: the mart's suite over its published-to-be parquet."""
    from expectations.suites import load_suite

    result = GateResult(gate="marts", dataset=name, batches=1, accepted=len(frame))
    suite = load_suite(name)
    if suite is None:
        return result
    context = context or gx_context(settings)
    validation = run_suite(context, suite, f"mart_{name}", frame)
    result.evaluated = len(validation.results)
    result.failed_expectations = [_expectation_label(r) for r in validation.results if not r.success]
    return result


def describe_failures(results: list[GateResult]) -> str:
    failed = [r for r in results if not r.success]
    return "; ".join(f"{r.dataset}: {', '.join(sorted(set(r.failed_expectations)))}" for r in failed)


def dump_results(results: list[GateResult]) -> str:
    return json.dumps([r.as_row() for r in results], indent=2)
