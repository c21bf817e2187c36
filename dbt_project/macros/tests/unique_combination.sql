{#
    The grain test (what dbt_utils.unique_combination_of_columns gives, plus not_null): no two
    rows share the listed columns and none of them is null. One scan instead of one per column.
    loaded_column: on an incremental model, only the keys of rows written since its tests last
    passed are checked, each against the whole table (when every row is new, the plain form).
#}
{% test unique_combination(model, columns, loaded_column=none) %}
{%- set key = columns | join(', ') -%}
{%- if checks_every_row(model, loaded_column) %}
select
    {{ key }},
    count(*) as n_rows
from {{ model }}
group by {{ key }}
having
    count(*) > 1
    {%- for column in columns %}
        or {{ column }} is null
    {%- endfor %}
{%- else %}
with

changed_keys as (
    select distinct {{ key }}
    from {{ model }}
    where {{ rows_to_check(model, loaded_column) }}
)

select
    {% for column in columns %}checked.{{ column }}, {% endfor %}
    count(*) as n_rows
from {{ model }} as checked
semi join changed_keys
    on
    {%- for column in columns %}
        checked.{{ column }} = changed_keys.{{ column }}{{ " and" if not loop.last }}
    {%- endfor %}
group by {% for column in columns %}checked.{{ column }}{{ ", " if not loop.last }}{% endfor %}
having count(*) > 1
union all
select
    {{ key }},
    1 as n_rows
from changed_keys
where
    {%- for column in columns %}
        {{ column }} is null{{ " or" if not loop.last }}
    {%- endfor %}
{%- endif %}
{% endtest %}
