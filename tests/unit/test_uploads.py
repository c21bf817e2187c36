"""Uploads (CSV/JSON) and the inbox drop folder: what lands, what is refused, where files go."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.errors import LakehouseError
from flows.settings import load_settings
from flows.sources.inbox import land_inbox
from flows.sources.uploads import land_upload, parse_upload_name

T0 = 1_759_276_800_000  # 2025-10-01 00:00 UTC
MINUTE = 60_000
NOW = T0 + 86_400_000


def landed(lake_dir: Path, source: str = "upload") -> pd.DataFrame:
    files = sorted((lake_dir / "landing" / source / "klines").rglob("*.parquet"))
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values(["market", "open_time"], ignore_index=True)


def test_minimal_csv_lands_with_close_time_derived_and_unknowns_left_unknown(settings, tmp_path):
    path = tmp_path / "candles.csv"
    path.write_text(
        "Timestamp,Open,High,Low,Close,Volume\n"
        "2025-10-01T00:00:00Z,100,110,90,105,2.5\n"
        "2025-10-01 00:01:00,105,106,104,104.5,1.0\n"
    )
    result = land_upload(path, settings, symbol="btcusdt", interval="1m", now_ms=NOW)
    frame = landed(settings.lake_dir)
    assert frame["open_time"].tolist() == [
        pd.Timestamp(T0, unit="ms", tz="UTC"),
        pd.Timestamp(T0 + MINUTE, unit="ms", tz="UTC"),
    ]
    assert frame["close_time"].iloc[0] == pd.Timestamp(T0 + MINUTE - 1, unit="ms", tz="UTC")
    assert frame[["open", "high", "low", "close", "volume"]].iloc[0].tolist() == [100, 110, 90, 105, 2.5]
    assert set(frame["symbol"]) == {"BTCUSDT"} and set(frame["source"]) == {"upload"}
    assert frame["quote_volume"].isna().all() and frame["num_trades"].tolist() == [0, 0]
    assert result.notes["upload"]["filled"] == [
        "close_time",
        "quote_volume",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
        "num_trades",
    ]


def test_binance_columns_are_used_when_present(settings, tmp_path):
    path = tmp_path / "full.csv"
    path.write_text(
        "open_time,open,high,low,close,volume,close_time,quote_volume,number_of_trades,"
        "taker_buy_base_asset_volume,taker_buy_quote_asset_volume\n"
        f"{T0},1,2,0.5,1.5,10,{T0 + MINUTE - 1},15,9,4,6\n"
    )
    result = land_upload(path, settings, symbol="ETHUSDT", interval="1m", market="usdm", now_ms=NOW)
    row = landed(settings.lake_dir).iloc[0]
    assert (row["market"], row["quote_volume"], row["num_trades"]) == ("usdm", 15.0, 9)
    assert (row["taker_buy_base_volume"], row["taker_buy_quote_volume"]) == (4.0, 6.0)
    assert result.notes["upload"]["filled"] == []


def test_json_records_with_epoch_seconds_and_binance_arrays_both_land(settings, tmp_path):
    records = tmp_path / "records.json"
    seconds = T0 // 1000
    records.write_text(
        json.dumps([{"time": seconds + 60 * i, "o": 1, "h": 2, "l": 1, "c": 2, "v": 3} for i in range(3)])
    )
    arrays = tmp_path / "arrays.json"
    arrays.write_text(
        json.dumps(
            {
                "data": [
                    [T0, "1.0", "2.0", "0.5", "1.5", "3.0", T0 + 3_599_999, "4.5", 7, "1.0", "1.5", "0"],
                ]
            }
        )
    )
    land_upload(records, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    land_upload(arrays, settings, symbol="BTCUSDT", interval="1h", now_ms=NOW)
    frame = landed(settings.lake_dir)
    assert frame.groupby("interval").size().to_dict() == {"1h": 1, "1m": 3}
    assert frame[frame["interval"] == "1m"]["open_time"].iloc[2] == pd.Timestamp(
        T0 + 2 * MINUTE, unit="ms", tz="UTC"
    )
    assert frame[frame["interval"] == "1h"]["num_trades"].iloc[0] == 7


def test_an_upload_with_missing_columns_is_refused_whole(settings, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("timestamp,open,close,volume\n2025-10-01T00:00:00Z,1,2,3\n")
    with pytest.raises(LakehouseError, match=r"short.csv lacks column\(s\) high, low"):
        land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    assert landed(settings.lake_dir).empty


def test_a_non_numeric_value_names_its_row(settings, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        f"timestamp,open,high,low,close,volume\n{T0},1,2,0.5,1.5,3\n{T0 + MINUTE},1,two,0.5,1.5,3\n"
    )
    with pytest.raises(LakehouseError, match="bad.csv row 2: high 'two' is not a number"):
        land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    assert landed(settings.lake_dir).empty


@pytest.mark.parametrize(
    ("cell", "said"), [("", "close_time is empty"), ("soon", "close_time 'soon' is not a time")]
)
def test_a_bad_time_cell_names_its_row_and_what_is_wrong(settings, tmp_path, cell, said):
    path = tmp_path / "times.csv"
    path.write_text(
        "timestamp,close_time,open,high,low,close,volume\n"
        f"2025-10-01T00:00:00Z,2025-10-01T00:00:59.999Z,1,2,0.5,1.5,3\n2025-10-01T00:01:00Z,{cell},1,2,0.5,1.5,3\n"
    )
    with pytest.raises(LakehouseError) as failure:
        land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    assert str(failure.value) == (
        f"times.csv row 2: {said} (use epoch ms or ISO 8601, e.g. 2026-10-01T00:00:00Z)"
    )
    assert landed(settings.lake_dir).empty


def test_the_candle_still_open_is_skipped(settings, tmp_path):
    path = tmp_path / "live.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{T0 + i * MINUTE},1,2,0.5,1.5,3\n" for i in range(3))
    )
    result = land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=T0 + 2 * MINUTE + 10)
    assert len(landed(settings.lake_dir)) == 2 and result.notes["upload"]["open_skipped"] == 1


def test_empty_price_cells_and_future_candles_land_and_gate_1_quarantines_only_those_rows(settings, tmp_path):
    """A missing value or a candle from the future is one bad row, not a bad file: its
    neighbours are accepted, and it waits in quarantine where `quarantine show` finds it."""
    from flows.quality import validate_raw

    path = tmp_path / "gaps.csv"
    future = (int(time.time() * 1000) // MINUTE + 180 * 1440) * MINUTE  # gate 1 reads the clock
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        f"{T0},1,2,0.5,1.5,3\n"
        f"{T0 + MINUTE},1,2,0.5,,3\n"
        f"{T0 + 2 * MINUTE},1,2,0.5,1.5,NaN\n"
        f"{T0 + 3 * MINUTE},1,2,0.5,1.5,3\n"
        f"{future},1,2,0.5,1.5,3\n"
    )
    result = land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    assert len(landed(settings.lake_dir)) == 5 and result.notes["upload"]["open_skipped"] == 0

    [gate] = validate_raw(settings)

    assert (gate.accepted, gate.quarantined) == (2, 3)
    labels = set()
    for reason in (settings.lake_dir / "quarantine").rglob("*.json"):
        labels |= reason_labels(reason)
    assert {
        "expect_column_values_to_not_be_null(column=close)",
        "expect_column_values_to_not_be_null(column=volume)",
    } <= labels
    assert any(
        label.startswith("expect_column_values_to_be_between(column=check__ms_closed_before_now")
        for label in labels
    )


def reason_labels(path: Path) -> set[str]:
    return {label for labels in json.loads(path.read_text())["row_reasons"].values() for label in labels}


def test_upload_names_carry_symbol_and_interval():
    assert parse_upload_name("BTCUSDT-1m-october.csv") == ("BTCUSDT", "1m")
    assert parse_upload_name("ethusdt-1h.json") == ("ETHUSDT", "1h")
    assert parse_upload_name("BTCUSDT-1mo-2024-01.csv") == ("BTCUSDT", "1M")
    with pytest.raises(LakehouseError, match="SYMBOL-INTERVAL"):
        parse_upload_name("my candles.csv")


def write_archive(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{T0 + i * MINUTE},1,2,0.5,1.5,3,{T0 + (i + 1) * MINUTE - 1},4.5,5,1,1.5,0" for i in range(rows)
    ]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(path.with_suffix(".csv").name, "\n".join(lines) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")


def test_inbox_lands_files_and_moves_them_to_done_or_failed_with_a_reason(lake_dir):
    settings = load_settings(lake_dir=lake_dir, inbox_settle_seconds=0)
    inbox = settings.inbox
    write_archive(inbox / "BTCUSDT-1m-2025-10-01.zip", 4)
    (inbox / "usdm").mkdir(parents=True)
    (inbox / "usdm" / "ETHUSDT-1m-mine.csv").write_text(
        f"timestamp,open,high,low,close,volume\n{T0},1,2,0.5,1.5,3\n"
    )
    (inbox / "notes.txt").write_text("hello")
    (inbox / "BTCUSDT-1m-short.csv").write_text("timestamp,open\n1,2\n")
    result = land_inbox(settings, now_ms=NOW)
    report = result.notes["inbox"]
    assert sorted(report["done"]) == ["BTCUSDT-1m-2025-10-01.zip", "ETHUSDT-1m-mine.csv"]
    assert sorted(line.split(":")[0] for line in report["failed"]) == ["BTCUSDT-1m-short.csv", "notes.txt"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "BTCUSDT-1m-2025-10-01.zip",
        "BTCUSDT-1m-2025-10-01.zip.CHECKSUM",
        "ETHUSDT-1m-mine.csv",
    ]
    reason = (inbox / "failed" / "BTCUSDT-1m-short.csv.reason.txt").read_text()
    assert "lacks column(s) high, low, close, volume" in reason
    assert "neither a kline archive" in (inbox / "failed" / "notes.txt.reason.txt").read_text()
    assert len(landed(lake_dir, "archive")) == 4
    upload = landed(lake_dir, "upload")
    assert upload[["market", "symbol"]].values.tolist() == [["usdm", "ETHUSDT"]]
    assert result.rows["klines"] == 5
    # Nothing is left to pick up: a second run lands nothing and moves nothing.
    again = land_inbox(settings, now_ms=NOW)
    assert again.refs["klines"] == [] and again.notes["inbox"]["done"] == []


def test_inbox_leaves_files_that_may_still_be_copying(lake_dir):
    settings = load_settings(lake_dir=lake_dir, inbox_settle_seconds=30)
    path = settings.inbox / "BTCUSDT-1m-fresh.csv"
    path.parent.mkdir(parents=True)
    path.write_text(f"timestamp,open,high,low,close,volume\n{T0},1,2,0.5,1.5,3\n")
    mtime = path.stat().st_mtime
    result = land_inbox(settings, now_ms=NOW, clock=lambda: mtime + 10)
    assert result.notes["inbox"]["waiting"] == ["BTCUSDT-1m-fresh.csv"] and path.exists()
    os.utime(path, (mtime - 60, mtime - 60))
    result = land_inbox(settings, now_ms=NOW, clock=lambda: mtime + 10)
    assert result.notes["inbox"]["done"] == ["BTCUSDT-1m-fresh.csv"]


def test_cli_upload_lands_and_a_bad_upload_is_one_line(lake_dir, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("timestamp,open,high,low,close,volume\n2025-10-01T00:00:00Z,1,2,0.5,1.5,3\n")
    assert main(["upload", str(good), "--symbol", "BTCUSDT", "--interval", "1m", "--no-validate"]) == 0
    assert len(landed(lake_dir)) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open\n2025-10-01T00:00:00Z,1\n")
    assert main(["upload", str(bad), "--symbol", "BTCUSDT", "--interval", "1m"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad.csv lacks column(s) high, low, close, volume")
    assert len(landed(lake_dir)) == 1


def test_cli_upload_hands_what_it_landed_to_the_raw_gate(lake_dir, tmp_path, monkeypatch):
    import flows.quality

    seen = []

    def validate_raw(settings):
        # The gate sees the upload's batch in landing, like any other source's.
        seen.extend(p.name for p in (settings.lake_dir / "landing" / "upload").rglob("*.parquet"))
        return []

    monkeypatch.setattr(flows.quality, "validate_raw", validate_raw)
    path = tmp_path / "gate.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2025-10-01T00:00:00Z,1,2,0.5,1.5,3\n")
    assert main(["upload", str(path), "--symbol", "BTCUSDT", "--interval", "1m"]) == 0
    assert len(seen) == 1


def test_cli_upload_of_the_documented_columns_passes_gate_1_and_an_all_bad_one_fails(
    lake_dir, tmp_path, capsys
):
    """The help's own columns (timestamp, open, high, low, close, volume) reach raw: the unknown
    taker and quote volumes are not compared. A file gate 1 takes none of fails in one line."""
    good = tmp_path / "good.csv"
    good.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-10-01T00:00:00Z,100,110,90,105,2.5\n"
        "2025-10-01T00:01:00Z,105,106,104,104.5,1.0\n"
        "2025-10-01T00:02:00Z,104.5,107,103,106,4.0\n"
    )
    assert main(["upload", str(good), "--symbol", "BTCUSDT", "--interval", "1m"]) == 0
    out = capsys.readouterr().out
    assert (
        "not in the file: close_time (derived from the interval); quote_volume, taker_buy_base_volume, "
        "taker_buy_quote_volume (left unknown); num_trades (0)"
    ) in out
    assert "│ upload.klines │ 1       │ 3        │ 0           │ True    │" in out
    files = sorted((lake_dir / "raw" / "upload" / "klines").rglob("*.parquet"))
    raw = pd.concat([pq.read_table(f, partitioning=None).to_pandas() for f in files])
    assert raw["close"].tolist() == [105, 104.5, 106]
    assert raw["taker_buy_base_volume"].isna().all() and raw["quote_volume"].isna().all()
    assert not (lake_dir / "quarantine").exists() or not list((lake_dir / "quarantine").rglob("*.parquet"))

    # Every candle's high below its low: nothing can be accepted.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2025-10-02T00:00:00Z,100,90,110,105,2.5\n"
        "2025-10-02T00:01:00Z,105,100,108,104.5,1.0\n"
    )
    assert main(["upload", str(bad), "--symbol", "BTCUSDT", "--interval", "1m"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: gate 1 quarantined all 2 rows of bad.csv (failed: ")
    assert "expect_column_pair_values_a_to_be_greater_than_b(column_A=high, column_B=low" in err
    assert err.endswith(
        "`lakehouse quarantine list` shows why, `lakehouse quarantine release` re-admits them after a fix\n"
    )
    assert err.count("\n") == 1
    assert sorted((lake_dir / "raw" / "upload" / "klines").rglob("*.parquet")) == files


def test_cli_ingest_from_the_inbox_names_what_failed_and_exits_nonzero(lake_dir, capsys):
    inbox = lake_dir / "inbox"
    inbox.mkdir(parents=True)
    assert main(["ingest", "--source", "upload"]) == 0
    assert f"the inbox {inbox} has no files: copy archive zips or SYMBOL-INTERVAL-*.csv/.json there" in (
        capsys.readouterr().out
    )

    (inbox / "BTCUSDT-1m-good.csv").write_text(
        "timestamp,open,high,low,close,volume\n2025-10-01T00:00:00Z,1,2,0.5,1.5,3\n"
    )
    (inbox / "BTCUSDT-1m-bad.csv").write_text("timestamp,open\n2025-10-01T00:00:00Z,1\n")
    for path in inbox.iterdir():
        os.utime(path, (path.stat().st_mtime - 60,) * 2)  # settled: not still being copied
    assert main(["ingest", "--source", "upload"]) == 1
    captured = capsys.readouterr()
    assert f"inbox {inbox}: 1 landed (moved to done/), 0 still being copied" in captured.out
    assert captured.err.splitlines() == [
        "failed: BTCUSDT-1m-bad.csv: BTCUSDT-1m-bad.csv lacks column(s) high, low, close, volume; an upload "
        "needs timestamp, open, high, low, close, volume (other Binance kline columns are used when present)",
        f"error: 1 inbox file(s) failed (above) and were moved to {inbox / 'failed'}, each with a .reason.txt; "
        "fix them and copy them back into the inbox",
    ]
    assert (inbox / "failed" / "BTCUSDT-1m-bad.csv.reason.txt").exists()
    assert len(landed(lake_dir)) == 1


HOUR = 3_600_000
DAY = 86_400_000


def utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def test_a_date_column_and_a_time_of_day_column_make_the_open_time(settings, tmp_path):
    """MetaTrader exports split each candle's open time into Date and Time: both say it together,
    and the Time alone ('00:00') must never put the candles on the day of the upload."""
    path = tmp_path / "mt.csv"
    path.write_text(
        "Date,Time,Open,High,Low,Close,Volume\n"
        "2025.10.01,00:00,100,102,98,101,1.5\n"
        "2025.10.01,01:00,101,103,99,102,1.5\n"
        "2025.10.02,23:00,102,104,100,103,1.5\n"
    )
    land_upload(path, settings, symbol="ETHUSDT", interval="1h", now_ms=NOW + DAY)
    assert landed(settings.lake_dir)["open_time"].tolist() == [utc(T0), utc(T0 + HOUR), utc(T0 + 47 * HOUR)]


def test_times_of_day_without_a_date_are_refused_in_one_line(lake_dir, tmp_path, capsys):
    path = tmp_path / "clock.csv"
    path.write_text("Time,Open,High,Low,Close,Volume\n00:00,100,102,98,101,1.5\n01:00,101,103,99,102,1.5\n")
    assert main(["upload", str(path), "--symbol", "BTCUSDT", "--interval", "1h", "--no-validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: clock.csv column Time has times of day but no dates (row 1: '00:00'); add a Date column "
        "beside it, or write full timestamps (ISO 8601, e.g. 2026-10-01T00:00:00Z)"
    ]
    assert landed(lake_dir).empty


@pytest.mark.parametrize(
    "dates",
    [
        ["01/10/2025", "02/10/2025", "13/10/2025"],  # day first: 13 can only be a day
        ["10/01/2025", "10/02/2025", "10/13/2025"],  # month first
        ["01.10.2025", "02.10.2025", "13.10.2025"],
        ["01-10-2025", "02-10-2025", "13-10-2025"],
    ],
)
def test_day_and_month_order_is_decided_once_for_the_whole_column(settings, tmp_path, dates):
    path = tmp_path / "days.csv"
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "".join(f"{d},1,2,0.5,1.5,3\n" for d in dates))
    land_upload(path, settings, symbol="BTCUSDT", interval="1d", now_ms=T0 + 30 * DAY)
    assert landed(settings.lake_dir)["open_time"].tolist() == [utc(T0), utc(T0 + DAY), utc(T0 + 12 * DAY)]


@pytest.mark.parametrize(
    ("dates", "said"),
    [
        (
            ["01/10/2025", "02/10/2025"],
            "days.csv column Date: dates such as '01/10/2025' are ambiguous (day/month or month/day) and no "
            "number above 12 tells which; write ISO dates (YYYY-MM-DD, e.g. 2026-10-01)",
        ),
        (
            ["13/10/2025", "10/14/2025"],
            "days.csv column Date: row 1 '13/10/2025' puts the day first and row 2 '10/14/2025' the month "
            "first; write every date one way, best as ISO dates (YYYY-MM-DD, e.g. 2026-10-01)",
        ),
        (
            ["13/10/2025", "2025-10-14"],
            "days.csv row 2: Date '2025-10-14' is not written like row 1 '13/10/2025'; write every date one "
            "way, best as ISO dates (YYYY-MM-DD, e.g. 2026-10-01)",
        ),
        (
            ["13/10/25", "14/10/25"],
            "days.csv row 1: Date '13/10/25' has a two-digit year; write ISO dates (YYYY-MM-DD, e.g. 2026-10-01)",
        ),
    ],
)
def test_dates_whose_day_and_month_order_the_column_does_not_settle_are_refused(
    settings, tmp_path, dates, said
):
    path = tmp_path / "days.csv"
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "".join(f"{d},1,2,0.5,1.5,3\n" for d in dates))
    with pytest.raises(LakehouseError) as failure:
        land_upload(path, settings, symbol="BTCUSDT", interval="1d", now_ms=T0 + 30 * DAY)
    assert str(failure.value) == said
    assert landed(settings.lake_dir).empty


def test_binance_kline_objects_give_t_as_the_open_time_and_lower_case_keys_win(settings, tmp_path):
    """Binance's kline objects tell keys apart by case: t is the open time and T the close time,
    v the volume and V the taker buy volume."""
    path = tmp_path / "ws.json"
    path.write_text(
        json.dumps(
            [
                {"t": T0 + i * MINUTE, "T": T0 + (i + 1) * MINUTE - 1, "o": 1, "h": 2, "l": 0.5, "c": 1.5}
                | {"v": 3, "V": 1}
                for i in range(2)
            ]
        )
    )
    land_upload(path, settings, symbol="BTCUSDT", interval="1m", now_ms=NOW)
    frame = landed(settings.lake_dir)
    assert frame["open_time"].tolist() == [utc(T0), utc(T0 + MINUTE)]
    assert frame["volume"].tolist() == [3.0, 3.0]
