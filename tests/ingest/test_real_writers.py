"""WARCs written by real crawlers against a real local web server (not built by hand): wget's
``--warc-file``, warcio's ``capture_http`` and warcio.js (Browsertrix's writer, from npm). The
server serves the fixture HTML pages, a page that redirects, and answers 404 for what it lacks
(wget asks for robots.txt), so the WARCs hold what such crawls hold: requests, 200s, a 301, 404
error pages, wget's own log and Browsertrix's page text as resource records."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_warc_shapes import extract


class _Site(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's protocol)
        if self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/wikipedia_page1.html")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def site(shared_data: Path, tmp_path: Path):
    pages = sorted((shared_data / "html" / "dclm-tests").glob("*.html"))
    root = tmp_path / "site"
    root.mkdir()
    links = []
    for source in pages:
        shutil.copy(source, root / source.name)
        links.append(f'<li><a href="{source.name}">{source.stem}</a></li>')
    links += ['<li><a href="moved">moved</a></li>', '<li><a href="gone.html">gone</a></li>']
    (root / "index.html").write_text(f"<html><body><h1>Pages</h1><ul>{''.join(links)}</ul></body></html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Site(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", [p.name for p in pages]
    server.shutdown()
    server.server_close()


def _check(rows, stats, pages: list[str]):
    urls = {row["url"].rsplit("/", 1)[-1] for row in rows}
    assert set(pages) <= urls, sorted(set(pages) - urls)
    assert "gone.html" not in urls and "moved" not in urls and "robots.txt" not in urls
    assert stats.dropped.get("http_status:404", 0) >= 1 and stats.dropped["http_status:301"] == 1
    by_url = {row["url"].rsplit("/", 1)[-1]: row["text"] for row in rows}
    assert all(len(by_url[name]) > 50 for name in pages)  # main text, not an empty shell
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.skipif(shutil.which("wget") is None, reason="GNU wget is not installed")
def test_a_wget_warc_of_a_real_server(site, tmp_path):
    base, pages = site
    subprocess.run(["wget", "--quiet", "--recursive", "--level=1", "--no-parent", "--warc-file=crawl",
                    "--directory-prefix=mirror", f"{base}/"],
                   cwd=tmp_path, timeout=120, check=False)  # wget exits 8 on the 404, by design
    rows, stats = extract(tmp_path / "crawl.warc.gz", tmp_path)
    _check(rows, stats, pages)
    assert stats.dropped["non_web_resource"] == 2  # wget's arguments and log, stored as metadata:// resources
    assert stats.extra["skipped:request"] >= len(pages) and stats.extra["skipped:warcinfo"] == 1


def test_a_warcio_capture_of_a_real_server(site, tmp_path):
    from warcio.capture_http import capture_http

    base, pages = site
    path = tmp_path / "capture.warc.gz"
    with capture_http(str(path)):
        for name in ["index.html", *pages, "moved", "gone.html"]:
            try:
                urllib.request.urlopen(f"{base}/{name}", timeout=30).read()
            except urllib.error.HTTPError as error:
                error.read()
    rows, stats = extract(path, tmp_path)
    _check(rows, stats, pages)
    assert stats.dropped == {"http_status:404": 1, "http_status:301": 1}


_WRITERS = Path(__file__).resolve().parents[1] / "writers"


def _needs_node_writers() -> None:
    """warcio.js comes from npm (`make install` runs `npm ci` in tests/writers). CI sets
    CURATION_REQUIRE_NODE_WRITERS so that a missing writer fails there instead of skipping."""
    import os

    missing = ("node is not installed" if shutil.which("node") is None else
               None if (_WRITERS / "node_modules" / "warcio").is_dir() else "warcio.js is not installed (npm ci --prefix tests/writers)")
    if missing and os.environ.get("CURATION_REQUIRE_NODE_WRITERS"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def test_a_warcio_js_capture_as_browsertrix_writes_it(site, tmp_path):
    """WARC/1.1 from webrecorder's JavaScript writer, records as browsertrix-crawler lays them out:
    its text and page-info resources under urn: URIs are not web pages (the page is kept once)."""
    _needs_node_writers()
    base, pages = site
    path = tmp_path / "browsertrix.warc.gz"
    urls = [f"{base}/{name}" for name in ["index.html", *pages, "moved", "gone.html"]]
    subprocess.run(["node", str(_WRITERS / "warcio_capture.mjs"), str(path), *urls], cwd=_WRITERS,
                   timeout=120, check=True)
    rows, stats = extract(path, tmp_path)
    _check(rows, stats, pages)
    assert stats.dropped == {"http_status:404": 1, "http_status:301": 1,
                             "non_web_resource": 2 * (len(pages) + 1)}  # urn:text: and urn:pageinfo:
    assert stats.extra["skipped:request"] == len(urls) and stats.extra["skipped:warcinfo"] == 1
