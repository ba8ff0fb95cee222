"""Run statistics: DuckDB views over every stage's output and stats, the funnel, plots.

``curate stats RUN "SQL"`` registers one view per stage (named after it) over the stage's
committed Parquet, ``stats`` over all per-shard stats, and ``reasons`` with one row per
(stage, shard, kind, reason, count). Remote runs are read through fsspec, registered with DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from curation.core import io as fio
from curation.core.errors import CurationError

MANIFEST = "manifest.json"


@dataclass
class StageInfo:
    name: str
    directory: str
    manifest: dict[str, Any] | None
    plan: dict[str, Any] | None = None
    receipts: list[str] = field(default_factory=list)


def _read_json(path: str, storage: fio.Storage) -> dict[str, Any] | None:
    try:
        return json.loads(fio.read_bytes(path, storage))
    except FileNotFoundError:
        return None


def discover(run_root: str, storage: fio.Storage | None = None) -> list[StageInfo]:
    """Stages of a run in pipeline order (or a flat one-stage output directory)."""
    storage = storage or fio.Storage()
    run_root = fio.normalize_root(run_root)
    if not fio.exists(run_root, storage):
        raise CurationError(f"run not found: {run_root}")
    if fio.exists(fio.join(run_root, "experiments.parquet"), storage):
        return [StageInfo("experiments", run_root, {"kind": "experiments", "files": [{"name": "experiments.parquet"}],
                                                     "totals": {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0}})]
    flat = _read_json(fio.join(run_root, MANIFEST), storage)
    if flat is not None:
        return [StageInfo(flat["stage"], run_root, flat)]
    run = _read_json(fio.join(run_root, "run.json"), storage)
    if run is None:
        raise CurationError(f"{run_root} is not a run directory (no run.json or manifest.json)")
    stages = []
    for name in run.get("stages", []):
        directory = fio.join(run_root, name)
        stages.append(StageInfo(
            name=name,
            directory=directory,
            manifest=_read_json(fio.join(directory, MANIFEST), storage),
            plan=_read_json(fio.join(directory, "plan.json"), storage),
            receipts=[p.rsplit("/", 1)[-1].removesuffix(".json")
                      for p in fio.list_files(fio.join(directory, "_receipts"), ".json", storage)],
        ))
    return stages


def connect(run_root: str, storage: fio.Storage | None = None) -> tuple[duckdb.DuckDBPyConnection, list[StageInfo]]:
    storage = storage or fio.Storage()
    stages = discover(run_root, storage)
    connection = duckdb.connect()
    if not fio.is_local(run_root):
        fs, _ = fio.filesystem(run_root, storage)
        connection.register_filesystem(fs)
    stats_files = []
    for stage in stages:
        if stage.manifest is None:
            continue
        data = [fio.join(stage.directory, f["name"]) for f in stage.manifest["files"] if f["name"].endswith(".parquet")]
        if data:
            connection.execute(
                f'CREATE VIEW "{stage.name}" AS SELECT * FROM read_parquet({_sql_list(data)}, union_by_name = true)'
            )
        stats_path = fio.join(stage.directory, "stats.parquet")
        if fio.exists(stats_path, storage):
            stats_files.append(stats_path)
    if stats_files:
        connection.execute(f"CREATE VIEW stats AS SELECT * FROM read_parquet({_sql_list(stats_files)})")
        connection.execute(
            "CREATE VIEW reasons AS "
            "SELECT stage, shard, 'dropped' AS kind, d.reason, d.count FROM (SELECT stage, shard, unnest(dropped) AS d FROM stats) "
            "UNION ALL "
            "SELECT stage, shard, 'flagged' AS kind, f.reason, f.count FROM (SELECT stage, shard, unnest(flagged) AS f FROM stats)"
        )
    return connection, stages


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def query(run_root: str, sql: str, storage: fio.Storage | None = None):
    """Run SQL over a run's views; returns a pyarrow Table."""
    connection, _ = connect(run_root, storage)
    try:
        relation = connection.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise CurationError(f"SQL error: {exc}") from None
    finally:
        connection.close()


@dataclass
class FunnelStep:
    label: str
    documents: int
    note: str = ""


def funnel(stages: list[StageInfo]) -> list[FunnelStep]:
    """Documents remaining after each stage, and after each filter step in order."""
    steps: list[FunnelStep] = []
    for stage in stages:
        if stage.manifest is None:
            continue
        totals = stage.manifest["totals"]
        kind = stage.manifest["kind"]
        if not steps:
            steps.append(FunnelStep("records read", totals["docs_in"]))
        dropped = totals.get("dropped", {})
        if kind == "heuristic_filter":
            remaining = totals["docs_in"]
            flagged = totals.get("flagged", {})
            order = [s.get("name", s["type"]) for s in stage.manifest["config"].get("steps", [])]
            for name in order:
                if flagged.get(name):
                    remaining -= flagged[name]
                    steps.append(FunnelStep(f"{stage.name}: {name}", remaining, f"-{flagged[name]:,}"))
            continue
        if kind == "tokenize":
            tokens = int(totals.get("extra", {}).get("tokens", 0))
            steps.append(FunnelStep(f"{stage.name}", totals["docs_out"], f"{tokens:,} tokens"))
            continue
        flagged = totals.get("flagged", {})
        if len(steps) > 1 and totals["docs_in"] == totals["docs_out"] and not dropped:
            # An attribute stage (dedup, decontamination, scorers) passes every row through;
            # what it flags is what selection will remove.
            if flagged:
                steps.append(FunnelStep(f"{stage.name}: {', '.join(sorted(flagged))}",
                                        steps[-1].documents - sum(flagged.values()), f"-{sum(flagged.values()):,}"))
            continue
        note = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])[:4])
        steps.append(FunnelStep(stage.name, totals["docs_out"], note))
    return steps


def plot_funnel(steps: list[FunnelStep], path: str, title: str, storage: fio.Storage | None = None) -> str:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s.label for s in steps][::-1]
    values = [s.documents for s in steps][::-1]
    figure, axis = plt.subplots(figsize=(9, 0.38 * len(steps) + 1.4))
    bars = axis.barh(labels, values, color="#4C78A8")
    top = max(values) if values else 1
    for bar, value in zip(bars, values, strict=True):
        share = f"{value:,} ({value / top:.0%})" if top else str(value)
        axis.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, share, va="center", fontsize=8)
    axis.set_xlim(0, top * 1.25 if top else 1)
    axis.set_xlabel("documents remaining")
    axis.set_title(title)
    axis.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    fio.write_atomic(path, buffer.getvalue(), storage)
    return path
