{# The var('top_traders') users with the most completed trade and futures volume in USD
   (amount outliers left out of the sums, as in the daily activity mart). #}
with

trades as (
    select * from {{ ref('fct_transactions') }}
    where tx_type in ('trade', 'futures') and is_completed and initiator_user_id > 0
),

per_user as (
    select
        initiator_user_id as user_id,
        count(*) as trades,
        count(*) filter (where tx_type = 'futures') as futures_trades,
        -- As in fct_transaction_activity_daily: amount outliers are counted, not summed, so one
        -- absurd amount (a unit error upstream) cannot put a user at the top.
        sum(amount_usd) filter (where not is_amount_outlier) as volume_usd,
        count(*) filter (where is_amount_outlier) as outlier_trades,
        sum(fee_usd) filter (where not is_amount_outlier) as fees_usd,
        avg(leverage) filter (where tx_type = 'futures') as average_leverage,
        mode(token_symbol) as favourite_token,
        min(occurred_at) as first_trade_at,
        max(occurred_at) as last_trade_at
    from trades
    group by initiator_user_id
),

final as (
    select
        row_number() over (order by volume_usd desc nulls last, user_id asc) as volume_rank,
        *
    from per_user
    qualify volume_rank <= {{ var('top_traders') }}
)

select * from final
