"""Canonical URL keys: the addresses of one page meet, distinct pages stay apart, and the fast path
for plain URLs agrees with w3lib's canonicalisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from w3lib.url import canonicalize_url

from curation.dedup.urls import _normalised, canonical_url


@pytest.mark.parametrize("variant", [
    "https://example.com/news/story?id=7",
    "http://example.com/news/story?id=7",
    "HTTPS://WWW.EXAMPLE.COM/news/story?id=7",
    "https://example.com:443/news/story?id=7",
    "http://www.example.com:80/news/story?id=7#comments",
    "https://example.com./news/story?id=7",
    "https://example.com/news/./archive/../story?id=7",
    "https://example.com/news/st%6Fry?id=7",
    "https://example.com/news/story?utm_source=feed&id=7&utm_medium=rss&fbclid=IwAR0",
    "https://example.com/news/story?id=7&gclid=abc&PHPSESSID=f00",
    "https://example.com/news/story;jsessionid=0A1B2C?id=7",
    "  https://example.com/news/story?id=7\n",
    "example.com/news/story?id=7",
])
def test_addresses_of_one_page_share_a_key(variant):
    assert canonical_url(variant) == "example.com/news/story?id=7"


@pytest.mark.parametrize("a, b", [
    ("https://example.com/Page", "https://example.com/page"),  # servers may tell path case apart
    ("https://example.com/a/", "https://example.com/a"),
    ("https://example.com/story?id=7", "https://example.com/story?id=8"),
    ("https://example.com/member.php?uid=12", "https://example.com/member.php?uid=13"),  # an id, not a tracker
    ("https://example.com/search?source=web", "https://example.com/search?source=news"),
    ("https://blog.example.com/", "https://example.com/"),
    ("https://example.com:8443/", "https://example.com/"),
    ("http://example.com:443/", "https://example.com/"),  # 443 is not http's default port
])
def test_distinct_pages_keep_distinct_keys(a, b):
    assert canonical_url(a) != canonical_url(b)


def test_query_order_and_unicode_are_normalised():
    assert canonical_url("https://example.com/?b=2&a=1") == canonical_url("https://example.com/?a=1&b=2")
    assert canonical_url("https://bücher.example/straße") == canonical_url("https://xn--bcher-kva.example/stra%C3%9Fe")


def test_rejected_urls_key_as_themselves():
    assert canonical_url("http://[::1") == "http://[::1"
    assert canonical_url("http://example.com:http/") == "http://example.com:http/"
    assert canonical_url("") == canonical_url("   ") == ""


_host = st.lists(st.from_regex(r"[A-Za-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=4).map(".".join)
_userinfo = st.sampled_from(["", "User@", "Ann:PassWord@", "@"])
_port = st.sampled_from(["", ":", ":80", ":443", ":8080"])
_plain_path = st.text(alphabet="abcXYZ019-._~:/@!$&'()*+,;=", max_size=30)
_plain_query = st.one_of(st.just(None), st.text(alphabet="aBz09-._~=&", max_size=30))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["http", "https", "HTTP", "hTTps"]), _userinfo, _host, _port, _plain_path, _plain_query)
def test_fast_path_agrees_with_w3lib(scheme, userinfo, host, port, path, query):
    """The parse-free path for plain ASCII URLs gives what w3lib gives them (or rejects them too)."""
    from urllib.parse import urlsplit

    url = f"{scheme}://{userinfo}{host}{port}/{path}" + ("" if query is None else f"?{query}")
    try:
        expected = urlsplit(canonicalize_url(url))
    except ValueError:
        with pytest.raises(ValueError):
            _normalised(url)
        return
    assert _normalised(url) == (expected.scheme, expected.netloc, expected.path, expected.query)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60),
                 st.builds(lambda s, h, p: f"{s}://{h}/{p}", st.sampled_from(["http", "https", "ftp"]),
                           st.text(max_size=20), st.text(max_size=40))))
def test_any_string_gets_a_stable_key(url):
    """No input crashes the key, and a key read back as a URL is its own key."""
    key = canonical_url(url)
    assert isinstance(key, str)
    assert canonical_url(key) == key or canonical_url("http://" + key) == key


def test_unknown_url_key_is_a_config_error():
    from curation.dedup.stage import DedupConfig

    with pytest.raises(ValueError, match="url_key must be canonical or exact"):
        DedupConfig(url_key="lower")
