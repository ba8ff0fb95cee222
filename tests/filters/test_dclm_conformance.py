"""DCLM's own unit-test cases for the DCLM-Baseline steps, run against ours (conformance tests).

Cases ported from DCLM's `tests/baselines/mappers/{filters,modifiers}` (MIT, commit 361714b): the
texts, thresholds and expectations are theirs; each DCLM call becomes the equivalent step of ours.
Two adaptations: DCLM's modifiers drop a page they empty and strip the page they return, while
ours leave the empty page to later steps, so texts compare stripped and "dropped" reads "empty";
and cases of options the recipe does not use (sentence/char lengths, unique stop words, uniseg
words) are left out.
"""

from __future__ import annotations

import pytest
from filter_steps import recipe_step, run_steps


def keeps(step: str, text: str, **options) -> bool:
    (row,) = run_steps({step: options}, [text])
    return row[f"{step}_keep"]


def modified(step: str, text: str, **options) -> str:
    (row,) = run_steps({step: options}, [text])
    return row["text"].strip()


# -- filters (test_content_filters.py) ------------------------------------------------------------
@pytest.mark.parametrize(("text", "dropped_at", "kept_at"), [
    ("Hello world.", 3, 2),
    ("Hello world. This is a test.", 7, 6),
    ("Hello world. \n This is a test.", 7, 6),
    ("Hello world. \n\n This is a test.", 7, 6),
    ("Hello world. \n\n\n \n\n\n This is a test.", 7, 6),
    ("Mr. Smith bought 2.5 kilograms of fruit.", 8, 7),
])
def test_page_length(text, dropped_at, kept_at):
    options = {"max_words": 100_000, "ignore_punctuation": True}
    assert not keeps("page_length", text, min_words=dropped_at, **options)
    assert keeps("page_length", text, min_words=kept_at, **options)


def test_page_length_edges():
    assert not keeps("page_length", "", min_words=1, max_words=10, ignore_punctuation=True)
    assert keeps("page_length", "Hello.", min_words=-1, max_words=10, ignore_punctuation=True)


@pytest.mark.parametrize(("text", "low", "high", "kept"), [
    ("The average word length is 4.33", 4, 5, True),
    ("The cat in the hat", 3, 10, False),
    ("The cat in the hat", 0, 10, True),
    ("Loquaciousness verylongwords", 3, 10, False),
    ("Loquaciousness verylongwords", 3, float("inf"), True),
    ("  ", 3, 10, False),
])
def test_word_length(text, low, high, kept):
    assert keeps("word_length", text, min_mean=low, max_mean=high) is kept


@pytest.mark.parametrize(("text", "max_ratio", "kept"), [
    ("No symbols here.", 0.0, True),
    ("#hashtags #on #every #word", 1.0, True),
    ("#hashtags #on #every #word", 0.1, False),
    ("#hashtags and ellipses both count...", 0.3, False),
    ("#hashtags and ellipses both count\u2026", 0.3, False),
    ("#hashtags and ellipses both count. . .", 0.25, False),
    ("   ", 0.1, False),
])
def test_symbol_ratio(text, max_ratio, kept):
    assert keeps("symbol_ratio", text, max_ratio=max_ratio) is kept


@pytest.mark.parametrize("ellipsis", ["...", ". . .", "\u2026"])
def test_ellipsis_lines(ellipsis):
    half = f"This text has one line that ends with an ellipsis{ellipsis}\n and one line that doesn't."
    assert not keeps("ellipsis_lines", half, max_fraction=0.49)
    assert keeps("ellipsis_lines", half, max_fraction=0.51)
    inside = f"This text has one{ellipsis}line that ends with an ellipsis{ellipsis}and one line that doesn't."
    assert keeps("ellipsis_lines", inside, max_fraction=0.01)
    runs = (f"This text has one{ellipsis}{ellipsis}\n{ellipsis}line that ends with an ellipsis{ellipsis}\n"
            "and one line that doesn't.")
    assert not keeps("ellipsis_lines", runs, max_fraction=0.66)
    assert keeps("ellipsis_lines", runs, max_fraction=0.67)


@pytest.mark.parametrize("first", ["●", "•", "*", "-"])
@pytest.mark.parametrize("second", ["●", "•", "*", "-"])
def test_bullet_lines(first, second):
    two_of_three = f"{first} This text has two lines\n{second} that start with a bullet\n and one line that doesn't."
    assert not keeps("bullet_lines", two_of_three, max_fraction=0.66)
    assert keeps("bullet_lines", two_of_three, max_fraction=0.67)
    inside = f"This text has two lines{second} that start with a bullet{first}\n and one line that doesn't."
    assert keeps("bullet_lines", inside, max_fraction=0.01)
    runs = f"{first * 5}This text has two lines\n{second} that start with a bullet\n and one line that doesn't."
    assert not keeps("bullet_lines", runs, max_fraction=0.66)
    assert keeps("bullet_lines", runs, max_fraction=0.67)


@pytest.mark.parametrize(("text", "min_count", "kept"), [
    ("The best of the best", 3, True),  # the, of, the: every occurrence counts
    ("the be to of and that have with", 8, True),
    ("Then Tom and Sally withheld bees", 2, False),  # substrings are not words
])
def test_stop_words(text, min_count, kept):
    words = ["the", "be", "to", "of", "and", "that", "have", "with"]
    assert keeps("stop_words", text, min_count=min_count, words=words) is kept


@pytest.mark.parametrize(("text", "min_fraction", "kept"), [
    ("", 0.8, False),
    ("This sentence contains <1,000 non-alphabetic w0rd5 within it but >1.", 0.8, True),
    ("This sentence contains <1,000 non-alphabetic w0rd5 within it but >1.", 0.9, False),
    ("This sentence contains <1,000     non-alphabetic \nw0rd5 within it but >1.", 0.8, True),
    ("This sentence contains <1,000     non-alphabetic \nw0rd5 within it but >1.", 0.9, False),
])
def test_alphabetic_words(text, min_fraction, kept):
    assert keeps("alphabetic_words", text, min_fraction=min_fraction) is kept


def test_repetition():
    def kept(text: str) -> bool:
        (row,) = run_steps(recipe_step("repetition"), [text])
        return row["repetition_keep"]

    assert kept("This is a complex sentence with unique words.\n Here is another one.")
    assert not kept("Repeat repeat repeat repeat.")
    assert not kept("")
    assert kept(
        "This is a complex sentence with unique words.\n"
        "Here is another one.\n We can say a lot of things, because we want this page to not be filtered out.\n"
        "However, in order to make sure all parts of the code are reached,\nwe craete a long n-gram that is repeated:\n"
        "a complex sentence with unique words.\nNow just making sure that the freq count is low enough so it will "
        "not filter out anything.\nSince our n-gram is quite long, need to add a lot of text here in order to verify "
        "it is indeed not filtered out. I hope that is enough.\nLorem ipsum dolor sit amet, consectetur adipiscing "
        "elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis "
        "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.")


def test_word_removal_ratio():
    """DCLM's scenarios; the words before the line modifiers are taken away by a short_lines step
    that removes one-word lines ("x")."""
    def kept(before: str, max_fraction: float = 0.05) -> bool:
        (row,) = run_steps({"short_lines": {"min_words": 2},
                            "word_removal_ratio": {"max_fraction": max_fraction}}, [before])
        return row["word_removal_ratio_keep"]

    assert kept("word 1\nword 2\nword 3")  # nothing removed
    assert not kept("word 1\nword 2\nx\nx")  # 2 of 6 words removed
    assert kept("word 1\nword 2\nx\nx", max_fraction=0.34)
    assert kept("a b c d e\n" * 19 + "x\n" * 5)  # exactly 5 of 100 words
    assert not kept("a b\n" * 47 + "x\n" * 6)  # 6 of 100 words
    assert not kept("")  # no words before: dropped
    assert not kept("x\n" * 100)  # every word removed
    assert kept(" Line 1\nLine 2!!!\t    \n\n\nLine  ????    3\t")  # punctuation and whitespace are not words


# -- modifiers (test_modifiers.py) --------------------------------------------------------------
_URLS = [
    "https://www.example.com", "www.example.org", "example.co.ukexample.randomsite.net:9000",
    "blog.samplewebsite.org:8081/post.html", "ftp://ftp.example.com/files", "ftp://files.example.net:21/downloads",
    "irc.randomchat.org:6667/chatroom", "mail.samplecompany.com:25/inbox", "www.technewsportal.org:8084/latest-news",
    "gamingcommunity.com:8085/forums/7890", "https://blog.samplewebsite.org", "https://en.wikipedia.org/wiki/Random_topic",
    "http://www.ecommerce-store.biz/products/sale", "https://www.example.com/search?q=url",
    "https://www.example.com/page?id=123&category=tech", "https://www.example.com#section1",
    "https://www.example.com/page#comments", "ftp://username:password@ftp.example.com",
    "http://username:password@example.com", "http://www.example.museum", "http://bit.ly/abcdef",
    "https://tinyurl.com/xyz123", "http://192.168.1.1", "https://10.0.0.1:8080", "1.1.1.1",
]
# DCLM's list of strings that are not URLs runs together (its commas are missing): kept as written.
_NOT_URLS = ["U.S.A.", "e.g.", "3.14", "1.123.456.7899999.999.999.999123.123.123v3.12.7.4"]


@pytest.mark.parametrize("url", _URLS)
def test_url_removal(url):
    options = {"trigger": "page_start"}
    assert modified("url_removal", f"This URL {url} should be removed.", **options) == "This URL should be removed."
    assert modified("url_removal", f"This URL should be removed\n{url}\nThis text should still be on a new line.",
                    **options) == "This URL should be removed\nThis text should still be on a new line."


@pytest.mark.parametrize("text", _NOT_URLS)
def test_url_removal_leaves_what_is_not_a_url(text):
    page = f"This text {text} is not a URL.\n{text}"
    assert modified("url_removal", page, trigger="page_start") == page


def test_url_removal_trigger():
    """DCLM checks the TLD list with ``match``: only a page starting with a TLD's letters loses its
    URLs ("Th" is Thailand's; no TLD starts "We"). IP addresses go from every page."""
    assert modified("url_removal", "We read www.example.org daily.", trigger="page_start") == \
        "We read www.example.org daily."
    assert modified("url_removal", "We read www.example.org daily.", trigger="anywhere") == "We read daily."
    assert modified("url_removal", "We ping 10.0.0.1 daily.", trigger="page_start") == "We ping daily."


@pytest.mark.parametrize(("text", "two", "one"), [
    ("", "", ""),
    ("Hello, World", "Hello, World", "Hello, World"),
    ("Hello\n\nWorld", "Hello\n\nWorld", "Hello\nWorld"),
    ("Hello\n\n\n\n\nWorld", "Hello\n\nWorld", "Hello\nWorld"),
    ("Hello\nWorld\nAnother\nLine", "Hello\nWorld\nAnother\nLine", "Hello\nWorld\nAnother\nLine"),
    ("Hello\n\n\nWorld\n\n\nAnother\n\n\nLine", "Hello\n\nWorld\n\nAnother\n\nLine", "Hello\nWorld\nAnother\nLine"),
])
def test_newline_runs(text, two, one):
    assert modified("newline_runs", text, max_consecutive=2) == two
    assert modified("newline_runs", text, max_consecutive=1) == one


def test_short_lines():
    page = "Short line\n\na b c d e f g h i j k\n  There are exactly 10 words present in this line here\nHi"
    assert modified("short_lines", page, min_words=2) == \
        "Short line\n\na b c d e f g h i j k\n  There are exactly 10 words present in this line here"
    assert modified("short_lines", "", min_words=2) == ""


@pytest.mark.parametrize("counter", ["likes", "shares", "comments", "retweets", "reposts", "quotes", "bookmarks",
                                     "upvotes", "downvotes", "downloads", "views", "followers"])
def test_counter_lines(counter):
    page = f"3 {counter}\n3,000 {counter}\n123K {counter}!\n 5.1M   {counter}  \nThis line does not contain a counter."
    assert modified("counter_lines", page) == "This line does not contain a counter."


def test_counter_lines_keep_counters_inside_sentences():
    page = "123K quotes\n\nHello, World.\n\nHello, World with 3 views.\n3 views"
    assert modified("counter_lines", page) == "Hello, World.\n\nHello, World with 3 views."
    modified("counter_lines", "12345" * 10 + "\n" + "12345" * 10 + " likes")  # no catastrophic backtracking


@pytest.mark.parametrize(("max_fraction", "expected"), [
    (1.0, "HELLO WORLD\n\nhello world\nHello, World\n\nHello, world"),
    (2 / 12, "hello world\nHello, World\n\nHello, world"),
    (1 / 12, "hello world\n\nHello, world"),
    (0.0, "hello world"),
])
def test_uppercase_lines(max_fraction, expected):
    page = "HELLO WORLD\n\nhello world\nHello, World\n\nHello, world"
    assert modified("uppercase_lines", page, max_fraction=max_fraction) == expected


def test_uppercase_lines_single_line():
    assert modified("uppercase_lines", "Hello, World", max_fraction=2 / 12) == "Hello, World"
    assert modified("uppercase_lines", "Hello, World", max_fraction=2 / 12 - 1e-6) == ""


@pytest.mark.parametrize(("max_fraction", "expected"), [
    (1.0, "1a\n\n2bb\n\n3cc\nabcd"),
    (0.5, "1a\n\n2bb\n\n3cc\nabcd"),
    (1 / 3, "2bb\n\n3cc\nabcd"),
    (0.0, "abcd"),
])
def test_numeric_lines(max_fraction, expected):
    assert modified("numeric_lines", "1a\n\n2bb\n\n3cc\nabcd", max_fraction=max_fraction) == expected
    assert modified("numeric_lines", "12345", max_fraction=1.0) == "12345"
    assert modified("numeric_lines", "12345", max_fraction=1.0 - 1e-6) == ""


def test_substring_lines():
    cart = {"substrings": ["items in cart"], "location": "any", "max_words": 10}
    page = ("You have 7 items in cart right now\nYou have 7 items in cart right now but you can add more by "
            "clicking back onto the homepage.")
    assert modified("substring_lines", page, remove_substring_only=False, **cart) == (
        "You have 7 items in cart right now but you can add more by clicking back onto the homepage.")
    page = ("You have 7 items in cart right now\n  items in cart  \nYou have 7 items in cart right now but you can "
            "add more by clicking back onto the homepage.")
    assert modified("substring_lines", page, remove_substring_only=True, **cart) == (
        "You have 7 right now\nYou have 7 items in cart right now but you can add more by clicking back onto the "
        "homepage.")

    sign_in = {"substrings": ["sign-in"], "location": "prefix", "max_words": 10}
    rest = ("This is an article about how to sign-in.\n\nsign-in at this page by providing your username and "
            "password. If you forget your password you may contact a site administrator.")
    assert modified("substring_lines", "sign-in for full access\n" + rest, remove_substring_only=False,
                    **sign_in) == rest
    assert modified("substring_lines", "sign-in for full access\nsign-in  \n" + rest, remove_substring_only=True,
                    **sign_in) == "for full access\n" + rest

    more = {"substrings": ["Read more..."], "location": "suffix", "max_words": 10}
    rest = ("Read more...and find out!\n\nThis is a short summary about the article, which can be expanded upon if "
            "you wish. Read more...")
    assert modified("substring_lines", "Please read more...\n" + rest, remove_substring_only=False, **more) == rest
    assert modified("substring_lines", "Please read more...\n  read more...\n" + rest, remove_substring_only=True,
                    **more) == "Please\n" + rest


def test_substring_lines_without_word_cap():
    page = "JavaScript must be enabled\nThis is an article about JavaScript.\n\njava script enabled "
    assert modified("substring_lines", page, substrings=["enabled"], location="any",
                    remove_substring_only=False) == "This is an article about JavaScript."
    assert modified("substring_lines", page, substrings=["javascript", "enabled"], location="any",
                    remove_substring_only=False) == ""


# -- language (test_metadata_filters.py, test_language_id_enricher.py) ---------------------------
@pytest.mark.parametrize(("text", "kept"), [
    ("This is a sentence in English, and it is long enough to be recognised.", True),
    ("Dies ist ein deutscher Satz, der lang genug ist, um erkannt zu werden.", False),
    ("", False),
    ("   ", False),
    ("!!! ... ???", False),  # only spaces and punctuation: DCLM gives no language at all
])
def test_language_on_the_text(text, kept):
    assert keeps("language", text, languages=["en"], min_score=0.65, method="dclm") is kept


def test_language_threshold_is_strict_and_columns_method_reads_the_extract_columns():
    text = "This is a sentence in English, and it is long enough to be recognised."
    assert not keeps("language", text, languages=["en"], min_score=1.0, method="dclm")
    (row,) = run_steps({"language": {"languages": ["en"], "min_score": 0.65, "method": "columns"}}, [text],
                       language="de", language_score=0.99)
    assert not row["language_keep"]
    (row,) = run_steps({"language": {"languages": ["en"], "min_score": 0.65, "method": "columns"}}, [text],
                       language="en", language_score=0.65)
    assert row["language_keep"]  # the columns method keeps a score at the threshold
