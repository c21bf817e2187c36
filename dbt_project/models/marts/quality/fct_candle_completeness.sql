{#
    Expected against present candles per market, symbol, interval and UTC date, on the grid of
    int_klines_gridded: every open time from a series' first candle to its last, one interval
    apart (monthly candles have no fixed length and are left out).

    Counted, not joined: a day's grid slots follow from the series' first candle, its last and
    the interval, and the slots a candle filled are the day's candles (gate 1 rejects candles
    off their interval's grid, and int_klines_unioned holds one per key). Only a day with some
    but not all slots filled lays out its slots to find the first missing one; a day with none
    filled starts missing at its first slot. A full grid join of every candle cost seconds at a
    year of minutes and ran out of memory at 50 symbols.

    Incremental: a new candle changes its own date and, when it extends a series, every date
    from the series' last built one (whose expected count grows with the new last candle). A run
    rebuilds all dates from the earliest such date (a constant, so it reaches the scans).
#}
-- depends_on: {{ ref('int_klines_unioned') }}
{{
    config(
        materialized='incremental',
        unique_key=['market', 'symbol', 'kline_interval', 'candle_date'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}
{% set day_us = 86400000000 %}
{% set rebuild_from = "timestamptz '-infinity'" %}
{% set rebuilt_days = "true" %}
{% if execute and is_incremental() %}
    {% set earliest = run_query(
        "select cast(min(least(changed.first_new_date, built.last_date)) as varchar) from ("
        ~ " select market, symbol, kline_interval, cast(min(opened_at) as date) as first_new_date"
        ~ " from " ~ ref('int_klines_unioned') ~ " where kline_interval != '1M' and " ~ loaded_since_last_run()
        ~ " group by all) as changed left join ("
        ~ " select market, symbol, kline_interval, max(candle_date) as last_date from " ~ this
        ~ " group by all) as built using (market, symbol, kline_interval)"
    ).columns[0].values()[0] %}
    {% set rebuild_from = "timestamptz '" ~ earliest ~ " 00:00:00+00'" if earliest is not none else "timestamptz 'infinity'" %}
    {% set rebuilt_days = "day_number >= epoch_us(" ~ rebuild_from ~ ") // " ~ day_us if earliest is not none else "false" %}
{% endif %}

with

klines as not materialized (
    select
        market,
        symbol,
        kline_interval,
        opened_at
    from {{ ref('int_klines_unioned') }}
    where kline_interval != '1M'
),

-- Each series' grid, as epoch microseconds: slot k opens at first_us + k * step_us.
series as (
    select
        market,
        symbol,
        kline_interval,
        epoch_us(min(opened_at)) as first_us,
        epoch_us(max(opened_at)) as last_us,
        epoch_us(min(opened_at) + {{ interval_duration('kline_interval') }}) - epoch_us(min(opened_at)) as step_us
    from klines
    group by market, symbol, kline_interval
),

-- Per day of the series' span, its first and last slot (a day may hold none, e.g. of 3d).
series_days as (
    select
        market,
        symbol,
        kline_interval,
        first_us,
        step_us,
        day_number,
        (greatest(day_number * {{ day_us }}, first_us) - first_us + step_us - 1) // step_us as first_slot,
        (least((day_number + 1) * {{ day_us }} - 1, last_us) - first_us) // step_us as last_slot
    from (
        select
            *,
            unnest(range(first_us // {{ day_us }}, last_us // {{ day_us }} + 1)) as day_number
        from series
    ) as spans
    where {{ rebuilt_days }}
),

present as (
    select
        market,
        symbol,
        kline_interval,
        epoch_us(opened_at) // {{ day_us }} as day_number,
        count(*) as present_candles
    from klines
    where opened_at >= {{ rebuild_from }}
    group by all
),

counted as (
    select
        series_days.*,
        series_days.last_slot - series_days.first_slot + 1 as expected_candles,
        coalesce(present.present_candles, 0) as present_candles
    from series_days
    left join present
        on
            series_days.market = present.market
            and series_days.symbol = present.symbol
            and series_days.kline_interval = present.kline_interval
            and series_days.day_number = present.day_number
    where series_days.last_slot >= series_days.first_slot
),

-- The slots of the days some but not all candles filled, for their first missing slot.
partial_day_slots as (
    select
        market,
        symbol,
        kline_interval,
        day_number,
        make_timestamptz(first_us + unnest(range(first_slot, last_slot + 1)) * step_us) as opened_at
    from counted
    where present_candles > 0 and present_candles < expected_candles
),

partial_day_gaps as (
    select
        slots.market,
        slots.symbol,
        slots.kline_interval,
        slots.day_number,
        min(slots.opened_at) as first_missing_at
    from partial_day_slots as slots
    anti join klines
        on
            slots.market = klines.market
            and slots.symbol = klines.symbol
            and slots.kline_interval = klines.kline_interval
            and slots.opened_at = klines.opened_at
    group by all
),

final as (
    select
        counted.market,
        counted.symbol,
        counted.kline_interval,
        date '1970-01-01' + cast(counted.day_number as integer) as candle_date,
        counted.expected_candles,
        counted.present_candles,
        counted.expected_candles - counted.present_candles as missing_candles,
        counted.present_candles / counted.expected_candles as completeness_ratio,
        case
            when counted.present_candles = 0
                then make_timestamptz(counted.first_us + counted.first_slot * counted.step_us)
            else partial_day_gaps.first_missing_at
        end as first_missing_at,
        counted.present_candles = counted.expected_candles as is_complete,
        now() as loaded_at
    from counted
    left join partial_day_gaps
        on
            counted.market = partial_day_gaps.market
            and counted.symbol = partial_day_gaps.symbol
            and counted.kline_interval = partial_day_gaps.kline_interval
            and counted.day_number = partial_day_gaps.day_number
)

select * from final
