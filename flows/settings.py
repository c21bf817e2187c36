"""One Settings object for the whole project (env prefix LAKEHOUSE_, optional .env)."""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows.errors import LakehouseError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
KLINE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
DEFAULT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
Source = Literal["synthetic", "binance", "archive", "upload"]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Where the lake lives and what the default run ingests."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_", env_file=".env", extra="ignore", validate_default=True
    )

    lake_dir: Path = Field(default=PROJECT_ROOT / "lake", description="Root of the data lake.")
    source: Source = "synthetic"
    market: Literal["spot", "usdm"] = "spot"
    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    intervals: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1m"])
    # A fixed window keeps the offline default deterministic: same inputs, same marts.
    start: date = date(2026, 10, 1)
    end: date = date(2026, 10, 31)
    seed: int = 42
    # Synthetic source scale and defects (flows/sources/synthetic.py); the defaults keep
    # `make run` quick. defect_rate is the share of rows each defect kind hits.
    synthetic_users: int = Field(default=5000, ge=2)
    synthetic_tx_per_day: int = Field(default=10000, ge=0)
    defect_rate: float = Field(default=0.002, ge=0.0, le=0.1)
    synthetic_clean: bool = False
    snapshots_kept: int = 5
    binance_api_url: str = "https://api.binance.com/api"
    binance_futures_api_url: str = "https://fapi.binance.com/fapi"
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_futures_ws_url: str = "wss://fstream.binance.com"
    # Trade stream micro-batches: flush every N seconds or M trades, whichever comes first.
    stream_flush_seconds: float = Field(default=1.0, gt=0, le=3600)
    stream_flush_trades: int = Field(default=5000, gt=0)
    inbox_dir: Path | None = None
    # Binance ingestion (issue 3). Keys are optional (market data is public), come only from the
    # environment/.env, and SecretStr keeps them out of reprs and logs.
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_overlap_candles: int = Field(default=2, ge=0)
    binance_max_retries: int = Field(default=5, ge=0)
    binance_backoff_seconds: float = Field(default=1.0, ge=0)
    binance_backoff_max_seconds: float = Field(default=60.0, ge=0)
    binance_timeout_seconds: float = Field(default=10.0, gt=0)
    # Pause for the next weight window once this share of the per-minute limit is used.
    binance_weight_headroom: float = Field(default=0.9, gt=0, le=1)
    archive_base_url: str = "https://data.binance.vision"
    # Files younger than this are left for the next run: they may still be being copied.
    inbox_settle_seconds: float = Field(default=2.0, ge=0)
    gx_dir: Path | None = None
    # Where the dashboard's data quality page links to (`lakehouse dq-report` / `lakehouse docs`).
    data_docs_url: str = "http://127.0.0.1:8081/index.html"
    dbt_docs_url: str = "http://127.0.0.1:8080"
    # Gate 1 flags (counts, does not quarantine) a close-to-close move beyond this many standard
    # deviations of the previous hour of returns; gate 2 fails a mart whose rows drop below this
    # share of the previous published snapshot.
    gate_price_jump_sigmas: float = Field(default=12.0, gt=0)
    gate_min_row_ratio: float = Field(default=0.5, ge=0, le=1)
    # DuckDB's memory for the dbt build, e.g. "3GB"; by default 768 MB plus 0.7 of the raw
    # lake's size on disk, at most half the machine's memory (flows/transform.py).
    dbt_memory_limit: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$")

    @field_validator("lake_dir", "inbox_dir", "gx_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # Path("") is the current directory: an empty LAKEHOUSE_LAKE_DIR= would quietly put the
        # lake wherever the command happens to run.
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "it is empty, which would mean the current directory; set it to a folder, or unset it for the default"
            )
        return value

    @field_validator("symbols", "intervals", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("symbols")
    @classmethod
    def _symbols_upper(cls, value: list[str]) -> list[str]:
        symbols = [s.upper() for s in value]
        for symbol in symbols:
            if not SYMBOL_PATTERN.match(symbol):
                raise ValueError(
                    f"symbol {symbol!r} is not a Binance symbol (2-20 letters/digits, e.g. BTCUSDT)"
                )
        if not symbols:
            raise ValueError("at least one symbol is needed")
        return symbols

    @field_validator("intervals")
    @classmethod
    def _known_intervals(cls, value: list[str]) -> list[str]:
        for interval in value:
            if interval not in KLINE_INTERVALS:
                raise ValueError(
                    f"interval {interval!r} is not a Binance interval ({', '.join(KLINE_INTERVALS)})"
                )
        return value

    @model_validator(mode="after")
    def _range(self) -> Settings:
        if "end" not in self.model_fields_set and self.source != "synthetic":
            # The fixed window is the synthetic source's; real market data runs up to now (the
            # day after today: an end day is exclusive, and landing clips it to now).
            self.end = datetime.now(UTC).date() + timedelta(days=1)
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        self.lake_dir = Path(self.lake_dir).expanduser().resolve()
        return self

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.lake_dir / "inbox"

    @property
    def gx_root(self) -> Path:
        """Where the GE context (gx/) lives: expectations/ unless LAKEHOUSE_GX_DIR says otherwise."""
        return Path(self.gx_dir).resolve() if self.gx_dir else PROJECT_ROOT / "expectations"


# LAKEHOUSE_ variables that are not settings but are read elsewhere: by dbt's profiles.yml.
OTHER_ENV_NAMES = frozenset({"LAKEHOUSE_DBT_THREADS", "LAKEHOUSE_DBT_TARGET_PATH"})
_warned: set[str] = set()


def unknown_env_names(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """LAKEHOUSE_ variables that name no setting, each with the closest setting's name (or None)."""
    known = {f"LAKEHOUSE_{name.upper()}" for name in Settings.model_fields} | OTHER_ENV_NAMES
    # Compared without the shared prefix, which would make every name look close.
    suffixes = [k.removeprefix("LAKEHOUSE_") for k in sorted(known)]
    unknown = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith("LAKEHOUSE_") or upper in known:
            continue
        close = difflib.get_close_matches(upper.removeprefix("LAKEHOUSE_"), suffixes, n=1, cutoff=0.6)
        unknown.append((name, f"LAKEHOUSE_{close[0]}" if close else None))
    return unknown


def warn_unknown_env() -> None:
    """One line on stderr per LAKEHOUSE_ variable that is no setting (a typo is otherwise ignored
    without a word), once per process. A warning, not an error: other tools may set their own."""
    for name, close in unknown_env_names(os.environ):
        if name in _warned:
            continue
        _warned.add(name)
        hint = f"did you mean {close}?" if close else "the settings are listed in flows/settings.py"
        print(f"warning: {name} is not a lakehouse setting and is ignored; {hint}", file=sys.stderr)


def load_settings(**overrides: object) -> Settings:
    """Build Settings from env/.env plus overrides, turning validation errors into one line."""
    warn_unknown_env()
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except Exception as exc:  # pydantic.ValidationError: keep only the first message
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = str(first.get("msg", exc)).removeprefix("Value error, ")
            if not where:  # the one check across settings: the date range
                raise LakehouseError(
                    f"invalid settings: {message} (check --start/--end or LAKEHOUSE_START/LAKEHOUSE_END)"
                ) from exc
            raise LakehouseError(
                f"invalid setting {where}: {message} (check the option or LAKEHOUSE_{where.upper()})"
            ) from exc
        raise


def ensure_prefect_home() -> None:
    """Keep Prefect's history project-local, so `make run` and `make serve` share it."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect")))
    home.mkdir(parents=True, exist_ok=True)
    # The temporary server's 20 s default start-up budget is too tight on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Offline machines: telemetry would only log a failed DNS lookup on every start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
