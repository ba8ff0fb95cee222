"""Run filter steps on texts, outside a pipeline: the helper the step tests share."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.core.stage import ShardStats, StageContext
from curation.filters.heuristics import (
    HeuristicFilterConfig,
    HeuristicFilterStage,
    dclm_baseline_filter_config,
)


def run_steps(steps: dict[str, dict[str, Any] | None], texts: list[str], **columns: Any) -> list[dict]:
    """One row per text after ``steps``; extra ``columns`` (language, url...) apply to every row."""
    stage = HeuristicFilterStage(HeuristicFilterConfig(steps=steps))
    stage.ensure_setup(StageContext(run_root="", stage_name="filter", stage_dir="", key="k"))
    defaults = {"url": "https://example.org/", "language": "en", "language_score": 1.0} | columns
    batch = pa.RecordBatch.from_pylist([{"id": str(i), "text": t} | defaults for i, t in enumerate(texts)])
    return stage.process_batch(batch, None, ShardStats(shard="t")).to_pylist()


def recipe_step(name: str, **overrides: Any) -> dict[str, dict[str, Any]]:
    """One step of ``pipelines/dclm_baseline.yaml``, optionally with other options."""
    return {name: dict(dclm_baseline_filter_config().steps[name]) | overrides}
