with

source as (
    select * from {{ source('synthetic', 'klines') }}
),

deduplicated as (
    select *
    from source
    qualify row_number() over (
        partition by market, symbol, interval, open_time
        order by ingested_at desc, batch_id desc
    ) = 1
),

final as (
    select
        market,
        symbol,
        interval as kline_interval,
        open_time as opened_at,
        close_time as closed_at,
        open as open_price,
        high as high_price,
        low as low_price,
        close as close_price,
        volume,
        quote_volume,
        num_trades,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        source,
        batch_id,
        ingested_at
    from deduplicated
)

select * from final
