"""The training loop, apart from the model: AdamW, cosine schedule with warmup, clipping, bf16
autocast on GPU, optional torch.compile, exact checkpoint/resume, and metrics.

Metrics go to ``RUN/metrics.jsonl`` (one line per logged step) and ``RUN/metrics.parquet``:
losses (CE, L_LB, L_Z unscaled), learning rate, tokens/s, MFU (model FLOPs per token from active
parameters and attention, over the device's peak: 989.5 TFLOP/s for H100 bf16), and per layer the
smallest and largest share of token slots an expert received.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curation.trainer.data import TokenStream, load_data
from curation.trainer.model import ModelConfig, MoETransformer, chunk_loss_and_grad

H100_BF16_PEAK = 989.5e12


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 8
    max_tokens: int = 1_000_000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100  # 0: no checkpoints at all (throughput measurements)
    compile: bool = False  # torch.compile each transformer block (CUDA only)
    profile_steps: int = 0  # profile the last N steps: RUN/profile.txt (kernels by device time)
    # Ids >= vocab_limit collapse into one id (vocab_limit - 1). BPE ids are ordered by merge
    # rank, so this keeps the frequent tokens with a fixed, data-independent map (comparable
    # across mixes) and stops a 50k-row LM head from dominating a tiny model.
    vocab_limit: int | None = None
    peak_flops: float | None = None  # default: H100 bf16 on CUDA, none on CPU (MFU not reported)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.max_tokens // self.tokens_per_step)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, a few minutes. The vocabulary comes from the data's tokenizer.
    "tiny": {"model": {"d_model": 128, "n_layers": 2, "n_heads": 4, "seq_len": 256, "n_experts": 4, "top_k": 2,
                       "expert_hidden": 128}, "batch_size": 8, "lr": 2e-3, "warmup_steps": 20, "vocab_limit": 8192},
    # Same active parameters as tiny (top-2 of 128-wide experts = one 256-wide FFN).
    "tiny_dense": {"model": {"d_model": 128, "n_layers": 2, "n_heads": 4, "seq_len": 256, "n_experts": 1, "top_k": 1,
                             "expert_hidden": 256}, "batch_size": 8, "lr": 2e-3, "warmup_steps": 20, "vocab_limit": 8192},
    # One GPU.
    "small": {"model": {"d_model": 512, "n_layers": 8, "n_heads": 8, "seq_len": 2048, "n_experts": 64, "top_k": 8,
                        "expert_hidden": 256}, "batch_size": 16, "lr": 4e-4, "warmup_steps": 100, "compile": True},
    # OLMoE-1B-7B's shape at reduced size: 1.78B parameters, 372M active. One H100.
    "medium": {"model": {"d_model": 1024, "n_layers": 16, "n_heads": 16, "seq_len": 2048, "n_experts": 64, "top_k": 8,
                         "expert_hidden": 512}, "batch_size": 8, "lr": 4e-4, "warmup_steps": 200, "compile": True},
}


def build_train_config(preset: str, vocab_size: int, overrides: dict[str, Any] | None = None) -> TrainConfig:
    from curation.core.config import build_config
    from curation.core.errors import ConfigError

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    tree = json.loads(json.dumps(PRESETS[preset]))
    for key, value in (overrides or {}).items():
        if key == "model":
            tree["model"].update(value)
        else:
            tree[key] = value
    limit = tree.get("vocab_limit")
    tree["model"]["vocab_size"] = min(vocab_size, limit) if limit else vocab_size
    tree["model"] = build_config(ModelConfig, tree["model"], "model")
    return build_config(TrainConfig, tree, "train")


def lr_at(step: int, c: TrainConfig) -> float:
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
    return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def expert_load(layer_stats: list[dict[str, torch.Tensor]]) -> list[tuple[float, float]]:
    loads = []
    for stats in layer_stats:
        share = stats["slots_per_expert"].float() / stats["slots_per_expert"].sum()
        loads.append((float(share.min()), float(share.max())))
    return loads


def adamw_step_from_copy(weight: torch.Tensor, copy: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                         exp_avg_sq: torch.Tensor, step: torch.Tensor, lr: torch.Tensor, grad_scale: torch.Tensor,
                         beta1: float, beta2: float, weight_decay: float, eps: float) -> None:
    """One AdamW step of an fp32 ``weight`` from the gradient of its low-precision ``copy``, in the
    order of PyTorch's fused AdamW, then the copy rewritten. ``lr``, ``step`` and ``grad_scale``
    are tensors, so a compiled version serves every step of a schedule."""
    step.add_(1)
    g = grad.float() / grad_scale
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    weight.mul_(1 - lr * weight_decay)
    denominator = exp_avg_sq.sqrt() / (1 - beta2**step).sqrt() + eps
    weight.sub_(lr / (1 - beta1**step) * exp_avg / denominator)
    copy.copy_(weight)


class AdamWWithWeightCopies(torch.optim.AdamW):
    """AdamW for a model that trains some weights through low-precision copies
    (``MoETransformer.hold_expert_weights_in``: the forward and backward use the copies, whose
    gradients are bf16): those weights, the fp32 masters, are stepped from their copies' gradients,
    and the copies rewritten, in one pass per tensor (``adamw_step_from_copy``, compiled on a
    GPU): it reads the bf16 gradient, the weight and both moments and writes them and the copy, the
    fused AdamW's 28 bytes a parameter. The copies save the 12 bytes a parameter around it that
    fp32 expert weights cost a step: their bf16 casts in the forward, their gradients' casts back
    to fp32. Every other parameter goes through AdamW's own (fused) step as it is.

    ``grad_scale``, if set before a step, divides every gradient as it is read (the fused AdamW's
    GradScaler hook; the unfused AdamW takes none, so its gradients are divided first)."""

    def __init__(self, param_groups: list[dict], copies: dict[torch.nn.Parameter, torch.Tensor], compiled: bool,
                 **options: Any):
        super().__init__(param_groups, **options)
        self.copies = copies
        self._step_from_copy = torch.compile(adamw_step_from_copy, dynamic=False) if compiled else adamw_step_from_copy
        self._lr: torch.Tensor | None = None  # the group's rate on the device, written each step, never read back
        self._one: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        scale = self.__dict__.pop("grad_scale", None)  # set for this step only
        if scale is not None and self.defaults["fused"]:
            self.grad_scale = scale
        elif scale is not None:
            own = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            if own:
                torch._foreach_div_(own, scale)
        super().step(closure)  # the parameters with gradients of their own (the masters of copies have none)
        self.__dict__.pop("grad_scale", None)
        for group in self.param_groups:
            stepped = [w for w in group["params"] if w in self.copies and self.copies[w].grad is not None]
            if not stepped:
                continue
            if self._lr is None:
                self._lr, self._one = (torch.full((), value, device=stepped[0].device) for value in (0.0, 1.0))
            self._lr.fill_(group["lr"])
            beta1, beta2 = group["betas"]
            for weight in stepped:
                copy, state = self.copies[weight], self.state[weight]
                if not state:  # AdamW's own state layout, so checkpoints load either way
                    state["step"] = torch.zeros((), dtype=torch.float32, device=weight.device)
                    state["exp_avg"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(weight, memory_format=torch.preserve_format)
                self._step_from_copy(weight, copy, copy.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                                     self._lr, self._one if scale is None else scale, beta1, beta2,
                                     group["weight_decay"], group["eps"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for copy in self.copies.values():
            if set_to_none:
                copy.grad = None
            elif copy.grad is not None:
                copy.grad.zero_()


def build_optimizer(model: MoETransformer, c: TrainConfig, device: str) -> AdamWWithWeightCopies:
    """AdamW without weight decay on embeddings, norms and other vectors; fused (no temporaries) on
    CUDA, where the expert weights train through bf16 copies (``ModelConfig.bf16_expert_weights``)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    cuda = device == "cuda"
    copies = model.hold_expert_weights_in(torch.bfloat16) if cuda and c.model.bf16_expert_weights else {}
    return AdamWWithWeightCopies([{"params": decay, "weight_decay": c.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], copies, compiled=cuda and c.compile,
                                 lr=c.lr, betas=c.betas, fused=cuda)


def training_step(model: MoETransformer, optimizer: AdamWWithWeightCopies, x: torch.Tensor, y: torch.Tensor,
                  grad_clip: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Forward (bf16 autocast on CUDA), backward, clipping and the optimizer step; returns the
    model's outputs and the gradient norm before clipping.

    The gradients are dropped right after the step, not before the next backward: kept, they
    would sit through the next forward pass, where the activations peak (4 bytes per parameter,
    7.1 GB at `medium`).
    """
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
        result = model(x, y)
    result["loss"].backward()
    trained = list(model.parameters()) + list(optimizer.copies.values())
    norm = _total_norm([t.grad for t in trained if t.grad is not None])
    # clip_grad_norm_'s factor, inverted: the optimizer divides each gradient by it as it reads it,
    # so clipping costs no pass of its own over the gradients (clip_grad_norm_'s multiply: 3.9 ms
    # of a 138 ms step at `medium` on an H200)
    optimizer.grad_scale = ((norm + 1e-6) / grad_clip).clamp(min=1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return result, norm


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the gradients together, in fp32 (bf16 gradients' norms are not rounded to bf16)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    norms = [n for group in by_dtype.values() for n in torch._foreach_norm(group, 2, dtype=torch.float32)]
    return torch.linalg.vector_norm(torch.stack(norms))


def train(data: str, output: str, preset: str = "tiny", max_tokens: int | None = None,
          overrides: dict[str, Any] | None = None, stop_after_steps: int | None = None, echo=print) -> dict[str, Any]:
    """Train (or resume) into ``output``; ``stop_after_steps`` stops early (as a kill would)."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    if max_tokens is not None:
        overrides["max_tokens"] = max_tokens
    checkpoint_path = out / "checkpoint.pt"
    info = load_data(data, seed=overrides.get("seed", 0))
    c = build_train_config(preset, info.vocab_size, overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _seed_everything(c.seed)
    model = MoETransformer(c.model).to(device)
    state = torch.load(checkpoint_path, map_location=device, weights_only=False) if checkpoint_path.is_file() else None
    if state:
        model.load_state_dict(state["model"])
    optimizer = build_optimizer(model, c, device)  # after the weights load: it may copy some
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, c) / c.lr)
    step = 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step = state["step"]
        echo(f"resumed from step {step}")
    if c.compile and device == "cuda":
        for block in model.blocks:  # identical blocks share one compiled graph
            block.moe.fused_elementwise = True
            block.compile()
        # The loss's chunk loop stays eager; each chunk's softmax and gradient is one fused kernel
        # (two shapes at most: full chunks and the last one).
        model.chunk_loss = torch.compile(chunk_loss_and_grad, dynamic=False)
    stream = TokenStream(info, c.model.seq_len)
    peak = c.peak_flops or (H100_BF16_PEAK if device == "cuda" else None)
    flops_per_token = model.flops_per_token()
    counts = model.parameter_counts()
    (out / "config.json").write_text(json.dumps({"preset": preset, "train": dataclasses.asdict(c), "data": str(data),
                                                 "lineage": info.lineage, "parameters": counts,
                                                 "tokenizer": info.tokenizer}, indent=1, default=str))
    metrics_file = (out / "metrics.jsonl").open("a")
    echo(f"training {preset}: {counts['total'] / 1e6:.2f}M parameters ({counts['active'] / 1e6:.2f}M active), "
         f"{c.steps} steps x {c.tokens_per_step} tokens on {device}")
    model.train()
    window_start, window_tokens = time.perf_counter(), 0
    profiler = None
    while step < c.steps:
        if c.profile_steps and step == c.steps - c.profile_steps:
            profiler = _start_profiler(device)
        x, y = stream.batch(step, c.batch_size)
        if c.vocab_limit:
            x, y = x.clamp_(max=c.vocab_limit - 1), y.clamp_(max=c.vocab_limit - 1)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        result, norm = training_step(model, optimizer, x, y, c.grad_clip)
        scheduler.step()
        step += 1
        window_tokens += x.numel()
        if step % c.log_every == 0 or step == c.steps:
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens / elapsed
            record = {
                "step": step, "tokens": step * c.tokens_per_step,
                **{key: float(result[key].detach()) for key in ("loss", "ce", "lb", "z")},  # detached: no autograd warning
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(norm), "tokens_per_s": tokens_per_s,
                "mfu": flops_per_token * tokens_per_s / peak if peak else None,
                "expert_load": expert_load(result["layer_stats"]),
                "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
            }
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            echo(f"step {step:>6}  loss {record['loss']:.4f}  ce {record['ce']:.4f}  lb {record['lb']:.3f}  "
                 f"z {record['z']:.3f}  {tokens_per_s:,.0f} tok/s" + (f"  MFU {record['mfu']:.1%}" if peak else ""))
            window_start, window_tokens = time.perf_counter(), 0
        if c.checkpoint_every and (step % c.checkpoint_every == 0 or step == c.steps
                                   or (stop_after_steps and step >= stop_after_steps)):
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, step)
        if stop_after_steps and step >= stop_after_steps:
            break
    metrics_file.close()
    if profiler is not None:
        _write_profile(profiler, out / "profile.txt", device)
    _write_metrics_parquet(out)
    return {"steps": step, "output": str(out), "parameters": counts}


def _start_profiler(device: str):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities, record_shapes=False)
    profiler.__enter__()
    return profiler


def _write_profile(profiler, path: Path, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    profiler.__exit__(None, None, None)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    path.write_text(profiler.key_averages().table(sort_by=sort, row_limit=80, max_name_column_width=70))


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "rng": _rng_state()}, tmp)
    os.replace(tmp, path)


def _write_metrics_parquet(out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows}  # a resumed run may log a step twice: keep the last
    rows = [by_step[s] for s in sorted(by_step)]
    for r in rows:
        r["expert_load_min"] = min(lo for lo, _ in r["expert_load"])
        r["expert_load_max"] = max(hi for _, hi in r["expert_load"])
        del r["expert_load"]
    pq.write_table(pa.Table.from_pylist(rows), out / "metrics.parquet")
