"""Evaluation against human labels: the label reader, the metrics, and `curate classify eval`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_curate
from curation.classifiers.evaluate import human_label_metrics, read_labels
from hypothesis import given
from hypothesis import strategies as st

from curation.core.errors import CurationError


def write_jsonl(path, records) -> str:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


def test_read_labels_jsonl_and_parquet(tmp_path):
    records = [{"text": "good prose", "label": 1}, {"text": "spam", "label": 0}, {"text": "fine", "label": True}]
    texts, labels = read_labels(write_jsonl(tmp_path / "l.jsonl", records))
    assert texts == ["good prose", "spam", "fine"] and labels.tolist() == [1, 0, 1]
    pq.write_table(pa.Table.from_pylist([{"body": r["text"], "y": int(r["label"])} for r in records]),
                   tmp_path / "l.parquet")
    texts, labels = read_labels(str(tmp_path / "l.parquet"), text_field="body", label_field="y")
    assert labels.tolist() == [1, 0, 1]


def test_labels_as_other_tools_write_them(tmp_path):
    values = ["high", "LOW", "1", "0", " yes ", "no", 1.0, 0.0, "positive", "negative", True, False]
    records = [{"text": f"doc {i}", "label": v} for i, v in enumerate(values)]
    _, labels = read_labels(write_jsonl(tmp_path / "words.jsonl", records))
    assert labels.tolist() == [1, 0] * 6


@pytest.mark.parametrize(("records", "message"), [
    ([{"text": "a", "label": 1}, {"text": "b", "label": 2}], "record 2 has label 2"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": "maybe"}], "record 2 has label 'maybe'"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": 0.5}], "record 2 has label 0.5"),
    ([{"text": "a", "label": 1}, {"label": 0}], "record 2 has no text"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": 1}], "needs both labels"),
])
def test_read_labels_names_the_bad_record(tmp_path, records, message):
    with pytest.raises(CurationError, match=message):
        read_labels(write_jsonl(tmp_path / "bad.jsonl", records))


def test_read_labels_bad_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(CurationError, match=r"bad.jsonl:2: not JSON"):
        read_labels(str(path))


def test_metrics_on_known_rankings():
    labels = np.array([1] * 10 + [0] * 10)
    perfect = human_label_metrics(np.linspace(1, 0, 20), labels)
    assert perfect["roc_auc"] == 1.0 and perfect["precision_at_top_10pct"] == 1.0
    assert perfect["precision_at_top_30pct"] == 1.0 and perfect["accuracy_at_threshold"] == 1.0
    reversed_ = human_label_metrics(np.linspace(0, 1, 20), labels)
    assert reversed_["roc_auc"] == 0.0 and reversed_["precision_at_top_10pct"] == 0.0
    calibration = perfect["calibration"]
    assert [row["share_high_quality"] for row in calibration] == [0.0, 0.0, 0.5, 1.0, 1.0]  # low scores first
    assert sum(row["documents"] for row in calibration) == 20


@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=60).filter(
    lambda rows: len({label for _, label in rows}) == 2))
def test_metrics_are_bounded_and_calibration_covers_every_document(rows):
    scores = np.array([s for s, _ in rows])
    labels = np.array([int(label) for _, label in rows])
    metrics = human_label_metrics(scores, labels)
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    assert sum(row["documents"] for row in metrics["calibration"]) == len(rows)
    assert metrics["high_quality"] == labels.sum()


def test_classify_eval_cli_records_in_the_card(shared_data, tmp_path):
    model = tmp_path / "model"
    run_curate(["classify", "train", "--positives", str(shared_data / "hq_reference" / "*"),
                "--negatives", str(shared_data / "web_negatives" / "*.jsonl.gz"), "--output", str(model),
                "--max-per-class", "400"])
    good = ("The committee published its annual report on regional water quality, describing how sampling "
            "sites were chosen and what the measurements showed over the past decade.")
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"text": good, "label": 1}, {"text": "buy now click here casino casino win win", "label": 0},
        {"text": good.replace("water", "air"), "label": 1}, {"text": "| home | login | cart | 0 items |", "label": 0}])
    out = run_curate(["classify", "eval", "--model", str(model), "--labels", labels,
                      "--plot", str(tmp_path / "roc.png")]).stdout
    assert "ROC AUC" in out and "precision, top 10%" in out and "calibration" in out
    card = json.loads((model / "card.json").read_text())
    entry = card["human_eval"]["labels.jsonl"]
    assert entry["documents"] == 4 and entry["roc_auc"] == 1.0 and len(entry["labels_sha256"]) == 64
    assert "## Against human labels" in (model / "README.md").read_text()
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
