"""Model cards: what a classifier was trained on, how, and how well it did on held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CARD = "card.json"


def heldout_metrics(scores_positive: np.ndarray, scores_negative: np.ndarray, kept_fraction: float = 0.1) -> dict[str, float]:
    """ROC AUC, and precision among the top ``kept_fraction`` of the held-out documents."""
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.ones(len(scores_positive)), np.zeros(len(scores_negative))])
    scores = np.concatenate([scores_positive, scores_negative])
    if len(scores_positive) == 0 or len(scores_negative) == 0:
        return {"roc_auc": float("nan"), f"precision_at_{kept_fraction:g}": float("nan")}
    order = np.argsort(-scores, kind="stable")
    kept = max(1, int(round(kept_fraction * len(scores))))
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        f"precision_at_{kept_fraction:g}": float(labels[order[:kept]].mean()),
        "heldout_documents": int(len(scores)),
    }


def write_card(directory: Path, card: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CARD).write_text(json.dumps(card, indent=1, sort_keys=True))
    metrics = card.get("metrics", {})
    lines = [f"# Quality classifier: {card['kind']}", "",
             f"Label `{card.get('positive_label', 'hq')}` = like the high-quality references; score = its probability.", "",
             "## Training data", "", "| split | documents | sha256 |", "| --- | ---: | --- |"]
    for name, info in card["data"].items():
        lines.append(f"| {name} | {info['documents']:,} | `{info['sha256'][:16]}…` |")
    lines += ["", "Sources: positives " + ", ".join(card["sources"]["positives"]) + "; negatives "
              + ", ".join(card["sources"]["negatives"]), "", "## Recipe", "", "```json",
              json.dumps(card["recipe"], indent=1, sort_keys=True), "```", "", "## Held-out metrics", ""]
    lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(metrics.items())]
    if card.get("human_eval"):
        lines += ["", "## Against human labels", "", "| labels | documents | ROC AUC | precision top 10% | top 30% | "
                  "accuracy at threshold |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, e in sorted(card["human_eval"].items()):
            lines.append(f"| {name} | {e['documents']} | {e['roc_auc']:.4f} | {e['precision_at_top_10pct']:.4f} | "
                         f"{e['precision_at_top_30pct']:.4f} | {e['accuracy_at_threshold']:.4f} at {e['threshold']:.3g} |")
    (directory / "README.md").write_text("\n".join(lines) + "\n")


def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD
    if not path.is_file():
        from curation.core.errors import CurationError

        raise CurationError(f"no classifier at {directory} ({CARD} missing)")
    return json.loads(path.read_text())
