"""The input layer of the commands: what ``--input`` may name, resolved to files.

``resolve_inputs`` expands local paths, globs, folders, ``s3://`` and ``https://`` URLs; ``demo``
writes the bundled demo crawl; a finished stage folder stands for its committed shards.
``jsonl_to_parquet`` turns JSONL(.gz/.zst) documents into Parquet shards for stages that read
Parquet (Parquet passes through).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.core import io as fio
from curation.core import layout
from curation.core.errors import CurationError


def resolve_inputs(patterns: list[str], run_root: str, storage: fio.Storage) -> list[str]:
    """Expand inputs; 'demo' writes the demo crawl; a curate output directory means its shards."""
    from curation.ingest.demo_crawl import DemoCrawl

    resolved: list[str] = []
    for pattern in patterns:
        if pattern == "demo":
            resolved += DemoCrawl().write(fio.join(run_root, "_input"))
            continue
        manifest = layout.read_manifest(fio.normalize_root(pattern), storage) if "*" not in pattern else None
        if manifest is not None:  # a curate output folder: its committed shards
            resolved += layout.data_files(fio.normalize_root(pattern), manifest)
            continue
        resolved += fio.expand_inputs([pattern], storage)
    return resolved


def jsonl_to_parquet(inputs: list[str], directory: str, storage: fio.Storage, id_field: str, text_field: str) -> list[str]:
    """JSONL inputs become Parquet shards (one per file); Parquet inputs pass through."""
    out = []
    for index, path in enumerate(inputs):
        name = path.rsplit("/", 1)[-1]
        if ".parquet" in name:
            out.append(path)
            continue
        fs, p = fio.filesystem(path, storage)
        with fs.open(p, "rb") as raw, pa.input_stream(raw, compression=_compression(name)) as stream:
            try:
                table = pajson.read_json(stream)
            except pa.ArrowInvalid as exc:
                raise CurationError(f"{path}: not valid JSONL ({exc})") from None
        for field in (id_field, text_field):
            if field not in table.schema.names:
                raise CurationError(f"{path}: no field {field!r} (fields: {', '.join(table.schema.names)})")
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        target = fio.join(directory, f"part-{index:05d}.parquet")
        fio.write_atomic(target, buffer.getvalue(), storage)
        out.append(target)
    return out


def _compression(name: str) -> str | None:
    return {"gz": "gzip", "zst": "zstd", "bz2": "bz2"}.get(name.rsplit(".", 1)[-1])
