with

source as (
    select * from {{ lake_source('quality', 'gate_runs', gate_runs_raw_columns()) }}
),

deduplicated as (
    select *
    from source
    qualify row_number() over (
        partition by run_id, gate, dataset
        order by validated_at desc
    ) = 1
),

final as (
    select
        cast(run_id as varchar) as run_id,
        cast(gate as varchar) as gate,
        cast(dataset as varchar) as dataset,
        cast(validated_at as timestamptz) as validated_at,
        cast(batches as bigint) as batches,
        cast(rows_accepted as bigint) as rows_accepted,
        cast(rows_quarantined as bigint) as rows_quarantined,
        cast(expectations_evaluated as bigint) as expectations_evaluated,
        cast(expectations_failed as bigint) as expectations_failed,
        nullif(failed_expectations, '') as failed_expectations,
        cast(success as boolean) as is_success
    from deduplicated
)

select * from final
