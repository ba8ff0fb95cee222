"""Evaluation against human labels: the label reader, the metrics, and `curate classify eval`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_curate
from curation.classifiers.evaluate import format_metrics, human_label_metrics, read_labels
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


@pytest.mark.parametrize("name", ["l.csv", "l.tsv", "l.csv.gz"])
def test_read_labels_from_a_spreadsheet_export(tmp_path, name):
    import csv
    import gzip

    rows = [{"text": 'a page, with "quotes"\nand a second line', "label": "1"}, {"text": "spam\tspam", "label": "0"},
            {"text": "fine", "label": "high"}]
    opener = gzip.open if name.endswith(".gz") else open
    with opener(tmp_path / name, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "label"], dialect="excel-tab" if ".tsv" in name else "excel")
        writer.writeheader()
        writer.writerows(rows)
    texts, labels = read_labels(str(tmp_path / name))
    assert texts == [r["text"] for r in rows] and labels.tolist() == [1, 0, 1]


def test_labels_as_other_tools_write_them(tmp_path):
    values = ["high", "LOW", "1", "0", " yes ", "no", 1.0, 0.0, "positive", "negative", True, False]
    records = [{"text": f"doc {i}", "label": v} for i, v in enumerate(values)]
    _, labels = read_labels(write_jsonl(tmp_path / "words.jsonl", records))
    assert labels.tolist() == [1, 0] * 6


@pytest.mark.parametrize(("records", "message"), [
    ([{"text": "a", "label": 1}, {"text": "b", "label": "maybe"}], "record 2 has label 'maybe'"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": None}], "record 2 has label None"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": [1]}], r"record 2 has label \[1\]"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": "nan"}], "record 2 has label 'nan'"),
    ([{"text": "a", "label": 1}, {"label": 0}], "record 2 has no text"),
    ([{"text": "a", "label": 3}, {"text": "b", "label": 3}], "needs both labels"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": 1}], "needs both labels"),
])
def test_read_labels_names_the_bad_record(tmp_path, records, message):
    with pytest.raises(CurationError, match=message):
        read_labels(write_jsonl(tmp_path / "bad.jsonl", records))


@pytest.mark.parametrize(("grades", "threshold", "expected"), [
    ([0, 1, 2, 3, 4, 5], None, [0, 0, 0, 1, 1, 1]),  # a 0-5 rating (FineWeb-Edu's): 3 and up, at the middle
    ([0.0, 0.33, 0.67, 1.0], None, [0, 0, 1, 1]),  # the share of annotators who said high: a majority
    (["1", "2", "4", "5"], None, [0, 0, 1, 1]),  # numbers written as strings, a 1-5 scale
    ([0, 1, 2, 3, 4, 5], 4, [0, 0, 0, 0, 1, 1]),  # a threshold given
    ([0, 1, 1, 0], 1, [0, 1, 1, 0]),  # 0/1 labels with a threshold stay as they are
])
def test_graded_labels_are_high_from_the_middle_of_their_range(tmp_path, grades, threshold, expected):
    from curation.classifiers.evaluate import read_grades

    path = write_jsonl(tmp_path / "graded.jsonl", [{"text": f"doc {i}", "label": g} for i, g in enumerate(grades)])
    assert read_labels(path, label_threshold=threshold)[1].tolist() == expected
    assert read_grades(path)[1].tolist() == [float(g) for g in grades]


def test_metrics_of_graded_labels_add_the_rank_correlation():
    grades = np.array([0, 1, 2, 3, 4, 5] * 3, dtype=float)
    labels = (grades >= 2.5).astype(int)
    metrics = human_label_metrics(grades / 5, labels, grades=grades, label_threshold=2.5)
    assert metrics["spearman"] == pytest.approx(1.0) and metrics["label_threshold"] == 2.5
    assert "Spearman" not in format_metrics(human_label_metrics(grades / 5, labels))
    assert "graded labels: high at 2.5 and above; Spearman rank correlation of scores and grades 1.0000" in (
        format_metrics(metrics))


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
    graded = write_jsonl(tmp_path / "rated.jsonl", [  # a 0-5 rating, as FineWeb-Edu's annotations
        {"text": good, "score": 5}, {"text": "buy now click here casino casino win win", "score": 0},
        {"text": good.replace("water", "air"), "score": 4}, {"text": "| home | login | cart | 0 items |", "score": 1}])
    out = run_curate(["classify", "eval", "--model", str(model), "--labels", graded, "--label-field", "score"]).stdout
    assert "graded labels: high at 2.5 and above; Spearman rank correlation" in out
    entry = json.loads((model / "card.json").read_text())["human_eval"]["rated.jsonl"]
    assert entry["label_threshold"] == 2.5 and -1 <= entry["spearman"] <= 1 and entry["high_quality"] == 2
    (tmp_path / "sets").mkdir()  # several labelled files at once: each measured and recorded apart
    for name in ("first", "second"):
        (tmp_path / "sets" / f"{name}.jsonl").write_text((tmp_path / "labels.jsonl").read_text())
    out = run_curate(["classify", "eval", "--model", str(model), "--labels", str(tmp_path / "sets" / "*.jsonl"),
                      "--plot", str(tmp_path / "set.png")]).stdout
    assert out.count("ROC AUC") == 2
    assert {"first.jsonl", "second.jsonl"} <= set(json.loads((model / "card.json").read_text())["human_eval"])
    assert (tmp_path / "set-first.png").is_file() and (tmp_path / "set-second.png").is_file()
    missing = run_curate(["classify", "eval", "--model", str(model), "--labels", str(tmp_path / "none*.jsonl")],
                         check=False)
    assert missing.returncode != 0 and "no labelled file matches" in missing.stderr


def test_a_label_file_without_the_label_field_says_which_fields_it_has(tmp_path):
    path = write_jsonl(tmp_path / "rated.jsonl", [{"text": "a", "score": 4}, {"text": "b", "score": 1}])
    with pytest.raises(CurationError, match=r"no field 'label' \(fields: text, score\); name the label with --label-field"):
        read_labels(path)


def test_the_quality_stage_passes_over_a_labels_file_it_cannot_read(shared_data, tmp_path, capsys):
    """Measuring a trained model on human labels is not a step of the recipe: a labels file of
    another shape beside the others is passed over with a warning, not the end of the stage."""
    from curation.classifiers.models import train_classifier
    from curation.classifiers.references import ReferenceSplit
    from curation.classifiers.stage import evaluate_model_dir

    good = ["The committee published its annual report on regional water quality and its methods."] * 20
    bad = ["buy now click here casino win", "| home | login | cart |"] * 10
    train_classifier("fasttext", ReferenceSplit(good, bad, good[:2], bad[:2]), tmp_path / "m",
                     {"positives": ["p"], "negatives": ["n"]}, {"epoch": 1})
    (tmp_path / "labels").mkdir()
    write_jsonl(tmp_path / "labels" / "a.jsonl", [{"text": t, "label": 1} for t in good[:3]]
                + [{"text": t, "label": 0} for t in bad[:3]])
    write_jsonl(tmp_path / "labels" / "b.jsonl", [{"text": "x", "rating": 3}])
    summaries = evaluate_model_dir(tmp_path / "m", [str(tmp_path / "labels" / "*.jsonl")])
    assert set(summaries) == {"a.jsonl"} and summaries["a.jsonl"]["documents"] == 6
    assert "warning: human labels not used" in capsys.readouterr().err
