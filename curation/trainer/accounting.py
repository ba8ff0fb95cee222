"""Parameter, FLOP and memory accounting that needs no GPU (the model is built on the meta device).

``estimate_memory`` is a model of what one training step holds at its peak on one GPU, in
bytes: fp32 master weights, fp32 gradients and AdamW's two fp32 moments; the bf16 activations
each layer keeps for its backward pass (what ``model.py`` saves, tensor by tensor); the fused
loss's gradient buffers; and the transient working set of one MoE layer's backward. It is
checked against the measured peak by ``benchmarks/gpu_check.py``; tests pin it so that a change
that makes a step hold more shows up in CI.
"""

from __future__ import annotations

from typing import Any

import torch

from curation.trainer.model import ModelConfig, MoETransformer

BF16, FP32, INT64 = 2, 4, 8


def build_on_meta(config: ModelConfig) -> MoETransformer:
    """The model with shapes and no storage: counts and FLOPs of any size, instantly."""
    with torch.device("meta"):
        return MoETransformer(config)


def estimate_memory(config: ModelConfig, batch_size: int) -> dict[str, float]:
    """Peak bytes of one training step by component (see the module docstring)."""
    c = config
    model = build_on_meta(c)
    total = model.parameter_counts()["total"]
    T, D, L, E, k, Hd, V = batch_size * c.seq_len, c.d_model, c.n_layers, c.n_experts, c.top_k, c.expert_hidden, c.vocab_size
    # attention: norm input, qkv input and output (3), rotated q and k, attention output and the
    # out-projection's input, each (T, D); fp32 log-sum-exp per head and position
    attention = 9 * BF16 * T * D + FP32 * batch_size * c.n_heads * c.seq_len
    if E == 1:
        feed_forward = 2 * BF16 * T * D + 4 * BF16 * T * Hd  # norm in/out; gate, up, silu, product
    else:
        feed_forward = (2 * BF16 * T * D  # norm input and output (the experts' input)
                        + 2 * FP32 * T * E  # router logits and probabilities
                        + (0 if c.recompute_experts else 2 * BF16 * T * k * Hd)  # gate and up
                        + 3 * INT64 * T * k + 2 * FP32 * T * k)  # order, inverse, experts; weights
    loss = 3 * BF16 * T * D + FP32 * V * D + 2 * FP32 * min(T, c.loss_chunk_tokens) * V
    cast_weights = BF16 * (4 * D * D * L + V * D)  # autocast's bf16 copies of the dense matrices
    # one MoE layer's backward at its widest: gathered slots and their gradient, five (T*k, Hd)
    # temporaries, and the layer's expert-weight gradients in bf16 and fp32
    moe_backward = (0 if E == 1 else 2 * BF16 * T * k * D + 5 * BF16 * T * k * Hd + 3 * (BF16 + FP32) * E * D * Hd)
    parts = {
        "weights": FP32 * total,
        "gradients": FP32 * total,
        "optimizer": 2 * FP32 * total,
        "activations": L * (attention + feed_forward),
        "loss": loss,
        "cast_weights": cast_weights,
        "backward_working_set": moe_backward,
    }
    parts["total"] = sum(parts.values())
    return parts


def describe(config: ModelConfig, batch_size: int) -> dict[str, Any]:
    model = build_on_meta(config)
    return {"parameters": model.parameter_counts(), "flops_per_token": model.flops_per_token(),
            "memory_gb": {k: v / 1e9 for k, v in estimate_memory(config, batch_size).items()}}
