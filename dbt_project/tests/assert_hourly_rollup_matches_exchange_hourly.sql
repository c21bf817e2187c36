-- Built from a complete hour of 1-minute candles, fct_klines_hourly equals the exchange's own
-- 1h candle when the lake holds both from the same source. A warning, not an error: a source
-- may revise one interval and not the other. Hours are checked when either side was written
-- since the models' tests last passed (macros/tested_rows.sql).
{{ config(severity='warn') }}

with

hourly as (
    select * from {{ ref('fct_klines_hourly') }}
    where source_interval = '1m' and is_complete
),

exchange_hours as (
    select * from {{ ref('int_klines_unioned') }}
    where kline_interval = '1h'
),

compared_hours as (
    select
        hourly.market,
        hourly.symbol,
        hourly.open_time,
        hourly.open,
        hourly.high,
        hourly.low,
        hourly.close,
        hourly.volume,
        exchange_hours.source as exchange_source,
        exchange_hours.open_price,
        exchange_hours.high_price,
        exchange_hours.low_price,
        exchange_hours.close_price,
        exchange_hours.volume as exchange_volume
    from hourly
    inner join exchange_hours
        on
            hourly.market = exchange_hours.market
            and hourly.symbol = exchange_hours.symbol
            and hourly.open_time = exchange_hours.opened_at
    where
        {{ rows_to_check(ref('fct_klines_hourly'), 'hourly.loaded_at') }}
        or {{ rows_to_check(ref('int_klines_unioned'), 'exchange_hours.loaded_at') }}
),

minute_sources as (
    select
        minutes.market,
        minutes.symbol,
        date_trunc('hour', minutes.opened_at) as open_time,
        min(minutes.source) as source,
        count(distinct minutes.source) as sources
    from {{ ref('int_klines_unioned') }} as minutes
    semi join compared_hours
        on
            minutes.market = compared_hours.market
            and minutes.symbol = compared_hours.symbol
            and date_trunc('hour', minutes.opened_at) = compared_hours.open_time
    where minutes.kline_interval = '1m'
    group by minutes.market, minutes.symbol, date_trunc('hour', minutes.opened_at)
)

select
    compared_hours.market,
    compared_hours.symbol,
    compared_hours.open_time,
    compared_hours.close,
    compared_hours.close_price as exchange_close
from compared_hours
inner join minute_sources
    on
        compared_hours.market = minute_sources.market
        and compared_hours.symbol = minute_sources.symbol
        and compared_hours.open_time = minute_sources.open_time
where
    minute_sources.sources = 1
    and minute_sources.source = compared_hours.exchange_source
    and (
        compared_hours.open != compared_hours.open_price
        or compared_hours.close != compared_hours.close_price
        or compared_hours.high != compared_hours.high_price
        or compared_hours.low != compared_hours.low_price
        or abs(compared_hours.volume - compared_hours.exchange_volume)
        > 1e-6 * greatest(compared_hours.exchange_volume, 1)
    )
