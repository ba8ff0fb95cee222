"""Canonical URL keys: the addresses one page is crawled under get one key.

Syntax-based normalisation (RFC 3986 section 6.2.2: case of scheme and host, percent-encoding,
dot segments; IDNA hosts; query arguments sorted, the fragment dropped) is w3lib's
``canonicalize_url``, Scrapy's request fingerprint. On top of it the key folds what crawls
of one page differ by in practice and a server never tells apart: ``http`` and ``https``, a
leading ``www.``, the scheme's default port, a trailing dot on the host, and query arguments
and path parameters that only track the visitor (``utm_*``, ``fbclid``, ``gclid``, session ids).

Path case and a trailing slash are kept: servers may tell ``/a`` from ``/A`` and ``/a/``, and a
key that merges two pages drops one of them. A URL the parser rejects (a bad port, a broken
IPv6 host) keys as itself, so copies of it still meet.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url

# ClearURLs' global rules and the ad networks' documented click ids: never the page's content.
_TRACKING_ARGUMENT = re.compile(
    r"(?:utm_[^=]*|fbclid|gclid|gclsrc|dclid|gbraid|wbraid|msclkid|yclid|twclid|ttclid|igshid|mc_cid|mc_eid"
    r"|_ga|_gl|_hsenc|_hsmi|__hssc|__hstc|__hsfp|mkt_tok|oly_anon_id|oly_enc_id|vero_id|vero_conv|wickedid"
    r"|phpsessid|jsessionid|sessionid|aspsessionid[a-z]*)(?:=|$)",
    re.IGNORECASE,
)
_SESSION_PATH_PARAMETER = re.compile(r";(?:jsessionid|phpsessid|sessionid)=[^/;]*", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# ASCII that RFC 3986 allows unencoded, minus what w3lib rewrites ('%', '?', '#', ';' path parameters,
# brackets; in the query all but unreserved characters): a URL of these without dot segments is in
# w3lib's form once its host is lowercased and its query arguments sorted, with no parse or re-quote.
_PLAIN = re.compile(r"[A-Za-z0-9\-._~:/@!$&'()*+,=]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-._~=&]*")
_DEFAULT_PORT = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """The dedup key of ``url``: ``host[:port]/path[?query]``, as described above ("" for none)."""
    url = url.strip()
    if not url:
        return ""
    if not _HAS_SCHEME.match(url):
        url = "http://" + url.lstrip("/")
    try:
        scheme, netloc, path, query = _normalised(url)
    except ValueError:
        return url
    userinfo, _, host = netloc.rpartition("@")
    port = ""
    if ":" in host and not host.endswith("]"):  # "[::1]" is an IPv6 host with no port
        host, _, port = host.rpartition(":")
    host = host.rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if port and _DEFAULT_PORT.get(scheme) == int(port):
        port = ""
    path = _SESSION_PATH_PARAMETER.sub("", path) or "/"
    if query:
        query = "&".join(arg for arg in query.split("&") if not _TRACKING_ARGUMENT.match(arg))
    return (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port else "") + path + (f"?{query}" if query else "")


def _normalised(url: str) -> tuple[str, str, str, str]:
    """(scheme, netloc, path, query) in w3lib's canonical form; ValueError for what it rejects."""
    head, _, query = url.partition("?")
    if url.isascii() and _PLAIN.fullmatch(head) and _PLAIN_QUERY.fullmatch(query) and "/." not in head.partition("://")[2]:
        arguments = sorted(tuple(piece.partition("=")[::2]) for piece in query.split("&") if piece)
        if all("=" not in value for _, value in arguments):  # "a=1=2" is w3lib's "a=1%3D2"
            parts = urlsplit(head)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number, as w3lib does
            userinfo, at, host = parts.netloc.rpartition("@")
            return (parts.scheme.lower(), userinfo + at + host.lower().removesuffix(":"), parts.path or "/",
                    "&".join(f"{name}={value}" for name, value in arguments))
    parts = urlsplit(canonicalize_url(url))
    return parts.scheme, parts.netloc, parts.path, parts.query
