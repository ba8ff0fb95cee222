"""Run statistics: DuckDB views over every stage's output and stats, the funnel, plots.

``curate stats RUN "SQL"`` registers one view per stage (named after it) over the stage's
committed Parquet, ``stats`` over all per-shard stats, and ``reasons`` with one row per
(stage, shard, kind, reason, count); kind is dropped, flagged, repaired (a reader fixed the record
and kept it), skipped (a WARC record that is not a document) or retried (``remote_read``: a remote
input's read that failed in passing and was made again). Remote runs are read through fsspec, registered with DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from curation.core import io as fio
from curation.core import layout
from curation.core.errors import CurationError


@dataclass
class StageInfo:
    name: str
    directory: str
    manifest: dict[str, Any] | None
    plan: dict[str, Any] | None = None
    receipts: list[str] = field(default_factory=list)


def discover(run_root: str, storage: fio.Storage | None = None) -> list[StageInfo]:
    """Stages of a run in pipeline order; a one-stage output folder; or, for any other folder
    of Parquet tables (an ablation's ``experiments.parquet``), one view per table."""
    storage = storage or fio.Storage()
    run_root = fio.normalize_root(run_root)
    if not fio.exists(run_root, storage):
        raise CurationError(f"run not found: {run_root}")
    flat = layout.read_manifest(run_root, storage)
    if flat is not None:  # a one-stage command's output, after the documents it read, if any
        before = flat.get("upstream")
        reader = layout.read_manifest(fio.join(run_root, f"_{before}"), storage) if before else None
        stages = [StageInfo(before, fio.join(run_root, f"_{before}"), reader)] if reader else []
        return [*stages, StageInfo(flat["stage"], run_root, flat)]
    run = layout.read_json(fio.join(run_root, layout.RUN_FILE), storage)
    if run is None:
        tables = fio.list_files(run_root, ".parquet", storage)
        if not tables:
            raise CurationError(f"{run_root} is not a run directory (no {layout.RUN_FILE} or {layout.MANIFEST})")
        return [_table_view(path) for path in tables]
    stages = []
    for name in run.get("stages", []):
        directory = layout.stage_dir(run_root, name)
        stages.append(StageInfo(
            name=name,
            directory=directory,
            manifest=layout.read_manifest(directory, storage),
            plan=layout.read_json(fio.join(directory, layout.PLAN), storage),
            receipts=[p.rsplit("/", 1)[-1].removesuffix(".json")
                      for p in fio.list_files(fio.join(directory, layout.RECEIPTS_DIR), ".json", storage)],
        ))
    return stages


def _table_view(path: str) -> StageInfo:
    directory, name = path.rsplit("/", 1)
    empty = {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0}
    return StageInfo(name.removesuffix(".parquet"), directory,
                     {"kind": "table", "stage": name.removesuffix(".parquet"), "files": [{"name": name}], "totals": empty})


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
        data = layout.data_files(stage.directory, stage.manifest)
        if data:
            connection.execute(
                f'CREATE VIEW "{stage.name}" AS SELECT * FROM read_parquet({layout.sql_list(data)}, union_by_name = true)'
            )
        stats_path = fio.join(stage.directory, layout.STATS)
        if fio.exists(stats_path, storage):
            stats_files.append(stats_path)
    if stats_files:
        connection.execute(f"CREATE VIEW stats AS SELECT * FROM read_parquet({layout.sql_list(stats_files)})")
        connection.execute(
            "CREATE VIEW reasons AS "
            "SELECT stage, shard, 'dropped' AS kind, d.reason, d.count FROM (SELECT stage, shard, unnest(dropped) AS d FROM stats) "
            "UNION ALL "
            "SELECT stage, shard, 'flagged' AS kind, f.reason, f.count FROM (SELECT stage, shard, unnest(flagged) AS f FROM stats) "
            "UNION ALL "  # records repaired or skipped by a reader, reads retried: extra counters named kind:reason
            "SELECT stage, shard, split_part(e.key, ':', 1) AS kind, substr(e.key, strpos(e.key, ':') + 1) AS reason, "
            "CAST(e.value AS BIGINT) AS count FROM (SELECT stage, shard, unnest(map_entries(extra)) AS e FROM stats) "
            "WHERE split_part(e.key, ':', 1) IN ('repaired', 'skipped', 'retried')"
        )
    return connection, stages


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
    """Documents remaining after each stage, and after each filter step in order.

    Each stage wrote its own reading of its totals into its manifest (``Stage.funnel``): lines
    that give the documents left, or the documents it flagged for selection to remove.
    """
    steps: list[FunnelStep] = []
    for stage in stages:
        if stage.manifest is None:
            continue
        totals = stage.manifest["totals"]
        lines = stage.manifest.get("funnel", [])
        if not steps:
            steps.append(FunnelStep("records read", totals["docs_in"]))
            lines = lines or [{"label": stage.name, "documents": totals["docs_out"]}]
        for line in lines:
            documents = line["documents"] if "documents" in line else steps[-1].documents - line["removed"]
            steps.append(FunnelStep(line["label"], documents, line.get("note", "")))
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
