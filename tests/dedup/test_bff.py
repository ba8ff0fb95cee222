"""DCLM's BFF deduplication (``--remove-type old-both``): our vectorised stage against a line-by-line
transcription of BFF's ``process_line_oldboth`` with an exact set for its Bloom filter, on
generated corpora full of repeated lines; the stage's determinism across shardings; its columns."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_single_stage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.core.errors import ConfigError
from curation.dedup.bff import (
    BffConfig,
    BloomFilter,
    batch_ngram_hashes,
    decide,
    ngram_hashes,
    pages_through_filter,
    paragraphs,
    tokens,
)


def oracle(texts: list[str], ngram: int, min_ngram: int, threshold: float) -> list[tuple[list[int], bool, int, str]]:
    """BFF's old-both, step by step as its Rust code does it, with a set that has no false positives:
    (removed paragraph indices, removed whole, n-grams found, output text) per document."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for text in texts:
        newlines = [0, *(i for i, ch in enumerate(text) if ch == "\n"), len(text)]
        removed, total, contained, kept = [], 0, 0, []
        for index, (start, end) in enumerate(zip(newlines, newlines[1:], strict=False)):
            paragraph = text[start:end]
            words = tokens(paragraph)
            grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
            if not grams and len(words) >= min_ngram:
                grams = [tuple(words)]
            found = sum(g in seen for g in grams)
            total += len(grams)
            contained += found
            if grams and found / len(grams) > threshold:  # 0/0 is NaN in Rust: never more than the threshold
                removed.append(index)
            else:
                seen.update(grams)
                kept.append(paragraph)
        whole = total > 0 and contained / total > threshold
        out.append((removed, whole, contained, "" if whole else "".join(kept)))
    return out


def ours(texts: list[str], ngram: int, min_ngram: int, threshold: float) -> list[tuple[list[int], bool, int, str]]:
    hashed = [ngram_hashes(t, ngram, min_ngram) for t in texts]
    bloom = BloomFilter(sum(len(h) for h, _ in hashed), 1e-9)  # no false positive in a test's lifetime
    out = []
    for text, (hashes, offsets) in zip(texts, hashed, strict=True):
        removed, whole, contained = decide(hashes, offsets, bloom, threshold)
        kept = "".join(p for i, p in enumerate(paragraphs(text)) if i not in removed)
        out.append((removed, whole, contained, "" if whole else kept))
    return out


_WORDS = ["the", "cat", "sat", "on", "a", "mat", ",", "and", "Über", "naïve", "3.14", "e.g.", "don't", "日本語",
          "!", "--", "data", "set"]
_line = st.lists(st.sampled_from(_WORDS), min_size=0, max_size=24).map(" ".join)
_separator = st.sampled_from(["\n", "\n\n", "\r\n", "\n  \n"])


@st.composite
def corpora(draw) -> list[str]:
    """Documents drawn from a small pool of lines, so lines, runs of lines and whole pages recur."""
    pool = draw(st.lists(_line, min_size=1, max_size=12))
    documents = []
    for _ in range(draw(st.integers(1, 12))):
        lines = draw(st.lists(st.sampled_from(pool) | _line, min_size=0, max_size=10))
        text = ""
        for line in lines:
            text += line + draw(_separator)
        documents.append(text if draw(st.booleans()) else text.rstrip("\n"))
    return documents


@given(corpus=corpora(), sizes=st.sampled_from([(13, 13), (3, 3), (4, 2), (2, 1)]),
       threshold=st.sampled_from([0.8, 0.5, 0.0, 1.0]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decisions_are_bffs_old_both(corpus, sizes, threshold):
    ngram, min_ngram = sizes
    assert ours(corpus, ngram, min_ngram, threshold) == oracle(corpus, ngram, min_ngram, threshold)


@given(corpus=corpora(), sizes=st.sampled_from([(13, 13), (3, 3), (2, 1)]), threshold=st.sampled_from([0.8, 0.5, 0.0]),
       undersized=st.sampled_from([1, 4, 50]), batch=st.integers(1, 5))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compiled_pass_makes_decides_decisions_and_sets_the_same_bits(corpus, sizes, threshold, undersized, batch):
    """The ordered pass's compiled loop against ``decide`` page by page, in batches of any size, with
    filters sized for a fraction of the n-grams so that false positives (bits earlier pages set)
    steer decisions too: the same decisions and, after every batch, the same filter."""
    ngram, min_ngram = sizes
    hashed = [ngram_hashes(t, ngram, min_ngram) for t in corpus]
    hashed = [(h, o) for h, o in hashed if len(h)]
    expected = max(1, sum(len(h) for h, _ in hashed) // undersized)
    one_by_one, batched = BloomFilter(expected, 0.05, seed=2), BloomFilter(expected, 0.05, seed=2)
    for first in range(0, len(hashed), batch):
        pages = hashed[first : first + batch]
        wanted = [decide(h, o, one_by_one, threshold) for h, o in pages]
        hash_bounds = np.cumsum([0] + [len(h) for h, _ in pages])
        offset_bounds = np.cumsum([0] + [len(o) for _, o in pages])
        removed, whole, contained = pages_through_filter(
            np.concatenate([h for h, _ in pages]), hash_bounds, np.concatenate([o for _, o in pages]), offset_bounds,
            batched, threshold)
        assert list(zip(removed, whole.tolist(), contained.tolist(), strict=True)) == wanted
        assert np.array_equal(batched.words, one_by_one.words)


def test_a_repeated_paragraph_goes_and_a_repeated_page_goes_whole():
    first, second, third, note = _planted_pages()
    result = ours([first, second, third, note], 13, 13, 0.8)
    assert result[0] == ([], False, 0, first)
    assert result[1][0] == [1] and not result[1][1]  # the boilerplate line was seen on the first page
    assert result[1][3] == second.split("\n")[0]
    assert result[2][1]  # every n-gram of the third page was seen: removed whole
    assert result[3] == ([], False, 0, note)


@given(text=st.text(alphabet=st.sampled_from("ab \n.\t€"), max_size=60))
@settings(max_examples=300, deadline=None)
def test_paragraphs_join_back_to_the_text(text):
    parts = paragraphs(text)
    assert "".join(parts) == text
    assert all(p.startswith("\n") for p in parts[1:]) and "\n" not in parts[0]


def test_words_are_bffs_split_word_bounds_less_rusts_whitespace():
    """BFF keeps a segment unless every character is Rust's ``char::is_whitespace`` (Unicode
    White_Space), which, unlike ``str.isspace``, leaves out the information separators U+001C-U+001F."""
    import regex

    white_space = regex.compile(r"\p{White_Space}")
    for code_point in range(0x3100):
        character = chr(code_point)
        assert (tokens(f"a {character} b") == ["a", "b"]) == bool(white_space.fullmatch(character)), hex(code_point)
    assert tokens("can't stop 3.14 \x1c e.g. 日本") == ["can't", "stop", "3.14", "\x1c", "e.g", ".", "日", "本"]


def test_bloom_filter_has_no_false_negatives_and_about_its_false_positive_rate():
    rng = np.random.default_rng(0)
    members = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    strangers = rng.integers(0, 2**63, 50_000, dtype=np.int64).astype(np.uint64)
    bloom = BloomFilter(len(members), 0.01, seed=3)
    bloom.insert(members)
    assert bloom.contains(members).all()
    assert bloom.contains(strangers).mean() < 0.02


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="min_ngram"):
        BffConfig(ngram=5, min_ngram=6)
    with pytest.raises(ConfigError, match="false_positive_rate"):
        BffConfig(false_positive_rate=0)


def test_stage_matches_bff_and_does_not_depend_on_the_sharding(ray_local, tmp_path):
    rng = random.Random(4)
    pool = [" ".join(rng.choice(_WORDS[:8] + ["river", "stone", "cloud"]) for _ in range(rng.randint(5, 30)))
            for _ in range(25)]
    rows = []
    for k in range(120):
        text = "\n".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
        rows.append({"id": f"d{k}", "text": text, "filter_keep": k % 7 != 3})
    outputs = []
    for shards in (1, 4):
        out = run_single_stage(rows, {"kind": "bff_dedup", "require": ["filter_keep"]}, tmp_path / f"s{shards}", shards)
        outputs.append(pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist())
    assert outputs[0] == outputs[1]
    taking_part = [r for r in rows if r["filter_keep"]]
    expected = dict(zip((r["id"] for r in taking_part), oracle([r["text"] for r in taking_part], 13, 13, 0.8),
                        strict=True))
    for row in outputs[0]:
        if not row["filter_keep"]:  # not taking part: as it came
            original = next(r for r in rows if r["id"] == row["id"])
            assert (row["text"], row["bff_keep"], row["bff_removed_paragraphs"]) == (original["text"], True, 0)
            continue
        removed, whole, contained, text = expected[row["id"]]
        assert row["bff_keep"] == (not whole and bool(text.strip()))
        assert row["bff_removed_paragraphs"] == len(removed) and row["bff_contained_ngrams"] == contained
        if not whole:
            assert row["text"] == text
    assert sum(not r["bff_keep"] for r in outputs[0]) > 0 and sum(r["bff_removed_paragraphs"] for r in outputs[0]) > 0


def test_curate_dedup_method_bff_on_jsonl(tmp_path):
    from conftest import run_curate

    rows = [{"doc_id": f"d{k}", "body": text} for k, text in enumerate(_planted_pages())]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    run_curate(["dedup", "--method", "bff", "--input", str(path), "--output", str(out), "--id-field", "doc_id",
                "--text-field", "body"])
    result = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist()
    expected = oracle([r["body"] for r in rows], 13, 13, 0.8)
    assert [(r["id"], r["bff_keep"], r["bff_removed_paragraphs"]) for r in result] == \
           [(r["doc_id"], not e[1] and bool(e[3].strip()), len(e[0])) for r, e in zip(rows, expected, strict=True)]
    # the second page loses its boilerplate line; the third, both its paragraphs and itself
    assert [r["bff_removed_paragraphs"] for r in result] == [0, 1, 2, 0] and [r["bff_keep"] for r in result] == [True, True, False, True]
    refused = run_curate(["dedup", "--method", "bff", "--num-perm", "64", "--input", str(path), "--output",
                          str(tmp_path / "o2")], check=False)
    assert refused.returncode == 2 and "--num-perm is MinHash's" in refused.stderr


def _planted_pages() -> list[str]:
    boilerplate = "Sign up for our newsletter to get the latest news delivered to your inbox every single morning now"
    first = f"An article about rivers and the fish that live in them all year round in the north.\n{boilerplate}"
    second = f"A different article on mountain weather, snow, wind and the people who climb there.\n{boilerplate}"
    return [first, second, second, "A short unrelated note that has nothing in common with the others at all here."]


@given(text=st.lists(st.sampled_from(["a", "b1", " ", "\n", "\r", "\r\n", ".", "'", "\u2028", "\x85", "語", "\t",
                                      "\u00a0"]), max_size=40).map("".join))
@settings(max_examples=500, deadline=None)
def test_one_pass_tokens_are_each_paragraphs_tokens(text):
    from curation.dedup.bff import paragraph_tokens

    assert paragraph_tokens(text) == [tokens(p) for p in paragraphs(text)]


_PIECES = ["a", "b1", " ", "\n", "\r", "\r\n", ".", "'", "\u2028", "\x85", "語", "\t", "\u00a0", "\u0301", "a"]


@given(texts=st.lists(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join), max_size=6),
       sizes=st.sampled_from([(3, 3), (2, 1), (4, 2), (1, 1), (13, 13)]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=400, deadline=None)
def test_batch_hashes_are_each_texts_own(texts, sizes, seed):
    """One split of the texts joined by newlines hashes each text as it hashes alone: no token or
    paragraph runs across the join, and the offsets count from each text's first hash."""
    hashes, hash_bounds, offsets, offset_bounds = batch_ngram_hashes(texts, *sizes, seed=seed)
    assert len(hash_bounds) == len(offset_bounds) == len(texts) + 1
    for k, text in enumerate(texts):
        alone, alone_offsets = ngram_hashes(text, *sizes, seed=seed)
        assert hashes[hash_bounds[k] : hash_bounds[k + 1]].tolist() == alone.tolist()
        assert offsets[offset_bounds[k] : offset_bounds[k + 1]].tolist() == alone_offsets.tolist()


def test_partitions_deduplicate_slices_of_shards_apart(ray_local, tmp_path):
    """``partitions: 2`` over 4 shards: shards 0-1 and 2-3 each go through their own filter, so a page
    is removed only for a copy in its own slice (BFF's --shard-num / --total-shards)."""
    first, second, third, note = _planted_pages()
    rows = [{"id": f"d{k}", "text": text} for k, text in enumerate([first, note, second, second, first, third, note,
                                                                     second])]
    out = run_single_stage(rows, {"kind": "bff_dedup", "partitions": 2}, tmp_path / "p2", 4)
    result = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]).to_pylist()
    halves = [rows[:4], rows[4:]]  # np.array_split of 8 rows into 4 shards, the shards into 2 slices
    expected = [e for half in halves for e in oracle([r["text"] for r in half], 13, 13, 0.8)]
    assert [(r["bff_keep"], r["bff_removed_paragraphs"]) for r in result] == \
           [(not e[1] and bool(e[3].strip()), len(e[0])) for e in expected]
    assert result[4]["bff_keep"] and result[4]["text"] == first  # its copy is in the other slice
    with pytest.raises(ConfigError, match="partitions"):
        BffConfig(partitions=0)


def _hashed_shards(folder, shards: int = 5) -> tuple[list[str], int]:
    """Hashed n-gram shards of pages that repeat one another across shards, and their n-gram count."""
    from curation.dedup.bff import hash_shard

    rng = random.Random(9)
    pool = [" ".join(rng.choice(_WORDS[:8] + ["river", "stone", "cloud"]) for _ in range(rng.randint(14, 30)))
            for _ in range(30)]
    hashed, total = [], 0
    for s in range(shards):
        texts = ["\n".join(rng.choice(pool) for _ in range(rng.randint(1, 6))) for _ in range(40)]
        source = folder / f"in-{s}.parquet"
        pq.write_table(pa.table({"text": texts}), source)
        hashed.append(str(folder / "hashed" / f"part-{s:05d}.parquet"))
        total += hash_shard(str(source), hashed[-1], {}, {})
    return hashed, total


def test_an_ordered_pass_killed_between_shards_goes_on_from_its_saved_filter(tmp_path):
    """The pass saves its filter after every shard (interval 0); a process killed (SIGKILL) after
    saving at shard 2 leaves a save that the next run reads, taking in only shards 3-5, with the
    same decisions, byte for byte, and the same totals as a pass never cut."""
    import multiprocessing

    from curation.dedup.bff import decide_shards

    hashed, ngrams = _hashed_shards(tmp_path)
    config = {"checkpoint_interval_s": 0}

    def decided(name: str) -> list[str]:
        return [str(tmp_path / name / f"part-{s:05d}.parquet") for s in range(len(hashed))]

    whole = decide_shards(hashed, decided("whole"), ngrams, config, {})
    assert whole["resumed_at"] == 0 and whole["documents_removed"] > 0 and whole["paragraphs_removed"] > 0
    checkpoint = str(tmp_path / "work" / "ordered" / "slice-0000")
    killed = multiprocessing.get_context("spawn").Process(
        target=decide_shards, args=(hashed, decided("cut"), ngrams, config, {}, checkpoint, 2))
    killed.start()
    killed.join(120)
    assert killed.exitcode == -9  # SIGKILL, right after the save
    state = json.loads((tmp_path / "work" / "ordered" / "slice-0000.json").read_text())
    assert state["taken"] == 2 and sorted(p.name for p in (tmp_path / "work" / "ordered").iterdir()) == \
        ["slice-0000-000002.filter", "slice-0000.json"]  # the save at shard 1 went when shard 2's was committed
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]

    resumed = decide_shards(hashed, decided("cut"), ngrams, config, {}, checkpoint)
    assert resumed == {**whole, "resumed_at": 2}
    for a, b in zip(decided("whole"), decided("cut"), strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()

    # a save for other shards (another plan) or another filter size is not taken
    assert decide_shards(hashed[1:], decided("other")[1:], ngrams, config, {}, checkpoint)["resumed_at"] == 0
    assert decide_shards(hashed, decided("other"), ngrams * 2, config, {}, checkpoint)["resumed_at"] == 0
    with pytest.raises(ConfigError, match="checkpoint_interval_s"):
        BffConfig(checkpoint_interval_s=-1)
