"""Fuzzy dedup quality and speed: ours against datasketch, datatrove and rensa, same input, one run.

Corpus (from the fixtures): every web document of ../shared/data/web_negatives and every
180-word piece of WikiText in ../shared/data/hq_reference are base documents; a
seeded share of them gets 1-3 planted variants at word edit rates 1-30% (substitution,
deletion, insertion). Ground truth is the exact word-5-gram Jaccard of every pair of documents
that shares at least one shingle (normalised as our signatures normalise).

  quality     recall over pairs with J >= 0.8 that end in one cluster, and precision = share of
              pairs we put in one cluster whose J >= 0.5; ours (threshold 0.8), datasketch
              MinHashLSH(threshold=0.8, num_perm=128) + union-find, datatrove MinhashDedup
              (its default 14 x 8 bands)
  throughput  signatures per second on one core, num_perm 128: ours, datasketch (update_batch and
              bulk), datatrove MinhashDedupSignature.get_signature, rensa RMinHash

    .venv/bin/python benchmarks/bench_dedup.py quality
    .venv/bin/python benchmarks/bench_dedup.py throughput --docs 20000
    .venv/bin/python benchmarks/bench_dedup.py scale --docs 1000000 --datatrove   # + datatrove on the same corpus
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import re
import resource
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from common import MemorySampler, median_seconds, print_table, shared_data

_PUNCT = re.compile(r"[^\w\s]+|_+")


def words_of(text: str) -> list[str]:
    return [w for w in (_PUNCT.sub("", t) for t in text.lower().split()) if w]


def shingle_set(text: str, n: int = 5) -> set[str]:
    words = words_of(text)
    if 0 < len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def base_documents(data: Path) -> list[str]:
    docs = []
    for path in sorted((data / "web_negatives").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            docs += [json.loads(line)["text"] for line in handle if line.strip()]
    wiki = (data / "hq_reference" / "wikitext-2_valid.txt").read_text().split()
    docs += [" ".join(wiki[i : i + 180]) for i in range(0, len(wiki) - 180, 180)]  # ~1 KB pieces
    return [d for d in docs if len(words_of(d)) >= 30]


def mutate(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    out = []
    for word in text.split():
        roll = rng.random()
        if roll < rate / 3:
            continue  # deletion
        if roll < 2 * rate / 3:
            out.append(rng.choice(vocabulary))  # substitution
            continue
        out.append(word)
        if roll < rate:
            out.append(rng.choice(vocabulary))  # insertion
    return " ".join(out)


def planted_corpus(data: Path, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    bases = base_documents(data)
    vocabulary = [w for d in bases[:200] for w in d.split()]
    corpus = [(f"base-{i}", text) for i, text in enumerate(bases)]
    for i, text in enumerate(bases):
        if rng.random() < 0.5:
            for v in range(rng.randint(1, 3)):
                rate = rng.choice([0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3])
                corpus.append((f"var-{i}-{v}", mutate(text, rate, rng, vocabulary)))
    rng.shuffle(corpus)
    return corpus


def exact_pairs(corpus: list[tuple[str, str]]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair sharing a shingle, via an inverted index."""
    sets = [shingle_set(text) for _, text in corpus]
    postings: dict[str, list[int]] = defaultdict(list)
    for index, shingles in enumerate(sets):
        for s in shingles:
            postings[s].append(index)
    shared: Counter = Counter()
    for docs in postings.values():
        if 1 < len(docs) <= 200:
            for a in range(len(docs)):
                for b in range(a + 1, len(docs)):
                    shared[(docs[a], docs[b])] += 1
    return {(a, b): n / (len(sets[a]) + len(sets[b]) - n) for (a, b), n in shared.items()}


def cluster_pairs(labels: list) -> set[tuple[int, int]]:
    groups: dict = defaultdict(list)
    for index, label in enumerate(labels):
        if label is not None:
            groups[label].append(index)
    return {(a, b) for members in groups.values() for i, a in enumerate(members) for b in members[i + 1 :]}


def score(labels: list, truth: dict[tuple[int, int], float]) -> tuple[float, float, int]:
    pairs = cluster_pairs(labels)
    positives = [p for p, j in truth.items() if j >= 0.8]
    recall = sum(p in pairs for p in positives) / max(len(positives), 1)
    precision = sum(truth.get(p, 0.0) >= 0.5 for p in pairs) / max(len(pairs), 1)
    return recall, precision, len(pairs)


# -- the contenders ------------------------------------------------------------------------------
def ours_labels(corpus, work: Path, **options) -> list:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.core.pipeline import pipeline_from_tree
    from curation.core.runner import Runner

    inputs = []
    for i, chunk in enumerate(np.array_split(np.arange(len(corpus)), 4)):
        path = work / "ours-in" / f"part-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [corpus[j][0] for j in chunk], "text": [corpus[j][1] for j in chunk]}), path)
        inputs.append(str(path))
    tree = {"name": "bench", "stages": {"dedup": {"kind": "dedup", "url": False, **options}}}
    out = work / f"ours-out-{time.monotonic_ns()}"
    Runner(pipeline_from_tree(tree, [], None), str(out), echo=lambda m: None, flat=True).run(inputs)
    table = pa.concat_tables([pq.read_table(p, columns=["id", "cluster_id", "cluster_size"]) for p in sorted(out.glob("part-*.parquet"))])
    label = {r["id"]: (r["cluster_id"] if r["cluster_size"] > 1 else None) for r in table.to_pylist()}
    return [label[doc_id] for doc_id, _ in corpus]


def datasketch_labels(corpus) -> list:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    hashes = []
    for index, (_, text) in enumerate(corpus):
        m = MinHash(num_perm=128)
        m.update_batch([s.encode() for s in shingle_set(text)])
        lsh.insert(index, m)
        hashes.append(m)
    parent = list(range(len(corpus)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for index, m in enumerate(hashes):
        for other in lsh.query(m):
            a, b = find(index), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = [find(i) for i in range(len(corpus))]
    sizes = Counter(roots)
    return [r if sizes[r] > 1 else None for r in roots]


def datatrove_labels(corpus, work: Path) -> list:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.writers import JsonlWriter

    def reader(data=None, rank: int = 0, world_size: int = 1):
        for doc_id, text in corpus:
            yield Document(text=text, id=doc_id)

    config = MinhashConfig()
    base = work / "datatrove"
    LocalPipelineExecutor([reader, MinhashDedupSignature(str(base / "sigs"), config=config)], tasks=1,
                          logging_dir=str(base / "log1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(base / "sigs"), str(base / "buckets"), config=config)],
                          tasks=config.num_buckets, logging_dir=str(base / "log2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(base / "buckets"), str(base / "remove"), config=config,
                                               save_cluster_id=True)], tasks=1, logging_dir=str(base / "log3")).run()
    kept: dict[str, object] = {}

    def collect(data, rank: int = 0, world_size: int = 1):
        for doc in data:
            kept[doc.id] = doc.metadata.get("minhash_cluster_id")
            yield doc

    LocalPipelineExecutor([reader, MinhashDedupFilter(str(base / "remove"), load_cluster_ids=True,
                                                      exclusion_writer=JsonlWriter(str(base / "removed"))), collect],
                          tasks=1, logging_dir=str(base / "log4")).run()
    labels = dict(kept)
    for path in (base / "removed").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                row = json.loads(line)
                labels[row["id"]] = row.get("metadata", {}).get("minhash_cluster_id")
    # -1 marks "in no cluster"
    return [None if labels.get(doc_id) in (None, -1) else labels.get(doc_id) for doc_id, _ in corpus]


def run_quality(args) -> None:
    import ray

    corpus = planted_corpus(shared_data(), args.seed)
    truth = exact_pairs(corpus)
    print(f"corpus: {len(corpus)} documents; {len(truth):,} pairs share a shingle, "
          f"{sum(j >= 0.8 for j in truth.values()):,} with J >= 0.8, {sum(j >= 0.5 for j in truth.values()):,} with J >= 0.5")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, labels in (
            ("ours (threshold 0.8, num_perm 128)", ours_labels(corpus, work, threshold=0.8)),
            ("datasketch MinHashLSH(0.8, 128) + union-find", datasketch_labels(corpus)),
            ("datatrove MinhashDedup (14 x 8)", datatrove_labels(corpus, work)),
        ):
            recall, precision, pairs = score(labels, truth)
            rows.append((name, recall, precision, pairs))
    ray.shutdown()
    print("\ndedup quality (recall: pairs J>=0.8 in one cluster; precision: clustered pairs with J>=0.5)")
    for name, recall, precision, pairs in rows:
        print(f"  {name:<48} recall {recall:.3f}  precision {precision:.3f}  ({pairs:,} clustered pairs)")


def run_throughput(args) -> None:
    import pyarrow as pa

    from curation.dedup.minhash import ShingleSpec, shingle_hashes, signatures

    bases = base_documents(shared_data())
    rng = random.Random(args.seed)
    docs = [bases[rng.randrange(len(bases))][:1100] for _ in range(args.docs)]
    array = pa.array(docs)
    n = len(docs)

    def ours():
        hashes, offsets = shingle_hashes(array, ShingleSpec())
        return signatures(hashes, offsets, 128)

    def datasketch_batch():
        from datasketch import MinHash

        for d in docs:
            m = MinHash(num_perm=128)
            m.update_batch([s.encode() for s in shingle_set(d)])

    def datasketch_bulk():
        from datasketch import MinHash

        MinHash.bulk([[s.encode() for s in shingle_set(d)] for d in docs], num_perm=128)

    def datatrove():
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        step = MinhashDedupSignature(tempfile.mkdtemp(), config=MinhashConfig(num_buckets=16, hashes_per_bucket=8))
        for d in docs:
            step.get_signature(step.get_shingles(d))

    def rensa_minhash():
        import rensa

        for d in docs:
            m = rensa.RMinHash(num_perm=128, seed=1)
            m.update(list(shingle_set(d)))
            m.digest()

    results = {}
    for name, fn in (("ours (numpy, per batch)", ours), ("datasketch update_batch", datasketch_batch),
                     ("datasketch bulk", datasketch_bulk), ("datatrove MinhashDedupSignature", datatrove),
                     ("rensa RMinHash", rensa_minhash)):
        seconds, _ = median_seconds(fn, args.repeats)
        results[name] = n / seconds
    ours_rate = results["ours (numpy, per batch)"]
    rows = [(name, rate, "" if name.startswith("ours") else f"ours/peer = {ours_rate / rate:.2f}x") for name, rate in results.items()]
    print_table(f"MinHash signatures, num_perm 128, word 5-grams, {n} docs of ~1 KB, one core "
                f"(median of {args.repeats}; peers include their Python shingling)", rows, "docs/s")


def run_scale(args) -> None:
    """End-to-end dedup of N ~1 KB documents on this machine: wall time and peak memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from curation.core.pipeline import pipeline_from_tree
    from curation.core.runner import Runner

    bases = base_documents(shared_data())
    vocabulary = np.array(sorted({w for d in bases for w in d.split() if len(w) <= 20}), dtype=object)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        work = Path(tmp)
        shards = max(1, args.docs // 50_000)
        start = time.perf_counter()
        # Unique documents of 180 words drawn from the fixtures' vocabulary; then 10% exact copies
        # and 10% near copies (2-10% of words replaced) of earlier documents in the same shard.
        for s in range(shards):
            count = args.docs // shards
            words = vocabulary[rng.integers(0, len(vocabulary), size=(count, 180))]
            kind = rng.random(count)
            source = (rng.random(count) * np.arange(count)).astype(np.int64)
            for i in np.flatnonzero(kind >= 0.8):
                words[i] = words[source[i]]
                if kind[i] >= 0.9:
                    edits = rng.random(180) < rng.uniform(0.02, 0.1)
                    words[i, edits] = vocabulary[rng.integers(0, len(vocabulary), size=int(edits.sum()))]
            texts = [" ".join(row) for row in words.tolist()]
            ids = [f"d{s}-{i}" for i in range(count)]
            pq.write_table(pa.table({"id": ids, "text": texts}), work / f"part-{s:05d}.parquet")
        print(f"built {args.docs:,} docs in {shards} shards in {time.perf_counter() - start:.0f}s")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        tree = {"name": "scale", "stages": {"dedup": {"kind": "dedup", "url": False}}}
        sampler = MemorySampler(work / "out" / "_work")
        sampler.start()
        start = time.perf_counter()
        outcome = Runner(pipeline_from_tree(tree, [], None), str(work / "out"), flat=True).run(
            sorted(str(p) for p in work.glob("part-*.parquet")))
        wall = time.perf_counter() - start
        sampler.finish()
        from ray._private.internal_api import memory_summary

        spilled = re.search(r"Spilled (\d+) MiB", memory_summary(stats_only=True))
        ray.shutdown()
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        resolved = outcome[-1].manifest.get("resolved", {})
        duplicates = sum(pq.read_table(p, columns=["is_duplicate"]).column(0).to_numpy().sum()
                         for p in (work / "out").glob("part-*.parquet"))
        print(f"dedup of {args.docs:,} docs: {wall:.0f}s wall, {args.docs / wall:,.0f} docs/s on 2 cores; "
              f"peak machine memory above baseline {sampler.peak_gb:.2f} GB (all Ray processes and the object store), "
              f"driver peak RSS {peak_self:.2f} GB; object store spilled {spilled.group(1) if spilled else 0} MiB; "
              f"peak size of the _work tables {sampler.peak_disk_gb:.2f} GB; partitions {resolved.get('partitions')}; "
              f"{duplicates:,} duplicates flagged")
        if args.datatrove:
            seconds, peak, removed = datatrove_scale(work, shards)
            print(f"datatrove MinhashDedup (signatures, 14 x 8 buckets, cluster, filter; 2 workers) on the same "
                  f"{args.docs:,} docs: {seconds:.0f}s wall, {args.docs / seconds:,.0f} docs/s; peak machine memory "
                  f"above baseline {peak:.2f} GB; {removed:,} documents removed\n"
                  f"ours/datatrove: {seconds / wall:.2f}x the speed, {sampler.peak_gb / max(peak, 1e-9):.2f}x the memory")


def datatrove_scale(work: Path, shards: int) -> tuple[float, float, int]:
    """datatrove's four MinHash steps on the scale corpus, as its docs run them locally."""
    from datatrove.pipeline.readers import ParquetReader
    from datatrove_peer import minhash_steps, run_steps

    def reader():
        return ParquetReader(str(work), glob_pattern="part-*.parquet", text_key="text", id_key="id")

    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    rows = run_steps(minhash_steps(reader, work / "datatrove", shards, 2), work / "datatrove" / "logs")
    seconds = time.perf_counter() - start
    sampler.finish()
    print("datatrove steps: " + ", ".join(f"{r['stage']} {r['seconds']:.0f}s" for r in rows))
    return seconds, sampler.peak_gb, rows[-1]["dropped"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "throughput", "scale"])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="scratch directory for scale runs")
    parser.add_argument("--datatrove", action="store_true", help="scale: also run datatrove's MinHash dedup on the corpus")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logging.getLogger().setLevel(logging.WARNING)
    {"quality": run_quality, "throughput": run_throughput, "scale": run_scale}[args.what](args)


if __name__ == "__main__":
    main()
