"""Every WARC record shape the specification allows for a page (and ARC), through `extract`:
Common Crawl's HTTP responses, archiving tools' responses without an HTTP block, wget's resource
records, chunked + gzip/deflate payloads, non-UTF-8 pages, WARC/1.0 and 1.1, plain and
per-record gzip files, a truncated last record; records that are not pages are counted, not errors; files compressed as one stream and zstd files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from warc_factory import (
    arc_records,
    archive_shapes,
    bare_lf,
    build_arc,
    gzip_members,
    http_block,
    lower_case_names,
    not_documents,
    page,
    raw_record,
)

from curation.core.stage import ShardTask, StageContext
from curation.ingest.extract import ExtractConfig, ExtractStage


def extract(path: Path, tmp_path: Path, **options):
    stage = ExtractStage(ExtractConfig(language_id=False, **options))
    ctx = StageContext(run_root=str(tmp_path), stage_name="extract", stage_dir=str(tmp_path / "out"), key="k")
    receipt = stage.run_shard(ShardTask(0, "part-00000", [str(path)]), ctx)
    return pq.read_table(tmp_path / "out" / "part-00000.parquet").to_pylist(), receipt.stats


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-members"])
def test_every_page_shape_is_extracted(tmp_path, compressed):
    shapes = archive_shapes()
    records = not_documents()[:1] + [record for _, record, _ in shapes] + not_documents()[1:]
    path = tmp_path / ("mixed.warc.gz" if compressed else "mixed.warc")
    path.write_bytes(gzip_members(records) if compressed else b"".join(records))
    rows, stats = extract(path, tmp_path)
    texts = {row["url"].rsplit("/", 1)[-1]: row["text"] for row in rows}
    for name, _, phrase in shapes:
        url_tail = {"cc_response": "cc", "archive_response": "archive", "wget_resource": "wget", "chunked_gzip": "chunked",
                    "deflate": "deflate", "latin1_meta": "latin", "sjis_resource": "sjis", "warc_1_0": "v10"}[name]
        assert phrase in texts.get(url_tail, ""), (name, texts.get(url_tail))
    assert len(rows) == len(shapes) and not stats.dropped, stats.dropped
    assert stats.extra == {"skipped:warcinfo": 1, "skipped:request": 1, "skipped:metadata": 1, "skipped:revisit": 1}
    assert stats.docs_in == len(shapes)  # only documents count as read


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-members"])
def test_truncated_last_record_keeps_the_others(tmp_path, compressed):
    shapes = archive_shapes()
    records = [record for _, record, _ in shapes]
    data = gzip_members(records) if compressed else b"".join(records)
    last = len(gzip_members(records[-1:]) if compressed else records[-1])
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: len(data) - last // 2])  # the file ends inside the last record
    rows, stats = extract(path, tmp_path)
    assert len(rows) == len(shapes) - 1
    assert stats.dropped == {"truncated_record": 1}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("packing", ["plain", "gzip-members", "gzip-stream"])
def test_arc_files_are_read(tmp_path, packing, version, caplog):
    """Version 2 (Alexa's ARC, more fields in each header line): warcio reads every line as
    version 1, and its URLs came out as six fields joined with %20, its dates as the year 2999
    (and it logged a warning for every record)."""
    pages = [(f"http://old.example/{i}?q=a%20b", page(i)) for i in range(5)]
    path = tmp_path / ("old.arc" if packing == "plain" else "old.arc.gz")
    data = build_arc(pages, gzip=packing == "gzip-members", version=version)
    path.write_bytes(gzip.compress(data, mtime=0) if packing == "gzip-stream" else data)  # warcio refused the stream
    rows, stats = extract(path, tmp_path)
    assert [row["url"] for row in rows] == [url for url, _ in pages]
    assert [row["warc_date"] for row in rows] == [f"2026-01-0{i + 1}T00:00:00Z" for i in range(5)]
    assert not [r for r in caplog.records if r.name.startswith("warcio")]
    assert all(f"Document number {i}." in row["text"] for i, row in enumerate(rows))
    assert not stats.dropped and stats.extra == {"skipped:warcinfo": 1}
    assert len({row["id"] for row in rows}) == len(rows)


def test_a_heritrix_dns_response_is_not_a_web_page(tmp_path):
    """Heritrix writes a WARC response record for every host's DNS lookup (text/dns)."""
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "heritrix.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        answer = b"20260101000000\nold.example.\t3600\tIN\tA\t192.0.2.7\n"
        writer.write_record(writer.create_warc_record("dns:old.example", "response", payload=io.BytesIO(answer),
                                                      warc_content_type="text/dns"))
    rows, stats = extract(path, tmp_path)
    assert rows == [] and stats.dropped == {"non_web_resource": 1}


def test_arc_records_without_an_http_message_are_read_by_what_they_hold(tmp_path):
    """A dns: record and a page fetched over FTP hold no HTTP message; warcio types every ARC
    record application/http, so both were dropped as non_html:application. Now the page is
    sniffed as HTML, and the DNS answer (text/dns) is counted as what it is, not a web page."""
    records = arc_records([("http://old.example/0", page(0))])
    dns = b"20260101000000\nold.example.\t3600\tIN\tA\t192.0.2.7\n"
    ftp_page = page(1)
    records += [b"dns:old.example 192.0.2.53 20260101000000 text/dns %d\n" % len(dns) + dns + b"\n",
                b"ftp://old.example/1.html 192.0.2.1 20260101000000 text/html %d\n" % len(ftp_page) + ftp_page + b"\n"]
    path = tmp_path / "old.arc"
    path.write_bytes(b"".join(records))
    rows, stats = extract(path, tmp_path)
    assert [row["url"] for row in rows] == ["http://old.example/0", "ftp://old.example/1.html"]
    assert "Document number 1." in rows[1]["text"] and stats.dropped == {"non_web_resource": 1}


def test_strict_stops_at_the_first_bad_warc_record(tmp_path):
    from curation.ingest.documents import BadRecord

    records = not_documents() + [record for _, record, _ in archive_shapes()]
    whole = tmp_path / "whole.warc"
    whole.write_bytes(b"".join(records))
    rows, _ = extract(whole, tmp_path / "a", strict=True)  # skipped record types are not errors
    assert len(rows) == len(archive_shapes())
    cut = tmp_path / "cut.warc"
    cut.write_bytes(whole.read_bytes()[: -len(records[-1]) // 2])
    with pytest.raises(BadRecord, match=r"cut\.warc: truncated_record$"):
        extract(cut, tmp_path / "b", strict=True)


PACKINGS = {
    # `gzip file.warc`: one gzip member for the whole file, so every record has the same offset
    "gzip-stream": lambda records: gzip.compress(b"".join(records), mtime=0),
    # the WARC-zstd layout (one frame per record, as gzip members) and one frame for the file
    "zstd-frames": lambda records: b"".join(zstandard.ZstdCompressor().compress(r) for r in records),
    "zstd-stream": lambda records: zstandard.ZstdCompressor().compress(b"".join(records)),
}


@pytest.mark.parametrize("packing", list(PACKINGS))
def test_other_compressions_read_every_record_with_its_own_id(tmp_path, packing):
    shapes = archive_shapes()
    records = not_documents()[:2] + [record for _, record, _ in shapes]
    path = tmp_path / ("pages.warc.zst" if packing.startswith("zstd") else "pages.warc.gz")
    path.write_bytes(PACKINGS[packing](records))
    rows, stats = extract(path, tmp_path)
    assert sorted(row["url"].rsplit("/", 1)[-1] for row in rows) == sorted(
        ["cc", "archive", "wget", "chunked", "deflate", "latin", "sjis", "v10"])
    assert len({row["id"] for row in rows}) == len(rows)  # before: all records of one stream shared an id
    assert not stats.dropped and stats.extra == {"skipped:warcinfo": 1, "skipped:request": 1}
    again, _ = extract(path, tmp_path / "again")
    assert [row["id"] for row in again] == [row["id"] for row in rows]  # ids are stable across runs


def test_a_truncated_gzip_stream_keeps_the_records_before_the_cut(tmp_path):
    records = [record for _, record, _ in archive_shapes()]
    whole = PACKINGS["gzip-stream"](records)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(whole[: len(whole) * 3 // 4])
    rows, stats = extract(path, tmp_path)
    assert 0 < len(rows) < len(records)
    assert sum(stats.dropped.values()) == 1 and len(rows) + 1 == stats.docs_in, stats.dropped


@given(body=st.binary(max_size=200), line_end=st.sampled_from([b"\r\n", b"\n"]),
       interim=st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\nLink: </a.css>\n\n"]))
def test_the_http_body_is_everything_after_the_first_empty_line(body, line_end, interim):
    """Whatever the body holds (an empty line of the other kind, a line like a header), it comes back
    whole; header lines may end in CRLF or bare LF; interim 1xx responses before the final one are
    passed over."""
    from curation.ingest.readers import parse_http_response

    head = line_end.join([b"HTTP/1.1 200 OK", b"Content-Type: text/html; charset=ISO-8859-1", b"", b""])
    assert parse_http_response(interim + head + body) == ("text/html", "iso-8859-1", body, 200)


def test_a_page_compressed_without_a_content_encoding_is_inflated():
    from curation.ingest.readers import parse_http_response

    body = b"<html><body><p>Compressed, and the server never said so.</p></body></html>"
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + gzip.compress(body, mtime=0)
    assert parse_http_response(block) == ("text/html", None, body, 200)
    archive = b"HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\n\r\n" + gzip.compress(body, mtime=0)
    assert parse_http_response(archive).body == gzip.compress(body, mtime=0)  # a download stays what it is


def test_a_folded_header_field_goes_on_on_its_next_line():
    from curation.ingest.readers import parse_http_response

    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html;\r\n\tcharset=windows-1251\r\nServer: x\r\n\r\n<p>body</p>"
    assert parse_http_response(block) == ("text/html", "windows-1251", b"<p>body</p>", 200)


def test_a_page_behind_an_interim_response_and_bare_lf_headers_is_extracted(tmp_path):
    page_html = b"<html><body><p>The header ends at the first empty line.</p>\r\n\r\n<p>Both paragraphs stay.</p></body></html>"
    http = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\nContent-Type: text/html\n\n" + page_html
    path = tmp_path / "interim.warc"
    path.write_bytes(raw_record("response", "http://example.com/interim", "application/http; msgtype=response", http))
    rows, stats = extract(path, tmp_path)
    assert [row["url"] for row in rows] == ["http://example.com/interim"] and not stats.dropped
    assert "first empty line" in rows[0]["text"] and "Both paragraphs stay" in rows[0]["text"]


@pytest.mark.parametrize("packing", ["plain", "gzip-members", "gzip-stream"])
@pytest.mark.parametrize("writer", [bare_lf, lower_case_names], ids=["bare-lf", "lower-case-names"])
def test_records_fastwarc_cannot_read_are_read_with_warcio(tmp_path, packing, writer):
    """FastWARC read none of these (it counted them as records of unknown type or corrupt headers)."""
    shapes = archive_shapes()
    records = [writer(r) for r in not_documents()[:1] + [record for _, record, _ in shapes]]
    data = {"plain": b"".join, "gzip-members": gzip_members, "gzip-stream": PACKINGS["gzip-stream"]}[packing](records)
    path = tmp_path / ("odd.warc" if packing == "plain" else "odd.warc.gz")
    path.write_bytes(data)
    rows, stats = extract(path, tmp_path)
    texts = {row["url"].rsplit("/", 1)[-1]: row["text"] for row in rows}
    for name, _, phrase in shapes:
        assert any(phrase in text for text in texts.values()), (name, sorted(texts))
    assert len(rows) == len(shapes) and len({row["id"] for row in rows}) == len(rows)
    assert all(row["warc_record_id"].startswith("<urn:uuid:") for row in rows)
    assert not stats.dropped and stats.extra == {"skipped:warcinfo": 1}


def _raw_deflate(body: bytes) -> bytes:
    import zlib

    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(body) + compressor.flush()


@pytest.mark.parametrize(("coding", "encode"), [
    ("gzip", lambda b: gzip.compress(b, mtime=0)),
    ("deflate", lambda b: __import__("zlib").compress(b)),  # zlib-wrapped, as the RFC says
    ("deflate", _raw_deflate),  # raw deflate, as many servers send it
    ("br", lambda b: __import__("brotli").compress(b)),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("gzip", lambda b: b),  # stored already decoded with the header kept (Common Crawl)
], ids=["gzip", "deflate-zlib", "deflate-raw", "br", "zstd", "stored-decoded"])
def test_every_content_coding_is_undone(coding, encode):
    from curation.ingest.readers import parse_http_response

    body = "<html><body><p>Crème brûlée, encoded for the wire.</p></body></html>".encode()
    block = f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Encoding: {coding}\r\n\r\n".encode()
    assert parse_http_response(block + encode(body)) == ("text/html", "utf-8", body, 200)


@pytest.mark.parametrize(("coding", "encode"), [
    ("gzip", lambda b: gzip.compress(b, mtime=0)),
    ("deflate", _raw_deflate),
    ("br", lambda b: __import__("brotli").compress(b)),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
], ids=["gzip", "deflate-raw", "br", "zstd"])
def test_a_compressed_body_cut_short_gives_the_text_before_the_cut(coding, encode):
    """Crawlers cut long payloads (``WARC-Truncated: length``) and keep the HTTP message as it came,
    compressed: what the cut stream decodes to is the page's start, never the compressed bytes read
    as text (brotli's one-shot call refused a cut stream)."""
    from curation.ingest.readers import parse_http_response

    paragraphs = [f"<p>Paragraph {i} of a long article about rivers, stones and the weather.</p>" for i in range(4000)]
    body = ("<html><body>" + "".join(paragraphs) + "</body></html>").encode()
    wire = encode(body)
    block = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: {coding}\r\n\r\n".encode()
    decoded = parse_http_response(block + wire[: len(wire) // 2]).body
    assert len(decoded) > 1000 and body.startswith(decoded)


@pytest.mark.parametrize("writer", [bare_lf, lower_case_names], ids=["bare-lf", "lower-case-names"])
def test_a_cut_file_of_such_a_writer_keeps_the_records_before_the_cut(tmp_path, writer):
    records = [writer(record) for _, record, _ in archive_shapes()]
    data = b"".join(records)
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: len(data) - len(records[-1]) // 2])  # the file ends inside the last record
    rows, stats = extract(path, tmp_path)
    assert len(rows) == len(records) - 1 and stats.dropped == {"truncated_record": 1}


_POLISH = "Zażółć gęślą jaźń, powiedział nauczyciel."


@pytest.mark.parametrize(("payload", "declared", "expected"), [
    # undeclared: the meta tag decides (detection alone read both as windows-1252)
    (f'<html><head><meta charset="iso-8859-2"></head><body><p>{_POLISH}</p></body></html>'.encode("iso-8859-2"),
     None, _POLISH),
    ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=gbk"></head><body><p>中文网页内容测试。</p>'
     "</body></html>".encode("gbk"), None, "中文网页内容测试。"),
    # undeclared and valid UTF-8: UTF-8, however short the page
    ("<p>Crème brûlée</p>".encode(), None, "Crème brûlée"),
    ("<p>Crème brûlée</p>".encode(), "no-such-charset", "Crème brûlée"),
    # a byte-order mark outranks the header
    ("\ufeff<p>Crème brûlée</p>".encode(), "iso-8859-1", "Crème brûlée"),
    ("<p>Crème brûlée</p>".encode("utf-16"), None, "Crème brûlée"),
    # labels mean what they mean to browsers: iso-8859-1 is windows-1252 (curly quotes, not C1 controls)
    (b"<p>\x93quoted\x94 \x85</p>", "iso-8859-1", "\u201cquoted\u201d \u2026"),
    ("<p>日本語のテキスト</p>".encode("shift_jis"), "x-sjis", "日本語のテキスト"),
], ids=["meta-iso-8859-2", "meta-gbk", "utf8-undeclared", "utf8-unknown-label", "bom-over-header", "utf16-bom",
        "latin1-is-cp1252", "x-sjis"])
def test_pages_are_decoded_as_browsers_decode_them(payload, declared, expected):
    from curation.ingest.extract import HtmlExtractor, decode_page

    assert HtmlExtractor("resiliparse", main_content=False).extract(decode_page(payload, declared)) == expected


def test_a_text_record_with_an_unknown_charset_is_read_not_fatal(tmp_path):
    """A plain-text resource and a WET record whose charset labels no codec knows (this ended the
    shard with a LookupError) are read as what their bytes are, and so is the page after them."""
    text = "Plain text long enough to be kept, with a word of French: crème."
    records = [raw_record("resource", "http://example.com/a.txt", "text/plain; charset=bogus", text.encode()),
               raw_record("conversion", "http://example.com/b", "text/plain; charset=x-unknown", text.encode(), record_id=1),
               raw_record("resource", "http://example.com/c.txt", "text/plain", text.encode("cp1252"), record_id=2)]
    path = tmp_path / "labels.warc"
    path.write_bytes(b"".join(records))
    rows, stats = extract(path, tmp_path)
    assert [row["text"] for row in rows] == [text] * 3 and not stats.dropped


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-members"])
def test_draft_warc_versions_resynchronise_after_damage_too(tmp_path, compressed):
    """WARC/0.17 and 0.18 (the drafts ClueWeb09 and early Heritrix wrote) read as 1.x do, and a
    damaged record between them costs only itself: the search for the next record knows them."""
    body = b"<html><body><p>A page of an early crawl, long enough to be kept by the extractor.</p></body></html>"
    records = [raw_record("response", f"http://example.com/{i}", "application/http; msgtype=response", http_block(body),
                          version=version, record_id=i) for i, version in enumerate(["0.18", "0.17", "0.18"])]
    records[1] = records[1].replace(b"Content-Length", b"Content-Lenght")
    path = tmp_path / ("draft.warc.gz" if compressed else "draft.warc")
    path.write_bytes(gzip_members(records) if compressed else b"".join(records))
    rows, stats = extract(path, tmp_path)
    assert [row["url"] for row in rows] == ["http://example.com/0", "http://example.com/2"]
    assert sum(stats.dropped.values()) == 1, stats.dropped  # the damaged record, counted once


def test_an_undeclared_page_behind_a_byte_order_mark_is_html(tmp_path):
    """No content type anywhere: a payload that opens with markup is a page, also behind a BOM."""
    html = "<!DOCTYPE html><html><body><p>A page whose server declared no content type at all.</p></body></html>"
    records = [raw_record("response", f"http://example.com/{i}", "application/http; msgtype=response",
                          b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n" + body, record_id=i)
               for i, body in enumerate([html.encode(), "\ufeff".encode() + html.encode(), html.encode("utf-16")])]
    path = tmp_path / "undeclared.warc"
    path.write_bytes(b"".join(records))
    rows, stats = extract(path, tmp_path)
    assert [row["text"] for row in rows] == ["A page whose server declared no content type at all."] * 3, stats.dropped


def test_extract_reads_files_by_their_bytes_when_the_name_does_not_say(tmp_path):
    """A WARC, a gzipped JSON Lines file and a Parquet file, none named for what it is: each read
    as what its first bytes say (a JSON Lines file used to be read as a WARC, every line lost)."""
    import json

    import pyarrow as pa

    body = b"<html><body><p>A page in a WARC that has no suffix at all, long enough to keep.</p></body></html>"
    (tmp_path / "crawl-0").write_bytes(raw_record("response", "http://example.com/w", "application/http; msgtype=response",
                                                  b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body))
    docs = [{"id": f"j{i}", "text": f"a JSON Lines document number {i}"} for i in range(3)]
    (tmp_path / "docs-0").write_bytes(gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in docs), mtime=0))
    pq.write_table(pa.Table.from_pylist([{"id": "p0", "text": "a Parquet document"}]), tmp_path / "table.bin")
    rows = []
    for name in ("crawl-0", "docs-0", "table.bin"):
        found, stats = extract(tmp_path / name, tmp_path / f"out-{name}")
        assert not stats.dropped, (name, stats.dropped)
        rows += found
    assert [r["text"] for r in rows] == ["A page in a WARC that has no suffix at all, long enough to keep.",
                                         *(d["text"] for d in docs), "a Parquet document"]


@pytest.mark.parametrize("damage", [(b"WARC/1.1\r\n", b"WARC/\n"), (b"WARC/1.1\r\n", b"WARC/1.1X\n"),
                                    (b"WARC-Type:", b"wARC-Type:")], ids=["first-line-cut", "first-line-cr", "one-name-case"])
def test_one_damaged_byte_in_the_first_header_is_not_another_writer(tmp_path, damage):
    """A bare-LF line or a field name in another case is how some writers write every record; one
    damaged byte in the first record only looks like it. Such a file stays with the reader that
    resynchronises (warcio would have lost every record after the damage)."""
    body = b"<html><body><p>A page after some damage, long enough to be kept by the extractor.</p></body></html>"
    records = [raw_record("response", f"http://example.com/{i}", "application/http; msgtype=response", http_block(body),
                          record_id=i) for i in range(3)]
    records[0] = records[0].replace(*damage, 1)
    path = tmp_path / "damaged.warc"
    path.write_bytes(b"".join(records))
    rows, _ = extract(path, tmp_path)
    assert {"http://example.com/1", "http://example.com/2"} <= {row["url"] for row in rows}


def _response(name: str, status: str, body: bytes, record_id: int) -> bytes:
    block = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\n\r\n".encode() + body
    return raw_record("response", f"http://example.com/{name}", "application/http; msgtype=response", block,
                      record_id=record_id)


_STATUS_PAGES = [
    ("ok", "200 OK", page(1)),
    ("partial", "206 Partial Content", page(2)),
    ("missing", "404 Not Found", b"<html><body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>"),
    ("moved", "301 Moved Permanently", b""),
    ("unchanged", "304 Not Modified", b""),
    ("broken", "500 Internal Server Error", b"<html><body><p>Traceback (most recent call last)</p></body></html>"),
    ("odd", "OK", page(3)),  # a status line without a code: no status, kept
]


@pytest.mark.parametrize(("statuses", "kept", "dropped"), [
    (None, {"ok", "partial", "odd", "file.txt"},
     {"http_status:404": 1, "http_status:301": 1, "http_status:304": 1, "http_status:500": 1}),
    ([200, "4xx"], {"ok", "missing", "odd", "file.txt"},
     {"http_status:206": 1, "http_status:301": 1, "http_status:304": 1, "http_status:500": 1}),
    ([], {"ok", "partial", "missing", "broken", "odd", "file.txt"}, {"empty_record": 2}),
], ids=["default-2xx", "200-and-4xx", "every-status"])
def test_responses_are_kept_by_http_status_and_the_others_counted(tmp_path, statuses, kept, dropped):
    """Crawlers other than Common Crawl's keep error pages and redirects in the same WARC as the
    pages; by default only 2xx responses become documents, and every other one is counted by its
    code. A record without an HTTP message has no status and is not affected."""
    records = [_response(name, status, body, i) for i, (name, status, body) in enumerate(_STATUS_PAGES)]
    records.append(raw_record("resource", "http://example.com/file.txt", "text/plain",
                              b"A resource record holds no HTTP message, so it has no status.", record_id=99))
    path = tmp_path / "statuses.warc.gz"
    path.write_bytes(gzip_members(records))
    options = {} if statuses is None else {"http_statuses": statuses}
    rows, stats = extract(path, tmp_path, **options)
    assert {row["url"].rsplit("/", 1)[-1] for row in rows} == kept
    assert dict(stats.dropped) == dropped and stats.docs_in == len(records)


def test_arc_responses_are_kept_by_http_status(tmp_path):
    pages = [(f"http://old.example/{i}", page(i)) for i in range(3)]
    path = tmp_path / "old.arc"
    path.write_bytes(build_arc(pages, statuses={"http://old.example/1": "404 Not Found"}))
    rows, stats = extract(path, tmp_path)
    assert [row["url"] for row in rows] == ["http://old.example/0", "http://old.example/2"]
    assert dict(stats.dropped) == {"http_status:404": 1}


@pytest.mark.parametrize("entry", ["abc", "2x", 99, "6xx", "200 OK"])
def test_a_bad_http_status_entry_is_a_config_error(entry):
    from curation.core.config import build_config
    from curation.core.errors import ConfigError

    with pytest.raises(ConfigError, match="http_statuses"):
        build_config(ExtractConfig, {"http_statuses": [entry]}, "extract")
    assert build_config(ExtractConfig, {"http_statuses": [404, "2XX"]}, "extract").keeps_http_status(201)


def test_a_page_served_as_octet_stream_is_read_by_the_type_the_crawler_identified(tmp_path):
    """Servers that do not know a file's type send application/octet-stream (or nothing); Common
    Crawl's WARC-Identified-Payload-Type (Tika's detection) then names it."""
    def served(name: str, http_type: str, identified: str | None, body: bytes, i: int) -> bytes:
        block = f"HTTP/1.1 200 OK\r\nContent-Type: {http_type}\r\n\r\n".encode() + body
        extra = {"WARC-Identified-Payload-Type": identified} if identified else {}
        return raw_record("response", f"http://example.com/{name}", "application/http; msgtype=response", block,
                          extra=extra, record_id=i)

    records = [served("identified", "application/octet-stream", "text/html", page(1), 0),
               served("pdf", "application/octet-stream", "application/pdf", b"%PDF-1.4 ...", 1),
               served("unidentified", "application/octet-stream", None, page(2), 2),
               served("declared", "text/html", "application/xhtml+xml", page(3), 3)]  # the server's type stands
    path = tmp_path / "types.warc.gz"
    path.write_bytes(gzip_members(records))
    for packing, target in (("fastwarc", path), ("warcio", tmp_path / "bare-lf.warc")):
        if packing == "warcio":  # the lenient reader (bare-LF WARC headers) takes the same decision
            target.write_bytes(b"".join(bare_lf(r) for r in records))
        rows, stats = extract(target, tmp_path / packing)
        assert sorted(row["url"].rsplit("/", 1)[-1] for row in rows) == ["declared", "identified"], packing
        assert dict(stats.dropped) == {"non_html:application": 2}
