"""The stage contract: one small class per step, with a typed dataclass config.

A stage turns its upstream dataset into its own, shard by shard. What every stage shares lives
here; a stage class holds only what is particular to it:

    setup(ctx)                        once per worker: heavy resources (models, tokenizers, indexes)
    resolve(inputs, ctx) -> dict      once per stage, over the whole input (quantiles, LSH clusters)
    plan(inputs, ctx) -> [ShardTask]  the output shards
    begin_shard(task, ctx) -> state   what one shard needs (its slice of a global result)
    write_shard(task, ctx, state, stats) -> [OutputFile]   produce and commit the shard's files
    funnel(manifest) / summary(manifest)   how the finished stage reads in the funnel and cards

``run_shard`` is the one template around them: setup on first use, timing, counters, receipt.
``BatchStage`` subclasses only map Arrow record batches (``process_batch(batch, state, stats)``,
or ``process_batches`` for work that pipelines across batches, as the GPU scorer does); the base
reads, counts, writes and commits. Every shard is committed atomically and then
acknowledged by a receipt; the runner writes the stage manifest only when every shard has a
receipt, so a half-written stage never looks finished.

Stages register under a kind with ``@register``; the runner finds a kind it has not imported
through the ``curation.stages`` entry points (the built-in stages are declared in
``pyproject.toml``), so this module knows no concrete stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

import curation
from curation.core import io as fio
from curation.core.errors import ConfigError

ENTRY_POINT_GROUP = "curation.stages"


@dataclass
class ShardTask:
    """One unit of work: inputs for one output shard."""

    index: int
    name: str  # output shard name, e.g. part-00003
    inputs: list[str]


@dataclass
class ShardStats:
    """Per-shard counters, written to the stage's _stats/shards.parquet."""

    shard: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)  # rows removed here, by reason
    flagged: Counter = field(default_factory=Counter)  # rows marked for removal (attributes), by reason
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dropped"] = dict(sorted(self.dropped.items()))
        out["flagged"] = dict(sorted(self.flagged.items()))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardStats:
        data = dict(data)
        data["dropped"] = Counter(data.get("dropped", {}))
        data["flagged"] = Counter(data.get("flagged", {}))
        return cls(**data)


@dataclass
class StageContext:
    """What a stage needs to know about where it runs; travels to Ray workers."""

    run_root: str
    stage_name: str
    stage_dir: str
    key: str
    storage: fio.Storage = field(default_factory=fio.Storage)
    resolved: dict[str, Any] = field(default_factory=dict)  # values a stage resolved over its whole input


@dataclass
class OutputFile:
    name: str  # relative to the stage directory
    rows: int
    bytes: int
    sha256: str


@dataclass
class ShardReceipt:
    key: str
    shard: str
    files: list[OutputFile]
    stats: ShardStats

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "shard": self.shard,
                "files": [dataclasses.asdict(f) for f in self.files],
                "stats": self.stats.to_json(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ShardReceipt:
        data = json.loads(text)
        return cls(
            key=data["key"],
            shard=data["shard"],
            files=[OutputFile(**f) for f in data["files"]],
            stats=ShardStats.from_json(data["stats"]),
        )


_REGISTRY: dict[str, type[Stage]] = {}


def register(kind: str):
    """Class decorator: make a stage available to pipelines under ``kind``."""

    def wrap(cls: type[Stage]) -> type[Stage]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


def stage_class(kind: str) -> type[Stage]:
    """The stage registered under ``kind``, importing it through its entry point if needed."""
    if kind not in _REGISTRY:
        for entry in _entry_points():
            if entry.name == kind:
                entry.load()  # the module's @register fills the registry
    if kind not in _REGISTRY:
        known = sorted(set(_REGISTRY) | {e.name for e in _entry_points()})
        raise ConfigError(f"unknown stage kind {kind!r}; known: {', '.join(known)}")
    return _REGISTRY[kind]


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


class Stage:
    """Base class of all stages. Subclasses set ``Config`` and implement ``write_shard``."""

    kind: ClassVar[str] = ""
    Config: ClassVar[type] = object
    num_cpus: ClassVar[float] = 1.0
    num_gpus: ClassVar[float] = 0.0
    #: source stages read raw input files instead of an upstream stage
    is_source: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config
        self._set_up_for: str | None = None  # the stage key setup() last ran for

    # -- identity ---------------------------------------------------------------------------
    @classmethod
    def code_version(cls) -> str:
        """Package version plus a hash of the module that defines the stage."""
        digest = hashlib.sha256()
        for klass in cls.__mro__:
            if klass.__module__.startswith("curation"):
                try:
                    digest.update(inspect.getsource(inspect.getmodule(klass)).encode())
                except (OSError, TypeError):
                    digest.update(klass.__qualname__.encode())
        return f"{curation.__version__}+{digest.hexdigest()[:12]}"

    def resources(self) -> dict[str, float]:
        return {"num_cpus": getattr(self.config, "num_cpus", self.num_cpus), "num_gpus": self.num_gpus}

    def concurrent_shards(self) -> int:
        """Shards one worker (a Ray actor) runs at once, in threads over its one ``setup``. More
        than one only for a stage whose shard is a pipeline that idles at its ends (a GPU fed by
        CPU tokenizers fills and drains), and whose code is safe for it."""
        return 1

    # -- lifecycle ----------------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        """Load heavy resources (models, tokenizers, indexes). Runs once per worker, not per
        shard, after ``resolve``: ``ctx.resolved`` holds what it computed."""

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        """Compute values over the whole input before sharded work starts (e.g. quantiles)."""
        return {}

    def describe_resolved(self, resolved: dict[str, Any]) -> str | None:
        """One line for the user about what ``resolve`` found (the runner prints it)."""
        return None

    def plan(self, inputs: list[str], ctx: StageContext) -> list[ShardTask]:
        """Default: one output shard per input file, named after it."""
        tasks = []
        for index, path in enumerate(inputs):
            stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
            name = stem if stem.startswith("part-") else f"part-{index:05d}"
            tasks.append(ShardTask(index=index, name=name, inputs=[path]))
        return tasks

    def begin_shard(self, task: ShardTask, ctx: StageContext) -> Any:
        """State for one shard, handed to ``write_shard`` (and to ``process_batch``)."""
        return None

    def write_shard(self, task: ShardTask, ctx: StageContext, state: Any, stats: ShardStats) -> list[OutputFile]:
        """Produce the shard, commit its files (``commit_bytes``), count into ``stats``."""
        raise NotImplementedError

    def run_shard(self, task: ShardTask, ctx: StageContext) -> ShardReceipt:
        """The template every stage runs a shard through; subclasses do not override it."""
        start = time.perf_counter()
        self.ensure_setup(ctx)
        stats = ShardStats(shard=task.name)
        files = self.write_shard(task, ctx, self.begin_shard(task, ctx), stats)
        stats.seconds = round(time.perf_counter() - start, 3)
        return ShardReceipt(key=ctx.key, shard=task.name, files=files, stats=stats)

    def ensure_setup(self, ctx: StageContext) -> None:
        if self._set_up_for != ctx.key:
            self.setup(ctx)
            self._set_up_for = ctx.key

    # -- reporting ----------------------------------------------------------------------------
    def funnel(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """How the finished stage reads in the run's funnel: lines of ``{"label", "documents" or
        "removed", "note"}``. Default: a stage that passes every row through and only flags
        (attributes) removes what it flagged; any other stage leaves ``docs_out`` documents."""
        totals = manifest["totals"]
        dropped, flagged = totals.get("dropped", {}), totals.get("flagged", {})
        if totals["docs_in"] == totals["docs_out"] and not dropped:
            if not flagged:
                return []
            return [{"label": f"{manifest['stage']}: {', '.join(sorted(flagged))}", "removed": sum(flagged.values()),
                     "note": f"-{sum(flagged.values()):,}"}]
        note = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])[:4])
        return [{"label": manifest["stage"], "documents": totals["docs_out"], "note": note}]

    def summary(self, manifest: dict[str, Any]) -> list[str]:
        """Markdown lines about the finished stage for dataset cards (default: none)."""
        return []

    # -- helpers for subclasses ------------------------------------------------------------
    @staticmethod
    def commit_bytes(ctx: StageContext, name: str, data: bytes, rows: int) -> OutputFile:
        fio.write_atomic(fio.join(ctx.stage_dir, name), data, ctx.storage)
        return OutputFile(name=name, rows=rows, bytes=len(data), sha256=fio.sha256_bytes(data))


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ParquetShardWriter:
    """A shard's Parquet file written batch by batch as the batches come, so memory holds one
    batch, not the shard; committed atomically by ``commit``. Same bytes as ``write_parquet_bytes``
    for the same batches (one row group per batch, zstd, statistics)."""

    def __init__(self, ctx: StageContext, name: str, schema: pa.Schema | None = None):
        self.ctx, self.name, self.schema = ctx, name, schema
        self.target = fio.join(ctx.stage_dir, name)
        self.local = fio.spool_path(self.target)
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch, stats: ShardStats | None = None) -> None:
        """Append ``batch``; with ``stats``, count it as the shard's output (documents and text bytes)."""
        if stats is not None:
            stats.docs_out += batch.num_rows
            stats.bytes_out += text_bytes(batch)
        if self.writer is None:
            self.schema = self.schema or batch.schema
            self.writer = pq.ParquetWriter(self.local, self.schema, compression="zstd", write_statistics=True)
        if batch.num_rows:
            self.writer.write_batch(batch, row_group_size=max(batch.num_rows, 1))
            self.rows += batch.num_rows

    def commit(self, schema_if_empty: pa.Schema | None = None) -> OutputFile:
        if self.writer is None:  # no batch came: an empty file with the schema the stage would write
            self.schema = self.schema or schema_if_empty or pa.schema([])
            self.writer = pq.ParquetWriter(self.local, self.schema, compression="zstd", write_statistics=True)
        self.writer.close()
        size, digest = os.path.getsize(self.local), hashlib.sha256()
        with open(self.local, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        fio.commit_local_file(self.local, self.target, self.ctx.storage)
        return OutputFile(name=self.name, rows=self.rows, bytes=size, sha256=digest.hexdigest())

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local)

    def __enter__(self) -> ParquetShardWriter:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is not None:
            self.discard()


def write_parquet_bytes(batches: list[pa.RecordBatch], schema: pa.Schema) -> bytes:
    """Deterministic Parquet: same batches give the same bytes."""
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, schema, compression="zstd", write_statistics=True) as writer:
        for batch in batches:
            if batch.num_rows:
                writer.write_batch(batch, row_group_size=max(batch.num_rows, 1))
    return buffer.getvalue()


def text_bytes(batch: pa.RecordBatch | pa.Table, column: str = "text") -> int:
    import pyarrow.compute as pc

    if column not in batch.schema.names or batch.num_rows == 0:
        return 0
    lengths = pc.binary_length(batch.column(column))
    total = pc.sum(lengths).as_py()
    return int(total or 0)


class BatchStage(Stage):
    """A stage that maps each upstream Parquet shard, batch by batch, to one output shard."""

    batch_size: ClassVar[int] = 1024

    def process_batch(self, batch: pa.RecordBatch, state: Any, stats: ShardStats) -> pa.RecordBatch | pa.Table:
        raise NotImplementedError

    def process_batches(self, batches: Iterator[pa.RecordBatch], state: Any,
                        stats: ShardStats) -> Iterator[pa.RecordBatch | pa.Table]:
        """One result per batch, in order. A stage whose work pipelines across batches (a GPU
        model fed by CPU tokenizers) overrides this to take the next batch before it returns the
        current one's result; the batches are read from the shard as it takes them."""
        for batch in batches:
            yield self.process_batch(batch, state, stats)

    def write_shard(self, task: ShardTask, ctx: StageContext, state: Any, stats: ShardStats) -> list[OutputFile]:
        schemas: list[pa.Schema] = []

        def batches() -> Iterator[pa.RecordBatch]:
            for path in task.inputs:
                fs, p = fio.filesystem(path, ctx.storage)
                with fs.open(p, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    schemas.append(parquet.schema_arrow)
                    for batch in parquet.iter_batches(batch_size=self.batch_size):
                        stats.docs_in += batch.num_rows
                        stats.bytes_in += text_bytes(batch)
                        yield batch

        with ParquetShardWriter(ctx, f"{task.name}.parquet") as shard:
            for result in self.process_batches(batches(), state, stats):
                for out in result.to_batches() if isinstance(result, pa.Table) else [result]:
                    shard.write(out, stats)
            empty_schema = self.output_schema(schemas[0], state) if shard.writer is None and schemas else None
            return [shard.commit(empty_schema)]

    def output_schema(self, input_schema: pa.Schema, state: Any) -> pa.Schema:
        """Schema of an empty output shard: run the stage on an empty batch."""
        empty = pa.RecordBatch.from_pylist([], schema=input_schema)
        return self.process_batch(empty, state, ShardStats(shard="")).schema
