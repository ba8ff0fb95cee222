"""The demo crawl generator: seeded bytes, files built one by one, and page padding that adds
only markup (the extracted text stays the same)."""

from __future__ import annotations

import io

from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text

from curation.ingest.demo_crawl import DemoCrawl, DemoCrawlConfig


def _records(data: bytes) -> list[tuple[str, bytes]]:
    out = []
    for record in ArchiveIterator(io.BytesIO(data), record_types=WarcRecordType.response, parse_http=True):
        out.append((record.headers.get("WARC-Target-URI"), record.reader.read()))
    return out


def test_same_seed_same_bytes_and_files_build_alone(tmp_path):
    config = DemoCrawlConfig(pages=90, files=3, seed=5)
    files = DemoCrawl(config).warc_files()
    assert files == DemoCrawl(config).warc_files()
    crawl = DemoCrawl(config)
    for index in (2, 0, 1):  # any order, one at a time (as parallel writers do)
        crawl.write(str(tmp_path), [index])
    assert [(tmp_path / name).read_bytes() for name, _ in files] == [data for _, data in files]
    assert DemoCrawl(DemoCrawlConfig(pages=90, files=3, seed=6)).warc_files() != files


def test_page_bytes_pads_markup_not_text():
    compact = DemoCrawl(DemoCrawlConfig(pages=60, files=1, seed=3)).warc_files()[0][1]
    padded = DemoCrawl(DemoCrawlConfig(pages=60, files=1, seed=3, page_bytes=30_000)).warc_files()[0][1]
    assert len(padded) > 5 * len(compact)
    pairs = list(zip(_records(compact), _records(padded), strict=True))
    html = [(a, b) for (url, a), (_, b) in pairs if a.startswith(b"<!DOCTYPE html>")]
    assert len(html) > 40
    for before, after in html:
        assert len(after) >= 30_000 > len(before)
        text_before = extract_plain_text(before.decode("utf-8", "replace"), main_content=True)
        text_after = extract_plain_text(after.decode("utf-8", "replace"), main_content=True)
        assert text_after == text_before
