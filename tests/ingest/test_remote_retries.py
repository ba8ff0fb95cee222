"""Remote inputs read through passing failures: a real HTTP server on loopback that serves byte
ranges and, on a schedule, answers 503 or 429 or cuts a response short. The reader retries from
where it stopped, so the bytes (and a stage's output) are those of the file; a missing file is not
retried; one that never stops failing stops the shard with its URL."""

from __future__ import annotations

import io
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_curate
from flaky_http import flaky_server

from curation.core import io as fio
from curation.core.stage import ShardStats
from curation.ingest.documents import DocumentsConfig, RecordPolicy, iter_parquet_batches


def every_third(number: int, request: tuple) -> str | None:
    """Requests 1, 4, 7, ... fail in turn with 503, 429 and a cut body: never twice running."""
    return ("503", "429", "cut")[(number // 3) % 3] if number % 3 == 1 else None


FAST = fio.Storage(retries=4, retry_wait_s=0.01)


def test_a_remote_file_is_read_whole_through_passing_failures(shared_data):
    data = (shared_data / "warc" / "cc-main-2020-34_resiliparse-excerpt.warc.gz").read_bytes()
    with flaky_server({"crawl.warc.gz": data}, every_third) as (base, log):
        handle, size = fio.open_input(base + "crawl.warc.gz", FAST, block_size=8192)  # ~17 range requests
        with handle:
            assert size == len(data) and fio.retries_of(handle) == 0
            assert handle.read() == data
            handle.seek(1000)
            assert handle.read(500) == data[1000:1500]  # seeking back works on a reopened file too
            assert fio.retries_of(handle) >= 5
    faults = [entry[3] for entry in log if entry[3]]
    assert {"503", "429", "cut"} <= set(faults) and len(faults) >= 6, log


def test_parquet_read_remotely_goes_through_passing_failures_and_stops_on_lasting_ones():
    """pyarrow reads the footer, then row groups, through the reader; the errors come back out of it
    as they went in: a lasting failure stops the file, it is not a damaged row group."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [f"document {i} " * 40 for i in range(3000)]}), buffer, row_group_size=500)
    policy = RecordPolicy(DocumentsConfig(), "docs.parquet", ShardStats("part-0"))
    with flaky_server({"docs.parquet": buffer.getvalue()}, every_third) as (base, log):
        handle, _ = fio.open_input(base + "docs.parquet", FAST, block_size=4096)
        with handle:
            rows = sum(batch.num_rows for batch in iter_parquet_batches(handle, policy, 1000))
        assert rows == 3000 and fio.retries_of(handle) >= 2 and not policy.stats.dropped
    with flaky_server({"docs.parquet": buffer.getvalue()}, lambda number, request: "503" if number >= 2 else None) as (base, log):
        handle, _ = fio.open_input(base + "docs.parquet", FAST, block_size=4096)
        with pytest.raises(fio.RemoteReadError, match="still failed after 4 retries"), handle:
            list(iter_parquet_batches(handle, policy, 1000))


def test_a_server_that_says_how_long_to_wait_is_waited_for():
    """A 429 with ``Retry-After: 1`` is retried after a second, not after ``retry_wait_s``."""
    import time

    def first_data_request(number: int, request: tuple) -> str | None:
        return "slow" if request[2] and not any(entry[2] for entry in log) else None

    with flaky_server({"busy.warc.gz": b"x" * 100_000}, first_data_request) as (base, log):
        handle, _ = fio.open_input(base + "busy.warc.gz", FAST, block_size=1024)
        started = time.monotonic()
        with handle:
            assert handle.read() == b"x" * 100_000 and fio.retries_of(handle) == 1
    assert time.monotonic() - started >= 1.0
    assert fio.asked_to_wait(type("E", (), {"headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}})()) == 0.0
    assert fio.asked_to_wait(type("E", (), {"headers": {"Retry-After": "86400"}})()) == 600.0


def test_a_missing_remote_file_is_not_retried():
    with flaky_server({}, lambda number, request: None) as (base, log), pytest.raises(FileNotFoundError):
        fio.open_input(base + "gone.warc.gz", FAST)
    assert len(log) <= 3, log  # fsspec's HEAD and GET for the size; no retry rounds


def test_a_remote_file_that_keeps_failing_stops_with_its_url():
    opening = r"busy\.warc\.gz: opening at byte 0 still failed after 4 retries \(ClientResponseError: 503"
    with flaky_server({"busy.warc.gz": b"x" * 10_000}, lambda number, request: "503") as (base, log), \
            pytest.raises(fio.RemoteReadError, match=opening):
        fio.open_input(base + "busy.warc.gz", FAST)
    with flaky_server({"busy.warc.gz": b"x" * 100_000}, lambda number, request: "503" if number >= 2 else None) as (base, log):
        handle, _ = fio.open_input(base + "busy.warc.gz", FAST, block_size=1024)  # request 1: the first range
        with pytest.raises(fio.RemoteReadError, match=r"reading at byte [\d,]+ still failed after 4 retries"), handle:
            handle.read()
    assert fio.passing_cause(ConnectionResetError()) is not None and fio.passing_cause(PermissionError()) is None


def test_extract_over_a_flaky_server_gives_the_output_of_the_local_files(shared_data, tmp_path):
    """``curate extract`` over HTTP, a WARC and a JSONL file, the server failing every request for data
    once:
    the same documents as from the files on disk, and nothing counted as lost."""
    warc = shared_data / "warc" / "cc-main-2020-34_resiliparse-excerpt.warc.gz"
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i} " + "words " * 300}) + "\n"
                            for i in range(400)))
    run_curate(["extract", "--input", str(warc), str(docs), "--output", str(tmp_path / "local")])
    files = {"crawl.warc.gz": warc.read_bytes(), "docs.jsonl": docs.read_bytes()}
    failed: set[tuple] = set()

    def first_read_of_each_range_fails(number: int, request: tuple) -> str | None:
        if request[0] != "GET" or request in failed:
            return None
        failed.add(request)
        return ("503", "429", "cut")[len(failed) % 3]

    with flaky_server(files, first_read_of_each_range_fails) as (base, log):
        run_curate(["extract", "--input", base + "crawl.warc.gz", base + "docs.jsonl", "--output",
                    str(tmp_path / "remote"), "--set", "storage.retry_wait_s=0.01"])
    assert any(entry[3] for entry in log)

    def documents(folder) -> list[tuple]:
        rows = itertools.chain.from_iterable(pq.read_table(p).to_pylist() for p in sorted(folder.glob("part-*.parquet")))
        return sorted((r["url"], r["text"]) for r in rows)

    assert documents(tmp_path / "remote") == documents(tmp_path / "local") and documents(tmp_path / "local")
    stats = run_curate(["stats", str(tmp_path / "remote"), "SELECT kind, reason FROM reasons WHERE kind = 'dropped'",
                        "--format", "csv"]).stdout
    assert "unreadable" not in stats and "truncated" not in stats, stats
    retries = run_curate(["stats", str(tmp_path / "remote"), "SELECT sum(count) FROM reasons WHERE kind = 'retried'",
                          "--format", "csv"]).stdout
    assert int(float(retries.split()[-1])) >= 2, retries  # counted in the shards' stats: one a file at least
