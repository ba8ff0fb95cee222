"""The embedding scorer's CPU side: texts to padded id batches for MiniLM (256 tokens), against the
Rust tokenizer called directly on the same texts (`tokenizers` `encode_batch_fast`, truncation on,
as a straightforward scorer calls it). On a GPU this side bounds the scorer (issue 12).

Per core (one Rust thread, RAYON_NUM_THREADS=1), then across the machine's cores: our worker
processes (`SentenceEncoder(tokenizer_processes=N)`) against the tokenizer's own Rust threads.
Two corpora: generated English (the GPU check's documents, all plain ASCII) and the fixtures' real
web and reference text (Dolma CC, DCLM's labelled pages, WikiText, GPTeacher), repeated.

    .venv/bin/python benchmarks/bench_embed_tokenize.py [--docs 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers starts its thread pool

from common import median_seconds, print_table, shared_data  # noqa: E402


def corpora(docs: int) -> dict[str, list[str]]:
    from curation.classifiers.references import expand, read_texts
    from gpu_check import documents

    data = shared_data()
    real = [t for pattern in ("web_negatives/*", "quality_dev/*.jsonl", "hq_reference/*")
            for path in expand([str(data / pattern)]) for t in read_texts(path) if t.strip()]
    real = (real * (docs // len(real) + 1))[:docs]
    return {"generated English": documents(docs), "fixture web and reference text": real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-cores", action="store_true", help=argparse.SUPPRESS)  # the second half, in a child
    args = parser.parse_args()

    from curation.classifiers.encoder import SentenceEncoder, TokenBatcher, available_cpus
    from curation.classifiers.models import default_embedding_model
    from tokenizers import Tokenizer

    tokenizer_json = Tokenizer.from_file(os.path.join(default_embedding_model(), "tokenizer.json")).to_str()
    batcher = TokenBatcher(tokenizer_json, 256, 0, 65536)
    plain = TokenBatcher(tokenizer_json, 256, 0, 65536)
    plain.shortcut = None  # every text through the normalizer
    chunk = SentenceEncoder.CHUNK_DOCS
    cores = available_cpus()
    for name, texts in corpora(args.docs).items():
        shortcut = batcher.shortcut
        taken = sum(shortcut[1].search(t) is None for t in texts) / len(texts)
        starts = range(0, len(texts), chunk)

        chunks = [texts[s : s + chunk] for s in starts]

        def direct(chunks: list[list[str]] = chunks) -> object:
            return [[e.ids for e in batcher.tokenizer.encode_batch_fast(c)] for c in chunks]

        def ours(b: TokenBatcher, chunks: list[list[str]] = chunks, starts: range = starts) -> object:
            return [b.batches(c, s) for c, s in zip(chunks, starts, strict=True)]

        if not args.all_cores:
            peer, _ = median_seconds(direct, args.repeats)
            no_shortcut, _ = median_seconds(lambda: ours(plain), args.repeats)
            mine, _ = median_seconds(lambda: ours(batcher), args.repeats)
            print_table(f"{name}: {len(texts):,} documents, one core; {taken:.0%} take the normalizer shortcut", [
                ("tokenizers encode_batch_fast, whole texts, truncation", len(texts) / peer, ""),
                ("ours, prefix only, every text normalized", len(texts) / no_shortcut, f"{peer / no_shortcut:.2f}x"),
                ("ours, prefix only, normalizer shortcut", len(texts) / mine, f"{peer / mine:.2f}x"),
            ], "docs/s")
            continue
        from curation.classifiers.encoder import _ragged_in_process, tokenizer_process_pool

        peer, _ = median_seconds(direct, args.repeats)
        with tokenizer_process_pool(batcher, cores) as pool:
            list(pool.map(_ragged_in_process, chunks[:cores]))  # warm-up
            mine, _ = median_seconds(lambda c=chunks: list(pool.map(_ragged_in_process, c)), args.repeats)
        print_table(f"{name}: {len(texts):,} documents, {cores} cores", [
            (f"tokenizers encode_batch_fast, Rust threads ({cores})", len(texts) / peer, ""),
            (f"ours, {cores} tokenizer processes, token ids returned", len(texts) / mine, f"{peer / mine:.2f}x"),
        ], "docs/s")
    if not args.all_cores:
        env = {**os.environ, "RAYON_NUM_THREADS": str(cores)}
        subprocess.run([sys.executable, "-u", __file__, "--all-cores", "--docs", str(args.docs),
                        "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
