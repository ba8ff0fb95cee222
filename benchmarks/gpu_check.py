"""The one prepared script for a lent GPU machine (H100/H200): measures what only a GPU can.

  1. `small` preset MoE: tokens/s and MFU (peak 989.5 TFLOP/s bf16) on synthetic token shards.
  2. The embedding quality scorer: documents/s in bf16.

Everything it needs is built in place (no fixtures, no downloads); results go to $OUT/gpu.json.

    python benchmarks/gpu_check.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_tokens(directory: Path, tokens: int, vocab: int = 50280) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.zipf(1.2, size=tokens).clip(max=vocab - 2).astype(np.uint16)
    data[rng.random(tokens) < 1 / 500] = 50279  # documents of ~500 tokens
    data.tofile(directory / "part-00000-train-000.npy")
    manifest = {"kind": "tokenize", "key": "synthetic", "files": [{"name": "part-00000-train-000.npy", "rows": tokens}],
                "resolved": {"tokenizer": {"dtype": "<u2", "vocab_size": vocab, "eos_id": 50279, "path": "synthetic"}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    import torch

    from curation.trainer.train import train

    results = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tokens(Path(tmp) / "tok", 40_000_000)
        tokens = args.steps * 16 * 2048
        train(str(data), str(Path(tmp) / "run"), "small", tokens, {"log_every": 10})
        metrics = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        steady = metrics[2:] or metrics
        results["small_tokens_per_s"] = float(np.median([m["tokens_per_s"] for m in steady]))
        results["small_mfu"] = float(np.median([m["mfu"] for m in steady if m["mfu"] is not None] or [0]))
    from curation.classifiers.models import EmbeddingClassifier, EmbeddingRecipe, default_embedding_model

    scorer = EmbeddingClassifier(default_embedding_model(), {"weights": np.ones(384, np.float32), "bias": np.zeros(1, np.float32)},
                                 EmbeddingRecipe(batch_size=256))
    texts = [("web page text about many things " * (20 + i % 80)).strip() for i in range(20000)]
    scorer.score(texts[:512])
    start = time.perf_counter()
    scorer.score(texts)
    results["embedding_docs_per_s"] = len(texts) / (time.perf_counter() - start)
    Path(args.out, "gpu.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
