"""The trade collector's pieces without a network: id ranges, parsing, the inline gate, landing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import responses

from flows.cli import main
from flows.errors import LakehouseError
from flows.settings import load_settings
from flows.sources.trades_stream import (
    AggTradesClient,
    IdRanges,
    TradeCollector,
    lake_max_ids,
    parse_frames,
    stream_url,
    validate_trades,
)

T0 = 1_763_769_600_000  # 2025-11-22 00:00:00 UTC


def row(trade_id: int, symbol: str = "BTCUSDT", price: object = "100.5", origin: str = "ws"):
    event = T0 + trade_id + 5 if origin == "ws" else None
    return (
        symbol,
        trade_id,
        price,
        "0.25",
        trade_id * 3,
        trade_id * 3 + 1,
        T0 + trade_id,
        trade_id % 2 == 0,
        event,
        T0 + trade_id + 9,
        origin,
    )


def message(trade_id: int, symbol: str = "BTCUSDT") -> bytes:
    data = {
        "e": "aggTrade",
        "E": T0 + 5,
        "s": symbol,
        "a": trade_id,
        "p": "1.5",
        "q": "2",
        "f": 1,
        "l": 2,
        "T": T0,
        "m": True,
        "M": True,
    }
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data}).encode()


@pytest.fixture
def collector(lake_dir: Path) -> TradeCollector:
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT,ETHUSDT")
    return TradeCollector(settings)


def lake_ids(lake_dir: Path) -> list[int]:
    files = sorted(Path(lake_dir, "raw", "binance", "trades").glob("*/*/*.parquet"))
    return sorted(i for f in files for i in pq.read_table(f)["agg_trade_id"].to_pylist())


def test_id_ranges_merge_adjacent_runs_and_report_the_first_hole() -> None:
    ranges = IdRanges()
    ranges.add(np.array([5, 3, 4, 9, 10]))
    assert ranges.runs == [(3, 5), (9, 10)]
    assert ranges.first_hole() == (6, 8)
    assert ranges.contains(np.array([2, 3, 5, 6, 9, 11])).tolist() == [
        False,
        True,
        True,
        False,
        True,
        False,
    ]
    ranges.add(np.array([6, 7, 8]))
    assert ranges.runs == [(3, 10)]
    assert ranges.first_hole() is None
    assert ranges.top == 10


def test_stream_url_combines_lowercase_aggtrade_streams() -> None:
    assert stream_url("wss://stream.binance.com:9443/", ["BTCUSDT", "ETHUSDT"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    )


def test_usdm_collector_uses_futures_roots(lake_dir: Path) -> None:
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT", market="usdm")
    collector = TradeCollector(settings)
    assert collector.url == "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade"
    assert collector.rest.url == "https://fapi.binance.com/fapi/v1/aggTrades"


def test_odd_frames_are_counted_and_the_trades_around_them_still_land(
    collector: TradeCollector, lake_dir: Path
) -> None:
    frames = [
        message(1),
        b'{"data": {"e": "aggTrade", "s": "BTCUSDT"}}',  # no id
        b"{oops",
        b"[1, 2]",
        b'{"stream": "btcusdt@depth", "data": {"e": "depthUpdate"}}',
        b'{"result": null, "id": 7}',
        message(2, "ETHUSDT"),
    ]
    result = collector.land_buffer(frames, [T0 + 10] * len(frames), [])
    stats = collector.stats
    assert (stats.received, stats.malformed, stats.unknown_events, stats.control_messages) == (
        2, 3, 1, 1,
    )  # fmt: skip
    assert result.rows == 2
    assert lake_ids(lake_dir) == [1, 2]


def test_clean_frames_take_the_bulk_path_with_the_same_values_as_the_careful_one() -> None:
    frames = [message(7), message(8, "ETHUSDT")]
    bulk = parse_frames(frames, [T0 + 10, T0 + 11], ["BTCUSDT", "ETHUSDT"])
    assert bulk is not None
    assert bulk["agg_trade_id"].tolist() == [7, 8]
    assert bulk["price"].tolist() == [1.5, 1.5] and bulk["quantity"].tolist() == [2.0, 2.0]
    assert bulk["event_time"].tolist() == [T0 + 5, T0 + 5]
    assert bulk["received_at"].tolist() == [T0 + 10, T0 + 11]
    assert bulk["is_buyer_maker"].tolist() == [True, True]
    assert parse_frames([*frames, b"{oops"], [T0] * 3, ["BTCUSDT", "ETHUSDT"]) is None
    assert parse_frames(frames, [T0] * 2, ["BTCUSDT"]) is None  # ETHUSDT not subscribed


def test_validate_trades_types_good_rows_and_gives_each_bad_row_its_reasons() -> None:
    rows = [row(1), row(2, price="-1"), row(3, symbol="DOGEUSDT"), row(4, price="abc"), row(5)]
    rows[4] = rows[4][:7] + ("yes",) + rows[4][8:]
    frame = pd.DataFrame.from_records(
        rows,
        columns=[
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
        ],
    )
    trades, problems = validate_trades(frame, "spot", ["BTCUSDT"])
    assert trades["agg_trade_id"].tolist() == [1]
    assert (trades["price"].tolist(), trades["trade_time"].tolist()) == ([100.5], [T0 + 1])
    assert trades["event_time"].tolist() == [T0 + 6]
    assert dict(zip(problems["raw_agg_trade_id"], problems["reason"], strict=True)) == {
        "2": "price not a positive number",
        "3": "symbol not subscribed",
        "4": "price not a positive number",
        "5": "is_buyer_maker not a boolean",
    }


def test_land_rows_writes_raw_partitions_with_lineage_and_latency_columns(
    collector: TradeCollector, lake_dir: Path
) -> None:
    assert not Path(lake_dir, "warehouse").exists()
    result = collector.land_rows([row(1), row(2), row(3, "ETHUSDT"), row(4, origin="rest")])
    assert result.rows == 4
    assert Path(lake_dir, "warehouse").is_dir()  # `cd dbt_project && dbt build` can open its file
    paths = sorted(r.path(lake_dir, "raw").relative_to(lake_dir).parent.as_posix() for r in result.refs)
    assert paths == [
        "raw/binance/trades/symbol=BTCUSDT/date=2025-11-22",
        "raw/binance/trades/symbol=ETHUSDT/date=2025-11-22",
    ]
    table = pq.read_table(result.refs[0].path(lake_dir, "raw")).to_pandas()
    assert table["agg_trade_id"].tolist() == [1, 2, 4]
    assert table["origin"].tolist() == ["ws", "ws", "rest"]
    assert table["event_time"].isna().tolist() == [False, False, True]
    assert table["received_at"].notna().all() and table["ingested_at"].notna().all()
    assert set(table["source"]) == {"binance"} and set(table["market"]) == {"spot"}
    assert result.event_ms.tolist() == [T0 + 6, T0 + 7, T0 + 8]


def test_same_range_landed_again_replaces_one_file(lake_dir: Path) -> None:
    settings = load_settings(lake_dir=lake_dir, symbols="BTCUSDT")
    first = TradeCollector(settings).land_rows([row(i) for i in range(10, 20)])
    again = TradeCollector(settings).land_rows([row(i) for i in range(10, 20)])
    assert [r.batch_id for r in first.refs] == [r.batch_id for r in again.refs]
    assert lake_ids(lake_dir) == list(range(10, 20))


def test_trades_already_landed_or_repeated_in_a_batch_are_dropped(
    collector: TradeCollector, lake_dir: Path
) -> None:
    collector.land_rows([row(1), row(2), row(2)])
    result = collector.land_rows([row(2, origin="rest"), row(3, origin="rest"), row(3)])
    assert lake_ids(lake_dir) == [1, 2, 3]
    assert collector.stats.duplicates == 3
    landed = pq.read_table(result.refs[0].path(lake_dir, "raw")).to_pandas()
    assert landed["origin"].tolist() == ["ws"]  # the websocket copy wins: it has the event time


def test_bad_rows_go_to_quarantine_with_a_reason_and_are_not_refetched(
    collector: TradeCollector, lake_dir: Path
) -> None:
    collector.land_rows([row(1), row(2, price="0"), row(3)])
    reason_files = list(Path(lake_dir, "quarantine", "binance", "trades").glob("*/*/*.json"))
    assert len(reason_files) == 1
    reason = json.loads(reason_files[0].read_text())
    assert reason["failed_expectations"] == [
        {"expectation": "price not a positive number", "rows": 1, "sample_values": ["2"]}
    ]
    assert reason["row_reasons"] == {"0": ["price not a positive number"]}
    bad = pq.read_table(reason_files[0].with_suffix(".parquet")).to_pandas()
    assert bad["raw_agg_trade_id"].tolist() == ["2"]
    assert lake_ids(lake_dir) == [1, 3]
    assert collector.landed["BTCUSDT"].runs == [(1, 3)]  # no hole left for the gap fill


def test_lake_max_ids_reads_the_newest_day_per_symbol_and_market(
    collector: TradeCollector, lake_dir: Path
) -> None:
    later = [row(50)[:6] + (T0 + 86_400_000,) + row(50)[7:]]
    collector.land_rows([row(1), row(7), row(9, "ETHUSDT")])
    collector.land_rows(later)
    newest = Path(lake_dir, "raw", "binance", "trades", "symbol=BTCUSDT", "date=2025-11-23")
    (newest / ".tmp-crashed-mid-write.parquet").write_bytes(b"PAR1 half a file")
    assert lake_max_ids(lake_dir, "spot", ["BTCUSDT", "ETHUSDT", "SOLUSDT"]) == {
        "BTCUSDT": 50,
        "ETHUSDT": 9,
    }
    assert lake_max_ids(lake_dir, "usdm", ["BTCUSDT"]) == {}


@responses.activate
def test_rest_client_waits_out_429_then_returns_the_page() -> None:
    url = "http://replay.test/api/v3/aggTrades"
    responses.get(url, status=429, headers={"Retry-After": "0"}, json={"code": -1003})
    responses.get(url, json=[{"a": 1}])
    client = AggTradesClient("http://replay.test/api/", "spot")
    assert client.fetch("BTCUSDT", 1) == [{"a": 1}]
    assert responses.calls[1].request.params == {"symbol": "BTCUSDT", "fromId": "1", "limit": "1000"}


@responses.activate
def test_rest_client_turns_a_client_error_into_one_line() -> None:
    responses.get(
        "http://replay.test/fapi/v1/aggTrades", status=400, json={"code": -1121, "msg": "Invalid symbol."}
    )
    client = AggTradesClient("http://replay.test/fapi", "usdm")
    with pytest.raises(LakehouseError, match="answered 400"):
        client.fetch("NOPE", 1)


def test_cli_stream_rejects_bad_options_in_one_line(lake_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stream", "--symbols", "BTCUSDT", "--duration", "0"]) == 1
    assert "--duration 0.0 must be a positive number" in capsys.readouterr().err
    assert main(["stream", "--symbols", "BTCUSDT", "--market", "coinm"]) == 1
    assert "invalid setting market" in capsys.readouterr().err


def test_a_websocket_root_that_is_not_ws_is_refused_in_one_line(
    lake_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("LAKEHOUSE_BINANCE_WS_URL", "https://stream.binance.com")
    assert main(["stream", "--symbols", "BTCUSDT", "--duration", "1"]) == 1
    assert "set LAKEHOUSE_BINANCE_WS_URL" in capsys.readouterr().err
