{#
    The expected candle grid: every open time between a symbol's first and last candle of each
    fixed-length interval, with the candle that filled it or is_missing. Monthly (1M) candles
    have no fixed length and are left out.
#}
with

klines as (
    select
        market,
        symbol,
        kline_interval,
        opened_at,
        source
    from {{ ref('int_klines_unioned') }}
    where kline_interval != '1M'
),

bounds as (
    select
        market,
        symbol,
        kline_interval,
        min(opened_at) as first_opened_at,
        max(opened_at) as last_opened_at
    from klines
    group by market, symbol, kline_interval
),

grid as (
    select
        market,
        symbol,
        kline_interval,
        unnest(
            generate_series(
                first_opened_at, last_opened_at, {{ interval_duration('kline_interval') }}
            )
        ) as opened_at
    from bounds
),

final as (
    select
        grid.market,
        grid.symbol,
        grid.kline_interval,
        grid.opened_at,
        klines.source,
        klines.opened_at is null as is_missing
    from grid
    left join klines
        on
            grid.market = klines.market
            and grid.symbol = klines.symbol
            and grid.kline_interval = klines.kline_interval
            and grid.opened_at = klines.opened_at
)

select * from final
