"""The lake contract: atomic, idempotent batch writes, quarantine, snapshots and locks."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import lake
from flows.errors import LakehouseError
from flows.schemas import KLINE_KEY, cast_klines


def klines(symbol: str, start: str, minutes: int, price: float = 100.0) -> pd.DataFrame:
    open_time = pd.date_range(start, periods=minutes, freq="1min", tz="UTC")
    return cast_klines(
        pd.DataFrame(
            {
                "market": "spot",
                "symbol": symbol,
                "interval": "1m",
                "open_time": open_time,
                "close_time": open_time + pd.Timedelta(milliseconds=59_999),
                "open": price,
                "high": price + 1,
                "low": price - 1,
                "close": price,
                "volume": 2.0,
                "quote_volume": 2 * price,
                "num_trades": 3,
                "taker_buy_base_volume": 1.0,
                "taker_buy_quote_volume": price,
            }
        )
    )


def land(frame: pd.DataFrame, lake_dir: Path, zone: str = "raw") -> list[lake.BatchRef]:
    return lake.land_frame(
        frame,
        lake_dir,
        source="synthetic",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone=zone,
    )


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_landing_writes_one_file_per_partition_with_lineage(tmp_path):
    refs = land(klines("BTCUSDT", "2026-10-01 23:00", 120), tmp_path)

    files = parquet_files(tmp_path / "raw")
    assert [f.relative_to(tmp_path / "raw").parent.as_posix() for f in files] == [
        "synthetic/klines/symbol=BTCUSDT/interval=1m/date=2026-10-01",
        "synthetic/klines/symbol=BTCUSDT/interval=1m/date=2026-10-02",
    ]
    assert [r.rows for r in refs] == [60, 60]
    table = pq.read_table(files[0])
    assert table.schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
    assert set(table.column("source").to_pylist()) == {"synthetic"}
    assert set(table.column("batch_id").to_pylist()) == {files[0].stem}
    assert table.column("ingested_at").null_count == 0


def test_landing_same_range_twice_keeps_one_copy(tmp_path):
    first = land(klines("BTCUSDT", "2026-10-01", 30), tmp_path)
    second = land(klines("BTCUSDT", "2026-10-01", 30, price=101.0), tmp_path)

    files = parquet_files(tmp_path / "raw")
    assert len(files) == 1
    assert [r.batch_id for r in first] == [r.batch_id for r in second]
    assert pq.read_table(files[0]).column("open").to_pylist() == [101.0] * 30


def test_landing_a_different_range_adds_a_batch(tmp_path):
    land(klines("BTCUSDT", "2026-10-01 00:00", 30), tmp_path)
    land(klines("BTCUSDT", "2026-10-01 00:30", 30), tmp_path)

    files = parquet_files(tmp_path / "raw")
    assert len(files) == 2
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 60


def test_atomic_write_leaves_no_partial_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "raw" / "x.parquet"
    lake.write_parquet_atomic(pa.table({"a": [1]}), target)

    def broken_write(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lake.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        lake.write_parquet_atomic(pa.table({"a": [2]}), target)

    assert sorted(p.name for p in target.parent.iterdir()) == ["x.parquet"]
    assert pq.read_table(target).column("a").to_pylist() == [1]


def test_atomic_write_renames_into_place(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src).parent, Path(src).name.startswith(".tmp-"), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(lake.os, "replace", spy)
    target = tmp_path / "d" / "b.parquet"
    lake.write_parquet_atomic(pa.table({"a": [1]}), target)

    assert renames == [(target.parent, True, target)]


def test_iter_batches_reads_refs_back_from_paths(tmp_path):
    refs = land(klines("ETHUSDT", "2026-10-01", 5), tmp_path, zone="landing")

    found = list(lake.iter_batches(tmp_path, "landing"))
    assert found == refs
    assert found[0].partitions == (("symbol", "ETHUSDT"), ("interval", "1m"), ("date", "2026-10-01"))


def test_quarantine_writes_rows_and_reason_beside_them(tmp_path):
    (ref,) = land(klines("BTCUSDT", "2026-10-01", 3), tmp_path, zone="landing")
    rows = lake.read_batch(tmp_path, "landing", ref).head(1)

    path = lake.write_quarantine(tmp_path, ref, rows, {"failed": ["high >= low"]})

    assert path == ref.path(tmp_path, "quarantine")
    assert pq.read_table(path).num_rows == 1
    assert path.with_suffix(".json").read_text().count("high >= low") == 1


def test_watermark_is_latest_open_time_per_market_symbol_interval(tmp_path):
    land(klines("BTCUSDT", "2026-10-01 23:58", 3), tmp_path)
    land(klines("ETHUSDT", "2026-10-05", 3), tmp_path)

    mark = lake.kline_watermark(tmp_path, "synthetic", "spot", "BTCUSDT", "1m")
    assert mark == int(pd.Timestamp("2026-10-02 00:00", tz="UTC").timestamp() * 1000)
    assert lake.kline_watermark(tmp_path, "synthetic", "usdm", "BTCUSDT", "1m") is None
    assert lake.kline_watermark(tmp_path, "synthetic", "spot", "SOLUSDT", "1m") is None


def test_kline_partitions_come_newest_date_first_across_zones_without_partial_files(tmp_path):
    land(klines("BTCUSDT", "2026-10-01 23:58", 3), tmp_path)  # dates 10-01 and 10-02 in raw
    land(klines("BTCUSDT", "2026-10-02 05:00", 2), tmp_path, zone="landing")
    land(klines("ETHUSDT", "2026-10-07", 2), tmp_path)
    series = tmp_path / "raw" / "synthetic" / "klines" / "symbol=BTCUSDT" / "interval=1m"
    (series / "date=2026-10-09").mkdir()  # empty: skipped
    (series / "date=2026-10-02" / ".tmp-1234-part.parquet").write_bytes(b"partial")

    days = list(lake.kline_partitions_newest_first(tmp_path, "*", "BTCUSDT", "1m", ("raw", "landing")))

    assert [sorted({Path(f).parent.name for f in files}) for files in days] == [
        ["date=2026-10-02"],
        ["date=2026-10-01"],
    ]
    assert [len(files) for files in days] == [2, 1]  # raw and landing files of 10-02 together
    assert all(files == sorted(files) and not any("/.tmp-" in f for f in files) for files in days)
    raw_only = [[f for f in files if "/raw/" in f] for files in days]
    assert list(lake.kline_partitions_newest_first(tmp_path, "*", "BTCUSDT", "1m")) == raw_only
    assert list(lake.kline_partitions_newest_first(tmp_path, "binance", "BTCUSDT", "1m")) == []
    assert list(lake.kline_partitions_newest_first(tmp_path, "*", "BTCUSDT", "1h")) == []


def make_snapshot(lake_dir: Path, snapshot_id: str) -> None:
    folder = lake.snapshot_path(lake_dir, snapshot_id)
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"v": [snapshot_id]}), folder / "m.parquet")


def test_swap_current_points_at_snapshot_and_prune_keeps_current(tmp_path):
    for snapshot in ("s1", "s2", "s3"):
        make_snapshot(tmp_path, snapshot)
    lake.swap_current(tmp_path, "s1")

    removed = lake.prune_snapshots(tmp_path, keep=1)

    assert lake.current_snapshot(tmp_path) == "s1"
    assert removed == ["s2"]
    assert lake.list_snapshots(tmp_path) == ["s1", "s3"]


def test_swap_current_refuses_a_missing_snapshot(tmp_path):
    make_snapshot(tmp_path, "s1")
    lake.swap_current(tmp_path, "s1")

    with pytest.raises(LakehouseError, match="snapshot 'nope' does not exist"):
        lake.swap_current(tmp_path, "nope")
    assert lake.current_snapshot(tmp_path) == "s1"


def test_lake_lock_without_wait_refuses_a_second_holder(tmp_path):
    with (
        lake.lake_lock(tmp_path, "build"),
        pytest.raises(LakehouseError, match="another run holds the build lock"),
        lake.lake_lock(tmp_path, "build", wait=False),
    ):
        pass
    with lake.lake_lock(tmp_path, "build", wait=False):
        pass


def test_check_lake_dir_names_an_unusable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(LakehouseError, match=f"lake directory {blocker / 'lake'} is not usable"):
        lake.check_lake_dir(blocker / "lake")


def test_a_rollback_holds_the_snapshot_it_points_at_and_records_the_one_rolled_back_from(tmp_path):
    for snapshot in ("s1", "s2"):
        make_snapshot(tmp_path, snapshot)
    pq.write_table(
        pa.table({"v": [1]}).replace_schema_metadata({lake.FINGERPRINT_KEY: "v1:abc:1:7"}),
        lake.snapshot_path(tmp_path, "s2") / "fct_x.parquet",
    )
    lake.swap_current(tmp_path, "s2")

    hold = lake.roll_back(tmp_path, "s1")

    assert lake.current_snapshot(tmp_path) == "s1"
    assert lake.read_hold(tmp_path) == hold
    assert (hold["snapshot"], hold["rolled_back_from"]) == ("s1", "s2")
    assert hold["marts"] == {"fct_x": "v1:abc:1:7", "m": None}
    assert lake.release_hold(tmp_path) == hold
    assert lake.read_hold(tmp_path) is None and lake.release_hold(tmp_path) is None
    assert lake.current_snapshot(tmp_path) == "s1"


def test_pruning_spares_the_held_snapshot_and_the_current_one(tmp_path):
    for snapshot in ("s1", "s2", "s3", "s4", "s5"):
        make_snapshot(tmp_path, snapshot)
    lake.swap_current(tmp_path, "s3")
    lake.roll_back(tmp_path, "s1")  # CURRENT and held: s1
    lake.swap_current(tmp_path, "s2")  # e.g. a publish of new data before the hold was lifted

    removed = lake.prune_snapshots(tmp_path, keep=1)

    assert removed == ["s3", "s4"]
    assert lake.list_snapshots(tmp_path) == ["s1", "s2", "s5"]
    assert lake.current_snapshot(tmp_path) == "s2"
