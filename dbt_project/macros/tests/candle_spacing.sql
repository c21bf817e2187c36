{#
    Candles sit on their interval's grid and never overlap: each open time is a multiple of the
    interval (time_bucket) and the next candle of the same series opens at least one interval
    later. Gaps are allowed here (fct_candle_completeness counts them).
    interval: a fixed code like '1h', or interval_column naming a column that holds the code.
    loaded_column: on an incremental model, check only the series with rows written since its
    tests last passed, from one interval before the first of those rows (an earlier candle
    cannot overlap a later one without ending inside that interval); every series when every
    row is new.
#}
{% test candle_spacing(model, column_name, partition_by, interval=none, interval_column=none, loaded_column=none) %}
{%- set step = interval_duration(interval_column if interval_column else "'" ~ interval ~ "'") -%}
{%- set checked_step = interval_duration('checked.' ~ interval_column if interval_column else "'" ~ interval ~ "'") -%}
with

{% if not checks_every_row(model, loaded_column) %}
    changed_series as (
        select
            {{ partition_by | join(', ') }},
            min({{ column_name }}) as first_changed_at
        from {{ model }}
        where {{ rows_to_check(model, loaded_column) }}
        group by {{ partition_by | join(', ') }}
    ),

    scoped as (
        select checked.*
        from {{ model }} as checked
        inner join changed_series
            on
            {%- for column in partition_by %}
                checked.{{ column }} = changed_series.{{ column }} and
            {%- endfor %}
                checked.{{ column_name }} >= changed_series.first_changed_at - {{ checked_step }}
    ),
{% else %}
    scoped as (
        select * from {{ model }}
    ),
{% endif %}

candles as (
    select
        {{ column_name }} as opened_at,
        {{ step }} as step,
        lead({{ column_name }}) over (
            partition by {{ partition_by | join(', ') }}
            order by {{ column_name }}
        ) as next_opened_at
    from scoped
)

select *
from candles
where
    time_bucket(step, opened_at) != opened_at
    or next_opened_at < opened_at + step
{% endtest %}
