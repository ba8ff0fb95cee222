"""Decontamination: a page quoting an evaluation set is flagged, with the set it quotes."""

from __future__ import annotations

import json

import pyarrow as pa


def test_decontamination_flags_quoted_eval_text(shared_data, tmp_path):
    from curation.core.stage import ShardStats, StageContext
    from curation.filters.decontaminate import DecontaminateConfig, DecontaminateStage

    lambada = json.loads((shared_data / "eval" / "llm-foundry" / "lambada_openai.jsonl").read_text().splitlines()[3])
    quoted = "Some forum post. " + lambada["context"] + " and that is all."
    clean = "An unrelated page about gardening, soil, tomatoes and the weather in spring " * 5
    stage = DecontaminateStage(DecontaminateConfig(eval_sets=[str(shared_data / "eval" / "**" / "*.jsonl")]))
    ctx = StageContext(run_root=str(tmp_path), stage_name="d", stage_dir=str(tmp_path), key="k")
    ctx.resolved = stage.resolve([], ctx)
    stage.ensure_setup(ctx)
    stats = ShardStats(shard="x")
    batch = pa.RecordBatch.from_pylist([{"text": quoted}, {"text": clean}, {"text": ""}])
    out = stage.process_batch(batch, None, stats).to_pylist()
    assert out[0]["contaminated"] and out[0]["decontam_ngrams"] > 5 and out[0]["decontam_sets"] == ["lambada_openai"]
    assert not out[1]["contaminated"] and not out[2]["contaminated"]
    assert stats.flagged["contaminated"] == 1 and stats.extra["contaminated:lambada_openai"] == 1
