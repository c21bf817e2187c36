with

klines as (
    select * from {{ ref('stg_synthetic__klines') }}
    where kline_interval = '1m'
),

rolled_up as (
    select
        market,
        symbol,
        date_trunc('day', opened_at) as open_time,
        arg_min(open_price, opened_at) as open,
        max(high_price) as high,
        min(low_price) as low,
        arg_max(close_price, opened_at) as close,
        sum(volume) as volume,
        sum(quote_volume) as quote_volume,
        sum(num_trades) as num_trades,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        count(*) as candle_count
    from klines
    group by 1, 2, 3
),

final as (
    select
        market,
        symbol,
        open_time,
        open,
        high,
        low,
        close,
        volume,
        quote_volume,
        num_trades,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        quote_volume / nullif(volume, 0) as vwap,
        close / lag(close) over w - 1 as simple_return,
        ln(close / lag(close) over w) as log_return,
        candle_count,
        candle_count = 1440 as is_complete
    from rolled_up
    window w as (partition by market, symbol order by open_time)
)

select * from final
