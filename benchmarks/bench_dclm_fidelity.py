"""DCLM-Baseline fidelity: our `filter` stage against DCLM's own mappers on the same texts.

Texts: the Dolma CC web negatives, every page of the fixture WARCs (extracted by our `extract`
stage, language ID included) and the DCLM test pages. DCLM's chain runs through
`../shared/reference/dclm_reference.py` (its mappers, unchanged); ours through
`HeuristicFilterStage` with `pipelines/dclm_baseline.yaml`'s filter steps. Both see the same
text and URL; ours gets language columns from our fastText language ID (as in a run).

Prints: decisions agreeing, survivor Jaccard, identical final text among common survivors
(blank lines and outer whitespace ignored), and where decisions differ by DCLM's failing step.

    .venv/bin/python benchmarks/bench_dclm_fidelity.py [--limit N]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from common import shared_data


def fixture_texts(data: Path, limit: int | None) -> list[dict]:
    docs: list[dict] = []
    for path in sorted(glob.glob(str(data / "web_negatives" / "*.jsonl.gz"))):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                obj = json.loads(line)
                url = (obj.get("metadata") or {}).get("url") or f"https://example.org/{obj['id']}"
                docs.append({"id": obj["id"], "url": url, "text": obj["text"]})
    from curation.core.stage import ShardTask, StageContext
    from curation.ingest.extract import ExtractConfig, ExtractStage

    with tempfile.TemporaryDirectory() as tmp:
        stage = ExtractStage(ExtractConfig(language_id=False))
        warcs = sorted(p for p in glob.glob(str(data / "warc" / "*.warc.gz")) if ".wat." not in p)
        ctx = StageContext(run_root=tmp, stage_name="extract", stage_dir=tmp, key="k")
        stage.run_shard(ShardTask(0, "part-00000", warcs), ctx)
        for row in pq.read_table(Path(tmp) / "part-00000.parquet").to_pylist():
            docs.append({"id": row["id"], "url": row["url"] or f"https://example.org/{row['id']}", "text": row["text"]})
    from curation.ingest.extract import HtmlExtractor, decode_page

    html = HtmlExtractor("resiliparse", True)
    for path in sorted((data / "html" / "dclm-tests").glob("*.html")):
        docs.append({"id": path.stem, "url": f"https://example.org/{path.stem}",
                     "text": html.extract(decode_page(path.read_bytes(), None))})
    return docs[:limit] if limit else docs


def ours(docs: list[dict]) -> list[tuple[bool, str | None, str]]:
    from curation.core.stage import ShardStats, StageContext
    from curation.filters.heuristics import HeuristicFilterStage, dclm_baseline_filter_config
    from curation.ingest.langid import LanguageIdentifier

    batch = pa.RecordBatch.from_pylist(docs)
    language, score = LanguageIdentifier().predict(batch.column("text"))
    batch = batch.append_column("language", language).append_column("language_score", score)
    stage = HeuristicFilterStage(dclm_baseline_filter_config())
    stage.ensure_setup(StageContext(run_root="", stage_name="filter", stage_dir="", key="k"))
    rows = stage.process_batch(batch, None, ShardStats(shard="b")).to_pylist()
    return [(r["filter_keep"], r["filter_reason"], r["text"]) for r in rows]


def dclm(docs: list[dict]) -> list[tuple[bool, str | None, str | None]]:
    sys.path.insert(0, str(shared_data().parent / "reference"))
    from dclm_reference import dclm_baseline_chain

    chain = dclm_baseline_chain()
    return [chain.run({"text": d["text"], "url": d["url"]}) for d in docs]


def normalised(text: str | None) -> str:
    return "\n".join(line.strip() for line in (text or "").split("\n") if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    docs = fixture_texts(shared_data(), args.limit)
    a, b = ours(docs), dclm(docs)
    agree = sum(x[0] == y[0] for x, y in zip(a, b, strict=True))
    ours_kept = {i for i, x in enumerate(a) if x[0]}
    dclm_kept = {i for i, y in enumerate(b) if y[0]}
    both = ours_kept & dclm_kept
    same_text = sum(normalised(a[i][2]) == normalised(b[i][2]) for i in both)
    print(f"{len(docs)} documents")
    print(f"decisions agree: {agree / len(docs):.4f} ({agree})")
    print(f"kept: DCLM {len(dclm_kept)}, ours {len(ours_kept)}, both {len(both)}; "
          f"survivor Jaccard {len(both) / max(len(ours_kept | dclm_kept), 1):.4f}")
    print(f"same final text among common survivors: {same_text / max(len(both), 1):.4f} ({same_text})")
    only_dclm = Counter(a[i][1] for i in dclm_kept - ours_kept)
    only_ours = Counter(b[i][1] for i in ours_kept - dclm_kept)
    print("DCLM keeps, we drop (our step):", dict(only_dclm.most_common(8)))
    print("we keep, DCLM drops (its step):", dict(only_ours.most_common(8)))


if __name__ == "__main__":
    main()
