"""ARC reading: ours (``curation.ingest.readers.iter_arc``: warcio plus the search for the next
record after damage) against warcio's own ``ArchiveIterator`` in a bare loop, on the same ARC.gz.

The ARC is built from real pages: every HTTP response record of the Common Crawl WARC fixtures in
``../shared/data/warc``, written as ARC version 1 records (URL, IP, date, type, length, then the
HTTP message), one gzip member each as the Internet Archive writes them, repeated to ``--records``.
Then the same file with ``--damaged`` of its members damaged (one byte flipped in the middle of
each): how many of the undamaged records each reader still reads.

    .venv/bin/python benchmarks/bench_arc.py --records 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, shared_data  # noqa: E402


def real_responses(data: Path) -> list[tuple[str, str, bytes]]:
    """(url, 14-digit date, HTTP message) of every response record of the WARC fixtures."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    out = []
    for path in sorted(glob.glob(str(data / "warc" / "*.warc.gz"))):
        with open(path, "rb") as handle:
            for record in ArchiveIterator(handle, record_types=WarcRecordType.response, parse_http=False):
                date = "".join(ch for ch in record.headers.get("WARC-Date", "") if ch.isdigit())[:14]
                message = record.reader.read()
                if message.startswith(b"HTTP/") and len(date) == 14:
                    out.append((record.headers.get("WARC-Target-URI").strip("<>"), date, message))
    return out


def build_arc(responses: list[tuple[str, str, bytes]], records: int) -> tuple[bytes, list[int]]:
    """An ARC.gz of ``records`` records (the responses, repeated), and its members' offsets."""
    version = b"1 0 bench\nURL IP-address Archive-date Content-type Archive-length\n"
    members = [gzip.compress(b"filedesc://bench.arc 0.0.0.0 20240101000000 text/plain %d\n" % len(version)
                             + version + b"\n", mtime=0)]
    for i in range(records):
        url, date, message = responses[i % len(responses)]
        line = f"{url}?copy={i // len(responses)} 192.0.2.1 {date} text/html {len(message)}\n".encode()
        members.append(gzip.compress(line + message + b"\n", mtime=0))
    offsets = [0]
    for member in members[:-1]:
        offsets.append(offsets[-1] + len(member))
    return b"".join(members), offsets


def ours(data: bytes) -> int:
    from curation.ingest.readers import iter_arc

    return sum(1 for _ in iter_arc(io.BytesIO(data), Counter()))


def warcio_loop(data: bytes) -> int:
    from warcio.archiveiterator import ArchiveIterator

    count = 0
    try:
        for record in ArchiveIterator(io.BytesIO(data), arc2warc=True):
            if record.rec_type == "response":
                record.content_stream().read()
                count += 1
    except Exception:  # noqa: BLE001 (warcio raises plain exceptions at a damaged record: the file ends there)
        pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--damaged", type=float, default=0.01, help="share of members damaged in the second file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    responses = real_responses(shared_data())
    data, offsets = build_arc(responses, args.records)
    print(f"{args.records:,} ARC records from {len(responses)} real responses, {len(data) / 1e6:.1f} MB gzipped")
    ours_s, ours_n = median_seconds(lambda: ours(data), args.repeats)
    peer_s, peer_n = median_seconds(lambda: warcio_loop(data), args.repeats)
    print(f"  clean file: ours {ours_n:,} records, {ours_n / ours_s:,.0f} records/s; warcio {peer_n:,}, "
          f"{peer_n / peer_s:,.0f} records/s; ours/warcio time {ours_s / peer_s:.2f}x")

    rng = random.Random(0)
    blob = bytearray(data)
    bounds = offsets + [len(data)]
    damaged = rng.sample(range(1, len(offsets)), max(1, int(args.records * args.damaged)))
    for index in damaged:
        blob[(bounds[index] + bounds[index + 1]) // 2] ^= 0x55
    ours_n, peer_n = ours(bytes(blob)), warcio_loop(bytes(blob))
    intact = args.records - len(damaged)
    print(f"  {len(damaged)} members damaged ({args.damaged:.0%}): ours read {ours_n:,} of the {intact:,} intact "
          f"records, warcio {peer_n:,} (it stops at the first damaged one, member {min(damaged):,})")


if __name__ == "__main__":
    main()
