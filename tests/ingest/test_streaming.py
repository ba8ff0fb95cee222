"""Readers stream: a shard's memory is set by the batch size, not by the size of its input file."""

from __future__ import annotations

import json
import subprocess
import sys

from warc_factory import build_warc, page

# Runs in a fresh interpreter so that Arrow's peak-allocation counter covers this shard alone.
_SHARD = """
import json, sys
import pyarrow as pa
from curation.core.stage import ShardTask, StageContext
from curation.ingest.extract import ExtractConfig, ExtractStage
warc, out = sys.argv[1], sys.argv[2]
stage = ExtractStage(ExtractConfig(language_id=False, batch_size=50))
receipt = stage.run_shard(ShardTask(0, "part-00000", [warc]), StageContext(run_root=out, stage_name="extract",
                          stage_dir=out, key="k"))
print(json.dumps({"docs": receipt.stats.docs_out, "text_bytes": receipt.stats.bytes_out,
                  "peak_arrow_bytes": pa.default_memory_pool().max_memory()}))
"""


def test_extract_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    pages = [(f"https://example.com/{i}", "text/html; charset=utf-8", page(i, words=4000)) for i in range(1500)]
    data, _ = build_warc(pages)
    warc = tmp_path / "big.warc.gz"
    warc.write_bytes(data)
    result = subprocess.run([sys.executable, "-c", _SHARD, str(warc), str(tmp_path / "out")], capture_output=True,
                            text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["docs"] == 1500 and figures["text_bytes"] > 25_000_000  # ~20 kB of text per page
    # 50 documents a batch is ~1 MB of text: Arrow never holds more than a few batches' worth
    assert figures["peak_arrow_bytes"] < figures["text_bytes"] / 5, figures
