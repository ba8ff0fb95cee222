"""fsspec I/O on local paths: atomic commits, listings that never show a half-written file, and
input expansion that refuses to read nothing. (S3 is tested against a real endpoint in test_s3.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.core import io as fio
from curation.core.errors import CurationError


def test_write_atomic_creates_folders_replaces_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "a" / "b" / "part-00000.parquet")
    fio.write_atomic(path, b"first")
    fio.write_atomic(path, b"second")
    assert fio.read_bytes(path) == b"second"
    assert os.listdir(tmp_path / "a" / "b") == ["part-00000.parquet"]


def test_listing_skips_temporaries_and_folders(tmp_path):
    for name in ("b.json", "a.json", "c.txt", "d.json.tmp-0123abcd"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.json").mkdir()
    assert fio.list_files(str(tmp_path), ".json") == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    assert fio.list_files(str(tmp_path / "missing")) == []


def test_expand_inputs_globs_folders_and_missing(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("x/2.warc.gz", "x/1.warc.gz", "x/.hidden", "y.jsonl"):
        (tmp_path / name).write_text("x")
    assert fio.expand_inputs([str(tmp_path / "x")]) == [str(tmp_path / "x" / "1.warc.gz"), str(tmp_path / "x" / "2.warc.gz")]
    both = fio.expand_inputs([str(tmp_path / "**" / "*.gz"), str(tmp_path / "x" / "1.warc.gz"), str(tmp_path / "y.jsonl")])
    assert both == sorted({str(tmp_path / "x" / "1.warc.gz"), str(tmp_path / "x" / "2.warc.gz"), str(tmp_path / "y.jsonl")})
    with pytest.raises(CurationError, match="input not found"):
        fio.expand_inputs([str(tmp_path / "nothing*.warc")])
    assert fio.expand_inputs(["https://example.org/a.warc.gz"]) == ["https://example.org/a.warc.gz"]


def test_roots_and_joins():
    assert fio.normalize_root("s3://bucket/run/") == "s3://bucket/run"
    assert fio.join("s3://bucket/run", "extract", "x.parquet") == "s3://bucket/run/extract/x.parquet"
    assert os.path.isabs(fio.normalize_root("runs/demo"))
    assert fio.is_local("file:///tmp/x") and not fio.is_local("s3://b/x")


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3 * (1 << 10)))
def test_file_checksum_equals_bytes_checksum(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("sum") / "f"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert fio.sha256_bytes(data) == expected == fio.sha256_file(str(path), chunk=1000)


def test_local_copy_of_a_remote_directory_is_shared_refetched_on_change_and_whole(s3_endpoint, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import s3fs

    endpoint, _ = s3_endpoint
    monkeypatch.setenv("CURATION_CACHE", str(tmp_path / "cache"))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir("models")
    fs.pipe_file("models/m1/model.bin", b"\x00weights" * 1000)
    fs.pipe_file("models/m1/card.json", b'{"kind": "fasttext"}')
    storage = fio.Storage(endpoint_url=endpoint)

    with ThreadPoolExecutor(4) as pool:  # workers on one machine asking at once share one copy
        copies = set(pool.map(lambda _: fio.local_copy("s3://models/m1", storage), range(4)))
    assert len(copies) == 1
    (copy,) = copies
    assert sorted(os.listdir(copy)) == ["card.json", "model.bin"]
    assert Path(copy, "model.bin").read_bytes() == b"\x00weights" * 1000
    assert os.listdir(tmp_path / "cache" / "models") == [os.path.basename(copy)]  # no staging folder left

    fs.pipe_file("models/m1/model.bin", b"retrained")
    fresh = fio.local_copy("s3://models/m1", storage)
    assert fresh != copy and Path(fresh, "model.bin").read_bytes() == b"retrained"
    assert fio.local_copy(str(tmp_path), storage) == str(tmp_path)  # local directories are used in place
    with pytest.raises(CurationError, match="no files"):
        fio.local_copy("s3://models/absent", storage)
