{# Raw dataset schemas (flows/schemas.py and the synthetic generators), for typed empty sources. #}

{% macro lineage_columns() -%}
    {{ return({"source": "varchar", "batch_id": "varchar", "ingested_at": "timestamptz"}) }}
{%- endmacro %}


{% macro kline_raw_columns() -%}
    {%- set columns = {
        "market": "varchar",
        "symbol": "varchar",
        "interval": "varchar",
        "open_time": "timestamptz",
        "close_time": "timestamptz",
        "open": "double",
        "high": "double",
        "low": "double",
        "close": "double",
        "volume": "double",
        "quote_volume": "double",
        "num_trades": "bigint",
        "taker_buy_base_volume": "double",
        "taker_buy_quote_volume": "double",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro exchange_info_raw_columns() -%}
    {%- set columns = {
        "market": "varchar",
        "symbol": "varchar",
        "status": "varchar",
        "base_asset": "varchar",
        "quote_asset": "varchar",
        "contract_type": "varchar",
        "onboard_date": "timestamptz",
        "filters": "varchar",
        "snapshot_at": "timestamptz",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro users_raw_columns() -%}
    {%- set columns = {
        "user_id": "bigint",
        "wallet_address": "varchar",
        "registered_at": "timestamptz",
        "last_login_at": "timestamptz",
        "account_balance_usd": "double",
        "country": "varchar",
        "device_type": "varchar",
        "vip_tier": "bigint",
        "kyc_level": "bigint",
        "is_active": "boolean",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro transactions_raw_columns() -%}
    {%- set columns = {
        "tx_id": "bigint",
        "occurred_at": "timestamptz",
        "from_user_id": "bigint",
        "to_user_id": "bigint",
        "from_address": "varchar",
        "to_address": "varchar",
        "tx_type": "varchar",
        "token_symbol": "varchar",
        "amount": "double",
        "fee": "double",
        "fee_token": "varchar",
        "leverage": "bigint",
        "status": "varchar",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro network_raw_columns() -%}
    {%- set columns = {
        "observed_at": "timestamptz",
        "gas_price_gwei": "double",
        "tps": "double",
        "block_time_s": "double",
        "difficulty": "double",
        "hashrate": "double",
    } -%}
    {%- do columns.update(lineage_columns()) -%}
    {{ return(columns) }}
{%- endmacro %}


{% macro gate_runs_raw_columns() -%}
    {{ return({
        "run_id": "varchar",
        "validated_at": "timestamptz",
        "gate": "varchar",
        "dataset": "varchar",
        "batches": "bigint",
        "rows_accepted": "bigint",
        "rows_quarantined": "bigint",
        "expectations_evaluated": "bigint",
        "expectations_failed": "bigint",
        "failed_expectations": "varchar",
        "success": "boolean",
    }) }}
{%- endmacro %}
