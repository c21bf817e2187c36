{#
    A raw-lake source that may have no files yet (a binance-only lake has no synthetic users,
    nobody uploaded klines, the trade stream never ran). read_parquet() on a glob that matches
    nothing is an error, so at run time the glob from the source's external_location is checked
    with DuckDB's glob(); when it matches nothing, a typed empty select stands in. source() is
    always called, so lineage from the source to the model is kept either way.

    columns: {name: duckdb type} of the raw dataset, used only for the empty stand-in.
#}
{% macro lake_source(source_name, table_name, columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if execute -%}
        {# Unit-test fixtures replace the source with a CTE: no glob to check then. #}
        {%- set found = modules.re.search("read_parquet\(\s*'([^']+)'", relation | string) -%}
        {%- if found is not none and not lake_glob_has_files(found.group(1)) -%}
            {{ typed_empty_select(columns) }}
        {%- else -%}
            {{ relation }}
        {%- endif -%}
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}


{% macro lake_glob_has_files(pattern) -%}
    {%- set result = run_query("select count(*) from glob('" ~ pattern ~ "')") -%}
    {{ return(result.columns[0].values()[0] > 0) }}
{%- endmacro %}


{% macro typed_empty_select(columns) -%}
    (
        select
        {%- for name, data_type in columns.items() %}
            cast(null as {{ data_type }}) as {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
        where false
    )
{%- endmacro %}
