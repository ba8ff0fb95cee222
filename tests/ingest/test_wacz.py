"""WACZ packages (Webrecorder's format, what Browsertrix and ArchiveWeb.page write) and ZIPs of crawl
files: the extract stage reads the WARCs inside as it reads them alone. The packages are laid out
as the WACZ 1.1.1 specification says: WARCs under ``archive/``, stored uncompressed, beside a CDXJ
index, a page list and ``datapackage.json``."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest
from flaky_http import flaky_server
from test_documents import read
from test_warc_shapes import extract


@pytest.fixture(scope="module")
def warcs(shared_data: Path) -> dict[str, bytes]:
    """Two real WARCs: wget's (gzip per record), and a Common Crawl one decompressed (plain)."""
    return {"archive/wget.warc.gz": (shared_data / "warc" / "dolma_wget-sample-0000.warc.gz").read_bytes(),
            "archive/cc.warc": gzip.decompress((shared_data / "warc" / "cc-main-2024-22_whirlwind.warc.gz").read_bytes())}


def write_wacz(path: Path, warcs: dict[str, bytes], deflated: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as package:
        for name, data in warcs.items():
            package.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED)
        package.writestr("indexes/index.cdx", " ".join(warcs) + "\n")
        package.writestr("pages/pages.jsonl", json.dumps({"format": "json-pages-1.0", "id": "pages"}) + "\n")
        package.writestr("datapackage.json", json.dumps({"profile": "data-package", "wacz_version": "1.1.1"}))
    return path


def alone(warcs: dict[str, bytes], tmp_path: Path) -> list[dict]:
    rows = []
    for name, data in warcs.items():
        path = tmp_path / "alone" / name.rsplit("/", 1)[-1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        rows += extract(path, tmp_path / "alone" / f"out-{path.name}")[0]
    return rows


@pytest.mark.parametrize(("name", "deflated"), [("crawl.wacz", ()), ("crawl.wacz", ("archive/cc.warc",)),
                                                ("crawl-part-0", ()), ("pages.zip", ())],
                         ids=["stored", "one-deflated", "known-by-its-bytes", "zip"])
def test_a_wacz_is_read_as_its_warcs(tmp_path, warcs, name, deflated):
    """The same pages as the WARCs read alone, each id unique across the members, each row's source
    naming its member; the package's other files are counted as skipped, not as bad records."""
    rows, stats = extract(write_wacz(tmp_path / name, warcs, deflated), tmp_path / "out")
    expected = alone(warcs, tmp_path)
    assert len(expected) > 20
    assert [(r["url"], r["text"]) for r in rows] == [(r["url"], r["text"]) for r in expected]
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["source"].rsplit("#", 1)[-1] for r in rows} == set(warcs)
    assert stats.extra["skipped:zip_member"] == 3 and "corrupt_zip" not in stats.dropped


def test_a_damaged_member_loses_only_its_damaged_records(tmp_path, warcs):
    """Bytes overwritten inside the stored wget WARC: the reader resynchronises inside the member
    (read in place, seekable) and the other member is read whole."""
    path = write_wacz(tmp_path / "crawl.wacz", warcs)
    data = bytearray(path.read_bytes())
    start = data.find(warcs["archive/wget.warc.gz"][:64])
    middle = start + len(warcs["archive/wget.warc.gz"]) // 2
    data[middle : middle + 200] = b"\x00" * 200
    path.write_bytes(bytes(data))
    rows, stats = extract(path, tmp_path / "out")
    expected = alone(warcs, tmp_path)
    cc = [r["url"] for r in expected if "wget" not in r["source"]]
    assert [r["url"] for r in rows if r["source"].endswith("cc.warc")] == cc
    assert len(expected) - 3 <= len(rows) < len(expected)  # one or two records of the damaged member
    assert stats.dropped.keys() & {"corrupt_gzip", "truncated_record", "corrupt_record"}


def test_a_wacz_cut_short_is_counted_not_fatal(tmp_path, warcs):
    """No central directory (the download stopped): counted as ``corrupt_zip``, the stage goes on."""
    data = write_wacz(tmp_path / "whole.wacz", warcs).read_bytes()
    (tmp_path / "cut.wacz").write_bytes(data[: len(data) // 2])
    rows, stats = extract(tmp_path / "cut.wacz", tmp_path / "out")
    assert rows == [] and dict(stats.dropped) == {"corrupt_zip": 1}


def test_a_remote_wacz_is_read_by_ranges(tmp_path, warcs):
    """Over HTTP the stored members are read in place with ranged requests, never downloaded whole
    in one response."""
    data = write_wacz(tmp_path / "crawl.wacz", warcs).read_bytes()
    with flaky_server({"crawl.wacz": data}, lambda number, request: None) as (base, log):
        rows, _ = extract(base + "crawl.wacz", tmp_path / "out")  # type: ignore[arg-type]
    assert [r["text"] for r in rows] == [r["text"] for r in alone(warcs, tmp_path)]
    assert all(rng for method, _, rng, _ in log if method == "GET")


def test_the_documents_reader_names_a_wacz_as_not_documents(tmp_path, warcs):
    rows, stats = read(write_wacz(tmp_path / "crawl.wacz", warcs), tmp_path / "out")
    assert rows == [] and dict(stats.dropped) == {"not_documents:zip": 1}
