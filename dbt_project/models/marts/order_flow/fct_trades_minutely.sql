{#-
    One row per (market, symbol, opened_at minute) from ticks: OHLC, VWAP, taker buy and sell
    volume, cumulative volume delta (within the UTC day and over the whole stream) and trades per
    second. is_complete says the stream covered the whole minute: no aggregate id is missing
    inside it and the ids run on without a break from the minute before and into the one after,
    so the first and last minute of a stream session (partial) are not complete.
-#}
with

fct_trade_bars as (
    select * from {{ ref('fct_trade_bars') }}
),

minutes as (
    select *
    from fct_trade_bars
    where bar_interval = '1m'
),

with_neighbours as (
    select
        *,
        lag(last_agg_trade_id) over symbol_minutes as previous_last_agg_trade_id,
        lead(first_agg_trade_id) over symbol_minutes as next_first_agg_trade_id,
    from minutes
    window symbol_minutes as (partition by market, symbol order by opened_at)
),

final as (
    select
        market,
        symbol,
        opened_at,
        closed_at,
        open_price,
        high_price,
        low_price,
        close_price,
        vwap,
        volume,
        quote_volume,
        taker_buy_volume,
        taker_sell_volume,
        volume_delta,
        sum(volume_delta) over (
            partition by market, symbol, cast(opened_at as date)
            order by opened_at
            rows between unbounded preceding and current row
        ) as cvd_daily,
        sum(volume_delta) over (
            partition by market, symbol
            order by opened_at
            rows between unbounded preceding and current row
        ) as cvd_running,
        agg_trade_count,
        trade_count,
        trades_per_second,
        first_agg_trade_id,
        last_agg_trade_id,
        coalesce(
            not has_missing_trades
            and previous_last_agg_trade_id + 1 = first_agg_trade_id
            and next_first_agg_trade_id - 1 = last_agg_trade_id,
            false
        ) as is_complete,
    from with_neighbours
)

select * from final
