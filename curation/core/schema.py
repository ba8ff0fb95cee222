"""The document schema: core columns every document carries from extraction on.

Stages add columns (attributes) and never silently drop core ones. Filters and scorers add
``<name>_score`` / ``<name>_keep`` / ``<name>_reason``; only selection removes rows.
"""

import pyarrow as pa

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
