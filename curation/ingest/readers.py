"""Streaming readers for WARC/WARC.gz/WET, JSONL(.gz/.zst) and Parquet, over fsspec.

Bad input never loses the rest of a file. FastWARC stops at the first corrupt gzip member or
WARC header; the resilient iterator then searches forward for the next record that really
starts there (a gzip member that inflates to ``WARC/1.``, or a ``WARC/1.`` line in plain WARC),
counts what it skipped with a reason, and carries on.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecordType

from curation.core import io as fio

_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_MAGIC = b"WARC/1."
_SCAN_CHUNK = 1 << 20


@dataclass
class RawRecord:
    """A WARC record reduced to what extraction needs."""

    offset: int  # byte offset of the record in its (compressed) file
    record_type: str  # response, conversion, resource
    url: str
    date: str
    record_id: str
    content_type: str  # HTTP content type for responses, WARC content type otherwise
    charset: str | None
    language_hint: str | None
    payload: bytes | None  # None when over the size limit
    payload_length: int


def _looks_like_warc_member(handle: BinaryIO, offset: int) -> bool:
    """A gzip member that inflates to ``WARC/1.`` (or to a prefix of it, when the file ends)."""
    handle.seek(offset)
    head = handle.read(4096)
    try:
        inflated = zlib.decompressobj(wbits=31).decompress(head, 16)
    except zlib.error:
        return False
    if inflated.startswith(_WARC_MAGIC):
        return True
    # Near the end of the file a truncated member may not inflate to anything yet.
    return len(head) < 4096 and _WARC_MAGIC.startswith(inflated[: len(_WARC_MAGIC)])


def _find_next_start(handle: BinaryIO, after: int, compressed: bool) -> int | None:
    """Offset of the next plausible record start at or after ``after``."""
    magic = _GZIP_MAGIC if compressed else _WARC_MAGIC
    position = after
    while True:
        handle.seek(position)
        chunk = handle.read(_SCAN_CHUNK + len(magic))
        if len(chunk) < len(magic):
            return None
        search = 0
        while (found := chunk.find(magic, search)) != -1:
            candidate = position + found
            if compressed:
                if _looks_like_warc_member(handle, candidate):
                    return candidate
            elif candidate == 0 or _byte_at(handle, candidate - 1) == b"\n":
                return candidate
            search = found + 1
        if len(chunk) < _SCAN_CHUNK + len(magic):
            return None
        position += _SCAN_CHUNK


def _byte_at(handle: BinaryIO, offset: int) -> bytes:
    handle.seek(offset)
    return handle.read(1)


def _is_gzip(handle: BinaryIO) -> bool:
    """Gzip-member WARC, also when the first member's header itself is damaged."""
    handle.seek(0)
    head = handle.read(len(_WARC_MAGIC))
    if head[:2] == b"\x1f\x8b":
        return True
    if head.startswith(_WARC_MAGIC):
        return False
    return _find_next_start(handle, 1, compressed=True) is not None


_WANTED = WarcRecordType.response | WarcRecordType.conversion | WarcRecordType.resource


def iter_warc(
    handle: BinaryIO, errors: Counter, max_payload_bytes: int = 20_000_000
) -> Iterator[RawRecord]:
    """Yield response/conversion/resource records; count and skip past corrupt regions."""
    compressed = _is_gzip(handle)
    start = 0
    seen: set[int] = set()
    while True:
        handle.seek(start)
        last_start = start
        failure: str | None = None
        try:
            for record in ArchiveIterator(handle, record_types=WarcRecordType.any_type, parse_http=False):
                offset = start + record.stream_pos
                last_start = offset
                if offset in seen or not (record.record_type & _WANTED):
                    continue
                seen.add(offset)
                parsed = _to_raw(record, offset, errors, max_payload_bytes)
                if parsed is not None:
                    yield parsed
        except OSError as exc:
            failure = _reason_for(exc)
        except Exception as exc:  # a malformed header can surface as any parse error
            failure = f"corrupt_record:{type(exc).__name__}"
        next_start = _find_next_start(handle, last_start + 1, compressed)
        if next_start is None:
            if failure:
                errors[failure] += 1
            return
        if failure is None:
            # FastWARC ended cleanly but a record start lies ahead: the member it ended on was
            # truncated or unreadable, and FastWARC stopped there silently.
            failure = "truncated_record"
        errors[failure] += 1
        start = next_start


def _reason_for(exc: OSError) -> str:
    message = str(exc).lower()
    if "gzip" in message or "decompress" in message:
        return "corrupt_gzip"
    if "header" in message:
        return "corrupt_warc_header"
    return "corrupt_record"


def _to_raw(record: Any, offset: int, errors: Counter, max_payload_bytes: int) -> RawRecord | None:
    headers = record.headers
    record_type = "response" if record.record_type == WarcRecordType.response else (
        "conversion" if record.record_type == WarcRecordType.conversion else "resource")
    common = {
        "offset": offset,
        "record_type": record_type,
        "url": headers.get("WARC-Target-URI", "").strip("<>"),
        "date": headers.get("WARC-Date", ""),
        "record_id": headers.get("WARC-Record-ID", ""),
        "language_hint": headers.get("WARC-Identified-Content-Language"),
    }
    length = record.content_length
    warc_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if length > max_payload_bytes:
        return RawRecord(content_type=warc_type, charset=None, payload=None, payload_length=length, **common)
    block = record.reader.read()
    if len(block) < length:
        errors["truncated_record"] += 1  # the file ends (or a member breaks) inside this record
        return None
    if record_type != "response":
        return RawRecord(content_type=warc_type, charset="utf-8", payload=block, payload_length=len(block), **common)
    try:
        content_type, charset, payload = parse_http_response(block)
    except ValueError:
        errors["bad_http_headers"] += 1
        return None
    return RawRecord(content_type=content_type, charset=charset, payload=payload, payload_length=len(payload), **common)


def parse_http_response(block: bytes) -> tuple[str, str | None, bytes]:
    """(content type, charset, decoded body) of a raw HTTP response block."""
    head, separator, body = block.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = block.partition(b"\n\n")
    if not separator or not head.startswith(b"HTTP/"):
        raise ValueError("not an HTTP response")
    fields: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines()[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    content_type, _, params = fields.get("content-type", "").partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'").lower()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = fields.get("content-encoding", "").lower()
    if encoding in ("gzip", "x-gzip", "deflate", "br"):
        body = _decompress(body, encoding)
    return content_type.strip().lower(), charset, body


def _dechunk(body: bytes) -> bytes:
    out, position = bytearray(), 0
    while position < len(body):
        line_end = body.find(b"\r\n", position)
        if line_end == -1:
            return body  # not really chunked (crawlers often store it decoded)
        try:
            size = int(body[position:line_end].split(b";")[0], 16)
        except ValueError:
            return body
        if size == 0:
            break
        out += body[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
    return bytes(out)


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        if encoding == "br":
            import brotli

            return brotli.decompress(body)
        return zlib.decompressobj(wbits=47 if encoding != "deflate" else 15).decompress(body)
    except Exception:
        return body  # stored already decoded, as Common Crawl does


def iter_jsonl(handle: BinaryIO, path: str, errors: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each valid line; invalid lines are counted, not fatal."""
    stream: BinaryIO = handle
    if path.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=handle)  # type: ignore[assignment]
    elif path.endswith(".zst"):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(handle)  # type: ignore[assignment]
    reader = io.BufferedReader(stream)  # type: ignore[arg-type]
    line_number = 0
    try:
        for line_number, line in enumerate(reader):  # noqa: B007
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                errors["invalid_json"] += 1
                continue
            if not isinstance(obj, dict):
                errors["invalid_json"] += 1
                continue
            yield line_number, obj
    except (OSError, EOFError, zlib.error) as exc:
        errors[f"truncated_{'gzip' if path.endswith('.gz') else 'stream'}"] += 1
        del exc


def detect_format(path: str) -> str:
    name = path.lower().rsplit("/", 1)[-1]
    for suffix in (".gz", ".zst", ".lz4"):
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".warc", ".wet", ".arc")) or ".warc" in name:
        return "warc"
    return "warc"  # sniffed by the reader; a non-WARC file is reported as such


def open_input(path: str, storage: fio.Storage) -> BinaryIO:
    fs, p = fio.filesystem(path, storage)
    return fs.open(p, "rb", block_size=1 << 22)
