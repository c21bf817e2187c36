{# A candle's range contains its open and close: low <= min(open, close), high >= max(open, close). #}
{% test ohlc_consistency(model, open='open', high='high', low='low', close='close') %}
select *
from {{ model }}
where
    {{ low }} > least({{ open }}, {{ close }})
    or {{ high }} < greatest({{ open }}, {{ close }})
    or {{ low }} > {{ high }}
    or {{ low }} <= 0
{% endtest %}
