{#
    Rules (repair_rules lists the ones that touched a row):
    - duplicates of an observed_at minute collapse to the latest ingested_at.
    - out_of_range_nulled: negative values, and gas above var('gas_price_cap_gwei') (default
      10,000 gwei, far beyond any real congestion), are treated as sensor errors and nulled.
    - metric_imputed: a missing metric is filled with the last observed value before it (carry
      forward), the usual choice for a slowly moving gauge sampled every minute.
    - dropped (is_dropped): a missing observed_at.
#}
-- A table, not a view: its dedupe would otherwise run again for every test and every reader.
{{ config(materialized='table') }}

with

source as (
    select * from {{ lake_source('synthetic', 'network', network_raw_columns()) }}
),

deduplicated as (
    select
        *,
        count(*) over (partition by date_trunc('minute', observed_at)) as duplicate_copies
    from source
    qualify row_number() over (
        partition by date_trunc('minute', observed_at)
        order by ingested_at desc, batch_id desc
    ) = 1
),

typed as (
    select
        date_trunc('minute', cast(observed_at as timestamptz)) as observed_at,
        cast(gas_price_gwei as double) as reported_gas_price_gwei,
        cast(tps as double) as reported_tps,
        cast(block_time_s as double) as reported_block_time_s,
        cast(difficulty as double) as reported_difficulty,
        cast(hashrate as double) as reported_hashrate,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at
    from deduplicated
),

in_range as (
    select
        *,
        case
            when reported_gas_price_gwei between 0 and {{ var('gas_price_cap_gwei') }}
                then reported_gas_price_gwei
        end as gas_in_range,
        case when reported_tps >= 0 then reported_tps end as tps_in_range,
        case when reported_block_time_s >= 0 then reported_block_time_s end as block_time_in_range,
        case when reported_difficulty >= 0 then reported_difficulty end as difficulty_in_range,
        case when reported_hashrate >= 0 then reported_hashrate end as hashrate_in_range
    from typed
),

imputed as (
    select
        *,
        last_value(gas_in_range ignore nulls) over carry as gas_price_gwei,
        last_value(tps_in_range ignore nulls) over carry as tps,
        last_value(block_time_in_range ignore nulls) over carry as block_time_s,
        last_value(difficulty_in_range ignore nulls) over carry as difficulty,
        last_value(hashrate_in_range ignore nulls) over carry as hashrate,
        concat_ws(
            ',',
            case
                when
                    (reported_gas_price_gwei is not null and gas_in_range is null)
                    or reported_tps < 0 or reported_block_time_s < 0
                    or reported_difficulty < 0 or reported_hashrate < 0
                    then 'out_of_range_nulled'
            end,
            case
                when
                    gas_in_range is null or tps_in_range is null or block_time_in_range is null
                    or difficulty_in_range is null or hashrate_in_range is null
                    then 'metric_imputed'
            end
        ) as repair_list
    from in_range
    window carry as (order by observed_at rows between unbounded preceding and current row)
),

final as (
    select
        observed_at,
        gas_price_gwei,
        tps,
        block_time_s,
        difficulty,
        hashrate,
        date_trunc('hour', observed_at) as observed_hour,
        extract(hour from observed_at) as hour_of_day,
        isodow(observed_at) as day_of_week,
        duplicate_copies,
        nullif(repair_list, '') as repair_rules,
        observed_at is null as is_dropped,
        source,
        batch_id,
        ingested_at
    from imputed
)

select * from final
