{#
    The outlier flags of priced transactions (the relation alias given) against type_stats:
    a robust z-score of ln(amount_usd) and of ln(fee_usd) within the transaction type,
    |z| > 4 with z = (x - median) / (1.4826 * MAD).
#}
{% macro outlier_flags(priced) -%}
    coalesce(
        abs(ln({{ priced }}.amount_usd) - type_stats.median_log_amount)
        / nullif(1.4826 * type_stats.mad_log_amount, 0) > 4,
        false
    ) as is_amount_outlier,
    coalesce(
        {{ priced }}.fee_usd > 0
        and abs(ln({{ priced }}.fee_usd) - type_stats.median_log_fee)
        / nullif(1.4826 * type_stats.mad_log_fee, 0) > 4,
        false
    ) as is_fee_outlier
{%- endmacro %}
