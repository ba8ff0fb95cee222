"""The input layer of the commands: what ``--input`` may name, resolved to files.

``resolve_inputs`` expands local paths, globs, folders, ``s3://`` and ``https://`` URLs; ``demo``
writes the bundled demo crawl; a finished stage folder stands for its committed shards, a run
folder for those of its last finished stage, a Hugging Face dataset saved to disk for its Arrow
files; ``@LISTING`` reads one input per line from a file
(plain, gzip or zstd, local or remote: Common Crawl's ``warc.paths.gz``), relative entries taken
from ``base`` (``--input-base https://data.commoncrawl.org/``) or else from the listing's folder.
Stages that read documents get a ``documents`` stage in front of them for inputs that are not
a finished stage's shards (``with_documents_stage``): one reader and one bad-record policy
(``curation.ingest.documents``) for JSONL(.gz/.zst/.bz2/.xz), Parquet and Arrow in any schema.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from curation.core import io as fio
from curation.core import layout
from curation.core.errors import CurationError
from curation.ingest.readers import compression_by_magic

LISTING_PREFIX = "@"


def read_listing(listing: str, storage: fio.Storage, base: str | None = None) -> list[str]:
    """The inputs a listing names, one per line (blank lines and ``#`` comments skipped); an entry
    that is neither a URL nor an absolute path is taken relative to ``base``, or else to the
    listing's own folder."""
    try:
        data = fio.read_bytes(listing, storage)
    except (OSError, ValueError) as exc:
        raise CurationError(f"input listing {listing}: {exc}") from None
    compression = compression_by_magic(data)
    if compression == ".gz":
        data = gzip.decompress(data)
    elif compression == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    entries = [line.strip() for line in data.decode("utf-8").splitlines()]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise CurationError(f"input listing {listing} names no input")
    root = base or (os.path.dirname(os.path.abspath(listing)) if fio.is_local(listing) else listing.rsplit("/", 1)[0])
    return [entry if not fio.is_local(entry) or os.path.isabs(entry) else fio.join(root, entry) for entry in entries]


def resolve_inputs(patterns: list[str], run_root: str, storage: fio.Storage, base: str | None = None) -> list[str]:
    """Expand inputs; 'demo' writes the demo crawl; a curate output directory means its shards;
    ``@LISTING`` the inputs a listing names (``read_listing``)."""
    from curation.ingest.demo_crawl import DemoCrawl

    resolved: list[str] = []
    for pattern in patterns:
        if pattern.startswith(LISTING_PREFIX):
            resolved += fio.expand_inputs(read_listing(pattern[len(LISTING_PREFIX):], storage, base), storage)
            continue
        if pattern == "demo":
            resolved += DemoCrawl().write(fio.join(run_root, "_input"))
            continue
        root = fio.normalize_root(pattern)
        if "*" not in pattern and (saved := saved_dataset_files(root, storage)) is not None:
            resolved += saved  # a Hugging Face dataset saved to disk: its data, not its JSON state files
            continue
        if "*" not in pattern and (layout.read_manifest(root, storage) is not None
                                   or fio.exists(fio.join(root, layout.RUN_FILE), storage)):
            # a stage folder, or a run folder (its last finished stage): the committed shards
            directory, manifest = layout.find_stage(root, storage)
            resolved += layout.data_files(directory, manifest)
            continue
        resolved += fio.expand_inputs([pattern], storage)
    return resolved


def saved_dataset_files(root: str, storage: fio.Storage) -> list[str] | None:
    """The Arrow files of a Hugging Face dataset saved with ``save_to_disk`` (``state.json`` names
    them in ``_data_files``; a ``DatasetDict``'s ``dataset_dict.json`` names its split folders), or
    None when ``root`` is not one."""
    fs, fs_path = fio.filesystem(root, storage)
    if fio.protocol_of(root) in ("http", "https") or not fs.isdir(fs_path):  # a file (or a URL) is not a saved dataset
        return None

    def read_json(name: str) -> Any:
        try:
            return json.loads(fio.read_bytes(fio.join(root, name), storage))
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return None

    if isinstance(splits := read_json("dataset_dict.json"), dict) and isinstance(splits.get("splits"), list):
        files = [saved_dataset_files(fio.join(root, str(split)), storage) for split in splits["splits"]]
        return [path for split_files in files if split_files for path in split_files]
    state = read_json("state.json")
    if not isinstance(state, dict) or not isinstance(state.get("_data_files"), list):
        return None
    return [fio.join(root, entry["filename"]) for entry in state["_data_files"]
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str)]


def from_finished_stages(paths: list[str], storage: fio.Storage) -> bool:
    """Whether every path is a shard a finished curate stage committed (already clean documents);
    each folder's manifest is read once."""
    committed: dict[str, set[str]] = {}
    for path in paths:
        directory, _, name = path.rpartition("/")
        if directory not in committed:
            manifest = layout.read_manifest(directory, storage) if directory else None
            committed[directory] = {f["name"] for f in manifest.get("files", [])} if manifest else set()
        if name not in committed[directory]:
            return False
    return True


def with_documents_stage(stages: dict[str, Any], first_is_source: bool, inputs: list[str], storage: fio.Storage,
                         reader_options: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's stages, behind a ``documents`` stage named ``input`` when its first stage
    reads documents rather than raw crawl and some input is not a finished stage's shard (JSONL,
    or Parquet from elsewhere): every command reads documents with the same bad-record policy."""
    if first_is_source or from_finished_stages(inputs, storage):
        return stages
    return {"input": {"kind": "documents", **reader_options}, **stages}
