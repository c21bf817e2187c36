"""The drop folder: files copied into lake/inbox are landed, then moved to done/ or failed/."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flows.errors import LakehouseError
from flows.lake import lake_lock, write_text_atomic
from flows.settings import Settings
from flows.sources import LandResult
from flows.sources.binance_archive import import_archive_file, market_from_parts
from flows.sources.uploads import land_upload, parse_upload_name

DONE, FAILED = "done", "failed"
# Names that are still being written, or belong to another file.
SKIPPED_SUFFIXES = (".checksum", ".reason.txt", ".part", ".tmp", ".crdownload", ".partial")


def inbox_files(inbox: Path) -> list[Path]:
    files = []
    for path in sorted(inbox.rglob("*")):
        rel = path.relative_to(inbox)
        if not path.is_file() or rel.parts[0] in (DONE, FAILED):
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.name.lower().endswith(SKIPPED_SUFFIXES):
            continue
        files.append(path)
    return files


def free_name(folder: Path, name: str) -> Path:
    """folder/name, or name with the time added when an earlier file took it."""
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = Path(name)
    return folder / f"{path.stem}.{stamp}{path.suffix}"


def move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, path.name)
    os.replace(path, target)
    checksum = path.with_name(path.name + ".CHECKSUM")
    if checksum.exists():
        os.replace(checksum, target.with_name(target.name + ".CHECKSUM"))
    return target


def land_one(path: Path, settings: Settings, market: str, now_ms: int | None) -> LandResult:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        refs, facts = import_archive_file(path, settings, market=market, now_ms=now_ms)
        return LandResult(refs={"klines": refs}, notes=facts)
    if suffix in (".csv", ".json"):
        symbol, interval = parse_upload_name(path.name)
        return land_upload(path, settings, symbol=symbol, interval=interval, market=market, now_ms=now_ms)
    raise LakehouseError(f"{path.name} is neither a kline archive (.zip) nor an upload (.csv or .json)")


def land_inbox(
    settings: Settings,
    *,
    now_ms: int | None = None,
    clock: Callable[[], float] = time.time,
) -> LandResult:
    """Land every settled file in the inbox; each ends in done/ or in failed/ with a reason.

    Naming (the market comes from a `spot/`, `usdm/` or `futures/um/` subfolder, else settings):
    - archive zips keep Binance's names, SYMBOL-INTERVAL-YYYY-MM[-DD].zip (a .CHECKSUM beside one
      is verified and moves with it); they land as source=archive;
    - uploads are SYMBOL-INTERVAL[-anything].csv or .json, e.g. BTCUSDT-1m-october.csv; they land
      as source=upload.

    notes["inbox"] = {"done": [names], "failed": ["name: reason"], "waiting": [names]}.
    """
    inbox = settings.inbox
    report: dict[str, list[str]] = {"done": [], "failed": [], "waiting": []}
    result = LandResult(refs={"klines": []}, notes={"inbox": report})
    if not inbox.is_dir():
        return result
    with lake_lock(settings.lake_dir, "inbox"):
        for path in inbox_files(inbox):
            if not path.exists():
                continue  # a CHECKSUM moved with its zip, or another run took it
            if clock() - path.stat().st_mtime < settings.inbox_settle_seconds:
                report["waiting"].append(path.name)
                continue
            rel = path.relative_to(inbox)
            try:
                market = market_from_parts(rel.parts[:-1], settings.market)
                landed = land_one(path, settings, market, now_ms)
            except Exception as exc:
                # One bad file never blocks the others: its reason travels with it.
                reason = (
                    str(exc)
                    if isinstance(exc, LakehouseError)
                    else (f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
                )
                target = move(path, inbox / FAILED)
                write_text_atomic(target.with_name(target.name + ".reason.txt"), reason + "\n")
                report["failed"].append(f"{path.name}: {reason.splitlines()[0]}")
                continue
            result.refs["klines"] += landed.refs.get("klines", [])
            move(path, inbox / DONE)
            report["done"].append(path.name)
    return result
