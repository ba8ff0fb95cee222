"""One bad-record policy for documents (JSONL plain/.gz/.zst, Parquet): every good record kept,
every bad one counted by reason (or, with strict, the first one is a one-line error), and the
commands that read documents take JSONL through it."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import run_curate
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from curation.core.stage import ShardStats, ShardTask, StageContext
from curation.ingest import documents
from curation.ingest.documents import (
    BadRecord,
    DocumentsConfig,
    DocumentsStage,
    RecodedToUtf8,
    RecordPolicy,
    iter_jsonl_records,
)
from curation.ingest.readers import detect_format, json_text_encoding

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
    elif path.name.endswith(".bz2"):
        data = __import__("bz2").compress(data)
    elif path.name.endswith(".xz"):
        data = __import__("lzma").compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst", "docs.jsonl.bz2", "docs.json.xz"])
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


@pytest.mark.parametrize("name", ["rpv2.jsonl", "oscar.parquet"])
def test_corpora_that_name_the_text_otherwise_are_read_and_counted(tmp_path, name):
    """RedPajama-v2 keeps its text in ``raw_content``, OSCAR and The Stack in ``content``: with the
    default text field their records are read from there, counted per record; a record that has
    ``text`` as well keeps ``text``; ``text_fallbacks: []`` reads none of them."""
    field = "raw_content" if name.startswith("rpv2") else "content"
    records = [{field: f"document {i} of a corpus with its own schema", "url": f"https://x/{i}"} for i in range(4)]
    path = tmp_path / name
    if name.endswith(".parquet"):  # one schema for every row: a text column would be the text field
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        records.append({field: "not this one", "text": "the text field wins", "url": "https://x/4"})
        jsonl([json.dumps(r).encode() for r in records], path)
    rows, stats = read(path, tmp_path / "a")
    assert [r["text"] for r in rows] == [r.get("text", r[field]) for r in records]
    assert [r["url"] for r in rows] == [r["url"] for r in records] and rows[0].get(field) is None
    assert stats.extra == {f"repaired:text_from:{field}": 4, "repaired:derived_id": len(records)}
    assert not stats.dropped
    _, strict_stats = read(path, tmp_path / "b", text_fallbacks=[])
    assert strict_stats.dropped == {"missing_text": 4}


@pytest.mark.parametrize("name", ["dolma.jsonl", "dolma.parquet"])
def test_urls_kept_inside_metadata_become_the_url_column(tmp_path, name):
    """Dolma (``metadata.url``), RedPajama (``meta.url``) and OSCAR (``warc_headers``) keep the URL
    nested; the reader lifts it to ``url``, where the URL filters look, and keeps the nested
    objects as they are. A top-level ``url`` is never overwritten; a record without any keeps none."""
    records = [{"text": "dolma", "metadata": {"url": "https://dolma.example/1", "n": 1}},
               {"text": "redpajama", "meta": {"url": "https://rp.example/2"}},
               {"text": "oscar", "warc_headers": {"warc-target-uri": "https://oscar.example/3"}},
               {"text": "empty dolma url, then meta", "metadata": {"url": "", "n": 2}, "meta": {"url": "https://rp.example/4"}},
               {"text": "none"}]
    path = tmp_path / name
    if name.endswith(".parquet"):  # columns of every record's fields (from_pylist takes the first record's)
        pq.write_table(pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(records))]), path)
    else:
        jsonl([json.dumps(r).encode() for r in records], path)
    rows, _ = read(path, tmp_path / "a")
    assert [r["url"] for r in rows] == ["https://dolma.example/1", "https://rp.example/2", "https://oscar.example/3",
                                        "https://rp.example/4", None]
    assert rows[0]["metadata"] == {"url": "https://dolma.example/1", "n": 1}
    top_level = tmp_path / "top.jsonl"
    jsonl([json.dumps({"text": "t", "url": "https://top.example/", "metadata": {"url": "https://nested.example/"}}).encode()],
          top_level)
    assert read(top_level, tmp_path / "b")[0][0]["url"] == "https://top.example/"


def test_the_url_filter_sees_a_dolma_documents_url(tmp_path):
    """`curate filter` on Dolma JSONL: the blocklist reads the URL from ``metadata.url``."""
    text = " ".join(["The garden was quiet in the morning and the birds sang in the old trees."] * 8)
    path = jsonl([json.dumps({"id": f"d{i}", "text": text, "metadata": {"url": url}}).encode()
                  for i, url in enumerate(["https://www.pornhub.com/view", "https://en.wikipedia.org/wiki/Garden"])],
                 tmp_path / "dolma.jsonl")
    run_curate(["filter", "--input", str(path), "--output", str(tmp_path / "out")])
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet").to_pylist()
    assert {r["id"]: r["url_blocklist_keep"] for r in table} == {"d0": False, "d1": True}


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.jsonl.gz"])
def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path, name):
    lines = [b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode(), json.dumps(GOOD[1]).encode()]
    rows, stats = read(jsonl(lines, tmp_path / name), tmp_path)
    assert [row["id"] for row in rows] == ["d0", "d1"] and not stats.dropped


WIDE_TEXTS = [{"id": f"w{i}", "text": text} for i, text in enumerate(["plain ASCII about gardens", "Gärten und Bäume",
                                                                      "庭の木々 🌳 and an emoji outside the BMP"])]


@pytest.mark.parametrize("form", ["array", "lines"])
@pytest.mark.parametrize(("encoding", "bom"), [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                                               ("utf-16-le", b""), ("utf-16-be", b""), ("utf-32-le", codecs.BOM_UTF32_LE),
                                               ("utf-32-be", b"")])
@pytest.mark.parametrize("name", ["wide.jsonl", "wide.jsonl.gz", "wide-unnamed.data"])
def test_a_utf16_or_utf32_file_reads_as_its_utf8_twin(tmp_path, encoding, bom, name, form):
    """What PowerShell's ``>`` and Notepad's "Unicode" write: every line used to be invalid_json (and a file
    whose name does not say JSON was read as a WARC)."""
    text = (json.dumps(WIDE_TEXTS, ensure_ascii=False, indent=1) if form == "array"
            else "\r\n".join(json.dumps(row, ensure_ascii=False) for row in WIDE_TEXTS) + "\r\n")
    path = tmp_path / name
    data = bom + text.encode(encoding)
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    rows, stats = read(path, tmp_path)
    assert [{"id": row["id"], "text": row["text"]} for row in rows] == WIDE_TEXTS
    assert not stats.dropped and not stats.extra, (stats.dropped, stats.extra)


def test_utf8_json_is_not_taken_for_utf16():
    assert json_text_encoding(b'{"id": 1}') is None and json_text_encoding(b"\xef\xbb\xbf{") is None
    assert json_text_encoding(b'\x00\x00{"') is None  # zeros of damage, not a pattern of wide characters
    assert json_text_encoding(b"\x00\n\x00\n") is None  # two bad lines, not two UTF-16 line ends
    assert json_text_encoding('{"'.encode("utf-16-le")) == "utf-16-le"
    for data in (codecs.BOM_UTF16_LE + '{"id": 1}'.encode("utf-16-le"), '[{"id": 1}]'.encode("utf-32-be")):
        assert detect_format("export.data", io.BytesIO(data)) == "jsonl"  # was read as a WARC: every record lost


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=300), encoding=st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]),
       chunk=st.integers(1, 9))
def test_recoding_to_utf8_is_exact_across_piece_boundaries(text, encoding, chunk):
    """A code unit or surrogate pair split between two pieces decodes whole."""
    recoded = RecodedToUtf8(io.BytesIO(text.encode(encoding)), encoding, chunk=chunk)
    assert io.BufferedReader(recoded).read() == text.encode("utf-8") and recoded.replaced == 0


@pytest.mark.parametrize("form", ["lines", "array"])
def test_bytes_that_are_not_utf16_become_replacement_characters_counted(tmp_path, form):
    """For an array too: its reader used to return before the repairs were counted."""
    lines = ([json.dumps(WIDE_TEXTS, ensure_ascii=False, indent=1).encode("utf-16-le")] if form == "array"
             else [json.dumps(row, ensure_ascii=False).encode("utf-16-le") for row in WIDE_TEXTS])
    lines[-2 if form == "lines" else 0] = lines[-2 if form == "lines" else 0].replace(
        "Bäume".encode("utf-16-le"), b"\x00\xd8B\x00")  # a lone high surrogate
    path = tmp_path / "bad.jsonl"
    path.write_bytes(codecs.BOM_UTF16_LE + "\n".encode("utf-16-le").join(lines))
    rows, stats = read(path, tmp_path)
    assert [row["id"] for row in rows] == ["w0", "w1", "w2"] and "\ufffdB" in rows[1]["text"]
    assert stats.extra == {"repaired:invalid_utf16": 1} and not stats.dropped


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.jsonl.zst", "cut.jsonl.bz2", "cut.jsonl.xz"])
def test_a_cut_compressed_file_keeps_what_was_read_and_counts_the_cut(tmp_path, name):
    lines = [json.dumps({"id": f"d{i}", "text": f"document {i} " + "words " * (i % 50)}).encode() for i in range(3000)]
    path = jsonl(lines, tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    rows, stats = read(path, tmp_path)
    assert stats.dropped == {"truncated_stream": 1}  # zstd: its reader used to end quietly at the cut
    assert [row["id"] for row in rows] == [f"d{i}" for i in range(len(rows))]  # a prefix, nothing invented


# zstd frames with a content checksum, as the zstd CLI writes them: without one a damaged frame can
# decode, without an error, to other text of the same length (valid JSON Lines, lines lost), which no
# reader can tell from the file's own text
COMPRESS = {".gz": lambda data: gzip.compress(data, mtime=0),
            ".zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
            ".bz2": lambda data: __import__("bz2").compress(data), ".xz": lambda data: __import__("lzma").compress(data)}
REASON = {".gz": "corrupt_gzip_member", ".zst": "corrupt_zst_frame", ".bz2": "corrupt_bz2_frame", ".xz": "corrupt_xz_frame"}


def _members(groups: int = 5, per_group: int = 80, suffix: str = ".gz") -> tuple[list[bytes], list[list[str]]]:
    """gzip members (zstd frames, bzip2 or xz streams) of JSON lines, as ``cat a.jsonl.gz b.jsonl.gz``
    joins files, or pzstd and pbzip2 write them; the ids in each."""
    members, ids = [], []
    for g in range(groups):
        rows = [{"id": f"g{g}-{i}", "text": f"group {g} line {i} " + "words " * (i % 40)} for i in range(per_group)]
        members.append(COMPRESS[suffix]("".join(json.dumps(r) + "\n" for r in rows).encode()))
        ids.append([r["id"] for r in rows])
    return members, ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(sorted(COMPRESS)), damaged=st.integers(0, 4), where=st.floats(0.05, 0.9),
       length=st.integers(1, 200))
def test_a_damaged_member_or_frame_loses_only_itself(tmp_path, suffix, damaged, where, length):
    """Joined gzip files used to end at the first damaged block; the members after it are read now.
    The same for zstd frames, bzip2 and xz streams: a damaged one raised (zstd, xz: the stage
    failed) or ended the file without a count (bzip2)."""
    members, ids = _members(suffix=suffix)
    start = sum(len(m) for m in members[:damaged]) + int(len(members[damaged]) * where)
    data = bytearray(b"".join(members))
    for k in range(start, min(start + length, sum(len(m) for m in members[: damaged + 1]) - 8)):
        data[k] ^= 0xA5
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / f"joined.jsonl{suffix}"
    path.write_bytes(bytes(data))
    rows, stats = read(path, path.parent)
    got = [row["id"] for row in rows]
    for g, group in enumerate(ids):  # (the damaged member's lines before the damage may come out garbled:
        if g != damaged:             # gzip checks a member's CRC only at its end)
            assert [i for i in got if i in set(group)] == group, g
    assert sum(stats.dropped.values()) >= 1  # the damage is counted, as a bad line, a cut or a lost member


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_joined_files_and_zero_padding_read_whole(tmp_path, suffix):
    members, ids = _members(suffix=suffix)
    (tmp_path / f"joined.jsonl{suffix}").write_bytes(b"".join(members) + b"\x00" * 512)
    rows, stats = read(tmp_path / f"joined.jsonl{suffix}", tmp_path)
    assert [row["id"] for row in rows] == [i for group in ids for i in group] and not stats.dropped
    (tmp_path / f"junk.jsonl{suffix}").write_bytes(b"".join(members) + b"not compressed at all")
    rows, stats = read(tmp_path / f"junk.jsonl{suffix}", tmp_path / "junk")
    assert len(rows) == 400 and dict(stats.dropped) == {REASON[suffix]: 1}


def test_zstd_frames_one_after_another_are_all_read(tmp_path):
    frames = [zstandard.ZstdCompressor().compress(json.dumps(g).encode() + b"\n") for g in GOOD]
    (tmp_path / "frames.jsonl.zst").write_bytes(b"".join(frames))
    rows, stats = read(tmp_path / "frames.jsonl.zst", tmp_path)
    assert [row["id"] for row in rows] == [g["id"] for g in GOOD] and not stats.dropped


def test_oversized_and_mistyped_records(tmp_path):
    lines = [json.dumps({"id": "a", "text": "x" * 500, "n": 1}).encode(),
             json.dumps({"id": "b", "text": "short", "n": 2}).encode(),
             json.dumps({"id": "c", "text": "typed wrong", "n": "three"}).encode()]
    rows, stats = read(jsonl(lines, tmp_path / "d.jsonl"), tmp_path, max_record_bytes=200, batch_size=1)
    assert rows == [{"id": "b", "text": "short", "n": 2}, {"id": "c", "text": "typed wrong", "n": None}]
    assert stats.dropped == {"too_large": 1} and stats.extra == {"repaired:schema_mismatch": 1}


def test_json_the_fast_parser_refuses_or_bends(tmp_path):
    """orjson's refusals fall back to the standard library's json: NaN is JSON to it. An escaped
    unpaired surrogate is JSON too but cannot be written as UTF-8 (it crashed the stage): it
    becomes U+FFFD, counted. An integer over 64 bits is a float (orjson, as JavaScript and Arrow's
    JSON reader); one of 64 bits over int64's range (2**64 - 1, a hash) makes an unsigned column
    (it crashed too, then cost its document)."""
    lines = [b'{"id": "big", "text": "b", "n": 123456789012345678901234567890, "score": 1.0}',
             b'{"id": "nan", "text": "a", "n": 1, "score": NaN}',
             b'{"id": "sur", "text": "c \\ud800 d \\ud83d\\ude00", "n": 2, "score": 0.5, "meta": {"\\udfff": ["\\ud801"]}}',
             b'{"id": "deep", "text": "e", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]
    rows, stats = read(jsonl(lines, tmp_path / "odd.jsonl"), tmp_path / "a", batch_size=1)
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == ["big", "nan", "sur"] and by_id["big"]["n"] == 1.2345678901234568e29
    assert by_id["sur"]["text"] == "c \ufffd d \U0001F600" and math.isnan(by_id["nan"]["score"])
    assert stats.dropped == {"invalid_json": 1}  # nesting deeper than Python's stack: counted, not a crash
    assert stats.extra == {"repaired:lone_surrogate": 1, "repaired:schema_mismatch": 1}  # "meta": not a column
    u64 = [b'{"id": "u64", "text": "f", "n": 18446744073709551615}', b'{"id": "ok", "text": "g", "n": 1}']
    rows, stats = read(jsonl(u64, tmp_path / "u64.jsonl"), tmp_path / "b")
    assert [(row["id"], row["n"]) for row in rows] == [("u64", 2**64 - 1), ("ok", 1)]
    assert not stats.dropped and not stats.extra
    assert pq.read_schema(tmp_path / "b" / "out" / "part-00000.parquet").field("n").type == pa.uint64()


def test_metadata_whose_type_drifts_keeps_every_document(tmp_path):
    """The shard's first batch sets the column types; later values of another type are nulled and
    counted, never the document dropped, and 0.5 never truncated to 0 (pyarrow would). A field
    null all through the first batch is a string column, so a date set later is kept."""
    first = [{"id": f"a{i}", "text": "x", "date": None, "score": 1, "meta": {"k": 1}} for i in range(2)]
    later = [{"id": "b", "text": "y", "date": "2024-01-01", "score": 0.5, "meta": {"k": 2}},
             {"id": "c", "text": "z", "date": "2024-02-02", "score": 2.0, "meta": {"k": "two"}},
             {"id": "d", "text": "w", "date": 7, "score": 3, "meta": None}]
    rows, stats = read(jsonl([json.dumps(r).encode() for r in first + later], tmp_path / "d.jsonl"), tmp_path,
                       batch_size=2)
    assert [row["id"] for row in rows] == ["a0", "a1", "b", "c", "d"] and not stats.dropped
    assert [(row["date"], row["score"], row["meta"]) for row in rows[2:]] == [
        ("2024-01-01", None, {"k": 2}), ("2024-02-02", 2, None), (None, 3, None)]
    assert stats.extra == {"repaired:schema_mismatch": 3}


def test_empty_metadata_objects_do_not_stop_the_stage(tmp_path):
    """``"metadata": {}`` in the first batch is a struct of no fields, which Parquet cannot write
    (the stage crashed): the column is a string and the empty object null, counted."""
    lines = [json.dumps({"id": "a", "text": "x", "metadata": {}, "tags": [{}]}).encode(),
             json.dumps({"id": "b", "text": "y", "metadata": {"k": 1}, "tags": []}).encode()]
    rows, stats = read(jsonl(lines, tmp_path / "d.jsonl"), tmp_path, batch_size=1)
    assert [(row["id"], row["metadata"]) for row in rows] == [("a", None), ("b", None)]
    assert stats.extra == {"repaired:schema_mismatch": 2} and not stats.dropped


def same_value(stored, value) -> bool:
    """Equal, of the same kind (a bool is no number), an object's absent key read as null (a
    struct column has every key)."""
    if isinstance(value, dict):
        return isinstance(stored, dict) and set(value) <= set(stored) and all(
            same_value(stored[key], value.get(key)) for key in stored)
    if isinstance(value, list):
        return isinstance(stored, list) and len(stored) == len(value) and all(map(same_value, stored, value))
    return stored == value and isinstance(stored, bool) == isinstance(value, bool)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=4),
                    st.floats(allow_nan=False, allow_infinity=False))
METADATA_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.sampled_from("ab"), SCALARS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.sampled_from(["m", "n"]), METADATA_VALUES), min_size=1, max_size=12),
       batch_size=st.integers(1, 5))
def test_metadata_of_any_types_is_kept_exactly_or_nulled_and_counted(tmp_path_factory, records, batch_size):
    """Whatever the metadata's types and keys, along a file: every document is kept; each value is
    stored as it was (no truncation, rounding, bool as number, lost key) or null; and each document
    that lost a value or a key is counted once."""
    tmp_path = tmp_path_factory.mktemp("drift")
    lines = [json.dumps({"id": f"d{i}", "text": "t", **record}).encode() for i, record in enumerate(records)]
    rows, stats = read(jsonl(lines, tmp_path / "d.jsonl"), tmp_path, batch_size=batch_size)
    assert [row["id"] for row in rows] == [f"d{i}" for i in range(len(records))] and not stats.dropped
    changed = 0
    for row, record in zip(rows, records, strict=True):
        lost = False
        for key, value in record.items():
            if key not in row or (row[key] is None and value is not None):
                lost = True
            elif value is not None:
                assert same_value(row[key], value), (row[key], value)
        assert all(row[key] is None for key in row.keys() - record.keys() - {"id", "text"})
        changed += lost
    assert stats.extra.get("repaired:schema_mismatch", 0) == changed


def test_strict_names_file_line_and_reason(tmp_path):
    path = jsonl([json.dumps(GOOD[0]).encode(), b"{broken"], tmp_path / "s.jsonl")
    with pytest.raises(BadRecord, match=r"s\.jsonl: line 2: invalid_json$"):
        read(path, tmp_path, strict=True)


def test_strict_parquet_names_the_row(tmp_path):
    pq.write_table(pa.table({"id": ["a", None, "a"], "text": ["one", "two", "three"]}), tmp_path / "in.parquet")
    with pytest.raises(BadRecord, match=r"in\.parquet: record row 3: duplicate_id$"):
        read(tmp_path / "in.parquet", tmp_path, strict=True)


def test_parquet_text_stored_as_binary_is_decoded(tmp_path):
    good = pa.table({"id": ["a", "b"], "text": pa.array([b"caf\xc3\xa9 one", b"two"], pa.binary())})
    pq.write_table(good, tmp_path / "good.parquet")
    rows, stats = read(tmp_path / "good.parquet", tmp_path / "a")
    assert [row["text"] for row in rows] == ["café one", "two"] and not stats.dropped and not stats.extra
    bad = pa.table({"id": ["a", "b"], "text": pa.array([b"latin caf\xe9", b"two"], pa.large_binary())})
    pq.write_table(bad, tmp_path / "bad.parquet")
    rows, stats = read(tmp_path / "bad.parquet", tmp_path / "b")
    assert [row["text"] for row in rows] == ["latin caf\ufffd", "two"]
    assert not stats.dropped and stats.extra == {"repaired:invalid_utf8": 1}


def test_parquet_with_nulls_and_missing_ids(tmp_path):
    table = pa.table({"id": ["a", None, "c", "a"], "text": ["one", "two", None, "four"]})
    pq.write_table(table, tmp_path / "in.parquet")
    rows, stats = read(tmp_path / "in.parquet", tmp_path)
    assert [r["text"] for r in rows] == ["one", "two"]
    assert stats.dropped == {"missing_text": 1, "duplicate_id": 1} and stats.extra == {"repaired:derived_id": 1}


def _damage_row_group(path: Path, group: int) -> None:
    """XOR the first bytes of the text column's first data page in one row group (its header and the
    start of its zstd frame); the footer stays valid."""
    column = pq.ParquetFile(path).metadata.row_group(group).column(1)
    data = bytearray(path.read_bytes())
    for k in range(column.data_page_offset, column.data_page_offset + 64):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("batch_size", [1000, 300])
def test_a_damaged_parquet_row_group_loses_only_its_own_rows(tmp_path, batch_size):
    """A page that does not decompress used to end the file there: every later row group was lost
    uncounted. Now its row group's rows are counted and the next row groups are read, with the ids
    derived for them as for the intact file."""
    texts = [f"document {i} " + f"word{i} " * 40 for i in range(3000)]
    intact, damaged = tmp_path / "intact" / "docs.parquet", tmp_path / "damaged" / "docs.parquet"
    for path in (intact, damaged):
        path.parent.mkdir()  # no id column: ids are derived from the row numbers
        pq.write_table(pa.table({"url": [f"https://e.example/{i}" for i in range(3000)], "text": texts}), path,
                       row_group_size=1000, compression="zstd")
    _damage_row_group(damaged, 1)
    whole, _ = read(intact, tmp_path / "a", batch_size=batch_size)
    rows, stats = read(damaged, tmp_path / "b", batch_size=batch_size)
    assert [r["text"] for r in rows] == texts[:1000] + texts[2000:]
    assert [r["id"] for r in rows] == [r["id"] for r in whole[:1000] + whole[2000:]]
    assert dict(stats.dropped) == {"corrupt_row_group:OSError": 1000} and stats.docs_in == 3000
    with pytest.raises(BadRecord, match="row group 1"):
        read(damaged, tmp_path / "c", strict=True)


def _arrow_with_offsets(table: pa.Table, form: str, batch_rows: int) -> tuple[bytes, list[tuple[int, int]]]:
    """``table`` as Arrow IPC bytes, and each batch's message as (start, end) byte offsets."""
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema) if form == "stream" else pa.ipc.new_file(sink, table.schema)
    spans = []
    with writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            start = sink.tell()
            writer.write_batch(batch)
            spans.append((start, sink.tell()))
    return sink.getvalue().to_pybytes(), spans


ARROW_DOCS = pa.Table.from_pylist([{"id": f"d{i}", "text": f"document number {i} " * 20} for i in range(40)])


@pytest.mark.parametrize("form", ["stream", "file"])
@pytest.mark.parametrize("damage", ["header", "body", "body_length"])
def test_a_damaged_arrow_batch_loses_only_itself(tmp_path, form, damage):
    """A damaged batch in the middle of an Arrow file used to end the file there (its header) or
    crash the process in the first kernel that followed its offsets (its body: a segfault, the
    shard retried until the stage failed). Now it is counted and every other batch is read. A body
    length that asks for a terabyte (one byte of it hit; found by the property test below) raised
    pyarrow's MemoryError and failed the shard."""
    data, spans = _arrow_with_offsets(ARROW_DOCS, form, batch_rows=10)
    damaged = bytearray(data)
    start, end = spans[1]
    body = start + 8 + int.from_bytes(data[start + 4 : start + 8], "little")  # the marker, metadata's size, metadata
    if damage == "body_length":
        damaged[data.index((end - body).to_bytes(8, "little"), start + 8, body) + 5] = 0x01  # + 2**40 bytes
    region = {"header": range(start + 8, start + 40), "body": range(body, body + 100)}.get(damage, ())  # body: offsets
    for k in region:
        damaged[k] = 0x7F
    (tmp_path / "bad.arrow").write_bytes(bytes(damaged))
    rows, stats = read(tmp_path / "bad.arrow", tmp_path / "a")
    expected = ARROW_DOCS.to_pylist()[:10] + ARROW_DOCS.to_pylist()[20:]
    assert [(r["id"], r["text"]) for r in rows] == [(r["id"], r["text"]) for r in expected]
    assert len(stats.dropped) == 1 and next(iter(stats.dropped)).startswith("corrupt_batch:")
    assert sum(stats.dropped.values()) in (1, 10)  # 10 where the batch decoded to arrays and was validated


@pytest.mark.parametrize("name", ["docs.parquet", "docs.arrow"])
def test_text_that_decodes_to_bytes_not_utf8_is_repaired_not_fatal(tmp_path, name):
    """A flipped byte in an uncompressed string page (or an Arrow body) leaves bytes that are not
    UTF-8 in a string column: the reader raised UnicodeDecodeError and the stage failed. Now the
    value is decoded with U+FFFD, counted, and the batch goes on."""
    table = pa.table({"id": ["a", "b", "c"], "text": ["a café in town", "plain text", "another café"]})
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)
    else:
        _write_arrow(table, path, "stream", batch_rows=3)
    data = path.read_bytes()
    assert data.count("é".encode()) == 2
    path.write_bytes(data.replace("é".encode(), b"\xc3\x28"))  # a lead byte without its continuation
    rows, stats = read(path, tmp_path / "a")
    assert [r["text"] for r in rows] == ["a caf\ufffd( in town", "plain text", "another caf\ufffd("]
    assert stats.extra == {"repaired:invalid_utf8": 2} and not stats.dropped


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=st.sampled_from(["stream", "file", "parquet", "parquet-snappy"]),
       damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6))
def test_property_damaged_columnar_files_never_crash_and_keep_what_precedes_the_damage(tmp_path, form, damage):
    """Bytes overwritten anywhere in an Arrow or Parquet file: the reader never raises (nor
    crashes: no array reaches a kernel unvalidated), every row it keeps is a valid string row, and
    for Arrow every batch that lies wholly before the first damaged byte is kept exactly."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis may replay one
    if form.startswith("parquet"):
        pq.write_table(ARROW_DOCS, directory / "w.parquet", row_group_size=10,
                       compression="snappy" if form.endswith("snappy") else "none")
        data, spans = (directory / "w.parquet").read_bytes(), []
    else:
        data, spans = _arrow_with_offsets(ARROW_DOCS, form, batch_rows=10)
    damaged = bytearray(data)
    positions = [int(where * len(data)) for where, _ in damage]
    for position, (_, value) in zip(positions, damage, strict=True):
        damaged[position] = value
    (directory / "bad").write_bytes(bytes(damaged))
    rows, stats = read(directory / "bad", directory / "out")
    assert all(isinstance(r["text"], str) and isinstance(r["id"], str) for r in rows)
    intact = [i for i, (_, end) in enumerate(spans) if end <= min(positions)]
    expected = [(r["id"], r["text"]) for r in ARROW_DOCS.to_pylist()[: 10 * len(intact)]]
    assert [(r["id"], r["text"]) for r in rows[: len(expected)]] == expected


record = st.one_of(
    st.builds(lambda t: ("good", {"text": t}), st.text(min_size=1, max_size=40)),
    st.sampled_from([("bad", line) for line in BAD_LINES[:5]]),
    st.builds(lambda b: ("corrupt", b), st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(record, max_size=25), st.sampled_from(["x.jsonl", "x.jsonl.gz", "x.parquet"]))
def test_property_no_traceback_every_good_record_and_reasons_add_up(tmp_path, records, name):
    """Generated files mixing good records, bad values and corrupted bytes."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis may replay one
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
    first = next((line for line in lines if line.strip()), b"") if not name.endswith(".parquet") else b""
    if first.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] == b"[" and documents._loaded(first) is documents._INVALID:
        assert sum(stats.dropped.values()) >= 1  # perhaps an array whose "[" stands alone: elements are counted
    else:
        assert sum(stats.dropped.values()) + repaired_corrupt == expected_bad


parquet_row = st.fixed_dictionaries({
    "text": st.one_of(st.none(), st.text(max_size=30), st.just("x" * 90)),  # 90 bytes: over the limit below
    "doc_id": st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b", "c"]), st.text(min_size=1, max_size=4)),
    "lang": st.sampled_from(["en", "de", None]),
    "metadata": st.one_of(st.none(), st.fixed_dictionaries({"url": st.one_of(st.none(), st.just(""), st.text(max_size=5))})),
})


@settings(max_examples=80, deadline=None)
@given(st.lists(parquet_row, max_size=40), st.integers(1, 7), st.sampled_from(["text", "raw_content", "content"]))
def test_property_vectorised_parquet_path_matches_the_per_row_policy(rows, first_row, text_column):
    """The Arrow path (``accept_batch``) keeps the same rows, with the same ids and columns, and
    counts the same reasons as the per-row policy that JSONL goes through, also when the text is
    in a fallback column and the URL in the metadata."""
    from curation.core.stage import ShardStats
    from curation.ingest.documents import RecordPolicy

    config = DocumentsConfig(id_field="doc_id", max_record_bytes=60)
    rows = [{text_column if name == "text" else name: value for name, value in row.items()} for row in rows]
    batch = pa.RecordBatch.from_pylist(rows, schema=pa.schema([(text_column, pa.large_string()), ("doc_id", pa.string()),
                                                               ("lang", pa.string()),
                                                               ("metadata", pa.struct([("url", pa.string())]))]))
    vector_stats, row_stats = ShardStats("part-00000"), ShardStats("part-00000")
    vectorised = RecordPolicy(config, "dir/f.parquet", vector_stats).accept_batch(batch, first_row)
    per_row = RecordPolicy(config, "dir/f.parquet", row_stats)
    expected = []
    for offset, obj in enumerate(batch.to_pylist()):
        text = obj.get(text_column)
        size = len(text.encode()) if isinstance(text, str) else 0
        if (kept := per_row.accept(obj, f"row {first_row + offset}", size)) is not None:
            expected.append(kept)
    lifted = any("url" in row for row in expected)  # a shard's rows share columns: a missing url is a null one
    assert vectorised is not None and vectorised.schema.names == ["id", "text", "lang", "metadata"] + ["url"] * lifted
    assert vectorised.to_pylist() == [{**row, "url": row.get("url")} if lifted else row for row in expected]
    assert vector_stats.dropped == row_stats.dropped and vector_stats.extra == row_stats.extra


def test_parquet_files_of_one_shard_with_other_column_types(tmp_path):
    """The first file's columns set the shard's types: a later file's column of another type goes
    value by value (a value that does not fit is nulled and counted), one of the same types stays a batch."""
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"], "n": [1, 2]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"id": ["c", "d"], "text": ["three", "four"], "n": ["x", "5"], "extra": [1.0, 2.0]}),
                   tmp_path / "2.parquet")
    pq.write_table(pa.table({"id": pa.array([7, 8], pa.int64()), "text": pa.array(["seven", "eight"], pa.large_string())}),
                   tmp_path / "3.parquet")
    stage = DocumentsStage(DocumentsConfig())
    ctx = StageContext(run_root=str(tmp_path), stage_name="input", stage_dir=str(tmp_path / "out"), key="k")
    receipt = stage.run_shard(ShardTask(0, "part-00000", [str(tmp_path / f"{i}.parquet") for i in (1, 2, 3)]), ctx)
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.schema.names == ["id", "text", "n"] and table.schema.field("n").type == pa.int64()
    assert table.to_pylist() == [{"id": "a", "text": "one", "n": 1}, {"id": "b", "text": "two", "n": 2},
                                 {"id": "c", "text": "three", "n": None}, {"id": "d", "text": "four", "n": None},
                                 {"id": "7", "text": "seven", "n": None}, {"id": "8", "text": "eight", "n": None}]
    assert not receipt.stats.dropped and receipt.stats.extra == {"repaired:schema_mismatch": 2}
    assert receipt.stats.docs_in == 6 and receipt.stats.docs_out == 6


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


@pytest.mark.parametrize("name", ["export.json", "export.json.gz"])
def test_a_file_that_is_one_json_array_is_read_element_by_element(tmp_path, name):
    """Exports that are one JSON array (pretty-printed or not) are records, not lines of bad JSON;
    a JSON Lines file whose first line happens to be an array is still read line by line."""
    elements = [*GOOD[:3], [1, 2], {"id": "nt"}]
    data = json.dumps(elements, indent=2).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    rows, stats = read(path, tmp_path / "a")
    assert [r["text"] for r in rows] == [g["text"] for g in GOOD[:3]]
    assert stats.dropped == {"invalid_json": 1, "missing_text": 1}
    lines = jsonl([b"[1, 2, 3]", *(json.dumps(g).encode() for g in GOOD)], tmp_path / "lines.jsonl")
    rows, stats = read(lines, tmp_path / "b")
    assert len(rows) == len(GOOD) and stats.dropped == {"invalid_json": 1}


def _array_rows(data: bytes, tmp_path: Path) -> tuple[list[dict], Counter]:
    """The records ``iter_jsonl_records`` reads from ``data`` (a file's bytes), and what it dropped."""
    path = tmp_path / "export.json"
    path.write_bytes(data)
    stats = ShardStats("part-00000")
    with open(path, "rb") as handle:
        rows = list(iter_jsonl_records(handle, str(path), RecordPolicy(DocumentsConfig(), str(path), stats)))
    return rows, stats.dropped


_tricky_text = st.text(st.sampled_from(['a', 'é', '語', '"', "\\", "]", "}", "[", "{", ",", " ", "\n", "\u2028", "😀"]),
                       min_size=1, max_size=30)
_element = st.fixed_dictionaries({"text": _tricky_text}, optional={
    "meta": st.dictionaries(st.sampled_from(["a", "b]", "c}"]), st.one_of(st.integers(), _tricky_text,
                                                                         st.lists(st.integers(), max_size=3))),
    "n": st.integers(-(2**70), 2**70)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(elements=st.lists(_element, max_size=12), indent=st.sampled_from([None, 0, 2]),
       ascii_only=st.booleans(), chunk=st.integers(1, 64), cut=st.integers(1, 10**6) | st.none())
def test_a_json_array_is_read_element_by_element_in_bounded_pieces(tmp_path, monkeypatch, elements, indent,
                                                                     ascii_only, chunk, cut):
    """Whatever the layout (one line, pretty-printed), whatever the strings hold (brackets, quotes,
    escapes), and wherever the read pieces end, each element is one record; a file cut anywhere
    keeps exactly the elements whole before the cut and counts the cut once."""
    monkeypatch.setattr(documents, "_ARRAY_CHUNK", chunk)
    monkeypatch.setattr(documents, "_FIRST_LINE_PROBE", chunk)  # a first line longer than this streams
    data = json.dumps(elements, indent=indent, ensure_ascii=ascii_only).encode()
    if not elements or (cut is not None and cut >= len(data)):
        cut = None
    rows, dropped = _array_rows(data if cut is None else data[:cut], tmp_path)
    whole = len(elements)
    if cut is not None:  # the elements whose closing brace is before the cut
        whole = next((k for k in range(len(elements)) if len(json.dumps(elements[: k + 1], indent=indent,
                                                                         ensure_ascii=ascii_only).encode()) - 1
                      - (1 if indent is not None else 0) > cut), len(elements))  # bytes, not characters
    assert [r["text"] for r in rows] == [e["text"] for e in elements[:whole]]
    # orjson reads an integer exactly in [-2**63, 2**64) (int64 or uint64), any other as a float
    assert [r.get("n") for r in rows] == [float(e["n"]) if "n" in e and not -(2**63) <= e["n"] < 2**64 else e.get("n")
                                          for e in elements[:whole]]
    assert dict(dropped) == ({} if cut is None else {"truncated_stream": 1})


def test_a_json_array_with_a_damaged_element_loses_only_that_element(tmp_path):
    data = b'[{"text": "one"},\n {"text": "two" "oops"},\n {"text": "th\xffree"}, 7, {"text": "four"}]\n'
    rows, dropped = _array_rows(data, tmp_path)
    assert [r["text"] for r in rows] == ["one", "th\ufffdree", "four"]
    assert dict(dropped) == {"invalid_json": 2}  # the damaged object and the number
    path = tmp_path / "export.json"
    with open(path, "rb") as handle, pytest.raises(BadRecord, match=r"export\.json: element 2: invalid_json$"):
        list(iter_jsonl_records(handle, str(path), RecordPolicy(DocumentsConfig(strict=True), str(path),
                                                                 ShardStats("part-00000"))))


def test_a_damaged_gzip_member_of_a_json_array_is_counted(tmp_path):
    """The array's reader used to return before the damaged members were counted."""
    head, tail = json.dumps(GOOD[:3], indent=1).encode().split(b"\n", 1)
    damaged = bytearray(gzip.compress(b"\n", mtime=0))
    damaged[12] ^= 0xFF
    path = tmp_path / "export.json.gz"
    path.write_bytes(gzip.compress(head + b"\n", mtime=0) + bytes(damaged) + gzip.compress(tail, mtime=0))
    rows, stats = read(path, tmp_path)
    assert [r["text"] for r in rows] == [g["text"] for g in GOOD[:3]]
    assert stats.dropped == {"corrupt_gzip_member": 1}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.binary(max_size=12).filter(lambda b: b"\n" not in b),
       records=st.lists(st.one_of(st.builds(lambda t: {"text": t}, st.text(min_size=1, max_size=20)),
                                  st.sampled_from([line for line, _ in BAD_LINES[:5]])), min_size=2, max_size=90),
       name=st.sampled_from(["x.jsonl", "x.jsonl.gz"]))
def test_json_lines_whose_first_line_opens_with_a_bracket_keep_every_record(tmp_path, damage, records, name):
    """A damaged first line that opens with "[" (the start of an array, to a reader that looks no
    further) made every record after it one damaged element of an array: all lost. The lines
    below it tell JSON Lines from an array's "[" alone, so every good record is read."""
    good = [i for i, r in enumerate(records) if isinstance(r, dict)]
    assume(len(good) >= 2 or (good and all(isinstance(r, dict) for r in records)))
    lines = [b"[" + damage] + [json.dumps({"id": f"g{i}", **r}).encode() if isinstance(r, dict) else r
                              for i, r in enumerate(records)]
    rows, _ = read(jsonl(lines, Path(tempfile.mkdtemp(dir=tmp_path)) / name), Path(tempfile.mkdtemp(dir=tmp_path)))
    kept = {r["id"]: r["text"] for r in rows}
    assert {f"g{i}": kept.get(f"g{i}") for i in good} == {f"g{i}": records[i]["text"] for i in good}


@pytest.mark.parametrize("indent", [None, 2])
def test_records_after_a_json_array_s_end_are_read_as_lines(tmp_path, indent):
    """Two exports concatenated, or an array and then JSON Lines: what followed the "]" was dropped
    without a count. It is read line by line, with ids of its own and its lines' numbers."""
    trailing = [json.dumps({"text": f"after {i}"}).encode() for i in range(3)]
    data = json.dumps([{"text": "in 0"}, {"text": "in 1"}], indent=indent).encode() + b"\n" + b"\n".join(
        [trailing[0], b"{not json", *trailing[1:]]) + b"\n"
    rows, dropped = _array_rows(data, tmp_path)
    assert [r["text"] for r in rows] == ["in 0", "in 1", "after 0", "after 1", "after 2"]
    assert len({r["id"] for r in rows}) == 5 and dict(dropped) == {"invalid_json": 1}
    path = tmp_path / "export.json"
    bad_line = data[: data.index(b"{not json")].count(b"\n") + 1
    with open(path, "rb") as handle, pytest.raises(BadRecord, match=rf"export\.json: record line {bad_line}: invalid_json$"):
        list(iter_jsonl_records(handle, str(path), RecordPolicy(DocumentsConfig(strict=True), str(path),
                                                                 ShardStats("part-00000"))))


def test_a_large_json_array_is_read_in_bounded_memory(tmp_path):
    """A 24 MB export on one line: the reader holds a piece and an element, never the file."""
    import tracemalloc

    element = json.dumps({"text": "a sentence about rivers, stones and clouds. " * 20}).encode()
    data = b"[" + b",".join([element] * 25_000) + b"]"
    path = tmp_path / "export.json"
    path.write_bytes(data)
    stats = ShardStats("part-00000")
    tracemalloc.start()
    with open(path, "rb") as handle:
        count = sum(1 for _ in iter_jsonl_records(handle, str(path), RecordPolicy(DocumentsConfig(), str(path), stats)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 25_000 and len(data) > 20e6
    assert peak < 10e6, peak  # a fixed ~7 MB of pieces and buffers, whatever the file


def _write_arrow(table: pa.Table, path: Path, form: str, batch_rows: int = 2) -> Path:
    """``table`` as an Arrow IPC stream (Hugging Face ``datasets``' ``.arrow``) or file (Feather v2)."""
    with pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_stream(sink, table.schema) if form == "stream" else pa.ipc.new_file(sink, table.schema)
        with writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    return path


ARROW_ROWS = [*GOOD, {"id": "m", "text": None, "lang": "en"}, {"id": "d0", "text": "again", "lang": None},
              {"id": None, "text": "no id, a derived one", "lang": "de"}]


@pytest.mark.parametrize(("form", "name"), [("stream", "data-00000-of-00001.arrow"), ("file", "docs.feather"),
                                            ("stream", "part-0"), ("file", "part-1")])
def test_arrow_ipc_is_read_as_parquet_is(tmp_path, form, name):
    """Hugging Face ``datasets`` keep their data as Arrow streams; Feather v2 is the file form: the
    same rows, ids and reasons as the same table in Parquet, named or known by its first bytes."""
    table = pa.Table.from_pylist(ARROW_ROWS)
    pq.write_table(table, tmp_path / "same.parquet")
    expected, expected_stats = read(tmp_path / "same.parquet", tmp_path / "p")
    rows, stats = read(_write_arrow(table, tmp_path / name, form), tmp_path / "a")
    assert [r["text"] for r in rows] == [r["text"] for r in expected] and len(rows) == len(GOOD) + 1
    assert stats.dropped == expected_stats.dropped == {"missing_text": 1, "duplicate_id": 1}
    assert stats.extra == {"repaired:derived_id": 1}


@pytest.mark.parametrize(("form", "cut", "kept"), [("stream", 900, 30), ("file", 20, 40), ("file", 300, 30)],
                         ids=["stream-in-last-batch", "file-footer-only", "file-into-last-batch"])
def test_an_arrow_file_cut_short_keeps_its_whole_batches(tmp_path, form, cut, kept):
    """A stream cut inside its last batch keeps the batches before; a file whose footer is cut off
    is read as the stream inside it: every row when only the footer went (~280 bytes here)."""
    table = pa.Table.from_pylist([{"id": f"d{i}", "text": f"document number {i} " * 20} for i in range(40)])
    data = _write_arrow(table, tmp_path / f"whole.{form}.arrow", form, batch_rows=10).read_bytes()
    (tmp_path / "cut.arrow").write_bytes(data[: len(data) - cut])
    rows, stats = read(tmp_path / "cut.arrow", tmp_path / "a")
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(kept)]
    assert stats.dropped == ({"truncated_stream": 1} if kept < 40 else {})


@pytest.mark.parametrize("splits", [None, ["train", "test"]])
def test_a_hugging_face_dataset_saved_to_disk_is_its_arrow_files(tmp_path, splits):
    """``Dataset.save_to_disk`` writes Arrow streams and two JSON files of state; ``DatasetDict``
    a folder per split and ``dataset_dict.json``. The input is the Arrow files alone."""
    from curation.core.io import Storage
    from curation.ingest.inputs import resolve_inputs

    root = tmp_path / "saved"
    expected = []
    for split in splits or [""]:
        folder = root / split
        folder.mkdir(parents=True)
        names = [f"data-0000{i}-of-00002.arrow" for i in range(2)]
        for i, name in enumerate(names):
            _write_arrow(pa.Table.from_pylist([{"text": f"{split} shard {i}"}]), folder / name, "stream")
            expected.append(str(folder / name))
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                       "_fingerprint": "f", "_format_type": None}))
        (folder / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    if splits:
        (root / "dataset_dict.json").write_text(json.dumps({"splits": splits}))
    assert resolve_inputs([str(root)], str(tmp_path / "run"), Storage()) == expected
    rows, _ = read(Path(expected[-1]), tmp_path / "read")
    assert [r["text"] for r in rows] == [f"{(splits or [''])[-1]} shard 1"]


def test_curate_reads_a_saved_hugging_face_dataset(tmp_path):
    """A command given a ``save_to_disk`` folder reads its Arrow files and nothing else (its JSON
    state files are not documents with no text)."""
    root = tmp_path / "saved"
    root.mkdir()
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    for i, name in enumerate(names):
        _write_arrow(pa.Table.from_pylist(GOOD[i::2]), root / name, "stream")
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (root / "dataset_info.json").write_text(json.dumps({"features": {}}))
    run_curate(["dedup", "--input", str(root), "--output", str(tmp_path / "out")])
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    assert sorted(table.column("text").to_pylist()) == sorted(g["text"] for g in GOOD)
    reasons = run_curate(["stats", str(tmp_path / "out"), "SELECT count(*) FROM reasons WHERE kind = 'dropped'",
                          "--format", "csv"]).stdout
    assert reasons.split()[-1] == "0", reasons


@pytest.mark.parametrize("packing", ["plain", "gzip", "zstd", "parquet"])
def test_files_whose_names_do_not_say_what_they_are_are_read_by_their_bytes(tmp_path, packing):
    """No suffix, or one that names no format (``part-0``, ``docs.txt``): Parquet by its magic,
    JSON Lines by their first bytes, compressed or not, as the suffix would have said."""
    lines = [json.dumps(g).encode() for g in GOOD]
    path = tmp_path / ("docs.data" if packing == "parquet" else "part-0")
    if packing == "parquet":
        pq.write_table(pa.Table.from_pylist(GOOD), path)
    else:
        data = b"\n".join(lines) + b"\n"
        path.write_bytes({"plain": data, "gzip": gzip.compress(data, mtime=0),
                          "zstd": zstandard.ZstdCompressor().compress(data)}[packing])
    rows, stats = read(path, tmp_path / "out")
    assert [r["text"] for r in rows] == [g["text"] for g in GOOD] and not stats.dropped
