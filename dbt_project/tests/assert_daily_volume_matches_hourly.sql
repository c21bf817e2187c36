-- A day rolled up from 1-minute candles holds exactly the volume, trades and extremes of its
-- hours (the daily mart is rolled up from the hourly one; this catches a rollup or incremental
-- drift).
with

daily as (
    select * from {{ ref('fct_klines_daily') }}
    where source_interval = '1m'
),

hourly as (
    select * from {{ ref('fct_klines_hourly') }}
    where source_interval = '1m'
),

hours_per_day as (
    select
        market,
        symbol,
        date_trunc('day', open_time) as day_open_time,
        sum(volume) as volume,
        sum(num_trades) as num_trades,
        max(high) as high,
        min(low) as low,
        sum(candle_count) as candle_count
    from hourly
    group by market, symbol, date_trunc('day', open_time)
)

select
    daily.market,
    daily.symbol,
    daily.open_time,
    daily.volume,
    hours_per_day.volume as hourly_volume
from daily
inner join hours_per_day
    on
        daily.market = hours_per_day.market
        and daily.symbol = hours_per_day.symbol
        and daily.open_time = hours_per_day.day_open_time
where
    daily.candle_count = hours_per_day.candle_count
    and (
        abs(daily.volume - hours_per_day.volume) > 1e-9 * greatest(daily.volume, 1)
        or daily.num_trades != hours_per_day.num_trades
        or daily.high != hours_per_day.high
        or daily.low != hours_per_day.low
    )
