"""The dbt worker's list of modules to import ahead of a build's Python models."""

from __future__ import annotations

from types import SimpleNamespace

from flows.dbt_worker import python_model_imports


def node(language: str, raw_code: str) -> SimpleNamespace:
    return SimpleNamespace(language=language, raw_code=raw_code)


def test_imports_of_python_models_only_in_first_seen_order_with_from_imports_expanded():
    manifest = SimpleNamespace(
        nodes={
            "model.p.sql_model": node("sql", "select 1 -- import os"),
            "model.p.a": node(
                "python",
                "import numpy as np\n"
                "from statsmodels.tsa import adfvalues\n"
                "from . import sibling\n"
                "def model(dbt, session):\n"
                "    from sklearn.ensemble import RandomForestRegressor\n"
                "    import numpy\n"
                "    return None\n",
            ),
            "model.p.b": node("python", "import pandas, numpy\n"),
            "model.p.broken": node("python", "def model(:\n"),
        }
    )
    assert python_model_imports(manifest) == [
        "numpy",
        "statsmodels.tsa",
        "statsmodels.tsa.adfvalues",
        "sklearn.ensemble",
        "sklearn.ensemble.RandomForestRegressor",
        "pandas",
    ]
