-- Trades per second per symbol: the live trade stream's last hour minute by minute, next to
-- the kline-based hourly rate for the whole history (which needs no stream).
with

stream as (
    select * from {{ ref('fct_trades_minutely') }}
),

klines as (
    select * from {{ ref('fct_order_flow_hourly') }}
),

latest as (
    select max(opened_at) as latest_opened_at from stream
),

stream_last_hour as (
    select
        stream.market,
        stream.symbol,
        'trade stream, last hour' as basis,
        avg(stream.trades_per_second) as avg_trades_per_second,
        max(stream.trades_per_second) as peak_trades_per_second,
        max(stream.opened_at) as latest_period
    from stream
    cross join latest
    where stream.opened_at >= latest.latest_opened_at - interval 1 hour
    group by stream.market, stream.symbol
),

kline_history as (
    select
        market,
        symbol,
        'klines, all hours' as basis,
        avg(trades_per_second) as avg_trades_per_second,
        max(trades_per_second) as peak_trades_per_second,
        max(open_time) as latest_period
    from klines
    group by market, symbol
)

select * from stream_last_hour
union all
select * from kline_history
order by symbol, basis
