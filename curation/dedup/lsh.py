"""LSH banding and candidate verification.

Band keys are 64-bit hashes of each band's rows. Candidates that share a band key are verified
by estimated Jaccard on compact b-bit signatures (the low 8 bits of every MinHash value, with
the chance agreement of 1/256 corrected for), so bands can be tuned below the threshold for
recall while only verified pairs become edges.
"""

from __future__ import annotations

import numpy as np

from curation.dedup.minhash import splitmix64

BBIT_CHANCE = 1.0 / 256.0


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 keys; band b hashes rows [b*rows, (b+1)*rows)."""
    n = signatures.shape[0]
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.full(n, np.uint64(b + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for r in range(rows):
                h = splitmix64(h ^ signatures[:, b * rows + r].astype(np.uint64))
            keys[:, b] = h
    return keys


def bbit(signatures: np.ndarray) -> np.ndarray:
    return (signatures & np.uint32(0xFF)).astype(np.uint8)


def estimated_jaccard_bbit(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    agree = (left == right).mean(axis=-1)
    return np.clip((agree - BBIT_CHANCE) / (1.0 - BBIT_CHANCE), 0.0, 1.0)


def verify_group(nodes: np.ndarray, sketches: np.ndarray | None, threshold: float,
                 max_representatives: int = 64) -> tuple[np.ndarray, np.ndarray, int]:
    """Verified edges among documents sharing one band key.

    Small groups compare all pairs. In large groups (boilerplate pages, mass duplicates) each
    document is compared with up to ``max_representatives`` earlier unmatched documents (in node
    order) and attached to the first that matches, which keeps the work linear.
    Returns (sources, targets, pairs compared).
    """
    order = np.argsort(nodes, kind="stable")
    nodes = nodes[order]
    if sketches is None:  # exact keys (URL): membership is the duplicate relation
        return np.repeat(nodes[0], len(nodes) - 1), nodes[1:], 0
    sketches = sketches[order]
    if len(nodes) <= max_representatives:
        i, j = np.triu_indices(len(nodes), k=1)
        similar = estimated_jaccard_bbit(sketches[i], sketches[j]) >= threshold
        return nodes[i[similar]], nodes[j[similar]], len(i)
    sources, targets, compared = [], [], 0
    representatives: list[int] = []
    for k in range(len(nodes)):
        if representatives:
            scores = estimated_jaccard_bbit(sketches[representatives], sketches[k][None, :])
            compared += len(representatives)
            hits = np.flatnonzero(scores >= threshold)
            if len(hits):
                sources.append(nodes[representatives[hits[0]]])
                targets.append(nodes[k])
                continue
        if len(representatives) < max_representatives:
            representatives.append(k)
    return np.array(sources, dtype=np.uint64), np.array(targets, dtype=np.uint64), compared
