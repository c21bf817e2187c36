"""The Prefect flows under a test harness: fan-out, retries, retry idempotency, the guard, artifacts."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL

from flows import pipeline
from flows.errors import LakehouseError
from flows.lake import BatchRef, current_snapshot, lake_lock, new_snapshot_id, snapshot_path, swap_current
from flows.publish import PublishResult
from flows.quality import GateResult
from flows.schemas import INTERVAL_MS
from flows.settings import load_settings
from flows.sources import LandResult
from flows.transform import BuildResult

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "binance"


class Stages:
    """Fast stand-ins for the stage functions that record what the flows asked of them."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.landed: list[tuple[str, str, str]] = []
        self.faults: dict[str, int] = {}
        self.events: list[tuple[str, int]] = []
        self.build_hook = None
        self.publish_faults = 0
        self.lock = threading.Lock()

    def _event(self, name: str) -> None:
        with self.lock:
            self.events.append((name, threading.get_ident()))

    def land(self, settings):
        key = f"{settings.source}-{settings.symbols[0]}-{settings.intervals[0]}"
        with self.lock:
            self.calls["land"] += 1
            if self.faults.get(key, 0):
                self.faults[key] -= 1
                raise ConnectionError(f"connection reset by peer while landing {key}")
            self.landed.append((settings.source, settings.symbols[0], settings.intervals[0]))
        ref = BatchRef(settings.source, "klines", (("symbol", settings.symbols[0]),), key, rows=60)
        return LandResult(refs={"klines": [ref]})

    def validate(self, settings):
        self.calls["validate"] += 1
        self._event("validate")
        return [GateResult(gate="raw", dataset="binance.klines", batches=1, accepted=60, evaluated=12)]

    def build(self, settings, full_refresh=False, changed_only=False):
        self.calls["build"] += 1
        self._event("build-start")
        if self.build_hook:
            self.build_hook()
        self._event("build-end")
        return BuildResult(models=3, tests=9, seconds=0.1)

    def publish(self, settings):
        self.calls["publish"] += 1
        if self.publish_faults:
            self.publish_faults -= 1
            raise OSError("No space left on device while exporting marts")
        self._event("publish")
        snapshot_id = new_snapshot_id()
        snapshot_path(settings.lake_dir, snapshot_id).mkdir(parents=True)
        swap_current(settings.lake_dir, snapshot_id)
        gate = [GateResult(gate="marts", dataset="fct_klines_hourly", batches=1, accepted=24, evaluated=5)]
        return PublishResult(snapshot_id=snapshot_id, tables={"fct_klines_hourly": 24}, gate=gate)


def patch_stages(monkeypatch: pytest.MonkeyPatch, fake: Stages, land: bool = True) -> Stages:
    if land:
        monkeypatch.setattr("flows.sources.land_source", fake.land)
    monkeypatch.setattr("flows.quality.validate_raw", fake.validate)
    monkeypatch.setattr("flows.transform.build_marts", fake.build)
    monkeypatch.setattr("flows.publish.publish_marts", fake.publish)
    # Same retry counts and cache keys, no waiting: the delays themselves are checked separately.
    for name in ("land_slice", "validate_raw_task", "build_marts_task", "publish_marts_task"):
        task = getattr(pipeline, name)
        monkeypatch.setattr(
            pipeline, name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        )
    return fake


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Stages:
    return patch_stages(monkeypatch, Stages())


@pytest.fixture
def binance_settings(lake_dir: Path):
    return load_settings(
        lake_dir=lake_dir,
        source="binance",
        symbols="BTCUSDT,ETHUSDT",
        intervals="1m,1h",
        start=date(2026, 10, 1),
        end=date(2026, 10, 2),
    )


def api(call):
    """Run one call against the harness's API with Prefect's async client."""

    async def go():
        async with get_client() as client:
            return await call(client)

    return asyncio.run(go())


def task_runs_under(flow_run_id) -> list:
    """Every task run of the flow run's subflows, over all attempts of the flow run."""

    async def call(client):
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            ),
            sort=FlowRunSort.ID_DESC,
            limit=200,
        )
        return await client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[f.id for f in subflows])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )

    return api(call)


def state_names(task_run_id) -> list[str]:
    states = api(lambda client: client.read_task_run_states(task_run_id))
    return [s.name for s in sorted(states, key=lambda s: s.timestamp)]


def artifacts_of(flow_run_id) -> dict[str, dict]:
    """The flow run's artifacts by key (a plain POST: the bundled client sends nulls this API rejects)."""
    body = {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "sort": "CREATED_DESC", "limit": 50}
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30)
    response.raise_for_status()
    return {a["key"]: a for a in response.json() if a["key"]}


# Fan-out ---------------------------------------------------------------------------------------


def test_ingest_maps_binance_over_every_symbol_and_interval(stages, binance_settings):
    state = pipeline.lakehouse(settings=binance_settings, return_state=True)

    assert state.is_completed()
    assert sorted(stages.landed) == [
        ("binance", "BTCUSDT", "1h"),
        ("binance", "BTCUSDT", "1m"),
        ("binance", "ETHUSDT", "1h"),
        ("binance", "ETHUSDT", "1m"),
    ]
    names = sorted(
        t.name for t in task_runs_under(state.state_details.flow_run_id) if t.name.startswith("land")
    )
    assert names == [
        "land-binance-BTCUSDT-1h",
        "land-binance-BTCUSDT-1m",
        "land-binance-ETHUSDT-1h",
        "land-binance-ETHUSDT-1m",
    ]
    assert state.result()["landed"] == {"klines": 240}


def test_incremental_lands_the_inbox_before_new_rest_klines(stages, lake_dir, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_SYMBOLS", "BTCUSDT")
    summary = pipeline.incremental.with_options(retries=0)(intervals=["1m"])

    assert [source for source, _, _ in stages.landed] == ["archive", "binance"]
    assert summary["sources"] == ["archive", "binance"]
    assert stages.calls["publish"] == 1


# Retries ---------------------------------------------------------------------------------------


def test_land_tasks_retry_with_exponential_backoff_and_jitter():
    task = pipeline.land_slice
    assert task.retries == 3
    assert task.retry_delay_seconds == [2, 4, 8]
    assert task.retry_jitter_factor == 0.5


def test_transient_faults_are_retried_until_the_slice_lands(stages, binance_settings):
    stages.faults = {"binance-ETHUSDT-1m": 2}
    state = pipeline.lakehouse(settings=binance_settings, return_state=True)

    assert state.is_completed()
    runs = {t.name: t for t in task_runs_under(state.state_details.flow_run_id)}
    flaky = runs["land-binance-ETHUSDT-1m"]
    assert flaky.run_count == 3
    assert state_names(flaky.id).count("Retrying") == 2
    assert state_names(flaky.id)[-1] == "Completed"
    assert runs["land-binance-BTCUSDT-1m"].run_count == 1
    assert state.result()["notes"]["errors"] == []
    assert ("binance", "ETHUSDT", "1m") in stages.landed


def test_a_slice_failing_after_its_retries_is_reported_and_the_rest_publish(stages, binance_settings):
    stages.faults = {"binance-BTCUSDT-1h": 99}
    state = pipeline.lakehouse(settings=binance_settings, return_state=True)

    assert state.is_completed()
    summary = state.result()
    assert summary["notes"]["errors"] == [
        "binance-BTCUSDT-1h: connection reset by peer while landing binance-BTCUSDT-1h"
    ]
    assert summary["landed"] == {"klines": 180}
    runs = {t.name: t for t in task_runs_under(state.state_details.flow_run_id)}
    assert runs["land-binance-BTCUSDT-1h"].state.name == "Failed"
    assert runs["land-binance-BTCUSDT-1h"].run_count == 4
    assert stages.calls["publish"] == 1


def test_a_run_where_nothing_landed_and_slices_failed_stops_before_building(stages, binance_settings):
    stages.faults = {f"binance-{s}-{i}": 99 for s in ("BTCUSDT", "ETHUSDT") for i in ("1m", "1h")}
    state = pipeline.lakehouse(settings=binance_settings, return_state=True)

    assert state.is_failed()
    assert stages.calls["validate"] == stages.calls["build"] == stages.calls["publish"] == 0
    paragraph = artifacts_of(state.state_details.flow_run_id)["lakehouse-failure"]["data"]
    assert paragraph.startswith(
        f"The lakehouse run failed in the ingest stage on {binance_settings.lake_dir}: no slice landed: "
        "binance-BTCUSDT-1m: connection reset by peer while landing binance-BTCUSDT-1m (and 3 more). "
        "Readers keep seeing no snapshot (nothing was published yet); nothing was validated"
    )


def test_a_first_run_with_an_empty_inbox_says_so_and_builds_nothing(monkeypatch, lake_dir):
    """Nothing landed and nothing in the lake: the run stops at ingest naming the inbox, instead
    of building empty marts that gate 2 then rejects for reasons a user cannot trace."""
    fake = patch_stages(monkeypatch, Stages(), land=False)
    settings = load_settings(lake_dir=lake_dir, source="upload")
    state = pipeline.lakehouse(settings=settings, return_state=True)

    assert state.is_failed()
    assert fake.calls["validate"] == fake.calls["build"] == fake.calls["publish"] == 0
    paragraph = artifacts_of(state.state_details.flow_run_id)["lakehouse-failure"]["data"]
    assert paragraph.startswith(
        f"The lakehouse run failed in the ingest stage on {lake_dir}: nothing landed and {lake_dir} "
        f"holds no data yet, so there is nothing to build: the inbox {lake_dir / 'inbox'} has no files; "
        "copy Binance archive zips or SYMBOL-INTERVAL-*.csv/.json files there"
    )

    # Once the lake holds data, a run that lands nothing new goes on (an hourly run often does).
    (lake_dir / "raw" / "upload").mkdir(parents=True)
    (lake_dir / "raw" / "upload" / "x.parquet").write_bytes(b"")
    assert pipeline.lakehouse(settings=settings, return_state=True).is_completed()
    assert fake.calls["publish"] == 1


def test_retried_flow_run_does_not_redo_finished_stages(stages, binance_settings):
    stages.publish_faults = 2  # the task's own retry fails too, so the flow run is retried
    retrying = pipeline.lakehouse.with_options(retries=1, retry_delay_seconds=0)
    state = retrying(settings=binance_settings, return_state=True)

    assert state.is_completed()
    assert stages.calls == Counter(land=4, validate=1, build=1, publish=3)
    names = Counter(t.state.name for t in task_runs_under(state.state_details.flow_run_id))
    assert names["Cached"] == 6  # 4 land slices, validate_raw, build_marts on the second attempt
    assert current_snapshot(binance_settings.lake_dir) == state.result()["snapshot_id"]


# The concurrency guard ----------------------------------------------------------------------


def test_two_simultaneous_runs_never_validate_build_or_publish_at_once(stages, settings, monkeypatch):
    waiting = threading.Event()

    def announce(lake_dir):
        stages._event("waiting")
        waiting.set()

    # The first run to build holds the guard until the second run is queued behind it.
    stages.build_hook = lambda: waiting.wait(timeout=600)
    monkeypatch.setattr(pipeline, "announce_wait", announce)
    settings = settings.model_copy(update={"source": "synthetic"})
    summaries: list[dict] = []
    errors: list[str] = []

    def run() -> None:
        try:
            summaries.append(pipeline.lakehouse(settings=settings))
        except BaseException:
            errors.append(traceback.format_exc())
            raise

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(summaries) == 2
    assert [name for name, _ in stages.events].count("waiting") == 1
    guarded = [(name, ident) for name, ident in stages.events if name != "waiting"]
    assert [name for name, _ in guarded] == ["validate", "build-start", "build-end", "publish"] * 2
    first, second = {i for _, i in guarded[:4]}, {i for _, i in guarded[4:]}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert summaries[0]["snapshot_id"] != summaries[1]["snapshot_id"]
    assert current_snapshot(settings.lake_dir) == max(s["snapshot_id"] for s in summaries)


def test_guard_that_must_not_wait_stops_with_one_clear_line(lake_dir):
    lake_dir.mkdir(parents=True)
    with (
        lake_lock(lake_dir, pipeline.GUARD),
        pytest.raises(LakehouseError) as caught,
        pipeline.build_guard(lake_dir, wait=False),
    ):
        pytest.fail("entered the guard while another run held it")
    assert str(caught.value) == (
        f"another run is building or publishing {lake_dir}; this run stops without changes. "
        "Retry when it has finished (see the Prefect UI or `make serve`)"
    )


# Artifacts -----------------------------------------------------------------------------------


RAW_GATE_ROW = {
    "dataset": "binance.klines",
    "batches": 1,
    "rows_accepted": 60,
    "rows_quarantined": 0,
    "rows_flagged": 0,
    "duplicates_collapsed": 0,
    "failed_expectations": "",
}


def test_each_run_publishes_rows_gates_docs_links_and_the_snapshot(stages, settings):
    settings = settings.model_copy(update={"source": "synthetic"})
    state = pipeline.lakehouse(settings=settings, return_state=True)
    summary = state.result()
    artifacts = artifacts_of(state.state_details.flow_run_id)

    assert set(artifacts) == {"lakehouse-raw-gate", "lakehouse-rows", "lakehouse-run"}
    assert summary["artifacts"] == ["lakehouse-raw-gate", "lakehouse-rows", "lakehouse-run"]
    rows = json.loads(artifacts["lakehouse-rows"]["data"])
    assert rows == [
        {"layer": "landed", "dataset": "klines", "rows": 60},
        {"layer": "marts", "dataset": "fct_klines_hourly", "rows": 24},
    ]
    assert json.loads(artifacts["lakehouse-raw-gate"]["data"]) == [RAW_GATE_ROW]
    markdown = artifacts["lakehouse-run"]["data"]
    assert f"Published snapshot **{summary['snapshot_id']}**" in markdown
    assert "| raw | binance.klines | 60 | 0 | 12 | pass |" in markdown
    assert "| marts | fct_klines_hourly | 24 | 0 | 5 | pass |" in markdown
    assert f"[{settings.data_docs_url}]({settings.data_docs_url})" in markdown
    assert f"[{settings.dbt_docs_url}]({settings.dbt_docs_url})" in markdown
    assert "data_docs/local_site/index.html" in markdown
    assert "warehouse/dbt/target/index.html" in markdown


def test_a_run_that_makes_no_new_snapshot_says_why_in_its_summary_and_artifact(stages, settings, monkeypatch):
    settings = settings.model_copy(update={"source": "synthetic"})
    note = "publish: every mart equals the live snapshot S1 under the lake, so no new snapshot; S1 stays live"
    unchanged = PublishResult(snapshot_id="S1", tables={"fct_klines_hourly": 24}, published=False, note=note)
    monkeypatch.setattr("flows.publish.publish_marts", lambda _: unchanged)
    state = pipeline.lakehouse(settings=settings, return_state=True)
    summary = state.result()

    assert (summary["snapshot_id"], summary["published"], summary["publish_note"]) == ("S1", False, note)
    markdown = artifacts_of(state.state_details.flow_run_id)["lakehouse-run"]["data"]
    assert f"No new snapshot: {note}" in markdown
    assert "Published snapshot" not in markdown


def test_a_failed_run_ends_with_a_one_paragraph_summary(stages, settings):
    settings = settings.model_copy(update={"source": "synthetic"})
    previous = stages.publish(settings).snapshot_id

    def broken() -> None:
        raise LakehouseError("dbt build failed: fct_klines_hourly: Binder Error (full log: dbt.log)")

    stages.build_hook = broken
    state = pipeline.lakehouse(settings=settings, return_state=True)

    assert state.is_failed()
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert set(artifacts) == {"lakehouse-raw-gate", "lakehouse-failure"}
    # Gate 1 ended before the build failed: its counts are there for the failed run too.
    assert json.loads(artifacts["lakehouse-raw-gate"]["data"]) == [RAW_GATE_ROW]
    paragraph = artifacts["lakehouse-failure"]["data"]
    assert paragraph == (
        f"The lakehouse run failed in the build stage on {settings.lake_dir}: dbt build failed: "
        "fct_klines_hourly: Binder Error (full log: dbt.log). Readers keep seeing snapshot "
        f"{previous}; {pipeline.STAGE_HINTS['build']}."
    )
    assert current_snapshot(settings.lake_dir) == previous


# Heartbeats -------------------------------------------------------------------------------------


def events_of(name: str, resource_ids: list[str]) -> list[dict]:
    """The server's events of this name about these resources (a plain POST to its events API)."""
    body = {
        "filter": {
            "event": {"name": [name]},
            "any_resource": {"id": resource_ids},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


def test_only_the_parent_flow_run_sends_heartbeats_its_stage_subflows_do_not(stages, settings):
    settings = settings.model_copy(update={"source": "synthetic"})
    state = pipeline.lakehouse(settings=settings, return_state=True)
    assert state.is_completed()
    parent = str(state.state_details.flow_run_id)

    async def subflows_and_names(client):
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])),
            sort=FlowRunSort.ID_DESC,
            limit=20,
        )
        return runs, sorted([(await client.read_flow(run.flow_id)).name for run in runs])

    subflows, names = api(subflows_and_names)
    assert names == ["build", "ingest", "validate_marts_and_publish", "validate_raw"]
    ids = [f"prefect.flow-run.{f.id}" for f in subflows]
    # Events reach the database a moment after the run: wait until the last one, the parent's
    # completion, is there (every heartbeat of the run was sent before it).
    deadline = time.monotonic() + 60
    while not events_of("prefect.flow-run.Completed", [f"prefect.flow-run.{parent}"]):
        assert time.monotonic() < deadline, "the parent's Completed event never reached the server"
        time.sleep(0.5)
    assert len(events_of("prefect.flow-run.Completed", ids)) == 4
    beats = events_of("prefect.flow-run.heartbeat", [f"prefect.flow-run.{parent}", *ids])
    assert [b["resource"]["prefect.resource.id"] for b in beats] == [f"prefect.flow-run.{parent}"]


QUICK_EXIT_COMMAND = """
from flows import quick_exit
from prefect import flow, get_run_logger

@flow(name="quick-exit-check")
def check():
    for i in range(150):
        get_run_logger().info("line %d", i)

state = check(return_state=True)
print(state.state_details.flow_run_id)
quick_exit.exit_with(0)
"""


def logs_of(flow_run_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    response = httpx.post(f"{PREFECT_API_URL.value()}/logs/filter", json=body, timeout=30)
    response.raise_for_status()
    return [log["message"] for log in response.json()]


def test_a_command_ending_without_teardown_has_sent_every_log_of_its_flow_run(tmp_path):
    """`lakehouse` skips the interpreter's teardown (flows.quick_exit): nothing of the run may be
    lost with the process, neither a log line nor its final state."""
    script = tmp_path / "command.py"
    script.write_text(QUICK_EXIT_COMMAND)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(Path(pipeline.__file__).parents[1]),
    }
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    flow_run_id = done.stdout.split()[-1]
    deadline = time.monotonic() + 60
    while not any("Finished in state Completed" in m for m in logs_of(flow_run_id)):
        assert time.monotonic() < deadline, "the run's last log never reached the server"
        time.sleep(0.5)
    messages = logs_of(flow_run_id)
    assert [m for m in messages if m.startswith("line ")] == [f"line {i}" for i in range(150)]
    assert api(lambda client: client.read_flow_run(flow_run_id)).state.type.value == "COMPLETED"


# Deployments ------------------------------------------------------------------------------------


def test_prefect_yaml_defines_every_deployment_of_the_lakehouse_flow():
    from flows.deployments import read_deployments, runner_deployments

    specs = {d["name"]: d for d in read_deployments()}
    assert set(specs) == {"refresh", "incremental", "backfill", "synthetic", "stream"}
    assert specs["refresh"]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert specs["incremental"]["schedules"] == [{"interval": 300, "timezone": "UTC"}]
    assert "schedules" not in specs["backfill"]
    assert {d["work_pool"]["name"] for d in specs.values()} == {"lakehouse"}
    deployments, skipped = runner_deployments()
    assert skipped == []
    assert {d.flow_name for d in deployments} == {"lakehouse"}
    assert {d.name: d.entrypoint for d in deployments}["backfill"] == "flows/pipeline.py:backfill"


@pytest.mark.parametrize(
    ("flow_name", "parameters"),
    [
        ("backfill", {"symbols": ["btcusdt"], "interval": "1m", "start": "2026-10-01", "end": "2026-10-02"}),
        ("backfill", {"symbols": ["BTCUSDT"], "interval": "7m", "start": "2026-10-01", "end": "2026-10-02"}),
        ("backfill", {"symbols": ["BTCUSDT"], "interval": "1m", "start": "yesterday", "end": "2026-10-02"}),
        ("backfill", {"symbols": ["BTCUSDT"], "interval": "1m"}),
        ("refresh", {"sources": ["kraken"]}),
        ("stream", {"duration": -1}),
    ],
)
def test_deployment_parameters_are_validated_by_prefect(flow_name, parameters):
    with pytest.raises(ParameterTypeError):
        getattr(pipeline, flow_name).validate_parameters(parameters)


def test_backfill_parameters_are_typed():
    validated = pipeline.backfill.validate_parameters(
        {"symbols": ["BTCUSDT"], "interval": "1h", "start": "2026-10-01", "end": "2026-10-08"}
    )
    assert validated["start"] == date(2026, 10, 1)
    assert validated["end"] == date(2026, 10, 8)


# Scale-out on Dask ----------------------------------------------------------------------------


class FakeBinance(http.server.BaseHTTPRequestHandler):
    """Spot klines and exchange info as Binance serves them, generated for the asked range; other
    symbols than BTCUSDT and ETHUSDT are rejected (-1121), and the server's scripted faults
    (status, headers, body) answer klines calls first. The server keeps every request."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((url.path, query))
        status, headers = 200, {"X-MBX-USED-WEIGHT-1M": "2"}
        if url.path == "/api/v3/klines" and self.server.faults:
            status, headers, answer = self.server.faults.pop(0)
            body = json.dumps(answer).encode()
        elif url.path == "/api/v3/exchangeInfo":
            body = (FIXTURES / "spot_exchange_info.json").read_bytes()
        elif url.path == "/api/v3/klines" and query["symbol"] not in ("BTCUSDT", "ETHUSDT"):
            status, body = 400, json.dumps({"code": -1121, "msg": "Invalid symbol."}).encode()
        elif url.path == "/api/v3/klines":
            step = INTERVAL_MS[query["interval"]]
            first = -(-int(query["startTime"]) // step) * step
            opens = range(first, int(query["endTime"]) + 1, step)[: int(query["limit"])]
            rows = [
                [t, "100.0", "101.0", "99.0", "100.5", "2.0", t + step - 1, "201.0", 7, "1.0", "100.5", "0"]
                for t in opens
            ]
            body = json.dumps(rows).encode()
        else:
            self.send_error(404)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def binance_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeBinance)
    server.requests, server.faults = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_binance(binance_server):
    return f"http://127.0.0.1:{binance_server.server_address[1]}/api"


@pytest.fixture
def dask_cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def replay_day_settings(lake_dir: Path, api_url: str, symbols: str):
    """A day of hourly Binance klines from the replay server at api_url."""
    return load_settings(
        lake_dir=lake_dir,
        source="binance",
        symbols=symbols,
        intervals="1h",
        start=date(2026, 10, 1),
        end=date(2026, 10, 2),
        binance_api_url=api_url,
    )


def test_ingestion_fans_out_over_a_dask_cluster_of_two_processes(
    monkeypatch, lake_dir, fake_binance, dask_cluster
):
    from distributed import get_task_stream

    cluster, client = dask_cluster
    stages = patch_stages(monkeypatch, Stages(), land=False)  # landing runs for real, on the workers
    settings = replay_day_settings(lake_dir, fake_binance, "BTCUSDT,ETHUSDT")
    with get_task_stream(client) as stream:
        state = pipeline.lakehouse(
            settings=settings, task_runner="dask", dask_address=cluster.scheduler_address, return_state=True
        )

    assert state.is_completed()
    assert state.result()["landed"]["klines"] == 48
    workers = set(cluster.scheduler_info["workers"])
    assert len(stream.data) == 2
    assert {record["worker"] for record in stream.data} <= workers
    assert os.getpid() not in client.run(os.getpid).values()
    runs = {t.name: t.state.name for t in task_runs_under(state.state_details.flow_run_id)}
    assert runs["land-binance-BTCUSDT-1h"] == runs["land-binance-ETHUSDT-1h"] == "Completed"
    landed = sorted(
        p.relative_to(lake_dir / "landing" / "binance" / "klines").parts[:2]
        for p in (lake_dir / "landing" / "binance" / "klines").rglob("*.parquet")
    )
    assert landed == [("symbol=BTCUSDT", "interval=1h"), ("symbol=ETHUSDT", "interval=1h")]
    assert stages.calls["publish"] == 1


def test_dask_runner_without_an_address_starts_a_local_cluster_of_two_processes():
    runner = pipeline.make_task_runner("dask")
    assert runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True}
    assert pipeline.make_task_runner("thread") is None
    with pytest.raises(LakehouseError, match="--dask-address needs --task-runner dask"):
        pipeline.make_task_runner("thread", "tcp://127.0.0.1:8786")
    with pytest.raises(LakehouseError, match="task runner 'spark' is not one of thread, dask"):
        pipeline.make_task_runner("spark")


# Binance faults through real flow runs --------------------------------------------------------


def flow_run_of(state):
    return api(lambda client: client.read_flow_run(state.state_details.flow_run_id))


def klines_asked(server, symbol: str) -> int:
    return sum(1 for path, query in server.requests if path.endswith("/klines") and query["symbol"] == symbol)


def test_a_rejected_symbol_is_asked_once_and_named_in_the_run_summary(
    monkeypatch, lake_dir, binance_server, fake_binance
):
    """HTTP 400 -1121 is the same on every attempt: no task retry; the other symbol publishes and
    the failed series reaches the summary's notes["errors"], which the CLI prints."""
    patch_stages(monkeypatch, Stages(), land=False)
    settings = replay_day_settings(lake_dir, fake_binance, "BTCUSDT,NOPEUSDT")
    state = pipeline.lakehouse(settings=settings, return_state=True)

    assert state.is_completed()
    summary = state.result()
    assert summary["notes"]["errors"] == [
        "binance-NOPEUSDT-1h: no klines landed: NOPEUSDT 1h (spot): Binance rejected spot klines "
        "NOPEUSDT 1h from 2026-10-01 00:00:00: Invalid symbol. (code -1121, HTTP 400)"
    ]
    assert summary["landed"]["klines"] == 24
    runs = {t.name: t for t in task_runs_under(state.state_details.flow_run_id)}
    assert runs["land-binance-NOPEUSDT-1h"].state.name == "Failed"
    assert runs["land-binance-NOPEUSDT-1h"].run_count == 1
    assert klines_asked(binance_server, "NOPEUSDT") == 1


def test_a_binance_ban_stops_task_retries_flow_retries_and_later_runs(
    monkeypatch, lake_dir, binance_server, fake_binance, capsys
):
    """A 418 is answered once: the ban's end is recorded in the lake, and until then no task
    retry, flow retry, incremental deployment run or `lakehouse run` calls Binance again."""
    fake = patch_stages(monkeypatch, Stages(), land=False)
    monkeypatch.setenv("LAKEHOUSE_BINANCE_API_URL", fake_binance)
    binance_server.faults.append((418, {"Retry-After": "7200"}, {"code": -1003, "msg": "IP banned."}))
    started = time.time()
    backfill = pipeline.backfill.with_options(retry_delay_seconds=0)
    state = backfill(
        symbols=["BTCUSDT"], interval="1h", start=date(2026, 10, 1), end=date(2026, 10, 2), return_state=True
    )

    assert state.is_failed() and flow_run_of(state).run_count == 1
    assert [path for path, _ in binance_server.requests] == ["/api/v3/exchangeInfo", "/api/v3/klines"]
    runs = {t.name: t for t in task_runs_under(state.state_details.flow_run_id)}
    assert runs["land-binance-BTCUSDT-1h"].run_count == 1
    record_path = lake_dir / "state" / "binance" / "spot-backoff.json"
    record = json.loads(record_path.read_text())
    assert record["status"] == 418 and record["retry_after_seconds"] == 7200
    assert started + 7200 <= record["until_epoch"] <= time.time() + 7200
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["until_epoch"]))
    with pytest.raises(LakehouseError) as first:
        state.result()
    assert str(first.value) == (
        "no slice landed: binance-BTCUSDT-1h: no klines landed: BTCUSDT 1h (spot): Binance banned this IP "
        f"(HTTP 418) for 7200 s, until {until} UTC (recorded in {record_path}); spot ingestion stopped and "
        "sends no spot request before then; a run after that time picks up where the lake ends"
    )

    incremental = pipeline.incremental.with_options(retry_delay_seconds=0)
    state = incremental(symbols=["BTCUSDT"], intervals=["1h"], return_state=True)
    assert state.is_failed() and flow_run_of(state).run_count == 1

    from flows.cli import main

    args = ["run", "--source", "binance", "--symbols", "BTCUSDT", "--interval", "1h"]
    assert main([*args, "--start", "2026-10-01", "--end", "2026-10-02"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        "error: no slice landed: binance-BTCUSDT-1h: no klines landed: BTCUSDT 1h (spot): Binance banned "
        "this IP (HTTP 418) for "
    )
    assert err[0].endswith(
        f" s, until {until} UTC (recorded in {record_path}); spot ingestion stopped and sends no spot "
        "request before then; a run after that time picks up where the lake ends"
    )
    assert len(binance_server.requests) == 2  # nothing after the 418
    assert fake.calls["validate"] == fake.calls["build"] == fake.calls["publish"] == 0


def test_deployment_flows_retry_what_may_pass_and_stop_at_once_on_what_would_fail_again(
    stages, lake_dir, monkeypatch
):
    from flows.publish import GateFailed

    window = {"symbols": ["BTCUSDT"], "start": date(2026, 10, 1), "end": date(2026, 10, 2)}
    synthetic = pipeline.synthetic.with_options(retry_delay_seconds=0)

    # A settings error: the same parameters fail the same way on a retry.
    backfill = pipeline.backfill.with_options(retry_delay_seconds=0)
    state = backfill(
        symbols=["BTCUSDT"], interval="1h", start=date(2026, 10, 2), end=date(2026, 10, 1), return_state=True
    )
    assert state.is_failed() and flow_run_of(state).run_count == 1
    with pytest.raises(
        LakehouseError, match=r"^invalid settings: end 2026-10-01 must be after start 2026-10-02"
    ):
        state.result()

    # Gate 2 rejecting the marts: neither the publish task nor the flow run tries again.
    rejected = []

    def gate_fails(settings):
        rejected.append(settings)
        raise GateFailed("gate 2 failed: fct_klines_hourly has fewer rows than the published snapshot")

    with monkeypatch.context() as patched:
        patched.setattr("flows.publish.publish_marts", gate_fails)
        state = synthetic(**window, return_state=True)
    assert state.is_failed() and flow_run_of(state).run_count == 1
    assert len(rejected) == 1
    publish = [t for t in task_runs_under(state.state_details.flow_run_id) if t.name.startswith("publish")]
    assert [(t.run_count, t.state.name) for t in publish] == [(1, "Failed")]

    # A full disk may pass: the task retries once, then the flow run retries and publishes.
    stages.publish_faults = 2
    state = synthetic(**window, return_state=True)
    assert state.is_completed() and flow_run_of(state).run_count == 2
    assert stages.calls["publish"] == 3
