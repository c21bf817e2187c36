"""Suite modules: each exposes build_suite() returning a gx.ExpectationSuite."""

from __future__ import annotations

import importlib

import great_expectations as gx


def load_suite(name: str) -> gx.ExpectationSuite | None:
    """The suite for a dataset or mart (module expectations.suites.<name>), or None if none exists."""
    try:
        module = importlib.import_module(f"expectations.suites.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"expectations.suites.{name}":
            return None
        raise
    return module.build_suite()
