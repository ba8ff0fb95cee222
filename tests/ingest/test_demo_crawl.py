"""The demo crawl generator: seeded bytes, files built one by one, page padding that adds only
markup (the extracted text stays the same), and articles that do not share their paragraphs."""

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


def test_articles_are_new_text_not_recurring_paragraphs():
    """Only the planted copies repeat: original articles share few word 13-grams (paragraph dedup,
    BFF, removes a paragraph when more than 80% of its 13-grams were seen), and no paragraph."""
    import re

    from curation.dedup.bff import ngram_hashes

    pages = DemoCrawl(DemoCrawlConfig(pages=600, files=1, seed=2)).pages()
    articles = [re.findall(rb"<p>(.*?)</p>", payload.split(b"<article>")[1].split(b"</article>")[0])
                for url, _, payload in pages if "/article/" in url]
    paragraphs = [p.decode() for article in articles for p in article]
    assert len(articles) > 300 and len(set(paragraphs)) == len(paragraphs)
    seen: set[int] = set()
    mostly_seen = 0
    for paragraph in paragraphs:
        hashes = set(ngram_hashes(paragraph, 13, 13)[0].tolist())
        mostly_seen += len(hashes & seen) > 0.8 * len(hashes)
        seen |= hashes
    assert mostly_seen < 0.01 * len(paragraphs)
