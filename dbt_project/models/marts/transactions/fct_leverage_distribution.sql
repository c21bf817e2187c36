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
        sum(amount_usd) as volume_usd,
        sum(amount_usd) / sum(sum(amount_usd)) over () as share_of_volume,
        avg(fee_usd) as average_fee_usd
    from futures
    group by leverage
)

select * from final
