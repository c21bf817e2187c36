"""Live Binance aggTrade streams landed into lake/raw in idempotent micro-batches, gaps filled by id."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import requests

from flows.errors import LakehouseError
from flows.lake import (
    BatchRef,
    compute_batch_id,
    utc_now,
    write_parquet_atomic,
    write_quarantine,
)
from flows.settings import Settings
from flows.transform import ensure_warehouse_dir

log = logging.getLogger(__name__)

SOURCE = "binance"
DATASET = "trades"
TRADE_KEY = ("market", "symbol", "agg_trade_id")
# REST rows, and frames the bulk parser turned down, are tuples in this order.
_ROW_FIELDS = (
    "symbol",
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "trade_time",
    "is_buyer_maker",
    "event_time",
    "received_at",
    "origin",
)
REST_PAGE = 1000  # Binance's maximum `limit` for aggTrades, spot and USD-M alike
_DATA = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
_FAST_KINDS = {
    "symbol": object,
    "agg_trade_id": None,
    "price": np.float64,
    "quantity": np.float64,
    "first_trade_id": None,
    "last_trade_id": None,
    "trade_time": None,
    "is_buyer_maker": None,
    "event_time": np.float64,
    "received_at": None,
    "origin": object,
}  # None: let numpy infer, then insist on integers/booleans (it would truncate 1.5 silently)
_FRAME_FIELDS = {
    "e": pa.string(),
    "E": pa.int64(),
    "s": pa.string(),
    "a": pa.int64(),
    "p": pa.string(),
    "q": pa.string(),
    "f": pa.int64(),
    "l": pa.int64(),
    "T": pa.int64(),
    "m": pa.bool_(),
}
_FRAME_OPTIONS = pa_json.ParseOptions(
    explicit_schema=pa.schema([("data", pa.struct([(name, kind) for name, kind in _FRAME_FIELDS.items()]))]),
    unexpected_field_behavior="ignore",
)
_MIN_TRADE_MS = 1_483_228_800_000  # 2017-01-01: Binance did not exist before
_DAY_MS = 86_400_000
BAD_ID = "agg_trade_id missing or not a whole number"
_LOG_FIRST = 10  # log this many problems of each kind in full, then every 1000th


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# Which ids are already in the lake --------------------------------------------------------------


class IdRanges:
    """Landed agg trade ids per stream as sorted, disjoint, non-adjacent [lo, hi] runs.

    Runs instead of a set keep memory flat during a long gap fill, when live ids above the
    hole keep landing; the holes between runs are exactly what the REST gap fill must fetch.
    """

    def __init__(self, runs: Sequence[tuple[int, int]] = ()) -> None:
        self.runs: list[tuple[int, int]] = sorted(runs)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if not self.runs or len(ids) == 0:
            return np.zeros(len(ids), dtype=bool)
        starts = np.fromiter((lo for lo, _ in self.runs), dtype=np.int64, count=len(self.runs))
        ends = np.fromiter((hi for _, hi in self.runs), dtype=np.int64, count=len(self.runs))
        index = np.searchsorted(starts, ids, side="right") - 1
        return (index >= 0) & (ids <= ends[np.clip(index, 0, None)])

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.unique(ids)
        breaks = np.flatnonzero(np.diff(ids) != 1)
        starts = np.concatenate(([ids[0]], ids[breaks + 1]))
        ends = np.concatenate((ids[breaks], [ids[-1]]))
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted([*self.runs, *zip(starts.tolist(), ends.tolist(), strict=True)]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.runs = merged

    @property
    def top(self) -> int | None:
        return self.runs[-1][1] if self.runs else None

    def first_hole(self) -> tuple[int, int] | None:
        if len(self.runs) < 2:
            return None
        return self.runs[0][1] + 1, self.runs[1][0] - 1


# Gap fill over REST ------------------------------------------------------------------------------


class AggTradesClient:
    """GET aggTrades?fromId= pages, honouring Retry-After and the per-minute request weight."""

    WEIGHT_CEILING = 5000  # of 6000 per minute per IP: leave room for the kline ingestion

    def __init__(self, base_url: str, market: str, timeout: float = 10.0, retries: int = 5) -> None:
        path = "/v3/aggTrades" if market == "spot" else "/v1/aggTrades"
        self.url = base_url.rstrip("/") + path
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.calls = 0

    def fetch(self, symbol: str, from_id: int, limit: int = REST_PAGE) -> list[dict]:
        params = {"symbol": symbol, "fromId": from_id, "limit": limit}
        for attempt in range(self.retries + 1):
            self.calls += 1
            try:
                response = self.session.get(self.url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise LakehouseError(
                        f"gap fill {self.url} for {symbol} failed: {exc}; check LAKEHOUSE_BINANCE_API_URL"
                    ) from exc
                time.sleep(min(2**attempt, 30))
                continue
            if response.status_code in (418, 429):
                time.sleep(float(response.headers.get("Retry-After", 60)))
                continue
            if response.status_code >= 500 and attempt < self.retries:
                time.sleep(min(2**attempt, 30))
                continue
            if response.status_code != 200:
                raise LakehouseError(
                    f"gap fill {self.url} for {symbol} answered {response.status_code}: "
                    f"{response.text[:200]}; check the symbol and LAKEHOUSE_BINANCE_API_URL"
                )
            weight = int(response.headers.get("X-MBX-USED-WEIGHT-1M", 0) or 0)
            if weight > self.WEIGHT_CEILING:
                time.sleep(60 - time.time() % 60 + 1)
            return response.json()
        raise LakehouseError(f"gap fill {self.url} for {symbol}: still rate limited, giving up")


# The collector -----------------------------------------------------------------------------------


@dataclass
class StreamStats:
    """Counters a run reports; none of the problems they count stops the stream."""

    received: int = 0
    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    malformed: int = 0
    unknown_events: int = 0
    control_messages: int = 0
    connects: int = 0
    reconnects: int = 0
    gap_fills: int = 0
    gap_filled: int = 0
    gap_fill_errors: int = 0
    flushes: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class FlushResult:
    """One flush: what landed, and when each landed trade was sent versus persisted."""

    refs: list[BatchRef] = field(default_factory=list)
    rows: int = 0
    event_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    persisted_ms: int = 0


def stream_url(ws_root: str, symbols: Sequence[str]) -> str:
    streams = "/".join(f"{s.lower()}@aggTrade" for s in symbols)
    return f"{ws_root.rstrip('/')}/stream?streams={streams}"


def _numeric(values: pd.Series) -> pd.Series:
    """Numbers from JSON values (Binance sends prices as strings); anything else becomes NaN."""
    try:
        return pd.to_numeric(values, errors="coerce")
    except (TypeError, ValueError):
        return pd.to_numeric(
            values.map(lambda v: v if isinstance(v, str | int | float) else None), errors="coerce"
        )


def lake_max_ids(lake_dir: Path, market: str, symbols: Sequence[str]) -> dict[str, int]:
    """Highest agg trade id per symbol already in lake/raw, read from the newest date only."""
    import duckdb

    found: dict[str, int] = {}
    for symbol in symbols:
        base = Path(lake_dir) / "raw" / SOURCE / DATASET / f"symbol={symbol}"
        for day in sorted(base.glob("date=*"), reverse=True):  # ids grow with time: newest first
            # A crash mid-write can leave a .tmp- file behind; it is not part of the lake.
            files = sorted(str(f) for f in day.glob("*.parquet") if not f.name.startswith("."))
            if not files:
                continue
            with duckdb.connect() as con:
                row = con.execute(
                    "select max(agg_trade_id) from read_parquet(?, hive_partitioning=false) where market = ?",
                    [files, market],
                ).fetchone()
            if row and row[0] is not None:
                found[symbol] = int(row[0])
                break
    return found


class TradeCollector:
    """Subscribe, buffer, flush every N seconds or M trades, reconnect and fill gaps by id."""

    def __init__(
        self,
        settings: Settings,
        *,
        symbols: Sequence[str] | None = None,
        market: str | None = None,
        ws_root: str | None = None,
        rest_url: str | None = None,
        flush_seconds: float | None = None,
        flush_trades: int | None = None,
        gap_grace_seconds: float | None = None,
        max_backoff: float = 30.0,
        on_flush: Callable[[FlushResult], None] | None = None,
    ) -> None:
        self.lake_dir = Path(settings.lake_dir)
        self.market = market or settings.market
        self.symbols = [s.upper() for s in (symbols or settings.symbols)]
        if self.market == "usdm":
            root = ws_root or settings.binance_futures_ws_url
            rest_root = rest_url or settings.binance_futures_api_url
        else:
            root = ws_root or settings.binance_ws_url
            rest_root = rest_url or settings.binance_api_url
        if not root.startswith(("ws://", "wss://")):
            setting = "BINANCE_FUTURES_WS_URL" if self.market == "usdm" else "BINANCE_WS_URL"
            raise LakehouseError(
                f"websocket root {root!r} is not a ws:// or wss:// URL; "
                f"set LAKEHOUSE_{setting}, e.g. wss://stream.binance.com:9443"
            )
        self.url = stream_url(root, self.symbols)
        self.rest = AggTradesClient(rest_root, self.market)
        self.flush_seconds = flush_seconds or settings.stream_flush_seconds
        self.flush_trades = flush_trades or settings.stream_flush_trades
        # A hole younger than this may still close by itself (messages out of order).
        self.gap_grace = gap_grace_seconds or 2 * self.flush_seconds
        self.max_backoff = max_backoff
        self.on_flush = on_flush
        self.stats = StreamStats()
        self.last_error: str | None = None  # why the last connection attempt or connection ended
        self.landed = {symbol: IdRanges() for symbol in self.symbols}
        # Websocket frames stay raw until the flush parses them in bulk (Arrow, off the loop);
        # REST rows arrive already parsed as tuples in _ROW_FIELDS order.
        self._raw: list[bytes] = []
        self._received: list[int] = []
        self._rows: list[tuple] = []
        self._holes: dict[str, tuple[tuple[int, int], float]] = {}
        self._fills: dict[str, asyncio.Task] = {}
        self._flush_lock = asyncio.Lock()
        self._flush_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._flush_failures = 0
        self._logged: dict[str, int] = {}

    # control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the run to flush and return; safe from a signal handler or another thread."""
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._stop.set)
        else:
            self._stop.set()

    async def run(self, duration: float | None = None) -> StreamStats:
        """Collect until duration passes, request_stop() is called or SIGINT/SIGTERM arrives."""
        self._loop = asyncio.get_running_loop()
        for symbol, top in lake_max_ids(self.lake_dir, self.market, self.symbols).items():
            self.landed[symbol] = IdRanges([(0, top)])
        handled = self._install_signal_handlers()
        timer = self._loop.call_later(duration, self._stop.set) if duration else None
        flusher = asyncio.create_task(self._flush_loop())
        reader = asyncio.create_task(self._connection_loop())
        stopped = asyncio.create_task(self._stop.wait())
        try:
            # A failing reader or flusher (bad URL, unwritable lake) ends the run like a stop.
            await asyncio.wait({stopped, reader, flusher}, return_when=asyncio.FIRST_COMPLETED)
            self._stop.set()
            await asyncio.wait({reader}, timeout=5)  # lets the reader drain the socket
        finally:
            if timer:
                timer.cancel()
            tasks = [stopped, flusher, reader, *self._fills.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sig in handled:
                self._loop.remove_signal_handler(sig)
            await self.flush()
        for task in (reader, flusher):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        return self.stats

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []  # only the main thread may own signals (e.g. inside a Prefect worker)
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._stop.set)
                handled.append(sig)
        return handled

    # websocket -----------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = 0.5
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                try:
                    # aiohttp, not websockets, on the client: its C frame reader keeps up with
                    # tens of thousands of messages per second on one core.
                    async with session.ws_connect(
                        self.url,
                        heartbeat=20,
                        autoping=True,
                        compress=0,
                        max_msg_size=2**20,
                        decode_text=False,
                    ) as ws:
                        self.stats.connects += 1
                        backoff = 0.5
                        log.info("connected to %s", self.url)
                        self._start_catch_up()
                        if await self._read_until_stop(ws):
                            return
                except aiohttp.InvalidURL as exc:
                    raise LakehouseError(
                        f"websocket URL {self.url} is not valid; check LAKEHOUSE_BINANCE_WS_URL"
                    ) from exc
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    log.warning("stream %s disconnected: %s", self.url, exc)
                if self._stop.is_set():
                    return
                self.stats.reconnects += 1
                # Land what arrived before the break, so the gap fill starts right after it.
                await self.flush()
                delay = min(backoff, self.max_backoff) * random.uniform(0.8, 1.2)
                backoff *= 2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def _read_until_stop(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read until the connection ends (False) or a stop is asked for (True, after draining)."""
        reader = asyncio.create_task(self._read(ws))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not reader.done():
            reader.cancel()  # cancelling receive() loses nothing: queued frames stay queued
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._drain(ws)
            return True
        reader.result()  # re-raise the disconnect for the reconnect loop
        return self._stop.is_set()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        count = 0
        while True:
            message = await ws.receive()
            if message.type not in _DATA:
                raise aiohttp.ClientError(f"websocket closed ({message.type.name}: {message.data})")
            self._raw.append(message.data)
            self._received.append(now_ms())
            count += 1
            if len(self._raw) >= self.flush_trades and not self._flush_now.is_set():
                self._flush_now.set()
                await asyncio.sleep(0)  # one loop turn: the waiting flusher takes the buffer now
            elif count % 256 == 0:
                # receive() does not suspend while frames are queued; let the flusher run.
                await asyncio.sleep(0)

    async def _drain(
        self, ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.05, limit: float = 1.0
    ) -> None:
        """Take what the socket already delivered before stopping, so a stop loses nothing."""
        deadline = time.monotonic() + limit
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=quiet)
                if message.type not in _DATA:
                    return
                self._raw.append(message.data)
                self._received.append(now_ms())

    def _note(self, kind: str, message: str, *args: object) -> None:
        count = self._logged[kind] = self._logged.get(kind, 0) + 1
        if count <= _LOG_FIRST or count % 1000 == 0:
            log.warning(f"{message} (#{count})", *args)

    def _parse_one(self, raw: bytes | str, received: int, out: list[tuple]) -> None:
        """Parse one frame into a row, or count and log why it is not a trade (never raise)."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats.malformed += 1
            self._note("malformed", "malformed JSON skipped: %.200r", raw)
            return
        data = message.get("data", message) if isinstance(message, dict) else None
        if not isinstance(data, dict):
            self.stats.malformed += 1
            self._note("malformed", "message without an event object skipped: %.200r", raw)
            return
        event = data.get("e")
        if event != "aggTrade":
            if event is None and "id" in data and ("result" in data or "error" in data):
                self.stats.control_messages += 1
                return
            self.stats.unknown_events += 1
            self._note("unknown", "event type %r skipped", event)
            return
        try:
            row = (
                data["s"],
                data["a"],
                data["p"],
                data["q"],
                data["f"],
                data["l"],
                data["T"],
                data["m"],
                data["E"],
                received,
                "ws",
            )
        except KeyError as exc:
            self.stats.malformed += 1
            self._note("malformed", "aggTrade without field %s skipped: %.200r", exc, raw)
            return
        out.append(row)
        self.stats.received += 1

    # gap fill ------------------------------------------------------------------------------

    def _start_catch_up(self) -> None:
        """After (re)connecting: fetch every trade after the last landed id until caught up."""
        for symbol, ranges in self.landed.items():
            if ranges.top is not None:
                self._start_fill(symbol, ranges.top + 1, None)

    def _start_fill(self, symbol: str, from_id: int, to_id: int | None) -> None:
        running = self._fills.get(symbol)
        if running is not None and not running.done():
            return
        self._fills[symbol] = asyncio.create_task(self._gap_fill(symbol, from_id, to_id))

    async def _gap_fill(self, symbol: str, from_id: int, to_id: int | None) -> None:
        """Page aggTrades from from_id until to_id (a hole) or a short page (caught up)."""
        self.stats.gap_fills += 1
        next_id = from_id
        try:
            while not self._stop.is_set():
                page = await asyncio.to_thread(self.rest.fetch, symbol, next_id)
                received = now_ms()
                rows = [
                    (symbol, t["a"], t["p"], t["q"], t["f"], t["l"], t["T"], t["m"], None, received, "rest")
                    for t in page
                    if isinstance(t, dict) and {"a", "p", "q", "f", "l", "T", "m"} <= t.keys()
                ]
                self._rows.extend(rows)
                self.stats.gap_filled += len(rows)
                if len(self._rows) >= self.flush_trades:
                    self._flush_now.set()
                if not rows:
                    return
                next_id = int(rows[-1][1]) + 1
                if len(page) < REST_PAGE or (to_id is not None and next_id > to_id):
                    return
        except (LakehouseError, ValueError, TypeError) as exc:
            self.stats.gap_fill_errors += 1
            log.error("gap fill for %s from id %s failed: %s", symbol, next_id, exc)

    def _check_holes(self) -> None:
        """Fill by REST any hole between landed ids that outlived the out-of-order grace."""
        now = time.monotonic()
        for symbol, ranges in self.landed.items():
            hole = ranges.first_hole()
            if hole is None:
                self._holes.pop(symbol, None)
                continue
            seen = self._holes.get(symbol)
            if seen is None or seen[0] != hole:
                self._holes[symbol] = (hole, now)
            elif now - seen[1] >= self.gap_grace:
                log.info("filling hole %s..%s of %s by id", hole[0], hole[1], symbol)
                self._start_fill(symbol, hole[0], hole[1])
                self._holes[symbol] = (hole, now)

    # flushing ------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # The flusher waits on the event itself (not through wait_for, whose wake-up takes
            # several loop turns): a reader that pauses for one turn once the buffer is full
            # lets the flush take it then, so a fast stream still lands in micro-batches.
            timer = loop.call_later(self.flush_seconds, self._flush_now.set)
            try:
                await self._flush_now.wait()
            finally:
                timer.cancel()
            self._flush_now.clear()
            await self.flush()
            self._check_holes()

    async def flush(self) -> FlushResult | None:
        """Land the buffer (in a thread, so receiving goes on); keep it if the write fails."""
        async with self._flush_lock:
            raw, received, rows = self._raw, self._received, self._rows
            self._raw, self._received, self._rows = [], [], []
            if not raw and not rows:
                return None
            try:
                result = await asyncio.to_thread(self.land_buffer, raw, received, rows)
            except OSError as exc:
                self._raw[:0], self._received[:0], self._rows[:0] = raw, received, rows
                self._flush_failures += 1
                log.error(
                    "flush of %d messages failed (%s); keeping them for the next try",
                    len(raw) + len(rows),
                    exc,
                )
                if self._flush_failures >= 5:
                    raise LakehouseError(
                        f"cannot write trades under {self.lake_dir} ({exc}); "
                        "check the disk and LAKEHOUSE_LAKE_DIR"
                    ) from exc
                return None
            self._flush_failures = 0
            if self.on_flush is not None:
                self.on_flush(result)
            return result

    def land_buffer(self, raw: list[bytes], received: list[int], rows: list[tuple]) -> FlushResult:
        """Parse the websocket frames in bulk; any odd frame sends the batch the careful way."""
        columns = parse_frames(raw, received, self.symbols) if raw else None
        if columns is not None:
            self.stats.received += len(raw)
        elif raw:
            parsed: list[tuple] = []
            for frame, at in zip(raw, received, strict=True):
                self._parse_one(frame, at, parsed)
            rows = parsed + rows
        return self.land_rows(rows, columns)

    def land_rows(self, rows: list[tuple], parsed: dict[str, np.ndarray] | None = None) -> FlushResult:
        """Validate, dedupe against the lake and land one micro-batch; bad rows go to quarantine."""
        persisted = utc_now()
        parts = [parsed] if parsed is not None else []
        if rows:
            columns = fast_columns(rows, self.symbols)
            if columns is None:
                frame = pd.DataFrame.from_records(rows, columns=_ROW_FIELDS)
                columns, problems = validate_trades(frame, self.market, self.symbols)
                self._handle_problems(problems, persisted)
            parts.append(columns)
        if not parts:
            return FlushResult(persisted_ms=now_ms())
        columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        columns = self._fresh(columns)
        self.stats.flushes += 1
        if len(columns["agg_trade_id"]) == 0:
            return FlushResult(persisted_ms=now_ms())
        refs = self._write(columns, persisted)
        for symbol in np.unique(columns["symbol"]):
            self.landed[symbol].add(columns["agg_trade_id"][columns["symbol"] == symbol])
        self.stats.landed += len(columns["agg_trade_id"])
        self.stats.batches += len(refs)
        events = columns["event_time"]
        return FlushResult(
            refs=refs,
            rows=len(columns["agg_trade_id"]),
            event_ms=events[~np.isnan(events)].astype(np.int64),
            persisted_ms=now_ms(),
        )

    def _handle_problems(self, problems: pd.DataFrame, persisted: datetime) -> None:
        known = np.zeros(len(problems), dtype=bool)
        for symbol, index in problems.groupby("symbol").groups.items():
            if symbol in self.landed:
                ids = problems.loc[index, "agg_trade_id"].fillna(-1).to_numpy(dtype=np.int64)
                known[problems.index.get_indexer(index)] = self.landed[symbol].contains(ids)
        self.stats.duplicates += int(known.sum())
        problems = problems[~known]
        if problems.empty:
            return
        self._quarantine(problems, persisted)
        ids_ok = problems["agg_trade_id"].notna() & problems["symbol"].isin(self.symbols)
        for symbol, part in problems[ids_ok].groupby("symbol"):
            # A bad trade is still handled: refetching its id would only quarantine it again.
            self.landed[symbol].add(part["agg_trade_id"].to_numpy(dtype=np.int64))

    def _fresh(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sort by symbol, day, id; drop repeats in the batch and ids the lake already has."""
        symbols, codes = np.unique(columns["symbol"], return_inverse=True)
        ids = columns["agg_trade_id"]
        days = columns["trade_time"] // _DAY_MS
        # The websocket copy sorts first and wins over a REST copy: it has the event time.
        order = np.lexsort((columns["origin"] == "rest", ids, days, codes))
        columns = {name: values[order] for name, values in columns.items()}
        codes, ids = codes[order], ids[order]
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = (codes[1:] != codes[:-1]) | (ids[1:] != ids[:-1])
        for code, symbol in enumerate(symbols):
            rows = codes == code
            keep[rows] &= ~self.landed[symbol].contains(ids[rows])
        self.stats.duplicates += int((~keep).sum())
        return {name: values[keep] for name, values in columns.items()}

    def _write(self, columns: dict[str, np.ndarray], persisted: datetime) -> list[BatchRef]:
        """One parquet file per symbol and trade date, named by its id range (the lake contract:
        same range, same file), written atomically with the lineage columns."""
        count = len(columns["agg_trade_id"])
        ms = pa.timestamp("ms", tz="UTC")
        events = columns["event_time"]
        missing = np.isnan(events)
        table = pa.table(
            {
                "market": pa.array(np.full(count, self.market, dtype=object), pa.string()),
                "symbol": pa.array(columns["symbol"], pa.string()),
                "agg_trade_id": pa.array(columns["agg_trade_id"], pa.int64()),
                "price": pa.array(columns["price"], pa.float64()),
                "quantity": pa.array(columns["quantity"], pa.float64()),
                "first_trade_id": pa.array(columns["first_trade_id"], pa.int64()),
                "last_trade_id": pa.array(columns["last_trade_id"], pa.int64()),
                "trade_time": pa.array(columns["trade_time"], pa.int64()).cast(ms),
                "is_buyer_maker": pa.array(columns["is_buyer_maker"], pa.bool_()),
                "event_time": pa.array(
                    np.where(missing, 0, events).astype(np.int64), pa.int64(), mask=missing
                ).cast(ms),
                "received_at": pa.array(columns["received_at"], pa.int64()).cast(ms),
                "origin": pa.array(columns["origin"], pa.string()),
            }
        )
        ingested = pa.scalar(int(persisted.timestamp() * 1000), pa.int64()).cast(ms)
        symbols, days = columns["symbol"], columns["trade_time"] // _DAY_MS
        starts = np.flatnonzero(
            np.concatenate(([True], (symbols[1:] != symbols[:-1]) | (days[1:] != days[:-1])))
        )
        ends = np.append(starts[1:], count)
        ensure_warehouse_dir(self.lake_dir)
        refs = []
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            symbol = str(symbols[start])
            day = datetime.fromtimestamp(int(days[start]) * 86_400, UTC).strftime("%Y-%m-%d")
            partitions = (("symbol", symbol), ("date", day))
            first = (self.market, symbol, int(columns["agg_trade_id"][start]))
            last = (self.market, symbol, int(columns["agg_trade_id"][end - 1]))
            batch_id = compute_batch_id(SOURCE, DATASET, partitions, first, last)
            part = table.slice(start, end - start)
            part = part.append_column("source", pa.array([SOURCE] * len(part), pa.string()))
            part = part.append_column("batch_id", pa.array([batch_id] * len(part), pa.string()))
            part = part.append_column("ingested_at", pa.repeat(ingested, len(part)))
            ref = BatchRef(SOURCE, DATASET, partitions, batch_id, rows=len(part))
            write_parquet_atomic(part, ref.path(self.lake_dir, "raw"))
            refs.append(ref)
        return refs

    def _quarantine(self, problems: pd.DataFrame, persisted) -> None:
        problems = problems.assign(source=SOURCE, ingested_at=pd.Timestamp(persisted).floor("ms"))
        symbol = problems["symbol"].where(problems["symbol"].isin(self.symbols), "_invalid")
        day = pd.to_datetime(problems["trade_time"], utc=True).dt.strftime("%Y-%m-%d")
        day = day.fillna(pd.Timestamp(persisted).strftime("%Y-%m-%d"))
        for (part_symbol, part_day), part in problems.groupby([symbol, day]):
            partitions = (("symbol", part_symbol), ("date", part_day))
            keys = part["raw_agg_trade_id"].astype(str)
            batch_id = compute_batch_id(SOURCE, DATASET, partitions, keys.iloc[0], keys.iloc[-1])
            ref = BatchRef(SOURCE, DATASET, partitions, batch_id, rows=len(part))
            labels = part["reason"].str.split("; ")
            checks = labels.explode().value_counts()
            # The same reason layout as gate 1 writes, so `lakehouse quarantine list|show` read it.
            reason = {
                "batch_id": batch_id,
                "source": SOURCE,
                "dataset": DATASET,
                "partition": dict(partitions),
                "gate": "trades_stream inline check",
                "rows_in_batch": len(part),
                "rows_accepted": 0,
                "rows_quarantined": len(part),
                "duplicates_collapsed": 0,
                "whole_batch": False,
                "failed_expectations": [
                    {
                        "expectation": check,
                        "rows": int(count),
                        "sample_values": keys[labels.map(lambda found, c=check: c in found)].head(5).tolist(),
                    }
                    for check, count in checks.items()
                ],
                "row_reasons": {str(i): found for i, found in enumerate(labels)},
                "quarantined_at": persisted.isoformat(),
                "validated_at": persisted.isoformat(),
            }
            write_quarantine(self.lake_dir, ref, part.assign(batch_id=batch_id), reason)
            self.stats.quarantined += len(part)
            log.warning("quarantined %d trades of %s: %s", len(part), part_symbol, ", ".join(checks.index))


def validate_trades(
    frame: pd.DataFrame, market: str, symbols: Sequence[str]
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Split buffered rows into typed columns and failing rows (with a `reason`), vectorised.

    This is the raw gate for the trade stream: the checks are the raw contract (key present,
    positive price and quantity, sane ids and times, a subscribed symbol) run per micro-batch,
    because a full Great Expectations checkpoint per second would eat the latency budget.
    """
    agg_id = _numeric(frame["agg_trade_id"])
    first_id = _numeric(frame["first_trade_id"])
    last_id = _numeric(frame["last_trade_id"])
    price = _numeric(frame["price"])
    quantity = _numeric(frame["quantity"])
    trade_ms = _numeric(frame["trade_time"])
    event_ms = _numeric(frame["event_time"])
    maker = frame["is_buyer_maker"].map(lambda v: v if isinstance(v, bool) else None)
    checks = {
        "symbol not subscribed": ~frame["symbol"].isin(symbols),
        BAD_ID: agg_id.isna() | (agg_id % 1 != 0) | (agg_id < 0),
        "price not a positive number": ~(price > 0) | np.isinf(price),
        "quantity not a positive number": ~(quantity > 0) | np.isinf(quantity),
        "first/last trade ids missing or reversed": ~(last_id >= first_id) | first_id.isna(),
        "trade_time missing or before 2017": ~(trade_ms >= _MIN_TRADE_MS),
        "trade_time more than a day after receipt": trade_ms > frame["received_at"] + 86_400_000,
        "is_buyer_maker not a boolean": maker.isna(),
    }
    failing = pd.DataFrame(checks)
    bad = failing.any(axis=1)
    reasons = failing[bad].apply(lambda row: "; ".join(row.index[row]), axis=1)
    problems = pd.DataFrame(
        {
            "market": market,
            "symbol": frame.loc[bad, "symbol"].astype(str),
            "agg_trade_id": agg_id[bad].where(~failing.loc[bad, BAD_ID]),
            "raw_agg_trade_id": frame.loc[bad, "agg_trade_id"].astype(str),
            "price": price[bad],
            "quantity": quantity[bad],
            "trade_time": pd.to_datetime(trade_ms[bad].where(trade_ms[bad] > 0), unit="ms", utc=True),
            "origin": frame.loc[bad, "origin"],
            "reason": reasons.astype(str) if len(reasons) else pd.Series(dtype=str),
        }
    )
    good = (~bad).to_numpy()
    columns = {
        "symbol": frame["symbol"].to_numpy(dtype=object)[good],
        "agg_trade_id": agg_id.to_numpy()[good].astype(np.int64),
        "price": price.to_numpy(dtype=np.float64)[good],
        "quantity": quantity.to_numpy(dtype=np.float64)[good],
        "first_trade_id": first_id.to_numpy()[good].astype(np.int64),
        "last_trade_id": last_id.to_numpy()[good].astype(np.int64),
        "trade_time": trade_ms.to_numpy()[good].astype(np.int64),
        "is_buyer_maker": maker.to_numpy()[good].astype(bool),
        "event_time": event_ms.to_numpy(dtype=np.float64)[good],
        "received_at": frame["received_at"].to_numpy()[good].astype(np.int64),
        "origin": frame["origin"].to_numpy(dtype=object)[good],
    }
    return columns, problems.reset_index(drop=True)


def fast_columns(rows: list[tuple], symbols: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Typed columns straight from the buffer when every row passes the checks, else None.

    Exchange data is almost always clean, so the usual flush pays only numpy conversions;
    a batch with any odd value takes validate_trades, which says row by row what is wrong.
    """
    values = dict(zip(_ROW_FIELDS, zip(*rows, strict=True), strict=True))
    try:
        columns = {name: np.array(values[name], dtype=kind) for name, kind in _FAST_KINDS.items()}
    except (TypeError, ValueError, OverflowError):
        return None
    for name in ("agg_trade_id", "first_trade_id", "last_trade_id", "trade_time", "received_at"):
        if columns[name].dtype.kind != "i":
            return None  # floats or strings where Binance sends integers
    if columns["is_buyer_maker"].dtype != np.bool_:
        return None
    return columns if _all_valid(columns, symbols) else None


def _all_valid(columns: dict[str, np.ndarray], symbols: Sequence[str]) -> bool:
    """The checks of validate_trades, as one yes/no over typed columns."""
    price, quantity, trade_ms = columns["price"], columns["quantity"], columns["trade_time"]
    return bool(
        np.isin(columns["symbol"], list(symbols)).all()
        and (columns["agg_trade_id"] >= 0).all()
        and ((price > 0) & np.isfinite(price)).all()
        and ((quantity > 0) & np.isfinite(quantity)).all()
        and (columns["last_trade_id"] >= columns["first_trade_id"]).all()
        and (trade_ms >= _MIN_TRADE_MS).all()
        and (trade_ms <= columns["received_at"] + _DAY_MS).all()
    )


def parse_frames(
    raw: list[bytes], received: list[int], symbols: Sequence[str]
) -> dict[str, np.ndarray] | None:
    """Typed columns from combined-stream aggTrade frames, parsed in bulk by Arrow's C++ JSON
    reader (which releases the GIL), or None when any frame is not a clean aggTrade."""
    try:
        table = pa_json.read_json(
            io.BytesIO(b"\n".join(raw)),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=_FRAME_OPTIONS,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(raw):
        return None  # a frame with a raw newline in it: the careful path will sort it out
    data = table.column("data").combine_chunks()
    fields = {name: data.field(name) for name in _FRAME_FIELDS}
    if data.null_count or any(values.null_count for values in fields.values()):
        return None
    if not pc.all(pc.equal(fields["e"], "aggTrade")).as_py():
        return None
    try:
        price = pc.cast(fields["p"], pa.float64())
        quantity = pc.cast(fields["q"], pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    columns = {
        "symbol": fields["s"].to_numpy(zero_copy_only=False),
        "agg_trade_id": fields["a"].to_numpy(),
        "price": price.to_numpy(),
        "quantity": quantity.to_numpy(),
        "first_trade_id": fields["f"].to_numpy(),
        "last_trade_id": fields["l"].to_numpy(),
        "trade_time": fields["T"].to_numpy(),
        "is_buyer_maker": fields["m"].to_numpy(zero_copy_only=False),
        "event_time": fields["E"].to_numpy().astype(np.float64),
        "received_at": np.array(received, dtype=np.int64),
        "origin": np.full(len(raw), "ws", dtype=object),
    }
    return columns if _all_valid(columns, symbols) else None


def run_stream(settings: Settings, duration: float | None = None, **options) -> StreamStats:
    """Run the collector in its own event loop until the duration passes or a signal arrives."""
    if duration is not None and duration <= 0:
        raise LakehouseError(f"--duration {duration} must be a positive number of seconds")
    collector = TradeCollector(settings, **options)
    stats = asyncio.run(collector.run(duration=duration))
    if stats.connects == 0:
        setting = "BINANCE_FUTURES_WS_URL" if collector.market == "usdm" else "BINANCE_WS_URL"
        raise LakehouseError(
            f"could not connect to {collector.url} in "
            f"{f'{duration:g} s' if duration is not None else 'the time it ran'} "
            f"({collector.last_error or 'no answer'}); nothing was landed. Check the network, or "
            f"LAKEHOUSE_{setting} for a mirror or a local replay server"
        )
    return stats
