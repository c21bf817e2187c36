{#
    Hourly closes and log returns of every pair of symbols in the same market (symbol_a sorts
    before symbol_b), aligned on the hour; hours where either side has no candle are left out.
#}
with

hourly as (
    select
        market,
        symbol,
        open_time,
        close,
        log_return
    from {{ ref('fct_klines_hourly') }}
),

final as (
    select
        a.market,
        a.symbol as symbol_a,
        b.symbol as symbol_b,
        a.open_time,
        a.close as close_a,
        b.close as close_b,
        ln(a.close) as log_price_a,
        ln(b.close) as log_price_b,
        a.log_return as log_return_a,
        b.log_return as log_return_b
    from hourly as a
    inner join hourly as b
        on a.market = b.market and a.open_time = b.open_time and a.symbol < b.symbol
)

select * from final
