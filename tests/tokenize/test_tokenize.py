"""Token shards: round trip, EOS, the Dolma/OLMo-core layout, determinism, splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import run_single_stage
from curation.tokenize.shards import dtype_for_vocab


def _docs(n: int = 300) -> list[dict]:
    import random
    import re
    from pydoc_data.topics import topics

    words = re.sub(r"\s+", " ", " ".join(topics.values())).split()
    rng = random.Random(4)
    rows = []
    for i in range(n):
        start = rng.randrange(len(words) - 400)
        text = " ".join(words[start : start + rng.randint(5, 300)])
        if i % 50 == 0:
            text += " ünïcödé — “quotes” 日本語"
        rows.append({"id": f"doc-{i}", "text": text, "language": "en", "quality": rng.random()})
    return rows


def _tokenize(rows, tmp_path: Path, tokenizer: Path, name: str, shards: int = 2, **options) -> Path:
    return run_single_stage(rows, {"kind": "tokenize", "tokenizer": str(tokenizer), **options}, tmp_path / name, shards)


def _index(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-?????.parquet"))])


def test_dtype_is_smallest_that_fits():
    assert dtype_for_vocab(256) == np.uint8 and dtype_for_vocab(257) == np.uint16
    assert dtype_for_vocab(50280) == np.uint16 and dtype_for_vocab(100278) == np.uint32


def test_round_trip_eos_and_olmo_core_layout(ray_local, tmp_path, tokenizer_path):
    from olmo_core.data import NumpyFSLDataset
    from olmo_core.data.utils import iter_document_indices
    from tokenizers import Tokenizer

    rows = _docs()
    out = _tokenize(rows, tmp_path, tokenizer_path, "tok")
    index = _index(out)
    assert index.num_rows == len(rows)
    assert {"id", "file", "start", "end", "num_tokens", "split", "language", "quality"} <= set(index.schema.names)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    texts = {r["id"]: r["text"] for r in rows}
    by_file: dict[str, list[tuple[int, int]]] = {}
    for row in index.to_pylist():
        tokens = np.memmap(out / row["file"], dtype=np.uint16, mode="r")
        span = tokens[row["start"] : row["end"]]
        assert span[-1] == 50279  # EOS after every document
        expected = tokenizer.encode(texts[row["id"]], add_special_tokens=False).ids
        assert span[:-1].tolist() == expected
        assert tokenizer.decode(span[:-1].tolist()) == tokenizer.decode(expected)
        by_file.setdefault(row["file"], []).append((row["start"], row["end"]))
    for file, spans in by_file.items():
        spans.sort()
        # OLMo-core's own readers find the same document boundaries, from Dolma's metadata file
        # and from the EOS tokens in the array.
        assert list(iter_document_indices(out / file)) == spans
        assert list(iter_document_indices(out / file, use_array_if_local=True, eos_token_id=50279, dtype=np.uint16)) == spans
        dataset = NumpyFSLDataset(out / file, sequence_length=64, pad_token_id=1, eos_token_id=50279,
                                  vocab_size=50280, dtype=np.uint16)
        dataset.work_dir = tmp_path / "olmo-work"
        dataset.prepare()
        tokens = np.memmap(out / file, dtype=np.uint16, mode="r")
        assert len(dataset) == len(tokens) // 64
        assert dataset[1]["input_ids"].tolist() == tokens[64:128].tolist()


def test_byte_identical_and_independent_of_sharding(ray_local, tmp_path, tokenizer_path):
    rows = _docs(200)
    first = _tokenize(rows, tmp_path, tokenizer_path, "a")
    second = _tokenize(rows, tmp_path, tokenizer_path, "b")
    def digests(out: Path) -> dict[str, str]:
        # Shards, indexes and metadata; the manifest differs only by the inputs' paths (lineage).
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("part-*")}

    assert digests(first) == digests(second) and len(digests(first)) == 3 * 2
    one_shard = _index(_tokenize(rows, tmp_path, tokenizer_path, "c", shards=1)).column("id").to_pylist()
    # The shuffle orders documents by a seeded hash of their id: merging shard orders by that
    # key gives the single-shard order.
    import xxhash

    key = {i: xxhash.xxh3_64_intdigest(f"shuffle-0:{i}".encode()) for i in one_shard}
    assert one_shard == sorted(one_shard, key=key.get)


def test_files_cut_at_document_boundaries_and_validation_split(ray_local, tmp_path, tokenizer_path):
    rows = _docs(200)
    out = _tokenize(rows, tmp_path, tokenizer_path, "split", shards=1, max_tokens_per_file=2000,
                    validation_fraction=0.1)
    index = _index(out).to_pylist()
    files = sorted({r["file"] for r in index})
    assert len([f for f in files if "-train-" in f]) > 3
    for file in files:
        size = (out / file).stat().st_size // 2
        spans = sorted((r["start"], r["end"]) for r in index if r["file"] == file)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert size <= 2000 or len(spans) == 1
    validation = [r for r in index if r["split"] == "validation"]
    assert 5 <= len(validation) <= 40
    assert all("-validation-" in r["file"] for r in validation)
