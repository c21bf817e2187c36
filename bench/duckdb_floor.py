"""Floor (c): the market marts' SQL run straight in DuckDB over the raw parquet (no dbt, gates, Prefect)."""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

from bench.naive_pandas import CORRELATION_WINDOWS, MIN_CORRELATION_OBSERVATIONS

# The same definitions as the dbt marts and bench.naive_pandas; views, so DuckDB plans each output.
VIEWS = """
create or replace view klines as
with source as (
    select * from read_parquet($raw_glob, hive_partitioning = false, union_by_name = true)
    where interval = '1m'
),
deduplicated as (
    select * from source
    qualify row_number() over (
        partition by market, symbol, interval, open_time order by ingested_at desc, batch_id desc
    ) = 1
)
select
    *,
    case when lag(open_time) over w = open_time - interval 1 minute
        then ln(close / lag(close) over w) end as minute_log_return
from deduplicated
window w as (partition by market, symbol order by open_time);

create or replace macro rollup(grain, step, minutes) as table
with rolled_up as (
    select
        market,
        symbol,
        date_trunc(grain, open_time) as open_time,
        arg_min(open, open_time) as open,
        max(high) as high,
        min(low) as low,
        arg_max(close, open_time) as close,
        sum(volume) as volume,
        sum(quote_volume) as quote_volume,
        sum(num_trades) as num_trades,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        sqrt(sum(minute_log_return * minute_log_return)) as realized_volatility,
        count(*) as candle_count
    from klines
    group by all
),
with_previous as (
    select
        *,
        case when lag(open_time) over w = open_time - step then lag(close) over w end as previous_close
    from rolled_up
    window w as (partition by market, symbol order by open_time)
)
select
    market, symbol, open_time, open, high, low, close, volume, quote_volume, num_trades,
    taker_buy_base_volume, taker_buy_quote_volume,
    quote_volume / nullif(volume, 0) as vwap,
    close / previous_close - 1 as simple_return,
    ln(close / previous_close) as log_return,
    realized_volatility,
    candle_count,
    candle_count = minutes as is_complete
from with_previous;

create or replace table klines_hourly as
select * from rollup('hour', interval 1 hour, 60) order by market, symbol, open_time;

create or replace table klines_daily as
select * from rollup('day', interval 1 day, 1440) order by market, symbol, open_time;

create or replace view volatility_daily as
select
    market,
    symbol,
    cast(open_time as date) as trading_date,
    log_return,
    realized_volatility,
    sqrt(power(ln(high / low), 2) / (4 * ln(2))) as parkinson_volatility,
    sqrt(greatest(
        0.5 * power(ln(high / low), 2) - (2 * ln(2) - 1) * power(ln(close / open), 2), 0
    )) as garman_klass_volatility
from klines_daily
order by market, symbol, trading_date;

create or replace view order_flow_hourly as
select
    market,
    symbol,
    open_time,
    taker_buy_base_volume as taker_buy_volume,
    volume - taker_buy_base_volume as taker_sell_volume,
    2 * taker_buy_base_volume - volume as volume_delta,
    sum(2 * taker_buy_base_volume - volume) over (
        partition by market, symbol, cast(open_time as date) order by open_time
    ) as cvd_daily,
    sum(2 * taker_buy_base_volume - volume) over (
        partition by market, symbol order by open_time
    ) as cvd_running
from klines_hourly
order by market, symbol, open_time;

create or replace view return_correlations as
with pairs as (
    select a.market, a.symbol as symbol_a, b.symbol as symbol_b, a.open_time,
        a.log_return as x, b.log_return as y
    from klines_hourly as a
    inner join klines_hourly as b
        on a.market = b.market and a.open_time = b.open_time and a.symbol < b.symbol
),
windowed as (
    select
        market, symbol_a, symbol_b, open_time,
        $windowed_columns
    from pairs
    window $window_clauses
)
$final_selects
order by market, symbol_a, symbol_b, window_end, return_window;
"""


def _correlation_sql(sql: str) -> str:
    """Expand the per-window columns of the correlation view (one window per mart window)."""
    columns, clauses, selects = [], [], []
    for label, hours in CORRELATION_WINDOWS.items():
        name = f"w{label}"
        columns.append(f"corr(x, y) over {name} as c{label}, count(x + y) over {name} as n{label}")
        clauses.append(
            f"{name} as (partition by market, symbol_a, symbol_b order by open_time "
            f"range between interval {hours - 1} hour preceding and current row)"
        )
        selects.append(
            f"select market, symbol_a, symbol_b, open_time + interval 1 hour as window_end, "
            f"'{label}' as return_window, {hours} as window_hours, "
            f"case when n{label} >= {MIN_CORRELATION_OBSERVATIONS} then c{label} end as correlation, "
            f"n{label} as observations from windowed where extract(hour from open_time) = 23"
        )
    return (
        sql.replace("$windowed_columns", ",\n        ".join(columns))
        .replace("$window_clauses", ",\n        ".join(clauses))
        .replace("$final_selects", "\nunion all\n".join(selects))
    )


OUTPUTS = ("klines_hourly", "klines_daily", "volatility_daily", "order_flow_hourly", "return_correlations")


def connect(raw_glob: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # The marts are UTC: day and hour boundaries must not follow the machine's zone.
    con.execute("set timezone = 'UTC'")
    sql = _correlation_sql(VIEWS).replace("$raw_glob", "'" + raw_glob.replace("'", "''") + "'")
    con.execute(sql)
    return con


def run(raw_glob: str, out_dir: Path) -> dict[str, int]:
    """Build every output and write one parquet per mart; returns row counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    with connect(raw_glob) as con:
        for name in OUTPUTS:
            path = out_dir / f"{name}.parquet"
            con.execute(f"copy (select * from {name}) to '{path}' (format parquet, compression zstd)")
            counts[name] = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_glob")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    print(run(args.raw_glob, args.out_dir))


if __name__ == "__main__":
    main()
