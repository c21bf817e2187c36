{#
    The watermark incremental models read from: rows ingested after the newest ingest already
    built, minus var('ingest_lookback_minutes'). The lookback re-reads batches that reached
    lake/raw out of order (landed before, gated after, the last build); re-reading is harmless
    because every incremental model replaces whole keys (delete+insert). After re-admitting
    old quarantined batches, build once with --full-refresh.
    The value is looked up when the model runs and written into the SQL as a constant, so
    DuckDB can skip parquet row groups and table segments by their min/max statistics.
#}
{% macro ingest_watermark(column='ingested_at') -%}
    {%- set seconds = 0 -%}
    {%- if execute -%}
        {%- set result = run_query(
            "select coalesce(epoch(max(" ~ column ~ ")), 0) - "
            ~ var('ingest_lookback_minutes') ~ " * 60 from " ~ this
        ) -%}
        {%- set seconds = result.columns[0].values()[0] -%}
    {%- endif -%}
    to_timestamp({{ seconds }})
{%- endmacro %}
