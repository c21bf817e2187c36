"""Suite modules: each exposes build_suite(params) and optionally prepare(frame, params), KEY, PARENTS."""

from __future__ import annotations

import importlib
from types import ModuleType

import great_expectations as gx


def load_module(name: str) -> ModuleType | None:
    """The suite module expectations.suites.<name>, or None if no suite exists for it."""
    try:
        return importlib.import_module(f"expectations.suites.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"expectations.suites.{name}":
            return None
        raise


def load_suite(name: str, params: dict | None = None) -> gx.ExpectationSuite | None:
    """The suite for a dataset or mart built with the run's parameters, or None if none exists."""
    module = load_module(name)
    if module is None:
        return None
    return module.build_suite(dict(params or {}))
