"""Global fuzzy and exact deduplication as a stage: attributes, not deletions.

The stage resolves clusters over the whole input before its per-shard pass, as a chain of Ray
task rounds in which every task sees one shard or one hash partition, never the corpus. The
tables between rounds are partitioned Parquet files under ``<stage>/_work`` on the run's storage
(local disk or an object store), removed when the clusters are written:

1. signatures (one task per shard): MinHash, band keys, exact content and URL keys. Bucket rows
   (key, band, node: 18 bytes, no sketch) go to ``buckets`` split by key; each document's 8-bit
   sketch goes once to ``sketches`` and its (shard, row) to ``directory``, split by node.
2. buckets (one task per key partition): group equal keys; exact and URL groups are edges at
   once; members of LSH groups of two or more go to ``members``, split by node.
3. join (one task per node partition): each member gets its document's sketch; rows go to
   ``groups``, split by group.
4. verify (one task per group partition): candidates within each group, verified by sketch.
   Steps 2 and 4 write their edges to ``edges``, split by node.
5. connected components: large-star / small-star rounds, each a table of P edge partitions
   (``curation.dedup.components``); labels land split by component, so each is whole in one task.
6. clusters: sizes per component; every member joined with the node directory and routed back
   to its shard through ``routed``; each shard's members become its ``_clusters`` file.

A node is a document's rank key, so the smallest node of a component is its keeper: the highest
``score_column`` (quantised to 16 bits) when set, ties and the no-score case broken by the
64-bit hash of the document id. Same input, same survivors, whatever P or the shard count.
The per-shard pass then adds ``cluster_id``, ``cluster_size`` and ``is_duplicate``.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.core import io as fio
from curation.core.layout import WORK_DIR  # bucket rows, sketches, group members while resolving
from curation.core.phases import PhaseClock
from curation.core.schema import all_true
from curation.core.stage import BatchStage, ShardStats, ShardTask, StageContext, register
from curation.dedup.components import connected_components, partition_of, read_labels, write_edges
from curation.dedup.lsh import band_keys, bbit, verify_group
from curation.dedup.minhash import EMPTY, ShingleSpec, normalize, optimal_bands, shingle_hashes, signatures
from curation.dedup.urls import canonical_url
from curation.dedup.work_tables import read_parts, write_split

CLUSTERS_DIR = "_clusters"
SIGNED = "signed"  # in WORK_DIR: a file per shard whose signature tables are written


@dataclass
class DedupConfig:
    threshold: float = 0.8  # target Jaccard of word n-gram sets
    verify_threshold: float | None = None  # estimated-Jaccard cut for candidates (default: threshold - 0.1)
    lsh_threshold: float | None = None  # the threshold bands are tuned for (default: verify_threshold - 0.05)
    ngram: int = 5
    shingle: str = "word"  # word | char
    num_perm: int = 128
    bands: int | None = None  # default: datasketch's optimal (bands, rows) for lsh_threshold
    rows: int | None = None
    false_positive_weight: float = 0.5
    false_negative_weight: float = 0.5
    exact: bool = True  # exact duplicates of the normalised content
    url: bool = True  # same URL
    url_key: str = "canonical"  # canonical: http/https, www., default port, trackers folded (curation.dedup.urls) | exact
    score_column: str | None = None  # keep the highest score in a cluster (e.g. quality_fasttext)
    require: list[str] = dataclasses.field(default_factory=list)  # only rows where these bool columns are true take part
    text_column: str = "text"
    id_column: str = "id"
    url_column: str = "url"
    # hash partitions for buckets, groups and components; default: 2 x CPUs, and more as the corpus
    # grows, so that no partition holds more than ``documents_per_partition`` documents' rows
    partitions: int | None = None
    documents_per_partition: int = 500_000
    seed: int = 1
    batch_size: int = 2048
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if self.shingle not in ("word", "char"):
            raise ValueError("shingle must be word or char")
        if self.url_key not in ("canonical", "exact"):
            raise ValueError(f"url_key must be canonical or exact, not {self.url_key!r}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError("bands x rows must not exceed num_perm")

    @property
    def verify_at(self) -> float:
        return self.verify_threshold if self.verify_threshold is not None else round(max(self.threshold - 0.1, 0.05), 6)

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        target = self.lsh_threshold if self.lsh_threshold is not None else max(self.verify_at - 0.05, 0.05)
        return optimal_bands(target, self.num_perm, self.false_positive_weight, self.false_negative_weight)


# -- task bodies (plain functions; the stage wraps them with ray.remote) -----------------------
_EXACT_BAND, _URL_BAND = 65534, 65535


def node_ids(ids: list[str], scores: np.ndarray | None) -> np.ndarray:
    id_hash = np.fromiter((xxhash.xxh3_64_intdigest(i.encode()) for i in ids), dtype=np.uint64, count=len(ids))
    if scores is None:
        return id_hash
    quantised = np.round((1.0 - np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)) * 65535).astype(np.uint64)
    return (quantised << np.uint64(48)) | (id_hash >> np.uint64(16))


def signature_task(path: str, shard: int, config: dict[str, Any], storage: dict[str, Any], partitions: int,
                   work: str) -> int:
    """One shard's bucket rows (key, band, node: no sketch), split by key into ``buckets``; each
    document's sketch once, and its (shard, row), split by node into ``sketches`` / ``directory``."""
    c = DedupConfig(**config)
    bands, rows = c.banding()
    fs, p = fio.filesystem(path, fio.Storage(**storage))
    with fs.open(p, "rb") as handle:
        columns = [c.id_column, c.text_column] + ([c.url_column] if c.url else []) + ([c.score_column] if c.score_column else [])
        table = pq.read_table(handle, columns=columns + list(c.require))
    eligible = all_true(table, c.require, "dedup")
    ids = [str(x) for x in table.column(c.id_column).to_pylist()]
    scores = table.column(c.score_column).to_numpy(zero_copy_only=False).astype(np.float64) if c.score_column else None
    nodes = node_ids(ids, scores)
    hashes, offsets = shingle_hashes(table.column(c.text_column), ShingleSpec(c.ngram, c.shingle))
    sigs = signatures(hashes, offsets, c.num_perm, c.seed)
    has_shingles = ~(sigs == EMPTY).all(axis=1)
    keys = band_keys(sigs, bands, rows)
    key_parts, band_parts, node_parts = [], [], []
    doc_index = np.flatnonzero(has_shingles & eligible)
    for b in range(bands):
        key_parts.append(keys[doc_index, b])
        band_parts.append(np.full(len(doc_index), b, dtype=np.uint16))
        node_parts.append(nodes[doc_index])
    if c.exact:
        normalized = normalize(table.column(c.text_column)).to_pylist()
        content = np.fromiter((xxhash.xxh3_64_intdigest(t.encode()) for t in normalized), dtype=np.uint64, count=len(normalized))
        key_parts.append(content[doc_index])
        band_parts.append(np.full(len(doc_index), _EXACT_BAND, dtype=np.uint16))
        node_parts.append(nodes[doc_index])
    if c.url:
        key_of = canonical_url if c.url_key == "canonical" else str.strip
        urls = [key_of(u) if u else "" for u in table.column(c.url_column).to_pylist()]
        with_url = np.array([bool(u) for u in urls], dtype=bool) & eligible
        url_keys = np.fromiter((xxhash.xxh3_64_intdigest(u.encode()) for u in urls), dtype=np.uint64, count=len(urls))
        key_parts.append(url_keys[with_url])
        band_parts.append(np.full(int(with_url.sum()), _URL_BAND, dtype=np.uint16))
        node_parts.append(nodes[with_url])
    key, band, node = np.concatenate(key_parts), np.concatenate(band_parts), np.concatenate(node_parts)
    with np.errstate(over="ignore"):
        destination = partition_of(key ^ band.astype(np.uint64), partitions)
    name = shard_name(shard)
    order = np.lexsort((node, key, band))  # sorted before the split, so each file is sorted: partitions merge cheaply
    write_split(work, "buckets", name, storage, destination[order], partitions,
                {"key": key[order], "band": band[order], "node": node[order]})
    sketched_nodes = nodes[doc_index]
    write_split(work, "sketches", name, storage, partition_of(sketched_nodes, partitions), partitions,
                {"node": sketched_nodes, "sketch": bbit(sigs[doc_index])})
    write_split(work, "directory", name, storage, partition_of(nodes, partitions), partitions,
                {"node": nodes, "shard": np.full(len(nodes), shard, np.int32), "row": np.arange(len(nodes), dtype=np.int64)})
    fio.write_atomic(fio.join(work, SIGNED, name), b"", fio.Storage(**storage))  # last: its tables are whole
    return int(len(key))


def shard_name(shard: int) -> str:
    return f"s{shard:06d}"


_BUCKET_ROWS = {"key": np.zeros(0, np.uint64), "band": np.zeros(0, np.uint16), "node": np.zeros(0, np.uint64)}


def _groups(band: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Boundaries of runs of equal (band, key) in sorted rows (len = groups + 1)."""
    return np.flatnonzero(np.concatenate([[True], (key[1:] != key[:-1]) | (band[1:] != band[:-1]), [True]]))


def bucket_task(partition: int, partitions: int, work: str, storage: dict[str, Any]):
    """One key partition: exact and URL groups give edges at once; LSH groups of two or more
    send their members, by node, to be joined with their sketches. Returns the counts."""
    rows = read_parts(work, "buckets", partition, storage, _BUCKET_ROWS)
    key, band, node = rows["key"], rows["band"], rows["node"]
    order = np.lexsort((node, key, band))
    key, band, node = key[order], band[order], node[order]
    sources, targets = [], []
    member_rows: list[np.ndarray] = []
    candidates = 0
    boundary = _groups(band, key) if len(key) else np.zeros(1, np.int64)
    for g in np.flatnonzero(np.diff(boundary) >= 2):
        lo, hi = boundary[g], boundary[g + 1]
        members = np.unique(node[lo:hi])
        if len(members) < 2:
            continue
        candidates += len(members) * (len(members) - 1) // 2
        if band[lo] == _URL_BAND or band[lo] == _EXACT_BAND:
            s, t, _ = verify_group(members, None, 0.0)
            sources.append(s)
            targets.append(t)
        else:
            member_rows.append(np.stack([np.full(len(members), key[lo]), np.full(len(members), band[lo], np.uint64),
                                         members]))
    members = np.concatenate(member_rows, axis=1) if member_rows else np.zeros((3, 0), np.uint64)
    write_split(work, "members", f"b{partition:05d}", storage, partition_of(members[2], partitions), partitions,
                {"key": members[0], "band": members[1].astype(np.uint16), "node": members[2]})
    edges = _write_unique_edges(sources, targets, work, f"b{partition:05d}", storage, partitions)
    return np.array([candidates, 0, edges], dtype=np.int64)


def join_task(partition: int, partitions: int, width: int, work: str, storage: dict[str, Any]) -> int:
    """One node partition: the LSH group members it owns, each with its document's sketch, sent
    on by group to be verified."""
    members = read_parts(work, "members", partition, storage, _BUCKET_ROWS)
    sketches = read_parts(work, "sketches", partition, storage,
                           {"node": np.zeros(0, np.uint64), "sketch": np.zeros((0, width), np.uint8)})
    order = np.argsort(sketches["node"], kind="stable")
    known, sketch = sketches["node"][order], sketches["sketch"][order]
    position = np.minimum(np.searchsorted(known, members["node"]), max(len(known) - 1, 0))
    sketch_of_member = sketch[position] if len(known) else np.zeros((len(members["node"]), width), np.uint8)
    with np.errstate(over="ignore"):
        destination = partition_of(members["key"] ^ members["band"].astype(np.uint64), partitions)
    write_split(work, "groups", f"n{partition:05d}", storage, destination, partitions,
                {"key": members["key"], "band": members["band"], "node": members["node"], "sketch": sketch_of_member})
    return int(len(members["node"]))


def verify_task(partition: int, partitions: int, verify_at: float, width: int, work: str,
                storage: dict[str, Any]) -> np.ndarray:
    """One group partition: each LSH group's members with their sketches, verified. Returns the counts."""
    rows = read_parts(work, "groups", partition, storage, {**_BUCKET_ROWS, "sketch": np.zeros((0, width), np.uint8)})
    key, band, node, sketch = rows["key"], rows["band"], rows["node"], rows["sketch"]
    order = np.lexsort((node, key, band))
    key, band, node, sketch = key[order], band[order], node[order], sketch[order]
    sources, targets, compared = [], [], 0
    boundary = _groups(band, key) if len(key) else np.zeros(1, np.int64)
    for g in range(len(boundary) - 1):
        lo, hi = boundary[g], boundary[g + 1]
        s, t, n = verify_group(node[lo:hi], sketch[lo:hi], verify_at)
        compared += n
        sources.append(s)
        targets.append(t)
    edges = _write_unique_edges(sources, targets, work, f"v{partition:05d}", storage, partitions)
    return np.array([0, compared, edges], dtype=np.int64)


def _write_unique_edges(sources: list[np.ndarray], targets: list[np.ndarray], work: str, writer: str,
                        storage: dict[str, Any], partitions: int) -> int:
    """Distinct undirected edges into the components' edge table; returns how many."""
    if not sources:
        return 0
    edges = np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.uint64)
    if edges.shape[1]:
        edges = np.unique(np.sort(edges, axis=0).T, axis=0).T
    write_edges(work, storage, writer, edges[0], edges[1], partitions)
    return int(edges.shape[1])


_ROOT_ROWS = {"node": np.zeros(0, np.uint64), "root": np.zeros(0, np.uint64), "size": np.zeros(0, np.uint64)}
_ROUTED_ROWS = {"row": np.zeros(0, np.int64), "node": np.zeros(0, np.uint64), "root": np.zeros(0, np.uint64),
                "size": np.zeros(0, np.uint64)}


def members_by_root(partition: int, partitions: int, work: str, storage: dict[str, Any]) -> None:
    """One label partition (whole components): component sizes; every member, root included,
    written with its root and size to ``roots``, split by the member's node partition."""
    nodes, roots = read_labels(work, storage, partition)
    unique_roots, counts = np.unique(roots, return_counts=True)
    all_nodes = np.concatenate([nodes, unique_roots])
    all_roots = np.concatenate([roots, unique_roots])
    size = (np.concatenate([counts[np.searchsorted(unique_roots, roots)], counts]) + 1).astype(np.uint64)
    write_split(work, "roots", f"l{partition:05d}", storage, partition_of(all_nodes, partitions), partitions,
                {"node": all_nodes, "root": all_roots, "size": size}, skip_empty=True)


def route_to_shards(partition: int, work: str, storage: dict[str, Any]) -> None:
    """Join one node partition's cluster members with the node directory; write them to ``routed``,
    whose partitions are the input shards."""
    members = read_parts(work, "roots", partition, storage, _ROOT_ROWS)
    directory = read_parts(work, "directory", partition, storage, {
        "node": np.zeros(0, np.uint64), "shard": np.zeros(0, np.int32), "row": np.zeros(0, np.int64)})
    nodes, shard, row = directory["node"], directory["shard"], directory["row"]
    order = np.argsort(members["node"], kind="stable")
    member_nodes = members["node"][order]
    position = np.searchsorted(member_nodes, nodes)
    found = (position < len(member_nodes)) & (member_nodes[np.minimum(position, max(len(member_nodes) - 1, 0))] == nodes) \
        if len(member_nodes) else np.zeros(len(nodes), dtype=bool)
    position = order[position[found]]
    shards = int(shard.max()) + 1 if len(shard) else 0
    write_split(work, "routed", f"q{partition:05d}", storage, shard[found], shards,
                {"row": row[found], "node": nodes[found], "root": members["root"][position],
                 "size": members["size"][position]}, skip_empty=True)


def write_clusters(path: str, shard: int, work: str, storage: dict[str, Any]) -> int:
    """One shard's cluster members, sorted by row, as the stage's committed clusters file."""
    rows = read_parts(work, "routed", shard, storage, _ROUTED_ROWS)
    order = np.argsort(rows["row"], kind="stable")
    table = pa.table({"row": rows["row"][order], "node": rows["node"][order], "root": rows["root"][order],
                      "size": rows["size"][order].astype(np.int64)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    fio.write_atomic(path, buffer.getvalue(), fio.Storage(**storage))
    return table.num_rows


@dataclass
class ShardClusters:
    """One shard's rows that belong to a cluster (sorted by row), and the next row to read."""

    row: np.ndarray
    root: np.ndarray
    size: np.ndarray
    next_row: int = 0


@register("dedup")
class DedupStage(BatchStage):
    """Adds ``cluster_id``, ``cluster_size`` and ``is_duplicate``; ``select`` removes duplicates."""

    Config = DedupConfig
    phases: PhaseClock | None = None  # of the last resolve, for its run line

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        import ray

        c = self.config
        documents = 0
        for path in inputs:  # Parquet footers only
            fs, p = fio.filesystem(path, ctx.storage)
            with fs.open(p, "rb") as handle:
                documents += pq.ParquetFile(handle).metadata.num_rows
        bands, rows = c.banding()
        storage = dataclasses.asdict(ctx.storage)
        config = dataclasses.asdict(c)
        tasks = self.plan(inputs, ctx)
        # Every intermediate table lives as partitioned Parquet under the stage's _work folder (local
        # disk or object store), so a task holds one shard or one partition, never the corpus. The
        # folder outlives a killed attempt: the next resumes after its last finished phase, and
        # within the signatures, after the last shard signed.
        work = fio.join(ctx.stage_dir, WORK_DIR)
        phases = PhaseClock(work, ctx.key, ctx.storage)
        partitions = phases.remember("partitions", c.partitions or max(
            2, 2 * int(ray.cluster_resources().get("CPU", 1)), -(-documents // c.documents_per_partition)))
        signature = ray.remote(num_cpus=c.num_cpus)(signature_task)
        signed = {path.rsplit("/", 1)[-1] for path in fio.list_files(fio.join(work, SIGNED), storage=ctx.storage)}
        unsigned = [(i, path) for i, path in enumerate(inputs) if shard_name(i) not in signed]
        if len(unsigned) < len(inputs):
            phases.notes["signatures"] = f"{len(inputs) - len(unsigned)} of {len(inputs)} shards signed before"
        phases.gather("signatures", lambda: [signature.remote(path, i, config, storage, partitions, work)
                                             for i, path in unsigned])
        counts = np.sum(phases.gather("buckets", lambda: [ray.remote(bucket_task).remote(q, partitions, work, storage)
                                                          for q in range(partitions)]), axis=0)
        phases.gather("join", lambda: [ray.remote(join_task).remote(q, partitions, c.num_perm, work, storage)
                                       for q in range(partitions)])
        counts = counts + np.sum(phases.gather("verify", lambda: [
            ray.remote(verify_task).remote(q, partitions, c.verify_at, c.num_perm, work, storage)
            for q in range(partitions)]), axis=0)
        rounds = phases.step("components", lambda: connected_components(work, storage, partitions))
        phases.gather("roots", lambda: [ray.remote(members_by_root).remote(q, partitions, work, storage)
                                        for q in range(partitions)])
        phases.gather("routes", lambda: [ray.remote(route_to_shards).remote(q, work, storage) for q in range(partitions)])
        written = phases.gather("clusters", lambda: [
            ray.remote(write_clusters).remote(fio.join(ctx.stage_dir, CLUSTERS_DIR, f"{task.name}.parquet"), i, work,
                                              storage)
            for i, task in enumerate(tasks)
        ])
        phases.release_tables()
        summary = {
            "bands": bands, "rows": rows, "num_perm": c.num_perm, "verify_at": c.verify_at, "partitions": partitions,
            "candidate_pairs": int(counts[0]), "compared_pairs": int(counts[1]), "verified_edges": int(counts[2]),
            "component_rounds": rounds, "clustered_documents": int(sum(written)),
        }
        # wall times go to the run line, not into the manifest: a rerun must write the same bytes
        self.phases = phases
        return summary

    def describe_resolved(self, resolved: dict[str, Any]) -> str | None:
        return (f"LSH {resolved['bands']} bands x {resolved['rows']} rows (num_perm {resolved['num_perm']}), verify at "
                f"{resolved['verify_at']:.2f}: {resolved['candidate_pairs']:,} candidate pairs, "
                f"{resolved['verified_edges']:,} edges, {resolved['clustered_documents']:,} documents in clusters"
                + (self.phases.note() if self.phases else ""))

    def begin_shard(self, task: ShardTask, ctx: StageContext) -> ShardClusters:
        path = fio.join(ctx.stage_dir, CLUSTERS_DIR, f"{task.name}.parquet")
        fs, p = fio.filesystem(path, ctx.storage)
        with fs.open(p, "rb") as handle:
            clusters = pq.read_table(handle)
        return ShardClusters(*(clusters.column(name).to_numpy() for name in ("row", "root", "size")))

    def process_batch(self, batch: pa.RecordBatch, shard: ShardClusters, stats: ShardStats) -> pa.RecordBatch:
        n = batch.num_rows
        c = self.config
        start = shard.next_row  # batches arrive in file order; rows are numbered within the shard
        shard.next_row += n
        ids = [str(x) for x in batch.column(c.id_column).to_pylist()] if n else []
        scores = (pc.fill_null(batch.column(c.score_column), 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
                  if c.score_column and n else None)
        nodes = node_ids(ids, scores) if n else np.zeros(0, np.uint64)
        root = nodes.copy()
        size = np.ones(n, dtype=np.int64)
        if n:
            lo, hi = np.searchsorted(shard.row, [start, start + n])
            rows = shard.row[lo:hi] - start
            root[rows] = shard.root[lo:hi]
            size[rows] = shard.size[lo:hi]
        duplicate = root != nodes
        stats.flagged["duplicate"] += int(duplicate.sum())
        return (batch.append_column("cluster_id", pa.array([f"{r:016x}" for r in root.tolist()], pa.string()))
                .append_column("cluster_size", pa.array(size, pa.int64()))
                .append_column("is_duplicate", pa.array(duplicate, pa.bool_())))
