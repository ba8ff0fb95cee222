"""Build WARC bytes for tests: one gzip member per record, with member offsets."""

from __future__ import annotations

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
