"""DCLM's repetition filter (Gopher / MassiveWeb counting, DCLM-Baseline's thresholds): ours over
a record batch, ours page by page (the reference the batch form is tested against), DCLM's own
``massive_web_repetition_filters`` (``../shared/reference``, its code unchanged) and datatrove's
``GopherRepetitionFilter`` (whitespace words, its own counting), on the same pages, one core.

Pages: ``bench_bff.py``'s corpus (the fixtures' real web text and WikiText pieces, cycled with
edits, planted copies and pages that end in another page's longest paragraph). Prints pages/s
(median of ``--repeats``), ratios, and how often each keeps what DCLM keeps.

    .venv/bin/python benchmarks/bench_repetition.py --docs 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bff import corpus  # noqa: E402
from common import median_seconds, print_table, shared_data  # noqa: E402

from curation.filters.heuristics import RepetitionConfig, RepetitionFilter, dclm_baseline_filter_config  # noqa: E402


def dclm_mapper():
    reference = shared_data().parent / "reference"
    if not (reference / "dclm_reference.py").is_file():
        return None
    sys.path.insert(0, str(reference))
    import dclm_reference

    return dict(dclm_reference.dclm_baseline_chain()._mappers)["massive_web_repetition_filters"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000, help="pages per record batch, as the stage's batch_size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = corpus(args.docs)
    step = RepetitionFilter("repetition", RepetitionConfig(**dclm_baseline_filter_config().steps["repetition"]))
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    def batch() -> list[bool]:
        return [bool(v <= 1.0) for b in batches for v in step._dclm_worst_batch(b)]

    def per_page() -> list[bool]:
        return [step._dclm_worst(t) <= 1.0 for t in texts]

    rows: list[tuple[str, float, str]] = []
    batch_s, ours = median_seconds(batch, args.repeats)
    per_page_s, ours_per_page = median_seconds(per_page, args.repeats)
    assert ours == ours_per_page, "the batch form and the per-page reference disagree"
    rows.append(("ours: the batch at once (the step)", len(texts) / batch_s, f"keeps {sum(ours):,}"))
    rows.append(("ours: page by page (the reference)", len(texts) / per_page_s, f"batch {per_page_s / batch_s:.2f}x"))
    mapper = dclm_mapper()
    agreement = ""
    if mapper is not None:
        dclm_s, dclm = median_seconds(lambda: [bool(mapper({"text": t, "url": "", "metadata": {}})) for t in texts],
                                      args.repeats)
        same = sum(a == b for a, b in zip(ours, dclm, strict=True))
        rows.append(("DCLM massive_web_repetition_filters (its code)", len(texts) / dclm_s,
                     f"batch {dclm_s / batch_s:.2f}x; keeps {sum(dclm):,}; ours agrees on {same:,} of {len(texts):,}"))
    else:
        agreement = " (DCLM's reference code not found: its row is left out)"
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherRepetitionFilter

    gopher = GopherRepetitionFilter()

    def datatrove() -> list[bool]:
        out = []
        for i, t in enumerate(texts):
            result = gopher.filter(Document(text=t, id=str(i)))
            out.append(bool(result[0] if isinstance(result, tuple) else result))
        return out

    datatrove_s, kept = median_seconds(datatrove, args.repeats)
    rows.append(("datatrove GopherRepetitionFilter (whitespace words)", len(texts) / datatrove_s,
                 f"batch {datatrove_s / batch_s:.2f}x; keeps {sum(kept):,}"))
    print(f"corpus: {len(texts):,} pages in batches of {args.batch:,}{agreement}")
    print_table("DCLM repetition filter, one core", rows, "pages/s")


if __name__ == "__main__":
    main()
