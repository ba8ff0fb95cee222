"""Quality scoring throughput: our scorers against calling the fastText model's ``predict``
directly on the same texts, one core; and the embedding scorer on this CPU (or a GPU if present).

Both classifiers are trained first on the fixtures (WikiText + GPTeacher against web negatives);
their held-out ROC AUC is printed with the figures.

    .venv/bin/python benchmarks/bench_classifiers.py --docs 20000 --embedding-docs 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyarrow as pa
from common import median_seconds, print_table, shared_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--embedding-docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-embedding", action="store_true")
    args = parser.parse_args()

    from curation.classifiers.models import load_classifier, train_classifier
    from curation.classifiers.references import expand, read_texts, split_references
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.stage import ShardStats

    data = shared_data()
    positives = [t for p in expand([str(data / "hq_reference" / "*")]) for t in read_texts(p)]
    negatives = [t for p in expand([str(data / "web_negatives" / "*.jsonl.gz")]) for t in read_texts(p)]
    split = split_references(positives, negatives, 0.1, 0, 20000, 10)
    pool = split.test_positive + split.test_negative + split.train_negative
    texts = [pool[i % len(pool)] for i in range(args.docs)]
    batch = pa.RecordBatch.from_pydict({"text": texts})
    with tempfile.TemporaryDirectory() as tmp:
        card = train_classifier("fasttext", split, Path(tmp) / "ft", {"positives": ["hq"], "negatives": ["web"]})
        model = load_classifier(Path(tmp) / "ft")
        stage = QualityStage(QualityConfig(fasttext_model=str(Path(tmp) / "ft")))
        stage.models = {"fasttext": model}

        def raw():
            return model.model.predict([t.replace("\n", " ") for t in texts], k=2)

        def ours():
            return stage.process_batch(batch, None, ShardStats(shard="b"))

        raw_s, _ = median_seconds(raw, args.repeats)
        ours_s, _ = median_seconds(ours, args.repeats)
        rows = [("fastText predict, called directly", args.docs / raw_s, ""),
                ("ours: quality stage (quality_fasttext column)", args.docs / ours_s, f"ours/raw = {raw_s / ours_s:.2f}x")]
        print(f"fastText held-out ROC AUC {card['metrics']['roc_auc']:.4f} ({card['metrics']['heldout_documents']} docs)")
        if not args.skip_embedding:
            import torch

            emb_card = train_classifier("embedding", split, Path(tmp) / "emb", {"positives": ["hq"], "negatives": ["web"]})
            embedding = load_classifier(Path(tmp) / "emb")
            sample = texts[: args.embedding_docs]
            emb_s, _ = median_seconds(lambda: embedding.score(sample), args.repeats)
            device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
            rows.append((f"embedding scorer (MiniLM-L6 + head) on {device}", len(sample) / emb_s, ""))
            print(f"embedding held-out ROC AUC {emb_card['metrics']['roc_auc']:.4f}")
    print_table(f"quality scoring, {args.docs:,} documents (median of {args.repeats})", rows, "docs/s")


if __name__ == "__main__":
    main()
