"""(c') The project's own SQL without dbt: every SQL model dbt compiled, run in DAG order in plain DuckDB.

The floor for (a) at equal work: the same staging, intermediate and mart SQL over the same raw
parquet, but no tests, no gates, no orchestration and no dbt (one DuckDB database file like the
warehouse, DuckDB's default memory limit, the statements dbt compiled in the full build). The Python models (ADF, random forest,
STL) are left out and listed; their inputs are still built.
"""

from __future__ import annotations

import json
from graphlib import TopologicalSorter
from pathlib import Path

import duckdb


def parents(node: dict) -> list[str]:
    return node.get("depends_on", {}).get("nodes", [])


def build_order(manifest: dict) -> tuple[list[dict], list[str]]:
    """SQL models and seeds in dependency order, and the Python models left out."""
    nodes = {
        key: node
        for key, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "seed") and node["package_name"] == "lakehouse"
    }
    graph = {key: [d for d in parents(node) if d in nodes] for key, node in nodes.items()}
    ordered = [nodes[key] for key in TopologicalSorter(graph).static_order()]
    python = sorted(n["name"] for n in ordered if n.get("language") == "python")
    return [n for n in ordered if n.get("language") != "python"], python


def run(manifest_path: Path, project_dir: Path, database: Path) -> dict:
    manifest = json.loads(Path(manifest_path).read_text())
    ordered, python = build_order(manifest)
    skipped = set(python)
    rows = {}
    with duckdb.connect() as con:
        con.execute("set timezone = 'UTC'")
        con.execute("attach ? as lakehouse", [str(database)])
        for schema in sorted({n["schema"] for n in ordered}):
            con.execute(f'create schema if not exists lakehouse."{schema}"')
        for node in ordered:
            if any(dep.split(".")[-1] in skipped for dep in parents(node)):
                skipped.add(node["name"])
                continue
            if node["resource_type"] == "seed":
                csv = project_dir / node["original_file_path"]
                con.execute(f"create table {node['relation_name']} as select * from read_csv(?)", [str(csv)])
            elif "compiled_code" not in node:
                raise RuntimeError(
                    f"{manifest_path} has no compiled SQL for {node['name']}: run it after a full build"
                )
            else:
                con.execute(f"create table {node['relation_name']} as {node['compiled_code']}")
            if node["schema"] == "marts":
                (rows[node["name"]],) = con.execute(
                    f"select count(*) from {node['relation_name']}"
                ).fetchone()
    return {"marts": rows, "models": len(ordered) - len(skipped - set(python)), "left_out": sorted(skipped)}
