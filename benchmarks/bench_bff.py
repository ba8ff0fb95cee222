"""DCLM's paragraph + document dedup (BFF, ``curation/dedup/bff.py``) against its peers, on one core:

- Dolma's deduper (``dolma dedupe``, Rust; AI2's successor of the BFF that DCLM forked), paragraphs
  by word 13-gram overlap at 0.8, called through its extension module (the wheel is installed into
  a scratch folder without its Python dependencies: ``--dolma-wheel``, or ``pip download dolma``);
- datatrove's ``SingleBloomFilter`` (Python; whole documents by 13-gram overlap at 0.8).

Corpus: the fixtures' real web text (Dolma's Common Crawl samples, with their line structure) and
WikiText pieces, cycled to ``--docs`` with 30% of the words replaced in each cycled copy (so almost
every 13-gram is new), plus planted copies: exact (5%), near (2% of words changed, 5%), and pages
that end with another page's paragraph (10%, the boilerplate BFF cuts).

    .venv/bin/python benchmarks/bench_bff.py --docs 20000 --repeats 3

``--filter-saves 1e8 4e8`` times instead what the ordered pass's checkpoint costs: saving and
loading the filter for that many n-grams (at 1% false positives) in a work folder on local disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import importlib.util
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dedup import base_documents, mutate  # noqa: E402
from common import median_seconds, print_table, shared_data  # noqa: E402

from curation.core import io as fio  # noqa: E402
from curation.dedup.bff import BffConfig, BloomFilter, _resume_pass, _save_pass, decide_shards, hash_shard  # noqa: E402


def corpus(docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    bases = base_documents(shared_data())
    vocabulary = [w for d in bases[:200] for w in d.split()]
    out: list[str] = []
    while len(out) < docs:
        roll = rng.random()
        if out and roll < 0.05:
            out.append(rng.choice(out))
        elif out and roll < 0.10:
            out.append("\n".join(mutate(line, 0.02, rng, vocabulary) for line in rng.choice(out).split("\n")))
        else:
            base = bases[len(out) % len(bases)]
            text = base if len(out) < len(bases) else "\n".join(mutate(line, 0.3, rng, vocabulary)
                                                                 for line in base.split("\n"))
            if out and roll < 0.20:
                text += "\n" + max(rng.choice(out).split("\n"), key=len)
            out.append(text)
    return out


def ours(source: Path, work: Path) -> tuple[float, float, dict]:
    """Seconds hashing (the parallel part), seconds deciding (the sequential part), totals."""
    import time

    config, storage = dataclasses.asdict(BffConfig()), dataclasses.asdict(fio.Storage())
    start = time.perf_counter()
    ngrams = hash_shard(str(source), str(work / "hashed.parquet"), config, storage)
    hashed = time.perf_counter()
    totals = decide_shards([str(work / "hashed.parquet")], [str(work / "decided.parquet")], ngrams, config, storage)
    return hashed - start, time.perf_counter() - hashed, totals


def load_dolma(wheel: str | None, scratch: Path):
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "dolma", "-d", str(scratch)],
                       check=True)
        wheel = next(iter(scratch.glob("dolma-*.whl")))
    subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), str(scratch / "site")], check=True)
    library = glob.glob(str(scratch / "site" / "dolma" / "dolma.*.so"))[0]
    spec = importlib.util.spec_from_file_location("dolma", library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dolma(module, texts: list[str], work: Path, ngrams: int) -> int:
    """Paragraphs Dolma flags (its attributes file), after one run over the corpus in one process."""
    documents = work / "documents"
    documents.mkdir(parents=True, exist_ok=True)
    with gzip.open(documents / "part.jsonl.gz", "wt") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": str(i), "text": text, "source": "bench"}) + "\n")
    config = {
        "documents": [str(documents / "*.jsonl.gz")],
        "work_dir": {"input": str(work / "in"), "output": str(work / "out")},
        "dedupe": {"name": "bff", "paragraphs": {"attribute_name": "bff_paragraphs", "by_ngram": {
            "ngram_length": 13, "stride": 0, "overlap_threshold": 0.8, "skip_short_paragraphs": True}},
            "skip_empty": False, "min_length": 0, "min_words": 0, "num_partitions": 1, "partition_index": 0,
            "file_partition": False, "document_dir": "documents"},
        "bloom_filter": {"file": str(work / "bloom.bin"), "read_only": False, "size_in_bytes": 0,
                         "estimated_doc_count": ngrams, "desired_false_positive_rate": 0.01},
        "processes": 1, "is_s3_volume": False, "compression": {"input": None, "output": None},
    }
    module.deduper_entrypoint(json.dumps(config))
    with gzip.open(work / "attributes" / "bff" / "part.jsonl.gz", "rt") as handle:
        return sum(len(json.loads(line)["attributes"]["bff_paragraphs"]) for line in handle)


def datatrove(texts: list[str], work: Path, ngrams: int) -> int:
    """Documents datatrove's document-level Bloom filter drops."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.bloom_filter import BloomFilterConfig, SingleBloomFilter

    # 1% false positives at k = 7, as our filter is sized. datatrove masks positions with ``& m_bytes``
    # (not ``% m``), so only m_bytes = 2^n - 1 reaches every position it can (2^n bits: an eighth of its
    # bytes); and its default k takes the size in bits for bytes, so k is given
    m_bytes = 2 ** math.ceil(math.log2(ngrams * 9.6 + 64)) - 1
    step = SingleBloomFilter(str(work / "dt"), BloomFilterConfig(m_bytes=m_bytes, k=7, expected_elements=ngrams,
                                                                 duplicate_threshold=0.8, n_grams=13))
    kept = sum(1 for _ in step.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), 0, 1))
    return len(texts) - kept


def filter_saves(ngram_counts: list[float], repeats: int) -> None:
    """Seconds to save and to load the ordered pass's filter, median of ``repeats``."""
    for count in ngram_counts:
        bloom = BloomFilter(int(count), 0.01)
        bloom.words[::7] = 0x5A5A5A5A  # not all zeros: the bytes are written, not skipped
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = str(Path(tmp) / "slice-0000")
            save, _ = median_seconds(lambda: _save_pass(checkpoint, bloom, ["s"], 1, {}, fio.Storage()), repeats)  # noqa: B023
            loaded = BloomFilter(int(count), 0.01)
            load, taken = median_seconds(lambda: _resume_pass(checkpoint, loaded, ["s"], fio.Storage()), repeats)  # noqa: B023
            assert taken[0] == 1 and (loaded.words == bloom.words).all()
        print(f"{count:,.0f} n-grams: filter {bloom.words.nbytes / 2**20:,.0f} MiB, save {save:.2f} s, load {load:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dolma-wheel", help="a downloaded dolma wheel (default: pip download dolma)")
    parser.add_argument("--filter-saves", type=float, nargs="+", metavar="NGRAMS",
                        help="time saving and loading the ordered pass's filter for these n-gram counts instead")
    args = parser.parse_args()
    if args.filter_saves:
        filter_saves(args.filter_saves, args.repeats)
        return
    texts = corpus(args.docs)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(texts):,} documents, {megabytes:.1f} MB, "
          f"{sum(t.count(chr(10)) + 1 for t in texts):,} paragraphs")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        runs: list[tuple[float, float, dict]] = []
        source = scratch / "docs.parquet"
        pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), source)

        def run_ours() -> None:
            work = scratch / f"ours-{len(runs)}"
            work.mkdir()
            runs.append(ours(source, work))

        ours_s, _ = median_seconds(run_ours, args.repeats)
        hashing = sorted(r[0] for r in runs)[len(runs) // 2]
        deciding = sorted(r[1] for r in runs)[len(runs) // 2]
        totals = runs[0][2]
        ngrams = sum(len(t.split()) for t in texts)  # an upper bound for the peers' sizing, as BFF asks for
        module = load_dolma(args.dolma_wheel, scratch / "dolma")
        flagged: list[int] = []

        def run_dolma() -> None:
            work = scratch / f"dolma-{len(flagged)}"
            flagged.append(dolma(module, texts, work, ngrams))

        dolma_s, _ = median_seconds(run_dolma, args.repeats)
        dropped: list[int] = []

        def run_datatrove() -> None:
            work = scratch / f"dt-{len(dropped)}"
            dropped.append(datatrove(texts, work, ngrams))

        datatrove_s, _ = median_seconds(run_datatrove, args.repeats)
    n = len(texts)
    print(f"ours: {totals['documents_removed']:,} documents removed whole, {totals['paragraphs_removed']:,} paragraphs "
          f"({totals['documents_edited']:,} documents edited); Dolma flags {flagged[0]:,} paragraphs; datatrove drops "
          f"{dropped[0]:,} documents")
    print_table("BFF dedup, one core", [
        ("ours: hash (parallel per shard) + decide (one pass)", n / ours_s, ""),
        ("  ours: hashing alone", n / hashing, ""),
        ("  ours: deciding alone", n / deciding, ""),
        ("Dolma dedupe, paragraphs by 13-gram (Rust, 1 process)", n / dolma_s, f"ours {dolma_s / ours_s:.2f}x"),
        ("datatrove SingleBloomFilter, documents (Python)", n / datatrove_s, f"ours {datatrove_s / ours_s:.2f}x"),
    ], "docs/s")


if __name__ == "__main__":
    main()
