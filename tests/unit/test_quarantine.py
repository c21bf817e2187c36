"""`lakehouse quarantine list|show|release`: inspect quarantined batches and re-admit them re-validated."""

from __future__ import annotations

import json

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
