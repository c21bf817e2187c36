"""Synthetic exchange activity: users, their transactions and the network they settle on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from flows.sources.synthetic_market import (
    DAY_MS,
    WEEKDAY_FACTOR,
    first_order_recursion,
    intraday_profile,
    stream,
)

MINUTES = 1440
HEX = np.array([f"{i:02x}" for i in range(256)], dtype="S2")
# The same pairs as little-endian uint16s: a numeric take is several times faster than one on S2.
HEX_PAIRS = np.frombuffer(HEX.tobytes(), dtype="<u2")
PREFIX_0X = np.frombuffer(b"0x", dtype="<u2")[0]

COUNTRIES = np.array(
    [
        "US",
        "TR",
        "IN",
        "BR",
        "VN",
        "NG",
        "GB",
        "DE",
        "KR",
        "RU",
        "JP",
        "ID",
        "PH",
        "FR",
        "UA",
        "AR",
        "CA",
        "AU",
        "ES",
        "IT",
        "MX",
        "PL",
        "TH",
        "ZA",
        "NL",
    ]
)
COUNTRY_WEIGHTS = np.array(
    [14, 9, 9, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1.5, 1.5, 1, 1], dtype=float
)
HIGH_INCOME = np.isin(COUNTRIES, ["US", "GB", "DE", "KR", "JP", "FR", "CA", "AU", "ES", "IT", "NL"])
DEVICES = np.array(["android", "ios", "web", "desktop"])
DEVICE_WEIGHTS = {True: np.array([0.30, 0.42, 0.20, 0.08]), False: np.array([0.62, 0.14, 0.19, 0.05])}
VIP_BALANCE_USD = np.array([1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7])  # vip 1..9 thresholds
KYC_WEIGHTS = np.array([0.08, 0.42, 0.38, 0.12])
MAX_BALANCE_USD = 5e7
REGISTRATION_HISTORY_DAYS = 365
USER_CHUNK = 250_000

TX_TYPES = np.array(["trade", "deposit", "withdrawal", "transfer", "futures"])
TX_TYPE_WEIGHTS = np.array([0.55, 0.12, 0.10, 0.08, 0.15])
STATUSES = np.array(["completed", "pending", "failed"])
LEVERAGES = np.array([1, 2, 3, 5, 10, 20, 25, 50, 75, 100, 125])
LEVERAGE_WEIGHTS = np.array([6, 7, 6, 14, 25, 18, 6, 9, 3, 4, 2], dtype=float)
MAX_TX_USD = 5e6
TRADE_FEE_RATE = 0.001
FUTURES_FEE_RATE = 0.0004
GAS_UNITS = {"ETH": 21_000, "token": 65_000}
REFERENCE_ETH_USD = 3_200.0
FUTURES_ADDRESS = b"0x" + HEX[np.frombuffer(bytes(range(20, 40)), dtype=np.uint8)].tobytes()


def hex_addresses(raw: np.ndarray) -> np.ndarray:
    """(n, 20) random bytes -> n wallet addresses as 42-byte b'0x...' strings."""
    out = np.empty((len(raw), 21), dtype="<u2")
    out[:, 0] = PREFIX_0X
    out[:, 1:] = HEX_PAIRS[raw]
    return out.view("S42").reshape(len(raw))


def weighted_draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with probabilities given by a normalised cdf.

    Sorted queries make the binary searches walk the cdf in order (cache friendly, several times
    faster on large cdfs); a permutation then puts the draws back in random order.
    """
    draws = np.searchsorted(cdf, np.sort(rng.random(n)), side="right")
    return np.minimum(draws, len(cdf) - 1)[rng.permutation(n)]


def pick(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """n category codes drawn with the given (unnormalised) weights."""
    cdf = np.cumsum(weights) / np.sum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def day_start_ms(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS


# Network ------------------------------------------------------------------------------------


@dataclass
class NetworkModel:
    """Per-minute chain load: tps with daily/weekly seasonality, gas rising with tps, PoW stats."""

    seed: int
    base_tps: float = 14.0
    base_gas_gwei: float = 12.0
    target_block_s: float = 13.0
    load: float = 0.0
    log_hashrate: float = float(np.log(2.0e14))
    difficulty: float = 2.0e14 * 13.0

    def day(self, day: date, market_activity: np.ndarray | None = None) -> dict[str, np.ndarray]:
        rng = stream(self.seed, "network", day.toordinal())
        hours = np.arange(MINUTES) / 60
        seasonal = intraday_profile(hours) * WEEKDAY_FACTOR[day.weekday()]
        phi = 0.98
        shocks = rng.normal(0, 0.15 * np.sqrt(1 - phi**2), MINUTES)
        load = first_order_recursion(1.0, phi, shocks, self.load)
        self.load = float(load[-1])
        if market_activity is not None and market_activity.mean() > 0:
            # Busy markets congest the chain: tps follows the market's own volume surprises.
            load = load + 0.25 * np.log(market_activity / market_activity.mean() / seasonal * seasonal.mean())
        tps = self.base_tps * seasonal * np.exp(load)
        gas = self.base_gas_gwei * np.exp(1.8 * (tps / self.base_tps - 1)) * rng.lognormal(0, 0.18, MINUTES)
        spikes = rng.random(MINUTES) < 0.002
        gas = np.where(spikes, gas * rng.uniform(3, 8, MINUTES), gas)
        gas = np.minimum(np.round(gas, 3), 2000.0)
        steps = rng.normal(0, 0.002, MINUTES) - 0.0005 * (self.log_hashrate - np.log(2.0e14))
        log_hashrate = self.log_hashrate + np.cumsum(steps)
        self.log_hashrate = float(log_hashrate[-1])
        hashrate = np.exp(log_hashrate)
        # Difficulty retargets slowly towards hashrate * target block time.
        alpha = 0.01
        difficulty = first_order_recursion(alpha, 1 - alpha, hashrate * self.target_block_s, self.difficulty)
        self.difficulty = float(difficulty[-1])
        block_time = difficulty / hashrate * rng.lognormal(0, 0.08, MINUTES)
        return {
            "observed_at": day_start_ms(day) + np.arange(MINUTES, dtype=np.int64) * 60_000,
            "gas_price_gwei": gas,
            "tps": np.round(tps, 3),
            "block_time_s": np.round(block_time, 3),
            "difficulty": np.round(difficulty),
            "hashrate": np.round(hashrate),
        }


# Users --------------------------------------------------------------------------------------


@dataclass
class Users:
    """What transactions need to know about every user (kept in memory: ~40 bytes a user)."""

    registered_ms: np.ndarray
    activity: np.ndarray
    address_bytes: np.ndarray
    vip_tier: np.ndarray

    def __len__(self) -> int:
        return len(self.registered_ms)


def registration_ms(q: np.ndarray, first_ms: int, last_ms: int) -> np.ndarray:
    """Inverse CDF of a registration rate growing threefold over the window (newer cohorts bigger)."""
    span = last_ms - first_ms
    g = np.log(3.0)
    return (first_ms + span * np.log1p(q * (np.exp(g) - 1)) / g).astype(np.int64)


def user_chunks(seed: int, n_users: int, first_ms: int, last_ms: int):
    """Yield (columns, Users part) per chunk of USER_CHUNK users; ids grow with registration time."""
    for chunk, begin in enumerate(range(0, n_users, USER_CHUNK)):
        rng = stream(seed, "users", chunk)
        end = min(begin + USER_CHUNK, n_users)
        n = end - begin
        ids = np.arange(begin + 1, end + 1, dtype=np.int64)
        q = (np.arange(begin, end) + rng.random(n)) / n_users
        registered = registration_ms(q, first_ms, last_ms)
        address = rng.integers(0, 256, (n, 20), dtype=np.uint8)
        country = pick(rng, n, COUNTRY_WEIGHTS)
        rich = HIGH_INCOME[country]
        device = np.where(rich, pick(rng, n, DEVICE_WEIGHTS[True]), pick(rng, n, DEVICE_WEIGHTS[False]))
        # Balances: a log-normal body and a Pareto tail of whales (about 3% of users).
        body = rng.lognormal(np.log(250), 1.8, n)
        whales = rng.random(n) < 0.03
        tail = 5e4 * (1 + rng.pareto(1.3, n))
        balance = np.minimum(np.where(whales, tail, body), MAX_BALANCE_USD)
        balance = np.round(balance * np.where(rich, 1.6, 1.0), 2)
        vip = np.searchsorted(VIP_BALANCE_USD, balance, side="right").astype(np.int64)
        kyc = pick(rng, n, KYC_WEIGHTS)
        kyc = np.where(balance > 5e4, np.maximum(kyc, 2), kyc).astype(np.int64)
        age_days = (last_ms - registered) / DAY_MS
        # Retention decays with account age; retained users logged in recently.
        retained = rng.random(n) < 0.25 + 0.65 * np.exp(-age_days / 90)
        recent = last_ms - (rng.exponential(2.0, n) * DAY_MS).astype(np.int64)
        stale_until = np.maximum(registered, last_ms - 31 * DAY_MS)
        stale = registered + (rng.random(n) * (stale_until - registered)).astype(np.int64)
        last_login = np.maximum(np.where(retained, recent, stale), registered)
        is_active = last_login >= last_ms - 30 * DAY_MS
        activity = rng.lognormal(0, 1.2, n) * np.where(is_active, 1.0, 0.08) * (1 + 0.3 * vip)
        columns = {
            "user_id": ids,
            "wallet_address": hex_addresses(address),
            "registered_at": registered,
            "last_login_at": last_login,
            "account_balance_usd": balance,
            "country": country,
            "device_type": device,
            "vip_tier": vip,
            "kyc_level": kyc,
            "is_active": is_active,
        }
        yield columns, Users(registered, activity, address, vip.astype(np.int8))


# Transactions -------------------------------------------------------------------------------


def tx_day(
    seed: int,
    day: date,
    tx_per_day: int,
    users: Users,
    tokens: list[str],
    minute_close: dict[str, np.ndarray],
    minute_activity: np.ndarray | None,
    gas_gwei: np.ndarray,
    limit_ms: int,
) -> dict[str, np.ndarray]:
    """One day of transactions, sorted by time; tx_id = yyyymmdd * 1e8 + sequence in the day.

    minute_close maps every token but USDT to its 1m close for this day, so amount * close of the
    minute containing occurred_at is the USD value the generator drew.
    """
    rng = stream(seed, "transactions", day.toordinal())
    start = day_start_ms(day)
    weekday = WEEKDAY_FACTOR[day.weekday()] / WEEKDAY_FACTOR.mean()
    n = int(rng.poisson(tx_per_day * weekday)) if tx_per_day > 0 else 0
    hours = np.arange(MINUTES) / 60
    intensity = intraday_profile(hours)
    if minute_activity is not None and minute_activity.sum() > 0:
        intensity = 0.5 * intensity / intensity.mean() + 0.5 * minute_activity / minute_activity.mean()
    cdf = np.cumsum(intensity) / intensity.sum()
    minute = np.minimum(np.searchsorted(cdf, np.sort(rng.random(n)), side="right"), MINUTES - 1)
    occurred = np.sort(start + minute * 60_000 + rng.integers(0, 60_000, n))
    occurred = occurred[occurred < limit_ms]
    n = len(occurred)
    minute = (occurred - start) // 60_000

    # Newer accounts trade more: activity decays with account age (cohort decay).
    eligible = int(np.searchsorted(users.registered_ms, start, side="left"))
    if eligible < 2:
        eligible = min(len(users), 2)
    age_days = np.maximum(start - users.registered_ms[:eligible], 0) / DAY_MS
    weights = users.activity[:eligible] * (1 + age_days / 30) ** -0.8
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    sender = weighted_draw(rng, cdf, n)
    other = weighted_draw(rng, cdf, n)
    other = np.where(other == sender, (other + 1) % eligible, other)

    tx_type = pick(rng, n, TX_TYPE_WEIGHTS)
    is_trade, is_deposit, is_withdrawal = tx_type == 0, tx_type == 1, tx_type == 2
    is_transfer, is_futures = tx_type == 3, tx_type == 4
    market_tokens = [t for t in tokens if t != "USDT"]
    token_weights = np.array([1.0 / (1 + i) for i in range(len(market_tokens))])
    token = pick(rng, n, token_weights) if market_tokens else np.zeros(n, dtype=np.int64)
    usdt = len(tokens) - 1
    # Deposits, withdrawals and transfers move stablecoins 40% of the time.
    token = np.where(~(is_trade | is_futures) & (rng.random(n) < 0.4), usdt, token)

    vip = users.vip_tier[sender].astype(float)
    usd = rng.lognormal(np.log(180), 1.5, n) * (1 + 0.6 * vip)
    whales = rng.random(n) < 0.01
    usd = np.where(whales, usd * (1 + rng.pareto(1.2, n)) * 20, usd)
    usd = np.clip(usd, 1.0, MAX_TX_USD)
    prices = np.ones((len(tokens), MINUTES))
    for i, name in enumerate(tokens):
        if name in minute_close:
            prices[i] = minute_close[name]
    price = prices[token, minute]
    amount = np.round(usd / price, 8)
    amount = np.where(amount > 0, amount, 1e-8)
    usd = amount * price

    eth = minute_close.get("ETH")
    eth_usd = eth[minute] if eth is not None else REFERENCE_ETH_USD
    gas = gas_gwei[minute]
    gas_units = np.where(token == usdt, GAS_UNITS["token"], GAS_UNITS["ETH"])
    onchain_usd = gas * gas_units * 1e-9 * eth_usd * rng.lognormal(0, 0.1, n)
    discount = 1 - 0.05 * vip
    fee_usd = np.select(
        [is_trade, is_futures, is_withdrawal | is_transfer],
        [usd * TRADE_FEE_RATE * discount, usd * FUTURES_FEE_RATE * discount, onchain_usd],
        0.0,
    )
    fee_in_usdt = is_futures
    fee_token = np.where(fee_in_usdt, usdt, token)
    fee = np.round(fee_usd / np.where(fee_in_usdt, 1.0, price), 10)

    leverage = np.where(is_futures, LEVERAGES[pick(rng, n, LEVERAGE_WEIGHTS)], 0)
    # On-chain moves fail more often when the chain is congested.
    fail_p = np.where(is_withdrawal | is_transfer, 0.01 + 0.04 * np.minimum(gas / 60, 1), 0.01)
    u = rng.random(n)
    status = np.where(u < fail_p, 2, np.where(u < fail_p + 0.012, 1, 0))
    recent_pending = occurred >= limit_ms - 10 * 60_000
    status = np.where(recent_pending & (u < 0.5), 1, status)

    sender_address = hex_addresses(users.address_bytes[sender])
    external = is_deposit | is_withdrawal
    external_address = hex_addresses(rng.integers(0, 256, (int(external.sum()), 20), dtype=np.uint8))
    from_address = sender_address.copy()
    from_address[is_deposit] = external_address[is_deposit[external]]
    to_address = hex_addresses(users.address_bytes[other])
    to_address[is_withdrawal] = external_address[is_withdrawal[external]]
    to_address[is_futures] = FUTURES_ADDRESS
    to_address[is_deposit] = sender_address[is_deposit]
    sender_id = sender.astype(np.int64) + 1
    other_id = other.astype(np.int64) + 1
    from_user = np.where(is_deposit, -1, sender_id)
    to_user = np.select([is_deposit, is_trade | is_transfer], [sender_id, other_id], -1)
    ymd = day.year * 10_000 + day.month * 100 + day.day
    return {
        "tx_id": ymd * 100_000_000 + np.arange(1, n + 1, dtype=np.int64),
        "occurred_at": occurred.astype(np.int64),
        "from_user_id": from_user,
        "to_user_id": to_user,
        "from_address": from_address,
        "to_address": to_address,
        "tx_type": tx_type,
        "token_symbol": token,
        "amount": amount,
        "fee": fee,
        "fee_token": fee_token,
        "leverage": leverage.astype(np.int64),
        "status": status,
    }
