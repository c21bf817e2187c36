-- Audit of the raw kline feeds, per source and series: duplicate keys, nulls in required
-- columns, close times that disagree with open time + interval, open times off the interval
-- grid, and candles stamped in the future. Reads lake/raw directly (compiled SQL runs anywhere).
{%- set sources = ['binance', 'archive', 'upload', 'synthetic'] %}
with

{% for source_name in sources %}
    {{ source_name }}_klines as (
        select * from {{ lake_source(source_name, 'klines', kline_raw_columns()) }}
    ),
{% endfor %}

raw_klines as (
    {% for source_name in sources %}
        select
            '{{ source_name }}' as feed,
            *
        from {{ source_name }}_klines
        {% if not loop.last %}union all by name{% endif %}
    {% endfor %}
),

keyed as (
    select
        *,
        count(*) over (partition by feed, market, symbol, interval, open_time) as copies,
        {{ interval_duration('interval') }} as step
    from raw_klines
),

final as (
    select
        feed,
        market,
        symbol,
        interval as kline_interval,
        count(*) as raw_rows,
        count(*) filter (where copies > 1) as rows_with_duplicate_key,
        count(*) filter (
            where open is null or high is null or low is null or close is null
            or volume is null or open_time is null
        ) as rows_with_nulls,
        count(*) filter (
            where close_time != open_time + step - interval 1 millisecond
        ) as close_time_mismatches,
        count(*) filter (where time_bucket(step, open_time) != open_time) as off_grid_open_times,
        count(*) filter (where close_time > now()) as future_candles,
        min(open_time) as first_open_time,
        max(open_time) as last_open_time,
        max(ingested_at) as last_ingested_at
    from keyed
    group by feed, market, symbol, interval
)

select * from final
order by feed, market, symbol, kline_interval
