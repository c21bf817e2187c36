{#-
    Tick-built 1-minute bars against Binance's own 1m klines for the same minutes, one row per
    (market, symbol, opened_at). Both come from the same trades, so a complete minute should
    match exactly: prices equal, volumes equal up to float rounding, and the individual trade
    count (sum of last - first + 1 over the aggregate trades) equal to the kline's num_trades.
    Minutes the stream covered only in part (is_complete false) are listed but not judged.
-#}
with

fct_trades_minutely as (
    select * from {{ ref('fct_trades_minutely') }}
),

stg_binance__klines as (
    select * from {{ ref('stg_binance__klines') }}
),

klines as (
    select *
    from stg_binance__klines
    where kline_interval = '1m' and not is_dropped
),

joined as (
    select
        ticks.market,
        ticks.symbol,
        ticks.opened_at,
        ticks.is_complete,
        klines.opened_at is not null as has_kline,
        ticks.open_price - klines.open_price as open_price_diff,
        ticks.high_price - klines.high_price as high_price_diff,
        ticks.low_price - klines.low_price as low_price_diff,
        ticks.close_price - klines.close_price as close_price_diff,
        ticks.volume as tick_volume,
        klines.volume as kline_volume,
        ticks.volume - klines.volume as volume_diff,
        ticks.taker_buy_volume - klines.taker_buy_base_volume as taker_buy_volume_diff,
        ticks.trade_count as tick_trade_count,
        klines.num_trades as kline_trade_count,
        ticks.trade_count - klines.num_trades as trade_count_diff,
    from fct_trades_minutely as ticks
    left join klines
        on
            ticks.market = klines.market
            and ticks.symbol = klines.symbol
            and ticks.opened_at = klines.opened_at
),

final as (
    select
        *,
        case
            when not is_complete or not has_kline then null
            else
                open_price_diff = 0
                and high_price_diff = 0
                and low_price_diff = 0
                and close_price_diff = 0
                and abs(volume_diff) <= 1e-9 * greatest(abs(kline_volume), 1)
                and abs(taker_buy_volume_diff) <= 1e-9 * greatest(abs(kline_volume), 1)
                and trade_count_diff = 0
        end as is_matched,
    from joined
)

select * from final
