with

source as (
    select * from {{ lake_source('binance', 'exchange_info', exchange_info_raw_columns()) }}
),

deduplicated as (
    select
        *,
        count(*) over (partition by market, symbol, snapshot_at) as duplicate_copies
    from source
    qualify row_number() over (
        partition by market, symbol, snapshot_at
        order by ingested_at desc, batch_id desc
    ) = 1
),

parsed as (
    select
        *,
        from_json(
            filters,
            '[{"filterType": "VARCHAR", "tickSize": "VARCHAR", "stepSize": "VARCHAR",
              "minNotional": "VARCHAR", "notional": "VARCHAR"}]'
        ) as filter_list
    from deduplicated
),

final as (
    select
        cast(market as varchar) as market,
        cast(symbol as varchar) as symbol,
        cast(snapshot_at as timestamptz) as snapshot_at,
        lower(status) as symbol_status,
        upper(base_asset) as base_asset,
        upper(quote_asset) as quote_asset,
        nullif(contract_type, '') as contract_type,
        cast(onboard_date as timestamptz) as onboarded_at,
        try_cast(
            list_filter(filter_list, lambda f: f.filterType = 'PRICE_FILTER')[1].tickSize as double
        ) as tick_size,
        try_cast(
            list_filter(filter_list, lambda f: f.filterType = 'LOT_SIZE')[1].stepSize as double
        ) as step_size,
        try_cast(
            coalesce(
                list_filter(filter_list, lambda f: f.filterType = 'NOTIONAL')[1].minNotional,
                list_filter(filter_list, lambda f: f.filterType = 'MIN_NOTIONAL')[1].minNotional,
                list_filter(filter_list, lambda f: f.filterType = 'MIN_NOTIONAL')[1].notional
            ) as double
        ) as min_notional,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at
    from parsed
)

select * from final
