"""The Prefect flows: one parent `lakehouse` flow with a subflow per stage of the data path."""

from __future__ import annotations

import time
from dataclasses import asdict

from prefect import flow, task

from flows.lake import check_lake_dir, lake_lock
from flows.settings import Settings, load_settings

RETRY_DELAYS = [2, 10, 30]


@task(name="land_source", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=0.5)
def land_source_task(settings: Settings):
    from flows.sources import land_source

    return land_source(settings)


@task(name="validate_raw", retries=1, retry_delay_seconds=[5])
def validate_raw_task(settings: Settings):
    from flows.quality import validate_raw

    return validate_raw(settings)


@task(name="build_marts", retries=1, retry_delay_seconds=[5])
def build_marts_task(settings: Settings, full_refresh: bool = False):
    from flows.transform import build_marts

    return build_marts(settings, full_refresh=full_refresh)


@task(name="publish_marts")
def publish_marts_task(settings: Settings):
    from flows.publish import publish_marts

    return publish_marts(settings)


@flow(name="ingest")
def ingest(settings: Settings):
    return land_source_task(settings)


@flow(name="validate_raw")
def validate_raw_flow(settings: Settings):
    return validate_raw_task(settings)


@flow(name="build")
def build(settings: Settings, full_refresh: bool = False):
    return build_marts_task(settings, full_refresh)


@flow(name="validate_marts_and_publish")
def publish(settings: Settings):
    return publish_marts_task(settings)


@flow(name="lakehouse", log_prints=True)
def lakehouse(settings: Settings | None = None, full_refresh: bool = False) -> dict:
    """Land, gate 1, dbt build, gate 2 and publish; returns the run summary."""
    settings = settings or load_settings()
    check_lake_dir(settings.lake_dir)
    seconds: dict[str, float] = {}

    def timed(stage, fn, *args):
        started = time.perf_counter()
        value = fn(*args)
        seconds[stage] = round(time.perf_counter() - started, 1)
        return value

    landed = timed("ingest", ingest, settings)
    raw_gate = timed("validate_raw", validate_raw_flow, settings)
    with lake_lock(settings.lake_dir, "build"):
        built = timed("build", build, settings, full_refresh)
        published = timed("publish", publish, settings)
    return {
        "lake_dir": str(settings.lake_dir),
        "landed": landed.rows,
        "notes": landed.notes,
        "raw_gate": [r.as_row() for r in raw_gate],
        "build": asdict(built),
        "mart_gate": [r.as_row() for r in published.gate],
        "snapshot_id": published.snapshot_id,
        "marts": published.tables,
        "seconds": seconds,
    }
