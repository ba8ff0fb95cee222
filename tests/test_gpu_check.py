"""The prepared GPU script (`benchmarks/gpu_check.py`) is only run when a GPU is lent, a few
minutes a session: its CPU dry run keeps it from breaking in between."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_every_job(tmp_path):
    jobs = ["small_moe", "medium_moe_recompute", "quality_stage"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(tmp_path),
                           "--jobs", *jobs, "--job-timeout", "600"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())["jobs"]
    assert set(results) == set(jobs)
    for name in ("small_moe", "medium_moe_recompute"):
        job = results[name]
        assert "error" not in job, job
        assert job["tokens_per_s"] > 0 and job["final_loss"] > 0 and job["estimated_peak_gb"] > 0
    stage = results["quality_stage"]
    assert "error" not in stage, stage
    assert stage["scored"] == stage["documents"] == stage["docs_out"] and stage["last_timing"]["batches"] > 0
