"""The runner in process: what each run did (its outcomes), skipping finished stages, rerunning a
changed stage and what follows it, and the stages' own funnel lines in their manifests."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.layout import MANIFEST
from curation.core.pipeline import pipeline_from_tree
from curation.core.runner import Runner


def _inputs(tmp_path) -> list[str]:
    paths = []
    for shard in range(3):
        path = tmp_path / "in" / f"part-{shard:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": f"{shard}-{i}", "text": f"document {i}", "n": i} for i in range(10)]
        pq.write_table(pa.Table.from_pylist(rows), path)
        paths.append(str(path))
    return paths


def _run(tmp_path, inputs, where_b: str):
    tree = {"name": "two", "stages": {"a": {"kind": "select", "require": [], "where": "n >= 2"},
                                      "b": {"kind": "select", "require": [], "where": where_b}}}
    return Runner(pipeline_from_tree(tree, [], None), str(tmp_path / "run"), echo=lambda m: None).run(inputs)


def test_outcomes_skip_and_rerun(ray_local, tmp_path):
    inputs = _inputs(tmp_path)
    first = _run(tmp_path, inputs, "n < 8")
    assert [(o.name, o.skipped, o.shards_total, o.shards_run) for o in first] == [("a", False, 3, 3), ("b", False, 3, 3)]
    assert first[1].manifest["totals"]["docs_out"] == 3 * 6
    again = _run(tmp_path, inputs, "n < 8")
    assert [(o.skipped, o.shards_run) for o in again] == [(True, 0), (True, 0)]
    changed = _run(tmp_path, inputs, "n < 5")
    assert [(o.name, o.skipped, o.shards_run) for o in changed] == [("a", True, 0), ("b", False, 3)]
    manifest = json.loads((tmp_path / "run" / "b" / MANIFEST).read_text())
    assert manifest["funnel"] == [{"label": "b", "documents": 9, "note": "where 15"}]
    assert manifest["summary"] == []


def test_standard_readers_open_a_stage_folder(ray_local, tmp_path):
    """Metadata files start with `_` (Hadoop/Spark/pyarrow convention): every reader sees the documents only."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds
    import ray

    outcomes = _run(tmp_path, _inputs(tmp_path), "n < 8")
    stage = tmp_path / "run" / "b"
    assert {p.name for p in stage.iterdir() if not p.name.startswith(("_", "."))} == {
        f"part-{i:05d}.parquet" for i in range(3)}
    expected = sorted(f"{s}-{i}" for s in range(3) for i in range(2, 8))
    assert outcomes[1].manifest["totals"]["docs_out"] == len(expected)
    assert sorted(pd.read_parquet(stage)["id"]) == expected
    assert sorted(ds.dataset(stage).to_table().column("id").to_pylist()) == expected
    assert sorted(r["id"] for r in ray.data.read_parquet(str(stage)).take_all()) == expected
    assert sorted(r[0] for r in duckdb.read_parquet(f"{stage}/*.parquet").select("id").fetchall()) == expected


def test_a_stage_or_run_folder_is_an_input(ray_local, tmp_path):
    from curation.core import io as fio
    from curation.ingest.inputs import resolve_inputs

    _run(tmp_path, _inputs(tmp_path), "n < 8")
    storage = fio.Storage()
    shards = [str(tmp_path / "run" / "b" / f"part-{i:05d}.parquet") for i in range(3)]
    assert resolve_inputs([str(tmp_path / "run" / "b")], str(tmp_path), storage) == shards
    assert resolve_inputs([str(tmp_path / "run")], str(tmp_path), storage) == shards  # the last stage
    assert len(resolve_inputs([str(tmp_path / "run" / "a")], str(tmp_path), storage)) == 3


def test_actor_pool_fits_the_cluster_cpus_and_gpus():
    """A GPU stage gets no more actors than the cluster has GPUs (the others would sit waiting for
    one); a CPU stage as many as its CPUs hold, never more than the tasks, never none."""
    from curation.core.ray_exec import actor_count

    cluster = {"CPU": 16.0, "GPU": 1.0}
    assert actor_count({"num_cpus": 1, "num_gpus": 1.0}, cluster, tasks=3) == 1
    assert actor_count({"num_cpus": 1, "num_gpus": 0.5}, cluster, tasks=3) == 2
    assert actor_count({"num_cpus": 1, "num_gpus": 0.0}, cluster, tasks=40) == 16
    assert actor_count({"num_cpus": 4, "num_gpus": 0.0}, cluster, tasks=40) == 4
    assert actor_count({"num_cpus": 1, "num_gpus": 0.0}, cluster, tasks=3) == 3
    assert actor_count({"num_cpus": 1, "num_gpus": 0.0}, cluster, tasks=40, max_workers=2) == 2
    assert actor_count({"num_cpus": 1, "num_gpus": 1.0}, {"CPU": 2.0}, tasks=3) == 1  # no GPU at all: still one
