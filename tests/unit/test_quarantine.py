"""`lakehouse quarantine list|show|release`: inspect quarantined batches and re-admit them re-validated."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.quality import validate_raw
from tests.unit.test_quality import klines, land_klines


@pytest.fixture
def quarantined(settings, lake_dir):
    """One batch of 20 candles whose rows 5 and 12 have a negative volume."""
    frame = klines(20)
    frame.loc[[5, 12], "volume"] = -3.0
    [ref] = land_klines(lake_dir, frame)
    validate_raw(settings)
    return ref


def fix_volume(path, row: int) -> None:
    """What a user does to fix a quarantined row: correct the value in the quarantine file."""
    table = pq.read_table(path, partitioning=None)
    volume = table["volume"].to_pylist()
    volume[row] = 10.0
    pq.write_table(table.set_column(table.schema.get_field_index("volume"), "volume", pa.array(volume)), path)


def test_list_shows_each_quarantined_batch_with_its_failures(quarantined, lake_dir, capsys):
    assert main(["quarantine", "list", "--lake-dir", str(lake_dir)]) == 0
    out = capsys.readouterr().out
    assert quarantined.batch_id in out
    assert "symbol=BTCUSDT/interval=1m/date=2026-10-01" in out
    assert "2 rows" in out and "expect_column_values_to_be_between(column=volume, min_value=0.0)" in out


def test_show_prints_the_reason_and_the_rows_with_their_failed_expectations(quarantined, lake_dir, capsys):
    assert main(["quarantine", "show", quarantined.batch_id[:8], "--lake-dir", str(lake_dir)]) == 0
    out = capsys.readouterr().out
    assert '"rows_quarantined": 2' in out
    assert out.count("expect_column_values_to_be_between(column=volume, min_value=0.0)") >= 3
    assert "-3.0" in out


def test_release_revalidates_and_admits_only_fixed_rows(quarantined, settings, lake_dir, capsys):
    raw_path = quarantined.path(lake_dir, "raw")
    quarantine_path = quarantined.path(lake_dir, "quarantine")
    assert pq.read_metadata(raw_path).num_rows == 18
    fix_volume(quarantine_path, 0)

    assert main(["quarantine", "release", quarantined.batch_id, "--lake-dir", str(lake_dir)]) == 0
    assert "1 rows released to raw, 1 still quarantined" in capsys.readouterr().out
    raw = pq.read_table(raw_path, partitioning=None)
    assert raw.num_rows == 19 and pc.min(raw["volume"]).as_py() == 10.0
    assert raw.schema.equals(pq.read_schema(quarantine_path), check_metadata=False)
    reason = json.loads(quarantine_path.with_suffix(".json").read_text())
    assert (reason["rows_quarantined"], reason["released_rows"]) == (1, 1)

    # Released unchanged, the still-bad row stays where it is.
    assert main(["quarantine", "release", quarantined.batch_id, "--lake-dir", str(lake_dir)]) == 0
    assert "0 rows released to raw, 1 still quarantined" in capsys.readouterr().out
    assert pq.read_metadata(raw_path).num_rows == 19

    fix_volume(quarantine_path, 0)
    assert main(["quarantine", "release", quarantined.batch_id, "--lake-dir", str(lake_dir)]) == 0
    assert pq.read_metadata(raw_path).num_rows == 20
    assert not quarantine_path.exists() and not quarantine_path.with_suffix(".json").exists()
    assert main(["quarantine", "list", "--lake-dir", str(lake_dir)]) == 0
    assert "nothing in quarantine" in capsys.readouterr().out


def test_release_of_an_unknown_batch_is_one_clear_error(settings, lake_dir, capsys):
    assert main(["quarantine", "release", "deadbeef", "--lake-dir", str(lake_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no quarantined batch 'deadbeef'") and len(err.splitlines()) == 1


def test_an_unreadable_landed_file_is_quarantined_whole_and_the_gate_goes_on(settings, lake_dir, capsys):
    from flows.lake import BatchRef
    from flows.quality import UNREADABLE

    [good] = land_klines(lake_dir, klines(20))
    bad = BatchRef("binance", "klines", good.partitions, "0badf11e")  # sorts first
    bad.path(lake_dir, "landing").write_text("garbage")

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined, result.batches_quarantined) == (20, 0, 1)
    assert result.failed_expectations == [UNREADABLE]
    assert pq.read_metadata(good.path(lake_dir, "raw")).num_rows == 20
    kept = bad.path(lake_dir, "quarantine")
    assert kept.read_text() == "garbage" and not bad.path(lake_dir, "landing").exists()
    reason = json.loads(kept.with_suffix(".json").read_text())
    assert reason["whole_batch"] and reason["rows_quarantined"] is None
    [failure] = reason["failed_expectations"]
    assert failure["expectation"] == UNREADABLE
    assert failure["sample_values"][0].startswith("ArrowInvalid: ")

    assert main(["quarantine", "list", "--lake-dir", str(lake_dir)]) == 0
    assert "0badf11e" in capsys.readouterr().out
    for command in ("show", "release"):
        assert main(["quarantine", command, "0badf11e", "--lake-dir", str(lake_dir)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is not readable parquet (ArrowInvalid: " in err, err
    assert kept.read_text() == "garbage"
    assert json.loads(kept.with_suffix(".json").read_text())["quarantined_at"] == reason["quarantined_at"]


def test_gate_1_waits_for_another_gate_1_on_the_same_lake(settings, lake_dir):
    """Two at once (`validate` beside an upload or a run) both routed the same landed files."""
    import threading
    import time

    from flows.lake import lake_lock

    land_klines(lake_dir, klines(20))
    validate_raw(settings)  # GE imported and its context made: a gate of 20 rows takes well under 1 s
    [ref] = land_klines(lake_dir, klines(20, start=pd.Timestamp("2026-10-02", tz="UTC")))
    results: list = []
    with lake_lock(lake_dir, "gate1"):
        thread = threading.Thread(target=lambda: results.extend(validate_raw(settings)))
        thread.start()
        time.sleep(3)
        assert thread.is_alive() and ref.path(lake_dir, "landing").exists()
    thread.join(timeout=120)
    assert [r.accepted for r in results] == [20]
    assert not ref.path(lake_dir, "landing").exists() and ref.path(lake_dir, "raw").exists()


def test_a_released_row_never_repeats_a_key_its_batch_already_holds_in_raw(
    quarantined, settings, lake_dir, capsys
):
    from flows.quality import KEY_IN_RAW

    raw_path = quarantined.path(lake_dir, "raw")
    quarantine_path = quarantined.path(lake_dir, "quarantine")
    accepted = pq.read_table(raw_path, partitioning=None)
    # The user "fixes" row 0 (candle 5) into a copy of candle 6, which raw holds already.
    table = pq.read_table(quarantine_path, partitioning=None).to_pandas()
    table.loc[0, "open_time"] = table.loc[0, "open_time"] + pd.Timedelta(minutes=1)
    table.loc[0, "close_time"] = table.loc[0, "close_time"] + pd.Timedelta(minutes=1)
    table.loc[0, "volume"] = 10.0
    pq.write_table(pa.Table.from_pandas(table, schema=accepted.schema, preserve_index=False), quarantine_path)

    assert main(["quarantine", "release", quarantined.batch_id, "--lake-dir", str(lake_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 rows released to raw, 2 still quarantined" in out and KEY_IN_RAW in out
    assert pq.read_table(raw_path, partitioning=None).equals(accepted)
    reason = json.loads(quarantine_path.with_suffix(".json").read_text())
    assert reason["row_reasons"]["0"] == [KEY_IN_RAW]
