"""The trade collector against a local Binance replay: websocket streams plus REST aggTrades."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
from websockets.asyncio.server import serve

from flows.settings import load_settings
from flows.sources.trades_stream import TradeCollector

pytestmark = pytest.mark.timeout(120)

START_MS = 1_763_769_600_000  # 2025-11-22 00:00:00 UTC


def make_trades(symbol: str, first_id: int, count: int) -> list[dict]:
    """REST-shaped aggTrades (Binance docs: a, p, q, f, l, T, m, M), 10 ms apart."""
    trades = []
    for i in range(count):
        trade_id = first_id + i
        trades.append(
            {
                "a": trade_id,
                "p": f"{100 + (i % 17) * 0.5:.8f}",
                "q": f"{0.001 * (1 + i % 5):.8f}",
                "f": trade_id * 2,
                "l": trade_id * 2 + i % 2,
                "T": START_MS + i * 10,
                "m": i % 3 == 0,
                "M": True,
            }
        )
    return trades


def ws_message(symbol: str, trade: dict, event_lag_ms: int = 3) -> str:
    """A combined-stream aggTrade message exactly as Binance sends it."""
    data = {"e": "aggTrade", "E": trade["T"] + event_lag_ms, "s": symbol, **trade}
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data})


class ReplayServer:
    """A websocket server (one script per connection) and a REST aggTrades server on 127.0.0.1.

    Each connection sends its script; an entry "DROP" aborts the TCP connection there (a
    network failure, no close frame). A script that ends without DROP pings the client and
    records the pong, which proves every message before it reached the client's socket.
    """

    def __init__(self, history: dict[str, list[dict]], scripts: list[list[str]]) -> None:
        self.history = history
        self.scripts = scripts
        self.connections = 0
        self.paths: list[str] = []
        self.pongs = 0
        self.delivered = [threading.Event() for _ in scripts]
        self.rest_calls: list[dict[str, str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_ws, daemon=True)
        self._rest = ThreadingHTTPServer(("127.0.0.1", 0), self._rest_handler())
        self._rest_thread = threading.Thread(target=self._rest.serve_forever, daemon=True)

    def __enter__(self) -> ReplayServer:
        self._rest_thread.start()
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        self._rest.shutdown()
        self._rest.server_close()

    @property
    def ws_root(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def rest_root(self) -> str:
        return f"http://127.0.0.1:{self._rest.server_address[1]}/api"

    def _run_ws(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            self.ws_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopped.wait()

    async def _handler(self, ws) -> None:
        number = self.connections
        self.connections += 1
        self.paths.append(ws.request.path)
        script = self.scripts[number] if number < len(self.scripts) else []
        for message in script:
            if message == "DROP":
                ws.transport.abort()
                return
            await ws.send(message)
        await (await ws.ping())
        self.pongs += 1
        if number < len(self.delivered):
            self.delivered[number].set()
        await self._stopped.wait()

    def _rest_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.rest_calls.append({"path": url.path, **query})
                if url.path != "/api/v3/aggTrades" or query.get("symbol") not in server.history:
                    body, status = b'{"code": -1121, "msg": "Invalid symbol."}', 400
                else:
                    from_id, limit = int(query["fromId"]), int(query.get("limit", 500))
                    page = [t for t in server.history[query["symbol"]] if t["a"] >= from_id]
                    body, status = json.dumps(page[:limit]).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-MBX-USED-WEIGHT-1M", "4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def lake_trades(lake_dir: Path) -> list[tuple]:
    files = Path(lake_dir, "raw", "binance", "trades").glob("symbol=*/date=*/*.parquet")
    if not list(files):
        return []
    with duckdb.connect() as con:
        return con.execute(
            "select symbol, agg_trade_id, origin from read_parquet(?, hive_partitioning=false) "
            "order by symbol, agg_trade_id",
            [str(Path(lake_dir, "raw", "binance", "trades", "**", "*.parquet"))],
        ).fetchall()


def ids_of(rows: list[tuple], symbol: str) -> list[int]:
    return [row[1] for row in rows if row[0] == symbol]


def collector_for(server: ReplayServer, lake_dir: Path, symbols: list[str], **options):
    settings = load_settings(lake_dir=lake_dir, symbols=",".join(symbols))
    return TradeCollector(
        settings, ws_root=server.ws_root, rest_url=server.rest_root, max_backoff=0.2, **options
    )


async def wait_until(condition, what: str, limit: float = 60.0) -> None:
    """Wait for a state, not a time: the limit only turns a hang into a readable failure."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        await asyncio.sleep(0.02)


def collect(collector: TradeCollector, until, what: str):
    async def scenario():
        run = asyncio.create_task(collector.run())
        await wait_until(until, what)
        collector.request_stop()
        return await run

    return asyncio.run(scenario())


def all_landed(collector: TradeCollector, expected: dict[str, list[int]]):
    return lambda: all(collector.landed[s].runs == [(ids[0], ids[-1])] for s, ids in expected.items())


def test_normal_flow_lands_every_trade_exactly_once(lake_dir: Path) -> None:
    btc, eth = make_trades("BTCUSDT", 5_000, 300), make_trades("ETHUSDT", 90_000, 200)
    script = [ws_message("BTCUSDT", t) for t in btc[:200]]
    for b, e in zip(btc[200:], eth[:100], strict=True):  # the two streams interleave
        script += [ws_message("BTCUSDT", b), ws_message("ETHUSDT", e)]
    script += [ws_message("ETHUSDT", t) for t in eth[100:]]
    with ReplayServer({"BTCUSDT": btc, "ETHUSDT": eth}, [script]) as server:
        collector = collector_for(server, lake_dir, ["BTCUSDT", "ETHUSDT"], flush_trades=120)
        stats = collect(collector, server.delivered[0].is_set, "all messages delivered")
        paths, rest_calls, pongs = server.paths, server.rest_calls, server.pongs

    rows = lake_trades(lake_dir)
    assert ids_of(rows, "BTCUSDT") == list(range(5_000, 5_300))
    assert ids_of(rows, "ETHUSDT") == list(range(90_000, 90_200))
    assert {row[2] for row in rows} == {"ws"}
    assert paths == ["/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"]
    assert pongs == 1  # the client answered the server's ping
    assert rest_calls == []
    assert (stats.received, stats.landed, stats.duplicates, stats.malformed) == (500, 500, 0, 0)
    assert stats.flushes >= 2


def test_disconnect_mid_stream_refills_missed_trades_by_id_from_rest(lake_dir: Path) -> None:
    btc = make_trades("BTCUSDT", 1_000_000, 500)
    first = [ws_message("BTCUSDT", t) for t in btc[:200]] + ["DROP"]
    # Trades 200..349 happen while the client is away; the new connection starts at 350.
    second = [ws_message("BTCUSDT", t) for t in btc[350:]]
    with ReplayServer({"BTCUSDT": btc}, [first, second]) as server:
        collector = collector_for(server, lake_dir, ["BTCUSDT"], flush_trades=1000)
        expected = {"BTCUSDT": [t["a"] for t in btc]}
        stats = collect(collector, all_landed(collector, expected), "every trade landed")
        rest_calls = server.rest_calls

    rows = lake_trades(lake_dir)
    assert ids_of(rows, "BTCUSDT") == list(range(1_000_000, 1_000_500))
    origins = {row[1]: row[2] for row in rows}
    assert {origins[i] for i in range(1_000_200, 1_000_350)} == {"rest"}
    assert {origins[i] for i in range(1_000_000, 1_000_200)} == {"ws"}
    assert stats.reconnects == 1
    assert rest_calls[0] == {
        "path": "/api/v3/aggTrades",
        "symbol": "BTCUSDT",
        "fromId": "1000200",
        "limit": "1000",
    }


def test_duplicate_and_out_of_order_messages_land_once(lake_dir: Path) -> None:
    btc = make_trades("BTCUSDT", 700, 60)
    order = list(range(0, 10)) + [12, 10, 11, 11, 5]  # swapped, repeated, repeated from before
    order += list(range(13, 30)) + [31, 30, 29, 0]  # a repeat after flushes
    order += list(range(32, 45)) + list(range(46, 60)) + [45, 59, 59]  # 45 arrives late
    script = [ws_message("BTCUSDT", btc[i]) for i in order if i != 40]  # 40 never comes by ws
    with ReplayServer({"BTCUSDT": btc}, [script]) as server:
        collector = collector_for(
            server, lake_dir, ["BTCUSDT"], flush_trades=8, flush_seconds=0.1, gap_grace_seconds=0.5
        )
        expected = {"BTCUSDT": [t["a"] for t in btc]}
        stats = collect(collector, all_landed(collector, expected), "every trade landed")

    rows = lake_trades(lake_dir)
    assert ids_of(rows, "BTCUSDT") == list(range(700, 760))
    assert {row[2] for row in rows if row[1] == 740} == {"rest"}
    assert stats.duplicates >= len(order) - 1 - 59  # every repeat was dropped, none landed
    assert stats.gap_fills == 1


def test_malformed_json_and_unknown_events_are_counted_not_fatal(lake_dir: Path) -> None:
    btc = make_trades("BTCUSDT", 1, 20)
    kline = {"e": "kline", "E": START_MS, "s": "BTCUSDT", "k": {"t": START_MS, "i": "1m"}}
    bad_price = {**btc[7], "p": "-3.5"}
    no_price = {k: v for k, v in btc[9].items() if k != "p"}
    script = [ws_message("BTCUSDT", t) for t in btc[:7]]
    script += [
        "not json {",
        '{"result": null, "id": 1}',
        json.dumps({"stream": "btcusdt@kline_1m", "data": kline}),
        json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "t": 1}}),
        "[1, 2, 3]",
        ws_message("BTCUSDT", bad_price),
        ws_message("BTCUSDT", btc[8]),
        ws_message("BTCUSDT", no_price),
        ws_message("DOGEUSDT", make_trades("DOGEUSDT", 5, 1)[0]),
    ]
    script += [ws_message("BTCUSDT", t) for t in btc[10:]]
    with ReplayServer({"BTCUSDT": btc}, [script]) as server:
        collector = collector_for(server, lake_dir, ["BTCUSDT"], flush_seconds=0.1, gap_grace_seconds=0.3)
        expected = {"BTCUSDT": [t["a"] for t in btc]}
        stats = collect(collector, all_landed(collector, expected), "every trade handled")

    rows = lake_trades(lake_dir)
    # 8 went to quarantine; 10 (no price on the stream) was fetched by id from REST.
    assert ids_of(rows, "BTCUSDT") == [i for i in range(1, 21) if i != 8]
    assert {row[2] for row in rows if row[1] == 10} == {"rest"}
    assert (stats.malformed, stats.unknown_events, stats.control_messages) == (3, 2, 1)
    assert stats.quarantined == 2
    reasons = {
        json.loads(p.read_text())["failed_expectations"][0]["expectation"]: p.parent.parent.name
        for p in Path(lake_dir, "quarantine", "binance", "trades").glob("*/*/*.json")
    }
    assert reasons == {
        "price not a positive number": "symbol=BTCUSDT",
        "symbol not subscribed": "symbol=_invalid",
    }


def test_restart_refills_what_a_crash_lost_from_the_lake_max_id(lake_dir: Path) -> None:
    btc = make_trades("BTCUSDT", 42_000, 300)
    before = [ws_message("BTCUSDT", t) for t in btc[:100]]
    with ReplayServer({"BTCUSDT": btc[:100]}, [before]) as server:
        collector = collector_for(server, lake_dir, ["BTCUSDT"])
        collect(collector, server.delivered[0].is_set, "first run delivered")
    assert ids_of(lake_trades(lake_dir), "BTCUSDT") == list(range(42_000, 42_100))

    # 100..199 were in a crashed buffer; the new run's stream starts at 200.
    after = [ws_message("BTCUSDT", t) for t in btc[200:]]
    with ReplayServer({"BTCUSDT": btc}, [after]) as server:
        collector = collector_for(server, lake_dir, ["BTCUSDT"])
        collect(collector, lambda: collector.landed["BTCUSDT"].runs == [(0, 42_299)], "refilled")
        rest_calls = server.rest_calls

    assert ids_of(lake_trades(lake_dir), "BTCUSDT") == list(range(42_000, 42_300))
    assert rest_calls[0]["fromId"] == "42100"


def test_sigterm_during_a_batch_flushes_the_buffer_before_exit(lake_dir: Path) -> None:
    btc, eth = make_trades("BTCUSDT", 10, 200), make_trades("ETHUSDT", 20, 200)
    script = [
        ws_message(s, t)
        for pair in zip(btc, eth, strict=True)
        for s, t in zip(("BTCUSDT", "ETHUSDT"), pair, strict=True)
    ]
    with ReplayServer({"BTCUSDT": btc, "ETHUSDT": eth}, [script]) as server:
        env = {
            **os.environ,
            "LAKEHOUSE_LAKE_DIR": str(lake_dir),
            "LAKEHOUSE_BINANCE_WS_URL": server.ws_root,
            "LAKEHOUSE_BINANCE_API_URL": server.rest_root,
            "LAKEHOUSE_STREAM_FLUSH_SECONDS": "3600",
            "LAKEHOUSE_STREAM_FLUSH_TRADES": "150",
        }
        command = [
            sys.executable,
            "-m",
            "flows.cli",
            "stream",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--duration",
            "300",
        ]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.delivered[0].wait(60), "the collector never received the stream"
            # 400 trades with flushes at 150: the last 100 are only in the buffer now.
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    rows = lake_trades(lake_dir)
    assert ids_of(rows, "BTCUSDT") == list(range(10, 210))
    assert ids_of(rows, "ETHUSDT") == list(range(20, 220))
    assert "landed" in out and "400" in out


@pytest.mark.timeout(600)  # a dbt build (project parse included) on a shared 2-core machine
def test_trade_marts_rebuild_the_exchange_kline_for_a_fully_streamed_minute(
    lake_dir: Path,
) -> None:
    import pandas as pd

    from flows.lake import land_frame
    from flows.schemas import KLINE_KEY, cast_klines
    from flows.transform import build_marts, warehouse_path

    minute = 1_790_000_040_000 - 1_790_000_040_000 % 60_000  # a minute boundary in 2026
    times = [minute - 30_000 + 1_000 * i for i in range(150)]  # 00:30 before .. 00:29 after
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT")
    collector = TradeCollector(settings)
    rows = [
        (
            "BTCUSDT",
            500 + i,
            f"{100 + i % 7}",
            f"{0.5 + i % 3}",
            900 + 2 * i,
            901 + 2 * i,
            t,
            i % 4 == 0,
            t + 3,
            t + 9,
            "ws" if i % 10 else "rest",
        )
        for i, t in enumerate(times)
    ]
    collector.land_rows(rows)
    inside = [r for r in rows if minute <= r[6] < minute + 60_000]
    prices = [float(r[2]) for r in inside]
    volumes = [float(r[3]) for r in inside]
    kline = {
        "market": "spot",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": minute,
        "close_time": minute + 59_999,
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "close": prices[-1],
        "volume": sum(volumes),
        "quote_volume": sum(p * q for p, q in zip(prices, volumes, strict=True)),
        "num_trades": 2 * len(inside),
        "taker_buy_base_volume": sum(q for r, q in zip(inside, volumes, strict=True) if not r[7]),
        "taker_buy_quote_volume": 0.0,
    }
    land_frame(
        cast_klines(pd.DataFrame([kline])),
        lake_dir,
        source="binance",
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
        zone="raw",
    )

    # A flush caught mid-write by the build: the source's glob must not read the temp file.
    partition = next(Path(lake_dir, "raw", "binance", "trades").glob("symbol=*/date=*"))
    (partition / ".tmp-0123-half-written.parquet").write_bytes(b"PAR1")
    build_marts(settings, select="+fct_trade_kline_reconciliation +fct_trade_latency_minutely")

    with duckdb.connect(str(warehouse_path(settings)), read_only=True) as con:
        reconciled = con.execute(
            "select epoch_ms(opened_at), is_complete, has_kline, is_matched, trade_count_diff "
            "from marts.fct_trade_kline_reconciliation order by opened_at"
        ).fetchall()
        latency = con.execute(
            "select sum(agg_trade_count), sum(gap_filled_trade_count) from marts.fct_trade_latency_minutely"
        ).fetchone()
        bars = con.execute(
            "select bar_interval, count(*) from marts.fct_trade_bars group by 1 order by 1"
        ).fetchall()
    assert reconciled == [
        (minute - 60_000, False, False, None, None),
        (minute, True, True, True, 0),
        (minute + 60_000, False, False, None, None),
    ]
    assert latency == (150, 15)
    assert bars == [("1m", 3), ("1s", 150), ("5m", len({t // 300_000 for t in times}))]


@pytest.mark.timeout(600)  # the session's Prefect harness may start here
def test_prefect_trade_stream_flow_lands_the_stream_and_reports_counters(
    lake_dir: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness
) -> None:
    from flows.stream_flow import trade_stream

    btc = make_trades("BTCUSDT", 3_000, 50)
    with ReplayServer({"BTCUSDT": btc}, [[ws_message("BTCUSDT", t) for t in btc]]) as server:
        monkeypatch.setenv("LAKEHOUSE_BINANCE_WS_URL", server.ws_root)
        monkeypatch.setenv("LAKEHOUSE_BINANCE_API_URL", server.rest_root)
        counters = trade_stream(symbols=["BTCUSDT"], duration=8.0)
        assert server.delivered[0].is_set()
    assert ids_of(lake_trades(lake_dir), "BTCUSDT") == list(range(3_000, 3_050))
    assert (counters["landed"], counters["malformed"], counters["connects"]) == (50, 0, 1)


def test_a_stream_that_never_connects_fails_in_one_line_and_lands_nothing(lake_dir: Path) -> None:
    import socket

    from flows.errors import LakehouseError
    from flows.sources.trades_stream import run_stream

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT")
    with pytest.raises(LakehouseError) as failure:
        run_stream(
            settings, duration=1.5, ws_root=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}"
        )
    message = str(failure.value)
    assert message.startswith(
        f"could not connect to ws://127.0.0.1:{port}/stream?streams=btcusdt@aggTrade in 1.5 s (ClientConnectorError: "
    )
    assert message.endswith(
        "nothing was landed. Check the network, or LAKEHOUSE_BINANCE_WS_URL for a mirror or a local replay server"
    )
    assert "\n" not in message
    assert not (lake_dir / "raw").exists() or not list((lake_dir / "raw").rglob("*.parquet"))
