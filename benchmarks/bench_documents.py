"""Reading a corpus that is already text: FineWeb-shaped rows (text, id, dump, url, date,
language, language_score, token_count) as Parquet, as JSONL and as an Arrow stream (what Hugging
Face ``datasets`` keep), through the `documents` source stage, against datatrove's
ParquetReader/JsonlReader -> ParquetWriter (it has no Arrow reader) and against pyarrow reading and
rewriting the file (the floor: no policy at all), zstd output for all, one core, median of --repeats.

The text is words drawn from the fixtures' WikiText (hq_reference), 100-500 words a document.

    .venv/bin/python benchmarks/bench_documents.py --docs 200000 --repeats 3
    .venv/bin/python benchmarks/bench_documents.py --docs 200000 --repeats 3 --batch-size 10000
"""

from __future__ import annotations

import argparse
import functools
import random
import tempfile
from pathlib import Path

from common import median_seconds, print_table, shared_data


def build_corpus(path: Path, docs: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = " ".join(p.read_text(errors="replace") for p in sorted((shared_data() / "hq_reference").rglob("*"))
                     if p.is_file() and p.suffix in (".txt", ".jsonl", ".md")).split()[:200_000]
    rng = random.Random(0)
    pool = [" ".join(rng.choices(words, k=rng.randint(100, 500))) for _ in range(2000)]
    table = pa.table({
        "text": [f"{pool[i % len(pool)]} {i}" for i in range(docs)],
        "id": [f"<urn:uuid:{i:08d}>" for i in range(docs)],
        "dump": ["CC-MAIN-2024-10"] * docs,
        "url": [f"https://example.com/{i}" for i in range(docs)],
        "date": ["2024-02-20T00:00:00Z"] * docs,
        "language": ["en"] * docs,
        "language_score": [0.9] * docs,
        "token_count": [300] * docs,
    })
    pq.write_table(table, path, row_group_size=50_000)


def write_jsonl(parquet: Path, path: Path) -> None:
    import orjson
    import pyarrow.parquet as pq

    with open(path, "wb") as handle:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=10_000):
            handle.writelines(orjson.dumps(row) + b"\n" for row in batch.to_pylist())


def write_arrow(parquet: Path, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(parquet)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=1000):  # datasets' default writer_batch_size
            writer.write_batch(batch)


def run_ours(source: Path, out: Path, batch_size: int = 1000) -> int:
    from curation.core.stage import ShardTask, StageContext
    from curation.ingest.documents import DocumentsConfig, DocumentsStage

    ctx = StageContext(run_root=str(out), stage_name="documents", stage_dir=str(out / "documents"), key="k")
    receipt = DocumentsStage(DocumentsConfig(batch_size=batch_size)).run_shard(ShardTask(0, "part-00000", [str(source)]), ctx)
    return receipt.stats.docs_out


def run_datatrove(source: Path, out: Path) -> int:
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    reader_class = ParquetReader if source.suffix == ".parquet" else JsonlReader
    reader = reader_class(str(source.parent), glob_pattern=source.name, doc_progress=False)
    writer = ParquetWriter(str(out / "datatrove"), compression="zstd")
    count = 0
    with writer:
        for document in reader.run():
            writer.write(document)
            count += 1
    return count


def run_pyarrow(source: Path, out: Path) -> int:
    import pyarrow
    import pyarrow.json
    import pyarrow.parquet as pq

    if source.suffix == ".arrow":
        with pyarrow.OSFile(str(source), "rb") as handle:
            table = pyarrow.ipc.open_stream(handle).read_all()
    else:
        table = pq.read_table(source) if source.suffix == ".parquet" else pyarrow.json.read_json(source)
    pq.write_table(table, out / "copy.parquet", compression="zstd")
    return table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="the documents stage's batch_size (its default: 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "fineweb-like.parquet"
        build_corpus(parquet, args.docs)
        write_jsonl(parquet, Path(tmp) / "fineweb-like.jsonl")
        write_arrow(parquet, Path(tmp) / "fineweb-like.arrow")
        for source in (parquet, Path(tmp) / "fineweb-like.jsonl", Path(tmp) / "fineweb-like.arrow"):
            results = {}
            ours = functools.partial(run_ours, batch_size=args.batch_size)  # rows per batch and per row group
            runs = [("ours", ours), ("datatrove", run_datatrove), ("pyarrow", run_pyarrow)]
            for name, run in [r for r in runs if r[0] != "datatrove" or source.suffix != ".arrow"]:
                counter = iter(range(args.repeats))

                def once(run=run, counter=counter, name=name, source=source):
                    out = Path(tmp) / f"{source.suffix[1:]}-{name}-{next(counter)}"
                    out.mkdir()
                    return run(source, out)

                seconds, count = median_seconds(once, args.repeats)
                assert count == args.docs, (name, count)
                results[name] = args.docs / seconds
            print_table(f"documents/s, {args.docs:,} FineWeb-shaped rows as {source.suffix[1:]} (median of {args.repeats})",
                        [(name, rate, f"{rate / results['ours']:.2f}x ours") for name, rate in results.items()], "docs/s")
            if "datatrove" in results:
                print(f"ours / datatrove: {results['ours'] / results['datatrove']:.2f}x; ", end="")
            print(f"ours / pyarrow read+write: {results['ours'] / results['pyarrow']:.2f}x")


if __name__ == "__main__":
    main()
