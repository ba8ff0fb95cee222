"""datatrove as the benchmarks' peer: its heuristic filter chain, its four MinHash steps, and a
runner that times each step and reads its counts, offline (the lid.176 model we ship)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def filter_steps() -> list:
    """URL, language (en, 0.65), Gopher repetition + quality, C4 and FineWeb filters, as
    RefinedWeb-style pipelines chain them; the URL filter reads no suffix list from the network."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from tldextract import TLDExtract

    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    return [url_filter, LanguageFilter(languages=["en"], language_threshold=0.65), GopherRepetitionFilter(),
            GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()]


def offline_language_model() -> None:
    """Put the lid.176 model we ship where datatrove's LanguageFilter looks for its download (the
    asset cache under HF_HOME), so that worker processes started from a fork server find it too."""
    import shutil

    from datatrove.utils.lid import FT176LID
    from fsspec.core import strip_protocol
    from huggingface_hub import constants

    from curation.ingest.langid import default_model_path

    folder = Path(constants.HF_ASSETS_CACHE) / "datatrove" / "lid" / FT176LID.MODEL_SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / strip_protocol(FT176LID.MODEL_URL).replace("/", "_")
    shutil.copyfile(default_model_path(), target)
    Path(f"{target}.completed").touch()


def minhash_steps(reader, base: Path, tasks: int, workers: int, writer=None) -> list[tuple[str, list, int, int]]:
    """datatrove's MinHash dedup as its docs run it locally: (name, pipeline, tasks, workers) per
    step; ``reader()`` makes the reader of the documents, ``writer()`` (optional) their writer."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    config = MinhashConfig()
    return [
        ("minhash signatures", [reader(), MinhashDedupSignature(str(base / "sigs"), config=config)], tasks, workers),
        ("minhash buckets", [MinhashDedupBuckets(str(base / "sigs"), str(base / "buckets"), config=config)],
         config.num_buckets, workers),
        ("minhash cluster", [MinhashDedupCluster(str(base / "buckets"), str(base / "remove"), config=config)], 1, 1),
        ("minhash filter", [reader(), MinhashDedupFilter(str(base / "remove")), *([writer()] if writer else [])],
         tasks, workers),
    ]


def run_steps(steps: list[tuple[str, list, int, int]], logs: Path, sampler=None) -> list[dict]:
    """Run each step with LocalPipelineExecutor; per step its wall seconds, the documents it read,
    kept (forwarded by its last filter) and dropped, and the sampler's peak memory under its name."""
    from datatrove.executor import LocalPipelineExecutor

    rows = []
    for name, pipeline, tasks, workers in steps:
        if sampler is not None:
            sampler.label = name
        begin = time.perf_counter()
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logs / name),
                              skip_completed=False).run()
        docs_in, kept, dropped = _counts(json.loads((logs / name / "stats.json").read_text()))
        rows.append({"stage": name, "seconds": time.perf_counter() - begin, "docs_in": docs_in, "kept": kept,
                     "dropped": dropped,
                     "peak_gb": sampler.peak_by_label.get(name, 0.0) if sampler is not None else 0.0})
    return rows


def _counts(stats: list[dict]) -> tuple[int, int, int]:
    """Documents the first step read, the last filter forwarded, and all filters dropped."""

    def number(value) -> int:
        return int(value["total"] if isinstance(value, dict) else value)

    docs_in = kept = dropped = 0
    for step in stats:
        counters = step.get("stats", {})
        if not docs_in and "documents" in counters:
            docs_in = number(counters["documents"])
        if "forwarded" in counters:
            kept = number(counters["forwarded"])
            docs_in = docs_in or number(counters.get("total", 0))
        dropped += number(counters.get("dropped", 0))
    return docs_in, kept, dropped
