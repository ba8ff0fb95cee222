"""Run statistics without running anything: the funnel from the stages' own funnel lines, one view
per table of a folder that is not a run, the layout's stage lookup and SQL quoting."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core import layout
from curation.core.errors import CurationError
from curation.core.stats import StageInfo, discover, funnel, query


def _manifest(stage: str, docs_in: int, docs_out: int, lines: list[dict] | None = None, kind: str = "k") -> dict:
    return {"stage": stage, "kind": kind, "files": [], "funnel": lines or [],
            "totals": {"docs_in": docs_in, "docs_out": docs_out, "bytes_in": 0, "bytes_out": 0}}


def test_funnel_follows_each_stage_line():
    stages = [
        StageInfo("extract", "", _manifest("extract", 100, 90, [{"label": "extract", "documents": 90, "note": "x 10"}])),
        StageInfo("filter", "", _manifest("filter", 90, 90, [{"label": "filter: a", "documents": 80},
                                                               {"label": "filter: b", "documents": 75}])),
        StageInfo("dedup", "", _manifest("dedup", 90, 90, [{"label": "dedup: duplicate", "removed": 5}])),
        StageInfo("quality", "", _manifest("quality", 90, 90)),  # attributes only, nothing flagged: no line
        StageInfo("unfinished", "", None),
    ]
    steps = funnel(stages)
    assert [(s.label, s.documents) for s in steps] == [
        ("records read", 100), ("extract", 90), ("filter: a", 80), ("filter: b", 75), ("dedup: duplicate", 70)]
    assert steps[1].note == "x 10"


def test_a_first_stage_without_lines_still_shows():
    steps = funnel([StageInfo("extract", "", _manifest("extract", 10, 10))])
    assert [(s.label, s.documents) for s in steps] == [("records read", 10), ("extract", 10)]


def test_a_folder_of_tables_is_queryable(tmp_path):
    pq.write_table(pa.table({"mix": ["a", "b"], "loss": [1.0, 2.0]}), tmp_path / "experiments.parquet")
    (info,) = discover(str(tmp_path))
    assert info.name == "experiments"
    assert query(str(tmp_path), "SELECT sum(loss) AS s FROM experiments").column("s").to_pylist() == [3.0]
    with pytest.raises(CurationError, match="not a run directory"):
        discover(str(tmp_path / ".."))  # a folder with neither a run nor tables


def test_find_stage_in_a_run_or_its_folder(tmp_path):
    for name, kind in (("extract", "extract"), ("tok_a", "tokenize"), ("tok_b", "tokenize")):
        (tmp_path / name).mkdir()
        (tmp_path / name / layout.MANIFEST).write_text(json.dumps({"kind": kind, "files": [{"name": "p.parquet"}]}))
    (tmp_path / layout.RUN_FILE).write_text(json.dumps({"stages": ["extract", "tok_a", "tok_b"]}))
    directory, manifest = layout.find_stage(str(tmp_path), kind="tokenize")
    assert directory == str(tmp_path / "tok_b")  # the last tokenize stage of the run
    assert layout.find_stage(str(tmp_path / "extract"))[1]["kind"] == "extract"
    assert layout.data_files(directory, manifest) == [str(tmp_path / "tok_b" / "p.parquet")]
    with pytest.raises(CurationError, match="is a extract stage, not tokenize"):
        layout.find_stage(str(tmp_path / "extract"), kind="tokenize")
    with pytest.raises(CurationError, match="no finished dedup stage"):
        layout.find_stage(str(tmp_path), kind="dedup")
    assert layout.read_manifest(str(tmp_path / "extract" / layout.MANIFEST)) is None  # a file, not a folder


def test_sql_list_quotes_paths():
    paths = ["/tmp/it's here/a.parquet", "/tmp/b.parquet"]
    literal = layout.sql_list(paths)
    assert duckdb.sql(f"SELECT unnest({literal}) AS p").fetchall() == [(p,) for p in paths]
