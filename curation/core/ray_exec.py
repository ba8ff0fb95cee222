"""Running shard tasks on Ray Data.

Each stage becomes one Ray Data pass over its list of shard tasks: ``map_batches`` with an actor
pool, so a stage's heavy resources (fastText models, tokenizers, GPU scorers) load once per
actor, with the stage's own ``num_cpus``/``num_gpus`` request. The actor processes a shard's Arrow
record batches and commits the shard itself. Ray retries tasks whose node died; because a shard
commit is an atomic, deterministic write, a retried shard gives the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from curation.core import io as fio
from curation.core.config import build_config
from curation.core.layout import checkout_root, receipt_path
from curation.core.stage import ShardReceipt, ShardTask, StageContext

log = logging.getLogger(__name__)

_RUNTIME_EXCLUDES = [".venv", ".git", "runs", "**/__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info"]


@contextlib.contextmanager
def _stderr_silenced(active: bool):
    """Send file descriptor 2 to /dev/null meanwhile: the C++ core worker announces its log level
    there while Ray starts, below Python's logging."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def ensure_ray(address: str | None = None, num_cpus: int | None = None, progress_bars: bool = True) -> None:
    """Connect to Ray: local by default, a cluster when ``address`` or ``RAY_ADDRESS`` is set.

    On a cluster the project ships with ``runtime_env`` (the checkout as ``working_dir``), so
    workers import the same code the driver runs.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    verbose = os.environ.get("CURATION_VERBOSE") == "1"  # `curate --verbose`
    # Ray's Python warnings (the auth-token notice, "progress bars disabled"), its C++ backend notices
    # (the actor-restart note Ray Data's actor pools trigger on every run) and worker output are not
    # the user's business unless asked for; errors still arrive as exceptions.
    level = logging.WARNING if verbose else logging.ERROR
    if not verbose:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": level}
    root = checkout_root()
    if address:
        runtime_env: dict[str, Any] = {}
        if root is not None:
            runtime_env = {"working_dir": str(root), "excludes": _RUNTIME_EXCLUDES}
        with _stderr_silenced(not verbose):
            ray.init(address=address, runtime_env=runtime_env or None, **kwargs)
    else:
        with _stderr_silenced(not verbose):
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    from ray.data import DataContext

    # Progress bars on a terminal; elsewhere (CI, logs) Ray Data would print them as log lines.
    interactive = progress_bars and sys.stderr.isatty()
    context = DataContext.get_current()
    context.enable_progress_bars = interactive
    context.enable_operator_progress_bars = interactive
    context.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(level)


class ShardWorker:
    """Ray Data actor: builds the stage once, then runs whole shards."""

    def __init__(self, stage_class: type, config: dict[str, Any], ctx: dict[str, Any]):
        # The class travels by reference (module and name), so a worker imports the stage's module.
        self.stage = stage_class(build_config(stage_class.Config, config, stage_class.kind))
        ctx = dict(ctx)
        ctx["storage"] = fio.Storage(**ctx["storage"])
        self.ctx = StageContext(**ctx)
        self.stage.ensure_setup(self.ctx)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        receipts = []
        for task_json in batch["task"]:
            receipts.append(run_and_acknowledge(self.stage, ShardTask(**json.loads(task_json)), self.ctx))
        return {"receipt": np.array(receipts, dtype=object)}


def run_and_acknowledge(stage: Any, task: ShardTask, ctx: StageContext) -> str:
    receipt: ShardReceipt = stage.run_shard(task, ctx)
    text = receipt.to_json()
    # The receipt goes last: a shard without one is redone on resume.
    fio.write_atomic(receipt_path(ctx.stage_dir, task.name), text.encode(), ctx.storage)
    return text


def actor_count(resources: dict[str, float], cluster: dict[str, float], tasks: int, max_workers: int | None = None) -> int:
    """Actors for a stage's pool: no more than the tasks, nor than the cluster's CPUs (and GPUs, for
    a stage that asks for them) hold at the stage's size per actor; at least one."""
    fits = [cluster.get("CPU", 1) / max(resources["num_cpus"], 0.001)]
    if resources.get("num_gpus"):
        fits.append(cluster.get("GPU", 0) / resources["num_gpus"])  # more would wait for a GPU forever
    workers = max(1, min(tasks, int(min(fits))))
    return min(workers, max_workers) if max_workers else workers


def run_tasks(
    stage: Any,
    tasks: list[ShardTask],
    ctx: StageContext,
    max_workers: int | None = None,
) -> Iterator[str]:
    """Run shard tasks on Ray Data with an actor pool; yield receipts (JSON strings) as shards finish."""
    import ray

    if not tasks:
        return
    resources = stage.resources()
    workers = actor_count(resources, ray.cluster_resources(), len(tasks), max_workers)
    ctx_dict = dataclasses.asdict(ctx)
    config = dataclasses.asdict(stage.config)
    items = [{"task": json.dumps(dataclasses.asdict(t))} for t in tasks]
    stage_class = type(stage)

    class BoundShardWorker(ShardWorker):
        # The arguments travel inside the class (pickled by value), not as constructor arguments
        # that Ray Data would put in the object store: those make every actor restart depend on
        # them, and Ray warns about it on each run.
        def __init__(self) -> None:
            super().__init__(stage_class, config, ctx_dict)

    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    concurrent = stage.concurrent_shards()
    pool = (ray.data.ActorPoolStrategy(size=workers) if concurrent <= 1 else
            ray.data.ActorPoolStrategy(size=workers, max_concurrent_calls_per_actor=concurrent,
                                       enable_true_multi_threading=True))
    dataset = dataset.map_batches(
        BoundShardWorker,
        batch_size=1,
        compute=pool,
        num_cpus=resources["num_cpus"],
        num_gpus=resources["num_gpus"] or None,
    )
    for row in dataset.iter_rows():
        yield row["receipt"]
