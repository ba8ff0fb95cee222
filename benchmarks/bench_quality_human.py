"""Quality classifiers against human labels (issue 11), with the plain-fastText baseline in the same run.

Every model is trained as `curate classify train` trains it, on the README's references
(`hq_reference/*` against `web_negatives/*`, the same split), then scored on the human-labelled
documents of `quality_dev/` (DCLM's majority votes on the documents annotators disagreed on).

- plain fastText: `fasttext.train_supervised(wordNgrams=2)` with fastText's defaults otherwise;
- ours, fastText: `--kind fasttext` (the DCLM recipe, 2 epochs);
- ours, embedding head only: `--kind embedding --set stack=false` (MiniLM + logistic head);
- ours, embedding: `--kind embedding` (the head stacked with a fastText logit and two page
  statistics, fitted on quality_dev itself: its figure is the card's 5-fold x 10 cross-validation).

The spread of a model not fitted on the labels is over 50 random halves of the labelled documents.

    .venv/bin/python benchmarks/bench_quality_human.py [--labels FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from common import shared_data
from sklearn.metrics import roc_auc_score


def half_split_spread(scores: np.ndarray, labels: np.ndarray, repeats: int = 50) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    aucs = []
    while len(aucs) < repeats:
        half = rng.permutation(len(labels))[: len(labels) // 2]
        if len(set(labels[half])) == 2:
            aucs.append(roc_auc_score(labels[half], scores[half]))
    return float(np.mean(aucs)), float(np.std(aucs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = shared_data()
    parser.add_argument("--labels", default=str(data / "quality_dev" / "dclm_human_majority_contested.jsonl"))
    args = parser.parse_args()

    import fasttext
    from curation.classifiers.evaluate import human_label_metrics, read_labels
    from curation.classifiers.models import FastTextClassifier, load_classifier, train_classifier
    from curation.classifiers.references import expand, normalize, read_texts, split_references
    from curation.classifiers.stage import QualityTrainConfig

    defaults = QualityTrainConfig()
    positives = [t for p in expand([str(data / "hq_reference" / "*")]) for t in read_texts(p)]
    negatives = [t for p in expand([str(data / "web_negatives" / "*")]) for t in read_texts(p)]
    split = split_references(positives, negatives, defaults.heldout_fraction, defaults.seed, defaults.max_per_class, 10)
    texts, labels = read_labels(args.labels)
    sources = {"positives": ["hq_reference/*"], "negatives": ["web_negatives/*"]}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        train_file = os.path.join(work, "plain.txt")
        with open(train_file, "w", encoding="utf-8") as handle:
            handle.writelines(f"__label__hq {normalize(t)}\n" for t in split.train_positive)
            handle.writelines(f"__label__lq {normalize(t)}\n" for t in split.train_negative)
        fasttext.FastText.eprint = lambda *a, **k: None
        fasttext.train_supervised(input=train_file, wordNgrams=2, seed=0, thread=1, verbose=0).save_model(
            os.path.join(work, "plain.bin"))
        plain = FastTextClassifier(os.path.join(work, "plain.bin"))
        rows.append(("plain fastText bigrams (fastText defaults)", plain.score(texts), None, time.perf_counter() - start))
        for name, kind, recipe in (("ours, fastText", "fasttext", {}),
                                   ("ours, embedding head only (MiniLM + logistic)", "embedding", {"stack": False}),
                                   ("ours, embedding (stacked, fitted on these labels)", "embedding", {})):
            start = time.perf_counter()
            out = os.path.join(work, kind + str(len(rows)))
            card = train_classifier(kind, split, out, sources, recipe)
            scores = load_classifier(out).score(texts)
            rows.append((name, scores, card.get("stack"), time.perf_counter() - start))

    print(f"{len(texts)} human-labelled documents ({int(labels.sum())} high quality): {args.labels}")
    print(f"references: {len(split.train_positive)} positives, {len(split.train_negative)} negatives for training\n")
    print(f"{'model':52s} {'ROC AUC':>8s} {'mean ± sd':>15s} {'top 10%':>8s} {'top 30%':>8s} {'train s':>8s}")
    results = {}
    for name, scores, stack, seconds in rows:
        metrics = human_label_metrics(scores, labels)
        if stack:  # fitted on these labels: the in-sample AUC says little; the cross-validated one counts
            mean, sd, note = stack["cv_roc_auc_mean"], stack["cv_roc_auc_sd"], " (5-fold x 10 CV)"
        else:
            (mean, sd), note = half_split_spread(scores, labels), ""
        print(f"{name:52s} {metrics['roc_auc']:8.3f} {mean:7.3f} ± {sd:.3f} {metrics['precision_at_top_10pct']:8.3f} "
              f"{metrics['precision_at_top_30pct']:8.3f} {seconds:8.1f}{note}")
        results[name] = {"roc_auc": metrics["roc_auc"], "mean": mean, "sd": sd, "cross_validated": bool(stack),
                         "precision_at_top_10pct": metrics["precision_at_top_10pct"],
                         "precision_at_top_30pct": metrics["precision_at_top_30pct"]}
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
