"""Gate 1: each kind of bad kline, user and transaction row is quarantined or flagged as the suite says."""

from __future__ import annotations

import gc
import json
import weakref
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.lake import land_frame
from flows.quality import release_memory, validate_raw
from flows.schemas import KLINE_KEY, cast_klines

T0 = pd.Timestamp("2026-10-01", tz="UTC")


def klines(n: int = 120, symbol: str = "BTCUSDT", interval: str = "1m", start=T0, step=None) -> pd.DataFrame:
    """n valid candles with a gentle random walk."""
    step = step or pd.Timedelta(minutes=1)
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[100.0, close[:-1]]
    opens = pd.date_range(start, periods=n, freq=step)
    return cast_klines(
        pd.DataFrame(
            {
                "market": "spot",
                "symbol": symbol,
                "interval": interval,
                "open_time": opens,
                "close_time": opens + step - pd.Timedelta(milliseconds=1),
                "open": open_,
                "high": np.maximum(open_, close) * 1.001,
                "low": np.minimum(open_, close) * 0.999,
                "close": close,
                "volume": 10.0,
                "quote_volume": 1000.0,
                "num_trades": 5,
                "taker_buy_base_volume": 4.0,
                "taker_buy_quote_volume": 400.0,
            }
        )
    )


def land_klines(lake_dir, frame: pd.DataFrame, source: str = "binance"):
    return land_frame(
        frame,
        lake_dir,
        source=source,
        dataset="klines",
        key_columns=KLINE_KEY,
        date_column="open_time",
        partition_columns=("symbol", "interval"),
    )


def raw_rows(lake_dir, dataset: str = "klines") -> pd.DataFrame:
    files = sorted((lake_dir / "raw").glob(f"*/{dataset}/**/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pq.read_table(f, partitioning=None).to_pandas() for f in files], ignore_index=True)


def strict_json(text: str) -> object:
    """Parse as strict parsers (jq, JavaScript) do: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def reasons(lake_dir) -> list[dict]:
    return [strict_json(p.read_text()) for p in sorted((lake_dir / "quarantine").rglob("*.json"))]


def quarantined_by(lake_dir) -> dict[str, int]:
    """Rows per failed expectation over every quarantine reason."""
    counts: dict[str, int] = {}
    for reason in reasons(lake_dir):
        for failure in reason["failed_expectations"]:
            counts[failure["expectation"]] = counts.get(failure["expectation"], 0) + failure["rows"]
    return counts


def rows_failing(counts: dict[str, int], fragment: str) -> int:
    """Rows failing the one expectation whose label contains fragment."""
    [label] = [label for label in counts if fragment in label]
    return counts[label]


def test_bad_kline_rows_are_quarantined_with_reasons_and_the_rest_accepted(settings, lake_dir):
    frame = klines(60)
    bad = {
        3: ("high", 0.5),  # high below open/close/low
        7: ("volume", -1.0),
        11: ("taker_buy_base_volume", 50.0),  # taker-buy above volume
        15: ("close_time", T0 + pd.Timedelta(minutes=15, seconds=30)),  # wrong close_time
    }
    for row, (column, value) in bad.items():
        frame.loc[row, column] = value
    frame.loc[20, "open_time"] = frame.loc[20, "open_time"] + pd.Timedelta(seconds=1)  # misaligned
    frame.loc[20, "close_time"] = frame.loc[20, "open_time"] + pd.Timedelta(milliseconds=59_999)
    frame.loc[25, "close"] = np.nan
    land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (54, 6)
    accepted = raw_rows(lake_dir)
    assert len(accepted) == 54
    bad_times = {frame.loc[i, "open_time"] for i in (3, 7, 11, 15, 20, 25)}
    assert not set(accepted["open_time"]) & bad_times
    assert list((lake_dir / "landing").rglob("*.parquet")) == []
    [reason] = reasons(lake_dir)
    assert reason["rows_quarantined"] == 6 and reason["rows_in_batch"] == 60
    assert not reason["whole_batch"]
    failed = quarantined_by(lake_dir)
    assert rows_failing(failed, "column_A=high, column_B=open") == 1
    assert rows_failing(failed, "column=volume, min_value") == 1
    assert rows_failing(failed, "column_A=volume, column_B=taker_buy_base_volume") == 2  # with row 7
    assert rows_failing(failed, "check__close_time_error_ms") == 1
    assert rows_failing(failed, "check__open_time_offset_ms") == 1
    assert failed["expect_column_values_to_not_be_null(column=close)"] == 1
    # Each failed expectation carries the offending values; the reason, when it was written.
    samples = {e["expectation"]: e["sample_values"] for e in reason["failed_expectations"]}
    assert samples["expect_column_values_to_be_between(column=volume, min_value=0.0)"] == [-1.0]
    # A non-finite value is written as a string, so the reason stays strict JSON.
    assert samples["expect_column_values_to_not_be_null(column=close)"] == ["NaN"]
    pair = next(v for k, v in samples.items() if "column_A=volume, column_B=taker_buy_base_volume" in k)
    assert sorted(map(tuple, pair)) == [(-1.0, 4.0), (10.0, 50.0)]
    for stamp in ("quarantined_at", "validated_at"):
        assert abs(datetime.now(UTC) - datetime.fromisoformat(reason[stamp])).total_seconds() < 120
    # The quarantined rows keep the raw schema, beside their reason.
    rows = pq.read_table(next((lake_dir / "quarantine").rglob("*.parquet")), partitioning=None)
    assert rows.num_rows == 6 and rows.schema.field("num_trades").type == "int64"


def test_exact_duplicates_collapse_and_conflicting_duplicates_are_quarantined(settings, lake_dir):
    frame = klines(30)
    copy = frame.iloc[[4]]
    conflict = frame.iloc[[9]].assign(volume=99.0, taker_buy_base_volume=1.0)
    land_klines(lake_dir, pd.concat([frame, copy, conflict], ignore_index=True))

    [result] = validate_raw(settings)

    assert result.duplicates_collapsed == 1
    assert (result.accepted, result.quarantined) == (29, 2)
    accepted = raw_rows(lake_dir)
    assert accepted["open_time"].is_unique and len(accepted) == 29
    assert frame.loc[9, "open_time"] not in set(accepted["open_time"])
    assert frame.loc[4, "open_time"] in set(accepted["open_time"])
    [reason] = reasons(lake_dir)
    assert sorted(reason["row_reasons"]) == ["0", "1"]
    assert reason["duplicates_collapsed"] == 1


def test_future_and_still_open_candles_are_quarantined(settings, lake_dir):
    now = pd.Timestamp(datetime.now(UTC)).floor("min")
    frame = klines(5, start=now + pd.Timedelta(minutes=-2))
    land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    # Candles opened 2 and 1 minutes ago are closed; the one open now and later ones are not.
    assert result.accepted == 2
    assert result.quarantined == 3
    assert "check__ms_closed_before_now" in ", ".join(result.failed_expectations)


def test_monthly_and_weekly_candles_follow_the_calendar(settings, lake_dir):
    months = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"], utc=True)
    monthly = klines(3, interval="1M")
    monthly["open_time"] = months.astype("datetime64[ms, UTC]")
    ends = pd.to_datetime(["2026-02-01", "2026-03-01", "2026-04-01"], utc=True)
    monthly["close_time"] = (ends - pd.Timedelta(milliseconds=1)).astype("datetime64[ms, UTC]")
    monthly.loc[2, "close_time"] = (
        monthly.loc[2, "open_time"] + pd.Timedelta(days=30) - pd.Timedelta(milliseconds=1)
    )
    weekly = klines(2, interval="1w", start=pd.Timestamp("2026-09-07", tz="UTC"), step=pd.Timedelta(weeks=1))
    tuesday = klines(
        1,
        symbol="ETHUSDT",
        interval="1w",
        start=pd.Timestamp("2026-09-08", tz="UTC"),
        step=pd.Timedelta(weeks=1),
    )
    land_klines(lake_dir, pd.concat([monthly, weekly, tuesday], ignore_index=True))

    [result] = validate_raw(settings)

    accepted = raw_rows(lake_dir)
    assert sorted(accepted["interval"] + accepted["open_time"].dt.strftime(" %Y-%m-%d")) == [
        "1M 2026-01-01",
        "1M 2026-02-01",
        "1w 2026-09-07",
        "1w 2026-09-14",
    ]
    assert result.quarantined == 2  # March has 31 days; weeks open on Mondays


def test_schema_break_quarantines_the_whole_batch_and_spares_its_neighbours(settings, lake_dir):
    land_klines(lake_dir, klines(10, symbol="BTCUSDT"))
    land_klines(lake_dir, klines(10, symbol="ETHUSDT").drop(columns=["num_trades"]))

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined, result.batches_quarantined) == (10, 10, 1)
    [reason] = reasons(lake_dir)
    assert reason["whole_batch"] and reason["partition"]["symbol"] == "ETHUSDT"
    [columns] = [
        f for f in reason["failed_expectations"] if "expect_table_columns_to_match_set" in f["expectation"]
    ]
    assert columns["sample_values"] == [{"missing": ["num_trades"]}]  # what broke, not only which rule
    assert set(raw_rows(lake_dir)["symbol"]) == {"BTCUSDT"}


def test_price_jumps_are_flagged_and_counted_not_quarantined(settings, lake_dir):
    frame = klines(200)
    jump = 150
    frame.loc[jump:, ["open", "high", "low", "close"]] *= 1.5
    frame.loc[jump, "open"] = frame.loc[jump - 1, "close"]
    frame.loc[jump, "low"] = frame.loc[jump, "open"] * 0.999
    land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (200, 0)
    assert result.flagged_rows == {
        "expect_column_values_to_be_between(column=check__price_jump_sigmas, max_value=12.0)": 1
    }
    assert result.success


def test_a_batch_shorter_than_the_window_is_scored_against_the_candles_accepted_before_it(settings, lake_dir):
    """An hourly run lands 60 minutes a symbol: fewer returns than the 60-return window."""
    frame = klines(240)
    land_klines(lake_dir, frame.iloc[:200])
    assert validate_raw(settings)[0].accepted == 200
    later = frame.iloc[200:].copy()
    later.loc[220:, ["open", "high", "low", "close"]] *= 1.5
    later.loc[220, "open"] = later.loc[219, "close"]
    later.loc[220, "low"] = later.loc[220, "open"] * 0.999
    land_klines(lake_dir, later, source="archive")  # history is read from every source

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (40, 0)
    assert result.flagged_rows == {
        "expect_column_values_to_be_between(column=check__price_jump_sigmas, max_value=12.0)": 1
    }


@pytest.mark.parametrize("sigmas, flagged", [(300.0, 1), (500.0, 0)])
def test_the_price_jump_multiple_is_a_setting(lake_dir, sigmas, flagged):
    """The 1.5x jump is about 405 standard deviations of the walk's 0.1% returns."""
    from flows.settings import load_settings

    frame = klines(200)
    frame.loc[150:, ["open", "high", "low", "close"]] *= 1.5
    land_klines(lake_dir, frame)

    [result] = validate_raw(load_settings(lake_dir=lake_dir, gate_price_jump_sigmas=sigmas))

    assert (result.accepted, result.quarantined) == (200, 0)
    label = f"expect_column_values_to_be_between(column=check__price_jump_sigmas, max_value={sigmas})"
    assert result.flagged_rows == ({label: 1} if flagged else {})


def test_each_other_kline_rule_takes_exactly_its_row(settings, lake_dir):
    """The rules the tests above do not break, one row each; every row fails that rule only."""
    frame = klines(40)
    breaks = {
        2: ("market", None, "expect_column_values_to_not_be_null(column=market)"),
        4: ("market", "margin", "expect_column_values_to_be_in_set(column=market"),
        6: ("quote_volume", -1.0, "expect_column_values_to_be_between(column=quote_volume, min_value=0"),
        # (a negative quote volume is also below its taker-buy part: that rule is row 10's)
        8: (
            "taker_buy_quote_volume",
            -1.0,
            "expect_column_values_to_be_between(column=taker_buy_quote_volume, min_value=0",
        ),
        10: (
            "taker_buy_quote_volume",
            5000.0,
            "expect_column_pair_values_a_to_be_greater_than_b(column_A=quote_volume, "
            "column_B=taker_buy_quote_volume",
        ),
        12: (
            "taker_buy_base_volume",
            -1.0,
            "expect_column_values_to_be_between(column=taker_buy_base_volume, min_value=0",
        ),
        14: ("low", 0.0, "expect_column_values_to_be_between(column=low, min_value=0"),
        16: (
            "open_time",
            pd.Timestamp("2008-12-31", tz="UTC"),
            "expect_column_values_to_be_between(column=open_time, max_value=",  # now, min 2009-01-03
        ),
    }
    for row, (column, value, _) in breaks.items():
        frame.loc[row, column] = value
    frame.loc[16, "close_time"] = frame.loc[16, "open_time"] + pd.Timedelta(milliseconds=59_999)
    land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (40 - len(breaks), len(breaks))
    row_reasons: dict = {}  # open_time -> the labels of that quarantined row
    for path in (lake_dir / "quarantine").rglob("*.json"):
        reason = json.loads(path.read_text())
        assert not reason["whole_batch"]
        table = pq.read_table(path.with_suffix(".parquet"), partitioning=None)
        for position, labels in reason["row_reasons"].items():
            row_reasons[table["open_time"][int(position)].as_py()] = labels
    for row, (_, _, start) in breaks.items():
        labels = row_reasons.pop(frame.loc[row, "open_time"].to_pydatetime())
        if row == 6:
            assert labels[0].startswith(breaks[10][2]), labels
            labels = labels[1:]
        assert len(labels) == 1 and labels[0].startswith(start), (row, labels)
    assert row_reasons == {}


def test_infinite_prices_and_volumes_are_quarantined_naming_the_column(settings, lake_dir):
    """high >= close holds for inf >= inf and volume >= 0 for inf: the finiteness rule stops them."""
    frame = klines(20)
    frame.loc[3, ["high", "close"]] = np.inf
    frame.loc[7, "volume"] = np.inf
    frame.loc[11, "taker_buy_base_volume"] = -np.inf  # also below 0: two rules
    land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (17, 3)
    finite = "expect_column_values_to_be_null(column=check__non_finite_column)"
    [reason] = reasons(lake_dir)
    assert reason["row_reasons"] == {
        "0": [finite],
        "1": [finite],
        "2": ["expect_column_values_to_be_between(column=taker_buy_base_volume, min_value=0.0)", finite],
    }
    [failure] = [f for f in reason["failed_expectations"] if f["expectation"] == finite]
    assert (failure["rows"], sorted(failure["sample_values"])) == (
        3,
        ["high", "taker_buy_base_volume", "volume"],
    )
    assert np.isfinite(raw_rows(lake_dir)[["high", "close", "volume", "taker_buy_base_volume"]]).all().all()


def test_transactions_referencing_unknown_users_are_quarantined(settings, lake_dir):
    from expectations.suites.raw_users import COLUMNS as USER_COLUMNS

    users = pd.DataFrame(
        {
            "user_id": np.array([1, 2], dtype=np.int64),
            "wallet_address": ["0x" + "a" * 40, "0x" + "b" * 40],
            "registered_at": pd.to_datetime(["2026-09-01", "2026-09-02"], utc=True).astype(
                "datetime64[ms, UTC]"
            ),
            "last_login_at": pd.to_datetime(["2026-10-01", "2026-10-02"], utc=True).astype(
                "datetime64[ms, UTC]"
            ),
            "account_balance_usd": [10.0, 20.0],
            "country": ["US", "DE"],
            "device_type": ["ios", "web"],
            "vip_tier": np.array([0, 1], dtype=np.int64),
            "kyc_level": np.array([1, 2], dtype=np.int64),
            "is_active": [True, False],
        }
    )[list(USER_COLUMNS)]
    land_frame(
        users,
        lake_dir,
        source="synthetic",
        dataset="users",
        key_columns=["user_id"],
        date_column="registered_at",
    )
    tx = pd.DataFrame(
        {
            "tx_id": np.array([10, 11, 12], dtype=np.int64),
            "occurred_at": pd.to_datetime(["2026-10-03"] * 3, utc=True).astype("datetime64[ms, UTC]"),
            "from_user_id": pd.array([1, 2, None], dtype="Int64"),
            "to_user_id": pd.array([2, 3, 1], dtype="Int64"),
            "from_address": ["0x" + "a" * 40] * 3,
            "to_address": ["0x" + "b" * 40] * 3,
            "tx_type": ["transfer", "transfer", "deposit"],
            "token_symbol": ["BTC", "ETH", "USDT"],
            "amount": [1.0, 2.0, 3.0],
            "fee": [0.1, 0.1, 0.1],
            "fee_token": ["BTC", "ETH", "USDT"],
            "leverage": pd.array([None, None, None], dtype="Int64"),
            "status": ["completed", "completed", "pending"],
        }
    )
    land_frame(
        tx,
        lake_dir,
        source="synthetic",
        dataset="transactions",
        key_columns=["tx_id"],
        date_column="occurred_at",
    )

    results = {r.dataset: r for r in validate_raw(settings)}

    assert (results["synthetic.users"].accepted, results["synthetic.users"].quarantined) == (2, 0)
    assert (results["synthetic.transactions"].accepted, results["synthetic.transactions"].quarantined) == (
        2,
        1,
    )
    assert sorted(raw_rows(lake_dir, "transactions")["tx_id"]) == [10, 12]
    [reason] = reasons(lake_dir)
    assert reason["failed_expectations"][0]["expectation"].startswith(
        "expect_column_values_to_be_in_set(column=check__users_known"
    )
    # Nullable ids stay int64 in raw (rows are copied from the arrow batch, not via pandas).
    raw_schema = pq.read_schema(next((lake_dir / "raw").glob("synthetic/transactions/**/*.parquet")))
    assert raw_schema.field("to_user_id").type == "int64"


def test_gate_run_summary_is_recorded_for_the_quality_mart(settings, lake_dir):
    land_klines(lake_dir, klines(10))
    validate_raw(settings)
    [path] = (lake_dir / "quality" / "gate_runs").rglob("*.parquet")
    row = pq.read_table(path).to_pylist()[0]
    assert row["gate"] == "raw" and row["dataset"] == "binance.klines"
    assert (row["rows_accepted"], row["rows_quarantined"], row["success"]) == (10, 0, True)
    assert row["expectations_evaluated"] > 30


@pytest.mark.parametrize(
    "dataset",
    ["raw_klines", "raw_users", "raw_transactions", "raw_network", "raw_trades", "raw_exchange_info"],
)
def test_every_raw_dataset_has_a_suite(dataset):
    from expectations.suites import load_suite

    suite = load_suite(dataset, {"now": datetime.now(UTC)})
    assert suite.name == dataset and len(suite.expectations) > 5


def validation_results(settings, suite: str) -> list[dict]:
    """The stored GE validation results of one suite, oldest first."""
    root = settings.gx_root / "gx" / "uncommitted" / "validations" / suite
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def test_chunked_validation_routes_each_row_of_each_batch(settings, lake_dir, monkeypatch):
    import flows.quality as quality

    monkeypatch.setattr(quality, "CHUNK_ROWS", 60)  # 3 days of 30 candles: chunks of 2 and 1 batches
    frames = [klines(30, start=T0 + pd.Timedelta(days=d)) for d in range(3)]
    frames[2].loc[7, "num_trades"] = -1  # in the second chunk
    frames[2] = pd.concat([frames[2], frames[2].iloc[[3]]], ignore_index=True)  # an exact copy
    for frame in frames:
        land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined, result.duplicates_collapsed) == (89, 1, 1)
    [reason] = reasons(lake_dir)
    assert reason["partition"]["date"] == "2026-10-03" and reason["rows_in_batch"] == 31
    [(position, [label])] = reason["row_reasons"].items()
    assert position == "0" and "column=num_trades, min_value" in label
    quarantined = pq.read_table(next((lake_dir / "quarantine").rglob("*.parquet")), partitioning=None)
    assert quarantined["open_time"].to_pylist() == [frames[2].loc[7, "open_time"]]
    assert len(raw_rows(lake_dir)) == 89 and raw_rows(lake_dir)["open_time"].is_unique
    # One stored validation per chunk, whatever result format it needed.
    assert len(validation_results(settings, "raw_binance_klines")) == 2


def test_failing_chunks_are_validated_again_with_row_indexes(settings, lake_dir, monkeypatch):
    import flows.quality as quality

    monkeypatch.setattr(quality, "CHUNK_ROWS", 30)
    frames = [klines(30, start=T0 + pd.Timedelta(days=d)) for d in range(3)]
    frames[1].loc[4, "num_trades"] = -1
    for frame in frames:
        land_klines(lake_dir, frame)

    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (89, 1)
    stored = validation_results(settings, "raw_binance_klines")
    formats = [
        "COMPLETE" if any("unexpected_index_list" in r["result"] for r in v["results"]) else "BASIC"
        for v in stored
    ]
    # A clean first chunk keeps its BASIC result; from the first failure on, the suite's
    # checkpoint gives COMPLETE results, and the failing chunk's BASIC result is not kept.
    assert formats == ["BASIC", "COMPLETE", "COMPLETE"]
    failing = next(r for r in stored[1]["results"] if not r["success"])
    assert failing["result"]["unexpected_index_list"] == [4]


def test_shared_keys_match_dataframe_duplicated():
    from flows.quality import _shared_keys

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "symbol": rng.choice(["BTCUSDT", "ETHUSDT", None], 5000),
            "open_time": pd.to_datetime(rng.integers(0, 400, 5000), unit="m", utc=True),
            "batch_id": rng.choice(["a", "b"], 5000),
            "value": rng.normal(size=5000),
        }
    )
    expected = frame.duplicated(["symbol", "open_time", "batch_id"], keep=False).to_numpy()
    assert expected.any() and not expected.all()
    assert (_shared_keys(frame, ["symbol", "open_time"]) == expected).all()
    unique = frame.drop_duplicates(["symbol", "open_time", "batch_id"])
    assert not _shared_keys(unique, ["symbol", "open_time"]).any()
    assert _shared_keys(frame, ["missing"]) is None


def test_read_ahead_keeps_order_stays_within_its_budget_and_reraises():
    import time

    from flows.quality import ReadAhead

    made: list[int] = []

    def numbers(fail_at: int | None = None):
        for i in range(5):
            if i == fail_at:
                raise ValueError("unreadable batch")
            made.append(i)
            yield i

    # Budget of one item of weight 1: the next one is started while at most one is unfinished.
    reader = ReadAhead(numbers(), weight=lambda i: 1, budget=1)
    time.sleep(0.2)
    assert made == [0, 1]  # produced before anything is asked for, but no further
    assert next(reader) == 0
    time.sleep(0.2)
    assert made == [0, 1]  # item 0 is not finished with until the next one is asked for
    assert next(reader) == 1
    time.sleep(0.2)
    assert made == [0, 1, 2]
    assert list(reader) == [2, 3, 4]
    assert next(reader, None) is None  # exhausted for good, not waiting on the thread
    made.clear()
    heavy = ReadAhead(numbers(), weight=lambda i: 5, budget=1)
    time.sleep(0.2)
    assert made == [0]  # an item over budget is never joined by another
    assert list(heavy) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unreadable batch"):
        list(ReadAhead(numbers(fail_at=2), weight=lambda i: 1, budget=1))


def test_checkpoints_of_other_suites_survive_a_registration(settings):
    from expectations.suites import load_suite
    from flows.quality import gx_context, register_checkpoint

    context = gx_context(settings)
    for name in ("raw_users", "raw_network"):
        register_checkpoint(context, load_suite(name, {"now": datetime.now(UTC)}), name)
    # Both assets stay in the data source, so the first checkpoint still loads.
    assert context.checkpoints.get("raw_users").validation_definitions[0].data.data_asset.name == "raw_users"
    assert {a.name for a in context.data_sources.get("lake").assets} >= {"raw_users", "raw_network"}


def test_mart_suites_use_the_validation_time_only_as_an_upper_bound():
    """What lets gate 2 carry an unchanged mart's result over (flows.publish.suite_fingerprint):
    rows that were dated no later than the validation time then still are now."""
    from collections import Counter
    from pathlib import Path

    from expectations.suites import _marts
    from flows.publish import SUITE_NOW
    from flows.quality import mart_suite

    suite_modules = {p.stem for p in (Path(_marts.__file__).parent).glob("fct_*.py")}
    marts = sorted(set(_marts.dbt_grains()) | suite_modules)
    assert {"dim_users", "fct_transactions", "fct_klines_hourly", "fct_pairs_hourly"} <= set(marts)
    params = {
        "now": SUITE_NOW,
        "previous_rows": 10,
        "min_row_ratio": 0.5,
        "latest_input": datetime(1999, 1, 1, tzinfo=UTC),
    }
    uses = Counter()
    for mart in marts:
        suite, _ = mart_suite(mart, dict(params))
        for expectation in suite.expectations:
            for name, value in expectation.configuration.to_json_dict()["kwargs"].items():
                if value in (SUITE_NOW, SUITE_NOW.isoformat()) or str(value).startswith("2000-01-01"):
                    uses[name] += 1
    assert set(uses) == {"max_value"} and uses["max_value"] >= 2


class _Cyclic:
    """Holds a frame only through a reference cycle, as GE's validators hold their batches."""

    def __init__(self, frame) -> None:
        self.frame = frame
        self.me = self


def test_a_large_gate_frees_what_only_reference_cycles_hold_before_it_hands_memory_back():
    gc.disable()  # no automatic collection between the cycle's creation and the release
    try:
        held = _Cyclic(pd.DataFrame({"x": np.arange(1000)}))
        alive = weakref.ref(held)
        del held
        release_memory(collect=False)  # a gate of a few rows: no collection
        assert alive() is not None
        release_memory(collect=True)
        assert alive() is None
    finally:
        gc.enable()


def test_a_relanded_range_with_a_bad_row_keeps_the_earlier_good_row_of_its_key_in_raw(settings, lake_dir):
    good = klines(24, interval="1h", step=pd.Timedelta(hours=1))
    land_klines(lake_dir, good)
    validate_raw(settings)
    [raw_file] = (lake_dir / "raw").rglob("*.parquet")
    earlier_ingested = pq.read_table(raw_file, partitioning=None)["ingested_at"][5].as_py()

    # The same range again (same batch id): hour 05 now has high < low, hour 06 a new close.
    again = good.copy()
    again.loc[5, "high"] = again.loc[5, "low"] - 1
    again.loc[6, "close"] = again.loc[6, "close"] * 1.0001
    [ref] = land_klines(lake_dir, again)
    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (23, 1)
    [raw_file_after] = (lake_dir / "raw").rglob("*.parquet")
    assert raw_file_after.name == f"{ref.batch_id}.parquet" == raw_file.name
    rows = raw_rows(lake_dir)
    assert len(rows) == 24 and rows["open_time"].is_monotonic_increasing
    hour_5 = rows[rows["open_time"] == good.loc[5, "open_time"]]
    assert len(hour_5) == 1
    assert hour_5["high"].iloc[0] == good.loc[5, "high"]  # the earlier good candle, not the bad one
    assert hour_5["ingested_at"].iloc[0] == earlier_ingested
    # An accepted row replaces its earlier version as before.
    hour_6 = rows[rows["open_time"] == good.loc[6, "open_time"]]
    assert hour_6["close"].tolist() == [again.loc[6, "close"]]
    [reason] = reasons(lake_dir)
    assert (reason["rows_accepted"], reason["rows_quarantined"], reason["earlier_rows_kept"]) == (23, 1, 1)
    quarantined = pq.read_table(next((lake_dir / "quarantine").rglob("*.parquet")), partitioning=None)
    assert quarantined["high"].to_pylist() == [again.loc[5, "high"]]


def test_a_relanded_range_whose_every_row_is_bad_leaves_the_raw_file_as_it_was(settings, lake_dir):
    good = klines(24, interval="1h", step=pd.Timedelta(hours=1))
    land_klines(lake_dir, good)
    validate_raw(settings)
    [raw_file] = (lake_dir / "raw").rglob("*.parquet")
    before = raw_file.read_bytes()

    bad = good.copy()
    bad["high"] = bad["low"] - 1
    land_klines(lake_dir, bad)
    [result] = validate_raw(settings)

    assert (result.accepted, result.quarantined) == (0, 24)
    assert raw_file.read_bytes() == before
    [reason] = reasons(lake_dir)
    assert (reason["rows_accepted"], reason["rows_quarantined"], reason["earlier_rows_kept"]) == (0, 24, 24)
