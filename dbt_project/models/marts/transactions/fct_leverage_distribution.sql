with

futures as (
    select
        *,
        -- Volume is what was executed: completed transactions, amount outliers left out (as in
        -- the other volume marts); the counts below cover every status.
        case when is_completed and is_amount_outlier is not true then amount_usd end as executed_usd
    from {{ ref('fct_transactions') }}
    where tx_type = 'futures'
),

final as (
    select
        leverage,
        count(*) as transactions,
        count(*) / sum(count(*)) over () as share_of_transactions,
        count(distinct initiator_user_id) as users,
        sum(executed_usd) as volume_usd,
        sum(executed_usd) / sum(sum(executed_usd)) over () as share_of_volume,
        avg(fee_usd) as average_fee_usd
    from futures
    group by leverage
)

select * from final
