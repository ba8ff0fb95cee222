"""The run layout, in one place: where a run keeps its stages and their metadata, and how a
stage's output is found again (by the runner, stats, mixes, publish, the trainer and the CLI).

    RUN/run.json                     resolved pipeline, versions, start/end of each invocation
    RUN/<stage>/_plan.json           the shard list and stage key, written before work starts
    RUN/<stage>/part-00000.parquet   committed shards (other stages: .npy token files, ...)
    RUN/<stage>/_receipts/*.json     one per committed shard (its files, checksums, stats)
    RUN/<stage>/_stats/shards.parquet per-shard stats
    RUN/<stage>/_manifest.json       written last: the stage is finished

A one-stage command (``curate filter --output DIR``) writes the stage folder itself at DIR.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.core import io as fio
from curation.core.errors import CurationError

RUN_FILE = "run.json"
MANIFEST = "_manifest.json"
PLAN = "_plan.json"
STATS = "_stats/shards.parquet"  # in a folder: `DIR/*.parquet` globs must match the data shards only
RECEIPTS_DIR = "_receipts"
# A stage's scratch folder for corpus-wide work (dedup's tables, BFF's hashes) and the checkpoint of
# its resolve's phases; the runner removes it once the stage's manifest is committed
WORK_DIR = "_work"
CHECKPOINT = "_phases.json"  # in WORK_DIR: the finished phases of the stage's resolve (curation.core.phases)
MANIFEST_FORMAT = "curation.stage/1"


def checkout_root() -> Path | None:
    """The source checkout this package runs from, or None when it is installed elsewhere."""
    import curation

    root = curation._CHECKOUT_ROOT  # computed once, where the package bootstraps its search path
    return root if (root / "pyproject.toml").is_file() else None


def read_json(path: str, storage: fio.Storage | None = None) -> dict[str, Any] | None:
    try:
        return json.loads(fio.read_bytes(path, storage))
    except (FileNotFoundError, NotADirectoryError):  # also: a file given where a folder was looked into
        return None


def stage_dir(run_root: str, stage: str) -> str:
    return fio.join(run_root, stage)


def receipt_path(directory: str, shard: str) -> str:
    return fio.join(directory, RECEIPTS_DIR, f"{shard}.json")


def read_manifest(directory: str, storage: fio.Storage | None = None) -> dict[str, Any] | None:
    """A finished stage's manifest, or None while the stage is unfinished (or absent)."""
    return read_json(fio.join(directory, MANIFEST), storage)


def data_files(directory: str, manifest: dict[str, Any], suffix: str = ".parquet") -> list[str]:
    """The files a stage committed, in shard order (by default its Parquet shards)."""
    return [fio.join(directory, f["name"]) for f in manifest["files"] if f["name"].endswith(suffix)]


def find_stage(path: str, storage: fio.Storage | None = None, kind: str | None = None) -> tuple[str, dict[str, Any]]:
    """A finished stage given its folder, or a run folder holding one (of ``kind``: the last such).

    Returns the stage folder and its manifest; a one-line error says what was found instead.
    """
    directory = fio.normalize_root(path)
    manifest = read_manifest(directory, storage)
    if manifest is not None:
        if kind and manifest.get("kind") != kind:
            raise CurationError(f"{directory} is a {manifest.get('kind')} stage, not {kind}")
        return directory, manifest
    run = read_json(fio.join(directory, RUN_FILE), storage)
    if run is not None:
        for name in reversed(run.get("stages", [])):
            candidate = read_manifest(stage_dir(directory, name), storage)
            if candidate is not None and (kind is None or candidate.get("kind") == kind):
                return stage_dir(directory, name), candidate
    what = f"{kind} stage" if kind else "stage"
    raise CurationError(f"no finished {what} in {directory} (no {MANIFEST} there or in its run's stages)")


def sql_list(paths: list[str]) -> str:
    """A DuckDB list literal of file paths, quoted."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def finished_phases(stage_dir: str, storage: fio.Storage) -> list[str] | None:
    """The phases a resolve under way (or killed) has finished, from its checkpoint; None without one."""
    try:
        return list(json.loads(fio.read_bytes(fio.join(stage_dir, WORK_DIR, CHECKPOINT), storage)).get("finished", {}))
    except (FileNotFoundError, ValueError):
        return None
