with

transactions as (
    select * from {{ ref('fct_transactions') }}
),

final as (
    select
        occurred_date as activity_date,
        token_symbol,
        tx_type,
        count(*) as transactions,
        count(*) filter (where is_completed) as completed_transactions,
        count(*) filter (where status = 'failed') as failed_transactions,
        -- Amount outliers are kept in fct_transactions (flagged) but left out of the sums, so one
        -- absurd amount cannot dominate a day's volume.
        count(*) filter (where is_completed and is_amount_outlier) as outlier_transactions,
        sum(amount) filter (where is_completed and not is_amount_outlier) as completed_amount,
        sum(amount_usd) filter (where is_completed and not is_amount_outlier) as completed_volume_usd,
        sum(fee_usd) filter (where is_completed and not is_amount_outlier) as fees_usd,
        avg(amount_usd) filter (where is_completed and not is_amount_outlier) as average_amount_usd,
        count(distinct initiator_user_id) as active_users
    from transactions
    group by occurred_date, token_symbol, tx_type
)

select * from final
