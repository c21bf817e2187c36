"""Binance REST klines and exchange info (spot and USD-M futures) via python-binance, paced."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import requests

from flows.errors import LakehouseError
from flows.lake import (
    BatchRef,
    compute_batch_id,
    kline_watermark,
    land_frame,
    write_quarantine,
    write_text_atomic,
)
from flows.schemas import INTERVAL_MS, KLINE_KEY, cast_klines
from flows.settings import Settings
from flows.sources import LandResult
from flows.sources.gaps import next_open_ms

MARKETS = ("spot", "usdm")
# Largest page each klines endpoint serves (spot 1000, USD-M 1500).
PAGE_LIMIT = {"spot": 1000, "usdm": 1500}
# Documented request weight per minute per IP.
WEIGHT_LIMIT_1M = {"spot": 6000, "usdm": 2400}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
EXCHANGE_INFO_WEIGHT = {"spot": 20, "usdm": 1}
MONTH_MS = 2_629_746_000  # average Gregorian month, only for estimates (progress, overlap)
RAW_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "num_trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)
NUMERIC_FIELDS = RAW_FIELDS[:11]
FLUSH_ROWS = 200_000
# A local clock a little ahead of Binance's must not make a candle look closed before it is.
CLOCK_SKEW_MS = 2_000


def klines_weight(market: str, limit: int) -> int:
    """Request weight of one klines call as Binance documents it."""
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def approx_interval_ms(interval: str) -> int:
    return INTERVAL_MS.get(interval, MONTH_MS)


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def one_line(text: object, limit: int = 200) -> str:
    """Error bodies can be HTML pages from a proxy: keep notes and messages to one short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def ms_to_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


# Faults --------------------------------------------------------------------------------------


class BinanceBanned(Exception):
    """HTTP 418 (IP banned) or a long 429 back-off: nothing more may be asked of the market until
    `until`. Retrying sooner is what makes Binance extend a ban (2 minutes up to 3 days)."""

    retryable = False

    def __init__(
        self, market: str, seconds: float, until: float, status: int = 418, where: Path | None = None
    ):
        self.market, self.seconds, self.until, self.status = market, seconds, until, status
        verb = "banned" if status == 418 else "rate-limited"
        recorded = f" (recorded in {where})" if where is not None else ""
        super().__init__(
            f"Binance {verb} this IP (HTTP {status}) for {seconds:.0f} s, until "
            f"{ms_to_text(int(until * 1000))} UTC{recorded}; {market} ingestion stopped and sends "
            f"no {market} request before then; a run after that time picks up where the lake ends"
        )


class BinanceRejected(Exception):
    """A 4xx other than 418/429: the request itself is wrong (bad symbol, bad interval)."""

    retryable = False


class BinanceUnavailable(Exception):
    """Retries exhausted on 429, 5xx, timeouts or connection resets: a later attempt may pass."""

    retryable = True


class BinanceOutage(LakehouseError):
    """Every series failed, at least one for a reason that passes (network, 5xx): worth retrying."""

    retryable = True


# Back-off record: a 418 ban or a 429 back-off outlives the process that received it, so task
# retries, flow retries and later runs (the 5-minute deployment) ask nothing before it ends.


def backoff_path(lake_dir: Path, market: str) -> Path:
    return Path(lake_dir) / "state" / "binance" / f"{market}-backoff.json"


def read_backoff(lake_dir: Path, market: str) -> dict | None:
    """The recorded back-off of a market ({"status", "until_epoch", ...}), or None."""
    try:
        record = json.loads(backoff_path(lake_dir, market).read_text())
        float(record["until_epoch"]), int(record["status"])
    except (OSError, ValueError, TypeError, KeyError):
        return None  # none recorded, or a file this code did not write: nothing to honour
    return record


def record_backoff(lake_dir: Path, market: str, status: int, seconds: float, until: float) -> Path | None:
    """Record that the market may not be asked before `until` (epoch s); a longer record stays,
    and so does a ban over a 429. An unwritable lake only loses the record, not the error."""
    path = backoff_path(lake_dir, market)
    previous = read_backoff(lake_dir, market)
    if (
        previous is not None
        and float(previous["until_epoch"]) >= until
        and (int(previous["status"]) == 418 or status == 429)
    ):
        return path
    record = {
        "market": market,
        "status": status,
        "retry_after_seconds": seconds,
        "until": f"{ms_to_text(int(until * 1000))} UTC",
        "until_epoch": until,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        return write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    except OSError:
        return None


def header_number(headers: Mapping[str, str] | None, name: str) -> float | None:
    if not headers:
        return None
    try:
        return float(headers.get(name))  # requests' headers ignore case
    except (TypeError, ValueError):
        return None


@dataclass
class Pacer:
    """Keeps a market under its weight limit and schedules retries; sleeping is injectable."""

    weight_limit: int
    headroom: float = 0.9
    max_retries: int = 5
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    used_weight: int = 0
    minute: int = -1
    waits: list[tuple[str, float]] = field(default_factory=list)

    def wait(self, reason: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.waits.append((reason, seconds))
        if seconds:
            self.sleep(seconds)

    def roll(self) -> None:
        """Binance counts weight per calendar minute: a new minute starts from zero."""
        minute = int(self.clock() // 60)
        if minute != self.minute:
            self.minute, self.used_weight = minute, 0

    def observe(self, headers: Mapping[str, str] | None, weight: int) -> None:
        """Take the server's count of used weight; without the header, count locally."""
        self.roll()
        used = header_number(headers, WEIGHT_HEADER)
        self.used_weight = int(used) if used is not None else self.used_weight + weight

    def before(self, weight: int) -> None:
        """Wait for the next minute window when this call would pass the headroom."""
        self.roll()
        if self.used_weight + weight > self.weight_limit * self.headroom:
            # One second past the minute absorbs clock skew between us and Binance.
            self.wait("weight", 60.0 - (self.clock() % 60.0) + 1.0)
            self.used_weight = 0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random, capped."""
        ceiling = min(self.backoff_max_seconds, self.backoff_seconds * 2**attempt)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


def unresolved_host(exc: BaseException) -> str | None:
    """The host a requests error could not resolve by DNS, if that is what it is."""
    from urllib3.exceptions import NameResolutionError

    seen: BaseException | None = exc
    for _ in range(8):  # requests' error -> urllib3's MaxRetryError -> NameResolutionError
        if seen is None:
            return None
        if isinstance(seen, NameResolutionError):
            return str(getattr(seen, "_host", None) or getattr(seen.conn, "host", None) or "the API host")
        nested = getattr(seen, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)), None)
        seen = nested or seen.__cause__ or seen.__context__
    return None


class BinanceRest:
    """python-binance's Client for one market, with Binance's documented limits obeyed."""

    def __init__(self, settings: Settings, market: str, pacer: Pacer) -> None:
        from binance.client import Client

        key = settings.binance_api_key.get_secret_value() if settings.binance_api_key else None
        secret = settings.binance_api_secret.get_secret_value() if settings.binance_api_secret else None
        self.market = market
        self.pacer = pacer
        self.client = Client(
            key,
            secret,
            requests_params={"timeout": settings.binance_timeout_seconds},
            ping=False,
        )
        # The only difference between production and tests is where these roots point.
        for name, url in (
            ("BINANCE_API_URL", settings.binance_api_url),
            ("BINANCE_FUTURES_API_URL", settings.binance_futures_api_url),
        ):
            if not url.startswith(("http://", "https://")):
                raise LakehouseError(
                    f"LAKEHOUSE_{name} {url!r} is not an http(s) URL, e.g. https://api.binance.com/api"
                )
        self.client.API_URL = settings.binance_api_url.rstrip("/")
        self.client.FUTURES_URL = settings.binance_futures_api_url.rstrip("/")
        self.lake_dir = settings.lake_dir
        self.requests = 0
        # The end of the last back-off this client waited out itself (a record up to it is done).
        self.waited_until = 0.0

    def respect_backoff(self) -> None:
        """Before any request: wait out a short recorded 429 back-off, stop at a ban or a long one."""
        record = read_backoff(self.lake_dir, self.market)
        if record is None:
            return
        until, status = float(record["until_epoch"]), int(record["status"])
        remaining = until - self.pacer.clock()
        if remaining <= 0 or until <= self.waited_until:
            return
        if status == 429 and remaining <= self.pacer.backoff_max_seconds:
            self.pacer.wait("429", remaining)
            self.waited_until = until
            return
        where = backoff_path(self.lake_dir, self.market)
        raise BinanceBanned(self.market, remaining, until, status, where)

    def call(self, what: str, weight: int, fn: Callable[..., object], **params: object) -> object:
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        pacer = self.pacer
        attempt = 0
        while True:
            self.respect_backoff()
            pacer.before(weight)
            self.requests += 1
            self.client.response = None
            try:
                result = fn(**params)
            except BinanceAPIException as exc:
                self.refused(what, weight, attempt, exc, exc.status_code, exc.code, exc.message)
                attempt += 1
                continue
            except AttributeError as exc:
                # python-binance reads an error body as a JSON object; a JSON string (a proxy's
                # "Too many requests") breaks its exception. The HTTP status still says what it was.
                response = self.client.response
                if response is None or 200 <= response.status_code < 300:
                    raise
                self.refused(what, weight, attempt, exc, response.status_code, None, response.text)
                attempt += 1
                continue
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                BinanceRequestException,
            ) as exc:
                host = unresolved_host(exc)
                if host is not None:
                    # No DNS answer for the host: no network here, or a mistyped URL. Retrying
                    # with backoff only made a run without network take minutes to say so.
                    unresolved = BinanceUnavailable(
                        f"cannot resolve {host} for {what} (no network, or a wrong host in "
                        "LAKEHOUSE_BINANCE_API_URL / LAKEHOUSE_BINANCE_FUTURES_API_URL); "
                        "check them and rerun"
                    )
                    unresolved.retryable = False
                    raise unresolved from exc
                if attempt >= pacer.max_retries:
                    reason = type(exc).__name__
                    raise BinanceUnavailable(
                        f"no usable answer from Binance for {what} after {attempt + 1} attempts "
                        f"({reason}); check the network or the API URL setting and rerun"
                    ) from exc
                pacer.wait(type(exc).__name__, pacer.backoff(attempt))
                attempt += 1
                continue
            response = getattr(self.client, "response", None)
            pacer.observe(getattr(response, "headers", None), weight)
            return result

    def refused(
        self,
        what: str,
        weight: int,
        attempt: int,
        exc: Exception,
        status: object,
        code: object,
        message: object,
    ) -> None:
        """A non-2xx answer: wait before the next attempt (429, 5xx), or raise what it means."""
        pacer = self.pacer
        response = getattr(exc, "response", None)
        headers = getattr(self.client.response if response is None else response, "headers", None)
        pacer.observe(headers, weight)
        status = int(status)
        exhausted = BinanceUnavailable(
            f"Binance kept answering HTTP {status} to {what} after {attempt + 1} attempts; rerun later"
        )
        if status in (418, 429):
            retry_after = header_number(headers, "Retry-After")
            if retry_after is None:
                # Binance always sends Retry-After; without it, a ban's shortest or the next minute.
                retry_after = 120.0 if status == 418 else 60.0 - (pacer.clock() % 60.0) + 1.0
            until = pacer.clock() + retry_after
            where = record_backoff(self.lake_dir, self.market, status, retry_after, until)
            if status == 418 or retry_after > pacer.backoff_max_seconds:
                raise BinanceBanned(self.market, retry_after, until, status, where) from exc
            if attempt >= pacer.max_retries:
                raise exhausted from exc
            pacer.wait("429", retry_after)
            self.waited_until = until
            return
        if status >= 500:
            if attempt >= pacer.max_retries:
                raise exhausted from exc
            pacer.wait(f"{status}", pacer.backoff(attempt))
            return
        if code is None:
            detail = f"HTTP {status}: {one_line(message)}"
        else:
            detail = f"{one_line(message)} (code {code}, HTTP {status})"
        raise BinanceRejected(f"Binance rejected {what}: {detail}") from exc

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> object:
        limit = PAGE_LIMIT[self.market]
        fn = self.client.get_klines if self.market == "spot" else self.client.futures_klines
        return self.call(
            f"{self.market} klines {symbol} {interval} from {ms_to_text(start_ms)}",
            klines_weight(self.market, limit),
            fn,
            symbol=symbol,
            interval=interval,
            startTime=start_ms,
            endTime=end_ms,
            limit=limit,
        )

    def exchange_info(self) -> object:
        fn = self.client.get_exchange_info if self.market == "spot" else self.client.futures_exchange_info
        return self.call(f"{self.market} exchange info", EXCHANGE_INFO_WEIGHT[self.market], fn)


# Parsing -------------------------------------------------------------------------------------


def parse_rows(
    rows: object, market: str, symbol: str, interval: str
) -> tuple[pd.DataFrame, list[tuple[object, str]]]:
    """Binance 12-field rows -> raw kline frame, plus the rows that are not klines and why."""
    if not isinstance(rows, list):
        raise BinanceRejected(f"Binance answered {type(rows).__name__} where a list of klines was due")
    bad: list[tuple[object, str]] = []
    good: list[list] = []
    for row in rows:
        if not isinstance(row, list | tuple) or len(row) != len(RAW_FIELDS):
            size = len(row) if isinstance(row, list | tuple) else type(row).__name__
            bad.append((row, f"expected {len(RAW_FIELDS)} fields, got {size}"))
        else:
            good.append(list(row))
    frame = pd.DataFrame(good, columns=list(RAW_FIELDS)) if good else empty_raw()
    numeric = pd.DataFrame(
        {name: pd.to_numeric(frame[name], errors="coerce") for name in NUMERIC_FIELDS},
        index=frame.index,
    )
    invalid = numeric.isna().any(axis=1)
    if invalid.any():
        for index in frame.index[invalid]:
            fields = [n for n in NUMERIC_FIELDS if pd.isna(numeric.at[index, n])]
            bad.append((good[index], f"not a number in {', '.join(fields)}"))
        numeric = numeric[~invalid]
    numeric = numeric.assign(market=market, symbol=symbol, interval=interval)
    return numeric, bad


def empty_raw() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in RAW_FIELDS})


def to_klines(numeric: pd.DataFrame) -> pd.DataFrame:
    frame = numeric.copy()
    frame["open_time"] = frame["open_time"].astype("int64")
    frame["close_time"] = frame["close_time"].astype("int64")
    frame["num_trades"] = frame["num_trades"].astype("int64")
    return cast_klines(frame)


# Fetching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KlineRange:
    """Candles whose open_time is in [start_ms, end_ms) for one market/symbol/interval."""

    market: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int

    def label(self) -> str:
        return f"{self.symbol} {self.interval} ({self.market})"

    def expected(self) -> int:
        return max(0, -(-(self.end_ms - self.start_ms) // approx_interval_ms(self.interval)))


@dataclass
class RangeOutcome:
    rows: int = 0
    pages: int = 0
    open_skipped: int = 0
    repeats: int = 0
    bad: list[tuple[object, str]] = field(default_factory=list)


def fetch_pages(
    api: BinanceRest, rng: KlineRange, now_ms: int, outcome: RangeOutcome
) -> Iterator[pd.DataFrame]:
    """Page by startTime from the last open_time received; yields closed candles, oldest first.

    An empty page ends the range, so does reaching the still-open candle; a candle repeated at a
    page boundary is taken once.
    """
    cursor = rng.start_ms
    while cursor < rng.end_ms:
        page = api.klines(rng.symbol, rng.interval, cursor, rng.end_ms - 1)
        outcome.pages += 1
        numeric, bad = parse_rows(page, rng.market, rng.symbol, rng.interval)
        outcome.bad.extend(bad)
        if numeric.empty:
            if bad:
                raise BinanceRejected(
                    f"Binance sent a page of {len(bad)} malformed klines for {rng.label()} "
                    f"from {ms_to_text(cursor)} ({bad[0][1]})"
                )
            return
        last_open = int(numeric["open_time"].max())
        fresh = numeric[(numeric["open_time"] >= cursor) & (numeric["open_time"] < rng.end_ms)]
        outcome.repeats += len(numeric) - len(fresh)
        closed = fresh[fresh["close_time"] < now_ms - CLOCK_SKEW_MS]
        outcome.open_skipped += len(fresh) - len(closed)
        if not closed.empty:
            outcome.rows += len(closed)
            yield to_klines(closed)
        if last_open < cursor or len(closed) < len(fresh):
            # No progress, or the still-open candle was reached: nothing closed follows.
            return
        if next_open_ms(rng.interval, last_open) >= rng.end_ms:
            return  # the range's last candle arrived: asking again would only get an empty page
        cursor = last_open + 1


def quarantine_bad_rows(lake_dir, rng: KlineRange, bad: list[tuple[object, str]], now: datetime) -> str:
    frame = pd.DataFrame(
        {
            "market": rng.market,
            "symbol": rng.symbol,
            "interval": rng.interval,
            "raw": [json.dumps(row, default=str) for row, _ in bad],
            "reason": [reason for _, reason in bad],
            "received_at": pd.Timestamp(now).floor("ms"),
        }
    )
    partitions = (
        ("symbol", rng.symbol),
        ("interval", rng.interval),
        ("date", now.strftime("%Y-%m-%d")),
    )
    batch_id = compute_batch_id("binance", "klines", partitions, frame["raw"].iloc[0], frame["raw"].iloc[-1])
    ref = BatchRef("binance", "klines", partitions, batch_id, rows=len(frame))
    # Same keys as gate 1's reasons, so `lakehouse quarantine list|show` read these too.
    reason = {
        "batch_id": batch_id,
        "source": "binance",
        "dataset": "klines",
        "partition": dict(partitions),
        "rows_in_batch": len(frame),
        "rows_accepted": 0,
        "rows_quarantined": len(frame),
        "whole_batch": True,
        "failed_expectations": [
            {
                "expectation": "binance_api_row_is_a_kline (12 fields, numeric values)",
                "rows": len(frame),
                "sample_values": frame["raw"].head(5).tolist(),
            }
        ],
        "row_reasons": {str(i): [why] for i, why in enumerate(frame["reason"])},
        "requested_range": [ms_to_text(rng.start_ms), ms_to_text(rng.end_ms)],
        "quarantined_at": now.isoformat(),
    }
    return str(write_quarantine(lake_dir, ref, frame, reason))


class Lander:
    """Lands fetched candles in whole days, so one range gives one batch file per day."""

    def __init__(self, lake_dir, ingested_at: datetime) -> None:
        self.lake_dir = lake_dir
        self.ingested_at = ingested_at
        self.pending: list[pd.DataFrame] = []
        self.pending_rows = 0
        self.refs: list[BatchRef] = []

    def add(self, frame: pd.DataFrame) -> None:
        self.pending.append(frame)
        self.pending_rows += len(frame)
        if self.pending_rows >= FLUSH_ROWS:
            self.flush(complete=False)

    def flush(self, complete: bool = True) -> None:
        if not self.pending:
            return
        frame = pd.concat(self.pending, ignore_index=True)
        keep = frame.iloc[0:0]
        if not complete:
            # The newest day may continue on the next page: hold it back so its batch is whole.
            last_day = frame["open_time"].max().floor("D")
            keep = frame[frame["open_time"] >= last_day]
            frame = frame[frame["open_time"] < last_day]
        self.refs.extend(
            land_frame(
                frame,
                self.lake_dir,
                source="binance",
                dataset="klines",
                key_columns=KLINE_KEY,
                date_column="open_time",
                partition_columns=("symbol", "interval"),
                zone="landing",
                ingested_at=self.ingested_at,
            )
        )
        self.pending = [keep] if len(keep) else []
        self.pending_rows = len(keep)


# Exchange info -------------------------------------------------------------------------------


def exchange_info_frame(info: object, market: str, symbols: Iterable[str], at: datetime) -> pd.DataFrame:
    """One row per symbol of the snapshot: status, assets and filters (as JSON)."""
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise BinanceRejected(f"Binance {market} exchange info has no symbols list")
    wanted = set(symbols)
    rows = []
    for item in info["symbols"]:
        if not isinstance(item, dict) or item.get("symbol") not in wanted:
            continue
        rows.append(
            {
                "market": market,
                "symbol": str(item["symbol"]),
                "status": str(item.get("status", "")),
                "base_asset": str(item.get("baseAsset", "")),
                "quote_asset": str(item.get("quoteAsset", "")),
                "contract_type": str(item.get("contractType", "")) if market == "usdm" else "",
                "onboard_date": pd.to_datetime(item.get("onboardDate"), unit="ms", utc=True)
                if item.get("onboardDate")
                else pd.NaT,
                "filters": json.dumps(item.get("filters", []), sort_keys=True),
                "snapshot_at": pd.Timestamp(at).floor("ms"),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["onboard_date"] = pd.to_datetime(frame["onboard_date"], utc=True).astype("datetime64[ms, UTC]")
    return frame


def land_exchange_info(api: BinanceRest, lake_dir, symbols: Iterable[str], at: datetime) -> list[BatchRef]:
    frame = exchange_info_frame(api.exchange_info(), api.market, symbols, at)
    return land_frame(
        frame,
        lake_dir,
        source="binance",
        dataset="exchange_info",
        # The snapshot time is part of the key: every run keeps its own snapshot file.
        key_columns=("snapshot_at", "market", "symbol"),
        date_column="snapshot_at",
        zone="landing",
        ingested_at=at,
    )


# Progress ------------------------------------------------------------------------------------


class Progress:
    """A rich bar over all ranges (candles, pages, candles/s, ETA); silent when not a TTY."""

    def __init__(self, ranges: list[KlineRange]) -> None:
        from rich.console import Console

        self.console = Console()
        self.enabled = self.console.is_terminal and len(ranges) > 0
        self.total = sum(r.expected() for r in ranges)
        self.count = len(ranges)
        self.bar = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                ProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class CandleRate(ProgressColumn):
                def render(self, task) -> Text:
                    return Text(f"{task.speed or 0:,.0f} candles/s")

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[pages]} pages"),
                CandleRate(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("klines", total=self.total, pages=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, index: int, rng: KlineRange) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"{rng.label()} [{index}/{self.count}]")

    def advance(self, candles: int, pages: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=candles, pages=pages)

    def finish_range(self, rng: KlineRange, landed: int) -> None:
        # Ranges end early (listing date, gaps): move the bar past the rest of the estimate.
        if self.bar is not None:
            self.bar.update(self.task, advance=max(0, rng.expected() - landed))


# Planning ------------------------------------------------------------------------------------


def now_ms_default() -> int:
    return int(time.time() * 1000)


def run_end_ms(settings: Settings, now_ms: int) -> int:
    """Incremental runs go up to now, unless the user set an end explicitly."""
    if "end" in settings.model_fields_set:
        return min(now_ms, day_start_ms(settings.end))
    return now_ms


def plan_incremental(settings: Settings, now_ms: int) -> list[KlineRange]:
    """From each series' watermark (raw or landing, any source) minus the overlap, else start."""
    end_ms = run_end_ms(settings, now_ms)
    ranges = []
    for symbol in settings.symbols:
        for interval in settings.intervals:
            mark = kline_watermark(
                settings.lake_dir, "*", settings.market, symbol, interval, zones=("raw", "landing")
            )
            if mark is None:
                start_ms = day_start_ms(settings.start)
            else:
                start_ms = mark - settings.binance_overlap_candles * approx_interval_ms(interval)
            if start_ms < end_ms:
                ranges.append(KlineRange(settings.market, symbol, interval, start_ms, end_ms))
    return ranges


def plan_range(settings: Settings, now_ms: int) -> list[KlineRange]:
    """The explicit [start, end) days of the settings, clipped to now (for `backfill`)."""
    start_ms = day_start_ms(settings.start)
    end_ms = min(day_start_ms(settings.end), now_ms)
    if start_ms >= end_ms:
        raise LakehouseError(
            f"nothing to backfill: {settings.start} is not before now and the end {settings.end}"
        )
    return [
        KlineRange(settings.market, symbol, interval, start_ms, end_ms)
        for symbol in settings.symbols
        for interval in settings.intervals
    ]


# Landing -------------------------------------------------------------------------------------


def land_kline_ranges(
    settings: Settings,
    ranges: list[KlineRange],
    *,
    now_ms: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    exchange_info: bool = True,
) -> LandResult:
    """Fetch and land every range; one failing symbol never stops the others.

    Per-range errors become one-line strings in notes["errors"]; a 418 stops the rest of that
    market; when every range failed, LakehouseError. Candles fetched before a failure are landed
    (they are correct and closed), so the next incremental run resumes after them.
    """
    now_ms = now_ms_default() if now_ms is None else now_ms
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    rng = rng or random.Random()
    result = LandResult(refs={"klines": [], "exchange_info": []})
    errors: list[str] = []
    warnings: list[str] = []
    apis: dict[str, BinanceRest] = {}
    banned: dict[str, str] = {}
    passing = 0  # failures that another attempt may not meet (network, 5xx)
    totals = {"ranges": len(ranges), "pages": 0, "candles": 0, "open_skipped": 0, "repeats": 0}

    def api_for(market: str) -> BinanceRest:
        if market not in apis:
            pacer = Pacer(
                weight_limit=WEIGHT_LIMIT_1M[market],
                headroom=settings.binance_weight_headroom,
                max_retries=settings.binance_max_retries,
                backoff_seconds=settings.binance_backoff_seconds,
                backoff_max_seconds=settings.binance_backoff_max_seconds,
                sleep=sleep,
                clock=clock,
                rng=rng,
            )
            apis[market] = BinanceRest(settings, market, pacer)
            if exchange_info:
                symbols = sorted({r.symbol for r in ranges if r.market == market})
                try:
                    result.refs["exchange_info"] += land_exchange_info(
                        apis[market], settings.lake_dir, symbols, now
                    )
                except BinanceBanned as exc:
                    banned[market] = str(exc)
                except (BinanceRejected, BinanceUnavailable) as exc:
                    warnings.append(f"exchange info ({market}) not landed: {exc}")
        return apis[market]

    failed = 0
    with Progress(ranges) as progress:
        for index, kr in enumerate(ranges, start=1):
            api = api_for(kr.market)
            if kr.market in banned:
                errors.append(f"{kr.label()}: {banned[kr.market]}")
                failed += 1
                continue
            progress.start(index, kr)
            outcome = RangeOutcome()
            lander = Lander(settings.lake_dir, now)
            try:
                for frame in fetch_pages(api, kr, now_ms, outcome):
                    lander.add(frame)
                    progress.advance(len(frame), totals["pages"] + outcome.pages)
            except BinanceBanned as exc:
                banned[kr.market] = str(exc)
                errors.append(f"{kr.label()}: {exc}")
                failed += 1
            except (BinanceRejected, BinanceUnavailable) as exc:
                errors.append(f"{kr.label()}: {exc}")
                failed += 1
                passing += int(exc.retryable)
            finally:
                lander.flush()
                result.refs["klines"] += lander.refs
                progress.finish_range(kr, outcome.rows)
            if outcome.bad:
                where = quarantine_bad_rows(settings.lake_dir, kr, outcome.bad, now)
                warnings.append(
                    f"{kr.label()}: {len(outcome.bad)} malformed rows from Binance quarantined "
                    f"({outcome.bad[0][1]}) at {where}"
                )
            for name in ("pages", "open_skipped", "repeats"):
                totals[name] += getattr(outcome, name)
            totals["candles"] += outcome.rows
    totals["requests"] = sum(a.requests for a in apis.values())
    totals["waits"] = [w for a in apis.values() for w in a.pacer.waits]
    result.notes["errors"] = errors
    result.notes["warnings"] = warnings
    result.notes["binance_rest"] = totals
    if ranges and failed == len(ranges):
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        # Retried by Prefect only when something may pass and no market is banned.
        error = BinanceOutage if passing and not banned else LakehouseError
        if totals["candles"]:
            # Partial ranges stay landed (they are correct); the next run resumes after them.
            raise error(f"every series failed after {totals['candles']} candles: {errors[0]}{more}")
        raise error(f"no klines landed: {errors[0]}{more}")
    return result


def land_rest_klines(settings: Settings, **options: object) -> LandResult:
    """Incremental klines for settings.market/symbols/intervals, plus an exchange info snapshot.

    Options (for tests and callers that pace themselves): now_ms, sleep, clock, rng.
    """
    now_ms = options.pop("now_ms", None)
    now_ms = now_ms_default() if now_ms is None else int(now_ms)
    return land_kline_ranges(settings, plan_incremental(settings, now_ms), now_ms=now_ms, **options)


def backfill_klines(settings: Settings, **options: object) -> LandResult:
    """The explicit settings.start..settings.end range for settings.market/symbols/intervals."""
    now_ms = options.pop("now_ms", None)
    now_ms = now_ms_default() if now_ms is None else int(now_ms)
    return land_kline_ranges(settings, plan_range(settings, now_ms), now_ms=now_ms, **options)


def backfill_gaps(settings: Settings, gaps: list, **options: object) -> LandResult:
    """Refetch exactly the missing ranges `flows.sources.gaps.find_gaps` reported."""
    from flows.sources.gaps import gap_ranges

    ranges = [KlineRange(*spec) for spec in gap_ranges(gaps)]
    if not ranges:
        return LandResult(refs={"klines": []}, notes={"errors": [], "warnings": []})
    return land_kline_ranges(settings, ranges, **options)
