"""Binance public kline archives (data.binance.vision layout): verify, read, land, download."""

from __future__ import annotations

import hashlib
import io
import random
import re
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from flows.errors import LakehouseError
from flows.lake import BatchRef, land_frame
from flows.schemas import KLINE_KEY, cast_klines
from flows.settings import KLINE_INTERVALS, Settings
from flows.sources import LandResult
from flows.sources.binance_rest import RAW_FIELDS, Pacer

# Archive names spell the monthly candle "1mo" (the API says "1M").
ARCHIVE_INTERVAL = {interval: interval for interval in KLINE_INTERVALS} | {"1M": "1mo"}
API_INTERVAL = {name: interval for interval, name in ARCHIVE_INTERVAL.items()}
ARCHIVE_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,20})-(?P<interval>[0-9]+(?:s|m|h|d|w|mo|M))-"
    r"(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)
MARKET_PATH = {"spot": "spot", "usdm": "futures/um"}
# Any millisecond epoch before year 5138 is below this; microsecond epochs since 1973 are above.
MICROSECOND_THRESHOLD = 100_000_000_000_000
COLUMN_TYPES = {
    name: pa.int64() if name in ("open_time", "close_time", "num_trades") else pa.float64()
    for name in RAW_FIELDS
} | {"ignore": pa.string()}


@dataclass(frozen=True)
class ArchiveName:
    symbol: str
    interval: str  # API spelling: 1M, not 1mo
    period: str  # YYYY-MM (monthly) or YYYY-MM-DD (daily)


def parse_archive_name(name: str) -> ArchiveName:
    match = ARCHIVE_NAME.match(name)
    interval = API_INTERVAL.get(match["interval"]) if match else None
    if not match or interval is None:
        raise LakehouseError(
            f"{name} is not named like a Binance kline archive "
            "(SYMBOL-INTERVAL-YYYY-MM[-DD].zip, e.g. BTCUSDT-1m-2024-01.zip)"
        )
    return ArchiveName(match["symbol"], interval, match["period"])


def market_from_path(path: Path, default: str) -> str:
    """Archive paths say the market (data/spot/..., data/futures/um/...); else the default."""
    return market_from_parts(Path(path).resolve().parts, default)


def market_from_parts(parts: Iterable[str], default: str) -> str:
    parts = [p.lower() for p in parts]
    for a, b in zip(parts, parts[1:], strict=False):
        if a == "futures" and b == "um":
            return "usdm"
        if a == "futures" and b == "cm":
            raise LakehouseError(
                f"{'/'.join(parts)} is a coin-margined futures archive; only spot and USD-M are supported"
            )
    if "usdm" in parts:
        return "usdm"
    if "spot" in parts:
        return "spot"
    return default


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path) -> bool:
    """Compare with the sibling <name>.CHECKSUM (sha256sum format); False when there is none."""
    checksum = path.with_name(path.name + ".CHECKSUM")
    if not checksum.exists():
        return False
    expected = (checksum.read_text().split() or [""])[0].lower()
    actual = sha256_file(path)
    if actual != expected:
        raise LakehouseError(
            f"checksum mismatch for {path.name}: {checksum.name} says {expected[:12]}..., "
            f"the file hashes to {actual[:12]}...; download it again"
        )
    return True


def read_kline_csv(data: bytes, name: str) -> pa.Table:
    """The 12 Binance columns from CSV bytes, with or without a header row."""
    first_line = data[: data.find(b"\n") if b"\n" in data else len(data)]
    first_field = first_line.split(b",", 1)[0].strip().strip(b'"')
    has_header = bool(first_field) and not first_field.isdigit()
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(RAW_FIELDS), skip_rows=1 if has_header else 0),
            convert_options=pacsv.ConvertOptions(column_types=COLUMN_TYPES),
        )
    except pa.ArrowInvalid as exc:
        detail = str(exc).strip().splitlines()[0]
        raise LakehouseError(
            f"{name} has a malformed row ({detail}); the file is not a Binance kline CSV"
        ) from exc


def normalise_klines(
    table: pa.Table, market: str, symbol: str, interval: str, now_ms: int
) -> tuple[pd.DataFrame, dict]:
    """Raw kline schema from the 12 columns: µs -> ms per file, only closed candles kept."""
    frame = table.drop_columns(["ignore"]).to_pandas()
    facts = {"unit": "ms", "rows": len(frame), "open_skipped": 0}
    if len(frame) and int(frame["open_time"].max()) >= MICROSECOND_THRESHOLD:
        # Spot archives switched to microseconds on 2025-01-01; the raw schema is ms.
        facts["unit"] = "us"
        frame["open_time"] //= 1000
        frame["close_time"] //= 1000
    closed = frame["close_time"] < now_ms
    facts["open_skipped"] = int((~closed).sum())
    frame = frame[closed]
    frame = frame.assign(market=market, symbol=symbol, interval=interval)
    return cast_klines(frame), facts


def read_archive(path: Path) -> bytes:
    """The CSV inside a kline zip (or a plain CSV), refusing truncated or corrupt files."""
    if path.suffix == ".csv":
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise LakehouseError(
                    f"{path.name} holds {len(members)} CSV files; a kline archive holds exactly one"
                )
            return archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise LakehouseError(f"{path.name} is truncated or corrupt ({exc}); download it again") from exc


def import_archive_file(
    path: Path,
    settings: Settings,
    *,
    market: str | None = None,
    now_ms: int | None = None,
    source: str = "archive",
) -> tuple[list[BatchRef], dict]:
    """Verify, read and land one archive; nothing lands unless the whole file is sound."""
    path = Path(path)
    name = parse_archive_name(path.name)
    market = market or market_from_path(path, settings.market)
    verified = verify_checksum(path) if path.suffix == ".zip" else False
    frame, facts = normalise_klines(
        read_kline_csv(read_archive(path), path.name),
        market,
        name.symbol,
        name.interval,
        int(time.time() * 1000) if now_ms is None else now_ms,
    )
    refs = land_frame(
        frame,
        settings.lake_dir,
        source=source,
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="landing",
    )
    facts.update(market=market, checksum="verified" if verified else "absent", landed=len(frame))
    return refs, facts


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.zip") if not p.name.startswith(".")))
        elif path.exists():
            files.append(path)
        else:
            raise LakehouseError(f"{path} does not exist; give archive zips or folders of them")
    if not files:
        raise LakehouseError(f"no .zip archives found in {', '.join(map(str, paths))}")
    return files


def import_archives(
    paths: Iterable[Path],
    settings: Settings,
    *,
    market: str | None = None,
    now_ms: int | None = None,
) -> LandResult:
    """Land every archive given (files or folders); a refused file is named in notes["errors"]."""
    result = LandResult(refs={"klines": []})
    errors: list[str] = []
    rows = 0
    started = time.perf_counter()
    files = expand_paths(paths)
    for path in files:
        try:
            refs, facts = import_archive_file(path, settings, market=market, now_ms=now_ms)
        except LakehouseError as exc:
            errors.append(f"{path.name}: {exc}")
            continue
        result.refs["klines"] += refs
        rows += facts["landed"]
    seconds = time.perf_counter() - started
    result.notes["errors"] = errors
    result.notes["archives"] = {
        "files": len(files),
        "refused": len(errors),
        "rows": rows,
        "seconds": round(seconds, 3),
    }
    return result


# Downloading ---------------------------------------------------------------------------------


def archive_path(market: str, symbol: str, interval: str, period: str) -> str:
    """Relative URL/path of one kline archive, as data.binance.vision lays them out."""
    if market not in MARKET_PATH:
        raise LakehouseError(f"market {market!r} has no archive; use spot or usdm")
    cadence = "daily" if len(period) == 10 else "monthly"
    name = ARCHIVE_INTERVAL[interval]
    return f"data/{MARKET_PATH[market]}/{cadence}/klines/{symbol}/{name}/{symbol}-{name}-{period}.zip"


def plan_periods(start: date, end: date, today: date) -> list[str]:
    """Whole months of [start, end) as monthly files, the remaining days as daily files.

    Only finished periods are published: days before today, months before this month.
    """
    end = min(end, today)
    periods: list[str] = []
    day = start
    while day < end:
        month_end = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        if day.day == 1 and month_end <= end:
            periods.append(day.strftime("%Y-%m"))
            day = month_end
        else:
            periods.append(day.isoformat())
            day += timedelta(days=1)
    return periods


def days_of_month(period: str, today: date) -> list[str]:
    first = date.fromisoformat(period + "-01")
    following = (first + timedelta(days=32)).replace(day=1)
    return [(first + timedelta(days=i)).isoformat() for i in range((min(following, today) - first).days)]


@dataclass
class DownloadResult:
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Downloader:
    """GETs archives and their checksums with bounded retries; sleeping is injectable."""

    def __init__(
        self,
        settings: Settings,
        dest: Path,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base = settings.archive_base_url.rstrip("/")
        self.dest = Path(dest)
        self.timeout = settings.binance_timeout_seconds
        self.session = session or requests.Session()
        self.pacer = Pacer(
            weight_limit=1,
            max_retries=settings.binance_max_retries,
            backoff_seconds=settings.binance_backoff_seconds,
            backoff_max_seconds=settings.binance_backoff_max_seconds,
            sleep=sleep,
            rng=rng or random.Random(),
        )

    def get(self, rel: str, target: Path | None = None) -> bytes | None:
        """The body (or a file written atomically), None on 404; retries 429/5xx/timeouts."""
        url = f"{self.base}/{rel}"
        for attempt in range(self.pacer.max_retries + 1):
            last = attempt == self.pacer.max_retries
            try:
                with self.session.get(url, timeout=self.timeout, stream=True) as response:
                    status = response.status_code
                    if status == 404:
                        return None
                    if status == 429 or status >= 500:
                        if last:
                            raise LakehouseError(f"{url} kept answering HTTP {status}; rerun later")
                        retry_after = response.headers.get("Retry-After")
                        wait = float(retry_after) if retry_after else self.pacer.backoff(attempt)
                        self.pacer.wait(str(status), wait)
                        continue
                    if status != 200:
                        raise LakehouseError(f"{url} answered HTTP {status}")
                    if target is None:
                        return response.content
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
                    try:
                        with open(tmp, "wb") as handle:
                            for chunk in response.iter_content(1 << 20):
                                handle.write(chunk)
                        tmp.replace(target)
                    finally:
                        tmp.unlink(missing_ok=True)
                    return b""
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if last:
                    raise LakehouseError(
                        f"could not download {url} ({type(exc).__name__}); "
                        "check the network or LAKEHOUSE_ARCHIVE_BASE_URL"
                    ) from exc
                self.pacer.wait(type(exc).__name__, self.pacer.backoff(attempt))
        raise AssertionError("unreachable")

    def fetch(self, rel: str) -> Path | None:
        """One archive and its checksum into dest/<rel>; reuses a copy that still verifies."""
        target = self.dest / rel
        checksum = self.get(rel + ".CHECKSUM")
        if checksum is None:
            return None
        expected = (checksum.decode(errors="replace").split() or [""])[0].lower()
        if target.exists() and sha256_file(target) == expected:
            target.with_name(target.name + ".CHECKSUM").write_bytes(checksum)
            return target
        if self.get(rel, target) is None:
            return None
        actual = sha256_file(target)
        if actual != expected:
            target.unlink()
            raise LakehouseError(
                f"downloaded {target.name} does not match its CHECKSUM "
                f"({actual[:12]}... != {expected[:12]}...); rerun to download it again"
            )
        target.with_name(target.name + ".CHECKSUM").write_bytes(checksum)
        return target


def download_archives(
    settings: Settings,
    *,
    dest: Path | None = None,
    today: date | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadResult:
    """Download the archives covering settings.start..end for market/symbols/intervals.

    A month not yet published as a monthly file falls back to its daily files.
    """
    today = today or datetime.now(UTC).date()
    dest = Path(dest) if dest else settings.lake_dir / "downloads"
    loader = Downloader(settings, dest, session=session, sleep=sleep)
    result = DownloadResult()
    for symbol in settings.symbols:
        for interval in settings.intervals:
            if interval == "1s" and settings.market == "usdm":
                result.errors.append(f"{symbol} 1s: USD-M futures have no 1s klines")
                continue
            queue = plan_periods(settings.start, settings.end, today)
            while queue:
                period = queue.pop(0)
                rel = archive_path(settings.market, symbol, interval, period)
                try:
                    path = loader.fetch(rel)
                except LakehouseError as exc:
                    result.errors.append(f"{rel}: {exc}")
                    continue
                if path is not None:
                    result.files.append(path)
                elif len(period) == 7:
                    queue[0:0] = days_of_month(period, today)
                else:
                    result.missing.append(rel)
    return result
