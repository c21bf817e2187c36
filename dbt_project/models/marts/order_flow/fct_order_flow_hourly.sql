{#
    Hourly order flow from the klines' taker volumes: takers buying lift the ask, takers selling
    hit the bid, so volume_delta = taker buy - taker sell volume, in base units. Cumulative volume
    delta (CVD) runs within the UTC day and over the symbol's whole history.
#}
with

hourly as (
    select * from {{ ref('fct_klines_hourly') }}
),

flows as (
    select
        market,
        symbol,
        open_time,
        volume,
        quote_volume,
        num_trades,
        taker_buy_base_volume as taker_buy_volume,
        volume - taker_buy_base_volume as taker_sell_volume,
        taker_buy_quote_volume,
        quote_volume - taker_buy_quote_volume as taker_sell_quote_volume,
        2 * taker_buy_base_volume - volume as volume_delta,
        2 * taker_buy_quote_volume - quote_volume as quote_volume_delta
    from hourly
),

final as (
    select
        market,
        symbol,
        open_time,
        volume,
        taker_buy_volume,
        taker_sell_volume,
        volume_delta,
        quote_volume,
        taker_buy_quote_volume,
        taker_sell_quote_volume,
        quote_volume_delta,
        sum(volume_delta) over (
            partition by market, symbol, cast(open_time as date)
            order by open_time
            rows between unbounded preceding and current row
        ) as cvd_daily,
        sum(volume_delta) over (
            partition by market, symbol
            order by open_time
            rows between unbounded preceding and current row
        ) as cvd_running,
        taker_buy_volume / nullif(volume, 0) as taker_buy_ratio,
        num_trades,
        num_trades / 3600.0 as trades_per_second
    from flows
)

select * from final
