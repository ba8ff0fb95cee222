"""Training data: a deterministic stream of fixed-length windows over memory-mapped token spans.

``--data`` is a mix directory (``mix.json``: file spans with repeats) or a tokenize output
directory (every train file, once). Spans are expanded by their repeat count and ordered by a
seeded shuffle; the stream is their concatenation, and window i is tokens
[i*S, (i+1)*S + 1) of it (inputs and shifted targets). Spans start and end at document
boundaries, so documents are only ever split by the window grid, never by the reader, and the
EOS after each document separates them as in OLMo's packed data. Nothing is read until a window
is requested; position = windows consumed, which makes resume exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curation.core.errors import CurationError
from curation.core.layout import find_stage
from curation.tokenize.shards import open_tokens


@dataclass
class DataInfo:
    files: list[str]
    starts: np.ndarray
    ends: np.ndarray
    dtype: np.dtype
    vocab_size: int
    eos_id: int
    tokenizer: str
    lineage: dict


def load_data(path: str | Path, seed: int = 0, split: str = "train") -> DataInfo:
    path = Path(path)
    if (path / "mix.json").is_file():
        if split != "train":
            raise CurationError("a mix holds training spans; evaluate on the tokenize output's validation split")
        mix = json.loads((path / "mix.json").read_text())
        spans = [(s["file"], s["start"], s["end"]) for s in mix["spans"] for _ in range(int(s["repeat"]))]
        spans = [(str((path / f) if not Path(f).is_absolute() else Path(f)), a, b) for f, a, b in spans]
        _, manifest = find_stage(str(Path(spans[0][0]).parent), kind="tokenize")
        lineage = {"mix": mix["name"], "mix_total_tokens": mix["total_tokens"]}
    else:
        found, manifest = find_stage(str(path), kind="tokenize")
        directory = Path(found)
        spans = []
        for entry in manifest["files"]:
            if entry["name"].endswith(".npy") and f"-{split}-" in entry["name"]:
                spans.append((str(directory / entry["name"]), 0, entry["rows"]))
        lineage = {"tokenize_key": manifest["key"]}
    if not spans:
        raise CurationError(f"{path}: no {split} tokens")
    order = np.random.default_rng(seed).permutation(len(spans))
    spans = [spans[i] for i in order]
    tokenizer = manifest["resolved"]["tokenizer"]
    return DataInfo(
        files=[s[0] for s in spans], starts=np.array([s[1] for s in spans], dtype=np.int64),
        ends=np.array([s[2] for s in spans], dtype=np.int64), dtype=np.dtype(tokenizer["dtype"]),
        vocab_size=int(tokenizer["vocab_size"]), eos_id=int(tokenizer["eos_id"]), tokenizer=tokenizer["path"],
        lineage=lineage,
    )


class TokenStream:
    def __init__(self, info: DataInfo, seq_len: int):
        self.info, self.seq_len = info, seq_len
        lengths = info.ends - info.starts
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])  # stream position of each span
        self.total = int(self.offsets[-1])
        self._maps: dict[str, np.memmap] = {}

    def __len__(self) -> int:
        """Whole windows available in one pass."""
        return max((self.total - 1) // self.seq_len, 0)

    def _tokens(self, begin: int, end: int) -> np.ndarray:
        """Stream tokens [begin, end), wrapping around at the end of the stream."""
        out = np.empty(end - begin, dtype=np.int64)
        filled, position = 0, begin
        while filled < len(out):
            position %= self.total
            span = int(np.searchsorted(self.offsets, position, side="right")) - 1
            within = position - self.offsets[span]
            take = min(len(out) - filled, int(self.offsets[span + 1] - position))
            file = self.info.files[span]
            if file not in self._maps:
                self._maps[file] = open_tokens(file, self.info.dtype)
            start = int(self.info.starts[span] + within)
            out[filled : filled + take] = self._maps[file][start : start + take]
            filled += take
            position += take
        return out

    def raw_window(self, index: int) -> np.ndarray:
        """The S+1 tokens of window ``index``."""
        begin = index * self.seq_len
        return self._tokens(begin, begin + self.seq_len + 1)

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.raw_window(index)
        return tokens[:-1], tokens[1:]

    def batch(self, position: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows [position*B, (position+1)*B): inputs and targets, (B, S) int64."""
        pairs = [self.window(position * batch_size + i) for i in range(batch_size)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        return x, y
