"""Vectorised views of a text column, computed once per batch and shared by all filters.

Words are the non-empty whitespace-separated tokens (Arrow's ``utf8_split_whitespace`` also
yields empty tokens for leading whitespace and blank strings: they are dropped here, as Python's
``str.split()`` does); ``alnum_word_count`` counts the words DCLM counts for page length and word
removal (fastText tokens whose first character is a letter or digit). Lines split on newlines.
Per-document sums over flattened lists use the list offsets (``np.add.reduceat``), so no
per-document Python loop runs for these statistics.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def split_whitespace(strings: pa.Array) -> pa.ListArray:
    """Arrow's ``utf8_split_whitespace`` of the trimmed strings: the same non-empty tokens, read
    safely. Untrimmed, pyarrow 26 misreads whitespace that ends the last value of an array (the
    bytes after it in memory decide), so that text's last word changed from call to call."""
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(strings))


def token_counts(strings: pa.Array) -> np.ndarray:
    """Per string: how many non-empty whitespace tokens (``len(s.split())``)."""
    trimmed = pc.utf8_trim_whitespace(strings)
    counts = pc.list_value_length(pc.utf8_split_whitespace(trimmed)).to_numpy(zero_copy_only=False).astype(np.int64)
    blank = pc.equal(pc.utf8_length(trimmed), 0).to_numpy(zero_copy_only=False)
    return np.where(blank, 0, counts)


def _without_empty(lists: pa.ListArray, flat: pa.Array) -> pa.ListArray:
    """``lists`` with ``flat`` (its values, possibly transformed) minus the empty strings."""
    keep = pc.greater(pc.utf8_length(flat), 0)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pc.filter(flat, keep))


def per_document_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum ``values`` over each list given Arrow list ``offsets`` (len n+1); empty lists give 0."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.float64)
    if values.size == 0 or n == 0:
        return out
    starts = offsets[:-1]
    nonempty = offsets[1:] > starts
    if nonempty.any():
        sums = np.add.reduceat(values.astype(np.float64), starts[nonempty])
        out[nonempty] = sums
    return out


class TextView:
    def __init__(self, text: pa.Array | pa.ChunkedArray):
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        self.text = pc.fill_null(text, "")

    def __len__(self) -> int:
        return len(self.text)

    @cached_property
    def words(self) -> pa.ListArray:
        raw = split_whitespace(self.text)
        return _without_empty(raw, raw.flatten())

    @cached_property
    def word_offsets(self) -> np.ndarray:
        return self.words.offsets.to_numpy()

    @cached_property
    def flat_words(self) -> pa.Array:
        return self.words.flatten()

    @cached_property
    def word_count(self) -> np.ndarray:
        return np.diff(self.word_offsets).astype(np.float64)

    @cached_property
    def alnum_word_count(self) -> np.ndarray:
        """Words whose first character is a letter or digit (DCLM's ``split_words(ignore_punctuation=True)``).

        Its words are fastText's tokens, split on ASCII whitespace and NUL only: a no-break space
        does not split, so ``"\\xa0Home"`` is one token, not counted."""
        tokens = pc.split_pattern_regex(self.text, r"[ \t\n\r\x0b\x0c\x00]+")
        hits = pc.match_substring_regex(tokens.flatten(), r"^[\pL\pN]").to_numpy(zero_copy_only=False)
        return per_document_sum(hits, tokens.offsets.to_numpy())

    @cached_property
    def stripped_lines(self) -> pa.ListArray:
        """Each document's lines, stripped, without the empty ones (DCLM's ``split_paragraphs``)."""
        return _without_empty(self.lines, pc.utf8_trim_whitespace(self.flat_lines))

    def stripped_lines_matching(self, pattern: str) -> tuple[np.ndarray, np.ndarray]:
        """(lines matching ``pattern``, non-empty lines) per document, over stripped lines."""
        lines = self.stripped_lines
        offsets = lines.offsets.to_numpy()
        hits = pc.match_substring_regex(lines.flatten(), pattern).to_numpy(zero_copy_only=False)
        return per_document_sum(hits, offsets), np.diff(offsets).astype(np.float64)

    @cached_property
    def lines(self) -> pa.ListArray:
        return pc.split_pattern(self.text, "\n")

    @cached_property
    def line_offsets(self) -> np.ndarray:
        return self.lines.offsets.to_numpy()

    @cached_property
    def flat_lines(self) -> pa.Array:
        return self.lines.flatten()

    @cached_property
    def line_token_counts(self) -> np.ndarray:
        """Whitespace tokens of each of ``flat_lines`` (the line modifiers' word counts, shared)."""
        return token_counts(self.flat_lines)

    @cached_property
    def line_count(self) -> np.ndarray:
        return np.diff(self.line_offsets).astype(np.float64)

    def count_in_text(self, substring: str) -> np.ndarray:
        """Non-overlapping occurrences of ``substring`` per document (``str.count``)."""
        return pc.count_substring(self.text, substring).to_numpy(zero_copy_only=False).astype(np.float64)

    def words_matching(self, pattern: str) -> np.ndarray:
        """Per document: how many words match the regex."""
        hits = pc.match_substring_regex(self.flat_words, pattern).to_numpy(zero_copy_only=False)
        return per_document_sum(hits, self.word_offsets)

    def words_in(self, vocabulary: list[str]) -> np.ndarray:
        lowered = pc.utf8_lower(self.flat_words)
        hits = pc.is_in(lowered, value_set=pa.array(vocabulary)).to_numpy(zero_copy_only=False)
        return per_document_sum(hits, self.word_offsets)

    def lines_matching(self, pattern: str) -> np.ndarray:
        hits = pc.match_substring_regex(self.flat_lines, pattern).to_numpy(zero_copy_only=False)
        return per_document_sum(hits, self.line_offsets)

    @cached_property
    def mean_word_length(self) -> np.ndarray:
        lengths = pc.utf8_length(self.flat_words).to_numpy(zero_copy_only=False)
        total = per_document_sum(lengths, self.word_offsets)
        return np.divide(total, self.word_count, out=np.zeros_like(total), where=self.word_count > 0)
