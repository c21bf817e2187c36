with

users as (
    select * from {{ ref('dim_users') }}
),

final as (
    select
        country,
        count(*) as users,
        count(*) / sum(count(*)) over () as share_of_users,
        count(*) filter (where is_active) as active_users,
        count(*) filter (where frequency > 0) as transacting_users,
        avg(account_balance_usd) as average_balance_usd,
        median(account_balance_usd) as median_balance_usd,
        sum(account_balance_usd) as total_balance_usd,
        sum(monetary_usd) as volume_usd
    from users
    group by country
)

select * from final
