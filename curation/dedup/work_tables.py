"""Partitioned Parquet tables that dedup's task rounds hand to each other.

A table is a folder ``<work>/<table>/pNNNNN/<writer>.parquet``: every task of a round writes one
file per destination partition, and a task of the next round reads one partition (all writers'
files). The folders live on the run's storage (local disk or an object store), so nothing of the
corpus' size passes through Ray's object store and a task's memory is set by its partition.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import io as fio


def part_path(work: str, table: str, partition: int, writer: str) -> str:
    return fio.join(work, table, f"p{partition:05d}", f"{writer}.parquet")


def write_part(path: str, storage: dict[str, Any], columns: dict[str, np.ndarray]) -> None:
    """A numpy column set as one Parquet file (a 2-D uint8 column becomes fixed-size binary)."""
    arrays = {}
    for name, values in columns.items():
        if values.ndim == 2:
            width = values.shape[1]
            arrays[name] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), len(values), [None, pa.py_buffer(np.ascontiguousarray(values).tobytes())])
        else:
            arrays[name] = pa.array(values)
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer, compression="zstd")
    fio.write_atomic(path, buffer.getvalue(), fio.Storage(**storage))


def write_split(work: str, table: str, writer: str, storage: dict[str, Any], destination: np.ndarray,
                partitions: int, columns: dict[str, np.ndarray], skip_empty: bool = False) -> None:
    """Rows of ``columns`` into ``table``, each to the partition ``destination`` names."""
    for q in range(partitions):
        mask = destination == q
        if skip_empty and not mask.any():
            continue
        write_part(part_path(work, table, q, writer), storage, {name: values[mask] for name, values in columns.items()})


def read_parts(work: str, table: str, partition: int, storage: dict[str, Any],
               empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All files of one partition of a table, concatenated (``empty`` gives names and dtypes)."""
    store = fio.Storage(**storage)
    tables = []
    for path in fio.list_files(fio.join(work, table, f"p{partition:05d}"), ".parquet", store):
        fs, p = fio.filesystem(path, store)
        with fs.open(p, "rb") as handle:
            tables.append(pq.read_table(handle))
    out = {}
    for name, blank in empty.items():
        if not tables:
            out[name] = blank
        elif blank.ndim == 2:
            column = pa.concat_arrays([c for t in tables for c in t.column(name).chunks])
            width = column.type.byte_width
            raw = np.frombuffer(column.buffers()[1], dtype=np.uint8) if len(column) else np.zeros(0, np.uint8)
            out[name] = raw[column.offset * width:(column.offset + len(column)) * width].reshape(-1, width)
        else:
            out[name] = np.concatenate([t.column(name).to_numpy() for t in tables]).astype(blank.dtype)
    return out


def remove_table(work: str, table: str, storage: dict[str, Any]) -> None:
    fio.remove(fio.join(work, table), fio.Storage(**storage), recursive=True)
