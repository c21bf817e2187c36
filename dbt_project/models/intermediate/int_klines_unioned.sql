{#
    One candle per (market, symbol, interval, open_time) across every kline source.
    Precedence when sources overlap: binance REST (1) > archive (2) > upload (3) > synthetic (4).
    REST is the exchange's own live answer and the only source that sees late corrections;
    the archive is the same exchange data published as daily/monthly dumps; an upload is a file
    of unknown provenance a user supplied; synthetic data is made up and must never shadow real
    candles. Within one source the latest ingested copy already won in staging.
    Incremental: only candles staged since this model last ran are merged (loaded_at, see
    macros/incremental.sql), each against the row already built for its key, so a new
    low-precedence copy cannot replace a better one.
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
),

archive_klines as (
    select
        *,
        2 as source_rank
    from {{ ref('stg_archive__klines') }}
),

upload_klines as (
    select
        *,
        3 as source_rank
    from {{ ref('stg_upload__klines') }}
),

synthetic_klines as (
    select
        *,
        4 as source_rank
    from {{ ref('stg_synthetic__klines') }}
),

candidates as (
    select * from binance_klines
    union all by name
    select * from archive_klines
    union all by name
    select * from upload_klines
    union all by name
    select * from synthetic_klines
),

new_candles as (
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
        ingested_at
    from candidates
    where
        not is_dropped
        {% if is_incremental() %}
            and loaded_at > {{ loaded_watermark() }}
        {% endif %}
),

{% if is_incremental() %}
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
{% endif %}

ranked as (
    select * from new_candles
    {% if is_incremental() %}
        union all by name
        select * from built_candles
    {% endif %}
),

final as (
    select
        *,
        now() as loaded_at
    from ranked
    qualify row_number() over (
        partition by market, symbol, kline_interval, opened_at
        order by source_rank asc, ingested_at desc
    ) = 1
)

select * from final
