"""User OHLC uploads (CSV or JSON) read into the raw kline schema and landed with source=upload."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flows.errors import LakehouseError
from flows.lake import land_frame
from flows.schemas import INTERVAL_MS, KLINE_KEY, cast_klines
from flows.settings import KLINE_INTERVALS, SYMBOL_PATTERN, Settings
from flows.sources import LandResult
from flows.sources.binance_rest import RAW_FIELDS

REQUIRED = ("open_time", "open", "high", "low", "close", "volume")
# Accepted spellings per raw column, compared after lower-casing and turning spaces into "_".
ALIASES: dict[str, tuple[str, ...]] = {
    "open_time": ("open_time", "timestamp", "time", "date", "datetime", "ts", "t", "kline_open_time"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v", "base_volume"),
    "close_time": ("close_time",),
    "quote_volume": ("quote_volume", "quote_asset_volume", "quote_av"),
    "num_trades": ("num_trades", "trades", "number_of_trades", "count"),
    "taker_buy_base_volume": (
        "taker_buy_base_volume",
        "taker_buy_volume",
        "taker_buy_base_asset_volume",
        "tb_base_av",
    ),
    "taker_buy_quote_volume": (
        "taker_buy_quote_volume",
        "taker_buy_quote_asset_volume",
        "tb_quote_av",
    ),
}
# A time of day alone (MetaTrader's Time column): pandas would put it on today's date.
CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[ap]\.?m\.?)?", re.IGNORECASE)
DATE_ONLY = re.compile(r"\d{4}([-/.])\d{1,2}\1\d{1,2}|\d{1,2}([-/.])\d{1,2}\2\d{2,4}")
# Day and month in either order, then the year: 01/11/2026, 1.11.2026 00:00, 01-11-2026.
DAY_MONTH = re.compile(r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})((?:[T\s].*)?)$")
ISO_DATES = "ISO dates (YYYY-MM-DD, e.g. 2026-10-01)"
UPLOAD_NAME = re.compile(r"^(?P<symbol>[A-Za-z0-9]{2,20})-(?P<interval>\d+(?:mo|s|m|h|d|w|M))(?:[-_.].*)?$")


def parse_upload_name(name: str) -> tuple[str, str]:
    """SYMBOL-INTERVAL[-anything].csv|json -> (symbol, interval); archive names fit as well."""
    match = UPLOAD_NAME.match(Path(name).stem)
    interval = match["interval"] if match else None
    interval = "1M" if interval == "1mo" else interval
    if not match or interval not in KLINE_INTERVALS:
        raise LakehouseError(
            f"{name} does not name its symbol and interval; call it SYMBOL-INTERVAL[-anything]"
            ".csv or .json, e.g. BTCUSDT-1m-october.csv"
        )
    return match["symbol"].upper(), interval


def _binance_rows(rows: list) -> pd.DataFrame:
    width = len(rows[0])
    if width not in (11, 12) or any(len(r) != width for r in rows):
        raise ValueError("rows of Binance arrays must all have 12 fields")
    return pd.DataFrame(rows, columns=list(RAW_FIELDS[:width]))


def read_upload(path: Path) -> pd.DataFrame:
    """CSV (with a header, or headerless in Binance's 12-column layout) or JSON as a frame."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            data = path.read_bytes()
            first = data.split(b"\n", 1)[0].split(b",")[0].strip().strip(b'"')
            if first.isdigit():
                rows = pd.read_csv(io.BytesIO(data), header=None, dtype=str)
                return _binance_rows(rows.values.tolist())
            return pd.read_csv(io.BytesIO(data), dtype=str, skipinitialspace=True)
        if suffix == ".json":
            doc = json.loads(path.read_text())
            if isinstance(doc, dict):
                doc = next((doc[k] for k in ("data", "klines", "rows") if k in doc), None)
            if not isinstance(doc, list) or not doc:
                raise ValueError("expected a non-empty list of candles (objects or 12-field arrays)")
            if all(isinstance(r, list) for r in doc):
                return _binance_rows(doc)
            if all(isinstance(r, dict) for r in doc):
                return pd.DataFrame.from_records(doc)
            raise ValueError("mixes objects and arrays")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakehouseError(f"{path.name} could not be read as {suffix[1:]}: {detail}") from exc
    raise LakehouseError(f"{path.name}: uploads are .csv or .json files")


def _cells(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().fillna("")


def _all_match(values: pd.Series, pattern: re.Pattern) -> bool:
    cells = _cells(values)
    filled = cells != ""
    return bool(filled.any()) and bool(cells[filled].str.fullmatch(pattern).all())


def _open_time(frame: pd.DataFrame, found: list, name: str) -> tuple[pd.Series, str]:
    """The open-time column, or a date column and a time-of-day column joined into one."""
    clocks = [c for c in found if _all_match(frame[c], CLOCK)]
    dated = [c for c in found if c not in clocks]
    if not dated:
        cells = _cells(frame[clocks[0]])
        row = int(np.flatnonzero((cells != "").to_numpy())[0])
        raise LakehouseError(
            f"{name} column {clocks[0]} has times of day but no dates (row {row + 1}: {cells.iloc[row]!r}); "
            "add a Date column beside it, or write full timestamps (ISO 8601, e.g. 2026-10-01T00:00:00Z)"
        )
    if clocks and _all_match(frame[dated[0]], DATE_ONLY):
        day, clock = _cells(frame[dated[0]]), _cells(frame[clocks[0]])
        joined = (day + " " + clock).astype(object).where((day != "") & (clock != ""))
        return joined, f"{dated[0]} + {clocks[0]}"
    return frame[dated[0]], str(dated[0])


def standard_columns(frame: pd.DataFrame, name: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """The raw columns an upload has, and the file's name for each (for error lines)."""
    lookup: dict[str, object] = {}
    for c in frame.columns:
        key = str(c).strip().lower().replace(" ", "_")
        # Binance's kline objects tell keys apart by case (t open time, T close time; v, V):
        # the key written in lower case is the one the alias means.
        if key not in lookup or str(c).strip().replace(" ", "_") == key:
            lookup[key] = c
    picked, labels = {}, {}
    for column, aliases in ALIASES.items():
        found = [lookup[a] for a in aliases if a in lookup]
        if column == "open_time" and found:
            picked[column], labels[column] = _open_time(frame, found, name)
        elif found:
            picked[column], labels[column] = frame[found[0]], str(found[0])
    missing = [c for c in REQUIRED if c not in picked]
    if missing:
        shown = ["timestamp" if c == "open_time" else c for c in missing]
        raise LakehouseError(
            f"{name} lacks column(s) {', '.join(shown)}; an upload needs timestamp, open, high, "
            "low, close, volume (other Binance kline columns are used when present)"
        )
    return pd.DataFrame(picked), labels


def _one_date_order(values: pd.Series, name: str, column: str) -> pd.Series:
    """Day/month dates rewritten as ISO, in the one order the whole column shows; pandas would
    guess each row alone (01/11 as January 11, 13/11 as November 13 in the same file)."""
    cells = _cells(values)
    parts = cells.str.extract(DAY_MONTH)
    written = parts[0].notna().to_numpy()
    if not written.any():
        return values
    first = int(np.flatnonzero(written)[0])
    other_separator = (parts[1] != parts[1].iloc[first]).fillna(False).to_numpy(dtype=bool)
    odd = ((cells != "").to_numpy() & ~written) | (written & other_separator)
    one_way = f"write every date one way, best as {ISO_DATES}"
    if odd.any():
        row = int(np.flatnonzero(odd)[0])
        raise LakehouseError(
            f"{name} row {row + 1}: {column} {cells.iloc[row]!r} is not written like row {first + 1} "
            f"{cells.iloc[first]!r}; {one_way}"
        )
    short_year = (parts[3].str.len() == 2).fillna(False).to_numpy(dtype=bool)
    if short_year.any():
        row = int(np.flatnonzero(short_year)[0])
        raise LakehouseError(
            f"{name} row {row + 1}: {column} {cells.iloc[row]!r} has a two-digit year; write {ISO_DATES}"
        )
    one, two = parts[0].astype(float), parts[2].astype(float)
    day_first, month_first = (one > 12).to_numpy(), (two > 12).to_numpy()
    if day_first.any() and month_first.any():
        a, b = int(np.flatnonzero(day_first)[0]), int(np.flatnonzero(month_first)[0])
        raise LakehouseError(
            f"{name} column {column}: row {a + 1} {cells.iloc[a]!r} puts the day first and row {b + 1} "
            f"{cells.iloc[b]!r} the month first; {one_way}"
        )
    if not (day_first.any() or month_first.any()):
        raise LakehouseError(
            f"{name} column {column}: dates such as {cells.iloc[first]!r} are ambiguous (day/month or "
            f"month/day) and no number above 12 tells which; write {ISO_DATES}"
        )
    day, month = (parts[0], parts[2]) if day_first.any() else (parts[2], parts[0])
    iso = parts[3] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + parts[4]
    return values.astype(object).where(~written, iso.astype(object))


def parse_times(values: pd.Series, name: str, column: str) -> pd.Series:
    """Epoch s/ms/µs (by magnitude) or date text -> UTC ms timestamps; naive text is UTC."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        top = float(numbers.abs().max()) if len(numbers) else 0
        unit = "us" if top >= 1e14 else "ms" if top >= 1e11 else "s"
        return pd.to_datetime(numbers.astype("int64"), unit=unit, utc=True)
    clock = _cells(values).str.fullmatch(CLOCK).to_numpy()
    if clock.any():
        row = int(np.flatnonzero(clock)[0])
        raise LakehouseError(
            f"{name} row {row + 1}: {column} {str(values.iloc[row]).strip()!r} is a time of day without a date "
            "(use epoch ms or ISO 8601, e.g. 2026-10-01T00:00:00Z)"
        )
    # Each row's own format is fine once no row can be read day-first or month-first.
    parsed = pd.to_datetime(_one_date_order(values, name, column), utc=True, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = values.iloc[row]
        what = "is empty" if pd.isna(value) or not str(value).strip() else f"{value!r} is not a time"
        raise LakehouseError(
            f"{name} row {row + 1}: {column} {what} (use epoch ms or ISO 8601, e.g. 2026-10-01T00:00:00Z)"
        )
    return parsed


MISSING_TEXT = ("", "nan", "null", "none")


def to_upload_klines(
    frame: pd.DataFrame, name: str, market: str, symbol: str, interval: str, now_ms: int
) -> tuple[pd.DataFrame, dict]:
    """The raw kline schema from an upload frame; refuses it whole on a bad value."""
    columns, labels = standard_columns(frame, name)
    if columns.empty:
        raise LakehouseError(f"{name} has no candles, only a header")
    out = pd.DataFrame(index=columns.index)
    out["open_time"] = parse_times(columns["open_time"], name, labels["open_time"])
    for column in columns.columns.drop("open_time"):
        if column == "close_time":
            continue
        cells = columns[column]
        values = pd.to_numeric(cells, errors="coerce")
        # An empty cell (or NaN, null) is a missing value: gate 1 quarantines that row alone
        # where the column is required, and its neighbours land. Text that is no number at all
        # says the file is not what it claims: refused whole, naming the row.
        missing = cells.isna() | cells.astype(str).str.strip().str.lower().isin(MISSING_TEXT)
        bad = values.isna() & ~missing
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise LakehouseError(f"{name} row {row + 1}: {column} {str(cells.iloc[row])!r} is not a number")
        out[column] = values
    filled = []
    if "close_time" in columns:
        out["close_time"] = parse_times(columns["close_time"], name, labels["close_time"])
    else:
        filled.append("close_time")
        if interval == "1M":
            out["close_time"] = out["open_time"] + pd.DateOffset(months=1) - pd.Timedelta(1, "ms")
        else:
            out["close_time"] = out["open_time"] + pd.Timedelta(INTERVAL_MS[interval] - 1, "ms")
    # Unknown extras stay unknown (NaN); the trade count is an integer column, so 0.
    for column in ("quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"):
        if column not in out:
            filled.append(column)
            out[column] = np.nan
    if "num_trades" not in out:
        filled.append("num_trades")
        out["num_trades"] = 0
    out["num_trades"] = out["num_trades"].round().astype("int64")
    out = out.assign(market=market, symbol=symbol, interval=interval)
    # The candle open now (an export's last row) is skipped; a candle dated after now is kept,
    # and gate 1 quarantines it as a candle from the future, where a user can see it.
    now = pd.Timestamp(now_ms, unit="ms", tz="UTC")
    still_open = (out["open_time"] <= now) & (out["close_time"] >= now)
    facts = {"rows": len(out), "open_skipped": int(still_open.sum()), "filled": filled}
    return cast_klines(out[~still_open]), facts


def land_upload(
    path: Path,
    settings: Settings,
    *,
    symbol: str,
    interval: str,
    market: str | None = None,
    now_ms: int | None = None,
) -> LandResult:
    """Read, check and land one upload as source=upload (the raw gate validates it next)."""
    path = Path(path)
    symbol = symbol.upper()
    market = market or settings.market
    if not SYMBOL_PATTERN.match(symbol):
        raise LakehouseError(f"--symbol {symbol!r} is not a Binance symbol (e.g. BTCUSDT)")
    if interval not in KLINE_INTERVALS:
        raise LakehouseError(f"--interval {interval!r} is not one of {', '.join(KLINE_INTERVALS)}")
    if market not in ("spot", "usdm"):
        raise LakehouseError(f"--market {market!r} is not spot or usdm")
    if not path.is_file():
        raise LakehouseError(f"{path} is not a file; give a .csv or .json upload")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    klines, facts = to_upload_klines(read_upload(path), path.name, market, symbol, interval, now_ms)
    refs = land_frame(
        klines,
        settings.lake_dir,
        source="upload",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="landing",
    )
    facts.update(file=path.name, landed=len(klines), market=market)
    return LandResult(refs={"klines": refs}, notes={"upload": facts})
