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
    materialization), and the new fingerprint is recorded in the build's own transaction (a
    post-hook), so a build that fails leaves the old one and the next run builds again. Taking
    and comparing the fingerprints costs two queries per model. SQL models only: dbt
    submits a Python model only from a materialization's own statement, so Python marts stay
    `table`.

    The fingerprint of a relation read:
    - with a loaded_at column: its row count and newest loaded_at. Every model here stamps the
      rows it writes with loaded_at = now(), so any write moves the newest value and a delete
      alone moves the count;
    - otherwise: its row count and the sum of its rows' hashes (a scan, cheap on the marts'
      inputs: 20,000 users take 4 ms).
    A model that reads a source (files), a view or an ephemeral model always builds, without a
    query (nothing cheap says whether those changed); so do a full refresh and a table that does
    not exist yet.
#}
{% materialization table_when_changed, adapter='duckdb', supported_languages=['sql'] %}
    {%- set fingerprint, recorded = table_fingerprints(model, this) -%}
    {%- if fingerprint is not none and recorded == fingerprint and not should_full_refresh()
        and load_cached_relation(this) is not none -%}
        {%- do store_raw_result('main', message='unchanged', code='UNCHANGED', rows_affected=0) -%}
        {{ return({'relations': [this.incorporate(type='table')]}) }}
    {%- endif -%}
    {%- if fingerprint is not none -%}
        {%- set name = this | string | replace("'", "''") -%}
        {%- do post_hooks.append({
            'sql': "delete from main.lakehouse_table_fingerprints where relation_name = '" ~ name ~ "'",
            'transaction': true, 'index': post_hooks | length}) -%}
        {%- do post_hooks.append({
            'sql': "insert into main.lakehouse_table_fingerprints values ('" ~ name ~ "', '"
                ~ fingerprint | replace("'", "''") ~ "', now())",
            'transaction': true, 'index': post_hooks | length}) -%}
    {%- endif -%}
    {{ return(materialization_table_duckdb()) }}
{% endmaterialization %}


{% macro create_table_fingerprints_table() -%}
    create table if not exists main.lakehouse_table_fingerprints (
        relation_name varchar, fingerprint varchar, built_at timestamptz
    )
{%- endmacro %}


{#
    [the fingerprint of what `node` is built from now, the one recorded for `relation`], or
    [none, none] when it cannot be taken. Two queries: which inputs exist and have loaded_at,
    then every input's probe with the recorded fingerprint.
#}
{% macro table_fingerprints(node, relation) -%}
    {%- set inputs = [] -%}
    {%- for unique_id in node.depends_on.nodes -%}
        {%- set upstream = graph.nodes.get(unique_id) -%}
        {%- if upstream is none or upstream.resource_type not in ('model', 'seed', 'snapshot')
            or upstream.config.materialized in ('view', 'ephemeral') -%}
            {{ return([none, none]) }}
        {%- endif -%}
        {%- do inputs.append(upstream) -%}
    {%- endfor -%}
    {%- set keys = [] -%}
    {%- for upstream in inputs -%}
        {%- do keys.append("('" ~ upstream.database ~ "', '" ~ upstream.schema ~ "', '" ~ upstream.alias ~ "')") -%}
    {%- endfor -%}
    {%- set stamped = {} -%}
    {%- if inputs -%}
        {%- set found = run_query(
            "select database_name, schema_name, table_name, bool_or(column_name = 'loaded_at') "
            ~ "from duckdb_columns() where (database_name, schema_name, table_name) in ("
            ~ keys | join(', ') ~ ") group by all"
        ) -%}
        {%- for row in found.rows -%}
            {%- do stamped.update({row[0] ~ '.' ~ row[1] ~ '.' ~ row[2]: row[3]}) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set probes = [
        "select 'recorded' as part, (select fingerprint from main.lakehouse_table_fingerprints "
        ~ "where relation_name = '" ~ relation | string | replace("'", "''") ~ "') as value"
    ] -%}
    {%- for upstream in inputs -%}
        {%- set key = upstream.database ~ '.' ~ upstream.schema ~ '.' ~ upstream.alias -%}
        {%- if key not in stamped -%}
            {{ return([none, none]) }}
        {%- endif -%}
        {%- set table = api.Relation.create(
            database=upstream.database, schema=upstream.schema, identifier=upstream.alias) -%}
        {%- set summary = "cast(max(loaded_at) as varchar)" if stamped[key]
            else "cast(sum(hash(input_row)) as varchar)" -%}
        {%- do probes.append(
            "select '" ~ upstream.unique_id ~ "', count(*) || ':' || coalesce(" ~ summary ~ ", '') "
            ~ "from " ~ table ~ " as input_row"
        ) -%}
    {%- endfor -%}
    {%- set parts = {} -%}
    {%- for row in run_query(probes | join(' union all ')).rows -%}
        {%- do parts.update({row[0]: row[1]}) -%}
    {%- endfor -%}
    {%- set fingerprint = ["code:" ~ local_md5((node.compiled_code or '') ~ tojson(node.config))] -%}
    {%- for unique_id in parts | sort if unique_id != 'recorded' -%}
        {%- do fingerprint.append(unique_id ~ ':' ~ parts[unique_id]) -%}
    {%- endfor -%}
    {{ return([fingerprint | join('|'), parts['recorded']]) }}
{%- endmacro %}
