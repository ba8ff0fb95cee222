"""Connected components of a distributed edge list: large-star / small-star (Kiveris et al. 2014).

Edges live in P hash partitions (by their first node) of a Parquet work table
(``curation.dedup.work_tables``). Every round is one shuffle of Ray tasks: each reads its
partition of the round's table, groups its directed edges by node, applies the star operation
with numpy, and writes the resulting edges to the partition of their new first node in the next
round's table. No task ever holds more than its partition, and only a two-number summary per
task passes through Ray. The result is every node's component label, the smallest node in it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.dedup.work_tables import read_parts, remove_table, write_split


def partition_of(nodes: np.ndarray, partitions: int) -> np.ndarray:
    from curation.dedup.minhash import splitmix64

    return (splitmix64(nodes ^ np.uint64(0x5BD1E995)) % np.uint64(partitions)).astype(np.int64)


def _group_min(nodes: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort directed edges by node; per node the minimum over neighbours and itself."""
    order = np.lexsort((neighbours, nodes))
    nodes, neighbours = nodes[order], neighbours[order]
    starts = np.flatnonzero(np.concatenate([[True], nodes[1:] != nodes[:-1]])) if len(nodes) else np.zeros(0, np.int64)
    minimum = np.minimum(np.minimum.reduceat(neighbours, starts), nodes[starts]) if len(nodes) else neighbours
    per_edge_min = np.repeat(minimum, np.diff(np.concatenate([starts, [len(nodes)]]))) if len(nodes) else neighbours
    return nodes, neighbours, per_edge_min


def large_star(nodes: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connect every strictly larger neighbour of u to the minimum of u's closed neighbourhood."""
    nodes, neighbours, m = _group_min(nodes, neighbours)
    keep = neighbours > nodes
    return neighbours[keep], m[keep]


def small_star(nodes: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connect u and its smaller neighbours to the minimum among them."""
    smaller = neighbours <= nodes
    nodes, neighbours = nodes[smaller], neighbours[smaller]
    nodes, neighbours, m = _group_min(nodes, neighbours)
    starts = np.flatnonzero(np.concatenate([[True], nodes[1:] != nodes[:-1]])) if len(nodes) else np.zeros(0, np.int64)
    left = np.concatenate([neighbours, nodes[starts]])
    right = np.concatenate([m, m[starts] if len(nodes) else m])
    keep = left != right
    return left[keep], right[keep]


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(a):
        return a, b
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


EDGES = "edges"  # the table the caller fills with write_edges: round 0
LABELS = "labels"  # (node, label) for every node that is not its component's label, split by label
_EDGE_ROWS = {"first": np.zeros(0, np.uint64), "second": np.zeros(0, np.uint64)}


def write_edges(work: str, storage: dict[str, Any], writer: str, first: np.ndarray, second: np.ndarray,
                partitions: int) -> None:
    """Undirected edges into the ``edges`` table, in both directions so each endpoint sees them."""
    first, second = np.concatenate([first, second]), np.concatenate([second, first])
    write_split(work, EDGES, writer, storage, partition_of(first, partitions), partitions,
                {"first": first, "second": second}, skip_empty=True)


def _star_task(kind: str, source: str, target: str, partition: int, partitions: int, work: str,
               storage: dict[str, Any]) -> np.ndarray:
    edges = read_parts(work, source, partition, storage, _EDGE_ROWS)
    operation = large_star if kind == "large" else small_star
    a, b = _unique_pairs(*operation(edges["first"], edges["second"]))
    out_first, out_second = np.concatenate([a, b]), np.concatenate([b, a])
    write_split(work, target, f"from{partition:05d}", storage, partition_of(out_first, partitions), partitions,
                {"first": out_first, "second": out_second}, skip_empty=True)
    return np.array([len(a), _digest(a, b)], dtype=np.uint64)


def _digest(a: np.ndarray, b: np.ndarray) -> int:
    from curation.dedup.minhash import splitmix64

    if not len(a):
        return 0
    with np.errstate(over="ignore"):
        return int(np.bitwise_xor.reduce(splitmix64(a * np.uint64(0x9E3779B97F4A7C15) + b)))


def connected_components(work: str, storage: dict[str, Any], partitions: int, max_rounds: int = 64) -> int:
    """Run large-star / small-star rounds on Ray over the ``edges`` table until the edge set stops
    changing; write ``labels`` (node, label) split by the label's partition, so that every
    component is whole in one partition. Each round's table is removed once read (``edges`` stays
    for a resumed attempt); a round's tables are the same whenever it runs, so an attempt that
    starts the rounds again overwrites whatever a killed one wrote. Returns the number of rounds."""
    import ray

    star = ray.remote(_star_task)
    source, rounds, previous = EDGES, 0, None
    for rounds in range(1, max_rounds + 1):
        for kind in ("large", "small"):
            target = f"{kind}{rounds:03d}"
            summaries = ray.get([star.remote(kind, source, target, p, partitions, work, storage)
                                 for p in range(partitions)])
            if source != EDGES:  # kept: a resolve killed during these rounds starts them again from it
                remove_table(work, source, storage)
            source = target
        signature = (sum(int(s[0]) for s in summaries), sum(int(s[1]) for s in summaries) % (1 << 64))
        if signature == previous:
            break
        previous = signature
    # Converged: every component is a star around its minimum. Keep (node, label) with node > label.
    ray.get([ray.remote(_labels_task).remote(source, p, partitions, work, storage) for p in range(partitions)])
    remove_table(work, source, storage)
    return rounds


def _labels_task(source: str, partition: int, partitions: int, work: str, storage: dict[str, Any]) -> None:
    edges = read_parts(work, source, partition, storage, _EDGE_ROWS)
    keep = edges["first"] > edges["second"]
    nodes, labels = edges["first"][keep], edges["second"][keep]
    order = np.lexsort((labels, nodes))
    nodes, labels = nodes[order], labels[order]
    first = np.concatenate([[True], nodes[1:] != nodes[:-1]]) if len(nodes) else np.zeros(0, bool)
    nodes, labels = nodes[first], labels[first]
    write_split(work, LABELS, f"from{partition:05d}", storage, partition_of(labels, partitions), partitions,
                {"node": nodes, "label": labels}, skip_empty=True)


def read_labels(work: str, storage: dict[str, Any], partition: int) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, labels) of one label partition: whole components."""
    rows = read_parts(work, LABELS, partition, storage, {"node": np.zeros(0, np.uint64), "label": np.zeros(0, np.uint64)})
    return rows["node"], rows["label"]
