"""Each DCLM-Baseline heuristic step on its own, at the thresholds of pipelines/dclm_baseline.yaml:
a page that passes, a page that fails just past the threshold, and what the line modifiers remove."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.core.stage import ShardStats, StageContext
from curation.filters.heuristics import HeuristicFilterStage, dclm_baseline_filter_config

SENTENCE = "The quick brown fox jumps over the lazy dog and then it rests in the warm sun with friends."
GOOD = "\n".join([  # 120 words of ordinary prose, no line or n-gram repeated
    "Gardening in small spaces starts with choosing containers that drain well and hold enough soil.",
    "Tomatoes, peppers and herbs grow happily on a sunny balcony when they are watered every morning.",
    "A layer of mulch keeps the roots cool during summer and saves a surprising amount of water.",
    "Most vegetables need at least six hours of direct light, so watch how shadows move across the day.",
    "Feed the plants with compost in spring and again in midsummer to keep the harvest going.",
    "If leaves turn yellow, check the drainage first; soggy soil is the usual cause of trouble.",
    "Finally, keep notes on what you planted and when, because next year you will want to remember.",
])


@pytest.fixture(scope="module")
def stage() -> HeuristicFilterStage:
    stage = HeuristicFilterStage(dclm_baseline_filter_config())
    stage.ensure_setup(StageContext(run_root="", stage_name="filter", stage_dir="", key="k"))
    return stage


def run(stage: HeuristicFilterStage, texts: list[str], url: str = "https://example.org/page") -> list[dict]:
    batch = pa.RecordBatch.from_pylist([{"id": str(i), "url": url, "text": t, "language": "en", "language_score": 0.9}
                                        for i, t in enumerate(texts)])
    stats = ShardStats(shard="t")
    rows = stage.process_batch(batch, None, stats).to_pylist()
    return rows


def unique_lines(n: int, words: int = 10) -> list[str]:
    return [" ".join(f"w{i}x{j}" if j % 3 else "the" for j in range(words)) for i in range(n)]


def test_a_good_page_passes_every_step(stage):
    (row,) = run(stage, [GOOD])
    assert row["filter_keep"], row["filter_reason"]
    assert row["text"] == GOOD  # no line modifier touched it


@pytest.mark.parametrize(("step", "bad"), [
    ("page_length", " ".join(["the word"] * 20)),  # 40 words < 50
    ("word_length", "\n".join(["the an of to a is it be by on " * 6])),  # mean word length < 3
    ("symbol_ratio", GOOD + "\n" + " ".join(["#tag"] * 40)),  # hashes over 10% of words
    ("bullet_lines", "\n".join(f"• {line}" for line in unique_lines(12))),  # every line a bullet
    ("ellipsis_lines", "\n".join(f"{line} ..." for line in unique_lines(12))),  # every line trails off
    ("alphabetic_words", GOOD + " " + " ".join(["123 456 789"] * 20)),  # 60 of ~170 words without letters
    ("stop_words", " ".join(f"word{i}" for i in range(80))),  # no stop word at all
    ("repetition", "\n".join([SENTENCE] * 10)),  # one line, ten times
])
def test_each_filter_rejects_just_its_case(stage, step, bad):
    good, failed = run(stage, [GOOD, bad])
    assert good[f"{step}_keep"]
    assert not failed[f"{step}_keep"]
    assert not failed["filter_keep"]


def test_the_first_failing_step_is_the_reason(stage):
    (row,) = run(stage, ["Quick brown foxes jump over lazy dogs in sunny green fields today."])  # short, no stop words
    assert row["filter_reason"] == "page_length" and not row["stop_words_keep"] and row["language_keep"]


def test_url_blocklist_and_language(stage):
    rows = run(stage, [GOOD], url="https://www.pornhub.com/view")
    assert not rows[0]["url_blocklist_keep"]
    german = "Im Garten wachsen Tomaten, Paprika und Kräuter, wenn man sie jeden Morgen gießt."
    rows = run(stage, [GOOD, german, "## !! ..."])  # the text is scored, whatever extract's columns say
    assert [r["language_keep"] for r in rows] == [True, False, False]
    assert rows[0]["language_dclm_score"] > 0.65 and rows[2]["language_dclm_score"] == 0.0


def test_line_modifiers_remove_their_lines(stage):
    page = "\n".join([
        SENTENCE, "THIS LINE IS SHOUTED AT THE READER LOUDLY", SENTENCE.replace("fox", "cat"), "12 likes",
        "20241231", SENTENCE.replace("fox", "owl"), "Single", "Add 3 items in cart now please",
        "Sign-in to read the short note", "A short teaser line Read more...", "Sign-in " + SENTENCE,
    ] + GOOD.split("\n")[:3])
    (row,) = run(stage, [page])
    kept = [line.strip() for line in row["text"].split("\n")]
    assert "THIS LINE IS SHOUTED AT THE READER LOUDLY" not in kept
    assert "12 likes" not in kept and "20241231" not in kept and "Single" not in kept
    assert "Add 3 now please" in kept  # the phrase cut out of a line of at most 10 words
    assert "to read the short note" in kept  # prefix cut
    assert "A short teaser line" in kept  # suffix cut
    assert "Sign-in " + SENTENCE in kept  # lines over 10 words are left alone, as DCLM does
    assert row["short_lines_removed_words"] == 1 and row["uppercase_lines_removed_words"] == 8
    assert not row["word_removal_ratio_keep"]  # far more than 5% of the words went


def test_counts_land_in_flagged(stage):
    stats = ShardStats(shard="t")
    batch = pa.RecordBatch.from_pylist([{"id": str(i), "url": "https://example.org", "text": t, "language": "en",
                                         "language_score": 0.9} for i, t in enumerate([GOOD, SENTENCE, GOOD.split("\n")[0]])])
    stage.process_batch(batch, None, stats)
    assert stats.flagged == {"page_length": 2}


_REPETITION_PIECES = ["the", "cat", "sat", "the cat", " ", "\n", "\n\n", "\r\n", ".", "3.14", "don't", "\u0301",
                      "東京", "é", "--", "\t", "x_y", "\xa0", "\u2028"]


@given(texts=st.lists(st.lists(st.sampled_from(_REPETITION_PIECES), max_size=80).map("".join), max_size=8),
       top=st.dictionaries(st.integers(1, 5), st.floats(0.01, 0.5), max_size=3),
       dup=st.dictionaries(st.integers(1, 11), st.floats(0.01, 0.5), max_size=4))
@settings(max_examples=300, deadline=None)
def test_dclm_repetition_over_a_batch_is_each_pages_own(texts, top, dup):
    """The batch's n-gram ids (one split of the joined texts, ids per text) give each page exactly
    the value DCLM's per-page counting gives, whatever n-gram lengths the thresholds name."""
    from curation.filters.heuristics import RepetitionConfig, RepetitionFilter

    step = RepetitionFilter("repetition", RepetitionConfig("dclm", 0.3, 0.3, 0.2, 0.2, top, dup))
    assert step._dclm_worst_batch(texts).tolist() == [step._dclm_worst(text) for text in texts]
