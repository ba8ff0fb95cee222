"""Kill-and-resume: SIGKILL the driver mid-stage, rerun, and get byte-identical output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CURATE, REPO, run_curate, shared_data_dir

pytestmark = pytest.mark.slow

SERIAL = ["--set", "ray.max_workers_per_stage=1", "--set", "ray.num_cpus=2"]


def shard_digests(run: Path) -> dict[str, str]:
    """sha256 of every committed data file (shards, token files, indexes), by relative path."""
    digests = {}
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if not path.is_file() or relative.parts[0] in ("_input", "plots") or {"_receipts", "_stats"} & set(relative.parts):
            continue
        if path.name in ("run.json", "_plan.json"):
            continue  # timings and invocation history differ by design
        digests[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_kill_mid_stage_then_resume_is_byte_identical(small_crawl, tmp_path):
    reference = tmp_path / "reference"
    run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(reference), *SERIAL])

    killed = tmp_path / "killed"
    env = {**os.environ, "CURATION_DATA": str(shared_data_dir())}
    driver = subprocess.Popen(
        [*CURATE, "run", "dclm_baseline", "--input", *small_crawl, "--output", str(killed), *SERIAL],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    receipts = killed / "filter" / "_receipts"
    deadline = time.time() + 300
    while time.time() < deadline:
        if receipts.is_dir() and any(receipts.glob("*.json")):
            break
        assert driver.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)

    committed_before = sorted(p.name for p in receipts.glob("*.json"))
    assert committed_before, "the kill happened before any filter shard was committed"
    assert not (killed / "filter" / "_manifest.json").exists(), "the kill happened after the stage finished"
    assert (killed / "extract" / "_manifest.json").exists()

    status = run_curate(["status", str(killed)]).stdout
    assert "extract      done" in status
    assert "filter       partial" in status

    resumed = run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(killed), *SERIAL])
    assert "[extract] up to date, skipped" in resumed.stdout
    # Workers may commit a shard or two more while Ray notices the driver is gone.
    match = re.search(r"\[filter\] heuristic_filter: 8 shards, (\d+) to run, (\d+) already committed", resumed.stdout)
    assert match, resumed.stdout
    assert int(match.group(2)) >= len(committed_before) and int(match.group(1)) > 0

    assert shard_digests(killed) == shard_digests(reference)
    assert len(shard_digests(reference)) > 8 * 4


def test_rerun_skips_finished_stages_and_config_change_reruns_downstream(small_crawl, tmp_path):
    run = tmp_path / "run"
    run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(run)])
    again = run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(run)])
    for stage in ("extract", "filter", "bff", "dedup", "decontaminate", "quality", "select", "tokenize"):
        assert f"[{stage}] up to date, skipped" in again.stdout
    changed = run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(run),
                          "--set", "select.where=url LIKE '%article%'"])
    assert "[filter] up to date, skipped" in changed.stdout and "[bff] up to date, skipped" in changed.stdout
    assert "[dedup] up to date, skipped" in changed.stdout
    assert "[decontaminate] up to date, skipped" in changed.stdout
    assert "[quality] up to date, skipped" in changed.stdout
    assert "[select] select: 8 shards, 8 to run" in changed.stdout
    assert "[tokenize] tokenize: 8 shards, 8 to run" in changed.stdout
    urls = run_curate(["stats", str(run), "SELECT count(*) FILTER (WHERE url NOT LIKE '%article%') AS other, "
                                          "count(*) AS n FROM \"select\"", "--format", "csv"]).stdout
    other, total = urls.strip().splitlines()[-1].split(",")
    assert other == "0" and int(total) > 0


def test_stats_sql_over_a_run(small_crawl, tmp_path):
    run = tmp_path / "run"
    out = run_curate(["run", "dclm_baseline", "--input", *small_crawl, "--output", str(run)]).stdout
    assert "funnel plot:" in out and (run / "plots" / "funnel.png").stat().st_size > 5000
    assert "tokens written:" in out
    lines = run_curate(["stats", str(run), "SELECT stage, sum(docs_in) AS i, sum(docs_out) AS o FROM stats "
                                           "GROUP BY stage ORDER BY stage", "--format", "json"]).stdout
    rows = {r["stage"]: r for r in map(json.loads, lines.strip().splitlines())}
    assert set(rows) == {"extract", "filter", "bff", "dedup", "decontaminate", "quality", "select", "tokenize"}
    assert rows["extract"]["i"] == 480
    assert rows["select"]["o"] == rows["tokenize"]["i"] > 0
    reasons = run_curate(["stats", str(run), "SELECT reason, sum(count) AS n FROM reasons WHERE stage = 'extract' "
                                             "GROUP BY 1", "--format", "json"]).stdout
    assert "non_html:image" in reasons
    joined = run_curate(["stats", str(run), "SELECT count(*) AS n FROM tokenize t JOIN extract e USING (id) "
                                            "WHERE e.language = 'en'", "--format", "csv"]).stdout
    assert int(joined.strip().splitlines()[-1]) > 0
