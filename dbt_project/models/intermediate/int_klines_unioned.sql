{#
    One candle per (market, symbol, interval, open_time) across every kline source.
    Precedence when sources overlap: binance REST (1) > archive (2) > upload (3) > synthetic (4).
    REST is the exchange's own live answer and the only source that sees late corrections;
    the archive is the same exchange data published as daily/monthly dumps; an upload is a file
    of unknown provenance a user supplied; synthetic data is made up and must never shadow real
    candles. Within one source the latest ingested copy already won in staging.
    A full build applies the precedence as a cascade of anti joins (each staging model is unique
    on the key). Incremental: only candles staged since this model last ran are merged
    (loaded_at, see macros/incremental.sql), each against the row already built for its key,
    so a new low-precedence copy cannot replace a better one.
#}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'kline_interval', 'opened_at'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with

binance_klines as (
    select
        *,
        1 as source_rank
    from {{ ref('stg_binance__klines') }}
    where not is_dropped and {{ loaded_since_last_run() }}
),

archive_klines as (
    select
        *,
        2 as source_rank
    from {{ ref('stg_archive__klines') }}
    where not is_dropped and {{ loaded_since_last_run() }}
),

upload_klines as (
    select
        *,
        3 as source_rank
    from {{ ref('stg_upload__klines') }}
    where not is_dropped and {{ loaded_since_last_run() }}
),

synthetic_klines as (
    select
        *,
        4 as source_rank
    from {{ ref('stg_synthetic__klines') }}
    where not is_dropped and {{ loaded_since_last_run() }}
),

{% if is_incremental() %}
    new_candles as (
        select * from binance_klines
        union all by name
        select * from archive_klines
        union all by name
        select * from upload_klines
        union all by name
        select * from synthetic_klines
    ),

    built_candles as (
        select this.* {{ "exclude (loaded_at)" if has_loaded_at() }}
        from {{ this }} as this
        semi join new_candles
            on
                this.market = new_candles.market
                and this.symbol = new_candles.symbol
                and this.kline_interval = new_candles.kline_interval
                and this.opened_at = new_candles.opened_at
    ),

    candidates as (
        select * from new_candles
        union all by name
        select * from built_candles
    ),

    -- New candles compete with the row already built for their key.
    ranked as (
        select *
        from candidates
        qualify row_number() over (
            partition by market, symbol, kline_interval, opened_at
            order by source_rank asc, ingested_at desc
        ) = 1
    ),
{% else %}
    -- Each staging model holds one row per key, so a full build applies the precedence as a
    -- cascade: a source's candles count only where no better source has one (anti joins are
    -- four times faster than ranking every candle in a window).
    binance_keys as (
        select
            market,
            symbol,
            kline_interval,
            opened_at
        from binance_klines
    ),

    archive_or_better_keys as (
        select * from binance_keys
        union all
        select
            market,
            symbol,
            kline_interval,
            opened_at
        from archive_klines
    ),

    upload_or_better_keys as (
        select * from archive_or_better_keys
        union all
        select
            market,
            symbol,
            kline_interval,
            opened_at
        from upload_klines
    ),

    ranked as (
        select * from binance_klines
        union all by name
        select archive_klines.*
        from archive_klines
        anti join binance_keys
            on
                archive_klines.market = binance_keys.market
                and archive_klines.symbol = binance_keys.symbol
                and archive_klines.kline_interval = binance_keys.kline_interval
                and archive_klines.opened_at = binance_keys.opened_at
        union all by name
        select upload_klines.*
        from upload_klines
        anti join archive_or_better_keys
            on
                upload_klines.market = archive_or_better_keys.market
                and upload_klines.symbol = archive_or_better_keys.symbol
                and upload_klines.kline_interval = archive_or_better_keys.kline_interval
                and upload_klines.opened_at = archive_or_better_keys.opened_at
        union all by name
        select synthetic_klines.*
        from synthetic_klines
        anti join upload_or_better_keys
            on
                synthetic_klines.market = upload_or_better_keys.market
                and synthetic_klines.symbol = upload_or_better_keys.symbol
                and synthetic_klines.kline_interval = upload_or_better_keys.kline_interval
                and synthetic_klines.opened_at = upload_or_better_keys.opened_at
    ),
{% endif %}

final as (
    select
        market,
        symbol,
        kline_interval,
        opened_at,
        closed_at,
        open_price,
        high_price,
        low_price,
        close_price,
        volume,
        quote_volume,
        num_trades,
        taker_buy_base_volume,
        taker_buy_quote_volume,
        source,
        source_rank,
        batch_id,
        ingested_at,
        now() as loaded_at
    from ranked
)

select * from final
