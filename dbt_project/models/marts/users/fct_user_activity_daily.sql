{# Daily active users: users who initiated at least one transaction that day, any status. #}
with

transactions as (
    select * from {{ ref('fct_transactions') }}
    where initiator_user_id > 0
),

first_days as (
    select
        initiator_user_id,
        min(occurred_date) as first_active_date
    from transactions
    group by initiator_user_id
),

final as (
    select
        transactions.occurred_date as activity_date,
        count(distinct transactions.initiator_user_id) as active_users,
        count(distinct transactions.initiator_user_id) filter (
            where transactions.occurred_date = first_days.first_active_date
        ) as first_time_users,
        count(*) as transactions,
        count(*) filter (where transactions.is_completed) as completed_transactions,
        -- Amount outliers (flagged in fct_transactions) are left out of the sums, as in
        -- fct_transaction_activity_daily: one unit error upstream would swamp a day's volume.
        sum(transactions.amount_usd) filter (
            where transactions.is_completed and transactions.is_amount_outlier is not true
        ) as volume_usd,
        sum(transactions.fee_usd) filter (
            where transactions.is_completed and transactions.is_amount_outlier is not true
        ) as fees_usd,
        count(*) / count(distinct transactions.initiator_user_id) as transactions_per_user
    from transactions
    inner join first_days on transactions.initiator_user_id = first_days.initiator_user_id
    group by transactions.occurred_date
)

select * from final
