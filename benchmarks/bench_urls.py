"""URL dedup keys: ours (``curation.dedup.urls.canonical_url``) against w3lib's ``canonicalize_url``,
trafilatura's ``courlan.normalize_url`` and the stage's former key (the URL stripped and lowercased).

The URLs are real: the WARC fixtures' target URIs and the crawled URLs of the Dolma CC samples in
``web_negatives``. Each URL gets variants that are the same page (the other scheme, ``www.``
added or removed, the default port, a fragment, tracking arguments, the URL as Dolma stores it,
with no scheme) and variants that are another page (a path letter's case changed, outside a %XX escape, an ``id``
argument's value changed). The table gives keys/s (median of ``--repeats``) over the real URLs alone and over all, the share of
same-page variants whose key equals the URL's, and the share of other-page variants whose key
wrongly does.

    .venv/bin/python benchmarks/bench_urls.py --repeats 5
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, shared_data  # noqa: E402


def real_urls(data: Path) -> list[str]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    urls = []
    for path in sorted(glob.glob(str(data / "warc" / "*.warc*"))):
        with open(path, "rb") as handle:
            for record in ArchiveIterator(handle, record_types=WarcRecordType.response):
                urls.append(record.headers.get("WARC-Target-URI"))
    for path in sorted(glob.glob(str(data / "web_negatives" / "*.jsonl.gz"))):
        with gzip.open(path, "rt") as handle:
            for line in handle:  # Dolma's CC keeps the crawled URL in warc_url, CCNet's in url
                metadata = json.loads(line).get("metadata") or {}
                urls.append(metadata.get("warc_url") or metadata.get("url"))
    return sorted({u for u in urls if u and u.startswith(("http://", "https://"))})


def same_page(url: str) -> list[str]:
    parts = urlsplit(url)
    other_scheme = "https" if parts.scheme == "http" else "http"
    host = parts.hostname or ""
    toggled = host[4:] if host.startswith("www.") else "www." + host
    query = parts.query
    tracked = (query + "&" if query else "") + "utm_source=newsletter&utm_medium=email&fbclid=IwAR2x"
    port = {"http": 80, "https": 443}[parts.scheme]
    return [urlunsplit((other_scheme, parts.netloc, parts.path, query, "")),
            urlunsplit((parts.scheme, toggled, parts.path, query, "")),
            urlunsplit((parts.scheme, f"{host}:{port}", parts.path, query, "")),
            urlunsplit((parts.scheme, parts.netloc, parts.path, query, "comments")),
            urlunsplit((parts.scheme, parts.netloc, parts.path or "/", tracked, "")),
            url.split("://", 1)[1]]


def other_page(url: str) -> list[str]:
    parts = urlsplit(url)
    variants = []
    escapes = {i for m in re.finditer(r"%[0-9A-Fa-f]{2}", parts.path) for i in range(m.start(), m.end())}
    letters = [i for i, ch in enumerate(parts.path) if ch.isalpha() and i not in escapes]  # %c3 is %C3
    if letters:
        i = letters[-1]
        path = parts.path[:i] + parts.path[i].swapcase() + parts.path[i + 1:]
        variants.append(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
    for value in ("1", "2"):
        query = (parts.query + "&" if parts.query else "") + f"id={value}"
        variants.append(urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, "")))
    return variants


def key_functions() -> dict[str, object]:
    from courlan import normalize_url
    from w3lib.url import canonicalize_url

    from curation.dedup.urls import canonical_url

    def guarded(function):
        def key(url: str) -> str:
            try:
                return function(url)
            except ValueError:
                return url
        return key

    return {"ours: canonical_url": canonical_url,
            "w3lib canonicalize_url": guarded(canonicalize_url),
            "courlan normalize_url": guarded(normalize_url),
            "former: strip().lower()": lambda u: u.strip().lower()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    urls = real_urls(shared_data())
    same = [(u, v) for u in urls for v in same_page(u)]
    other = [(u, v) for u in urls for v in other_page(u)]
    every = urls + [v for _, v in same] + [v for _, v in other]
    print(f"{len(urls)} real URLs, {len(same)} same-page and {len(other)} other-page variants; "
          f"keys/s over all {len(every)}, median of {args.repeats}")
    functions = key_functions()
    print(f"\n  {'key':<26} {'real keys/s':>12} {'all keys/s':>11} {'same page met':>14} {'other page met':>15}")
    baseline = None
    for name, key in functions.items():
        real_seconds, _ = median_seconds(lambda key=key: [key(u) for u in urls * 10], args.repeats)
        seconds, _ = median_seconds(lambda key=key: [key(u) for u in every], args.repeats)
        real_rate, rate = 10 * len(urls) / real_seconds, len(every) / seconds
        baseline = baseline or real_rate
        met = sum(key(u) == key(v) for u, v in same) / len(same)
        wrong = sum(key(u) == key(v) for u, v in other) / len(other)
        print(f"  {name:<26} {real_rate:>12,.0f} {rate:>11,.0f} {met:>14.1%} {wrong:>15.1%}"
              f"   (real: {real_rate / baseline:.2f}x ours)")

if __name__ == "__main__":
    main()
