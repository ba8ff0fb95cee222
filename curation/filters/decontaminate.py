"""Decontamination: flag documents that share long word n-grams (13 by default, as GPT-3 and
OLMo) with evaluation sets. Attributes ``decontam_ngrams`` (how many of the document's n-grams
occur in an evaluation set), ``decontam_sets`` and ``contaminated``; selection decides.

Every string field of every evaluation record with at least ``ngram`` words contributes its
n-grams, hashed exactly as MinHash shingles are (so normalisation matches), into one sorted
array; documents are checked with a vectorised binary search.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.core import io as fio
from curation.core.config import resolve_data_path
from curation.core.errors import ConfigError
from curation.core.stage import BatchStage, ShardStats, StageContext, register
from curation.dedup.minhash import ShingleSpec, shingle_hashes


@dataclass
class DecontaminateConfig:
    eval_sets: list[str] = field(default_factory=lambda: [
        "${CURATION_DATA:-../shared/data}/eval/**/*.jsonl", "${CURATION_DATA:-../shared/data}/eval/**/*.jsonl.gz"])
    ngram: int = 13
    min_matches: int = 1  # contaminated when at least this many n-grams match
    text_column: str = "text"
    num_cpus: float = 1.0


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def eval_files(patterns: list[str]) -> list[str]:
    files: set[str] = set()
    for pattern in patterns:
        pattern = resolve_data_path(pattern)
        files.update(os.path.abspath(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not files:
        raise ConfigError(f"decontaminate: no evaluation files match {patterns}")
    return sorted(files)


def eval_set_name(path: str) -> str:
    return os.path.basename(path).removesuffix(".gz").removesuffix(".jsonl")


class EvalIndex:
    """Sorted n-gram hashes of all evaluation sets, with the set each came from."""

    def __init__(self, files: list[str], ngram: int):
        self.names = [eval_set_name(f) for f in files]
        hashes, owners = [], []
        for owner, path in enumerate(files):
            opener = gzip.open if path.endswith(".gz") else open
            texts: list[str] = []
            with opener(path, "rt", encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        texts += [t for t in _strings(json.loads(line)) if len(t.split()) >= ngram]
            h, _ = shingle_hashes(pa.array(texts, pa.string()), ShingleSpec(ngram), whole_if_short=False)
            hashes.append(h)
            owners.append(np.full(len(h), owner, dtype=np.int32))
        all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        all_owners = np.concatenate(owners) if owners else np.zeros(0, np.int32)
        order = np.lexsort((all_owners, all_hashes))
        self.hashes, self.owners = all_hashes[order], all_owners[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matched mask, owning set index or -1) for each hash."""
        if not len(self.hashes):
            return np.zeros(len(hashes), bool), np.full(len(hashes), -1)
        position = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        matched = self.hashes[position] == hashes
        return matched, np.where(matched, self.owners[position], -1)


@register("decontaminate")
class DecontaminateStage(BatchStage):
    Config = DecontaminateConfig

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        files = eval_files(self.config.eval_sets)
        return {"eval_files": {eval_set_name(f): {"path": f, "sha256": fio.sha256_file(f)} for f in files}}

    def setup(self, ctx: StageContext) -> None:
        self.index = EvalIndex([v["path"] for v in ctx.resolved["eval_files"].values()], self.config.ngram)

    def process_batch(self, batch: pa.RecordBatch, state: None, stats: ShardStats) -> pa.RecordBatch:
        n = batch.num_rows
        index = self.index
        counts = np.zeros(n, dtype=np.int64)
        sets: list[list[str]] = [[] for _ in range(n)]
        if n:
            hashes, offsets = shingle_hashes(batch.column(self.config.text_column), ShingleSpec(self.config.ngram),
                                             whole_if_short=False)
            matched, owners = index.lookup(hashes)
            doc_of = np.repeat(np.arange(n), np.diff(offsets))
            counts = np.bincount(doc_of[matched], minlength=n)
            per_set: Counter = Counter()
            for doc, owner in sorted(set(zip(doc_of[matched].tolist(), owners[matched].tolist(), strict=True))):
                sets[doc].append(index.names[owner])
            contaminated = counts >= self.config.min_matches
            for doc in np.flatnonzero(contaminated):
                per_set.update(sets[doc])
            if contaminated.any():
                stats.flagged["contaminated"] += int(contaminated.sum())
            for name, value in per_set.items():
                stats.extra[f"contaminated:{name}"] = stats.extra.get(f"contaminated:{name}", 0.0) + value
        return (batch.append_column("decontam_ngrams", pa.array(counts, pa.int32()))
                .append_column("decontam_sets", pa.array(sets, pa.list_(pa.string())))
                .append_column("contaminated", pa.array(counts >= self.config.min_matches, pa.bool_())))

    def summary(self, manifest: dict[str, Any]) -> list[str]:
        totals = manifest["totals"]
        sets = sorted(manifest.get("resolved", {}).get("eval_files", {}))
        out = ["### Decontamination", "", f"{totals.get('flagged', {}).get('contaminated', 0):,} documents share "
               f"{manifest['config']['ngram']}-grams with evaluation sets ({', '.join(sets)}):", ""]
        out += [f"- {k.removeprefix('contaminated:')}: {int(v):,}" for k, v in sorted(totals.get("extra", {}).items())
                if k.startswith("contaminated:")]
        return out + [""]
