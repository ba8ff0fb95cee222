"""Trainer throughput: the tiny MoE against a dense model with the same active parameters, same
data, same run (CPU here; on a GPU it also reports MFU).

    .venv/bin/python benchmarks/bench_trainer.py --data runs/demo/tokenize --steps 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a tokenize output or mix directory")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--presets", nargs="+", default=["tiny", "tiny_dense"])
    args = parser.parse_args()
    from curation.trainer.train import PRESETS, train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            tokens = args.steps * PRESETS[preset]["batch_size"] * PRESETS[preset]["model"]["seq_len"]
            result = train(args.data, str(Path(tmp) / preset), preset, tokens, {"log_every": 5}, echo=lambda m: None)
            metrics = [json.loads(line) for line in (Path(tmp) / preset / "metrics.jsonl").read_text().splitlines()]
            steady = sorted(m["tokens_per_s"] for m in metrics[1:]) or [metrics[-1]["tokens_per_s"]]
            median = steady[len(steady) // 2]
            mfu = metrics[-1]["mfu"]
            rows.append((f"{preset} ({result['parameters']['active'] / 1e6:.2f}M active of "
                         f"{result['parameters']['total'] / 1e6:.2f}M)", median,
                         f"final CE {metrics[-1]['ce']:.3f}" + (f", MFU {mfu:.1%}" if mfu else "")))
    base = rows[-1][1]
    rows = [(name, value, note + (f"; vs {args.presets[-1]} = {value / base:.2f}x" if i < len(rows) - 1 else ""))
            for i, (name, value, note) in enumerate(rows)]
    print_table(f"training throughput, {args.steps} steps each (median over logged windows after the first)", rows, "tokens/s")


if __name__ == "__main__":
    main()
