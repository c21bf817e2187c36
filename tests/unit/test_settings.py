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


def test_an_end_not_given_is_now_for_real_sources_and_the_fixed_window_for_synthetic(monkeypatch):
    from datetime import UTC, datetime, timedelta

    monkeypatch.delenv("LAKEHOUSE_END", raising=False)
    monkeypatch.delenv("LAKEHOUSE_SOURCE", raising=False)
    monkeypatch.chdir(PROJECT_ROOT / "tests")  # no .env here
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    start = tomorrow - timedelta(days=3)

    assert load_settings(source="synthetic").end == date(2026, 10, 31)
    for source in ("binance", "archive", "upload"):
        assert load_settings(source=source, start=start).end == tomorrow
    assert load_settings(source="binance", start=start, end=tomorrow - timedelta(days=1)).end == (
        tomorrow - timedelta(days=1)
    )


def test_unknown_lakehouse_variables_warn_once_each_with_the_closest_setting(monkeypatch, capsys):
    import os

    import flows.settings

    for name in [n for n in os.environ if n.upper().startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(flows.settings, "_warned", set(), raising=False)  # warnings once per process
    monkeypatch.setenv("LAKEHOUSE_SYMBOL", "BTCUSDT")
    monkeypatch.setenv("LAKEHOUSE_LAKEDIR", "/tmp/x")
    monkeypatch.setenv("LAKEHOUSE_QWERTY", "1")
    # Read by dbt's profile, not by Settings: known, so no warning.
    monkeypatch.setenv("LAKEHOUSE_DBT_THREADS", "1")
    monkeypatch.setenv("LAKEHOUSE_DBT_TARGET_PATH", "/tmp/target")
    monkeypatch.setenv("LAKEHOUSE_DBT_MEMORY_LIMIT", "2GB")

    settings = load_settings()
    load_settings()  # a second load in the same process says nothing again

    assert settings.symbols == ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    assert capsys.readouterr().err.splitlines() == [
        "warning: LAKEHOUSE_LAKEDIR is not a lakehouse setting and is ignored; did you mean LAKEHOUSE_LAKE_DIR?",
        "warning: LAKEHOUSE_QWERTY is not a lakehouse setting and is ignored; the settings are listed in "
        "flows/settings.py",
        "warning: LAKEHOUSE_SYMBOL is not a lakehouse setting and is ignored; did you mean LAKEHOUSE_SYMBOLS?",
    ]


def test_an_empty_lake_dir_is_an_error_not_the_current_directory(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", "")
    with pytest.raises(LakehouseError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid setting lake_dir: it is empty, which would mean the current directory; set it to a "
        "folder, or unset it for the default (check the option or LAKEHOUSE_LAKE_DIR)"
    )
