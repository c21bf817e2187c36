-- Built from a complete hour of 1-minute candles, fct_klines_hourly equals the exchange's own
-- 1h candle when the lake holds both from the same source. A warning, not an error: a source
-- may revise one interval and not the other.
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

minute_sources as (
    select
        market,
        symbol,
        date_trunc('hour', opened_at) as open_time,
        min(source) as source,
        count(distinct source) as sources
    from {{ ref('int_klines_unioned') }}
    where kline_interval = '1m'
    group by market, symbol, date_trunc('hour', opened_at)
)

select
    hourly.market,
    hourly.symbol,
    hourly.open_time,
    hourly.close,
    exchange_hours.close_price as exchange_close
from hourly
inner join minute_sources
    on
        hourly.market = minute_sources.market
        and hourly.symbol = minute_sources.symbol
        and hourly.open_time = minute_sources.open_time
inner join exchange_hours
    on
        hourly.market = exchange_hours.market
        and hourly.symbol = exchange_hours.symbol
        and hourly.open_time = exchange_hours.opened_at
where
    minute_sources.sources = 1
    and minute_sources.source = exchange_hours.source
    and (
        hourly.open != exchange_hours.open_price
        or hourly.close != exchange_hours.close_price
        or hourly.high != exchange_hours.high_price
        or hourly.low != exchange_hours.low_price
        or abs(hourly.volume - exchange_hours.volume) > 1e-6 * greatest(exchange_hours.volume, 1)
    )
