"""Trade stream benchmark: trades/s landed and event-to-persist latency against a local replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from flows.settings import load_settings
from flows.sources.trades_stream import FlushResult, TradeCollector

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT",
           "ADAUSDT", "DOGEUSDT", "AVAXUSDT", "DOTUSDT", "LINKUSDT"]  # fmt: skip
MESSAGE = (
    '{"stream":"%s@aggTrade","data":{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%.2f",'
    '"q":"%.5f","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}'
)


def _frame(payload: bytes) -> bytes:
    """An unmasked server text frame (RFC 6455 5.2); payloads here are always under 64 KiB."""
    if len(payload) < 126:
        return bytes((0x81, len(payload))) + payload
    return bytes((0x81, 126)) + len(payload).to_bytes(2, "big") + payload


def _serve(port: multiprocessing.Queue, rate: float | None, seconds: float) -> None:
    """Send aggTrades round-robin over the symbols at `rate` per second (None: as fast as TCP
    takes them), stamping E with the send time, as Binance does, so latency includes queueing.

    Frames are written straight to the socket after the websockets handshake: the server must
    cost far less than the collector, as Binance's does, or the benchmark measures the server.
    """
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        ids = dict.fromkeys(SYMBOLS, 1)
        start = time.monotonic()
        sent = 0
        transport = ws.transport
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed) - sent if rate else 2000
            if due <= 0 or transport.get_write_buffer_size() > 2**20:
                await asyncio.sleep(0.001)
                continue
            now = time.time_ns() // 1_000_000
            frames = []
            for _ in range(min(due, 5000)):
                symbol = SYMBOLS[sent % len(SYMBOLS)]
                trade_id = ids[symbol]
                ids[symbol] = trade_id + 1
                text = MESSAGE % (
                    symbol.lower(),
                    now,
                    symbol,
                    trade_id,
                    100 + trade_id % 50,
                    0.001 * (1 + trade_id % 7),
                    trade_id,
                    trade_id,
                    now - 1,
                    "true" if trade_id % 2 else "false",
                )
                frames.append(_frame(text.encode()))
                sent += 1
            transport.write(b"".join(frames))
            await asyncio.sleep(0)
        await asyncio.sleep(30)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
            port.put(server.sockets[0].getsockname()[1])
            await asyncio.sleep(seconds + 30)

    asyncio.run(main())


def bench(rate: float | None, seconds: float = 15.0, flush_seconds: float = 1.0) -> dict:
    """One run: a replay process sends for `seconds`; the collector lands into a temporary lake."""
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, rate, seconds), daemon=True)
    server.start()
    latencies: list[np.ndarray] = []
    landed_at: list[tuple[int, int]] = []

    def on_flush(result: FlushResult) -> None:
        latencies.append(result.persisted_ms - result.event_ms)
        landed_at.append((result.persisted_ms, result.rows))

    try:
        port = ports.get(timeout=30)
        with tempfile.TemporaryDirectory() as lake:
            settings = load_settings(lake_dir=Path(lake), symbols=",".join(SYMBOLS))
            collector = TradeCollector(
                settings,
                ws_root=f"ws://127.0.0.1:{port}",
                rest_url="http://127.0.0.1:9/api",
                flush_seconds=flush_seconds,
                on_flush=on_flush,
            )
            cpu = time.process_time()
            stats = asyncio.run(collector.run(duration=seconds + 1))
            cpu = time.process_time() - cpu
            files = sum(1 for _ in Path(lake, "raw").rglob("*.parquet"))
    finally:
        server.terminate()
        server.join()
    latency = np.concatenate(latencies) if latencies else np.empty(0)
    # Sustained rate: every landed trade over the span from the first trade sent to the last
    # file persisted, so a backlog still being worked off counts against it.
    events = [x for x in latencies if len(x)]
    span = (
        (
            max(t for t, _ in landed_at)
            - min(int((t - lat).min()) for (t, _), lat in zip(landed_at, latencies, strict=True) if len(lat))
        )
        / 1000
        if events
        else 0
    )
    return {
        "offered_per_s": rate or "max",
        "landed": stats.landed,
        "landed_per_s": round(stats.landed / span) if span > 0 else None,
        "cpu_us_per_trade": round(cpu / max(stats.landed, 1) * 1e6, 1),
        "p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
        "p99_ms": float(np.percentile(latency, 99)) if len(latency) else None,
        "max_ms": float(latency.max()) if len(latency) else None,
        "files": files,
        "flushes": stats.flushes,
        "duplicates": stats.duplicates,
        "load_average_1m": round(os.getloadavg()[0], 1),  # other processes on the same cores
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=20_000.0, help="offered trades/s")
    args = parser.parse_args(argv)
    for rate in (None, args.rate, 1.5 * args.rate):
        print(json.dumps(bench(rate, args.seconds)))


if __name__ == "__main__":
    main()
