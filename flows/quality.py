"""Great Expectations gates: gate 1 splits landed batches into raw and quarantine; gate 2 audits marts."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flows.lake import (
    BatchRef,
    iter_batches,
    lake_lock,
    move_batch,
    reason_json,
    to_arrow,
    utc_now,
    write_parquet_atomic,
    write_text_atomic,
)
from flows.settings import Settings
from flows.transform import ensure_warehouse_dir

log = logging.getLogger(__name__)
T = TypeVar("T")
# Rows and arrow bytes validated in one checkpoint run: bound memory (two chunks are held at once,
# one validated and the next one read) while keeping GE's per-run overhead (up to ~1 s) rare.
CHUNK_ROWS = 2_000_000
CHUNK_BYTES = 256 * 2**20
PART_BYTES = 32 * 2**20
SAMPLE_VALUES = 5
# Rows validated by a gate from which it frees reference cycles before it ends (release_memory).
COLLECT_ROWS = 1_000_000
DOCS_KEEP = 50  # validation results kept per suite in the Data Docs history
# Result formats: a first pass with counts, and row indexes once something fails (run_checkpoint).
BASIC = {"result_format": "BASIC"}
COMPLETE = {"result_format": "COMPLETE"}
FLAG = "flag"
# Parents are validated before their children, so referential checks see this run's accepted rows.
DATASET_ORDER = {"exchange_info": 0, "users": 0}
# Child dataset -> (parent dataset, parent key column) for referential checks.
PARENTS = {"transactions": ("users", "user_id")}


@dataclass
class GateResult:
    """The outcome of one gate for one dataset."""

    gate: str
    dataset: str
    batches: int = 0
    accepted: int = 0
    quarantined: int = 0
    flagged: int = 0
    duplicates_collapsed: int = 0
    batches_quarantined: int = 0
    evaluated: int = 0
    failed_expectations: list[str] = field(default_factory=list)
    # Rows per failing expectation (quarantine) and per flag-only expectation (accepted, counted).
    failed_rows: Counter = field(default_factory=Counter)
    flagged_rows: Counter = field(default_factory=Counter)

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
            "rows_flagged": self.flagged,
            "duplicates_collapsed": self.duplicates_collapsed,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(set(self.failed_expectations)),
            "failed_expectations": ", ".join(sorted(set(self.failed_expectations))),
            "flagged_expectations": ", ".join(sorted(self.flagged_rows)),
            "success": self.success,
        }


# The GE context and checkpoints ------------------------------------------------------------------


_GX_IMPORT = threading.Lock()


def defer_scipy_stats() -> None:
    """Make `scipy.stats` load on first use instead of on import (importlib's LazyLoader).

    Great Expectations imports it, at import, for its distribution expectations (KL divergence,
    KS tests), which no suite here uses: 0.7 s of GE's 2 s import. Deferred, `from scipy import
    stats` binds a module that loads itself the first time one of its names is read, so code
    that uses it still works unchanged. Nothing is deferred once scipy.stats is imported
    (scipy.signal imports it, which is why the synthetic source does not use it).
    """
    if "scipy.stats" in sys.modules:
        return
    spec = importlib.util.find_spec("scipy.stats")  # imports scipy itself, which is light
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scipy.stats"] = module
    spec.loader.exec_module(module)
    # `from scipy import stats` takes the package's attribute when there is one: it must not
    # look the module up in sys.modules, which reads its __spec__ and so loads it.
    sys.modules["scipy"].stats = module


def import_gx():
    """Great Expectations, imported with scipy.stats deferred (defer_scipy_stats)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with _GX_IMPORT:
        defer_scipy_stats()
    import great_expectations

    return great_expectations


def preload_in_background() -> threading.Thread:
    """Import Great Expectations (about 3 s) in a thread, while the run does something else.

    The flow starts it before landing, so gate 1 finds GE imported; an import the gate needs
    before the thread finishes waits on Python's import lock, it does not import twice.
    """

    def load() -> None:
        with contextlib.suppress(Exception):  # the gate reports any import error itself
            import_gx()
            import great_expectations.expectations  # noqa: F401
            from great_expectations.execution_engine import pandas_execution_engine  # noqa: F401

            import expectations.suites  # noqa: F401

    thread = threading.Thread(target=load, name="preload-gates", daemon=True)
    thread.start()
    return thread


def gx_context(settings: Settings):
    """The file-backed GE context whose Data Docs site the reports are read from."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GE fingerprints every in-memory frame under 1 GB by hashing all of it (about 0.8 s per
    # million klines); the fingerprint is only metadata we never read.
    pandas_execution_engine.HASH_THRESHOLD = 0
    settings.gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(settings.gx_root))
    # Per-metric progress bars would flood the run log.
    bars = context.variables.progress_bars
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def data_docs_index(settings: Settings) -> Path:
    """Where the Data Docs site's index.html is (built by every gate run and `lakehouse dq-report`)."""
    return settings.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def data_docs_url(settings: Settings) -> str:
    return data_docs_index(settings).as_uri()


def build_data_docs(context, validations: list | None = None) -> None:
    """Update the static site once per gate run (not per chunk: a build takes about a second).

    With the run's validation result ids only their pages (and their suites' pages and the
    index) are rendered, so the cost does not grow with history; history is capped at
    DOCS_KEEP results per suite.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    from flows.data_docs import localize_site

    _prune_validation_results(context)
    resources = None
    if validations:
        suites = {key.expectation_suite_identifier.name for key in validations}
        resources = [*validations, *(ExpectationSuiteIdentifier(name=name) for name in sorted(suites))]
    started = time.time() - 1
    context.build_data_docs(resource_identifiers=resources)
    site = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"
    localize_site(site, since=started)


def _prune_validation_results(context) -> None:
    store = context.validation_results_store
    by_suite: dict[str, list] = defaultdict(list)
    for key in store.list_keys():
        by_suite[key.expectation_suite_identifier.name].append(key)
    for keys in by_suite.values():
        keys.sort(key=lambda k: (str(k.run_id.run_time), str(k.run_id.run_name)))
        for key in keys[:-DOCS_KEEP]:
            store.remove_key(key)


def register_checkpoint(context, suite, name: str):
    """Save the suite, its validation definition and a checkpoint over an in-memory dataframe.

    Replaced by delete + add: GE's add_or_update compares every expectation with every stored
    one, three times over (suite, definition, checkpoint), which costs seconds per gate run.
    """
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    for factory, stored_name in (
        (context.checkpoints, name),
        (context.validation_definitions, name),
        (context.suites, suite.name),
    ):
        with contextlib.suppress(DataContextError, ValueError, KeyError):
            factory.delete(name=stored_name)
    source = _pandas_source(context)
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None)
    batch = batch or asset.add_batch_definition_whole_dataframe("whole")
    try:
        stored = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=stored)
        )
        return context.checkpoints.add(
            gx.Checkpoint(name=name, validation_definitions=[definition], result_format=dict(BASIC))
        )
    except DataContextError:
        # Something stored could not be deleted (e.g. written by another GE version): the slow
        # path replaces it in place.
        stored = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=stored)
        )
        return context.checkpoints.add_or_update(
            gx.Checkpoint(name=name, validation_definitions=[definition], result_format=dict(BASIC))
        )


def _pandas_source(context, name: str = "lake"):
    """The in-memory pandas data source, created once; its assets are kept between runs.

    (add_or_update would replace it with an empty one, leaving every other stored checkpoint
    pointing at an asset that no longer exists, and rewrites the project config each time.)
    """
    from great_expectations.datasource.fluent import PandasDatasource

    try:
        source = context.data_sources.get(name)
    except KeyError:
        return context.data_sources.add_pandas(name)
    if isinstance(source, PandasDatasource):
        return source
    return context.data_sources.add_or_update_pandas(name)


def run_checkpoint(context, checkpoint, frame: pd.DataFrame, validations: list | None = None):
    """Run a checkpoint over a frame; the result id is appended to validations for Data Docs.

    A checkpoint starts with BASIC results (counts and sample values, enough when nothing
    fails or only flag-only expectations do). When another expectation fails, the checkpoint
    switches to COMPLETE for good (the rows to quarantine, and the full Data Docs detail), the
    BASIC result is removed from the store and the frame is validated again.
    """
    key, validation = _run(checkpoint, frame)
    if not _is_complete(checkpoint.result_format) and _fails(validation):
        context.validation_results_store.remove_key(key)
        checkpoint.result_format = dict(COMPLETE)
        checkpoint.save()
        key, validation = _run(checkpoint, frame)
    if validations is not None:
        validations.append(key)
    return validation


def _run(checkpoint, frame: pd.DataFrame):
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    # The data source's execution engine keeps the frame cached until the next run; drop it so
    # two chunks are never in memory at once.
    for definition in checkpoint.validation_definitions:
        batches = definition.data.data_asset.datasource.get_execution_engine().batch_manager
        batches.reset_batch_cache()
        batches.batch_data_cache.clear()
    return next(iter(result.run_results.items()))


def _is_complete(result_format) -> bool:
    name = result_format.get("result_format") if isinstance(result_format, dict) else result_format
    return str(getattr(name, "value", name)).upper() == "COMPLETE"


def _fails(validation) -> bool:
    """Whether an expectation that is not flag-only failed."""
    return any(not r.success and not is_flag(r.expectation_config) for r in validation.results)


def run_suite(context, suite, name: str, frame: pd.DataFrame, validations: list | None = None):
    """Validate one dataframe against a suite through a checkpoint; returns the validation result."""
    return run_checkpoint(context, register_checkpoint(context, suite, name), frame, validations)


# Reading validation results ----------------------------------------------------------------------


def expectation_label(config) -> str:
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k not in ("column_set", "type_list"))
    return f"{config.type}({args})"


def is_flag(config) -> bool:
    return (config.meta or {}).get("action") == FLAG


@dataclass
class Outcome:
    """One validation read back: which rows failed what, and what is batch-level."""

    bad_rows: dict[int, list[str]]
    table_level: list[str]
    flagged: Counter
    samples: dict[str, list]
    evaluated: int


def read_outcome(validation) -> Outcome:
    bad_rows: dict[int, list[str]] = defaultdict(list)
    table_level: list[str] = []
    flagged: Counter = Counter()
    samples: dict[str, list] = {}
    for result in validation.results:
        if result.success:
            continue
        config = result.expectation_config
        label = expectation_label(config)
        details = result.result or {}
        indexes = details.get("unexpected_index_list")
        if is_flag(config):
            count = details.get("unexpected_count")
            flagged[label] += int(count) if count is not None else 1
            continue
        if indexes is None:
            message = (result.exception_info or {}).get("exception_message")
            entry = f"{label}: {message}" if message else label
            table_level.append(entry)
            # What was found instead: the columns missing and unexpected, or the column's type.
            found = (details.get("details") or {}).get("mismatched") or details.get("observed_value")
            if found is not None:
                samples[entry] = [found]
            continue
        for index in indexes:
            bad_rows[int(index if not isinstance(index, dict) else index.get("index"))].append(label)
        samples[label] = list(details.get("partial_unexpected_list", []))[:SAMPLE_VALUES]
    return Outcome(bad_rows, table_level, flagged, samples, len(validation.results))


def failing_rows(validation) -> tuple[dict[int, list[str]], list[str], dict[str, list]]:
    """Row index -> failed expectation labels; table-level failures; sample values per label."""
    outcome = read_outcome(validation)
    return outcome.bad_rows, outcome.table_level, outcome.samples


# Gate 1 --------------------------------------------------------------------------------------------


def _group_batches(lake_dir: Path, zone: str = "landing") -> dict[tuple[str, str], list[BatchRef]]:
    groups: dict[tuple[str, str], list[BatchRef]] = defaultdict(list)
    for ref in iter_batches(lake_dir, zone):
        groups[(ref.source, ref.dataset)].append(ref)
    return groups


def _chunks(
    lake_dir: Path, refs: list[BatchRef], zone: str
) -> Iterator[tuple[list[BatchRef], pd.DataFrame, int]]:
    """Batches with the same arrow schema as one frame (and its arrow bytes) per at most
    CHUNK_ROWS rows and CHUNK_BYTES (or one batch, if larger).

    Each ref carries its row count (ref.rows). The batch tables are not kept (a batch that must
    be split is read again when it is routed): every PART_BYTES they are merged into one part,
    which keeps the many small allocations of per-file tables from piling up.
    """
    chunk: list[BatchRef] = []
    parts: list[pa.Table] = []
    tables: list[pa.Table] = []
    rows, size, pending, signature = 0, 0, 0, None
    for ref in refs:
        try:
            with pq.ParquetFile(ref.path(lake_dir, zone), pre_buffer=False, memory_map=True) as file:
                table = file.read(use_threads=False)  # small files: a thread pool costs more than it gains
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:  # not parquet, truncated: quarantined whole
            yield [replace(ref, extra={UNREADABLE: f"{type(exc).__name__}: {exc}"})], None, 0
            continue
        nbytes = table.get_total_buffer_size()  # Table.nbytes takes ten times longer
        full = rows + table.num_rows > CHUNK_ROWS or size + nbytes > CHUNK_BYTES
        if chunk and (full or not table.schema.equals(signature, check_metadata=False)):
            parts.append(_merge(tables))
            yield chunk, _to_pandas(parts), size  # empties parts
            chunk, rows, size, pending = [], 0, 0, 0
            pa.default_memory_pool().release_unused()
        chunk.append(replace(ref, rows=table.num_rows))
        tables.append(table)
        rows += table.num_rows
        size += nbytes
        pending += nbytes
        signature = table.schema
        if pending >= PART_BYTES:
            parts.append(_merge(tables))
            pending = 0
    if chunk:
        parts.append(_merge(tables))
        yield chunk, _to_pandas(parts), size


# The reason's label for a batch file that cannot be read (its sample value is the error).
UNREADABLE = "the batch file reads as parquet"


def _quarantine_unreadable(lake_dir: Path, group: _Group, ref: BatchRef, zone: str) -> None:
    """A batch file that is not parquet (or is cut short) goes to quarantine as it is, with a
    reason naming the error; gate 1 goes on with the other batches."""
    error = ref.extra[UNREADABLE]
    target = ref.path(lake_dir, "quarantine")
    previous = _read_reason(target) if zone == "quarantine" else {}
    if zone == "landing":
        move_batch(lake_dir, ref, "landing", "quarantine")
    reason = {
        "batch_id": ref.batch_id,
        "source": ref.source,
        "dataset": ref.dataset,
        "partition": dict(ref.partitions),
        "rows_in_batch": None,
        "rows_accepted": 0,
        "rows_quarantined": None,
        "duplicates_collapsed": 0,
        "whole_batch": True,
        "failed_expectations": [{"expectation": UNREADABLE, "rows": None, "sample_values": [error]}],
        "row_reasons": {},
        "quarantined_at": previous.get("quarantined_at") or utc_now().isoformat(),
        "validated_at": utc_now().isoformat(),
    }
    write_text_atomic(target.with_suffix(".json"), reason_json(reason))
    log.warning("gate 1: %s is not readable parquet (%s); quarantined whole", target, error)
    group.result.batches_quarantined += 1
    group.result.failed_expectations.append(UNREADABLE)
    group.result.failed_rows[UNREADABLE] += 0


def _merge(tables: list[pa.Table]) -> pa.Table:
    """The tables (emptied) as one table with one chunk per column."""
    table = pa.concat_tables(tables).combine_chunks()
    tables.clear()
    return table


def _to_pandas(parts: list[pa.Table]) -> pd.DataFrame:
    """The parts (emptied) as one frame with one contiguous chunk per column.

    Columns are combined one at a time, each freeing its parts, so the peak stays near one copy
    of the data; pandas then wraps numbers without copying. Contiguous strings matter: GE
    filters the frame many times, and a take on chunked arrow strings concatenates every chunk.
    """
    table = pa.concat_tables(parts)
    parts.clear()
    for i in range(table.num_columns):
        if table.column(i).num_chunks > 1:
            table = table.set_column(i, table.field(i), table.column(i).combine_chunks())
    # An integer column with a null would become float64, fail its suite's dtype check and
    # quarantine every batch of the chunk whole, for one row that its not-null check takes
    # alone. Such columns become pandas' nullable Int64 instead (exact, unlike float64).
    nullable = {
        field.name: column
        for field, column in zip(table.schema, table.columns, strict=True)
        if pa.types.is_integer(field.type) and column.null_count
    }
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    for name, column in nullable.items():
        frame[name] = column.to_pandas(types_mapper={column.type: pd.Int64Dtype()}.get).array
    return frame


def _shared_keys(frame: pd.DataFrame, key: list[str]) -> np.ndarray | None:
    """True where another row of the same batch has the same natural key (None without a key).

    Rows are hashed and the hashes sorted; only rows whose hash repeats are compared exactly
    (three times faster than DataFrame.duplicated when, as usual, no key repeats).
    """
    if not key or not set(key) <= set(frame.columns) or "batch_id" not in frame.columns:
        return None
    columns = [*key, "batch_id"]
    hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    shared = np.zeros(len(frame), dtype=bool)
    if len(repeated):
        candidates = np.isin(hashes, repeated)
        shared[candidates] = frame.loc[candidates, columns].duplicated(keep=False).to_numpy()
    return shared


def _exact_duplicates(frame: pd.DataFrame, shared: np.ndarray | None) -> np.ndarray:
    """Positions of rows that are exact copies of an earlier row of the same batch."""
    if shared is None or not shared.any():
        return np.zeros(0, dtype=np.int64)
    copies = frame.loc[shared].duplicated(keep="first").to_numpy()
    return np.flatnonzero(shared)[copies]


def known_keys(lake_dir: Path, dataset: str, column: str) -> np.ndarray | None:
    """Every value of a key column in the accepted raw lake, or None when the dataset has no rows."""
    import duckdb

    pattern = Path(lake_dir) / "raw" / "*" / dataset / "**" / "*.parquet"
    if not any((Path(lake_dir) / "raw").glob(f"*/{dataset}/**/*.parquet")):
        return None
    with duckdb.connect() as con:
        values = con.execute(
            f"select distinct {column} from read_parquet(?, hive_partitioning=false, union_by_name=true) "
            f"where {column} is not null",
            [str(pattern)],
        ).fetchnumpy()[column]
    return np.sort(np.asarray(values, dtype=np.int64))


def gate_params(settings: Settings, **extra) -> dict:
    return {
        "now": utc_now(),
        "price_jump_sigmas": settings.gate_price_jump_sigmas,
        **extra,
    }


@dataclass
class _Group:
    """One (source, dataset) through gate 1: its suite module, checkpoint and running result."""

    source: str
    dataset: str
    context: object
    module: object
    checkpoint: object
    params: dict
    result: GateResult
    validations: list
    in_quarantine: bool


def validate_raw(settings: Settings) -> list[GateResult]:
    """Gate 1: every landed batch is validated; accepted rows move to raw, failures to quarantine."""
    return validate_zone(settings, "landing")


def validate_zone(
    settings: Settings, zone: str, refs: list[BatchRef] | None = None, build_docs: bool = True
) -> list[GateResult]:
    """Validate batches of a zone (landing, or quarantine on release) and route every row.

    One gate 1 at a time per lake (`lakehouse validate`, an upload, a release, a run): two would
    route the same landed files, and the second failed on files the first had moved.
    """
    with lake_lock(settings.lake_dir, "gate1"):
        return _validate_zone(settings, zone, refs, build_docs)


def _validate_zone(
    settings: Settings, zone: str, refs: list[BatchRef] | None, build_docs: bool
) -> list[GateResult]:
    lake_dir = settings.lake_dir
    if refs is None:
        groups = _group_batches(lake_dir, zone)
    else:
        groups = defaultdict(list)
        for ref in refs:
            if ref.path(lake_dir, zone).exists():  # else released or removed meanwhile
                groups[(ref.source, ref.dataset)].append(ref)
    if not groups:
        return []
    ensure_warehouse_dir(lake_dir)
    order = sorted(groups, key=lambda g: (DATASET_ORDER.get(g[1], 1), g))

    def frames() -> Iterator[tuple[tuple[str, str], list[BatchRef], pd.DataFrame, int]]:
        for name in order:
            for chunk, frame, size in _chunks(lake_dir, groups[name], zone):
                yield name, chunk, frame, size

    results: list[GateResult] = []
    validations: list = []
    group = None
    # The first chunk is read while GE is imported, and each next one while this one is validated.
    reader = ReadAhead(frames(), lambda item: item[3], CHUNK_BYTES)
    try:
        context = gx_context(settings)
        for (source, dataset), chunk, frame, _ in reader:
            if group is None or (group.source, group.dataset) != (source, dataset):
                _close_group(group, results)
                count = len(groups[(source, dataset)])
                group = _open_group(context, settings, source, dataset, count, validations)
            if frame is None:
                _quarantine_unreadable(lake_dir, group, chunk[0], zone)
                continue
            _validate_chunk(settings, group, chunk, frame, zone)
            del frame
            # Arrow's allocator keeps freed pages per thread; hand them back between chunks.
            pa.default_memory_pool().release_unused()
    finally:
        reader.close()
    _close_group(group, results)
    if build_docs:
        build_data_docs(context, validations)
    record_gate_results(settings, results)
    release_memory(collect=sum(r.accepted + r.quarantined for r in results) >= COLLECT_ROWS)
    return results


def release_memory(collect: bool = False) -> None:
    """Hand the memory a gate freed back to the system, so the build that follows has it.

    Arrow's pool and glibc's heap keep freed pages for reuse: after gate 1 at 50 symbols the
    flow's process held 0.52 GB, 0.41 GB after this, while the dbt build beside it peaks at
    3.4 GB. collect: first free what only reference cycles still hold (GE's validators keep
    their batches in them), which Python's collector would free at some later point, after
    this has run. In 3 of 11 flow runs sampled without it, the flow's process kept 0.9 GB
    instead of 0.45 GB at 10 symbols, and 1.96 GB instead of 0.52 GB at 50, through the whole
    build; in none of 6 with it. A collection takes about 0.2 s, so a gate of a few rows (an
    hourly run) skips it.
    """
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _close_group(group: _Group | None, results: list[GateResult]) -> None:
    if group is not None:
        results.append(group.result)
        log.info("gate 1 %s: %s", group.result.dataset, group.result.as_row())


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class ReadAhead(Iterator[T]):
    """The items of an iterator, produced in a thread ahead of the consumer, within a budget.

    The thread starts at once, so items are produced while the caller sets up. It starts the
    next item only while the items produced and not yet finished with (the consumer is done
    with an item when it asks for the next one) weigh at most `budget`: with chunks of at most
    CHUNK_BYTES and that budget, about two chunks are in memory at a time, the one validated
    and the next one read (parquet decoding releases the GIL); small ones add little.
    """

    def __init__(self, items: Iterator[T], weight: Callable[[T], int], budget: int) -> None:
        self._weight, self._budget = weight, budget
        self._pending: list[int] = []  # weights of the items produced and not finished with
        self._consumed = False
        self._room = threading.Condition()
        self._ready: queue.Queue = queue.Queue()
        self._stop = False
        self._thread = threading.Thread(target=self._produce, args=(items,), name="read-ahead", daemon=True)
        self._thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            while True:
                with self._room:
                    self._room.wait_for(lambda: self._stop or sum(self._pending) <= self._budget)
                    if self._stop:
                        return
                item = next(items, _END)
                with self._room:
                    if self._stop:
                        return
                    if item is not _END:
                        self._pending.append(self._weight(item))
                self._ready.put(item)
                if item is _END:
                    return
                del item
        except BaseException as exc:  # re-raised in the consumer
            self._ready.put(_Failed(exc))

    def __next__(self) -> T:
        with self._room:
            if self._stop:
                raise StopIteration
            if self._consumed:
                self._pending.pop(0)  # the consumer is done with the previous item
                self._room.notify()
        item = self._ready.get()
        self._consumed = not (item is _END or isinstance(item, _Failed))
        if not self._consumed:
            self.close()
            if isinstance(item, _Failed):
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the item it is producing, then drops it)."""
        with self._room:
            self._stop = True
            self._room.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _open_group(
    context, settings: Settings, source: str, dataset: str, batches: int, validations: list
) -> _Group:
    from expectations.suites import load_module

    params = gate_params(settings)
    if dataset in PARENTS:
        parent, column = PARENTS[dataset]
        known = known_keys(settings.lake_dir, parent, column)
        if known is not None:
            params[f"known_{parent}"] = known
    module = load_module(f"raw_{dataset}")
    checkpoint = None
    if module is not None:
        suite = module.build_suite(params)
        # One suite per source and dataset: checkpoints never share (and replace) a suite.
        suite.name = f"raw_{source}_{dataset}"
        checkpoint = register_checkpoint(context, suite, suite.name)
    result = GateResult(gate="raw", dataset=f"{source}.{dataset}", batches=batches)
    in_quarantine = (settings.lake_dir / "quarantine" / source / dataset).exists()
    return _Group(source, dataset, context, module, checkpoint, params, result, validations, in_quarantine)


def _validate_chunk(settings: Settings, group: _Group, refs: list[BatchRef], frame: pd.DataFrame, zone: str):
    from expectations.suites._common import KEY_SHARED

    result = group.result
    counts = np.array([ref.rows for ref in refs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    owner = np.repeat(np.arange(len(refs)), counts)
    row_in_batch = np.arange(len(frame)) - np.repeat(starts[:-1], counts)
    module = group.module
    outcome = Outcome({}, [], Counter(), {}, 0)
    copies = np.zeros(0, dtype=np.int64)
    collapsed = np.zeros(len(refs), dtype=np.int64)
    if module is not None:
        key = list(getattr(module, "KEY", []))
        shared = _shared_keys(frame, key)
        copies = _exact_duplicates(frame, shared)
        if len(copies):
            keep = np.ones(len(frame), dtype=bool)
            keep[copies] = False
            frame = frame.loc[keep].reset_index(drop=True)
            collapsed = np.bincount(owner[copies], minlength=len(refs))
            owner, row_in_batch = owner[keep], row_in_batch[keep]
            shared = _shared_keys(frame, key)
        params = group.params if shared is None else {**group.params, KEY_SHARED: shared}
        history = getattr(module, "history", None)
        if history is not None:
            with contextlib.suppress(
                KeyError, TypeError, ValueError, AttributeError, OSError, pa.ArrowException
            ):
                # What the lake accepted before the batch (price jumps); a schema break has none.
                params = {**params, module.HISTORY: history(settings.lake_dir, frame, params)}
        prepare = getattr(module, "prepare", None)
        problem = None
        if prepare is not None:
            try:
                frame = prepare(frame, params)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # A schema break: the check columns cannot be derived, so the column-set
                # expectation fails and the whole chunk (one schema) is quarantined.
                problem = f"cannot derive check columns: {type(exc).__name__}: {exc}"
        outcome = read_outcome(run_checkpoint(group.context, group.checkpoint, frame, group.validations))
        if problem:
            outcome.table_level.append(problem)
    result.evaluated = max(result.evaluated, outcome.evaluated)
    result.flagged += sum(outcome.flagged.values())
    result.flagged_rows.update(outcome.flagged)
    result.failed_expectations.extend(outcome.table_level)
    # Per batch: positions (in the batch file) of bad rows and their labels.
    per_batch: dict[int, dict[int, list[str]]] = defaultdict(dict)
    for index, labels in outcome.bad_rows.items():
        per_batch[int(owner[index])][int(row_in_batch[index])] = labels
        result.failed_rows.update(set(labels))
        result.failed_expectations.extend(labels)
    if zone == "quarantine" and module is not None and not outcome.table_level:
        for b, position in _keys_already_in_raw(settings.lake_dir, refs, frame, owner, row_in_batch, key):
            per_batch[b].setdefault(position, []).append(KEY_IN_RAW)
            result.failed_rows[KEY_IN_RAW] += 1
            result.failed_expectations.append(KEY_IN_RAW)
    # Rows left after collapsing copies, for the batches that had copies (owner is sorted).
    kept_rows: dict[int, np.ndarray] = {}
    if len(copies):
        bounds = np.searchsorted(owner, np.arange(len(refs) + 1))
        for b in np.flatnonzero(collapsed):
            kept_rows[int(b)] = row_in_batch[bounds[b] : bounds[b + 1]]
    for b, ref in enumerate(refs):
        if outcome.table_level:
            bad = dict.fromkeys(range(ref.rows), outcome.table_level)
            result.batches_quarantined += 1
        else:
            bad = per_batch.get(b, {})
        n_copies = int(collapsed[b])
        result.duplicates_collapsed += n_copies
        accepted, quarantined = route_batch(
            settings.lake_dir,
            ref,
            bad,
            outcome.samples,
            zone=zone,
            kept=kept_rows.get(b),
            duplicates_collapsed=n_copies,
            whole_batch=bool(outcome.table_level),
            in_quarantine=group.in_quarantine,
            key=list(getattr(module, "KEY", [])) if module is not None else [],
        )
        result.accepted += accepted
        result.quarantined += quarantined
    if outcome.table_level:
        result.failed_rows.update(dict.fromkeys(outcome.table_level, 0))


# The reason's label for a released row whose key its batch's accepted rows in raw already hold.
KEY_IN_RAW = "its key is not already among its batch's accepted rows in raw"


def _keys_already_in_raw(
    lake_dir: Path,
    refs: list[BatchRef],
    frame: pd.DataFrame,
    owner: np.ndarray,
    row_in_batch: np.ndarray,
    key,
) -> Iterator[tuple[int, int]]:
    """(batch, row position) of quarantined rows up for release whose natural key the batch's
    accepted rows in raw already hold: released beside them, a fixed row would repeat a key."""
    if not key or not set(key) <= set(frame.columns):
        return
    for b, ref in enumerate(refs):
        raw_path = ref.path(lake_dir, "raw")
        rows = np.flatnonzero(owner == b)
        if not len(rows) or not raw_path.exists():
            continue
        accepted = pq.read_table(raw_path, columns=list(key), partitioning=None).to_pandas()
        released = frame.iloc[rows][list(key)].reset_index(drop=True)
        taken = pd.MultiIndex.from_frame(released).isin(
            pd.MultiIndex.from_frame(accepted.astype(released.dtypes))
        )
        for index in rows[taken]:
            yield b, int(row_in_batch[index])


def route_batch(
    lake_dir: Path,
    ref: BatchRef,
    bad: dict[int, list[str]],
    samples: dict[str, list],
    *,
    zone: str = "landing",
    kept: np.ndarray | None = None,
    duplicates_collapsed: int = 0,
    whole_batch: bool = False,
    in_quarantine: bool = True,
    key: list[str] | None = None,
) -> tuple[int, int]:
    """Good rows of a batch to raw, bad rows to quarantine with a JSON reason; then drop the source.

    A landed batch with nothing to drop is moved as a file (ref.rows is its row count); otherwise
    rows are taken from the batch's arrow table, so what lands in raw keeps the exact schema.
    From quarantine (a release), admitted rows join the batch's accepted rows already in raw.
    in_quarantine=False says the dataset has nothing in quarantine, so no stale reason to remove.
    A landed batch that replaces the raw file of its batch id keeps the earlier rows whose natural
    key (the dataset's KEY) only its quarantined rows hold (earlier_rows_kept): bad input never
    takes a good row out of the lake; a batch with no accepted row leaves the raw file as it was.
    """
    if zone == "landing" and not bad and kept is None:
        move_batch(lake_dir, ref, "landing", "raw")
        if in_quarantine:
            _remove_quarantine(ref.path(lake_dir, "quarantine"))
        return ref.rows, 0
    source_path = ref.path(lake_dir, zone)
    quarantine_path = ref.path(lake_dir, "quarantine")
    raw_path = ref.path(lake_dir, "raw")
    table = pq.read_table(source_path, partitioning=None)
    rows = np.arange(table.num_rows) if kept is None else np.asarray(kept)
    bad_positions = np.array(sorted(bad), dtype=np.int64)
    good_positions = rows[~np.isin(rows, bad_positions)]
    earlier, earlier_kept = None, None
    if zone == "landing" and len(bad_positions) and raw_path.exists():
        if len(good_positions):
            earlier = _earlier_rows_to_keep(raw_path, table, good_positions, bad_positions, key or [])
            earlier_kept = 0 if earlier is None else earlier.num_rows
        else:  # nothing of the batch lands: the raw file stays whole, and is not read
            earlier_kept = pq.ParquetFile(raw_path).metadata.num_rows
    if len(good_positions):
        good = table.take(pa.array(good_positions))
        if zone == "quarantine" and raw_path.exists():
            good = pa.concat_tables(
                [pq.read_table(raw_path, partitioning=None), good], promote_options="default"
            )
        if earlier is not None and earlier.num_rows:
            good = pa.concat_tables([good, earlier], promote_options="permissive").sort_by(
                [(column, "ascending") for column in key]
            )
        write_parquet_atomic(good, raw_path)
    if len(bad_positions):
        counts: Counter = Counter()
        for labels in bad.values():
            counts.update(set(labels))
        previous = _read_reason(quarantine_path) if zone == "quarantine" else {}
        reason = {
            "batch_id": ref.batch_id,
            "source": ref.source,
            "dataset": ref.dataset,
            "partition": dict(ref.partitions),
            "rows_in_batch": int(table.num_rows),
            "rows_accepted": int(len(good_positions)),
            "rows_quarantined": int(len(bad_positions)),
            "duplicates_collapsed": int(duplicates_collapsed),
            "whole_batch": whole_batch,
            "failed_expectations": [
                {"expectation": label, "rows": n, "sample_values": samples.get(label, [])}
                for label, n in sorted(counts.items())
            ],
            # Row positions are positions in the quarantined parquet file beside this reason.
            "row_reasons": {str(i): sorted(set(bad[int(p)])) for i, p in enumerate(bad_positions)},
            "quarantined_at": previous.get("quarantined_at") or utc_now().isoformat(),
            "validated_at": utc_now().isoformat(),
        }
        if zone == "quarantine":
            reason["released_rows"] = previous.get("released_rows", 0) + int(len(good_positions))
        if earlier_kept is not None:
            # Rows of the raw file of this batch id, accepted before, that stay in raw because
            # this batch's version of them is quarantined; a good version replaces them.
            reason["earlier_rows_kept"] = int(earlier_kept)
        write_parquet_atomic(table.take(pa.array(bad_positions)), quarantine_path)
        write_text_atomic(quarantine_path.with_suffix(".json"), reason_json(reason))
    elif zone == "quarantine" or quarantine_path.exists():
        _remove_quarantine(quarantine_path)
    if zone == "landing":
        source_path.unlink()
    return int(len(good_positions)), int(len(bad_positions))


def _earlier_rows_to_keep(
    raw_path: Path, table: pa.Table, good_positions: np.ndarray, bad_positions: np.ndarray, key: list[str]
) -> pa.Table | None:
    """The rows of the raw file a landed batch replaces whose natural key is among the batch's
    quarantined rows and not among its accepted ones (None: the keys cannot be compared, e.g. a
    batch without the key columns, quarantined whole, which leaves the raw file as it was)."""
    earlier = pq.read_table(raw_path, partitioning=None)
    if not key or not set(key) <= set(table.column_names) or not set(key) <= set(earlier.column_names):
        return None
    new_keys = table.select(key).to_pandas()
    try:
        old_keys = earlier.select(key).to_pandas().astype(new_keys.dtypes)
    except (TypeError, ValueError):
        return None
    old = pd.MultiIndex.from_frame(old_keys)
    quarantined = pd.MultiIndex.from_frame(new_keys.iloc[bad_positions])
    accepted = pd.MultiIndex.from_frame(new_keys.iloc[good_positions])
    keep = old.isin(quarantined) & ~old.isin(accepted)
    return earlier.filter(pa.array(keep))


def _remove_quarantine(path: Path) -> None:
    for target in (path, path.with_suffix(".json")):
        if target.exists():
            target.unlink()


def _read_reason(path: Path) -> dict:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


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


# Gate 2 --------------------------------------------------------------------------------------------


# Expectation types that read every column of the table, not only the ones they name.
WHOLE_TABLE = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
    }
)


def mart_suite(name: str, params: dict):
    """A mart's suite and its prepare function (None without one)."""
    from expectations.suites import _marts, load_module

    module = load_module(name)
    if module is None:
        # No dedicated module: the dbt-declared grain and the row count against the snapshot.
        return _marts.generic(name, params), None
    return module.build_suite(params), getattr(module, "prepare", None)


def suite_columns(suite) -> set[str] | None:
    """The columns a suite's expectations read, or None when one of them needs the whole table."""
    columns: set[str] = set()
    for expectation in suite.expectations:
        if expectation.expectation_type in WHOLE_TABLE or getattr(expectation, "row_condition", None):
            return None
        for attribute in ("column", "column_A", "column_B"):
            if getattr(expectation, attribute, None) is not None:
                columns.add(getattr(expectation, attribute))
        columns.update(getattr(expectation, "column_list", None) or [])
    return columns


def mart_columns(name: str, params: dict, available: list[str]) -> list[str] | None:
    """The columns of a mart gate 2 needs to read (None: all of them, e.g. for a prepare step).

    Columns no expectation names are not read: GE copies every column of the frame whenever
    it drops the nulls of a column (fct_transactions has 29 columns, its suite reads one).
    """
    suite, prepare = mart_suite(name, {"now": utc_now(), **params})
    needed = suite_columns(suite)
    if prepare is not None or needed is None:
        return None
    # At least one column, so the frame keeps its rows for the row-count expectation.
    return [c for c in available if c in needed] or available[:1]


def validate_frame(
    settings: Settings,
    name: str,
    frame: pd.DataFrame,
    context=None,
    params: dict | None = None,
    validations: list | None = None,
) -> GateResult:
    """Gate 2 for one mart: the mart's suite over its published-to-be frame."""
    result = GateResult(gate="marts", dataset=name, batches=1, accepted=len(frame))
    params = {"now": utc_now(), **(params or {})}
    suite, prepare = mart_suite(name, params)
    if prepare is not None:
        frame = prepare(frame, params)
    needed = suite_columns(suite)
    if needed is not None:
        frame = frame[[c for c in frame.columns if c in needed] or list(frame.columns[:1])]
    context = context or gx_context(settings)
    fold_validation(result, run_suite(context, suite, f"mart_{name}", frame, validations))
    return result


def fold_validation(result: GateResult, validation) -> None:
    """Add one validation's failures and flags to a gate 2 result (a mart validated in parts
    folds one validation per part: failed rows add up, an expectation is named once)."""
    outcome = read_outcome(validation)
    result.evaluated = max(result.evaluated, outcome.evaluated)
    result.flagged_rows.update(outcome.flagged)
    result.flagged = sum(result.flagged_rows.values())
    for r in validation.results:
        if not r.success and not is_flag(r.expectation_config):
            label = expectation_label(r.expectation_config)
            if label not in result.failed_expectations:
                result.failed_expectations.append(label)
            result.failed_rows[label] += int((r.result or {}).get("unexpected_count") or 0)


# How a mart too large for one frame is validated part by part (part_plan).
# Aggregates over a column, and the row count: run once, over the columns they name.
TABLE_LEVEL = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_column_max_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
    }
)
# Row by row: each row's verdict is the same in a part as in the whole mart.
ROW_LEVEL = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_null",
        "expect_column_values_to_match_regex",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_equal",
    }
)


@dataclass
class PartPlan:
    """A mart's suite split for validation in parts: `whole` runs once over the columns it
    names, `rows` once per part. `key` are the columns of its uniqueness expectation: a part
    takes whole keys (by their hash), so a key repeated anywhere in the mart repeats in one
    part. Without one, parts are ranges of rows."""

    whole: list[int]  # positions in the suite's expectation list
    rows: list[int]
    key: list[str]


def part_plan(suite) -> PartPlan | None:
    """How to validate a suite's mart in parts, or None when it must see the whole table at once
    (an expectation of another kind, a `mostly` threshold, a row condition, two uniqueness keys)."""
    whole: list[int] = []
    rows: list[int] = []
    keys: set[tuple[str, ...]] = set()
    for position, expectation in enumerate(suite.expectations):
        kind = expectation.expectation_type
        mostly = getattr(expectation, "mostly", None)
        if getattr(expectation, "row_condition", None) or (mostly is not None and mostly < 1):
            return None
        if kind in TABLE_LEVEL:
            whole.append(position)
            continue
        if kind == "expect_column_values_to_be_unique":
            keys.add((expectation.column,))
        elif kind == "expect_compound_columns_to_be_unique":
            keys.add(tuple(expectation.column_list))
        elif kind not in ROW_LEVEL:
            return None
        rows.append(position)
    if len(keys) > 1:
        return None
    return PartPlan(whole, rows, list(next(iter(keys), ())))


def sub_suite(suite, name: str, positions: list[int]):
    """A suite of some of another suite's expectations (a freshly built one: GE ties an
    expectation to the suite it was added to)."""
    import great_expectations as gx

    return gx.ExpectationSuite(name=name, expectations=[suite.expectations[p] for p in positions])


def describe_failures(results: list[GateResult]) -> str:
    failed = [r for r in results if not r.success]
    return "; ".join(f"{r.dataset}: {', '.join(sorted(set(r.failed_expectations)))}" for r in failed)
