{#
    Expected against present candles per market, symbol, interval and UTC date, over the grid of
    int_klines_gridded (every open time between a series' first and last candle).
    Incremental: a new candle changes its own date and, when it extends a series, every date
    from the series' last built one (whose expected count grows with the new last candle). A run
    rebuilds all dates from the earliest such date (a constant, so it reaches the grid's scans).
#}
-- depends_on: {{ ref('int_klines_unioned') }}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'kline_interval', 'candle_date'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}
{% set rebuild_from = "timestamptz '-infinity'" %}
{% if execute and is_incremental() %}
    {% set earliest = run_query(
        "select cast(min(least(changed.first_new_date, built.last_date)) as varchar) from ("
        ~ " select market, symbol, kline_interval, cast(min(opened_at) as date) as first_new_date"
        ~ " from " ~ ref('int_klines_unioned') ~ " where kline_interval != '1M' and " ~ loaded_since_last_run()
        ~ " group by all) as changed left join ("
        ~ " select market, symbol, kline_interval, max(candle_date) as last_date from " ~ this
        ~ " group by all) as built using (market, symbol, kline_interval)"
    ).columns[0].values()[0] %}
    {% set rebuild_from = "timestamptz '" ~ earliest ~ " 00:00:00+00'" if earliest is not none else "timestamptz 'infinity'" %}
{% endif %}

with

grid as (
    select * from {{ ref('int_klines_gridded') }}
    where opened_at >= {{ rebuild_from }}
),

final as (
    select
        market,
        symbol,
        kline_interval,
        cast(opened_at as date) as candle_date,
        count(*) as expected_candles,
        count(*) filter (where not is_missing) as present_candles,
        count(*) filter (where is_missing) as missing_candles,
        count(*) filter (where not is_missing) / count(*) as completeness_ratio,
        min(opened_at) filter (where is_missing) as first_missing_at,
        count(*) filter (where is_missing) = 0 as is_complete,
        now() as loaded_at
    from grid
    group by market, symbol, kline_interval, cast(opened_at as date)
)

select * from final
