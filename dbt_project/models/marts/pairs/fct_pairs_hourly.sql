{#
    Rolling pairs-trading statistics per hour, over the trailing var('pairs_window_hours')
    (default 168 = 7 days):
    - hedge_ratio, intercept: OLS of log price a on log price b in the window (regr_slope,
      regr_intercept), so log(a) ~ intercept + hedge_ratio * log(b).
    - spread: log(a) - intercept - hedge_ratio * log(b), with this hour's fit.
    - spread_zscore: (spread - mean of the spread) / its sample stddev over the same window.
    - rolling_correlation: correlation of the hourly log returns in the window.
    Statistics are null until the window holds var('pairs_min_observations') common hours (24),
    and where they are undefined: no fit while log(b) does not vary in the window, no
    correlation while either return series does not.
    Incremental: a run recomputes every pair from the earliest hour fct_klines_hourly wrote since
    its last run, reading two windows further back (the spread statistics of an hour use the fits
    of the hours before it, and each fit its own window).
#}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol_a', 'symbol_b', 'open_time'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}
{% set rebuild_from = earliest_new(ref('fct_klines_hourly'), 'open_time') or "timestamptz 'infinity'" %}
{% set lookback = "interval (2 * " ~ var('pairs_window_hours') ~ ") hour" %}

with

pairs as (
    select * from {{ ref('int_symbol_pairs_joined') }}
    where open_time >= {{ rebuild_from }} - {{ lookback }}
),

fitted as (
    select
        *,
        count(*) over pair_window as observations,
        {{ defined_or_null('regr_slope(log_price_a, log_price_b) over pair_window') }} as window_hedge_ratio,
        regr_intercept(log_price_a, log_price_b) over pair_window as window_intercept,
        {{ defined_or_null('corr(log_return_a, log_return_b) over pair_window') }} as window_correlation
    from pairs
    window pair_window as (
        partition by market, symbol_a, symbol_b order by open_time
        range between interval ({{ var('pairs_window_hours') }} - 1) hour preceding and current row
    )
),

with_spread as (
    select
        *,
        log_price_a - window_intercept - window_hedge_ratio * log_price_b as window_spread
    from fitted
),

spread_stats as (
    select
        *,
        avg(window_spread) over pair_window as spread_mean,
        stddev_samp(window_spread) over pair_window as spread_stddev
    from with_spread
    window pair_window as (
        partition by market, symbol_a, symbol_b order by open_time
        range between interval ({{ var('pairs_window_hours') }} - 1) hour preceding and current row
    )
),

final as (
    select
        market,
        symbol_a,
        symbol_b,
        open_time,
        close_a,
        close_b,
        observations,
        case when observations >= {{ var('pairs_min_observations') }} then window_hedge_ratio end as hedge_ratio,
        case when observations >= {{ var('pairs_min_observations') }} then window_intercept end as intercept,
        case when observations >= {{ var('pairs_min_observations') }} then window_spread end as spread,
        case
            when observations >= {{ var('pairs_min_observations') }}
                then (window_spread - spread_mean) / nullif(spread_stddev, 0)
        end as spread_zscore,
        case
            when observations >= {{ var('pairs_min_observations') }} then window_correlation
        end as rolling_correlation,
        now() as loaded_at
    from spread_stats
    where open_time >= {{ rebuild_from }}
)

select * from final
