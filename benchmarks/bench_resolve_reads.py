"""What the driver reads and holds while a stage resolves over the whole corpus, before and after
reading only what it needs:

- the ``quality`` stage's negatives drawn from its own input (DCLM's recipe; ``train.negatives: []``):
  ``pool_sample`` reads the drawn rows a batch at a time, against the previous form (every text of
  the pool read into one list, then ``random.sample``);
- the ``select`` stage's quantile pool: the score and prefilter columns a batch at a time, against
  the previous form (every shard read whole, text included).

Each form runs in a fresh process over the same generated shards (documents of ~``--words`` words
with score and flag columns, as the quality stage writes them); the table gives wall seconds
(median of ``--repeats``) and the process's peak resident memory.

    .venv/bin/python -u benchmarks/bench_resolve_reads.py --docs 400000 --shards 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_shards(folder: Path, docs: int, shards: int, words: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(5000)])
    paths = []
    for shard, rows in enumerate(np.array_split(np.arange(docs), shards)):
        n = len(rows)
        texts = [" ".join(vocabulary[rng.integers(0, len(vocabulary), words)]) for _ in range(n)]
        table = pa.table({"id": [f"d{i}" for i in rows], "text": texts, "quality_fasttext": rng.random(n),
                          "filter_keep": rng.random(n) > 0.3, "bff_keep": rng.random(n) > 0.05,
                          "filter_reason": pa.nulls(n, pa.string()), "is_duplicate": rng.random(n) > 0.9,
                          "contaminated": np.zeros(n, dtype=bool)})
        paths.append(str(folder / f"part-{shard:05d}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def run_form(form: str, paths: list[str]) -> dict[str, float]:
    """One form in this process: wall seconds and a digest of what it returned."""
    from curation.core.io import Storage

    start = time.perf_counter()
    if form == "pool_sample":
        from curation.classifiers.stage import pool_sample

        result = pool_sample(paths, Storage(), "text", 20000, 0)
        digest = len(result)
    elif form == "pool_sample_whole":  # the form before: the pool's every text in one list
        texts: list[str] = []
        for path in paths:
            texts += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        result = random.Random(0).sample(texts, min(20000, len(texts)))
        digest = len(result)
    else:
        from curation.core.stage import StageContext
        from curation.filters.select import SelectConfig, SelectStage

        stage = SelectStage(SelectConfig(require=["filter_keep", "bff_keep"], score="quality_fasttext", top_percent=10))
        ctx = StageContext(run_root="/tmp", stage_name="select", stage_dir="/tmp/select", key="k")
        if form == "select_whole":  # the form before: every shard read whole, text included
            scores = []
            for path in paths:
                table = pq.read_table(path)
                keep, _ = stage._prefilter(table)
                scores.append(table.column("quality_fasttext").to_numpy()[keep])
            digest = float(np.quantile(np.concatenate(scores), 0.9, method="higher"))
        else:
            digest = stage.resolve(paths, ctx)["thresholds"]["*"]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=400_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--form", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.form:  # a child process: one form, one JSON line
        print(json.dumps(run_form(args.form, json.loads(args.paths))))
        return
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_shards(Path(scratch), args.docs, args.shards, args.words)
        size = sum(Path(p).stat().st_size for p in paths) / 2**20
        print(f"{args.docs:,} documents of {args.words} words in {args.shards} shards, {size:,.0f} MiB of Parquet")
        rows = []
        for task, ours, before in (("quality: pool sample of 20,000", "pool_sample", "pool_sample_whole"),
                                   ("select: top 10% threshold", "select", "select_whole")):
            figures = {}
            for form in (ours, before):
                runs = [json.loads(subprocess.run([sys.executable, __file__, "--form", form, "--paths", json.dumps(paths)],
                                                  check=True, capture_output=True, text=True).stdout)
                        for _ in range(args.repeats)]
                figures[form] = {"seconds": float(np.median([r["seconds"] for r in runs])),
                                 "peak": max(r["peak_rss_mb"] for r in runs), "digest": runs[0]["digest"]}
            assert figures[ours]["digest"] == figures[before]["digest"], (task, figures)  # the same answer
            rows.append([task, f"{figures[ours]['seconds']:.2f}", f"{figures[before]['seconds']:.2f}",
                         f"{figures[before]['seconds'] / figures[ours]['seconds']:.1f}x",
                         f"{figures[ours]['peak']:,.0f}", f"{figures[before]['peak']:,.0f}"])
        header = ["resolve step", "ours s", "before s", "speed-up", "ours peak RSS MB", "before peak RSS MB"]
        for line in (header, ["---"] * len(header), *rows):
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
