with

klines as (
    select * from {{ ref('int_klines_unioned') }}
),

exchange_info as (
    select * from {{ ref('stg_binance__exchange_info') }}
),

candle_summary as (
    select
        market,
        symbol,
        min(opened_at) as first_candle_at,
        max(opened_at) as last_candle_at,
        string_agg(distinct kline_interval, ',' order by kline_interval) as intervals,
        string_agg(distinct source, ',' order by source) as sources,
        count(*) as candle_count
    from klines
    group by market, symbol
),

latest_exchange_info as (
    select *
    from exchange_info
    qualify row_number() over (partition by market, symbol order by snapshot_at desc) = 1
),

symbols as (
    select
        market,
        symbol
    from candle_summary
    union
    select
        market,
        symbol
    from latest_exchange_info
),

{# Without an exchange-info snapshot, the quote asset is read off the symbol's suffix. #}
assets as (
    select
        symbols.market,
        symbols.symbol,
        coalesce(
            latest_exchange_info.quote_asset,
            case
                {%- for quote in ['FDUSD', 'USDT', 'USDC', 'BUSD', 'TUSD', 'BTC', 'ETH', 'BNB', 'EUR', 'TRY'] %}
                    when symbols.symbol like '%{{ quote }}' then '{{ quote }}'
                {%- endfor %}
            end
        ) as quote_asset,
        latest_exchange_info.base_asset as listed_base_asset
    from symbols
    left join latest_exchange_info
        on
            symbols.market = latest_exchange_info.market
            and symbols.symbol = latest_exchange_info.symbol
),

final as (
    select
        symbols.market,
        symbols.symbol,
        assets.quote_asset,
        coalesce(
            assets.listed_base_asset,
            left(symbols.symbol, length(symbols.symbol) - length(assets.quote_asset))
        ) as base_asset,
        latest_exchange_info.symbol_status,
        latest_exchange_info.contract_type,
        latest_exchange_info.onboarded_at,
        latest_exchange_info.tick_size,
        latest_exchange_info.step_size,
        latest_exchange_info.min_notional,
        latest_exchange_info.snapshot_at as exchange_info_at,
        candle_summary.first_candle_at,
        candle_summary.last_candle_at,
        candle_summary.intervals,
        candle_summary.sources,
        coalesce(candle_summary.candle_count, 0) as candle_count
    from symbols
    inner join assets on symbols.market = assets.market and symbols.symbol = assets.symbol
    left join candle_summary
        on symbols.market = candle_summary.market and symbols.symbol = candle_summary.symbol
    left join latest_exchange_info
        on
            symbols.market = latest_exchange_info.market
            and symbols.symbol = latest_exchange_info.symbol
)

select * from final
