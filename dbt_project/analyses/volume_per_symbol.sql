-- Total volume stored per symbol: candles, days covered, base and quote volume, trades.
with

daily as (
    select * from {{ ref('fct_klines_daily') }}
),

symbols as (
    select * from {{ ref('dim_symbols') }}
),

final as (
    select
        daily.market,
        daily.symbol,
        symbols.base_asset,
        symbols.quote_asset,
        count(*) as days_stored,
        sum(daily.candle_count) as candles_rolled_up,
        sum(daily.volume) as total_volume,
        sum(daily.quote_volume) as total_quote_volume,
        sum(daily.num_trades) as total_trades,
        min(daily.open_time) as first_day,
        max(daily.open_time) as last_day
    from daily
    left join symbols on daily.market = symbols.market and daily.symbol = symbols.symbol
    group by daily.market, daily.symbol, symbols.base_asset, symbols.quote_asset
)

select * from final
order by total_quote_volume desc
