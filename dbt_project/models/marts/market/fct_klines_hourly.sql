{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'open_time'],
        incremental_strategy='delete+insert',
    )
}}

{{ kline_rollup('hour') }}
