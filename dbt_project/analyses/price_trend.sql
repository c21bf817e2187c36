-- Daily price trend of one symbol (--vars '{symbol: ETHUSDT}') with its moving averages and
-- the support/resistance zone it trades in: where the close sits between the 20-day levels.
with

daily as (
    select * from {{ ref('fct_klines_daily') }}
    where symbol = '{{ var("symbol", "BTCUSDT") }}'
),

technicals as (
    select * from {{ ref('fct_technicals_daily') }}
    where symbol = '{{ var("symbol", "BTCUSDT") }}'
),

final as (
    select
        daily.market,
        daily.symbol,
        technicals.trading_date,
        daily.close,
        technicals.sma_7,
        technicals.sma_20,
        technicals.sma_50,
        technicals.support_20d,
        technicals.resistance_20d,
        (daily.close - technicals.support_20d)
        / nullif(technicals.resistance_20d - technicals.support_20d, 0) as position_in_range,
        case
            when technicals.sma_20 is null then 'warming up'
            when daily.close <= technicals.support_20d * 1.02 then 'at support'
            when daily.close >= technicals.resistance_20d * 0.98 then 'at resistance'
            when technicals.sma_7 > technicals.sma_20 then 'uptrend'
            else 'downtrend'
        end as zone
    from daily
    inner join technicals
        on
            daily.market = technicals.market
            and daily.symbol = technicals.symbol
            and cast(daily.open_time as date) = technicals.trading_date
)

select * from final
order by market, trading_date
