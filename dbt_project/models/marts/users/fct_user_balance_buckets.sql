{# Users per account-balance bucket (decade bounds in USD: lower inclusive, upper exclusive). #}
with

users as (
    select * from {{ ref('dim_users') }}
),

buckets as (
    select bucket_table.* from (
        values
        (1, '< 100', 0.0, 100.0),
        (2, '100 - 1k', 100.0, 1000.0),
        (3, '1k - 10k', 1000.0, 10000.0),
        (4, '10k - 100k', 10000.0, 100000.0),
        (5, '100k - 1M', 100000.0, 1000000.0),
        (6, '>= 1M', 1000000.0, null)
    ) as bucket_table (bucket_order, balance_bucket, lower_usd, upper_usd)
),

final as (
    select
        buckets.balance_bucket,
        buckets.bucket_order,
        buckets.lower_usd,
        buckets.upper_usd,
        count(users.user_id) as users,
        coalesce(sum(users.account_balance_usd), 0) as total_balance_usd,
        count(users.user_id) / nullif(sum(count(users.user_id)) over (), 0) as share_of_users,
        coalesce(sum(users.account_balance_usd), 0)
        / nullif(sum(sum(users.account_balance_usd)) over (), 0) as share_of_balance
    from buckets
    left join users
        on
            buckets.lower_usd <= users.account_balance_usd
            and (buckets.upper_usd is null or buckets.upper_usd > users.account_balance_usd)
    group by buckets.balance_bucket, buckets.bucket_order, buckets.lower_usd, buckets.upper_usd
)

select * from final
