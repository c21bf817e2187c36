with

futures as (
    select * from {{ ref('fct_transactions') }}
    where tx_type = 'futures'
),

final as (
    select
        leverage,
        count(*) as transactions,
        count(*) / sum(count(*)) over () as share_of_transactions,
        count(distinct initiator_user_id) as users,
        -- Volume is what was executed: completed transactions, amount outliers left out (as in
        -- the other volume marts); the counts above cover every status.
        sum(amount_usd) filter (where is_completed and is_amount_outlier is not true) as volume_usd,
        sum(amount_usd) filter (where is_completed and is_amount_outlier is not true)
        / sum(sum(amount_usd) filter (where is_completed and is_amount_outlier is not true)) over ()
            as share_of_volume,
        avg(fee_usd) as average_fee_usd
    from futures
    group by leverage
)

select * from final
