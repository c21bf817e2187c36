{#
    Materialization `table_when_changed`: a table, built again only when what it is built from
    has changed since it was last built.

    A mart that aggregates a whole table (every transaction, every user) costs as much to build
    again when nothing upstream changed as when everything did, and on an hourly run that lands
    only candles nothing upstream of the transaction and user marts changes. Before it builds, the
    materialization takes a fingerprint of the model's compiled code and of every relation the
    model reads, and compares it with the one recorded when the table was last built. When they
    are equal the table already holds what a build would write: it is kept, and the run result
    says "unchanged". Otherwise the model is built exactly as `table` builds it (dbt-duckdb's own
    materialization), and the new fingerprint is recorded after the build commits (a build that
    dies first leaves the old fingerprint, so the next run builds again). SQL models only: dbt
    submits a Python model only from a materialization's own statement, so Python marts stay
    `table`.

    The fingerprint of a relation read:
    - with a loaded_at column: its row count and newest loaded_at. Every model here stamps the
      rows it writes with loaded_at = now(), so any write moves the newest value and a delete
      alone moves the count;
    - otherwise: its row count and the sum of its rows' hashes (a scan, cheap on the marts'
      inputs: 20,000 users take 4 ms).
    A model that reads a source (files), a view or an ephemeral model, a full refresh, and a table
    that does not exist yet always build: nothing cheap says whether those changed.
#}
{% materialization table_when_changed, adapter='duckdb', supported_languages=['sql'] %}
    {%- set fingerprint = inputs_fingerprint(model) -%}
    {%- set existing = load_cached_relation(this) -%}
    {%- if fingerprint is not none and existing is not none and not should_full_refresh()
        and recorded_fingerprint(this) == fingerprint -%}
        {%- do store_raw_result('main', message='unchanged', code='UNCHANGED', rows_affected=0) -%}
        {{ return({'relations': [this.incorporate(type='table')]}) }}
    {%- endif -%}
    {%- set built = materialization_table_duckdb() -%}
    {%- do record_fingerprint(this, fingerprint) -%}
    {{ return(built) }}
{% endmaterialization %}


{% macro create_table_fingerprints_table() -%}
    create table if not exists main.lakehouse_table_fingerprints (
        relation_name varchar, fingerprint varchar, built_at timestamptz
    )
{%- endmacro %}


{# The fingerprint of what `node` is built from (a string), or none when it cannot be taken. #}
{% macro inputs_fingerprint(node) -%}
    {%- set parts = ["code:" ~ local_md5((node.compiled_code or '') ~ tojson(node.config))] -%}
    {%- set probes = [] -%}
    {%- for unique_id in node.depends_on.nodes -%}
        {%- set upstream = graph.nodes.get(unique_id) -%}
        {%- if upstream is none or upstream.resource_type not in ('model', 'seed', 'snapshot')
            or upstream.config.materialized in ('view', 'ephemeral') -%}
            {{ return(none) }}
        {%- endif -%}
        {%- set relation = load_relation(api.Relation.create(
            database=upstream.database, schema=upstream.schema, identifier=upstream.alias)) -%}
        {%- if relation is none -%}
            {{ return(none) }}
        {%- endif -%}
        {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | list -%}
        {%- if 'loaded_at' in names -%}
            {%- do probes.append("select '" ~ unique_id ~ "' || ':' || count(*) || ':' "
                ~ "|| coalesce(cast(max(loaded_at) as varchar), '') from " ~ relation) -%}
        {%- else -%}
            {%- do probes.append("select '" ~ unique_id ~ "' || ':' || count(*) || ':' "
                ~ "|| coalesce(cast(sum(hash(input_row)) as varchar), '') from " ~ relation ~ " as input_row") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if probes -%}
        {%- set result = run_query(probes | join(' union all ')) -%}
        {%- do parts.extend(result.columns[0].values() | sort) -%}
    {%- endif -%}
    {{ return(parts | join('|')) }}
{%- endmacro %}


{% macro recorded_fingerprint(relation) -%}
    {%- set result = run_query(
        "select fingerprint from main.lakehouse_table_fingerprints where relation_name = '"
        ~ relation | string | replace("'", "''") ~ "'"
    ) -%}
    {%- set values = result.columns[0].values() -%}
    {{ return(values[0] if values | length == 1 else none) }}
{%- endmacro %}


{# After the build has committed; a model whose fingerprint could not be taken records none. #}
{% macro record_fingerprint(relation, fingerprint) -%}
    {%- set name = relation | string | replace("'", "''") -%}
    {%- do run_query("delete from main.lakehouse_table_fingerprints where relation_name = '" ~ name ~ "'") -%}
    {%- if fingerprint is not none -%}
        {%- do run_query(
            "insert into main.lakehouse_table_fingerprints values ('" ~ name ~ "', '"
            ~ fingerprint | replace("'", "''") ~ "', now())"
        ) -%}
    {%- endif -%}
    {%- do adapter.commit() -%}
{%- endmacro %}
