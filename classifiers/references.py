"""Reference sets: positive (high-quality) and negative texts for training quality classifiers.

Readers: JSONL(.gz/.zst) and JSON lists of records (the ``text`` field, or every string field
joined, as for instruction data), Parquet (``text``), and plain text files with one document per
blank-line-separated paragraph (as WikiText). Normalisation for fastText (stated in every model
card): whitespace collapsed to single spaces, lowercased. Splits are by a seeded hash of the text,
so they do not depend on file order.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import xxhash

from curation.core.config import resolve_data_path
from curation.core.errors import ConfigError

_BLANK_LINES = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s+")


def expand(patterns: list[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        pattern = resolve_data_path(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise ConfigError(f"reference input not found: {pattern}")
        files += matches
    return files


def _record_text(record: Any, text_field: str) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if isinstance(record.get(text_field), str):
            return record[text_field]
        parts = [v for v in record.values() if isinstance(v, str) and v.strip()]
        return "\n\n".join(parts) if parts else None
    return None


def read_texts(path: str, text_field: str = "text") -> list[str]:
    name = path.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [t for t in pq.read_table(path, columns=[text_field]).column(text_field).to_pylist() if t]
    opener = gzip.open if name.endswith(".gz") else open
    if name.endswith(".zst"):
        import io

        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb")).read()  # noqa: SIM115
        handle = io.StringIO(raw.decode("utf-8"))
    else:
        handle = opener(path, "rt", encoding="utf-8")
    with handle:
        if ".jsonl" in name or ".ndjson" in name:
            texts = [_record_text(json.loads(line), text_field) for line in handle if line.strip()]
        elif name.removesuffix(".gz").endswith(".json"):
            data = json.load(handle)
            texts = [_record_text(r, text_field) for r in (data if isinstance(data, list) else [data])]
        else:
            texts = _BLANK_LINES.split(handle.read())
    return [t.strip() for t in texts if t and t.strip()]


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def normalize_array(texts):
    """``normalize`` over an Arrow string column, vectorised, for fastText's ``predict``: fastText
    splits tokens on any whitespace, so lowercasing and turning newlines (which ``predict``
    refuses) into spaces gives the same tokens as ``normalize`` without a regex pass."""
    import pyarrow.compute as pc

    texts = pc.fill_null(texts, "")
    return pc.utf8_lower(pc.replace_substring(texts, "\n", " "))


@dataclass
class ReferenceSplit:
    train_positive: list[str] = field(default_factory=list)
    train_negative: list[str] = field(default_factory=list)
    test_positive: list[str] = field(default_factory=list)
    test_negative: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        def digest(texts: list[str]) -> str:
            h = hashlib.sha256()
            for t in texts:
                h.update(t.encode())
                h.update(b"\0")
            return h.hexdigest()

        return {
            name: {"documents": len(texts), "sha256": digest(texts)}
            for name, texts in (("train_positive", self.train_positive), ("train_negative", self.train_negative),
                                ("test_positive", self.test_positive), ("test_negative", self.test_negative))
        }


def split_references(positives: list[str], negatives: list[str], heldout_fraction: float, seed: int,
                     max_per_class: int | None, min_words: int) -> ReferenceSplit:
    """Filter short texts, cap each class (a seeded-hash sample), and split train/test by hash."""
    out = ReferenceSplit()
    threshold = int(heldout_fraction * (1 << 64))
    for texts, train, test in ((positives, out.train_positive, out.test_positive),
                               (negatives, out.train_negative, out.test_negative)):
        keyed = sorted({t for t in texts if len(t.split()) >= min_words},
                       key=lambda t: xxhash.xxh3_64_intdigest(f"{seed}:{t}".encode()))
        if max_per_class:
            keyed = keyed[:max_per_class]
        for text in keyed:
            (test if xxhash.xxh3_64_intdigest(f"split:{seed}:{text}".encode()) < threshold else train).append(text)
    if not out.train_positive or not out.train_negative:
        raise ConfigError("reference set: both classes need training documents "
                          f"(positives {len(out.train_positive)}, negatives {len(out.train_negative)})")
    return out
