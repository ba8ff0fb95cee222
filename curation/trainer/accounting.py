"""Parameter, FLOP and memory accounting that needs no GPU (the model is built on the meta device).

``estimate_memory`` models what one training step holds on one GPU, in bytes, by component:
fp32 master weights and the experts' bf16 copies (``bf16_expert_weights``), the gradients (fp32,
the experts' bf16 on their copies) and AdamW's two fp32 moments; the bf16 activations each layer
keeps for its backward pass (what ``model.py`` saves under ``torch.compile``, tensor by tensor);
the fused loss's buffers; and the transient working set of one MoE layer's backward. The peak is
the largest of three moments of ``train.training_step``, which drops the gradients after the
optimizer step, so they never coexist with a forward pass's activations:

- ``forward_end``: weights, moments, every layer's activations, the bf16 weight copies kept for
  the backward (``cast_weights``) and the fused loss's chunk buffers;
- ``backward_start``: the same activations, the head's gradient and the last layer's backward
  working set (later layers free more activations than they add gradients);
- ``optimizer_step``: weights, gradients and moments (the fused AdamW makes no temporaries).

It is checked against the measured peak by ``benchmarks/gpu_check.py``; tests pin the per-layer
activations against what the compiler's partitioner saves, so that a change that makes a step
hold more shows up in CI.
"""

from __future__ import annotations

from typing import Any

import torch

from curation.trainer.model import ModelConfig, MoETransformer

BF16, INT32, FP32, INT64 = 2, 4, 4, 8


def build_on_meta(config: ModelConfig) -> MoETransformer:
    """The model with shapes and no storage: counts and FLOPs of any size, instantly."""
    with torch.device("meta"):
        return MoETransformer(config)


def estimate_memory(config: ModelConfig, batch_size: int) -> dict[str, float]:
    """Bytes of one training step by component, at its three fullest moments, and the peak (see the module docstring)."""
    c = config
    model = build_on_meta(c)
    total = model.parameter_counts()["total"]
    T, D, L, E, k, Hd, V = batch_size * c.seq_len, c.d_model, c.n_layers, c.n_experts, c.top_k, c.expert_hidden, c.vocab_size
    # attention: norm input, qkv input and output (3), rotated q and k, attention output and the
    # out-projection's input, each (T, D); fp32 log-sum-exp per head and position; fp32 RMS
    # statistics of the two block norms (per token) and the q/k norms (per token and head)
    attention = 9 * BF16 * T * D + FP32 * batch_size * c.n_heads * c.seq_len + FP32 * (2 * T + 2 * T * c.n_heads)
    if E == 1:
        feed_forward = 2 * BF16 * T * D + 4 * BF16 * T * Hd  # norm in/out; gate, up, silu, product
    else:
        feed_forward = (2 * BF16 * T * D  # norm input and output (the experts' input)
                        + FP32 * T * E  # router probabilities
                        + (0 if c.recompute_experts else 2 * BF16 * T * k * Hd)  # gate and up
                        + 3 * INT64 * T * k + FP32 * T * k + INT32 * E)  # chosen experts, order, inverse; weights; offsets
    loss = 3 * BF16 * T * D + FP32 * V * D + 2 * FP32 * min(T, c.loss_chunk_tokens) * V
    cast_weights = BF16 * (4 * D * D * L + V * D)  # autocast's bf16 copies of the dense matrices
    copies = c.bf16_expert_weights  # the expert weights held in bf16: no casts, bf16 gradients
    expert_weights = L * 3 * E * D * Hd  # (the dense model's FFN too: the same copies)
    casts_kept = E > 1 and c.keep_expert_casts and not copies
    if casts_kept:  # the experts' operator's casts, kept for its backward
        cast_weights += BF16 * expert_weights
    # one MoE layer's backward at its widest: gathered slots and their gradient, five (T*k, Hd)
    # temporaries, the layer's expert-weight gradients in bf16 (and fp32 without copies), the
    # weights' bf16 casts if neither copied nor kept, and the weight gradients' K-major operand
    # copies if asked for
    moe_backward = (0 if E == 1 else 2 * BF16 * T * k * D + 5 * BF16 * T * k * Hd
                    + 3 * (BF16 + (0 if copies else FP32)) * E * D * Hd
                    + (0 if copies or casts_kept else 3 * BF16 * E * D * Hd)
                    + (BF16 * T * k * (D + 2 * Hd) if c.wgrad_k_major else 0))  # the transposed operands
    parts = {
        "weights": FP32 * total + (BF16 * expert_weights if copies else 0),
        "gradients": FP32 * total - ((FP32 - BF16) * expert_weights if copies else 0),
        "optimizer": 2 * FP32 * total,
        "activations": L * (attention + feed_forward),
        "loss": loss,
        "cast_weights": cast_weights,
        "backward_working_set": moe_backward,
    }
    state = parts["weights"] + parts["optimizer"]
    held = state + parts["activations"] + cast_weights
    # the head's gradient handed back (and its copy in the loss's saved buffers), the gradient of h
    head_gradient = 2 * FP32 * V * D + BF16 * T * D
    parts["forward_end"] = held + loss
    parts["backward_start"] = held + head_gradient + moe_backward
    parts["optimizer_step"] = state + parts["gradients"]
    parts["peak"] = max(parts["forward_end"], parts["backward_start"], parts["optimizer_step"])
    return parts


def describe(config: ModelConfig, batch_size: int) -> dict[str, Any]:
    model = build_on_meta(config)
    return {"parameters": model.parameter_counts(), "flops_per_token": model.flops_per_token(),
            "memory_gb": {k: v / 1e9 for k, v in estimate_memory(config, batch_size).items()}}
