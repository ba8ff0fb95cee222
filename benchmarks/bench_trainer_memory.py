"""Where a training step's memory peaks, measured on the CPU with PyTorch's MemTracker: the
trainer's `training_step` (gradients dropped right after the optimizer step) against the order it
replaced (gradients set to None just before the next backward, so they live through the forward
pass), on real tensors at a small shape and on fake tensors (no storage, no compute) at a preset's
full shape. Eager only: under torch.compile the activations are smaller (see `estimate_memory`,
whose figure is printed next to them), the gradients' part is the same.

    .venv/bin/python benchmarks/bench_trainer_memory.py --preset medium
"""

from __future__ import annotations

import argparse
import contextlib

import torch


def stale_gradients_step(model, optimizer, x, y, grad_clip: float):
    """The step as it was: zero_grad between the forward and the backward."""
    result = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    result["loss"].backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return result, norm


def peak_by_kind(config, batch_size: int, step_fn, fake: bool) -> dict[str, float]:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from curation.trainer.model import MoETransformer
    from curation.trainer.train import TrainConfig, build_optimizer

    torch.manual_seed(0)
    if fake:  # built on meta (initialisers need values), then given fake storage
        with torch.device("meta"):
            model = MoETransformer(config)
    else:
        model = MoETransformer(config)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode:
        if fake:
            model = model.to_empty(device="cpu")
            model.rope_cos, model.rope_sin = (torch.empty(config.seq_len, config.head_dim // 2) for _ in range(2))
        optimizer = build_optimizer(model, TrainConfig(model=config), "cpu")
        x = torch.randint(0, config.vocab_size, (batch_size, config.seq_len))
        step_fn(model, optimizer, x, x, 1.0)  # the optimizer's moments exist from here on
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            step_fn(model, optimizer, x, x, 1.0)
    snapshot = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return {str(kind).split(".")[-1]: size for kind, size in snapshot.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="medium", help="the preset measured on fake tensors at its full shape")
    args = parser.parse_args()
    from curation.trainer.accounting import estimate_memory
    from curation.trainer.model import ModelConfig
    from curation.trainer.train import PRESETS, training_step

    shapes = [
        ("d256, 4 layers, 16 experts top-4, batch 4 x 256 (real tensors)",
         ModelConfig(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, seq_len=256, n_experts=16, top_k=4,
                     expert_hidden=128), 4, False),
        (f"`{args.preset}` at full shape (fake tensors)",
         ModelConfig(**{**PRESETS[args.preset]["model"], "vocab_size": 50280, "grouped_mm": True}), PRESETS[args.preset]["batch_size"], True),
    ]
    for name, config, batch, fake in shapes:
        print(f"\n{name}; compiled-GPU estimate of the peak: {estimate_memory(config, batch)['peak'] / 1e9:.3f} GB")
        peaks = {}
        for order, step_fn in (("gradients dropped after the step (now)", training_step),
                               ("gradients kept until the backward (before)", stale_gradients_step)):
            peak = peaks[order] = peak_by_kind(config, batch, step_fn, fake)
            print(f"  {order:<44} peak {peak['Total'] / 1e9:8.3f} GB  of which gradients {peak['GRAD'] / 1e9:7.3f}, "
                  f"activations {peak['ACT'] / 1e9:7.3f}, weights + moments {(peak['PARAM'] + peak['OPT']) / 1e9:7.3f}")
        now, before = (p["Total"] for p in peaks.values())
        print(f"  peak ratio now / before: {now / before:.3f}")

if __name__ == "__main__":
    main()
