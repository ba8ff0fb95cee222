"""Build WARC bytes for tests: one gzip member per record, with member offsets."""

from __future__ import annotations

import hashlib
import io

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def page(i: int, words: int = 80) -> bytes:
    body = " ".join(f"word{j % 50} the of and" for j in range(words // 4))
    return f"<html><head><title>Page {i}</title></head><body><p>Document number {i}. {body}</p></body></html>".encode()


def build_warc(payloads: list[tuple[str, str, bytes]], gzip: bool = True) -> tuple[bytes, list[int]]:
    """(warc bytes, start offset of each record). payloads: (url, content type, body)."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzip)
    offsets = []
    for i, (url, content_type, body) in enumerate(payloads):
        offsets.append(buffer.tell())
        http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        record = writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=http,
            warc_headers_dict={"WARC-Date": "2026-01-01T00:00:00Z",
                               "WARC-Record-ID": f"<urn:uuid:00000000-0000-4000-8000-{i:012d}>"},
        )
        writer.write_record(record)
    return buffer.getvalue(), offsets


def simple_pages(n: int) -> list[tuple[str, str, bytes]]:
    return [(f"https://example.com/{i}", "text/html; charset=utf-8", page(i)) for i in range(n)]


# -- record shapes other writers produce (raw bytes, so the shape is exactly what the test says) ----------
def raw_record(record_type: str, url: str, content_type: str, block: bytes, version: str = "1.1",
               extra: dict[str, str] | None = None, record_id: int = 0) -> bytes:
    headers = {"WARC-Type": record_type, "WARC-Target-URI": url, "WARC-Date": "2026-01-01T00:00:00Z",
               "WARC-Record-ID": f"<urn:uuid:00000000-0000-4000-8000-{record_id:012d}>", **(extra or {})}
    if content_type:
        headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(block))
    head = f"WARC/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + block + b"\r\n\r\n"


def http_block(body: bytes, content_type: str = "text/html", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode() + body


def chunked(body: bytes, size: int = 37) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def gzip_members(records: list[bytes]) -> bytes:
    import gzip as gz

    return b"".join(gz.compress(r, mtime=0) for r in records)


def archive_shapes() -> list[tuple[str, bytes, str]]:
    """(name, record bytes, a phrase its text must contain) for every record shape of the WARC spec
    that carries a page, as Common Crawl, archiving tools and wget write them."""
    import gzip as gz
    import zlib

    def body(name: str, extra: str = "") -> bytes:
        return page(0).replace(b"Document number 0", f"Shape {name} {extra}".encode())

    deflate = zlib.compressobj(wbits=15)
    deflated = deflate.compress(body("deflated")) + deflate.flush()
    latin = ('<html><head><meta charset="iso-8859-1"></head><body><p>Shape latin café crème brûlée '
             + "the of and " * 30 + "</p></body></html>").encode("iso-8859-1")
    japanese = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=shift_jis"></head><body><p>'
                + "Shape sjis 日本語のページです。" * 10 + "</p></body></html>").encode("shift_jis")
    return [
        ("cc_response", raw_record("response", "https://a.example/cc", "application/http; msgtype=response",
                                   http_block(body("cc_response"), "text/html; charset=utf-8")), "Shape cc_response"),
        ("archive_response", raw_record("response", "https://a.example/archive", "text/html",
                                        body("archive_response"), extra={"WARC-Payload-Digest": "sha1:X"}),
         "Shape archive_response"),
        ("wget_resource", raw_record("resource", "https://a.example/wget", "text/html", body("wget_resource")),
         "Shape wget_resource"),
        ("chunked_gzip", raw_record("response", "https://a.example/chunked", "application/http; msgtype=response",
                                    http_block(chunked(gz.compress(body("chunked_gzip"), mtime=0)), "text/html",
                                               {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"})),
         "Shape chunked_gzip"),
        ("deflate", raw_record("response", "https://a.example/deflate", "application/http;msgtype=response",
                               http_block(deflated, "text/html", {"Content-Encoding": "deflate"})), "Shape deflated"),
        ("latin1_meta", raw_record("response", "https://a.example/latin", "application/http; msgtype=response",
                                   http_block(latin, "text/html")), "café crème brûlée"),
        ("sjis_resource", raw_record("resource", "https://a.example/sjis", "text/html", japanese), "日本語のページです"),
        ("warc_1_0", raw_record("response", "https://a.example/v10", "application/http; msgtype=response",
                                http_block(body("warc_1_0")), version="1.0"), "Shape warc_1_0"),
    ]


def not_documents() -> list[bytes]:
    """Records that are not pages: skipped and counted, never errors."""
    return [
        raw_record("warcinfo", "", "application/warc-fields", b"software: test\r\n"),
        raw_record("request", "https://a.example/cc", "application/http; msgtype=request",
                   b"GET /cc HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        raw_record("metadata", "https://a.example/cc", "application/warc-fields", b"fetchTimeMs: 12\r\n"),
        raw_record("revisit", "https://a.example/cc", "application/http; msgtype=response",
                   b"HTTP/1.1 304 Not Modified\r\n\r\n", extra={"WARC-Profile": "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"}),
    ]


def arc_records(pages: list[tuple[str, bytes]], statuses: dict[str, str] | None = None, version: int = 1) -> list[bytes]:
    """The records of an ARC file: a filedesc header record, then one record per (url, HTML body);
    ``statuses``: the HTTP status line of a URL, when it is not ``200 OK``. ``version`` 2 is
    Alexa's, with result code, checksum, location, offset and file name in each header line."""
    fields = "Archive-length" if version == 1 else "Result-code Checksum Location Offset Filename Archive-length"
    version_block = f"{version} 0 test\nURL IP-address Archive-date Content-type {fields}\n".encode()
    records = [f"filedesc://test.arc 0.0.0.0 20260101000000 text/plain {len(version_block)}\n".encode()
               + version_block + b"\n"]
    for i, (url, html) in enumerate(pages):
        status = (statuses or {}).get(url, "200 OK")
        http = f"HTTP/1.0 {status}\r\nContent-Type: text/html\r\n\r\n".encode() + html
        date = f"202601{i % 28 + 1:02d}000000"
        extra = "" if version == 1 else f"{status[:3]} {hashlib.md5(http).hexdigest()} - {sum(map(len, records))} test.arc "
        records.append(f"{url} 192.0.2.1 {date} text/html {extra}{len(http)}\n".encode() + http + b"\n")
    return records


def build_arc(pages: list[tuple[str, bytes]], gzip: bool = False, statuses: dict[str, str] | None = None,
              version: int = 1) -> bytes:
    """An ARC file of ``arc_records``, plain or a gzip member per record (the Internet Archive's layout)."""
    records = arc_records(pages, statuses, version)
    return gzip_members(records) if gzip else b"".join(records)


def bare_lf(record: bytes) -> bytes:
    """The record as a writer that ends lines with LF alone writes it (the block is unchanged)."""
    header, _, rest = record.partition(b"\r\n\r\n")
    return header.replace(b"\r\n", b"\n") + b"\n\n" + rest.removesuffix(b"\r\n\r\n") + b"\n\n"


def lower_case_names(record: bytes) -> bytes:
    """The record with its WARC field names in lower case (the specification: case-insensitive)."""
    header, _, rest = record.partition(b"\r\n\r\n")
    first, *fields = header.split(b"\r\n")
    fields = [name.lower() + b":" + value for name, _, value in (f.partition(b":") for f in fields)]
    return b"\r\n".join([first, *fields]) + b"\r\n\r\n" + rest
