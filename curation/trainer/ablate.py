"""Data ablations: train every mix with identical settings and seeds, evaluate, and tabulate.

``RUN/experiments.parquet`` has one row per (mix, seed): final training loss, validation
loss / bits per byte, RC accuracy and mean log-probability per task, and the mix's lineage
(name, tokens, sources and shares). ``RUN/plots/`` holds the loss curves and evaluation results.
It is queryable: ``curate stats RUN "SELECT ... FROM experiments"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.trainer.evaluate import evaluate
from curation.trainer.train import train


def ablate(mixes: list[str], output: str, preset: str = "tiny", max_tokens: int = 500_000, seeds: int = 1,
           tasks: list[str] | None = None, limit: int = 200, echo=print) -> pa.Table:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for mix in mixes:
        mix_path = Path(mix)
        name = json.loads((mix_path / "mix.json").read_text())["name"] if (mix_path / "mix.json").is_file() else mix_path.name
        lineage = json.loads((mix_path / "mix.json").read_text()) if (mix_path / "mix.json").is_file() else {}
        for seed in range(seeds):
            run = out / f"{name}-seed{seed}"
            echo(f"== {name} seed {seed} -> {run}")
            train(mix, str(run), preset, max_tokens, {"seed": seed}, echo=echo)
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            results = evaluate(run, tasks, limit=limit)
            row: dict[str, Any] = {"mix": name, "seed": seed, "run": str(run), "train_loss": metrics[-1]["ce"],
                                   "tokens": metrics[-1]["tokens"],
                                   "mix_tokens": lineage.get("total_tokens"),
                                   "mix_sources": json.dumps({s["name"]: round(s["proportion"], 4)
                                                              for s in lineage.get("sources", [])})}
            for set_name, values in results["validation"].items():
                row[f"val_{set_name}_loss"] = values["loss"]
                row[f"val_{set_name}_bpb"] = values["bits_per_byte"]
            for task, values in results["tasks"].items():
                if "accuracy" in values:
                    row[f"{task}_acc"] = values["accuracy"]
                    row[f"{task}_logprob"] = values["mean_logprob_correct"]
            rows.append(row)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "experiments.parquet")
    _plots(out, rows)
    return table


def _plots(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(exist_ok=True)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        metrics = [json.loads(line) for line in (Path(row["run"]) / "metrics.jsonl").read_text().splitlines()]
        axis.plot([m["tokens"] for m in metrics], [m["ce"] for m in metrics], label=f"{row['mix']} s{row['seed']}")
    axis.set_xlabel("tokens")
    axis.set_ylabel("training cross-entropy")
    axis.set_title("loss curves")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "plots" / "loss_curves.png", dpi=100)
    plt.close(figure)
    metrics = sorted({k for r in rows for k in r if k.endswith(("_logprob", "_bpb"))})
    if metrics:
        figure, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.2 * len(metrics)), squeeze=False)
        mixes = sorted({r["mix"] for r in rows})
        for axis, metric in zip(axes[:, 0], metrics, strict=True):
            means = [sum(r.get(metric, 0) for r in rows if r["mix"] == m) / max(1, sum(r["mix"] == m for r in rows)) for m in mixes]
            axis.barh(mixes, means, color="#4C78A8")
            axis.set_title(metric, fontsize=9)
        figure.tight_layout()
        figure.savefig(out / "plots" / "evaluation.png", dpi=100)
        plt.close(figure)
