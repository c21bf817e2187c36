{#
    Volumes, counts and amounts are never below zero.
    loaded_column: on an incremental model, check only the rows written since its tests last passed.
#}
{% test non_negative(model, column_name, loaded_column=none) %}
select *
from {{ model }}
where
    {{ rows_to_check(model, loaded_column) }}
    and {{ column_name }} < 0
{% endtest %}
