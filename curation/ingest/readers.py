"""Streaming readers for WARC/WARC.gz/WET and ARC, over fsspec (documents: ``curation.ingest.documents``).

WARC records are read by the specification (WARC 1.0 and 1.1, ISO 28500): only a block of
``Content-Type: application/http; msgtype=response`` holds an HTTP message (its header block is
split here, because FastWARC parses HTTP only inside its iterator, where a record cut short is no
longer told from an empty one; chunked transfer coding is undone with resiliparse, gzip/deflate/br
content coding with zlib/brotli/zstandard; its status code goes with the record, for
the extract stage to keep 2xx only); any other ``response`` or ``resource`` record is the payload itself, with the
record's own content type and charset (archiving tools and wget write those). ``conversion``
records (WET) are text. ``request``, ``metadata``, ``revisit`` and ``warcinfo`` records are
skipped and counted (``skipped:<type>``). ARC files (old crawls, web archives) go through warcio.
A WACZ, or any ZIP of crawl files, is the files inside it (``iter_zip_crawl_files``).

Compression: per-record gzip members (Common Crawl, the specification's recommendation), a whole
file gzipped as one stream, and zstd (per-record frames, with the dictionary of IIPC's WARC-zstd
layout that ArchiveTeam's wget-at writes or without, or one frame) are read; records of one
stream share its offset and are told apart by their place after it (``index_in_member``).
Files whose writer FastWARC cannot read (header lines ending in bare LF, field names in another
case: ``needs_lenient_reader``) are split into records by warcio instead, slower but alike.

Bad input never loses the rest of a file. FastWARC stops at the first corrupt gzip member or
WARC header; the resilient iterator then searches forward for the next record that really
starts there (a gzip member that inflates to ``WARC/1.``, or a ``WARC/1.`` line in plain WARC),
counts what it skipped with a reason, and carries on. ARC is read the same way through warcio
(``iter_arc``), at the next gzip member that inflates to an ARC header line, or such a line.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import logging
import re
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

import zstandard
from fastwarc.warc import ArchiveIterator, WarcRecordType

from curation.core.errors import CurationError

GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_MAGIC = b"WARC/"  # every version: 1.0, 1.1, and the drafts 0.17 / 0.18 (ClueWeb09, early Heritrix)
_VERSION_LINE = re.compile(rb"WARC/\d\.\d+\r?\n")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# IIPC's WARC-zstd layout (ArchiveTeam's wget-at writes it): the file may open with a skippable
# frame holding the dictionary every record's frame is compressed with, itself raw or zstd-compressed
ZSTD_DICTIONARY_MAGIC = b"\x5d\x2a\x4d\x18"
ZIP_MAGIC = b"PK\x03\x04"  # a ZIP: a WACZ, or any package of crawl files
# the compressions a file's first bytes name, by the suffix that would have named them
COMPRESSION_MAGIC = {".gz": b"\x1f\x8b", ".zst": ZSTD_MAGIC, ".bz2": b"BZh", ".xz": b"\xfd7zXZ\x00"}
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
    # A file compressed as one stream (``gzip file.warc``, or one zstd frame) has every record at
    # the same compressed offset: the record's place after it tells them apart (0 when each record
    # is its own gzip member or zstd frame, as the specification recommends, and in plain WARC)
    index_in_member: int = 0
    http_status: int | None = None  # the final HTTP response's status; None when the record holds no HTTP message

    @property
    def position(self) -> int | str:
        """Where the record is in its file: the offset, and its place after it when that is not 0."""
        return self.offset if not self.index_in_member else f"{self.offset}+{self.index_in_member}"


# per-record compression of a WARC: each record its own gzip member or zstd frame (the WARC-zstd
# layout), with how much of a member's head to decode to see whether it opens a record (a zstd
# block, up to 128 KiB, yields nothing until it is whole)
_MEMBER_MAGIC = {"gzip": (GZIP_MAGIC, 4096), "zstd": (ZSTD_MAGIC, (1 << 17) + 4096)}


def zstd_dictionary_frame(handle: BinaryIO) -> bytes:
    """The skippable frame (magic, size, dictionary) a WARC-zstd file opens with; empty when it
    opens with none, with one cut short, or with one declared over 128 MiB (damage, not read into
    memory: zstd dictionaries are kilobytes to a few megabytes). The handle is left at the start."""
    handle.seek(0)
    head = handle.read(8)
    frame = b""
    if len(head) == 8 and head.startswith(ZSTD_DICTIONARY_MAGIC) and int.from_bytes(head[4:], "little") <= 1 << 27:
        size = int.from_bytes(head[4:], "little")
        frame = head + handle.read(size)
        frame = frame if len(frame) == 8 + size else b""
    handle.seek(0)
    return frame


def zstd_decompressor(dictionary_frame: bytes = b"") -> zstandard.ZstdDecompressor:
    """A decompressor with the dictionary of ``dictionary_frame`` (``zstd_dictionary_frame``);
    without one when there is none or it does not decode (its records then count as damaged)."""
    if dictionary_frame:
        dictionary = dictionary_frame[8:]
        try:
            if dictionary.startswith(ZSTD_MAGIC):
                dictionary = zstandard.ZstdDecompressor().decompressobj().decompress(dictionary)
            return zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary))
        except zstandard.ZstdError:
            pass
    return zstandard.ZstdDecompressor()


class _AfterDictionary(io.RawIOBase):
    """A WARC-zstd file's dictionary frame, then the file from ``start`` on: FastWARC takes a
    file's dictionary from its first bytes, so reading on past damage, it needs it in front."""

    def __init__(self, dictionary_frame: bytes, handle: BinaryIO, start: int):
        self.frame, self.handle, self.start, self.position = dictionary_frame, handle, start, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.position < len(self.frame):
            data = self.frame[self.position : self.position + len(view)]
        else:  # the handle is also searched between passes: always seek first
            self.handle.seek(self.start + self.position - len(self.frame))
            data = self.handle.read(len(view))
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def _looks_like_warc_member(handle: BinaryIO, offset: int, compression: str = "gzip",
                            decompressor: zstandard.ZstdDecompressor | None = None) -> bool:
    """A gzip member or zstd frame (decoded by ``decompressor``: the file's dictionary) that
    decodes to ``WARC/1.`` (or to a prefix of it, when the file ends)."""
    head_size = _MEMBER_MAGIC[compression][1]
    handle.seek(offset)
    head = handle.read(head_size)
    try:
        if compression == "gzip":
            inflated = zlib.decompressobj(wbits=31).decompress(head, 16)
        else:
            inflated = (decompressor or zstandard.ZstdDecompressor()).decompressobj().decompress(head)[:16]
    except (zlib.error, ValueError, zstandard.ZstdError):
        return False
    if inflated.startswith(_WARC_MAGIC):
        return True
    # Near the end of the file a truncated member may not inflate to anything yet.
    return len(head) < head_size and _WARC_MAGIC.startswith(inflated[: len(_WARC_MAGIC)])


def _find_next_start(handle: BinaryIO, after: int, compression: str | None,
                     decompressor: zstandard.ZstdDecompressor | None = None) -> int | None:
    """Offset of the next plausible record start at or after ``after``: a gzip member or zstd
    frame that opens a record, or in plain WARC a version line (not only at a line start: the byte
    before may be the damage resynchronised past)."""
    if compression:
        return find_magic(handle, after, _MEMBER_MAGIC[compression][0],
                          lambda candidate: _looks_like_warc_member(handle, candidate, compression, decompressor))
    return find_magic(handle, after, _WARC_MAGIC, lambda candidate: bool(_VERSION_LINE.match(_bytes_at(handle, candidate, 16))))


def find_magic(handle: BinaryIO, position: int, magic: bytes, accept: Callable[[int], bool]) -> int | None:
    """Offset of the first ``magic`` at or after ``position`` that ``accept(offset)`` takes (it may
    move the handle), searched a chunk at a time; None when none is."""
    while True:
        handle.seek(position)
        chunk = handle.read(_SCAN_CHUNK + len(magic))
        if len(chunk) < len(magic):
            return None
        search = 0
        while (found := chunk.find(magic, search)) != -1:
            if accept(position + found):
                return position + found
            search = found + 1
        if len(chunk) < _SCAN_CHUNK + len(magic):
            return None
        position += _SCAN_CHUNK


def _bytes_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _member_compression(handle: BinaryIO) -> str | None:
    """``gzip`` or ``zstd`` for a WARC of compressed records (also when the first record's header
    itself is damaged), None for plain WARC."""
    handle.seek(0)
    head = handle.read(len(_WARC_MAGIC))
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] in (ZSTD_MAGIC, ZSTD_DICTIONARY_MAGIC):
        return "zstd"
    if head.startswith(_WARC_MAGIC):
        return None
    return next((c for c in _MEMBER_MAGIC if _find_next_start(handle, 1, c) is not None), None)


_WANTED = WarcRecordType.response | WarcRecordType.conversion | WarcRecordType.resource
_SKIPPED_TYPES = [(WarcRecordType.warcinfo, "warcinfo"), (WarcRecordType.request, "request"),
                  (WarcRecordType.metadata, "metadata"), (WarcRecordType.revisit, "revisit"),
                  (WarcRecordType.continuation, "continuation")]


def _type_name(record_type: Any) -> str:
    return next((name for flag, name in _SKIPPED_TYPES if record_type == flag), "unknown")
SKIPPED = "skipped:"  # prefix of the counters of records that are not documents (not errors)


def iter_warc(
    handle: BinaryIO, errors: Counter, max_payload_bytes: int = 20_000_000
) -> Iterator[RawRecord]:
    """Yield response/conversion/resource records; count and skip past corrupt regions."""
    if needs_lenient_reader(handle):
        yield from _resilient_warcio(handle, errors, max_payload_bytes, arc=False)
        return
    compression = _member_compression(handle)
    dictionary_frame = zstd_dictionary_frame(handle) if compression == "zstd" else b""
    decompressor = zstd_decompressor(dictionary_frame) if compression == "zstd" else None
    start = 0
    seen: set[tuple[int, int]] = set()
    # One damaged record, one count. ``pending``: the reason counted for the damage that ended the
    # last pass, while the record resynchronised to (at ``start``) is not read yet; that record is
    # often the damaged one, and if reading it again counts a reason, or fails again, the damage
    # is not counted twice. ``cut_short``: the last record read was counted as cut short (its
    # length unknown or past the data), so FastWARC failing right after it is the same damage.
    pending: str | None = None
    while True:
        handle.seek(start)
        last_start = start
        failure: str | None = None
        cut_short = False
        previous_offset, index_in_member, shift = None, 0, None
        source: BinaryIO = handle
        if dictionary_frame and start >= len(dictionary_frame):  # past damage: the dictionary in front
            source = io.BufferedReader(_AfterDictionary(dictionary_frame, handle, start))
            shift = start - len(dictionary_frame)
        try:
            for record in ArchiveIterator(source, record_types=WarcRecordType.any_type, parse_http=False):
                if shift is None:  # FastWARC 2 counts from the file's start, not from where it began reading
                    shift = start if record.stream_pos < start else 0
                offset = shift + record.stream_pos
                index_in_member = index_in_member + 1 if offset == previous_offset else 0
                previous_offset = last_start = offset
                recounted, pending = pending if offset == start else None, None
                cut_short = False
                if (offset, index_in_member) in seen:
                    continue
                seen.add((offset, index_in_member))
                if not (record.record_type & _WANTED):
                    errors[SKIPPED + _type_name(record.record_type)] += 1
                    continue
                counted, truncated = sum(errors.values()), errors["truncated_record"]
                parsed = _to_raw(record, offset, index_in_member, errors, max_payload_bytes)
                cut_short = errors["truncated_record"] > truncated
                if recounted and sum(errors.values()) > counted:
                    _uncount(errors, recounted)
                if parsed is not None:
                    yield parsed
        except CurationError:
            raise  # strict mode's one-line error, not a parse failure
        except OSError as exc:
            failure = _reason_for(exc)
        except Exception as exc:  # a malformed header can surface as any parse error
            failure = f"corrupt_record:{type(exc).__name__}"
        next_start = _find_next_start(handle, last_start + 1, compression, decompressor)
        if failure is None and next_start is not None:
            # FastWARC ended cleanly but a record start lies ahead: the member it ended on was
            # truncated or unreadable, and FastWARC stopped there silently.
            failure = "truncated_record"
        if failure and (pending or cut_short):  # the damage that stopped FastWARC is counted already
            failure = None
        if failure:
            errors[failure] += 1
        if next_start is None:
            return
        start, pending = next_start, failure


def _uncount(errors: Counter, reason: str) -> None:
    errors[reason] -= 1
    if errors[reason] <= 0:
        del errors[reason]


def _reason_for(exc: OSError) -> str:
    message = str(exc).lower()
    if "gzip" in message or "decompress" in message:
        return "corrupt_gzip"
    if "header" in message:
        return "corrupt_warc_header"
    return "corrupt_record"


def _to_raw(record: Any, offset: int, index_in_member: int, errors: Counter, max_payload_bytes: int) -> RawRecord | None:
    headers = record.headers
    record_type = "response" if record.record_type == WarcRecordType.response else (
        "conversion" if record.record_type == WarcRecordType.conversion else "resource")
    common = {
        "offset": offset,
        "index_in_member": index_in_member,
        "record_type": record_type,
        "url": headers.get("WARC-Target-URI", "").strip("<>"),
        "date": headers.get("WARC-Date", ""),
        "record_id": headers.get("WARC-Record-ID", ""),
        "language_hint": headers.get("WARC-Identified-Content-Language"),
    }
    try:  # FastWARC reports 0 for a record whose gzip member ends early; the header still says
        length = max(record.content_length, int(headers.get("Content-Length")))
    except (TypeError, ValueError):  # no Content-Length (mandatory): the header itself was cut short
        errors["truncated_record"] += 1
        return None
    declared = headers.get("Content-Type", "")
    if length > max_payload_bytes:
        return RawRecord(content_type=split_content_type(declared)[0], charset=None, payload=None, payload_length=length,
                         **common)
    block = record.reader.read()
    if len(block) < length:
        errors["truncated_record"] += 1  # the file ends (or a member breaks) inside this record
        return None
    return _from_block(block, declared, common, errors, headers.get("WARC-Identified-Payload-Type"))


# What servers send when they do not know the type: the crawler's own identification of the
# payload (Common Crawl's WARC-Identified-Payload-Type, from Tika) says more
_UNKNOWN_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown",
                            "unknown/unknown", "application/x-unknown-content-type"})


def _from_block(block: bytes, declared: str, common: dict[str, Any], errors: Counter,
                identified: str | None = None) -> RawRecord | None:
    """The record of a WARC block whose header declared ``declared`` as its Content-Type;
    ``identified``: the payload type the crawler identified, used when the server gave none."""
    record_type = common["record_type"]
    warc_type, warc_charset = split_content_type(declared)
    # By the specification only an application/http block holds an HTTP message; a response
    # record without a Content-Type but with an HTTP message in its block is read as one too.
    holds_http = warc_type == "application/http" or (not declared and record_type == "response" and block.startswith(b"HTTP/"))
    if not holds_http:
        charset = warc_charset or ("utf-8" if record_type == "conversion" else None)  # WET text is UTF-8
        return RawRecord(content_type=warc_type, charset=charset, payload=block, payload_length=len(block), **common)
    try:
        http = parse_http_response(block)
    except ValueError:
        errors["bad_http_headers"] += 1
        return None
    content_type = http.content_type
    if content_type in _UNKNOWN_TYPES and identified:
        content_type = split_content_type(identified)[0]
    return RawRecord(content_type=content_type, charset=http.charset, payload=http.body, payload_length=len(http.body),
                     http_status=http.status, **common)


def split_content_type(value: str) -> tuple[str, str | None]:
    """(media type, charset) of a Content-Type value such as ``text/html; charset=ISO-8859-1``."""
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, v = param.partition("=")
        if key.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip("\"'").lower()
    return media.strip().lower(), charset


_HEADER_END = re.compile(rb"\r?\n\r?\n")  # CRLF by RFC 9112; bare LF from some servers and writers


class HttpResponse(NamedTuple):
    content_type: str
    charset: str | None
    body: bytes  # transfer and content codings undone
    status: int | None  # None when the status line carries no three-digit code


def _status_code(head: bytes) -> int | None:
    code = head.split(None, 2)[1:2]  # b"HTTP/1.1 404 Not Found" -> [b"404"]
    return int(code[0]) if code and len(code[0]) == 3 and code[0].isdigit() else None


def parse_http_response(block: bytes) -> HttpResponse:
    """The HTTP response message in a WARC block: content type, charset, body and status.

    The header ends at its first empty line, CRLF or bare LF (the body may hold either later).
    Interim 1xx responses (``100 Continue``) that a crawler recorded before the final response
    are passed over to it."""
    while True:
        end = _HEADER_END.search(block)
        if end is None or not block.startswith(b"HTTP/"):
            raise ValueError("not an HTTP response")
        head, body = block[: end.start()], block[end.end() :]
        status = _status_code(head)
        if not (status is not None and status < 200 and body.startswith(b"HTTP/")):
            break
        block = body
    fields: dict[str, str] = {}
    name = None
    for line in head.decode("latin-1").splitlines()[1:]:
        if line[:1] in (" ", "\t") and name:  # obsolete line folding (RFC 9112 5.2): the field goes on
            fields[name] = f"{fields[name]} {line.strip()}".strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower() if colon else None
        if name:
            fields[name] = value.strip()
    content_type, charset = split_content_type(fields.get("content-type", ""))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = fields.get("content-encoding", "").lower()
    if not encoding and body.startswith(GZIP_MAGIC) and (not content_type or content_type.startswith("text/")):
        # a page its server compressed without saying so (an archive is not text/*): only a whole
        # gzip stream, so a page that merely starts with these bytes stays as it is
        with contextlib.suppress(OSError, EOFError, zlib.error):
            body = gzip.decompress(body)
    if encoding in ("gzip", "x-gzip", "deflate", "br", "zstd"):
        body = _decompress(body, encoding)
    return HttpResponse(content_type, charset, body, status)


def _dechunk(body: bytes) -> bytes:
    """Undo chunked transfer coding (resiliparse); a body that is not really chunked (crawlers
    often store it decoded and keep the header) comes back as it is."""
    from resiliparse.parse.http import iterate_http_chunks

    head = body[: body.find(b"\r\n")] if b"\r\n" in body else b""
    try:
        int(head.split(b";")[0], 16)
    except ValueError:
        return body
    try:
        decoded = b"".join(iterate_http_chunks(io.BytesIO(body)))
    except Exception:
        return body
    return decoded or body


def _decompress(body: bytes, encoding: str) -> bytes:
    """``body`` with its content coding undone; a body cut short (a crawler's length limit,
    ``WARC-Truncated``) gives what it decodes to so far, every coding alike."""
    try:
        if encoding == "br":
            import brotli

            return brotli.Decompressor().process(body)  # a stream's one-shot call refuses a cut one
        if encoding == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        if encoding == "deflate":  # zlib-wrapped by the RFC; raw deflate from many servers
            try:
                return zlib.decompressobj(wbits=15).decompress(body)
            except zlib.error:
                return zlib.decompressobj(wbits=-15).decompress(body)
        return zlib.decompressobj(wbits=47).decompress(body)
    except Exception:
        return body  # stored already decoded, as Common Crawl does


def is_arc(handle: BinaryIO) -> bool:
    """An ARC file (``filedesc://`` first), plain, gzip- or zstd-compressed; also when its first
    record is damaged, if the first record that can be read after it is an ARC record."""
    head = _decompressed_head(handle)
    if head.startswith(b"filedesc://"):
        return True
    if _VERSION_LINE.match(head):
        return False
    first = _first_record_past_damage(handle)  # ("WARC/" alone opening an ARC is damage too)
    return first is not None and first[1] == "arc"


def _first_record_past_damage(handle: BinaryIO, after: int = 1) -> tuple[int, str, str] | None:
    """(offset, ``arc`` or ``warc``, ``members`` or ``plain``) of the first record at or after
    ``after`` within the file's first MiB that can be read (a gzip member that inflates to one, or
    one in plain text), for a file whose first bytes are damaged; None when there is none."""
    handle.seek(0)
    window = handle.read(_SCAN_CHUNK)
    handle.seek(0)
    found = []
    for candidate in (match.start() for match in _GZIP_MAGIC_ANYWHERE.finditer(window, after)):
        inflated = _inflated_head(window[candidate : candidate + 4096], _ARC_HEADER_MAX)
        if inflated.startswith(_WARC_MAGIC) or _ARC_HEADER_LINE.match(inflated):
            found.append((candidate, "warc" if inflated.startswith(_WARC_MAGIC) else "arc", "members"))
            break
    if arc := _ARC_HEADER_START.search(window, after):
        found.append((arc.start(), "arc", "plain"))
    if warc := _VERSION_LINE.search(window, after):
        found.append((warc.start(), "warc", "plain"))
    return min(found, default=None)


_GZIP_MAGIC_ANYWHERE = re.compile(re.escape(GZIP_MAGIC))


def _inflated_head(data: bytes, size: int) -> bytes:
    """At most ``size`` bytes inflated from the gzip member that ``data`` opens; empty when it does not inflate."""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, size)
    except zlib.error:
        return b""


def compression_by_magic(head: bytes) -> str | None:
    """The suffix of the compression that ``head``, a file's first bytes, opens with, or None."""
    return next((suffix for suffix, magic in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def _decompressed_head(handle: BinaryIO, size: int = 2048) -> bytes:
    """The file's first ``size`` bytes after any decompression (empty when they do not
    decompress); the handle is left at the start."""
    handle.seek(0)
    head = handle.read(4096)
    handle.seek(0)
    try:
        if head.startswith(ZSTD_DICTIONARY_MAGIC):  # a dictionary first, of any size
            try:
                return _decompressed(handle).read(size)
            finally:
                handle.seek(0)
        compression = compression_by_magic(head)
        if compression == ".gz":
            return zlib.decompressobj(wbits=31).decompress(head, size)
        if compression == ".zst":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(head)[:size]
        if compression == ".bz2":
            import bz2

            return bz2.BZ2Decompressor().decompress(head, size)
        if compression == ".xz":
            import lzma

            return lzma.LZMADecompressor().decompress(head, size)
    except Exception:
        return b""
    return head[:size]


# An ARC record's header line. Version 1: URL (a scheme, then anything: warcio splits the line
# from the right), IP address, 14-digit date, content type, length. Version 2 (Alexa's) adds the
# result code, checksum, location, offset and file name before the length.
_ARC_HEADER = (rb"[A-Za-z][A-Za-z0-9+.\-]*:(?:[^\n]{0,8192}? [^ \n]+ \d{8,17} [^ \n]+"
               rb"|[^ \n]{0,8192} [^ \n]+ \d{8,17} [^ \n]+ (?:\d{3}|-) [^ \n]+ [^ \n]+ \d+ [^ \n]+) \d{1,15}\r?\n")
# warcio reads every ARC header line as version 1: a version 2 line's first six fields become
# its URL, spaces written %20
_ARC_V2_URL = re.compile(r"(?P<url>\S+?)%20[^%\s]+%20(?P<date>\d{8,17})%20[^%\s]+%20(?:\d{3}|-)%20[^%\s]+")
_ARC_HEADER_LINE = re.compile(_ARC_HEADER)
# where a header line can start in a damaged file's first MiB, when the line break before it is
# damaged: not inside a scheme (what the file is, not where to read on, is decided on it)
_ARC_HEADER_START = re.compile(rb"(?<![A-Za-z0-9+.\-])" + _ARC_HEADER)
_ARC_HEADER_MAX = 8400  # the longest line _ARC_HEADER matches, with room to spare


class _SpacesInArcUrls(logging.Filter):
    """Drops warcio's warning for every ARC record whose URL field holds spaces: every record of a
    version 2 ARC does (its other fields, read as part of the URL, are split off here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Replacing spaces in invalid WARC-Target-URI")


_WARCIO_RECORD_LOG = logging.getLogger("warcio.recordloader")


def _layout_for_warcio(handle: BinaryIO) -> str:
    """``members`` (a gzip member per record, as the Internet Archive writes ARC and the WARC
    specification recommends), ``stream`` (gzipped as one stream), ``zstd``, or ``plain``."""
    handle.seek(0)
    head = handle.read(1 << 16)
    handle.seek(0)
    if head.startswith((ZSTD_MAGIC, ZSTD_DICTIONARY_MAGIC)):
        return "zstd"
    if head.startswith(b"\x1f\x8b"):
        inflater = zlib.decompressobj(wbits=31)
        with contextlib.suppress(zlib.error):  # a damaged first member: see what follows it
            inflated = inflater.decompress(head)
            # the first member (an ARC's filedesc record, a WARC's warcinfo) ends within the head, and more follows
            if inflater.eof and inflater.unused_data:
                return "members"
            if inflated.startswith((b"filedesc://", _WARC_MAGIC)):
                return "stream"
            # else a member whose header is damaged (its flags ask for a name that never ends)
    first = _first_record_past_damage(handle)
    if first is not None:  # two bytes of gzip's magic opening a plain file are damage too
        return first[2]
    return "stream" if head.startswith(b"\x1f\x8b") else "plain"


def _looks_like_arc_member(handle: BinaryIO, offset: int) -> bool:
    """A gzip member that inflates to an ARC header line."""
    return bool(_ARC_HEADER_LINE.match(_inflated_head(_bytes_at(handle, offset, 4096), _ARC_HEADER_MAX)))


def _find_arc_header(handle: BinaryIO, position: int) -> int | None:
    """Offset of the first ARC header line after the line at ``position - 1`` (the record a pass
    began or failed at: a header found one letter into it would read it again, its URL cut): at a
    line start, or anywhere in a line, after damage that took the line break (or turned it into
    another byte)."""
    handle.seek(position - 1)
    line_end = handle.read(_ARC_HEADER_MAX).find(b"\n")
    if line_end != -1:  # (a line longer than any header is no header: nothing to step past)
        position += line_end  # just after that line's break
    while True:
        handle.seek(position)
        chunk = handle.read(_SCAN_CHUNK + _ARC_HEADER_MAX)
        if match := _ARC_HEADER_LINE.search(chunk):
            return position + match.start() + _damage_before_scheme(match.group().partition(b":")[0])
        if len(chunk) < _SCAN_CHUNK + _ARC_HEADER_MAX:
            return None
        position += _SCAN_CHUNK


# the schemes of ARC records (Heritrix's and Alexa's crawls)
_ARC_SCHEMES = (b"https", b"http", b"ftp", b"dns", b"filedesc", b"rtsp", b"mms", b"whois")


def _damage_before_scheme(scheme: bytes) -> int:
    """How many of a found header's first bytes are damage that took its line break ("bhttp"): the
    letters before a known scheme that the scheme itself is not."""
    lowered = scheme.lower()
    if lowered in _ARC_SCHEMES:
        return 0
    return next((len(scheme) - len(known) for known in _ARC_SCHEMES if lowered.endswith(known)), 0)


# a page's URL after what damage left before it: letters ("fhttps://"), or what is left of the
# record before ("filedesc:/https://", a deletion that took the rest of its header and payload)
_URL_AFTER_DAMAGE = re.compile(r"[A-Za-z]{0,16}?:?/{0,2}(?=(?:https?|ftp|rtsp|mms)://)", re.IGNORECASE)


def _without_damage_before_scheme(url: str) -> str:
    """An ARC record's URL without the bytes that damage left before its scheme, as the search
    for the next header steps past them. A URL that opens with its scheme is left as it is."""
    match = _URL_AFTER_DAMAGE.match(url)
    return url[match.end() :] if match else url


def iter_arc(handle: BinaryIO, errors: Counter, max_payload_bytes: int = 20_000_000) -> Iterator[RawRecord]:
    """ARC records (through warcio, which reads ARC as WARC), as ``RawRecord`` responses.

    warcio stops at the first damaged record; as for WARC, this reader then searches on for the
    next record that really starts (a gzip member that inflates to an ARC header line, or such a
    line in plain ARC), counts the damage (``corrupt_arc:<reason>``) and carries on. Offsets are
    those of the gzip members in a file of one member per record (the Internet Archive's layout),
    and positions in the decompressed file when it was gzipped as one stream. An ARC in zstd is
    read in one pass: a damaged frame ends it.
    """
    if not any(isinstance(f, _SpacesInArcUrls) for f in _WARCIO_RECORD_LOG.filters):
        _WARCIO_RECORD_LOG.addFilter(_SpacesInArcUrls())
    yield from _resilient_warcio(handle, errors, max_payload_bytes, arc=True)


def _resilient_warcio(handle: BinaryIO, errors: Counter, max_payload_bytes: int, arc: bool) -> Iterator[RawRecord]:
    """warcio's records of an ARC, or of a WARC that FastWARC cannot read, pass after pass: after
    the damage that stops a pass, the next one starts at the next record that really starts."""
    layout = _layout_for_warcio(handle)
    if layout == "zstd":  # warcio reads no zstd; decompressed, one pass
        failure, _, _ = yield from _iter_with_warcio(_decompressed(handle), errors, max_payload_bytes, arc=arc)
        if failure:
            errors[failure] += 1
        return
    source = gzip.GzipFile(fileobj=handle) if layout == "stream" else handle  # decompressed: warcio refuses one stream

    def next_start(after: int) -> int | None:
        if layout == "members":
            accept = _looks_like_arc_member if arc else _looks_like_warc_member
            return find_magic(handle, after, GZIP_MAGIC, lambda candidate: accept(handle, candidate))
        try:
            return _find_arc_header(source, after) if arc else _find_next_start(source, after, None)
        except (OSError, EOFError, zlib.error):  # the gzip stream itself is damaged: nothing after it can be read
            return None

    start, pending, seen = 0, False, set()
    while True:
        source.seek(start)
        failure, last, end = yield from _iter_with_warcio(source, errors, max_payload_bytes, arc=arc, seen=seen)
        found = next_start((start if last is None else last) + 1)
        if failure is None and found is not None:
            # warcio ended quietly at a member it could not inflate
            failure = f"{'corrupt_arc' if arc else 'corrupt_record'}:unreadable_member"
        elif failure is None and layout == "members" and _bytes_at(handle, end, 1):
            failure = "truncated_record"  # ... or at one cut short where the file ends
        if failure and not (pending and last is None):  # a record that fails again is counted once
            errors[failure] += 1
        if found is None:
            return
        start, pending = found, bool(failure)


def _iter_with_warcio(handle: BinaryIO, errors: Counter, max_payload_bytes: int, arc: bool,
                      seen: set[int] | None = None) -> Generator[RawRecord, None, tuple[str | None, int | None, int]]:
    """ARC records (warcio parses their HTTP message), or WARC records whose blocks are read as
    ``iter_warc`` reads them (warcio only splits the records), from the handle's position to where
    warcio stops. Returns the reason it stopped early (None when it ended quietly), the offset of
    the last record it read (None when none) and where that record ends. ``seen``: offsets of the
    records an earlier pass read (skipped now; this pass adds its own). A record whose length
    does not end at a record boundary stops the pass, so that a wrong length loses no record after
    it."""
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    records = WarcioIterator(handle, arc2warc=True, no_record_parse=not arc)
    records.INC_RECORD = ""  # its stderr warning for a record not followed by a blank line: counted here instead
    previous_offset, index_in_member, last = None, 0, None
    try:
        for record in records:
            if arc and record.rec_type != "warcinfo" and not _plausible_arc_header(record.rec_headers):
                # a line inside a record, read as a header after a wrong length: not a record
                return "corrupt_arc:bad_header", last, records.offset
            wanted = record.rec_type in ("response", "resource", "conversion")
            # read before asking for the offset: warcio's get_record_offset reads the record to its end
            stream = record.content_stream() if arc else record.raw_stream  # ARC: dechunked, decoded
            block = stream.read(max_payload_bytes + 1) if wanted else b""
            cut_short = arc and wanted and len(block) <= max_payload_bytes and _ends_early(record.raw_stream)
            misplaced = records.err_count
            offset = records.get_record_offset()
            misplaced = records.err_count > misplaced  # warcio found no blank line after the record
            index_in_member = index_in_member + 1 if offset == previous_offset else 0
            previous_offset = last = offset
            if seen is not None:
                if offset in seen:
                    continue
                seen.add(offset)
            if not wanted:
                errors[SKIPPED + str(record.rec_type)] += 1
            elif cut_short:
                errors["truncated_record"] += 1  # the file ends (or its gzip member breaks) inside this record
            else:
                yield from _warcio_record(record, block, offset, index_in_member, errors, max_payload_bytes, arc)
            if misplaced:
                return f"{'corrupt_arc' if arc else 'corrupt_record'}:length_mismatch", last, records.offset
    except Exception as exc:  # warcio raises plain exceptions on malformed headers
        return f"{'corrupt_arc' if arc else 'corrupt_record'}:{type(exc).__name__}", last, records.offset
    return None, last, records.offset


_URI_SCHEME = re.compile(r"<?[A-Za-z][A-Za-z0-9+.\-]*:")


def _plausible_arc_header(headers: Any) -> bool:
    """An ARC header line as warcio converted it: a URL with a scheme and a length in digits."""
    return bool(_URI_SCHEME.match(headers.get_header("WARC-Target-URI") or "")) and (
        headers.get_header("Content-Length") or "").isdigit()


def _ends_early(raw_stream: Any) -> bool:
    """Whether a warcio record's stream, read to its end, held less than its declared length."""
    while raw_stream.read(1 << 16):
        pass
    return getattr(raw_stream, "limit", 0) > 0  # a LimitReader, when the record declared a length


def _warcio_record(record: Any, block: bytes, offset: int, index_in_member: int, errors: Counter,
                   max_payload_bytes: int, arc: bool) -> Iterator[RawRecord]:
    headers = record.rec_headers
    url, date = (headers.get_header("WARC-Target-URI") or "").strip("<>"), headers.get_header("WARC-Date") or ""
    if arc and (version_2 := _ARC_V2_URL.fullmatch(url)):
        from warcio.timeutils import timestamp_to_iso_date

        url, date = version_2["url"], timestamp_to_iso_date(version_2["date"])
    if arc:
        url = _without_damage_before_scheme(url)
    common = {"offset": offset, "index_in_member": index_in_member, "record_type": record.rec_type,
              "url": url, "date": date,
              "record_id": "" if arc else headers.get_header("WARC-Record-ID") or "",  # ARC: warcio makes one up
              "language_hint": headers.get_header("WARC-Identified-Content-Language")}
    declared = headers.get_header("Content-Type") or ""
    if len(block) > max_payload_bytes:
        yield RawRecord(content_type=split_content_type(declared)[0], charset=None, payload=None,
                        payload_length=len(block), **common)
    elif arc:
        http = record.http_headers
        # without an HTTP message (a dns: record, a file fetched over FTP) warcio's "application/http"
        # is not the payload's type, and it dropped the ARC line's own: left unknown, the page is sniffed
        fallback = "text/dns" if url.startswith("dns:") else ""
        content_type, charset = split_content_type((http.get_header("Content-Type") if http else fallback) or "")
        status = http.get_statuscode() if http else None
        yield RawRecord(content_type=content_type, charset=charset, payload=block, payload_length=len(block),
                        http_status=int(status) if status and status.isdigit() else None, **common)
    elif len(block) < _declared_length(headers.get_header("Content-Length")):
        errors["truncated_record"] += 1  # the file ends inside this record
    elif (raw := _from_block(block, declared, common, errors,
                             headers.get_header("WARC-Identified-Payload-Type"))) is not None:
        yield raw


def _declared_length(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _decompressed(handle: BinaryIO) -> BinaryIO:
    handle.seek(0)
    magic = handle.read(4)
    handle.seek(0)
    if magic[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=handle)  # every member, one after another
    if magic in (ZSTD_MAGIC, ZSTD_DICTIONARY_MAGIC):  # the dictionary's skippable frame is skipped
        return zstd_decompressor(zstd_dictionary_frame(handle)).stream_reader(handle, read_across_frames=True)
    return handle


# The fields FastWARC or this reader look up, spelled as the specification spells them
_NAMED_FIELDS = {name.lower(): name for name in (
    "WARC-Type", "WARC-Record-ID", "WARC-Date", "Content-Length", "Content-Type", "WARC-Target-URI",
    "WARC-Identified-Content-Language")}


def needs_lenient_reader(handle: BinaryIO) -> bool:
    """Whether the file's first record is written in a way FastWARC cannot read but warcio can:
    header lines ending in LF alone (the specification says CRLF; some writers and text-mode copies
    drop the CR), or field names spelled in another case (the specification makes them
    case-insensitive; FastWARC looks them up case-sensitively). A writer writes every record alike:
    when the first record is damaged (it does not open the file, or its lines disagree), the next
    one tells."""
    head = _decompressed_head(handle)
    start = 0
    if not head.startswith(_WARC_MAGIC):
        start, head = _head_past_damage(handle, 1)
    verdict = _writer_verdict(head)
    if verdict is None and start is not None:
        verdict = _writer_verdict(_head_past_damage(handle, start + 1)[1])
    return bool(verdict)


def _writer_verdict(head: bytes) -> bool | None:
    """For a record's first bytes: True when its header is a lenient writer's (every line ends in
    LF alone, or every field name FastWARC looks up is in another case), False when it is the
    specification's, None when it cannot tell (its lines or names disagree: damage)."""
    if not head.startswith(_WARC_MAGIC) or b"\n" not in head:
        return False
    lines = head.split(b"\n")
    header = lines[: next((i for i, line in enumerate(lines) if line in (b"", b"\r")), len(lines) - 1)]
    ends_in_cr = [line.endswith(b"\r") for line in header]
    if not any(ends_in_cr):
        return True
    if not all(ends_in_cr):
        return None
    names = [line.partition(b":")[0].strip().decode("latin-1") for line in header[1:] if b":" in line]
    canonical = [_NAMED_FIELDS[name.lower()] == name for name in names if name.lower() in _NAMED_FIELDS]
    if not canonical:
        return False
    return False if all(canonical) else (True if not any(canonical) else None)


def _head_past_damage(handle: BinaryIO, after: int, size: int = 2048) -> tuple[int | None, bytes]:
    """The offset and first ``size`` bytes (decompressed) of the first WARC record at or after
    ``after`` that can be read; (None, empty) when there is none."""
    first = _first_record_past_damage(handle, after)
    if first is None or first[1] != "warc":
        return None, b""
    data = _bytes_at(handle, first[0], 4 * size)
    handle.seek(0)
    return first[0], data[:size] if first[2] == "plain" else _inflated_head(data, size)


def json_text_encoding(head: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec a JSON text opening with ``head`` (its first 4+ bytes) is written
    in, by its byte-order mark or, without one, by the zero bytes around its first ASCII
    characters (RFC 4627, section 3) when they open a JSON object or array; None for UTF-8. Windows tools (PowerShell's ``>``, Notepad's
    "Unicode") write UTF-16 with a BOM."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return codec
    if len(head) < 4:
        return None
    codec = None
    if head[0] and not any(head[1:4]):
        codec = "utf-32-le"
    elif head[3] and not any(head[:3]):
        codec = "utf-32-be"
    elif head[0] and head[2] and not head[1] and not head[3]:
        codec = "utf-16-le"
    elif head[1] and head[3] and not head[0] and not head[2]:
        codec = "utf-16-be"
    # and only when the text opens as JSON does (zero bytes and line ends alone are damage)
    width = 4 if codec and codec.startswith("utf-32") else 2
    text = head[: len(head) - len(head) % width].decode(codec, "ignore") if codec else ""
    return codec if text.lstrip(" \t\r\n")[:1] in ("{", "[") else None


def detect_format(path: str, handle: BinaryIO | None = None) -> str:
    """``parquet``, ``arrow`` (Arrow IPC: Hugging Face ``datasets``' ``.arrow`` streams, Feather
    v2 files), ``jsonl``, ``zip`` (a WACZ or ZIP of crawl files) or ``warc`` (WARC, WET or ARC) by the file's name, or, when the name does
    not say (no suffix, ``.txt``, ``.data``...), by its first bytes: Parquet's or Arrow's magic, or
    JSON after any compression; anything else is read as a WARC, whose reader reports it."""
    name = path.lower().rsplit("/", 1)[-1]
    if name.endswith((".arrow", ".arrows", ".feather", ".ipc")):
        return "arrow"
    if name.endswith((".wacz", ".zip")):
        return "zip"
    for suffix in (".gz", ".zst", ".lz4", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".warc", ".wet", ".arc")) or ".warc" in name or handle is None:
        return "warc"
    handle.seek(0)
    magic = handle.read(4)
    handle.seek(0)
    if magic == b"PAR1":
        return "parquet"
    if magic == b"ARRO" or magic == b"\xff\xff\xff\xff":  # Arrow's file magic; a stream's first message
        return "arrow"
    if magic == ZIP_MAGIC:
        return "zip"
    head = _decompressed_head(handle, 64)
    if encoding := json_text_encoding(head):  # UTF-16 or UTF-32
        head = head.decode(encoding, "replace").encode()
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "jsonl"
    return "warc"


# -- WACZ and ZIP packages of crawl files --------------------------------------------------------

_CRAWL_MEMBER = re.compile(r"\.(warc|arc|wet)(\.gz|\.zst)?$", re.IGNORECASE)
_LOCAL_HEADER_SIZE = 30  # a ZIP local file header before its name and extra field (APPNOTE 4.3.7)


class _ByteRange(io.RawIOBase):
    """Bytes ``start`` to ``start + length`` of a seekable handle, as a seekable file of their own:
    a member stored uncompressed in a ZIP, read in place (ranged reads on a remote file)."""

    def __init__(self, handle: BinaryIO, start: int, length: int):
        super().__init__()
        self._handle, self._start, self._length, self._position = handle, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        size = max(0, min(len(buffer), self._length - self._position))
        if size == 0:
            return 0
        self._handle.seek(self._start + self._position)
        data = self._handle.read(size)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _stored_member(handle: BinaryIO, info: Any) -> BinaryIO:
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER_SIZE)
    if len(header) < _LOCAL_HEADER_SIZE or not header.startswith(ZIP_MAGIC):
        raise OSError(f"no local header at byte {info.header_offset}")
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    start = info.header_offset + _LOCAL_HEADER_SIZE + name_length + extra_length
    return io.BufferedReader(_ByteRange(handle, start, info.compress_size), buffer_size=1 << 16)


def iter_zip_crawl_files(handle: BinaryIO, errors: Counter) -> Iterator[tuple[str, BinaryIO]]:
    """The WARC, ARC and WET files inside a WACZ (Webrecorder's package, what Browsertrix writes:
    ``archive/*.warc.gz`` beside page lists, CDXJ indexes and ``datapackage.json``) or any ZIP of
    crawl files, as (member name, seekable handle). A member stored uncompressed, as WACZ asks, is
    read in place; a deflated one through ``zipfile``. Other members are counted as
    ``skipped:zip_member``; a ZIP whose directory cannot be read as ``corrupt_zip``, a member
    that cannot be opened (encrypted, an unknown compression, no local header) as
    ``corrupt_zip_member``."""
    import zipfile

    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        errors["corrupt_zip"] += 1
        return
    for info in archive.infolist():
        if info.is_dir():
            continue
        if not _CRAWL_MEMBER.search(info.filename):
            errors[SKIPPED + "zip_member"] += 1
            continue
        try:
            if info.flag_bits & 0x1:
                raise RuntimeError("encrypted")
            member = _stored_member(handle, info) if info.compress_type == zipfile.ZIP_STORED else archive.open(info)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError):
            errors["corrupt_zip_member"] += 1
            continue
        with member:
            yield info.filename, member
