{#
    The grain test (what dbt_utils.unique_combination_of_columns gives, plus not_null): no two
    rows share the listed columns and none of them is null. One scan instead of one per column.
#}
{% test unique_combination(model, columns) %}
select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having
    count(*) > 1
    {%- for column in columns %}
        or {{ column }} is null
    {%- endfor %}
{% endtest %}
