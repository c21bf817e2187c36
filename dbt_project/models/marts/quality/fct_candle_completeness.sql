with

grid as (
    select * from {{ ref('int_klines_gridded') }}
),

final as (
    select
        market,
        symbol,
        kline_interval,
        cast(opened_at as date) as candle_date,
        count(*) as expected_candles,
        count(*) filter (where not is_missing) as present_candles,
        count(*) filter (where is_missing) as missing_candles,
        count(*) filter (where not is_missing) / count(*) as completeness_ratio,
        min(opened_at) filter (where is_missing) as first_missing_at,
        count(*) filter (where is_missing) = 0 as is_complete
    from grid
    group by market, symbol, kline_interval, cast(opened_at as date)
)

select * from final
