{#
    Daily volatility per symbol, as fractions of price (0.02 = 2%), daily unless annualized
    (x sqrt(365): crypto trades every day).
    - realized: sqrt of the sum of squared 1-minute log returns of the day (null without 1m data).
    - parkinson: sqrt(ln(high/low)^2 / (4 ln 2)), from the day's range.
    - garman_klass: sqrt(0.5 ln(high/low)^2 - (2 ln 2 - 1) ln(close/open)^2).
    - close_to_close_7d/30d: sample stddev of daily log returns over the trailing window.
    - rolling realized 7d/30d: root mean square of the daily realized volatility in the window.
    Rolling values are null until the window is full (close-to-close: 7 or 30 daily returns).
#}
with

daily as (
    select * from {{ ref('fct_klines_daily') }}
),

estimators as (
    select
        market,
        symbol,
        cast(open_time as date) as trading_date,
        open_time,
        log_return,
        realized_volatility,
        sqrt(power(ln(high / low), 2) / (4 * ln(2))) as parkinson_volatility,
        sqrt(
            greatest(
                0.5 * power(ln(high / low), 2) - (2 * ln(2) - 1) * power(ln(close / open), 2),
                0
            )
        ) as garman_klass_volatility
    from daily
),

rolling as (
    select
        *,
        count(*) over last_7d as days_in_7d,
        count(*) over last_30d as days_in_30d,
        -- A series' first day (or the day after a missing one) has no return: close-to-close
        -- needs as many returns as days, not only days.
        count(log_return) over last_7d as returns_in_7d,
        count(log_return) over last_30d as returns_in_30d,
        stddev_samp(log_return) over last_7d as close_to_close_7d,
        stddev_samp(log_return) over last_30d as close_to_close_30d,
        sqrt(avg(realized_volatility * realized_volatility) over last_7d) as realized_7d,
        sqrt(avg(realized_volatility * realized_volatility) over last_30d) as realized_30d
    from estimators
    window
        last_7d as (
            partition by market, symbol order by open_time
            range between interval 6 day preceding and current row
        ),
        last_30d as (
            partition by market, symbol order by open_time
            range between interval 29 day preceding and current row
        )
),

final as (
    select
        market,
        symbol,
        trading_date,
        log_return,
        realized_volatility,
        parkinson_volatility,
        garman_klass_volatility,
        realized_volatility * sqrt(365) as realized_volatility_annualized,
        parkinson_volatility * sqrt(365) as parkinson_volatility_annualized,
        garman_klass_volatility * sqrt(365) as garman_klass_volatility_annualized,
        case when returns_in_7d = 7 then close_to_close_7d * sqrt(365) end as close_to_close_7d_annualized,
        case when returns_in_30d = 30 then close_to_close_30d * sqrt(365) end as close_to_close_30d_annualized,
        case when days_in_7d = 7 then realized_7d * sqrt(365) end as realized_7d_annualized,
        case when days_in_30d = 30 then realized_30d * sqrt(365) end as realized_30d_annualized
    from rolling
)

select * from final
