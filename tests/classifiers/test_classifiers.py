"""Quality classifiers: training with model cards, scoring columns, the cascade, train-on-the-pool,
a local Hugging Face checkpoint, and `curate classify`."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_curate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def references(shared_data):
    from curation.classifiers.references import expand, read_texts, split_references

    positives = [t for p in expand([str(shared_data / "hq_reference" / "*")]) for t in read_texts(p)]
    negatives = [t for p in expand([str(shared_data / "web_negatives" / "*.jsonl.gz")]) for t in read_texts(p)]
    return split_references(positives, negatives, heldout_fraction=0.2, seed=0, max_per_class=300, min_words=10)


def test_reference_readers(shared_data):
    from curation.classifiers.references import read_texts

    wiki = read_texts(str(shared_data / "hq_reference" / "wikitext-2_valid.txt"))
    assert len(wiki) > 500 and all("\n\n" not in t for t in wiki[:50])
    gpteacher = read_texts(str(shared_data / "hq_reference" / "gpteacher_roleplay-instruct.json"))
    assert len(gpteacher) == 1923 and "detective" in gpteacher[0]
    web = [t for p in sorted((shared_data / "web_negatives").glob("*.jsonl.gz")) for t in read_texts(str(p))]
    assert len(web) > 600  # 717 records, some with empty text


def test_fasttext_training_card_and_determinism(references, tmp_path):
    from curation.classifiers.models import load_classifier, train_classifier

    sources = {"positives": ["hq"], "negatives": ["web"]}
    card = train_classifier("fasttext", references, tmp_path / "a", sources)
    again = train_classifier("fasttext", references, tmp_path / "b", sources)
    assert hashlib.sha256((tmp_path / "a" / "model.bin").read_bytes()).digest() == \
           hashlib.sha256((tmp_path / "b" / "model.bin").read_bytes()).digest()
    assert card["metrics"]["roc_auc"] > 0.9 and card["metrics"]["roc_auc"] == again["metrics"]["roc_auc"]
    from curation.classifiers.references import normalize

    # buckets sized to the training data: the power of two at or above its distinct bigrams
    bigrams = {(a, b) for t in references.train_positive + references.train_negative
               for a, b in itertools.pairwise(normalize(t).split())}
    expected = max(262_144, 1 << (len(bigrams) - 1).bit_length())
    assert card["recipe"] == {"lr": 0.1, "dim": 100, "epoch": 2, "word_ngrams": 2, "min_count": 1, "bucket": expected,
                              "seed": 0, "threads": 1}
    assert (tmp_path / "a" / "model.bin").stat().st_size < expected * 100 * 4 * 1.5
    assert card["data"]["train_positive"]["documents"] > 100 and len(card["data"]["test_negative"]["sha256"]) == 64
    readme = (tmp_path / "a" / "README.md").read_text()
    assert "roc_auc" in readme and "## Recipe" in readme
    model = load_classifier(tmp_path / "a")
    scores = model.score(references.test_positive[:20] + references.test_negative[:20])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[:20].mean() > scores[20:].mean()  # small data: well ranked, not yet well calibrated


def test_fasttext_buckets_sized_to_the_data():
    from curation.classifiers.models import BUCKET_CAP, BUCKET_FLOOR, bucket_for

    def line(words: int, offset: int = 0) -> str:
        return "__label__hq " + " ".join(f"w{i + offset}" for i in range(words))

    assert bucket_for([line(10)], 2) == BUCKET_FLOOR == 262_144  # never below the floor
    assert bucket_for([line(262_145)], 2) == 262_144  # 262,144 distinct bigrams fit exactly
    assert bucket_for([line(200_000), line(62_147, 200_000)], 2) == 524_288  # counted across lines
    assert bucket_for([line(200_000)] * 3, 2) == 262_144  # repeats are not distinct
    assert bucket_for([line(600_000), line(500_000, 600_000)], 2) == BUCKET_CAP == 2_000_000


def test_embedding_classifier_beats_chance_and_scores(references, tmp_path):
    from curation.classifiers.models import load_classifier, train_classifier
    from curation.classifiers.references import ReferenceSplit

    small = ReferenceSplit(references.train_positive[:60], references.train_negative[:60],
                           references.test_positive[:30], references.test_negative[:30])
    card = train_classifier("embedding", small, tmp_path / "emb", {"positives": ["hq"], "negatives": ["web"]},
                            {"stack": False})
    assert card["metrics"]["roc_auc"] > 0.9 and "stack" not in card
    model = load_classifier(tmp_path / "emb")
    assert model.stack is None
    assert model.score(["A well written encyclopedic paragraph about the history of lobsters."]).shape == (1,)


def test_embedding_stack_is_fitted_on_human_labels(references, tmp_path, shared_data):
    """By default the embedding classifier stacks its logit with a fastText logit and two page
    statistics, fitted on the human labels of quality_dev; the card holds their cross-validated AUC."""
    from curation.classifiers.evaluate import read_labels
    from curation.classifiers.models import load_classifier, train_classifier
    from curation.classifiers.references import ReferenceSplit

    labels = shared_data / "quality_dev" / "dclm_human_majority_contested.jsonl"
    small = ReferenceSplit(references.train_positive[:80], references.train_negative[:80],
                           references.test_positive[:30], references.test_negative[:30])
    card = train_classifier("embedding", small, tmp_path / "emb", {"positives": ["hq"], "negatives": ["web"]},
                            {"stack_labels": [str(labels)]})
    stack = card["stack"]
    assert stack["documents"] == 218 and stack["features"][0] == "embedding_logit" and len(stack["coefficients"]) == 4
    assert 0.6 < stack["cv_roc_auc_mean"] < 1.0 and stack["cv_roc_auc_sd"] > 0  # better than chance, with its spread
    assert card["metrics"]["embedding_head_roc_auc"] > 0.9
    assert {p.name for p in (tmp_path / "emb").iterdir()} >= {"head.npz", "stack.npz", "stack_fasttext.bin", "card.json"}
    model = load_classifier(tmp_path / "emb")
    texts, _ = read_labels(str(labels))
    scores = model.score(texts[:40])
    assert model.stack is not None and ((scores > 0) & (scores < 1)).all()
    assert np.allclose(scores, load_classifier(tmp_path / "emb").score(texts[:40]))


def test_quality_stage_cascade_and_pool_training(ray_local, references, tmp_path, shared_data):
    from curation.core.pipeline import pipeline_from_tree
    from curation.core.runner import Runner

    docs = references.test_positive[:30] + references.test_negative[:30]
    path = tmp_path / "in" / "part-00000.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(docs))], "text": docs}), path)
    from curation.classifiers.models import train_classifier
    from curation.classifiers.references import ReferenceSplit

    small = ReferenceSplit(references.train_positive[:60], references.train_negative[:60], [], [])
    train_classifier("embedding", small, tmp_path / "emb", {"positives": ["hq"], "negatives": ["web"]}, {"stack": False})
    tree = {"name": "q", "stages": {"quality": {
        "kind": "quality", "embedding_model": str(tmp_path / "emb"), "cascade_threshold": 0.5,
        "tokenizer_processes": 2,  # as on a GPU machine: tokenizer processes spawned from a Ray worker
        "train": {"kinds": ["fasttext"], "positives": [str(shared_data / "hq_reference" / "*")], "max_per_class": 400}}}}
    Runner(pipeline_from_tree(tree, [], None), str(tmp_path / "out"), echo=lambda m: None, flat=True).run([str(path)])
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    fast = table.column("quality_fasttext").to_numpy()
    embedded = table.column("quality_embedding")
    assert embedded.null_count == int((fast < 0.5).sum()) > 0  # below the cascade threshold: not sent on
    assert all(v is not None for v, f in zip(embedded.to_pylist(), fast, strict=True) if f >= 0.5)
    card = json.loads((tmp_path / "out" / "_models" / "fasttext" / "card.json").read_text())
    assert card["sources"]["negatives"] == ["pool sample"]  # DCLM-style negatives: the pool itself
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert set(manifest["resolved"]["models"]) == {"fasttext", "embedding"}
    # the trained model is measured on the human labels of quality_dev (the default eval_labels)
    human = manifest["resolved"]["models"]["fasttext"]["human_eval"]["dclm_human_majority_contested.jsonl"]
    assert human["documents"] == 218 and 0.5 < human["roc_auc"] < 1.0
    assert card["human_eval"]["dclm_human_majority_contested.jsonl"]["roc_auc"] == pytest.approx(human["roc_auc"], abs=1e-4)
    assert not (tmp_path / "out" / "_work").exists()  # the resolve's checkpoint goes with the commit


def test_a_model_trained_before_a_kill_is_not_trained_again(tmp_path, shared_data, monkeypatch):
    """The quality stage's training is a checkpointed phase: an attempt killed after it (while the
    shards are scored) resumes with the model it trained; another configuration trains anew."""
    import curation.classifiers.models as models
    from curation.classifiers.references import read_texts
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.config import build_config
    from curation.core.stage import StageContext

    path = tmp_path / "part-00000.parquet"
    web = [t for t in read_texts(str(next((shared_data / "web_negatives").glob("*.jsonl.gz"))))][:200]
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(web))], "text": web}), path)
    options = {"train": {"kinds": ["fasttext"], "positives": [str(shared_data / "hq_reference" / "*")],
                         "max_per_class": 300, "eval_labels": []}}
    ctx = StageContext(run_root=str(tmp_path), stage_name="quality", stage_dir=str(tmp_path / "q"), key="k1")
    first = QualityStage(build_config(QualityConfig, options, "quality")).resolve([str(path)], ctx)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(models, "train_classifier", no_training)
    stage = QualityStage(build_config(QualityConfig, options, "quality"))
    assert stage.resolve([str(path)], ctx) == first
    assert "(training fasttext resumed)" in stage.describe_resolved(first)
    ctx.key = "k2"  # another configuration: its work folder is not this one's
    with pytest.raises(AssertionError, match="trained again"):
        stage.resolve([str(path)], ctx)


def test_quality_stage_reads_batches_of_its_configured_size(tmp_path):
    """``quality.batch_size`` sets the record batches scored at once (it used to be ignored)."""
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.stage import ShardTask, StageContext

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(20)], "text": ["a page of text"] * 20}), path)
    sizes = []

    class Recorded(QualityStage):
        def setup(self, ctx):
            self.models = {}

        def process_batches(self, batches, state, stats):
            for batch in batches:
                sizes.append(batch.num_rows)
                yield batch

    assert QualityStage(QualityConfig(fasttext_model="m")).batch_size == 1024  # a CPU
    ctx = StageContext(run_root=str(tmp_path), stage_name="quality", stage_dir=str(tmp_path / "out"), key="k")
    Recorded(QualityConfig(fasttext_model="m", batch_size=7)).run_shard(ShardTask(0, "part-00000", [str(path)]), ctx)
    assert sizes == [7, 7, 6]


@pytest.mark.parametrize("streams", [True, False])
def test_quality_stage_pairs_streamed_scores_with_their_batches(tmp_path, streams):
    """The embedding model takes the next record batch before it returns this one's scores (the
    encoder's stream); each batch still gets its own scores, on the rows the cascade sent on, with
    the alias column. A model without a stream (an HF classifier) is called batch by batch."""
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.stage import ShardTask, StageContext

    texts = [f"page {i} " + "text " * (i % 9) for i in range(20)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(20)], "text": texts}), path)
    taken: list[int] = []

    class FastText:
        def score(self, column):
            return np.array([(len(t) // 5) % 2 for t in column.to_pylist()], np.float32)

    class Embedding:
        def score(self, batch_texts):
            return np.array([len(t) / 100 for t in batch_texts], np.float32)

        def stream(self, lists):  # one list ahead, as SentenceEncoder.embed_stream
            previous = None
            for batch_texts in lists:
                taken.append(len(batch_texts))
                if previous is not None:
                    yield self.score(previous)
                previous = batch_texts
            if previous is not None:
                yield self.score(previous)

    if streams:
        Embedding.score_stream = Embedding.stream

    class Faked(QualityStage):
        def setup(self, ctx):
            self.models = {"fasttext": FastText(), "embedding": Embedding()}

    stage = Faked(QualityConfig(fasttext_model="m", embedding_model="e", batch_size=7, cascade_threshold=0.5,
                                score_alias="score"))
    ctx = StageContext(run_root=str(tmp_path), stage_name="quality", stage_dir=str(tmp_path / "out"), key="k")
    receipt = stage.run_shard(ShardTask(0, "part-00000", [str(path)]), ctx)
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    fast = FastText().score(pa.array(texts))
    expected = [len(t) / 100 if f >= 0.5 else None for t, f in zip(texts, fast, strict=True)]
    assert table.column("id").to_pylist() == [f"d{i}" for i in range(20)]
    assert table.column("quality_embedding").to_pylist() == pytest.approx(expected)
    assert table.column("score").to_pylist() == table.column("quality_embedding").to_pylist()
    assert receipt.stats.docs_in == receipt.stats.docs_out == 20
    assert receipt.stats.extra["cascade_passed"] == sum(f >= 0.5 for f in fast)
    assert len(taken) == (3 if streams else 0)


def test_local_hf_checkpoint(tmp_path):
    from curation.classifiers.models import load_classifier
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)] + ["the", "good", "text"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    checkpoint = tmp_path / "checkpoint"
    BertForSequenceClassification(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    scores = load_classifier(checkpoint).score(["the good text", "w1 w2 w3", "the"])
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()


def test_classify_cli_warns_when_the_embedding_head_cannot_be_stacked(shared_data, tmp_path):
    model = tmp_path / "model"
    result = run_curate(["classify", "train", "--kind", "embedding", "--positives", str(shared_data / "hq_reference" / "*"),
                         "--negatives", str(shared_data / "web_negatives" / "*.jsonl.gz"), "--output", str(model),
                         "--max-per-class", "40", "--set", f"stack_labels=[{tmp_path / 'none' / '*.jsonl'}]"])
    assert "warning: no human-labelled documents at" in result.stderr and "not stacked" in result.stderr
    assert "stack" not in json.loads((model / "card.json").read_text())
    assert not (model / "stack.npz").exists()


def test_classify_cli_train_and_score(shared_data, tmp_path):
    model = tmp_path / "model"
    out = run_curate(["classify", "train", "--positives", str(shared_data / "hq_reference" / "*"),
                      "--negatives", str(shared_data / "web_negatives" / "*.jsonl.gz"), "--output", str(model),
                      "--max-per-class", "400", "--set", "epoch=3", "--set", "bucket=50000"]).stdout
    recipe = json.loads((model / "card.json").read_text())["recipe"]
    assert "held-out: roc_auc" in out and recipe["epoch"] == 3 and recipe["bucket"] == 50_000
    assert (model / "model.bin").stat().st_size < 50_000 * 100 * 4 + 100e6  # the 2M default's file is ~850 MB
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"x{i}", "text": t}) for i, t in enumerate(
        ["The European lobster is a species of clawed lobster found in the eastern Atlantic Ocean.",
         "click here buy cheap pills casino bonus free win now now now"])) + "\n")
    scored = tmp_path / "scored"
    run_curate(["classify", "score", "--model", str(model), "--input", str(docs), "--output", str(scored)])
    table = pq.read_table(next(scored.glob("part-*.parquet")))
    assert {"id", "score"} <= set(table.schema.names)
    scores = dict(zip(table.column("id").to_pylist(), table.column("score").to_pylist(), strict=True))
    assert scores["x0"] > scores["x1"]
    assert np.isfinite(list(scores.values())).all()


@pytest.fixture(scope="module")
def sentence_encoder():
    from curation.classifiers.encoder import SentenceEncoder
    from curation.classifiers.models import default_embedding_model

    return SentenceEncoder(default_embedding_model(), 256)


def test_batch_widths_rounded_up_give_the_same_embeddings(sentence_encoder):
    """``width_multiple`` pads a batch to a multiple of its width (fewer shapes for a GPU's kernel
    plans); the padding is masked, so the vectors are the ones of unrounded batches. Padded batches
    go in with a 4D mask, which transformers takes as it is, and give the 2D mask's vectors."""
    from curation.classifiers.encoder import TokenBatcher

    rng = np.random.default_rng(1)
    words = ["the", "web", "page", "quality", "text", "über", "résumé"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 400, 40)]
    plain = sentence_encoder.embed(texts)
    assert {"waiting_s", "feeding_s", "batches", "shapes"} <= set(sentence_encoder.last_timing)
    assert sentence_encoder._mask_4d  # padded batches went in with a 4D mask (no GPU wait), not refused
    sentence_encoder._mask_4d = False
    try:  # the 2D mask transformers would look into gives the same vectors
        assert np.abs(sentence_encoder.embed(texts) - plain).max() < 1e-5
    finally:
        sentence_encoder._mask_4d = True
    base = sentence_encoder.batcher
    rounded = TokenBatcher(base.tokenizer_json, base.max_seq_length, base.pad_id, base.batch_tokens, width_multiple=16)
    widths = {ids.shape[1] for _, ids, _ in rounded.batches(texts)}
    assert all(w % 16 == 0 or w == base.max_seq_length for w in widths), widths
    sentence_encoder.batcher = rounded
    try:
        assert np.abs(sentence_encoder.embed(texts) - plain).max() < 1e-5
    finally:
        sentence_encoder.batcher = base


@given(st.integers(0, 2_000_000), st.integers(0, 32))
def test_windows_are_even_and_their_chunks_keep_every_worker_busy(documents, processes):
    """A list is cut into even windows of at most WINDOW_DOCS (sorted into batches as one), and a
    window into one round of chunks: no worker holds more than its share plus one document, so
    none idles while the window is being finished (chunks of 1,024 left 10 of 15 processes idle
    for the second round of 20k documents)."""
    from curation.classifiers.encoder import SentenceEncoder

    encoder = object.__new__(SentenceEncoder)  # the sizes read the worker count only
    encoder.tokenizer_processes = processes
    workers = processes or SentenceEncoder.TOKENIZER_THREADS
    window = encoder.window_size(documents)
    windows = [min(window, documents - start) for start in range(0, documents, window)]
    assert sum(windows) == documents and all(0 < w <= SentenceEncoder.WINDOW_DOCS for w in windows)
    assert max(windows, default=0) - min(windows, default=0) <= len(windows)  # even, up to rounding
    for size in set(windows):
        chunk = encoder.chunk_size(size)
        assert SentenceEncoder.MIN_CHUNK_DOCS <= chunk <= SentenceEncoder.CHUNK_DOCS
        chunks = -(-size // chunk)
        rounds = -(-chunks // workers)
        busiest = min(rounds * chunk, size)  # documents of the worker that finishes the window last
        assert busiest <= max(size / workers + 1, SentenceEncoder.MIN_CHUNK_DOCS) or chunk == SentenceEncoder.CHUNK_DOCS


def test_sentence_encoder_matches_sentence_transformers(sentence_encoder):
    """The fast path (prefix tokenization, token-sized batches, own pooling) gives the same vectors."""
    rng = np.random.default_rng(0)
    words = ["the", "of", "quality", "web", "page", "über", "naïve", "東京", "résumé,", "antidisestablishmentarianism", "(x)", "3.14"]
    texts = ["", "   ", "one", "a\n\nb\tc"] + [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 900, 60)]
    texts += ["x" * 5000, "ab " * 2000, "токен " * 700]
    texts += ["The CAFÉ’s “menu” — ΟΔΟΣ. İstanbul\u00a0\u3000x\x01\u0301"] * 3
    sentence_encoder.CHUNK_DOCS = 16  # several windows of several chunks, through threads, then processes
    sentence_encoder.WINDOW_DOCS = 40
    try:
        threads = sentence_encoder.embed(texts)
        assert np.array_equal(sentence_encoder.embed(texts, progress=True), threads)  # with a progress bar drawn
        sentence_encoder.tokenizer_processes = 2
        processes = sentence_encoder.embed(texts)
        assert sentence_encoder._processes is not None
    finally:
        del sentence_encoder.CHUNK_DOCS, sentence_encoder.WINDOW_DOCS
        sentence_encoder.close()
        sentence_encoder.tokenizer_processes = 0
    reference = sentence_encoder.st.encode(texts, normalize_embeddings=True, batch_size=32)
    assert threads.shape == (len(texts), 384)
    assert np.abs(threads - reference).max() < 1e-5
    assert np.array_equal(processes, threads)


def test_embed_stream_returns_each_list_as_embed_does(sentence_encoder):
    """Lists of every size (none, less than a chunk, several windows) come back in order, each with
    the vectors a call of its own gives; the timing counts the stream's windows and padding."""
    rng = np.random.default_rng(2)
    words = ["river", "quality", "the", "page", "über", "of"]
    lists = [[" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 300, size)] for size in (0, 5, 37, 0, 1, 60)]
    sentence_encoder.CHUNK_DOCS, sentence_encoder.WINDOW_DOCS = 8, 16
    try:
        streamed = list(sentence_encoder.embed_stream(iter(lists)))
        timing = sentence_encoder.last_timing
        alone = [sentence_encoder.embed(texts) for texts in lists]
        abandoned = sentence_encoder.embed_stream(iter(lists))  # a stage that fails mid-shard
        assert np.array_equal(next(abandoned), alone[0])
        abandoned.close()
        assert np.array_equal(sentence_encoder.embed(lists[2]), alone[2])  # the encoder works on
    finally:
        del sentence_encoder.CHUNK_DOCS, sentence_encoder.WINDOW_DOCS
    assert [v.shape for v in streamed] == [(len(t), 384) for t in lists]
    assert all(np.array_equal(a, b) for a, b in zip(streamed, alone, strict=True))
    assert timing["windows"] == 0 + 1 + 3 + 0 + 1 + 4 and timing["padding"] >= 1.0


def test_embed_stream_tokenizes_the_next_list_while_the_model_runs(sentence_encoder, monkeypatch):
    """The pipeline across a stage's record batches: list k+1 is with the tokenizer before the
    model has had all of list k, and list k comes back only once list k+1 is on the model too."""
    events: list[tuple[str, int]] = []
    list_of_output: dict[int, int] = {}
    batcher = sentence_encoder.batcher
    ragged, new_output, launch = batcher.ragged, sentence_encoder._new_output, sentence_encoder._launch

    def recording_ragged(texts):
        events.append(("tokenize", int(texts[0].split()[1])))
        return ragged(texts)

    def recording_new_output(documents):
        vectors = new_output(documents)
        list_of_output[id(vectors)] = len(list_of_output)
        return vectors

    def recording_launch(vectors, *args):
        events.append(("model", list_of_output[id(vectors)]))
        return launch(vectors, *args)

    monkeypatch.setattr(batcher, "ragged", recording_ragged)
    monkeypatch.setattr(sentence_encoder, "_new_output", recording_new_output)
    monkeypatch.setattr(sentence_encoder, "_launch", recording_launch)
    lists = [[f"list {k} " + "water quality of rivers " * 40] * 48 for k in range(3)]
    for k, vectors in enumerate(sentence_encoder.embed_stream(lists)):
        events.append(("returned", k))
        assert vectors.shape == (48, 384)
    for k in range(2):
        last_model = max(i for i, event in enumerate(events) if event == ("model", k))
        assert events.index(("tokenize", k + 1)) < last_model, events
        assert events.index(("returned", k)) > max(i for i, e in enumerate(events) if e == ("model", k + 1)), events


def test_a_compiled_encoder_gives_the_same_vectors(sentence_encoder):
    """``compile_model``: one dynamic-shape graph for batches of every shape, padded or not."""
    from curation.classifiers.encoder import SentenceEncoder
    from curation.classifiers.models import default_embedding_model

    texts = ["water quality of rivers " * int(n) for n in (1, 3, 40, 7, 60, 2)]
    compiled = SentenceEncoder(default_embedding_model(), 256, compile_model=True)
    assert type(compiled.model).__name__ == "OptimizedModule"
    assert np.abs(compiled.embed(texts) - sentence_encoder.embed(texts)).max() < 1e-5
    assert np.abs(compiled.embed(texts[:4]) - sentence_encoder.embed(texts[:4])).max() < 1e-5  # another shape


@pytest.mark.parametrize("processes", [0, 2])
def test_two_streams_at_once_share_one_encoder(sentence_encoder, processes):
    """A GPU actor scores two shards at once in threads over one encoder (one tokenizer pool, one
    model): each stream's vectors are the ones it gets alone."""
    import threading

    rng = np.random.default_rng(7)
    shards = [[[f"shard {s} " + " ".join(rng.choice(["river", "page", "the", "of"], size=int(n)))
                for n in rng.integers(1, 200, 30)] for _ in range(3)] for s in range(2)]
    alone = [[sentence_encoder.embed(texts) for texts in lists] for lists in shards]
    sentence_encoder.tokenizer_processes = processes
    results: dict[int, list[np.ndarray]] = {}
    try:
        def run(index: int) -> None:
            results[index] = list(sentence_encoder.embed_stream(shards[index]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        sentence_encoder.close()
        sentence_encoder.tokenizer_processes = 0
    for index in range(2):
        assert all(np.abs(a - b).max() < 1e-6 for a, b in zip(results[index], alone[index], strict=True))


def test_quality_stage_scores_two_shards_at_once_in_one_worker(tmp_path):
    """On a GPU the stage asks Ray to run two shards at once in one actor (one shard's tokenizing
    overlaps the other's last batches on the GPU): run_shard from two threads over one setup
    writes the shards a sequential run writes."""
    import threading

    from curation.classifiers.models import EmbeddingRecipe, default_embedding_model
    from curation.classifiers.stage import QualityConfig, QualityStage

    from curation.core.stage import ShardTask, StageContext

    head = tmp_path / "head"
    head.mkdir()
    rng = np.random.default_rng(3)
    np.savez(head / "head.npz", weights=rng.normal(size=384).astype(np.float32), bias=np.zeros(1, np.float32))
    recipe = dataclasses.asdict(EmbeddingRecipe(model=default_embedding_model(), stack=False))
    (head / "card.json").write_text(json.dumps({"kind": "embedding", "recipe": recipe}))
    shards = []
    for i in range(2):
        path = tmp_path / f"in-{i}.parquet"
        texts = [f"shard {i} " + " ".join(rng.choice(["river", "quality", "page", "of"], size=int(n)))
                 for n in rng.integers(1, 150, 50)]
        pq.write_table(pa.table({"id": [f"{i}-{j}" for j in range(50)], "text": texts}), path)
        shards.append(ShardTask(i, f"part-{i:05d}", [str(path)]))
    assert QualityStage(QualityConfig(embedding_model=str(head), num_gpus=1.0)).concurrent_shards() == 2
    assert QualityStage(QualityConfig(embedding_model=str(head), num_gpus=0.0)).concurrent_shards() == 1
    assert QualityStage(QualityConfig(embedding_model=str(head), num_gpus=1.0, concurrent_shards=1)).concurrent_shards() == 1

    def scored(out: str, concurrent: bool) -> list[list[float]]:
        stage = QualityStage(QualityConfig(embedding_model=str(head), batch_size=16))
        ctx = StageContext(run_root=str(tmp_path), stage_name="quality", stage_dir=str(tmp_path / out), key="k")
        ctx.resolved = stage.resolve([t.inputs[0] for t in shards], ctx)
        stage.ensure_setup(ctx)
        if concurrent:
            threads = [threading.Thread(target=stage.run_shard, args=(task, ctx)) for task in shards]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
        else:
            for task in shards:
                stage.run_shard(task, ctx)
        return [pq.read_table(tmp_path / out / f"{t.name}.parquet").column("quality_embedding").to_pylist() for t in shards]

    for one, other in zip(scored("sequential", False), scored("concurrent", True), strict=True):
        assert one == pytest.approx(other, abs=1e-6)


def test_tokenizer_processes_default_to_this_gpus_share_of_the_cpus():
    """An 8-GPU node's actors share its CPUs: each GPU's encoder gets its share but one (not every
    CPU but one, 8 times over); a one-GPU machine keeps 15 of 16. In a Ray worker the node's GPUs
    come from Ray (CUDA shows an actor only its own)."""
    from curation.classifiers.encoder import default_tokenizer_processes, gpus_on_this_node

    assert default_tokenizer_processes(16, 1) == 15
    assert default_tokenizer_processes(128, 8) == 15
    assert default_tokenizer_processes(64, 8) == 7
    assert default_tokenizer_processes(192, 1) == 16
    assert default_tokenizer_processes(4, 8) == 1
    import ray

    ray.shutdown()  # a local Ray that declares 2 GPUs (CUDA sees none here): the count is Ray's
    ray.init(num_cpus=1, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        assert gpus_on_this_node() == 2
    finally:
        ray.shutdown()  # the next test that asks for the local Ray starts it again
    assert gpus_on_this_node() == 0


def test_a_script_without_a_main_guard_falls_back_to_threads(tmp_path):
    """Spawned processes re-run an unguarded script; the encoder must neither hang (CPython's spawn
    blocks for good on a large argument to a child that died) nor fail, but warn and use threads."""
    import subprocess
    import sys

    script = tmp_path / "score.py"
    script.write_text(
        "import numpy as np\n"
        "from curation.classifiers.encoder import SentenceEncoder\n"
        "from curation.classifiers.models import default_embedding_model\n"
        "encoder = SentenceEncoder(default_embedding_model(), 256, tokenizer_processes=2)\n"
        "texts = [f'page {i} about rivers' for i in range(50)]\n"
        "vectors = encoder.embed(texts)\n"
        "reference = encoder.st.encode(texts, normalize_embeddings=True)\n"
        "print('max difference', float(np.abs(vectors - reference).max()), 'processes', encoder.tokenizer_processes)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tokenizer processes did not start" in result.stderr
    difference, processes = result.stdout.split()[-3], result.stdout.split()[-1]
    assert float(difference) < 1e-5 and processes == "0"


def test_a_dead_tokenizer_process_fails_the_call_and_the_next_call_recovers(sentence_encoder):
    import os
    import signal
    from concurrent.futures.process import BrokenProcessPool

    texts = [f"document {i} about water quality" for i in range(200)]
    sentence_encoder.tokenizer_processes = 2
    try:
        expected = sentence_encoder.embed(texts)
        for pid in list(sentence_encoder._processes._processes):  # as the kernel's OOM killer would
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            sentence_encoder.embed(texts)
        assert sentence_encoder._processes is None
        assert np.array_equal(sentence_encoder.embed(texts), expected)
    finally:
        sentence_encoder.close()
        sentence_encoder.tokenizer_processes = 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.sampled_from("ab cé\n東,.-x"), max_size=3000), min_size=1, max_size=8))
def test_prefix_tokenization_equals_whole_text(sentence_encoder, texts):
    full = [e.ids for e in sentence_encoder.tokenizer.encode_batch_fast(texts)]
    assert sentence_encoder.token_ids(texts) == full


# Characters around every rule of BERT's normalizer: cases, accents precomposed and combining, the
# contextual capital sigma, CJK, control characters, space-like characters, typography, emoji
NORMALIZER_EDGES = ("aZ09 .,;-_'\"()\t\n\r\x0b\x0c\x1c\x85\xa0\u2003\u3000\x00\x01\x7f\ufffd\u200b"
                    "éÉßẞİıΣσςΑΩДдй\u0301\u0308’“”—…€©½東京한🙂\U0002000b")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.sampled_from(NORMALIZER_EDGES), max_size=60) | st.text(max_size=40),
                min_size=1, max_size=12))
def test_normalizer_shortcut_tokenizes_as_the_normalizer_does(sentence_encoder, texts):
    """Text the normalizer would only lower-case skips it; the ids are the normalizer's either way."""
    full = [e.ids for e in sentence_encoder.tokenizer.encode_batch_fast(texts)]
    assert sentence_encoder.batcher.encode(texts) == full


def test_normalizer_shortcut_every_character(sentence_encoder):
    """Each character the shortcut could take, in words and alone, at the start and end of a text."""
    texts = [f"{c}Ab{c}cD {c} x{c}" for c in map(chr, range(0x3100)) if not 0xD800 <= ord(c) <= 0xDFFF]
    full = [e.ids for e in sentence_encoder.tokenizer.encode_batch_fast(texts)]
    assert sentence_encoder.batcher.encode(texts) == full
    shortcut, unsafe, _ = sentence_encoder.batcher.shortcut
    taken = sum(unsafe.search(t) is None for t in texts)
    assert 5000 < taken < len(texts)  # most letters and punctuation of Latin, Greek and Cyrillic scripts
    assert unsafe.search("Plain English — with “quotes”, 3½ € and\u00a0spaces.") is None
    assert unsafe.search("café") and unsafe.search("東") and unsafe.search("x\x01")
    specials = ["[SEP]", "a [CLS] b", "x[MASK]y", "[PAD][UNK]", "[sep]"]  # the tokenizer matches these in the raw text
    assert sentence_encoder.batcher.encode(specials) == [e.ids for e in sentence_encoder.tokenizer.encode_batch_fast(specials)]


def test_the_pool_sample_reads_only_the_drawn_rows_and_draws_as_sampling_the_whole_list(tmp_path):
    """Negatives drawn from the stage's input are the same draw as ``random.sample`` over the list of
    every text (what the stage did when it held the whole pool in memory), read a batch at a time;
    empty texts drawn are left out."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq
    from curation.classifiers.stage import pool_sample

    from curation.core.io import Storage

    sizes, paths, everything = [9000, 0, 12000, 5], [], []
    for i, rows in enumerate(sizes):
        texts = [f"shard {i} row {r}" for r in range(rows)]
        everything += texts
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(pa.table({"id": list(range(rows)), "text": pa.array(texts, pa.string())}), paths[-1],
                       row_group_size=5000)
    for size, seed in [(20000, 0), (100, 3), (30000, 1)]:
        expected = random.Random(seed).sample(everything, min(size, len(everything)))
        assert pool_sample(paths, Storage(), "text", size, seed) == expected
    gappy = str(tmp_path / "gappy.parquet")
    pq.write_table(pa.table({"text": ["a", "", None, "b"] * 50}), gappy)
    drawn = pool_sample([gappy], Storage(), "text", 120, 0)
    assert 0 < len(drawn) < 120 and set(drawn) == {"a", "b"}
