"""fsspec I/O: local paths, ``s3://`` (s3fs) and ``https://`` behind one interface.

Commit protocol: a file is either absent or complete. Local files are written to a temporary
name in the same directory and renamed; object stores (S3) make a PUT visible only once it is
complete, so objects are written in one request.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from curation.core.errors import CurationError

REMOTE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "http", "https", "abfs", "az")


@dataclass(frozen=True)
class Storage:
    """How to reach remote storage. Credentials come from the standard AWS variables and files;
    only non-secret options (endpoint, anonymous access) live here so they can be logged."""

    endpoint_url: str | None = None
    anon: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def options_for(self, path: str) -> dict[str, Any]:
        protocol = protocol_of(path)
        if protocol in ("s3", "s3a"):
            options: dict[str, Any] = dict(self.extra)
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint
            if self.anon:
                options["anon"] = True
            return options
        return {}


def protocol_of(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else "file"


def is_local(path: str) -> bool:
    return protocol_of(path) == "file"


def filesystem(path: str, storage: Storage | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    storage = storage or Storage()
    return url_to_fs(path, **storage.options_for(path))


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def normalize_root(path: str) -> str:
    """Absolute path for local roots, unchanged URL for remote ones."""
    if is_local(path):
        return os.path.abspath(path.removeprefix("file://"))
    return path.rstrip("/")


def exists(path: str, storage: Storage | None = None) -> bool:
    fs, p = filesystem(path, storage)
    return fs.exists(p)


def read_bytes(path: str, storage: Storage | None = None) -> bytes:
    fs, p = filesystem(path, storage)
    with fs.open(p, "rb") as handle:
        return handle.read()


def write_atomic(path: str, data: bytes, storage: Storage | None = None) -> None:
    """Write ``data`` so that readers see either nothing or the whole file."""
    if is_local(path):
        local = path.removeprefix("file://")
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        folder, name = os.path.split(local)
        tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")  # hidden from dataset readers meanwhile
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, local)
        return
    fs, p = filesystem(path, storage)
    fs.pipe_file(p, data)


def commit_local_file(local_tmp: str, path: str, storage: Storage | None = None) -> None:
    """Move a finished local file to ``path`` so that readers see either nothing or all of it: a
    rename on the same disk (``local_tmp`` should sit beside the target), an upload elsewhere."""
    if is_local(path):
        target = path.removeprefix("file://")
        with open(local_tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(local_tmp, target)
        return
    fs, p = filesystem(path, storage)
    try:
        fs.put_file(local_tmp, p)
    finally:
        os.unlink(local_tmp)


def spool_path(path: str) -> str:
    """A local file to write ``path``'s bytes into before ``commit_local_file``: hidden beside the
    target on local disk, in the temporary directory for an object store."""
    if is_local(path):
        local = path.removeprefix("file://")
        folder, name = os.path.split(local)
        os.makedirs(folder or ".", exist_ok=True)
        return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    import tempfile

    handle, name = tempfile.mkstemp(prefix="curation-shard-", suffix=".tmp")
    os.close(handle)
    return name


def remove(path: str, storage: Storage | None = None, recursive: bool = False) -> None:
    fs, p = filesystem(path, storage)
    if fs.exists(p):
        fs.rm(p, recursive=recursive)


def list_files(directory: str, suffix: str = "", storage: Storage | None = None) -> list[str]:
    """Sorted full paths of files directly under ``directory`` ending with ``suffix``."""
    fs, p = filesystem(directory, storage)
    fs.invalidate_cache(p)  # files other processes wrote since this process last listed (s3fs caches listings)
    try:
        entries = fs.ls(p, detail=True)
    except FileNotFoundError:
        return []
    names = sorted(
        posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
    )
    return [join(directory, n) for n in names if n.endswith(suffix) and ".tmp-" not in n]


def cache_root() -> str:
    """Where remote resources are kept on local disk: ``$CURATION_CACHE``, else ``~/.cache/curation``."""
    return os.path.expanduser(os.environ.get("CURATION_CACHE") or "~/.cache/curation")


def local_copy(directory: str, storage: Storage | None = None, kind: str = "models") -> str:
    """A local directory holding the files directly under ``directory``: the directory itself when it
    is local, else a copy in the cache (``cache_root()/kind``). The copy is keyed by the remote path
    and each file's name, size and version tag (ETag or mtime), so every worker on a machine shares
    one download and a changed remote file is fetched anew. A copy appears whole or not at all: it is
    downloaded into a hidden folder and renamed."""
    if is_local(directory):
        return directory.removeprefix("file://")
    fs, p = filesystem(directory, storage)
    fs.invalidate_cache(p)  # the listing must be today's: a stale one would hand out an old model
    try:
        listing = fs.ls(p, detail=True)
    except FileNotFoundError:
        listing = []
    entries = sorted((e for e in listing if e.get("type") == "file"), key=lambda e: e["name"])
    if not entries:
        raise CurationError(f"{directory}: no files to copy")
    signature = [directory.rstrip("/")] + [
        (posixpath.basename(e["name"]), e.get("size"), str(e.get("ETag") or e.get("etag") or e.get("LastModified")
                                                           or e.get("mtime") or ""))
        for e in entries
    ]
    key = hashlib.sha256(repr(signature).encode()).hexdigest()[:24]
    root = os.path.join(cache_root(), kind)
    target = os.path.join(root, key)
    if os.path.isdir(target):
        return target
    staging = os.path.join(root, f".{key}.tmp-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        for entry in entries:
            fs.get_file(entry["name"], os.path.join(staging, posixpath.basename(entry["name"])))
        try:
            os.rename(staging, target)
        except OSError:  # another worker finished the same copy first
            if not os.path.isdir(target):
                raise
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return target


def put_directory(local_dir: str, target: str, storage: Storage | None = None) -> list[str]:
    """Copy the files directly under ``local_dir`` into the folder ``target`` (local or remote), each
    committed whole, streamed rather than read into memory; returns the target paths."""
    written = []
    for name in sorted(os.listdir(local_dir)):
        source = os.path.join(local_dir, name)
        if not os.path.isfile(source):
            continue
        path = join(target, name)
        if is_local(path):
            spool = spool_path(path)
            shutil.copyfile(source, spool)
            commit_local_file(spool, path)
        else:
            fs, p = filesystem(path, storage)
            fs.put_file(source, p)
        written.append(path)
    return written


def expand_inputs(patterns: list[str], storage: Storage | None = None) -> list[str]:
    """Expand globs and directories into a sorted, de-duplicated list of input files.

    A pattern that matches nothing is an error: silently reading nothing hides typos.
    """
    found: list[str] = []
    for pattern in patterns:
        protocol = protocol_of(pattern)
        if protocol in ("http", "https"):
            found.append(pattern)
            continue
        if protocol == "file":
            local = os.path.expanduser(pattern.removeprefix("file://"))
            if os.path.isdir(local):
                matches = sorted(
                    os.path.join(dirpath, name)
                    for dirpath, _, names in os.walk(local)
                    for name in names
                    if not name.startswith(".")
                )
            else:
                matches = sorted(globlib.glob(local, recursive=True))
            matches = [os.path.abspath(m) for m in matches if os.path.isfile(m)]
        else:
            fs, p = filesystem(pattern, storage)
            if any(ch in p for ch in "*?["):
                matches = [f"{protocol}://{m}" for m in sorted(fs.glob(p))]
            elif fs.isdir(p):
                matches = [f"{protocol}://{m}" for m in sorted(fs.find(p))]
            elif fs.exists(p):
                matches = [pattern]
            else:
                matches = []
        if not matches:
            raise CurationError(f"input not found: {pattern}")
        found.extend(matches)
    return sorted(dict.fromkeys(found))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, storage: Storage | None = None, chunk: int = 1 << 22) -> str:
    fs, p = filesystem(path, storage)
    digest = hashlib.sha256()
    with fs.open(p, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
