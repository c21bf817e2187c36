{# Interval code (1m, 1h, ...) to a DuckDB interval; 1M is a calendar month. #}
{% macro interval_duration(column) -%}
    case {{ column }}
        when '1s' then interval 1 second
        when '1m' then interval 1 minute
        when '3m' then interval 3 minute
        when '5m' then interval 5 minute
        when '15m' then interval 15 minute
        when '30m' then interval 30 minute
        when '1h' then interval 1 hour
        when '2h' then interval 2 hour
        when '4h' then interval 4 hour
        when '6h' then interval 6 hour
        when '8h' then interval 8 hour
        when '12h' then interval 12 hour
        when '1d' then interval 1 day
        when '3d' then interval 3 day
        when '1w' then interval 7 day
        when '1M' then interval 1 month
    end
{%- endmacro %}


{#
    The staging body shared by every kline source (binance REST, archive, upload, synthetic):
    one row per (market, symbol, interval, open_time), the latest ingested copy wins.

    Rules, in the order applied (repair_rules lists the ones that touched a row):
    - duplicate copies of a key collapse to the latest ingested_at (ties: highest batch_id);
      duplicate_copies counts how many copies were seen. When no key repeats in what is read
      (no two files share a folder, or else checked exactly), the ranking window is skipped.
    - close_time_derived: a missing or inconsistent close_time becomes open_time + interval - 1 ms.
    - ohlc_bounds_repaired: high below max(open, close) is raised to it, low above min(open, close)
      is lowered to it (the candle's range must contain its open and close; the other bound, which
      may be the broken one, is left alone).
    - taker_volume_capped: taker-buy volume above the candle's volume is capped at the volume.
    - num_trades_imputed: a missing trade count becomes 0.
    - dropped (is_dropped, kept here, filtered out downstream): a missing or non-positive price or a
      negative or missing volume cannot be repaired without inventing a price; so is a negative
      quote volume. A missing quote volume (an upload of OHLCV only) is not a reason: it stays
      unknown, and so do the quote volume and VWAP of the periods it falls in.
    Prices are never capped: a real crash or squeeze must reach the marts as it happened.

    Kline staging is the one staging layer materialized (incremental, not a view): it is the
    largest dataset, and as a view every reader and test would dedupe millions of rows again.
    Incremental runs read only the raw files not read before (see macros/incremental.sql);
    their candles compete with the row already built for the same key, and the latest ingested
    copy still wins. duplicate_copies counts the copies read in the run that wrote the row.
#}
{% macro stage_klines(source_name) -%}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'kline_interval', 'opened_at'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook=["{{ create_lake_files_table() }}", "{{ reset_lake_files() }}"],
        post_hook=[
            "{{ prune_lake_files('" ~ source_name ~ "', 'klines') }}",
            "{{ record_lake_files('" ~ source_name ~ "', 'klines') }}",
            "{{ drop_lake_listing() }}",
        ],
    )
}}

with

{%- set source_relation = lake_source_new_files(source_name, 'klines', kline_raw_columns()) %}

source as (
    select * from {{ source_relation }}
),

deduplicated as (
    {% if lake_files_share_folders(source_relation, lake_listing_relation() if lists_lake_files() else none)
        and lake_keys_repeat(source_relation, ['market', 'symbol', 'interval', 'open_time']) %}
        select
            *,
            count(*) over key_window as duplicate_copies
        from source
        window key_window as (partition by market, symbol, interval, open_time)
        qualify row_number() over (
            partition by market, symbol, interval, open_time
            order by ingested_at desc, batch_id desc
        ) = 1
    {% else %}
        select
            *,
            1 as duplicate_copies
        from source
    {% endif %}
),

typed as (
    select
        cast(market as varchar) as market,
        cast(symbol as varchar) as symbol,
        cast(interval as varchar) as kline_interval,
        cast(open_time as timestamptz) as opened_at,
        cast(close_time as timestamptz) as reported_closed_at,
        cast(open as double) as open_price,
        cast(high as double) as reported_high_price,
        cast(low as double) as reported_low_price,
        cast(close as double) as close_price,
        cast(volume as double) as volume,
        cast(quote_volume as double) as quote_volume,
        cast(num_trades as bigint) as reported_num_trades,
        cast(taker_buy_base_volume as double) as reported_taker_buy_base_volume,
        cast(taker_buy_quote_volume as double) as reported_taker_buy_quote_volume,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at,
        cast(open_time as timestamptz)
        + {{ interval_duration('interval') }}
        - interval 1 millisecond as expected_closed_at
    from deduplicated
),

repaired as (
    select
        *,
        coalesce(
            open_price <= 0 or high_price <= 0 or low_price <= 0 or close_price <= 0
            or volume < 0 or coalesce(quote_volume < 0, false),
            true
        ) as is_dropped,
        concat_ws(
            ',',
            case
                when reported_closed_at is distinct from expected_closed_at
                    then 'close_time_derived'
            end,
            case
                when
                    reported_high_price < greatest(open_price, close_price)
                    or reported_low_price > least(open_price, close_price)
                    then 'ohlc_bounds_repaired'
            end,
            case
                when
                    reported_taker_buy_base_volume > volume
                    or reported_taker_buy_quote_volume > quote_volume
                    then 'taker_volume_capped'
            end,
            case when reported_num_trades is null then 'num_trades_imputed' end
        ) as repair_list
    from (
        select
            *,
            greatest(open_price, reported_high_price, close_price) as high_price,
            least(open_price, reported_low_price, close_price) as low_price
        from typed
    )
),

final as (
    select
        market,
        symbol,
        kline_interval,
        opened_at,
        expected_closed_at as closed_at,
        open_price,
        high_price,
        low_price,
        close_price,
        volume,
        quote_volume,
        coalesce(reported_num_trades, 0) as num_trades,
        -- least() skips nulls: an unknown taker volume must stay unknown, not become the volume.
        case
            when reported_taker_buy_base_volume is not null
                then least(reported_taker_buy_base_volume, volume)
        end as taker_buy_base_volume,
        case
            when reported_taker_buy_quote_volume is not null
                then least(reported_taker_buy_quote_volume, quote_volume)
        end as taker_buy_quote_volume,
        duplicate_copies,
        nullif(repair_list, '') as repair_rules,
        is_dropped,
        source,
        batch_id,
        ingested_at
    from repaired
),

{% if is_incremental() %}
    -- A candle read now replaces the built one only if it is the later ingested copy.
    built as (
        select this.* {{ "exclude (loaded_at)" if has_loaded_at() }}
        from {{ this }} as this
        semi join final
            on
                this.market = final.market
                and this.symbol = final.symbol
                and this.kline_interval = final.kline_interval
                and this.opened_at = final.opened_at
    ),

    competing as (
        select * from final
        union all by name
        select * from built
    ),

    latest as (
        select *
        from competing
        qualify row_number() over (
            partition by market, symbol, kline_interval, opened_at
            order by ingested_at desc, batch_id desc
        ) = 1
    )
{% else %}
    latest as (
        select * from final
    )
{% endif %}

select
    *,
    now() as loaded_at
from latest
{%- endmacro %}
