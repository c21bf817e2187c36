{# Taker-buy volume is part of the volume, so never larger (a relative 1e-9 float tolerance). #}
{% test taker_volume_within_volume(model, column_name, volume_column) %}
select *
from {{ model }}
where {{ column_name }} > {{ volume_column }} * (1 + 1e-9)
{% endtest %}
