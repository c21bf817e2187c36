-- Candles from the binance source; the shared rules live in macros/klines.sql (stage_klines).
{{ stage_klines('binance') }}
