{#
    One row per transaction, priced in USD at the 1-minute close of its token's USDT spot
    market for the minute it occurred in (stablecoins count as 1 USD). When that minute has no
    candle, the latest earlier close within var('price_staleness_minutes') is used and
    price_source says so; beyond that the USD values stay null rather than guess.
    Outliers are flagged, not removed: a robust z-score of ln(amount_usd) (and of ln(fee_usd))
    within the transaction type, |z| > 4 with z = (x - median) / (1.4826 * MAD).
#}
with

transactions as (
    select * from {{ ref('stg_synthetic__transactions') }}
    where not is_dropped
),

-- Only the candles of the transactions' time span: the as-of join then sorts far fewer rows.
transaction_span as (
    select
        min(occurred_minute)
        - to_minutes(cast({{ var('price_staleness_minutes') }} as bigint)) as first_minute,
        max(occurred_minute) as last_minute
    from transactions
),

klines as (
    select
        klines_1m.symbol,
        klines_1m.opened_at,
        klines_1m.close_price
    from {{ ref('int_klines_unioned') }} as klines_1m
    inner join transaction_span
        on klines_1m.opened_at between transaction_span.first_minute and transaction_span.last_minute
    where klines_1m.market = 'spot' and klines_1m.kline_interval = '1m'
),

{% set stablecoins = "('USDT', 'USDC', 'BUSD', 'FDUSD', 'TUSD', 'DAI', 'USD')" %}

-- Most transactions have a candle at their own minute: an equality join prices them. Only the
-- rest go through the as-of join (latest earlier candle), which sorts far more than it matches.
exact_priced as (
    select
        transactions.*,
        token_klines.close_price as exact_token_close,
        fee_klines.close_price as exact_fee_token_close
    from transactions
    left join klines as token_klines
        on
            transactions.token_symbol || 'USDT' = token_klines.symbol
            and transactions.occurred_minute = token_klines.opened_at
    left join klines as fee_klines
        on
            transactions.fee_token || 'USDT' = fee_klines.symbol
            and transactions.occurred_minute = fee_klines.opened_at
),

{% for side, token, exact in [
    ('token', 'token_symbol', 'exact_token_close'),
    ('fee', 'fee_token', 'exact_fee_token_close'),
] %}
    {{ side }}_fallback as (
        select
            unpriced.tx_id,
            klines.close_price,
            klines.opened_at
        from (
            select
                tx_id,
                {{ token }} || 'USDT' as symbol,
                occurred_at
            from exact_priced
            where {{ exact }} is null and {{ token }} not in {{ stablecoins }}
        ) as unpriced
        asof inner join klines
            on
                unpriced.symbol = klines.symbol
                and unpriced.occurred_at >= klines.opened_at
    ),
{% endfor %}

fee_priced as (
    select
        exact_priced.* exclude (exact_priced.exact_token_close, exact_priced.exact_fee_token_close),
        coalesce(exact_priced.exact_token_close, token_fallback.close_price) as token_close,
        case
            when exact_priced.exact_token_close is not null then exact_priced.occurred_minute
            else token_fallback.opened_at
        end as token_priced_at,
        coalesce(exact_priced.exact_fee_token_close, fee_fallback.close_price) as fee_token_close,
        case
            when exact_priced.exact_fee_token_close is not null then exact_priced.occurred_minute
            else fee_fallback.opened_at
        end as fee_token_priced_at
    from exact_priced
    left join token_fallback on exact_priced.tx_id = token_fallback.tx_id
    left join fee_fallback on exact_priced.tx_id = fee_fallback.tx_id
),

prices as (
    select
        *,
        case
            when token_symbol in {{ stablecoins }} then 1.0
            when
                token_priced_at
                >= occurred_minute - to_minutes(cast({{ var('price_staleness_minutes') }} as bigint))
                then token_close
        end as token_price_usd,
        case
            when fee_token in {{ stablecoins }} then 1.0
            when
                fee_token_priced_at
                >= occurred_minute - to_minutes(cast({{ var('price_staleness_minutes') }} as bigint))
                then fee_token_close
        end as fee_token_price_usd,
        case
            when token_symbol in {{ stablecoins }} then 'stablecoin'
            when token_priced_at = occurred_minute then 'kline_1m'
            when
                token_priced_at
                >= occurred_minute - to_minutes(cast({{ var('price_staleness_minutes') }} as bigint))
                then 'kline_1m_earlier'
            else 'unpriced'
        end as price_source
    from fee_priced
),

valued as (
    select
        *,
        amount * token_price_usd as amount_usd,
        fee * fee_token_price_usd as fee_usd
    from prices
),

type_stats as (
    select
        tx_type,
        median(ln(amount_usd)) as median_log_amount,
        mad(ln(amount_usd)) as mad_log_amount,
        median(ln(fee_usd)) filter (where fee_usd > 0) as median_log_fee,
        mad(ln(fee_usd)) filter (where fee_usd > 0) as mad_log_fee
    from valued
    where amount_usd > 0
    group by tx_type
),

final as (
    select
        valued.tx_id,
        valued.occurred_at,
        valued.occurred_date,
        valued.hour_of_day,
        valued.day_of_week,
        valued.tx_type,
        valued.status,
        valued.status = 'completed' as is_completed,
        case when valued.tx_type = 'deposit' then valued.to_user_id else valued.from_user_id end
            as initiator_user_id,
        valued.from_user_id,
        valued.to_user_id,
        valued.from_address,
        valued.to_address,
        valued.token_symbol,
        valued.amount,
        valued.token_price_usd,
        valued.amount_usd,
        valued.fee_token,
        valued.fee,
        valued.fee_token_price_usd,
        valued.fee_usd,
        valued.leverage,
        valued.price_source,
        coalesce(
            abs(ln(valued.amount_usd) - type_stats.median_log_amount)
            / nullif(1.4826 * type_stats.mad_log_amount, 0) > 4,
            false
        ) as is_amount_outlier,
        coalesce(
            valued.fee_usd > 0
            and abs(ln(valued.fee_usd) - type_stats.median_log_fee)
            / nullif(1.4826 * type_stats.mad_log_fee, 0) > 4,
            false
        ) as is_fee_outlier,
        valued.repair_rules,
        valued.source,
        valued.batch_id,
        valued.ingested_at
    from valued
    left join type_stats on valued.tx_type = type_stats.tx_type
)

select * from final
