"""The tokenize stage: documents in, token shards plus a Parquet document index out."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from curation.tokenize.shards import FORMAT_VERSION, pack_documents, to_bytes, tokenizer_info

from curation.core import io as fio
from curation.core.config import expand_env
from curation.core.errors import ConfigError
from curation.core.stage import (
    ShardReceipt,
    ShardStats,
    ShardTask,
    Stage,
    StageContext,
    register,
    write_parquet_bytes,
)

#: Upstream columns not carried into the index (the text is in the tokens now).
_NOT_CARRIED = {"text"}


@dataclass
class TokenizeConfig:
    tokenizer: str = "${CURATION_DATA:-../shared/data}/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
    eos_token: str | None = None  # default: the tokenizer's <|endoftext|> (50279 for OLMo's NeoX)
    text_column: str = "text"
    batch_size: int = 1024
    num_cpus: float = 1.0


def resolve_tokenizer_path(path: str) -> str:
    path = expand_env(path)
    candidates = [path]
    if not os.path.isabs(path):
        from curation.core.ray_exec import checkout_root

        root = checkout_root()
        if root is not None:
            candidates.append(str(root / path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ConfigError(f"tokenizer not found: {path} (set tokenize.tokenizer=PATH to a tokenizer.json)")


@register("tokenize")
class TokenizeStage(Stage):
    Config = TokenizeConfig

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        path = resolve_tokenizer_path(self.config.tokenizer)
        info = tokenizer_info(path, self.config.eos_token)
        return {"format": FORMAT_VERSION, "tokenizer": dataclasses.asdict(info)}

    def setup(self) -> None:
        self._tokenizer = None

    def _load(self, ctx: StageContext):
        if getattr(self, "_tokenizer", None) is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(ctx.resolved["tokenizer"]["path"])
        return self._tokenizer

    def encode(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def run_shard(self, task: ShardTask, ctx: StageContext) -> ShardReceipt:
        start = time.perf_counter()
        self._load(ctx)
        info = ctx.resolved["tokenizer"]
        dtype = np.dtype(info["dtype"])
        stats = ShardStats(shard=task.name)
        token_chunks: list[np.ndarray] = []
        index_batches: list[pa.RecordBatch] = []
        position = 0
        token_file = f"{task.name}.npy"
        for path in task.inputs:
            fs, p = fio.filesystem(path, ctx.storage)
            with fs.open(p, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=self.config.batch_size):
                    texts = pc.fill_null(batch.column(self.config.text_column), "").to_pylist()
                    tokens, offsets = pack_documents(self.encode(texts), info["eos_id"], dtype)
                    token_chunks.append(tokens)
                    starts = offsets[:-1] + position
                    ends = offsets[1:] + position
                    position += len(tokens)
                    stats.docs_in += batch.num_rows
                    stats.bytes_in += sum(len(t.encode()) for t in texts)
                    carried = {name: batch.column(name) for name in batch.schema.names if name not in _NOT_CARRIED}
                    index = {
                        "id": carried.pop("id"),
                        "file": pa.array([token_file] * batch.num_rows, pa.string()),
                        "start": pa.array(starts, pa.int64()),
                        "end": pa.array(ends, pa.int64()),
                        "num_tokens": pa.array(ends - starts, pa.int64()),
                        **carried,
                    }
                    index_batches.append(pa.RecordBatch.from_pydict(index))
        tokens = np.concatenate(token_chunks) if token_chunks else np.array([], dtype=dtype)
        stats.docs_out = stats.docs_in
        stats.bytes_out = tokens.nbytes
        stats.extra["tokens"] = float(len(tokens))
        token_out = self.commit_bytes(ctx, token_file, to_bytes(tokens), len(tokens))
        schema = index_batches[0].schema if index_batches else pa.schema(
            [("id", pa.string()), ("file", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
             ("num_tokens", pa.int64())])
        index_out = self.commit_bytes(ctx, f"{task.name}.parquet", write_parquet_bytes(index_batches, schema),
                                      stats.docs_out)
        stats.seconds = round(time.perf_counter() - start, 3)
        return ShardReceipt(key=ctx.key, shard=task.name, files=[token_out, index_out], stats=stats)
