"""Progress where no bar draws: lines per stage while it runs, `curate status` for a run under way,
and Ray's own notices kept off the console."""

from __future__ import annotations

import json
import time

from conftest import run_curate

from curation.core import io as fio
from curation.core.phases import PhaseClock, reporting_resolve
from curation.core.progress import Progress, StageProgress, stage_status
from curation.core.stats import StageInfo


def test_progress_line_rate_and_eta():
    line = Progress(shards_done=2, shards_planned=8, documents=3000, elapsed=60.0).line()
    assert line == "2/8 shards, 3,000 docs, 50 docs/s, elapsed 1:00, ETA 3:00"
    assert Progress(0, 8, 0, 5.0).line().endswith("ETA ?")
    assert Progress(1, 2, 10, 7300.0).line().endswith("elapsed 2:01:40, ETA 2:01:40")


def test_stage_progress_echoes_every_interval_while_active():
    lines: list[str] = []
    with StageProgress("filter", planned=3, echo=lines.append, interval=0.05, active=True) as progress:
        progress.shard_done(100)
        time.sleep(0.3)
    assert len(lines) >= 3 and all(line.startswith("[filter] progress: 1/3 shards, 100 docs") for line in lines)
    silent: list[str] = []
    with StageProgress("filter", planned=3, echo=silent.append, interval=0.05, active=False):
        time.sleep(0.15)
    assert silent == []  # a terminal has Ray Data's bars instead


def test_resolve_phases_report_their_tasks_while_they_run(ray_local):
    """A corpus-wide phase (dedup's signatures, BFF's ordered pass) runs before any shard does: it
    gets its own lines, tasks finished or what ``count`` says, and records its wall time."""
    import ray

    @ray.remote
    def slow(i: int) -> int:
        time.sleep(0.4 + 0.4 * i)
        return i

    lines: list[str] = []
    with reporting_resolve("dedup", lines.append, interval=0.1):
        clock = PhaseClock()
    assert clock.gather("signatures", lambda: [slow.remote(i) for i in range(3)]) == [0, 1, 2]
    assert clock.gather("ordered pass", lambda: [slow.remote(0)], count=lambda: (1, 4, "shards")) == [0]
    signatures = [line for line in lines if line.startswith("[dedup] signatures: ")]
    assert len(signatures) >= 3 and signatures[0].startswith("[dedup] signatures: 0/3 tasks, elapsed 0:00, ETA ?")
    assert any(line.startswith("[dedup] signatures: 1/3 tasks") or line.startswith("[dedup] signatures: 2/3 tasks")
               for line in signatures)
    assert any(line.startswith("[dedup] ordered pass: 1/4 shards, elapsed 0:00, ETA 0:00") for line in lines)
    assert set(clock.seconds) == {"signatures", "ordered pass"} and clock.seconds["signatures"] >= 1.2
    quiet = PhaseClock()  # outside a run (a test calling resolve itself): no lines
    assert quiet.gather("join", lambda: [slow.remote(0)]) == [0] and quiet.seconds["join"] >= 0.4


def test_status_of_a_stage_under_way(tmp_path):
    stage_dir = tmp_path / "filter"
    (stage_dir / "_receipts").mkdir(parents=True)
    plan = {"key": "k1", "shards": ["s0", "s1", "s2", "s3", "s4"], "to_run": ["s1", "s2", "s3", "s4"],
            "started_at": time.time() - 20}
    for shard, key in (("s1", "k1"), ("s2", "k1"), ("s3", "stale")):  # s3: a receipt of an earlier config
        (stage_dir / "_receipts" / f"{shard}.json").write_text(json.dumps(
            {"key": key, "shard": shard, "files": [], "stats": {"shard": shard, "docs_in": 500}}))
    info = StageInfo("filter", str(stage_dir), None, plan, receipts=["s1", "s2", "s3"])
    line = stage_status(info, fio.Storage())
    assert line.startswith("partial   2/4 shards, 1,000 docs, 50 docs/s, elapsed 0:20, ETA 0:20")
    assert line.endswith("(+1 committed before)")
    assert stage_status(StageInfo("dedup", str(tmp_path / "dedup"), None, None), fio.Storage()) == "pending"
    resolving = PhaseClock(str(tmp_path / "dedup" / "_work"), "k1")  # a dedup between its phases
    assert stage_status(StageInfo("dedup", str(tmp_path / "dedup"), None, None), fio.Storage()) == (
        "resolving (phases finished: none yet)")
    resolving.step("components", lambda: 3)
    assert stage_status(StageInfo("dedup", str(tmp_path / "dedup"), None, None), fio.Storage()) == (
        "resolving (phases finished: components)")


def test_non_tty_run_prints_progress_lines_and_no_ray_notices(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"The garden number {i} grows tomatoes. " * 30})
                              for i in range(40)) + "\n")
    result = run_curate(["filter", "--input", str(docs), "--output", str(tmp_path / "out"),
                         "--set", "ray.progress_interval_s=0.2"])
    output = result.stdout + result.stderr
    assert "[heuristic_filter] progress: " in result.stdout and " docs/s, elapsed " in result.stdout, output
    for notice in ("core_worker.cc", "Token authentication", "Progress bars disabled", "logging.cc"):
        assert notice not in output, output
    result = run_curate(["dedup", "--input", str(docs), "--output", str(tmp_path / "dedup"),
                         "--set", "ray.progress_interval_s=0.01"])
    assert "[dedup] signatures: " in result.stdout and " tasks, elapsed " in result.stdout, result.stdout + result.stderr
