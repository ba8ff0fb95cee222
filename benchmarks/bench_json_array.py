"""Files that are one JSON array of records (exports that are not JSON Lines), read by the documents
reader a piece at a time, against the peer that loads the whole file with ``orjson.loads`` (this
reader's previous form, and what a script does) and against the same records as JSON Lines.

Each form runs in a fresh process over the same generated file (documents of ~``--words`` words
with quotes in the text, and with ``--text code`` brackets and "}," as well; a nested metadata object); the table gives
documents/s (median of ``--repeats``) and the process's peak resident memory.

    .venv/bin/python -u benchmarks/bench_json_array.py --docs 200000 --repeats 3 [--text code]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMS = {
    "ours: JSON array, a piece at a time": "array",
    "peer: orjson.loads of the whole file": "orjson_whole",
    "ours: the same records as JSON Lines": "jsonl",
}


def write_files(folder: Path, docs: int, words: int, text: str) -> dict[str, Path]:
    rng = random.Random(0)
    vocabulary = ["the", "a", "river", "stone", "cloud", "über", "naïve", "data", "set", "of", "with", '"quoted"']
    if text == "code":  # what makes the reader fall back from parsing at the first "}," to counting brackets
        vocabulary += ["[x]", "{y}", "},", "f(a,", "b)"]
    records = [{"id": f"d{i}", "text": " ".join(rng.choice(vocabulary) for _ in range(words)),
                "metadata": {"url": f"https://example.org/{i}", "n": i}} for i in range(docs)]
    paths = {"array": folder / "export.json", "jsonl": folder / "export.jsonl"}
    with open(paths["array"], "w") as handle:
        json.dump(records, handle, indent=1)
    with open(paths["jsonl"], "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return paths


def run_form(form: str, path: str) -> dict[str, float]:
    """In this (fresh) process: read every record, return seconds, records, peak RSS."""
    started = time.perf_counter()
    if form == "orjson_whole":
        import orjson

        with open(path, "rb") as handle:
            count = sum(1 for record in orjson.loads(handle.read()) if isinstance(record, dict))
    else:
        from curation.core.stage import ShardStats
        from curation.ingest.documents import DocumentsConfig, RecordPolicy, iter_jsonl_records

        with open(path, "rb") as handle:
            policy = RecordPolicy(DocumentsConfig(), path, ShardStats("bench"))
            count = sum(1 for _ in iter_jsonl_records(handle, path, policy))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "records": count, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text", choices=["prose", "code"], default="prose",
                        help="code: brackets, '},' and escaped quotes all through the text")
    parser.add_argument("--form", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.form:
        print(json.dumps(run_form(args.form, args.path)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), args.docs, args.words, args.text)
        size = paths["array"].stat().st_size
        print(f"{args.docs:,} records, array file {size / 1e6:.0f} MB (pretty-printed), JSON Lines "
              f"{paths['jsonl'].stat().st_size / 1e6:.0f} MB; median of {args.repeats}")
        print("| form | docs/s | peak RSS MB |\n| --- | ---: | ---: |")
        rates = {}
        for label, form in FORMS.items():
            path = paths["jsonl" if form == "jsonl" else "array"]
            runs = [json.loads(subprocess.run([sys.executable, __file__, "--form", form, "--path", str(path)],
                                              check=True, capture_output=True, text=True).stdout)
                    for _ in range(args.repeats)]
            assert all(r["records"] == args.docs for r in runs), runs
            rates[form] = args.docs / statistics.median(r["seconds"] for r in runs)
            print(f"| {label} | {rates[form]:,.0f} | {statistics.median(r['peak_mb'] for r in runs):,.0f} |")
        print(f"ours / peer: {rates['array'] / rates['orjson_whole']:.2f}x the speed")


if __name__ == "__main__":
    main()
