"""Tokenize-and-write throughput against the same tokenizer's raw ``encode_batch``.

Same texts, same tokenizer (OLMo's GPT-NeoX JSON from ../shared/data/tokenizers), same threads,
one run, median of --repeats:
  raw          Tokenizer.encode_batch(texts) and encode_batch_fast(texts) (what we call), nothing else
  ours         TokenizeStage.run_shard: read Parquet, shuffle by id hash, encode, pack with EOS,
               write .npy + Dolma .csv.gz + the Parquet index (local disk)
Also the shard write bandwidth (bytes of token files written per second of np.tofile-equivalent).

Texts: web documents of ../shared/data/web_negatives and WikiText, cycled to --docs documents.
With --tiktoken the tokenizer is DCLM's tiktoken file of GPT-NeoX-20B's ranks (what tokshuf-rs
reads), which ours converts to a BPE, and the peer is tiktoken itself (encode_ordinary_batch, one
thread per core).

    .venv/bin/python benchmarks/bench_tokenize.py --docs 20000 --repeats 3
    .venv/bin/python benchmarks/bench_tokenize.py --docs 20000 --repeats 3 --tiktoken
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import median_seconds, print_table, shared_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiktoken", action="store_true", help="DCLM's tiktoken NeoX file; tiktoken as the peer")
    args = parser.parse_args()
    data = shared_data()
    texts: list[str] = []
    for path in sorted((data / "web_negatives").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            texts += [json.loads(line)["text"] for line in handle if line.strip()]
    wiki = (data / "hq_reference" / "wikitext-2_valid.txt").read_text().split("\n \n")
    texts += [t for t in wiki if len(t) > 200]
    texts = [texts[i % len(texts)] for i in range(args.docs)]
    tokenizer_path = data / "tokenizers" / ("EleutherAI_gpt-neox-20b.tiktoken" if args.tiktoken
                                            else "allenai_gpt-neox-olmo-dolma-v1_5.json")
    megabytes = sum(len(t.encode()) for t in texts) / 1e6

    from curation.tokenize.shards import load_text_tokenizer
    from curation.tokenize.stage import TokenizeConfig, TokenizeStage

    from curation.core.stage import ShardTask, StageContext

    tokenizer = load_text_tokenizer(str(tokenizer_path))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}), work / "part-00000.parquet")
        stage = TokenizeStage(TokenizeConfig(tokenizer=str(tokenizer_path)))
        ctx = StageContext(run_root=str(work), stage_name="tokenize", stage_dir=str(work / "out"), key="k")
        ctx.resolved = stage.resolve([], ctx)
        stage.ensure_setup(ctx)

        def raw():
            return sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))

        def raw_fast():
            return sum(len(e.ids) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False))

        def tiktoken_peer():
            import os

            import tiktoken
            from tiktoken.load import load_tiktoken_bpe
            from tiktoken_ext.openai_public import r50k_pat_str

            encoding = tiktoken.Encoding("neox", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(str(tokenizer_path)),
                                         special_tokens={})
            return lambda: sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)))

        def ours():
            return stage.run_shard(ShardTask(0, "part-00000", [str(work / "part-00000.parquet")]), ctx).stats.extra["tokens"]

        raw_s, tokens = median_seconds(raw, args.repeats)
        fast_s, _ = median_seconds(raw_fast, args.repeats)
        ours_s, _ = median_seconds(ours, args.repeats)
        peer_s, peer_tokens = median_seconds(tiktoken_peer(), args.repeats) if args.tiktoken else (None, tokens)
        assert peer_tokens == tokens, (peer_tokens, tokens)
        array = np.random.default_rng(0).integers(0, 50280, size=50_000_000, dtype=np.uint16)
        write_s, _ = median_seconds(lambda: (work / "bw.npy").write_bytes(array.tobytes()), args.repeats)
    print(f"{len(texts):,} documents, {megabytes:.1f} MB of text, {tokens:,} tokens")
    print_table(f"tokenize (median of {args.repeats})", [
        ("raw encode_batch", len(texts) / raw_s, f"{tokens / raw_s / 1e6:.2f} M tokens/s"),
        ("raw encode_batch_fast (no offsets)", len(texts) / fast_s, f"{tokens / fast_s / 1e6:.2f} M tokens/s"),
        ("ours: TokenizeStage (encode + pack + write)", len(texts) / ours_s,
         f"{tokens / ours_s / 1e6:.2f} M tokens/s; ours/encode_batch = {raw_s / ours_s:.2f}x, "
         f"ours/encode_batch_fast = {fast_s / ours_s:.2f}x"),
    ] + ([("tiktoken encode_ordinary_batch (the peer)", len(texts) / peer_s,
           f"{tokens / peer_s / 1e6:.2f} M tokens/s; ours/tiktoken = {peer_s / ours_s:.2f}x")] if peer_s else []), "docs/s")
    print(f"\nshard write bandwidth (100 MB of uint16 tokens to local disk): {array.nbytes / write_s / 1e6:,.0f} MB/s")


if __name__ == "__main__":
    main()
