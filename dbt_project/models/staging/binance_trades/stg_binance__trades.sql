{#-
    One row per aggregate trade (market, symbol, agg_trade_id). The collector lands each trade
    once; should two copies still meet (a replayed range), the websocket copy wins (it carries
    the exchange event time), then the first persisted one (its latency is the real one).
-#}
with

source as (
    select * from {{ lake_source('binance_trades', 'trades', trade_raw_columns()) }}
),

deduplicated as (
    select
        *,
        count(*) over (partition by market, symbol, agg_trade_id) as duplicate_copies,
    from source
    qualify row_number() over (
        partition by market, symbol, agg_trade_id
        order by origin = 'ws' desc, ingested_at asc, batch_id asc
    ) = 1
),

final as (
    select
        cast(market as varchar) as market,
        cast(symbol as varchar) as symbol,
        cast(agg_trade_id as bigint) as agg_trade_id,
        cast(first_trade_id as bigint) as first_trade_id,
        cast(last_trade_id as bigint) as last_trade_id,
        cast(last_trade_id - first_trade_id + 1 as bigint) as trade_count,
        cast(price as double) as price,
        cast(quantity as double) as quantity,
        cast(price * quantity as double) as quote_quantity,
        cast(not is_buyer_maker as boolean) as is_taker_buy,
        cast(trade_time as timestamptz) as traded_at,
        cast(event_time as timestamptz) as event_at,
        cast(received_at as timestamptz) as received_at,
        cast(ingested_at as timestamptz) as persisted_at,
        epoch_ms(received_at) - epoch_ms(event_time) as event_to_receive_ms,
        epoch_ms(ingested_at) - epoch_ms(event_time) as event_to_persist_ms,
        coalesce(origin = 'rest', false) as is_gap_filled,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at,
    from deduplicated
)

select * from final
