"""python-binance end to end against a Binance-format HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.errors import LakehouseError
from flows.lake import land_frame
from flows.schemas import INTERVAL_MS, KLINE_KEY
from flows.settings import load_settings
from flows.sources.binance_rest import land_rest_klines, parse_rows, to_klines

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance"
T0 = 1_759_276_800_000  # 2025-10-01 00:00 UTC: the replayed symbols list then
SERVER_NOW = T0 + 2 * 86_400_000 + 30_000  # the candle opened at this minute is still open
MAX_LIMIT = {"api": 1000, "fapi": 1500}


def candle(symbol: str, interval: str, open_ms: int) -> list:
    price = 100.0 + (open_ms - T0) / 60_000 % 97 + len(symbol)
    return [
        open_ms,
        f"{price:.8f}",
        f"{price + 2:.8f}",
        f"{price - 2:.8f}",
        f"{price + 1:.8f}",
        "1.50000000",
        open_ms + INTERVAL_MS[interval] - 1,
        f"{1.5 * price:.8f}",
        11,
        "0.70000000",
        f"{0.7 * price:.8f}",
        "0",
    ]


class ReplayBinance:
    """Serves /api/v3 and /fapi/v1 klines and exchangeInfo as Binance does, with scripted faults."""

    def __init__(self) -> None:
        self.symbols = {"BTCUSDT", "ETHUSDT"}
        self.faults: list[tuple[int, dict, dict]] = []
        self.requests: list[tuple[str, dict]] = []
        self.weight = 0
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                replay.requests.append((url.path, query))
                status, headers, body = replay.answer(url.path, query)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, query: dict) -> tuple[int, dict, object]:
        root = path.split("/")[1]
        if path.endswith("/klines") and self.faults:
            return self.faults.pop(0)
        self.weight += 2
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.weight)}
        if path.endswith("/exchangeInfo"):
            market = "spot" if root == "api" else "usdm"
            return 200, headers, json.loads((FIXTURES / f"{market}_exchange_info.json").read_text())
        if path not in ("/api/v3/klines", "/fapi/v1/klines"):
            return 404, headers, {"code": -1, "msg": "not found"}
        if query.get("symbol") not in self.symbols:
            return 400, headers, {"code": -1121, "msg": "Invalid symbol."}
        limit = int(query.get("limit", 500))
        if limit > MAX_LIMIT[root]:
            return 400, headers, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
        step = INTERVAL_MS[query["interval"]]
        start = max(int(query.get("startTime", T0)), T0)
        first = T0 + -(-(start - T0) // step) * step
        end = min(int(query.get("endTime", SERVER_NOW)), SERVER_NOW)
        rows = [candle(query["symbol"], query["interval"], t) for t in range(first, end + 1, step)]
        return 200, headers, rows[:limit]

    def __enter__(self) -> ReplayBinance:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def replay(monkeypatch):
    with ReplayBinance() as server:
        monkeypatch.setenv("LAKEHOUSE_BINANCE_API_URL", f"{server.url}/api")
        monkeypatch.setenv("LAKEHOUSE_BINANCE_FUTURES_API_URL", f"{server.url}/fapi")
        yield server


def landed(lake_dir: Path) -> pd.DataFrame:
    files = sorted((lake_dir / "landing" / "binance" / "klines").rglob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def test_spot_and_futures_land_every_closed_candle_once_through_python_binance(replay, lake_dir):
    waits: list[float] = []
    replay.faults += [
        (429, {"Retry-After": "3"}, {"code": -1003, "msg": "Too many requests."}),
        (504, {}, {"code": -1007, "msg": "Timeout waiting for response from backend server."}),
    ]
    expected_per_series = 2 * 1440  # two full days; the third day's first candle is still open
    for market in ("spot", "usdm"):
        settings = load_settings(
            lake_dir=lake_dir,
            market=market,
            symbols="BTCUSDT,NOPEUSDT,ETHUSDT",
            intervals="1m",
            start="2025-10-01",
        )
        result = land_rest_klines(settings, now_ms=SERVER_NOW, sleep=waits.append)
        assert result.rows["klines"] == 2 * expected_per_series
        assert result.notes["errors"] == [
            f"NOPEUSDT 1m ({market}): Binance rejected {market} klines NOPEUSDT 1m from "
            "2025-10-01 00:00:00: Invalid symbol. (code -1121, HTTP 400)"
        ]
    frame = landed(lake_dir)
    counts = frame.groupby(["market", "symbol"]).size().to_dict()
    assert counts == {
        ("spot", "BTCUSDT"): expected_per_series,
        ("spot", "ETHUSDT"): expected_per_series,
        ("usdm", "BTCUSDT"): expected_per_series,
        ("usdm", "ETHUSDT"): expected_per_series,
    }
    assert not frame.duplicated(list(KLINE_KEY)).any()
    assert frame["close_time"].max() < pd.Timestamp(SERVER_NOW, unit="ms", tz="UTC")
    assert waits[0] == 3.0 and len(waits) == 2  # Retry-After honoured, then one backoff
    paths = [path for path, _ in replay.requests]
    assert "/api/v3/klines" in paths and "/fapi/v1/klines" in paths
    assert {q["limit"] for p, q in replay.requests if p == "/fapi/v1/klines"} == {"1500"}
    exchange = sorted((lake_dir / "landing" / "binance" / "exchange_info").rglob("*.parquet"))
    assert sorted(pq.read_table(exchange[0]).to_pandas()["symbol"]) == ["BTCUSDT", "ETHUSDT"]


def test_a_ban_stops_the_run_with_one_clear_error(replay, lake_dir):
    replay.faults.append((418, {"Retry-After": "600"}, {"code": -1003, "msg": "IP banned"}))
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT", intervals="1h", start="2025-10-01")
    with pytest.raises(LakehouseError, match=r"HTTP 418\) for 600 s"):
        land_rest_klines(settings, now_ms=SERVER_NOW, sleep=lambda s: None)
    assert landed(lake_dir).empty


def test_cli_gaps_then_backfill_gaps_fills_exactly_the_holes(replay, lake_dir, capsys):
    opens = [T0 + i * 3_600_000 for i in range(24)]
    kept = [t for i, t in enumerate(opens) if i not in (5, 6, 17)]
    rows = [candle("BTCUSDT", "1h", t) for t in kept]
    frame = to_klines(parse_rows(rows, "spot", "BTCUSDT", "1h")[0])
    land_frame(
        frame,
        lake_dir,
        source="archive",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
    )
    assert main(["gaps", "--symbols", "BTCUSDT", "--interval", "1h"]) == 0
    out = capsys.readouterr().out
    assert "2 gaps, 3 missing candles" in out
    assert "│ 2025-10-01 │ 05:00:00   │ 06:00:00  │ 2 " in out
    assert main(["backfill", "--gaps", "--symbols", "BTCUSDT", "--interval", "1h", "--no-validate"]) == 0
    refetched = landed(lake_dir)
    assert sorted(refetched["open_time"]) == [pd.Timestamp(opens[i], unit="ms", tz="UTC") for i in (5, 6, 17)]
    klines = [q for p, q in replay.requests if p.endswith("/klines")]
    assert [(int(q["startTime"]), int(q["endTime"])) for q in klines] == [
        (opens[5], opens[7] - 1),
        (opens[17], opens[18] - 1),
    ]
    # Once gate 1 has let the refetched candles into raw, the series has no holes left.
    assert main(["validate"]) == 0
    capsys.readouterr()
    assert main(["gaps", "--symbols", "BTCUSDT", "--interval", "1h"]) == 0
    assert capsys.readouterr().out == "no gaps: every expected candle of 1 series is in lake/raw\n"
    # A series the lake has no candles of is not called complete.
    assert main(["gaps", "--symbols", "ETHUSDT", "--interval", "1h"]) == 0
    assert capsys.readouterr().out == (
        f"no candles in {lake_dir / 'raw'} for the series asked; give --start and --end "
        "to list the whole range as missing\n"
    )


def test_cli_backfill_lands_an_explicit_range(replay, lake_dir, capsys):
    args = [
        "backfill",
        "--symbols",
        "ETHUSDT",
        "--interval",
        "1h",
        "--market",
        "usdm",
        "--start",
        "2025-10-01",
        "--end",
        "2025-10-02",
        "--no-validate",
    ]
    assert main(args) == 0
    frame = landed(lake_dir)
    assert len(frame) == 24 and set(frame["market"]) == {"usdm"}
    assert main([*args[:-1], "--symbols", "NOPEUSDT", "--no-validate"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: no klines landed: NOPEUSDT 1h (usdm): Binance rejected usdm klines NOPEUSDT 1h "
        "from 2025-10-01 00:00:00: Invalid symbol. (code -1121, HTTP 400)"
    ]


def test_cli_backfill_waits_out_a_429_whose_body_is_a_json_string(replay, lake_dir, capsys):
    """A proxy's 429 with the body "Too many requests" (JSON, not an object) is waited out and
    retried like Binance's own 429, not reported as python-binance's AttributeError."""
    replay.faults.append((429, {"Retry-After": "1"}, "Too many requests"))
    args = ["backfill", "--symbols", "ETHUSDT", "--interval", "1h", "--start", "2025-10-01"]
    assert main([*args, "--end", "2025-10-02", "--no-validate"]) == 0
    assert capsys.readouterr().err == ""
    assert len(landed(lake_dir)) == 24
    assert [p for p, _ in replay.requests if p.endswith("/klines")] == ["/api/v3/klines"] * 2
