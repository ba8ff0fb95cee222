"""A crawl end to end: the default `dclm_baseline` DAG against the equivalent datatrove pipeline, one run.

Crawl: the demo generator at scale (``DemoCrawl``: articles in boilerplate, exact and near copies,
spam, link farms, short, German/French/Spanish, blocklisted and non-HTML pages), each HTML page
padded with template markup (scripts, styles, menus, link lists) to --page-bytes, so that records
are about Common Crawl's size gzipped; --pages pages in --files gzipped WARC files (100,000 in 3:
~1 GB each, as Common Crawl's), written once under --work and reused by later runs.

  ours       `curate run dclm_baseline` in process on local Ray with 2 CPUs (extract, filter,
             bff, dedup, decontaminate, quality: fastText trained on hq_reference against the pool,
             select, tokenize): per stage wall time, share of the run, documents in / out,
             documents/s per core, bytes written, peak memory above the machine's baseline
  datatrove  WarcReader -> resiliparse in its extractor slot (our extractor; its Trafilatura
             default is slower) -> URLFilter -> LanguageFilter(en, 0.65) -> Gopher repetition +
             quality -> C4 -> FineWeb -> ParquetWriter, then MinhashDedup signatures / buckets /
             cluster / filter; LocalPipelineExecutor, 2 workers, one task per WARC file
  real pages extract + language ID + filters in one process on real Common Crawl pages (the
             fixture WARCs cycled, as bench_ingest) and on the demo pages, so the projection can
             charge extraction at real page sizes

Then a projection of one Common Crawl snapshot (3 billion pages, ~100 TB of WARC) onto clusters
from the measured per-core costs.

    .venv/bin/python benchmarks/bench_crawl.py --pages 100000 --files 3 --page-bytes 80000 --work /work/crawl-bench
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, MemorySampler, shared_data

CORES = 2
SNAPSHOT_PAGES = 3_000_000_000
SNAPSHOT_WARC_TB = 100.0


def write_crawl(work: Path, pages: int, files: int, page_bytes: int) -> list[Path]:
    from concurrent.futures import ProcessPoolExecutor

    from curation.ingest.demo_crawl import DemoCrawl, DemoCrawlConfig

    folder = work / f"crawl-{pages}-{files}-{page_bytes}"
    crawl = DemoCrawl(DemoCrawlConfig(pages=pages, files=files, crawl="CC-MAIN-BENCH", page_bytes=page_bytes))
    paths = [folder / crawl.file_name(i) for i in range(files)]
    if not all(p.exists() for p in paths):
        start = time.perf_counter()
        with ProcessPoolExecutor(CORES) as pool:  # each worker regenerates the pages, builds its files
            list(pool.map(crawl.write, [str(folder)] * files, [[i] for i in range(files)]))
        print(f"wrote {pages:,} pages in {files} WARC files in {time.perf_counter() - start:.0f}s")
    size = sum(p.stat().st_size for p in paths)
    print(f"crawl: {pages:,} pages, {files} files of {size / files / 1e6:.0f} MB ({size / pages / 1e3:.1f} kB per record "
          f"gzipped; Common Crawl: ~{SNAPSHOT_WARC_TB * 1e12 / SNAPSHOT_PAGES / 1e3:.0f} kB)")
    return paths


def run_ours(crawl: list[Path], out: Path) -> tuple[list[dict], float, float]:
    from curation.core.pipeline import load_pipeline
    from curation.core.runner import Runner

    pipeline = load_pipeline("dclm_baseline", [f"ray.num_cpus={CORES}", "ray.progress_bars=false"])
    sampler = MemorySampler()

    def echo(message: str) -> None:
        if message.startswith("["):
            sampler.label = message[1:message.index("]")]
        print(message, flush=True)

    sampler.start()
    start = time.perf_counter()
    outcomes = Runner(pipeline, str(out), echo=echo).run([str(p) for p in crawl])
    wall = time.perf_counter() - start
    sampler.finish()
    rows, passing = [], 0
    for outcome in outcomes:
        manifest = outcome.manifest
        totals = manifest["totals"]
        # documents still in the recipe after this stage: scores and flags are columns, so read the funnel
        funnel = manifest.get("funnel") or []
        if funnel and "documents" in funnel[-1]:
            passing = funnel[-1]["documents"]
        else:
            passing -= sum(step.get("removed", 0) for step in funnel)
        rows.append({"stage": outcome.name, "seconds": outcome.seconds, "docs_in": totals["docs_in"],
                     "kept": passing, "bytes": sum(f["bytes"] for f in manifest["files"]),
                     "peak_gb": sampler.peak_by_label.get(outcome.name, 0.0)})
    return rows, wall, sampler.peak_gb


def run_datatrove(crawl: list[Path], work: Path) -> tuple[list[dict], float, float]:
    from bench_ingest import ResiliparseExtractor
    from datatrove.pipeline.readers import ParquetReader, WarcReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove_peer import filter_steps, minhash_steps, offline_language_model, run_steps

    offline_language_model()
    base = work / "datatrove"
    extract_and_filter = [WarcReader(str(crawl[0].parent), glob_pattern="*.warc.gz"), ResiliparseExtractor.build(),
                          *filter_steps(), ParquetWriter(str(base / "filtered"))]
    steps = [("extract+filter", extract_and_filter, len(crawl), CORES),
             *minhash_steps(lambda: ParquetReader(str(base / "filtered")), base, len(crawl), CORES,
                            writer=lambda: ParquetWriter(str(base / "deduped")))]
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    rows = run_steps(steps, base / "logs", sampler)
    wall = time.perf_counter() - start
    sampler.finish()
    return rows, wall, sampler.peak_gb


def real_page_cost(pages: int, demo_crawl: Path, work: Path) -> tuple[float, float]:
    """Seconds per page, one process, of extract + language ID + filters: real pages, demo pages."""
    from bench_ingest import build_corpus
    from bench_ingest import run_ours as extract_and_filter

    (work / "real").mkdir()
    real = build_corpus(shared_data(), pages, work / "real" / "real.warc.gz")
    start = time.perf_counter()
    extract_and_filter(real, work / "real-run")
    real_seconds = (time.perf_counter() - start) / pages
    from collections import Counter

    from curation.ingest.readers import iter_warc

    with open(demo_crawl, "rb") as handle:
        demo_pages = sum(1 for r in iter_warc(handle, Counter()) if r.record_type == "response")
    start = time.perf_counter()
    extract_and_filter(demo_crawl, work / "demo-run")
    demo_seconds = (time.perf_counter() - start) / demo_pages
    return real_seconds, demo_seconds


def print_rows(title: str, rows: list[dict], wall: float, peak: float) -> None:
    print(f"\n{title}: {wall:.0f}s wall, peak memory above baseline {peak:.2f} GB")
    print(f"  {'stage':<20} {'wall s':>8} {'share':>6} {'docs in':>10} {'kept':>10} {'docs/s/core':>11} "
          f"{'written MB':>10} {'peak GB':>8}")
    for r in rows:
        rate = r["docs_in"] / max(r["seconds"], 1e-9) / CORES
        written = f"{r['bytes'] / 1e6:10.1f}" if "bytes" in r else f"{'':>10}"
        print(f"  {r['stage']:<20} {r['seconds']:8.1f} {r['seconds'] / wall:6.1%} {r['docs_in']:10,} {r['kept']:10,} "
              f"{rate:11,.0f} {written} {r['peak_gb']:8.2f}")


def projection(rows: list[dict], pages: int, real_factor: float, peak_gb: float) -> None:
    """Core-hours per stage for one snapshot, scaled from the run: every stage sees the snapshot's
    share of documents the run's stage saw; extract and filter are charged at real page cost."""
    core_seconds = {}
    for r in rows:
        per_page = r["seconds"] * CORES / pages  # core-seconds per crawl page
        if r["stage"] in ("extract", "filter"):
            per_page *= real_factor
        core_seconds[r["stage"]] = per_page * SNAPSHOT_PAGES
    total = sum(core_seconds.values())
    bound = max(core_seconds, key=core_seconds.get)
    written = sum(r["bytes"] for r in rows) / pages * SNAPSHOT_PAGES / 1e12
    print(f"\nprojection, one snapshot ({SNAPSHOT_PAGES / 1e9:.0f}B pages, ~{SNAPSHOT_WARC_TB:.0f} TB WARC): "
          f"{total / 3600:,.0f} core-hours; bounded by {bound} ({core_seconds[bound] / total:.0%}); "
          f"stage outputs ~{written:,.0f} TB (every stage's data files, at the run's bytes per page)")
    per_core_gb = peak_gb / CORES
    print(f"  {'nodes x cores':<14} {'hours':>8} {'memory per node':>16}")
    for nodes, cores in ((1, 64), (10, 64), (50, 64), (100, 96), (500, 96)):
        print(f"  {f'{nodes} x {cores}':<14} {total / (nodes * cores) / 3600:8.1f} {per_core_gb * cores:13.0f} GB")
    print("  per stage, core-hours: " + ", ".join(f"{k} {v / 3600:,.0f}" for k, v in core_seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--page-bytes", type=int, default=80_000,
                        help="HTML bytes per page with template markup (~29 kB gzipped per record); 0: compact demo pages")
    parser.add_argument("--work", default=None, help="folder for the crawl (kept) and the runs (removed)")
    parser.add_argument("--real-pages", type=int, default=1500, help="real Common Crawl pages for the cost factor")
    parser.add_argument("--skip-datatrove", action="store_true")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    sys.path.insert(0, str(REPO))
    work = Path(args.work or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(work / "hf-home")  # before huggingface_hub loads: datatrove's asset cache
    crawl = write_crawl(work, args.pages, args.files, args.page_bytes)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        scratch = Path(tmp)
        ours, ours_wall, ours_peak = run_ours(crawl, scratch / "ours")
        import ray

        ray.shutdown()
        print_rows("ours: dclm_baseline", ours, ours_wall, ours_peak)
        common = sum(r["seconds"] for r in ours if r["stage"] in ("extract", "filter", "bff", "dedup"))
        if not args.skip_datatrove:
            theirs, theirs_wall, theirs_peak = run_datatrove(crawl, scratch)
            print_rows("datatrove: reader -> resiliparse -> filters -> MinHash dedup", theirs, theirs_wall, theirs_peak)
            print(f"\nextract + filter + dedup (BFF and MinHash): ours {common:.0f}s, datatrove {theirs_wall:.0f}s: "
                  f"ours/datatrove = {theirs_wall / common:.2f}x the speed; whole DAG (with decontamination, "
                  f"quality training and scoring, selection, tokenization) {ours_wall:.0f}s = "
                  f"{theirs_wall / ours_wall:.2f}x datatrove's dedup-only pipeline")
        real, demo = real_page_cost(args.real_pages, crawl[0], scratch)
        print(f"\nextract + language ID + filters, one process: real Common Crawl pages {1 / real:,.0f} pages/s, "
              f"demo pages {1 / demo:,.0f} pages/s: real pages cost {real / demo:.2f}x")
        projection(ours, args.pages, real / demo, ours_peak)


if __name__ == "__main__":
    main()
