{#
    Rules (repair_rules lists the ones that touched a row):
    - duplicates of a user_id collapse to the latest ingested_at (ties: latest last_login_at).
    - balance_negative_zeroed / balance_imputed: a negative or missing balance becomes 0.
    - balance_capped: balances above var('user_balance_cap_usd') (default 50M USD) are capped;
      the synthetic Pareto tail and injected outliers stay visible but cannot swamp averages.
    - country_imputed / device_imputed: missing values become 'unknown'.
    - tiers_imputed: a missing vip_tier or kyc_level becomes 0 (the entry tier).
    - login_before_registration: a last login before registration is moved to registration.
    - dropped (is_dropped): a missing user_id or registered_at.
    days_since_registration is measured to the lake's as-of time (var('as_of') or, by default,
    the latest login in the data), so the same data always gives the same marts.
#}
-- A table, not a view: its dedupe would otherwise run again for every test and every reader.
{{ config(materialized='table') }}

with

source as (
    select * from {{ lake_source('synthetic', 'users', users_raw_columns()) }}
),

deduplicated as (
    select
        *,
        count(*) over (partition by user_id) as duplicate_copies
    from source
    qualify row_number() over (
        partition by user_id
        order by ingested_at desc, last_login_at desc nulls last, batch_id desc
    ) = 1
),

typed as (
    select
        cast(user_id as bigint) as user_id,
        cast(wallet_address as varchar) as wallet_address,
        cast(registered_at as timestamptz) as registered_at,
        cast(last_login_at as timestamptz) as reported_last_login_at,
        cast(account_balance_usd as double) as reported_balance_usd,
        upper(trim(cast(country as varchar))) as reported_country,
        lower(trim(cast(device_type as varchar))) as reported_device_type,
        cast(vip_tier as bigint) as reported_vip_tier,
        cast(kyc_level as bigint) as reported_kyc_level,
        cast(is_active as boolean) as is_active,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at
    from deduplicated
),

repaired as (
    select
        *,
        concat_ws(
            ',',
            case when reported_balance_usd < 0 then 'balance_negative_zeroed' end,
            case when reported_balance_usd is null then 'balance_imputed' end,
            case
                when reported_balance_usd > {{ var('user_balance_cap_usd') }}
                    then 'balance_capped'
            end,
            case when coalesce(reported_country, '') = '' then 'country_imputed' end,
            case when coalesce(reported_device_type, '') = '' then 'device_imputed' end,
            case
                when reported_vip_tier is null or reported_kyc_level is null then 'tiers_imputed'
            end,
            case
                when reported_last_login_at < registered_at then 'login_before_registration'
            end
        ) as repair_list
    from typed
),

as_of as (
    select
        coalesce(
            {{ "cast('" ~ var('as_of') ~ "' as timestamptz)" if var('as_of') else 'null' }},
            max(greatest(reported_last_login_at, registered_at))
        ) as as_of_at
    from typed
),

final as (
    select
        repaired.user_id,
        repaired.wallet_address,
        repaired.registered_at,
        greatest(repaired.reported_last_login_at, repaired.registered_at) as last_login_at,
        least(
            greatest(coalesce(repaired.reported_balance_usd, 0), 0),
            {{ var('user_balance_cap_usd') }}
        ) as account_balance_usd,
        coalesce(nullif(repaired.reported_country, ''), 'unknown') as country,
        coalesce(nullif(repaired.reported_device_type, ''), 'unknown') as device_type,
        coalesce(repaired.reported_vip_tier, 0) as vip_tier,
        coalesce(repaired.reported_kyc_level, 0) as kyc_level,
        coalesce(repaired.is_active, false) as is_active,
        cast(repaired.registered_at as date) as registration_date,
        extract(hour from repaired.registered_at) as registration_hour,
        isodow(repaired.registered_at) as registration_day_of_week,
        date_sub('day', repaired.registered_at, as_of.as_of_at) as days_since_registration,
        repaired.duplicate_copies,
        nullif(repaired.repair_list, '') as repair_rules,
        repaired.user_id is null or repaired.registered_at is null as is_dropped,
        repaired.source,
        repaired.batch_id,
        repaired.ingested_at
    from repaired
    cross join as_of
)

select * from final
