{#- The raw trades dataset's schema (flows/sources/trades_stream.py), for the typed empty source. -#}
{% macro trade_raw_columns() -%}
    {%- set columns = {
        "market": "varchar",
        "symbol": "varchar",
        "agg_trade_id": "bigint",
        "price": "double",
        "quantity": "double",
        "first_trade_id": "bigint",
        "last_trade_id": "bigint",
        "trade_time": "timestamptz",
        "is_buyer_maker": "boolean",
        "event_time": "timestamptz",
        "received_at": "timestamptz",
        "origin": "varchar",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}
