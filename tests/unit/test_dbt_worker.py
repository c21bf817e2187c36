"""The dbt worker: the modules it imports ahead of a build's Python models, and the order in
which a build's artifacts and state are written around the moment the caller may go on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import dbt.cli.main

from flows import dbt_worker
from flows.dbt_worker import python_model_imports


def node(language: str, raw_code: str) -> SimpleNamespace:
    return SimpleNamespace(language=language, raw_code=raw_code)


def test_imports_python_models_run_when_loaded_in_first_seen_order_with_from_imports_expanded():
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
            "model.p.b": node(
                "python",
                "import pandas, numpy\n"
                "try:\n"
                "    import pyarrow.compute as pc\n"
                "except ImportError:\n"
                "    pc = None\n"
                "class Fit:\n"
                "    import scipy.stats\n"
                "    async def later(self):\n"
                "        import sklearn.metrics\n"
                "rank = lambda: __import__('sklearn')\n",
            ),
            "model.p.broken": node("python", "def model(:\n"),
        }
    )
    assert python_model_imports(manifest) == [
        "numpy",
        "statsmodels.tsa",
        "statsmodels.tsa.adfvalues",
        "pandas",
        "pyarrow.compute",
        "scipy.stats",
    ]


class FakeRunner:
    """Stands in for dbtRunner: records the command; its result says what the test asks."""

    calls: list = []
    success = True

    def __init__(self, manifest=None):
        self.manifest = manifest

    def invoke(self, args):
        FakeRunner.calls.append((self.manifest, list(args)))
        target = dbt_worker.option(args, "--target-path")
        if "--no-write-json" not in args:  # dbt writes its own artifacts
            (Path(target) / "manifest.json").write_text('{"written_by": "dbt"}')

        def write(path):
            Path(path).write_text(json.dumps({"results": ["this build's"]}))

        return SimpleNamespace(success=self.success, exception=None, result=SimpleNamespace(write=write))


def parsed(files: dict[str, str] | None = None, profile: str = "p", env_vars: dict | None = None):
    """A parsed manifest, with what project_fingerprint reads of it."""

    def checksum(value: str) -> SimpleNamespace:
        return SimpleNamespace(checksum=value)

    files = {"lakehouse://models/a.sql": "1", "dbt_duckdb://macros/seed.sql": "2"} if files is None else files
    return SimpleNamespace(
        name="parsed",
        state_check=SimpleNamespace(
            vars_hash=checksum("v"),
            profile_hash=checksum(profile),
            project_env_vars_hash=checksum("e"),
            profile_env_vars_hash=checksum("pe"),
            project_hashes={"lakehouse": checksum("x")},
        ),
        files={name: SimpleNamespace(checksum=checksum(value)) for name, value in files.items()},
        env_vars={"LAKEHOUSE_LAKE_DIR": "/lake"} if env_vars is None else env_vars,
    )


def fake_dbt(monkeypatch, success: bool) -> list:
    FakeRunner.calls = []
    FakeRunner.success = success
    monkeypatch.setattr(dbt.cli.main, "dbtRunner", FakeRunner)
    monkeypatch.setattr(dbt_worker, "close_warehouse", lambda: None)

    def write_manifest(manifest, target_dir):
        (target_dir / "manifest.json").write_text(json.dumps({"written_by": "worker", "of": manifest.name}))

    monkeypatch.setattr(dbt_worker, "write_manifest", write_manifest)
    return FakeRunner.calls


def test_a_build_reports_once_its_results_are_written_then_writes_manifest_and_state(tmp_path, monkeypatch):
    calls = fake_dbt(monkeypatch, success=True)
    target, state = tmp_path / "target", tmp_path / "state"
    target.mkdir()
    (target / "run_results.json").write_text('{"results": ["the previous build\'s"]}')
    seen = {}

    def report(code):  # what the caller finds when it goes on
        seen["code"] = code
        seen["results"] = json.loads((target / "run_results.json").read_text())
        seen["state"] = state.exists()

    args = ["build", "--target-path", str(target)]
    prints = {"synthetic.klines": "abc"}
    manifest = parsed()
    code = dbt_worker.run_command(manifest, args, report, {"dir": str(state), "lake_files": prints})
    assert code == 0
    assert calls == [(manifest, [*args, "--no-write-json"])]
    assert seen == {"code": 0, "results": {"results": ["this build's"]}, "state": False}
    assert json.loads((target / "manifest.json").read_text()) == {"written_by": "worker", "of": "parsed"}
    assert (state / "manifest.json").read_bytes() == (target / "manifest.json").read_bytes()
    assert json.loads((state / "lake_files.json").read_text()) == prints
    assert (state / "project_fingerprint").read_text() == dbt_worker.project_fingerprint(manifest) + "\n"
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "run_results.json"]
    assert sorted(p.name for p in state.iterdir()) == [
        "lake_files.json",
        "manifest.json",
        "project_fingerprint",
    ]


def test_a_failed_build_writes_its_results_and_manifest_but_no_state(tmp_path, monkeypatch):
    fake_dbt(monkeypatch, success=False)
    target, state = tmp_path / "target", tmp_path / "state"
    reported = []
    args = ["build", "--target-path", str(target)]
    code = dbt_worker.run_command(parsed(), args, reported.append, {"dir": str(state), "lake_files": {}})
    assert (code, reported) == (1, [1])
    assert json.loads((target / "run_results.json").read_text()) == {"results": ["this build's"]}
    assert json.loads((target / "manifest.json").read_text())["written_by"] == "worker"
    assert not state.exists()


def test_a_build_without_a_parsed_manifest_lets_dbt_write_and_still_saves_the_state(tmp_path, monkeypatch):
    calls = fake_dbt(monkeypatch, success=True)
    target, state = tmp_path / "target", tmp_path / "state"
    target.mkdir()
    args = ["build", "--target-path", str(target)]
    code = dbt_worker.run_command(
        None, args, lambda code: None, {"dir": str(state), "lake_files": {"a.b": "1"}}
    )
    assert code == 0
    assert calls == [(None, args)]  # dbt parses again and writes its own artifacts
    assert json.loads((state / "manifest.json").read_text()) == {"written_by": "dbt"}
    assert json.loads((state / "lake_files.json").read_text()) == {"a.b": "1"}
    assert not (state / "project_fingerprint").exists()  # no parse of its own to vouch for


def test_the_project_fingerprint_changes_with_any_file_the_profile_or_an_environment_variable():
    base = dbt_worker.project_fingerprint(parsed())
    assert dbt_worker.project_fingerprint(parsed()) == base
    changed = [
        parsed(files={"lakehouse://models/a.sql": "1b", "dbt_duckdb://macros/seed.sql": "2"}),
        parsed(files={"lakehouse://models/a.sql": "1", "dbt_duckdb://macros/seed.sql": "2b"}),
        parsed(files={"lakehouse://models/a.sql": "1"}),
        parsed(profile="memory limit changed"),
        parsed(env_vars={"LAKEHOUSE_LAKE_DIR": "/another/lake"}),
    ]
    assert len({base, *(dbt_worker.project_fingerprint(m) for m in changed)}) == 6


def test_an_unchanged_project_builds_without_reading_the_saved_manifest(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    manifest = parsed()
    (state / "project_fingerprint").write_text(dbt_worker.project_fingerprint(manifest) + "\n")
    args = [
        "build",
        "--select",
        "source:synthetic.klines+ state:modified+",
        "--state",
        str(state),
        "--x",
        "y",
    ]
    assert dbt_worker.without_unmodified_state(args, manifest) == [
        "build",
        "--select",
        "source:synthetic.klines+",
        "--x",
        "y",
    ]
    # The project changed since: dbt compares with the saved manifest.
    edited = parsed(files={"lakehouse://models/a.sql": "edited"})
    assert dbt_worker.without_unmodified_state(args, edited) == args
    # Nothing but state:modified+: an empty selection would be everything, so it stays.
    only = ["build", "--select", "state:modified+", "--state", str(state)]
    assert dbt_worker.without_unmodified_state(only, manifest) == only
    # No fingerprint saved (a build that parsed again, or from before fingerprints): unchanged.
    (state / "project_fingerprint").unlink()
    assert dbt_worker.without_unmodified_state(args, manifest) == args
    assert dbt_worker.without_unmodified_state(args, None) == args


def test_preload_requests_before_the_command_start_the_imports_and_the_command_is_returned():
    started = []
    lines = [
        '{"preload": true}\n',
        "\n",
        '{"preload": true}\n',
        '{"args": ["build"], "env": {}}\n',
        "ignored\n",
    ]
    request = dbt_worker.read_command(iter(lines), lambda: started.append(len(started)))
    assert request == {"args": ["build"], "env": {}}
    assert started == [0, 1]  # each request asks; the worker's own start_preload imports once


def test_input_that_ends_without_a_command_is_no_command():
    started = []
    assert dbt_worker.read_command(iter(['{"preload": true}\n']), lambda: started.append(1)) is None
    assert started == [1]
    assert dbt_worker.read_command(iter([]), lambda: started.append(1)) is None
