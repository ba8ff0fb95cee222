"""One bad-record policy for documents (JSONL plain/.gz/.zst, Parquet): every good record kept,
every bad one counted by reason (or, with strict, the first one is a one-line error), and the
commands that read documents take JSONL through it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import run_curate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.core.stage import ShardTask, StageContext
from curation.ingest.documents import BadRecord, DocumentsConfig, DocumentsStage

GOOD = [{"id": f"d{i}", "text": f"good document number {i} about gardens", "lang": "en"} for i in range(5)]
BAD_LINES = [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "invalid_json"),
    (json.dumps({"id": "m1"}).encode(), "missing_text"),
    (json.dumps({"id": "m2", "text": None}).encode(), "missing_text"),
    (json.dumps({"id": "m3", "text": 42}).encode(), "invalid_text"),
    (json.dumps({"id": "d0", "text": "a second d0"}).encode(), "duplicate_id"),
]


def read(path: Path, tmp_path: Path, **options):
    stage = DocumentsStage(DocumentsConfig(**options))
    ctx = StageContext(run_root=str(tmp_path), stage_name="input", stage_dir=str(tmp_path / "out"), key="k")
    receipt = stage.run_shard(ShardTask(0, "part-00000", [str(path)]), ctx)
    return pq.read_table(tmp_path / "out" / "part-00000.parquet").to_pylist(), receipt.stats


def jsonl(lines: list[bytes], path: Path) -> Path:
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst"])
def test_every_bad_line_is_counted_and_every_good_one_kept(tmp_path, name):
    lines = [json.dumps(GOOD[0]).encode()] + [line for line, _ in BAD_LINES] + [json.dumps(g).encode() for g in GOOD[1:]]
    lines.append(json.dumps({"text": "no id here"}).encode())  # kept, with a derived id
    lines.append(b'{"id": "u1", "text": "caf\\u00e9 ' + b"\xff\xfe" + b' latin"}')  # invalid UTF-8: repaired
    rows, stats = read(jsonl(lines, tmp_path / name), tmp_path)
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[g["id"]]["text"] == g["text"] and by_id[g["id"]]["lang"] == "en" for g in GOOD)
    assert "\ufffd" in by_id["u1"]["text"]
    assert len(rows) == len(GOOD) + 2
    assert stats.dropped == {"invalid_json": 2, "missing_text": 2, "invalid_text": 1, "duplicate_id": 1}
    assert stats.extra == {"repaired:derived_id": 1, "repaired:invalid_utf8": 1}
    assert stats.docs_in == len(lines) and stats.docs_out == len(rows)


def test_other_field_names_and_derived_ids_are_stable(tmp_path):
    path = jsonl([json.dumps({"content": f"text {i}", "metadata": {"url": f"https://x/{i}"}}).encode() for i in range(3)],
                 tmp_path / "dolma.jsonl")
    first, _ = read(path, tmp_path / "a", text_field="content")
    again, _ = read(path, tmp_path / "b", text_field="content")
    assert [r["text"] for r in first] == ["text 0", "text 1", "text 2"]
    assert [r["id"] for r in first] == [r["id"] for r in again] and len({r["id"] for r in first}) == 3
    assert first[0]["metadata"] == {"url": "https://x/0"}


def test_oversized_and_mistyped_records(tmp_path):
    lines = [json.dumps({"id": "a", "text": "x" * 500, "n": 1}).encode(),
             json.dumps({"id": "b", "text": "short", "n": 2}).encode(),
             json.dumps({"id": "c", "text": "typed wrong", "n": "three"}).encode()]
    rows, stats = read(jsonl(lines, tmp_path / "d.jsonl"), tmp_path, max_record_bytes=200, batch_size=1)
    assert [r["id"] for r in rows] == ["b"]
    assert stats.dropped == {"too_large": 1, "schema_mismatch": 1}


def test_strict_names_file_line_and_reason(tmp_path):
    path = jsonl([json.dumps(GOOD[0]).encode(), b"{broken"], tmp_path / "s.jsonl")
    with pytest.raises(BadRecord, match=r"s\.jsonl: line 2: invalid_json$"):
        read(path, tmp_path, strict=True)


def test_parquet_with_nulls_and_missing_ids(tmp_path):
    table = pa.table({"id": ["a", None, "c", "a"], "text": ["one", "two", None, "four"]})
    pq.write_table(table, tmp_path / "in.parquet")
    rows, stats = read(tmp_path / "in.parquet", tmp_path)
    assert [r["text"] for r in rows] == ["one", "two"]
    assert stats.dropped == {"missing_text": 1, "duplicate_id": 1} and stats.extra == {"repaired:derived_id": 1}


record = st.one_of(
    st.builds(lambda t: ("good", {"text": t}), st.text(min_size=1, max_size=40)),
    st.sampled_from([("bad", line) for line in BAD_LINES[:5]]),
    st.builds(lambda b: ("corrupt", b), st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(record, max_size=25), st.sampled_from(["x.jsonl", "x.jsonl.gz", "x.parquet"]))
def test_property_no_traceback_every_good_record_and_reasons_add_up(tmp_path, records, name):
    """Generated files mixing good records, bad values and corrupted bytes."""
    directory = tmp_path / f"case-{abs(hash((tuple(map(repr, records)), name)))}"
    directory.mkdir()
    good = {f"g{i}": value["text"] for i, (kind, value) in enumerate(records) if kind == "good"}
    if name.endswith(".parquet"):  # Parquet cannot hold corrupted bytes in a string column: bad values only
        rows = [{"id": f"g{i}", "text": v["text"]} if k == "good" else {"id": f"b{i}", "text": None}
                for i, (k, v) in enumerate(records) if k != "corrupt"]
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("text", pa.string())])),
                       directory / name)
        expected_bad = len(rows) - len(good)
    else:
        lines = [json.dumps({"id": f"g{i}", **v}).encode() if k == "good" else (v[0] if k == "bad" else v)
                 for i, (k, v) in enumerate(records)]
        jsonl(lines, directory / name)
        expected_bad = len([line for line in lines if line.strip()]) - len(good)
    rows, stats = read(directory / name, directory)
    kept = {r["id"]: r["text"] for r in rows}
    assert {k: kept.get(k) for k in good} == good  # every good record, unchanged
    repaired_corrupt = len(kept) - len(good)  # a corrupted line can still be valid JSON by chance
    assert sum(stats.dropped.values()) + repaired_corrupt == expected_bad


def test_commands_read_jsonl_with_bad_lines(tmp_path, tokenizer_path):
    lines = [json.dumps({"doc_id": f"d{i}", "body": f"The garden number {i} grows tomatoes and herbs."}).encode()
             for i in range(40)]
    lines.insert(7, b"{this line is broken")
    lines.insert(20, b'{"doc_id": "bad-utf8", "body": "caf\xe9 au lait"}')
    docs = jsonl(lines, tmp_path / "docs.jsonl")
    fields = ["--text-field", "body", "--id-field", "doc_id"]
    run_curate(["dedup", "--input", str(docs), "--output", str(tmp_path / "dedup"), *fields, "--set", "ray.num_cpus=2"])
    table = pq.read_table(tmp_path / "dedup" / "part-00000.parquet")
    assert table.num_rows == 41 and {"id", "text", "cluster_id", "is_duplicate"} <= set(table.schema.names)
    reasons = run_curate(["stats", str(tmp_path / "dedup"), "SELECT kind, reason, sum(count) AS n FROM reasons "
                                                           "GROUP BY 1, 2 ORDER BY 1, 2", "--format", "csv"]).stdout
    assert '"dropped","invalid_json",1' in reasons and '"repaired","invalid_utf8",1' in reasons
    out = run_curate(["tokenize", "--input", str(docs), "--tokenizer", str(tokenizer_path), "--output",
                      str(tmp_path / "tok"), *fields, "--set", "ray.num_cpus=2"])
    assert "tokens written" in out.stdout or (tmp_path / "tok" / "_manifest.json").is_file()
    strict = run_curate(["tokenize", "--input", str(docs), "--tokenizer", str(tokenizer_path), "--output",
                         str(tmp_path / "strict"), *fields, "--strict"], check=False)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.strip().endswith("docs.jsonl: line 8: invalid_json")
