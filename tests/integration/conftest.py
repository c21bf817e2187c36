"""Integration fixtures: one Prefect test harness (temporary API and database) for the session."""

from __future__ import annotations

import os
import tempfile

import pytest

# Result storage and Prefect's own files go to a throwaway home, never the project's .prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="lakehouse-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
