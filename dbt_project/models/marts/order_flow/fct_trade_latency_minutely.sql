{#-
    Ingest latency of the live stream, one row per (market, symbol, opened_at minute of the
    trades): percentiles of exchange event to batch persist (what a user waits for a trade to be
    queryable) and of event to receipt (the network share of it). Gap-filled trades have no
    event time, so they are counted but not in the percentiles.
-#}
with

trades as (
    select * from {{ ref('stg_binance__trades') }}
),

final as (
    select
        market,
        symbol,
        date_trunc('minute', traded_at) as opened_at,
        count(*) as agg_trade_count,
        count(*) filter (where is_gap_filled) as gap_filled_trade_count,
        count(distinct batch_id) as batch_count,
        quantile_cont(event_to_persist_ms, 0.5) as p50_event_to_persist_ms,
        quantile_cont(event_to_persist_ms, 0.95) as p95_event_to_persist_ms,
        quantile_cont(event_to_persist_ms, 0.99) as p99_event_to_persist_ms,
        max(event_to_persist_ms) as max_event_to_persist_ms,
        quantile_cont(event_to_receive_ms, 0.5) as p50_event_to_receive_ms,
        quantile_cont(event_to_receive_ms, 0.99) as p99_event_to_receive_ms,
    from trades
    group by market, symbol, date_trunc('minute', traded_at)
)

select * from final
