{#
    Daily technical indicators on closes. Windows count calendar days (crypto never closes) and
    values are null until the window is full.
    - sma_7/20/50: simple moving averages of the close.
    - bollinger_upper/lower: sma_20 +/- 2 sample standard deviations of the close over 20 days.
    - rsi_14: 100 - 100 / (1 + average gain / average loss) over 14 daily changes, with simple
      averages (Cutler's RSI: no recursive smoothing, so any window is reproducible on its own).
    - support_20d / resistance_20d: lowest low and highest high of the trailing 20 days, the
      levels price last turned at.
#}
with

daily as (
    select * from {{ ref('fct_klines_daily') }}
),

changes as (
    select
        market,
        symbol,
        open_time,
        cast(open_time as date) as trading_date,
        close,
        high,
        low,
        case
            when lag(open_time) over by_day = open_time - interval 1 day
                then close - lag(close) over by_day
        end as close_change
    from daily
    window by_day as (partition by market, symbol order by open_time)
),

windows as (
    select
        *,
        count(*) over last_7 as days_7,
        count(*) over last_14 as days_14,
        count(close_change) over last_14 as changes_14,
        count(*) over last_20 as days_20,
        count(*) over last_50 as days_50,
        avg(close) over last_7 as mean_7,
        avg(close) over last_20 as mean_20,
        avg(close) over last_50 as mean_50,
        stddev_samp(close) over last_20 as stddev_20,
        avg(greatest(close_change, 0)) over last_14 as average_gain,
        avg(greatest(-close_change, 0)) over last_14 as average_loss,
        min(low) over last_20 as lowest_low_20,
        max(high) over last_20 as highest_high_20
    from changes
    window
        last_7 as (
            partition by market, symbol order by open_time
            range between interval 6 day preceding and current row
        ),
        last_14 as (
            partition by market, symbol order by open_time
            range between interval 13 day preceding and current row
        ),
        last_20 as (
            partition by market, symbol order by open_time
            range between interval 19 day preceding and current row
        ),
        last_50 as (
            partition by market, symbol order by open_time
            range between interval 49 day preceding and current row
        )
),

final as (
    select
        market,
        symbol,
        trading_date,
        close,
        case when days_7 = 7 then mean_7 end as sma_7,
        case when days_20 = 20 then mean_20 end as sma_20,
        case when days_50 = 50 then mean_50 end as sma_50,
        case when days_20 = 20 then mean_20 + 2 * stddev_20 end as bollinger_upper,
        case when days_20 = 20 then mean_20 - 2 * stddev_20 end as bollinger_lower,
        case
            when changes_14 = 14 and average_loss = 0 and average_gain = 0 then 50
            when changes_14 = 14 and average_loss = 0 then 100
            when changes_14 = 14 then 100 - 100 / (1 + average_gain / average_loss)
        end as rsi_14,
        case when days_20 = 20 then lowest_low_20 end as support_20d,
        case when days_20 = 20 then highest_high_20 end as resistance_20d
    from windows
)

select * from final
