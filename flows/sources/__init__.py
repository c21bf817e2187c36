"""One module per source; each lands frames in the raw schema into lake/landing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from flows.errors import LakehouseError
from flows.lake import BatchRef
from flows.settings import Settings


@dataclass
class LandResult:
    """What one landing produced: batch refs per dataset, plus per-source notes (defects, errors)."""

    refs: dict[str, list[BatchRef]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def merge(self, other: LandResult) -> LandResult:
        for dataset, refs in other.refs.items():
            self.refs.setdefault(dataset, []).extend(refs)
        for key, value in other.notes.items():
            mine = self.notes.get(key)
            if isinstance(mine, list) and isinstance(value, list):
                self.notes[key] = mine + value
            elif isinstance(mine, dict) and isinstance(value, dict):
                self.notes[key] = {**mine, **value}
            else:
                self.notes[key] = value
        return self

    @property
    def rows(self) -> dict[str, int]:
        return {dataset: sum(r.rows for r in refs) for dataset, refs in self.refs.items()}


# The module that lands each source; imported when a source is first landed.
SOURCE_MODULES = {
    "synthetic": "flows.sources.synthetic",
    "binance": "flows.sources.binance_rest",
    "archive": "flows.sources.inbox",
    "upload": "flows.sources.inbox",
}


def import_source_modules(sources: list[str]) -> None:
    """Import the landing modules of these sources now, in this thread.

    The flow does this before it imports Great Expectations in a background thread, so the
    two never import the same libraries (pandas' and pyarrow's modules) at the same time.
    """
    for source in sources:
        if source in SOURCE_MODULES:
            importlib.import_module(SOURCE_MODULES[source])


def land_source(settings: Settings) -> LandResult:
    """Land the configured source into lake/landing; the raw gate moves it on."""
    if settings.source == "synthetic":
        from flows.sources.synthetic import land_synthetic

        return land_synthetic(settings)
    if settings.source == "binance":
        from flows.sources.binance_rest import land_rest_klines

        return land_rest_klines(settings)
    if settings.source in ("archive", "upload"):
        from flows.sources.inbox import land_inbox

        return land_inbox(settings)
    raise LakehouseError(f"unknown source {settings.source!r}; use synthetic, binance, archive or upload")
