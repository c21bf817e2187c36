with

gate_runs as (
    select * from {{ ref('stg_quality__gate_runs') }}
),

final as (
    select
        run_id,
        gate,
        dataset,
        validated_at,
        batches,
        rows_accepted,
        rows_quarantined,
        rows_accepted + rows_quarantined as rows_validated,
        rows_quarantined / nullif(rows_accepted + rows_quarantined, 0) as quarantined_ratio,
        expectations_evaluated,
        expectations_failed,
        failed_expectations,
        is_success
    from gate_runs
)

select * from final
