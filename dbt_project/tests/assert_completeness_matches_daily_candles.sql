-- The candles fct_candle_completeness counts present on a day are the 1-minute candles
-- fct_klines_daily rolled up for that day.
with

completeness as (
    select * from {{ ref('fct_candle_completeness') }}
    where kline_interval = '1m'
),

daily as (
    select * from {{ ref('fct_klines_daily') }}
    where source_interval = '1m'
)

select
    daily.market,
    daily.symbol,
    daily.open_time,
    daily.candle_count,
    completeness.present_candles
from daily
inner join completeness
    on
        daily.market = completeness.market
        and daily.symbol = completeness.symbol
        and cast(daily.open_time as date) = completeness.candle_date
where daily.candle_count != completeness.present_candles
