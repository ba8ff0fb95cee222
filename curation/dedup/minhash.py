"""MinHash signatures computed over whole Arrow batches with numpy.

Shingle hashing without a Python loop per shingle: the normalised texts of a batch are one
byte buffer; a polynomial prefix hash over it (mod 2^64, via cumulative sums with the base's
modular inverse) gives the hash of any substring in O(1), so every word n-gram (or byte n-gram)
is hashed at once, then mixed with splitmix64. The permutations are the multiply-add family
``(a*x + b) mod 2^64`` keeping the high 32 bits, and each document's minimum is a
``np.minimum.reduceat`` over its shingles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.filters.text_view import split_whitespace

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse mod 2^64
_BASE_INV = np.uint64(pow(int(_BASE), -1, 1 << 64))
EMPTY = np.uint32(0xFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit finaliser (Steele et al.), elementwise."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercase, drop punctuation, collapse whitespace to single spaces, trim."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts, "")
    texts = pc.utf8_lower(texts)
    texts = pc.replace_substring_regex(texts, r"[^\p{L}\p{N}\s]+", "")
    texts = pc.replace_substring_regex(texts, r"\s+", " ")
    return pc.utf8_trim_whitespace(texts).cast(pa.large_string())


@dataclass(frozen=True)
class ShingleSpec:
    ngram: int = 5
    unit: str = "word"  # word | char (byte n-grams of the normalised UTF-8 text)


def _prefix_hashes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P[i] = hash of data[:i] (P[0] = 0) and powers B^i, both length len(data)+1."""
    n = len(data)
    with np.errstate(over="ignore"):
        powers = np.empty(n + 1, dtype=np.uint64)
        powers[0] = 1
        if n:
            powers[1:] = _BASE
            np.cumprod(powers, out=powers)
        inverse_powers = np.empty(n + 1, dtype=np.uint64)
        inverse_powers[0] = 1
        if n:
            inverse_powers[1:] = _BASE_INV
            np.cumprod(inverse_powers, out=inverse_powers)
        # hash(s[:i]) = sum_j s[j] * B^(i-1-j) = B^(i-1) * sum_j s[j] * B^-j
        weighted = (data.astype(np.uint64) + np.uint64(1)) * inverse_powers[:n]
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(weighted, out=prefix[1:])
    return prefix, powers


def _substring_hashes(prefix: np.ndarray, powers: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of data[start:end] for each pair, consistent with ``_prefix_hashes``."""
    with np.errstate(over="ignore"):
        # (prefix[end] - prefix[start]) = B^-start * sum_{j in [start,end)} s[j] B^-(j-start)
        raw = (prefix[ends] - prefix[starts]) * powers[starts]
        return splitmix64(raw ^ (ends - starts).astype(np.uint64))


_PUNCTUATION = re.compile(r"[^\w\s]+|_+")
# Scripts written without spaces between words: each character is a word of its own, so their
# documents get n-grams of characters instead of a handful of sentence-long "words" (with which
# two pages one character apart share no shingle at all)
_UNSPACED = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]"


def _space_unspaced_scripts(texts: pa.Array) -> pa.Array:
    """Spaces around every character of an unspaced script, in the documents that have any."""
    has = pc.fill_null(pc.match_substring_regex(texts, _UNSPACED), False)
    if not pc.any(has).as_py():
        return texts
    spaced = pc.replace_substring_regex(pc.filter(texts, has), f"({_UNSPACED})", r" \1 ")
    return pc.replace_with_mask(texts, has, spaced)


def _word_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every normalised word, per-document word offsets).

    Words are whitespace tokens of the lowercased text with punctuation removed, and single
    characters of scripts written without spaces (Chinese, Japanese, Thai...). Only the distinct
    words of the batch are normalised and hashed in Python (a few thousand per batch); every
    occurrence then gets its hash by a vectorised gather.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    words = split_whitespace(_space_unspaced_scripts(pc.utf8_lower(pc.fill_null(texts, ""))))
    offsets = words.offsets.to_numpy().astype(np.int64)
    flat = words.flatten()
    if len(flat) == 0:
        return np.zeros(0, np.uint64), offsets - offsets[0]
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary.to_pylist()
    distinct_hashes = np.empty(len(distinct), dtype=np.uint64)
    distinct_empty = np.zeros(len(distinct), dtype=bool)
    for i, word in enumerate(distinct):
        cleaned = _PUNCTUATION.sub("", word)
        distinct_empty[i] = not cleaned
        distinct_hashes[i] = xxhash.xxh3_64_intdigest(cleaned)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    keep = ~distinct_empty[indices]
    hashes = distinct_hashes[indices][keep]
    kept_per_doc = np.add.reduceat(np.concatenate([keep, [False]]).astype(np.int64), offsets[:-1] - offsets[0]) \
        if len(offsets) > 1 else np.zeros(0, np.int64)
    kept_per_doc = np.where(np.diff(offsets) > 0, kept_per_doc, 0)
    new_offsets = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(kept_per_doc, out=new_offsets[1:])
    return hashes, new_offsets


def shingle_hashes(texts: pa.Array, spec: ShingleSpec, whole_if_short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit shingle hashes, per-document offsets into them, length n_docs+1).

    A document with fewer than ``ngram`` words is one shingle, unless ``whole_if_short`` is off
    (then it has none)."""
    if spec.unit == "char":
        return _char_shingle_hashes(texts, spec.ngram)
    word_hashes, word_offsets = _word_hashes(texts)
    n_docs = len(word_offsets) - 1
    n = spec.ngram
    words_per_doc = np.diff(word_offsets)
    word_doc = np.repeat(np.arange(n_docs), words_per_doc)
    total = len(word_hashes)
    with np.errstate(over="ignore"):
        if total >= n:
            valid = word_doc[: total - n + 1] == word_doc[n - 1 :]
            combined = word_hashes[: total - n + 1].copy()
            for k in range(1, n):
                combined = combined * _BASE + word_hashes[k : total - n + 1 + k]
            hashes = combined[valid]
            shingle_doc = word_doc[: total - n + 1][valid]
        else:
            hashes = np.zeros(0, np.uint64)
            shingle_doc = np.zeros(0, np.int64)
        short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < n)) if whole_if_short else np.zeros(0, np.int64)
        if len(short):  # fewer words than n: the whole document is one shingle
            whole = np.zeros(len(short), dtype=np.uint64)
            for k in range(n):  # combine up to n-1 words, padding with zeros
                index = np.minimum(word_offsets[short] + k, word_offsets[short + 1] - 1)
                present = (word_offsets[short] + k) < word_offsets[short + 1]
                whole = whole * _BASE + np.where(present, word_hashes[index], np.uint64(0))
            hashes = np.concatenate([hashes, whole])
            shingle_doc = np.concatenate([shingle_doc, short])
            order = np.argsort(shingle_doc, kind="stable")
            hashes, shingle_doc = hashes[order], shingle_doc[order]
    counts = np.bincount(shingle_doc, minlength=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return splitmix64(hashes), offsets


def _char_shingle_hashes(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte n-grams of the normalised UTF-8 text, hashed through a polynomial prefix hash."""
    normalized = normalize(texts)
    n_docs = len(normalized)
    _, offsets_buffer, data_buffer = normalized.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[normalized.offset : normalized.offset + n_docs + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8)[: int(offsets[-1])] if data_buffer is not None else np.zeros(0, np.uint8)
    doc_starts, doc_ends = offsets[:-1], offsets[1:]
    prefix, powers = _prefix_hashes(data)
    lengths = np.maximum(doc_ends - doc_starts - ngram + 1, 0)
    counts = np.where((doc_ends > doc_starts) & (lengths == 0), 1, lengths)  # short doc: one shingle
    first = np.repeat(doc_starts, counts)
    rank = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = first + rank
    ends = np.minimum(starts + ngram, np.repeat(doc_ends, counts))
    hashes = _substring_hashes(prefix, powers, starts.astype(np.int64), ends.astype(np.int64))
    shingle_offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=shingle_offsets[1:])
    return hashes, shingle_offsets


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1,
               chunk_shingles: int = 1024) -> np.ndarray:
    """uint32 MinHash signatures, shape (n_docs, num_perm); documents without shingles get EMPTY.

    Permutation j maps a shingle hash x to the high 32 bits of (a_j x + b_j) mod 2^64, computed
    as 32-bit multiply-adds of x's high half (a 2-universal family), a few hundred documents at a
    time so the (shingles x num_perm) block stays in L2 cache (1024 shingles measured fastest).
    """
    n_docs = len(offsets) - 1
    out = np.full((n_docs, num_perm), EMPTY, dtype=np.uint32)
    a, b = permutations(num_perm, seed)
    a32 = (a >> np.uint64(32)).astype(np.uint32) | np.uint32(1)
    b32 = (b >> np.uint64(32)).astype(np.uint32)
    x32 = (hashes >> np.uint64(32)).astype(np.uint32)
    counts = np.diff(offsets)
    first = 0
    while first < n_docs:
        last = int(np.searchsorted(offsets, offsets[first] + chunk_shingles, side="right")) - 1
        last = min(max(last, first + 1), n_docs)
        docs = np.arange(first, last)
        docs = docs[counts[first:last] > 0]
        if len(docs):
            base = offsets[first]
            block = x32[base : offsets[last]]
            values = block[:, None] * a32[None, :] + b32[None, :]
            out[docs] = np.minimum.reduceat(values, offsets[docs] - base, axis=0)
        first = last
    return out


def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative probability mass,
    datasketch's own search."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)
