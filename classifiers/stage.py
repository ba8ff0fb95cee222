"""The ``quality`` stage: score documents with trained classifiers (attributes, not deletions).

Columns: ``quality_fasttext`` and/or ``quality_embedding`` (probability of being like the
high-quality references). With ``cascade_threshold`` only documents whose fastText score reaches
it go to the (GPU) embedding model; the others get null. Models load once per Ray actor; the
stage asks Ray for a GPU when the cluster has one and an embedding model is configured.

``train`` makes the stage self-contained, as DCLM does it: positives from reference files,
negatives a seeded random sample of the pool being filtered (this stage's input), trained once on
the driver before scoring; the model and its card land in ``<stage>/_models/<kind>`` (local or
object store; workers copy a remote model to local disk once per actor).
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from curation.classifiers.evaluate import human_eval_summary
from curation.classifiers.references import expand, read_texts, split_references

from curation.core import io as fio
from curation.core.errors import CurationError
from curation.core.layout import WORK_DIR
from curation.core.phases import PhaseClock
from curation.core.stage import BatchStage, ShardStats, StageContext, register


@dataclass
class QualityTrainConfig:
    kinds: list[str] = field(default_factory=lambda: ["fasttext"])
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)  # empty: a random sample of the pool
    pool_sample: int = 20000
    max_per_class: int = 20000
    heldout_fraction: float = 0.1
    min_words: int = 10
    seed: int = 0
    fasttext: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    # human-labelled documents ({text, label}) each trained model is measured on, recorded in its card
    # and the stage's manifest; patterns that match nothing are skipped
    eval_labels: list[str] = field(default_factory=lambda: ["${CURATION_DATA:-../shared/data}/quality_dev/*.jsonl"])


@dataclass
class QualityConfig:
    fasttext_model: str | None = None  # a model directory (card.json + model.bin)
    embedding_model: str | None = None  # an embedding-head directory or a local HF classifier checkpoint
    train: QualityTrainConfig | None = None
    cascade_threshold: float | None = None
    score_alias: str | None = None  # also write the final score (embedding if present, else fastText) under this name
    text_column: str = "text"
    # documents per record batch scored at once; None: 1024, or 8192 for an embedding model on a GPU
    # (one call keeps every tokenizer process and the GPU busy)
    batch_size: int | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None  # None: 1 when the cluster has GPUs and an embedding model is in use
    # worker processes that tokenize for the embedding model (None: on a GPU, where tokenization is
    # the bottleneck, this GPU's share of the node's CPUs but one, up to 16; none on a CPU, where
    # the model wants the cores)
    tokenizer_processes: int | None = None
    # shards one actor scores at once (None: 2 for an embedding model on a GPU, so one shard's
    # tokenizing overlaps the other's last batches on the GPU; else 1)
    concurrent_shards: int | None = None

    def __post_init__(self) -> None:
        trained = set(self.train.kinds) if self.train else set()
        if not (self.fasttext_model or self.embedding_model or trained):
            raise ValueError("give fasttext_model, embedding_model or train")
        if self.cascade_threshold is not None and not ((self.fasttext_model or "fasttext" in trained)
                                                         and (self.embedding_model or "embedding" in trained)):
            raise ValueError("cascade_threshold needs both a fastText and an embedding model")


def pool_sample(inputs: list[str], storage: fio.Storage, column: str, size: int, seed: int) -> list[str]:
    """``size`` texts drawn uniformly from the stage's input, in the order drawn. Rows are drawn by
    index from the row counts in the Parquet footers, then each shard is read a batch at a time and
    only the drawn rows are kept: memory holds the sample, not the pool (a crawl's text does not
    fit). An empty text drawn is left out."""
    counts = []
    for path in inputs:
        fs, p = fio.filesystem(path, storage)
        with fs.open(p, "rb") as handle:
            counts.append(pq.ParquetFile(handle).metadata.num_rows)
    total = sum(counts)
    drawn = random.Random(seed).sample(range(total), min(size, total))
    wanted = np.sort(np.asarray(drawn, dtype=np.int64))
    texts: dict[int, str] = {}
    starts = np.concatenate([[0], np.cumsum(counts)])
    for path, first, after in zip(inputs, starts[:-1], starts[1:], strict=True):
        lo, hi = np.searchsorted(wanted, [first, after])
        if hi == lo:
            continue  # nothing drawn from this shard: not read
        fs, p = fio.filesystem(path, storage)
        with fs.open(p, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=8192, columns=[column]):
                upto = np.searchsorted(wanted, first + batch.num_rows)
                chosen = wanted[lo:upto]
                picked = batch.column(0).take(pa.array(chosen - first)).to_pylist()
                texts.update(zip(chosen.tolist(), picked, strict=True))
                first, lo = first + batch.num_rows, upto
    return [texts[i] for i in drawn if texts.get(i)]


def evaluate_model_dir(model_dir: str | Path, patterns: list[str]) -> dict[str, Any]:
    """Score a trained model on every labelled file the patterns match, record each in its card,
    and return ``{file name: summary}``. Labels the model was fitted on (the embedding stack's)
    are marked ``in_training`` and summarised by the card's cross-validated ROC AUC instead."""
    from curation.classifiers.card import read_card
    from curation.classifiers.evaluate import (
        binary_labels,
        human_eval_summary,
        human_label_metrics,
        label_files,
        labels_digest,
        read_grades,
        record_evaluation,
    )
    from curation.classifiers.models import load_classifier

    files = label_files(patterns)
    if not files:
        return {}
    model = load_classifier(model_dir)
    card = read_card(model_dir)
    fitted_on = set(card.get("stack", {}).get("labels", []))
    out: dict[str, Any] = {}
    for path in files:
        try:
            texts, grades = read_grades(path)
            labels, cut = binary_labels(grades, path=path)
        except CurationError as exc:  # a measurement, not a step of the recipe: a file it cannot read is passed over
            print(f"warning: human labels not used: {exc}", file=sys.stderr)
            continue
        metrics = human_label_metrics(model.score(texts), labels, card.get("threshold", 0.5),
                                      grades=None if cut is None else grades, label_threshold=cut)
        if path in fitted_on:
            metrics.update(in_training=True, cv_roc_auc_mean=card["stack"]["cv_roc_auc_mean"],
                           cv_roc_auc_sd=card["stack"]["cv_roc_auc_sd"])
        record_evaluation(model_dir, path, labels_digest(texts, labels), metrics)
        out[Path(path).name] = human_eval_summary(metrics)
    return out


def describe_human_eval(summaries: dict[str, Any]) -> str:
    parts = []
    for name, s in summaries.items():
        if s.get("in_training"):
            parts.append(f"{name}: ROC AUC {s['cv_roc_auc_mean']:.3f} ± {s['cv_roc_auc_sd']:.3f} cross-validated "
                         f"(fitted on these labels)")
        else:
            parts.append(f"{name}: ROC AUC {s['roc_auc']:.3f} on {s['documents']} documents")
    return "human labels: " + "; ".join(parts)


@register("quality")
class QualityStage(BatchStage):
    Config = QualityConfig
    phases: PhaseClock | None = None  # of the last resolve that trained, for its run line

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        if self.config.batch_size:
            return self.config.batch_size
        embedding = getattr(self, "models", {}).get("embedding")
        on_gpu = getattr(getattr(embedding, "encoder", None), "device", "cpu") == "cuda"
        return 8192 if on_gpu else 1024

    def _uses_embedding(self) -> bool:
        return bool(self.config.embedding_model or (self.config.train and "embedding" in self.config.train.kinds))

    def resources(self) -> dict[str, float]:
        gpus = self.config.num_gpus
        if gpus is None:
            import ray

            gpus = 1.0 if self._uses_embedding() and ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        return {"num_cpus": self.config.num_cpus, "num_gpus": gpus}

    def concurrent_shards(self) -> int:
        if self.config.concurrent_shards is not None:
            return max(1, self.config.concurrent_shards)
        return 2 if self._uses_embedding() and self.resources()["num_gpus"] > 0 else 1

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        from curation.classifiers.models import train_classifier

        models = {"fasttext": self.config.fasttext_model, "embedding": self.config.embedding_model}
        train = self.config.train
        self.phases = None
        if train:
            # a model trained by an attempt killed later (in this stage's shards, or before its other
            # model) is not trained again
            self.phases = phases = PhaseClock(fio.join(ctx.stage_dir, WORK_DIR), ctx.key, ctx.storage)
            sources = {"positives": list(train.positives), "negatives": list(train.negatives) or ["pool sample"]}

            @functools.cache
            def split() -> Any:
                positives = [t for path in expand(train.positives) for t in read_texts(path)]
                negatives = ([t for path in expand(train.negatives) for t in read_texts(path)] if train.negatives
                             else pool_sample(inputs, ctx.storage, self.config.text_column, train.pool_sample,
                                              train.seed))
                return split_references(positives, negatives, train.heldout_fraction, train.seed,
                                        train.max_per_class, train.min_words)

            def train_one(kind: str) -> str:
                with tempfile.TemporaryDirectory() as local:
                    train_classifier(kind, split(), local, sources, getattr(train, kind))
                    evaluate_model_dir(local, train.eval_labels)  # into the card, before it is copied
                    target = fio.join(ctx.stage_dir, "_models", kind)
                    fio.put_directory(local, target, ctx.storage)  # local disk or object store alike
                return target

            for kind in train.kinds:
                models[kind] = phases.step(f"training {kind}", lambda kind=kind: train_one(kind))
            phases.release_tables()
        inside = ctx.stage_dir.rstrip("/") + "/"
        resolved: dict[str, Any] = {}
        for kind, directory in models.items():
            if directory:
                card_path = fio.join(directory, "card.json")
                card = json.loads(fio.read_bytes(card_path, ctx.storage)) if fio.exists(card_path, ctx.storage) else {"kind": "hf"}
                # Models trained here are recorded relative to the stage, so the manifest does not depend on
                # where the run lives (reruns elsewhere stay byte-identical).
                path = str(directory)
                human = {name: human_eval_summary(entry) for name, entry in card.get("human_eval", {}).items()}
                resolved[kind] = {"path": path.removeprefix(inside) if path.startswith(inside) else path,
                                  "metrics": card.get("metrics", {}), "human_eval": human,
                                  "data": {k: v["sha256"] for k, v in card.get("data", {}).items()}}
        return {"models": resolved}

    def describe_resolved(self, resolved: dict[str, Any]) -> str | None:
        trained = self.config.train.kinds if self.config.train else []
        lines = [f"trained {kind}: held-out ROC AUC {info['metrics']['roc_auc']:.3f}, precision@10% "
                 f"{info['metrics']['precision_at_0.1']:.3f}"
                 + (f"; {describe_human_eval(info['human_eval'])}" if info.get("human_eval") else "")
                 + f" -> {info['path']}"
                 for kind, info in resolved.get("models", {}).items() if kind in trained and info.get("metrics")]
        return ("; ".join(lines) + (self.phases.note() if self.phases else "")) if lines else None

    def setup(self, ctx: StageContext) -> None:
        from curation.classifiers.models import load_classifier

        self.models = {}
        for kind, info in ctx.resolved["models"].items():
            path = info["path"]
            if not (path.startswith("/") or "://" in path):
                path = fio.join(ctx.stage_dir, path)
            self.models[kind] = load_classifier(fio.local_copy(path, ctx.storage), self.config.tokenizer_processes)

    def process_batch(self, batch: pa.RecordBatch, state: None, stats: ShardStats) -> pa.RecordBatch:
        with contextlib.closing(self.process_batches(iter([batch]), state, stats)) as results:
            return next(results)

    def process_batches(self, batches: Iterator[pa.RecordBatch], state: None,
                        stats: ShardStats) -> Iterator[pa.RecordBatch]:
        """fastText scores as each batch is read; the embedding model's through its encoder's
        stream, so the next batch is tokenized while the GPU runs this one (its result comes out
        one batch later)."""
        models = self.models
        taken: deque[tuple[pa.RecordBatch, np.ndarray]] = deque()  # (batch with fastText, rows to embed)

        def with_fasttext() -> Iterator[list[str]]:
            for batch in batches:
                column = pc.fill_null(batch.column(self.config.text_column), "")
                out, fast = batch, None
                if "fasttext" in models:
                    fast = models["fasttext"].score(column)
                    out = out.append_column("quality_fasttext", pa.array(fast, pa.float32()))
                chosen = np.arange(batch.num_rows)
                if "embedding" in models and self.config.cascade_threshold is not None and fast is not None:
                    chosen = np.flatnonzero(fast >= self.config.cascade_threshold)
                    stats.extra["cascade_passed"] = stats.extra.get("cascade_passed", 0.0) + len(chosen)
                taken.append((out, chosen))
                yield column.take(pa.array(chosen, pa.int64())).to_pylist() if "embedding" in models else []

        if "embedding" in models:
            embedding = models["embedding"]
            stream = getattr(embedding, "score_stream", None)  # an HF classifier scores batch by batch
            results = stream(with_fasttext()) if stream else map(embedding.score, with_fasttext())
        else:
            results = (None for _ in with_fasttext())
        for embedding_scores in results:
            out, chosen = taken.popleft()
            if embedding_scores is not None:
                scores = np.full(out.num_rows, np.nan, dtype=np.float32)
                scores[chosen] = embedding_scores
                out = out.append_column("quality_embedding", pa.array(scores, pa.float32(), mask=np.isnan(scores)))
            if self.config.score_alias:
                final = "quality_embedding" if "embedding" in models else "quality_fasttext"
                out = out.append_column(self.config.score_alias, out.column(final))
            yield out
