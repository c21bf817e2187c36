"""Scale points of the benchmark: symbols x days of 1-minute klines, with users and transactions alongside."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

# Real symbol names, so the synthetic generator gives them their usual prices and betas.
SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT",
    "DOTUSDT", "LINKUSDT", "TRXUSDT", "MATICUSDT", "LTCUSDT", "BCHUSDT", "ATOMUSDT", "UNIUSDT",
    "XLMUSDT", "ETCUSDT", "FILUSDT", "APTUSDT", "ARBUSDT", "OPUSDT", "NEARUSDT", "ICPUSDT",
    "INJUSDT", "SUIUSDT", "SEIUSDT", "TIAUSDT", "AAVEUSDT", "MKRUSDT", "LDOUSDT", "RUNEUSDT",
    "GRTUSDT", "SANDUSDT", "MANAUSDT", "AXSUSDT", "EGLDUSDT", "ALGOUSDT", "VETUSDT", "HBARUSDT",
    "XTZUSDT", "EOSUSDT", "THETAUSDT", "FTMUSDT", "CRVUSDT", "SNXUSDT", "COMPUSDT", "ZECUSDT",
    "DASHUSDT", "KAVAUSDT",
]  # fmt: skip
END = date(2026, 11, 1)


@dataclass(frozen=True)
class Scale:
    name: str
    symbols: int
    days: int
    users: int
    tx_per_day: int
    repeats: int

    @property
    def start(self) -> date:
        return END - timedelta(days=self.days)

    @property
    def end(self) -> date:
        return END

    @property
    def symbol_list(self) -> list[str]:
        return SYMBOLS[: self.symbols]

    @property
    def klines(self) -> int:
        return self.symbols * self.days * 1440


SCALES = {
    # A smoke-test point: checks that every stage runs, in about a minute.
    "XS": Scale("XS", symbols=3, days=2, users=200, tx_per_day=200, repeats=1),
    "S": Scale("S", symbols=5, days=30, users=2_000, tx_per_day=2_000, repeats=3),
    "M": Scale("M", symbols=10, days=365, users=20_000, tx_per_day=5_000, repeats=1),
    "L": Scale("L", symbols=50, days=365, users=100_000, tx_per_day=20_000, repeats=1),
}
