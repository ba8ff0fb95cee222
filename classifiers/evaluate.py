"""How well a quality classifier agrees with people: metrics on human-labelled documents.

``read_labels`` reads ``{text, label}`` records (JSONL, JSON lists, Parquet, CSV/TSV with a header; label 1 = high
quality, also true/false, "high"/"low", "yes"/"no"...; graded labels, such as a 0-5 rating or the
share of annotators who said high, are high from the middle of their range up, or from a threshold
given); ``human_label_metrics`` gives ROC AUC,
precision among the top 10% and 30% by score, accuracy at the model's threshold and a calibration
table; ``plot_evaluation`` draws the ROC curve and the score histogram of each label;
``record_evaluation`` stores the figures in the model's card under the labels file's name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from curation.core.errors import CurationError

TOP_FRACTIONS = (0.1, 0.3)


# labels as other tools write them, case aside: 1 is high quality
_LABEL_WORDS = {**dict.fromkeys(("1", "true", "yes", "high", "hq", "positive", "pos", "good"), 1),
                **dict.fromkeys(("0", "false", "no", "low", "lq", "negative", "neg", "bad"), 0)}


def _grade(value: Any) -> float | None:
    """A label as a number: 0/1 from true/false and ``_LABEL_WORDS``, a number (or a numeric string)
    as it is (graded labels: a 0-5 rating, the share of annotators who said high); None otherwise."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _LABEL_WORDS:
            return float(_LABEL_WORDS[word])
        try:
            value = float(word)
        except ValueError:
            return None
    if isinstance(value, bool | int | float) and np.isfinite(value):
        return float(value)
    return None


def read_grades(path: str, text_field: str = "text", label_field: str = "label") -> tuple[list[str], np.ndarray]:
    """Texts and their labels as numbers: 0/1 (also true/false, "high"/"low" and the like) or grades
    (any numbers); a record without a text or with a label that is not one is an error naming it."""
    name = path.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = [f for f in (text_field, label_field) if f not in table.column_names]
        if missing:
            raise CurationError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(table.column_names)})")
        records = [{text_field: t, label_field: v} for t, v in zip(table.column(text_field).to_pylist(),
                                                                    table.column(label_field).to_pylist(), strict=True)]
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            if name.removesuffix(".gz").endswith((".csv", ".tsv")):
                import csv

                csv.field_size_limit(1 << 30)  # whole web pages in a cell
                dialect = "excel-tab" if name.removesuffix(".gz").endswith(".tsv") else "excel"
                records = list(csv.DictReader(handle, dialect=dialect))
            elif name.removesuffix(".gz").endswith(".json"):
                records = json.load(handle)
            else:
                records = []
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise CurationError(f"{path}:{number}: not JSON ({exc.msg})") from None
    texts, grades = [], []
    if records and isinstance(records[0], dict) and label_field not in records[0]:
        raise CurationError(f"{path}: record 1 has no field {label_field!r} (fields: {', '.join(map(str, records[0]))}); "
                            "name the label with --label-field")
    for number, record in enumerate(records, 1):
        text, label = (record.get(text_field), record.get(label_field)) if isinstance(record, dict) else (None, None)
        if not isinstance(text, str):
            raise CurationError(f"{path}: record {number} has no text in {text_field!r}")
        if (value := _grade(label)) is None:
            raise CurationError(f"{path}: record {number} has label {label!r}; labels are 0 (low) or 1 (high quality), "
                                "or numbers (grades)")
        texts.append(text)
        grades.append(value)
    return texts, np.array(grades, dtype=np.float64)


def is_graded(grades: np.ndarray) -> bool:
    return not set(np.unique(grades).tolist()) <= {0.0, 1.0}


def grade_threshold(grades: np.ndarray) -> float:
    """Where graded labels turn high: the middle of their range (a 0-5 rating: 2.5, so 3 and up, as
    FineWeb-Edu keeps; the share of annotators saying high: 0.5, a majority)."""
    return float((grades.min() + grades.max()) / 2)


def binary_labels(grades: np.ndarray, label_threshold: float | None = None,
                  path: str = "labels") -> tuple[np.ndarray, float | None]:
    """0/1 labels, and the threshold that made them (None for labels that were 0/1 already): graded
    labels are high at or above ``label_threshold`` (default: ``grade_threshold``). Both classes
    must occur."""
    cut = None
    if is_graded(grades) or label_threshold is not None:
        cut = grade_threshold(grades) if label_threshold is None else float(label_threshold)
        labels = (grades >= cut).astype(np.int64)
    else:
        labels = grades.astype(np.int64)
    if len(set(labels.tolist())) < 2:
        raise CurationError(f"{path}: ROC AUC needs both labels; found only {sorted(set(labels.tolist()))}")
    return labels, cut


def read_labels(path: str, text_field: str = "text", label_field: str = "label",
                label_threshold: float | None = None) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels (``binary_labels`` of ``read_grades``)."""
    texts, grades = read_grades(path, text_field, label_field)
    return texts, binary_labels(grades, label_threshold, path)[0]


def labels_digest(texts: list[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{int(label)}\0{text}\0".encode())
    return digest.hexdigest()


def human_label_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5,
                        bins: int = 5, grades: np.ndarray | None = None,
                        label_threshold: float | None = None) -> dict[str, Any]:
    """ROC AUC; precision at the top 10% / 30% by score; accuracy at ``threshold``; a calibration
    table over ``bins`` equal-count score bins (mean score against the share labelled high). With
    graded labels (``grades``, made 0/1 at ``label_threshold``) also the Spearman rank correlation
    of the scores with the grades."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    out: dict[str, Any] = {"documents": int(len(labels)), "high_quality": int(labels.sum()),
                           "roc_auc": float(roc_auc_score(labels, scores)), "threshold": float(threshold),
                           "accuracy_at_threshold": float(((scores >= threshold) == labels.astype(bool)).mean()),
                           "share_above_threshold": float((scores >= threshold).mean()),
                           "base_rate": float(labels.mean())}
    for fraction in TOP_FRACTIONS:
        top = max(1, int(round(fraction * len(labels))))
        out[f"precision_at_top_{int(fraction * 100)}pct"] = float(labels[order[:top]].mean())
    calibration = []
    for chunk in np.array_split(np.argsort(scores, kind="stable"), min(bins, len(scores))):
        calibration.append({"documents": int(len(chunk)), "score_min": float(scores[chunk].min()),
                            "score_max": float(scores[chunk].max()), "mean_score": float(scores[chunk].mean()),
                            "share_high_quality": float(labels[chunk].mean())})
    out["calibration"] = calibration
    if grades is not None:
        out["label_threshold"] = float(label_threshold) if label_threshold is not None else None
        out["spearman"] = float(spearmanr(scores, grades).statistic)
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    lines = [f"documents {metrics['documents']} ({metrics['high_quality']} labelled high quality, "
             f"base rate {metrics['base_rate']:.3f})"]
    if "spearman" in metrics:
        lines.append(f"graded labels: high at {metrics['label_threshold']:g} and above; Spearman rank correlation "
                     f"of scores and grades {metrics['spearman']:.4f}")
    lines.append(f"ROC AUC                 {metrics['roc_auc']:.4f}")
    for fraction in TOP_FRACTIONS:
        key = f"precision_at_top_{int(fraction * 100)}pct"
        lines.append(f"precision, top {int(fraction * 100):>2}%    {metrics[key]:.4f}")
    lines.append(f"accuracy at {metrics['threshold']:.3g}       {metrics['accuracy_at_threshold']:.4f} "
                 f"({metrics['share_above_threshold']:.1%} of documents score above it)")
    lines.append("calibration (equal-count bins): score range -> mean score, share labelled high")
    for row in metrics["calibration"]:
        lines.append(f"  {row['score_min']:.3f}-{row['score_max']:.3f} ({row['documents']:>4}) -> "
                     f"{row['mean_score']:.3f}, {row['share_high_quality']:.3f}")
    return "\n".join(lines)


def plot_evaluation(scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str) -> None:
    """ROC curve and per-label score histograms, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    figure, (roc, hist) = plt.subplots(1, 2, figsize=(10, 4))
    roc.plot(fpr, tpr, label=f"ROC AUC {roc_auc_score(labels, scores):.3f}")
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC against human labels")
    roc.legend(loc="lower right")
    edges = np.linspace(float(np.min(scores)), float(np.max(scores)) + 1e-9, 21)
    hist.hist(scores[labels == 1], bins=edges, alpha=0.6, label="labelled high quality")
    hist.hist(scores[labels == 0], bins=edges, alpha=0.6, label="labelled low quality")
    hist.set(xlabel="score", ylabel="documents", title="scores by human label")
    hist.legend()
    figure.suptitle(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def record_evaluation(model_dir: str | Path, labels_path: str, digest: str, metrics: dict[str, Any]) -> Path:
    """Store ``metrics`` in the model's card (``human_eval``, keyed by the labels file's name) and
    re-render its README; a checkpoint without a card gets ``human_eval.json`` instead."""
    from curation.classifiers.card import CARD, write_card

    model_dir = Path(model_dir)
    entry = {"labels": labels_path, "labels_sha256": digest, **metrics}
    card_path = model_dir / CARD
    if not card_path.is_file():
        target = model_dir / "human_eval.json"
        existing = json.loads(target.read_text()) if target.is_file() else {}
        existing[Path(labels_path).name] = entry
        target.write_text(json.dumps(existing, indent=1, sort_keys=True))
        return target
    card = json.loads(card_path.read_text())
    card.setdefault("human_eval", {})[Path(labels_path).name] = entry
    write_card(model_dir, card)
    return card_path


def label_files(patterns: list[str]) -> list[str]:
    """The labelled files the patterns match (``${CURATION_DATA}`` and the checkout root resolved); none is fine."""
    import glob

    from curation.core.config import resolve_data_path

    return sorted({f for pattern in patterns for f in glob.glob(resolve_data_path(pattern))})


SUMMARY_KEYS = ("documents", "roc_auc", "in_training", "cv_roc_auc_mean", "cv_roc_auc_sd")


def human_eval_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The figures of a card's ``human_eval`` entry that manifests and run lines carry."""
    return {k: round(entry[k], 4) if isinstance(entry[k], float) else entry[k] for k in SUMMARY_KEYS if k in entry}
