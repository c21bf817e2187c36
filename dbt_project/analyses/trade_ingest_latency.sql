-- Ingest latency of the latest trades: per symbol, the last 15 minutes of the stream with the
-- exchange-event-to-lake delay percentiles (what a user waits before a trade is queryable).
with

latency as (
    select * from {{ ref('fct_trade_latency_minutely') }}
),

latest as (
    select max(opened_at) as latest_opened_at from latency
),

recent as (
    select latency.*
    from latency
    cross join latest
    where latency.opened_at >= latest.latest_opened_at - interval 15 minute
),

final as (
    select
        market,
        symbol,
        min(opened_at) as from_minute,
        max(opened_at) as to_minute,
        sum(agg_trade_count) as trades,
        sum(gap_filled_trade_count) as gap_filled_trades,
        median(p50_event_to_persist_ms) as median_p50_ms,
        max(p95_event_to_persist_ms) as worst_p95_ms,
        max(p99_event_to_persist_ms) as worst_p99_ms,
        max(max_event_to_persist_ms) as max_ms
    from recent
    group by market, symbol
)

select * from final
order by market, symbol
