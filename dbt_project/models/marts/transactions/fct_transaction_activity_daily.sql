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
        sum(amount) filter (where is_completed) as completed_amount,
        sum(amount_usd) filter (where is_completed) as completed_volume_usd,
        sum(fee_usd) filter (where is_completed) as fees_usd,
        avg(amount_usd) filter (where is_completed) as average_amount_usd,
        count(distinct initiator_user_id) as active_users
    from transactions
    group by occurred_date, token_symbol, tx_type
)

select * from final
