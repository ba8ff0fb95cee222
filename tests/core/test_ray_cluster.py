"""A two-node local Ray cluster loses its worker node mid-stage; the run still completes with
no document lost or duplicated."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_curate

pytestmark = pytest.mark.slow


def _ids(stage_dir: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(stage_dir.glob("part-*.parquet")):
        ids += pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


def test_worker_node_removed_mid_stage(small_crawl, tmp_path, monkeypatch, shared_data):
    import ray
    from ray.cluster_utils import Cluster

    from curation.core.pipeline import load_pipeline
    from curation.core.runner import Runner

    reference = tmp_path / "reference"
    run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(reference)])

    monkeypatch.setenv("CURATION_DATA", str(shared_data))
    ray.shutdown()  # this process's local Ray, if a test before started one: the run must join the cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        pipeline = load_pipeline("dclm_baseline", [f"ray.address={cluster.address}", "ray.progress_bars=false"])
        run = tmp_path / "cluster-run"
        outcome: dict[str, object] = {}

        def drive() -> None:
            try:
                outcome["stages"] = Runner(pipeline, str(run), echo=lambda m: None).run(small_crawl)
            except BaseException as exc:  # surfaced by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        receipts = run / "filter" / "_receipts"
        deadline = time.time() + 300
        while time.time() < deadline and not (receipts.is_dir() and any(receipts.glob("*.json"))):
            assert thread.is_alive(), outcome
            time.sleep(0.02)
        assert not (run / "filter" / "_manifest.json").exists(), "stage finished before the node could be removed"
        cluster.remove_node(worker)
        thread.join(timeout=600)
        assert not thread.is_alive(), "the run did not finish after losing a node"
        assert "error" not in outcome, outcome.get("error")
    finally:
        ray.shutdown()
        cluster.shutdown()

    for stage in ("extract", "filter", "dedup", "select"):
        got, want = _ids(run / stage), _ids(reference / stage)
        assert len(got) == len(set(got)), f"{stage}: duplicated documents"
        assert sorted(got) == sorted(want), f"{stage}: documents lost or added"
