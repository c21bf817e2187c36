"""Binance REST klines: paging, pacing, faults and landing, against recorded-format responses."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
import responses

from flows.errors import LakehouseError
from flows.lake import kline_watermark, land_frame
from flows.quarantine import list_quarantine
from flows.schemas import KLINE_KEY, cast_klines
from flows.settings import load_settings
from flows.sources.binance_rest import (
    Pacer,
    backfill_gaps,
    backfill_klines,
    land_rest_klines,
    parse_rows,
    to_klines,
)
from flows.sources.gaps import Gap, expected_grid, find_gaps, gap_ranges

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance"
SPOT = "https://api.binance.com/api/v3"
USDM = "https://fapi.binance.com/fapi/v1"
T0 = 1_759_276_800_000  # 2025-10-01 00:00 UTC
MINUTE = 60_000
NOW = T0 + 3 * 86_400_000  # well after every candle the tests serve, unless they say otherwise


def row(open_ms: int, price: float, interval_ms: int = MINUTE) -> list:
    """One kline in Binance's REST format: ints for times and trades, strings for decimals."""
    return [
        open_ms,
        f"{price:.8f}",
        f"{price + 5:.8f}",
        f"{price - 5:.8f}",
        f"{price + 1:.8f}",
        "2.50000000",
        open_ms + interval_ms - 1,
        f"{2.5 * price:.8f}",
        42,
        "1.25000000",
        f"{1.25 * price:.8f}",
        "0",
    ]


class MaxJitter:
    """An rng whose jitter is always the largest allowed, so backoff waits are exact."""

    def uniform(self, low: float, high: float) -> float:
        return high


class FakeBinance:
    """Serves klines like Binance: startTime/endTime inclusive on open time, up to `limit` rows."""

    def __init__(self, mocked: responses.RequestsMock) -> None:
        self.series: dict[tuple[str, str, str], list[list]] = {}
        self.faults: list[tuple[str, object]] = []  # (symbol or "*", response spec) in order
        self.requests: list[dict] = []
        self.repeat_boundary = False
        self.weight_header = None
        self.mocked = mocked
        for base, market in ((SPOT, "spot"), (USDM, "usdm")):
            mocked.add_callback(
                responses.GET,
                re.compile(re.escape(base) + r"/klines.*"),
                callback=lambda req, market=market: self.klines(req, market),
            )
            info = json.loads((FIXTURES / f"{market}_exchange_info.json").read_text())
            mocked.add(responses.GET, f"{base}/exchangeInfo", json=info)

    def add(self, market: str, symbol: str, interval: str, rows: list[list]) -> None:
        self.series[(market, symbol, interval)] = rows

    def klines(self, request, market: str):
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        self.requests.append({"market": market, **query})
        for index, (symbol, fault) in enumerate(self.faults):
            if symbol in ("*", query["symbol"]):
                del self.faults[index]
                if isinstance(fault, Exception):
                    raise fault
                return fault
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.weight_header or len(self.requests) * 2)}
        rows = self.series.get((market, query["symbol"], query["interval"]))
        if rows is None:
            return (400, headers, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
        start, end, limit = int(query["startTime"]), int(query["endTime"]), int(query["limit"])
        if self.repeat_boundary and start > rows[0][0]:
            start -= 1  # a server that sends the last candle of the previous page again
        page = [r for r in rows if start <= r[0] <= end][:limit]
        return (200, headers, json.dumps(page))


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        yield FakeBinance(mocked)


def make_settings(lake_dir: Path, **overrides):
    values = {
        "lake_dir": lake_dir,
        "symbols": "BTCUSDT",
        "intervals": "1m",
        "start": "2025-10-01",
        "end": "2025-10-02",
        "binance_backoff_seconds": 1.0,
    }
    return load_settings(**(values | overrides))


def run(settings, **options):
    waits: list[float] = []
    options = {"now_ms": NOW, "sleep": waits.append, "clock": lambda: 1_000.0} | options
    options.setdefault("rng", MaxJitter())
    return land_rest_klines(settings, **options), waits


def landed(lake_dir: Path, source: str = "binance", zone: str = "landing") -> pd.DataFrame:
    files = sorted((lake_dir / zone / source / "klines").rglob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=["open_time"])
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def open_ms(frame: pd.DataFrame) -> list[int]:
    return sorted(int(t.value // 1_000_000) for t in frame["open_time"])


def test_recorded_page_lands_in_the_raw_kline_schema_and_prints_nothing_off_a_tty(fake, lake_dir, capsys):
    page = json.loads((FIXTURES / "spot_klines_BTCUSDT_1m.json").read_text())
    fake.add("spot", "BTCUSDT", "1m", page)
    result, _ = run(make_settings(lake_dir))
    frame = landed(lake_dir)
    assert result.rows["klines"] == 5
    assert list(frame.columns[:14]) == list(cast_klines(frame).columns)
    first = frame.sort_values("open_time").iloc[0]
    assert first["market"] == "spot" and first["symbol"] == "BTCUSDT" and first["interval"] == "1m"
    assert first["open_time"] == pd.Timestamp(page[0][0], unit="ms", tz="UTC")
    assert first["close_time"] == pd.Timestamp(page[0][6], unit="ms", tz="UTC")
    assert first["open"] == float(page[0][1]) and first["num_trades"] == 321
    assert first["taker_buy_quote_volume"] == float(page[0][10])
    assert set(frame["source"]) == {"binance"}
    assert str(frame["open_time"].dtype) == "datetime64[ms, UTC]"
    assert capsys.readouterr().out == ""  # the progress bar is for terminals only


def test_pages_advance_from_the_last_open_time_and_take_a_repeated_boundary_candle_once(fake, lake_dir):
    rows = [row(T0 + i * MINUTE, 100 + i) for i in range(2_500)]
    fake.add("spot", "BTCUSDT", "1m", rows)
    fake.repeat_boundary = True
    result, _ = run(make_settings(lake_dir, end="2025-10-03"))
    frame = landed(lake_dir)
    assert open_ms(frame) == [r[0] for r in rows]
    starts = [int(r["startTime"]) for r in fake.requests]
    assert starts[0] == T0
    # Each page after the first starts one ms after the last open time already received.
    assert starts[1] == rows[999][0] + 1 and starts[2] == rows[1998][0] + 1
    assert {r["limit"] for r in fake.requests} == {"1000"}
    assert result.notes["binance_rest"]["repeats"] == len(starts) - 1  # the last page is only a repeat
    assert result.notes["errors"] == []


def test_usdm_uses_the_futures_endpoint_with_pages_of_1500(fake, lake_dir):
    rows = [row(T0 + i * MINUTE, 100) for i in range(1_600)]
    fake.add("usdm", "BTCUSDT", "1m", rows)
    result, _ = run(make_settings(lake_dir, market="usdm", end="2025-10-03"))
    assert [r["market"] for r in fake.requests] == ["usdm"] * 3
    assert fake.requests[0]["limit"] == "1500"
    assert result.rows["klines"] == 1_600
    assert set(landed(lake_dir)["market"]) == {"usdm"}


def test_http_429_waits_for_retry_after_then_continues(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(10)])
    body = json.dumps({"code": -1003, "msg": "Too many requests."})
    fake.faults.append(("*", (429, {"Retry-After": "7"}, body)))
    result, waits = run(make_settings(lake_dir))
    assert waits == [7.0]
    assert result.notes["binance_rest"]["waits"] == [("429", 7.0)]
    assert result.rows["klines"] == 10


def test_http_418_stops_the_market_with_the_ban_time_and_changes_nothing(fake, lake_dir):
    settings = make_settings(lake_dir, symbols="BTCUSDT,ETHUSDT")
    earlier = landed_before(lake_dir)
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    fake.add("spot", "ETHUSDT", "1m", [row(T0, 100)])
    body = json.dumps({"code": -1003, "msg": "Way too many requests; IP banned."})
    fake.faults.append(("*", (418, {"Retry-After": "120"}, body)))
    with pytest.raises(LakehouseError) as caught:
        run(settings)
    message = str(caught.value)
    assert "HTTP 418" in message and "120 s" in message
    assert "until 1970-01-01 00:18:40 UTC" in message  # clock 1000 s + 120 s
    assert "spot ingestion stopped" in message and "(and 1 more)" in message
    assert len(fake.requests) == 1  # ETHUSDT was not asked once the IP was banned
    assert file_hashes(lake_dir / "raw") == earlier


def landed_before(lake_dir: Path) -> dict[str, str]:
    """Put one accepted batch in lake/raw, so tests can check a failed run leaves it alone."""
    frame = parse_rows([row(T0 - MINUTE, 100)], "spot", "BTCUSDT", "1m")[0]
    land_frame(
        to_klines(frame),
        lake_dir,
        source="binance",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
    )
    return file_hashes(lake_dir / "raw")


def test_server_errors_and_timeouts_retry_with_exponential_backoff(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(3)])
    fake.faults += [
        ("*", (502, {}, "<html>Bad Gateway</html>")),
        ("*", requests.exceptions.ReadTimeout("read timed out")),
        ("*", requests.exceptions.ConnectionError("Connection reset by peer")),
    ]
    result, waits = run(make_settings(lake_dir))
    # Equal jitter at its maximum: the full exponential step each time, 1 s, 2 s, 4 s.
    assert waits == [1.0, 2.0, 4.0]
    assert [reason for reason, _ in result.notes["binance_rest"]["waits"]] == [
        "502",
        "ReadTimeout",
        "ConnectionError",
    ]
    assert result.rows["klines"] == 3


def test_retries_are_bounded_and_a_failed_run_changes_nothing_in_the_lake(fake, lake_dir):
    earlier = landed_before(lake_dir)
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    fake.faults += [("*", (503, {}, "Service Unavailable"))] * 10
    settings = make_settings(lake_dir, binance_max_retries=3)
    with pytest.raises(LakehouseError, match="HTTP 503 .* after 4 attempts") as caught:
        run(settings)
    assert caught.value.retryable  # a 5xx may pass: Prefect retries the task
    assert len(fake.requests) == 4
    assert file_hashes(lake_dir / "raw") == earlier
    assert landed(lake_dir).empty


def test_malformed_rows_are_quarantined_and_the_good_rows_land(fake, lake_dir):
    rows = [row(T0 + i * MINUTE, 100) for i in range(5)]
    rows[1] = rows[1][:7]
    rows[3] = [*rows[3][:2], "not-a-price", *rows[3][3:]]
    fake.add("spot", "BTCUSDT", "1m", rows)
    result, _ = run(make_settings(lake_dir))
    assert open_ms(landed(lake_dir)) == [T0, T0 + 2 * MINUTE, T0 + 4 * MINUTE]
    quarantined = list((lake_dir / "quarantine" / "binance" / "klines").rglob("*.parquet"))
    assert len(quarantined) == 1
    bad = pq.read_table(quarantined[0]).to_pandas()
    assert list(bad["reason"]) == ["expected 12 fields, got 7", "not a number in high"]
    reason = json.loads(quarantined[0].with_suffix(".json").read_text())
    assert reason["rows_quarantined"] == 2 and reason["row_reasons"]["0"] == ["expected 12 fields, got 7"]
    assert [b.rows for b in list_quarantine(lake_dir)] == [2]
    assert "2 malformed rows" in result.notes["warnings"][0]


def test_invalid_symbol_is_named_and_the_other_symbols_complete(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(4)])
    result, _ = run(make_settings(lake_dir, symbols="NOSUCHCOIN,BTCUSDT"))
    assert result.notes["errors"] == [
        "NOSUCHCOIN 1m (spot): Binance rejected spot klines NOSUCHCOIN 1m from 2025-10-01 00:00:00: "
        "Invalid symbol. (code -1121, HTTP 400)"
    ]
    assert result.rows["klines"] == 4
    assert set(landed(lake_dir)["symbol"]) == {"BTCUSDT"}


def test_an_empty_range_lands_nothing_and_is_not_an_error(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [])
    result, _ = run(make_settings(lake_dir))
    assert result.refs["klines"] == [] and result.notes["errors"] == []
    assert len(fake.requests) == 1


def test_the_still_open_candle_is_never_stored(fake, lake_dir):
    rows = [row(T0 + i * MINUTE, 100) for i in range(6)]
    fake.add("spot", "BTCUSDT", "1m", rows)
    now = T0 + 5 * MINUTE + 30_000  # the sixth candle is half way through
    result, _ = run(make_settings(lake_dir), now_ms=now)
    assert open_ms(landed(lake_dir)) == [r[0] for r in rows[:5]]
    assert result.notes["binance_rest"]["open_skipped"] == 1
    assert len(fake.requests) == 1  # nothing closed can follow the open candle


def test_incremental_run_starts_at_the_watermark_minus_the_overlap(fake, lake_dir):
    landed_before(lake_dir)  # raw holds the candle at T0 - 1 min
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(-5, 5)])
    run(make_settings(lake_dir, binance_overlap_candles=2))
    assert int(fake.requests[0]["startTime"]) == T0 - 3 * MINUTE
    # The second run finds the first one's landing batches and starts near their end.
    fake.requests.clear()
    run(make_settings(lake_dir, binance_overlap_candles=2))
    assert int(fake.requests[0]["startTime"]) == T0 + 2 * MINUTE


def test_used_weight_near_the_limit_waits_for_the_next_minute(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(1_500)])
    fake.weight_header = 5_500  # above 90% of 6,000
    result, waits = run(make_settings(lake_dir, end="2025-10-03"), clock=lambda: 1_000.0)
    # 1000 s is 40 s into a minute: wait 20 s to the next window plus 1 s margin, per request.
    assert waits == [21.0, 21.0]
    assert result.rows["klines"] == 1_500


def test_exchange_info_lands_one_snapshot_per_run(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    result, _ = run(make_settings(lake_dir, symbols="BTCUSDT"))
    run(make_settings(lake_dir, symbols="BTCUSDT"), now_ms=NOW + 1_000)
    files = sorted((lake_dir / "landing" / "binance" / "exchange_info").rglob("*.parquet"))
    assert len(files) == 2
    info = pq.read_table(files[0]).to_pandas()
    assert info[["market", "symbol", "status", "base_asset", "quote_asset"]].values.tolist() == [
        ["spot", "BTCUSDT", "TRADING", "BTC", "USDT"]
    ]
    assert json.loads(info["filters"][0])[0]["filterType"] == "PRICE_FILTER"
    assert result.rows["exchange_info"] == 1


def test_landing_the_same_range_twice_replaces_the_batch_files(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(1_440 + 60)])
    settings = make_settings(lake_dir, end="2025-10-03")
    backfill_klines(settings, now_ms=NOW, sleep=lambda s: None)
    first = sorted(p.name for p in (lake_dir / "landing" / "binance" / "klines").rglob("*.parquet"))
    backfill_klines(settings, now_ms=NOW, sleep=lambda s: None)
    second = sorted(p.name for p in (lake_dir / "landing" / "binance" / "klines").rglob("*.parquet"))
    assert first == second and len(first) == 2  # one file per day of the range
    assert len(landed(lake_dir)) == 1_500


def test_api_keys_are_sent_but_never_shown(fake, lake_dir, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_BINANCE_API_KEY", "key-123-secret")
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    settings = make_settings(lake_dir)
    result, _ = run(settings)
    assert "key-123-secret" not in repr(settings) and "key-123-secret" not in str(result.notes)
    assert fake.mocked.calls[-1].request.headers["X-MBX-APIKEY"] == "key-123-secret"


def test_backfill_gaps_refetches_exactly_the_missing_candles(fake, lake_dir):
    rows = [row(T0 + i * MINUTE, 100) for i in range(30)]
    fake.add("spot", "BTCUSDT", "1m", rows)
    present = [r for i, r in enumerate(rows) if i not in (4, 5, 6, 20)]
    land_frame(
        to_klines(parse_rows(present, "spot", "BTCUSDT", "1m")[0]),
        lake_dir,
        source="archive",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
    )
    gaps = find_gaps(lake_dir, now_ms=NOW)
    assert [(g.first_open_ms, g.last_open_ms, g.missing) for g in gaps] == [
        (T0 + 4 * MINUTE, T0 + 6 * MINUTE, 3),
        (T0 + 20 * MINUTE, T0 + 20 * MINUTE, 1),
    ]
    result = backfill_gaps(make_settings(lake_dir), gaps, now_ms=NOW, sleep=lambda s: None)
    ranges = [(int(r["startTime"]), int(r["endTime"])) for r in fake.requests]
    assert ranges[0] == (T0 + 4 * MINUTE, T0 + 7 * MINUTE - 1)
    assert (T0 + 20 * MINUTE, T0 + 21 * MINUTE - 1) in ranges
    assert open_ms(landed(lake_dir)) == [T0 + m * MINUTE for m in (4, 5, 6, 20)]
    assert result.rows["klines"] == 4


def land_raw(lake_dir: Path, rows: list[list], market: str, interval: str, source: str = "archive"):
    land_frame(
        to_klines(parse_rows(rows, market, "BTCUSDT", interval)[0]),
        lake_dir,
        source=source,
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
    )


def test_watermark_reads_every_source_and_keeps_markets_apart(lake_dir):
    land_raw(lake_dir, [row(T0, 100)], "spot", "1m", source="archive")
    land_raw(lake_dir, [row(T0 + 86_400_000, 100)], "usdm", "1m", source="binance")
    assert kline_watermark(lake_dir, "*", "spot", "BTCUSDT", "1m") == T0
    assert kline_watermark(lake_dir, "*", "usdm", "BTCUSDT", "1m") == T0 + 86_400_000
    assert kline_watermark(lake_dir, "binance", "spot", "BTCUSDT", "1m") is None
    assert kline_watermark(lake_dir, "*", "spot", "BTCUSDT", "1h") is None


def test_gaps_split_at_midnight_and_a_ranged_check_reports_empty_series_whole(lake_dir):
    hour = 3_600_000
    opens = [T0 + i * hour for i in range(-3, 30) if i not in (-1, 0, 1, 26)]
    land_raw(lake_dir, [row(t, 100, hour) for t in opens], "spot", "1h")
    gaps = find_gaps(lake_dir, now_ms=NOW)
    assert [(g.date, g.first_open_ms, g.last_open_ms, g.missing) for g in gaps] == [
        ("2025-09-30", T0 - hour, T0 - hour, 1),
        ("2025-10-01", T0, T0 + hour, 2),
        ("2025-10-02", T0 + 26 * hour, T0 + 26 * hour, 1),
    ]
    ranged = find_gaps(
        lake_dir,
        markets=["spot"],
        symbols=["BTCUSDT", "ETHUSDT"],
        intervals=["1h"],
        start_ms=T0,
        end_ms=T0 + 86_400_000,
        now_ms=T0 + 12 * hour + 1,  # candles from 12:00 on are not closed yet
    )
    assert [(g.symbol, g.first_open_ms, g.missing) for g in ranged] == [
        ("BTCUSDT", T0, 2),
        ("ETHUSDT", T0, 12),
    ]


def test_monthly_candles_follow_the_calendar_in_gaps():
    jan, feb, mar = 1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000
    assert expected_grid("1M", jan, mar).tolist() == [jan, feb, mar]
    # A missing February is refetched from its open to March's open.
    assert gap_ranges([Gap("spot", "BTCUSDT", "1M", "2024-02-01", feb, feb, 1)]) == [
        ("spot", "BTCUSDT", "1M", feb, mar)
    ]


def test_without_weight_headers_the_pacer_counts_weight_itself_per_minute():
    now = [120.0]
    waits: list[float] = []
    pacer = Pacer(weight_limit=10, headroom=1.0, sleep=waits.append, clock=lambda: now[0])
    for _ in range(2):
        pacer.before(4)
        pacer.observe({}, 4)
    pacer.before(4)  # 8 used + 4 > 10: wait for the next minute
    assert waits == [61.0]
    now[0] = 185.0  # a new minute: the count starts again
    pacer.observe({}, 4)
    pacer.before(4)
    assert waits == [61.0] and pacer.used_weight == 4


def test_a_host_that_does_not_resolve_fails_at_once_naming_it(fake, lake_dir):
    """No network (or a mistyped host): one try, no backoff, one line naming the host and settings,
    as python-binance raises it (requests' ConnectionError over urllib3's NameResolutionError)."""
    import socket

    from urllib3.exceptions import MaxRetryError, NameResolutionError

    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    unresolved = NameResolutionError(
        "api.binance.com", None, socket.gaierror(-2, "Name or service not known")
    )
    fake.faults += [
        ("*", requests.exceptions.ConnectionError(MaxRetryError(None, "/api/v3/klines", unresolved)))
    ]
    waits: list[float] = []
    with pytest.raises(LakehouseError) as failure:
        run(make_settings(lake_dir), sleep=waits.append)
    assert waits == [] and len(fake.requests) == 1
    assert str(failure.value) == (
        "no klines landed: BTCUSDT 1m (spot): cannot resolve api.binance.com for spot klines BTCUSDT 1m "
        "from 2025-10-01 00:00:00 (no network, or a wrong host in LAKEHOUSE_BINANCE_API_URL / "
        "LAKEHOUSE_BINANCE_FUTURES_API_URL); check them and rerun"
    )
    assert landed(lake_dir).empty


def exchange_info_calls(fake) -> int:
    return sum(1 for call in fake.mocked.calls if call.request.url.endswith("/exchangeInfo"))


def test_a_ban_is_recorded_in_the_lake_and_no_run_asks_binance_before_it_ends(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    body = json.dumps({"code": -1003, "msg": "Way too many requests; IP banned."})
    fake.faults.append(("*", (418, {"Retry-After": "7200"}, body)))
    with pytest.raises(LakehouseError):
        run(make_settings(lake_dir))
    record_path = lake_dir / "state" / "binance" / "spot-backoff.json"
    record = json.loads(record_path.read_text())
    assert (record["market"], record["status"], record["until_epoch"]) == ("spot", 418, 8_200.0)
    assert record["until"] == "1970-01-01 02:16:40 UTC"
    asked = (len(fake.requests), exchange_info_calls(fake))
    assert asked == (1, 1)

    # The next run (a task retry, a flow retry, the next scheduled run) asks nothing at all.
    with pytest.raises(LakehouseError) as caught:
        run(make_settings(lake_dir), clock=lambda: 1_600.0)
    assert str(caught.value) == (
        "no klines landed: BTCUSDT 1m (spot): Binance banned this IP (HTTP 418) for 6600 s, until "
        f"1970-01-01 02:16:40 UTC (recorded in {record_path}); spot ingestion stopped and sends no spot "
        "request before then; a run after that time picks up where the lake ends"
    )
    assert (len(fake.requests), exchange_info_calls(fake)) == asked
    # USD-M has limits of its own: a spot ban does not stop it.
    fake.add("usdm", "BTCUSDT", "1m", [row(T0, 100)])
    assert run(make_settings(lake_dir, market="usdm"), clock=lambda: 1_600.0)[0].rows["klines"] == 1

    # Once the ban has ended, the run picks up.
    result, waits = run(make_settings(lake_dir), clock=lambda: 8_200.0)
    assert result.rows["klines"] == 1 and waits == []


def test_a_429_longer_than_the_backoff_limit_stops_at_once_and_is_recorded(fake, lake_dir):
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    body = json.dumps({"code": -1003, "msg": "Too many requests."})
    fake.faults.append(("*", (429, {"Retry-After": "600"}, body)))
    with pytest.raises(LakehouseError) as caught:
        run(make_settings(lake_dir))
    record_path = lake_dir / "state" / "binance" / "spot-backoff.json"
    assert str(caught.value) == (
        "no klines landed: BTCUSDT 1m (spot): Binance rate-limited this IP (HTTP 429) for 600 s, until "
        f"1970-01-01 00:26:40 UTC (recorded in {record_path}); spot ingestion stopped and sends no spot "
        "request before then; a run after that time picks up where the lake ends"
    )
    assert not getattr(caught.value, "retryable", False)
    assert len(fake.requests) == 1
    with pytest.raises(LakehouseError, match=r"rate-limited this IP \(HTTP 429\) for 300 s"):
        run(make_settings(lake_dir), clock=lambda: 1_300.0)
    assert len(fake.requests) == 1


def test_a_short_429_back_off_is_waited_out_by_the_next_attempt_before_it_asks(fake, lake_dir):
    """Retries exhausted on a 429 leave its Retry-After recorded: Prefect's retry of the task,
    seconds later, waits for the rest of it instead of asking at once."""
    fake.add("spot", "BTCUSDT", "1m", [row(T0, 100)])
    body = json.dumps({"code": -1003, "msg": "Too many requests."})
    fake.faults.append(("*", (429, {"Retry-After": "30"}, body)))
    with pytest.raises(LakehouseError, match="HTTP 429 .* after 1 attempts") as caught:
        run(make_settings(lake_dir, binance_max_retries=0))
    assert caught.value.retryable  # a 429 passes: Prefect may retry the task
    result, waits = run(make_settings(lake_dir), clock=lambda: 1_010.0)
    assert waits == [20.0] and result.notes["binance_rest"]["waits"] == [("429", 20.0)]
    assert result.rows["klines"] == 1 and len(fake.requests) == 3  # the 429, a page, the empty page after it


def test_an_error_body_that_is_json_but_not_an_object_is_judged_by_its_http_status(fake, lake_dir):
    """python-binance's exception cannot read a JSON string body (AttributeError): a proxy's
    429 "Too many requests" is still a 429 (wait, retry), a 400 still a rejection."""
    fake.add("spot", "BTCUSDT", "1m", [row(T0 + i * MINUTE, 100) for i in range(10)])
    fake.faults.append(("*", (429, {"Retry-After": "7"}, json.dumps("Too many requests"))))
    result, waits = run(make_settings(lake_dir))
    assert waits == [7.0] and result.rows["klines"] == 10
    assert len(fake.requests) == 3  # the 429, the page, the empty page after it

    fake.faults.append(("*", (400, {}, json.dumps("Bad request"))))
    with pytest.raises(LakehouseError) as caught:
        run(make_settings(lake_dir, symbols="ETHUSDT"))
    assert str(caught.value) == (
        "no klines landed: ETHUSDT 1m (spot): Binance rejected spot klines ETHUSDT 1m from "
        '2025-10-01 00:00:00: HTTP 400: "Bad request"'
    )
    assert len(fake.requests) == 4  # a rejection is not asked again
