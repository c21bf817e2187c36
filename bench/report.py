"""Render docs/benchmarks.md and its log-log plots from the saved benchmark results."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.scales import SCALES

NAN = float("nan")
# Results written before the incremental run became one process measured it stage by stage.
OLD_INCREMENTAL = ("inc_land", "inc_gate1", "inc_build", "inc_publish")
INCREMENTAL_STEPS = (
    ("land", "land one new hour"),
    ("gate1", "gate 1"),
    ("build", "dbt build"),
    ("publish", "gate 2 + publish"),
)
SCALE_ORDER = ("S", "M", "L")
GOAL_SOURCES = "issue 10 (and issue 5 for the dbt build, issue 6 for the gates)"
NOT_RUN = {
    "S": "not run yet: `make bench` runs it by default",
    "M": 'not run in the measurement this page shows: `make bench BENCH_ARGS="--scale M"` (minutes)',
    "L": 'not run: behind a flag (`make bench BENCH_ARGS="--scale L"`), it takes many minutes '
    "and about 26M klines' worth of disk and memory",
}


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else NAN


class Point:
    """Medians of one scale point's measurements."""

    def __init__(self, data: dict):
        self.data = data
        self.name = data["scale"]
        self.klines = data["klines"]
        self.stages = data["stages"]

    def ok(self, stage: str) -> bool:
        runs = self.stages.get(stage, [])
        return bool(runs) and all(r["ok"] for r in runs)

    def wall(self, stage: str) -> float:
        return _median([r["seconds"] for r in self.stages.get(stage, []) if r["ok"]])

    def cpu(self, stage: str) -> float:
        return _median([r.get("cpu_seconds", NAN) for r in self.stages.get(stage, []) if r["ok"]])

    def peak(self, stage: str) -> float:
        return _median([r["peak_mb"] for r in self.stages.get(stage, []) if r["ok"]])

    def result(self, stage: str, key: str) -> float:
        return _median([float(r["result"].get(key, NAN)) for r in self.stages.get(stage, []) if r["ok"]])

    def flow_stages(self, stage: str) -> dict[str, float]:
        """The flow run's own seconds per stage (its summary), medians over the runs."""
        runs = [r["result"].get("seconds") or {} for r in self.stages.get(stage, []) if r["ok"]]
        names = [name for name in (runs[0] if runs else {}) if all(name in run for run in runs)]
        return {name: _median([float(run[name]) for run in runs]) for name in names}

    def total(self, stages: tuple[str, ...]) -> float:
        return sum(self.wall(s) for s in stages)

    def max_peak(self, stages: tuple[str, ...]) -> float:
        """The highest peak of any run of the stages (NaN when none ran): a memory goal holds
        for every run, not for the median one."""
        peaks = [
            r["peak_mb"]
            for s in stages
            for r in self.stages.get(s, [])
            if r["ok"] and r["peak_mb"] == r["peak_mb"]
        ]
        return max(peaks) if peaks else NAN

    def total_cpu(self, stages: tuple[str, ...]) -> float:
        return sum(self.cpu(s) for s in stages)

    @property
    def pipeline(self) -> float:
        """(a) from landed data to published marts: gate 1, dbt build, gate 2 and publish."""
        return self.total(("gate1", "build", "publish"))

    @property
    def pipeline_peak(self) -> float:
        return self.max_peak(("gate1", "build", "publish"))

    @property
    def incremental(self) -> float:
        """The incremental run after one new hour: one process (or, in older results, its stages)."""
        if self.ok("incremental"):
            return self.wall("incremental")
        return self.total(OLD_INCREMENTAL) if all(self.ok(s) for s in OLD_INCREMENTAL) else NAN

    @property
    def incremental_peak(self) -> float:
        return self.peak("incremental") if self.ok("incremental") else self.max_peak(OLD_INCREMENTAL)

    @property
    def incremental_build(self) -> float:
        if self.ok("incremental"):
            return self.result("incremental", "build_seconds")
        return self.wall("inc_build")

    @property
    def full_refresh(self) -> float:
        for stage in ("e2e_warm", "e2e"):
            if self.ok(stage):
                return self.wall(stage)
        return self.total(("generate", "gate1", "build", "publish"))


def fmt(value: float, digits: int = 1) -> str:
    if value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("duckdb", "dbt-core", "dbt-duckdb", "great-expectations", "prefect", "pandas", "pyarrow"):
        try:
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
        except Exception:
            continue
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {psutil.virtual_memory().total / 2**30:.0f} GiB",
        f"- OS: {platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- Versions: {', '.join(versions)}",
    ]


STAGE_ROWS = [
    ("generate", "(a) generate and land synthetic data (landing)"),
    ("gate1", "(a) gate 1: GE raw suites, landing -> raw/quarantine"),
    ("build", "(a) dbt build (full refresh, models + tests)"),
    ("gate2", "(a) gate 2: GE mart suites (in-process share of the publish stage)"),
    ("publish", "(a) gate 2 + publish (export snapshot, audit, swap CURRENT)"),
    ("prefect_warmup", "Prefect cold start: an empty flow on a fresh PREFECT_HOME (paid once)"),
    ("e2e", "(a) `lakehouse` Prefect flow end to end, full refresh, fresh lake, warm Prefect"),
    (
        "e2e_warm",
        "(a) the same flow again on that lake against a running Prefect server (as under `make serve`): "
        "full refresh, installed and warm (the goal figure)",
    ),
    (
        "incremental",
        "(a) incremental run after one new hour, one process: land, gate 1, build, gate 2, publish",
    ),
    ("inc_land", "(a) incremental: land one new hour"),
    ("inc_gate1", "(a) incremental: gate 1"),
    ("inc_build", "(a) incremental: dbt build"),
    ("inc_publish", "(a) incremental: gate 2 + publish"),
    ("naive", "(b) naive pandas script"),
    ("floor", "(c) DuckDB floor: the mart SQL over raw parquet"),
    ("floor_project", "(c') the project's own compiled SQL models in plain DuckDB (no dbt, tests or gates)"),
    ("archive", "archive import (Binance monthly zips -> landing)"),
    ("dashboard", "dashboard: cold render of the router and every page"),
]


def stage_table(point: Point) -> list[str]:
    lines = [
        "| stage | wall s (median) | CPU s | peak MB | runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage, label in STAGE_ROWS:
        if stage == "gate2":
            if point.ok("publish"):
                lines.append(
                    f"| {label} | {fmt(point.result('publish', 'gate2_seconds'))} | - | (shared) | |"
                )
            continue
        runs = point.stages.get(stage, [])
        if not runs:
            continue
        if not point.ok(stage):
            error = next(r["error"] for r in runs if not r["ok"]).replace("|", "/")
            lines.append(f"| {label} | failed: {error} | | | {len(runs)} |")
            continue
        lines.append(
            f"| {label} | {fmt(point.wall(stage))} | {fmt(point.cpu(stage))} | "
            f"{fmt(point.peak(stage), 0)} | {len(runs)} |"
        )
        if stage == "incremental":
            for step, name in INCREMENTAL_STEPS:
                seconds = fmt(point.result("incremental", f"{step}_seconds"))
                lines.append(f"| &nbsp;&nbsp;of which {name} (in-process) | {seconds} | - | (shared) | |")
    if all(point.ok(s) for s in OLD_INCREMENTAL):
        lines.append(
            f"| **(a) incremental run after one new hour, total** | **{fmt(point.incremental)}** | "
            f"| {fmt(point.incremental_peak, 0)} | |"
        )
    if all(point.ok(s) for s in ("generate", "gate1", "build", "publish")):
        stages = ("generate", "gate1", "build", "publish")
        lines.append(
            f"| **(a) full refresh, sum of the stages** | **{fmt(point.total(stages))}** | "
            f"| {fmt(point.max_peak(stages), 0)} | |"
        )
    return lines


def ratio_rows(points: list[Point]) -> list[str]:
    lines = [
        "| scale | klines | (a) pipeline s | (b) pandas s | (c) floor s | (a)/(c) | (b)/(a) "
        "| (a) peak MB | (b) peak MB | (c) peak MB | (a) peak / (b) peak | (a)/(c) by CPU s "
        "| (b)/(a) by CPU s | (c') project SQL s | (a)/(c') |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        a, b, c = p.pipeline, p.wall("naive"), p.wall("floor")
        c_all = p.wall("floor_project")
        pa, pb, pc = p.pipeline_peak, p.peak("naive"), p.peak("floor")
        ca, cb, cc = p.total_cpu(("gate1", "build", "publish")), p.cpu("naive"), p.cpu("floor")
        lines.append(
            f"| {p.name} | {p.klines:,} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {fmt(a / c, 2)} | "
            f"{fmt(b / a, 2)} | {fmt(pa, 0)} | {fmt(pb, 0)} | {fmt(pc, 0)} | {fmt(pa / pb, 2)} | "
            f"{fmt(ca / cc, 2)} | {fmt(cb / ca, 2)} | {fmt(c_all)} | {fmt(a / c_all, 2)} |"
        )
    return lines


def slowest(point: Point, stages: tuple[str, ...], key: str = "wall") -> str:
    value = point.wall if key == "wall" else point.peak
    named = {s: value(s) for s in stages if point.ok(s)}
    if not named:
        return "-"
    stage = max(named, key=named.get)
    unit = "s" if key == "wall" else "MB"
    return f"{stage} ({fmt(named[stage])} {unit})"


MEMORY_GOAL = "peak memory <= {} GB (each stage, and the warm flow run's processes)"


def incremental_culprit(point: Point) -> str:
    if not point.ok("incremental"):
        return slowest(point, OLD_INCREMENTAL)
    steps = {name: point.result("incremental", f"{step}_seconds") for step, name in INCREMENTAL_STEPS}
    name = max(steps, key=lambda n: steps[n] if steps[n] == steps[n] else -1)
    return f"{name} ({fmt(steps[name])} s)"


def goals(points: dict[str, Point]) -> list[str]:
    lines = ["| goal | measured | status | held back by |", "|---|---:|---|---|"]
    full = ("generate", "gate1", "build", "publish")

    def run_stages(point: Point) -> tuple[str, ...]:
        """The stages and the flow run the memory goals count: the warm run against a running
        Prefect server (the cold run's tree also holds the temporary server Prefect starts)."""
        return ("e2e_warm" if point.ok("e2e_warm") else "e2e", *full)

    def row(scale: str, goal: str, value: float, limit: float, unit: str, better: str, culprit: str) -> None:
        point = points.get(scale)
        if point is None or value != value:
            lines.append(f"| {scale}: {goal} | - | not measured | |")
            return
        met = value <= limit if better == "max" else value >= limit
        lines.append(
            f"| {scale}: {goal} | {fmt(value, 2)} {unit} | {'met' if met else '**missed**'} | "
            f"{'' if met else culprit} |"
        )

    def refresh_culprit(point: Point) -> str:
        """The flow's slowest stage as the flow timed it (the stages run alone pay their own
        start-up), and what the flow spends outside its stages."""
        e2e = "e2e_warm" if point.ok("e2e_warm") else "e2e"
        steps = point.flow_stages(e2e)
        if not steps:
            return slowest(point, full)
        name = max(steps, key=steps.get)
        outside = point.wall(e2e) - sum(steps.values())
        return (
            f"{name} ({fmt(steps[name])} s of the flow's {fmt(sum(steps.values()))} s in its stages); "
            f"start-up and Prefect's orchestration add {fmt(outside)} s"
        )

    s, m, big = points.get("S"), points.get("M"), points.get("L")
    if s:
        row("S", "full refresh end to end <= 15 s", s.full_refresh, 15, "s", "max", refresh_culprit(s))
    else:
        row("S", "full refresh end to end <= 15 s", NAN, 15, "s", "max", "")
    if m:
        row("M", "full refresh end to end <= 30 s", m.full_refresh, 30, "s", "max", refresh_culprit(m))
        peak = m.max_peak(run_stages(m))
        row("M", MEMORY_GOAL.format(2), peak / 1024, 2, "GB", "max", slowest(m, run_stages(m), "peak"))
        row(
            "M",
            "incremental run after one new hour <= 10 s",
            m.incremental,
            10,
            "s",
            "max",
            incremental_culprit(m),
        )
        row("M", "dbt full build <= 30 s (issue 5)", m.wall("build"), 30, "s", "max", "dbt build")
        row("M", "dbt incremental build <= 5 s (issue 5)", m.incremental_build, 5, "s", "max", "dbt build")
        # Issue 6: what each gate adds to the stage before it, full refresh.
        row(
            "M",
            "gate 1 adds <= 15% to landing time (issue 6)",
            100 * m.wall("gate1") / m.wall("generate"),
            15,
            "%",
            "max",
            "gate 1 (GE checkpoints, reading and routing every landed file)",
        )
        row(
            "M",
            "gate 2 adds <= 20% to build time (issue 6)",
            100 * m.result("publish", "gate2_seconds") / m.wall("build"),
            20,
            "%",
            "max",
            "gate 2 (GE mart suites)",
        )
    else:
        for goal in (
            "full refresh end to end <= 30 s",
            MEMORY_GOAL.format(2),
            "incremental run <= 10 s",
            "gate 1 adds <= 15% to landing time (issue 6)",
            "gate 2 adds <= 20% to build time (issue 6)",
        ):
            row("M", goal, NAN, 0, "", "max", "")
    if big:
        peak = big.max_peak(run_stages(big))
        row("L", MEMORY_GOAL.format(4), peak / 1024, 4, "GB", "max", slowest(big, run_stages(big), "peak"))
        pipeline = ("gate1", "build", "publish")
        row("L", "(a)/(c) <= 1.5", big.pipeline / big.wall("floor"), 1.5, "", "max", slowest(big, pipeline))
        row("L", "(b)/(a) >= 1.5", big.wall("naive") / big.pipeline, 1.5, "", "min", slowest(big, pipeline))
        row(
            "L",
            "(a) peak <= 1/3 of (b) peak",
            big.pipeline_peak / big.peak("naive"),
            1 / 3,
            "",
            "max",
            slowest(big, pipeline, "peak"),
        )
    else:
        for goal in (
            MEMORY_GOAL.format(4),
            "(a)/(c) <= 1.5",
            "(b)/(a) >= 1.5",
            "(a) peak <= 1/3 of (b) peak",
        ):
            row("L", goal, NAN, 0, "", "max", "")
    return lines


def plot(points: list[Point], image_dir: Path) -> list[str]:
    """Two log-log PNGs (time and peak memory against klines); returns their relative paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_dir.mkdir(parents=True, exist_ok=True)
    series = {
        "(a) pipeline: gate 1 + build + gate 2 + publish": (lambda p: p.pipeline, lambda p: p.pipeline_peak),
        "(a) Prefect flow end to end": (lambda p: p.wall("e2e"), lambda p: p.peak("e2e")),
        "(a) incremental, one new hour": (lambda p: p.incremental, lambda p: p.incremental_peak),
        "(b) naive pandas": (lambda p: p.wall("naive"), lambda p: p.peak("naive")),
        "(c) DuckDB floor": (lambda p: p.wall("floor"), lambda p: p.peak("floor")),
    }
    paths = []
    for index, (name, ylabel) in enumerate((("time", "wall seconds"), ("memory", "peak RSS, MB"))):
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=80)
        for label, getters in series.items():
            xs, ys = [], []
            for p in points:
                value = getters[index](p)
                if value == value and value > 0:
                    xs.append(p.klines)
                    ys.append(value)
            if xs:
                axes.plot(xs, ys, marker="o", label=label)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("1-minute klines")
        axes.set_ylabel(ylabel)
        axes.set_title(f"{name} against rows (log-log)")
        axes.grid(True, which="both", alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
        figure.tight_layout()
        path = image_dir / f"bench_{name}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        paths.append(f"img/{path.name}")
    return paths


def agreement_lines(point: Point) -> list[str]:
    checks = point.data.get("agreement") or []
    primary = [c for c in checks if c["table"] in ("klines_hourly", "klines_daily")]
    if not primary:
        return ["- (a) vs (b): not checked (no published snapshot to compare)."]
    verdict = "AGREE" if all(c["ok"] for c in checks) else "DISAGREE"
    names = ", ".join(f"`fct_{c['table']}`" for c in checks)
    lines = [f"- (a) the published marts ({names}) vs (b): **{verdict}**"]
    lines += [f"  - {c['text']}" for c in checks]
    compared = {c["table"] for c in checks}
    absent = [
        t for t in ("order_flow_hourly", "volatility_daily", "return_correlations") if t not in compared
    ]
    if absent:
        lines.append(f"  - not in the published snapshot under the same name and key: {', '.join(absent)}")
    floor = point.data.get("floor_agreement") or []
    if floor:
        verdict = "AGREE" if all(c["ok"] for c in floor) else "DISAGREE"
        lines.append(f"- (c) vs (b) on all five outputs: **{verdict}**")
        lines += [f"  - {c['text']}" for c in floor]
    return lines


def reading(point: Point) -> list[str]:
    """One generated paragraph: where (a)'s time goes compared with the floor's compute."""
    parts = {s: point.wall(s) for s in ("gate1", "build", "publish") if point.ok(s)}
    floor = point.wall("floor")
    if len(parts) < 3 or floor != floor:
        return []
    gate2 = point.result("publish", "gate2_seconds")
    return [
        f"Where (a)'s {fmt(point.pipeline)} s go: gate 1 {fmt(parts['gate1'])} s, dbt build "
        f"{fmt(parts['build'])} s, gate 2 {fmt(gate2)} s, the rest of publish (start-up, the export "
        f"beyond what overlaps gate 2, the swap) {fmt(parts['publish'] - gate2)} s. Computing the same marts straight in DuckDB takes "
        f"{fmt(floor)} s, so {fmt(100 * (1 - floor / point.pipeline), 0)}% of (a) at this size is "
        "per-run overhead (process start-up, imports, GE contexts and checkpoints, dbt parsing and "
        "its tests, the extra marts (b) and (c) do not compute) rather than the marts' compute.",
        "",
    ]


def write_page(results_dir: Path, page: Path, ran: list[str], note: str | None = None) -> None:
    points: dict[str, Point] = {}
    for name in SCALE_ORDER:
        path = results_dir / f"{name}.json"
        if path.exists():
            points[name] = Point(json.loads(path.read_text()))
    ordered = [points[n] for n in SCALE_ORDER if n in points]
    images = plot(ordered, page.parent / "img") if ordered else []
    extras_path = results_dir / "extras.json"
    extras = json.loads(extras_path.read_text()) if extras_path.exists() else None
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench.run`) on {now}. Rerun it to refresh every figure;",
        "absolute times drift between runs and machines, ratios measured in one run are what to compare.",
        "",
        *([f"> {note}", ""] if note else []),
        "## Machine",
        "",
        *machine(),
        "",
        "## What is measured",
        "",
        "Every stage runs in a fresh Python process against a temporary lake, so each has its own wall",
        "time, CPU time and peak memory (resident set of the whole process tree, polled every 50 ms,",
        "and never below the kernel's high-water mark for the stage's processes). Medians over the",
        "point's repeats (by default 3 at S and 1 at M and L; the count used is given per point);",
        "memory goals take the highest peak of any run, not the median;",
        "each repeat is a full refresh on a fresh lake;",
        "archive import and dashboard render are measured once per point, and the incremental run",
        "three times in a row on the last repeat's lake (each lands the hour after the previous",
        "one's; its figures and its steps' shares are medians of the three).",
        "CPU seconds (user + system of the stage and its children) are less sensitive than wall time",
        "to other work on the machine; the load average at the start and end of each point is given.",
        "",
        "- **(a) this pipeline**, stage by stage as the `lakehouse` flow calls them: synthetic data landed",
        "  (`land_synthetic`, no defects), gate 1 (`validate_raw`), `dbt build` (`build_marts`), gate 2",
        "  and publish (`publish_marts`); then the incremental run: one new hour of klines landed and",
        "  the same stages again in one process, as a scheduled run does them (GE imported once, and",
        "  the dbt process started, beside the landing; Prefect's orchestration not included), with",
        "  each step's in-process share;",
        "  and the Prefect `lakehouse` flow end to end on its own fresh lake",
        "  (including Prefect's temporary server, which is what a user's `lakehouse run` pays; its",
        "  start-up timeout is raised from 20 s to 300 s so a busy machine does not fail the run), then",
        "  the same flow again on that lake against a Prefect server that is already running, as the",
        "  deployments run under `make serve` (the 'installed, warm' figure the goals use), as many",
        "  times as the point's repeats (each lands the same data again and refreshes in full).",
        "  The (a) figure in the ratios is gate 1 + build + gate 2 + publish: from landed data to",
        "  published marts, the same input and output as (b) and (c).",
        "- **(b) a naive pandas script** (`bench/naive_pandas.py`): reads every raw kline file with",
        "  pandas, dedupes, then groupbys: hourly and daily OHLCV rollups with VWAP and simple/log",
        "  returns, daily realized volatility from 1-minute log returns, hourly order flow with CVD",
        "  (per day and running), and pairwise correlations of hourly log returns over trailing 1, 7",
        "  and 30 days at each day's end; writes parquet. Same definitions as the dbt marts.",
        "- **(c) the DuckDB floor** (`bench/duckdb_floor.py`): the same definitions as the marts' SQL, run",
        "  in one in-memory DuckDB over the raw parquet, no orchestration, gates or dbt.",
        "- **Archive import**: the run's raw klines written as Binance monthly archive zips, then",
        "  imported by `flows.sources.binance_archive.import_archives` into a fresh lake's landing zone.",
        "- **Dashboard**: each page rendered once, cold, with Streamlit's `AppTest` over the published",
        "  snapshot.",
        "",
        "Scale points: S = 5 symbols x 30 days (216,000 klines), M = 10 x 365 days (5,256,000),",
        "L = 50 x 365 days (26,280,000), each with synthetic users, transactions and network data",
        "scaled alongside (users / transactions per day: "
        + ", ".join(f"{s.name} {s.users:,} / {s.tx_per_day:,}" for s in (SCALES[n] for n in SCALE_ORDER))
        + ").",
        "",
    ]
    out += ["## Scale points", ""]
    for name in SCALE_ORDER:
        if name in points:
            p = points[name]
            when = "measured by the run that wrote this page" if name in ran else "measured"
            out.append(
                f"- {name}: {when}, started {p.data['measured_at']}, {p.data['repeats']} repeat(s), load average "
                f"{p.data['load_before'][0]} before / {p.data['load_after'][0]} after."
                + ("" if p.data.get("complete", True) else " The run was stopped before it finished.")
            )
        else:
            out.append(f"- {name}: {NOT_RUN[name]}.")
    out += ["", "## Side by side: ratios", "", *ratio_rows(ordered), ""]
    if images:
        out += [f"![time against rows]({images[0]})", f"![memory against rows]({images[1]})", ""]
    out += [
        "## Goals",
        "",
        f"From {GOAL_SOURCES}. End-to-end times and memory are those of the warm flow run, against",
        "a Prefect server that is already running (as the deployments run); the cold run's figures,",
        "whose process tree also holds the temporary server Prefect starts, are in the tables below.",
        "",
        *goals(points),
        "",
    ]
    for p in ordered:
        out += [f"## Scale {p.name}: {p.klines:,} klines", "", *stage_table(p), "", *reading(p)]
        archive = p.stages.get("archive", [])
        if archive and archive[-1]["ok"]:
            r = archive[-1]["result"]
            rows, inner = r.get("rows", 0), r.get("seconds") or NAN
            out.append(
                f"Archive import: {r.get('files')} zips, {rows:,} rows: {fmt(rows / inner, 0)} rows/s inside "
                f"the import, {fmt(rows / archive[-1]['seconds'], 0)} rows/s including process start."
            )
        dash = p.stages.get("dashboard", [])
        if dash and dash[-1]["ok"]:
            pages = dash[-1]["result"].get("pages", {})
            parts = []
            for page_name, info in pages.items():
                flag = " (raised: " + info["exceptions"][0] + ")" if info["exceptions"] else ""
                parts.append(f"{page_name} {fmt(info['seconds'], 2)} s{flag}")
            out.append("Dashboard cold render per page: " + "; ".join(parts) + ".")
        out += ["", "Agreement check:", "", *agreement_lines(p), ""]
    out += ["## Other benchmarks", ""]
    if extras is None:
        out.append("Not run (`--no-extras`).")
    else:
        for name, info in extras["found"].items():
            status = "ok" if info["returncode"] == 0 else f"failed ({info['error']})"
            out += [f"`python -m bench.{name}` ({fmt(info['seconds'])} s, {status}):", "", "```"]
            out += info["output"] or ["(no output)"]
            out += ["```", ""]
        if extras["missing"]:
            out.append(
                "Not present in bench/ when this ran: " + ", ".join(f"`{m}`" for m in extras["missing"]) + "."
            )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(out).rstrip() + "\n")
