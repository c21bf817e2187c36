{#
    Rules (repair_rules lists the ones that touched a row):
    - duplicates of a tx_id collapse to the latest ingested_at (late-arriving corrections win).
    - fee_imputed / fee_negative_zeroed: a missing or negative fee becomes 0.
    - fee_token_imputed: a missing fee token is the transaction's token.
    - leverage_imputed: a futures transaction without leverage gets 1 (other types carry no
      leverage: missing there is normal and becomes 0 unflagged).
    - leverage_capped: futures leverage is clamped to 1..125 (Binance's maximum); other types
      carry no leverage, so any value there becomes 0.
    - amount_sign_repaired: a negative amount is taken as its absolute value (a sign error; the
      direction is already given by from/to).
    - dropped (is_dropped): a missing tx_id, occurred_at or token, or a missing or zero amount.
    USD values need market data, so amount_usd and its outlier flags are added in fct_transactions.
#}
-- A table, not a view: its dedupe would otherwise run again for every test and every reader.
-- loaded_at (when it was built) tells fct_transactions which rows to price again.
{{ config(materialized='table') }}

with

{%- set source_relation = lake_source('synthetic', 'transactions', transactions_raw_columns()) %}

source as (
    select * from {{ source_relation }}
),

-- Ranked only when a tx_id repeats (checked exactly first): the window sorts every row.
deduplicated as (
    {% if lake_keys_repeat(source_relation, ['tx_id']) %}
        select
            *,
            count(*) over (partition by tx_id) as duplicate_copies
        from source
        qualify row_number() over (
            partition by tx_id
            order by ingested_at desc, batch_id desc
        ) = 1
    {% else %}
        select
            *,
            1 as duplicate_copies
        from source
    {% endif %}
),

typed as (
    select
        cast(tx_id as bigint) as tx_id,
        cast(occurred_at as timestamptz) as occurred_at,
        cast(from_user_id as bigint) as from_user_id,
        cast(to_user_id as bigint) as to_user_id,
        cast(from_address as varchar) as from_address,
        cast(to_address as varchar) as to_address,
        lower(trim(cast(tx_type as varchar))) as tx_type,
        upper(trim(cast(token_symbol as varchar))) as token_symbol,
        cast(amount as double) as reported_amount,
        cast(fee as double) as reported_fee,
        upper(trim(cast(fee_token as varchar))) as reported_fee_token,
        cast(leverage as double) as reported_leverage,
        lower(trim(cast(status as varchar))) as status,
        duplicate_copies,
        cast(source as varchar) as source,
        cast(batch_id as varchar) as batch_id,
        cast(ingested_at as timestamptz) as ingested_at
    from deduplicated
),

repaired as (
    select
        *,
        case
            when tx_type = 'futures'
                then least(greatest(round(coalesce(reported_leverage, 1)), 1), 125)
            else 0
        end as leverage,
        concat_ws(
            ',',
            case when reported_fee is null then 'fee_imputed' end,
            case when reported_fee < 0 then 'fee_negative_zeroed' end,
            case when coalesce(reported_fee_token, '') = '' then 'fee_token_imputed' end,
            case when tx_type = 'futures' and reported_leverage is null then 'leverage_imputed' end,
            case
                when
                    reported_leverage is not null
                    and (
                        (tx_type = 'futures' and reported_leverage not between 1 and 125)
                        or (tx_type != 'futures' and reported_leverage != 0)
                    )
                    then 'leverage_capped'
            end,
            case when reported_amount < 0 then 'amount_sign_repaired' end
        ) as repair_list
    from typed
),

final as (
    select
        tx_id,
        occurred_at,
        from_user_id,
        to_user_id,
        from_address,
        to_address,
        tx_type,
        token_symbol,
        abs(reported_amount) as amount,
        greatest(coalesce(reported_fee, 0), 0) as fee,
        coalesce(nullif(reported_fee_token, ''), token_symbol) as fee_token,
        cast(leverage as bigint) as leverage,
        status,
        cast(occurred_at as date) as occurred_date,
        date_trunc('minute', occurred_at) as occurred_minute,
        extract(hour from occurred_at) as hour_of_day,
        isodow(occurred_at) as day_of_week,
        duplicate_copies,
        nullif(repair_list, '') as repair_rules,
        coalesce(
            tx_id is null or occurred_at is null or token_symbol is null
            or reported_amount is null or reported_amount = 0,
            true
        ) as is_dropped,
        source,
        batch_id,
        ingested_at,
        now() as loaded_at
    from repaired
)

select * from final
