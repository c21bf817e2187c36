{#
    How the incremental kline models find what is new, exactly and without a lookback window.

    Every incremental model stamps the rows it writes with loaded_at = now() of its own run.
    A model reads only upstream rows whose loaded_at is later than the newest loaded_at it has
    written itself: the upstream model of the same dbt run finished before this one started,
    and every earlier upstream write happened before this model's last run, so nothing is read
    twice or missed, however long ago a batch was landed.

    Staging reads raw parquet files, which have no loaded_at: it keeps a list of the file
    versions it has read (path, size, modification time) in <model>__files beside itself, and
    reads only files not on that list: new batches, and batches landed again over the same
    range (the same path with new content). A quarantine release rewrites the batch's raw file,
    so released rows are picked up too.
#}
{% macro has_loaded_at() -%}
    {%- set names = adapter.get_columns_in_relation(this) | map(attribute='name') | list if execute else [] -%}
    {{ return('loaded_at' in names) }}
{%- endmacro %}


{% macro loaded_watermark() -%}
    {%- set value = "timestamptz '1970-01-01 00:00:00+00'" -%}
    {#- A table built before loaded_at existed has none: read everything once. -#}
    {%- if has_loaded_at() -%}
        {%- set result = run_query("select cast(max(loaded_at) as varchar) from " ~ this) -%}
        {%- set newest = result.columns[0].values()[0] -%}
        {%- if newest is not none -%}
            {%- set value = "timestamptz '" ~ newest ~ "'" -%}
        {%- endif -%}
    {%- endif -%}
    {{ value }}
{%- endmacro %}


{% macro lake_files_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__files
{%- endmacro %}


{# The raw glob of a lake source, from its external_location. #}
{% macro lake_source_glob(source_name, table_name) -%}
    {%- set found = modules.re.search("read_parquet\(\s*'([^']+)'", source(source_name, table_name) | string) -%}
    {{ return(found.group(1) if found is not none else none) }}
{%- endmacro %}


{#
    The files of a lake source as they are when the model is compiled (path, size, modification
    time), in <model>__listing beside it; returns how many there are. Listed once per build of
    the model: what is read, what is forgotten and what is recorded as read all come from this
    one listing (three walks of 18,000 kline files cost about 1.5 s at 50 symbols), and a file
    landed while the model runs is not recorded as read before it has been.
#}
{% macro list_lake_files(pattern) -%}
    {%- do run_query(create_lake_files_table()) -%}
    {%- do run_query(
        "create or replace table " ~ lake_listing_relation() ~ " as "
        ~ "select filename as file, size, last_modified as modified from read_blob('" ~ pattern ~ "')"
    ) -%}
    {%- set result = run_query("select count(*) from " ~ lake_listing_relation()) -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}


{#
    Whether this command lists the files when it compiles a kline staging model: only those that
    run it (and its post-hooks). `dbt compile` and `dbt docs generate` write nothing, and may run
    before the warehouse has a staging schema: they read the whole glob.
#}
{% macro lists_lake_files() -%}
    {{ return(execute and flags.WHICH in ('run', 'build', 'retry')) }}
{%- endmacro %}


{% macro lake_listing_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__listing
{%- endmacro %}


{#
    lake_source(), narrowed on incremental runs to the files not read before. The file list
    is written into the SQL, so DuckDB opens only those files.
#}
{% macro lake_source_new_files(source_name, table_name, columns) -%}
    {%- set pattern = lake_source_glob(source_name, table_name) if lists_lake_files() else none -%}
    {%- if pattern is none -%}
        {# Parsing, compiling for docs, or a unit-test fixture in place of the source. #}
        {{ return(lake_source(source_name, table_name, columns)) }}
    {%- endif -%}
    {%- if list_lake_files(pattern) == 0 -%}
        {{ return(typed_empty_select(columns)) }}
    {%- endif -%}
    {%- set relation = source(source_name, table_name) | string -%}
    {%- if not is_incremental() -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set result = run_query(
        "select files.file from " ~ lake_listing_relation() ~ " as files "
        ~ "anti join " ~ lake_files_relation() ~ " as seen "
        ~ "on files.file = seen.file and files.size = seen.size "
        ~ "and files.modified = seen.modified order by files.file"
    ) -%}
    {%- set files = result.columns[0].values() -%}
    {%- if files | length == 0 -%}
        {{ return(typed_empty_select(columns)) }}
    {%- endif -%}
    {%- set listed = "['" ~ (files | join("', '")) ~ "']" -%}
    {{ return(relation.replace("'" ~ pattern ~ "'", listed, 1)) }}
{%- endmacro %}


{% macro create_lake_files_table() -%}
    create table if not exists {{ lake_files_relation() }} (
        file varchar, size bigint, modified timestamptz
    )
{%- endmacro %}


{#
    Pre-hook: a build that is not incremental reads every file, so the list starts empty.
    (In a post-hook is_incremental() would already see the table just built.)
#}
{% macro reset_lake_files() -%}
    {%- if is_incremental() -%}
        select 1
    {%- else -%}
        delete from {{ lake_files_relation() }}
    {%- endif -%}
{%- endmacro %}


{#
    Post-hooks, from the listing made when the model was compiled (list_lake_files): forget file
    versions no longer in the lake, record the listed ones as read, then drop the listing.
    Without a lake glob (a unit-test fixture) there is no listing and nothing was read from files.
#}
{% macro prune_lake_files(source_name, table_name) -%}
    {%- set pattern = lake_source_glob(source_name, table_name) if execute else none -%}
    {% if pattern is not none -%}
        delete from {{ lake_files_relation() }} as seen
        where not exists (
            select 1 from {{ lake_listing_relation() }} as files
            where
                files.file = seen.file
                and files.size = seen.size
                and files.modified = seen.modified
        )
    {%- else -%}
        delete from {{ lake_files_relation() }}
    {%- endif %}
{%- endmacro %}


{% macro record_lake_files(source_name, table_name) -%}
    {%- set pattern = lake_source_glob(source_name, table_name) if execute else none -%}
    {% if pattern is not none -%}
        insert into {{ lake_files_relation() }}
        select files.file, files.size, files.modified from {{ lake_listing_relation() }} as files
        where not exists (
            select 1 from {{ lake_files_relation() }} as seen
            where
                seen.file = files.file
                and seen.size = files.size
                and seen.modified = files.modified
        )
    {%- else -%}
        select 1
    {%- endif %}
{%- endmacro %}


{% macro drop_lake_listing() -%}
    drop table if exists {{ lake_listing_relation() }}
{%- endmacro %}


{# The filter for upstream rows this incremental model has not read yet (true on a full build). #}
{% macro loaded_since_last_run(column='loaded_at') -%}
    {%- if is_incremental() -%}
        {{ column }} > {{ loaded_watermark() }}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}


{#
    Pre-hook of an incremental model keyed by `key`: delete the rows whose key is no longer in
    the upstream relation (rows matching `condition`), which delete+insert alone never removes.
#}
{% macro delete_rows_missing_upstream(key, upstream, condition='true') -%}
    {%- if is_incremental() -%}
        delete from {{ this }} as this
        where not exists (
            select 1 from {{ upstream }} as upstream
            where upstream.{{ key }} = this.{{ key }} and {{ condition }}
        )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#
    Whether `upstream`, a table built whole with loaded_at = now() on every row, is as this
    incremental model last read it: none of its rows was written after this model's newest one,
    and it has as many rows matching `condition` as this model has. Then no upstream row is new
    and none has left. False on a full build, and when compiling without running.
#}
{% macro staging_unchanged_since_last_run(upstream, condition='true') -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set result = run_query(
        "select (select count(*) from " ~ upstream ~ " where " ~ loaded_since_last_run() ~ ") = 0"
        ~ " and (select count(*) from " ~ upstream ~ " where " ~ condition ~ ")"
        ~ " = (select count(*) from " ~ this ~ ")"
    ) -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}


{#
    The earliest `column` value among the rows of `upstream` written since this incremental
    model last ran (a timestamptz literal), or none when nothing is new. Fetched when the model
    runs and written into its SQL, so the bound reaches the scans as a constant. On a full build,
    the literal '-infinity': everything is rebuilt.
#}
{% macro earliest_new(upstream, column) -%}
    {%- if not (execute and is_incremental()) -%}
        {{ return("timestamptz '-infinity'") }}
    {%- endif -%}
    {%- set result = run_query(
        "select cast(min(" ~ column ~ ") as varchar) from " ~ upstream
        ~ " where " ~ loaded_since_last_run()
    ) -%}
    {%- set earliest = result.columns[0].values()[0] -%}
    {{ return("timestamptz '" ~ earliest ~ "'" if earliest is not none else none) }}
{%- endmacro %}
