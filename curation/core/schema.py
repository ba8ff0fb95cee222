"""The document schema: core columns every document carries from extraction on.

Stages add columns (attributes) and never silently drop core ones. Filters and scorers add
``<name>_score`` / ``<name>_keep`` / ``<name>_reason``; only selection removes rows.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.errors import ConfigError

DOCUMENT_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # stable: xxh128 of source file + record offset, or upstream id
    pa.field("url", pa.string()),
    pa.field("source", pa.string()),  # the input file the document came from
    pa.field("crawl", pa.string()),  # e.g. CC-MAIN-2024-22 when known
    pa.field("warc_date", pa.string()),
    pa.field("warc_record_id", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("language_hint", pa.string()),  # the crawler's own language guess (WARC-Identified-Content-Language)
    pa.field("text", pa.string()),
]
DOCUMENT_SCHEMA = pa.schema(DOCUMENT_FIELDS)

# Added by language identification.
LANGUAGE_FIELDS: list[pa.Field] = [
    pa.field("language", pa.string()),
    pa.field("language_score", pa.float32()),
]


def true_in(data: pa.RecordBatch | pa.Table, column: str, stage: str) -> np.ndarray:
    """Where the boolean attribute ``column`` is true (null counts as false); missing, an error naming ``stage``."""
    if column not in data.schema.names:
        raise ConfigError(f"{stage}: required column {column!r} is missing; have {', '.join(data.schema.names)}")
    return pc.fill_null(data.column(column), False).to_numpy(zero_copy_only=False).astype(bool)


def all_true(data: pa.RecordBatch | pa.Table, columns: list[str], stage: str) -> np.ndarray:
    """Rows where every one of ``columns`` is true (all rows when there are none): a stage's ``require``."""
    mask = np.ones(data.num_rows, dtype=bool)
    for column in columns:
        mask &= true_in(data, column, stage)
    return mask
