{# How many rows each staging rule repaired or dropped, and how many duplicate copies collapsed. #}
with

{#- (dataset, model, whether it repairs rows). Trades and exchange info are typed as they come:
    nothing to repair, only copies to collapse. #}
{% set staged = [
    ('klines', 'stg_binance__klines', true),
    ('klines', 'stg_archive__klines', true),
    ('klines', 'stg_upload__klines', true),
    ('klines', 'stg_synthetic__klines', true),
    ('users', 'stg_synthetic__users', true),
    ('transactions', 'stg_synthetic__transactions', true),
    ('network', 'stg_synthetic__network', true),
    ('trades', 'stg_binance__trades', false),
    ('exchange_info', 'stg_binance__exchange_info', false),
] %}

{% for dataset, model, repairs in staged %}
    {{ model }} as (
        select
            '{{ model }}' as model_name,
            source,
            '{{ dataset }}' as dataset,
            {{ 'repair_rules' if repairs else 'cast(null as varchar) as repair_rules' }},
            {{ 'is_dropped' if repairs else 'false as is_dropped' }},
            duplicate_copies
        from {{ ref(model) }}
        {% if not repairs %}where duplicate_copies > 1{% endif %}
    ),
{% endfor %}

staged_rows as (
    {% for _, model, _ in staged %}
        select * from {{ model }}
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

rule_rows as (
    select
        model_name,
        dataset,
        unnest(string_split(repair_rules, ',')) as rule_name
    from staged_rows
    where repair_rules is not null
    union all
    select
        model_name,
        dataset,
        'dropped' as rule_name
    from staged_rows
    where is_dropped
),

rule_counts as (
    select
        model_name,
        dataset,
        rule_name,
        count(*) as affected_rows
    from rule_rows
    group by model_name, dataset, rule_name
),

duplicate_counts as (
    select
        model_name,
        dataset,
        'duplicates_collapsed' as rule_name,
        cast(sum(duplicate_copies - 1) as bigint) as affected_rows
    from staged_rows
    where duplicate_copies > 1
    group by model_name, dataset
),

final as (
    select * from rule_counts
    union all
    select * from duplicate_counts
)

select * from final
