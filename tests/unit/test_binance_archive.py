"""Binance public archives: checksums, headers, ms/µs timestamps, refusals, downloads."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.errors import LakehouseError
from flows.settings import load_settings
from flows.sources.binance_archive import (
    archive_path,
    download_archives,
    import_archive_file,
    import_archives,
    parse_archive_name,
    plan_periods,
)

MINUTE = 60_000
JAN_2024 = 1_704_067_200_000
JAN_2025 = 1_735_689_600_000
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def csv_lines(start_ms: int, count: int, *, scale: int = 1, interval_ms: int = MINUTE) -> list[str]:
    return [
        f"{(start_ms + i * interval_ms) * scale},{100 + i}.5,{110 + i}.0,{90 + i}.0,{101 + i}.25,"
        f"3.5,{(start_ms + (i + 1) * interval_ms - 1) * scale},350.0,{7 + i},1.5,150.0,0"
        for i in range(count)
    ]


def write_zip(path: Path, lines: list[str], *, checksum: bool = True, header: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(([HEADER] if header else []) + lines) + "\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.with_suffix(".csv").name, text)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def landed(lake_dir: Path) -> pd.DataFrame:
    files = sorted((lake_dir / "landing" / "archive" / "klines").rglob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def spot_path(root: Path, name: str) -> Path:
    symbol, interval = name.split("-")[:2]
    return root / "data" / "spot" / "daily" / "klines" / symbol / interval / name


def test_headerless_spot_archive_lands_exact_rows(settings, tmp_path):
    path = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    refs, facts = import_archive_file(path, settings, now_ms=JAN_2025)
    frame = landed(settings.lake_dir).sort_values("open_time")
    assert facts["checksum"] == "verified" and facts["unit"] == "ms" and len(refs) == 1
    assert frame["open_time"].tolist() == [
        pd.Timestamp(JAN_2024 + i * MINUTE, unit="ms", tz="UTC") for i in range(3)
    ]
    assert frame["close_time"].iloc[0] == pd.Timestamp(JAN_2024 + MINUTE - 1, unit="ms", tz="UTC")
    first = frame.iloc[0]
    assert (first["market"], first["symbol"], first["interval"], first["source"]) == (
        "spot",
        "BTCUSDT",
        "1m",
        "archive",
    )
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.5, 110.0, 90.0, 101.25)
    assert (first["volume"], first["quote_volume"], first["num_trades"]) == (3.5, 350.0, 7)
    assert (first["taker_buy_base_volume"], first["taker_buy_quote_volume"]) == (1.5, 150.0)


def test_futures_archive_with_a_header_row_is_usdm(settings, tmp_path):
    path = tmp_path / "data/futures/um/monthly/klines/ETHUSDT/1h/ETHUSDT-1h-2024-01.zip"
    write_zip(path, csv_lines(JAN_2024, 48, interval_ms=3_600_000), header=True)
    import_archive_file(path, settings, now_ms=JAN_2025)
    frame = landed(settings.lake_dir)
    assert len(frame) == 48
    assert set(frame["market"]) == {"usdm"} and set(frame["interval"]) == {"1h"}
    assert sorted({p.parent.name for p in (settings.lake_dir / "landing").rglob("*.parquet")}) == [
        "date=2024-01-01",
        "date=2024-01-02",
    ]


def test_microsecond_archive_is_normalised_to_milliseconds(settings, tmp_path):
    path = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2025-01-01.zip"), csv_lines(JAN_2025, 2, scale=1000))
    _, facts = import_archive_file(path, settings, now_ms=JAN_2025 + 86_400_000)
    frame = landed(settings.lake_dir).sort_values("open_time")
    assert facts["unit"] == "us"
    assert frame["open_time"].tolist() == [
        pd.Timestamp(JAN_2025, unit="ms", tz="UTC"),
        pd.Timestamp(JAN_2025 + MINUTE, unit="ms", tz="UTC"),
    ]
    assert frame["close_time"].iloc[0] == pd.Timestamp(JAN_2025 + MINUTE - 1, unit="ms", tz="UTC")


def test_a_checksum_mismatch_is_refused_and_nothing_lands(settings, tmp_path):
    path = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    path.with_name(path.name + ".CHECKSUM").write_text(f"{'0' * 64}  {path.name}\n")
    with pytest.raises(LakehouseError, match="checksum mismatch for BTCUSDT-1m-2024-01-01.zip"):
        import_archive_file(path, settings, now_ms=JAN_2025)
    assert landed(settings.lake_dir).empty


def test_a_truncated_zip_is_refused(settings, tmp_path):
    path = write_zip(
        spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 500), checksum=False
    )
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(LakehouseError, match="truncated or corrupt"):
        import_archive_file(path, settings, now_ms=JAN_2025)
    assert landed(settings.lake_dir).empty


def test_a_malformed_row_refuses_the_whole_file(settings, tmp_path):
    lines = csv_lines(JAN_2024, 3)
    lines[1] = lines[1].replace("3.5", "three", 1)
    path = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), lines)
    with pytest.raises(LakehouseError, match="BTCUSDT-1m-2024-01-01.zip has a malformed row"):
        import_archive_file(path, settings, now_ms=JAN_2025)
    assert landed(settings.lake_dir).empty


def test_a_folder_import_lands_the_sound_files_and_names_the_refused_one(settings, tmp_path):
    write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-02.zip"), csv_lines(JAN_2024 + 86_400_000, 2))
    bad = write_zip(spot_path(tmp_path, "ETHUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = import_archives([tmp_path / "data"], settings, now_ms=JAN_2025)
    assert result.rows["klines"] == 5
    assert len(result.notes["errors"]) == 1
    assert result.notes["errors"][0].startswith("ETHUSDT-1m-2024-01-01.zip: checksum mismatch")
    assert result.notes["archives"]["files"] == 3 and result.notes["archives"]["refused"] == 1


def test_importing_the_same_archive_twice_replaces_its_batch(settings, tmp_path):
    path = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    import_archive_file(path, settings, now_ms=JAN_2025)
    import_archive_file(path, settings, now_ms=JAN_2025)
    assert len(list((settings.lake_dir / "landing").rglob("*.parquet"))) == 1
    assert len(landed(settings.lake_dir)) == 3


def test_archive_names_and_urls_follow_data_binance_vision():
    assert parse_archive_name("BTCUSDT-1mo-2024-01.zip").interval == "1M"
    assert parse_archive_name("BTCUSDT-1s-2024-01-05.zip").period == "2024-01-05"
    with pytest.raises(LakehouseError, match="not named like a Binance kline archive"):
        parse_archive_name("btc.zip")
    assert archive_path("usdm", "BTCUSDT", "1M", "2024-01") == (
        "data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-01.zip"
    )
    assert archive_path("spot", "BTCUSDT", "1m", "2024-02-03") == (
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02-03.zip"
    )
    # Whole months as monthly files, the rest as days; nothing from today on.
    assert plan_periods(date(2024, 1, 30), date(2024, 3, 2), today=date(2024, 3, 2)) == [
        "2024-01-30",
        "2024-01-31",
        "2024-02",
        "2024-03-01",
    ]


class ArchiveServer:
    """data.binance.vision on 127.0.0.1: serves files from a folder, with scripted failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fail_once: set[str] = set()
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                if self.path in server.fail_once:
                    server.fail_once.discard(self.path)
                    self.send_response(500)
                    self.end_headers()
                    return
                file = server.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_archive_fetches_verifies_and_falls_back_to_daily_files(lake_dir, tmp_path):
    remote = tmp_path / "remote"
    write_zip(remote / archive_path("spot", "BTCUSDT", "1m", "2024-01"), csv_lines(JAN_2024, 5))
    # February's monthly file is not published yet: its daily files are.
    feb = 1_706_745_600_000
    write_zip(remote / archive_path("spot", "BTCUSDT", "1m", "2024-02-01"), csv_lines(feb, 4))
    write_zip(remote / archive_path("spot", "BTCUSDT", "1m", "2024-02-02"), csv_lines(feb + 86_400_000, 4))
    waits: list[float] = []
    with ArchiveServer(remote) as server:
        monthly = "/" + archive_path("spot", "BTCUSDT", "1m", "2024-01") + ".CHECKSUM"
        server.fail_once.add(monthly)
        settings = load_settings(
            lake_dir=lake_dir,
            archive_base_url=server.url,
            symbols="BTCUSDT",
            intervals="1m",
            start="2024-01-01",
            end="2024-03-01",
            binance_backoff_seconds=0.5,
        )
        result = download_archives(settings, today=date(2024, 3, 2), sleep=waits.append)
    assert [p.name for p in result.files] == [
        "BTCUSDT-1m-2024-01.zip",
        "BTCUSDT-1m-2024-02-01.zip",
        "BTCUSDT-1m-2024-02-02.zip",
    ]
    assert len(result.missing) == 27 and result.errors == []  # the other days of February
    assert result.missing[0].endswith("BTCUSDT-1m-2024-02-03.zip")
    assert len(waits) == 1 and 0.25 <= waits[0] <= 0.5  # one retry of the 500, with jitter
    assert all(p.with_name(p.name + ".CHECKSUM").exists() for p in result.files)
    landed_result = import_archives(result.files, settings, now_ms=JAN_2025)
    assert landed_result.rows["klines"] == 13 and landed_result.notes["errors"] == []


def test_cli_import_archive_lands_sound_files_and_exits_1_naming_a_refused_one(lake_dir, tmp_path, capsys):
    from flows.cli import main

    good = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-01.zip"), csv_lines(JAN_2024, 3))
    bad = write_zip(spot_path(tmp_path, "BTCUSDT-1m-2024-01-02.zip"), csv_lines(JAN_2024, 3))
    bad.write_bytes(bad.read_bytes()[:40])
    assert main(["import-archive", str(good), "--no-validate"]) == 0
    assert "1 of 1 archives, 3 rows" in capsys.readouterr().out
    assert main(["import-archive", str(tmp_path / "data"), "--no-validate"]) == 1
    captured = capsys.readouterr()
    assert "1 of 2 archives, 3 rows" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(
        "error: BTCUSDT-1m-2024-01-02.zip: checksum mismatch for BTCUSDT-1m-2024-01-02.zip"
    )
    assert err[1] == "error: 1 of 2 archives were refused (see the errors above)"
    assert len(landed(lake_dir)) == 3


def test_cli_download_archive_lands_what_it_downloaded(lake_dir, tmp_path, monkeypatch, capsys):
    from flows.cli import main

    remote = tmp_path / "remote"
    write_zip(
        remote / archive_path("usdm", "BTCUSDT", "1h", "2024-01"),
        csv_lines(JAN_2024, 24, interval_ms=3_600_000),
    )
    with ArchiveServer(remote) as server:
        monkeypatch.setenv("LAKEHOUSE_ARCHIVE_BASE_URL", server.url)
        args = ["download-archive", "--symbols", "BTCUSDT", "--interval", "1h", "--market", "usdm"]
        assert main([*args, "--start", "2024-01-01", "--end", "2024-02-01", "--no-validate"]) == 0
    assert "1 archives downloaded, 0 not published" in capsys.readouterr().out
    assert (lake_dir / "downloads" / archive_path("usdm", "BTCUSDT", "1h", "2024-01")).exists()
    frame = landed(lake_dir)
    assert len(frame) == 24 and set(frame["market"]) == {"usdm"}

    # A range with nothing finished yet: no request can succeed, so none is made.
    with ArchiveServer(remote) as server:
        monkeypatch.setenv("LAKEHOUSE_ARCHIVE_BASE_URL", server.url)
        assert main([*args, "--start", "2099-01-01", "--end", "2099-02-01"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no archive can exist for 2099-01-01..2099-02-01 yet: data.binance.vision")
    assert err.endswith("give an earlier --start/--end\n") and err.count("\n") == 1
