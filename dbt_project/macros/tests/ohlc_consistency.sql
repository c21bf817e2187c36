{#
    A candle's range contains its open and close: low <= min(open, close), high >= max(open, close).
    loaded_column: on an incremental model, check only the rows written since its tests last passed.
#}
{% test ohlc_consistency(model, open='open', high='high', low='low', close='close', loaded_column=none) %}
select *
from {{ model }}
where
    {{ rows_to_check(model, loaded_column) }}
    and (
        {{ low }} > least({{ open }}, {{ close }})
        or {{ high }} < greatest({{ open }}, {{ close }})
        or {{ low }} > {{ high }}
        or {{ low }} <= 0
    )
{% endtest %}
