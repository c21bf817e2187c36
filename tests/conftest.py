"""Shared fixtures: every test gets its own lake, GE context and Prefect home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the project's lake or Prefect history.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lake = tmp_path / "lake"
    monkeypatch.setenv("LAKEHOUSE_LAKE_DIR", str(lake))
    monkeypatch.setenv("LAKEHOUSE_GX_DIR", str(tmp_path / "gx"))
    return lake


@pytest.fixture
def settings(lake_dir: Path):
    from flows.settings import load_settings

    return load_settings(lake_dir=lake_dir)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest swaps sys.modules['__main__'] for the page it runs and leaves it there;
    multiprocessing's spawn (Dask workers) then re-runs that page in every child, which dies."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
