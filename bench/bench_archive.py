"""Archive import throughput: build a synthetic Binance kline zip of N rows, time its import."""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

MINUTE = 60_000
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def build_archive(folder: Path, rows: int, *, symbol: str = "BTCUSDT", micro: bool = False) -> Path:
    """A spot 1m archive (data.binance.vision layout and CSV format) with a CHECKSUM beside it."""
    rng = np.random.default_rng(7)
    open_ms = START_MS + np.arange(rows, dtype="int64") * MINUTE
    close = 40_000 + np.cumsum(rng.normal(0, 10, rows))
    high, low = close + rng.uniform(0, 20, rows), close - rng.uniform(0, 20, rows)
    volume = rng.uniform(1, 50, rows)
    scale = 1000 if micro else 1
    lines = [
        f"{o * scale},{c:.2f},{h:.2f},{lo:.2f},{c:.2f},{v:.8f},{(o + MINUTE - 1) * scale},"
        f"{v * c:.8f},{int(v * 10)},{v / 2:.8f},{v * c / 2:.8f},0"
        for o, c, h, lo, v in zip(open_ms, close, high, low, volume, strict=True)
    ]
    name = f"{symbol}-1m-2024-01"
    path = folder / "data" / "spot" / "monthly" / "klines" / symbol / "1m" / f"{name}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", "\n".join(lines) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def bench(rows: int = 500_000, repeats: int = 3) -> dict:
    """Median seconds and rows/s of import_archive_file (checksum, unzip, parse, land).

    Also splits one run into its phases: verify + unzip + parse (this module's work) and
    land_frame (the lake writer), so a regression can be placed.
    """
    from flows.lake import land_frame
    from flows.schemas import KLINE_KEY
    from flows.settings import load_settings
    from flows.sources import binance_archive as archive

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = build_archive(folder, rows)
        settings = load_settings(lake_dir=folder / "lake")
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            _, facts = archive.import_archive_file(path, settings)
            seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        archive.verify_checksum(path)
        frame, _ = archive.normalise_klines(
            archive.read_kline_csv(archive.read_archive(path), path.name),
            "spot",
            "BTCUSDT",
            "1m",
            int(time.time() * 1000),
        )
        parsed = time.perf_counter()
        land_frame(
            frame,
            folder / "lake2",
            source="archive",
            dataset="klines",
            key_columns=KLINE_KEY,
            date_column="open_time",
            partition_columns=("symbol", "interval"),
        )
        landed = time.perf_counter()
        median = float(np.median(seconds))
        return {
            "benchmark": "archive_import",
            "rows": rows,
            "landed": facts["landed"],
            "median_seconds": round(median, 3),
            "rows_per_second": round(rows / median),
            "runs": [round(s, 3) for s in seconds],
            "parse_seconds": round(parsed - started, 3),
            "land_frame_seconds": round(landed - parsed, 3),
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = bench(args.rows, args.repeats)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
