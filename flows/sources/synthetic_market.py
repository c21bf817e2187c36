"""Synthetic market model: correlated price paths with regimes, jumps and one cointegrated pair."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

import numpy as np

DAY_MS = 86_400_000
QUOTE_ASSETS = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
START_PRICES = {"BTC": 65_000.0, "ETH": 3_200.0, "BNB": 580.0, "SOL": 150.0, "XRP": 0.55}
ANNUAL_VOL = {"BTC": 0.55, "ETH": 0.70, "BNB": 0.60, "SOL": 0.95, "XRP": 0.85}
# Loadings on the common market factor: 0.93 * 0.88 gives BTC/ETH a return correlation near 0.8.
MARKET_BETA = {"BTC": 0.93, "ETH": 0.88, "BNB": 0.80, "SOL": 0.78, "XRP": 0.72}
MINUTE_USD_VOLUME = {"BTC": 1.2e6, "ETH": 6.0e5, "BNB": 1.2e5, "SOL": 2.5e5, "XRP": 1.5e5}
TRADE_USD = {"BTC": 900.0, "ETH": 600.0, "BNB": 350.0, "SOL": 300.0, "XRP": 250.0}
# Volatility regimes (calm, normal, stressed) as a Markov chain stepping once an hour.
REGIME_LEVELS = np.array([0.6, 1.0, 1.9])
REGIME_STAY = 0.97
# Weekday (Monday first) activity; weekends are quieter in markets, transactions and network load.
WEEKDAY_FACTOR = np.array([1.06, 1.08, 1.09, 1.07, 1.05, 0.84, 0.81])
# The cointegrated pair: the follower's log price = hedge * leader's log price + a stationary spread.
COINTEGRATED_PAIR = ("ETHUSDT", "BNBUSDT")
HEDGE_RATIO = 0.9
SPREAD_HALF_LIFE_MIN = 120.0
SPREAD_SD = 0.005


def first_order_recursion(gain: float, decay: float, x: np.ndarray, previous: float) -> np.ndarray:
    """y[n] = gain * x[n] + decay * y[n - 1], from y[-1] = previous.

    Bit for bit what scipy.signal.lfilter([gain], [1, -decay], x, zi=[decay * previous]) returns
    (the same operations in the same order), without importing scipy.signal: that import takes
    0.5 s and brings scipy.stats, which Great Expectations' import could otherwise defer (0.7 s,
    flows.quality.defer_scipy_stats). About 50 ns a value: 0.3 s over a year of 10 symbols.
    """
    values = (x * gain).tolist()
    y = previous
    for i, value in enumerate(values):
        y = value + decay * y
        values[i] = y
    return np.array(values, dtype=np.float64)


def stable_int(part: object) -> int:
    """A process-independent integer for a stream name (Python's hash() is salted per process)."""
    if isinstance(part, int | np.integer):
        return int(part) % 2**63
    digest = hashlib.blake2b(str(part).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def stream(seed: int, *parts: object) -> np.random.Generator:
    """An independent random stream for (seed, parts): chunks draw from their own stream."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed % 2**63, *map(stable_int, parts)]))
    )


def base_asset(symbol: str) -> str:
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def start_price(symbol: str) -> float:
    """Known assets start near their real price; others get a deterministic 0.1..1000 from a hash."""
    base = base_asset(symbol)
    if base in START_PRICES:
        return START_PRICES[base]
    u = stable_int(f"price:{base}") / 2**64
    return float(np.round(10 ** (-1 + 4 * u), 4))


def cointegrated_pair(symbols: list[str]) -> tuple[str, str] | None:
    """(leader, follower): ETHUSDT/BNBUSDT when both are asked for, else the first two symbols."""
    if all(s in symbols for s in COINTEGRATED_PAIR):
        return COINTEGRATED_PAIR
    if len(symbols) >= 2:
        return symbols[0], symbols[1]
    return None


def intraday_profile(hours: np.ndarray) -> np.ndarray:
    """Activity by UTC hour: an Asian morning bump, a European and a larger US-overlap peak."""
    return (
        0.70
        + 0.55 * np.exp(-(((hours - 14.5) / 2.6) ** 2))
        + 0.25 * np.exp(-(((hours - 1.5) / 2.2) ** 2))
        + 0.20 * np.exp(-(((hours - 8.5) / 2.0) ** 2))
    )


def student_t(rng: np.random.Generator, size: int, df: float = 4.0) -> np.ndarray:
    """Unit-variance Student-t shocks: fat-tailed minute returns, as real ones are."""
    return rng.standard_t(df, size) * np.sqrt((df - 2) / df)


@dataclass
class BaseCandles:
    """One symbol's candles for one day at the base step (1s or 1m), as plain arrays."""

    open_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    num_trades: np.ndarray
    taker_buy_base_volume: np.ndarray
    taker_buy_quote_volume: np.ndarray

    def aggregate(self, steps: int) -> BaseCandles:
        """Candles of `steps` base steps each (steps must divide the day)."""

        def shape(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1, steps)

        return BaseCandles(
            open_ms=shape(self.open_ms)[:, 0],
            open=shape(self.open)[:, 0],
            high=shape(self.high).max(axis=1),
            low=shape(self.low).min(axis=1),
            close=shape(self.close)[:, -1],
            volume=shape(self.volume).sum(axis=1),
            quote_volume=shape(self.quote_volume).sum(axis=1),
            num_trades=shape(self.num_trades).sum(axis=1),
            taker_buy_base_volume=shape(self.taker_buy_base_volume).sum(axis=1),
            taker_buy_quote_volume=shape(self.taker_buy_quote_volume).sum(axis=1),
        )

    @staticmethod
    def concat(parts: list[BaseCandles]) -> BaseCandles:
        names = BaseCandles.__dataclass_fields__
        return BaseCandles(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})

    def group(self, starts: np.ndarray) -> BaseCandles:
        """Candles over consecutive runs starting at the given row positions (e.g. months)."""
        return BaseCandles(
            open_ms=self.open_ms[starts],
            open=self.open[starts],
            high=np.maximum.reduceat(self.high, starts),
            low=np.minimum.reduceat(self.low, starts),
            close=self.close[np.r_[starts[1:] - 1, len(self.close) - 1]],
            volume=np.add.reduceat(self.volume, starts),
            quote_volume=np.add.reduceat(self.quote_volume, starts),
            num_trades=np.add.reduceat(self.num_trades, starts),
            taker_buy_base_volume=np.add.reduceat(self.taker_buy_base_volume, starts),
            taker_buy_quote_volume=np.add.reduceat(self.taker_buy_quote_volume, starts),
        )


@dataclass
class MarketModel:
    """Steps the whole market forward one day at a time; state carries across days.

    Each day draws from streams named by (seed, day, symbol), so the output depends only on the
    seed, the symbols and the start day, never on how the caller chunks its work.
    """

    seed: int
    symbols: list[str]
    step_ms: int = 60_000
    log_price: dict[str, float] = field(default_factory=dict)
    spread: float = 0.0
    regime: int = 1

    def __post_init__(self) -> None:
        self.pair = cointegrated_pair(self.symbols)
        follower = self.pair[1] if self.pair else None
        # The follower is priced from the leader, so it is stepped after everyone else.
        self.order = [s for s in self.symbols if s != follower] + ([follower] if follower else [])
        self.log_price = {s: float(np.log(start_price(s))) for s in self.symbols}
        self.anchor = dict(self.log_price)
        self.steps = DAY_MS // self.step_ms
        self.steps_per_hour = 3_600_000 // self.step_ms

    def day(self, day: date) -> dict[str, BaseCandles]:
        n = self.steps
        steps_per_year = 365 * n
        rng = stream(self.seed, "market", day.toordinal())
        regimes = np.empty(24, dtype=np.int64)
        for hour in range(24):
            if rng.random() > REGIME_STAY:
                self.regime = int(rng.choice([r for r in range(3) if r != self.regime]))
            regimes[hour] = self.regime
        vol_mult = np.repeat(REGIME_LEVELS[regimes], self.steps_per_hour)
        factor = student_t(rng, n)
        # Market-wide jumps (news) about every four days, hitting every symbol by its beta.
        common_jump = np.where(rng.random(n) < 1 / (4 * n), rng.normal(0, 0.015, n), 0.0)
        hours = np.arange(n) * (self.step_ms / 3_600_000)
        activity = intraday_profile(hours) * WEEKDAY_FACTOR[day.weekday()]
        day_ms = (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS
        open_ms = day_ms + np.arange(n, dtype=np.int64) * self.step_ms
        returns: dict[str, np.ndarray] = {}
        out: dict[str, BaseCandles] = {}
        for symbol in self.order:
            base = base_asset(symbol)
            srng = stream(self.seed, "market", symbol, day.toordinal())
            sigma = ANNUAL_VOL.get(base, 0.8) / np.sqrt(steps_per_year)
            beta = MARKET_BETA.get(base, 0.7)
            idio = student_t(srng, n)
            z = beta * factor + np.sqrt(1 - beta**2) * idio
            own_jump = np.where(srng.random(n) < 1 / (6 * n), srng.normal(0, 0.02, n), 0.0)
            r = sigma * vol_mult * z + beta * common_jump + own_jump
            if self.pair and symbol == self.pair[1]:
                r = self._follow(returns[self.pair[0]], srng, n)
            returns[symbol] = r
            out[symbol] = self._candles(symbol, r, sigma, vol_mult, activity, open_ms, srng)
        return out

    def _follow(self, leader_returns: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        """Follower returns: hedge * leader's plus the change of a mean-reverting (AR(1)) spread."""
        phi = np.exp(-np.log(2) / (SPREAD_HALF_LIFE_MIN * 60_000 / self.step_ms))
        shocks = rng.normal(0, SPREAD_SD * np.sqrt(1 - phi**2), n)
        spread = first_order_recursion(1.0, phi, shocks, self.spread)
        previous = np.concatenate([[self.spread], spread[:-1]])
        self.spread = float(spread[-1])
        return HEDGE_RATIO * leader_returns + (spread - previous)

    def _candles(
        self,
        symbol: str,
        r: np.ndarray,
        sigma: float,
        vol_mult: np.ndarray,
        activity: np.ndarray,
        open_ms: np.ndarray,
        rng: np.random.Generator,
    ) -> BaseCandles:
        base = base_asset(symbol)
        n = len(r)
        log_close = self.log_price[symbol] + np.cumsum(r)
        log_open = np.concatenate([[self.log_price[symbol]], log_close[:-1]])
        self.log_price[symbol] = float(log_close[-1])
        close, open_ = np.exp(log_close), np.exp(log_open)
        wick = 0.6 * sigma * vol_mult
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, n)) * wick)
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, n)) * wick)
        z = r / (sigma * vol_mult)
        # Volume follows the intraday profile, the regime and the size of the move.
        usd = (
            MINUTE_USD_VOLUME.get(base, 5e4)
            * (self.step_ms / 60_000)
            * activity
            * vol_mult**0.7
            * np.exp(0.35 * (np.minimum(np.abs(z), 8) - 0.8))
            * rng.lognormal(0, 0.3, n)
        )
        vwap = (high + low + 2 * close) / 4
        volume = np.round(usd / vwap, 8)
        quote_volume = volume * vwap
        trades = np.maximum(1, np.round(usd / TRADE_USD.get(base, 200.0) * rng.lognormal(0, 0.2, n)))
        buy_share = np.clip(0.5 + 0.2 * np.tanh(z) + rng.normal(0, 0.04, n), 0.03, 0.97)
        taker_base = np.round(volume * buy_share, 8)
        return BaseCandles(
            open_ms=open_ms,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            quote_volume=quote_volume,
            num_trades=trades.astype(np.int64),
            taker_buy_base_volume=taker_base,
            taker_buy_quote_volume=taker_base * vwap,
        )
