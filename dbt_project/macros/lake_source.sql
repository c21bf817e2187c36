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


{#
    Whether two rows of a lake relation share the key. Deduplicating ranks every row in a window
    (a sort of the whole source, the costliest step of staging); when no key repeats, which is
    the usual case since gate 1 collapses copies inside a batch, staging skips it. Counted
    exactly (distinct keys against rows). Anything but a parquet read (a unit-test fixture) is
    assumed to repeat keys, so it takes the window.
#}
{% macro lake_keys_repeat(relation, key) -%}
    {%- if not execute or 'read_parquet' not in relation | string -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set result = run_query(
        "select count(*) > count(distinct (" ~ key | join(", ") ~ ")) from " ~ relation
    ) -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}


{#
    Whether two files read by a lake relation share a folder. In the raw kline lake, a key
    (market, symbol, interval, open_time) always lands under the folder of its symbol, interval
    and day, and gate 1 leaves no key twice in one file; so keys can repeat only between files of
    one folder. With one file per folder (the usual case: one batch per series and day) no key
    repeats, and checking that costs a file listing instead of a scan of every key (seconds for a
    year of minutes). `listing`: a table of the files the glob matches, if the model has one
    (list_lake_files), which saves walking the folders again. Not for datasets whose folders do
    not follow their key (transactions are filed by day, their key is tx_id).
#}
{% macro lake_files_share_folders(relation, listing=none) -%}
    {%- if not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set found = modules.re.search("read_parquet\(\s*('[^']*'|\[[^\]]*\])", relation | string) -%}
    {%- if found is none -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set files = found.group(1) -%}
    {%- if not files.startswith("'") -%}
        {%- set listing = "(select unnest(" ~ files ~ ") as file)" -%}
    {%- elif listing is none -%}
        {%- set listing = "glob(" ~ files ~ ")" -%}
    {%- endif -%}
    {%- set result = run_query(
        "select count(*) > count(distinct parse_dirpath(file)) from " ~ listing
    ) -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}
