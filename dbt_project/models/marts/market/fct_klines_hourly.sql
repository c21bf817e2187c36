{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'open_time'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

{{ kline_rollup('hour') }}
