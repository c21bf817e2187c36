{#
    The watermark incremental models read from: rows ingested after the newest ingest already
    built, minus var('ingest_lookback_minutes'). The lookback re-reads batches that reached
    lake/raw out of order (landed before, gated after, the last build); re-reading is harmless
    because every incremental model replaces whole keys (delete+insert). After re-admitting
    old quarantined batches, build once with --full-refresh.
#}
{% macro ingest_watermark(column='ingested_at') -%}
    (
        select
            coalesce(max({{ column }}), cast('1970-01-01' as timestamptz))
            - to_minutes(cast({{ var('ingest_lookback_minutes') }} as bigint))
        from {{ this }}
    )
{%- endmacro %}
