"""Does the stages' row-group size (one per ~1,000-row batch) cost the people who read the shards?
The same FineWeb-shaped rows (`bench_documents.build_corpus`) written with row groups of several
sizes (zstd, statistics, as the stages write), then: file size, a DuckDB group-by over the text,
a DuckDB query on metadata columns only, and pyarrow reading every batch. Median of --repeats.

    .venv/bin/python benchmarks/bench_row_groups.py --docs 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from bench_documents import build_corpus
from common import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 10_000, 50_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.parquet"
        build_corpus(corpus, args.docs)
        table = pq.read_table(corpus)
        print(f"{args.docs:,} FineWeb-shaped rows, median of {args.repeats}")
        print(f"{'rows a group':>12} {'MB':>7} {'text group-by ms':>17} {'metadata query ms':>18} {'pyarrow read ms':>16}")
        for size in args.sizes:
            path = Path(tmp) / f"rg{size}.parquet"
            pq.write_table(table, path, row_group_size=size, compression="zstd", write_statistics=True)
            con = duckdb.connect()
            text, _ = median_seconds(lambda p=path, c=con: c.execute(
                f"select language, count(*), sum(length(text)), avg(language_score) from '{p}' group by 1").fetchall(),
                args.repeats)
            metadata, _ = median_seconds(lambda p=path, c=con: c.execute(
                f"select count(*), avg(token_count) from '{p}' where url like '%99%'").fetchall(), args.repeats)
            read, _ = median_seconds(lambda p=path: sum(b.num_rows for b in pq.ParquetFile(p).iter_batches(batch_size=1024)),
                                     args.repeats)
            print(f"{size:>12,} {os.path.getsize(path) / 1e6:>7.1f} {text * 1e3:>17.1f} {metadata * 1e3:>18.1f} {read * 1e3:>16.0f}")


if __name__ == "__main__":
    main()
