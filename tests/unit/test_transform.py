"""The dbt runner's environment: the warehouse's memory limit grows with the raw lake."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from flows import transform
from flows.errors import LakehouseError
from flows.settings import load_settings


def sparse_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_small_lake_gets_the_base_memory_limit(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake")
    sparse_file(tmp_path / "lake" / "raw" / "synthetic" / "klines" / "date=2026-01-01" / "a.parquet", 2**20)
    assert transform.dbt_env(settings)["LAKEHOUSE_DBT_MEMORY_LIMIT"] == "768MB"


def test_memory_limit_adds_most_of_the_raw_parquet_size_in_steps(tmp_path):
    raw = tmp_path / "lake" / "raw"
    sparse_file(raw / "synthetic" / "klines" / "symbol=BTCUSDT" / "date=2026-01-01" / "a.parquet", 2**29)
    sparse_file(raw / "binance" / "klines" / "date=2026-01-02" / "b.parquet", 2**28)
    sparse_file(raw / "binance" / "klines" / "date=2026-01-02" / "b.parquet.partial", 2**32)  # not a batch
    settings = load_settings(lake_dir=tmp_path / "lake")
    assert transform.raw_lake_bytes(settings.lake_dir) == 2**29 + 2**28
    assert transform.dbt_memory_limit(settings) == "1280MB"  # 768 + 0.7 * 768 = 1305, in 64 MB steps
    # Another 10 MB of data keeps the step (and dbt's partial parsing, which a new limit restarts).
    sparse_file(raw / "binance" / "klines" / "date=2026-02-01" / "c.parquet", 10 * 2**20)
    assert transform.dbt_memory_limit(settings) == "1280MB"  # 1312
    sparse_file(raw / "binance" / "klines" / "date=2026-03-01" / "d.parquet", 50 * 2**20)
    assert transform.dbt_memory_limit(settings) == "1344MB"  # 1347
    assert transform.dbt_env(settings)["LAKEHOUSE_DBT_THREADS"] == "2"


def test_a_large_lake_builds_one_model_at_a_time_with_a_smaller_share(tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_DBT_THREADS", raising=False)
    raw = tmp_path / "lake" / "raw"
    sparse_file(raw / "synthetic" / "klines" / "a.parquet", 2**30 - 1)
    settings = load_settings(lake_dir=tmp_path / "lake")
    env = transform.dbt_env(settings)
    assert (env["LAKEHOUSE_DBT_THREADS"], env["LAKEHOUSE_DBT_MEMORY_LIMIT"]) == (
        "2",
        "1472MB",
    )  # 768 + 0.7 * 1024
    sparse_file(raw / "synthetic" / "klines" / "b.parquet", 2**29 + 1)
    env = transform.dbt_env(settings)
    assert (env["LAKEHOUSE_DBT_THREADS"], env["LAKEHOUSE_DBT_MEMORY_LIMIT"]) == (
        "1",
        "1344MB",
    )  # 768 + 0.4 * 1536
    monkeypatch.setenv("LAKEHOUSE_DBT_THREADS", "4")
    assert transform.dbt_env(settings)["LAKEHOUSE_DBT_THREADS"] == "4"


def test_a_batch_landed_again_counts_once_toward_the_memory_limit(tmp_path):
    lake = tmp_path / "lake"
    batch = Path("synthetic") / "klines" / "symbol=BTCUSDT" / "date=2026-01-01" / "a.parquet"
    sparse_file(lake / "raw" / batch, 2**29)
    sparse_file(lake / "landing" / batch, 2**29 + 2**20)  # landed again: gate 1 replaces the raw copy
    sparse_file(
        lake / "landing" / "synthetic" / "klines" / "symbol=BTCUSDT" / "date=2026-01-02" / "b.parquet", 2**28
    )
    sparse_file(lake / "quarantine" / batch, 2**32)  # not built from
    assert transform.raw_lake_bytes(lake) == 2**29 + 2**20 + 2**28
    assert transform.dbt_memory_limit(load_settings(lake_dir=lake)) == "1280MB"  # 768 + 0.7 * 769 = 1306


def test_a_lake_is_small_below_the_limit_counting_raw_and_landing(tmp_path):
    lake = tmp_path / "lake"
    assert transform.lake_smaller_than(lake, 1)  # nothing landed yet
    sparse_file(lake / "raw" / "synthetic" / "klines" / "a.parquet", 40 * 2**20)
    sparse_file(lake / "landing" / "synthetic" / "klines" / "b.parquet", 30 * 2**20)
    sparse_file(lake / "landing" / "synthetic" / "klines" / "notes.json", 500 * 2**20)
    assert transform.lake_smaller_than(lake, 70 * 2**20 + 1)
    assert not transform.lake_smaller_than(lake, 70 * 2**20)
    assert not transform.lake_smaller_than(lake, 10 * 2**20)


def test_memory_limit_never_exceeds_half_the_machine(tmp_path, monkeypatch):
    sparse_file(tmp_path / "lake" / "raw" / "x" / "y" / "a.parquet", 2**40)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 8 * 2**30 // 4096}  # an 8 GiB machine
    monkeypatch.setattr(os, "sysconf", pages.__getitem__)
    assert transform.dbt_memory_limit(load_settings(lake_dir=tmp_path / "lake")) == "4096MB"


def test_memory_limit_setting_wins(tmp_path, monkeypatch):
    sparse_file(tmp_path / "lake" / "raw" / "x" / "y" / "a.parquet", 2**33)
    monkeypatch.setenv("LAKEHOUSE_DBT_MEMORY_LIMIT", "3GB")
    settings = load_settings(lake_dir=tmp_path / "lake")
    assert transform.dbt_env(settings)["LAKEHOUSE_DBT_MEMORY_LIMIT"] == "3GB"


def test_a_malformed_memory_limit_is_one_clear_error(tmp_path):
    with pytest.raises(LakehouseError, match="dbt_memory_limit"):
        load_settings(lake_dir=tmp_path / "lake", dbt_memory_limit="lots")


def test_a_failure_without_run_results_is_summarised_by_its_last_error_line(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake")
    output = (
        "12:00  Running with dbt\n12:00  Encountered an error:\nRuntime Error\n  Catalog Error: no table x\n"
    )
    process = subprocess.CompletedProcess(["dbt"], 2, stdout=output, stderr="")
    assert transform.summarise_failures(settings, process) == "Catalog Error: no table x"
    quiet = subprocess.CompletedProcess(
        ["dbt"], 2, stdout="12:00  Running with dbt\n12:00  Killed\n", stderr=""
    )
    assert transform.summarise_failures(settings, quiet) == "12:00  Killed"


def write_run_results(settings, results: list[dict]) -> None:
    target, _ = transform.dbt_paths(settings)
    target.mkdir(parents=True)
    (target / "run_results.json").write_text(json.dumps({"results": results}))


def test_a_python_model_failure_is_summarised_by_its_exception(tmp_path):
    settings = load_settings(lake_dir=tmp_path / "lake")
    message = (
        "Runtime Error in model fct_pairs_cointegration (models/marts/pairs/fct_pairs_cointegration.py)\n"
        "  Python model failed:\n  Traceback (most recent call last):\n"
        '    File "/tmp/x.py", line 3, in model\n      return 1 / 0\n'
        "  ZeroDivisionError: division by zero\n"
    )
    write_run_results(
        settings,
        [{"unique_id": "model.lakehouse.fct_pairs_cointegration", "status": "error", "message": message}],
    )
    assert transform.read_failures(settings) == [
        "fct_pairs_cointegration: Python model failed: ZeroDivisionError: division by zero"
    ]


def test_a_model_out_of_memory_names_the_model_the_limit_and_the_setting(tmp_path, monkeypatch):
    settings = load_settings(lake_dir=tmp_path / "lake", dbt_memory_limit="1726MB")
    message = (
        "Runtime Error in model fct_transactions (models/marts/transactions/fct_transactions.sql)\n"
        "  Out of Memory Error: failed to allocate data of size 3.0 MiB (1.5 GiB/1.6 GiB used)\n"
        "  \n  Possible solutions:\n  * Reducing the number of threads (SET threads=X)\n"
    )
    results = [
        {"unique_id": "model.lakehouse.fct_klines_hourly", "status": "success", "message": "OK"},
        {"unique_id": "model.lakehouse.fct_transactions", "status": "error", "message": message},
    ]
    write_run_results(settings, results)
    monkeypatch.setattr(
        transform.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr="")
    )
    with pytest.raises(LakehouseError) as raised:
        transform.run_dbt(settings, "build")
    assert str(raised.value) == (
        "dbt build failed: fct_transactions: Out of Memory Error: failed to allocate data of size 3.0 MiB"
        " (1.5 GiB/1.6 GiB used); DuckDB ran out of its 1726MB for the build: set"
        f" LAKEHOUSE_DBT_MEMORY_LIMIT higher (e.g. 4GB) and run again (full log: {transform.dbt_paths(settings)[1] / 'dbt.log'})"
    )


def test_an_interrupted_build_stops_its_dbt_worker(settings, monkeypatch):
    """Ctrl-C (or a cancelled run) while the worker builds kills it at once, as subprocess.run did."""
    worker = transform.DbtWorker(settings)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "_finished", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker.run("build")
    assert worker.process.returncode == -signal.SIGKILL
    assert worker._status.closed and worker._output.closed


def test_a_source_glob_finds_exactly_the_files_glob_finds(tmp_path):
    root = tmp_path / "raw" / "synthetic" / "klines"
    files = [
        "top.parquet",  # zero folders deep: ** matches none
        "symbol=BTCUSDT/date=2026-01-01/part-0.parquet",
        "symbol=BTCUSDT/date=2026-01-01/part-1.parquet",
        "symbol=BTCUSDT/date=2026-01-01/.part-2.parquet.partial",  # the lake's partial write
        "symbol=BTCUSDT/date=2026-01-01/notes.txt",
        "symbol=BTCUSDT/.hidden/part-3.parquet",  # glob skips hidden folders
        "symbol=ETHUSDT/date=2026-01-02/.part-4.parquet",
        "symbol=ETHUSDT/date=2026-01-02/part-5.PARQUET",  # case-sensitive, as on POSIX
        "symbol=ETHUSDT/date=2026-01-02/part-6.parquet",
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (tmp_path / "elsewhere" / "date=2026-01-03").mkdir(parents=True)
    (tmp_path / "elsewhere" / "date=2026-01-03" / "part-7.parquet").write_bytes(b"x")
    (root / "symbol=SOLUSDT").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for name in ("*.parquet", "[!.]*.parquet"):
        pattern = f"{root}/**/{name}"
        found = sorted(transform.glob_files(pattern))
        assert found == sorted(glob.glob(pattern, recursive=True))
        assert [os.path.relpath(path, root) for path in found] == [
            "symbol=BTCUSDT/date=2026-01-01/part-0.parquet",
            "symbol=BTCUSDT/date=2026-01-01/part-1.parquet",
            "symbol=ETHUSDT/date=2026-01-02/part-6.parquet",
            "symbol=SOLUSDT/date=2026-01-03/part-7.parquet",
            "top.parquet",
        ]
    assert transform.glob_files(f"{tmp_path}/missing/**/*.parquet") == []
    # Any other shape of pattern is glob's own.
    assert transform.glob_files(f"{root}/symbol=*/date=*/part-0.parquet") == [
        f"{root}/symbol=BTCUSDT/date=2026-01-01/part-0.parquet"
    ]


def test_a_state_write_that_fails_leaves_no_fingerprint_beside_the_previous_manifest(tmp_path):
    """A fingerprint vouches for the manifest beside it; one left beside another build's
    manifest would let a build skip comparing models that did change."""
    state, manifest = tmp_path / "state", tmp_path / "manifest.json"
    manifest.write_text('{"build": 1}')
    transform.write_state(state, manifest, {"synthetic.klines": "1"}, "fingerprint of build 1")
    assert (state / "project_fingerprint").read_text() == "fingerprint of build 1\n"
    with pytest.raises(FileNotFoundError):
        transform.write_state(state, tmp_path / "gone.json", {"synthetic.klines": "2"}, "of build 2")
    assert not (state / "project_fingerprint").exists()
    assert (state / "manifest.json").read_text() == '{"build": 1}'


# What dbt printed (recorded) when the lake's disk filled during a build: dbt's own error and
# traceback, then flows.dbt_worker's line. The cause is on the line after "Encountered an error:".
FULL_DISK_OUTPUT = """\
21:40:01  Running with dbt=1.11.16
21:40:02  Found 62 models, 4 seeds, 310 data tests, 9 sources, 1 exposure, 1 unit test
21:40:02  Concurrency: 2 threads (target='local')
21:40:05  Encountered an error:
[Errno 28] No space left on device
21:40:05  Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.11/site-packages/dbt/cli/requires.py", line 187, in wrapper
    result, success = func(*args, **kwargs)
OSError: [Errno 28] No space left on device

Encountered an error:
[Errno 28] No space left on device
"""


@pytest.mark.parametrize(
    ("output", "summary"),
    [
        (
            FULL_DISK_OUTPUT,
            "[Errno 28] No space left on device; the disk holding the lake {lake} is full: free space there"
            " (or move the lake to a larger disk) and run again",
        ),
        (
            "21:40:05  Encountered an error:\n\n  Runtime Error\nEncountered an error:\n",
            "Runtime Error",
        ),
    ],
    ids=["full disk", "only the error's kind"],
)
def test_a_dbt_error_before_any_node_carries_its_cause_and_a_full_disk_says_to_free_space(
    tmp_path, monkeypatch, output, summary
):
    settings = load_settings(lake_dir=tmp_path / "lake", dbt_memory_limit="1GB")
    monkeypatch.setattr(
        transform.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 2, stdout=output, stderr=""),
    )
    with pytest.raises(LakehouseError) as raised:
        transform.run_dbt(settings, "build")
    log = transform.dbt_paths(settings)[1] / "dbt.log"
    assert (
        str(raised.value) == f"dbt build failed: {summary.format(lake=settings.lake_dir)} (full log: {log})"
    )
