"""Sentence embeddings for the embedding quality scorer, fed for throughput.

- ``TokenBatcher`` is the CPU side: texts to padded, length-sorted batches of token ids (numpy). It
  is picklable, so worker processes can run it next to the model.
- ``SentenceEncoder`` is the model side: a local sentence-transformers model run as its modules run
  it (Transformer -> mean Pooling -> Normalize), in bf16 on a GPU.

On a GPU the tokenizer, not the model, bounds the rate (BENCHMARKS, issue 12), hence two savings:
a long text is tokenized from a prefix only, and text whose characters a BERT normalizer would
only lower-case skips the normalizer (about 30% of the tokenizer's time) for Python's ``lower``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import unicodedata
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

# Characters from here on are never taken by the normalizer shortcut (CJK is spaced out by BERT's
# normalizer; the rest is rare in the text this scores).
_SHORTCUT_LIMIT = 0x3000


def _whitespace_prefix(text: str, limit: int) -> str:
    """``text`` cut before the last whitespace within ``limit`` characters (whole if none)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit), text.rfind("\t", 0, limit))
    return text[:cut] if cut > 0 else text


def _char_class(codes: list[int]) -> str:
    """A regular-expression character class body for sorted code points, as ranges."""
    parts, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        parts.append(f"\\U{codes[i]:08x}" + (f"-\\U{codes[j]:08x}" if j > i else ""))
        i = j + 1
    return "".join(parts)


def normalizer_shortcut(tokenizer) -> tuple[object, re.Pattern, bool] | None:
    """For a BERT-style tokenizer: (the same tokenizer without its normalizer, a pattern that finds
    any character the shortcut would not treat as the normalizer does, or a special token written
    in the text, whether to lower-case).

    A character is safe when the normalizer maps it, alone, to its Python lower case (or, for a
    space-like character, to a space that the pre-tokenizer splits on as it splits on the
    character itself). BERT's normalizer works character by character (control characters
    dropped, CJK spaced, accents stripped after NFD, then lower case), so a text of safe characters
    without combining marks normalizes to ``text.lower()``. The capital sigma is left out because
    Python lower-cases it by its context."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    normalizer, pre_tokenizer = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if normalizer.get("type") != "BertNormalizer" or pre_tokenizer.get("type") != "BertPreTokenizer":
        return None
    lower = bool(normalizer.get("lowercase", True))
    safe = []
    for code in range(_SHORTCUT_LIMIT):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or char == "\u03a3" or unicodedata.combining(char):
            continue
        normalized, expected = tokenizer.normalizer.normalize_str(char), char.lower() if lower else char
        if normalized == expected or (
                normalized == " " and char.lower() == char
                and [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(f"a{char}b")] == ["a", "b"]):
            safe.append(code)
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.normalizer = None
    # special tokens written in a text ("[SEP]") are matched in the raw text, before lower case: the
    # whole path for those (a 10x run of the property test found "[SEP]" split into "[", "sep", "]")
    raw_tokens = sorted({t["content"] for t in spec.get("added_tokens", []) if not t.get("normalized", True)},
                        key=len, reverse=True)
    unsafe = "|".join([f"[^{_char_class(safe)}]", *map(re.escape, raw_tokens)])
    return plain, re.compile(unsafe), lower


class TokenBatcher:
    """Texts to padded, length-sorted token-id batches of a Hugging Face fast tokenizer, holding each
    text's first ``max_seq_length`` ids exactly as the whole text's encoding has them.

    A long text is encoded from a prefix cut at whitespace that yields a full window of tokens
    (whitespace is a hard token boundary, so those are exactly the whole text's first tokens); a
    prefix that falls short is widened from the text's own characters per token, then dropped.
    Batches are sized by tokens, not documents, so padding stays small; ``width_multiple`` rounds
    a batch's width up (8 or 16: fewer distinct shapes for a GPU's per-shape kernel plans)."""

    CHARS_PER_TOKEN = 6  # first prefix: 6 characters per token (English web text averages about 4.6)

    def __init__(self, tokenizer_json: str, max_seq_length: int, pad_id: int, batch_tokens: int,
                 width_multiple: int = 1):
        self.tokenizer_json, self.max_seq_length = tokenizer_json, max_seq_length
        self.pad_id, self.batch_tokens, self.width_multiple = pad_id, batch_tokens, max(1, width_multiple)
        self._load()

    def _load(self) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()
        self.shortcut = normalizer_shortcut(self.tokenizer)

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("tokenizer_json", "max_seq_length", "pad_id", "batch_tokens",
                                               "width_multiple")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of whole texts (truncated to the window)."""
        if self.shortcut is None:
            return [e.ids for e in self.tokenizer.encode_batch_fast(texts)]
        plain_tokenizer, unsafe, lower = self.shortcut
        plain, rest = [], []
        for i, text in enumerate(texts):
            (rest if unsafe.search(text) else plain).append(i)
        ids: list[list[int]] = [[]] * len(texts)
        if plain:
            inputs = [texts[i].lower() if lower else texts[i] for i in plain]
            for i, encoding in zip(plain, plain_tokenizer.encode_batch_fast(inputs), strict=True):
                ids[i] = encoding.ids
        if rest:
            for i, encoding in zip(rest, self.tokenizer.encode_batch_fast([texts[i] for i in rest]), strict=True):
                ids[i] = encoding.ids
        return ids

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's first ``max_seq_length`` token ids (special tokens included), as for the whole text."""
        window = self.max_seq_length
        cut = [_whitespace_prefix(t, window * self.CHARS_PER_TOKEN) for t in texts]
        ids = self.encode(cut)
        for attempt in range(2):
            short = [i for i, t in enumerate(texts) if len(ids[i]) < window and len(cut[i]) < len(t)]
            if not short:
                break
            for i in short:  # widen from the text's own characters per token, then take it whole
                wider = int(len(cut[i]) * 1.5 * window / max(len(ids[i]), 1)) + 64
                cut[i] = _whitespace_prefix(texts[i], wider) if attempt == 0 else texts[i]
            for i, token_ids in zip(short, self.encode([cut[i] for i in short]), strict=True):
                ids[i] = token_ids
        return ids

    def ragged(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(lengths (N,) int32, every text's ids end to end (sum of lengths,) int32): what a
        tokenizer process sends back, a quarter of the bytes of padded int64 batches and masks."""
        import itertools

        ids = self.token_ids(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        return lengths, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))

    def batches(self, texts: list[str], first_row: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """[(row numbers from ``first_row``, ids (B, S) int64, lengths (B,) int64)], longest first."""
        return self.sorted_batches(*self.ragged(texts), first_row=first_row)

    def sorted_batches(self, lengths: np.ndarray, flat: np.ndarray,
                       first_row: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``ragged``'s output (of one text list, or of several end to end) as padded batches of at
        most ``batch_tokens`` tokens, longest texts first (the first batch sizes the memory)."""
        lengths = lengths.astype(np.int64)
        offsets = np.cumsum(lengths) - lengths
        order = np.argsort(-lengths, kind="stable")
        out, i = [], 0
        while i < len(order):
            longest = max(int(lengths[order[i]]), 1)
            width = min(-(-longest // self.width_multiple) * self.width_multiple, max(longest, self.max_seq_length))
            rows = order[i : i + max(1, self.batch_tokens // width)]
            columns = np.arange(width)
            mask = columns[None, :] < lengths[rows][:, None]  # (B, S)
            batch_ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
            batch_ids[mask] = flat[(offsets[rows][:, None] + columns[None, :])[mask]]
            out.append((rows + first_row, batch_ids, lengths[rows]))
            i += len(rows)
        return out


_PROCESS_BATCHER: TokenBatcher | None = None


def _start_tokenizer_process(tokenizer_file: str, max_seq_length: int, pad_id: int, batch_tokens: int,
                             width_multiple: int) -> None:
    global _PROCESS_BATCHER
    os.environ["RAYON_NUM_THREADS"] = "1"  # the processes are the parallelism; one Rust thread each
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(tokenizer_file, encoding="utf-8") as handle:
        _PROCESS_BATCHER = TokenBatcher(handle.read(), max_seq_length, pad_id, batch_tokens, width_multiple)


def _tokenizer_process_ready() -> bool:
    return _PROCESS_BATCHER is not None


def _ragged_in_process(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _PROCESS_BATCHER is not None
    return _PROCESS_BATCHER.ragged(texts)


def tokenizer_process_pool(batcher: TokenBatcher, processes: int) -> ProcessPoolExecutor:
    """``processes`` spawned workers that each hold a copy of ``batcher`` (for ``_ragged_in_process``),
    all started before it returns; raises ``BrokenProcessPool`` when they cannot start."""
    import hashlib
    import multiprocessing

    from curation.core import io as fio

    # The tokenizer goes to the processes as a file, not an argument: CPython's spawn writes
    # arguments into a pipe and blocks for good when a child dies before reading them all.
    # The file is named by its content in the local cache, so it is written once per machine.
    data = batcher.tokenizer_json.encode()
    tokenizer_file = os.path.join(fio.cache_root(), "tokenizers", hashlib.sha256(data).hexdigest() + ".json")
    if not os.path.isfile(tokenizer_file):
        fio.write_atomic(tokenizer_file, data)
    # spawn: the parent may hold CUDA state, which a fork must not inherit
    pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"), initializer=_start_tokenizer_process,
                               initargs=(tokenizer_file, batcher.max_seq_length, batcher.pad_id, batcher.batch_tokens,
                                         batcher.width_multiple))
    try:
        for ready in [pool.submit(_tokenizer_process_ready) for _ in range(processes)]:
            ready.result()
    except BrokenProcessPool:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return pool


@contextlib.contextmanager
def _progress_bar(active: bool, total: int, description: str):
    """A transient rich progress bar on stderr; yields ``advance(documents)`` (a no-op when inactive)."""
    if not active:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_tokenizer_processes(cpus: int, gpus: int) -> int:
    """Tokenizer processes for one GPU's encoder: its share of the machine's CPUs but one (for the
    process feeding the GPU), at least one, at most 16 (about what one H200's MiniLM takes)."""
    return max(1, min(16, cpus // max(1, gpus) - 1))


def gpus_on_this_node() -> int:
    """The GPUs of this machine: in a Ray worker as Ray counts the node's (an actor sees only its
    own through CUDA_VISIBLE_DEVICES, while its siblings on the node share the CPUs), else CUDA's."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            node = ray.get_runtime_context().get_node_id()
            for entry in ray.nodes():
                if entry.get("NodeID") == node and entry.get("Alive", True):
                    return int(entry.get("Resources", {}).get("GPU", 0))
        except Exception:  # an older Ray, or no view of the cluster from here: CUDA's count
            pass
    import torch

    return torch.cuda.device_count()


class SentenceEncoder:
    """Sentence embeddings of a local sentence-transformers model, computed as its modules do
    (Transformer -> mean Pooling -> Normalize) but fed for throughput:

    - texts go through in windows of ``WINDOW_DOCS``: a window is tokenized in chunks across the
      tokenizer workers while the model runs the window before it, then sorted by length as one
      and cut into batches sized by tokens, not documents (padding 1.09x of the real tokens on
      the fixtures' web text, against 1.22x for batches sorted within chunks of 1,024);
    - the workers are processes on a GPU machine, where tokenization bounds the rate and Python's
      share of it would serialize threads (``tokenizer_processes``; default this GPU's share of
      the machine's CPUs but one, up to 16), threads otherwise (the Rust tokenizer releases the
      GIL and uses every core). The processes are spawned: a script that scores must guard its
      entry with ``if __name__ == "__main__":``, or the encoder warns and uses threads;
    - ``embed_stream`` keeps the pipeline full across calls (a stage's record batches): the next
      list's windows are tokenized while the model runs this one's, and a list's vectors come
      back once the list after it is on the device, so the GPU is not left idle by the copy back;
    - on a GPU the model runs in bf16 with PyTorch's SDPA attention, inputs copied from pinned
      memory without blocking, masks built on the device from the lengths.

    ``compile_model`` runs the model through ``torch.compile`` with dynamic shapes (same vectors;
    the first batches pay for the compile).

    Models with another pooling than mean go through ``SentenceTransformer.encode``.
    """

    WINDOW_DOCS = 4096
    CHUNK_DOCS = 1024
    MIN_CHUNK_DOCS = 32
    WINDOWS_AHEAD = 2
    PROGRESS_DOCS = 2048
    TOKENIZER_THREADS = 4

    def __init__(self, model_path: str, max_seq_length: int, fallback_batch_size: int = 64,
                 batch_tokens: int | None = None, tokenizer_processes: int | None = None, width_multiple: int = 1,
                 compile_model: bool = False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = torch_device()
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.st = SentenceTransformer(model_path, device=self.device, model_kwargs={"dtype": dtype})
        self.st.max_seq_length = max_seq_length
        # Big batches feed a GPU; on a CPU small ones stay in cache (4k tokens: 1.8x faster than 64k here)
        batch_tokens = batch_tokens or (65536 if self.device == "cuda" else 4096)
        self.max_seq_length, self.batch_tokens, self.fallback_batch_size = max_seq_length, batch_tokens, fallback_batch_size
        if tokenizer_processes is None:  # on a CPU the model is the bottleneck and wants the cores
            tokenizer_processes = default_tokenizer_processes(available_cpus(), gpus_on_this_node()) \
                if self.device == "cuda" else 0
        self.tokenizer_processes = max(0, tokenizer_processes)
        self._processes: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.last_timing: dict[str, float] = {}
        self._mask_4d = True  # see _pool
        modules = [type(m).__name__ for m in self.st]
        pooling = self.st[1].get_config_dict().get("pooling_mode") if len(modules) > 1 else None
        self.fast = modules[:2] == ["Transformer", "Pooling"] and pooling == "mean" and \
            hasattr(self.st[0].tokenizer, "backend_tokenizer")
        self.normalize = "Normalize" in modules
        if self.fast:
            self.model = self.st[0].auto_model.eval()
            if compile_model:  # one graph for every batch shape (dynamic); unmeasured on a GPU so far, so off by default
                self.model = torch.compile(self.model, dynamic=True)
            self.batcher = TokenBatcher(self.st[0].tokenizer.backend_tokenizer.to_str(), max_seq_length,
                                        self.st[0].tokenizer.pad_token_id or 0, batch_tokens, width_multiple)
            self.tokenizer = self.batcher.tokenizer

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.batcher.token_ids(texts)

    def _tokenizer_pool(self) -> tuple[Executor, bool]:
        with self._pool_lock:  # streams may run in threads at once (a stage's concurrent shards)
            return self._tokenizer_pool_locked()

    def _tokenizer_pool_locked(self) -> tuple[Executor, bool]:
        if not self.tokenizer_processes:
            return ThreadPoolExecutor(self.TOKENIZER_THREADS), True
        if self._processes is None:
            try:  # started now, to fall back to threads here if they cannot start
                pool = tokenizer_process_pool(self.batcher, self.tokenizer_processes)
            except BrokenProcessPool:
                warnings.warn("tokenizer processes did not start, so the embedding scorer tokenizes in threads. "
                              "A script that scores with an embedding model starts processes (multiprocessing "
                              "spawn) and must guard its entry with `if __name__ == '__main__':`.",
                              RuntimeWarning, stacklevel=4)
                self.tokenizer_processes = 0
                return ThreadPoolExecutor(self.TOKENIZER_THREADS), True
            self._processes = pool
            weakref.finalize(self, pool.shutdown, wait=False, cancel_futures=True)
        return self._processes, False

    def close(self) -> None:
        """Stop the tokenizer processes (they also stop with the encoder or the interpreter)."""
        with self._pool_lock:
            processes, self._processes = self._processes, None
        if processes is not None:
            processes.shutdown(wait=True, cancel_futures=True)

    def window_size(self, documents: int) -> int:
        """Documents per window of a list of ``documents``: the list in even windows of at most
        ``WINDOW_DOCS`` (at least 1, so an empty list has no window)."""
        return max(1, -(-documents // max(1, -(-documents // self.WINDOW_DOCS))))

    def chunk_size(self, documents: int) -> int:
        """Documents per tokenizer task for a window of ``documents``: one round of the workers
        (every worker busy until the window is whole), within ``MIN_CHUNK_DOCS`` and ``CHUNK_DOCS``."""
        return min(self.CHUNK_DOCS, max(self.MIN_CHUNK_DOCS, -(-documents // self.workers)))

    @property
    def workers(self) -> int:
        """Tokenizer tasks that run at once: the processes, or the threads when there are none."""
        return self.tokenizer_processes or self.TOKENIZER_THREADS

    def embed(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        """(N, H) float32 embeddings. ``progress``: a progress bar on stderr (default: for calls of
        at least ``PROGRESS_DOCS`` documents when stderr is a terminal). ``last_timing`` then says
        where the time went (see ``embed_stream``)."""
        texts = list(texts)
        if progress is None:
            progress = len(texts) >= self.PROGRESS_DOCS and sys.stderr.isatty()
        with _progress_bar(progress, len(texts), f"embedding on {self.device}") as advance:
            stream = self.embed_stream([texts], advance)
            try:
                return next(stream)
            finally:
                stream.close()  # its cleanup and timing now, not when the generator is collected

    def embed_stream(self, text_lists: Iterable[Sequence[str]],
                     advance: Callable[[int], object] | None = None) -> Iterator[np.ndarray]:
        """Each list's (N, H) float32 embeddings, in order, with the tokenizer and the model kept
        busy across lists: the lists are taken from ``text_lists`` only as the tokenizer gets to
        them (a stage can read its next record batch there). ``advance(documents)`` is called as
        batches go to the model.

        ``last_timing`` says where the stream's time went: ``waiting_s`` for the tokenizer,
        ``feeding_s`` sorting windows and handing batches to the model (on a GPU, launching its
        kernels: the GPU itself is waited for only when its queue is full), ``finishing_s``
        copying vectors back (on a GPU, waiting for the batches still queued), ``batches``,
        ``shapes``, ``windows``, and ``padding`` (padded tokens over real ones)."""
        if not self.fast:
            for texts in text_lists:
                vectors = self.st.encode(list(texts), batch_size=self.fallback_batch_size, convert_to_tensor=True,
                                         normalize_embeddings=self.normalize, show_progress_bar=False)
                yield vectors.float().cpu().numpy()
            return
        pool, owned = self._tokenizer_pool()
        work = self.batcher.ragged if owned else _ragged_in_process
        timing = {"waiting_s": 0.0, "feeding_s": 0.0, "finishing_s": 0.0, "batches": 0, "windows": 0}
        shapes: set[tuple[int, ...]] = set()
        tokens = {"padded": 0, "real": 0}
        outputs: deque[_Output] = deque()  # lists taken, in order, until their vectors are returned
        windows: deque[_Window] = deque()  # windows whose chunks are with the tokenizer, in order

        def windows_of_lists() -> Iterator[_Window]:
            for texts in text_lists:
                texts = list(texts)
                size = self.window_size(len(texts))
                output = _Output(self._new_output(len(texts)), -(-len(texts) // size))
                outputs.append(output)
                for start in range(0, len(texts), size):
                    part = texts[start : start + size]
                    chunk = self.chunk_size(len(part))
                    yield _Window(output, start, [pool.submit(work, part[i : i + chunk])
                                                  for i in range(0, len(part), chunk)])

        upcoming = windows_of_lists()

        def submit_ahead() -> None:
            while len(windows) < self.WINDOWS_AHEAD:
                window = next(upcoming, None)
                if window is None:
                    return
                windows.append(window)

        def finished(final: bool) -> Iterator[np.ndarray]:
            # a list goes back once the list after it is on the device too (the GPU stays busy
            # through the copy), or at the end
            while outputs and outputs[0].windows_left == 0 and (final or (len(outputs) > 1 and outputs[1].windows_left == 0)):
                began = time.perf_counter()
                vectors = self._collect(outputs.popleft().vectors)
                timing["finishing_s"] += time.perf_counter() - began
                yield vectors

        try:
            submit_ahead()
            yield from finished(False)
            while windows:
                window = windows.popleft()
                began = time.perf_counter()
                parts = [future.result() for future in window.chunks]
                timing["waiting_s"] += time.perf_counter() - began
                submit_ahead()  # the next window goes to the tokenizer before this one to the model
                began = time.perf_counter()
                lengths = np.concatenate([p[0] for p in parts])
                flat = np.concatenate([p[1] for p in parts])
                for rows, ids, row_lengths in self.batcher.sorted_batches(lengths, flat, window.start):
                    self._launch(window.output.vectors, rows, ids, row_lengths)
                    shapes.add(ids.shape)
                    timing["batches"] += 1
                    tokens["padded"] += ids.size
                    if advance is not None:
                        advance(len(rows))
                tokens["real"] += int(lengths.sum())
                timing["windows"] += 1
                window.output.windows_left -= 1
                timing["feeding_s"] += time.perf_counter() - began
                yield from finished(False)
            yield from finished(True)
        except BrokenProcessPool:  # a tokenizer process died (killed, out of memory): a retry starts new ones
            self.close()
            raise
        finally:
            for window in windows:
                for future in window.chunks:
                    future.cancel()
            if owned:
                pool.shutdown(wait=True, cancel_futures=True)
            self.last_timing = {**timing, "shapes": len(shapes),
                                "padding": tokens["padded"] / tokens["real"] if tokens["real"] else 1.0}

    def _new_output(self, documents: int):
        import torch

        return torch.empty(documents, self.model.config.hidden_size, dtype=torch.float32, device=self.device)

    def _launch(self, vectors, rows: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Queue one batch on the model; its vectors land in ``vectors[rows]``."""
        import torch

        tensors = [torch.from_numpy(a) for a in (rows, ids)]
        if self.device == "cuda":
            tensors = [t.pin_memory() for t in tensors]
        rows_t, ids_t = tensors
        with torch.inference_mode():
            vectors[rows_t.to(self.device, non_blocking=True)] = self._pool(ids_t, lengths)

    def _collect(self, vectors) -> np.ndarray:
        return vectors.cpu().numpy()  # on a GPU: waits for the batches still queued

    def _pool(self, ids, lengths: np.ndarray):
        """(B, H) pooled vectors of ids (B, S) with each row's real ``lengths`` (host, (B,))."""
        import torch

        padded = bool(lengths.min() < ids.shape[1]) if len(lengths) else False  # on the host, before the copy
        ids = ids.to(self.device, non_blocking=True)
        lengths_t = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64))
        if self.device == "cuda":
            lengths_t = lengths_t.pin_memory()
        lengths_t = lengths_t.to(self.device, non_blocking=True)
        mask = torch.arange(ids.shape[1], device=self.device)[None, :] < lengths_t[:, None]  # (B, S)
        # transformers looks into a 2D mask for padding (``padding_mask.all()`` in a Python
        # condition), which waits for the GPU once a batch; a batch without padding needs no mask,
        # and a 4D one (B, 1, 1, S) it takes as it is. A model that refuses it gets the 2D mask.
        attention = (mask[:, None, None, :] if self._mask_4d else mask.long()) if padded else None
        try:
            hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, S, H)
        except (RuntimeError, ValueError, TypeError, IndexError):
            if attention is None or attention.dim() == 2:
                raise
            self._mask_4d = False
            hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1).float() / lengths_t.clamp(min=1)[:, None].float()  # (B, H) mean of tokens
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


class _Output:
    """One list's vectors on the device, and how many of its windows are still to be fed."""

    def __init__(self, vectors, windows_left: int):
        self.vectors, self.windows_left = vectors, windows_left


class _Window:
    """Documents from ``start`` of one list, as tokenizer futures of its chunks."""

    def __init__(self, output: _Output, start: int, chunks: list):
        self.output, self.start, self.chunks = output, start, chunks
