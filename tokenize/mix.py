"""Mixes: a YAML spec of sources, each a query over token-shard indexes, resolved with DuckDB
into a manifest of (file, start, end, repeat) spans. Re-mixing never re-tokenizes.

```yaml
name: dclm_top_quality
total_tokens: 2000000        # optional; default: the largest mix that repeats nothing
max_repetition: 4
seed: 0
sources:
  - name: top
    index: runs/demo/tokenize            # a tokenize stage directory (local or s3://)
    where: "language = 'en'"             # SQL over the index columns
    top_percent: 10                      # keep the top 10% by `score` among rows matching `where`
    score: quality_fasttext
    weight: 0.7
  - name: rest
    index: runs/demo/tokenize
    where: "language = 'en'"
    weight: 0.3
```

A source with repetition r > 1 takes every document floor(r) times plus a seeded-hash-ordered
prefix for the remainder; r is capped at ``max_repetition``. Document order inside a source is
by a seeded hash of the id, so a mix is deterministic and independent of sharding.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import xxhash

from curation.core import io as fio
from curation.core import layout
from curation.core.config import build_config, load_yaml
from curation.core.errors import ConfigError, CurationError

MIX_FORMAT = "curation.mix/1"


@dataclass
class MixSource:
    name: str
    index: str
    where: str | None = None
    score: str | None = None
    top_percent: float | None = None
    weight: float | None = None
    tokens: int | None = None
    split: str = "train"

    def __post_init__(self) -> None:
        if self.top_percent is not None and not self.score:
            raise ValueError(f"source {self.name}: top_percent needs score")
        if self.weight is None and self.tokens is None:
            raise ValueError(f"source {self.name}: give weight or tokens")
        if self.top_percent is not None and not 0 < self.top_percent <= 100:
            raise ValueError(f"source {self.name}: top_percent must be in (0, 100]")
        if self.weight is not None and self.tokens is None and not self.weight > 0:
            raise ValueError(f"source {self.name}: weight must be positive (leave a source out to give it none)")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"source {self.name}: tokens must be positive")


@dataclass
class MixSpec:
    name: str
    sources: list[MixSource]
    total_tokens: int | None = None
    max_repetition: float = 4.0
    seed: int = 0
    description: str = ""
    license: str = "Common Crawl terms of use; page content keeps its authors' copyright"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            # Targets, reports and each document's `source` column are keyed by name.
            raise ValueError(f"source names must be unique; repeated: {', '.join(repeated)}")
        if not self.max_repetition > 0:
            raise ValueError("max_repetition must be positive")
        if self.total_tokens is not None and self.total_tokens < 1:
            raise ValueError("total_tokens must be positive")


def load_mix_spec(path: str, overrides: list[str] | None = None) -> MixSpec:
    from curation.core.config import apply_overrides

    tree = apply_overrides(load_yaml(path), overrides or [])
    sources = tree.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ConfigError(f"{path}: 'sources' must be a non-empty list")
    tree["sources"] = [build_config(MixSource, s, f"sources[{i}]") for i, s in enumerate(sources)]
    return build_config(MixSpec, tree, "mix")


def index_files(directory: str, storage: fio.Storage) -> list[str]:
    """The index Parquet files of a tokenize output (a tokenize stage folder, or a run holding one)."""
    stage, manifest = layout.find_stage(directory, storage, kind="tokenize")
    return layout.data_files(stage, manifest)


def _select_documents(source: MixSource, storage: fio.Storage, connection: duckdb.DuckDBPyConnection) -> pa.Table:
    files = index_files(source.index, storage)
    listing = layout.sql_list(files)
    # `where` and `score` are SQL by design; the split is a value, so it is bound, not spliced.
    predicate = "split = $split" + (f" AND ({source.where})" if source.where else "")
    if source.top_percent is not None:
        predicate += (f" AND {source.score} >= (SELECT quantile_disc({source.score}, {1 - source.top_percent / 100.0}) "
                      f"FROM read_parquet({listing}, union_by_name = true) WHERE {predicate})")
    sql = f"SELECT id, file, start, \"end\", num_tokens FROM read_parquet({listing}, union_by_name = true) WHERE {predicate}"
    try:
        table = connection.sql(sql, params={"split": source.split}).to_arrow_table()
    except duckdb.Error as exc:
        raise ConfigError(f"mix source {source.name}: {exc}") from None
    base = fio.normalize_root(files[0].rsplit("/", 1)[0]) if files else ""
    paths = pa.array([fio.join(base, f) for f in table.column("file").to_pylist()], pa.string())
    return table.set_column(table.schema.get_field_index("file"), "file", paths)


def resolve_mix(spec: MixSpec, storage: fio.Storage | None = None) -> dict[str, Any]:
    storage = storage or fio.Storage()
    connection = duckdb.connect()
    if any(not fio.is_local(s.index) for s in spec.sources):
        connection.register_filesystem(fio.filesystem(next(s.index for s in spec.sources if not fio.is_local(s.index)), storage)[0])
    selected = {s.name: _select_documents(s, storage, connection) for s in spec.sources}
    connection.close()
    available = {name: int(np.sum(t.column("num_tokens").to_numpy())) if t.num_rows else 0 for name, t in selected.items()}
    for name, tokens in available.items():
        if tokens == 0:
            raise CurationError(f"mix source {name} selects no tokens")
    weighted = [s for s in spec.sources if s.tokens is None]
    weight_sum = sum(s.weight for s in weighted) or 1.0
    total = spec.total_tokens
    if total is None and weighted:
        total = int(min(available[s.name] / (s.weight / weight_sum) for s in weighted))
    targets = {s.name: s.tokens if s.tokens is not None else int(round(total * s.weight / weight_sum)) for s in spec.sources}

    sources_report, doc_tables = [], []
    for source in spec.sources:
        table = selected[source.name]
        target = targets[source.name]
        repetition = target / available[source.name]
        capped = repetition > spec.max_repetition
        if capped:
            repetition = spec.max_repetition
            target = int(available[source.name] * repetition)
        ids = table.column("id").to_pylist()
        order = np.argsort(np.fromiter((xxhash.xxh3_64_intdigest(f"{spec.seed}:{source.name}:{i}".encode()) for i in ids),
                                       dtype=np.uint64, count=len(ids)), kind="stable")
        tokens = table.column("num_tokens").to_numpy()[order]
        full = int(math.floor(repetition + 1e-12))
        remainder = target - full * available[source.name]
        repeat = np.full(len(order), full, dtype=np.int64)
        if remainder > 0:
            cumulative = np.cumsum(tokens)
            take = int(np.searchsorted(cumulative, remainder, side="left")) + 1
            repeat[: min(take, len(order))] += 1
        docs = table.take(pa.array(order)).append_column("repeat", pa.array(repeat)).append_column(
            "source", pa.array([source.name] * len(order), pa.string()))
        docs = docs.filter(pa.array(repeat > 0))
        achieved = int(np.sum(docs.column("num_tokens").to_numpy() * docs.column("repeat").to_numpy()))
        doc_tables.append(docs)
        sources_report.append({
            "name": source.name, "index": source.index, "where": source.where, "score": source.score,
            "top_percent": source.top_percent, "documents": len(order), "available_tokens": available[source.name],
            "target_tokens": targets[source.name], "achieved_tokens": achieved, "repetition": achieved / available[source.name],
            "capped_by_max_repetition": capped,
        })
    achieved_total = sum(s["achieved_tokens"] for s in sources_report)
    for report in sources_report:
        report["proportion"] = report["achieved_tokens"] / achieved_total
        report["requested_proportion"] = targets[report["name"]] / sum(targets.values())
    documents = pa.concat_tables(doc_tables)
    return {
        "format": MIX_FORMAT,
        "name": spec.name,
        "spec": _spec_dict(spec),
        "total_tokens": achieved_total,
        "sources": sources_report,
        "spans": merge_spans(documents),
        "_documents": documents,
    }


def merge_spans(documents: pa.Table) -> list[dict[str, Any]]:
    """Adjacent documents of one file with the same source and repeat become one span."""
    rows = sorted(zip(documents.column("file").to_pylist(), documents.column("start").to_pylist(),
                      documents.column("end").to_pylist(), documents.column("repeat").to_pylist(),
                      documents.column("source").to_pylist(), strict=True))
    spans: list[dict[str, Any]] = []
    for file, start, end, repeat, source in rows:
        last = spans[-1] if spans else None
        if last and last["file"] == file and last["end"] == start and last["repeat"] == repeat and last["source"] == source:
            last["end"] = end
        else:
            spans.append({"file": file, "start": start, "end": end, "repeat": repeat, "source": source})
    return spans


def _spec_dict(spec: MixSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def write_mix(mix: dict[str, Any], directory: str, storage: fio.Storage | None = None) -> str:
    import io

    import pyarrow.parquet as pq

    storage = storage or fio.Storage()
    documents = mix["_documents"]
    buffer = io.BytesIO()
    pq.write_table(documents, buffer, compression="zstd")
    fio.write_atomic(fio.join(directory, "documents.parquet"), buffer.getvalue(), storage)
    body = {k: v for k, v in mix.items() if not k.startswith("_")}
    path = fio.join(directory, "mix.json")
    fio.write_atomic(path, json.dumps(body, indent=1, sort_keys=True).encode(), storage)
    return path
