{#
    Taker-buy volume is part of the volume, so never larger (a relative 1e-9 float tolerance).
    loaded_column: on an incremental model, check only the rows written since its tests last passed.
#}
{% test taker_volume_within_volume(model, column_name, volume_column, loaded_column=none) %}
select *
from {{ model }}
where
    {{ rows_to_check(model, loaded_column) }}
    and {{ column_name }} > {{ volume_column }} * (1 + 1e-9)
{% endtest %}
