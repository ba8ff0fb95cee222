"""Selection: requirements with their reasons, duplicates, a SQL where, and quantile thresholds
resolved over the whole input (per group, ties at the threshold kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core.errors import ConfigError
from curation.core.stage import ShardStats, StageContext
from curation.filters.select import SelectConfig, SelectStage


def _select(table: pa.Table, tmp_path: Path, **options) -> tuple[pa.Table, ShardStats, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "part-00000.parquet"
    pq.write_table(table, path)
    stage = SelectStage(SelectConfig(**options))
    ctx = StageContext(run_root=str(tmp_path), stage_name="select", stage_dir=str(tmp_path / "o"), key="k")
    ctx.resolved = stage.resolve([str(path)], ctx)
    stats = ShardStats(shard="x")
    kept = stage.process_batch(table.to_batches()[0], stage.begin_shard(None, ctx), stats)
    return pa.Table.from_batches([kept]), stats, ctx.resolved


def test_top_percent_per_group(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"source": ["a"] * 500 + ["b"] * 500, "score": np.concatenate([rng.random(500), rng.random(500) + 5]),
                      "filter_keep": [True] * 1000})
    kept, _, _ = _select(table, tmp_path, score="score", top_percent=10, group_by="source")
    counts = {g: kept.column("source").to_pylist().count(g) for g in ("a", "b")}
    assert counts == {"a": 50, "b": 50}  # 10% of each group, not 10% of the pooled scores


def test_requirements_duplicates_and_where_give_reasons(tmp_path):
    table = pa.table({
        "id": list("abcdef"),
        "filter_keep": [True, False, True, True, True, True],
        "filter_reason": [None, "page_length", None, None, None, None],
        "is_duplicate": [False, False, True, False, False, False],
        "language": ["en", "en", "en", "de", "en", "en"],
        "score": [0.9, 0.9, 0.9, 0.9, 0.1, 0.5],
    })
    kept, stats, resolved = _select(table, tmp_path, require=["filter_keep"], drop_duplicates=True,
                                    where="language = 'en'", score="score", top_percent=50)
    assert kept.column("id").to_pylist() == ["a", "f"]
    assert stats.dropped == {"filter:page_length": 1, "duplicate": 1, "where": 1, "below_score_threshold": 1}
    assert resolved["pool_rows"] == 3  # a, e, f pass everything but the score
    assert resolved["thresholds"] == {"*": 0.5}


def test_ties_at_the_threshold_are_kept(tmp_path):
    table = pa.table({"id": [str(i) for i in range(10)], "score": [1.0] * 10})
    kept, _, _ = _select(table, tmp_path, require=[], score="score", top_percent=10)
    assert kept.num_rows == 10


def test_min_score_and_errors(tmp_path):
    table = pa.table({"id": ["a", "b"], "score": [0.2, 0.8]})
    kept, _, resolved = _select(table, tmp_path, require=[], score="score", min_score=0.5)
    assert kept.column("id").to_pylist() == ["b"] and resolved == {"thresholds": {"*": 0.5}}
    with pytest.raises(ConfigError, match="required column 'filter_keep'"):
        _select(table, tmp_path, require=["filter_keep"])
    with pytest.raises(ValueError):
        SelectConfig(score="score", top_percent=10, min_score=0.5)


def _quality_manifest(tmp_path: Path, models: dict) -> None:
    import json

    (tmp_path / "_manifest.json").write_text(json.dumps({"kind": "quality", "resolved": {"models": models}}))


def test_best_human_labelled_picks_the_model_people_agree_with(tmp_path):
    table = pa.table({"quality_fasttext": np.linspace(0, 1, 100), "quality_embedding": np.linspace(1, 0, 100),
                      "filter_keep": [True] * 100})
    _quality_manifest(tmp_path, {
        "fasttext": {"human_eval": {"dev.jsonl": {"roc_auc": 0.72, "documents": 218}}},
        "embedding": {"human_eval": {"dev.jsonl": {"roc_auc": 0.95, "in_training": True, "cv_roc_auc_mean": 0.74}}}})
    kept, stats, resolved = _select(table, tmp_path, score="best_human_labelled", top_percent=10)
    # the embedding's in-sample 0.95 does not count: its cross-validated 0.74 beats fastText's 0.72
    assert resolved["score"] == "quality_embedding"
    assert resolved["human_label_roc_auc"] == {"quality_fasttext": 0.72, "quality_embedding": 0.74}
    assert min(kept.column("quality_embedding").to_pylist()) >= 0.9 and kept.num_rows == 10
    assert stats.dropped == {"below_quality_embedding_threshold": 90}


def test_best_human_labelled_without_labels(tmp_path):
    table = pa.table({"quality_fasttext": np.linspace(0, 1, 10), "filter_keep": [True] * 10})
    _quality_manifest(tmp_path, {"fasttext": {"human_eval": {}}})
    _, _, resolved = _select(table, tmp_path, score="best_human_labelled", top_percent=50)
    assert resolved["score"] == "quality_fasttext"  # the one model there is
    _quality_manifest(tmp_path, {"fasttext": {}, "embedding": {}})
    with pytest.raises(ConfigError, match="measured on human labels"):
        _select(table, tmp_path, score="best_human_labelled", top_percent=50)


def test_the_quantile_pool_reads_scores_by_batch_not_the_text(tmp_path, monkeypatch):
    """The pool reads a shard in batches and only the columns the thresholds need, so a crawl's text
    never goes through resolve; the thresholds are those of the whole table at once."""
    import curation.filters.select as select

    rng = np.random.default_rng(1)
    n = 1000
    table = pa.table({"text": ["x" * 50] * n, "source": rng.choice(["a", "b", "c"], n).tolist(),
                      "score": rng.random(n), "filter_keep": (rng.random(n) > 0.2).tolist(),
                      "is_duplicate": (rng.random(n) > 0.9).tolist()})
    whole, _, expected = _select(table, tmp_path / "whole", score="score", top_percent=25, group_by="source")
    monkeypatch.setattr(select, "POOL_BATCH_ROWS", 64)
    read: list[list[str]] = []
    original = pq.ParquetFile.iter_batches

    def recording(self, *args, **kwargs):
        read.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording)
    kept, _, resolved = _select(table, tmp_path / "batched", score="score", top_percent=25, group_by="source")
    assert resolved == expected and kept.equals(whole)
    assert read == [["score", "filter_keep", "is_duplicate", "source"]]
    with pytest.raises(ConfigError, match="group_by column 'crawl' is missing"):
        _select(table, tmp_path / "missing", score="score", top_percent=25, group_by="crawl")
    _select(table, tmp_path / "where", score="score", top_percent=25, where="length(text) > 10")
    assert read[-1] is None  # a predicate may name any column
