"""The Prefect flows: one parent `lakehouse` flow with a subflow per stage, and its deployments."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.tasks import exponential_backoff
from pydantic import Field

from flows.errors import LakehouseError
from flows.lake import check_lake_dir, current_snapshot, lake_lock
from flows.settings import KLINE_INTERVALS, Settings, Source, load_settings
from flows.sources import LandResult

# Network and disk hiccups pass in seconds; jitter keeps parallel slices from retrying in step.
LAND_RETRIES = 3
LAND_DELAYS = exponential_backoff(backoff_factor=2)
RETRY_JITTER = 0.5
# Results of finished tasks are kept this long, so a retried flow run picks them up.
CACHE_EXPIRATION = timedelta(days=1)
# The task's own code is part of the key: two tasks given the same inputs never share a result.
CACHED = INPUTS + TASK_SOURCE
# One lock for gate 1, build and publish: the stages that move files and rewrite shared state.
GUARD = "build"
# Sources that land one series (symbol x interval) per call; the rest land all in one call.
PER_SERIES_SOURCES = ("binance",)

TaskRunnerName = Literal["thread", "dask"]
SymbolParam = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}$")]
IntervalParam = Literal[KLINE_INTERVALS]  # type: ignore[valid-type]

STAGE_HINTS = {
    "ingest": (
        "nothing was validated, built or published. Check the source (network and Binance status "
        "for binance, the files in the inbox for archive/upload) and rerun: landing is idempotent, "
        "so batches that did land are replaced, not duplicated"
    ),
    "validate_raw": (
        "landed batches that were not validated stay in lake/landing and the published snapshot is "
        "unchanged. Run `lakehouse validate --debug` to see the error, fix it and rerun"
    ),
    "build": (
        "dbt did not finish, so nothing was published and the previous snapshot stays live. Read "
        "the failing models or tests above, fix them and rerun (`lakehouse build` rebuilds alone)"
    ),
    "publish": (
        "gate 2 or the export failed, so nothing new was published. Open "
        "`make dq-report` for the failed expectations, fix the model or data and rerun"
    ),
}


# Retries: only for what may pass ---------------------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: network errors, 5xx and timeouts may pass; a
    LakehouseError (settings, gate 2, a rejected symbol, a Binance ban) fails the same way again.
    An exception may say so itself with a `retryable` attribute (flows.sources.binance_rest)."""
    retryable = getattr(exc, "retryable", None)
    if retryable is not None:
        return bool(retryable)
    return not isinstance(exc, LakehouseError)


def retry_if_it_may_pass(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: the failed state's exception decides."""
    try:
        state.result()
    except Exception as exc:
        return is_retryable(exc)
    return True


def stop_flow_retries() -> None:
    """Make the current flow run's failure final.

    Prefect 3.8 has no retry condition for flows: its server turns a flow run's failure into a
    retry while the run's `empirical_policy.retries` lasts. Setting that budget to 0 on the run
    before the failure is reported lets the failure through at once.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = context.flow_run
    policy = run.empirical_policy.model_copy(update={"retries": 0})
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id=run.id, empirical_policy=policy)
    run.empirical_policy = policy


@contextlib.contextmanager
def final_unless_retryable() -> Iterator[None]:
    """Around a deployment flow's body: a failure another attempt would repeat is not retried."""
    try:
        yield
    except Exception as exc:
        if not is_retryable(exc):
            try:
                stop_flow_retries()
            except Exception as unset:  # the failure itself matters more: report it all the same
                _logger().warning("could not stop this flow run's retries: %s", unset)
        raise


# Tasks: thin wrappers over plain functions, so tests can call those without Prefect -------------


@task(
    name="land",
    retry_condition_fn=retry_if_it_may_pass,
    retries=LAND_RETRIES,
    retry_delay_seconds=LAND_DELAYS,
    retry_jitter_factor=RETRY_JITTER,
    cache_policy=CACHED,
    cache_expiration=CACHE_EXPIRATION,
)
def land_slice(settings: Settings, run_key: str, backfill: bool = False) -> LandResult:
    """Land one slice (a source, or one symbol x interval of it) into lake/landing."""
    return land_one(settings, backfill=backfill)


@task(
    name="validate_raw",
    retry_condition_fn=retry_if_it_may_pass,
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_jitter_factor=RETRY_JITTER,
    cache_policy=CACHED,
    cache_expiration=CACHE_EXPIRATION,
)
def validate_raw_task(settings: Settings, run_key: str):
    from flows.quality import validate_raw

    return validate_raw(settings)


@task(
    name="build_marts",
    retry_condition_fn=retry_if_it_may_pass,
    retries=1,
    retry_delay_seconds=[10],
    retry_jitter_factor=RETRY_JITTER,
    cache_policy=CACHED,
    cache_expiration=CACHE_EXPIRATION,
)
def build_marts_task(settings: Settings, run_key: str, full_refresh: bool = False):
    from flows.transform import build_marts

    # Only what changed since the last successful build; everything on a full refresh.
    return build_marts(settings, full_refresh=full_refresh, changed_only=True)


@task(
    name="publish_marts",
    retry_condition_fn=retry_if_it_may_pass,
    retries=1,
    retry_delay_seconds=[10],
    retry_jitter_factor=RETRY_JITTER,
    cache_policy=CACHED,
    cache_expiration=CACHE_EXPIRATION,
)
def publish_marts_task(settings: Settings, run_key: str):
    from flows.publish import publish_marts

    return publish_marts(settings)


def land_one(settings: Settings, backfill: bool = False) -> LandResult:
    """Backfills of Binance klines take the explicit range; everything else lands incrementally."""
    if backfill and settings.source == "binance":
        from flows.sources.binance_rest import backfill_klines

        return backfill_klines(settings)
    from flows import sources

    return sources.land_source(settings)


def plan_ingest(settings: Settings, sources: list[str]) -> list[Settings]:
    """One settings slice per source, split per symbol x interval where the source lands series."""
    slices = []
    for source in sources:
        if source in PER_SERIES_SOURCES:
            slices += [
                settings.model_copy(update={"source": source, "symbols": [s], "intervals": [i]})
                for s in settings.symbols
                for i in settings.intervals
            ]
        else:
            slices.append(settings.model_copy(update={"source": source}))
    return slices


def merge_notes(into: dict, more: dict) -> dict:
    """Notes of many slices as one: lists are joined, counters added, anything else kept last."""
    merged = dict(into)
    for key, value in more.items():
        old = merged.get(key)
        if isinstance(old, list) and isinstance(value, list):
            merged[key] = old + value
        elif isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge_notes(old, value)
        elif isinstance(old, int | float) and isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = old + value
        else:
            merged[key] = value
    return merged


def slice_label(settings: Settings) -> str:
    if settings.source in PER_SERIES_SOURCES:
        return f"land-{settings.source}-{settings.symbols[0]}-{settings.intervals[0]}"
    return f"land-{settings.source}"


def make_task_runner(name: str, address: str | None = None):
    """The task runner for the ingestion fan-out: threads here, or a Dask cluster."""
    if name == "thread":
        if address:
            raise LakehouseError("--dask-address needs --task-runner dask")
        return None
    if name != "dask":
        raise LakehouseError(f"task runner {name!r} is not one of thread, dask")
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # Processes, not threads: landing parses and writes parquet, which holds the GIL in places.
    return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True})


# Subflows: one per stage --------------------------------------------------------------------


@flow(name="ingest")
def ingest(slices: list[Settings], run_key: str, backfill: bool = False) -> LandResult:
    """Land every slice; sources go in the order given, the slices of one source in parallel.

    A slice that still fails after its retries is recorded in notes["errors"]; the other slices
    carry on. When there were errors and nothing landed at all, the stage fails: building and
    publishing would only repeat the last run.
    """
    logger = get_run_logger()
    result = LandResult()
    errors: list[str] = []
    passing = False  # whether a failed slice may land on another attempt (a flow retry)
    by_source: dict[str, list[Settings]] = {}
    for piece in slices:
        by_source.setdefault(piece.source, []).append(piece)
    for pieces in by_source.values():
        futures = [
            (
                piece,
                land_slice.with_options(task_run_name=slice_label(piece)).submit(piece, run_key, backfill),
            )
            for piece in pieces
        ]
        for piece, future in futures:
            future.wait()
            if future.state.is_completed():
                landed = future.result()
                errors += landed.notes.pop("errors", None) or []
                notes = merge_notes(result.notes, landed.notes)
                result.merge(landed).notes = notes
            else:
                message = _first_line(future.state.message or "failed")
                try:
                    future.result()
                except Exception as exc:
                    message = _first_line(str(exc)) or type(exc).__name__
                    passing = passing or is_retryable(exc)
                errors.append(f"{slice_label(piece).removeprefix('land-')}: {message}")
                logger.error("landing %s failed after retries: %s", slice_label(piece), message)
    result.notes["errors"] = errors
    if errors and not any(result.refs.values()):
        failure = LakehouseError(
            f"no slice landed: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )
        failure.retryable = passing
        raise failure
    if slices and not any(result.refs.values()) and not lake_holds_data(slices[0].lake_dir):
        raise LakehouseError(nothing_to_build(slices[0], result.notes))
    return result


def lake_holds_data(lake_dir: Path) -> bool:
    """Whether any batch is in raw or landing (stops at the first file found)."""
    return any(
        next((Path(lake_dir) / zone).rglob("*.parquet"), None) is not None for zone in ("raw", "landing")
    )


def nothing_to_build(settings: Settings, notes: dict) -> str:
    """Why a first run has nothing to build, and where the data should come from."""
    message = f"nothing landed and {settings.lake_dir} holds no data yet, so there is nothing to build"
    if settings.source in ("archive", "upload"):
        failed = (notes.get("inbox") or {}).get("failed") or []
        if failed:
            return f"{message}: every inbox file failed ({failed[0]}); see {settings.inbox / 'failed'}"
        return (
            f"{message}: the inbox {settings.inbox} has no files; copy Binance archive zips or "
            "SYMBOL-INTERVAL-*.csv/.json files there, or use `lakehouse import-archive` / `lakehouse upload`"
        )
    return f"{message}: check the source settings (symbols, intervals, --start/--end)"


@flow(name="validate_raw")
def validate_raw_flow(settings: Settings, run_key: str):
    return validate_raw_task(settings, run_key)


@flow(name="build")
def build(settings: Settings, run_key: str, full_refresh: bool = False):
    return build_marts_task(settings, run_key, full_refresh)


@flow(name="validate_marts_and_publish")
def publish(settings: Settings, run_key: str):
    return publish_marts_task(settings, run_key)


# The guard, the artifacts and the failure summary -------------------------------------------


def announce_wait(lake_dir: Path) -> None:
    """Say why the run is idle; tests hook this to know a second run reached the guard."""
    _logger().warning(
        "another run is validating, building or publishing %s; waiting for it to finish", lake_dir
    )


@contextlib.contextmanager
def build_guard(lake_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the lake's build lock; wait for it (saying so) or fail with one clear line."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lake_lock(lake_dir, GUARD, wait=False))
        except LakehouseError as exc:
            if not wait:
                raise LakehouseError(
                    f"another run is building or publishing {lake_dir}; this run stops without "
                    "changes. Retry when it has finished (see the Prefect UI or `make serve`)"
                ) from exc
            announce_wait(lake_dir)
            stack.enter_context(lake_lock(lake_dir, GUARD, wait=True))
        yield


@contextlib.contextmanager
def subflow_without_heartbeat() -> Iterator[None]:
    """Run a stage's subflow without a heartbeat of its own.

    Prefect (3.8) gives every flow run, subflows included, a heartbeat thread (every 180 s by
    default) that sleeps in steps of a whole second, and a run's end waits for that thread to
    wake: up to a second at the end of each subflow, which cost a pipeline run 2 to 3 s. A
    subflow runs in its parent's process, and the parent's heartbeat, which stays, already tells
    the server whether that process is alive (what zombie-run automations watch).
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _logger():
    try:
        return get_run_logger()
    except Exception:  # outside a run (plain function calls in tests)
        import logging

        return logging.getLogger(__name__)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def rows_table(summary: dict) -> list[dict[str, Any]]:
    """Rows per layer and dataset: landed this run, raw in total, marts in the new snapshot."""
    from flows.report import raw_row_counts

    rows = [{"layer": "landed", "dataset": k, "rows": v} for k, v in sorted(summary["landed"].items())]
    raw = raw_row_counts(Path(summary["lake_dir"]))
    rows += [{"layer": "raw (all runs)", "dataset": k, "rows": v} for k, v in sorted(raw.items())]
    rows += [{"layer": "marts", "dataset": k, "rows": v} for k, v in sorted(summary["marts"].items())]
    return rows


def gates_markdown(summary: dict, settings: Settings) -> str:
    from flows.quality import data_docs_index
    from flows.transform import dbt_paths

    data_docs = data_docs_index(settings)
    dbt_docs = dbt_paths(settings)[0] / "index.html"
    lines = [
        f"# Run summary: snapshot `{summary['snapshot_id']}`",
        "",
        f"Published snapshot **{summary['snapshot_id']}** in `{summary['lake_dir']}/marts`."
        if summary.get("published", True)
        else f"No new snapshot: {summary.get('publish_note')}",
        "",
        "| gate | dataset | accepted | quarantined | checks | result |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in summary["raw_gate"] + summary["mart_gate"]:
        verdict = "pass" if row["success"] else f"fail: {row['failed_expectations']}"
        lines.append(
            f"| {row['gate']} | {row['dataset']} | {row['rows_accepted']:,} | "
            f"{row['rows_quarantined']:,} | {row['expectations_evaluated']} | {verdict} |"
        )
    data_docs_url = getattr(settings, "data_docs_url", "http://127.0.0.1:8081/index.html")
    dbt_docs_url = getattr(settings, "dbt_docs_url", "http://127.0.0.1:8080")
    lines += [
        "",
        f"- Data Docs (Great Expectations): [{data_docs_url}]({data_docs_url}) while "
        f"`make dq-report` serves them; the files: [{data_docs}]({data_docs.as_uri()})",
        f"- dbt docs and lineage: [{dbt_docs_url}]({dbt_docs_url}) while `make docs` serves "
        f"them; the files: [{dbt_docs}]({dbt_docs.as_uri()})",
    ]
    if summary["notes"].get("errors"):
        lines += ["", "Landing errors (the other slices landed):", ""]
        lines += [f"- {e}" for e in summary["notes"]["errors"]]
    return "\n".join(lines)


def failure_summary(stage: str, exc: BaseException, lake_dir: Path) -> str:
    """One paragraph: what failed, where, what stays as it was, what to do."""
    live = current_snapshot(lake_dir)
    live_text = f"snapshot {live}" if live else "no snapshot (nothing was published yet)"
    reason = _first_line(str(exc)) or type(exc).__name__
    return (
        f"The lakehouse run failed in the {stage} stage on {lake_dir}: {reason}. "
        f"Readers keep seeing {live_text}; {STAGE_HINTS[stage]}."
    )


RAW_GATE_COLUMNS = (
    "dataset",
    "batches",
    "rows_accepted",
    "rows_quarantined",
    "rows_flagged",
    "duplicates_collapsed",
    "failed_expectations",
)


def raw_gate_artifact(raw_gate: list) -> str:
    """Gate 1's counts per dataset, published as soon as the gate ends: a run that fails later
    (build, gate 2) still shows what was accepted and quarantined."""
    create_table_artifact(
        key="lakehouse-raw-gate",
        table=[{k: r.as_row()[k] for k in RAW_GATE_COLUMNS} for r in raw_gate],
        description="Gate 1: rows accepted and quarantined per dataset "
        "(`lakehouse quarantine list` shows the quarantined batches)",
    )
    return "lakehouse-raw-gate"


def publish_artifacts(summary: dict, settings: Settings) -> list[str]:
    create_table_artifact(
        key="lakehouse-rows",
        table=rows_table(summary),
        description=f"Rows per layer and dataset, snapshot {summary['snapshot_id']}",
    )
    create_markdown_artifact(
        key="lakehouse-run",
        markdown=gates_markdown(summary, settings),
        description="Quality gates, docs links and the published snapshot",
    )
    return ["lakehouse-rows", "lakehouse-run"]


# The pipeline and the flows that run it ------------------------------------------------------


def run_pipeline(
    settings: Settings,
    sources: list[str],
    *,
    backfill: bool = False,
    full_refresh: bool = False,
    task_runner: str = "thread",
    dask_address: str | None = None,
    wait_for_lock: bool = True,
) -> dict:
    """Land, gate 1, dbt build, gate 2 and publish inside the current flow run; returns the summary.

    Tasks are cached on (this flow run's id, their inputs): when a failed run is retried, stages
    that finished come back from the cache instead of running again.
    """
    check_lake_dir(settings.lake_dir)
    runner = make_task_runner(task_runner, dask_address)
    run_key = str(flow_run.id or "local")
    seconds: dict[str, float] = {}
    logger = get_run_logger()

    def stage(name: str, fn: Callable, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            with subflow_without_heartbeat():
                value = fn(*args)
        except Exception as exc:
            paragraph = failure_summary(name, exc, settings.lake_dir)
            logger.error(paragraph)
            with contextlib.suppress(Exception):
                create_markdown_artifact(
                    key="lakehouse-failure", markdown=paragraph, description=f"{name} failed"
                )
            raise
        seconds[name] = round(time.perf_counter() - started, 1)
        return value

    from flows.quality import preload_in_background
    from flows.sources import import_source_modules

    import_source_modules(sources)
    from flows.transform import warm_build

    ingest_flow = ingest.with_options(task_runner=runner) if runner is not None else ingest
    # dbt starts (imports, parses the project) while the run lands and validates; the build,
    # when its turn comes, runs at once. It starts first: starting a process waits for imports
    # in progress in other threads (CPython's fork holds the import lock), such as GE's.
    with warm_build(settings, full_refresh=full_refresh) as dbt_worker:
        preload_in_background()  # GE's import overlaps landing instead of adding to gate 1
        landed = stage("ingest", ingest_flow, plan_ingest(settings, sources), run_key, backfill)
        dbt_worker.landed()  # the lake's size is known: a small one's build preloads more
        with build_guard(settings.lake_dir, wait=wait_for_lock):
            raw_gate = stage("validate_raw", validate_raw_flow, settings, run_key)
            raw_artifact = raw_gate_artifact(raw_gate)
            built = stage("build", build, settings, run_key, full_refresh)
            published = stage("publish", publish, settings, run_key)
            # dbt wrote the build's manifest while publish ran; done before the next run may build.
            dbt_worker.close()
    summary = {
        "lake_dir": str(settings.lake_dir),
        "landed": landed.rows,
        "notes": landed.notes,
        "raw_gate": [r.as_row() for r in raw_gate],
        "build": asdict(built),
        "mart_gate": [r.as_row() for r in published.gate],
        "snapshot_id": published.snapshot_id,
        # False when publish made no snapshot (nothing new, or a rollback holds the live one).
        "published": published.published,
        "publish_note": published.note,
        "marts": published.tables,
        "marts_unchanged": published.reused,
        "marts_gate_carried": published.carried,
        "seconds": seconds,
        "sources": list(sources),
        "flow_run_id": run_key,
    }
    summary["artifacts"] = [raw_artifact, *publish_artifacts(summary, settings)]
    if published.published:
        logger.info("published snapshot %s", published.snapshot_id)
    else:
        logger.info(published.note)
    return summary


@flow(name="lakehouse", log_prints=True)
def lakehouse(
    settings: Settings | None = None,
    full_refresh: bool = False,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict:
    """Land the configured source, gate 1, dbt build, gate 2 and publish; returns the run summary."""
    settings = settings or load_settings()
    return run_pipeline(
        settings,
        [settings.source],
        full_refresh=full_refresh,
        task_runner=task_runner,
        dask_address=dask_address,
    )


# Deployment entry points: plain typed parameters that Prefect validates, settings built inside.
# All are named `lakehouse`, so the UI lists them as lakehouse/refresh, lakehouse/backfill, ...


@flow(name="lakehouse", log_prints=True, retries=1, retry_delay_seconds=60)
def refresh(
    sources: list[Source] | None = None,
    symbols: list[SymbolParam] | None = None,
    intervals: list[IntervalParam] | None = None,
    start: date | None = None,
    end: date | None = None,
    full_refresh: bool = False,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict:
    """The whole pipeline for the given sources (default: the configured one)."""
    with final_unless_retryable():
        settings = load_settings(symbols=symbols, intervals=intervals, start=start, end=end)
        return run_pipeline(
            settings,
            list(sources or [settings.source]),
            full_refresh=full_refresh,
            task_runner=task_runner,
            dask_address=dask_address,
        )


@flow(name="lakehouse", log_prints=True, retries=1, retry_delay_seconds=30)
def incremental(
    symbols: list[SymbolParam] | None = None,
    intervals: list[IntervalParam] | None = None,
    market: Literal["spot", "usdm"] | None = None,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict:
    """Files waiting in the inbox, then new closed klines from Binance REST; build and publish."""
    with final_unless_retryable():
        settings = load_settings(symbols=symbols, intervals=intervals, market=market)
        return run_pipeline(
            settings, ["archive", "binance"], task_runner=task_runner, dask_address=dask_address
        )


@flow(name="lakehouse", log_prints=True, retries=1, retry_delay_seconds=60)
def backfill(
    symbols: list[SymbolParam],
    interval: IntervalParam,
    start: date,
    end: date,
    market: Literal["spot", "usdm"] | None = None,
    task_runner: TaskRunnerName = "thread",
    dask_address: str | None = None,
) -> dict:
    """Binance klines for exactly [start, end) (days), then build and publish."""
    with final_unless_retryable():
        settings = load_settings(symbols=symbols, intervals=[interval], start=start, end=end, market=market)
        return run_pipeline(
            settings, ["binance"], backfill=True, task_runner=task_runner, dask_address=dask_address
        )


@flow(name="lakehouse", log_prints=True, retries=1, retry_delay_seconds=60)
def synthetic(
    symbols: list[SymbolParam] | None = None,
    start: date | None = None,
    end: date | None = None,
    seed: int | None = None,
) -> dict:
    """The offline synthetic market, users, transactions and network data; build and publish."""
    with final_unless_retryable():
        settings = load_settings(symbols=symbols, start=start, end=end, seed=seed)
        return run_pipeline(settings, ["synthetic"])


@flow(name="lakehouse", log_prints=True)
def stream(
    symbols: list[SymbolParam] | None = None,
    market: Literal["spot", "usdm"] | None = None,
    duration: Annotated[float, Field(gt=0)] | None = None,
) -> dict[str, int]:
    """The live trade stream (flows/stream_flow.py) as a subflow, listed as lakehouse/stream."""
    from flows.stream_flow import trade_stream

    return trade_stream(symbols=symbols, market=market, duration=duration)
