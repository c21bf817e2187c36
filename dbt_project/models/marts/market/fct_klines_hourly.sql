{#
    Hourly candles rolled up from the finest interval present for each market, symbol and hour
    (1m, else 1h). Returns compare with the immediately preceding hour only: across a missing
    hour they are null rather than a multi-hour return. Realized volatility is the root of the
    summed squared 1-minute log returns (each against the minute before, across hour bounds).
    Incremental runs rebuild, per symbol, every hour from the earliest candle merged into
    int_klines_unioned since this model last ran (loaded_at), reading one extra hour before it
    for the returns.
#}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'open_time'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with

-- Not materialized: an incremental run reads it twice, each time for a few rows.
klines as not materialized (
    select *
    from {{ ref('int_klines_unioned') }}
    where kline_interval in ('1m', '1h')
),

{% if is_incremental() %}
    changed_symbols as (
        select
            market,
            symbol,
            date_trunc('hour', min(opened_at)) as rebuild_from
        from klines
        where loaded_at > {{ loaded_watermark() }}
        group by market, symbol
    ),

    scoped as (
        select
            klines.*,
            changed_symbols.rebuild_from
        from klines
        inner join changed_symbols
            on klines.market = changed_symbols.market and klines.symbol = changed_symbols.symbol
        where klines.opened_at >= changed_symbols.rebuild_from - interval 1 hour
    ),
{% else %}
    scoped as (
        select
            *,
            cast(null as timestamptz) as rebuild_from
        from klines
    ),
{% endif %}

with_minute_returns as (
    select
        *,
        case
            when
                kline_interval = '1m'
                and lag(opened_at) over minutes = opened_at - interval 1 minute
                then ln(close_price / lag(close_price) over minutes)
        end as minute_log_return
    from scoped
    window minutes as (partition by market, symbol, kline_interval order by opened_at)
),

rolled_up as (
    select
        market,
        symbol,
        date_trunc('hour', opened_at) as open_time,
        kline_interval as source_interval,
        arg_min(open_price, opened_at) as open,
        max(high_price) as high,
        min(low_price) as low,
        arg_max(close_price, opened_at) as close,
        sum(volume) as volume,
        sum(quote_volume) as quote_volume,
        cast(sum(num_trades) as bigint) as num_trades,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        sqrt(sum(minute_log_return * minute_log_return)) as realized_volatility,
        count(*) as candle_count,
        max(ingested_at) as max_ingested_at,
        any_value(rebuild_from) as rebuild_from
    from with_minute_returns
    group by market, symbol, date_trunc('hour', opened_at), kline_interval
),

finest_interval as (
    select *
    from rolled_up
    qualify row_number() over (
        partition by market, symbol, open_time
        order by case source_interval when '1m' then 1 else 2 end
    ) = 1
),

with_returns as (
    select
        *,
        case
            when lag(open_time) over periods = open_time - interval 1 hour
                then lag(close) over periods
        end as previous_close
    from finest_interval
    window periods as (partition by market, symbol order by open_time)
),

final as (
    select
        market,
        symbol,
        open_time,
        open_time + interval 1 hour - interval 1 millisecond as close_time,
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
        close / previous_close - 1 as simple_return,
        ln(close / previous_close) as log_return,
        realized_volatility,
        source_interval,
        candle_count,
        case source_interval when '1m' then 60 else 1 end as expected_candle_count,
        candle_count = expected_candle_count as is_complete,
        max_ingested_at,
        now() as loaded_at
    from with_returns
    where rebuild_from is null or open_time >= rebuild_from
)

select * from final
