{#
    Candles sit on their interval's grid and never overlap: each open time is a multiple of the
    interval (time_bucket) and the next candle of the same series opens at least one interval
    later. Gaps are allowed here (fct_candle_completeness counts them).
    interval: a fixed code like '1h', or interval_column naming a column that holds the code.
#}
{% test candle_spacing(model, column_name, partition_by, interval=none, interval_column=none) %}
{%- set step = interval_duration(interval_column if interval_column else "'" ~ interval ~ "'") -%}
with

candles as (
    select
        {{ column_name }} as opened_at,
        {{ step }} as step,
        lead({{ column_name }}) over (
            partition by {{ partition_by | join(', ') }}
            order by {{ column_name }}
        ) as next_opened_at
    from {{ model }}
)

select *
from candles
where
    time_bucket(step, opened_at) != opened_at
    or next_opened_at < opened_at + step
{% endtest %}
