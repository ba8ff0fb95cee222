"""WARC -> extract -> language ID -> DCLM heuristic filters: ours against datatrove, one core.

Corpus (built from the fixtures, nothing downloaded): every HTML response record of the
Common Crawl / wget WARCs in ../shared/data/warc plus the ten DCLM test pages in
../shared/data/html, cycled with unique URLs into one gzipped WARC of --docs records.

Measured in one run, single process each, median of --repeats:
  ours        ExtractStage (FastWARC + resiliparse + fastText lid.176) then HeuristicFilterStage
  datatrove   WarcReader -> extractor -> URLFilter -> LanguageFilter(en, 0.65) ->
              GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter
              with its default Trafilatura extractor, and with resiliparse in its extractor slot
  resiliparse FastWARC + encoding detection + extract_plain_text in a bare loop, against our
              ExtractStage with language ID off (the goal: within 10%)

    .venv/bin/python benchmarks/bench_ingest.py --docs 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import glob
import io
import logging
import tempfile
from pathlib import Path

from common import median_seconds, print_table, shared_data
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def build_corpus(data: Path, docs: int, out: Path) -> Path:
    from curation.ingest.readers import iter_warc

    payloads: list[tuple[str, bytes]] = []
    for path in sorted(glob.glob(str(data / "warc" / "*.warc.gz"))):
        from collections import Counter

        with open(path, "rb") as handle:
            for record in iter_warc(handle, Counter()):
                if record.record_type == "response" and "html" in record.content_type and record.payload:
                    payloads.append((record.url, record.payload))
    for path in sorted((data / "html" / "dclm-tests").glob("*.html")):
        payloads.append((f"https://{path.stem.split('_page')[0].replace('_', '-')}.example.org/{path.stem}", path.read_bytes()))
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for i in range(docs):
        url, body = payloads[i % len(payloads)]
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(f"{url}?copy={i}", "response", payload=io.BytesIO(body),
                                                      http_headers=http))
    out.write_bytes(buffer.getvalue())
    print(f"corpus: {docs} records cycled from {len(payloads)} real pages, {out.stat().st_size / 1e6:.1f} MB gzipped")
    return out


def run_ours(corpus: Path, work: Path) -> int:
    from curation.core.stage import ShardTask, StageContext
    from curation.filters.heuristics import HeuristicFilterStage, dclm_baseline_filter_config
    from curation.ingest.extract import ExtractConfig, ExtractStage

    extract = ExtractStage(ExtractConfig())
    ctx = StageContext(run_root=str(work), stage_name="extract", stage_dir=str(work / "e"), key="k")
    extract.run_shard(ShardTask(0, "part-00000", [str(corpus)]), ctx)
    filters = HeuristicFilterStage(dclm_baseline_filter_config())
    ctx2 = StageContext(run_root=str(work), stage_name="filter", stage_dir=str(work / "f"), key="k")
    receipt = filters.run_shard(ShardTask(0, "part-00000", [str(work / "e" / "part-00000.parquet")]), ctx2)
    return receipt.stats.docs_out - sum(receipt.stats.flagged.values())


def run_ours_extract_only(corpus: Path, work: Path) -> int:
    from curation.core.stage import ShardTask, StageContext
    from curation.ingest.extract import ExtractConfig, ExtractStage

    extract = ExtractStage(ExtractConfig(language_id=False))
    ctx = StageContext(run_root=str(work), stage_name="extract", stage_dir=str(work / "x"), key="k")
    return extract.run_shard(ShardTask(0, "part-00000", [str(corpus)]), ctx).stats.docs_out


def run_resiliparse_direct(corpus: Path) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    n = 0
    with open(corpus, "rb") as handle:
        for record in ArchiveIterator(handle, record_types=WarcRecordType.response, parse_http=True):
            body = record.reader.read()
            html = bytes_to_str(body, record.http_charset or detect_encoding(body))
            text = extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False,
                                      preserve_formatting=True, list_bullets=True)
            n += bool(text)
    return n


class ResiliparseExtractor:
    """resiliparse in datatrove's extractor slot, to compare pipelines with the same extractor."""

    @staticmethod
    def build():
        from datatrove.pipeline.extractors.base import BaseExtractor

        class _Resiliparse(BaseExtractor):
            name = "resiliparse"

            def __init__(self, timeout: float = 5):
                super().__init__(timeout)

            def extract(self, text: str) -> str:
                from resiliparse.extract.html2text import extract_plain_text

                return extract_plain_text(text, main_content=True, alt_texts=False, preserve_formatting=True)

        return _Resiliparse()


def run_datatrove(corpus: Path, work: Path, extractor: str) -> int:
    import datatrove.utils.lid as lid
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove_peer import filter_steps

    from curation.ingest.langid import default_model_path

    lid.cached_asset_path_or_download = lambda *args, **kwargs: default_model_path()  # offline: same lid.176
    kept: list[int] = []

    def count(data, rank: int = 0, world_size: int = 1):
        n = 0
        for _ in data:
            n += 1
        kept.append(n)
        return iter(())

    pipeline = [
        WarcReader(str(corpus.parent), glob_pattern=corpus.name),
        Trafilatura(favour_precision=True, timeout=5) if extractor == "trafilatura" else ResiliparseExtractor.build(),
        *filter_steps(),
        count,
    ]
    LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=str(work / f"dt-{extractor}"),
                          skip_completed=False).run()
    return kept[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-trafilatura", action="store_true", help="datatrove's default extractor is slow")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "corpus").mkdir()
        corpus = build_corpus(shared_data(), args.docs, work / "corpus" / "bench.warc.gz")
        n = args.docs
        ours, ours_kept = median_seconds(lambda: run_ours(corpus, work), args.repeats)
        dt_res, dt_res_kept = median_seconds(lambda: run_datatrove(corpus, work, "resiliparse"), args.repeats)
        rows = [("ours (extract+langid+DCLM filters)", n / ours, f"kept {ours_kept}"),
                ("datatrove, resiliparse extractor", n / dt_res, f"kept {dt_res_kept}; ours/datatrove = {dt_res / ours:.2f}x")]
        if not args.skip_trafilatura:
            dt_tra, dt_tra_kept = median_seconds(lambda: run_datatrove(corpus, work, "trafilatura"), args.repeats)
            rows.append(("datatrove, Trafilatura (its default)", n / dt_tra,
                         f"kept {dt_tra_kept}; ours/datatrove = {dt_tra / ours:.2f}x"))
        print_table(f"WARC -> text -> filters, {n} records, one core (median of {args.repeats})", rows, "docs/s")
        ext, _ = median_seconds(lambda: run_ours_extract_only(corpus, work), args.repeats)
        direct, _ = median_seconds(lambda: run_resiliparse_direct(corpus), args.repeats)
        print_table("extraction only", [
            ("ours: ExtractStage, language ID off", n / ext, f"ours/direct = {direct / ext:.2f}x"),
            ("FastWARC + resiliparse, bare loop", n / direct, ""),
        ], "docs/s")


if __name__ == "__main__":
    main()
