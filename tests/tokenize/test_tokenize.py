"""Token shards: round trip, EOS, the Dolma/OLMo-core layout, determinism, splits."""

from __future__ import annotations

import functools
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import run_single_stage
from curation.tokenize.shards import dtype_for_vocab
from hypothesis import given, settings
from hypothesis import strategies as st


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


def test_special_token_text_in_a_document_is_text_and_counted(ray_local, tmp_path, tokenizer_path):
    """A page quoting "<|endoftext|>" must not put EOS inside its document: OLMo-core's readers
    that find documents by EOS in the array would cut it there."""
    import json

    from olmo_core.data.utils import iter_document_indices

    quoting = ["Models end a sample with <|endoftext|> and pad with <|padding|>.", "<|endoftext|>",
               "a<|endoftext|><|endoftext|>b"]
    rows = [{"id": f"q{i}", "text": t} for i, t in enumerate(quoting)] + _docs(40)
    out = _tokenize(rows, tmp_path, tokenizer_path, "special", shards=1)
    index = _index(out).to_pylist()
    file = index[0]["file"]
    tokens = np.memmap(out / file, dtype=np.uint16, mode="r")
    texts = {r["id"]: r["text"] for r in rows}
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    for row in index:
        span = tokens[row["start"] : row["end"]].tolist()
        assert span[-1] == 50279 and 50279 not in span[:-1] and 1 not in span[:-1]
        assert tokenizer.decode(span[:-1], skip_special_tokens=False) == texts[row["id"]]
    spans = sorted((r["start"], r["end"]) for r in index)
    assert list(iter_document_indices(out / file, use_array_if_local=True, eos_token_id=50279, dtype=np.uint16)) == spans
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["totals"]["extra"]["special_token_text"] == len(quoting)

    # The transformers default, when asked for: the quoted text becomes the special ids.
    matched = _tokenize(rows, tmp_path, tokenizer_path, "matched", shards=1, split_special_tokens=False)
    by_id = {r["id"]: r for r in _index(matched).to_pylist()}
    raw = np.memmap(matched / by_id["q1"]["file"], dtype=np.uint16, mode="r")
    assert raw[by_id["q1"]["start"] : by_id["q1"]["end"]].tolist() == [50279, 50279]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["<|endoftext|>", "<|im_start|>", "<|fim_middle|>",
                                                                    "|||EMAIL_ADDRESS|||", "<|endoftext", "|>"])),
                max_size=8))
def test_document_text_never_encodes_to_a_special_id(shared_data, pieces):
    from curation.tokenize.shards import special_token_texts

    text = "".join(pieces)
    for name in ("allenai_gpt-neox-olmo-dolma-v1_5.json", "allenai_dolma2.json", "gpt2_tokenizer.json"):
        tokenizer = _text_tokenizer(str(shared_data / "tokenizers" / name))
        special = {tokenizer.token_to_id(t) for t in special_token_texts(tokenizer)}
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert not special & set(ids)
        if "|||EMAIL_ADDRESS|||" in text and name == "allenai_dolma2.json":
            assert tokenizer.token_to_id("|||EMAIL_ADDRESS|||") in ids  # Dolma's PII mask stays one token



@functools.cache
def _text_tokenizer(path: str):
    from curation.tokenize.shards import load_text_tokenizer

    return load_text_tokenizer(path)


class _CommittedBytes:
    """What `_TokenFileWriter` needs of a stage: its limit, and a commit that records the bytes."""

    def __init__(self, max_tokens_per_file: int):
        from types import SimpleNamespace

        self.config = SimpleNamespace(max_tokens_per_file=max_tokens_per_file)
        self.files: dict[str, bytes] = {}

    def commit_bytes(self, ctx, name: str, data: bytes, count: int) -> str:
        assert name not in self.files  # a file is written once
        self.files[name] = data
        return name


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(st.lists(st.integers(0, 50_000), max_size=12), max_size=10), max_size=5),
       limit=st.integers(1, 40))
def test_token_files_are_cut_at_document_boundaries_and_match_the_index(batches, limit):
    """Whatever the documents and the file limit: each document lies whole in one file, EOS last; a
    file exceeds the limit only when it holds a single document that does alone; files are filled in
    order (the next document would not have fitted); and each file's Dolma csv.gz lists exactly the
    index's spans in it."""
    import gzip

    from curation.tokenize.shards import pack_documents
    from curation.tokenize.stage import _TokenFileWriter

    eos = 50_279
    dtype = dtype_for_vocab(50_280)
    stage = _CommittedBytes(limit)
    writer = _TokenFileWriter(stage, None, "part-00000", "train", dtype)
    spans = []
    for documents in batches:
        tokens, offsets = pack_documents(documents, eos, dtype)
        assert tokens.dtype == dtype and offsets[-1] == len(tokens)
        names, starts, ends = writer.add(tokens, offsets)
        spans += list(zip(documents, names, starts.tolist(), ends.tolist(), strict=True))
    writer.flush()
    arrays = {n: np.frombuffer(b, dtype=dtype) for n, b in stage.files.items() if n.endswith(".npy")}
    assert sorted(arrays) == [f"part-00000-train-{k:03d}.npy" for k in range(len(arrays))]
    by_file: dict[str, list[tuple[int, int]]] = {}
    for ids, name, start, end in spans:
        assert arrays[name][start:end].tolist() == [*ids, eos]
        by_file.setdefault(name, []).append((start, end))
    names = sorted(arrays)
    for k, name in enumerate(names):
        held = by_file[name]
        assert held[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(held)) and held[-1][1] == len(arrays[name])
        assert len(arrays[name]) <= limit or len(held) == 1
        if k + 1 < len(names):  # the next file's first document did not fit in this one
            first_next = by_file[names[k + 1]][0]
            assert len(arrays[name]) + first_next[1] - first_next[0] > limit
        listed = gzip.decompress(stage.files[name.removesuffix(".npy") + ".csv.gz"]).decode().splitlines()
        assert listed == [f"{s},{e}" for s, e in held]
    assert sum(len(a) for a in arrays.values()) == sum(len(ids) + 1 for ids, *_ in spans)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["<|endoftext|>", "<|padding|>", "'s", "'LL", "  ", "\r\n",
                                                                    "\u00a0", "\u3000", "😀", " 123"])), max_size=10))
def test_tokenizer_files_in_other_forms_give_their_own_ids(shared_data, pieces):
    """A tiktoken BPE file (DCLM's tokshuf-rs GPT-NeoX-20B ranks) encodes every text as tiktoken's
    own `encode_ordinary` does with GPT-2's pattern; GPT-2's original encoder.json + vocab.bpe as
    its tokenizer.json does; a special token's text in either is text, and decodes back."""
    text = "".join(pieces)
    ranks = str(shared_data / "tokenizers" / "EleutherAI_gpt-neox-20b.tiktoken")
    peer = _tiktoken_encoding(ranks)
    ours = _text_tokenizer(ranks).encode(text, add_special_tokens=False).ids
    assert ours == peer.encode_ordinary(text)
    gpt2_files = _text_tokenizer(str(shared_data / "tokenizers" / "gpt2_openai")).encode(text, add_special_tokens=False).ids
    assert gpt2_files == _text_tokenizer(str(shared_data / "tokenizers" / "gpt2_tokenizer.json")).encode(
        text, add_special_tokens=False).ids
    assert _text_tokenizer(ranks).decode(ours, skip_special_tokens=False) == text or "\ufffd" in text


@functools.cache
def _tiktoken_encoding(path: str):
    """tiktoken's own reading of the ranks, with tiktoken's own GPT-2 (r50k) pattern."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    return tiktoken.Encoding("neox-ranks", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(path), special_tokens={})


def test_the_stage_writes_shards_with_a_tiktoken_file_or_gpt2s_own_files(ray_local, tmp_path, shared_data):
    """The stage takes the other forms as it takes a tokenizer.json: EOS found among the specials
    (the NeoX ranks put <|endoftext|> at 0), the index's spans decode to the documents, and the
    manifest's tokenizer hash covers both of GPT-2's files."""
    from curation.tokenize.shards import load_text_tokenizer, tokenizer_info

    rows = _docs(60)
    rows[3]["text"] = "a page quoting <|endoftext|> and <|padding|> in its text"
    for name, eos in [("EleutherAI_gpt-neox-20b.tiktoken", 0), ("gpt2_openai", 50256)]:
        path = shared_data / "tokenizers" / name
        info = tokenizer_info(str(path))
        assert info.eos_id == eos and info.dtype == "<u2"
        out = _tokenize(rows, tmp_path, path, name, shards=1)
        index = _index(out)
        tokenizer = load_text_tokenizer(str(path))
        texts = {r["id"]: r["text"] for r in rows}
        for row in index.to_pylist():
            ids = np.memmap(out / row["file"], dtype=np.uint16, mode="r")[row["start"] : row["end"]].tolist()
            assert ids[-1] == eos and eos not in ids[:-1]
            assert tokenizer.decode(ids[:-1], skip_special_tokens=False) == texts[row["id"]]
    gpt2 = shared_data / "tokenizers" / "gpt2_openai"
    both = hashlib.sha256((gpt2 / "encoder.json").read_bytes() + (gpt2 / "vocab.bpe").read_bytes()).hexdigest()
    assert tokenizer_info(str(gpt2)).sha256 == both


def test_a_tokenizer_folder_without_known_files_is_a_config_error(tmp_path):
    import pytest
    from curation.tokenize.stage import resolve_tokenizer_path

    from curation.core.errors import ConfigError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without tokenizer.json, encoder.json"):
        resolve_tokenizer_path(str(tmp_path / "empty"))


def test_a_model_folder_is_read_by_its_tokenizer_json_before_its_slow_files(tmp_path, shared_data):
    """A Hugging Face model folder holds both; the fast tokenizer.json is the one with the
    model's added tokens (here NeoX's, against GPT-2's slow files beside it)."""
    import shutil

    from curation.tokenize.shards import tokenizer_files, tokenizer_info

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(shared_data / "tokenizers" / "gpt2_openai" / name, folder / name)
    assert tokenizer_info(str(folder)).eos_id == 50256 and len(tokenizer_files(str(folder))) == 2
    shutil.copy(shared_data / "tokenizers" / "allenai_gpt-neox-olmo-dolma-v1_5.json", folder / "tokenizer.json")
    assert tokenizer_files(str(folder)) == [folder / "tokenizer.json"]
    assert tokenizer_info(str(folder)).eos_id == 50279
