"""Both gates end to end: synthetic defects caught and counted by gate 1; gate 2 blocks bad marts."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows.errors import LakehouseError
from flows.lake import (
    current_snapshot,
    list_snapshots,
    marts_dir,
    prune_snapshots,
    read_hold,
    release_hold,
    roll_back,
    snapshot_path,
    utc_now,
)
from flows.publish import GateFailed, publish_marts, sql_list
from flows.quality import data_docs_index, validate_raw
from flows.settings import load_settings
from flows.transform import warehouse_path


def classify(labels: list[str]) -> str:
    """The synthetic defect kind a quarantined kline row shows (rules in synthetic.DEFECT_RULES)."""
    text = " ".join(labels)
    if "not_be_null(column=close)" in text or "not_be_null(column=volume)" in text:
        return "missing_values"
    if "column=volume, min_value" in text:
        return "out_of_range"
    if "check__key_unique_in_batch" in text:
        return "duplicate_keys"
    if all("column_A=" in label for label in labels):
        return "invalid_candles"
    return "other: " + text


def flagged(result, fragment: str) -> int:
    return sum(n for label, n in result.flagged_rows.items() if fragment in label)


def test_each_synthetic_defect_is_caught_by_the_right_gate_and_counted(lake_dir, monkeypatch):
    from flows.sources.synthetic import land_synthetic

    settings = load_settings(
        lake_dir=lake_dir, symbols="BTCUSDT,ETHUSDT", start="2026-10-01", end="2026-10-03", defect_rate=0.01
    )
    landed = land_synthetic(settings, users=300, tx_per_day=2000)
    defects = landed.notes["defects"]
    assert (
        defects == json.loads((lake_dir / "landing" / "_defects" / "synthetic.json").read_text())["defects"]
    )

    results = {r.dataset.split(".")[1]: r for r in validate_raw(settings)}

    kinds: Counter = Counter()
    for path in (lake_dir / "quarantine" / "synthetic" / "klines").rglob("*.json"):
        for labels in json.loads(path.read_text())["row_reasons"].values():
            kinds[classify(labels)] += 1
    k = defects["klines"]
    assert kinds == {
        "missing_values": k["missing_values"],
        "out_of_range": k["out_of_range"],
        "invalid_candles": k["invalid_candles"],
        "duplicate_keys": 2 * k["duplicate_keys"],  # both rows sharing the key
    }
    klines = results["klines"]
    assert klines.quarantined == sum(kinds.values())
    assert flagged(klines, "check__wick_ratio") == k["outliers"]
    # Gaps are missing rows (fct_candle_completeness and gate 2 see them); late rows are valid and
    # accepted (staging keeps the latest copy): every landed row is accounted for.
    assert klines.accepted + klines.quarantined + klines.duplicates_collapsed == landed.rows["klines"]

    users, network, tx = results["users"], results["network"], results["transactions"]
    u = defects["users"]
    assert users.quarantined == 0
    assert users.duplicates_collapsed == u["duplicate_rows"]
    assert (
        sum(flagged(users, f"not_be_null(column={c})") for c in ("country", "device_type", "wallet_address"))
        == u["missing_values"]
    )
    assert flagged(users, "account_balance_usd, max_value") == u["outliers"]
    assert flagged(users, "account_balance_usd, min_value") == u["out_of_range"]

    n = defects["network"]
    assert network.quarantined == 0 and network.duplicates_collapsed == n["duplicate_rows"]
    assert (
        flagged(network, "not_be_null(column=gas_price_gwei)") + flagged(network, "not_be_null(column=tps)")
        == n["missing_values"]
    )
    assert flagged(network, "gas_price_gwei, max_value") == n["outliers"]
    assert flagged(network, "column=tps, min_value") == n["out_of_range"]

    t = defects["transactions"]
    assert tx.quarantined == t["missing_values"]  # no amount, token or status: unusable
    assert set(tx.failed_rows) <= {
        f"expect_column_values_to_not_be_null(column={c})" for c in ("amount", "token_symbol", "status")
    }
    assert tx.duplicates_collapsed == t["duplicate_rows"]
    assert flagged(tx, "column=amount, max_value") == t["outliers"]
    assert flagged(tx, "column=amount, min_value") == t["out_of_range"]
    assert tx.accepted + tx.quarantined + tx.duplicates_collapsed == landed.rows["transactions"]


FUTURE = pd.Timestamp("2030-01-01", tz="UTC")
# Per dataset: the rows one landed batch breaks, each breaking one quarantine rule of the suite
# (row position, column, value, the failed expectation's label, starting), and the column a
# second batch of the dataset gets in the wrong type (a schema break: that batch goes whole).
RULE_BREAKS = {
    "users": (
        [
            (1, "user_id", -5, "expect_column_values_to_be_between(column=user_id, min_value=1"),
            (2, "country", "Atlantis", "expect_column_values_to_be_in_set(column=country"),
            (3, "device_type", "fax", "expect_column_values_to_be_in_set(column=device_type"),
            (4, "vip_tier", 10, "expect_column_values_to_be_between(column=vip_tier"),
            (5, "kyc_level", 4, "expect_column_values_to_be_between(column=kyc_level"),
            (6, "wallet_address", "0xZZ", "expect_column_values_to_match_regex(column=wallet_address"),
            (7, "registered_at", FUTURE, "expect_column_values_to_be_between(column=registered_at"),
            (
                8,
                "last_login_at",
                pd.Timestamp("2001-01-01", tz="UTC"),
                "expect_column_values_to_be_between(column=last_login_at",
            ),
        ],
        "vip_tier",
    ),
    "transactions": (
        [
            (1, "tx_type", "gift", "expect_column_values_to_be_in_set(column=tx_type"),
            (2, "status", "lost", "expect_column_values_to_be_in_set(column=status"),
            (3, "token_symbol", "usdt!", "expect_column_values_to_match_regex(column=token_symbol"),
            (4, "leverage", 200, "expect_column_values_to_be_between(column=leverage"),
            (5, "occurred_at", FUTURE, "expect_column_values_to_be_between(column=occurred_at"),
            (6, "from_user_id", 987_654_321, "expect_column_values_to_be_in_set(column=check__users_known"),
            (7, "tx_id", None, "expect_column_values_to_not_be_null(column=tx_id"),
            (8, "fee", float("inf"), "expect_column_values_to_be_null(column=check__non_finite_column"),
        ],
        "amount",
    ),
    "network": (
        [
            (1, "observed_at", "+30s", "expect_column_values_to_be_between(column=check__observed_at_offset"),
            (2, "observed_at", FUTURE, "expect_column_values_to_be_between(column=observed_at"),
        ],
        "tps",
    ),
}


@pytest.mark.parametrize("dataset", sorted(RULE_BREAKS))
def test_each_quarantine_rule_of_the_activity_suites_takes_exactly_the_row_that_breaks_it(lake_dir, dataset):
    """Users, transactions and network: every row that breaks one rule is quarantined under that
    rule and no other, the rest of its batch is accepted, and a batch with a column of the wrong
    type is quarantined whole while its neighbours are not."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from flows.sources.synthetic import land_synthetic

    settings = load_settings(
        lake_dir=lake_dir, symbols="BTCUSDT", start="2026-10-01", end="2026-10-03", defect_rate=0.0
    )
    land_synthetic(settings, users=300, tx_per_day=500)
    landing = lake_dir / "landing" / "synthetic"
    keep = {"users", dataset}  # transactions are checked against the users accepted first
    for folder in landing.iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder)
    breaks, wrong_type_column = RULE_BREAKS[dataset]
    files = sorted((landing / dataset).rglob("*.parquet"), key=lambda f: -pq.read_metadata(f).num_rows)
    # The batch to break: the largest, merged with the next ones while it has too few rows
    # (users land by registration day, a row or two each).
    group = [files[0]]
    while sum(pq.read_metadata(f).num_rows for f in group) < len(breaks) + 2:
        group.append(files[len(group)])
    broken, retyped = group[0], files[len(group)]
    table = pa.concat_tables([pq.read_table(f, partitioning=None) for f in group])
    for merged in group[1:]:
        merged.unlink()
    frame = table.to_pandas()
    for row, column, value, _ in breaks:
        if value == "+30s":
            value = frame.loc[row, column] + pd.Timedelta(seconds=30)
        frame.loc[row, column] = value
    assert len(frame) == table.num_rows  # every break hit an existing row
    rewritten = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
    pq.write_table(
        rewritten.replace_schema_metadata(table.schema.metadata), broken
    )  # no pandas metadata, as landed
    other = pq.read_table(retyped, partitioning=None)
    column = other.schema.get_field_index(wrong_type_column)
    pq.write_table(other.set_column(column, wrong_type_column, pc.cast(other[column], "string")), retyped)
    rows = {f: pq.read_metadata(f).num_rows for f in (lake_dir / "landing").rglob("*.parquet")}
    landed = sum(n for f, n in rows.items() if f"/{dataset}/" in str(f))

    results = {r.dataset: r for r in validate_raw(settings)}

    result = results[f"synthetic.{dataset}"]
    assert (result.quarantined, result.accepted) == (
        len(breaks) + rows[retyped],
        landed - len(breaks) - rows[retyped],
    )
    by_file = {
        Path(p).with_suffix(".parquet").name: json.loads(p.read_text())
        for p in (lake_dir / "quarantine").rglob("*.json")
    }
    partial = by_file[broken.name]
    assert not partial["whole_batch"] and partial["rows_quarantined"] == len(breaks)
    # Each broken row under its one rule, by its position in the quarantined file (the batch's order).
    for i, (_, _, _, start) in enumerate(breaks):
        [label] = partial["row_reasons"][str(i)]
        assert label.startswith(start), (i, label)
    whole = by_file[retyped.name]
    assert whole["whole_batch"] and whole["rows_quarantined"] == rows[retyped]
    type_checks = {
        f"expect_column_values_to_be_of_type(column={wrong_type_column}, type_=float64)",  # amount, tps
        f"expect_column_values_to_be_in_type_list(column={wrong_type_column})",  # vip_tier: int64 or Int64
    }
    assert type_checks & {e["expectation"] for e in whole["failed_expectations"]}
    # The reason says what type it found, not only which rule failed.
    found = [e["sample_values"] for e in whole["failed_expectations"] if e["expectation"] in type_checks]
    assert found and all(values and "str" in str(values[0]) for values in found), found
    if dataset != "users":
        assert results["synthetic.users"].quarantined == 0


# Gate 2 ------------------------------------------------------------------------------------------

HOURLY_FROM_MINUTES = """
    create or replace table marts.fct_klines_hourly as
    select market, symbol, date_trunc('hour', opened_at) as open_time,
        date_trunc('hour', opened_at) + interval 1 hour - interval 1 millisecond as close_time,
        arg_min(open_price, opened_at) as open, max(high_price) as high, min(low_price) as low,
        arg_max(close_price, opened_at) as close, sum(volume) as volume,
        sum(quote_volume) as quote_volume, cast(sum(num_trades) as bigint) as num_trades,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        sum(quote_volume) / sum(volume) as vwap, cast(null as double) as simple_return,
        cast(null as double) as log_return, '1m' as source_interval, count(*) as candle_count,
        60 as expected_candle_count, count(*) = 60 as is_complete,
    from intermediate.int_klines_unioned
    group by all
"""


def build_warehouse(settings, hours: int = 48) -> None:
    """What dbt would leave: 1-minute inputs and the hourly mart rolled up from them."""
    path = warehouse_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create schema if not exists intermediate; create schema if not exists marts")
        con.execute(
            f"""
            create or replace table intermediate.int_klines_unioned as
            select 'spot' as market, symbol, '1m' as kline_interval,
                timestamptz '2026-10-01 00:00:00+00' + to_minutes(i) as opened_at,
                100 + i % 7 as open_price, 110 + i % 7 as high_price, 90 + i % 7 as low_price,
                101 + i % 7 as close_price, 1.0 + i % 3 as volume, 100.0 + i % 5 as quote_volume,
                cast(10 + i % 4 as bigint) as num_trades, 0.5 as taker_buy_base_volume,
                50.0 as taker_buy_quote_volume,
            from range({hours * 60}) as t(i), (values ('BTCUSDT'), ('ETHUSDT')) as s(symbol)
            """
        )
        con.execute(HOURLY_FROM_MINUTES)


def hashes(lake_dir: Path) -> dict[str, str]:
    root = marts_dir(lake_dir)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class ValidationPage(HTMLParser):
    """A Data Docs validation page read as table rows: (failed?, text) per expectation row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[bool, str]] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._failed = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "tr":
            self._row, self._failed = [], False
        classes = dict(attrs).get("class") or ""
        if self._row is not None and "fa-times" in classes:
            self._failed = True

    def handle_endtag(self, tag) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append((self._failed, " ".join(" ".join(self._row).split())))
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row.append(data)


def validation_pages(index: Path, fragment: str) -> list[Path]:
    """Validation result pages the index links (its table is data for a script, so use a regex)."""
    links = sorted(set(re.findall(r"validations/[^\"'\\]+?\.html", index.read_text())))
    return [index.parent / link for link in links if fragment in link]


def read_page(path: Path) -> ValidationPage:
    page = ValidationPage()
    page.feed(path.read_text())
    return page


USERS_BY_COUNTRY = (
    "create or replace table marts.fct_users_by_country as "
    "select * from (values ('DE', 2), ('US', 1)) t(country, users)"
)


@pytest.fixture
def published(settings):
    build_warehouse(settings)
    result = publish_marts(settings)
    assert result.tables == {"fct_klines_hourly": 96}
    assert all(r.success for r in result.gate)
    return result


def test_gate_2_publishes_valid_marts_atomically(settings, published):
    assert current_snapshot(settings.lake_dir) == published.snapshot_id
    assert (snapshot_path(settings.lake_dir, published.snapshot_id) / "fct_klines_hourly.parquet").exists()
    [gate] = published.gate
    assert gate.evaluated > 15
    assert not any(p.name.startswith(".staged") for p in marts_dir(settings.lake_dir).iterdir())


def test_an_unchanged_mart_is_linked_from_the_published_snapshot_and_still_validated(settings, published):
    def published_file(result):
        return snapshot_path(settings.lake_dir, result.snapshot_id) / "fct_klines_hourly.parquet"

    first = published_file(published)
    # Another mart changed (with none changed, no snapshot is published at all).
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(USERS_BY_COUNTRY)
    again = publish_marts(settings)

    assert again.reused == ["fct_klines_hourly"] and again.published
    assert current_snapshot(settings.lake_dir) == again.snapshot_id != published.snapshot_id
    assert published_file(again).stat().st_ino == first.stat().st_ino  # one file, two snapshots
    [gate] = [r for r in again.gate if r.dataset == "fct_klines_hourly"]
    assert gate.success and gate.evaluated == published.gate[0].evaluated and gate.accepted == 96

    # One more hour in the warehouse: a new file with the new rows, the old snapshot untouched.
    before = first.read_bytes()
    build_warehouse(settings, hours=49)
    changed = publish_marts(settings)

    assert changed.reused == ["fct_users_by_country"]
    assert changed.tables == {"fct_klines_hourly": 98, "fct_users_by_country": 2}
    assert published_file(changed).stat().st_ino != first.stat().st_ino
    assert pd.read_parquet(published_file(changed))["open_time"].max() == pd.Timestamp(
        "2026-10-03 00:00", tz="UTC"
    )
    assert first.read_bytes() == before


def published_hash(settings, result) -> str:
    path = snapshot_path(settings.lake_dir, result.snapshot_id) / "fct_klines_hourly.parquet"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gate_run_files(settings) -> list[Path]:
    return sorted((settings.lake_dir / "quality").rglob("*.parquet"))


def test_a_publish_with_every_mart_unchanged_keeps_the_live_snapshot_and_makes_none(settings, published):
    before, runs = hashes(settings.lake_dir), gate_run_files(settings)
    live = published.snapshot_id

    again = publish_marts(settings)

    assert current_snapshot(settings.lake_dir) == live and list_snapshots(settings.lake_dir) == [live]
    assert (again.published, again.snapshot_id) == (False, live)
    assert again.note == (
        f"publish: every mart equals the live snapshot {live} under {marts_dir(settings.lake_dir)}, "
        f"so no new snapshot; {live} stays live"
    )
    assert (again.tables, again.reused, again.gate) == ({"fct_klines_hourly": 96}, ["fct_klines_hourly"], [])
    assert current_snapshot(settings.lake_dir) == live and list_snapshots(settings.lake_dir) == [live]
    assert hashes(settings.lake_dir) == before
    assert gate_run_files(settings) == runs  # no gate 2 ran, so none is recorded


def test_the_quality_runs_mart_rebuilt_with_the_last_gate_2_rows_counts_as_unchanged(settings, published):
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(QUALITY_RUNS_TABLE)
    first = publish_marts(settings)  # a new mart: published, with this gate 2's rows appended
    assert current_snapshot(settings.lake_dir) == first.snapshot_id != published.snapshot_id
    assert first.tables["fct_data_quality_runs"] == 1 + len(first.gate) == 3
    assert publish_marts(settings).snapshot_id == first.snapshot_id  # the warehouse as first exported it

    # The next build reads those gate 2 rows back from the lake: the mart equals the published file.
    runs = snapshot_path(settings.lake_dir, first.snapshot_id) / "fct_data_quality_runs.parquet"
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            f"create or replace table marts.fct_data_quality_runs as select * from read_parquet('{runs}')"
        )
    again = publish_marts(settings)

    assert list_snapshots(settings.lake_dir) == [published.snapshot_id, first.snapshot_id]
    assert (again.published, again.snapshot_id) == (False, first.snapshot_id)


def test_a_rollback_holds_until_the_marts_differ_from_the_snapshot_rolled_back_from(settings, published):
    build_warehouse(settings, hours=49)
    bad = publish_marts(settings)
    assert current_snapshot(settings.lake_dir) == bad.snapshot_id != published.snapshot_id
    roll_back(settings.lake_dir, published.snapshot_id)
    before = hashes(settings.lake_dir)

    # The next run rebuilt the very marts rolled back from: CURRENT stays where the rollback put it.
    held = publish_marts(settings)

    live = published.snapshot_id
    assert current_snapshot(settings.lake_dir) == live
    assert list_snapshots(settings.lake_dir) == [live, bad.snapshot_id]
    assert (held.published, held.snapshot_id, held.tables) == (False, live, {"fct_klines_hourly": 96})
    assert held.note == (
        f"publish: {live} is held by a rollback from {bad.snapshot_id} and the built marts equal that one's, "
        f"so {live} stays live until new data arrives; `lakehouse snapshots --release-hold` lifts the hold"
    )
    assert current_snapshot(settings.lake_dir) == live
    assert hashes(settings.lake_dir) == before
    assert prune_snapshots(settings.lake_dir, keep=0) == [bad.snapshot_id]  # the held one is spared
    assert list_snapshots(settings.lake_dir) == [live]

    # New data: published, and the hold is lifted.
    build_warehouse(settings, hours=50)
    fresh = publish_marts(settings)

    assert fresh.published and fresh.tables == {"fct_klines_hourly": 100}
    assert current_snapshot(settings.lake_dir) == fresh.snapshot_id
    assert read_hold(settings.lake_dir) is None
    assert published_hash(settings, fresh) != published_hash(settings, published)


def test_a_released_hold_lets_the_marts_rolled_back_from_be_published_again(settings, published):
    build_warehouse(settings, hours=49)
    bad = publish_marts(settings)
    roll_back(settings.lake_dir, published.snapshot_id)
    assert publish_marts(settings).snapshot_id == published.snapshot_id

    assert release_hold(settings.lake_dir)["rolled_back_from"] == bad.snapshot_id
    again = publish_marts(settings)

    assert again.published and current_snapshot(settings.lake_dir) == again.snapshot_id != bad.snapshot_id
    assert published_hash(settings, again) == published_hash(settings, bad)


def test_an_unchanged_mart_that_passed_the_same_checks_is_not_validated_again(
    settings, published, monkeypatch
):
    from expectations.suites import _marts
    from flows.publish import GATE_RECORD

    def write(sql: str) -> None:
        with duckdb.connect(str(warehouse_path(settings))) as con:
            con.execute(sql)

    def record(result) -> dict:
        return json.loads((snapshot_path(settings.lake_dir, result.snapshot_id) / GATE_RECORD).read_text())[
            "marts"
        ]

    def publish_with_another_mart_changed():
        # With every mart unchanged no snapshot is published at all: a scratch mart (no suite)
        # changes each time, so the two marts here are checked in a new snapshot.
        write(f"create or replace table marts.fct_scratch as select {next(scratch)} as n")
        result = publish_marts(settings)
        assert result.published
        return result

    def checked(result) -> list[str]:
        return [r.dataset for r in result.gate if r.dataset != "fct_scratch"]

    scratch = itertools.count()
    # A mart without a prepare step: its suite (row count, dbt grain) reads its rows only.
    write(
        "create table marts.fct_users_by_country as select * from (values ('DE', 2), ('US', 1)) t(country, users)"
    )
    first = publish_with_another_mart_changed()
    assert checked(first) == ["fct_klines_hourly", "fct_users_by_country"]
    assert first.carried == []
    validated_at = record(first)["fct_users_by_country"]["validated_at"]

    # Nothing changed: both files are linked; the rollup mart is checked again against its
    # 1-minute inputs, the other one's passing result is carried over with its validation time.
    again = publish_with_another_mart_changed()
    assert again.reused == ["fct_klines_hourly", "fct_users_by_country"]
    assert again.carried == ["fct_users_by_country"]
    assert checked(again) == ["fct_klines_hourly"]
    assert record(again)["fct_users_by_country"] == record(first)["fct_users_by_country"]
    assert record(again)["fct_users_by_country"]["validated_at"] == validated_at
    assert record(again)["fct_klines_hourly"]["suite"] is None

    # The same rows against changed expectations (another grain): validated again.
    grains = _marts.dbt_grains()
    monkeypatch.setattr(
        _marts, "dbt_grains", lambda: {**grains, "fct_users_by_country": ["country", "users"]}
    )
    regrained = publish_with_another_mart_changed()
    assert regrained.carried == [] and checked(regrained)[-1] == "fct_users_by_country"
    assert record(regrained)["fct_users_by_country"]["validated_at"] != validated_at
    monkeypatch.undo()

    # A snapshot published before gate 2 kept records: every mart is validated.
    current = snapshot_path(settings.lake_dir, current_snapshot(settings.lake_dir))
    (current / GATE_RECORD).unlink()
    assert publish_with_another_mart_changed().carried == []
    assert publish_with_another_mart_changed().carried == ["fct_users_by_country"]

    # Changed rows are always validated: a repeated country fails the grain.
    before = hashes(settings.lake_dir)
    write("insert into marts.fct_users_by_country values ('DE', 5)")
    with pytest.raises(
        GateFailed, match=r"fct_users_by_country: expect_column_values_to_be_unique\(column=country\)"
    ):
        publish_marts(settings)
    assert hashes(settings.lake_dir) == before


def test_the_publish_command_says_the_live_snapshot_stays_when_no_mart_changed(settings, published):
    from typer.testing import CliRunner

    from flows.cli import app

    live = published.snapshot_id
    result = CliRunner().invoke(app, ["publish"])

    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == (
        f"publish: every mart equals the live snapshot {live} under {marts_dir(settings.lake_dir)}, "
        f"so no new snapshot; {live} stays live"
    )
    assert current_snapshot(settings.lake_dir) == live


def test_a_sudden_drop_fails_gate_2_and_leaves_the_published_snapshot_byte_identical(settings, published):
    before = hashes(settings.lake_dir)
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            "delete from marts.fct_klines_hourly where symbol = 'ETHUSDT' or open_time >= '2026-10-02'"
        )

    with pytest.raises(GateFailed) as failure:
        publish_marts(settings)

    message = str(failure.value)
    assert "fct_klines_hourly" in message and "expect_table_row_count_to_be_between(min_value=48)" in message
    assert "snapshot not published" in message
    assert hashes(settings.lake_dir) == before
    assert current_snapshot(settings.lake_dir) == published.snapshot_id

    # The Data Docs site names the failing expectation on the failed validation's page.
    pages = validation_pages(data_docs_index(settings), "fct_klines_hourly")
    assert len(pages) == 2  # the passing publish and this failing one
    newest = read_page(max(pages, key=lambda p: p.parent.name))
    assert "Status: Failed" in " ".join(" ".join(newest.text).split())
    failed = [text for is_failed, text in newest.rows if is_failed]
    assert any(
        "At least 50% of the 96 rows of the published snapshot" in text and " 24" in text for text in failed
    )
    assert not any("Values in high must always be greater" in text for text in failed)


def test_a_warehouse_without_marts_is_never_published_over_the_live_snapshot(settings, published):
    """A lost or recreated warehouse file (dbt compile creates an empty one) publishes nothing."""
    before = hashes(settings.lake_dir)
    warehouse_path(settings).unlink()
    duckdb.connect(str(warehouse_path(settings))).close()

    with pytest.raises(LakehouseError) as failure:
        publish_marts(settings)

    assert str(failure.value) == (
        f"the warehouse {warehouse_path(settings)} has no marts, so there is nothing to publish "
        f"(snapshot {published.snapshot_id} stays live); build them first with `lakehouse build` "
        "(or `lakehouse run`)"
    )
    assert hashes(settings.lake_dir) == before
    assert current_snapshot(settings.lake_dir) == published.snapshot_id
    assert not any(p.name.startswith(".staged") for p in marts_dir(settings.lake_dir).iterdir())


def test_a_mart_missing_from_the_warehouse_is_never_dropped_from_the_published_snapshot(settings, published):
    """A mart table dropped (or lost) in the warehouse would vanish from the new snapshot."""
    before = hashes(settings.lake_dir)
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute("create table marts.fct_network_hourly as select 1 as n")
        con.execute("drop table marts.fct_klines_hourly")

    with pytest.raises(LakehouseError) as failure:
        publish_marts(settings)

    live = published.snapshot_id
    assert str(failure.value) == (
        f"the warehouse {warehouse_path(settings)} lacks 1 mart(s) of the published snapshot {live} "
        f"(fct_klines_hourly), so nothing was published and {live} stays live; build them again with "
        "`lakehouse build --full-refresh`"
    )
    assert hashes(settings.lake_dir) == before
    assert current_snapshot(settings.lake_dir) == live


def test_duplicate_grain_and_wrong_rollup_fail_gate_2_by_name(settings, published):
    before = hashes(settings.lake_dir)
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            "insert into marts.fct_klines_hourly select * from marts.fct_klines_hourly "
            "where symbol = 'BTCUSDT' and open_time = '2026-10-01 05:00:00+00'"
        )
        con.execute(
            "update marts.fct_klines_hourly set volume = volume + 1 "
            "where symbol = 'ETHUSDT' and open_time = '2026-10-01 07:00:00+00'"
        )

    with pytest.raises(GateFailed) as failure:
        publish_marts(settings)

    message = str(failure.value)
    assert "expect_compound_columns_to_be_unique(column_list=['market', 'symbol', 'open_time'])" in message
    assert "check__rollup_volume_error" in message
    assert "check__rollup_num_trades_error" not in message
    assert hashes(settings.lake_dir) == before


def test_a_series_behind_its_inputs_or_with_a_hole_fails_gate_2_while_the_others_are_current(
    settings, published
):
    """The newest row overall is current (BTCUSDT), but ETHUSDT lacks its last 3 hours and
    BTCUSDT one hour in the middle: every row compared with its inputs agrees."""
    before = hashes(settings.lake_dir)
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            "delete from marts.fct_klines_hourly where (symbol = 'ETHUSDT' and open_time >= '2026-10-02 21:00:00+00') "
            "or (symbol = 'BTCUSDT' and open_time = '2026-10-01 12:00:00+00')"
        )

    with pytest.raises(GateFailed) as failure:
        publish_marts(settings)

    assert "expect_column_values_to_be_between(column=check__input_periods_missing, max_value=0.0)" in str(
        failure.value
    )
    assert "check__rollup" not in str(failure.value)
    assert "fresh" not in str(failure.value) and "expect_column_max" not in str(failure.value)
    assert hashes(settings.lake_dir) == before


def test_gate_2_reads_only_the_columns_a_suite_names():
    import great_expectations.expectations as gxe

    from expectations.suites import _marts
    from flows.quality import mart_columns, suite_columns

    available = ["tx_id", "occurred_at", "amount", "from_address", "status"]
    # A mart without a suite module: row count and the dbt grain (tx_id) only.
    assert mart_columns("fct_transactions", {}, available) == ["tx_id"]
    # Its own suite with a prepare step derives check columns from other columns: read all.
    assert mart_columns("fct_klines_hourly", {}, available) is None
    # The row count alone still needs one column to count rows.
    assert mart_columns("no_such_mart", {}, available) == ["tx_id"]
    whole = _marts.suite("t", [gxe.ExpectTableColumnsToMatchSet(column_set=["a"], exact_match=True)])
    assert suite_columns(whole) is None
    pair = _marts.suite("t", [gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low")])
    assert suite_columns(pair) == {"high", "low"}


def test_dbt_grains_are_parsed_once_and_handed_out_as_copies(monkeypatch):
    import yaml

    from expectations.suites._marts import _grains, dbt_grains

    _grains.cache_clear()
    loads = []
    real_load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    first = dbt_grains()
    parsed = len(loads)
    first["fct_transactions"].append("changed")
    assert dbt_grains()["fct_transactions"] == ["tx_id"]
    assert parsed > 0 and len(loads) == parsed


def daily_rollup(days: int, candles: dict[int, int]) -> pd.DataFrame:
    """fct_klines_daily rows of two symbols: full days of 1440 candles but the given day numbers."""
    opens = pd.date_range("2026-10-01", periods=days, freq="D", tz="UTC")
    rows = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for day, opened in enumerate(opens):
            rows.append(
                {
                    "market": "spot",
                    "symbol": symbol,
                    "open_time": opened,
                    "source_interval": "1m",
                    "open": 100.0,
                    "high": 101.0,
                    "low": 99.0,
                    "close": 100.5,
                    "volume": 10.0,
                    "quote_volume": 1000.0,
                    "num_trades": 10,
                    "taker_buy_base_volume": 5.0,
                    "vwap": 100.0,
                    "simple_return": 0.0,
                    "log_return": 0.0,
                    "candle_count": candles.get(day, 1440),
                    "expected_candle_count": 1440,
                }
            )
    return pd.DataFrame(rows)


def test_the_newest_period_still_filling_does_not_fail_completeness(settings):
    from flows.quality import validate_frame

    # Three days, the newest one hour in: an incremental run early in the day must publish.
    filling = validate_frame(settings, "fct_klines_daily", daily_rollup(3, {2: 60}))
    assert filling.success, filling.failed_expectations
    # A finished day with a quarter of its candles (one of two per symbol, 50%) still fails.
    gappy = validate_frame(settings, "fct_klines_daily", daily_rollup(3, {0: 360, 2: 60}))
    assert [label for label in gappy.failed_expectations if "check__completeness" in label]


def completeness(present: dict[int, int], expected: dict[int, int] | None = None) -> pd.DataFrame:
    """fct_candle_completeness rows: 10 days of two symbols, 1440 of 1440 candles unless given
    (present / expected by row number)."""
    rows = []
    for i in range(20):
        exp = (expected or {}).get(i, 1440)
        got = present.get(i, 1440)
        rows.append(
            {
                "market": "spot",
                "symbol": "BTCUSDT" if i < 10 else "ETHUSDT",
                "kline_interval": "1m",
                "candle_date": pd.Timestamp("2026-10-01") + pd.Timedelta(days=i % 10),
                "expected_candles": exp,
                "present_candles": got,
                "missing_candles": max(exp - got, 0),
                "completeness_ratio": got / exp,
            }
        )
    return pd.DataFrame(rows)


def test_candle_completeness_fails_the_gate_below_its_thresholds(settings):
    from flows.quality import validate_frame

    # One symbol-day of 20 below 90% (5%, as many as the threshold allows) passes.
    assert validate_frame(settings, "fct_candle_completeness", completeness({3: 1000})).success
    # Two (10%) fail the completeness check, and only it.
    outage = validate_frame(settings, "fct_candle_completeness", completeness({3: 1000, 14: 200}))
    assert [label.split(",")[0] for label in outage.failed_expectations] == [
        "expect_column_values_to_be_between(column=completeness_ratio"
    ]
    assert outage.failed_rows == {outage.failed_expectations[0]: 2}
    # More candles present than the grid expects is a counting error.
    counted = validate_frame(settings, "fct_candle_completeness", completeness({5: 1440}, {5: 1439}))
    assert counted.failed_expectations == [
        "expect_column_pair_values_a_to_be_greater_than_b(column_A=expected_candles, "
        "column_B=present_candles, or_equal=True)"
    ]


def pairs_rows(n: int, time_column: str, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "market": "spot",
            "symbol_a": "BTCUSDT",
            "symbol_b": "ETHUSDT",
            time_column: pd.date_range("2026-10-01", periods=n, freq="h", tz="UTC"),
        }
    )
    return frame.assign(**columns)


def pairs_hourly_rows():
    """Four hours of one pair; the first has too little history: nulls, which are allowed."""
    return pairs_rows(
        4,
        "open_time",
        hedge_ratio=[None, 1.5, 1.6, 1.7],
        intercept=[None, 2.0, 2.0, 2.0],
        spread=[None, 0.1, -0.1, 0.2],
        spread_zscore=[None, 0.5, -0.5, 1.0],
        rolling_correlation=[None, 0.9, 0.8, 0.7],
        observations=[1, 2, 3, 4],
        close_a=100.0,
        close_b=50.0,
    )


def test_pairs_marts_fail_the_gate_on_an_infinite_fit_or_an_impossible_p_value(settings):
    from flows.quality import validate_frame

    hourly = pairs_hourly_rows()
    assert validate_frame(settings, "fct_pairs_hourly", hourly).success
    broken = hourly.assign(spread_zscore=[None, 0.5, float("inf"), 1.0])
    result = validate_frame(settings, "fct_pairs_hourly", broken)
    assert result.failed_rows == {
        "expect_column_values_to_be_between(column=spread_zscore, max_value=1000000000000.0, "
        "min_value=-1000000000000.0)": 1
    }

    fits = pairs_rows(
        3,
        "window_end",
        window_days=30,
        observations=[700, 710, 720],
        hedge_ratio=[1.5, 1.6, 1.7],
        intercept=[2.0, 2.1, 2.2],
        adf_statistic=[-3.5, -2.0, -4.1],
        p_value=[0.01, 0.3, 0.001],
        critical_value_1pct=-3.9,
        critical_value_5pct=-3.3,
        critical_value_10pct=-3.0,
    )
    assert validate_frame(settings, "fct_pairs_cointegration", fits).success
    broken = fits.assign(hedge_ratio=[1.5, float("-inf"), 1.7], p_value=[0.01, 0.3, 1.5])
    result = validate_frame(settings, "fct_pairs_cointegration", broken)
    assert sorted(result.failed_rows.items()) == [
        (
            "expect_column_values_to_be_between(column=hedge_ratio, max_value=1000000000000.0, "
            "min_value=-1000000000000.0)",
            1,
        ),
        ("expect_column_values_to_be_between(column=p_value, max_value=1.0, min_value=0.0)", 1),
    ]


def many_pairs_hourly(hours: int = 40) -> pd.DataFrame:
    """Three pairs, `hours` hours each, every value valid."""
    frames = []
    for a, b in (("BTCUSDT", "ETHUSDT"), ("BTCUSDT", "SOLUSDT"), ("ETHUSDT", "SOLUSDT")):
        frames.append(
            pairs_rows(
                hours,
                "open_time",
                hedge_ratio=1.5,
                intercept=2.0,
                spread=0.1,
                spread_zscore=0.5,
                rolling_correlation=0.9,
                observations=range(1, hours + 1),
                close_a=100.0,
                close_b=50.0,
            ).assign(symbol_a=a, symbol_b=b)
        )
    return pd.concat(frames, ignore_index=True)


def test_a_mart_larger_than_a_part_is_validated_in_parts_with_the_verdict_of_the_whole(
    settings, tmp_path, monkeypatch
):
    """A repeated key whose two rows are far apart, two infinite z-scores, a row count drop:
    the parts find exactly what one validation of the whole mart finds."""
    import flows.publish as publish
    from flows.publish import read_mart, read_parts, validate_in_parts
    from flows.quality import gx_context, validate_frame

    monkeypatch.setattr(publish, "PART_ROWS", 25)
    context = gx_context(settings)
    path = tmp_path / "fct_pairs_hourly.parquet"
    good = many_pairs_hourly()
    bad = pd.concat([good, good.iloc[[3]].assign(spread=0.2)], ignore_index=True)
    bad.loc[[10, 100], "spread_zscore"] = float("inf")
    for frame, previous in ((good, 120), (bad, 1000)):
        frame.to_parquet(path, index=False)
        params = {"now": utc_now(), "previous_rows": previous, "min_row_ratio": 0.5}
        validations: list = []
        parts = validate_in_parts(
            settings, path, "fct_pairs_hourly", len(frame), params, context, validations
        )
        whole = validate_frame(
            settings, "fct_pairs_hourly", read_mart(path, "fct_pairs_hourly", params), params=params
        )
        assert parts.batches == 5 and len(validations) == 1 + 5  # the row count once, then 5 parts
        assert parts.evaluated == whole.evaluated == 14
        assert parts.failed_rows == whole.failed_rows
        assert sorted(parts.failed_expectations) == sorted(whole.failed_expectations)
        assert parts.accepted == len(frame)
    assert parts.failed_rows == {
        "expect_compound_columns_to_be_unique(column_list=['market', 'symbol_a', 'symbol_b', 'open_time'])": 2,
        "expect_column_values_to_be_between(column=spread_zscore, max_value=1000000000000.0, "
        "min_value=-1000000000000.0)": 2,
        "expect_table_row_count_to_be_between(min_value=500)": 0,
    }

    # Every row is in exactly one part, and both rows of the repeated key in the same one.
    split = list(
        read_parts(path, ["symbol_a", "symbol_b", "open_time", "spread"], ["symbol_b", "open_time"], 5)
    )
    assert len(split) == 5 and sum(len(part) for part in split) == len(bad) == 121
    assert max(len(part) for part in split) < 60
    hour = bad.loc[3, "open_time"]
    holding = [
        part for part in split if ((part["symbol_b"] == "ETHUSDT") & (part["open_time"] == hour)).any()
    ]
    assert len(holding) == 1
    rows = holding[0][(holding[0]["symbol_b"] == "ETHUSDT") & (holding[0]["open_time"] == hour)]
    assert sorted(rows["spread"]) == [0.1, 0.2]


def test_publish_validates_a_mart_larger_than_a_part_in_parts_and_a_key_repeated_across_them_fails(
    settings, published, monkeypatch
):
    import flows.publish as publish

    monkeypatch.setattr(publish, "PART_ROWS", 25)
    pairs = many_pairs_hourly()
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.register("pairs", pairs)
        con.execute("create table marts.fct_pairs_hourly as select * from pairs")

    result = publish_marts(settings)
    gate = {r.dataset: r for r in result.gate}
    assert gate["fct_pairs_hourly"].success and gate["fct_pairs_hourly"].batches == 5
    assert gate["fct_pairs_hourly"].accepted == result.tables["fct_pairs_hourly"] == 120
    assert gate["fct_klines_hourly"].batches == 1  # its rollup checks read the mart whole
    index = data_docs_index(settings)
    assert len(validation_pages(index, "fct_pairs_hourly__parts")) == 5

    # The first hour of the first pair again, with another spread: its two rows are 120 rows apart.
    before = hashes(settings.lake_dir)
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(
            "insert into marts.fct_pairs_hourly select * replace (0.3 as spread) from marts.fct_pairs_hourly "
            "where symbol_a = 'BTCUSDT' and symbol_b = 'ETHUSDT' and open_time = '2026-10-01 00:00:00+00'"
        )
    with pytest.raises(GateFailed, match=r"fct_pairs_hourly: expect_compound_columns_to_be_unique"):
        publish_marts(settings)
    assert hashes(settings.lake_dir) == before


def test_a_nan_in_a_published_to_be_mart_fails_its_finiteness_check_and_a_null_does_not(settings, tmp_path):
    """pandas reads NaN as missing and GE skips missing values: gate 2 reads NaN as +inf."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.publish import read_mart
    from flows.quality import validate_frame

    hourly = pairs_hourly_rows()
    table = pa.Table.from_pandas(hourly, preserve_index=False)
    path = tmp_path / "fct_pairs_hourly.parquet"
    pq.write_table(table, path)
    assert validate_frame(settings, "fct_pairs_hourly", read_mart(path, "fct_pairs_hourly", {})).success
    index = table.schema.get_field_index("spread_zscore")
    nan = pa.array([None, 0.5, float("nan"), 1.0], type=pa.float64())  # 0/0 in DuckDB is NaN, not null
    pq.write_table(table.set_column(index, "spread_zscore", nan), path)
    frame = read_mart(path, "fct_pairs_hourly", {})
    result = validate_frame(settings, "fct_pairs_hourly", frame)
    assert result.failed_rows == {
        "expect_column_values_to_be_between(column=spread_zscore, max_value=1000000000000.0, "
        "min_value=-1000000000000.0)": 1
    }
    assert pq.read_table(path)["spread_zscore"].to_pylist()[1:3] == [
        0.5,
        pytest.approx(float("nan"), nan_ok=True),
    ]


def test_interval_lists_render_as_sql_lists_whatever_their_length():
    assert sql_list(["1m", "1h", "1d"]) == "('1m', '1h', '1d')"
    assert sql_list(["1m"]) == "('1m')"  # a Python tuple would render ('1m',)
    assert sql_list(["it's"]) == "('it''s')"
    with duckdb.connect() as con:
        assert con.execute(f"select '1m' in {sql_list(['1m'])}").fetchall() == [(True,)]


DEFERRED_SCIPY_GATE = """
import sys
from datetime import datetime
from pathlib import Path

from bench.datagen import klines_frame, land_klines
from flows.quality import validate_raw
from flows.settings import load_settings

lake = Path(sys.argv[1])
land_klines(lake, klines_frame(["BTCUSDT"], datetime(2026, 1, 1), 120))
print("before the gate:", "scipy.stats._stats_py" in sys.modules)
results = validate_raw(load_settings(lake_dir=lake, gx_dir=lake / "gx"))
print([(r.dataset, r.accepted, r.quarantined, r.success) for r in results])
print("after the gate:", "scipy.stats._stats_py" in sys.modules)
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
print("on first use:", kl.stats.norm.cdf(0.0), "scipy.stats._stats_py" in sys.modules)
"""


def test_gate_1_runs_with_scipy_stats_deferred_and_it_loads_when_first_used(tmp_path):
    """GE imports scipy.stats for expectations no suite uses; the gate defers it (0.7 s of GE's
    import) and it loads, whole, the first time a name of it is read."""
    script = tmp_path / "gate.py"
    script.write_text(DEFERRED_SCIPY_GATE)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "before the gate: False",
        "[('synthetic.klines', 120, 0, True)]",
        "after the gate: False",
        "on first use: 0.5 True",
    ]


QUALITY_RUNS_TABLE = """
    create table marts.fct_data_quality_runs as
    select '20261001T000000000000Z' as run_id, 'raw' as gate, 'binance.klines' as dataset,
        timestamptz '2026-10-01 00:00:00+00' as validated_at, 1::bigint as batches,
        60::bigint as rows_accepted, 0::bigint as rows_quarantined, 60::bigint as rows_validated,
        0.0::double as quarantined_ratio, 12::bigint as expectations_evaluated,
        0::bigint as expectations_failed, null::varchar as failed_expectations, true as is_success
"""


def test_the_published_quality_runs_hold_the_gate_2_that_passed_that_snapshot(settings, published):
    """dbt builds the mart before gate 2 runs: a snapshot showed the gate 2 of the publish before it."""
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute(QUALITY_RUNS_TABLE)
        # An empty mart: its gate 2 row has no quarantined ratio (0 of 0), in a column DuckDB
        # wrote as required (it had no nulls).
        con.execute("create table marts.fct_scratch as select 1 as n where false")
    first = publish_marts(settings)
    # Only another mart rebuilt: the quality runs file of `first` may be linked.
    with duckdb.connect(str(warehouse_path(settings))) as con:
        con.execute("create or replace table marts.fct_scratch as select 1 as n")
    again = publish_marts(settings)
    assert again.published and "fct_data_quality_runs" in again.reused
    for result in (first, again):
        runs = pq.read_table(
            snapshot_path(settings.lake_dir, result.snapshot_id) / "fct_data_quality_runs.parquet"
        )
        rows = runs.to_pandas()
        validated = {r.dataset for r in result.gate}
        this_gate = rows[(rows["gate"] == "marts") & rows["dataset"].isin(validated)]
        assert len(this_gate) >= len(validated) >= 1
        assert this_gate["validated_at"].max() >= pd.Timestamp(utc_now() - timedelta(minutes=5))
        assert this_gate["is_success"].all()
        assert rows[rows["gate"] == "raw"]["rows_accepted"].tolist() == [60]
        assert runs.schema.metadata.get(b"lakehouse_fingerprint")
        assert result.tables["fct_data_quality_runs"] == len(rows)  # what the run summary says
    before = pq.read_table(
        snapshot_path(settings.lake_dir, first.snapshot_id) / "fct_data_quality_runs.parquet"
    )
    assert len(before) == 1 + len(first.gate)  # the later publish left it as it was
