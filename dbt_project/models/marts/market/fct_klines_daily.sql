{#
    Daily candles from the finest interval present for each market, symbol and day: 1m, else
    1h, else 1d. Days with 1m or 1h candles are rolled up from fct_klines_hourly, whose hours
    already come from the finest interval of each hour: a day has 1-minute candles exactly when
    one of its hours was built from them, and a day's sums, extremes, first open, last close and
    realized variance are those of its hours, so this equals rolling the candles up directly
    (assert_daily_volume_matches_hourly checks it) without sorting every minute a second time.
    Returns compare with the immediately preceding day only.
    Incremental runs rebuild, per symbol, every day from the earliest hour (or 1d candle) written
    upstream since this model last ran (loaded_at), reading one extra day for the returns.
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

-- Not materialized: an incremental run reads each twice, each time for a few rows.
fct_klines_hourly as not materialized (
    select * from {{ ref('fct_klines_hourly') }}
),

daily_klines as not materialized (
    select *
    from {{ ref('int_klines_unioned') }}
    where kline_interval = '1d'
),

{% if is_incremental() %}
    changed_symbols as (
        select
            market,
            symbol,
            date_trunc('day', min(changed_at)) as rebuild_from
        from (
            select
                market,
                symbol,
                open_time as changed_at
            from fct_klines_hourly
            where {{ loaded_since_last_run() }}
            union all
            select
                market,
                symbol,
                opened_at as changed_at
            from daily_klines
            where {{ loaded_since_last_run() }}
        ) as changed
        group by market, symbol
    ),

    scoped_hours as (
        select
            fct_klines_hourly.*,
            changed_symbols.rebuild_from
        from fct_klines_hourly
        inner join changed_symbols
            on
                fct_klines_hourly.market = changed_symbols.market
                and fct_klines_hourly.symbol = changed_symbols.symbol
        where fct_klines_hourly.open_time >= changed_symbols.rebuild_from - interval 1 day
    ),

    scoped_days as (
        select
            daily_klines.*,
            changed_symbols.rebuild_from
        from daily_klines
        inner join changed_symbols
            on
                daily_klines.market = changed_symbols.market
                and daily_klines.symbol = changed_symbols.symbol
        where daily_klines.opened_at >= changed_symbols.rebuild_from - interval 1 day
    ),
{% else %}
    scoped_hours as (
        select
            *,
            cast(null as timestamptz) as rebuild_from
        from fct_klines_hourly
    ),

    scoped_days as (
        select
            *,
            cast(null as timestamptz) as rebuild_from
        from daily_klines
    ),
{% endif %}

rolled_up_hours as (
    select
        market,
        symbol,
        date_trunc('day', open_time) as open_time,
        source_interval,
        arg_min(open, open_time) as open,
        max(high) as high,
        min(low) as low,
        arg_max(close, open_time) as close,
        sum(volume) as volume,
        sum(quote_volume) as quote_volume,
        cast(sum(num_trades) as bigint) as num_trades,
        sum(taker_buy_base_volume) as taker_buy_base_volume,
        sum(taker_buy_quote_volume) as taker_buy_quote_volume,
        sqrt(sum(realized_volatility * realized_volatility)) as realized_volatility,
        cast(sum(candle_count) as bigint) as candle_count,
        max(max_ingested_at) as max_ingested_at,
        any_value(rebuild_from) as rebuild_from
    from scoped_hours
    group by market, symbol, date_trunc('day', open_time), source_interval
),

day_candles as (
    select
        market,
        symbol,
        date_trunc('day', opened_at) as open_time,
        kline_interval as source_interval,
        open_price as open,
        high_price as high,
        low_price as low,
        close_price as close,
        volume,
        quote_volume,
        num_trades,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        cast(null as double) as realized_volatility,
        cast(1 as bigint) as candle_count,
        ingested_at as max_ingested_at,
        rebuild_from
    from scoped_days
),

finest_interval as (
    select *
    from (
        select * from rolled_up_hours
        union all by name
        select * from day_candles
    ) as candidates
    qualify row_number() over (
        partition by market, symbol, open_time
        order by case source_interval when '1m' then 1 when '1h' then 2 else 3 end
    ) = 1
),

with_returns as (
    select
        *,
        case
            when lag(open_time) over days = open_time - interval 1 day
                then lag(close) over days
        end as previous_close
    from finest_interval
    window days as (partition by market, symbol order by open_time)
),

final as (
    select
        market,
        symbol,
        open_time,
        open_time + interval 1 day - interval 1 millisecond as close_time,
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
        case source_interval when '1m' then 1440 when '1h' then 24 else 1 end as expected_candle_count,
        candle_count = expected_candle_count as is_complete,
        max_ingested_at,
        now() as loaded_at
    from with_returns
    where rebuild_from is null or open_time >= rebuild_from
)

select * from final
