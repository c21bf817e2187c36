"""Synthetic source: deterministic klines, users, transactions and network data with counted defects."""

# Datasets and natural keys (all land under <zone>/synthetic/<dataset>/..., partitioned by date):
# - klines (market, symbol, interval, open_time), also partitioned by symbol and interval;
# - users (user_id), dated by registered_at;
# - transactions (tx_id = yyyymmdd * 1e8 + sequence in the day), dated by occurred_at;
# - network (observed_at, one row a minute).
# Every defect kind in DEFECT_RULES hits about `defect_rate` of the rows of a chunk; what was
# injected is returned in LandResult.notes and written to <lake_dir>/landing/_defects/synthetic.json.

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.errors import LakehouseError
from flows.lake import BatchRef, compute_batch_id, utc_now, write_parquet_atomic, write_text_atomic
from flows.schemas import INTERVAL_MS
from flows.settings import Settings
from flows.sources import LandResult
from flows.sources.synthetic_activity import (
    COUNTRIES,
    DEVICES,
    REGISTRATION_HISTORY_DAYS,
    STATUSES,
    TX_TYPES,
    NetworkModel,
    Users,
    day_start_ms,
    tx_day,
    user_chunks,
)
from flows.sources.synthetic_market import DAY_MS, BaseCandles, MarketModel, base_asset, stream

SOURCE = "synthetic"
DEFECTS_FILE = Path("landing") / "_defects" / "synthetic.json"

# How each injected defect shows in the landed rows; the gate and the tests check these rules.
DEFECT_RULES: dict[str, dict[str, str]] = {
    "users": {
        "missing_values": "country, device_type or wallet_address is null (never null otherwise)",
        "outliers": "account_balance_usd >= 1e9 (clean balances are at most 5e7)",
        "out_of_range": "account_balance_usd < 0",
        "duplicate_rows": "an exact copy of another row of the same batch (same user_id)",
        "late_arriving": "rows landed in a later, separate batch (batch ids under late_batches)",
    },
    "transactions": {
        "missing_values": "amount, token_symbol or status is null (never null otherwise)",
        "outliers": "amount >= 1e12 token units (clean amounts are worth at most 5e6 USD)",
        "out_of_range": "amount < 0",
        "duplicate_rows": "an exact copy of another row of the same batch (same tx_id)",
        "late_arriving": "rows landed in a later, separate batch (batch ids under late_batches)",
    },
    "network": {
        "missing_values": "gas_price_gwei or tps is null (never null otherwise)",
        "outliers": "gas_price_gwei >= 1e5 (clean gas is at most 2000)",
        "out_of_range": "tps < 0",
        "duplicate_rows": "an exact copy of another row of the same batch (same observed_at)",
        "late_arriving": "rows landed in a later, separate batch (batch ids under late_batches)",
    },
    "klines": {
        "missing_values": "close or volume is null (never null otherwise)",
        "outliers": "a valid candle with a spike: high >= 5 * max(open, close)",
        "out_of_range": "volume < 0",
        "invalid_candles": "high < max(open, close) or low > min(open, close)",
        "duplicate_keys": "a second row with the same (market, symbol, interval, open_time) and "
        "different values, in the same batch",
        "gaps": "candles missing from the interval grid over the range (runs of up to 30)",
        "late_arriving": "candles landed in a later, separate batch (batch ids under late_batches)",
    },
}
# Kinds that move or add rows rather than change values.
ROW_KINDS = ("duplicate_rows", "duplicate_keys", "gaps", "late_arriving")
RUN_KINDS = ("gaps", "late_arriving")
# Longest run of gaps or late rows: long for candles (one late file per run), short elsewhere.
MAX_RUN = {"klines": 30}
LABELS = ["clean", *dict.fromkeys(k for rules in DEFECT_RULES.values() for k in rules)]
LABEL = {name: code for code, name in enumerate(LABELS)}
# Candles longer than a day are few; they get value defects and duplicates, no gaps or late rows.
LONG_CANDLE_KINDS = ("missing_values", "outliers", "out_of_range", "invalid_candles", "duplicate_keys")

Columns = dict[str, np.ndarray]


# Defects ------------------------------------------------------------------------------------


def _null_float(cols: Columns, name: str, rows: np.ndarray) -> None:
    cols[name][rows] = np.nan


def _mutate(dataset: str, kind: str, cols: Columns, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Change the chosen rows' values so they break exactly the rule DEFECT_RULES names."""
    n = len(rows)
    if n == 0:
        return
    if kind == "missing_values":
        which = rng.integers(0, 3 if dataset in ("users", "transactions") else 2, n)
        if dataset == "users":
            cols["country"][rows[which == 0]] = -1
            cols["device_type"][rows[which == 1]] = -1
            cols["wallet_address"][rows[which == 2]] = b""
        elif dataset == "transactions":
            _null_float(cols, "amount", rows[which == 0])
            cols["token_symbol"][rows[which == 1]] = -1
            cols["status"][rows[which == 2]] = -1
        elif dataset == "network":
            _null_float(cols, "gas_price_gwei", rows[which == 0])
            _null_float(cols, "tps", rows[which == 1])
        else:
            _null_float(cols, "close", rows[which == 0])
            _null_float(cols, "volume", rows[which == 1])
    elif kind == "outliers":
        if dataset == "users":
            cols["account_balance_usd"][rows] = np.round(10 ** rng.uniform(10, 12, n), 2)
        elif dataset == "transactions":
            cols["amount"][rows] = np.round(10 ** rng.uniform(12, 14, n), 2)
        elif dataset == "network":
            cols["gas_price_gwei"][rows] = np.round(10 ** rng.uniform(5, 6, n), 3)
        else:
            top = np.maximum(cols["open"][rows], cols["close"][rows])
            cols["high"][rows] = top * rng.uniform(5, 20, n)
    elif kind == "out_of_range":
        name = {"users": "account_balance_usd", "transactions": "amount", "network": "tps"}.get(
            dataset, "volume"
        )
        cols[name][rows] = -np.maximum(np.abs(cols[name][rows]), 1e-6)
    elif kind == "invalid_candles":
        up, down = rows[: n // 2], rows[n // 2 :]
        top = np.maximum(cols["open"][up], cols["close"][up])
        cols["high"][up] = top * (1 - rng.uniform(0.001, 0.01, len(up)))
        bottom = np.minimum(cols["open"][down], cols["close"][down])
        cols["low"][down] = bottom * (1 + rng.uniform(0.001, 0.01, len(down)))


def _rekey_duplicates(cols: Columns, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Give duplicate candles different but still valid values (a corrected re-send)."""
    n = len(rows)
    if n == 0:
        return
    scale = rng.uniform(0.5, 0.9, n)
    for name in ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"):
        cols[name][rows] = cols[name][rows] * scale
    cols["num_trades"][rows] = np.maximum(1, np.round(cols["num_trades"][rows] * scale)).astype(np.int64)
    low, high = cols["low"][rows], cols["high"][rows]
    cols["close"][rows] = low + (high - low) * rng.uniform(0, 1, n)


@dataclass
class Injected:
    main: Columns
    main_labels: np.ndarray
    late: Columns
    late_labels: np.ndarray
    gaps: int


def _take(cols: Columns, index: np.ndarray) -> Columns:
    return {name: values[index] for name, values in cols.items()}


def inject(
    dataset: str, cols: Columns, kinds: tuple[str, ...], rate: float, rng: np.random.Generator
) -> Injected:
    """Inject about `rate` of the rows per kind, each into distinct rows, and label every row.

    Gaps and late rows come in runs of consecutive rows (an outage, a delayed delivery), which
    is how they happen and keeps the number of extra late batch files small.
    """
    n = len(next(iter(cols.values())))
    if rate <= 0 or n == 0:
        none = np.array([], np.int64)
        return Injected(cols, np.zeros(n, np.int8), _take(cols, none), np.zeros(0, np.int8), 0)
    run = max(1, min(MAX_RUN.get(dataset, 10), n // 48))
    slots = n // run
    rows: dict[str, np.ndarray] = {}
    runs = {kind: int(rng.binomial(slots, rate)) for kind in kinds if kind in RUN_KINDS}
    picked = rng.choice(slots, size=min(sum(runs.values()), slots), replace=False)
    for kind, count in runs.items():
        starts, picked = picked[:count] * run, picked[count:]
        rows[kind] = np.sort((starts[:, None] + np.arange(run)).ravel())
    free = np.ones(n, bool)
    for taken in rows.values():
        free[taken] = False
    free_rows = np.flatnonzero(free)
    counts = {kind: int(rng.binomial(n, rate)) for kind in kinds if kind not in RUN_KINDS}
    budget = len(free_rows)
    for kind in counts:
        counts[kind] = min(counts[kind], budget)
        budget -= counts[kind]
    chosen = rng.choice(free_rows, size=sum(counts.values()), replace=False)
    offset = 0
    for kind, count in counts.items():
        rows[kind] = np.sort(chosen[offset : offset + count])
        offset += count
    cols = {name: values.copy() for name, values in cols.items()}
    labels = np.zeros(n, np.int8)
    for kind in kinds:
        if kind not in ROW_KINDS:
            _mutate(dataset, kind, cols, rows[kind], rng)
            labels[rows[kind]] = LABEL[kind]
    late_rows = rows.get("late_arriving", np.array([], np.int64))
    dropped = np.zeros(n, bool)
    dropped[late_rows] = True
    dropped[rows.get("gaps", np.array([], np.int64))] = True
    dup_kind = "duplicate_keys" if "duplicate_keys" in kinds else "duplicate_rows"
    dup_rows = rows.get(dup_kind, np.array([], np.int64))
    index = np.sort(np.concatenate([np.flatnonzero(~dropped), dup_rows]), kind="stable")
    main = _take(cols, index)
    main_labels = labels[index]
    second = np.flatnonzero(index[1:] == index[:-1]) + 1
    main_labels[second] = LABEL[dup_kind]
    if dup_kind == "duplicate_keys":
        _rekey_duplicates(main, second, rng)
    late = _take(cols, late_rows)
    late_labels = np.full(len(late_rows), LABEL["late_arriving"], np.int8)
    return Injected(main, main_labels, late, late_labels, len(rows.get("gaps", ())))


# Arrow tables and batch files ---------------------------------------------------------------

TS = pa.timestamp("ms", tz="UTC")


def _categorical(codes: np.ndarray, categories: list[str]) -> pa.Array:
    return pa.array(categories, pa.string()).take(pa.array(codes, mask=codes < 0))


def _addresses(values: np.ndarray) -> pa.Array:
    """Fixed-width b'0x...' byte strings (b'' for null) to an arrow string column, zero-copy-ish."""
    n = len(values)
    present = values != b""
    width = values.dtype.itemsize
    filled = np.where(present, values, b"0x" + b"0" * (width - 2))
    offsets = np.arange(n + 1, dtype=np.int32) * width
    array = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(filled.tobytes()))
    if present.all():
        return array
    return pc.if_else(pa.array(present), array, pa.scalar(None, pa.string()))


def _constant_string(value: str, n: int) -> pa.Array:
    """A string column of one repeated value, built from buffers (pa.repeat takes ~20 ms for 1440)."""
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def _column(kind: object, values: np.ndarray) -> pa.Array:
    if isinstance(kind, list):
        return _categorical(values, kind)
    if kind == "ts":
        return pa.array(values.astype(np.int64), TS)
    if kind == "f64":
        return pa.array(values.astype(np.float64), pa.float64(), from_pandas=True)
    if kind == "i64":
        return pa.array(values.astype(np.int64), pa.int64())
    if kind == "id":  # -1 (no user on that side) is null
        return pa.array(values, pa.int64(), mask=values < 0)
    if kind == "lev":  # only futures have leverage
        return pa.array(values, pa.int64(), mask=values == 0)
    if kind == "bool":
        return pa.array(values, pa.bool_())
    if kind == "addr":
        return _addresses(values)
    raise ValueError(kind)


KLINE_SPEC: dict[str, object] = {
    "open_time": "ts",
    "close_time": "ts",
    **dict.fromkeys(("open", "high", "low", "close", "volume", "quote_volume"), "f64"),
    "num_trades": "i64",
    "taker_buy_base_volume": "f64",
    "taker_buy_quote_volume": "f64",
}
USER_SPEC: dict[str, object] = {
    "user_id": "i64",
    "wallet_address": "addr",
    "registered_at": "ts",
    "last_login_at": "ts",
    "account_balance_usd": "f64",
    "country": list(COUNTRIES),
    "device_type": list(DEVICES),
    "vip_tier": "i64",
    "kyc_level": "i64",
    "is_active": "bool",
}
NETWORK_SPEC: dict[str, object] = {
    "observed_at": "ts",
    **dict.fromkeys(("gas_price_gwei", "tps", "block_time_s", "difficulty", "hashrate"), "f64"),
}


def transaction_spec(tokens: list[str]) -> dict[str, object]:
    return {
        "tx_id": "i64",
        "occurred_at": "ts",
        "from_user_id": "id",
        "to_user_id": "id",
        "from_address": "addr",
        "to_address": "addr",
        "tx_type": list(TX_TYPES),
        "token_symbol": tokens,
        "amount": "f64",
        "fee": "f64",
        "fee_token": tokens,
        "leverage": "lev",
        "status": list(STATUSES),
    }


@dataclass
class Lander:
    """Writes batches with the lake's contract: hive path, content-range batch id, lineage, atomic."""

    lake_dir: Path
    zone: str
    ingested_ms: int
    refs: dict[str, list[BatchRef]] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    by_batch: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    late_batches: dict[str, list[str]] = field(default_factory=dict)
    made_dirs: set[Path] = field(default_factory=set)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=2))
    writes: list[tuple[Future, int]] = field(default_factory=list)

    def write(self, table: pa.Table, path: Path) -> None:
        """Write in the background (arrow releases the GIL) while the next chunk is generated."""
        if path.parent not in self.made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(path.parent)
        self.writes.append((self.pool.submit(_write_atomic, table, path), table.num_rows))
        # Bound what waits in memory: a few small files, or about a million rows.
        while len(self.writes) > 16 or sum(rows for _, rows in self.writes[1:]) > 1_000_000:
            self.writes.pop(0)[0].result()

    def finish(self) -> None:
        try:
            for future, _ in self.writes:
                future.result()
        finally:
            self.writes.clear()
            self.pool.shutdown(wait=True)

    def count(self, dataset: str, kind: str, n: int, batch_id: str | None = None) -> None:
        totals = self.totals.setdefault(dataset, dict.fromkeys(DEFECT_RULES[dataset], 0))
        totals[kind] += n
        if batch_id and n:
            batch = self.by_batch.setdefault(dataset, {}).setdefault(batch_id, {})
            batch[kind] = batch.get(kind, 0) + n

    def land(
        self,
        dataset: str,
        cols: Columns,
        labels: np.ndarray,
        spec: dict[str, object],
        *,
        date_column: str,
        key: Callable[[Columns, int], str],
        constants: dict[str, str] | None = None,
        partitions: tuple[tuple[str, str], ...] = (),
        gaps: int = 0,
        late: bool = False,
    ) -> None:
        """Split rows (sorted by key) by UTC date and write one batch file per date."""
        self.totals.setdefault(dataset, dict.fromkeys(DEFECT_RULES[dataset], 0))
        n = len(labels)
        if n == 0:
            return
        day_index = cols[date_column] // DAY_MS
        bounds = np.r_[0, np.flatnonzero(np.diff(day_index)) + 1, n]
        for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
            part = {name: values[begin:end] for name, values in cols.items()}
            day = date(1970, 1, 1) + timedelta(days=int(day_index[begin]))
            parts = (*partitions, ("date", day.isoformat()))
            batch_id = compute_batch_id(SOURCE, dataset, parts, key(part, 0), key(part, end - begin - 1))
            arrays = [_constant_string(v, end - begin) for v in (constants or {}).values()]
            names = list(constants or {})
            for name, kind in spec.items():
                arrays.append(_column(kind, part[name]))
                names.append(name)
            arrays += [
                _constant_string(SOURCE, end - begin),
                _constant_string(batch_id, end - begin),
                pa.repeat(pa.scalar(self.ingested_ms, TS), end - begin),
            ]
            names += ["source", "batch_id", "ingested_at"]
            ref = BatchRef(SOURCE, dataset, parts, batch_id, rows=int(end - begin))
            self.write(pa.table(arrays, names=names), ref.path(self.lake_dir, self.zone))
            self.refs.setdefault(dataset, []).append(ref)
            found = np.bincount(labels[begin:end], minlength=len(LABELS))
            for code in np.flatnonzero(found[1:]) + 1:
                self.count(dataset, LABELS[code], int(found[code]), batch_id)
            if late:
                self.late_batches.setdefault(dataset, []).append(batch_id)
            if gaps and begin == 0:
                self.count(dataset, "gaps", gaps, batch_id)


def _write_atomic(table: pa.Table, path: Path) -> None:
    """The lake's atomic write, with dictionary encoding kept to string columns: on random floats
    it costs half the write time for nothing."""
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    try:
        write_parquet_atomic(table, path, use_dictionary=strings)
    except OSError as exc:
        raise LakehouseError(
            f"could not write {path} ({exc.strerror or exc}); check free space and permissions"
        ) from exc


# Kline periods --------------------------------------------------------------------------------


def _period_opens(interval: str, start_ms: int, end_ms: int) -> np.ndarray:
    """Opens of the multi-day candles opening in [start_ms, end_ms), then the last one's end."""
    if interval == "1M":
        first = date(1970, 1, 1) + timedelta(days=start_ms // DAY_MS)
        month = date(first.year, first.month, 1)
        if day_start_ms(month) < start_ms:
            month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        opens = []
        while day_start_ms(month) < end_ms:
            opens.append(day_start_ms(month))
            month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        opens.append(day_start_ms(month))
        return np.array(opens, np.int64)
    length = INTERVAL_MS[interval]
    # Weekly candles open on Mondays; 1970-01-01 was a Thursday.
    offset = 4 * DAY_MS if interval == "1w" else 0
    first = -((offset - start_ms) // length) * length + offset
    opens = np.arange(first, end_ms, length, dtype=np.int64)
    return np.r_[opens, (opens[-1] if len(opens) else first - length) + length]


def _kline_columns(candles: BaseCandles, close_ms: np.ndarray) -> Columns:
    return {
        "open_time": candles.open_ms,
        "close_time": close_ms,
        "open": candles.open,
        "high": candles.high,
        "low": candles.low,
        "close": candles.close,
        "volume": candles.volume,
        "quote_volume": candles.quote_volume,
        "num_trades": candles.num_trades,
        "taker_buy_base_volume": candles.taker_buy_base_volume,
        "taker_buy_quote_volume": candles.taker_buy_quote_volume,
    }


# The whole landing ----------------------------------------------------------------------------


def land_synthetic(
    settings: Settings,
    *,
    clean: bool | None = None,
    users: int | None = None,
    tx_per_day: int | None = None,
    zone: str = "landing",
) -> LandResult:
    """Generate and land klines, network, users and transactions over [start, end) (closed candles only)."""
    clean = settings.synthetic_clean if clean is None else clean
    n_users = settings.synthetic_users if users is None else users
    per_day = settings.synthetic_tx_per_day if tx_per_day is None else tx_per_day
    if n_users < 2:
        raise LakehouseError(f"--users {n_users} is too few; the synthetic source needs at least 2 users")
    if per_day < 0:
        raise LakehouseError(f"--tx-per-day {per_day} is negative; use 0 or more")
    now = utc_now()
    run = _Run(settings, n_users, per_day, 0.0 if clean else settings.defect_rate, now, zone)
    try:
        run.users()
        run.days()
        run.long_candles()
    finally:
        run.lander.finish()
    lander = run.lander
    report = {
        "generated_at": now.isoformat(),
        "seed": settings.seed,
        "clean": clean,
        "defect_rate": run.rate,
        "zone": zone,
        "defects": lander.totals,
        "rules": DEFECT_RULES,
        "batches": lander.by_batch,
        "late_batches": lander.late_batches,
        "rows": {dataset: sum(r.rows for r in refs) for dataset, refs in lander.refs.items()},
    }
    write_text_atomic(Path(settings.lake_dir) / DEFECTS_FILE, json.dumps(report, indent=2))
    notes = {
        "defects": lander.totals,
        "defect_rules": DEFECT_RULES,
        "defects_by_batch": lander.by_batch,
        "late_batches": lander.late_batches,
        "clean": clean,
    }
    return LandResult(refs=lander.refs, notes=notes)


class _Run:
    """One generation: the models, the range, and the lander that writes the batches."""

    def __init__(
        self, settings: Settings, n_users: int, per_day: int, rate: float, now: datetime, zone: str
    ) -> None:
        self.settings, self.n_users, self.per_day, self.rate = settings, n_users, per_day, rate
        self.seed = settings.seed
        self.now_ms = int(now.timestamp() * 1000)
        self.start_ms, end_ms = day_start_ms(settings.start), day_start_ms(settings.end)
        # Only closed candles and past events: the range stops at now.
        self.limit_ms = min(end_ms, self.now_ms)
        if self.limit_ms <= self.start_ms:
            raise LakehouseError(
                f"synthetic range {settings.start}..{settings.end} starts in the future; "
                "choose an earlier --start"
            )
        self.lander = Lander(settings.lake_dir, zone, self.now_ms)
        self.short = [i for i in settings.intervals if i != "1M" and INTERVAL_MS[i] <= DAY_MS]
        # Candles longer than a day are aggregated from daily ones once every day they span exists.
        self.long_periods: dict[str, np.ndarray] = {}
        for interval in settings.intervals:
            if interval not in self.short:
                opens = _period_opens(interval, self.start_ms, end_ms)
                closed = int(np.searchsorted(opens[1:], self.now_ms, side="right"))
                self.long_periods[interval] = opens[: closed + 1] if closed else opens[:0]
        self.gen_end_ms = max([self.limit_ms] + [int(p[-1]) for p in self.long_periods.values() if len(p)])
        self.step_ms = 1000 if "1s" in settings.intervals else 60_000
        symbols = list(settings.symbols)
        self.tokens = list(dict.fromkeys(base_asset(s) for s in symbols if base_asset(s) != "USDT"))
        self.tokens.append("USDT")
        self.token_symbol = {base_asset(s): s for s in reversed(symbols)}
        self.tx_spec = transaction_spec(self.tokens)
        self.daily: dict[str, list[BaseCandles]] = {s: [] for s in symbols}
        self.all_users: Users | None = None

    def kline_meta(self, symbol: str, interval: str) -> dict:
        return {
            "constants": {"market": self.settings.market, "symbol": symbol, "interval": interval},
            "partitions": (("symbol", symbol), ("interval", interval)),
        }

    def land(self, dataset: str, got: Injected, meta: dict, *, late: bool = False) -> None:
        cols, labels = (got.late, got.late_labels) if late else (got.main, got.main_labels)
        self.lander.land(
            dataset,
            cols,
            labels,
            self.spec(dataset),
            date_column=DATE_COLUMNS[dataset],
            key=_key(dataset, meta),
            gaps=0 if late else got.gaps,
            late=late,
            **meta,
        )

    def spec(self, dataset: str) -> dict[str, object]:
        return {"klines": KLINE_SPEC, "users": USER_SPEC, "network": NETWORK_SPEC}.get(dataset, self.tx_spec)

    def inject(self, dataset: str, cols: Columns, *stream_parts: object) -> Injected:
        rng = stream(self.seed, "defects", dataset, *stream_parts)
        return inject(dataset, cols, tuple(DEFECT_RULES[dataset]), self.rate, rng)

    def users(self) -> None:
        """Users first: transactions pick their senders and receivers among them."""
        first_ms = self.start_ms - REGISTRATION_HISTORY_DAYS * DAY_MS
        parts: list[Users] = []
        previous: Injected | None = None
        for chunk, (cols, part) in enumerate(user_chunks(self.seed, self.n_users, first_ms, self.limit_ms)):
            parts.append(part)
            got = self.inject("users", cols, chunk)
            self.land("users", got, {})
            if previous is not None:
                self.land("users", previous, {}, late=True)
            previous = got
        if previous is not None:
            self.land("users", previous, {}, late=True)
        self.all_users = Users(
            np.concatenate([p.registered_ms for p in parts]),
            np.concatenate([p.activity for p in parts]),
            np.concatenate([p.address_bytes for p in parts]),
            np.concatenate([p.vip_tier for p in parts]),
        )

    def days(self) -> None:
        """Day by day: market, then network load, then transactions priced from both.

        A chunk's late rows land after the next chunk, as their own batches.
        """
        market = MarketModel(self.seed, list(self.settings.symbols), step_ms=self.step_ms)
        network = NetworkModel(self.seed)
        pending: list[tuple[str, Injected, dict]] = []
        day = self.settings.start
        while day_start_ms(day) < self.gen_end_ms:
            base = market.day(day)
            arrived: list[tuple[str, Injected, dict]] = []
            for symbol in self.settings.symbols:
                self.daily[symbol].append(base[symbol].aggregate(DAY_MS // self.step_ms))
            if day_start_ms(day) < self.limit_ms:
                for symbol in self.settings.symbols:
                    for interval in self.short:
                        got = self.inject(
                            "klines",
                            self.short_candles(base[symbol], interval),
                            symbol,
                            interval,
                            day.toordinal(),
                        )
                        meta = self.kline_meta(symbol, interval)
                        self.land("klines", got, meta)
                        arrived.append(("klines", got, meta))
                minute_close, activity = _minute_series(base, self.step_ms, self.token_symbol)
                net = network.day(day, activity)
                net = {k: v[net["observed_at"] < self.limit_ms] for k, v in net.items()}
                got = self.inject("network", net, day.toordinal())
                self.land("network", got, {})
                arrived.append(("network", got, {}))
                txs = tx_day(
                    self.seed, day, self.per_day, self.all_users, self.tokens, minute_close, activity,
                    net["gas_price_gwei"], self.limit_ms,
                )  # fmt: skip
                got = self.inject("transactions", txs, day.toordinal())
                self.land("transactions", got, {})
                arrived.append(("transactions", got, {}))
            for dataset, late, meta in pending:
                self.land(dataset, late, meta, late=True)
            pending = arrived
            day += timedelta(days=1)
        for dataset, late, meta in pending:
            self.land(dataset, late, meta, late=True)

    def short_candles(self, base: BaseCandles, interval: str) -> Columns:
        length = INTERVAL_MS[interval]
        candles = base.aggregate(length // self.step_ms)
        close_ms = candles.open_ms + length - 1
        keep = close_ms < self.now_ms
        return {k: v[keep] for k, v in _kline_columns(candles, close_ms).items()}

    def long_candles(self) -> None:
        """3d, 1w and 1M candles from the daily ones; value defects and duplicates only."""
        for interval, opens in self.long_periods.items():
            if len(opens) < 2:
                continue
            for symbol in self.settings.symbols:
                days = BaseCandles.concat(self.daily[symbol])
                last = int(np.searchsorted(days.open_ms, opens[-1]))
                days = BaseCandles(**{k: getattr(days, k)[:last] for k in BaseCandles.__dataclass_fields__})
                candles = days.group(np.searchsorted(days.open_ms, opens[:-1]))
                cols = _kline_columns(candles, opens[1:] - 1)
                rng = stream(self.seed, "defects", "klines", symbol, interval)
                got = inject("klines", cols, LONG_CANDLE_KINDS, self.rate, rng)
                self.land("klines", got, self.kline_meta(symbol, interval))


DATE_COLUMNS = {
    "klines": "open_time",
    "users": "registered_at",
    "network": "observed_at",
    "transactions": "occurred_at",
}


def _minute_series(
    base: dict[str, BaseCandles], step_ms: int, token_symbol: dict[str, str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each token's 1m closes and the market's per-minute quote volume, for pricing transactions."""
    per_minute = 60_000 // step_ms
    closes = {
        token: base[symbol].close[per_minute - 1 :: per_minute] for token, symbol in token_symbol.items()
    }
    activity = sum(c.quote_volume.reshape(-1, per_minute).sum(axis=1) for c in base.values())
    return closes, np.asarray(activity, dtype=np.float64)


def _key(dataset: str, meta: dict) -> Callable[[Columns, int], str]:
    """The natural key of row i, as text for the batch id."""
    if dataset == "klines":
        c = meta["constants"]
        prefix = f"{c['market']}|{c['symbol']}|{c['interval']}|"
        return lambda cols, i: prefix + str(int(cols["open_time"][i]))
    column = {"users": "user_id", "transactions": "tx_id", "network": "observed_at"}[dataset]
    return lambda cols, i: str(int(cols[column][i]))
