{#
    Pearson correlation of hourly log returns for every pair of symbols in a market, over the
    trailing 1, 7 and 30 days, evaluated at the end of each UTC day. Hours where either return
    is missing do not count; correlation needs at least 3 observations, and is null where either
    series does not vary in the window (it is undefined there).
    Incremental: a run recomputes the day ends from the earliest hour fct_klines_hourly wrote
    since its last run, reading the longest window further back.
#}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol_a', 'symbol_b', 'window_end', 'return_window'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}
{% set rebuild_from = earliest_new(ref('fct_klines_hourly'), 'open_time') or "timestamptz 'infinity'" %}

with

pairs as (
    select * from {{ ref('int_symbol_pairs_joined') }}
    where open_time >= {{ rebuild_from }} - interval 720 hour
),

windowed as (
    select
        market,
        symbol_a,
        symbol_b,
        open_time,
        {%- for label, hours in [('1d', 24), ('7d', 168), ('30d', 720)] %}
            {{ defined_or_null('corr(log_return_a, log_return_b) over last_' ~ label) }} as correlation_{{ label }},
            count(log_return_a + log_return_b) over last_{{ label }} as observations_{{ label }},
        {%- endfor %}
    from pairs
    window
        last_1d as (
            partition by market, symbol_a, symbol_b order by open_time
            range between interval 23 hour preceding and current row
        ),
        last_7d as (
            partition by market, symbol_a, symbol_b order by open_time
            range between interval 167 hour preceding and current row
        ),
        last_30d as (
            partition by market, symbol_a, symbol_b order by open_time
            range between interval 719 hour preceding and current row
        )
),

day_ends as (
    select *
    from windowed
    where extract(hour from open_time) = 23 and open_time >= {{ rebuild_from }}
),

final as (
    {%- for label, hours in [('1d', 24), ('7d', 168), ('30d', 720)] %}
        select
            market,
            symbol_a,
            symbol_b,
            open_time + interval 1 hour as window_end,
            '{{ label }}' as return_window,
            {{ hours }} as window_hours,
            case when observations_{{ label }} >= 3 then correlation_{{ label }} end as correlation,
            observations_{{ label }} as observations,
            now() as loaded_at
        from day_ends
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
)

select * from final
