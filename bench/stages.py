"""One benchmark stage per process: `python -m bench.stages STAGE --lake DIR --scale S --out FILE`."""

from __future__ import annotations

import argparse
import json
import os
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.scales import SCALES, Scale
from flows import quick_exit  # before anything else registers an exit handler
from flows.settings import PROJECT_ROOT, Settings, load_settings

STAGES: dict[str, Callable[[Settings, Scale, argparse.Namespace], dict]] = {}


def stage(name: str):
    def register(fn):
        STAGES[name] = fn
        return fn

    return register


def settings_for(lake: Path, scale: Scale) -> Settings:
    return load_settings(
        lake_dir=lake,
        gx_dir=lake / "gx",
        source="synthetic",
        symbols=scale.symbol_list,
        intervals=["1m"],
        start=scale.start,
        end=scale.end,
        # The end-to-end flow lands through land_source, which reads these from the settings.
        synthetic_users=scale.users,
        synthetic_tx_per_day=scale.tx_per_day,
        synthetic_clean=True,
    )


def raw_klines_glob(settings: Settings) -> str:
    return str(settings.lake_dir / "raw" / "*" / "klines" / "**" / "*.parquet")


@stage("generate")
def generate(settings: Settings, scale: Scale, args) -> dict:
    """Land the scale's synthetic klines, users, transactions and network data (no defects)."""
    try:
        from flows.sources.synthetic import land_synthetic
    except ImportError:
        land_synthetic = None
    if land_synthetic is None:
        from bench.datagen import klines_frame, land_klines

        minutes = scale.days * 1440
        frame = klines_frame(scale.symbol_list, datetime.combine(scale.start, datetime.min.time()), minutes)
        refs = land_klines(settings.lake_dir, frame)
        return {"generator": "bench.datagen (fallback)", "rows": {"klines": sum(r.rows for r in refs)}}
    landed = land_synthetic(settings, clean=True, users=scale.users, tx_per_day=scale.tx_per_day)
    return {"generator": "flows.sources.synthetic", "rows": landed.rows}


@stage("gate1")
def gate1(settings: Settings, scale: Scale, args) -> dict:
    from flows.quality import validate_raw

    results = validate_raw(settings)
    return {
        "accepted": sum(r.accepted for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "failed": [r.dataset for r in results if not r.success],
    }


@stage("build")
def build(settings: Settings, scale: Scale, args) -> dict:
    from flows.transform import build_marts

    # As the pipeline builds: what changed since the last build (everything on a fresh lake).
    result = build_marts(settings, full_refresh=args.full_refresh, changed_only=True)
    return {"models": result.models, "tests": result.tests, "dbt_seconds": round(result.seconds, 3)}


@stage("publish")
def publish(settings: Settings, scale: Scale, args) -> dict:
    """Gate 2 and publish. The export runs in a thread beside gate 2's checks, so both shares are
    timed in-process: gate 2 as the time spent in its checks, the export as the time its thread
    spent copying."""
    import flows.publish as publish_module

    spent = {"gate2_seconds": 0.0, "export_seconds": 0.0}

    def timed(fn):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent["gate2_seconds"] += time.perf_counter() - started

        return wrapper

    def timed_export(fn):
        def wrapper(*a, **kw):
            items = fn(*a, **kw)
            while True:
                started = time.perf_counter()
                item = next(items, None)
                spent["export_seconds"] += time.perf_counter() - started
                if item is None:
                    return
                yield item

        return wrapper

    publish_module.validate_frame = timed(publish_module.validate_frame)
    publish_module.validate_in_parts = timed(publish_module.validate_in_parts)  # a large mart's gate 2
    publish_module.build_data_docs = timed(publish_module.build_data_docs)
    publish_module.export_marts = timed_export(publish_module.export_marts)
    result = publish_module.publish_marts(settings)
    return {
        "snapshot_id": result.snapshot_id,
        "tables": result.tables,
        **{k: round(v, 3) for k, v in spent.items()},
    }


@stage("land_hour")
def land_hour(settings: Settings, scale: Scale, args) -> dict:
    """Land the hour after the newest candle of every symbol, continuing from its last close.

    The newest candles are read from each symbol's newest date folder only, as the flow finds
    its watermark (flows.lake.kline_watermark): reading the whole lake took 0.9 s at 5.3M rows,
    which no scheduled run spends.
    """
    import duckdb

    from bench.datagen import klines_frame, land_klines
    from flows.lake import kline_partitions_newest_first

    symbols = sorted(
        {p.name.removeprefix("symbol=") for p in (settings.lake_dir / "raw").glob("*/klines/symbol=*")}
    )
    files = []
    for symbol in symbols:
        files += next(kline_partitions_newest_first(settings.lake_dir, "*", symbol, "1m"), [])
    with duckdb.connect() as con:
        rows = con.execute(
            "select symbol, epoch_ms(max(open_time)), arg_max(close, open_time) from read_parquet(?, "
            "hive_partitioning = false, union_by_name = true) where interval = '1m' group by symbol",
            [files],
        ).fetchall()
    next_hour_ms = (max(r[1] for r in rows) // 3_600_000 + 1) * 3_600_000
    start_at = datetime.fromtimestamp(next_hour_ms / 1000, UTC).replace(tzinfo=None)
    # Seeded by the hour: with one seed, every new hour repeated the same returns, and after a
    # day of them the day's hourly returns did not vary (a correlation of them is undefined).
    frame = klines_frame(
        sorted(r[0] for r in rows),
        start_at,
        60,
        seed=next_hour_ms // 3_600_000,
        first_open={r[0]: r[2] for r in rows},
    )
    refs = land_klines(settings.lake_dir, frame)
    return {"rows": sum(r.rows for r in refs), "hour": str(frame["open_time"].min())}


@stage("incremental")
def incremental(settings: Settings, scale: Scale, args) -> dict:
    """One new hour landed, then gate 1, dbt build, gate 2 and publish, in this one process.

    What a scheduled incremental run does, without Prefect's orchestration around it: GE is
    imported once (beside the landing, as the flow does) and the dbt build is a subprocess started
    beside the landing (flows.transform.warm_build, as the flow does).
    """
    from flows.publish import publish_marts
    from flows.quality import preload_in_background, validate_raw
    from flows.transform import build_marts, warm_build

    seconds = {}

    def timed(name: str, step):
        started = time.perf_counter()
        value = step()
        seconds[f"{name}_seconds"] = round(time.perf_counter() - started, 3)
        return value

    with warm_build(settings) as worker:  # as the flow does: dbt starts beside landing and gate 1
        preload_in_background()
        landed = timed("land", lambda: land_hour(settings, scale, args))
        worker.landed()
        timed("gate1", lambda: validate_raw(settings))
        timed("build", lambda: build_marts(settings, changed_only=True))
        timed("publish", lambda: publish_marts(settings))  # dbt writes its manifest meanwhile
    return {**seconds, "rows": landed["rows"], "hour": landed["hour"]}


@stage("naive")
def naive(settings: Settings, scale: Scale, args) -> dict:
    from bench import naive_pandas

    return {"rows": naive_pandas.run(raw_klines_glob(settings), Path(args.output))}


@stage("floor")
def floor(settings: Settings, scale: Scale, args) -> dict:
    from bench import duckdb_floor

    return {"rows": duckdb_floor.run(raw_klines_glob(settings), Path(args.output))}


@stage("floor_project")
def floor_project(settings: Settings, scale: Scale, args) -> dict:
    """(c') Every SQL model of the last full build, run in plain DuckDB (bench/duckdb_project_floor.py)."""
    from bench import duckdb_project_floor
    from flows.transform import DBT_PROJECT, dbt_paths

    database = settings.lake_dir.parent / "floor-project.duckdb"
    database.unlink(missing_ok=True)
    try:
        return duckdb_project_floor.run(dbt_paths(settings)[0] / "manifest.json", DBT_PROJECT, database)
    finally:
        database.unlink(missing_ok=True)


@stage("write_archives")
def write_archives(settings: Settings, scale: Scale, args) -> dict:
    """Export the raw 1-minute klines as Binance monthly archive zips (preparation, not measured).

    One read per symbol (its own partition folders), split into months in memory: a query per
    symbol and month over the whole lake took ten minutes at 50 symbols.
    """
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    files = 0
    raw = settings.lake_dir / "raw"
    with duckdb.connect() as con:
        con.execute("set timezone = 'UTC'")
        for symbol_dir in sorted(raw.glob("*/klines/symbol=*")):
            symbol = symbol_dir.name.split("=", 1)[1]
            files_glob = str(symbol_dir / "**" / "*.parquet").replace("'", "''")
            table = con.sql(
                "select strftime(open_time, '%Y-%m') as month, epoch_ms(open_time) as open_time, open, "
                "high, low, close, volume, epoch_ms(close_time) as close_time, quote_volume, num_trades, "
                "taker_buy_base_volume, taker_buy_quote_volume, 0 as ignore "
                f"from read_parquet('{files_glob}', hive_partitioning = false, union_by_name = true) "
                "where interval = '1m' order by open_time"
            ).to_arrow_table()
            months = table.column("month")
            for month in pc.unique(months).to_pylist():
                rows = table.filter(pc.equal(months, month)).drop_columns(["month"])
                name = f"{symbol}-1m-{month}"
                csv_path = folder / f"{name}.csv"
                pacsv.write_csv(rows, csv_path, pacsv.WriteOptions(include_header=False))
                with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
                    archive.write(csv_path, f"{name}.csv")
                csv_path.unlink()
                files += 1
    return {"files": files}


@stage("archive")
def archive(settings: Settings, scale: Scale, args) -> dict:
    """Import the archive zips into this (fresh) lake's landing zone."""
    from flows.sources.binance_archive import import_archives

    result = import_archives([Path(args.output)], settings)
    notes = result.notes["archives"]
    return {**notes, "errors": result.notes["errors"][:3]}


@stage("dashboard")
def dashboard(settings: Settings, scale: Scale, args) -> dict:
    """Cold render of the dashboard's router and each page over the published snapshot."""
    from streamlit.testing.v1 import AppTest

    os.environ["LAKEHOUSE_LAKE_DIR"] = str(settings.lake_dir)
    app_dir = PROJECT_ROOT / "dashboards"
    pages = {"(router)": app_dir / "streamlit_app.py"}
    pages.update({p.stem: p for p in sorted((app_dir / "app_pages").glob("*.py")) if p.stem != "__init__"})
    rendered = {}
    for name, path in pages.items():
        started = time.perf_counter()
        app = AppTest.from_file(str(path), default_timeout=120)
        app.run()
        rendered[name] = {
            "seconds": round(time.perf_counter() - started, 3),
            "exceptions": [str(e.value)[:200] for e in app.exception],
        }
    return {"pages": rendered}


@stage("prefect_warmup")
def prefect_warmup(settings: Settings, scale: Scale, args) -> dict:
    """An empty flow: creates Prefect's database under PREFECT_HOME, so the e2e runs start warm."""
    patient_prefect()
    from prefect import flow

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    return {"value": warmup()}


@stage("e2e")
def e2e(settings: Settings, scale: Scale, args) -> dict:
    """The real thing: the `lakehouse` Prefect flow, full refresh, on a fresh lake."""
    patient_prefect()
    from flows.pipeline import lakehouse

    summary = lakehouse(settings, full_refresh=True)
    return {"seconds": summary.get("seconds", {}), "snapshot_id": summary.get("snapshot_id")}


def patient_prefect() -> None:
    """Give Prefect's temporary server time to start on a busy machine (its default is 20 s)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="S")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--output", help="output folder (naive, floor, archives)")
    parser.add_argument("--full-refresh", action="store_true")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    settings = settings_for(args.lake, scale)
    result = STAGES[args.stage](settings, scale, args)
    args.out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    # Ended as `lakehouse` ends (flows.quick_exit): a stage's wall time is what a user waits for.
    quick_exit.exit_with(main())
