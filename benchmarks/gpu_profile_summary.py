"""Where a training step's GPU time goes, read from `gpu_check.py`'s JSON (no GPU needed): per
job, milliseconds per step by kind of work from the kernel profile's top rows, and the rate the
grouped expert GEMMs and the dense matmuls reach, from the model's shapes.

    .venv/bin/python benchmarks/gpu_profile_summary.py benchmarks/results/gpu_check-2026-11-27-h200.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

PEAK = 989.5e12  # H100/H200 dense bf16, as the trainer's MFU

# (kind, pattern on the profiler's row name); the first that matches wins
KINDS = [
    ("expert GEMMs (grouped)", r"^aten::_grouped_mm$"),
    ("dense matmuls (attention, head, router)", r"^aten::mm$|^aten::addmm$"),
    ("attention kernels", r"^aten::_(cudnn|flash|efficient)_attention|^aten::_scaled_dot_product"),
    # the compiled step of the expert weights from their bf16 copies is a Triton kernel named by its ops
    ("optimizer (AdamW)", r"^Optimizer\.step|^triton_.*(lerp|addcmul)"),
    ("gradient clipping", r"^aten::_foreach_(mul_|norm)$"),
    ("routing gather / scatter / sum (fused)", r"^triton_.*index"),
    ("other fused kernels", r"^triton_"),
    ("slot gathers (aten::index)", r"^aten::index$"),
    ("eager casts, elementwise (weights, loss)", r"^aten::(sub|exp_|mul_?|add_?|div_?|copy_|sum)$"),
]


def per_step(job: dict, steps: int = 3) -> tuple[float, dict[str, float]]:
    rows = job.get("profile_top", [])
    total = next((float(m.group(1)) for line in rows if (m := re.search(r"Self CUDA time total: ([\d.]+)ms", line))), None)
    seen, kinds = set(), defaultdict(float)
    for line in rows:
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) < 11 or cols[0] in seen or cols[0] == "Name" or cols[0].startswith("-"):
            continue
        seen.add(cols[0])  # a fused kernel appears twice: its launch and the kernel itself
        match = re.match(r"([\d.]+)(ms|us|s)$", cols[6])
        if not match:
            continue
        ms = float(match.group(1)) * {"ms": 1, "us": 1e-3, "s": 1e3}[match.group(2)]
        kind = next((name for name, pattern in KINDS if re.search(pattern, cols[0])), None)
        if kind:
            kinds[kind] += ms / steps
    return (total or 0.0) / steps, dict(kinds)


def expert_gemm_flops(job: dict) -> float:
    """FLOPs per step of the grouped expert GEMMs: three projections, forward and two backward each."""
    from curation.trainer.train import build_train_config

    c = build_train_config(job["preset"], 50280, {"model": dict(job["model_overrides"]), "batch_size": job["batch_size"]})
    m = c.model
    return 0.0 if m.n_experts == 1 else 9 * 2 * c.batch_size * m.seq_len * m.top_k * m.d_model * m.expert_hidden * m.n_layers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="a gpu_check.py JSON")
    args = parser.parse_args(argv)
    jobs = json.loads(Path(args.result).read_text())["jobs"]
    for name, job in jobs.items():
        if "profile_top" not in job or not job.get("tokens_per_s"):
            continue
        step_ms, kinds = per_step(job)
        if not step_ms:
            print(f"\n{name}: no GPU time in its profile (a CPU run)")
            continue
        experts = expert_gemm_flops(job)
        mfu = f"MFU {job['mfu']:.1%}" if job.get("mfu") is not None else "no MFU (CPU)"
        print(f"\n{name}: {job['tokens_per_s']:,.0f} tokens/s, {mfu}, {step_ms:.1f} ms of GPU time a step")
        for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
            rate = ""
            if kind.startswith("expert GEMMs") and experts:
                rate = f"  {experts / (ms / 1e3) / 1e12:,.0f} TFLOP/s ({experts / (ms / 1e3) / PEAK:.0%} of peak)"
            print(f"  {kind:<42} {ms:7.1f} ms  {ms / step_ms:5.1%}{rate}")
        listed = sum(kinds.values())
        print(f"  {'(unclassified, or below the profile top)':<42} {step_ms - listed:7.1f} ms  {(step_ms - listed) / step_ms:5.1%}")


if __name__ == "__main__":
    main()
