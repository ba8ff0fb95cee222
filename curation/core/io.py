"""fsspec I/O: local paths, ``s3://`` (s3fs) and ``https://`` behind one interface.

Commit protocol: a file is either absent or complete. Local files are written to a temporary
name in the same directory and renamed; object stores (S3) make a PUT visible only once it is
complete, so objects are written in one request.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import io
import itertools
import logging
import os
import posixpath
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import fsspec
from fsspec.core import url_to_fs

from curation.core.errors import CurationError

logger = logging.getLogger(__name__)
T = TypeVar("T")

REMOTE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "http", "https", "abfs", "az")


@dataclass(frozen=True)
class Storage:
    """How to reach remote storage. Credentials come from the standard AWS variables and files;
    only non-secret options (endpoint, anonymous access) live here so they can be logged."""

    endpoint_url: str | None = None
    anon: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # an input read from a remote store that fails in passing (a 503 or 429 from a busy server, a
    # dropped connection, a timeout) is read again from where it stopped, this many times, waiting
    # retry_wait_s, then twice that, and so on (6 and 1 s: about a minute in all)
    retries: int = 6
    retry_wait_s: float = 1.0

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


class RemoteReadError(CurationError):
    """A remote input that kept failing after every retry: the shard stops (nothing of it is
    committed), and a rerun reads it again."""


# HTTP statuses a server answers for a moment (timeout, too many requests, overload, gateways)
_PASSING_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def passing_cause(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain that a retry may get past (a 503 or 429, a dropped connection, a
    timeout), or None. fsspec's HTTP file system reports any failure to learn a file's size, a 503
    included, as ``FileNotFoundError`` raised from the real error; a real 404 has no such cause."""
    try:
        import aiohttp

        passing: tuple[type, ...] = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    except ImportError:  # pragma: no cover (fsspec[http] brings aiohttp)
        passing = ()
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if (isinstance(cause, (ConnectionError, TimeoutError, *passing))
                or getattr(cause, "status", None) in _PASSING_STATUSES
                or type(cause).__name__ in ("FSTimeoutError", "ResponseStreamingError", "IncompleteRead", "ReadTimeoutError")):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def retry_passing(attempt: Callable[[], T], storage: Storage, describe: Callable[[], str],
                  after_failure: Callable[[], None] = lambda: None) -> T:
    """``attempt()``, made again after a passing failure (``passing_cause``), waiting
    ``storage.retry_wait_s``, then twice that, and so on, ``storage.retries`` times; then
    ``RemoteReadError`` saying what (``describe()``) failed and why. Other errors are raised at once."""
    wait = storage.retry_wait_s
    for tries in itertools.count():
        try:
            return attempt()
        except Exception as exc:
            if (cause := passing_cause(exc)) is None:
                raise
            if tries >= storage.retries:
                raise RemoteReadError(f"{describe()} still failed after {tries} retries "
                                      f"({type(cause).__name__}: {cause}); rerun to resume") from exc
            pause = max(wait, asked_to_wait(cause))
            logger.warning("%s failed (%s: %s); retrying in %.1fs", describe(), type(cause).__name__, cause, pause)
            time.sleep(pause)
            wait *= 2
            after_failure()
    raise AssertionError("unreachable")


_LONGEST_ASKED_WAIT = 600.0


def asked_to_wait(cause: BaseException) -> float:
    """The seconds a server's ``Retry-After`` asks for (a number, or an HTTP date), at most ten
    minutes; 0 when it asks for nothing."""
    headers = getattr(cause, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        import email.utils

        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), _LONGEST_ASKED_WAIT)


class RetryingReader(io.RawIOBase):
    """A remote file read through passing failures: a read that fails is made again from the same
    offset on a file opened anew, after a backoff (``Storage.retries``, ``retry_wait_s``); opening
    is retried the same way. A failure that is not passing (a 404, a denied request) is raised at
    once, and one that outlasts the retries as ``RemoteReadError``. Wrap it in
    ``io.BufferedReader`` for line reading; it is seekable, as the WARC reader needs."""

    def __init__(self, path: str, storage: Storage, block_size: int = 1 << 22) -> None:
        self.path, self._storage, self._block_size = path, storage, block_size
        self._position = 0
        self.retries = 0  # passing failures got past, for the shard's stats
        self._file: Any = None
        self.size: int | None = getattr(self._retrying(self._opened, "opening"), "size", None)

    def _opened(self) -> Any:
        """The file, opened at the current offset if a failure closed it."""
        if self._file is None:
            fs, p = filesystem(self.path, self._storage)
            fs.invalidate_cache(p)
            self._file = fs.open(p, "rb", block_size=self._block_size)
            self._file.seek(self._position)
        return self._file

    def _retrying(self, attempt: Callable[[], Any], doing: str) -> Any:
        return retry_passing(attempt, self._storage, lambda: f"{self.path}: {doing} at byte {self._position:,}",
                             self._drop_file)

    def _drop_file(self) -> None:
        """After a failure: the next attempt opens the file anew (a fresh connection, same offset)."""
        self.retries += 1
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def readinto(self, buffer: Any) -> int:
        data = self._retrying(lambda: self._opened().read(len(buffer)), "reading")
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence == io.SEEK_END:
            if self.size is None:
                raise OSError(f"{self.path}: the server gives no size to seek from the end")
            offset += self.size
        self._position = offset
        if self._file is not None:
            self._file.seek(offset)  # fsspec files only move their offset here: nothing to retry
        return offset

    def close(self) -> None:
        if not self.closed and self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
        super().close()


def open_input(path: str, storage: Storage | None = None, block_size: int = 1 << 22) -> tuple[BinaryIO, int]:
    """An input file for reading, and its size in bytes (0 when unknown): a local file as it is, a
    remote one through ``RetryingReader`` (buffered)."""
    storage = storage or Storage()
    if is_local(path):
        local = path.removeprefix("file://")
        return open(local, "rb"), os.path.getsize(local)  # noqa: SIM115 (the caller closes it)
    raw = RetryingReader(path, storage, block_size)
    return io.BufferedReader(raw, buffer_size=1 << 16), raw.size or 0


RETRIED_READS = "retried:remote_read"  # the stats counter of a shard's reads made again


def retries_of(handle: BinaryIO) -> int:
    """How many passing failures reading an ``open_input`` file got past (0 for a local file)."""
    return getattr(getattr(handle, "raw", None), "retries", 0)


def count_retries(handle: BinaryIO, counters: dict[str, float]) -> None:
    """Add the reads ``handle`` made again to a shard's counters (``RETRIED_READS``): a flaky server
    got past is shown in the stats, not only in worker logs."""
    if retries := retries_of(handle):
        counters[RETRIED_READS] = counters.get(RETRIED_READS, 0.0) + retries


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
