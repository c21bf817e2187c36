{#
    One row per user with RFM scores over completed transactions the user initiated:
    - recency_days: days from the last one to the as-of time (var('as_of'), else the latest
      transaction in the data); frequency: how many; monetary_usd: their USD volume, amount
      outliers (flagged in fct_transactions) left out, as in the daily activity marts.
    - each is scored 1-5 by quintile among active users (5 = most recent / most / largest);
      ties are split by user_id so the scores are reproducible.
    - segment, first rule that matches: no_activity (no transactions), champions (R, F, M >= 4),
      loyal (R >= 3 and F >= 3), promising (R >= 4), at_risk (R <= 2 and F >= 3),
      hibernating (R <= 2), needs_attention (the rest).
#}
with

users as (
    select * from {{ ref('stg_synthetic__users') }}
    where not is_dropped
),

transactions as (
    select * from {{ ref('fct_transactions') }}
    where is_completed and initiator_user_id is not null
),

as_of as (
    select
        coalesce(
            {{ "cast('" ~ var('as_of') ~ "' as timestamptz)" if var('as_of') else 'null' }},
            max(occurred_at)
        ) as as_of_at
    from {{ ref('fct_transactions') }}
),

activity as (
    select
        initiator_user_id as user_id,
        min(occurred_at) as first_transaction_at,
        max(occurred_at) as last_transaction_at,
        count(*) as frequency,
        coalesce(sum(amount_usd) filter (where is_amount_outlier is not true), 0) as monetary_usd
    from transactions
    group by initiator_user_id
),

scored as (
    select
        activity.*,
        date_diff('day', activity.last_transaction_at, as_of.as_of_at) as recency_days,
        ntile(5) over (order by activity.last_transaction_at, activity.user_id) as recency_score,
        ntile(5) over (order by activity.frequency, activity.user_id) as frequency_score,
        ntile(5) over (order by activity.monetary_usd, activity.user_id) as monetary_score
    from activity
    cross join as_of
),

final as (
    select
        users.user_id,
        users.wallet_address,
        users.registered_at,
        users.registration_date,
        users.last_login_at,
        users.days_since_registration,
        users.account_balance_usd,
        users.country,
        users.device_type,
        users.vip_tier,
        users.kyc_level,
        users.is_active,
        scored.first_transaction_at,
        scored.last_transaction_at,
        scored.recency_days,
        coalesce(scored.frequency, 0) as frequency,
        coalesce(scored.monetary_usd, 0) as monetary_usd,
        scored.recency_score,
        scored.frequency_score,
        scored.monetary_score,
        case
            when scored.user_id is not null
                then
                    cast(scored.recency_score as varchar)
                    || cast(scored.frequency_score as varchar)
                    || cast(scored.monetary_score as varchar)
        end as rfm_cell,
        case
            when scored.user_id is null then 'no_activity'
            when
                scored.recency_score >= 4 and scored.frequency_score >= 4
                and scored.monetary_score >= 4
                then 'champions'
            when scored.recency_score >= 3 and scored.frequency_score >= 3 then 'loyal'
            when scored.recency_score >= 4 then 'promising'
            when scored.recency_score <= 2 and scored.frequency_score >= 3 then 'at_risk'
            when scored.recency_score <= 2 then 'hibernating'
            else 'needs_attention'
        end as segment
    from users
    left join scored on users.user_id = scored.user_id
)

select * from final
