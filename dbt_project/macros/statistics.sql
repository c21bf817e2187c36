{#
    A statistic that its input leaves undefined, as null rather than NaN. DuckDB's corr and
    regr_slope return NaN when a series does not vary in the window (a flat price: a pegged
    stablecoin's, or an illiquid symbol's quiet day). NaN would fail the marts' range tests,
    and so the build, and sorts above every number.
#}
{% macro defined_or_null(expression) -%}
    nullif({{ expression }}, 'NaN'::double)
{%- endmacro %}
