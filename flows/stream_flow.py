"""The long-running Prefect flow behind the `lakehouse/stream` deployment: live trades into lake/raw."""

from __future__ import annotations

from prefect import flow, task

from flows.lake import check_lake_dir
from flows.settings import load_settings


# A crash restarts the collector, which refills every missed trade by id from the lake's max id.
@task(name="collect_trades", retries=5, retry_delay_seconds=[5, 15, 60, 120, 300])
def collect_trades(settings, duration: float | None) -> dict[str, int]:
    from flows.sources.trades_stream import run_stream

    return run_stream(settings, duration=duration).as_dict()


@flow(name="trade_stream", log_prints=True)
def trade_stream(
    symbols: list[str] | None = None,
    market: str | None = None,
    duration: float | None = None,
) -> dict[str, int]:
    """Collect aggTrades until `duration` seconds pass (or forever) and report the counters."""
    settings = load_settings(symbols=symbols, market=market)
    check_lake_dir(settings.lake_dir)
    return collect_trades(settings, duration)
