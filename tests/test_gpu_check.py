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
    jobs = ["small_moe", "medium_moe_recompute", "medium_moe_fp32_weights", "quality_stage", "quality_ray", "kernels"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(tmp_path),
                           "--jobs", *jobs, "--job-timeout", "600"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())["jobs"]
    assert set(results) == set(jobs)
    for name in ("small_moe", "medium_moe_recompute", "medium_moe_fp32_weights"):
        job = results[name]
        assert "error" not in job, job
        assert job["tokens_per_s"] > 0 and job["final_loss"] > 0 and job["estimated_peak_gb"] > 0
    stage = results["quality_stage"]
    assert "error" not in stage, stage
    assert stage["scored"] == stage["documents"] == stage["docs_out"] and stage["last_timing"]["batches"] > 0
    kernels = results["kernels"]
    assert "error" not in kernels and kernels["slot_sum_max_difference"] < 1e-5, kernels
    assert kernels["adamw_from_bf16_copy_ms"] > 0 and kernels["adamw_fp32_with_casts_gb_per_s"] > 0
    # the K-major operand layouts it times compute the same products
    assert kernels["wgrad_k_major_max_relative_difference"] < 1e-5 and kernels["gate_up_k_major_max_relative_difference"] < 1e-5
    on_ray = results["quality_ray"]
    assert "error" not in on_ray, on_ray
    assert on_ray["docs_out"] == on_ray["documents"] and len(on_ray["shard_s"]) == on_ray["shards"]


def test_ray_travels_trimmed_and_unpacks_with_its_file_modes(tmp_path):
    """``gpu_bundle.py`` drops the parts of Ray's wheel a Python-only cluster never loads, and
    unpacks the rest with each file's mode: the raylet and GCS binaries must stay executable
    (Python's ``ZipFile.extract`` alone drops the mode)."""
    import stat
    import zipfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_bundle import trim, unpack
    finally:
        sys.path.pop(0)
    wheel = tmp_path / "ray-0-cp312-cp312-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as out:
        for name, mode in [("ray/__init__.py", 0o644), ("ray/core/src/ray/raylet/raylet", 0o755),
                           ("ray/jars/ray_dist.jar", 0o644), ("ray/dashboard/client/build/index.html", 0o644),
                           ("ray/dashboard/modules/job.py", 0o644), ("ray/rllib/algorithms/ppo.py", 0o644)]:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            out.writestr(info, b"x" * 10)
    kept, _ = trim(wheel, tmp_path / "ray-trimmed.zip")
    assert kept == 3
    assert unpack(tmp_path / "ray-trimmed.zip", tmp_path / "site") == 3
    site = tmp_path / "site" / "ray"
    assert os.access(site / "core" / "src" / "ray" / "raylet" / "raylet", os.X_OK)
    assert not os.access(site / "__init__.py", os.X_OK)
    assert (site / "dashboard" / "modules" / "job.py").is_file()  # the dashboard's Python stays; its web client goes
    assert not (site / "jars").exists() and not (site / "dashboard" / "client").exists() and not (site / "rllib").exists()


def test_packed_encoder_is_bf16_and_embeds_as_the_packaged_one(tmp_path):
    """``gpu_bundle.py pack`` ships the encoder to the GPU machine in bf16 (half the bytes of a
    call's 64 MiB): every float tensor is bf16, and it embeds as the packaged fp32 model does."""
    import numpy as np
    import torch
    from curation.classifiers.encoder import SentenceEncoder
    from curation.classifiers.models import default_embedding_model
    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_bundle import pack_encoder
    finally:
        sys.path.pop(0)
    target = tmp_path / "minilm"
    pack_encoder(target)
    weights = load_file(target / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    texts = ["The committee approved the budget after a long debate.", "Cheap pills online, best price, click here!!!",
             "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen."]
    packed = SentenceEncoder(str(target), 128).embed(texts)
    original = SentenceEncoder(default_embedding_model(), 128).embed(texts)
    cosine = (packed * original).sum(axis=1) / np.linalg.norm(packed, axis=1) / np.linalg.norm(original, axis=1)
    assert cosine.min() > 0.999, cosine
