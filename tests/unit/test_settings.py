"""Settings: env prefix, CSV lists, defaults and one-line validation errors."""

from __future__ import annotations

from datetime import date

import pytest

from flows.errors import LakehouseError
from flows.settings import PROJECT_ROOT, load_settings


def test_defaults_are_the_offline_embedded_run(monkeypatch):
    for name in ("LAKEHOUSE_LAKE_DIR", "LAKEHOUSE_SYMBOLS", "LAKEHOUSE_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(PROJECT_ROOT / "tests")  # no .env here

    settings = load_settings()

    assert settings.lake_dir == PROJECT_ROOT / "lake"
    assert settings.source == "synthetic"
    assert settings.symbols == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    assert settings.intervals == ["1m"]
    assert (settings.end - settings.start).days == 30


def test_env_prefix_and_comma_separated_lists(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", str(tmp_path / "x"))
    monkeypatch.setenv("LAKEHOUSE_SYMBOLS", "btcusdt, ethusdt")
    monkeypatch.setenv("LAKEHOUSE_INTERVALS", "1m,1h")
    monkeypatch.setenv("LAKEHOUSE_START", "2026-01-01")
    monkeypatch.setenv("LAKEHOUSE_END", "2026-01-03")

    settings = load_settings()

    assert settings.lake_dir == tmp_path / "x"
    assert settings.symbols == ["BTCUSDT", "ETHUSDT"]
    assert settings.intervals == ["1m", "1h"]
    assert (settings.start, settings.end) == (date(2026, 1, 1), date(2026, 1, 3))


def test_overrides_win_over_env(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_SYMBOLS", "BTCUSDT")
    assert load_settings(symbols="SOLUSDT").symbols == ["SOLUSDT"]


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.delenv("LAKEHOUSE_SYMBOLS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LAKEHOUSE_SYMBOLS=ADAUSDT\n")
    assert load_settings().symbols == ["ADAUSDT"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"symbols": "BTC-USDT"}, "invalid setting symbols: symbol 'BTC-USDT' is not a Binance symbol"),
        ({"intervals": "7m"}, "invalid setting intervals: interval '7m' is not a Binance interval"),
        (
            {"start": date(2026, 2, 1), "end": date(2026, 1, 1)},
            "invalid settings: end 2026-01-01 must be after start 2026-02-01 "
            "(check --start/--end or LAKEHOUSE_START/LAKEHOUSE_END)",
        ),
        ({"source": "ftp"}, "invalid setting source: Input should be 'synthetic', 'binance'"),
    ],
)
def test_invalid_settings_raise_one_line(overrides, message):
    with pytest.raises(LakehouseError) as info:
        load_settings(**overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
