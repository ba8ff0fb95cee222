"""MinHash signatures: as accurate as datasketch, batch-independent, normalisation-invariant."""

from __future__ import annotations

import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.dedup.minhash import EMPTY, ShingleSpec, optimal_bands, shingle_hashes, signatures


def _sigs(texts: list[str], num_perm: int = 64, spec: ShingleSpec | None = None) -> np.ndarray:
    hashes, offsets = shingle_hashes(pa.array(texts, pa.string()), spec or ShingleSpec())
    return signatures(hashes, offsets, num_perm)


def _reference_shingles(text: str, n: int = 5) -> set[str]:
    words = [w for w in (re.sub(r"[^\w\s]+|_+", "", t) for t in text.lower().split()) if w]
    if 0 < len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_jaccard_estimates_as_accurate_as_datasketch():
    from pydoc_data.topics import topics

    from datasketch import MinHash

    words = re.sub(r"\s+", " ", " ".join(topics.values())).split()
    rng = random.Random(1)
    pairs = []
    for _ in range(300):
        start = rng.randrange(len(words) - 300)
        a = words[start : start + 200]
        rate = rng.uniform(0, 0.1)
        b = [rng.choice(words) if rng.random() < rate else w for w in a]
        pairs.append((" ".join(a), " ".join(b)))
    ours = _sigs([t for pair in pairs for t in pair], num_perm=128)
    errors_ours, errors_datasketch = [], []
    for k, (x, y) in enumerate(pairs):
        sx, sy = _reference_shingles(x), _reference_shingles(y)
        exact = len(sx & sy) / len(sx | sy)
        errors_ours.append(abs((ours[2 * k] == ours[2 * k + 1]).mean() - exact))
        mx, my = MinHash(num_perm=128), MinHash(num_perm=128)
        mx.update_batch([s.encode() for s in sx])
        my.update_batch([s.encode() for s in sy])
        errors_datasketch.append(abs(mx.jaccard(my) - exact))
    assert np.mean(errors_ours) <= np.mean(errors_datasketch) * 1.15 + 0.002
    assert np.mean(errors_ours) < 0.04


def test_shingle_counts_match_reference():
    texts = ["The quick brown fox jumps over the lazy dog, again!", "short one", "", "!!! ...", "a b c d e f"]
    _, offsets = shingle_hashes(pa.array(texts), ShingleSpec())
    assert list(np.diff(offsets)) == [len(_reference_shingles(t)) for t in texts]


def _character_jaccard(a: str, b: str, n: int = 5) -> float:
    grams = [{t[i : i + n] for i in range(len(t) - n + 1)} for t in (re.sub(r"[^\w]+", "", x) for x in (a, b))]
    return len(grams[0] & grams[1]) / len(grams[0] | grams[1])


def test_scripts_without_spaces_are_shingled_by_character():
    """Chinese, Japanese and Thai pages have no spaces between words: one edit apart they used to be
    one sentence-long "word" each and share no shingle. Now every character is a word, so MinHash
    estimates their character 5-gram Jaccard; spaced text is tokenised as before."""
    from curation.dedup.minhash import _space_unspaced_scripts

    pages = ["北京是中华人民共和国的首都，也是全国的政治中心和文化中心，有着三千多年的建城史和八百多年的建都史。",
             "東京は日本の首都であり、世界有数の大都市です。多くの企業の本社があり、経済と文化の中心地となっています。",
             "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นศูนย์กลางทางเศรษฐกิจและวัฒนธรรมของประเทศ"]
    edits = [("政治", "经济"), ("経済", "政治"), ("เศรษฐกิจ", "การเมือง")]
    for page, (old, new) in zip(pages, edits, strict=True):
        edited = page.replace(old, new)
        assert edited != page
        a, b = _sigs([page, edited], num_perm=512)
        assert abs((a == b).mean() - _character_jaccard(page, edited)) < 0.08
        assert (a == b).mean() > 0.4
    unrelated = _sigs(pages, num_perm=512)
    assert (unrelated[0] == unrelated[1]).mean() < 0.05
    english = pa.array(["The quick brown fox jumps over the lazy dog, café and naïve included."])
    assert _space_unspaced_scripts(english) is english


def test_words_are_the_same_every_call_whatever_whitespace_ends_the_text():
    """pyarrow's utf8_split_whitespace misreads whitespace that ends the last value of an array
    (the bytes after it in memory decide): hypothesis found a document whose signature changed
    between two calls. The words of MinHash and of the filters' text view are Python's split(),
    call after call."""
    from curation.dedup.minhash import _word_hashes
    from curation.filters.text_view import TextView

    rng = random.Random(3)
    pieces = ["中文", "𨽋", "word", "é", "ab", " ", "\xa0", "\u3000", "\n", "\t"]
    for _ in range(60):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(3, 40))) + rng.choice([" ", "\xa0", "\u3000", "  "])
        expected = _word_hashes(pa.array([" ".join(text.split())]))[0].tolist()
        for _ in range(10):
            assert _word_hashes(pa.array([text.upper()]))[0].tolist() == expected
            assert TextView(pc.utf8_lower(pa.array([text]))).words.to_pylist() == [text.lower().split()]


def test_empty_documents_get_the_empty_signature():
    sig = _sigs(["", "   ", "!!!", "real words here"])
    assert (sig[:3] == EMPTY).all() and not (sig[3] == EMPTY).all()


_word = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=8)
_doc = st.lists(_word, min_size=0, max_size=30).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(_doc, min_size=1, max_size=12), st.sampled_from([ShingleSpec(), ShingleSpec(3, "char")]))
def test_signature_does_not_depend_on_the_batch(docs, spec):
    together = _sigs(docs, spec=spec)
    for i, doc in enumerate(docs):
        assert (together[i] == _sigs([doc], spec=spec)[0]).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=6), min_size=1, max_size=40))
def test_case_punctuation_and_spacing_do_not_matter(words):
    plain = " ".join(words)
    noisy = "  ".join(w.upper() + ("," if i % 3 == 0 else "") for i, w in enumerate(words)) + " ."
    a, b = _sigs([plain, noisy])
    assert (a == b).all()


def test_band_choice_follows_datasketch():
    from datasketch import MinHashLSH

    bands, rows = optimal_bands(0.8, 128)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    assert (bands, rows) == (lsh.b, lsh.r)
    assert bands * rows <= 128
