"""Documents that are already text (JSONL(.gz/.zst/.bz2/.xz), Parquet or Arrow IPC in any schema: Dolma,
FineWeb, DCLM's JSONL, Hugging Face ``datasets`` files, a curate stage), read with one bad-record
policy, as the source stage ``documents``.

The policy, for every record (a JSONL line, a Parquet row):

| record | what happens | counted as |
| --- | --- | --- |
| not JSON, or JSON that is not an object | dropped | ``invalid_json`` |
| a file that is one JSON array of objects (opens with ``[``) | each element a record, read a piece at a time (memory holds one element, whatever the file's size); a damaged element loses only itself, a file cut short keeps the elements before the cut; lines after the array's end (concatenated exports) are read as JSON Lines | ``invalid_json``, ``truncated_stream`` |
| a JSONL file whose first line opens with ``[`` but is damaged, or is an array without one object | a bad line; the first 64 lines, read both as JSON Lines and as an array, tell it from a pretty-printed array's ``[`` alone (the reading with more whole objects wins) | ``invalid_json`` |
| a UTF-8 byte-order mark opening the file | removed | |
| bytes that are not UTF-8 | decoded with U+FFFD replacement, kept | ``repaired:invalid_utf8`` (extra) |
| a JSONL file in UTF-16 or UTF-32 (a byte-order mark, or the zeros of RFC 4627's rule; what Windows tools write) | read as the same text in UTF-8; bytes that do not decode become U+FFFD | ``repaired:invalid_utf16`` / ``invalid_utf32`` (extra, per 64 KiB piece) |
| an integer over 64 bits | read as a float (orjson, as JavaScript and Arrow's JSON reader do) | |
| a ``\\ud800``-style escape of an unpaired surrogate (not writable as UTF-8) | U+FFFD in its place, kept | ``repaired:lone_surrogate`` (extra) |
| no text field, but one of ``text_fallbacks`` (``raw_content``, ``content``) | text read from it | ``repaired:text_from:<field>`` (extra) |
| no text field, or null | dropped | ``missing_text`` |
| a text field that is not a string (bytes, as in a binary Parquet column, are decoded as UTF-8) | dropped | ``invalid_text`` |
| over ``max_record_bytes`` | dropped | ``too_large`` |
| no id (missing, null, empty) | kept, id derived from source file and line/row | ``repaired:derived_id`` (extra) |
| an id seen before in the same file | dropped | ``duplicate_id`` |
| a value that does not fit its column, or would change in it (0.5 in an integer column, an object with a key its column lacks; types set by the shard's first batch) | null, document kept | ``repaired:schema_mismatch`` (extra) |
| a file that cannot be opened, or a stream that ends early | the records read so far are kept | ``unreadable_file:*``, ``truncated_stream`` |
| a Parquet row group that cannot be read (a damaged page) | its rows are lost (counted, one per row), the next row groups are read | ``corrupt_row_group:*`` |
| a Parquet or Arrow batch that decodes to unsound arrays (every batch is validated in full first) | a string column whose only fault is bytes that are not UTF-8 is decoded with U+FFFD; any other fault loses the batch (counted, one per row) | ``repaired:invalid_utf8`` (extra), ``corrupt_batch:*`` |
| an Arrow message that does not decode (a damaged batch) | skipped to the next message that decodes; the rest of the file is read | ``corrupt_batch:*`` (one: its rows are unknown) |
| an Arrow stream cut short; an Arrow file without its footer | the whole batches before the cut are kept; the file is read as the stream inside it | ``truncated_stream`` |
| a gzip member, zstd frame, bzip2 or xz stream that does not decode (``cat``-joined files, pzstd's or pbzip2's frames, one damaged) | the next one that decodes is read on; the cut line is one bad line | ``corrupt_gzip_member``, ``corrupt_<zst|bz2|xz>_frame`` |

With ``strict: true`` the first bad record stops the stage with one line naming the file, the
line (or row) and the reason. The text and id fields are renamed to ``text`` and ``id``; every
other column is kept as it is.

Parquet goes through the policy a record batch at a time (``RecordPolicy.accept_batch``: Arrow
compute for the checks, Python only for derived ids and the duplicate-id set), with the same rows,
ids and counts as the per-row path that JSONL takes (a property test holds the two together).
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from curation.core import io as fio
from curation.core.errors import CurationError
from curation.core.stage import (
    OutputFile,
    ParquetShardWriter,
    ShardStats,
    ShardTask,
    Stage,
    StageContext,
    chunked,
    register,
)
from curation.ingest.readers import (
    COMPRESSION_MAGIC,
    GZIP_MAGIC,
    ZSTD_MAGIC,
    compression_by_magic,
    detect_format,
    find_magic,
    json_text_encoding,
)

REPAIRED = "repaired:"


@dataclass
class DocumentsConfig:
    text_field: str = "text"
    # where the text is when a record has no ``text_field`` at all, in this order: corpora that
    # name it otherwise (RedPajama-v2's ``raw_content``, OSCAR's and The Stack's ``content``);
    # counted as ``repaired:text_from:<field>``
    text_fallbacks: list[str] = field(default_factory=lambda: ["raw_content", "content"])
    id_field: str = "id"
    max_record_bytes: int = 20_000_000
    strict: bool = False  # the first bad record is an error (file, line, reason) instead of a count
    batch_size: int = 1000


def document_id(source_name: str, position: int | str) -> str:
    """A stable id for a record without one: its file's name and its line or row."""
    return xxhash.xxh3_128_hexdigest(f"{source_name}:{position}".encode())


class BadRecord(CurationError):
    pass


# Where corpora without a top-level ``url`` keep a document's URL: Dolma's ``metadata.url``,
# RedPajama's ``meta.url``, OSCAR's ``warc_headers["warc-target-uri"]``
NESTED_URLS = (("metadata", "url"), ("meta", "url"), ("warc_headers", "warc-target-uri"))


def nested_url(obj: dict[str, Any]) -> str | None:
    """The URL a record without a top-level ``url`` keeps in one of ``NESTED_URLS``."""
    for outer, inner in NESTED_URLS:
        value = obj.get(outer)
        if isinstance(value, dict) and isinstance(value.get(inner), str) and value[inner]:
            return value[inner]
    return None


def _nested_url_column(batch: pa.RecordBatch) -> pa.Array | None:
    """``nested_url`` over a batch: the first struct column of ``NESTED_URLS`` with a string child
    (rows where it is null or empty take the next, as the per-row path does)."""
    found = None
    for outer, inner in NESTED_URLS:
        if outer not in batch.schema.names:
            continue
        column = batch.column(outer)
        if not pa.types.is_struct(column.type) or column.type.get_field_index(inner) < 0:
            continue
        child = pc.struct_field(column, inner)
        if not (pa.types.is_string(child.type) or pa.types.is_large_string(child.type)):
            continue
        child = child.cast(pa.string())
        child = pc.if_else(pc.equal(child, ""), pa.scalar(None, pa.string()), child)
        found = child if found is None else pc.coalesce(found, child)
    return found


class RecordPolicy:
    """Applies the policy to one file's records; counts into ``stats``."""

    def __init__(self, config: DocumentsConfig, path: str, stats: ShardStats):
        self.config, self.path, self.stats = config, path, stats
        self.source_name = path.rsplit("/", 1)[-1]
        self.seen_ids: set[str] = set()
        self.unit = "line"  # what a numbered position counts, for strict mode's message: a JSON array's "element"

    def reject(self, position: Any, reason: str, records: int = 1) -> None:
        if self.config.strict:
            raise BadRecord(f"{self.path}: {self.unit if isinstance(position, int) else 'record'} {position}: {reason}")
        self.stats.dropped[reason] += records

    def repair(self, position: Any, reason: str) -> None:
        if self.config.strict and reason.startswith("invalid_utf"):
            raise BadRecord(f"{self.path}: {self.unit} {position}: {reason}")
        key = REPAIRED + reason
        self.stats.extra[key] = self.stats.extra.get(key, 0.0) + 1

    def text_field_of(self, names: Any) -> str:
        """The field that holds the text of a record (or batch) with these field names."""
        c = self.config
        if c.text_field in names:
            return c.text_field
        return next((name for name in c.text_fallbacks if name in names), c.text_field)

    def accept(self, obj: dict[str, Any], position: Any, size: int) -> dict[str, Any] | None:
        """The record as a row (``text`` and ``id`` renamed), or None when it is rejected."""
        c = self.config
        text_field = self.text_field_of(obj)
        text = obj.pop(text_field, None)
        if text is None:
            return self.reject(position, "missing_text")
        if isinstance(text, bytes):  # a binary text column (Parquet): UTF-8 by convention
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                text = text.decode("utf-8", errors="replace")
                self.repair(position, "invalid_utf8")
        if not isinstance(text, str):
            return self.reject(position, "invalid_text")
        if size > c.max_record_bytes:
            return self.reject(position, "too_large")
        identifier = obj.pop(c.id_field, None)
        if identifier is None or identifier == "":
            identifier = document_id(self.source_name, position)
            self.repair(position, "derived_id")
        identifier = str(identifier)
        if identifier in self.seen_ids:
            return self.reject(position, "duplicate_id")
        self.seen_ids.add(identifier)
        if text_field != c.text_field:
            self.repair(position, f"text_from:{text_field}")
        obj.pop("id", None)
        obj.pop("text", None)
        if "url" not in obj and (url := nested_url(obj)):
            obj["url"] = url  # where every stage looks for it (the URL filters)
        return {"id": identifier, "text": text, **obj}


    def accept_batch(self, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch | None:
        """``accept`` over a Parquet batch at once, for the same rows, ids and counts (rows numbered
        from ``first_row``); None when the batch is for the per-row path (strict mode, which names
        the first bad row; text that is not strings; ids that are neither strings nor integers)."""
        c = self.config
        if c.strict:
            return None
        n = batch.num_rows
        names = batch.schema.names
        text_field = self.text_field_of(names)
        if text_field not in names:
            text = pa.nulls(n, pa.string())
        else:
            text = batch.column(text_field)
            if pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
                try:  # a binary text column: UTF-8 by convention; any invalid value sends the batch per row
                    text = text.cast(pa.string())
                except pa.ArrowInvalid:
                    return None
            if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_null(text.type)):
                return None  # invalid_text and missing_text by value: the per-row path sorts them
            text = text.cast(pa.string())
        has_id = c.id_field in names
        ids = batch.column(c.id_field) if has_id else pa.nulls(n, pa.string())
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)
                or pa.types.is_null(ids.type)):
            return None
        ids = ids.cast(pa.string())
        missing = pc.is_null(text)
        too_large = pc.and_kleene(pc.invert(missing), pc.greater(pc.binary_length(text), c.max_record_bytes))
        bad = pc.or_(missing, pc.fill_null(too_large, False))
        underived = pc.and_(pc.is_valid(ids), pc.not_equal(pc.fill_null(ids, ""), ""))
        id_list = ids.to_pylist()
        derive = pc.and_(pc.invert(underived), pc.invert(bad)).to_pylist()
        keep = pc.invert(bad).to_pylist()
        for i in range(n):  # derived ids for the few rows without one; duplicates need the file's history
            if not keep[i]:
                continue
            if derive[i]:
                id_list[i] = document_id(self.source_name, f"row {first_row + i}")
                self.repair(i, "derived_id")
            if id_list[i] in self.seen_ids:
                keep[i] = False
                self.stats.dropped["duplicate_id"] += 1
            else:
                self.seen_ids.add(id_list[i])
        for reason, flags in (("missing_text", missing), ("too_large", too_large)):
            if count := pc.sum(flags).as_py():  # no entry at 0: it would read as a reason seen
                self.stats.dropped[reason] += count
        if text_field != c.text_field and (kept := sum(keep)):
            key = f"{REPAIRED}text_from:{text_field}"
            self.stats.extra[key] = self.stats.extra.get(key, 0.0) + kept
        others = [name for name in names if name not in (text_field, c.id_field, "id", "text")]
        mask = pa.array(keep, pa.bool_())
        columns = [pa.array(id_list, pa.string()), text, *(batch.column(name) for name in others)]
        out = pa.RecordBatch.from_arrays(columns, names=["id", "text", *others]).filter(mask)
        url = _nested_url_column(batch) if "url" not in names else None
        if url is not None and (url := url.filter(mask)).null_count < len(url):  # as per row: no column of nulls
            out = out.append_column("url", url)
        return out


# what pyarrow raises for a value that does not fit a column (OverflowError: an integer over 64 bits)
_UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # an escape that may decode to one


def _without_lone_surrogates(value: Any) -> Any:
    """Strings with every unpaired surrogate replaced by U+FFFD (json pairs the valid ones)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


class _DecodedStream(io.RawIOBase):
    """Bytes decoded from a compressed handle, a piece at a time: ``_decode`` gives the next piece
    (possibly empty), or None at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.pending, self.offset = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.offset == len(self.pending):
            piece = self._decode()
            if piece is None:
                return 0
            self.pending, self.offset = piece, 0
        size = min(len(buffer), len(self.pending) - self.offset)
        buffer[:size] = memoryview(self.pending)[self.offset : self.offset + size]
        self.offset += size
        return size

    def _decode(self) -> bytes | None:
        raise NotImplementedError


class RecodedToUtf8(_DecodedStream):
    """A UTF-16 or UTF-32 byte stream read as UTF-8, a piece at a time; bytes that do not decode
    (a lone surrogate, an odd byte at the end) become U+FFFD, counted in ``replaced``."""

    def __init__(self, stream: Any, encoding: str, chunk: int = 1 << 16):
        super().__init__()
        self.stream, self.chunk, self.replaced = stream, chunk, 0
        self.decoder = codecs.getincrementaldecoder(encoding)("strict")

    def _decode(self) -> bytes | None:
        data = self.stream.read(self.chunk)
        if self.decoder is None:
            return None
        state = self.decoder.getstate()
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            self.decoder.setstate(state)
            self.decoder.errors, self.replaced = "replace", self.replaced + 1
            text = self.decoder.decode(data, final=not data)
            self.decoder.errors = "strict"
        if not data:
            self.decoder = None
        return text.encode("utf-8", "surrogatepass")


class CompressedFrames(_DecodedStream):
    """A zstd, bzip2 or xz file of one or more frames (streams, in bzip2's and xz's words), read as
    bytes; a file that ends inside a frame raises EOFError (zstandard's own reader just ends there,
    so a cut file would read as complete). A frame that does not decode (a damaged block) ends where
    the damage is, as for ``GzipMembers``: the reader goes on at the next frame that decodes (files
    of many frames: pzstd's, pbzip2's, seekable zstd, ``cat``-joined files), with a line end at the
    cut, and counts the damage in ``damaged``."""

    def __init__(self, handle: Any, suffix: str, chunk: int = 1 << 16):
        super().__init__()
        self.magic, self.new_decompressor, self.errors = _FRAMED_CODECS[suffix]()
        self.handle, self.chunk, self.decompressor = handle, chunk, self.new_decompressor()
        self.frame_start = self.read_to = handle.tell()
        self.in_frame, self.ended, self.damaged = False, False, 0

    def _decode(self) -> bytes | None:
        # small pieces: what a frame gave before its damage is kept (a decoder raising loses its call's output)
        data = b"" if self.ended else self.handle.read(self.chunk)
        self.read_to += len(data)
        if not data:
            if self.in_frame and not self.ended:
                raise EOFError("the stream ends inside a frame")
            return None
        parts = []
        try:
            while data:
                if not self.in_frame:  # zeros between or after frames are padding (xz's); no frame opens with one
                    data = data.lstrip(b"\x00")
                    self.frame_start = self.read_to - len(data)
                    if not data:
                        break
                self.in_frame = True
                parts.append(self.decompressor.decompress(data))
                data = b""
                if self.decompressor.eof:  # a frame ended; what follows starts the next one
                    data, self.in_frame = self.decompressor.unused_data, False
                    self.decompressor = self.new_decompressor()
        except self.errors:
            parts.append(b"\n")
            following, only_zeros = _next_decodable(self.handle, self.frame_start, self.chunk, self.magic,
                                                    lambda head: self.new_decompressor().decompress(head))
            self.damaged += 0 if following is None and only_zeros else 1
            if following is None:
                self.ended = True
            else:
                self.handle.seek(following)
                self.frame_start = self.read_to = following
                self.decompressor, self.in_frame = self.new_decompressor(), False
        return b"".join(parts)


def _zstd_codec() -> tuple[bytes, Any, Any]:
    import zstandard

    return ZSTD_MAGIC, lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError


def _bz2_codec() -> tuple[bytes, Any, Any]:
    import bz2

    return COMPRESSION_MAGIC[".bz2"], bz2.BZ2Decompressor, (OSError, ValueError, EOFError)


def _xz_codec() -> tuple[bytes, Any, Any]:
    import lzma

    return COMPRESSION_MAGIC[".xz"], lzma.LZMADecompressor, (lzma.LZMAError, EOFError)


# a frame's magic, a new decoder (``decompress``, ``eof``, ``unused_data``), what it raises for damage
_FRAMED_CODECS = {".zst": _zstd_codec, ".bz2": _bz2_codec, ".xz": _xz_codec}


class GzipMembers(_DecodedStream):
    """A gzip file of one or more members (``cat a.jsonl.gz b.jsonl.gz``), read as bytes. A member
    that does not inflate (a damaged block) ends where the damage is: the reader searches on for the
    next member that inflates, counts the damage in ``damaged`` and goes on, with a line end at the
    cut, so that the next member's first line stays whole (the cut line is one bad line). A file that
    ends inside a member raises EOFError, as ``gzip`` does."""

    def __init__(self, handle: Any, chunk: int = 1 << 20):
        super().__init__()
        self.handle, self.chunk = handle, chunk
        self.decompressor = zlib.decompressobj(wbits=31)
        self.input = b""  # compressed bytes read and not yet inflated
        self.member_start = self.read_to = handle.tell()
        self.in_member, self.ended, self.damaged = False, False, 0

    def _decode(self) -> bytes | None:
        if not self.input:
            self.input = b"" if self.ended else self.handle.read(self.chunk)
            self.read_to += len(self.input)
            if not self.input:
                if self.in_member and not self.ended:
                    raise EOFError("the gzip stream ends inside a member")
                return None
        try:
            self.in_member = True
            out = self.decompressor.decompress(self.input, self.chunk)  # bounded: a bomb stays a chunk
            self.input = self.decompressor.unconsumed_tail
            if self.decompressor.eof:  # a member ended; what follows starts the next one
                self.input = self.decompressor.unused_data
                self.member_start, self.in_member = self.read_to - len(self.input), False
                self.decompressor = zlib.decompressobj(wbits=31)
        except zlib.error:
            out, self.input = b"\n", b""
            self._resynchronise()
        return out

    def _resynchronise(self) -> None:
        """Go on at the next member after the damaged one that inflates; end when there is none
        (zeros after the last member are padding, not damage)."""
        following, only_zeros = _next_decodable(self.handle, self.member_start, self.chunk, GZIP_MAGIC,
                                                lambda data: zlib.decompressobj(wbits=31).decompress(data))
        if following is None:
            self.ended = True
            self.damaged += 0 if only_zeros else 1
            return
        self.handle.seek(following)
        self.member_start = self.read_to = following
        self.decompressor, self.in_member = zlib.decompressobj(wbits=31), False
        self.damaged += 1


def _next_decodable(handle: Any, position: int, chunk: int, magic: bytes, probe: Any) -> tuple[int | None, bool]:
    """Where the next member (gzip) or frame (zstd, bzip2, xz) after the damaged one at ``position``
    starts: its ``magic``, and its first 64 KiB decode (``probe`` raises where they do not); None
    when no later one does, with whether only zeros (padding) followed the damage."""

    def decodes(candidate: int) -> bool:
        handle.seek(candidate)
        try:
            probe(handle.read(1 << 16))
        except Exception:  # noqa: BLE001 (each codec raises its own error type for data that is not its own)
            return False
        return True

    following = find_magic(handle, position + 1, magic, decodes)  # the damaged one's own magic is no way on
    if following is not None:
        return following, False
    handle.seek(position)
    while window := handle.read(chunk):
        if window.strip(b"\x00"):
            return None, False
    return None, True


def _compression(handle: Any, path: str) -> str | None:
    """The compression the file's suffix names, or, when its name does not say, its first bytes."""
    suffix = next((suffix for suffix in COMPRESSION_MAGIC if path.endswith(suffix)), None)
    if suffix or path.lower().endswith((".jsonl", ".json", ".ndjson")):  # the name says
        return suffix
    head = handle.read(6)
    handle.seek(0)
    return compression_by_magic(head)


def iter_jsonl_records(handle: Any, path: str, policy: RecordPolicy) -> Iterator[dict[str, Any]]:
    stream = handle
    compression = _compression(handle, path)
    if compression == ".gz":
        stream = GzipMembers(handle)
    elif compression in _FRAMED_CODECS:
        stream = CompressedFrames(handle, compression)
    try:
        reader: Any = io.BufferedReader(stream)
        recoded = None
        if encoding := json_text_encoding(reader.peek(64)[:64]):
            recoded = RecodedToUtf8(reader, encoding)
            reader = io.BufferedReader(recoded)
        lines: Iterable[bytes] = reader
        first_number, after_array = 1, False
        if reader.peek(64).lstrip(_BOM_AND_SPACE)[:1] == b"[":
            blank = 0
            while (first := reader.readline(_FIRST_LINE_PROBE)) and not first.strip(_BOM_AND_SPACE):
                blank += 1
            below: list[bytes] = []
            if _json_lines_after_all(first, reader) or _json_lines_below(first, reader, below):
                lines = itertools.chain([b""] * blank, [first], below, reader)  # JSON Lines, a bad first line
            else:
                elements = _ArrayElements(first + b"".join(below), reader)
                whole = yield from _array_records(elements, policy)
                # what follows the array's "]" is read as JSON Lines (a concatenation of exports, a
                # JSON Lines file whose first line was damaged), so no record after it goes unread
                lines, first_number = (elements.lines_after(), blank + elements.line_of_start()) if whole else ((), 1)
                after_array = True
        for number, raw in enumerate(lines, start=first_number):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark (files saved on Windows): not part of the JSON
            if not raw.strip():
                continue
            where = f"line {number}" if after_array else number  # the array's elements took the numbers (and ids)
            obj = _parse_json(raw, where, policy)
            if not isinstance(obj, dict):
                policy.reject(where, "invalid_json")
                continue
            row = policy.accept(obj, where, len(raw))
            if row is not None:
                yield row
    except (OSError, EOFError, zlib.error, ValueError):
        policy.reject("end of file", "truncated_stream")
    for _ in range(recoded.replaced if recoded is not None else 0):  # one per piece with bytes that did not decode
        policy.repair("file", f"invalid_{encoding.replace('-', '')[:5]}")
    if isinstance(stream, GzipMembers) and stream.damaged:
        policy.reject("gzip member", "corrupt_gzip_member", records=stream.damaged)
    if isinstance(stream, CompressedFrames) and stream.damaged:
        policy.reject("frame", f"corrupt_{compression.lstrip('.')}_frame", records=stream.damaged)


def _parse_json(raw: bytes, number: int | str, policy: RecordPolicy) -> Any:
    """One record's JSON (a line, an array's element), repaired as the policy says; ``_INVALID``
    when it is not JSON at all."""
    try:  # orjson: ~3x json's speed; what it refuses gets json's verdict (see the table above)
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        policy.repair(number, "invalid_utf8")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return _INVALID
    if _LONE_SURROGATE.search(text):  # "\\ud800" escapes: JSON, but not writable as UTF-8
        obj = _without_lone_surrogates(obj)
        policy.repair(number, "lone_surrogate")
    return obj


_INVALID = object()
_BOM_AND_SPACE = b"\xef\xbb\xbf \t\r\n"
# A file opening with "[" whose first line is a whole JSON array followed by more lines is JSON Lines
# with a bad first line; the first line is read this far to tell (an array export on one longer
# line is streamed as an array)
_FIRST_LINE_PROBE = 1 << 16


_LINES_PROBED = 64


def _json_lines_below(first: bytes, reader: Any, below: list[bytes]) -> bool:
    """Whether a file whose first line opens with ``[`` but is not JSON (a pretty-printed array's
    "[" alone, or JSON Lines whose first line was damaged) reads as JSON Lines: its next lines,
    read both ways, hold more whole objects as lines than as the array's elements and the lines
    after its end, or as many and more than one (an array has one element alone on a line: its
    last). The lines read to tell are appended to ``below``; a line longer than the probe ends it."""
    if not first.endswith(b"\n"):
        return False  # a first line longer than the probe: an export on one line
    while len(below) < _LINES_PROBED and (line := reader.readline(_FIRST_LINE_PROBE)):
        below.append(line)
        if len(line) == _FIRST_LINE_PROBE and not line.endswith(b"\n"):
            break
    as_lines = sum(isinstance(_loaded(line), dict) for line in below)
    as_array, elements = 0, _ArrayElements(first + b"".join(below), io.BytesIO())
    try:
        for raw, value in elements:
            as_array += isinstance(_loaded(raw) if value is _INVALID else value, dict)
        as_array += sum(isinstance(_loaded(line), dict) for line in elements.lines_after())  # after its "]"
    except _CutShort:
        pass
    if as_lines < as_array or as_lines == as_array < 2:  # an array has one element alone on a line, its last
        return False
    if below and not below[-1].endswith(b"\n"):
        below[-1] += reader.readline()  # the rest of a long line, which JSON Lines reads whole
    return True


def _loaded(raw: bytes) -> Any:
    """``raw`` parsed by orjson, or ``_INVALID``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _INVALID


def _json_lines_after_all(first: bytes, reader: Any) -> bool:
    """Whether a file whose first line opens with ``[`` is JSON Lines by that line alone: a whole
    array without one object (a bad line, not an export) that is not empty or has more than blank
    lines after it. An array holding objects is records, read as an array, and what follows its
    end as lines."""
    try:
        value = orjson.loads(first.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        return False  # "[" alone (pretty-printed), an array cut short, or a line longer than the probe
    if any(isinstance(element, dict) for element in value):
        return False  # records: an array, and whatever follows its end is read as lines
    if value:
        return True
    while ahead := reader.peek(1 << 16):
        if ahead.strip(b" \t\r\n"):
            return True
        reader.read(len(ahead))  # blank lines after the array: nothing lost by reading them
    return False


# where an object element may end (its "}" before the next "," or the array's "]")
_STRUCTURAL = re.compile(rb'[\[\]{}",]')
_OBJECT_END = re.compile(rb"}[ \t\r\n]*[,\]]")
_SPACE = re.compile(rb"[ \t\r\n]*")
_ARRAY_CHUNK = 1 << 20
_GUESSES = 2  # "}," inside an object's strings (code, say) before its end: guesses that fail to parse


class _CutShort(Exception):  # noqa: N818 (a signal between two functions, not an error)
    pass


class _ArrayElements:
    """The elements of the JSON array that opens ``buffer`` and goes on in ``stream``, read a piece
    at a time: memory holds one element and a piece, however long the array. Each comes as (its
    bytes, its value), the value ``_INVALID`` where the element needs the policy's repairs or is
    not JSON: an object is parsed whole at its first possible end (a "}" before "," or "]") that
    parses, and otherwise found by its brackets, so a damaged element spoils itself only.
    ``_CutShort`` at the end of the stream inside the array."""

    def __init__(self, buffer: bytes, stream: Any) -> None:
        self.buffer = buffer.removeprefix(b"\xef\xbb\xbf")
        self.stream = stream
        self.start = self.buffer.index(b"[") + 1  # where the next element, a comma or the array's end is
        self.newlines_dropped = 0  # line breaks in the pieces already let go, for line numbers

    def _read_more(self) -> int | None:
        """Append the next piece, dropping the bytes before ``start`` (positions move back by the
        number returned), or None at the end of the stream. Pieces grow with the element, so a
        long element is read in linear time."""
        more = self.stream.read(max(_ARRAY_CHUNK, len(self.buffer) - self.start))
        if not more:
            return None
        self.newlines_dropped += self.buffer.count(b"\n", 0, self.start)
        shift, self.buffer, self.start = self.start, self.buffer[self.start :] + more, 0
        return shift

    def line_of_start(self) -> int:
        """The line, counted from the one the buffer opened with, that ``start`` is on."""
        return 1 + self.newlines_dropped + self.buffer.count(b"\n", 0, self.start)

    def lines_after(self) -> Iterator[bytes]:
        """The lines from ``start`` on (once the array has ended): the rest of the buffer, then the stream's."""
        lines = io.BytesIO(self.buffer[self.start :]).readlines()
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += self.stream.readline()
        return itertools.chain(lines, self.stream)

    def __iter__(self) -> Iterator[tuple[bytes, Any]]:
        while True:
            self.start = _SPACE.match(self.buffer, self.start).end()
            if self.start == len(self.buffer):
                if self._read_more() is None:
                    raise _CutShort(b"")
                continue
            if self.buffer[self.start] == ord(","):
                self.start += 1
                continue
            if self.buffer[self.start] == ord("{") and (parsed := self._parse_object()) is not None:
                end, value = parsed
                yield self.buffer[self.start : end], value
                self.start = end
                continue
            end, after = self._scan()
            if element := self.buffer[self.start : end].strip():
                yield element, _INVALID
            if after is not None and self.buffer[after - 1] == ord("]"):
                self.start = after
                return
            self.start = end if after is None else after

    def _parse_object(self) -> tuple[int, Any] | None:
        """(end, value) of the object element at ``start``, or None to find it by its brackets."""
        search = self.start
        for _ in range(_GUESSES):
            while (match := _OBJECT_END.search(self.buffer, search)) is None:
                if (shift := self._read_more()) is None:
                    return None  # the stream ends: the brackets tell what is whole
                search -= shift
            end = match.start() + 1
            try:
                return end, orjson.loads(self.buffer[self.start : end])
            except orjson.JSONDecodeError:
                search = end
        return None

    def _scan(self) -> tuple[int, int | None]:
        """The element at ``start`` by its brackets and strings: (its end, and the position after
        the "," or "]" that ended it, or None when its own closing bracket did)."""
        scan, depth = self.start, 0
        while True:
            token = _STRUCTURAL.search(self.buffer, scan)
            if token is not None and token[0] == b'"':
                scan = _string_end(self.buffer, token.end())
                if scan >= 0:
                    continue
                token, scan = None, token.start()  # the string goes on past what is read
            if token is None:
                if (shift := self._read_more()) is None:
                    raise _CutShort(self.buffer[self.start :].strip())
                scan -= shift
                continue
            byte, scan = token[0], token.end()
            if byte in b"{[":
                depth += 1
            elif depth == 0 and byte != b"}":  # "," or "]" ends a scalar, or nothing between commas
                return token.start(), scan
            elif depth and byte in b"}]":
                depth -= 1
                if depth == 0:
                    return scan, None


def _string_end(buffer: bytes, position: int) -> int:
    """The position after the quote that closes the string whose text starts at ``position`` (a
    quote after an even run of backslashes), or -1 when ``buffer`` ends first. ``bytes.find`` runs
    at memory speed where a regular expression would step through the text."""
    while (quote := buffer.find(b'"', position)) >= 0:
        backslash = quote
        while buffer[backslash - 1] == 0x5C:  # the string's opening quote stops this
            backslash -= 1
        if (quote - backslash) % 2 == 0:
            return quote + 1
        position = quote + 1
    return -1


def _array_records(elements: _ArrayElements, policy: RecordPolicy) -> Generator[dict[str, Any], None, bool]:
    """A file that is one JSON array (an export that is not JSON Lines): its elements through the
    policy, numbered from 1, one at a time; returns whether the array ended (a file cut short keeps
    the elements before the cut, counts the cut, and returns False)."""
    number, policy.unit = 0, "element"
    try:
        for number, (raw, value) in enumerate(elements, start=1):  # noqa: B007 (read after)
            obj = _parse_json(raw, number, policy) if value is _INVALID else value
            if not isinstance(obj, dict):
                policy.reject(number, "invalid_json")
            elif (row := policy.accept(obj, number, len(raw))) is not None:
                yield row
    except _CutShort as cut:
        policy.reject(number + 1 if cut.args[0] else "end of file", "truncated_stream")
        return False
    return True


def _accepted_batch(batch: pa.RecordBatch, first_row: int, policy: RecordPolicy) -> pa.RecordBatch | list[dict]:
    """One batch of a columnar file through the policy: the batch (vectorised), or the list of its
    accepted rows where it takes the per-row path. ``first_row``: rows before it in the file."""
    accepted = policy.accept_batch(batch, first_row + 1)
    if accepted is not None:
        return accepted
    rows = []
    for row, obj in enumerate(batch.to_pylist(), start=first_row + 1):
        text = obj.get(policy.text_field_of(obj))
        size = len(text.encode("utf-8", errors="replace")) if isinstance(text, str) else 0
        if (kept := policy.accept(obj, f"row {row}", size)) is not None:
            rows.append(kept)
    return rows


def checked_batch(batch: pa.RecordBatch, where: str, policy: RecordPolicy) -> pa.RecordBatch | None:
    """``batch`` validated in full before any kernel reads it: a damaged file can decode to arrays
    whose offsets point outside their data (a crash in the first kernel that follows them) or to
    strings that are not UTF-8. A string column that is sound but for its UTF-8 is decoded with
    U+FFFD (``repaired:invalid_utf8`` per value); a batch with any other damage is rejected whole
    (``corrupt_batch``, its rows counted) and None returned."""
    try:
        batch.validate(full=True)
        return batch
    except pa.ArrowInvalid:
        pass
    columns = []
    for column in batch.columns:
        try:
            column.validate(full=True)
        except pa.ArrowInvalid as exc:
            column = _with_utf8_replaced(column, where, policy)
            if column is None:
                policy.reject(where, f"corrupt_batch:{type(exc).__name__}", records=batch.num_rows)
                return None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _with_utf8_replaced(column: pa.Array, where: str, policy: RecordPolicy) -> pa.Array | None:
    """A string column whose only fault is bytes that are not UTF-8, decoded with U+FFFD; None for
    any other fault (the same column read as bytes fails too) or another type."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    raw = column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    try:
        raw.validate(full=True)
    except pa.ArrowInvalid:
        return None
    values = []
    for value in raw.to_pylist():
        if value is not None:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = value.decode("utf-8", errors="replace")
                policy.repair(where, "invalid_utf8")
        values.append(value)
    return pa.array(values, column.type)


# What pyarrow raises on damaged Parquet or Arrow bytes; MemoryError (pyarrow's ArrowMemoryError)
# where a damaged length asks for more memory than there is
_DAMAGED = (OSError, pa.ArrowInvalid, MemoryError)


def iter_parquet_batches(handle: Any, policy: RecordPolicy, batch_size: int) -> Iterator[pa.RecordBatch | list[dict]]:
    """Accepted rows of a Parquet file: Arrow batches (vectorised), or lists of rows where a batch
    takes the per-row path. Row groups are read one at a time: a damaged one (a page that does not
    decompress) loses its own rows, counted from the footer, and the file goes on with the next; a
    batch that decodes to unsound arrays goes through ``checked_batch``."""
    try:
        parquet = pq.ParquetFile(handle)
    except _DAMAGED as exc:
        policy.reject("file", f"corrupt_parquet:{type(exc).__name__}")
        return
    row = 0
    for group in range(parquet.metadata.num_row_groups):
        group_end = row + parquet.metadata.row_group(group).num_rows
        try:
            for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[group]):
                checked = checked_batch(batch, f"row group {group} (rows {row + 1}-{row + batch.num_rows})", policy)
                if checked is not None:
                    yield _accepted_batch(checked, row, policy)
                row += batch.num_rows
        except _DAMAGED as exc:
            policy.reject(f"row group {group} (rows {row + 1}-{group_end})", f"corrupt_row_group:{type(exc).__name__}",
                          records=group_end - row)
        row = group_end  # derived ids of later rows stay those of the intact file


ARROW_FILE_MAGIC = b"ARROW1"
_IPC_CONTINUATION = b"\xff\xff\xff\xff"  # opens every message of an IPC stream (format 0.15 on)
_RESYNC_CHUNK = 1 << 20


def iter_arrow_batches(handle: Any, policy: RecordPolicy, batch_size: int) -> Iterator[pa.RecordBatch | list[dict]]:
    """Accepted rows of an Arrow IPC stream (what Hugging Face ``datasets`` keeps as ``.arrow``) or
    file (Feather v2), batch by batch as for Parquet. A file is read as the stream inside it (the
    format is that stream plus a footer), so one without its footer loses nothing. The stream is
    read a message at a time: a message that does not decode is skipped to the next one that does
    (``corrupt_batch``, one count: its rows are unknown); a batch that decodes to unsound arrays
    goes through ``checked_batch``; a stream cut short keeps the batches before the cut."""
    row = 0
    for number, batch in enumerate(_arrow_stream_batches(handle, policy)):
        if (checked := checked_batch(batch, f"batch {number}", policy)) is not None:
            for start in range(0, batch.num_rows, batch_size):  # the writer's batches can be large
                yield _accepted_batch(checked.slice(start, batch_size), row + start, policy)
        row += batch.num_rows


def _arrow_stream_batches(handle: Any, policy: RecordPolicy) -> Iterator[pa.RecordBatch]:
    source = handle if isinstance(handle, pa.NativeFile) else pa.PythonFile(handle, mode="r")
    start = 8 if source.read(len(ARROW_FILE_MAGIC)) == ARROW_FILE_MAGIC else 0  # the magic and its padding
    try:
        source.seek(start)
        schema = pa.ipc.read_schema(pa.ipc.read_message(source))
    except (EOFError, *_DAMAGED) as exc:
        policy.reject("file", f"corrupt_arrow:{type(exc).__name__}")
        return
    if any(pa.types.is_dictionary(f.type) for f in schema):  # dictionary messages: pyarrow's own reader
        source.seek(start)
        try:
            yield from pa.ipc.open_stream(source)
        except _DAMAGED:
            policy.reject("end of file", "truncated_stream")
        return
    while True:
        position = source.tell()
        try:
            message = pa.ipc.read_message(source)
            if message.type != "record batch":
                raise pa.ArrowInvalid(f"a {message.type} message inside the stream")
            batch = pa.ipc.read_record_batch(message, schema)
        except EOFError:  # the end-of-stream marker
            return
        except _DAMAGED as exc:
            following = _next_batch_message(source, position + 1, schema)
            if following is None:
                policy.reject("end of file", "truncated_stream")
                return
            policy.reject(f"bytes {position}-{following}", f"corrupt_batch:{type(exc).__name__}")
            source.seek(following)
            continue
        yield batch


def _next_batch_message(source: Any, position: int, schema: pa.Schema) -> int | None:
    """Where the next message that decodes as a batch of ``schema`` (or the end-of-stream marker)
    starts, from ``position`` on; None when none does."""
    while True:
        source.seek(position)
        chunk = source.read(_RESYNC_CHUNK + len(_IPC_CONTINUATION) - 1)
        offset = chunk.find(_IPC_CONTINUATION)
        while offset >= 0:
            candidate = position + offset
            source.seek(candidate)
            try:
                message = pa.ipc.read_message(source)
                if message.type == "record batch":
                    pa.ipc.read_record_batch(message, schema)
                    return candidate
            except EOFError:
                return candidate
            except _DAMAGED:
                pass
            offset = chunk.find(_IPC_CONTINUATION, offset + 1)
        if len(chunk) <= _RESYNC_CHUNK:
            return None
        position += _RESYNC_CHUNK


COLUMNAR_READERS = {"parquet": iter_parquet_batches, "arrow": iter_arrow_batches}


def iter_columnar_records(handle: Any, fmt: str, policy: RecordPolicy, batch_size: int) -> Iterator[dict[str, Any]]:
    """Accepted rows of a Parquet or Arrow file, one by one (for readers that work row by row)."""
    for accepted in COLUMNAR_READERS[fmt](handle, policy, batch_size):
        yield from accepted.to_pylist() if isinstance(accepted, pa.RecordBatch) else accepted


@register("documents")
class DocumentsStage(Stage):
    """Source stage: JSONL / Parquet / Arrow documents, one output shard per input file."""

    Config = DocumentsConfig
    is_source: ClassVar[bool] = True

    def write_shard(self, task: ShardTask, ctx: StageContext, state: None, stats: ShardStats) -> list[OutputFile]:
        with ParquetShardWriter(ctx, f"{task.name}.parquet") as shard:  # memory: one batch
            for path in task.inputs:
                for accepted in self._accepted(path, ctx, stats):
                    if isinstance(accepted, pa.RecordBatch):
                        batch = self._conform(accepted, shard.schema, stats)
                    else:
                        batch = self._to_batch(accepted, shard.schema, stats)
                    if batch.num_rows:
                        shard.write(batch, stats)
            stats.docs_in += sum(stats.dropped.values()) + stats.docs_out
            return [shard.commit(pa.schema([("id", pa.string()), ("text", pa.string())]))]

    def _accepted(self, path: str, ctx: StageContext, stats: ShardStats) -> Iterator[pa.RecordBatch | list[dict]]:
        policy = RecordPolicy(self.config, path, stats)
        try:
            handle, size = fio.open_input(path, ctx.storage)  # a remote one read through passing failures
            stats.bytes_in += size
        except (OSError, ValueError) as exc:
            policy.reject("file", f"unreadable_file:{type(exc).__name__}")
            return
        with handle:
            if (fmt := detect_format(path, handle)) in COLUMNAR_READERS:
                yield from COLUMNAR_READERS[fmt](handle, policy, self.config.batch_size)
            elif fmt == "zip":  # crawl files (a WACZ) are the extract stage's input, not documents
                policy.reject("file", "not_documents:zip")
            else:
                yield from chunked(iter_jsonl_records(handle, path, policy), self.config.batch_size)
        fio.count_retries(handle, stats.extra)

    @staticmethod
    def _conform(batch: pa.RecordBatch, schema: pa.Schema | None, stats: ShardStats) -> pa.RecordBatch:
        """A Parquet batch in the shard's column types (set by its first batch), as ``_to_batch``
        does for rows: missing columns null, extra ones dropped, rows that do not fit counted."""
        if schema is None or batch.schema.equals(schema):
            return batch
        names = batch.schema.names
        if all(field.name not in names or batch.schema.field(field.name).type in (field.type, pa.null())
               for field in schema):
            columns = [batch.column(field.name).cast(field.type) if field.name in names
                       else pa.nulls(batch.num_rows, field.type) for field in schema]
            return pa.RecordBatch.from_arrays(columns, schema=schema)
        return DocumentsStage._to_batch(batch.to_pylist(), schema, stats)  # value by value, as for JSONL

    @staticmethod
    def _to_batch(rows: list[dict[str, Any]], schema: pa.Schema | None, stats: ShardStats) -> pa.RecordBatch:
        """Rows as Arrow; the shard's first batch fixes the columns (every key it has) and their
        types. A value that does not fit its column, or would change in it (metadata whose type
        drifts along a file: null, then a string; 1, then 0.5), becomes null; a key the columns
        lack is not kept. Either way the document is kept, counted once as
        ``repaired:schema_mismatch``: a metadata field never costs a document its text, and 0.5
        never becomes 0 (pyarrow's own conversion truncates it without a word)."""
        schema = schema or _first_schema(rows)
        names = set(schema.names)
        if all(names.issuperset(row) for row in rows) and not _inexact(rows, schema):
            try:
                return pa.RecordBatch.from_pylist(rows, schema=schema)
            except _UNFIT:
                pass
        fitted = [_fit_row(row, schema, names, stats) for row in rows]
        try:
            return pa.RecordBatch.from_pylist(fitted, schema=schema)
        except _UNFIT:  # not expected once every value fits; a row that still does not is dropped
            kept = [row for row in fitted if _converts(row, schema)]
            stats.dropped["schema_mismatch"] += len(fitted) - len(kept)
            return pa.RecordBatch.from_pylist(kept, schema=schema)


def _first_schema(rows: list[dict[str, Any]]) -> pa.Schema:
    """Columns for a shard: every key of its first batch, in order of first appearance, typed by
    its values (``_column_type``), made writable (``_writable``)."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    return _writable(pa.schema([(name, _column_type([row.get(name) for row in rows])) for name in names]))


def _inexact(rows: list[dict[str, Any]], schema: pa.Schema) -> bool:
    """Whether a value would change on its way into its column. pyarrow converts 0.5 into an
    integer column as 0, 2**60 + 1 into a float column as 2**60, false as 0.0, "ab" into a list
    column as ["a", "b"], and drops an object's keys its struct column lacks, without a word.
    Only columns of such types are looked at."""
    risky = [field for field in schema if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))]
    return any(not _exact(row.get(field.name), field.type) for field in risky for row in rows)


def _exact(value: Any, column_type: pa.DataType) -> bool:
    """Whether ``value`` keeps its kind and its value in a column of ``column_type``."""
    t = pa.types
    if value is None:
        return True
    if isinstance(value, bool):  # true is no 1, 1 is no true
        return t.is_boolean(column_type)
    if isinstance(value, int):
        if t.is_floating(column_type):
            return abs(value) <= 2**53 or float(value) == value
        return t.is_integer(column_type)  # its range pyarrow checks
    if isinstance(value, float):
        return t.is_floating(column_type) or (t.is_integer(column_type) and value.is_integer())
    if isinstance(value, str):
        return t.is_string(column_type) or t.is_large_string(column_type)
    if isinstance(value, list):
        return (t.is_list(column_type) or t.is_large_list(column_type)) and all(
            _exact(item, column_type.value_type) for item in value)
    if isinstance(value, dict):  # a key the struct lacks would be lost
        names = {field.name for field in column_type} if t.is_struct(column_type) else set()
        return t.is_struct(column_type) and all(key in names for key in value) and all(
            _exact(value.get(field.name), field.type) for field in column_type)
    return True


def _writable(schema: pa.Schema) -> pa.Schema:
    """A first batch's inferred types made fit to write and to fill later. A column null all
    through it is a string (null holds nothing: an optional date or licence set later in the file
    is kept); an empty object (``"metadata": {}``, a struct of no fields, which Parquet cannot
    write: the stage crashed) is a string too, so the value is nulled, counted."""
    def fixed(column_type: pa.DataType, top: bool) -> pa.DataType:
        if (top and pa.types.is_null(column_type)) or (pa.types.is_struct(column_type) and column_type.num_fields == 0):
            return pa.string()
        if pa.types.is_struct(column_type):
            return pa.struct([field.with_type(fixed(field.type, False)) for field in column_type])
        if pa.types.is_list(column_type):
            return pa.list_(fixed(column_type.value_type, False))
        if pa.types.is_large_list(column_type):
            return pa.large_list(fixed(column_type.value_type, False))
        return column_type

    return pa.schema([field.with_type(fixed(field.type, True)) for field in schema])


def _column_type(values: list[Any]) -> pa.DataType:
    """The Arrow type of a column's values, or of its first non-null value when they disagree."""
    try:
        return pa.array(values).type
    except _UNFIT:
        first = next(v for v in values if v is not None)  # an all-null column always converts
    for as_type in (None, pa.uint64()):  # uint64: an integer over int64's range (a hash, a counter)
        try:
            return pa.array([first], type=as_type).type
        except _UNFIT:
            pass
    return pa.string()  # a value of no Arrow type (a list of mixed types): the column holds others


def _fits(value: Any, column_type: pa.DataType) -> bool:
    if value is None:
        return True
    if not _exact(value, column_type):
        return False
    try:
        pa.array([value], type=column_type)
        return True
    except _UNFIT:
        return False


def _converts(row: dict[str, Any], schema: pa.Schema) -> bool:
    try:
        pa.RecordBatch.from_pylist([row], schema=schema)
        return True
    except _UNFIT:
        return False


def _fit_row(row: dict[str, Any], schema: pa.Schema, names: set[str], stats: ShardStats) -> dict[str, Any]:
    """``row`` with every value that does not fit its column of ``schema`` set to null; a row
    that loses a value or a key is counted."""
    unfit = [field.name for field in schema if not _fits(row.get(field.name), field.type)]
    if not unfit and names.issuperset(row):
        return row
    key = f"{REPAIRED}schema_mismatch"
    stats.extra[key] = stats.extra.get(key, 0.0) + 1
    return {**row, **dict.fromkeys(unfit)}
