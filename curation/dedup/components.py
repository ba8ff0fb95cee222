"""Connected components of a distributed edge list: large-star / small-star (Kiveris et al. 2014).

Edges live in P hash partitions (by their first node). Every round is one shuffle of Ray tasks:
each partition groups its directed edges by node, applies the star operation with numpy, and
sends the resulting edges to the partition of their new first node. No task ever holds more
than its partition; the result is every node's component label, the smallest node in it.
"""

from __future__ import annotations

import numpy as np


def partition_of(nodes: np.ndarray, partitions: int) -> np.ndarray:
    from curation.dedup.minhash import splitmix64

    return (splitmix64(nodes ^ np.uint64(0x5BD1E995)) % np.uint64(partitions)).astype(np.int64)


def split_by_partition(first: np.ndarray, second: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Edges (first, second) as one (2, k) array per destination partition of ``first``."""
    destination = partition_of(first, partitions)
    order = np.argsort(destination, kind="stable")
    first, second, destination = first[order], second[order], destination[order]
    bounds = np.searchsorted(destination, np.arange(partitions + 1))
    return [np.stack([first[bounds[p] : bounds[p + 1]], second[bounds[p] : bounds[p + 1]]]) for p in range(partitions)]


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


def _star_task(kind: str, partitions: int, *blocks: np.ndarray) -> list[np.ndarray]:
    edges = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.uint64)
    first, second = edges[0], edges[1]
    operation = large_star if kind == "large" else small_star
    a, b = operation(first, second)
    a, b = _unique_pairs(a, b)
    # Every undirected edge travels in both directions so each endpoint sees it.
    out_first = np.concatenate([a, b])
    out_second = np.concatenate([b, a])
    return [*split_by_partition(out_first, out_second, partitions), np.array([len(a), _digest(a, b)], dtype=np.uint64)]


def _digest(a: np.ndarray, b: np.ndarray) -> int:
    from curation.dedup.minhash import splitmix64

    if not len(a):
        return 0
    with np.errstate(over="ignore"):
        return int(np.bitwise_xor.reduce(splitmix64(a * np.uint64(0x9E3779B97F4A7C15) + b)))


def connected_components(edge_blocks: list, partitions: int, max_rounds: int = 64) -> list:
    """Run large-star / small-star rounds on Ray until the edge set stops changing.

    ``edge_blocks``: object refs (or arrays), each a (2, k) uint64 array of undirected edges.
    Returns refs of P arrays (2, k): (node, component label) for every non-root node.
    """
    import ray

    star = ray.remote(num_returns=partitions + 1)(_star_task)
    def both_directions(block: np.ndarray):
        parts = split_by_partition(np.concatenate([block[0], block[1]]), np.concatenate([block[1], block[0]]), partitions)
        return parts if partitions > 1 else parts[0]

    split = ray.remote(num_returns=partitions)(both_directions)
    shuffled = [split.remote(block) for block in edge_blocks]
    if partitions == 1:
        shuffled = [[s] for s in shuffled]
    by_partition = [[s[p] for s in shuffled] for p in range(partitions)]
    previous = None
    for _ in range(max_rounds):
        for kind in ("large", "small"):
            results = [star.remote(kind, partitions, *by_partition[p]) for p in range(partitions)]
            by_partition = [[r[q] for r in results] for q in range(partitions)]
            summaries = ray.get([r[partitions] for r in results])
        signature = (sum(int(s[0]) for s in summaries), sum(int(s[1]) for s in summaries) % (1 << 64))
        if signature == previous:
            break
        previous = signature
    # Converged: every component is a star around its minimum. Keep (node, label) with node > label.
    finish = ray.remote(lambda *blocks: _labels(blocks))
    return [finish.remote(*by_partition[p]) for p in range(partitions)]


def _labels(blocks) -> np.ndarray:
    edges = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.uint64)
    keep = edges[0] > edges[1]
    nodes, labels = edges[0][keep], edges[1][keep]
    if not len(nodes):
        return np.zeros((2, 0), np.uint64)
    order = np.lexsort((labels, nodes))
    nodes, labels = nodes[order], labels[order]
    first = np.concatenate([[True], nodes[1:] != nodes[:-1]])
    return np.stack([nodes[first], labels[first]])
