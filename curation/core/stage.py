"""The stage contract: one small class per step, with a typed dataclass config.

A stage turns its upstream dataset into its own, shard by shard. ``BatchStage`` subclasses map
Arrow record batches to Arrow record batches; the base reads, counts, writes and commits.
Every shard is committed atomically and then acknowledged by a receipt; the runner writes the
stage manifest only when every shard has a receipt, so a half-written stage never looks finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

import curation
from curation.core import io as fio
from curation.core.errors import ConfigError

RECEIPTS_DIR = "_receipts"


@dataclass
class ShardTask:
    """One unit of work: inputs for one output shard."""

    index: int
    name: str  # output shard name, e.g. part-00003
    inputs: list[str]


@dataclass
class ShardStats:
    """Per-shard counters, written to the stage's stats.parquet."""

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
    upstream_dirs: dict[str, str] = field(default_factory=dict)
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
    _load_builtin_stages()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown stage kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def _load_builtin_stages() -> None:
    # Imported for their @register side effect; kept lazy so `curate --help` stays fast.
    import curation.classifiers.stage  # noqa: F401
    import curation.dedup.stage  # noqa: F401
    import curation.filters.decontaminate  # noqa: F401
    import curation.filters.heuristics  # noqa: F401
    import curation.filters.select  # noqa: F401
    import curation.ingest.extract  # noqa: F401
    import curation.tokenize.stage  # noqa: F401


class Stage:
    """Base class of all stages. Subclasses set ``Config`` and implement ``run_shard``."""

    kind: ClassVar[str] = ""
    Config: ClassVar[type] = object
    num_cpus: ClassVar[float] = 1.0
    num_gpus: ClassVar[float] = 0.0
    #: source stages read raw input files instead of an upstream stage
    is_source: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

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

    # -- lifecycle ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Load heavy resources (models, tokenizers). Runs once per worker, not per shard."""

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        """Compute values over the whole input before sharded work starts (e.g. quantiles)."""
        return {}

    def plan(self, inputs: list[str], ctx: StageContext) -> list[ShardTask]:
        """Default: one output shard per input file, named after it."""
        tasks = []
        for index, path in enumerate(inputs):
            stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
            name = stem if stem.startswith("part-") else f"part-{index:05d}"
            tasks.append(ShardTask(index=index, name=name, inputs=[path]))
        return tasks

    def run_shard(self, task: ShardTask, ctx: StageContext) -> ShardReceipt:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------
    @staticmethod
    def commit_bytes(ctx: StageContext, name: str, data: bytes, rows: int) -> OutputFile:
        fio.write_atomic(fio.join(ctx.stage_dir, name), data, ctx.storage)
        return OutputFile(name=name, rows=rows, bytes=len(data), sha256=fio.sha256_bytes(data))


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

    def process_batch(self, batch: pa.RecordBatch, stats: ShardStats) -> pa.RecordBatch | pa.Table:
        raise NotImplementedError

    def run_shard(self, task: ShardTask, ctx: StageContext) -> ShardReceipt:
        start = time.perf_counter()
        stats = ShardStats(shard=task.name)
        outputs: list[pa.RecordBatch] = []
        schema: pa.Schema | None = None
        for path in task.inputs:
            fs, p = fio.filesystem(path, ctx.storage)
            with fs.open(p, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=self.batch_size):
                    stats.docs_in += batch.num_rows
                    stats.bytes_in += text_bytes(batch)
                    result = self.process_batch(batch, stats)
                    for out in result.to_batches() if isinstance(result, pa.Table) else [result]:
                        schema = schema or out.schema
                        outputs.append(out)
                        stats.docs_out += out.num_rows
                        stats.bytes_out += text_bytes(out)
                if schema is None:
                    schema = self.output_schema(parquet.schema_arrow)
        data = write_parquet_bytes(outputs, schema or pa.schema([]))
        out_file = self.commit_bytes(ctx, f"{task.name}.parquet", data, stats.docs_out)
        stats.seconds = round(time.perf_counter() - start, 3)
        return ShardReceipt(key=ctx.key, shard=task.name, files=[out_file], stats=stats)

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """Schema of an empty output shard: run the stage on an empty batch."""
        empty = pa.RecordBatch.from_pylist([], schema=input_schema)
        return self.process_batch(empty, ShardStats(shard="")).schema
