with

users as (
    select * from {{ ref('dim_users') }}
),

daily as (
    select
        registration_date,
        count(*) as registrations,
        count(*) filter (where kyc_level >= 1) as verified_registrations,
        count(*) filter (where frequency > 0) as registrations_with_activity
    from users
    group by registration_date
),

final as (
    select
        registration_date,
        registrations,
        verified_registrations,
        registrations_with_activity,
        sum(registrations) over (
            order by registration_date rows between unbounded preceding and current row
        ) as cumulative_registrations,
        avg(registrations) over (
            order by registration_date range between interval 6 day preceding and current row
        ) as registrations_7d_average
    from daily
)

select * from final
