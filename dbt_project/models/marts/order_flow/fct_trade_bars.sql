{#-
    OHLC bars built from ticks, one row per (market, symbol, bar_interval, opened_at), for every
    bar length in the trade_bar_intervals seed (1s, 1m, 5m). Open and close are the trades with
    the lowest and highest aggregate id in the bar: ids follow the exchange's matching order,
    which timestamps alone cannot (many trades share a millisecond).
-#}
with

trades as (
    select * from {{ ref('stg_binance__trades') }}
),

trade_bar_intervals as (
    select * from {{ ref('trade_bar_intervals') }}
),

bucketed as (
    select
        trades.market,
        trades.symbol,
        trade_bar_intervals.bar_interval,
        trade_bar_intervals.bar_seconds,
        trades.agg_trade_id,
        trades.trade_count,
        trades.price,
        trades.quantity,
        trades.quote_quantity,
        trades.is_taker_buy,
        time_bucket(to_seconds(trade_bar_intervals.bar_seconds), trades.traded_at) as opened_at,
    from trades
    cross join trade_bar_intervals
),

aggregated as (
    select
        market,
        symbol,
        bar_interval,
        opened_at,
        any_value(bar_seconds) as bar_seconds,
        arg_min(price, agg_trade_id) as open_price,
        max(price) as high_price,
        min(price) as low_price,
        arg_max(price, agg_trade_id) as close_price,
        sum(quantity) as volume,
        sum(quote_quantity) as quote_volume,
        sum(case when is_taker_buy then quantity else 0 end) as taker_buy_volume,
        sum(case when is_taker_buy then quote_quantity else 0 end) as taker_buy_quote_volume,
        count(*) as agg_trade_count,
        sum(trade_count) as trade_count,
        min(agg_trade_id) as first_agg_trade_id,
        max(agg_trade_id) as last_agg_trade_id,
    from bucketed
    group by market, symbol, bar_interval, opened_at
),

final as (
    select
        market,
        symbol,
        bar_interval,
        opened_at,
        opened_at + to_seconds(bar_seconds) - interval 1 millisecond as closed_at,
        open_price,
        high_price,
        low_price,
        close_price,
        quote_volume / nullif(volume, 0) as vwap,
        volume,
        quote_volume,
        taker_buy_volume,
        volume - taker_buy_volume as taker_sell_volume,
        2 * taker_buy_volume - volume as volume_delta,
        taker_buy_quote_volume,
        agg_trade_count,
        trade_count,
        trade_count / bar_seconds as trades_per_second,
        first_agg_trade_id,
        last_agg_trade_id,
        last_agg_trade_id - first_agg_trade_id + 1 <> agg_trade_count as has_missing_trades,
    from aggregated
)

select * from final
