{#
    Tests of incremental models check the rows written since the model's tests last all passed.

    A run writes rows of an incremental model with loaded_at = now(); the rows written before
    were checked by an earlier run whose tests on the model all passed. So after each run
    (on-run-end) a model is recorded with the start of its first test when every test on it
    ran and none errored or failed; a test then checks the rows loaded after the latest record,
    against the whole table where the rule spans rows (uniqueness, spacing). Without a record
    (first build, or every run since failed) it checks every row. The record is read when the
    test runs, not rendered into it, so partial parsing is kept.
#}

{% macro create_tested_models_table() -%}
    create table if not exists main.lakehouse_tested_models (
        relation_name varchar, tested_at timestamp, invocation_id varchar
    )
{%- endmacro %}


{% macro record_tested_models(results) -%}
    {%- if not execute -%}
        {{ return('select 1') }}
    {%- endif -%}
    {%- set outcomes = {} -%}
    {%- for result in results if result.node.resource_type in ('test', 'model') -%}
        {%- set started = result.timing | selectattr('name', 'equalto', 'execute')
            | map(attribute='started_at') | list -%}
        {%- do outcomes.update({result.node.unique_id: (result.status | string, started[0] if started else none)}) -%}
    {%- endfor -%}
    {%- set rows = [] -%}
    {%- for node in graph.nodes.values()
        if node.resource_type == 'model' and node.config.materialized == 'incremental'
        and outcomes.get(node.unique_id, ('success', none))[0] == 'success' -%}
        {%- set tests = [] -%}
        {%- for test in graph.nodes.values()
            if test.resource_type == 'test' and node.unique_id in test.depends_on.nodes -%}
            {%- do tests.append(test.unique_id) -%}
        {%- endfor -%}
        {%- set ran = tests | select('in', outcomes) | list -%}
        {%- if tests and ran | length == tests | length -%}
            {%- set passed = [] -%}
            {%- set starts = [] -%}
            {%- for test in ran -%}
                {%- if outcomes[test][0] in ('pass', 'warn') and outcomes[test][1] is not none -%}
                    {%- do passed.append(test) -%}
                    {%- do starts.append(outcomes[test][1]) -%}
                {%- endif -%}
            {%- endfor -%}
            {%- if passed | length == tests | length -%}
                {%- do rows.append("('" ~ node.relation_name | replace("'", "''") ~ "', timestamp '"
                    ~ (starts | min).isoformat() ~ "', '" ~ invocation_id ~ "')") -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if rows -%}
        insert into main.lakehouse_tested_models values {{ rows | join(', ') }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}


{#
    The filter for the rows a test on `model` checks: loaded after its last recorded passing
    run (column: the model's write stamp, none = every row).
#}
{% macro rows_to_check(model, column=none) -%}
    {%- if column is none -%}
        true
    {%- else -%}
        {{ column }} > {{ last_tested_at(model) }}
    {%- endif -%}
{%- endmacro %}


{% macro last_tested_at(model) -%}
    (
        select coalesce(max(tested_at), timestamp '-infinity') at time zone 'UTC'
        from main.lakehouse_tested_models
        where relation_name = '{{ model | string | replace("'", "''") }}'
    )
{%- endmacro %}


{#
    Whether a test on `model` must check every row: no loaded_column, or no row was loaded
    before the last recorded passing run (a first or full build). Asked when the test runs, so
    tests that span rows can take their plain whole-table form, which is several times cheaper
    than checking each changed key against the table when every key changed.
#}
{% macro checks_every_row(model, column=none) -%}
    {%- if column is none -%}
        {{ return(true) }}
    {%- endif -%}
    {#- Compiled without its model built (docs generate, compile): either form will do. -#}
    {%- if not execute or load_relation(model) is none -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set result = run_query(
        "select coalesce(min(" ~ column ~ ") > " ~ last_tested_at(model) ~ ", true) from " ~ model
    ) -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}
