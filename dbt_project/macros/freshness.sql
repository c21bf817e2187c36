{#
    `dbt source freshness` on a feed that never landed a file: read_parquet() would fail with
    "no files found"; instead the feed reports as loaded at the epoch, i.e. stale (ERROR STALE),
    which is what a missing feed is.
#}
{% macro duckdb__collect_freshness(source, loaded_at_field, filter) %}
    {%- set found = modules.re.search("read_parquet\(\s*'([^']+)'", source | string) -%}
    {%- set has_files = found is none or lake_glob_has_files(found.group(1)) -%}
    {% call statement('collect_freshness', fetch_result=True, auto_begin=False) -%}
        {%- if has_files %}
            select
                max({{ loaded_at_field }}) as max_loaded_at,
                {{ current_timestamp() }} as snapshotted_at
            from {{ source }}
            {% if filter %}where {{ filter }}{% endif %}
        {%- else %}
            select
                cast('1970-01-01 00:00:00+00' as timestamptz) as max_loaded_at,
                {{ current_timestamp() }} as snapshotted_at
        {%- endif %}
    {%- endcall %}
    {{ return(load_result('collect_freshness')) }}
{% endmacro %}
