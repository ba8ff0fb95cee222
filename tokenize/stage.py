"""The tokenize stage: documents in, token shards plus a Parquet document index out.

Per input shard: documents are ordered by a seeded hash of their id (a deterministic
document-level shuffle that does not depend on how the corpus was sharded), split into train
and validation by id hash, tokenized in batches with EOS after each, and written as
``<shard>-<split>-<k>.npy`` token files of at most ``max_tokens_per_file`` tokens (documents are
never cut), each with Dolma's ``.csv.gz`` start,end metadata beside it, plus ``<shard>.parquet``:
the document index with every upstream attribute column.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from curation.tokenize.shards import (
    FORMAT_VERSION,
    load_text_tokenizer,
    pack_documents,
    special_token_texts,
    tiktoken_encoding,
    to_bytes,
    tokenizer_files,
    tokenizer_info,
)

from curation.core import io as fio
from curation.core.config import resolve_data_path
from curation.core.errors import ConfigError
from curation.core.stage import (
    OutputFile,
    ShardStats,
    ShardTask,
    Stage,
    StageContext,
    register,
    text_bytes,
    write_parquet_bytes,
)

#: Upstream columns not carried into the index (the text is in the tokens now).
_NOT_CARRIED = {"text"}
SPLITS = ("train", "validation")


@dataclass
class TokenizeConfig:
    tokenizer: str = "${CURATION_DATA:-../shared/data}/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
    eos_token: str | None = None  # default: the tokenizer's <|endoftext|> (50279 for OLMo's NeoX)
    # A special token's text inside a document ("<|endoftext|>" quoted on a page) is tokenized as
    # text, so EOS only ever ends a document; False matches it as the special id (transformers'
    # default). Documents holding such text are counted as `special_token_text` either way.
    split_special_tokens: bool = True
    text_column: str = "text"
    id_column: str = "id"
    shuffle_seed: int | None = 0  # None keeps upstream order
    validation_fraction: float = 0.0  # share of documents (by id hash) written to validation files
    max_tokens_per_file: int = 1 << 30
    batch_size: int = 1024
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        if self.max_tokens_per_file < 1:
            raise ValueError("max_tokens_per_file must be positive")


def resolve_tokenizer_path(path: str) -> str:
    candidate = resolve_data_path(path)
    if os.path.isfile(candidate) or os.path.isdir(candidate):
        try:
            tokenizer_files(candidate)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return os.path.abspath(candidate)
    raise ConfigError(f"tokenizer not found: {path} (set tokenize.tokenizer=PATH to a tokenizer.json, a tiktoken "
                      "BPE file, or a folder of GPT-2's encoder.json + vocab.bpe)")


def id_hash(ids: list[str], salt: str) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(f"{salt}:{i}".encode()) for i in ids), dtype=np.uint64, count=len(ids))


def validation_mask(ids: list[str], fraction: float) -> np.ndarray:
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    return id_hash(ids, "split") < np.uint64(int(fraction * float(1 << 64)))


def dolma_metadata(starts: np.ndarray, ends: np.ndarray) -> bytes:
    """Dolma's ``<file>.csv.gz``: one ``start,end`` line per document (gzip with mtime 0)."""
    text = "".join(f"{s},{e}\n" for s, e in zip(starts.tolist(), ends.tolist(), strict=True))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(text.encode())
    return buffer.getvalue()


class _TokenFileWriter:
    """Accumulates packed documents for one split and cuts files at document boundaries."""

    def __init__(self, stage: TokenizeStage, ctx: StageContext, shard: str, split: str, dtype: np.dtype):
        self.stage, self.ctx, self.shard, self.split, self.dtype = stage, ctx, shard, split, dtype
        self.chunks: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.size = 0
        self.file_index = 0
        self.files: list[OutputFile] = []

    @property
    def current_name(self) -> str:
        return f"{self.shard}-{self.split}-{self.file_index:03d}.npy"

    def add(self, tokens: np.ndarray, offsets: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Add one batch; returns per-document (file, start, end). Files are filled in order and
        cut before the first document that would take one over the limit (a document over the
        limit alone gets a file of its own): one step per file, not per document."""
        limit = self.stage.config.max_tokens_per_file
        lengths = np.diff(offsets)
        names = np.empty(len(lengths), dtype=object)
        starts = np.empty(len(lengths), dtype=np.int64)
        first = 0
        while first < len(lengths):
            # the documents first..last-1 fit: self.size + offsets[last] - offsets[first] <= limit
            last = int(np.searchsorted(offsets[1:], limit - self.size + offsets[first], side="right"))
            if last <= first:  # the next document does not fit (or the file is already over)
                if self.size:
                    self.flush()
                    continue
                last = first + 1
            starts[first:last] = self.size + offsets[first:last] - offsets[first]
            names[first:last] = self.current_name
            self.chunks.append(tokens[offsets[first] : offsets[last]])
            self.lengths.append(lengths[first:last])
            self.size += int(offsets[last] - offsets[first])
            first = last
        return names.tolist(), starts, starts + lengths

    def flush(self) -> None:
        if not self.chunks:
            return
        tokens = np.concatenate(self.chunks)
        lengths = np.concatenate(self.lengths)
        ends = np.cumsum(lengths)
        name = self.current_name
        self.files.append(self.stage.commit_bytes(self.ctx, name, to_bytes(tokens), len(tokens)))
        meta = name.removesuffix(".npy") + ".csv.gz"
        self.files.append(self.stage.commit_bytes(self.ctx, meta, dolma_metadata(ends - lengths, ends), len(lengths)))
        self.chunks, self.lengths, self.size = [], [], 0
        self.file_index += 1


@register("tokenize")
class TokenizeStage(Stage):
    Config = TokenizeConfig

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        path = resolve_tokenizer_path(self.config.tokenizer)
        info = tokenizer_info(path, self.config.eos_token)
        return {"format": FORMAT_VERSION, "tokenizer": dataclasses.asdict(info)}

    def setup(self, ctx: StageContext) -> None:
        self.tokenizer = load_text_tokenizer(ctx.resolved["tokenizer"]["path"], self.config.split_special_tokens)
        self.special_texts = special_token_texts(self.tokenizer)
        # a tiktoken file encodes with tiktoken itself (the same ids); its specials are text there
        self.tiktoken = tiktoken_encoding(ctx.resolved["tokenizer"]["path"]) if self.config.split_special_tokens else None

    def count_special_token_text(self, texts: pa.Array) -> int:
        """Documents (non-null texts) holding a special token's text; one vectorised pass per token."""
        holds = pa.array(np.zeros(len(texts), dtype=bool))
        for special in self.special_texts:
            holds = pc.or_(holds, pc.match_substring(texts, special))
        return int(pc.sum(holds).as_py() or 0)

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.tiktoken is not None:  # one thread per core, as the tokenizers library batches
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            return self.tiktoken.encode_ordinary_batch(texts, num_threads=cores)
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def _read_ordered(self, task: ShardTask, ctx: StageContext) -> pa.Table:
        tables = []
        for path in task.inputs:
            fs, p = fio.filesystem(path, ctx.storage)
            with fs.open(p, "rb") as handle:
                tables.append(pq.read_table(handle))
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        if self.config.shuffle_seed is not None and table.num_rows:
            ids = [str(i) for i in table.column(self.config.id_column).to_pylist()]
            order = np.argsort(id_hash(ids, f"shuffle-{self.config.shuffle_seed}"), kind="stable")
            table = table.take(pa.array(order))
        return table

    def write_shard(self, task: ShardTask, ctx: StageContext, state: None, stats: ShardStats) -> list[OutputFile]:
        info = ctx.resolved["tokenizer"]
        dtype = np.dtype(info["dtype"])
        writers = {split: _TokenFileWriter(self, ctx, task.name, split, dtype) for split in SPLITS}
        table = self._read_ordered(task, ctx)
        ids_all = [str(i) for i in table.column(self.config.id_column).to_pylist()]
        is_validation = validation_mask(ids_all, self.config.validation_fraction)
        index_batches: list[pa.RecordBatch] = []
        tokens_total = 0
        special_text_docs = 0
        for split in SPLITS:
            selected = table.filter(pa.array(is_validation if split == "validation" else ~is_validation))
            for batch in selected.to_batches(max_chunksize=self.config.batch_size):
                text_column = pc.fill_null(batch.column(self.config.text_column), "")
                special_text_docs += self.count_special_token_text(text_column)
                texts = text_column.to_pylist()
                tokens, offsets = pack_documents(self.encode(texts), info["eos_id"], dtype)
                names, starts, ends = writers[split].add(tokens, offsets)
                tokens_total += len(tokens)
                stats.docs_in += batch.num_rows
                stats.bytes_in += text_bytes(batch, self.config.text_column)
                carried = {n: batch.column(n) for n in batch.schema.names if n not in _NOT_CARRIED}
                index = {
                    "id": carried.pop(self.config.id_column),
                    "file": pa.array(names, pa.string()),
                    "start": pa.array(starts, pa.int64()),
                    "end": pa.array(ends, pa.int64()),
                    "num_tokens": pa.array(ends - starts, pa.int64()),
                    "split": pa.array([split] * batch.num_rows, pa.string()),
                    **carried,
                }
                index_batches.append(pa.RecordBatch.from_pydict(index))
            writers[split].flush()
        stats.docs_out = stats.docs_in
        stats.bytes_out = tokens_total * dtype.itemsize
        stats.extra["tokens"] = float(tokens_total)
        stats.extra["special_token_text"] = float(special_text_docs)
        files = [f for split in SPLITS for f in writers[split].files]
        schema = index_batches[0].schema if index_batches else pa.schema(
            [("id", pa.string()), ("file", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
             ("num_tokens", pa.int64()), ("split", pa.string())])
        files.append(self.commit_bytes(ctx, f"{task.name}.parquet", write_parquet_bytes(index_batches, schema), stats.docs_out))
        return files

    def funnel(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        tokens = int(manifest["totals"].get("extra", {}).get("tokens", 0))
        return [{"label": manifest["stage"], "documents": manifest["totals"]["docs_out"], "note": f"{tokens:,} tokens"}]
