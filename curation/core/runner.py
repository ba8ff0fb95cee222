"""The DAG runner: resumable, deterministic stages over a run directory (local or s3://), in
the layout of ``curation.core.layout``.

A stage whose manifest key (config, code version, input lineage) matches is skipped; otherwise
only shards without a matching receipt are run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

import curation
from curation.core import io as fio
from curation.core.config import config_to_dict, stable_hash
from curation.core.errors import CurationError
from curation.core.layout import (
    MANIFEST,
    MANIFEST_FORMAT,
    PLAN,
    RUN_FILE,
    STATS,
    WORK_DIR,
    data_files,
    read_json,
    receipt_path,
)
from curation.core.phases import reporting_resolve
from curation.core.pipeline import Pipeline, StageSpec
from curation.core.progress import StageProgress
from curation.core.ray_exec import ensure_ray, run_tasks
from curation.core.stage import ShardReceipt, StageContext, write_parquet_bytes

_REASON_LIST = pa.list_(pa.struct([("reason", pa.string()), ("count", pa.int64())]))
STATS_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("shard", pa.string()),
        ("docs_in", pa.int64()),
        ("docs_out", pa.int64()),
        ("bytes_in", pa.int64()),
        ("bytes_out", pa.int64()),
        ("seconds", pa.float64()),
        ("dropped", _REASON_LIST),
        ("flagged", _REASON_LIST),
        ("extra", pa.map_(pa.string(), pa.float64())),
    ]
)


@dataclass
class StageOutcome:
    name: str
    kind: str
    skipped: bool
    shards_total: int
    shards_run: int
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)


def source_lineage(inputs: list[str], storage: fio.Storage) -> list[dict[str, Any]]:
    """Identity of raw inputs: path and size (cheap; contents are hashed downstream)."""
    lineage = []
    for path in inputs:
        fs, p = fio.filesystem(path, storage)
        try:  # a 503 read as "no size" would change the stage key, and a rerun would not resume
            size = fio.retry_passing(lambda: fs.size(p), storage, lambda: f"{path}: its size")  # noqa: B023
        except (FileNotFoundError, OSError):
            size = None
        lineage.append({"path": path, "size": size})
    return lineage


class Runner:
    def __init__(self, pipeline: Pipeline, run_root: str, echo=print, flat: bool = False):
        """``flat``: the last stage writes its shards directly under ``run_root`` and any stage
        before it (the ``documents`` reader of a one-stage command) under ``run_root/_<name>``."""
        self.pipeline = pipeline
        self.run_root = fio.normalize_root(run_root)
        self.storage = pipeline.storage.to_storage()
        self.echo = echo
        self.flat = flat

    def stage_dir(self, name: str) -> str:
        if not self.flat:
            return fio.join(self.run_root, name)
        return self.run_root if name == self.pipeline.stages[-1].name else fio.join(self.run_root, f"_{name}")

    # -- public --------------------------------------------------------------------------------
    def run(self, raw_inputs: list[str]) -> list[StageOutcome]:
        ensure_ray(self.pipeline.ray.address, self.pipeline.ray.num_cpus, self.pipeline.ray.progress_bars)
        started = time.time()
        self._write_run_json({"started_at": started, "status": "running", "inputs": raw_inputs})
        outcomes = []
        for spec in self.pipeline.stages:
            outcomes.append(self.run_stage(spec, raw_inputs))
        self._write_run_json(
            {"started_at": started, "finished_at": time.time(), "status": "finished", "inputs": raw_inputs}
        )
        return outcomes

    def run_stage(self, spec: StageSpec, raw_inputs: list[str]) -> StageOutcome:
        start = time.perf_counter()
        stage = spec.build()
        stage_dir = self.stage_dir(spec.name)
        if spec.after is None:
            inputs = raw_inputs if stage.is_source else [p for p in raw_inputs if ".parquet" in p.rsplit("/", 1)[-1]]
            if not inputs:
                raise CurationError(f"stage {spec.name!r} reads documents: no Parquet files among the inputs "
                                    "(JSONL goes through a `documents` stage first, as the commands do)")
            lineage: Any = source_lineage(inputs, self.storage)
        else:
            upstream = read_json(fio.join(self.stage_dir(spec.after), MANIFEST), self.storage)
            if upstream is None:
                raise CurationError(f"stage {spec.name!r}: upstream stage {spec.after!r} has not finished")
            inputs = data_files(self.stage_dir(spec.after), upstream)
            lineage = {"stage": spec.after, "key": upstream["key"], "files": upstream["files"]}

        config = config_to_dict(spec.config)
        code_version = stage.code_version()
        input_hash = stable_hash(lineage)
        key = stable_hash({"kind": spec.kind, "config": config, "code": code_version, "input": input_hash})

        manifest_path = fio.join(stage_dir, MANIFEST)
        existing = read_json(manifest_path, self.storage)
        if existing is not None and existing.get("key") == key:
            self.echo(f"[{spec.name}] up to date, skipped ({len(existing['files'])} files)")
            return StageOutcome(spec.name, spec.kind, True, len(existing.get("shards", [])), 0,
                                time.perf_counter() - start, existing)
        if existing is not None:
            fio.remove(manifest_path, self.storage)  # stale: the stage is being redone

        ctx = StageContext(run_root=self.run_root, stage_name=spec.name, stage_dir=stage_dir, key=key,
                           storage=self.storage)
        with reporting_resolve(spec.name, self.echo, self.pipeline.ray.progress_interval_s):
            ctx.resolved = stage.resolve(inputs, ctx)
        described = stage.describe_resolved(ctx.resolved)
        if described:
            self.echo(f"[{spec.name}] {described}")
        tasks = stage.plan(inputs, ctx)
        receipts: dict[str, ShardReceipt] = {}
        pending = []
        for task in tasks:
            receipt = self._load_receipt(ctx, task.name)
            if receipt is not None and receipt.key == key:
                receipts[task.name] = receipt
            else:
                pending.append(task)
        # the plan also tells `curate status` in another shell when this attempt began and what it runs
        fio.write_atomic(fio.join(stage_dir, PLAN), json.dumps(
            {"key": key, "shards": [t.name for t in tasks], "resolved": ctx.resolved, "started_at": time.time(),
             "to_run": [t.name for t in pending]}, sort_keys=True, indent=1).encode(), self.storage)
        self.echo(f"[{spec.name}] {spec.kind}: {len(tasks)} shards, {len(pending)} to run"
                  + (f", {len(tasks) - len(pending)} already committed" if len(pending) < len(tasks) else ""))
        ray_options = self.pipeline.ray
        bars = ray_options.progress_bars and sys.stderr.isatty()  # Ray Data draws them; elsewhere, lines
        with StageProgress(spec.name, len(pending), self.echo, ray_options.progress_interval_s, active=not bars) as progress:
            for text in run_tasks(stage, pending, ctx, ray_options.max_workers_per_stage):
                receipt = ShardReceipt.from_json(text)
                receipts[receipt.shard] = receipt
                progress.shard_done(receipt.stats.docs_in)
        missing = [t.name for t in tasks if t.name not in receipts]
        if missing:
            raise CurationError(f"stage {spec.name!r}: shards without receipt: {', '.join(missing[:5])}")

        ordered = [receipts[t.name] for t in tasks]
        stats_bytes = self._stats_table(spec.name, ordered)
        fio.write_atomic(fio.join(stage_dir, STATS), stats_bytes, self.storage)
        manifest = {
            "format": MANIFEST_FORMAT,
            "stage": spec.name,
            "kind": spec.kind,
            "key": key,
            "config": config,
            "code_version": code_version,
            "input_sha256": input_hash,
            "upstream": spec.after,
            "resolved": ctx.resolved,
            "shards": [t.name for t in tasks],
            "files": [dataclasses.asdict(f) for r in ordered for f in r.files],
            "totals": self._totals(ordered),
        }
        manifest["funnel"] = stage.funnel(manifest)  # the stage's own reading of its totals
        manifest["summary"] = stage.summary(manifest)
        fio.write_atomic(manifest_path, json.dumps(manifest, sort_keys=True, indent=1).encode(), self.storage)
        fio.remove(fio.join(stage_dir, WORK_DIR), self.storage, recursive=True)  # a resolve's checkpoint, now spent
        seconds = time.perf_counter() - start
        totals = manifest["totals"]
        self.echo(f"[{spec.name}] done in {seconds:.1f}s: {totals['docs_in']:,} docs in, {totals['docs_out']:,} out")
        return StageOutcome(spec.name, spec.kind, False, len(tasks), len(pending), seconds, manifest)

    # -- helpers -------------------------------------------------------------------------------
    def _load_receipt(self, ctx: StageContext, shard: str) -> ShardReceipt | None:
        try:
            receipt = ShardReceipt.from_json(fio.read_bytes(receipt_path(ctx.stage_dir, shard), self.storage).decode())
        except (FileNotFoundError, ValueError, KeyError):
            return None
        # A receipt vouches for its files only while they are all still there.
        for f in receipt.files:
            if not fio.exists(fio.join(ctx.stage_dir, f.name), self.storage):
                return None
        return receipt

    @staticmethod
    def _totals(receipts: list[ShardReceipt]) -> dict[str, Any]:
        totals: dict[str, Any] = {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0}
        dropped: dict[str, int] = {}
        flagged: dict[str, int] = {}
        extra: dict[str, float] = {}
        for r in receipts:
            for k in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
                totals[k] += getattr(r.stats, k)
            for reason, n in r.stats.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            for reason, n in r.stats.flagged.items():
                flagged[reason] = flagged.get(reason, 0) + n
            for k, v in r.stats.extra.items():
                extra[k] = extra.get(k, 0) + v
        totals["dropped"] = dict(sorted(dropped.items()))
        totals["flagged"] = dict(sorted(flagged.items()))
        totals["extra"] = dict(sorted(extra.items()))
        return totals

    @staticmethod
    def _stats_table(stage: str, receipts: list[ShardReceipt]) -> bytes:
        rows = []
        for r in receipts:
            s = r.stats
            rows.append({
                "stage": stage, "shard": s.shard, "docs_in": s.docs_in, "docs_out": s.docs_out,
                "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "seconds": s.seconds,
                "dropped": [{"reason": k, "count": v} for k, v in sorted(s.dropped.items())],
                "flagged": [{"reason": k, "count": v} for k, v in sorted(s.flagged.items())],
                "extra": list(sorted(s.extra.items())),
            })
        batch = pa.RecordBatch.from_pylist(rows, schema=STATS_SCHEMA)
        return write_parquet_bytes([batch], STATS_SCHEMA)

    def _write_run_json(self, status: dict[str, Any]) -> None:
        import platform

        import ray

        if self.flat:
            return
        path = fio.join(self.run_root, RUN_FILE)
        previous = read_json(path, self.storage) or {}
        history = previous.get("invocations", [])
        if status.get("status") == "running":
            history.append(status)
        elif history:
            history[-1] = status
        body = {
            "pipeline": self.pipeline.name,
            "resolved": self.pipeline.source_tree,
            "versions": {"curation": curation.__version__, "ray": ray.__version__, "python": platform.python_version(),
                         "pyarrow": pa.__version__},
            "stages": [s.name for s in self.pipeline.stages],
            "invocations": history,
        }
        fio.write_atomic(path, json.dumps(body, indent=1, sort_keys=True, default=str).encode(), self.storage)
