with

network as (
    select * from {{ ref('stg_synthetic__network') }}
    where not is_dropped
),

final as (
    select
        observed_hour,
        count(*) as observations,
        count(*) filter (where repair_rules like '%metric_imputed%') as imputed_observations,
        {%- for metric in ['gas_price_gwei', 'tps', 'block_time_s', 'difficulty', 'hashrate'] %}
            avg({{ metric }}) as avg_{{ metric }},
            quantile_cont({{ metric }}, 0.95) as p95_{{ metric }},
        {%- endfor %}
        max(gas_price_gwei) as max_gas_price_gwei
    from network
    group by observed_hour
)

select * from final
