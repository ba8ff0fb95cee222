"""A whole small run against a real S3 endpoint on loopback (moto's server)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from conftest import run_curate

pytestmark = pytest.mark.slow


def _s3fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


class ManifestWatcher(threading.Thread):
    """Polls the bucket while the run goes on; whenever a manifest is visible, every file it
    names must already be visible too."""

    def __init__(self, endpoint: str, prefix: str):
        super().__init__(daemon=True)
        self.fs = _s3fs(endpoint)
        self.prefix = prefix
        self.stop = threading.Event()
        self.checked: set[str] = set()
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.fs.invalidate_cache()
            try:
                listing = set(self.fs.find(self.prefix))
            except FileNotFoundError:
                listing = set()
            for key in sorted(k for k in listing if k.endswith("/_manifest.json") and k not in self.checked):
                manifest = json.loads(self.fs.cat_file(key))
                stage_dir = key.rsplit("/", 1)[0]
                for entry in manifest["files"]:
                    if f"{stage_dir}/{entry['name']}" not in listing:
                        self.violations.append(f"{key} visible before {entry['name']}")
                self.checked.add(key)
            time.sleep(0.05)


def test_s3_round_trip(small_crawl, s3_endpoint):
    endpoint, env = s3_endpoint
    fs = _s3fs(endpoint)
    fs.mkdir("curation-test")
    for path in small_crawl:
        fs.put_file(path, f"curation-test/crawl/{path.rsplit('/', 1)[-1]}")

    cache = os.path.join(os.environ["CURATION_CACHE"], "models")
    cached_before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    watcher = ManifestWatcher(endpoint, "curation-test/runs/r1")
    watcher.start()
    out = run_curate(["run", "dclm_baseline", "--input", "s3://curation-test/crawl/*.warc.gz",
                      "--output", "s3://curation-test/runs/r1", "--endpoint-url", endpoint], env=env).stdout
    time.sleep(0.5)
    watcher.stop.set()
    watcher.join()
    assert "tokens written:" in out
    assert watcher.violations == []
    # The quality stage's workers read the model trained into the bucket from one shared local copy.
    cached = set(os.listdir(cache)) - cached_before
    assert len(cached) == 1 and not cached.pop().startswith(".")
    assert {k.rsplit("/", 2)[-2] for k in watcher.checked} == {"extract", "filter", "bff", "dedup", "decontaminate", "quality",
                                                             "select", "tokenize"}

    fs.invalidate_cache()
    names = set(fs.find("curation-test/runs/r1"))
    assert "curation-test/runs/r1/tokenize/part-00000-train-000.npy" in names
    assert "curation-test/runs/r1/tokenize/part-00000-train-000.csv.gz" in names
    assert "curation-test/runs/r1/plots/funnel.png" in names
    # Every shard was written before its stage's manifest (object timestamps).
    for stage in ("extract", "filter", "dedup", "decontaminate", "quality", "select", "tokenize"):
        manifest_time = fs.info(f"curation-test/runs/r1/{stage}/_manifest.json")["LastModified"]
        for key in names:
            if key.startswith(f"curation-test/runs/r1/{stage}/part-"):
                assert fs.info(key)["LastModified"] <= manifest_time

    # No credential is ever written into the run.
    for key in names:
        if key.endswith(".json"):
            text = fs.cat_file(key).decode()
            assert env["AWS_SECRET_ACCESS_KEY"] not in text and env["AWS_ACCESS_KEY_ID"] not in text

    result = run_curate(["stats", "s3://curation-test/runs/r1", "SELECT count(*) AS n FROM tokenize",
                         "--format", "json", "--endpoint-url", endpoint], env=env).stdout
    n = json.loads(result.strip().splitlines()[-1])["n"]
    assert n > 0
    status = run_curate(["status", "s3://curation-test/runs/r1", "--endpoint-url", endpoint], env=env).stdout
    assert status.count("done") == 8  # every stage of dclm_baseline

    rerun = run_curate(["run", "dclm_baseline", "--input", "s3://curation-test/crawl/*.warc.gz",
                        "--output", "s3://curation-test/runs/r1", "--endpoint-url", endpoint], env=env).stdout
    assert rerun.count("up to date, skipped") == 8


def test_classifier_in_a_bucket_trains_scores_and_records_its_evaluation(s3_endpoint, shared_data, tmp_path):
    import pyarrow.parquet as pq

    endpoint, env = s3_endpoint
    fs = _s3fs(endpoint)
    fs.mkdir("bucket-models")
    run_curate(["classify", "train", "--positives", str(shared_data / "hq_reference" / "*"),
                "--negatives", str(shared_data / "web_negatives" / "*.jsonl.gz"), "--output", "s3://bucket-models/ft",
                "--max-per-class", "300", "--set", "bucket=50000", "--endpoint-url", endpoint], env=env)
    assert {key.rsplit("/", 1)[-1] for key in fs.ls("bucket-models/ft")} == {"model.bin", "card.json", "README.md"}

    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "good", "text": "The European lobster is a species of clawed lobster found "
                                "in the eastern Atlantic Ocean, the Mediterranean Sea and parts of the Black Sea."})
                    + "\n" + json.dumps({"id": "spam", "text": "click here buy cheap pills casino bonus free win now"}) + "\n")
    run_curate(["classify", "score", "--model", "s3://bucket-models/ft", "--input", str(docs), "--output", str(tmp_path / "scored"),
                "--endpoint-url", endpoint], env=env)
    table = pq.read_table(next((tmp_path / "scored").glob("part-*.parquet")))
    assert "quality_fasttext" in table.schema.names  # the kind came from the card in the bucket
    scores = dict(zip(table.column("id").to_pylist(), table.column("score").to_pylist(), strict=True))
    assert scores["good"] > scores["spam"]

    labels = shared_data / "quality_dev" / "dclm_human_majority_contested.jsonl"
    out = run_curate(["classify", "eval", "--model", "s3://bucket-models/ft", "--labels", str(labels),
                      "--endpoint-url", endpoint], env=env).stdout
    assert "recorded in s3://bucket-models/ft/card.json" in out
    fs.invalidate_cache()
    card = json.loads(fs.cat_file("bucket-models/ft/card.json"))
    evaluation = card["human_eval"][labels.name]
    assert evaluation["documents"] == 218 and 0.5 < evaluation["roc_auc"] < 1.0
    assert labels.name in fs.cat_file("bucket-models/ft/README.md").decode()

    # several labels files at once: each is recorded in the card in the bucket, none overwrites another
    other = tmp_path / "other_labels.jsonl"
    other.write_text("".join(labels.read_text().splitlines(keepends=True)[:60]))
    run_curate(["classify", "eval", "--model", "s3://bucket-models/ft", "--labels", str(labels), str(other),
                "--endpoint-url", endpoint], env=env)
    fs.invalidate_cache()
    assert {labels.name, other.name} <= set(json.loads(fs.cat_file("bucket-models/ft/card.json"))["human_eval"])
