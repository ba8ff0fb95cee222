"""DCLM-Baseline's own deduplication: paragraphs and pages whose word 13-grams were mostly seen before.

DCLM deduplicates DCLM-Baseline with BFF, a Bloom-filter deduplicator in Rust, run as
``--remove-type old-both --min-ngram-size 13 --max-ngram-size 13 --filtering-threshold 0.8
--fp-rate 0.01`` (``dedup/bff`` in its repository). This stage makes the same decisions:

- a document's *paragraphs* are its text cut before every newline (each one after the first
  starts with its ``\\n``);
- *tokens* are the Unicode word-boundary segments (UAX #29) that are not all whitespace,
  punctuation included; a paragraph's n-grams are its windows of ``ngram`` tokens, or one n-gram
  of all its tokens when it has fewer than ``ngram`` but at least ``min_ngram``, or none;
- documents are taken one after another; in each, paragraph by paragraph, a paragraph more than
  ``threshold`` of whose n-grams are already in the filter is removed, and the n-grams of every
  paragraph kept go into the filter before the next paragraph is looked at;
- a document more than ``threshold`` of all whose n-grams were in the filter (as each paragraph
  found them) is removed whole. Paragraphs and documents with no n-gram are kept.

What differs: BFF's threads share one filter and race, so which copy of a duplicate survives
depends on scheduling; here the order is fixed (shards in plan order, rows in file order) and the
filter's hash functions are seeded, so a rerun makes the same decisions; within a page, an n-gram
counts as seen when an earlier kept paragraph of the page holds it exactly (BFF's filter can also
answer yes for bits the page itself just set, at its false-positive rate). The filter is sized to
the input's n-gram count at ``false_positive_rate`` per n-gram, as BFF sizes it to an expected
count. As everywhere in this project nothing is deleted here: the kept paragraphs become
``text``, and ``bff_keep`` is false for a page removed whole (or left empty); ``select`` drops it.

``resolve`` hashes every shard's paragraphs in parallel Ray tasks (tokenizing is the cost), then
one task walks the documents in order through the filter (``pages_through_filter``: a compiled loop
over each batch of pages, held bit for bit to the numpy ``decide`` of one page) and writes each
shard's decisions; the per-shard pass applies them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from unicode_segmentation_rs import split_word_bounds

from curation.core import io as fio
from curation.core.errors import ConfigError
from curation.core.layout import WORK_DIR
from curation.core.phases import PhaseClock
from curation.core.schema import all_true
from curation.core.segments import split_joined
from curation.core.stage import BatchStage, ShardStats, StageContext, register, write_parquet_bytes
from curation.dedup.minhash import splitmix64

DECISIONS_DIR = "_bff"
DONE_SUFFIX = ".count"  # beside a hashed shard in WORK_DIR: its n-gram count, written once the shard is whole
PASS_DIR = "ordered"  # in WORK_DIR: each slice's saved filter and the shards it has taken in
# Fault injection for kill-and-resume tests: the ordered pass's task kills itself (SIGKILL) right after
# saving its filter with this many shards taken in, as a lost worker would stop
KILL_AT_SHARD = "CURATION_BFF_KILL_AT_SHARD"

# Words are BFF's: the segments between default word boundaries (UAX #29) of the Rust crate BFF uses
# (unicode-segmentation's ``split_word_bounds``, bound to Python), less those all of Rust's ``char::is_whitespace``
# (Unicode White_Space: unlike ``str.isspace``, U+001C-U+001F are not whitespace)
_WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
               "\u2028\u2029\u202f\u205f\u3000"
_ALL_WHITE_SPACE = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in _WHITE_SPACE) + "]*$"  # RE2, for Arrow
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial over token hashes stays a bijection per step


@dataclass
class BffConfig:
    ngram: int = 13  # BFF's --max-ngram-size
    min_ngram: int = 13  # --min-ngram-size: a paragraph with fewer tokens has no n-gram
    threshold: float = 0.8  # --filtering-threshold: removed when MORE than this share was seen; 1.0 removes nothing
    false_positive_rate: float = 0.01  # --fp-rate, per n-gram
    require: list[str] = field(default_factory=list)  # only rows where these bool columns are true take part
    # BFF's --total-shards: the input's shards cut into this many slices of consecutive shards, each
    # deduplicated apart with its own filter (memory and the ordered pass split; a copy in another
    # slice is not found). 1: one filter for the whole input, as DCLM-Baseline was made.
    partitions: int = 1
    text_column: str = "text"
    seed: int = 0
    batch_size: int = 1024
    num_cpus: float = 1.0
    # The ordered pass saves its filter in the work folder at least this many seconds apart (between
    # shards), so a task that dies (a lost node) or a killed run resumes from the last save instead of
    # its slice's first shard; and at least ten times as long apart as a save takes, so saving a large
    # filter costs at most ~10% of the pass. 0: after every shard; null: never.
    checkpoint_interval_s: float | None = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.ngram:
            raise ConfigError(f"bff: need 1 <= min_ngram <= ngram, got min_ngram {self.min_ngram}, ngram {self.ngram}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"bff: threshold is a share of n-grams in [0, 1], got {self.threshold}")
        if self.partitions < 1:
            raise ConfigError(f"bff: partitions must be at least 1, got {self.partitions}")
        if not 0.0 < self.false_positive_rate < 1.0:
            raise ConfigError(f"bff: false_positive_rate must be in (0, 1), got {self.false_positive_rate}")
        if self.checkpoint_interval_s is not None and self.checkpoint_interval_s < 0:
            raise ConfigError(f"bff: checkpoint_interval_s is seconds >= 0 (or null: never), got {self.checkpoint_interval_s}")


def paragraphs(text: str) -> list[str]:
    """``text`` cut before every newline: ``"a\\nb"`` -> ``["a", "\\nb"]``; joined they are ``text``."""
    first, *rest = text.split("\n")
    return [first, *("\n" + p for p in rest)]


def _is_word(segment: str) -> bool:
    return segment.strip(_WHITE_SPACE) != ""


def tokens(paragraph: str) -> list[str]:
    return [s for s in split_word_bounds(paragraph) if _is_word(s)]


def paragraph_tokens(text: str) -> list[list[str]]:
    """``tokens`` of each of ``paragraphs(text)``, from one pass over the text: word boundaries
    fall on both sides of every line break, so a segment holding a newline is ``\\n`` or ``\\r\\n``."""
    out: list[list[str]] = [[]]
    for segment in split_word_bounds(text):
        if "\n" in segment:
            out.extend([] for _ in range(segment.count("\n")))
        elif _is_word(segment):
            out[-1].append(segment)
    return out


def ngram_hashes(text: str, ngram: int, min_ngram: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of every paragraph's n-grams, concatenated, and ``offsets`` (one more than
    there are paragraphs): paragraph ``p``'s hashes are ``hashes[offsets[p]:offsets[p + 1]]``. Page by
    page, plainly: the reference ``batch_ngram_hashes`` (what the stage runs) is tested against."""
    counts: list[int] = []
    token_hashes: list[int] = []
    lengths: list[int] = []
    for words in paragraph_tokens(text):
        if len(words) < min_ngram:
            counts.append(0)
            continue
        counts.append(len(words) - ngram + 1 if len(words) >= ngram else 1)
        lengths.append(len(words))
        token_hashes.extend(xxhash.xxh3_64_intdigest(w, seed) for w in words)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if not token_hashes:
        return np.zeros(0, dtype=np.uint64), offsets
    t = np.array(token_hashes, dtype=np.uint64)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    lengths_array = np.array(lengths, dtype=np.int64)
    long = lengths_array >= ngram
    windows = np.zeros(0, dtype=np.uint64)
    if long.any():
        # h_i = sum_j t[i + j] * M^(ngram - 1 - j) over every window, then only windows inside one paragraph
        width = len(t) - ngram + 1
        h = np.zeros(width, dtype=np.uint64)
        for j in range(ngram):
            h = h * _MULTIPLIER + t[j : j + width]
        window_counts = np.where(long, lengths_array - ngram + 1, 0)
        first = np.repeat(starts, window_counts)
        within = np.arange(len(first)) - np.repeat(np.cumsum(window_counts) - window_counts, window_counts)
        windows = h[first + within]
    parts: list[np.ndarray] = []
    taken = 0
    for index, length in enumerate(lengths):
        if length >= ngram:
            parts.append(windows[taken : taken + length - ngram + 1])
            taken += length - ngram + 1
        else:  # one n-gram of the whole short paragraph, its length in the hash (Python ints: no overflow warning)
            h_short = length
            for value in token_hashes[starts[index] : starts[index] + length]:
                h_short = (h_short * int(_MULTIPLIER) + value) % 2**64
            parts.append(np.array([h_short], dtype=np.uint64))
    return splitmix64(np.concatenate(parts)), offsets


def batch_ngram_hashes(texts: list[str], ngram: int, min_ngram: int,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ngram_hashes`` of every text at once: (hashes, hash_bounds, offsets, offset_bounds), text
    ``k``'s being hashes[hash_bounds[k]:hash_bounds[k + 1]] and offsets[offset_bounds[k]:offset_bounds[k + 1]].

    One split of the joined texts (``split_joined``); each distinct segment is classified and hashed
    once, every occurrence gets its hash by a gather, and the n-gram polynomial runs over all
    paragraphs of all texts together."""
    newlines_per_text = np.array([t.count("\n") for t in texts], dtype=np.int64)
    distinct, ids, paragraph_of_segment = split_joined(texts, split_word_bounds)
    distinct_token = ~pc.match_substring_regex(distinct, _ALL_WHITE_SPACE).to_numpy(zero_copy_only=False)
    distinct_hash = np.zeros(len(distinct), dtype=np.uint64)
    distinct_hash[distinct_token] = [xxhash.xxh3_64_intdigest(d, seed)
                                     for d in distinct.filter(pa.array(distinct_token)).to_pylist()]
    is_token = distinct_token[ids]
    t = distinct_hash[ids[is_token]]
    paragraphs_total = int(newlines_per_text.sum()) + len(texts)
    lengths = np.bincount(paragraph_of_segment[is_token], minlength=paragraphs_total)[:paragraphs_total]
    starts = np.cumsum(lengths) - lengths
    counts = np.where(lengths < min_ngram, 0, np.where(lengths >= ngram, lengths - ngram + 1, 1))
    out_start = np.cumsum(counts) - counts
    out = np.zeros(int(counts.sum()), dtype=np.uint64)
    with np.errstate(over="ignore"):
        long = lengths >= ngram
        if long.any():  # h_i = sum_j t[i + j] * M^(ngram - 1 - j) over every window, kept where inside a paragraph
            width = len(t) - ngram + 1
            h = np.zeros(width, dtype=np.uint64)
            for j in range(ngram):
                h = h * _MULTIPLIER + t[j : j + width]
            window_counts = np.where(long, counts, 0)
            within = np.arange(int(window_counts.sum())) - np.repeat(np.cumsum(window_counts) - window_counts,
                                                                     window_counts)
            out[np.repeat(out_start, window_counts) + within] = h[np.repeat(starts, window_counts) + within]
        short = np.flatnonzero((counts == 1) & ~long)
        if len(short):  # one n-gram of the whole short paragraph, its length in the hash
            h_short = lengths[short].astype(np.uint64)
            for j in range(ngram - 1):
                active = lengths[short] > j
                h_short[active] = h_short[active] * _MULTIPLIER + t[starts[short[active]] + j]
            out[out_start[short]] = h_short
    out = splitmix64(out)
    first_paragraph = np.cumsum(newlines_per_text + 1) - (newlines_per_text + 1)
    bounds = np.append(out_start, len(out))
    hash_bounds = np.append(bounds[first_paragraph], len(out))
    # text k's offsets: bounds of its paragraphs (and the end of its last), less its first hash's index
    sizes = newlines_per_text + 2
    offset_bounds = np.append(0, np.cumsum(sizes))
    own = np.arange(int(offset_bounds[-1])) - np.repeat(offset_bounds[:-1], sizes)
    offsets = bounds[np.repeat(first_paragraph, sizes) + own] - np.repeat(hash_bounds[:-1], sizes)
    return out, hash_bounds, offsets, offset_bounds


class BloomFilter:
    """A Bloom filter over 64-bit hashes, ``k`` positions by double hashing; seeded, so reproducible."""

    def __init__(self, expected: int, false_positive_rate: float, seed: int = 0):
        expected = max(int(expected), 1)
        bits = math.ceil(-expected * math.log(false_positive_rate) / math.log(2) ** 2)
        self.words = np.zeros(max(1, -(-bits // 64)), dtype=np.uint64)
        self.size = np.uint64(len(self.words) * 64)
        self.hashers = max(1, math.ceil(len(self.words) * 64 / expected * math.log(2)))  # BFF's optimal k
        self._steps = np.arange(self.hashers, dtype=np.uint64)
        self._salt = np.uint64(xxhash.xxh3_64_intdigest(b"bff", seed))

    def _positions(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = splitmix64(hashes ^ self._salt) | np.uint64(1)
        positions = (hashes[:, None] + self._steps[None, :] * step[:, None]) % self.size
        return (positions >> np.uint64(6)).astype(np.int64), np.uint64(1) << (positions & np.uint64(63))

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        words, masks = self._positions(hashes)
        return ((self.words[words] & masks) != 0).all(axis=1)

    def insert(self, hashes: np.ndarray) -> None:
        words, masks = self._positions(hashes)
        np.bitwise_or.at(self.words, words.ravel(), masks.ravel())


def decide(hashes: np.ndarray, offsets: np.ndarray, bloom: BloomFilter, threshold: float) -> tuple[list[int], bool, int]:
    """One document through the filter: (removed paragraphs, removed whole, n-grams found in the filter).

    An n-gram is found when it was in the filter before this document, or in a paragraph of this
    document kept before its own. One lookup serves the whole page; only a page that repeats an
    n-gram across its paragraphs is walked paragraph by paragraph."""
    if not len(hashes):
        return [], False, 0
    counts = np.diff(offsets)
    paragraph_of = np.repeat(np.arange(len(counts)), counts)
    before = bloom.contains(hashes)
    unique, inverse = np.unique(hashes, return_inverse=True)
    if len(unique) == len(hashes):  # no n-gram twice in the page: earlier paragraphs cannot hold this one's
        found = np.bincount(paragraph_of, weights=before, minlength=len(counts)).astype(np.int64)
        with np.errstate(invalid="ignore"):  # 0/0 for a paragraph without n-grams: NaN, never removed
            removed = found / counts > threshold
    else:
        found = np.zeros(len(counts), dtype=np.int64)
        removed = np.zeros(len(counts), dtype=bool)
        kept_here = np.zeros(len(unique), dtype=bool)
        for p in np.flatnonzero(counts):
            ids = inverse[offsets[p] : offsets[p + 1]]
            found[p] = int((before[offsets[p] : offsets[p + 1]] | kept_here[ids]).sum())
            removed[p] = found[p] / counts[p] > threshold
            if not removed[p]:
                kept_here[ids] = True
    bloom.insert(hashes[~removed[paragraph_of]])
    contained = int(found.sum())
    return np.flatnonzero(removed).tolist(), contained / len(hashes) > threshold, contained


# -- the ordered pass, compiled: one call per batch of pages, the same decisions as ``decide`` ------
# Pages go one after another by nature (each page's lookups see the n-grams of every page kept
# before it), so numpy can vectorise only within a page: ~40 array calls a page whose overhead was
# most of the pass. numba runs the loop over a whole batch as machine code, bit for bit as above
# (a test holds it to ``decide`` and to the filter's bits).
_SPLITMIX_ADD, _SPLITMIX_M1, _SPLITMIX_M2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                                             np.uint64(0x94D049BB133111EB))
_S30, _S27, _S31, _S6, _LOW6, _ONE = (np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(6), np.uint64(63),
                                      np.uint64(1))


def _compiled(function):
    from numba import njit

    try:  # machine code cached beside the module (or in the user's cache folder) for later processes
        return njit(cache=True, nogil=True, error_model="numpy")(function)
    except RuntimeError:  # neither is writable: compile in every process (~1.5 s)
        return njit(nogil=True, error_model="numpy")(function)


def _pages_through_filter(hashes: np.ndarray, hash_bounds: np.ndarray, offsets: np.ndarray, offset_bounds: np.ndarray,
                          words: np.ndarray, size: np.uint64, hashers: int, salt: np.uint64,
                          threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pages ``k`` = hashes[hash_bounds[k]:hash_bounds[k + 1]], paragraph offsets
    offsets[offset_bounds[k]:offset_bounds[k + 1]], in order through the filter ``words``:
    (removed, indexed as ``offsets`` is, paragraph p of page k at offset_bounds[k] + p; whole; contained)."""
    pages = len(hash_bounds) - 1
    whole = np.zeros(pages, dtype=np.bool_)
    contained = np.zeros(pages, dtype=np.int64)
    removed = np.zeros(len(offsets), dtype=np.bool_)
    slot_key, slot_id = np.empty(1024, dtype=np.uint64), np.empty(1024, dtype=np.int64)
    for k in range(pages):
        h0, n = hash_bounds[k], hash_bounds[k + 1] - hash_bounds[k]
        if n == 0:
            continue
        o0, paragraph_count = offset_bounds[k], offset_bounds[k + 1] - offset_bounds[k] - 1
        page = hashes[h0 : h0 + n]
        before = np.empty(n, dtype=np.bool_)
        for i in range(n):  # every lookup against the filter as it was before this page
            h = page[i]
            x = (h ^ salt) + _SPLITMIX_ADD
            x = (x ^ (x >> _S30)) * _SPLITMIX_M1
            x = (x ^ (x >> _S27)) * _SPLITMIX_M2
            step = (x ^ (x >> _S31)) | _ONE
            hit = True
            for j in range(hashers):
                position = (h + np.uint64(j) * step) % size
                if words[np.int64(position >> _S6)] & (_ONE << (position & _LOW6)) == 0:
                    hit = False
                    break
            before[i] = hit
        capacity = 1
        while capacity < 2 * n:
            capacity *= 2
        if len(slot_id) < capacity:
            slot_key, slot_id = np.empty(capacity, dtype=np.uint64), np.empty(capacity, dtype=np.int64)
        slot_id[:capacity] = -1
        ids = np.empty(n, dtype=np.int64)  # each n-gram's number among the page's distinct ones (a hash table:
        distinct = 0                      # the hashes are mixed already, so their low bits are the slot)
        for i in range(n):
            slot = np.int64(page[i] & np.uint64(capacity - 1))
            while slot_id[slot] >= 0 and slot_key[slot] != page[i]:
                slot = (slot + 1) & (capacity - 1)
            if slot_id[slot] < 0:
                slot_key[slot], slot_id[slot] = page[i], distinct
                distinct += 1
            ids[i] = slot_id[slot]
        kept_here = np.zeros(distinct, dtype=np.bool_)  # held by a paragraph of this page kept earlier
        found_total = 0
        for p in range(paragraph_count):
            start, end = offsets[o0 + p], offsets[o0 + p + 1]
            if end == start:
                continue
            found = 0
            for i in range(start, end):
                if before[i] or kept_here[ids[i]]:
                    found += 1
            found_total += found
            if found / (end - start) > threshold:
                removed[o0 + p] = True
            else:
                for i in range(start, end):
                    kept_here[ids[i]] = True
        for p in range(paragraph_count):  # the kept paragraphs' n-grams go in once the page is decided
            if removed[o0 + p]:
                continue
            for i in range(offsets[o0 + p], offsets[o0 + p + 1]):
                h = page[i]
                x = (h ^ salt) + _SPLITMIX_ADD
                x = (x ^ (x >> _S30)) * _SPLITMIX_M1
                x = (x ^ (x >> _S27)) * _SPLITMIX_M2
                step = (x ^ (x >> _S31)) | _ONE
                for j in range(hashers):
                    position = (h + np.uint64(j) * step) % size
                    words[np.int64(position >> _S6)] |= _ONE << (position & _LOW6)
        contained[k] = found_total
        whole[k] = found_total / n > threshold
    return removed, whole, contained


_pages_through_filter_compiled = None


def pages_through_filter(hashes: np.ndarray, hash_bounds: np.ndarray, offsets: np.ndarray, offset_bounds: np.ndarray,
                         bloom: BloomFilter, threshold: float) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """A batch of pages (as ``_list_values`` gives the hashed file's columns) through ``bloom``, in
    order: per page (removed paragraphs, removed whole, n-grams found), as ``decide`` one at a time."""
    global _pages_through_filter_compiled
    if _pages_through_filter_compiled is None:  # compiled on first use
        _pages_through_filter_compiled = _compiled(_pages_through_filter)
    removed, whole, contained = _pages_through_filter_compiled(
        hashes.astype(np.uint64, copy=False), hash_bounds.astype(np.int64, copy=False),
        offsets.astype(np.int64, copy=False), offset_bounds.astype(np.int64, copy=False), bloom.words, bloom.size,
        bloom.hashers, bloom._salt, float(threshold))
    flagged = np.flatnonzero(removed)
    page_of = np.searchsorted(offset_bounds, flagged, side="right") - 1
    paragraph = flagged - offset_bounds[page_of]
    per_page: list[list[int]] = [[] for _ in range(len(hash_bounds) - 1)]
    for page, index in zip(page_of.tolist(), paragraph.tolist(), strict=True):
        per_page[page].append(index)
    return per_page, whole, contained


_HASHED = pa.schema([("row", pa.int64()), ("hashes", pa.list_(pa.uint64())), ("offsets", pa.list_(pa.int64()))])
_DECIDED = pa.schema([("row", pa.int64()), ("removed", pa.list_(pa.int32())), ("document", pa.bool_()),
                      ("contained", pa.int32())])


def hash_shard(path: str, out: str, config: dict[str, Any], storage: dict[str, Any]) -> int:
    """Ray task: the n-gram hashes of one shard's taking-part documents, batch by batch to ``out`` (a
    scratch file: a task that dies is run again whole); their count, also written beside ``out``
    once it is whole, for a resumed attempt."""
    c, store = BffConfig(**config), fio.Storage(**storage)
    total = start = 0
    fs, p = fio.filesystem(path, store)
    out_fs, out_path = fio.filesystem(out, store)
    out_fs.makedirs(out_path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "rb") as handle, out_fs.open(out_path, "wb") as sink, pq.ParquetWriter(sink, _HASHED) as writer:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=c.batch_size):
            taking_part = all_true(batch, c.require, "bff")
            texts = batch.column(c.text_column).to_pylist()
            candidates = [i for i, text in enumerate(texts) if taking_part[i] and text]
            hashes, hash_bounds, offsets, offset_bounds = batch_ngram_hashes(
                [texts[i] for i in candidates], c.ngram, c.min_ngram, c.seed)
            hashed = np.flatnonzero(np.diff(hash_bounds) > 0)  # a page with no n-gram takes no part
            # the pages left out hold no hashes, so the kept pages' hashes stay one contiguous run
            hash_lists = pa.ListArray.from_arrays(pa.array(np.append(hash_bounds[hashed], len(hashes)), pa.int32()),
                                                  pa.array(hashes, pa.uint64()))
            offset_lists = pa.ListArray.from_arrays(pa.array(offset_bounds, pa.int32()),
                                                    pa.array(offsets, pa.int64())).take(pa.array(hashed))
            rows = start + np.asarray(candidates, dtype=np.int64)[hashed]
            total += len(hashes)
            start += batch.num_rows
            writer.write_table(pa.table([pa.array(rows, pa.int64()), hash_lists, offset_lists], schema=_HASHED))
    fio.write_atomic(out + DONE_SUFFIX, str(total).encode(), store)  # last: ``out`` is whole
    return total


def _list_values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets) of a list column, without a Python object per element."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    return array.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]], offsets - offsets[0]


def decide_shards(hashed: list[str], decided: list[str], ngrams: int, config: dict[str, Any],
                  storage: dict[str, Any], checkpoint: str | None = None, kill_at: int | None = None) -> dict[str, int]:
    """Ray task: every document, in order, through one filter; each shard's decisions to ``decided``.

    With ``checkpoint`` (a path prefix in the work folder) the filter is saved between shards every
    ``checkpoint_interval_s``, and a run of the task finding a save goes on from there: the same
    filter bits and totals as the run that saved them, so the same decisions as a pass never cut."""
    c, store = BffConfig(**config), fio.Storage(**storage)
    bloom = BloomFilter(ngrams, c.false_positive_rate, c.seed)
    names = [path.rsplit("/", 1)[-1] for path in hashed]
    first, totals = _resume_pass(checkpoint, bloom, names, store) if checkpoint else (0, None)
    totals = totals or {"documents_removed": 0, "paragraphs_removed": 0, "documents_edited": 0}
    for target in decided[first:]:  # a cut pass's decisions after its save: not progress, rewritten below
        fio.remove(target, store)
    saved_at, save_seconds = time.monotonic(), 0.0
    for index in range(first, len(hashed)):
        out: dict[str, list] = {"row": [], "removed": [], "document": [], "contained": []}
        fs, p = fio.filesystem(hashed[index], store)
        with fs.open(p, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=c.batch_size):
                hashes, hash_bounds = _list_values(batch.column("hashes"))
                offsets, offset_bounds = _list_values(batch.column("offsets"))
                per_page, wholes, found = pages_through_filter(hashes, hash_bounds, offsets, offset_bounds, bloom,
                                                               c.threshold)
                for row, removed, whole, contained in zip(batch.column("row").to_numpy().tolist(), per_page,
                                                          wholes.tolist(), found.tolist(), strict=True):
                    if removed or whole or contained:
                        for name, value in zip(out, (row, removed, whole, contained), strict=True):
                            out[name].append(value)
                        totals["documents_removed"] += whole
                        if removed and not whole:  # paragraphs cut from pages that stay
                            totals["paragraphs_removed"] += len(removed)
                            totals["documents_edited"] += 1
        decisions = pa.table(out, schema=_DECIDED)
        fio.write_atomic(decided[index], write_parquet_bytes(decisions.to_batches(), _DECIDED), store)
        taken = index + 1
        interval = c.checkpoint_interval_s
        due = interval == 0 or (interval is not None and time.monotonic() - saved_at >= max(interval, 10 * save_seconds))
        if checkpoint and due and taken < len(hashed):
            started = time.monotonic()
            _save_pass(checkpoint, bloom, names, taken, totals, store)
            saved_at = time.monotonic()
            save_seconds = saved_at - started
            if kill_at == taken:
                os.kill(os.getpid(), signal.SIGKILL)
    return {**totals, "filter_bytes": int(bloom.words.nbytes), "hash_functions": bloom.hashers, "resumed_at": first}


def _save_pass(checkpoint: str, bloom: BloomFilter, names: list[str], taken: int, totals: dict[str, int],
               store: fio.Storage) -> None:
    """The filter after ``taken`` shards, then the state naming it (the commit point), then the
    filter it replaces: a task killed at any moment leaves one whole save to resume from."""
    filter_path = f"{checkpoint}-{taken:06d}.filter"
    spool = fio.spool_path(filter_path)
    bloom.words.tofile(spool)  # straight from the array: a large filter is not copied in memory
    fio.commit_local_file(spool, filter_path, store)
    previous = _pass_state(checkpoint, store)
    state = {"shards": names, "taken": taken, "words": len(bloom.words), "hashers": bloom.hashers,
             "filter": filter_path.rsplit("/", 1)[-1], "totals": totals}
    fio.write_atomic(f"{checkpoint}.json", json.dumps(state, sort_keys=True).encode(), store)
    if previous and previous["filter"] != state["filter"]:
        fio.remove(fio.join(checkpoint.rsplit("/", 1)[0], previous["filter"]), store)


def _pass_state(checkpoint: str, store: fio.Storage) -> dict[str, Any] | None:
    try:
        return json.loads(fio.read_bytes(f"{checkpoint}.json", store))
    except (FileNotFoundError, ValueError):
        return None


def _resume_pass(checkpoint: str, bloom: BloomFilter, names: list[str], store: fio.Storage) -> tuple[int, dict | None]:
    """(shards already taken in, their totals) from the last save, its filter read into ``bloom``;
    (0, None) when there is none for this slice and filter size."""
    state = _pass_state(checkpoint, store)
    if state is None or (state["shards"], state["words"], state["hashers"]) != (names, len(bloom.words), bloom.hashers):
        return 0, None
    fs, p = fio.filesystem(fio.join(checkpoint.rsplit("/", 1)[0], state["filter"]), store)
    view, filled = memoryview(bloom.words.view(np.uint8)), 0
    with fs.open(p, "rb") as handle:
        while filled < len(view) and (n := handle.readinto(view[filled:])):
            filled += n
    if filled < len(view):  # cannot happen short of a damaged disk: the save is committed whole
        bloom.words[:] = 0
        return 0, None
    return state["taken"], state["totals"]


@dataclass
class _ShardDecisions:
    """One shard's decided rows (sorted), their decisions, and the next row to read."""

    row: np.ndarray
    removed: list[list[int]]
    whole: np.ndarray
    contained: np.ndarray
    next_row: int = 0


@register("bff_dedup")
class BffDedupStage(BatchStage):
    """Adds ``bff_keep``, ``bff_removed_paragraphs`` and ``bff_contained_ngrams``; ``text`` loses the
    paragraphs seen before."""

    Config = BffConfig
    phases: PhaseClock | None = None  # of the last resolve, for its run line

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        import ray

        config, storage = dataclasses.asdict(self.config), dataclasses.asdict(ctx.storage)
        work = fio.join(ctx.stage_dir, WORK_DIR)
        phases = PhaseClock(work, ctx.key, ctx.storage)  # a killed attempt's hashed shards are kept
        tasks = self.plan(inputs, ctx)
        hashed = [fio.join(work, f"{task.name}.parquet") for task in tasks]
        hash_task = ray.remote(num_cpus=self.config.num_cpus)(hash_shard)
        done = {path.rsplit("/", 1)[-1]: path for path in fio.list_files(work, DONE_SUFFIX, ctx.storage)}

        def hash_shards() -> list:
            pending = {}
            for i, (path, out) in enumerate(zip(inputs, hashed, strict=True)):
                marker = done.get(out.rsplit("/", 1)[-1] + DONE_SUFFIX)
                pending[i] = (ray.put(int(fio.read_bytes(marker, ctx.storage))) if marker
                              else hash_task.remote(path, out, config, storage))
            if done:
                phases.notes["hashing"] = f"{len(done)} of {len(inputs)} shards hashed before"
            return [pending[i] for i in range(len(inputs))]

        counts = phases.gather("hashing", hash_shards)
        decisions_dir = fio.join(ctx.stage_dir, DECISIONS_DIR)
        decided = [fio.join(decisions_dir, f"{task.name}.parquet") for task in tasks]
        # slices of consecutive shards, each through its own filter (BFF's --shard-num / --total-shards)
        slices = [s for s in np.array_split(np.arange(len(tasks)), self.config.partitions) if len(s)]
        decide_task = ray.remote(num_cpus=self.config.num_cpus)(decide_shards)

        kill_at = int(os.environ[KILL_AT_SHARD]) if os.environ.get(KILL_AT_SHARD) else None

        def decide() -> list:  # a slice cut short goes on from its last saved filter (or its first shard)
            for stale in set(fio.list_files(decisions_dir, "", ctx.storage)) - set(decided):  # another plan's
                fio.remove(stale, ctx.storage)
            return [decide_task.remote([hashed[i] for i in s], [decided[i] for i in s], sum(counts[i] for i in s),
                                       config, storage, fio.join(work, PASS_DIR, f"slice-{k:04d}"), kill_at)
                    for k, s in enumerate(slices)]

        def shards_decided() -> tuple[int, int, str]:  # the ordered pass writes a shard's decisions as it ends it
            return len(fio.list_files(decisions_dir, ".parquet", ctx.storage)), len(decided), "shards"

        results = phases.gather("ordered pass", decide, count=shards_decided)
        phases.release_tables()
        resumed = [("" if len(slices) == 1 else f"slice {k}: ") + f"{r['resumed_at']} of {len(s)} shards"
                   for k, (r, s) in enumerate(zip(results, slices, strict=True)) if r["resumed_at"]]
        if resumed:  # the run line's: the manifest holds the same totals as a pass never cut
            phases.notes["ordered pass"] = ", ".join(resumed) + " taken in before"
        results = [{key: value for key, value in r.items() if key != "resumed_at"} for r in results]
        self.phases = phases  # the run line's, not the manifest's: a rerun writes the same bytes
        totals = {key: sum(r[key] for r in results) for key in results[0]} if results else {}
        return {"ngrams": int(sum(counts)), "filters": len(slices), **totals,
                "hash_functions": max((r["hash_functions"] for r in results), default=0)}

    def describe_resolved(self, resolved: dict[str, Any]) -> str | None:
        filters = resolved.get("filters", 1)
        return (f"{resolved['ngrams']:,} {self.config.ngram}-grams through "
                + (f"{filters} Bloom filters of " if filters > 1 else "a Bloom filter of ")
                + f"{resolved.get('filter_bytes', 0) / 2**20:.1f} MiB ({resolved['hash_functions']} hashes): "
                f"{resolved.get('documents_removed', 0):,} documents removed whole, "
                f"{resolved.get('paragraphs_removed', 0):,} paragraphs from {resolved.get('documents_edited', 0):,} others"
                + (self.phases.note() if self.phases else ""))

    def summary(self, manifest: dict[str, Any]) -> list[str]:
        resolved, c = manifest.get("resolved", {}), manifest["config"]
        return ["### Paragraph and page dedup (DCLM's BFF)", "",
                f"{resolved.get('documents_removed', 0):,} pages removed whole and "
                f"{resolved.get('paragraphs_removed', 0):,} paragraphs cut from {resolved.get('documents_edited', 0):,} "
                f"others: more than {c['threshold']:.0%} of their word {c['ngram']}-grams were seen before "
                f"({resolved.get('ngrams', 0):,} n-grams; Bloom filter at {c['false_positive_rate']:.0%} false "
                "positives per n-gram).", ""]

    def begin_shard(self, task, ctx: StageContext) -> _ShardDecisions:
        fs, p = fio.filesystem(fio.join(ctx.stage_dir, DECISIONS_DIR, f"{task.name}.parquet"), ctx.storage)
        with fs.open(p, "rb") as handle:
            table = pq.read_table(handle)
        return _ShardDecisions(table.column("row").to_numpy(), table.column("removed").to_pylist(),
                               table.column("document").to_numpy(zero_copy_only=False),
                               table.column("contained").to_numpy())

    def process_batch(self, batch: pa.RecordBatch, shard: _ShardDecisions, stats: ShardStats) -> pa.RecordBatch:
        c, n = self.config, batch.num_rows
        start, shard.next_row = shard.next_row, shard.next_row + n
        lo, hi = np.searchsorted(shard.row, [start, start + n])  # batches arrive in file order
        local = shard.row[lo:hi] - start
        keep = np.ones(n, dtype=bool)
        keep[local] = ~shard.whole[lo:hi]
        contained = np.zeros(n, dtype=np.int32)
        contained[local] = shard.contained[lo:hi]
        removed_count = np.zeros(n, dtype=np.int32)
        index = batch.schema.get_field_index(c.text_column)
        edited = [(i, removed) for i, removed in zip(local.tolist(), shard.removed[lo:hi], strict=True) if removed]
        if edited:
            texts = batch.column(index).to_pylist()
            for i, removed in edited:
                drop = set(removed)
                texts[i] = "".join(p for k, p in enumerate(paragraphs(texts[i])) if k not in drop)
                removed_count[i] = len(removed)
            batch = batch.set_column(index, batch.schema.field(index), pa.array(texts, batch.column(index).type))
        # BFF writes no document whose text is left empty
        empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(batch.column(index))), 0), True)
        keep &= ~(all_true(batch, c.require, "bff") & empty.to_numpy(zero_copy_only=False))
        stats.flagged["bff_duplicate"] += int((~keep).sum())
        stats.extra["bff_removed_paragraphs"] = stats.extra.get("bff_removed_paragraphs", 0) + int(removed_count.sum())
        return (batch.append_column("bff_keep", pa.array(keep))
                .append_column("bff_removed_paragraphs", pa.array(removed_count))
                .append_column("bff_contained_ngrams", pa.array(contained)))
