"""Reading a remote input through ``fio.open_input`` (retries passing failures) against reading
the same URL with a plain fsspec file, from a range-serving HTTP server on loopback; then the same
with the server failing requests (503, 429, a body cut short), which the plain file does not
survive. MiB/s, median of ``--repeats``; the faulty run's retries and bytes checked.

    .venv/bin/python -u benchmarks/bench_remote_reads.py --mib 64 --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test suite's server

from common import median_seconds  # noqa: E402
from flaky_http import flaky_server  # noqa: E402

from curation.core import io as fio  # noqa: E402

PIECE = 1 << 16


def read_plain(url: str) -> int:
    fs, path = fio.filesystem(url)
    total = 0
    with fs.open(path, "rb", block_size=1 << 22) as handle:
        while piece := handle.read(PIECE):
            total += len(piece)
    return total


def read_ours(url: str, storage: fio.Storage) -> tuple[int, int]:
    handle, _ = fio.open_input(url, storage)
    total = 0
    with handle:
        while piece := handle.read(PIECE):
            total += len(piece)
    return total, fio.retries_of(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("curation.core.io").setLevel(logging.ERROR)  # one warning a retry: counted below instead
    data = os.urandom(args.mib << 20)
    storage = fio.Storage(retry_wait_s=0.01)
    print(f"{args.mib} MiB over HTTP on loopback, 4 MiB blocks, median of {args.repeats}")
    with flaky_server({"input.bin": data}, lambda number, request: None) as (base, _):
        plain, size = median_seconds(lambda: read_plain(base + "input.bin"), args.repeats)
        ours, (size_ours, _) = median_seconds(lambda: read_ours(base + "input.bin", storage), args.repeats)
    assert size == size_ours == len(data)
    print(f"  peer, a plain fsspec file:        {args.mib / plain:8.0f} MiB/s")
    print(f"  ours, fio.open_input:             {args.mib / ours:8.0f} MiB/s  ({plain / ours:.2f}x the peer's speed)")

    def every_fifth(number: int, request: tuple) -> str | None:
        return ("503", "429", "cut")[number // 5 % 3] if number % 5 == 4 else None

    with flaky_server({"input.bin": data}, every_fifth) as (base, log):
        faulty, (size, retries) = median_seconds(lambda: read_ours(base + "input.bin", storage), args.repeats)
        try:
            read_plain(base + "input.bin")
            plain_note = "read it whole"
        except Exception as exc:  # what a reader without retries meets
            plain_note = f"fails: {type(exc).__name__}"
    assert size == len(data)
    print(f"  ours, every 5th request failing:  {args.mib / faulty:8.0f} MiB/s  ({retries} retries in the last read; "
          f"the plain file {plain_note})")


if __name__ == "__main__":
    main()
